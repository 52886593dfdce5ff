//! Input files and the generator as the workers read them: the start-up payload check, the
//! input's fingerprint, and the merge of a worker's units by event time.

use std::collections::VecDeque;

use vigil_datasets::loaders::{InputPlan, TextFormat, TextSource, Unit, UnitSource, read_range};

use crate::runtime::crypto::PayloadKey;

/// Fails at start-up when the input carries clear payloads but no key is configured, so that a
/// payload is never written in clear and the user learns it before any work is done. Reads the
/// NDJSON units once, spread over `threads`, and parses only lines whose payload is not `null`.
/// The error names the first such line in input order.
pub fn check_payloads(
    plan: &InputPlan,
    key: Option<&PayloadKey>,
    threads: usize,
) -> anyhow::Result<()> {
    if key.is_some() {
        return Ok(());
    }
    let threads = threads.clamp(1, plan.units.len().max(1));
    let first = std::thread::scope(|scope| {
        let checks: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut buf = Vec::new();
                    let units = plan.units.iter().enumerate().skip(t).step_by(threads);
                    units
                        .filter_map(|(i, unit)| Some((i, clear_payload_in(unit, &mut buf)?)))
                        .next()
                })
            })
            .collect();
        let mut first: Option<(usize, String)> = None;
        for check in checks {
            let found = check
                .join()
                .map_err(|_| anyhow::anyhow!("the start-up payload check failed"))?;
            if let Some(found) = found
                && first.as_ref().is_none_or(|(unit, _)| found.0 < *unit)
            {
                first = Some(found);
            }
        }
        anyhow::Ok(first)
    })?;
    match first {
        Some((_, origin)) => anyhow::bail!(
            "{origin} carries a payload but no payload key is configured, and payloads are only ever \
             stored encrypted: set {}=<64 hex chars> (e.g. `export {}=$(openssl rand -hex 32)`) \
             or pass --key-file FILE",
            crate::runtime::crypto::KEY_ENV,
            crate::runtime::crypto::KEY_ENV
        ),
        None => Ok(()),
    }
}

/// The origin of the first line of an NDJSON unit that carries a clear payload, if any.
fn clear_payload_in(unit: &Unit, buf: &mut Vec<u8>) -> Option<String> {
    let UnitSource::Text {
        source,
        format: TextFormat::Ndjson,
        start,
        end,
        max_line_bytes,
        starts_mid_line,
        ends_mid_line,
    } = &unit.source
    else {
        return None;
    };
    let bytes: &[u8] = match source {
        TextSource::Embedded { bytes, .. } => &bytes[*start as usize..*end as usize],
        TextSource::File(file) => match read_range(file.path(), *start, *end, buf) {
            Ok(()) => buf,
            // The worker that reads this unit reports the I/O error as a dead letter.
            Err(_) => return None,
        },
    };
    let finder = memchr::memmem::Finder::new(b"\"payload\"");
    for at in finder.find_iter(bytes) {
        let rest = bytes[at + 9..].trim_ascii_start();
        let value = rest
            .strip_prefix(b":")
            .map(<[u8]>::trim_ascii_start)
            .unwrap_or(rest);
        if value.starts_with(b"null") {
            continue;
        }
        let line_start = memchr::memrchr(b'\n', &bytes[..at]).map_or(0, |i| i + 1);
        let line_end = memchr::memchr(b'\n', &bytes[at..]).map_or(bytes.len(), |i| at + i);
        // A line over the limit, or a piece of one where the unit was cut inside it, is a
        // dead letter, never read as a reading.
        let cut =
            (*starts_mid_line && line_start == 0) || (*ends_mid_line && line_end == bytes.len());
        if cut || (line_end - line_start) as u64 > *max_line_bytes {
            continue;
        }
        let line: serde_json::Result<serde_json::Value> =
            serde_json::from_slice(&bytes[line_start..line_end]);
        if let Ok(value) = line
            && value.get("payload").is_some_and(|p| !p.is_null())
        {
            let line_in_unit = memchr::memchr_iter(b'\n', &bytes[..line_start]).count() as u64;
            return Some(source.origin_at(*start, line_in_unit));
        }
    }
    None
}

/// A stable fingerprint of the input, used in archive file names.
pub fn plan_fingerprint(plan: &InputPlan, workers: usize) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(plan.description.as_bytes());
    hasher.update(&plan.total.to_le_bytes());
    hasher.update(&(plan.units.len() as u64).to_le_bytes());
    hasher.update(&(workers as u64).to_le_bytes());
    format!("{:08x}", hasher.digest() as u32)
}

/// A worker's units grouped into streams (files, or the generator), read as a merge: always the
/// next unit of the stream that is furthest behind in event time. Each stream has its own
/// watermark, so files that cover different periods (one per series, say) do not make each
/// other late; the worker's input time is the minimum over the streams it has not finished.
pub struct Streams<'a> {
    units: Vec<VecDeque<&'a Unit>>,
    /// Newest event time read from each stream (`i64::MIN` before its first record).
    max_ts: Vec<i64>,
    /// Each stream's watermark; `None` until its first unit has been read.
    watermark: Vec<Option<u64>>,
}

impl<'a> Streams<'a> {
    pub(crate) fn new(units: impl Iterator<Item = &'a Unit>) -> Self {
        let mut keys: Vec<String> = Vec::new();
        let mut grouped: Vec<VecDeque<&Unit>> = Vec::new();
        for unit in units {
            let key = unit.stream();
            match keys.iter().position(|k| *k == key) {
                Some(i) => grouped[i].push_back(unit),
                None => {
                    keys.push(key);
                    grouped.push(VecDeque::from([unit]));
                }
            }
        }
        let n = grouped.len();
        Self {
            units: grouped,
            max_ts: vec![i64::MIN; n],
            watermark: vec![None; n],
        }
    }

    /// The stream to read next: one not started yet, else the unfinished one furthest behind.
    pub(crate) fn next_stream(&self) -> Option<usize> {
        (0..self.units.len())
            .filter(|&i| !self.units[i].is_empty())
            .min_by_key(|&i| (self.watermark[i].is_some(), self.watermark[i], i))
    }

    pub(crate) fn take_unit(&mut self, stream: usize) -> Option<&'a Unit> {
        self.units[stream].pop_front()
    }

    /// The newest event time read from any stream (`i64::MIN` before the first record).
    pub(crate) fn newest(&self) -> i64 {
        self.max_ts.iter().copied().max().unwrap_or(i64::MIN)
    }

    pub(crate) fn max_ts(&self, stream: usize) -> i64 {
        self.max_ts[stream].max(0)
    }

    pub(crate) fn update(&mut self, stream: usize, max_ts: i64, lateness: u64) {
        self.max_ts[stream] = self.max_ts[stream].max(max_ts);
        let watermark = (self.max_ts[stream].max(0) as u64).saturating_sub(lateness);
        self.watermark[stream] = Some(self.watermark[stream].unwrap_or(0).max(watermark));
    }

    /// The minimum watermark over unfinished streams; once all are finished, the maximum.
    pub(crate) fn watermark(&self) -> u64 {
        let unfinished = (0..self.units.len()).filter(|&i| !self.units[i].is_empty());
        let min = unfinished.map(|i| self.watermark[i].unwrap_or(0)).min();
        min.unwrap_or_else(|| self.watermark.iter().flatten().copied().max().unwrap_or(0))
    }
}
