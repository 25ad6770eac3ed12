//! HTTP endpoints, static files, `multi` batching and zlib binary frames.
mod common;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn getaddr_healthz_metrics() {
    let srv = server_with(|c| c.metrics_listen = Some("127.0.0.1:0".into())).await;
    let (status, head, body) = http_get(srv.addr(), "/getaddr?vid=someapp").await;
    assert_eq!(status, 200);
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, json!({"web": [srv.ws_url()]}));
    let (status, _, body) = http_get(srv.addr(), "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    // metrics: on their own listener, not on the public port
    let _u = User::login(&srv.ws_url(), "alice").await;
    let metrics = srv.metrics_addr().expect("a metrics listener");
    let (status, _, body) = http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("opensig_sessions 1"), "{body}");
    assert!(body.contains("opensig_logins_total 1"), "{body}");
    let (status, _, _) = http_get(srv.addr(), "/metrics").await;
    assert_eq!(status, 404, "the public port does not serve /metrics");

    let srv = server_with(|c| c.public_url = Some("wss://sig.example.com/".into())).await;
    let (_, _, body) = http_get(srv.addr(), "/getaddr?vid=x").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"web": ["wss://sig.example.com/"]})
    );
}

/// `/getaddr` never hands out an address a request chose: a foreign `Host` gets the address
/// the client connected to; loopback names and allowed hosts are taken as they are. (A cluster
/// node answers with the cluster's nodes, whatever the `Host`.)
#[tokio::test]
async fn getaddr_answers_only_with_addresses_of_this_server() {
    let srv = server_with(|c| {
        c.allowed_hosts = [
            "sig.example.com".to_string(),
            "alt.example.com:8443".to_string(),
        ]
        .into_iter()
        .collect();
    })
    .await;
    let web = |body: String| serde_json::from_str::<Value>(&body).unwrap()["web"].clone();
    let port = srv.addr().port();
    let cases = [
        ("evil.example", json!([srv.ws_url()])),
        ("evil.example:80", json!([srv.ws_url()])),
        ("127.0.0.1.evil.example", json!([srv.ws_url()])),
        ("sig.example.com", json!(["ws://sig.example.com/"])),
        (
            "SIG.example.com:9000",
            json!(["ws://SIG.example.com:9000/"]),
        ),
        (
            "alt.example.com:8443",
            json!(["ws://alt.example.com:8443/"]),
        ),
        ("alt.example.com:1", json!([srv.ws_url()])),
        ("localhost:1234", json!(["ws://localhost:1234/"])),
        ("[::1]:99", json!(["ws://[::1]:99/"])),
    ];
    for (host, mut want) in cases {
        if redis_store() {
            want = json!([srv.ws_url()]);
        }
        let (status, head, body) = http_get_host(srv.addr(), "/getaddr?vid=x", host).await;
        assert_eq!(status, 200, "{host}");
        assert!(head.contains("cache-control: no-store"), "{head}");
        assert_eq!(web(body), want, "Host: {host} (port {port})");
    }
}

#[tokio::test]
async fn serves_www_at_root_and_pkg_under_pkg() {
    let dir = std::env::temp_dir().join(format!("opensig-static-{}", std::process::id()));
    let (www, pkg) = (dir.join("www"), dir.join("pkg"));
    std::fs::create_dir_all(&www).unwrap();
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(www.join("index.html"), "<h1>demo</h1>").unwrap();
    std::fs::write(www.join("app.js"), "console.log(1)").unwrap();
    std::fs::write(pkg.join("opensig.js"), "export {}").unwrap();
    let srv = server_with(|c| {
        c.www_dir = Some(www.clone());
        c.pkg_dir = Some(pkg.clone());
    })
    .await;
    let (status, _, body) = http_get(srv.addr(), "/").await;
    assert_eq!((status, body.as_str()), (200, "<h1>demo</h1>"));
    let (status, _, body) = http_get(srv.addr(), "/app.js").await;
    assert_eq!((status, body.as_str()), (200, "console.log(1)"));
    let (status, _, body) = http_get(srv.addr(), "/pkg/opensig.js").await;
    assert_eq!((status, body.as_str()), (200, "export {}"));
    let (status, _, _) = http_get(srv.addr(), "/missing.js").await;
    assert_eq!(status, 404);
    // the WebSocket still lives at "/"
    User::login(&srv.ws_url(), "alice").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn frames_ready_together_are_batched_in_multi() {
    let srv = server().await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "alice", "").await;
    let line = raw.line.clone();
    raw.call("channel_join", 1, json!({"name": "m"})).await;
    // many requests in one go: replies and channel events leave in batches
    let mut text = String::new();
    for id in 10..40 {
        text = json!(["call2", ["channel_sendmsg", id, {"line": line, "name": "m", "msg": "x"}]])
            .to_string();
        raw.send(text.clone()).await;
    }
    let _ = text;
    let mut multis = 0;
    let mut replies = 0;
    while replies < 30 {
        let f = raw.recv().await.unwrap();
        let frames: Vec<Value> = if f[0] == "multi" {
            multis += 1;
            f[1].as_array().unwrap().clone()
        } else {
            vec![f]
        };
        replies += frames.iter().filter(|f| f[0] == "call2-ret").count();
    }
    assert!(multis > 0, "expected at least one multi batch");
}

#[tokio::test]
async fn large_frames_are_zlib_binary_only_after_set_flag() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let big = "y".repeat(6000);
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "bob", "").await;
    alice.send("bob", &big).await.unwrap();
    let f = raw.recv_flat().await.unwrap();
    assert_eq!(f[1][0], "recvmsg");
    assert_eq!(raw.binary_frames, 0, "no binary before set_flag");
    raw.send(r#"["set_flag",{"binary":1}]"#).await;
    raw.send(r#"["ping",1]"#).await;
    assert_eq!(raw.recv().await.unwrap()[0], "pong");
    alice.send("bob", &big).await.unwrap();
    let f = raw.recv_flat().await.unwrap();
    assert_eq!(f[1][0], "recvmsg");
    assert!(f[1][1].as_str().unwrap().contains(&big));
    assert_eq!(raw.binary_frames, 1, "large frame sent as zlib binary");
}
