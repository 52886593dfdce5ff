//! Entanglements: pairs of sources whose events come together far more often than chance.

use std::collections::{HashMap, VecDeque};

use super::FastMap;

use compact_str::CompactString;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

use super::periodic::{On, Periodic, periodic};
use crate::model::{Record, SeriesReading, field, ts_field};

/// When two sources count as entangled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EntangleParams {
    /// Two events come together when at most this far apart.
    pub delta_ms: u64,
    /// Counted over this much event time before each evaluation (at least `delta_ms`).
    pub window_ms: u64,
    /// Evaluated every this much event time.
    pub every_ms: u64,
    /// At least this many events together.
    pub min_count: u64,
    /// At least this many times what independent sources would give.
    pub min_lift: f64,
}

impl Default for EntangleParams {
    fn default() -> Self {
        Self {
            delta_ms: 1_500,
            window_ms: 600_000,
            every_ms: 10_000,
            min_count: 5,
            min_lift: 1.5,
        }
    }
}

/// Two sources that move together.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entanglement {
    /// The first source (by name).
    pub a: CompactString,
    /// The second source.
    pub b: CompactString,
    /// Events of the two within `delta_ms` of each other, in the window.
    pub together: u64,
    /// How many times more often than independent sources would, in thousandths.
    pub lift_milli: u64,
    /// The evaluation from which they have been entangled without a break, epoch ms.
    #[serde(with = "crate::time::epoch_ms")]
    pub since: i64,
}

impl Record for Entanglement {
    const TABLE: &'static str = "entanglements";

    fn fields() -> Vec<arrow::datatypes::FieldRef> {
        use arrow::datatypes::DataType;
        vec![
            field("a", DataType::Utf8, false),
            field("b", DataType::Utf8, false),
            field("together", DataType::UInt64, false),
            field("lift_milli", DataType::UInt64, false),
            ts_field("since", false),
        ]
    }

    fn event_time(&self) -> i64 {
        self.since
    }
}

/// Finds the entangled pairs of a stream of events.
pub trait Entanglements<'scope> {
    /// The collection of entangled pairs, evaluated every `every_ms` of event time once the
    /// frontier has passed it: pairs with at least `min_count` events within `delta_ms` of
    /// each other in the last `window_ms`, and a lift of at least `min_lift`: those against
    /// what the average pair shows for sources with as many events (`n_a · n_b · p`, with `p`
    /// the share of all cross-source event pairs in the window that came together). A pair leaves the collection when it drifts apart. State is the
    /// window's events and pairs.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
    /// use vigil_operators::archaeology::entanglements::{EntangleParams, Entanglements};
    /// use vigil_operators::{SeriesReading, Reading};
    ///
    /// let captured = timely::example(|scope| {
    ///     // dev-1 echoes dev-0 half a second later; dev-2 keeps its own time.
    ///     let mut points = Vec::new();
    ///     for i in 0..40i64 {
    ///         points.push(SeriesReading::from(&Reading::new("dev-0", "BLOOM", i * 7_000, 1.0)));
    ///         points.push(SeriesReading::from(&Reading::new("dev-1", "BLOOM", i * 7_000 + 500, 1.0)));
    ///         points.push(SeriesReading::from(&Reading::new("dev-2", "BLOOM", i * 11_000 + 3_000, 1.0)));
    ///     }
    ///     let params = EntangleParams { window_ms: 300_000, min_lift: 2.0, ..EntangleParams::default() };
    ///     points.to_stream(scope).container::<Vec<_>>().entanglements(params).consolidate().inner.capture()
    /// });
    /// let pairs: Vec<_> = captured.extract().into_iter().flat_map(|(_, d)| d).collect();
    /// assert_eq!(pairs.len(), 1);
    /// assert_eq!((pairs[0].0.a.as_str(), pairs[0].0.b.as_str()), ("dev-0", "dev-1"));
    /// ```
    fn entanglements(
        self,
        params: EntangleParams,
    ) -> VecCollection<'scope, u64, Entanglement, isize>;
}

/// Two sources by their ids, the smaller in the high half.
type Pair = u64;

fn pair(a: u32, b: u32) -> Pair {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    (u64::from(lo) << 32) | u64::from(hi)
}

/// A multiplicative hasher for pair keys, which are already well spread integers.
#[derive(Default)]
struct PairHasher(u64);

impl std::hash::Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        self.0 ^= self.0 >> 32;
    }
}

type PairMap<V> = HashMap<Pair, V, std::hash::BuildHasherDefault<PairHasher>>;

/// Sources numbered below this have their pairs counted in a triangular array (at most
/// 2,096,128 cells); pairs with a higher number in a hash map.
const DENSE_IDS: u32 = 2_048;

/// Counts per pair of sources: in a triangular array indexed by the pair while both numbers
/// are below [`DENSE_IDS`], which takes no hashing, and in a hash map beyond.
struct PairCounts<C> {
    /// Ids below this are in `dense` ([`DENSE_IDS`] but in tests).
    limit: u32,
    /// Cell `hi · (hi − 1) / 2 + lo`, for the ids seen so far.
    dense: Vec<C>,
    sparse: PairMap<C>,
}

impl<C: Copy + Default + PartialEq> PairCounts<C> {
    fn new(limit: u32) -> Self {
        Self {
            limit,
            dense: Vec::new(),
            sparse: PairMap::default(),
        }
    }

    /// Makes room for pairs of ids below `ids`.
    fn grow(&mut self, ids: usize) {
        let ids = ids.min(self.limit as usize);
        let cells = ids * ids.saturating_sub(1) / 2;
        if self.dense.len() < cells {
            self.dense.resize(cells, C::default());
        }
    }

    /// The cell of a pair in the triangular array, if both its ids are below the limit.
    fn cell(&self, key: Pair) -> Option<usize> {
        let (lo, hi) = ((key >> 32) as usize, (key & 0xffff_ffff) as usize);
        (hi < self.limit as usize).then(|| hi * hi.saturating_sub(1) / 2 + lo)
    }

    fn get_mut(&mut self, key: Pair) -> &mut C {
        match self.cell(key) {
            Some(i) => &mut self.dense[i],
            None => self.sparse.entry(key).or_default(),
        }
    }

    fn get(&self, key: Pair) -> C {
        match self.cell(key) {
            Some(i) => self.dense[i],
            None => self.sparse.get(&key).copied().unwrap_or_default(),
        }
    }

    /// Sets the count of a pair to zero, and forgets it.
    fn clear(&mut self, key: Pair) {
        match self.cell(key) {
            Some(i) => self.dense[i] = C::default(),
            None => {
                self.sparse.remove(&key);
            }
        }
    }

    /// Every pair with a count other than zero.
    fn for_each(&self, mut f: impl FnMut(Pair, C)) {
        let mut i = 0;
        'rows: for hi in 1..self.limit {
            for lo in 0..hi {
                let Some(&n) = self.dense.get(i) else {
                    break 'rows;
                };
                if n != C::default() {
                    f(pair(lo, hi), n);
                }
                i += 1;
            }
        }
        for (&key, &n) in &self.sparse {
            if n != C::default() {
                f(key, n);
            }
        }
    }
}

/// The running counts. Sources are numbered as they come; a number is freed for reuse once
/// the source has no event and no pair left in the window, so state follows the sources
/// active in the window, not every source ever seen.
///
/// Pairs are counted per slot of event time (the greatest common divisor of the window and
/// the interval between judgements, so that every judgement's window is whole slots): an event
/// costs one count per event it comes together with, and each slot is added to and later taken
/// from the window's counts once per distinct pair.
struct State {
    params: EntangleParams,
    ids: FastMap<CompactString, u32>,
    names: Vec<CompactString>,
    /// Numbers free for reuse.
    free: Vec<u32>,
    /// Per source, the pairs of `together` it is in.
    pair_refs: Vec<u32>,
    /// Events within `delta_ms` of the newest: (ts, source).
    recent: VecDeque<(i64, u32)>,
    /// Events of the window, and the count per source.
    events: VecDeque<(i64, u32)>,
    per_source: Vec<u64>,
    /// The width of a slot, ms.
    slot_ms: i64,
    /// The slot being filled, if any: its number; its counts are in `open`, and the pairs
    /// counted in `opened`.
    open_slot: Option<i64>,
    open: PairCounts<u32>,
    opened: Vec<Pair>,
    /// The closed slots of the window, oldest first, whose counts are in `together`.
    slots: VecDeque<(i64, Vec<(Pair, u32)>)>,
    /// Emptied slot lists, kept for reuse.
    spare: Vec<Vec<(Pair, u32)>>,
    /// Pairs that came together in the window's closed slots, and their counts.
    together: PairCounts<u64>,
    /// The sum of `together`: every coming together of two events in the window.
    occurrences: u64,
    /// What the collection holds now, and the judgement that last confirmed it.
    current: PairMap<(Entanglement, i64)>,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl State {
    /// Pairs of ids below `dense_ids` are counted in arrays ([`DENSE_IDS`] but in tests).
    fn new(params: EntangleParams, dense_ids: u32) -> Self {
        let window = params.window_ms.max(1) as i64;
        let every = params.every_ms.max(1) as i64;
        Self {
            params,
            ids: FastMap::default(),
            names: Vec::new(),
            free: Vec::new(),
            pair_refs: Vec::new(),
            recent: VecDeque::new(),
            events: VecDeque::new(),
            per_source: Vec::new(),
            slot_ms: gcd(window, every),
            open_slot: None,
            open: PairCounts::new(dense_ids),
            opened: Vec::new(),
            slots: VecDeque::new(),
            spare: Vec::new(),
            together: PairCounts::new(dense_ids),
            occurrences: 0,
            current: PairMap::default(),
        }
    }

    fn id(&mut self, source: &CompactString) -> u32 {
        if let Some(id) = self.ids.get(source) {
            return *id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = source.clone();
                id
            }
            None => {
                self.names.push(source.clone());
                self.per_source.push(0);
                self.pair_refs.push(0);
                self.open.grow(self.names.len());
                self.together.grow(self.names.len());
                (self.names.len() - 1) as u32
            }
        };
        self.ids.insert(source.clone(), id);
        id
    }

    /// Frees the number of a source with nothing left in the window.
    fn release_if_idle(&mut self, id: u32) {
        let i = id as usize;
        if self.per_source[i] == 0 && self.pair_refs[i] == 0 {
            self.ids.remove(&self.names[i]);
            self.free.push(id);
        }
    }

    fn record(&mut self, p: &SeriesReading) {
        let delta = self.params.delta_ms as i64;
        while self
            .recent
            .front()
            .is_some_and(|(ts, _)| *ts < p.ts - delta)
        {
            self.recent.pop_front();
        }
        let me = self.id(&p.source);
        // A late event counts in the newest slot: slots leave the window in order.
        let newest = self.open_slot.or(self.slots.back().map(|(s, _)| *s));
        let slot = newest.map_or(p.ts.div_euclid(self.slot_ms), |n| {
            n.max(p.ts.div_euclid(self.slot_ms))
        });
        if self.open_slot.is_some_and(|s| s != slot) {
            self.close_slot();
        }
        self.open_slot = Some(slot);
        for &(_, other) in &self.recent {
            if other != me {
                let key = pair(other, me);
                let n = self.open.get_mut(key);
                if *n == 0 {
                    self.opened.push(key);
                }
                *n += 1;
            }
        }
        self.recent.push_back((p.ts, me));
        self.events.push_back((p.ts, me));
        self.per_source[me as usize] += 1;
    }

    /// Adds the open slot's pairs to the window's counts.
    fn close_slot(&mut self) {
        let Some(slot) = self.open_slot.take() else {
            return;
        };
        let mut counts = self.spare.pop().unwrap_or_default();
        for key in self.opened.drain(..) {
            let n = self.open.get(key);
            self.open.clear(key);
            counts.push((key, n));
            let total = self.together.get_mut(key);
            if *total == 0 {
                self.pair_refs[(key >> 32) as usize] += 1;
                self.pair_refs[(key & 0xffff_ffff) as usize] += 1;
            }
            *total += u64::from(n);
            self.occurrences += u64::from(n);
        }
        self.slots.push_back((slot, counts));
    }

    /// Takes the slots and events before `from` out of the window.
    fn expire(&mut self, from: i64) {
        while let Some(&(ts, source)) = self.events.front() {
            if ts >= from {
                break;
            }
            self.per_source[source as usize] -= 1;
            self.events.pop_front();
            self.release_if_idle(source);
        }
        while self
            .slots
            .front()
            .is_some_and(|(slot, _)| slot.saturating_add(1).saturating_mul(self.slot_ms) <= from)
        {
            let Some((_, mut counts)) = self.slots.pop_front() else {
                break;
            };
            for &(key, n) in &counts {
                self.occurrences -= u64::from(n);
                let total = self.together.get_mut(key);
                *total -= u64::from(n);
                if *total == 0 {
                    self.together.clear(key);
                    for id in [(key >> 32) as u32, key as u32] {
                        self.pair_refs[id as usize] -= 1;
                        self.release_if_idle(id);
                    }
                }
            }
            counts.clear();
            self.spare.push(counts);
        }
    }

    fn judge(&mut self, at: i64, out: &mut Vec<(Entanglement, isize)>) {
        self.close_slot();
        self.expire(at - self.params.window_ms as i64);
        // Chance is what the average pair of sources shows: the share of all cross-source
        // event pairs that came together. It carries the time grid and any activity all sources
        // share, which a formula from δ and the window alone would take for entanglement.
        let total: f64 = self.per_source.iter().map(|n| *n as f64).sum();
        let squares: f64 = self.per_source.iter().map(|n| (*n as f64).powi(2)).sum();
        let all_pairs = (total * total - squares) / 2.0;
        let chance = if all_pairs > 0.0 {
            self.occurrences as f64 / all_pairs
        } else {
            0.0
        };
        let Self {
            params,
            names,
            per_source,
            together,
            current,
            ..
        } = self;
        together.for_each(|key, count| {
            if count < params.min_count {
                return;
            }
            let (a, b) = ((key >> 32) as usize, (key & 0xffff_ffff) as usize);
            let expected = per_source[a] as f64 * per_source[b] as f64 * chance;
            let lift = if expected > 0.0 {
                count as f64 / expected
            } else {
                f64::INFINITY
            };
            if lift < params.min_lift {
                return;
            }
            let lift_milli = (lift.min(1e12) * 1000.0).round() as u64;
            match current.get_mut(&key) {
                Some((old, judged)) => {
                    *judged = at;
                    if (old.together, old.lift_milli) != (count, lift_milli) {
                        out.push((old.clone(), -1));
                        old.together = count;
                        old.lift_milli = lift_milli;
                        out.push((old.clone(), 1));
                    }
                }
                None => {
                    let (a, b) = (&names[a], &names[b]);
                    let (a, b) = if a < b { (a, b) } else { (b, a) };
                    let new = Entanglement {
                        a: a.clone(),
                        b: b.clone(),
                        together: count,
                        lift_milli,
                        since: at,
                    };
                    out.push((new.clone(), 1));
                    current.insert(key, (new, at));
                }
            }
        });
        // Pairs this judgement did not confirm have drifted apart.
        current.retain(|_, (old, judged)| {
            let kept = *judged == at;
            if !kept {
                out.push((old.clone(), -1));
            }
            kept
        });
    }
}

impl Periodic for State {
    type Out = Entanglement;

    fn every_ms(&self) -> u64 {
        self.params.every_ms
    }

    fn event(&mut self, point: &SeriesReading, _out: &mut Vec<(Entanglement, isize)>) {
        self.record(point);
    }

    fn evaluate(&mut self, at: i64, out: &mut Vec<(Entanglement, isize)>) {
        self.judge(at, out);
    }

    /// Once everything has left the window, the evaluations up to `until` find nothing.
    fn fast_forward(&self, next: i64, until: i64) -> i64 {
        let idle = self.events.is_empty() && self.slots.is_empty() && self.open_slot.is_none();
        if idle && self.current.is_empty() && next < until {
            let every = self.params.every_ms.max(1) as i64;
            next + (until - next + every - 1) / every * every
        } else {
            next
        }
    }
}

impl<'scope> Entanglements<'scope> for Stream<'scope, u64, Vec<SeriesReading>> {
    fn entanglements(
        self,
        params: EntangleParams,
    ) -> VecCollection<'scope, u64, Entanglement, isize> {
        // An event's pairs are counted while it is in the window.
        let params = EntangleParams {
            window_ms: params.window_ms.max(params.delta_ms),
            ..params
        };
        periodic(
            self,
            "Entanglements",
            State::new(params, DENSE_IDS),
            On::First,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many sources, coming and going, in one state whose pairs all fit the arrays and in one
    /// where most go to the hash map: every judgement finds the same.
    #[test]
    fn pairs_in_the_map_count_as_pairs_in_the_arrays() {
        let params = EntangleParams {
            delta_ms: 2_000,
            window_ms: 120_000,
            every_ms: 30_000,
            min_count: 2,
            min_lift: 1.2,
        };
        let mut dense = State::new(params, DENSE_IDS);
        let mut mixed = State::new(params, 5);
        let (mut dense_out, mut mixed_out) = (Vec::new(), Vec::new());
        let mut at = 30_000;
        let mut rng: u64 = 7;
        for i in 0..40_000i64 {
            let ts = i * 60;
            while at <= ts {
                let (mut d, mut m) = (Vec::new(), Vec::new());
                dense.judge(at, &mut d);
                mixed.judge(at, &mut m);
                d.sort();
                m.sort();
                assert_eq!(d, m, "judgement at {at}");
                dense_out.extend(d);
                mixed_out.extend(m);
                at += params.every_ms as i64;
            }
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            // Sources drift: each span of time has its own 30, and some echo others.
            let source = (rng >> 33) % 30 + (ts as u64 / 400_000) * 7;
            let point =
                SeriesReading::from(&crate::Reading::new(&format!("dev-{source}"), "E", ts, 1.0));
            dense.record(&point);
            mixed.record(&point);
            if source.is_multiple_of(5) {
                let echo = format!("dev-{}", source + 1);
                let point = SeriesReading::from(&crate::Reading::new(&echo, "E", ts + 30, 1.0));
                dense.record(&point);
                mixed.record(&point);
            }
        }
        assert!(
            mixed.names.len() > 20,
            "ids beyond the arrays: {}",
            mixed.names.len()
        );
        assert!(!mixed.together.sparse.is_empty() || !mixed.current.is_empty());
        let entangled = dense_out.iter().filter(|(_, d)| *d > 0).count();
        assert!(entangled > 10, "pairs were found: {entangled}");
    }
}
