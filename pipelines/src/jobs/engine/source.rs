//! What the workers of a dataflow job read: a plan of units (files, the dataset, the
//! generator) or Kafka partitions.

use std::sync::Mutex;

use vigil_datasets::loaders::{InputPlan, TextLimits};

use crate::jobs::engine::settings::{InputParams, Settings};
use crate::sources::files::{check_payloads, plan_fingerprint};
use crate::sources::kafka::{KafkaInput, KafkaReader};

/// What the workers read: a plan of units (files, the dataset, the generator) or Kafka.
pub(crate) enum Source {
    Plan(InputPlan),
    Kafka {
        input: Box<KafkaInput>,
        /// One reader per worker, taken by the worker that owns it.
        readers: Vec<Mutex<Option<KafkaReader>>>,
        /// Where the readers started: the group's committed offsets.
        start: Vec<(String, i32, i64)>,
        /// Some partition started at an offset the group had committed.
        resumed: bool,
        /// Where each worker got to, for the offset commit once the archive is durable.
        positions: Mutex<Vec<(String, i32, i64)>>,
    },
}

impl Source {
    pub(crate) fn open(settings: &Settings, workers: usize) -> anyhow::Result<Source> {
        match &settings.input {
            InputParams::Kafka(input) => {
                let partitions = input.partitions()?;
                let lag = settings.metrics.family(
                    "kafka_consumer_lag",
                    "Messages between the job's position and the partition's end, per topic and partition (librdkafka's statistics, every 5 s).",
                );
                let readers: Vec<KafkaReader> = (0..workers)
                    .map(|w| input.open_reader(&partitions, w, workers, Some(lag.clone())))
                    .collect::<anyhow::Result<_>>()?;
                let start = readers.iter().flat_map(KafkaReader::positions).collect();
                let resumed = readers.iter().any(KafkaReader::resumed);
                Ok(Source::Kafka {
                    input: input.clone(),
                    readers: readers.into_iter().map(|r| Mutex::new(Some(r))).collect(),
                    start,
                    resumed,
                    positions: Mutex::default(),
                })
            }
            other => {
                let limits = TextLimits {
                    chunk_bytes: settings.chunk_bytes,
                    max_line_bytes: settings.max_line_bytes,
                };
                let plan = other.plan(limits)?;
                check_payloads(&plan, settings.key.as_ref(), workers)?;
                Ok(Source::Plan(plan))
            }
        }
    }

    pub(crate) fn description(&self) -> String {
        match self {
            Source::Plan(plan) => plan.description.clone(),
            Source::Kafka { input, .. } => format!(
                "{}/{} (group {})",
                input.endpoint,
                input.topics.join(","),
                input.group
            ),
        }
    }

    /// A stable fingerprint of the input and the worker count, used in archive file names.
    /// `continued`: a Kafka run that carries on from the guard state of the run before it (or
    /// starts at the beginning), whose alerts and scores are the ones that run would have
    /// written, so that it writes the same files.
    pub(crate) fn fingerprint(&self, workers: usize, guards: &str, continued: bool) -> String {
        match self {
            Source::Plan(plan) => plan_fingerprint(plan, workers),
            Source::Kafka { start, .. } => {
                let mut hasher = xxhash_rust::xxh3::Xxh3::new();
                hasher.update(self.description().as_bytes());
                hasher.update(guards.as_bytes());
                // Otherwise the start offsets too: a run that resumes elsewhere without the
                // guards' state writes new files beside the earlier run's instead of
                // replacing them with different alerts.
                if !continued {
                    for (topic, partition, offset) in start {
                        hasher.update(topic.as_bytes());
                        hasher.update(&partition.to_le_bytes());
                        hasher.update(&offset.to_le_bytes());
                    }
                }
                hasher.update(&(workers as u64).to_le_bytes());
                format!("{:08x}", hasher.digest() as u32)
            }
        }
    }
}
