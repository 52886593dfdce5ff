//! The spill itself: opening it (what a previous run did not get delivered is read back),
//! appending, syncing, and what it counts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde_json::{Map, Value};
use tracing::warn;

use super::record::{
    HEADER, MAX_RECORD_BYTES, SEALED, TRAILER, encode, no_key, scan, spill_aad, split_key_id,
    with_key_id,
};
use super::segments::{SEGMENT_BYTES, list_segments, migrate_legacy, new_segment, read_mark};
use crate::runtime::crypto::{OpenError, PayloadKey};
use crate::runtime::durable;

/// The spill of one output.
pub struct Spill {
    pub(super) dir: PathBuf,
    /// The segment appended to.
    pub(super) log: BufWriter<File>,
    /// The sequence number the active segment starts at, and its length.
    pub(super) active_first: u64,
    pub(super) active_len: u64,
    /// Older segments: first sequence number → length.
    pub(super) segments: BTreeMap<u64, u64>,
    /// Bytes a segment grows to before the next one starts.
    pub(super) segment_bytes: u64,
    /// The sequence number of the next message.
    pub(super) next: u64,
    /// Every message up to and including this one is delivered (or dead-lettered).
    pub(super) drained: u64,
    /// The drained mark on disk, and when it was written.
    pub(super) persisted: u64,
    pub(super) persisted_at: Instant,
    /// Messages past `drained` already delivered or dead-lettered, out of order.
    pub(super) settled: BTreeSet<u64>,
    /// Undelivered bytes the log may hold before appending waits.
    pub(super) max_bytes: u64,
    /// Size of every undelivered record, in order, and their sum.
    pub(super) sizes: VecDeque<(u64, u64)>,
    pub(super) pending_bytes: u64,
    /// Appended since the last sync.
    pub(super) dirty: bool,
    pub(super) key: Option<PayloadKey>,
    /// Records skipped as damaged when the spill was opened.
    pub(super) damaged: u64,
    /// Records written to the dead-letter file by this process.
    pub(super) dead_lettered: u64,
}

/// What a reopened spill still has to send: (sequence number, message), in order.
pub type Undelivered = Vec<(u64, Vec<u8>)>;

/// A record read back from a segment.
struct Stored {
    flags: u8,
    body: Vec<u8>,
}

impl Spill {
    /// Opens (or creates) the spill in `dir`, sealing with `key` when given; returns the
    /// messages a previous run did not get delivered. Damaged records are skipped and counted
    /// ([`Spill::damaged`]); records that cannot be opened go to the dead-letter file.
    pub fn open(
        dir: &Path,
        key: Option<PayloadKey>,
        max_bytes: u64,
    ) -> anyhow::Result<(Spill, Undelivered)> {
        Self::open_sized(dir, key, max_bytes, SEGMENT_BYTES)
    }

    /// [`Spill::open`] with segments of `segment_bytes`.
    pub(super) fn open_sized(
        dir: &Path,
        key: Option<PayloadKey>,
        max_bytes: u64,
        segment_bytes: u64,
    ) -> anyhow::Result<(Spill, Undelivered)> {
        durable::create_dir_all(dir)
            .with_context(|| format!("creating the spill directory {}", dir.display()))?;
        let mark = read_mark(dir)?;
        migrate_legacy(dir, mark, key.as_ref())?;

        let segments = list_segments(dir)?;
        let mut found: BTreeMap<u64, Stored> = BTreeMap::new();
        let mut sizes = VecDeque::new();
        let (mut damaged, mut highest) = (0, mark);
        let mut lengths = BTreeMap::new();
        let mut active_end = 0;
        for (index, (first, path)) in segments.iter().enumerate() {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let scanned = scan(&bytes);
            if scanned.damaged > 0 {
                warn!(message = "Damaged spill records skipped.", segment = %path.display(), damaged = scanned.damaged);
            }
            damaged += scanned.damaged;
            highest = scanned.highest.map_or(highest, |h| highest.max(h));
            for (seq, flags, range) in scanned.records {
                if seq > mark {
                    sizes.push_back((seq, (HEADER + range.len() + TRAILER) as u64));
                    let body = bytes[range].to_vec();
                    found.insert(seq, Stored { flags, body });
                }
            }
            lengths.insert(*first, bytes.len() as u64);
            if index + 1 == segments.len() {
                active_end = scanned.end as u64;
            }
        }

        // The active segment: the newest, cut after its last whole record so that new records
        // follow whole ones; or a new one.
        let next = (highest + 1).max(segments.last().map_or(0, |(first, _)| *first));
        let (log, active_first) = match segments.last() {
            Some((first, path)) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening the spill segment {}", path.display()))?;
                if lengths.get(first).is_some_and(|len| *len > active_end) {
                    file.set_len(active_end)
                        .and_then(|()| file.sync_all())
                        .with_context(|| format!("trimming {}", path.display()))?;
                }
                lengths.remove(first);
                (file, *first)
            }
            None => (new_segment(dir, next)?, next),
        };

        // Sequence numbers past the mark that no readable record holds were lost to damage
        // (or never written): they count as delivered, so the prefix can pass them.
        let drained = found
            .first_key_value()
            .map_or(next - 1, |(first, _)| first - 1)
            .max(mark);
        let mut settled = BTreeSet::new();
        let mut expected = drained + 1;
        for seq in found.keys().copied().chain(std::iter::once(next)) {
            settled.extend(expected..seq);
            expected = seq + 1;
        }
        sizes.retain(|(seq, _)| *seq > drained);
        let mut spill = Spill {
            dir: dir.to_path_buf(),
            log: BufWriter::new(log),
            active_first,
            active_len: active_end,
            segments: lengths,
            segment_bytes: segment_bytes.max(1),
            next,
            drained,
            persisted: mark,
            persisted_at: Instant::now(),
            settled,
            max_bytes,
            pending_bytes: sizes.iter().map(|(_, n)| n).sum(),
            sizes,
            dirty: false,
            key,
            damaged,
            dead_lettered: 0,
        };

        let mut undelivered = Vec::new();
        for (seq, stored) in found {
            match spill.unseal(seq, &stored) {
                Ok(message) => undelivered.push((seq, message)),
                Err(Unreadable::Config(error)) => return Err(error),
                Err(Unreadable::Record(reason)) => {
                    let mut entry = Map::new();
                    entry.insert("sealed".into(), Value::Bool(stored.flags & SEALED != 0));
                    entry.insert(
                        "stored_hex".into(),
                        Value::String(hex::encode(&stored.body)),
                    );
                    spill.write_dead_letter(seq, &reason, entry)?;
                    spill.settle(seq);
                }
            }
        }
        spill.persist(spill.drained > mark)?;
        Ok((spill, undelivered))
    }

    /// Whether the undelivered part has reached the limit.
    pub fn full(&self) -> bool {
        self.pending_bytes >= self.max_bytes
    }

    /// Appends a message; returns its sequence number. Durable after [`Spill::sync`].
    pub fn append(&mut self, message: &[u8]) -> anyhow::Result<u64> {
        let seq = self.next;
        let (flags, body) = match &self.key {
            Some(key) => (
                SEALED,
                with_key_id(key, &key.seal(&spill_aad(seq), message, &mut rand::rng())),
            ),
            None => (0, message.to_vec()),
        };
        anyhow::ensure!(
            body.len() <= MAX_RECORD_BYTES,
            "a message of {} bytes is larger than the spill takes ({MAX_RECORD_BYTES})",
            message.len()
        );
        if self.active_len >= self.segment_bytes {
            self.rotate()?;
        }
        let record = encode(seq, flags, &body);
        // A write that fails part way leaves bytes that the next open skips as damage.
        self.log.write_all(&record).context("writing the spill")?;
        self.next += 1;
        let size = record.len() as u64;
        self.active_len += size;
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

    /// The drained mark: every message up to this one is delivered.
    pub fn drained_upto(&self) -> u64 {
        self.drained
    }

    /// Messages past the drained mark that count as delivered already (lost to damage or
    /// dead-lettered), for a consumer that tracks acknowledgements itself.
    pub fn settled(&self) -> impl Iterator<Item = u64> + '_ {
        self.settled.iter().copied()
    }

    /// Messages appended and not yet delivered.
    pub fn pending(&self) -> u64 {
        self.next - 1 - self.drained
    }

    /// Records skipped as damaged when the spill was opened.
    pub fn damaged(&self) -> u64 {
        self.damaged
    }

    /// Records this process wrote to the dead-letter file.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered
    }

    /// The message of a stored record.
    fn unseal(&self, seq: u64, stored: &Stored) -> Result<Vec<u8>, Unreadable> {
        if stored.flags & SEALED == 0 {
            return Ok(stored.body.clone());
        }
        let Some(key) = &self.key else {
            return Err(Unreadable::Config(no_key(&self.dir)));
        };
        let Some((key_id, sealed)) = split_key_id(&stored.body) else {
            return Err(Unreadable::Record("the sealed record has no key id".into()));
        };
        match key.open(&spill_aad(seq), key_id, sealed) {
            Ok(message) => Ok(message),
            Err(error @ OpenError::WrongKey { .. }) => Err(Unreadable::Config(anyhow::anyhow!(
                "the spill in {} cannot be opened: {error}; configure the key of the run that wrote it",
                self.dir.display()
            ))),
            Err(error @ OpenError::Tampered) => Err(Unreadable::Record(error.to_string())),
        }
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        // The mark may lag behind deliveries by up to MARK_EVERY; a lagging mark only means
        // messages sent twice, but there is no reason to leave it behind. Segments are left
        // as they are: the spill may be open again already (a reader that reopened it).
        let closed = self
            .log
            .flush()
            .map_err(anyhow::Error::from)
            .and_then(|()| self.write_mark(true));
        if let Err(error) = closed {
            warn!(message = "The spill could not be closed cleanly.", spill = %self.dir.display(), error = %format!("{error:#}"));
        }
    }
}

/// Why a stored record cannot be sent.
enum Unreadable {
    /// The configuration does not fit the spill (no key, another key): the whole spill waits.
    Config(anyhow::Error),
    /// This record cannot be opened: it goes to the dead-letter file.
    Record(String),
}
