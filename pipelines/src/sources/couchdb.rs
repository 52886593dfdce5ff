//! The CouchDB `_changes` feed as text: one change row turned into the minimal metadata that is
//! forwarded of it (`id`, `seq`, `type`, `ts`, never the document body), the lines of a
//! `feed=continuous` response, and whole `feed=normal` / `feed=longpoll` responses. The
//! listener that requests the feed and forwards the changes is `jobs::couchdb`.

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// What is forwarded of one change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeMeta {
    /// The document id.
    pub id: String,
    /// The feed position of the change (opaque; a number on some servers, a string on others).
    pub seq: String,
    /// `created` (first revision), `updated`, `deleted`, or `conflict` (the document has
    /// conflicting leaf revisions).
    #[serde(rename = "type")]
    pub kind: String,
    /// When the listener saw the change (epoch ms): the feed carries no time of its own.
    pub ts: i64,
}

/// One row of a `_changes` feed, as CouchDB and PouchDB write it.
#[derive(Deserialize)]
struct Row {
    id: String,
    seq: serde_json::Value,
    changes: Vec<Rev>,
    #[serde(default)]
    deleted: bool,
}

#[derive(Deserialize)]
struct Rev {
    rev: String,
}

/// A feed position as text: CouchDB 2+ uses strings, CouchDB 1 and PouchDB numbers.
fn seq_text(seq: &serde_json::Value) -> Option<String> {
    match seq {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A change row turned into its metadata, or the reason it cannot be.
pub fn change_of(row: &serde_json::Value, now_ms: i64) -> Result<ChangeMeta, String> {
    // Read in place: the row is not copied.
    let row = Row::deserialize(row).map_err(|e| format!("not a _changes row: {e}"))?;
    let seq = seq_text(&row.seq).ok_or("seq is neither a string nor a number")?;
    let first = row
        .changes
        .first()
        .ok_or("the row lists no revision in `changes`")?;
    let kind = if row.deleted {
        "deleted"
    } else if row.changes.len() > 1 {
        "conflict"
    } else if first.rev.starts_with("1-") {
        "created"
    } else {
        "updated"
    };
    Ok(ChangeMeta {
        id: row.id,
        seq,
        kind: kind.into(),
        ts: now_ms,
    })
}

/// One line of a continuous feed.
#[derive(Debug, PartialEq)]
pub enum FeedLine {
    /// A change.
    Change(ChangeMeta),
    /// The feed's closing line with its last position.
    LastSeq(String),
    /// A heartbeat (an empty line).
    Heartbeat,
    /// A line that is not a change: why, and the line.
    Bad(String, String),
}

/// Reads one line of a `feed=continuous` response.
pub fn parse_line(line: &str, now_ms: i64) -> FeedLine {
    let line = line.trim();
    if line.is_empty() {
        return FeedLine::Heartbeat;
    }
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(value) => value,
        Err(e) => return FeedLine::Bad(format!("not JSON: {e}"), line.into()),
    };
    if let Some(last) = value.get("last_seq").and_then(seq_text) {
        return FeedLine::LastSeq(last);
    }
    match change_of(&value, now_ms) {
        Ok(change) => FeedLine::Change(change),
        Err(reason) => FeedLine::Bad(reason, line.into()),
    }
}

/// A whole `_changes` response (normal or longpoll): the changes (or why a row is unusable,
/// with the row), and `last_seq`.
pub type Response = (Vec<Result<ChangeMeta, (String, String)>>, String);

/// Reads a `feed=normal` or `feed=longpoll` response body.
pub fn parse_response(body: &str, now_ms: i64) -> anyhow::Result<Response> {
    let value: serde_json::Value =
        serde_json::from_str(body).context("the _changes response is not JSON")?;
    let last = value
        .get("last_seq")
        .and_then(seq_text)
        .context("the _changes response has no last_seq")?;
    let rows = value
        .get("results")
        .and_then(serde_json::Value::as_array)
        .context("the _changes response has no results array")?;
    let changes = rows
        .iter()
        .map(|row| change_of(row, now_ms).map_err(|reason| (reason, row.to_string())))
        .collect();
    Ok((changes, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_metadata_only() {
        let row = serde_json::json!({
            "seq": 7, "id": "veh-1", "changes": [{"rev": "2-abc"}],
            "doc": {"secret": "never forwarded"}
        });
        let change = change_of(&row, 5).unwrap();
        assert_eq!(
            change,
            ChangeMeta {
                id: "veh-1".into(),
                seq: "7".into(),
                kind: "updated".into(),
                ts: 5
            }
        );
        assert!(!serde_json::to_string(&change).unwrap().contains("secret"));
        assert_eq!(parse_line("", 0), FeedLine::Heartbeat);
        assert_eq!(
            parse_line("{\"last_seq\":\"9-x\",\"pending\":0}", 0),
            FeedLine::LastSeq("9-x".into())
        );
        assert!(
            matches!(parse_line("{\"id\":\"a\"}", 0), FeedLine::Bad(r, _) if r.contains("not a _changes row"))
        );
        assert!(matches!(parse_line("nonsense", 0), FeedLine::Bad(r, _) if r.contains("not JSON")));
    }
}
