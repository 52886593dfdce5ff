//! `decrypt(payload, event_id, key_id)`: clear text with the key, a clear refusal without it,
//! and an error naming the event when a payload belongs to another key.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use std::process::Command;

use common::{KEY, sealed_archive as archive};
use vigil_operators::crypto::PayloadKey;

const OTHER: &str = "7777777777777777777777777777777777777777777777777777777777777777";

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
