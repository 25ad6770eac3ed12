//! Two (or more) opensig-server nodes sharing one real redis-server: every feature across
//! nodes, kick across nodes, `/getaddr`, failover after a node dies (and its reaping), and
//! Redis going away and coming back.
mod common;
use std::time::Duration;

use common::*;
use opensig_protocol::client::{CallEvent, Event, State};
use opensig_protocol::names::call;
use opensig_protocol::Code;
use opensig_server::config::ServerConfig;
use serde_json::{json, Value};

fn cfg_on(urls: &[String], account: &str) -> opensig_protocol::client::Config {
    let mut c = config(&urls[0], account, "");
    c.servers = urls.to_vec();
    c
}

#[tokio::test]
async fn p2p_and_offline_mail_across_nodes() {
    let nodes = cluster(2, |_| {}).await;
    let mut alice = User::login(&nodes[0].ws_url(), "alice").await;
    let mut bob = User::login(&nodes[1].ws_url(), "bob").await;
    alice.send("bob", "over the wire").await.unwrap();
    bob.expect(|e| matches!(e, Event::MessageInstant { msg, .. } if msg == "over the wire"))
        .await;
    bob.send("alice", "and back").await.unwrap();
    alice
        .expect(|e| matches!(e, Event::MessageInstant { msg, .. } if msg == "and back"))
        .await;
    // offline: stored in Redis, delivered when carol logs in on the other node
    alice.send("carol", "later").await.unwrap();
    let mut carol = User::login(&nodes[1].ws_url(), "carol").await;
    carol
        .expect(|e| matches!(e, Event::MessageInstant { msg, .. } if msg == "later"))
        .await;
    // presence is cluster-wide
    let r = alice
        .invoke("user_query_user_status", json!({"account": "carol"}))
        .await
        .unwrap();
    assert_eq!(r["status"], 1);
    // user attributes too
    carol
        .invoke("user_set_attr", json!({"name": "mood", "value": "fine"}))
        .await
        .unwrap();
    let r = alice
        .invoke("user_get_attr", json!({"account": "carol", "name": "mood"}))
        .await
        .unwrap();
    assert_eq!(r["value"], "fine");
}

#[tokio::test]
async fn channels_members_messages_attributes_and_queries_across_nodes() {
    let nodes = cluster(2, |_| {}).await;
    let mut a = User::login(&nodes[0].ws_url(), "a").await;
    let mut b = User::login(&nodes[1].ws_url(), "b").await;
    let mut c = User::login(&nodes[1].ws_url(), "c").await;
    a.join("room").await;
    a.s.with(|cl, now| cl.channel_attr("room", Some("topic"), Some("x"), now))
        .await;
    let (_, list) = b.join("room").await;
    assert_eq!(accounts(&list), vec!["a", "b"]);
    b.expect(
        |e| matches!(e, Event::ChannelAttr { name, value, .. } if name == "topic" && value == "x"),
    )
    .await;
    a.expect(|e| matches!(e, Event::ChannelUserJoined { account, .. } if account == "b"))
        .await;
    let (_, list) = c.join("room").await;
    assert_eq!(accounts(&list), vec!["a", "b", "c"]);
    for u in [&mut a, &mut b] {
        u.expect(|e| matches!(e, Event::ChannelUserJoined { account, .. } if account == "c"))
            .await;
    }
    c.channel_send("room", "from node 1").await.unwrap();
    for u in [&mut a, &mut b, &mut c] {
        u.expect(|e| matches!(e, Event::ChannelMessage { msg, .. } if msg == "from node 1"))
            .await;
    }
    a.s.with(|cl, now| cl.channel_attr("room", Some("topic"), None, now))
        .await;
    for u in [&mut b, &mut c] {
        u.expect(|e| matches!(e, Event::ChannelAttr { kind, .. } if kind == "del"))
            .await;
    }
    // the same answers from either node
    for u in [&mut a, &mut c] {
        let r = u
            .invoke("channel_query_num", json!({"name": "room"}))
            .await
            .unwrap();
        assert_eq!(r["num"], 3);
        let r = u
            .invoke("channel_query_userlist", json!({"name": "room"}))
            .await
            .unwrap();
        assert_eq!(accounts(&r["list"]), vec!["a", "b", "c"]);
        let r = u
            .invoke(
                "channel_query_user_isin",
                json!({"name": "room", "account": "b"}),
            )
            .await
            .unwrap();
        assert_eq!(r["isin"], 1);
    }
    drop(b);
    for u in [&mut a, &mut c] {
        u.expect(|e| matches!(e, Event::ChannelUserLeft { account, .. } if account == "b"))
            .await;
    }
    // channel sequences are cluster-wide and strictly increasing for every member
    for i in 0..5 {
        let (sender, text) = if i % 2 == 0 {
            (&mut a, format!("x{i}"))
        } else {
            (&mut c, format!("x{i}"))
        };
        sender.channel_send("room", &text).await.unwrap();
    }
    for u in [&mut a, &mut c] {
        for i in 0..5 {
            let want = json!(format!("x{i}"));
            u.expect(|e| matches!(e, Event::ChannelMessage { msg, .. } if *msg == want))
                .await;
        }
    }
}

#[tokio::test]
async fn calls_across_nodes() {
    let nodes = cluster(2, |c| c.limits.invite_offline_grace_secs = 1).await;
    let mut a = User::login(&nodes[0].ws_url(), "a").await;
    let mut b = User::login(&nodes[1].ws_url(), "b").await;
    let out =
        a.s.with(|c, now| c.invite("r1", "b", "\"{}\"", now).0)
            .await;
    let Event::InviteReceived { call: inc, .. } = b
        .expect(|e| matches!(e, Event::InviteReceived { .. }))
        .await
    else {
        unreachable!()
    };
    a.expect(
        |e| matches!(e, Event::Call { call, what: CallEvent::ReceivedByPeer, .. } if *call == out),
    )
    .await;
    b.s.with(move |c, now| c.call_reply(inc, call::VOIP_INVITE_ACCEPT, "r1", "a", "\"ok\"", now))
        .await;
    a.expect(|e| matches!(e, Event::Call { what: CallEvent::AcceptedByPeer, extra, .. } if extra == "ok")).await;
    a.s.with(move |c, now| c.call_dtmf(out, "r1", "b", "3", now))
        .await;
    b.expect(|e| {
        matches!(
            e,
            Event::Call {
                what: CallEvent::Msg,
                ..
            }
        )
    })
    .await;
    b.s.with(move |c, now| c.call_reply(inc, call::VOIP_INVITE_BYE, "r1", "a", "\"\"", now))
        .await;
    b.expect(
        |e| matches!(e, Event::Call { call, what: CallEvent::EndByMyself, .. } if *call == inc),
    )
    .await;
    a.expect(|e| {
        matches!(
            e,
            Event::Call {
                what: CallEvent::EndByPeer,
                ..
            }
        )
    })
    .await;
    // offline peer: fails at once with _require_peer_online:1, after the grace period otherwise
    a.s.with(|c, now| c.invite("r2", "ghost", "\"{\\\"_require_peer_online\\\":1}\"", now))
        .await;
    a.expect(|e| {
        matches!(
            e,
            Event::Call {
                what: CallEvent::Failed,
                code: Some(703),
                ..
            }
        )
    })
    .await;
    let t = std::time::Instant::now();
    a.s.with(|c, now| c.invite("r3", "ghost", "\"\"", now))
        .await;
    a.expect(|e| {
        matches!(
            e,
            Event::Call {
                what: CallEvent::Failed,
                code: Some(703),
                ..
            }
        )
    })
    .await;
    assert!(t.elapsed() >= Duration::from_millis(900));
    // a timeout timer fires once, even with two nodes polling the timer set
    let r4 =
        a.s.with(|c, now| c.invite("r4", "b", "\"{\\\"_timeout\\\":1}\"", now).0)
            .await;
    b.expect(|e| matches!(e, Event::InviteReceived { channel, .. } if channel == "r4"))
        .await;
    a.expect(
        |e| matches!(e, Event::Call { call, what: CallEvent::ReceivedByPeer, .. } if *call == r4),
    )
    .await;
    a.expect(|e| {
        matches!(
            e,
            Event::Call {
                what: CallEvent::Failed,
                code: Some(704),
                ..
            }
        )
    })
    .await;
    b.expect(|e| {
        matches!(
            e,
            Event::Call {
                what: CallEvent::EndByPeer,
                code: Some(704),
                ..
            }
        )
    })
    .await;
    // a marker invitation with the same timeout, started after r4 timed out: once it has
    // timed out too, a second firing of r4's timer would have been delivered before it
    let marker =
        a.s.with(|c, now| {
            c.invite("r4-marker", "b", "\"{\\\"_timeout\\\":1}\"", now)
                .0
        })
        .await;
    b.expect(|e| matches!(e, Event::InviteReceived { channel, .. } if channel == "r4-marker"))
        .await;
    a.expect(|e| matches!(e, Event::Call { call, what: CallEvent::ReceivedByPeer, .. } if *call == marker))
        .await;
    a.expect(|e| matches!(e, Event::Call { call, what: CallEvent::Failed, code: Some(704), .. } if *call == marker))
        .await;
    b.expect(|e| {
        matches!(
            e,
            Event::Call {
                what: CallEvent::EndByPeer,
                code: Some(704),
                ..
            }
        )
    })
    .await;
    a.settled().await;
    b.settled().await;
}

#[tokio::test]
async fn kick_across_nodes_and_special_channels() {
    let nodes = cluster(2, |_| {}).await;
    let mut watcher = User::login(&nodes[1].ws_url(), "watcher").await;
    watcher.join("__agora_user_online").await;
    let mut raw = Raw::connect(&nodes[0].ws_url()).await;
    raw.login(APP, "dup", "").await;
    watcher
        .expect(|e| matches!(e, Event::ChannelUserJoined { account, .. } if account == "dup"))
        .await;
    let mut second = User::login(&nodes[1].ws_url(), "dup").await;
    assert_eq!(raw.recv().await.unwrap(), json!(["kick", ""]));
    assert!(raw.closed().await);
    // still online (on the other node), no spurious leave/join for the takeover
    watcher.send("dup", "who has it?").await.unwrap();
    second
        .expect(|e| matches!(e, Event::MessageInstant { .. }))
        .await;
    let first = &nodes[0];
    wait_for("the replaced session ended", || async {
        first.local_sessions() == 0
    })
    .await;
    watcher.settled().await;
    drop(second);
    watcher
        .expect(|e| matches!(e, Event::ChannelUserLeft { account, .. } if account == "dup"))
        .await;
    // __agora_channel_event sees joins on every node
    let mut fire = User::login(&nodes[0].ws_url(), "fire").await;
    fire.join("__agora_channel_event").await;
    let mut j = User::login(&nodes[1].ws_url(), "joiner").await;
    j.join("lobby").await;
    fire.expect(|e| matches!(e, Event::ChannelUserJoined { account, .. } if account == "joiner"))
        .await;
}

/// Who `node`'s index of its channel memberships names (what reaping it would end).
async fn members_index(nodes: &[opensig_server::Server], node: &str) -> Vec<String> {
    let p = nodes[0].config().redis_prefix.clone();
    let key = format!("{p}nc {{{p}{APP}}} {node}");
    let out = redis_cli_cmd(&["SMEMBERS", &key]);
    out.lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn a_membership_that_moves_to_another_node_leaves_the_first_node_s_index() {
    let nodes = cluster(2, |_| {}).await;
    let mut first = User::login(&nodes[0].ws_url(), "mover").await;
    first.join("room").await;
    first.settled().await;
    assert_eq!(members_index(&nodes, "node0").await.len(), 1);
    // the same account on the other node, in the same channel: the membership moves there
    // (by its join, or by the first session's leave when that comes first)
    let mut second = User::login(&nodes[1].ws_url(), "mover").await;
    second.join("room").await;
    wait_for("the first node's index emptied", || async {
        members_index(&nodes, "node0").await.is_empty()
    })
    .await;
    assert_eq!(members_index(&nodes, "node1").await.len(), 1);
    let r = second
        .invoke("channel_query_num", json!({"name": "room"}))
        .await
        .unwrap();
    assert_eq!(r["num"], 1);
    drop(first);
}

#[tokio::test]
async fn getaddr_lists_the_live_nodes() {
    let mut nodes = cluster(3, |_| {}).await;
    let mut urls: Vec<String> = nodes.iter().map(|n| n.ws_url()).collect();
    urls.sort();
    let (_, _, body) = http_get(nodes[1].addr(), "/getaddr?vid=x").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let mut got: Vec<String> = v["web"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(got, urls);
    // a node that shut down is no longer listed
    let last = nodes.pop().unwrap();
    let gone = last.ws_url();
    last.shutdown().await;
    let first = nodes[0].addr();
    wait_for("the stopped node delisted", || async {
        let (_, _, body) = http_get(first, "/getaddr?vid=x").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        let web = v["web"].as_array().unwrap().clone();
        web.len() == 2 && !web.contains(&json!(gone))
    })
    .await;
}

#[tokio::test]
async fn a_dead_node_is_reaped_and_its_clients_fail_over() {
    let mut nodes = cluster(2, |_| {}).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.ws_url()).collect();
    let mut bob = User::login(&urls[1], "bob").await;
    let mut alice = User::login_with(cfg_on(&urls, "alice")).await;
    alice.join("room").await;
    bob.join("room").await;
    alice
        .expect(|e| matches!(e, Event::ChannelUserJoined { account, .. } if account == "bob"))
        .await;
    // alice's node crashes
    let dead = nodes.remove(0);
    dead.kill().await;
    alice
        .expect(|e| matches!(e, Event::Reconnecting { .. }))
        .await;
    // while she reconnects, bob writes to her
    bob.send("alice", "are you back?").await.unwrap();
    alice
        .expect_within(Duration::from_secs(10), |e| *e == Event::Reconnected)
        .await;
    assert_eq!(alice.s.state().await, State::LoggedIn);
    alice
        .expect(|e| matches!(e, Event::MessageInstant { msg, .. } if msg == "are you back?"))
        .await;
    // the channel was rejoined on the survivor: messages flow again
    alice
        .expect(|e| matches!(e, Event::ChannelUserList { .. }))
        .await;
    bob.channel_send("room", "welcome").await.unwrap();
    alice
        .expect(|e| matches!(e, Event::ChannelMessage { msg, .. } if msg == "welcome"))
        .await;
    let r = bob
        .invoke("channel_query_num", json!({"name": "room"}))
        .await
        .unwrap();
    assert_eq!(r["num"], 2);
    // a user who was only on the dead node is reaped: offline, out of the channel
    let nodes2 = cluster(2, |_| {}).await;
    let mut carl = User::login(&nodes2[0].ws_url(), "carl").await;
    let mut dora = User::login(&nodes2[1].ws_url(), "dora").await;
    carl.join("hall").await;
    dora.join("hall").await;
    let mut nodes2 = nodes2;
    nodes2.remove(0).kill().await;
    dora.expect_within(
        Duration::from_secs(12),
        |e| matches!(e, Event::ChannelUserLeft { account, .. } if account == "carl"),
    )
    .await;
    let r = dora
        .invoke("user_query_user_status", json!({"account": "carl"}))
        .await
        .unwrap();
    assert_eq!(r["status"], 0);
    drop(carl);
}

/// A node that crashed and is started again under the same id before another node reaped it
/// (none does once it is back) ends what its previous run left: its members leave their
/// channels and go offline, as a dead node's would. Its new connections are not taken for
/// the old ones, and one that logs in and joins meanwhile stays; the apps the old run listed
/// leave the node's list once nothing uses them.
#[tokio::test]
async fn a_node_back_under_its_id_ends_what_its_previous_run_left() {
    let prefix = unique_prefix();
    let node = |id: &str| {
        let mut c = ServerConfig {
            listen: "127.0.0.1:0".into(),
            redis_url: Some(redis_url()),
            redis_prefix: prefix.clone(),
            redis_partitions: common::partitions(),
            node_id: Some(id.into()),
            ..ServerConfig::default()
        };
        c.set_limit("idle_app_forget_secs=1").unwrap();
        async move { opensig_server::start(c).await.expect("node starts") }
    };
    let first = node("fixed").await;
    let other = node("other").await;
    let mut carl = User::login(&first.ws_url(), "carl").await;
    carl.join("hall").await;
    let mut frank = opensig_protocol::client::Config::new("otherapp", "frank", "");
    frank.servers = vec![first.ws_url()];
    let frank = User::login_with(frank).await;
    let mut dora = User::login(&other.ws_url(), "dora").await;
    dora.join("hall").await;
    first.kill().await;
    drop((carl, frank));
    // back at once: the other node has not reaped it (it would wait 5 s at least)
    let again = node("fixed").await;
    let mut erin = User::login(&again.ws_url(), "erin").await;
    erin.join("hall").await;
    dora.expect_within(
        Duration::from_secs(12),
        |e| matches!(e, Event::ChannelUserLeft { account, .. } if account == "carl"),
    )
    .await;
    let status = |account: &str| json!({ "account": account });
    // (his channels are left first, then his session ends)
    dora.wait_offline("carl").await;
    let r = dora
        .invoke("channel_query_num", json!({"name": "hall"}))
        .await
        .unwrap();
    assert_eq!(r["num"], 2, "dora and erin");
    let r = dora
        .invoke("user_query_user_status", status("erin"))
        .await
        .unwrap();
    assert_eq!(
        r["status"], 1,
        "erin's session on the node that came back stands"
    );
    let napps = format!("{prefix}napps {{{prefix}~}} fixed");
    let listed = || redis_cli_cmd(&["SMEMBERS", &napps]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while listed().lines().any(|l| l == "otherapp") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old run's app is still listed: {}",
            listed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(listed().lines().any(|l| l == APP), "{}", listed());
    drop(again);
}

#[tokio::test]
async fn redis_outage_gives_errors_then_recovers() {
    // a private redis whose process this test controls
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start_redis = move || {
        std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server")
    };
    let wait_up = move || {
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis did not start");
    };
    let mut redis = start_redis();
    wait_up();
    let url = format!("redis://127.0.0.1:{port}/");
    let node = server_with(|c| {
        c.redis_url = Some(url.clone());
        c.redis_prefix = unique_prefix();
    })
    .await;
    let mut alice = User::login(&node.ws_url(), "alice").await;
    let mut bob = User::login(&node.ws_url(), "bob").await;
    alice.send("bob", "before").await.unwrap();
    bob.expect(|e| matches!(e, Event::MessageInstant { msg, .. } if msg == "before"))
        .await;
    redis.kill().unwrap();
    let _ = redis.wait();
    // requests fail with an error reply, quickly, instead of hanging
    let t = std::time::Instant::now();
    let r = alice.send("bob", "during").await;
    assert_eq!(r, Err("unavailable".to_string()));
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    // Redis comes back (empty: no persistence configured here); the node re-registers and
    // has its clients reconnect, after which everything works again
    redis = start_redis();
    wait_up();
    alice
        .expect_within(Duration::from_secs(15), |e| *e == Event::Reconnected)
        .await;
    bob.expect_within(Duration::from_secs(15), |e| *e == Event::Reconnected)
        .await;
    alice.send("bob", "after").await.unwrap();
    bob.expect(|e| matches!(e, Event::MessageInstant { msg, .. } if msg == "after"))
        .await;
    let _ = Code::General;
    redis.kill().unwrap();
    let _ = redis.wait();
}
