//! Sockets, the LBS lookup, login, the reconnect schedule, ping and the pong watchdog, and the
//! dispatch of incoming frames to the other parts.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::{earliest, frames, requests::Kind, Action, Client, ConnId, Event, Millis, State};
use crate::codes::{login_failure_code, Code};
use crate::json::{as_u64, push_u64, JsonValue};
use crate::limits::Limits;
use crate::names::{event, fixed};

const LOGOUT_TIMEOUT_MS: Millis = 5_000;
const LBS_TIMEOUT_MS: Millis = 5_000;
const FIRST_RETRY_DELAY_MS: Millis = 200;
const MAX_RETRY_DELAY_MS: Millis = 2_000;

/// The app's `reconnect_time` argument in milliseconds: the docs give it in **seconds**
/// (default 30), the original's code read milliseconds; a value of 1000 or more is read as
/// milliseconds so both kinds of app keep working. 0, negative or not a number → 0 (the
/// default).
pub fn reconnect_time_ms(app_value: f64) -> u64 {
    if !app_value.is_finite() || app_value <= 0.0 {
        0
    } else if app_value >= 1000.0 {
        app_value as u64
    } else {
        (app_value * 1000.0) as u64
    }
}

/// The range `(min, max)` in ms the delay before reconnect attempt `attempt` (0 = the first)
/// is drawn from: the documented 200 ms → 2 s doubling, each step spread over up to twice its
/// size so that clients that lost the same node do not come back in lockstep.
pub fn reconnect_delay_range(attempt: u32) -> (Millis, Millis) {
    let lo = FIRST_RETRY_DELAY_MS.saturating_mul(1 << attempt.min(16));
    if lo >= MAX_RETRY_DELAY_MS {
        (MAX_RETRY_DELAY_MS / 2, MAX_RETRY_DELAY_MS)
    } else {
        (lo, (2 * lo).min(MAX_RETRY_DELAY_MS))
    }
}

/// The jittered reconnect delays (splitmix64 over the driver's seed).
#[derive(Debug)]
struct Backoff {
    attempt: u32,
    rng: u64,
}

impl Backoff {
    fn reset(&mut self) {
        self.attempt = 0;
    }

    fn next_delay(&mut self) -> Millis {
        let (lo, hi) = reconnect_delay_range(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        lo + mix(self.rng) % (hi - lo + 1)
    }
}

/// splitmix64's output function: a well-spread number from a counter or seed.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Clone, Debug)]
struct Conn {
    id: ConnId,
    open: bool,
    /// CONNECTING → connect timeout; open → login_ret timeout; logged in → none.
    deadline: Option<Millis>,
}

/// The LBS lookup in progress.
#[derive(Debug, Default)]
struct Lbs {
    seq: u32,
    pending: Option<u32>,
    deadline: Option<Millis>,
    next: usize,
}

/// Connection state of a session; survives reconnects where it must (ping counter, server
/// rotation).
#[derive(Debug)]
pub(super) struct Link {
    conn_seq: u32,
    conn: Option<Conn>,
    server_rr: usize,
    /// Connection attempts made during the initial login.
    login_attempts: usize,
    login_deadline: Option<Millis>,
    lbs: Lbs,
    backoff: Backoff,
    retry_count: u32,
    /// When the current loss began (the `reconnect_time` window).
    pub(super) window_start: Millis,
    reconnect_at: Option<Millis>,
    /// The session line of the current login ("" while not logged in).
    pub(super) line: String,
    ping_seq: u64,
    next_ping: Option<Millis>,
    last_rx: Millis,
    logout_deadline: Option<Millis>,
    logout_waiters: Vec<u32>,
}

impl Link {
    pub(super) fn new(now: Millis, seed: u64) -> Link {
        Link {
            conn_seq: 0,
            conn: None,
            server_rr: 0,
            login_attempts: 0,
            login_deadline: None,
            lbs: Lbs::default(),
            backoff: Backoff {
                attempt: 0,
                rng: seed,
            },
            retry_count: 0,
            window_start: now,
            reconnect_at: None,
            line: String::new(),
            ping_seq: 0,
            next_ping: None,
            last_rx: now,
            logout_deadline: None,
            logout_waiters: Vec::new(),
        }
    }

    /// The earliest deadline of the connection's timers.
    pub(super) fn deadline(&self, logged_in: bool, limits: &Limits) -> Option<Millis> {
        let watch = |d: Option<Millis>| if logged_in { d } else { None };
        earliest([
            self.login_deadline,
            self.lbs.deadline,
            self.reconnect_at,
            self.logout_deadline,
            self.conn.as_ref().and_then(|c| c.deadline),
            watch(self.next_ping),
            watch(Some(self.last_rx + limits.pong_timeout_ms)),
        ])
    }
}

impl<V: JsonValue> Client<V> {
    pub(super) fn start_login(&mut self, now: Millis) {
        self.link.login_deadline = Some(now + self.cfg.limits.client_login_timeout_ms);
        if self.cfg.servers.is_empty() {
            self.next_lbs(now);
        } else {
            self.connect_next(now);
        }
    }

    fn connect_next(&mut self, now: Millis) {
        if self.cfg.servers.is_empty() {
            return;
        }
        let link = &mut self.link;
        let url = self.cfg.servers[link.server_rr % self.cfg.servers.len()].clone();
        link.server_rr += 1;
        link.conn_seq += 1;
        let id = ConnId(link.conn_seq);
        link.conn = Some(Conn {
            id,
            open: false,
            deadline: Some(now + self.cfg.limits.connect_timeout_ms),
        });
        if self.state == State::LoggingIn {
            link.login_attempts += 1;
        }
        self.actions.push_back(Action::Connect { conn: id, url });
    }

    fn next_lbs(&mut self, now: Millis) {
        let lbs = &mut self.link.lbs;
        if lbs.next >= self.cfg.lbs.len() {
            self.login_failed(Code::LoginNet, now);
            return;
        }
        let mut url = self.cfg.lbs[lbs.next].trim_end_matches('/').to_string();
        lbs.next += 1;
        lbs.seq += 1;
        lbs.pending = Some(lbs.seq);
        lbs.deadline = Some(now + LBS_TIMEOUT_MS);
        url.push_str("/getaddr?vid=");
        url.push_str(&self.cfg.app_id);
        self.actions.push_back(Action::Fetch { id: lbs.seq, url });
    }

    /// The LBS answer for `Fetch { id }`: the response body parsed as JSON, or `None` on any
    /// failure (network, non-200, not JSON).
    pub fn handle_fetch(&mut self, id: u32, body: Option<V>, now: Millis) {
        if self.link.lbs.pending != Some(id) || self.state != State::LoggingIn {
            return;
        }
        self.link.lbs.pending = None;
        self.link.lbs.deadline = None;
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

    pub(super) fn is_current(&self, conn: ConnId) -> bool {
        self.link.conn.as_ref().is_some_and(|c| c.id == conn)
    }

    /// The WebSocket `conn` opened.
    pub fn handle_open(&mut self, conn: ConnId, now: Millis) {
        if !self.is_current(conn) || matches!(self.state, State::LoggedOut | State::LoggedIn) {
            self.actions.push_back(Action::Close { conn });
            return;
        }
        let login_reply_timeout = self.cfg.limits.connect_timeout_ms * 2;
        if let Some(c) = self.link.conn.as_mut() {
            c.open = true;
            c.deadline = Some(now + login_reply_timeout);
        }
        self.link.last_rx = now;
        let text = frames::login(&self.cfg.app_id, &self.cfg.account, &self.cfg.token);
        self.actions.push_back(Action::Send { conn, text });
    }

    /// The WebSocket `conn` closed or failed (error and close are treated alike).
    pub fn handle_close(&mut self, conn: ConnId, now: Millis) {
        if !self.is_current(conn) {
            return;
        }
        self.link.conn = None;
        self.connection_lost(now);
    }

    fn drop_conn(&mut self) {
        if let Some(c) = self.link.conn.take() {
            self.actions.push_back(Action::Close { conn: c.id });
        }
    }

    fn connection_lost(&mut self, now: Millis) {
        self.mailbox.forget_poll();
        self.link.next_ping = None;
        self.link.line.clear();
        if self.requeue_in_flight(now) {
            // a logout in flight: the session is over
            return;
        }
        match self.state {
            State::LoggingIn => {
                if self.link.login_attempts < self.cfg.servers.len() {
                    self.connect_next(now);
                } else {
                    self.login_failed(Code::LoginNet, now);
                }
            }
            State::LoggedIn => {
                if self.link.logout_deadline.is_some() {
                    self.finish_logout(now);
                    return;
                }
                self.state = State::Reconnecting;
                self.link.retry_count = 0;
                self.link.backoff.reset();
                self.link.window_start = now;
                self.schedule_reconnect(now);
            }
            State::Reconnecting => self.schedule_reconnect(now),
            State::LoggedOut => {}
        }
    }

    fn schedule_reconnect(&mut self, now: Millis) {
        let link = &mut self.link;
        let in_window = now.saturating_sub(link.window_start) < self.cfg.reconnect_time_ms;
        if in_window && link.retry_count < self.cfg.reconnect_count {
            link.reconnect_at = Some(now + link.backoff.next_delay());
        } else {
            self.end_session(Code::LogoutNet, now);
        }
    }

    pub(super) fn login_failed(&mut self, code: Code, now: Millis) {
        self.drop_conn();
        self.state = State::LoggedOut;
        self.events.push_back(Event::LoginFailed { code });
        self.shut_down(now);
    }

    pub(super) fn end_session(&mut self, code: Code, now: Millis) {
        self.drop_conn();
        self.state = State::LoggedOut;
        self.events.push_back(Event::Logout { code });
        self.forget_watches();
        self.shut_down(now);
    }

    /// State 0: stop every timer and fail what is still waiting.
    fn shut_down(&mut self, now: Millis) {
        let link = &mut self.link;
        link.login_deadline = None;
        link.reconnect_at = None;
        link.logout_deadline = None;
        link.next_ping = None;
        link.lbs.pending = None;
        link.lbs.deadline = None;
        self.mailbox.stop();
        self.token.stop();
        self.fail_all_requests(now);
        for id in core::mem::take(&mut self.link.logout_waiters) {
            self.events.push_back(Event::Done {
                req: super::ReqId(id),
                result: Ok(V::from_f64(Code::LogoutUser.value() as f64)),
            });
        }
    }

    /// The connection's timers: login, logout, LBS, connect/login-reply, reconnect, ping and
    /// the pong watchdog.
    pub(super) fn connection_timeouts(&mut self, now: Millis) {
        let due = |d: Option<Millis>| d.is_some_and(|d| now >= d);
        if due(self.link.login_deadline) && self.state == State::LoggingIn {
            self.login_failed(Code::LoginNet, now);
            return;
        }
        if due(self.link.logout_deadline) {
            self.finish_logout(now);
            return;
        }
        if due(self.link.lbs.deadline) && self.link.lbs.pending.is_some() {
            // this LBS host did not answer in time: ask the next one
            self.link.lbs.pending = None;
            self.link.lbs.deadline = None;
            self.next_lbs(now);
            if self.state == State::LoggedOut {
                return;
            }
        }
        if due(self.link.conn.as_ref().and_then(|c| c.deadline)) {
            self.log("no answer from the server in time");
            self.drop_conn();
            self.connection_lost(now);
            if self.state == State::LoggedOut {
                return;
            }
        }
        if self.state == State::Reconnecting && due(self.link.reconnect_at) {
            self.link.reconnect_at = None;
            self.link.retry_count += 1;
            self.events.push_back(Event::Reconnecting {
                attempt: self.link.retry_count,
            });
            self.connect_next(now);
        }
        if self.state == State::LoggedIn {
            if now >= self.link.last_rx + self.cfg.limits.pong_timeout_ms {
                self.log("no traffic from the server: reconnecting");
                self.drop_conn();
                self.connection_lost(now);
            } else if due(self.link.next_ping) {
                self.send_ping(now);
            }
        }
    }

    fn send_ping(&mut self, now: Millis) {
        self.link.ping_seq += 1;
        self.send_text(frames::ping(self.link.ping_seq));
        self.link.next_ping = Some(now + self.cfg.limits.ping_interval_ms);
    }

    pub(super) fn send_text(&mut self, text: String) {
        if let Some(c) = &self.link.conn {
            if c.open {
                self.actions.push_back(Action::Send { conn: c.id, text });
            }
        }
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
        if self.received(conn, now) {
            self.dispatch(frame, now);
        }
    }

    /// Something arrived on `conn`: whether it is the current connection (what arrives
    /// feeds its watchdog).
    pub(super) fn received(&mut self, conn: ConnId, now: Millis) -> bool {
        let current = self.is_current(conn);
        if current {
            self.link.last_rx = now;
        }
        current
    }

    fn dispatch(&mut self, frame: V, now: Millis) {
        let Some(name) = frame.at(0).and_then(|e| e.as_string()) else {
            return;
        };
        let payload = frame.at(1);
        match name.as_str() {
            event::MULTI => {
                if let Some(list) = payload {
                    for i in 0..list.array_len().unwrap_or(0) {
                        if let Some(f) = list.at(i) {
                            self.dispatch(f, now);
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
            return; // a late reply after logout
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
                    && self.link.login_attempts < self.cfg.servers.len()
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
                    // re-login refused: the session is over, with the reason when it is the
                    // token (renew it in time with `renew_token`)
                    let code = match code {
                        Code::LoginTokenExpired => Code::LogoutTokenExpired,
                        Code::LoginTokenWrong => Code::LogoutTokenWrong,
                        Code::LoginTokenKicked => Code::LogoutKicked,
                        _ => Code::LogoutNet,
                    };
                    self.end_session(code, now);
                }
            }
        }
    }

    fn logged_in(&mut self, line: String, uid: V, now: Millis) {
        let reconnected = self.state == State::Reconnecting;
        self.state = State::LoggedIn;
        let link = &mut self.link;
        link.line = line;
        link.login_deadline = None;
        link.reconnect_at = None;
        link.retry_count = 0;
        link.backoff.reset();
        link.last_rx = now;
        if let Some(c) = link.conn.as_mut() {
            c.deadline = None;
        }
        self.send_text(frames::set_flag_binary());
        self.send_ping(now);
        self.events.push_back(Event::LoginSuccess { uid });
        if reconnected {
            self.events.push_back(Event::Reconnected);
        }
        self.mailbox.forget_poll();
        self.poll_mailbox(now);
        if reconnected {
            self.rejoin_channels(super::requests::JoinMode::Rejoin, now);
            self.resubscribe(now);
        }
        self.flush();
    }

    /// `logout()`: always ends in `Logout { code: 101 }`.
    pub fn logout(&mut self, now: Millis) -> super::ReqId {
        let id = self.new_id();
        self.forget_watches();
        match self.state {
            State::LoggedIn => {
                self.link.logout_waiters.push(id);
                if self.link.logout_deadline.is_none() {
                    self.link.logout_deadline = Some(now + LOGOUT_TIMEOUT_MS);
                    self.request_front(
                        crate::names::call::USER_LOGOUT,
                        String::new(),
                        Kind::Logout,
                        "logout",
                        now,
                    );
                }
            }
            State::LoggingIn | State::Reconnecting => {
                self.link.logout_waiters.push(id);
                self.end_session(Code::LogoutUser, now);
            }
            State::LoggedOut => self.events.push_back(Event::Done {
                req: super::ReqId(id),
                result: Ok(V::from_f64(Code::LogoutUser.value() as f64)),
            }),
        }
        super::ReqId(id)
    }

    pub(super) fn finish_logout(&mut self, now: Millis) {
        self.link.logout_deadline = None;
        self.end_session(Code::LogoutUser, now);
    }
}

/// A server-list entry to a WebSocket URL: a string is used verbatim; an `[ip, port]` pair
/// becomes `wss://a-b-c-d-sig-web.agora.io:<port+1>/` (the original's rule).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_time_is_read_in_seconds_unless_it_looks_like_milliseconds() {
        assert_eq!(reconnect_time_ms(30.0), 30_000);
        assert_eq!(reconnect_time_ms(5.0), 5_000);
        assert_eq!(reconnect_time_ms(0.5), 500);
        assert_eq!(reconnect_time_ms(999.0), 999_000);
        assert_eq!(reconnect_time_ms(1000.0), 1000);
        assert_eq!(reconnect_time_ms(300_000.0), 300_000);
        for unset in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(reconnect_time_ms(unset), 0);
        }
    }

    #[test]
    fn delays_stay_inside_the_documented_doubling() {
        assert_eq!(reconnect_delay_range(0), (200, 400));
        assert_eq!(reconnect_delay_range(1), (400, 800));
        assert_eq!(reconnect_delay_range(3), (1600, 2000));
        assert_eq!(reconnect_delay_range(4), (1000, 2000));
        assert_eq!(reconnect_delay_range(40), (1000, 2000));
        let mut b = Backoff { attempt: 0, rng: 1 };
        for n in 0..20 {
            let (lo, hi) = reconnect_delay_range(n);
            let d = b.next_delay();
            assert!(
                (lo..=hi).contains(&d),
                "attempt {n}: {d} not in {lo}..={hi}"
            );
        }
    }
}
