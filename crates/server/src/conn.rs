//! One WebSocket connection, one task: it reads frames and performs requests, and writes what
//! is due — its own replies and whatever other connections queued for it — batching frames
//! that are ready together into `multi` (one write) and compressing large batches for clients
//! that sent `set_flag {binary:1}`. The queue other connections push into is bounded: a
//! client that does not read is disconnected.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use opensig_protocol::frame::{out, Call2, ClientFrame, DecodeError, Login, Reply, Request};
use opensig_protocol::names::{close, domain, event, login_error};
use opensig_protocol::{zlib, ErrorKind};

use crate::delivery::{ConnHandle, Frame, Signals};
use crate::signaling::Session;
use crate::stats::Stats;
use crate::store::Store;
use crate::Shared;

/// Frames at least this long are sent zlib-compressed to clients that accept binary.
const COMPRESS_THRESHOLD: usize = 2048;
/// A batch stops growing at this many bytes.
const BATCH_BYTES: usize = 32 * 1024;

type Sink = SplitSink<WebSocket, Message>;

/// How the connection ends.
enum Ending {
    /// The client closed, or the connection broke.
    Gone,
    /// Close after writing this last frame (`kick`, `close`; may be empty), with this close
    /// code and reason.
    With(String, (u16, &'static str)),
    /// Close without a farewell (the client reconnects).
    Silently,
    /// The client stopped reading while its queue filled up: a write is stuck, so no
    /// farewell can get through; the connection is dropped.
    Stalled,
}

/// What woke the connection task.
enum Event {
    /// Frames were queued, or a kick, overflow, shutdown or drop was signalled.
    Woken,
    /// The client sent something (or the read ended).
    Read(Option<Result<Message, axum::Error>>),
    /// The idle (or login) timer fired.
    Idle,
}

/// Serve one upgraded WebSocket until it closes.
pub async fn serve<S: Store>(ws: WebSocket, shared: Arc<Shared<S>>, ip: std::net::IpAddr) {
    let id = shared.next_conn_id();
    let (handle, queue) = ConnHandle::new(id, shared.config().limits.outbound_queue);
    let (mut sink, mut stream) = ws.split();
    Stats::inc(&shared.stats.connections);
    shared.register(handle.clone());
    let mut conn = Reader {
        shared: shared.clone(),
        handle: handle.clone(),
        session: None,
        binary: false,
        idle: Duration::from_secs(shared.config().limits.login_timeout_secs),
        last_rx: Instant::now(),
        outbox: Vec::new(),
        closing: false,
        close_reason: close::NORMAL,
        ip,
    };
    let idle_timer = tokio::time::sleep(conn.idle);
    tokio::pin!(idle_timer);
    // frames to write; swapped with the queue's buffer, so both are reused
    let mut batch: VecDeque<Frame> = VecDeque::new();
    let ending = loop {
        // the select only picks what happened; the work (which awaits) runs after it, so the
        // task holds either the waiting futures or the working ones, never both
        let event = tokio::select! {
            _ = queue.woken() => Event::Woken,
            msg = stream.next() => Event::Read(msg),
            _ = &mut idle_timer => Event::Idle,
        };
        match event {
            Event::Woken => {
                queue.take(&mut batch);
                if let Some(e) = ending_signal(queue.signals(), &shared.stats) {
                    // a kick still delivers what was queued before it
                    if matches!(e, Ending::With(..)) && !batch.is_empty() {
                        let _ =
                            write(&mut sink, batch.make_contiguous(), conn.binary, &shared).await;
                    }
                    break e;
                }
                if !batch.is_empty() {
                    if let Err(e) = guarded_write(&mut sink, &mut batch, &conn, &queue).await {
                        break e;
                    }
                }
            }
            Event::Read(msg) => {
                let msg = match msg {
                    Some(Ok(msg)) => msg,
                    // a broken frame: say why, then close
                    Some(Err(e)) => break read_error_ending(&e),
                    None => break Ending::Gone,
                };
                conn.last_rx = Instant::now();
                let idle_before = conn.idle;
                // boxed: the signaling futures are large, and an idle connection's task should
                // not carry their space
                Box::pin(conn.message(msg)).await;
                if conn.idle != idle_before {
                    idle_timer.as_mut().reset(conn.last_rx + conn.idle);
                }
                // what others queued meanwhile goes first (it happened before our replies)
                if queue.has_frames() {
                    queue.take(&mut batch);
                }
                batch.extend(conn.outbox.drain(..));
                if !batch.is_empty() {
                    if let Err(e) = guarded_write(&mut sink, &mut batch, &conn, &queue).await {
                        break e;
                    }
                }
                if conn.closing {
                    break Ending::With(String::new(), conn.close_reason);
                }
            }
            Event::Idle => {
                let silent_for = conn.last_rx.elapsed();
                if silent_for >= conn.idle {
                    debug!(conn = id, "idle or login timeout: closing");
                    break Ending::With(out::close(), close::TIMEOUT);
                }
                // quiet for a while: give back buffer memory a burst left behind
                batch.shrink_to(4);
                queue.shrink();
                conn.outbox.shrink_to(4);
                idle_timer.as_mut().reset(conn.last_rx + conn.idle);
            }
        }
    };
    // why the session ends, for the app's backend (a logout ended it already)
    let signals = queue.signals();
    let offline = if signals.kicked.load(Ordering::SeqCst) {
        domain::offline::KICKED
    } else if signals.shutdown.load(Ordering::SeqCst) {
        domain::offline::SERVER_SHUTDOWN
    } else {
        domain::offline::CONNECTION_LOST
    };
    drop(queue);
    // the farewell gets a moment, never a hang: a client that does not read is not waited for
    let farewell = async {
        match ending {
            Ending::With(last, (code, reason)) => {
                if !last.is_empty() {
                    let _ = sink.send(Message::Text(Utf8Bytes::from(last))).await;
                }
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code,
                        reason: Utf8Bytes::from_static(reason),
                    })))
                    .await;
                let _ = sink.close().await;
            }
            Ending::Silently => {
                let _ = sink.close().await;
            }
            // the peer is gone (or stuck): nobody to say goodbye to, and its session must end
            // now, not after a farewell timeout (a reconnect may already be on its way)
            Ending::Gone | Ending::Stalled => {}
        }
    };
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, farewell).await;
    drop(sink);
    drop(stream);

    // teardown: leave channels, go offline (boxed like `message`)
    if let Some(s) = conn.session.take() {
        Box::pin(shared.signaling.end(&s, offline)).await;
        Stats::dec(&shared.stats.sessions);
    }
    shared.unregister(id);
    Stats::dec(&shared.stats.connections);
}

/// How to end after a read error (RFC 6455 §7.4.1): a message over the size limit gets
/// `["close",""]` and 1009, a protocol violation 1002, text that is not UTF-8 1007; a
/// connection that broke has nobody to tell.
fn read_error_ending(e: &axum::Error) -> Ending {
    use std::error::Error as _;
    use tungstenite::Error as WsError;
    match e.source().and_then(|s| s.downcast_ref::<WsError>()) {
        Some(WsError::Capacity(_)) => Ending::With(out::close(), close::BAD_FRAME),
        Some(WsError::Protocol(_) | WsError::AttackAttempt) => {
            Ending::With(String::new(), close::PROTOCOL_ERROR)
        }
        Some(WsError::Utf8(_)) => Ending::With(String::new(), close::INVALID_UTF8),
        _ => Ending::Gone,
    }
}

/// An out-of-band ending (kick, overflow, shutdown, drop), if one was signalled.
fn ending_signal(signals: &Signals, stats: &Stats) -> Option<Ending> {
    if signals.dropped.load(Ordering::SeqCst) {
        return Some(Ending::Silently);
    }
    if signals.kicked.load(Ordering::SeqCst) {
        return Some(Ending::With(out::kick(), close::NORMAL));
    }
    if signals.overflowed.load(Ordering::SeqCst) {
        slow_consumer(stats, "not keeping up");
        return Some(Ending::With(out::close(), close::SLOW_CONSUMER));
    }
    if signals.shutdown.load(Ordering::SeqCst) {
        return Some(Ending::With(out::close(), close::NORMAL));
    }
    None
}

struct Reader<S: Store> {
    shared: Arc<Shared<S>>,
    handle: ConnHandle,
    session: Option<Session<S>>,
    binary: bool,
    idle: Duration,
    last_rx: Instant,
    /// Replies to write after this frame.
    outbox: Vec<Frame>,
    /// Close after writing the outbox…
    closing: bool,
    /// …with this close code and reason.
    close_reason: (u16, &'static str),
    /// The client's IP address (login rate).
    ip: std::net::IpAddr,
}

enum Flow {
    Continue,
    Stop,
}

/// Why a login is refused: the `login_ret` error string and the close frame.
type Refusal = (&'static str, (u16, &'static str));

use opensig_protocol::ident::{Account, AppId};

impl<S: Store> Reader<S> {
    async fn message(&mut self, msg: Message) {
        Stats::inc(&self.shared.stats.frames_in);
        let text = match msg {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => {
                match zlib::decompress(&b, self.shared.config().limits.max_frame_bytes) {
                    Ok(t) => t,
                    Err(e) => {
                        debug!(conn = self.handle.id, "unusable binary frame: {e:?}");
                        if e == zlib::InflateError::TooLarge {
                            self.close_with(out::close(), close::BAD_FRAME);
                        }
                        return;
                    }
                }
            }
            Message::Close(_) => {
                self.closing = true;
                return;
            }
            _ => return,
        };
        if text.len() > self.shared.config().limits.max_frame_bytes {
            self.close_with(out::close(), close::BAD_FRAME);
            return;
        }
        if let Flow::Stop = self.frame(&text).await {
            self.closing = true;
        }
    }

    fn send(&mut self, frame: String) {
        self.outbox.push(Frame::from(frame));
    }

    /// Write a last frame and close with `reason`.
    fn close_with(&mut self, frame: String, reason: (u16, &'static str)) {
        self.outbox.push(Frame::from(frame));
        self.closing = true;
        self.close_reason = reason;
    }

    async fn frame(&mut self, text: &str) -> Flow {
        let frame = match ClientFrame::decode(text) {
            Ok(f) => f,
            // a login of any shape is answered (the client would wait for its reply)
            Err(DecodeError::BadPayload(event::LOGIN)) if self.session.is_none() => {
                Stats::inc(&self.shared.stats.login_failures);
                self.close_with(
                    out::login_failed(login_error::MALFORMED),
                    close::LOGIN_REFUSED,
                );
                return Flow::Stop;
            }
            Err(e) => {
                debug!(conn = self.handle.id, "ignored frame: {e}");
                return Flow::Continue;
            }
        };
        match frame {
            ClientFrame::Login(login) => self.login(login).await,
            ClientFrame::LineLogin => {
                // never sent by 1.4.0; no reply is understood (PROTOCOL.md §7.5)
                self.close_with(out::close(), close::NORMAL);
                Flow::Stop
            }
            ClientFrame::SetFlag { binary } => {
                self.binary = binary;
                Flow::Continue
            }
            ClientFrame::Ping(n) => {
                self.send(out::pong(&n));
                Flow::Continue
            }
            ClientFrame::Call2(c) => {
                let (reply, close) = self.call2(c).await;
                self.outbox.push(reply);
                if close {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            }
            ClientFrame::Unknown(name) => {
                debug!(conn = self.handle.id, "ignored unknown event {name:?}");
                Flow::Continue
            }
        }
    }

    fn refuse(&mut self, login: &Login, (reason, close): Refusal) -> Flow {
        Stats::inc(&self.shared.stats.login_failures);
        // the token is never logged
        info!(app = %login.vid, account = %login.account, ip = %self.ip, "login refused: {reason}");
        self.close_with(out::login_failed(reason), close);
        Flow::Stop
    }

    /// The node's login rules (state, rate per address, capacity), then the app's
    /// (account rule, app id, token).
    fn check_login(&self, login: &Login) -> Result<(AppId, Account), Refusal> {
        let shared = &self.shared;
        let config = shared.config();
        let limits = &config.limits;
        if shared.shutting_down() {
            return Err((login_error::UNAVAILABLE, close::NORMAL));
        }
        let rate = limits.logins_per_ip_per_second;
        if rate > 0
            && !shared
                .login_rates
                .entry(self.ip)
                .or_insert_with(|| crate::ratelimit::Bucket::new(rate))
                .take(rate)
        {
            return Err((login_error::TOO_MANY_LOGINS, close::TOO_MANY_LOGINS));
        }
        let who = shared
            .signaling
            .check_credentials(login)
            .map_err(|reason| (reason, close::LOGIN_REFUSED))?;
        let full = limits.max_sessions > 0
            && shared.stats.sessions.load(Ordering::Relaxed) as usize >= limits.max_sessions;
        if full || shared.config().short_of_memory() {
            return Err((login_error::SERVER_BUSY, close::SERVER_BUSY));
        }
        Ok(who)
    }

    async fn login(&mut self, login: Login) -> Flow {
        if self.session.is_some() {
            self.send(out::login_failed(login_error::ALREADY_LOGGED_IN));
            return Flow::Continue;
        }
        let (app, account) = match self.check_login(&login) {
            Ok(who) => who,
            Err(refusal) => {
                // a full node still lets an account replace its own session (a reconnect whose
                // old connection the server has not noticed dead yet): no new place is taken
                let replaces = refusal.0 == login_error::SERVER_BUSY
                    && self.replaces_own_session(&login).await;
                match (replaces, self.shared.signaling.check_credentials(&login)) {
                    (true, Ok(who)) => who,
                    _ => return self.refuse(&login, refusal),
                }
            }
        };
        let shared = self.shared.clone();
        let line = hex::encode(rand::random::<[u8; 16]>());
        let welcome: Frame = out::login_ok(&line).into();
        // counted before the reply can reach the client
        Stats::inc(&shared.stats.logins);
        Stats::inc(&shared.stats.sessions);
        match shared
            .signaling
            .login(app, account, &self.handle, welcome, line)
            .await
        {
            Ok(session) => {
                self.idle = session.idle;
                info!(app = %session.app, account = %session.account, conn = self.handle.id, "login");
                shared.logged_in(self.handle.id, &session.app);
                self.session = Some(session);
                Flow::Continue
            }
            Err(_) => {
                Stats::dec(&shared.stats.logins);
                Stats::dec(&shared.stats.sessions);
                self.refuse(&login, (login_error::UNAVAILABLE, close::NORMAL))
            }
        }
    }

    /// Whether the login's account is online already (a full node lets it replace itself).
    async fn replaces_own_session(&self, login: &Login) -> bool {
        let config = self.shared.config();
        let l = &config.limits;
        let (Ok(app), Ok(account)) = (
            AppId::parse(&login.vid, l),
            Account::parse(&login.account, l),
        ) else {
            return false;
        };
        let user = crate::store::User {
            app: &app,
            account: &account,
        };
        matches!(self.shared.signaling.store().online(user).await, Ok(true))
    }

    /// Handle one call2; returns its reply and whether to close after it.
    async fn call2(&mut self, c: Call2) -> (Frame, bool) {
        let id = c.id.clone();
        let (result, logout) = self.call2_result(c).await;
        let frame = match result {
            Ok(reply) => out::call2_reply(&id, &reply),
            Err(e) => {
                self.shared.stats.refusal(e);
                debug!(conn = self.handle.id, "call2 error {}", e.as_str());
                out::call2_err(&id, e)
            }
        };
        (frame.into(), logout)
    }

    /// The reply, and whether the session ended (`user_logout`).
    async fn call2_result(&mut self, c: Call2) -> (Result<Reply, ErrorKind>, bool) {
        let Some(session) = self.session.as_mut() else {
            return (Err(ErrorKind::NotLoggedIn), false);
        };
        let request = match c.decode() {
            Ok(d) if d.line.as_deref() != Some(session.line.as_str()) => {
                return (Err(ErrorKind::InvalidLine), false)
            }
            Ok(d) => d.request,
            Err(e) => return (Err(e), false),
        };
        let request = match request {
            Ok(r) => r,
            Err(e) => return (Err(e), false),
        };
        let shared = self.shared.clone();
        if request == Request::UserLogout {
            if let Some(s) = self.session.take() {
                shared.signaling.end(&s, domain::offline::LOGOUT).await;
                Stats::dec(&shared.stats.sessions);
            }
            return (Ok(Reply::Done), true);
        }
        let counted = match &request {
            Request::UserSendmsg { .. } => Some(&shared.stats.p2p_messages),
            Request::ChannelSendmsg { .. } => Some(&shared.stats.channel_messages),
            _ => None,
        };
        let r = shared.signaling.request(session, request).await;
        // `_conn_timeout` may have changed
        self.idle = session.idle;
        if let (Ok(_), Some(counter)) = (&r, counted) {
            Stats::inc(counter);
        }
        (r, false)
    }
}

/// Count and log a connection cut off because its queue overflowed.
fn slow_consumer(stats: &Stats, why: &str) {
    Stats::inc(&stats.slow_consumers);
    warn!("slow consumer disconnected ({why})");
}

/// How long the last frames before a close may take to write.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(2);

/// Write and clear `batch`, unless the queue overflows meanwhile: a client that stopped
/// reading blocks the write, and must not hold its connection (and session) forever.
async fn guarded_write<S: Store>(
    sink: &mut Sink,
    batch: &mut VecDeque<Frame>,
    conn: &Reader<S>,
    queue: &crate::delivery::Outbox,
) -> Result<(), Ending> {
    let result = tokio::select! {
        r = write(sink, batch.make_contiguous(), conn.binary, &conn.shared) => {
            r.map_err(|_| Ending::Gone)
        }
        _ = queue.overflowed() => {
            slow_consumer(&conn.shared.stats, "stopped reading");
            Err(Ending::Stalled)
        }
    };
    batch.clear();
    // waiting for an overflow may have consumed a wake-up meant for new frames
    queue.rewake_if_pending();
    result
}

/// Write frames (several at once as `multi` batches of at most BATCH_BYTES).
async fn write<S: Store>(
    sink: &mut Sink,
    frames: &[Frame],
    binary: bool,
    shared: &Shared<S>,
) -> Result<(), axum::Error> {
    let mut start = 0;
    let mut size = 0;
    for (i, f) in frames.iter().enumerate() {
        size += f.len();
        if size >= BATCH_BYTES || i + 1 == frames.len() {
            write_one(sink, &frames[start..=i], binary, shared).await?;
            start = i + 1;
            size = 0;
        }
    }
    Ok(())
}

async fn write_one<S: Store>(
    sink: &mut Sink,
    frames: &[Frame],
    binary: bool,
    shared: &Shared<S>,
) -> Result<(), axum::Error> {
    let text: Frame = if frames.len() == 1 {
        frames[0].clone()
    } else {
        out::multi(frames).into()
    };
    Stats::inc(&shared.stats.frames_out);
    let config = shared.config();
    let limits = &config.limits;
    let msg = if binary && text.len() >= COMPRESS_THRESHOLD && text.len() <= limits.max_frame_bytes
    {
        Message::Binary(zlib::compress(&text).into())
    } else {
        Message::Text(text)
    };
    sink.send(msg).await
}
