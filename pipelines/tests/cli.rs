//! The `vigil-guard` binary as a user runs it: exit codes, summary line, error messages.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::process::Command;

fn guard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigil-guard"))
}

#[test]
fn default_run_prints_alerts_and_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let output = guard()
        .current_dir(tmp.path())
        .args(["--alerts", "alerts.ndjson", "-w", "2"])
        .env_remove("VIGIL_KEY")
        .env_remove("VIGIL_ARCHIVE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("events in 22684, archived 22684"),
        "{stderr}"
    );
    let alerts = std::fs::read_to_string(tmp.path().join("alerts.ndjson")).unwrap();
    assert!(alerts.lines().count() >= 2);
    assert!(alerts.lines().all(|l| l.starts_with("{\"alert_id\":")));
    assert!(
        tmp.path().join("vigil-data/telemetry").is_dir(),
        "archives to ./vigil-data by default"
    );
}

#[test]
fn unreadable_input_exits_non_zero_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("bad.ndjson"), "garbage\n").unwrap();
    let output = guard()
        .current_dir(tmp.path())
        .args([
            "--input",
            &tmp.path().join("bad.ndjson").display().to_string(),
        ])
        .args(["--archive", &tmp.path().join("a").display().to_string()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing could be read"));
}

#[test]
fn bad_flags_are_usage_errors() {
    let output = guard().args(["--guard", "median:k=3"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown guard `median`"));
    let tmp = tempfile::tempdir().unwrap();
    let output = guard()
        .current_dir(tmp.path())
        .args(["--input", "/nonexistent/x.ndjson"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));
}
