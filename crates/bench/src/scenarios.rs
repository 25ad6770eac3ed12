//! The scenarios, each run the same way against every system.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::systems::Server;
use crate::wire::{Client, Sink, Target};

/// Loopback source addresses connections are spread over (more than one source port range).
const SOURCES: u8 = 8;

pub(crate) fn source(i: usize) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        1 + (i % SOURCES as usize) as u8,
    )))
}

/// Connect `names` concurrently (bounded), in order.
pub async fn connect_all(
    target: &Target,
    names: &[String],
    sink: &Arc<Sink>,
) -> Result<Vec<Arc<Client>>> {
    connect_spread(std::slice::from_ref(target), names, sink).await
}

/// Connect `names` concurrently (bounded), in order, the i-th to `targets[i % len]`.
pub async fn connect_spread(
    targets: &[Target],
    names: &[String],
    sink: &Arc<Sink>,
) -> Result<Vec<Arc<Client>>> {
    let limit = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        let target = targets[i % targets.len()].clone();
        let (n, sink, limit) = (n.clone(), sink.clone(), limit.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await;
            Client::connect(&target, &n, source(i), sink)
                .await
                .map(Arc::new)
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// Timing of a run: how long to warm up and to measure.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Load before measuring (every system gets the same).
    pub warmup: Duration,
    /// Measured period.
    pub measure: Duration,
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    /// p50.
    pub p50: u64,
    /// p99.
    pub p99: u64,
    /// p99.9.
    pub p999: u64,
    /// Share of the expected deliveries that arrived.
    pub delivered: f64,
    /// The server's CPU time per delivered message, in µs (0: not measured).
    pub cpu_us: f64,
}

fn latency(sink: &Sink, expected: u64) -> Latency {
    Latency {
        p50: sink.hist.percentile(50.0),
        p99: sink.hist.percentile(99.0),
        p999: sink.hist.percentile(99.9),
        delivered: if expected == 0 {
            1.0
        } else {
            sink.deliveries.load(Ordering::Relaxed) as f64 / expected as f64
        },
        cpu_us: match sink.deliveries.load(Ordering::Relaxed) {
            0 => 0.0,
            n => sink.server_ticks.load(Ordering::Relaxed) as f64 * 1e6 / TICKS_PER_SEC / n as f64,
        },
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// Warm up, then count for `t.measure`: deliveries, latencies, and the server's CPU time
/// (when `sink.server_pid` is set).
async fn measure_phase(sink: &Sink, t: Timing) {
    tokio::time::sleep(t.warmup).await;
    sink.hist.reset();
    sink.deliveries.store(0, Ordering::Relaxed);
    let pids = [
        sink.server_pid.load(Ordering::Relaxed),
        sink.store_pid.load(Ordering::Relaxed),
    ];
    let ticks = || -> u64 {
        pids.iter()
            .filter(|p| **p != 0)
            .map(|p| crate::systems::cpu_ticks(*p))
            .sum()
    };
    let before = ticks();
    sink.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(t.measure).await;
    sink.measuring.store(false, Ordering::Relaxed);
    sink.server_ticks
        .store(ticks().saturating_sub(before), Ordering::Relaxed);
}

impl Fanout {
    /// Count the CPU time of this server process in measurements.
    pub fn watch_cpu(&self, pid: u32) {
        self.sink.server_pid.store(pid, Ordering::Relaxed);
    }

    /// Count the CPU time of the server's store process (Redis) too.
    pub fn watch_store_cpu(&self, pid: u32) {
        self.sink.store_pid.store(pid, Ordering::Relaxed);
    }
}

impl P2p {
    /// Count the CPU time of this server process in measurements.
    pub fn watch_cpu(&self, pid: u32) {
        self.sink.server_pid.store(pid, Ordering::Relaxed);
    }
}

/// Fan-out set-up: `channels` channels of `members` members; member 0 of each sends.
pub struct Fanout {
    sink: Arc<Sink>,
    senders: Vec<(Arc<Client>, String)>,
    members: usize,
    _all: Vec<Arc<Client>>,
}

/// Connect and join everybody.
pub async fn fanout_setup(target: &Target, channels: usize, members: usize) -> Result<Fanout> {
    fanout_setup_on(std::slice::from_ref(target), channels, members).await
}

/// [`fanout_setup`] with the members spread over `targets` in turn (nodes of one cluster; with
/// an even member count and two nodes, every sender is on the first).
pub async fn fanout_setup_on(
    targets: &[Target],
    channels: usize,
    members: usize,
) -> Result<Fanout> {
    let sink = Sink::new();
    let names: Vec<String> = (0..channels)
        .flat_map(|c| (0..members).map(move |m| format!("f{c}m{m}")))
        .collect();
    let all = connect_spread(targets, &names, &sink)
        .await
        .context("connecting the fan-out members")?;
    let limit = Arc::new(Semaphore::new(256));
    let mut joins = vec![];
    for (i, c) in all.iter().enumerate() {
        let (c, limit) = (c.clone(), limit.clone());
        let ch = format!("c{}", i / members);
        joins.push(tokio::spawn(async move {
            let _p = limit.acquire().await;
            c.join(&ch).await
        }));
    }
    for j in joins {
        j.await??;
    }
    let senders = (0..channels)
        .map(|c| (all[c * members].clone(), format!("c{c}")))
        .collect();
    Ok(Fanout {
        sink,
        senders,
        members,
        _all: all,
    })
}

/// Deliveries per second at saturation: each sender keeps `window` messages in flight (a new
/// one when one of its own comes back), so the server, not the generator, sets the pace.
pub async fn fanout_saturation(f: &Fanout, size: usize, window: u64, t: Timing) -> Result<f64> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = vec![];
    for (c, ch) in &f.senders {
        let (c, ch, sink, stop) = (c.clone(), ch.clone(), f.sink.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if sent < c.own.load(Ordering::Relaxed) + window {
                    if c.channel_send(&ch, &sink.payload(&c.user, size))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    sent += 1;
                } else {
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
            }
        }));
    }
    measure_phase(&f.sink, t).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(f.sink.deliveries.load(Ordering::Relaxed) as f64 / t.measure.as_secs_f64())
}

/// Latency at a fixed total rate of channel messages (each delivered to every member).
pub async fn fanout_latency(f: &Fanout, size: usize, rate: u64, t: Timing) -> Result<Latency> {
    let per_sender = Duration::from_secs_f64(f.senders.len() as f64 / rate.max(1) as f64);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent_measured = Arc::new(AtomicU64::new(0));
    let mut tasks = vec![];
    for (i, (c, ch)) in f.senders.iter().enumerate() {
        let (c, ch, sink, stop, sent_measured) = (
            c.clone(),
            ch.clone(),
            f.sink.clone(),
            stop.clone(),
            sent_measured.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // spread the senders over the interval
            tokio::time::sleep(per_sender.mul_f64(i as f64 / 100.0 % 1.0)).await;
            let mut tick = tokio::time::interval(per_sender);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let measuring = sink.measuring.load(Ordering::Relaxed);
                if c.channel_send(&ch, &sink.payload(&c.user, size))
                    .await
                    .is_err()
                {
                    break;
                }
                if measuring {
                    sent_measured.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    measure_phase(&f.sink, t).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(latency(
        &f.sink,
        sent_measured.load(Ordering::Relaxed) * f.members as u64,
    ))
}

/// Peer-to-peer set-up: `n` sessions.
pub struct P2p {
    sink: Arc<Sink>,
    clients: Vec<Arc<Client>>,
}

/// Connect `n` sessions (each listening for its direct messages).
pub async fn p2p_setup(target: &Target, n: usize) -> Result<P2p> {
    let sink = Sink::new();
    let names: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
    let clients = connect_all(target, &names, &sink)
        .await
        .context("connecting the p2p sessions")?;
    let limit = Arc::new(Semaphore::new(256));
    let mut subs = vec![];
    for c in &clients {
        let (c, limit) = (c.clone(), limit.clone());
        subs.push(tokio::spawn(async move {
            let _p = limit.acquire().await;
            c.listen_direct().await
        }));
    }
    for s in subs {
        s.await??;
    }
    Ok(P2p { sink, clients })
}

/// Latency of random-pair messages at a fixed total rate.
pub async fn p2p_rate(p: &P2p, size: usize, rate: u64, t: Timing) -> Result<Latency> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent_measured = Arc::new(AtomicU64::new(0));
    // a few pacing tasks, each sending a share of the rate in 1 ms slices
    let pacers = 4;
    let mut tasks = vec![];
    for _ in 0..pacers {
        let (clients, sink, stop, sent_measured) = (
            p.clients.clone(),
            p.sink.clone(),
            stop.clone(),
            sent_measured.clone(),
        );
        let per_ms = rate as f64 / 1000.0 / pacers as f64;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut credit = 0.0;
            let mut rng = rand::rngs::SmallRng::from_rng(&mut rand::rng());
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                credit += per_ms;
                while credit >= 1.0 {
                    credit -= 1.0;
                    let a = rng.random_range(0..clients.len());
                    let mut b = rng.random_range(0..clients.len() - 1);
                    if b >= a {
                        b += 1;
                    }
                    let measuring = sink.measuring.load(Ordering::Relaxed);
                    let payload = sink.payload(&clients[a].user, size);
                    if clients[a]
                        .direct_send(&clients[b].user, &payload)
                        .await
                        .is_ok()
                        && measuring
                    {
                        sent_measured.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    measure_phase(&p.sink, t).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(latency(&p.sink, sent_measured.load(Ordering::Relaxed)))
}

/// The highest rate (from `start`, doubling) at which nearly everything arrives with a p99
/// under `max_p99_us`.
pub async fn p2p_max(p: &P2p, size: usize, start: u64, max_p99_us: u64, t: Timing) -> Result<u64> {
    let holds = |l: &Latency| l.delivered >= 0.99 && l.p99 <= max_p99_us;
    // double until it fails, then bisect between the last rate that held and the first that
    // did not (to within a tenth)
    let (mut good, mut bad) = (0, start);
    loop {
        let l = p2p_rate(p, size, bad, t).await?;
        if !holds(&l) {
            break;
        }
        good = bad;
        bad *= 2;
        if bad > 1_000_000 {
            return Ok(good);
        }
    }
    while bad - good > bad / 10 {
        let mid = (good + bad) / 2;
        if holds(&p2p_rate(p, size, mid, t).await?) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Ok(good)
}

/// Server memory per idle logged-in session, in bytes.
pub async fn idle(server: &Server, n: usize) -> Result<(usize, f64)> {
    let sink = Sink::new();
    let warm: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
    let _warm = connect_all(&server.target, &warm, &sink).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib();
    let names: Vec<String> = (0..n).map(|i| format!("idle{i}")).collect();
    let clients = connect_all(&server.target, &names, &sink)
        .await
        .context("connecting idle sessions")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss_kib();
    let per = (after.saturating_sub(before) * 1024) as f64 / clients.len() as f64;
    for c in &clients {
        c.close().await;
    }
    Ok((clients.len(), per))
}

/// Logins per second with token verification: `n` WebSockets are opened first, then every
/// one sends its login at once; the time until the last `login_ret` counts.
pub async fn logins(target: &Target, n: usize, concurrency: usize) -> Result<f64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let limit = Arc::new(Semaphore::new(256));
    let mut opens = vec![];
    for i in 0..n {
        let (target, limit) = (target.clone(), limit.clone());
        opens.push(tokio::spawn(async move {
            let _p = limit.acquire().await;
            crate::wire::open(&target, &format!("l{i}"), source(i)).await
        }));
    }
    let mut socks = vec![];
    for o in opens {
        socks.push(o.await??);
    }
    let frames: Vec<String> = (0..n)
        .map(|i| {
            let account = format!("l{i}");
            let token = opensig_protocol::token::sign(
                crate::SECURE_APP,
                crate::SECURE_CERT,
                &account,
                now + 3600,
            );
            crate::wire::login_frame(crate::SECURE_APP, &account, &token)
        })
        .collect();
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(concurrency));
    let mut tasks = vec![];
    for ((mut tx, mut rx), frame) in socks.into_iter().zip(frames) {
        let limit = limit.clone();
        tasks.push(tokio::spawn(async move {
            let _p = limit.acquire().await;
            tx.send(Message::text(frame)).await?;
            loop {
                match rx.next().await {
                    Some(Ok(Message::Text(t))) => {
                        crate::wire::login_line(&t)?;
                        return anyhow::Ok((tx, rx));
                    }
                    Some(Ok(_)) => continue,
                    _ => anyhow::bail!("closed before login_ret"),
                }
            }
        }));
    }
    let mut done = vec![];
    for t in tasks {
        done.push(t.await??);
    }
    let elapsed = started.elapsed();
    drop(done);
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// A short check that a system answers (used by `cargo test` against live peers).
#[cfg(test)]
pub async fn smoke(target: &Target) -> Result<(u64, u64)> {
    let f = fanout_setup(target, 2, 3).await?;
    let rate = fanout_saturation(
        &f,
        100,
        4,
        Timing {
            warmup: Duration::from_millis(200),
            measure: Duration::from_millis(500),
        },
    )
    .await?;
    let p = p2p_setup(target, 6).await?;
    let l = p2p_rate(
        &p,
        100,
        200,
        Timing {
            warmup: Duration::from_millis(200),
            measure: Duration::from_millis(500),
        },
    )
    .await?;
    Ok((rate as u64, (l.delivered * 100.0) as u64))
}
