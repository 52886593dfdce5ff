//! The Parquet archive on object_store: hive-partitioned tables written atomically.
//!
//! Layout: `TABLE/date=YYYY-MM-DD/hour=HH/part-RUN-wWORKER-SEQ.parquet`. `RUN` is a fingerprint
//! of the input and the worker count, so replaying the same input with the same settings
//! (`-w`, `--max-rows-per-file`) rewrites the same files instead of adding duplicates, while a
//! different input never overwrites them; a replay with other settings writes its files beside
//! the earlier run's. Each file is one `put`, which object stores make visible atomically, so
//! no reader ever sees half a file. A local archive is written here rather than through
//! object_store's local store, which does not sync: each file goes to a temporary name, is
//! synced, renamed into place, and its directory (and any partition directory created for it)
//! synced, all before the file counts as durable and input positions may move past it.
//!
//! # Layout
//! - `location`: where the archive lives (a local directory or `s3://…`), and durable local writes.
//! - `table`: an archive table and the Parquet file of one partition being written.
//! - `partition`: which file a row goes to (hour, Kafka origin) and what the file is named.
//! - `sink`: the sink operators, and [`write_records`] for results outside a dataflow.
//! - `writer`: the task that puts files into the store, several at a time, with retries.
//! - `durability`: how far each sink's output is in the store.

mod durability;
mod location;
mod partition;
mod sink;
mod table;
mod writer;

pub use durability::Durability;
pub use location::{ArchiveLocation, local_dir};
pub use partition::tag_kafka_batch;
pub use sink::{Archive, ArchiveBatches, write_records};
pub use table::Table;
pub use writer::{ArchiveStats, ArchiveTask, ArchiveWriter, start_writer};
