//! The job file of `vigil-archaeology --config FILE.toml`: each operator's table is one serde
//! struct whose defaults are the job's ([`ArchaeologyParams::default`]), read with messages
//! that name the table and the key.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use vigil_operators::archaeology::entanglements::EntangleParams;
use vigil_operators::archaeology::field::FieldParams;
use vigil_operators::archaeology::motifs::MotifParams;
use vigil_operators::archaeology::sequences::SequenceParams;

use super::{ArchiveConfig, InputConfig, MetricsConfig, ReplicaConfig, apply_io};
use crate::jobs::archaeology::{ArchaeologyParams, SessionKey, SessionParams};
use crate::jobs::engine::settings::Settings;
use crate::jobs::guard::registry::params::{Table, duration};

/// A `vigil-archaeology` job (`--config FILE.toml`). Every table and key is optional; what is
/// left out keeps its default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchaeologyConfig {
    /// What the job reads (files, the dataset or a generator).
    #[serde(default)]
    pub input: InputConfig,
    /// Where patterns, sessions, entanglements and dead letters are archived.
    #[serde(default)]
    pub archive: ArchiveConfig,
    /// Timely worker threads.
    pub workers: Option<usize>,
    /// How many patterns the end-of-run report shows (`--top` overrides it).
    #[serde(default = "default_top")]
    pub top: usize,
    /// `[sequences]`: sequential patterns.
    #[serde(default, deserialize_with = "table")]
    pub sequences: SequencesConfig,
    /// `[motifs]`: recurring shapes in each reading series.
    #[serde(default, deserialize_with = "table")]
    pub motifs: MotifsConfig,
    /// `[entanglements]`: sources whose events come together more often than chance.
    #[serde(default, deserialize_with = "table")]
    pub entanglements: EntanglementsConfig,
    /// `[sessions]`: session windows per room or per source.
    #[serde(default, deserialize_with = "table")]
    pub sessions: SessionsConfig,
    /// `[field]`: the bounded summary of all activity.
    #[serde(default, deserialize_with = "table")]
    pub field: FieldConfig,
    /// `[replica]`: the SQL replica patterns, sessions and entanglements are upserted into.
    #[serde(default)]
    pub replica: ReplicaConfig,
    /// `[metrics]`: where metrics, health and readiness are served.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

impl Default for ArchaeologyConfig {
    fn default() -> Self {
        Self {
            input: InputConfig::default(),
            archive: ArchiveConfig::default(),
            workers: None,
            top: default_top(),
            sequences: SequencesConfig::default(),
            motifs: MotifsConfig::default(),
            entanglements: EntanglementsConfig::default(),
            sessions: SessionsConfig::default(),
            field: FieldConfig::default(),
            replica: ReplicaConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

fn default_top() -> usize {
    ArchaeologyParams::default().top
}

/// An operator's table, named in messages.
trait Named: DeserializeOwned {
    /// The table's name in the file.
    const TABLE: &'static str;
}

/// Reads an operator's table with messages that name the key: `entanglements.delta = "soon":
/// not a duration …`.
fn table<'de, D: Deserializer<'de>, T: Named>(deserializer: D) -> Result<T, D::Error> {
    let table = toml::Table::deserialize(deserializer)?;
    Table::from_toml(&format!("{}.", T::TABLE), table)
        .read()
        .map_err(D::Error::custom)
}

/// The `[sequences]` table.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SequencesConfig {
    /// The longest pattern, in events (2 to 8; default 3).
    pub max_len: usize,
    /// Events of a pattern follow each other within this much event time (default `3s`).
    #[serde(with = "duration")]
    pub max_gap: Duration,
    /// Distinct sources that must show a pattern (default 2).
    pub min_support: u64,
    /// Occurrences a pattern needs in all (default 2).
    pub min_occurrences: u64,
}

impl Named for SequencesConfig {
    const TABLE: &'static str = "sequences";
}

impl Default for SequencesConfig {
    fn default() -> Self {
        let p = ArchaeologyParams::default().sequences;
        Self {
            max_len: p.max_len,
            max_gap: Duration::from_millis(p.max_gap_ms),
            min_support: p.min_support,
            min_occurrences: p.min_occurrences,
        }
    }
}

impl SequencesConfig {
    /// The operator's parameters.
    pub fn params(&self) -> SequenceParams {
        SequenceParams {
            max_len: self.max_len,
            max_gap_ms: millis(self.max_gap),
            min_support: self.min_support,
            min_occurrences: self.min_occurrences,
        }
    }
}

/// The `[motifs]` table.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MotifsConfig {
    /// Whether motifs are looked for (default true).
    pub enabled: bool,
    /// Readings per subsequence (default 16).
    pub window: usize,
    /// PAA segments per subsequence, the SAX word's length; divides `window` (default 4).
    pub segments: usize,
    /// Letters of the SAX alphabet (3 to 8; default 4).
    pub alphabet: usize,
    /// Motifs reported per series (default 3).
    pub top_k: usize,
    /// Occurrences a motif needs (default 3).
    pub min_count: u64,
}

impl Named for MotifsConfig {
    const TABLE: &'static str = "motifs";
}

impl Default for MotifsConfig {
    fn default() -> Self {
        let enabled = ArchaeologyParams::default().motifs;
        let p = enabled.unwrap_or_default();
        Self {
            enabled: enabled.is_some(),
            window: p.window,
            segments: p.segments,
            alphabet: p.alphabet,
            top_k: p.top_k,
            min_count: p.min_count,
        }
    }
}

impl MotifsConfig {
    /// The operator's parameters; `None` when motifs are not looked for.
    pub fn params(&self) -> Option<MotifParams> {
        self.enabled.then_some(MotifParams {
            window: self.window,
            segments: self.segments,
            alphabet: self.alphabet,
            top_k: self.top_k,
            min_count: self.min_count,
        })
    }
}

/// The `[entanglements]` table.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EntanglementsConfig {
    /// Two events come together when at most this far apart (default `1500ms`).
    #[serde(with = "duration")]
    pub delta: Duration,
    /// Counted over this much event time (default `10m`).
    #[serde(with = "duration")]
    pub window: Duration,
    /// Evaluated every this much event time (default `1m`); each evaluation visits every pair
    /// that came together in the window.
    #[serde(with = "duration")]
    pub every: Duration,
    /// Events together a pair needs (default 5).
    pub min_count: u64,
    /// Times more than the average pair (default 1.5).
    pub min_lift: f64,
}

impl Named for EntanglementsConfig {
    const TABLE: &'static str = "entanglements";
}

impl Default for EntanglementsConfig {
    fn default() -> Self {
        let p = ArchaeologyParams::default().entanglements;
        Self {
            delta: Duration::from_millis(p.delta_ms),
            window: Duration::from_millis(p.window_ms),
            every: Duration::from_millis(p.every_ms),
            min_count: p.min_count,
            min_lift: p.min_lift,
        }
    }
}

impl EntanglementsConfig {
    /// The operator's parameters.
    pub fn params(&self) -> EntangleParams {
        EntangleParams {
            delta_ms: millis(self.delta),
            window_ms: millis(self.window),
            every_ms: millis(self.every),
            min_count: self.min_count,
            min_lift: self.min_lift,
        }
    }
}

/// The `[sessions]` table.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// `room` (by an attribute of the event, default) or `source`.
    pub by: SessionBy,
    /// The attribute that names the room (default `room`); only with `by = "room"`.
    pub room_attr: Option<String>,
    /// A session ends after this much event time without an event (default `30s`).
    #[serde(with = "duration")]
    pub gap: Duration,
}

/// What sessions are kept by, as the file names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionBy {
    /// An attribute of the event (`room_attr`).
    #[default]
    Room,
    /// The event's source.
    Source,
}

impl Named for SessionsConfig {
    const TABLE: &'static str = "sessions";
}

impl Default for SessionsConfig {
    fn default() -> Self {
        let p = SessionParams::default();
        Self {
            by: match p.by {
                SessionKey::Room(_) => SessionBy::Room,
                SessionKey::Source => SessionBy::Source,
            },
            room_attr: None,
            gap: Duration::from_millis(p.gap_ms),
        }
    }
}

impl SessionsConfig {
    /// The job's session parameters.
    ///
    /// # Errors
    /// When the room attribute is empty, or given for sessions by source.
    pub fn params(&self) -> anyhow::Result<SessionParams> {
        let by = match self.by {
            SessionBy::Room => {
                let attr = self.room_attr.clone().unwrap_or_else(|| "room".into());
                anyhow::ensure!(!attr.is_empty(), "sessions.room_attr is empty");
                SessionKey::Room(attr)
            }
            SessionBy::Source => {
                anyhow::ensure!(
                    self.room_attr.is_none(),
                    "sessions.room_attr is set but sessions.by is \"source\": drop one"
                );
                SessionKey::Source
            }
        };
        Ok(SessionParams {
            gap_ms: millis(self.gap),
            by,
        })
    }
}

/// The `[field]` table.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldConfig {
    /// Resonance and active sources are taken over this much event time (default `60s`).
    #[serde(with = "duration")]
    pub window: Duration,
    /// A snapshot every this much event time (default `10s`).
    #[serde(with = "duration")]
    pub every: Duration,
    /// Events at least this intense are kept as memory particles (default 0.8).
    pub high_intensity: f64,
    /// Memory particles kept (default 1000).
    pub particles: usize,
    /// Snapshots kept (default 10).
    pub snapshots: usize,
}

impl Named for FieldConfig {
    const TABLE: &'static str = "field";
}

impl Default for FieldConfig {
    fn default() -> Self {
        let p = ArchaeologyParams::default().field;
        Self {
            window: Duration::from_millis(p.window_ms),
            every: Duration::from_millis(p.every_ms),
            high_intensity: p.high_intensity,
            particles: p.particles,
            snapshots: p.snapshots,
        }
    }
}

impl FieldConfig {
    /// The operator's parameters.
    pub fn params(&self) -> FieldParams {
        FieldParams {
            window_ms: millis(self.window),
            every_ms: millis(self.every),
            high_intensity: self.high_intensity,
            particles: self.particles,
            snapshots: self.snapshots,
        }
    }
}

/// Whole milliseconds, as the operators count event time.
fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl ArchaeologyConfig {
    /// Reads and checks a config file; errors name the file and the key.
    pub fn load(path: &Path) -> anyhow::Result<ArchaeologyConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Sets what the file configures on `settings`, and every parameter in `params` (what the file
    /// leaves out, to its default), checking every value.
    pub fn apply(
        &self,
        file: &Path,
        settings: &mut Settings,
        params: &mut ArchaeologyParams,
    ) -> anyhow::Result<()> {
        let name = file.display();
        anyhow::ensure!(
            self.archive.scores.is_none(),
            "{name}: archive.scores is a vigil-guard setting; the archaeology job archives no scores"
        );
        if let Some(state) = apply_io(&self.input, &self.archive, self.workers, file, settings)? {
            params.carry = Some(state);
        }
        self.replica.apply(file, settings)?;
        self.metrics.apply(file, settings)?;
        params.top = self.top;

        params.sequences = self.sequences.params();
        params
            .sequences
            .validate()
            .map_err(|e| anyhow::anyhow!("{name}: sequences: {e}"))?;

        params.motifs = self.motifs.params();
        if let Some(motifs) = &params.motifs {
            motifs
                .validate()
                .map_err(|e| anyhow::anyhow!("{name}: motifs: {e}"))?;
        }

        let ent = self.entanglements.params();
        anyhow::ensure!(
            ent.every_ms > 0 && ent.window_ms >= ent.every_ms.max(ent.delta_ms),
            "{name}: entanglements.every must be positive, and neither it nor entanglements.delta longer than entanglements.window"
        );
        anyhow::ensure!(
            ent.min_lift.is_finite() && ent.min_lift > 0.0,
            "{name}: entanglements.min_lift must be a positive number"
        );
        params.entanglements = ent;

        params.sessions = self
            .sessions
            .params()
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;

        let field = self.field.params();
        anyhow::ensure!(
            field.every_ms > 0 && field.window_ms > 0,
            "{name}: field.window and field.every must be positive"
        );
        params.field = field;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_default_to_the_jobs_defaults() {
        let mut params = ArchaeologyParams {
            top: 0,
            motifs: None,
            ..ArchaeologyParams::default()
        };
        ArchaeologyConfig::default()
            .apply(Path::new("job.toml"), &mut Settings::default(), &mut params)
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(params, ArchaeologyParams::default());
    }

    #[test]
    fn messages_name_the_table_and_the_key() {
        let err = |text: &str| {
            toml::from_str::<ArchaeologyConfig>(text)
                .expect_err(text)
                .to_string()
        };
        let e = err("[entanglements]\ndelta = \"soon\"\n");
        assert!(
            e.contains("entanglements.delta = \"soon\": not a duration"),
            "{e}"
        );
        let e = err("[sessions]\nby = \"hall\"\n");
        assert!(
            e.contains("sessions.by = \"hall\": unknown variant `hall`"),
            "{e}"
        );
        let e = err("[field]\nparticles = -1\n");
        assert!(
            e.contains("field.particles = -1: must not be negative"),
            "{e}"
        );
        let e = err("[motifs]\nwindows = 3\n");
        assert!(e.contains("unknown parameter `windows`"), "{e}");
    }
}
