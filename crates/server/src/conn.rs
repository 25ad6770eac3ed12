//! One WebSocket connection, one task: it reads frames and performs requests, and writes what
//! is due — its own replies and whatever other connections queued for it — batching frames
//! that are ready together into `multi` (one write) and compressing large batches for clients
//! that sent `set_flag {binary:1}`. The queue other connections push into is bounded: a
//! client that does not read is disconnected.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use std::collections::VecDeque;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use opensig_protocol::frame::{out, Call2, ClientFrame, DecodeError, Login, Request, VoipKind};
use opensig_protocol::limits::flag_ttl_secs;
use opensig_protocol::names::{attr, close, event, login_error, msgtype, special};
use opensig_protocol::{token, zlib, ErrorKind, Limits};

use crate::delivery::{ConnHandle, Frame, Signals};
use crate::engine::{AttrOp, Engine, Mail, Relay};
use crate::stats::Stats;
use crate::Shared;

/// Frames at least this long are sent zlib-compressed to clients that accept binary.
const COMPRESS_THRESHOLD: usize = 2048;
/// A batch stops growing at this many bytes.
const BATCH_BYTES: usize = 32 * 1024;

struct Session {
    app: String,
    account: String,
    line: String,
    channels: BTreeSet<String>,
}

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
pub async fn serve<E: Engine>(ws: WebSocket, shared: Arc<Shared<E>>, ip: std::net::IpAddr) {
    let id = shared.next_conn_id();
    let (handle, queue) = ConnHandle::new(id, shared.config.limits.outbound_queue);
    let (mut sink, mut stream) = ws.split();
    Stats::inc(&shared.stats.connections);
    shared.register(handle.clone());
    let mut conn = Reader {
        shared: shared.clone(),
        handle: handle.clone(),
        session: None,
        binary: false,
        idle: Duration::from_secs(shared.config.limits.login_timeout_secs),
        last_rx: Instant::now(),
        user_rate: crate::ratelimit::Bucket::new(shared.config.limits.user_messages_per_second),
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
                let Some(Ok(msg)) = msg else {
                    // a read error includes a frame over the size limit: say why, then close
                    break if msg.is_some() {
                        Ending::With(out::close(), close::BAD_FRAME)
                    } else {
                        Ending::Gone
                    };
                };
                conn.last_rx = Instant::now();
                let idle_before = conn.idle;
                // boxed: the engine futures are large, and an idle connection's task should
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
        Box::pin(async {
            for ch in &s.channels {
                let _ = shared.engine.leave(&s.app, ch, &s.account, id).await;
            }
            shared.engine.logout(&s.app, &s.account, id).await;
        })
        .await;
        Stats::dec(&shared.stats.sessions);
    }
    shared.unregister(id);
    Stats::dec(&shared.stats.connections);
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

/// Why a token is not accepted.
enum TokenRefusal {
    UnknownApp,
    Expired,
    Invalid,
}

/// The app's token rule: development mode and apps without a certificate accept any token;
/// an app with one needs a SignalingToken of this account, not expired.
fn token_check(
    config: &crate::ServerConfig,
    app: &str,
    account: &str,
    token_text: &str,
) -> Result<(), TokenRefusal> {
    if config.development_mode() {
        return Ok(());
    }
    match config.apps.get(app) {
        None => Err(TokenRefusal::UnknownApp),
        Some(None) => Ok(()),
        Some(Some(cert)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            token::verify(token_text, app, cert, account, now).map_err(|e| match e {
                token::TokenError::Expired => TokenRefusal::Expired,
                token::TokenError::Invalid => TokenRefusal::Invalid,
            })
        }
    }
}

struct Reader<E: Engine> {
    shared: Arc<Shared<E>>,
    handle: ConnHandle,
    session: Option<Session>,
    binary: bool,
    idle: Duration,
    last_rx: Instant,
    user_rate: crate::ratelimit::Bucket,
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

impl<E: Engine> Reader<E> {
    async fn message(&mut self, msg: Message) {
        Stats::inc(&self.shared.stats.frames_in);
        let text = match msg {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => {
                match zlib::decompress(&b, self.shared.config.limits.max_frame_bytes) {
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
        if text.len() > self.shared.config.limits.max_frame_bytes {
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

    /// The login rules: server state, login rate, capacity, account rule, app id, token.
    fn check_login(&self, login: &Login) -> Result<(), Refusal> {
        let shared = &self.shared;
        let limits = &shared.config.limits;
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
        self.check_credentials(login)
            .map_err(|reason| (reason, close::LOGIN_REFUSED))?;
        if limits.max_sessions > 0
            && shared.stats.sessions.load(Ordering::Relaxed) as usize >= limits.max_sessions
        {
            return Err((login_error::SERVER_BUSY, close::SERVER_BUSY));
        }
        Ok(())
    }

    /// Account rule, app id, token.
    fn check_credentials(&self, login: &Login) -> Result<(), &'static str> {
        let shared = &self.shared;
        if self
            .shared
            .config
            .limits
            .check_account(&login.account)
            .is_err()
        {
            return Err(login_error::WRONG_ACCOUNT);
        }
        if shared.config.development_mode()
            && !opensig_protocol::limits::valid_name(&login.vid, 128)
        {
            return Err(login_error::TOKEN_UNKNOWN_APP);
        }
        match token_check(&shared.config, &login.vid, &login.account, &login.token) {
            Ok(()) => Ok(()),
            Err(TokenRefusal::UnknownApp) => Err(login_error::TOKEN_UNKNOWN_APP),
            Err(TokenRefusal::Expired) => Err(login_error::TOKEN_EXPIRED),
            Err(TokenRefusal::Invalid) => Err(login_error::TOKEN_INVALID),
        }
    }

    async fn login(&mut self, login: Login) -> Flow {
        if self.session.is_some() {
            self.send(out::login_failed(login_error::ALREADY_LOGGED_IN));
            return Flow::Continue;
        }
        if let Err(refusal) = self.check_login(&login) {
            // a full node still lets an account replace its own session (a reconnect whose
            // old connection the server has not noticed dead yet): no new place is taken
            let replaces = refusal.0 == login_error::SERVER_BUSY
                && matches!(
                    self.shared
                        .engine
                        .user_online(&login.vid, &login.account)
                        .await,
                    Ok(true)
                );
            if !replaces {
                return self.refuse(&login, refusal);
            }
        }
        let shared = self.shared.clone();
        let line = hex::encode(rand::random::<[u8; 16]>());
        let welcome: Frame = out::login_ok(&line).into();
        // counted before the reply can reach the client
        Stats::inc(&shared.stats.logins);
        Stats::inc(&shared.stats.sessions);
        let info = match shared
            .engine
            .login(&login.vid, &login.account, self.handle.clone(), welcome)
            .await
        {
            Ok(i) => i,
            Err(_) => {
                Stats::dec(&shared.stats.logins);
                Stats::dec(&shared.stats.sessions);
                return self.refuse(&login, (login_error::UNAVAILABLE, close::NORMAL));
            }
        };
        self.idle = Duration::from_secs(info.conn_timeout_secs);
        info!(app = %login.vid, account = %login.account, conn = self.handle.id, "login");
        self.session = Some(Session {
            app: login.vid,
            account: login.account,
            line,
            channels: BTreeSet::new(),
        });
        Flow::Continue
    }

    /// Handle one call2; returns its reply and whether to close after it.
    async fn call2(&mut self, c: Call2) -> (Frame, bool) {
        let id = c.id.clone();
        let result = self.call2_result(c).await;
        match result {
            Ok(Reply::Fields(fields)) if fields.is_empty() => {
                (out::call2_ok_plain(&id).into(), false)
            }
            Ok(Reply::Fields(fields)) => (out::call2_ok(&id, fields).into(), false),
            Ok(Reply::Logout) => (out::call2_ok(&id, Map::new()).into(), true),
            Err(e) => {
                Stats::inc(&self.shared.stats.errors);
                debug!(conn = self.handle.id, "call2 error {}", e.as_str());
                (out::call2_err(&id, e).into(), false)
            }
        }
    }

    async fn call2_result(&mut self, c: Call2) -> Result<Reply, ErrorKind> {
        let Some(session) = self.session.as_ref() else {
            return Err(ErrorKind::NotLoggedIn);
        };
        let decoded = c.decode()?;
        if decoded.line.as_deref() != Some(session.line.as_str()) {
            return Err(ErrorKind::InvalidLine);
        }
        let request = decoded.request?;
        let shared = self.shared.clone();
        let l = &shared.config.limits;
        let engine = &shared.engine;
        let app = session.app.clone();
        let me = session.account.clone();
        let mut fields = Map::new();
        match request {
            Request::UserLogout => {
                if let Some(s) = self.session.take() {
                    for ch in &s.channels {
                        let _ = engine.leave(&s.app, ch, &s.account, self.handle.id).await;
                    }
                    engine.logout(&s.app, &s.account, self.handle.id).await;
                    Stats::dec(&self.shared.stats.sessions);
                }
                return Ok(Reply::Logout);
            }
            Request::UserGetmsg { ver_clear, max } => {
                let page = engine
                    .get_messages(&app, &me, ver_clear, max as usize)
                    .await?;
                fields.insert("ver_clear".into(), page.ver_clear.into());
                fields.insert("msgs".into(), msgs_json(&page.msgs));
            }
            Request::UserGetmsg2 { clear_msgs, max } => {
                let page = engine
                    .get_messages_by_id(&app, &me, &clear_msgs, max as usize)
                    .await?;
                fields.insert("msgs".into(), msgs_json(&page.msgs));
            }
            Request::UserSendmsg {
                peer,
                flag,
                kind,
                content,
                message_id,
            } => {
                l.check_account(&peer)?;
                Limits::check_len(content.len(), l.p2p_message_max_bytes)?;
                if flag.contains(' ')
                    || flag.len() > 64
                    || kind.len() > 64
                    || !opensig_protocol::limits::valid_name(&kind, 64)
                {
                    return Err(ErrorKind::InvalidArgs);
                }
                if kind.starts_with(msgtype::VOIP_PREFIX) {
                    return Err(ErrorKind::InvalidArgs);
                }
                self.rate()?;
                let ttl = flag_ttl_secs(&flag, l);
                let mail = Mail {
                    from: &me,
                    to: &peer,
                    kind: &kind,
                    flag: &flag,
                    ttl_secs: ttl,
                    content: &content,
                    message_id: message_id.as_deref(),
                };
                engine.send_message(&app, mail).await?;
                Stats::inc(&self.shared.stats.p2p_messages);
            }
            Request::UserRenewToken { token } => {
                // the next logins of this session use it: it must be this account's
                token_check(&shared.config, &app, &me, &token).map_err(|e| match e {
                    TokenRefusal::Expired => ErrorKind::TokenExpired,
                    _ => ErrorKind::TokenInvalid,
                })?;
            }
            Request::UserQueryUserStatus { account } => {
                l.check_account(&account)?;
                let online = engine.user_online(&app, &account).await?;
                fields.insert("account".into(), account.into());
                fields.insert("status".into(), u8::from(online).into());
            }
            Request::UserSetAttr { name, value } => {
                l.check_attr_name(&name)?;
                Limits::check_len(value.len(), l.attr_value_max_bytes)?;
                if name == attr::CONN_TIMEOUT {
                    let secs: i64 = value.trim().parse().map_err(|_| ErrorKind::InvalidArgs)?;
                    let clamped = l.clamp_conn_timeout(secs);
                    engine
                        .set_user_attr(&app, &me, &name, &clamped.to_string())
                        .await?;
                    self.idle = Duration::from_secs(clamped);
                } else {
                    engine.set_user_attr(&app, &me, &name, &value).await?;
                }
            }
            Request::UserGetAttr { account, name } => {
                l.check_account(&account)?;
                l.check_attr_name(&name)?;
                let attrs = engine.user_attrs(&app, &account).await?;
                let value = attrs
                    .into_iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                fields.insert("account".into(), account.into());
                fields.insert("name".into(), name.into());
                fields.insert("value".into(), value.into());
            }
            Request::UserGetAttrAll { account } => {
                l.check_account(&account)?;
                let attrs = engine.user_attrs(&app, &account).await?;
                let obj: Map<String, Value> = attrs
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                fields.insert("account".into(), account.into());
                fields.insert(
                    "json".into(),
                    opensig_protocol::frame::json_text(&obj).into(),
                );
            }
            Request::ChannelJoin { name } => {
                l.check_channel(&name)?;
                // the firehose channels see every login and join of the app
                if name.starts_with(special::PREFIX) && !shared.config.firehose_allowed(&app) {
                    return Err(ErrorKind::ReservedChannel);
                }
                let session = self.session.as_ref().ok_or(ErrorKind::NotLoggedIn)?;
                if !session.channels.contains(&name)
                    && session.channels.len() >= l.channels_per_session
                {
                    return Err(ErrorKind::TooManyChannels);
                }
                let info = engine.join(&app, &name, &me, &self.handle).await?;
                if let Some(s) = self.session.as_mut() {
                    s.channels.insert(name.clone());
                }
                let list: Vec<Value> = info
                    .list
                    .into_iter()
                    .map(|a| Value::Array(vec![a.into(), 0.into()]))
                    .collect();
                let attrs: Map<String, Value> = info
                    .attrs
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                fields.insert("list".into(), Value::Array(list));
                fields.insert("attrs".into(), Value::Object(attrs));
            }
            Request::ChannelLeave { name } => {
                l.check_channel(&name)?;
                engine.leave(&app, &name, &me, self.handle.id).await?;
                if let Some(s) = self.session.as_mut() {
                    s.channels.remove(&name);
                }
            }
            Request::ChannelSendmsg {
                name,
                msg,
                msg_id,
                force,
            } => {
                l.check_channel(&name)?;
                Limits::check_len(msg.len(), l.channel_message_max_bytes)?;
                self.rate()?;
                engine
                    .channel_send(&app, &name, &me, &msg, force, msg_id.as_deref())
                    .await?;
                Stats::inc(&self.shared.stats.channel_messages);
            }
            Request::ChannelSetAttr {
                channel,
                name,
                value,
            } => {
                l.check_channel(&channel)?;
                l.check_attr_name(&name)?;
                Limits::check_len(value.len(), l.attr_value_max_bytes)?;
                engine
                    .channel_attr(&app, &channel, &me, AttrOp::Set { name, value })
                    .await?;
            }
            Request::ChannelDelAttr { channel, name } => {
                l.check_channel(&channel)?;
                l.check_attr_name(&name)?;
                engine
                    .channel_attr(&app, &channel, &me, AttrOp::Del { name })
                    .await?;
            }
            Request::ChannelClearAttr { channel } => {
                l.check_channel(&channel)?;
                engine
                    .channel_attr(&app, &channel, &me, AttrOp::Clear)
                    .await?;
            }
            Request::ChannelQueryNum { name } => {
                l.check_channel(&name)?;
                let (num, _) = engine.channel_members(&app, &name, 0).await?;
                fields.insert("name".into(), name.into());
                fields.insert("num".into(), num.into());
            }
            Request::ChannelQueryUserIsin { name, account } => {
                l.check_channel(&name)?;
                l.check_account(&account)?;
                let isin = engine.channel_has(&app, &name, &account).await?;
                fields.insert("name".into(), name.into());
                fields.insert("account".into(), account.into());
                fields.insert("isin".into(), u8::from(isin).into());
            }
            Request::ChannelQueryUserlist { name, num } => {
                l.check_channel(&name)?;
                let max = num.map_or(l.channel_list_max, |n| (n as usize).min(100_000));
                let (count, list) = engine.channel_members(&app, &name, max).await?;
                let list: Vec<Value> = list
                    .into_iter()
                    .map(|a| Value::Array(vec![a.into(), 0.into()]))
                    .collect();
                fields.insert("name".into(), name.into());
                fields.insert("num".into(), count.into());
                fields.insert("list".into(), Value::Array(list));
            }
            Request::Voip {
                kind,
                channel,
                peer,
                extra,
                message_id,
            } => {
                l.check_channel(&channel)?;
                l.check_account(&peer)?;
                let extra_len = match &extra {
                    Value::String(s) => s.len(),
                    other => other.to_string().len(),
                };
                Limits::check_len(extra_len, l.invite_extra_max_bytes)?;
                if kind == VoipKind::Invite {
                    self.rate()?;
                }
                engine
                    .voip(
                        &app,
                        &me,
                        Relay {
                            kind,
                            channel,
                            peer,
                            extra,
                            message_id,
                        },
                    )
                    .await?;
            }
        }
        Ok(Reply::Fields(fields))
    }

    fn rate(&mut self) -> Result<(), ErrorKind> {
        if self
            .user_rate
            .take(self.shared.config.limits.user_messages_per_second)
        {
            Ok(())
        } else {
            Err(ErrorKind::RateLimited)
        }
    }
}

enum Reply {
    Fields(Map<String, Value>),
    Logout,
}

fn msgs_json(msgs: &[(u64, Arc<str>)]) -> Value {
    Value::Array(
        msgs.iter()
            .map(|(v, t)| Value::Array(vec![(*v).into(), Value::String(t.to_string())]))
            .collect(),
    )
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
async fn guarded_write<E: Engine>(
    sink: &mut Sink,
    batch: &mut VecDeque<Frame>,
    conn: &Reader<E>,
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
async fn write<E: Engine>(
    sink: &mut Sink,
    frames: &[Frame],
    binary: bool,
    shared: &Shared<E>,
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

async fn write_one<E: Engine>(
    sink: &mut Sink,
    frames: &[Frame],
    binary: bool,
    shared: &Shared<E>,
) -> Result<(), axum::Error> {
    let text: Frame = if frames.len() == 1 {
        frames[0].clone()
    } else {
        out::multi(frames).into()
    };
    Stats::inc(&shared.stats.frames_out);
    let limits = &shared.config.limits;
    let msg = if binary && text.len() >= COMPRESS_THRESHOLD && text.len() <= limits.max_frame_bytes
    {
        Message::Binary(zlib::compress(&text).into())
    } else {
        Message::Text(text)
    };
    sink.send(msg).await
}
