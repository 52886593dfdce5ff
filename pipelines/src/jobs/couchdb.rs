//! The CouchDB `_changes` listener: follows a database's change feed and forwards only the
//! minimal metadata of each change — `id`, `seq`, `type`, `ts` — never the document body.
//!
//! The feed is read with `feed=longpoll` (one request waits for the next changes) or
//! `feed=continuous` (one long response, a change per line), from the `since` position kept in
//! a checkpoint file. The checkpoint moves only after the changes before it are delivered (for
//! Kafka: acknowledged by the broker), so a restart repeats at most the last batch and loses
//! nothing. Polls are spaced by a randomized interval, and an unreachable CouchDB is retried
//! with jittered exponential backoff. The feed's rows and lines are read by `sources::couchdb`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rand::RngExt;
use tracing::{info, warn};

use crate::connect::kafka::KafkaEndpoint;
use crate::runtime::backoff::Backoff;
use crate::runtime::metrics::Metrics;
use crate::runtime::stop::Stop;
use crate::sinks::kafka::{DELIVERY_TIMEOUT, TopicProducer};
use crate::sources::couchdb::{ChangeMeta, FeedLine, parse_line, parse_response};

/// How the feed is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    /// One request per batch, which waits at CouchDB until there are changes.
    Longpoll,
    /// One long response with a change per line.
    Continuous,
}

/// Where the changes' metadata goes.
pub enum ChangeOut {
    /// JSON lines.
    Lines(Box<dyn Write + Send>),
    /// A Kafka topic, keyed by document id.
    Kafka {
        /// The producer.
        producer: Box<TopicProducer>,
        /// The topic.
        topic: String,
    },
}

impl ChangeOut {
    /// `-` for stdout, `kafka://HOST:PORT/TOPIC[?security…]`, or a file path.
    pub fn open(target: &str) -> anyhow::Result<ChangeOut> {
        if target == "-" {
            return Ok(ChangeOut::Lines(Box::new(std::io::stdout())));
        }
        if target.starts_with("kafka://") {
            return ChangeOut::kafka(target, DELIVERY_TIMEOUT);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(target)
            .with_context(|| format!("opening {target} for the changes"))?;
        Ok(ChangeOut::Lines(Box::new(std::io::BufWriter::new(file))))
    }

    /// `kafka://HOST:PORT/TOPIC[?security…]`, a change failing when the broker has not taken
    /// it within `delivery_timeout`; the batch it is in is then sent again.
    pub fn kafka(target: &str, delivery_timeout: Duration) -> anyhow::Result<ChangeOut> {
        let (endpoint, topic): (KafkaEndpoint, String) = KafkaEndpoint::parse_with_topic(target)?;
        let producer = TopicProducer::connect_with_timeout(
            &endpoint,
            std::slice::from_ref(&topic),
            "changes",
            delivery_timeout,
        )?;
        Ok(ChangeOut::Kafka {
            producer: Box::new(producer),
            topic,
        })
    }

    fn send(&mut self, change: &ChangeMeta) -> anyhow::Result<()> {
        let json = serde_json::to_string(change)?;
        match self {
            ChangeOut::Lines(out) => writeln!(out, "{json}").context("writing a change"),
            ChangeOut::Kafka { producer, topic } => {
                producer.send(topic, &change.id, &json, &[("type", change.kind.as_str())]);
                Ok(())
            }
        }
    }

    /// Makes what was sent durable (flushed, or acknowledged by the broker).
    fn commit(&mut self) -> anyhow::Result<()> {
        match self {
            ChangeOut::Lines(out) => out.flush().context("flushing the changes"),
            ChangeOut::Kafka { producer, .. } => {
                let flushed = producer.flush("changes").map(|_| ());
                if flushed.is_err() {
                    // The batch is sent again from the checkpoint, through a producer the
                    // broker has not fenced.
                    producer.renew("changes")?;
                }
                flushed
            }
        }
    }
}

/// The feed position, kept in a file that is replaced atomically.
pub struct Checkpoint {
    path: PathBuf,
}

impl Checkpoint {
    /// A checkpoint kept at `path`.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// The position stored, or `0` (the start of the feed) when there is none yet.
    pub fn load(&self) -> anyhow::Result<String> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(text.trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok("0".into()),
            Err(e) => {
                Err(e).with_context(|| format!("reading the checkpoint {}", self.path.display()))
            }
        }
    }

    /// Stores `seq`: written to a temporary file, synced, renamed over the old one, and the
    /// directory synced, so that a position once stored survives a crash.
    pub fn store(&self, seq: &str) -> anyhow::Result<()> {
        crate::runtime::durable::replace_file(&self.path, seq.as_bytes())
            .with_context(|| format!("replacing the checkpoint {}", self.path.display()))
    }
}

/// The listener's settings.
pub struct Listener {
    /// The CouchDB server, e.g. `http://127.0.0.1:5984` (user and password may be in the URL).
    pub server: String,
    /// The database.
    pub db: String,
    /// Longpoll or continuous.
    pub feed: Feed,
    /// The mean pause between polls; each pause is drawn from half to one and a half of it.
    pub poll: Duration,
    /// Where the feed position is kept.
    pub checkpoint: Checkpoint,
    /// Stop once the feed has no more changes (a backfill) instead of following it.
    pub once: bool,
    /// The figures it exposes (`vigil_couchdb_*`), and its health and readiness.
    pub metrics: Metrics,
}

/// What a listener run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Changes forwarded.
    pub forwarded: u64,
    /// Rows that were not usable changes (logged with their reason).
    pub bad: u64,
    /// Failed requests that were retried.
    pub retries: u64,
}

impl Listener {
    /// Follows the feed until `stop` (or, with `once`, until it is caught up).
    pub fn run(&self, out: &mut ChangeOut, stop: &Stop) -> anyhow::Result<ListenerStats> {
        let runtime = crate::runtime::io::current_thread("HTTP")?;
        runtime.block_on(self.follow(out, stop))
    }

    fn url(&self, since: &str, feed: &str) -> String {
        format!(
            "{}/{}/_changes?feed={feed}&since={since}&style=all_docs&limit=10000&timeout=10000&heartbeat=5000",
            self.server.trim_end_matches('/'),
            self.db
        )
    }

    async fn follow(&self, out: &mut ChangeOut, stop: &Stop) -> anyhow::Result<ListenerStats> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        let mut stats = ListenerStats::default();
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        let mut since = self.checkpoint.load()?;
        let figures = [
            ("couchdb_changes_forwarded", "Changes forwarded."),
            (
                "couchdb_bad_rows",
                "Rows of the feed that were not usable changes.",
            ),
            ("couchdb_retries", "Failed requests that were retried."),
        ]
        .map(|(name, help)| self.metrics.counter(name, help));
        let mut published = [0u64; 3];
        info!(message = "Following the CouchDB changes.", server = %crate::runtime::secrets::redact(&self.server), db = %self.db, since = %since);
        while !stop.is_triggered() {
            let result = match (self.feed, self.once) {
                (Feed::Continuous, false) => {
                    self.continuous(&client, &since, out, &mut stats, stop)
                        .await
                }
                // A backfill asks for what is there now and does not wait.
                (_, true) => self.batch(&client, &since, "normal", out, &mut stats).await,
                (Feed::Longpoll, false) => {
                    self.batch(&client, &since, "longpoll", out, &mut stats)
                        .await
                }
            };
            for ((counter, at), now) in figures.iter().zip(published.iter_mut()).zip([
                stats.forwarded,
                stats.bad,
                stats.retries + u64::from(result.is_err()),
            ]) {
                counter.inc_by(now.saturating_sub(*at));
                *at = now;
            }
            match result {
                Ok((last, changed)) => {
                    self.metrics.ready("couchdb");
                    self.metrics.beat();
                    backoff.reset();
                    if last != since {
                        since = last;
                        self.checkpoint.store(&since)?;
                    }
                    if self.once && !changed {
                        break;
                    }
                    if !self.once {
                        let mean = self.poll.as_secs_f64();
                        let pause = rand::rng().random_range(0.5 * mean..=1.5 * mean);
                        tokio::time::sleep(Duration::from_secs_f64(pause)).await;
                    }
                }
                Err(error) => {
                    stats.retries += 1;
                    let delay = backoff.next_delay();
                    // The checkpoint stays where it was: the changes since are read and sent
                    // again, so that a batch the broker did not take is not lost.
                    warn!(message = "Reading or forwarding the changes failed; retrying from the checkpoint.", error = %format!("{error:#}"), since = %since, retry_in_ms = delay.as_millis() as u64);
                    tokio::time::sleep(delay).await;
                }
            }
        }
        Ok(stats)
    }

    /// One normal or longpoll request: forwards its changes, makes them durable, and returns
    /// the new position and whether there were any changes.
    async fn batch(
        &self,
        client: &reqwest::Client,
        since: &str,
        feed: &str,
        out: &mut ChangeOut,
        stats: &mut ListenerStats,
    ) -> anyhow::Result<(String, bool)> {
        let response = client
            .get(self.url(since, feed))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .with_context(|| format!("requesting the changes of {}", self.db))?;
        let status = response.status();
        let body = response.text().await.context("reading the changes")?;
        anyhow::ensure!(
            status.is_success(),
            "CouchDB answered {status} for the changes of {}: {}",
            self.db,
            body.chars().take(200).collect::<String>()
        );
        let (changes, last) = parse_response(&body, now_ms())?;
        let changed = !changes.is_empty();
        for change in changes {
            match change {
                Ok(change) => {
                    out.send(&change)?;
                    stats.forwarded += 1;
                }
                Err((reason, row)) => {
                    stats.bad += 1;
                    warn!(message = "Unusable change row skipped.", %reason, row = %row.chars().take(200).collect::<String>());
                }
            }
        }
        out.commit()?;
        Ok((last, changed))
    }

    /// One continuous response, read line by line until it ends (CouchDB closes it after its
    /// timeout) or a stop is asked for; the checkpoint moves after every chunk of lines.
    async fn continuous(
        &self,
        client: &reqwest::Client,
        since: &str,
        out: &mut ChangeOut,
        stats: &mut ListenerStats,
        stop: &Stop,
    ) -> anyhow::Result<(String, bool)> {
        let mut response = client
            .get(self.url(since, "continuous"))
            .send()
            .await
            .with_context(|| format!("requesting the changes of {}", self.db))?;
        anyhow::ensure!(
            response.status().is_success(),
            "CouchDB answered {} for the changes of {}",
            response.status(),
            self.db
        );
        let mut position = since.to_owned();
        let mut pending = Vec::new();
        let mut changed = false;
        while let Some(chunk) = response.chunk().await.context("reading the changes")? {
            pending.extend_from_slice(&chunk);
            let mut moved = false;
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                match parse_line(&String::from_utf8_lossy(&line), now_ms()) {
                    FeedLine::Change(change) => {
                        out.send(&change)?;
                        stats.forwarded += 1;
                        position = change.seq.clone();
                        moved = true;
                        changed = true;
                    }
                    FeedLine::LastSeq(last) => {
                        position = last;
                        moved = true;
                    }
                    FeedLine::Heartbeat => {}
                    FeedLine::Bad(reason, raw) => {
                        stats.bad += 1;
                        warn!(message = "Unusable change line skipped.", %reason, line = %raw.chars().take(200).collect::<String>());
                    }
                }
            }
            if moved {
                out.commit()?;
                self.checkpoint.store(&position)?;
            }
            if stop.is_triggered() {
                break;
            }
        }
        Ok((position, changed))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
