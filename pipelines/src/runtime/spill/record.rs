//! A record's bytes: `magic (4) | seq (u64) | flags (u8) | length (u32) | header checksum
//! (u32) | body | body checksum (u64)`, little-endian; a segment read through its damage; and
//! a sealed body, with the id of the key that sealed it in front.

use std::ops::Range;
use std::path::Path;

use xxhash_rust::xxh3::xxh3_64;

use crate::runtime::crypto::PayloadKey;

/// The largest record body the spill writes, or believes when reading: a length past it is
/// damage, not a reason to allocate.
pub const MAX_RECORD_BYTES: usize = 256 << 20;

/// What starts every record.
pub(super) const MAGIC: [u8; 4] = *b"VGS1";
/// Magic, sequence number, flags, length, header checksum.
pub(super) const HEADER: usize = 4 + 8 + 1 + 4 + 4;
/// The body checksum.
pub(super) const TRAILER: usize = 8;
/// The flag of a sealed record.
pub(super) const SEALED: u8 = 1;

/// One record, encoded.
pub(super) fn encode(seq: u64, flags: u8, body: &[u8]) -> Vec<u8> {
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
pub(super) fn header_sum(header: &[u8]) -> u32 {
    xxh3_64(header) as u32
}

pub(super) fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().unwrap_or([0; 4]))
}

pub(super) fn le_u64(bytes: &[u8]) -> u64 {
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
pub(super) struct Scanned {
    /// Whole records: sequence number, flags, body.
    pub(super) records: Vec<(u64, u8, Range<usize>)>,
    /// Damaged stretches skipped.
    pub(super) damaged: u64,
    /// The highest sequence number of any record with a sound header.
    pub(super) highest: Option<u64>,
    /// Where the last whole (or soundly framed) record ends.
    pub(super) end: usize,
}

/// Reads every record of a segment, skipping damage: after a stretch that is no record, the
/// next place where a sound header starts.
pub(super) fn scan(bytes: &[u8]) -> Scanned {
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
pub(super) fn with_key_id(key: &PayloadKey, sealed: &[u8]) -> Vec<u8> {
    let id = key.key_id().as_bytes();
    let mut body = Vec::with_capacity(1 + id.len() + sealed.len());
    body.push(id.len() as u8);
    body.extend_from_slice(id);
    body.extend_from_slice(sealed);
    body
}

/// The key id and the sealed bytes of a sealed body.
pub(super) fn split_key_id(body: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = body.split_first()?;
    let id = rest.get(..len as usize)?;
    Some((std::str::from_utf8(id).ok()?, &rest[len as usize..]))
}

/// Associated data of a sealed spill record: a record cannot be moved to another place.
pub(super) fn spill_aad(seq: u64) -> String {
    format!("vigil-spill-{seq}")
}

/// The error of a sealed spill opened with no key configured: the whole spill waits for one.
pub(super) fn no_key(dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "the spill in {} is encrypted and no key is configured: set {} as in the run that wrote it",
        dir.display(),
        crate::runtime::crypto::KEY_ENV
    )
}
