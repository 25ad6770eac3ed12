//! Chaos: two opensig-server processes on one redis-server; clients spread over both exchange
//! 10,000 acknowledged peer-to-peer messages while one node is killed with SIGKILL. Its
//! clients fail over to the survivor. Every acknowledged message must reach its recipient
//! exactly once, nothing must arrive twice, and every invitation in flight must end (accepted
//! or failed), never hang.
mod common;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use opensig_protocol::client::{CallEvent, Config, Event};
use opensig_protocol::driver::Session;
use opensig_protocol::names::call;

const USERS_PER_NODE: usize = 10;
const MESSAGES: usize = 10_000;
const IN_FLIGHT: usize = 16;

struct Node {
    child: Child,
    url: String,
}

fn spawn_node(redis: &str, prefix: &str, id: &str) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_opensig-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--redis",
            redis,
            "--redis-prefix",
            prefix,
            "--node-id",
            id,
            "--www",
            "/nonexistent",
            "--limit",
            "user_messages_per_second=100000",
            "--metrics-listen",
            "off",
        ])
        .env("OPENSIG_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start opensig-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let Some(url) = line.split_whitespace().find(|w| w.starts_with("ws://")) else {
        // not left running behind a failed test
        let _ = child.kill();
        let _ = child.wait();
        panic!("no URL in {line:?}");
    };
    let url = url.to_string();
    Node { child, url }
}

#[derive(Default)]
struct Ledger {
    /// message text → recipient, for messages whose send was acknowledged
    acked: HashMap<String, String>,
    /// sends that failed (may or may not have arrived; at most once)
    failed: HashSet<String>,
    /// (recipient, text) → times received
    received: HashMap<(String, String), usize>,
    /// invitation outcomes by "caller>callee"
    invites: HashMap<String, Vec<&'static str>>,
}

fn account(node: usize, i: usize) -> String {
    format!("u{node}x{i}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_survive_a_killed_node() {
    let redis = redis_url();
    let prefix = unique_prefix();
    let mut a = spawn_node(&redis, &prefix, "chaosA");
    let b = spawn_node(&redis, &prefix, "chaosB");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let sent_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));

    // 10 users on each node, each able to fail over to the other
    let mut tasks = vec![];
    for node in 0..2 {
        for i in 0..USERS_PER_NODE {
            let me = account(node, i);
            let peer = account(1 - node, i);
            let servers = if node == 0 {
                vec![a.url.clone(), b.url.clone()]
            } else {
                vec![b.url.clone(), a.url.clone()]
            };
            let mut cfg = Config::new(APP, &me, "");
            cfg.servers = servers;
            let ledger = ledger.clone();
            let sent_count = sent_count.clone();
            tasks.push(tokio::spawn(user(cfg, me, peer, node, ledger, sent_count)));
        }
    }

    // kill node A with SIGKILL once about 40% of the messages were sent
    let t0 = Instant::now();
    while sent_count.load(std::sync::atomic::Ordering::Relaxed) < MESSAGES * 4 / 10 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "senders stalled before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.child.kill().unwrap(); // SIGKILL
    let _ = a.child.wait();
    let killed_at = sent_count.load(std::sync::atomic::Ordering::Relaxed);

    for t in tasks {
        t.await.unwrap();
    }
    let l = ledger.lock().unwrap();
    let acked = l.acked.len();
    assert!(
        acked + l.failed.len() == MESSAGES,
        "{acked} acked + {} failed",
        l.failed.len()
    );
    assert!(
        acked >= MESSAGES * 99 / 100,
        "only {acked} of {MESSAGES} acknowledged"
    );
    let mut missing = vec![];
    for (text, to) in &l.acked {
        match l.received.get(&(to.clone(), text.clone())) {
            Some(1) => {}
            Some(n) => panic!("{text} delivered {n} times to {to}"),
            None => missing.push(text.clone()),
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged messages never arrived, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for ((to, text), n) in &l.received {
        assert_eq!(*n, 1, "{text} arrived {n} times at {to}");
        assert!(
            l.acked.contains_key(text) || l.failed.contains(text),
            "unknown message {text}"
        );
    }
    // every invitation in flight ended exactly once
    assert_eq!(l.invites.len(), USERS_PER_NODE);
    for (k, outcomes) in &l.invites {
        assert_eq!(outcomes.len(), 1, "{k}: {outcomes:?}");
    }
    println!(
        "chaos: {acked} acknowledged, {} failed, killed after {killed_at} sends, {} invitations ended",
        l.failed.len(),
        l.invites.len()
    );
    drop(l);
    let mut b = b;
    let _ = b.child.kill();
    let _ = b.child.wait();
}

/// One user: sends its share of messages to its peer (pipelined), accepts incoming calls,
/// places one call around the time of the kill, and records everything it sees.
async fn user(
    cfg: Config,
    me: String,
    peer: String,
    node: usize,
    ledger: Arc<Mutex<Ledger>>,
    sent_count: Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut s = Session::login(cfg);
    loop {
        match s.next_event().await.expect("session") {
            Event::LoginSuccess { .. } => break,
            Event::LoginFailed { code } => panic!("{me}: login failed {code:?}"),
            _ => {}
        }
    }
    let share = MESSAGES / (USERS_PER_NODE * 2);
    let mut next = 0;
    let mut pending: HashMap<u32, String> = HashMap::new();
    let mut invited = false;
    // node-0 users are only called; node-1 users wait for their call to end
    let mut invite_done = node == 0;
    let mut outgoing = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while next < share || !pending.is_empty() || !invite_done {
        assert!(
            Instant::now() < deadline,
            "{me}: stuck with {} pending, invite done: {invite_done}",
            pending.len()
        );
        while next < share && pending.len() < IN_FLIGHT {
            let text = format!("{me}-m{next}");
            let (p, t) = (peer.clone(), text.clone());
            let req = s
                .with(move |c, now| c.message_instant_send(&p, &t, now))
                .await;
            pending.insert(req.0, text);
            next += 1;
            sent_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // node-1 users call their peer once half of their messages went out
        if !invited && next >= share / 2 && node == 1 {
            invited = true;
            let p = peer.clone();
            outgoing = Some(
                s.with(move |c, now| {
                    c.invite("chaosroom", &p, "\"{\\\"_timeout\\\":10}\"", now)
                        .0
                })
                .await,
            );
        }
        let e = match tokio::time::timeout(Duration::from_millis(200), s.next_event()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("{me}: session ended"),
            Err(_) => continue,
        };
        let mut l = ledger.lock().unwrap();
        match e {
            Event::Done { req, result } => {
                if let Some(text) = pending.remove(&req.0) {
                    match result {
                        Ok(_) => {
                            l.acked.insert(text, peer.clone());
                        }
                        Err(_) => {
                            l.failed.insert(text);
                        }
                    }
                }
            }
            Event::MessageInstant { msg, .. } => {
                *l.received
                    .entry((me.clone(), msg.as_str().unwrap_or_default().to_string()))
                    .or_default() += 1;
            }
            Event::InviteReceived {
                call,
                channel,
                peer: from,
                ..
            } => {
                drop(l);
                s.with(move |c, now| {
                    c.call_reply(call, call::VOIP_INVITE_ACCEPT, &channel, &from, "\"\"", now)
                })
                .await;
                continue;
            }
            Event::Call { call, what, .. } if Some(call) == outgoing => {
                let outcome = match what {
                    CallEvent::AcceptedByPeer => Some("accepted"),
                    CallEvent::Failed => Some("failed"),
                    CallEvent::RefusedByPeer => Some("refused"),
                    _ => None,
                };
                if let Some(o) = outcome {
                    l.invites.entry(format!("{me}>{peer}")).or_default().push(o);
                    invite_done = true;
                }
            }
            Event::Logout { code } => panic!("{me}: logged out {code:?}"),
            _ => {}
        }
    }
    // keep receiving until the peer's acknowledged messages addressed to us have all arrived
    let wait_until = Instant::now() + Duration::from_secs(30);
    loop {
        let done = {
            let l = ledger.lock().unwrap();
            let expected = l.acked.values().filter(|to| **to == me).count();
            let got = l.received.keys().filter(|(to, _)| *to == me).count();
            // the peer may still be sending: its share is fixed, so wait for all of it
            let peer_finished = l
                .acked
                .keys()
                .chain(l.failed.iter())
                .filter(|t| t.starts_with(&format!("{peer}-")))
                .count()
                == share;
            peer_finished && got >= expected
        };
        if done || Instant::now() > wait_until {
            break;
        }
        if let Ok(Some(Event::MessageInstant { msg, .. })) =
            tokio::time::timeout(Duration::from_millis(100), s.next_event()).await
        {
            *ledger
                .lock()
                .unwrap()
                .received
                .entry((me.clone(), msg.as_str().unwrap_or_default().to_string()))
                .or_default() += 1;
        }
    }
    // a last moment for duplicates to show up
    let until = Instant::now() + Duration::from_millis(1500);
    while let Ok(Some(e)) = tokio::time::timeout_at(until.into(), s.next_event()).await {
        if let Event::MessageInstant { msg, .. } = e {
            *ledger
                .lock()
                .unwrap()
                .received
                .entry((me.clone(), msg.as_str().unwrap_or_default().to_string()))
                .or_default() += 1;
        }
    }
}
