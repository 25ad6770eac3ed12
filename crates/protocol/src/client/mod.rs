//! The client session as a deterministic state machine: no sockets, no clock of its own
//! (quinn-proto style). The driver feeds it inputs (`handle_*`, app commands) with the current
//! time, and drains its outputs (`poll_action`, `poll_event`, `poll_timeout`).
//!
//! It implements the AgoraSig 1.4 web client's behaviour (`docs/PROTOCOL.md`) with opensig's
//! fixes: channels routed by name, commands usable right after `login`, state that survives
//! reconnects with one ping timer and one mailbox poller, prompt mailbox paging, an expiring
//! msg-v3 dedup set, logout that always completes, re-login failures reported, login/pong
//! timeouts, reconnects that never stall (with jittered delays), a request table that is
//! pruned, one Channel per channel name, and token renewal.
//!
//! The code is split by concern, each part owning its state and its deadlines:
//! - `connection`: sockets, LBS, login, reconnect schedule, ping and watchdog, frame dispatch;
//! - `requests`: the call2 table (queue, in flight, timeouts, replies);
//! - `mailbox`: the mode-0 mailbox and the msg-v3 dedup set;
//! - `channels`: Channel objects, joins, rejoins, channel events;
//! - `calls`: invitations;
//! - `commands`: app queries and sends that are plain requests, and token renewal;
//! - [`frames`]: the text of every frame a client sends.
//!
//! [`Client::poll_timeout`] is the earliest deadline of the parts.

mod calls;
mod channels;
mod commands;
mod connection;
pub mod frames;
mod mailbox;
mod requests;
mod watch;

use alloc::string::String;
use alloc::vec::Vec;

use crate::codes::Code;
use crate::json::JsonValue;
use crate::limits::Limits;
use crate::small::{Queue, VecMap};

pub use channels::{channel_event_of, ChannelEvent, Direct};
pub use connection::{reconnect_delay_range, reconnect_time_ms};
pub use watch::PeersOp;

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
    /// Reconnect window in milliseconds (0 → the default, 30 s). The app's `reconnect_time`
    /// argument becomes this through [`reconnect_time_ms`].
    pub reconnect_time_ms: u64,
    /// WebSocket URLs to use verbatim, round-robin (`setup_debugging('ap_url', …)`).
    pub servers: Vec<String>,
    /// LBS base URLs asked `GET <lbs>/getaddr?vid=<app id>` when `servers` is empty.
    pub lbs: Vec<String>,
    /// Limits for local input checks and timers.
    pub limits: Limits,
    /// Seed of the reconnect-delay jitter (the driver supplies randomness, so ten thousand
    /// clients of a node that died do not come back in lockstep; tests fix it).
    pub jitter_seed: u64,
    /// Unix time in milliseconds at the driver's time 0, to read token expiries
    /// (`onTokenWillExpire`); 0 when unknown (no expiry warning).
    pub unix_ms_at_zero: u64,
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
            jitter_seed: 0x9e37_79b9_7f4a_7c15,
            unix_ms_at_zero: 0,
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
        /// 101 user, 102 network/server, 103 kicked, 105/107 the token was refused at a
        /// re-login.
        code: Code,
    },
    /// `onReconnecting(nretry)`: a reconnect attempt starts.
    Reconnecting {
        /// 1 for the first attempt after a loss.
        attempt: u32,
    },
    /// `onReconnected()`: logged in again after a loss.
    Reconnected,
    /// `onTokenWillExpire()`: the token in use expires in 30 s or less; hand the session a
    /// fresh one with `renew_token`.
    TokenWillExpire,
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
        account: V,
        /// Text.
        msg: V,
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
    /// `onMessageChannelLost(count)` (opensig): after a reconnect, `count` channel messages
    /// sent while this session was away are no longer kept by the channel (its history is
    /// smaller, or off); the ones still kept follow as `ChannelMessage`s.
    ChannelMessagesLost {
        /// The Channel.
        ch: ChannelId,
        /// How many.
        count: u64,
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
    /// opensig `onPeersOnlineStatusChanged(status)`: watched accounts' states,
    /// `{account: "ONLINE" | "UNREACHABLE" | "OFFLINE"}` — all of a subscribe's, then each
    /// change (those missed while reconnecting once it is back).
    PeersStatus {
        /// The object of states.
        status: V,
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

/// A session: login, reconnect, mailbox, channels, calls and requests.
pub struct Client<V: JsonValue> {
    cfg: Config,
    state: State,
    /// Sockets, login, reconnect, ping (`connection`).
    link: connection::Link,
    /// The call2 table (`requests`).
    reqs: requests::Requests,
    /// The mode-0 mailbox (`mailbox`).
    mailbox: mailbox::Mailbox,
    /// Seen msg-v3 ids (`mailbox`).
    dedup: mailbox::Dedup,
    /// Channel objects (`channels`).
    chans: channels::Channels<V>,
    /// Live calls by (channel, peer) (`calls`).
    calls: VecMap<(String, String), u32>,
    /// When to warn about the token's expiry (`commands`).
    token: commands::TokenClock,
    /// Watched accounts' presence (`watch`).
    watch: watch::Watch,
    /// Ids of requests, channels and calls (one counter, as they never meet).
    next_id: u32,
    /// This session's part of message ids (from the driver's random seed): the server drops
    /// a message whose id it saw from the account recently, so ids must differ between
    /// sessions of one account (a reloaded page counts from 0 again).
    id_tag: u64,
    actions: Queue<Action>,
    events: Queue<Event<V>>,
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
        let seed = cfg.jitter_seed;
        let mut c = Client {
            link: connection::Link::new(now, seed),
            token: commands::TokenClock::default(),
            watch: watch::Watch::default(),
            cfg,
            state: State::LoggingIn,
            reqs: requests::Requests::default(),
            mailbox: mailbox::Mailbox::default(),
            dedup: mailbox::Dedup::default(),
            chans: channels::Channels::default(),
            calls: VecMap::new(),
            next_id: 0,
            id_tag: connection::mix(seed ^ 0x6d73_6769_6474_6167),
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
        c.token_changed(now);
        c.start_login(now);
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

    /// The token used for the next (re)login.
    pub fn token(&self) -> &str {
        &self.cfg.token
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

    /// When `handle_timeout` must be called next: the earliest deadline of any part.
    pub fn poll_timeout(&self) -> Option<Millis> {
        if self.state == State::LoggedOut {
            return None;
        }
        let logged_in = self.state == State::LoggedIn;
        [
            self.link.deadline(logged_in, &self.cfg.limits),
            self.mailbox.deadline(logged_in),
            self.reqs.deadline(),
            self.token.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Time passed: fire whatever is due, part by part.
    pub fn handle_timeout(&mut self, now: Millis) {
        if self.state == State::LoggedOut {
            return;
        }
        self.connection_timeouts(now);
        if self.state == State::LoggedOut {
            return;
        }
        if self.state == State::LoggedIn {
            self.mailbox_timeouts(now);
        }
        self.token_timeouts(now);
        self.request_timeouts(now);
    }

    fn log(&mut self, text: &str) {
        self.events.push_back(Event::Log { text: text.into() });
    }

    fn new_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }
}

/// The earliest of some optional deadlines.
fn earliest(deadlines: impl IntoIterator<Item = Option<Millis>>) -> Option<Millis> {
    deadlines.into_iter().flatten().min()
}
