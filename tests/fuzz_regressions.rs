//! Replays the committed fuzz inputs (`fuzz/regressions/<target>/`) and a batch of random
//! inputs through the fuzz target bodies, so a plain `cargo test` catches regressions.

mod common;

fn replay(target: &str, check: fn(&[u8]) -> bool) -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("regression input failed: {}", path.display());
        }
        n += 1;
    }
    n
}

#[test]
fn hqq_api_regressions() {
    assert!(replay("hqq_api", quant_kernels::fuzz_checks::hqq_api) >= 4);
}

/// 3000 random inputs (fixed seed) through the same body: no panic anywhere.
#[test]
fn hqq_api_random_inputs() {
    let mut rng = common::Rng(7);
    let mut ok = 0;
    for _ in 0..3000 {
        let len = 8 + rng.below(64) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        data[0] = [1, 2, 3, 4, 8, 0, 5][rng.below(7) as usize];
        data[2] %= 40;
        data[3] %= 40;
        data[4] = [1, 2, 4, 8, 10, 16, 3, 0][rng.below(8) as usize];
        if rng.below(2) == 0 {
            data[5..8].fill(0); // lengths as the layout wants them
        }
        ok += quant_kernels::fuzz_checks::hqq_api(&data) as usize;
    }
    // Both outcomes must be exercised: successful calls (checked against the reference) and
    // rejected ones.
    assert!((300..2700).contains(&ok), "{ok} of 3000 calls succeeded");
}
