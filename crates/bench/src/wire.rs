//! Lean load-generator clients for the three systems compared, each speaking its protocol the
//! way that system's own browser clients do (over WebSocket): opensig (the AgoraSig 1.4 web
//! protocol, frames built with `opensig-protocol`), Socket.IO (Engine.IO v4), NATS (its text
//! protocol over WebSocket). Payloads carry a `~T<nanos>~` marker; receivers find markers in
//! what arrives, without decoding whole frames, and record latency and deliveries.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use opensig_protocol::client::frames::{self, Body};
use opensig_protocol::json::quote;
use opensig_protocol::names::{call, fixed, msgtype};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{oneshot, Mutex};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Which system a client talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// opensig-server.
    Opensig,
    /// A Socket.IO 4 server (`peers/socketio`).
    SocketIo,
    /// nats-server's WebSocket listener.
    Nats,
}

impl Proto {
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Opensig => "opensig",
            Proto::SocketIo => "Socket.IO",
            Proto::Nats => "NATS",
        }
    }
}

/// What every receiver of a run reports into.
pub struct Sink {
    /// The run's clock.
    pub start: Instant,
    /// Latency of every marker received while measuring.
    pub hist: crate::stats::Histogram,
    /// Markers received while measuring.
    pub deliveries: AtomicU64,
    /// Whether markers count (false during warm-up).
    pub measuring: AtomicBool,
    /// Markers received at all.
    pub seen: AtomicU64,
    /// The server process whose CPU time a measurement counts (0: none).
    pub server_pid: std::sync::atomic::AtomicU32,
    /// The server's CPU clock ticks during the last measurement.
    pub server_ticks: AtomicU64,
    /// A second process counted with the server (its Redis; 0: none).
    pub store_pid: std::sync::atomic::AtomicU32,
}

impl Sink {
    /// A sink whose clock starts now.
    pub fn new() -> Arc<Sink> {
        Arc::new(Sink {
            start: Instant::now(),
            hist: crate::stats::Histogram::default(),
            deliveries: AtomicU64::new(0),
            measuring: AtomicBool::new(false),
            seen: AtomicU64::new(0),
            server_pid: std::sync::atomic::AtomicU32::new(0),
            server_ticks: AtomicU64::new(0),
            store_pid: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// A payload of `size` bytes whose marker is now, naming its sender.
    pub fn payload(&self, sender: &str, size: usize) -> String {
        let mut p = format!("~T{}~S{sender}~", self.start.elapsed().as_nanos());
        while p.len() < size {
            p.push('x');
        }
        p
    }

    /// Record every marker in `text`; returns how many there were.
    pub fn scan(&self, text: &str) -> u64 {
        let now = self.start.elapsed().as_nanos() as u64;
        let measuring = self.measuring.load(Ordering::Relaxed);
        let mut n = 0;
        let mut rest = text;
        while let Some(i) = rest.find("~T") {
            rest = &rest[i + 2..];
            let end = rest.find('~').unwrap_or(rest.len());
            if let Ok(sent) = rest[..end].parse::<u64>() {
                n += 1;
                if measuring {
                    self.hist.record_us(now.saturating_sub(sent) / 1000);
                }
            }
            rest = &rest[end..];
        }
        if n > 0 {
            self.seen.fetch_add(n, Ordering::Relaxed);
            if measuring {
                self.deliveries.fetch_add(n, Ordering::Relaxed);
            }
        }
        n
    }
}

/// A load-generator WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// One connection of the load generator.
pub struct Client {
    proto: Proto,
    /// The user name.
    pub user: String,
    sink: Arc<Mutex<SplitSink<Ws, Message>>>,
    line: String,
    next_id: AtomicU64,
    waiters: Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<String>>>>,
    /// Messages this client's own sends produced for itself (echo), for closed-loop senders.
    pub own: Arc<AtomicU64>,
}

/// How to connect.
#[derive(Clone, Debug)]
pub struct Target {
    /// System.
    pub proto: Proto,
    /// Server address.
    pub addr: SocketAddr,
    /// App id (opensig).
    pub app: String,
}

async fn tcp(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let s = socket.connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Open a WebSocket (no protocol handshake yet): for measuring logins separately.
pub async fn open(
    target: &Target,
    user: &str,
    source: Option<IpAddr>,
) -> Result<(SplitSink<Ws, Message>, SplitStream<Ws>)> {
    let url = match target.proto {
        Proto::Opensig => format!("ws://{}/", target.addr),
        Proto::SocketIo => format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket&user={user}",
            target.addr
        ),
        Proto::Nats => format!("ws://{}/", target.addr),
    };
    let stream = tcp(target.addr, source).await?;
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(8192)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .context("websocket handshake")?;
    Ok(ws.split())
}

/// The opensig login frame (the SDK's own builder).
pub fn login_frame(app: &str, user: &str, token: &str) -> String {
    frames::login(app, user, token)
}

/// The `line` of a successful `login_ret` frame, or the error.
pub fn login_line(frame: &str) -> Result<String> {
    let v: serde_json::Value = serde_json::from_str(frame)?;
    if v[0] != "login_ret" {
        bail!("not a login_ret: {frame}");
    }
    if v[1][0] != "" {
        bail!("login refused: {}", v[1][0]);
    }
    let body: serde_json::Value = serde_json::from_str(v[1][1].as_str().unwrap_or("{}"))?;
    Ok(body["line"].as_str().unwrap_or_default().to_string())
}

async fn next_text(stream: &mut SplitStream<Ws>) -> Result<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.to_string()),
            Ok(Some(Ok(Message::Binary(b)))) => return Ok(String::from_utf8_lossy(&b).into_owned()),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => bail!("read: {e}"),
            Ok(None) => bail!("closed during the handshake"),
            Err(_) => bail!("handshake timed out"),
        }
    }
}

impl Client {
    /// Connect and complete the system's handshake (opensig: log in).
    pub async fn connect(
        target: &Target,
        user: &str,
        source: Option<IpAddr>,
        sink: Arc<Sink>,
    ) -> Result<Client> {
        let (mut tx, mut rx) = open(target, user, source).await?;
        let mut line = String::new();
        match target.proto {
            Proto::Opensig => {
                tx.send(Message::text(login_frame(&target.app, user, "")))
                    .await?;
                line = login_line(&next_text(&mut rx).await?)?;
            }
            Proto::SocketIo => {
                let open = next_text(&mut rx).await?;
                if !open.starts_with('0') {
                    bail!("unexpected Engine.IO open packet {open}");
                }
                tx.send(Message::text("40")).await?;
                loop {
                    let t = next_text(&mut rx).await?;
                    if t.starts_with("40") {
                        break;
                    }
                }
            }
            Proto::Nats => {
                let info = next_text(&mut rx).await?;
                if !info.starts_with("INFO") {
                    bail!("unexpected NATS greeting {info}");
                }
                let connect = "CONNECT {\"verbose\":false,\"pedantic\":false,\"lang\":\"rust\",\"protocol\":1}\r\nPING\r\n";
                tx.send(Message::binary(connect.as_bytes().to_vec()))
                    .await?;
                loop {
                    let t = next_text(&mut rx).await?;
                    if t.contains("PONG") {
                        break;
                    }
                }
            }
        }
        let client = Client {
            proto: target.proto,
            user: user.to_string(),
            sink: Arc::new(Mutex::new(tx)),
            line,
            next_id: AtomicU64::new(1),
            waiters: Arc::new(std::sync::Mutex::new(HashMap::new())),
            own: Arc::new(AtomicU64::new(0)),
        };
        tokio::spawn(read_loop(
            target.proto,
            user.to_string(),
            rx,
            client.sink.clone(),
            client.waiters.clone(),
            sink,
            client.own.clone(),
            client.line.clone(),
        ));
        Ok(client)
    }

    async fn send(&self, frame: String) -> Result<()> {
        let msg = match self.proto {
            Proto::Nats => Message::binary(frame.into_bytes()),
            _ => Message::text(frame),
        };
        self.sink
            .lock()
            .await
            .send(msg)
            .await
            .map_err(|e| anyhow!("send: {e}"))
    }

    fn call2(&self, name: &str, id: u64, args: &str) -> String {
        frames::call2(name, id, args, &self.line)
    }

    /// Send and wait for the matching reply (setup steps).
    async fn request(&self, frame_for: impl FnOnce(u64) -> String) -> Result<String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap().insert(id, tx);
        self.send(frame_for(id)).await?;
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .map_err(|_| anyhow!("{}: no reply", self.user))?
            .map_err(|_| anyhow!("{}: connection ended", self.user))
    }

    /// Join a channel (room, subject) and wait until it took effect.
    pub async fn join(&self, channel: &str) -> Result<()> {
        match self.proto {
            Proto::Opensig => {
                let args = Body::new().s("name", channel).0;
                let r = self
                    .request(|id| self.call2(call::CHANNEL_JOIN, id, &args))
                    .await?;
                if !r.is_empty() {
                    bail!("join refused: {r}");
                }
            }
            Proto::SocketIo => {
                self.request(|id| format!("42{id}[\"join\",{}]", quote(channel)))
                    .await?;
            }
            Proto::Nats => {
                let sid = self.next_id.fetch_add(1, Ordering::Relaxed);
                self.request(|_| format!("SUB ch.{channel} {sid}\r\nPING\r\n"))
                    .await?;
            }
        }
        Ok(())
    }

    /// Subscribe to one's own direct messages (NATS only; the others route by session).
    pub async fn listen_direct(&self) -> Result<()> {
        if self.proto == Proto::Nats {
            let sid = self.next_id.fetch_add(1, Ordering::Relaxed);
            let user = self.user.clone();
            self.request(|_| format!("SUB u.{user} {sid}\r\nPING\r\n"))
                .await?;
        }
        Ok(())
    }

    /// Send a message to a channel (fire and forget).
    pub async fn channel_send(&self, channel: &str, payload: &str) -> Result<()> {
        let frame = match self.proto {
            Proto::Opensig => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let args = Body::new().s("name", channel).s("msg", payload).0;
                self.call2(call::CHANNEL_SENDMSG, id, &args)
            }
            Proto::SocketIo => format!("42[\"msg\",{},{}]", quote(channel), quote(payload)),
            Proto::Nats => format!("PUB ch.{channel} {}\r\n{payload}\r\n", payload.len()),
        };
        self.send(frame).await
    }

    /// Send a direct message (fire and forget).
    pub async fn direct_send(&self, to: &str, payload: &str) -> Result<()> {
        let frame = match self.proto {
            Proto::Opensig => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let args = Body::new()
                    .s("peer", to)
                    .s("flag", fixed::DEFAULT_MSG_FLAG)
                    .s("t", msgtype::INSTANT)
                    .s("content", payload)
                    .0;
                self.call2(call::USER_SENDMSG, id, &args)
            }
            Proto::SocketIo => format!("42[\"dm\",{},{}]", quote(to), quote(payload)),
            Proto::Nats => format!("PUB u.{to} {}\r\n{payload}\r\n", payload.len()),
        };
        self.send(frame).await
    }

    /// Close the connection.
    pub async fn close(&self) {
        let _ = self.sink.lock().await.close().await;
    }
}

/// Reads one connection: markers into the sink, keepalives answered, replies to waiters,
/// and (opensig) the mailbox acknowledged about once a second, as a web client does.
#[allow(clippy::too_many_arguments)]
async fn read_loop(
    proto: Proto,
    user: String,
    mut rx: SplitStream<Ws>,
    tx: Arc<Mutex<SplitSink<Ws, Message>>>,
    waiters: Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<String>>>>,
    sink: Arc<Sink>,
    own: Arc<AtomicU64>,
    line: String,
) {
    let mut max_version = 0u64;
    let mut acked = 0u64;
    let mut ack_id = 1u64 << 40;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let own_marker = format!("~S{user}~");
    let mut nats_buf = String::new();
    loop {
        let msg = tokio::select! {
            m = rx.next() => match m {
                Some(Ok(m)) => m,
                _ => return,
            },
            _ = tick.tick() => {
                if proto == Proto::Opensig && max_version > acked {
                    acked = max_version;
                    ack_id += 1;
                    let args = Body::new().n("ver_clear", acked).n("max", 30).0;
                    let f = frames::call2(call::USER_GETMSG, ack_id, &args, &line);
                    let _ = tx.lock().await.send(Message::text(f)).await;
                }
                continue;
            }
        };
        let text = match msg {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => match proto {
                Proto::Opensig => match opensig_protocol::zlib::decompress(&b, 16 << 20) {
                    Ok(t) => t,
                    Err(_) => continue,
                },
                _ => String::from_utf8_lossy(&b).into_owned(),
            },
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Close(_) => return,
        };
        match proto {
            Proto::Opensig => {
                let n = sink.scan(&text);
                if n > 0 {
                    own.fetch_add(text.matches(&own_marker).count() as u64, Ordering::Relaxed);
                }
                // mailbox versions to acknowledge
                let mut rest = text.as_str();
                while let Some(i) = rest.find("\"recvmsg\",\"[") {
                    rest = &rest[i + 12..];
                    let end = rest.find(',').unwrap_or(0);
                    if let Ok(v) = rest[..end].parse::<u64>() {
                        max_version = max_version.max(v);
                    }
                }
                // replies to setup requests
                if text.contains("call2-ret") {
                    complete_opensig(&text, &waiters);
                }
            }
            Proto::SocketIo => {
                if text == "2" {
                    let _ = tx.lock().await.send(Message::text("3")).await;
                    continue;
                }
                if sink.scan(&text) > 0 {
                    own.fetch_add(text.matches(&own_marker).count() as u64, Ordering::Relaxed);
                }
                if let Some(rest) = text.strip_prefix("43") {
                    let end = rest.find('[').unwrap_or(rest.len());
                    if let Ok(id) = rest[..end].parse::<u64>() {
                        if let Some(w) = waiters.lock().unwrap().remove(&id) {
                            let _ = w.send(String::new());
                        }
                    }
                }
            }
            Proto::Nats => {
                nats_buf.push_str(&text);
                if sink.scan(&text) > 0 {
                    own.fetch_add(text.matches(&own_marker).count() as u64, Ordering::Relaxed);
                }
                // control lines only (payloads are scanned above); keep the tail of a partial line
                let mut pongs = 0;
                let mut pings = 0;
                for l in nats_buf.split("\r\n") {
                    if l == "PONG" {
                        pongs += 1;
                    } else if l == "PING" {
                        pings += 1;
                    }
                }
                nats_buf = match nats_buf.rfind("\r\n") {
                    Some(i) => nats_buf[i + 2..].to_string(),
                    None => nats_buf,
                };
                for _ in 0..pings {
                    let _ = tx
                        .lock()
                        .await
                        .send(Message::binary(b"PONG\r\n".to_vec()))
                        .await;
                }
                for _ in 0..pongs {
                    let first = waiters.lock().unwrap().keys().min().copied();
                    if let Some(id) = first {
                        if let Some(w) = waiters.lock().unwrap().remove(&id) {
                            let _ = w.send(String::new());
                        }
                    }
                }
            }
        }
    }
}

fn complete_opensig(text: &str, waiters: &std::sync::Mutex<HashMap<u64, oneshot::Sender<String>>>) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let frames: Vec<&serde_json::Value> = if v[0] == "multi" {
        v[1].as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    } else {
        vec![&v]
    };
    for f in frames {
        if f[0] == "call2-ret" {
            if let Some(id) = f[1][0].as_u64() {
                if let Some(w) = waiters.lock().unwrap().remove(&id) {
                    let _ = w.send(f[1][1].as_str().unwrap_or("").to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_in_any_framing() {
        let sink = Sink::new();
        sink.measuring.store(true, Ordering::Relaxed);
        let p = sink.payload("u1", 100);
        assert_eq!(p.len(), 100);
        assert!(p.starts_with("~T"));
        let opensig = format!("[\"multi\",[[\"notify\",[\"channel2\",\"r\",1,\"msg-v2 a 0 r channel_msg - {{\\\"msg\\\":\\\"{p}\\\"}}\"]],[\"notify\",[\"channel2\",\"r\",2,\"{p}\"]]]]");
        assert_eq!(sink.scan(&opensig), 2);
        assert_eq!(sink.scan(&format!("42[\"msg\",\"r\",\"{p}\"]")), 1);
        assert_eq!(sink.scan(&format!("MSG ch.r 1 100\r\n{p}\r\n")), 1);
        assert_eq!(sink.scan("no marker ~T here"), 0);
        assert_eq!(sink.deliveries.load(Ordering::Relaxed), 4);
        assert_eq!(sink.hist.count(), 4);
    }

    #[test]
    fn login_frames() {
        let f = login_frame("app", "u1", "tok");
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v[1]["account"], "u1");
        let ok = opensig_protocol::frame::out::login_ok("L");
        assert_eq!(login_line(&ok).unwrap(), "L");
        assert!(login_line(&opensig_protocol::frame::out::login_failed(
            "TokenErrorInvalid"
        ))
        .is_err());
    }
}
