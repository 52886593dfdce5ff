//! Records held back until the frontier passes their event time, for the operators that
//! judge in event-time order (guards, sessions, the whole-field operators).
//!
//! # Examples
//! Readings sent out of event-time order wait here until their time is complete, so a guard
//! judges them in event-time order: 20 at 1 s, 95 at 2 s, 99 at 3 s is one alert, at 2 s
//! (in the order sent, it would be three).
//! ```
//! use timely::dataflow::operators::{Capture, ToStream, capture::Event};
//! use vigil_operators::{AlertStatus, GuardLabel, SeriesReading, Reading, SeriesGuard, Threshold};
//!
//! let captured = timely::example(|scope| {
//!     let points: Vec<SeriesReading> = [(3_000, 99.0), (1_000, 20.0), (2_000, 95.0)]
//!         .iter()
//!         .map(|(ts, v)| SeriesReading::from(&Reading::new("veh-1", "temp_c", *ts, *v)))
//!         .collect();
//!     let logic = Threshold::new().bound("temp_c", None, Some(90.0));
//!     let stream = points.to_stream(scope).container::<Vec<_>>();
//!     stream.guard(GuardLabel::new("threshold"), logic).capture()
//! });
//! let alerts: Vec<_> = captured
//!     .try_iter()
//!     .flat_map(|event| match event {
//!         Event::Messages(_, alerts) => alerts,
//!         Event::Progress(_) => Vec::new(),
//!     })
//!     .map(|a| (a.status, a.ts))
//!     .collect();
//! assert_eq!(alerts, [(AlertStatus::Raised, 2_000)]);
//! ```

use timely::dataflow::operators::Capability;

/// Pending records and the least capability they arrived under.
pub(crate) struct Stash<D> {
    /// Records whose event time the frontier has not passed yet.
    pub pending: Vec<D>,
    /// The least capability of what is pending or still to be emitted.
    pub held: Option<Capability<u64>>,
}

impl<D> Stash<D> {
    pub(crate) fn new() -> Self {
        Self {
            pending: Vec::new(),
            held: None,
        }
    }

    /// Holds `cap` if it is earlier than the one held.
    pub(crate) fn hold(&mut self, cap: Option<Capability<u64>>) {
        if let Some(cap) = cap {
            match &self.held {
                Some(h) if h.time() <= cap.time() => {}
                _ => self.held = Some(cap),
            }
        }
    }

    /// Keeps the records received under `cap` (the input capability retained for the output).
    pub(crate) fn receive<'a>(
        &mut self,
        cap: Option<Capability<u64>>,
        batches: impl Iterator<Item = &'a mut Vec<D>>,
    ) where
        D: 'a,
    {
        self.hold(cap);
        for batch in batches {
            self.pending.append(batch);
        }
    }

    /// Takes the pending records with event time before `bound` (all of them at the end of
    /// the input, `None`).
    pub(crate) fn ready(&mut self, bound: Option<u64>, ts: impl Fn(&D) -> i64) -> Vec<D> {
        match bound {
            Some(b) => self
                .pending
                .extract_if(.., |d| (ts(d).max(0) as u64) < b)
                .collect(),
            None => std::mem::take(&mut self.pending),
        }
    }
}
