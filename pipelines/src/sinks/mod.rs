//! Where results go.
//! - `archive`: the Parquet archive on object_store (local or S3), hive-partitioned, atomic.
//! - `alerts`: alerts in event-time order, as NDJSON or to Kafka.
//! - `replica`: every job's results upserted into a SQL replica, exactly once.

pub mod alerts;
pub mod archive;
pub mod replica;
