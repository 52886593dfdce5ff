//! Server mode: the archive over the PostgreSQL wire protocol, read-only, so `psql` and any
//! PostgreSQL driver can query it.
//!
//! The protocol, the `pg_catalog` tables that clients inspect, `SET`/`SHOW`, transactions and
//! cursors come from `datafusion-postgres`; this module adds what makes the server safe to
//! leave running: every statement goes through the same write guard as the command line,
//! an optional password (SCRAM-SHA-256, as PostgreSQL asks by default), loopback unless told
//! otherwise, and `--timeout` as each connection's `statement_timeout` and its ceiling, from
//! planning to the last row sent, over both the simple and the extended protocol.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire;
use futures::{Sink, StreamExt};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::Portal;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::Response;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::session::{QueryError, Session, refuse_writes};

/// The address `--serve` listens on when none is given: loopback, next to PostgreSQL's 5432.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";

/// The key under which `datafusion-postgres` keeps a connection's `statement_timeout`.
const STATEMENT_TIMEOUT_KEY: &str = "statement_timeout_ms";

/// PBKDF2 rounds of the SCRAM verifier, PostgreSQL's default.
const SCRAM_ITERATIONS: usize = 4096;

/// How the server listens and whom it lets in.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Where to listen; port 0 picks a free port (the log line says which).
    pub listen: SocketAddr,
    /// The password every user name must give; `None` lets anyone who can connect in, which
    /// is allowed on loopback only.
    pub password: Option<String>,
}

/// Binds the listening socket. Refuses a non-loopback address without a password.
///
/// # Errors
/// When the address is taken or not allowed.
pub async fn bind(options: &ServerOptions) -> anyhow::Result<TcpListener> {
    ensure!(
        options.listen.ip().is_loopback() || options.password.is_some(),
        "listening on {} without a password would let anyone on the network read the archive: \
         set VIGIL_SQL_PASSWORD (or --password), or listen on 127.0.0.1",
        options.listen
    );
    TcpListener::bind(options.listen).await.with_context(|| {
        format!(
            "listening on {}: is another server on that port? choose another with --serve HOST:PORT",
            options.listen
        )
    })
}

/// Serves `session`'s archive on `listener` until the process ends.
///
/// # Errors
/// When the PostgreSQL catalogue cannot be set up.
pub async fn serve(
    session: Session,
    listener: TcpListener,
    options: &ServerOptions,
) -> anyhow::Result<()> {
    let timeout = session.limits().timeout;
    let ctx = Arc::new(session.into_context());
    // The pg_catalog tables psql's `\d` and drivers' metadata calls read.
    setup_pg_catalog(&ctx, "datafusion", EmptyContextProvider)
        .map_err(|e| anyhow::anyhow!("setting up the PostgreSQL catalogue: {e}"))?;
    let handlers = Arc::new(Handlers::new(ctx, options.password.as_deref(), timeout));
    let address = listener
        .local_addr()
        .context("reading the listening address")?;
    info!(
        message = "Serving the archive over the PostgreSQL protocol.",
        %address,
        password = options.password.is_some(),
    );
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(message = "Accepting a connection failed.", %error);
                continue;
            }
        };
        let handlers = handlers.clone();
        tokio::spawn(async move {
            if let Err(error) = pgwire::tokio::process_socket(socket, None, handlers).await {
                warn!(message = "Connection ended with an error.", %peer, %error);
            }
        });
    }
}

/// The protocol handlers of one server: queries through `datafusion-postgres` behind the
/// write guard, and the startup (authentication) of each connection.
struct Handlers {
    service: Arc<Bounded>,
    connections: Arc<ConnectionManager>,
    /// The SCRAM verifier of the password, computed once: (salt, salted password).
    verifier: Option<Arc<Verifier>>,
    timeout: Option<Duration>,
}

impl Handlers {
    fn new(ctx: Arc<SessionContext>, password: Option<&str>, timeout: Option<Duration>) -> Self {
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(Guard),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        let verifier = password.map(|password| {
            let salt = rand::random::<[u8; 16]>().to_vec();
            let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
            Arc::new(Verifier { salt, salted })
        });
        Self {
            service: Arc::new(Bounded {
                inner: Arc::new(DfSessionService::new_with_hooks(ctx, hooks)),
                limit: timeout,
            }),
            connections: Arc::new(ConnectionManager::new()),
            verifier,
            timeout,
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        // The SASL exchange keeps state per connection, so each connection gets its own.
        let auth = match &self.verifier {
            None => Auth::Open(Open {
                connections: self.connections.clone(),
            }),
            Some(verifier) => {
                let mut scram = ScramAuth::new(verifier.clone());
                scram.set_iterations(SCRAM_ITERATIONS);
                let mut parameters = DefaultServerParameterProvider::default();
                parameters.default_transaction_read_only = true;
                Auth::Password(Box::new(
                    SASLAuthStartupHandler::new(Arc::new(parameters))
                        .with_scram(scram)
                        .with_connection_manager(self.connections.clone()),
                ))
            }
        };
        Arc::new(Startup {
            auth,
            timeout: self.timeout,
        })
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.connections.clone()))
    }
}

/// The password, as the SCRAM exchange needs it.
#[derive(Debug)]
struct Verifier {
    salt: Vec<u8>,
    salted: Vec<u8>,
}

#[async_trait]
impl AuthSource for Verifier {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        Ok(Password::new(Some(self.salt.clone()), self.salted.clone()))
    }
}

/// Startup without a password (loopback only).
struct Open {
    connections: Arc<ConnectionManager>,
}

impl NoopStartupHandler for Open {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}

enum Auth {
    Open(Open),
    Password(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

/// A connection's startup: authentication, then the server's `--timeout` as the
/// connection's `statement_timeout`.
struct Startup {
    auth: Auth,
    timeout: Option<Duration>,
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(limit) = self.timeout {
            client
                .metadata_mut()
                .entry(STATEMENT_TIMEOUT_KEY.to_owned())
                .or_insert_with(|| limit.as_millis().to_string());
        }
        match &self.auth {
            Auth::Open(open) => open.on_startup(client, message).await,
            Auth::Password(sasl) => sasl.on_startup(client, message).await,
        }
    }
}

/// Every statement's guard: refuses any whose plan would create, change or write anything,
/// with PostgreSQL's `read_only_sql_transaction` code (25006).
struct Guard;

impl Guard {
    async fn plan(statement: &Statement, ctx: &SessionContext) -> Option<LogicalPlan> {
        // Planned from its text as the default path runs it (`SessionContext::sql`), so that
        // DataFusion's own statements (`COPY … TO`, `CREATE EXTERNAL TABLE`) are seen too.
        // Statements DataFusion cannot plan (SET, cursors, …) are left to the other hooks.
        ctx.state()
            .create_logical_plan(&statement.to_string())
            .await
            .ok()
    }

    fn verdict(plan: &LogicalPlan) -> Option<PgWireResult<Response>> {
        refuse_writes(plan).err().map(|error| Err(refusal(&error)))
    }
}

/// The query handlers of `datafusion-postgres`, with each statement bounded in time from
/// planning to its last row, over both protocols: by the connection's `statement_timeout`,
/// never more than the server's `--timeout`. A statement over the limit ends with
/// PostgreSQL's `query_canceled` (57014), and dropping its rows stops its execution.
struct Bounded {
    inner: Arc<DfSessionService>,
    limit: Option<Duration>,
}

impl Bounded {
    fn limit_of(&self, metadata: &HashMap<String, String>) -> Option<Duration> {
        let asked = metadata
            .get(STATEMENT_TIMEOUT_KEY)
            .and_then(|ms| ms.parse().ok())
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        match (asked, self.limit) {
            (Some(asked), Some(limit)) => Some(asked.min(limit)),
            (asked, limit) => asked.or(limit),
        }
    }
}

/// `response` with its rows cut off at `deadline`.
fn bound(response: Response, deadline: Instant, limit: Duration) -> Response {
    let Response::Query(mut query) = response else {
        return response;
    };
    let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
    query.data_rows = Box::pin(futures::stream::unfold(
        Some(rows),
        move |rows| async move {
            let mut rows = rows?;
            match tokio::time::timeout_at(deadline, rows.next()).await {
                Err(_) => Some((Err(timed_out(limit)), None)),
                Ok(None) => None,
                Ok(Some(row)) => Some((row, Some(rows))),
            }
        },
    ));
    Response::Query(query)
}

#[async_trait]
impl SimpleQueryHandler for Bounded {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(limit) = self.limit_of(client.metadata()) else {
            return SimpleQueryHandler::do_query(self.inner.as_ref(), client, query).await;
        };
        let deadline = Instant::now() + limit;
        let responses = tokio::time::timeout_at(
            deadline,
            SimpleQueryHandler::do_query(self.inner.as_ref(), client, query),
        )
        .await
        .map_err(|_| timed_out(limit))??;
        Ok(responses
            .into_iter()
            .map(|r| bound(r, deadline, limit))
            .collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Bounded {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = <DfSessionService as ExtendedQueryHandler>::QueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.inner.query_parser()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(limit) = self.limit_of(client.metadata()) else {
            return ExtendedQueryHandler::do_query(self.inner.as_ref(), client, portal, max_rows)
                .await;
        };
        let deadline = Instant::now() + limit;
        let response = tokio::time::timeout_at(
            deadline,
            ExtendedQueryHandler::do_query(self.inner.as_ref(), client, portal, max_rows),
        )
        .await
        .map_err(|_| timed_out(limit))??;
        Ok(bound(response, deadline, limit))
    }
}

fn refusal(error: &QueryError) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        "25006".to_owned(),
        error.to_string(),
    )))
}

fn timed_out(limit: Duration) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        "57014".to_owned(),
        format!(
            "canceling statement due to statement timeout: it ran longer than {} \
             (the server's --timeout, or SET statement_timeout); narrow the query or raise the limit",
            humantime::format_duration(limit)
        ),
    )))
}

#[async_trait]
impl QueryHook for Guard {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::verdict(&Self::plan(statement, ctx).await?)
    }

    async fn handle_extended_parse_query(
        &self,
        _statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        None
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::verdict(plan)
    }
}
