//! A reading reduced to what a per-series guard needs, with its series hash computed once.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::Reading;
use super::telemetry::series_hash;

/// One observation of a series: smaller than a [`Reading`] (no attributes or payload), so that
/// routing, buffering and sorting it in the guards moves less memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// [`series_hash`] of `source` and `name`: routes the series to its worker and orders it.
    pub hash: u64,
    /// The vehicle or device.
    pub source: CompactString,
    /// The metric or event name.
    pub name: CompactString,
    /// Event time, epoch ms.
    pub ts: i64,
    /// Per-source sequence number, if any; breaks ties in event time.
    pub seq: Option<u64>,
    /// The event id; breaks ties when `ts` and `seq` are equal.
    pub event_id: CompactString,
    /// The reading or intensity.
    pub value: f64,
}

impl From<&Reading> for Point {
    fn from(r: &Reading) -> Self {
        Point {
            hash: series_hash(&r.source, &r.name),
            source: r.source.clone(),
            name: r.name.clone(),
            ts: r.ts,
            seq: r.seq,
            event_id: r.event_id.clone(),
            value: r.value,
        }
    }
}

impl Point {
    /// Whether two points belong to the same series.
    pub fn same_series(&self, other: &Point) -> bool {
        self.hash == other.hash && self.source == other.source && self.name == other.name
    }
}
