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
    // NAB's file repeats the hour 2014-01-07 02:00–02:55; the built-in dataset is read with an
    // hour's lateness, so the repeat is read, not dead-lettered.
    assert!(
        stderr.contains("events in 22695, archived 22695") && stderr.contains("errors 0"),
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
fn a_lateness_given_for_the_built_in_dataset_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let output = guard()
        .current_dir(tmp.path())
        .args(["--alerts", "none", "--replica", "none", "--lateness", "10s"])
        .env_remove("VIGIL_ARCHIVE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("events in 22684,") && stderr.contains("errors 11 (late 11)"),
        "the repeated hour is late at 10s: {stderr}"
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
        let lock =
            vigil_pipelines::runtime::dir_lock::DirLock::acquire(held, what, "--flag").unwrap();
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
        archive
            .join(vigil_pipelines::runtime::dir_lock::LOCK_FILE)
            .is_file(),
        "the lock file stays at the archive root, beside the tables"
    );
}

#[test]
fn random_series_names_keep_the_guards_state_under_max_series() {
    let tmp = tempfile::tempdir().unwrap();
    // Every reading a new series, as a hostile or broken producer would send.
    let lines: String = (0..5_000)
        .map(|i| {
            format!(
                "{{\"source\":\"rnd-{i}\",\"name\":\"m\",\"ts\":{},\"value\":1.0}}\n",
                1_767_225_600_000_i64 + i * 1_000
            )
        })
        .collect();
    std::fs::write(tmp.path().join("in.ndjson"), lines).unwrap();
    let run = |extra: &[&str]| {
        guard()
            .current_dir(tmp.path())
            .args([
                "--input",
                "in.ndjson",
                "--alerts",
                "none",
                "--replica",
                "none",
            ])
            .args(["--archive", "archive", "--summary-json", "summary.json"])
            .args(extra)
            .env_remove("VIGIL_ARCHIVE")
            .env_remove("VIGIL_REPLICA")
            .output()
            .unwrap()
    };
    let output = run(&["--max-series", "100"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("summary.json")).unwrap()).unwrap();
    let held = summary["series"].as_u64().unwrap();
    assert!(
        held <= 100 * 8,
        "{held} series held at --max-series 100 (per guard, over guards)"
    );
    assert!(
        summary["series_forgotten"].as_u64().unwrap() >= 4_000,
        "{summary}"
    );

    for bad in ["0", "many", "-5"] {
        let output = run(&["--max-series", bad]);
        assert_eq!(output.status.code(), Some(2), "--max-series {bad}");
    }
    let output = run(&["--series-idle", "soon"]);
    assert_eq!(output.status.code(), Some(2));
}

/// `vigil-couchdb` following a server that never answers, so that it runs until stopped.
fn endless_follower(dir: &std::path::Path) -> std::process::Child {
    // A port nothing listens on: the listener it was bound by is dropped at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_vigil-couchdb"))
        .current_dir(dir)
        .args([
            "--server",
            &server,
            "--db",
            "nowhere",
            "--to",
            "changes.ndjson",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The signal thread is up well before this; a signal before it would kill the process
    // outright and the test would not tell the two stops apart.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    child
}

fn send(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal}");
}

/// Waits for the child to exit within `bound`; kills it and fails the test otherwise.
fn exit_within(
    mut child: std::process::Child,
    bound: std::time::Duration,
) -> (std::process::ExitStatus, String) {
    let deadline = std::time::Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            return (status, stderr);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the job did not exit within {bound:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_second_stop_signal_exits_at_once_with_the_signals_code() {
    for (signal, code) in [("-TERM", 143), ("-INT", 130)] {
        // A follower between retries may finish its graceful stop before the second signal
        // arrives (exit 0, no "exiting now"): that attempt says nothing, so it is tried again.
        let (status, stderr) = (0..5)
            .map(|_| {
                let tmp = tempfile::tempdir().unwrap();
                let child = endless_follower(tmp.path());
                send(&child, signal);
                std::thread::sleep(std::time::Duration::from_millis(10));
                send(&child, signal);
                exit_within(child, std::time::Duration::from_secs(5))
            })
            .find(|(status, stderr)| status.code() != Some(0) || stderr.contains("exiting now"))
            .expect("the second signal arrived before the graceful stop ended in one of 5 tries");
        assert_eq!(status.code(), Some(code), "{stderr}");
        assert!(stderr.contains("exiting now"), "{stderr}");
    }
}

#[test]
fn one_stop_signal_stops_gracefully() {
    let tmp = tempfile::tempdir().unwrap();
    let child = endless_follower(tmp.path());
    send(&child, "-TERM");
    let (status, stderr) = exit_within(child, std::time::Duration::from_secs(40));
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("changes forwarded 0"), "{stderr}");
    assert!(!stderr.contains("exiting now"), "{stderr}");
}
