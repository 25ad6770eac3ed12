//! opensig-server: the server the original AgoraSig 1.4 web client and the opensig SDK talk
//! to. HTTP (axum): the WebSocket at `/`, `/getaddr`, `/healthz`, `/metrics`, and static files
//! (`www/` at `/`, `pkg/` at `/pkg/`). See `ARCHITECTURE.md` for the map.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use dashmap::DashMap;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::cors::CorsLayer;
use tower_http::services::{ServeDir, ServeFile};

pub mod api;
pub mod apikeys;
pub mod config;
pub mod conn;
pub mod console;
pub mod delivery;
pub mod events;
pub mod listen;
pub mod ratelimit;
pub mod signaling;
pub mod stats;
pub mod store;
pub mod webhooks;

pub use config::ServerConfig;
use delivery::ConnHandle;
use opensig_protocol::ident::AppId;
use signaling::Signaling;
use stats::Stats;
use store::memory::Memory;
use store::redis::Redis;
use store::{Footprint, SResult, Store};

/// State shared by every request and connection.
pub struct Shared<S: Store> {
    /// The rules, over the store (and the configuration in force).
    pub signaling: Arc<Signaling<S>>,
    /// Counters.
    pub stats: Stats,
    conn_seq: AtomicU64,
    /// Open connections, with the app of their session once logged in.
    conns: DashMap<u64, (ConnHandle, Option<AppId>)>,
    shutting_down: AtomicBool,
    /// Login token buckets per IP address (`logins_per_ip_per_second`).
    login_rates: DashMap<IpAddr, ratelimit::Bucket>,
    /// Backend API token buckets per app (`api_requests_per_second`).
    api_rates: DashMap<String, ratelimit::Bucket>,
    /// This node's webhook deliveries.
    pub webhooks: Arc<webhooks::Dispatcher>,
    /// The operator console's state on this node.
    pub console: console::Console,
}

impl<S: Store> Shared<S> {
    /// The store's own lines of `/metrics` (a Redis Cluster's requests sent again, pushes
    /// held).
    pub fn store_metrics(&self) -> String {
        let mut text = String::new();
        self.store().render_metrics(&mut text);
        text
    }

    /// The webhook and event-stream lines of `/metrics`.
    pub fn webhooks_metrics(&self) -> String {
        let mut text = String::new();
        self.webhooks.render_metrics(&mut text);
        let e = &self.signaling.events().stats;
        use std::fmt::Write;
        let _ = writeln!(
            text,
            "# TYPE opensig_events_appended_total counter\nopensig_events_appended_total {}\n\
             # TYPE opensig_events_lost_total counter\nopensig_events_lost_total {}",
            e.appended.load(Ordering::Relaxed),
            e.lost.load(Ordering::Relaxed)
        );
        text
    }

    /// The store.
    pub fn store(&self) -> &S {
        self.signaling.store()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.signaling.config()
    }

    fn next_conn_id(&self) -> u64 {
        self.conn_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn register(&self, h: ConnHandle) {
        self.conns.insert(h.id, (h, None));
    }

    /// Connection `id` is a session of `app` now. An app a reload removed meanwhile gets no
    /// session: it is kicked at once (the reload's own sweep may have run before this).
    fn logged_in(&self, id: u64, app: &AppId) {
        if let Some(mut c) = self.conns.get_mut(&id) {
            c.1 = Some(app.clone());
            if !self.config().app_allowed(app) {
                c.0.kick();
            }
        }
    }

    fn unregister(&self, id: u64) {
        self.conns.remove(&id);
    }

    fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Open connections right now.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }
}

/// Per-connection WebSocket read buffer (bytes).
const READ_BUFFER: usize = 1024;

/// Work to do when the server stops (e.g. leave the cluster).
type StopHook =
    Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send>;

/// A server that is running.
pub struct Running<E: Store> {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Serving TLS (`wss://`, `https://`).
    pub tls: bool,
    /// Where `/metrics` is served, when it is.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the operator console is served (`/console/`), when it is.
    pub console_addr: Option<SocketAddr>,
    /// Its shared state (rules over the store, stats).
    pub shared: Arc<Shared<E>>,
    accept: Arc<listen::Accept>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    on_stop: Option<StopHook>,
}

impl<E: Store> Running<E> {
    /// `ws://addr/` (`wss://` with TLS).
    pub fn ws_url(&self) -> String {
        let s = if self.tls { "wss" } else { "ws" };
        format!("{s}://{}/", self.addr)
    }

    /// `http://addr` (`https://` with TLS).
    pub fn http_url(&self) -> String {
        let s = if self.tls { "https" } else { "http" };
        format!("{s}://{}", self.addr)
    }

    /// Stop as a crash would: connections are dropped without a farewell frame and nothing is
    /// cleaned up in shared state (for tests of failover and reaping).
    pub async fn kill(self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        self.shared.store().halt();
        for c in self.shared.conns.iter() {
            c.0.drop_silently();
        }
        self.task.abort();
        let _ = self.task.await;
    }

    /// Graceful shutdown: every client gets `["close",""]`, then the listener stops.
    pub async fn shutdown(self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        for c in self.shared.conns.iter() {
            c.0.shutdown();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.shared.connection_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(f) = self.on_stop {
            f().await;
        }
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// What a [`Running::reload`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Apps that can log in now and could not before.
    pub apps_added: Vec<String>,
    /// Apps that can no longer log in; their sessions on this node were ended.
    pub apps_removed: Vec<String>,
    /// Apps whose certificate changed: new logins and token renewals need its tokens.
    pub certificates_changed: Vec<String>,
    /// Limits whose value changed.
    pub limits_changed: Vec<String>,
    /// Webhook endpoints (`app/name`) added, changed or removed: their deliveries start,
    /// restart or stop within a second.
    pub webhooks_changed: Vec<String>,
    /// Sessions ended (`kick`, `onLogout(103)`) because their app is no longer configured.
    pub sessions_ended: usize,
    /// The TLS certificate chain and key were read again.
    pub tls_reloaded: bool,
    /// Settings that differ from the running ones but only apply at the next start.
    pub need_restart: Vec<&'static str>,
}

/// Limits a running server cannot change: they are the stores' defaults for channels created
/// from now on and the dedup sweeper's period, set up when the store starts.
pub const LIMITS_SET_AT_START: &[&str] = &[
    "channel_ttl_default_secs",
    "channel_messages_per_second",
    "attr_changes_per_second",
    "dedup_window_secs",
    "mailbox_state_keep_secs",
    "idle_app_forget_secs",
    "channel_history_messages",
    "channel_history_keep_empty_secs",
];

impl<E: Store> Running<E> {
    /// Put a new configuration in force without dropping a session (what `SIGHUP` does):
    /// apps, their certificates, limits, the TLS certificate (read again from its files),
    /// `/getaddr`'s answer and the firehose policy. A removed app's sessions end with `kick`
    /// (`onLogout(103)`); a changed certificate applies to new logins and renewals. What
    /// only a start sets up (listen addresses, Redis, node id, folders, TLS on or off, the
    /// [`LIMITS_SET_AT_START`]) keeps its running value and is listed in `need_restart`.
    /// Nothing changes when the TLS files cannot be read.
    pub fn reload(&self, mut new: ServerConfig) -> std::io::Result<Reloaded> {
        let old = self.shared.config();
        let mut r = Reloaded::default();
        let lim = |c: &ServerConfig| serde_json::to_value(&c.limits).unwrap_or_default();
        let (old_limits, new_limits) = (lim(&old), lim(&new));
        let at_start = |name: &str| old_limits.get(name) != new_limits.get(name);
        let fixed: [(&'static str, bool); 11] = [
            ("listen", new.listen != old.listen),
            ("metrics_listen", new.metrics_listen != old.metrics_listen),
            ("console_listen", new.console_listen != old.console_listen),
            ("redis", new.redis_url != old.redis_url),
            ("redis_prefix", new.redis_prefix != old.redis_prefix),
            (
                "redis_wait_replicas",
                new.redis_wait_replicas != old.redis_wait_replicas,
            ),
            (
                "redis_partitions",
                new.redis_partitions != old.redis_partitions,
            ),
            (
                "node_id",
                new.node_id.is_some() && new.node_id != old.node_id,
            ),
            ("www", new.www_dir != old.www_dir),
            ("pkg", new.pkg_dir != old.pkg_dir),
            ("tls", new.tls_cert.is_some() != old.tls_cert.is_some()),
        ];
        r.need_restart = fixed.iter().filter(|f| f.1).map(|f| f.0).collect();
        r.need_restart
            .extend(LIMITS_SET_AT_START.iter().copied().filter(|n| at_start(n)));
        // the running values of what only a start sets up
        new.listen = old.listen.clone();
        new.metrics_listen = old.metrics_listen.clone();
        new.console_listen = old.console_listen.clone();
        new.redis_url = old.redis_url.clone();
        new.redis_prefix = old.redis_prefix.clone();
        new.redis_wait_replicas = old.redis_wait_replicas;
        new.redis_partitions = old.redis_partitions;
        new.node_id = old.node_id.clone();
        new.www_dir = old.www_dir.clone();
        new.pkg_dir = old.pkg_dir.clone();
        new.memory_gauge = old.memory_gauge.clone();
        let mut kept = new_limits.clone();
        for name in LIMITS_SET_AT_START {
            kept[*name] = old_limits[*name].clone();
        }
        if let Ok(l) = serde_json::from_value(kept) {
            new.limits = l;
        }
        // TLS first: a certificate that cannot be read leaves everything as it was
        match (&self.accept.tls, &new.tls_cert, &new.tls_key) {
            (Some(tls), Some(cert), Some(key)) => {
                let fresh = tls_acceptor(cert, key)?;
                tls.store(Arc::new(fresh));
                r.tls_reloaded = true;
            }
            _ => {
                new.tls_cert = old.tls_cert.clone();
                new.tls_key = old.tls_key.clone();
            }
        }
        let allowed = |c: &ServerConfig, app: &str| c.app_allowed(app);
        r.apps_added = new
            .apps
            .keys()
            .filter(|a| !allowed(&old, a) || old.development_mode())
            .cloned()
            .collect();
        r.apps_removed = old
            .apps
            .keys()
            .filter(|a| !allowed(&new, a))
            .cloned()
            .collect();
        let named = |c: &ServerConfig| -> BTreeMap<String, config::Webhook> {
            c.webhooks
                .iter()
                .map(|w| (format!("{}/{}", w.app, w.name), w.clone()))
                .collect()
        };
        let (was, now) = (named(&old), named(&new));
        r.webhooks_changed = was
            .keys()
            .chain(now.keys())
            .filter(|k| was.get(*k) != now.get(*k))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        r.certificates_changed = new
            .apps
            .iter()
            .filter(|(a, cert)| old.apps.get(*a).is_some_and(|c| c != *cert))
            .map(|(a, _)| a.clone())
            .collect();
        let (old_l, new_l) = (lim(&old), lim(&new));
        if let (Some(o), Some(n)) = (old_l.as_object(), new_l.as_object()) {
            r.limits_changed = n
                .iter()
                .filter(|(k, v)| o.get(*k) != Some(v))
                .map(|(k, _)| k.clone())
                .collect();
        }
        self.accept.set_limits(&new.limits);
        let new = Arc::new(new);
        self.shared.signaling.replace_config(new.clone());
        // after the swap: a login finishing now sees the new apps (`Shared::logged_in`)
        for c in self.shared.conns.iter() {
            if c.1.as_ref().is_some_and(|app| !new.app_allowed(app)) {
                c.0.kick();
                r.sessions_ended += 1;
            }
        }
        Ok(r)
    }
}

/// The server [`start`] runs, on the store its configuration chose: one store per process,
/// and the type says which (everything under it is generic over the store; nothing can hand
/// one store's session to the other).
pub enum Server {
    /// In memory (the default).
    Memory(Running<Memory>),
    /// A node sharing a Redis with others (`redis_url`).
    Redis(Running<Redis>),
}

/// `$body` with `$r` bound to the [`Running`] server inside a [`Server`], whichever store it
/// runs on: the body is compiled once for each store, with its type (tests reach the rules and
/// the store this way).
#[macro_export]
macro_rules! on_running {
    ($server:expr, $r:ident => $body:expr) => {
        match $server {
            $crate::Server::Memory($r) => $body,
            $crate::Server::Redis($r) => $body,
        }
    };
}
use on_running as each;

impl Server {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        each!(self, r => r.addr)
    }

    /// Where `/metrics` is served, when it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        each!(self, r => r.metrics_addr)
    }

    /// Where the operator console is served (`/console/`), when it is.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        each!(self, r => r.console_addr)
    }

    /// `ws://addr/` (`wss://` with TLS).
    pub fn ws_url(&self) -> String {
        each!(self, r => r.ws_url())
    }

    /// `http://addr` (`https://` with TLS).
    pub fn http_url(&self) -> String {
        each!(self, r => r.http_url())
    }

    /// See [`Running::kill`].
    pub async fn kill(self) {
        each!(self, r => r.kill().await)
    }

    /// See [`Running::shutdown`].
    pub async fn shutdown(self) {
        each!(self, r => r.shutdown().await)
    }

    /// See [`Running::reload`].
    pub fn reload(&self, new: ServerConfig) -> std::io::Result<Reloaded> {
        each!(self, r => r.reload(new))
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<ServerConfig> {
        each!(self, r => r.shared.config())
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        each!(self, r => &r.shared.stats)
    }

    /// Open connections on this node.
    pub fn connection_count(&self) -> usize {
        each!(self, r => r.shared.connection_count())
    }

    /// The webhook and event-stream lines of `/metrics`.
    pub fn webhooks_metrics(&self) -> String {
        each!(self, r => r.shared.webhooks_metrics())
    }

    /// The store's lines of `/metrics`.
    pub fn store_metrics(&self) -> String {
        each!(self, r => r.shared.store_metrics())
    }

    /// What the store holds (for leak checks).
    pub async fn footprint(&self) -> SResult<Footprint> {
        each!(self, r => r.shared.store().footprint().await)
    }

    /// Sessions on this node.
    pub fn local_sessions(&self) -> usize {
        each!(self, r => r.shared.store().local_sessions())
    }
}

/// Start the server: in memory, or as a cluster node when `config.redis_url` is set.
pub async fn start(config: ServerConfig) -> std::io::Result<Server> {
    let listener = listen::bind(&config.listen).await?;
    let addr = listener.local_addr()?;
    let Some(url) = config.redis_url.clone() else {
        let store = Memory::new(&config.limits);
        let ids = format!("{:x}", rand::random::<u32>());
        return Ok(Server::Memory(serve(listener, config, store, ids).await?));
    };
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("ws://{addr}/"));
    let node_id = config
        .node_id
        .clone()
        .unwrap_or_else(|| hex::encode(rand::random::<[u8; 6]>()));
    let redis_cfg = store::redis::RedisConfig {
        url,
        prefix: config.redis_prefix.clone(),
        wait_replicas: config.redis_wait_replicas,
        partitions: config.redis_partitions,
        node_id: node_id.clone(),
        public_url,
    };
    let redis = Redis::connect(redis_cfg, &config.limits)
        .await
        .map_err(|e| std::io::Error::other(format!("redis: {e}")))?;
    let mut running = serve(listener, config, redis.clone(), node_id).await?;
    running.on_stop = Some(Box::new(move || {
        Box::pin(async move { redis.deregister().await })
    }));
    Ok(Server::Redis(running))
}

/// Start with a given store; `ids` makes this process's message ids unique.
pub async fn start_with<S: Store>(
    config: ServerConfig,
    store: S,
    ids: String,
) -> std::io::Result<Running<S>> {
    let listener = listen::bind(&config.listen).await?;
    serve(listener, config, store, ids).await
}

async fn serve<S: Store>(
    listener: TcpListener,
    config: ServerConfig,
    store: S,
    ids: String,
) -> std::io::Result<Running<S>> {
    let addr = listener.local_addr()?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        (None, None) => None,
        _ => {
            return Err(std::io::Error::other(
                "TLS needs both a certificate and a key",
            ))
        }
    };
    let accept = Arc::new(listen::Accept::new(&config.limits, tls));
    let config = Arc::new(config);
    let first_conn = store.first_conn_id();
    let dispatcher = Arc::new(webhooks::Dispatcher::new(ids.clone()));
    let signaling = Arc::new(Signaling::new(store, config.clone(), ids.clone()));
    signaling.start();
    dispatcher.run(&signaling);
    let shared = Arc::new(Shared {
        signaling,
        stats: Stats::default(),
        conn_seq: AtomicU64::new(first_conn),
        conns: DashMap::new(),
        shutting_down: AtomicBool::new(false),
        login_rates: DashMap::new(),
        api_rates: DashMap::new(),
        webhooks: dispatcher,
        console: console::Console::new(&ids),
    });
    let tls = accept.tls.is_some();
    let app = router(shared.clone());
    let (stop, stopped) = watch::channel(false);
    // forget the login buckets of addresses that have been quiet (they are full again)
    let pruned = Arc::downgrade(&shared);
    let mut prune_stop = stopped.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                _ = prune_stop.wait_for(|s| *s) => return,
            }
            let Some(shared) = pruned.upgrade() else {
                return;
            };
            let rate = shared.config().limits.logins_per_ip_per_second;
            shared.login_rates.retain(|_, b| !b.is_full(rate));
            let rate = shared.config().limits.api_requests_per_second;
            shared.api_rates.retain(|_, b| !b.is_full(rate));
        }
    });
    let config = shared.config();
    // the console: on the metrics listener unless it has one of its own
    let with_console = console::served(&config);
    let console_own = config.console_listen.clone().filter(|_| with_console);
    let console_on_metrics = with_console && console_own.is_none();
    let metrics_addr = match &config.metrics_listen {
        Some(at) => {
            let mut router = metrics_router(shared.clone());
            if console_on_metrics {
                router = router.merge(console::router(shared.clone()));
            }
            serve_other(at, "metrics", router, stopped.clone()).await
        }
        None => None,
    };
    let console_addr = match &console_own {
        Some(at) => {
            serve_other(
                at,
                "console",
                console::router(shared.clone()),
                stopped.clone(),
            )
            .await
        }
        None if console_on_metrics => metrics_addr,
        None => None,
    };
    if with_console {
        let public = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("ws://{addr}/"));
        console::run_sampler(&shared, public, stopped.clone());
        if console_addr.is_none() && console::wanted(&config) {
            tracing::warn!("console: operators are configured but there is nowhere to serve it (set metrics_listen or console_listen)");
        }
    }
    let task = tokio::spawn(listen::run(listener, app, accept.clone(), stopped));
    Ok(Running {
        addr,
        tls,
        metrics_addr,
        console_addr,
        shared,
        accept,
        stop,
        task,
        on_stop: None,
    })
}

/// The WebSocket settings of every connection: frame and message size caps, small buffers.
fn websocket(ws: WebSocketUpgrade, limits: &opensig_protocol::Limits) -> WebSocketUpgrade {
    let max = limits.max_frame_bytes;
    // small buffers: tungstenite keeps (and zero-fills on every read) a read buffer of this
    // size per connection; frames are batched into `multi` by the writer already
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
}

/// An echo server for WebSocket conformance runs (the Autobahn cases): the server's own
/// accept loop and WebSocket settings (those of `/`), every text and binary message sent
/// back, the close handshake completed. Not part of a normal start; `examples/ws_echo.rs`
/// runs it. Stops when the returned sender is dropped or sends `true`.
pub async fn start_echo(
    config: ServerConfig,
) -> std::io::Result<(std::net::SocketAddr, watch::Sender<bool>)> {
    let listener = listen::bind(&config.listen).await?;
    let addr = listener.local_addr()?;
    let accept = Arc::new(listen::Accept::new(&config.limits, None));
    let limits = Arc::new(config.limits);
    let app = Router::new().route(
        "/",
        get(move |ws: WebSocketUpgrade| async move {
            websocket(ws, &limits).on_upgrade(echo).into_response()
        }),
    );
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(listen::run(listener, app, accept, stopped));
    Ok((addr, stop))
}

/// Send every message back; after a close, keep reading until the close reply is flushed
/// (returning at once would drop the socket before the peer hears it).
async fn echo(mut socket: axum::extract::ws::WebSocket) {
    use axum::extract::ws::Message;
    while let Some(Ok(m)) = socket.recv().await {
        let back = match m {
            Message::Text(_) | Message::Binary(_) => m,
            _ => continue,
        };
        if socket.send(back).await.is_err() {
            return;
        }
    }
}

/// rustls from PEM files: the certificate chain and its private key.
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, p: &std::path::Path, e: &dyn std::fmt::Display| {
        std::io::Error::other(format!("{what} {}: {e}", p.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("TLS certificate", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("TLS certificate", cert, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("TLS key", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| std::io::Error::other(format!("TLS: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// `/metrics` and `/healthz` (served on a listener of their own, so the public port does not
/// show them).
fn metrics_router<S: Store>(shared: Arc<Shared<S>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<S>))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared)
}

/// Serve `router` on a listener of its own at `at` (`what` names it in the log). A busy
/// address is logged and skipped: the server runs without it.
async fn serve_other(
    at: &str,
    what: &str,
    router: Router,
    mut stop: watch::Receiver<bool>,
) -> Option<SocketAddr> {
    let listener = match TcpListener::bind(at).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("{what}: cannot listen on {at}: {e}; it is not served");
            return None;
        }
    };
    let addr = listener.local_addr().ok()?;
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(stopped)
            .await;
    });
    Some(addr)
}

fn router<S: Store>(shared: Arc<Shared<S>>) -> Router {
    let mut app = Router::new()
        .route("/", get(root::<S>))
        .route("/getaddr", get(getaddr::<S>))
        .route("/healthz", get(|| async { "ok" }));
    if let Some(pkg) = shared.config().pkg_dir.as_ref().filter(|p| p.is_dir()) {
        app = app.nest_service("/pkg", ServeDir::new(pkg));
    }
    if let Some(www) = shared.config().www_dir.as_ref().filter(|p| p.is_dir()) {
        app = app.fallback_service(ServeDir::new(www));
    }
    // the backend API is not open to other origins (see `api`)
    app.layer(CorsLayer::permissive())
        .merge(api::router::<S>())
        .layer(axum::middleware::from_fn(per_ip_cap))
        .with_state(shared)
}

/// Over the per-IP connection cap: plain HTTP gets 429 (WebSocket upgrades are answered by
/// `root` with a close frame that says why).
async fn per_ip_cap(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let over = req
        .extensions()
        .get::<listen::ConnInfo>()
        .is_some_and(|i| i.over_cap);
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if over && !upgrade {
        let (_, reason) = opensig_protocol::names::close::TOO_MANY_CONNECTIONS;
        return (StatusCode::TOO_MANY_REQUESTS, reason).into_response();
    }
    next.run(req).await
}

/// `GET /`: the WebSocket (any upgrade request), else the demo page.
async fn root<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    Extension(info): Extension<listen::ConnInfo>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    req: axum::extract::Request,
) -> Response {
    match ws {
        Ok(ws) if info.over_cap => {
            // a WebSocket client learns why from the close frame
            ws.on_upgrade(|mut socket| async move {
                let (code, reason) = opensig_protocol::names::close::TOO_MANY_CONNECTIONS;
                let _ = socket
                    .send(axum::extract::ws::Message::Close(Some(
                        axum::extract::ws::CloseFrame {
                            code,
                            reason: reason.into(),
                        },
                    )))
                    .await;
            })
            .into_response()
        }
        Ok(ws) => websocket(ws, &shared.config().limits)
            .on_upgrade(move |socket| conn::serve(socket, shared, info.peer.ip()))
            .into_response(),
        Err(_) => match shared
            .config()
            .www_dir
            .as_ref()
            .map(|d| d.join("index.html"))
            .filter(|p| p.is_file())
        {
            Some(index) => {
                use tower::ServiceExt;
                match ServeFile::new(index).oneshot(req).await {
                    Ok(r) => r.into_response(),
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }
            None => (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "opensig-server: connect a WebSocket here (AgoraSig 1.4 protocol)\n",
            )
                .into_response(),
        },
    }
}

#[derive(Deserialize)]
struct GetAddr {
    #[allow(dead_code)]
    vid: Option<String>,
}

/// `GET /getaddr?vid=APPID` → `{"web":[<ws urls>]}`: the cluster's nodes, or the configured
/// public URL, or — never an address a request can choose — the request's `Host` only when it
/// is a loopback name or an allowed host, else the address the client connected to. Never
/// cached (a shared cache would hand one client's answer to everyone).
async fn getaddr<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    Extension(info): Extension<listen::ConnInfo>,
    Query(_q): Query<GetAddr>,
    headers: HeaderMap,
) -> Response {
    let mut web = shared.store().live_nodes().await;
    if web.is_empty() {
        let config = shared.config();
        let own = match &config.public_url {
            Some(u) => u.clone(),
            None => {
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .filter(|h| host_allowed(h, &config.allowed_hosts))
                    .map(str::to_owned)
                    .or_else(|| info.local.map(|a| a.to_string()))
                    .unwrap_or_else(|| config.listen.clone());
                let scheme = if info.tls { "wss" } else { "ws" };
                format!("{scheme}://{host}/")
            }
        };
        web.push(own);
    }
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "web": web })),
    )
        .into_response()
}

/// Whether `/getaddr` may answer with this `Host`: a loopback name (`localhost`,
/// `127.x.x.x`, `[::1]`, any port) or one of `allowed` (with or without its port).
fn host_allowed(host: &str, allowed: &BTreeSet<String>) -> bool {
    let name = match host.rsplit_once(':') {
        Some((n, port)) if !n.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host,
    };
    let name = name.to_ascii_lowercase();
    let loopback = name == "localhost"
        || name == "[::1]"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback || allowed.contains(&host.to_ascii_lowercase()) || allowed.contains(&name)
}

async fn metrics<S: Store>(State(shared): State<Arc<Shared<S>>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.stats.render() + &shared.webhooks_metrics() + &shared.store_metrics(),
    )
        .into_response()
}
