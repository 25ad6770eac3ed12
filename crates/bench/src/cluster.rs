//! p2p latency on one node vs across two nodes sharing Redis.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use opensig_protocol::client::{Config, Event, PeersOp};
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
    /// Run the nodes on a private Redis Cluster of three primaries (each with a replica)
    /// instead of one redis-server.
    #[arg(long)]
    redis_cluster: bool,
    /// Apps the pairs are spread over (an app's keys live on one primary of a cluster).
    #[arg(long, default_value_t = 1)]
    apps: usize,
    /// The nodes' `--redis-partitions`: units each app's channels are spread over.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
}

/// The Redis servers whose work is read: one, or a cluster's primaries.
pub(crate) struct Redises {
    /// `redis://` of each primary.
    pub primaries: Vec<String>,
    /// What the nodes are given (`redis://…` or `redis+cluster://…`).
    pub url: String,
}

impl Redises {
    /// The work of every primary, summed, and each primary's command count (scripts and the
    /// commands they ran).
    pub(crate) fn read(&self) -> Result<(RedisWork, Vec<u64>)> {
        let mut sum = RedisWork::default();
        let mut each = Vec::new();
        for u in &self.primaries {
            let w = RedisWork::read(u)?;
            each.push(
                w.calls
                    .iter()
                    .filter(|(n, _)| *n != "info")
                    .map(|(_, c)| c)
                    .sum(),
            );
            for (name, n) in w.calls {
                *sum.calls.entry(name).or_default() += n;
            }
            sum.cpu_secs += w.cpu_secs;
            sum.script_usec += w.script_usec;
            sum.used_memory += w.used_memory;
            for (name, u) in w.usec {
                *sum.usec.entry(name).or_default() += u;
            }
        }
        Ok((sum, each))
    }

    /// Keys held by each primary.
    fn keys(&self) -> Vec<u64> {
        self.primaries
            .iter()
            .map(|u| {
                Command::new("redis-cli")
                    .args(["-u", u, "DBSIZE"])
                    .output()
                    .ok()
                    .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }
}

/// Each primary's share of `counts`, as "a% / b% / c%".
fn shares(counts: &[u64]) -> String {
    let total: u64 = counts.iter().sum::<u64>().max(1);
    let parts: Vec<String> = counts
        .iter()
        .map(|c| format!("{:.0} %", *c as f64 * 100.0 / total as f64))
        .collect();
    parts.join(" / ")
}

/// A private Redis Cluster: three primaries with a replica each, in a folder of its own
/// (removed, and the servers stopped, when dropped).
pub(crate) struct RedisCluster {
    procs: Vec<Proc>,
    dir: PathBuf,
    pub redises: Redises,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.procs.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn start_redis_cluster() -> Result<RedisCluster> {
    let dir = std::env::temp_dir().join(format!("opensig-bench-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut ports = Vec::new();
    let mut procs = Vec::new();
    while ports.len() < 6 {
        let port = free_port()?;
        // the cluster bus listens on port + 10000
        if port >= 55_000 || std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() {
            continue;
        }
        let conf = format!("nodes-{port}.conf");
        let cluster = ["--cluster-enabled", "yes", "--cluster-config-file", &conf];
        procs.push(redis_server(port, &dir, &cluster)?);
        ports.push(port);
    }
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&hosts)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .output()
        .context("redis-cli --cluster create")?;
    if !out.status.success() {
        bail!(
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let cli = |port: u16, args: &[&str]| -> String {
        Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let t0 = Instant::now();
    while !ports
        .iter()
        .all(|p| cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
    {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("the Redis Cluster did not come up");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let primaries = ports
        .iter()
        .filter(|p| cli(**p, &["ROLE"]).starts_with("master"))
        .map(|p| format!("redis://127.0.0.1:{p}/"))
        .collect();
    Ok(RedisCluster {
        procs,
        dir,
        redises: Redises {
            primaries,
            url: format!("redis+cluster://{}/", hosts.join(",")),
        },
    })
}

/// What a Redis server has done so far: calls per command (commands scripts run included,
/// as Redis 7 counts them) and its CPU seconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct RedisWork {
    pub calls: std::collections::BTreeMap<String, u64>,
    pub cpu_secs: f64,
    /// Microseconds Redis spent running scripts (their commands included): the rest of its
    /// CPU time is other commands, reading requests, writing replies and pushes, its event loop.
    pub script_usec: u64,
    /// Microseconds spent in each command (a script's commands in their own and in its call).
    pub usec: std::collections::BTreeMap<String, u64>,
    /// Bytes the server holds for its data: `used_memory` less its replication backlog and
    /// its clients' buffers (both bounded, and growing in a run however much is stored).
    pub used_memory: u64,
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
        let mut used = 0i64;
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("cmdstat_") {
                let (name, stats) = rest.split_once(':').unwrap_or((rest, ""));
                let calls = stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let usec: u64 = stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("usec="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if is_script(name) {
                    w.script_usec += usec;
                }
                w.usec.insert(name.to_string(), usec);
                w.calls.insert(name.to_string(), calls);
            } else if let Some(v) = line.strip_prefix("used_memory:") {
                used += v.parse::<i64>().unwrap_or(0);
            } else if let Some(v) = ["mem_replication_backlog:", "mem_clients_normal:"]
                .iter()
                .chain(&["mem_clients_slaves:", "mem_aof_buffer:"])
                .find_map(|p| line.strip_prefix(p))
            {
                used -= v.parse::<i64>().unwrap_or(0);
            } else if let Some(v) = line
                .strip_prefix("used_cpu_sys:")
                .or_else(|| line.strip_prefix("used_cpu_user:"))
            {
                w.cpu_secs += v.parse::<f64>().unwrap_or(0.0);
            }
        }
        w.used_memory = used.max(0) as u64;
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
            if is_script(name) {
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

/// Whether `INFO commandstats`'s command `name` runs a script.
fn is_script(name: &str) -> bool {
    matches!(name, "evalsha" | "eval" | "evalsha_ro" | "eval_ro")
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

/// A redis-server on loopback `port`, in `dir`, keeping nothing on disk, with `extra`
/// arguments; up when this returns.
fn redis_server(port: u16, dir: &std::path::Path, extra: &[&str]) -> Result<Proc> {
    let child = Command::new("redis-server")
        .current_dir(dir)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .context("starting redis-server (install it with scripts/setup)")?;
    let p = Proc(child);
    wait_port(port)?;
    Ok(p)
}

pub(crate) fn start_redis() -> Result<(Proc, String)> {
    let port = free_port()?;
    let p = redis_server(port, &std::env::temp_dir(), &[])?;
    Ok((p, format!("redis://127.0.0.1:{port}/")))
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
    login_to("bench", url, account).await
}

async fn login_to(app: &str, url: &str, account: &str) -> Result<Session> {
    let mut cfg = Config::new(app, account, "");
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
    let mut _redis = None;
    let mut _cluster = None;
    let redises = match (&args.redis, args.redis_cluster) {
        (Some(u), _) => Redises {
            primaries: vec![u.clone()],
            url: u.clone(),
        },
        (None, false) => {
            let (p, u) = start_redis()?;
            _redis = Some(p);
            Redises {
                primaries: vec![u.clone()],
                url: u,
            }
        }
        (None, true) => {
            let c = start_redis_cluster()?;
            let r = Redises {
                primaries: c.redises.primaries.clone(),
                url: c.redises.url.clone(),
            };
            _cluster = Some(c);
            r
        }
    };
    let redis_url = redises.url.clone();
    let apps = args.apps.max(1);
    let prefix = format!("bench{}:", std::process::id());
    let node_args = |id: &str| {
        vec![
            "--redis".into(),
            redis_url.clone(),
            "--redis-prefix".into(),
            prefix.clone(),
            "--node-id".into(),
            id.into(),
            "--redis-partitions".into(),
            args.partitions.to_string(),
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
    let work_on = Redises {
        primaries: redises.primaries.clone(),
        url: redises.url.clone(),
    };
    let window_end = end - Duration::from_secs(1);
    let work = tokio::spawn(async move {
        tokio::time::sleep_until((start + warmup).into()).await;
        let before = work_on.read()?;
        tokio::time::sleep_until(window_end.into()).await;
        Ok::<_, anyhow::Error>((before, work_on.read()?))
    });
    for kind in ["same", "cross"] {
        for i in 0..args.pairs {
            let sender_name = format!("{kind}s{i}");
            let receiver_name = format!("{kind}r{i}");
            let app = format!("bench{}", i % apps);
            let sender = login_to(&app, &url_a, &sender_name).await?;
            let receiver_url = if kind == "same" { &url_a } else { &url_b };
            let mut receiver = login_to(&app, receiver_url, &receiver_name).await?;
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
    let ((before, before_each), (after, after_each)) = work.await??;
    let (scripts, commands, cpu, each) = after.since(&before);
    let msgs = (same.len() + cross.len()).max(1) as f64;
    println!(
        "\nRedis work per p2p message (sent, pushed and acknowledged; {} messages): {:.2} scripts, \
         {:.1} commands, {:.1} µs of Redis CPU ({:.1} µs of it running scripts)",
        msgs,
        scripts as f64 / msgs,
        commands as f64 / msgs,
        cpu * 1e6 / msgs,
        after.script_usec.saturating_sub(before.script_usec) as f64 / msgs
    );
    println!("per message, by command: {}", per_each(&each, 12, msgs, 2));
    let mut took: Vec<(String, u64)> = after
        .usec
        .iter()
        .map(|(n, u)| (n.clone(), u - before.usec.get(n).copied().unwrap_or(0)))
        .filter(|(n, u)| *u > 0 && n != "info")
        .collect();
    took.sort_by_key(|e| std::cmp::Reverse(e.1));
    println!(
        "µs per message, by command: {}",
        per_each(&took, 12, msgs, 1)
    );
    // what the acknowledged messages leave in Redis: each one's resend marker, kept for the
    // dedup window (the mailboxes were emptied by the recipients' acknowledgements)
    let kept = after.used_memory as f64 - before.used_memory as f64;
    println!(
        "Redis memory kept per p2p message once acknowledged: {:.0} B (its resend marker, for \
         dedup_window_secs: at R msg/s, R × 300 s × that; data {:.1} → {:.1} MiB)",
        kept / msgs,
        before.used_memory as f64 / 1048576.0,
        after.used_memory as f64 / 1048576.0
    );
    let cpu_us = cpu * 1e6 / msgs;
    if redises.primaries.len() > 1 {
        let done: Vec<u64> = after_each
            .iter()
            .zip(&before_each)
            .map(|(a, b)| a - b)
            .collect();
        println!(
            "each primary's share ({} apps): commands {}, keys {}",
            apps,
            shares(&done),
            shares(&redises.keys())
        );
    }
    // one Redis core runs every script of the apps it holds
    println!(
        "one primary's core at this cost: {:.0} p2p messages/s; N primaries with the apps spread \
         evenly: N × that (a single app stays on one primary)",
        1e6 / cpu_us.max(0.001)
    );
    if redises.primaries.len() > 1 {
        spread(&redises, &url_a, &url_b, args.partitions).await?;
    }
    other_work(&redises, &url_a, &url_b).await
}

/// Channels of `spread`, each with a member on either node.
const SPREAD_CHANNELS: usize = 24;
/// Messages sent in each of them.
const SPREAD_MESSAGES: usize = 25;

/// How one app's traffic spreads over a cluster's primaries: `SPREAD_CHANNELS` channels of
/// one app, a member of each on either node, `SPREAD_MESSAGES` messages in each, then as many
/// p2p messages from each channel's first member to its second; each primary's share of the
/// commands of each window.
async fn spread(redises: &Redises, url_a: &str, url_b: &str, partitions: u32) -> Result<()> {
    let mut pairs = vec![];
    for i in 0..SPREAD_CHANNELS {
        let name = format!("room{i}");
        let mut sender = login_to("spread", url_a, &format!("spreads{i}")).await?;
        let mut receiver = login_to("spread", url_b, &format!("spreadr{i}")).await?;
        for s in [&mut sender, &mut receiver] {
            let n = name.clone();
            s.with(move |c, now| c.channel_join(&n, now)).await;
            expect(s, "joined", |e| matches!(e, Event::ChannelJoined { .. })).await?;
        }
        pairs.push((name, sender, receiver));
    }
    let (before, before_each) = redises.read()?;
    for (name, sender, _) in pairs.iter_mut() {
        for m in 0..SPREAD_MESSAGES {
            let (n, text) = (name.clone(), format!("m{m}"));
            sender
                .with(move |c, now| c.channel_send(&n, &text, false, now))
                .await;
        }
    }
    let last = format!("m{}", SPREAD_MESSAGES - 1);
    for (_, _, receiver) in pairs.iter_mut() {
        expect(receiver, "the last channel message", |e| {
            matches!(e, Event::ChannelMessage { msg, .. } if msg.as_str() == Some(last.as_str()))
        })
        .await?;
    }
    let what = format!(
        "one app's channel messages ({SPREAD_CHANNELS} channels, a member on each node, \
         redis_partitions = {partitions})"
    );
    spread_report(&what, &before, &before_each, &redises.read()?);
    // the same accounts' p2p messages, each sender to its receiver on the other node: each
    // message is a step in its recipient's unit
    let (before, before_each) = redises.read()?;
    for (i, (_, sender, _)) in pairs.iter_mut().enumerate() {
        for m in 0..SPREAD_MESSAGES {
            let (to, text) = (format!("spreadr{i}"), format!("p{m}"));
            sender
                .with(move |c, now| c.message_instant_send(&to, &text, now))
                .await;
        }
    }
    let last = format!("p{}", SPREAD_MESSAGES - 1);
    for (_, _, receiver) in pairs.iter_mut() {
        expect(receiver, "the last p2p message", |e| {
            matches!(e, Event::MessageInstant { msg, .. } if msg.as_str() == Some(last.as_str()))
        })
        .await?;
    }
    let what = format!(
        "one app's p2p messages ({SPREAD_CHANNELS} receivers on the other node, \
         redis_partitions = {partitions})"
    );
    spread_report(&what, &before, &before_each, &redises.read()?);
    for (_, mut sender, mut receiver) in pairs {
        for s in [&mut sender, &mut receiver] {
            s.with(|c, now| c.logout(now)).await;
            expect(s, "logged out", |e| matches!(e, Event::Logout { .. })).await?;
        }
    }
    Ok(())
}

/// What the spread's `SPREAD_CHANNELS × SPREAD_MESSAGES` messages cost, from the readings
/// before them (summed, and each primary's commands) to `after`: each primary's share of the
/// commands, and the commands and Redis CPU per message.
fn spread_report(
    what: &str,
    before: &RedisWork,
    before_each: &[u64],
    after: &(RedisWork, Vec<u64>),
) {
    let (after, after_each) = after;
    let (_, commands, cpu, _) = after.since(before);
    let done: Vec<u64> = (after_each.iter().zip(before_each))
        .map(|(a, b)| a - b)
        .collect();
    let n = (SPREAD_CHANNELS * SPREAD_MESSAGES) as f64;
    println!(
        "{what}: each primary's share of the commands {}; {:.1} commands, {:.1} µs of Redis \
         CPU per message",
        shares(&done),
        commands as f64 / n,
        cpu * 1e6 / n
    );
}

/// The first `n` of `(name, count)`, each divided by `per`, with `digits` decimals.
fn per_each(items: &[(String, u64)], n: usize, per: f64, digits: usize) -> String {
    let shown: Vec<String> = items
        .iter()
        .take(n)
        .map(|(name, c)| format!("{name} {:.digits$}", *c as f64 / per))
        .collect();
    shown.join(", ")
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

/// The Redis work of a login, a join, a channel message (per delivery), a leave and a logout, on the same two
/// nodes after the p2p run: each step alone between two readings of the Redis's counters (the
/// nodes' heartbeats and timer polls fall in the windows too and are counted).
async fn other_work(redises: &Redises, url_a: &str, url_b: &str) -> Result<()> {
    let read = || redises.read().map(|r| r.0);
    const LOGINS: usize = 200;
    const MEMBERS: usize = 20;
    const MESSAGES: usize = 200;
    let per = |before: &RedisWork, after: &RedisWork, n: usize, what: &str| {
        let (scripts, commands, cpu, each) = after.since(before);
        let n = n.max(1) as f64;
        println!(
            "Redis work per {what}: {:.2} scripts, {:.1} commands, {:.1} µs of Redis CPU \
             ({:.1} µs running scripts; {})",
            scripts as f64 / n,
            commands as f64 / n,
            cpu * 1e6 / n,
            after.script_usec.saturating_sub(before.script_usec) as f64 / n,
            per_each(&each, 8, n, 2)
        );
    };
    // logins, alternately on each node
    let before = read()?;
    let mut sessions = vec![];
    for i in 0..LOGINS {
        let url = if i % 2 == 0 { url_a } else { url_b };
        sessions.push(login(url, &format!("login{i}")).await?);
    }
    let after = read()?;
    per(&before, &after, LOGINS, "login");
    // the first MEMBERS of them join one channel
    let before = read()?;
    let mut joined = vec![];
    for s in sessions.iter_mut().take(MEMBERS) {
        joined.push(s.with(|c, now| c.channel_join("work", now)).await);
        expect(s, "joined", |e| matches!(e, Event::ChannelJoined { .. })).await?;
    }
    let after = read()?;
    per(&before, &after, MEMBERS, "join");
    // channel messages from one member, each delivered to every member (on both nodes)
    let before = read()?;
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
    let after = read()?;
    per(
        &before,
        &after,
        MESSAGES * MEMBERS,
        &format!("channel message delivery ({MEMBERS} members on two nodes)"),
    );
    // and they leave it, one after the other (the last one empties it)
    let before = read()?;
    for (s, ch) in sessions.iter_mut().zip(joined) {
        s.with(move |c, now| c.channel_leave(ch, "work", now)).await;
        expect(s, "left", |e| matches!(e, Event::ChannelLeft { .. })).await?;
    }
    let after = read()?;
    per(&before, &after, MEMBERS, "leave");
    // and every session logs out, one after the other
    let before = read()?;
    for s in sessions.iter_mut() {
        s.with(|c, now| c.logout(now)).await;
        expect(s, "logged out", |e| matches!(e, Event::Logout { .. })).await?;
    }
    let after = read()?;
    per(&before, &after, LOGINS, "logout");
    // apps that do nothing: one session each, alternately on each node, then a quiet while,
    // read once what their logins started has settled (IDLE_SETTLE)
    let mut idle = vec![];
    for i in 0..IDLE_APPS {
        let url = if i % 2 == 0 { url_a } else { url_b };
        idle.push(login_to(&format!("idle{i}"), url, "someone").await?);
    }
    tokio::time::sleep(IDLE_SETTLE).await;
    let quiet = Duration::from_secs(20);
    let before = read()?;
    tokio::time::sleep(quiet).await;
    let after = read()?;
    let (scripts, commands, cpu, _) = after.since(&before);
    let secs = quiet.as_secs_f64();
    println!(
        "Redis work of {IDLE_APPS} idle apps (a session each, on two nodes): {:.1} scripts/s, \
         {:.1} commands/s, {:.2} ms of Redis CPU per second",
        scripts as f64 / secs,
        commands as f64 / secs,
        cpu * 1e3 / secs,
    );
    drop(idle);
    lookups(redises, url_a, url_b).await
}

/// Accounts of `lookups`' status query: as many as a session may ask about.
const QUERIED: usize = 512;
/// Channels of `lookups`' logout.
const LOGOUT_CHANNELS: usize = 100;
/// Times each of `lookups`' steps is measured.
const LOOKUP_RUNS: usize = 5;

/// Steps that ask the store about many accounts or channels at once (after `other_work`'s
/// other steps), each measured alone `LOOKUP_RUNS` times (wall time from the request to what shows it done; median and range)
/// with its Redis work: a status query of `QUERIED` accounts (`queryPeersOnlineStatus`, some
/// of them online), and a logout of a session in `LOGOUT_CHANNELS` channels until a member
/// of each on the other node heard it leave all of them.
async fn lookups(redises: &Redises, url_a: &str, url_b: &str) -> Result<()> {
    let read = || redises.read().map(|r| r.0);
    // the asker, and one account in 25 of those it asks about online (on either node)
    let mut asker = login(url_a, "asker").await?;
    let mut online = vec![];
    for i in 0..QUERIED.div_ceil(25) {
        let url = if i % 2 == 0 { url_a } else { url_b };
        online.push(login(url, &format!("online{i}")).await?);
    }
    // (wall times, Redis commands and CPU seconds summed over the runs)
    let report = |what: &str, mut took: Vec<Duration>, commands: u64, cpu: f64| {
        took.sort();
        let n = took.len().max(1) as f64;
        let us = |d: Duration| fmt_us(d.as_micros() as u64);
        println!(
            "{what}: {} (range {}–{}), {:.1} Redis commands and {:.0} µs of Redis CPU each",
            us(took[took.len() / 2]),
            us(took[0]),
            us(took[took.len() - 1]),
            commands as f64 / n,
            cpu * 1e6 / n,
        );
    };
    let accounts: Vec<String> = (0..QUERIED)
        .map(|i| match i % 25 {
            0 => format!("online{}", i / 25),
            _ => format!("nobody{i}"),
        })
        .collect();
    let asker = &mut asker;
    let mut took = vec![];
    let before = read()?;
    for _ in 0..LOOKUP_RUNS {
        let list = accounts.clone();
        let t = Instant::now();
        let req = asker
            .with(move |c, now| c.peers(PeersOp::Query, &list, now))
            .await;
        expect(
            asker,
            "the query's reply",
            |e| matches!(e, Event::Done { req: r, result: Ok(_) } if *r == req),
        )
        .await?;
        took.push(t.elapsed());
    }
    let (_, commands, cpu, _) = read()?.since(&before);
    report(
        &format!("a status query of {QUERIED} accounts"),
        took,
        commands,
        cpu,
    );
    // a member of every channel, on the other node, stays for all the runs
    let mut observer = login(url_b, "observer").await?;
    let names: Vec<String> = (0..LOGOUT_CHANNELS).map(|i| format!("many{i}")).collect();
    join_each(&mut observer, &names).await?;
    let (mut took, mut commands, mut cpu) = (vec![], 0, 0.0);
    for run in 0..LOOKUP_RUNS {
        let who = format!("leaver{run}");
        let mut leaver = login(url_a, &who).await?;
        join_each(&mut leaver, &names).await?;
        let before = read()?;
        let t = Instant::now();
        leaver.with(|c, now| c.logout(now)).await;
        for _ in 0..LOGOUT_CHANNELS {
            expect(
                &mut observer,
                "a leave",
                |e| matches!(e, Event::ChannelUserLeft { account, .. } if *account == who),
            )
            .await?;
        }
        took.push(t.elapsed());
        let (_, c, u, _) = read()?.since(&before);
        commands += c;
        cpu += u;
    }
    report(
        &format!(
            "a logout from {LOGOUT_CHANNELS} channels, until a member of each on the other \
             node heard it leave all of them"
        ),
        took,
        commands,
        cpu,
    );
    Ok(())
}

/// `s` joins each of `names`, one after the other.
async fn join_each(s: &mut Session, names: &[String]) -> Result<()> {
    for n in names {
        let n = n.clone();
        s.with(move |c, now| c.channel_join(&n, now)).await;
        expect(s, "joined", |e| matches!(e, Event::ChannelJoined { .. })).await?;
    }
    Ok(())
}

/// Apps of `other_work`'s idle reading.
const IDLE_APPS: usize = 500;
/// How long after their logins the idle apps' reading starts (past the logins' own timers;
/// the reading then spans the 30 s after the first asks, when earlier versions asked every
/// app again).
const IDLE_SETTLE: Duration = Duration::from_secs(20);
