//! Fuzz entry points: each feeds arbitrary bytes to one real parser and checks what it gives.
//!
//! The libFuzzer targets in `tests/fuzz/` and the corpus test in `tests/tests/fuzz_corpus.rs`
//! call these same functions, so a crash the campaign finds is replayed by `./test` once its
//! reproducer is kept. A function returns normally for any input; a panic is the finding,
//! whether the parser's own or a broken invariant asserted here.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use vigil_operators::{Change, Reading};

use crate::changes::{ChangeSink, FeedFormat, FeedParams, parse_feed};
use crate::loaders::{Collected, TextLimits, load_all, parse_message, plan_paths};

/// The NDJSON fast line parser: whatever it accepts, the serde parser must accept too and read
/// as the same reading, since the fast path is only a shortcut for the common shape.
pub fn fuzz_fast_line(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let Some(fast) = crate::loaders::fast_line::parse_plain(line) else {
        return;
    };
    let fast = fast.to_reading();
    match crate::loaders::ndjson::parse_line_serde(line) {
        Ok((slow, _payload)) => assert_eq!(fast, slow, "the fast and serde parsers disagree"),
        Err((_, kind, reason)) => {
            panic!("the fast parser read {fast:?} from a line serde rejects ({kind}: {reason})")
        }
    }
}

/// The serde line parser, through [`parse_message`] (the Kafka path): every reading is finite
/// and reads back the same when written out again, and every dead letter says why.
pub fn fuzz_serde_line(data: &[u8]) {
    let mut collected = Collected::default();
    parse_message(data, &|| "fuzz:0/0@0".to_owned(), &mut collected);
    check_collected(&collected);
    for (reading, _payload) in &collected.readings {
        let line = reading_line(reading);
        match crate::loaders::ndjson::parse_line_serde(&line) {
            Ok((mut again, _)) => {
                // serde_json rounds some long decimals and exponents an ulp off (the fast line
                // parser declines them for this reason), so the value may move by one ulp.
                let ulps = again.value.to_bits().abs_diff(reading.value.to_bits());
                assert!(ulps <= 1, "{line} reads back as value {}", again.value);
                again.value = reading.value;
                assert_eq!(&again, reading, "{line} does not read back the same");
            }
            Err((_, kind, reason)) => panic!("{line} does not read back: {kind}: {reason}"),
        }
    }
}

/// The CSV loader on a file holding the bytes, planned with small chunks and a short line
/// limit so that unit cuts and oversize rows are exercised on small inputs.
pub fn fuzz_csv(data: &[u8]) {
    load_file("series.csv", data);
}

/// A Debezium feed.
pub fn fuzz_debezium(data: &[u8]) {
    feed(data, FeedFormat::Debezium);
}

/// A wal2json feed, format version 1 or 2.
pub fn fuzz_wal2json(data: &[u8]) {
    feed(data, FeedFormat::Wal2Json);
}

/// A CockroachDB changefeed.
pub fn fuzz_cockroach(data: &[u8]) {
    feed(data, FeedFormat::Cockroach);
}

/// A CouchDB `_changes` feed.
pub fn fuzz_couchdb(data: &[u8]) {
    feed(data, FeedFormat::CouchDb);
}

/// Writes `data` to a file named `name` in this process's scratch directory, plans it and
/// loads it whole.
fn load_file(name: &str, data: &[u8]) {
    let path = scratch_dir().join(name);
    std::fs::write(&path, data).expect("the fuzz scratch directory is writable");
    let limits = TextLimits {
        chunk_bytes: 64,
        max_line_bytes: 256,
    };
    let plan = plan_paths(&[path], limits).expect("a file that exists can be planned");
    let collected = load_all(&plan);
    check_collected(&collected);
}

/// A directory of this process's own, made once, so that runs in parallel do not share files.
fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vigil-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
        dir
    })
}

/// What every loader promises: finite values, and a reason on every dead letter.
fn check_collected(collected: &Collected) {
    for (reading, _) in &collected.readings {
        assert!(
            reading.value.is_finite(),
            "a reading with value {}",
            reading.value
        );
    }
    for (_, origin, kind, reason, _) in &collected.dead_letters {
        assert!(
            !kind.is_empty(),
            "a dead letter from {origin} without a kind"
        );
        assert!(
            !reason.is_empty(),
            "a dead letter from {origin} without a reason"
        );
    }
}

/// A reading written out in the input line format.
fn reading_line(reading: &Reading) -> String {
    let mut line = serde_json::Map::new();
    line.insert("event_id".into(), reading.event_id.as_str().into());
    line.insert("source".into(), reading.source.as_str().into());
    line.insert(
        "kind".into(),
        serde_json::to_value(reading.kind).expect("a kind serialises"),
    );
    line.insert("name".into(), reading.name.as_str().into());
    line.insert("ts".into(), reading.ts.into());
    if let Some(seq) = reading.seq {
        line.insert("seq".into(), seq.into());
    }
    line.insert("value".into(), reading.value.into());
    if let Some(attrs) = &reading.attrs {
        let attrs: Value = serde_json::from_str(attrs).expect("attrs hold a JSON text");
        line.insert("attrs".into(), attrs);
    }
    Value::Object(line).to_string()
}

/// Reads a feed in `format` and checks every change and dead letter.
fn feed(data: &[u8], format: FeedFormat) {
    let mut sink = CheckedFeed;
    parse_feed(
        data,
        "fuzz/orders.json",
        format,
        &FeedParams::default(),
        &mut sink,
    );
}

/// A change sink that checks what it is given instead of keeping it.
struct CheckedFeed;

impl ChangeSink for CheckedFeed {
    fn change(&mut self, change: Change) {
        let key: Value = serde_json::from_str(&change.key).expect("a change's key is JSON");
        assert!(key.is_array(), "the key {} is not an array", change.key);
        for row in [&change.before, &change.after].into_iter().flatten() {
            let row: Value = serde_json::from_str(row).expect("a change's row is JSON");
            assert!(row.is_object(), "the row {row} is not an object");
        }
        assert!(!change.table.is_empty(), "a change without a table");
    }

    fn dead_letter(&mut self, origin: String, reason: String, _raw: &[u8]) {
        assert!(
            !reason.is_empty(),
            "a dead letter from {origin} without a reason"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first crash of the campaign: a value serde_json reads an ulp off the shortest text
    /// written for it, which the round trip must allow (kept in `tests/fuzz/regressions/`).
    #[test]
    fn a_value_serde_rounds_an_ulp_off_still_round_trips() {
        let line =
            r#"{"source":"SES-11","name":"v","ts":1507762381000,"value":1.9999999999999998e+83}"#;
        fuzz_serde_line(line.as_bytes());
        fuzz_fast_line(line.as_bytes());
    }

    #[test]
    fn every_target_takes_empty_and_binary_input() {
        for data in [&b""[..], b"\xff\xfe\x00{", b"{}\n[]\n\"x\"\n"] {
            fuzz_fast_line(data);
            fuzz_serde_line(data);
            fuzz_csv(data);
            fuzz_debezium(data);
            fuzz_wal2json(data);
            fuzz_cockroach(data);
            fuzz_couchdb(data);
        }
    }
}
