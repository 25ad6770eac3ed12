//! opensig-server: the server the original AgoraSig 1.4 web client and the opensig SDK talk
//! to. HTTP (axum): the WebSocket at `/`, `/getaddr`, `/healthz`, `/metrics`, and static files
//! (`www/` at `/`, `pkg/` at `/pkg/`). See `ARCHITECTURE.md` for the map.
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
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
pub mod engine;
pub mod ratelimit;
pub mod stats;

pub use config::ServerConfig;
use delivery::ConnHandle;
use engine::{AnyEngine, Engine};
use stats::Stats;

/// State shared by every request and connection.
pub struct Shared<E: Engine> {
    /// The state engine.
    pub engine: E,
    /// Configuration.
    pub config: ServerConfig,
    /// Counters.
    pub stats: Stats,
    conn_seq: AtomicU64,
    conns: DashMap<u64, ConnHandle>,
    shutting_down: AtomicBool,
}

impl<E: Engine> Shared<E> {
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
pub struct Running<E: Engine> {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its shared state (engine, stats).
    pub shared: Arc<Shared<E>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    on_stop: Option<StopHook>,
}

impl<E: Engine> Running<E> {
    /// `ws://addr/`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// `http://addr`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop as a crash would: connections are dropped without a farewell frame and nothing is
    /// cleaned up in shared state (for tests of failover and reaping).
    pub async fn kill(self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        self.shared.engine.halt();
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
pub async fn start(config: ServerConfig) -> std::io::Result<Running<AnyEngine>> {
    let listener = TcpListener::bind(&config.listen).await?;
    let addr = listener.local_addr()?;
    let Some(url) = config.redis_url.clone() else {
        let engine = AnyEngine::Memory(engine::memory::Memory::new(config.limits.clone()));
        return serve(listener, config, engine).await;
    };
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("ws://{addr}/"));
    let node_id = config
        .node_id
        .clone()
        .unwrap_or_else(|| hex::encode(rand::random::<[u8; 6]>()));
    let redis_cfg = engine::redis::RedisConfig {
        url,
        prefix: config.redis_prefix.clone(),
        node_id,
        public_url,
    };
    let redis = engine::redis::Redis::connect(redis_cfg, config.limits.clone())
        .await
        .map_err(|e| std::io::Error::other(format!("redis: {e}")))?;
    let mut running = serve(listener, config, AnyEngine::Redis(redis.clone())).await?;
    running.on_stop = Some(Box::new(move || {
        Box::pin(async move { redis.deregister().await })
    }));
    Ok(running)
}

/// Start with a given engine.
pub async fn start_with<E: Engine>(config: ServerConfig, engine: E) -> std::io::Result<Running<E>> {
    let listener = TcpListener::bind(&config.listen).await?;
    serve(listener, config, engine).await
}

async fn serve<E: Engine>(
    listener: TcpListener,
    config: ServerConfig,
    engine: E,
) -> std::io::Result<Running<E>> {
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        engine,
        config,
        stats: Stats::default(),
        conn_seq: AtomicU64::new(0),
        conns: DashMap::new(),
        shutting_down: AtomicBool::new(false),
    });
    let app = router(shared.clone());
    let (stop, mut stopped) = watch::channel(false);
    // small frames must leave at once (no Nagle delay waiting for the peer's delayed ACK)
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service())
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
    });
    Ok(Running {
        addr,
        shared,
        stop,
        task,
        on_stop: None,
    })
}

fn router<E: Engine>(shared: Arc<Shared<E>>) -> Router {
    let mut app = Router::new()
        .route("/", get(root::<E>))
        .route("/getaddr", get(getaddr::<E>))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics::<E>));
    if let Some(pkg) = shared.config.pkg_dir.as_ref().filter(|p| p.is_dir()) {
        app = app.nest_service("/pkg", ServeDir::new(pkg));
    }
    if let Some(www) = shared.config.www_dir.as_ref().filter(|p| p.is_dir()) {
        app = app.fallback_service(ServeDir::new(www));
    }
    app.layer(CorsLayer::permissive()).with_state(shared)
}

/// `GET /`: the WebSocket (any upgrade request), else the demo page.
async fn root<E: Engine>(
    State(shared): State<Arc<Shared<E>>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    req: axum::extract::Request,
) -> Response {
    match ws {
        Ok(ws) => {
            let max = shared.config.limits.max_frame_bytes;
            // small buffers: tungstenite keeps (and zero-fills on every read) a read buffer of
            // this size per connection; frames are batched into `multi` by the writer already
            ws.max_message_size(max)
                .max_frame_size(max)
                .read_buffer_size(READ_BUFFER)
                .write_buffer_size(0)
                .on_upgrade(move |socket| conn::serve(socket, shared))
                .into_response()
        }
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

/// `GET /getaddr?vid=APPID` → `{"web":[<ws urls>]}`.
async fn getaddr<E: Engine>(
    State(shared): State<Arc<Shared<E>>>,
    Query(_q): Query<GetAddr>,
    headers: HeaderMap,
) -> Response {
    let mut web = shared.engine.live_nodes().await;
    if web.is_empty() {
        let own = match &shared.config.public_url {
            Some(u) => u.clone(),
            None => {
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
                    .unwrap_or_else(|| shared.config.listen.clone());
                format!("ws://{host}/")
            }
        };
        web.push(own);
    }
    axum::Json(serde_json::json!({ "web": web })).into_response()
}

async fn metrics<E: Engine>(State(shared): State<Arc<Shared<E>>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.stats.render(),
    )
        .into_response()
}
