//! The `alerts` table: a guard's alert being raised or cleared.

use arrow::datatypes::{DataType, FieldRef};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::{Record, field, ts_field};

/// Whether an alert record opens an alert or closes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The guard's condition started to hold.
    Raised,
    /// The guard's condition stopped holding; the alert with the same id is over.
    Cleared,
}

/// One alert record. A raised alert and the record that clears it share `alert_id`.
///
/// # Examples
/// ```
/// use vigil_operators::{Alert, AlertStatus, Record, alert_id};
///
/// let alert = Alert {
///     alert_id: alert_id("threshold", "veh-1", "temp_c", 2_000),
///     guard: "threshold".into(),
///     severity: "warning".into(),
///     source: "veh-1".into(),
///     name: "temp_c".into(),
///     ts: 2_000,
///     window_start: 2_000,
///     window_end: 2_000,
///     observed: 99.0,
///     expected: 90.0,
///     score: 1.0,
///     status: AlertStatus::Raised,
///     reaction: "telemetry-alerts".into(),
/// };
/// let batch = Alert::to_batch(std::slice::from_ref(&alert))?;
/// assert_eq!(Alert::from_batch(&batch)?, [alert.clone()]);
/// assert!(alert.to_json().contains(r#""status":"raised""#));
/// # Ok::<(), vigil_operators::ConvertError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Deterministic id: the same input always gives the same id.
    pub alert_id: CompactString,
    /// The guard that raised it (`zscore`, `threshold`, …).
    pub guard: CompactString,
    /// How bad it is (`info`, `warning`, `critical`).
    pub severity: CompactString,
    /// The vehicle or device.
    pub source: CompactString,
    /// The metric or event name.
    pub name: CompactString,
    /// Event time of the reading that raised or cleared the alert, epoch ms.
    #[serde(with = "crate::time::epoch_ms")]
    pub ts: i64,
    /// Event time of the first reading the guard looked at for this decision.
    #[serde(with = "crate::time::epoch_ms")]
    pub window_start: i64,
    /// Event time of the last reading the guard looked at for this decision.
    #[serde(with = "crate::time::epoch_ms")]
    pub window_end: i64,
    /// The value that was observed.
    pub observed: f64,
    /// The value the guard expected (a mean, or the violated bound).
    pub expected: f64,
    /// How far off the observation is, in the guard's own unit (a z-score, a distance).
    pub score: f64,
    /// Raised or cleared.
    pub status: AlertStatus,
    /// What the alert triggers: the topic or action that reacts to it.
    pub reaction: CompactString,
}

/// A stable alert id from the guard, the series and the event time the alert was raised at.
///
/// # Examples
/// ```
/// use vigil_operators::alert_id;
///
/// let id = alert_id("zscore", "veh-1", "temp_c", 1_000);
/// assert_eq!(id, alert_id("zscore", "veh-1", "temp_c", 1_000));
/// assert_ne!(id, alert_id("zscore", "veh-1", "temp_c", 2_000));
/// assert_ne!(id, alert_id("zscore", "veh-1t", "emp_c", 1_000));
/// assert_eq!(id.len(), 16);
/// ```
pub fn alert_id(guard: &str, source: &str, name: &str, raised_ts: i64) -> CompactString {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in [guard.as_bytes(), source.as_bytes(), name.as_bytes()] {
        hasher.update(part);
        hasher.update(&[0xff]);
    }
    hasher.update(&raised_ts.to_le_bytes());
    let mut id = CompactString::with_capacity(16);
    use std::fmt::Write;
    let _ = write!(id, "{:016x}", hasher.digest());
    id
}

impl Record for Alert {
    const TABLE: &'static str = "alerts";

    fn fields() -> Vec<FieldRef> {
        vec![
            field("alert_id", DataType::Utf8, false),
            field("guard", DataType::Utf8, false),
            field("severity", DataType::Utf8, false),
            field("source", DataType::Utf8, false),
            field("name", DataType::Utf8, false),
            ts_field("ts", false),
            ts_field("window_start", false),
            ts_field("window_end", false),
            field("observed", DataType::Float64, false),
            field("expected", DataType::Float64, false),
            field("score", DataType::Float64, false),
            field("status", DataType::Utf8, false),
            field("reaction", DataType::Utf8, false),
        ]
    }

    fn event_time(&self) -> i64 {
        self.ts
    }
}
