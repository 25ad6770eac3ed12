//! Channels: membership, events, messages, attributes, built-in attributes, rate limits and
//! the special channels.
mod common;
use std::time::Duration;

use common::*;
use opensig_protocol::client::Event;
use opensig_protocol::ErrorKind;
use serde_json::{json, Value};

fn is_attr(name: &str, value: &str, kind: &str) -> impl Fn(&Event<Value>) -> bool {
    let (n, v, k) = (json!(name), json!(value), json!(kind));
    move |e| matches!(e, Event::ChannelAttr { name, value, kind, .. } if *name == n && *value == v && *kind == k)
}

#[tokio::test]
async fn join_list_events_messages_and_attrs() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    let (_, list) = alice.join("room").await;
    assert_eq!(list, json!([["alice", 0]]));
    assert_eq!(
        alice.channel_send("room", "only me").await,
        Ok(json!({"result": "ok"}))
    );
    alice
        .expect(|e| matches!(e, Event::ChannelMessage { msg, .. } if *msg == json!("only me")))
        .await;
    alice
        .s
        .with(|c, now| c.channel_attr("room", Some("topic"), Some("t1"), now))
        .await;
    alice.expect(is_attr("topic", "t1", "update")).await;
    let (_, list) = bob.join("room").await;
    assert_eq!(accounts(&list), vec!["alice", "bob"]);
    bob.expect(is_attr("topic", "t1", "update")).await;
    let e = alice
        .expect(|e| matches!(e, Event::ChannelUserJoined { .. }))
        .await;
    assert!(
        matches!(e, Event::ChannelUserJoined { account, uid, .. } if account == "bob" && uid == 0)
    );
    bob.channel_send("room", "hi all").await.unwrap();
    for u in [&mut alice, &mut bob] {
        let e = u
            .expect(|e| matches!(e, Event::ChannelMessage { .. }))
            .await;
        assert!(matches!(e, Event::ChannelMessage { account, uid, msg, .. }
            if account == "bob" && uid == 0 && msg == "hi all"));
    }
    bob.s
        .with(|c, now| c.channel_attr("room", Some("topic"), None, now))
        .await;
    for u in [&mut alice, &mut bob] {
        u.expect(is_attr("topic", "", "del")).await;
    }
    bob.s
        .with(|c, now| c.channel_attr("room", None, None, now))
        .await;
    for u in [&mut alice, &mut bob] {
        u.expect(is_attr("", "", "clear")).await;
    }
    // bob never saw a join event for himself
    drop(bob);
    let e = alice
        .expect(|e| matches!(e, Event::ChannelUserLeft { .. }))
        .await;
    assert!(matches!(e, Event::ChannelUserLeft { account, .. } if account == "bob"));
}

#[tokio::test]
async fn channel2_frames_have_increasing_sequences_and_reach_the_sender() {
    let srv = server().await;
    let mut a = Raw::connect(&srv.ws_url()).await;
    a.login(APP, "alice", "").await;
    let (err, joined) = a.call("channel_join", 1, json!({"name": "seq"})).await;
    assert_eq!(err, "");
    assert_eq!(joined["attrs"], json!({}));
    for i in 0..3 {
        a.send_value(json!(["call2", ["channel_sendmsg", 10 + i, {"line": a.line, "name": "seq", "msg": format!("m{i}")}]]))
            .await;
    }
    let mut seqs = vec![];
    while seqs.len() < 3 {
        let f = a.recv_flat().await.unwrap();
        if f[0] == "notify" && f[1][0] == "channel2" {
            assert_eq!(f[1][1], "seq");
            let m = opensig_protocol::msg::parse(f[1][3].as_str().unwrap()).unwrap();
            assert_eq!((m.source, m.dest, m.kind), ("alice", "seq", "channel_msg"));
            let content: Value = serde_json::from_str(m.content).unwrap();
            assert_eq!(
                content,
                json!({"channel": "seq", "account": "alice", "uid": 0, "msg": format!("m{}", seqs.len())})
            );
            seqs.push(f[1][2].as_u64().unwrap());
        }
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]) && seqs[0] >= 1,
        "{seqs:?}"
    );
}

/// opensig: a channel message and a rejoin carry the numbers the member saw (`seen_seq`,
/// `seen_msg`); a channel behind them (a Redis failover lost the writes that used them) goes
/// on from them, so members that saw them do not drop what comes next. Not a count: refused.
#[tokio::test]
async fn a_channel_goes_on_from_the_numbers_a_member_saw() {
    let srv = server().await;
    let mut a = Raw::connect(&srv.ws_url()).await;
    a.login(APP, "alice", "").await;
    let (err, _) = a.call("channel_join", 1, json!({"name": "on"})).await;
    assert_eq!(err, "");
    let (err, _) = a
        .call(
            "channel_sendmsg",
            2,
            json!({"name": "on", "msg": "m", "seen_seq": 70, "seen_msg": 30}),
        )
        .await;
    assert_eq!(err, "");
    let f = loop {
        let f = a.recv_flat().await.unwrap();
        if f[0] == "notify" && f[1][0] == "channel2" {
            break f;
        }
    };
    // the sequence after 70; the message's number after 30 (the frame's last element)
    assert_eq!((f[1][2].as_u64(), f[1][4].as_u64()), (Some(71), Some(31)));
    // a rejoin's reply: the latest message number is not below what it saw
    let (err, joined) = a
        .call("channel_join", 3, json!({"name": "on", "seen_msg": 45}))
        .await;
    assert_eq!(err, "");
    assert_eq!(joined["last_msg"], 45);
    for (id, bad) in [(4, json!(-1)), (5, json!("x")), (6, json!(2.5))] {
        let (err, _) = a
            .call(
                "channel_sendmsg",
                id,
                json!({"name": "on", "msg": "m", "seen_seq": bad}),
            )
            .await;
        assert_eq!(err, ErrorKind::InvalidArgs.as_str(), "{bad}");
    }
}

/// opensig: a channel message carries its send's identity (from its sender and `msgID`) as
/// the sixth element of its frame and in the history, the same for every copy. A send the
/// server took twice — here sent again past the server's dedup window, as when Redis lost the
/// first copy's write and its dedup key with a primary after the copy went out, and the SDK
/// sent it again after a reconnect — comes twice under two numbers, and reaches a member
/// using the SDK once.
#[tokio::test]
async fn a_send_the_server_took_twice_reaches_an_sdk_member_once() {
    let srv = server_with(|c| c.set_limit("dedup_window_secs=1").unwrap()).await;
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    bob.join("twice").await;
    let mut a = Raw::connect(&srv.ws_url()).await;
    a.login(APP, "alice", "").await;
    let (err, _) = a.call("channel_join", 1, json!({"name": "twice"})).await;
    assert_eq!(err, "");
    let once = json!({"name": "twice", "msg": "once", "msgID": "m-1"});
    let (err, _) = a.call("channel_sendmsg", 2, once.clone()).await;
    assert_eq!(err, "");
    // within the window: a duplicate, answered and not published
    let (err, _) = a.call("channel_sendmsg", 3, once.clone()).await;
    assert_eq!(err, "");
    until_past(std::time::SystemTime::now() + Duration::from_millis(1100)).await;
    let (err, _) = a.call("channel_sendmsg", 4, once).await;
    assert_eq!(err, "");
    let after = json!({"name": "twice", "msg": "after", "msgID": "m-2"});
    let (err, _) = a.call("channel_sendmsg", 5, after).await;
    assert_eq!(err, "");
    // alice (raw frames) sees both copies: two numbers, one identity
    let mut copies = vec![];
    let last = loop {
        let f = a.recv_flat().await.unwrap();
        if f[0] != "notify" || f[1][0] != "channel2" {
            continue;
        }
        let text = f[1][3].as_str().unwrap();
        let (n, id) = (f[1][4].as_u64().unwrap(), f[1][5].as_u64());
        assert!(id.is_some_and(|id| id < 1 << 53), "{f}");
        if text.contains("\"msg\":\"after\"") {
            break id;
        }
        copies.push((n, id));
    };
    assert_eq!(copies.len(), 2, "{copies:?}");
    assert!(copies[0].0 < copies[1].0 && copies[0].1 == copies[1].1);
    assert_ne!(copies[0].1, last);
    // bob (the SDK) gets it once
    let mut got = vec![];
    while got.last().map(String::as_str) != Some("after") {
        if let Event::ChannelMessage { msg, .. } = bob
            .expect(|e| matches!(e, Event::ChannelMessage { .. }))
            .await
        {
            got.push(s(&msg));
        }
    }
    assert_eq!(got, ["once", "after"]);
    // the history keeps both copies with the identity (a recovering member drops the second)
    let (err, h) = a
        .call("channel_history", 6, json!({"name": "twice", "max": 10}))
        .await;
    assert_eq!(err, "");
    let kept: Vec<(String, Option<u64>)> = h["msgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (s(&m["msg"]), m["id"].as_u64()))
        .collect();
    let id = copies[0].1;
    assert_eq!(
        kept,
        [
            ("once".into(), id),
            ("once".into(), id),
            ("after".into(), last)
        ]
    );
}

#[tokio::test]
async fn join_list_is_the_latest_members_including_the_joiner() {
    let srv = server_with(|c| c.limits.channel_list_max = 3).await;
    let mut users = vec![];
    for n in ["u1", "u2", "u3", "u4"] {
        let mut u = User::login(&srv.ws_url(), n).await;
        u.join("big").await;
        users.push(u);
    }
    let mut last = User::login(&srv.ws_url(), "u5").await;
    let (_, list) = last.join("big").await;
    assert_eq!(accounts(&list), vec!["u3", "u4", "u5"]);
    let r = last
        .invoke("channel_query_userlist", json!({"name": "big"}))
        .await
        .unwrap();
    assert_eq!(r["num"], 5);
    assert_eq!(accounts(&r["list"]), vec!["u3", "u4", "u5"]);
    let r = last
        .invoke(
            "channel_query_userlist_all",
            json!({"name": "big", "num": 100}),
        )
        .await
        .unwrap();
    assert_eq!(accounts(&r["list"]), vec!["u1", "u2", "u3", "u4", "u5"]);
}

#[tokio::test]
async fn logout_and_disconnect_leave_channels() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    let mut carl = User::login(&srv.ws_url(), "carl").await;
    alice.join("r").await;
    bob.join("r").await;
    carl.join("r").await;
    bob.s.with(|c, now| c.logout(now)).await;
    alice
        .expect(|e| matches!(e, Event::ChannelUserLeft { account, .. } if account == "bob"))
        .await;
    drop(carl);
    alice
        .expect(|e| matches!(e, Event::ChannelUserLeft { account, .. } if account == "carl"))
        .await;
    let r = alice
        .invoke("channel_query_num", json!({"name": "r"}))
        .await
        .unwrap();
    assert_eq!(r["num"], 1);
}

/// A logout leaves every channel of the session, however many (the leaves go several at a
/// time): a member of each hears it in each, and each is left with that member alone.
#[tokio::test]
async fn a_logout_leaves_every_channel_of_its_session() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    let names: Vec<String> = (0..100).map(|i| format!("many{i}")).collect();
    for n in &names {
        alice.join(n).await;
        bob.join(n).await;
    }
    bob.s.with(|c, now| c.logout(now)).await;
    let mut left = std::collections::BTreeSet::new();
    while left.len() < names.len() {
        match alice
            .expect(|e| matches!(e, Event::ChannelUserLeft { account, .. } if account == "bob"))
            .await
        {
            Event::ChannelUserLeft { ch, .. } => assert!(left.insert(ch), "bob left twice"),
            _ => unreachable!(),
        }
    }
    for n in &names {
        let r = alice
            .invoke("channel_query_num", json!({ "name": n }))
            .await;
        assert_eq!(r.unwrap()["num"], 1, "{n}");
    }
}

#[tokio::test]
async fn user_notification_zero_silences_join_and_leave() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    alice.join("quiet").await;
    alice
        .s
        .with(|c, now| c.channel_attr("quiet", Some("_userNotification"), Some("0"), now))
        .await;
    alice
        .expect(is_attr("_userNotification", "0", "update"))
        .await;
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    bob.join("quiet").await;
    drop(bob);
    alice.wait_offline("bob").await;
    alice.settled().await;
}

#[tokio::test]
async fn channel_ttl_keeps_attrs_after_the_last_member_then_destroys() {
    let srv = server().await;
    // with the default TTL (7200 s) attributes survive an empty channel
    let mut dan = User::login(&srv.ws_url(), "dan").await;
    let (ch, _) = dan.join("stay").await;
    dan.s
        .with(|c, now| c.channel_attr("stay", Some("k"), Some("v"), now))
        .await;
    dan.expect(is_attr("k", "v", "update")).await;
    let req = dan
        .s
        .with(move |c, now| c.channel_leave(ch, "stay", now))
        .await;
    dan.done(req).await.unwrap();
    // with a TTL of 1 s they outlive the last member by that long
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let (ch, _) = alice.join("keep").await;
    alice
        .s
        .with(|c, now| c.channel_attr("keep", Some("k"), Some("v"), now))
        .await;
    alice
        .s
        .with(|c, now| c.channel_attr("keep", Some("_channel_ttl"), Some("1"), now))
        .await;
    alice.expect(is_attr("_channel_ttl", "1", "update")).await;
    let req = alice
        .s
        .with(move |c, now| c.channel_leave(ch, "keep", now))
        .await;
    alice.done(req).await.unwrap();
    // still there right after the last member left
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    let (ch, _) = bob.join("keep").await;
    bob.expect(is_attr("k", "v", "update")).await;
    bob.expect(is_attr("_channel_ttl", "1", "update")).await;
    let req = bob
        .s
        .with(move |c, now| c.channel_leave(ch, "keep", now))
        .await;
    bob.done(req).await.unwrap();
    // then destroyed: of the two empty channels only "stay" is left
    let store = &srv;
    wait_for("the empty channel with a 1 s TTL destroyed", || async {
        store.footprint().await.unwrap().channels == 1
    })
    .await;
    let mut carl = User::login(&srv.ws_url(), "carl").await;
    carl.join("keep").await;
    carl.settled().await;
    dan.join("stay").await;
    dan.expect(is_attr("k", "v", "update")).await;
}

#[tokio::test]
async fn member_num_is_pushed_when_membership_changed() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    alice.join("count").await;
    alice
        .s
        .with(|c, now| c.channel_attr("count", Some("_auto_update_num"), Some("1"), now))
        .await;
    alice
        .expect(is_attr("_auto_update_num", "1", "update"))
        .await;
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    bob.join("count").await;
    let mut carl = User::login(&srv.ws_url(), "carl").await;
    carl.join("count").await;
    alice
        .expect_within(
            Duration::from_secs(3),
            is_attr("_member_num", "3", "update"),
        )
        .await;
    // no change → no push
    let mut quiet = true;
    alice.backlog.clear();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Some(e) = alice
        .next_within(deadline - tokio::time::Instant::now())
        .await
    {
        if is_attr("_member_num", "3", "update")(&e) {
            quiet = false;
        }
    }
    assert!(quiet, "pushed again without a change");
    drop(carl);
    alice
        .expect_within(
            Duration::from_secs(3),
            is_attr("_member_num", "2", "update"),
        )
        .await;
    // read-only
    let r = alice
        .invoke(
            "channel_set_attr",
            json!({"channel": "count", "name": "_member_num", "value": "9"}),
        )
        .await;
    assert_eq!(r, Err("read_only_attr".into()));
}

#[tokio::test]
async fn sendmsg_and_setattr_limits() {
    let srv = server().await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "alice", "").await;
    raw.call("channel_join", 1, json!({"name": "lim"})).await;
    raw.call(
        "channel_set_attr",
        2,
        json!({"channel": "lim", "name": "_sendmsg_limit", "value": "2"}),
    )
    .await;
    let mut errs = vec![];
    for id in 10..14 {
        errs.push(
            raw.call("channel_sendmsg", id, json!({"name": "lim", "msg": "x"}))
                .await
                .0,
        );
    }
    assert_eq!(errs, vec!["", "", "rate_limited", "rate_limited"]);
    raw.call(
        "channel_set_attr",
        20,
        json!({"channel": "lim", "name": "_setattr_limit", "value": "1"}),
    )
    .await;
    let a = raw
        .call(
            "channel_set_attr",
            21,
            json!({"channel": "lim", "name": "color", "value": "red"}),
        )
        .await
        .0;
    let b = raw
        .call(
            "channel_set_attr",
            22,
            json!({"channel": "lim", "name": "color", "value": "blue"}),
        )
        .await
        .0;
    let c = raw
        .call(
            "channel_set_attr",
            23,
            json!({"channel": "lim", "name": "size", "value": "L"}),
        )
        .await
        .0;
    assert_eq!(
        (a.as_str(), b.as_str(), c.as_str()),
        ("", "rate_limited", "")
    );
    let bad = raw
        .call(
            "channel_set_attr",
            24,
            json!({"channel": "lim", "name": "_channel_ttl", "value": "soon"}),
        )
        .await
        .0;
    assert_eq!(bad, "invalid_args");
}

#[tokio::test]
async fn only_members_change_a_channel_s_limits_and_nobody_lifts_the_server_s() {
    let srv = server_with(|c| c.limits.attr_changes_per_second = 3).await;
    let mut member = Raw::connect(&srv.ws_url()).await;
    member.login(APP, "owner", "").await;
    assert_eq!(
        member
            .call("channel_join", 1, json!({"name": "ours"}))
            .await
            .0,
        ""
    );
    let mut outsider = Raw::connect(&srv.ws_url()).await;
    outsider.login(APP, "outsider", "").await;
    let set = |name: &str, value: &str| json!({"channel": "ours", "name": name, "value": value});
    // an outsider may set ordinary attributes (as in 1.4) but none of the member-only ones
    let mut id = 10;
    for (name, value) in [
        ("_sendmsg_limit", "1"),
        ("_setattr_limit", "0"),
        ("_userNotification", "0"),
    ] {
        id += 1;
        let err = outsider
            .call("channel_set_attr", id, set(name, value))
            .await
            .0;
        assert_eq!(err, "not_in_channel", "{name}");
        id += 1;
        let del = json!({"channel": "ours", "name": name});
        let err = outsider.call("channel_del_attr", id, del).await.0;
        assert_eq!(err, "not_in_channel", "{name}");
    }
    assert_eq!(
        outsider
            .call("channel_set_attr", 30, set("topic", "hi"))
            .await
            .0,
        ""
    );
    // a member lowers the attribute rate; 0 ("unlimited") or more is the server's (3 here)
    assert_eq!(
        member
            .call("channel_set_attr", 31, set("_setattr_limit", "0"))
            .await
            .0,
        ""
    );
    let mut errs = vec![];
    for i in 0..5 {
        errs.push(
            member
                .call("channel_set_attr", 40 + i, set("color", &i.to_string()))
                .await
                .0,
        );
    }
    assert_eq!(errs.iter().filter(|e| e.is_empty()).count(), 3, "{errs:?}");
    assert!(
        errs.iter().all(|e| e.is_empty() || e == "rate_limited"),
        "{errs:?}"
    );
    // once the members lowered a limit, an outsider cannot clear it away
    assert_eq!(
        member
            .call("channel_set_attr", 49, set("_sendmsg_limit", "5"))
            .await
            .0,
        ""
    );
    let clear = json!({"channel": "ours"});
    assert_eq!(
        outsider
            .call("channel_clear_attr", 50, clear.clone())
            .await
            .0,
        "not_in_channel"
    );
    assert_eq!(member.call("channel_clear_attr", 51, clear).await.0, "");
    // built-in numbers are clamped into the server's range, whatever their size
    for (i, value) in ["18446744073709551615", "9223372036854775807", "99999999999"]
        .iter()
        .enumerate()
    {
        let err = outsider
            .call(
                "channel_set_attr",
                60 + i as u64,
                set("_channel_ttl", value),
            )
            .await
            .0;
        assert_eq!(err, "", "_channel_ttl {value}");
    }
    assert_eq!(
        outsider
            .call(
                "channel_set_attr",
                70,
                set("_channel_ttl", "18446744073709551616")
            )
            .await
            .0,
        "invalid_args"
    );
    // and the channel keeps working on both stores
    assert_eq!(
        member
            .call("channel_leave", 80, json!({"name": "ours"}))
            .await
            .0,
        ""
    );
    assert_eq!(
        member
            .call("channel_join", 81, json!({"name": "ours"}))
            .await
            .0,
        ""
    );
    assert_eq!(
        outsider
            .call("channel_set_attr", 82, set("later", "1"))
            .await
            .0,
        ""
    );
}

#[tokio::test]
async fn two_hundred_messages_per_second_per_channel_by_default() {
    let srv = server_with(|c| c.limits.user_messages_per_second = 10_000).await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "alice", "").await;
    raw.call("channel_join", 1, json!({"name": "busy"})).await;
    let line = raw.line.clone();
    let t = std::time::Instant::now();
    for id in 100..700u64 {
        raw.send_value(
            json!(["call2", ["channel_sendmsg", id, {"line": line, "name": "busy", "msg": "x"}]]),
        )
        .await;
    }
    let mut ok = 0;
    for id in 100..700u64 {
        let (err, _) = raw.reply(id).await;
        if err.is_empty() {
            ok += 1;
        } else {
            assert_eq!(err, "rate_limited");
        }
    }
    // a burst of 200, plus what refilled while the test ran (it may be slow under load, so
    // the flood is long enough that it cannot all pass: 600 would need 2 s)
    let refill = (t.elapsed().as_secs_f64() * 200.0).ceil() as usize;
    assert!(
        ok >= 200 && ok <= 201 + refill && ok < 600,
        "{ok} accepted in {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn force_send_without_joining_and_membership_rules() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    alice.join("club").await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "outsider", "").await;
    let (err, _) = raw
        .call(
            "channel_sendmsg",
            1,
            json!({"name": "club", "msg": "let me in"}),
        )
        .await;
    assert_eq!(err, "not_in_channel");
    let (err, _) = raw
        .call(
            "channel_sendmsg",
            2,
            json!({"name": "club", "msg": "forced", "force": true}),
        )
        .await;
    assert_eq!(err, "");
    alice.expect(|e| matches!(e, Event::ChannelMessage { account, msg, .. } if account == "outsider" && msg == "forced")).await;
    let (err, _) = raw
        .call(
            "channel_sendmsg",
            3,
            json!({"name": "__agora_user_online", "msg": "x", "force": true}),
        )
        .await;
    assert_eq!(err, "reserved_channel");
    let (err, _) = raw
        .call(
            "channel_set_attr",
            4,
            json!({"channel": "__agora_user_online", "name": "a", "value": "b"}),
        )
        .await;
    assert_eq!(err, "reserved_channel");
    let (err, _) = raw
        .call(
            "channel_sendmsg",
            5,
            json!({"name": "club", "msg": "x".repeat(8193)}),
        )
        .await;
    assert_eq!(err, "too_large");
    let (err, _) = raw
        .call("channel_join", 6, json!({"name": "with space"}))
        .await;
    assert_eq!(err, "invalid_args");
}

#[tokio::test]
async fn too_many_channels_for_one_session() {
    let srv = server_with(|c| c.limits.channels_per_session = 3).await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "joiner", "").await;
    for i in 0..3 {
        assert_eq!(
            raw.call("channel_join", i, json!({"name": format!("c{i}")}))
                .await
                .0,
            ""
        );
    }
    assert_eq!(
        raw.call("channel_join", 9, json!({"name": "c9"})).await.0,
        "too_many_channels"
    );
    // re-joining one it is in is fine
    assert_eq!(
        raw.call("channel_join", 10, json!({"name": "c1"})).await.0,
        ""
    );
}

#[tokio::test]
async fn user_online_channel_sees_logins_and_logouts() {
    let srv = server().await;
    let mut watcher = User::login(&srv.ws_url(), "watcher").await;
    watcher.join("__agora_user_online").await;
    let bob = User::login(&srv.ws_url(), "bob").await;
    let e = watcher
        .expect(|e| matches!(e, Event::ChannelUserJoined { .. }))
        .await;
    assert!(matches!(e, Event::ChannelUserJoined { account, .. } if account == "bob"));
    drop(bob);
    let e = watcher
        .expect(|e| matches!(e, Event::ChannelUserLeft { .. }))
        .await;
    assert!(matches!(e, Event::ChannelUserLeft { account, .. } if account == "bob"));
}

#[tokio::test]
async fn channel_event_channel_sees_every_join_and_leave() {
    let srv = server().await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "watcher", "").await;
    raw.call("channel_join", 1, json!({"name": "__agora_channel_event"}))
        .await;
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    let (ch, _) = bob.join("lobby").await;
    let req = bob
        .s
        .with(move |c, now| c.channel_leave(ch, "lobby", now))
        .await;
    bob.done(req).await.unwrap();
    let mut seen = vec![];
    while seen.len() < 2 {
        let f = raw.recv_flat().await.unwrap();
        if f[0] == "notify" && f[1][0] == "channel2" {
            assert_eq!(f[1][1], "__agora_channel_event");
            let m = opensig_protocol::msg::parse(f[1][3].as_str().unwrap()).unwrap();
            let c: Value = serde_json::from_str(m.content).unwrap();
            seen.push((
                m.kind.to_string(),
                c["channel"].clone(),
                c["account"].clone(),
            ));
        }
    }
    assert_eq!(
        seen,
        vec![
            ("channel_user_join".into(), json!("lobby"), json!("bob")),
            ("channel_user_leave".into(), json!("lobby"), json!("bob"))
        ]
    );
}
