//! The browser side: callbacks dispatched per second by a page in headless Chromium receiving
//! a channel flood through the original SDK and through the opensig SDK (same server, same
//! flood), and the gzip size of both SDKs. The page is driven by `browser/dispatch.mjs`
//! (Playwright, every non-loopback request blocked); the flood comes from this tool.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::systems::{Cores, Server};
use crate::wire::{Client, Sink};

/// What the browser run measured.
#[derive(Debug, Default, Clone)]
pub struct BrowserFigures {
    /// Callbacks per second with the original SDK (median of the rounds).
    pub original: f64,
    /// The same with the opensig SDK (classic script).
    pub opensig: f64,
    /// The same with no SDK (a bare WebSocket and `JSON.parse`): the page's ceiling.
    pub raw: f64,
    /// In-page: identical frames handed to the socket's handlers, callbacks/s (median of 5),
    /// for the original SDK, the opensig SDK and no SDK.
    pub inject: [f64; 3],
    /// The same as µs of the page's main thread per message.
    pub inject_us: [f64; 3],
    /// Gzip bytes: the original `AgoraSigSDK.min.js`.
    pub size_original: u64,
    /// Gzip bytes: the opensig npm package's runtime files (wasm + JS).
    pub size_npm: u64,
    /// Gzip bytes: the opensig classic script (wasm inlined).
    pub size_classic: u64,
}

/// Run the page for each SDK against `server`, flooding `count` messages of `size` bytes.
pub async fn run(
    server: &Server,
    root: &Path,
    cores: &Cores,
    count: usize,
    size: usize,
) -> Result<BrowserFigures> {
    let script = root.join("crates/bench/browser/dispatch.mjs");
    let channel = "flood";
    let sdks = ["original", "opensig", "raw"];
    let sink = Sink::new();
    let flooder = Client::connect(&server.target, "flooder", None, sink.clone()).await?;
    for sdk in sdks {
        flooder.join(&format!("{channel}-{sdk}")).await?;
    }

    // Chromium is not pinned: its browser, network and renderer processes would otherwise
    // compete for one core and the figure would measure that contention
    // (this tool pinned itself, and children inherit that: widen it again)
    let _ = cores;
    let args = [channel, &count.to_string(), &sdks.join(",")];
    let mut child = page_driver(server, root, &[], &script, &args)
        .context("starting node (the browser page driver)")?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut f = BrowserFigures::default();
    let mut runs: [Vec<f64>; 3] = Default::default();
    let mut inject: [Vec<f64>; 3] = Default::default();
    let mut inject_us: [Vec<f64>; 3] = Default::default();
    let mut done = false;
    while let Some(line) = tokio::time::timeout(Duration::from_secs(300), lines.next_line())
        .await
        .context("the browser page stopped answering")??
    {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["READY", _sdk, channel, _round, n] => {
                let n: u64 = n.parse()?;
                flood(&flooder, channel, &sink, n, size).await?;
            }
            ["RESULT", sdk, round, rate, received] => {
                eprintln!("[browser] {sdk} {round}: {rate} callbacks/s ({received} received)");
                if *round != "warmup" {
                    if let Some(i) = sdks.iter().position(|s| s == sdk) {
                        runs[i].push(rate.parse()?);
                    }
                }
            }
            ["INJECT", sdk, round, rate, us, received] => {
                eprintln!("[browser] in-page {sdk} {round}: {rate} callbacks/s, {us} µs each ({received} received)");
                if *round != "warmup" {
                    if let Some(i) = sdks.iter().position(|s| s == sdk) {
                        inject[i].push(rate.parse()?);
                        inject_us[i].push(us.parse()?);
                    }
                }
            }
            ["SIZE", name, bytes] => {
                let b: u64 = bytes.parse()?;
                match *name {
                    "original" => f.size_original = b,
                    "opensig-npm" => f.size_npm = b,
                    _ => f.size_classic = b,
                }
            }
            ["DONE", blocked] => {
                eprintln!("[browser] done; {blocked} non-loopback requests blocked");
                done = true;
            }
            _ => eprintln!("[browser] {line}"),
        }
    }
    let status = child.wait().await?;
    if !done || !status.success() {
        bail!("the browser page driver failed ({status})");
    }
    flooder.close().await;
    [f.original, f.opensig, f.raw] = runs.map(median);
    f.inject = inject.map(median);
    f.inject_us = inject_us.map(median);
    Ok(f)
}

/// `node script <ws-url> <app> args…` (behind `wrap`, e.g. `xvfb-run -a`) on every online
/// CPU, its stdout piped, the opensig classic script of this checkout named for it.
fn page_driver(
    server: &Server,
    root: &Path,
    wrap: &[&str],
    script: &Path,
    args: &[&str],
) -> std::io::Result<tokio::process::Child> {
    Command::new("taskset")
        .args(["-c", &online_cpus()])
        .args(wrap)
        .arg("node")
        .arg(script)
        .arg(format!("ws://{}/", server.target.addr))
        .arg(&server.target.app)
        .args(args)
        .env(
            "OPENSIG_CLASSIC",
            root.join("pkg/opensig-classic.js").as_os_str(),
        )
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

/// The online CPUs, not this process's affinity (the tool pins itself, and children inherit
/// that): a CPU list as taskset reads it, to let the browsers use every core again.
fn online_cpus() -> String {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "0".into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Send `n` channel messages, at most 256 in flight (the flooder sees its own messages).
async fn flood(c: &Client, channel: &str, sink: &Sink, n: u64, size: usize) -> Result<()> {
    let start = c.own.load(Ordering::Relaxed);
    let window = 256;
    let mut sent = 0;
    while sent < n {
        if sent < c.own.load(Ordering::Relaxed) - start + window {
            c.channel_send(channel, &sink.payload(&c.user, size))
                .await?;
            sent += 1;
        } else {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    Ok(())
}

/// One figure of the in-page benchmark: engine, event kind, SDK, the measured rounds' µs.
pub type EngineRounds = Vec<(String, String, String, Vec<f64>)>;

/// The in-page benchmark in each engine (`engines.mjs`): per engine, event kind (`channel`,
/// `members`, `peer`) and SDK, the measured rounds' main-thread µs per event.
pub async fn engines(
    server: &Server,
    root: &Path,
    count: usize,
    rounds: usize,
    engines: &str,
) -> Result<EngineRounds> {
    let script = root.join("crates/bench/browser/engines.mjs");
    // WebKit's MiniBrowser needs a display: a virtual one
    let args = [&count.to_string(), &rounds.to_string(), engines];
    let mut child = page_driver(server, root, &["xvfb-run", "-a"], &script, &args)
        .context("starting xvfb-run node (scripts/setup installs xvfb)")?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut out: EngineRounds = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
        .await
        .context("the engines benchmark stopped answering")??
    {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["ROUND", engine, sdk, round, us, received, kind] => {
                eprintln!("[engines] {engine} {kind} {sdk} round {round}: {us} µs per event ({received} received)");
                if received.parse::<usize>()? < count {
                    bail!("{engine} {kind} {sdk}: {received} of {count} events reached the app");
                }
                let us: f64 = us.parse()?;
                match out
                    .iter_mut()
                    .find(|(e, k, s, _)| e == engine && k == kind && s == sdk)
                {
                    Some((_, _, _, v)) => v.push(us),
                    None => out.push((
                        engine.to_string(),
                        kind.to_string(),
                        sdk.to_string(),
                        vec![us],
                    )),
                }
            }
            ["ENGINE", engine, ua @ ..] => eprintln!("[engines] {engine}: {}", ua.join(" ")),
            ["BLOCKED", engine, n] => {
                eprintln!("[engines] {engine}: {n} non-loopback requests refused")
            }
            _ => eprintln!("[engines] {line}"),
        }
    }
    let status = child.wait().await?;
    if !status.success() {
        bail!("the engines benchmark failed ({status})");
    }
    Ok(out)
}
