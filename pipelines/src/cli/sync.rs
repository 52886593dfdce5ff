//! How `vigil-sync`'s command line becomes a sync job.

use std::path::Path;

use crate::cli::SyncArgs;
use crate::connect::replica::ReplicaUrl;
use crate::jobs::sync::{Capture, DEMO_TABLE, Direction, SyncJob, prepare_demo};
use crate::sinks::replica::ReplicaParams;

impl SyncArgs {
    /// The job the command line describes; with neither replica given, the demonstration on
    /// two SQLite files under `./vigil-sync/` (prepared by [`prepare_demo`]).
    pub fn job(&self) -> anyhow::Result<SyncJob> {
        let (local, remote, tables) = match (&self.local, &self.remote) {
            (Some(local), Some(remote)) => (
                ReplicaUrl::parse(local)?,
                ReplicaUrl::parse(remote)?,
                self.tables.clone(),
            ),
            (None, None) => {
                let dir = Path::new("vigil-sync");
                prepare_demo(dir)?;
                let tables = if self.tables.is_empty() {
                    vec![DEMO_TABLE.to_owned()]
                } else {
                    self.tables.clone()
                };
                (
                    ReplicaUrl::Sqlite(dir.join("local.db")),
                    ReplicaUrl::Sqlite(dir.join("remote.db")),
                    tables,
                )
            }
            _ => anyhow::bail!(
                "give both --local and --remote, or neither for the SQLite demonstration"
            ),
        };
        anyhow::ensure!(
            !tables.is_empty(),
            "no table to sync: name them with --table"
        );
        Ok(SyncJob {
            direction: Direction::parse(&self.direction)?,
            capture: Capture::parse(&self.capture)?,
            dry_run: self.dry_run,
            restore: self.restore,
            workers: self.workers.max(1),
            batch_rows: self.batch_rows.max(1),
            archive: (self.archive != "none").then(|| self.archive.clone()),
            replica: self.replica_options()?,
            ..SyncJob::new(local, remote, tables)
        })
    }

    /// The SQL replica the applied actions go to: the default one, none, or the one given,
    /// spilling under `--spill`'s `replica` subdirectory when that is given.
    fn replica_options(&self) -> anyhow::Result<Option<ReplicaParams>> {
        let options = match self.replica.as_deref() {
            None => Some(crate::config::default_replica()?),
            Some("none" | "off") => None,
            Some(url) => Some(ReplicaParams {
                role: self.replica_role.clone(),
                migrate: self.replica_migrate,
                ..ReplicaParams::new(ReplicaUrl::parse(url)?)
            }),
        };
        Ok(options.map(|options| match &self.spill {
            Some(dir) => ReplicaParams {
                spill_dir: dir.join("replica"),
                ..options
            },
            None => options,
        }))
    }
}
