//! The backend HTTP API under `/api/v1/` (an app's own servers taking part: messages from a
//! chosen account, presence, attributes, channels, kicks, history). JSON in and out. Each
//! handler: let the caller in ([`authorize`]: the app's credential, or loopback for an app
//! without a certificate), spend the app's API budget, then one rule of
//! [`crate::signaling::Signaling`]. The OpenAPI document is `docs/openapi.json`.
//!
//! Not under the permissive CORS layer of the rest of the router: a web page must never be
//! able to drive an app's backend API from a browser on the server's machine.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use opensig_protocol::frame::Reply;
use opensig_protocol::ident::AppId;
use opensig_protocol::names::api;
use opensig_protocol::ErrorKind;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::listen::ConnInfo;
use crate::signaling::api::ApiAccess;
use crate::store::Store;
use crate::Shared;

/// The OpenAPI 3 description of this API.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Largest request body (a message, its sender, an attribute: well below this).
const BODY_MAX: usize = 64 * 1024;

type Reply_ = Result<Json<Value>, ApiError>;

/// A refusal: its HTTP status and `{"error": <string>, "code": <documented code>}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, Value);

impl ApiError {
    fn unauthorized() -> ApiError {
        ApiError(
            StatusCode::UNAUTHORIZED,
            json!({"error": api::UNAUTHORIZED}),
        )
    }
}

impl From<ErrorKind> for ApiError {
    fn from(e: ErrorKind) -> ApiError {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        ApiError(
            status,
            json!({"error": e.as_str(), "code": e.code().value()}),
        )
    }
}

impl From<JsonRejection> for ApiError {
    fn from(_: JsonRejection) -> ApiError {
        ErrorKind::InvalidArgs.into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(self.1)).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

/// The API's routes (state: the server's shared state).
pub fn router<S: Store>() -> Router<Arc<Shared<S>>> {
    let app = "/api/v1/apps/{app}";
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route(&format!("{app}/peer_messages"), post(peer_message::<S>))
        .route(&format!("{app}/users/status"), post(status::<S>))
        .route(
            &format!("{app}/users/{{account}}/attrs"),
            get(user_attrs::<S>),
        )
        .route(
            &format!("{app}/users/{{account}}/attrs/{{name}}"),
            put(set_user_attr::<S>).delete(del_user_attr::<S>),
        )
        .route(&format!("{app}/users/{{account}}"), get(user::<S>))
        .route(&format!("{app}/users/{{account}}/kick"), post(kick::<S>))
        .route(&format!("{app}/channels"), get(channels::<S>))
        .route(&format!("{app}/channels/{{channel}}"), get(channel::<S>))
        .route(
            &format!("{app}/channels/{{channel}}/members"),
            get(members::<S>),
        )
        .route(
            &format!("{app}/channels/{{channel}}/messages"),
            post(channel_message::<S>),
        )
        .route(
            &format!("{app}/channels/{{channel}}/attrs"),
            get(channel_attrs::<S>).delete(clear_channel_attrs::<S>),
        )
        .route(
            &format!("{app}/channels/{{channel}}/attrs/{{name}}"),
            put(set_channel_attr::<S>).delete(del_channel_attr::<S>),
        )
        .route(
            &format!("{app}/channels/{{channel}}/history"),
            get(history::<S>),
        )
        .route(&format!("{app}/webhooks/test"), post(webhook_test::<S>))
        .route("/api/v1", get(not_found))
        .route(
            "/api/v1/{*rest}",
            get(not_found)
                .post(not_found)
                .put(not_found)
                .delete(not_found),
        )
        .layer(DefaultBodyLimit::max(BODY_MAX))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, json!({"error": api::NOT_FOUND}))
}

/// Whether a request comes from this machine and not through a proxy or a browser page:
/// loopback peer, no `Forwarded`/`X-Forwarded-For`, no `Origin`.
fn from_this_machine(info: &ConnInfo, headers: &HeaderMap) -> bool {
    let loopback = match info.peer.ip() {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v| v.is_loopback()),
    };
    loopback
        && !headers.contains_key(header::FORWARDED)
        && !headers.contains_key("x-forwarded-for")
        && !headers.contains_key(header::ORIGIN)
}

/// Let the caller in to `app`'s API and spend one request of the app's budget. Everything
/// that is not let in gets the same 401, whether the app exists or not. An operator signed
/// in to the console (its guard checked the sign-in, the CSRF token and the role) is let in
/// to every configured app.
fn authorize<S: Store>(
    shared: &Shared<S>,
    app: &str,
    info: Option<&ConnInfo>,
    parts: &Parts,
) -> Result<AppId, ApiError> {
    let (headers, method, path) = (&parts.headers, &parts.method, parts.uri.path());
    let sig = &shared.signaling;
    let app_id = sig.api_app(app).map_err(|_| ApiError::unauthorized())?;
    let who = if let Some(op) = parts.extensions.get::<crate::console::Operator>() {
        let config = shared.config();
        if !config.app_allowed(&app_id) {
            return Err(ApiError::unauthorized());
        }
        format!("console operator {}", op.name)
    } else {
        let info = info.ok_or_else(ApiError::unauthorized)?;
        let credential = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match sig.api_access(&app_id, credential) {
            ApiAccess::Granted { key, read_only } => {
                if read_only && !matches!(*method, Method::GET | Method::HEAD) {
                    return Err(ApiError::unauthorized());
                }
                key.unwrap_or_else(|| "certificate".into())
            }
            ApiAccess::WithoutCredential { open } if open || from_this_machine(info, headers) => {
                "no credential".into()
            }
            _ => return Err(ApiError::unauthorized()),
        }
    };
    // the credential's name, never its secret
    tracing::info!(target: "opensig::api", app = %app_id, key = %who, %method, path, "api request");
    let rate = shared.config().limits.api_requests_per_second;
    let mut bucket = shared
        .api_rates
        .entry(app_id.to_string())
        .or_insert_with(|| crate::ratelimit::Bucket::new(rate));
    if !bucket.take(rate) {
        return Err(ErrorKind::RateLimited.into());
    }
    Ok(app_id)
}

/// A caller let in to one app's API ([`authorize`]), with the server's shared state: the
/// first extractor of every API handler.
pub struct Caller<S: Store> {
    sh: Arc<Shared<S>>,
    app: AppId,
}

impl<S: Store> FromRequestParts<Arc<Shared<S>>> for Caller<S> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        sh: &Arc<Shared<S>>,
    ) -> Result<Caller<S>, ApiError> {
        let params = Path::<HashMap<String, String>>::from_request_parts(parts, sh)
            .await
            .map_err(|_| ApiError::unauthorized())?;
        let info = parts.extensions.get::<ConnInfo>();
        let app = params.get("app").map_or("", String::as_str);
        let app = authorize(sh, app, info, parts)?;
        Ok(Caller {
            sh: sh.clone(),
            app,
        })
    }
}

fn ok(v: Value) -> Reply_ {
    Ok(Json(v))
}

fn object(pairs: Vec<(String, String)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect::<Map<_, _>>(),
    )
}

#[derive(Deserialize)]
struct PeerMessage {
    from: String,
    to: String,
    msg: String,
    ttl: Option<u64>,
}

async fn peer_message<S: Store>(
    c: Caller<S>,
    body: Result<Json<PeerMessage>, JsonRejection>,
) -> Reply_ {
    let Json(m) = body?;
    let who = (m.from.as_str(), m.to.as_str());
    c.sh.signaling
        .api_peer_message(&c.app, who, &m.msg, m.ttl)
        .await?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct Status {
    accounts: Vec<String>,
}

async fn status<S: Store>(c: Caller<S>, body: Result<Json<Status>, JsonRejection>) -> Reply_ {
    let Json(q) = body?;
    let online = c.sh.signaling.api_status(&c.app, &q.accounts).await?;
    let status: Map<String, Value> = q
        .accounts
        .into_iter()
        .zip(online)
        .map(|(a, on)| (a, Value::from(u8::from(on))))
        .collect();
    ok(json!({ "status": status }))
}

async fn user<S: Store>(c: Caller<S>, Path((_, account)): Path<(String, String)>) -> Reply_ {
    let u = c.sh.signaling.api_user(&c.app, &account).await?;
    ok(json!({
        "account": account,
        "online": u.online,
        "node": u.node,
        "attrs": object(u.attrs),
        "channels": u.channels,
        "complete": u.complete,
    }))
}

async fn user_attrs<S: Store>(c: Caller<S>, Path((_, account)): Path<(String, String)>) -> Reply_ {
    let attrs = c.sh.signaling.api_user_attrs(&c.app, &account).await?;
    ok(json!({ "attrs": object(attrs) }))
}

#[derive(Deserialize)]
struct Value_ {
    value: String,
}

async fn set_user_attr<S: Store>(
    c: Caller<S>,
    Path((_, account, name)): Path<(String, String, String)>,
    body: Result<Json<Value_>, JsonRejection>,
) -> Reply_ {
    let Json(v) = body?;
    c.sh.signaling
        .api_set_user_attr(&c.app, &account, &name, &v.value)
        .await?;
    ok(json!({}))
}

async fn del_user_attr<S: Store>(
    c: Caller<S>,
    Path((_, account, name)): Path<(String, String, String)>,
) -> Reply_ {
    c.sh.signaling
        .api_set_user_attr(&c.app, &account, &name, "")
        .await?;
    ok(json!({}))
}

#[derive(Deserialize, Default)]
struct WebhookTest {
    endpoint: Option<String>,
}

/// A signed `webhook.test` event to each of the app's endpoints (or the one named), and what
/// each answered.
async fn webhook_test<S: Store>(c: Caller<S>, body: Option<Json<WebhookTest>>) -> Reply_ {
    let which = body.map(|Json(b)| b).unwrap_or_default().endpoint;
    let config = c.sh.config();
    let endpoints: Vec<_> = config
        .webhooks_of(&c.app)
        .filter(|w| which.as_ref().is_none_or(|n| *n == w.name))
        .cloned()
        .collect();
    if endpoints.is_empty() {
        return Err(not_found().await);
    }
    let id = c.sh.signaling.events().next_id();
    let timeout = std::time::Duration::from_secs(config.limits.webhook_timeout_secs.max(1));
    let answers = c.sh.webhooks.test(&c.app, &endpoints, &id, timeout).await;
    ok(json!({ "id": id, "results": answers }))
}

async fn kick<S: Store>(c: Caller<S>, Path((_, account)): Path<(String, String)>) -> Reply_ {
    let kicked = c.sh.signaling.api_kick(&c.app, &account).await?;
    ok(json!({ "kicked": kicked }))
}

#[derive(Deserialize)]
struct Page {
    cursor: Option<String>,
    prefix: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

async fn channels<S: Store>(c: Caller<S>, Query(p): Query<Page>) -> Reply_ {
    let cursor = p.cursor.unwrap_or_default();
    let page =
        c.sh.signaling
            .api_channels(
                &c.app,
                &cursor,
                p.limit.unwrap_or(100),
                p.prefix.as_deref().unwrap_or(""),
            )
            .await?;
    let list: Vec<Value> = page
        .channels
        .into_iter()
        .map(|(name, members)| json!({"name": name, "members": members}))
        .collect();
    ok(json!({ "channels": list, "next": page.next }))
}

async fn channel<S: Store>(c: Caller<S>, Path((_, channel)): Path<(String, String)>) -> Reply_ {
    let (count, _) = c.sh.signaling.api_members(&c.app, &channel, 0, 1).await?;
    ok(json!({ "name": channel, "members": count }))
}

async fn members<S: Store>(
    c: Caller<S>,
    Path((_, channel)): Path<(String, String)>,
    Query(p): Query<Page>,
) -> Reply_ {
    let (count, list) =
        c.sh.signaling
            .api_members(
                &c.app,
                &channel,
                p.offset.unwrap_or(0),
                p.limit.unwrap_or(100),
            )
            .await?;
    ok(json!({ "count": count, "members": list }))
}

#[derive(Deserialize)]
struct ChannelMessage {
    from: String,
    msg: String,
}

async fn channel_message<S: Store>(
    c: Caller<S>,
    Path((_, channel)): Path<(String, String)>,
    body: Result<Json<ChannelMessage>, JsonRejection>,
) -> Reply_ {
    let Json(m) = body?;
    c.sh.signaling
        .api_channel_message(&c.app, &channel, &m.from, &m.msg)
        .await?;
    ok(json!({}))
}

async fn channel_attrs<S: Store>(
    c: Caller<S>,
    Path((_, channel)): Path<(String, String)>,
) -> Reply_ {
    let attrs = c.sh.signaling.api_channel_attrs(&c.app, &channel).await?;
    ok(json!({ "attrs": object(attrs) }))
}

async fn set_channel_attr<S: Store>(
    c: Caller<S>,
    Path((_, channel, name)): Path<(String, String, String)>,
    body: Result<Json<Value_>, JsonRejection>,
) -> Reply_ {
    let Json(v) = body?;
    c.sh.signaling
        .api_set_channel_attr(&c.app, &channel, &name, &v.value)
        .await?;
    ok(json!({}))
}

async fn del_channel_attr<S: Store>(
    c: Caller<S>,
    Path((_, channel, name)): Path<(String, String, String)>,
) -> Reply_ {
    c.sh.signaling
        .api_del_channel_attr(&c.app, &channel, &name)
        .await?;
    ok(json!({}))
}

async fn clear_channel_attrs<S: Store>(
    c: Caller<S>,
    Path((_, channel)): Path<(String, String)>,
) -> Reply_ {
    c.sh.signaling
        .api_clear_channel_attrs(&c.app, &channel)
        .await?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct HistoryQuery {
    after: Option<u64>,
    limit: Option<u64>,
}

async fn history<S: Store>(
    c: Caller<S>,
    Path((_, channel)): Path<(String, String)>,
    Query(q): Query<HistoryQuery>,
) -> Reply_ {
    let reply =
        c.sh.signaling
            .api_history(&c.app, &channel, q.after, q.limit)
            .await?;
    let Reply::History { name, last, msgs } = reply else {
        return Err(ErrorKind::Unavailable.into());
    };
    let msgs: Vec<Value> = msgs.iter().map(|k| k.to_json()).collect();
    ok(json!({ "name": name, "last": last, "msgs": msgs }))
}
