//! Payload encryption, shared with vigil-sql's `decrypt` (see [`vigil_operators::crypto`]),
//! and where a job's key comes from.

use std::path::Path;

pub use vigil_operators::crypto::*;

/// The payload key from `key_file` if one is named, else from `VIGIL_KEY`, else none.
pub fn load_key(key_file: Option<&Path>) -> anyhow::Result<Option<PayloadKey>> {
    let file = key_file.map(|path| (path, std::fs::read_to_string(path)));
    PayloadKey::from_file_or_env(file, std::env::var(KEY_ENV).ok())
}
