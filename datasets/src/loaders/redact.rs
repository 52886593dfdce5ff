//! Clear payloads taken out of the raw input a dead letter keeps.
//!
//! A reading's `payload` is only ever stored encrypted, but a record that cannot be read is kept
//! in the `errors` table as it came, so that a user sees what was wrong with it. Its payload is
//! taken out first, whatever shape the record is in: a line that parses loses its `payload`
//! key; a line that does not parse (cut short, a bad value, not UTF-8) has every value after a
//! `"payload"` key masked, up to where the value ends or, when it never ends cleanly, to the
//! end of the line; a CSV row has its payload cell blanked, or no raw text at all when the row
//! is too malformed to tell which cell that is.

use std::borrow::Cow;

/// What a masked payload value reads as in a dead letter.
pub const PAYLOAD_REMOVED: &[u8] = b"\"<payload removed>\"";

/// The column of a CSV file that holds clear payloads: vigil does not read it, and keeps it out
/// of the raw text of dead letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadColumn {
    /// Its index.
    pub column: usize,
    /// How many columns the header has: only in a row with as many can the payload be found.
    pub columns: usize,
}

/// A JSON line (an NDJSON line, a Kafka message) without its clear payload.
pub fn strip_json_payload(raw: &[u8]) -> Cow<'_, [u8]> {
    // A key can spell `payload` with `\u` escapes; a line with neither cannot carry one.
    if memchr::memmem::find(raw, b"payload").is_none()
        && memchr::memmem::find(raw, b"\\u").is_none()
    {
        return Cow::Borrowed(raw);
    }
    match serde_json::from_slice::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Object(mut object)) => match object.remove("payload") {
            Some(_) => Cow::Owned(serde_json::Value::Object(object).to_string().into_bytes()),
            None => Cow::Borrowed(raw),
        },
        // A line that is one JSON string may be a whole record encoded again.
        Ok(serde_json::Value::String(inner)) => match strip_json_payload(inner.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(raw),
            Cow::Owned(stripped) => {
                let text = String::from_utf8_lossy(&stripped).into_owned();
                Cow::Owned(serde_json::Value::String(text).to_string().into_bytes())
            }
        },
        _ => mask_payloads(raw),
    }
}

/// Masks the value after every `"payload"` key of text that is not well-formed JSON. Every
/// quote is tried as the start of the key, so that a stray quote earlier in the line cannot
/// hide one.
fn mask_payloads(raw: &[u8]) -> Cow<'_, [u8]> {
    let mut out = Vec::new();
    let mut copied = 0;
    let mut at = 0;
    while let Some(found) = memchr::memchr(b'"', &raw[at..]) {
        let quote = at + found;
        match payload_key_end(raw, quote) {
            Some(after_colon) => {
                let start = skip_ws(raw, after_colon);
                let end = value_end(raw, start);
                out.extend_from_slice(&raw[copied..start]);
                out.extend_from_slice(PAYLOAD_REMOVED);
                copied = end;
                at = end;
            }
            None => at = quote + 1,
        }
        if at >= raw.len() {
            break;
        }
    }
    if copied == 0 && out.is_empty() {
        return Cow::Borrowed(raw);
    }
    out.extend_from_slice(&raw[copied..]);
    Cow::Owned(out)
}

/// If a string starting at `quote` decodes to `payload` and is followed by a colon: the index
/// after the colon.
fn payload_key_end(raw: &[u8], quote: usize) -> Option<usize> {
    const KEY: &[u8] = b"payload";
    // The longest spelling of the key: every character as a `\uXXXX` escape.
    const LONGEST: usize = KEY.len() * 6;
    let mut at = quote + 1;
    let mut matched = 0;
    loop {
        if at - quote > LONGEST + 1 {
            return None;
        }
        let (byte, width) = match *raw.get(at)? {
            b'"' => break,
            b'\\' => match raw.get(at + 1)? {
                b'u' => {
                    let hex = std::str::from_utf8(raw.get(at + 2..at + 6)?).ok()?;
                    (u8::try_from(u32::from_str_radix(hex, 16).ok()?).ok()?, 6)
                }
                // The other escapes stand for characters that are not in the key.
                _ => return None,
            },
            byte => (byte, 1),
        };
        if KEY.get(matched) != Some(&byte) {
            return None;
        }
        matched += 1;
        at += width;
    }
    if matched != KEY.len() {
        return None;
    }
    let colon = skip_ws(raw, at + 1);
    (raw.get(colon) == Some(&b':')).then_some(colon + 1)
}

fn skip_ws(raw: &[u8], mut at: usize) -> usize {
    while raw.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// Where the value starting at `start` ends. A value that is not followed by a separator (a
/// comma, a closing bracket or the end) has lost its shape, and is taken to run to the end.
fn value_end(raw: &[u8], start: usize) -> usize {
    let end = match raw.get(start) {
        None => return raw.len(),
        Some(b'"') => string_end(raw, start),
        Some(b'{' | b'[') => container_end(raw, start),
        Some(_) => {
            let mut end = start;
            while raw
                .get(end)
                .is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
            {
                end += 1;
            }
            // Only a number, `true`, `false` or `null` ends where its characters do.
            if serde_json::from_slice::<serde_json::Value>(&raw[start..end]).is_err() {
                return raw.len();
            }
            end
        }
    };
    match raw.get(skip_ws(raw, end)) {
        None | Some(b',' | b'}' | b']') => end,
        Some(_) => raw.len(),
    }
}

/// The index after the string starting at `quote`, or the end when it is never closed.
fn string_end(raw: &[u8], quote: usize) -> usize {
    let mut at = quote + 1;
    while let Some(found) = memchr::memchr2(b'"', b'\\', &raw[at.min(raw.len())..]) {
        let i = at + found;
        if raw[i] == b'"' {
            return i + 1;
        }
        at = i + 2;
    }
    raw.len()
}

/// The index after the object or array starting at `open`, or the end when it is never closed.
fn container_end(raw: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    let mut at = open;
    while let Some(&byte) = raw.get(at) {
        match byte {
            b'"' => {
                at = string_end(raw, at);
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return at + 1;
                }
            }
            _ => {}
        }
        at += 1;
    }
    raw.len()
}

/// A CSV row, written back as CSV without its payload cell's contents. `None` when the row does
/// not have the header's number of fields: a stray separator may have moved the payload into
/// another cell, so no cell of it can be trusted to be clear.
pub(super) fn csv_row_without_payload(
    record: &csv::ByteRecord,
    payload: Option<PayloadColumn>,
) -> Option<Vec<u8>> {
    if let Some(column) = payload
        && record.len() != column.columns
    {
        return None;
    }
    let blank = payload.map(|p| p.column);
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let fields = record
        .iter()
        .enumerate()
        .map(|(i, field)| if Some(i) == blank { &b""[..] } else { field });
    writer.write_record(fields).ok()?;
    let mut row = writer.into_inner().ok()?;
    if row.last() == Some(&b'\n') {
        row.pop();
    }
    Some(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripped(line: &str) -> String {
        String::from_utf8(strip_json_payload(line.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn a_well_formed_line_loses_its_payload_key() {
        let line = r#"{"source":"a","name":"t","ts":1,"value":"warm","payload":"TOPSECRET"}"#;
        let got = stripped(line);
        let value: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"source":"a","name":"t","ts":1,"value":"warm"})
        );
    }

    #[test]
    fn an_escaped_key_is_still_the_payload() {
        let line = r#"{"source":"a","pay\u006coad":"TOPSECRET","value":"x"}"#;
        assert!(!stripped(line).contains("TOPSECRET"), "{}", stripped(line));
        let broken = r#"{"source":"a","pay\u006coad":"TOPSECRET","value":"#;
        assert_eq!(
            stripped(broken),
            r#"{"source":"a","pay\u006coad":"<payload removed>","value":"#
        );
    }

    #[test]
    fn a_line_without_payload_is_kept_as_it_came() {
        for line in [
            r#"{"source":"a","value":"x"}"#,
            r#"{"b":1, "a":2}"#,
            "not json at all",
            r#"{"payloads":"not the key","x":"#,
            r#"{"name":"payload","x":"#,
        ] {
            assert!(
                matches!(strip_json_payload(line.as_bytes()), Cow::Borrowed(_)),
                "{line}"
            );
        }
    }

    #[test]
    fn a_truncated_payload_is_masked_to_the_end() {
        assert_eq!(
            stripped(r#"{"ts":1,"source":"a","payload":"TOPSECRET"#),
            r#"{"ts":1,"source":"a","payload":"<payload removed>""#
        );
        assert_eq!(
            stripped(r#"{"ts":1,"payload":{"note":"TOPSECRET","n":[1,2"#),
            r#"{"ts":1,"payload":"<payload removed>""#
        );
    }

    #[test]
    fn escaped_quotes_do_not_end_the_payload_string() {
        assert_eq!(
            stripped(r#"{"ts":1,"payload":"a \"TOPSECRET\" b \\","value":}"#),
            r#"{"ts":1,"payload":"<payload removed>","value":}"#
        );
        assert_eq!(
            stripped(r#"{"ts":1,"payload":"a \"TOPSECRET\" b"#),
            r#"{"ts":1,"payload":"<payload removed>""#
        );
    }

    #[test]
    fn object_array_and_scalar_payloads_are_masked_whole() {
        assert_eq!(
            stripped(r#"{"payload":{"k":"}TOPSECRET{","n":{"m":[1]}}, "ts":,}"#),
            r#"{"payload":"<payload removed>", "ts":,}"#
        );
        assert_eq!(
            stripped(r#"{"payload" : [1,"TOPSECRET]",[2]],"ts":x}"#),
            r#"{"payload" : "<payload removed>","ts":x}"#
        );
        assert_eq!(
            stripped(r#"{"payload":123456,"ts":x}"#),
            r#"{"payload":"<payload removed>","ts":x}"#
        );
    }

    #[test]
    fn a_value_that_loses_its_shape_is_masked_to_the_end() {
        for line in [
            r#"{"payload":TOPSECRET and more,"value":1}"#,
            r#"{"payload":"a" TOPSECRET,"value":1"#,
            r#"{"payload":12 TOPSECRET,"value":1"#,
            r#"{"payload":{"a":1} TOPSECRET}"#,
        ] {
            let got = stripped(line);
            assert!(got.ends_with(r#""payload":"<payload removed>""#), "{got}");
        }
    }

    #[test]
    fn a_stray_quote_earlier_in_the_line_does_not_hide_the_key() {
        let got = stripped(r#"{"source":"a"b","payload":"TOPSECRET","value":1"#);
        assert!(!got.contains("TOPSECRET"), "{got}");
    }

    #[test]
    fn every_payload_key_of_a_broken_line_is_masked() {
        let got = stripped(r#"[{"payload":"TOPSECRET1"},{"payload":"TOPSECRET2"}"#);
        assert_eq!(
            got,
            r#"[{"payload":"<payload removed>"},{"payload":"<payload removed>"}"#
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_masked_too() {
        let line = b"{\"payload\":\"TOPSECRET\xff\xfe\",\"x\":\xff}";
        let got = strip_json_payload(line);
        assert!(memchr::memmem::find(&got, b"TOPSECRET").is_none());
        assert!(memchr::memmem::find(&got, PAYLOAD_REMOVED).is_some());
    }

    #[test]
    fn a_record_encoded_again_as_a_string_loses_its_payload() {
        let line = serde_json::Value::from(r#"{"ts":1,"payload":"TOPSECRET"}"#).to_string();
        let got = stripped(&line);
        assert!(!got.contains("TOPSECRET"), "{got}");
        assert!(got.contains(r#"\"ts\":1"#), "{got}");
    }

    #[test]
    fn a_csv_row_has_its_payload_cell_blanked_or_no_raw_at_all() {
        let record = csv::ByteRecord::from(vec!["veh-1", "temp_c", "1", "TOPSECRET, really", "x"]);
        let column = PayloadColumn {
            column: 3,
            columns: 5,
        };
        assert_eq!(
            csv_row_without_payload(&record, Some(column)).as_deref(),
            Some(&b"veh-1,temp_c,1,,x"[..])
        );
        let shifted = PayloadColumn {
            column: 3,
            columns: 4,
        };
        assert_eq!(csv_row_without_payload(&record, Some(shifted)), None);
        assert_eq!(
            csv_row_without_payload(&record, None).as_deref(),
            Some(&b"veh-1,temp_c,1,\"TOPSECRET, really\",x"[..])
        );
    }
}
