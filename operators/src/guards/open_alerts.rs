//! The alerts that are open now, as a differential collection: raises add, clears retract.

use compact_str::CompactString;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::Stream;
use timely::dataflow::operators::core::Map;

use crate::model::{Alert, AlertStatus};

/// The identity of an open alert: `(alert_id, guard, source, name)`.
pub type OpenAlert = (CompactString, CompactString, CompactString, CompactString);

/// Turns a stream of raised and cleared alerts into the collection of open alerts.
pub trait OpenAlerts<'scope> {
    /// Each raised alert enters the collection at its event time; the record that clears it
    /// retracts it again, so the collection always holds exactly what is wrong now.
    ///
    /// # Examples
    /// ```
    /// use differential_dataflow::AsCollection;
    /// use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
    /// use vigil_operators::{GuardLabel, OpenAlerts, SeriesReading, Reading, SeriesGuard, Threshold};
    ///
    /// let captured = timely::example(|scope| {
    ///     let readings = vec![
    ///         Reading::new("veh-1", "temp_c", 1_000, 99.0),
    ///         Reading::new("veh-1", "temp_c", 2_000, 20.0),
    ///         Reading::new("veh-2", "temp_c", 2_000, 95.0),
    ///     ];
    ///     let logic = Threshold::new().bound("temp_c", None, Some(90.0));
    ///     let points: Vec<SeriesReading> = readings.iter().map(SeriesReading::from).collect();
    ///     points.to_stream(scope).container::<Vec<_>>()
    ///         .guard(GuardLabel::new("threshold"), logic)
    ///         .open_alerts()
    ///         .consolidate()
    ///         .inner
    ///         .capture()
    /// });
    /// let mut open: Vec<_> = captured.extract().into_iter().flat_map(|(_, d)| d).collect();
    /// let net: isize = open.iter().filter(|(a, _, _)| a.2 == "veh-1").map(|(_, _, r)| r).sum();
    /// assert_eq!(net, 0);
    /// open.retain(|(a, _, _)| a.2 == "veh-2");
    /// assert_eq!(open.len(), 1);
    /// ```
    fn open_alerts(self) -> VecCollection<'scope, u64, OpenAlert, isize>;
}

impl<'scope> OpenAlerts<'scope> for Stream<'scope, u64, Vec<Alert>> {
    fn open_alerts(self) -> VecCollection<'scope, u64, OpenAlert, isize> {
        self.map(|alert| {
            let diff = match alert.status {
                AlertStatus::Raised => 1,
                AlertStatus::Cleared => -1,
            };
            (
                (alert.alert_id, alert.guard, alert.source, alert.name),
                alert.ts as u64,
                diff,
            )
        })
        .as_collection()
    }
}
