//! Where the archive lives: a local directory or an object-store URL. A local archive is
//! written here rather than through object_store's local store, which does not sync.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::runtime::durable::{Fsync, Syncer};

/// Where the archive lives: a local directory or an object-store URL.
#[derive(Clone, Debug)]
pub struct ArchiveLocation {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    display: String,
    /// For a local archive: how files are written and synced.
    local: Option<Arc<LocalArchive>>,
}

/// The local directory an archive location names, or `None` for an object-store URL.
pub fn local_dir(location: &str) -> Option<std::path::PathBuf> {
    if location.starts_with("s3://") {
        return None;
    }
    Some(location.strip_prefix("file://").unwrap_or(location).into())
}

/// A local archive's root, and the directories already known to be durable in it.
struct LocalArchive {
    root: std::path::PathBuf,
    syncer: Arc<dyn Syncer>,
    /// Partition directories created (or found) and synced into their parents by this
    /// process: each needs that only once.
    durable_dirs: std::sync::Mutex<std::collections::HashSet<std::path::PathBuf>>,
}

impl std::fmt::Debug for LocalArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalArchive")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Numbers temporary file names, so that two writes of one file never share one.
static TEMPORARY: AtomicU64 = AtomicU64::new(0);

impl LocalArchive {
    /// Writes `relative` under the root durably: a temporary file (hidden, and not named
    /// `*.parquet`, so readers never see it), synced, renamed into place, the directory synced.
    fn write(&self, relative: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.root.join(relative);
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(std::io::Error::other(format!(
                "{relative} is not a file path"
            )));
        };
        self.ensure_dir(dir)?;
        let tmp = dir.join(format!(
            ".{}.{}-{}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            TEMPORARY.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::File::create(&tmp).and_then(|mut file| {
            std::io::Write::write_all(&mut file, bytes)?;
            self.syncer.file(&file, &tmp)
        });
        let renamed = written.and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(error) = renamed {
            let _ = std::fs::remove_file(&tmp);
            return Err(error);
        }
        self.syncer.dir(dir)
    }

    /// Creates a partition directory if missing, with each new directory synced into its
    /// parent, once per process.
    fn ensure_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let mut known = self.durable_dirs.lock().unwrap_or_else(|p| p.into_inner());
        if known.contains(dir) {
            return Ok(());
        }
        crate::runtime::durable::create_dir_all_with(dir, self.syncer.as_ref())?;
        known.insert(dir.to_path_buf());
        Ok(())
    }
}

impl ArchiveLocation {
    /// Opens `s3://bucket/prefix` (credentials, region and endpoint from the standard `AWS_*`
    /// environment variables), `file:///path`, or a local path, which is created if missing.
    pub fn parse(location: &str) -> anyhow::Result<Self> {
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            anyhow::ensure!(
                !bucket.is_empty(),
                "archive URL {location} has no bucket: use s3://BUCKET/PREFIX"
            );
            let store = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .with_context(|| {
                    format!("configuring S3 for {location}: check the AWS_* environment variables")
                })?;
            return Ok(Self {
                store: Arc::new(store),
                prefix: ObjectPath::from(prefix.trim_matches('/')),
                display: location.to_owned(),
                local: None,
            });
        }
        let path = location.strip_prefix("file://").unwrap_or(location);
        Self::local(std::path::Path::new(path), Arc::new(Fsync))
    }

    /// A local archive at `path` (created if missing), its files made durable by `syncer`.
    pub(super) fn local(path: &std::path::Path, syncer: Arc<dyn Syncer>) -> anyhow::Result<Self> {
        crate::runtime::durable::create_dir_all_with(path, syncer.as_ref())
            .with_context(|| format!("creating the archive directory {}", path.display()))?;
        let root = std::fs::canonicalize(path)
            .with_context(|| format!("opening the archive directory {}", path.display()))?;
        let store = LocalFileSystem::new_with_prefix(&root)
            .with_context(|| format!("opening the archive directory {}", root.display()))?;
        Ok(Self {
            store: Arc::new(store),
            prefix: ObjectPath::default(),
            display: root.display().to_string(),
            local: Some(Arc::new(LocalArchive {
                root,
                syncer,
                durable_dirs: Default::default(),
            })),
        })
    }

    /// Writes a file given relative to the archive root, atomically and durably.
    pub(super) async fn put(&self, relative: &str, bytes: Bytes) -> anyhow::Result<()> {
        match &self.local {
            Some(local) => {
                let (local, relative) = (local.clone(), relative.to_owned());
                tokio::task::spawn_blocking(move || local.write(&relative, &bytes))
                    .await
                    .context("the archive write task failed")??;
            }
            None => {
                self.store
                    .put(&self.path(relative), PutPayload::from(bytes))
                    .await?;
            }
        }
        Ok(())
    }

    /// The object store the archive is on.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The full object path of a file given relative to the archive root.
    pub fn path(&self, relative: &str) -> ObjectPath {
        if self.prefix.as_ref().is_empty() {
            ObjectPath::from(relative)
        } else {
            ObjectPath::from(format!("{}/{relative}", self.prefix))
        }
    }
}

impl std::fmt::Display for ArchiveLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn only_local_locations_name_a_directory() {
        assert_eq!(
            local_dir("./vigil-data"),
            Some(PathBuf::from("./vigil-data"))
        );
        assert_eq!(local_dir("file:///srv/a"), Some(PathBuf::from("/srv/a")));
        assert_eq!(local_dir("s3://bucket/prefix"), None);
    }
}
