//! vigil-sync between real replicas: two PostgreSQL databases on the machine's server, and
//! two SQLite files. The same story on both: a restore builds the local replica, both sides
//! are edited (edits on one side, the same row on both, a tie, deletes, new rows), a dry run
//! changes nothing, `--direction up` sends only local wins, a full pass makes the replicas
//! equal with the conflicts logged, and the next pass finds nothing to do.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use vigil_operators::SyncActionKind;
use vigil_pipelines::connect::replica::{Replica, ReplicaUrl};
use vigil_pipelines::jobs::sync::{Direction, SyncJob, run_once};
use vigil_tests::postgres::PgDatabase;

const BASE: i64 = 1_767_225_600_000;

/// How one kind of replica writes the story's SQL.
struct Dialect {
    create: &'static str,
    /// A time literal for epoch milliseconds.
    time: fn(i64) -> String,
}

const POSTGRES: Dialect = Dialect {
    create: "CREATE TABLE orders (id integer PRIMARY KEY, item text NOT NULL, qty integer NOT NULL, \
             updated_at timestamptz NOT NULL, origin text NOT NULL)",
    time: |ms| format!("to_timestamp({ms} / 1000.0)"),
};

const SQLITE: Dialect = Dialect {
    create: "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL, qty INTEGER NOT NULL, \
             updated_at INTEGER NOT NULL, origin TEXT NOT NULL)",
    time: |ms| ms.to_string(),
};

fn rows(replica: &mut Replica) -> BTreeMap<i64, Map<String, Value>> {
    let info = replica.table("orders").unwrap();
    replica
        .scan(&info)
        .unwrap()
        .into_iter()
        .map(|row| (row["id"].as_i64().unwrap(), row))
        .collect()
}

fn qty(rows: &BTreeMap<i64, Map<String, Value>>, id: i64) -> Option<i64> {
    rows.get(&id).map(|r| r["qty"].as_i64().unwrap())
}

fn story(
    local_url: ReplicaUrl,
    remote_url: ReplicaUrl,
    dialect: &Dialect,
    archive: &std::path::Path,
) {
    let runtime = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let mut local = Replica::connect(&local_url, &runtime).unwrap();
    let mut remote = Replica::connect(&remote_url, &runtime).unwrap();
    let t = dialect.time;
    let mut seed = format!("{};", dialect.create);
    for id in 1..=50 {
        seed.push_str(&format!(
            "INSERT INTO orders VALUES ({id}, 'item-{id}', {id}, {}, 'remote');",
            t(BASE)
        ));
    }
    remote.execute_batch(&seed).unwrap();

    // A new local replica, built from the remote.
    let job = SyncJob {
        restore: true,
        archive: Some(archive.display().to_string()),
        ..SyncJob::new(local_url.clone(), remote_url.clone(), vec!["orders".into()])
    };
    let (summary, _) = run_once(&job).unwrap();
    assert_eq!(summary.pulled, 50, "{summary}");
    assert_eq!(rows(&mut local), rows(&mut remote));

    // Both sides take writes.
    let update = |side: &mut Replica,
                  ids: std::ops::RangeInclusive<i64>,
                  qty: i64,
                  at: i64,
                  origin: &str| {
        side.execute_batch(&format!(
            "UPDATE orders SET qty = {qty}, updated_at = {}, origin = '{origin}' WHERE id BETWEEN {} AND {}",
            t(BASE + at),
            ids.start(),
            ids.end()
        ))
        .unwrap();
    };
    update(&mut local, 1..=10, 1000, 100_000, "local");
    update(&mut remote, 6..=15, 2000, 200_000, "remote");
    update(&mut remote, 16..=16, 2000, 250_000, "remote");
    update(&mut local, 16..=16, 1000, 300_000, "local");
    // The same millisecond on both: the greater origin ("remote") wins.
    update(&mut local, 40..=40, 1000, 400_000, "local");
    update(&mut remote, 40..=40, 2000, 400_000, "remote");
    local
        .execute_batch(&format!(
            "DELETE FROM orders WHERE id = 20; INSERT INTO orders VALUES (101, 'new-local', 1, {}, 'local')",
            t(BASE + 500_000)
        ))
        .unwrap();
    remote
        .execute_batch(&format!(
            "DELETE FROM orders WHERE id = 30; INSERT INTO orders VALUES (102, 'new-remote', 2, {}, 'remote')",
            t(BASE + 500_000)
        ))
        .unwrap();
    let (local_before, remote_before) = (rows(&mut local), rows(&mut remote));

    // A dry run plans and changes nothing.
    let dry = SyncJob {
        dry_run: true,
        ..SyncJob::new(local_url.clone(), remote_url.clone(), vec!["orders".into()])
    };
    let (summary, planned) = run_once(&dry).unwrap();
    assert_eq!(summary.planned as usize, planned.len());
    let count = |kind: SyncActionKind| planned.iter().filter(|a| a.action == kind).count();
    // Local wins: 1–5, 16 (later on the local side), 101, and the delete of 20.
    assert_eq!(count(SyncActionKind::Push), 7, "{planned:#?}");
    assert_eq!(count(SyncActionKind::DeleteRemote), 1);
    // Remote wins: 6–15, 40 (the tie), 102, and the delete of 30.
    assert_eq!(count(SyncActionKind::Pull), 12);
    assert_eq!(count(SyncActionKind::DeleteLocal), 1);
    let conflicts: Vec<&str> = planned
        .iter()
        .filter(|a| a.conflict)
        .map(|a| a.key.as_str())
        .collect();
    assert_eq!(
        conflicts.len(),
        7,
        "6–10, 16 and 40 changed on both sides: {conflicts:?}"
    );
    assert_eq!(
        (rows(&mut local), rows(&mut remote)),
        (local_before.clone(), remote_before.clone())
    );

    // Up only: the local wins reach the remote; nothing comes down.
    let up = SyncJob {
        direction: Direction::Up,
        ..SyncJob::new(local_url.clone(), remote_url.clone(), vec!["orders".into()])
    };
    let (summary, _) = run_once(&up).unwrap();
    assert_eq!(
        (summary.pushed, summary.deleted_remote, summary.held_back),
        (7, 1, 13),
        "{summary}"
    );
    assert_eq!(rows(&mut local), local_before, "nothing came down");
    let remote_now = rows(&mut remote);
    assert_eq!(qty(&remote_now, 16), Some(1000));
    assert_eq!(qty(&remote_now, 20), None);

    // Both ways: the replicas agree, and the conflicts are logged with both versions.
    let both = SyncJob {
        archive: Some(archive.display().to_string()),
        ..SyncJob::new(local_url.clone(), remote_url.clone(), vec!["orders".into()])
    };
    let (summary, _) = run_once(&both).unwrap();
    assert_eq!(
        (summary.pulled, summary.deleted_local, summary.pushed),
        (12, 1, 0),
        "{summary}"
    );
    let (l, r) = (rows(&mut local), rows(&mut remote));
    assert_eq!(l, r, "the replicas agree");
    assert_eq!(l.len(), 50, "50 − 2 deleted + 2 new");
    assert_eq!(
        (qty(&l, 3), qty(&l, 7), qty(&l, 16), qty(&l, 40)),
        (Some(1000), Some(2000), Some(1000), Some(2000))
    );
    let logged = local
        .query_text(
            "SELECT row_key, winner, local_row, remote_row FROM sync_state ORDER BY id",
            &[],
        )
        .unwrap();
    assert_eq!(logged.len(), 7, "{logged:?}");
    assert!(
        logged
            .iter()
            .all(|row| row[2].is_some() && row[3].is_some()),
        "both versions kept"
    );

    // An older version written late (read before a newer write landed) leaves the row alone.
    let info = local
        .table("orders")
        .unwrap()
        .newer_wins("updated_at", "origin");
    let mut stale = l[&7].clone();
    stale.insert("qty".into(), Value::from(-1));
    stale.insert("updated_at".into(), l[&1]["updated_at"].clone());
    local.apply(&info, &[stale], &[]).unwrap();
    assert_eq!(qty(&rows(&mut local), 7), Some(2000));

    // Nothing echoes back: the next pass has nothing to do.
    let (summary, actions) = run_once(&both).unwrap();
    assert!(actions.is_empty(), "{actions:#?}");
    assert_eq!(summary.planned, 0);

    // The applied actions are in the archive, for ad-hoc SQL: the restore's 50 pulls, then
    // 8 actions up and 13 both ways.
    let files = vigil_tests::files::parquet_files(&archive.join("sync_actions"));
    assert!(!files.is_empty());
    let archived = vigil_tests::archive::sql_count(archive, "SELECT count(*) FROM sync_actions");
    assert_eq!(archived, 50 + 13, "the up pass ran without an archive");
    let conflicts = vigil_tests::archive::sql_count(
        archive,
        "SELECT count(*) FROM sync_actions WHERE conflict AND action = 'pull'",
    );
    assert_eq!(conflicts, 6, "rows 6–10 and 40");
}

#[test]
fn two_postgresql_replicas_converge() {
    let local = PgDatabase::create("sync_local");
    let remote = PgDatabase::create("sync_remote");
    let tmp = tempfile::tempdir().unwrap();
    story(
        ReplicaUrl::parse(&local.url).unwrap(),
        ReplicaUrl::parse(&remote.url).unwrap(),
        &POSTGRES,
        &tmp.path().join("archive"),
    );
    // vigil's own tables came through the migrations, tracked; the roles exist.
    let applied = local.column("SELECT name FROM vigil_migrations ORDER BY id");
    assert_eq!(
        applied.len(),
        vigil_pipelines::connect::migrations::MIGRATIONS.len()
    );
    let roles = local.column(
        "SELECT rolname::text FROM pg_roles WHERE rolname IN ('observer_writer', 'replicator') ORDER BY 1",
    );
    assert_eq!(
        roles,
        [Some("observer_writer".into()), Some("replicator".into())]
    );
    // replicator reads and writes the synced tables, and may change no schema.
    local.execute("SET ROLE replicator");
    local
        .try_execute("UPDATE orders SET qty = qty WHERE id = 1; SELECT count(*) FROM sync_agreed")
        .unwrap();
    let create = local
        .try_execute("CREATE TABLE evil (id integer)")
        .unwrap_err();
    assert!(create.contains("permission denied"), "{create}");
    let drop = local.try_execute("DROP TABLE orders").unwrap_err();
    assert!(drop.contains("must be owner"), "{drop}");
    let alter = local
        .try_execute("ALTER TABLE orders ADD COLUMN x integer")
        .unwrap_err();
    assert!(alter.contains("must be owner"), "{alter}");
    local.execute("RESET ROLE");
}

#[test]
fn two_sqlite_replicas_converge() {
    let tmp = tempfile::tempdir().unwrap();
    story(
        ReplicaUrl::Sqlite(tmp.path().join("local.db")),
        ReplicaUrl::Sqlite(tmp.path().join("remote.db")),
        &SQLITE,
        &tmp.path().join("archive"),
    );
}
