//! NDJSON in the `telemetry` shape: one JSON object per line.

use std::borrow::Cow;

use serde::Deserialize;
use vigil_operators::model::dead_letter::MAX_RAW_BYTES;
use vigil_operators::{Kind, Reading, derive_event_id};

use super::redact::strip_json_payload;
use super::sink::{RecordSink, oversize_reason};
use super::source::TextSource;

/// One input line as written by a producer, borrowing from the line where it can.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(default)]
    kind: Option<Kind>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(with = "vigil_operators::time::epoch_ms")]
    ts: i64,
    #[serde(default)]
    seq: Option<u64>,
    value: f64,
    #[serde(default)]
    attrs: Option<serde_json::Value>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
}

/// Parses the lines of one chunk, which starts at byte `start` of its source. A line longer
/// than `max_line` bytes is an `oversize` dead letter, not parsed.
pub(super) fn parse(
    bytes: &[u8],
    source: &TextSource,
    start: u64,
    max_line: u64,
    sink: &mut impl RecordSink,
) {
    // One UTF-8 check for the whole chunk lets serde_json skip checking every string again;
    // only a chunk with invalid bytes is checked line by line, to find the bad lines.
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            for (number, line) in (0..).zip(text.split('\n')) {
                let origin = || source.origin_at(start, number);
                if !oversize(line.as_bytes(), max_line, &origin, sink) {
                    parse_one(Some(line), line.as_bytes(), &origin, sink);
                }
            }
        }
        Err(_) => {
            for (number, line) in (0..).zip(bytes.split(|b| *b == b'\n')) {
                let origin = || source.origin_at(start, number);
                if !oversize(line, max_line, &origin, sink) {
                    parse_one(std::str::from_utf8(line).ok(), line, &origin, sink);
                }
            }
        }
    }
}

/// Reports `line` as an `oversize` dead letter if it is longer than `max_line` bytes, keeping
/// only its first bytes, without their payload.
fn oversize(
    line: &[u8],
    max_line: u64,
    origin: &dyn Fn() -> String,
    sink: &mut impl RecordSink,
) -> bool {
    if line.len() as u64 <= max_line {
        return false;
    }
    let head = &line[..line.len().min(MAX_RAW_BYTES)];
    let reason = oversize_reason(Some(line.len()), max_line);
    sink.dead_letter(
        None,
        origin(),
        "oversize",
        reason,
        Some(&strip_json_payload(head)),
    );
    true
}

/// Parses one message of a message stream (a Kafka record's value, say): a JSON object in the
/// `telemetry` shape, or several, one per line. `origin` names the message for dead letters
/// (e.g. `kafka:topic/partition@offset`) and is only called when one is written.
pub fn parse_message(bytes: &[u8], origin: &dyn Fn() -> String, sink: &mut impl RecordSink) {
    // Blank lines (a trailing newline, say) are skipped by `parse_one`.
    for line in bytes.split(|b| *b == b'\n') {
        parse_one(std::str::from_utf8(line).ok(), line, origin, sink);
    }
}

fn parse_one(
    text: Option<&str>,
    raw: &[u8],
    origin: &dyn Fn() -> String,
    sink: &mut impl RecordSink,
) {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    let text = text.map(|text| text.strip_suffix('\r').unwrap_or(text));
    if let Some(reading) = text.and_then(super::fast_line::parse_plain) {
        return sink.reading(reading, None);
    }
    let parsed = match text {
        Some(text) => parse_line_serde(text),
        None => Err((None, "parse", "the line is not valid UTF-8".to_owned())),
    };
    match parsed {
        Ok((reading, payload)) => sink.reading(reading.view(), payload.as_deref()),
        Err((ts, kind, reason)) => {
            let raw = strip_json_payload(raw);
            sink.dead_letter(ts, origin(), kind, reason, Some(&raw));
        }
    }
}

type LineError = (Option<i64>, &'static str, String);

/// Parses one line with serde: every shape the input format allows, and the error messages.
pub(crate) fn parse_line_serde(line: &str) -> Result<(Reading, Option<Vec<u8>>), LineError> {
    let parsed: Line = serde_json::from_str(line).map_err(|e| {
        let kind = if e.is_data() { "schema" } else { "parse" };
        (None, kind, describe(e))
    })?;
    let ts = Some(parsed.ts);
    if !parsed.value.is_finite() {
        return Err((
            ts,
            "schema",
            format!("value {} is not a finite number", parsed.value),
        ));
    }
    if parsed.source.is_empty() || parsed.name.is_empty() {
        return Err((ts, "schema", "source and name must not be empty".into()));
    }
    let attrs = match parsed.attrs {
        None | Some(serde_json::Value::Null) => None,
        Some(value @ serde_json::Value::Object(_)) => Some(value.to_string()),
        Some(_) => return Err((ts, "schema", "attrs must be a JSON object".into())),
    };
    let payload = match parsed.payload {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(text)) => Some(text.into_bytes()),
        Some(value) => Some(value.to_string().into_bytes()),
    };
    let event_id = match parsed.event_id {
        Some(id) if !id.is_empty() => id.as_ref().into(),
        _ => derive_event_id(&parsed.source, &parsed.name, parsed.seq, parsed.ts),
    };
    let reading = Reading {
        event_id,
        source: parsed.source.as_ref().into(),
        kind: parsed.kind.unwrap_or_default(),
        name: parsed.name.as_ref().into(),
        ts: parsed.ts,
        seq: parsed.seq,
        value: parsed.value,
        attrs,
        payload: None,
        key_id: None,
    };
    Ok((reading, payload))
}

/// serde_json's message without the line number, which is always 1 for a single line.
fn describe(e: serde_json::Error) -> String {
    let message = e.to_string();
    match message.rfind(" at line ") {
        Some(i) => format!("{} (column {})", &message[..i], e.column()),
        None => message,
    }
}
