//! Guard specifications as users write them (`zscore:window=60,threshold=6`) and their wiring.

use anyhow::{Context, bail};
use vigil_operators::{
    Burst, Composite, Ewma, Guard, GuardLabel, LevelShift, Mad, Rate, Registry, Seasonal, Sequence,
    Silence, Threshold, ZScore,
};

/// A guard to run, with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum GuardSpec {
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

/// The guards `--guard` knows, for messages.
const KNOWN: &str = "zscore, threshold, ewma, mad, rate, level_shift, seasonal, composite, \
     silence, sequence, unknown_source, auth_failures, late_records and schema_violations";

/// Parameters as `key=value` pairs, each to be taken once by the guard's parser.
struct Params<'a> {
    /// Where the parameters were written, for messages (`--guard zscore:…`, a config file).
    text: String,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Params<'a> {
    fn parse(text: &str, params: &'a str) -> anyhow::Result<Self> {
        let pairs = params
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.trim(), v.trim()))
                    .with_context(|| format!("`{p}` in --guard {text} is not key=value"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            text: format!("--guard {text}"),
            pairs,
        })
    }

    /// A finite number for `key`, if given.
    fn number(&mut self, key: &str) -> anyhow::Result<Option<f64>> {
        let Some(at) = self.pairs.iter().position(|(k, _)| *k == key) else {
            return Ok(None);
        };
        let (_, value) = self.pairs.remove(at);
        value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Some)
            .with_context(|| format!("{key}={value} in {} is not a number", self.text))
    }

    /// A positive number for `key`, if given.
    fn positive(&mut self, key: &str) -> anyhow::Result<Option<f64>> {
        let value = self.number(key)?;
        if let Some(v) = value {
            anyhow::ensure!(v > 0.0, "{key}={v} in {} must be positive", self.text);
        }
        Ok(value)
    }

    /// A whole number of at least `min` for `key`, if given.
    fn count(&mut self, key: &str, min: usize) -> anyhow::Result<Option<usize>> {
        let Some(at) = self.pairs.iter().position(|(k, _)| *k == key) else {
            return Ok(None);
        };
        let (_, value) = self.pairs.remove(at);
        value
            .parse::<usize>()
            .ok()
            .filter(|v| *v >= min)
            .map(Some)
            .with_context(|| {
                format!(
                    "{key}={value} in {} must be a whole number of at least {min}",
                    self.text
                )
            })
    }

    /// A duration (`30s`, `1d`) for `key` in milliseconds, at least `min_ms`, if given.
    fn duration_ms(&mut self, key: &str, min_ms: i64) -> anyhow::Result<Option<i64>> {
        let Some(value) = self.text(key) else {
            return Ok(None);
        };
        let ms = humantime::parse_duration(value)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .with_context(|| {
                format!(
                    "{key}={value} in {} is not a duration (e.g. 30s, 1m, 1d)",
                    self.text
                )
            })?;
        anyhow::ensure!(
            ms >= min_ms,
            "{key}={value} in {} must be at least {min_ms} ms",
            self.text
        );
        Ok(Some(ms))
    }

    /// A text value for `key`, if given.
    fn text(&mut self, key: &str) -> Option<&'a str> {
        let at = self.pairs.iter().position(|(k, _)| *k == key)?;
        Some(self.pairs.remove(at).1)
    }

    /// Fails on any parameter no parser took.
    fn done(self, known: &str) -> anyhow::Result<()> {
        match self.pairs.first() {
            Some((key, _)) => bail!("unknown parameter `{key}` in {}: use {known}", self.text),
            None => Ok(()),
        }
    }
}

/// Reads `threshold` and `clear` in the guard's own unit; clear defaults to half of threshold.
fn levels(p: &mut Params<'_>, threshold: &mut f64, clear: &mut f64) -> anyhow::Result<()> {
    let given_threshold = p.positive("threshold")?;
    if let Some(t) = given_threshold {
        *threshold = t;
        *clear = t / 2.0;
    }
    if let Some(c) = p.number("clear")? {
        *clear = c;
    }
    anyhow::ensure!(
        *clear >= 0.0 && *clear <= *threshold,
        "{}: clear must be between 0 and threshold",
        p.text
    );
    Ok(())
}

/// A span in readings as an EWMA weight.
fn alpha_of_span(span: usize) -> f64 {
    2.0 / (span as f64 + 1.0)
}

impl GuardSpec {
    /// Builds a guard of `kind` from parameters given as key/value pairs, checked as
    /// [`GuardSpec::parse`] checks them; `context` says where they were written.
    pub fn from_pairs(
        kind: &str,
        pairs: &[(&str, &str)],
        context: &str,
    ) -> anyhow::Result<GuardSpec> {
        let params = Params {
            text: context.to_owned(),
            pairs: pairs.to_vec(),
        };
        Self::from_params(kind, params)
    }

    /// Parses `KIND[:key=value,…]`, e.g. `zscore:window=60,threshold=6`, `ewma:span=120`,
    /// `mad:window=60`, `rate:max=50`, `level_shift`, `seasonal:period=1d`, `composite`, or
    /// `threshold:name=M[,min=A][,max=B]`.
    ///
    /// # Examples
    /// ```
    /// use vigil_pipelines::jobs::guard::registry::GuardSpec;
    /// use vigil_operators::ZScore;
    /// assert_eq!(GuardSpec::parse("zscore:window=30").unwrap(), GuardSpec::ZScore(ZScore::new(30, 6.0)));
    /// assert!(GuardSpec::parse("zscore:windw=30").is_err());
    /// assert!(GuardSpec::parse("composite").is_ok());
    /// ```
    pub fn parse(text: &str) -> anyhow::Result<GuardSpec> {
        let (kind, params) = text.split_once(':').unwrap_or((text, ""));
        Self::from_params(kind, Params::parse(text, params)?)
    }

    fn from_params(kind: &str, mut p: Params<'_>) -> anyhow::Result<GuardSpec> {
        let text = p.text.clone();
        let spec = match kind.trim() {
            "zscore" => {
                let mut g = ZScore::default();
                if let Some(w) = p.count("window", 2)? {
                    g.window = w;
                }
                levels(&mut p, &mut g.threshold, &mut g.clear)?;
                p.done("window, threshold and clear")?;
                GuardSpec::ZScore(g)
            }
            "threshold" => {
                let name = p.text("name").map(str::to_owned);
                let (min, max) = (p.number("min")?, p.number("max")?);
                p.done("name, min and max")?;
                let name = name.with_context(|| format!("{text} needs name=METRIC"))?;
                anyhow::ensure!(
                    min.is_some() || max.is_some(),
                    "{text} needs min=… or max=…"
                );
                GuardSpec::Threshold(Threshold::new().bound(&name, min, max))
            }
            "ewma" => {
                let mut g = Ewma::default();
                if let Some(span) = p.count("span", 1)? {
                    g.alpha = alpha_of_span(span);
                }
                if let Some(w) = p.count("warmup", 1)? {
                    g.warmup = w as u32;
                }
                levels(&mut p, &mut g.threshold, &mut g.clear)?;
                p.done("span, warmup, threshold and clear")?;
                GuardSpec::Ewma(g)
            }
            "mad" => {
                let mut g = Mad::default();
                if let Some(w) = p.count("window", 3)? {
                    g.window = w;
                }
                levels(&mut p, &mut g.threshold, &mut g.clear)?;
                p.done("window, threshold and clear")?;
                GuardSpec::Mad(g)
            }
            "rate" => {
                let mut g = match p.positive("max")? {
                    Some(max) => Rate::bounded(max),
                    None => Rate::default(),
                };
                if g.max.is_some() {
                    if let Some(c) = p.number("clear")? {
                        anyhow::ensure!(
                            (0.0..=1.0).contains(&c),
                            "{text}: with max, clear is a share of max between 0 and 1"
                        );
                        g.clear = c;
                    }
                } else {
                    if let Some(span) = p.count("span", 1)? {
                        g.alpha = alpha_of_span(span);
                    }
                    if let Some(order) = p.count("order", 1)? {
                        anyhow::ensure!(
                            order <= 2,
                            "{text}: order is 1 (rates) or 2 (changes of rate)"
                        );
                        g.order = order as u8;
                    }
                    levels(&mut p, &mut g.threshold, &mut g.clear)?;
                }
                p.done("max (units per second) and clear, or span, order, threshold and clear")?;
                GuardSpec::Rate(g)
            }
            "level_shift" => {
                let mut g = LevelShift::default();
                if let Some(span) = p.count("span", 1)? {
                    g.alpha = alpha_of_span(span);
                }
                if let Some(d) = p.number("drift")? {
                    g.drift = d.max(0.0);
                }
                levels(&mut p, &mut g.threshold, &mut g.clear)?;
                p.done("span, drift, threshold and clear")?;
                GuardSpec::LevelShift(g)
            }
            "seasonal" => {
                let mut g = Seasonal::default();
                if let Some(ms) = p.duration_ms("period", 1)? {
                    g.period_ms = ms;
                }
                if let Some(b) = p.count("buckets", 1)? {
                    g.buckets = b as u32;
                }
                levels(&mut p, &mut g.threshold, &mut g.clear)?;
                p.done("period, buckets, threshold and clear")?;
                GuardSpec::Seasonal(g)
            }
            "composite" => {
                let mut g = Composite::default();
                if let Some(w) = p.count("window", 3)? {
                    g.window = w;
                }
                if let Some(r) = p.positive("raise_p")? {
                    g.raise_p = r;
                }
                if let Some(c) = p.positive("clear_p")? {
                    g.clear_p = c;
                }
                if let Some(h) = p.number("hold")? {
                    anyhow::ensure!(h >= 1.0, "{text}: hold must be at least 1");
                    g.hold = h;
                }
                if let Some(r) = p.count("refractory", 0)? {
                    g.refractory = r as u32;
                }
                if let Some(m) = p.positive("memory")? {
                    g.memory = m;
                }
                if let Some(w) = p.count("warmup", 0)? {
                    g.warmup = w as u32;
                }
                anyhow::ensure!(
                    g.raise_p <= g.clear_p && g.clear_p <= 1.0,
                    "{text}: need raise_p ≤ clear_p ≤ 1"
                );
                p.done("window, raise_p, clear_p, hold, refractory, memory and warmup")?;
                GuardSpec::Composite(g)
            }
            "silence" => {
                let mut g = Silence::default();
                if let Some(f) = p.positive("factor")? {
                    g.factor = f;
                }
                if let Some(ms) = p.duration_ms("min", 0)? {
                    g.min_ms = ms;
                }
                if let Some(w) = p.count("warmup", 1)? {
                    g.warmup = w as u32;
                }
                p.done("factor, min and warmup")?;
                GuardSpec::Silence(g)
            }
            "sequence" => {
                let mut g = Sequence::default();
                if let Some(gap) = p.count("max_gap", 0)? {
                    g.max_gap = gap as u64;
                }
                p.done("max_gap")?;
                GuardSpec::Sequence(g)
            }
            "unknown_source" => {
                let registry = p
                    .text("registry")
                    .with_context(|| format!("{text} needs registry=NAME|PATTERN*|…"))?;
                let names: Vec<&str> = registry
                    .split('|')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .collect();
                anyhow::ensure!(!names.is_empty(), "{text}: the registry is empty");
                p.done("registry")?;
                GuardSpec::UnknownSource(Registry::new(names))
            }
            kind @ ("auth_failures" | "late_records" | "schema_violations") => {
                let (kind, mut g) = match kind {
                    "auth_failures" => ("auth_failures", Burst::auth_failures()),
                    "late_records" => ("late_records", Burst::late_records()),
                    _ => ("schema_violations", Burst::schema_violations()),
                };
                if kind == "auth_failures"
                    && let Some(event) = p.text("event")
                {
                    g.event = event.into();
                }
                if let Some(ms) = p.duration_ms("window", 1)? {
                    g.window_ms = ms;
                }
                if let Some(limit) = p.count("limit", 0)? {
                    g.limit = limit as u32;
                    g.clear = g.clear.min(g.limit);
                }
                if let Some(clear) = p.count("clear", 0)? {
                    anyhow::ensure!(
                        clear as u32 <= g.limit,
                        "{text}: clear must be at most limit"
                    );
                    g.clear = clear as u32;
                }
                p.done(if kind == "auth_failures" {
                    "event, window, limit and clear"
                } else {
                    "window, limit and clear"
                })?;
                GuardSpec::Burst(kind, g)
            }
            other => bail!("unknown guard `{other}` in {text}: vigil-guard knows {KNOWN}"),
        };
        Ok(spec)
    }

    /// Parses several `--guard` values into guards with their default reactions; threshold
    /// guards on different metrics merge into one. No value means the z-score guard.
    pub fn parse_all(texts: &[String]) -> anyhow::Result<Vec<ConfiguredGuard>> {
        let mut specs: Vec<GuardSpec> = Vec::new();
        for text in texts {
            match GuardSpec::parse(text)? {
                GuardSpec::Threshold(new) => {
                    if let Some(GuardSpec::Threshold(existing)) = specs
                        .iter_mut()
                        .find(|s| matches!(s, GuardSpec::Threshold(_)))
                    {
                        existing.merge(new);
                    } else {
                        specs.push(GuardSpec::Threshold(new));
                    }
                }
                spec => specs.push(spec),
            }
        }
        if specs.is_empty() {
            specs.push(GuardSpec::ZScore(ZScore::default()));
        }
        Ok(specs
            .into_iter()
            .map(ConfiguredGuard::with_default_reaction)
            .collect())
    }

    /// The name the guard's alerts carry.
    pub fn name(&self) -> &'static str {
        match self {
            GuardSpec::ZScore(_) => "zscore",
            GuardSpec::Threshold(_) => "threshold",
            GuardSpec::Ewma(_) => "ewma",
            GuardSpec::Mad(_) => "mad",
            GuardSpec::Rate(_) => "rate",
            GuardSpec::LevelShift(_) => "level_shift",
            GuardSpec::Seasonal(_) => "seasonal",
            GuardSpec::Composite(_) => "composite",
            GuardSpec::Silence(_) => "silence",
            GuardSpec::Sequence(_) => "sequence",
            GuardSpec::UnknownSource(_) => "unknown_source",
            GuardSpec::Burst(kind, _) => kind,
        }
    }

    /// Whether the guard runs per source rather than per series.
    pub fn per_source(&self) -> bool {
        matches!(
            self,
            GuardSpec::Sequence(_) | GuardSpec::UnknownSource(_) | GuardSpec::Burst(..)
        )
    }

    /// The guard under `label`, ready to run.
    pub fn build(&self, label: GuardLabel) -> Guard {
        match self {
            GuardSpec::ZScore(g) => Guard::new(label, *g),
            GuardSpec::Threshold(g) => Guard::new(label, g.clone()),
            GuardSpec::Ewma(g) => Guard::new(label, *g),
            GuardSpec::Mad(g) => Guard::new(label, *g),
            GuardSpec::Rate(g) => Guard::new(label, *g),
            GuardSpec::LevelShift(g) => Guard::new(label, *g),
            GuardSpec::Seasonal(g) => Guard::new(label, *g),
            GuardSpec::Composite(g) => Guard::new(label, *g),
            GuardSpec::Silence(g) => Guard::new(label, *g),
            GuardSpec::Sequence(g) => Guard::new(label, *g),
            GuardSpec::UnknownSource(g) => Guard::new(label, g.clone()),
            GuardSpec::Burst(_, g) => Guard::new(label, g.clone()),
        }
    }
}

/// The topic a guard's alerts are published to, which decides who reacts to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// What a guard's alerts set off: where they go, how bad they are, and what they mean.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reaction {
    /// The topic the alerts go to.
    pub topic: Topic,
    /// The severity written on the alerts.
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
    pub spec: GuardSpec,
    /// What its alerts set off.
    pub reaction: Reaction,
}

impl ConfiguredGuard {
    /// A guard named after its kind with the catalogue's default reaction.
    pub fn with_default_reaction(spec: GuardSpec) -> Self {
        let entry = catalogue_entry(spec.name());
        Self {
            name: spec.name().to_owned(),
            reaction: entry.map_or_else(
                || Reaction {
                    topic: Topic::TelemetryAlerts,
                    severity: Severity::Warning,
                    description: String::new(),
                },
                CatalogueEntry::reaction,
            ),
            spec,
        }
    }

    /// The guard, ready to run, labelled with its name and reaction.
    pub fn build(&self) -> Guard {
        let label = GuardLabel {
            guard: self.name.as_str().into(),
            severity: self.reaction.severity.as_str().into(),
            reaction: self.reaction.topic.as_str().into(),
        };
        self.spec.build(label)
    }
}

/// One guard kind of the catalogue: its parameters and default reaction.
#[derive(Clone, Copy, Debug)]
pub struct CatalogueEntry {
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
}

impl CatalogueEntry {
    /// The entry's default reaction.
    pub fn reaction(&self) -> Reaction {
        Reaction {
            topic: self.topic,
            severity: self.severity,
            description: self.description.to_owned(),
        }
    }
}

/// Every guard vigil-guard runs, with its default reaction: every alert has someone to react.
pub const CATALOGUE: &[CatalogueEntry] = &[
    CatalogueEntry {
        kind: "zscore",
        parameters: "window=60 threshold=6 clear=3",
        topic: Topic::TelemetryAlerts,
        severity: Severity::Warning,
        description: "A reading is many standard deviations from the mean of the previous readings of its series.",
    },
    CatalogueEntry {
        kind: "threshold",
        parameters: "name=METRIC min=… max=…",
        topic: Topic::TelemetryAlerts,
        severity: Severity::Critical,
        description: "A metric left its fixed safe range.",
    },
    CatalogueEntry {
        kind: "ewma",
        parameters: "span=60 warmup=30 threshold=6 clear=3",
        topic: Topic::TelemetryAlerts,
        severity: Severity::Warning,
        description: "A reading is far from the series' exponentially weighted mean, in weighted deviations.",
    },
    CatalogueEntry {
        kind: "mad",
        parameters: "window=60 threshold=6 clear=3",
        topic: Topic::TelemetryAlerts,
        severity: Severity::Warning,
        description: "A reading is far from the rolling median in robust deviations (MAD), which outliers cannot inflate.",
    },
    CatalogueEntry {
        kind: "rate",
        parameters: "max=UNITS_PER_S clear=0.5 | span=60 order=1 threshold=6 clear=3",
        topic: Topic::TelemetryAlerts,
        severity: Severity::Warning,
        description: "A series changes faster per second of event time than its bound, or than it usually does.",
    },
    CatalogueEntry {
        kind: "level_shift",
        parameters: "span=240 drift=1 threshold=12 clear=6",
        topic: Topic::TelemetryAlerts,
        severity: Severity::Info,
        description: "A series has moved to a new level and stayed there (two-sided CUSUM).",
    },
    CatalogueEntry {
        kind: "seasonal",
        parameters: "period=1d buckets=24 threshold=6 clear=3",
        topic: Topic::TelemetryAlerts,
        severity: Severity::Warning,
        description: "A reading is far from what the series usually does at this time of day.",
    },
    CatalogueEntry {
        kind: "composite",
        parameters: "window=30 memory=2000 raise_p=0.003 clear_p=0.5 hold=1.1 refractory=0 warmup=100",
        topic: Topic::TelemetryAlerts,
        severity: Severity::Warning,
        description: "The statistical guards together find a reading rarer than the series has ever been (calibrated per series).",
    },
    CatalogueEntry {
        kind: "silence",
        parameters: "factor=5 min=1s warmup=5",
        topic: Topic::TelemetryAlerts,
        severity: Severity::Warning,
        description: "A series stopped reporting for longer than factor × its usual interval (in event time); clears when data returns.",
    },
    CatalogueEntry {
        kind: "sequence",
        parameters: "max_gap=0",
        topic: Topic::SecurityGuardFeed,
        severity: Severity::Warning,
        description: "A source's sequence numbers skipped (records lost or withheld), repeated or went back (a replay).",
    },
    CatalogueEntry {
        kind: "unknown_source",
        parameters: "registry=NAME|PATTERN*|…",
        topic: Topic::SecurityGuardFeed,
        severity: Severity::Critical,
        description: "A source that is not in the registry of known sources sent data.",
    },
    CatalogueEntry {
        kind: "auth_failures",
        parameters: "event=AUTH_FAILURE window=1m limit=5 clear=2",
        topic: Topic::SecurityGuardFeed,
        severity: Severity::Critical,
        description: "A burst of failed authentications from one source (more than limit within window).",
    },
    CatalogueEntry {
        kind: "late_records",
        parameters: "window=10m limit=0 clear=0",
        topic: Topic::SecurityGuardFeed,
        severity: Severity::Warning,
        description: "A source sent records later than the allowed lateness (out of order or replayed from the past).",
    },
    CatalogueEntry {
        kind: "schema_violations",
        parameters: "window=10m limit=0 clear=0",
        topic: Topic::SecurityGuardFeed,
        severity: Severity::Warning,
        description: "An input produced malformed or mistyped records (the source is the input file).",
    },
];

/// The catalogue entry of a guard kind.
pub fn catalogue_entry(kind: &str) -> Option<&'static CatalogueEntry> {
    CATALOGUE.iter().find(|e| e.kind == kind)
}
