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

    /// Runs statements, returning the server's error instead of failing.
    pub fn try_execute(&self, sql: &str) -> Result<(), String> {
        self.runtime
            .block_on(self.client.batch_execute(sql))
            .map_err(|e| match e.as_db_error() {
                Some(db) => db.message().to_owned(),
                None => e.to_string(),
            })
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

/// A throwaway PostgreSQL server of the test's own, for what the shared one does not allow:
/// logical decoding (`wal_level = logical`, which needs a restart), or stopping the server
/// mid-test. Built with `initdb` in a temporary directory, on a free port on loopback, run as
/// the `postgres` user when the test runs as root; stopped and removed at the end.
pub struct PgCluster {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

/// The directory of the newest PostgreSQL server binaries on the machine.
fn server_bin() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("VIGIL_PG_BIN") {
        return dir.into();
    }
    let mut versions: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.retain(|bin| bin.join("initdb").exists());
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries (initdb) under /usr/lib/postgresql: install the \
             postgresql package (scripts/setup.sh --tests does), or set VIGIL_PG_BIN"
        )
    })
}

impl PgCluster {
    /// Starts a server with logical decoding on.
    pub fn start_logical() -> PgCluster {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("vigil-pg-")
            .tempdir()
            .expect("a temporary directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let cluster = PgCluster {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
            bin,
            port,
        };
        if is_root() {
            let status = std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(cluster.dir.path())
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "the postgres user owns the cluster's directory"
            );
        }
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        cluster.start();
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs a server binary, as `postgres` when root (initdb and postgres refuse root).
    fn run(&self, tool: &str, args: &[&str]) {
        let path = self.bin.join(tool);
        let mut command = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            std::process::Command::new(&path)
        };
        let output = command
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
        assert!(
            output.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start(&self) {
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c wal_level=logical -c max_replication_slots=8 -c max_wal_senders=8 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        // Some builds list the output plugins a slot may use; wal2json must be among them.
        let described = std::process::Command::new(self.bin.join("postgres"))
            .arg("--describe-config")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("output_plugin_libraries"))
            .unwrap_or(false);
        if described {
            options.push_str(" -c output_plugin_libraries=pgoutput,test_decoding,wal2json");
        }
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server.
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Freezes the server (SIGSTOP to it and every process it started): connections stay
    /// open and the kernel still takes what is sent, but nothing is answered, as when a
    /// server hangs or a connection is half-open.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid_file = std::path::Path::new(&self.data()).join("postmaster.pid");
        let postmaster = std::fs::read_to_string(pid_file).expect("the server's postmaster.pid");
        let postmaster = postmaster
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let mut pids = vec![postmaster.clone()];
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // The parent's pid is the second field after the command name, which ends at ')'.
            let parent = stat
                .rfind(')')
                .and_then(|end| stat.get(end + 2..))
                .and_then(|rest| rest.split_whitespace().nth(1));
            if parent == Some(postmaster.as_str()) {
                pids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        for pid in pids {
            let status = std::process::Command::new("kill")
                .args([signal, &pid])
                .stderr(std::process::Stdio::null())
                .status()
                .expect("running kill");
            // A backend may have ended since it was listed; the postmaster may not.
            assert!(status.success() || pid != postmaster, "kill {signal} {pid}");
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let path = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if is_root() {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(args)
                .output()
        } else {
            std::process::Command::new(&path).args(args).output()
        };
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
