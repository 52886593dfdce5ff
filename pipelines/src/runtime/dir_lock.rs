//! One job per directory: the state, spill and local archive directories a job writes are
//! locked for its whole life, so that a second job started on one of them stops at once with
//! a message naming the first, instead of interleaving its snapshots, spill records or files
//! with it.
//!
//! The lock is an advisory lock on `.vigil.lock` inside the directory, which also holds the
//! holder's pid and command line for that message. The operating system releases it when the
//! process ends, however it ends, so a killed job never leaves a directory locked; the file
//! itself stays, and the next holder overwrites it. Archive readers list only directories
//! under the archive root and read only `*.parquet`, so the file is invisible to them.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

/// The lock file's name inside a locked directory.
pub const LOCK_FILE: &str = ".vigil.lock";

/// The exit code of a job that could not start because a directory is in use.
pub const IN_USE_EXIT_CODE: u8 = 2;

/// A directory this process holds; released when dropped, or when the process ends.
#[derive(Debug)]
pub struct DirLock {
    /// The open lock file: the lock lives as long as it is open.
    _file: File,
    /// The directory, canonical.
    dir: PathBuf,
    /// Whether taking the lock created the directory: then a directory the job left empty
    /// (a spill nothing waited in) is removed again when the lock is let go, so that a run
    /// leaves on disk only what it wrote.
    created: bool,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        if !self.created {
            return;
        }
        let only_the_lock = std::fs::read_dir(&self.dir).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .all(|entry| entry.file_name() == LOCK_FILE)
        });
        if only_the_lock {
            let _ = std::fs::remove_file(self.dir.join(LOCK_FILE));
            // Fails, harmlessly, when something was written in the meantime.
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// Another process holds a directory a job needs.
#[derive(Debug, thiserror::Error)]
#[error(
    "the {what} {dir} is in use by another vigil process ({holder}): stop that process, or give this job another directory with {flag}",
    dir = .dir.display(),
    holder = holder(*.pid, .command.as_deref())
)]
pub struct DirectoryInUse {
    /// What the directory is for, e.g. `spill directory`.
    pub what: String,
    /// The directory.
    pub dir: PathBuf,
    /// The flag that chooses another one, e.g. `--spill`.
    pub flag: String,
    /// The holder's process id, when the lock file names it.
    pub pid: Option<u32>,
    /// The holder's command line, when the lock file holds it.
    pub command: Option<String>,
}

/// Who holds a directory, as the error names it.
fn holder(pid: Option<u32>, command: Option<&str>) -> String {
    match (pid, command) {
        (Some(pid), Some(command)) => format!("pid {pid}: {command}"),
        (Some(pid), None) => format!("pid {pid}"),
        (None, _) => format!("its pid is not in {LOCK_FILE}"),
    }
}

impl DirLock {
    /// Creates `dir` if missing and locks it for this process. `what` and `flag` name the
    /// directory and the flag that chooses another in the error a held directory gives.
    pub fn acquire(dir: &Path, what: &str, flag: &str) -> anyhow::Result<DirLock> {
        let created = !dir.exists();
        crate::runtime::durable::create_dir_all(dir).with_context(|| {
            format!(
                "creating the {what} {}: choose a writable one with {flag}",
                dir.display()
            )
        })?;
        let dir = std::fs::canonicalize(dir)
            .with_context(|| format!("opening the {what} {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let (pid, command) = read_holder(&path);
                return Err(DirectoryInUse {
                    what: what.to_owned(),
                    dir,
                    flag: flag.to_owned(),
                    pid,
                    command,
                }
                .into());
            }
            Err(TryLockError::Error(error)) => {
                return Err(error).with_context(|| format!("locking {}", path.display()));
            }
        }
        // Written only while holding the lock, so the file names its current holder.
        let holder = format!("{}\n{}\n", std::process::id(), command_line());
        file.set_len(0)
            .and_then(|()| file.write_all(holder.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(DirLock {
            _file: file,
            dir,
            created,
        })
    }

    /// The locked directory, canonical.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Locks every directory of `dirs` (directory, what it is for, the flag that chooses it); a
/// directory given twice is locked once. Fails at the first that is in use.
pub fn lock_all(dirs: &[(PathBuf, &str, &str)]) -> anyhow::Result<Vec<DirLock>> {
    let mut locks: Vec<DirLock> = Vec::new();
    for (dir, what, flag) in dirs {
        let canonical = std::fs::canonicalize(dir).ok();
        if canonical.is_some_and(|c| locks.iter().any(|l| l.dir == c)) {
            continue;
        }
        locks.push(DirLock::acquire(dir, what, flag)?);
    }
    Ok(locks)
}

/// The exit code for a job that failed with `error`: [`IN_USE_EXIT_CODE`] when a directory
/// it needs is held by another process, 1 otherwise.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    let in_use = error
        .chain()
        .any(|cause| cause.downcast_ref::<DirectoryInUse>().is_some());
    if in_use { IN_USE_EXIT_CODE } else { 1 }
}

/// The pid and command line a lock file holds. The holder writes them just after taking the
/// lock, so a reader that comes in between waits a moment for them.
fn read_holder(path: &Path) -> (Option<u32>, Option<String>) {
    for _ in 0..10 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut lines = text.lines();
        if let Some(pid) = lines.next().and_then(|l| l.trim().parse().ok()) {
            let command = lines.next().map(str::to_owned).filter(|c| !c.is_empty());
            return (Some(pid), command);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (None, None)
}

/// This process's command line, with passwords in URLs hidden: the lock file is readable by
/// whoever can read the directory.
fn command_line() -> String {
    std::env::args_os()
        .map(|arg| crate::runtime::secrets::redact(&arg.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("spill");
        let first = DirLock::acquire(&dir, "spill directory", "--spill")?;
        let error = DirLock::acquire(&dir, "spill directory", "--spill")
            .err()
            .context("a held directory must be refused")?;
        assert_eq!(exit_code(&error), IN_USE_EXIT_CODE);
        let text = error.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("--spill"), "{text}");
        drop(first);
        // Released with its holder: the directory can be taken again.
        let again = DirLock::acquire(&dir, "spill directory", "--spill")?;
        assert_eq!(again.dir(), std::fs::canonicalize(&dir)?);
        Ok(())
    }

    #[test]
    fn the_same_directory_given_twice_is_locked_once() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("both");
        let locks = lock_all(&[
            (dir.clone(), "state directory", "--state"),
            (dir.join("."), "spill directory", "--spill"),
        ])?;
        assert_eq!(locks.len(), 1);
        Ok(())
    }

    #[test]
    fn a_directory_the_lock_created_and_nothing_used_is_removed_again() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let unused = tmp.path().join("spill");
        drop(DirLock::acquire(&unused, "spill directory", "--spill")?);
        assert!(!unused.exists(), "an unused spill directory is left behind");
        let used = tmp.path().join("archive");
        let lock = DirLock::acquire(&used, "archive directory", "--archive")?;
        std::fs::write(used.join("data"), b"kept")?;
        drop(lock);
        assert!(used.join("data").is_file());
        // A directory that was there before is left as it was found, lock file and all.
        let existing = tmp.path().join("state");
        std::fs::create_dir(&existing)?;
        drop(DirLock::acquire(&existing, "state directory", "--state")?);
        assert!(existing.is_dir());
        Ok(())
    }
}
