//! Where results go.
//! - `archive`: the Parquet archive on object_store (local or S3), hive-partitioned, atomic.
//! - `alerts`: alerts in event-time order, as NDJSON or to Kafka.
//! - `kafka`: the Kafka producers: alerts through the local spill, and messages to a topic.
//! - `replica`: every job's results upserted into a SQL replica, exactly once.

pub mod alerts;
pub mod archive;
pub mod kafka;
pub mod live;
pub mod replica;
