//! Messages that can never be delivered, written to `dead-letters.ndjson` with the reason
//! (sealed again when a key is configured) and counted as delivered.

use std::fs::OpenOptions;
use std::io::Write;

use anyhow::Context;
use serde_json::{Map, Value};
use tracing::warn;

use super::wal::Spill;
use crate::runtime::durable;

/// The file records that can never be delivered go to, in the spill directory.
pub const DEAD_LETTERS: &str = "dead-letters.ndjson";

impl Spill {
    /// Puts message `seq`, which can never be delivered, in the dead-letter file with
    /// `reason`, and counts it as delivered. The message is sealed again when a key is
    /// configured, so the dead-letter file keeps it as confidential as the spill did.
    pub fn dead_letter(&mut self, seq: u64, reason: &str, message: &[u8]) -> anyhow::Result<()> {
        let mut entry = Map::new();
        match &self.key {
            Some(key) => {
                let sealed = key.seal(&dead_letter_aad(seq), message, &mut rand::rng());
                entry.insert("key_id".into(), Value::String(key.key_id().to_string()));
                entry.insert("sealed_hex".into(), Value::String(hex::encode(sealed)));
            }
            None => match std::str::from_utf8(message) {
                Ok(text) => {
                    entry.insert("message".into(), Value::String(text.to_owned()));
                }
                Err(_) => {
                    entry.insert("message_hex".into(), Value::String(hex::encode(message)));
                }
            },
        }
        self.write_dead_letter(seq, reason, entry)?;
        self.settle(seq);
        self.persist(false)
    }

    /// Appends an entry to the dead-letter file, synced.
    pub(super) fn write_dead_letter(
        &mut self,
        seq: u64,
        reason: &str,
        mut entry: Map<String, Value>,
    ) -> anyhow::Result<()> {
        entry.insert("seq".into(), Value::from(seq));
        entry.insert("reason".into(), Value::String(reason.to_owned()));
        entry.insert("at".into(), Value::String(chrono::Utc::now().to_rfc3339()));
        let path = self.dir.join(DEAD_LETTERS);
        let created = !path.exists();
        let mut line = serde_json::to_vec(&Value::Object(entry))?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .with_context(|| format!("writing {}", path.display()))?;
        if created {
            durable::sync_dir(&self.dir)
                .with_context(|| format!("syncing {}", self.dir.display()))?;
        }
        self.dead_lettered += 1;
        warn!(message = "A spilled message can never be delivered; it is kept in the dead-letter file and skipped.", seq, reason, file = %path.display());
        Ok(())
    }
}

/// Associated data of a sealed dead letter.
fn dead_letter_aad(seq: u64) -> String {
    format!("vigil-spill-dead-{seq}")
}
