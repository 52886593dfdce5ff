//! The engine the guard and archaeology jobs share: input → timely workers → a program's
//! dataflow → archive, replica and alert outputs, with the end-of-input protocol, offset
//! commits and the summary. A job says what it computes by implementing [`Program`].

pub mod feeder;
pub(crate) mod figures;
pub mod findings;
pub mod read;
pub mod settings;
pub mod source;
pub mod summary;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use indicatif::{ProgressBar, ProgressStyle};
use timely::dataflow::operators::Input;
use timely::dataflow::{ProbeHandle, Stream};
use tracing::{info, warn};
use vigil_operators::{DeadLetter, SeriesReading, SessionEvent};

use crate::jobs::engine::feeder::SessionKey;
use crate::jobs::engine::feeder::{Inputs, WorkerSink};
use crate::jobs::engine::figures::EngineFigures;
use crate::jobs::engine::read::{CommitGate, EndOfInput, Finished, ReadLoop, SINKS_PER_WORKER};
use crate::jobs::engine::settings::Settings;
use crate::jobs::engine::source::Source;
use crate::jobs::engine::summary::{Counters, Summary, cpu_seconds, peak_rss_bytes};
use crate::runtime::dir_lock::DirLock;
use crate::runtime::snapshot::StateDir;
use crate::runtime::stop::Stop;
use crate::sinks::archive::{Archive, ArchiveLocation, ArchiveWriter, start_writer};
use crate::sinks::kafka::KafkaAlerts;
use crate::sinks::replica::{Output, ReplicaHandle, ReplicaParams, ReplicaSink};

/// Snapshots are taken at hour boundaries of event time, as archive files close.
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// One worker's streams, as the feeder hands them to a program.
pub(crate) struct Streams<'scope> {
    /// Readings as Arrow batches, for the telemetry archive.
    pub readings: Stream<'scope, u64, Vec<RecordBatch>>,
    /// Readings as points, for the operators.
    pub points: Stream<'scope, u64, Vec<SeriesReading>>,
    /// Late and malformed records as events of their source, for the security guards.
    pub violations: Stream<'scope, u64, Vec<SeriesReading>>,
    /// Events as sessions see them (when the program asks for them).
    pub sessions: Stream<'scope, u64, Vec<SessionEvent>>,
}

/// What one worker's dataflow writes to, besides its streams.
pub(crate) struct WorkerOutputs<'a> {
    /// The worker's index among all workers.
    pub index: usize,
    /// The archive writer its sinks share.
    pub writer: &'a ArchiveWriter,
    /// Its handle on the replica sink, if results are replicated.
    pub replica: Option<ReplicaHandle>,
    /// The run's state store, if the program keeps one.
    pub state: Option<Arc<StateDir>>,
    /// The probe the reading loop paces itself by: the program attaches its outputs to it.
    pub probe: &'a ProbeHandle<u64>,
}

/// What a dataflow job computes over its input.
pub(crate) trait Program: Send + Sync + 'static {
    /// The job's name, in log lines and in the replica's run names.
    const NAME: &'static str;
    /// The replica tables the job writes.
    const OUTPUTS: &'static [Output];

    /// Whether the readings themselves are archived (the `telemetry` table).
    fn archives_readings(&self) -> bool;
    /// What sessions are kept by, when the program needs session events.
    fn session_key(&self) -> Option<SessionKey>;
    /// The program's configuration as text, for the run's fingerprint.
    fn config_text(&self) -> String;
    /// The run's id, from the input's fingerprint.
    fn run_id(&self, fingerprint: String) -> String {
        fingerprint
    }
    /// Where the program's state is snapshotted, if it keeps any for this run.
    fn state(&self) -> Option<&Arc<StateDir>>;
    /// The alert producer whose deliveries bound what input may be committed, if any.
    fn deliveries(&self) -> Option<Arc<KafkaAlerts>>;
    /// Builds one worker's dataflow over its streams.
    fn build(&self, streams: Streams<'_>, outputs: WorkerOutputs<'_>);
    /// Delivers what the program still holds once the workers have finished.
    fn flush(&self) -> anyhow::Result<()>;
    /// Adds what the program did to the run's summary.
    fn summarize(&self, summary: &mut Summary, live: bool);
    /// The program's live page (`--serve`), served beside `/metrics`; its periodic messages
    /// run on `runtime`.
    fn routes(&self, runtime: &tokio::runtime::Handle) -> axum::Router {
        let _ = runtime;
        axum::Router::new()
    }
    /// The input has ended and every output is final: tells the live page.
    fn finished(&self) {}
}

/// Runs `program` over the input of `settings` until its end (or until `stop`). `start`
/// runs once the input is open and checked: it takes the job's directory locks, held until the
/// run is over, and makes the program.
pub(crate) fn run<P: Program>(
    settings: Settings,
    stop: Stop,
    start: impl FnOnce(&Source) -> anyhow::Result<(P, Vec<DirLock>)>,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    settings.metrics.wait_for(&["input", "state"]);
    let workers = settings.workers.max(1);
    // Opening the source checks the input (a payload without a key, say) before anything,
    // even a lock file, is written.
    let source = Arc::new(Source::open(&settings, workers)?);
    let location = ArchiveLocation::parse(&settings.archive)?;
    let (program, _locks) = start(&source)?;
    let program = Arc::new(program);
    info!(message = %format!("Starting the {} job.", P::NAME), input = %source.description(), archive = %location, workers = settings.workers);
    let runtime = crate::runtime::io::background("I/O")?;
    let served_at = match settings.serve_addr {
        Some(addr) => {
            let bound = settings.metrics.serve_with(
                addr,
                program.routes(runtime.handle()),
                runtime.handle(),
            )?;
            eprintln!("vigil: the live page is at http://{bound}/ (metrics at /metrics)");
            Some(bound)
        }
        None => None,
    };
    if let Some(addr) = settings.metrics_addr
        && settings.serve_addr != Some(addr)
    {
        settings.metrics.serve(addr, runtime.handle())?;
    }
    let state = program.state().cloned();
    let continued = match &*source {
        Source::Kafka { resumed, .. } => {
            !*resumed || state.as_ref().is_some_and(|s| s.restored_at().is_some())
        }
        Source::Plan(_) => true,
    };
    let run_id = program.run_id(source.fingerprint(workers, &program.config_text(), continued));
    let (writer, archive_task) = start_writer(
        location,
        &run_id,
        settings.max_rows_per_file,
        4 * workers,
        runtime.handle(),
        &settings.metrics,
    );
    // Only the outputs the replica takes have parts (and progress rows); a job none of whose
    // outputs it takes opens no replica at all.
    let outputs: Vec<Output> = match &settings.replica {
        Some(options) => P::OUTPUTS
            .iter()
            .copied()
            .filter(|o| options.tables.contains(o))
            .collect(),
        None => Vec::new(),
    };
    let replica = match &settings.replica {
        Some(options) if !outputs.is_empty() => Some(ReplicaSink::start(
            ReplicaParams {
                spill_dir: settings.spill_dir.join("replica"),
                ..options.clone()
            },
            &format!("{}-{run_id}", P::NAME),
            &outputs,
            workers,
            settings.key.clone(),
            &settings.metrics,
        )?),
        _ => None,
    };
    let replica_handles: Arc<Vec<ReplicaHandle>> = Arc::new(
        replica
            .as_ref()
            .map(|r| (0..workers).filter_map(|w| r.handle(w, workers)).collect())
            .unwrap_or_default(),
    );
    let gate = CommitGate {
        replica: replica.as_ref().map(|r| r.durability.clone()),
        durability: writer.durability(),
        sinks: SINKS_PER_WORKER * workers,
        alerts: program.deliveries(),
        state: state.clone(),
    };
    let figures = EngineFigures::register(&settings.metrics);
    // The input is open and checked, and the state (for Kafka) loaded.
    settings.metrics.ready("input");
    settings.metrics.ready("state");
    let progress = progress_bar(&source, settings.progress);
    let counters = Arc::new(Counters::default());
    let end = Arc::new(EndOfInput::default());
    let stopped = stop.clone();
    let newest = {
        let (source, all_ends, counters, progress) = (
            source.clone(),
            end.clone(),
            counters.clone(),
            progress.clone(),
        );
        let (program, state) = (program.clone(), state.clone());
        let settings = settings.clone();
        let workers_done = timely::execute(timely::Config::process(workers), move |worker| {
            let end = all_ends.clone();
            // Counts this worker as finished when it is, or when it unwinds from a panic, so
            // the others never wait for it at the end of the input.
            let mut finished = Finished::new(&end);
            let index = worker.index();
            let peers = worker.peers();
            let probe = ProbeHandle::new();
            let replica = replica_handles.get(index).cloned();
            let inputs = worker.dataflow::<u64, _, _>(|scope| {
                let (readings_in, readings) = scope.new_input::<Vec<RecordBatch>>();
                let (points_in, points) = scope.new_input::<Vec<SeriesReading>>();
                let (errors_in, errors) = scope.new_input::<Vec<DeadLetter>>();
                let (violations_in, violations) = scope.new_input::<Vec<SeriesReading>>();
                let (sessions_in, sessions) = scope.new_input::<Vec<SessionEvent>>();
                errors.archive(writer.clone(), index);
                let streams = Streams {
                    readings,
                    points,
                    violations,
                    sessions,
                };
                let outputs = WorkerOutputs {
                    index,
                    writer: &writer,
                    replica,
                    state: state.clone(),
                    probe: &probe,
                };
                program.build(streams, outputs);
                Inputs {
                    readings: readings_in,
                    points: points_in,
                    errors: errors_in,
                    violations: violations_in,
                    sessions: sessions_in,
                }
            });
            let mut sink = WorkerSink::new(
                inputs,
                settings.key.clone(),
                settings.lateness_ms,
                settings.max_line_bytes,
                program.archives_readings(),
                program.session_key(),
            );
            sink.figures = Some(figures.clone());
            let reading = ReadLoop {
                probe: &probe,
                end: &end,
                stop: &stop,
                index,
                gate: &gate,
            };
            let newest = match &*source {
                Source::Plan(plan) => reading.plan(worker, &mut sink, plan, &progress),
                Source::Kafka {
                    readers, positions, ..
                } => {
                    let reader = readers
                        .get(index)
                        .and_then(|r| r.lock().ok().and_then(|mut r| r.take()));
                    match reader {
                        Some(mut reader) => {
                            let newest = reading.kafka(worker, &mut sink, &mut reader);
                            if let Ok(mut all) = positions.lock() {
                                all.extend(reader.positions());
                            }
                            newest
                        }
                        None => i64::MIN,
                    }
                }
            };
            sink.flush();
            // End of input: event time has reached the newest event of the whole input.
            // Every worker moves its inputs there before closing them and waits until the
            // operators have seen it, so that what is overdue by then (silence) is decided the
            // same way whatever the number of workers and however the steps fell.
            end.newest.fetch_max(newest, Ordering::SeqCst);
            finished.count();
            while end.done.load(Ordering::SeqCst) < peers {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            let last = end.newest.load(Ordering::SeqCst).max(0) as u64 + 1;
            if let Some(state) = &state {
                // The final snapshot: everything read is decided once time reaches `last`.
                state.set_final(last);
            }
            let last = sink.advance(last);
            while probe.less_than(&last) {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            counters
                .events_in
                .fetch_add(sink.events_in, Ordering::Relaxed);
            counters
                .errors
                .fetch_add(sink.errors_out, Ordering::Relaxed);
            counters.late.fetch_add(sink.late, Ordering::Relaxed);
            drop(sink);
            while worker.step_or_park(None) {}
        })
        .map_err(|e| anyhow::anyhow!("starting the timely workers failed: {e}"))?;
        for (worker, result) in workers_done.join().into_iter().enumerate() {
            result.map_err(|e| anyhow::anyhow!("timely worker {worker} failed: {e}"))?;
        }
        end.newest.load(Ordering::SeqCst)
    };
    progress.finish_and_clear();

    let stats = runtime.block_on(archive_task.finish())?;
    let replicated = match replica {
        Some(replica) => {
            let stats = replica.finish()?;
            info!(
                message = "Results replicated.",
                rows = stats.rows.load(Ordering::Relaxed),
                transactions = stats.batches.load(Ordering::Relaxed),
                spilled = stats.spilled.load(Ordering::Relaxed),
                skipped = stats.skipped.load(Ordering::Relaxed)
            );
            stats.rows.load(Ordering::Relaxed)
        }
        None => 0,
    };
    program.flush()?;
    settle_state(&source, state.as_ref(), newest, &stopped)?;
    let mut summary = Summary {
        events_in: counters.events_in.load(Ordering::Relaxed),
        archived: stats.telemetry_rows.load(Ordering::Relaxed),
        replicated,
        errors: counters.errors.load(Ordering::Relaxed),
        late: counters.late.load(Ordering::Relaxed),
        files: stats.files.load(Ordering::Relaxed),
        bytes: stats.bytes.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        peak_rss_bytes: peak_rss_bytes(),
        cpu_seconds: cpu_seconds(),
        ..Summary::default()
    };
    program.summarize(&mut summary, matches!(&*source, Source::Kafka { .. }));
    program.finished();
    if let Some(addr) = served_at
        && !stopped.is_triggered()
    {
        eprintln!("{summary}");
        eprintln!(
            "vigil: the input has ended; the live page stays up at http://{addr}/ until Ctrl-C"
        );
        while !stopped.is_triggered() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(summary)
}

/// Once every file is durable and every output delivered or spilled: commits the consumed
/// Kafka offsets when the final snapshot is current, or marks a file run's carried state as
/// the one to carry on from.
fn settle_state(
    source: &Source,
    state: Option<&Arc<StateDir>>,
    newest: i64,
    stop: &Stop,
) -> anyhow::Result<()> {
    match (source, state) {
        (
            Source::Kafka {
                input, positions, ..
            },
            state,
        ) => {
            let last = newest.max(0) + 1;
            let current = state.and_then(|s| s.advance(i64::MAX));
            if current == Some(last) {
                let positions = positions.lock().map(|p| p.clone()).unwrap_or_default();
                input.commit(&positions)?;
            } else {
                warn!(
                    message = "The guards' final snapshot is incomplete; offsets stay where they were last committed and the next run replays from there.",
                    current, last
                );
            }
        }
        (Source::Plan(_), Some(state)) => {
            if stop.is_triggered() {
                // Some input was not read: a state that skipped it must not be carried on.
                warn!(
                    message = "The run was stopped before the end of its input; the state it started from stays the one to carry on from."
                );
            } else {
                // The archive is durable: the carried state may be relied on from now.
                let _ = state.advance(i64::MAX);
            }
        }
        (Source::Plan(_), None) => {}
    }
    Ok(())
}

/// The progress bar of a file run, on stderr; hidden for Kafka or when not asked for.
fn progress_bar(source: &Source, shown: bool) -> ProgressBar {
    match source {
        Source::Plan(plan) if shown => {
            let bar = ProgressBar::new(plan.total);
            let template = if plan.total_is_bytes {
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})"
            } else {
                "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} records ({per_sec}, eta {eta})"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar
        }
        _ => ProgressBar::hidden(),
    }
}
