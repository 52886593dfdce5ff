//! Why a run of `vigil-sql` failed, and the exit code that says so.

use crate::session::QueryError;

/// Why a run failed, and the exit code that says so.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The arguments, the archive or the output file are not usable.
    #[error("{0:#}")]
    Usage(anyhow::Error),
    /// A statement failed, was refused or went over a limit.
    #[error("{0}")]
    Query(#[from] QueryError),
}

impl Failure {
    /// The process exit code: 2 for usage, else the statement's ([`QueryError::exit_code`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Query(error) => error.exit_code(),
        }
    }
}
