//! The replica sink when its database fails under it: the job killed mid-write, PostgreSQL
//! stopped mid-run or frozen. The replica must end as the archive says: nothing lost,
//! nothing twice.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};

use common::replica::*;
use vigil_pipelines::jobs::guard::run;
use vigil_pipelines::runtime::stop::Stop;
use vigil_pipelines::sinks::replica::ReplicaParams;
use vigil_tests::postgres::{PgCluster, PgDatabase};

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
    let replica = ReplicaParams {
        migrate: true,
        batch_interval: Duration::from_millis(100),
        ..options(&cluster.url)
    };
    let mut job = guard_job(&rocket(16, 6_000), dir.path(), replica, 2);
    job.settings.lateness_ms = 1_000;
    let worker = std::thread::spawn(move || run(job, Stop::default()));
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
    let replica = ReplicaParams {
        migrate: true,
        batch_interval: Duration::from_millis(100),
        write_timeout: Duration::from_secs(2),
        ..options(&url)
    };
    let job = || {
        let mut job = guard_job(&rocket(16, 6_000), dir.path(), replica.clone(), 2);
        job.settings.lateness_ms = 1_000;
        job
    };
    let first = job();
    let worker = std::thread::spawn(move || run(first, Stop::default()));
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
    run(job(), Stop::default()).unwrap();
    assert_guard_tables_match(&url, dir.path());
}
