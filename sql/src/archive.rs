//! Opening an archive: resolve its root, register one listing table per directory.

use std::path::Path as FsPath;
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use arrow::datatypes::DataType;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use tracing::{debug, info, warn};
use url::Url;

use crate::prune::ArchiveTable;

/// The hive partition columns of every archive table, in directory order.
pub const PARTITION_COLUMNS: [&str; 2] = ["date", "hour"];

/// The SQL types of [`PARTITION_COLUMNS`]: `date=2026-01-01` is a `DATE`, `hour=07` the
/// integer 7, so that ranges compare as dates and numbers (`hour = '07'` still matches).
pub const PARTITION_TYPES: [DataType; 2] = [DataType::Date32, DataType::Int32];

/// The file extension of the archive's data files.
const PARQUET_EXTENSION: &str = ".parquet";

/// Opens the archive at `archive` (a local path, a `file://` URL or an `s3://bucket/prefix` URL)
/// and returns a context with one table registered per archive directory, unbounded in memory.
pub async fn open_archive(archive: &str) -> anyhow::Result<SessionContext> {
    open_archive_in(
        archive,
        Arc::new(RuntimeEnv::default()),
        Reach::ArchiveAndFiles,
    )
    .await
}

/// What the queries of a context may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The archive's tables, and any file or URL a query names in `FROM` (`FROM
    /// 'other.parquet'`), as DuckDB does: for the command line, which runs as its user anyway.
    ArchiveAndFiles,
    /// The archive's tables only: for the server, whose clients must not read the files of
    /// the account it runs as.
    ArchiveOnly,
}

/// [`open_archive`] with the runtime (memory pool, spill directory) queries run in, and what
/// they may read.
pub(crate) async fn open_archive_in(
    archive: &str,
    runtime: Arc<RuntimeEnv>,
    reach: Reach,
) -> anyhow::Result<SessionContext> {
    // The information schema makes `SHOW TABLES` and `SHOW COLUMNS FROM t` work in the CLI.
    let config = SessionConfig::new().with_information_schema(true);
    let mut ctx = SessionContext::new_with_config_rt(config, runtime);
    if reach == Reach::ArchiveAndFiles {
        ctx = ctx.enable_url_table();
    }
    let root = resolve_root(&ctx, archive).await?;
    if root.directories.is_empty() {
        warn!(message = "Archive has no table directories.", archive);
    }
    for name in &root.directories {
        if !is_table_name(name) {
            debug!(
                message = "Skipping directory that is not a SQL identifier.",
                archive, name
            );
            continue;
        }
        let url = root
            .url
            .join(&format!("{name}/"))
            .with_context(|| format!("building the URL of table {name} in archive {archive}"))?;
        register_table(&ctx, name, url)
            .await
            .with_context(|| format!("registering table {name} from archive {archive}"))?;
    }
    Ok(ctx)
}

/// Returns the sorted names of the tables registered in the context's default schema.
pub fn table_names(ctx: &SessionContext) -> Vec<String> {
    let state = ctx.state();
    let catalog = &state.config_options().catalog;
    let mut names = ctx
        .catalog(&catalog.default_catalog)
        .and_then(|c| c.schema(&catalog.default_schema))
        .map(|s| s.table_names())
        .unwrap_or_default();
    names.sort();
    names
}

/// An archive root: its URL (ending in `/`) and the names of its immediate directories.
struct Root {
    url: Url,
    directories: Vec<String>,
}

/// Resolves `archive` to a root URL, registering an object store on `ctx` when it is remote.
async fn resolve_root(ctx: &SessionContext, archive: &str) -> anyhow::Result<Root> {
    // Only `scheme://` is treated as a URL, so relative paths and Windows drive letters stay paths.
    if !archive.contains("://") {
        return local_root(archive, FsPath::new(archive));
    }
    let url = Url::parse(archive).with_context(|| format!("parsing archive URL {archive}"))?;
    match url.scheme() {
        "file" => {
            let path = url
                .to_file_path()
                .map_err(|()| anyhow::anyhow!("archive URL {archive} is not a local file path"))?;
            local_root(archive, &path)
        }
        "s3" => s3_root(ctx, archive, url).await,
        scheme => bail!(
            "unsupported archive URL scheme {scheme:?} in {archive}: use a local path, file:// or s3://"
        ),
    }
}

/// Lists the immediate directories of a local archive.
fn local_root(archive: &str, path: &FsPath) -> anyhow::Result<Root> {
    ensure!(
        path.exists(),
        "archive {archive} does not exist: run vigil-guard first or pass --archive"
    );
    ensure!(path.is_dir(), "archive {archive} is not a directory");
    let path =
        std::fs::canonicalize(path).with_context(|| format!("resolving archive path {archive}"))?;
    let url = Url::from_directory_path(&path)
        .map_err(|()| anyhow::anyhow!("archive path {} is not absolute", path.display()))?;
    let mut directories = Vec::new();
    for entry in std::fs::read_dir(&path).with_context(|| format!("listing archive {archive}"))? {
        let entry = entry.with_context(|| format!("listing archive {archive}"))?;
        // `Path::is_dir` follows symlinks, so a table may be linked in from elsewhere.
        if !entry.path().is_dir() {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) => directories.push(name),
            Err(name) => debug!(
                message = "Skipping directory with a non-UTF-8 name.",
                archive,
                ?name
            ),
        }
    }
    directories.sort();
    Ok(Root { url, directories })
}

/// Registers an S3 store for the archive's bucket and lists the prefix's immediate "directories".
async fn s3_root(ctx: &SessionContext, archive: &str, mut url: Url) -> anyhow::Result<Root> {
    let bucket = url
        .host_str()
        .with_context(|| format!("archive URL {archive} has no bucket"))?
        .to_owned();
    // `from_env` honours AWS_ACCESS_KEY_ID, AWS_REGION, AWS_ENDPOINT, AWS_ALLOW_HTTP and friends.
    let store = AmazonS3Builder::from_env()
        .with_bucket_name(&bucket)
        .build()
        .with_context(|| format!("configuring S3 access for bucket {bucket}"))?;
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    ctx.register_object_store(&url, Arc::clone(&store));

    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    let prefix = StorePath::from_url_path(url.path())
        .with_context(|| format!("parsing the prefix of archive URL {archive}"))?;
    let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
    let listing = store
        .list_with_delimiter(prefix.as_ref())
        .await
        .with_context(|| format!("listing archive {archive}"))?;
    // Object stores have no directories, so an absent prefix lists as empty.
    ensure!(
        !listing.common_prefixes.is_empty() || !listing.objects.is_empty(),
        "archive {archive} does not exist: run vigil-guard first or pass --archive"
    );
    let mut directories: Vec<String> = listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_owned))
        .collect();
    directories.sort();
    Ok(Root { url, directories })
}

/// Registers the Parquet files below `url` as table `name`, unless there are none.
async fn register_table(ctx: &SessionContext, name: &str, url: Url) -> anyhow::Result<()> {
    let table_url = ListingTableUrl::try_new(url, None)?;
    let partition_cols = PARTITION_COLUMNS
        .iter()
        .zip(PARTITION_TYPES)
        .map(|(c, t)| ((*c).to_owned(), t))
        .collect();
    let options = ListingOptions::new(Arc::new(ParquetFormat::default().with_enable_pruning(true)))
        .with_file_extension(PARQUET_EXTENSION)
        .with_table_partition_cols(partition_cols);

    let state = ctx.state();
    let store = ctx.runtime_env().object_store(&table_url)?;
    let files = table_url
        .list_all_files(&state, store.as_ref(), PARQUET_EXTENSION)
        .await?
        .try_fold(0_usize, |n, _| async move { Ok(n + 1) })
        .await?;
    if files == 0 {
        warn!(message = "Skipping archive directory without Parquet files.", table = name, url = %table_url);
        return Ok(());
    }

    let schema = options.infer_schema(&state, &table_url).await?;
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(options)
        .with_schema(schema);
    let table = ArchiveTable::new(Arc::new(ListingTable::try_new(config)?));
    ctx.register_table(TableReference::bare(name), Arc::new(table))?;
    info!(message = "Registered archive table.", table = name, files);
    Ok(())
}

/// Whether `name` can be written unquoted in SQL and keep its spelling.
///
/// DataFusion lowercases unquoted identifiers, so an upper-case directory name would need quotes
/// in every query; such directories (and names like `_tmp-1`) are skipped instead.
fn is_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::is_table_name;

    #[test]
    fn table_names_are_plain_lowercase_identifiers() {
        for ok in ["telemetry", "alerts", "_private", "errors_v2"] {
            assert!(is_table_name(ok), "{ok}");
        }
        for bad in [
            "",
            "2026",
            "Telemetry",
            "my-table",
            "a b",
            ".hidden",
            "date=2026-01-01",
        ] {
            assert!(!is_table_name(bad), "{bad}");
        }
    }
}
