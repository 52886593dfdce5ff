//! The spill's files on disk: segment files `seg-FIRST.log`, the `drained` mark, and the single
//! log of spills written before segments, rewritten as a segment when found.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::Context;
use tracing::{info, warn};

use super::record::{SEALED, encode, le_u32, le_u64, no_key, spill_aad, with_key_id};
use crate::runtime::crypto::PayloadKey;
use crate::runtime::durable;

/// Bytes a segment grows to before the next one starts.
pub const SEGMENT_BYTES: u64 = 8 << 20;

/// The drained mark's file name.
pub(super) const MARK: &str = "drained";
/// The single log file of spills written before segments.
pub(super) const LEGACY_LOG: &str = "spill.log";

/// The drained mark in `dir` (0 without one). A mark that is not a number (it is replaced
/// atomically, so only outside hands make one) counts as 0: everything is sent again.
pub(super) fn read_mark(dir: &Path) -> anyhow::Result<u64> {
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
pub(super) fn list_segments(dir: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
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

pub(super) fn segment_name(first: u64) -> String {
    format!("seg-{first:020}.log")
}

/// Creates the segment starting at `first`, its directory entry synced.
pub(super) fn new_segment(dir: &Path, first: u64) -> anyhow::Result<File> {
    let path = dir.join(segment_name(first));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("creating the spill segment {}", path.display()))?;
    durable::sync_dir(dir).with_context(|| format!("syncing {}", dir.display()))?;
    Ok(file)
}

/// Rewrites a spill written before segments (`spill.log`: records of sequence number, sealed
/// flag, length and body, no checksums) as a segment, then removes it.
pub(super) fn migrate_legacy(
    dir: &Path,
    drained: u64,
    key: Option<&PayloadKey>,
) -> anyhow::Result<()> {
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
            let key = key.ok_or_else(|| no_key(dir))?;
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
