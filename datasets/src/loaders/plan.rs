//! Input planning: files, directories, the embedded default and generators into units.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::csv::CsvShape;
use super::source::{TextFile, TextSource};
use crate::generator::{DeviceParams, RocketParams};

/// Text chunks are cut at the first line start at or after each multiple of this size.
pub const DEFAULT_CHUNK_BYTES: u64 = 4 << 20;

/// The longest line (or message) read by default; a longer one is an `oversize` dead letter.
pub const DEFAULT_MAX_LINE_BYTES: u64 = 1 << 20;

/// How text inputs are cut into units, and the longest line they may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextLimits {
    /// Chunks are cut at the first line start at or after each multiple of this size.
    pub chunk_bytes: u64,
    /// The longest line read, not counting its newline. A longer line becomes an `oversize`
    /// dead letter, and is skipped without being held in memory whole: a unit spans at most
    /// `chunk_bytes + max_line_bytes` bytes.
    pub max_line_bytes: u64,
}

impl Default for TextLimits {
    fn default() -> Self {
        Self {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// Generator inputs are cut into units of this many ticks (rocket telemetry: every vehicle
/// reports 8 readings a tick).
const GENERATOR_TICKS_PER_UNIT: u64 = 10;

/// Device events come sparse (a device emits on about one tick in ten): a unit spans enough
/// ticks for about this many sources × ticks, so that each holds a few thousand events.
const DEVICE_SLOTS_PER_UNIT: u64 = 40_960;

/// How a text unit is parsed.
#[derive(Clone, Debug)]
pub enum TextFormat {
    /// One JSON object per line in the `telemetry` shape.
    Ndjson,
    /// CSV whose header decided the shape.
    Csv(Arc<CsvShape>),
}

/// What one unit of work reads.
#[derive(Clone, Debug)]
pub enum UnitSource {
    /// Bytes `[start, end)` of a text file, cut at line starts, or inside a line too long
    /// to read.
    Text {
        /// The file or embedded bytes.
        source: TextSource,
        /// How to parse it.
        format: TextFormat,
        /// First byte of the unit.
        start: u64,
        /// One past the last byte of the unit.
        end: u64,
        /// The longest line read; a longer one is an `oversize` dead letter.
        max_line_bytes: u64,
        /// The unit starts inside a line too long to read, which the unit before reported:
        /// its bytes up to the first newline are skipped.
        starts_mid_line: bool,
        /// The unit ends inside a line too long to read: the planner found no newline within
        /// the limit, so the bytes after the unit's last newline are the head of that line.
        ends_mid_line: bool,
    },
    /// One row group of a Parquet file.
    Parquet {
        /// The file.
        path: Arc<PathBuf>,
        /// The row group index.
        row_group: usize,
    },
    /// Ticks of the rocket telemetry generator.
    Rocket {
        /// The generator's parameters.
        spec: Arc<RocketParams>,
        /// The ticks this unit generates.
        ticks: Range<u64>,
    },
    /// Ticks of the device event generator.
    Devices {
        /// The generator's parameters.
        spec: Arc<DeviceParams>,
        /// The ticks this unit generates.
        ticks: Range<u64>,
    },
    /// A file that cannot be read at all (empty, unsupported type, bad header): one dead letter.
    Problem {
        /// The file.
        origin: String,
        /// Why.
        reason: String,
    },
}

/// One unit of work and its size, for progress reporting.
#[derive(Clone, Debug)]
pub struct Unit {
    /// What it reads.
    pub source: UnitSource,
    /// Bytes (text), rows (Parquet) or readings (generators) it covers.
    pub size: u64,
}

/// An input cut into units, in a deterministic order.
#[derive(Clone, Debug, Default)]
pub struct InputPlan {
    /// The units, in input order.
    pub units: Vec<Unit>,
    /// Sum of the units' sizes.
    pub total: u64,
    /// Whether sizes are bytes (text files) rather than records.
    pub total_is_bytes: bool,
    /// A one-line description of the input, for logs.
    pub description: String,
}

impl InputPlan {
    fn push(&mut self, unit: Unit) {
        self.total += unit.size;
        self.units.push(unit);
    }
}

impl Unit {
    /// The stream the unit belongs to: its file, or the generator. Units of one stream are in
    /// event-time order with each other as far as the input is; different streams need not be.
    pub fn stream(&self) -> String {
        match &self.source {
            UnitSource::Text { source, .. } => source.path().display().to_string(),
            UnitSource::Parquet { path, .. } => path.display().to_string(),
            UnitSource::Rocket { .. } => "gen:rocket".to_owned(),
            UnitSource::Devices { .. } => "gen:devices".to_owned(),
            UnitSource::Problem { origin, .. } => origin.clone(),
        }
    }
}

/// Plans files and directories (walked recursively, in name order). Files whose type vigil does
/// not read, empty files and CSV files with an unknown header become one dead letter each.
/// A path that does not exist is an error.
pub fn plan_paths(paths: &[PathBuf], limits: TextLimits) -> anyhow::Result<InputPlan> {
    let mut files = Vec::new();
    for path in paths {
        anyhow::ensure!(
            path.exists(),
            "input {} does not exist: pass a dataset file or directory, or gen:rocket / gen:devices",
            path.display()
        );
        collect_files(path, &mut files).with_context(|| format!("listing {}", path.display()))?;
    }
    let mut plan = InputPlan {
        total_is_bytes: true,
        description: paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        ..InputPlan::default()
    };
    for file in files {
        plan_file(&file, limits, &mut plan);
    }
    Ok(plan)
}

/// Plans a dataset compiled into the binary.
pub fn plan_embedded(name: &'static str, bytes: &'static [u8], limits: TextLimits) -> InputPlan {
    let mut plan = InputPlan {
        total_is_bytes: true,
        description: name.to_owned(),
        ..InputPlan::default()
    };
    let source = TextSource::Embedded { name, bytes };
    plan_text(source, bytes, format_of(Path::new(name)), limits, &mut plan);
    plan
}

/// Plans a generator input: `gen:rocket[?key=value&…]` or `gen:devices[?…]`.
pub fn plan_generator(spec: &str) -> anyhow::Result<InputPlan> {
    let rest = spec
        .strip_prefix("gen:")
        .context("a generator input starts with gen:")?;
    let (kind, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut plan = InputPlan {
        description: spec.to_owned(),
        ..InputPlan::default()
    };
    match kind {
        "rocket" => {
            let spec = Arc::new(RocketParams::parse(query)?);
            for ticks in tick_ranges(spec.ticks, GENERATOR_TICKS_PER_UNIT) {
                let size = (ticks.end - ticks.start) * spec.vehicles as u64 * 8;
                plan.push(Unit {
                    source: UnitSource::Rocket {
                        spec: spec.clone(),
                        ticks,
                    },
                    size,
                });
            }
        }
        "devices" => {
            let spec = Arc::new(DeviceParams::parse(query)?);
            let per_unit = (DEVICE_SLOTS_PER_UNIT / spec.sources().max(1) as u64)
                .clamp(GENERATOR_TICKS_PER_UNIT, 1_000);
            for ticks in tick_ranges(spec.ticks, per_unit) {
                let size = (ticks.end - ticks.start) * spec.sources() as u64;
                plan.push(Unit {
                    source: UnitSource::Devices {
                        spec: spec.clone(),
                        ticks,
                    },
                    size,
                });
            }
        }
        other => anyhow::bail!("unknown generator gen:{other}: use gen:rocket or gen:devices"),
    }
    Ok(plan)
}

fn tick_ranges(ticks: u64, per_unit: u64) -> impl Iterator<Item = Range<u64>> {
    (0..ticks.div_ceil(per_unit)).map(move |i| i * per_unit..((i + 1) * per_unit).min(ticks))
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for entry in entries {
            let hidden = entry
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if !hidden {
                collect_files(&entry, files)?;
            }
        }
    } else {
        files.push(path.to_path_buf());
    }
    Ok(())
}

enum FileFormat {
    Ndjson,
    Csv,
    Parquet,
    Unsupported,
}

fn format_of(path: &Path) -> FileFormat {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "ndjson" | "jsonl" | "json" => FileFormat::Ndjson,
        "csv" => FileFormat::Csv,
        "parquet" | "pq" => FileFormat::Parquet,
        _ => FileFormat::Unsupported,
    }
}

fn plan_file(path: &Path, limits: TextLimits, plan: &mut InputPlan) {
    let origin = path.display().to_string();
    let problem = |plan: &mut InputPlan, reason: String| {
        plan.push(Unit {
            source: UnitSource::Problem {
                origin: origin.clone(),
                reason,
            },
            size: 0,
        });
    };
    let format = format_of(path);
    if let FileFormat::Unsupported = format {
        return problem(
            plan,
            "unsupported file type: vigil reads .ndjson/.jsonl/.json, .csv and .parquet files"
                .into(),
        );
    }
    if let FileFormat::Parquet = format {
        match super::parquet::row_groups(path) {
            Ok(groups) if groups.is_empty() => {
                problem(plan, "the Parquet file has no row groups".into())
            }
            Ok(groups) => {
                let path = Arc::new(path.to_path_buf());
                for (row_group, rows) in groups.into_iter().enumerate() {
                    plan.push(Unit {
                        source: UnitSource::Parquet {
                            path: path.clone(),
                            row_group,
                        },
                        size: rows,
                    });
                }
            }
            Err(e) => problem(plan, format!("not a readable Parquet file: {e}")),
        }
        return;
    }
    let source = TextSource::File(Arc::new(TextFile::new(path)));
    match File::open(path) {
        Ok(file) => plan_text(source, file, format, limits, plan),
        Err(e) => problem(plan, format!("could not read the file: {e}")),
    }
}

/// Random access to the bytes of a text input: a file, or bytes in memory.
trait ReadAt {
    /// The input's length in bytes.
    fn len(&mut self) -> std::io::Result<u64>;
    /// Reads from `offset` into `buf` as far as the input allows; 0 at the end.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize>;
}

impl ReadAt for File {
    fn len(&mut self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.seek(SeekFrom::Start(offset))?;
        read_full(self, buf)
    }
}

impl ReadAt for &[u8] {
    fn len(&mut self) -> std::io::Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let from = (offset as usize).min(<[u8]>::len(self));
        let n = buf.len().min(<[u8]>::len(self) - from);
        buf[..n].copy_from_slice(&self[from..from + n]);
        Ok(n)
    }
}

/// Bytes read at the head of a text input: the CSV header must fit in them.
const HEAD_BYTES: usize = 1 << 20;

/// Bytes read at a time while looking for the line start after a chunk boundary.
const PROBE_BYTES: usize = 64 << 10;

/// Cuts a text input into chunks at line starts. Reads only the head of the input and a little
/// around each chunk boundary, so planning a large file costs next to nothing; line numbers are
/// worked out later, and only if a dead letter needs one ([`TextSource::origin_at`]).
///
/// The search for the newline after a boundary stops after the longest line allowed: a line
/// that runs past it is too long to read, and the chunk is cut inside it rather than grown to
/// hold it, so that no unit is longer than the chunk size and the line limit together.
fn plan_text(
    source: TextSource,
    mut input: impl ReadAt,
    format: FileFormat,
    limits: TextLimits,
    plan: &mut InputPlan,
) {
    let origin = source.origin(1);
    let problem = |plan: &mut InputPlan, reason: String| {
        let origin = origin.clone();
        plan.push(Unit {
            source: UnitSource::Problem { origin, reason },
            size: 0,
        });
    };
    let mut head = vec![0u8; HEAD_BYTES];
    let (len, filled) = match input
        .len()
        .and_then(|len| Ok((len, input.read_at(0, &mut head)?)))
    {
        Ok(read) => read,
        Err(e) => return problem(plan, format!("could not read the file: {e}")),
    };
    let head = &head[..filled];
    let (format, start) = match format {
        FileFormat::Csv => {
            let header_end = memchr::memchr(b'\n', head).map_or(filled, |i| i + 1);
            match CsvShape::from_header(&head[..header_end], source.path()) {
                Ok(shape) => (TextFormat::Csv(Arc::new(shape)), header_end as u64),
                Err(reason) => return problem(plan, reason),
            }
        }
        _ => (TextFormat::Ndjson, 0),
    };
    match has_data(&mut input, head, start, len) {
        Ok(true) => {}
        Ok(false) => return problem(plan, "the file is empty".to_owned()),
        Err(e) => return problem(plan, format!("could not read the file: {e}")),
    }
    let chunk = limits.chunk_bytes.max(1);
    let max_line = limits.max_line_bytes.max(1);
    let mut probe = vec![0u8; PROBE_BYTES];
    let mut start = start;
    let mut starts_mid_line = false;
    while start < len {
        // The chunk ends after the first newline at or past `start + chunk - 1`, looked for
        // over `max_line + 1` bytes: a line with none in them is longer than `max_line`.
        let boundary = start + chunk - 1;
        let give_up = boundary.saturating_add(max_line.saturating_add(1)).min(len);
        let mut at = boundary;
        let mut end = len;
        while at < give_up {
            let want = (give_up - at).min(PROBE_BYTES as u64) as usize;
            let n = match input.read_at(at, &mut probe[..want]) {
                Ok(n) => n,
                Err(e) => return problem(plan, format!("could not read the file: {e}")),
            };
            if n == 0 {
                break;
            }
            if let Some(i) = memchr::memchr(b'\n', &probe[..n]) {
                end = at + i as u64 + 1;
                break;
            }
            at += n as u64;
        }
        let ends_mid_line = at >= give_up && give_up < len;
        if ends_mid_line {
            end = give_up;
        }
        plan.push(Unit {
            source: UnitSource::Text {
                source: source.clone(),
                format: format.clone(),
                start,
                end,
                max_line_bytes: max_line,
                starts_mid_line,
                ends_mid_line,
            },
            size: end - start,
        });
        start = end;
        starts_mid_line = ends_mid_line;
    }
}

/// Whether the input holds anything but whitespace after `start`. Looks past the head only when
/// the head is blank, which is rare.
fn has_data(input: &mut impl ReadAt, head: &[u8], start: u64, len: u64) -> std::io::Result<bool> {
    let blank = |bytes: &[u8]| bytes.iter().all(u8::is_ascii_whitespace);
    if !blank(&head[(start as usize).min(head.len())..]) {
        return Ok(true);
    }
    let mut block = vec![0u8; HEAD_BYTES];
    let mut at = head.len() as u64;
    while at < len {
        let n = input.read_at(at, &mut block)?;
        if n == 0 {
            break;
        }
        if !blank(&block[..n]) {
            return Ok(true);
        }
        at += n as u64;
    }
    Ok(false)
}

/// Fills `block` as far as the reader allows; returns how many bytes were read (0 at the end).
fn read_full(reader: &mut impl Read, block: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < block.len() {
        match reader.read(&mut block[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads bytes `[start, end)` of a file into `buf`.
pub fn read_range(path: &Path, start: u64, end: u64, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    buf.clear();
    // The buffer is reused unit after unit: sized to the largest unit, not to twice it.
    buf.reserve_exact((end - start) as usize);
    file.take(end - start).read_to_end(buf)?;
    if (buf.len() as u64) < end - start {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the file shrank while it was read",
        ));
    }
    Ok(())
}
