//! opensig-server: the server the original AgoraSig 1.4 web client and the opensig SDK talk
//! to. HTTP (axum): the WebSocket at `/`, `/getaddr`, `/healthz`, `/metrics`, and static files
//! (`www/` at `/`, `pkg/` at `/pkg/`). See `ARCHITECTURE.md` for the map.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
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

pub mod config;
pub mod conn;
pub mod delivery;
pub mod listen;
pub mod ratelimit;
pub mod signaling;
pub mod stats;
pub mod store;

pub use config::ServerConfig;
use delivery::ConnHandle;
use signaling::Signaling;
use stats::Stats;
use store::{AnyStore, Store};

/// State shared by every request and connection.
pub struct Shared<S: Store> {
    /// The rules, over the store.
    pub signaling: Arc<Signaling<S>>,
    /// Configuration.
    pub config: Arc<ServerConfig>,
    /// Counters.
    pub stats: Stats,
    conn_seq: AtomicU64,
    conns: DashMap<u64, ConnHandle>,
    shutting_down: AtomicBool,
    /// Login token buckets per IP address (`logins_per_ip_per_second`).
    login_rates: DashMap<IpAddr, ratelimit::Bucket>,
}

impl<S: Store> Shared<S> {
    /// The store.
    pub fn store(&self) -> &S {
        self.signaling.store()
    }

    fn next_conn_id(&self) -> u64 {
        self.conn_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn register(&self, h: ConnHandle) {
        self.conns.insert(h.id, h);
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
    /// Its shared state (rules over the store, stats).
    pub shared: Arc<Shared<E>>,
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
            c.drop_silently();
        }
        self.task.abort();
        let _ = self.task.await;
    }

    /// Graceful shutdown: every client gets `["close",""]`, then the listener stops.
    pub async fn shutdown(self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        for c in self.shared.conns.iter() {
            c.shutdown();
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

/// Start the server: in memory, or as a cluster node when `config.redis_url` is set.
pub async fn start(config: ServerConfig) -> std::io::Result<Running<AnyStore>> {
    let listener = TcpListener::bind(&config.listen).await?;
    let addr = listener.local_addr()?;
    let Some(url) = config.redis_url.clone() else {
        let store = AnyStore::Memory(store::memory::Memory::new(&config.limits));
        let ids = format!("{:x}", rand::random::<u32>());
        return serve(listener, config, store, ids).await;
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
        node_id: node_id.clone(),
        public_url,
    };
    let redis = store::redis::Redis::connect(redis_cfg, &config.limits)
        .await
        .map_err(|e| std::io::Error::other(format!("redis: {e}")))?;
    let mut running = serve(listener, config, AnyStore::Redis(redis.clone()), node_id).await?;
    running.on_stop = Some(Box::new(move || {
        Box::pin(async move { redis.deregister().await })
    }));
    Ok(running)
}

/// Start with a given store; `ids` makes this process's message ids unique.
pub async fn start_with<S: Store>(
    config: ServerConfig,
    store: S,
    ids: String,
) -> std::io::Result<Running<S>> {
    let listener = TcpListener::bind(&config.listen).await?;
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
    let accept = accept_config(&config, tls);
    let config = Arc::new(config);
    let signaling = Arc::new(Signaling::new(store, config.clone(), ids));
    signaling.start();
    let shared = Arc::new(Shared {
        signaling,
        config,
        stats: Stats::default(),
        conn_seq: AtomicU64::new(0),
        conns: DashMap::new(),
        shutting_down: AtomicBool::new(false),
        login_rates: DashMap::new(),
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
            let rate = shared.config.limits.logins_per_ip_per_second;
            shared.login_rates.retain(|_, b| !b.is_full(rate));
        }
    });
    let metrics_addr = match &shared.config.metrics_listen {
        Some(at) => serve_metrics(at, shared.clone(), stopped.clone()).await,
        None => None,
    };
    let task = tokio::spawn(listen::run(listener, app, accept, stopped));
    Ok(Running {
        addr,
        tls,
        metrics_addr,
        shared,
        stop,
        task,
        on_stop: None,
    })
}

/// How connections are accepted: TLS, the per-address cap, the handshake timeout.
fn accept_config(config: &ServerConfig, tls: Option<tokio_rustls::TlsAcceptor>) -> listen::Accept {
    listen::Accept {
        tls,
        per_ip_cap: config.limits.connections_per_ip,
        handshake_timeout: Duration::from_secs(config.limits.handshake_timeout_secs.max(1)),
        counts: Arc::new(listen::IpCounts::default()),
    }
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
    let listener = TcpListener::bind(&config.listen).await?;
    let addr = listener.local_addr()?;
    let accept = accept_config(&config, None);
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

/// `/metrics` (and `/healthz`) on a listener of their own, so the public port does not show
/// them. A busy address is logged and skipped: the server runs without it.
async fn serve_metrics<S: Store>(
    at: &str,
    shared: Arc<Shared<S>>,
    mut stop: watch::Receiver<bool>,
) -> Option<SocketAddr> {
    let listener = match TcpListener::bind(at).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("metrics: cannot listen on {at}: {e}; /metrics is not served");
            return None;
        }
    };
    let addr = listener.local_addr().ok()?;
    let app = Router::new()
        .route("/metrics", get(metrics::<S>))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared);
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let _ = axum::serve(listener, app)
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
    if let Some(pkg) = shared.config.pkg_dir.as_ref().filter(|p| p.is_dir()) {
        app = app.nest_service("/pkg", ServeDir::new(pkg));
    }
    if let Some(www) = shared.config.www_dir.as_ref().filter(|p| p.is_dir()) {
        app = app.fallback_service(ServeDir::new(www));
    }
    app.layer(CorsLayer::permissive())
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
        Ok(ws) => websocket(ws, &shared.config.limits)
            .on_upgrade(move |socket| conn::serve(socket, shared, info.peer.ip()))
            .into_response(),
        Err(_) => match shared
            .config
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
        let own = match &shared.config.public_url {
            Some(u) => u.clone(),
            None => {
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .filter(|h| host_allowed(h, &shared.config.allowed_hosts))
                    .map(str::to_owned)
                    .or_else(|| info.local.map(|a| a.to_string()))
                    .unwrap_or_else(|| shared.config.listen.clone());
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
        shared.stats.render(),
    )
        .into_response()
}
