//! One WebSocket connection: a reader task that decodes frames and performs requests, and a
//! writer that drains the connection's bounded queue, batching ready frames into `multi` and
//! compressing large batches for clients that sent `set_flag {binary:1}`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use opensig_protocol::frame::{out, Call2, ClientFrame, Login, Request, VoipKind};
use opensig_protocol::limits::flag_ttl_secs;
use opensig_protocol::names::{attr, login_error, msgtype};
use opensig_protocol::{token, zlib, ErrorKind, Limits};

use crate::delivery::{ConnHandle, Frame, Out, Signals};
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

/// Serve one upgraded WebSocket until it closes.
pub async fn serve<E: Engine>(ws: WebSocket, shared: Arc<Shared<E>>) {
    let id = shared.next_conn_id();
    let limits = shared.config.limits.clone();
    let (handle, rx, signals) = ConnHandle::new(id, limits.outbound_queue);
    let (sink, stream) = ws.split();
    let binary = Arc::new(AtomicBool::new(false));
    Stats::inc(&shared.stats.connections);
    shared.register(handle.clone());

    let mut writer = tokio::spawn(write_loop(
        sink,
        rx,
        signals.clone(),
        binary.clone(),
        shared.clone(),
    ));
    let mut reader = Reader {
        shared: shared.clone(),
        handle: handle.clone(),
        limits,
        session: None,
        binary,
        idle: Duration::from_secs(shared.config.limits.login_timeout_secs),
        user_rate: crate::ratelimit::Bucket::new(shared.config.limits.user_messages_per_second),
    };
    let writer_done = reader.run(stream, &mut writer).await;

    // teardown: leave channels, go offline, let the writer finish what is queued
    if let Some(s) = reader.session.take() {
        for ch in &s.channels {
            let _ = shared.engine.leave(&s.app, ch, &s.account, id).await;
        }
        shared.engine.logout(&s.app, &s.account, id).await;
        Stats::dec(&shared.stats.sessions);
    }
    shared.unregister(id);
    drop(reader);
    drop(handle);
    if !writer_done {
        signals.finished.store(true, Ordering::SeqCst);
        signals.notify.notify_one();
        let _ = writer.await;
    }
    Stats::dec(&shared.stats.connections);
}

struct Reader<E: Engine> {
    shared: Arc<Shared<E>>,
    handle: ConnHandle,
    limits: Limits,
    session: Option<Session>,
    binary: Arc<AtomicBool>,
    idle: Duration,
    user_rate: crate::ratelimit::Bucket,
}

enum Flow {
    Continue,
    Stop,
}

impl<E: Engine> Reader<E> {
    /// Read until the connection ends; true when it ended because the writer finished
    /// (kick, overflow, shutdown, or a reply that closes).
    async fn run(
        &mut self,
        mut stream: SplitStream<WebSocket>,
        writer: &mut tokio::task::JoinHandle<()>,
    ) -> bool {
        loop {
            let next = tokio::select! {
                m = tokio::time::timeout(self.idle, stream.next()) => m,
                _ = &mut *writer => return true,
            };
            let msg = match next {
                Err(_) => {
                    debug!(conn = self.handle.id, "idle or login timeout: closing");
                    self.close_with(out::close());
                    return false;
                }
                Ok(None) => return false,
                Ok(Some(Err(e))) => {
                    // includes frames over the size limit: tell the client why, then close
                    debug!(conn = self.handle.id, "read error: {e}");
                    self.close_with(out::close());
                    return false;
                }
                Ok(Some(Ok(m))) => m,
            };
            Stats::inc(&self.shared.stats.frames_in);
            let text = match msg {
                Message::Text(t) => t.to_string(),
                Message::Binary(b) => match zlib::decompress(&b, self.limits.max_frame_bytes) {
                    Ok(t) => t,
                    Err(e) => {
                        debug!(conn = self.handle.id, "unusable binary frame: {e:?}");
                        if e == zlib::InflateError::TooLarge {
                            self.close_with(out::close());
                            return false;
                        }
                        continue;
                    }
                },
                Message::Close(_) => return false,
                _ => continue,
            };
            if text.len() > self.limits.max_frame_bytes {
                self.close_with(out::close());
                return false;
            }
            match self.frame(&text).await {
                Flow::Continue => {}
                Flow::Stop => return false,
            }
        }
    }

    fn send(&self, frame: String) -> bool {
        self.handle.push(Frame::from(frame))
    }

    /// Queue a last frame and close once it is written.
    fn close_with(&self, frame: String) {
        self.handle.send(Out::FrameThenClose(frame.into()));
    }

    async fn frame(&mut self, text: &str) -> Flow {
        let frame = match ClientFrame::decode(text) {
            Ok(f) => f,
            Err(e) => {
                debug!(conn = self.handle.id, "ignored frame: {e}");
                return Flow::Continue;
            }
        };
        match frame {
            ClientFrame::Login(login) => self.login(login).await,
            ClientFrame::LineLogin => {
                // never sent by 1.4.0; no reply is understood (PROTOCOL.md §7.5)
                self.close_with(out::close());
                Flow::Stop
            }
            ClientFrame::SetFlag { binary } => {
                self.binary.store(binary, Ordering::Relaxed);
                Flow::Continue
            }
            ClientFrame::Ping(n) => {
                self.send(out::pong(&n));
                Flow::Continue
            }
            ClientFrame::Call2(c) => {
                let reply = self.call2(c).await;
                match reply {
                    Some(Out::FrameThenClose(f)) => {
                        self.handle.send(Out::FrameThenClose(f));
                        Flow::Stop
                    }
                    Some(Out::Frame(f)) => {
                        self.handle.push(f);
                        Flow::Continue
                    }
                    None => Flow::Continue,
                }
            }
            ClientFrame::Unknown(name) => {
                debug!(conn = self.handle.id, "ignored unknown event {name:?}");
                Flow::Continue
            }
        }
    }

    async fn login(&mut self, login: Login) -> Flow {
        if self.session.is_some() {
            self.send(out::login_failed("already_logged_in"));
            return Flow::Continue;
        }
        let shared = &self.shared;
        let refuse = |reason: &str| {
            Stats::inc(&shared.stats.login_failures);
            info!(app = %login.vid, account = %login.account, "login refused: {reason}");
            self.close_with(out::login_failed(reason));
            Flow::Stop
        };
        if shared.shutting_down() {
            return refuse(login_error::UNAVAILABLE);
        }
        if self.limits.check_account(&login.account).is_err() {
            return refuse(login_error::WRONG_ACCOUNT);
        }
        if !shared.config.development_mode() {
            match shared.config.apps.get(&login.vid) {
                None => return refuse(login_error::TOKEN_UNKNOWN_APP),
                Some(Some(cert)) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    match token::verify(&login.token, &login.vid, cert, &login.account, now) {
                        Ok(()) => {}
                        Err(token::TokenError::Expired) => {
                            return refuse(login_error::TOKEN_EXPIRED)
                        }
                        Err(token::TokenError::Invalid) => {
                            return refuse(login_error::TOKEN_INVALID)
                        }
                    }
                }
                Some(None) => {}
            }
        } else if !opensig_protocol::limits::valid_name(&login.vid, 128) {
            return refuse(login_error::TOKEN_UNKNOWN_APP);
        }
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
                return refuse(login_error::UNAVAILABLE);
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

    /// Handle one call2; returns its reply (None when there is no usable id).
    async fn call2(&mut self, c: Call2) -> Option<Out> {
        let id = c.id.clone();
        let result = self.call2_result(c).await;
        Some(match result {
            Ok(Reply::Fields(fields)) => Out::Frame(out::call2_ok(&id, fields).into()),
            Ok(Reply::Logout) => Out::FrameThenClose(out::call2_ok(&id, Map::new()).into()),
            Err(e) => {
                Stats::inc(&self.shared.stats.errors);
                debug!(conn = self.handle.id, "call2 error {}", e.as_str());
                Out::Frame(out::call2_err(&id, e).into())
            }
        })
    }

    async fn call2_result(&mut self, c: Call2) -> Result<Reply, ErrorKind> {
        let Some(session) = self.session.as_ref() else {
            return Err(ErrorKind::NotLoggedIn);
        };
        let args = c.args.ok_or(ErrorKind::InvalidArgs)?;
        if args.get("line").and_then(Value::as_str) != Some(session.line.as_str()) {
            return Err(ErrorKind::InvalidLine);
        }
        let request = Request::parse(&c.name, &args)?;
        let limits = self.limits.clone();
        let l = &limits;
        let shared = self.shared.clone();
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
        if self.user_rate.take(self.limits.user_messages_per_second) {
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

async fn write_loop<E: Engine>(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Out>,
    signals: Arc<Signals>,
    binary: Arc<AtomicBool>,
    shared: Arc<Shared<E>>,
) {
    let mut batch: Vec<Out> = Vec::with_capacity(64);
    loop {
        // out-of-band endings first; a kick still delivers what was queued before it
        let ending = if signals.kicked.load(Ordering::SeqCst) {
            let mut queued = Vec::new();
            while let Ok(item) = rx.try_recv() {
                let (Out::Frame(f) | Out::FrameThenClose(f)) = item;
                queued.push(f);
            }
            if !queued.is_empty() && write(&mut sink, &queued, &binary, &shared).await.is_err() {
                return;
            }
            Some(out::kick())
        } else if signals.overflowed.load(Ordering::SeqCst) {
            Stats::inc(&shared.stats.slow_consumers);
            warn!("slow consumer disconnected");
            Some(out::close())
        } else if signals.shutdown.load(Ordering::SeqCst) {
            Some(out::close())
        } else {
            None
        };
        if let Some(last) = ending {
            let _ = sink.send(Message::Text(Utf8Bytes::from(last))).await;
            let _ = sink.close().await;
            return;
        }
        if signals.dropped.load(Ordering::SeqCst) {
            let _ = sink.close().await;
            return;
        }
        if signals.finished.load(Ordering::SeqCst) {
            // the reader is done: write what is already queued, then close
            while let Ok(item) = rx.try_recv() {
                let (Out::Frame(f) | Out::FrameThenClose(f)) = item;
                if write(&mut sink, &[f], &binary, &shared).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
            return;
        }
        batch.clear();
        tokio::select! {
            n = rx.recv_many(&mut batch, 64) => if n == 0 { let _ = sink.close().await; return; },
            _ = signals.notify.notified() => continue,
        }
        let mut frames: Vec<Frame> = Vec::with_capacity(batch.len());
        let mut close_after = false;
        let mut size = 0;
        for item in batch.drain(..) {
            let f = match item {
                Out::Frame(f) => f,
                Out::FrameThenClose(f) => {
                    close_after = true;
                    f
                }
            };
            size += f.len();
            frames.push(f);
            if close_after || size >= BATCH_BYTES {
                if write(&mut sink, &frames, &binary, &shared).await.is_err() {
                    return;
                }
                frames.clear();
                size = 0;
                if close_after {
                    break;
                }
            }
        }
        if !frames.is_empty() && write(&mut sink, &frames, &binary, &shared).await.is_err() {
            return;
        }
        if close_after {
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: Utf8Bytes::from_static("bye"),
                })))
                .await;
            let _ = sink.close().await;
            return;
        }
    }
}

async fn write<E: Engine>(
    sink: &mut SplitSink<WebSocket, Message>,
    frames: &[Frame],
    binary: &AtomicBool,
    shared: &Shared<E>,
) -> Result<(), axum::Error> {
    let text: String = if frames.len() == 1 {
        frames[0].to_string()
    } else {
        out::multi(frames)
    };
    Stats::inc(&shared.stats.frames_out);
    let limits = &shared.config.limits;
    let msg = if binary.load(Ordering::Relaxed)
        && text.len() >= COMPRESS_THRESHOLD
        && text.len() <= limits.max_frame_bytes
    {
        Message::Binary(zlib::compress(&text).into())
    } else {
        Message::Text(Utf8Bytes::from(text))
    };
    sink.send(msg).await
}
