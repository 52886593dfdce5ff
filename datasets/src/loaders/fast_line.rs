//! A fast path for the plain telemetry line: a flat JSON object of strings, numbers and nulls.
//!
//! Most lines a producer writes are this shape, and serde's derived parser spends most of its
//! time being general. [`parse_plain`] accepts only what it can read exactly as the serde path
//! would — same fields, same values — and declines everything else (escapes, nested values,
//! unknown keys, duplicates, anything malformed), which then goes through the serde path and
//! gets its error message there. A test checks the two agree on every line the fast path takes.

use vigil_operators::{Kind, ReadingRef, time::check_range, time::parse_ts};

/// The fields of a plain line, borrowed from it.
#[derive(Default)]
struct Fields<'a> {
    event_id: Option<&'a str>,
    source: Option<&'a str>,
    kind: Option<Kind>,
    name: Option<&'a str>,
    ts: Option<i64>,
    seq: Option<u64>,
    value: Option<f64>,
    seen: u16,
}

/// A JSON value of a plain line.
enum Value<'a> {
    Str(&'a str),
    Num(&'a str),
    Null,
}

struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        let bytes = self.text.as_bytes();
        while self.at < bytes.len() && matches!(bytes[self.at], b' ' | b'\t' | b'\n' | b'\r') {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.skip_ws();
        (self.text.as_bytes().get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.text.as_bytes().get(self.at).copied()
    }

    /// A string without escapes or control characters. Strings here are short (ids, names),
    /// so a plain loop beats setting up a vectorised search.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut end = start;
        loop {
            match *bytes.get(end)? {
                b'"' => break,
                b'\\' | 0..0x20 => return None,
                _ => end += 1,
            }
        }
        self.at = end + 1;
        Some(&self.text[start..end])
    }

    /// A number in JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<&'a str> {
        self.skip_ws();
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut i = start;
        let digits = |i: &mut usize| {
            let from = *i;
            while *i < bytes.len() && bytes[*i].is_ascii_digit() {
                *i += 1;
            }
            *i > from
        };
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        match bytes.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                digits(&mut i);
            }
            _ => return None,
        }
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            if !digits(&mut i) {
                return None;
            }
        }
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !digits(&mut i) {
                return None;
            }
        }
        self.at = i;
        Some(&self.text[start..i])
    }

    fn value(&mut self) -> Option<Value<'a>> {
        match self.peek()? {
            b'"' => self.string().map(Value::Str),
            b'n' => {
                let rest = &self.text[self.at..];
                rest.starts_with("null").then(|| {
                    self.at += 4;
                    Value::Null
                })
            }
            b'-' | b'0'..=b'9' => self.number().map(Value::Num),
            _ => None,
        }
    }
}

/// Parses a plain line, or returns `None` for the serde path to handle.
pub(crate) fn parse_plain(line: &str) -> Option<ReadingRef<'_>> {
    let mut cursor = Cursor { text: line, at: 0 };
    let mut fields = Fields::default();
    cursor.eat(b'{')?;
    if cursor.peek()? != b'}' {
        loop {
            let key = cursor.string()?;
            cursor.eat(b':')?;
            let value = cursor.value()?;
            fields.set(key, value)?;
            match cursor.peek()? {
                b',' => cursor.at += 1,
                b'}' => break,
                _ => return None,
            }
        }
    }
    cursor.eat(b'}')?;
    cursor.skip_ws();
    if cursor.at != line.len() {
        return None;
    }
    let (source, name) = (fields.source?, fields.name?);
    let (ts, value) = (fields.ts?, fields.value?);
    if source.is_empty() || name.is_empty() || !value.is_finite() {
        return None;
    }
    Some(ReadingRef {
        event_id: fields.event_id,
        source,
        kind: fields.kind.unwrap_or_default(),
        name,
        ts,
        seq: fields.seq,
        value,
        attrs: None,
        payload: None,
        key_id: None,
    })
}

impl<'a> Fields<'a> {
    /// Takes one member; `None` declines the line (a duplicate, or a value the fast path does
    /// not read exactly as the serde path).
    fn set(&mut self, key: &str, value: Value<'a>) -> Option<()> {
        let bit = match key {
            "event_id" => 0,
            "source" => 1,
            "kind" => 2,
            "name" => 3,
            "ts" => 4,
            "seq" => 5,
            "value" => 6,
            "attrs" => 7,
            "payload" => 8,
            "key_id" => 9,
            _ => return None,
        };
        if self.seen & (1 << bit) != 0 {
            return None;
        }
        self.seen |= 1 << bit;
        match (bit, value) {
            (0, Value::Str(s)) => self.event_id = Some(s),
            (0 | 2 | 5 | 7 | 8 | 9, Value::Null) => {}
            (1, Value::Str(s)) => self.source = Some(s),
            (2, Value::Str("reading")) => self.kind = Some(Kind::Reading),
            (2, Value::Str("event")) => self.kind = Some(Kind::Event),
            (3, Value::Str(s)) => self.name = Some(s),
            (4, Value::Num(n)) if n.bytes().all(|b| b.is_ascii_digit()) => {
                self.ts = Some(check_range(n.parse::<i64>().ok()?)?);
            }
            (4, Value::Str(s)) => self.ts = Some(parse_ts(s)?),
            (5, Value::Num(n)) if n.bytes().all(|b| b.is_ascii_digit()) => {
                self.seq = Some(n.parse().ok()?)
            }
            // Plain decimals of at most 15 digits convert exactly with a single rounding in any
            // parser; longer ones and exponents go to serde, whose rounding may differ by an ulp.
            (6, Value::Num(n)) if plain_decimal(n) => self.value = Some(n.parse().ok()?),
            // key_id is not read from input; a string there is accepted and ignored as serde does.
            (9, Value::Str(_)) => {}
            _ => return None,
        }
        Some(())
    }
}

/// Whether a JSON number has no exponent and at most 15 digits.
fn plain_decimal(number: &str) -> bool {
    !number.contains(['e', 'E']) && number.bytes().filter(u8::is_ascii_digit).count() <= 15
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::parse_plain;
    use crate::generator::{RocketParams, rocket_readings};
    use crate::loaders::ndjson::parse_line_serde;

    /// Lines the generator writes, hand-written variants, and random mutations of both.
    fn corpus() -> Vec<String> {
        let spec = RocketParams {
            vehicles: 3,
            ticks: 50,
            ..RocketParams::default()
        };
        let mut lines: Vec<String> = rocket_readings(&spec)
            .map(|r| serde_json::to_string(&r).unwrap())
            .collect();
        lines.extend(
            [
                r#"{"source":"veh-7","name":"temp_c","ts":1767225600000,"value":21.5}"#,
                r#" { "source" : "veh-7" , "name":"temp_c", "ts":"2026-01-01T00:00:00Z", "value": -1.5e3 } "#,
                r#"{"source":"veh-7","name":"temp_c","ts":1767225600000,"value":21.5,"kind":"event","seq":3}"#,
                r#"{"source":"veh-7","name":"temp_c","ts":1767225600000,"value":21.5,"event_id":""}"#,
                r#"{"source":"veh-7","name":"temp_c","ts":1767225600000.0,"value":1}"#,
                r#"{"source":"veh-7","name":"temp_c","ts":1767225600000,"value":1,"value":2}"#,
                r#"{"source":"v\"7","name":"temp_c","ts":1767225600000,"value":1}"#,
                r#"{"source":"veh-7","name":"temp_c","ts":1767225600000,"value":01}"#,
                r#"{"source":"veh-7","name":"temp_c","ts":1767225600000,"value":1e999}"#,
                r#"{"source":"veh-7","name":"temp_c","ts":-1,"value":1}"#,
                r#"{"source":"veh-7","name":"temp_c","ts":1767225600000,"value":1,"attrs":{"a":1}}"#,
                r#"{"source":"veh-7","name":"temp_c","ts":1767225600000,"value":1,"payload":"x"}"#,
                r#"{"source":"veh-7","name":"temp_c","ts":1767225600000,"value":1,"key_id":"k-1"}"#,
                r#"{"source":"veh-7","name":"","ts":1767225600000,"value":1}"#,
                r#"{"source":"veh-7","name":"temp_c","ts":1767225600000,"value":1,"other":true}"#,
                r#"{"source":"veh-7","name":"temp_c","ts":1767225600000,"value":1}x"#,
                r#"{"source":"veh-7","name":"temp_c","ts":1767225600000,"value":1,}"#,
                r#"{"source":"veh-7","kind":"weird","name":"temp_c","ts":1767225600000,"value":1}"#,
                r#"{}"#,
            ]
            .map(String::from),
        );
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let base = lines.clone();
        let alphabet = b"{}[]\":,.-+0123456789eE \\nulltrue";
        for _ in 0..20_000 {
            let mut bytes = base[rng.random_range(0..base.len())].clone().into_bytes();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..bytes.len().max(1));
                match rng.random_range(0..3) {
                    0 if !bytes.is_empty() => {
                        bytes.remove(at.min(bytes.len() - 1));
                    }
                    1 => bytes.insert(
                        at.min(bytes.len()),
                        alphabet[rng.random_range(0..alphabet.len())],
                    ),
                    _ if !bytes.is_empty() => {
                        let i = at.min(bytes.len() - 1);
                        bytes[i] = alphabet[rng.random_range(0..alphabet.len())];
                    }
                    _ => {}
                }
            }
            if let Ok(text) = String::from_utf8(bytes) {
                lines.push(text);
            }
        }
        lines
    }

    #[test]
    fn fast_path_agrees_with_serde_whenever_it_answers() {
        let lines = corpus();
        let mut taken = 0;
        for line in &lines {
            if let Some(fast) = parse_plain(line) {
                taken += 1;
                match parse_line_serde(line) {
                    Ok((slow, payload)) => {
                        assert_eq!(fast.to_reading(), slow, "{line}");
                        assert!(payload.is_none(), "{line}");
                    }
                    Err(e) => panic!("fast path took a line serde rejects ({e:?}): {line}"),
                }
            }
        }
        // Every generated line is plain, so the fast path must take at least those.
        assert!(taken >= 3 * 8 * 50, "fast path took only {taken} lines");
    }
}
