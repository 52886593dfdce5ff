//! Guard-state snapshots on local disk, for jobs that read Kafka.
//!
//! Layout under the state directory (`--state`, default `./vigil-state`):
//! `JOB/at-TIME/OPERATOR-wWORKER-of-PEERS.snap`, one file per guard operator and worker, and
//! `JOB/CURRENT`, the snapshot a restart starts from. `JOB` is a fingerprint of the input and
//! the guard configuration, so another job (or the same one with other guards) never loads
//! state that is not its own.
//!
//! A snapshot at `TIME` holds what the guards know after every reading before `TIME`. It
//! becomes `CURRENT` once every operator on every worker has written it *and* the archive and
//! the alert spill are durable up to `TIME`: whatever the guards concluded before it is then
//! kept elsewhere, so it is never needed again. Offsets are committed only up to `CURRENT`
//! (through [`crate::sources::kafka::KafkaReader::commit_durable`]), so a restart replays from a
//! position at or before the snapshot and the operators skip the replayed readings the
//! snapshot already holds. Files are written to a temporary name, synced and renamed, and their
//! directories synced (new ones into their parents too), so a crash leaves either the old
//! snapshot or the new one, never half of one, and never a `CURRENT` naming files that are gone.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{info, warn};
use vigil_operators::SnapshotStore;

use crate::runtime::durable::write_atomically;

/// What starts every snapshot file.
const MAGIC: &[u8; 8] = b"VGLSNAP1";

/// Snapshots are at least this many times their own writing time apart, so that writing them
/// takes at most about a tenth of the time, however large the state.
const COST_FACTOR: u32 = 10;

/// A snapshot read back: its time, and each operator's files (one per worker that wrote it).
type Snapshot = (u64, HashMap<String, Vec<Vec<u8>>>);

/// Snapshots of the guard operators of one job, kept in a local directory.
pub struct StateDir {
    root: PathBuf,
    every_ms: u64,
    /// Wall time between two snapshots at least (a backfill crosses many boundaries a second);
    /// longer when writing them takes long ([`COST_FACTOR`]).
    min_interval: Duration,
    /// Files a complete snapshot has: guard operators × workers.
    files_per_snapshot: usize,
    restored: Option<Snapshot>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The newest frontier any operator instance has reported.
    frontier: u64,
    /// The snapshot being taken: every instance saves its state there.
    target: Option<u64>,
    /// When the target was chosen.
    chosen: Option<Instant>,
    /// Files written per snapshot time by this run, and the time spent writing them.
    written: BTreeMap<u64, (usize, Duration)>,
    /// The snapshot a restart starts from.
    current: Option<u64>,
    /// The time of the final snapshot, once the input has ended.
    final_at: Option<u64>,
}

impl StateDir {
    /// Opens the state of job `fingerprint` under `dir`. With `resume` (the input resumes from
    /// committed positions) the current snapshot is loaded for the operators to start from;
    /// without, any state there is stale and ignored.
    pub fn open(
        dir: &Path,
        fingerprint: &str,
        files_per_snapshot: usize,
        every_ms: u64,
        min_interval: Duration,
        resume: bool,
    ) -> anyhow::Result<StateDir> {
        let root = dir.join(fingerprint);
        crate::runtime::durable::create_dir_all(&root).with_context(|| {
            format!(
                "creating the guard state directory {}: choose a writable one with --state",
                root.display()
            )
        })?;
        let mut current = None;
        let mut restored = None;
        if resume {
            match load_current(&root) {
                Ok(Some((at, files))) => {
                    info!(message = "Guard state restored.", at, files = files.values().map(Vec::len).sum::<usize>(), dir = %root.display());
                    current = Some(at);
                    restored = Some((at, files));
                }
                Ok(None) => warn!(
                    message = "The input resumes from committed offsets but no guard state was found; the guards warm up again and may judge the first readings differently.",
                    dir = %root.display()
                ),
                Err(error) => warn!(
                    message = "The guard state could not be read; the guards warm up again.",
                    error = %format!("{error:#}"),
                    dir = %root.display()
                ),
            }
        }
        // Snapshots past the current one are a crashed run's, and may be of another worker
        // count: this run takes its own.
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                let newer = snapshot_time(&entry.file_name())
                    .is_some_and(|t| current.is_none_or(|c| t > c));
                if newer {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(StateDir {
            root,
            every_ms,
            min_interval,
            files_per_snapshot,
            restored,
            inner: Mutex::new(Inner {
                current,
                ..Inner::default()
            }),
        })
    }

    /// Whether a snapshot was loaded for the operators to start from.
    pub fn restored_at(&self) -> Option<u64> {
        self.restored.as_ref().map(|(at, _)| *at)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The input has ended: the final snapshot is taken at `at`, past every reading.
    pub fn set_final(&self, at: u64) {
        self.lock().final_at = Some(at);
    }

    /// Makes the newest complete snapshot at or before `durable_before` (the archive and the
    /// alert spill hold everything before it) the one a restart starts from, and forgets older
    /// ones. Returns the current snapshot's time: input positions may be committed up to it.
    pub fn advance(&self, durable_before: i64) -> Option<i64> {
        let mut inner = self.lock();
        let files = self.files_per_snapshot;
        let candidate = inner
            .written
            .iter()
            .rev()
            .find(|(at, (n, _))| *n >= files && (**at as i64) <= durable_before)
            .map(|(at, _)| *at);
        if let Some(at) = candidate
            && inner.current.is_none_or(|c| at > c)
        {
            match self.make_current(at) {
                Ok(()) => {
                    inner.current = Some(at);
                    inner.written.retain(|t, _| *t >= at);
                }
                Err(error) => {
                    warn!(message = "The guard state could not be marked current; offsets wait.", error = %format!("{error:#}"))
                }
            }
        }
        inner.current.map(|c| c as i64)
    }

    /// Writes `CURRENT` for `at` and removes older snapshots.
    fn make_current(&self, at: u64) -> anyhow::Result<()> {
        write_atomically(&self.root, "CURRENT", at.to_string().as_bytes())?;
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                let older = snapshot_time(&entry.file_name()).is_some_and(|t| t < at);
                if older && let Err(error) = std::fs::remove_dir_all(entry.path()) {
                    warn!(message = "An old guard snapshot could not be removed.", path = %entry.path().display(), %error);
                }
            }
        }
        Ok(())
    }
}

impl SnapshotStore for StateDir {
    fn target(&self, frontier: u64) -> Option<u64> {
        let mut inner = self.lock();
        inner.frontier = inner.frontier.max(frontier);
        let taken = inner.target.and_then(|t| inner.written.get(&t).copied());
        if let Some(t) = inner.target
            && taken.is_none_or(|(files, _)| files < self.files_per_snapshot)
        {
            return Some(t);
        }
        // The next snapshot: at the first boundary past every frontier reported, once the
        // interval since the last has passed.
        let cost = taken.map_or(Duration::ZERO, |(_, spent)| spent);
        let interval = self.min_interval.max(cost * COST_FACTOR);
        if inner.chosen.is_some_and(|c| c.elapsed() < interval) {
            return None;
        }
        let every = self.every_ms.max(1);
        let next = (inner.frontier / every + 1) * every;
        inner.target = Some(next);
        inner.chosen = Some(Instant::now());
        Some(next)
    }

    fn final_at(&self) -> Option<u64> {
        self.lock().final_at
    }

    fn save(&self, operator: &str, worker: usize, peers: usize, at: u64, bytes: Vec<u8>) {
        let dir = snapshot_dir(&self.root, at);
        let name = format!("{operator}-w{worker:03}-of-{peers:03}.snap");
        let mut framed = Vec::with_capacity(bytes.len() + 24);
        framed.extend_from_slice(MAGIC);
        framed.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&bytes).to_le_bytes());
        framed.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        framed.extend_from_slice(&bytes);
        let started = Instant::now();
        // The snapshot's directory is synced into the state directory when created, so that
        // a snapshot made current later is found after a crash.
        let written = crate::runtime::durable::create_dir_all(&dir)
            .map_err(anyhow::Error::from)
            .and_then(|()| write_atomically(&dir, &name, &framed));
        match written {
            Ok(()) => {
                tracing::debug!(
                    message = "Guard snapshot written.",
                    operator,
                    worker,
                    at,
                    bytes = framed.len()
                );
                let mut inner = self.lock();
                let entry = inner.written.entry(at).or_default();
                entry.0 += 1;
                entry.1 += started.elapsed();
            }
            // Offsets then stay at the previous snapshot, which remains valid; another target
            // is chosen.
            Err(error) => {
                let mut inner = self.lock();
                if inner.target == Some(at) {
                    inner.target = None;
                }
                drop(inner);
                warn!(message = "A guard snapshot could not be written; offsets are committed only up to the previous one.", path = %dir.join(&name).display(), error = %format!("{error:#}"))
            }
        }
    }

    fn restore(&self, operator: &str) -> Option<(u64, Vec<Vec<u8>>)> {
        let (at, files) = self.restored.as_ref()?;
        Some((*at, files.get(operator).cloned().unwrap_or_default()))
    }

    fn restore_failed(&self, operator: &str, error: &str) {
        warn!(
            message = "A guard snapshot does not fit this job; that guard operator starts empty.",
            operator, error
        );
    }
}

/// The directory of the snapshot at `at`.
fn snapshot_dir(root: &Path, at: u64) -> PathBuf {
    root.join(format!("at-{at:020}"))
}

/// The time of a snapshot directory's name (`at-TIME`); `None` for any other name.
fn snapshot_time(name: &std::ffi::OsStr) -> Option<u64> {
    name.to_str()?.strip_prefix("at-")?.parse().ok()
}

/// Reads `CURRENT` and every file of the snapshot it names, by operator.
fn load_current(root: &Path) -> anyhow::Result<Option<Snapshot>> {
    let current = match std::fs::read_to_string(root.join("CURRENT")) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).context("reading CURRENT"),
    };
    let at: u64 = current
        .trim()
        .parse()
        .with_context(|| format!("CURRENT holds {current:?}, not a time"))?;
    let dir = snapshot_dir(root, at);
    let mut files: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let entries = std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut peers_seen = None;
    let mut count = 0;
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".snap") else {
            continue;
        };
        // OPERATOR-wWORKER-of-PEERS
        let mut parts = stem.rsplitn(3, '-');
        let (Some(peers), Some(_of), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Some((operator, _worker)) = rest.rsplit_once("-w") else {
            continue;
        };
        let peers: usize = peers
            .parse()
            .with_context(|| format!("snapshot file {name} has no worker count"))?;
        anyhow::ensure!(
            *peers_seen.get_or_insert(peers) == peers,
            "snapshot files of different worker counts in {}",
            dir.display()
        );
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        files
            .entry(operator.to_owned())
            .or_default()
            .push(unframe(&bytes).with_context(|| format!("checking {}", path.display()))?);
        count += 1;
    }
    let expected = peers_seen.unwrap_or(0) * files.len();
    anyhow::ensure!(
        count > 0 && count == expected,
        "{} holds {count} snapshot files, expected {expected}",
        dir.display()
    );
    Ok(Some((at, files)))
}

/// The bytes of a snapshot file, checked.
fn unframe(file: &[u8]) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(
        file.len() >= 24 && &file[..8] == MAGIC,
        "not a guard snapshot"
    );
    let sum = u64::from_le_bytes(file[8..16].try_into()?);
    let len = u64::from_le_bytes(file[16..24].try_into()?) as usize;
    let bytes = &file[24..];
    anyhow::ensure!(
        bytes.len() == len,
        "truncated: {} of {len} bytes",
        bytes.len()
    );
    anyhow::ensure!(
        xxhash_rust::xxh3::xxh3_64(bytes) == sum,
        "checksum mismatch: the file is damaged"
    );
    Ok(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn open(dir: &Path, resume: bool) -> StateDir {
        StateDir::open(dir, "job", 2, 3_600_000, Duration::ZERO, resume).unwrap()
    }

    #[test]
    fn a_snapshot_becomes_current_once_complete_and_durable_and_is_restored() {
        let tmp = tempfile::tempdir().unwrap();
        let state = open(tmp.path(), false);
        assert_eq!(state.target(1_000), Some(3_600_000));
        state.save("series", 0, 2, 3_600_000, b"zero".to_vec());
        assert_eq!(
            state.advance(i64::MAX),
            None,
            "one of two files: incomplete"
        );
        state.save("series", 1, 2, 3_600_000, b"one".to_vec());
        assert_eq!(state.advance(3_000_000), None, "not durable up to it yet");
        assert_eq!(state.advance(3_600_000), Some(3_600_000));

        state.save("series", 0, 2, 7_200_000, b"later".to_vec());
        assert_eq!(
            state.advance(i64::MAX),
            Some(3_600_000),
            "the later one is incomplete"
        );

        let restarted = open(tmp.path(), true);
        assert_eq!(restarted.restored_at(), Some(3_600_000));
        assert!(
            !tmp.path()
                .join(format!("job/at-{:020}", 7_200_000))
                .exists(),
            "a crashed run's unfinished snapshot is cleared"
        );
        let (at, mut blobs) = restarted.restore("series").unwrap();
        blobs.sort();
        assert_eq!(
            (at, blobs),
            (3_600_000, vec![b"one".to_vec(), b"zero".to_vec()])
        );
        assert_eq!(restarted.advance(0), Some(3_600_000));

        let fresh = open(tmp.path(), false);
        assert_eq!(
            fresh.restored_at(),
            None,
            "not resuming: the state is stale"
        );
    }

    #[test]
    fn older_snapshots_go_once_a_newer_one_is_current() {
        let tmp = tempfile::tempdir().unwrap();
        let state = open(tmp.path(), false);
        for at in [3_600_000, 7_200_000] {
            state.save("series", 0, 2, at, vec![1]);
            state.save("series", 1, 2, at, vec![2]);
            state.advance(i64::MAX);
        }
        let left: Vec<String> = std::fs::read_dir(tmp.path().join("job"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("at-"))
            .collect();
        assert_eq!(left, vec![format!("at-{:020}", 7_200_000)]);
    }

    #[test]
    fn a_damaged_snapshot_is_not_loaded() {
        let tmp = tempfile::tempdir().unwrap();
        let state = open(tmp.path(), false);
        state.save("series", 0, 2, 3_600_000, vec![7; 100]);
        state.save("series", 1, 2, 3_600_000, vec![8; 100]);
        state.advance(i64::MAX);
        let file = tmp
            .path()
            .join(format!("job/at-{:020}/series-w001-of-002.snap", 3_600_000));
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[60] ^= 1;
        std::fs::write(&file, bytes).unwrap();
        let restarted = open(tmp.path(), true);
        assert_eq!(restarted.restored_at(), None);
    }

    #[test]
    fn every_instance_gets_the_same_target_until_all_have_saved_it() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path(), "job", 2, 1_000, Duration::ZERO, false).unwrap();
        assert_eq!(state.target(500), Some(1_000), "the first boundary ahead");
        assert_eq!(
            state.target(2_500),
            Some(1_000),
            "kept, though this one is past it"
        );
        state.save("series", 0, 2, 1_000, vec![1]);
        assert_eq!(state.target(2_600), Some(1_000), "one of two saved");
        state.save("series", 1, 2, 1_000, vec![2]);
        // Then, once ten times the writing time has passed, the first boundary past every
        // frontier reported.
        let deadline = Instant::now() + Duration::from_secs(5);
        let next = loop {
            match state.target(2_700) {
                Some(next) => break next,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                None => panic!("no next target"),
            }
        };
        assert_eq!(next, 3_000);

        let slow = StateDir::open(
            tmp.path(),
            "other",
            1,
            1_000,
            Duration::from_secs(3600),
            false,
        )
        .unwrap();
        assert_eq!(slow.target(0), Some(1_000));
        slow.save("series", 0, 1, 1_000, vec![1]);
        assert_eq!(slow.target(1_500), None, "too soon after the last");
    }
}
