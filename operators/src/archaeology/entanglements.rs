//! Entanglements: pairs of sources whose events come together far more often than chance.

use std::collections::{HashMap, VecDeque};

use compact_str::CompactString;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

use super::periodic::{Periodic, periodic};
use crate::model::{Point, Record, field, ts_field};

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
    pub a: String,
    /// The second source.
    pub b: String,
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
    /// use vigil_operators::{Point, Reading};
    ///
    /// let captured = timely::example(|scope| {
    ///     // dev-1 echoes dev-0 half a second later; dev-2 keeps its own time.
    ///     let mut points = Vec::new();
    ///     for i in 0..40i64 {
    ///         points.push(Point::from(&Reading::new("dev-0", "BLOOM", i * 7_000, 1.0)));
    ///         points.push(Point::from(&Reading::new("dev-1", "BLOOM", i * 7_000 + 500, 1.0)));
    ///         points.push(Point::from(&Reading::new("dev-2", "BLOOM", i * 11_000 + 3_000, 1.0)));
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

/// The running counts. Sources are numbered as they come; a number is freed for reuse once
/// the source has no event and no pair left in the window, so state follows the sources
/// active in the window, not every source ever seen.
struct State {
    params: EntangleParams,
    ids: HashMap<CompactString, u32>,
    names: Vec<CompactString>,
    /// Numbers free for reuse.
    free: Vec<u32>,
    /// Per source, the pairs of the window it is in.
    pair_refs: Vec<u64>,
    /// Events within `delta_ms` of the newest: (ts, source).
    recent: VecDeque<(i64, u32)>,
    /// Events of the window, and the count per source.
    events: VecDeque<(i64, u32)>,
    per_source: Vec<u64>,
    /// Pairs that came together in the window (at the later event's time), and their counts.
    pairs: VecDeque<(i64, Pair)>,
    together: PairMap<u64>,
    /// What the collection holds now.
    current: PairMap<Entanglement>,
}

impl State {
    fn new(params: EntangleParams) -> Self {
        Self {
            params,
            ids: HashMap::new(),
            names: Vec::new(),
            free: Vec::new(),
            pair_refs: Vec::new(),
            recent: VecDeque::new(),
            events: VecDeque::new(),
            per_source: Vec::new(),
            pairs: VecDeque::new(),
            together: PairMap::default(),
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

    fn record(&mut self, p: &Point) {
        let delta = self.params.delta_ms as i64;
        while self
            .recent
            .front()
            .is_some_and(|(ts, _)| *ts < p.ts - delta)
        {
            self.recent.pop_front();
        }
        let me = self.id(&p.source);
        for &(_, other) in &self.recent {
            if other == me {
                continue;
            }
            let key = pair(other, me);
            self.pair_refs[other as usize] += 1;
            self.pair_refs[me as usize] += 1;
            *self.together.entry(key).or_default() += 1;
            self.pairs.push_back((p.ts, key));
        }
        self.recent.push_back((p.ts, me));
        self.events.push_back((p.ts, me));
        self.per_source[me as usize] += 1;
    }

    fn judge(&mut self, at: i64, out: &mut Vec<(Entanglement, isize)>) {
        let from = at - self.params.window_ms as i64;
        while let Some(&(ts, source)) = self.events.front() {
            if ts >= from {
                break;
            }
            self.per_source[source as usize] -= 1;
            self.events.pop_front();
            self.release_if_idle(source);
        }
        while let Some(&(ts, key)) = self.pairs.front() {
            if ts >= from {
                break;
            }
            if let Some(n) = self.together.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.together.remove(&key);
                }
            }
            self.pairs.pop_front();
            for id in [(key >> 32) as u32, key as u32] {
                self.pair_refs[id as usize] -= 1;
                self.release_if_idle(id);
            }
        }
        // Chance is what the average pair of sources shows: the share of all cross-source
        // event pairs that came together. It carries the time grid and any activity all sources
        // share, which a formula from δ and the window alone would take for entanglement.
        let total: f64 = self.per_source.iter().map(|n| *n as f64).sum();
        let squares: f64 = self.per_source.iter().map(|n| (*n as f64).powi(2)).sum();
        let all_pairs = (total * total - squares) / 2.0;
        let chance = if all_pairs > 0.0 {
            self.pairs.len() as f64 / all_pairs
        } else {
            0.0
        };
        let mut now: PairMap<Entanglement> = PairMap::default();
        for (&key, &count) in &self.together {
            if count < self.params.min_count {
                continue;
            }
            let (a, b) = ((key >> 32) as usize, (key & 0xffff_ffff) as usize);
            let expected = self.per_source[a] as f64 * self.per_source[b] as f64 * chance;
            let lift = if expected > 0.0 {
                count as f64 / expected
            } else {
                f64::INFINITY
            };
            if lift < self.params.min_lift {
                continue;
            }
            let since = self.current.get(&key).map_or(at, |e| e.since);
            let (a, b) = (&self.names[a], &self.names[b]);
            let (a, b) = if a < b { (a, b) } else { (b, a) };
            now.insert(
                key,
                Entanglement {
                    a: a.to_string(),
                    b: b.to_string(),
                    together: count,
                    lift_milli: (lift.min(1e12) * 1000.0).round() as u64,
                    since,
                },
            );
        }
        for (key, old) in &self.current {
            if now.get(key) != Some(old) {
                out.push((old.clone(), -1));
            }
        }
        for (key, new) in &now {
            if self.current.get(key) != Some(new) {
                out.push((new.clone(), 1));
            }
        }
        self.current = now;
    }
}

impl Periodic for State {
    type Out = Entanglement;

    fn every_ms(&self) -> u64 {
        self.params.every_ms
    }

    fn event(&mut self, point: &Point, _out: &mut Vec<(Entanglement, isize)>) {
        self.record(point);
    }

    fn evaluate(&mut self, at: i64, out: &mut Vec<(Entanglement, isize)>) {
        self.judge(at, out);
    }

    /// Once everything has left the window, the evaluations up to `until` find nothing.
    fn fast_forward(&self, next: i64, until: i64) -> i64 {
        if self.events.is_empty() && self.current.is_empty() && next < until {
            let every = self.params.every_ms.max(1) as i64;
            next + (until - next + every - 1) / every * every
        } else {
            next
        }
    }
}

impl<'scope> Entanglements<'scope> for Stream<'scope, u64, Vec<Point>> {
    fn entanglements(
        self,
        params: EntangleParams,
    ) -> VecCollection<'scope, u64, Entanglement, isize> {
        // An event's pairs are counted while it is in the window.
        let params = EntangleParams {
            window_ms: params.window_ms.max(params.delta_ms),
            ..params
        };
        periodic(self, "Entanglements", State::new(params))
    }
}
