//! Guard specifications as users write them (`zscore:window=60,threshold=6`) and their wiring.

use anyhow::{Context, bail};
use vigil_operators::{
    Composite, Ewma, Guard, GuardLabel, LevelShift, Mad, Rate, Seasonal, Threshold, ZScore,
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
}

/// The guards `--guard` knows, for messages.
const KNOWN: &str = "zscore, threshold, ewma, mad, rate, level_shift, seasonal and composite";

/// Parameters as `key=value` pairs, each to be taken once by the guard's parser.
struct Params<'a> {
    text: &'a str,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Params<'a> {
    fn parse(text: &'a str, params: &'a str) -> anyhow::Result<Self> {
        let pairs = params
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.trim(), v.trim()))
                    .with_context(|| format!("`{p}` in --guard {text} is not key=value"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self { text, pairs })
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
            .with_context(|| format!("{key}={value} in --guard {} is not a number", self.text))
    }

    /// A positive number for `key`, if given.
    fn positive(&mut self, key: &str) -> anyhow::Result<Option<f64>> {
        let value = self.number(key)?;
        if let Some(v) = value {
            anyhow::ensure!(
                v > 0.0,
                "{key}={v} in --guard {} must be positive",
                self.text
            );
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
                    "{key}={value} in --guard {} must be a whole number of at least {min}",
                    self.text
                )
            })
    }

    /// A text value for `key`, if given.
    fn text(&mut self, key: &str) -> Option<&'a str> {
        let at = self.pairs.iter().position(|(k, _)| *k == key)?;
        Some(self.pairs.remove(at).1)
    }

    /// Fails on any parameter no parser took.
    fn done(self, known: &str) -> anyhow::Result<()> {
        match self.pairs.first() {
            Some((key, _)) => bail!(
                "unknown parameter `{key}` in --guard {}: use {known}",
                self.text
            ),
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
        "--guard {}: clear must be between 0 and threshold",
        p.text
    );
    Ok(())
}

/// A span in readings as an EWMA weight.
fn alpha_of_span(span: usize) -> f64 {
    2.0 / (span as f64 + 1.0)
}

impl GuardSpec {
    /// Parses `KIND[:key=value,…]`, e.g. `zscore:window=60,threshold=6`, `ewma:span=120`,
    /// `mad:window=60`, `rate:max=50`, `level_shift`, `seasonal:period=1d`, `composite`, or
    /// `threshold:name=M[,min=A][,max=B]`.
    ///
    /// # Examples
    /// ```
    /// use vigil_pipelines::guards::GuardSpec;
    /// use vigil_operators::ZScore;
    /// assert_eq!(GuardSpec::parse("zscore:window=30").unwrap(), GuardSpec::ZScore(ZScore::new(30, 6.0)));
    /// assert!(GuardSpec::parse("zscore:windw=30").is_err());
    /// assert!(GuardSpec::parse("composite").is_ok());
    /// ```
    pub fn parse(text: &str) -> anyhow::Result<GuardSpec> {
        let (kind, params) = text.split_once(':').unwrap_or((text, ""));
        let mut p = Params::parse(text, params)?;
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
                let name = name.with_context(|| format!("--guard {text} needs name=METRIC"))?;
                anyhow::ensure!(
                    min.is_some() || max.is_some(),
                    "--guard {text} needs min=… or max=…"
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
                            "--guard {text}: with max, clear is a share of max between 0 and 1"
                        );
                        g.clear = c;
                    }
                } else {
                    if let Some(span) = p.count("span", 1)? {
                        g.alpha = alpha_of_span(span);
                    }
                    levels(&mut p, &mut g.threshold, &mut g.clear)?;
                }
                p.done("max (units per second) and clear, or span, threshold and clear")?;
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
                if let Some(period) = p.text("period") {
                    let d = humantime::parse_duration(period).with_context(|| {
                        format!(
                            "period={period} in --guard {text} is not a duration (e.g. 1d, 12h)"
                        )
                    })?;
                    anyhow::ensure!(d.as_millis() > 0, "--guard {text}: period must be positive");
                    g.period_ms = d.as_millis() as i64;
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
                    anyhow::ensure!(h >= 1.0, "--guard {text}: hold must be at least 1");
                    g.hold = h;
                }
                if let Some(m) = p.positive("memory")? {
                    g.memory = m;
                }
                if let Some(w) = p.count("warmup", 0)? {
                    g.warmup = w as u32;
                }
                anyhow::ensure!(
                    g.raise_p <= g.clear_p && g.clear_p <= 1.0,
                    "--guard {text}: need raise_p ≤ clear_p ≤ 1"
                );
                p.done("window, raise_p, clear_p, hold, memory and warmup")?;
                GuardSpec::Composite(g)
            }
            other => bail!("unknown guard `{other}`: vigil-guard knows {KNOWN}"),
        };
        Ok(spec)
    }

    /// Parses several `--guard` values; threshold guards on different metrics merge into one.
    pub fn parse_all(texts: &[String]) -> anyhow::Result<Vec<GuardSpec>> {
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
        Ok(specs)
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
        }
    }

    /// The guard, ready to run.
    pub fn build(&self) -> Guard {
        let label = GuardLabel::new(self.name());
        match self {
            GuardSpec::ZScore(g) => Guard::new(label, *g),
            GuardSpec::Threshold(g) => Guard::new(label, g.clone()),
            GuardSpec::Ewma(g) => Guard::new(label, *g),
            GuardSpec::Mad(g) => Guard::new(label, *g),
            GuardSpec::Rate(g) => Guard::new(label, *g),
            GuardSpec::LevelShift(g) => Guard::new(label, *g),
            GuardSpec::Seasonal(g) => Guard::new(label, *g),
            GuardSpec::Composite(g) => Guard::new(label, *g),
        }
    }
}
