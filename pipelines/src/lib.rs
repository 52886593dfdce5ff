//! vigil's sources, sinks, runtime and job binaries.
//!
//! # Layout
//! Dependencies run one way, down this list; a folder never imports from one above it.
//! - `cli`, `config`: the job binaries' command lines and the TOML job file, turned into jobs.
//! - `jobs`: one folder per job (guard, archaeology, sync, CouchDB): its type, its run, its summary.
//! - `sources`: where records come from (files and generators, Kafka, PostgreSQL logical decoding).
//! - `sinks`: where results go (the Parquet archive, alert topics and NDJSON, SQL replicas).
//! - `connect`: connections to other systems (Kafka endpoints, replica URLs, TLS, tables, migrations).
//! - `runtime`: what every job stands on (stop signals, state snapshots, spill, durable files,
//!   directory locks, payload keys, secrets in text, metrics, backoff).
//! - `fuzz`: fuzz entry points for the spill, snapshot and configuration readers.

pub mod cli;
pub mod config;
pub mod connect;
#[doc(hidden)]
pub mod fuzz;
pub mod jobs;
pub mod runtime;
pub mod sinks;
pub mod sources;
