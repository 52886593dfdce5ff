//! Local files that survive a power cut: written whole or not at all, and synced together with
//! the directory entries that name them before anything (a committed offset, a snapshot made
//! current, a drained mark) relies on them.
//!
//! A synced file is not enough on its own: until its directory is synced too, a crash may lose
//! the entry that names it, and a new directory needs its parent synced for the same reason.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// How files and directories are made durable. Jobs use [`Fsync`]; tests substitute a
/// recorder to check that a path is synced before it is reported durable.
pub trait Syncer: Send + Sync {
    /// Makes a written file's contents durable.
    fn file(&self, file: &File, path: &Path) -> std::io::Result<()>;
    /// Makes the entries of a directory (files created, renamed or removed in it) durable.
    fn dir(&self, dir: &Path) -> std::io::Result<()>;
}

/// The real thing: `fsync` of the file, and of the directory.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fsync;

impl Syncer for Fsync {
    fn file(&self, file: &File, _path: &Path) -> std::io::Result<()> {
        file.sync_all()
    }

    fn dir(&self, dir: &Path) -> std::io::Result<()> {
        sync_dir(dir)
    }
}

/// Syncs a directory, so that the entries created, renamed or removed in it survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory a relative or absolute path lies in (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Creates `dir` and any missing parents, syncing the parent of each directory created, so
/// that the new directories themselves survive a crash and not only what is written inside.
pub fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    create_dir_all_with(dir, &Fsync)
}

/// [`create_dir_all`] through `syncer`.
pub fn create_dir_all_with(dir: &Path, syncer: &dyn Syncer) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.as_os_str().is_empty() && !at.exists() {
        missing.push(at);
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    // Outermost first: each new entry is durable before the one inside it.
    for created in missing.iter().rev() {
        syncer.dir(parent_of(created))?;
    }
    Ok(())
}

/// Writes `name` in `dir` so that it is either wholly there or not at all: a temporary file,
/// synced, renamed over the old one, and the directory synced. One writer per name at a time.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    sync_dir(dir).with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

/// [`write_atomically`] for a file given by its path.
pub fn replace_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} is not a file name", path.display()))?;
    write_atomically(parent_of(path), name, bytes)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records the directories synced.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<std::path::PathBuf>>);

    impl Syncer for Recorder {
        fn file(&self, _file: &File, _path: &Path) -> std::io::Result<()> {
            Ok(())
        }

        fn dir(&self, dir: &Path) -> std::io::Result<()> {
            self.0
                .lock()
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .push(dir.into());
            Ok(())
        }
    }

    #[test]
    fn each_new_directory_is_made_durable_in_its_parent() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let recorder = Recorder::default();
        let deep = tmp.path().join("a/b/c");
        create_dir_all_with(&deep, &recorder)?;
        assert!(deep.is_dir());
        let synced = recorder
            .0
            .lock()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .clone();
        assert_eq!(
            synced,
            [
                tmp.path().into(),
                tmp.path().join("a"),
                tmp.path().join("a/b")
            ]
        );
        // Nothing new, nothing synced.
        create_dir_all_with(&deep, &recorder)?;
        assert_eq!(
            recorder.0.lock().map_err(|e| anyhow::anyhow!("{e}"))?.len(),
            3
        );
        Ok(())
    }

    #[test]
    fn a_replaced_file_is_whole_and_leaves_no_temporary_file() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("mark");
        replace_file(&path, b"1")?;
        replace_file(&path, b"22")?;
        assert_eq!(std::fs::read(&path)?, b"22");
        let names: Vec<_> = std::fs::read_dir(tmp.path())?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        assert_eq!(names, ["mark"]);
        Ok(())
    }
}
