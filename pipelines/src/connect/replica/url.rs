//! Where a replica is (`postgres://…`, `sqlite://PATH`), and which SQL it speaks.

use std::path::PathBuf;

use anyhow::Context;

/// Where a replica is: `postgres://…` / `postgresql://…` (also CockroachDB) or
/// `sqlite://PATH`. `Debug` shows it with its password hidden.
#[derive(Clone, PartialEq, Eq)]
pub enum ReplicaUrl {
    /// A PostgreSQL connection string.
    Postgres(String),
    /// A SQLite database file, created if missing.
    Sqlite(PathBuf),
}

impl ReplicaUrl {
    /// Parses a replica URL.
    pub fn parse(url: &str) -> anyhow::Result<ReplicaUrl> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            crate::connect::pg_tls::check(url).with_context(|| {
                format!(
                    "{} is not a PostgreSQL URL vigil can use",
                    crate::runtime::secrets::redact(url)
                )
            })?;
            return Ok(ReplicaUrl::Postgres(url.to_owned()));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            anyhow::ensure!(!path.is_empty(), "{url} names no file: use sqlite://PATH");
            return Ok(ReplicaUrl::Sqlite(PathBuf::from(path)));
        }
        // The refused text is shown redacted: a mistyped scheme still carries its password.
        anyhow::bail!(
            "{} is not a replica URL: use postgres://USER@HOST:PORT/DB (PostgreSQL or \
             CockroachDB) or sqlite://PATH",
            crate::runtime::secrets::redact(url)
        )
    }

    /// The URL with any password hidden, for logs and messages.
    pub fn redacted(&self) -> String {
        match self {
            ReplicaUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            ReplicaUrl::Postgres(url) => crate::runtime::secrets::redact(url),
        }
    }
}

impl std::fmt::Debug for ReplicaUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaUrl::Postgres(_) => f.debug_tuple("Postgres").field(&self.redacted()).finish(),
            ReplicaUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
        }
    }
}

/// Which SQL a replica speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL or CockroachDB.
    Postgres,
    /// SQLite.
    Sqlite,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::connect::replica::sql::quote;

    #[test]
    fn urls() {
        assert_eq!(
            ReplicaUrl::parse("sqlite://data/local.db").unwrap(),
            ReplicaUrl::Sqlite("data/local.db".into())
        );
        let pg = ReplicaUrl::parse("postgres://sync:secret@db:5432/app").unwrap();
        assert_eq!(pg.redacted(), "postgres://sync:***@db:5432/app");
        assert_eq!(
            format!("{pg:?}"),
            "Postgres(\"postgres://sync:***@db:5432/app\")"
        );
        let err = ReplicaUrl::parse("mysql://x").unwrap_err().to_string();
        assert!(err.contains("postgres://"), "{err}");
        // Refused URLs are shown redacted, whether or not they parse.
        for (url, reason) in [
            ("mysql://u:secret@db/app", "is not a replica URL"),
            (
                "postgres://u:secret@[bad",
                "invalid value for option `host`",
            ),
            (
                "postgres://u:secret@db/app?sslmode=verify",
                "sslmode=verify is not one of",
            ),
        ] {
            let err = format!("{:#}", ReplicaUrl::parse(url).unwrap_err());
            assert!(err.contains("u:***@"), "{err}");
            assert!(err.contains(reason), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
        assert_eq!(quote("public.my \"t\""), "\"public\".\"my \"\"t\"\"\"");
    }
}
