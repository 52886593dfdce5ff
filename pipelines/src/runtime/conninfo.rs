//! Connection strings cut into their parameters, without interpreting them: libpq's
//! `key=value` form and the query of a URL.
//!
//! Two readers share these cuts: [`crate::runtime::secrets`], which hides the values of password-like
//! parameters, and [`crate::connect::pg_tls`], which takes out the TLS parameters tokio-postgres does
//! not know. Both must see the same parameters the server would, or a password could slip
//! past one of them.

use std::ops::Range;

/// One parameter of a libpq `key=value` string, as byte ranges of the string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// The key.
    pub key: Range<usize>,
    /// The value as written, quotes and backslashes included; empty when no `=` follows the
    /// key (which libpq refuses, but a string being hidden may still be malformed).
    pub value: Range<usize>,
    /// Whether an `=` follows the key.
    pub assigned: bool,
    /// The whole parameter, key to the end of the value.
    pub span: Range<usize>,
}

/// Whether `text` starts with a URL scheme and `://`; the length of that prefix if so.
pub fn scheme_prefix(text: &str) -> Option<usize> {
    let at = text.find("://")?;
    let scheme = &text[..at];
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(at + 3)
}

/// The parameters of a libpq `key=value` string: keys and values separated by white space,
/// spaces allowed around `=`, values single-quoted or bare, backslash escaping the next
/// character in both. An unterminated quote runs to the end of the string.
pub fn key_values(text: &str) -> Vec<Param> {
    let mut params = Vec::new();
    let mut chars = text.char_indices().peekable();
    let end = text.len();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(key_start, _)) = chars.peek() else {
            break;
        };
        while chars
            .next_if(|(_, c)| !c.is_whitespace() && *c != '=')
            .is_some()
        {}
        let key_end = chars.peek().map_or(end, |(i, _)| *i);
        // Spaces may stand between the key and `=`; look past them without taking them, so
        // that a key with no `=` leaves the next key where it is.
        let rest = &text[key_end..];
        let assigned = rest.trim_start().starts_with('=');
        if !assigned {
            params.push(Param {
                key: key_start..key_end,
                value: key_end..key_end,
                assigned,
                span: key_start..key_end,
            });
            continue;
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        chars.next(); // The `=`.
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let value_start = chars.peek().map_or(end, |(i, _)| *i);
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '\'' => break,
                    _ => {}
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    chars.next();
                }
            }
        }
        let value_end = chars.peek().map_or(end, |(i, _)| *i);
        params.push(Param {
            key: key_start..key_end,
            value: value_start..value_end,
            assigned,
            span: key_start..value_end,
        });
    }
    params
}

/// A `key=value` value as the server reads it: quotes taken off, backslash escapes undone.
pub fn unquote(raw: &str) -> String {
    let inner = match raw.strip_prefix('\'') {
        Some(quoted) => quoted.strip_suffix('\'').unwrap_or(quoted),
        None => raw,
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// A URL cut at its query: what comes before `?`, and the query's `&`-separated parameters as
/// written (a fragment, if any, stays on the last one).
pub fn split_query(url: &str) -> (&str, Vec<&str>) {
    match url.split_once('?') {
        Some((base, query)) => (base, query.split('&').collect()),
        None => (url, Vec::new()),
    }
}

/// A URL query parameter's key and value, percent-decoded as libpq decodes them (a `+` stays
/// a `+`, unlike in an HTML form).
pub fn decode_query_param(param: &str) -> (String, String) {
    url::form_urlencoded::parse(param.replace('+', "%2B").as_bytes())
        .next()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(&str, &str, bool)> {
        key_values(text)
            .into_iter()
            .map(|p| (&text[p.key], &text[p.value], p.assigned))
            .collect()
    }

    #[test]
    fn key_values_follow_libpq() {
        assert_eq!(
            pairs("host=h  port = 5432 password='a b\\'c' dbname=d\\ x"),
            [
                ("host", "h", true),
                ("port", "5432", true),
                ("password", "'a b\\'c'", true),
                ("dbname", "d\\ x", true),
            ]
        );
        assert_eq!(unquote("'a b\\'c'"), "a b'c");
        assert_eq!(unquote("d\\ x"), "d x");
        // Malformed strings are still cut, to the end.
        assert_eq!(
            pairs("password='never closed host=h"),
            [("password", "'never closed host=h", true)]
        );
        assert_eq!(
            pairs("lonely password=p"),
            [("lonely", "", false), ("password", "p", true)]
        );
        assert_eq!(
            pairs("key=é\\ü ok"),
            [("key", "é\\ü", true), ("ok", "", false)]
        );
        assert_eq!(pairs("  "), []);
    }

    #[test]
    fn schemes_and_queries() {
        assert_eq!(scheme_prefix("postgres://h/db"), Some(11));
        assert_eq!(scheme_prefix("host=h password=a://b"), None);
        assert_eq!(scheme_prefix("://h"), None);
        let (base, params) = split_query("postgres://h/db?sslmode=require&a%20b=c+d");
        assert_eq!(base, "postgres://h/db");
        assert_eq!(params, ["sslmode=require", "a%20b=c+d"]);
        assert_eq!(
            decode_query_param(params[1]),
            ("a b".to_owned(), "c+d".to_owned())
        );
    }
}
