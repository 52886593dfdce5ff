//! Passwords kept out of logs, error messages and `Debug` output: one redaction for every URL
//! and connection string vigil is given.
//!
//! [`redact`] hides the password of a URL's user part (`postgres://user:***@host/db`), the
//! values of password-like query parameters (`?password=***`, `&sslpassword=***`,
//! `?token=***`) and of libpq `key=value` strings (`host=h password=***`). It works on the
//! text, not on a parsed URL, so that a string that fails to parse is hidden too: a message
//! saying why a URL was refused is where its password would otherwise show. [`SecretUrl`] is
//! a string whose `Debug` shows it redacted, for configuration and command-line types.

use std::fmt;

use crate::runtime::conninfo;

/// What a hidden value is shown as.
pub const MASK: &str = "***";

/// `text` with its passwords hidden: the password of a URL's user part, and the values of
/// password-like parameters in a URL's query or a libpq `key=value` string. Text that is
/// neither comes back as it is.
pub fn redact(text: &str) -> String {
    match conninfo::scheme_prefix(text) {
        Some(prefix) => redact_url(text, prefix),
        None if text.contains('=') => redact_key_values(text),
        None => text.to_owned(),
    }
}

/// Whether a parameter's value is a secret: passwords, tokens, secrets, signatures and
/// credentials by any common name. Keys naming a file (`password_file`, `passfile`) hold a
/// path, which is left visible because it helps more than it tells.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    if key.ends_with("file") {
        return false;
    }
    const PARTS: [&str; 9] = [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "credential",
        "signature",
        "apikey",
        "api_key",
    ];
    PARTS.iter().any(|part| key.contains(part)) || matches!(key.as_str(), "pass" | "sig" | "auth")
}

/// A URL: the user part's password, then the query.
fn redact_url(text: &str, prefix: usize) -> String {
    let rest = &text[prefix..];
    // By the book the user part ends at the last `@` before the path, but a password with an
    // unescaped `/` (base64 has them) would then end it early: the last `@` before the query
    // is taken instead, which at worst hides part of the path as well.
    let query = rest.find(['?', '#']).unwrap_or(rest.len());
    let at = rest[..query]
        .rfind('@')
        .or_else(|| password_with_query_characters(rest, query));
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..prefix]);
    let tail = match at {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    let (base, params) = conninfo::split_query(tail);
    out.push_str(base);
    for (i, param) in params.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(&redact_query_param(param));
    }
    out
}

/// The `@` that ends a user part whose password holds an unescaped `?` or `#`
/// (`postgres://u:pa?ss@host`): when what follows the first `:` of the authority is not a
/// port (digits, then the path, another host or the end), the last `@` of the whole string
/// closes the password.
fn password_with_query_characters(rest: &str, query: usize) -> Option<usize> {
    let authority = &rest[..query];
    // The colons of an IPv6 address are not the user part's.
    let host_start = match authority.strip_prefix('[') {
        Some(_) => authority.find(']').map_or(0, |end| end + 1),
        None => 0,
    };
    let colon = host_start + authority[host_start..].find(':')?;
    let after = &authority[colon + 1..];
    let digits = after.chars().take_while(char::is_ascii_digit).count();
    if matches!(after[digits..].chars().next(), None | Some('/' | ',')) {
        return None;
    }
    rest.rfind('@')
}

/// One `key=value` of a URL query, its value hidden when the key names a secret.
fn redact_query_param(param: &str) -> String {
    match param.split_once('=') {
        Some((key, _)) if is_secret_key(&conninfo::decode_query_param(key).0) => {
            format!("{key}={MASK}")
        }
        _ => param.to_owned(),
    }
}

/// A libpq `key=value` string, the values of secret keys hidden. A secret key written without
/// `=` (malformed, but it may be what an operator typed) hides the word after it as well.
fn redact_key_values(text: &str) -> String {
    let mut hidden: Vec<std::ops::Range<usize>> = Vec::new();
    let params = conninfo::key_values(text);
    for (i, param) in params.iter().enumerate() {
        if !is_secret_key(&text[param.key.clone()]) {
            continue;
        }
        if param.assigned {
            hidden.push(param.value.clone());
        } else if let Some(next) = params.get(i + 1) {
            hidden.push(next.span.clone());
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for range in hidden {
        out.push_str(&text[from..range.start]);
        out.push_str(MASK);
        from = range.end;
    }
    out.push_str(&text[from..]);
    out
}

/// A URL or connection string that may hold a password: `Debug` shows it [`redact`]ed, and
/// the text itself is reached through `Deref` (or [`SecretUrl::expose`]) where it is used to
/// connect. It has no `Display`, so that `to_string()` cannot print it by accident.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// The text, password included: for connecting, never for showing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The text, shown with its passwords hidden.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

impl std::ops::Deref for SecretUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretUrl {
    fn from(text: String) -> Self {
        SecretUrl(text)
    }
}

impl From<&str> for SecretUrl {
    fn from(text: &str) -> Self {
        SecretUrl(text.to_owned())
    }
}

impl std::str::FromStr for SecretUrl {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(text.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case hides `SECRET` and keeps what an operator needs to tell replicas apart.
    #[test]
    fn passwords_are_hidden_in_every_form() {
        let cases = [
            // URLs with a user part.
            (
                "postgres://user:SECRET@db:5432/app",
                "postgres://user:***@db:5432/app",
            ),
            (
                "postgresql://user:SECRET@db/app?sslmode=require",
                "postgresql://user:***@db/app?sslmode=require",
            ),
            (
                "http://admin:SECRET@couch:5984",
                "http://admin:***@couch:5984",
            ),
            // Characters a password should escape but often does not.
            ("postgres://u:SE/CR+ET=@db/app", "postgres://u:***@db/app"),
            ("postgres://u:SEC?RET@db/app", "postgres://u:***@db/app"),
            (
                "postgres://admin@corp:SECRET@db/app",
                "postgres://admin@corp:***@db/app",
            ),
            // Query parameters, the key in any case and percent-encoded.
            (
                "postgres://db/app?user=u&password=SECRET&sslmode=verify-full",
                "postgres://db/app?user=u&password=***&sslmode=verify-full",
            ),
            (
                "postgres://db/app?sslpassword=SECRET",
                "postgres://db/app?sslpassword=***",
            ),
            (
                "https://s3.example/b/k?X-Amz-Signature=SECRET&X-Amz-Security-Token=SECRET",
                "https://s3.example/b/k?X-Amz-Signature=***&X-Amz-Security-Token=***",
            ),
            ("http://h/?token=SECRET#frag", "http://h/?token=***"),
            (
                "http://h/?client_secret=SECRET",
                "http://h/?client_secret=***",
            ),
            ("http://h/?Pass%77ord=SECRET", "http://h/?Pass%77ord=***"),
            // Strings that fail to parse as URLs.
            ("postgres://u:SECRET@[bad", "postgres://u:***@[bad"),
            ("postgres://u:SECRET@", "postgres://u:***@"),
            (
                "mysql://u:SECRET@h:99999999/x",
                "mysql://u:***@h:99999999/x",
            ),
            // libpq key=value strings.
            (
                "host=db password=SECRET dbname=app",
                "host=db password=*** dbname=app",
            ),
            (
                "host=db password = 'SEC RET' user=u",
                "host=db password = *** user=u",
            ),
            ("password='SECRET", "password=***"),
            ("host=db sslpassword=SECRET", "host=db sslpassword=***"),
            ("host=db password SECRET", "host=db password ***"),
        ];
        for (text, shown) in cases {
            let redacted = redact(text);
            assert_eq!(redacted, shown, "redacting {text}");
            assert!(!redacted.contains("SECRET"), "{redacted}");
        }
    }

    #[test]
    fn text_without_secrets_is_left_alone() {
        for text in [
            "postgres://sync@db:5432/app?sslmode=require&sslrootcert=/etc/ca.pem",
            "postgres://db:5432/app?user=a@b",
            "postgres://[::1]:5432/app?user=a@b",
            "kafka://a:9092,b:9092/t?group=team@corp",
            "sqlite://data/local.db",
            "kafka://b:9093/t?user=vigil&password_file=/run/pw&ca=/etc/ca.pem",
            "host=/tmp passfile=/home/u/.pgpass dbname=app",
            "s3://bucket/prefix",
            "just words",
            "",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn a_secret_url_shows_itself_redacted() {
        let url: SecretUrl = "postgres://u:SECRET@db/app".parse().unwrap_or_default();
        assert_eq!(url.expose(), "postgres://u:SECRET@db/app");
        assert_eq!(&*url, "postgres://u:SECRET@db/app");
        assert_eq!(format!("{url:?}"), "\"postgres://u:***@db/app\"");
        assert_eq!(
            format!("{:?}", Some(&url)),
            "Some(\"postgres://u:***@db/app\")"
        );
    }
}
