//! The operators that hand a worker's readings and scores to the live view: the progress once
//! per batch, and the readings of charted series. Each keeps the last readings of the series it
//! sees (of a bounded number of series), so that a series charted at its first alert is drawn
//! with what came before.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, TimestampMillisecondType};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use vigil_operators::SeriesReading;

use super::{LiveHub, SeriesKey};

/// Readings a tap keeps per series, for the chart's start.
const HISTORY: usize = 120;
/// Series a tap keeps readings of; past it, a new series' chart starts at its first alert.
const HISTORY_SERIES: usize = 10_000;

/// Hands a stream of readings to the live view.
pub trait TapReadings {
    /// Counts the readings, follows the watermark, and passes on those of charted series.
    fn tap_live(self, hub: Arc<LiveHub>);
}

impl TapReadings for Stream<'_, u64, Vec<SeriesReading>> {
    fn tap_live(self, hub: Arc<LiveHub>) {
        let mut generation = 0;
        let mut charted: HashSet<u64> = HashSet::new();
        let mut history: HashMap<u64, (SeriesKey, VecDeque<(i64, f64)>)> = HashMap::new();
        let mut out: Vec<(SeriesKey, i64, f64)> = Vec::new();
        self.sink(Pipeline, "LiveReadings", move |(input, frontier)| {
            if let Some((now, all)) = hub.charted(generation) {
                generation = now;
                // A series charted since the last look: what came before its alert first.
                for hash in all.difference(&charted) {
                    if let Some((key, kept)) = history.get(hash) {
                        out.extend(kept.iter().map(|(ts, v)| (key.clone(), *ts, *v)));
                    }
                }
                charted = all;
            }
            let mut events = 0;
            input.for_each_stamp(|_, data| {
                for readings in data {
                    events += readings.len() as u64;
                    if !hub.charts {
                        continue;
                    }
                    for r in readings.iter() {
                        if history.len() < HISTORY_SERIES && !history.contains_key(&r.hash) {
                            let key = (r.source.to_string(), r.name.to_string());
                            history.insert(r.hash, (key, VecDeque::new()));
                        }
                        if let Some((_, kept)) = history.get_mut(&r.hash) {
                            if kept.len() >= HISTORY {
                                kept.pop_front();
                            }
                            kept.push_back((r.ts, r.value));
                        }
                        if charted.contains(&r.hash) {
                            out.push(((r.source.to_string(), r.name.to_string()), r.ts, r.value));
                        }
                    }
                }
            });
            let watermark = frontier.frontier().first().copied().unwrap_or(0);
            if events > 0 || watermark > 0 {
                hub.progress(events, watermark);
            }
            if !out.is_empty() {
                hub.readings(std::mem::take(&mut out));
            }
        });
    }
}

/// Hands a stream of guard scores (Arrow batches of `anomaly_scores` rows) to the live view.
pub trait TapScores {
    /// Passes on the scores of charted series.
    fn tap_live(self, hub: Arc<LiveHub>);
}

impl TapScores for Stream<'_, u64, Vec<RecordBatch>> {
    fn tap_live(self, hub: Arc<LiveHub>) {
        let mut generation = 0;
        let mut charted: HashSet<u64> = HashSet::new();
        let mut out = Vec::new();
        self.sink(Pipeline, "LiveScores", move |(input, _frontier)| {
            if let Some((now, all)) = hub.charted(generation) {
                generation = now;
                charted = all;
            }
            input.for_each_stamp(|_, data| {
                if charted.is_empty() {
                    return;
                }
                for batches in data {
                    for batch in batches.iter() {
                        charted_scores(batch, &charted, &mut out);
                    }
                }
            });
            if !out.is_empty() {
                hub.scores(std::mem::take(&mut out));
            }
        });
    }
}

/// The rows of a batch of scores whose series is charted: (series, guard, ts, score).
fn charted_scores(
    batch: &RecordBatch,
    charted: &HashSet<u64>,
    out: &mut Vec<(SeriesKey, String, i64, f64)>,
) {
    let column = |name: &str| batch.column_by_name(name);
    let (Some(ts), Some(source), Some(name), Some(guard), Some(score)) = (
        column("ts").and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>()),
        column("source").and_then(|c| c.as_string_opt::<i32>()),
        column("name").and_then(|c| c.as_string_opt::<i32>()),
        column("guard").and_then(|c| c.as_string_opt::<i32>()),
        column("score").and_then(|c| c.as_primitive_opt::<Float64Type>()),
    ) else {
        return;
    };
    for row in 0..batch.num_rows() {
        let (s, n) = (source.value(row), name.value(row));
        if charted.contains(&vigil_operators::series_hash(s, n)) {
            out.push((
                (s.to_owned(), n.to_owned()),
                guard.value(row).to_owned(),
                ts.value(row),
                score.value(row),
            ));
        }
    }
}
