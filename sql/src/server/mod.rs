//! Server mode: the archive over the PostgreSQL wire protocol, read-only, so `psql` and any
//! PostgreSQL driver can query it.
//!
//! The protocol, the `pg_catalog` tables that clients inspect, `SET`/`SHOW`, transactions and
//! cursors come from `datafusion-postgres`; this module adds what makes the server safe to
//! leave running: every statement passes the [`policy`] first (an allowlist of read-only
//! statements over the archive's tables only, `SET` of client settings only), an optional
//! password (SCRAM-SHA-256, as PostgreSQL asks by default), TLS when given a certificate,
//! loopback unless told otherwise, a connection limit, and `--timeout` as each connection's
//! `statement_timeout` and its ceiling, from planning to the last row sent, over both the
//! simple and the extended protocol.

mod metrics;
mod policy;
mod tls;

pub use metrics::{Outcome, SqlMetrics};
pub use tls::TlsFiles;

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use async_trait::async_trait;
use datafusion::prelude::SessionContext;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::QueryHook;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
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
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::session::Session;

use policy::{STATEMENT_TIMEOUT_KEY, effective_limit};

/// The address `--serve` listens on when none is given: loopback, next to PostgreSQL's 5432.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";

/// The most clients served at once unless `--max-connections` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 64;

/// How long a server statement may run unless `--timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How long a client over the connection limit may take to be told so, and how many such
/// clients are told at once; beyond that their connections are closed without a word.
const REFUSAL_TIME: Duration = Duration::from_secs(5);
const REFUSALS_AT_ONCE: usize = 64;

/// The pause after a failed `accept` (out of file descriptors, say), so that the loop waits
/// for the condition to pass instead of spinning on it.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// PBKDF2 rounds of the SCRAM verifier, PostgreSQL's default.
const SCRAM_ITERATIONS: usize = 4096;

/// How the server listens and whom it lets in.
#[derive(Clone)]
pub struct ServerParams {
    /// Where to listen; port 0 picks a free port (the log line says which).
    pub listen: SocketAddr,
    /// The password every user name must give; `None` lets anyone who can connect in, which
    /// is allowed on loopback only.
    pub password: Option<String>,
    /// The certificate and key of TLS; with them, every client must use TLS.
    pub tls: Option<TlsFiles>,
    /// The most clients served at once.
    pub max_connections: usize,
    /// Where `/metrics`, `/health` and `/ready` are served, if anywhere.
    pub metrics: Option<SocketAddr>,
}

impl Debug for ServerParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerParams")
            .field("listen", &self.listen)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("tls", &self.tls)
            .field("max_connections", &self.max_connections)
            .field("metrics", &self.metrics)
            .finish()
    }
}

/// A bound server socket, with the TLS it speaks.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
}

impl Listener {
    /// The address the server listens on.
    ///
    /// # Errors
    /// When the socket cannot say.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Reads the TLS files and binds the listening socket. Refuses a non-loopback address
/// without a password, an empty password and a limit of no connections.
///
/// # Errors
/// When the address is taken or not allowed, or the TLS files are not usable.
pub async fn bind(options: &ServerParams) -> anyhow::Result<Listener> {
    ensure!(
        options.listen.ip().is_loopback() || options.password.is_some(),
        "listening on {} without a password would let anyone on the network read the archive: \
         set VIGIL_SQL_PASSWORD (or --password-file FILE), or listen on 127.0.0.1",
        options.listen
    );
    ensure!(
        options
            .password
            .as_ref()
            .is_none_or(|p| !p.trim().is_empty()),
        "an empty password would let anyone in: set a password, or none to serve loopback only"
    );
    ensure!(
        options.max_connections > 0,
        "--max-connections must be at least 1"
    );
    let tls = options.tls.as_ref().map(tls::acceptor).transpose()?;
    let tcp = TcpListener::bind(options.listen).await.with_context(|| {
        format!(
            "listening on {}: is another server on that port? choose another with --serve HOST:PORT",
            options.listen
        )
    })?;
    Ok(Listener { tcp, tls })
}

/// Serves `session`'s archive on `listener` until the process ends.
///
/// # Errors
/// When the PostgreSQL catalogue cannot be set up.
pub async fn serve(
    session: Session,
    listener: Listener,
    options: &ServerParams,
) -> anyhow::Result<()> {
    let timeout = session.limits().timeout;
    let ctx = Arc::new(session.into_context());
    // The pg_catalog tables psql's `\d` and drivers' metadata calls read.
    setup_pg_catalog(&ctx, "datafusion", EmptyContextProvider)
        .map_err(|e| anyhow::anyhow!("setting up the PostgreSQL catalogue: {e}"))?;
    let Listener { tcp, tls } = listener;
    let figures = Arc::new(SqlMetrics::default());
    if let Some(addr) = options.metrics {
        let bound = figures.serve(addr).await?;
        eprintln!("vigil-sql: metrics at http://{bound}/metrics");
    }
    let handlers = Arc::new(Handlers::new(
        ctx,
        options.password.as_deref(),
        timeout,
        tls.is_some(),
        figures.clone(),
    ));
    figures.set_ready();
    let address = tcp.local_addr().context("reading the listening address")?;
    info!(
        message = "Serving the archive over the PostgreSQL protocol.",
        %address,
        password = options.password.is_some(),
        tls = tls.is_some(),
        max_connections = options.max_connections,
    );
    let served = Arc::new(Semaphore::new(options.max_connections));
    let refusing = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let limit = options.max_connections;
    loop {
        let (socket, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(message = "Accepting a connection failed; pausing before the next.", %error);
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let tls = tls.clone();
        if let Ok(permit) = served.clone().try_acquire_owned() {
            let handlers = handlers.clone();
            let connected = figures.connected();
            tokio::spawn(async move {
                let _connected = connected;
                if let Err(error) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                    warn!(message = "Connection ended with an error.", %peer, %error);
                }
                drop(permit);
            });
            continue;
        }
        warn!(message = "Refused a connection: the server is at --max-connections.", %peer, limit);
        figures.refused();
        // The client is told why, as PostgreSQL tells it, within a short time; when too many
        // are waiting to be told, the connection is closed at once.
        let Ok(permit) = refusing.clone().try_acquire_owned() else {
            continue;
        };
        tokio::spawn(async move {
            let full = Arc::new(Full { limit });
            let _ = tokio::time::timeout(
                REFUSAL_TIME,
                pgwire::tokio::process_socket(socket, tls, full),
            )
            .await;
            drop(permit);
        });
    }
}

/// The handlers of a connection over the limit: its startup ends with PostgreSQL's
/// `too_many_connections` (53300).
struct Full {
    limit: usize,
}

impl PgWireServerHandlers for Full {
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Refuse {
            code: "53300",
            message: format!(
                "sorry, too many clients already: the server serves {} at once (--max-connections); try again later",
                self.limit
            ),
        })
    }
}

/// A startup that ends with an error.
struct Refuse {
    code: &'static str,
    message: String,
}

#[async_trait]
impl StartupHandler for Refuse {
    async fn on_startup<C>(
        &self,
        _client: &mut C,
        _message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(fatal(self.code, self.message.clone()))
    }
}

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_owned(),
        code.to_owned(),
        message,
    )))
}

/// The protocol handlers of one server: queries through `datafusion-postgres` behind the
/// write guard, and the startup (authentication) of each connection.
struct Handlers {
    service: Arc<Bounded>,
    connections: Arc<ConnectionManager>,
    /// The SCRAM verifier of the password, computed once: (salt, salted password).
    verifier: Option<Arc<Verifier>>,
    timeout: Option<Duration>,
    /// Whether clients must use TLS.
    tls: bool,
}

impl Handlers {
    fn new(
        ctx: Arc<SessionContext>,
        password: Option<&str>,
        timeout: Option<Duration>,
        tls: bool,
        figures: Arc<SqlMetrics>,
    ) -> Self {
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(policy::Policy { limit: timeout }),
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
                figures,
            }),
            connections: Arc::new(ConnectionManager::new()),
            verifier,
            timeout,
            tls,
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
            tls: self.tls,
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

/// A connection's startup: TLS required when the server has it, authentication, then the
/// server's `--timeout` as the connection's `statement_timeout`.
struct Startup {
    auth: Auth,
    timeout: Option<Duration>,
    tls: bool,
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
        // The password and every row would otherwise cross the network in the clear.
        if self.tls && !client.is_secure() {
            return Err(fatal(
                "28000",
                "the server requires TLS: connect with sslmode=require (or verify-full)".to_owned(),
            ));
        }
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

/// The query handlers of `datafusion-postgres`, with each statement bounded in time from
/// planning to its last row, over both protocols: by the connection's `statement_timeout`,
/// never more than the server's `--timeout`. A statement over the limit ends with
/// PostgreSQL's `query_canceled` (57014), and dropping its rows stops its execution.
struct Bounded {
    inner: Arc<DfSessionService>,
    limit: Option<Duration>,
    figures: Arc<SqlMetrics>,
}

/// How a statement's result counts in `vigil_sql_queries_total`.
fn outcome<T>(result: &PgWireResult<T>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(PgWireError::UserError(info)) if info.code == "57014" => Outcome::Timeout,
        Err(_) => Outcome::Error,
    }
}

impl Bounded {
    fn limit_of(&self, metadata: &HashMap<String, String>) -> Option<Duration> {
        let asked = metadata
            .get(STATEMENT_TIMEOUT_KEY)
            .and_then(|ms| ms.parse().ok())
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        effective_limit(asked, self.limit)
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
        let started = Instant::now();
        let result = match self.limit_of(client.metadata()) {
            None => SimpleQueryHandler::do_query(self.inner.as_ref(), client, query).await,
            Some(limit) => {
                let deadline = started + limit;
                tokio::time::timeout_at(
                    deadline,
                    SimpleQueryHandler::do_query(self.inner.as_ref(), client, query),
                )
                .await
                .map_err(|_| timed_out(limit))
                .and_then(|r| r)
                .map(|responses| {
                    responses
                        .into_iter()
                        .map(|r| bound(r, deadline, limit))
                        .collect()
                })
            }
        };
        self.figures.query(outcome(&result), started.elapsed());
        result
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
        let started = Instant::now();
        let result = match self.limit_of(client.metadata()) {
            None => {
                ExtendedQueryHandler::do_query(self.inner.as_ref(), client, portal, max_rows).await
            }
            Some(limit) => {
                let deadline = started + limit;
                tokio::time::timeout_at(
                    deadline,
                    ExtendedQueryHandler::do_query(self.inner.as_ref(), client, portal, max_rows),
                )
                .await
                .map_err(|_| timed_out(limit))
                .and_then(|r| r)
                .map(|response| bound(response, deadline, limit))
            }
        };
        self.figures.query(outcome(&result), started.elapsed());
        result
    }
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
