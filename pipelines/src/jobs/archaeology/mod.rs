//! The archaeology job: sequential patterns, motifs, entanglements, sessions and the field
//! over the same inputs as the guard job, archived as the `patterns`, `sessions` and
//! `entanglements` tables.

pub mod dataflow;
pub mod params;

pub use crate::jobs::engine::findings::Findings;
pub use params::{ArchaeologyParams, CARRIED_PER_WORKER, SessionKey, SessionParams};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vigil_operators::SnapshotStore;

use crate::jobs::engine::settings::Settings;
use crate::jobs::engine::source::Source;
use crate::jobs::engine::summary::Summary;
use crate::jobs::engine::{self, HOUR_MS, Program, Streams, WorkerOutputs};
use crate::runtime::dir_lock::DirLock;
use crate::runtime::snapshot::StateDir;
use crate::runtime::stop::Stop;
use crate::sinks::kafka::KafkaAlerts;
use crate::sinks::live::{LiveHub, TapReadings};
use crate::sinks::replica::Output;

/// Everything the archaeology job needs to run.
#[derive(Clone, Debug, Default)]
pub struct ArchaeologyJob {
    /// Input, archive, workers, limits and outputs, as for every dataflow job.
    pub settings: Settings,
    /// What it looks for, and how.
    pub params: ArchaeologyParams,
}

impl ArchaeologyJob {
    /// Locks the local directories the job writes for as long as the locks are held: the
    /// archive, the state directory its patterns are carried in, and the spill when results
    /// go to a replica.
    pub fn lock_directories(&self) -> anyhow::Result<Vec<DirLock>> {
        let mut dirs = Vec::new();
        if let Some(dir) = crate::sinks::archive::local_dir(&self.settings.archive) {
            dirs.push((dir, "archive directory", "--archive"));
        }
        if let Some(dir) = &self.params.carry {
            dirs.push((dir.clone(), "state directory", "--state"));
        }
        if self.settings.replica.is_some() {
            dirs.push((
                self.settings.spill_dir.clone(),
                "spill directory",
                "--spill",
            ));
        }
        crate::runtime::dir_lock::lock_all(&dirs)
    }
}

/// Runs the archaeology job to the end of its input (or until `stop`); the summary holds
/// what it found.
pub fn run(job: ArchaeologyJob, stop: Stop) -> anyhow::Result<Summary> {
    let workers = job.settings.workers.max(1);
    engine::run(job.settings.clone(), stop, |source| {
        // Held until the run has finished with its directories, whichever way it returns.
        let locks = job.lock_directories()?;
        let state = match (source, &job.params.carry) {
            (Source::Plan(_), Some(dir)) => Some(carried_state(&job.params, dir, workers)?),
            _ => None,
        };
        let live = job.settings.serve_addr.map(|_| {
            LiveHub::new(
                "archaeology",
                source.description(),
                serde_json::json!([]),
                None,
            )
        });
        let program = ArchaeologyProgram {
            params: job.params.clone(),
            state,
            findings: Arc::default(),
            live,
        };
        Ok((program, locks))
    })
}

/// The state an archaeology job with a state directory carries from the run before and on to
/// the next: a backfill in parts finds what one run would.
fn carried_state(
    params: &ArchaeologyParams,
    dir: &std::path::Path,
    workers: usize,
) -> anyhow::Result<Arc<StateDir>> {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(format!("{:?}", params.sequences).as_bytes());
    let name = format!("archaeology-{:016x}", hasher.digest());
    // The first run of a backfill in parts has nothing to carry on from.
    let carried_before = dir.join(&name).exists();
    Ok(Arc::new(StateDir::open(
        dir,
        &name,
        CARRIED_PER_WORKER * workers,
        HOUR_MS as u64,
        Duration::ZERO,
        carried_before,
    )?))
}

/// The archaeology operators of one run, and what their workers gather at the end.
struct ArchaeologyProgram {
    params: ArchaeologyParams,
    state: Option<Arc<StateDir>>,
    findings: Arc<Mutex<Findings>>,
    /// The live page's view, with `--serve`.
    live: Option<Arc<LiveHub>>,
}

impl Program for ArchaeologyProgram {
    const NAME: &'static str = "archaeology";
    const OUTPUTS: &'static [Output] = &[Output::Patterns, Output::Sessions, Output::Entanglements];

    fn archives_readings(&self) -> bool {
        false
    }

    fn session_key(&self) -> Option<SessionKey> {
        Some(self.params.sessions.by.clone())
    }

    // The parameters go into the run id instead.
    fn config_text(&self) -> String {
        String::new()
    }

    // Runs with other parameters find other patterns: they write files of their own.
    fn run_id(&self, fingerprint: String) -> String {
        let digest =
            xxhash_rust::xxh3::xxh3_64(format!("{fingerprint}{:?}", self.params).as_bytes());
        format!("{:08x}", digest as u32)
    }

    fn state(&self) -> Option<&Arc<StateDir>> {
        self.state.as_ref()
    }

    fn deliveries(&self) -> Option<Arc<KafkaAlerts>> {
        None
    }

    fn build(&self, streams: Streams<'_>, outputs: WorkerOutputs<'_>) {
        if let Some(hub) = &self.live {
            streams.points.clone().tap_live(hub.clone());
        }
        dataflow::build(
            streams.points,
            streams.sessions,
            &self.params,
            outputs.state.map(|s| s as Arc<dyn SnapshotStore>),
            (outputs.writer, outputs.index, outputs.replica),
            &self.findings,
            outputs.probe,
        );
    }

    fn flush(&self) -> anyhow::Result<()> {
        Ok(())
    }

    fn routes(&self, runtime: &tokio::runtime::Handle) -> axum::Router {
        crate::sinks::live::routes::routes_of(self.live.as_ref(), runtime)
    }

    fn finished(&self) {
        let Some(hub) = &self.live else {
            return;
        };
        let mut found = self.findings.lock().map(|f| f.clone()).unwrap_or_default();
        found.rank(self.params.top);
        hub.set_findings(found.live_view(self.params.top.max(20)));
        hub.finish();
    }

    fn summarize(&self, summary: &mut Summary, _live: bool) {
        let mut found = self.findings.lock().map(|f| f.clone()).unwrap_or_default();
        found.rank(self.params.top);
        summary.findings = Some(found);
    }
}
