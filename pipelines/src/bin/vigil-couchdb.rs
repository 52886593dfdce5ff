//! `vigil-couchdb`: follow a CouchDB `_changes` feed and forward each change's metadata (`id`,
//! `seq`, `type`, `ts`; never the document) to a Kafka topic or as JSON lines.

use std::process::ExitCode;

use vigil_pipelines::cli::{CouchdbArgs, job_main};

fn main() -> ExitCode {
    job_main::<CouchdbArgs>()
}
