//! vigil's record types, Arrow schemas and incremental dataflow operators. No I/O.
//!
//! # Layout
//! - `model`: the `telemetry`, `alerts` and `errors` records, each with one Arrow schema from
//!   which batches and JSON are derived.
//! - `time`: event time parsing and the `date=`/`hour=` partition of an event time.
//! - `guards`: anomaly guards. `series_guard` is the raise-and-clear engine that runs a guard's
//!   per-series logic in event-time order; `zscore` and `threshold` are guards on it;
//!   `open_alerts` turns alerts into a differential collection of what is wrong now.
//! - `archaeology`: pattern archaeology over event history: `sessions` (session windows per
//!   room or source), `field` (the bounded summary: newest high-intensity events, snapshots,
//!   resonance, active sources), `entanglements` (sources whose events come together far more
//!   often than chance).
//! - `crypto`: AES-256-GCM payload sealing and opening, keyed by a fingerprinted key.
//! - `sync`: bi-directional sync of two replicas: `current_versions` of each side's rows from
//!   its change feed, and `sync_diff`, the actions that make the sides agree.
//!
//! Everything a user needs is re-exported flat: `use vigil_operators::*`.
//!
//! # Examples
//! Guards run in a dataflow ([`SeriesGuard`]); [`Guard::replay`] runs one over a series
//! without a dataflow, the quickest way to see what a guard does.
//! ```
//! use vigil_operators::*;
//!
//! let points: Vec<SeriesReading> = (0..)
//!     .zip([20.0, 21.0, 99.0, 98.0, 22.0])
//!     .map(|(i, v)| SeriesReading::from(&Reading::new("veh-1", "temp_c", i * 1_000, v)))
//!     .collect();
//! let bounds = Threshold::new().bound("temp_c", None, Some(90.0));
//! let alerts = Guard::new(GuardLabel::new("threshold"), bounds).replay(&points);
//! let seen: Vec<_> = alerts.iter().map(|a| (a.status, a.ts)).collect();
//! assert_eq!(seen, [(AlertStatus::Raised, 2_000), (AlertStatus::Cleared, 4_000)]);
//! // The record that clears an alert carries the id it was raised with.
//! assert_eq!(alerts[1].alert_id, alerts[0].alert_id);
//! ```

pub mod archaeology;
pub mod crypto;
pub mod guards;
pub mod model;
mod stash;
pub mod sync;
pub mod time;

pub use archaeology::sessions::{SessionEvent, Sessions};
pub use guards::burst::{Burst, LATE_EVENT, SCHEMA_EVENT};
pub use guards::composite::Composite;
pub use guards::ewma::{Ewma, EwmaStats};
pub use guards::level_shift::LevelShift;
pub use guards::mad::{Mad, SortedWindow};
pub use guards::open_alerts::{OpenAlert, OpenAlerts};
pub use guards::rate::Rate;
pub use guards::registry::Registry;
pub use guards::seasonal::Seasonal;
pub use guards::sequence::Sequence;
pub use guards::series_guard::{
    ALL_NAMES, Guard, GuardLabel, GuardMetrics, GuardOperatorParams, Hysteresis, SeriesGuard,
    SeriesLimits, SeriesLogic, Verdict, distance_score,
};
pub use guards::silence::Silence;
pub use guards::snapshot::{SnapshotStore, Snapshots};
pub use guards::threshold::Threshold;
pub use guards::zscore::{ZScore, ZScoreState, is_degenerate_std};
pub use model::alert::alert_id;
pub use model::telemetry::{derive_event_id, series_hash};
pub use model::{
    Alert, AlertStatus, AnomalyScore, BatchBuilder, Change, ChangeOp, ConvertError, DeadLetter,
    Kind, Pattern, Reading, ReadingRef, Record, ScoreColumns, SeriesReading, Session, SyncAction,
    SyncActionKind, TelemetryColumns,
};
pub use sync::current_versions::CurrentVersions;
pub use sync::sync_diff::SyncDiff;
pub use sync::{RowKey, Side, Version};
