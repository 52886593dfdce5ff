//! Fuzz entry points for the readers of local files: the spill, guard-state snapshots and job
//! config files.
//!
//! The libFuzzer targets in `tests/fuzz/` and the corpus test in `tests/tests/fuzz_corpus.rs`
//! call these same functions. A function returns normally for any input, whether the reader
//! accepts it or reports an error; a panic is the finding.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use vigil_operators::SnapshotStore;

use crate::config::{ArchaeologyConfig, JobConfig};
use crate::jobs::archaeology::ArchaeologyParams;
use crate::jobs::guard::GuardJob;
use crate::runtime::snapshot::StateDir;
use crate::runtime::spill::Spill;

/// Opens a spill directory whose one segment holds `data`, then appends to it and marks all of
/// it delivered, as a job restarting on a damaged spill would.
pub fn fuzz_spill(data: &[u8]) {
    let dir = fresh_dir("spill");
    std::fs::write(dir.join(format!("seg-{:020}.log", 0)), data)
        .expect("the fuzz scratch directory is writable");
    let Ok((mut spill, undelivered)) = Spill::open(&dir, None, 1 << 20) else {
        return;
    };
    let mut last = None;
    for (seq, _message) in &undelivered {
        assert!(
            last.is_none_or(|l| l < *seq),
            "undelivered messages out of order"
        );
        last = Some(*seq);
    }
    if let Ok(seq) = spill.append(b"after a restart") {
        assert!(
            last.is_none_or(|l| l < seq),
            "an append reused sequence {seq}"
        );
        let _ = spill.drained(seq);
    }
    drop(spill);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Restores guard state from a snapshot directory whose one snapshot file holds `data`. With
/// an odd first byte the rest is framed with a valid header and checksum first, so that what
/// lies past the checks is reached too.
pub fn fuzz_snapshot(data: &[u8]) {
    let dir = fresh_dir("state");
    let at = dir.join("job").join(format!("at-{:020}", 7));
    std::fs::create_dir_all(&at).expect("the fuzz scratch directory is writable");
    let file = match data.split_first() {
        Some((first, rest)) if first % 2 == 1 => {
            let mut framed = b"VGLSNAP1".to_vec();
            framed.extend(xxhash_rust::xxh3::xxh3_64(rest).to_le_bytes());
            framed.extend((rest.len() as u64).to_le_bytes());
            framed.extend(rest);
            framed
        }
        _ => data.to_vec(),
    };
    std::fs::write(at.join("zscore-w0-of-1.snap"), file).expect("the snapshot is written");
    std::fs::write(dir.join("job").join("CURRENT"), "7\n").expect("CURRENT is written");
    if let Ok(state) = StateDir::open(&dir, "job", 1, 1_000, Duration::ZERO, true)
        && let Some((at, files)) = state.restore("zscore")
    {
        assert_eq!(at, 7, "restored from another snapshot than CURRENT names");
        assert!(files.len() <= 1, "one file became {}", files.len());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Parses `data` as a guard job's config file and an archaeology job's, and applies whatever
/// parses to a default job.
pub fn fuzz_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("deploy/fuzz.toml");
    if let Ok(config) = toml::from_str::<JobConfig>(text) {
        let _ = config.apply(file, &mut GuardJob::default());
    }
    if let Ok(config) = toml::from_str::<ArchaeologyConfig>(text) {
        let mut params = ArchaeologyParams::default();
        let _ = config.apply(
            file,
            &mut crate::jobs::engine::settings::Settings::default(),
            &mut params,
        );
    }
}

/// An empty directory named `name` in this process's scratch directory.
fn fresh_dir(name: &str) -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        std::env::temp_dir().join(format!("vigil-fuzz-{}-pipelines", std::process::id()))
    });
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
    dir
}
