//! Every fuzz corpus and kept crash reproducer, run once through its fuzz entry point.
//!
//! The campaign itself (`tests/fuzz/run.sh`) runs for minutes per target; this test replays
//! what it left behind in seconds, so a parser change that breaks on a known input fails
//! `./test` rather than waiting for the next campaign.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// A fuzz entry point: takes any bytes, panics only on a finding.
type Entry = fn(&[u8]);

/// Each target's name (its directory under `corpus/` and `regressions/`) and entry point.
const TARGETS: &[(&str, Entry)] = &[
    ("fast_line", vigil_datasets::fuzz::fuzz_fast_line),
    ("serde_line", vigil_datasets::fuzz::fuzz_serde_line),
    ("csv", vigil_datasets::fuzz::fuzz_csv),
    ("debezium", vigil_datasets::fuzz::fuzz_debezium),
    ("wal2json", vigil_datasets::fuzz::fuzz_wal2json),
    ("cockroach", vigil_datasets::fuzz::fuzz_cockroach),
    ("couchdb", vigil_datasets::fuzz::fuzz_couchdb),
    ("spill", vigil_pipelines::fuzz::fuzz_spill),
    ("snapshot", vigil_pipelines::fuzz::fuzz_snapshot),
    ("config", vigil_pipelines::fuzz::fuzz_config),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(kind: &str) -> usize {
    let mut ran = 0;
    for (target, run) in TARGETS {
        for file in files(&fuzz_dir().join(kind).join(target)) {
            let bytes = std::fs::read(&file).unwrap();
            // The file's name goes with a panic, so that a failure says which input it was.
            let outcome = std::panic::catch_unwind(|| run(&bytes));
            assert!(outcome.is_ok(), "{target} panicked on {}", file.display());
            ran += 1;
        }
    }
    ran
}

#[test]
fn every_corpus_input_is_read_without_a_panic() {
    let ran = replay("corpus");
    assert!(ran > 0, "no corpus under {}", fuzz_dir().display());
    for (target, _) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        assert!(!files(&dir).is_empty(), "the {target} corpus is empty");
    }
}

#[test]
fn every_kept_crash_is_fixed() {
    replay("regressions");
}

/// Writes seed inputs for the targets whose inputs vigil itself writes (spill segments and
/// snapshot files), so that the fuzzer starts from valid records. Run by hand with
/// `cargo test -p vigil-tests --test fuzz_corpus -- --ignored` after a format change.
#[test]
#[ignore = "writes seed files into tests/fuzz/corpus"]
fn write_seeds() {
    let spill_seeds = fuzz_dir().join("corpus/spill");
    std::fs::create_dir_all(&spill_seeds).unwrap();
    for (i, messages) in [&[&b"{\"alert\":1}"[..]][..], &[b"a", b"", &[0xff; 300]]]
        .iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let (mut spill, _) =
            vigil_pipelines::runtime::spill::Spill::open(dir.path(), None, 1 << 20).unwrap();
        for message in *messages {
            spill.append(message).unwrap();
        }
        spill.sync().unwrap();
        drop(spill);
        for segment in files(dir.path()) {
            let name = segment.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("seg-") {
                std::fs::copy(&segment, spill_seeds.join(format!("seed-{i}-{name}"))).unwrap();
            }
        }
    }
    let snapshot_seeds = fuzz_dir().join("corpus/snapshot");
    std::fs::create_dir_all(&snapshot_seeds).unwrap();
    // An odd first byte has the target frame the rest; an even one is written as it is.
    std::fs::write(snapshot_seeds.join("framed"), b"\x01\x02\x00\x00\x00state").unwrap();
    let mut raw = b"VGLSNAP1".to_vec();
    raw.extend([0; 16]);
    std::fs::write(snapshot_seeds.join("unframed"), raw).unwrap();
}
