//! Connection security as an operator meets it: passwords never shown (logs, errors, `--help`,
//! `Debug`), TLS to PostgreSQL as `sslmode` says, and `--restore` refusing column types it
//! does not know.
//!
//! The TLS tests use the machine's PostgreSQL (tests/src/postgres.rs), which Debian's package
//! sets up with `ssl = on` and the self-signed certificate below, for the host name
//! `localhost`.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::process::{Command, Output};
use std::sync::Arc;

use vigil_pipelines::connect::replica::{Replica, ReplicaUrl};
use vigil_pipelines::jobs::sync::{SyncJob, run_once};
use vigil_tests::postgres::PgDatabase;

const SECRET: &str = "TOPSECRET";

/// A replica URL with a password, on a port nothing listens on.
const UNREACHABLE: &str = "postgres://vigil:TOPSECRET@127.0.0.1:1/app";

/// The self-signed certificate of Debian's PostgreSQL, issued to `localhost`.
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// Everything a run printed.
fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn guard(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil-guard"));
    command
        .current_dir(dir)
        .env("RUST_LOG", "debug")
        .env_remove("VIGIL_REPLICA")
        .env_remove("VIGIL_ARCHIVE")
        .env_remove("VIGIL_KEY")
        .args(["--input", "gen:devices?devices=2&ticks=30"])
        .args(["--alerts", "none", "--no-progress"]);
    command
}

#[test]
fn an_unreachable_replica_is_named_without_its_password() {
    let tmp = tempfile::tempdir().unwrap();
    // The replica stays away: the job spills its results, and its warnings carry the
    // connection error with the replica's name.
    let output = guard(tmp.path())
        .args(["--replica", UNREACHABLE])
        .output()
        .unwrap();
    let text = printed(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("connecting to the replica postgres://vigil:***@127.0.0.1:1/app"),
        "{text}"
    );
    assert!(!text.contains(SECRET), "{text}");

    // A URL refused before any connection is shown redacted too, parseable or not.
    for url in [
        "mysql://vigil:TOPSECRET@db/app",
        "postgres://vigil:TOPSECRET@[bad",
        "host=db password=TOPSECRET",
    ] {
        let output = guard(tmp.path()).args(["--replica", url]).output().unwrap();
        let text = printed(&output);
        assert!(!output.status.success(), "{url} was accepted: {text}");
        assert!(!text.contains(SECRET), "{text}");
    }
}

#[test]
fn sync_errors_name_replicas_without_passwords() {
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vigil-sync"))
        .current_dir(tmp.path())
        .env("RUST_LOG", "debug")
        .env_remove("VIGIL_REPLICA")
        .args(["--local", UNREACHABLE, "--once", "--table", "orders"])
        .args([
            "--remote",
            "postgres://vigil@127.0.0.1:1/app?password=TOPSECRET",
        ])
        .args(["--replica", "none", "--archive", "none"])
        .output()
        .unwrap();
    let text = printed(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("vigil:***@127.0.0.1:1/app"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
}

#[test]
fn help_hides_the_values_of_secret_variables() {
    let binaries = [
        (env!("CARGO_BIN_EXE_vigil-guard"), "VIGIL_REPLICA"),
        (env!("CARGO_BIN_EXE_vigil-archaeology"), "VIGIL_REPLICA"),
        (env!("CARGO_BIN_EXE_vigil-sync"), "VIGIL_SYNC_LOCAL"),
        (env!("CARGO_BIN_EXE_vigil-sync"), "VIGIL_SYNC_REMOTE"),
        (env!("CARGO_BIN_EXE_vigil-sync"), "VIGIL_REPLICA"),
        (env!("CARGO_BIN_EXE_vigil-couchdb"), "VIGIL_COUCHDB"),
    ];
    for (binary, variable) in binaries {
        let output = Command::new(binary)
            .arg("--help")
            .env(variable, UNREACHABLE)
            .output()
            .unwrap();
        let text = printed(&output);
        assert!(output.status.success(), "{text}");
        assert!(text.contains(&format!("[env: {variable}]")), "{text}");
        assert!(!text.contains(SECRET), "{binary} --help: {text}");
    }
}

#[test]
fn debug_output_of_the_job_configuration_hides_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("job.toml");
    std::fs::write(
        &config,
        format!("[replica]\nurl = \"{UNREACHABLE}\"\nrole = \"observer_writer\"\n"),
    )
    .unwrap();
    let parsed = vigil_pipelines::config::JobConfig::load(&config).unwrap();
    let shown = format!("{parsed:?}");
    assert!(shown.contains("vigil:***@127.0.0.1:1/app"), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");

    let args = <vigil_pipelines::cli::GuardArgs as clap::Parser>::try_parse_from([
        "vigil-guard",
        "--config",
        &config.display().to_string(),
        "--replica",
        "postgres://vigil@db/app?sslmode=require&password=TOPSECRET",
    ])
    .unwrap();
    let shown = format!("{args:?}");
    assert!(shown.contains("password=***"), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
    let job = args.into_job().unwrap();
    let shown = format!("{job:?}");
    assert!(shown.contains("observer_writer"), "{shown}");
    assert!(shown.contains("password=***"), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
}

/// The database's URL with `query` added.
fn with_query(url: &str, query: &str) -> String {
    format!("{url}?{query}")
}

/// Whether the replica's session is encrypted, as the server sees it.
fn encrypted(url: &str) -> anyhow::Result<bool> {
    let runtime = Arc::new(tokio::runtime::Runtime::new()?);
    let mut replica = Replica::connect(&ReplicaUrl::parse(url)?, &runtime)?;
    let rows = replica.query_text(
        "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )?;
    Ok(rows == [[Some("true".to_owned())]])
}

#[test]
fn sslmode_decides_whether_the_session_is_encrypted() {
    let db = PgDatabase::create("tls_modes");
    assert!(encrypted(&with_query(&db.url, "sslmode=require")).unwrap());
    assert!(!encrypted(&with_query(&db.url, "sslmode=disable")).unwrap());
    // No sslmode prefers TLS, as libpq does: this server offers it.
    assert!(encrypted(&db.url).unwrap());
    // verify-ca checks the chain, not the host name: 127.0.0.1 is not `localhost`.
    let verify_ca = with_query(
        &db.url,
        &format!("sslmode=verify-ca&sslrootcert={SNAKEOIL}"),
    );
    assert!(encrypted(&verify_ca).unwrap());
    // The libpq key=value form says the same.
    let name = db.url.rsplit('/').next().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (mode, expected) in [("'require'", "true"), ("disable", "false")] {
        let key_values = format!("host=127.0.0.1 user=postgres dbname={name} sslmode={mode}");
        let ssl: String = runtime
            .block_on(async {
                let (client, connection) =
                    vigil_pipelines::connect::pg_tls::connect(&key_values).await?;
                tokio::spawn(connection);
                let row = client
                    .query_one(
                        "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                        &[],
                    )
                    .await?;
                anyhow::Ok(row.try_get(0)?)
            })
            .unwrap();
        assert_eq!(ssl, expected, "{key_values}");
    }
}

#[test]
fn verify_full_checks_the_host_name() {
    let db = PgDatabase::create("tls_verify");
    let verify = format!("sslmode=verify-full&sslrootcert={SNAKEOIL}");
    // The certificate names `localhost`, which is where the server is.
    let by_name = with_query(&db.url.replacen("127.0.0.1", "localhost", 1), &verify);
    assert!(encrypted(&by_name).unwrap());
    // 127.0.0.1 is not a name the certificate gives: refused, saying why.
    let by_address = with_query(&db.url, &verify);
    let error = format!("{:#}", encrypted(&by_address).unwrap_err());
    assert!(error.contains("sslmode=verify-full"), "{error}");
    assert!(error.contains(SNAKEOIL), "{error}");
    assert!(error.contains("name the host"), "{error}");
    // The replica sink's own connection checks the same way.
    let runtime = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let target = vigil_pipelines::sinks::replica::Target::connect(
        &ReplicaUrl::parse(&by_address).unwrap(),
        None,
        vigil_pipelines::sinks::replica::Bulk::Auto,
        &runtime,
    );
    let Err(error) = target else {
        panic!("the replica sink connected to a host its certificate does not name");
    };
    assert!(format!("{error:#}").contains("verify-full"), "{error:#}");
    // A root file that is not there is an error naming it, not a quiet fall-back.
    let missing = with_query(
        &db.url,
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    );
    let error = format!("{:#}", encrypted(&missing).unwrap_err());
    assert!(error.contains("/nonexistent/ca.pem"), "{error}");
}

#[test]
fn restore_refuses_a_hostile_column_type() {
    let local = PgDatabase::create("restore_hostile");
    local.execute("CREATE TABLE x (id integer); INSERT INTO x VALUES (1)");
    let tmp = tempfile::tempdir().unwrap();
    let remote_url = ReplicaUrl::Sqlite(tmp.path().join("remote.db"));
    let runtime = Arc::new(tokio::runtime::Runtime::new().unwrap());
    // SQLite keeps a declared type as written, quotes taken off: any text can come back.
    Replica::connect(&remote_url, &runtime)
        .unwrap()
        .execute_batch(
            "CREATE TABLE orders (id 'integer); DROP TABLE x; --' PRIMARY KEY, item TEXT, \
             updated_at INTEGER NOT NULL, origin TEXT NOT NULL); \
             INSERT INTO orders VALUES (1, 'a', 1, 'remote')",
        )
        .unwrap();
    for dry_run in [true, false] {
        let job = SyncJob {
            restore: true,
            dry_run,
            ..SyncJob::new(
                ReplicaUrl::parse(&local.url).unwrap(),
                remote_url.clone(),
                vec!["orders".into()],
            )
        };
        let error = format!("{:#}", run_once(&job).unwrap_err());
        assert!(error.contains("column \"id\""), "{error}");
        assert!(error.contains("integer); DROP TABLE x; --"), "{error}");
        assert!(error.contains("create the table"), "{error}");
    }
    assert_eq!(
        local.column("SELECT count(*)::text FROM x"),
        [Some("1".to_owned())]
    );
    assert_eq!(
        local.column("SELECT to_regclass('orders')::text"),
        [None::<String>]
    );
}
