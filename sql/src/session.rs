//! A query session over the archive: read-only, bounded in memory and in time; and [`query`],
//! one statement on a bare context under the same read-only rule.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionContext};
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;

use crate::archive::{Reach, open_archive_in};

/// How much a query may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory for query execution, in bytes; sorts, joins and aggregations spill to disk
    /// before they fail. `None`: unbounded.
    pub memory: Option<usize>,
    /// Wall time per statement; `None`: unbounded.
    pub timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: Some(default_memory_limit()),
            timeout: None,
        }
    }
}

/// The default memory limit: half of the machine's memory (4 GiB where it cannot be read).
pub fn default_memory_limit() -> usize {
    total_memory().map_or(4 << 30, |total| total / 2)
}

/// The machine's memory in bytes, from `/proc/meminfo`.
pub fn total_memory() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Parses a memory size: `512M`, `2G`, `1.5GiB`, `800000000` (bytes) or `25%` (of the
/// machine's memory). Suffixes are binary (K = 1024).
pub fn parse_memory(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let wrong = || {
        format!("memory limit {text:?} is not a size: write e.g. 512M, 2G, 1.5GiB or 25% (of RAM)")
    };
    if let Some(percent) = t.strip_suffix('%') {
        let p: f64 = percent.trim().parse().map_err(|_| wrong())?;
        if !(p > 0.0 && p <= 100.0) {
            return Err(format!(
                "memory limit {text:?}: a share of RAM is more than 0% and at most 100%"
            ));
        }
        let total = total_memory().ok_or_else(|| {
            format!("memory limit {text:?}: the machine's memory cannot be read; give a size")
        })?;
        return Ok((total as f64 * p / 100.0) as usize);
    }
    let upper = t.to_ascii_uppercase();
    let number = upper.trim_end_matches("IB").trim_end_matches('B');
    let (digits, unit) = match number.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&number[..i], c),
        _ => (number, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        'T' => 40,
        _ => return Err(wrong()),
    };
    let value: f64 = digits.trim().parse().map_err(|_| wrong())?;
    if !(value > 0.0 && value.is_finite()) {
        return Err(format!("memory limit {text:?} must be more than zero"));
    }
    Ok((value * (1u64 << shift) as f64) as usize)
}

/// Why a statement gave no result. Each kind has its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement would change something: the archive is written by the pipelines only.
    #[error(
        "vigil-sql is read-only: {0} is refused (the archive is written by the pipelines; query it with SELECT, SHOW, DESCRIBE or EXPLAIN)"
    )]
    Refused(String),
    /// The query needed more memory than the limit, even with spilling.
    #[error(
        "the query needs more memory than --memory-limit allows ({limit}): raise the limit, or narrow the query (filter on date/hour, select fewer columns, aggregate before joining). DataFusion said: {detail}"
    )]
    Memory {
        /// The limit, as people read it.
        limit: String,
        /// What DataFusion said.
        detail: String,
    },
    /// The statement ran longer than the time limit and was stopped.
    #[error(
        "the query ran longer than --timeout {0} and was stopped: raise the limit or narrow the query"
    )]
    Timeout(String),
    /// Any other failure: the SQL does not parse or plan, or execution failed.
    #[error("{0}")]
    Failed(String),
}

impl QueryError {
    /// The process exit code for this failure: 1 failed, 3 refused, 4 over a limit (2 is a
    /// usage error).
    pub fn exit_code(&self) -> u8 {
        match self {
            QueryError::Failed(_) => 1,
            QueryError::Refused(_) => 3,
            QueryError::Memory { .. } | QueryError::Timeout(_) => 4,
        }
    }
}

/// A statement's result: its columns (shown even without rows) and its rows.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The result's columns.
    pub schema: SchemaRef,
    /// The result's rows.
    pub batches: Vec<RecordBatch>,
}

impl Default for Answer {
    fn default() -> Self {
        Self {
            schema: Arc::new(arrow::datatypes::Schema::empty()),
            batches: Vec::new(),
        }
    }
}

impl Answer {
    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// An open archive and the limits its queries run under.
pub struct Session {
    ctx: SessionContext,
    limits: Limits,
}

impl Session {
    /// Opens the archive (a local path, `file://` or `s3://` URL) with every table registered;
    /// `decrypt` opens payloads with `key` only. Queries may also name files and URLs in
    /// `FROM`, as on the command line.
    ///
    /// # Errors
    /// When the archive cannot be read, or the limits cannot be set up.
    pub async fn open(
        archive: &str,
        limits: Limits,
        key: Option<vigil_operators::crypto::PayloadKey>,
    ) -> anyhow::Result<Session> {
        Self::open_with(archive, limits, key, Reach::ArchiveAndFiles).await
    }

    /// [`Session::open`] with what queries may read: the server opens the archive's tables
    /// and nothing else.
    ///
    /// # Errors
    /// When the archive cannot be read, or the limits cannot be set up.
    pub async fn open_with(
        archive: &str,
        limits: Limits,
        key: Option<vigil_operators::crypto::PayloadKey>,
        reach: Reach,
    ) -> anyhow::Result<Session> {
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(bytes) = limits.memory {
            runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(bytes)));
        }
        let runtime = runtime.build_arc()?;
        let ctx = open_archive_in(archive, runtime, reach).await?;
        crate::functions::register(&ctx, key);
        Ok(Session { ctx, limits })
    }

    /// The DataFusion context: tables, functions, configuration.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The DataFusion context, for a server that plans and runs statements itself.
    pub fn into_context(self) -> SessionContext {
        self.ctx
    }

    /// The limits queries run under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Splits `sql` into its statements.
    ///
    /// # Errors
    /// When the text does not parse; the message points at the place.
    pub fn statements(sql: &str) -> Result<VecDeque<Statement>, QueryError> {
        DFParser::parse_sql_with_dialect(sql, &GenericDialect {})
            .map_err(|e| QueryError::Failed(clean(&e)))
    }

    /// Runs every statement of `sql` and returns the last one's result.
    ///
    /// # Errors
    /// The first statement's failure, which stops the rest.
    pub async fn query(&self, sql: &str) -> Result<Answer, QueryError> {
        let mut last = Answer::default();
        for statement in Self::statements(sql)? {
            last = self.execute(statement).await?;
        }
        Ok(last)
    }

    /// Plans and runs one statement within the limits; refuses anything that writes.
    ///
    /// # Errors
    /// See [`QueryError`].
    pub async fn execute(&self, statement: Statement) -> Result<Answer, QueryError> {
        let run = async {
            let plan = self
                .ctx
                .state()
                .statement_to_plan(statement)
                .await
                .map_err(|e| self.classify(&e))?;
            refuse_writes(&plan)?;
            let frame = self
                .ctx
                .execute_logical_plan(plan)
                .await
                .map_err(|e| self.classify(&e))?;
            let schema = Arc::new(frame.schema().as_arrow().clone());
            let batches = frame.collect().await.map_err(|e| self.classify(&e))?;
            Ok(Answer { schema, batches })
        };
        match self.limits.timeout {
            None => run.await,
            // Dropping the query's future stops its tasks.
            Some(limit) => tokio::time::timeout(limit, run)
                .await
                .unwrap_or_else(|_| Err(QueryError::Timeout(format_duration(limit)))),
        }
    }

    fn classify(&self, error: &DataFusionError) -> QueryError {
        match error.find_root() {
            DataFusionError::ResourcesExhausted(detail) => QueryError::Memory {
                limit: self.limits.memory.map_or("unbounded".into(), format_bytes),
                detail: detail.clone(),
            },
            _ => QueryError::Failed(clean(error)),
        }
    }
}

/// Runs one read-only SQL statement and collects its result.
///
/// DDL and DML (`CREATE`, `INSERT`, `COPY`) are refused: the archive is written by the
/// pipelines, and an ad-hoc query should never change it.
pub async fn query(ctx: &SessionContext, sql: &str) -> anyhow::Result<Vec<RecordBatch>> {
    let plan = ctx
        .state()
        .create_logical_plan(sql)
        .await
        .context("planning query")?;
    refuse_writes(&plan)?;
    let frame = ctx
        .execute_logical_plan(plan)
        .await
        .context("planning query")?;
    frame.collect().await.context("running query")
}

/// Refuses a plan that would create, change or write anything, wherever it is in the plan
/// (`EXPLAIN ANALYZE INSERT …` runs the insert).
pub(crate) fn refuse_writes(plan: &LogicalPlan) -> Result<(), QueryError> {
    let mut refused = None;
    let _ = plan.apply(|node| {
        let what = match node {
            LogicalPlan::Ddl(ddl) => Some(words(ddl.name())),
            LogicalPlan::Dml(dml) => Some(format!("{} INTO {}", dml.op, dml.table_name)),
            LogicalPlan::Copy(copy) => Some(format!("COPY … TO {}", copy.output_url)),
            _ => None,
        };
        refused = refused.take().or(what);
        Ok(if refused.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    if let Some(what) = refused {
        return Err(QueryError::Refused(what));
    }
    // DataFusion's own check, in case a kind of write is added that the match above misses.
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .verify_plan(plan)
        .map_err(|e| QueryError::Refused(clean(&e)))
}

/// A DataFusion error as one line for the user, without the wrapping of parser errors.
fn clean(error: &impl std::fmt::Display) -> String {
    let text = error.to_string().replace("Error during planning: ", "");
    match text
        .strip_prefix("SQL error: ParserError(\"")
        .and_then(|t| t.strip_suffix("\")"))
    {
        Some(inner) => format!("syntax error: {inner}"),
        None => text,
    }
}

/// `CreateMemoryTable` as SQL says it: `CREATE MEMORY TABLE`.
fn words(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_uppercase() && !out.is_empty() {
            out.push(' ');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// A byte count as people read it: `1.5 GiB`.
pub fn format_bytes(bytes: usize) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_memory("512M"), Ok(512 << 20));
        assert_eq!(parse_memory("2G"), Ok(2 << 30));
        assert_eq!(parse_memory("2gib"), Ok(2 << 30));
        assert_eq!(parse_memory("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_memory("64KB"), Ok(64 << 10));
        assert_eq!(parse_memory("1000"), Ok(1000));
        for bad in ["", "G", "two G", "-1G", "0", "5X", "0%", "120%"] {
            assert!(parse_memory(bad).is_err(), "{bad:?} is refused");
        }
        if let Some(total) = total_memory() {
            assert_eq!(parse_memory("50%"), Ok(total / 2));
        }
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
    }
}
