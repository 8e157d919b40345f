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

#[test]
fn safetensors_header_regressions() {
    assert!(replay("safetensors_header", quant_kernels::fuzz_checks::safetensors_header) >= 5);
    let valid = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/safetensors_header/valid_two_tensors"),
    )
    .unwrap();
    assert!(quant_kernels::fuzz_checks::safetensors_header(&valid));
}

/// Every fixture shard truncated at every length and with every header byte flipped: typed
/// errors, never a panic.
#[test]
fn safetensors_header_mutations_of_a_real_shard() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gptq_checkpoints/tiny-llama-gptq-8bit-single/model.safetensors");
    let file = std::fs::read(path).unwrap();
    assert!(quant_kernels::fuzz_checks::safetensors_header(&file));
    let header_end = 8 + u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let mut accepted = 0;
    for cut in (0..file.len()).step_by(97).chain(header_end - 8..header_end + 8) {
        accepted += quant_kernels::fuzz_checks::safetensors_header(&file[..cut]) as usize;
    }
    assert_eq!(accepted, 0, "a truncated file was accepted");
    let mut data = file.clone();
    for i in 0..header_end {
        for flip in [0x01u8, 0x80] {
            data[i] ^= flip;
            quant_kernels::fuzz_checks::safetensors_header(&data);
            data[i] ^= flip;
        }
    }
}

#[test]
fn gptq_config_regressions() {
    assert!(replay("gptq_config", quant_kernels::fuzz_checks::gptq_config) >= 5);
}

/// Random JSON objects built from config keys and odd values: no panic, both outcomes.
#[test]
fn gptq_config_random_inputs() {
    let keys = [
        "bits",
        "group_size",
        "sym",
        "desc_act",
        "checkpoint_format",
        "format",
        "quant_method",
        "pack_dtype",
        "is_marlin_format",
    ];
    let values = [
        "4",
        "3",
        "-1",
        "0",
        "128",
        "true",
        "false",
        "null",
        "\"gptq\"",
        "\"gptq_v2\"",
        "\"int32\"",
        "[]",
        "{}",
        "1e400",
        "-9223372036854775809",
    ];
    let mut rng = common::Rng(3);
    let mut ok = 0;
    for _ in 0..2000 {
        let fields: Vec<String> = (0..rng.below(4))
            .map(|_| {
                format!(
                    "\"{}\": {}",
                    keys[rng.below(keys.len() as u64) as usize],
                    values[rng.below(values.len() as u64) as usize]
                )
            })
            .collect();
        ok +=
            quant_kernels::fuzz_checks::gptq_config(format!("{{{}}}", fields.join(",")).as_bytes()) as usize;
    }
    assert!((100..1900).contains(&ok), "{ok}");
}

#[test]
fn uqff_regressions() {
    assert!(replay("uqff", quant_kernels::fuzz_checks::uqff) >= 4);
}

#[test]
fn uqff_roundtrip_regressions_and_random_layers() {
    replay("uqff_roundtrip", quant_kernels::fuzz_checks::uqff_roundtrip);
    let mut rng = common::Rng(17);
    let mut built = 0;
    for _ in 0..1500 {
        let data: Vec<u8> = (0..6 + rng.below(40) as usize).map(|_| rng.below(256) as u8).collect();
        built += quant_kernels::fuzz_checks::uqff_roundtrip(&data) as usize;
    }
    assert!((100..1500).contains(&built), "{built} of 1500 layers built");
}
