//! `vigil-archaeology`: find what keeps recurring in a dataset or the generator's events.

use std::process::ExitCode;

use clap::Parser;
use vigil_pipelines::cli::{ArchaeologyArgs, init_logging, on_stop_signal};
use vigil_pipelines::jobs::archaeology::run;
use vigil_pipelines::runtime::dir_lock::exit_code;
use vigil_pipelines::runtime::shutdown::Shutdown;

fn main() -> ExitCode {
    init_logging();
    let mut args = ArchaeologyArgs::parse();
    let summary_json = args.summary_json.take();
    let job = match args.into_job() {
        Ok(job) => job,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let top = job.params.top;
    let shutdown = Shutdown::default();
    let on_signal = shutdown.clone();
    // A second Ctrl-C kills the process the usual way.
    let _ = on_stop_signal(move || on_signal.trigger());
    let summary = match run(job, shutdown) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit_code(&e));
        }
    };
    if let Some(path) = &summary_json
        && let Err(e) = std::fs::write(path, summary.to_json().to_string())
    {
        eprintln!("error: writing the summary to {}: {e}", path.display());
        return ExitCode::from(1);
    }
    if let Some(findings) = &summary.findings {
        print!("{}", findings.report(top));
    }
    eprintln!("{summary}");
    if summary.events_in == 0 && summary.errors > 0 {
        eprintln!(
            "error: nothing could be read from the input: every record was a dead letter (see the errors table in the archive)"
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
