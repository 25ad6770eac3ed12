//! Webhooks against a real HTTP receiver (an axum server in the test, answering as a test
//! tells it: 200, 500, never, or not listening at all): every event type produced by real
//! sessions with its fields, signatures checked with `ring` (not the server's HMAC), retries
//! through failures with every event delivered afterwards in order per key, the presence
//! debounce, the cap, a reload adding and removing an endpoint, the test call of the backend
//! API, and a node dying with undelivered events. The whole file runs on the memory store and
//! again on Redis (`OPENSIG_TEST_STORE=redis`); the node death needs two Redis nodes.
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::*;
use opensig_protocol::client::Event;
use opensig_protocol::names::call;
use opensig_server::config::Webhook;
use opensig_server::ServerConfig;
use parking_lot::Mutex;
use serde_json::{json, Value};

const SECRET: &str = "whsec_test_0123456789";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Ok,
    Fail,
    Hang,
    /// 307 to `/followed` (which counts what a sender following redirects would send).
    Redirect,
}

#[derive(Default)]
struct State {
    mode: Mutex<Option<Mode>>,
    /// Events of the deliveries taken (answered 200), in arrival order.
    events: Mutex<Vec<Value>>,
    /// Every request, whatever the answer.
    tries: AtomicU64,
    /// Deliveries whose signature did not verify.
    bad_signatures: AtomicU64,
    /// Requests that followed a redirect.
    followed: AtomicU64,
    notify: tokio::sync::Notify,
}

/// The receiver: an HTTP server on a fixed loopback port that can stop listening and come
/// back (connections are closed after each answer, so a stopped receiver refuses).
struct Receiver {
    addr: SocketAddr,
    state: Arc<State>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The signature header checked with `ring`'s HMAC: `t=<ts>,v1=<hex>` over `<ts>.<body>`,
/// not older than five minutes.
fn verified(headers: &HeaderMap, body: &str) -> bool {
    let Some(sig) = headers
        .get("x-opensig-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut ts = None;
    let mut mac = None;
    for part in sig.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => ts = v.parse::<u64>().ok(),
            Some(("v1", v)) => mac = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(ts), Some(mac)) = (ts, mac) else {
        return false;
    };
    if now_secs().abs_diff(ts) > 300 {
        return false;
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    ring::hmac::verify(&key, format!("{ts}.{body}").as_bytes(), &mac).is_ok()
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            addr: listener.local_addr().unwrap(),
            state: Arc::new(State::default()),
            task: Mutex::new(None),
        };
        *r.state.mode.lock() = Some(Mode::Ok);
        r.serve(listener);
        r
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let state = self.state.clone();
        let followed = self.state.clone();
        let app = axum::Router::new()
            .route(
                "/followed",
                axum::routing::post(move || {
                    let state = followed.clone();
                    async move {
                        state.followed.fetch_add(1, Ordering::SeqCst);
                        "followed"
                    }
                }),
            )
            .route(
                "/hook",
                axum::routing::post(move |headers: HeaderMap, body: String| {
                    let state = state.clone();
                    async move {
                        state.tries.fetch_add(1, Ordering::SeqCst);
                        let mode = state.mode.lock().unwrap_or(Mode::Ok);
                        let close = [(axum::http::header::CONNECTION, "close")];
                        match mode {
                            Mode::Redirect => {
                                let to = [(axum::http::header::LOCATION, "/followed")];
                                (StatusCode::TEMPORARY_REDIRECT, close, to, "moved").into_response()
                            }
                            Mode::Fail => {
                                (StatusCode::INTERNAL_SERVER_ERROR, close, "no").into_response()
                            }
                            Mode::Hang => {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                (StatusCode::OK, close, "late").into_response()
                            }
                            Mode::Ok => {
                                if !verified(&headers, &body) {
                                    state.bad_signatures.fetch_add(1, Ordering::SeqCst);
                                    return (StatusCode::UNAUTHORIZED, close, "bad signature")
                                        .into_response();
                                }
                                let v: Value = serde_json::from_str(&body).unwrap();
                                let delivery = headers
                                    .get("x-opensig-delivery")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_string();
                                let events = v["events"].as_array().cloned().unwrap_or_default();
                                assert_eq!(events[0]["id"], delivery.as_str(), "delivery id");
                                state.events.lock().extend(events);
                                state.notify.notify_waiters();
                                (StatusCode::OK, close, "ok").into_response()
                            }
                        }
                    }
                }),
            );
        *self.task.lock() = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn set(&self, mode: Mode) {
        *self.state.mode.lock() = Some(mode);
    }

    /// Stop listening: connections are refused.
    fn stop(&self) {
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
    }

    /// Listen again on the same port.
    async fn restart(&self) {
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("rebind {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    fn events(&self) -> Vec<Value> {
        self.state.events.lock().clone()
    }

    fn tries(&self) -> u64 {
        self.state.tries.load(Ordering::SeqCst)
    }

    /// Wait (at most `within`) until the events taken satisfy `cond`; return them.
    async fn wait(
        &self,
        within: Duration,
        what: &str,
        cond: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let woken = self.state.notify.notified();
            let now = self.events();
            if cond(&now) {
                assert_eq!(self.state.bad_signatures.load(Ordering::SeqCst), 0);
                return now;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                let kinds: Vec<String> = now.iter().map(describe).collect();
                panic!("{what}: not within {within:?}; got {kinds:#?}");
            }
        }
    }
}

fn app() -> opensig_protocol::ident::AppId {
    opensig_protocol::ident::AppId::from_stored(APP).unwrap()
}

/// The types of the events of one ordering key, in the order they arrived.
fn key_types(events: &[Value], key: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["key"] == key)
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

fn describe(e: &Value) -> String {
    format!(
        "{} {} {}",
        e["type"].as_str().unwrap_or("?"),
        e["key"],
        e["data"]
    )
}

fn hook(url: &str, name: &str) -> Webhook {
    Webhook {
        app: APP.into(),
        name: name.into(),
        url: url.into(),
        secret: SECRET.into(),
        events: vec![],
        channels: vec![],
    }
}

/// Quick batches and retries for the tests.
fn quick(c: &mut ServerConfig) {
    c.limits.webhook_batch_linger_ms = 50;
    c.limits.webhook_retry_max_secs = 1;
    c.limits.webhook_timeout_secs = 1;
    c.limits.presence_grace_secs = 1;
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

fn has(events: &[Value], kind: &str, data: Value) -> bool {
    events.iter().any(|e| {
        e["type"] == kind
            && data
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| &e["data"][k] == v)
    })
}

/// Events of one key keep the order they happened in (their times never go back), and no
/// id comes twice.
fn in_order_once(events: &[Value]) {
    let mut ids = std::collections::HashSet::new();
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    for e in events {
        let id = e["id"].as_str().unwrap().to_string();
        assert!(
            ids.insert(id.clone()),
            "event {id} delivered twice: {}",
            describe(e)
        );
        let key = e["key"].as_str().unwrap().to_string();
        let t = e["time"].as_u64().unwrap();
        let before = last.insert(key.clone(), t).unwrap_or(0);
        assert!(t >= before, "{key}: {} after a later event", describe(e));
    }
}

async fn set_channel_attr(u: &mut User, channel: &str, name: &str, value: &str) {
    let r = u
        .invoke(
            "channel_set_attr",
            json!({"channel": channel, "name": name, "value": value}),
        )
        .await;
    assert!(r.is_ok(), "{r:?}");
}

async fn invite(u: &mut User, channel: &str, peer: &str, extra: Value) {
    let (c, p, x) = (channel.to_string(), peer.to_string(), extra.to_string());
    u.s.with(move |cl, now| cl.invite(&c, &p, &x, now).0).await;
}

#[tokio::test]
async fn every_event_type_reaches_the_endpoint_signed_and_in_order() {
    let rx = Receiver::start().await;
    let url = rx.url();
    let srv = server_with(|c| {
        quick(c);
        c.webhooks = vec![hook(&url, "backend")];
    })
    .await;
    let ws = srv.ws_url();
    let mut alice = User::login(&ws, "alice").await;
    let mut bob = User::login(&ws, "bob").await;
    let (alice_room, _) = alice.join("room").await;
    let (bob_room, _) = bob.join("room").await;
    alice.channel_send("room", "hello room").await.unwrap();
    set_channel_attr(&mut alice, "room", "topic", "news").await;
    // the room's attributes go 1 s after it empties
    set_channel_attr(&mut alice, "room", "_channel_ttl", "1").await;
    // a message for an account that is offline
    alice.send("carol", "call me").await.unwrap();
    // an invitation's life: sent, received (the callee's client acknowledges), accepted, ended
    invite(&mut alice, "call-1", "bob", json!("{\"k\":1}")).await;
    let Event::InviteReceived { call: incoming, .. } = bob
        .expect(|e| matches!(e, Event::InviteReceived { .. }))
        .await
    else {
        unreachable!()
    };
    bob.s
        .with(move |c, now| {
            c.call_reply(
                incoming,
                call::VOIP_INVITE_ACCEPT,
                "call-1",
                "alice",
                "\"sure\"",
                now,
            )
        })
        .await;
    alice
        .expect(|e| {
            matches!(
                e,
                Event::Call {
                    what: opensig_protocol::client::CallEvent::AcceptedByPeer,
                    ..
                }
            )
        })
        .await;
    bob.s
        .with(move |c, now| {
            c.call_reply(
                incoming,
                call::VOIP_INVITE_BYE,
                "call-1",
                "alice",
                "\"\"",
                now,
            )
        })
        .await;
    // refused, and the server's own ends: callee offline at once, and no answer
    invite(&mut alice, "call-2", "bob", json!("")).await;
    let Event::InviteReceived { call: second, .. } = bob
        .expect(|e| matches!(e, Event::InviteReceived { channel, .. } if channel == "call-2"))
        .await
    else {
        unreachable!()
    };
    bob.s
        .with(move |c, now| {
            c.call_reply(
                second,
                call::VOIP_INVITE_REFUSE,
                "call-2",
                "alice",
                "\"busy\"",
                now,
            )
        })
        .await;
    invite(
        &mut alice,
        "call-3",
        "carol",
        json!("{\"_require_peer_online\":1}"),
    )
    .await;
    invite(&mut alice, "call-4", "bob", json!("{\"_timeout\":1}")).await;
    // members leave, the room empties, bob logs out, alice is thrown out by the backend
    let req = bob
        .s
        .with(move |c, now| c.channel_leave(bob_room, "room", now))
        .await;
    bob.done(req).await.unwrap();
    let req = alice
        .s
        .with(move |c, now| c.channel_leave(alice_room, "room", now))
        .await;
    alice.done(req).await.unwrap();
    let req = bob.s.with(|c, now| c.logout(now)).await;
    let _ = bob.done(req).await;
    let kicked = opensig_server::on_running!(&srv, r => r
        .shared
        .signaling
        .api_kick(&app(), "alice")
        .await
        .unwrap());
    assert!(kicked);

    let events = rx
        .wait(Duration::from_secs(20), "every event type", |ev| {
            has(
                ev,
                "user.offline",
                json!({"account": "alice", "reason": "kicked"}),
            ) && has(
                ev,
                "invite.failed",
                json!({"channel": "call-4", "reason": "no_answer"}),
            ) && has(ev, "channel.attr", json!({"channel": "room", "by": ""}))
        })
        .await;
    in_order_once(&events);
    let want = [
        ("user.online", json!({"account": "alice"})),
        ("user.online", json!({"account": "bob"})),
        ("channel.occupied", json!({"channel": "room"})),
        (
            "member.joined",
            json!({"channel": "room", "account": "alice"}),
        ),
        (
            "member.joined",
            json!({"channel": "room", "account": "bob"}),
        ),
        (
            "channel.message",
            json!({"channel": "room", "from": "alice", "text": "hello room"}),
        ),
        (
            "channel.attr",
            json!({"channel": "room", "by": "alice", "op": "update", "name": "topic", "value": "news"}),
        ),
        (
            "message.offline",
            json!({"from": "alice", "to": "carol", "text": "call me"}),
        ),
        (
            "invite.sent",
            json!({"caller": "alice", "callee": "bob", "channel": "call-1", "extra": "{\"k\":1}"}),
        ),
        (
            "invite.received",
            json!({"caller": "alice", "callee": "bob", "channel": "call-1", "by": "bob"}),
        ),
        (
            "invite.accepted",
            json!({"caller": "alice", "callee": "bob", "channel": "call-1", "extra": "sure"}),
        ),
        (
            "invite.ended",
            json!({"caller": "alice", "callee": "bob", "channel": "call-1", "by": "bob"}),
        ),
        (
            "invite.refused",
            json!({"channel": "call-2", "by": "bob", "extra": "busy"}),
        ),
        (
            "invite.failed",
            json!({"caller": "alice", "callee": "carol", "channel": "call-3", "code": 703, "reason": "callee_offline"}),
        ),
        (
            "invite.failed",
            json!({"callee": "bob", "channel": "call-4", "code": 704, "reason": "no_answer"}),
        ),
        ("member.left", json!({"channel": "room", "account": "bob"})),
        (
            "member.left",
            json!({"channel": "room", "account": "alice"}),
        ),
        ("channel.vacated", json!({"channel": "room"})),
        (
            "channel.attr",
            json!({"channel": "room", "by": "", "op": "clear", "name": "", "value": ""}),
        ),
        (
            "user.offline",
            json!({"account": "bob", "reason": "logout"}),
        ),
        ("user.kicked", json!({"account": "alice", "by": "api"})),
        (
            "user.offline",
            json!({"account": "alice", "reason": "kicked"}),
        ),
    ];
    for (kind, data) in want {
        assert!(
            has(&events, kind, data.clone()),
            "missing {kind} {data}; got {:#?}",
            events.iter().map(describe).collect::<Vec<_>>()
        );
    }
    // a channel's life in its order
    let room: Vec<String> = key_types(&events, "c:room");
    assert_eq!(
        room,
        [
            "channel.occupied",
            "member.joined",
            "member.joined",
            "channel.message",
            "channel.attr",
            "channel.attr",
            "member.left",
            "member.left",
            "channel.vacated",
            "channel.attr"
        ]
    );
    for e in &events {
        assert_eq!(e["app"], APP);
        assert!(e["time"].as_u64().unwrap() > 1_700_000_000_000);
    }
    // the metrics count them
    let text = srv.webhooks_metrics();
    assert!(
        text.contains(
            "opensig_webhook_events_delivered_total{app=\"testapp\",endpoint=\"backend\"}"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_failing_endpoint_gets_everything_afterwards_in_order() {
    let rx = Receiver::start().await;
    let url = rx.url();
    let srv = server_with(|c| {
        quick(c);
        c.limits.channel_messages_per_second = 0;
        c.limits.user_messages_per_second = 0;
        c.webhooks = vec![hook(&url, "backend")];
    })
    .await;
    let ws = srv.ws_url();
    let mut alice = User::login(&ws, "alice").await;
    alice.join("flow").await;
    let mut sent = 0;
    // a redirect is not followed: the batch is tried again, here, later
    rx.set(Mode::Redirect);
    send(&mut alice, &mut sent, 1).await;
    wait_for("a redirected try, then its retry", || async {
        rx.tries() >= 2
    })
    .await;
    // 500s
    rx.set(Mode::Fail);
    send(&mut alice, &mut sent, 10).await;
    wait_for("tries that fail", || async { rx.tries() >= 2 }).await;
    // no answer within the timeout
    rx.set(Mode::Hang);
    send(&mut alice, &mut sent, 10).await;
    let t = rx.tries();
    wait_for("a try that times out", || async { rx.tries() > t + 1 }).await;
    // refused connections, for 30 s and at least three tries
    let retries = || metric(&srv.webhooks_metrics(), "opensig_webhook_retries_total");
    let before = retries();
    let down = tokio::time::Instant::now();
    rx.stop();
    send(&mut alice, &mut sent, 10).await;
    wait_for("three refused tries", || async {
        retries() >= before + 3.0
    })
    .await;
    tokio::time::sleep_until(down + Duration::from_secs(30)).await;
    rx.set(Mode::Ok);
    rx.restart().await;
    send(&mut alice, &mut sent, 10).await;
    let events = rx
        .wait(Duration::from_secs(30), "41 messages", |ev| {
            of_type(ev, "channel.message").len() >= 41
        })
        .await;
    in_order_once(&events);
    let texts: Vec<&str> = of_type(&events, "channel.message")
        .iter()
        .map(|e| e["data"]["text"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..41).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected, "every message once, in order");
    let text = srv.webhooks_metrics();
    let retried = metric(&text, "opensig_webhook_retries_total");
    assert!(retried >= 3.0, "{text}");
    assert_eq!(metric(&text, "opensig_webhook_events_dropped_total"), 0.0);
    assert_eq!(
        rx.state.followed.load(Ordering::SeqCst),
        0,
        "a redirect was followed"
    );
}

/// Send `n` channel messages `m<i>` into `flow`, numbered on from `*sent`.
async fn send(alice: &mut User, sent: &mut usize, n: usize) {
    for i in *sent..*sent + n {
        alice.channel_send("flow", &format!("m{i}")).await.unwrap();
    }
    *sent += n;
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains("endpoint=\"backend\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_connection_back_within_the_grace_period_shows_no_offline() {
    let rx = Receiver::start().await;
    let url = rx.url();
    let srv = server_with(|c| {
        quick(c);
        c.limits.presence_grace_secs = 3;
        c.webhooks = vec![hook(&url, "backend")];
    })
    .await;
    let proxy = CutProxy::start(srv.addr()).await;
    let mut c = config(&proxy.ws_url(), "dora", "_no_need_token");
    c.reconnect_count = 100;
    let mut dora = User::login_with(c).await;
    rx.wait(WAIT, "online", |ev| {
        has(ev, "user.online", json!({"account": "dora"}))
    })
    .await;
    // cut, back at once
    proxy.cut();
    dora.expect(|e| matches!(e, Event::Reconnected)).await;
    // a later event of the same user ends the check (its events are delivered in order, and
    // an offline of dora holds them until the grace period is over)
    invite(&mut dora, "marker", "nobody", json!("")).await;
    let events = rx
        .wait(Duration::from_secs(15), "dora's invitation", |ev| {
            has(
                ev,
                "invite.sent",
                json!({"caller": "dora", "channel": "marker"}),
            )
        })
        .await;
    let dora_events: Vec<String> = key_types(&events, "u:dora");
    assert_eq!(
        dora_events,
        ["user.online", "invite.sent"],
        "no offline/online pair"
    );
    // away for longer than the grace period: offline, then online
    proxy.set_down(true);
    proxy.cut();
    let events = rx
        .wait(Duration::from_secs(15), "dora offline", |ev| {
            has(
                ev,
                "user.offline",
                json!({"account": "dora", "reason": "connection_lost"}),
            )
        })
        .await;
    assert_eq!(
        of_type(&events, "user.online")
            .iter()
            .filter(|e| e["data"]["account"] == "dora")
            .count(),
        1
    );
    proxy.set_down(false);
    dora.expect(|e| matches!(e, Event::Reconnected)).await;
    let events = rx
        .wait(Duration::from_secs(15), "dora online again", |ev| {
            ev.iter()
                .filter(|e| e["type"] == "user.online" && e["data"]["account"] == "dora")
                .count()
                == 2
        })
        .await;
    let dora_events: Vec<String> = key_types(&events, "u:dora");
    assert_eq!(
        dora_events,
        ["user.online", "invite.sent", "user.offline", "user.online"]
    );
}

#[tokio::test]
async fn an_endpoint_that_is_down_cannot_make_the_log_grow_past_its_cap() {
    let rx = Receiver::start().await;
    rx.stop();
    let url = rx.url();
    let srv = server_with(|c| {
        quick(c);
        c.limits.channel_messages_per_second = 0;
        c.limits.user_messages_per_second = 0;
        // 8 partitions: 4 events each at most
        c.limits.app_events_max = 32;
        c.webhooks = vec![hook(&url, "backend")];
    })
    .await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    alice.join("flood").await;
    for i in 0..200 {
        alice.channel_send("flood", &format!("f{i}")).await.unwrap();
    }
    // what the store keeps of the app's events stays within the cap
    let app = app();
    let mut kept = 0;
    for p in 0..opensig_server::events::PARTITIONS {
        kept += opensig_server::on_running!(&srv, r => r
            .shared
            .store()
            .event_read(&app, p, 0, 10_000)
            .await
            .unwrap()
            .events
            .len());
    }
    assert!(kept <= 32, "kept {kept}");
    rx.restart().await;
    let events = rx
        .wait(Duration::from_secs(20), "the latest message", |ev| {
            has(ev, "channel.message", json!({"text": "f199"}))
        })
        .await;
    in_order_once(&events);
    let delivered = of_type(&events, "channel.message").len();
    assert!((1..=32).contains(&delivered), "{delivered}");
    wait_for("the drop counter", || {
        let m = srv.webhooks_metrics();
        async move { metric(&m, "opensig_webhook_events_dropped_total") >= 160.0 }
    })
    .await;
}

#[tokio::test]
async fn a_reload_adds_and_removes_endpoints() {
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    let (u1, u2) = (first.url(), second.url());
    let srv = server_with(|c| {
        quick(c);
        c.webhooks = vec![hook(&u1, "first")];
    })
    .await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    alice.join("a").await;
    first
        .wait(WAIT, "join a", |ev| {
            has(ev, "member.joined", json!({"channel": "a"}))
        })
        .await;
    // add the second endpoint
    let mut c = (*srv.config()).clone();
    c.webhooks.push(hook(&u2, "second"));
    srv.reload(c).unwrap();
    // events after the reload reach it (the endpoint starts within a second)
    wait_for("the second endpoint", || {
        let srv = &srv;
        let second = &second;
        async move {
            opensig_server::on_running!(srv, r => r
                .shared
                .signaling
                .api_channel_message(&app(), "a", "system", "ping")
                .await
                .ok());
            tokio::time::sleep(Duration::from_millis(200)).await;
            has(&second.events(), "channel.message", json!({"text": "ping"}))
        }
    })
    .await;
    // remove the first: the second gets what follows, the first no more
    let mut c = (*srv.config()).clone();
    c.webhooks.retain(|w| w.name == "second");
    srv.reload(c).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await; // the workers of "first" stop at the next sweep
    let before = first.events().len();
    alice.join("b").await;
    second
        .wait(WAIT, "join b", |ev| {
            has(ev, "member.joined", json!({"channel": "b"}))
        })
        .await;
    assert!(!has(
        &first.events()[before..],
        "member.joined",
        json!({"channel": "b"})
    ));
}

/// `POST /api/v1/apps/{app}/webhooks/test` from loopback (apps without a certificate): its
/// status and JSON body.
async fn test_call(addr: SocketAddr, app: &'static str) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let r = ureq::post(&format!("http://{addr}/api/v1/apps/{app}/webhooks/test")).call();
        let r = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        (r.status(), r.into_json::<Value>().unwrap_or_default())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_test_call_sends_a_signed_event_and_says_what_the_endpoint_answered() {
    let rx = Receiver::start().await;
    let url = rx.url();
    let srv = server_with(|c| {
        c.limits.webhook_timeout_secs = 1;
        c.webhooks = vec![hook(&url, "backend")];
    })
    .await;
    let addr = srv.addr();
    let (status, body) = test_call(addr, APP).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["endpoint"], "backend");
    assert_eq!(body["results"][0]["status"], 200);
    assert_eq!(body["results"][0]["body"], "ok");
    let events = rx
        .wait(WAIT, "the test event", |ev| {
            !of_type(ev, "webhook.test").is_empty()
        })
        .await;
    assert_eq!(events[0]["id"], body["id"]);
    // an endpoint that fails says so
    rx.set(Mode::Fail);
    let (status, body) = test_call(addr, APP).await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["status"], 500);
    // one that does not answer: the call says so after webhook_timeout_secs, and returns
    rx.set(Mode::Hang);
    let (status, body) = test_call(addr, APP).await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["status"], Value::Null);
    assert!(
        body["results"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no answer within"),
        "{body}"
    );
    // an app without endpoints: 404
    let (status, _) = test_call(addr, "other").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_node_that_dies_mid_batch_leaves_its_events_to_the_other() {
    if !redis_store() {
        return; // two nodes need the Redis store
    }
    let rx = Receiver::start().await;
    rx.set(Mode::Hang);
    let url = rx.url();
    let nodes = cluster(2, |c| {
        quick(c);
        c.limits.webhook_timeout_secs = 2;
        c.webhooks = vec![hook(&url, "backend")];
    })
    .await;
    let mut nodes = nodes.into_iter();
    let (a, b) = (nodes.next().unwrap(), nodes.next().unwrap());
    // node B takes no lease while A is alive: B starts its workers after A holds them all
    let mut alice = User::login(&a.ws_url(), "alice").await;
    for i in 0..8 {
        alice.join(&format!("room{i}")).await;
    }
    // every partition is being delivered (and hanging) by whichever node leased it
    wait_for("deliveries in flight", || async { rx.tries() >= 2 }).await;
    // kill A as a crash would: its leases lapse, B delivers what A had in flight
    a.kill().await;
    rx.set(Mode::Ok);
    let events = rx
        .wait(Duration::from_secs(30), "every join", |ev| {
            (0..8).all(|i| has(ev, "member.joined", json!({"channel": format!("room{i}")})))
        })
        .await;
    let ids: std::collections::HashSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(ids.len() >= 9, "online and 8 joins at least");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_process_killed_with_sigkill_mid_delivery_loses_no_event() {
    if redis_store() {
        return; // runs once, in the default pass (it starts its own Redis-backed processes)
    }
    let rx = Receiver::start().await;
    rx.set(Mode::Hang);
    let dir = std::env::temp_dir().join(format!("opensig-webhooks-{}", unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("opensig.toml");
    std::fs::write(
        &file,
        format!(
            "[limits]\nwebhook_timeout_secs = 2\nwebhook_batch_linger_ms = 50\nwebhook_retry_max_secs = 1\n\
             [[webhooks]]\napp = \"{APP}\"\nname = \"backend\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
            rx.url()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (redis, prefix) = (redis_url(), unique_prefix());
    let config = file.to_string_lossy().to_string();
    let node = |id: &'static str| {
        ServerProcess::start(&[
            "--config",
            &config,
            "--redis",
            &redis,
            "--redis-prefix",
            &prefix,
            "--node-id",
            id,
        ])
    };
    let mut a = node("whA");
    // node A logs the events and holds every lease; its deliveries hang at the receiver
    let mut alice = User::login(&a.url, "alice").await;
    for i in 0..8 {
        alice.join(&format!("room{i}")).await;
    }
    wait_for("deliveries in flight on node A", || async {
        rx.tries() >= 1
    })
    .await;
    let b = node("whB");
    a.kill();
    drop(alice);
    rx.set(Mode::Ok);
    // node B takes the partitions over once A's leases lapse, and delivers from A's cursors
    let events = rx
        .wait(Duration::from_secs(30), "every join, from node B", |ev| {
            (0..8).all(|i| has(ev, "member.joined", json!({"channel": format!("room{i}")})))
                && has(ev, "user.online", json!({"account": "alice"}))
        })
        .await;
    let ids: std::collections::HashSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(ids.len() >= 9);
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
