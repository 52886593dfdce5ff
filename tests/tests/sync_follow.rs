//! vigil-sync following two replicas as they change: a PostgreSQL one read through its logical
//! replication slot (a throwaway server with logical decoding) and a SQLite one compared by
//! scans; and two PostgreSQL ones polled by `updated_at`. Waves of writes on both sides
//! converge, round by round, with nothing sent back.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use vigil_pipelines::connect::replica::{Replica, ReplicaUrl};
use vigil_pipelines::jobs::sync::{Capture, SyncJob};
use vigil_pipelines::runtime::metrics::Metrics;
use vigil_tests::postgres::{PgCluster, PgDatabase};

const CREATE: &str = "CREATE TABLE orders (id integer PRIMARY KEY, qty integer NOT NULL, \
                      updated_at bigint NOT NULL, origin text NOT NULL)";

fn rows(replica: &mut Replica) -> BTreeMap<i64, Map<String, Value>> {
    let info = replica.table("orders").unwrap();
    replica
        .scan(&info)
        .unwrap()
        .into_iter()
        .map(|row| (row["id"].as_i64().unwrap(), row))
        .collect()
}

/// Waits until both sides hold the same rows and `check` holds of them.
fn converge(
    local: &mut Replica,
    remote: &mut Replica,
    check: impl Fn(&BTreeMap<i64, Map<String, Value>>) -> bool,
) -> BTreeMap<i64, Map<String, Value>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (l, r) = (rows(local), rows(remote));
        if l == r && check(&l) {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas did not converge:\nlocal  {l:?}\nremote {r:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn qty(rows: &BTreeMap<i64, Map<String, Value>>, id: i64) -> Option<i64> {
    rows.get(&id).map(|r| r["qty"].as_i64().unwrap())
}

#[test]
fn following_a_slot_and_a_scanned_replica_converges_wave_after_wave() {
    let cluster = PgCluster::start_logical();
    // CREATE DATABASE cannot run in a transaction: through psql.
    let base = cluster.url.rsplit_once('/').unwrap().0;
    let local_url = ReplicaUrl::parse(&format!("{base}/edge")).unwrap();
    let status = std::process::Command::new("psql")
        .args([cluster.url.as_str(), "-qc", "CREATE DATABASE edge"])
        .status()
        .unwrap();
    assert!(status.success());
    let tmp = tempfile::tempdir().unwrap();
    let remote_url = ReplicaUrl::Sqlite(tmp.path().join("primary.db"));
    waves(local_url, remote_url, Capture::Auto);
}

#[test]
fn polling_two_postgresql_replicas_by_updated_at_converges_wave_after_wave() {
    let local = PgDatabase::create("poll_local");
    let remote = PgDatabase::create("poll_remote");
    waves(
        ReplicaUrl::parse(&local.url).unwrap(),
        ReplicaUrl::parse(&remote.url).unwrap(),
        Capture::Poll,
    );
}

/// Seeds both replicas alike, follows them, and checks two waves of writes converge.
fn waves(local_url: ReplicaUrl, remote_url: ReplicaUrl, capture: Capture) {
    let runtime = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let mut local = Replica::connect(&local_url, &runtime).unwrap();
    let mut remote = Replica::connect(&remote_url, &runtime).unwrap();
    let mut seed = format!("{CREATE};");
    for id in 1..=20 {
        seed.push_str(&format!(
            "INSERT INTO orders VALUES ({id}, {id}, 1000, 'remote');"
        ));
    }
    local.execute_batch(&seed).unwrap();
    remote.execute_batch(&seed).unwrap();

    let job = SyncJob {
        workers: 2,
        archive: None,
        capture,
        ..SyncJob::new(local_url.clone(), remote_url.clone(), vec!["orders".into()])
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (rounds_tx, rounds) = std::sync::mpsc::channel::<()>();
    // Closed while a wave is written, so that no round falls between the two sides' writes.
    let gate = Arc::new(AtomicBool::new(false));
    let metrics = Metrics::default();
    let served = metrics
        .serve("127.0.0.1:0".parse().unwrap(), runtime.handle())
        .unwrap();
    let following = std::thread::spawn({
        let (job, stop, metrics, gate) = (job.clone(), stop.clone(), metrics.clone(), gate.clone());
        move || {
            let every = Duration::from_millis(100);
            vigil_pipelines::jobs::sync::follow::follow(&job, &stop, every, &metrics, |_| {
                let _ = rounds_tx.send(());
                while gate.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        }
    });
    // Holds the follower between two rounds while `write` runs.
    let between_rounds = |write: &mut dyn FnMut()| {
        gate.store(true, Ordering::SeqCst);
        while rounds.try_recv().is_ok() {}
        rounds.recv_timeout(Duration::from_secs(60)).unwrap();
        write();
        gate.store(false, Ordering::SeqCst);
    };

    // Wave one: an edit on each side, the same row on both (the local edit is later), a delete
    // on the local side, a new row on the remote.
    between_rounds(&mut || {
        local
            .execute_batch(
                "UPDATE orders SET qty = 100, updated_at = 2000, origin = 'local' WHERE id = 1;
                 UPDATE orders SET qty = 300, updated_at = 3000, origin = 'local' WHERE id = 3;
                 DELETE FROM orders WHERE id = 4;",
            )
            .unwrap();
        remote
            .execute_batch(
                "UPDATE orders SET qty = 200, updated_at = 2000, origin = 'remote' WHERE id = 2;
                 UPDATE orders SET qty = 301, updated_at = 2500, origin = 'remote' WHERE id = 3;
                 INSERT INTO orders VALUES (21, 21, 2000, 'remote');",
            )
            .unwrap();
    });
    let now = converge(&mut local, &mut remote, |r| {
        qty(r, 1) == Some(100)
            && qty(r, 2) == Some(200)
            && qty(r, 21) == Some(21)
            && !r.contains_key(&4)
    });
    assert_eq!(qty(&now, 3), Some(300), "the later write wins");

    // Wave two: a delete on the remote, an edit on the local side.
    between_rounds(&mut || {
        remote
            .execute_batch("DELETE FROM orders WHERE id = 5")
            .unwrap();
        local
            .execute_batch(
                "UPDATE orders SET qty = 600, updated_at = 4000, origin = 'local' WHERE id = 6",
            )
            .unwrap();
    });
    let now = converge(&mut local, &mut remote, |r| {
        !r.contains_key(&5) && qty(r, 6) == Some(600)
    });
    assert_eq!(now.len(), 19, "20 − 2 deleted + 1 new");

    // Quiet: nothing echoes back and forth.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!((rows(&mut local), rows(&mut remote)), (now.clone(), now));
    stop.store(true, Ordering::SeqCst);
    let total = following.join().unwrap().unwrap();
    assert_eq!(total.planned, 0, "the diff is empty at the end: {total}");
    assert_eq!(
        (
            total.pushed,
            total.pulled,
            total.deleted_remote,
            total.deleted_local
        ),
        (3, 2, 1, 1),
        "{total}"
    );
    assert_eq!(total.conflicts, 1, "row 3 changed on both sides: {total}");
    let logged = local
        .query_text("SELECT row_key FROM sync_state", &[])
        .unwrap();
    assert_eq!(logged, [[Some("[3]".to_owned())]]);

    // The same figures, as Prometheus reads them.
    let exposed = get(served, "/metrics");
    for line in [
        "vigil_sync_actions_total{kind=\"push\"} 3",
        "vigil_sync_actions_total{kind=\"pull\"} 2",
        "vigil_sync_actions_total{kind=\"delete_local\"} 1",
        "vigil_sync_conflicts_total 1",
        "vigil_sync_pending_actions 0",
        "vigil_sync_rows{side=\"local\"} 19",
    ] {
        assert!(exposed.contains(line), "{line} in\n{exposed}");
    }
    let missing = vigil_tests::dashboard::missing_from(&exposed, |n| n.starts_with("vigil_sync_"));
    assert!(missing.is_empty(), "the dashboard names {missing:?}");
    assert!(get(served, "/health").contains("\"status\":\"ok\""));
    assert!(get(served, "/ready").contains("\"ready\":true"));
}

/// The body of an HTTP GET.
fn get(address: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
}

#[test]
fn polling_a_table_whose_updated_at_may_be_null_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let urls: Vec<ReplicaUrl> = ["a.db", "b.db"]
        .iter()
        .map(|f| ReplicaUrl::Sqlite(tmp.path().join(f)))
        .collect();
    for url in &urls {
        Replica::connect(url, &runtime)
            .unwrap()
            .execute_batch(
                "CREATE TABLE orders (id INTEGER PRIMARY KEY, updated_at INTEGER, origin TEXT)",
            )
            .unwrap();
    }
    let job = SyncJob {
        capture: Capture::Poll,
        archive: None,
        ..SyncJob::new(urls[0].clone(), urls[1].clone(), vec!["orders".into()])
    };
    let stop = AtomicBool::new(false);
    let error = vigil_pipelines::jobs::sync::follow::follow(
        &job,
        &stop,
        Duration::from_millis(10),
        &Metrics::default(),
        |_| {},
    )
    .unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("NOT NULL") && message.contains("--capture scan"),
        "{message}"
    );
}
