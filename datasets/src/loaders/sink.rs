//! Where a loader's readings and dead letters go, and the reason an over-long line is given.

use vigil_operators::{Reading, ReadingRef};

/// Receives what a loader reads: readings (with their clear payload kept apart, so that it can
/// only ever be stored encrypted) and dead letters.
pub trait RecordSink {
    /// A valid reading, borrowed from the input. `payload` is the clear payload the input
    /// carried, if any; it must be encrypted before it is stored. `reading.payload` holds only
    /// ciphertext read from an archive.
    fn reading(&mut self, reading: ReadingRef<'_>, payload: Option<&[u8]>);

    /// Input that could not be used: where it came from, the class of problem, why, and the
    /// raw input, from which the loaders have already taken any clear payload out. `ts` is the
    /// record's event time when it could be read.
    fn dead_letter(
        &mut self,
        ts: Option<i64>,
        origin: String,
        kind: &'static str,
        reason: String,
        raw: Option<&[u8]>,
    );
}

/// Why a line longer than `max_line` bytes (`len` of them, when known) is a dead letter.
pub(super) fn oversize_reason(len: Option<usize>, max_line: u64) -> String {
    let length = match len {
        Some(len) => format!("is {len} bytes"),
        None => "runs on".to_owned(),
    };
    format!(
        "the line {length}, over the {max_line}-byte limit for one line: raise --max-line-bytes \
         (max_line_bytes in the [input] table of a job file) to read it"
    )
}

/// A dead letter as [`Collected`] keeps it: (ts, origin, kind, reason, raw).
pub type CollectedDeadLetter = (Option<i64>, String, &'static str, String, Option<Vec<u8>>);

/// Collects everything a loader reads, for tests and small tools.
#[derive(Debug, Default)]
pub struct Collected {
    /// The valid readings, each with its clear payload.
    pub readings: Vec<(Reading, Option<Vec<u8>>)>,
    /// The dead letters.
    pub dead_letters: Vec<CollectedDeadLetter>,
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
        raw: Option<&[u8]>,
    ) {
        self.dead_letters
            .push((ts, origin, kind, reason, raw.map(<[u8]>::to_vec)));
    }
}
