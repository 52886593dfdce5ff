//! A PostgreSQL database of its own for each test, on the server this machine runs.
//!
//! The server is reached at `VIGIL_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, trust authentication); each fixture creates
//! a database with a fresh name and drops it when the test ends. When the server cannot be
//! reached the test fails with a message that says how to start one — never a silent skip.

use std::sync::atomic::{AtomicU32, Ordering};

/// The server's administrative URL.
pub fn server_url() -> String {
    std::env::var("VIGIL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database created for one test and dropped after it.
pub struct PgDatabase {
    /// The database's URL, for the code under test.
    pub url: String,
    name: String,
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn connect(runtime: &tokio::runtime::Runtime, url: &str) -> tokio_postgres::Client {
    let (client, connection) = runtime
        .block_on(tokio_postgres::connect(url, tokio_postgres::NoTls))
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {url}: {e}. The tests need a server: start the \
                 machine's PostgreSQL (e.g. `pg_ctlcluster 15 main start`), or point \
                 VIGIL_TEST_POSTGRES at one whose user may create databases"
            )
        });
    runtime.spawn(async move {
        let _ = connection.await;
    });
    client
}

impl PgDatabase {
    /// Creates an empty database named after `prefix`.
    pub fn create(prefix: &str) -> PgDatabase {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let server = server_url();
        let admin = connect(&runtime, &server);
        let name = format!(
            "vigil_{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        runtime
            .block_on(admin.batch_execute(&format!("CREATE DATABASE {name}")))
            .unwrap_or_else(|e| panic!("creating the test database {name}: {e}"));
        let url = match server.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("VIGIL_TEST_POSTGRES {server} has no database part"),
        };
        let client = connect(&runtime, &url);
        PgDatabase {
            url,
            name,
            runtime,
            client,
        }
    }

    /// Runs statements.
    pub fn execute(&self, sql: &str) {
        self.runtime
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The first column of every row of a query, as text.
    pub fn column(&self, sql: &str) -> Vec<Option<String>> {
        let rows = self
            .runtime
            .block_on(self.client.query(sql, &[]))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.iter().map(|r| r.get::<_, Option<String>>(0)).collect()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let server = server_url();
        let name = self.name.clone();
        if let Ok((admin, connection)) = self
            .runtime
            .block_on(tokio_postgres::connect(&server, tokio_postgres::NoTls))
        {
            self.runtime.spawn(async move {
                let _ = connection.await;
            });
            let _ = self.runtime.block_on(
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")),
            );
        }
    }
}
