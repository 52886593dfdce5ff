//! The field: a bounded summary of all activity — the last high-intensity events ("memory
//! particles"), the last snapshots of the whole field, its resonance and its active sources.

use std::collections::VecDeque;

use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

use super::FastMap;
use super::periodic::{On, Periodic, periodic};
use crate::model::SeriesReading;

/// What the field keeps, and over what time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FieldParams {
    /// Resonance and active sources are taken over this much event time before a snapshot.
    pub window_ms: u64,
    /// A snapshot every this much event time.
    pub every_ms: u64,
    /// Events at least this intense are memory particles.
    pub high_intensity: f64,
    /// How many memory particles are kept: the newest.
    pub particles: usize,
    /// How many snapshots are kept: the newest.
    pub snapshots: usize,
}

impl Default for FieldParams {
    fn default() -> Self {
        Self {
            window_ms: 60_000,
            every_ms: 10_000,
            high_intensity: 0.8,
            particles: 1000,
            snapshots: 10,
        }
    }
}

/// The whole field at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldSnapshot {
    /// The snapshot's time: it covers events in [`at` − window, `at`).
    pub at: i64,
    /// Mean intensity of those events (0 when there are none).
    pub resonance: f64,
    /// Sources with an event among them.
    pub active_sources: u64,
    /// How many events.
    pub events: u64,
}

/// One high-intensity event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Particle {
    /// Event time, epoch ms.
    pub ts: i64,
    /// The device.
    pub source: compact_str::CompactString,
    /// The event (`BLOOM`, …).
    pub name: compact_str::CompactString,
    /// Its intensity.
    pub intensity: f64,
}

/// What the field collection holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FieldItem {
    /// One of the newest high-intensity events.
    Particle(Particle),
    /// One of the newest snapshots.
    Snapshot(FieldSnapshot),
}

// Differential needs a total order; floats are compared by `total_cmp`.
impl Eq for FieldItem {}

impl PartialOrd for FieldItem {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for FieldItem {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            FieldItem::Particle(p) => {
                (0u8, p.ts, &p.source, &p.name, p.intensity.to_bits()).hash(state)
            }
            FieldItem::Snapshot(s) => {
                (1u8, s.at, s.events, s.active_sources, s.resonance.to_bits()).hash(state)
            }
        }
    }
}

impl Ord for FieldItem {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use FieldItem::{Particle as P, Snapshot as S};
        match (self, other) {
            (P(a), P(b)) => (a.ts, &a.source, &a.name)
                .cmp(&(b.ts, &b.source, &b.name))
                .then(a.intensity.total_cmp(&b.intensity)),
            (S(a), S(b)) => (a.at, a.events, a.active_sources)
                .cmp(&(b.at, b.events, b.active_sources))
                .then(a.resonance.total_cmp(&b.resonance)),
            (P(_), S(_)) => std::cmp::Ordering::Less,
            (S(_), P(_)) => std::cmp::Ordering::Greater,
        }
    }
}

/// Keeps the field of a stream of events.
pub trait Field<'scope> {
    /// The collection of the newest `particles` high-intensity events and the newest
    /// `snapshots` field snapshots, one every `every_ms` of event time once the frontier has
    /// passed it (and, at the end of the input, the one after the last event). Whatever the
    /// input's length, the state is the window's events and those two bounded lists.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
    /// use vigil_operators::archaeology::field::{Field, FieldItem, FieldParams};
    /// use vigil_operators::{SeriesReading, Reading};
    ///
    /// let captured = timely::example(|scope| {
    ///     let events = [("dev-1", 1_000, 0.9), ("dev-2", 2_000, 0.3), ("dev-1", 12_000, 0.95)];
    ///     let points: Vec<SeriesReading> = events
    ///         .iter()
    ///         .map(|(s, ts, v)| SeriesReading::from(&Reading::new(s, "BLOOM", *ts, *v)))
    ///         .collect();
    ///     let params = FieldParams { every_ms: 10_000, ..FieldParams::default() };
    ///     points.to_stream(scope).container::<Vec<_>>().field(params).consolidate().inner.capture()
    /// });
    /// let items: Vec<_> = captured.extract().into_iter().flat_map(|(_, d)| d).collect();
    /// let particles = items.iter().filter(|(i, _, _)| matches!(i, FieldItem::Particle(_))).count();
    /// assert_eq!(particles, 2);
    /// ```
    fn field(self, params: FieldParams) -> VecCollection<'scope, u64, FieldItem, isize>;
}

/// The field's running state.
struct State {
    params: FieldParams,
    /// Events of the window: (ts, source, intensity), in time order.
    window: VecDeque<(i64, compact_str::CompactString, f64)>,
    per_source: FastMap<compact_str::CompactString, u64>,
    particles: VecDeque<Particle>,
    snapshots: VecDeque<FieldSnapshot>,
}

impl State {
    fn snapshot(&mut self, at: i64, out: &mut Vec<(FieldItem, isize)>) {
        let from = at.saturating_sub(self.params.window_ms as i64);
        while let Some((ts, source, _)) = self.window.front() {
            if *ts >= from {
                break;
            }
            if let Some(n) = self.per_source.get_mut(source) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(source);
                }
            }
            self.window.pop_front();
        }
        let events = self.window.len() as u64;
        let snapshot = FieldSnapshot {
            at,
            // Summed afresh: a running sum drifts with rounding over a long input.
            resonance: if events == 0 {
                0.0
            } else {
                self.window.iter().map(|(_, _, v)| v).sum::<f64>() / events as f64
            },
            active_sources: self.per_source.len() as u64,
            events,
        };
        self.snapshots.push_back(snapshot.clone());
        out.push((FieldItem::Snapshot(snapshot), 1));
        if self.snapshots.len() > self.params.snapshots
            && let Some(old) = self.snapshots.pop_front()
        {
            out.push((FieldItem::Snapshot(old), -1));
        }
    }

    fn record(&mut self, p: &SeriesReading, out: &mut Vec<(FieldItem, isize)>) {
        self.window.push_back((p.ts, p.source.clone(), p.value));
        *self.per_source.entry(p.source.clone()).or_default() += 1;
        if p.value >= self.params.high_intensity {
            let particle = Particle {
                ts: p.ts,
                source: p.source.clone(),
                name: p.name.clone(),
                intensity: p.value,
            };
            self.particles.push_back(particle.clone());
            out.push((FieldItem::Particle(particle), 1));
            if self.particles.len() > self.params.particles
                && let Some(old) = self.particles.pop_front()
            {
                out.push((FieldItem::Particle(old), -1));
            }
        }
    }
}

impl Periodic for State {
    type Out = FieldItem;

    fn every_ms(&self) -> u64 {
        self.params.every_ms
    }

    fn event(&mut self, point: &SeriesReading, out: &mut Vec<(FieldItem, isize)>) {
        self.record(point, out);
    }

    fn evaluate(&mut self, at: i64, out: &mut Vec<(FieldItem, isize)>) {
        self.snapshot(at, out);
    }

    /// Of a long run of due snapshots only the newest that are kept matter; the others would
    /// be retracted at once.
    fn fast_forward(&self, next: i64, until: i64) -> i64 {
        let every = self.params.every_ms.max(1) as i64;
        let due = (until - 1 - next) / every + 1;
        next + (due - self.params.snapshots as i64).max(0) * every
    }
}

impl<'scope> Field<'scope> for Stream<'scope, u64, Vec<SeriesReading>> {
    fn field(self, params: FieldParams) -> VecCollection<'scope, u64, FieldItem, isize> {
        let state = State {
            params,
            window: VecDeque::new(),
            per_source: FastMap::default(),
            particles: VecDeque::new(),
            snapshots: VecDeque::new(),
        };
        periodic(self, "Field", state, On::Last)
    }
}
