//! How a job writes to its replica: where, as whom, in what batches, and where batches wait
//! while it is away.

use std::path::PathBuf;
use std::time::Duration;

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

/// The outputs a job replicates; each is a part per worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// `telemetry_meta`.
    Telemetry,
    /// `alerts` and `alert_history`.
    Alerts,
    /// `patterns`.
    Patterns,
    /// `sessions`.
    Sessions,
    /// `entanglements`.
    Entanglements,
    /// `sync_actions`.
    SyncActions,
}

impl Output {
    /// Every output, in the order of the table list `--replica-tables` accepts.
    pub const ALL: [Output; 6] = [
        Output::Alerts,
        Output::Patterns,
        Output::Sessions,
        Output::Entanglements,
        Output::SyncActions,
        Output::Telemetry,
    ];

    /// The name of the output in progress rows and logs.
    pub(super) fn name(self) -> &'static str {
        match self {
            Output::Telemetry => "telemetry",
            Output::Alerts => "alerts",
            Output::Patterns => "patterns",
            Output::Sessions => "sessions",
            Output::Entanglements => "entanglements",
            Output::SyncActions => "sync_actions",
        }
    }
}

impl Output {
    /// The replica table the output is named by in `--replica-tables` and `[replica] tables`.
    pub fn table(self) -> &'static str {
        match self {
            Output::Telemetry => "telemetry_meta",
            Output::Alerts => "alerts",
            Output::Patterns => "patterns",
            Output::Sessions => "sessions",
            Output::Entanglements => "entanglements",
            Output::SyncActions => "sync_actions",
        }
    }

    /// The outputs a comma-separated list of table names names: `alerts` (with
    /// `alert_history`), `patterns`, `sessions`, `entanglements`, `sync_actions`,
    /// `telemetry_meta`, `default` (all of these but `telemetry_meta`) or `all`.
    ///
    /// # Errors
    /// An unknown name, said with the names that are known.
    pub fn parse_list<'a>(names: impl IntoIterator<Item = &'a str>) -> anyhow::Result<Vec<Output>> {
        let mut outputs = Vec::new();
        for name in names {
            let name = name.trim();
            let named: &[Output] = match name {
                "" => &[],
                "all" => &Output::ALL,
                "default" => DEFAULT_OUTPUTS,
                "alert_history" => &[Output::Alerts],
                "telemetry" => &[Output::Telemetry],
                _ => match Output::ALL.iter().find(|o| o.table() == name) {
                    Some(output) => std::slice::from_ref(output),
                    None => {
                        let known: Vec<&str> = Output::ALL.iter().map(|o| o.table()).collect();
                        anyhow::bail!(
                            "{name:?} is not a replica table: name some of {}, or default, or all",
                            known.join(", ")
                        )
                    }
                },
            };
            for output in named {
                if !outputs.contains(output) {
                    outputs.push(*output);
                }
            }
        }
        Ok(outputs)
    }
}

/// What a job replicates when no table list is given: what a person asks "what is wrong
/// now?" of. The per-reading `telemetry_meta` is left out, since the archive holds every
/// reading already; `--replica-tables default,telemetry_meta` adds it.
pub const DEFAULT_OUTPUTS: &[Output] = &[
    Output::Alerts,
    Output::Patterns,
    Output::Sessions,
    Output::Entanglements,
    Output::SyncActions,
];
