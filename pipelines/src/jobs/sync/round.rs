//! One round of the sync, the same whether it is the only one (`--once`) or one of many
//! (following): read what changed on both sides, run the diff, apply the actions not applied
//! yet, record what the replicas now agree on, and only then let a slot move on — a crash
//! anywhere repeats the round.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use tokio::runtime::Runtime;
use vigil_datasets::changes::row_text;
use vigil_operators::{Change, RowKey, Side, SyncAction, Version};

use crate::connect::replica::{Replica, TableInfo};
use crate::jobs::sync::agreed::{Agreed, parse_row, version_of};
use crate::jobs::sync::apply::{apply, target};
use crate::jobs::sync::archive::archive_dead_letters;
use crate::jobs::sync::capture::{SideState, read_side};
use crate::jobs::sync::diff::{DiffRunner, RoundInput};
use crate::jobs::sync::job::{SyncJob, SyncSummary};

/// Both sides, the diff running over them, and what the rounds so far have done.
pub(crate) struct Rounds<'a> {
    job: &'a SyncJob,
    /// Where dead letters are archived from.
    runtime: &'a Runtime,
    /// The local side, then the remote.
    sides: [SideState; 2],
    /// The job's tables, as the remote declares them.
    infos: Vec<TableInfo>,
    runner: DiffRunner,
    agreed: Agreed,
    /// Actions applied in an earlier round that the diff still holds unchanged: their echo
    /// has not come back yet, and they are not applied again.
    applied: BTreeMap<RowKey, SyncAction>,
    /// What the last round wrote, as the side it wrote to now holds it.
    written: Vec<(Side, Change)>,
    /// Whether the next round is the first, which reads both sides whole.
    first: bool,
}

/// What a round did.
pub(crate) struct Round {
    /// Its figures; the rows are those the sides held once read.
    pub summary: SyncSummary,
    /// Every action the diff holds after the round (with `--dry-run`, the plan).
    pub planned: Vec<SyncAction>,
    /// The actions the round applied.
    pub applied: Vec<SyncAction>,
}

impl<'a> Rounds<'a> {
    /// Reads the tables' columns and the agreed versions, and starts the diff.
    pub fn open(
        job: &'a SyncJob,
        runtime: &'a Runtime,
        local: SideState,
        remote: SideState,
    ) -> anyhow::Result<Rounds<'a>> {
        let mut sides = [local, remote];
        let infos = table_infos(job, &mut sides)?;
        let runner = DiffRunner::start(job.workers)?;
        let agreed = Agreed::load(&mut sides[0].replica, &job.tables)?;
        Ok(Rounds {
            job,
            runtime,
            sides,
            infos,
            runner,
            agreed,
            applied: BTreeMap::new(),
            written: Vec::new(),
            first: true,
        })
    }

    /// The local replica, then the remote.
    pub fn replicas(&mut self) -> impl Iterator<Item = &mut Replica> {
        self.sides.iter_mut().map(|side| &mut side.replica)
    }

    /// The rows each side holds now, as far as the rounds have seen (local, remote).
    pub fn rows_held(&self) -> (u64, u64) {
        let [local, remote] = &self.sides;
        (local.rows.len() as u64, remote.rows.len() as u64)
    }

    /// Runs one round: everything, the first time; what changed since, after that.
    pub fn round(&mut self) -> anyhow::Result<Round> {
        let started = Instant::now();
        let job = self.job;
        // What the job wrote last round, as the side it wrote to now holds it: a poll by
        // `updated_at` would not see it (the winner keeps its older time), the others repeat it.
        let mut changes = std::mem::take(&mut self.written);
        let mut dead_letters = Vec::new();
        for state in &mut self.sides {
            let read = read_side(
                job,
                state,
                &self.infos,
                self.agreed.versions(),
                self.first,
                &mut dead_letters,
            )?;
            changes.extend(read);
        }
        archive_dead_letters(job, self.runtime, &dead_letters)?;
        self.first = false;
        let touched: BTreeSet<RowKey> = changes
            .iter()
            .map(|(_, c)| (c.table.clone(), c.key.clone()))
            .collect();
        let input = RoundInput {
            changes,
            agreed: self.agreed.take_input(),
        };
        let planned = self.runner.round(input)?;
        let (local_rows, remote_rows) = self.rows_held();
        let mut summary = SyncSummary {
            local_rows,
            remote_rows,
            planned: planned.len() as u64,
            ..SyncSummary::default()
        };
        let mut applied = Vec::new();
        if !job.dry_run {
            applied = self.apply(&planned, &touched, &mut summary)?;
            // Applied: the slots may move on.
            for state in &mut self.sides {
                state.advance()?;
            }
        }
        summary.elapsed = started.elapsed();
        Ok(Round {
            summary,
            planned,
            applied,
        })
    }

    /// Applies the actions not applied yet, table by table, and records after each table
    /// what both replicas now hold alike; returns the actions applied.
    fn apply(
        &mut self,
        planned: &[SyncAction],
        touched: &BTreeSet<RowKey>,
        summary: &mut SyncSummary,
    ) -> anyhow::Result<Vec<SyncAction>> {
        let job = self.job;
        let by_row: BTreeMap<RowKey, &SyncAction> = planned
            .iter()
            .map(|a| ((a.table.clone(), a.key.clone()), a))
            .collect();
        // Applied actions stay noted while the diff still holds them unchanged.
        self.applied
            .retain(|key, action| by_row.get(key).is_some_and(|a| *a == action));
        let fresh: Vec<&SyncAction> = planned
            .iter()
            .filter(|a| !self.applied.contains_key(&(a.table.clone(), a.key.clone())))
            .collect();
        let mut done = Vec::new();
        for info in &self.infos {
            let mine: Vec<&SyncAction> = fresh
                .iter()
                .copied()
                .filter(|a| a.table == info.name)
                .collect();
            let [local, remote] = &mut self.sides;
            let replicas = [&mut local.replica, &mut remote.replica];
            let applied = apply(
                job,
                replicas,
                [&local.rows, &remote.rows],
                info,
                &mine,
                summary,
            )?;
            // What both hold now, row by row: the winners written...
            let mut now: Vec<(RowKey, Option<Version>)> = Vec::new();
            for action in applied {
                let key = (action.table.clone(), action.key.clone());
                self.applied.insert(key.clone(), action.clone());
                let winner = Version {
                    updated_at: action.winner_updated_at,
                    origin: action.winner_origin.clone(),
                    row: action.row.clone(),
                    position: "agreed".into(),
                };
                let side = &mut self.sides[target(action.action)];
                let copy = Version {
                    position: "written".into(),
                    ..winner.clone()
                };
                self.written
                    .push((side.side, copy.into_change(&key.0, &key.1)));
                match action.row.as_deref().map(parse_row).transpose()? {
                    Some(row) => side.rows.insert(key.clone(), row),
                    None => side.rows.remove(&key),
                };
                now.push((key, winner.row.is_some().then_some(winner)));
                done.push(action.clone());
            }
            // ...and the rows no action is about: held alike by both, they are agreed on too,
            // so that a later change on just one side is no conflict; held by neither, they
            // are forgotten.
            let [local, remote] = &self.sides;
            for key in touched
                .iter()
                .filter(|k| k.0 == info.name && !by_row.contains_key(*k))
            {
                match (local.rows.get(key), remote.rows.get(key)) {
                    (Some(l), Some(r)) => {
                        let version = version_of(job, Side::Local, l);
                        if version.row == Some(row_text(r)) {
                            now.push((key.clone(), Some(version)));
                        }
                    }
                    (None, None) => now.push((key.clone(), None)),
                    _ => {}
                }
            }
            self.agreed
                .record(job, &mut self.sides[0].replica, &info.name, now)?;
        }
        Ok(done)
    }
}

/// The job's tables as the remote declares them, with upserts that never overwrite a newer
/// row; each must have the same primary key on the local replica. In the dry run of a
/// `--restore` a table the local replica lacks is read there as empty.
fn table_infos(job: &SyncJob, sides: &mut [SideState; 2]) -> anyhow::Result<Vec<TableInfo>> {
    let [local, remote] = sides;
    let mut infos = Vec::new();
    for table in &job.tables {
        let info = remote
            .replica
            .table(table)?
            .newer_wins(&job.updated_at_column, &job.origin_column);
        let local_info = match local.replica.table(table) {
            Ok(info) => info,
            Err(_) if job.dry_run && job.restore => {
                if !local.replica.table_exists(table)? {
                    local.absent.insert(table.clone());
                }
                info.clone()
            }
            Err(error) => return Err(error),
        };
        anyhow::ensure!(
            local_info.key == info.key,
            "table {table} has primary key ({}) on {} but ({}) on {}: the replicas must share the key",
            local_info.key.join(", "),
            local.replica.name(),
            info.key.join(", "),
            remote.replica.name()
        );
        infos.push(info);
    }
    Ok(infos)
}
