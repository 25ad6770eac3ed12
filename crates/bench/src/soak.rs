//! `opensig-bench soak`: a bounded run with churn at moderate load against a real
//! opensig-server process. Users log in, join and leave channels, send channel and p2p
//! messages, set attributes, invite each other (the invitee accepts or refuses, accepted calls
//! are ended), log out, and start again — through the same client core as the SDK. The server's
//! RSS and open file descriptors are sampled; at the end everyone is gone and both must be back
//! at their baseline (taken after a warm-up of the same workload), with no error beyond the
//! expected ones (invitations that fail because the peer left).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use opensig_protocol::client::{CallEvent, Config, Event};
use opensig_protocol::codes::{Code, ErrorKind};
use opensig_protocol::driver::Session;
use opensig_protocol::names::{call, invite_option};
use rand::Rng;
use serde_json::Value;
use tokio::time::Instant;

use crate::systems::{self, Cores};

/// Soak options.
#[derive(clap::Args, Clone)]
pub struct SoakArgs {
    /// Minutes of churn (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Users at once (each one logs in, works for a few seconds, logs out, and again).
    #[arg(long, default_value_t = 300)]
    pub users: usize,
    /// Channels they share.
    #[arg(long, default_value_t = 30)]
    pub channels: usize,
    /// Seconds of the same workload before the baseline is taken.
    #[arg(long, default_value_t = 30)]
    pub warmup_secs: u64,
}

#[derive(Default)]
struct Counters {
    logins: AtomicU64,
    channel_msgs: AtomicU64,
    p2p_msgs: AtomicU64,
    attrs: AtomicU64,
    invites: AtomicU64,
    invites_received: AtomicU64,
    calls_accepted: AtomicU64,
    calls_refused: AtomicU64,
    /// Invitations that failed because the peer was offline or did not answer in time.
    invites_failed_expected: AtomicU64,
    /// Answers (accept, refuse) that came after the invitation had ended (its `_timeout`, or
    /// the caller left): the server says `no_invitation`.
    answers_too_late: AtomicU64,
    /// Anything else that went wrong, by kind.
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    fn error(&self, what: String) {
        *self.errors.lock().unwrap().entry(what).or_default() += 1;
    }
}

type Calls = BTreeMap<u32, (String, String)>;

struct World {
    url: String,
    app: String,
    users: usize,
    channels: usize,
    stop: AtomicBool,
    n: Counters,
}

fn channel_name(i: usize) -> String {
    format!("soak-{i}")
}

/// Handle what arrived until `until`: answer invitations, end accepted calls, count failures.
/// `calls`: this user's own invitations (call id → channel, peer), to hang up accepted ones.
async fn pump(s: &mut Session, w: &World, until: Instant, calls: &mut Calls) {
    loop {
        let e = tokio::select! {
            e = s.next_event() => e,
            _ = tokio::time::sleep_until(until) => return,
        };
        let Some(e) = e else { return };
        match e {
            Event::InviteReceived {
                call,
                channel,
                peer,
                ..
            } => {
                w.n.invites_received.fetch_add(1, Ordering::Relaxed);
                let name = if rand::rng().random_bool(0.5) {
                    call::VOIP_INVITE_ACCEPT
                } else {
                    call::VOIP_INVITE_REFUSE
                };
                s.with(move |c, now| c.call_reply(call, name, &channel, &peer, "\"\"", now))
                    .await;
            }
            Event::Call {
                call: id,
                what: CallEvent::AcceptedByPeer,
                ..
            } => {
                w.n.calls_accepted.fetch_add(1, Ordering::Relaxed);
                // hang up (the peer sees onInviteEndByPeer)
                if let Some((ch, peer)) = calls.remove(&id.0) {
                    s.with(move |c, now| {
                        c.call_reply(id, call::VOIP_INVITE_BYE, &ch, &peer, "\"\"", now);
                    })
                    .await;
                }
            }
            Event::Call {
                call: id,
                what: CallEvent::RefusedByPeer,
                ..
            } => {
                w.n.calls_refused.fetch_add(1, Ordering::Relaxed);
                calls.remove(&id.0);
            }
            Event::Call {
                call: id,
                what: CallEvent::Failed,
                code,
                ..
            } => match code {
                // the peer went offline or did not answer within `_timeout`: churn does that
                Some(c)
                    if [
                        Code::InvitePeerOffline,
                        Code::InviteTimeout,
                        Code::InviteNet,
                    ]
                    .iter()
                    .any(|e| e.value() == c) =>
                {
                    w.n.invites_failed_expected.fetch_add(1, Ordering::Relaxed);
                    calls.remove(&id.0);
                }
                other => w.n.error(format!("invite failed with {other:?}")),
            },
            Event::Done { result: Err(f), .. } if f.err == ErrorKind::NoInvitation.as_str() => {
                w.n.answers_too_late.fetch_add(1, Ordering::Relaxed);
            }
            // the same refusal, as the SDK's onError reports it (counted above)
            Event::Error { desc, .. } if desc == ErrorKind::NoInvitation.as_str() => {}
            Event::Done { result: Err(f), .. } => w.n.error(format!("request failed: {}", f.err)),
            Event::LoginFailed { code } => w.n.error(format!("login failed: {code:?}")),
            Event::ChannelJoinFailed { err, .. } => w.n.error(format!("join failed: {err}")),
            Event::Error { name, desc, .. } => w.n.error(format!("error {name}: {desc}")),
            Event::Reconnecting { .. } => w.n.error("reconnecting".into()),
            _ => {}
        }
    }
}

async fn wait_for(
    s: &mut Session,
    w: &World,
    within: Duration,
    want: impl Fn(&Event<Value>) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let e = tokio::select! {
            e = s.next_event() => e,
            _ = tokio::time::sleep_until(deadline) => return false,
        };
        match e {
            Some(e) if want(&e) => return true,
            Some(Event::LoginFailed { code }) => {
                w.n.error(format!("login failed: {code:?}"));
                return false;
            }
            Some(_) => continue,
            None => return false,
        }
    }
}

/// One user's life, over and over until told to stop.
async fn user(w: Arc<World>, me: usize) {
    let account = format!("soak{me}");
    while !w.stop.load(Ordering::Relaxed) {
        let mut cfg = Config::new(&w.app, &account, "_no_need_token");
        cfg.servers = vec![w.url.clone()];
        let mut s = Session::login(cfg);
        if !wait_for(&mut s, &w, Duration::from_secs(10), |e| {
            matches!(e, Event::LoginSuccess { .. })
        })
        .await
        {
            w.n.error("no login within 10 s".into());
            continue;
        }
        w.n.logins.fetch_add(1, Ordering::Relaxed);
        let (joined, steps) = {
            let mut r = rand::rng();
            let k = r.random_range(1..=2);
            let joined: Vec<String> = (0..k)
                .map(|_| channel_name(r.random_range(0..w.channels)))
                .collect();
            (joined, r.random_range(5..20))
        };
        let mut ids = vec![];
        let mut calls = Calls::new();
        for name in &joined {
            let n = name.clone();
            ids.push(s.with(move |c, now| c.channel_join(&n, now)).await);
        }
        for _ in 0..steps {
            let pause = Duration::from_millis(rand::rng().random_range(100..500));
            pump(&mut s, &w, Instant::now() + pause, &mut calls).await;
            let (what, peer, ch, text) = {
                let mut r = rand::rng();
                (
                    r.random_range(0..10),
                    format!("soak{}", r.random_range(0..w.users)),
                    joined[r.random_range(0..joined.len())].clone(),
                    format!("soak message {}", r.random::<u32>()),
                )
            };
            match what {
                0..=3 => {
                    s.with(move |c, now| c.channel_send(&ch, &text, false, now))
                        .await;
                    w.n.channel_msgs.fetch_add(1, Ordering::Relaxed);
                }
                4..=6 => {
                    s.with(move |c, now| c.message_instant_send(&peer, &text, now))
                        .await;
                    w.n.p2p_msgs.fetch_add(1, Ordering::Relaxed);
                }
                7 | 8 => {
                    s.with(move |c, now| c.channel_attr(&ch, Some("topic"), Some(&text), now))
                        .await;
                    w.n.attrs.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    if peer != account {
                        let extra = format!(
                            r#"{{"{}":1,"{}":3}}"#,
                            invite_option::REQUIRE_PEER_ONLINE,
                            invite_option::TIMEOUT
                        );
                        let (c2, p2) = (ch.clone(), peer.clone());
                        let (id, _) = s.with(move |c, now| c.invite(&c2, &p2, &extra, now)).await;
                        calls.insert(id.0, (ch, peer));
                        w.n.invites.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        pump(
            &mut s,
            &w,
            Instant::now() + Duration::from_millis(300),
            &mut calls,
        )
        .await;
        for (id, name) in ids.into_iter().zip(joined) {
            s.with(move |c, now| c.channel_leave(id, &name, now)).await;
        }
        s.with(|c, now| c.logout(now)).await;
        if !wait_for(&mut s, &w, Duration::from_secs(10), |e| {
            matches!(e, Event::Logout { .. })
        })
        .await
        {
            w.n.error("no logout within 10 s".into());
        }
        drop(s);
        let rest = Duration::from_millis(rand::rng().random_range(0..1000));
        tokio::time::sleep(rest).await;
    }
}

fn start_users(world: &Arc<World>) -> Vec<tokio::task::JoinHandle<()>> {
    world.stop.store(false, Ordering::Relaxed);
    (0..world.users)
        .map(|i| tokio::spawn(user(world.clone(), i)))
        .collect()
}

/// Tell the users to stop and wait until each has logged out.
async fn stop_users(world: &Arc<World>, tasks: Vec<tokio::task::JoinHandle<()>>) {
    world.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `GET /metrics` over plain HTTP/1.1 and read one value.
async fn gauge(addr: std::net::SocketAddr, name: &str) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let text = buf.split_once("\r\n\r\n")?.1;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// Wait until the server holds no session and no connection.
async fn drained(http: std::net::SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if gauge(http, "opensig_sessions").await == Some(0)
            && gauge(http, "opensig_connections").await == Some(0)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Clear what users leave behind on purpose (channel attributes keep a channel for
/// `_channel_ttl`), so the end state is comparable with the baseline.
async fn tidy(world: &Arc<World>) {
    let mut cfg = Config::new(&world.app, "soak-tidy", "_no_need_token");
    cfg.servers = vec![world.url.clone()];
    let mut s = Session::login(cfg);
    if !wait_for(&mut s, world, Duration::from_secs(10), |e| {
        matches!(e, Event::LoginSuccess { .. })
    })
    .await
    {
        return;
    }
    for i in 0..world.channels {
        let n = channel_name(i);
        s.with(move |c, now| c.channel_attr(&n, None, None, now))
            .await;
    }
    pump(
        &mut s,
        world,
        Instant::now() + Duration::from_millis(500),
        &mut Calls::new(),
    )
    .await;
    s.with(|c, now| c.logout(now)).await;
    wait_for(&mut s, world, Duration::from_secs(10), |e| {
        matches!(e, Event::Logout { .. })
    })
    .await;
}

/// The soak run; fails when memory or descriptors do not come back or errors happened.
pub async fn run(a: SoakArgs, server_bin: &std::path::Path, cores: &Cores) -> Result<()> {
    systems::raise_fd_limit();
    // the server's default limits, except the per-address ones (all users come from loopback)
    let server = systems::opensig(
        server_bin,
        cores,
        &[
            "--limit",
            "user_messages_per_second=60",
            "--limit",
            "channel_messages_per_second=200",
            "--limit",
            "outbound_queue=4096",
            "--limit",
            "mailbox_max_messages=10000",
            "--limit",
            "invite_offline_grace_secs=3",
            "--limit",
            "joins_per_second=20",
            // resent-message ids are remembered this long: the steady state (ids of the last
            // 20 s) is reached within the warm-up, so the baseline includes it
            "--limit",
            "dedup_window_secs=20",
            "--limit",
            "offline_mail_per_sender_per_hour=1000",
        ],
    )?;
    let pid = server.pid();
    let addr = server.target.addr;
    let http = server
        .metrics
        .ok_or_else(|| anyhow::anyhow!("opensig-server serves no /metrics"))?;
    let world = Arc::new(World {
        url: format!("ws://{addr}/"),
        app: server.target.app.clone(),
        users: a.users,
        channels: a.channels,
        stop: AtomicBool::new(false),
        n: Counters::default(),
    });
    println!(
        "soak: {} users on {} channels, {:.1} min of churn after {} s of warm-up",
        a.users, a.channels, a.minutes, a.warmup_secs
    );
    let start_rss = systems::rss_kib(pid);
    let users = start_users(&world);
    tokio::time::sleep(Duration::from_secs(a.warmup_secs)).await;
    stop_users(&world, users).await;
    tidy(&world).await;
    if !drained(http).await {
        bail!("sessions or connections still open after the warm-up");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (base_rss, base_fds) = (systems::rss_kib(pid), open_fds(pid));
    println!(
        "baseline after warm-up: RSS {:.1} MiB (at start {:.1} MiB), {base_fds} open fds",
        base_rss as f64 / 1024.0,
        start_rss as f64 / 1024.0
    );
    println!(
        "{:>6} {:>9} {:>8} {:>9} {:>9} {:>8} {:>9} {:>5}",
        "t", "sessions", "logins", "chan msg", "p2p msg", "invites", "RSS MiB", "fds"
    );
    let mut peak = 0;
    let d = Duration::from_secs_f64(a.minutes * 60.0);
    let users = start_users(&world);
    let t0 = Instant::now();
    while t0.elapsed() < d {
        tokio::time::sleep(Duration::from_secs(30).min(d)).await;
        let n = &world.n;
        let rss = systems::rss_kib(pid);
        peak = peak.max(rss);
        let sessions = gauge(http, "opensig_sessions").await;
        println!(
            "{:>5.1}m {:>9} {:>8} {:>9} {:>9} {:>8} {:>9.1} {:>5}",
            t0.elapsed().as_secs_f64() / 60.0,
            sessions.map_or("?".into(), |s| s.to_string()),
            n.logins.load(Ordering::Relaxed),
            n.channel_msgs.load(Ordering::Relaxed),
            n.p2p_msgs.load(Ordering::Relaxed),
            n.invites.load(Ordering::Relaxed),
            rss as f64 / 1024.0,
            open_fds(pid)
        );
    }
    stop_users(&world, users).await;
    tidy(&world).await;
    let gone = drained(http).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (end_rss, end_fds) = (systems::rss_kib(pid), open_fds(pid));
    let n = &world.n;
    println!(
        "done: {} logins, {} channel messages, {} p2p messages, {} attribute sets, {} invitations ({} rang at the peer, {} accepted and ended, {} refused, {} failed because the peer left or did not answer, {} answers came after the invitation ended)",
        n.logins.load(Ordering::Relaxed),
        n.channel_msgs.load(Ordering::Relaxed),
        n.p2p_msgs.load(Ordering::Relaxed),
        n.attrs.load(Ordering::Relaxed),
        n.invites.load(Ordering::Relaxed),
        n.invites_received.load(Ordering::Relaxed),
        n.calls_accepted.load(Ordering::Relaxed),
        n.calls_refused.load(Ordering::Relaxed),
        n.invites_failed_expected.load(Ordering::Relaxed),
        n.answers_too_late.load(Ordering::Relaxed),
    );
    println!(
        "after: RSS {:.1} MiB (baseline {:.1}, peak under load {:.1}), {end_fds} open fds (baseline {base_fds})",
        end_rss as f64 / 1024.0,
        base_rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    let errors = n.errors.lock().unwrap().clone();
    let mut failed = vec![];
    if !gone {
        failed.push("sessions or connections were still open at the end".to_string());
    }
    // allocator slack is fine; growth is not
    let allowed = base_rss + base_rss / 10 + 4096;
    if end_rss > allowed {
        failed.push(format!("RSS {end_rss} KiB > {allowed} KiB allowed"));
    }
    if end_fds != base_fds {
        failed.push(format!("{end_fds} open fds, baseline {base_fds}"));
    }
    for (what, count) in &errors {
        failed.push(format!("{count} × {what}"));
    }
    if failed.is_empty() {
        println!("soak passed: memory and descriptors back at baseline, no unexpected error");
        Ok(())
    } else {
        bail!("soak failed:\n  {}", failed.join("\n  "))
    }
}
