//! The backend HTTP API with a real HTTP client (ureq): every call as a backend makes it and
//! as the users see its effects, every way of not being let in (the same answer each time),
//! cross-app attempts, bad input, the app's rate, and the calls across two nodes.
mod common;

use std::time::Instant;

use common::*;
use opensig_protocol::client::Event;
use opensig_protocol::names::api::ACCOUNT;
use opensig_protocol::token;
use serde_json::{json, Value};

const OTHER: &str = "0123456789abcdef0123456789abcdef";
const OTHER_CERT: &str = "fedcba9876543210fedcba9876543210";

/// One HTTP request: status and JSON body.
async fn http(
    method: &'static str,
    url: String,
    credential: Option<String>,
    body: Option<Value>,
    headers: &[(&'static str, &'static str)],
) -> (u16, Value) {
    let mut h: Vec<(&'static str, String)> =
        headers.iter().map(|(k, v)| (*k, v.to_string())).collect();
    if let Some(c) = credential {
        h.push(("Authorization", format!("Bearer {c}")));
    }
    let r = http_request(method, url, h, body, &[]).await;
    (r.status, r.body)
}

/// The API credential of an app: the SignalingToken of the account "opensig api".
fn credential(app: &str, cert: &str, expiry: u64) -> String {
    token::sign(app, cert, ACCOUNT, expiry)
}

/// A backend of one app on one server.
struct Backend {
    base: String,
    app: String,
    credential: Option<String>,
}

impl Backend {
    fn new(srv: &opensig_server::Server, app: &str, cert: Option<&str>) -> Backend {
        Backend {
            base: format!("{}/api/v1/apps/{app}", srv.http_url()),
            app: app.into(),
            credential: cert.map(|c| credential(app, c, now_secs() + 600)),
        }
    }

    async fn call(&self, method: &'static str, path: &str, body: Option<Value>) -> (u16, Value) {
        http(
            method,
            format!("{}{path}", self.base),
            self.credential.clone(),
            body,
            &[],
        )
        .await
    }

    /// A call that must succeed.
    async fn ok(&self, method: &'static str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body).await;
        assert_eq!(status, 200, "{method} {}{path}: {v}", self.app);
        v
    }
}

fn config_apps(c: &mut opensig_server::ServerConfig) {
    c.apps.insert(APP.into(), None);
    c.apps.insert(SECURE.into(), Some(CERT.into()));
    c.apps.insert(OTHER.into(), Some(OTHER_CERT.into()));
}

async fn secure_user(url: &str, account: &str) -> User {
    let t = token::sign(SECURE, CERT, account, now_secs() + 600);
    let mut c = config(url, account, &t);
    c.app_id = SECURE.into();
    User::login_with(c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_of_not_being_let_in_gets_the_same_answer() {
    let srv = server_with(config_apps).await;
    let base = format!("{}/api/v1/apps", srv.http_url());
    let good = credential(SECURE, CERT, now_secs() + 600);
    let cases: Vec<(&str, String, Option<String>)> = vec![
        ("no credential", SECURE.into(), None),
        (
            "a wrong credential",
            SECURE.into(),
            Some("1:x:0:00000000000000000000000000000000".into()),
        ),
        (
            "another app's credential",
            SECURE.into(),
            Some(credential(OTHER, OTHER_CERT, now_secs() + 600)),
        ),
        (
            "signed with another certificate",
            SECURE.into(),
            Some(credential(SECURE, OTHER_CERT, now_secs() + 600)),
        ),
        (
            "an expired credential",
            SECURE.into(),
            Some(credential(SECURE, CERT, now_secs() - 10)),
        ),
        (
            "a user's token",
            SECURE.into(),
            Some(token::sign(SECURE, CERT, "bob", now_secs() + 600)),
        ),
        (
            "this app's credential on another app",
            OTHER.into(),
            Some(good.clone()),
        ),
        (
            "an app that does not exist",
            "nosuchapp".into(),
            Some(good.clone()),
        ),
        (
            "an app id that cannot exist",
            "a%20b".into(),
            Some(good.clone()),
        ),
        ("not a bearer", SECURE.into(), Some(format!("x{good}"))),
    ];
    let mut answers = vec![];
    for (what, app, cred) in cases {
        let url = format!("{base}/{app}/channels/room");
        let (status, body) = http("GET", url, cred, None, &[]).await;
        assert_eq!(status, 401, "{what}: {body}");
        answers.push((what, body));
    }
    for (what, body) in &answers {
        assert_eq!(body, &answers[0].1, "{what} answers differently");
    }
    assert_eq!(answers[0].1, json!({"error": "unauthorized"}));
    // the right credential, on a path and a write as well
    let b = Backend::new(&srv, SECURE, Some(CERT));
    assert_eq!(
        b.ok("GET", "/channels/room", None).await,
        json!({"name": "room", "members": 0})
    );
    // a cert-less app: this machine yes, through a proxy or from a web page no
    let open = Backend {
        credential: None,
        ..Backend::new(&srv, APP, None)
    };
    open.ok("GET", "/channels/room", None).await;
    let url = format!("{}/channels/room", open.base);
    for h in [
        ("X-Forwarded-For", "203.0.113.9"),
        ("Origin", "http://evil.example"),
    ] {
        let (status, body) = http("GET", url.clone(), None, None, &[h]).await;
        assert_eq!((status, body), (401, answers[0].1.clone()), "{h:?}");
    }
    // no CORS for the API
    let (_, _) = http("GET", url.clone(), None, None, &[]).await;
    let headers = tokio::task::spawn_blocking({
        let url = format!("{}/channels/room", b.base);
        let cred = b.credential.clone().unwrap();
        move || {
            let r = ureq::get(&url)
                .set("Authorization", &format!("Bearer {cred}"))
                .set("Origin", "http://evil.example")
                .call()
                .unwrap();
            r.header("access-control-allow-origin").map(str::to_string)
        }
    })
    .await
    .unwrap();
    assert_eq!(headers, None, "the API is not open to other origins");
    // unknown paths under the API
    let (status, body) = http(
        "GET",
        format!("{}/api/v1/nothing", srv.http_url()),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!((status, body), (404, json!({"error": "not_found"})));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cert_less_app_opened_by_the_operator_answers_anyone() {
    let srv = server_with(|c| {
        config_apps(c);
        c.api_open.insert(APP.into());
    })
    .await;
    let url = format!("{}/api/v1/apps/{APP}/channels/room", srv.http_url());
    let (status, _) = http(
        "GET",
        url,
        None,
        None,
        &[("X-Forwarded-For", "203.0.113.9")],
    )
    .await;
    assert_eq!(status, 200);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_sends_reads_changes_and_kicks() {
    let srv = server_with(config_apps).await;
    let url = srv.ws_url();
    let b = Backend::new(&srv, SECURE, Some(CERT));
    let mut alice = secure_user(&url, "alice").await;
    // a peer message from an account the backend chooses: live, and kept for the offline
    b.ok(
        "POST",
        "/peer_messages",
        Some(json!({"from": "support", "to": "alice", "msg": "hello"})),
    )
    .await;
    let e = alice
        .expect(|e| matches!(e, Event::MessageInstant { .. }))
        .await;
    assert_eq!(
        e,
        Event::MessageInstant {
            account: "support".into(),
            msg: "hello".into()
        }
    );
    b.ok(
        "POST",
        "/peer_messages",
        Some(json!({"from": "support", "to": "bob", "msg": "later", "ttl": 60})),
    )
    .await;
    // presence of many at once
    let v = b
        .ok(
            "POST",
            "/users/status",
            Some(json!({"accounts": ["alice", "bob"]})),
        )
        .await;
    assert_eq!(v, json!({"status": {"alice": 1, "bob": 0}}));
    // as many as one query may name (asked several at once): each answer is its account's
    let mut many: Vec<String> = (0..255).map(|i| format!("nobody{i}")).collect();
    many.insert(100, "alice".into());
    let v = b
        .ok("POST", "/users/status", Some(json!({ "accounts": many })))
        .await;
    let status = v["status"].as_object().expect("a map");
    assert_eq!(status.len(), 256);
    let on: Vec<&String> = status
        .iter()
        .filter(|(_, s)| **s == 1)
        .map(|(a, _)| a)
        .collect();
    assert_eq!(on, ["alice"]);
    let mut bob = secure_user(&url, "bob").await;
    bob.expect(|e| matches!(e, Event::MessageInstant { msg, .. } if msg == "later"))
        .await;
    // user attributes
    b.ok(
        "PUT",
        "/users/bob/attrs/plan",
        Some(json!({"value": "gold"})),
    )
    .await;
    assert_eq!(
        b.ok("GET", "/users/bob/attrs", None).await,
        json!({"attrs": {"plan": "gold"}})
    );
    let r = bob
        .invoke("user_get_attr", json!({"account": "bob", "name": "plan"}))
        .await
        .unwrap();
    assert_eq!(r["value"], "gold");
    b.ok("DELETE", "/users/bob/attrs/plan", None).await;
    assert_eq!(
        b.ok("GET", "/users/bob/attrs", None).await,
        json!({"attrs": {}})
    );
    // a channel: messages as "system", attributes, members, the list of channels, history
    alice.join("lobby").await;
    bob.join("lobby").await;
    b.ok(
        "POST",
        "/channels/lobby/messages",
        Some(json!({"from": "system", "msg": "welcome"})),
    )
    .await;
    for u in [&mut alice, &mut bob] {
        let e = u
            .expect(|e| matches!(e, Event::ChannelMessage { .. }))
            .await;
        let Event::ChannelMessage { account, msg, .. } = e else {
            unreachable!()
        };
        assert_eq!((account, msg), (json!("system"), json!("welcome")));
    }
    b.ok(
        "PUT",
        "/channels/lobby/attrs/topic",
        Some(json!({"value": "news"})),
    )
    .await;
    let e = alice
        .expect(|e| matches!(e, Event::ChannelAttr { .. }))
        .await;
    let Event::ChannelAttr {
        name, value, kind, ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!(
        (name, value, kind),
        (json!("topic"), json!("news"), json!("update"))
    );
    assert_eq!(
        b.ok("GET", "/channels/lobby/attrs", None).await,
        json!({"attrs": {"topic": "news"}})
    );
    b.ok("DELETE", "/channels/lobby/attrs/topic", None).await;
    let e = alice
        .expect(|e| matches!(e, Event::ChannelAttr { .. }))
        .await;
    assert!(matches!(e, Event::ChannelAttr { kind, .. } if kind == "del"));
    b.ok(
        "PUT",
        "/channels/lobby/attrs/a",
        Some(json!({"value": "1"})),
    )
    .await;
    alice
        .expect(|e| matches!(e, Event::ChannelAttr { .. }))
        .await;
    b.ok("DELETE", "/channels/lobby/attrs", None).await;
    let e = alice
        .expect(|e| matches!(e, Event::ChannelAttr { .. }))
        .await;
    assert!(matches!(e, Event::ChannelAttr { kind, .. } if kind == "clear"));
    let (status, v) = b
        .call(
            "PUT",
            "/channels/lobby/attrs/_member_num",
            Some(json!({"value": "9"})),
        )
        .await;
    assert_eq!((status, &v["error"]), (400, &json!("read_only_attr")));
    assert_eq!(
        b.ok("GET", "/channels/lobby", None).await,
        json!({"name": "lobby", "members": 2})
    );
    assert_eq!(
        b.ok("GET", "/channels/lobby/members", None).await,
        json!({"count": 2, "members": ["alice", "bob"]})
    );
    assert_eq!(
        b.ok("GET", "/channels/lobby/members?offset=1&limit=1", None)
            .await,
        json!({"count": 2, "members": ["alice"]})
    );
    alice.join("side").await;
    alice.join("support-2").await;
    alice.join("support-1").await;
    // a page at a time, by name, each channel once
    let mut pages = vec![];
    let mut cursor = String::new();
    loop {
        let v = b
            .ok("GET", &format!("/channels?limit=2&cursor={cursor}"), None)
            .await;
        pages.push(v["channels"].clone());
        match v["next"].as_str() {
            Some(n) => cursor = n.to_string(),
            None => break,
        }
    }
    let ch = |name, members| json!({"name": name, "members": members});
    assert_eq!(
        pages,
        vec![
            json!([ch("lobby", 2), ch("side", 1)]),
            json!([ch("support-1", 1), ch("support-2", 1)]),
        ]
    );
    // by prefix: its names, and nothing to go on from once past them
    assert_eq!(
        b.ok("GET", "/channels?prefix=support-", None).await,
        json!({"channels": [ch("support-1", 1), ch("support-2", 1)], "next": null})
    );
    assert_eq!(
        b.ok("GET", "/channels?prefix=s&limit=2", None).await,
        json!({"channels": [ch("side", 1), ch("support-1", 1)], "next": "support-1"})
    );
    assert_eq!(
        b.ok("GET", "/channels?prefix=s&limit=2&cursor=support-1", None)
            .await,
        json!({"channels": [ch("support-2", 1)], "next": null})
    );
    alice.channel_send("lobby", "from alice").await.unwrap();
    let h = b.ok("GET", "/channels/lobby/history", None).await;
    let msgs: Vec<(&str, &str)> = h["msgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["account"].as_str().unwrap(), m["msg"].as_str().unwrap()))
        .collect();
    assert_eq!(msgs, vec![("system", "welcome"), ("alice", "from alice")]);
    assert_eq!(h["last"], 2);
    let h = b.ok("GET", "/channels/lobby/history?after=1", None).await;
    assert_eq!(h["msgs"].as_array().unwrap().len(), 1);
    // kick: the session ends with onLogout(103)
    assert_eq!(
        b.ok("POST", "/users/alice/kick", None).await,
        json!({"kicked": true})
    );
    let e = alice.expect(|e| matches!(e, Event::Logout { .. })).await;
    assert!(
        matches!(e, Event::Logout { code } if code.value() == 103),
        "{e:?}"
    );
    wait_for("alice's session to end", || async {
        b.ok(
            "POST",
            "/users/status",
            Some(json!({"accounts": ["alice"]})),
        )
        .await["status"]["alice"]
            == 0
    })
    .await;
    assert_eq!(
        b.ok("POST", "/users/carol/kick", None).await,
        json!({"kicked": false})
    );
    // the other app sees none of it, and this app's credential cannot reach it
    let o = Backend::new(&srv, OTHER, Some(OTHER_CERT));
    assert_eq!(
        o.ok("GET", "/channels/lobby", None).await,
        json!({"name": "lobby", "members": 0})
    );
    assert_eq!(
        o.ok("GET", "/channels", None).await,
        json!({"channels": [], "next": null})
    );
    let v = o
        .ok("POST", "/users/status", Some(json!({"accounts": ["bob"]})))
        .await;
    assert_eq!(v["status"]["bob"], 0);
    let cross = Backend {
        credential: b.credential.clone(),
        ..Backend::new(&srv, OTHER, None)
    };
    let (status, _) = cross
        .call(
            "POST",
            "/channels/lobby/messages",
            Some(json!({"from": "x", "msg": "y"})),
        )
        .await;
    assert_eq!(status, 401);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_error_and_the_app_its_rate() {
    let srv = server_with(|c| {
        config_apps(c);
        c.set_limit("api_requests_per_second=5").unwrap();
    })
    .await;
    let b = Backend::new(&srv, SECURE, Some(CERT));
    let cases = [
        (
            "POST",
            "/peer_messages",
            Some(json!({"from": "a b", "to": "x", "msg": "m"})),
            "invalid_args",
        ),
        (
            "POST",
            "/peer_messages",
            Some(json!({"from": "a", "to": "x", "msg": "m".repeat(9000)})),
            "too_large",
        ),
        (
            "POST",
            "/peer_messages",
            Some(json!({"from": "a"})),
            "invalid_args",
        ),
        (
            "POST",
            "/peer_messages",
            Some(json!("not an object")),
            "invalid_args",
        ),
    ];
    let since = Instant::now();
    let mut accepted = 0;
    for (m, p, body, want) in cases {
        let (status, v) = b.call(m, p, body).await;
        if status == 429 {
            continue;
        }
        accepted += 1;
        assert_eq!((status, v["error"].as_str()), (400, Some(want)), "{p}");
        assert!(v["code"].is_number());
    }
    // five a second with a burst of five: a flood is cut, by the clock, not by a count
    let mut flood_ok = 0;
    for _ in 0..20 {
        match b.call("GET", "/channels/x", None).await.0 {
            200 => flood_ok += 1,
            429 => {}
            s => panic!("status {s}"),
        }
    }
    within_bucket(
        accepted + flood_ok,
        24,
        (5, 5),
        since,
        "the app's API calls",
    );
    let (status, v) = b.call("GET", "/channels/x", None).await;
    if status == 429 {
        assert_eq!(v["error"], "rate_limited");
    }
    // another app has its own budget
    let o = Backend::new(&srv, OTHER, Some(OTHER_CERT));
    o.ok("GET", "/channels/x", None).await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_and_names_every_route() {
    let srv = server().await;
    let (status, doc) = http(
        "GET",
        format!("{}/api/v1/openapi.json", srv.http_url()),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for p in [
        "/api/v1/apps/{app}/peer_messages",
        "/api/v1/apps/{app}/users/status",
        "/api/v1/apps/{app}/users/{account}/attrs",
        "/api/v1/apps/{app}/users/{account}/attrs/{name}",
        "/api/v1/apps/{app}/users/{account}/kick",
        "/api/v1/apps/{app}/channels",
        "/api/v1/apps/{app}/channels/{channel}",
        "/api/v1/apps/{app}/channels/{channel}/members",
        "/api/v1/apps/{app}/channels/{channel}/messages",
        "/api/v1/apps/{app}/channels/{channel}/attrs",
        "/api/v1/apps/{app}/channels/{channel}/attrs/{name}",
        "/api/v1/apps/{app}/channels/{channel}/history",
    ] {
        assert!(paths.contains(&p), "{p} is not documented");
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_of_one_node_reaches_users_on_another() {
    let nodes = cluster(2, config_apps).await;
    let a = Backend::new(&nodes[0], SECURE, Some(CERT));
    let mut bob = secure_user(&nodes[1].ws_url(), "bob").await;
    a.ok(
        "POST",
        "/peer_messages",
        Some(json!({"from": "ops", "to": "bob", "msg": "across"})),
    )
    .await;
    bob.expect(|e| matches!(e, Event::MessageInstant { msg, .. } if msg == "across"))
        .await;
    let v = a
        .ok("POST", "/users/status", Some(json!({"accounts": ["bob"]})))
        .await;
    assert_eq!(v["status"]["bob"], 1);
    bob.join("hall").await;
    a.ok(
        "POST",
        "/channels/hall/messages",
        Some(json!({"from": "ops", "msg": "to the hall"})),
    )
    .await;
    bob.expect(|e| matches!(e, Event::ChannelMessage { msg, .. } if msg == "to the hall"))
        .await;
    a.ok("PUT", "/channels/hall/attrs/k", Some(json!({"value": "v"})))
        .await;
    bob.expect(|e| matches!(e, Event::ChannelAttr { name, .. } if name == "k"))
        .await;
    bob.channel_send("hall", "from node b").await.unwrap();
    let h = a.ok("GET", "/channels/hall/history?limit=1", None).await;
    assert_eq!(h["msgs"][0]["msg"], "from node b");
    let v = a.ok("GET", "/channels", None).await;
    assert_eq!(v["channels"], json!([{"name": "hall", "members": 1}]));
    assert_eq!(
        a.ok("POST", "/users/bob/kick", None).await,
        json!({"kicked": true})
    );
    let e = bob.expect(|e| matches!(e, Event::Logout { .. })).await;
    assert!(
        matches!(e, Event::Logout { code } if code.value() == 103),
        "{e:?}"
    );
    for n in nodes {
        n.shutdown().await;
    }
}

#[test]
fn the_token_command_mints_the_api_credential() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_opensig-server"))
        .args([
            "token",
            "--app-id",
            SECURE,
            "--certificate",
            CERT,
            "--api",
            "--ttl",
            "0",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        credential(SECURE, CERT, 0)
    );
}

#[test]
fn the_api_key_command_prints_a_key_once_and_the_entry_with_its_hash() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_opensig-server"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "api-key",
        "--app",
        SECURE,
        "--name",
        "billing",
        "--read-only",
    ]);
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("osk_billing_"), "{key}");
    let entry = String::from_utf8(out.stderr).unwrap();
    let file: opensig_server::config::FileConfig =
        toml::from_str(&entry[entry.find("[[api_keys]]").unwrap()..]).unwrap();
    let k = &file.api_keys[0];
    assert_eq!(
        (k.app.as_str(), k.name.as_str(), k.read_only),
        (SECURE, "billing", true)
    );
    assert!(opensig_server::apikeys::matches(&key, &k.hash));
    assert!(!entry.contains(&key), "the key is printed once, on stdout");
    assert_eq!(
        run(&["api-key", "--app", SECURE, "--name", "Bad_Name"])
            .status
            .code(),
        Some(2)
    );
}

/// A backend key entry of `app` (as `opensig-server api-key` makes it), and the key.
fn api_key(app: &str, name: &str, read_only: bool) -> (opensig_server::config::ApiKey, String) {
    let (key, hash) = opensig_server::apikeys::make(name);
    let entry = opensig_server::config::ApiKey {
        app: app.into(),
        name: name.into(),
        hash,
        read_only,
    };
    (entry, key)
}

/// API keys apart from the certificate: a key opens its app's API; a read-only key reads
/// and is refused on writes; a key removed by a reload is refused at once (no restart); a
/// key of another app, a forged or altered key, all get the one 401; an app can refuse the
/// certificate-signed credential and take keys only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_open_revoke_and_read_only_with_one_answer_for_every_refusal() {
    let (backend, backend_key) = api_key(SECURE, "backend", false);
    let (reader, reader_key) = api_key(SECURE, "dashboard", true);
    let (other, other_key) = api_key(OTHER, "backend", false);
    let keys = vec![backend.clone(), reader.clone(), other.clone()];
    let srv = server_with(|c| {
        config_apps(c);
        c.api_keys = keys.clone();
    })
    .await;
    let base = format!("{}/api/v1/apps", srv.http_url());
    let get = |app: &str, key: Option<String>| {
        http("GET", format!("{base}/{app}/channels/room"), key, None, &[])
    };
    let post = |app: &str, key: Option<String>| {
        let body = json!({"from": "server", "msg": "notice"});
        http(
            "POST",
            format!("{base}/{app}/channels/room/messages"),
            key,
            Some(body),
            &[],
        )
    };
    let unauthorized = json!({"error": "unauthorized"});
    assert_eq!(get(SECURE, Some(backend_key.clone())).await.0, 200);
    assert_eq!(post(SECURE, Some(backend_key.clone())).await.0, 200);
    assert_eq!(get(SECURE, Some(reader_key.clone())).await.0, 200);
    assert_eq!(
        post(SECURE, Some(reader_key.clone())).await,
        (401, unauthorized.clone()),
        "a read-only key writes"
    );
    let forged = format!("osk_backend_{}", "0".repeat(64));
    let mut altered = backend_key.clone();
    altered.pop();
    altered.push('x');
    for (what, app, key) in [
        ("another app's key", SECURE, other_key.clone()),
        ("this app's key on another app", OTHER, backend_key.clone()),
        ("a forged key", SECURE, forged),
        ("an altered key", SECURE, altered),
        (
            "a key of no entry",
            SECURE,
            format!("osk_nobody_{}", "1".repeat(64)),
        ),
    ] {
        assert_eq!(
            get(app, Some(key)).await,
            (401, unauthorized.clone()),
            "{what}"
        );
    }
    // the certificate-signed credential works alongside keys, until the app refuses it
    let cert = credential(SECURE, CERT, now_secs() + 600);
    assert_eq!(get(SECURE, Some(cert.clone())).await.0, 200);
    // revoked by a reload, without a restart; the certificate turned off for the app
    let mut c = (*srv.config()).clone();
    c.api_keys
        .retain(|k| k.name != "backend" || k.app != SECURE);
    c.api_no_certificate.insert(SECURE.into());
    srv.reload(c).unwrap();
    assert_eq!(
        get(SECURE, Some(backend_key)).await,
        (401, unauthorized.clone()),
        "a revoked key"
    );
    assert_eq!(
        get(SECURE, Some(cert)).await,
        (401, unauthorized.clone()),
        "the certificate credential of an app that refuses it"
    );
    assert_eq!(get(SECURE, Some(reader_key)).await.0, 200, "the key kept");
    assert_eq!(
        get(OTHER, Some(other_key)).await.0,
        200,
        "another app's key kept"
    );
}

/// The real thing: a server process with a configuration file; a key taken, named in the
/// request log without its secret; the entry removed from the file and SIGHUP sent — the key
/// is refused from then on, the process never restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_from_the_file_is_refused_after_sighup() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("opensig-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (path, log) = (dir.join("opensig.toml"), dir.join("server.log"));
    let (entry, key) = api_key(SECURE, "billing", false);
    let apps = format!("[apps]\n{SECURE} = \"{CERT}\"\n");
    let with_key = format!(
        "{apps}\n[[api_keys]]\napp = \"{SECURE}\"\nname = \"billing\"\nhash = \"{}\"\n",
        entry.hash
    );
    let write = |text: &str| {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    write(&with_key);
    let srv = ServerProcess::start_logging(
        &["--config", path.to_str().unwrap()],
        "warn,opensig::api=info",
        Some(&log),
    );
    let http_base = srv.url.replacen("ws://", "http://", 1);
    let url = format!("{http_base}api/v1/apps/{SECURE}/channels/room");
    let get = || http("GET", url.clone(), Some(key.clone()), None, &[]);
    assert_eq!(get().await.0, 200);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("key=billing"), "{logged}");
    let secret = key.rsplit_once('_').unwrap().1;
    assert!(!logged.contains(secret), "the secret is in the log");
    write(&apps);
    let pid = srv.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    wait_for("the key refused after the reload", || async {
        get().await.0 == 401
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
