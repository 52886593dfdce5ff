//! The archaeology job: sequential patterns, motifs, entanglements, sessions and the field
//! over the same inputs as the guard job, archived as the `patterns`, `sessions` and
//! `entanglements` tables.

use std::hash::Hash;
use std::sync::{Arc, Mutex};

use crate::sinks::replica::{Output, ReplicaHandle, ReplicateCollection};
use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{ProbeHandle, Stream};
use vigil_operators::archaeology::FastMap;
use vigil_operators::archaeology::entanglements::{EntangleParams, Entanglement, Entanglements};
use vigil_operators::archaeology::field::{Field, FieldItem, FieldParams, FieldSnapshot};
use vigil_operators::archaeology::motifs::{MotifParams, Motifs};
use vigil_operators::archaeology::sequences::{SequenceParams, Sequences};
use vigil_operators::{Pattern, Point, ReadingRef, Session, SessionEvent, Sessions, SnapshotStore};

use crate::sinks::archive::{Archive, ArchiveWriter};

/// What the archaeology job looks for, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchaeologyParams {
    /// Sequential patterns.
    pub sequences: SequenceParams,
    /// Motifs in each reading series; `None` leaves them out.
    pub motifs: Option<MotifParams>,
    /// Entangled sources.
    pub entanglements: EntangleParams,
    /// Sessions.
    pub sessions: SessionParams,
    /// The field summary.
    pub field: FieldParams,
    /// How many patterns the end-of-run report shows.
    pub top: usize,
    /// Where sequential patterns carry their state from one run to the next (`--state`).
    pub carry: Option<std::path::PathBuf>,
}

/// Carried state files per worker: the runs in progress and the pattern counts.
pub(crate) const CARRIED_PER_WORKER: usize = 2;

impl Default for ArchaeologyParams {
    fn default() -> Self {
        Self {
            sequences: SequenceParams::default(),
            motifs: Some(MotifParams::default()),
            // Judged every minute: each judgement visits every pair that came together.
            entanglements: EntangleParams {
                every_ms: 60_000,
                ..EntangleParams::default()
            },
            sessions: SessionParams::default(),
            field: FieldParams::default(),
            top: 20,
            carry: None,
        }
    }
}

/// How sessions are formed.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionParams {
    /// A session ends after this much event time without an event of its key.
    pub gap_ms: u64,
    /// What a session is of.
    pub by: SessionKey,
}

impl Default for SessionParams {
    fn default() -> Self {
        Self {
            gap_ms: 30_000,
            by: SessionKey::Room("room".into()),
        }
    }
}

/// What a session is kept by.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionKey {
    /// The value of this attribute of the event (events without it take part in none).
    Room(String),
    /// The event's source.
    Source,
}

impl SessionKey {
    /// The session key of a reading, if it has one.
    pub fn key_of(&self, reading: &ReadingRef<'_>) -> Option<String> {
        match self {
            SessionKey::Source => Some(reading.source.to_owned()),
            SessionKey::Room(attr) => {
                let attrs = reading.attrs?;
                // Only events that carry the attribute pay for parsing.
                if !attrs.contains(attr.as_str()) {
                    return None;
                }
                let value: serde_json::Value = serde_json::from_str(attrs).ok()?;
                match value.get(attr)? {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }
            }
        }
    }
}

/// What a run found, gathered from the workers at the end of the input.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Findings {
    /// The patterns at the end, most supported first.
    pub patterns: Vec<Pattern>,
    /// Sessions found (all closed at the end of the input).
    pub sessions: u64,
    /// The entangled pairs at the end, strongest first.
    pub entanglements: Vec<Entanglement>,
    /// The field's newest snapshot.
    pub field: Option<FieldSnapshot>,
}

impl Findings {
    /// Orders patterns by support, then occurrences, then items, and keeps all of them (the
    /// report shows the first `top`); entanglements by lift.
    pub fn rank(&mut self, _top: usize) {
        self.patterns.sort_by(|a, b| {
            (b.support, b.occurrences, &a.kind, &a.items, &a.sources).cmp(&(
                a.support,
                a.occurrences,
                &b.kind,
                &b.items,
                &b.sources,
            ))
        });
        self.entanglements.sort_by(|a, b| {
            (b.lift_milli, b.together, &a.a, &a.b).cmp(&(a.lift_milli, a.together, &b.a, &b.b))
        });
    }

    /// The findings as JSON, for scripts.
    pub fn to_json(&self) -> serde_json::Value {
        let sequences = self
            .patterns
            .iter()
            .filter(|p| p.kind == "sequence")
            .count();
        serde_json::json!({
            "patterns": self.patterns.len(),
            "sequence_patterns": sequences,
            "motifs": self.patterns.len() - sequences,
            "sessions": self.sessions,
            "entanglements": self.entanglements.len(),
            "resonance": self.field.as_ref().map(|f| f.resonance),
            "active_sources": self.field.as_ref().map(|f| f.active_sources),
        })
    }

    /// The end-of-run report: the `top` patterns of each kind and the strongest pairs.
    pub fn report(&self, top: usize) -> String {
        let mut out = String::new();
        for kind in ["sequence", "motif"] {
            let of_kind: Vec<&Pattern> = self.patterns.iter().filter(|p| p.kind == kind).collect();
            out.push_str(&format!(
                "{} {kind} patterns; the top {}:\n{:<40} {:>8} {:>11}  {:<24} {:<24}\n",
                of_kind.len(),
                top.min(of_kind.len()),
                "ITEMS",
                "SUPPORT",
                "OCCURRENCES",
                "FIRST SEEN",
                "LAST SEEN"
            ));
            for p in of_kind.iter().take(top) {
                let items = match kind {
                    "motif" => format!("{} {}", p.sources.join(","), p.items.join(" ")),
                    _ => p.items.join(" → "),
                };
                out.push_str(&format!(
                    "{items:<40} {:>8} {:>11}  {:<24} {:<24}\n",
                    p.support,
                    p.occurrences,
                    vigil_operators::time::format_ts(p.first_seen),
                    vigil_operators::time::format_ts(p.last_seen)
                ));
            }
        }
        out.push_str(&format!(
            "{} entangled pairs; the strongest {}:\n",
            self.entanglements.len(),
            top.min(self.entanglements.len())
        ));
        for e in self.entanglements.iter().take(top) {
            out.push_str(&format!(
                "{} ~ {}  together {}  lift {:.1}  since {}\n",
                e.a,
                e.b,
                e.together,
                e.lift_milli as f64 / 1000.0,
                vigil_operators::time::format_ts(e.since)
            ));
        }
        out.push_str(&format!("{} sessions\n", self.sessions));
        out
    }
}

/// Builds one worker's archaeology dataflow: every operator over the points (and the
/// session events), their results archived by this worker (`index`) and replicated (when a
/// replica handle is given), and what is current at the end gathered into `findings`.
pub(crate) fn build<'scope>(
    points: Stream<'scope, u64, Vec<Point>>,
    session_events: Stream<'scope, u64, Vec<SessionEvent>>,
    params: &ArchaeologyParams,
    carry: Option<Arc<dyn SnapshotStore>>,
    (writer, index, replica): (&ArchiveWriter, usize, Option<ReplicaHandle>),
    findings: &Arc<Mutex<Findings>>,
    probe: &ProbeHandle<u64>,
) {
    let mut patterns = points.clone().sequences_carried(params.sequences, carry);
    if let Some(motifs) = params.motifs {
        patterns = patterns.concat(points.clone().motifs(motifs));
    }
    let pairs = points.clone().entanglements(params.entanglements);
    let field = points.field(params.field);
    let sessions = session_events.sessions(params.sessions.gap_ms);

    // The reading loop paces itself by how far the operators have got.
    patterns.inner.clone().probe_with(probe);
    pairs.inner.clone().probe_with(probe);
    sessions.inner.clone().probe_with(probe);
    field.inner.clone().probe_with(probe);

    // The replica follows every change: open sessions, patterns as their support moves.
    if let Some(replica) = replica {
        patterns
            .inner
            .clone()
            .replicate_collection(replica.clone(), Output::Patterns);
        sessions
            .inner
            .clone()
            .replicate_collection(replica.clone(), Output::Sessions);
        pairs
            .inner
            .clone()
            .replicate_collection(replica, Output::Entanglements);
    }

    // A session is archived once closed: then it is final.
    let closed = sessions.inner.unary(Pipeline, "ClosedSessions", |_, _| {
        move |input, output| {
            input.for_each(|time, data| {
                let mut session = output.session(&time);
                for (s, _, diff) in data.drain(..) {
                    if diff > 0 && !s.open {
                        session.give(s);
                    }
                }
            });
        }
    });
    let found = findings.clone();
    closed
        .clone()
        .inspect(move |_: &Session| {
            if let Ok(mut f) = found.lock() {
                f.sessions += 1;
            }
        })
        .archive(writer.clone(), index);

    // Patterns and pairs are archived as they stand at the end of the input.
    let found = findings.clone();
    at_end(patterns)
        .inspect(move |p: &Pattern| {
            if let Ok(mut f) = found.lock() {
                f.patterns.push(p.clone());
            }
        })
        .archive(writer.clone(), index);
    let found = findings.clone();
    at_end(pairs)
        .inspect(move |e: &Entanglement| {
            if let Ok(mut f) = found.lock() {
                f.entanglements.push(e.clone());
            }
        })
        .archive(writer.clone(), index);
    let found = findings.clone();
    // Only the newest snapshot is reported: the particles' comings and goings are not kept.
    let snapshots = field.filter(|item| matches!(item, FieldItem::Snapshot(_)));
    at_end(snapshots).inspect(move |item: &FieldItem| {
        if let (FieldItem::Snapshot(newest), Ok(mut f)) = (item, found.lock())
            && f.field.as_ref().is_none_or(|old| old.at < newest.at)
        {
            f.field = Some(newest.clone());
        }
    });
}

/// The records a collection holds once its input has ended, on the worker that holds them.
/// State is the collection's current content.
fn at_end<'scope, R>(
    collection: VecCollection<'scope, u64, R, isize>,
) -> Stream<'scope, u64, Vec<R>>
where
    R: differential_dataflow::Data + Hash,
{
    collection.inner.unary_frontier(Pipeline, "AtEnd", |_, _| {
        let mut current: FastMap<R, isize> = FastMap::default();
        let mut held: Option<timely::dataflow::operators::Capability<u64>> = None;
        move |(input, frontier), output| {
            input.for_each(|time, data| {
                if let Some(cap) = time.retain_least(output.output_index())
                    && held.as_ref().is_none_or(|h| cap.time() < h.time())
                {
                    held = Some(cap);
                }
                for (record, _, diff) in data.drain(..) {
                    match current.get_mut(&record) {
                        Some(count) => {
                            *count += diff;
                            if *count == 0 {
                                current.remove(&record);
                            }
                        }
                        None => {
                            current.insert(record, diff);
                        }
                    }
                }
            });
            if frontier.is_empty()
                && let Some(cap) = held.take()
            {
                let mut session = output.session(&cap);
                for (record, count) in current.drain() {
                    for _ in 0..count.max(0) {
                        session.give(record.clone());
                    }
                }
            }
        }
    })
}
