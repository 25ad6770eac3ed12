//! A tokio + tokio-tungstenite driver for [`Client`]: native bots, integration tests and load
//! tools log in exactly as the browser SDK does. One task per session owns the state machine;
//! the app talks to it through [`Session`].
//!
//! LBS lookups are not performed natively (`Fetch` is answered with a failure): give the
//! session its WebSocket URLs in [`Config::servers`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Action, Client, Config, ConnId, Event, Millis, State};

type Job = Box<dyn FnOnce(&mut Client<Value>, Millis) + Send>;

enum Input {
    Open(ConnId),
    Frame(ConnId, String),
    Closed(ConnId),
}

/// Handle to a session running in its own task. Dropping it ends the task.
pub struct Session {
    jobs: mpsc::UnboundedSender<Job>,
    events: mpsc::UnboundedReceiver<Event<Value>>,
    account: String,
}

impl Session {
    /// Start logging in with `config` (state 1 at once).
    pub fn login(config: Config) -> Session {
        Self::login_from(config, None)
    }

    /// [`Session::login`] with every connection made from the local address `source` (load
    /// tools: one loopback address has only so many ports, and the kernel's search for a free
    /// one slows down long before they run out).
    pub fn login_from(config: Config, source: Option<std::net::IpAddr>) -> Session {
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let account = config.account.clone();
        tokio::spawn(run(config, source, jobs_rx, events_tx));
        Session {
            jobs: jobs_tx,
            events: events_rx,
            account,
        }
    }

    /// The account of this session.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Run `f` on the state machine (with the driver's current time) and return its result.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client<Value>, Millis) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |c, now| {
            let _ = tx.send(f(c, now));
        });
        self.jobs.send(job).expect("session task ended");
        rx.await.expect("session task ended")
    }

    /// `getStatus()`.
    pub async fn state(&self) -> State {
        self.with(|c, _| c.state()).await
    }

    /// The next event, or `None` when the session task has ended.
    pub async fn next_event(&mut self) -> Option<Event<Value>> {
        self.events.recv().await
    }

    /// An event already queued, without waiting.
    pub fn try_event(&mut self) -> Option<Event<Value>> {
        self.events.try_recv().ok()
    }
}

fn millis(start: Instant) -> Millis {
    start.elapsed().as_millis() as Millis
}

/// Fresh randomness for the reconnect jitter (std's per-process random hash keys).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

async fn run(
    mut config: Config,
    source: Option<std::net::IpAddr>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    events: mpsc::UnboundedSender<Event<Value>>,
) {
    let start = Instant::now();
    config.jitter_seed ^= random_seed();
    if config.unix_ms_at_zero == 0 {
        config.unix_ms_at_zero = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
    }
    let max_frame = config.limits.max_frame_bytes * 16;
    let mut client: Client<Value> = Client::new(config, millis(start));
    let (in_tx, mut in_rx) = mpsc::unbounded_channel::<Input>();
    let mut conns: BTreeMap<ConnId, mpsc::UnboundedSender<Option<String>>> = BTreeMap::new();
    loop {
        // perform IO and hand over events
        while let Some(a) = client.poll_action() {
            match a {
                Action::Connect { conn, url } => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    conns.insert(conn, tx);
                    tokio::spawn(connection(conn, url, source, rx, in_tx.clone(), max_frame));
                }
                Action::Send { conn, text } => {
                    if let Some(tx) = conns.get(&conn) {
                        let _ = tx.send(Some(text));
                    }
                }
                Action::Close { conn } => {
                    if let Some(tx) = conns.remove(&conn) {
                        let _ = tx.send(None);
                    }
                }
                Action::Fetch { id, .. } => client.handle_fetch(id, None, millis(start)),
            }
        }
        while let Some(e) = client.poll_event() {
            if events.send(e).is_err() {
                return;
            }
        }
        let deadline = client.poll_timeout();
        let sleep: Pin<Box<dyn Future<Output = ()> + Send>> = match deadline {
            Some(t) => Box::pin(tokio::time::sleep_until(
                start + std::time::Duration::from_millis(t),
            )),
            None => Box::pin(std::future::pending()),
        };
        tokio::select! {
            job = jobs.recv() => match job {
                Some(job) => job(&mut client, millis(start)),
                None => return,
            },
            input = in_rx.recv() => {
                let now = millis(start);
                match input {
                    Some(Input::Open(c)) => client.handle_open(c, now),
                    Some(Input::Frame(c, text)) => client.handle_text(c, &text, now),
                    Some(Input::Closed(c)) => {
                        conns.remove(&c);
                        client.handle_close(c, now)
                    }
                    None => return,
                }
            }
            _ = sleep => client.handle_timeout(millis(start)),
        }
    }
}

/// A WebSocket to `url`, from `source` when given (plain `ws://` only).
async fn open(
    url: &str,
    source: Option<std::net::IpAddr>,
    config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
) -> Option<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let Some(ip) = source else {
        return tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .ok()
            .map(|(ws, _)| ws);
    };
    let host = url.strip_prefix("ws://")?.split('/').next()?;
    let addr = tokio::net::lookup_host(host).await.ok()?.next()?;
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .ok()?;
    socket.bind(std::net::SocketAddr::new(ip, 0)).ok()?;
    let tcp = socket.connect(addr).await.ok()?;
    let _ = tcp.set_nodelay(true);
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
    tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .ok()
        .map(|(ws, _)| ws)
}

async fn connection(
    conn: ConnId,
    url: String,
    source: Option<std::net::IpAddr>,
    mut outgoing: mpsc::UnboundedReceiver<Option<String>>,
    input: mpsc::UnboundedSender<Input>,
    max_frame: usize,
) {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(8192)
        .write_buffer_size(0);
    let Some(ws) = open(&url, source, config).await else {
        let _ = input.send(Input::Closed(conn));
        return;
    };
    let _ = input.send(Input::Open(conn));
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            out = outgoing.recv() => match out {
                Some(Some(text)) => {
                    if sink.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                // asked to close, or the session task is gone: no Closed report needed
                Some(None) | None => {
                    let _ = sink.close().await;
                    return;
                }
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let _ = input.send(Input::Frame(conn, t.to_string()));
                }
                Some(Ok(Message::Binary(b))) => {
                    if let Ok(text) = crate::zlib::decompress(&b, max_frame) {
                        let _ = input.send(Input::Frame(conn, text));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    let _ = input.send(Input::Closed(conn));
}
