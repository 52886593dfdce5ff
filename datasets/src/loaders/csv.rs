//! CSV: the `telemetry` shape, NAB's `timestamp,value`, or a time column with one column per metric.

use std::path::Path;

use vigil_operators::{Reading, derive_event_id, time::parse_ts};

use super::redact::{PayloadColumn, csv_row_without_payload};
use super::sink::{RecordSink, oversize_reason};
use super::source::TextSource;

/// How the columns of a CSV file map to readings, decided from its header.
#[derive(Clone, Debug, PartialEq)]
pub enum CsvShape {
    /// Columns `source`, `name`, `ts`, `value` (any order), optionally `event_id`, `seq` and
    /// `payload` (not read, and kept out of dead letters).
    Telemetry {
        /// Column of `source`.
        source: usize,
        /// Column of `name`.
        name: usize,
        /// Column of `ts`.
        ts: usize,
        /// Column of `value`.
        value: usize,
        /// Column of `event_id`, if any.
        event_id: Option<usize>,
        /// Column of `seq`, if any.
        seq: Option<usize>,
        /// Column of `payload`, if any.
        payload: Option<PayloadColumn>,
    },
    /// A time column and one or more metric columns: one reading per metric per row.
    /// NAB's `timestamp,value` is the case of a single `value` column: the series is named after
    /// the file stem and its source after the file's directory.
    Wide {
        /// Column of the event time.
        ts: usize,
        /// `(column, source, name)` of every metric column.
        metrics: Vec<(usize, String, String)>,
        /// Column of `payload`, if any: never a metric.
        payload: Option<PayloadColumn>,
    },
}

impl CsvShape {
    /// Decides the shape from the header line, or says why the header is not one vigil reads.
    pub fn from_header(header: &[u8], path: &Path) -> Result<CsvShape, String> {
        let text = String::from_utf8_lossy(header);
        let columns: Vec<String> = text
            .trim_end()
            .split(',')
            .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
            .collect();
        let find = |name: &str| columns.iter().position(|c| c == name);
        let payload = find("payload").map(|column| PayloadColumn {
            column,
            columns: columns.len(),
        });
        if let (Some(source), Some(name), Some(ts), Some(value)) =
            (find("source"), find("name"), find("ts"), find("value"))
        {
            return Ok(CsvShape::Telemetry {
                source,
                name,
                ts,
                value,
                event_id: find("event_id"),
                seq: find("seq"),
                payload,
            });
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("series")
            .to_owned();
        let parent = path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|s| s.to_str())
            .unwrap_or("csv")
            .to_owned();
        if let Some(ts) = find("timestamp")
            .or_else(|| find("ts"))
            .or_else(|| find("time"))
        {
            let others: Vec<usize> = (0..columns.len())
                .filter(|&c| c != ts && !columns[c].is_empty() && columns[c] != "payload")
                .collect();
            if others.len() == 1 && columns[others[0]] == "value" {
                return Ok(CsvShape::Wide {
                    ts,
                    metrics: vec![(others[0], parent, stem)],
                    payload,
                });
            }
            if !others.is_empty() {
                let metrics = others
                    .into_iter()
                    .map(|c| (c, stem.clone(), columns[c].clone()))
                    .collect();
                return Ok(CsvShape::Wide {
                    ts,
                    metrics,
                    payload,
                });
            }
        }
        Err(format!(
            "CSV header `{}` is not one vigil reads: use source,name,ts,value, or timestamp,value (NAB), \
             or a timestamp column followed by one column per metric",
            text.trim_end()
        ))
    }

    /// The payload column, if the header has one.
    pub fn payload(&self) -> Option<PayloadColumn> {
        match self {
            CsvShape::Telemetry { payload, .. } | CsvShape::Wide { payload, .. } => *payload,
        }
    }
}

/// Parses the rows of one chunk, which starts at byte `start` of its source. A row longer than
/// `max_line` bytes is an `oversize` dead letter, not parsed.
pub(super) fn parse(
    bytes: &[u8],
    source: &TextSource,
    start: u64,
    shape: &CsvShape,
    max_line: u64,
    sink: &mut impl RecordSink,
) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut record = csv::ByteRecord::new();
    // Lines (0-based) into the chunk; turned into `path:line` only for a dead letter.
    let mut line = 0;
    loop {
        let start_line = line;
        let from = reader.position().byte() as usize;
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                line = reader.position().line() - 1;
                if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
                    continue;
                }
                // The row's bytes, not counting the newline that ends it.
                let to = reader.position().byte() as usize;
                let len = to - from - usize::from(bytes.get(to.wrapping_sub(1)) == Some(&b'\n'));
                if len as u64 > max_line {
                    sink.dead_letter(
                        None,
                        source.origin_at(start, start_line),
                        "oversize",
                        oversize_reason(Some(len), max_line),
                        csv_row_without_payload(&record, shape.payload()).as_deref(),
                    );
                    continue;
                }
                parse_record(&record, shape, source, (start, start_line), sink);
            }
            Err(e) => {
                line = reader.position().line() - 1;
                sink.dead_letter(
                    None,
                    source.origin_at(start, start_line),
                    "parse",
                    format!("malformed CSV: {e}"),
                    None,
                );
            }
        }
    }
}

fn field(record: &csv::ByteRecord, column: usize) -> Result<&str, String> {
    let bytes = record
        .get(column)
        .ok_or_else(|| format!("the row has no column {}", column + 1))?;
    std::str::from_utf8(bytes)
        .map(str::trim)
        .map_err(|_| format!("column {} is not UTF-8", column + 1))
}

fn number(text: &str, what: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{what} {text:?} is not a number"))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{what} {text:?} is not a finite number"))
    }
}

fn parse_record(
    record: &csv::ByteRecord,
    shape: &CsvShape,
    source: &TextSource,
    (start, line): (u64, u64),
    sink: &mut impl RecordSink,
) {
    let dead = |sink: &mut dyn RecordSinkDyn, ts: Option<i64>, reason: String| {
        let raw = csv_row_without_payload(record, shape.payload());
        sink.dead(ts, source.origin_at(start, line), reason, raw.as_deref());
    };
    match shape {
        CsvShape::Telemetry {
            source: s,
            name,
            ts,
            value,
            event_id,
            seq,
            payload: _,
        } => {
            let parsed = (|| {
                let ts_text = field(record, *ts).map_err(|e| (None, e))?;
                let ts = parse_ts(ts_text)
                    .ok_or_else(|| (None, format!("ts {ts_text:?} is not a valid timestamp")))?;
                let value = number(field(record, *value).map_err(|e| (Some(ts), e))?, "value")
                    .map_err(|e| (Some(ts), e))?;
                let source = field(record, *s).map_err(|e| (Some(ts), e))?;
                let name = field(record, *name).map_err(|e| (Some(ts), e))?;
                if source.is_empty() || name.is_empty() {
                    return Err((Some(ts), "source and name must not be empty".to_owned()));
                }
                let seq = match seq
                    .map(|c| field(record, c))
                    .transpose()
                    .map_err(|e| (Some(ts), e))?
                {
                    Some(text) if !text.is_empty() => {
                        Some(text.parse::<u64>().map_err(|_| {
                            (Some(ts), format!("seq {text:?} is not a whole number"))
                        })?)
                    }
                    _ => None,
                };
                let mut reading = Reading::new(source, name, ts, value);
                reading.seq = seq;
                reading.event_id = match event_id
                    .map(|c| field(record, c))
                    .transpose()
                    .map_err(|e| (Some(ts), e))?
                {
                    Some(id) if !id.is_empty() => id.into(),
                    _ => derive_event_id(source, name, seq, ts),
                };
                Ok(reading)
            })();
            match parsed {
                Ok(reading) => sink.reading(reading.view(), None),
                Err((ts, reason)) => dead(sink, ts, reason),
            }
        }
        CsvShape::Wide { ts, metrics, .. } => {
            let ts_text = match field(record, *ts) {
                Ok(text) => text,
                Err(reason) => return dead(sink, None, reason),
            };
            let Some(ts) = parse_ts(ts_text) else {
                return dead(
                    sink,
                    None,
                    format!("timestamp {ts_text:?} is not a valid timestamp"),
                );
            };
            for (column, series_source, series_name) in metrics {
                let text = match field(record, *column) {
                    Ok("") => continue,
                    Ok(text) => text,
                    Err(reason) => {
                        dead(sink, Some(ts), reason);
                        continue;
                    }
                };
                match number(text, series_name) {
                    Ok(value) => sink.reading(
                        Reading::new(series_source, series_name, ts, value).view(),
                        None,
                    ),
                    Err(reason) => dead(sink, Some(ts), reason),
                }
            }
        }
    }
}

/// The dead-letter half of a [`RecordSink`], as a trait object for the row parser's helper.
trait RecordSinkDyn {
    fn dead(&mut self, ts: Option<i64>, origin: String, reason: String, raw: Option<&[u8]>);
}

impl<S: RecordSink> RecordSinkDyn for S {
    fn dead(&mut self, ts: Option<i64>, origin: String, reason: String, raw: Option<&[u8]>) {
        self.dead_letter(ts, origin, "schema", reason, raw);
    }
}
