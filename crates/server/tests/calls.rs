//! Call invitations: relay through mailboxes, peer-online rules, timeouts.
mod common;
use std::time::{Duration, Instant};

use common::*;
use opensig_protocol::client::{CallEvent, CallId, Event};
use opensig_protocol::names::call;
use serde_json::{json, Value};

fn call_event(what: CallEvent) -> impl Fn(&Event<Value>) -> bool {
    move |e| matches!(e, Event::Call { what: w, .. } if *w == what)
}

async fn invite(u: &mut User, channel: &str, peer: &str, extra: Value) -> CallId {
    let (c, p, x) = (channel.to_string(), peer.to_string(), extra.to_string());
    u.s.with(move |cl, now| cl.invite(&c, &p, &x, now).0).await
}

/// Caller and callee in two units of the app when it is spread (`OPENSIG_TEST_PARTITIONS` 3:
/// the invitation's record with alice, its messages in eve's mailbox and alice's): the
/// caller's end takes three steps, and the next invitation rings again.
#[tokio::test]
async fn a_call_between_two_units_is_answered_and_ended_by_the_caller() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let mut eve = User::login(&srv.ws_url(), "eve").await;
    if partitions() == 3 {
        assert_ne!(account_unit("a", "alice"), account_unit("a", "eve"));
    }
    for round in 0..2 {
        let out = invite(&mut alice, "r1", "eve", json!(round)).await;
        let e = eve
            .expect(|e| matches!(e, Event::InviteReceived { .. }))
            .await;
        let Event::InviteReceived { call: incoming, .. } = e else {
            unreachable!()
        };
        eve.s
            .with(move |c, now| {
                c.call_reply(
                    incoming,
                    call::VOIP_INVITE_ACCEPT,
                    "r1",
                    "alice",
                    "\"\"",
                    now,
                )
            })
            .await;
        alice.expect(call_event(CallEvent::AcceptedByPeer)).await;
        alice
            .s
            .with(move |c, now| c.call_reply(out, call::VOIP_INVITE_BYE, "r1", "eve", "\"\"", now))
            .await;
        alice.expect(call_event(CallEvent::EndByMyself)).await;
        let e = eve.expect(call_event(CallEvent::EndByPeer)).await;
        assert!(
            matches!(e, Event::Call { call, .. } if call == incoming),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn invite_ack_accept_dtmf_bye() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    let out = invite(&mut alice, "r1", "bob", json!("{\"k\":1}")).await;
    let e = bob
        .expect(|e| matches!(e, Event::InviteReceived { .. }))
        .await;
    let Event::InviteReceived {
        call: incoming,
        channel,
        peer,
        extra,
    } = e
    else {
        unreachable!()
    };
    assert_eq!(
        (channel.as_str(), peer.as_str(), extra),
        ("r1", "alice", json!("{\"k\":1}"))
    );
    let e = alice.expect(call_event(CallEvent::ReceivedByPeer)).await;
    assert_eq!(
        e,
        Event::Call {
            call: out,
            what: CallEvent::ReceivedByPeer,
            extra: json!(""),
            code: None
        }
    );
    bob.s
        .with(move |c, now| {
            c.call_reply(
                incoming,
                call::VOIP_INVITE_ACCEPT,
                "r1",
                "alice",
                "\"sure\"",
                now,
            )
        })
        .await;
    let e = alice.expect(call_event(CallEvent::AcceptedByPeer)).await;
    assert_eq!(
        e,
        Event::Call {
            call: out,
            what: CallEvent::AcceptedByPeer,
            extra: json!("sure"),
            code: None
        }
    );
    alice
        .s
        .with(move |c, now| c.call_dtmf(out, "r1", "bob", "#", now))
        .await;
    let e = bob.expect(call_event(CallEvent::Msg)).await;
    assert_eq!(
        e,
        Event::Call {
            call: incoming,
            what: CallEvent::Msg,
            extra: json!("{\"msgtype\":\"dtmf\",\"msgdata\":\"#\"}"),
            code: None
        }
    );
    bob.s
        .with(move |c, now| {
            c.call_reply(incoming, call::VOIP_INVITE_BYE, "r1", "alice", "\"\"", now)
        })
        .await;
    bob.expect(call_event(CallEvent::EndByMyself)).await;
    let e = alice.expect(call_event(CallEvent::EndByPeer)).await;
    assert_eq!(
        e,
        Event::Call {
            call: out,
            what: CallEvent::EndByPeer,
            extra: json!(""),
            code: None
        }
    );
}

#[tokio::test]
async fn relayed_content_names_the_counterpart() {
    let srv = server().await;
    let mut bob = Raw::connect(&srv.ws_url()).await;
    bob.login(APP, "bob", "").await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    invite(&mut alice, "r9", "bob", json!({"obj": true})).await;
    let f = bob.recv_flat().await.unwrap();
    assert_eq!(f[1][0], "recvmsg");
    let pair: Value = serde_json::from_str(f[1][1].as_str().unwrap()).unwrap();
    let m = opensig_protocol::msg::parse(pair[1].as_str().unwrap()).unwrap();
    assert!(m.id.is_some(), "voip messages are msg-v3");
    assert_eq!((m.source, m.dest, m.kind), ("alice", "bob", "voip_invite"));
    let content: Value = serde_json::from_str(m.content).unwrap();
    assert_eq!(
        content,
        json!({"channel": "r9", "peer": "alice", "extra": {"obj": true}, "peeruid": 0})
    );
}

#[tokio::test]
async fn refuse_reaches_the_caller() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    invite(&mut alice, "r2", "bob", json!("")).await;
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
                call::VOIP_INVITE_REFUSE,
                "r2",
                "alice",
                "\"busy\"",
                now,
            )
        })
        .await;
    let e = alice.expect(call_event(CallEvent::RefusedByPeer)).await;
    assert!(matches!(e, Event::Call { extra, .. } if extra == "busy"));
}

#[tokio::test]
async fn require_peer_online_fails_at_once_with_703() {
    let srv = server().await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "alice", "").await;
    let (err, _) = raw
        .call(
            "voip_invite",
            1,
            json!({"channelName": "r3", "peer": "ghost", "extra": "{\"_require_peer_online\":1}"}),
        )
        .await;
    assert_eq!(err, "");
    let f = raw.recv_flat().await.unwrap();
    let pair: Value = serde_json::from_str(f[1][1].as_str().unwrap()).unwrap();
    let m = opensig_protocol::msg::parse(pair[1].as_str().unwrap()).unwrap();
    assert_eq!(m.kind, "voip_invite_failed");
    let content: Value = serde_json::from_str(m.content).unwrap();
    assert_eq!(
        content,
        json!({"channel": "r3", "peer": "ghost", "extra": "{\"_require_peer_online\":1}", "peeruid": 0, "ecode": 703})
    );
    // through the client: onInviteFailed(extra)
    let mut alice = User::login(&srv.ws_url(), "alice2").await;
    invite(
        &mut alice,
        "r3",
        "ghost",
        json!("{\"_require_peer_online\":1}"),
    )
    .await;
    let e = alice.expect(call_event(CallEvent::Failed)).await;
    assert!(matches!(e, Event::Call { extra, .. } if extra == "{\"_require_peer_online\":1}"));
}

#[tokio::test]
async fn offline_peer_fails_after_the_grace_period_unless_it_comes_online() {
    let srv = server_with(|c| c.limits.invite_offline_grace_secs = 1).await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let t = Instant::now();
    invite(
        &mut alice,
        "r4",
        "later",
        json!("{\"_require_peer_online\":0}"),
    )
    .await;
    alice.expect(call_event(CallEvent::Failed)).await;
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    // the invite was destroyed: the peer does not get it when it logs in afterwards
    let mut later = User::login(&srv.ws_url(), "later").await;
    later.settled().await;
    // a peer that logs in within the grace period receives it and the invite goes on
    invite(&mut alice, "r5", "soon", json!("")).await;
    let mut soon = User::login(&srv.ws_url(), "soon").await;
    soon.expect(|e| matches!(e, Event::InviteReceived { channel, .. } if channel == "r5"))
        .await;
    alice.expect(call_event(CallEvent::ReceivedByPeer)).await;
    // a marker invitation to an offline peer, started after r5 with the same grace: once it
    // has failed, r5's grace period is over too, and r5 must not have failed
    let marker = invite(&mut alice, "r5-marker", "nobody", json!("")).await;
    alice
        .expect(
            |e| matches!(e, Event::Call { call, what: CallEvent::Failed, .. } if *call == marker),
        )
        .await;
    alice.settled().await;
}

#[tokio::test]
async fn timeout_fails_with_704_and_ends_the_ringing_peer() {
    let srv = server().await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "alice", "").await;
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    let t = Instant::now();
    let (err, _) = raw
        .call(
            "voip_invite",
            1,
            json!({"channelName": "r6", "peer": "bob", "extra": {"_timeout": 1}}),
        )
        .await;
    assert_eq!(err, "");
    bob.expect(|e| matches!(e, Event::InviteReceived { .. }))
        .await;
    let mut failed = None;
    while failed.is_none() {
        let f = raw.recv_flat().await.expect("voip_invite_failed");
        if f[1][0] != "recvmsg" {
            continue;
        }
        let pair: Value = serde_json::from_str(f[1][1].as_str().unwrap()).unwrap();
        let m = opensig_protocol::msg::parse(pair[1].as_str().unwrap()).unwrap();
        if m.kind == "voip_invite_failed" {
            failed = Some(serde_json::from_str::<Value>(m.content).unwrap());
        }
    }
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert_eq!(failed.unwrap()["ecode"], 704);
    bob.expect(call_event(CallEvent::EndByPeer)).await;
}

#[tokio::test]
async fn answered_invites_do_not_time_out() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    let r7 = invite(&mut alice, "r7", "bob", json!("{\"_timeout\":1}")).await;
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
                "r7",
                "alice",
                "\"\"",
                now,
            )
        })
        .await;
    alice
        .expect(|e| matches!(e, Event::Call { call, what: CallEvent::ReceivedByPeer, .. } if *call == r7))
        .await;
    alice.expect(call_event(CallEvent::AcceptedByPeer)).await;
    // a marker invitation with the same timeout, started after r7 was answered: once it has
    // timed out, r7's timeout is past too, and neither side may have seen r7 end
    let marker = invite(&mut alice, "r7-marker", "bob", json!("{\"_timeout\":1}")).await;
    bob.expect(|e| matches!(e, Event::InviteReceived { channel, .. } if channel == "r7-marker"))
        .await;
    alice
        .expect(|e| matches!(e, Event::Call { call, what: CallEvent::ReceivedByPeer, .. } if *call == marker))
        .await;
    alice
        .expect(
            |e| matches!(e, Event::Call { call, what: CallEvent::Failed, .. } if *call == marker),
        )
        .await;
    bob.expect(call_event(CallEvent::EndByPeer)).await;
    alice.settled().await;
    bob.settled().await;
}

#[tokio::test]
async fn inviting_oneself_is_refused() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    invite(&mut alice, "r8", "alice", json!("")).await;
    let e = alice.expect(call_event(CallEvent::Failed)).await;
    assert!(matches!(e, Event::Call { extra, .. } if extra == "invalid_peer"));
}

/// The `voip_invite_failed` contents waiting in `raw`'s mailbox.
async fn failures_in_mailbox(raw: &mut Raw) -> Vec<Value> {
    let (err, page) = raw
        .call("user_getmsg", 90, json!({"ver_clear": 0, "max": 30}))
        .await;
    assert_eq!(err, "");
    page["msgs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|pair| {
            let m = opensig_protocol::msg::parse(pair[1].as_str()?)?;
            (m.kind == "voip_invite_failed").then(|| serde_json::from_str(m.content).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn a_caller_gone_past_the_grace_period_ends_its_invitation_with_702() {
    let srv = server_with(|c| c.limits.invite_offline_grace_secs = 1).await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    let out = invite(&mut alice, "g1", "bob", json!("x")).await;
    let Event::InviteReceived { call: inc, .. } = bob
        .expect(|e| matches!(e, Event::InviteReceived { .. }))
        .await
    else {
        unreachable!()
    };
    alice
        .expect(|e| matches!(e, Event::Call { call, what: CallEvent::ReceivedByPeer, .. } if *call == out))
        .await;
    drop(alice);
    // the ringing callee hears the end, with the reason
    bob.expect(|e| {
        matches!(e, Event::Call { call, what: CallEvent::EndByPeer, code: Some(702), .. } if *call == inc)
    })
    .await;
    // the caller finds the failure (702, its extra) at its next login
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "alice", "").await;
    assert_eq!(
        failures_in_mailbox(&mut raw).await,
        vec![json!({"channel": "g1", "peer": "bob", "extra": "x", "peeruid": 0, "ecode": 702})]
    );
    bob.settled().await;
}

#[tokio::test]
async fn a_caller_back_within_the_grace_period_keeps_its_invitation() {
    let srv = server_with(|c| c.limits.invite_offline_grace_secs = 2).await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    invite(&mut alice, "g2", "bob", json!("")).await;
    bob.expect(|e| matches!(e, Event::InviteReceived { channel, .. } if channel == "g2"))
        .await;
    drop(alice);
    bob.wait_offline("alice").await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "alice", "").await;
    // a marker: dave's invitation, whose caller is gone for good, started after alice left;
    // once it has ended with 702, alice's grace period is over too
    let mut dave = User::login(&srv.ws_url(), "dave").await;
    invite(&mut dave, "g3", "bob", json!("")).await;
    let Event::InviteReceived { call: g3, .. } = bob
        .expect(|e| matches!(e, Event::InviteReceived { channel, .. } if channel == "g3"))
        .await
    else {
        unreachable!()
    };
    drop(dave);
    bob.expect(|e| {
        matches!(e, Event::Call { call, what: CallEvent::EndByPeer, code: Some(702), .. } if *call == g3)
    })
    .await;
    bob.settled().await;
    assert_eq!(failures_in_mailbox(&mut raw).await, Vec::<Value>::new());
}
