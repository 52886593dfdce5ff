//! The `[[guard]]` tables: each a name, a reaction, and one guard table whose keys are that
//! kind's parameters, read by the guard registry as `--guard` reads them.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use crate::jobs::guard::registry::params::Table;
use crate::jobs::guard::registry::{CATALOGUE, ConfiguredGuard, GuardKind, GuardParams, Reaction};

/// One `[[guard]]`: exactly one guard table (`[guard.zscore]`, …; the kinds and their
/// parameters are the registry's [`CATALOGUE`]) and its `[guard.reaction]`.
#[derive(Clone, Debug, PartialEq)]
pub struct GuardConfig {
    /// The name alerts carry in `guard`; the kind when absent.
    pub name: Option<String>,
    /// What the guard's alerts set off. Required: every guard has a reaction.
    pub reaction: Reaction,
    /// The guard its table describes, the parameters read and checked.
    pub params: GuardParams,
}

/// `[guard.zscore], [guard.threshold], …`, for messages.
fn guard_tables() -> String {
    let tables: Vec<String> = CATALOGUE
        .iter()
        .map(|k| format!("[guard.{}]", k.kind))
        .collect();
    tables.join(", ")
}

impl<'de> Deserialize<'de> for GuardConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(deserializer)?;
        let name = table
            .remove("name")
            .map(String::deserialize)
            .transpose()
            .map_err(|e| D::Error::custom(format!("name: {}", e.message())))?;
        let reaction = table
            .remove("reaction")
            .ok_or_else(|| D::Error::missing_field("reaction"))?;
        let reaction = Reaction::deserialize(reaction)
            .map_err(|e| D::Error::custom(format!("reaction: {}", e.message())))?;
        // What is left names the guard.
        let mut guards: Vec<(&GuardKind, toml::Value)> = Vec::new();
        for (key, value) in table {
            let kind = GuardKind::named(&key).ok_or_else(|| {
                D::Error::custom(format!(
                    "unknown key `{key}` in [[guard]]: it has name, reaction and one guard table \
                     of {}",
                    guard_tables()
                ))
            })?;
            guards.push((kind, value));
        }
        let (kind, params) = match guards.len() {
            1 => guards.remove(0),
            0 => {
                return Err(D::Error::custom(format!(
                    "has no guard table: add one of {}",
                    guard_tables()
                )));
            }
            _ => {
                let kinds: Vec<&str> = guards.iter().map(|(k, _)| k.kind).collect();
                return Err(D::Error::custom(format!(
                    "has several guard tables ({}): one [[guard]] runs one guard",
                    kinds.join(", ")
                )));
            }
        };
        let toml::Value::Table(table) = params else {
            return Err(D::Error::custom(format!(
                "[guard.{}] is not a table of parameters",
                kind.kind
            )));
        };
        let params = kind
            .read(Table::from_toml("", table))
            .map_err(|e| D::Error::custom(format!("[guard.{}]: {e}", kind.kind)))?;
        Ok(GuardConfig {
            name,
            reaction,
            params,
        })
    }
}

impl GuardConfig {
    /// The guard as the job runs it; `context` says which `[[guard]]` it is, for messages.
    pub(super) fn to_runtime(&self, context: &str) -> anyhow::Result<ConfiguredGuard> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| self.params.name().to_owned());
        anyhow::ensure!(!name.trim().is_empty(), "{context}: name must not be empty");
        anyhow::ensure!(
            !self.reaction.description.trim().is_empty(),
            "{context}: reaction.description must say what the alert means"
        );
        Ok(ConfiguredGuard {
            name,
            params: self.params.clone(),
            reaction: self.reaction.clone(),
        })
    }
}
