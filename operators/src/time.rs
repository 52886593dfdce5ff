//! Event time: epoch milliseconds, parsed from numbers or RFC 3339 strings.

use chrono::{DateTime, NaiveDateTime, Utc};

/// The earliest event time vigil accepts (1970-01-01T00:00:00Z).
pub const MIN_TS_MS: i64 = 0;
/// The latest event time vigil accepts (9999-12-31T23:59:59.999Z).
pub const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Returns `Some(ts)` when `ts` lies in the range vigil accepts, so that every archived event
/// time has a `date=`/`hour=` partition and prints as a four-digit year.
pub fn check_range(ts: i64) -> Option<i64> {
    (MIN_TS_MS..=MAX_TS_MS).contains(&ts).then_some(ts)
}

/// Parses an event time given as text: RFC 3339 (`2026-01-01T00:00:00Z`), a space-separated
/// UTC date-time as NAB writes it (`2013-12-02 21:15:00`, fractions allowed), or epoch
/// milliseconds written as digits.
///
/// # Examples
/// ```
/// use vigil_operators::time::parse_ts;
/// assert_eq!(parse_ts("1970-01-01T00:00:01Z"), Some(1000));
/// assert_eq!(parse_ts("1970-01-01 00:00:02"), Some(2000));
/// assert_eq!(parse_ts("3000"), Some(3000));
/// assert_eq!(parse_ts("yesterday"), None);
/// ```
pub fn parse_ts(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return check_range(ms);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return check_range(t.timestamp_millis());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return check_range(t.and_utc().timestamp_millis());
        }
    }
    None
}

/// Formats epoch milliseconds as RFC 3339 with millisecond precision, for messages and logs.
pub fn format_ts(ts: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ts)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ts} ms"))
}

/// The `date=YYYY-MM-DD` and `hour=HH` partition of an event time.
pub fn partition_of(ts: i64) -> (String, String) {
    let t = DateTime::<Utc>::from_timestamp_millis(ts).unwrap_or_default();
    (t.format("%Y-%m-%d").to_string(), t.format("%H").to_string())
}

/// Serde helpers for an `i64` event time that is written as epoch milliseconds and read from
/// epoch milliseconds (integer or integral float) or from any text [`parse_ts`] accepts.
pub mod epoch_ms {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes the event time as epoch milliseconds.
    pub fn serialize<S: Serializer>(ts: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(*ts)
    }

    /// Reads the event time from a number or a timestamp string.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        deserializer.deserialize_any(TsVisitor)
    }

    struct TsVisitor;

    impl Visitor<'_> for TsVisitor {
        type Value = i64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("epoch milliseconds or an RFC 3339 timestamp between 1970 and 9999")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            super::check_range(v).ok_or_else(|| E::custom(format!("ts {v} is out of range")))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v)
                .ok()
                .and_then(super::check_range)
                .ok_or_else(|| E::custom(format!("ts {v} is out of range")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
            if v.fract() == 0.0 && v.is_finite() && v.abs() < 9.0e15 {
                self.visit_i64(v as i64)
            } else {
                Err(E::custom(format!(
                    "ts {v} is not a whole number of milliseconds"
                )))
            }
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            super::parse_ts(v)
                .ok_or_else(|| E::custom(format!("ts {v:?} is not a valid timestamp")))
        }
    }
}
