//! `vigil-sync`: keep a local and a remote SQL replica equal, last writer wins.

use std::process::ExitCode;

use vigil_pipelines::cli::{SyncArgs, job_main};

fn main() -> ExitCode {
    job_main::<SyncArgs>()
}
