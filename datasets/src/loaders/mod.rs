//! Loaders: plan an input into units of work, then parse each unit into readings and dead letters.
//!
//! An input (files, directories, the embedded default, a generator) is first *planned* into
//! [`Unit`]s: byte ranges of text files cut at line boundaries, Parquet row groups, or tick
//! ranges of a generator. Units are independent, so workers parse them in parallel, and the
//! plan is deterministic, so the same input always gives the same units.

mod csv;
mod fast_line;
mod ndjson;
mod parquet;
mod plan;

pub use ndjson::parse_message;
pub use plan::{
    DEFAULT_CHUNK_BYTES, InputPlan, TextFile, TextFormat, TextSource, Unit, UnitSource,
    plan_embedded, plan_generator, plan_paths, read_range,
};

use vigil_operators::{Reading, ReadingRef};

/// Receives what a loader reads: readings (with their clear payload kept apart, so that it can
/// only ever be stored encrypted) and dead letters.
pub trait RecordSink {
    /// A valid reading, borrowed from the input. `payload` is the clear payload the input
    /// carried, if any; it must be encrypted before it is stored. `reading.payload` holds only
    /// ciphertext read from an archive.
    fn reading(&mut self, reading: ReadingRef<'_>, payload: Option<&[u8]>);

    /// Input that could not be used: where it came from, the class of problem, why, and the
    /// raw input. `ts` is the record's event time when it could be read.
    fn dead_letter(
        &mut self,
        ts: Option<i64>,
        origin: String,
        kind: &'static str,
        reason: String,
        raw: Option<&[u8]>,
    );
}

/// Reads one unit of an input plan into `sink`. `buf` is scratch space reused across units.
/// I/O failures on a unit become a dead letter for the unit, so a bad file never stops a run.
pub fn read_unit(unit: &Unit, buf: &mut Vec<u8>, sink: &mut impl RecordSink) {
    match &unit.source {
        UnitSource::Text {
            source,
            format,
            start,
            end,
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
            match format {
                TextFormat::Ndjson => ndjson::parse(bytes, source, *start, sink),
                TextFormat::Csv(shape) => csv::parse(bytes, source, *start, shape, sink),
            }
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

/// Collects everything a loader reads, for tests and small tools.
#[derive(Debug, Default)]
pub struct Collected {
    /// The valid readings, each with its clear payload.
    pub readings: Vec<(Reading, Option<Vec<u8>>)>,
    /// The dead letters: (ts, origin, kind, reason).
    pub dead_letters: Vec<(Option<i64>, String, &'static str, String)>,
}

impl RecordSink for Collected {
    fn reading(&mut self, reading: ReadingRef<'_>, payload: Option<&[u8]>) {
        self.readings
            .push((reading.to_reading(), payload.map(<[u8]>::to_vec)));
    }

    fn dead_letter(
        &mut self,
        ts: Option<i64>,
        origin: String,
        kind: &'static str,
        reason: String,
        _raw: Option<&[u8]>,
    ) {
        self.dead_letters.push((ts, origin, kind, reason));
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
