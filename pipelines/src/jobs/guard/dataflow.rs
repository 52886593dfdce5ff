//! The guard job's dataflow: per-series and per-source guards over a worker's points, their
//! alerts and scores archived, replicated and published.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use timely::dataflow::operators::{Concat, Probe};
use tracing::warn;
use vigil_operators::{
    AnomalyScore, GuardMetrics, GuardOperatorParams, Reading, SeriesGuard, SeriesLimits,
    SnapshotStore, Snapshots,
};

use crate::jobs::engine::feeder::SessionKey;
use crate::jobs::engine::source::Source;
use crate::jobs::engine::summary::Summary;
use crate::jobs::engine::{HOUR_MS, Program, Streams, WorkerOutputs};
use crate::jobs::guard::job::{GuardJob, ScoresOut};
use crate::jobs::guard::registry::ConfiguredGuard;
use crate::jobs::guard::registry::guards_json;
use crate::runtime::snapshot::StateDir;
use crate::sinks::alerts::{AlertCounts, AlertTarget, AlertWatcher, WriteAlerts};
use crate::sinks::archive::{Archive, ArchiveBatches, Table};
use crate::sinks::kafka::KafkaAlerts;
use crate::sinks::live::{LiveHub, TapReadings, TapScores};
use crate::sinks::replica::{Output, ReplicateAlerts, ReplicateTelemetry};

/// The guards of one run, and what their workers share: the alert output (taken by worker 0),
/// alert counts, per-worker metrics and, for Kafka input, the state store.
pub(crate) struct GuardProgram {
    guards: Vec<ConfiguredGuard>,
    scores: ScoresOut,
    series_limits: SeriesLimits,
    alerts_out: Mutex<Option<AlertTarget>>,
    kafka_alerts: Option<Arc<KafkaAlerts>>,
    alert_counts: Arc<AlertCounts>,
    metrics: Arc<Mutex<Vec<GuardMetrics>>>,
    state: Option<Arc<StateDir>>,
    telemetry: Table,
    score_table: Table,
    /// The live page's view, with `--serve`.
    live: Option<Arc<LiveHub>>,
}

impl GuardProgram {
    /// Opens the alert output and, for Kafka input, the guards' state store, whose snapshots
    /// a restart from the committed offsets carries on with (a file backfill simply runs
    /// again).
    pub(crate) fn open(job: &GuardJob, source: &Source) -> anyhow::Result<GuardProgram> {
        let mut topics: Vec<String> = job
            .guards
            .iter()
            .map(|g| g.reaction.topic.as_str().to_owned())
            .collect();
        topics.sort();
        topics.dedup();
        let (alerts_out, kafka_alerts) =
            job.alerts
                .open(&topics, &job.settings.spill_dir, job.settings.key.clone())?;
        let workers = job.settings.workers.max(1);
        let state = match source {
            Source::Kafka { input, resumed, .. } => {
                let mut hasher = xxhash_rust::xxh3::Xxh3::new();
                hasher.update(source.description().as_bytes());
                hasher.update(format!("{:?}", job.guards).as_bytes());
                let per_source = job.guards.iter().any(|g| g.params.per_source());
                let operators = 1 + usize::from(per_source);
                Some(Arc::new(StateDir::open(
                    &job.state_dir,
                    &format!("guards-{:016x}", hasher.digest()),
                    operators * workers,
                    HOUR_MS as u64,
                    input.commit_every,
                    *resumed,
                )?))
            }
            Source::Plan(_) => None,
        };
        let live = job.settings.serve_addr.map(|_| {
            LiveHub::new(
                "guard",
                source.description(),
                guards_json(&job.guards),
                job.guards.first().map(|g| g.name.clone()),
            )
        });
        Ok(GuardProgram {
            guards: job.guards.clone(),
            scores: job.scores.clone(),
            series_limits: job.series_limits,
            alerts_out: Mutex::new(alerts_out),
            kafka_alerts,
            alert_counts: Arc::new(AlertCounts::new(
                &job.settings.metrics,
                &job.guards
                    .iter()
                    .map(|g| g.name.clone())
                    .collect::<Vec<_>>(),
                live.iter()
                    .map(|hub| hub.clone() as Arc<dyn AlertWatcher>)
                    .collect(),
            )),
            metrics: Arc::default(),
            state,
            telemetry: Table::of::<Reading>("ts")?,
            score_table: Table::of::<AnomalyScore>("ts")?,
            live,
        })
    }
}

impl Program for GuardProgram {
    const NAME: &'static str = "guard";
    const OUTPUTS: &'static [Output] = &[Output::Telemetry, Output::Alerts];

    fn archives_readings(&self) -> bool {
        true
    }

    fn session_key(&self) -> Option<SessionKey> {
        None
    }

    fn config_text(&self) -> String {
        format!("{:?}", self.guards)
    }

    fn state(&self) -> Option<&Arc<StateDir>> {
        self.state.as_ref()
    }

    fn deliveries(&self) -> Option<Arc<KafkaAlerts>> {
        self.kafka_alerts.clone()
    }

    fn build(&self, streams: Streams<'_>, outputs: WorkerOutputs<'_>) {
        let WorkerOutputs {
            index,
            writer,
            replica,
            state,
            probe,
        } = outputs;
        let out = if index == 0 {
            self.alerts_out.lock().ok().and_then(|mut o| o.take())
        } else {
            None
        };
        if let Some(replica) = &replica {
            streams
                .readings
                .clone()
                .replicate_telemetry(replica.clone());
        }
        streams
            .readings
            .archive_batches(self.telemetry.clone(), writer.clone(), index);
        let metrics = GuardMetrics::default();
        if let Ok(mut all) = self.metrics.lock() {
            all.push(metrics.clone());
        }
        let per_series = self
            .guards
            .iter()
            .filter(|g| !g.params.per_source())
            .map(|g| g.build().with_scores(self.scores.includes(&g.name)))
            .collect();
        let per_source: Vec<_> = self
            .guards
            .iter()
            .filter(|g| g.params.per_source())
            .map(ConfiguredGuard::build)
            .collect();
        let snapshots = |operator| {
            state.clone().map(|store| Snapshots {
                store: store as Arc<dyn SnapshotStore>,
                operator,
            })
        };
        let source_alerts = (!per_source.is_empty()).then(|| {
            let options = GuardOperatorParams {
                metrics: None,
                snapshots: snapshots("source"),
                limits: self.series_limits,
            };
            streams
                .points
                .clone()
                .concat(streams.violations)
                .guards_by_source(per_source, options)
        });
        let options = GuardOperatorParams {
            metrics: Some(metrics),
            snapshots: snapshots("series"),
            limits: self.series_limits,
        };
        if let Some(hub) = &self.live {
            streams.points.clone().tap_live(hub.clone());
        }
        let (alerts, scores) = streams.points.guards_with_scores(per_series, options);
        if let Some(hub) = &self.live {
            scores.clone().tap_live(hub.clone());
        }
        let alerts = match source_alerts {
            Some(more) => alerts.concat(more),
            None => alerts,
        };
        scores.archive_batches(self.score_table.clone(), writer.clone(), index);
        alerts.clone().probe_with(probe);
        alerts.clone().archive(writer.clone(), index);
        if let Some(replica) = replica {
            alerts.clone().replicate_alerts(replica);
        }
        alerts.publish(out, self.alert_counts.clone());
    }

    fn flush(&self) -> anyhow::Result<()> {
        if let Some(producer) = &self.kafka_alerts {
            let delivered = producer.flush()?;
            tracing::info!(message = "Alerts delivered to Kafka.", delivered);
        }
        Ok(())
    }

    fn routes(&self, runtime: &tokio::runtime::Handle) -> axum::Router {
        crate::sinks::live::routes::routes_of(self.live.as_ref(), runtime)
    }

    fn finished(&self) {
        if let Some(hub) = &self.live {
            hub.finish();
        }
    }

    fn summarize(&self, summary: &mut Summary, live: bool) {
        summary.alerts_raised = self.alert_counts.raised.load(Ordering::Relaxed);
        summary.alerts_cleared = self.alert_counts.cleared.load(Ordering::Relaxed);
        summary.alert_lag_ms = if live {
            self.alert_counts.lag_percentiles()
        } else {
            None
        };
        if let Ok(all) = self.metrics.lock() {
            for m in all.iter() {
                summary.series += m.series.load(Ordering::Relaxed);
                summary.guard_state_bytes += m.state_bytes.load(Ordering::Relaxed);
                summary.series_forgotten += m.evicted.load(Ordering::Relaxed);
                summary.series_refused += m.refused.load(Ordering::Relaxed);
            }
        }
        if summary.series_refused > 0 {
            warn!(
                message = "Readings of new series were not judged: every series held had an open alert at --max-series; raise it.",
                readings = summary.series_refused
            );
        }
    }
}
