//! `vigil-sql`: SQL over vigil's Parquet archive: one query, a file of statements, or a shell.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rustyline::error::ReadlineError;
use tracing_subscriber::EnvFilter;
use vigil_sql::{Args, Failure, Output, Session, Shell, Step, open, run};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Logs go to stderr so stdout carries only the query result.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();

    // `write_result` flushes, so a failed write to stdout is reported like any other error.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let result = if let Some(listen) = args.serve {
        server(&args, listen).await
    } else if args.sql.is_some() || args.file.is_some() || args.chart.is_some() {
        run(&args, &mut out).await
    } else if std::io::stdin().is_terminal() {
        interactive(&args, &mut out).await
    } else {
        script(&args, &mut out).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = out.flush();
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Server mode: the archive over the PostgreSQL protocol until the process is stopped.
async fn server(args: &Args, listen: std::net::SocketAddr) -> Result<(), Failure> {
    let options = vigil_sql::ServerParams {
        listen,
        password: args.password().map_err(Failure::Usage)?,
        tls: args
            .tls_cert
            .clone()
            .zip(args.tls_key.clone())
            .map(|(cert, key)| vigil_sql::TlsFiles { cert, key }),
        max_connections: args.max_connections as usize,
        metrics: args.metrics,
    };
    let session = open(args).await?;
    let listener = vigil_sql::bind(&options).await.map_err(Failure::Usage)?;
    let address = listener
        .local_addr()
        .map_err(|e| Failure::Usage(anyhow::anyhow!("reading the listening address: {e}")))?;
    // The one line a script or test waits for; psql connects with it.
    let mut terms = vec!["read-only, the archive's tables only".to_owned()];
    if options.password.is_some() {
        terms.push("password required".to_owned());
    }
    if options.tls.is_some() {
        terms.push("TLS required".to_owned());
    }
    terms.push(match args.limits().timeout {
        Some(limit) => format!(
            "statements stop after {}",
            humantime::format_duration(limit)
        ),
        None => "no statement time limit".to_owned(),
    });
    eprintln!(
        "vigil-sql serving {} on postgresql://{address}/ ({}); Ctrl-C stops",
        args.archive,
        terms.join(", ")
    );
    tokio::select! {
        result = vigil_sql::serve(session, listener, &options) => result.map_err(Failure::Usage),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Statements from a pipe: run in order, stopping at the first that fails.
async fn script(args: &Args, out: &mut dyn Write) -> Result<(), Failure> {
    let session = open(args).await?;
    let mut sink = Output::open(args, out)?;
    let mut shell = Shell::new(&session, args.format);
    for line in std::io::stdin().lock().lines() {
        let line =
            line.map_err(|e| Failure::Usage(anyhow::anyhow!("reading standard input: {e}")))?;
        if shell.line(&line, &mut sink).await? == Step::Quit {
            return sink.finish();
        }
    }
    shell.flush(&mut sink).await?;
    sink.finish()
}

/// The interactive shell: line editing, history, errors shown and the shell kept.
async fn interactive(args: &Args, out: &mut dyn Write) -> Result<(), Failure> {
    let session: Session = open(args).await?;
    let mut sink = Output::open(args, out)?;
    let mut editor = rustyline::DefaultEditor::new()
        .map_err(|e| Failure::Usage(anyhow::anyhow!("starting the line editor: {e}")))?;
    let history = history_file();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    eprintln!(
        "vigil-sql over {} ({} tables); statements end with ;  \\? for help, \\q to leave",
        args.archive,
        vigil_sql::table_names(session.context()).len()
    );
    let mut shell = Shell::new(&session, args.format);
    loop {
        let prompt = shell.prompt();
        let line = tokio::task::block_in_place(|| editor.readline(prompt));
        let line = match line {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                shell.discard();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Failure::Usage(anyhow::anyhow!("reading input: {e}"))),
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
        }
        // Ctrl-C while a statement runs stops the statement, not the shell.
        let step = tokio::select! {
            step = shell.line(&line, &mut sink) => step,
            _ = tokio::signal::ctrl_c() => {
                shell.discard();
                eprintln!("cancelled");
                Ok(Step::Next)
            }
        };
        let _ = sink.writer().flush();
        match step {
            Ok(Step::Quit) => break,
            Ok(Step::Next) => {}
            Err(error) => eprintln!("error: {error}"),
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    sink.finish()
}

/// Where the shell keeps its history: `VIGIL_SQL_HISTORY`, else `~/.vigil_sql_history`.
fn history_file() -> Option<PathBuf> {
    std::env::var_os("VIGIL_SQL_HISTORY")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".vigil_sql_history")))
}
