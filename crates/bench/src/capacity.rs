//! Past one process: a cluster on this machine — several opensig-server nodes sharing one
//! redis-server, and as many load processes of this tool (each process is held to the
//! open-file limit, so one process per node) — holding logged-in idle sessions. Reported: the
//! sessions held, Redis memory per session and node memory per session.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cluster::start_redis;
use crate::systems::{self, Cores};
use crate::wire::{Proto, Sink, Target};

#[derive(clap::Args, Clone)]
pub struct CapacityArgs {
    /// Nodes (each with a load process of its own).
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Sessions per node (capped by the open-file limit).
    #[arg(long, default_value_t = 16_000)]
    per_node: usize,
    /// Fan-out first: channels × members, on one node and spread over two (0: skip).
    #[arg(long, default_value_t = 20)]
    fanout_channels: usize,
    /// Members per fan-out channel.
    #[arg(long, default_value_t = 50)]
    fanout_members: usize,
    /// Fan-out runs of each kind (interleaved); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// The load process: hold `count` sessions on `addr`, say `HELD <n>`, wait for stdin to close.
#[derive(clap::Args, Clone)]
pub struct HoldArgs {
    /// `host:port` of the node.
    #[arg(long)]
    addr: std::net::SocketAddr,
    /// Sessions.
    #[arg(long)]
    count: usize,
    /// Account name prefix.
    #[arg(long)]
    prefix: String,
}

pub async fn hold(a: HoldArgs) -> Result<()> {
    systems::raise_fd_limit();
    let target = Target {
        proto: Proto::Opensig,
        addr: a.addr,
        app: "bench".into(),
    };
    let names: Vec<String> = (0..a.count).map(|i| format!("{}{i}", a.prefix)).collect();
    let sink = Sink::new();
    let held = crate::scenarios::connect_all(&target, &names, &sink).await;
    let mut out = std::io::stdout();
    match &held {
        Ok(c) => writeln!(out, "HELD {}", c.len())?,
        Err(e) => writeln!(out, "FAILED {e:#}")?,
    }
    out.flush()?;
    // until the parent closes our stdin
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
    })
    .await;
    drop(held);
    Ok(())
}

/// `used_memory` of the Redis at `url` (an `INFO memory` over a plain socket).
fn redis_used_memory(url: &str) -> Result<u64> {
    use std::io::Read;
    let addr = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    let mut s = std::net::TcpStream::connect(&addr)?;
    s.write_all(b"INFO memory\r\n")?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = vec![0u8; 16384];
    let mut text = String::new();
    while !text.contains("used_memory:") || !text.ends_with("\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no used_memory in INFO")
}

pub async fn run(a: CapacityArgs, bin: &Path, cores: &Cores) -> Result<()> {
    let limit = systems::raise_fd_limit() as usize;
    let per_node = a.per_node.min(limit.saturating_sub(1000));
    let (_redis, redis_url) = start_redis()?;
    let prefix = format!("cap{}:", std::process::id());
    let mut nodes = vec![];
    for i in 0..a.nodes {
        let id = format!("cap{i}");
        nodes.push(systems::opensig(
            bin,
            cores,
            &[
                "--redis",
                &redis_url,
                "--redis-prefix",
                &prefix,
                "--node-id",
                &id,
            ],
        )?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // fan-out: every member on node 0, then members alternating between nodes 0 and 1
    // (senders on node 0): deliveries/s at saturation, runs interleaved
    let mut fan: [Vec<f64>; 2] = Default::default();
    if a.fanout_channels > 0 && nodes.len() >= 2 {
        let t = crate::scenarios::Timing {
            warmup: Duration::from_secs(2),
            measure: Duration::from_secs(5),
        };
        for run in 1..=a.runs.max(1) {
            for (k, spread) in [1usize, 2].into_iter().enumerate() {
                let targets: Vec<Target> =
                    nodes[..spread].iter().map(|n| n.target.clone()).collect();
                let f = crate::scenarios::fanout_setup_on(
                    &targets,
                    a.fanout_channels,
                    a.fanout_members,
                )
                .await?;
                let sat = crate::scenarios::fanout_saturation(&f, 100, 8, t).await?;
                eprintln!("[capacity] fan-out run {run}, members on {spread} node(s): {sat:.0} deliveries/s");
                fan[k].push(sat);
            }
        }
    }

    let redis_before = redis_used_memory(&redis_url)?;
    let rss_before: Vec<u64> = nodes.iter().map(|n| n.rss_kib()).collect();
    let me = std::env::current_exe()?;
    let t0 = Instant::now();
    let mut loads = vec![];
    for (i, n) in nodes.iter().enumerate() {
        let child = Command::new(&me)
            .args(["hold", "--addr", &n.target.addr.to_string()])
            .args([
                "--count",
                &per_node.to_string(),
                "--prefix",
                &format!("n{i}u"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting a load process")?;
        loads.push(child);
    }
    let mut held = 0;
    for (i, l) in loads.iter_mut().enumerate() {
        let mut line = String::new();
        BufReader::new(l.stdout.as_mut().expect("piped")).read_line(&mut line)?;
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["HELD", n] => {
                let n: usize = n.parse()?;
                eprintln!("[capacity] node {i}: {n} sessions held");
                held += n;
            }
            _ => bail!("load process {i}: {}", line.trim()),
        }
    }
    let setup = t0.elapsed();
    // let every node write its sessions and settle
    tokio::time::sleep(Duration::from_secs(3)).await;
    let redis_after = redis_used_memory(&redis_url)?;
    let rss_after: Vec<u64> = nodes.iter().map(|n| n.rss_kib()).collect();
    let node_bytes: u64 = rss_after
        .iter()
        .zip(&rss_before)
        .map(|(a, b)| a.saturating_sub(*b) * 1024)
        .sum();
    let redis_per = redis_after.saturating_sub(redis_before) as f64 / held.max(1) as f64;
    let node_per = node_bytes as f64 / held.max(1) as f64;
    println!(
        "\ncluster capacity: {} nodes + 1 redis-server + {} load processes on this machine\n",
        a.nodes, a.nodes
    );
    println!("| figure | value |\n|---|---|");
    println!(
        "| logged-in sessions held | {held} ({} per node, set up in {:.1} s) |",
        per_node,
        setup.as_secs_f64()
    );
    println!(
        "| Redis memory per session | {redis_per:.0} B (used_memory {} → {} MiB) |",
        redis_before >> 20,
        redis_after >> 20
    );
    println!(
        "| node memory per session | {node_per:.0} B (RSS of the {} nodes: {} → {} MiB) |",
        a.nodes,
        rss_before.iter().sum::<u64>() >> 10,
        rss_after.iter().sum::<u64>() >> 10
    );
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    if let (Some(one), Some(two)) = (med(&mut fan[0]), med(&mut fan[1])) {
        let range = |v: &[f64]| format!("{:.0}–{:.0}", v[0], v[v.len() - 1]);
        println!(
            "| fan-out deliveries/s ({}×{}, Redis store), members on one node | {one:.0} ({}) |",
            a.fanout_channels,
            a.fanout_members,
            range(&fan[0])
        );
        println!(
            "| the same, members on two nodes (half of them across) | {two:.0} ({}); {:.2}× one node |",
            range(&fan[1]),
            two / one
        );
    }
    for mut l in loads {
        drop(l.stdin.take());
        let _ = l.wait();
    }
    Ok(())
}
