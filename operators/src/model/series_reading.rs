//! A reading reduced to what a per-series guard needs, with its series hash computed once.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::telemetry::series_hash;
use super::{Reading, ReadingRef};

/// One observation of a series: smaller than a [`Reading`] (no attributes or payload), so that
/// routing, buffering and sorting it in the guards moves less memory.
///
/// # Examples
/// ```
/// use vigil_operators::{SeriesReading, Reading, series_hash};
///
/// let later = SeriesReading::from(&Reading::new("veh-1", "temp_c", 2_000, 20.0));
/// let earlier = SeriesReading::from(&Reading::new("veh-1", "temp_c", 1_000, 25.0).with_seq(3));
/// assert_eq!(later.hash, series_hash("veh-1", "temp_c"));
/// assert_eq!(earlier.seq, Some(3));
/// assert!(later.same_series(&earlier));
/// assert!(earlier.guard_order(&later).is_lt());
/// let other = SeriesReading::from(&Reading::new("veh-1", "rpm", 2_000, 20.0));
/// assert!(!later.same_series(&other));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesReading {
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
    /// The reading or intensity; breaks ties when `ts` and `seq` are equal.
    pub value: f64,
}

impl From<&ReadingRef<'_>> for SeriesReading {
    fn from(r: &ReadingRef<'_>) -> Self {
        SeriesReading {
            hash: series_hash(r.source, r.name),
            source: r.source.into(),
            name: r.name.into(),
            ts: r.ts,
            seq: r.seq,
            value: r.value,
        }
    }
}

impl From<&Reading> for SeriesReading {
    fn from(r: &Reading) -> Self {
        SeriesReading::from(&r.view())
    }
}

impl SeriesReading {
    /// The order a guard sees a series in: event time, then `seq`, then value, so that the
    /// order is the same on every run whatever order the readings arrived in. Readings equal in
    /// all of these are interchangeable for a guard. Across series, ordered by series hash.
    pub fn guard_order(&self, other: &SeriesReading) -> std::cmp::Ordering {
        (self.hash, self.ts, self.seq)
            .cmp(&(other.hash, other.ts, other.seq))
            .then_with(|| self.value.total_cmp(&other.value))
            .then_with(|| (&self.source, &self.name).cmp(&(&other.source, &other.name)))
    }

    /// Whether two readings belong to the same series.
    pub fn same_series(&self, other: &SeriesReading) -> bool {
        self.hash == other.hash && self.source == other.source && self.name == other.name
    }
}
