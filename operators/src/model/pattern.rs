//! The `patterns` table: what keeps recurring — event sequences across sources, and shapes
//! in a reading series.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::{Record, field, ts_field};

/// One recurring pattern and how often, where and when it was seen.
///
/// # Examples
/// ```
/// use vigil_operators::{Pattern, Record};
///
/// let items = ["BREATH".into(), "SPIRAL".into()];
/// let pattern = Pattern {
///     pattern_id: Pattern::id("sequence", None, &items),
///     kind: "sequence".into(),
///     items: items.to_vec(),
///     support: 2,
///     occurrences: 5,
///     first_seen: 1_000,
///     last_seen: 9_000,
///     sources: vec!["dev-1".into(), "dev-2".into()],
/// };
/// // The id depends only on what the pattern is: the same items give the same id.
/// assert_eq!(pattern.pattern_id, Pattern::id("sequence", None, &["BREATH", "SPIRAL"]));
/// assert_ne!(pattern.pattern_id, Pattern::id("sequence", None, &["SPIRAL", "BREATH"]));
/// let batch = Pattern::to_batch(std::slice::from_ref(&pattern))?;
/// assert_eq!(Pattern::from_batch(&batch)?, [pattern]);
/// # Ok::<(), vigil_operators::ConvertError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pattern {
    /// Stable id: a hash of the kind, the items and (for motifs) the series.
    pub pattern_id: CompactString,
    /// `sequence` (event names in order, per source) or `motif` (a SAX word of a series).
    pub kind: CompactString,
    /// The event names in order; for a motif the series' name and its SAX word.
    pub items: Vec<CompactString>,
    /// How many distinct sources show it.
    pub support: u64,
    /// How many times it occurred, over all sources.
    pub occurrences: u64,
    /// Event time of the start of its first occurrence, epoch ms.
    #[serde(with = "crate::time::epoch_ms")]
    pub first_seen: i64,
    /// Event time of the end of its latest occurrence, epoch ms.
    #[serde(with = "crate::time::epoch_ms")]
    pub last_seen: i64,
    /// The sources that show it, sorted; at most the first [`Pattern::LISTED_SOURCES`] of them
    /// (`support` has the count).
    pub sources: Vec<CompactString>,
}

impl Pattern {
    /// How many sources a pattern lists at most.
    pub const LISTED_SOURCES: usize = 32;

    /// The id of the pattern of `kind` with `items`, seen in `series` (motifs) or anywhere.
    pub fn id(kind: &str, series: Option<&str>, items: &[impl AsRef<str>]) -> CompactString {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(kind.as_bytes());
        hasher.update(&[0]);
        if let Some(series) = series {
            hasher.update(series.as_bytes());
        }
        for item in items {
            hasher.update(&[0]);
            hasher.update(item.as_ref().as_bytes());
        }
        compact_str::format_compact!("{:016x}", hasher.digest())
    }
}

impl Record for Pattern {
    const TABLE: &'static str = "patterns";

    fn fields() -> Vec<FieldRef> {
        let list = |name: &str| {
            field(
                name,
                DataType::List(Arc::new(Field::new("element", DataType::Utf8, false))),
                false,
            )
        };
        vec![
            field("pattern_id", DataType::Utf8, false),
            field("kind", DataType::Utf8, false),
            list("items"),
            field("support", DataType::UInt64, false),
            field("occurrences", DataType::UInt64, false),
            ts_field("first_seen", false),
            ts_field("last_seen", false),
            list("sources"),
        ]
    }

    fn event_time(&self) -> i64 {
        self.last_seen
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn patterns_round_trip_through_arrow() {
        let items: Vec<CompactString> = vec!["BREATH".into(), "SPIRAL".into()];
        let rows = vec![Pattern {
            pattern_id: Pattern::id("sequence", None, &items),
            kind: "sequence".into(),
            items,
            support: 2,
            occurrences: 5,
            first_seen: 1_000,
            last_seen: 9_000,
            sources: vec!["dev-1".into(), "dev-2".into()],
        }];
        let batch = Pattern::to_batch(&rows).unwrap();
        assert_eq!(Pattern::from_batch(&batch).unwrap(), rows);
        assert_ne!(
            Pattern::id("motif", Some("dev-1"), &["x"]),
            Pattern::id("motif", Some("dev-2"), &["x"])
        );
    }
}
