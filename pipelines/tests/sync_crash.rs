//! vigil-sync killed with SIGKILL at random moments while it applies, then run again: every
//! batch is one transaction of idempotent upserts, so the replicas end equal, with every row
//! once, and a last pass finds nothing to do.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use vigil_tests::postgres::PgDatabase;

fn sync(local: &str, remote: &str, archive: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil-sync"));
    command
        .args([
            "--local", local, "--remote", remote, "--table", "orders", "--once",
        ])
        .args(["--batch-rows", "200", "--archive"])
        .arg(archive)
        .arg("--replica")
        .arg(format!(
            "sqlite://{}",
            archive.with_file_name("replica.db").display()
        ))
        // The replica's spill (./vigil-spill) goes beside the archive, not into the source tree.
        .current_dir(archive.parent().unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

#[test]
fn killed_while_applying_and_run_again_the_replicas_end_equal() {
    let local = PgDatabase::create("crash_local");
    let remote = PgDatabase::create("crash_remote");
    let create = "CREATE TABLE orders (id integer PRIMARY KEY, qty integer NOT NULL, \
                  updated_at timestamptz NOT NULL, origin text NOT NULL)";
    local.execute(create);
    remote.execute(create);
    // 16,000 rows to pull, 8,000 to push, 4,000 changed on both sides.
    remote.execute(
        "INSERT INTO orders SELECT i, i, to_timestamp(1767225600 + i), 'remote' \
         FROM generate_series(1, 20000) i",
    );
    local.execute(
        "INSERT INTO orders SELECT i, -i, to_timestamp(1767225600 + i + 5), 'local' \
         FROM generate_series(16001, 28000) i",
    );
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("archive");
    let seed = std::env::var("VIGIL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let counts = || {
        let count = |db: &PgDatabase| {
            db.column("SELECT count(*)::text FROM orders")[0]
                .clone()
                .unwrap()
        };
        (count(&local), count(&remote))
    };
    let mut progress = vec![counts()];
    for _ in 0..4 {
        let mut child = sync(&local.url, &remote.url, &archive).spawn().unwrap();
        // Wait until the pass is writing, then kill it a random moment later.
        let before = counts();
        while counts() == before && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..150)));
        child.kill().unwrap(); // SIGKILL: mid-pass, no clean-up.
        child.wait().unwrap();
        progress.push(counts());
    }
    let first = &progress[0];
    let partial = |p: &(String, String)| p != first && (p.0 != "28000" || p.1 != "28000");
    assert!(
        progress.iter().skip(1).any(partial),
        "some kill fell while rows were being written: {progress:?}"
    );
    let status = sync(&local.url, &remote.url, &archive).status().unwrap();
    assert!(status.success(), "a pass runs to the end: {status}");

    let table = |db: &PgDatabase| {
        db.column(
            "SELECT string_agg(id || ':' || qty || ':' || origin, ',' ORDER BY id) FROM orders",
        )
    };
    assert_eq!(
        table(&local),
        table(&remote),
        "the replicas agree (after kills at {progress:?})"
    );
    assert_eq!(
        local.column("SELECT count(*)::text FROM orders"),
        [Some("28000".to_owned())]
    );
    // The rows both changed went to the later writer: the local side, five seconds later.
    assert_eq!(
        remote.column("SELECT count(*)::text FROM orders WHERE id BETWEEN 16001 AND 20000 AND origin = 'local'"),
        [Some("4000".to_owned())]
    );
    // A last pass: nothing left to do.
    let summary = tmp.path().join("summary.json");
    let status = sync(&local.url, &remote.url, &archive)
        .arg("--summary-json")
        .arg(&summary)
        .status()
        .unwrap();
    assert!(status.success());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(summary["sync_planned"], 0, "{summary}");
}
