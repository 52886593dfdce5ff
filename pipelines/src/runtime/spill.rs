//! The local spill: a write-ahead log of outgoing messages (alerts, replica batches) on local
//! disk, so that a message handed to a peer that is away is neither lost nor kept only in
//! memory.
//!
//! Every message is appended (sealed with AES-256-GCM when a key is configured) with a sequence
//! number before it is sent; the consumer's acknowledgements move a `drained` mark over the
//! delivered prefix. On start, whatever lies past the mark is sent again first, in order, so a
//! crash while the peer is unreachable loses nothing (a message may be sent twice; alert ids
//! and upserts let consumers de-duplicate). When it holds more than its limit of undelivered
//! bytes, appending waits for the peer instead of growing further.
//!
//! # On disk
//! The directory holds segment files `seg-FIRST.log` (`FIRST` is the sequence number the
//! segment starts at), the `drained` mark, and `dead-letters.ndjson`. Appends go to the newest
//! segment; once it is [`SEGMENT_BYTES`] long the next one starts, and a segment whose records
//! are all delivered is removed, so a job that spills and drains for months keeps about one
//! segment on disk beyond what is undelivered. The mark is replaced atomically (temporary
//! file, sync, rename, directory sync).
//!
//! A record is `magic (4) | seq (u64) | flags (u8) | length (u32) | header checksum (u32) |
//! body | body checksum (u64)`, little-endian. The header checksum lets a reader trust a length
//! before it allocates for it; the magic lets it find the next record after damage. A sealed
//! body starts with the id of the key that sealed it, so that a changed key is told apart from
//! a damaged record.
//!
//! # Damage and dead letters
//! A record cut short by a crash, or damaged on disk, is skipped, counted and logged, and the
//! records after it are read as usual. A record that can never be delivered — it cannot be
//! opened, or its consumer reports a permanent error for it — is written to
//! `dead-letters.ndjson` with the reason (sealed again when a key is configured) and counts as
//! delivered, so the drained prefix keeps moving.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Map, Value};
use tracing::{info, warn};
use xxhash_rust::xxh3::xxh3_64;

use crate::runtime::crypto::{OpenError, PayloadKey};
use crate::runtime::durable;

/// Bytes a segment grows to before the next one starts.
pub const SEGMENT_BYTES: u64 = 8 << 20;

/// The largest record body the spill writes, or believes when reading: a length past it is
/// damage, not a reason to allocate.
pub const MAX_RECORD_BYTES: usize = 256 << 20;

/// The file records that can never be delivered go to, in the spill directory.
pub const DEAD_LETTERS: &str = "dead-letters.ndjson";

/// What starts every record.
const MAGIC: [u8; 4] = *b"VGS1";
/// Magic, sequence number, flags, length, header checksum.
const HEADER: usize = 4 + 8 + 1 + 4 + 4;
/// The body checksum.
const TRAILER: usize = 8;
/// The flag of a sealed record.
const SEALED: u8 = 1;
/// The drained mark's file name.
const MARK: &str = "drained";
/// The single log file of spills written before segments.
const LEGACY_LOG: &str = "spill.log";
/// The drained mark is written at most this often while messages remain undelivered; at
/// once when everything is delivered or a segment can go.
const MARK_EVERY: Duration = Duration::from_millis(200);

/// The spill of one output.
pub struct Spill {
    dir: PathBuf,
    /// The segment appended to.
    log: BufWriter<File>,
    /// The sequence number the active segment starts at, and its length.
    active_first: u64,
    active_len: u64,
    /// Older segments: first sequence number → length.
    segments: BTreeMap<u64, u64>,
    /// Bytes a segment grows to before the next one starts.
    segment_bytes: u64,
    /// The sequence number of the next message.
    next: u64,
    /// Every message up to and including this one is delivered (or dead-lettered).
    drained: u64,
    /// The drained mark on disk, and when it was written.
    persisted: u64,
    persisted_at: Instant,
    /// Messages past `drained` already delivered or dead-lettered, out of order.
    settled: BTreeSet<u64>,
    /// Undelivered bytes the log may hold before appending waits.
    max_bytes: u64,
    /// Size of every undelivered record, in order, and their sum.
    sizes: VecDeque<(u64, u64)>,
    pending_bytes: u64,
    /// Appended since the last sync.
    dirty: bool,
    key: Option<PayloadKey>,
    /// Records skipped as damaged when the spill was opened.
    damaged: u64,
    /// Records written to the dead-letter file by this process.
    dead_lettered: u64,
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
    fn open_sized(
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

    /// Notes that every message up to `upto` is delivered; removes segments that are.
    pub fn drained(&mut self, upto: u64) -> anyhow::Result<()> {
        self.settle_upto(upto);
        self.persist(false)
    }

    /// Writes the drained mark now if it has moved (at the end of a run, or before the spill
    /// is read again).
    pub fn flush_mark(&mut self) -> anyhow::Result<()> {
        self.persist(true)
    }

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

    /// Moves the drained prefix to `upto` and over what is settled right after it.
    fn settle_upto(&mut self, upto: u64) {
        self.drained = self.drained.max(upto.min(self.next - 1));
        while let Some(&first) = self.settled.first() {
            if first > self.drained + 1 {
                break;
            }
            self.settled.pop_first();
            self.drained = self.drained.max(first);
        }
        while let Some(&(seq, size)) = self.sizes.front() {
            if seq > self.drained {
                break;
            }
            self.pending_bytes -= size;
            self.sizes.pop_front();
        }
    }

    /// Counts message `seq` as delivered, out of order.
    fn settle(&mut self, seq: u64) {
        if seq > self.drained {
            self.settled.insert(seq);
        }
        self.settle_upto(self.drained);
    }

    /// Writes the drained mark when it has moved and it is time (or `force`), then removes
    /// what it makes unnecessary.
    fn persist(&mut self, force: bool) -> anyhow::Result<()> {
        self.write_mark(force)?;
        self.compact()
    }

    /// Writes the drained mark when it has moved and it is time (or `force`).
    fn write_mark(&mut self, force: bool) -> anyhow::Result<()> {
        if self.drained <= self.persisted {
            return Ok(());
        }
        let all_delivered = self.drained + 1 >= self.next;
        let frees_segment = self
            .segments
            .keys()
            .nth(1)
            .copied()
            .or(self.segments.first_key_value().map(|_| self.active_first))
            .is_some_and(|successor| successor <= self.drained + 1);
        if force || all_delivered || frees_segment || self.persisted_at.elapsed() >= MARK_EVERY {
            durable::write_atomically(&self.dir, MARK, self.drained.to_string().as_bytes())
                .context("writing the spill's drained mark")?;
            self.persisted = self.drained;
            self.persisted_at = Instant::now();
        }
        Ok(())
    }

    /// Removes the segments whose records the mark on disk says are all delivered, and starts
    /// a fresh segment once a fully delivered one has grown to full size.
    fn compact(&mut self) -> anyhow::Result<()> {
        if self.persisted + 1 >= self.next && self.active_len >= self.segment_bytes {
            self.rotate()?;
        }
        while let Some((&first, _)) = self.segments.first_key_value() {
            let successor = self
                .segments
                .range(first + 1..)
                .next()
                .map_or(self.active_first, |(f, _)| *f);
            if successor > self.persisted + 1 {
                break;
            }
            let path = self.dir.join(segment_name(first));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("removing {}", path.display()));
                }
            }
            self.segments.remove(&first);
        }
        Ok(())
    }

    /// Closes the active segment (synced) and starts the next at the next sequence number.
    fn rotate(&mut self) -> anyhow::Result<()> {
        self.log.flush().context("writing the spill")?;
        self.log
            .get_ref()
            .sync_data()
            .context("syncing the spill")?;
        let file = new_segment(&self.dir, self.next)?;
        self.segments.insert(self.active_first, self.active_len);
        self.log = BufWriter::new(file);
        self.active_first = self.next;
        self.active_len = 0;
        self.dirty = false;
        Ok(())
    }

    /// The message of a stored record.
    fn unseal(&self, seq: u64, stored: &Stored) -> Result<Vec<u8>, Unreadable> {
        if stored.flags & SEALED == 0 {
            return Ok(stored.body.clone());
        }
        let Some(key) = &self.key else {
            return Err(Unreadable::Config(anyhow::anyhow!(
                "the spill in {} is encrypted and no key is configured: set {} as in the run that wrote it",
                self.dir.display(),
                crate::runtime::crypto::KEY_ENV
            )));
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

    /// Appends an entry to the dead-letter file, synced.
    fn write_dead_letter(
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

/// The drained mark in `dir` (0 without one). A mark that is not a number (it is replaced
/// atomically, so only outside hands make one) counts as 0: everything is sent again.
fn read_mark(dir: &Path) -> anyhow::Result<u64> {
    match std::fs::read_to_string(dir.join(MARK)) {
        Ok(text) => Ok(text.trim().parse().unwrap_or_else(|_| {
            warn!(message = "The spill's drained mark is unreadable; every message in the spill is sent again.", spill = %dir.display());
            0
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).context("reading the spill's drained mark"),
    }
}

/// The segment files in `dir`, by first sequence number.
fn list_segments(dir: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("listing the spill {}", dir.display()))?;
    for entry in entries {
        let entry = entry.context("listing the spill")?;
        let first = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("seg-"))
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            segments.push((first, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

fn segment_name(first: u64) -> String {
    format!("seg-{first:020}.log")
}

/// Creates the segment starting at `first`, its directory entry synced.
fn new_segment(dir: &Path, first: u64) -> anyhow::Result<File> {
    let path = dir.join(segment_name(first));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("creating the spill segment {}", path.display()))?;
    durable::sync_dir(dir).with_context(|| format!("syncing {}", dir.display()))?;
    Ok(file)
}

/// One record, encoded.
fn encode(seq: u64, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len() + TRAILER);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(flags);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let sum = header_sum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&xxh3_64(body).to_le_bytes());
    out
}

/// The checksum of a header's first 17 bytes.
fn header_sum(header: &[u8]) -> u32 {
    xxh3_64(header) as u32
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().unwrap_or([0; 4]))
}

fn le_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]))
}

/// What lies at an offset of a segment.
enum At {
    /// A whole record: its sequence number, flags, body, and where it ends.
    Record {
        seq: u64,
        flags: u8,
        body: Range<usize>,
        end: usize,
    },
    /// A record whose header is sound and whose body is damaged.
    Damaged { seq: u64, end: usize },
    /// No record: damage, or a record cut short.
    Nothing,
}

/// Reads the record at `at`, checking its header before believing its length.
fn read_at(bytes: &[u8], at: usize) -> At {
    let Some(header) = bytes.get(at..at.saturating_add(HEADER)) else {
        return At::Nothing;
    };
    if header[..4] != MAGIC || header_sum(&header[..17]) != le_u32(&header[17..21]) {
        return At::Nothing;
    }
    let seq = le_u64(&header[4..12]);
    let flags = header[12];
    let len = le_u32(&header[13..17]) as usize;
    if len > MAX_RECORD_BYTES {
        return At::Nothing;
    }
    let start = at + HEADER;
    let end = start + len + TRAILER;
    let Some(trailer) = bytes.get(start + len..end) else {
        return At::Nothing;
    };
    if xxh3_64(&bytes[start..start + len]) != le_u64(trailer) {
        return At::Damaged { seq, end };
    }
    At::Record {
        seq,
        flags,
        body: start..start + len,
        end,
    }
}

/// A segment read through.
#[derive(Default)]
struct Scanned {
    /// Whole records: sequence number, flags, body.
    records: Vec<(u64, u8, Range<usize>)>,
    /// Damaged stretches skipped.
    damaged: u64,
    /// The highest sequence number of any record with a sound header.
    highest: Option<u64>,
    /// Where the last whole (or soundly framed) record ends.
    end: usize,
}

/// Reads every record of a segment, skipping damage: after a stretch that is no record, the
/// next place where a sound header starts.
fn scan(bytes: &[u8]) -> Scanned {
    let mut scanned = Scanned::default();
    let finder = memchr::memmem::Finder::new(&MAGIC);
    let mut at = 0;
    while at < bytes.len() {
        match read_at(bytes, at) {
            At::Record {
                seq,
                flags,
                body,
                end,
            } => {
                scanned.records.push((seq, flags, body));
                scanned.highest = scanned.highest.max(Some(seq));
                scanned.end = end;
                at = end;
            }
            At::Damaged { seq, end } => {
                scanned.damaged += 1;
                scanned.highest = scanned.highest.max(Some(seq));
                scanned.end = end;
                at = end;
            }
            At::Nothing => {
                scanned.damaged += 1;
                let mut from = at + 1;
                let resumed = loop {
                    let Some(found) = bytes.get(from..).and_then(|rest| finder.find(rest)) else {
                        break None;
                    };
                    let candidate = from + found;
                    if !matches!(read_at(bytes, candidate), At::Nothing) {
                        break Some(candidate);
                    }
                    from = candidate + 1;
                };
                match resumed {
                    Some(next) => at = next,
                    None => break,
                }
            }
        }
    }
    scanned
}

/// A sealed body with the id of its key in front: `id length (u8) | id | sealed`.
fn with_key_id(key: &PayloadKey, sealed: &[u8]) -> Vec<u8> {
    let id = key.key_id().as_bytes();
    let mut body = Vec::with_capacity(1 + id.len() + sealed.len());
    body.push(id.len() as u8);
    body.extend_from_slice(id);
    body.extend_from_slice(sealed);
    body
}

/// The key id and the sealed bytes of a sealed body.
fn split_key_id(body: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = body.split_first()?;
    let id = rest.get(..len as usize)?;
    Some((std::str::from_utf8(id).ok()?, &rest[len as usize..]))
}

/// Rewrites a spill written before segments (`spill.log`: records of sequence number, sealed
/// flag, length and body, no checksums) as a segment, then removes it.
fn migrate_legacy(dir: &Path, drained: u64, key: Option<&PayloadKey>) -> anyhow::Result<()> {
    let path = dir.join(LEGACY_LOG);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context("reading the spill log"),
    };
    let (mut out, mut first, mut count) = (Vec::new(), None, 0);
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + 13) {
        let seq = le_u64(&header[..8]);
        let sealed = header[8] == 1;
        let len = le_u32(&header[9..13]) as usize;
        // A record cut short by a crash (or a length past the end) ends the log.
        let Some(body) = bytes.get(at + 13..(at + 13).saturating_add(len)) else {
            break;
        };
        at += 13 + len;
        if seq <= drained {
            continue;
        }
        let (flags, body) = if sealed {
            let key = key.with_context(|| {
                format!(
                    "the spill in {} is encrypted and no key is configured: set {} as in the run that wrote it",
                    dir.display(),
                    crate::runtime::crypto::KEY_ENV
                )
            })?;
            // These records name no key: they are checked against the configured one now,
            // so that a changed key is found before they are rewritten under its id.
            key.open(&spill_aad(seq), key.key_id(), body).map_err(|e| {
                anyhow::anyhow!("spill record {seq} cannot be opened: {e}; was the key changed?")
            })?;
            (SEALED, with_key_id(key, body))
        } else {
            (0, body.to_vec())
        };
        first.get_or_insert(seq);
        count += 1;
        out.extend_from_slice(&encode(seq, flags, &body));
    }
    if let Some(first) = first {
        durable::write_atomically(dir, &segment_name(first), &out)?;
    }
    std::fs::remove_file(&path).context("removing the migrated spill log")?;
    durable::sync_dir(dir).with_context(|| format!("syncing {}", dir.display()))?;
    info!(message = "Spill log rewritten as segments.", spill = %dir.display(), undelivered = count);
    Ok(())
}

/// Associated data of a sealed spill record: a record cannot be moved to another place.
fn spill_aad(seq: u64) -> String {
    format!("vigil-spill-{seq}")
}

/// Associated data of a sealed dead letter.
fn dead_letter_aad(seq: u64) -> String {
    format!("vigil-spill-dead-{seq}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of every segment file in `dir`.
    fn segment_bytes(dir: &Path) -> anyhow::Result<u64> {
        let mut total = 0;
        for (_, path) in list_segments(dir)? {
            total += std::fs::metadata(path)?.len();
        }
        Ok(total)
    }

    /// The only segment in `dir`.
    fn only_segment(dir: &Path) -> anyhow::Result<PathBuf> {
        let segments = list_segments(dir)?;
        anyhow::ensure!(segments.len() == 1, "{} segments", segments.len());
        Ok(segments[0].1.clone())
    }

    fn dead_letters(dir: &Path) -> anyhow::Result<Vec<Value>> {
        let text = std::fs::read_to_string(dir.join(DEAD_LETTERS))?;
        text.lines()
            .map(|l| serde_json::from_str(l).map_err(anyhow::Error::from))
            .collect()
    }

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
        let log = std::fs::read(only_segment(dir.path())?)?;
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

        // Without the key, or with another, an encrypted spill is refused with a clear error.
        let error = Spill::open(dir.path(), None, 1 << 30)
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("encrypted")));
        let other = PayloadKey::from_hex(&"cd".repeat(32))?;
        let error = Spill::open(dir.path(), Some(other), 1 << 30)
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("configure the key")));
        Ok(())
    }

    #[test]
    fn full_when_undelivered_bytes_reach_the_limit() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let record = (HEADER + 10 + TRAILER) as u64;
        let (mut spill, _) = Spill::open(dir.path(), None, 5 * record)?;
        while !spill.full() {
            spill.append(b"0123456789")?;
        }
        assert_eq!(spill.pending(), 5);
        let last = spill.next - 1;
        spill.drained(last)?;
        assert!(!spill.full());
        Ok(())
    }

    #[test]
    fn steady_appending_and_draining_keeps_the_spill_small() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let segment = 4 << 10;
        let (mut spill, _) = Spill::open_sized(dir.path(), None, 1 << 30, segment)?;
        let message = [7u8; 100];
        let record = (HEADER + message.len() + TRAILER) as u64;
        let mut largest = 0;
        // The consumer stays about 20 messages behind, then catches up now and then.
        for round in 0..2_000u64 {
            let seq = spill.append(&message)?;
            spill.sync()?;
            let upto = if round % 100 == 99 {
                seq
            } else {
                seq.saturating_sub(20)
            };
            spill.drained(upto)?;
            largest = largest.max(segment_bytes(dir.path())?);
        }
        // What is undelivered, plus a segment and a record being filled, plus the full
        // segment whose last records are still undelivered.
        let bound = 21 * record + 2 * (segment + record);
        assert!(
            largest <= bound,
            "the spill grew to {largest} bytes (bound {bound}) over 2,000 messages of {record}"
        );
        assert!(list_segments(dir.path())?.len() <= 3);
        Ok(())
    }

    #[test]
    fn a_torn_tail_and_a_damaged_middle_record_are_skipped_and_counted() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (mut spill, _) = Spill::open(dir.path(), None, 1 << 30)?;
        for i in 1..=5 {
            spill.append(format!("message {i}").as_bytes())?;
        }
        spill.sync()?;
        drop(spill);
        let path = only_segment(dir.path())?;
        let mut bytes = std::fs::read(&path)?;
        let record = HEADER + "message 1".len() + TRAILER;
        // A flipped byte in the body of the second record, and the last one cut short.
        bytes[record + HEADER + 2] ^= 0x40;
        bytes.truncate(bytes.len() - 5);
        std::fs::write(&path, &bytes)?;

        let (mut spill, again) = Spill::open(dir.path(), None, 1 << 30)?;
        let seqs: Vec<u64> = again.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, [1, 3, 4]);
        assert_eq!(again[1].1, b"message 3");
        assert_eq!(spill.damaged(), 2);
        // The lost sequence numbers do not hold the drained mark back.
        assert_eq!(spill.settled().collect::<Vec<_>>(), [2]);
        spill.drained(1)?;
        assert_eq!(spill.drained_upto(), 2);
        // New records follow whole ones: the torn tail was cut off.
        assert_eq!(spill.append(b"after")?, 5);
        spill.sync()?;
        drop(spill);
        let (_, again) = Spill::open(dir.path(), None, 1 << 30)?;
        let seqs: Vec<u64> = again.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        Ok(())
    }

    #[test]
    fn an_absurd_length_is_damage_not_an_allocation() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        // A record whose header checksum is right but whose length is 4 GiB, between two
        // good ones: the length is refused before anything is allocated for it.
        let mut bytes = encode(1, 0, b"first");
        let mut absurd = Vec::new();
        absurd.extend_from_slice(&MAGIC);
        absurd.extend_from_slice(&2u64.to_le_bytes());
        absurd.push(0);
        absurd.extend_from_slice(&u32::MAX.to_le_bytes());
        let sum = header_sum(&absurd);
        absurd.extend_from_slice(&sum.to_le_bytes());
        absurd.extend_from_slice(b"short");
        bytes.extend_from_slice(&absurd);
        bytes.extend_from_slice(&encode(3, 0, b"third"));
        std::fs::write(dir.path().join(segment_name(1)), &bytes)?;

        let (spill, again) = Spill::open(dir.path(), None, 1 << 30)?;
        assert_eq!(again, [(1, b"first".to_vec()), (3, b"third".to_vec())]);
        assert_eq!(spill.damaged(), 1);
        Ok(())
    }

    #[test]
    fn a_message_that_can_never_be_delivered_is_dead_lettered_and_the_rest_drain()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (mut spill, _) = Spill::open(dir.path(), None, 1 << 30)?;
        for i in 1..=4 {
            spill.append(format!("message {i}").as_bytes())?;
        }
        spill.sync()?;
        // The consumer delivers 1, is refused 2 for good, then delivers 3 and 4.
        spill.drained(1)?;
        spill.dead_letter(2, "too large for the broker", b"message 2")?;
        assert_eq!(spill.drained_upto(), 2);
        spill.drained(4)?;
        assert_eq!(spill.pending(), 0);
        drop(spill);

        let letters = dead_letters(dir.path())?;
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0]["seq"], 2);
        assert_eq!(letters[0]["reason"], "too large for the broker");
        assert_eq!(letters[0]["message"], "message 2");
        let (_, again) = Spill::open(dir.path(), None, 1 << 30)?;
        assert!(again.is_empty());
        Ok(())
    }

    #[test]
    fn a_record_that_cannot_be_opened_is_dead_lettered_at_open() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let key = PayloadKey::from_hex(&"ab".repeat(32))?;
        let (mut spill, _) = Spill::open(dir.path(), Some(key.clone()), 1 << 30)?;
        for i in 1..=3 {
            spill.append(format!("message {i}").as_bytes())?;
        }
        spill.sync()?;
        drop(spill);
        // Record 2 rewritten with a sound frame around a ciphertext that does not open.
        let path = only_segment(dir.path())?;
        let bytes = std::fs::read(&path)?;
        let scanned = scan(&bytes);
        let (_, _, body) = &scanned.records[1];
        let mut forged = bytes[body.clone()].to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let mut rewritten = bytes[..body.start - HEADER].to_vec();
        rewritten.extend_from_slice(&encode(2, SEALED, &forged));
        rewritten.extend_from_slice(&bytes[body.end + TRAILER..]);
        std::fs::write(&path, rewritten)?;

        let (spill, again) = Spill::open(dir.path(), Some(key), 1 << 30)?;
        let seqs: Vec<u64> = again.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, [1, 3]);
        assert_eq!(spill.dead_lettered(), 1);
        assert_eq!(spill.settled().collect::<Vec<_>>(), [2]);
        let letters = dead_letters(dir.path())?;
        assert_eq!(letters[0]["seq"], 2);
        assert_eq!(letters[0]["sealed"], true);
        Ok(())
    }

    #[test]
    fn a_spill_log_from_before_segments_is_carried_over() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut legacy = Vec::new();
        for (seq, body) in [(1u64, &b"old one"[..]), (2, b"old two"), (3, b"old three")] {
            legacy.extend_from_slice(&seq.to_le_bytes());
            legacy.push(0);
            legacy.extend_from_slice(&(body.len() as u32).to_le_bytes());
            legacy.extend_from_slice(body);
        }
        std::fs::write(dir.path().join(LEGACY_LOG), legacy)?;
        std::fs::write(dir.path().join(MARK), "1")?;
        let (mut spill, again) = Spill::open(dir.path(), None, 1 << 30)?;
        assert_eq!(
            again,
            [(2, b"old two".to_vec()), (3, b"old three".to_vec())]
        );
        assert!(!dir.path().join(LEGACY_LOG).exists());
        assert_eq!(spill.append(b"new")?, 4);
        Ok(())
    }
}
