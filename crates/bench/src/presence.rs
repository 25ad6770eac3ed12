//! Presence subscriptions against the firehose: W watcher sessions each watching K of T
//! accounts while the accounts log in and out at a steady rate. Measured on the server:
//! CPU time per delivered status change, memory per subscription, and the latency from a
//! login being sent to a watcher hearing `ONLINE` (p50/p99). Beside it, the same watchers
//! learning the same thing from `__agora_user_online` (every login and logout of the app):
//! CPU per delivered event and per event about one of their K accounts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::{SinkExt, StreamExt};
use opensig_protocol::client::frames::{self, Body};
use opensig_protocol::names::{call, event, notify, peer_state, special};
use rand::seq::IndexedRandom;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::scenarios::source;
use crate::stats::{fmt_us, Histogram};
use crate::systems::{self, Cores};
use crate::wire::{self, Target};
use crate::Spread;

#[derive(clap::Args, Clone)]
pub struct PresenceArgs {
    /// Watcher sessions.
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
    /// Accounts each watcher watches.
    #[arg(long, default_value_t = 100)]
    per_watcher: usize,
    /// Accounts that log in and out.
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    /// Logins per second (as many logouts).
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Watchers on the firehose (it hands every one of them every change of the app).
    #[arg(long, default_value_t = 1_000)]
    firehose_watchers: usize,
    /// Runs of each; figures are medians with their spread.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// What the watchers heard.
#[derive(Default)]
struct Heard {
    /// Status changes (subscriptions) or firehose events delivered.
    delivered: AtomicU64,
    /// Login sent → `ONLINE` heard.
    latency: Histogram,
}

/// When each account's latest login was sent.
type Sent = Arc<std::sync::Mutex<HashMap<String, Instant>>>;

/// A watcher: logged in, its read loop counting what it hears.
async fn watcher(
    target: &Target,
    name: &str,
    i: usize,
    heard: Arc<Heard>,
    sent: Sent,
) -> Result<(futures_util::stream::SplitSink<wire::Ws, Message>, String)> {
    let (mut tx, mut rx) = wire::open(target, name, source(i)).await?;
    tx.send(Message::text(wire::login_frame(&target.app, name, "")))
        .await?;
    let first = loop {
        match rx.next().await {
            Some(Ok(Message::Text(t))) => break t.to_string(),
            Some(Ok(_)) => continue,
            _ => bail!("{name}: closed during login"),
        }
    };
    let line = wire::login_line(&first)?;
    tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            let Message::Text(t) = m else { continue };
            hear(&t, &heard, &sent);
        }
    });
    Ok((tx, line))
}

/// Count a frame (or a `multi` batch) the watcher got, and time the `ONLINE`s.
fn hear(text: &str, heard: &Heard, sent: &Sent) {
    let is_status = text.contains(notify::PEER_STATUS);
    let is_firehose = text.contains(special::USER_ONLINE);
    if !is_status && !is_firehose {
        return;
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let frames = match v[0].as_str() {
        Some(event::MULTI) => v[1].as_array().cloned().unwrap_or_default(),
        _ => vec![v],
    };
    let now = Instant::now();
    for f in frames {
        if f[0] != event::NOTIFY {
            continue;
        }
        if f[1][0] == notify::PEER_STATUS {
            let states: serde_json::Value =
                serde_json::from_str(f[1][1].as_str().unwrap_or("{}")).unwrap_or_default();
            let Some(states) = states.as_object() else {
                continue;
            };
            for (account, state) in states {
                heard.delivered.fetch_add(1, Ordering::Relaxed);
                if state == peer_state::ONLINE {
                    if let Some(t) = sent.lock().unwrap().get(account) {
                        heard
                            .latency
                            .record_us(now.duration_since(*t).as_micros() as u64);
                    }
                }
            }
        } else if f[1][0] == notify::CHANNEL2 && f[1][1] == special::USER_ONLINE {
            heard.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One run's figures.
struct Run {
    /// Server CPU µs per second.
    cpu_per_sec: f64,
    /// Server CPU µs per delivered change (event).
    cpu_per_delivery: f64,
    /// Deliveries per second.
    deliveries: f64,
    /// Server bytes per subscription (membership, for the firehose).
    bytes_per_watch: f64,
    p50: u64,
    p99: u64,
}

/// What the watchers do: watch accounts, join the firehose, or nothing (the churn alone).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Subscriptions,
    Firehose,
    ChurnOnly,
}

async fn run_once(
    a: &PresenceArgs,
    bin: &std::path::Path,
    cores: &Cores,
    mode: Mode,
) -> Result<Run> {
    let firehose = mode == Mode::Firehose;
    let server = systems::opensig(bin, cores, &["--limit", "watch_calls_per_5s=0"])?;
    let target = server.target.clone();
    let heard = Arc::new(Heard::default());
    let sent: Sent = Arc::default();
    let accounts: Vec<String> = (0..a.accounts).map(|i| format!("acct{i}")).collect();
    let watchers = match mode {
        Mode::Subscriptions => a.watchers,
        Mode::Firehose => a.firehose_watchers,
        Mode::ChurnOnly => 0,
    };
    let rss0 = systems::rss_kib(server.pid());
    // watchers log in
    let limit = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::new();
    for i in 0..watchers {
        let (target, heard, sent, limit) =
            (target.clone(), heard.clone(), sent.clone(), limit.clone());
        tasks.push(tokio::spawn(async move {
            let _p = limit.acquire().await;
            let name = format!("w{i}");
            watcher(&target, &name, i, heard, sent).await
        }));
    }
    let mut sinks = Vec::new();
    for t in tasks {
        sinks.push(t.await??);
    }
    let rss1 = systems::rss_kib(server.pid());
    // each watches its accounts (or joins the firehose)
    for (id, (tx, line)) in (1u64..).zip(sinks.iter_mut()) {
        let frame = if firehose {
            let args = Body::new().s("name", special::USER_ONLINE).0;
            frames::call2(call::CHANNEL_JOIN, id, &args, line)
        } else {
            let picks: Vec<&String> = accounts
                .choose_multiple(&mut rand::rng(), a.per_watcher)
                .collect();
            let list = serde_json::to_string(&picks)?;
            let args = Body::new().raw("accounts", &list).0;
            frames::call2(call::USER_SUBSCRIBE_STATUS, id, &args, line)
        };
        tx.send(Message::text(frame)).await?;
    }
    // settle: the subscriptions' replies (their initial states are not counted below)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss2 = systems::rss_kib(server.pid());
    // churn: `rate` logins a second, each account logging out 1 s after it logged in
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (target, sent, stop, accounts) =
            (target.clone(), sent.clone(), stop.clone(), accounts.clone());
        let every = Duration::from_micros(1_000_000 / a.rate.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let name = accounts[n % accounts.len()].clone();
                n += 1;
                let (target, sent) = (target.clone(), sent.clone());
                tokio::spawn(async move {
                    let Ok((mut tx, mut rx)) = wire::open(&target, &name, source(n)).await else {
                        return;
                    };
                    sent.lock().unwrap().insert(name.clone(), Instant::now());
                    let _ = tx
                        .send(Message::text(wire::login_frame(&target.app, &name, "")))
                        .await;
                    let line = match rx.next().await {
                        Some(Ok(Message::Text(t))) => wire::login_line(&t).unwrap_or_default(),
                        _ => return,
                    };
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    // a logout (not a dropped connection: that would be UNREACHABLE first)
                    let _ = tx
                        .send(Message::text(frames::call2(
                            call::USER_LOGOUT,
                            1,
                            "",
                            &line,
                        )))
                        .await;
                    while let Some(Ok(_)) = rx.next().await {}
                });
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await; // warm-up
    heard.latency.reset();
    let d0 = heard.delivered.load(Ordering::Relaxed);
    let c0 = systems::cpu_ticks(server.pid());
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let c1 = systems::cpu_ticks(server.pid());
    let d1 = heard.delivered.load(Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = churn.await;
    let delivered = (d1 - d0).max(1) as f64;
    let cpu_us = c1.saturating_sub(c0) as f64 * 10_000.0; // USER_HZ = 100
    let watches = (watchers * if firehose { 1 } else { a.per_watcher }).max(1) as f64;
    let _ = rss0;
    Ok(Run {
        cpu_per_sec: cpu_us / secs,
        cpu_per_delivery: cpu_us / delivered,
        deliveries: delivered / secs,
        bytes_per_watch: rss2.saturating_sub(rss1) as f64 * 1024.0 / watches,
        p50: heard.latency.percentile(50.0),
        p99: heard.latency.percentile(99.0),
    })
}

pub async fn run(a: PresenceArgs, bin: &std::path::Path, cores: &Cores) -> Result<()> {
    let (mut subs, mut hose, mut churn) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..a.runs {
        eprintln!("[presence] run {} of {}", i + 1, a.runs);
        subs.push(run_once(&a, bin, cores, Mode::Subscriptions).await?);
        hose.push(run_once(&a, bin, cores, Mode::Firehose).await?);
        churn.push(run_once(&a, bin, cores, Mode::ChurnOnly).await?);
    }
    // the logins and logouts themselves cost the same in every mode: what a delivery costs
    // is what the server spends beyond them
    let base = Spread::of(churn.iter().map(|r| r.cpu_per_sec).collect())
        .unwrap_or_default()
        .median;
    let net = |r: &Run| (r.cpu_per_sec - base).max(0.0) / r.deliveries.max(1.0);
    let spread =
        |v: &[Run], f: fn(&Run) -> f64| Spread::of(v.iter().map(f).collect()).unwrap_or_default();
    let show = |s: Spread, unit: &str| format!("{:.2}{unit} ({:.2}–{:.2})", s.median, s.min, s.max);
    let useful = a.per_watcher as f64 / a.accounts.max(1) as f64;
    println!(
        "presence: {} watchers × {} accounts of {}, {} logins/s and as many logouts; {} runs",
        a.watchers, a.per_watcher, a.accounts, a.rate, a.runs
    );
    println!(
        "  churn alone: server CPU {:.1} ms per second (the logins and logouts, no watcher)",
        base / 1000.0
    );
    let subs_net = Spread::of(subs.iter().map(net).collect()).unwrap_or_default();
    let hose_net = Spread::of(hose.iter().map(net).collect()).unwrap_or_default();
    println!(
        "  subscriptions: server CPU {} per delivered change beyond the churn ({} with it), {} changes/s delivered, {} per subscription, login → ONLINE p50 {} p99 {}",
        show(subs_net, " µs"),
        show(spread(&subs, |r| r.cpu_per_delivery), " µs"),
        show(spread(&subs, |r| r.deliveries), ""),
        show(spread(&subs, |r| r.bytes_per_watch), " B"),
        fmt_us(median_u64(subs.iter().map(|r| r.p50).collect())),
        fmt_us(median_u64(subs.iter().map(|r| r.p99).collect())),
    );
    println!(
        "  firehose ({} watchers): server CPU {} per delivered event beyond the churn ({} with it), {} events/s delivered, {} per member; \
         per event about one of a watcher's {} accounts (1 in {:.0}): {:.1} µs",
        a.firehose_watchers,
        show(hose_net, " µs"),
        show(spread(&hose, |r| r.cpu_per_delivery), " µs"),
        show(spread(&hose, |r| r.deliveries), ""),
        show(spread(&hose, |r| r.bytes_per_watch), " B"),
        a.per_watcher,
        1.0 / useful,
        hose_net.median / useful,
    );
    Ok(())
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}
