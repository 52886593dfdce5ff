//! Change-feed loaders: database change feeds into the `changes` schema.
//!
//! One file per feed: [`debezium`] envelopes (with and without the Kafka Connect schema),
//! [`wal2json`] (format versions 1 and 2), [`cockroach`] changefeed messages and [`couchdb`]
//! `_changes` rows. [`parse_feed`] reads a recorded feed — newline-delimited or a stream of
//! (pretty-printed) JSON documents — and recognises the format of each document unless told;
//! every change goes to a [`ChangeSink`], and every document it cannot use goes there too, as a
//! dead letter with the reason.

pub mod cockroach;
pub mod couchdb;
pub mod debezium;
pub mod wal2json;

mod feed;

pub use feed::{
    ChangeSink, CollectedChanges, Document, FeedParams, FeedState, key_of, row_text, time_of,
};

use serde_json::{Map, Value};

/// Which feed a document comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FeedFormat {
    /// Recognised per document by its fields.
    #[default]
    Auto,
    /// A Debezium envelope.
    Debezium,
    /// wal2json, format version 1 or 2.
    Wal2Json,
    /// A CockroachDB changefeed message.
    Cockroach,
    /// A CouchDB `_changes` row or response.
    CouchDb,
}

impl FeedFormat {
    /// `auto`, `debezium`, `wal2json`, `cockroach` or `couchdb`.
    pub fn parse(name: &str) -> Option<FeedFormat> {
        Some(match name {
            "auto" => FeedFormat::Auto,
            "debezium" => FeedFormat::Debezium,
            "wal2json" => FeedFormat::Wal2Json,
            "cockroach" | "cockroachdb" => FeedFormat::Cockroach,
            "couchdb" => FeedFormat::CouchDb,
            _ => return None,
        })
    }

    /// The format of one document, by the fields only its feed has.
    fn recognise(document: &Map<String, Value>) -> Option<FeedFormat> {
        let has = |k: &str| document.contains_key(k);
        if has("change") || has("action") {
            Some(FeedFormat::Wal2Json)
        } else if has("op") || has("payload") {
            Some(FeedFormat::Debezium)
        } else if has("results") || (has("seq") && has("id")) || has("last_seq") {
            Some(FeedFormat::CouchDb)
        } else if has("key") || has("resolved") || has("after") || has("__crdb__") {
            Some(FeedFormat::Cockroach)
        } else {
            None
        }
    }
}

/// Reads every document of a recorded feed named `source`.
pub fn parse_feed(
    bytes: &[u8],
    source: &str,
    format: FeedFormat,
    options: &FeedParams,
    sink: &mut impl ChangeSink,
) {
    let mut state = FeedState::default();
    let options = FeedParams {
        table: options
            .table
            .clone()
            .or_else(|| Some(file_stem(source).to_owned())),
        ..options.clone()
    };
    for (line, raw) in documents(bytes) {
        let origin = format!("{source}:{line}");
        let value = match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                sink.dead_letter(origin, "not a JSON object".into(), raw);
                continue;
            }
            Err(error) => {
                sink.dead_letter(origin, format!("not JSON: {error}"), raw);
                continue;
            }
        };
        let document = Document { value, origin, raw };
        parse_document(document, format, &options, &mut state, sink);
    }
}

/// Turns one document into changes, in the given format or the one it is recognised as.
pub fn parse_document(
    document: Document<'_>,
    format: FeedFormat,
    options: &FeedParams,
    state: &mut FeedState,
    sink: &mut impl ChangeSink,
) {
    let format = match format {
        FeedFormat::Auto => FeedFormat::recognise(&document.value),
        known => Some(known),
    };
    let result = match format {
        Some(FeedFormat::Debezium) => debezium::parse(&document, options, sink),
        Some(FeedFormat::Wal2Json) => wal2json::parse(&document, options, state, sink),
        Some(FeedFormat::Cockroach) => cockroach::parse(&document, options, sink),
        Some(FeedFormat::CouchDb) => couchdb::parse(&document, options, sink),
        Some(FeedFormat::Auto) | None => Err(
            "not a change of any feed vigil reads (Debezium, wal2json, CockroachDB, CouchDB): \
             give the format with --format"
                .to_owned(),
        ),
    };
    if let Err(reason) = result {
        sink.dead_letter(document.origin, reason, document.raw);
    }
}

/// The documents of a feed with the line each starts on: one per line when every non-blank
/// line is a JSON value of its own, else the values of a stream of (pretty-printed) JSON.
fn documents(bytes: &[u8]) -> Vec<(usize, &[u8])> {
    let lines: Vec<(usize, &[u8])> = bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_ascii()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    // A line that ends by opening an object or array, or with a comma, continues on the next:
    // the documents are pretty-printed. Otherwise each line is one, and a bad line is one bad
    // document.
    let one_per_line = !lines
        .iter()
        .any(|(_, l)| matches!(l.last(), Some(b'{' | b'[' | b',')));
    if one_per_line {
        return lines;
    }
    let mut out = Vec::new();
    let mut stream =
        serde_json::Deserializer::from_slice(bytes).into_iter::<serde::de::IgnoredAny>();
    let mut start = 0;
    loop {
        match stream.next() {
            Some(Ok(_)) => {
                let end = stream.byte_offset();
                let text = bytes[start..end].trim_ascii();
                let skipped = bytes[start..end].len() - bytes[start..end].trim_ascii_start().len();
                out.push((line_of(bytes, start + skipped), text));
                start = end;
            }
            Some(Err(_)) => {
                // The rest cannot be cut into values: it is one bad document.
                let rest = bytes[start..].trim_ascii();
                if !rest.is_empty() {
                    let skipped = bytes[start..].len() - bytes[start..].trim_ascii_start().len();
                    out.push((line_of(bytes, start + skipped), rest));
                }
                break;
            }
            None => break,
        }
    }
    out
}

fn line_of(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset].iter().filter(|b| **b == b'\n').count() + 1
}

fn file_stem(source: &str) -> &str {
    let name = source.rsplit(['/', '\\']).next().unwrap_or(source);
    name.split('.').next().unwrap_or(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn documents_one_per_line_or_pretty_printed() {
        let ndjson = b"{\"a\":1}\n\n{\"b\":2}\nnot json\n";
        let docs: Vec<_> = documents(ndjson)
            .into_iter()
            .map(|(l, d)| (l, d.to_vec()))
            .collect();
        // One per line: the bad line is one bad document.
        assert_eq!(docs[0], (1, b"{\"a\":1}".to_vec()));
        assert_eq!(docs[1], (3, b"{\"b\":2}".to_vec()));
        assert_eq!(docs[2], (4, b"not json".to_vec()));

        let pretty = b"{\n  \"a\": 1,\n  \"c\": [\n 3\n]\n}\n{\n  \"b\": 2\n}\nbad";
        let docs = documents(pretty);
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[1].0, 7);
        assert_eq!(
            docs[2],
            (10, &b"bad"[..]),
            "what cannot be cut is one bad document"
        );
    }

    #[test]
    fn times_in_every_unit_feeds_use() {
        let ms = 1_700_000_000_123;
        for v in [
            serde_json::json!(1_700_000_000.123),
            serde_json::json!(ms),
            serde_json::json!(ms * 1000),
            serde_json::json!(ms * 1_000_000),
            serde_json::json!("2023-11-14T22:13:20.123Z"),
            serde_json::json!("2023-11-14 22:13:20.123+00"),
        ] {
            assert_eq!(time_of(&v), Some(ms), "{v}");
        }
        assert_eq!(time_of(&serde_json::json!("soon")), None);
    }
}
