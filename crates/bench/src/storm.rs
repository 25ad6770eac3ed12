//! Reconnect storm: N sessions on node A of a two-node cluster (Redis), node A killed with
//! SIGKILL, every session logs in again on node B by itself (the client core's reconnect
//! with its jittered backoff, the same rule as the SDK's). Measured: the time until the last
//! session is back, and node B's p2p latency for a bystander pair before and during the storm.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use opensig_protocol::client::{Config, Event};
use opensig_protocol::driver::Session;
use tokio::sync::Mutex;

use crate::cluster::start_redis;
use crate::stats::{fmt_us, Samples};
use crate::systems::{self, Cores};

#[derive(clap::Args, Clone)]
pub struct StormArgs {
    /// Sessions on the node that dies (capped by the open-file limit).
    #[arg(long, default_value_t = 19_000)]
    sessions: usize,
    /// Runs; figures are medians with their spread.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Bystander messages per second on the surviving node.
    #[arg(long, default_value_t = 200)]
    bystander_rate: u64,
    /// Logins started at once while the sessions are set up.
    #[arg(long, default_value_t = 500)]
    concurrency: usize,
    /// A limit for both nodes, `NAME=VALUE` (repeatable), e.g. `max_sessions=20000`.
    #[arg(long = "node-limit")]
    node_limits: Vec<String>,
}

/// One run's figures.
struct Storm {
    sessions: usize,
    /// Seconds from the kill until the last session was logged in on node B.
    last_back: f64,
    /// Seconds until half were back.
    half_back: f64,
    /// Sessions that gave up (onLogout) instead of coming back.
    lost: usize,
    /// Reconnect attempts of all sessions together.
    attempts: usize,
    /// CPU seconds node B spent from the kill until the last session was back.
    b_cpu: f64,
    /// Seconds until 10 %, 50 %, 90 % were back.
    deciles: [f64; 3],
    /// Bystander p50 / p99 (µs) on node B, before the kill and during the storm.
    before: (u64, u64),
    during: (u64, u64),
}

async fn logged_in(cfg: Config, source: Option<std::net::IpAddr>) -> Result<Session> {
    let who = cfg.account.clone();
    let mut s = Session::login_from(cfg, source);
    loop {
        match tokio::time::timeout(Duration::from_secs(30), s.next_event()).await {
            Ok(Some(Event::LoginSuccess { .. })) => return Ok(s),
            Ok(Some(Event::LoginFailed { code })) => bail!("{who}: login failed {code:?}"),
            Ok(Some(_)) => {}
            _ => bail!("{who}: no login"),
        }
    }
}

/// A sender and a receiver on `url` exchanging timestamped messages at `rate` until `stop`:
/// (sent at, latency) of each.
async fn bystander_pair(
    url: String,
    rate: u64,
    start: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<Vec<(Duration, Duration)>> {
    let on_b = |name: &str| {
        let mut c = Config::new("bench", name, "");
        c.servers = vec![url.clone()];
        c
    };
    let mut sender = logged_in(on_b("bystanderS"), None).await?;
    let mut receiver = logged_in(on_b("bystanderR"), None).await?;
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    while !stop.load(Ordering::Relaxed) {
        tokio::select! {
            _ = tick.tick() => {
                let t = start.elapsed().as_nanos().to_string();
                sender
                    .with(move |c, now| c.message_instant_send("bystanderR", &t, now))
                    .await;
                while sender.try_event().is_some() {}
            }
            e = receiver.next_event() => {
                if let Some(Event::MessageInstant { msg, .. }) = e {
                    if let Some(Ok(ns)) = msg.as_str().map(str::parse::<u64>) {
                        let sent = Duration::from_nanos(ns);
                        samples.push((sent, start.elapsed().saturating_sub(sent)));
                    }
                }
            }
        }
    }
    Ok(samples)
}

async fn once(a: &StormArgs, bin: &std::path::Path, cores: &Cores, run: usize) -> Result<Storm> {
    let (_redis, redis_url) = start_redis()?;
    let prefix = format!("storm{}x{run}:", std::process::id());
    let node = |id: &str| {
        let mut args = vec![
            "--redis",
            &redis_url,
            "--redis-prefix",
            &prefix,
            "--node-id",
            id,
        ];
        for l in &a.node_limits {
            args.extend(["--limit", l.as_str()]);
        }
        systems::opensig(bin, cores, &args)
    };
    let node_a = node("stormA")?;
    let node_b = node("stormB")?;
    let url = |s: &systems::Server| format!("ws://{}/", s.target.addr);
    let (url_a, url_b) = (url(&node_a), url(&node_b));
    let n = a.sessions;

    // n sessions on A, B their fallback; each task reports when it is logged in again
    let back = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicUsize::new(0));
    let back_at = Arc::new(Mutex::new(Vec::<Instant>::with_capacity(n)));
    let gate = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(n);
    let ready = Arc::new(AtomicUsize::new(0));
    let attempts = Arc::new(AtomicUsize::new(0));
    for i in 0..n {
        let mut cfg = Config::new("bench", &format!("storm{i}"), "");
        cfg.servers = vec![url_a.clone(), url_b.clone()];
        cfg.reconnect_count = 1000;
        let (back, lost, back_at, ready, gate, attempts) = (
            back.clone(),
            lost.clone(),
            back_at.clone(),
            ready.clone(),
            gate.clone(),
            attempts.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            // spread over loopback addresses: the kernel's port search for one address
            // slows down long before its ports run out (measured: most of this process's CPU)
            let Ok(mut s) = logged_in(cfg, crate::scenarios::source(i)).await else {
                lost.fetch_add(1, Ordering::Relaxed);
                ready.fetch_add(1, Ordering::Relaxed);
                return;
            };
            drop(permit);
            ready.fetch_add(1, Ordering::Relaxed);
            while let Some(e) = s.next_event().await {
                match e {
                    Event::Reconnecting { .. } => {
                        attempts.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::Reconnected => {
                        back_at.lock().await.push(Instant::now());
                        back.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Event::Logout { .. } => {
                        lost.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    _ => {}
                }
            }
            // hold the session until the run ends
            while s.next_event().await.is_some() {}
        }));
    }
    let t0 = Instant::now();
    while ready.load(Ordering::Relaxed) < n {
        if t0.elapsed() > Duration::from_secs(300) {
            bail!(
                "only {} of {n} sessions logged in",
                ready.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if lost.load(Ordering::Relaxed) > 0 {
        bail!("{} sessions could not log in", lost.load(Ordering::Relaxed));
    }

    // the bystander pair on B, on a thread of its own (its own runtime): the storm's
    // thousands of client tasks in this process must not delay the bystander's timestamps,
    // so what it measures is the server
    let start = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bystander = {
        let (stop, url_b, rate) = (stop.clone(), url_b.clone(), a.bystander_rate);
        std::thread::spawn(move || -> Result<Vec<(Duration, Duration)>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(bystander_pair(url_b, rate, start, stop))
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // the storm
    let kill_at = start.elapsed();
    let killed_instant = Instant::now();
    let ticks_before = systems::cpu_ticks(node_b.pid());
    drop(node_a); // SIGKILL
    let deadline = killed_instant + Duration::from_secs(180);
    while back.load(Ordering::Relaxed) + lost.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            bail!(
                "after 180 s only {} of {n} sessions were back",
                back.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let storm_end = start.elapsed();
    let b_cpu = (systems::cpu_ticks(node_b.pid()) - ticks_before) as f64 / 100.0;
    stop.store(true, Ordering::Relaxed);
    let samples = bystander
        .join()
        .map_err(|_| anyhow::anyhow!("bystander thread panicked"))??;
    let mut times: Vec<f64> = back_at
        .lock()
        .await
        .iter()
        .map(|t| t.duration_since(killed_instant).as_secs_f64())
        .collect();
    times.sort_by(f64::total_cmp);
    let pct = |s: &mut Samples| (s.percentile(50.0), s.percentile(99.0));
    let (mut before, mut during) = (Samples::default(), Samples::default());
    for (sent, lat) in &samples {
        if *sent < kill_at {
            before.add(*lat);
        } else if *sent <= storm_end {
            during.add(*lat);
        }
    }
    for t in tasks {
        t.abort();
    }
    drop(node_b);
    Ok(Storm {
        sessions: n,
        last_back: times.last().copied().unwrap_or(0.0),
        half_back: times.get(times.len() / 2).copied().unwrap_or(0.0),
        lost: lost.load(Ordering::Relaxed),
        attempts: attempts.load(Ordering::Relaxed),
        b_cpu,
        deciles: [0.1, 0.5, 0.9].map(|q| {
            times
                .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        }),
        before: pct(&mut before),
        during: pct(&mut during),
    })
}

/// Median and spread (min–max) of a figure over the runs.
fn med(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

pub async fn run(a: StormArgs, bin: &std::path::Path, cores: &Cores) -> Result<()> {
    let limit = systems::raise_fd_limit() as usize;
    let mut a = a;
    // each session is one socket here and one on the node; keep room for the rest
    a.sessions = a.sessions.min(limit.saturating_sub(1000));
    let mut runs = vec![];
    for run in 0..a.runs.max(1) {
        let s = once(&a, bin, cores, run).await?;
        println!(
            "run {}: {} sessions, all back after {:.2} s (half after {:.2} s), {} reconnect \
             attempts, {} gave up, 10/50/90 % back at {:.2}/{:.2}/{:.2} s, node B CPU {:.2} s; \
             bystander p50/p99 before {}/{}, during {}/{}",
            run + 1,
            s.sessions,
            s.last_back,
            s.half_back,
            s.attempts,
            s.lost,
            s.deciles[0],
            s.deciles[1],
            s.deciles[2],
            s.b_cpu,
            fmt_us(s.before.0),
            fmt_us(s.before.1),
            fmt_us(s.during.0),
            fmt_us(s.during.1)
        );
        runs.push(s);
    }
    let fig = |f: fn(&Storm) -> f64| med(&mut runs.iter().map(f).collect::<Vec<_>>());
    let show = |(m, lo, hi): (f64, f64, f64), unit: &str| format!("{m:.2}{unit} ({lo:.2}–{hi:.2})");
    let us = |(m, lo, hi): (f64, f64, f64)| {
        format!(
            "{} ({}–{})",
            fmt_us(m as u64),
            fmt_us(lo as u64),
            fmt_us(hi as u64)
        )
    };
    println!(
        "\nreconnect storm: {} sessions on a node killed with SIGKILL, {} runs (median, min–max)\n",
        runs[0].sessions,
        runs.len()
    );
    println!("| figure | value |\n|---|---|");
    println!(
        "| all sessions logged in again on the other node | {} |",
        show(fig(|s| s.last_back), " s")
    );
    println!("| half of them | {} |", show(fig(|s| s.half_back), " s"));
    println!(
        "| sessions that gave up | {} |",
        runs.iter().map(|s| s.lost).max().unwrap_or(0)
    );
    println!(
        "| bystander p50 before / during | {} / {} |",
        us(fig(|s| s.before.0 as f64)),
        us(fig(|s| s.during.0 as f64))
    );
    println!(
        "| bystander p99 before / during | {} / {} |",
        us(fig(|s| s.before.1 as f64)),
        us(fig(|s| s.during.1 as f64))
    );
    Ok(())
}
