//! What a worker's sink operators hold: the outputs a job replicates, and the channel to their
//! worker's writer.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use super::batch::Batch;
use super::durability::ReplicaStats;
use super::options::ReplicaParams;

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

/// The name of a part's progress row.
pub(super) fn part_name(output: Output, worker: usize, peers: usize) -> String {
    format!("{}/{worker}of{peers}", output.name())
}

/// What a writer is sent.
pub(super) enum ToWriter {
    /// A batch to write.
    Batch(Batch),
    /// No more batches: send what waits, then stop.
    Finish,
}

/// What a worker's sink operators use to reach their writer.
#[derive(Clone)]
pub struct ReplicaHandle {
    /// The worker's writer.
    pub(super) tx: SyncSender<ToWriter>,
    /// Output before this event time is in the replica already.
    pub(super) skip_before: i64,
    /// Which worker, of how many.
    pub(super) worker: usize,
    pub(super) peers: usize,
    pub(super) options: Arc<ReplicaParams>,
    pub(super) stats: Arc<ReplicaStats>,
}

impl ReplicaHandle {
    /// Whether the job's replica takes `output`.
    pub fn replicates(&self, output: Output) -> bool {
        self.options.tables.contains(&output)
    }
}
