//! Kafka endpoints: the brokers of a `kafka://` URL and how to authenticate to them (TLS files,
//! SASL user and mechanism, the password from the environment or a file, never from the URL),
//! turned into the librdkafka configuration that the consumer source (`sources::kafka`) and
//! the producers (`sinks::kafka`) share, with the error explanations both sides give.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// The environment variable a SASL password is read from (unless `password_file` is given).
pub const PASSWORD_ENV: &str = "VIGIL_KAFKA_PASSWORD";

/// How long metadata, offset and commit requests may take before the job gives up.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A Kafka cluster and how to authenticate to it.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaEndpoint {
    /// `bootstrap.servers`: `HOST:PORT[,HOST:PORT…]`.
    pub brokers: String,
    /// `security.protocol`: `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: Option<String>,
    /// A CA certificate file for TLS.
    pub ca: Option<PathBuf>,
    /// A client certificate file for TLS client authentication.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key file.
    pub key: Option<PathBuf>,
    /// The SASL user name.
    pub user: Option<String>,
    /// The SASL password (from the environment or a file, never from the URL).
    password: Option<String>,
    /// The SASL mechanism; `SCRAM-SHA-512` when a user is given.
    pub mechanism: Option<String>,
}

impl std::fmt::Debug for KafkaEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is never shown.
        f.debug_struct("KafkaEndpoint")
            .field("brokers", &self.brokers)
            .field("protocol", &self.protocol)
            .field("user", &self.user)
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for KafkaEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "kafka://{}", self.brokers)
    }
}

/// Query parameters of a `kafka://` URL, taken one by one so that leftovers can be named.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Self {
        Self(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (p.to_owned(), String::new()),
                })
                .collect(),
        )
    }

    pub(crate) fn take(&mut self, key: &str) -> Option<String> {
        let at = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(at).1)
    }

    pub(crate) fn finish(self, url: &str, known: &str) -> anyhow::Result<()> {
        match self.0.first() {
            None => Ok(()),
            Some((key, _)) => anyhow::bail!("{url}: unknown parameter {key:?} (known: {known})"),
        }
    }
}

/// The security parameters every `kafka://` URL takes, as an unknown parameter's error lists them.
pub(crate) const SECURITY_PARAMS: &str = "security, ca, cert, key, user, mechanism, password_file";

/// A `kafka://BROKERS[/PATH][?QUERY]` URL cut into its brokers, its path (topics; empty when
/// none) and its query.
pub(crate) fn split_url(url: &str) -> anyhow::Result<(&str, &str, Query)> {
    // The SASL password comes from the environment or a file, never from the URL: a URL that
    // carries one is refused here, shown redacted, so that no message after this one (they
    // all repeat the URL) can show it.
    let shown = crate::runtime::secrets::redact(url);
    anyhow::ensure!(
        shown == url,
        "{shown}: a kafka:// URL carries no password; give user=NAME and the password in \
         {PASSWORD_ENV} or password_file=FILE"
    );
    let rest = url
        .strip_prefix("kafka://")
        .with_context(|| format!("{url} is not a kafka:// URL"))?;
    let (place, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (brokers, path) = place.split_once('/').unwrap_or((place, ""));
    Ok((brokers, path, Query::parse(query)))
}

impl KafkaEndpoint {
    /// Reads the brokers and the security parameters of a `kafka://` URL: `security=ssl|
    /// sasl_plaintext|sasl_ssl`, `ca=FILE`, `cert=FILE`, `key=FILE`, `user=NAME`,
    /// `mechanism=SCRAM-SHA-512`, `password_file=FILE` (else [`PASSWORD_ENV`]).
    pub(crate) fn from_parts(url: &str, brokers: &str, query: &mut Query) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !brokers.is_empty() && brokers.split(',').all(|b| b.contains(':')),
            "{url}: name the brokers as kafka://HOST:PORT[,HOST:PORT…]"
        );
        let user = query.take("user");
        let password = match query.take("password_file") {
            Some(file) => Some(
                std::fs::read_to_string(&file)
                    .with_context(|| format!("{url}: reading the password file {file}"))?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            None => std::env::var(PASSWORD_ENV).ok(),
        };
        if user.is_some() && password.is_none() {
            anyhow::bail!(
                "{url}: a SASL user needs a password: set {PASSWORD_ENV} or pass password_file=FILE"
            );
        }
        let protocol = query.take("security");
        if let Some(p) = &protocol {
            anyhow::ensure!(
                matches!(
                    p.as_str(),
                    "plaintext" | "ssl" | "sasl_plaintext" | "sasl_ssl"
                ),
                "{url}: security={p} is not one of plaintext, ssl, sasl_plaintext, sasl_ssl"
            );
        }
        let mechanism = query
            .take("mechanism")
            .or_else(|| user.as_ref().map(|_| "SCRAM-SHA-512".to_owned()));
        Ok(Self {
            brokers: brokers.to_owned(),
            protocol: protocol.or_else(|| user.as_ref().map(|_| "sasl_ssl".to_owned())),
            ca: query.take("ca").map(PathBuf::from),
            cert: query.take("cert").map(PathBuf::from),
            key: query.take("key").map(PathBuf::from),
            user,
            password,
            mechanism,
        })
    }

    /// Parses `kafka://HOST:PORT[,…][?security parameters]`, as `--alerts` takes it.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let (brokers, _, mut query) = split_url(url)?;
        let endpoint = Self::from_parts(url, brokers, &mut query)?;
        query.finish(url, SECURITY_PARAMS)?;
        Ok(endpoint)
    }

    /// Parses `kafka://HOST:PORT[,…]/TOPIC[?security parameters]`: a cluster and one topic.
    pub fn parse_with_topic(url: &str) -> anyhow::Result<(Self, String)> {
        let (brokers, topic, mut query) = split_url(url)?;
        anyhow::ensure!(
            !topic.is_empty() && !topic.contains(','),
            "{url} names no topic: use kafka://HOST:PORT/TOPIC"
        );
        let endpoint = Self::from_parts(url, brokers, &mut query)?;
        query.finish(url, SECURITY_PARAMS)?;
        Ok((endpoint, topic.to_owned()))
    }

    /// The librdkafka configuration shared by consumers and producers.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config.set("client.id", "vigil");
        if let Some(protocol) = &self.protocol {
            config.set("security.protocol", protocol);
        }
        let files = [
            ("ssl.ca.location", &self.ca),
            ("ssl.certificate.location", &self.cert),
            ("ssl.key.location", &self.key),
        ];
        for (name, file) in files {
            if let Some(file) = file {
                config.set(name, file.display().to_string());
            }
        }
        if let Some(user) = &self.user {
            config.set("sasl.username", user);
        }
        if let Some(password) = &self.password {
            config.set("sasl.password", password);
        }
        if let Some(mechanism) = &self.mechanism {
            config.set("sasl.mechanism", mechanism);
        }
        // librdkafka's own log lines go through its default logger at warning level and up.
        config.set("log_level", "4");
        config
    }
}

/// Turns a librdkafka error into one that says what to check.
pub(crate) fn explain(error: KafkaError, endpoint: &KafkaEndpoint) -> anyhow::Error {
    let hint = match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
            format!(
                "the broker refused authentication: check user, mechanism and {PASSWORD_ENV} (or password_file)"
            )
        }
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
            "the topic does not exist: create it first".to_owned()
        }
        _ if unreachable(&error) => {
            "the brokers could not be reached: check the address and that Kafka is running"
                .to_owned()
        }
        _ => "check the brokers' address and the security parameters".to_owned(),
    };
    anyhow::Error::new(error).context(format!("Kafka at {endpoint}: {hint}"))
}

/// Whether an error says the brokers did not answer (rather than refused something).
pub(crate) fn unreachable(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::OperationTimedOut
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_password_comes_from_a_file_and_is_never_shown() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n")?;
        let url = format!(
            "kafka://b:9093?user=vigil&password_file={}&ca=/etc/ca.pem",
            file.display()
        );
        let endpoint = KafkaEndpoint::parse(&url)?;
        assert_eq!(endpoint.mechanism.as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(endpoint.protocol.as_deref(), Some("sasl_ssl"));
        let config = endpoint.client_config();
        assert_eq!(config.get("sasl.password"), Some("s3cret"));
        assert_eq!(config.get("ssl.ca.location"), Some("/etc/ca.pem"));
        assert!(!format!("{endpoint:?}").contains("s3cret"));
        assert!(!endpoint.to_string().contains("s3cret"));
        Ok(())
    }
}
