//! What every job stands on.
//! - `stop`: the stop signal jobs watch (first Ctrl-C stops gracefully, a second at once).
//! - `snapshot`: guard-state snapshots on local disk.
//! - `spill`: the local write-ahead spill of outgoing batches while a peer is away.
//! - `durable`: local files written whole and synced with their directories.
//! - `dir_lock`: one job per state, spill or archive directory.
//! - `crypto`: AES-256-GCM payload encryption and where its key comes from.
//! - `secrets`: passwords hidden in every URL and connection string shown.
//! - `conninfo`: connection strings cut into their parameters.
//! - `metrics`: the Prometheus exposition.
//! - `backoff`: how long to wait before trying a peer again (one jittered exponential backoff).
//! - `io`: the tokio runtimes jobs do their I/O on.

pub mod backoff;
pub mod conninfo;
pub mod crypto;
pub mod dir_lock;
pub mod durable;
pub mod io;
pub mod metrics;
pub mod secrets;
pub mod snapshot;
pub mod spill;
pub mod stop;
