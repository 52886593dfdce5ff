//! What every guard kind declares and what it builds: the parameters trait, the guard
//! specification, and the topic and severity of its alerts. The kinds (`series`, `sources`)
//! and the registry (`mod.rs`) both build on this.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use vigil_operators::{
    Burst, Composite, Ewma, LevelShift, Mad, Rate, Registry, Seasonal, Sequence, Silence,
    Threshold, ZScore,
};

use super::params::ParamError;

/// A guard kind's parameters: a serde struct whose defaults are the operator's, with what the
/// catalogue says of the kind.
pub trait KindParams: DeserializeOwned + Serialize + Default {
    /// The kind, as `--guard KIND:…` and the job file's `[guard.KIND]` name it.
    const KIND: &'static str;
    /// The parameters with their defaults, as `--list-guards` shows them (a test checks them
    /// against the struct).
    const PARAMETERS: &'static str;
    /// The topic its alerts go to unless the job file says otherwise.
    const TOPIC: Topic;
    /// Their severity unless the job file says otherwise.
    const SEVERITY: Severity;
    /// What its alerts mean.
    const DESCRIPTION: &'static str;

    /// The guard these parameters describe, once their values are checked.
    fn check(self) -> Result<GuardParams, ParamError>;
}

/// A guard to run, with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum GuardParams {
    /// Rolling z-score per series.
    ZScore(ZScore),
    /// Fixed bounds per metric name.
    Threshold(Threshold),
    /// Distance from the exponentially weighted mean.
    Ewma(Ewma),
    /// Distance from the rolling median in MADs.
    Mad(Mad),
    /// Rate of change per second of event time.
    Rate(Rate),
    /// Lasting shifts of the level (CUSUM).
    LevelShift(LevelShift),
    /// Distance from the usual value at this time of day.
    Seasonal(Seasonal),
    /// All statistical views combined into one calibrated score.
    Composite(Composite),
    /// A series that stops reporting.
    Silence(Silence),
    /// Per source: sequence numbers that skip, repeat or go back.
    Sequence(Sequence),
    /// Per source: a source not in the registry of known sources.
    UnknownSource(Registry),
    /// Per source: more than `limit` events of one name within a window (failed
    /// authentications, vigil's own late or malformed records). The kind names which.
    Burst(&'static str, Burst),
}

/// The topic a guard's alerts are published to, which decides who reacts to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topic {
    /// Operators watching telemetry: statistical and silence alerts.
    TelemetryAlerts,
    /// The security team's feed: sequence, source, authentication and schema alerts.
    SecurityGuardFeed,
}

impl Topic {
    /// The topic's name (`telemetry-alerts`, `security-guard-feed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::TelemetryAlerts => "telemetry-alerts",
            Topic::SecurityGuardFeed => "security-guard-feed",
        }
    }
}

/// How bad a guard's alerts are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Info,
    /// Needs attention.
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// The severity's name on alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}
