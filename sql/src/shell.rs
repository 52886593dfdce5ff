//! The statement-by-statement reader behind the interactive shell and piped scripts: lines
//! gather into statements ending with `;`, and backslash (or dot) commands list tables, show
//! columns, switch the timer and the output format, and draw a query as a chart.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{BooleanArray, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};

use crate::chart::{ChartFile, ChartSpec};
use crate::cli::{Failure, Output, run_text};
use crate::session::{QueryError, Session};
use crate::{OutputFormat, table_names, write_result};

/// What the reader wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Another line.
    Next,
    /// Nothing more: the user asked to quit.
    Quit,
}

/// The shell's commands, for `\?`.
pub const HELP: &str = "\
Statements end with `;` and may span lines. Commands:
  \\d  or .tables          list the tables
  \\d NAME or .schema NAME  the columns of a table
  \\timing or .timer on|off  show how long each statement took
  \\format FORMAT or .mode FORMAT  table, csv or json
  \\chart FILE.svg SQL      draw a one-line query's (ts, value[, series]) as a chart
                          (FILE.html: the same in a page)
  \\? or .help             this text
  \\q or .quit             leave (so does Ctrl-D)
";

/// A shell over one session: the statement being typed, the format and the timer.
pub struct Shell<'s> {
    session: &'s Session,
    format: OutputFormat,
    timer: bool,
    pending: String,
}

impl<'s> Shell<'s> {
    /// A shell writing results in `format`.
    pub fn new(session: &'s Session, format: OutputFormat) -> Self {
        Self {
            session,
            format,
            timer: false,
            pending: String::new(),
        }
    }

    /// The prompt for the next line: a continuation while a statement is open.
    pub fn prompt(&self) -> &'static str {
        if self.pending.trim().is_empty() {
            "vigil> "
        } else {
            "   ..> "
        }
    }

    /// Forgets the statement being typed (Ctrl-C at the prompt).
    pub fn discard(&mut self) {
        self.pending.clear();
    }

    /// Takes one line: a command, or part of a statement, run once it ends with `;`.
    ///
    /// # Errors
    /// A failing statement or command; the shell stays usable.
    pub async fn line(&mut self, line: &str, out: &mut Output<'_>) -> Result<Step, Failure> {
        let trimmed = line.trim();
        if self.pending.trim().is_empty()
            && let Some(step) = self.command(trimmed, out).await?
        {
            return Ok(step);
        }
        self.pending.push_str(line);
        self.pending.push('\n');
        if trimmed.ends_with(';') {
            return self.flush(out).await.map(|()| Step::Next);
        }
        Ok(Step::Next)
    }

    /// Runs what is left at the end of the input, even without its `;`.
    ///
    /// # Errors
    /// A failing statement.
    pub async fn flush(&mut self, out: &mut Output<'_>) -> Result<(), Failure> {
        let sql = std::mem::take(&mut self.pending);
        if sql.trim().is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let result = run_text(self.session, &sql, self.format, out).await;
        if self.timer {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let _ = writeln!(out.writer(), "Time: {ms:.3} ms");
        }
        result
    }

    /// A backslash or dot command, if `line` is one.
    async fn command(&mut self, line: &str, out: &mut Output<'_>) -> Result<Option<Step>, Failure> {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else {
            return Ok(None);
        };
        let argument = words.next();
        let usage = |message: String| Failure::Query(QueryError::Failed(message));
        match first.trim_end_matches(';') {
            "\\q" | "\\quit" | ".quit" | ".exit" | "exit" | "quit" => Ok(Some(Step::Quit)),
            "\\?" | "\\h" | ".help" => {
                let _ = write!(out.writer(), "{HELP}");
                Ok(Some(Step::Next))
            }
            "\\d" | ".tables" | ".schema" => {
                let batch = match argument {
                    None => self.tables().await?,
                    Some(name) => self.columns(name.trim_end_matches(';')).await?,
                };
                let shown = if self.format == OutputFormat::Parquet {
                    OutputFormat::Table
                } else {
                    self.format
                };
                write_result(&batch.schema(), &[batch], shown, out.writer())
                    .map_err(Failure::Usage)?;
                Ok(Some(Step::Next))
            }
            "\\timing" | ".timer" => {
                self.timer = match argument {
                    Some("on") => true,
                    Some("off") => false,
                    None => !self.timer,
                    Some(other) => {
                        return Err(usage(format!("timer {other:?}: say on or off")));
                    }
                };
                let state = if self.timer { "on" } else { "off" };
                let _ = writeln!(out.writer(), "Timing is {state}.");
                Ok(Some(Step::Next))
            }
            "\\format" | "\\pset" | ".mode" => {
                self.format = match argument {
                    Some("table") => OutputFormat::Table,
                    Some("csv") => OutputFormat::Csv,
                    Some("json") => OutputFormat::Json,
                    _ => return Err(usage("formats in the shell: table, csv or json".into())),
                };
                Ok(Some(Step::Next))
            }
            "\\chart" => {
                let rest = line.strip_prefix(first).unwrap_or_default();
                self.chart(rest, out).await.map(Some)
            }
            word if word.starts_with('\\') || (word.starts_with('.') && word.len() > 1) => Err(
                usage(format!("unknown command {word}: \\? lists the commands")),
            ),
            _ => Ok(None),
        }
    }

    /// `\chart FILE SQL`: the query's result drawn to FILE, and a line saying so.
    async fn chart(&self, rest: &str, out: &mut Output<'_>) -> Result<Step, Failure> {
        let rest = rest.trim().trim_end_matches(';').trim_end();
        let (file, sql) = rest
            .split_once(char::is_whitespace)
            .map_or((rest, ""), |(file, sql)| (file, sql.trim()));
        if file.is_empty() || sql.is_empty() {
            return Err(Failure::Query(QueryError::Failed(
                "\\chart FILE.svg SQL (or FILE.html), the query on the same line, e.g. \\chart \
                 t.svg SELECT ts, value FROM telemetry WHERE name = 'temp'"
                    .into(),
            )));
        }
        let file = ChartFile::new(file).map_err(|e| Failure::Query(QueryError::Failed(e)))?;
        let spec = ChartSpec {
            sql,
            alerts: None,
            title: None,
            file: &file,
        };
        let drawn = crate::chart::draw(self.session, &spec).await?;
        let _ = writeln!(out.writer(), "{drawn}");
        Ok(Step::Next)
    }

    /// The tables and how many columns each has.
    async fn tables(&self) -> Result<RecordBatch, Failure> {
        let ctx = self.session.context();
        let names = table_names(ctx);
        let mut columns = Vec::with_capacity(names.len());
        for name in &names {
            columns.push(self.schema_of(name).await?.fields().len() as u64);
        }
        let schema = Schema::new(vec![
            Field::new("table", DataType::Utf8, false),
            Field::new("columns", DataType::UInt64, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(UInt64Array::from(columns)),
            ],
        )
        .map_err(|e| Failure::Usage(e.into()))
    }

    /// The columns of one table.
    async fn columns(&self, table: &str) -> Result<RecordBatch, Failure> {
        let schema = self.schema_of(table).await?;
        let fields = schema.fields();
        let batch_schema = Schema::new(vec![
            Field::new("column", DataType::Utf8, false),
            Field::new("type", DataType::Utf8, false),
            Field::new("nullable", DataType::Boolean, false),
        ]);
        RecordBatch::try_new(
            Arc::new(batch_schema),
            vec![
                Arc::new(StringArray::from_iter_values(
                    fields.iter().map(|f| f.name().clone()),
                )),
                Arc::new(StringArray::from_iter_values(
                    fields.iter().map(|f| f.data_type().to_string()),
                )),
                Arc::new(BooleanArray::from(
                    fields.iter().map(|f| f.is_nullable()).collect::<Vec<_>>(),
                )),
            ],
        )
        .map_err(|e| Failure::Usage(e.into()))
    }

    async fn schema_of(&self, table: &str) -> Result<arrow::datatypes::SchemaRef, Failure> {
        let ctx = self.session.context();
        let names = table_names(ctx);
        if !names.iter().any(|n| n == table) {
            return Err(Failure::Query(QueryError::Failed(format!(
                "no table {table:?} in the archive; its tables: {}",
                names.join(", ")
            ))));
        }
        let provider = ctx
            .table_provider(table)
            .await
            .map_err(|e| Failure::Query(QueryError::Failed(e.to_string())))?;
        Ok(provider.schema())
    }
}
