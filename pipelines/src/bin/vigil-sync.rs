//! `vigil-sync`: keep a local and a remote SQL replica equal, last writer wins.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use vigil_pipelines::cli::{SyncArgs, init_logging, on_stop_signal};
use vigil_pipelines::jobs::sync::{SyncJob, print_actions, run_once};

fn main() -> ExitCode {
    init_logging();
    let args = SyncArgs::parse();
    let job = match SyncJob::from_args(&args) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    // Held for the life of the job: another job on the same spill stops here with code 2.
    let _locks = match job.lock_directories() {
        Ok(locks) => locks,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(vigil_pipelines::runtime::dir_lock::exit_code(&error));
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    if let Err(error) = on_stop_signal(move || flag.store(true, Ordering::SeqCst)) {
        eprintln!("error: cannot watch for Ctrl-C: {error}");
        return ExitCode::from(2);
    }
    if !args.once && !job.dry_run {
        // Following both replicas: the diff dataflow lives across rounds.
        let metrics = vigil_pipelines::runtime::metrics::Metrics::default();
        // The server's runtime lives as long as the job; its worker thread serves requests.
        let _server = match args.metrics {
            Some(addr) => {
                let served = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .map_err(anyhow::Error::from)
                    .and_then(|runtime| {
                        metrics.serve(addr, runtime.handle())?;
                        Ok(runtime)
                    });
                match served {
                    Ok(runtime) => Some(runtime),
                    Err(error) => {
                        eprintln!("error: {error:#}");
                        return ExitCode::from(2);
                    }
                }
            }
            None => None,
        };
        let rounds =
            vigil_pipelines::jobs::sync::follow::follow(&job, &stop, args.interval, &metrics, |summary| {
                if summary.planned > 0 || summary.pulled + summary.pushed > 0 {
                    eprintln!("vigil-sync: {summary}");
                }
                if let Some(path) = &args.summary_json {
                    let _ = std::fs::write(path, summary.to_json().to_string());
                }
            });
        return match rounds {
            Ok(total) => {
                eprintln!("vigil-sync: stopped; in all {total}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run_once(&job) {
        Ok((summary, actions)) => {
            if job.dry_run {
                print_actions(&actions);
            }
            eprintln!(
                "vigil-sync: {} ↔ {}{}: {summary}",
                job.local.redacted(),
                job.remote.redacted(),
                if job.dry_run {
                    " (dry run: nothing changed)"
                } else {
                    ""
                }
            );
            if let Some(path) = &args.summary_json
                && let Err(error) = std::fs::write(path, summary.to_json().to_string())
            {
                eprintln!("error: writing {}: {error}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
