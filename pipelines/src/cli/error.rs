//! The error a job binary ends with, and the exit code it carries.

use crate::runtime::dir_lock::{DirectoryInUse, IN_USE_EXIT_CODE};

/// The exit code of a command line or job file that cannot be used (clap's too).
pub const USAGE_EXIT_CODE: u8 = 2;

/// Why a job binary ends without success. Each kind carries its exit code, so that the
/// binaries decide none themselves; inside a job, errors are `anyhow` with their context.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The command line or job file is wrong, or names something that cannot be used: exit 2.
    #[error("{0:#}")]
    Usage(anyhow::Error),
    /// A directory the job needs is held by another job, which the message names: exit 2.
    #[error("{0:#}")]
    InUse(anyhow::Error),
    /// The job failed while running: exit 1.
    #[error("{0:#}")]
    Failed(anyhow::Error),
    /// The job ran to the end of its input but could read none of it: exit 1.
    #[error(
        "nothing could be read from the input: every record was a dead letter (see the errors table in the archive)"
    )]
    NothingRead,
}

impl JobError {
    /// A running job's error: [`JobError::InUse`] when a directory it needs is held by another
    /// process, [`JobError::Failed`] otherwise.
    pub fn run(error: anyhow::Error) -> Self {
        let in_use = error
            .chain()
            .any(|cause| cause.downcast_ref::<DirectoryInUse>().is_some());
        if in_use {
            JobError::InUse(error)
        } else {
            JobError::Failed(error)
        }
    }

    /// The code the process exits with.
    pub fn exit_code(&self) -> u8 {
        match self {
            JobError::Usage(_) => USAGE_EXIT_CODE,
            JobError::InUse(_) => IN_USE_EXIT_CODE,
            JobError::Failed(_) | JobError::NothingRead => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_carries_its_exit_code() {
        let usage = JobError::Usage(anyhow::anyhow!("--guard median: unknown guard"));
        assert_eq!(
            (usage.exit_code(), usage.to_string().as_str()),
            (2, "--guard median: unknown guard")
        );
        let failed = JobError::run(anyhow::anyhow!("disk full").context("writing the archive"));
        assert_eq!(failed.exit_code(), 1);
        assert_eq!(failed.to_string(), "writing the archive: disk full");
        assert_eq!(JobError::NothingRead.exit_code(), 1);
    }
}
