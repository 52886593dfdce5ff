//! The `[replica]` table, and the replica flags applied over it.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use super::paths::relative_to;
use crate::connect::replica::ReplicaUrl;
use crate::jobs::engine::settings::Settings;
use crate::runtime::secrets::SecretUrl;
use crate::sinks::replica::{Bulk, DEFAULT_REPLICA, Output, ReplicaParams};

/// The `[replica]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// `postgres://…`, `sqlite://PATH` (relative to the config file) or `none`; shown with its
    /// password hidden.
    pub url: Option<SecretUrl>,
    /// A role to take after connecting, e.g. `observer_writer`.
    pub role: Option<String>,
    /// Apply vigil's migrations at start-up.
    pub migrate: Option<bool>,
    /// The tables written (`["default", "telemetry_meta"]`, say); see `--replica-tables`.
    pub tables: Option<Vec<String>>,
    /// Replicate the encrypted payloads too (in `telemetry_meta`, which this adds).
    pub replicate_payload: Option<bool>,
    /// Rows after which a batch is written.
    pub batch_rows: Option<usize>,
    /// Time after which a batch is written, e.g. `"500ms"`.
    pub batch_interval: Option<String>,
    /// How rows reach a PostgreSQL-protocol replica: `auto` (binary COPY on PostgreSQL,
    /// array parameters on CockroachDB), `copy` or `arrays`.
    pub bulk: Option<String>,
}

impl ReplicaConfig {
    /// Sets what the table configures on `settings`.
    pub fn apply(&self, file: &Path, settings: &mut Settings) -> anyhow::Result<()> {
        if let Some(url) = &self.url {
            let url = match url.strip_prefix("sqlite://") {
                Some(path) if !Path::new(path).is_absolute() => {
                    format!("sqlite://{}", relative_to(file, Path::new(path)).display())
                }
                _ => url.expose().to_owned(),
            };
            set_replica_url(settings, &url)
                .with_context(|| format!("{}: replica.url", file.display()))?;
        }
        // Every value is checked, whether or not the job has a replica to set it on.
        let interval = match &self.batch_interval {
            Some(text) => Some(humantime::parse_duration(text).map_err(|e| {
                anyhow::anyhow!(
                    "{}: replica.batch_interval = {text:?} is not a duration ({e}); write e.g. \
                     \"500ms\"",
                    file.display()
                )
            })?),
            None => None,
        };
        let bulk = match &self.bulk {
            Some(text) => Some(
                Bulk::parse(text).with_context(|| format!("{}: replica.bulk", file.display()))?,
            ),
            None => None,
        };
        let tables = match &self.tables {
            Some(names) => Some(
                Output::parse_list(names.iter().map(String::as_str))
                    .with_context(|| format!("{}: replica.tables", file.display()))?,
            ),
            None => None,
        };
        if let Some(options) = &mut settings.replica {
            if let Some(tables) = tables {
                options.tables = tables;
            }
            if let Some(role) = &self.role {
                options.role = Some(role.clone());
            }
            if let Some(migrate) = self.migrate {
                options.migrate = migrate;
            }
            if let Some(payload) = self.replicate_payload {
                options.set_replicate_payload(payload);
            }
            if let Some(rows) = self.batch_rows {
                options.batch_rows = rows.max(1);
            }
            if let Some(interval) = interval {
                options.batch_interval = interval;
            }
            if let Some(bulk) = bulk {
                options.bulk = bulk;
            }
        }
        Ok(())
    }
}

/// The replica of a job run from the command line with none configured.
pub fn default_replica() -> anyhow::Result<ReplicaParams> {
    Ok(ReplicaParams::new(ReplicaUrl::parse(DEFAULT_REPLICA)?))
}

/// Points the job's replica at `url` (`none` turns it off), keeping its other settings.
fn set_replica_url(settings: &mut Settings, url: &str) -> anyhow::Result<()> {
    settings.replica = match url {
        "none" | "off" => None,
        url => {
            let url = ReplicaUrl::parse(url)?;
            Some(match settings.replica.take() {
                Some(options) => ReplicaParams { url, ..options },
                None => ReplicaParams::new(url),
            })
        }
    };
    Ok(())
}

/// Applies the replica flags of the command line (after any config file).
pub fn apply_replica_flags(
    settings: &mut Settings,
    url: Option<&str>,
    role: Option<&str>,
    tables: Option<&str>,
    migrate: bool,
    replicate_payload: bool,
) -> anyhow::Result<()> {
    if let Some(url) = url {
        set_replica_url(settings, url).context("--replica")?;
    }
    let tables = match tables {
        Some(list) => Some(Output::parse_list(list.split(',')).context("--replica-tables")?),
        None => None,
    };
    if let Some(options) = &mut settings.replica {
        if let Some(role) = role {
            options.role = Some(role.to_owned());
        }
        if let Some(tables) = tables {
            options.tables = tables;
        }
        options.migrate |= migrate;
        if replicate_payload {
            options.set_replicate_payload(true);
        }
    }
    Ok(())
}
