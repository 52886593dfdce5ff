//! The current version of every row on each side, kept from the sides' change feeds.

use std::collections::HashMap;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::{RowKey, Side, Version};
use crate::model::Change;

/// Keeps, per side and row, the newest version its feed has reported.
pub trait CurrentVersions<'scope> {
    /// Turns a stream of changes, each tagged with its side, into the collection of current
    /// versions: a newer version of a row retracts the one before it, an older or repeated
    /// one (a feed delivering at least once) changes nothing. The state is one version per row
    /// and side, whatever the length of the feeds.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
    /// use vigil_operators::sync::current_versions::CurrentVersions;
    /// use vigil_operators::sync::Side;
    /// use vigil_operators::{Change, ChangeOp};
    ///
    /// let change = |v: &str, at: i64| Change {
    ///     table: "t".into(), key: "[1]".into(), op: ChangeOp::Update, before: None,
    ///     after: Some(v.into()), updated_at: Some(at), origin: "a".into(), position: "p".into(),
    /// };
    /// let captured = timely::example(move |scope| {
    ///     vec![(Side::Local, change("{\"v\":1}", 1)), (Side::Local, change("{\"v\":2}", 2))]
    ///         .to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .current_versions()
    ///         .consolidate()
    ///         .inner
    ///         .capture()
    /// });
    /// let current: Vec<_> = captured.extract().into_iter().flat_map(|(_, d)| d).collect();
    /// assert_eq!(current.len(), 1);
    /// assert_eq!(current[0].0.1.1.row.as_deref(), Some("{\"v\":2}"));
    /// ```
    fn current_versions(self) -> VecCollection<'scope, u64, (RowKey, (Side, Version)), isize>;
}

impl<'scope> CurrentVersions<'scope> for Stream<'scope, u64, Vec<(Side, Change)>> {
    fn current_versions(self) -> VecCollection<'scope, u64, (RowKey, (Side, Version)), isize> {
        let exchange = Exchange::new(|(_, c): &(Side, Change)| row_hash(&c.table, &c.key));
        self.unary_frontier(exchange, "CurrentVersions", |_cap, _info| {
            let mut current: HashMap<(Side, RowKey), Version> = HashMap::new();
            // Changes wait for their time to complete, then go in time order, so that the
            // collection is right at every time, not only at the end.
            let mut pending: Vec<Stashed> = Vec::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    if let Some(cap) = cap.retain_least(output.output_index()) {
                        pending.push((cap, std::mem::take(data)));
                    }
                });
                pending.sort_by(|a, b| a.0.time().cmp(b.0.time()));
                let complete = pending
                    .iter()
                    .take_while(|(cap, _)| !frontier.less_equal(cap.time()))
                    .count();
                for (cap, changes) in pending.drain(..complete) {
                    let mut session = output.session(&cap);
                    let time = *cap.time();
                    for (side, change) in changes {
                        let version = Version::of(&change);
                        let row: RowKey = (change.table, change.key);
                        match current.get_mut(&(side, row.clone())) {
                            Some(old) if *old >= version => {}
                            Some(old) => {
                                let before = std::mem::replace(old, version.clone());
                                session.give(((row.clone(), (side, before)), time, -1));
                                session.give(((row, (side, version)), time, 1));
                            }
                            None => {
                                current.insert((side, row.clone()), version.clone());
                                session.give(((row, (side, version)), time, 1));
                            }
                        }
                    }
                }
            }
        })
        .as_collection()
    }
}

/// Changes received at a time, waiting for it to complete.
type Stashed = (Capability<u64>, Vec<(Side, Change)>);

/// The hash rows are routed by, the same in every operator of the sync.
pub fn row_hash(table: &str, key: &str) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(table.as_bytes());
    hasher.update(&[0xff]);
    hasher.update(key.as_bytes());
    hasher.digest()
}
