//! Starting and watching the servers under test: opensig-server, the Socket.IO peer
//! (`peers/socketio`), nats-server with its WebSocket listener. Each runs pinned to its own
//! core (`taskset`), away from the load generator.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::wire::{Proto, Target};

/// A server process, killed when dropped.
pub struct Server {
    child: Child,
    /// What clients connect to.
    pub target: Target,
    /// Where opensig-server serves `/metrics` (its own listener).
    pub metrics: Option<SocketAddr>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The process id (of the server itself, not of `taskset`, which `exec`s it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }
}

/// `VmRSS` of a process in KiB (0 if unknown).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// Where the load generator and the server run.
#[derive(Clone, Debug)]
pub struct Cores {
    /// CPU list for the server (`taskset -c`), empty = not pinned.
    pub server: String,
    /// CPU list for this process.
    pub bench: String,
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_port(port: u16, child: &mut Child) -> Result<()> {
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("server exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("nothing listens on port {port}")
}

fn pinned(cores: &Cores, program: &Path) -> Command {
    if cores.server.is_empty() {
        Command::new(program)
    } else {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(&cores.server).arg(program);
        c
    }
}

/// Pin this process (the load generator) to its cores.
pub fn pin_self(cores: &Cores) {
    if cores.bench.is_empty() {
        return;
    }
    let _ = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &cores.bench,
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status();
}

/// opensig-server, in memory, limits opened up for load (no per-user or per-channel rate
/// limit, large queues), with an app that needs tokens (for the login scenario).
pub fn opensig(bin: &Path, cores: &Cores, extra: &[&str]) -> Result<Server> {
    let port = free_port()?;
    let metrics_port = free_port()?;
    let mut child = pinned(cores, bin)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--www",
            "/nonexistent",
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .args([
            "--app",
            "bench",
            "--app",
            &format!("{}:{}", crate::SECURE_APP, crate::SECURE_CERT),
        ])
        .args([
            "--limit",
            "user_messages_per_second=0",
            "--limit",
            "channel_messages_per_second=0",
            "--limit",
            "outbound_queue=65536",
            "--limit",
            "mailbox_max_messages=100000",
            // every bench client comes from loopback
            "--limit",
            "connections_per_ip=0",
            "--limit",
            "logins_per_ip_per_second=0",
            "--limit",
            "max_sessions=0",
            "--limit",
            "joins_per_second=0",
            "--limit",
            "offline_mail_per_sender_per_hour=0",
        ])
        .args(extra)
        .env("OPENSIG_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (cargo build --release -p opensig-server)",
                bin.display()
            )
        })?;
    wait_port(port, &mut child)?;
    Ok(Server {
        child,
        target: Target {
            proto: Proto::Opensig,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            app: "bench".into(),
        },
        metrics: Some(SocketAddr::from(([127, 0, 0, 1], metrics_port))),
    })
}

/// The Socket.IO 4.8 room server in `peers/socketio` (its `npm install` is done by the caller).
pub fn socketio(peers: &Path, cores: &Cores) -> Result<Server> {
    let dir = peers.join("socketio");
    if !dir.join("node_modules").join("socket.io").exists() {
        bail!(
            "Socket.IO is not installed: cd {} && npm install",
            dir.display()
        );
    }
    let node = which("node")?;
    let mut child = pinned(cores, &node)
        .arg(dir.join("server.js"))
        .arg("0")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the Socket.IO peer")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    let port: u16 = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("Socket.IO peer said {line:?}"))?;
    wait_port(port, &mut child)?;
    Ok(Server {
        child,
        target: Target {
            proto: Proto::SocketIo,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            app: String::new(),
        },
        metrics: None,
    })
}

/// nats-server with a plain WebSocket listener on loopback.
pub fn nats(cores: &Cores) -> Result<Server> {
    let port = free_port()?;
    let ws = free_port()?;
    let conf = std::env::temp_dir().join(format!("opensig-bench-nats-{}.conf", std::process::id()));
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\nmax_payload: 1MB\nmax_pending: 256MB\nwrite_deadline: \"30s\"\n\
             websocket {{\n  listen: \"127.0.0.1:{ws}\"\n  no_tls: true\n  compression: false\n}}\n"
        ),
    )?;
    let bin = which("nats-server").context("nats-server (Debian package nats-server)")?;
    let mut child = pinned(cores, &bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nats-server")?;
    wait_port(ws, &mut child)?;
    Ok(Server {
        child,
        target: Target {
            proto: Proto::Nats,
            addr: SocketAddr::from(([127, 0, 0, 1], ws)),
            app: String::new(),
        },
        metrics: None,
    })
}

pub fn which(name: &str) -> Result<PathBuf> {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/bin"])
    {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{name} not found")
}

/// Raise this process's open-file limit as far as allowed; returns the limit.
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// CPU time (user + system) of a process in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// Share of one core used between two `cpu_ticks` readings `elapsed` apart.
pub fn cpu_share(before: u64, after: u64, elapsed: Duration) -> f64 {
    let hz = 100.0; // USER_HZ on Linux
    (after.saturating_sub(before) as f64 / hz) / elapsed.as_secs_f64()
}
