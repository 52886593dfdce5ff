//! The engine of the whole-field operators: every event in event-time order on one worker,
//! and an evaluation every interval of event time once the frontier has passed it.
//!
//! # Examples
//! The field runs on this engine: fed events at 25 s, 2 s and 1 s, it takes its snapshots at
//! every 10 s of event time, each over the events before it, up to the one after the last
//! event.
//! ```
//! use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
//! use vigil_operators::archaeology::field::{Field, FieldItem, FieldParams};
//! use vigil_operators::{SeriesReading, Reading};
//!
//! let captured = timely::example(|scope| {
//!     let points: Vec<SeriesReading> = [25_000, 2_000, 1_000]
//!         .iter()
//!         .map(|ts| SeriesReading::from(&Reading::new("dev-1", "BLOOM", *ts, 0.5)))
//!         .collect();
//!     let params = FieldParams { every_ms: 10_000, ..FieldParams::default() };
//!     points.to_stream(scope).container::<Vec<_>>().field(params).inner.capture()
//! });
//! let mut snapshots: Vec<(i64, u64)> = captured
//!     .extract()
//!     .into_iter()
//!     .flat_map(|(_, updates)| updates)
//!     .filter_map(|(item, _, diff)| match item {
//!         FieldItem::Snapshot(s) if diff > 0 => Some((s.at, s.events)),
//!         _ => None,
//!     })
//!     .collect();
//! snapshots.sort();
//! assert_eq!(snapshots, [(10_000, 2), (20_000, 2), (30_000, 3)]);
//! ```

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::model::SeriesReading;
use crate::stash::Stash;

/// A computation over all events that reports at intervals of event time.
pub(crate) trait Periodic: 'static {
    /// What its collection holds.
    type Out: differential_dataflow::Data;

    /// The interval of event time between evaluations, ms.
    fn every_ms(&self) -> u64;

    /// The next event, in event-time order (ties by source, name, value).
    fn event(&mut self, point: &SeriesReading, out: &mut Vec<(Self::Out, isize)>);

    /// The evaluation at `at`: over the events before it.
    fn evaluate(&mut self, at: i64, out: &mut Vec<(Self::Out, isize)>);

    /// Where to go on from `next` when evaluations up to `until` are due: a later boundary
    /// when the ones skipped would change nothing that stays.
    fn fast_forward(&self, next: i64, until: i64) -> i64 {
        let _ = until;
        next
    }
}

/// The worker a whole-field operator runs on: two of them on different workers when there
/// are several.
#[derive(Clone, Copy)]
pub(crate) enum On {
    First,
    Last,
}

/// Runs `state` over the points as the frontier passes them, on the worker `on`; its updates
/// form the collection.
pub(crate) fn periodic<'scope, P: Periodic>(
    points: Stream<'scope, u64, Vec<SeriesReading>>,
    name: &str,
    mut state: P,
    on: On,
) -> VecCollection<'scope, u64, P::Out, isize> {
    // The computation is over every event: they meet on one worker.
    let worker = match on {
        On::First => 0,
        On::Last => points.scope().peers() as u64 - 1,
    };
    let exchange = Exchange::new(move |_: &SeriesReading| worker);
    let every = state.every_ms().max(1) as i64;
    points
        .unary_frontier(exchange, name, move |_cap, _info| {
            let mut stash = Stash::new();
            let mut out: Vec<(P::Out, isize)> = Vec::new();
            // The next evaluation, once an event has come, and the newest event time.
            let mut next: Option<i64> = None;
            let mut last_ts = i64::MIN;
            let evaluate_before =
                move |state: &mut P, next: &mut Option<i64>, until: i64, out: &mut Vec<_>| {
                    let Some(mut at) = *next else { return };
                    while at < until {
                        at = state.fast_forward(at, until);
                        if at >= until {
                            break;
                        }
                        state.evaluate(at, out);
                        at += every;
                    }
                    *next = Some(at);
                };
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    stash.receive(cap.retain_least(output.output_index()), data)
                });
                let bound = frontier.frontier().first().copied();
                let mut ready: Vec<SeriesReading> = stash.ready(bound, |e| e.ts);
                ready.sort_by(|a, b| {
                    (a.ts, &a.source, &a.name)
                        .cmp(&(b.ts, &b.source, &b.name))
                        .then(a.value.total_cmp(&b.value))
                });
                for p in &ready {
                    if next.is_none() {
                        next = Some((p.ts.div_euclid(every) + 1) * every);
                    }
                    // The evaluations this event comes after.
                    evaluate_before(&mut state, &mut next, p.ts + 1, &mut out);
                    state.event(p, &mut out);
                    last_ts = last_ts.max(p.ts);
                }
                match bound {
                    Some(b) => evaluate_before(&mut state, &mut next, b as i64, &mut out),
                    // The end: the evaluation after the last event.
                    None if last_ts > i64::MIN => {
                        let until = (last_ts.div_euclid(every) + 1) * every + 1;
                        evaluate_before(&mut state, &mut next, until, &mut out);
                    }
                    None => {}
                }
                let Some(cap) = stash.held.as_mut() else {
                    out.clear();
                    return;
                };
                if !out.is_empty() {
                    let time = *cap.time();
                    output
                        .session(&*cap)
                        .give_iterator(out.drain(..).map(|(item, d)| (item, time, d)));
                }
                match bound {
                    // Once events have come, evaluations stay due as time moves on.
                    Some(b) if !stash.pending.is_empty() || next.is_some() => {
                        if *cap.time() < b {
                            cap.downgrade(&b);
                        }
                    }
                    _ => stash.held = None,
                }
            }
        })
        .as_collection()
}
