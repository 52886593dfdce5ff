//! The guard job: dataset or generator → timely workers → guards → archive and alert output.

pub mod dataflow;
pub mod job;
pub mod registry;

pub use crate::jobs::engine::settings::InputSpec;
pub use crate::jobs::engine::summary::Summary;
pub use job::{AlertsOut, DEFAULT_SERIES_LIMITS, GuardJob, ScoresOut};

use crate::jobs::engine;
use crate::jobs::guard::dataflow::GuardProgram;
use crate::runtime::shutdown::Shutdown;

/// Runs the guard job to the end of its input (or until `shutdown`), and reports what it did.
pub fn run(job: GuardJob, shutdown: Shutdown) -> anyhow::Result<Summary> {
    engine::run(job.settings(), shutdown, |source| {
        // Held until the run has finished with its directories, whichever way it returns.
        let locks = job.lock_directories()?;
        Ok((GuardProgram::open(&job, source)?, locks))
    })
}
