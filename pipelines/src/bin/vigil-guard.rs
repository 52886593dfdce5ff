//! `vigil-guard`: run the anomaly guards over a dataset or the generator.

use std::process::ExitCode;

use clap::Parser;
use vigil_pipelines::cli::{GuardArgs, init_logging, on_stop_signal};
use vigil_pipelines::runtime::dir_lock::exit_code;
use vigil_pipelines::jobs::guard::run;
use vigil_pipelines::runtime::shutdown::Shutdown;

fn main() -> ExitCode {
    init_logging();
    let mut args = GuardArgs::parse();
    if args.list_guards {
        return match args.list_guards() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let summary_json = args.summary_json.take();
    let job = match args.into_job() {
        Ok(job) => job,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let shutdown = Shutdown::default();
    let on_signal = shutdown.clone();
    // A second Ctrl-C kills the process the usual way.
    let _ = on_stop_signal(move || on_signal.trigger());
    let result = run(job, shutdown);
    if let (Ok(summary), Some(path)) = (&result, &summary_json)
        && let Err(e) = std::fs::write(path, summary.to_json().to_string())
    {
        eprintln!("error: writing the summary to {}: {e}", path.display());
        return ExitCode::from(1);
    }
    match result {
        Ok(summary) if summary.events_in == 0 && summary.errors > 0 => {
            eprintln!("{summary}");
            eprintln!(
                "error: nothing could be read from the input: every record was a dead letter (see the errors table in the archive)"
            );
            ExitCode::from(1)
        }
        Ok(summary) => {
            eprintln!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}
