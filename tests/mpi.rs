//! The MPI backend (`tp::MpiComm`) under `mpirun`: runs the `qk_mpi_check` binary on 2 and 4
//! ranks (oversubscribed, so 2 cores suffice) and expects every rank to report `ok`. Skips, and
//! says so, when `mpirun` is not installed.
#![cfg(feature = "mpi")]

use std::process::Command;
use std::time::Instant;

fn mpirun_available() -> bool {
    Command::new("mpirun").arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

#[test]
fn mpi_comm_matches_local_comm_under_mpirun() {
    if !mpirun_available() {
        eprintln!("skipping: `mpirun` not found (install openmpi-bin to run the MPI backend's test)");
        return;
    }
    for np in [2usize, 4] {
        let start = Instant::now();
        let out = Command::new("mpirun")
            // --timeout: a hang fails the test instead of stalling it.
            .args(["--oversubscribe", "--timeout", "120", "-np", &np.to_string()])
            .arg(env!("CARGO_BIN_EXE_qk_mpi_check"))
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .output()
            .expect("spawn mpirun");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "np={np}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
        for rank in 0..np {
            let line = format!("rank {rank}/{np} ok");
            assert_eq!(
                stdout.lines().filter(|l| l.trim() == line).count(),
                1,
                "np={np}: expected one `{line}` line\nstdout:\n{stdout}\nstderr:\n{stderr}"
            );
        }
        eprintln!("mpirun -np {np}: {np} ranks ok in {:.2} s", start.elapsed().as_secs_f64());
    }
}

/// The runtime example (`examples/llama/`) started under `mpirun -np 2`, one rank per process
/// over `MpiComm`, writes the same logits, bit for bit, as the same example run with
/// `--world-size 2` (two threads over `LocalComm`).
#[test]
fn llama_example_under_mpirun_equals_world_size_2_in_process() {
    if !mpirun_available() {
        eprintln!("skipping: `mpirun` not found (install openmpi-bin to run the MPI backend's test)");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("examples").join("llama");
    if !bin.exists() {
        eprintln!("skipping: the llama example is not built (`cargo test --all-features` builds it)");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama/mixtral");
    let tmp = std::env::temp_dir().join(format!("qk-llama-mpi-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let (a, b) = (tmp.join("mpi.safetensors"), tmp.join("local.safetensors"));
    let args = |out: &std::path::Path| -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> =
            vec![dir.clone().into(), "--tokens".into(), "5,17,3,99,42,7".into(), "--new".into(), "5".into()];
        v.extend(["--out".into(), out.into(), "--threads".into(), "1".into()]);
        v
    };
    let out = Command::new("mpirun")
        .args(["--oversubscribe", "--timeout", "120", "-np", "2"])
        .arg(&bin)
        .args(args(&a))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("spawn mpirun");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mpirun: {}\n{err}", out.status);
    let local = Command::new(&bin).args(args(&b)).args(["--world-size", "2"]).output().unwrap();
    assert!(local.status.success(), "{}", String::from_utf8_lossy(&local.stderr));
    let read = |p: &std::path::Path| {
        let f = quant_kernels::io::SafetensorsFile::open(p).unwrap();
        ["prefill_logits", "step_logits", "greedy_ids"].map(|n| f.read(n).unwrap())
    };
    assert_eq!(read(&a), read(&b), "MPI and in-process world size 2 differ");
    let _ = std::fs::remove_dir_all(&tmp);
}
