//! The `vigil-sql` command line: its arguments and what a run does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use vigil_operators::crypto::{KEY_ENV, PayloadKey};

use crate::archive::Reach;
use crate::chart::{ChartFile, ChartSpec};
pub use crate::failure::Failure;
use crate::session::{Limits, QueryError, Session, default_memory_limit, parse_memory};
use crate::{OutputFormat, write_result};

/// Arguments of `vigil-sql`: which archive to open, what to run, how to print it.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vigil-sql",
    version,
    about = "Ad-hoc SQL over vigil's Parquet archive: one query, a file of statements, or an interactive shell.",
    after_help = "Without SQL and -f, vigil-sql reads statements from standard input: an interactive \
                  shell in a terminal (\\? lists its commands), a script otherwise.\n\n\
                  Exit codes: 0 done, 1 a statement failed, 2 bad usage (arguments, archive, output \
                  file), 3 a statement would write (the archive is read-only), 4 a query went over \
                  --memory-limit or --timeout."
)]
pub struct Args {
    /// The archive: a local directory, a file:// URL or an s3://bucket/prefix URL (credentials
    /// from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT).
    #[arg(long, env = "VIGIL_ARCHIVE", default_value = "./vigil-data")]
    pub archive: String,
    /// How to print results.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Write results to this file instead of standard output (required for Parquet).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Run the statements of this file, separated by `;`, stopping at the first that fails.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "sql"
    )]
    pub file: Option<PathBuf>,
    /// Memory for query execution: e.g. 512M, 4G, 25% (of RAM), or `none`. Sorts, joins and
    /// aggregations spill to disk before a query fails. Default: half of the machine's memory.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory_limit)]
    pub memory_limit: Option<MemoryLimit>,
    /// Stop a statement that runs longer than this (e.g. 30s, 5m), or `none`. Default: no
    /// limit on the command line; 5 minutes in server mode.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Timeout>,
    /// The payload key (64 hex characters) that `decrypt(payload, event_id, key_id)` opens
    /// payloads with; else VIGIL_KEY (not in server mode, which opens payloads only with a
    /// key file given here); without either, payloads stay opaque bytes.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Serve the archive over the PostgreSQL wire protocol instead of running statements, so
    /// psql and PostgreSQL drivers can query it (read-only, the archive's tables only).
    /// Default address: 127.0.0.1:5433; port 0 picks a free port.
    #[arg(
        long,
        value_name = "HOST:PORT",
        num_args = 0..=1,
        default_missing_value = crate::server::DEFAULT_LISTEN,
        conflicts_with_all = ["sql", "file", "output"]
    )]
    pub serve: Option<std::net::SocketAddr>,
    /// A file holding the password server-mode clients must give (SCRAM-SHA-256), for any
    /// user name; else VIGIL_SQL_PASSWORD. Required to listen on anything but loopback.
    #[arg(long, value_name = "FILE", requires = "serve")]
    pub password_file: Option<PathBuf>,
    /// The server's TLS certificate chain (PEM). With it, clients must connect over TLS
    /// (`sslmode=require` or `verify-full`).
    #[arg(long, value_name = "FILE", requires_all = ["serve", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires_all = ["serve", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
    /// The most clients the server serves at once; one more is told `too many clients` and
    /// disconnected.
    #[arg(long, value_name = "N", default_value_t = crate::server::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// With --serve: serve Prometheus metrics at `/metrics` (`vigil_sql_*`: connections,
    /// statements by outcome, their time), with `/health` and `/ready`, on this address.
    #[arg(long, value_name = "ADDR", requires = "serve")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Draw the query's result as a line chart in FILE.svg, or in FILE.html (the same SVG
    /// inline, nothing loaded from elsewhere), instead of printing it. The query returns (ts,
    /// value) or (ts, value, series): ts a timestamp (drawn in UTC) or Int64 epoch
    /// milliseconds, value a number, series a name, one line each, at most 10. A series of more
    /// than 4000 readings is drawn with the lowest and the highest reading of each of 2000 equal
    /// slices of the time axis, so its peaks stay and the file stays small. A query without
    /// rows draws a chart that says "no rows". The file is replaced whole, only on success.
    #[arg(long, value_name = "FILE", value_parser = parse_chart_file,
          conflicts_with_all = ["output", "serve"])]
    pub chart: Option<ChartFile>,
    /// With --chart: a query of alert intervals (start, end[, series]) to shade under the
    /// lines, in the series' colour when it names one of the chart's; end NULL (still open)
    /// shades to the right edge. A band is at least 3 pixels wide, so a short alert shows.
    #[arg(long, value_name = "SQL", requires = "chart")]
    pub chart_alerts: Option<String>,
    /// With --chart: the chart's title. Default: the query, shortened.
    #[arg(long, value_name = "TEXT", requires = "chart")]
    pub chart_title: Option<String>,
    /// The SQL to run: one statement or several separated by `;`, e.g.
    /// "SELECT count(*) FROM telemetry WHERE date = '2026-01-01'".
    #[arg(value_name = "SQL")]
    pub sql: Option<String>,
}

fn parse_chart_file(text: &str) -> Result<ChartFile, String> {
    ChartFile::new(text)
}

/// A `--timeout`: a duration, or none at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Option<Duration>);

fn parse_timeout(text: &str) -> Result<Timeout, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "none" | "unlimited" => Ok(Timeout(None)),
        _ => match humantime::parse_duration(text.trim()) {
            Ok(limit) if !limit.is_zero() => Ok(Timeout(Some(limit))),
            Ok(_) => Err(
                "a timeout of zero would stop every statement: give e.g. 30s, 5m, or none".into(),
            ),
            Err(error) => Err(format!("{error}: give e.g. 30s, 5m, or none")),
        },
    }
}

/// The environment variable the server's password may come from.
pub const PASSWORD_ENV: &str = "VIGIL_SQL_PASSWORD";

/// A `--memory-limit`: a number of bytes, or none at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit(pub Option<usize>);

fn parse_memory_limit(text: &str) -> Result<MemoryLimit, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "none" | "unlimited" => Ok(MemoryLimit(None)),
        _ => parse_memory(text).map(|bytes| MemoryLimit(Some(bytes))),
    }
}

impl Args {
    /// The limits the arguments ask for: the server's statements stop after 5 minutes
    /// unless told otherwise, the command line's run as long as they take.
    pub fn limits(&self) -> Limits {
        let default_timeout = self
            .serve
            .is_some()
            .then_some(crate::server::DEFAULT_TIMEOUT);
        Limits {
            memory: self
                .memory_limit
                .map_or(Some(default_memory_limit()), |m| m.0),
            timeout: self.timeout.map_or(default_timeout, |t| t.0),
        }
    }

    /// The server's password: from `--password-file`, else from `VIGIL_SQL_PASSWORD`, else
    /// none. One trailing line break of the file is not part of it.
    ///
    /// # Errors
    /// When the file cannot be read, or the password is empty: an empty password would
    /// look like protection and be none.
    pub fn password(&self) -> anyhow::Result<Option<String>> {
        let (password, from) = match &self.password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!(
                        "reading the password file {}: {e}: check the path given to --password-file",
                        path.display()
                    )
                })?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                (
                    text.to_owned(),
                    format!("the password file {}", path.display()),
                )
            }
            None => match std::env::var(PASSWORD_ENV) {
                Ok(text) => (text, PASSWORD_ENV.to_owned()),
                Err(std::env::VarError::NotPresent) => return Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => {
                    anyhow::bail!("{PASSWORD_ENV} is not valid UTF-8: set a UTF-8 password")
                }
            },
        };
        anyhow::ensure!(
            !password.trim().is_empty(),
            "{from} holds an empty password, which would let anyone in: set a password, or unset it to serve loopback without one"
        );
        Ok(Some(password))
    }
}

/// Opens the archive, runs the statements given on the command line or in `-f FILE`, and
/// writes each result to `out` (or to `--output`); with `--chart`, draws the last one's result
/// and writes to `out` the line saying so.
///
/// # Errors
/// See [`Failure`]; the first failing statement stops the rest.
pub async fn run(args: &Args, out: &mut dyn Write) -> Result<(), Failure> {
    let sql = match (&args.sql, &args.file) {
        (Some(sql), _) => sql.clone(),
        (None, Some(file)) => std::fs::read_to_string(file).map_err(|e| {
            Failure::Usage(anyhow::anyhow!(
                "reading SQL file {}: {e}: check the path passed to -f",
                file.display()
            ))
        })?,
        (None, None) if args.chart.is_some() => {
            return Err(Failure::Usage(anyhow::anyhow!(
                "--chart draws a query's result: pass the query, or -f FILE"
            )));
        }
        (None, None) => {
            return Err(Failure::Usage(anyhow::anyhow!(
                "no SQL given: pass a query, -f FILE, or statements on standard input"
            )));
        }
    };
    let session = open(args).await?;
    if let Some(file) = &args.chart {
        let spec = ChartSpec {
            sql: &sql,
            alerts: args.chart_alerts.as_deref(),
            title: args.chart_title.as_deref(),
            file,
        };
        let drawn = crate::chart::draw(&session, &spec).await?;
        return writeln!(out, "{drawn}")
            .and_then(|()| out.flush())
            .map_err(|e| Failure::Usage(anyhow::anyhow!("writing to standard output: {e}")));
    }
    let mut sink = Output::open(args, out)?;
    run_text(&session, &sql, args.format, &mut sink).await?;
    sink.finish()
}

/// Opens the archive with the arguments' limits.
///
/// # Errors
/// [`Failure::Usage`] when the archive cannot be opened.
pub async fn open(args: &Args) -> Result<Session, Failure> {
    // The server opens payloads only with a key given to it by name: a key in the
    // environment of whoever started it is not meant for every client that connects.
    let (key, reach) = match args.serve {
        None => (
            load_key(args.key_file.as_deref(), std::env::var(KEY_ENV).ok()),
            Reach::ArchiveAndFiles,
        ),
        Some(_) => (load_key(args.key_file.as_deref(), None), Reach::ArchiveOnly),
    };
    let key = key.map_err(Failure::Usage)?;
    Session::open_with(&args.archive, args.limits(), key, reach)
        .await
        .map_err(Failure::Usage)
}

/// Runs every statement of `sql` in order, writing each result.
///
/// # Errors
/// The first failing statement's, naming it when there are several.
pub async fn run_text(
    session: &Session,
    sql: &str,
    format: OutputFormat,
    out: &mut Output<'_>,
) -> Result<(), Failure> {
    let statements = Session::statements(sql)?;
    let count = statements.len();
    if format == OutputFormat::Parquet && count > 1 {
        return Err(Failure::Usage(anyhow::anyhow!(
            "Parquet output holds one result, and {count} statements were given: run one query per file"
        )));
    }
    for (i, statement) in statements.into_iter().enumerate() {
        let text = statement.to_string();
        let answer = session.execute(statement).await.map_err(|error| {
            if count > 1 {
                name_statement(error, i + 1, &text)
            } else {
                error
            }
        })?;
        if answer.schema.fields().is_empty() && answer.rows() == 0 {
            continue; // SET and the like: nothing to show.
        }
        write_result(&answer.schema, &answer.batches, format, out.writer())
            .map_err(Failure::Usage)?;
    }
    Ok(())
}

/// Says which statement of several failed.
fn name_statement(error: QueryError, number: usize, text: &str) -> QueryError {
    let short: String = text.chars().take(60).collect();
    let ellipsis = if text.chars().count() > 60 { "…" } else { "" };
    let place = format!("statement {number} ({short}{ellipsis})");
    match error {
        QueryError::Failed(message) => QueryError::Failed(format!("{place}: {message}")),
        QueryError::Refused(what) => QueryError::Refused(format!("{what} in {place}")),
        other => other,
    }
}

/// Where results go: standard output, or the `--output` file.
pub struct Output<'a> {
    out: &'a mut dyn Write,
    file: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
}

impl<'a> Output<'a> {
    /// The `--output` file if given (created now, so a bad path fails before the query runs),
    /// else `out`.
    ///
    /// # Errors
    /// When the file cannot be created, or Parquet would go to standard output.
    pub fn open(args: &Args, out: &'a mut dyn Write) -> Result<Self, Failure> {
        let file = match &args.output {
            Some(path) => {
                let file = std::fs::File::create(path).map_err(|e| {
                    Failure::Usage(anyhow::anyhow!(
                        "creating output file {}: {e}: check that its directory exists and is writable",
                        path.display()
                    ))
                })?;
                Some((path.clone(), std::io::BufWriter::new(file)))
            }
            None if args.format == OutputFormat::Parquet => {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "Parquet output needs a file: add --output FILE.parquet"
                )));
            }
            None => None,
        };
        Ok(Self { out, file })
    }

    /// The writer results go to.
    pub fn writer(&mut self) -> &mut dyn Write {
        match &mut self.file {
            Some((_, file)) => file,
            None => self.out,
        }
    }

    /// Flushes the output file to disk.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn finish(self) -> Result<(), Failure> {
        if let Some((path, file)) = self.file {
            let file = file.into_inner().map_err(|e| {
                Failure::Usage(anyhow::anyhow!("writing {}: {}", path.display(), e.error()))
            })?;
            file.sync_all()
                .map_err(|e| Failure::Usage(anyhow::anyhow!("writing {}: {e}", path.display())))?;
        }
        Ok(())
    }
}

/// The payload key from the key file if one is named, else from `env` (the value of
/// `VIGIL_KEY`, when the mode reads it), else none.
fn load_key(key_file: Option<&Path>, env: Option<String>) -> anyhow::Result<Option<PayloadKey>> {
    let file = key_file.map(|path| (path, std::fs::read_to_string(path)));
    PayloadKey::from_file_or_env(file, env)
}
