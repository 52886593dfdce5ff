//! What the archaeology tests share: running an operator over readings at 1 or 2 workers.

#![allow(clippy::unwrap_used, dead_code)] // Tests fail loudly on purpose; not every test uses all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use timely::dataflow::operators::capture::Extract;
use timely::dataflow::operators::{Capture, Input, Probe};
use vigil_operators::{Point, Reading};

/// Runs `build` over the events as points on `workers` workers, in batches sent at their
/// watermark; returns every update of the collection it builds.
pub fn run_points<T, F>(events: &[Reading], workers: usize, build: F) -> Vec<(T, isize)>
where
    T: differential_dataflow::ExchangeData + std::hash::Hash,
    F: Fn(
            timely::dataflow::Stream<'_, u64, Vec<Point>>,
        ) -> differential_dataflow::VecCollection<'_, u64, T, isize>
        + Send
        + Sync
        + 'static,
{
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|r| r.ts);
    let batches: Arc<Vec<Vec<Reading>>> = Arc::new(sorted.chunks(29).map(<[_]>::to_vec).collect());
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    let build = Arc::new(build);
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let probe = timely::dataflow::ProbeHandle::new();
        let build = build.clone();
        let (mut input, captured) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, points) = scope.new_input::<Vec<Point>>();
            let collection = build(points);
            collection.inner.clone().probe_with(&probe);
            (input, collection.inner.capture())
        });
        let mine: Vec<&Vec<Reading>> = batches.iter().skip(index).step_by(peers).collect();
        for (k, batch) in mine.iter().enumerate() {
            input.send_batch(&mut batch.iter().map(Point::from).collect());
            if let Some(next) = mine.get(k + 1) {
                let low = next.iter().map(|r| r.ts).min().unwrap_or(0).max(0) as u64;
                input.advance_to(low.max(*input.time()));
                while probe.less_than(input.time()) {
                    worker.step();
                }
            }
        }
        drop(input);
        while worker.step_or_park(None) {}
        let updates: Vec<_> = captured
            .extract()
            .into_iter()
            .flat_map(|(_, d)| d)
            .collect();
        sink.lock()
            .unwrap()
            .extend(updates.into_iter().map(|(item, _, d)| (item, d)));
    })
    .unwrap();
    std::mem::take(&mut *out.lock().unwrap())
}

/// The net collection: every record's diffs summed, each sum 0 or 1.
pub fn net<T: Ord + Clone + std::fmt::Debug>(updates: &[(T, isize)]) -> BTreeSet<T> {
    let mut counts: BTreeMap<&T, isize> = BTreeMap::new();
    for (item, d) in updates {
        *counts.entry(item).or_default() += d;
    }
    counts
        .into_iter()
        .filter(|(item, c)| {
            assert!(*c == 0 || *c == 1, "{item:?} counted {c}");
            *c == 1
        })
        .map(|(item, _)| item.clone())
        .collect()
}
