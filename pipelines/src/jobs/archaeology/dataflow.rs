//! One worker's archaeology dataflow: every operator over the points and session events, its
//! results archived, replicated, and gathered at the end of the input.

use std::hash::Hash;
use std::sync::{Arc, Mutex};

use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{ProbeHandle, Stream};
use vigil_operators::archaeology::FastMap;
use vigil_operators::archaeology::entanglements::{Entanglement, Entanglements};
use vigil_operators::archaeology::field::{Field, FieldItem};
use vigil_operators::archaeology::motifs::Motifs;
use vigil_operators::archaeology::sequences::Sequences;
use vigil_operators::{Pattern, SeriesReading, Session, SessionEvent, Sessions, SnapshotStore};

use crate::jobs::archaeology::params::ArchaeologyParams;
use crate::jobs::engine::findings::Findings;
use crate::sinks::archive::{Archive, ArchiveWriter};
use crate::sinks::replica::{Output, ReplicaHandle, ReplicateCollection};

/// Builds one worker's archaeology dataflow: every operator over the points (and the
/// session events), their results archived by this worker (`index`) and replicated (when a
/// replica handle is given), and what is current at the end gathered into `findings`.
pub(crate) fn build<'scope>(
    points: Stream<'scope, u64, Vec<SeriesReading>>,
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
        .inspect(move |s: &Session| {
            if let Ok(mut f) = found.lock() {
                f.sessions += 1;
                *f.sessions_by_key.entry(s.key.clone()).or_default() += 1;
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
