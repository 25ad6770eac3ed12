//! opensig-bench: load scenarios against opensig-server and the systems it is compared with
//! (Socket.IO, NATS), run on demand (never part of the tests). Everything targets loopback and
//! stops by itself; servers are pinned to one core and the generator to another.
//!
//!   opensig-bench compare    every scenario on every system, one table with the ratios
//!   opensig-bench fanout | p2p | idle | login    one scenario on one system
//!   opensig-bench cluster    p2p latency, same node vs across nodes (2 nodes + Redis)
//!   opensig-bench storm      a node with thousands of sessions killed: all back on the other
//!   opensig-bench browser    callbacks/s in headless Chromium, original SDK vs opensig SDK
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};

mod browser;
mod capacity;
mod cluster;
mod peers;
mod presence;
mod scenarios;
mod script;
mod sink;
mod soak;
mod stats;
mod storm;
mod systems;
mod wire;

use scenarios::Timing;
use stats::fmt_us;
use systems::{Cores, Server};
use wire::Proto;

/// The sustainable p2p rate is the highest with p99 at most this (and ≥ 99% delivered).
const MAX_P99_US: u64 = 10_000;

/// App with a certificate, for the login scenario (tokens are verified).
pub const SECURE_APP: &str = "970ca35de60c44645bbae8a215061b33";
/// Its certificate.
pub const SECURE_CERT: &str = "5cfd2fd1755d40ecb72977518be15d3b";

#[derive(Parser)]
#[command(
    name = "opensig-bench",
    about = "Benchmarks for opensig-server, side by side with Socket.IO and NATS"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// The opensig-server binary.
    #[arg(long, global = true, default_value = "target/release/opensig-server")]
    server_bin: PathBuf,
    /// The peers folder (Socket.IO server).
    #[arg(long, global = true, default_value = "crates/bench/peers")]
    peers: PathBuf,
    /// CPUs for the server under test (`taskset -c`; "" = not pinned).
    #[arg(long, global = true, default_value = "1")]
    server_cores: String,
    /// CPUs for this load generator.
    #[arg(long, global = true, default_value = "0")]
    bench_cores: String,
    /// Seconds of load before measuring.
    #[arg(long, global = true, default_value_t = 2)]
    warmup: u64,
    /// Seconds measured.
    #[arg(long, global = true, default_value_t = 5)]
    seconds: u64,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum System {
    Opensig,
    Socketio,
    Nats,
}

impl System {
    fn proto(self) -> Proto {
        match self {
            System::Opensig => Proto::Opensig,
            System::Socketio => Proto::SocketIo,
            System::Nats => Proto::Nats,
        }
    }
}

#[derive(clap::Args, Clone)]
struct FanoutArgs {
    #[arg(long, value_enum, default_value = "opensig")]
    system: System,
    #[arg(long, default_value_t = 100)]
    channels: usize,
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Messages each sender keeps in flight at saturation.
    #[arg(long, default_value_t = 8)]
    window: u64,
    /// Channel messages per second (all channels together) for the latency run.
    #[arg(long, default_value_t = 500)]
    rate: u64,
}

#[derive(clap::Args, Clone)]
struct HistoryArgs {
    #[command(flatten)]
    fanout: FanoutCompare,
    /// Runs of each (interleaved); figures are their medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// On the Redis engine (a private redis-server; the CPU figure is the node's and Redis's).
    #[arg(long)]
    redis: bool,
}

#[derive(clap::Args, Clone)]
struct EnginesArgs {
    /// Messages handed to the page per round.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Measured rounds per engine and SDK (after one warm-up round).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Engines, comma-separated.
    #[arg(long, default_value = "chromium,firefox,webkit")]
    engines: String,
}

#[derive(clap::Args, Clone)]
struct WebhooksArgs {
    #[command(flatten)]
    fanout: FanoutCompare,
    /// Sessions of the p2p run.
    #[arg(long, default_value_t = 2_000)]
    sessions: usize,
    /// p2p messages per second (all pairs together).
    #[arg(long, default_value_t = 4_000)]
    p2p_rate: u64,
    /// Runs of each (interleaved); figures are their medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[derive(clap::Args, Clone)]
struct P2pArgs {
    #[arg(long, value_enum, default_value = "opensig")]
    system: System,
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Messages per second, all pairs together.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Also search the sustainable maximum rate.
    #[arg(long)]
    max: bool,
}

#[derive(clap::Args, Clone)]
struct IdleArgs {
    #[arg(long, value_enum, default_value = "opensig")]
    system: System,
    /// Sessions (capped by the open-file limit of this machine).
    #[arg(long, default_value_t = 50_000)]
    sessions: usize,
}

#[derive(clap::Args, Clone)]
struct LoginArgs {
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Logins outstanding at once.
    #[arg(long, default_value_t = 1000)]
    concurrency: usize,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every scenario on every system, printed as one table with opensig's ratios.
    Compare(CompareArgs),
    /// C channels × M members, one sender per channel: deliveries/s and latency.
    Fanout(FanoutArgs),
    /// N sessions, random pairs at a fixed rate: latency (and the sustainable maximum).
    P2p(P2pArgs),
    /// N logged-in sessions held open: server memory per session.
    Idle(IdleArgs),
    /// Logins per second with certificate + token verification (opensig).
    Login(LoginArgs),
    /// Fan-out on opensig with channel history on (the default) and off, interleaved:
    /// deliveries/s at saturation, server CPU per delivery, latency.
    History(HistoryArgs),
    /// Fan-out and p2p with webhooks on (every event type to a local receiver) and off,
    /// interleaved: deliveries/s, server CPU per message, webhook events/s and latency.
    Webhooks(WebhooksArgs),
    /// p2p latency on one node vs across two nodes sharing Redis.
    Cluster(cluster::ClusterArgs),
    /// A page in headless Chromium receiving a channel flood through the original SDK and
    /// through the opensig SDK: callbacks per second; and both SDKs' gzip size.
    Browser(BrowserArgs),
    /// The in-page browser benchmark in Chromium, Firefox and WebKit: main-thread µs per
    /// channel message, member join/leave and instant message for the original SDK, the
    /// opensig SDK and a bare WebSocket.
    Engines(EnginesArgs),
    /// Past one process: nodes + Redis + load processes on this machine holding sessions;
    /// sessions held, Redis and node memory per session.
    Capacity(capacity::CapacityArgs),
    /// (used by `capacity`: one load process holding sessions)
    #[command(hide = true)]
    Hold(capacity::HoldArgs),
    /// Presence subscriptions against the firehose: watchers of K accounts each while the
    /// accounts log in and out; server CPU per delivered change, memory per subscription,
    /// login → ONLINE latency.
    Presence(presence::PresenceArgs),
    /// Reconnect storm: N sessions on a node that is killed, all logging in again on the
    /// other node; time until the last is back, a bystander's latency meanwhile.
    Storm(storm::StormArgs),
    /// A bounded run with churn (logins, joins, leaves, messages, attributes, calls) at
    /// moderate load: server RSS and open fds must come back to baseline, no unexpected error.
    Soak(soak::SoakArgs),
    /// Where a p2p message's Redis CPU goes: the script that stores it cut after each of its
    /// steps, beside the floor of the three commands every design needs, on a private Redis.
    Script(script::ScriptArgs),
}

#[derive(clap::Args, Clone)]
struct BrowserArgs {
    /// Messages in the measured flood.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
}

#[derive(clap::Args, Clone)]
struct CompareArgs {
    #[command(flatten)]
    fanout: FanoutCompare,
    /// p2p sessions.
    #[arg(long, default_value_t = 10_000)]
    p2p_sessions: usize,
    /// p2p rate for latency and CPU per message (well below every system's saturation; the
    /// sustainable maximum is searched separately).
    #[arg(long, default_value_t = 2_000)]
    p2p_rate: u64,
    /// Idle sessions (capped by the open-file limit).
    #[arg(long, default_value_t = 50_000)]
    idle_sessions: usize,
    /// Logins.
    #[arg(long, default_value_t = 10_000)]
    logins: usize,
    /// Skip the sustainable-maximum search (faster).
    #[arg(long)]
    no_max: bool,
    /// Skip the browser scenario (needs node, Chromium and the built SDK).
    #[arg(long)]
    no_browser: bool,
    /// Messages in the browser flood.
    #[arg(long, default_value_t = 20_000)]
    browser_messages: usize,
    /// Runs of every scenario (interleaved across systems); figures are their medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[derive(clap::Args, Clone)]
struct FanoutCompare {
    #[arg(long, default_value_t = 100)]
    channels: usize,
    #[arg(long, default_value_t = 100)]
    members: usize,
    #[arg(long, default_value_t = 500)]
    fanout_rate: u64,
}

fn cores(c: &Common) -> Cores {
    Cores {
        server: c.server_cores.clone(),
        bench: c.bench_cores.clone(),
    }
}

fn timing(c: &Common) -> Timing {
    Timing {
        warmup: Duration::from_secs(c.warmup),
        measure: Duration::from_secs(c.seconds),
    }
}

fn start(system: System, c: &Common) -> Result<Server> {
    let cores = cores(c);
    match system {
        System::Opensig => systems::opensig(&c.server_bin, &cores, &[]),
        System::Socketio => systems::socketio(&c.peers, &cores),
        System::Nats => systems::nats(&cores),
    }
}

/// The number of sessions that fit in this machine's open-file limit.
fn fd_cap(n: usize) -> usize {
    let limit = systems::raise_fd_limit() as usize;
    n.min(limit.saturating_sub(1000))
}

async fn fanout(a: FanoutArgs, c: &Common) -> Result<(f64, scenarios::Latency)> {
    let server = start(a.system, c)?;
    fanout_on(&server, None, a, c).await
}

/// The fan-out scenario on a running server (and its Redis, whose CPU time then counts too).
async fn fanout_on(
    server: &Server,
    store_pid: Option<u32>,
    a: FanoutArgs,
    c: &Common,
) -> Result<(f64, scenarios::Latency)> {
    let f = scenarios::fanout_setup(&server.target, a.channels, a.members).await?;
    f.watch_cpu(server.pid());
    if let Some(pid) = store_pid {
        f.watch_store_cpu(pid);
    }
    let lat = scenarios::fanout_latency(&f, a.size, a.rate, timing(c)).await?;
    let cpu0 = systems::cpu_ticks(server.pid());
    let t0 = std::time::Instant::now();
    let sat = scenarios::fanout_saturation(&f, a.size, a.window, timing(c)).await?;
    let busy = systems::cpu_share(cpu0, systems::cpu_ticks(server.pid()), t0.elapsed());
    eprintln!(
        "[fanout] {}: server core {:.0}% busy at saturation",
        a.system.proto().name(),
        busy * 100.0
    );
    Ok((sat, lat))
}

/// Fan-out with the channels' history on (every message kept, the default) and off
/// (`channel_history_messages=0`), interleaved; a table of medians and ranges.
async fn history(a: HistoryArgs, c: &Common) -> Result<()> {
    let modes: [(&str, &[&str]); 2] = [
        ("history off", &["--limit", "channel_history_messages=0"]),
        ("history on (100 kept)", &[]),
    ];
    let mut sat: [Vec<f64>; 2] = Default::default();
    let mut lat: [Vec<scenarios::Latency>; 2] = Default::default();
    let n = a.runs.max(1);
    let redis = if a.redis {
        Some(cluster::start_redis()?)
    } else {
        None
    };
    for run in 1..=n {
        for (i, (name, extra)) in modes.iter().enumerate() {
            eprintln!("[history] run {run}/{n}: fan-out, {name}");
            let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            if let Some((_, url)) = &redis {
                let prefix = format!("bench-history-{run}-{i}:");
                args.extend([
                    "--redis".into(),
                    url.clone(),
                    "--redis-prefix".into(),
                    prefix,
                ]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let server = systems::opensig(&c.server_bin, &cores(c), &args)?;
            let args = FanoutArgs {
                system: System::Opensig,
                channels: a.fanout.channels,
                members: a.fanout.members,
                size: 100,
                window: 8,
                rate: a.fanout.fanout_rate,
            };
            let store_pid = redis.as_ref().map(|(p, _)| p.pid());
            let (s, l) = fanout_on(&server, store_pid, args, c).await?;
            eprintln!(
                "[history]   {s:.0} deliveries/s; {}; server CPU {:.2} µs/delivery",
                lat_line("latency", &l),
                l.cpu_us
            );
            sat[i].push(s);
            lat[i].push(l);
        }
    }
    let cpu = |i: usize| Spread::of(lat[i].iter().map(|l| l.cpu_us).collect());
    let p99 = |i: usize| Spread::of(lat[i].iter().map(|l| l.p99 as f64).collect());
    let sats = [Spread::of(sat[0].clone()), Spread::of(sat[1].clone())];
    let engine = if a.redis { "Redis" } else { "memory" };
    println!(
        "\nfan-out {}×{} on the {engine} engine, medians of {n} interleaved runs (range)\n",
        a.fanout.channels, a.fanout.members
    );
    println!("| | history off | history on | on ÷ off |");
    println!("|---|---|---|---|");
    let row =
        |what: &str, s: [Option<Spread>; 2], f: &dyn Fn(f64) -> String| off_on_row(what, s, f);
    row("deliveries/s at saturation", sats, &|v| format!("{v:.0}"));
    row(
        &format!(
            "server CPU µs per delivery at {} msg/s",
            a.fanout.fanout_rate
        ),
        [cpu(0), cpu(1)],
        &|v| format!("{v:.2}"),
    );
    row(
        &format!("p99 latency at {} msg/s", a.fanout.fanout_rate),
        [p99(0), p99(1)],
        &|v| fmt_us(v as u64),
    );
    Ok(())
}

/// Fan-out and p2p with webhooks off and on (one endpoint of the bench app taking every
/// event type, on a receiver in this process), interleaved; a table of medians and ranges.
async fn webhooks(a: WebhooksArgs, c: &Common) -> Result<()> {
    let (addr, sink) = sink::start().await?;
    let dir = std::env::temp_dir().join(format!("opensig-bench-webhooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("opensig.toml");
    std::fs::write(
        &file,
        format!(
            "[[webhooks]]\napp = \"bench\"\nname = \"bench\"\nurl = \"http://{addr}/hook\"\nsecret = \"bench-secret\"\n"
        ),
    )?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
    }
    let file_arg = file.to_string_lossy().to_string();
    let modes: [(&str, Vec<&str>); 2] = [
        ("webhooks off", vec![]),
        ("webhooks on (every event)", vec!["--config", &file_arg]),
    ];
    // per mode: fan-out saturation, fan-out CPU, p2p CPU; per "on" run: events/s, p50, p99
    let mut sat: [Vec<f64>; 2] = Default::default();
    let mut fan_cpu: [Vec<f64>; 2] = Default::default();
    let mut p2p_cpu: [Vec<f64>; 2] = Default::default();
    let (mut ev_rate, mut p50, mut p99) = (vec![], vec![], vec![]);
    let n = a.runs.max(1);
    for run in 1..=n {
        for (i, (name, extra)) in modes.iter().enumerate() {
            eprintln!("[webhooks] run {run}/{n}: {name}");
            sink.reset();
            let server = systems::opensig(&c.server_bin, &cores(c), extra)?;
            // fan-out at a fixed rate: CPU per delivery, and each webhook event's latency
            let f = scenarios::fanout_setup(&server.target, a.fanout.channels, a.fanout.members)
                .await?;
            f.watch_cpu(server.pid());
            let l = scenarios::fanout_latency(&f, 100, a.fanout.fanout_rate, timing(c)).await?;
            fan_cpu[i].push(l.cpu_us);
            if i == 1 {
                drain(&sink).await;
                let (q50, q99) = sink.percentiles();
                eprintln!(
                    "[webhooks]   webhook latency at {} msg/s: p50 {q50} ms, p99 {q99} ms",
                    a.fanout.fanout_rate
                );
                p50.push(q50 as f64);
                p99.push(q99 as f64);
                sink.reset();
            }
            // then at saturation: deliveries/s, and how fast the events follow
            let t0 = sink::now_ms();
            let sat_rate = scenarios::fanout_saturation(&f, 100, 8, timing(c)).await?;
            sat[i].push(sat_rate);
            drop(f);
            if i == 1 {
                let seen = drain(&sink).await;
                let last = sink.last_ms.load(std::sync::atomic::Ordering::SeqCst);
                let secs = (last.saturating_sub(t0)) as f64 / 1000.0;
                eprintln!(
                    "[webhooks]   {seen} events of the saturation run delivered within {secs:.1} s ({:.0}/s)",
                    seen as f64 / secs.max(0.001)
                );
                ev_rate.push(seen as f64 / secs.max(0.001));
            }
            let s = sat_rate;
            let p = scenarios::p2p_setup(&server.target, fd_cap(a.sessions)).await?;
            p.watch_cpu(server.pid());
            let pl = scenarios::p2p_rate(&p, 100, a.p2p_rate, timing(c)).await?;
            p2p_cpu[i].push(pl.cpu_us);
            eprintln!(
                "[webhooks]   fan-out {s:.0} deliveries/s, {:.2} µs CPU/delivery; p2p {:.2} µs CPU/message",
                l.cpu_us, pl.cpu_us
            );
            drop(p);
            drop(server);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "\nwebhooks off vs on (every event type to a local receiver), memory engine, medians of {n} interleaved runs (range)\n"
    );
    println!("| | webhooks off | webhooks on | on ÷ off |");
    println!("|---|---|---|---|");
    let row = |what: &str, v: &[Vec<f64>; 2], f: &dyn Fn(f64) -> String| {
        off_on_row(
            what,
            [Spread::of(v[0].clone()), Spread::of(v[1].clone())],
            f,
        )
    };
    let (ch, m) = (a.fanout.channels, a.fanout.members);
    row(
        &format!("fan-out {ch}×{m}: deliveries/s at saturation"),
        &sat,
        &|v| format!("{v:.0}"),
    );
    row(
        &format!(
            "fan-out: server CPU µs per delivery at {} msg/s",
            a.fanout.fanout_rate
        ),
        &fan_cpu,
        &|v| format!("{v:.2}"),
    );
    row(
        &format!("p2p: server CPU µs per message at {} msg/s", a.p2p_rate),
        &p2p_cpu,
        &|v| format!("{v:.2}"),
    );
    let one = |v: &Vec<f64>, f: &dyn Fn(f64) -> String| Spread::show(Spread::of(v.clone()), f);
    println!(
        "\nwebhook events/s one node delivered to the receiver after a saturation run (its events over the time to the last one): {}",
        one(&ev_rate, &|v| format!("{v:.0}"))
    );
    println!(
        "latency from the event to its delivery at {} msg/s: p50 {} ms, p99 {} ms",
        a.fanout.fanout_rate,
        one(&p50, &|v| format!("{v:.0}")),
        one(&p99, &|v| format!("{v:.0}"))
    );
    Ok(())
}

/// The in-page benchmark in every engine: a table of medians (ranges) per engine.
async fn engines(a: EnginesArgs, c: &Common) -> Result<()> {
    let server = start(System::Opensig, c)?;
    let root = std::env::current_dir()?;
    let out = browser::engines(&server, &root, a.messages, a.rounds, &a.engines).await?;
    println!(
        "\nmain-thread µs per event, identical frames handed to the page's socket ({} per \
         round), medians of {} rounds (range)\n",
        a.messages, a.rounds
    );
    println!("| engine | events | original SDK | opensig SDK | opensig ÷ original | bare WebSocket + JSON.parse |");
    println!("|---|---|---|---|---|---|");
    for engine in a.engines.split(',') {
        for (kind, what) in [
            ("channel", "channel messages"),
            ("members", "members joining and leaving"),
            ("peer", "instant messages"),
        ] {
            let get = |sdk: &str| {
                out.iter()
                    .find(|(e, k, s, _)| e == engine && k == kind && s == sdk)
                    .and_then(|(_, _, _, v)| Spread::of(v.clone()))
            };
            let (o, s, r) = (get("original"), get("opensig"), get("raw"));
            let f = |v: f64| format!("{v:.2}");
            let ratio_ = match (o, s) {
                (Some(o), Some(s)) => ratio(s.median, o.median),
                _ => "–".into(),
            };
            println!(
                "| {engine} | {what} | {} | {} | {ratio_} | {} |",
                Spread::show(o, f),
                Spread::show(s, f),
                Spread::show(r, f)
            );
        }
    }
    Ok(())
}

/// A table row of a figure measured off and on: both with their spread, and on ÷ off.
fn off_on_row(what: &str, s: [Option<Spread>; 2], f: &dyn Fn(f64) -> String) {
    let r = match (s[0], s[1]) {
        (Some(off), Some(on)) => ratio(on.median, off.median),
        _ => "–".into(),
    };
    println!(
        "| {what} | {} | {} | {r} |",
        Spread::show(s[0], f),
        Spread::show(s[1], f)
    );
}

/// Wait until the receiver has seen nothing new for 2 s; what it has seen.
async fn drain(sink: &sink::Sink) -> u64 {
    let mut seen = 0;
    let mut quiet = 0;
    while quiet < 20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sink.events.load(std::sync::atomic::Ordering::SeqCst);
        quiet = if now == seen { quiet + 1 } else { 0 };
        seen = now;
    }
    seen
}

async fn p2p(a: P2pArgs, c: &Common) -> Result<(scenarios::Latency, Option<u64>)> {
    let server = start(a.system, c)?;
    let p = scenarios::p2p_setup(&server.target, fd_cap(a.sessions)).await?;
    p.watch_cpu(server.pid());
    let cpu0 = systems::cpu_ticks(server.pid());
    let t0 = std::time::Instant::now();
    let lat = scenarios::p2p_rate(&p, a.size, a.rate, timing(c)).await?;
    let busy = systems::cpu_share(cpu0, systems::cpu_ticks(server.pid()), t0.elapsed());
    eprintln!(
        "[p2p] {}: server core {:.0}% busy at {} msg/s",
        a.system.proto().name(),
        busy * 100.0,
        a.rate
    );
    let max = if a.max {
        let t = Timing {
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(3),
        };
        Some(scenarios::p2p_max(&p, a.size, 2_500, MAX_P99_US, t).await?)
    } else {
        None
    };
    drop(server);
    Ok((lat, max))
}

async fn idle(a: IdleArgs, c: &Common) -> Result<(usize, f64)> {
    if a.system == System::Nats {
        bail!("the idle scenario compares opensig and Socket.IO (NATS has no sessions)");
    }
    let server = start(a.system, c)?;
    scenarios::idle(&server, fd_cap(a.sessions)).await
}

async fn login(a: LoginArgs, c: &Common) -> Result<f64> {
    let server = start(System::Opensig, c)?;
    let mut target = server.target.clone();
    target.app = SECURE_APP.into();
    scenarios::logins(&target, fd_cap(a.sessions), a.concurrency).await
}

async fn browser(messages: usize, c: &Common) -> Result<browser::BrowserFigures> {
    let server = start(System::Opensig, c)?;
    let root = std::env::current_dir()?;
    browser::run(&server, &root, &cores(c), messages, 100).await
}

fn lat_line(name: &str, l: &scenarios::Latency) -> String {
    format!(
        "{name}: p50 {} · p99 {} · p99.9 {} · delivered {:.1}%",
        fmt_us(l.p50),
        fmt_us(l.p99),
        fmt_us(l.p999),
        l.delivered * 100.0
    )
}

fn ratio(a: f64, b: f64) -> String {
    if a <= 0.0 || b <= 0.0 {
        "–".into()
    } else {
        format!("{:.2}×", a / b)
    }
}

/// Median and range of a figure over the runs that produced it.
#[derive(Clone, Copy, Default)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    runs: usize,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Option<Spread> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Spread {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
            runs: v.len(),
        })
    }

    fn show(s: Option<Spread>, f: impl Fn(f64) -> String) -> String {
        match s {
            None => "–".into(),
            Some(s) if s.runs == 1 => f(s.median),
            Some(s) => format!("{} ({}–{})", f(s.median), f(s.min), f(s.max)),
        }
    }
}

/// One figure of a latency run.
type Figure = fn(&scenarios::Latency) -> f64;

/// Everything `compare` measured for one system, run by run.
#[derive(Default)]
struct Runs {
    fanout_sat: Vec<f64>,
    fanout_lat: Vec<scenarios::Latency>,
    p2p_lat: Vec<scenarios::Latency>,
    p2p_max: Vec<f64>,
    idle: Vec<f64>,
    idle_n: usize,
}

impl Runs {
    fn lat(&self, p2p: bool, f: Figure) -> Option<Spread> {
        let v = if p2p { &self.p2p_lat } else { &self.fanout_lat };
        Spread::of(v.iter().map(f).filter(|x| *x > 0.0).collect())
    }
}

/// Run a scenario; a failure is reported and recorded, and the comparison goes on.
async fn attempt<T>(
    what: &str,
    failures: &mut Vec<String>,
    f: impl std::future::Future<Output = Result<T>>,
) -> Option<T> {
    match f.await {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("[compare] {what} failed: {e:#}");
            failures.push(format!("{what}: {e:#}"));
            None
        }
    }
}

async fn compare(a: CompareArgs, c: &Common) -> Result<()> {
    let root = std::env::current_dir()?;
    let ready = peers::prepare(&root, &c.peers, !a.no_browser);
    for p in &ready.problems {
        eprintln!("[compare] not ready: {p}");
    }
    let systems = [System::Opensig, System::Socketio, System::Nats];
    let available = [true, ready.socketio, ready.nats];
    let mut runs: [Runs; 3] = Default::default();
    let mut failures: Vec<String> = vec![];
    let mut logins_s = vec![];
    let n = a.runs.max(1);
    // runs interleaved (opensig, Socket.IO, NATS, opensig, …): a slow minute of the machine
    // falls on every system alike
    for run in 1..=n {
        for (i, s) in systems.iter().enumerate().filter(|(i, _)| available[*i]) {
            let name = s.proto().name();
            eprintln!("[compare] run {run}/{n}: fan-out on {name}");
            let args = FanoutArgs {
                system: *s,
                channels: a.fanout.channels,
                members: a.fanout.members,
                size: 100,
                window: 8,
                rate: a.fanout.fanout_rate,
            };
            if let Some((sat, lat)) = attempt(
                &format!("fan-out on {name}"),
                &mut failures,
                fanout(args, c),
            )
            .await
            {
                eprintln!(
                    "[compare]   {sat:.0} deliveries/s; {}; server CPU {:.2} µs/delivery",
                    lat_line("latency", &lat),
                    lat.cpu_us
                );
                runs[i].fanout_sat.push(sat);
                runs[i].fanout_lat.push(lat);
            }
            eprintln!("[compare] run {run}/{n}: p2p on {name}");
            let args = P2pArgs {
                system: *s,
                sessions: a.p2p_sessions,
                rate: a.p2p_rate,
                size: 100,
                max: !a.no_max,
            };
            if let Some((lat, max)) =
                attempt(&format!("p2p on {name}"), &mut failures, p2p(args, c)).await
            {
                eprintln!(
                    "[compare]   {}; server CPU {:.1} µs/message; max {max:?}",
                    lat_line("latency", &lat),
                    lat.cpu_us
                );
                runs[i].p2p_lat.push(lat);
                runs[i].p2p_max.extend(max.map(|m| m as f64));
            }
        }
        for (i, s) in [System::Opensig, System::Socketio].iter().enumerate() {
            if !available[i] {
                continue;
            }
            eprintln!("[compare] run {run}/{n}: idle on {}", s.proto().name());
            let args = IdleArgs {
                system: *s,
                sessions: a.idle_sessions,
            };
            if let Some((count, per)) = attempt("idle", &mut failures, idle(args, c)).await {
                eprintln!("[compare]   {count} sessions, {per:.0} bytes each");
                runs[i].idle.push(per);
                runs[i].idle_n = count;
            }
        }
        eprintln!("[compare] run {run}/{n}: logins on opensig");
        let args = LoginArgs {
            sessions: a.logins,
            concurrency: 1000,
        };
        logins_s.extend(attempt("logins", &mut failures, login(args, c)).await);
    }
    let web = if a.no_browser || !ready.browser {
        None
    } else {
        eprintln!("[compare] browser dispatch and SDK size");
        attempt("browser", &mut failures, browser(a.browser_messages, c)).await
    };

    // the tables: whatever was measured
    let count = |v: f64| format!("{v:.0}");
    let us = |v: f64| fmt_us(v as u64);
    let cpu = |v: f64| format!("{v:.2} µs");
    let rat = |x: Option<Spread>, y: Option<Spread>| match (x, y) {
        (Some(x), Some(y)) => ratio(x.median, y.median),
        _ => "–".into(),
    };
    let row = |name: String, v: [Option<Spread>; 3], f: &dyn Fn(f64) -> String, target: &str| {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {target} |",
            Spread::show(v[0], f),
            Spread::show(v[1], f),
            Spread::show(v[2], f),
            rat(v[0], v[1]),
            rat(v[0], v[2]),
        );
    };
    println!(
        "\nMedians of {n} interleaved runs (min–max). Ratios are opensig ÷ peer: above 1 is \
         better for rates, below 1 for latency, CPU and memory."
    );
    println!(
        "\n**Server CPU time per delivered message** (process CPU from /proc ÷ deliveries, at \
         a fixed load well below saturation) — the figure that does not move with the machine:\n"
    );
    println!(
        "| figure | opensig | Socket.IO | NATS | opensig ÷ Socket.IO | opensig ÷ NATS | target |"
    );
    println!("|---|---|---|---|---|---|---|");
    row(
        format!("p2p, CPU per message at {} msg/s", a.p2p_rate),
        [0, 1, 2].map(|i| runs[i].lat(true, |l| l.cpu_us)),
        &cpu,
        "≤ 1.0× NATS",
    );
    row(
        format!(
            "fan-out, CPU per delivery at {} msg/s × {} members",
            a.fanout.fanout_rate, a.fanout.members
        ),
        [0, 1, 2].map(|i| runs[i].lat(false, |l| l.cpu_us)),
        &cpu,
        "≤ 1.0× NATS",
    );
    println!("\n**Rates, latency and memory:**\n");
    println!(
        "| figure | opensig | Socket.IO | NATS | opensig ÷ Socket.IO | opensig ÷ NATS | target |"
    );
    println!("|---|---|---|---|---|---|---|");
    row(
        format!(
            "fan-out deliveries/s ({}×{}, saturation)",
            a.fanout.channels, a.fanout.members
        ),
        [0, 1, 2].map(|i| Spread::of(runs[i].fanout_sat.clone())),
        &count,
        "≥ 5× / ≥ 0.5×",
    );
    if !a.no_max {
        row(
            format!(
                "p2p sustainable msg/s (p99 ≤ {} ms, ≥ 99% delivered, to 10 %)",
                MAX_P99_US / 1000
            ),
            [0, 1, 2].map(|i| Spread::of(runs[i].p2p_max.clone())),
            &count,
            "≥ 1.0× NATS",
        );
    }
    let pcts: [(&str, Figure); 2] = [("p50", |l| l.p50 as f64), ("p99", |l| l.p99 as f64)];
    for (name, f) in pcts {
        row(
            format!("fan-out latency {name} at {} msg/s", a.fanout.fanout_rate),
            [0, 1, 2].map(|i| runs[i].lat(false, f)),
            &us,
            "",
        );
    }
    for (name, f) in pcts {
        row(
            format!(
                "p2p latency {name} at {} msg/s ({} sessions)",
                a.p2p_rate, a.p2p_sessions
            ),
            [0, 1, 2].map(|i| runs[i].lat(true, f)),
            &us,
            if name == "p99" {
                "≤ 2 ms and ≤ 1/3 of Socket.IO"
            } else {
                ""
            },
        );
    }
    row(
        format!("p2p delivered at {} msg/s (%)", a.p2p_rate),
        [0, 1, 2].map(|i| runs[i].lat(true, |l| l.delivered * 100.0)),
        &|v| format!("{v:.1}"),
        "",
    );
    row(
        format!(
            "idle memory per session ({} sessions), bytes",
            runs[0].idle_n
        ),
        [
            Spread::of(runs[0].idle.clone()),
            Spread::of(runs[1].idle.clone()),
            None,
        ],
        &count,
        "≤ 8 KiB and ≤ 1/3",
    );
    row(
        "logins/s (token verified)".into(),
        [Spread::of(logins_s), None, None],
        &count,
        "≥ 20,000",
    );
    if let Some(w) = web {
        print_browser(&w);
    }
    if !ready.problems.is_empty() || !failures.is_empty() {
        println!("\nNot measured:");
        for p in ready.problems.iter().chain(failures.iter()) {
            println!("- {p}");
        }
    }
    Ok(())
}

fn print_browser(w: &browser::BrowserFigures) {
    println!("\n| figure | opensig SDK | original SDK | opensig vs original | target | no SDK (bare WebSocket) |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| browser: channel callbacks/s, identical frames handed to the socket in the page (median of 5) | {:.0} | {:.0} | {} | ≥ 1.5× | {:.0} |",
        w.inject[1],
        w.inject[0],
        ratio(w.inject[1], w.inject[0]),
        w.inject[2]
    );
    println!(
        "| browser: main-thread µs per channel message (same) | {:.2} | {:.2} | {} | | {:.2} |",
        w.inject_us[1],
        w.inject_us[0],
        ratio(w.inject_us[1], w.inject_us[0]),
        w.inject_us[2]
    );
    println!(
        "| browser: channel callbacks/s from a live flood (secondary: Chromium's delivery, median of 5) | {:.0} | {:.0} | {} | | {:.0} |",
        w.opensig,
        w.original,
        ratio(w.opensig, w.original),
        w.raw
    );
    println!(
        "| SDK gzip bytes, npm package (wasm + JS) | {} | {} | {} | ≤ 1.0× | |",
        w.size_npm,
        w.size_original,
        ratio(w.size_npm as f64, w.size_original as f64)
    );
    println!(
        "| SDK gzip bytes, classic script (wasm inlined) | {} | {} | {} | ≤ 1.15× | |",
        w.size_classic,
        w.size_original,
        ratio(w.size_classic as f64, w.size_original as f64)
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let c = cli.common.clone();
    systems::pin_self(&cores(&c));
    match cli.cmd {
        Cmd::Compare(a) => compare(a, &c).await?,
        Cmd::History(a) => history(a, &c).await?,
        Cmd::Webhooks(a) => webhooks(a, &c).await?,
        Cmd::Engines(a) => engines(a, &c).await?,
        Cmd::Fanout(a) => {
            let (sat, lat) = fanout(a.clone(), &c).await?;
            println!(
                "{} fan-out {}×{}: {sat:.0} deliveries/s at saturation",
                a.system.proto().name(),
                a.channels,
                a.members
            );
            println!(
                "{}",
                lat_line(&format!("latency at {} msg/s", a.rate), &lat)
            );
        }
        Cmd::P2p(a) => {
            let (lat, max) = p2p(a.clone(), &c).await?;
            println!("{} p2p, {} sessions", a.system.proto().name(), a.sessions);
            println!(
                "{}",
                lat_line(&format!("latency at {} msg/s", a.rate), &lat)
            );
            if let Some(m) = max {
                println!("sustainable: {m} msg/s");
            }
        }
        Cmd::Idle(a) => {
            let (n, per) = idle(a.clone(), &c).await?;
            println!(
                "{} idle: {n} sessions, {per:.0} bytes of server memory each",
                a.system.proto().name()
            );
        }
        Cmd::Login(a) => {
            let r = login(a, &c).await?;
            println!("opensig: {r:.0} logins/s (token verified)");
        }
        Cmd::Cluster(a) => cluster::run(a).await?,
        Cmd::Browser(a) => print_browser(&browser(a.messages, &c).await?),
        Cmd::Soak(a) => soak::run(a, &c.server_bin, &cores(&c)).await?,
        Cmd::Script(a) => script::run(a)?,
        Cmd::Storm(a) => storm::run(a, &c.server_bin, &cores(&c)).await?,
        Cmd::Presence(a) => presence::run(a, &c.server_bin, &cores(&c)).await?,
        Cmd::Capacity(a) => capacity::run(a, &c.server_bin, &cores(&c)).await?,
        Cmd::Hold(a) => capacity::hold(a).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The adapters against live peers, briefly: whatever is installed here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn adapters_work_against_live_servers() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cores = Cores {
            server: String::new(),
            bench: String::new(),
        };
        let bin = root.join("target/debug/opensig-server");
        let mut servers = vec![];
        if bin.exists() {
            servers.push(systems::opensig(&bin, &cores, &[]).expect("opensig-server"));
        }
        if let Ok(s) = systems::nats(&cores) {
            servers.push(s);
        }
        if let Ok(s) = systems::socketio(&root.join("crates/bench/peers"), &cores) {
            servers.push(s);
        }
        assert!(
            !servers.is_empty(),
            "no system to test against (build opensig-server first)"
        );
        for s in &servers {
            let (rate, delivered) = scenarios::smoke(&s.target).await.expect("smoke");
            assert!(rate > 0, "{:?}: no fan-out deliveries", s.target.proto);
            assert!(
                delivered >= 95,
                "{:?}: only {delivered}% of p2p messages delivered",
                s.target.proto
            );
        }
    }
}
