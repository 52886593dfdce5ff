//! Files a job wrote, found without any of vigil's own crates.

use std::path::{Path, PathBuf};

/// Every Parquet file under `dir`, sorted.
///
/// # Panics
/// When `dir` cannot be read: a test fails loudly.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("the directory is readable") {
            let path = entry.expect("the directory entry is readable").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
