//! Bad input never panics and never affects other clients: each case gets its documented
//! reply (or close), and a bystander keeps exchanging messages throughout.
mod common;

use common::*;
use futures_util::SinkExt;
use opensig_protocol::client::Event;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

struct Bystanders {
    a: User,
    b: User,
    n: usize,
}

impl Bystanders {
    async fn new(url: &str) -> Bystanders {
        Bystanders {
            a: User::login(url, "by_a").await,
            b: User::login(url, "by_b").await,
            n: 0,
        }
    }
    /// A round trip between the bystanders still works.
    async fn check(&mut self) {
        self.n += 1;
        let text = format!("still fine {}", self.n);
        self.a.send("by_b", &text).await.expect("bystander send");
        self.b
            .expect(|e| matches!(e, Event::MessageInstant { msg, .. } if *msg == text))
            .await;
    }
}

#[tokio::test]
async fn malformed_frames_are_ignored_and_the_connection_keeps_working() {
    let srv = server().await;
    let mut by = Bystanders::new(&srv.ws_url()).await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "mallory", "").await;
    let junk: Vec<String> = vec![
        "{".into(),
        "not json at all".into(),
        "[]".into(),
        "[1,2,3]".into(),
        "{\"a\":1}".into(),
        "\"just a string\"".into(),
        "[\"call2\"]".into(),
        "[\"call2\",5]".into(),
        "[\"call2\",[\"x\",{},{}]]".into(),
        "[\"call2\",[\"x\",null,{}]]".into(),
        "[\"login\",[1]]".into(),
        "[\"set_flag\",\"yes\"]".into(),
        "[\"nonsense_event\",{\"x\":1}]".into(),
        "[\"ping\",{\"deep\":[[[[[1]]]]]}]".into(),
        format!("[\"call2\",[\"user_getmsg\",1e400,{{}}]]"),
        "[\"multi\",[[\"ping\",1]]]".into(),
        "\u{0}\u{1}\u{2}".into(),
        "[".repeat(10_000),
    ];
    for j in &junk {
        raw.send(j.clone()).await;
    }
    // invalid UTF-8 and binary garbage
    raw.ws
        .send(Message::binary(vec![0xff, 0xfe, 0x00, 0x12]))
        .await
        .unwrap();
    raw.ws
        .send(Message::binary(opensig_protocol::zlib::compress(
            "[\"ping\",\"zipped\"]",
        )))
        .await
        .unwrap();
    raw.send_value(json!(["ping", "after junk"])).await;
    let mut got = vec![];
    while got.last() != Some(&json!("after junk")) {
        let f = raw.recv_flat().await.expect("connection survives junk");
        if f[0] == "pong" {
            got.push(f[1].clone());
        }
    }
    // pings echo their payload; the zlib frame from the client was understood
    assert_eq!(
        got,
        vec![
            json!({"deep": [[[[[1]]]]]}),
            json!("zipped"),
            json!("after junk")
        ]
    );
    by.check().await;
}

#[tokio::test]
async fn wrong_shapes_and_types_get_invalid_args() {
    let srv = server().await;
    let mut by = Bystanders::new(&srv.ws_url()).await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "mallory", "").await;
    let line = raw.line.clone();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!(["call2", ["channel_join", 1, "args as a string"]]),
            "invalid_args",
        ),
        (
            json!(["call2", ["channel_join", 2, [1, 2]]]),
            "invalid_args",
        ),
        (
            json!(["call2", ["channel_join", 3, {"line": line, "name": 17.5}]]),
            "",
        ),
        (
            json!(["call2", ["channel_join", 4, {"line": line, "name": null}]]),
            "invalid_args",
        ),
        (
            json!(["call2", ["channel_join", 5, {"line": line, "name": true}]]),
            "invalid_args",
        ),
        (
            json!(["call2", ["user_getmsg", 6, {"line": line, "ver_clear": "abc"}]]),
            "invalid_args",
        ),
        (
            json!(["call2", ["user_getmsg", 7, {"line": line, "ver_clear": -5}]]),
            "invalid_args",
        ),
        (
            json!(["call2", ["user_getmsg2", 8, {"line": line, "clear_msgs": "x"}]]),
            "invalid_args",
        ),
        (
            json!(["call2", ["channel_sendmsg", 9, {"line": line, "name": "r", "msg": "x", "force": "yes"}]]),
            "invalid_args",
        ),
        (
            json!(["call2", ["voip_invite", 10, {"line": line, "channelName": "r", "peer": ["x"]}]]),
            "invalid_args",
        ),
        (
            json!(["call2", ["voip_invite", 11, {"line": line, "channelName": "r", "peer": "bob", "extra": "x".repeat(8193)}]]),
            "too_large",
        ),
        (
            json!(["call2", ["channel_set_attr", 12, {"line": line, "channel": "r", "name": "n".repeat(129), "value": "v"}]]),
            "too_large",
        ),
        (
            json!(["call2", ["channel_set_attr", 13, {"line": line, "channel": "r", "name": "n", "value": "v".repeat(8097)}]]),
            "too_large",
        ),
        (
            json!(["call2", ["channel_join", 14, {"line": line, "name": "c".repeat(129)}]]),
            "too_large",
        ),
        (
            json!(["call2", ["no_such_function", 15, {"line": line}]]),
            "unknown_function",
        ),
        (
            json!(["call2", ["channel_join", 16, {"line": "not-my-line", "name": "r"}]]),
            "invalid_line",
        ),
        (
            json!(["call2", ["channel_join", 17, {"name": "r"}]]),
            "invalid_line",
        ),
        (
            json!(["call2", ["user_getmsg", "string-id", {"line": line, "ver_clear": 0}]]),
            "",
        ),
    ];
    for (frame, want) in &cases {
        raw.send_value(frame.clone()).await;
        let id = frame[1][1].clone();
        let reply = loop {
            let f = raw.recv_flat().await.expect("reply");
            if f[0] == "call2-ret" && f[1][0] == id {
                break f;
            }
        };
        assert_eq!(reply[1][1], *want, "{frame}");
    }
    by.check().await;
}

#[tokio::test]
async fn frames_over_64_kib_close_the_connection() {
    let srv = server().await;
    let mut by = Bystanders::new(&srv.ws_url()).await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "mallory", "").await;
    let huge = format!("[\"ping\",\"{}\"]", "x".repeat(70 * 1024));
    let _ = raw.ws.send(Message::text(huge)).await;
    assert!(raw.closed().await, "closed after an oversize frame");
    // a zlib bomb is refused the same way
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "mallory2", "").await;
    let bomb =
        opensig_protocol::zlib::compress(&format!("[\"ping\",\"{}\"]", "a".repeat(10 << 20)));
    let _ = raw.ws.send(Message::binary(bomb)).await;
    assert!(raw.closed().await, "closed after a zlib bomb");
    by.check().await;
}

#[tokio::test]
async fn line_login_and_repeated_login_are_handled() {
    let srv = server().await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.send_value(json!(["line_login", {"line": "abc"}])).await;
    assert_eq!(raw.recv().await.unwrap(), json!(["close", ""]));
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "twice", "").await;
    let r = raw.login(APP, "twice", "").await;
    assert_eq!(r[1][0], "already_logged_in");
    raw.send_value(json!(["ping", 1])).await;
    assert_eq!(raw.recv().await.unwrap()[0], "pong");
}

#[tokio::test]
async fn a_login_of_any_shape_gets_a_login_ret() {
    let srv = server().await;
    for payload in [
        json!({"vid": APP, "account": "x", "token": {"an": "object"}}),
        json!({"vid": ["an", "array"], "account": "x", "token": ""}),
        json!("not an object"),
        json!([1, 2, 3]),
    ] {
        let mut raw = Raw::connect(&srv.ws_url()).await;
        raw.send_value(json!(["login", payload])).await;
        let r = raw.recv().await.expect("an answer");
        assert_eq!(r[0], "login_ret", "{payload}");
        assert_eq!(r[1][0], "invalid_login");
        assert!(raw.recv().await.is_none(), "then the connection closes");
    }
}

#[tokio::test]
async fn relogin_storm_leaves_one_session_and_no_leaks() {
    let srv = server().await;
    let mut by = Bystanders::new(&srv.ws_url()).await;
    let mut handles = vec![];
    for _ in 0..50 {
        let url = srv.ws_url();
        handles.push(tokio::spawn(async move {
            let mut raw = Raw::connect(&url).await;
            raw.login(APP, "stormy", "").await;
            raw
        }));
    }
    let mut raws = vec![];
    for h in handles {
        raws.push(h.await.unwrap());
    }
    let mut last = User::login(&srv.ws_url(), "stormy").await;
    by.a.send("stormy", "who gets this?").await.unwrap();
    last.expect(|e| matches!(e, Event::MessageInstant { .. }))
        .await;
    drop(raws);
    // by_a, by_b and the last stormy
    let store = &srv;
    wait_for("the replaced sessions gone", || async {
        store.local_sessions() == 3
    })
    .await;
    last.settled().await;
    by.check().await;
}
