//! The unknown-source guard (security): a source that is not in the configured registry of
//! known sources. Its alert opens at the source's first record and stays open while it is
//! unknown. Run per source ([`crate::SeriesGuard::guards_by_source`]).

use crate::guards::burst::VIGIL_EVENT_PREFIX;
use crate::guards::series_guard::{SeriesLogic, Verdict};
use crate::model::SeriesReading;

/// The registry of known sources: exact names, or patterns with one `*` (`veh-*`, `*-lab`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Registry {
    patterns: Vec<String>,
}

impl Registry {
    /// A registry of the given names and patterns.
    pub fn new<S: Into<String>>(patterns: impl IntoIterator<Item = S>) -> Self {
        Self {
            patterns: patterns.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether `source` is known.
    ///
    /// # Examples
    /// ```
    /// use vigil_operators::Registry;
    /// let r = Registry::new(["veh-*", "ground-1"]);
    /// assert!(r.knows("veh-7") && r.knows("ground-1"));
    /// assert!(!r.knows("ground-2") && !r.knows("xveh-7"));
    /// ```
    pub fn knows(&self, source: &str) -> bool {
        self.patterns.iter().any(|p| match p.split_once('*') {
            Some((prefix, suffix)) => {
                source.len() >= prefix.len() + suffix.len()
                    && source.starts_with(prefix)
                    && source.ends_with(suffix)
            }
            None => p == source,
        })
    }
}

/// The unknown-source guard's memory of one source: whether it was judged yet.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RegistryState {
    judged: bool,
}

impl SeriesLogic for Registry {
    type State = RegistryState;

    fn observe(&self, state: &mut RegistryState, reading: &SeriesReading) -> Option<Verdict> {
        // vigil's own events about an input (late or malformed records) are not its data.
        if reading.name.starts_with(VIGIL_EVENT_PREFIX) {
            return None;
        }
        if std::mem::replace(&mut state.judged, true) {
            return None;
        }
        let known = self.knows(&reading.source);
        Some(Verdict {
            score: if known { 0.0 } else { 1.0 },
            observed: 0.0,
            expected: 1.0,
            window_start: reading.ts,
            window_end: reading.ts,
        })
    }
}
