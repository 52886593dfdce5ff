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

#[test]
fn a_second_job_on_a_directory_in_use_exits_2_naming_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("in.ndjson"),
        "{\"source\":\"s\",\"name\":\"m\",\"ts\":1767225600000,\"value\":1.0}\n",
    )
    .unwrap();
    let archive = tmp.path().join("archive");
    let spill = tmp.path().join("spill");
    let second_job = || {
        guard()
            .current_dir(tmp.path())
            .args(["--input", "in.ndjson", "--alerts", "none"])
            .arg("--archive")
            .arg(&archive)
            .arg("--spill")
            .arg(&spill)
            .args(["--replica", "sqlite://replica.db"])
            .env_remove("VIGIL_ARCHIVE")
            .env_remove("VIGIL_REPLICA")
            .output()
            .unwrap()
    };
    // This process plays the first job: it holds the spill directory, then the archive.
    for (held, what) in [(&spill, "spill directory"), (&archive, "archive directory")] {
        let lock = vigil_pipelines::dir_lock::DirLock::acquire(held, what, "--flag").unwrap();
        let output = second_job();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("pid {}", std::process::id())),
            "the message names the process holding it: {stderr}"
        );
        assert!(stderr.contains(what), "{stderr}");
        assert!(
            !tmp.path().join("replica.db").exists(),
            "the second job stopped before writing anything"
        );
        drop(lock);
    }
    // Once the first has let go, the job runs.
    let output = second_job();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        archive.join(vigil_pipelines::dir_lock::LOCK_FILE).is_file(),
        "the lock file stays at the archive root, beside the tables"
    );
}
