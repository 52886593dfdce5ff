//! `vigil-archaeology`: find what keeps recurring in a dataset or the generator's events.

use std::process::ExitCode;

use vigil_pipelines::cli::{ArchaeologyArgs, job_main};

fn main() -> ExitCode {
    job_main::<ArchaeologyArgs>()
}
