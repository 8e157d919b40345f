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
