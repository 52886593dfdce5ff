//! Server mode: `vigil-sql --serve` answers `psql` and a PostgreSQL driver, refuses writes,
//! asks for the password when one is set, and will not listen beyond loopback without one.
//! And what a hostile client tries: files outside the archive, writes hidden in cursors,
//! `SET` of the server's options, more connections than allowed, the clear text of payloads,
//! and the network without TLS.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{KEY, archive, sealed_archive};
use tempfile::TempDir;
use tokio_postgres::error::SqlState;
use vigil_operators::crypto::PayloadKey;

/// A running `vigil-sql --serve`, stopped when dropped.
struct Server {
    child: Child,
    port: u16,
    /// The line the server printed once it listened.
    banner: String,
}

impl Server {
    fn start(archive: &TempDir, extra: &[&str], password: Option<&str>) -> Server {
        let env: Vec<(&str, &str)> = password
            .map(|p| ("VIGIL_SQL_PASSWORD", p))
            .into_iter()
            .collect();
        Self::start_with(archive, extra, &env)
    }

    fn start_with(archive: &TempDir, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vigil-sql"));
        command
            .arg("--archive")
            .arg(archive.path())
            .args(["--serve", "127.0.0.1:0"])
            .args(extra)
            .env_remove("VIGIL_SQL_PASSWORD")
            .env_remove("VIGIL_KEY")
            .envs(env.iter().copied())
            // A write that got through would land here, where the test looks for it.
            .current_dir(archive.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        // The server names its address on stderr once it listens.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (port, banner) = loop {
            let line = lines
                .next()
                .expect("vigil-sql --serve ended before it listened")
                .unwrap();
            if let Some(rest) = line.split("postgresql://127.0.0.1:").nth(1) {
                break (rest.split('/').next().unwrap().parse().unwrap(), line);
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            port,
            banner,
        }
    }

    fn psql(&self, sql: &str, password: Option<&str>) -> Output {
        self.psql_as(sql, password, "")
    }

    /// psql with more connection parameters (`sslmode=require`, say), errors with their
    /// SQLSTATE (`ERROR:  42501: …`).
    fn psql_as(&self, sql: &str, password: Option<&str>, conninfo: &str) -> Output {
        let mut command = Command::new("psql");
        command
            .arg(format!(
                "host=127.0.0.1 port={} user=analyst dbname=archive {conninfo}",
                self.port
            ))
            .args(["-X", "-A", "-t", "-w"])
            .args([
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                "VERBOSITY=verbose",
                "-c",
                sql,
            ])
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env_remove("PGSSLMODE");
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
        assert!(stderr.contains("25006"), "{write}: {stderr}");
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

/// A DataFusion option as the context every client shares holds it.
async fn shared_setting(client: &tokio_postgres::Client, name: &str) -> Option<String> {
    client
        .query_one(
            "SELECT value FROM information_schema.df_settings WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
}

/// The SQLSTATE of a driver's error, for assertions.
fn code(error: &tokio_postgres::Error) -> Option<&SqlState> {
    error.code()
}

#[test]
fn files_outside_the_archive_cannot_be_read() {
    let archive = archive();
    // A secret next to the archive, readable by the server's account.
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.csv");
    std::fs::write(&secret, "name,value\nTOPSECRET-7731,1\n").unwrap();
    let json = outside.path().join("secret.json");
    std::fs::write(&json, "{\"name\":\"TOPSECRET-7731\"}\n").unwrap();
    // A readings file the archive does not hold, in the archive's own format.
    let parquet = outside.path().join("readings.parquet");
    std::fs::copy(
        archive
            .path()
            .join("readings/date=2026-01-01/hour=00/part-0.parquet"),
        &parquet,
    )
    .unwrap();
    let dir = outside.path().display().to_string();
    let secret = secret.display().to_string();
    let server = Server::start(&archive, &[], None);

    let attempts = [
        format!("SELECT * FROM '{secret}'"),
        format!("SELECT * FROM \"{secret}\""),
        format!("SELECT * FROM 'file://{secret}'"),
        format!("SELECT * FROM '{dir}/*.csv'"),
        format!("SELECT * FROM '{}'", json.display()),
        format!("SELECT * FROM '{}'", parquet.display()),
        format!("SELECT count(*) FROM readings r JOIN '{secret}' s ON true"),
        format!("SELECT * FROM readings WHERE source IN (SELECT name FROM '{secret}')"),
        format!("WITH s AS (SELECT * FROM '{secret}') SELECT * FROM s"),
        format!("EXPLAIN SELECT * FROM '{secret}'"),
        format!("DESCRIBE '{secret}'"),
        "SELECT * FROM 's3://another-bucket/key.parquet'".to_owned(),
    ];
    for sql in &attempts {
        let out = server.psql(sql, None);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{sql} was answered: {stdout}");
        assert!(stderr.contains("42501"), "{sql}: {stderr}");
        assert!(
            stderr.contains("not a table of the archive"),
            "{sql}: {stderr}"
        );
        assert!(!stdout.contains("TOPSECRET") && !stderr.contains("TOPSECRET"));
    }
    // An unknown plain name is an unknown table, not a file.
    let out = server.psql("SELECT * FROM no_such_table", None);
    assert!(text(&out).1.contains("42P01"), "{}", text(&out).1);

    // The extended protocol (a driver's prepared statements) is refused the same way, at parse.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = server.driver().await;
        for sql in &attempts[..6] {
            let refused = client.query(sql.as_str(), &[]).await.unwrap_err();
            assert_eq!(
                code(&refused),
                Some(&SqlState::INSUFFICIENT_PRIVILEGE),
                "{sql}: {refused:?}"
            );
        }
        let refused = client
            .query(
                &format!("SELECT * FROM readings r JOIN '{secret}' s ON r.source = $1"),
                &[&"dev-0"],
            )
            .await
            .unwrap_err();
        assert_eq!(code(&refused), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
        // The archive's own tables, and generators, still answer.
        assert_eq!(readings(&client).await, 12);
        let n: i64 = client
            .query_one("SELECT count(*) FROM range(1, 11)", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 10);
    });
}

#[test]
fn writes_hidden_in_cursors_and_unknown_statements_are_refused() {
    let archive = archive();
    let server = Server::start(&archive, &[], None);
    for sql in [
        "BEGIN; DECLARE c CURSOR FOR SELECT * INTO stolen FROM readings; FETCH ALL FROM c; COMMIT",
        "SELECT * INTO stolen FROM readings",
        "EXPLAIN ANALYZE SELECT * INTO stolen FROM readings",
        "BEGIN; DECLARE c CURSOR FOR SELECT * FROM '/etc/hostname'; COMMIT",
        "PREPARE p AS SELECT 1",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/hostname'",
        "ANALYZE readings",
        "TRUNCATE readings",
        "CREATE VIEW v AS SELECT * FROM readings",
        "USE other",
    ] {
        let out = server.psql(sql, None);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{sql} was accepted: {stdout}");
        // Refused as a write (25006), as out of reach (42501), or as SQL the server does not
        // speak (a syntax error): never run.
        assert!(
            stderr.contains("25006")
                || stderr.contains("42501")
                || stderr.contains("sql parser error"),
            "{sql}: {stderr}"
        );
    }
    // Nothing was created: `stolen` is no table, and the archive holds what it held.
    let out = server.psql("SELECT count(*) FROM stolen", None);
    assert!(!out.status.success());
    assert!(!archive.path().join("stolen").exists());
    assert!(!archive.path().join("v").exists());
    // A cursor over a plain query still works.
    let out = server.psql(
        "BEGIN; DECLARE c CURSOR FOR SELECT source FROM readings ORDER BY value; FETCH 2 FROM c; CLOSE c; COMMIT",
        None,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("dev-0\ndev-1"), "{stdout}");
}

#[test]
fn one_clients_set_changes_neither_another_client_nor_the_server() {
    let archive = archive();
    let server = Server::start(&archive, &["--timeout", "60s"], None);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let a = server.driver().await;
        let b = server.driver().await;
        let zone_before = shared_setting(&b, "datafusion.execution.time_zone").await;
        let batch_before = shared_setting(&b, "datafusion.execution.batch_size").await;

        // The server's options are the operator's: refused, over both protocols.
        for set in [
            "SET datafusion.execution.batch_size = 1",
            "SET datafusion.runtime.memory_limit = '1K'",
            "SET datafusion.catalog.location = '/etc'",
            "SET datafusion.execution.time_zone = 'Asia/Tokyo'",
            "SET work_mem = '1GB'",
            "SET ROLE postgres",
        ] {
            let refused = a.batch_execute(set).await.unwrap_err();
            assert_eq!(
                code(&refused),
                Some(&SqlState::INSUFFICIENT_PRIVILEGE),
                "{set}: {refused:?}"
            );
            let refused = a.execute(set, &[]).await.unwrap_err();
            assert_eq!(
                code(&refused),
                Some(&SqlState::INSUFFICIENT_PRIVILEGE),
                "{set} (extended): {refused:?}"
            );
        }
        // A client's own settings are taken, and stay its own.
        a.batch_execute(
            "SET application_name = 'probe'; SET extra_float_digits = 3; \
             SET client_encoding = 'UTF8'; SET timezone = 'Asia/Tokyo'; SET statement_timeout = 200",
        )
        .await
        .unwrap();
        let refused = a
            .batch_execute("SET client_encoding = 'LATIN1'")
            .await
            .unwrap_err();
        assert_eq!(code(&refused), Some(&SqlState::INVALID_PARAMETER_VALUE));

        let batch_after = shared_setting(&b, "datafusion.execution.batch_size").await;
        assert_eq!(batch_after, batch_before, "the shared batch size changed");
        let zone_after = shared_setting(&b, "datafusion.execution.time_zone").await;
        assert_eq!(zone_after, zone_before, "another client's time zone leaked");

        // A's statement_timeout (200 ms) stops A's runaway query and not B's queries.
        let runaway = "SELECT count(*) FROM range(1, 100000000000) a WHERE a.value % 7 = 3";
        let started = std::time::Instant::now();
        let stopped = a.query(runaway, &[]).await.unwrap_err();
        assert_eq!(code(&stopped), Some(&SqlState::QUERY_CANCELED), "{stopped:?}");
        assert!(started.elapsed() < Duration::from_secs(30));
        let slow_enough = "SELECT count(*) FROM range(1, 30000000) a WHERE a.value % 7 = 3";
        let n: i64 = b.query_one(slow_enough, &[]).await.unwrap().get(0);
        assert!(n > 0);
        assert_eq!(readings(&b).await, 12);
    });
}

#[test]
fn statements_are_bounded_by_default_and_the_bound_can_be_lifted() {
    let archive = archive();
    let server = Server::start(&archive, &[], None);
    assert!(
        server.banner.contains("statements stop after 5m"),
        "{}",
        server.banner
    );
    drop(server);
    let server = Server::start(&archive, &["--timeout", "none"], None);
    assert!(
        server.banner.contains("no statement time limit"),
        "{}",
        server.banner
    );
    assert_eq!(
        text(&server.psql("SELECT count(*) FROM readings", None)).0,
        "12"
    );
}

#[test]
fn connections_over_the_limit_get_a_clean_error() {
    let archive = archive();
    let metrics_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let metrics = format!("127.0.0.1:{metrics_port}");
    let server = Server::start(
        &archive,
        &["--max-connections", "2", "--metrics", &metrics],
        None,
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let first = server.driver().await;
        let second = server.driver().await;
        let url = format!("postgres://analyst@127.0.0.1:{}/archive", server.port);
        let refused = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok(_) => panic!("a third client was let in past --max-connections 2"),
            Err(error) => error,
        };
        assert_eq!(
            code(&refused),
            Some(&SqlState::TOO_MANY_CONNECTIONS),
            "{refused:?}"
        );
        let message = refused.as_db_error().unwrap().message().to_owned();
        assert!(message.contains("--max-connections"), "{message}");
        // The clients in are still served; when one leaves, a new one gets in.
        assert_eq!(readings(&first).await, 12);
        drop(first);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let third = loop {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    break client;
                }
                Err(error) if std::time::Instant::now() < deadline => {
                    assert_eq!(code(&error), Some(&SqlState::TOO_MANY_CONNECTIONS));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("no room after a client left: {error:?}"),
            }
        };
        assert_eq!(readings(&third).await, 12);
        assert_eq!(readings(&second).await, 12);
        // The same, as Prometheus scrapes it: two clients in, the refusals, the statements.
        let exposed = http_get(&metrics, "/metrics");
        assert!(exposed.contains("vigil_sql_connections 2\n"), "{exposed}");
        let refused: u64 = sample(&exposed, "vigil_sql_connections_refused_total");
        assert!(refused >= 1, "{exposed}");
        assert!(
            sample(&exposed, "vigil_sql_queries_total{outcome=\"ok\"}") >= 3,
            "{exposed}"
        );
        assert!(
            exposed.contains("vigil_sql_query_seconds_bucket"),
            "{exposed}"
        );
        assert!(http_get(&metrics, "/ready").contains("true"));
    });
}

/// The body of an HTTP GET of `path` from `addr`.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The value of the sample `name` (with its labels) in an exposition.
fn sample(exposition: &str, name: &str) -> u64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{exposition}"))
}

#[test]
fn the_payload_key_is_given_to_the_server_by_name_only() {
    let key = PayloadKey::from_hex(KEY).unwrap();
    let archive = sealed_archive(&key);
    let sql = "SELECT decrypt(payload, event_id, key_id) FROM telemetry \
               WHERE payload IS NOT NULL ORDER BY event_id";
    // The key in the environment of whoever started the server is not the clients'.
    let server = Server::start_with(&archive, &[], &[("VIGIL_KEY", KEY)]);
    let out = server.psql(sql, None);
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "payloads opened without --key-file: {stdout}"
    );
    assert!(!stdout.contains("alpha"), "{stdout}");
    assert!(stderr.contains("--key-file"), "{stderr}");
    drop(server);

    let file = archive.path().join("key.hex");
    std::fs::write(&file, KEY).unwrap();
    let file = file.display().to_string();
    let server = Server::start(&archive, &["--key-file", &file], None);
    let out = server.psql(sql, None);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("alpha") && stdout.contains("beta"),
        "{stdout}"
    );
}

#[test]
fn passwords_come_from_a_file_or_the_environment_and_are_never_empty() {
    let archive = archive();
    for (env, extra) in [
        (vec![("VIGIL_SQL_PASSWORD", "")], vec![]),
        (vec![("VIGIL_SQL_PASSWORD", "  ")], vec![]),
        (vec![], vec!["--password-file".to_owned()]),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vigil-sql"));
        let empty = archive.path().join("empty-password");
        std::fs::write(&empty, "\n").unwrap();
        command
            .arg("--archive")
            .arg(archive.path())
            .args(["--serve", "127.0.0.1:0"])
            .env_remove("VIGIL_SQL_PASSWORD")
            .envs(env)
            .args(&extra);
        if !extra.is_empty() {
            command.arg(&empty);
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("empty password"), "{stderr}");
    }
    // `--password` on the command line (seen by every user of the machine) is not an option.
    let out = Command::new(env!("CARGO_BIN_EXE_vigil-sql"))
        .arg("--archive")
        .arg(archive.path())
        .args(["--serve", "127.0.0.1:0", "--password", "visible"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let file = archive.path().join("password");
    std::fs::write(&file, "from a file\n").unwrap();
    let file = file.display().to_string();
    let server = Server::start(&archive, &["--password-file", &file], None);
    assert!(
        server.banner.contains("password required"),
        "{}",
        server.banner
    );
    assert!(!server.psql("SELECT 1", Some("wrong")).status.success());
    let out = server.psql("SELECT count(*) FROM alerts", Some("from a file"));
    assert_eq!(text(&out).0, "2", "{}", text(&out).1);
}

#[test]
fn with_a_certificate_clients_must_use_tls() {
    let archive = archive();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| panic!("openssl makes the test certificate ({e}): install openssl"));
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let server = Server::start(
        &archive,
        &["--tls-cert", &cert, "--tls-key", &key],
        Some("tls pass"),
    );
    assert!(server.banner.contains("TLS required"), "{}", server.banner);

    let out = server.psql_as(
        "SELECT count(*) FROM readings",
        Some("tls pass"),
        &format!("sslmode=verify-ca sslrootcert={cert}"),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "12");

    let out = server.psql_as("SELECT 1", Some("tls pass"), "sslmode=disable");
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "a client without TLS was served");
    assert!(stderr.contains("requires TLS"), "{stderr}");

    // A key that is not a key is a clear start-up error, not a server without TLS.
    let out = Command::new(env!("CARGO_BIN_EXE_vigil-sql"))
        .arg("--archive")
        .arg(archive.path())
        .args([
            "--serve",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &cert,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
