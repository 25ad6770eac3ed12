//! The operator console's server side: sign-in (wrong passwords, lockout, the cookie's
//! flags), the guard (CSRF token, foreign origins, the read-only role, an operator removed by
//! a reload), the actions a native user sees (kick, a channel message, attributes), the
//! overview and the live event tail, and one console seeing and kicking a user on another
//! node. The browser side is `tests/console/console.test.mjs`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use common::*;
use opensig_protocol::client::Event;
use opensig_protocol::codes::Code;
use opensig_server::config::Operator;
use opensig_server::console::auth::hash_password;
use opensig_server::ServerConfig;
use serde_json::{json, Value};

const ADMIN_PW: &str = "admin password 1";
const VIEWER_PW: &str = "viewer password 1";

/// Operators `admin`, `viewer` (read-only) and `locky`, the console on the metrics listener.
fn with_console(c: &mut ServerConfig) {
    c.metrics_listen = Some("127.0.0.1:0".into());
    c.limits.console_signin_failures = 3;
    let op = |name: &str, pw: &str, read_only| Operator {
        name: name.into(),
        password_hash: hash_password(pw),
        read_only,
    };
    c.operators = vec![
        op("admin", ADMIN_PW, false),
        op("viewer", VIEWER_PW, true),
        op("locky", "locky password 1", false),
    ];
}

/// A request to a console.
async fn http(
    method: &'static str,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Value>,
) -> HttpReply {
    http_request(
        method,
        url,
        headers,
        body,
        &["set-cookie", "content-security-policy"],
    )
    .await
}

/// A signed-in operator (or not) at one console.
#[derive(Clone)]
struct Op {
    base: String,
    cookie: String,
    csrf: String,
}

impl Op {
    async fn sign_in(base: &str, name: &str, pw: &str) -> (HttpReply, Option<Op>) {
        let r = http(
            "POST",
            format!("{base}/console/api/signin"),
            vec![],
            Some(json!({"name": name, "password": pw})),
        )
        .await;
        let op = (r.status == 200).then(|| Op {
            base: base.to_string(),
            cookie: r
                .header("set-cookie")
                .and_then(|c| c.split(';').next())
                .unwrap()
                .to_string(),
            csrf: r.body["csrf"].as_str().unwrap().to_string(),
        });
        (r, op)
    }

    async fn get(&self, path: &str) -> HttpReply {
        let h = vec![("cookie", self.cookie.clone())];
        http("GET", format!("{}{path}", self.base), h, None).await
    }

    /// A state-changing request with the sign-in's CSRF token.
    async fn act(&self, method: &'static str, path: &str, body: Option<Value>) -> HttpReply {
        let h = vec![
            ("cookie", self.cookie.clone()),
            ("x-csrf-token", self.csrf.clone()),
        ];
        http(method, format!("{}{path}", self.base), h, body).await
    }

    /// Kick `user` through the console: its session hears `onLogout(103)`.
    async fn kick(&self, user: &mut User) {
        let path = format!("/console/api/v1/apps/{APP}/users/{}/kick", user.name);
        let r = self.act("POST", &path, None).await;
        assert_eq!(r.body["kicked"], true, "{}", r.body);
        user.expect(|e| {
            matches!(
                e,
                Event::Logout {
                    code: Code::LogoutKicked
                }
            )
        })
        .await;
    }

    async fn lookup(&self, account: &str) -> Value {
        let r = self
            .get(&format!("/console/api/v1/apps/{APP}/users/{account}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_is_hashed_locked_out_and_every_act_needs_the_token_and_the_role() {
    let srv = server_with(|c| {
        with_console(c);
        c.apps.insert(APP.into(), None);
    })
    .await;
    let base = format!("http://{}", srv.console_addr().expect("console served"));
    // the page and its assets, with a strict policy; never on the public port
    let page = http("GET", format!("{base}/console/"), vec![], None).await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("script-src 'self'"));
    let public = http(
        "GET",
        format!("{}/console/api/overview", srv.http_url()),
        vec![],
        None,
    )
    .await;
    assert_ne!(
        public.status, 200,
        "the public port does not serve the console"
    );
    let no_cookie = http("GET", format!("{base}/console/api/overview"), vec![], None).await;
    assert_eq!(
        (no_cookie.status, &no_cookie.body["error"]),
        (401, &json!("unauthorized"))
    );

    // wrong passwords and unknown names get the same answer; a name is locked after 3
    for (name, pw) in [("admin", "nope"), ("nobody", ADMIN_PW)] {
        let (r, op) = Op::sign_in(&base, name, pw).await;
        assert!(op.is_none() && r.status == 401 && r.body["error"] == "unauthorized");
    }
    for _ in 0..3 {
        assert_eq!(Op::sign_in(&base, "locky", "wrong").await.0.status, 401);
    }
    let (locked, _) = Op::sign_in(&base, "locky", "locky password 1").await;
    assert_eq!(
        (locked.status, &locked.body["error"]),
        (429, &json!("locked"))
    );

    let (r, admin) = Op::sign_in(&base, "admin", ADMIN_PW).await;
    let admin = admin.expect("admin signs in");
    let set = r.header("set-cookie").unwrap().to_string();
    for flag in [
        "HttpOnly",
        "SameSite=Strict",
        "Max-Age=28800",
        "Path=/console",
    ] {
        assert!(set.contains(flag), "{set} lacks {flag}");
    }
    assert_eq!(r.body["read_only"], false);

    // a native user, in channels among others'
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    let (ch, _) = bob.join("lobby").await;
    let mut eve = User::login(&srv.ws_url(), "eve").await;
    for name in ["attic", "cellar", "yard"] {
        eve.join(name).await;
    }
    bob.join("yard").await;
    let u = admin.lookup("bob").await;
    assert_eq!(
        (&u["online"], &u["channels"], &u["complete"]),
        (&json!(true), &json!(["lobby", "yard"]), &json!(true))
    );

    // no token, a wrong token, a foreign origin: refused, and bob still online
    let kick = format!("/console/api/v1/apps/{APP}/users/bob/kick");
    let bare = vec![("cookie", admin.cookie.clone())];
    let r = http("POST", format!("{base}{kick}"), bare.clone(), None).await;
    assert_eq!((r.status, &r.body["error"]), (403, &json!("csrf")));
    let mut wrong = bare.clone();
    wrong.push(("x-csrf-token", "0".repeat(64)));
    assert_eq!(
        http("POST", format!("{base}{kick}"), wrong, None)
            .await
            .status,
        403
    );
    let mut foreign = bare.clone();
    foreign.push(("x-csrf-token", admin.csrf.clone()));
    foreign.push(("origin", "http://evil.example".into()));
    assert_eq!(
        http("POST", format!("{base}{kick}"), foreign, None)
            .await
            .status,
        403
    );
    // the read-only role looks but cannot act
    let (_, viewer) = Op::sign_in(&base, "viewer", VIEWER_PW).await;
    let viewer = viewer.unwrap();
    let r = viewer.act("POST", &kick, None).await;
    assert_eq!((r.status, &r.body["error"]), (403, &json!("read_only")));
    assert_eq!(viewer.lookup("bob").await["online"], true);

    // acting: a channel message, an attribute, clearing, then the kick
    let chan = format!("/console/api/v1/apps/{APP}/channels/lobby");
    let r = admin
        .act(
            "POST",
            &format!("{chan}/messages"),
            Some(json!({"from": "ops", "msg": "maintenance at 5"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    bob.expect(|e| matches!(e, Event::ChannelMessage { ch: c, msg, .. } if *c == ch && msg == "maintenance at 5"))
        .await;
    let r = admin
        .act(
            "PUT",
            &format!("{chan}/attrs/topic"),
            Some(json!({"value": "release"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    bob.expect(|e| matches!(e, Event::ChannelAttr { name, value, .. } if name == "topic" && value == "release"))
        .await;
    assert_eq!(
        admin
            .act("DELETE", &format!("{chan}/attrs"), None)
            .await
            .status,
        200
    );
    bob.expect(|e| matches!(e, Event::ChannelAttr { kind, .. } if kind == "clear"))
        .await;
    admin.kick(&mut bob).await;
    // the kicked session ends as its connection closes
    let deadline = tokio::time::Instant::now() + WAIT;
    while admin.lookup("bob").await["online"] == true {
        assert!(tokio::time::Instant::now() < deadline, "bob stays online");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // the overview: this node, its sessions, refusals by kind
    let o = admin.get("/console/api/overview").await;
    assert_eq!(o.status, 200);
    assert_eq!(o.body["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(o.body["apps"], json!([APP]));

    // removing an operator and reloading signs it out; signing out ends the cookie
    let mut c = ServerConfig {
        listen: "127.0.0.1:0".into(),
        ..ServerConfig::default()
    };
    with_console(&mut c);
    c.apps.insert(APP.into(), None);
    c.operators.retain(|o| o.name != "viewer");
    c.redis_url = srv.config().redis_url.clone();
    c.redis_prefix = srv.config().redis_prefix.clone();
    srv.reload(c).unwrap();
    assert_eq!(viewer.get("/console/api/session").await.status, 401);
    assert_eq!(admin.get("/console/api/session").await.status, 200);
    assert_eq!(
        admin.act("POST", "/console/api/signout", None).await.status,
        200
    );
    assert_eq!(admin.get("/console/api/session").await.status, 401);
    srv.shutdown().await;
}

/// Read server-sent events from `url` (with `cookie`) on a thread: each `data:` line (HTTP/1.0:
/// the body is not chunked).
fn sse(url: &str, cookie: &str) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { return };
            if let Some(d) = line.strip_prefix("event: ") {
                let _ = tx.send(format!("event {d}"));
            } else if let Some(d) = line.strip_prefix("data: ") {
                if tx.send(d.to_string()).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_tail_streams_the_app_s_events_as_they_happen_filtered() {
    let srv = server_with(|c| {
        with_console(c);
        c.apps.insert(APP.into(), None);
    })
    .await;
    let base = format!("http://{}", srv.console_addr().unwrap());
    let (_, admin) = Op::sign_in(&base, "admin", ADMIN_PW).await;
    let admin = admin.unwrap();
    let tail = sse(
        &format!("{base}/console/api/apps/{APP}/events?channel=lobby&account=bob"),
        &admin.cookie,
    );
    let next = |what: &str| {
        tail.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no {what} on the tail"))
    };
    assert_eq!(next("ready"), "event ready");
    assert_eq!(next("ready's data"), "{}");
    // carol's join of the same channel comes first in the same partition: had the filter let
    // it through, it would arrive before bob's
    let mut carol = User::login(&srv.ws_url(), "carol").await;
    carol.join("lobby").await;
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    bob.join("lobby").await;
    let e: Value = serde_json::from_str(&next("bob's join")).unwrap();
    assert_eq!(e["type"], "member.joined", "{e}");
    assert_eq!(e["data"]["account"], "bob", "{e}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_of_one_node_sees_and_kicks_a_user_on_another() {
    let nodes = cluster(2, |c| {
        with_console(c);
        c.apps.insert(APP.into(), None);
    })
    .await;
    let base = format!("http://{}", nodes[0].console_addr().unwrap());
    let (_, admin) = Op::sign_in(&base, "admin", ADMIN_PW).await;
    let admin = admin.unwrap();
    let mut bob = User::login(&nodes[1].ws_url(), "bob").await;
    // both nodes report (every 2 s), node1 with bob's session
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let o = admin.get("/console/api/overview").await.body;
        let ids: Vec<&str> = o["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["id"].as_str())
            .collect();
        let bob_seen = o["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "node1" && n["apps"][APP] == 1);
        if ids == ["node0", "node1"] && bob_seen {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "overview: {o}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let u = admin.lookup("bob").await;
    assert_eq!((&u["online"], &u["node"]), (&json!(true), &json!("node1")));
    admin.kick(&mut bob).await;
    for n in nodes {
        n.shutdown().await;
    }
}
