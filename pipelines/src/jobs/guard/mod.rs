//! The guard job: dataset or generator → timely workers → guards → archive and alert output.

pub mod dataflow;
pub mod job;
pub mod registry;

pub use crate::jobs::engine::settings::InputParams;
pub use crate::jobs::engine::summary::Summary;
pub use job::{AlertsOut, DEFAULT_SERIES_LIMITS, GuardJob, ScoresOut};

use crate::jobs::engine;
use crate::jobs::guard::dataflow::GuardProgram;
use crate::runtime::stop::Stop;

/// Runs the guard job to the end of its input (or until `stop`), and reports what it did.
pub fn run(job: GuardJob, stop: Stop) -> anyhow::Result<Summary> {
    engine::run(job.settings.clone(), stop, |source| {
        // Held until the run has finished with its directories, whichever way it returns.
        let locks = job.lock_directories()?;
        Ok((GuardProgram::open(&job, source)?, locks))
    })
}
