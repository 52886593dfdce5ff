//! `vigil-guard`: run the anomaly guards over a dataset or the generator.

use std::process::ExitCode;

use vigil_pipelines::cli::{GuardArgs, job_main};

fn main() -> ExitCode {
    job_main::<GuardArgs>()
}
