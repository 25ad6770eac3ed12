//! Peer-to-peer messages and the mailbox (mode 0).
mod common;
use std::time::Duration;

use common::*;
use opensig_protocol::client::Event;
use serde_json::json;

#[tokio::test]
async fn online_peers_get_recvmsg_pushed_with_increasing_versions() {
    let srv = server().await;
    let mut bob = Raw::connect(&srv.ws_url()).await;
    bob.login(APP, "bob", "").await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    for text in ["one", "two words", "three"] {
        alice.send("bob", text).await.unwrap();
    }
    let mut versions = vec![];
    while versions.len() < 3 {
        let f = bob.recv_flat().await.unwrap();
        assert_eq!(f[0], "notify");
        assert_eq!(f[1][0], "recvmsg");
        let pair: serde_json::Value =
            serde_json::from_str(f[1][1].as_str().expect("JSON text")).unwrap();
        let m = pair[1].as_str().unwrap();
        let parsed = opensig_protocol::msg::parse(m).unwrap();
        assert!(m.starts_with("msg-v3 "));
        assert_eq!(
            (parsed.source, parsed.dest, parsed.kind, parsed.flag),
            ("alice", "bob", "instant", "v1:E:3600")
        );
        versions.push(pair[0].as_u64().unwrap());
    }
    assert_eq!(versions, vec![1, 2, 3]);
}

#[tokio::test]
async fn offline_messages_arrive_at_next_login_and_are_not_repeated_once_acknowledged() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    // more than one page (30), within the 60/s sending budget
    for i in 0..55 {
        alice.send("carol", &format!("m{i}")).await.unwrap();
    }
    let mut carol = User::login(&srv.ws_url(), "carol").await;
    for i in 0..55 {
        let e = carol
            .expect(|e| matches!(e, Event::MessageInstant { .. }))
            .await;
        assert_eq!(
            e,
            Event::MessageInstant {
                account: "alice".into(),
                msg: format!("m{i}").into()
            }
        );
    }
    // acknowledged (within about a second): a new session gets nothing
    let store = &srv;
    wait_for("carol's messages acknowledged", || async {
        store.footprint().await.unwrap().stored_messages == 0
    })
    .await;
    drop(carol);
    alice.wait_offline("carol").await;
    let mut again = User::login(&srv.ws_url(), "carol").await;
    again.settled().await;
}

#[tokio::test]
async fn ver_clear_never_goes_backwards() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    for t in ["a", "b", "c"] {
        alice.send("dave", t).await.unwrap();
    }
    let mut dave = Raw::connect(&srv.ws_url()).await;
    dave.login(APP, "dave", "").await;
    let (_, page) = dave
        .call("user_getmsg", 1, json!({"ver_clear": 0, "max": 30}))
        .await;
    assert_eq!(page["ver_clear"], 0);
    assert_eq!(page["msgs"].as_array().unwrap().len(), 3);
    let (_, page) = dave
        .call("user_getmsg", 2, json!({"ver_clear": 2, "max": 30}))
        .await;
    assert_eq!(page["ver_clear"], 2);
    assert_eq!(page["msgs"][0][0], 3);
    // a reconnecting client starts at 0: the server keeps (and reports) 2
    let (_, page) = dave
        .call("user_getmsg", 3, json!({"ver_clear": 0, "max": 30}))
        .await;
    assert_eq!(page["ver_clear"], 2);
    assert_eq!(page["msgs"].as_array().unwrap().len(), 1);
    // max is honoured
    let (_, page) = dave
        .call("user_getmsg", 4, json!({"ver_clear": 0, "max": 0}))
        .await;
    assert_eq!(page["msgs"].as_array().unwrap().len(), 1);
}

/// A client whose mailbox versions were handed out again — it processed versions the server
/// no longer knows (a server without Redis restarted; a Redis primary died before its replica
/// had them) — gets the new messages numbered anew after what it processed, not dropped as
/// acknowledged: when it acknowledges a version above the last one, or says (`seen_id`) it
/// processed another message at that version than the mailbox holds.
#[tokio::test]
async fn a_poll_that_finds_its_versions_handed_out_again_gets_them_anew() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    for t in ["a", "b"] {
        alice.send("erin", t).await.unwrap();
    }
    let mut erin = Raw::connect(&srv.ws_url()).await;
    erin.login(APP, "erin", "").await;
    let texts = |page: &serde_json::Value| -> Vec<(u64, String)> {
        page["msgs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let parsed = opensig_protocol::msg::parse(m[1].as_str().unwrap()).unwrap();
                (m[0].as_u64().unwrap(), parsed.content.to_string())
            })
            .collect()
    };
    // it had processed up to version 5 before the server lost them: 1 and 2 come as 6 and 7
    let (_, page) = erin
        .call("user_getmsg", 1, json!({"ver_clear": 5, "max": 30}))
        .await;
    assert_eq!(page["ver_clear"], 5);
    assert_eq!(texts(&page), vec![(6, "a".into()), (7, "b".into())]);
    // it says it processed another message at 6 than "a": 6 and 7 come again as 8 and 9
    let (_, page) = erin
        .call(
            "user_getmsg",
            2,
            json!({"ver_clear": 6, "max": 30, "seen_id": "not-a"}),
        )
        .await;
    assert_eq!(page["ver_clear"], 6);
    assert_eq!(texts(&page), vec![(8, "a".into()), (9, "b".into())]);
    // the id of "a", at 8: acknowledged as ever
    let id_a = opensig_protocol::msg::parse(page["msgs"][0][1].as_str().unwrap())
        .unwrap()
        .id
        .unwrap()
        .to_string();
    let (_, page) = erin
        .call(
            "user_getmsg",
            3,
            json!({"ver_clear": 8, "max": 30, "seen_id": id_a}),
        )
        .await;
    assert_eq!(page["ver_clear"], 8);
    assert_eq!(texts(&page), vec![(9, "b".into())]);
    // not a string: the documented error
    let (head, _) = erin
        .call(
            "user_getmsg",
            4,
            json!({"ver_clear": 8, "max": 30, "seen_id": [1]}),
        )
        .await;
    assert_eq!(head, "invalid_args");
}

/// A server without Redis restarted: its mailboxes start again at version 1, under clients
/// that processed higher versions. The SDK still gets every message sent after the restart,
/// in order and once: the poll of its reconnect finds its version above the mailbox's last
/// and has the mailbox numbered again (before, it acknowledged them unseen).
#[tokio::test]
async fn messages_sent_after_a_restart_reach_a_client_that_processed_higher_versions() {
    let srv = server().await;
    let addr = srv.addr();
    let proxy = CutProxy::start(addr).await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let mut bob = User::login(&proxy.ws_url(), "bob").await;
    let got = |text: &'static str| move |e: &Event<serde_json::Value>| matches!(e, Event::MessageInstant { msg, .. } if msg == text);
    for t in ["1", "2", "3"] {
        alice.send("bob", t).await.unwrap();
    }
    for t in ["1", "2", "3"] {
        bob.expect(got(t)).await;
    }
    // bob cannot reconnect until the messages after the restart are stored
    proxy.set_down(true);
    srv.kill().await;
    drop(alice);
    // the same address, nothing of before (on Redis: a fresh key prefix)
    let srv = server_with(|c| c.listen = addr.to_string()).await;
    let mut carol = User::login(&srv.ws_url(), "carol").await;
    for t in ["after 1", "after 2"] {
        carol.send("bob", t).await.unwrap();
    }
    proxy.set_down(false);
    let mut texts = vec![];
    while texts.len() < 2 {
        if let Event::MessageInstant { msg, .. } = bob.next().await {
            texts.push(msg.as_str().unwrap().to_string());
        }
    }
    assert_eq!(texts, vec!["after 1", "after 2"]);
    // nothing more on its way: a message sent after them comes next
    carol.send("bob", "last").await.unwrap();
    let e = bob
        .expect(|e| matches!(e, Event::MessageInstant { .. }))
        .await;
    assert_eq!(
        e,
        Event::MessageInstant {
            account: "carol".into(),
            msg: "last".into()
        }
    );
}

#[tokio::test]
async fn messages_expire_after_their_flag_ttl() {
    let srv = server().await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "alice", "").await;
    let send = |id: u64, flag: &str| json!(["call2", ["user_sendmsg", id, {"peer": "erin", "flag": flag, "t": "instant", "content": format!("ttl {flag}")}]]);
    let expiry = std::time::SystemTime::now() + Duration::from_secs(1);
    let mut f = send(1, "v1:E:1");
    f[1][2]["line"] = raw.line.clone().into();
    raw.send_value(f).await;
    assert_eq!(raw.reply(1).await.0, "");
    let mut f = send(2, "v1:E:3600");
    f[1][2]["line"] = raw.line.clone().into();
    raw.send_value(f).await;
    assert_eq!(raw.reply(2).await.0, "");
    until_past(expiry).await;
    let mut erin = User::login(&srv.ws_url(), "erin").await;
    let e = erin
        .expect(|e| matches!(e, Event::MessageInstant { .. }))
        .await;
    assert_eq!(
        e,
        Event::MessageInstant {
            account: "alice".into(),
            msg: "ttl v1:E:3600".into()
        }
    );
    erin.settled().await;
}

#[tokio::test]
async fn resent_message_ids_are_stored_once() {
    let srv = server().await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "alice", "").await;
    for id in 1..=3 {
        let (err, _) = raw
            .call(
                "user_sendmsg",
                id,
                json!({"peer": "fred", "t": "instant", "content": "once", "messageID": "m-1"}),
            )
            .await;
        assert_eq!(err, "");
    }
    let mut fred = Raw::connect(&srv.ws_url()).await;
    fred.login(APP, "fred", "").await;
    let (_, page) = fred
        .call("user_getmsg", 1, json!({"ver_clear": 0, "max": 30}))
        .await;
    assert_eq!(page["msgs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_sends_get_documented_errors() {
    let srv = server_with(|c| c.limits.mailbox_max_messages = 3).await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "alice", "").await;
    let cases = [
        (
            json!({"peer": "bob", "content": "x".repeat(8197)}),
            "too_large",
        ),
        (json!({"peer": "b o b", "content": "x"}), "invalid_args"),
        (
            json!({"peer": "x".repeat(129), "content": "x"}),
            "too_large",
        ),
        (json!({"content": "no peer"}), "invalid_args"),
        (json!({"peer": ["bob"], "content": "x"}), "invalid_args"),
        (
            json!({"peer": "bob", "content": "x", "t": "voip_invite"}),
            "invalid_args",
        ),
        (
            json!({"peer": "bob", "content": "x", "t": "has space"}),
            "invalid_args",
        ),
    ];
    for (i, (args, want)) in cases.iter().enumerate() {
        let (err, _) = raw.call("user_sendmsg", i as u64 + 1, args.clone()).await;
        assert_eq!(err, *want, "{args}");
    }
    // 8196 bytes is within the limit
    let (err, _) = raw
        .call(
            "user_sendmsg",
            50,
            json!({"peer": "bob", "content": "x".repeat(8196)}),
        )
        .await;
    assert_eq!(err, "");
    // mailbox capacity
    for id in 51..53 {
        assert_eq!(
            raw.call(
                "user_sendmsg",
                id,
                json!({"peer": "bob", "content": "fill"})
            )
            .await
            .0,
            ""
        );
    }
    assert_eq!(
        raw.call(
            "user_sendmsg",
            60,
            json!({"peer": "bob", "content": "over"})
        )
        .await
        .0,
        "mailbox_full"
    );
}

#[tokio::test]
async fn sixty_messages_per_second_per_user_then_rate_limited() {
    let srv = server().await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "spammer", "").await;
    let line = raw.line.clone();
    let t = std::time::Instant::now();
    for id in 1..=70u64 {
        raw.send_value(json!(["call2", ["user_sendmsg", id, {"line": line, "peer": "victim", "content": "x"}]])).await;
    }
    let mut errors = vec![];
    for id in 1..=70u64 {
        errors.push(raw.reply(id).await.0);
    }
    let ok = errors.iter().filter(|e| e.is_empty()).count();
    let refill = (t.elapsed().as_secs_f64() * 60.0).ceil() as usize;
    assert!(
        ok >= 60 && ok <= 61 + refill && ok < 70,
        "{ok} accepted in {:?}",
        t.elapsed()
    );
    assert!(errors.iter().all(|e| e.is_empty() || e == "rate_limited"));
    // after a second the budget is back
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        raw.call(
            "user_sendmsg",
            100,
            json!({"peer": "victim", "content": "later"})
        )
        .await
        .0,
        ""
    );
}

#[tokio::test]
async fn mode_one_getmsg2_returns_and_clears_by_id() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    alice.send("gina", "first").await.unwrap();
    alice.send("gina", "second").await.unwrap();
    let mut gina = Raw::connect(&srv.ws_url()).await;
    gina.login(APP, "gina", "").await;
    let (_, page) = gina
        .call("user_getmsg2", 1, json!({"clear_msgs": [], "max": 1}))
        .await;
    let msgs = page["msgs"].as_array().unwrap();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0][1].as_str().unwrap().ends_with(" first"));
    let (_, page) = gina
        .call("user_getmsg2", 2, json!({"clear_msgs": [], "max": 30}))
        .await;
    let msgs = page["msgs"].as_array().unwrap();
    assert_eq!(msgs.len(), 1);
    let second_id = opensig_protocol::msg::parse(msgs[0][1].as_str().unwrap())
        .unwrap()
        .id
        .unwrap()
        .to_string();
    let (_, page) = gina
        .call(
            "user_getmsg2",
            3,
            json!({"clear_msgs": [second_id], "max": 30}),
        )
        .await;
    assert_eq!(page["msgs"], json!([]));
}

#[tokio::test]
async fn a_new_session_s_messages_are_not_taken_for_resends_of_the_last_one() {
    // a page reloaded: the same account, a new session, the same first steps
    let srv = server().await;
    let mut watcher = User::login(&srv.ws_url(), "watcher").await;
    for text in ["before the reload", "after the reload"] {
        let mut page = User::login(&srv.ws_url(), "reloader").await;
        page.send("reader", text).await.unwrap();
        drop(page);
        watcher.wait_offline("reloader").await;
    }
    let mut reader = User::login(&srv.ws_url(), "reader").await;
    for text in ["before the reload", "after the reload"] {
        let e = reader
            .expect(|e| matches!(e, Event::MessageInstant { .. }))
            .await;
        assert_eq!(
            e,
            Event::MessageInstant {
                account: "reloader".into(),
                msg: text.into()
            }
        );
    }
    reader.settled().await;
}
