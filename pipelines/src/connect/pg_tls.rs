//! PostgreSQL connections with TLS as libpq's `sslmode` and `sslrootcert` say.
//!
//! tokio-postgres knows `sslmode=disable|prefer|require` and leaves certificates to the TLS
//! connector it is given; it refuses `verify-ca`, `verify-full` and `sslrootcert`. Those are
//! taken out of the connection string here and turned into the connector's settings, so that
//! a URL written for `psql` means the same to vigil:
//!
//! | `sslmode`        | encrypted          | certificate checked                         |
//! |------------------|--------------------|---------------------------------------------|
//! | `disable`        | no                 | no                                          |
//! | `allow`, `prefer`| when the server can| no                                          |
//! | `require`        | yes                | no (with `sslrootcert`: as `verify-ca`)     |
//! | `verify-ca`      | yes                | chains to `sslrootcert` (or the system's CAs)|
//! | `verify-full`    | yes                | as `verify-ca`, and names the host          |
//!
//! With no `sslmode` the connection prefers TLS, as libpq does: a server that offers it
//! (the machine's own included) is spoken to encrypted, one that does not in plain text.
//! `allow` (plain text first) is taken as `prefer`: both connect to the same servers.
//! Without `sslrootcert`, the verifying modes check against the system's trust store (libpq
//! would read `~/.postgresql/root.crt`); `sslrootcert=system` says so explicitly.
//!
//! The TLS itself is OpenSSL through native-tls, as libpq's is, so that a certificate libpq
//! accepts or refuses is accepted or refused here for the same reason.
//!
//! # Timeouts
//! A server that stops answering must not hold a job forever, so every connection gets, unless
//! its string says otherwise: `connect_timeout=10` (which here bounds the whole handshake, not
//! only the TCP connect), TCP keepalives after 30 s idle, every 10 s, 3 tries (`keepalives_idle`,
//! `keepalives_interval`, `keepalives_retries`), and [`STATEMENT_TIMEOUT`] per statement on the
//! server (`options=-c statement_timeout=…` overrides it). Callers also bound each wait for an
//! answer on the client side with [`answer`], since a frozen server's kernel keeps the
//! connection alive and no server-side timeout fires.

use std::time::Duration;

use anyhow::Context;

use crate::runtime::conninfo;

/// How long connecting may take when the connection string does not say (`connect_timeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle time before the first TCP keepalive probe (`keepalives_idle`).
pub const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);

/// Time between keepalive probes (`keepalives_interval`).
pub const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(10);

/// Unanswered probes before the connection is dropped (`keepalives_retries`).
pub const KEEPALIVES_RETRIES: u32 = 3;

/// The server's limit on one statement, set per session.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The client's limit on one wait for the server: the statement timeout and a margin for the
/// network and for the few statements of a batch write.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);

/// A connection's I/O half, to be spawned on the runtime that drives it.
pub type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    postgres_native_tls::TlsStream<tokio_postgres::Socket>,
>;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Plain text.
    Disable,
    /// TLS when the server offers it, certificate unchecked (also `allow`).
    #[default]
    Prefer,
    /// TLS, certificate unchecked.
    Require,
    /// TLS, the certificate chained to a trusted root.
    VerifyCa,
    /// TLS, the certificate chained to a trusted root and naming the host.
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> anyhow::Result<SslMode> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => anyhow::bail!(
                "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, \
                 verify-full"
            ),
        })
    }

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS parameters of a connection string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode`, `prefer` when not given.
    pub mode: SslMode,
    /// `sslrootcert`: a PEM file of trusted roots, or `system`.
    pub root_cert: Option<String>,
}

impl TlsSettings {
    /// How the server's certificate is checked: `require` with a root file given checks the
    /// chain, as libpq does.
    pub fn verification(&self) -> SslMode {
        match (self.mode, &self.root_cert) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (mode, _) => mode,
        }
    }

    /// The native-tls connector for these settings.
    fn connector(&self) -> anyhow::Result<postgres_native_tls::MakeTlsConnector> {
        let mut builder = native_tls::TlsConnector::builder();
        match self.verification() {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => {
                // Encryption against passive listeners only, as libpq gives in these modes.
                builder.danger_accept_invalid_certs(true);
                builder.danger_accept_invalid_hostnames(true);
            }
            SslMode::VerifyCa => {
                builder.danger_accept_invalid_hostnames(true);
                self.add_roots(&mut builder)?;
            }
            SslMode::VerifyFull => self.add_roots(&mut builder)?,
        }
        let connector = builder.build().context("setting up TLS")?;
        Ok(postgres_native_tls::MakeTlsConnector::new(connector))
    }

    /// Trusts only the roots of `sslrootcert` when it names a file.
    fn add_roots(&self, builder: &mut native_tls::TlsConnectorBuilder) -> anyhow::Result<()> {
        let Some(path) = self.root_cert.as_deref().filter(|p| *p != "system") else {
            return Ok(());
        };
        let pem = std::fs::read(path).with_context(|| format!("reading sslrootcert={path}"))?;
        let roots = native_tls::Certificate::stack_from_pem(&pem)
            .with_context(|| format!("sslrootcert={path} is not a PEM certificate file"))?;
        anyhow::ensure!(
            !roots.is_empty(),
            "sslrootcert={path} holds no PEM certificate"
        );
        builder.disable_built_in_roots(true);
        for root in roots {
            builder.add_root_certificate(root);
        }
        Ok(())
    }
}

/// The connection string without `sslmode` and `sslrootcert`, and the settings they gave
/// (the last of each wins, as in libpq). Both forms are read: URLs and `key=value` strings.
pub fn split_tls(text: &str) -> anyhow::Result<(String, TlsSettings)> {
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            mode = Some(value);
            true
        }
        "sslrootcert" => {
            root_cert = Some(value);
            true
        }
        _ => false,
    };
    let rest = if conninfo::scheme_prefix(text).is_some() {
        let (base, params) = conninfo::split_query(text);
        let kept: Vec<&str> = params
            .into_iter()
            .filter(|param| {
                let (key, value) = conninfo::decode_query_param(param);
                !take(&key, value)
            })
            .collect();
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        let mut rest = String::with_capacity(text.len());
        let mut from = 0;
        for param in conninfo::key_values(text) {
            let value = conninfo::unquote(&text[param.value.clone()]);
            if param.assigned && take(&text[param.key.clone()], value) {
                rest.push_str(&text[from..param.span.start]);
                from = param.span.end;
            }
        }
        rest.push_str(&text[from..]);
        rest
    };
    let settings = TlsSettings {
        mode: mode
            .as_deref()
            .map(SslMode::parse)
            .transpose()?
            .unwrap_or_default(),
        root_cert,
    };
    Ok((rest, settings))
}

/// The keys the connection string gives (TLS parameters already taken out).
fn given_keys(text: &str) -> Vec<String> {
    if conninfo::scheme_prefix(text).is_some() {
        conninfo::split_query(text)
            .1
            .into_iter()
            .map(|param| conninfo::decode_query_param(param).0)
            .collect()
    } else {
        conninfo::key_values(text)
            .into_iter()
            .filter(|param| param.assigned)
            .map(|param| text[param.key].to_owned())
            .collect()
    }
}

/// The connection string as tokio-postgres reads it, TLS parameters taken out and checked.
/// Its parse errors name the option at fault, never its value.
fn config(text: &str) -> anyhow::Result<(tokio_postgres::Config, TlsSettings)> {
    let (rest, settings) = split_tls(text)?;
    let mut config: tokio_postgres::Config =
        rest.parse().context("reading the connection string")?;
    // A value the user gave wins over vigil's default, as the module documentation says.
    let given = given_keys(&rest);
    let unset = |key: &str| !given.iter().any(|k| k == key);
    if unset("connect_timeout") {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if unset("keepalives_idle") {
        config.keepalives_idle(KEEPALIVES_IDLE);
    }
    if unset("keepalives_interval") {
        config.keepalives_interval(KEEPALIVES_INTERVAL);
    }
    if unset("keepalives_retries") {
        config.keepalives_retries(KEEPALIVES_RETRIES);
    }
    config.ssl_mode(match settings.mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    Ok((config, settings))
}

/// Checks a connection string without connecting, so that a malformed one is refused when it
/// is given rather than taken for a server that does not answer.
pub fn check(text: &str) -> anyhow::Result<()> {
    config(text).map(|_| ())
}

/// The server refused the TLS the connection string asks for (or offered none): a
/// configuration to fix, not an outage to wait out.
#[derive(Debug, thiserror::Error)]
#[error("{hint}")]
pub struct TlsRefused {
    hint: String,
    #[source]
    source: tokio_postgres::Error,
}

/// Connects as the connection string says, TLS included. Errors never repeat the string:
/// callers name the server with [`crate::runtime::secrets::redact`].
pub async fn connect(text: &str) -> anyhow::Result<(tokio_postgres::Client, Connection)> {
    let (config, settings) = config(text)?;
    let tls = settings.connector()?;
    // tokio-postgres bounds only the TCP connect to each host; a server that accepts and then
    // says nothing (frozen, or half of a dropped connection) would hold the handshake forever.
    let connecting = config.connect(tls);
    let connected = match config.get_connect_timeout() {
        Some(limit) => {
            let hosts = u32::try_from(config.get_hosts().len().max(1)).unwrap_or(u32::MAX);
            tokio::time::timeout(limit.saturating_mul(hosts), connecting)
                .await
                .map_err(|_| {
                    timed_out(format!(
                        "the server did not complete the connection within {limit:?}"
                    ))
                })?
        }
        None => connecting.await,
    };
    connected.map_err(|error| {
        // tokio-postgres keeps its error kinds private; its message is the stable part.
        if error.to_string() != "error performing TLS handshake" {
            return anyhow::Error::new(error);
        }
        let hint = match settings.verification() {
            SslMode::VerifyCa | SslMode::VerifyFull => format!(
                "TLS with sslmode={}: the server's certificate must chain to {}{}",
                settings.mode.name(),
                match settings.root_cert.as_deref() {
                    Some(path) if path != "system" => format!("sslrootcert={path}"),
                    _ => "the system's trusted roots (or give sslrootcert=FILE)".to_owned(),
                },
                if settings.verification() == SslMode::VerifyFull {
                    " and name the host connected to"
                } else {
                    ""
                }
            ),
            mode => format!(
                "TLS with sslmode={}: the server does not speak it; turn on ssl on the \
                 server, or connect with sslmode=prefer or disable",
                mode.name()
            ),
        };
        anyhow::Error::new(TlsRefused {
            hint,
            source: error,
        })
    })
}

/// A timeout as an I/O error, so that it reads as an unreachable server to whoever tells
/// outages from refusals.
fn timed_out(message: String) -> anyhow::Error {
    anyhow::Error::new(std::io::Error::new(std::io::ErrorKind::TimedOut, message))
}

/// The statement that sets [`STATEMENT_TIMEOUT`] for a session, unless the connection string's
/// `options` set one already (which then stands).
pub fn session_setup(text: &str) -> anyhow::Result<Option<String>> {
    let (config, _) = config(text)?;
    if config
        .get_options()
        .is_some_and(|options| options.contains("statement_timeout"))
    {
        return Ok(None);
    }
    Ok(Some(format!(
        "SET statement_timeout = {}",
        STATEMENT_TIMEOUT.as_millis()
    )))
}

/// Waits at most `limit` for the server's answer to `request`. Running out is an I/O error
/// (the server is taken as unreachable), and the connection is best dropped: the request may
/// still be running on the server, inside a transaction left open.
pub async fn answer<T, E>(
    limit: Duration,
    request: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    E: Into<anyhow::Error>,
{
    match tokio::time::timeout(limit, request).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(timed_out(format!(
            "the server did not answer within {limit:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_have_defaults_a_connection_string_overrides() -> anyhow::Result<()> {
        let (parsed, _) = config("postgres://u@db/app")?;
        assert_eq!(parsed.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(parsed.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(parsed.get_keepalives_interval(), Some(KEEPALIVES_INTERVAL));
        assert_eq!(parsed.get_keepalives_retries(), Some(KEEPALIVES_RETRIES));
        assert!(session_setup("postgres://u@db/app")?.is_some_and(|sql| sql.contains("60000")));

        let (parsed, _) =
            config("postgres://u@db/app?connect_timeout=3&keepalives_idle=7&keepalives_retries=9")?;
        assert_eq!(parsed.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(parsed.get_keepalives_idle(), Duration::from_secs(7));
        assert_eq!(parsed.get_keepalives_retries(), Some(9));
        assert_eq!(parsed.get_keepalives_interval(), Some(KEEPALIVES_INTERVAL));

        // libpq's `connect_timeout=0` waits forever; so does vigil then.
        let (parsed, _) = config("host=db connect_timeout=0 keepalives_interval=2")?;
        assert_eq!(parsed.get_connect_timeout(), None);
        assert_eq!(
            parsed.get_keepalives_interval(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            session_setup("host=db options='-c statement_timeout=5s'")?,
            None
        );
        Ok(())
    }

    fn settings(mode: SslMode, root: Option<&str>) -> TlsSettings {
        TlsSettings {
            mode,
            root_cert: root.map(str::to_owned),
        }
    }

    #[test]
    fn tls_parameters_are_taken_out_of_urls() -> anyhow::Result<()> {
        assert_eq!(
            split_tls("postgres://u:p@db/app")?,
            ("postgres://u:p@db/app".to_owned(), TlsSettings::default())
        );
        assert_eq!(
            split_tls(
                "postgres://u@db/app?sslmode=verify-full&connect_timeout=5&sslrootcert=%2Fetc%2Fca.pem"
            )?,
            (
                "postgres://u@db/app?connect_timeout=5".to_owned(),
                settings(SslMode::VerifyFull, Some("/etc/ca.pem"))
            )
        );
        assert_eq!(
            split_tls("postgresql://db/app?sslmode=disable")?,
            (
                "postgresql://db/app".to_owned(),
                settings(SslMode::Disable, None)
            )
        );
        let err = split_tls("postgres://db/app?sslmode=always")
            .unwrap_err()
            .to_string();
        assert!(err.contains("verify-full"), "{err}");
        Ok(())
    }

    #[test]
    fn tls_parameters_are_taken_out_of_key_values() -> anyhow::Result<()> {
        assert_eq!(
            split_tls("host=db sslmode=verify-ca sslrootcert='/etc/my ca.pem' dbname=app")?,
            (
                "host=db   dbname=app".to_owned(),
                settings(SslMode::VerifyCa, Some("/etc/my ca.pem"))
            )
        );
        // The last one wins, as in libpq.
        assert_eq!(
            split_tls("sslmode=disable host=db sslmode=require")?.1,
            settings(SslMode::Require, None)
        );
        Ok(())
    }

    #[test]
    fn require_with_a_root_file_checks_the_chain() {
        assert_eq!(
            settings(SslMode::Require, Some("/etc/ca.pem")).verification(),
            SslMode::VerifyCa
        );
        assert_eq!(
            settings(SslMode::Require, None).verification(),
            SslMode::Require
        );
        assert_eq!(
            settings(SslMode::Prefer, Some("/etc/ca.pem")).verification(),
            SslMode::Prefer
        );
    }

    #[test]
    fn a_missing_root_file_is_an_error_naming_it() {
        let Err(error) = settings(SslMode::VerifyFull, Some("/nonexistent/ca.pem")).connector()
        else {
            panic!("a missing sslrootcert was accepted");
        };
        assert!(
            format!("{error:#}").contains("sslrootcert=/nonexistent/ca.pem"),
            "{error:#}"
        );
    }
}
