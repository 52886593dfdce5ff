//! vigil's sources, sinks, runtime and job binaries.
//!
//! # Layout
//! - `guard_job`: the guard job: input plan → timely workers → guards → sinks; `run`.
//! - `archaeology_job`: the archaeology job's dataflow (patterns, sessions, entanglements, the
//!   field) on the guard job's inputs, and what it reports.
//! - `guards`: guard specifications as users write them, and their wiring onto a stream.
//! - `archive`: the Parquet archive on object_store (local or S3), hive-partitioned, atomic.
//! - `alerts_out`: alerts in event-time order, as NDJSON or to Kafka.
//! - `kafka`: the Kafka consumer source and the alert producer.
//! - `couchdb`: the CouchDB `_changes` listener (metadata only, to Kafka or NDJSON).
//! - `replica_sink`: every job's results upserted into a SQL replica, exactly once.
//! - `spill`: the local write-ahead spill of outgoing alerts (and replica batches) while a peer is away.
//! - `crypto`: AES-256-GCM payload encryption with key ids.
//! - `cli`: the command line of the job binaries and logging set-up.

pub mod alerts_out;
pub mod archaeology_job;
pub mod archive;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod couchdb;
pub mod crypto;
pub mod guard_job;
pub mod guards;
pub mod kafka;
pub mod metrics;
pub mod migrations;
pub mod pg_capture;
pub mod replica;
pub mod replica_sink;
pub mod spill;
pub mod sync_follow;
pub mod sync_job;
