//! Following both replicas: the diff dataflow lives across rounds and is fed what changed on
//! each side (see `capture` for how), one round per interval, until the job is stopped.
//!
//! Round 0 reads both sides whole; after that each round takes from each side only what
//! changed. The differential dataflow updates the current versions and the diff
//! incrementally; the actions not applied yet are applied, conflicts logged, agreed versions
//! recorded, and only then is a slot advanced — a crash repeats the round.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vigil_operators::{Side, SyncAction};

use crate::connect::migrations;
use crate::connect::replica::Replica;
use crate::jobs::sync::archive::archive_actions;
use crate::jobs::sync::capture::{SideState, open_feed};
use crate::jobs::sync::job::{SyncJob, SyncSummary};
use crate::jobs::sync::round::Rounds;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::runtime::metrics::{Label, Metrics, SecondsGauge};

/// Follows both replicas until `stop`, one round per `interval` (randomized by half either
/// way); `on_round` gets each round's summary, and `metrics` the `vigil_sync_*` figures.
pub fn follow(
    job: &SyncJob,
    stop: &AtomicBool,
    interval: Duration,
    metrics: &Metrics,
    mut on_round: impl FnMut(&SyncSummary),
) -> anyhow::Result<SyncSummary> {
    let runtime = Arc::new(crate::runtime::io::background("I/O")?);
    let open = |side: Side, url| -> anyhow::Result<SideState> {
        let mut replica = Replica::connect(url, &runtime)?;
        migrations::migrate(&mut replica, false)?;
        migrations::ensure_roles(&mut replica, &job.tables)?;
        let feed = open_feed(job, side, &mut replica)?;
        Ok(SideState::new(side, replica, feed))
    };
    let local = open(Side::Local, &job.local)?;
    let remote = open(Side::Remote, &job.remote)?;
    let mut rounds = Rounds::open(job, &runtime, local, remote)?;
    let figures = SyncMetrics::register(metrics);
    metrics.ready("replicas");
    // A round that takes far longer than the interval means the job is stuck.
    metrics.stale_after((interval * 10).max(Duration::from_secs(60)));
    let mut total = SyncSummary::default();
    loop {
        let round = rounds.round()?;
        let mut summary = round.summary;
        // Following counts the rows the sides hold once the round is applied.
        (summary.local_rows, summary.remote_rows) = rounds.rows_held();
        total.local_rows = summary.local_rows;
        total.remote_rows = summary.remote_rows;
        total.planned = summary.planned;
        total.pushed += summary.pushed;
        total.pulled += summary.pulled;
        total.deleted_local += summary.deleted_local;
        total.deleted_remote += summary.deleted_remote;
        total.conflicts += summary.conflicts;
        total.held_back = summary.held_back;
        archive_actions(job, &runtime, &round.applied)?;
        figures.record(&summary, &round.applied);
        on_round(&summary);
        let pause = interval.mul_f64(rand::random_range(0.5..1.5));
        let until = Instant::now() + pause;
        while Instant::now() < until {
            if stop.load(Ordering::SeqCst) {
                return Ok(total);
            }
            std::thread::sleep(Duration::from_millis(20).min(pause));
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(total);
        }
    }
}

/// The `vigil_sync_*` metrics a following job updates after each round.
struct SyncMetrics {
    actions: Family<Label, Counter>,
    conflicts: Counter,
    rounds: Counter,
    pending: Gauge,
    rows: Family<Label, Gauge>,
    lag: SecondsGauge,
    metrics: Metrics,
}

impl SyncMetrics {
    fn register(metrics: &Metrics) -> SyncMetrics {
        SyncMetrics {
            actions: metrics.family("sync_actions", "Actions applied, by kind."),
            conflicts: metrics.counter(
                "sync_conflicts",
                "Rows both replicas changed since they last agreed; the loser is in sync_state.",
            ),
            rounds: metrics.counter("sync_rounds", "Rounds run."),
            pending: metrics.gauge(
                "sync_pending_actions",
                "Actions in the diff after the last round (held back by --direction, or awaiting their echo).",
            ),
            rows: metrics.family("sync_rows", "Rows of the synced tables, by side."),
            lag: metrics.seconds(
                "sync_lag",
                "From the newest write applied in the last round to its application.",
            ),
            metrics: metrics.clone(),
        }
    }

    /// A round's figures.
    fn record(&self, summary: &SyncSummary, applied: &[SyncAction]) {
        for (kind, n) in [
            ("push", summary.pushed),
            ("pull", summary.pulled),
            ("delete_local", summary.deleted_local),
            ("delete_remote", summary.deleted_remote),
        ] {
            self.actions
                .get_or_create(&[("kind", kind.into())])
                .inc_by(n);
        }
        self.conflicts.inc_by(summary.conflicts);
        self.rounds.inc();
        self.pending.set(summary.planned as i64);
        for (side, rows) in [
            ("local", summary.local_rows),
            ("remote", summary.remote_rows),
        ] {
            self.rows
                .get_or_create(&[("side", side.into())])
                .set(rows as i64);
        }
        // How long the newest write applied this round waited: from its updated_at to now.
        let now = chrono::Utc::now().timestamp_millis();
        let lag = applied
            .iter()
            .filter(|a| a.winner_updated_at > 0)
            .map(|a| (now - a.winner_updated_at).max(0))
            .min();
        if let Some(lag) = lag {
            self.lag.set(lag as f64 / 1000.0);
        }
        self.metrics.beat();
    }
}
