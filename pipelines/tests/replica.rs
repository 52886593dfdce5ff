//! The replica sink against real databases: SQLite files and PostgreSQL (a database of each
//! test's own on the machine's server, and a throwaway server the test stops and starts).
//!
//! The reference is the archive the same run wrote: after a backfill, every replica table
//! must hold exactly what the archive says — telemetry metadata row for row, every raise and
//! clear once in `alert_history`, the alerts still open in `alerts`, and the final patterns,
//! entanglements and closed sessions.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::{RngExt, SeedableRng};
use vigil_operators::archaeology::entanglements::Entanglement;
use vigil_operators::{Alert, AlertStatus, Pattern, Reading, Record, Session};
use vigil_pipelines::connect::replica::{Replica, ReplicaUrl};
use vigil_pipelines::jobs::guard::registry::GuardSpec;
use vigil_pipelines::jobs::guard::{AlertsOut, GuardJob, InputSpec, run};
use vigil_pipelines::runtime::shutdown::Shutdown;
use vigil_pipelines::sinks::replica::{Bulk, ReplicaOptions};
use vigil_tests::files::parquet_files;
use vigil_tests::postgres::{PgCluster, PgDatabase};

const GUARDS: [&str; 2] = ["zscore:window=30,threshold=3.5", "level_shift"];

/// Rocket telemetry with planted anomalies: alerts are raised and cleared.
fn rocket(vehicles: usize, ticks: u64) -> String {
    format!("gen:rocket?vehicles={vehicles}&ticks={ticks}&interval_ms=1000&anomaly_rate=0.01")
}

fn guard_job(input: &str, dir: &Path, replica: ReplicaOptions, workers: usize) -> GuardJob {
    GuardJob {
        input: InputSpec::Generator(input.into()),
        archive: dir.join("archive").display().to_string(),
        alerts: AlertsOut::Off,
        guards: GuardSpec::parse_all(&GUARDS.map(String::from)).unwrap(),
        workers,
        spill_dir: dir.join("spill"),
        state_dir: dir.join("state"),
        replica: Some(ReplicaOptions {
            batch_rows: 20_000,
            ..replica
        }),
        ..GuardJob::default()
    }
}

fn options(url: &str) -> ReplicaOptions {
    ReplicaOptions::new(ReplicaUrl::parse(url).unwrap())
}

fn records<R: Record>(dir: &Path) -> Vec<R> {
    let mut all = Vec::new();
    for file in parquet_files(dir) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            all.extend(R::from_batch(&batch.unwrap()).unwrap());
        }
    }
    all
}

/// A replica's rows of `query`, as text.
fn rows(url: &str, query: &str) -> Vec<Vec<Option<String>>> {
    let runtime = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let mut replica = Replica::connect(&ReplicaUrl::parse(url).unwrap(), &runtime).unwrap();
    replica.query_text(query, &[]).unwrap()
}

/// A time column as epoch milliseconds, as text, in the replica's dialect.
fn ms(url: &str, column: &str) -> String {
    if url.starts_with("sqlite://") {
        format!("CAST({column} AS TEXT)")
    } else {
        format!("CAST(CAST(extract(epoch FROM {column}) * 1000 AS BIGINT) AS TEXT)")
    }
}

fn text(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

fn number(value: &Option<String>) -> f64 {
    value.as_deref().unwrap().parse().unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Checks that the guard tables of the replica at `url` hold what the archive in `dir` holds.
fn assert_guard_tables_match(url: &str, dir: &Path) {
    let archive = dir.join("archive");
    // telemetry_meta: one row per reading, metadata equal.
    let readings: BTreeMap<String, Reading> = records::<Reading>(&archive.join("telemetry"))
        .into_iter()
        .map(|r| (r.event_id.to_string(), r))
        .collect();
    assert!(readings.len() > 10_000, "the run archived telemetry");
    let replicated = rows(
        url,
        &format!(
            "SELECT event_id, source, name, {}, CAST(value AS TEXT), key_id FROM telemetry_meta",
            ms(url, "ts")
        ),
    );
    assert_eq!(
        replicated.len(),
        readings.len(),
        "one telemetry_meta row per reading"
    );
    for row in &replicated {
        let reading = &readings[&text(&row[0])];
        assert_eq!(text(&row[1]), reading.source.as_str());
        assert_eq!(text(&row[2]), reading.name.as_str());
        assert_eq!(number(&row[3]) as i64, reading.ts, "{row:?}");
        assert!(
            close(number(&row[4]), reading.value),
            "{row:?} vs {reading:?}"
        );
        assert_eq!(row[5].as_deref(), reading.key_id.as_deref());
    }

    // alert_history: every raise and clear once; alerts: the ones not cleared.
    let alerts = records::<Alert>(&archive.join("alerts"));
    let raised = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Raised)
        .count();
    assert!(raised > 0, "the run raised alerts");
    let history: BTreeSet<(String, String, String)> = alerts
        .iter()
        .map(|a| {
            let status = match a.status {
                AlertStatus::Raised => "raised",
                AlertStatus::Cleared => "cleared",
            };
            (a.alert_id.to_string(), status.to_owned(), a.ts.to_string())
        })
        .collect();
    assert_eq!(
        history.len(),
        alerts.len(),
        "the archive holds each alert once"
    );
    let replicated: BTreeSet<(String, String, String)> = rows(
        url,
        &format!(
            "SELECT alert_id, status, {} FROM alert_history",
            ms(url, "ts")
        ),
    )
    .iter()
    .map(|r| (text(&r[0]), text(&r[1]), text(&r[2])))
    .collect();
    assert_eq!(
        replicated, history,
        "alert_history holds every raise and clear"
    );
    let cleared: BTreeSet<&str> = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Cleared)
        .map(|a| a.alert_id.as_str())
        .collect();
    let open: BTreeSet<String> = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Raised && !cleared.contains(a.alert_id.as_str()))
        .map(|a| a.alert_id.to_string())
        .collect();
    assert!(!cleared.is_empty(), "the run cleared alerts");
    let replicated: BTreeSet<String> = rows(url, "SELECT alert_id, status FROM alerts")
        .iter()
        .map(|r| {
            assert_eq!(text(&r[1]), "raised");
            text(&r[0])
        })
        .collect();
    assert_eq!(
        replicated, open,
        "alerts holds exactly the alerts still open"
    );

    // Every part ended at the end of the input.
    let positions = rows(url, "SELECT CAST(position AS TEXT) FROM vigil_progress");
    assert!(!positions.is_empty());
    for p in positions {
        assert_eq!(text(&p[0]), i64::MAX.to_string());
    }
}

#[test]
fn guard_backfill_into_sqlite_equals_the_archive_and_a_rerun_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("replica.db").display());
    let summary = run(
        guard_job(&rocket(6, 3_000), dir.path(), options(&url), 2),
        Shutdown::default(),
    )
    .unwrap();
    assert!(summary.replicated >= summary.archived);
    assert_guard_tables_match(&url, dir.path());

    // The same backfill again: every part is at the end already, so nothing is written.
    let again = run(
        guard_job(&rocket(6, 3_000), dir.path(), options(&url), 2),
        Shutdown::default(),
    )
    .unwrap();
    assert_eq!(again.replicated, 0, "a finished job's output is skipped");
    assert_guard_tables_match(&url, dir.path());
}

#[test]
fn guard_backfill_into_postgres_equals_the_archive() {
    let db = PgDatabase::create("replica");
    let dir = tempfile::tempdir().unwrap();
    let replica = ReplicaOptions {
        migrate: true,
        replicate_payload: true,
        ..options(&db.url)
    };
    run(
        guard_job(&rocket(6, 3_000), dir.path(), replica, 2),
        Shutdown::default(),
    )
    .unwrap();
    assert_guard_tables_match(&db.url, dir.path());
}

/// The array-parameter path (CockroachDB's) on PostgreSQL: the same rows as `COPY`.
#[test]
fn guard_backfill_into_postgres_with_array_parameters_equals_the_archive() {
    let db = PgDatabase::create("replica_arrays");
    let dir = tempfile::tempdir().unwrap();
    let replica = ReplicaOptions {
        migrate: true,
        bulk: Bulk::Arrays,
        ..options(&db.url)
    };
    run(
        guard_job(&rocket(6, 3_000), dir.path(), replica, 2),
        Shutdown::default(),
    )
    .unwrap();
    assert_guard_tables_match(&db.url, dir.path());
}

#[test]
fn archaeology_backfill_equals_the_archive_in_every_replica() {
    let copy = PgDatabase::create("replica_arch");
    let arrays = PgDatabase::create("replica_arch_arrays");
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("replica.db").display());
    let replicas = [
        (sqlite.as_str(), Bulk::Auto),
        (copy.url.as_str(), Bulk::Copy),
        (arrays.url.as_str(), Bulk::Arrays),
    ];
    for (i, (url, bulk)) in replicas.into_iter().enumerate() {
        let run_dir = dir.path().join(format!("run{i}"));
        let args = vigil_pipelines::cli::ArchaeologyArgs {
            input: vec!["gen:devices?devices=60&ticks=900&rooms=4".into()],
            archive: Some(run_dir.join("archive").display().to_string()),
            replica: vigil_pipelines::cli::ReplicaArgs {
                url: Some(url.into()),
                replica_migrate: true,
                ..Default::default()
            },
            no_progress: true,
            ..clap::Parser::parse_from(["vigil-archaeology"])
        };
        let mut job = args.into_job().unwrap();
        job.settings.spill_dir = run_dir.join("spill");
        if let Some(replica) = &mut job.settings.replica {
            replica.bulk = bulk;
        }
        vigil_pipelines::jobs::archaeology::run(job, Shutdown::default()).unwrap();
        let archive = run_dir.join("archive");

        let patterns: BTreeSet<(String, u64, u64)> = records::<Pattern>(&archive.join("patterns"))
            .into_iter()
            .map(|p| (p.pattern_id.to_string(), p.support, p.occurrences))
            .collect();
        assert!(!patterns.is_empty(), "patterns were found");
        let replicated: BTreeSet<(String, u64, u64)> = rows(
            url,
            "SELECT pattern_id, CAST(support AS TEXT), CAST(occurrences AS TEXT) FROM patterns",
        )
        .iter()
        .map(|r| (text(&r[0]), number(&r[1]) as u64, number(&r[2]) as u64))
        .collect();
        assert_eq!(
            replicated, patterns,
            "{url}: patterns as they stand at the end"
        );

        let pairs: BTreeSet<(String, String, u64)> =
            records::<Entanglement>(&archive.join("entanglements"))
                .into_iter()
                .map(|e| (e.a.to_string(), e.b.to_string(), e.together))
                .collect();
        assert!(!pairs.is_empty(), "entangled pairs were found");
        let replicated: BTreeSet<(String, String, u64)> = rows(
            url,
            "SELECT a, b, CAST(together AS TEXT) FROM entanglements",
        )
        .iter()
        .map(|r| (text(&r[0]), text(&r[1]), number(&r[2]) as u64))
        .collect();
        assert_eq!(
            replicated, pairs,
            "{url}: entanglements as they stand at the end"
        );

        // Closed sessions are final: the archive has them; the replica has them and the
        // sessions still open at the end.
        let closed: BTreeSet<(String, i64, i64, u64)> =
            records::<Session>(&archive.join("sessions"))
                .into_iter()
                .map(|s| (s.key, s.start, s.end, s.events))
                .collect();
        assert!(!closed.is_empty(), "sessions were closed");
        let open_column = if url.starts_with("sqlite") {
            "CAST(\"open\" AS TEXT)"
        } else {
            "CASE WHEN \"open\" THEN '1' ELSE '0' END"
        };
        let replicated: BTreeSet<(String, i64, i64, u64)> = rows(
            url,
            &format!(
                "SELECT \"key\", {}, {}, CAST(events AS TEXT) FROM sessions WHERE {open_column} = '0'",
                ms(url, "\"start\""),
                ms(url, "\"end\"")
            ),
        )
        .iter()
        .map(|r| {
            let n = |i: usize| number(&r[i]) as i64;
            (text(&r[0]), n(1), n(2), n(3) as u64)
        })
        .collect();
        assert_eq!(replicated, closed, "{url}: closed sessions");
    }
}

fn guard_binary(input: &str, dir: &Path, url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil-guard"));
    command
        .args(["--input", input, "--archive"])
        .arg(dir.join("archive"))
        .arg("--spill")
        .arg(dir.join("spill"))
        .args([
            "--alerts",
            "none",
            "--no-progress",
            "-w",
            "2",
            "--replica",
            url,
        ])
        .args(GUARDS.iter().flat_map(|g| ["--guard", g]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Kills the job at random moments while it writes; a last run finishes. The replica must end
/// exactly as the archive says: nothing lost, nothing twice, retractions applied.
fn kill_campaign(url: &str, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let input = rocket(16, 4_000);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut killed_mid_write = 0;
    for round in 0..4 {
        let mut child = guard_binary(&input, dir.path(), url)
            .arg("--replica-migrate")
            .spawn()
            .unwrap();
        let wait = Duration::from_millis(rng.random_range(300..2_500));
        std::thread::sleep(wait);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed_mid_write += 1;
        }
        let status = child.wait().unwrap();
        eprintln!("round {round}: killed after {wait:?} ({status})");
    }
    assert!(killed_mid_write >= 2, "the job was killed while running");
    let output = guard_binary(&input, dir.path(), url).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_guard_tables_match(url, dir.path());
}

#[test]
fn kill_9_campaign_into_postgres_ends_with_exactly_the_right_rows() {
    let db = PgDatabase::create("replica_kill");
    kill_campaign(&db.url, 7);
}

#[test]
fn kill_9_campaign_into_sqlite_ends_with_exactly_the_right_rows() {
    let dir = tempfile::tempdir().unwrap();
    kill_campaign(
        &format!("sqlite://{}", dir.path().join("r.db").display()),
        11,
    );
}

#[test]
fn postgres_stopped_mid_run_loses_nothing() {
    let cluster = PgCluster::start_logical();
    let dir = tempfile::tempdir().unwrap();
    let replica = ReplicaOptions {
        migrate: true,
        batch_interval: Duration::from_millis(100),
        ..options(&cluster.url)
    };
    let job = GuardJob {
        lateness_ms: 1_000,
        ..guard_job(&rocket(16, 6_000), dir.path(), replica, 2)
    };
    let worker = std::thread::spawn(move || run(job, Shutdown::default()));
    // Once the replica has the first batches, the server goes away for a while.
    let started = Instant::now();
    loop {
        let progressed = std::panic::catch_unwind(|| {
            rows(
                &cluster.url,
                "SELECT CAST(count(*) AS TEXT) FROM telemetry_meta",
            )
        })
        .ok()
        .is_some_and(|r| number(&r[0][0]) > 0.0);
        if progressed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.stop();
    std::thread::sleep(Duration::from_secs(3));
    cluster.start();
    let summary = worker.join().unwrap().unwrap();
    assert!(
        dir.path().join("spill").join("replica").exists(),
        "batches waited in the spill while the server was away: {summary}"
    );
    assert_guard_tables_match(&cluster.url, dir.path());
}

#[test]
fn a_frozen_postgres_does_not_hold_the_job_and_its_rows_arrive_later() {
    let cluster = PgCluster::start_logical();
    let dir = tempfile::tempdir().unwrap();
    // Short limits so that the test is quick; the connection string's `connect_timeout`
    // overrides vigil's default.
    let url = format!("{}?connect_timeout=2", cluster.url);
    let replica = ReplicaOptions {
        migrate: true,
        batch_interval: Duration::from_millis(100),
        write_timeout: Duration::from_secs(2),
        ..options(&url)
    };
    let job = || GuardJob {
        lateness_ms: 1_000,
        ..guard_job(&rocket(16, 6_000), dir.path(), replica.clone(), 2)
    };
    let first = job();
    let worker = std::thread::spawn(move || run(first, Shutdown::default()));
    let started = Instant::now();
    // Until the job has made the tables, asking fails; that counts as no rows yet.
    let written = || {
        std::panic::catch_unwind(|| rows(&url, "SELECT CAST(count(*) AS TEXT) FROM telemetry_meta"))
            .ok()
            .is_some_and(|r| number(&r[0][0]) > 0.0)
    };
    while !written() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The server stops answering mid-write and stays so: the job must still end, its
    // results in the spill.
    cluster.pause();
    let paused = Instant::now();
    while !worker.is_finished() {
        if paused.elapsed() > Duration::from_secs(120) {
            cluster.resume();
            panic!("the job waited for the frozen replica");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let summary = worker.join().unwrap().unwrap();
    cluster.resume();
    let spill = dir.path().join("spill").join("replica");
    assert!(spill.exists(), "batches waited in the spill: {summary}");

    // The next run sends the spill first; the replica then holds exactly the archive.
    run(job(), Shutdown::default()).unwrap();
    assert_guard_tables_match(&url, dir.path());
}

#[test]
fn observer_writer_writes_rows_and_cannot_drop_or_alter_tables() {
    let db = PgDatabase::create("replica_roles");
    let dir = tempfile::tempdir().unwrap();
    // An administrator migrates and sets up the role once…
    let admin = ReplicaOptions {
        migrate: true,
        ..options(&db.url)
    };
    run(
        guard_job(&rocket(2, 200), &dir.path().join("a"), admin, 1),
        Shutdown::default(),
    )
    .unwrap();
    db.execute(
        "DO $$ BEGIN CREATE ROLE vigil_observer_login LOGIN; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$; \
         GRANT observer_writer TO vigil_observer_login",
    );
    db.execute("TRUNCATE telemetry_meta, alerts, alert_history, vigil_progress");
    // …and the job runs as a login that takes observer_writer.
    let url = db.url.replacen("postgres@", "vigil_observer_login@", 1);
    let writer = ReplicaOptions {
        role: Some("observer_writer".into()),
        ..options(&url)
    };
    run(
        guard_job(&rocket(6, 3_000), &dir.path().join("b"), writer, 2),
        Shutdown::default(),
    )
    .unwrap();
    assert_guard_tables_match(&db.url, &dir.path().join("b"));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (client, connection) = runtime
        .block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls))
        .unwrap();
    runtime.spawn(connection);
    runtime
        .block_on(client.batch_execute("SET ROLE observer_writer"))
        .unwrap();
    for statement in [
        "DROP TABLE alerts",
        "ALTER TABLE telemetry_meta ADD COLUMN extra TEXT",
        "CREATE TABLE observer_made (x INT)",
        "TRUNCATE alert_history",
    ] {
        let refused = runtime.block_on(client.batch_execute(statement));
        let code = refused
            .as_ref()
            .err()
            .and_then(|e| e.code())
            .map(|c| c.code().to_owned());
        assert_eq!(
            code.as_deref(),
            Some("42501"),
            "{statement} must be refused for lack of privilege: {refused:?}"
        );
    }
}

#[test]
fn sync_actions_are_replicated_once_each() {
    let dir = tempfile::tempdir().unwrap();
    vigil_pipelines::jobs::sync::prepare_demo(&dir.path().join("demo")).unwrap();
    let url = format!("sqlite://{}", dir.path().join("replica.db").display());
    let job = vigil_pipelines::jobs::sync::SyncJob {
        replica: Some(options(&url)),
        ..vigil_pipelines::jobs::sync::SyncJob::new(
            ReplicaUrl::Sqlite(dir.path().join("demo").join("local.db")),
            ReplicaUrl::Sqlite(dir.path().join("demo").join("remote.db")),
            vec![vigil_pipelines::jobs::sync::DEMO_TABLE.into()],
        )
    };
    let (_, actions) = vigil_pipelines::jobs::sync::run_once(&job).unwrap();
    assert!(
        actions.len() >= 4,
        "the demonstration has edits on both sides"
    );
    let expected: BTreeSet<(String, String, String, String)> = actions
        .iter()
        .map(|a| {
            let kind = a.action.as_str().to_owned();
            (
                a.table.clone(),
                a.key.clone(),
                kind,
                a.winner_updated_at.to_string(),
            )
        })
        .collect();
    let replicated = || -> BTreeSet<(String, String, String, String)> {
        rows(
            &url,
            "SELECT \"table\", \"key\", action, CAST(winner_updated_at AS TEXT) FROM sync_actions",
        )
        .iter()
        .map(|r| (text(&r[0]), text(&r[1]), text(&r[2]), text(&r[3])))
        .collect()
    };
    assert_eq!(replicated(), expected);
    // A second pass finds the replicas equal: nothing new, nothing twice.
    let (_, again) = vigil_pipelines::jobs::sync::run_once(&job).unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(replicated(), expected);
}

#[test]
fn a_replica_without_the_tables_is_an_error_that_says_what_to_run() {
    let db = PgDatabase::create("replica_bare");
    let dir = tempfile::tempdir().unwrap();
    let error = run(
        guard_job(&rocket(2, 100), dir.path(), options(&db.url), 1),
        Shutdown::default(),
    )
    .err()
    .map(|e| format!("{e:#}"))
    .expect("the job refuses to start");
    assert!(error.contains("--replica-migrate"), "{error}");
    assert!(
        db.try_execute("SELECT 1 FROM telemetry_meta").is_err(),
        "nothing was created without being asked"
    );
}
