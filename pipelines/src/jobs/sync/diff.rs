//! The one runner of the sync diff (`vigil_operators::sync`): the operators run on timely
//! workers in the background and are fed round by round. `--once` feeds it one round;
//! following feeds it a round per pass, and the diff is updated incrementally.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timely::dataflow::operators::{Input, Inspect, Probe};
use vigil_operators::{Change, CurrentVersions, RowKey, Side, SyncAction, SyncDiff, Version};

/// One round's input to the diff dataflow.
pub(crate) struct RoundInput {
    /// What the sides hold now, of the rows that changed (all rows, in the first round).
    pub changes: Vec<(Side, Change)>,
    /// Changes to the versions both sides last agreed on.
    pub agreed: Vec<((RowKey, Version), isize)>,
}

/// The sync operators running on timely workers in the background, fed round by round.
pub(crate) struct DiffRunner {
    rounds: Option<mpsc::Sender<RoundInput>>,
    done: mpsc::Receiver<()>,
    updates: mpsc::Receiver<(SyncAction, isize)>,
    /// The diff's contents: every action with its count.
    contents: BTreeMap<SyncAction, isize>,
    guards: Option<timely::communication::initialize::WorkerGuards<()>>,
}

impl DiffRunner {
    /// Starts the diff on `workers` timely workers.
    pub fn start(workers: usize) -> anyhow::Result<DiffRunner> {
        let (round_tx, round_rx) = mpsc::channel::<RoundInput>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (update_tx, update_rx) = mpsc::channel::<(SyncAction, isize)>();
        let round_rx = Arc::new(Mutex::new(Some(round_rx)));
        let done_tx = Arc::new(Mutex::new(Some(done_tx)));
        let update_tx = Arc::new(Mutex::new(update_tx));
        // The round every worker's inputs advance to, and whether the input has ended.
        let round = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        let guards = timely::execute(timely::Config::process(workers.max(1)), move |worker| {
            let index = worker.index();
            let Ok(sender) = update_tx.lock().map(|s| s.clone()) else {
                return;
            };
            let probe = timely::dataflow::ProbeHandle::new();
            let mut agreed_in =
                differential_dataflow::input::InputSession::<u64, (RowKey, Version), isize>::new();
            let mut changes_in = worker.dataflow::<u64, _, _>(|scope| {
                let (changes_in, changes) = scope.new_input::<Vec<(Side, Change)>>();
                changes
                    .current_versions()
                    .sync_diff(agreed_in.to_collection(scope))
                    .inner
                    .inspect(move |(action, _time, diff)| {
                        let _ = sender.send((action.clone(), *diff));
                    })
                    .probe_with(&probe);
                changes_in
            });
            if index == 0 {
                let rounds = round_rx.lock().ok().and_then(|mut r| r.take());
                let done = done_tx.lock().ok().and_then(|mut d| d.take());
                if let (Some(rounds), Some(done)) = (rounds, done) {
                    loop {
                        match rounds.recv_timeout(Duration::from_millis(1)) {
                            Ok(input) => {
                                for change in input.changes {
                                    changes_in.send(change);
                                }
                                for (version, diff) in input.agreed {
                                    agreed_in.update(version, diff);
                                }
                                let next = round.fetch_add(1, Ordering::SeqCst) + 1;
                                changes_in.advance_to(next);
                                agreed_in.advance_to(next);
                                agreed_in.flush();
                                while probe.less_than(&next) {
                                    worker.step();
                                }
                                let _ = done.send(());
                            }
                            Err(RecvTimeoutError::Timeout) => {
                                worker.step();
                            }
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                }
                closed.store(true, Ordering::SeqCst);
            } else {
                // The other workers keep their (empty) inputs at worker 0's round.
                while !closed.load(Ordering::SeqCst) {
                    let at = round.load(Ordering::SeqCst);
                    if *changes_in.time() < at {
                        changes_in.advance_to(at);
                        agreed_in.advance_to(at);
                        agreed_in.flush();
                    }
                    worker.step_or_park(Some(Duration::from_millis(1)));
                }
            }
            drop(changes_in);
            drop(agreed_in);
            while worker.step_or_park(None) {}
        })
        .map_err(|e| anyhow::anyhow!("starting the sync workers failed: {e}"))?;
        Ok(DiffRunner {
            rounds: Some(round_tx),
            done: done_rx,
            updates: update_rx,
            contents: BTreeMap::new(),
            guards: Some(guards),
        })
    }

    /// Feeds one round and returns the diff after it: every action it holds.
    pub fn round(&mut self, input: RoundInput) -> anyhow::Result<Vec<SyncAction>> {
        let rounds = self
            .rounds
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the sync workers stopped"))?;
        rounds
            .send(input)
            .map_err(|_| anyhow::anyhow!("the sync workers stopped"))?;
        self.done
            .recv()
            .map_err(|_| anyhow::anyhow!("the sync workers stopped"))?;
        while let Ok((action, diff)) = self.updates.try_recv() {
            let count = self.contents.entry(action).or_default();
            *count += diff;
        }
        self.contents.retain(|_, count| *count != 0);
        Ok(self
            .contents
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(action, _)| action.clone())
            .collect())
    }
}

impl Drop for DiffRunner {
    fn drop(&mut self) {
        self.rounds = None;
        if let Some(guards) = self.guards.take() {
            drop(guards.join());
        }
    }
}
