//! The vigil binaries the benchmarks run, found beside `vigil-bench`.

use std::path::PathBuf;

use anyhow::{Context, bail};

/// The vigil binary `name` (`vigil-guard`, `vigil-archaeology`) built beside this one.
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating vigil-bench")?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p vigil-pipelines -p vigil-benches`",
            path.display()
        );
    }
    Ok(path)
}
