//! The per-source guards' parameters: sequence numbers, the registry of known sources, and
//! bursts of events (failed authentications, late or malformed records). Listed in
//! [`super::CATALOGUE`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigil_operators::{Burst, Registry, Sequence};

use super::checks::millis;
use super::kind::{GuardParams, KindParams, Severity, Topic};
use super::params::{ParamError, duration};

/// `sequence`: per source, sequence numbers that skip, repeat or go back.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SequenceParams {
    /// Missing sequence numbers tolerated before it is a gap.
    pub max_gap: u64,
}

impl Default for SequenceParams {
    fn default() -> Self {
        Self {
            max_gap: Sequence::default().max_gap,
        }
    }
}

impl KindParams for SequenceParams {
    const KIND: &'static str = "sequence";
    const PARAMETERS: &'static str = "max_gap=0";
    const TOPIC: Topic = Topic::SecurityGuardFeed;
    const SEVERITY: Severity = Severity::Warning;
    const DESCRIPTION: &'static str = "A source's sequence numbers skipped (records lost or withheld), repeated or went back (a replay).";

    fn check(self) -> Result<GuardParams, ParamError> {
        Ok(GuardParams::Sequence(Sequence {
            max_gap: self.max_gap,
        }))
    }
}

/// `unknown_source`: per source, a source not in the registry of known sources.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UnknownSourceParams {
    /// Known sources: exact names or patterns with one `*`; `veh-*|ground-1` on the command
    /// line, `["veh-*", "ground-1"]` in a job file.
    pub registry: Vec<String>,
}

impl KindParams for UnknownSourceParams {
    const KIND: &'static str = "unknown_source";
    const PARAMETERS: &'static str = "registry=NAME|PATTERN*|…";
    const TOPIC: Topic = Topic::SecurityGuardFeed;
    const SEVERITY: Severity = Severity::Critical;
    const DESCRIPTION: &'static str =
        "A source that is not in the registry of known sources sent data.";

    fn check(self) -> Result<GuardParams, ParamError> {
        let names: Vec<&str> = self
            .registry
            .iter()
            .flat_map(|entry| entry.split('|'))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .collect();
        if names.is_empty() {
            return Err(ParamError::new("the registry is empty"));
        }
        Ok(GuardParams::UnknownSource(Registry::new(names)))
    }
}

/// `auth_failures`: per source, a burst of failed authentications.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthFailuresParams {
    /// The event name counted.
    pub event: String,
    /// The window, e.g. `1m`.
    #[serde(with = "duration")]
    pub window: Duration,
    /// Raise when more than this many events fall in the window.
    pub limit: u32,
    /// Clear when at most this many do (default 2, or limit when that is lower).
    pub clear: Option<u32>,
}

impl Default for AuthFailuresParams {
    fn default() -> Self {
        let g = Burst::auth_failures();
        Self {
            event: g.event.to_string(),
            window: Duration::from_millis(g.window_ms.unsigned_abs()),
            limit: g.limit,
            clear: None,
        }
    }
}

impl KindParams for AuthFailuresParams {
    const KIND: &'static str = "auth_failures";
    const PARAMETERS: &'static str = "event=AUTH_FAILURE window=1m limit=5 clear=2";
    const TOPIC: Topic = Topic::SecurityGuardFeed;
    const SEVERITY: Severity = Severity::Critical;
    const DESCRIPTION: &'static str =
        "A burst of failed authentications from one source (more than limit within window).";

    fn check(self) -> Result<GuardParams, ParamError> {
        let base = Burst {
            event: self.event.into(),
            ..Burst::auth_failures()
        };
        burst(Self::KIND, base, self.window, self.limit, self.clear)
    }
}

/// `late_records`: per source, records later than the allowed lateness.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LateRecordsParams {
    /// The window, e.g. `10m`.
    #[serde(with = "duration")]
    pub window: Duration,
    /// Raise when more than this many late records fall in the window.
    pub limit: u32,
    /// Clear when at most this many do (default 0).
    pub clear: Option<u32>,
}

impl Default for LateRecordsParams {
    fn default() -> Self {
        let g = Burst::late_records();
        Self {
            window: Duration::from_millis(g.window_ms.unsigned_abs()),
            limit: g.limit,
            clear: None,
        }
    }
}

impl KindParams for LateRecordsParams {
    const KIND: &'static str = "late_records";
    const PARAMETERS: &'static str = "window=10m limit=0 clear=0";
    const TOPIC: Topic = Topic::SecurityGuardFeed;
    const SEVERITY: Severity = Severity::Warning;
    const DESCRIPTION: &'static str = "A source sent records later than the allowed lateness (out of order or replayed from the past).";

    fn check(self) -> Result<GuardParams, ParamError> {
        let base = Burst::late_records();
        burst(Self::KIND, base, self.window, self.limit, self.clear)
    }
}

/// `schema_violations`: per input, malformed or mistyped records.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchemaViolationsParams {
    /// The window, e.g. `10m`.
    #[serde(with = "duration")]
    pub window: Duration,
    /// Raise when more than this many malformed records fall in the window.
    pub limit: u32,
    /// Clear when at most this many do (default 0).
    pub clear: Option<u32>,
}

impl Default for SchemaViolationsParams {
    fn default() -> Self {
        let g = Burst::schema_violations();
        Self {
            window: Duration::from_millis(g.window_ms.unsigned_abs()),
            limit: g.limit,
            clear: None,
        }
    }
}

impl KindParams for SchemaViolationsParams {
    const KIND: &'static str = "schema_violations";
    const PARAMETERS: &'static str = "window=10m limit=0 clear=0";
    const TOPIC: Topic = Topic::SecurityGuardFeed;
    const SEVERITY: Severity = Severity::Warning;
    const DESCRIPTION: &'static str =
        "An input produced malformed or mistyped records (the source is the input file).";

    fn check(self) -> Result<GuardParams, ParamError> {
        let base = Burst::schema_violations();
        burst(Self::KIND, base, self.window, self.limit, self.clear)
    }
}

/// A burst guard of `kind`: `base` with the window, limit and clear level given. Without a
/// clear level, the base's holds, lowered to the limit.
fn burst(
    kind: &'static str,
    base: Burst,
    window: Duration,
    limit: u32,
    clear: Option<u32>,
) -> Result<GuardParams, ParamError> {
    let clear = match clear {
        Some(clear) if clear > limit => {
            return Err(ParamError::new(format!(
                "clear must be at most limit ({limit}), not {clear}"
            )));
        }
        Some(clear) => clear,
        None => base.clear.min(limit),
    };
    Ok(GuardParams::Burst(
        kind,
        Burst {
            window_ms: millis("window", window, 1)?,
            limit,
            clear,
            ..base
        },
    ))
}
