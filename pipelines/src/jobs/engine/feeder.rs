//! The input feeder: records as the readers parse them, handed to a worker's dataflow inputs
//! in batches; late records, records with a payload but no key, and Kafka messages that are
//! not records become dead letters and events of their source.

use std::sync::Arc;

use arrow::array::RecordBatch;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use vigil_datasets::loaders::{RecordSink, strip_json_payload};
use vigil_operators::model::dead_letter::MAX_RAW_BYTES;
use vigil_operators::{
    DeadLetter, LATE_EVENT, Reading, ReadingRef, SCHEMA_EVENT, SeriesReading, SessionEvent,
    TelemetryColumns,
};

use crate::jobs::engine::figures::EngineFigures;
use crate::runtime::crypto::PayloadKey;
use crate::sources::kafka::KafkaMessage;

/// Records are handed to the dataflow in batches of this many, which keeps them in cache.
pub(crate) const SEND_BATCH: usize = 4096;

/// One worker's inputs: readings for the archive, their points for the guards, dead letters.
pub(crate) struct Inputs {
    pub(crate) readings: InputHandle<u64, CapacityContainerBuilder<Vec<RecordBatch>>>,
    pub(crate) points: InputHandle<u64, CapacityContainerBuilder<Vec<SeriesReading>>>,
    pub(crate) errors: InputHandle<u64, CapacityContainerBuilder<Vec<DeadLetter>>>,
    /// Late and malformed records as events of their source, for the security guards.
    pub(crate) violations: InputHandle<u64, CapacityContainerBuilder<Vec<SeriesReading>>>,
    /// Events as sessions see them (archaeology only).
    pub(crate) sessions: InputHandle<u64, CapacityContainerBuilder<Vec<SessionEvent>>>,
}

/// Feeds one worker's inputs: decides lateness against the worker's watermark, seals clear
/// payloads, and sends readings, points and dead letters in batches.
pub(crate) struct WorkerSink {
    inputs: Inputs,
    pub(crate) readings: TelemetryColumns,
    pub(crate) points: Vec<SeriesReading>,
    pub(crate) errors: Vec<DeadLetter>,
    pub(crate) violations: Vec<SeriesReading>,
    pub(crate) events_in: u64,
    pub(crate) errors_out: u64,
    pub(crate) late: u64,
    /// The worker's input time: its watermark. Readings before it are late.
    pub(crate) watermark: u64,
    pub(crate) max_ts: i64,
    pub(crate) lateness: u64,
    /// The longest Kafka message read; a longer one is an `oversize` dead letter.
    max_line_bytes: u64,
    key: Option<PayloadKey>,
    rng: rand::rngs::ThreadRng,
    /// Reading Kafka: the partition the buffered rows come from, the offset of the message
    /// being read, and each buffered row's offset (see [`crate::sinks::archive::tag_kafka_batch`]).
    kafka: Option<(Arc<str>, i32)>,
    offset: i64,
    offsets: Vec<i64>,
    /// Whether readings go to the telemetry archive (not for archaeology).
    archive_readings: bool,
    /// How events are keyed for sessions, when the job has them.
    session_key: Option<SessionKey>,
    session_events: Vec<SessionEvent>,
    /// The run's live figures, updated once per batch sent.
    pub(crate) figures: Option<EngineFigures>,
    events_reported: u64,
}

impl WorkerSink {
    pub(crate) fn new(
        inputs: Inputs,
        key: Option<PayloadKey>,
        lateness: u64,
        max_line_bytes: u64,
        archive_readings: bool,
        session_key: Option<SessionKey>,
    ) -> Self {
        Self {
            inputs,
            readings: TelemetryColumns::with_capacity(SEND_BATCH),
            points: Vec::with_capacity(SEND_BATCH),
            errors: Vec::new(),
            violations: Vec::new(),
            events_in: 0,
            errors_out: 0,
            late: 0,
            watermark: 0,
            max_ts: 0,
            lateness,
            max_line_bytes,
            key,
            rng: rand::rng(),
            kafka: None,
            offset: 0,
            offsets: Vec::new(),
            archive_readings,
            session_key,
            session_events: Vec::new(),
            figures: None,
            events_reported: 0,
        }
    }

    /// Sends what is buffered at the current input time.
    pub(crate) fn flush(&mut self) {
        if !self.readings.is_empty() {
            self.events_in += self.readings.len() as u64;
            let finished = self.readings.finish().and_then(|batch| match &self.kafka {
                Some((topic, partition)) => {
                    let offsets = std::mem::take(&mut self.offsets);
                    crate::sinks::archive::tag_kafka_batch(batch, topic, *partition, offsets)
                        .map_err(<Reading as vigil_operators::Record>::error)
                }
                None => Ok(batch),
            });
            match finished {
                Ok(batch) => self.inputs.readings.send(batch),
                // The columns are vigil's own and always fit the telemetry schema.
                Err(error) => {
                    tracing::error!(message = "Telemetry rows could not be archived.", %error)
                }
            }
        }
        if !self.archive_readings {
            self.events_in += self.points.len() as u64;
        }
        self.errors_out += self.errors.len() as u64;
        if let Some(figures) = &self.figures {
            figures.sent(
                self.events_in - self.events_reported,
                self.errors.iter().map(|e| e.kind.as_str()),
                self.watermark,
            );
            self.events_reported = self.events_in;
        }
        self.inputs.sessions.send_batch(&mut self.session_events);
        self.session_events.clear();
        self.inputs.points.send_batch(&mut self.points);
        self.inputs.errors.send_batch(&mut self.errors);
        self.inputs.violations.send_batch(&mut self.violations);
        self.points.clear();
        self.errors.clear();
        self.violations.clear();
        if self.points.capacity() < SEND_BATCH {
            self.points.reserve(SEND_BATCH);
        }
    }

    /// The current stream's newest event time less the allowed lateness: its records before
    /// this are late. Never below the input time, which no record may precede.
    pub(crate) fn running_watermark(&self) -> u64 {
        self.watermark
            .max((self.max_ts.max(0) as u64).saturating_sub(self.lateness))
    }

    /// Moves the input time up to `watermark` (the minimum over the worker's unfinished
    /// streams); call after [`WorkerSink::flush`].
    pub(crate) fn advance(&mut self, watermark: u64) -> u64 {
        self.watermark = self.watermark.max(watermark);
        self.inputs.readings.advance_to(self.watermark);
        self.inputs.points.advance_to(self.watermark);
        self.inputs.errors.advance_to(self.watermark);
        self.inputs.violations.advance_to(self.watermark);
        self.inputs.sessions.advance_to(self.watermark);
        self.watermark
    }
}

impl RecordSink for WorkerSink {
    fn reading(&mut self, reading: ReadingRef<'_>, payload: Option<&[u8]>) {
        // Lateness is judged against the running watermark, record by record; the input time
        // only catches up between units, which is safe because it never passes the running one.
        let watermark = self.running_watermark();
        if (reading.ts as u64) < watermark {
            self.late += 1;
            let behind = watermark - reading.ts as u64;
            self.violation(reading.source, LATE_EVENT, behind as f64);
            let reason = format!(
                "late: event time {} is {behind} ms behind the watermark {} (allowed lateness {} ms); \
                 raise --lateness to accept records this far out of order",
                vigil_operators::time::format_ts(reading.ts),
                vigil_operators::time::format_ts(watermark as i64),
                self.lateness
            );
            let raw = raw_json(&reading);
            self.errors.push(DeadLetter::new(
                reading.ts,
                format!("event {}", reading.event_id()),
                "late",
                reason,
                Some(raw.as_bytes()),
            ));
            return;
        }
        let sealed = match (payload, &self.key) {
            (None, _) => None,
            (Some(clear), Some(key)) => Some((
                key.seal(&reading.event_id(), clear, &mut self.rng),
                key.key_id().clone(),
            )),
            (Some(_), None) => {
                let reason = format!(
                    "the record carries a payload but no payload key is configured: set {} or pass --key-file",
                    crate::runtime::crypto::KEY_ENV
                );
                self.errors.push(DeadLetter::new(
                    reading.ts,
                    reading.event_id().to_string(),
                    "schema",
                    reason,
                    None,
                ));
                return;
            }
        };
        let reading = match &sealed {
            Some((ciphertext, key_id)) => ReadingRef {
                payload: Some(ciphertext),
                key_id: Some(key_id),
                ..reading
            },
            None => reading,
        };
        self.max_ts = self.max_ts.max(reading.ts);
        self.points.push(SeriesReading::from(&reading));
        if let Some(by) = &self.session_key
            && let Some(key) = by.key_of(&reading)
        {
            self.session_events.push(SessionEvent {
                key,
                participant: reading.source.to_owned(),
                ts: reading.ts,
            });
        }
        if !self.archive_readings {
            if self.points.len() >= SEND_BATCH {
                self.flush();
            }
            return;
        }
        self.readings.push(&reading);
        if self.kafka.is_some() {
            self.offsets.push(self.offset);
        }
        if self.readings.len() >= SEND_BATCH {
            self.flush();
        }
    }

    fn dead_letter(
        &mut self,
        ts: Option<i64>,
        origin: String,
        kind: &'static str,
        reason: String,
        raw: Option<&[u8]>,
    ) {
        let ts = ts.unwrap_or(self.max_ts).max(0);
        if matches!(kind, "parse" | "schema" | "oversize") {
            // The input the record came from stands for its source, which may be unreadable.
            let input = origin
                .rsplit_once(':')
                .map_or(origin.as_str(), |(file, _)| file);
            self.violation(input, SCHEMA_EVENT, 1.0);
        }
        self.errors
            .push(DeadLetter::new(ts, origin, kind, reason, raw));
    }
}

impl WorkerSink {
    /// Parses one Kafka message into readings and dead letters (named by topic, partition and
    /// offset).
    pub(crate) fn message(&mut self, message: &KafkaMessage<'_>) {
        // Buffered rows come from one partition at a time, so that the archive can name its
        // files by partition and offset.
        let same = self
            .kafka
            .as_ref()
            .is_some_and(|(t, p)| *p == message.partition && **t == *message.topic);
        if !same {
            self.flush();
            self.kafka = Some((message.topic.into(), message.partition));
        }
        self.offset = message.offset;
        let origin = || message.origin();
        match message.payload {
            None => self.dead_letter(
                None,
                origin(),
                "parse",
                "the message has no value (a tombstone)".into(),
                None,
            ),
            Some(bytes) if bytes.len() as u64 > self.max_line_bytes => {
                let reason = format!(
                    "the message is {} bytes, over the {}-byte limit for one record: raise \
                     --max-line-bytes (max_line_bytes in the [input] table of a job file) to read it",
                    bytes.len(),
                    self.max_line_bytes
                );
                // Only the head is kept, and not parsed: its payload is masked to the cut.
                let head = &bytes[..bytes.len().min(MAX_RAW_BYTES)];
                let raw = strip_json_payload(head);
                self.dead_letter(None, origin(), "oversize", reason, Some(&raw));
            }
            Some(bytes) => vigil_datasets::loaders::parse_message(bytes, &origin, self),
        }
    }

    /// Records a late or malformed record as an event of `source` at the current input time.
    pub(crate) fn violation(&mut self, source: &str, event: &str, value: f64) {
        let ts = self.watermark.max(self.max_ts.max(0) as u64) as i64;
        self.violations.push(SeriesReading::from(&ReadingRef::event(
            source, event, ts, value,
        )));
    }
}

/// A reading as JSON for the `raw` column of a dead letter, without its payload.
fn raw_json(reading: &ReadingRef<'_>) -> String {
    let mut shown = reading.to_reading();
    shown.payload = None;
    vigil_operators::Record::to_json(&shown)
}

/// What a session is kept by.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionKey {
    /// The value of this attribute of the event (events without it take part in none).
    Room(String),
    /// The event's source.
    Source,
}

impl SessionKey {
    /// The session key of a reading, if it has one.
    pub fn key_of(&self, reading: &ReadingRef<'_>) -> Option<String> {
        match self {
            SessionKey::Source => Some(reading.source.to_owned()),
            SessionKey::Room(attr) => {
                let attrs = reading.attrs?;
                // Only events that carry the attribute pay for parsing.
                if !attrs.contains(attr.as_str()) {
                    return None;
                }
                let value: serde_json::Value = serde_json::from_str(attrs).ok()?;
                match value.get(attr)? {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }
            }
        }
    }
}
