//! The Kafka producers: [`TopicProducer`], an idempotent producer (`acks=all`) that counts what
//! was delivered and what failed, and [`KafkaAlerts`], which publishes each alert to the topic
//! its guard's reaction names, keyed by source, with the guard in a header, through the local
//! spill so that no alert is lost while the broker is away.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tracing::{error, info, warn};
use vigil_operators::Alert;

use crate::connect::kafka::{KafkaEndpoint, REQUEST_TIMEOUT, explain, unreachable};
use crate::runtime::backoff::Backoff;
use crate::runtime::spill::Spill;

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
mod tests;
