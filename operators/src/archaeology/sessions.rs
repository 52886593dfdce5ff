//! Session windows: the events of a key (a room, or a source) with no gap longer than allowed.

use std::collections::{BTreeSet, HashMap};

use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::model::Session;
use crate::stash::Stash;

/// An event as sessions see it: the key its session is kept by, who took part, and when.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionEvent {
    /// A room (an attribute of the event), or the source itself for sessions per source.
    pub key: String,
    /// Who took part: the event's source.
    pub participant: String,
    /// Event time, epoch ms.
    pub ts: i64,
}

/// Groups events into session windows per key.
pub trait Sessions<'scope> {
    /// The collection of sessions: per key, runs of events none more than `gap_ms` after the
    /// one before. A session is in the collection as soon as its first event is complete
    /// (the frontier has passed it), grows as events come, and is marked closed once the
    /// frontier passes its end plus the gap, when no event can extend it any more; then its
    /// state is dropped, so memory holds only open sessions however long the input. At the
    /// end of the input every session is closed.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
    /// use vigil_operators::archaeology::sessions::{SessionEvent, Sessions};
    ///
    /// let event = |who: &str, ts: i64| SessionEvent { key: "room".into(), participant: who.into(), ts };
    /// let captured = timely::example(move |scope| {
    ///     vec![event("a", 0), event("b", 500), event("a", 10_000)]
    ///         .to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .sessions(1_000)
    ///         .consolidate()
    ///         .inner
    ///         .capture()
    /// });
    /// let sessions: Vec<_> = captured.extract().into_iter().flat_map(|(_, d)| d).collect();
    /// assert_eq!(sessions.len(), 2);
    /// assert_eq!(sessions[0].0.participants, ["a", "b"]);
    /// ```
    fn sessions(self, gap_ms: u64) -> VecCollection<'scope, u64, Session, isize>;
}

/// A session still open: what it holds, and the record last emitted for it.
struct Open {
    session: Session,
    participants: BTreeSet<String>,
    emitted: Option<Session>,
}

impl<'scope> Sessions<'scope> for Stream<'scope, u64, Vec<SessionEvent>> {
    fn sessions(self, gap_ms: u64) -> VecCollection<'scope, u64, Session, isize> {
        let gap = i64::try_from(gap_ms).unwrap_or(i64::MAX);
        let exchange =
            Exchange::new(|e: &SessionEvent| xxhash_rust::xxh3::xxh3_64(e.key.as_bytes()));
        self.unary_frontier(exchange, "Sessions", move |_cap, _info| {
            let mut stash = Stash::new();
            let mut open: HashMap<String, Open> = HashMap::new();
            let mut updates: Vec<(Session, isize)> = Vec::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    stash.receive(cap.retain_least(output.output_index()), data)
                });
                let bound = frontier.frontier().first().copied();
                // Events before the frontier are complete: in event-time order per key.
                let mut ready: Vec<SessionEvent> = stash.ready(bound, |e| e.ts);
                ready.sort_unstable_by(|a, b| {
                    (&a.key, a.ts, &a.participant).cmp(&(&b.key, b.ts, &b.participant))
                });
                let mut touched: BTreeSet<String> = BTreeSet::new();
                for event in ready {
                    let extends = open
                        .get(&event.key)
                        .is_some_and(|o| event.ts - o.session.end <= gap);
                    if !extends && let Some(done) = open.remove(&event.key) {
                        close(done, &mut updates);
                    }
                    let entry = open.entry(event.key.clone()).or_insert_with(|| Open {
                        session: Session {
                            key: event.key.clone(),
                            start: event.ts,
                            end: event.ts,
                            participants: Vec::new(),
                            events: 0,
                            open: true,
                        },
                        participants: BTreeSet::new(),
                        emitted: None,
                    });
                    entry.session.end = entry.session.end.max(event.ts);
                    entry.session.events += 1;
                    entry.participants.insert(event.participant);
                    touched.insert(event.key);
                }
                for key in touched {
                    if let Some(o) = open.get_mut(&key) {
                        o.session.participants = o.participants.iter().cloned().collect();
                        if let Some(before) = o.emitted.replace(o.session.clone()) {
                            updates.push((before, -1));
                        }
                        updates.push((o.session.clone(), 1));
                    }
                }
                // No event can extend a session whose end plus the gap the frontier has passed.
                let closed: Vec<String> = open
                    .iter()
                    .filter(|(_, o)| match bound {
                        Some(b) => o.session.end.saturating_add(gap) < b as i64,
                        None => true,
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in closed {
                    if let Some(done) = open.remove(&key) {
                        close(done, &mut updates);
                    }
                }
                let Some(cap) = stash.held.as_mut() else {
                    return;
                };
                if !updates.is_empty() {
                    let time = *cap.time();
                    output
                        .session(&*cap)
                        .give_iterator(updates.drain(..).map(|(s, d)| (s, time, d)));
                }
                match bound {
                    Some(b) if !stash.pending.is_empty() || !open.is_empty() => {
                        if *cap.time() < b {
                            cap.downgrade(&b);
                        }
                    }
                    _ => stash.held = None,
                }
            }
        })
        .as_collection()
    }
}

/// Marks a session closed: its open record is retracted, the closed one added.
fn close(done: Open, updates: &mut Vec<(Session, isize)>) {
    let Open {
        mut session,
        participants,
        emitted,
    } = done;
    if let Some(before) = emitted {
        updates.push((before, -1));
    }
    session.participants = participants.into_iter().collect();
    session.open = false;
    updates.push((session, 1));
}
