//! The engine every per-series guard runs on: event-time order per series, raise and clear.

use std::collections::HashMap;

use compact_str::CompactString;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::model::alert::alert_id;
use crate::model::{Alert, AlertStatus, Point};

/// What a guard concludes about one reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// Whether the guard's alert condition holds at this reading.
    pub anomalous: bool,
    /// The observed value.
    pub observed: f64,
    /// The value the guard expected.
    pub expected: f64,
    /// The guard's score for this reading.
    pub score: f64,
    /// Event time of the first reading the decision looked at.
    pub window_start: i64,
    /// Event time of the last reading the decision looked at.
    pub window_end: i64,
}

/// The per-series decision logic of a guard. The engine calls [`SeriesLogic::observe`] for
/// every reading of a series in event-time order (ties broken by `seq`, then value).
pub trait SeriesLogic: 'static {
    /// What the guard remembers about one series.
    type State: Default + 'static;

    /// Looks at the next reading of a series; `None` when the guard has no opinion yet
    /// (warming up, or the series is not one it watches).
    fn observe(&self, state: &mut Self::State, reading: &Point) -> Option<Verdict>;

    /// Heap and inline bytes one series' state takes, for memory accounting.
    fn state_bytes(&self, state: &Self::State) -> usize {
        let _ = state;
        std::mem::size_of::<Self::State>()
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

/// State of one series: the guard's own, and the alert that is open on it, if any.
struct SeriesSlot<S> {
    logic: S,
    open: Option<CompactString>,
}

/// Runs a guard's [`SeriesLogic`] over a telemetry stream and turns its verdicts into alerts
/// that are raised when the condition starts to hold and cleared when it stops.
pub trait SeriesGuard<'scope> {
    /// Runs `logic` per series and emits raised and cleared alerts.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream, capture::Event};
    /// use vigil_operators::{GuardLabel, Point, Reading, SeriesGuard, Threshold};
    ///
    /// let captured = timely::example(|scope| {
    ///     let readings = vec![
    ///         Reading::new("veh-1", "temp_c", 1_000, 20.0),
    ///         Reading::new("veh-1", "temp_c", 2_000, 99.0),
    ///         Reading::new("veh-1", "temp_c", 3_000, 21.0),
    ///     ];
    ///     let logic = Threshold::new().bound("temp_c", None, Some(90.0));
    ///     let points: Vec<Point> = readings.iter().map(Point::from).collect();
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

    /// As [`SeriesGuard::guard`], also reporting the total state bytes after each step into
    /// `state_bytes` and the number of series into `series`.
    fn guard_core<L: SeriesLogic>(
        self,
        label: GuardLabel,
        logic: L,
        metrics: Option<GuardMetrics>,
    ) -> Stream<'scope, u64, Vec<Alert>>;
}

/// Shared counters a guard updates as it runs: how many series it holds and their state bytes.
#[derive(Clone, Debug, Default)]
pub struct GuardMetrics {
    /// Series with state on this worker.
    pub series: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Bytes of guard state on this worker (slot, map entry and the logic's own state).
    pub state_bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<'scope> SeriesGuard<'scope> for Stream<'scope, u64, Vec<Point>> {
    fn guard<L: SeriesLogic>(self, label: GuardLabel, logic: L) -> Stream<'scope, u64, Vec<Alert>> {
        self.guard_core(label, logic, None)
    }

    fn guard_core<L: SeriesLogic>(
        self,
        label: GuardLabel,
        logic: L,
        metrics: Option<GuardMetrics>,
    ) -> Stream<'scope, u64, Vec<Alert>> {
        let name = format!("Guard({})", label.guard);
        let exchange = Exchange::new(|p: &Point| p.hash);
        self.unary_frontier(exchange, &name, move |_cap, _info| {
            let mut pending: Vec<Point> = Vec::new();
            let mut ready: Vec<Point> = Vec::new();
            let mut held: Option<Capability<u64>> = None;
            let mut series: HashMap<SeriesKey, SeriesSlot<L::State>, BuildSeriesHasher> =
                HashMap::default();
            let mut out: Vec<Alert> = Vec::new();
            let mut last_bound: Option<u64> = Some(0);

            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    if let Some(cap) = cap.retain_least(output.output_index()) {
                        match &held {
                            Some(h) if h.time() <= cap.time() => {}
                            _ => held = Some(cap),
                        }
                    }
                    for batch in data {
                        pending.append(batch);
                    }
                });

                // Everything before the frontier is complete: no reading with an earlier
                // event time can still arrive, because readings travel at the watermark and
                // the watermark never passes a reading's own event time. Readings that
                // arrive later have event times at or past the frontier, so the pending ones
                // only need a look when the frontier moves.
                let bound = frontier.frontier().first().copied();
                if held.is_none() || bound == last_bound {
                    return;
                }
                last_bound = bound;
                match bound {
                    Some(bound) => ready.extend(pending.extract_if(.., |r| (r.ts as u64) < bound)),
                    None => ready.append(&mut pending),
                }
                if !ready.is_empty() {
                    // Ordered by series hash, then event time. Should two series share a hash,
                    // their points interleave, but each series still sees its own in order.
                    ready.sort_unstable_by(Point::guard_order);
                    let mut start = 0;
                    while start < ready.len() {
                        let first = &ready[start];
                        let end = start
                            + ready[start..]
                                .iter()
                                .position(|p| !p.same_series(first))
                                .unwrap_or(ready.len() - start);
                        let key = SeriesKey {
                            hash: first.hash,
                            source: first.source.clone(),
                            name: first.name.clone(),
                        };
                        let slot = series.entry(key).or_insert_with(|| SeriesSlot {
                            logic: L::State::default(),
                            open: None,
                        });
                        for reading in &ready[start..end] {
                            let Some(verdict) = logic.observe(&mut slot.logic, reading) else {
                                continue;
                            };
                            match (&slot.open, verdict.anomalous) {
                                (None, true) => {
                                    let id = alert_id(
                                        &label.guard,
                                        &reading.source,
                                        &reading.name,
                                        reading.ts,
                                    );
                                    out.push(make_alert(
                                        &label,
                                        &id,
                                        reading,
                                        &verdict,
                                        AlertStatus::Raised,
                                    ));
                                    slot.open = Some(id);
                                }
                                (Some(id), false) => {
                                    out.push(make_alert(
                                        &label,
                                        id,
                                        reading,
                                        &verdict,
                                        AlertStatus::Cleared,
                                    ));
                                    slot.open = None;
                                }
                                _ => {}
                            }
                        }
                        start = end;
                    }
                    ready.clear();
                    if let Some(metrics) = &metrics {
                        let bytes: usize = series
                            .values()
                            .map(|slot| {
                                logic.state_bytes(&slot.logic)
                                    + std::mem::size_of::<SeriesSlot<L::State>>()
                                    + std::mem::size_of::<SeriesKey>()
                            })
                            .sum();
                        use std::sync::atomic::Ordering::Relaxed;
                        metrics.series.store(series.len() as u64, Relaxed);
                        metrics.state_bytes.store(bytes as u64, Relaxed);
                    }
                }
                let Some(cap) = held.as_mut() else { return };
                if !out.is_empty() {
                    out.sort_unstable_by(|a, b| (a.ts, &a.alert_id).cmp(&(b.ts, &b.alert_id)));
                    while let Some(first) = out.first() {
                        let ts = first.ts;
                        let run = out.iter().take_while(|a| a.ts == ts).count();
                        let time = cap.delayed(&(ts as u64));
                        output.session(&time).give_iterator(out.drain(..run));
                    }
                }
                match bound {
                    Some(bound) if !pending.is_empty() => cap.downgrade(&bound),
                    _ => held = None,
                }
            }
        })
    }
}

fn make_alert(
    label: &GuardLabel,
    id: &str,
    reading: &Point,
    verdict: &Verdict,
    status: AlertStatus,
) -> Alert {
    Alert {
        alert_id: id.into(),
        guard: label.guard.clone(),
        severity: label.severity.clone(),
        source: reading.source.clone(),
        name: reading.name.clone(),
        ts: reading.ts,
        window_start: verdict.window_start,
        window_end: verdict.window_end,
        observed: verdict.observed,
        expected: verdict.expected,
        score: verdict.score,
        status,
        reaction: label.reaction.clone(),
    }
}
