//! Payloads are sealed with AES-256-GCM before they reach the archive, and never written clear.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::path::Path;

use arrow::array::{Array, AsArray};
use vigil_pipelines::jobs::guard::{GuardJob, InputParams, run};
use vigil_pipelines::runtime::crypto::PayloadKey;
use vigil_pipelines::runtime::stop::Stop;
use vigil_tests::jobs::guard_job;

const KEY: &str = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn write_input(dir: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::create_dir_all(dir).unwrap();
    let mut lines = String::new();
    let mut expected = Vec::new();
    for i in 0..50u64 {
        let id = format!("veh-3-temp_c-{i}");
        let (payload, clear) = if i % 2 == 0 {
            (
                serde_json::json!(format!("crew note {i}: valve check")),
                format!("crew note {i}: valve check"),
            )
        } else {
            let value = serde_json::json!({"operator": "flight-dir", "step": i});
            (value.clone(), value.to_string())
        };
        let line = serde_json::json!({
            "event_id": id, "source": "veh-3", "name": "temp_c", "ts": 1_767_225_600_000u64 + i * 1000,
            "seq": i, "value": 20.0 + i as f64 * 0.1, "payload": payload,
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
        expected.push((id, clear.into_bytes()));
    }
    std::fs::write(dir.join("payloads.ndjson"), lines).unwrap();
    expected
}

fn job(input: &Path, archive: &Path, key: Option<PayloadKey>) -> GuardJob {
    let mut job = guard_job(
        InputParams::Paths(vec![input.to_path_buf()]),
        archive,
        &[],
        1,
    );
    job.settings.key = key;
    job
}

#[test]
fn payloads_are_sealed_in_the_archive_and_open_with_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = write_input(&tmp.path().join("in"));
    let key = PayloadKey::from_hex(KEY).unwrap();
    let archive = tmp.path().join("archive");
    let summary = run(
        job(&tmp.path().join("in"), &archive, Some(key.clone())),
        Stop::default(),
    )
    .unwrap();
    assert_eq!(summary.events_in, 50);

    let mut opened = Vec::new();
    for entry in walk(&archive.join("telemetry")) {
        let raw = std::fs::read(&entry).unwrap();
        assert!(
            !raw.windows(10).any(|w| w == b"crew note "),
            "clear payload text in {}",
            entry.display()
        );
        assert!(
            !raw.windows(10).any(|w| w == b"flight-dir"),
            "clear payload text in {}",
            entry.display()
        );
        let file = std::fs::File::open(&entry).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let ids = batch
                .column_by_name("event_id")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let payloads = batch
                .column_by_name("payload")
                .unwrap()
                .as_binary::<i32>()
                .clone();
            let key_ids = batch
                .column_by_name("key_id")
                .unwrap()
                .as_string::<i32>()
                .clone();
            for row in 0..batch.num_rows() {
                assert!(payloads.is_valid(row) && key_ids.is_valid(row));
                assert_eq!(key_ids.value(row), key.key_id().as_str());
                let clear = key
                    .open(ids.value(row), key_ids.value(row), payloads.value(row))
                    .expect("opens");
                opened.push((ids.value(row).to_owned(), clear));
            }
        }
    }
    opened.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(opened, expected);

    // A flipped ciphertext byte is rejected.
    let (id, _) = &opened[0];
    let mut sealed = key.seal(id, b"x", &mut rand_bytes());
    let last = sealed.len() - 1;
    sealed[last] ^= 0x80;
    assert!(key.open(id, key.key_id(), &sealed).is_err());
}

#[test]
fn payload_without_key_is_a_startup_error() {
    let tmp = tempfile::tempdir().unwrap();
    write_input(&tmp.path().join("in"));
    let archive = tmp.path().join("archive");
    let err = run(job(&tmp.path().join("in"), &archive, None), Stop::default())
        .expect_err("a payload without a key must stop the job")
        .to_string();
    assert!(
        err.contains("VIGIL_KEY") && err.contains("--key-file"),
        "{err}"
    );
    assert!(
        err.contains("payloads.ndjson:1"),
        "the error points at the line: {err}"
    );
    assert!(
        walk(&archive).is_empty(),
        "nothing may be written before the key problem is fixed"
    );
}

fn rand_bytes() -> impl rand::Rng {
    rand::rng()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The replica gets the ciphertext only when asked, and never the clear payload.
#[test]
fn the_replica_holds_the_ciphertext_only_when_asked_and_never_the_clear_text() {
    use vigil_pipelines::connect::replica::{Replica, ReplicaUrl};
    use vigil_pipelines::sinks::replica::{Output, ReplicaParams};

    let key = PayloadKey::from_hex(KEY).unwrap();
    for replicate_payload in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let expected = write_input(&tmp.path().join("in"));
        let db = tmp.path().join("replica.db");
        let url = ReplicaUrl::Sqlite(db.clone());
        let mut with_replica = job(
            &tmp.path().join("in"),
            &tmp.path().join("archive"),
            Some(key.clone()),
        );
        with_replica.settings.spill_dir = tmp.path().join("spill");
        with_replica.settings.replica = Some(ReplicaParams {
            replicate_payload,
            tables: Output::ALL.to_vec(),
            ..ReplicaParams::new(url.clone())
        });
        let summary = run(with_replica, Stop::default()).unwrap();
        assert_eq!(summary.events_in, 50);
        for suffix in ["", "-wal"] {
            let path = format!("{}{suffix}", db.display());
            if let Ok(raw) = std::fs::read(&path) {
                assert!(
                    !raw.windows(10).any(|w| w == b"crew note ")
                        && !raw.windows(10).any(|w| w == b"flight-dir"),
                    "clear payload text in {path}"
                );
            }
        }
        let runtime = std::sync::Arc::new(tokio::runtime::Runtime::new().unwrap());
        let mut replica = Replica::connect(&url, &runtime).unwrap();
        let rows = replica
            .query_text(
                "SELECT event_id, key_id, hex(payload) FROM telemetry_meta ORDER BY event_id",
                &[],
            )
            .unwrap();
        assert_eq!(rows.len(), 50);
        let mut opened = Vec::new();
        for row in rows {
            let [Some(id), Some(key_id), hex_payload] = &row[..] else {
                panic!("a row without id or key id: {row:?}")
            };
            assert_eq!(key_id, key.key_id().as_str());
            match (replicate_payload, hex_payload) {
                (true, Some(hex_text)) => {
                    let sealed = hex::decode(hex_text).unwrap();
                    opened.push((id.clone(), key.open(id, key_id, &sealed).expect("opens")));
                }
                (false, None) => {}
                (false, Some(text)) if text.is_empty() => {}
                other => {
                    panic!("payload column {other:?} with replicate_payload {replicate_payload}")
                }
            }
        }
        if replicate_payload {
            opened.sort();
            let mut expected = expected;
            expected.sort();
            assert_eq!(opened, expected);
        }
    }
}
