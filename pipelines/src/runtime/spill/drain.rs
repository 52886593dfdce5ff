//! The drained mark: deliveries settle the prefix it marks, it is written atomically (at most
//! every [`MARK_EVERY`] while messages wait), and the segments it covers are removed.

use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::segments::{MARK, new_segment, segment_name};
use super::wal::Spill;
use crate::runtime::durable;

/// The drained mark is written at most this often while messages remain undelivered; at
/// once when everything is delivered or a segment can go.
const MARK_EVERY: Duration = Duration::from_millis(200);

impl Spill {
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
    pub(super) fn settle(&mut self, seq: u64) {
        if seq > self.drained {
            self.settled.insert(seq);
        }
        self.settle_upto(self.drained);
    }

    /// Writes the drained mark when it has moved and it is time (or `force`), then removes
    /// what it makes unnecessary.
    pub(super) fn persist(&mut self, force: bool) -> anyhow::Result<()> {
        self.write_mark(force)?;
        self.compact()
    }

    /// Writes the drained mark when it has moved and it is time (or `force`).
    pub(super) fn write_mark(&mut self, force: bool) -> anyhow::Result<()> {
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
    pub(super) fn rotate(&mut self) -> anyhow::Result<()> {
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
}
