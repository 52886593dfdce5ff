//! The replica sink against real databases: SQLite files and PostgreSQL (a database of each
//! test's own on the machine's server, and a throwaway server the test stops and starts).
//!
//! The reference is the archive the same run wrote: after a backfill, every replica table
//! must hold exactly what the archive says — telemetry metadata row for row, every raise and
//! clear once in `alert_history`, the alerts still open in `alerts`, and the final patterns,
//! entanglements and closed sessions.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use std::collections::BTreeSet;

use vigil_operators::archaeology::entanglements::Entanglement;
use vigil_operators::{Pattern, Session};
use vigil_pipelines::connect::replica::ReplicaUrl;

use common::replica::*;
use vigil_pipelines::jobs::guard::run;
use vigil_pipelines::runtime::stop::Stop;
use vigil_pipelines::sinks::replica::{Bulk, ReplicaParams};
use vigil_tests::postgres::PgDatabase;

#[test]
fn guard_backfill_into_sqlite_equals_the_archive_and_a_rerun_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("replica.db").display());
    let summary = run(
        guard_job(&rocket(6, 3_000), dir.path(), options(&url), 2),
        Stop::default(),
    )
    .unwrap();
    assert!(summary.replicated >= summary.archived);
    assert_guard_tables_match(&url, dir.path());

    // The same backfill again: every part is at the end already, so nothing is written.
    let again = run(
        guard_job(&rocket(6, 3_000), dir.path(), options(&url), 2),
        Stop::default(),
    )
    .unwrap();
    assert_eq!(again.replicated, 0, "a finished job's output is skipped");
    assert_guard_tables_match(&url, dir.path());
}

#[test]
fn the_default_replica_holds_alerts_but_not_a_row_per_reading() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("replica.db").display());
    let count = |url: &str, table: &str| {
        let query = format!("SELECT CAST(count(*) AS TEXT) FROM {table}");
        number(&rows(url, &query)[0][0]) as u64
    };
    let mut command = guard_binary(&rocket(6, 2_000), dir.path(), &url);
    // The table list is the default's: the fixture's `all` is taken back.
    command.args(["--replica-tables", "default"]);
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        count(&url, "telemetry_meta"),
        0,
        "readings stay in the archive"
    );
    let decided: BTreeSet<(String, String)> =
        records::<vigil_operators::Alert>(&dir.path().join("archive/alerts"))
            .into_iter()
            .map(|a| (a.alert_id.to_string(), format!("{:?}", a.status)))
            .collect();
    assert!(
        !decided.is_empty(),
        "the generator's anomalies raise alerts"
    );
    assert_eq!(
        count(&url, "alert_history") as usize,
        decided.len(),
        "every raise and clear is in the history"
    );

    // Asked for, telemetry_meta comes too; an unknown table name is refused with the known ones.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("replica.db").display());
    let mut command = guard_binary(&rocket(6, 500), dir.path(), &url);
    command.args(["--replica-tables", "default,telemetry_meta"]);
    assert!(command.output().unwrap().status.success());
    assert_eq!(count(&url, "telemetry_meta"), 6 * 8 * 500);
    let mut command = guard_binary(&rocket(6, 500), dir.path(), &url);
    command.args(["--replica-tables", "alerts,telemetry_rows"]);
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("telemetry_rows") && stderr.contains("telemetry_meta"),
        "{stderr}"
    );
}

#[test]
fn guard_backfill_into_postgres_equals_the_archive() {
    let db = PgDatabase::create("replica");
    let dir = tempfile::tempdir().unwrap();
    let replica = ReplicaParams {
        migrate: true,
        replicate_payload: true,
        ..options(&db.url)
    };
    run(
        guard_job(&rocket(6, 3_000), dir.path(), replica, 2),
        Stop::default(),
    )
    .unwrap();
    assert_guard_tables_match(&db.url, dir.path());
}

/// The array-parameter path (CockroachDB's) on PostgreSQL: the same rows as `COPY`.
#[test]
fn guard_backfill_into_postgres_with_array_parameters_equals_the_archive() {
    let db = PgDatabase::create("replica_arrays");
    let dir = tempfile::tempdir().unwrap();
    let replica = ReplicaParams {
        migrate: true,
        bulk: Bulk::Arrays,
        ..options(&db.url)
    };
    run(
        guard_job(&rocket(6, 3_000), dir.path(), replica, 2),
        Stop::default(),
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
        vigil_pipelines::jobs::archaeology::run(job, Stop::default()).unwrap();
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

#[test]
fn observer_writer_writes_rows_and_cannot_drop_or_alter_tables() {
    let db = PgDatabase::create("replica_roles");
    let dir = tempfile::tempdir().unwrap();
    // An administrator migrates and sets up the role once…
    let admin = ReplicaParams {
        migrate: true,
        ..options(&db.url)
    };
    run(
        guard_job(&rocket(2, 200), &dir.path().join("a"), admin, 1),
        Stop::default(),
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
    let writer = ReplicaParams {
        role: Some("observer_writer".into()),
        ..options(&url)
    };
    run(
        guard_job(&rocket(6, 3_000), &dir.path().join("b"), writer, 2),
        Stop::default(),
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
        Stop::default(),
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
