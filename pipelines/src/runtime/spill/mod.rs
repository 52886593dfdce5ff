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
//!
//! # Layout
//! - `wal`: the [`Spill`] itself: opening it (reading back what is undelivered), appending,
//!   syncing, and what it counts.
//! - `drain`: the drained mark, and removing the segments it makes unnecessary.
//! - `dead_letters`: messages that can never be delivered, set aside with their reason.
//! - `segments`: the files on disk: segments, the mark, and the log of spills before segments.
//! - `record`: a record's bytes: framing, checksums, reading through damage, sealed bodies.

mod dead_letters;
mod drain;
mod record;
mod segments;
mod wal;

pub use dead_letters::DEAD_LETTERS;
pub use record::MAX_RECORD_BYTES;
pub use segments::SEGMENT_BYTES;
pub use wal::{Spill, Undelivered};

#[cfg(test)]
mod tests;
