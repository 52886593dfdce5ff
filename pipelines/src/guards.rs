//! Guard specifications as users write them (`zscore:window=60,threshold=6`) and their wiring.

use anyhow::{Context, bail};
use vigil_operators::{Guard, GuardLabel, Threshold, ZScore};

/// A guard to run, with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum GuardSpec {
    /// Rolling z-score per series.
    ZScore(ZScore),
    /// Fixed bounds per metric name.
    Threshold(Threshold),
}

impl GuardSpec {
    /// Parses `zscore[:window=N,threshold=X]` or `threshold:name=M[,min=A][,max=B]`.
    ///
    /// # Examples
    /// ```
    /// use vigil_pipelines::guards::GuardSpec;
    /// use vigil_operators::ZScore;
    /// assert_eq!(GuardSpec::parse("zscore:window=30").unwrap(), GuardSpec::ZScore(ZScore::new(30, 6.0)));
    /// assert!(GuardSpec::parse("zscore:windw=30").is_err());
    /// ```
    pub fn parse(text: &str) -> anyhow::Result<GuardSpec> {
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
        let number = |key: &str, value: &str| -> anyhow::Result<f64> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .with_context(|| format!("{key}={value} in --guard {text} is not a number"))
        };
        match kind.trim() {
            "zscore" => {
                let mut guard = ZScore::default();
                let mut clear = None;
                for (key, value) in pairs {
                    match key {
                        "window" => {
                            guard.window = value.parse().ok().filter(|w| *w >= 2).with_context(|| {
                                format!("window={value} in --guard {text} must be a whole number of at least 2")
                            })?
                        }
                        "threshold" => guard.threshold = number(key, value)?,
                        "clear" => clear = Some(number(key, value)?),
                        other => bail!("unknown zscore parameter `{other}` in --guard {text}: use window, threshold and clear"),
                    }
                }
                guard.clear = clear.unwrap_or(guard.threshold / 2.0);
                anyhow::ensure!(
                    guard.clear <= guard.threshold && guard.threshold > 0.0,
                    "--guard {text}: threshold must be positive and clear at most threshold"
                );
                Ok(GuardSpec::ZScore(guard))
            }
            "threshold" => {
                let (mut name, mut min, mut max) = (None, None, None);
                for (key, value) in pairs {
                    match key {
                        "name" => name = Some(value.to_owned()),
                        "min" => min = Some(number(key, value)?),
                        "max" => max = Some(number(key, value)?),
                        other => bail!(
                            "unknown threshold parameter `{other}` in --guard {text}: use name, min and max"
                        ),
                    }
                }
                let name = name.with_context(|| format!("--guard {text} needs name=METRIC"))?;
                anyhow::ensure!(
                    min.is_some() || max.is_some(),
                    "--guard {text} needs min=… or max=…"
                );
                Ok(GuardSpec::Threshold(
                    Threshold::new().bound(&name, min, max),
                ))
            }
            other => bail!("unknown guard `{other}`: vigil-guard knows zscore and threshold"),
        }
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
        }
    }

    /// The guard, ready to run.
    pub fn build(&self) -> Guard {
        let label = GuardLabel::new(self.name());
        match self {
            GuardSpec::ZScore(logic) => Guard::new(label, *logic),
            GuardSpec::Threshold(logic) => Guard::new(label, logic.clone()),
        }
    }
}
