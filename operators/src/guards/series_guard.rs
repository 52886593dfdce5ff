//! The engine every per-series guard runs on: event-time order per series, raise and clear.

use std::any::Any;
use std::collections::HashMap;

use compact_str::CompactString;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::guards::snapshot::{
    SeriesSnapshot, SlotSnapshot, Snapshot, SnapshotStore, Snapshots, VERSION,
};
use crate::model::alert::alert_id;
use crate::model::{Alert, AlertStatus, ScoreColumns, SeriesReading};
use crate::stash::Stash;
use arrow::record_batch::RecordBatch;
use timely::dataflow::operators::core::Map;

/// What a guard concludes about one reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// How anomalous the reading is, in [0, 1]; the engine raises and clears on it with the
    /// guard's [`Hysteresis`].
    pub score: f64,
    /// The observed value.
    pub observed: f64,
    /// The value the guard expected.
    pub expected: f64,
    /// Event time of the first reading the decision looked at.
    pub window_start: i64,
    /// Event time of the last reading the decision looked at.
    pub window_end: i64,
}

/// When an alert opens and closes: it is raised when the score reaches `raise` and cleared
/// when it falls below `clear`, so a score hovering around one threshold does not flap.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hysteresis {
    /// Raise when the score is at least this.
    pub raise: f64,
    /// Clear when the score is below this (at most `raise`).
    pub clear: f64,
}

impl Hysteresis {
    /// Raise at `raise`, clear below `clear` (taken as at most `raise`).
    pub fn new(raise: f64, clear: f64) -> Self {
        Self {
            raise,
            clear: clear.min(raise),
        }
    }
}

/// Maps a distance `d ≥ 0` in a guard's own unit (deviations, percent, …) to a score in
/// [0, 1] that is 0.5 exactly at the guard's threshold `t`: `d / (d + t)`, and 1 for a distance
/// that is infinite or not a number (an overflow). Raising at 0.5 is then raising at `d ≥ t`.
///
/// # Examples
/// ```
/// use vigil_operators::guards::series_guard::distance_score;
/// assert_eq!(distance_score(6.0, 6.0), 0.5);
/// assert_eq!(distance_score(0.0, 6.0), 0.0);
/// assert!(distance_score(60.0, 6.0) > 0.9);
/// ```
pub fn distance_score(distance: f64, threshold: f64) -> f64 {
    let d = distance.abs();
    if d.is_nan() {
        return 1.0;
    }
    if threshold <= 0.0 {
        return if d > 0.0 { 1.0 } else { 0.0 };
    }
    if d.is_infinite() {
        return 1.0;
    }
    d / (d + threshold)
}

/// The score that [`distance_score`] gives distance `d` under threshold `t`, for setting a
/// clear level in the guard's own unit.
pub fn hysteresis_for(threshold: f64, clear_below: f64) -> Hysteresis {
    Hysteresis::new(0.5, distance_score(clear_below, threshold))
}

/// The per-series decision logic of a guard. The engine calls [`SeriesLogic::observe`] for
/// every reading of a series in event-time order (ties broken by `seq`, then value).
pub trait SeriesLogic: 'static {
    /// What the guard remembers about one series; serializable, so that it can be kept in a
    /// snapshot ([`crate::guards::snapshot`]).
    type State: Default + serde::Serialize + serde::de::DeserializeOwned + 'static;

    /// Looks at the next reading of a series; `None` when the guard has no opinion yet
    /// (warming up, or the series is not one it watches).
    fn observe(&self, state: &mut Self::State, reading: &SeriesReading) -> Option<Verdict>;

    /// When the guard's alerts raise and clear.
    fn hysteresis(&self) -> Hysteresis {
        Hysteresis::new(0.5, 0.5)
    }

    /// Heap and inline bytes one series' state takes, for memory accounting.
    fn state_bytes(&self, state: &Self::State) -> usize {
        let _ = state;
        std::mem::size_of::<Self::State>()
    }

    /// Whether the guard also judges what does not arrive ([`SeriesLogic::due`]).
    const WATCHES_TIME: bool = false;

    /// For guards that watch time: the event time by which the series' next reading is due.
    fn due(&self, state: &Self::State) -> Option<i64> {
        let _ = state;
        None
    }

    /// Called once the watermark has passed `due` with no reading of the series since: the
    /// verdict at event time `due`.
    fn overdue(&self, state: &mut Self::State, due: i64) -> Option<Verdict> {
        let _ = (state, due);
        None
    }
}

/// A guard's logic behind a uniform interface, so that one operator can run many guards.
trait AnyLogic {
    fn new_state(&self) -> Box<dyn Any>;
    fn observe(&self, state: &mut dyn Any, reading: &SeriesReading) -> Option<Verdict>;
    fn state_bytes(&self, state: &dyn Any) -> usize;
    fn due(&self, state: &dyn Any) -> Option<i64>;
    fn overdue(&self, state: &mut dyn Any, due: i64) -> Option<Verdict>;
    fn save(&self, state: &dyn Any) -> Vec<u8>;
    fn load(&self, bytes: &[u8]) -> Result<Box<dyn Any>, String>;
}

impl<L: SeriesLogic> AnyLogic for L {
    fn new_state(&self) -> Box<dyn Any> {
        Box::new(L::State::default())
    }

    fn observe(&self, state: &mut dyn Any, reading: &SeriesReading) -> Option<Verdict> {
        // Each state was made by this logic's own `new_state`.
        let state = state.downcast_mut::<L::State>()?;
        SeriesLogic::observe(self, state, reading)
    }

    fn state_bytes(&self, state: &dyn Any) -> usize {
        state
            .downcast_ref::<L::State>()
            .map_or(0, |s| SeriesLogic::state_bytes(self, s))
    }

    fn due(&self, state: &dyn Any) -> Option<i64> {
        SeriesLogic::due(self, state.downcast_ref::<L::State>()?)
    }

    fn overdue(&self, state: &mut dyn Any, due: i64) -> Option<Verdict> {
        SeriesLogic::overdue(self, state.downcast_mut::<L::State>()?, due)
    }

    fn save(&self, state: &dyn Any) -> Vec<u8> {
        // Plain data into memory: encoding cannot fail.
        state
            .downcast_ref::<L::State>()
            .and_then(|s| bincode::serialize(s).ok())
            .unwrap_or_default()
    }

    fn load(&self, bytes: &[u8]) -> Result<Box<dyn Any>, String> {
        let state: L::State = bincode::deserialize(bytes).map_err(|e| e.to_string())?;
        Ok(Box::new(state))
    }
}

/// One guard to run: its label and its logic.
pub struct Guard {
    label: GuardLabel,
    logic: Box<dyn AnyLogic>,
    hysteresis: Hysteresis,
    watches_time: bool,
    scores: bool,
}

impl Guard {
    /// A guard running `logic` under `label`.
    pub fn new<L: SeriesLogic>(label: GuardLabel, logic: L) -> Self {
        let hysteresis = SeriesLogic::hysteresis(&logic);
        Self {
            label,
            logic: Box::new(logic),
            hysteresis,
            watches_time: L::WATCHES_TIME,
            scores: false,
        }
    }

    /// Also reports the guard's score for every reading it judges
    /// ([`SeriesGuard::guards_with_scores`]).
    pub fn with_scores(mut self, on: bool) -> Self {
        self.scores = on;
        self
    }

    /// The guard's label.
    pub fn label(&self) -> &GuardLabel {
        &self.label
    }

    /// Runs the guard over one series' points in the order given, without a dataflow: the
    /// alerts the guard operator would emit for that series. For tools and evaluations.
    pub fn replay(&self, points: &[SeriesReading]) -> Vec<Alert> {
        let mut slot = GuardSlot {
            state: self.logic.new_state(),
            open: None,
        };
        let mut out = Vec::new();
        for point in points {
            step(self, &mut slot, point, &point.name, &mut out, None);
        }
        out
    }
}

/// How a guard's alerts are labelled: its name, severity and reaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardLabel {
    /// The guard's name as it appears in `alerts.guard` (`zscore`).
    pub guard: CompactString,
    /// The severity written on its alerts.
    pub severity: CompactString,
    /// The topic or action its alerts trigger.
    pub reaction: CompactString,
}

impl GuardLabel {
    /// A label with severity `warning` and reaction `telemetry-alerts`.
    pub fn new(guard: &str) -> Self {
        Self {
            guard: guard.into(),
            severity: "warning".into(),
            reaction: "telemetry-alerts".into(),
        }
    }
}

/// A series in the guard's map: hashed by its precomputed series hash, compared by name too,
/// so that a hash collision can never merge two series.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SeriesKey {
    hash: u64,
    source: CompactString,
    name: CompactString,
}

impl std::hash::Hash for SeriesKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Passes the precomputed series hash through instead of hashing again.
#[derive(Default)]
struct SeriesHasher(u64);

impl std::hash::Hasher for SeriesHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type BuildSeriesHasher = std::hash::BuildHasherDefault<SeriesHasher>;

/// One guard's memory of one series: the logic's state and the alert open on it, if any.
struct GuardSlot {
    state: Box<dyn Any>,
    open: Option<CompactString>,
}

/// Every guard's memory of one series, and the event time of its latest reading.
struct Series {
    slots: Vec<GuardSlot>,
    last_seen: i64,
}

impl Series {
    /// Whether the series can be forgotten without losing anything a user would see: no
    /// alert is open on it (its clear would never come) and no guard awaits its next reading
    /// (a silence guard's verdict would never come).
    fn idle(&self, guards: &[Guard]) -> bool {
        guards.iter().zip(&self.slots).all(|(guard, slot)| {
            slot.open.is_none() && !(guard.watches_time && guard.logic.due(&*slot.state).is_some())
        })
    }
}

/// How many series a guard operator keeps, and when a quiet one is forgotten, so that state
/// stays bounded when sources or names are random.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeriesLimits {
    /// The most series held, split evenly over the workers; `None` for no limit. At the
    /// limit, the longest-quiet series without an open alert are forgotten to make room; when
    /// every series has one, a new series is not judged (and counted as refused).
    pub max_series: Option<usize>,
    /// A series with no reading for this long in event time (milliseconds), no open alert and
    /// no verdict due is forgotten: its next reading starts it afresh. `None`: never.
    pub idle_ms: Option<i64>,
}

/// Runs guards' [`SeriesLogic`] over a telemetry stream and turns their verdicts into alerts
/// that are raised when the score reaches the guard's raise level and cleared when it falls
/// below its clear level.
pub trait SeriesGuard<'scope> {
    /// Runs `logic` per series and emits raised and cleared alerts.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream, capture::Event};
    /// use vigil_operators::{GuardLabel, SeriesReading, Reading, SeriesGuard, Threshold};
    ///
    /// let captured = timely::example(|scope| {
    ///     let readings = vec![
    ///         Reading::new("veh-1", "temp_c", 1_000, 20.0),
    ///         Reading::new("veh-1", "temp_c", 2_000, 99.0),
    ///         Reading::new("veh-1", "temp_c", 3_000, 21.0),
    ///     ];
    ///     let logic = Threshold::new().bound("temp_c", None, Some(90.0));
    ///     let points: Vec<SeriesReading> = readings.iter().map(SeriesReading::from).collect();
    ///     points.to_stream(scope).container::<Vec<_>>()
    ///         .guard(GuardLabel::new("threshold"), logic)
    ///         .capture()
    /// });
    /// let alerts: Vec<_> = captured
    ///     .try_iter()
    ///     .flat_map(|event| match event {
    ///         Event::Messages(_, alerts) => alerts,
    ///         Event::Progress(_) => Vec::new(),
    ///     })
    ///     .collect();
    /// assert_eq!(alerts.len(), 2);
    /// assert_eq!((alerts[0].ts, alerts[1].ts), (2_000, 3_000));
    /// ```
    fn guard<L: SeriesLogic>(self, label: GuardLabel, logic: L) -> Stream<'scope, u64, Vec<Alert>>;

    /// Runs several guards in one operator: the readings are routed, buffered and ordered
    /// once, and every guard looks at each of them. Reports the number of series and the
    /// guards' state bytes into `options.metrics`, and snapshots the guards' state into
    /// `options.snapshots`.
    fn guards(
        self,
        guards: Vec<Guard>,
        options: GuardOperatorParams,
    ) -> Stream<'scope, u64, Vec<Alert>>;

    /// Runs guards per source instead of per series: each sees every reading of a source, of
    /// every name, in event-time order (sequence numbers, unknown sources, bursts of events).
    /// Their alerts carry the name `*`.
    fn guards_by_source(
        self,
        guards: Vec<Guard>,
        options: GuardOperatorParams,
    ) -> Stream<'scope, u64, Vec<Alert>>;

    /// As [`SeriesGuard::guards`], also returning the scores of the guards that report them
    /// ([`Guard::with_scores`]) as `anomaly_scores` batches, one per guard step.
    fn guards_with_scores(
        self,
        guards: Vec<Guard>,
        options: GuardOperatorParams,
    ) -> (
        Stream<'scope, u64, Vec<Alert>>,
        Stream<'scope, u64, Vec<RecordBatch>>,
    );
}

/// What a guard operator reports and keeps besides its alerts.
#[derive(Clone, Debug, Default)]
pub struct GuardOperatorParams {
    /// Counters of series and state bytes.
    pub metrics: Option<GuardMetrics>,
    /// Snapshots of the guards' state, and the one to start from.
    pub snapshots: Option<Snapshots>,
    /// How many series are kept, and for how long a quiet one.
    pub limits: SeriesLimits,
}

impl GuardOperatorParams {
    /// Options that report into `metrics`.
    pub fn with_metrics(metrics: GuardMetrics) -> Self {
        Self {
            metrics: Some(metrics),
            ..Self::default()
        }
    }
}

/// How the guard operator keys its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keying {
    /// Per series (`source`, `name`).
    Series,
    /// Per source: the guard sees every reading of a source, of every name, in event-time
    /// order; its alerts carry the name [`ALL_NAMES`].
    Source,
}

/// The `name` of alerts about a whole source.
pub const ALL_NAMES: &str = "*";

/// A stable hash of a source, which routes per-source guards.
fn source_hash(source: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(source.as_bytes())
}

/// What the guard operator emits: alerts, and batches of scores.
#[derive(Clone, Debug)]
enum GuardOutput {
    Alert(Alert),
    Scores(RecordBatch),
}

impl GuardOutput {
    fn alert(self) -> Option<Alert> {
        match self {
            GuardOutput::Alert(a) => Some(a),
            GuardOutput::Scores(_) => None,
        }
    }
}

/// Shared counters a guard updates as it runs: how many series it holds and their state bytes.
#[derive(Clone, Debug, Default)]
pub struct GuardMetrics {
    /// Series with state on this worker.
    pub series: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Bytes of guard state on this worker (slots, map entries and the logics' own state).
    pub state_bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Series forgotten, quiet for longer than the idle time or to make room at the limit.
    pub evicted: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Readings not judged because every held series had an open alert at the limit.
    pub refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<'scope> SeriesGuard<'scope> for Stream<'scope, u64, Vec<SeriesReading>> {
    fn guard<L: SeriesLogic>(self, label: GuardLabel, logic: L) -> Stream<'scope, u64, Vec<Alert>> {
        self.guards(
            vec![Guard::new(label, logic)],
            GuardOperatorParams::default(),
        )
    }

    fn guards(
        self,
        guards: Vec<Guard>,
        options: GuardOperatorParams,
    ) -> Stream<'scope, u64, Vec<Alert>> {
        guard_operator(self, guards, options, Keying::Series).flat_map(GuardOutput::alert)
    }

    fn guards_by_source(
        self,
        guards: Vec<Guard>,
        options: GuardOperatorParams,
    ) -> Stream<'scope, u64, Vec<Alert>> {
        guard_operator(self, guards, options, Keying::Source).flat_map(GuardOutput::alert)
    }

    fn guards_with_scores(
        self,
        guards: Vec<Guard>,
        options: GuardOperatorParams,
    ) -> (
        Stream<'scope, u64, Vec<Alert>>,
        Stream<'scope, u64, Vec<RecordBatch>>,
    ) {
        let outputs = guard_operator(self, guards, options, Keying::Series);
        let alerts = outputs.clone().flat_map(GuardOutput::alert);
        let scores = outputs.flat_map(|o| match o {
            GuardOutput::Scores(b) => Some(b),
            GuardOutput::Alert(_) => None,
        });
        (alerts, scores)
    }
}

/// The operator behind [`SeriesGuard`]: routes readings by series, orders them once the
/// frontier passes, runs every guard over them, and emits alerts and score batches.
fn guard_operator<'scope>(
    points: Stream<'scope, u64, Vec<SeriesReading>>,
    guards: Vec<Guard>,
    options: GuardOperatorParams,
    keying: Keying,
) -> Stream<'scope, u64, Vec<GuardOutput>> {
    let names: Vec<&str> = guards.iter().map(|g| g.label.guard.as_str()).collect();
    let name = format!("Guard({})", names.join(","));
    let exchange = Exchange::new(move |p: &SeriesReading| match keying {
        Keying::Series => p.hash,
        Keying::Source => source_hash(&p.source),
    });
    let (index, peers) = {
        let scope = points.scope();
        (scope.index(), scope.peers())
    };
    let GuardOperatorParams {
        metrics,
        snapshots,
        limits,
    } = options;
    points.unary_frontier(exchange, &name, move |cap, _info| {
        let mut state = GuardState {
            watches_time: guards.iter().any(|g| g.watches_time),
            guards,
            keying,
            series: HashMap::default(),
            out: Vec::new(),
            scores: ScoreColumns::default(),
            max_series: limits.max_series.map(|max| max.div_ceil(peers).max(1)),
            idle_ms: limits.idle_ms,
            swept_at: 0,
            evicted: 0,
            refused: 0,
        };
        let mut stash: Stash<SeriesReading> = Stash::new();
        let mut ready: Vec<SeriesReading> = Vec::new();
        // The state is complete for event time before `snapshot_at`: restored from a snapshot
        // taken there, readings before it (replayed by a restarted source) are in it already.
        let mut snapshot_at = snapshots
            .as_ref()
            .map_or(0, |c| state.restore(c, index, peers));
        let skip_before = snapshot_at as i64;
        // Restored series may go overdue before any reading comes: keep the capability then.
        stash.held = (!state.series.is_empty()).then_some(cap);
        let mut last_bound: Option<u64> = Some(0);

        move |(input, frontier), output| {
            input.for_each_stamp(|cap, data| {
                stash.hold(cap.retain_least(output.output_index()));
                for batch in data {
                    if skip_before > 0 {
                        stash
                            .pending
                            .extend(batch.drain(..).filter(|p| p.ts >= skip_before));
                    } else {
                        stash.pending.append(batch);
                    }
                }
            });

            // Everything before the frontier is complete: no reading with an earlier
            // event time can still arrive, because readings travel at the watermark and
            // the watermark never passes a reading's own event time. Readings that
            // arrive later have event times at or past the frontier, so the pending ones
            // only need a look when the frontier moves.
            let bound = frontier.frontier().first().copied();
            if bound == last_bound {
                return;
            }
            let previous = last_bound;
            last_bound = bound;
            // A snapshot is taken at the store's target once the frontier passes it, provided
            // no reading at or after it has been judged yet; at the end of the input, at the
            // store's final time, once everything is judged.
            let snapshot = snapshots.as_ref().and_then(|c| {
                let at = match bound {
                    Some(b) => {
                        let at = c.store.target(b)?;
                        let unjudged = previous.is_some_and(|p| at >= p);
                        (unjudged && at <= b && at > snapshot_at).then_some(at)?
                    }
                    None => c.store.final_at().filter(|at| *at > snapshot_at)?,
                };
                Some((c, at))
            });
            let mut save = |state: &GuardState, (c, at): (&Snapshots, u64)| {
                c.store
                    .save(c.operator, index, peers, at, state.snapshot(at));
                snapshot_at = at;
            };
            let Some(cap) = stash.held.as_mut() else {
                // Nothing waits: the state is complete up to the frontier.
                if let Some(snapshot) = snapshot {
                    save(&state, snapshot);
                }
                if bound.is_none() {
                    report_metrics(metrics.as_ref(), &state);
                }
                return;
            };
            if let Some(snapshot @ (_, at)) = snapshot
                && bound.is_some()
            {
                state.advance(&mut stash.pending, &mut ready, Some(at));
                save(&state, snapshot);
            }
            let waiting = state.advance(&mut stash.pending, &mut ready, bound);
            if bound.is_none() {
                if let Some(snapshot) = snapshot {
                    save(&state, snapshot);
                }
                // State sizes are summed once, at the end of the input, not every step.
                report_metrics(metrics.as_ref(), &state);
            }
            // The step's scores go out at the held time, which no reading of this step
            // precedes.
            // The columns always fit their own schema, so finishing cannot fail.
            if !state.scores.is_empty()
                && let Ok(batch) = state.scores.finish()
            {
                output.session(&*cap).give(GuardOutput::Scores(batch));
            }
            let out = &mut state.out;
            if !out.is_empty() {
                out.sort_unstable_by(|a, b| (a.ts, &a.alert_id).cmp(&(b.ts, &b.alert_id)));
                while let Some(first) = out.first() {
                    let ts = first.ts;
                    let run = out.iter().take_while(|a| a.ts == ts).count();
                    let time = cap.delayed(&(ts as u64));
                    output
                        .session(&time)
                        .give_iterator(out.drain(..run).map(GuardOutput::Alert));
                }
            }
            // Hold on while readings wait, or while a series may still go overdue. The held
            // time may be ahead of the frontier (readings sent at a later input time by a
            // worker that is ahead): then it stays where it is.
            match bound {
                Some(bound) if !stash.pending.is_empty() || waiting => {
                    if *cap.time() < bound {
                        cap.downgrade(&bound);
                    }
                }
                _ => stash.held = None,
            }
        }
    })
}

/// What one guard operator knows: every series' slots, and the alerts and scores of the step.
struct GuardState {
    guards: Vec<Guard>,
    keying: Keying,
    watches_time: bool,
    series: HashMap<SeriesKey, Series, BuildSeriesHasher>,
    out: Vec<Alert>,
    scores: ScoreColumns,
    /// The most series this worker holds.
    max_series: Option<usize>,
    /// After how long in event time a quiet series is forgotten.
    idle_ms: Option<i64>,
    /// The bound of the last sweep for quiet series.
    swept_at: u64,
    /// Series forgotten, and readings not judged at the limit, so far.
    evicted: u64,
    refused: u64,
}

impl GuardState {
    /// Runs the guards over the pending readings before `bound` (all of them at the end of
    /// the input, `None`), then gives the guards that watch time their verdict on every series
    /// whose next reading was due before `bound` and did not come. Returns whether a series
    /// may still go overdue later.
    fn advance(
        &mut self,
        pending: &mut Vec<SeriesReading>,
        ready: &mut Vec<SeriesReading>,
        bound: Option<u64>,
    ) -> bool {
        let keying = self.keying;
        match bound {
            Some(bound) => ready.extend(pending.extract_if(.., |r| (r.ts as u64) < bound)),
            None => ready.append(pending),
        }
        if !ready.is_empty() {
            // Ordered by series hash, then event time. Should two series share a hash,
            // their points interleave, but each series still sees its own in order.
            if keying == Keying::Source {
                // Keyed by source: order and group by the source's hash instead.
                for p in ready.iter_mut() {
                    p.hash = source_hash(&p.source);
                }
            }
            ready.sort_unstable_by(SeriesReading::guard_order);
            let mut start = 0;
            while start < ready.len() {
                let first = &ready[start];
                let same = |p: &SeriesReading| match keying {
                    Keying::Series => p.same_series(first),
                    Keying::Source => p.hash == first.hash && p.source == first.source,
                };
                let end = start
                    + ready[start..]
                        .iter()
                        .position(|p| !same(p))
                        .unwrap_or(ready.len() - start);
                let key = SeriesKey {
                    hash: first.hash,
                    source: first.source.clone(),
                    name: match keying {
                        Keying::Series => first.name.clone(),
                        Keying::Source => CompactString::const_new(ALL_NAMES),
                    },
                };
                let key_name = key.name.clone();
                let first_ts = first.ts;
                // Only at the limit does a new series cost a second lookup.
                let at_limit = self.max_series.is_some_and(|max| self.series.len() >= max);
                if at_limit && !self.series.contains_key(&key) && !self.make_room() {
                    self.refused += (end - start) as u64;
                    start = end;
                    continue;
                }
                let guards = &self.guards;
                let new_slots = || -> Vec<GuardSlot> {
                    guards
                        .iter()
                        .map(|g| GuardSlot {
                            state: g.logic.new_state(),
                            open: None,
                        })
                        .collect()
                };
                let series = self.series.entry(key).or_insert_with(|| Series {
                    slots: new_slots(),
                    last_seen: first_ts,
                });
                // A series quiet for longer than the idle time starts afresh, whether or not
                // a sweep has forgotten it yet, and wherever the quiet falls among the step's
                // readings: so the alerts depend neither on when sweeps ran nor on how the
                // readings were batched. The readings are judged in runs without such a gap.
                let mut run_start = start;
                while run_start < end {
                    let run_end = self.idle_ms.map_or(end, |idle| {
                        ready[run_start..end]
                            .windows(2)
                            .position(|pair| pair[1].ts - pair[0].ts > idle)
                            .map_or(end, |gap| run_start + gap + 1)
                    });
                    let first_ts = ready[run_start].ts;
                    if self
                        .idle_ms
                        .is_some_and(|idle| first_ts - series.last_seen > idle)
                        && series.idle(guards)
                    {
                        series.slots = new_slots();
                        self.evicted += 1;
                    }
                    for (guard, slot) in guards.iter().zip(series.slots.iter_mut()) {
                        for reading in &ready[run_start..run_end] {
                            let scores = guard.scores.then_some(&mut self.scores);
                            step(guard, slot, reading, &key_name, &mut self.out, scores);
                        }
                    }
                    series.last_seen = series.last_seen.max(ready[run_end - 1].ts);
                    run_start = run_end;
                }
                start = end;
            }
            ready.clear();
        }
        // Guards that watch time: series whose next reading was due before the bound, and
        // did not come, get the guard's verdict at the due time.
        let mut waiting = false;
        if self.watches_time
            && let Some(bound) = bound
        {
            for (key, series) in self.series.iter_mut() {
                for (guard, slot) in self.guards.iter().zip(series.slots.iter_mut()) {
                    if !guard.watches_time {
                        continue;
                    }
                    let Some(due) = guard.logic.due(&*slot.state) else {
                        continue;
                    };
                    if (due as u64) >= bound {
                        waiting = true;
                        continue;
                    }
                    if let Some(verdict) = guard.logic.overdue(&mut *slot.state, due) {
                        let at = (&key.source, &key.name, due);
                        decide(guard, slot, at, &verdict, &mut self.out);
                    }
                    waiting |= guard.logic.due(&*slot.state).is_some();
                }
            }
        }
        if let Some(bound) = bound {
            self.sweep(bound);
        }
        waiting
    }

    /// Forgets the series quiet since before `bound` less the idle time, a few times per
    /// idle time (each sweep visits every series).
    fn sweep(&mut self, bound: u64) {
        let Some(idle) = self.idle_ms else { return };
        let every = (idle / 4).max(1) as u64;
        if bound < self.swept_at.saturating_add(every) {
            return;
        }
        self.swept_at = bound;
        let before = self.series.len();
        let guards = &self.guards;
        self.series
            .retain(|_, series| !(bound as i64 - series.last_seen > idle && series.idle(guards)));
        self.evicted += (before - self.series.len()) as u64;
    }

    /// Makes room for one more series under the limit: forgets the longest-quiet eighth of
    /// the series that can be forgotten (at least one), so that the cost of a full scan is
    /// shared by many new series. Returns whether there is room.
    fn make_room(&mut self) -> bool {
        let Some(max) = self.max_series else {
            return true;
        };
        if self.series.len() < max {
            return true;
        }
        let guards = &self.guards;
        let mut quiet: Vec<i64> = self
            .series
            .values()
            .filter(|series| series.idle(guards))
            .map(|series| series.last_seen)
            .collect();
        if quiet.is_empty() {
            return false;
        }
        let take = (max / 8).clamp(1, quiet.len());
        let (_, cut, _) = quiet.select_nth_unstable(take - 1);
        let cut = *cut;
        let before = self.series.len();
        let mut left = take;
        self.series.retain(|_, series| {
            let forget = left > 0 && series.last_seen <= cut && series.idle(guards);
            left -= usize::from(forget);
            !forget
        });
        self.evicted += (before - self.series.len()) as u64;
        true
    }

    fn labels(&self) -> Vec<CompactString> {
        self.guards.iter().map(|g| g.label.guard.clone()).collect()
    }

    /// The encoded state, complete for event time before `at`.
    fn snapshot(&self, at: u64) -> Vec<u8> {
        let series = self
            .series
            .iter()
            .map(|(key, series)| SeriesSnapshot {
                hash: key.hash,
                source: key.source.clone(),
                name: key.name.clone(),
                last_seen: series.last_seen,
                slots: self
                    .guards
                    .iter()
                    .zip(&series.slots)
                    .map(|(guard, slot)| SlotSnapshot {
                        open: slot.open.clone(),
                        state: guard.logic.save(&*slot.state),
                    })
                    .collect(),
            })
            .collect();
        Snapshot {
            version: VERSION,
            guards: self.labels(),
            at,
            series,
        }
        .encode()
    }

    /// Loads the series this worker (`index` of `peers`) owns from the store's snapshot, which
    /// may have been taken by another number of workers; returns the time it was taken at, or
    /// 0 when there is none (or it cannot be used, which the store is told).
    fn restore(&mut self, snapshots: &Snapshots, index: usize, peers: usize) -> u64 {
        let store: &dyn SnapshotStore = &*snapshots.store;
        let Some((at, blobs)) = store.restore(snapshots.operator) else {
            return 0;
        };
        let labels = self.labels();
        let mut series = HashMap::default();
        for bytes in &blobs {
            let loaded = Snapshot::decode(bytes).and_then(|snapshot| {
                if snapshot.guards != labels || snapshot.at != at {
                    return Err(format!(
                        "taken at {} by guards {:?}, expected at {at} by {labels:?}",
                        snapshot.at, snapshot.guards
                    ));
                }
                for entry in snapshot.series {
                    // Timely routes an exchanged record to worker `hash % peers`.
                    if entry.hash % peers as u64 != index as u64 {
                        continue;
                    }
                    if entry.slots.len() != self.guards.len() {
                        return Err(format!(
                            "series {} has the wrong number of slots",
                            entry.source
                        ));
                    }
                    let slots = self
                        .guards
                        .iter()
                        .zip(entry.slots)
                        .map(|(guard, slot)| {
                            Ok(GuardSlot {
                                state: guard.logic.load(&slot.state)?,
                                open: slot.open,
                            })
                        })
                        .collect::<Result<Vec<_>, String>>()?;
                    let key = SeriesKey {
                        hash: entry.hash,
                        source: entry.source,
                        name: entry.name,
                    };
                    series.insert(
                        key,
                        Series {
                            slots,
                            last_seen: entry.last_seen,
                        },
                    );
                }
                Ok(())
            });
            if let Err(error) = loaded {
                store.restore_failed(snapshots.operator, &error);
                return 0;
            }
        }
        self.series = series;
        at
    }
}

/// Stores the number of series, the guards' state bytes and the evictions into `metrics`.
fn report_metrics(metrics: Option<&GuardMetrics>, state: &GuardState) {
    let Some(metrics) = metrics else { return };
    let (guards, series) = (&state.guards, &state.series);
    let per_series = std::mem::size_of::<SeriesKey>()
        + std::mem::size_of::<Series>()
        + guards.len() * std::mem::size_of::<GuardSlot>();
    let bytes: usize = series
        .values()
        .map(|series| {
            per_series
                + guards
                    .iter()
                    .zip(&series.slots)
                    .map(|(g, s)| g.logic.state_bytes(&*s.state))
                    .sum::<usize>()
        })
        .sum();
    use std::sync::atomic::Ordering::Relaxed;
    metrics.series.store(series.len() as u64, Relaxed);
    metrics.state_bytes.store(bytes as u64, Relaxed);
    metrics.evicted.store(state.evicted, Relaxed);
    metrics.refused.store(state.refused, Relaxed);
}

/// One reading through one guard: first, if the series was due before the reading came, the
/// guard's verdict on the silence in between (the reading proves the time has passed, however
/// the batches fell); then its verdict on the reading, and its score into `scores`. Alerts are
/// named `name` (the series' name, or `*` for a whole source).
fn step(
    guard: &Guard,
    slot: &mut GuardSlot,
    reading: &SeriesReading,
    name: &CompactString,
    out: &mut Vec<Alert>,
    scores: Option<&mut ScoreColumns>,
) {
    if guard.watches_time
        && let Some(due) = guard.logic.due(&*slot.state)
        && due < reading.ts
        && let Some(verdict) = guard.logic.overdue(&mut *slot.state, due)
    {
        decide(guard, slot, (&reading.source, name, due), &verdict, out);
    }
    let Some(verdict) = guard.logic.observe(&mut *slot.state, reading) else {
        return;
    };
    if let Some(scores) = scores {
        scores.push(
            reading.ts,
            &reading.source,
            &reading.name,
            reading.seq,
            &guard.label.guard,
            verdict.score,
        );
    }
    decide(
        guard,
        slot,
        (&reading.source, name, reading.ts),
        &verdict,
        out,
    );
}

/// Where a verdict applies: the series (source, name) and the event time.
type At<'a> = (&'a CompactString, &'a CompactString, i64);

/// Raises or clears one guard's alert on one series after a verdict.
fn decide(
    guard: &Guard,
    slot: &mut GuardSlot,
    at: At<'_>,
    verdict: &Verdict,
    out: &mut Vec<Alert>,
) {
    match &slot.open {
        None if verdict.score >= guard.hysteresis.raise => {
            let id = alert_id(&guard.label.guard, at.0, at.1, at.2);
            out.push(make_alert(
                &guard.label,
                &id,
                at,
                verdict,
                AlertStatus::Raised,
            ));
            slot.open = Some(id);
        }
        Some(id) if verdict.score < guard.hysteresis.clear => {
            out.push(make_alert(
                &guard.label,
                id,
                at,
                verdict,
                AlertStatus::Cleared,
            ));
            slot.open = None;
        }
        _ => {}
    }
}

fn make_alert(
    label: &GuardLabel,
    id: &str,
    (source, name, ts): At<'_>,
    verdict: &Verdict,
    status: AlertStatus,
) -> Alert {
    Alert {
        alert_id: id.into(),
        guard: label.guard.clone(),
        severity: label.severity.clone(),
        source: source.clone(),
        name: name.clone(),
        ts,
        window_start: verdict.window_start,
        window_end: verdict.window_end,
        observed: verdict.observed,
        expected: verdict.expected,
        score: verdict.score,
        status,
        reaction: label.reaction.clone(),
    }
}
