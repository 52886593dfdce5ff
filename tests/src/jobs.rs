//! Builders of the jobs the end-to-end tests run, so that each test says only what it changes.

use std::path::Path;

use vigil_pipelines::jobs::guard::registry::GuardParams;
use vigil_pipelines::jobs::guard::{AlertsOut, GuardJob, InputParams};

/// A guard job over `input` that keeps what it writes beside `archive`: the archive itself,
/// the spill (`ARCHIVE.spill`) and the state (`ARCHIVE.state`). Alerts go nowhere (they are
/// still archived); `guards` are `--guard` values, none meaning the default z-score guard.
///
/// # Panics
/// If a guard value does not parse: a mistake in the test.
pub fn guard_job(input: InputParams, archive: &Path, guards: &[&str], workers: usize) -> GuardJob {
    let guards: Vec<String> = guards.iter().map(|g| (*g).to_owned()).collect();
    let mut job = GuardJob::over(input, archive.display().to_string());
    job.alerts = AlertsOut::Off;
    job.guards = GuardParams::parse_all(&guards)
        .unwrap_or_else(|e| panic!("the test's guards {guards:?}: {e:#}"));
    job.settings.workers = workers;
    job.settings.spill_dir = archive.with_extension("spill");
    job.state_dir = archive.with_extension("state");
    job
}
