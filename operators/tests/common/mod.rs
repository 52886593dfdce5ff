//! What the archaeology tests share: running an operator over readings at 1 or 2 workers.

#![allow(clippy::unwrap_used, dead_code)] // Tests fail loudly on purpose; not every test uses all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use timely::dataflow::operators::capture::Extract;
use timely::dataflow::operators::{Capture, Input, Probe};
use vigil_operators::{Reading, SeriesReading};

/// Runs `build` over the events as points on `workers` workers, in batches sent at their
/// watermark; returns every update of the collection it builds.
pub fn run_points<T, F>(events: &[Reading], workers: usize, build: F) -> Vec<(T, isize)>
where
    T: differential_dataflow::ExchangeData + std::hash::Hash,
    F: Fn(
            timely::dataflow::Stream<'_, u64, Vec<SeriesReading>>,
        ) -> differential_dataflow::VecCollection<'_, u64, T, isize>
        + Send
        + Sync
        + 'static,
{
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|r| r.ts);
    let batches = sorted
        .chunks(29)
        .map(|chunk| chunk.iter().map(SeriesReading::from).collect())
        .collect();
    run_batches(batches, |p: &SeriesReading| p.ts, workers, build)
        .into_iter()
        .map(|(item, _, d)| (item, d))
        .collect()
}

/// Runs `build` on `workers` workers, which take the batches in turn; each worker sends a
/// batch, then moves its input to the next one's earliest event time (`ts`) and waits for the
/// collection to catch up. Returns every update with its time.
pub fn run_batches<I, T, F>(
    batches: Vec<Vec<I>>,
    ts: fn(&I) -> i64,
    workers: usize,
    build: F,
) -> Vec<(T, u64, isize)>
where
    I: timely::ExchangeData + Clone + Sync,
    T: differential_dataflow::ExchangeData + std::hash::Hash,
    F: Fn(
            timely::dataflow::Stream<'_, u64, Vec<I>>,
        ) -> differential_dataflow::VecCollection<'_, u64, T, isize>
        + Send
        + Sync
        + 'static,
{
    let batches = Arc::new(batches);
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    let build = Arc::new(build);
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let probe = timely::dataflow::ProbeHandle::new();
        let build = build.clone();
        let (mut input, captured) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, events) = scope.new_input::<Vec<I>>();
            let collection = build(events);
            collection.inner.clone().probe_with(&probe);
            (input, collection.inner.capture())
        });
        let mine: Vec<&Vec<I>> = batches.iter().skip(index).step_by(peers).collect();
        for (k, batch) in mine.iter().enumerate() {
            input.send_batch(&mut (*batch).clone());
            if let Some(next) = mine.get(k + 1) {
                let low = next.iter().map(ts).min().unwrap_or(0).max(0) as u64;
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
        sink.lock().unwrap().extend(updates);
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
