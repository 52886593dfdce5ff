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
//! - `checkpoint`: guard-state snapshots on local disk, for jobs that read Kafka.
//! - `durable`: local files written whole and synced with their directories.
//! - `dir_lock`: one job per state, spill or archive directory.
//! - `fuzz`: fuzz entry points for the spill, snapshot and config readers.
//! - `crypto`: AES-256-GCM payload encryption with key ids.
//! - `secrets`: passwords hidden in every URL and connection string shown (`redact`, `SecretUrl`).
//! - `conninfo`: connection strings cut into their parameters (libpq `key=value`, URL queries).
//! - `column_type`: the allowlist a remote catalogue's column types pass before `--restore` uses them.
//! - `pg_tls`: PostgreSQL connections with TLS as libpq's `sslmode` and `sslrootcert` say.
//! - `cli`: the command line of the job binaries and logging set-up.

pub mod alerts_out;
pub mod archaeology_job;
pub mod archive;
pub mod checkpoint;
pub mod cli;
pub mod column_type;
pub mod config;
pub mod conninfo;
pub mod couchdb;
pub mod crypto;
pub mod dir_lock;
pub mod durable;
#[doc(hidden)]
pub mod fuzz;
pub mod guard_job;
pub mod guards;
pub mod kafka;
pub mod metrics;
pub mod migrations;
pub mod pg_capture;
pub mod pg_tls;
pub mod replica;
pub mod replica_sink;
pub mod secrets;
pub mod spill;
pub mod sync_follow;
pub mod sync_job;
