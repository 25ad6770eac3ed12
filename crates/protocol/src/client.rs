//! The client session as a deterministic state machine: no sockets, no clock of its own
//! (quinn-proto style). The driver feeds it inputs (`handle_*`, app commands) with the current
//! time, and drains its outputs (`poll_action`, `poll_event`, `poll_timeout`).
//!
//! It implements the AgoraSig 1.4 web client's behaviour (PROTOCOL.md §1–§14) with the fixes
//! of §17: channels routed by name (Q1), commands usable right after `login` (Q2), state that
//! survives reconnects with one ping timer and one mailbox poller (Q3), prompt mailbox paging
//! (Q5), an expiring msg-v3 dedup set (Q7), logout that always completes (Q11), re-login
//! failures reported (Q12), login/pong timeouts (Q14), reconnects that never stall (Q17), and
//! a request table that is pruned (Q18).

use crate::small::{Queue, VecMap};
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::codes::{login_failure_code, Code, ErrorKind};
use crate::json::{as_u64, push_str, push_u64, JsonValue};
use crate::limits::Limits;
use crate::msg;
use crate::names::{call, event, fixed, msgtype, notify};

/// Milliseconds on the driver's clock (any epoch, monotonic).
pub type Millis = u64;

/// One WebSocket attempt of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u32);
/// A Channel object of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelId(pub u32);
/// A Call object of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u32);
/// An app request (its completion is reported by [`Event::Done`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReqId(pub u32);

/// Session states as `getStatus()` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Not logged in; terminal.
    LoggedOut = 0,
    /// Logging in.
    LoggingIn = 1,
    /// Logged in.
    LoggedIn = 2,
    /// Reconnecting after a lost connection.
    Reconnecting = 3,
}

/// Where and how to log in.
#[derive(Clone, Debug)]
pub struct Config {
    /// App id (`vid`).
    pub app_id: String,
    /// Account name.
    pub account: String,
    /// Token (`_no_need_token` or `""` without a certificate).
    pub token: String,
    /// Reconnect attempts before giving up (0 → the default, 10).
    pub reconnect_count: u32,
    /// Reconnect window in milliseconds (0 → the default, 300 000).
    pub reconnect_time_ms: u64,
    /// WebSocket URLs to use verbatim, round-robin (`setup_debugging('ap_url', …)`).
    pub servers: Vec<String>,
    /// LBS base URLs asked `GET <lbs>/getaddr?vid=<app id>` when `servers` is empty.
    pub lbs: Vec<String>,
    /// Limits for local input checks and timers.
    pub limits: Limits,
}

impl Config {
    /// A config with defaults for everything but the identity.
    pub fn new(app_id: &str, account: &str, token: &str) -> Config {
        Config {
            app_id: app_id.into(),
            account: account.into(),
            token: token.into(),
            reconnect_count: 0,
            reconnect_time_ms: 0,
            servers: Vec::new(),
            lbs: Vec::new(),
            limits: Limits::default(),
        }
    }
}

/// IO the driver must perform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a WebSocket to `url`; report `handle_open`/`handle_close` for `conn`.
    Connect {
        /// Identity of this attempt.
        conn: ConnId,
        /// `ws://` or `wss://` URL.
        url: String,
    },
    /// Send a text frame on `conn`.
    Send {
        /// Connection.
        conn: ConnId,
        /// JSON text.
        text: String,
    },
    /// Close `conn` (no `handle_close` is needed afterwards).
    Close {
        /// Connection.
        conn: ConnId,
    },
    /// HTTP GET `url`; report `handle_fetch(id, body)`.
    Fetch {
        /// Identity of this request.
        id: u32,
        /// Full URL.
        url: String,
    },
}

/// What a Call event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallEvent {
    /// `onInviteReceivedByPeer(extra)`.
    ReceivedByPeer,
    /// `onInviteAcceptedByPeer(extra)`.
    AcceptedByPeer,
    /// `onInviteRefusedByPeer(extra)`.
    RefusedByPeer,
    /// `onInviteFailed(extra)`.
    Failed,
    /// `onInviteEndByPeer(extra)`.
    EndByPeer,
    /// `onInviteEndByMyself(extra)`.
    EndByMyself,
    /// `onInviteMsg(extra)`.
    Msg,
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure<V> {
    /// The error string (server's `err`, or a local one such as `too_large`).
    pub err: String,
    /// The documented code for it.
    pub code: Code,
    /// The reply's third element as received, when there was one.
    pub raw: Option<V>,
}

/// Something the app should see (one callback each).
#[derive(Clone, Debug, PartialEq)]
pub enum Event<V> {
    /// `onLoginSuccess(uid)`; also after each successful reconnect.
    LoginSuccess {
        /// The server's uid.
        uid: V,
    },
    /// `onLoginFailed(code)`.
    LoginFailed {
        /// 201, 204, 206, 207 or 209.
        code: Code,
    },
    /// `onLogout(code)`.
    Logout {
        /// 101 user, 102 network/server, 103 kicked.
        code: Code,
    },
    /// `onReconnecting(nretry)`: a reconnect attempt starts.
    Reconnecting {
        /// 1 for the first attempt after a loss.
        attempt: u32,
    },
    /// `onReconnected()`: logged in again after a loss.
    Reconnected,
    /// `onError(name, ecode, desc)`.
    Error {
        /// The operation (`messageInstantSend`, `channelJoin`, …).
        name: &'static str,
        /// Documented code.
        code: Code,
        /// The error string.
        desc: String,
    },
    /// `onMessageInstantReceive(account, 0, msg)`.
    MessageInstant {
        /// Sender.
        account: String,
        /// Text.
        msg: String,
    },
    /// `onInviteReceived(call)`.
    InviteReceived {
        /// The new Call.
        call: CallId,
        /// Channel name.
        channel: String,
        /// The inviter.
        peer: String,
        /// `extra` as received.
        extra: V,
    },
    /// A Call callback.
    Call {
        /// The Call.
        call: CallId,
        /// Which callback.
        what: CallEvent,
        /// Its argument.
        extra: V,
        /// For failures and server-side ends: the INVITE_E_* (or GENERAL_E_*) code, passed
        /// to the opensig SDK's `onInviteFailed(extra, ecode)` as an extra argument.
        code: Option<u32>,
    },
    /// `onChannelJoined()`.
    ChannelJoined {
        /// The Channel.
        ch: ChannelId,
    },
    /// `onChannelJoinFailed(err)`.
    ChannelJoinFailed {
        /// The Channel.
        ch: ChannelId,
        /// Error string.
        err: String,
    },
    /// `onChannelLeaved(code)`, or the leave callback (the driver decides).
    ChannelLeft {
        /// The Channel.
        ch: ChannelId,
        /// 0 after `channelLeave`; 604 when a rejoin after reconnect failed.
        code: u32,
    },
    /// `onChannelUserList(list)` with the server's list verbatim.
    ChannelUserList {
        /// The Channel.
        ch: ChannelId,
        /// `[[account, uid], …]`.
        list: V,
    },
    /// `onChannelUserJoined(account, uid)`.
    ChannelUserJoined {
        /// The Channel.
        ch: ChannelId,
        /// Who.
        account: V,
        /// Their uid.
        uid: V,
    },
    /// `onChannelUserLeaved(account, uid)`.
    ChannelUserLeft {
        /// The Channel.
        ch: ChannelId,
        /// Who.
        account: V,
        /// Their uid.
        uid: V,
    },
    /// `onChannelAttrUpdated(name, value, type)`.
    ChannelAttr {
        /// The Channel.
        ch: ChannelId,
        /// Attribute name.
        name: V,
        /// Value.
        value: V,
        /// `update`, `del` or `clear`.
        kind: V,
    },
    /// `onMessageChannelReceive(account, uid, msg)`.
    ChannelMessage {
        /// The Channel.
        ch: ChannelId,
        /// Sender.
        account: V,
        /// Their uid.
        uid: V,
        /// Text.
        msg: V,
    },
    /// A request finished: `Ok(reply body)` or the failure.
    Done {
        /// Which request.
        req: ReqId,
        /// Outcome.
        result: Result<V, Failure<V>>,
    },
    /// A diagnostic for `setDoLog`.
    Log {
        /// Text.
        text: String,
    },
}

#[derive(Clone, Debug)]
enum Kind {
    /// App request: report `Done`.
    User,
    /// Mailbox poll.
    GetMsg,
    /// Channel join (initial when `rejoin` is false).
    Join { ch: u32, rejoin: bool },
    /// Channel leave.
    Leave { ch: u32 },
    /// Outgoing invite.
    Invite { call: u32 },
    /// Automatic invite ack: nobody waits for it.
    Silent,
    /// user_logout.
    Logout,
}

#[derive(Clone, Debug)]
struct Req {
    id: u32,
    name: String,
    /// Members of the args object without braces and without `line`.
    body: String,
    kind: Kind,
    op: &'static str,
    deadline: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChanState {
    Joining,
    Joined,
    Left,
}

#[derive(Clone, Debug)]
struct Chan {
    name: String,
    state: ChanState,
    last_seq: u64,
}

#[derive(Clone, Debug)]
struct Conn {
    id: ConnId,
    open: bool,
    /// CONNECTING → connect timeout; open → login_ret timeout; logged in → none.
    deadline: Option<Millis>,
}

#[derive(Default, Debug)]
struct Mailbox {
    /// Highest version processed locally (sent as `ver_clear`); survives reconnects.
    acked: u64,
    /// Highest version announced by the server.
    notified: u64,
    /// `ver_clear` of the last reply.
    server_clear: u64,
    last_poll: Millis,
    in_flight: bool,
    /// When processed-but-unacknowledged messages must be acknowledged.
    ack_due: Option<Millis>,
}

/// Seen msg-v3 ids, forgotten after the dedup window (Q7) and capped in number.
#[derive(Default, Debug)]
struct Dedup {
    seen: Vec<(Millis, String)>,
}

const DEDUP_MAX: usize = 2048;

impl Dedup {
    fn first_time(&mut self, id: &str, now: Millis, window: Millis) -> bool {
        let expired = self
            .seen
            .iter()
            .take_while(|(t, _)| now.saturating_sub(*t) > window)
            .count()
            .max(self.seen.len().saturating_sub(DEDUP_MAX - 1));
        if expired > 0 {
            self.seen.drain(..expired);
        }
        if self.seen.iter().any(|(_, s)| s == id) {
            return false;
        }
        self.seen.push((now, id.to_string()));
        true
    }
}

const MAILBOX_PAGE: u64 = 30;
const ACK_DELAY_MS: Millis = 1_000;
const RESYNC_MS: Millis = 60_000;
const LOGOUT_TIMEOUT_MS: Millis = 5_000;
const LBS_TIMEOUT_MS: Millis = 5_000;
const FIRST_RETRY_DELAY_MS: Millis = 200;
const MAX_RETRY_DELAY_MS: Millis = 2_000;

/// A session: login, reconnect, mailbox, channels, calls and requests.
pub struct Client<V: JsonValue> {
    cfg: Config,
    state: State,
    conn_seq: u32,
    conn: Option<Conn>,
    server_rr: usize,
    /// Connection attempts made during the initial login.
    login_attempts: usize,
    login_deadline: Option<Millis>,
    fetch_seq: u32,
    pending_fetch: Option<u32>,
    fetch_deadline: Option<Millis>,
    lbs_next: usize,
    retry_count: u32,
    retry_delay: Millis,
    window_start: Millis,
    reconnect_at: Option<Millis>,
    logged_in_once: bool,
    line: String,
    ping_seq: u64,
    next_ping: Option<Millis>,
    last_rx: Millis,
    logout_deadline: Option<Millis>,
    logout_waiters: Vec<u32>,
    next_id: u32,
    queue: Queue<Req>,
    in_flight: VecMap<u32, Req>,
    mailbox: Mailbox,
    dedup: Dedup,
    channels: VecMap<u32, Chan>,
    by_name: VecMap<String, u32>,
    current: Option<u32>,
    calls: VecMap<(String, String), u32>,
    actions: Queue<Action>,
    events: Queue<Event<V>>,
}

/// Builds the members of a JSON object (without braces).
struct Body(String);

impl Body {
    fn new() -> Body {
        Body(String::new())
    }
    fn key(mut self, k: &str) -> Body {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        push_str(&mut self.0, k);
        self.0.push(':');
        self
    }
    fn s(self, k: &str, v: &str) -> Body {
        let mut b = self.key(k);
        push_str(&mut b.0, v);
        b
    }
    fn n(self, k: &str, v: u64) -> Body {
        let mut b = self.key(k);
        push_u64(&mut b.0, v);
        b
    }
    fn raw(self, k: &str, json: &str) -> Body {
        let mut b = self.key(k);
        b.0.push_str(json);
        b
    }
}

fn fail<V>(err: ErrorKind) -> Failure<V> {
    Failure {
        err: err.as_str().to_string(),
        code: err.code(),
        raw: None,
    }
}

impl<V: JsonValue> Client<V> {
    /// Start a session: state 1, and the first connection (or LBS lookup) is requested at once.
    pub fn new(mut cfg: Config, now: Millis) -> Client<V> {
        if cfg.reconnect_count == 0 {
            cfg.reconnect_count = cfg.limits.reconnect_count_default;
        }
        if cfg.reconnect_time_ms == 0 {
            cfg.reconnect_time_ms = cfg.limits.reconnect_time_default_ms;
        }
        let mut c = Client {
            cfg,
            state: State::LoggingIn,
            conn_seq: 0,
            conn: None,
            server_rr: 0,
            login_attempts: 0,
            login_deadline: None,
            fetch_seq: 0,
            pending_fetch: None,
            fetch_deadline: None,
            lbs_next: 0,
            retry_count: 0,
            retry_delay: FIRST_RETRY_DELAY_MS,
            window_start: now,
            reconnect_at: None,
            logged_in_once: false,
            line: String::new(),
            ping_seq: 0,
            next_ping: None,
            last_rx: now,
            logout_deadline: None,
            logout_waiters: Vec::new(),
            next_id: 0,
            queue: Queue::new(),
            in_flight: VecMap::new(),
            mailbox: Mailbox::default(),
            dedup: Dedup::default(),
            channels: VecMap::new(),
            by_name: VecMap::new(),
            current: None,
            calls: VecMap::new(),
            actions: Queue::new(),
            events: Queue::new(),
        };
        if c.cfg.limits.check_account(&c.cfg.account).is_err() {
            c.state = State::LoggedOut;
            c.events.push_back(Event::LoginFailed {
                code: Code::LoginWrongAccount,
            });
            return c;
        }
        c.login_deadline = Some(now + c.cfg.limits.client_login_timeout_ms);
        if c.cfg.servers.is_empty() {
            c.next_lbs(now);
        } else {
            c.connect_next(now);
        }
        c
    }

    /// `getStatus()`.
    pub fn state(&self) -> State {
        self.state
    }

    /// The account this session logs in as.
    pub fn account(&self) -> &str {
        &self.cfg.account
    }

    /// The server list in use (after `ap_url` or an LBS answer).
    pub fn servers(&self) -> &[String] {
        &self.cfg.servers
    }

    /// The next IO to perform.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event for the app.
    pub fn poll_event(&mut self) -> Option<Event<V>> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut t: Option<Millis> = None;
        let mut consider = |d: Option<Millis>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |x| x.min(d)));
            }
        };
        if self.state == State::LoggedOut {
            return None;
        }
        consider(self.login_deadline);
        consider(self.fetch_deadline);
        consider(self.reconnect_at);
        consider(self.logout_deadline);
        if let Some(c) = &self.conn {
            consider(c.deadline);
        }
        if self.state == State::LoggedIn {
            consider(self.next_ping);
            consider(Some(self.last_rx + self.cfg.limits.pong_timeout_ms));
            consider(self.mailbox.ack_due);
            if !self.mailbox.in_flight {
                consider(Some(self.mailbox.last_poll + RESYNC_MS));
            }
        }
        for r in self.in_flight.values().chain(self.queue.iter()) {
            consider(Some(r.deadline));
        }
        t
    }

    // ---------------------------------------------------------------- connection lifecycle

    fn connect_next(&mut self, now: Millis) {
        if self.cfg.servers.is_empty() {
            return;
        }
        let url = self.cfg.servers[self.server_rr % self.cfg.servers.len()].clone();
        self.server_rr += 1;
        self.conn_seq += 1;
        let id = ConnId(self.conn_seq);
        self.conn = Some(Conn {
            id,
            open: false,
            deadline: Some(now + self.cfg.limits.connect_timeout_ms),
        });
        if self.state == State::LoggingIn {
            self.login_attempts += 1;
        }
        self.actions.push_back(Action::Connect { conn: id, url });
    }

    fn next_lbs(&mut self, now: Millis) {
        if self.lbs_next >= self.cfg.lbs.len() {
            self.login_failed(Code::LoginNet, now);
            return;
        }
        let base = self.cfg.lbs[self.lbs_next]
            .trim_end_matches('/')
            .to_string();
        self.lbs_next += 1;
        self.fetch_seq += 1;
        self.pending_fetch = Some(self.fetch_seq);
        self.fetch_deadline = Some(now + LBS_TIMEOUT_MS);
        let mut url = base;
        url.push_str("/getaddr?vid=");
        url.push_str(&self.cfg.app_id);
        self.actions.push_back(Action::Fetch {
            id: self.fetch_seq,
            url,
        });
    }

    /// The LBS answer for `Fetch { id }`: the response body parsed as JSON, or `None` on any
    /// failure (network, non-200, not JSON).
    pub fn handle_fetch(&mut self, id: u32, body: Option<V>, now: Millis) {
        if self.pending_fetch != Some(id) || self.state != State::LoggingIn {
            return;
        }
        self.pending_fetch = None;
        self.fetch_deadline = None;
        let servers: Vec<String> = body
            .and_then(|b| b.get("web"))
            .map(|web| {
                (0..web.array_len().unwrap_or(0))
                    .filter_map(|i| web.at(i).and_then(|e| server_url(&e)))
                    .collect()
            })
            .unwrap_or_default();
        if servers.is_empty() {
            self.next_lbs(now);
        } else {
            self.cfg.servers = servers;
            self.connect_next(now);
        }
    }

    fn is_current(&self, conn: ConnId) -> bool {
        self.conn.as_ref().is_some_and(|c| c.id == conn)
    }

    /// The WebSocket `conn` opened.
    pub fn handle_open(&mut self, conn: ConnId, now: Millis) {
        if !self.is_current(conn) || matches!(self.state, State::LoggedOut | State::LoggedIn) {
            self.actions.push_back(Action::Close { conn });
            return;
        }
        let login_reply_timeout = self.cfg.limits.connect_timeout_ms * 2;
        if let Some(c) = self.conn.as_mut() {
            c.open = true;
            c.deadline = Some(now + login_reply_timeout);
        }
        self.last_rx = now;
        let mut text = String::with_capacity(128);
        text.push_str("[\"login\",{");
        let body = Body::new()
            .s("vid", &self.cfg.app_id)
            .s("account", &self.cfg.account)
            .n("uid", 0)
            .s("token", &self.cfg.token)
            .s("device", fixed::DEVICE_WEB)
            .s("ip", "");
        text.push_str(&body.0);
        text.push_str("}]");
        self.actions.push_back(Action::Send { conn, text });
    }

    /// The WebSocket `conn` closed or failed (error and close are treated alike, Q15).
    pub fn handle_close(&mut self, conn: ConnId, now: Millis) {
        if !self.is_current(conn) {
            return;
        }
        self.conn = None;
        self.connection_lost(now);
    }

    fn drop_conn(&mut self) {
        if let Some(c) = self.conn.take() {
            self.actions.push_back(Action::Close { conn: c.id });
        }
    }

    fn connection_lost(&mut self, now: Millis) {
        self.mailbox.in_flight = false;
        self.next_ping = None;
        self.line.clear();
        // Requests sent on the lost connection are sent again after re-login (Q3); mailbox
        // polls are simply redone.
        let lost: Vec<Req> = core::mem::take(&mut self.in_flight).into_values().collect();
        for r in lost.into_iter().rev() {
            match r.kind {
                Kind::GetMsg => {}
                Kind::Join { rejoin: true, .. } => {}
                Kind::Logout => {
                    self.finish_logout(now);
                    return;
                }
                _ => self.queue.push_front(r),
            }
        }
        match self.state {
            State::LoggingIn => {
                if self.login_attempts < self.cfg.servers.len() {
                    self.connect_next(now);
                } else {
                    self.login_failed(Code::LoginNet, now);
                }
            }
            State::LoggedIn => {
                if self.logout_deadline.is_some() {
                    self.finish_logout(now);
                    return;
                }
                self.state = State::Reconnecting;
                self.retry_count = 0;
                self.retry_delay = FIRST_RETRY_DELAY_MS;
                self.window_start = now;
                self.schedule_reconnect(now);
            }
            State::Reconnecting => self.schedule_reconnect(now),
            State::LoggedOut => {}
        }
    }

    fn schedule_reconnect(&mut self, now: Millis) {
        let in_window = now.saturating_sub(self.window_start) < self.cfg.reconnect_time_ms;
        if in_window && self.retry_count < self.cfg.reconnect_count {
            self.reconnect_at = Some(now + self.retry_delay);
            self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY_DELAY_MS);
        } else {
            self.end_session(Code::LogoutNet, now);
        }
    }

    fn login_failed(&mut self, code: Code, now: Millis) {
        self.drop_conn();
        self.state = State::LoggedOut;
        self.events.push_back(Event::LoginFailed { code });
        self.shut_down(now);
    }

    fn end_session(&mut self, code: Code, now: Millis) {
        self.drop_conn();
        self.state = State::LoggedOut;
        self.events.push_back(Event::Logout { code });
        self.shut_down(now);
    }

    /// State 0: stop every timer and fail what is still waiting.
    fn shut_down(&mut self, now: Millis) {
        self.login_deadline = None;
        self.reconnect_at = None;
        self.logout_deadline = None;
        self.next_ping = None;
        self.pending_fetch = None;
        self.fetch_deadline = None;
        self.mailbox.ack_due = None;
        let waiting: Vec<Req> = core::mem::take(&mut self.in_flight)
            .into_values()
            .chain(core::mem::take(&mut self.queue))
            .collect();
        for r in waiting {
            if !matches!(r.kind, Kind::Logout) {
                self.complete(r, Err(fail(ErrorKind::SessionEnded)), now);
            }
        }
        for id in core::mem::take(&mut self.logout_waiters) {
            self.events.push_back(Event::Done {
                req: ReqId(id),
                result: Ok(V::from_f64(Code::LogoutUser.value() as f64)),
            });
        }
    }

    /// Time passed: fire whatever is due.
    pub fn handle_timeout(&mut self, now: Millis) {
        if self.state == State::LoggedOut {
            return;
        }
        if self.login_deadline.is_some_and(|d| now >= d) && self.state == State::LoggingIn {
            self.login_failed(Code::LoginNet, now);
            return;
        }
        if self.logout_deadline.is_some_and(|d| now >= d) {
            self.finish_logout(now);
            return;
        }
        if self.fetch_deadline.is_some_and(|d| now >= d) && self.pending_fetch.is_some() {
            // this LBS host did not answer in time: ask the next one
            self.pending_fetch = None;
            self.fetch_deadline = None;
            self.next_lbs(now);
            if self.state == State::LoggedOut {
                return;
            }
        }
        if let Some(c) = &self.conn {
            if c.deadline.is_some_and(|d| now >= d) {
                self.log("no answer from the server in time");
                self.drop_conn();
                self.connection_lost(now);
                if self.state == State::LoggedOut {
                    return;
                }
            }
        }
        if self.state == State::Reconnecting && self.reconnect_at.is_some_and(|t| now >= t) {
            self.reconnect_at = None;
            self.retry_count += 1;
            self.events.push_back(Event::Reconnecting {
                attempt: self.retry_count,
            });
            self.connect_next(now);
        }
        if self.state == State::LoggedIn {
            if now >= self.last_rx + self.cfg.limits.pong_timeout_ms {
                self.log("no traffic from the server: reconnecting");
                self.drop_conn();
                self.connection_lost(now);
                if self.state == State::LoggedOut {
                    return;
                }
                // (requests that timed out meanwhile still expire below)
            } else {
                if self.next_ping.is_some_and(|t| now >= t) {
                    self.send_ping(now);
                }
                let ack_due = self.mailbox.ack_due.is_some_and(|t| now >= t);
                let idle = now >= self.mailbox.last_poll + RESYNC_MS;
                if ack_due || idle {
                    self.poll_mailbox(now);
                }
            }
        }
        // request timeouts
        let expired: Vec<u32> = self
            .in_flight
            .values()
            .filter(|r| now >= r.deadline)
            .map(|r| r.id)
            .collect();
        for id in expired {
            if let Some(r) = self.in_flight.remove(&id) {
                if matches!(r.kind, Kind::GetMsg) {
                    self.mailbox.in_flight = false;
                }
                self.complete(r, Err(fail(ErrorKind::Timeout)), now);
            }
        }
        while let Some(pos) = self.queue.iter().position(|r| now >= r.deadline) {
            if let Some(r) = self.queue.remove(pos) {
                self.complete(r, Err(fail(ErrorKind::Timeout)), now);
            }
        }
    }

    fn send_ping(&mut self, now: Millis) {
        self.ping_seq += 1;
        let mut text = String::from("[\"ping\",");
        push_u64(&mut text, self.ping_seq);
        text.push(']');
        self.send_text(text);
        self.next_ping = Some(now + self.cfg.limits.ping_interval_ms);
    }

    fn send_text(&mut self, text: String) {
        if let Some(c) = &self.conn {
            if c.open {
                self.actions.push_back(Action::Send { conn: c.id, text });
            }
        }
    }

    fn log(&mut self, text: &str) {
        self.events.push_back(Event::Log { text: text.into() });
    }

    // ---------------------------------------------------------------- incoming frames

    /// A frame arrived on `conn` as JSON text (zlib frames already inflated).
    pub fn handle_text(&mut self, conn: ConnId, text: &str, now: Millis) {
        match V::parse(text) {
            Some(v) => self.handle_frame(conn, v, now),
            None => self.log("ignored a frame that is not JSON"),
        }
    }

    /// A frame arrived on `conn`, already parsed.
    pub fn handle_frame(&mut self, conn: ConnId, frame: V, now: Millis) {
        if !self.is_current(conn) {
            return;
        }
        self.last_rx = now;
        self.dispatch(frame, true, now);
    }

    fn dispatch(&mut self, frame: V, top_level: bool, now: Millis) {
        let Some(name) = frame.at(0).and_then(|e| e.as_string()) else {
            return;
        };
        let payload = frame.at(1);
        match name.as_str() {
            event::MULTI => {
                if let Some(list) = payload {
                    for i in 0..list.array_len().unwrap_or(0) {
                        if let Some(f) = list.at(i) {
                            self.dispatch(f, false, now);
                            if self.state == State::LoggedOut {
                                return;
                            }
                        }
                    }
                }
            }
            event::LOGIN_RET => {
                if let Some(p) = payload {
                    self.on_login_ret(p, now);
                }
            }
            event::CALL2_RET => {
                if let Some(p) = payload {
                    self.on_call2_ret(p, now);
                }
            }
            event::NOTIFY => {
                if let Some(p) = payload {
                    self.on_notify(p, now);
                }
            }
            event::KICK => {
                if self.state == State::LoggingIn {
                    self.login_failed(Code::LoginTokenKicked, now);
                } else {
                    self.end_session(Code::LogoutKicked, now);
                }
            }
            event::CLOSE | event::CLOSE_SILENT => {
                if self.state == State::LoggingIn {
                    let _ = top_level;
                    self.login_failed(Code::LoginNet, now);
                } else {
                    self.end_session(Code::LogoutNet, now);
                }
            }
            _ => {} // pong and unknown events: nothing to do (any frame feeds the watchdog)
        }
    }

    fn on_login_ret(&mut self, p: V, now: Millis) {
        if !matches!(self.state, State::LoggingIn | State::Reconnecting) {
            return; // a late reply after logout (Q11)
        }
        let err = p.at(0).and_then(|e| e.as_string()).unwrap_or_default();
        let body = p
            .at(1)
            .and_then(|b| b.as_string())
            .and_then(|t| V::parse(&t));
        let ok = err.is_empty()
            && body
                .as_ref()
                .and_then(|b| b.get("result"))
                .and_then(|r| r.as_string())
                .as_deref()
                == Some(fixed::RESULT_OK);
        let line = body
            .as_ref()
            .and_then(|b| b.get("line"))
            .and_then(|l| l.as_string());
        match (ok, line) {
            (true, Some(line)) if !line.is_empty() => {
                let uid = body
                    .as_ref()
                    .and_then(|b| b.get("uid"))
                    .unwrap_or_else(|| V::from_f64(0.0));
                self.logged_in(line, uid, now);
            }
            _ => {
                let reason = if err.is_empty() {
                    body.as_ref()
                        .and_then(|b| b.get("reason"))
                        .and_then(|r| r.as_string())
                        .unwrap_or_default()
                } else {
                    err
                };
                let code = login_failure_code(&reason);
                if self.state == State::LoggingIn
                    && code == Code::LoginNet
                    && self.login_attempts < self.cfg.servers.len()
                {
                    self.drop_conn();
                    self.connect_next(now);
                } else if self.state == State::LoggingIn {
                    self.login_failed(code, now);
                } else if code == Code::LoginNet {
                    // the node cannot serve us (shutting down, full): try the next one
                    self.drop_conn();
                    self.connection_lost(now);
                } else {
                    // re-login refused (token expired, kicked…): the session is over (Q12)
                    self.end_session(Code::LogoutNet, now);
                }
            }
        }
    }

    fn logged_in(&mut self, line: String, uid: V, now: Millis) {
        let reconnected = self.state == State::Reconnecting;
        self.state = State::LoggedIn;
        self.line = line;
        self.login_deadline = None;
        self.reconnect_at = None;
        self.retry_count = 0;
        self.retry_delay = FIRST_RETRY_DELAY_MS;
        self.last_rx = now;
        if let Some(c) = self.conn.as_mut() {
            c.deadline = None;
        }
        self.send_text("[\"set_flag\",{\"binary\":1}]".into());
        self.send_ping(now);
        self.events.push_back(Event::LoginSuccess { uid });
        if reconnected {
            self.events.push_back(Event::Reconnected);
        }
        self.logged_in_once = true;
        self.mailbox.in_flight = false;
        self.poll_mailbox(now);
        if reconnected {
            let rejoin: Vec<(u32, String)> = self
                .channels
                .iter()
                .filter(|(_, c)| c.state == ChanState::Joined)
                .map(|(id, c)| (*id, c.name.clone()))
                .collect();
            for (ch, name) in rejoin {
                let body = Body::new().s("name", &name).0;
                self.request_front(
                    call::CHANNEL_JOIN,
                    body,
                    Kind::Join { ch, rejoin: true },
                    "channelJoin",
                    now,
                );
            }
        }
        self.flush(now);
    }

    fn on_call2_ret(&mut self, p: V, now: Millis) {
        let Some(id) = p
            .at(0)
            .and_then(|i| as_u64(&i).or_else(|| i.as_string().and_then(|s| s.parse().ok())))
        else {
            return;
        };
        let Some(req) = self.in_flight.remove(&(id as u32)) else {
            return; // unknown or duplicate reply (Q18)
        };
        let err = p.at(1).and_then(|e| e.as_string()).unwrap_or_default();
        let raw = p.at(2);
        let result = if !err.is_empty() {
            Err(Failure {
                code: crate::codes::call_error_code(&err),
                err,
                raw,
            })
        } else {
            let text = raw.as_ref().and_then(|r| r.as_string());
            match text.as_deref().and_then(V::parse) {
                Some(body) => {
                    let result = body.get("result").and_then(|r| r.as_string());
                    if result.as_deref() == Some(fixed::RESULT_OK) {
                        Ok(body)
                    } else {
                        // Q19: data.result, then reason, then result
                        let e = body
                            .get("data")
                            .and_then(|d| d.get("result"))
                            .and_then(|r| r.as_string())
                            .or_else(|| body.get("reason").and_then(|r| r.as_string()))
                            .or(result)
                            .unwrap_or_else(|| wrong_resp(text.as_deref()));
                        Err(Failure {
                            code: crate::codes::call_error_code(&e),
                            err: e,
                            raw: Some(body),
                        })
                    }
                }
                None => Err(Failure {
                    err: wrong_resp(text.as_deref()),
                    code: Code::General,
                    raw,
                }),
            }
        };
        self.complete(req, result, now);
    }

    fn complete(&mut self, req: Req, result: Result<V, Failure<V>>, now: Millis) {
        match req.kind {
            Kind::User => {}
            Kind::Silent => return,
            Kind::GetMsg => {
                self.on_getmsg_reply(result, now);
                return;
            }
            Kind::Logout => {
                if self.state != State::LoggedOut {
                    self.finish_logout(now);
                }
                return;
            }
            Kind::Join { ch, rejoin } => {
                self.join_reply(ch, rejoin, &result);
                if let (Err(f), false) = (&result, rejoin) {
                    self.events.push_back(Event::Error {
                        name: req.op,
                        code: f.code,
                        desc: f.err.clone(),
                    });
                }
                return;
            }
            Kind::Leave { ch } => {
                if let Some(c) = self.channels.remove(&ch) {
                    if self.by_name.get(&c.name) == Some(&ch) {
                        self.by_name.remove(&c.name);
                    }
                    if self.current == Some(ch) {
                        self.current = None;
                    }
                }
                self.events.push_back(Event::ChannelLeft {
                    ch: ChannelId(ch),
                    code: 0,
                });
                // a leave always "succeeds" for the app (the original treats any reply as left)
                self.events.push_back(Event::Done {
                    req: ReqId(req.id),
                    result: Ok(result.unwrap_or_else(|_| V::from_string(""))),
                });
                return;
            }
            Kind::Invite { call } => {
                if let Err(f) = &result {
                    self.events.push_back(Event::Call {
                        call: CallId(call),
                        what: CallEvent::Failed,
                        extra: V::from_string(&f.err),
                        code: Some(f.code.value()),
                    });
                    self.calls.retain(|_, v| *v != call);
                }
            }
        }
        if let Err(f) = &result {
            self.events.push_back(Event::Error {
                name: req.op,
                code: f.code,
                desc: f.err.clone(),
            });
        }
        self.events.push_back(Event::Done {
            req: ReqId(req.id),
            result,
        });
    }

    fn join_reply(&mut self, ch: u32, rejoin: bool, result: &Result<V, Failure<V>>) {
        match result {
            Ok(body) => {
                let Some(c) = self.channels.get_mut(&ch) else {
                    return;
                };
                if c.state == ChanState::Left {
                    return;
                }
                c.state = ChanState::Joined;
                c.last_seq = 0;
                if !rejoin {
                    self.events
                        .push_back(Event::ChannelJoined { ch: ChannelId(ch) });
                }
                let list = body
                    .get("list")
                    .unwrap_or_else(|| V::parse("[]").unwrap_or_else(|| V::from_string("")));
                self.events.push_back(Event::ChannelUserList {
                    ch: ChannelId(ch),
                    list,
                });
                if let Some(attrs) = body.get("attrs") {
                    let update = V::from_string(crate::names::attr_change::UPDATE);
                    for k in attrs.keys() {
                        if let Some(v) = attrs.get(&k) {
                            self.events.push_back(Event::ChannelAttr {
                                ch: ChannelId(ch),
                                name: V::from_string(&k),
                                value: v,
                                kind: update.clone(),
                            });
                        }
                    }
                }
            }
            Err(f) => {
                if let Some(c) = self.channels.get_mut(&ch) {
                    let was_joined = rejoin;
                    c.state = ChanState::Left;
                    let name = c.name.clone();
                    if self.by_name.get(&name) == Some(&ch) {
                        self.by_name.remove(&name);
                    }
                    if was_joined {
                        self.events.push_back(Event::ChannelLeft {
                            ch: ChannelId(ch),
                            code: Code::LeaveChannelDisconn.value(),
                        });
                    } else {
                        self.events.push_back(Event::ChannelJoinFailed {
                            ch: ChannelId(ch),
                            err: f.err.clone(),
                        });
                    }
                }
            }
        }
    }

    fn on_notify(&mut self, p: V, now: Millis) {
        // string form: "x kind arg" → [kind, arg]
        let (kind, arg1) = match p.as_string() {
            Some(s) => {
                let f = msg::python_split(&s, 2);
                if f.len() < 3 {
                    return;
                }
                (
                    f[1].to_string(),
                    V::parse(f[2]).or_else(|| Some(V::from_string(f[2]))),
                )
            }
            None => match p.at(0).and_then(|k| k.as_string()) {
                Some(k) => (k, p.at(1)),
                None => return,
            },
        };
        match kind.as_str() {
            notify::CHANNEL2 => {
                let channel = arg1.and_then(|c| c.as_string()).unwrap_or_default();
                let seq = p.at(2).as_ref().and_then(as_u64).unwrap_or(0);
                let text = p.at(3).and_then(|m| m.as_string()).unwrap_or_default();
                self.on_channel2(&channel, seq, &text);
            }
            notify::MSG => {
                let v = arg1.as_ref().and_then(as_u64).unwrap_or(0);
                self.mailbox.notified = self.mailbox.notified.max(v);
                self.poll_mailbox(now);
            }
            notify::RECVMSG => {
                let Some(text) = arg1.and_then(|a| a.as_string()) else {
                    return;
                };
                let Some(pair) = V::parse(&text) else { return };
                let (Some(v), Some(m)) = (
                    pair.at(0).as_ref().and_then(as_u64),
                    pair.at(1).and_then(|m| m.as_string()),
                ) else {
                    return;
                };
                if v == self.mailbox.acked + 1 {
                    self.process_user_message(&m, now);
                    self.mailbox.acked = v;
                    self.mailbox.ack_due.get_or_insert(now + ACK_DELAY_MS);
                } else if v > self.mailbox.acked {
                    self.mailbox.notified = self.mailbox.notified.max(v);
                    self.poll_mailbox(now);
                }
            }
            notify::RECVMSG_BY_MSGID => {
                if let Some(m) = arg1.and_then(|a| a.as_string()) {
                    self.process_user_message(&m, now);
                }
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------- mailbox (mode 0)

    fn poll_mailbox(&mut self, now: Millis) {
        if self.mailbox.in_flight || self.state != State::LoggedIn {
            return;
        }
        self.mailbox.in_flight = true;
        self.mailbox.last_poll = now;
        self.mailbox.ack_due = None;
        let body = Body::new()
            .n("ver_clear", self.mailbox.acked)
            .n("max", MAILBOX_PAGE)
            .0;
        self.request_front(call::USER_GETMSG, body, Kind::GetMsg, "getmsg", now);
    }

    fn on_getmsg_reply(&mut self, result: Result<V, Failure<V>>, now: Millis) {
        self.mailbox.in_flight = false;
        let Ok(body) = result else { return };
        let Some(clear) = body.get("ver_clear").as_ref().and_then(as_u64) else {
            self.log("mailbox reply without ver_clear");
            return;
        };
        self.mailbox.server_clear = clear;
        self.mailbox.acked = self.mailbox.acked.max(clear);
        let msgs = body.get("msgs");
        let count = msgs.as_ref().and_then(|m| m.array_len()).unwrap_or(0);
        for i in 0..count {
            let Some(entry) = msgs.as_ref().and_then(|m| m.at(i)) else {
                continue;
            };
            let (Some(v), Some(text)) = (
                entry.at(0).as_ref().and_then(as_u64),
                entry.at(1).and_then(|t| t.as_string()),
            ) else {
                continue;
            };
            if v > self.mailbox.acked {
                self.process_user_message(&text, now);
                self.mailbox.acked = v;
            }
        }
        if count as u64 >= MAILBOX_PAGE || self.mailbox.acked < self.mailbox.notified {
            // more pages, or news that arrived meanwhile: fetch (and acknowledge) now (Q5)
            self.poll_mailbox(now);
        } else if self.mailbox.server_clear < self.mailbox.acked {
            self.mailbox.ack_due.get_or_insert(now + ACK_DELAY_MS);
        }
    }

    fn process_user_message(&mut self, text: &str, now: Millis) {
        let Some(m) = msg::parse(text) else { return };
        if let Some(id) = m.id {
            let window = self.cfg.limits.dedup_window_secs * 1000;
            if !self.dedup.first_time(id, now, window) {
                return;
            }
        }
        if m.kind == msgtype::INSTANT {
            self.events.push_back(Event::MessageInstant {
                account: m.source.to_string(),
                msg: m.content.to_string(),
            });
        } else if m.kind.starts_with(msgtype::VOIP_PREFIX) {
            let Some(content) = V::parse(m.content) else {
                self.log("ignored a call message whose content is not JSON");
                return;
            };
            let channel = content
                .get("channel")
                .and_then(|c| c.as_string())
                .unwrap_or_default();
            let peer = content
                .get("peer")
                .and_then(|c| c.as_string())
                .unwrap_or_default();
            let extra = content.get("extra").unwrap_or_else(|| V::from_string(""));
            let code = content
                .get("ecode")
                .as_ref()
                .and_then(as_u64)
                .map(|c| c as u32);
            self.on_voip(m.kind, channel, peer, extra, code, now);
        }
    }

    // ---------------------------------------------------------------- calls

    fn on_voip(
        &mut self,
        kind: &str,
        channel: String,
        peer: String,
        extra: V,
        code: Option<u32>,
        now: Millis,
    ) {
        let key = (channel, peer);
        if kind == call::VOIP_INVITE {
            self.next_id += 1;
            let call = self.next_id;
            self.calls.insert(key.clone(), call);
            let body = Body::new()
                .s("channelName", &key.0)
                .s("peer", &key.1)
                .s("extra", "")
                .0;
            self.request(call::VOIP_INVITE_ACK, body, Kind::Silent, "invite", now);
            self.events.push_back(Event::InviteReceived {
                call: CallId(call),
                channel: key.0,
                peer: key.1,
                extra,
            });
            return;
        }
        let Some(&call) = self.calls.get(&key) else {
            return;
        };
        let (what, ends) = match kind {
            call::VOIP_INVITE_ACK => (CallEvent::ReceivedByPeer, false),
            call::VOIP_INVITE_ACCEPT => (CallEvent::AcceptedByPeer, false),
            call::VOIP_INVITE_REFUSE => (CallEvent::RefusedByPeer, true),
            msgtype::VOIP_INVITE_FAILED => (CallEvent::Failed, true),
            call::VOIP_INVITE_BYE => (CallEvent::EndByPeer, true),
            call::VOIP_INVITE_MSG => (CallEvent::Msg, false),
            _ => return,
        };
        if ends {
            self.calls.remove(&key);
        }
        self.events.push_back(Event::Call {
            call: CallId(call),
            what,
            extra,
            code,
        });
    }

    /// `channelInviteUser2(channel, peer, extra)`; `extra_json` is the JSON text of the app's
    /// value (a JSON string literal for string extras).
    pub fn invite(
        &mut self,
        channel: &str,
        peer: &str,
        extra_json: &str,
        now: Millis,
    ) -> (CallId, ReqId) {
        self.next_id += 1;
        let call = self.next_id;
        let l = &self.cfg.limits;
        let check = l
            .check_channel(channel)
            .and_then(|_| l.check_account(peer))
            .and_then(|_| Limits::check_len(extra_json.len(), l.invite_extra_max_bytes + 2));
        if check.is_ok() {
            self.calls.insert((channel.into(), peer.into()), call);
        }
        let id = self.unique_id();
        let body = Body::new()
            .s("channelName", channel)
            .s("peer", peer)
            .raw("extra", extra_json)
            .s("messageID", &id)
            .0;
        let req = self.checked(
            check,
            call::VOIP_INVITE,
            body,
            Kind::Invite { call },
            "channelInviteUser2",
            now,
        );
        (CallId(call), req)
    }

    /// `call.channelInviteAccept/Refuse/DTMF/End`: relay `name` about the call (channel, peer).
    /// `extra_json` is JSON text. `channelInviteEnd` also fires `onInviteEndByMyself("")`.
    pub fn call_reply(
        &mut self,
        call: CallId,
        name: &'static str,
        channel: &str,
        peer: &str,
        extra_json: &str,
        now: Millis,
    ) -> ReqId {
        let op = match name {
            call::VOIP_INVITE_ACCEPT => "channelInviteAccept",
            call::VOIP_INVITE_REFUSE => "channelInviteRefuse",
            call::VOIP_INVITE_MSG => "channelInviteDTMF",
            _ => "channelInviteEnd",
        };
        let check = Limits::check_len(extra_json.len(), self.cfg.limits.invite_extra_max_bytes + 2);
        let id = self.unique_id();
        let body = Body::new()
            .s("channelName", channel)
            .s("peer", peer)
            .raw("extra", extra_json)
            .s("messageID", &id)
            .0;
        let req = self.checked(check, name, body, Kind::User, op, now);
        let key = (channel.to_string(), peer.to_string());
        if matches!(name, call::VOIP_INVITE_REFUSE | call::VOIP_INVITE_BYE)
            && self.calls.get(&key) == Some(&call.0)
        {
            self.calls.remove(&key);
        }
        if name == call::VOIP_INVITE_BYE {
            self.events.push_back(Event::Call {
                call,
                what: CallEvent::EndByMyself,
                extra: V::from_string(""),
                code: None,
            });
        }
        req
    }

    /// `call.channelInviteDTMF(dtmf)`: `extra` is the JSON text
    /// `{"msgtype":"dtmf","msgdata":"<dtmf>"}`, sent as a string.
    pub fn call_dtmf(
        &mut self,
        call: CallId,
        channel: &str,
        peer: &str,
        dtmf: &str,
        now: Millis,
    ) -> ReqId {
        let mut inner = String::from("{\"msgtype\":\"dtmf\",\"msgdata\":");
        push_str(&mut inner, dtmf);
        inner.push('}');
        let mut extra = String::new();
        push_str(&mut extra, &inner);
        self.call_reply(call, call::VOIP_INVITE_MSG, channel, peer, &extra, now)
    }

    // ---------------------------------------------------------------- channels

    fn on_channel2(&mut self, channel: &str, seq: u64, text: &str) {
        // route by name (Q1); only an event without a channel name goes to the newest channel
        let routed = if channel.is_empty() {
            self.current
        } else {
            self.by_name.get(channel).copied()
        };
        let Some(ch) = routed else {
            return;
        };
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        if c.last_seq != 0 && seq <= c.last_seq {
            return;
        }
        c.last_seq = seq;
        let Some(m) = msg::parse(text) else { return };
        let Some(content) = V::parse(m.content) else {
            self.log("ignored a channel event whose content is not JSON");
            return;
        };
        let get = |k: &str| content.get(k).unwrap_or_else(|| V::from_string(""));
        let ch = ChannelId(ch);
        let ev = match m.kind {
            msgtype::CHANNEL_MSG => Event::ChannelMessage {
                ch,
                account: get("account"),
                uid: get("uid"),
                msg: get("msg"),
            },
            msgtype::CHANNEL_USER_JOIN => Event::ChannelUserJoined {
                ch,
                account: get("account"),
                uid: get("uid"),
            },
            msgtype::CHANNEL_USER_LEAVE => Event::ChannelUserLeft {
                ch,
                account: get("account"),
                uid: get("uid"),
            },
            msgtype::CHANNEL_ATTR_UPDATE => Event::ChannelAttr {
                ch,
                name: get("name"),
                value: get("value"),
                kind: get("type"),
            },
            _ => return,
        };
        self.events.push_back(ev);
    }

    /// `channelJoin(name)`: a Channel whose outcome arrives as `ChannelJoined` or
    /// `ChannelJoinFailed`. Before login completes the join is queued (Q2).
    pub fn channel_join(&mut self, name: &str, now: Millis) -> ChannelId {
        self.next_id += 1;
        let ch = self.next_id;
        self.channels.insert(
            ch,
            Chan {
                name: name.into(),
                state: ChanState::Joining,
                last_seq: 0,
            },
        );
        let check = if self.state == State::LoggedOut {
            Err(ErrorKind::NotLoggedIn)
        } else {
            self.cfg.limits.check_channel(name)
        };
        match check {
            Ok(()) => {
                self.by_name.insert(name.into(), ch);
                self.current = Some(ch);
                let body = Body::new().s("name", name).0;
                self.request(
                    call::CHANNEL_JOIN,
                    body,
                    Kind::Join { ch, rejoin: false },
                    "channelJoin",
                    now,
                );
            }
            Err(e) => {
                if let Some(c) = self.channels.get_mut(&ch) {
                    c.state = ChanState::Left;
                }
                self.events.push_back(Event::ChannelJoinFailed {
                    ch: ChannelId(ch),
                    err: e.as_str().into(),
                });
                self.events.push_back(Event::Error {
                    name: "channelJoin",
                    code: e.code(),
                    desc: e.as_str().into(),
                });
            }
        }
        ChannelId(ch)
    }

    fn channel_name(&self, ch: ChannelId) -> String {
        self.channels
            .get(&ch.0)
            .map(|c| c.name.clone())
            .unwrap_or_default()
    }

    /// `channel.channelLeave()`; completes with `ChannelLeft` and `Done`.
    pub fn channel_leave(&mut self, ch: ChannelId, name: &str, now: Millis) -> ReqId {
        let name = if self.channels.contains_key(&ch.0) {
            self.channel_name(ch)
        } else {
            name.into()
        };
        if let Some(c) = self.channels.get_mut(&ch.0) {
            c.state = ChanState::Left;
        }
        let body = Body::new().s("name", &name).0;
        self.request(
            call::CHANNEL_LEAVE,
            body,
            Kind::Leave { ch: ch.0 },
            "channelLeave",
            now,
        )
    }

    /// `channel.messageChannelSend(msg)`; `force` sends without membership.
    pub fn channel_send(&mut self, name: &str, text: &str, force: bool, now: Millis) -> ReqId {
        let l = &self.cfg.limits;
        let check = l
            .check_channel(name)
            .and_then(|_| Limits::check_len(text.len(), l.channel_message_max_bytes));
        let mut body = Body::new().s("name", name).s("msg", text);
        body = body.s("msgID", &self.unique_id());
        if force {
            body = body.raw("force", "true");
        }
        self.checked(
            check,
            call::CHANNEL_SENDMSG,
            body.0,
            Kind::User,
            "messageChannelSend",
            now,
        )
    }

    /// `channelSetAttr` (`value` Some), `channelDelAttr` (`name` Some, `value` None) or
    /// `channelClearAttr` (both None).
    pub fn channel_attr(
        &mut self,
        channel: &str,
        name: Option<&str>,
        value: Option<&str>,
        now: Millis,
    ) -> ReqId {
        let l = &self.cfg.limits;
        let mut check = l.check_channel(channel);
        let mut body = Body::new().s("channel", channel);
        let (fname, op) = match (name, value) {
            (Some(n), Some(v)) => {
                check = check
                    .and_then(|_| l.check_attr_name(n))
                    .and_then(|_| Limits::check_len(v.len(), l.attr_value_max_bytes));
                body = body.s("name", n).s("value", v);
                (call::CHANNEL_SET_ATTR, "channelSetAttr")
            }
            (Some(n), None) => {
                check = check.and_then(|_| l.check_attr_name(n));
                body = body.s("name", n);
                (call::CHANNEL_DEL_ATTR, "channelDelAttr")
            }
            _ => (call::CHANNEL_CLEAR_ATTR, "channelClearAttr"),
        };
        self.checked(check, fname, body.0, Kind::User, op, now)
    }

    // ---------------------------------------------------------------- other commands

    /// `messageInstantSend(peer, msg)`.
    pub fn message_instant_send(&mut self, peer: &str, text: &str, now: Millis) -> ReqId {
        let l = &self.cfg.limits;
        let check = l
            .check_account(peer)
            .and_then(|_| Limits::check_len(text.len(), l.p2p_message_max_bytes));
        let body = Body::new()
            .s("peer", peer)
            .s("flag", fixed::DEFAULT_MSG_FLAG)
            .s("t", msgtype::INSTANT)
            .s("content", text)
            .s("messageID", &self.unique_id())
            .0;
        self.checked(
            check,
            call::USER_SENDMSG,
            body,
            Kind::User,
            "messageInstantSend",
            now,
        )
    }

    /// `invoke(func, args)`; `args_json` is the JSON text of the app's args object.
    pub fn invoke(&mut self, func: &str, args_json: &str, now: Millis) -> ReqId {
        let name = func
            .strip_prefix(call::INVOKE_PREFIX)
            .map(|rest| rest.split('.').next().unwrap_or(""))
            .filter(|n| !n.is_empty());
        let trimmed = args_json.trim();
        let inner = trimmed
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .map(str::trim);
        match (name, inner) {
            (None, _) => self.failed_now(ErrorKind::InvalidFunction, "invoke"),
            (Some(_), None) => self.failed_now(ErrorKind::InvalidArgs, "invoke"),
            (Some(n), Some(inner)) => {
                let check = Limits::check_len(args_json.len(), self.cfg.limits.max_frame_bytes / 2);
                self.checked(check, n, inner.to_string(), Kind::User, "invoke", now)
            }
        }
    }

    /// `logout()`: always ends in `Logout { code: 101 }` (Q11).
    pub fn logout(&mut self, now: Millis) -> ReqId {
        self.next_id += 1;
        let id = self.next_id;
        match self.state {
            State::LoggedIn => {
                self.logout_waiters.push(id);
                if self.logout_deadline.is_none() {
                    self.logout_deadline = Some(now + LOGOUT_TIMEOUT_MS);
                    self.request_front(
                        call::USER_LOGOUT,
                        String::new(),
                        Kind::Logout,
                        "logout",
                        now,
                    );
                }
            }
            State::LoggingIn | State::Reconnecting => {
                self.logout_waiters.push(id);
                self.end_session(Code::LogoutUser, now);
            }
            State::LoggedOut => self.events.push_back(Event::Done {
                req: ReqId(id),
                result: Ok(V::from_f64(Code::LogoutUser.value() as f64)),
            }),
        }
        ReqId(id)
    }

    fn finish_logout(&mut self, now: Millis) {
        self.logout_deadline = None;
        self.end_session(Code::LogoutUser, now);
    }

    // ---------------------------------------------------------------- requests

    fn unique_id(&mut self) -> String {
        // unique per session; the server drops resent duplicates by (account, id)
        self.next_id += 1;
        let mut s = String::new();
        push_u64(&mut s, self.conn_seq as u64);
        s.push('-');
        push_u64(&mut s, self.next_id as u64);
        s.push('-');
        push_u64(&mut s, self.window_start);
        s
    }

    fn failed_now(&mut self, err: ErrorKind, op: &'static str) -> ReqId {
        self.next_id += 1;
        let id = self.next_id;
        self.events.push_back(Event::Error {
            name: op,
            code: err.code(),
            desc: err.as_str().into(),
        });
        self.events.push_back(Event::Done {
            req: ReqId(id),
            result: Err(fail(err)),
        });
        ReqId(id)
    }

    fn checked(
        &mut self,
        check: Result<(), ErrorKind>,
        name: &str,
        body: String,
        kind: Kind,
        op: &'static str,
        now: Millis,
    ) -> ReqId {
        let check = check.and_then(|_| {
            if self.state == State::LoggedOut {
                Err(ErrorKind::NotLoggedIn)
            } else {
                Ok(())
            }
        });
        match check {
            Ok(()) => self.request(name, body, kind, op, now),
            Err(e) => {
                self.next_id += 1;
                let req = Req {
                    id: self.next_id,
                    name: name.into(),
                    body,
                    kind,
                    op,
                    deadline: now,
                };
                let id = req.id;
                self.complete(req, Err(fail(e)), now);
                ReqId(id)
            }
        }
    }

    fn new_req(
        &mut self,
        name: &str,
        body: String,
        kind: Kind,
        op: &'static str,
        now: Millis,
    ) -> Req {
        self.next_id += 1;
        Req {
            id: self.next_id,
            name: name.into(),
            body,
            kind,
            op,
            deadline: now + self.cfg.limits.request_timeout_ms,
        }
    }

    fn request(
        &mut self,
        name: &str,
        body: String,
        kind: Kind,
        op: &'static str,
        now: Millis,
    ) -> ReqId {
        let r = self.new_req(name, body, kind, op, now);
        let id = r.id;
        if self.state == State::LoggedIn {
            self.transmit(r);
        } else {
            self.queue.push_back(r);
        }
        ReqId(id)
    }

    fn request_front(
        &mut self,
        name: &str,
        body: String,
        kind: Kind,
        op: &'static str,
        now: Millis,
    ) {
        let r = self.new_req(name, body, kind, op, now);
        if self.state == State::LoggedIn {
            self.transmit(r);
        } else {
            self.queue.push_front(r);
        }
    }

    fn flush(&mut self, _now: Millis) {
        while self.state == State::LoggedIn {
            let Some(r) = self.queue.pop_front() else {
                break;
            };
            self.transmit(r);
        }
    }

    fn transmit(&mut self, r: Req) {
        let mut text = String::with_capacity(48 + r.name.len() + r.body.len() + self.line.len());
        text.push_str("[\"call2\",[");
        push_str(&mut text, &r.name);
        text.push(',');
        push_u64(&mut text, r.id as u64);
        text.push_str(",{");
        text.push_str(&r.body);
        if !r.body.is_empty() {
            text.push(',');
        }
        text.push_str("\"line\":");
        push_str(&mut text, &self.line);
        text.push_str("}]]");
        self.send_text(text);
        self.in_flight.insert(r.id, r);
    }
}

fn wrong_resp(text: Option<&str>) -> String {
    let mut s = String::from("wrong resp:");
    s.push_str(text.unwrap_or(""));
    s
}

/// A server-list entry to a WebSocket URL (PROTOCOL.md §1.6): a string is used verbatim; an
/// `[ip, port]` pair becomes `wss://a-b-c-d-sig-web.agora.io:<port+1>/`.
fn server_url<V: JsonValue>(entry: &V) -> Option<String> {
    if let Some(s) = entry.as_string() {
        return (!s.is_empty()).then_some(s);
    }
    let ip = entry.at(0)?.as_string()?;
    let port = as_u64(&entry.at(1)?)?;
    let parts: Vec<&str> = ip.split('.').collect();
    if parts.len() != 4
        || !parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut url = String::from("wss://");
    url.push_str(&parts.join("-"));
    url.push_str("-sig-web.agora.io:");
    push_u64(&mut url, port + 1);
    url.push('/');
    Some(url)
}
