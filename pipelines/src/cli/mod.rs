//! The job binaries' command lines, kept in the library so that tests parse them too, and
//! what every binary does around its job.
//!
//! # Layout
//! - `job_main`: [`job_main`], all a binary's `main` calls — logging, stop signals, the
//!   summary and the exit code — and the [`JobCommand`] each command line implements.
//! - `error`: [`JobError`], the error a job ends with, carrying its exit code.
//! - `common`: the flags the dataflow jobs share ([`CommonArgs`], [`ReplicaArgs`]).
//! - `guard`, `archaeology`, `couchdb`, `sync_args`: each binary's flags, and how they become
//!   its job and run.
//! - `sync`: how `vigil-sync`'s flags become a sync job.

mod archaeology;
mod common;
mod couchdb;
mod error;
mod guard;
mod job_main;
mod sync;
mod sync_args;

pub use archaeology::{ARCHAEOLOGY_DEFAULT_INPUT, ArchaeologyArgs};
pub use common::{CommonArgs, Limit, ReplicaArgs};
pub use couchdb::{CouchdbArgs, CouchdbJob};
pub use error::{JobError, USAGE_EXIT_CODE};
pub use guard::GuardArgs;
pub use job_main::{
    JobCommand, LogFormat, Prepared, Report, init_logging, job_main, on_stop_signal,
};
pub use sync_args::{SyncArgs, SyncRun};
