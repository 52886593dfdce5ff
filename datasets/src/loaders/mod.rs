//! Loaders: plan an input into units of work, then parse each unit into readings and dead letters.
//!
//! An input (files, directories, the embedded default, a generator) is first *planned* into
//! [`Unit`]s: byte ranges of text files cut at line boundaries, Parquet row groups, or tick
//! ranges of a generator. Units are independent, so workers parse them in parallel, and the
//! plan is deterministic, so the same input always gives the same units.
//!
//! Input is hostile until read: a line longer than [`TextLimits::max_line_bytes`] becomes an
//! `oversize` dead letter without ever being held in memory whole, and the raw text of every
//! dead letter has its clear payload taken out ([`strip_json_payload`]).

mod csv;
pub(crate) mod fast_line;
pub(crate) mod ndjson;
mod parquet;
mod plan;
mod redact;
mod sink;
mod source;

pub use ndjson::parse_message;
pub use plan::{
    DEFAULT_CHUNK_BYTES, DEFAULT_MAX_LINE_BYTES, InputPlan, TextFormat, TextLimits, Unit,
    UnitSource, plan_embedded, plan_generator, plan_paths, read_range,
};
pub use redact::{PAYLOAD_REMOVED, PayloadColumn, strip_json_payload};
pub use sink::{Collected, CollectedDeadLetter, RecordSink};
pub use source::{TextFile, TextSource};

use std::borrow::Cow;

use vigil_operators::model::dead_letter::MAX_RAW_BYTES;

use sink::oversize_reason;

/// Reads one unit of an input plan into `sink`. `buf` is scratch space reused across units.
/// I/O failures on a unit become a dead letter for the unit, so a bad file never stops a run.
pub fn read_unit(unit: &Unit, buf: &mut Vec<u8>, sink: &mut impl RecordSink) {
    match &unit.source {
        UnitSource::Text {
            source,
            format,
            start,
            end,
            max_line_bytes,
            starts_mid_line,
            ends_mid_line,
        } => {
            let bytes: &[u8] = match source {
                TextSource::Embedded { bytes, .. } => &bytes[*start as usize..*end as usize],
                TextSource::File(file) => match plan::read_range(file.path(), *start, *end, buf) {
                    Ok(()) => buf,
                    Err(e) => {
                        let reason = format!("could not read {}: {e}", file.path().display());
                        let origin = source.origin_at(*start, 0);
                        sink.dead_letter(None, origin, "file", reason, None);
                        return;
                    }
                },
            };
            let text = TextUnit {
                source,
                format,
                max_line: *max_line_bytes,
            };
            text.read(bytes, *start, (*starts_mid_line, *ends_mid_line), sink);
        }
        UnitSource::Parquet { path, row_group } => parquet::read_row_group(path, *row_group, sink),
        UnitSource::Rocket { spec, ticks } => {
            for tick in ticks.clone() {
                crate::generator::rocket_tick(spec, tick, 0..spec.vehicles, &mut |r| {
                    sink.reading(r.view(), None)
                });
            }
        }
        UnitSource::Devices { spec, ticks } => {
            for tick in ticks.clone() {
                crate::generator::device_tick(spec, tick, 0..spec.sources(), &mut |r| {
                    sink.reading(r.view(), None)
                });
            }
        }
        UnitSource::Problem { origin, reason } => {
            sink.dead_letter(None, origin.clone(), "file", reason.clone(), None);
        }
    }
}

/// A text unit's bytes and how to read them.
struct TextUnit<'a> {
    source: &'a TextSource,
    format: &'a TextFormat,
    max_line: u64,
}

impl TextUnit<'_> {
    /// Parses the unit's lines, which start at byte `start` of the source. A unit cut inside a
    /// line too long to read skips that line's rest at its start, and reports its head at its
    /// end as an `oversize` dead letter.
    fn read(
        &self,
        bytes: &[u8],
        start: u64,
        (starts_mid_line, ends_mid_line): (bool, bool),
        sink: &mut impl RecordSink,
    ) {
        let (mut body, mut body_start) = (bytes, start);
        if starts_mid_line {
            let Some(newline) = memchr::memchr(b'\n', body) else {
                return;
            };
            body = &body[newline + 1..];
            body_start += newline as u64 + 1;
        }
        let mut head: &[u8] = &[];
        if ends_mid_line {
            let cut = memchr::memrchr(b'\n', body).map_or(0, |i| i + 1);
            (body, head) = body.split_at(cut);
        }
        match self.format {
            TextFormat::Ndjson => ndjson::parse(body, self.source, body_start, self.max_line, sink),
            TextFormat::Csv(shape) => {
                csv::parse(body, self.source, body_start, shape, self.max_line, sink)
            }
        }
        if !head.is_empty() {
            let line = memchr::memchr_iter(b'\n', body).count() as u64;
            let origin = self.source.origin_at(body_start, line);
            let head = &head[..head.len().min(MAX_RAW_BYTES)];
            let raw = match self.format {
                TextFormat::Ndjson => Some(strip_json_payload(head)),
                // The head of a CSV row is cut off somewhere in its cells: with a payload
                // column, the cut may fall inside the payload, which then cannot be found.
                TextFormat::Csv(shape) => shape.payload().is_none().then_some(Cow::Borrowed(head)),
            };
            let reason = oversize_reason(None, self.max_line);
            sink.dead_letter(None, origin, "oversize", reason, raw.as_deref());
        }
    }
}

/// Plans and reads a whole input in one thread, in plan order.
pub fn load_all(plan: &InputPlan) -> Collected {
    let mut collected = Collected::default();
    let mut buf = Vec::new();
    for unit in &plan.units {
        read_unit(unit, &mut buf, &mut collected);
    }
    collected
}
