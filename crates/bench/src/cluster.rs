//! p2p latency on one node vs across two nodes sharing Redis.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use opensig_protocol::client::{Config, Event};
use opensig_protocol::driver::Session;
use tokio::sync::Mutex;

use crate::stats::{fmt_us, Samples};

#[derive(clap::Args, Clone)]
pub struct ClusterArgs {
    /// Sender/receiver pairs of each kind (same-node and cross-node).
    #[arg(long, default_value_t = 20)]
    pairs: usize,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Seconds of measurement (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The opensig-server binary to run.
    #[arg(long, default_value = "target/release/opensig-server")]
    server_bin: PathBuf,
    /// Use this Redis instead of starting a private redis-server.
    #[arg(long)]
    redis: Option<String>,
}

/// What a Redis server has done so far: calls per command (commands scripts run included,
/// as Redis 7 counts them) and its CPU seconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct RedisWork {
    pub calls: std::collections::BTreeMap<String, u64>,
    pub cpu_secs: f64,
}

impl RedisWork {
    /// `INFO commandstats` and `INFO cpu` of the Redis at `url` (through redis-cli).
    pub(crate) fn read(url: &str) -> Result<RedisWork> {
        let out = Command::new("redis-cli")
            .args(["-u", url, "INFO", "all"])
            .output()
            .context("redis-cli (scripts/setup installs it with redis-server)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut w = RedisWork::default();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("cmdstat_") {
                let (name, stats) = rest.split_once(':').unwrap_or((rest, ""));
                let calls = stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                w.calls.insert(name.to_string(), calls);
            } else if let Some(v) = line
                .strip_prefix("used_cpu_sys:")
                .or_else(|| line.strip_prefix("used_cpu_user:"))
            {
                w.cpu_secs += v.parse::<f64>().unwrap_or(0.0);
            }
        }
        Ok(w)
    }

    /// What was done between `before` and `self`: (script runs, other commands, CPU s).
    pub(crate) fn since(&self, before: &RedisWork) -> (u64, u64, f64, Vec<(String, u64)>) {
        let mut scripts = 0;
        let mut commands = 0;
        let mut each = Vec::new();
        for (name, n) in &self.calls {
            let d = n - before.calls.get(name).copied().unwrap_or(0);
            if d == 0 || name == "info" {
                continue;
            }
            if matches!(name.as_str(), "evalsha" | "eval" | "evalsha_ro" | "eval_ro") {
                scripts += d;
            } else {
                commands += d;
            }
            each.push((name.clone(), d));
        }
        each.sort_by_key(|e| std::cmp::Reverse(e.1));
        (scripts, commands, self.cpu_secs - before.cpu_secs, each)
    }
}

/// A child process killed when dropped.
pub(crate) struct Proc(Child);

impl Proc {
    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_port(port: u16) -> Result<()> {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("nothing listens on port {port}")
}

pub(crate) fn start_redis() -> Result<(Proc, String)> {
    let port = free_port()?;
    let child = Command::new("redis-server")
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
        .stdout(Stdio::null())
        .spawn()
        .context("starting redis-server (install it with scripts/setup)")?;
    wait_port(port)?;
    Ok((Proc(child), format!("redis://127.0.0.1:{port}/")))
}

fn start_node(bin: &PathBuf, extra: &[String]) -> Result<(Proc, String)> {
    let port = free_port()?;
    let child = Command::new(bin)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--www",
            "/nonexistent",
        ])
        .args(extra)
        .env("OPENSIG_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it: cargo build --release -p opensig-server)",
                bin.display()
            )
        })?;
    wait_port(port)?;
    Ok((Proc(child), format!("ws://127.0.0.1:{port}/")))
}

async fn login(url: &str, account: &str) -> Result<Session> {
    let mut cfg = Config::new("bench", account, "");
    cfg.servers = vec![url.to_string()];
    let mut s = Session::login(cfg);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.next_event()).await {
            Ok(Some(Event::LoginSuccess { .. })) => return Ok(s),
            Ok(Some(Event::LoginFailed { code })) => bail!("{account}: login failed {code:?}"),
            Ok(Some(_)) => {}
            _ => bail!("{account}: no login"),
        }
    }
}

pub async fn run(args: ClusterArgs) -> Result<()> {
    let (_redis, redis_url) = match &args.redis {
        Some(u) => (None, u.clone()),
        None => {
            let (p, u) = start_redis()?;
            (Some(p), u)
        }
    };
    let prefix = format!("bench{}:", std::process::id());
    let node_args = |id: &str| {
        vec![
            "--redis".into(),
            redis_url.clone(),
            "--redis-prefix".into(),
            prefix.clone(),
            "--node-id".into(),
            id.into(),
            "--limit".into(),
            "user_messages_per_second=100000".into(),
            "--limit".into(),
            "logins_per_ip_per_second=0".into(),
        ]
    };
    let (_a, url_a) = start_node(&args.server_bin, &node_args("benchA"))?;
    let (_b, url_b) = start_node(&args.server_bin, &node_args("benchB"))?;
    let start = Instant::now();
    let warmup = Duration::from_secs(1);
    let same = Arc::new(Mutex::new(Samples::default()));
    let cross = Arc::new(Mutex::new(Samples::default()));
    let senders_total = args.pairs * 2;
    let interval = Duration::from_secs_f64(senders_total as f64 / args.rate.max(1) as f64);
    let end = start + warmup + Duration::from_secs(args.seconds) + Duration::from_secs(1);
    let mut tasks = vec![];
    // the Redis work of the measured window (after the warm-up, until the senders stop)
    let work_url = redis_url.clone();
    let window_end = end - Duration::from_secs(1);
    let work = tokio::spawn(async move {
        tokio::time::sleep_until((start + warmup).into()).await;
        let before = RedisWork::read(&work_url)?;
        tokio::time::sleep_until(window_end.into()).await;
        Ok::<_, anyhow::Error>((before, RedisWork::read(&work_url)?))
    });
    for kind in ["same", "cross"] {
        for i in 0..args.pairs {
            let sender_name = format!("{kind}s{i}");
            let receiver_name = format!("{kind}r{i}");
            let sender = login(&url_a, &sender_name).await?;
            let receiver_url = if kind == "same" { &url_a } else { &url_b };
            let mut receiver = login(receiver_url, &receiver_name).await?;
            let samples = if kind == "same" {
                same.clone()
            } else {
                cross.clone()
            };
            tasks.push(tokio::spawn(async move {
                while let Ok(Some(e)) =
                    tokio::time::timeout_at(end.into(), receiver.next_event()).await
                {
                    if let Event::MessageInstant { msg, .. } = e {
                        let now = start.elapsed();
                        if let Some(Ok(sent)) = msg.as_str().map(str::parse::<u64>) {
                            let sent = Duration::from_nanos(sent);
                            if sent > warmup {
                                samples.lock().await.add(now.saturating_sub(sent));
                            }
                        }
                    }
                }
            }));
            let stop = end - Duration::from_secs(1);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut sender = sender;
                while Instant::now() < stop {
                    tick.tick().await;
                    let t = start.elapsed().as_nanos().to_string();
                    let to = receiver_name.clone();
                    sender
                        .with(move |c, now| c.message_instant_send(&to, &t, now))
                        .await;
                    while sender.try_event().is_some() {}
                }
            }));
        }
    }
    for t in tasks {
        t.await?;
    }
    let mut same = same.lock().await.clone();
    let mut cross = cross.lock().await.clone();
    println!(
        "\np2p latency at {} msg/s for {} s, {} pairs each (loopback, 2 nodes + Redis)\n",
        args.rate, args.seconds, args.pairs
    );
    println!("| path | samples | p50 | p99 | p99.9 |");
    println!("|---|---|---|---|---|");
    for (name, s) in [("same node", &mut same), ("cross node", &mut cross)] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            s.len(),
            fmt_us(s.percentile(50.0)),
            fmt_us(s.percentile(99.0)),
            fmt_us(s.percentile(99.9))
        );
    }
    let ratio = cross.percentile(99.0) as f64 / same.percentile(99.0).max(1) as f64;
    println!("\ncross-node p99 / same-node p99 = {ratio:.2} (target ≤ 2.00)");
    let (before, after) = work.await??;
    let (scripts, commands, cpu, each) = after.since(&before);
    let msgs = (same.len() + cross.len()).max(1) as f64;
    println!(
        "\nRedis work per p2p message (sent, pushed and acknowledged; {} messages): {:.2} scripts, \
         {:.1} commands, {:.1} µs of Redis CPU",
        msgs,
        scripts as f64 / msgs,
        commands as f64 / msgs,
        cpu * 1e6 / msgs
    );
    let top: Vec<String> = each
        .iter()
        .take(12)
        .map(|(n, d)| format!("{n} {:.2}", *d as f64 / msgs))
        .collect();
    println!("per message, by command: {}", top.join(", "));
    other_work(&redis_url, &url_a, &url_b).await
}

/// Wait for the first event `want` matches (10 s at most).
async fn expect(
    s: &mut Session,
    what: &str,
    want: impl Fn(&Event<serde_json::Value>) -> bool,
) -> Result<()> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.next_event()).await {
            Ok(Some(e)) if want(&e) => return Ok(()),
            Ok(Some(_)) => {}
            _ => bail!("{what}: not seen"),
        }
    }
}

/// The Redis work of a login, a join and a channel message (per delivery), on the same two
/// nodes after the p2p run: each step alone between two readings of the Redis's counters (the
/// nodes' heartbeats and timer polls fall in the windows too and are counted).
async fn other_work(redis_url: &str, url_a: &str, url_b: &str) -> Result<()> {
    const LOGINS: usize = 200;
    const MEMBERS: usize = 20;
    const MESSAGES: usize = 200;
    let per = |before: &RedisWork, after: &RedisWork, n: usize, what: &str| {
        let (scripts, commands, cpu, each) = after.since(before);
        let n = n.max(1) as f64;
        let top: Vec<String> = each
            .iter()
            .take(8)
            .map(|(c, d)| format!("{c} {:.2}", *d as f64 / n))
            .collect();
        println!(
            "Redis work per {what}: {:.2} scripts, {:.1} commands, {:.1} µs of Redis CPU ({})",
            scripts as f64 / n,
            commands as f64 / n,
            cpu * 1e6 / n,
            top.join(", ")
        );
    };
    // logins, alternately on each node
    let before = RedisWork::read(redis_url)?;
    let mut sessions = vec![];
    for i in 0..LOGINS {
        let url = if i % 2 == 0 { url_a } else { url_b };
        sessions.push(login(url, &format!("login{i}")).await?);
    }
    let after = RedisWork::read(redis_url)?;
    per(&before, &after, LOGINS, "login");
    // the first MEMBERS of them join one channel
    let before = RedisWork::read(redis_url)?;
    for s in sessions.iter_mut().take(MEMBERS) {
        s.with(|c, now| c.channel_join("work", now)).await;
        expect(s, "joined", |e| matches!(e, Event::ChannelJoined { .. })).await?;
    }
    let after = RedisWork::read(redis_url)?;
    per(&before, &after, MEMBERS, "join");
    // channel messages from one member, each delivered to every member (on both nodes)
    let before = RedisWork::read(redis_url)?;
    for i in 0..MESSAGES {
        let text = format!("m{i}");
        sessions[0]
            .with(move |c, now| c.channel_send("work", &text, false, now))
            .await;
    }
    let last = format!("m{}", MESSAGES - 1);
    for s in sessions.iter_mut().take(MEMBERS) {
        expect(s, "the last channel message", |e| {
            matches!(e, Event::ChannelMessage { msg, .. } if msg.as_str() == Some(last.as_str()))
        })
        .await?;
    }
    let after = RedisWork::read(redis_url)?;
    per(
        &before,
        &after,
        MESSAGES * MEMBERS,
        &format!("channel message delivery ({MEMBERS} members on two nodes)"),
    );
    Ok(())
}
