//! A real Kafka-protocol broker for tests: tansu, started on a free loopback port and stopped
//! when the fixture is dropped, with the client side a user would have (create topics,
//! produce, consume) on librdkafka.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // Fixtures fail loudly on purpose.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// A tansu broker on 127.0.0.1, in memory; killed on drop.
pub struct Broker {
    child: Child,
    port: u16,
}

/// A message read back: key, value and headers.
#[derive(Clone, Debug)]
pub struct Consumed {
    /// The partition it was read from.
    pub partition: i32,
    /// The key, as text.
    pub key: Option<String>,
    /// The value, as text.
    pub value: String,
    /// Headers as (name, value) text pairs.
    pub headers: Vec<(String, String)>,
}

impl Broker {
    /// Starts tansu on a free port and waits until it accepts connections.
    pub fn start() -> Broker {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start tansu ({e}): the Kafka tests need this Kafka-protocol broker; \
                     run scripts/setup.sh --tests, which installs it with \
                     `cargo install --locked tansu --features dynostore`"
                )
            });
        let broker = Broker { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not start listening on port {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    /// CPU seconds the broker process has used so far (Linux), to tell its share of a
    /// benchmark that runs on the same machine.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (which ends with ')'): utime and stime are the 12th
        // and 13th, in clock ticks of 1/100 s.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }

    /// Freezes the broker (SIGSTOP): connections stay open and nothing is answered, as when a
    /// broker hangs or the network to it is cut.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused broker go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} tansu");
    }

    /// `HOST:PORT` of the broker.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.address());
        config
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.config().create().unwrap();
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let results = runtime
            .block_on(admin.create_topics([&topic], &AdminOptions::new()))
            .unwrap();
        for result in results {
            result.unwrap_or_else(|(topic, e)| panic!("creating topic {topic}: {e}"));
        }
    }

    /// Produces `(key, value)` messages to `topic` (partitioned by key) and waits until the
    /// broker has them all.
    pub fn produce<'a>(
        &self,
        topic: &str,
        messages: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) {
        self.produce_in_batches(topic, 1000, messages);
    }

    /// Produces with at most `batch` records per record batch. tansu 0.6 answers a fetch that
    /// starts inside a batch from the next batch on, skipping the rest of that batch (Kafka
    /// returns the whole batch and the client skips to the offset), so tests that resume from
    /// arbitrary committed offsets produce one record per batch.
    pub fn produce_in_batches<'a>(
        &self,
        topic: &str,
        batch: usize,
        messages: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) {
        let report = Failures::default();
        let producer: BaseProducer<Failures> = self
            .config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("batch.num.messages", batch.to_string())
            .create_with_context(report.clone())
            .unwrap();
        for (key, value) in messages {
            let mut record = BaseRecord::to(topic).key(key).payload(value);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(60)).unwrap();
        let failed = report.0.lock().unwrap();
        assert!(
            failed.is_empty(),
            "{} messages were not delivered: {:?}",
            failed.len(),
            failed.first()
        );
    }

    /// Every message of `topic` from the beginning to its current end, partition by partition.
    pub fn consume_all(&self, topic: &str) -> Vec<Consumed> {
        let partitions = self.partitions(topic);
        let mut out = Vec::new();
        for partition in 0..partitions {
            self.read_partition(topic, partition, |message| {
                let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_owned(), text(h.value).unwrap_or_default()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Consumed {
                    partition,
                    key: text(message.key()),
                    value: text(message.payload()).unwrap_or_default(),
                    headers,
                });
            });
        }
        out
    }

    /// The number of partitions of `topic`.
    pub fn partitions(&self, topic: &str) -> i32 {
        let consumer: BaseConsumer = self.config().create().unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        metadata.topics()[0].partitions().len() as i32
    }

    /// The offset the next message of `topic`/`partition` will get, found by reading to the
    /// end (a broker's reported end can fall short of its last record).
    pub fn end_offset(&self, topic: &str, partition: i32) -> i64 {
        let mut end = 0;
        self.read_partition(topic, partition, |m| end = m.offset() + 1);
        end
    }

    /// Reads one partition from the beginning until the consumer reports its end.
    fn read_partition(
        &self,
        topic: &str,
        partition: i32,
        mut each: impl FnMut(&BorrowedMessage<'_>),
    ) {
        let consumer: BaseConsumer = self
            .config()
            .set("group.id", "vigil-tests-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
        consumer.assign(&list).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "reading {topic}/{partition} timed out"
            );
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(message)) => each(&message),
                Some(Err(KafkaError::PartitionEOF(_))) => return,
                Some(Err(e)) => panic!("reading {topic}/{partition}: {e}"),
            }
        }
    }

    /// Commits offset 0 for every partition of `topic` in `group`, so that its next run
    /// reads the topic again from the start (as `kafka-consumer-groups --reset-offsets` does).
    pub fn rewind(&self, group: &str, topic: &str) {
        let consumer: BaseConsumer = self.config().set("group.id", group).create().unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..self.partitions(topic) {
            list.add_partition_offset(topic, p, Offset::Offset(0))
                .unwrap();
        }
        consumer
            .commit(&list, rdkafka::consumer::CommitMode::Sync)
            .unwrap();
    }

    /// The group's committed offset of each partition of `topic` (`None` where none is).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
        let consumer: BaseConsumer = self.config().set("group.id", group).create().unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(topic, p);
        }
        let committed = consumer
            .committed_offsets(list, Duration::from_secs(10))
            .unwrap();
        (0..partitions)
            .map(
                |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                },
            )
            .collect()
    }
}

/// Delivery failures of the fixture's producer.
#[derive(Clone, Default)]
struct Failures(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl rdkafka::ClientContext for Failures {}

impl rdkafka::producer::ProducerContext for Failures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.0.lock().unwrap().push(error.to_string());
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
