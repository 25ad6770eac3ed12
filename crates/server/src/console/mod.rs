//! The operator console: a page and its JSON, served on the metrics listener (loopback by
//! default) or a listener of its own (`console_listen`), never on the public port unless
//! the operator points it there. Every asset is in the binary.
//!
//! - `/console/` the page (`console/index.html`, `console.js`, `console.css`);
//! - `/console/api/signin`, `signout`, `session`: sign-in ([`auth`]);
//! - `/console/api/overview`: every node's report (sessions, memory, uptime, messages per
//!   second with 15 minutes of samples, sessions per app, refusals by kind, webhook state),
//!   which each node keeps in the store ([`Store::node_report_put`]);
//! - `/console/api/apps/{app}/events`: a live tail of the app's event stream (server-sent
//!   events, filtered by account, channel or type);
//! - `/console/api/v1/…`: the backend HTTP API's own routes and rules ([`crate::api`]), let in
//!   by the sign-in instead of a credential.
//!
//! The guard in front of it all: a valid sign-in cookie; for every request that changes
//! state, the sign-in's CSRF token in [`console::CSRF_HEADER`] and no foreign `Origin`; a
//! read-only operator refused every such request. Every action is logged with its operator
//! (target `opensig::console`).

pub mod auth;

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use opensig_protocol::ident::AppId;
use opensig_protocol::names::console;
use opensig_protocol::ErrorKind;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use auth::Operator;

use crate::store::{now_ms, Store};
use crate::Shared;

/// How often a node takes a sample of its figures and publishes its report.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept: 15 minutes of them.
pub const SAMPLES: usize = 450;
/// Live event tails one node serves at once.
pub const TAILS_MAX: usize = 8;
/// Events one tail reads from a partition per look.
const TAIL_READ: usize = 200;

const PAGE: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/console.js");
const STYLE: &str = include_str!("../../console/console.css");

/// The console's state on one node.
pub struct Console {
    /// Sign-ins and failed sign-ins.
    pub signins: auth::Signins,
    node: String,
    started: Instant,
    started_ms: u64,
    samples: Mutex<Samples>,
    tails: Arc<tokio::sync::Semaphore>,
}

#[derive(Default)]
struct Samples {
    /// `(sessions, frames in per second, frames out per second)`, oldest first.
    kept: VecDeque<(u64, f64, f64)>,
    /// The counters at the last sample.
    last: Option<(Instant, u64, u64)>,
    at_ms: u64,
}

/// One webhook endpoint as this node delivers it.
#[derive(Serialize)]
struct WebhookState {
    app: String,
    endpoint: String,
    delivered: u64,
    retried: u64,
    dropped: u64,
    depth: u64,
    last_error: Option<String>,
}

/// What a node tells the other nodes' consoles about itself.
#[derive(Serialize)]
struct Report<'a> {
    id: &'a str,
    url: String,
    started_ms: u64,
    at_ms: u64,
    sessions: u64,
    connections: u64,
    memory: u64,
    in_per_s: f64,
    out_per_s: f64,
    apps: BTreeMap<String, u64>,
    refused: BTreeMap<&'static str, u64>,
    webhooks: Vec<WebhookState>,
    step_ms: u64,
    series_sessions: Vec<u64>,
    series_in: Vec<f64>,
    series_out: Vec<f64>,
}

impl Console {
    /// The console of node `node`.
    pub fn new(node: &str) -> Console {
        Console {
            signins: auth::Signins::default(),
            node: node.to_string(),
            started: Instant::now(),
            started_ms: now_ms(),
            samples: Mutex::new(Samples::default()),
            tails: Arc::new(tokio::sync::Semaphore::new(TAILS_MAX)),
        }
    }
}

/// Whether the console is served (unless `console_listen = "off"`; without operators nobody
/// can sign in, and operators added by a reload can at once).
pub fn served(config: &crate::ServerConfig) -> bool {
    config.console_listen.as_deref() != Some("off")
}

/// Whether anyone can use the console now (it is served and has operators): then every
/// app's events are recorded for its live tail.
pub fn wanted(config: &crate::ServerConfig) -> bool {
    served(config) && !config.operators.is_empty()
}

/// Take a sample every [`SAMPLE_EVERY`] and publish this node's report, until `stop`.
pub fn run_sampler<S: Store>(
    shared: &Arc<Shared<S>>,
    public: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let Some(shared) = weak.upgrade() else { return };
            sample(&shared);
            let report = report(&shared, &public);
            let ttl = SAMPLE_EVERY * 5;
            if let Err(e) = shared.store().node_report_put(&report, ttl).await {
                tracing::debug!("console: node report not stored: {e}");
            }
        }
    });
}

fn sample<S: Store>(shared: &Shared<S>) {
    let st = &shared.stats;
    let (fin, fout) = (
        st.frames_in.load(Ordering::Relaxed),
        st.frames_out.load(Ordering::Relaxed),
    );
    let now = Instant::now();
    let mut s = shared.console.samples.lock();
    let rates = match s.last {
        Some((at, i, o)) => {
            let secs = now.duration_since(at).as_secs_f64().max(0.001);
            (
                fin.saturating_sub(i) as f64 / secs,
                fout.saturating_sub(o) as f64 / secs,
            )
        }
        None => (0.0, 0.0),
    };
    s.last = Some((now, fin, fout));
    s.at_ms = now_ms();
    if s.kept.len() == SAMPLES {
        s.kept.pop_front();
    }
    let sessions = st.sessions.load(Ordering::Relaxed);
    s.kept.push_back((sessions, rates.0, rates.1));
}

fn report<S: Store>(shared: &Shared<S>, public: &str) -> String {
    let st = &shared.stats;
    let config = shared.config();
    let mut apps: BTreeMap<String, u64> = BTreeMap::new();
    for c in shared.conns.iter() {
        if let Some(app) = &c.1 {
            *apps.entry(app.to_string()).or_default() += 1;
        }
    }
    let webhooks = shared
        .webhooks
        .all_stats()
        .into_iter()
        .filter(|((app, name), _)| config.webhooks_of(app).any(|w| w.name == *name))
        .map(|((app, endpoint), s)| WebhookState {
            app,
            endpoint,
            delivered: s.delivered.load(Ordering::Relaxed),
            retried: s.retried.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            depth: s.depth(),
            last_error: s.last_error.lock().clone(),
        })
        .collect();
    let memory = config
        .memory_gauge
        .as_ref()
        .map(|g| g() as u64)
        .or_else(resident_bytes)
        .unwrap_or(0);
    let c = &shared.console;
    let s = c.samples.lock();
    let last = s.kept.back().copied().unwrap_or_default();
    let r = Report {
        id: &c.node,
        url: public.to_string(),
        started_ms: c.started_ms,
        at_ms: if s.at_ms > 0 { s.at_ms } else { now_ms() },
        sessions: st.sessions.load(Ordering::Relaxed),
        connections: st.connections.load(Ordering::Relaxed),
        memory,
        in_per_s: last.1,
        out_per_s: last.2,
        apps,
        refused: st.refusals(),
        webhooks,
        step_ms: SAMPLE_EVERY.as_millis() as u64,
        series_sessions: s.kept.iter().map(|k| k.0).collect(),
        series_in: s.kept.iter().map(|k| (k.1 * 10.0).round() / 10.0).collect(),
        series_out: s.kept.iter().map(|k| (k.2 * 10.0).round() / 10.0).collect(),
    };
    serde_json::to_string(&r).unwrap_or_default()
}

/// The process's resident memory (Linux `/proc/self/statm`).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The sign-out route (the guard lets a read-only operator use it).
const SIGNOUT: &str = "/console/api/signout";

/// The console's routes (the page, its JSON, the API's routes under `/console/api/v1`).
pub fn router<S: Store>(shared: Arc<Shared<S>>) -> Router {
    let guarded = Router::new()
        .route("/console/api/session", get(session::<S>))
        .route(SIGNOUT, post(signout::<S>))
        .route("/console/api/overview", get(overview::<S>))
        .route("/console/api/apps/{app}/events", get(tail::<S>))
        .nest("/console", crate::api::router::<S>())
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            guard::<S>,
        ));
    Router::new()
        .route(
            "/console",
            get(|| async { axum::response::Redirect::to("/console/") }),
        )
        .route("/console/", get(page))
        .route("/console/console.js", get(script))
        .route("/console/console.css", get(style))
        .route("/console/api/signin", post(signin::<S>))
        .merge(guarded)
        .layer(axum::middleware::from_fn(headers))
        .with_state(shared)
}

/// Every console answer: never cached, never framed by another page, scripts only its own.
async fn headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, header::HeaderValue::from_static(v));
    };
    set(h, header::CACHE_CONTROL, "no-store");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
         connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    );
    r
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

fn refuse(status: StatusCode, error: &'static str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

/// The value of the sign-in cookie.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == console::COOKIE)
        .map(|(_, v)| v.to_string())
}

/// An `Origin` (when the browser sent one) that is this page's own: same host and port.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = origin.to_str().ok().and_then(|o| o.split_once("://"));
    matches!((origin, host), (Some((_, o)), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Who is signed in: the cookie's sign-in, while it lasts and its operator is still in the
/// configuration (removing an operator and reloading signs it out); its role is the
/// configuration's now.
fn signed_in<S: Store>(shared: &Shared<S>, headers: &HeaderMap) -> Option<(Operator, String)> {
    let token = cookie_token(headers)?;
    let (name, csrf) = shared.console.signins.get(&token, Instant::now())?;
    let config = shared.config();
    let op = config.operators.iter().find(|o| o.name == name)?;
    Some((
        Operator {
            name,
            read_only: op.read_only,
        },
        csrf,
    ))
}

async fn guard<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some((op, csrf)) = signed_in(&shared, req.headers()) else {
        return refuse(StatusCode::UNAUTHORIZED, console::UNAUTHORIZED);
    };
    let acts = !matches!(*req.method(), Method::GET | Method::HEAD);
    if acts {
        let sent = req
            .headers()
            .get(console::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !auth::same_secret(sent, &csrf) || !same_origin(req.headers()) {
            tracing::warn!(target: "opensig::console", operator = %op.name,
                method = %req.method(), path = req.uri().path(), "refused: no CSRF token");
            return refuse(StatusCode::FORBIDDEN, console::CSRF);
        }
        let signout = req.uri().path() == SIGNOUT;
        if op.read_only && !signout {
            tracing::warn!(target: "opensig::console", operator = %op.name,
                method = %req.method(), path = req.uri().path(), "refused: read-only");
            return refuse(StatusCode::FORBIDDEN, console::READ_ONLY);
        }
        tracing::info!(target: "opensig::console", operator = %op.name,
            method = %req.method(), path = req.uri().path(), "console action");
    }
    req.extensions_mut().insert(op);
    next.run(req).await
}

#[derive(Deserialize)]
struct SignIn {
    name: String,
    password: String,
}

fn cookie(value: &str, max_age: u64) -> header::HeaderValue {
    let c = format!(
        "{}={value}; Path={}; HttpOnly; SameSite=Strict; Max-Age={max_age}",
        console::COOKIE,
        console::PREFIX
    );
    header::HeaderValue::from_str(&c).unwrap_or(header::HeaderValue::from_static(""))
}

async fn signin<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    headers: HeaderMap,
    body: Result<Json<SignIn>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if !same_origin(&headers) {
        return refuse(StatusCode::FORBIDDEN, console::CSRF);
    }
    let Ok(Json(si)) = body else {
        return refuse(StatusCode::BAD_REQUEST, ErrorKind::InvalidArgs.as_str());
    };
    if si.name.len() > 64 || si.password.len() > 1024 {
        return refuse(StatusCode::UNAUTHORIZED, console::UNAUTHORIZED);
    }
    let config = shared.config();
    let limits = &config.limits;
    let c = &shared.console;
    if c.signins.locked(&si.name, limits, Instant::now()) {
        tracing::warn!(target: "opensig::console", operator = %si.name, "sign-in refused: locked");
        return refuse(StatusCode::TOO_MANY_REQUESTS, console::LOCKED);
    }
    let op = config.operators.iter().find(|o| o.name == si.name).cloned();
    let Ok(_permit) = c.signins.verifying.acquire().await else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unavailable.as_str(),
        );
    };
    let hash = op.as_ref().map(|o| o.password_hash.clone());
    let password = si.password;
    let ok = tokio::task::spawn_blocking(move || auth::verify(&password, hash.as_deref()))
        .await
        .unwrap_or(false);
    let Some(op) = op.filter(|_| ok) else {
        c.signins.failed(&si.name, limits, Instant::now());
        tracing::warn!(target: "opensig::console", operator = %si.name, "sign-in failed");
        return refuse(StatusCode::UNAUTHORIZED, console::UNAUTHORIZED);
    };
    let opened = c.signins.open(&op.name, limits, Instant::now());
    tracing::info!(target: "opensig::console", operator = %op.name, read_only = op.read_only, "signed in");
    let mut r = Json(json!({
        "operator": op.name,
        "read_only": op.read_only,
        "csrf": opened.csrf,
        "node": c.node,
    }))
    .into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&opened.token, limits.console_session_secs),
    );
    r
}

async fn session<S: Store>(State(shared): State<Arc<Shared<S>>>, headers: HeaderMap) -> Response {
    match signed_in(&shared, &headers) {
        Some((op, csrf)) => Json(json!({
            "operator": op.name,
            "read_only": op.read_only,
            "csrf": csrf,
            "node": shared.console.node,
        }))
        .into_response(),
        None => refuse(StatusCode::UNAUTHORIZED, console::UNAUTHORIZED),
    }
}

async fn signout<S: Store>(State(shared): State<Arc<Shared<S>>>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie_token(&headers) {
        shared.console.signins.close(&token);
    }
    let mut r = Json(json!({})).into_response();
    r.headers_mut().insert(header::SET_COOKIE, cookie("", 0));
    r
}

async fn overview<S: Store>(State(shared): State<Arc<Shared<S>>>) -> Response {
    let mut nodes: Vec<Value> = match shared.store().node_reports().await {
        Ok(reports) => reports
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect(),
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": ErrorKind::Unavailable.as_str(), "detail": e.to_string()})),
            )
                .into_response()
        }
    };
    let own = &shared.console.node;
    if !nodes.iter().any(|n| n["id"] == **own) {
        let public = String::new();
        if let Ok(v) = serde_json::from_str(&report(&shared, &public)) {
            nodes.push(v);
        }
    }
    nodes.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let config = shared.config();
    let mut apps: Vec<String> = config.apps.keys().cloned().collect();
    if config.development_mode() {
        // any app id works: list those with sessions now
        for n in &nodes {
            if let Some(a) = n["apps"].as_object() {
                apps.extend(a.keys().cloned());
            }
        }
        apps.sort();
        apps.dedup();
    }
    let webhooks: Vec<Value> = config
        .webhooks
        .iter()
        .map(|w| json!({"app": w.app, "endpoint": w.name, "url": w.url, "events": w.events}))
        .collect();
    Json(json!({
        "node": own,
        "now_ms": now_ms(),
        "nodes": nodes,
        "apps": apps,
        "webhooks": webhooks,
        "uptime_s": shared.console.started.elapsed().as_secs(),
    }))
    .into_response()
}

#[derive(Deserialize, Default)]
struct TailFilter {
    account: Option<String>,
    channel: Option<String>,
    kind: Option<String>,
}

impl TailFilter {
    /// Whether the event (its JSON) passes: every filter given matches.
    fn passes(&self, event: &Value) -> bool {
        let data = &event["data"];
        let key = event["key"].as_str().unwrap_or("");
        let account_ok = self.account.as_deref().is_none_or(|a| {
            a.is_empty()
                || key.strip_prefix("u:") == Some(a)
                || ["account", "from", "to", "caller", "callee"]
                    .iter()
                    .any(|f| data[*f].as_str() == Some(a))
        });
        let channel_ok = self.channel.as_deref().is_none_or(|c| {
            c.is_empty() || key.strip_prefix("c:") == Some(c) || data["channel"].as_str() == Some(c)
        });
        let kind_ok = self.kind.as_deref().is_none_or(|k| {
            k.is_empty()
                || event["type"].as_str().is_some_and(|t| {
                    t == k || k.strip_suffix('*').is_some_and(|p| t.starts_with(p))
                })
        });
        account_ok && channel_ok && kind_ok
    }
}

/// `GET /console/api/apps/{app}/events`: the app's events from now on, as server-sent
/// events (`data:` one event's JSON), filtered; at most [`TAILS_MAX`] tails per node.
async fn tail<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    Path(app): Path<String>,
    Query(filter): Query<TailFilter>,
) -> Response {
    let config = shared.config();
    let Ok(app) = AppId::parse(&app, &config.limits) else {
        return refuse(
            StatusCode::NOT_FOUND,
            opensig_protocol::names::api::NOT_FOUND,
        );
    };
    if !config.app_allowed(&app) {
        return refuse(
            StatusCode::NOT_FOUND,
            opensig_protocol::names::api::NOT_FOUND,
        );
    }
    let Ok(permit) = shared.console.tails.clone().try_acquire_owned() else {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::RateLimited.as_str(),
        );
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let sh = shared.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let store = sh.store();
        // the partitions are read together (on Redis: requests sent at once)
        let partitions = store.event_partitions();
        let read_all = |after: Vec<u64>, max: usize| {
            let (store, app) = (&store, &app);
            let reads =
                (0..partitions).map(move |p| store.event_read(app, p, after[p as usize], max));
            futures_util::future::join_all(reads)
        };
        let mut after = vec![0u64; partitions as usize];
        let lasts = read_all(vec![u64::MAX; partitions as usize], 1).await;
        for (a, page) in after.iter_mut().zip(lasts) {
            *a = page.map_or(0, |page| page.last);
        }
        // the stream is open: say so (a test, or the page, knows it is listening)
        if tx
            .send(Event::default().event("ready").data("{}"))
            .await
            .is_err()
        {
            return;
        }
        let appended = sh.signaling.events().appended.clone();
        loop {
            let woken = appended.notified();
            let pages = read_all(after.clone(), TAIL_READ).await;
            for (a, page) in after.iter_mut().zip(pages) {
                let Ok(page) = page else {
                    continue;
                };
                if page.last < *a {
                    *a = page.last; // the log started again
                }
                for (seq, text) in page.events {
                    *a = seq;
                    let Ok(v) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if filter.passes(&v) && tx.send(Event::default().data(&*text)).await.is_err() {
                        return;
                    }
                }
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_filter_matches_keys_and_fields() {
        let e: Value = serde_json::from_str(
            r#"{"type":"member.joined","key":"c:lobby","data":{"channel":"lobby","account":"bob"}}"#,
        )
        .unwrap();
        let f = |a: &str, c: &str, k: &str| TailFilter {
            account: Some(a.into()),
            channel: Some(c.into()),
            kind: Some(k.into()),
        };
        assert!(f("", "", "").passes(&e));
        assert!(f("bob", "lobby", "member.*").passes(&e));
        assert!(!f("alice", "", "").passes(&e));
        assert!(!f("", "hall", "").passes(&e));
        assert!(!f("", "", "user.*").passes(&e));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_expires() {
        let c = cookie("t", 60);
        let c = c.to_str().unwrap();
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Max-Age=60")
        );
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=b; opensig_console=tok".parse().unwrap());
        assert_eq!(cookie_token(&h).as_deref(), Some("tok"));
        h.insert(header::HOST, "127.0.0.1:9".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:9".parse().unwrap());
        assert!(same_origin(&h));
    }
}
