//! Server mode: `vigil-sql --serve` answers `psql` and a PostgreSQL driver, refuses writes,
//! asks for the password when one is set, and will not listen beyond loopback without one.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::archive;
use tempfile::TempDir;

/// A running `vigil-sql --serve`, stopped when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(archive: &TempDir, extra: &[&str], password: Option<&str>) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vigil-sql"));
        command
            .arg("--archive")
            .arg(archive.path())
            .args(["--serve", "127.0.0.1:0"])
            .args(extra)
            .env_remove("VIGIL_SQL_PASSWORD")
            // A write that got through would land here, where the test looks for it.
            .current_dir(archive.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(password) = password {
            command.env("VIGIL_SQL_PASSWORD", password);
        }
        let mut child = command.spawn().unwrap();
        // The server names its address on stderr once it listens.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("vigil-sql --serve ended before it listened")
                .unwrap();
            if let Some(rest) = line.split("postgresql://127.0.0.1:").nth(1) {
                break rest.split('/').next().unwrap().parse().unwrap();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, port }
    }

    fn psql(&self, sql: &str, password: Option<&str>) -> Output {
        let mut command = Command::new("psql");
        command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "analyst", "-d", "archive", "-X", "-A", "-t", "-w"])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE");
        if let Some(password) = password {
            command.env("PGPASSWORD", password);
        }
        command.output().unwrap_or_else(|e| {
            panic!("psql is needed for the server-mode tests ({e}): install postgresql-client")
        })
    }

    /// A PostgreSQL driver's connection (tokio-postgres), without a password.
    async fn driver(&self) -> tokio_postgres::Client {
        let url = format!("postgres://analyst@127.0.0.1:{}/archive", self.port);
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The archive's reading count, asked through the driver.
async fn readings(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM readings", &[])
        .await
        .unwrap()
        .get(0)
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

#[test]
fn psql_queries_the_archive_and_writes_are_refused() {
    let archive = archive();
    let server = Server::start(&archive, &[], None);

    let out = server.psql(
        "SELECT source, count(*), sum(value) FROM readings WHERE hour = 1 GROUP BY source ORDER BY source",
        None,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "psql failed: {stderr}");
    // Hour 1 holds values 6..=11 from dev-0, dev-1, dev-2 in turn.
    assert_eq!(stdout, "dev-0|2|15.0\ndev-1|2|17.0\ndev-2|2|19.0");

    // psql's own catalogue queries work: \dt lists the archive's tables.
    let out = server.psql("\\dt", None);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "\\dt failed: {stderr}");
    assert!(
        stdout.contains("readings") && stdout.contains("alerts"),
        "{stdout}"
    );

    for write in [
        "CREATE TABLE copied AS SELECT * FROM readings",
        "INSERT INTO readings SELECT * FROM readings",
        "COPY (SELECT * FROM readings) TO 'copied.parquet'",
        "DROP TABLE readings",
    ] {
        let out = server.psql(write, None);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{write} was accepted");
        assert!(stderr.contains("read-only"), "{write}: {stderr}");
    }
    let out = server.psql("SELECT count(*) FROM readings", None);
    assert_eq!(text(&out).0, "12", "the refused writes changed nothing");
    assert!(!archive.path().join("copied").exists());
    assert!(!archive.path().join("copied.parquet").exists());
}

#[test]
fn a_driver_uses_parameters_and_is_refused_writes_too() {
    let archive = archive();
    let server = Server::start(&archive, &[], None);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = server.driver().await;
        // The extended protocol: a prepared statement with a parameter.
        let rows = client
            .query(
                "SELECT source, value FROM readings WHERE value >= $1 ORDER BY value",
                &[&9.5f64],
            )
            .await
            .unwrap();
        let got: Vec<(String, f64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(
            got,
            vec![("dev-1".to_owned(), 10.0), ("dev-2".to_owned(), 11.0)]
        );
        for write in [
            "CREATE TABLE copied AS SELECT * FROM readings",
            "INSERT INTO readings SELECT * FROM readings",
        ] {
            // `execute` goes through the extended protocol: parse, bind, execute.
            let refused = client.execute(write, &[]).await.unwrap_err();
            let message = refused.as_db_error().map(|e| e.message().to_owned());
            assert!(
                message.as_deref().is_some_and(|m| m.contains("read-only")),
                "{write}: {refused:?}"
            );
            assert_eq!(
                refused.code(),
                Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
            );
        }
        assert_eq!(readings(&client).await, 12);
    });
}

#[test]
fn the_password_is_required_when_set() {
    let archive = archive();
    let server = Server::start(&archive, &[], Some("s3cret pass"));
    let out = server.psql("SELECT count(*) FROM alerts", None);
    assert!(!out.status.success(), "no password was let in");
    let out = server.psql("SELECT count(*) FROM alerts", Some("wrong"));
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "a wrong password was let in");
    assert!(stderr.to_lowercase().contains("password"), "{stderr}");
    let out = server.psql("SELECT count(*) FROM alerts", Some("s3cret pass"));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "2");
}

#[test]
fn no_network_listening_without_a_password() {
    let archive = archive();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil-sql"))
        .arg("--archive")
        .arg(archive.path())
        .args(["--serve", "0.0.0.0:0"])
        .env_remove("VIGIL_SQL_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without a password"), "{stderr}");
}

#[test]
fn the_server_timeout_stops_a_runaway_query() {
    let archive = archive();
    let server = Server::start(&archive, &["--timeout", "300ms"], None);
    let started = std::time::Instant::now();
    // A client cannot lift the server's limit.
    let out = server.psql(
        "SET statement_timeout = 0; SELECT count(*) FROM range(1, 100000000000) a WHERE a.value % 7 = 3",
        None,
    );
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "the runaway query finished");
    assert!(stderr.contains("timeout"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60));
    // The server is still there for the next query.
    let out = server.psql("SELECT count(*) FROM readings", None);
    assert_eq!(text(&out).0, "12");

    // A prepared statement (the extended protocol) is bounded the same way.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = server.driver().await;
        let started = std::time::Instant::now();
        let stopped = client
            .query(
                "SELECT count(*) FROM range(1, 100000000000) a WHERE a.value % 7 = $1",
                &[&3i64],
            )
            .await
            .unwrap_err();
        assert_eq!(
            stopped.code(),
            Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
            "{stopped:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
        assert_eq!(readings(&client).await, 12);
    });
}
