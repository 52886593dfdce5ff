//! `vigil-guard --serve` as a user and a hostile client meet it: the JSON API against the
//! archive the same run wrote, the metrics against the run's summary, health and readiness,
//! paths outside the API, and the page itself in a real browser (Debian's chromium driven by
//! playwright-core, both installed by `scripts/setup.sh --tests`).

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vigil_operators::{Alert, AlertStatus};

/// Generated rocket telemetry with planted anomalies: alerts are raised and cleared.
const INPUT: &str = "gen:rocket?vehicles=4&ticks=3000&interval_ms=1000&anomaly_rate=0.01";
const READINGS: u64 = 4 * 8 * 3000;

/// A `vigil-guard --serve` that has read its input and keeps serving; stopped on drop.
struct Served {
    child: Child,
    addr: SocketAddr,
    /// The job's stderr after the address, kept while it runs.
    _stderr: std::sync::mpsc::Receiver<String>,
}

impl Served {
    /// `vigil-guard --serve` on the generator, with the default replica (the embedded SQLite
    /// file) in `dir`.
    fn start(dir: &Path, extra: &[&str]) -> Served {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vigil-guard"));
        command
            .args(["--input", INPUT, "--alerts", "none"])
            .args(extra);
        Served::spawn(command, dir)
    }

    /// `vigil-archaeology --serve` on generated devices in rooms.
    fn archaeology(dir: &Path) -> Served {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vigil-archaeology"));
        command.args(["--input", "gen:devices?devices=60&ticks=1200&rooms=4"]);
        Served::spawn(command, dir)
    }

    fn spawn(mut command: Command, dir: &Path) -> Served {
        let mut child = command
            .current_dir(dir)
            .args([
                "--serve",
                "127.0.0.1:0",
                "--no-progress",
                "--archive",
                "archive",
            ])
            .env_remove("VIGIL_ARCHIVE")
            .env_remove("VIGIL_REPLICA")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut addr = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        // The address comes first; the run is over once the job says it keeps serving.
        loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("vigil-guard --serve did not finish its input"));
            if let Some(rest) = line.split("http://").nth(1)
                && addr.is_none()
            {
                addr = Some(rest.split('/').next().unwrap().parse().unwrap());
            }
            if line.contains("stays up") {
                break;
            }
        }
        Served {
            child,
            addr: addr.expect("the job printed where the live page is"),
            _stderr: lines,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        get(self.addr, path)
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

/// The status code and body of an HTTP GET.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

fn archived_alerts(dir: &Path) -> Vec<Alert> {
    vigil_tests::archive::read_records(&dir.join("archive/alerts"))
}

#[test]
fn the_api_tells_what_the_archive_holds_and_the_metrics_what_the_run_did() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &["-w", "2"]);

    let status = served.json("/api/status");
    assert_eq!(status["job"], "guard");
    assert_eq!(status["finished"], true, "{status}");
    assert_eq!(status["events_in"], READINGS, "{status}");
    assert!(status["watermark_ms"].as_i64().unwrap() > 0, "{status}");
    let raised_archived = archived_alerts(dir.path())
        .iter()
        .filter(|a| a.status == AlertStatus::Raised)
        .count();
    assert_eq!(status["alerts_raised"], raised_archived, "{status}");

    // Every raise and clear the archive holds, in the same order of event time.
    let archived = archived_alerts(dir.path());
    assert!(!archived.is_empty(), "the planted anomalies raise alerts");
    let alerts = served.json("/api/alerts");
    let recent = alerts["recent"].as_array().unwrap();
    let shown: Vec<(String, String)> = recent
        .iter()
        .map(|a| {
            (
                a["alert_id"].as_str().unwrap().to_owned(),
                a["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut expected: Vec<&Alert> = archived.iter().collect();
    expected.sort_by(|a, b| (a.ts, &a.alert_id, a.status).cmp(&(b.ts, &b.alert_id, b.status)));
    let expected: Vec<(String, String)> = expected
        .iter()
        .rev()
        .take(500)
        .rev()
        .map(|a| {
            let status = match a.status {
                AlertStatus::Raised => "raised",
                AlertStatus::Cleared => "cleared",
            };
            (a.alert_id.to_string(), status.to_owned())
        })
        .collect();
    assert_eq!(shown, expected);
    // Open: raised and never cleared.
    let cleared: BTreeSet<&str> = archived
        .iter()
        .filter(|a| a.status == AlertStatus::Cleared)
        .map(|a| a.alert_id.as_str())
        .collect();
    let open: BTreeSet<String> = archived
        .iter()
        .filter(|a| a.status == AlertStatus::Raised && !cleared.contains(a.alert_id.as_str()))
        .map(|a| a.alert_id.to_string())
        .collect();
    let open_shown: BTreeSet<String> = alerts["open"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(open_shown, open);

    // A charted series: its readings in order of event time, its alert intervals inside them.
    let series = served.json("/api/series");
    let first = &series.as_array().unwrap()[0];
    let (source, name) = (
        first["source"].as_str().unwrap(),
        first["name"].as_str().unwrap(),
    );
    let chart = served.json(&format!("/api/series/{source}/{name}"));
    let points = chart["points"].as_array().unwrap();
    assert!(points.len() > 100, "{} readings charted", points.len());
    let times: Vec<i64> = points.iter().map(|p| p[0].as_i64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "in order of event time"
    );
    assert!(
        points.iter().any(|p| p[2].is_number()),
        "the guard's score is charted"
    );
    let intervals = chart["alerts"].as_array().unwrap();
    assert!(!intervals.is_empty());
    let last = intervals.last().unwrap()["start"].as_i64().unwrap();
    assert!(
        times[0] < last && last <= *times.last().unwrap(),
        "the latest alert is drawn with the readings before it: {last} in {}..",
        times[0]
    );
    let windowed = served.json(&format!(
        "/api/series/{source}/{name}?from={}&to={}",
        times[10], times[20]
    ));
    assert_eq!(windowed["points"].as_array().unwrap().len(), 11);

    let guards = served.json("/api/guards");
    assert_eq!(guards[0]["name"], "zscore");
    assert_eq!(guards[0]["topic"], "telemetry-alerts");

    // The same run as Prometheus sees it.
    let (code, metrics) = served.get("/metrics");
    assert_eq!(code, 200);
    let raised = archived
        .iter()
        .filter(|a| a.status == AlertStatus::Raised)
        .count();
    for line in [
        format!("vigil_events_in_total {READINGS}"),
        format!("vigil_alerts_raised_total{{guard=\"zscore\"}} {raised}"),
        format!("vigil_open_alerts{{guard=\"zscore\"}} {}", open.len()),
        "vigil_build_info{version=".to_owned(),
        "# TYPE vigil_archive_write_seconds histogram".to_owned(),
        "vigil_process_resident_memory_bytes ".to_owned(),
    ] {
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    // Every figure of a dataflow job the Grafana dashboard shows is one this job serves.
    let missing = vigil_tests::dashboard::missing_from(&metrics, |n| {
        // Their own tests check the other jobs' figures, and Kafka's lag (tests/tests/kafka.rs).
        !["vigil_sync_", "vigil_couchdb_", "vigil_kafka_"]
            .iter()
            .any(|other| n.starts_with(other))
    });
    assert!(missing.is_empty(), "the dashboard names {missing:?}");
    let (code, health) = served.get("/health");
    assert_eq!((code, health.contains("\"ok\"")), (200, true), "{health}");
    let (code, ready) = served.get("/ready");
    assert_eq!((code, ready.contains("true")), (200, true), "{ready}");

    // What a hostile client tries gets nothing but the fixed paths.
    for path in [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/app.js/../../Cargo.toml",
        "/api/series/..%2F..%2Fetc/passwd",
    ] {
        let (code, body) = served.get(path);
        assert_eq!(code, 404, "{path}: {body}");
        assert!(!body.contains("root:"), "{path}: {body}");
    }
    let (code, _) = served.get("/api/series/a/b?from=yesterday");
    assert_eq!(code, 400, "a bad range is refused");
    let (code, body) = served.get("/api/series/%3Cscript%3E/x");
    assert_eq!(code, 404);
    assert!(!body.contains("<script>"), "{body}");
    let (code, page) = served.get("/");
    assert_eq!(code, 200);
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page loads nothing from elsewhere"
    );
}

/// Opens the page of `served` in headless Chromium until it shows what `expect` names
/// (`alerts` or `archaeology`); returns what it saw, and saves a screenshot in `dir`.
fn in_browser(served: &Served, expect: &str, dir: &Path) -> (serde_json::Value, PathBuf) {
    let browser = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "chromium is not at {chromium}: run scripts/setup.sh --tests (or set CHROMIUM)"
    );
    assert!(
        browser.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in {}: run scripts/setup.sh --tests",
        browser.display()
    );
    let screenshot: PathBuf = dir.join(format!("{expect}.png"));
    let output = Command::new("node")
        .arg(browser.join("check-page.mjs"))
        .args(["--url", &format!("http://{}/", served.addr)])
        .arg("--screenshot")
        .arg(&screenshot)
        .args(["--expect", expect, "--timeout-ms", "60000"])
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs: install Node.js 18 or newer");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);
    (seen, screenshot)
}

#[test]
fn the_archaeology_page_shows_patterns_pairs_and_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::archaeology(dir.path());
    let status = served.json("/api/status");
    assert_eq!(status["job"], "archaeology");
    // The page counts what the engine counts.
    let (_, metrics) = served.get("/metrics");
    let events = status["events_in"].as_u64().unwrap();
    assert!(events > 0, "{status}");
    assert!(
        metrics.contains(&format!("vigil_events_in_total {events}\n")),
        "{events} in\n{metrics}"
    );
    let patterns = served.json("/api/patterns");
    let supports: Vec<u64> = patterns
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["support"].as_u64().unwrap())
        .collect();
    assert!(!supports.is_empty(), "{patterns}");
    assert!(
        supports.windows(2).all(|w| w[0] >= w[1]),
        "biggest first: {supports:?}"
    );
    let sessions = served.json("/api/sessions");
    let total: u64 = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sessions"].as_u64().unwrap())
        .sum();
    let archived = vigil_tests::archive::read_records::<vigil_operators::Session>(
        &dir.path().join("archive/sessions"),
    );
    assert_eq!(total as usize, archived.len(), "{sessions}");
    let (seen, _) = in_browser(&served, "archaeology", dir.path());
    assert!(seen["patterns"].as_u64().unwrap() >= 1, "{seen}");
    assert!(seen["bars"].as_u64().unwrap() >= 1, "{seen}");
}

#[test]
fn the_page_shows_alerts_and_charts_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    let (seen, screenshot) = in_browser(&served, "alerts", dir.path());
    assert!(seen["charts"].as_u64().unwrap() >= 1, "{seen}");
    assert!(seen["guards"].as_u64().unwrap() >= 1, "{seen}");
    assert!(
        seen["alerts_rows"].as_u64().unwrap() + seen["feed"].as_u64().unwrap() >= 1,
        "{seen}"
    );
    if let Ok(keep) = std::env::var("VIGIL_SCREENSHOT") {
        std::fs::copy(&screenshot, keep).unwrap();
    }
}
