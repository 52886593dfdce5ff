//! Kafka: the consumer source and the alert producer, on librdkafka.
//!
//! The source reads `kafka://HOST:PORT[,HOST:PORT…]/TOPIC[,TOPIC…]?group=G`. Its partitions are
//! spread over the timely workers by a fixed rule (the sorted partition list, round robin), so
//! every worker reads its own partitions with its own consumer, resumes each from the group's
//! committed offset, and keeps a watermark per partition. Offsets are committed only once the
//! archive holds every record before them.
//!
//! The alert producer publishes each alert to the topic its guard's reaction names, keyed by
//! source, with the guard in a header, through an idempotent producer with `acks=all`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{error, info, warn};
use vigil_operators::Alert;

use crate::jobs::couchdb::Backoff;
use crate::runtime::spill::Spill;

/// The environment variable a SASL password is read from (unless `password_file` is given).
pub const PASSWORD_ENV: &str = "VIGIL_KAFKA_PASSWORD";

/// An hour of event time, in ms: the archive's partitions, and the steps commits advance by.
const HOUR_MS: i64 = 3_600_000;

/// How long metadata, offset and commit requests may take before the job gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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
struct Query(Vec<(String, String)>);

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

    fn take(&mut self, key: &str) -> Option<String> {
        let at = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(at).1)
    }

    fn finish(self, url: &str, known: &str) -> anyhow::Result<()> {
        match self.0.first() {
            None => Ok(()),
            Some((key, _)) => anyhow::bail!("{url}: unknown parameter {key:?} (known: {known})"),
        }
    }
}

const SECURITY_PARAMS: &str = "security, ca, cert, key, user, mechanism, password_file";

/// A `kafka://BROKERS[/PATH][?QUERY]` URL cut into its brokers, its path (topics; empty when
/// none) and its query.
fn split_url(url: &str) -> anyhow::Result<(&str, &str, Query)> {
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
    fn from_parts(url: &str, brokers: &str, query: &mut Query) -> anyhow::Result<Self> {
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

/// A Kafka input: `kafka://HOST:PORT/TOPIC[,TOPIC…]?group=G[&stop=end][&idle=5s][&commit=2s]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaInput {
    /// The cluster.
    pub endpoint: KafkaEndpoint,
    /// The topics to read.
    pub topics: Vec<String>,
    /// The consumer group offsets are committed under.
    pub group: String,
    /// Stop once the partitions' ends as of the start are reached (a backfill from Kafka);
    /// otherwise follow the topics until asked to stop.
    pub stop_at_end: bool,
    /// A partition that has caught up and has had no message for this long no longer holds
    /// the watermark back.
    pub idle: Duration,
    /// How often offsets are committed (as far as the outputs are durable).
    pub commit_every: Duration,
}

/// The consumer group when the URL names none.
pub const DEFAULT_GROUP: &str = "vigil-guard";

impl KafkaInput {
    /// Parses a `kafka://` input URL.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let (brokers, topics, mut query) = split_url(url)?;
        let topics: Vec<String> = topics
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        anyhow::ensure!(
            !topics.is_empty(),
            "{url} names no topic: use kafka://HOST:PORT/TOPIC?group=GROUP"
        );
        let endpoint = KafkaEndpoint::from_parts(url, brokers, &mut query)?;
        let group = query.take("group").unwrap_or_else(|| DEFAULT_GROUP.into());
        let stop_at_end = match query.take("stop").as_deref() {
            None | Some("never") => false,
            Some("end") => true,
            Some(other) => anyhow::bail!("{url}: stop={other} is not `end` or `never`"),
        };
        let idle = match query.take("idle") {
            None => Duration::from_secs(5),
            Some(text) => humantime::parse_duration(&text)
                .with_context(|| format!("{url}: idle={text} is not a duration like 5s"))?,
        };
        let commit_every = match query.take("commit") {
            None => Duration::from_secs(2),
            Some(text) => humantime::parse_duration(&text)
                .with_context(|| format!("{url}: commit={text} is not a duration like 2s"))?,
        };
        query.finish(
            url,
            &format!("group, stop, idle, commit, {SECURITY_PARAMS}"),
        )?;
        Ok(Self {
            endpoint,
            topics,
            group,
            stop_at_end,
            idle,
            commit_every,
        })
    }

    /// Merges inputs on the same cluster and group into one (several topics).
    pub fn merge(inputs: Vec<KafkaInput>) -> anyhow::Result<KafkaInput> {
        let mut inputs = inputs.into_iter();
        let mut first = inputs.next().context("no Kafka input")?;
        for other in inputs {
            anyhow::ensure!(
                other.endpoint == first.endpoint
                    && other.group == first.group
                    && other.stop_at_end == first.stop_at_end
                    && other.idle == first.idle
                    && other.commit_every == first.commit_every,
                "Kafka inputs of one job must share brokers, security, group, stop, idle and commit; \
                 list several topics as kafka://HOST:PORT/TOPIC1,TOPIC2"
            );
            first.topics.extend(other.topics);
        }
        first.topics.sort();
        first.topics.dedup();
        Ok(first)
    }

    fn consumer(&self) -> anyhow::Result<BaseConsumer<ConsumerLog>> {
        let mut config = self.endpoint.client_config();
        config
            .set("group.id", &self.group)
            // End-of-partition events tell a partition that has caught up (which may go idle)
            // from one whose messages are still on their way.
            .set("enable.partition.eof", "true")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "20")
            // Large fetches: a round trip per megabyte would leave the cores waiting.
            .set("max.partition.fetch.bytes", "16777216")
            .set("fetch.max.bytes", "67108864")
            .set("queued.max.messages.kbytes", "131072");
        config
            .create_with_context(ConsumerLog)
            .with_context(|| format!("creating a Kafka consumer for {}", self.endpoint))
    }

    /// Every partition of the input's topics, sorted; fails naming a topic that is missing.
    pub fn partitions(&self) -> anyhow::Result<Vec<(String, i32)>> {
        let consumer = self.consumer()?;
        let mut all = Vec::new();
        for topic in &self.topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                .map_err(|e| explain(e, &self.endpoint))?;
            let found = metadata.topics().iter().find(|t| t.name() == topic);
            let missing = found.is_none_or(|t| t.error().is_some() || t.partitions().is_empty());
            anyhow::ensure!(
                !missing,
                "topic {topic} does not exist on {}: create it first (e.g. `kafka-topics.sh \
                 --create --topic {topic} --partitions 4`)",
                self.endpoint
            );
            if let Some(t) = found {
                all.extend(t.partitions().iter().map(|p| (topic.clone(), p.id())));
            }
        }
        all.sort();
        Ok(all)
    }

    /// Opens the reader of worker `index` of `peers`: a consumer assigned every `peers`-th
    /// partition of `all` from `index` on, each at the group's committed offset (or the start).
    pub fn open_reader(
        &self,
        all: &[(String, i32)],
        index: usize,
        peers: usize,
    ) -> anyhow::Result<KafkaReader> {
        let consumer = self.consumer()?;
        let mine: Vec<&(String, i32)> = all.iter().skip(index).step_by(peers.max(1)).collect();
        let mut asked = TopicPartitionList::new();
        for (topic, partition) in &mine {
            asked.add_partition(topic, *partition);
        }
        let committed = if mine.is_empty() {
            TopicPartitionList::new()
        } else {
            consumer
                .committed_offsets(asked, REQUEST_TIMEOUT)
                .map_err(|e| explain(e, &self.endpoint))?
        };
        let mut assignment = TopicPartitionList::new();
        let mut partitions = Vec::new();
        let mut resumed = false;
        for (topic, partition) in mine {
            let (low, high) = consumer
                .fetch_watermarks(topic, *partition, REQUEST_TIMEOUT)
                .map_err(|e| explain(e, &self.endpoint))?;
            let next = match committed
                .find_partition(topic, *partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => {
                    resumed = true;
                    o.max(low)
                }
                _ => low,
            };
            assignment
                .add_partition_offset(topic, *partition, Offset::Offset(next))
                .context("assigning a partition")?;
            partitions.push(PartitionState {
                topic: topic.clone(),
                partition: *partition,
                next,
                end: self.stop_at_end.then_some(high),
                at_end: false,
                max_ts: None,
                last_message: Instant::now(),
                hours: VecDeque::new(),
                sent: VecDeque::new(),
                received: next,
                recorded: next,
                committed: next,
            });
        }
        consumer
            .assign(&assignment)
            .map_err(|e| explain(e, &self.endpoint))?;
        info!(
            message = "Kafka partitions assigned.",
            worker = index,
            partitions = %partitions.iter().map(|p| format!("{}/{}@{}", p.topic, p.partition, p.next)).collect::<Vec<_>>().join(" ")
        );
        Ok(KafkaReader {
            consumer,
            partitions,
            idle: self.idle,
            stop_at_end: self.stop_at_end,
            commit_every: self.commit_every,
            resumed,
        })
    }

    /// Commits `positions` (topic, partition, next offset to read) for the group.
    pub fn commit(&self, positions: &[(String, i32, i64)]) -> anyhow::Result<()> {
        if positions.is_empty() {
            return Ok(());
        }
        let consumer = self.consumer()?;
        let mut list = TopicPartitionList::new();
        for (topic, partition, next) in positions {
            list.add_partition_offset(topic, *partition, Offset::Offset(*next))
                .context("listing offsets to commit")?;
        }
        consumer
            .commit(&list, CommitMode::Sync)
            .map_err(|e| explain(e, &self.endpoint))
            .context("committing the consumed offsets")?;
        let offsets = positions
            .iter()
            .map(|(t, p, o)| format!("{t}/{p}@{o}"))
            .collect::<Vec<_>>()
            .join(" ");
        info!(message = "Kafka offsets committed.", group = %self.group, %offsets);
        Ok(())
    }
}

/// Turns a librdkafka error into one that says what to check.
fn explain(error: KafkaError, endpoint: &KafkaEndpoint) -> anyhow::Error {
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
fn unreachable(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::OperationTimedOut
        )
    )
}

/// One assigned partition's reading state.
#[derive(Debug)]
struct PartitionState {
    topic: String,
    partition: i32,
    /// The next offset to read.
    next: i64,
    /// With `stop=end`: the partition's end when the job started, as the broker reports it.
    end: Option<i64>,
    /// The consumer has reached the end of the partition and nothing came since.
    at_end: bool,
    /// The newest event time read from it.
    max_ts: Option<i64>,
    last_message: Instant,
    /// Where the partition's event time entered each hour: (offset, start of the hour) of the
    /// record that first took its newest event time into that hour. Records before such an
    /// offset lie in earlier hours (or are late), so once the archive has closed and stored
    /// those hours, the offset may be committed — at the record, not a whole batch, so that a
    /// replay never starts inside an hour whose files are already written.
    hours: VecDeque<(i64, i64)>,
    /// Batches not yet known to be received by every output: (offset after the batch, input
    /// time its data was sent at).
    sent: VecDeque<(i64, u64)>,
    /// The furthest batch end whose data the outputs have certainly received.
    received: i64,
    /// `next` at the last batch recorded in `sent`.
    recorded: i64,
    /// The offset last committed.
    committed: i64,
}

impl PartitionState {
    /// Caught up with the partition's end, and nothing new for `idle`.
    fn is_idle(&self, now: Instant, idle: Duration) -> bool {
        self.at_end && now.duration_since(self.last_message) >= idle
    }

    /// Read to the end, with `stop=end`: past the end the broker reported at the start, and
    /// told by the consumer that nothing more is there. Both are needed: the reported end alone
    /// can fall short of the last record on some brokers, and the end-of-partition event alone
    /// does not say which topic it is about when several topics share a partition number.
    fn done(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end) && self.at_end
    }
}

/// A Kafka message handed to the job.
pub struct KafkaMessage<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its value; `None` for a tombstone.
    pub payload: Option<&'a [u8]>,
}

impl KafkaMessage<'_> {
    /// Where the message came from, for dead letters: `kafka:TOPIC/PARTITION@OFFSET`.
    pub fn origin(&self) -> String {
        format!("kafka:{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// Routes librdkafka's client errors to the job's log, except the end-of-partition events a
/// bounded read asks for, which are not errors.
pub struct ConsumerLog;

impl ClientContext for ConsumerLog {
    fn error(&self, error: KafkaError, reason: &str) {
        let end_of_partition = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF);
        if !end_of_partition {
            warn!(message = "Kafka client error.", %error, reason);
        }
    }
}

impl ConsumerContext for ConsumerLog {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(error) = result {
            warn!(message = "A Kafka offset commit failed; the next one covers it.", %error);
        }
    }
}

/// Where a worker's input time may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watermark {
    /// Held by its live partitions at this time.
    Live(u64),
    /// No partition is live: the newest of its own, if any; it may follow the other workers.
    Idle(Option<u64>),
}

/// One worker's consumer and its partitions.
pub struct KafkaReader {
    consumer: BaseConsumer<ConsumerLog>,
    partitions: Vec<PartitionState>,
    idle: Duration,
    stop_at_end: bool,
    /// How often to commit.
    pub commit_every: Duration,
    /// Some partition started at an offset the group had committed.
    resumed: bool,
}

impl KafkaReader {
    /// Reads up to `max` messages, waiting at most `wait` for the first. `each` gets every
    /// message with the newest event time of its partition so far, to update.
    pub fn poll_batch(
        &mut self,
        max: usize,
        wait: Duration,
        mut each: impl FnMut(&KafkaMessage<'_>, &mut i64),
    ) -> usize {
        let mut read = 0;
        let mut timeout = wait;
        while read < max {
            let Some(result) = self.consumer.poll(timeout) else {
                break;
            };
            timeout = Duration::ZERO;
            let message = match result {
                Ok(message) => message,
                Err(KafkaError::PartitionEOF(partition)) => {
                    for state in &mut self.partitions {
                        if state.partition == partition {
                            state.at_end = true;
                        }
                    }
                    continue;
                }
                Err(error) => {
                    warn!(message = "Kafka consumer error; retrying.", %error);
                    continue;
                }
            };
            // A worker holds a handful of partitions: a scan finds one without hashing or
            // allocating per message.
            let (topic, partition) = (message.topic(), message.partition());
            let Some(at) = self
                .partitions
                .iter()
                .position(|p| p.partition == partition && p.topic == topic)
            else {
                continue;
            };
            let state = &mut self.partitions[at];
            state.at_end = false;
            if message.offset() > state.next {
                // Compaction and transaction markers leave gaps; so would a broker that skips.
                tracing::debug!(
                    message = "Kafka offsets skipped.",
                    topic,
                    partition,
                    expected = state.next,
                    got = message.offset()
                );
            }
            let mut max_ts = state.max_ts.unwrap_or(i64::MIN);
            each(
                &KafkaMessage {
                    topic: message.topic(),
                    partition: message.partition(),
                    offset: message.offset(),
                    payload: message.payload(),
                },
                &mut max_ts,
            );
            if max_ts != i64::MIN {
                let hour = max_ts.div_euclid(HOUR_MS);
                if state
                    .max_ts
                    .is_none_or(|before| before.div_euclid(HOUR_MS) < hour)
                {
                    state.hours.push_back((message.offset(), hour * HOUR_MS));
                }
                state.max_ts = Some(max_ts);
            }
            state.next = message.offset() + 1;
            state.last_message = Instant::now();
            read += 1;
        }
        read
    }

    /// Whether every partition has reached its end (only with `stop=end`; a worker without
    /// partitions is finished at once then, and otherwise follows until stopped).
    pub fn finished(&self) -> bool {
        if self.partitions.is_empty() {
            return self.stop_at_end;
        }
        self.partitions.iter().all(PartitionState::done)
    }

    /// The worker's watermark: the minimum over its live partitions of their newest event time
    /// less `lateness`. A partition that has reached its end (`stop=end`), or has caught up and
    /// been idle for the idle timeout, does not hold it back; when none is live, the worker is
    /// idle and may follow the other workers ([`Watermark::Idle`] with the newest of its own).
    pub fn watermark(&self, lateness: u64) -> Watermark {
        let now = Instant::now();
        let mark =
            |p: &PartitionState| p.max_ts.map(|t| (t.max(0) as u64).saturating_sub(lateness));
        // A live partition that has given nothing yet holds the watermark at the start.
        let live = self
            .partitions
            .iter()
            .filter(|p| !p.done() && !p.is_idle(now, self.idle))
            .map(|p| mark(p).unwrap_or(0))
            .min();
        match live {
            Some(watermark) => Watermark::Live(watermark),
            None => Watermark::Idle(self.partitions.iter().filter_map(mark).max()),
        }
    }

    /// Notes where every partition got to after a batch whose data was sent into the dataflow
    /// at input time `sent_at`.
    pub fn record_batch(&mut self, sent_at: u64) {
        for p in &mut self.partitions {
            if p.next > p.recorded {
                p.sent.push_back((p.next, sent_at));
                p.recorded = p.next;
            }
        }
    }

    /// Commits, for every partition, the furthest offset before which everything read is in
    /// the outputs durably, given that they are durable for event time before
    /// `durable_before`: the data was sent at an input time before it (so every output has
    /// received it, and flushed what it closed), and the records lie in hours before it.
    pub fn commit_durable(&mut self, durable_before: i64) -> anyhow::Result<usize> {
        let mut list = TopicPartitionList::new();
        for p in &mut self.partitions {
            while let Some(&(end, sent_at)) = p.sent.front() {
                if sent_at as i64 >= durable_before {
                    break;
                }
                p.received = p.received.max(end);
                p.sent.pop_front();
            }
            while p
                .hours
                .front()
                .is_some_and(|(_, hour)| *hour < durable_before)
            {
                p.hours.pop_front();
            }
            let in_closed_hours = p.hours.front().map_or(p.next, |(offset, _)| *offset);
            let upto = p.received.min(in_closed_hours);
            if upto > p.committed {
                list.add_partition_offset(&p.topic, p.partition, Offset::Offset(upto))
                    .context("listing offsets to commit")?;
                p.committed = upto;
            }
        }
        let count = list.count();
        if count > 0 {
            // Asynchronous: a commit round trip must not stall reading (the result is logged
            // by the consumer's context; the final commit at the end waits for its answer).
            self.consumer
                .commit(&list, CommitMode::Async)
                .context("committing Kafka offsets")?;
        }
        Ok(count)
    }

    /// Positions to commit: (topic, partition, next offset) of every partition read from.
    pub fn positions(&self) -> Vec<(String, i32, i64)> {
        self.partitions
            .iter()
            .map(|p| (p.topic.clone(), p.partition, p.next))
            .collect()
    }

    /// Whether some partition resumed from an offset the group had committed (rather than
    /// starting at the beginning of the log).
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// The newest event time read from any partition.
    pub fn newest(&self) -> Option<i64> {
        self.partitions.iter().filter_map(|p| p.max_ts).max()
    }
}

/// Counts deliveries the broker refused or that timed out, and which tracked messages (those
/// sent with a spill sequence number) were delivered or failed.
#[derive(Clone, Default)]
struct DeliveryReport {
    failed: Arc<AtomicU64>,
    delivered: Arc<AtomicU64>,
    acks: Arc<std::sync::Mutex<Acks>>,
}

/// Delivered sequence numbers: the contiguous prefix and those beyond it; and the tracked
/// messages that failed, to dead-letter or to send again.
struct Acks {
    upto: u64,
    beyond: std::collections::BTreeSet<u64>,
    /// Refused for good: (sequence number, reason, message), for the dead-letter file.
    dead: Vec<(u64, String, Vec<u8>)>,
    /// Failed for now: (sequence number, message), sent again at `retry_at`.
    retry: Vec<(u64, Vec<u8>)>,
    retry_at: Option<Instant>,
    backoff: Backoff,
}

impl Default for Acks {
    fn default() -> Self {
        Self {
            upto: 0,
            beyond: std::collections::BTreeSet::new(),
            dead: Vec::new(),
            retry: Vec::new(),
            retry_at: None,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
        }
    }
}

impl Acks {
    fn delivered(&mut self, seq: u64) {
        if seq <= self.upto {
            return;
        }
        self.beyond.insert(seq);
        while self.beyond.remove(&(self.upto + 1)) {
            self.upto += 1;
        }
    }

    /// A tracked message failed: a permanent error sends it to the dead-letter file, any
    /// other to the queue that sends it again after a backoff.
    fn failed(&mut self, seq: u64, error: &KafkaError, message: &[u8]) {
        if permanent(error) {
            self.dead.push((
                seq,
                format!("Kafka refuses it for good: {error}"),
                message.to_vec(),
            ));
        } else {
            self.retry.push((seq, message.to_vec()));
            if self.retry_at.is_none() {
                self.retry_at = Some(Instant::now() + self.backoff.next_delay());
            }
        }
    }

    /// The messages whose retry is due.
    fn due(&mut self, now: Instant) -> Vec<(u64, Vec<u8>)> {
        if self.retry_at.is_none_or(|at| at > now) {
            return Vec::new();
        }
        self.retry_at = None;
        std::mem::take(&mut self.retry)
    }
}

/// Whether a delivery error means the message can never be delivered as it is: too large, or
/// refused as malformed. Anything else (a broker away, a leader moving) may pass.
fn permanent(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::BadMessage
        )
    )
}

impl ClientContext for DeliveryReport {}

impl ProducerContext for DeliveryReport {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                if seq > 0
                    && let Ok(mut acks) = self.acks.lock()
                {
                    acks.delivered(seq as u64);
                    if acks.retry.is_empty() {
                        acks.backoff.reset();
                    }
                }
            }
            Err((error, message)) => {
                let failed = self.failed.fetch_add(1, Ordering::Relaxed);
                if failed < 10 {
                    error!(message = "A message could not be delivered to Kafka.", topic = message.topic(), %error);
                }
                if seq > 0
                    && let Ok(mut acks) = self.acks.lock()
                {
                    acks.failed(seq as u64, error, message.payload().unwrap_or_default());
                }
            }
        }
    }
}

/// An idempotent producer (`acks=all`) that counts what was delivered and what failed.
pub struct TopicProducer {
    producer: ThreadedProducer<DeliveryReport>,
    report: DeliveryReport,
    endpoint: KafkaEndpoint,
    /// How long a message may take to be delivered before it fails; zero for no limit.
    delivery_timeout: Duration,
}

/// How long a message of [`TopicProducer::connect`] may take to be delivered before it fails.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

impl TopicProducer {
    /// Connects and checks that every topic in `topics` exists, so that a missing topic is
    /// found at start-up rather than at the first message. `what` names the messages in errors.
    pub fn connect(
        endpoint: &KafkaEndpoint,
        topics: &[String],
        what: &str,
    ) -> anyhow::Result<Self> {
        Self::connect_with_timeout(endpoint, topics, what, DELIVERY_TIMEOUT)
    }

    /// As [`TopicProducer::connect`], with messages failing after `delivery_timeout` (not
    /// zero) instead of [`DELIVERY_TIMEOUT`].
    pub fn connect_with_timeout(
        endpoint: &KafkaEndpoint,
        topics: &[String],
        what: &str,
        delivery_timeout: Duration,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !delivery_timeout.is_zero(),
            "a delivery timeout of zero would wait for the broker forever"
        );
        let producer = Self::create(endpoint, what, delivery_timeout)?;
        for topic in topics {
            producer.check_topic(topic, what)?;
        }
        Ok(producer)
    }

    /// A producer whose messages fail after `delivery_timeout`, or never with zero.
    fn create(
        endpoint: &KafkaEndpoint,
        what: &str,
        delivery_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let report = DeliveryReport::default();
        let mut config = endpoint.client_config();
        let timeout_ms = delivery_timeout.as_millis().to_string();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", &timeout_ms);
        // A message already sent to a broker that stopped answering fails only when its
        // request times out (30 s and more by default): that must not outlast the delivery
        // timeout.
        if !delivery_timeout.is_zero() && delivery_timeout < Duration::from_secs(30) {
            config
                .set("request.timeout.ms", &timeout_ms)
                .set("socket.timeout.ms", &timeout_ms);
        }
        let producer: ThreadedProducer<DeliveryReport> = config
            .create_with_context(report.clone())
            .with_context(|| format!("creating the Kafka producer for {what} at {endpoint}"))?;
        Ok(Self {
            producer,
            report,
            endpoint: endpoint.clone(),
            delivery_timeout,
        })
    }

    fn check_topic(&self, topic: &str, what: &str) -> anyhow::Result<()> {
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|e| explain(e, &self.endpoint))?;
        let ok = metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        anyhow::ensure!(
            ok,
            "the {what} topic {topic} does not exist on {}: create it first \
             (e.g. `kafka-topics.sh --create --topic {topic}`)",
            self.endpoint
        );
        Ok(())
    }

    /// Queues one message, with text headers. Waits while the producer's queue is full.
    pub fn send(&self, topic: &str, key: &str, payload: &str, headers: &[(&str, &str)]) {
        self.send_tracked(topic, key, payload, headers, 0);
    }

    /// As [`TopicProducer::send`], tracking delivery of sequence number `seq` (when above 0).
    fn send_tracked(
        &self,
        topic: &str,
        key: &str,
        payload: &str,
        headers: &[(&str, &str)],
        seq: usize,
    ) {
        let headers = headers
            .iter()
            .fold(OwnedHeaders::new(), |all, (key, value)| {
                all.insert(Header {
                    key,
                    value: Some(*value),
                })
            });
        let mut record = BaseRecord::with_opaque_to(topic, seq)
            .key(key)
            .payload(payload)
            .headers(headers);
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, _)) => {
                    self.report.failed.fetch_add(1, Ordering::Relaxed);
                    error!(message = "A message could not be queued for Kafka.", topic, %error);
                    if seq > 0
                        && let Ok(mut acks) = self.report.acks.lock()
                    {
                        acks.failed(seq as u64, &error, payload.as_bytes());
                    }
                    return;
                }
            }
        }
    }

    /// Replaces the producer with a new one, under a new producer id, dropping what the old one
    /// still holds. After a failed delivery an idempotent producer's sequence numbers may be out
    /// of step with the broker's, which some brokers answer by fencing it for good; a caller
    /// that sends the batch again wants a producer the broker takes.
    pub fn renew(&mut self, what: &str) -> anyhow::Result<()> {
        *self = Self::create(&self.endpoint, what, self.delivery_timeout)?;
        Ok(())
    }

    /// Waits until every queued message is delivered (or has failed); fails if any failed
    /// since the last flush, so that after an outage the messages sent again can succeed.
    /// Returns how many were delivered in all.
    pub fn flush(&self, what: &str) -> anyhow::Result<u64> {
        // Every message is delivered or has failed by its delivery timeout (and the request
        // that carries it by then): waiting that long, and a margin, means nothing queued
        // now can still arrive after a caller sent it again.
        let wait = match self.delivery_timeout.is_zero() {
            true => DELIVERY_TIMEOUT,
            false => self.delivery_timeout + Duration::from_secs(30),
        };
        self.producer
            .flush(wait)
            .map_err(|e| explain(e, &self.endpoint))
            .with_context(|| format!("delivering the {what} to Kafka"))?;
        let failed = self.report.failed.swap(0, Ordering::Relaxed);
        anyhow::ensure!(
            failed == 0,
            "{failed} {what} could not be delivered to {}",
            self.endpoint
        );
        Ok(self.report.delivered.load(Ordering::Relaxed))
    }
}

/// Undelivered alert bytes the spill may hold before the job waits for the broker.
pub const SPILL_MAX_BYTES: u64 = 256 << 20;

/// Publishes alerts to the topics their reactions name, through the local spill: every alert
/// is in the spill (synced) before the offsets of its readings may be committed, and is sent
/// again from there after a restart until the broker has acknowledged it.
pub struct KafkaAlerts {
    producer: TopicProducer,
    spill: std::sync::Mutex<Spill>,
    spill_dir: std::path::PathBuf,
    /// Event time before which every alert is in the spill, synced.
    spilled_before: AtomicI64,
}

impl KafkaAlerts {
    /// Connects an idempotent producer (`acks=all`) that retries until the broker takes each
    /// alert, opens the spill in `spill_dir` (sealed with `key` when given) and sends again
    /// what a previous run left undelivered. Checks that every alert topic exists; a broker
    /// that does not answer at start-up is only warned about, since the spill holds the alerts
    /// until it does.
    pub fn connect(
        endpoint: &KafkaEndpoint,
        topics: &[String],
        spill_dir: &std::path::Path,
        key: Option<crate::runtime::crypto::PayloadKey>,
    ) -> anyhow::Result<Self> {
        // No delivery timeout: librdkafka retries until the broker is back.
        let producer = TopicProducer::create(endpoint, "alert", Duration::ZERO)?;
        for topic in topics {
            if let Err(error) = producer.check_topic(topic, "alert") {
                let away = error
                    .chain()
                    .find_map(|e| e.downcast_ref::<KafkaError>())
                    .is_some_and(unreachable);
                if !away {
                    return Err(error);
                }
                warn!(message = "The alert broker does not answer; alerts wait in the spill.", %endpoint, error = %format!("{error:#}"));
                break;
            }
        }
        let (mut spill, undelivered) = Spill::open(spill_dir, key, SPILL_MAX_BYTES)?;
        if let Ok(mut acks) = producer.report.acks.lock() {
            acks.upto = spill.drained_upto();
            // Messages lost to damage or dead-lettered while opening count as delivered.
            for seq in spill.settled() {
                acks.delivered(seq);
            }
        }
        if !undelivered.is_empty() {
            info!(message = "Sending alerts a previous run left in the spill.", count = undelivered.len(), spill = %spill_dir.display());
        }
        for (seq, bytes) in &undelivered {
            if let Err(reason) = send_alert(&producer, *seq, bytes) {
                dead_letter(&producer.report, &mut spill, *seq, &reason, bytes);
            }
        }
        Ok(Self {
            producer,
            spill: std::sync::Mutex::new(spill),
            spill_dir: spill_dir.to_path_buf(),
            spilled_before: AtomicI64::new(i64::MIN),
        })
    }

    /// Settles what the broker answered: dead-letters what it refused for good, sends again
    /// what is due for a retry, and folds the delivered prefix into the spill.
    fn drain(&self, spill: &mut Spill) {
        settle_deliveries(&self.producer.report, spill, |seq, bytes| {
            send_alert(&self.producer, seq, bytes)
        });
    }

    /// Spills one alert (its JSON in `json`) and queues it: to its reaction's topic, keyed by
    /// source, with the guard and the alert id in headers. Waits while the spill is full.
    pub fn send(&self, alert: &Alert, json: &str) {
        let Ok(mut spill) = self.spill.lock() else {
            return;
        };
        let mut warned = false;
        while spill.full() {
            self.drain(&mut spill);
            if spill.full() {
                if !warned {
                    warn!(message = "The alert spill is full; waiting for the broker.", spill = %self.spill_dir.display(), pending = spill.pending());
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let seq = match spill.append(json.as_bytes()) {
            Ok(seq) => seq,
            Err(error) => {
                error!(message = "An alert could not be spilled; sending it unspilled.", error = %format!("{error:#}"));
                0
            }
        };
        let headers = [
            ("guard", alert.guard.as_str()),
            ("alert_id", alert.alert_id.as_str()),
        ];
        self.producer.send_tracked(
            alert.reaction.as_str(),
            alert.source.as_str(),
            json,
            &headers,
            seq as usize,
        );
    }

    /// Notes that every alert before event time `before_ms` has been sent: syncs the spill.
    pub fn mark_published(&self, before_ms: i64) {
        let Ok(mut spill) = self.spill.lock() else {
            return;
        };
        match spill.sync() {
            Ok(()) => {
                self.spilled_before.fetch_max(before_ms, Ordering::SeqCst);
            }
            Err(error) => {
                error!(message = "The alert spill could not be synced.", error = %format!("{error:#}"))
            }
        }
        self.drain(&mut spill);
    }

    /// The event time before which every alert is durable: delivered, or synced in the spill
    /// that sends it again after a restart.
    pub fn delivered_before(&self) -> Option<i64> {
        Some(self.spilled_before.load(Ordering::SeqCst))
    }

    /// At the end of a run: waits a while for the broker to take what is queued; what it has
    /// not taken by then stays in the spill for the next run. Returns how many were delivered.
    pub fn flush(&self) -> anyhow::Result<u64> {
        let _ = self.producer.producer.flush(Duration::from_secs(10));
        let Ok(mut spill) = self.spill.lock() else {
            anyhow::bail!("the alert spill is unusable");
        };
        self.drain(&mut spill);
        spill.sync()?;
        spill.flush_mark()?;
        let pending = spill.pending();
        if pending > 0 {
            warn!(message = "Alerts wait in the spill; they are sent when the job next starts.", pending, spill = %self.spill_dir.display());
        }
        Ok(self.producer.report.delivered.load(Ordering::Relaxed))
    }
}

/// Queues spilled alert `seq` (its JSON in `bytes`) to its reaction's topic, keyed by source,
/// with the guard and the alert id in headers; fails when it is not an alert.
fn send_alert(producer: &TopicProducer, seq: u64, bytes: &[u8]) -> Result<(), String> {
    let json =
        std::str::from_utf8(bytes).map_err(|e| format!("the spilled alert is not text: {e}"))?;
    let alert = serde_json::from_str::<Alert>(json)
        .map_err(|e| format!("the spilled alert is unreadable: {e}"))?;
    let headers = [
        ("guard", alert.guard.as_str()),
        ("alert_id", alert.alert_id.as_str()),
    ];
    producer.send_tracked(
        alert.reaction.as_str(),
        alert.source.as_str(),
        json,
        &headers,
        seq as usize,
    );
    Ok(())
}

/// Puts message `seq` in the spill's dead-letter file and counts it as delivered; if the file
/// cannot be written, it waits for the next try.
fn dead_letter(report: &DeliveryReport, spill: &mut Spill, seq: u64, reason: &str, bytes: &[u8]) {
    let Ok(mut acks) = report.acks.lock() else {
        return;
    };
    match spill.dead_letter(seq, reason, bytes) {
        Ok(()) => acks.delivered(seq),
        Err(error) => {
            error!(message = "A message that cannot be delivered could not be dead-lettered; trying again later.", seq, error = %format!("{error:#}"));
            acks.dead.push((seq, reason.to_owned(), bytes.to_vec()));
        }
    }
}

/// Settles what the broker answered for a spill's messages: dead-letters those refused for
/// good, sends those due for a retry again through `resend` (which fails for a message that
/// cannot be sent at all), and moves the spill's drained mark over the delivered prefix.
fn settle_deliveries(
    report: &DeliveryReport,
    spill: &mut Spill,
    mut resend: impl FnMut(u64, &[u8]) -> Result<(), String>,
) {
    let (dead, due) = match report.acks.lock() {
        Ok(mut acks) => (std::mem::take(&mut acks.dead), acks.due(Instant::now())),
        Err(_) => return,
    };
    for (seq, reason, bytes) in dead {
        dead_letter(report, spill, seq, &reason, &bytes);
    }
    if !due.is_empty() {
        warn!(
            message = "Sending alerts again that the broker did not take.",
            count = due.len()
        );
    }
    for (seq, bytes) in due {
        if let Err(reason) = resend(seq, &bytes) {
            dead_letter(report, spill, seq, &reason, &bytes);
        }
    }
    let upto = report.acks.lock().map(|a| a.upto).unwrap_or(0);
    if let Err(error) = spill.drained(upto) {
        warn!(message = "The spill's drained mark could not be written.", error = %format!("{error:#}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_urls() -> anyhow::Result<()> {
        let input =
            KafkaInput::parse("kafka://127.0.0.1:9092/telemetry,more?group=g1&stop=end&idle=2s")?;
        assert_eq!(input.endpoint.brokers, "127.0.0.1:9092");
        assert_eq!(input.topics, ["telemetry", "more"]);
        assert_eq!(input.group, "g1");
        assert!(input.stop_at_end);
        assert_eq!(input.idle, Duration::from_secs(2));

        let input = KafkaInput::parse("kafka://a:1,b:2/t")?;
        assert_eq!(input.group, DEFAULT_GROUP);
        assert!(!input.stop_at_end);
        assert_eq!(input.endpoint.brokers, "a:1,b:2");

        let error = KafkaInput::parse("kafka://a:1/t?grup=x")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown parameter \"grup\""), "{error}");
        let error = KafkaInput::parse("kafka://a:1").unwrap_err().to_string();
        assert!(error.contains("names no topic"), "{error}");
        let error = KafkaInput::parse("kafka://a:1/t?stop=later")
            .unwrap_err()
            .to_string();
        assert!(error.contains("stop=later"), "{error}");
        Ok(())
    }

    #[test]
    fn refused_alerts_are_dead_lettered_and_failed_ones_sent_again() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (mut spill, _) = Spill::open(dir.path(), None, 1 << 30)?;
        for i in 1..=5 {
            spill.append(format!("alert {i}").as_bytes())?;
        }
        let report = DeliveryReport::default();
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        let not_leader = KafkaError::MessageProduction(RDKafkaErrorCode::NotLeaderForPartition);
        {
            let mut acks = report.acks.lock().map_err(|e| anyhow::anyhow!("{e}"))?;
            acks.delivered(1);
            acks.failed(2, &too_large, b"alert 2");
            acks.delivered(3);
            acks.failed(4, &not_leader, b"alert 4");
            acks.delivered(5);
        }
        let mut resent = Vec::new();
        settle_deliveries(&report, &mut spill, |seq, _| {
            resent.push(seq);
            Ok(())
        });
        // 2 is refused for good: dead-lettered, and the prefix moves past it; 4 waits for
        // its retry, which is not due yet.
        assert_eq!(spill.drained_upto(), 3);
        assert!(resent.is_empty());
        let letters = std::fs::read_to_string(dir.path().join(crate::runtime::spill::DEAD_LETTERS))?;
        let letter: serde_json::Value = serde_json::from_str(letters.trim())?;
        assert_eq!(letter["seq"], 2);
        assert_eq!(letter["message"], "alert 2");
        assert!(
            letter["reason"]
                .as_str()
                .is_some_and(|r| r.contains("too large")),
            "{letter}"
        );

        // Once due, 4 is sent again; when the broker takes it, everything is drained.
        report
            .acks
            .lock()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .retry_at = Some(Instant::now());
        settle_deliveries(&report, &mut spill, |seq, _| {
            resent.push(seq);
            Ok(())
        });
        assert_eq!(resent, [4]);
        report
            .acks
            .lock()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .delivered(4);
        settle_deliveries(&report, &mut spill, |_, _| Ok(()));
        assert_eq!(spill.drained_upto(), 5);
        assert_eq!(spill.pending(), 0);
        Ok(())
    }

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

    #[test]
    fn a_password_in_a_kafka_url_is_refused_without_being_shown() {
        for url in [
            "kafka://vigil:TOPSECRET@b:9093/t",
            "kafka://b:9093/t?user=vigil&password=TOPSECRET",
            "kafka://b:9093/t?sasl.password=TOPSECRET",
        ] {
            let message = match KafkaInput::parse(url) {
                Ok(input) => panic!("{url} was accepted as {input:?}"),
                Err(error) => format!("{error:#}"),
            };
            assert!(message.contains(PASSWORD_ENV), "{message}");
            assert!(!message.contains("TOPSECRET"), "{message}");
        }
    }
}
