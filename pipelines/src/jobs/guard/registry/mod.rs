//! The guard registry: every guard kind vigil-guard runs, declared once.
//!
//! # Layout
//! - `series`, `sources`: one serde struct per guard kind (per-series guards, per-source
//!   guards) — its parameters with their defaults, its default reaction, and the checks that
//!   turn it into the guard ([`KindParams`]); `checks`: the checks they share.
//! - `kind`: what the kinds declare and build: [`KindParams`], [`GuardParams`], [`Topic`],
//!   [`Severity`].
//! - `params`: how parameters are read, from `key=value` flags or a TOML table, with messages
//!   that name the key.
//! - here: [`CATALOGUE`], the one list of kinds that `--guard KIND:…`, the job file's
//!   `[guard.KIND]` tables, `--list-guards` and the docs table ([`markdown_table`]) all read;
//!   and the runtime types: [`GuardParams`], [`Reaction`], [`ConfiguredGuard`].
//!
//! A new guard is a struct in `series` or `sources` with its [`KindParams`], a line in
//! [`CATALOGUE`], and its [`GuardParams`] variant.

mod checks;
mod kind;
pub mod params;
mod series;
mod sources;

pub use series::{
    CompositeParams, EwmaParams, LevelShiftParams, MadParams, RateParams, SeasonalParams,
    SilenceParams, ThresholdParams, ZScoreParams,
};
pub use sources::{
    AuthFailuresParams, LateRecordsParams, SchemaViolationsParams, SequenceParams,
    UnknownSourceParams,
};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use vigil_operators::{Guard, GuardLabel, ZScore};

pub use kind::{GuardParams, KindParams, Severity, Topic};
use params::{ParamError, Table};

/// Every guard vigil-guard runs, with its parameters and default reaction: every alert has
/// someone to react. The order is the order `--list-guards` and the docs show.
pub const CATALOGUE: &[GuardKind] = &[
    GuardKind::of::<ZScoreParams>(),
    GuardKind::of::<ThresholdParams>(),
    GuardKind::of::<EwmaParams>(),
    GuardKind::of::<MadParams>(),
    GuardKind::of::<RateParams>(),
    GuardKind::of::<LevelShiftParams>(),
    GuardKind::of::<SeasonalParams>(),
    GuardKind::of::<CompositeParams>(),
    GuardKind::of::<SilenceParams>(),
    GuardKind::of::<SequenceParams>(),
    GuardKind::of::<UnknownSourceParams>(),
    GuardKind::of::<AuthFailuresParams>(),
    GuardKind::of::<LateRecordsParams>(),
    GuardKind::of::<SchemaViolationsParams>(),
];

/// One guard kind of the catalogue: its name, parameters, default reaction, and how its
/// parameters are read.
#[derive(Clone, Copy, Debug)]
pub struct GuardKind {
    /// The kind, as `--guard` and the config's `[guard.KIND]` name it.
    pub kind: &'static str,
    /// Its parameters with their defaults.
    pub parameters: &'static str,
    /// The default topic.
    pub topic: Topic,
    /// The default severity.
    pub severity: Severity,
    /// What its alerts mean.
    pub description: &'static str,
    /// Reads the kind's parameters and builds the guard.
    read: for<'a> fn(Table<'a>) -> Result<GuardParams, ParamError>,
    /// The parameter struct's defaults, serialized.
    defaults: fn() -> serde_json::Value,
}

impl GuardKind {
    /// The catalogue entry of the kind whose parameters are `P`.
    pub const fn of<P: KindParams>() -> Self {
        Self {
            kind: P::KIND,
            parameters: P::PARAMETERS,
            topic: P::TOPIC,
            severity: P::SEVERITY,
            description: P::DESCRIPTION,
            read: read_params::<P>,
            defaults: defaults_of::<P>,
        }
    }

    /// The kind named `kind`, if vigil-guard knows it.
    pub fn named(kind: &str) -> Option<&'static GuardKind> {
        CATALOGUE.iter().find(|e| e.kind == kind)
    }

    /// The guard its parameters describe.
    ///
    /// # Errors
    /// When a parameter is unknown, missing, of the wrong type or out of range.
    pub fn read(&self, params: Table<'_>) -> Result<GuardParams, ParamError> {
        (self.read)(params)
    }

    /// Every parameter with its default as JSON: `null` where there is none, or where it
    /// depends on other parameters (`clear`, half of `threshold`).
    pub fn defaults(&self) -> serde_json::Value {
        (self.defaults)()
    }

    /// The entry's default reaction.
    pub fn reaction(&self) -> Reaction {
        Reaction {
            topic: self.topic,
            severity: self.severity,
            description: self.description.to_owned(),
        }
    }
}

fn read_params<P: KindParams>(params: Table<'_>) -> Result<GuardParams, ParamError> {
    params.read::<P>()?.check()
}

fn defaults_of<P: KindParams>() -> serde_json::Value {
    serde_json::to_value(P::default()).unwrap_or_default()
}

/// The catalogue entry of a guard kind.
pub fn catalogue_entry(kind: &str) -> Option<&'static GuardKind> {
    GuardKind::named(kind)
}

/// The kinds vigil-guard knows, for messages: `zscore, threshold, … and schema_violations`.
pub fn known_kinds() -> String {
    let kinds: Vec<&str> = CATALOGUE.iter().map(|e| e.kind).collect();
    params::and_list(&kinds)
}

impl GuardParams {
    /// Parses `KIND[:key=value,…]`, e.g. `zscore:window=60,threshold=6`, `ewma:span=120`,
    /// `mad:window=60`, `rate:max=50`, `level_shift`, `seasonal:period=1d`, `composite`, or
    /// `threshold:name=M[,min=A][,max=B]`.
    ///
    /// # Examples
    /// ```
    /// use vigil_pipelines::jobs::guard::registry::GuardParams;
    /// use vigil_operators::ZScore;
    /// assert_eq!(GuardParams::parse("zscore:window=30").unwrap(), GuardParams::ZScore(ZScore::new(30, 6.0)));
    /// assert!(GuardParams::parse("zscore:windw=30").is_err());
    /// assert!(GuardParams::parse("composite").is_ok());
    /// ```
    pub fn parse(text: &str) -> anyhow::Result<GuardParams> {
        let (kind, params) = text.split_once(':').unwrap_or((text, ""));
        let pairs = params
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.trim(), v.trim()))
                    .with_context(|| format!("`{p}` in --guard {text} is not key=value"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let kind = kind.trim();
        let entry = GuardKind::named(kind).with_context(|| {
            format!(
                "unknown guard `{kind}` in --guard {text}: vigil-guard knows {}",
                known_kinds()
            )
        })?;
        entry
            .read(Table::from_pairs(&pairs))
            .map_err(|e| anyhow::anyhow!("--guard {text}: {e}"))
    }

    /// Parses several `--guard` values into guards with their default reactions; threshold
    /// guards on different metrics merge into one. No value means the z-score guard.
    pub fn parse_all(texts: &[String]) -> anyhow::Result<Vec<ConfiguredGuard>> {
        let mut guards: Vec<GuardParams> = Vec::new();
        for text in texts {
            match GuardParams::parse(text)? {
                GuardParams::Threshold(new) => {
                    if let Some(GuardParams::Threshold(existing)) = guards
                        .iter_mut()
                        .find(|s| matches!(s, GuardParams::Threshold(_)))
                    {
                        existing.merge(new);
                    } else {
                        guards.push(GuardParams::Threshold(new));
                    }
                }
                spec => guards.push(spec),
            }
        }
        if guards.is_empty() {
            guards.push(GuardParams::ZScore(ZScore::default()));
        }
        Ok(guards
            .into_iter()
            .map(ConfiguredGuard::with_default_reaction)
            .collect())
    }

    /// The name the guard's alerts carry.
    pub fn name(&self) -> &'static str {
        match self {
            GuardParams::ZScore(_) => ZScoreParams::KIND,
            GuardParams::Threshold(_) => ThresholdParams::KIND,
            GuardParams::Ewma(_) => EwmaParams::KIND,
            GuardParams::Mad(_) => MadParams::KIND,
            GuardParams::Rate(_) => RateParams::KIND,
            GuardParams::LevelShift(_) => LevelShiftParams::KIND,
            GuardParams::Seasonal(_) => SeasonalParams::KIND,
            GuardParams::Composite(_) => CompositeParams::KIND,
            GuardParams::Silence(_) => SilenceParams::KIND,
            GuardParams::Sequence(_) => SequenceParams::KIND,
            GuardParams::UnknownSource(_) => UnknownSourceParams::KIND,
            GuardParams::Burst(kind, _) => kind,
        }
    }

    /// Whether the guard runs per source rather than per series.
    pub fn per_source(&self) -> bool {
        matches!(
            self,
            GuardParams::Sequence(_) | GuardParams::UnknownSource(_) | GuardParams::Burst(..)
        )
    }

    /// The guard under `label`, ready to run.
    pub fn build(&self, label: GuardLabel) -> Guard {
        match self {
            GuardParams::ZScore(g) => Guard::new(label, *g),
            GuardParams::Threshold(g) => Guard::new(label, g.clone()),
            GuardParams::Ewma(g) => Guard::new(label, *g),
            GuardParams::Mad(g) => Guard::new(label, *g),
            GuardParams::Rate(g) => Guard::new(label, *g),
            GuardParams::LevelShift(g) => Guard::new(label, *g),
            GuardParams::Seasonal(g) => Guard::new(label, *g),
            GuardParams::Composite(g) => Guard::new(label, *g),
            GuardParams::Silence(g) => Guard::new(label, *g),
            GuardParams::Sequence(g) => Guard::new(label, *g),
            GuardParams::UnknownSource(g) => Guard::new(label, g.clone()),
            GuardParams::Burst(_, g) => Guard::new(label, g.clone()),
        }
    }
}

/// What a guard's alerts set off: where they go, how bad they are, and what they mean. In a
/// job file, the `[guard.reaction]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Reaction {
    /// The topic the alerts go to: `telemetry-alerts` or `security-guard-feed`.
    pub topic: Topic,
    /// The severity written on the alerts: `info`, `warning` or `critical`.
    pub severity: Severity,
    /// What an alert of this guard means, for the people who react to it.
    pub description: String,
}

/// A guard as a job runs it: its name on alerts, its logic and its reaction.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfiguredGuard {
    /// The name alerts carry in `guard` (the kind unless configured otherwise).
    pub name: String,
    /// The guard and its parameters.
    pub params: GuardParams,
    /// What its alerts set off.
    pub reaction: Reaction,
}

impl ConfiguredGuard {
    /// A guard named after its kind with the catalogue's default reaction.
    pub fn with_default_reaction(params: GuardParams) -> Self {
        let entry = catalogue_entry(params.name());
        Self {
            name: params.name().to_owned(),
            reaction: entry.map_or_else(
                || Reaction {
                    topic: Topic::TelemetryAlerts,
                    severity: Severity::Warning,
                    description: String::new(),
                },
                GuardKind::reaction,
            ),
            params,
        }
    }

    /// The guard, ready to run, labelled with its name and reaction.
    pub fn build(&self) -> Guard {
        let label = GuardLabel {
            guard: self.name.as_str().into(),
            severity: self.reaction.severity.as_str().into(),
            reaction: self.reaction.topic.as_str().into(),
        };
        self.params.build(label)
    }
}

/// What `--list-guards` prints without a job: every kind with its reaction and parameters.
pub fn catalogue_listing() -> String {
    let mut out = String::from("KIND          TOPIC                SEVERITY  DESCRIPTION\n");
    for e in CATALOGUE {
        out.push_str(&format!(
            "{:<13} {:<20} {:<9} {}\n{:<44}parameters: {}\n",
            e.kind,
            e.topic.as_str(),
            e.severity.as_str(),
            e.description,
            "",
            e.parameters
        ));
    }
    out
}

/// What `--list-guards` prints for a job: each of its guards with its kind and reaction.
pub fn guards_listing(guards: &[ConfiguredGuard]) -> String {
    let mut out = String::from(
        "GUARD                KIND          TOPIC                SEVERITY  DESCRIPTION\n",
    );
    for g in guards {
        out.push_str(&format!(
            "{:<20} {:<13} {:<20} {:<9} {}\n",
            g.name,
            g.params.name(),
            g.reaction.topic.as_str(),
            g.reaction.severity.as_str(),
            g.reaction.description
        ));
    }
    out
}

/// A job's guards as the live page's catalogue shows them: name, kind, parameters, and the
/// reaction (topic, severity, what an alert means).
pub fn guards_json(guards: &[ConfiguredGuard]) -> serde_json::Value {
    serde_json::Value::Array(
        guards
            .iter()
            .map(|g| {
                // `ZScore(ZScore { window: 60, … })` shown as `window: 60, …`.
                let debug = format!("{:?}", g.params);
                let params = debug
                    .find('{')
                    .and_then(|open| Some(debug[open + 1..debug.rfind('}')?].trim().to_owned()))
                    .unwrap_or(debug);
                serde_json::json!({
                    "name": g.name,
                    "kind": g.params.name(),
                    "params": params,
                    "topic": g.reaction.topic.as_str(),
                    "severity": g.reaction.severity.as_str(),
                    "description": g.reaction.description,
                })
            })
            .collect(),
    )
}

/// The catalogue as the Markdown table the user guide shows between its
/// `<!-- guards:begin -->` and `<!-- guards:end -->` markers (a test keeps them equal).
pub fn markdown_table() -> String {
    let cell = |text: &str| text.replace('|', "\\|");
    let mut out = String::from(
        "| guard | parameters (defaults) | topic | severity | what an alert means |\n\
         |---|---|---|---|---|\n",
    );
    for e in CATALOGUE {
        out.push_str(&format!(
            "| `{}` | `{}` | `{}` | {} | {} |\n",
            e.kind,
            cell(e.parameters),
            e.topic.as_str(),
            e.severity.as_str(),
            cell(e.description)
        ));
    }
    out
}

#[cfg(test)]
mod tests;
