//! Paths as a job file writes them.

use std::path::{Path, PathBuf};

/// `p` as written in the config file `file`: relative paths are taken from its directory.
pub(crate) fn relative_to(file: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        file.parent().unwrap_or(Path::new("")).join(p)
    }
}
