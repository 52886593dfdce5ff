//! What a server client may run: an allowlist of statements, over the archive's tables only,
//! and `SET` of its own connection's settings only.
//!
//! Fail closed: a statement is refused unless it is a kind this module knows to be read-only
//! (queries, `EXPLAIN`, `SHOW`, cursors over queries, transactions, client settings). A query
//! may name the archive's tables, the `pg_catalog` and `information_schema` tables and a few
//! generator functions, and nothing else: a path or URL in `FROM` is refused before anything is
//! planned or listed. `SET` of DataFusion's options would change the one context every client
//! shares, so only the settings a PostgreSQL driver sends about its own connection are taken,
//! and they are kept with that connection.

use std::time::Duration;

use async_trait::async_trait;
use datafusion::common::{ParamValues, TableReference};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{DeclareType, Expr, Set, Statement};
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::pgwire;
use pgwire::api::ClientInfo;
use pgwire::api::results::{Response, Tag};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};

use crate::session::refuse_writes;

/// The key under which `datafusion-postgres` keeps a connection's `statement_timeout`.
pub(super) const STATEMENT_TIMEOUT_KEY: &str = "statement_timeout_ms";

/// A statement's time limit: what the client asked for, never more than the server's; the
/// server's when the client asked for none.
pub(super) fn effective_limit(
    asked: Option<Duration>,
    server: Option<Duration>,
) -> Option<Duration> {
    match (asked, server) {
        (Some(asked), Some(server)) => Some(asked.min(server)),
        (asked, server) => asked.or(server),
    }
}

/// The settings a client may `SET` for its own connection; drivers send these on connect.
const CLIENT_SETTINGS: &[&str] = &[
    "application_name",
    "bytea_output",
    "client_encoding",
    "client_min_messages",
    "datestyle",
    "extra_float_digits",
    "intervalstyle",
    "search_path",
    "standard_conforming_strings",
];

/// The table functions a query may call: generators that read nothing.
const TABLE_FUNCTIONS: &[&str] = &["generate_series", "pg_get_keywords", "range"];

/// The server's statement guard, first of the query hooks.
pub(super) struct Policy {
    /// The server's `--timeout`, the most a client's `statement_timeout` may be.
    pub(super) limit: Option<Duration>,
}

/// Why a statement is refused, with the SQLSTATE a PostgreSQL client expects.
fn refuse(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        code.to_owned(),
        message,
    )))
}

/// `read_only_sql_transaction`: the statement would write, or is not a read.
fn read_only(what: &str) -> PgWireError {
    refuse(
        "25006",
        format!(
            "vigil-sql is read-only: {what} is refused (the server runs SELECT, EXPLAIN, SHOW, \
             DESCRIBE, cursors over a SELECT, transactions and SET of client settings)"
        ),
    )
}

/// `insufficient_privilege`: the statement reaches for something the server does not serve.
fn not_served(message: String) -> PgWireError {
    refuse("42501", message)
}

impl Policy {
    /// Whether `statement` may run; a query's plan is checked for writes too (`SELECT … INTO`
    /// plans as a table creation).
    async fn admit(&self, statement: &Statement, ctx: &SessionContext) -> PgWireResult<()> {
        match statement {
            Statement::Query(_) => {
                check_relations(statement, ctx)?;
                let plan = ctx
                    .state()
                    .create_logical_plan(&statement.to_string())
                    .await
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                refuse_writes(&plan).map_err(|e| refuse("25006", e.to_string()))
            }
            Statement::Explain { statement, .. } => Box::pin(self.admit(statement, ctx)).await,
            Statement::Declare { stmts } => {
                for declare in stmts {
                    let (Some(DeclareType::Cursor), Some(query)) =
                        (&declare.declare_type, &declare.for_query)
                    else {
                        return Err(read_only("DECLARE other than a cursor over a query"));
                    };
                    Box::pin(self.admit(&Statement::Query(query.clone()), ctx)).await?;
                }
                Ok(())
            }
            Statement::ExplainTable { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowTables { .. } => check_relations(statement, ctx),
            Statement::Set(set) => self.setting(set).map(|_| ()),
            Statement::Fetch { .. }
            | Statement::Close { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::ShowVariable { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowCatalogs { .. }
            | Statement::ShowSchemas { .. } => Ok(()),
            other => Err(read_only(&statement_kind(other))),
        }
    }

    /// What a `SET` asks for, or why it is refused.
    fn setting(&self, set: &Set) -> PgWireResult<Setting> {
        let (variable, values) = match set {
            // SET TIME ZONE is kept with the connection by the SET/SHOW hook.
            Set::SetTimeZone { local: false, .. } => return Ok(Setting::TimeZone),
            Set::SingleAssignment {
                hivevar: false,
                variable,
                values,
                ..
            } => (variable.to_string().to_ascii_lowercase(), values),
            _ => {
                return Err(not_served(format!(
                    "{set} is not allowed: a client may set statement_timeout, TIME ZONE and {}",
                    CLIENT_SETTINGS.join(", ")
                )));
            }
        };
        let value = values.iter().map(value_text).collect::<Vec<_>>().join(", ");
        match variable.as_str() {
            "statement_timeout" => Ok(Setting::Timeout(parse_timeout(&value)?)),
            "timezone" | "time zone" => Ok(Setting::TimeZone),
            "client_encoding" if !is_utf8(&value) => Err(refuse(
                "22023",
                format!("client_encoding {value:?} is not served: the server speaks UTF8 only"),
            )),
            name if CLIENT_SETTINGS.contains(&name) => Ok(Setting::Client(variable, value)),
            _ => Err(not_served(format!(
                "SET {variable} is not allowed: server settings are the operator's (a client may set \
                 statement_timeout, TIME ZONE and {})",
                CLIENT_SETTINGS.join(", ")
            ))),
        }
    }

    /// Applies an admitted `SET` to the client's connection; `None` leaves it to the next hook.
    async fn apply(
        &self,
        set: &Set,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let done = Some(Ok(Response::Execution(Tag::new("SET"))));
        match self.setting(set) {
            Err(error) => Some(Err(error)),
            Ok(Setting::Timeout(asked)) => {
                // Zero is "no limit of the client's own", which leaves the server's; more
                // than the server's limit is cut to it.
                match effective_limit(asked, self.limit) {
                    Some(limit) => client.metadata_mut().insert(
                        STATEMENT_TIMEOUT_KEY.to_owned(),
                        limit.as_millis().to_string(),
                    ),
                    None => client.metadata_mut().remove(STATEMENT_TIMEOUT_KEY),
                };
                done
            }
            Ok(Setting::Client(name, value)) => {
                client.metadata_mut().insert(name, value);
                done
            }
            Ok(Setting::TimeZone) => match set {
                Set::SetTimeZone { .. } => None,
                // `SET timezone = …` would reach the shared context; as `SET TIME ZONE` the
                // hook keeps it with the connection.
                Set::SingleAssignment { values, .. } => {
                    let value = values.first()?.clone();
                    let as_time_zone = Statement::Set(Set::SetTimeZone {
                        local: false,
                        value,
                    });
                    SetShowHook
                        .handle_simple_query(&as_time_zone, ctx, client)
                        .await
                }
                _ => None,
            },
        }
    }
}

/// An admitted `SET`.
enum Setting {
    /// `statement_timeout`: `None` for 0 (the server's limit applies).
    Timeout(Option<Duration>),
    /// The connection's time zone.
    TimeZone,
    /// One of [`CLIENT_SETTINGS`], kept with the connection.
    Client(String, String),
}

/// Refuses a reference to anything but a registered table or an allowed table function, before
/// anything is planned: a path or URL with `insufficient_privilege` (42501), an unknown name
/// with `undefined_table` (42P01).
fn check_relations(statement: &Statement, ctx: &SessionContext) -> PgWireResult<()> {
    let state = ctx.state();
    let references = state
        .resolve_table_references(&DfStatement::Statement(Box::new(statement.clone())))
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    for reference in references {
        if is_table_function(&reference, ctx) || ctx.table_exist(reference.clone()).unwrap_or(false)
        {
            continue;
        }
        let name = reference.to_string();
        if !is_identifier(reference.table()) {
            return Err(not_served(format!(
                "{name:?} is not a table of the archive: the server reads the archive's tables \
                 only, never files or URLs named in a query (query the archive's tables; SHOW \
                 TABLES lists them)"
            )));
        }
        return Err(refuse(
            "42P01",
            format!("relation {name:?} does not exist: SHOW TABLES lists the archive's tables"),
        ));
    }
    Ok(())
}

fn is_table_function(reference: &TableReference, ctx: &SessionContext) -> bool {
    matches!(reference, TableReference::Bare { .. })
        && TABLE_FUNCTIONS.contains(&reference.table())
        && ctx
            .state()
            .table_functions()
            .contains_key(reference.table())
}

/// Whether `name` reads as a SQL name rather than a path, URL or glob.
fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

/// A `SET` value as text: a string without its quotes, else as written.
fn value_text(expr: &Expr) -> String {
    match expr {
        Expr::Value(value) => value
            .value
            .clone()
            .into_string()
            .unwrap_or_else(|| value.to_string()),
        Expr::Identifier(ident) => ident.value.clone(),
        other => other.to_string(),
    }
}

fn is_utf8(encoding: &str) -> bool {
    matches!(
        encoding
            .to_ascii_lowercase()
            .replace(['-', '_'], "")
            .as_str(),
        "utf8" | "unicode"
    )
}

/// A `statement_timeout` value: milliseconds, or a number with `ms`, `s`, `min` or `h`;
/// 0 for none.
fn parse_timeout(text: &str) -> PgWireResult<Option<Duration>> {
    let t = text.trim().to_ascii_lowercase();
    let (number, unit_ms) = [("ms", 1), ("min", 60_000), ("s", 1_000), ("h", 3_600_000)]
        .iter()
        .find_map(|(suffix, ms)| t.strip_suffix(suffix).map(|n| (n.trim(), *ms)))
        .unwrap_or((t.as_str(), 1));
    let ms = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
        .ok_or_else(|| {
            refuse(
                "22023",
                format!(
                    "invalid value for statement_timeout: {text:?} (give milliseconds, or e.g. 30s, 5min)"
                ),
            )
        })?;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

/// The first words of a statement, to name it in a refusal.
fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    words.join(" ")
}

#[async_trait]
impl QueryHook for Policy {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Statement::Set(set) = statement {
            return self.apply(set, ctx, client).await;
        }
        self.admit(statement, ctx).await.err().map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        // Refused at parse time, so nothing is planned (and no file listed) for it.
        self.admit(statement, ctx).await.err().map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        _params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Statement::Set(set) = statement {
            return self.apply(set, ctx, client).await;
        }
        if let Err(error) = self.admit(statement, ctx).await {
            return Some(Err(error));
        }
        refuse_writes(plan)
            .err()
            .map(|e| Err(refuse("25006", e.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_timeouts_parse_as_postgresql_writes_them() {
        assert_eq!(
            parse_timeout("1500").ok(),
            Some(Some(Duration::from_millis(1500)))
        );
        assert_eq!(
            parse_timeout("30s").ok(),
            Some(Some(Duration::from_secs(30)))
        );
        assert_eq!(
            parse_timeout("5min").ok(),
            Some(Some(Duration::from_secs(300)))
        );
        assert_eq!(
            parse_timeout("250ms").ok(),
            Some(Some(Duration::from_millis(250)))
        );
        assert_eq!(parse_timeout("0").ok(), Some(None));
        for bad in ["", "soon", "-1", "99999999999999999999h"] {
            assert!(parse_timeout(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn paths_and_urls_are_not_identifiers() {
        assert!(is_identifier("readings"));
        for location in [
            "/etc/passwd",
            "file:///x.csv",
            "*.csv",
            "a.parquet",
            "s3://b/k",
            "",
        ] {
            assert!(!is_identifier(location), "{location}");
        }
    }
}
