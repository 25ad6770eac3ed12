//! opensig presence subscriptions on the wire (`user_subscribe_status`, `peer_status`): the
//! states in the reply, then every change of a watched account and nothing about others;
//! UNREACHABLE for a dropped connection within the grace period (a quick return shows no
//! OFFLINE), OFFLINE after it, at logout and at a kick; the bounds; across two nodes; with
//! the firehose channels closed. Both stores (`OPENSIG_TEST_STORE=redis`).

mod common;

use common::*;
use serde_json::{json, Value};

/// A raw session of `account` on `url`.
async fn raw(url: &str, account: &str) -> Raw {
    let mut r = Raw::connect(url).await;
    let ret = r.login(APP, account, "_no_need_token").await;
    assert_eq!(ret[1][0], "", "{account} login: {ret}");
    r
}

/// The next `peer_status` notification's states (other frames are skipped).
async fn next_status(w: &mut Raw) -> Value {
    loop {
        let f = w
            .recv_flat()
            .await
            .expect("a peer_status before the timeout");
        if f[0] == "notify" && f[1][0] == "peer_status" {
            return serde_json::from_str(f[1][1].as_str().unwrap()).unwrap();
        }
    }
}

async fn subscribe(w: &mut Raw, id: u64, accounts: &[&str]) -> (String, Value) {
    w.call("user_subscribe_status", id, json!({ "accounts": accounts }))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_hears_its_accounts_and_nobody_else() {
    let srv = server_with(|c| {
        c.limits.presence_grace_secs = 1;
        c.no_firehose.insert("*".into()); // subscriptions do not need the firehose
    })
    .await;
    let url = srv.ws_url();
    let mut w = raw(&url, "watcher").await;
    let (err, body) = subscribe(&mut w, 1, &["alice", "bob"]).await;
    assert_eq!(err, "");
    assert_eq!(
        body["status"],
        json!({"alice": "OFFLINE", "bob": "OFFLINE"})
    );

    let mut alice = raw(&url, "alice").await;
    assert_eq!(next_status(&mut w).await, json!({"alice": "ONLINE"}));
    // carol is not watched: her login and logout come before bob's, and are not heard
    let mut carol = raw(&url, "carol").await;
    carol.call("user_logout", 1, json!({})).await;
    let mut bob = raw(&url, "bob").await;
    assert_eq!(next_status(&mut w).await, json!({"bob": "ONLINE"}));

    // a dropped connection: unreachable, and back within the grace period: online
    drop(bob);
    assert_eq!(next_status(&mut w).await, json!({"bob": "UNREACHABLE"}));
    let (_, q) = w
        .call(
            "user_query_status",
            2,
            json!({"accounts": ["bob", "alice", "nobody"]}),
        )
        .await;
    assert_eq!(
        q["status"],
        json!({"bob": "UNREACHABLE", "alice": "ONLINE", "nobody": "OFFLINE"})
    );
    // many at once (asked of the store several at a time): each state is its account's
    let mut many: Vec<String> = (0..298).map(|i| format!("nobody{i}")).collect();
    many.insert(70, "alice".into());
    many.insert(200, "bob".into());
    let (err, q) = w
        .call("user_query_status", 30, json!({ "accounts": many }))
        .await;
    assert_eq!(err, "");
    let states = q["status"].as_object().expect("a map");
    assert_eq!(states.len(), 300);
    let not_offline: Vec<(&str, &str)> = (states.iter())
        .filter(|(_, s)| *s != "OFFLINE")
        .map(|(a, s)| (a.as_str(), s.as_str().unwrap_or_default()))
        .collect();
    assert_eq!(not_offline, [("alice", "ONLINE"), ("bob", "UNREACHABLE")]);
    bob = raw(&url, "bob").await;
    assert_eq!(next_status(&mut w).await, json!({"bob": "ONLINE"}));
    // dropped and not back: unreachable, then offline once the grace period is over
    drop(bob);
    assert_eq!(next_status(&mut w).await, json!({"bob": "UNREACHABLE"}));
    assert_eq!(next_status(&mut w).await, json!({"bob": "OFFLINE"}));
    // a logout is offline at once
    alice.call("user_logout", 1, json!({})).await;
    assert_eq!(next_status(&mut w).await, json!({"alice": "OFFLINE"}));

    // unsubscribed: alice's next login is not heard, bob's (still watched) is
    let (err, _) = w
        .call("user_unsubscribe_status", 3, json!({"accounts": ["alice"]}))
        .await;
    assert_eq!(err, "");
    let _alice = raw(&url, "alice").await;
    let _bob = raw(&url, "bob").await;
    assert_eq!(next_status(&mut w).await, json!({"bob": "ONLINE"}));
    srv.shutdown().await;
}

/// A login within the grace period ends the dropped connection's unreachable mark: after a
/// logout that follows, the account is offline, not unreachable for what is left of a grace
/// period (a long one here, so that only the login can have ended it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_back_within_the_grace_period_is_offline_once_it_logs_out() {
    let srv = server_with(|c| {
        c.limits.presence_grace_secs = 600;
        c.no_firehose.insert("*".into());
    })
    .await;
    let url = srv.ws_url();
    let mut w = raw(&url, "watcher").await;
    subscribe(&mut w, 1, &["bob"]).await;
    let bob = raw(&url, "bob").await;
    assert_eq!(next_status(&mut w).await, json!({"bob": "ONLINE"}));
    drop(bob);
    assert_eq!(next_status(&mut w).await, json!({"bob": "UNREACHABLE"}));
    let mut bob = raw(&url, "bob").await;
    assert_eq!(next_status(&mut w).await, json!({"bob": "ONLINE"}));
    bob.call("user_logout", 1, json!({})).await;
    assert_eq!(next_status(&mut w).await, json!({"bob": "OFFLINE"}));
    let (_, q) = w
        .call("user_query_status", 2, json!({"accounts": ["bob"]}))
        .await;
    assert_eq!(q["status"], json!({"bob": "OFFLINE"}));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_are_bounded_per_session_per_call_rate_and_per_app() {
    // (the watched accounts in one unit, which holds its share of the app's bound: the bound
    // that gives it 6)
    let srv = server_with(|c| {
        c.limits.watch_peers_per_session = 4;
        c.limits.watch_calls_per_5s = 3;
        c.limits.app_watches_max = 6 * partitions() as usize;
    })
    .await;
    let n = names_in_unit_of("n0", "n", 9);
    let n = |i: usize| n[i].as_str();
    let url = srv.ws_url();
    let mut w = raw(&url, "w1").await;
    assert_eq!(subscribe(&mut w, 1, &[n(0), n(1), n(2), n(3)]).await.0, "");
    // a fifth account overflows the session (RTM's OVERFLOW), the watches stay as they were
    assert_eq!(subscribe(&mut w, 2, &[n(4)]).await.0, "too_many_peers");
    // the fourth call within 5 s is refused (RTM's TOO_OFTEN)
    assert_eq!(subscribe(&mut w, 3, &[n(0)]).await.0, "");
    assert_eq!(subscribe(&mut w, 4, &[n(0)]).await.0, "rate_limited");
    // the app holds 4; another session may add 2, not 3
    let mut v = raw(&url, "w2").await;
    assert_eq!(
        subscribe(&mut v, 1, &[n(5), n(6), n(7)]).await.0,
        "too_many_peers"
    );
    assert_eq!(subscribe(&mut v, 2, &[n(5), n(6)]).await.0, "");
    // a session's watches end with it: room for another's
    v.call("user_logout", 3, json!({})).await;
    let mut u = raw(&url, "w3").await;
    assert_eq!(subscribe(&mut u, 1, &[n(7), n(8)]).await.0, "");
    // bad input
    let (err, _) = u
        .call("user_subscribe_status", 2, json!({"accounts": "alice"}))
        .await;
    assert_eq!(err, "invalid_args");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_node_hears_an_account_on_another() {
    let nodes = cluster(2, |c| c.limits.presence_grace_secs = 1).await;
    let mut w = raw(&nodes[0].ws_url(), "watcher").await;
    assert_eq!(subscribe(&mut w, 1, &["alice"]).await.0, "");
    // more watchers on that node (Redis tells a node once for all of them)
    let mut more = vec![];
    for i in 0..3 {
        let mut m = raw(&nodes[0].ws_url(), &format!("watcher{i}")).await;
        assert_eq!(subscribe(&mut m, 1, &["alice"]).await.0, "");
        more.push(m);
    }
    let mut alice = raw(&nodes[1].ws_url(), "alice").await;
    assert_eq!(next_status(&mut w).await, json!({"alice": "ONLINE"}));
    for m in &mut more {
        assert_eq!(next_status(m).await, json!({"alice": "ONLINE"}));
    }
    let (_, q) = w
        .call("user_query_status", 2, json!({"accounts": ["alice"]}))
        .await;
    assert_eq!(q["status"], json!({"alice": "ONLINE"}));
    alice.call("user_logout", 1, json!({})).await;
    assert_eq!(next_status(&mut w).await, json!({"alice": "OFFLINE"}));
    for m in &mut more {
        assert_eq!(next_status(m).await, json!({"alice": "OFFLINE"}));
    }
    // a kick through the backend API on the other node: offline too
    let mut alice = raw(&nodes[1].ws_url(), "alice").await;
    assert_eq!(next_status(&mut w).await, json!({"alice": "ONLINE"}));
    let kick = format!("{}/api/v1/apps/{APP}/users/alice/kick", nodes[1].http_url());
    let r = http_request("POST", kick, vec![], None, &[]).await;
    assert_eq!(r.body["kicked"], true, "{}", r.body);
    assert!(alice.closed().await);
    assert_eq!(next_status(&mut w).await, json!({"alice": "OFFLINE"}));
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_whose_node_dies_goes_offline_for_watchers_on_another() {
    let mut nodes = cluster(2, |_| {}).await;
    let mut w = raw(&nodes[1].ws_url(), "watcher").await;
    let _alice = raw(&nodes[0].ws_url(), "alice").await;
    let (_, body) = subscribe(&mut w, 1, &["alice"]).await;
    assert_eq!(body["status"], json!({"alice": "ONLINE"}));
    // the node is killed (no farewell, nothing cleaned up); the survivor reaps it
    nodes.remove(0).kill().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let state = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let f = w
            .recv_within(left)
            .await
            .expect("a peer_status after the node died");
        let frames = match f[0].as_str() {
            Some("multi") => f[1].as_array().cloned().unwrap_or_default(),
            _ => vec![f],
        };
        if let Some(f) = frames
            .iter()
            .find(|f| f[0] == "notify" && f[1][0] == "peer_status")
        {
            break serde_json::from_str::<Value>(f[1][1].as_str().unwrap()).unwrap();
        }
    };
    assert_eq!(state, json!({"alice": "OFFLINE"}));
    for n in nodes {
        n.shutdown().await;
    }
}
