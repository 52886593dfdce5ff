//! Sequential patterns: runs of event names that recur, in order, in the events of sources.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use compact_str::CompactString;
use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use super::{FastMap, carry};
use crate::guards::snapshot::SnapshotStore;
use crate::model::{Pattern, SeriesReading};
use crate::stash::Stash;

/// Which runs of events count, and which patterns are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceParams {
    /// The longest pattern, in events (at least 2).
    pub max_len: usize,
    /// Events of a pattern follow each other within this much event time.
    pub max_gap_ms: u64,
    /// A pattern is reported once this many distinct sources show it.
    pub min_support: u64,
    /// … and it occurred at least this many times in all.
    pub min_occurrences: u64,
}

impl Default for SequenceParams {
    fn default() -> Self {
        Self {
            max_len: 3,
            max_gap_ms: 3_000,
            min_support: 2,
            min_occurrences: 2,
        }
    }
}

impl SequenceParams {
    /// The longest pattern vigil mines.
    pub const MAX_LEN: usize = 8;

    /// Checks the parameters, saying what to change.
    ///
    /// # Errors
    /// When a pattern could not have two events, or would be longer than [`Self::MAX_LEN`].
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=Self::MAX_LEN).contains(&self.max_len) {
            return Err(format!(
                "max_len is {}: a sequential pattern has 2 to {} events",
                self.max_len,
                Self::MAX_LEN
            ));
        }
        Ok(())
    }
}

/// One occurrence of a run of event names in one source's events.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
struct Occurrence {
    items: Vec<CompactString>,
    source: CompactString,
    start: i64,
    end: i64,
}

/// Finds the sequential patterns of a stream of events.
pub trait Sequences<'scope> {
    /// The collection of frequent sequential patterns. Each source's events are taken in
    /// event-time order (ties by name, then value); a run of 2 to `max_len` consecutive events
    /// of one source, each at most `max_gap_ms` after the one before, is an occurrence of the
    /// pattern of their names. A pattern is in the collection while at least `min_support`
    /// distinct sources show it and it occurred at least `min_occurrences` times; its record
    /// is replaced as new occurrences come (support, occurrences, last seen). Counts are over
    /// the whole history; state is the last `max_len − 1` events of each source active within
    /// the gap, and the counts of the patterns seen.
    ///
    /// Each event updates only the patterns that end at it, once the frontier has passed its
    /// event time: on the source's worker, then on the pattern's.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
    /// use vigil_operators::archaeology::sequences::{SequenceParams, Sequences};
    /// use vigil_operators::{SeriesReading, Reading};
    ///
    /// let captured = timely::example(|scope| {
    ///     let mut points = Vec::new();
    ///     for (i, source) in ["dev-0", "dev-1"].into_iter().enumerate() {
    ///         for (k, name) in ["BREATH", "SPIRAL", "BLOOM"].into_iter().enumerate() {
    ///             let ts = i as i64 * 60_000 + k as i64 * 1_000;
    ///             points.push(SeriesReading::from(&Reading::new(source, name, ts, 1.0)));
    ///         }
    ///     }
    ///     let params = SequenceParams { min_occurrences: 1, ..SequenceParams::default() };
    ///     points.to_stream(scope).container::<Vec<_>>().sequences(params).consolidate().inner.capture()
    /// });
    /// let patterns: Vec<_> = captured.extract().into_iter().flat_map(|(_, d)| d).collect();
    /// // BREATH→SPIRAL, SPIRAL→BLOOM and BREATH→SPIRAL→BLOOM, each in both sources.
    /// assert_eq!(patterns.len(), 3);
    /// assert!(patterns.iter().all(|(p, _, _)| p.support == 2 && p.sources == ["dev-0", "dev-1"]));
    /// ```
    fn sequences(self, params: SequenceParams) -> VecCollection<'scope, u64, Pattern, isize>
    where
        Self: Sized,
    {
        self.sequences_carried(params, None)
    }

    /// [`Sequences::sequences`], carrying its state from the run before through `store` (the
    /// runs in progress and every pattern's counts): a backfill in parts then finds what one
    /// run over the whole would. Readings before the carried state's time are skipped.
    fn sequences_carried(
        self,
        params: SequenceParams,
        store: Option<Arc<dyn SnapshotStore>>,
    ) -> VecCollection<'scope, u64, Pattern, isize>;
}

/// The names the operator's carried state is saved under.
const RUNS: &str = "sequence-runs";
const COUNTS: &str = "sequence-counts";

/// A pattern's counts as carried: items, sources, occurrences, first and last seen.
type CarriedCounts = (Vec<CompactString>, Vec<CompactString>, u64, i64, i64);

/// The last events of a source: (event time, name), oldest first.
type Tail = VecDeque<(i64, CompactString)>;

/// The counts of one pattern, and the record last emitted for it.
#[derive(Default)]
struct Counts {
    sources: BTreeSet<CompactString>,
    occurrences: u64,
    first_seen: i64,
    last_seen: i64,
    emitted: Option<Pattern>,
    /// The time `emitted` was added at: its retraction may not come earlier.
    emitted_at: u64,
    /// Changed since the last emission.
    touched: bool,
}

impl Counts {
    fn record(&self, items: &[CompactString]) -> Pattern {
        Pattern {
            pattern_id: Pattern::id(KIND, None, items),
            kind: KIND.into(),
            items: items.to_vec(),
            support: self.sources.len() as u64,
            occurrences: self.occurrences,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            sources: self
                .sources
                .iter()
                .take(Pattern::LISTED_SOURCES)
                .cloned()
                .collect(),
        }
    }
}

/// The kind of the patterns this operator finds.
pub const KIND: &str = "sequence";

impl<'scope> Sequences<'scope> for Stream<'scope, u64, Vec<SeriesReading>> {
    fn sequences_carried(
        self,
        params: SequenceParams,
        store: Option<Arc<dyn SnapshotStore>>,
    ) -> VecCollection<'scope, u64, Pattern, isize> {
        let params = SequenceParams {
            max_len: params.max_len.clamp(2, SequenceParams::MAX_LEN),
            ..params
        };
        let worker = {
            let scope = self.scope();
            (scope.index(), scope.peers())
        };
        occurrences(self, params, store.clone(), worker)
            .unary_frontier(
                Exchange::new(|o: &Occurrence| items_hash(&o.items)),
                "SequenceCounts",
                move |cap, _info| {
                    let mut store = store;
                    let mut counts: FastMap<Vec<CompactString>, Counts> = FastMap::default();
                    let mut touched: Vec<Vec<CompactString>> = Vec::new();
                    let carried = store.as_deref().and_then(restore).map(|c| c.counts);
                    for (items, sources, occurrences, first_seen, last_seen) in
                        carried.into_iter().flatten().flatten()
                    {
                        if carry::routes_to(items_hash(&items), worker) {
                            touched.push(items.clone());
                            let counts_of = Counts {
                                sources: sources.into_iter().collect(),
                                occurrences,
                                first_seen,
                                last_seen,
                                emitted: None,
                                emitted_at: 0,
                                touched: true,
                            };
                            counts.insert(items, counts_of);
                        }
                    }
                    // Carried patterns are in the collection from the start.
                    let mut initial = (!touched.is_empty()).then_some(cap);
                    move |(input, frontier), output| {
                        if let Some(cap) = initial.take() {
                            let time = *cap.time();
                            let mut session = output.session(&cap);
                            emit(&mut counts, &mut touched, params, time, |u| session.give(u));
                        }
                        input.for_each_stamp(|cap, data| {
                            // Counts are sums, minima and maxima: the order of arrival is free.
                            for occurrence in data.flat_map(|batch| batch.drain(..)) {
                                let c = match counts.get_mut(&occurrence.items) {
                                    Some(c) => c,
                                    None => {
                                        counts.entry(occurrence.items.clone()).or_insert(Counts {
                                            first_seen: occurrence.start,
                                            last_seen: occurrence.end,
                                            ..Counts::default()
                                        })
                                    }
                                };
                                if !c.touched {
                                    c.touched = true;
                                    touched.push(occurrence.items);
                                }
                                c.occurrences += 1;
                                c.first_seen = c.first_seen.min(occurrence.start);
                                c.last_seen = c.last_seen.max(occurrence.end);
                                if !c.sources.contains(&occurrence.source) {
                                    c.sources.insert(occurrence.source);
                                }
                            }
                            let Some(cap) = cap.retain_least(output.output_index()) else {
                                return;
                            };
                            // Occurrences of other workers may arrive at an earlier time than
                            // a record they replace was added at: the change goes out no earlier.
                            let replaced = touched
                                .iter()
                                .filter_map(|items| counts.get(items))
                                .filter(|c| c.emitted.is_some())
                                .map(|c| c.emitted_at)
                                .max();
                            let time = replaced.map_or(*cap.time(), |t| t.max(*cap.time()));
                            let cap = cap.delayed(&time);
                            let mut session = output.session(&cap);
                            emit(&mut counts, &mut touched, params, time, |u| session.give(u));
                        });
                        if frontier.is_empty()
                            && let Some(store) = store.take()
                        {
                            let carried: Vec<CarriedCounts> = counts
                                .iter()
                                .map(|(items, c)| {
                                    let sources = c.sources.iter().cloned().collect();
                                    (
                                        items.clone(),
                                        sources,
                                        c.occurrences,
                                        c.first_seen,
                                        c.last_seen,
                                    )
                                })
                                .collect();
                            carry::save_final(&*store, COUNTS, worker, &carried);
                        }
                    }
                },
            )
            .as_collection()
    }
}

/// Emits the changes of the touched patterns' records at `time`.
fn emit(
    counts: &mut FastMap<Vec<CompactString>, Counts>,
    touched: &mut Vec<Vec<CompactString>>,
    params: SequenceParams,
    time: u64,
    mut give: impl FnMut((Pattern, u64, isize)),
) {
    for items in touched.drain(..) {
        let Some(c) = counts.get_mut(&items) else {
            continue;
        };
        c.touched = false;
        let frequent =
            c.sources.len() as u64 >= params.min_support && c.occurrences >= params.min_occurrences;
        let now = frequent.then(|| c.record(&items));
        if now != c.emitted {
            if let Some(old) = c.emitted.take() {
                give((old, time, -1));
            }
            if let Some(new) = &now {
                give((new.clone(), time, 1));
            }
            c.emitted = now;
            c.emitted_at = time;
        }
    }
}

/// What the run before carried: the runs in progress and the counts, saved by every worker.
struct Carried {
    at: u64,
    runs: Vec<Vec<(CompactString, Tail)>>,
    counts: Vec<Vec<CarriedCounts>>,
}

/// Both halves of the carried state, or neither: counts without the runs' time to skip from
/// would count replayed readings twice.
fn restore(store: &dyn SnapshotStore) -> Option<Carried> {
    let (at, runs) = carry::restore_all(store, RUNS)?;
    let (counts_at, counts) = carry::restore_all(store, COUNTS)?;
    if at != counts_at {
        let error = format!("runs taken at {at}, counts at {counts_at}");
        store.restore_failed(COUNTS, &error);
        return None;
    }
    Some(Carried { at, runs, counts })
}

/// The hash a pattern is exchanged by.
fn items_hash(items: &[CompactString]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for item in items {
        hasher.update(item.as_bytes());
        hasher.update(&[0]);
    }
    hasher.digest()
}

/// The occurrences of runs of 2 to `max_len` events, found on the source's worker in
/// event-time order.
fn occurrences<'scope>(
    points: Stream<'scope, u64, Vec<SeriesReading>>,
    params: SequenceParams,
    store: Option<Arc<dyn SnapshotStore>>,
    worker: (usize, usize),
) -> Stream<'scope, u64, Vec<Occurrence>> {
    let gap = i64::try_from(params.max_gap_ms).unwrap_or(i64::MAX);
    let keep = params.max_len - 1;
    let mut store = store;
    let exchange =
        Exchange::new(|p: &SeriesReading| xxhash_rust::xxh3::xxh3_64(p.source.as_bytes()));
    points.unary_frontier(exchange, "SequenceOccurrences", move |_cap, _info| {
        let mut stash = Stash::new();
        let mut tails: FastMap<CompactString, Tail> = FastMap::default();
        let mut found: Vec<Occurrence> = Vec::new();
        let carried = store.as_deref().and_then(restore);
        // The carried state holds every reading before the time it was saved at.
        let skip_before = carried.as_ref().map_or(i64::MIN, |c| c.at as i64);
        for (source, tail) in carried.into_iter().flat_map(|c| c.runs).flatten() {
            if carry::routes_to(xxhash_rust::xxh3::xxh3_64(source.as_bytes()), worker) {
                tails.insert(source, tail);
            }
        }
        move |(input, frontier), output| {
            input.for_each_stamp(|cap, data| {
                stash.hold(cap.retain_least(output.output_index()));
                for batch in data {
                    stash
                        .pending
                        .extend(batch.drain(..).filter(|p| p.ts >= skip_before));
                }
            });
            let bound = frontier.frontier().first().copied();
            let mut ready: Vec<SeriesReading> = stash.ready(bound, |p| p.ts);
            ready.sort_unstable_by(|a, b| {
                (&a.source, a.ts, &a.name)
                    .cmp(&(&b.source, b.ts, &b.name))
                    .then(a.value.total_cmp(&b.value))
            });
            for p in ready {
                let tail = match tails.get_mut(&p.source) {
                    Some(tail) => tail,
                    None => tails.entry(p.source.clone()).or_default(),
                };
                if tail.back().is_some_and(|(ts, _)| p.ts - ts > gap) {
                    tail.clear();
                }
                for from in 0..tail.len() {
                    let mut items = Vec::with_capacity(tail.len() - from + 1);
                    items.extend(tail.iter().skip(from).map(|(_, name)| name.clone()));
                    items.push(p.name.clone());
                    found.push(Occurrence {
                        items,
                        source: p.source.clone(),
                        start: tail[from].0,
                        end: p.ts,
                    });
                }
                tail.push_back((p.ts, p.name));
                if tail.len() > keep {
                    tail.pop_front();
                }
            }
            // A tail the frontier has left more than the gap behind can extend nothing.
            match bound {
                Some(b) => {
                    tails.retain(|_, t| t.back().is_some_and(|(ts, _)| ts + gap >= b as i64))
                }
                None => {
                    if let Some(store) = store.take() {
                        let carried: Vec<(&CompactString, &Tail)> = tails.iter().collect();
                        carry::save_final(&*store, RUNS, worker, &carried);
                    }
                    tails.clear();
                }
            }
            let Some(cap) = stash.held.as_mut() else {
                found.clear();
                return;
            };
            if !found.is_empty() {
                output.session(&*cap).give_iterator(found.drain(..));
            }
            match bound {
                Some(b) if !stash.pending.is_empty() => {
                    if *cap.time() < b {
                        cap.downgrade(&b);
                    }
                }
                _ => stash.held = None,
            }
        }
    })
}
