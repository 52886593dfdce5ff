//! `decrypt(payload, event_id, key_id)`: clear text with the key, a clear refusal without it,
//! and an error naming the event when a payload belongs to another key.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::fs::File;
use std::process::Command;
use std::sync::Arc;

use arrow::array::{BinaryArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use vigil_operators::crypto::PayloadKey;

const KEY: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
const OTHER: &str = "7777777777777777777777777777777777777777777777777777777777777777";

/// An archive whose `telemetry` holds two sealed payloads and one without a payload.
fn archive(key: &PayloadKey) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let ids = ["veh-1-temp-1", "veh-1-temp-2", "veh-2-temp-1"];
    let clear = [
        Some(r#"{"crew":"alpha"}"#),
        Some(r#"{"crew":"beta"}"#),
        None,
    ];
    let payloads: Vec<Option<Vec<u8>>> = ids
        .iter()
        .zip(clear)
        .map(|(id, c)| c.map(|c| key.seal(id, c.as_bytes(), &mut rng)))
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("key_id", DataType::Utf8, true),
        Field::new("payload", DataType::Binary, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(ids.to_vec())),
            Arc::new(StringArray::from(vec![
                Some(key.key_id().as_str()),
                Some(key.key_id().as_str()),
                None,
            ])),
            Arc::new(BinaryArray::from(
                payloads.iter().map(Option::as_deref).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    let path = dir
        .path()
        .join("telemetry/date=2026-01-01/hour=00/part-0.parquet");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut writer = ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    dir
}

fn vigil_sql(dir: &tempfile::TempDir, key: Option<&str>, sql: &str) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil-sql"));
    command
        .arg("--archive")
        .arg(dir.path().display().to_string())
        .args(["--format", "csv", sql])
        .env_remove("VIGIL_KEY");
    if let Some(hex) = key {
        let file = dir.path().join("key.hex");
        std::fs::write(&file, hex).unwrap();
        command.arg("--key-file").arg(file);
    }
    command.output().unwrap()
}

#[test]
fn payloads_open_with_the_key_only() {
    let key = PayloadKey::from_hex(KEY).unwrap();
    let dir = archive(&key);
    let sql = "SELECT event_id, decrypt(payload, event_id, key_id) AS clear \
               FROM telemetry ORDER BY event_id";
    let out = vigil_sql(&dir, Some(KEY), sql);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "event_id,clear\nveh-1-temp-1,\"{\"\"crew\"\":\"\"alpha\"\"}\"\n\
         veh-1-temp-2,\"{\"\"crew\"\":\"\"beta\"\"}\"\nveh-2-temp-1,\n"
    );

    // Without a key the payload stays opaque, and decrypt says how to give one.
    let raw = vigil_sql(&dir, None, "SELECT payload FROM telemetry");
    assert!(raw.status.success());
    assert!(!String::from_utf8_lossy(&raw.stdout).contains("alpha"));
    let refused = vigil_sql(&dir, None, sql);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--key-file") && stderr.contains("VIGIL_KEY"),
        "{stderr}"
    );

    // Another key: an error naming the event and both keys, not wrong text.
    let other = PayloadKey::from_hex(OTHER).unwrap();
    let wrong = vigil_sql(&dir, Some(OTHER), sql);
    assert_eq!(wrong.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("veh-1-temp-1")
            && stderr.contains(key.key_id().as_str())
            && stderr.contains(other.key_id().as_str()),
        "{stderr}"
    );
}
