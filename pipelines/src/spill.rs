//! The local spill: a write-ahead log of outgoing messages (alerts) on local disk, so that a
//! message handed to a broker that is away is neither lost nor kept only in memory.
//!
//! Every message is appended (sealed with AES-256-GCM when a key is configured) with a sequence
//! number before it is sent; the producer's acknowledgements move a `drained` mark over the
//! delivered prefix. On start, whatever lies past the mark is sent again first, in order, so a
//! crash while the broker is unreachable loses nothing (a message may be sent twice; alert ids
//! let consumers de-duplicate). The log is bounded: when it holds more than its limit of
//! undelivered bytes, appending waits for the broker instead of growing further.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::crypto::PayloadKey;

/// Log bytes after which a fully drained log is emptied.
const COMPACT_AT: u64 = 1 << 20;

/// The spill of one output.
pub struct Spill {
    dir: PathBuf,
    log: BufWriter<File>,
    /// Bytes in the log file.
    len: u64,
    /// The sequence number of the next message.
    next: u64,
    /// Every message up to and including this one is delivered.
    drained: u64,
    /// Undelivered bytes the log may hold before appending waits.
    max_bytes: u64,
    /// Size of every undelivered record, in order, and their sum.
    sizes: std::collections::VecDeque<(u64, u64)>,
    pending_bytes: u64,
    /// Appended since the last sync.
    dirty: bool,
    key: Option<PayloadKey>,
}

/// What a reopened spill still has to send: (sequence number, message), in order.
pub type Undelivered = Vec<(u64, Vec<u8>)>;

impl Spill {
    /// Opens (or creates) the spill in `dir`, sealing with `key` when given; returns the
    /// messages a previous run did not get delivered.
    pub fn open(
        dir: &Path,
        key: Option<PayloadKey>,
        max_bytes: u64,
    ) -> anyhow::Result<(Spill, Undelivered)> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the spill directory {}", dir.display()))?;
        let drained = match std::fs::read_to_string(dir.join("drained")) {
            Ok(text) => text
                .trim()
                .parse()
                .with_context(|| format!("{}/drained is not a number", dir.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).context("reading the spill's drained mark"),
        };
        let path = dir.join("spill.log");
        let mut bytes = Vec::new();
        if let Ok(mut file) = File::open(&path) {
            file.read_to_end(&mut bytes)
                .context("reading the spill log")?;
        }
        let mut undelivered = Vec::new();
        let mut sizes = std::collections::VecDeque::new();
        let (mut at, mut last) = (0usize, drained);
        // A record: sequence (u64), sealed flag (u8), length (u32), bytes. A record cut short
        // by a crash ends the log.
        while let Some(header) = bytes.get(at..at + 13) {
            let seq = u64::from_le_bytes(header[..8].try_into().unwrap_or_default());
            let sealed = header[8] == 1;
            let len = u32::from_le_bytes(header[9..13].try_into().unwrap_or_default()) as usize;
            let Some(body) = bytes.get(at + 13..at + 13 + len) else {
                break;
            };
            at += 13 + len;
            last = last.max(seq);
            if seq <= drained {
                continue;
            }
            let clear = match (sealed, &key) {
                (false, _) => body.to_vec(),
                (true, Some(key)) => {
                    key.open(&spill_aad(seq), key.key_id(), body).map_err(|e| {
                        anyhow::anyhow!(
                            "spill record {seq} cannot be opened: {e}; was the key changed?"
                        )
                    })?
                }
                (true, None) => anyhow::bail!(
                    "the spill in {} is encrypted and no key is configured: set {} as in the run that wrote it",
                    dir.display(),
                    crate::crypto::KEY_ENV
                ),
            };
            undelivered.push((seq, clear));
            sizes.push_back((seq, 13 + len as u64));
        }
        // Drop a torn tail, so that new records follow whole ones.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening the spill log {}", path.display()))?;
        file.set_len(at as u64).context("trimming the spill log")?;
        let spill = Spill {
            dir: dir.to_path_buf(),
            log: BufWriter::new(file),
            len: at as u64,
            next: last + 1,
            drained,
            max_bytes,
            pending_bytes: sizes.iter().map(|(_, n)| n).sum(),
            dirty: false,
            sizes,
            key,
        };
        Ok((spill, undelivered))
    }

    /// Whether the undelivered part has reached the limit.
    pub fn full(&self) -> bool {
        self.pending_bytes >= self.max_bytes
    }

    /// Appends a message; returns its sequence number. Durable after [`Spill::sync`].
    pub fn append(&mut self, message: &[u8]) -> anyhow::Result<u64> {
        let seq = self.next;
        self.next += 1;
        let (flag, body) = match &self.key {
            Some(key) => (1u8, key.seal(&spill_aad(seq), message, &mut rand::rng())),
            None => (0u8, message.to_vec()),
        };
        self.log.write_all(&seq.to_le_bytes())?;
        self.log.write_all(&[flag])?;
        self.log.write_all(&(body.len() as u32).to_le_bytes())?;
        self.log.write_all(&body)?;
        let size = 13 + body.len() as u64;
        self.len += size;
        self.sizes.push_back((seq, size));
        self.pending_bytes += size;
        self.dirty = true;
        Ok(seq)
    }

    /// Makes every appended message durable (nothing to do when none was appended since).
    pub fn sync(&mut self) -> anyhow::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.log.flush().context("writing the spill")?;
        self.log
            .get_ref()
            .sync_data()
            .context("syncing the spill")?;
        self.dirty = false;
        Ok(())
    }

    /// Notes that every message up to `upto` is delivered; empties the log once all are and
    /// it has grown.
    pub fn drained(&mut self, upto: u64) -> anyhow::Result<()> {
        if upto <= self.drained {
            return Ok(());
        }
        self.drained = upto;
        while let Some(&(seq, size)) = self.sizes.front() {
            if seq > upto {
                break;
            }
            self.pending_bytes -= size;
            self.sizes.pop_front();
        }
        let mark = self.dir.join("drained");
        let tmp = self.dir.join("drained.tmp");
        std::fs::write(&tmp, upto.to_string()).context("writing the spill's drained mark")?;
        std::fs::rename(&tmp, &mark).context("replacing the spill's drained mark")?;
        if upto + 1 == self.next && self.len >= COMPACT_AT {
            self.log.flush()?;
            self.log
                .get_ref()
                .set_len(0)
                .context("emptying the drained spill")?;
            self.len = 0;
        }
        Ok(())
    }

    /// The drained mark: every message up to this one is delivered.
    pub fn drained_upto(&self) -> u64 {
        self.drained
    }

    /// Messages appended and not yet delivered.
    pub fn pending(&self) -> u64 {
        self.next - 1 - self.drained
    }
}

/// Associated data of a sealed spill record: a record cannot be moved to another place.
fn spill_aad(seq: u64) -> String {
    format!("vigil-spill-{seq}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undelivered_messages_survive_a_restart_sealed() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let key = PayloadKey::from_hex(&"ab".repeat(32))?;
        let (mut spill, again) = Spill::open(dir.path(), Some(key.clone()), 1 << 30)?;
        assert!(again.is_empty());
        for i in 0..5 {
            spill.append(format!("{{\"alert\":{i}}}").as_bytes())?;
        }
        spill.sync()?;
        spill.drained(2)?;
        drop(spill);
        let log = std::fs::read(dir.path().join("spill.log"))?;
        assert!(
            !String::from_utf8_lossy(&log).contains("alert"),
            "sealed on disk"
        );

        let (mut spill, again) = Spill::open(dir.path(), Some(key.clone()), 1 << 30)?;
        assert_eq!(
            again,
            [
                (3, b"{\"alert\":2}".to_vec()),
                (4, b"{\"alert\":3}".to_vec()),
                (5, b"{\"alert\":4}".to_vec())
            ]
        );
        assert_eq!(spill.append(b"next")?, 6);
        spill.sync()?;
        drop(spill);

        // Without the key, an encrypted spill is refused with a clear error.
        let error = Spill::open(dir.path(), None, 1 << 30)
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("encrypted")));

        // A record torn by a crash is dropped, the whole ones kept.
        let path = dir.path().join("spill.log");
        let mut bytes = std::fs::read(&path)?;
        bytes.extend_from_slice(&[7, 0, 0]);
        std::fs::write(&path, bytes)?;
        let (_, again) = Spill::open(dir.path(), Some(key), 1 << 30)?;
        assert_eq!(again.len(), 4);
        Ok(())
    }

    #[test]
    fn full_when_undelivered_bytes_reach_the_limit() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (mut spill, _) = Spill::open(dir.path(), None, 100)?;
        while !spill.full() {
            spill.append(b"0123456789")?;
        }
        assert_eq!(spill.pending(), 5);
        let last = spill.next - 1;
        spill.drained(last)?;
        assert!(!spill.full());
        Ok(())
    }
}
