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
                        if let Ok(sent) = msg.parse::<u64>() {
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
    Ok(())
}
