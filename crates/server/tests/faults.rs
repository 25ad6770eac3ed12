//! Faults under load, with a ledger of every message: clients whose connections are cut every
//! 2 s, Redis killed and restarted (append-only file, `appendfsync always`) in the middle of a
//! stream, and a node cut off from Redis while its clients send. In every case each
//! acknowledged message reaches its recipient exactly once, no message arrives twice, and the
//! service is whole again afterwards. With `OPENSIG_TEST_STORE=redis-cluster`, a Redis Cluster
//! primary killed while its replica lags: with `--redis-wait-replicas 1` nothing acknowledged
//! is lost; with asynchronous replication the figures say what was.
mod common;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use opensig_protocol::client::{Config, Event};
use opensig_protocol::codes::ErrorKind;
use opensig_protocol::driver::Session;

/// Requests a sender keeps in flight.
const IN_FLIGHT: usize = 8;

#[derive(Default)]
struct Ledger {
    /// message text → recipient, for sends that were acknowledged
    acked: HashMap<String, String>,
    /// sends that failed (may or may not have arrived; at most once)
    failed: HashSet<String>,
    /// (recipient, text) → times received
    received: HashMap<(String, String), usize>,
    /// senders that finished their share
    finished: usize,
    /// Acknowledged messages may be lost (a Redis primary lost with writes it had not
    /// replicated): receivers stop at the barrier instead of waiting for every one.
    lossy: bool,
}

impl Ledger {
    /// The texts of acknowledged messages that never arrived.
    fn never_arrived(&self) -> impl Iterator<Item = &String> {
        self.acked
            .iter()
            .filter(|(text, to)| {
                !self
                    .received
                    .contains_key(&((*to).clone(), (*text).clone()))
            })
            .map(|(t, _)| t)
    }

    /// (acknowledged, failed, acknowledged but never arrived, arrived more than once).
    fn tally(&self) -> (usize, usize, usize, usize) {
        let lost = self.never_arrived().count();
        let twice = self.received.values().filter(|n| **n > 1).count();
        (self.acked.len(), self.failed.len(), lost, twice)
    }

    /// Every acknowledged message arrived exactly once, nothing arrived twice or unsent.
    /// Returns (acknowledged, failed).
    fn check(&self, total: usize) -> (usize, usize) {
        let (acked, failed) = (self.acked.len(), self.failed.len());
        assert_eq!(acked + failed, total, "{acked} acked + {failed} failed");
        let missing: Vec<&String> = self.never_arrived().collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged messages never arrived, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        for ((to, text), n) in &self.received {
            assert_eq!(*n, 1, "{text} arrived {n} times at {to}");
            assert!(
                self.acked.contains_key(text) || self.failed.contains(text),
                "{text} arrived but was never sent"
            );
        }
        (acked, failed)
    }
}

/// One sender-and-receiver: sends `share` messages to `peer` (at most `per_second`), then
/// keeps receiving until every acknowledged message addressed to it is in and every sender has
/// finished; a message to itself then shows nothing more was queued for it (no duplicate on
/// its way).
async fn member(
    cfg: Config,
    peer: String,
    share: usize,
    per_second: u32,
    senders: usize,
    ledger: Arc<Mutex<Ledger>>,
    sent: Arc<AtomicUsize>,
) {
    let me = cfg.account.clone();
    let mut s = Session::login(cfg);
    loop {
        match s.next_event().await.expect("session") {
            Event::LoginSuccess { .. } => break,
            Event::LoginFailed { code } => panic!("{me}: login failed {code:?}"),
            _ => {}
        }
    }
    let record = |l: &mut Ledger, e: &Event<serde_json::Value>| {
        if let Event::MessageInstant { msg, .. } = e {
            *l.received
                .entry((me.clone(), msg.as_str().unwrap_or_default().to_string()))
                .or_default() += 1;
        }
    };
    let mut pending: HashMap<u32, String> = HashMap::new();
    let mut next = 0;
    let pace = Duration::from_secs_f64(1.0 / per_second.max(1) as f64);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    let mut finished = false;
    loop {
        assert!(
            Instant::now() < deadline,
            "{me}: stuck, {} pending",
            pending.len()
        );
        let due = started + pace * next as u32;
        while next < share && pending.len() < IN_FLIGHT && Instant::now() >= due {
            let text = format!("{me}-m{next}");
            let (p, t) = (peer.clone(), text.clone());
            let req = s
                .with(move |c, now| c.message_instant_send(&p, &t, now))
                .await;
            pending.insert(req.0, text);
            next += 1;
            sent.fetch_add(1, Ordering::Relaxed);
        }
        if next == share && pending.is_empty() && !finished {
            finished = true;
            ledger.lock().unwrap().finished += 1;
        }
        if finished {
            let l = ledger.lock().unwrap();
            let expected = l.acked.values().filter(|to| **to == me).count();
            let got = l.received.keys().filter(|(to, _)| *to == me).count();
            if l.finished == senders && (got >= expected || l.lossy) {
                break;
            }
        }
        let wait = if next < share {
            due.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        } else {
            Duration::from_millis(100)
        };
        let e = match tokio::time::timeout(wait, s.next_event()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("{me}: session ended"),
            Err(_) => continue,
        };
        let mut l = ledger.lock().unwrap();
        match &e {
            Event::Done { req, result } => {
                if let Some(text) = pending.remove(&req.0) {
                    if result.is_ok() {
                        l.acked.insert(text, peer.clone());
                    } else {
                        l.failed.insert(text);
                    }
                }
            }
            Event::Logout { code } => panic!("{me}: logged out {code:?}"),
            _ => record(&mut l, &e),
        }
    }
    // the barrier: what was queued for us before this comes back arrives before it
    let barrier = format!("{me}-barrier");
    loop {
        let (p, t) = (me.clone(), barrier.clone());
        let req = s
            .with(move |c, now| c.message_instant_send(&p, &t, now))
            .await;
        let mut acked = None;
        let mut back = false;
        while acked.is_none() || (acked == Some(true) && !back) {
            let e = tokio::time::timeout(WAIT * 6, s.next_event())
                .await
                .unwrap_or_else(|_| panic!("{me}: barrier did not come back"))
                .expect("session");
            match &e {
                Event::Done { req: r, result } if *r == req => acked = Some(result.is_ok()),
                Event::MessageInstant { msg, .. } if *msg == barrier => back = true,
                _ => record(&mut ledger.lock().unwrap(), &e),
            }
        }
        if back {
            return;
        }
    }
}

/// `pairs` pairs of members on `urls` sending `total` messages at `rate` per second overall,
/// into `ledger`; `during` runs meanwhile (the fault) and gets the count of messages sent so
/// far.
async fn traffic<F, Fut>(
    ledger: Ledger,
    urls: Vec<String>,
    pairs: usize,
    total: usize,
    rate: u32,
    during: F,
) -> Arc<Mutex<Ledger>>
where
    F: FnOnce(Arc<AtomicUsize>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let ledger = Arc::new(Mutex::new(ledger));
    let sent = Arc::new(AtomicUsize::new(0));
    let share = total / (pairs * 2);
    let per_second = (rate / (pairs as u32 * 2)).max(1);
    let mut tasks = vec![];
    for side in 0..2 {
        for i in 0..pairs {
            let (me, peer) = (format!("p{side}x{i}"), format!("p{}x{i}", 1 - side));
            let mut cfg = Config::new(APP, &me, "");
            // each side's home is its own node (when there are several), the others fallbacks
            cfg.servers = urls.clone();
            cfg.servers.rotate_left(side % urls.len());
            cfg.reconnect_count = 1000;
            tasks.push(tokio::spawn(member(
                cfg,
                peer,
                share,
                per_second,
                pairs * 2,
                ledger.clone(),
                sent.clone(),
            )));
        }
    }
    during(sent).await;
    for t in tasks {
        t.await.unwrap();
    }
    ledger
}

async fn until_sent(sent: &AtomicUsize, n: usize) {
    let t0 = Instant::now();
    while sent.load(Ordering::Relaxed) < n {
        assert!(t0.elapsed() < Duration::from_secs(120), "senders stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_survive_connections_cut_every_two_seconds() {
    const TOTAL: usize = 10_000;
    let srv = server_with(|c| c.set_limit("user_messages_per_second=100000").unwrap()).await;
    let proxy = CutProxy::start(srv.addr()).await;
    let cutter = Arc::new(AtomicUsize::new(0));
    let done = cutter.clone();
    let ledger = traffic(
        Ledger::default(),
        vec![proxy.ws_url()],
        10,
        TOTAL,
        1_000,
        |sent| async move {
            // cut every 2 s until the last message went out
            while sent.load(Ordering::Relaxed) < TOTAL {
                tokio::time::sleep(Duration::from_secs(2)).await;
                proxy.cut();
                done.fetch_add(1, Ordering::Relaxed);
            }
        },
    )
    .await;
    let (acked, failed) = ledger.lock().unwrap().check(TOTAL);
    let cuts = cutter.load(Ordering::Relaxed);
    println!("churn: {TOTAL} sent, {acked} acknowledged, {failed} failed, 0 lost, 0 duplicated, {cuts} cuts");
    assert!(
        cuts >= 4,
        "only {cuts} cuts: the stream was too short to prove anything"
    );
}

/// A redis-server of this test's own on `port`, persisting to `dir` with an append-only
/// file synced on every write.
fn durable_redis(port: u16, dir: &std::path::Path) -> std::process::Child {
    let mut child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (scripts/setup installs it)");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server did not start on {port}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_in_the_middle_of_a_stream_loses_no_acknowledged_message() {
    const TOTAL: usize = 4_000;
    let port = free_port();
    let dir = std::env::temp_dir().join(format!(
        "opensig-aof-{}",
        unique_prefix().trim_end_matches(':')
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let redis = Arc::new(Mutex::new(durable_redis(port, &dir)));
    let url = format!("redis://127.0.0.1:{port}/");
    let nodes = nodes_on(&url, &unique_prefix(), "aof", 2, |_| {}).await;
    // pairs span the two nodes
    let urls = vec![nodes[0].ws_url(), nodes[1].ws_url()];
    let (r, aof) = (redis.clone(), dir.clone());
    let ledger = traffic(Ledger::default(), urls, 5, TOTAL, 400, |sent| async move {
        until_sent(&sent, TOTAL * 4 / 10).await;
        {
            let mut r = r.lock().unwrap();
            r.kill().unwrap(); // SIGKILL: only what the append-only file holds survives
            let _ = r.wait();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        *r.lock().unwrap() = durable_redis(port, &aof);
    })
    .await;
    let (acked, failed) = ledger.lock().unwrap().check(TOTAL);
    println!(
        "redis restart: {TOTAL} sent, {acked} acknowledged, {failed} failed, 0 lost, 0 duplicated"
    );
    let mut r = redis.lock().unwrap();
    let _ = r.kill();
    let _ = r.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Redis reached through a link that can be cut. On a Redis Cluster the client dials each
/// primary by the address the cluster gives (no proxy can sit in between), so the test runs on
/// a Redis of its own, killed when this is dropped; a primary dying is the cluster tests below.
struct CutLink {
    own: Option<(std::process::Child, std::path::PathBuf)>,
    /// Redis, directly.
    url: String,
    link: CutProxy,
}

impl CutLink {
    async fn start(tag: &str) -> CutLink {
        let (own, url) = if redis_cluster() {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("opensig-{tag}-{port}"));
            std::fs::create_dir_all(&dir).unwrap();
            let child = durable_redis(port, &dir);
            (Some((child, dir)), format!("redis://127.0.0.1:{port}/"))
        } else {
            (None, redis_url())
        };
        let redis: std::net::SocketAddr = url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        let link = CutProxy::start(redis).await;
        CutLink { own, url, link }
    }

    /// Two nodes sharing a fresh prefix, `<tag>0` through the link, `<tag>1` directly.
    async fn nodes(
        &self,
        tag: &str,
        f: impl Fn(&mut opensig_server::ServerConfig),
    ) -> (opensig_server::Server, opensig_server::Server) {
        let prefix = unique_prefix();
        let mut nodes = vec![];
        for (i, url) in [format!("redis://{}/", self.link.addr), self.url.clone()]
            .into_iter()
            .enumerate()
        {
            let n = server_with(|c| {
                c.redis_url = Some(url);
                c.redis_prefix = prefix.clone();
                c.node_id = Some(format!("{tag}{i}"));
                f(c);
            })
            .await;
            nodes.push(n);
        }
        let b = nodes.pop().unwrap();
        (nodes.pop().unwrap(), b)
    }
}

impl Drop for CutLink {
    fn drop(&mut self) {
        if let Some((child, dir)) = &mut self.own {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&*dir);
        }
    }
}

/// A node cut off from Redis misses what is published meanwhile. Back, it tells its clients
/// (`["notify",["msg",1]]` and `["notify",["rejoin"]]`), and a channel member on the opensig
/// SDK joins again with the numbers it saw and gets the messages it missed from the history,
/// in order and once, before what comes next.
/// Wait for the node's notices that pushes may have been missed: poll the mailbox, then
/// rejoin the channels (the frames before them are skipped).
async fn missed_pushes_told(c: &mut Raw) {
    let mut told = vec![];
    while told.len() < 2 {
        let f = c.recv_flat().await.expect("frames");
        if f[0] == "notify" {
            told.push(f[1].clone());
        }
    }
    assert_eq!(
        told,
        vec![serde_json::json!(["msg", 1]), serde_json::json!(["rejoin"])]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_a_cut_has_its_members_fetch_the_channel_messages_they_missed() {
    let net = CutLink::start("rejoin").await;
    let (a, b) = net.nodes("rejoin", |_| {}).await;
    let link = &net.link;
    let mut amy = User::login(&a.ws_url(), "amy").await;
    amy.join("room").await;
    let mut rob = Raw::connect(&a.ws_url()).await;
    rob.login(APP, "rob", "").await;
    let mut bea = User::login(&b.ws_url(), "bea").await;
    bea.join("room").await;
    let said = |text: &'static str| move |e: &Event<serde_json::Value>| matches!(e, Event::ChannelMessage { msg, .. } if msg == text);
    bea.channel_send("room", "before").await.unwrap();
    amy.expect(said("before")).await;
    link.set_down(true);
    link.cut();
    for t in ["while 1", "while 2"] {
        bea.channel_send("room", t).await.unwrap();
    }
    link.set_down(false);
    // the node tells its clients, once subscribed again
    missed_pushes_told(&mut rob).await;
    let mut got = vec![];
    while got.len() < 2 {
        match amy.next().await {
            Event::ChannelMessage { msg, .. } => got.push(msg.as_str().unwrap().to_string()),
            Event::ChannelJoined { .. } => panic!("a rejoin the node asked for is not announced"),
            _ => {}
        }
    }
    assert_eq!(got, vec!["while 1", "while 2"]);
    bea.channel_send("room", "after").await.unwrap();
    let e = amy
        .expect(|e| matches!(e, Event::ChannelMessage { .. }))
        .await;
    assert!(said("after")(&e), "nothing twice: {e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_loses_no_acknowledged_message_and_serves_again() {
    const TOTAL: usize = 4_000;
    // node 0 reaches Redis through the link that will break
    let net = CutLink::start("cut").await;
    let (a, b) = net
        .nodes("cut", |c| {
            c.set_limit("user_messages_per_second=100000").unwrap();
        })
        .await;
    let link = &net.link;
    let urls = vec![a.ws_url(), b.ws_url()];
    let ledger = traffic(Ledger::default(), urls, 5, TOTAL, 400, |sent| async move {
        until_sent(&sent, TOTAL * 4 / 10).await;
        link.set_down(true);
        link.cut();
        // down for as long as the senders need to send another fifth of the stream
        until_sent(&sent, TOTAL * 6 / 10).await;
        link.set_down(false);
    })
    .await;
    let (acked, failed) = ledger.lock().unwrap().check(TOTAL);
    println!("node cut off from redis: {TOTAL} sent, {acked} acknowledged, {failed} failed, 0 lost, 0 duplicated");
    // node 0 serves again: a login there reaches a user on node 1 and back
    let mut ann = User::login(&a.ws_url(), "ann").await;
    let mut ben = User::login(&b.ws_url(), "ben").await;
    ann.send("ben", "back").await.unwrap();
    ben.expect(|e| matches!(e, Event::MessageInstant { msg, .. } if msg == "back"))
        .await;
    ben.send("ann", "welcome").await.unwrap();
    ann.expect(|e| matches!(e, Event::MessageInstant { msg, .. } if msg == "welcome"))
        .await;
}

/// What the channel churn saw: per receiver, per sender, the sequence numbers in arrival order.
#[derive(Default)]
struct ChannelLedger {
    /// "sender:seq" of acknowledged sends
    acked: HashSet<String>,
    failed: HashSet<String>,
    /// receiver → sender → seqs in arrival order
    arrivals: HashMap<String, HashMap<String, Vec<usize>>>,
    /// senders done with their share
    finished: usize,
    /// (receiver, sender) pairs whose end marker arrived
    ends: HashSet<(String, String)>,
    /// Members that joined (nobody sends before all did)
    joined: usize,
    /// Messages the SDK said were lost (`ChannelMessagesLost`)
    lost: u64,
    /// Why sends failed: error → count
    why: HashMap<String, usize>,
    /// Acknowledged steps may be lost (asynchronous replication): a member whose send is
    /// refused `not_in_channel` (its join was lost with a Redis primary) joins again, as an
    /// app would. (Otherwise the server ends such a membership only by reaping a node taken
    /// for dead, which drops its clients: their SDKs rejoin and recover what they missed.)
    lossy: bool,
    /// Members that found their membership gone and joined again
    rejoined: usize,
    /// receiver → what it saw, in order: "sender:seq" and its other events (for a failure)
    trace: HashMap<String, Vec<String>>,
}

impl ChannelLedger {
    /// Deliveries of acknowledged messages to other members; asserts that each member got
    /// each sender's messages in order, never twice, and only what was sent (a send that
    /// failed may have arrived too: at most once, not counted).
    fn deliveries(&self) -> usize {
        let mut delivered = 0;
        for (receiver, by_sender) in &self.arrivals {
            for (sender, seqs) in by_sender {
                if let Some(i) = seqs.windows(2).position(|w| w[0] >= w[1]) {
                    // what the receiver saw around the second arrival
                    let trace = &self.trace[receiver];
                    let second = format!("{sender}:{}", seqs[i + 1]);
                    let at = trace.iter().rposition(|t| *t == second).unwrap_or(0);
                    panic!(
                        "{receiver} got {sender}'s messages out of order or twice: {:?} …; \
                         what it saw around the second: {:#?}",
                        &seqs[i.saturating_sub(3)..(i + 4).min(seqs.len())],
                        &trace[at.saturating_sub(40)..(at + 10).min(trace.len())]
                    );
                }
                for q in seqs {
                    let text = format!("{sender}:{q}");
                    if self.acked.contains(&text) {
                        delivered += 1;
                    } else {
                        assert!(self.failed.contains(&text), "{text} never sent");
                    }
                }
            }
        }
        delivered
    }
}

/// `n` nodes (`<name>0`, …) on the Redis at `url` under `prefix`, each also set up by `f`,
/// with the per-user message rate out of the way of the load.
async fn nodes_on(
    url: &str,
    prefix: &str,
    name: &str,
    n: usize,
    f: impl Fn(&mut opensig_server::ServerConfig) + Clone + Send + 'static,
) -> Vec<opensig_server::Server> {
    let mut nodes = vec![];
    for i in 0..n {
        let (url, prefix, f) = (url.to_string(), prefix.to_string(), f.clone());
        let id = format!("{name}{i}");
        nodes.push(
            server_with(move |c| {
                c.redis_url = Some(url);
                c.redis_prefix = prefix;
                c.node_id = Some(id);
                c.set_limit("user_messages_per_second=100000").unwrap();
                f(c);
            })
            .await,
        );
    }
    nodes
}

/// One channel member: joins, sends `share` paced messages "me:seq", records arrivals, then
/// sends end markers until every member has heard every other's (all are members again).
/// With a lossy ledger, a send refused `not_in_channel` makes it join again.
async fn channel_member(
    me: String,
    url: String,
    members: usize,
    share: usize,
    per_second: u32,
    ledger: Arc<Mutex<ChannelLedger>>,
    sent: Arc<AtomicUsize>,
) {
    let mut cfg = Config::new(APP, &me, "");
    cfg.servers = vec![url];
    cfg.reconnect_count = 1000;
    let mut s = Session::login(cfg);
    let mut joined = false;
    // a join is in flight after the first; the membership had been lost (counted when back)
    let (mut member, mut rejoining, mut lost_join) = (false, false, false);
    // the latest events other than messages (for a member that gets stuck)
    let mut lately = std::collections::VecDeque::new();
    let mut pending: HashMap<u32, String> = HashMap::new();
    let mut next = 0;
    let pace = Duration::from_secs_f64(1.0 / per_second.max(1) as f64);
    let mut started = None;
    let mut finished = false;
    let mut last_end = Instant::now() - Duration::from_secs(1);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if Instant::now() >= deadline {
            let l = ledger.lock().unwrap();
            let heard: Vec<_> = l.ends.iter().filter(|(r, _)| *r == me).collect();
            panic!(
                "{me}: stuck: joined {joined} ({} of {members} members joined), sent {next} of \
                 {share}, {} pending {:?}, finished {finished} ({} of {members}), ends heard \
                 {heard:?} ({} pairs of {}); member {member}, rejoining {rejoining}; lately \
                 {lately:#?}",
                l.joined,
                pending.len(),
                pending.values().take(5).collect::<Vec<_>>(),
                l.finished,
                l.ends.len(),
                members * (members - 1)
            );
        }
        if let Some(t0) = started {
            let due = t0 + pace * next as u32;
            while next < share && pending.len() < IN_FLIGHT && Instant::now() >= due {
                let text = format!("{me}:{next}");
                let t = text.clone();
                let req = s
                    .with(move |c, now| c.channel_send("churn", &t, false, now))
                    .await;
                pending.insert(req.0, text);
                next += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        let (all_heard, all_finished) = {
            let mut l = ledger.lock().unwrap();
            if started.is_none() && l.joined == members {
                started = Some(Instant::now());
            }
            if next == share && pending.is_empty() && !finished {
                finished = true;
                l.finished += 1;
            }
            (
                l.ends.len() == members * (members - 1),
                l.finished == members,
            )
        };
        if all_heard {
            return;
        }
        // every sender done: say "end" now and then until everyone heard everyone
        if all_finished && last_end.elapsed() > Duration::from_millis(300) {
            last_end = Instant::now();
            s.with(|c, now| c.channel_send("churn", "end", false, now))
                .await;
        }
        let e = match tokio::time::timeout(Duration::from_millis(5), s.next_event()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("{me}: session ended"),
            Err(_) => continue,
        };
        if matches!(e, Event::LoginSuccess { .. }) && !joined {
            joined = true;
            s.with(|c, now| c.channel_join("churn", now)).await;
            continue;
        }
        if !matches!(e, Event::ChannelMessage { .. }) {
            if lately.len() == 20 {
                lately.pop_front();
            }
            lately.push_back(format!("{:?} {e:?}", Instant::now()));
        }
        let mut rejoin = false;
        {
            let mut l = ledger.lock().unwrap();
            let seen = match &e {
                Event::ChannelMessage { msg, .. } => Some(s_(msg)),
                Event::Done { result: Ok(_), .. } => None,
                other => Some(format!("{other:?}")),
            };
            l.trace.entry(me.clone()).or_default().extend(seen);
            match e {
                Event::ChannelJoined { .. } if !member => {
                    (member, rejoining) = (true, false);
                    l.joined += 1;
                }
                Event::ChannelJoined { .. } if rejoining => {
                    rejoining = false;
                    if std::mem::take(&mut lost_join) {
                        l.rejoined += 1;
                    }
                }
                Event::ChannelMessagesLost { count, .. } => l.lost += count,
                // a Redis primary went while the join (or the SDK's rejoin after a reconnect:
                // 604) was being made: again
                Event::ChannelJoinFailed { .. } => {
                    rejoining = false;
                    rejoin = true;
                }
                Event::ChannelLeft { code, .. } if code != 0 => {
                    rejoining = false;
                    rejoin = true;
                }
                Event::Done { req, result } => {
                    // (an end marker's refusal too)
                    let gone =
                        matches!(&result, Err(f) if f.err == ErrorKind::NotInChannel.as_str());
                    if gone && !rejoining && l.lossy {
                        (rejoin, lost_join) = (true, true);
                    }
                    if let Some(text) = pending.remove(&req.0) {
                        match result {
                            Ok(_) => {
                                l.acked.insert(text);
                            }
                            Err(f) => {
                                l.failed.insert(text);
                                *l.why.entry(f.err.clone()).or_default() += 1;
                            }
                        }
                    }
                }
                Event::ChannelMessage { account, msg, .. } => {
                    let (from, text) = (s_(&account), s_(&msg));
                    if from == me {
                        // (own messages come back too; only the others' count)
                    } else if text == "end" {
                        l.ends.insert((me.clone(), from));
                    } else if let Some((sender, seq)) = text.split_once(':') {
                        l.arrivals
                            .entry(me.clone())
                            .or_default()
                            .entry(sender.to_string())
                            .or_default()
                            .push(seq.parse().unwrap());
                    }
                }
                Event::Logout { code } => panic!("{me}: logged out {code:?}"),
                _ => {}
            }
        }
        if rejoin {
            rejoining = true;
            s.with(|c, now| c.channel_join("churn", now)).await;
        }
    }
}

fn s_(v: &serde_json::Value) -> String {
    v.as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_channel_messages_through_cuts_arrive_in_order_and_never_twice() {
    const MEMBERS: usize = 10;
    const TOTAL: usize = 10_000;
    let srv = server_with(|c| {
        c.set_limit("user_messages_per_second=100000").unwrap();
        c.set_limit("channel_messages_per_second=0").unwrap();
        c.set_limit("channel_history_messages=1000").unwrap();
    })
    .await;
    let proxy = CutProxy::start(srv.addr()).await;
    let ledger = Arc::new(Mutex::new(ChannelLedger::default()));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = vec![];
    for i in 0..MEMBERS {
        tasks.push(tokio::spawn(channel_member(
            format!("c{i}"),
            proxy.ws_url(),
            MEMBERS,
            TOTAL / MEMBERS,
            30,
            ledger.clone(),
            sent.clone(),
        )));
    }
    let mut cuts = 0;
    while sent.load(Ordering::Relaxed) < TOTAL {
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxy.cut();
        cuts += 1;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let l = ledger.lock().unwrap();
    assert_eq!(l.acked.len() + l.failed.len(), TOTAL);
    let delivered = l.deliveries();
    let expected = l.acked.len() * (MEMBERS - 1);
    assert!(cuts >= 4, "only {cuts} cuts");
    // what a member missed while reconnecting comes from the channel's history
    println!(
        "channel churn: {TOTAL} sent, {} acknowledged, {} failed, {delivered} of {expected} \
         deliveries to other members, {} reported lost, 0 duplicated, 0 out of order, \
         {cuts} cuts",
        l.acked.len(),
        l.failed.len(),
        l.lost
    );
    assert_eq!(l.lost, 0, "the history holds what was missed");
    assert_eq!(
        delivered, expected,
        "every acknowledged message reached every other member"
    );
}

/// What a primary's death did to the two streams.
struct FailoverReport {
    /// p2p: (acknowledged, failed, acknowledged but lost, duplicated).
    p2p: (usize, usize, usize, usize),
    /// channel: (acknowledged, deliveries of acknowledged messages to other members, those
    /// expected, reported lost by the SDK).
    channel: (usize, usize, usize, u64),
    /// Members whose acknowledged join was lost (sends refused `not_in_channel`), who joined
    /// again.
    rejoined: usize,
    /// mail to offline users (it waits in Redis, the only copy): (acknowledged, failed,
    /// acknowledged but not there when they came online).
    stored: (usize, usize, usize),
    /// Requests the nodes sent again because the cluster said they had not run, by what
    /// said so (`opensig_redis_sent_again_total`): "moved", "ask", "pause".
    sent_again: HashMap<String, u64>,
}

/// Sends `total` messages to five users who are offline (at most `per_second`, eight in
/// flight); returns the texts acknowledged and those that failed.
async fn mail_offline(
    url: String,
    total: usize,
    per_second: u32,
) -> (HashSet<String>, HashSet<String>) {
    let mut cfg = Config::new(APP, "mailer", "");
    cfg.servers = vec![url];
    cfg.reconnect_count = 1000;
    let mut s = Session::login(cfg);
    let (mut acked, mut failed) = (HashSet::new(), HashSet::new());
    let mut pending: HashMap<u32, String> = HashMap::new();
    let mut logged_in = false;
    let (mut next, pace, t0) = (
        0,
        Duration::from_secs_f64(1.0 / f64::from(per_second)),
        Instant::now(),
    );
    while next < total || !pending.is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(180), "mailer stuck");
        while logged_in
            && next < total
            && pending.len() < IN_FLIGHT
            && Instant::now() >= t0 + pace * next as u32
        {
            let (to, text) = (format!("off{}", next % 5), format!("stored-{next}"));
            let t = text.clone();
            let req = s
                .with(move |c, now| c.message_instant_send(&to, &t, now))
                .await;
            pending.insert(req.0, text);
            next += 1;
        }
        match tokio::time::timeout(Duration::from_millis(2), s.next_event()).await {
            Ok(Some(Event::LoginSuccess { .. })) => logged_in = true,
            Ok(Some(Event::Done { req, result })) => {
                if let Some(text) = pending.remove(&req.0) {
                    if result.is_ok() {
                        acked.insert(text);
                    } else {
                        failed.insert(text);
                    }
                }
            }
            Ok(None) => panic!("mailer: session ended"),
            _ => {}
        }
    }
    (acked, failed)
}

/// Logs `account` in and collects what was stored for it, up to a message to itself.
async fn collect_stored(url: &str, account: &str) -> HashSet<String> {
    let mut u = User::login(url, account).await;
    u.send(account, "barrier").await.unwrap();
    let mut got = HashSet::new();
    loop {
        match u.next().await {
            Event::MessageInstant { msg, .. } if msg == "barrier" => return got,
            Event::MessageInstant { msg, .. } => {
                assert!(got.insert(s_(&msg)), "{msg} arrived twice");
            }
            _ => {}
        }
    }
}

/// Two nodes on a Redis Cluster of their own; p2p messages between users of both nodes and
/// channel messages among members on both stream while the primary that holds the app's keys
/// is SIGKILLed 0.7 s into its replica falling behind (frozen); the replica takes over, and
/// the killed node comes back as a replica. With `wait_replicas`, the nodes acknowledge a step
/// only once a replica holds it.
/// The failover tests run one at a time (each runs six redis-servers, two under load).
static FAILOVERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// For a test that breaks a Redis Cluster: a private one (such tests run one at a time: the
/// guard), and a key prefix of its own. `None` unless the tests run on a cluster.
async fn cluster_to_break() -> Option<(
    tokio::sync::MutexGuard<'static, ()>,
    Arc<RedisCluster>,
    String,
)> {
    if !redis_cluster() {
        println!("runs with OPENSIG_TEST_STORE=redis-cluster");
        return None;
    }
    let one = FAILOVERS.lock().await;
    Some((one, Arc::new(RedisCluster::start()), unique_prefix()))
}

async fn primary_killed_under_load(wait_replicas: u32, mode: &str) -> Option<FailoverReport> {
    let lag = Duration::from_millis(700);
    let mode = format!("primary killed ({mode})");
    under_load(wait_replicas, wait_replicas == 0, &mode, move |c, tag| {
        let (old, new) = c.fail_over(tag, lag);
        format!("primary on {old} killed; {new} serves the app's slot now")
    })
    .await
}

/// Two nodes on a Redis Cluster of their own, p2p messages, channel messages and offline mail
/// streaming as above while `disrupt` breaks or changes the cluster under the app's slot (it
/// gets the cluster and the app's hash tag, and says what it did). `lossy`: acknowledged
/// messages may be lost (the figures say how many).
async fn under_load(
    wait_replicas: u32,
    lossy: bool,
    mode: &str,
    disrupt: impl FnOnce(&RedisCluster, &str) -> String + Send + 'static,
) -> Option<FailoverReport> {
    let (_one, cluster, prefix) = cluster_to_break().await?;
    const TOTAL: usize = 3_000;
    const MEMBERS: usize = 6;
    const CHANNEL_TOTAL: usize = 1_200;
    const STORED: usize = 1_000;
    let nodes = nodes_on(&cluster.url(), &prefix, "fo", 2, move |c| {
        c.redis_wait_replicas = wait_replicas;
        c.set_limit("channel_messages_per_second=0").unwrap();
        c.set_limit("channel_history_messages=1000").unwrap();
        c.set_limit("mailbox_max_messages=1000").unwrap();
        // (the mailer's allowance counts in each recipient's unit, a share of it each)
        let allowance = format!("offline_mail_per_sender_per_hour={}", 1000 * partitions());
        c.set_limit(&allowance).unwrap();
    })
    .await;
    let urls: Vec<String> = nodes.iter().map(|n| n.ws_url()).collect();
    let mailer = tokio::spawn(mail_offline(urls[0].clone(), STORED, 100));
    // the channel's members, half on each node
    let cledger = Arc::new(Mutex::new(ChannelLedger {
        lossy,
        ..ChannelLedger::default()
    }));
    let csent = Arc::new(AtomicUsize::new(0));
    let mut members = vec![];
    for i in 0..MEMBERS {
        members.push(tokio::spawn(channel_member(
            format!("c{i}"),
            urls[i % 2].clone(),
            MEMBERS,
            CHANNEL_TOTAL / MEMBERS,
            20,
            cledger.clone(),
            csent.clone(),
        )));
    }
    let ledger = Ledger {
        lossy,
        ..Ledger::default()
    };
    // every key of the app hashes to the slot of its tag (see the store's keys.rs)
    let tag = format!("{{{prefix}{APP}}}");
    let c2 = cluster.clone();
    let ledger = traffic(ledger, urls, 5, TOTAL, 300, |sent| async move {
        until_sent(&sent, TOTAL * 3 / 10).await;
        let done = tokio::task::spawn_blocking(move || disrupt(&c2, &tag))
            .await
            .unwrap();
        println!("{done}");
    })
    .await;
    for m in members {
        m.await.unwrap();
    }
    let (acked, failed) = mailer.await.unwrap();
    let mut there = HashSet::new();
    for i in 0..5 {
        there.extend(collect_stored(&nodes[1].ws_url(), &format!("off{i}")).await);
    }
    assert!(there
        .iter()
        .all(|t| acked.contains(t) || failed.contains(t)));
    let stored = (acked.len(), failed.len(), acked.difference(&there).count());
    let p2p = ledger.lock().unwrap().tally();
    assert_eq!(p2p.0 + p2p.1, TOTAL, "every send got an answer");
    assert_eq!(p2p.3, 0, "no message arrived twice");
    let l = cledger.lock().unwrap();
    assert_eq!(l.acked.len() + l.failed.len(), CHANNEL_TOTAL);
    let delivered = l.deliveries();
    if delivered < l.acked.len() * (MEMBERS - 1) {
        // which deliveries are missing, and what the first few members saw around them
        let mut told = 0;
        for (receiver, by) in &l.arrivals {
            for (sender, seqs) in by {
                let got: HashSet<usize> = seqs.iter().copied().collect();
                let missing: Vec<usize> = (0..CHANNEL_TOTAL / MEMBERS)
                    .filter(|q| !got.contains(q) && l.acked.contains(&format!("{sender}:{q}")))
                    .collect();
                if missing.is_empty() || told == 6 {
                    continue;
                }
                told += 1;
                let trace = &l.trace[receiver];
                let before = format!("{sender}:{}", missing[0].saturating_sub(1));
                let at = trace.iter().position(|t| *t == before).unwrap_or(0);
                println!(
                    "{receiver} missed {sender}'s {missing:?}; it saw: {:?}",
                    &trace[at.saturating_sub(5)..(at + 30).min(trace.len())]
                );
            }
        }
    }
    let mut sent_again: HashMap<String, u64> = HashMap::new();
    for n in &nodes {
        for line in n.store_metrics().lines() {
            let Some(rest) = line.strip_prefix("opensig_redis_sent_again_total{after=\"") else {
                continue;
            };
            let (after, count) = rest.split_once("\"} ").unwrap();
            *sent_again.entry(after.to_string()).or_default() += count.parse::<u64>().unwrap();
        }
    }
    println!("requests sent again: {sent_again:?}");
    let r = FailoverReport {
        sent_again,
        stored,
        p2p,
        channel: (
            l.acked.len(),
            delivered,
            l.acked.len() * (MEMBERS - 1),
            l.lost,
        ),
        rejoined: l.rejoined,
    };
    print_failover(mode, &r);
    println!("channel sends failed with: {:?}", l.why);
    Some(r)
}

fn print_failover(mode: &str, r: &FailoverReport) {
    let (acked, failed, lost, twice) = r.p2p;
    let (cacked, delivered, expected, reported) = r.channel;
    let (sacked, sfailed, slost) = r.stored;
    println!(
        "{mode}: p2p {} sent, {acked} acknowledged, {failed} failed, {lost} \
         lost, {twice} duplicated; channel {cacked} acknowledged, {delivered} of {expected} \
         deliveries, {reported} reported lost by the SDK, 0 duplicated, 0 out of order; \
         offline mail {} sent, {sacked} acknowledged, {sfailed} failed, {slost} lost, \
         0 duplicated; {} channel members found their join lost and joined again",
        acked + failed,
        sacked + sfailed,
        r.rejoined
    );
}

/// Redis's asynchronous replication as it is: the replica may lack the last writes its
/// primary acknowledged (the figures say how many went); nothing arrives twice or out of order
/// and both streams run to their end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_primary_killed_under_load_asynchronous_replication() {
    let Some(r) = primary_killed_under_load(0, "asynchronous replication").await else {
        return;
    };
    // what makes the other test's zeros mean something: here the lag loses stored mail
    assert!(
        r.stored.2 > 0,
        "the replica's lag lost nothing: the scenario proves nothing"
    );
}

/// `--redis-wait-replicas 1`: a step is acknowledged only once a replica holds it, so an
/// acknowledged message survives the loss of its primary — none lost, on either stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_primary_killed_under_load_loses_nothing_acknowledged_with_wait() {
    let Some(r) = primary_killed_under_load(1, "WAIT for 1 replica").await else {
        return;
    };
    assert_eq!(r.p2p.2, 0, "acknowledged p2p messages lost");
    assert_eq!(r.stored.2, 0, "acknowledged offline mail lost");
    assert_eq!(r.channel.3, 0, "the history holds what was missed");
    assert_eq!(
        r.channel.1, r.channel.2,
        "every acknowledged channel message reached every other member"
    );
}

/// An operator moves the app's slot to another primary (a resharding, as `redis-cli --cluster
/// reshard` does it: a few keys at a time, under `MIGRATING`/`IMPORTING`) while every stream
/// runs: requests meet `ASK` (keys already moved), `TRYAGAIN` (a step's keys on both sides) and
/// at last `MOVED`, and the nodes' topics move with the slot. Nothing is lost, nothing arrives
/// twice or out of order, and no send fails: a request is sent again only when it surely did
/// not run, and these did not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_to_another_primary_under_load_loses_nothing_and_fails_nothing() {
    moved_under_load("slot moved", |c, tag| {
        let (from, to, keys) = c.migrate(tag, 10);
        format!("the app's slot moved from {from} to {to}, {keys} keys")
    })
    .await;
}

/// The same to a primary the operator added to the cluster under load (scaling out): the
/// nodes' connections were made before it existed and know nothing of it until it serves a
/// slot, so the steps that meet `ASK` go to it on a connection of their own — at once, not
/// after the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_to_a_primary_new_to_the_cluster_loses_nothing_and_fails_nothing() {
    moved_under_load("slot moved to a new primary", |c, tag| {
        let new = c.add_primary();
        let (from, to, keys) = c.migrate_to(tag, 10, new);
        format!("the app's slot moved from {from} to {to}, added to the cluster, {keys} keys")
    })
    .await;
}

/// A slot whose keys have all moved while the old primary still owns it (a migration of a
/// large app's slot lasts as long as its keys take to move): the old primary answers `ASK`
/// to everything, to the pipelines the store sends too (a channel's member count and list:
/// `ZCARD` and `ZREVRANGE`). Each command of a pipeline goes its own way then, after
/// `ASKING`, at once — not retried until the migration ends, which failed it after 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_meets_ask_for_as_long_as_a_migration_lasts() {
    let Some((_one, cluster, prefix)) = cluster_to_break().await else {
        return;
    };
    let nodes = nodes_on(&cluster.url(), &prefix, "pa", 1, |_| {}).await;
    let mut amy = User::login(&nodes[0].ws_url(), "amy").await;
    let mut bob = User::login(&nodes[0].ws_url(), "bob").await;
    amy.join("room").await;
    bob.join("room").await;
    let (c, tag) = (cluster.clone(), format!("{{{prefix}{APP}}}"));
    let from = cluster.primary_of(cluster.ports[0], &tag);
    let to = cluster.another_primary(from.expect("the app's primary"));
    let t = tag.clone();
    let m = tokio::task::spawn_blocking(move || c.keys_moved(&t, 100, to))
        .await
        .unwrap();
    println!(
        "every key of the app's slot on {} ({}), the slot still {}'s",
        m.to, m.keys, m.from
    );
    let asked = cluster.stat(m.to, "commandstats", "cmdstat_asking:calls=");
    let num = amy
        .invoke("channel_query_num", serde_json::json!({"name": "room"}))
        .await;
    let list = amy
        .invoke(
            "channel_query_userlist",
            serde_json::json!({"name": "room"}),
        )
        .await;
    assert_eq!(
        num.as_ref().map(|r| r["num"].clone()),
        Ok(2.into()),
        "{num:?}"
    );
    let list = list.expect("the member list");
    assert_eq!(list["num"], 2, "{list}");
    assert!(
        cluster.stat(m.to, "commandstats", "cmdstat_asking:calls=") > asked,
        "the queries ran on the new primary"
    );
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.slot_given(&tag, &m))
        .await
        .unwrap();
}

/// What the store holds is counted on every primary, a primary added since the node read the
/// cluster too (its `SCAN` goes there on a connection of its own, as the steps that met
/// `ASK` did): the leak checks and the console's figures do not fail, or miss its keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_added_to_the_cluster_is_counted_at_once() {
    let Some((_one, cluster, prefix)) = cluster_to_break().await else {
        return;
    };
    let nodes = nodes_on(&cluster.url(), &prefix, "ac", 1, |_| {}).await;
    let mut amy = User::login(&nodes[0].ws_url(), "amy").await;
    amy.join("room").await;
    let before = nodes[0].footprint().await.expect("a footprint");
    let (c, tag) = (cluster.clone(), format!("{{{prefix}{APP}}}"));
    let m = tokio::task::spawn_blocking(move || {
        let new = c.add_primary();
        let m = c.keys_moved(&tag, 100, new);
        (m, c, tag)
    })
    .await
    .unwrap();
    // a step that meets ASK, then the slot is the new primary's
    let r = amy
        .invoke("channel_query_num", serde_json::json!({"name": "room"}))
        .await;
    assert_eq!(r.map(|r| r["num"].clone()), Ok(1.into()));
    let (m, c, tag) = m;
    let to = m.to;
    tokio::task::spawn_blocking(move || c.slot_given(&tag, &m))
        .await
        .unwrap();
    let after = nodes[0].footprint().await.expect("a footprint");
    assert_eq!(
        (after.sessions, after.channels, after.members),
        (before.sessions, before.channels, before.members),
        "the app's keys counted on {to}"
    );
    assert_eq!(after.members, 1);
}

/// The app's slot moved by `move_slot` under load ([`under_load`]), and what that must show:
/// no send failed, nothing lost or twice, every channel delivery made; and the nodes' own
/// doing (the `redis` crate's retries are off): the step that met ASK ran on the new
/// primary, and the last ones met MOVED.
async fn moved_under_load(
    mode: &str,
    move_slot: impl FnOnce(&RedisCluster, &str) -> String + Send + 'static,
) {
    let Some(r) = under_load(0, false, mode, move_slot).await else {
        return;
    };
    assert_eq!(r.p2p.1, 0, "p2p sends failed");
    assert_eq!(r.p2p.2, 0, "acknowledged p2p messages lost");
    assert_eq!(r.p2p.3, 0, "p2p messages arrived twice");
    assert_eq!(
        (r.stored.1, r.stored.2),
        (0, 0),
        "offline mail failed or lost"
    );
    assert_eq!(r.channel.3, 0, "channel messages reported lost");
    assert_eq!(r.channel.1, r.channel.2, "every channel delivery made");
    assert_eq!(r.channel.0, 1_200, "every channel send acknowledged");
    assert!(r.sent_again["ask"] >= 1, "{:?}", r.sent_again);
    assert!(r.sent_again["moved"] >= 1, "{:?}", r.sent_again);
}

/// An operator's failover (`CLUSTER FAILOVER`, as for maintenance) moves an app's slot to
/// another primary, which unsubscribes the nodes from the app's topics there: they subscribe
/// again, pushes between the nodes go on flowing, and the clients of that app — no one else —
/// are asked to poll their mailboxes and rejoin their channels for what came meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_handed_over_keeps_the_pushes_flowing() {
    let Some((_one, cluster, prefix)) = cluster_to_break().await else {
        return;
    };
    let nodes = nodes_on(&cluster.url(), &prefix, "ho", 2, |_| {}).await;
    // an app on another primary (every key of an app carries its tag)
    let tag = |app: &str| format!("{{{prefix}{app}}}");
    let via = cluster.ports[0];
    let moving = cluster.primary_of(via, &tag(APP)).expect("APP's primary");
    let other = (0..)
        .map(|i| format!("app{i}"))
        .find(|a| {
            cluster
                .primary_of(via, &tag(a))
                .is_some_and(|p| p != moving)
        })
        .unwrap();
    let mut amy = User::login(&nodes[0].ws_url(), "amy").await;
    let mut bob = User::login(&nodes[1].ws_url(), "bob").await;
    let mut ann = Raw::connect(&nodes[0].ws_url()).await;
    ann.login(APP, "ann", "").await;
    let mut oli = Raw::connect(&nodes[0].ws_url()).await;
    oli.login(&other, "oli", "").await;
    let got = |text: &'static str| move |e: &Event<serde_json::Value>| matches!(e, Event::MessageInstant { msg, .. } if msg == text);
    bob.send("amy", "before").await.unwrap();
    amy.expect(got("before")).await;
    let (c2, t) = (cluster.clone(), tag(APP));
    let (old, new) = tokio::task::spawn_blocking(move || c2.hand_over(&t))
        .await
        .unwrap();
    println!("{old} handed the app's slot over to {new}");
    for text in ["after 1", "after 2"] {
        bob.send("amy", text).await.unwrap();
        amy.expect(got(text)).await;
    }
    missed_pushes_told(&mut ann).await;
    // told in one go with ann's, had it been: it would come before this answer
    let (err, _) = oli
        .call(
            "user_getmsg",
            1,
            serde_json::json!({"ver_clear": 0, "max": 30}),
        )
        .await;
    assert_eq!(err, "");
    let notices: Vec<_> = oli.pending.iter().filter(|f| f[0] == "notify").collect();
    assert!(notices.is_empty(), "{notices:?}");
}

/// A primary that died and that no replica replaces (its replica frozen: its sockets stay
/// open and never answer) holds the steps of its own apps only: the clients of an app on
/// another primary keep logging in and exchanging messages while the dead primary's app
/// keeps asking for it — with `--redis-wait-replicas 1` too (each step waits for the replica
/// of its own primary, not of every one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primary_holds_only_the_steps_of_its_own_apps() {
    let Some((_one, cluster, prefix)) = cluster_to_break().await else {
        return;
    };
    let nodes = nodes_on(&cluster.url(), &prefix, "dp", 1, |c| {
        c.redis_wait_replicas = 1;
    })
    .await;
    let url = nodes[0].ws_url();
    // the dead app's primary (of its accounts' unit) holds neither the nodes' registry nor
    // the live app's accounts
    let tag = |app: &str, account: &str| format!("{{{prefix}{}}}", account_unit(app, account));
    let via = cluster.ports[0];
    let registry = cluster.registry_primary(&prefix);
    let primary = |app: &str, account: &str| cluster.primary_of(via, &tag(app, account)).unwrap();
    let apps = (0..).map(|i| format!("app{i}"));
    let dead_app = (apps.clone())
        .find(|a| primary(a, "xena") != registry && primary(a, "yann") == primary(a, "xena"))
        .unwrap();
    let dead = primary(&dead_app, "xena");
    let live_app = (apps.clone())
        .find(|a| {
            ["oli", "pia", "quinn"]
                .iter()
                .all(|x| primary(a, x) != dead)
        })
        .unwrap();
    let dead_replica = cluster.replica_of(dead).expect("the primary's replica");

    let mut xena = Raw::connect(&url).await;
    xena.login(&dead_app, "xena", "").await;
    let mut oli = Raw::connect(&url).await;
    oli.login(&live_app, "oli", "").await;
    let mut pia = Raw::connect(&url).await;
    pia.login(&live_app, "pia", "").await;
    assert_eq!(xena.send_msg(1, "yann", "x0").await, "");

    // the replica frozen: a login is stored but no replica confirms it (`WAIT`), and is
    // refused — with its refusal alone, no welcome before it
    let frozen = cluster.freeze(&[dead_replica]);
    let mut yann = Raw::connect(&url).await;
    let r = yann.login(&dead_app, "yann", "").await;
    assert_eq!(r[1][0], "server_unavailable", "{r}");
    assert_eq!(
        yann.recv().await,
        None,
        "after the refusal, the connection closes"
    );
    // the primary killed: no failover, the slots stay dead
    cluster.kill(dead);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let asking = {
        let (stop, refused) = (stop.clone(), refused.clone());
        tokio::spawn(async move {
            // the dead app's steps keep going to its primary
            for id in 2.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if !xena
                    .send_msg(id, "yann", &format!("x{id}"))
                    .await
                    .is_empty()
                {
                    refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    // once the client has found the primary dead (its steps time out, it looks for the
    // slot's new owner)
    wait_for("the dead app's step refused", || {
        let refused = refused.clone();
        async move { refused.load(Ordering::SeqCst) >= 2 }
    })
    .await;
    for i in 1..=10u64 {
        let text = format!("p{i}");
        let err = oli.send_msg(i, "pia", &text).await;
        assert_eq!(err, "", "message {i} of the live app refused");
        pia.until_text(&text).await;
    }
    let mut quinn = Raw::connect(&url).await;
    let r = quinn.login(&live_app, "quinn", "").await;
    assert_eq!(r[1][0], "", "{r}");
    stop.store(true, Ordering::SeqCst);
    drop(frozen);
    asking.await.unwrap();
    let refused = refused.load(Ordering::SeqCst);
    println!("the dead primary's app: {refused} step(s) refused while it was dead");
}

/// Where the nodes' registry is, for a test that puts it out of reach: a private Redis
/// Cluster (the registry's primary dies and its replica takes over late) or a private
/// redis-server (restarted late; its append-only file keeps what it held).
enum Registry {
    Cluster {
        _one: tokio::sync::MutexGuard<'static, ()>,
        cluster: Arc<RedisCluster>,
    },
    One {
        redis: Option<std::process::Child>,
        port: u16,
        dir: std::path::PathBuf,
    },
}

/// The registry out of reach, until `Registry::back`.
enum Outage {
    Cluster {
        old: u16,
        replica: u16,
        frozen: Frozen,
    },
    One,
}

impl Registry {
    /// `(redis URL, key prefix)` for the nodes.
    async fn start() -> Option<(Registry, String, String)> {
        if let Some((one, cluster, prefix)) = cluster_to_break().await {
            let url = cluster.url();
            return Some((Registry::Cluster { _one: one, cluster }, url, prefix));
        }
        if !redis_store() {
            println!("runs with OPENSIG_TEST_STORE=redis or redis-cluster");
            return None;
        }
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "opensig-registry-{}",
            unique_prefix().trim_end_matches(':')
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let redis = Some(durable_redis(port, &dir));
        let url = format!("redis://127.0.0.1:{port}/");
        Some((Registry::One { redis, port, dir }, url, unique_prefix()))
    }

    /// An app whose keys are not on the registry's primary (on one Redis, any).
    fn app_apart(&self, prefix: &str) -> String {
        let Registry::Cluster { cluster, .. } = self else {
            return "app0".into();
        };
        let registry = cluster.registry_primary(prefix);
        // (the unit of cat, who logs in while the registry is out of reach)
        let primary = |app: &str| {
            let unit = account_unit(app, "cat");
            cluster.primary_of(cluster.ports[0], &format!("{{{prefix}{unit}}}"))
        };
        (0..)
            .map(|i| format!("app{i}"))
            .find(|a| primary(a) != Some(registry))
            .unwrap()
    }

    /// The registry's Redis dies (on a cluster: its primary, and its replica is kept from
    /// taking over).
    fn down(&mut self, prefix: &str) -> Outage {
        match self {
            Registry::Cluster { cluster, .. } => {
                let key = format!("{{{prefix}~}}");
                let (old, replica, frozen) = cluster.kill_primary_of(&key);
                Outage::Cluster {
                    old,
                    replica,
                    frozen,
                }
            }
            Registry::One { redis, .. } => {
                let mut r = redis.take().unwrap();
                let _ = r.kill();
                let _ = r.wait();
                Outage::One
            }
        }
    }

    /// The registry serves again (on a cluster: the replica takes over, and the dead node
    /// comes back as its replica; one Redis restarts).
    fn back(&mut self, prefix: &str, outage: Outage) {
        match (self, outage) {
            (
                Registry::Cluster { cluster, .. },
                Outage::Cluster {
                    old,
                    replica,
                    frozen,
                },
            ) => {
                drop(frozen);
                cluster.replaced(&format!("{{{prefix}~}}"), old, replica);
            }
            (Registry::One { redis, port, dir }, Outage::One) => {
                *redis = Some(durable_redis(*port, dir));
            }
            _ => unreachable!(),
        }
    }

    /// Whether `node` is registered (as live) under `prefix`.
    fn registered(&self, prefix: &str, node: &str) -> bool {
        let key = format!("{prefix}node {{{prefix}~}} {node}");
        let port = match self {
            Registry::Cluster { cluster, .. } => cluster.registry_primary(prefix),
            Registry::One { port, .. } => *port,
        };
        redis_cli(port, &["EXISTS", &key]).trim() == "1"
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Registry::One { redis: Some(r), .. } = self {
            let _ = r.kill();
            let _ = r.wait();
        }
    }
}

/// The nodes' registry out of every node's reach for longer than a node's registration lasts
/// (on a cluster: its primary dead, and its replica kept from taking over for 7 s; on one
/// Redis: Redis restarted after 7 s) is no node's death: afterwards no node reaps another
/// and none drops its clients, while a node that did die meanwhile is reaped. On a cluster
/// the other primaries serve on meanwhile: a login that replaces a session on another node
/// kicks it there (a node that cannot be checked is taken for alive; the kick goes over the
/// app's topic, not the registry's slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_out_of_reach_past_a_registration_drops_no_client() {
    let Some((mut registry, url, prefix)) = Registry::start().await else {
        return;
    };
    let cluster = matches!(registry, Registry::Cluster { .. });
    let mut nodes = nodes_on(&url, &prefix, "ro", 3, |_| {}).await;
    let app = registry.app_apart(&prefix);
    let raw = |node: &opensig_server::Server, account: &'static str| {
        let (url, app) = (node.ws_url(), app.clone());
        async move {
            let mut r = Raw::connect(&url).await;
            let reply = r.login(&app, account, "").await;
            assert_eq!(reply[1][0], "", "{account}: {reply}");
            r
        }
    };
    let user = |node: &opensig_server::Server, account: &str| {
        let mut c = config(&node.ws_url(), account, "_no_need_token");
        c.app_id = app.clone();
        User::login_with(c)
    };
    let mut ann = raw(&nodes[0], "ann").await;
    let mut ben = raw(&nodes[1], "ben").await;
    let mut cat = raw(&nodes[0], "cat").await;
    // node 1 serves cat's unit before the registry goes (a unit new to a node is listed in
    // the registry first)
    let pal: &'static str = names_in_unit_of("cat", "pal", 1).remove(0).leak();
    let _pal = raw(&nodes[1], pal).await;
    let mut olga = user(&nodes[1], "olga").await;
    olga.join("room").await;
    let mut dan = user(&nodes[2], "dan").await;
    dan.join("room").await;
    olga.expect(|e| matches!(e, Event::ChannelUserJoined { account, .. } if account == "dan"))
        .await;
    // a node dies as the registry goes out of reach: it is reaped afterwards
    nodes.remove(2).kill().await;
    let outage = registry.down(&prefix);
    let since = tokio::time::Instant::now();
    if cluster {
        // the app's primary serves on: cat logs in on node 1, and is kicked on node 0
        let mut cat2 = Raw::connect(&nodes[1].ws_url()).await;
        let r = cat2.login(&app, "cat", "").await;
        assert_eq!(r[1][0], "", "{r}");
        // (after the nudges a lost subscription connection sends: poll, rejoin)
        loop {
            let f = cat.recv_flat().await.expect("cat on node 0 kicked");
            if f == serde_json::json!(["kick", ""]) {
                break;
            }
            assert_eq!(f[0], "notify", "{f}");
        }
    }
    // out of reach past a registration's lifetime (5 s): every node's lapses
    tokio::time::sleep_until(since + Duration::from_secs(7)).await;
    tokio::task::block_in_place(|| registry.back(&prefix, outage));
    println!("the registry out of reach for {:?}", since.elapsed());
    // a node back decides right after it registers again whether to drop its clients
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(registry.registered(&prefix, "ro0") && registry.registered(&prefix, "ro1")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the nodes did not register again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // the dead node is reaped (its member leaves), after the others had their time
    olga.expect_within(
        Duration::from_secs(30),
        |e| matches!(e, Event::ChannelUserLeft { account, .. } if account == "dan"),
    )
    .await;
    assert!(ann.alive().await, "ann's connection was dropped");
    assert!(ben.alive().await, "ben's connection was dropped");
    assert_eq!(ann.send_msg(1, "ben", "still here").await, "");
    ben.until_text("still here").await;
    drop(dan);
}

/// A node whose registration lapsed while no node reaped it checks each of its sessions
/// against Redis: one that another login took over meanwhile (a node that found this one
/// dead did not kick it) is kicked, one Redis no longer holds is dropped (its client logs in
/// again), the others stay.
#[tokio::test]
async fn a_node_whose_registration_lapsed_unreaped_checks_each_session() {
    if !redis_store() {
        println!("runs with OPENSIG_TEST_STORE=redis or redis-cluster");
        return;
    }
    let prefix = unique_prefix();
    let node = server_with(|c| {
        c.redis_prefix = prefix.clone();
        c.node_id = Some("solo".into());
    })
    .await;
    let mut clients = vec![];
    for account in ["ann", "cat", "dave"] {
        let mut r = Raw::connect(&node.ws_url()).await;
        assert_eq!(r.login(APP, account, "").await[1][0], "");
        clients.push(r);
    }
    let [mut ann, mut cat, mut dave] = <[Raw; 3]>::try_from(clients).ok().unwrap();
    // what a node that took this one for dead may have done meanwhile: cat's session taken
    // over by a login elsewhere, dave's ended
    let session = |account: &str| {
        let unit = account_unit(APP, account);
        format!("{prefix}s {{{prefix}{unit}}} {account}")
    };
    redis_cli_cmd(&["SET", &session("cat"), "elsewhere 7", "PX", "60000"]);
    assert_eq!(redis_cli_cmd(&["DEL", &session("dave")]), "1");
    // and this node's registration lapses
    let registration = format!("{prefix}node {{{prefix}~}} solo");
    assert_eq!(redis_cli_cmd(&["DEL", &registration]), "1");
    loop {
        let f = cat.recv_flat().await.expect("cat kicked");
        if f == serde_json::json!(["kick", ""]) {
            break;
        }
    }
    while let Some(f) = dave.recv_flat().await {
        assert_ne!(f[0], "kick", "dave is dropped, not kicked");
    }
    assert!(!dave.alive().await, "dave's connection is closed");
    assert!(ann.alive().await, "ann's session stands");
    assert_eq!(redis_cli_cmd(&["EXISTS", &registration]), "1");
}
