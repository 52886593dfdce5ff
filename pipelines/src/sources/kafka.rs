//! The Kafka consumer source.
//!
//! It reads `kafka://HOST:PORT[,HOST:PORT…]/TOPIC[,TOPIC…]?group=G`. Its partitions are
//! spread over the timely workers by a fixed rule (the sorted partition list, round robin), so
//! every worker reads its own partitions with its own consumer, resumes each from the group's
//! committed offset, and keeps a watermark per partition. Offsets are committed only once the
//! archive holds every record before them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::connect::kafka::{KafkaEndpoint, REQUEST_TIMEOUT, SECURITY_PARAMS, explain, split_url};
use crate::runtime::metrics::Labels2;

/// An hour of event time, in ms: the archive's partitions, and the steps commits advance by.
const HOUR_MS: i64 = 3_600_000;

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
        self.consumer_with(ConsumerLog::default())
    }

    fn consumer_with(&self, context: ConsumerLog) -> anyhow::Result<BaseConsumer<ConsumerLog>> {
        let mut config = self.endpoint.client_config();
        if context.lag.is_some() {
            // librdkafka's statistics carry each assigned partition's lag.
            config.set("statistics.interval.ms", "5000");
        }
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
            .create_with_context(context)
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
        lag: Option<Family<Labels2, Gauge>>,
    ) -> anyhow::Result<KafkaReader> {
        let consumer = self.consumer_with(ConsumerLog { lag })?;
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
/// bounded read asks for, which are not errors; and, when given a gauge family, each assigned
/// partition's lag from librdkafka's statistics (`vigil_kafka_consumer_lag`).
#[derive(Default)]
pub struct ConsumerLog {
    lag: Option<Family<Labels2, Gauge>>,
}

impl ClientContext for ConsumerLog {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(lag) = &self.lag else {
            return;
        };
        for (topic, of_topic) in &statistics.topics {
            for (partition, figures) in &of_topic.partitions {
                // -1 for partitions not assigned here (and librdkafka's internal one).
                if *partition >= 0 && figures.consumer_lag >= 0 {
                    lag.get_or_create(&[
                        ("topic", topic.clone()),
                        ("partition", partition.to_string()),
                    ])
                    .set(figures.consumer_lag);
                }
            }
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::kafka::PASSWORD_ENV;

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
