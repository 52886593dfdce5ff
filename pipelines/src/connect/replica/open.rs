//! Opening a replica connection, one way for every user (a `Replica` and the replica sink's
//! writers): a PostgreSQL-protocol server with its session bounded, or a SQLite file in WAL
//! mode.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::connect::pg_tls;

/// Connects to the PostgreSQL-protocol server the connection string `text` names, drives the
/// connection on `runtime`, and bounds the session's statements
/// ([`pg_tls::session_setup`]). Errors name the server with its password hidden.
pub fn connect_postgres(
    text: &str,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<tokio_postgres::Client> {
    let name = crate::runtime::secrets::redact(text);
    let (client, connection) = runtime.block_on(pg_tls::connect(text)).with_context(|| {
        format!(
            "connecting to the replica {name}: check that the server runs, the database \
                 exists and the user may log in"
        )
    })?;
    runtime.spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(message = "The replica connection ended.", %error);
        }
    });
    if let Some(sql) = pg_tls::session_setup(text)? {
        runtime
            .block_on(pg_tls::answer(
                pg_tls::ANSWER_TIMEOUT,
                client.batch_execute(&sql),
            ))
            .with_context(|| format!("setting the statement timeout on {name}"))?;
    }
    Ok(client)
}

/// Opens (or creates, with its directory) the SQLite file at `path` in WAL mode, so that
/// readers go on while one connection writes; a writer kept out waits up to `busy` rather than
/// failing at once.
pub fn open_sqlite(path: &Path, busy: Duration) -> anyhow::Result<rusqlite::Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let conn = rusqlite::Connection::open(path)
        .with_context(|| format!("opening the replica sqlite://{}", path.display()))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.busy_timeout(busy)?;
    Ok(conn)
}
