//! How a job writes to its replica: where, as whom, in what batches, and where batches wait
//! while it is away.

use std::path::PathBuf;
use std::time::Duration;

use super::handle::{DEFAULT_OUTPUTS, Output};
use super::write::Bulk;
use crate::connect::replica::ReplicaUrl;

/// The replica a job writes to when none is configured: an embedded SQLite file.
pub const DEFAULT_REPLICA: &str = "sqlite://vigil-replica.db";

/// How a job writes to its replica.
#[derive(Clone, Debug)]
pub struct ReplicaParams {
    /// Where.
    pub url: ReplicaUrl,
    /// A role to take after connecting (`SET ROLE`), e.g. `observer_writer`.
    pub role: Option<String>,
    /// Apply vigil's migrations (and, on PostgreSQL, grant the roles) at start-up.
    pub migrate: bool,
    /// The outputs replicated (`--replica-tables`); the others are left out.
    pub tables: Vec<Output>,
    /// Replicate the encrypted payload of each reading (opaque; never decrypted).
    pub replicate_payload: bool,
    /// A batch is cut once it holds this many rows…
    pub batch_rows: usize,
    /// …or this long after the last one.
    pub batch_interval: Duration,
    /// Where batches wait while the replica is away.
    pub spill_dir: PathBuf,
    /// How rows reach a PostgreSQL-protocol replica.
    pub bulk: Bulk,
    /// How long a batch write may wait for a PostgreSQL replica before the replica is taken as
    /// away and the batch spilled.
    pub write_timeout: Duration,
}

impl ReplicaParams {
    /// The options for `url` with the defaults.
    pub fn new(url: ReplicaUrl) -> ReplicaParams {
        ReplicaParams {
            url,
            role: None,
            migrate: false,
            tables: DEFAULT_OUTPUTS.to_vec(),
            replicate_payload: false,
            batch_rows: 100_000,
            batch_interval: Duration::from_millis(500),
            spill_dir: PathBuf::from("vigil-spill").join("replica"),
            bulk: Bulk::Auto,
            write_timeout: crate::connect::pg_tls::ANSWER_TIMEOUT,
        }
    }
}

impl ReplicaParams {
    /// Replicates each reading's encrypted payload, or stops; payloads live in
    /// `telemetry_meta`, so turning them on adds that table.
    pub fn set_replicate_payload(&mut self, on: bool) {
        self.replicate_payload = on;
        if on && !self.tables.contains(&Output::Telemetry) {
            self.tables.push(Output::Telemetry);
        }
    }
}
