//! The client state machine against a scripted server with a simulated clock: no sockets, no
//! sleeps. Every frame the client sends and every event it raises is checked.

use opensig_protocol::client::{
    reconnect_delay_range, reconnect_time_ms, Action, CallEvent, Client, Config, ConnId, Event,
    Millis, PeersOp, State,
};
use opensig_protocol::json::JsonValue;
use opensig_protocol::Code;
use opensig_protocol::Limits;
use serde_json::{json, Value};

struct H {
    c: Client<Value>,
    now: Millis,
    sent: Vec<(ConnId, Value)>,
    connects: Vec<(ConnId, String)>,
    closed: Vec<ConnId>,
    fetches: Vec<(u32, String)>,
    events: Vec<Event<Value>>,
}

fn cfg(servers: &[&str]) -> Config {
    let mut c = Config::new("app", "alice", "_no_need_token");
    c.servers = servers.iter().map(|s| s.to_string()).collect();
    c
}

impl H {
    fn new(c: Config) -> H {
        let mut h = H {
            c: Client::new(c, 0),
            now: 0,
            sent: vec![],
            connects: vec![],
            closed: vec![],
            fetches: vec![],
            events: vec![],
        };
        h.pump();
        h
    }

    fn pump(&mut self) {
        while let Some(a) = self.c.poll_action() {
            match a {
                Action::Connect { conn, url } => self.connects.push((conn, url)),
                Action::Send { conn, text } => self.sent.push((
                    conn,
                    serde_json::from_str(&text).expect("client sends JSON"),
                )),
                Action::Close { conn } => self.closed.push(conn),
                Action::Fetch { id, url } => self.fetches.push((id, url)),
            }
        }
        while let Some(e) = self.c.poll_event() {
            if !matches!(e, Event::Log { .. }) {
                self.events.push(e);
            }
        }
    }

    /// Move the clock to `now + ms`, firing every deadline on the way in order.
    fn advance(&mut self, ms: Millis) {
        let target = self.now + ms;
        while let Some(t) = self.c.poll_timeout() {
            if t > target {
                break;
            }
            self.now = self.now.max(t);
            self.c.handle_timeout(self.now);
            self.pump();
        }
        self.now = target;
    }

    /// Advance while the server keeps talking (a pong every 10 s), so the watchdog stays calm.
    fn advance_alive(&mut self, ms: Millis) {
        let mut left = ms;
        while left > 0 {
            let step = left.min(10_000);
            self.advance(step);
            left -= step;
            self.frame(json!(["pong", 0]));
        }
    }

    /// Advance to the next reconnect attempt; returns how long it was in coming (ms).
    fn until_reconnect(&mut self) -> Millis {
        let (start, before) = (self.now, self.connects.len());
        while self.connects.len() == before {
            let t = self.c.poll_timeout().expect("a reconnect is scheduled");
            self.advance(t - self.now);
        }
        self.now - start
    }

    fn conn(&self) -> ConnId {
        self.connects.last().expect("a connection attempt").0
    }

    fn open(&mut self) -> ConnId {
        let c = self.conn();
        self.c.handle_open(c, self.now);
        self.pump();
        c
    }

    fn frame(&mut self, v: Value) {
        let c = self.conn();
        self.c.handle_frame(c, v, self.now);
        self.pump();
    }

    fn close(&mut self) {
        let c = self.conn();
        self.c.handle_close(c, self.now);
        self.pump();
    }

    fn login_ok(&mut self, line: &str) {
        let body = json!({"result": "ok", "uid": 0, "line": line}).to_string();
        self.frame(json!(["login_ret", ["", body]]));
    }

    /// Open + login_ok + reply to the first mailbox poll; clears the logs.
    fn logged_in(c: Config) -> H {
        let mut h = H::new(c);
        h.open();
        h.login_ok("L1");
        let id = h.call_id("user_getmsg");
        h.reply(id, json!({"result": "ok", "ver_clear": 0, "msgs": []}));
        h.sent.clear();
        h.events.clear();
        h
    }

    fn take_sent(&mut self) -> Vec<Value> {
        self.sent.drain(..).map(|(_, v)| v).collect()
    }

    fn take_events(&mut self) -> Vec<Event<Value>> {
        std::mem::take(&mut self.events)
    }

    /// The id of the last call2 named `name` the client sent.
    fn call_id(&self, name: &str) -> u64 {
        self.sent
            .iter()
            .rev()
            .find(|(_, v)| v[0] == "call2" && v[1][0] == name)
            .unwrap_or_else(|| panic!("no {name} sent; sent {:?}", self.sent))
            .1[1][1]
            .as_u64()
            .unwrap()
    }

    fn calls(&self, name: &str) -> Vec<Value> {
        self.sent
            .iter()
            .filter(|(_, v)| v[0] == "call2" && v[1][0] == name)
            .map(|(_, v)| v[1][2].clone())
            .collect()
    }

    /// The id of the rejoin the client sent after its latest login.
    fn call_id_after_rejoin(&mut self) -> u64 {
        self.pump();
        self.call_id("channel_join")
    }

    fn reply(&mut self, id: u64, body: Value) {
        self.frame(json!(["call2-ret", [id, "", body.to_string()]]));
    }

    fn reply_err(&mut self, id: u64, err: &str) {
        self.frame(json!(["call2-ret", [id, err, ""]]));
    }
}

fn msg_v3(id: &str, from: &str, kind: &str, content: &str) -> String {
    format!("msg-v3 {id} {from} 0 alice {kind} - {content}")
}

/// An instant message from bob pushed at mailbox version `v`.
fn push(v: u64, id: &str, text: &str) -> Value {
    json!([
        "notify",
        [
            "recvmsg",
            json!([v, msg_v3(id, "bob", "instant", text)]).to_string()
        ]
    ])
}

/// The texts of the instant messages among `ev`.
fn instant_texts(ev: Vec<Event<Value>>) -> Vec<String> {
    ev.into_iter()
        .filter_map(|e| match e {
            Event::MessageInstant { msg, .. } => msg.as_str().map(String::from),
            _ => None,
        })
        .collect()
}

#[test]
fn login_sends_the_original_frames_in_order() {
    let mut h = H::new(cfg(&["ws://a/"]));
    assert_eq!(h.c.state(), State::LoggingIn);
    assert_eq!(h.connects, vec![(ConnId(1), "ws://a/".to_string())]);
    h.open();
    assert_eq!(
        h.take_sent(),
        vec![
            json!(["login", {"vid": "app", "account": "alice", "uid": 0, "token": "_no_need_token", "device": "websdk", "ip": ""}])
        ]
    );
    h.login_ok("L1");
    assert_eq!(h.c.state(), State::LoggedIn);
    let sent = h.take_sent();
    assert_eq!(sent[0], json!(["set_flag", {"binary": 1}]));
    assert_eq!(sent[1], json!(["ping", 1]));
    assert_eq!(sent[2][0], "call2");
    assert_eq!(sent[2][1][0], "user_getmsg");
    assert_eq!(
        sent[2][1][2],
        json!({"ver_clear": 0, "max": 30, "line": "L1"})
    );
    assert_eq!(h.take_events(), vec![Event::LoginSuccess { uid: json!(0) }]);
    // one ping every 10 s
    h.advance(10_000);
    assert_eq!(
        h.take_sent()
            .into_iter()
            .filter(|f| f[0] == "ping")
            .collect::<Vec<_>>(),
        vec![json!(["ping", 2])]
    );
}

#[test]
fn login_failures_map_to_codes_and_close_the_socket() {
    for (err, reason, code) in [
        ("TokenErrorExpired", "", Code::LoginTokenExpired),
        ("TokenErrorInvalid", "", Code::LoginTokenWrong),
        ("kick", "", Code::LoginTokenKicked),
        ("wrong account format", "", Code::LoginWrongAccount),
        ("something", "", Code::LoginNet),
        ("", "TokenErrorExpired", Code::LoginTokenExpired),
    ] {
        let mut h = H::new(cfg(&["ws://a/"]));
        let conn = h.open();
        let body = json!({"result": "failed", "reason": reason}).to_string();
        h.frame(json!(["login_ret", [err, body]]));
        assert_eq!(
            h.take_events(),
            vec![Event::LoginFailed { code }],
            "{err:?}/{reason:?}"
        );
        assert_eq!(h.c.state(), State::LoggedOut);
        assert!(h.closed.contains(&conn));
    }
    // a non-JSON body is a failure, not a hang (Q12)
    let mut h = H::new(cfg(&["ws://a/"]));
    h.open();
    h.frame(json!(["login_ret", ["", "not json"]]));
    assert_eq!(
        h.take_events(),
        vec![Event::LoginFailed {
            code: Code::LoginNet
        }]
    );
}

#[test]
fn bad_accounts_fail_locally_with_209() {
    let mut c = cfg(&["ws://a/"]);
    c.account = "has space".into();
    let h = H::new(c);
    assert_eq!(
        h.events,
        vec![Event::LoginFailed {
            code: Code::LoginWrongAccount
        }]
    );
    assert!(h.connects.is_empty());
}

#[test]
fn login_fails_over_across_servers_then_gives_up() {
    let mut h = H::new(cfg(&["ws://a/", "ws://b/"]));
    // a: connect timeout after 6 s
    h.advance(6_000);
    assert_eq!(
        h.connects.iter().map(|c| c.1.as_str()).collect::<Vec<_>>(),
        vec!["ws://a/", "ws://b/"]
    );
    // b: refused
    h.close();
    assert_eq!(
        h.take_events(),
        vec![Event::LoginFailed {
            code: Code::LoginNet
        }]
    );
    // a server that opens but never answers login: given up after 12 s (Q14)
    let mut h = H::new(cfg(&["ws://a/"]));
    h.open();
    h.advance(11_999);
    assert!(h.events.is_empty());
    h.advance(1);
    assert_eq!(
        h.take_events(),
        vec![Event::LoginFailed {
            code: Code::LoginNet
        }]
    );
}

#[test]
fn reconnect_schedule_then_logout_102() {
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    h.close();
    assert_eq!(h.c.state(), State::Reconnecting);
    let mut delays = vec![];
    for _ in 0..10 {
        delays.push(h.until_reconnect());
        h.close(); // refused
    }
    // 200 ms doubling to 2 s, each step jittered inside its range
    for (n, d) in delays.iter().enumerate() {
        let (lo, hi) = reconnect_delay_range(n as u32);
        assert!(
            (lo..=hi).contains(d),
            "attempt {n}: {d} ms not in {lo}..={hi}"
        );
    }
    let ev = h.take_events();
    let n: Vec<u32> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Reconnecting { attempt } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(n, (1..=10).collect::<Vec<_>>());
    assert_eq!(
        ev.last(),
        Some(&Event::Logout {
            code: Code::LogoutNet
        })
    );
    assert_eq!(h.c.state(), State::LoggedOut);
    assert_eq!(h.c.poll_timeout(), None, "no timer left running");
}

#[test]
fn reconnect_delays_are_spread_across_clients() {
    // ten thousand clients of a node that died must not come back in lockstep
    let mut first = vec![];
    let mut third = vec![];
    for seed in 0..2000u64 {
        let mut c = cfg(&["ws://a/"]);
        c.jitter_seed = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0xabcdef;
        let mut h = H::logged_in(c);
        h.close();
        first.push(h.until_reconnect());
        h.close();
        h.until_reconnect();
        h.close();
        third.push(h.until_reconnect());
    }
    for (delays, (lo, hi)) in [
        (&first, reconnect_delay_range(0)),
        (&third, reconnect_delay_range(2)),
    ] {
        let min = *delays.iter().min().unwrap();
        let max = *delays.iter().max().unwrap();
        assert!(min >= lo && max <= hi, "{min}..{max} outside {lo}..{hi}");
        // spread over the range: no 10 % slice of it holds more than a fifth of the clients
        let width = (hi - lo) / 10;
        for k in 0..10 {
            let slice = delays
                .iter()
                .filter(|d| **d >= lo + k * width && **d < lo + (k + 1) * width)
                .count();
            assert!(
                slice < delays.len() / 5,
                "slice {k} holds {slice} of {}",
                delays.len()
            );
        }
    }
    // the same seed gives the same schedule (the simulated clock is deterministic)
    let once = |seed| {
        let mut c = cfg(&["ws://a/"]);
        c.jitter_seed = seed;
        let mut h = H::logged_in(c);
        h.close();
        h.until_reconnect()
    };
    assert_eq!(once(42), once(42));
}

#[test]
fn reconnect_time_defaults_to_the_documented_30_seconds() {
    // the docs' reconnect_time is in seconds: 30 by default, 5 in Agora's own samples
    assert_eq!(Limits::default().reconnect_time_default_ms, 30_000);
    assert_eq!(reconnect_time_ms(5.0), 5_000);
    assert_eq!(reconnect_time_ms(30.0), 30_000);
    assert_eq!(
        reconnect_time_ms(300_000.0),
        300_000,
        "1.4.0's code unit still works"
    );
    // an app that passes 30 (as the docs suggest) survives an outage of 20 s
    let mut c = cfg(&["ws://a/"]);
    c.reconnect_count = 100;
    c.reconnect_time_ms = reconnect_time_ms(30.0);
    let mut h = H::logged_in(c);
    h.close();
    while h.now < 20_000 {
        h.until_reconnect();
        h.close();
    }
    h.until_reconnect();
    h.open();
    h.login_ok("L2");
    assert_eq!(h.c.state(), State::LoggedIn);
    assert!(!h
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::Logout { .. })));
}

#[test]
fn reconnect_window_applies() {
    let mut c = cfg(&["ws://a/"]);
    c.reconnect_time_ms = 1_000;
    let mut h = H::logged_in(c);
    h.close();
    let mut waited = 0;
    while h.c.state() == State::Reconnecting {
        waited += h.until_reconnect();
        h.close();
    }
    assert!(
        waited >= 1_000,
        "attempts went on for the window, {waited} ms"
    );
    assert!(
        waited < 1_000 + 2_000,
        "no attempt starts after the window, {waited} ms"
    );
    assert_eq!(
        h.take_events().last(),
        Some(&Event::Logout {
            code: Code::LogoutNet
        })
    );
}

#[test]
fn reconnect_keeps_state_rejoins_and_resends() {
    let mut h = H::logged_in(cfg(&["ws://a/", "ws://b/"]));
    let ch = h.c.channel_join("room", h.now);
    h.pump();
    let id = h.call_id("channel_join");
    h.reply(
        id,
        json!({"result": "ok", "list": [["alice", 0]], "attrs": {}}),
    );
    // a message is in flight when the connection drops
    let req = h.c.message_instant_send("bob", "hello", h.now);
    h.pump();
    let first = h.calls("user_sendmsg")[0].clone();
    h.take_events();
    h.take_sent();
    h.close();
    h.until_reconnect();
    assert_eq!(h.take_events(), vec![Event::Reconnecting { attempt: 1 }]);
    h.open();
    h.login_ok("L2");
    let ev = h.take_events();
    assert_eq!(
        ev,
        vec![Event::LoginSuccess { uid: json!(0) }, Event::Reconnected]
    );
    // one ping loop, one poller, the rejoin and the resent message
    let sent = h.take_sent();
    let names: Vec<&str> = sent
        .iter()
        .map(|f| {
            if f[0] == "call2" {
                f[1][0].as_str().unwrap()
            } else {
                f[0].as_str().unwrap()
            }
        })
        .collect();
    assert_eq!(
        names,
        vec![
            "login",
            "set_flag",
            "ping",
            "user_getmsg",
            "channel_join",
            "user_sendmsg"
        ]
    );
    let sent = &sent[1..];
    let resent = &sent[4][1][2];
    assert_eq!(
        resent["messageID"], first["messageID"],
        "same id, so the server drops a duplicate"
    );
    assert_eq!(resent["line"], "L2");
    // rejoin answers refresh the member list without another onChannelJoined
    let rejoin_id = sent[3][1][1].as_u64().unwrap();
    h.reply(
        rejoin_id,
        json!({"result": "ok", "list": [["alice", 0], ["bob", 0]], "attrs": {}}),
    );
    assert_eq!(
        h.take_events(),
        vec![Event::ChannelUserList {
            ch,
            list: json!([["alice", 0], ["bob", 0]])
        }]
    );
    let send_id = sent[4][1][1].as_u64().unwrap();
    h.reply(send_id, json!({"result": "ok"}));
    assert!(matches!(&h.take_events()[..], [Event::Done { req: r, result: Ok(_) }] if *r == req));
    // ping counter continues; exactly one ping per 10 s
    h.advance(10_000);
    assert_eq!(h.take_sent().iter().filter(|f| f[0] == "ping").count(), 1);
}

#[test]
fn failed_relogin_ends_the_session_with_the_reason() {
    for (err, code) in [
        ("TokenErrorExpired", Code::LogoutTokenExpired),
        ("TokenErrorInvalid", Code::LogoutTokenWrong),
        ("kick", Code::LogoutKicked),
    ] {
        let mut h = H::logged_in(cfg(&["ws://a/"]));
        h.close();
        h.until_reconnect();
        h.open();
        h.frame(json!(["login_ret", [err, "{}"]]));
        assert_eq!(
            h.take_events().last(),
            Some(&Event::Logout { code }),
            "{err}"
        );
        assert_eq!(h.c.state(), State::LoggedOut);
    }
}

#[test]
fn server_endings_kick_close() {
    for (frame, code) in [
        (json!(["kick", ""]), Code::LogoutKicked),
        (json!(["close", ""]), Code::LogoutNet),
        (json!(["_close", ""]), Code::LogoutNet),
    ] {
        let mut h = H::logged_in(cfg(&["ws://a/"]));
        h.frame(frame);
        assert_eq!(h.take_events(), vec![Event::Logout { code }]);
        assert_eq!(h.c.state(), State::LoggedOut);
    }
    // inside a multi batch too
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    h.frame(json!(["multi", [["pong", 1], ["kick", ""]]]));
    assert_eq!(
        h.take_events(),
        vec![Event::Logout {
            code: Code::LogoutKicked
        }]
    );
}

#[test]
fn logout_always_completes() {
    // logged in: user_logout, reply → 101
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    let req = h.c.logout(h.now);
    h.pump();
    let id = h.call_id("user_logout");
    h.reply(id, json!({"result": "ok"}));
    let ev = h.take_events();
    assert_eq!(
        ev[0],
        Event::Logout {
            code: Code::LogoutUser
        }
    );
    assert!(matches!(ev[1], Event::Done { req: r, .. } if r == req));
    // no reply within 5 s: done anyway
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    h.c.logout(h.now);
    h.pump();
    h.advance(5_000);
    assert_eq!(
        h.take_events()[0],
        Event::Logout {
            code: Code::LogoutUser
        }
    );
    // while logging in: ends at once, and a late login_ret is ignored (Q11)
    let mut h = H::new(cfg(&["ws://a/"]));
    h.open();
    h.c.logout(h.now);
    h.pump();
    assert_eq!(
        h.take_events()[0],
        Event::Logout {
            code: Code::LogoutUser
        }
    );
    h.login_ok("late");
    assert_eq!(h.c.state(), State::LoggedOut);
    assert!(h.take_events().is_empty());
    // while reconnecting
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    h.close();
    h.c.logout(h.now);
    h.pump();
    assert_eq!(
        h.take_events()[0],
        Event::Logout {
            code: Code::LogoutUser
        }
    );
    h.advance(10_000);
    assert_eq!(h.connects.len(), 1, "no reconnect after logout");
}

#[test]
fn mailbox_pages_are_drained_at_once_and_acknowledged() {
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    h.frame(json!(["notify", ["msg", 45]]));
    let id = h.call_id("user_getmsg");
    let page: Vec<Value> = (1..=30)
        .map(|v| {
            json!([
                v,
                msg_v3(&format!("m{v}"), "bob", "instant", &format!("t{v}"))
            ])
        })
        .collect();
    h.take_sent();
    h.reply(id, json!({"result": "ok", "ver_clear": 0, "msgs": page}));
    assert_eq!(h.take_events().len(), 30);
    // the next page is asked for at once (Q5), carrying the acknowledgement, and the id of
    // the message processed at the version acknowledged (opensig)
    assert_eq!(
        h.calls("user_getmsg"),
        vec![json!({"ver_clear": 30, "max": 30, "seen_id": "m30", "line": "L1"})]
    );
    let id = h.call_id("user_getmsg");
    h.take_sent();
    let page: Vec<Value> = (31..=45)
        .map(|v| json!([v, msg_v3(&format!("m{v}"), "bob", "instant", "x")]))
        .collect();
    h.reply(id, json!({"result": "ok", "ver_clear": 30, "msgs": page}));
    assert_eq!(h.take_events().len(), 15);
    assert!(h.calls("user_getmsg").is_empty());
    // the acknowledgement follows about 1 s later
    h.advance(999);
    assert!(h.calls("user_getmsg").is_empty());
    h.advance(1);
    assert_eq!(
        h.calls("user_getmsg"),
        vec![json!({"ver_clear": 45, "max": 30, "seen_id": "m45", "line": "L1"})]
    );
    let id = h.call_id("user_getmsg");
    h.take_sent();
    h.reply(id, json!({"result": "ok", "ver_clear": 45, "msgs": []}));
    // idle resync after 60 s
    h.advance_alive(59_000);
    assert!(h.calls("user_getmsg").is_empty());
    h.advance_alive(1_000);
    assert_eq!(h.calls("user_getmsg").len(), 1);
}

#[test]
fn inline_recvmsg_contiguous_gap_and_duplicates() {
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    h.frame(push(1, "a", "one"));
    assert_eq!(
        h.take_events(),
        vec![Event::MessageInstant {
            account: "bob".into(),
            msg: "one".into()
        }]
    );
    assert!(h.calls("user_getmsg").is_empty(), "contiguous: no poll");
    // a gap: poll instead of processing
    h.frame(push(3, "c", "three"));
    assert!(h.take_events().is_empty());
    assert_eq!(
        h.calls("user_getmsg"),
        vec![json!({"ver_clear": 1, "max": 30, "seen_id": "a", "line": "L1"})]
    );
    let id = h.call_id("user_getmsg");
    h.take_sent();
    // the poll returns 2 and 3; 3 again with another version is dropped by its id
    h.reply(id, json!({"result": "ok", "ver_clear": 1, "msgs": [[2, msg_v3("b", "bob", "instant", "two")], [3, msg_v3("c", "bob", "instant", "three")], [4, msg_v3("c", "bob", "instant", "three again")]]}));
    assert_eq!(instant_texts(h.take_events()), vec!["two", "three"]);
    // an old version pushed again is ignored
    h.frame(push(2, "b", "two"));
    assert!(h.take_events().is_empty());
    // the dedup window is 5 minutes
    h.advance_alive(301_000);
    h.take_events();
    h.frame(push(5, "a", "one, much later"));
    assert_eq!(
        h.take_events(),
        vec![Event::MessageInstant {
            account: "bob".into(),
            msg: "one, much later".into()
        }]
    );
}

/// After a failover that lost the messages which used some versions, the server hands those
/// versions out again: a pushed message at a version processed already, with an id never
/// seen, is delivered (not taken for an old one) and makes the client poll, with the id it
/// processed at its version, so the server numbers its mailbox again; one seen is dropped.
#[test]
fn a_new_message_at_a_version_processed_already_is_delivered() {
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    let texts = |h: &mut H| instant_texts(h.take_events());
    for (v, id) in [(1, "a"), (2, "b"), (3, "c")] {
        h.frame(push(v, id, id));
    }
    assert_eq!(texts(&mut h), vec!["a", "b", "c"]);
    // version 2 again, its message seen: dropped, no poll
    h.frame(push(2, "b", "b"));
    assert!(texts(&mut h).is_empty());
    assert!(h.calls("user_getmsg").is_empty());
    // version 2 again, a message never seen: delivered, and the mailbox polled at once
    h.frame(push(2, "x", "new at 2"));
    assert_eq!(texts(&mut h), vec!["new at 2"]);
    assert_eq!(
        h.calls("user_getmsg"),
        vec![json!({"ver_clear": 3, "max": 30, "seen_id": "c", "line": "L1"})]
    );
    // the server numbered its mailbox again after 3: what came is dropped by its id, the
    // rest delivered in order, and the next acknowledgement says the id at the new version
    let id = h.call_id("user_getmsg");
    h.take_sent();
    let page = json!([
        [4, msg_v3("x", "bob", "instant", "new at 2")],
        [5, msg_v3("y", "bob", "instant", "new at 3")]
    ]);
    h.reply(id, json!({"result": "ok", "ver_clear": 3, "msgs": page}));
    assert_eq!(texts(&mut h), vec!["new at 3"]);
    h.advance(1_000);
    assert_eq!(
        h.calls("user_getmsg"),
        vec![json!({"ver_clear": 5, "max": 30, "seen_id": "y", "line": "L1"})]
    );
    // a reply that acknowledges more than the client processed: no id to say
    let id = h.call_id("user_getmsg");
    h.take_sent();
    h.reply(id, json!({"result": "ok", "ver_clear": 9, "msgs": []}));
    h.frame(json!(["notify", ["msg", 10]]));
    assert_eq!(
        h.calls("user_getmsg"),
        vec![json!({"ver_clear": 9, "max": 30, "line": "L1"})]
    );
}

#[test]
fn broken_mailbox_entries_do_not_stop_the_mailbox() {
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    h.frame(json!(["notify", ["msg", 3]]));
    let id = h.call_id("user_getmsg");
    h.reply(
        id,
        json!({"result": "ok", "ver_clear": 0, "msgs": [[1, msg_v3("x", "bob", "voip_invite", "{not json")], ["two", "junk"], [3, msg_v3("y", "bob", "instant", "fine")]]}),
    );
    assert_eq!(
        h.take_events(),
        vec![Event::MessageInstant {
            account: "bob".into(),
            msg: "fine".into()
        }]
    );
    // a reply without ver_clear does not poison the counters (Q20)
    h.frame(json!(["notify", ["msg", 9]]));
    let id = h.call_id("user_getmsg");
    h.reply(id, json!({"result": "ok"}));
    h.advance_alive(60_000);
    assert_eq!(h.calls("user_getmsg").last().unwrap()["ver_clear"], 3);
}

#[test]
fn calls_route_by_channel_and_peer() {
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    let (call, _) = h.c.invite("r1", "bob", "\"{}\"", h.now);
    h.pump();
    let mut sent = h.calls("voip_invite");
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0]["messageID"].is_string(),
        "resends are recognised by their id"
    );
    sent[0].as_object_mut().unwrap().remove("messageID");
    assert_eq!(
        sent,
        vec![json!({"channelName": "r1", "peer": "bob", "extra": "{}", "line": "L1"})]
    );
    let voip = |kind: &str, id: &str, peer: &str, channel: &str, extra: &str| {
        let content = json!({"channel": channel, "peer": peer, "extra": extra}).to_string();
        json!([
            "notify",
            ["recvmsg_by_msgid", msg_v3(id, peer, kind, &content)]
        ])
    };
    h.frame(voip("voip_invite_ack", "1", "bob", "r1", ""));
    h.frame(voip("voip_invite_accept", "2", "bob", "r1", "yes"));
    h.frame(voip("voip_invite_accept", "3", "carl", "r1", "not mine"));
    h.frame(voip("voip_invite_msg", "4", "bob", "r2", "other channel"));
    h.frame(voip("voip_invite_bye", "5", "bob", "r1", ""));
    h.frame(voip("voip_invite_msg", "6", "bob", "r1", "after the end"));
    assert_eq!(
        h.take_events(),
        vec![
            Event::Call {
                call,
                what: CallEvent::ReceivedByPeer,
                extra: json!(""),
                code: None
            },
            Event::Call {
                call,
                what: CallEvent::AcceptedByPeer,
                extra: json!("yes"),
                code: None
            },
            Event::Call {
                call,
                what: CallEvent::EndByPeer,
                extra: json!(""),
                code: None
            },
        ]
    );
    // incoming: auto-ack, then our own end fires EndByMyself locally
    h.frame(voip("voip_invite", "7", "dora", "r3", "{\"k\":1}"));
    let ev = h.take_events();
    let Event::InviteReceived {
        call: inc,
        ref channel,
        ref peer,
        ref extra,
    } = ev[0]
    else {
        panic!("{ev:?}")
    };
    assert_eq!(
        (channel.as_str(), peer.as_str(), extra),
        ("r3", "dora", &json!("{\"k\":1}"))
    );
    assert_eq!(
        h.calls("voip_invite_ack").last().unwrap(),
        &json!({"channelName": "r3", "peer": "dora", "extra": "", "line": "L1"})
    );
    h.c.call_dtmf(inc, "r3", "dora", "5", h.now);
    h.c.call_reply(inc, "voip_invite_bye", "r3", "dora", "\"\"", h.now);
    h.pump();
    assert_eq!(
        h.calls("voip_invite_msg")[0]["extra"],
        "{\"msgtype\":\"dtmf\",\"msgdata\":\"5\"}"
    );
    assert_eq!(
        h.take_events()[0],
        Event::Call {
            call: inc,
            what: CallEvent::EndByMyself,
            extra: json!(""),
            code: None
        }
    );
    // a failed invite RPC reports the error string (D11)
    let (c2, _) = h.c.invite("r4", "erin", "\"\"", h.now);
    h.pump();
    let id = h.call_id("voip_invite");
    h.reply_err(id, "invalid_peer");
    let ev = h.take_events();
    assert_eq!(
        ev[0],
        Event::Call {
            call: c2,
            what: CallEvent::Failed,
            extra: json!("invalid_peer"),
            code: Some(1004)
        }
    );
}

#[test]
fn channel_events_route_by_name_and_drop_old_sequences() {
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    let a = h.c.channel_join("a", h.now);
    let b = h.c.channel_join("b", h.now);
    h.pump();
    for (name, id) in [("a", 0), ("b", 1)] {
        let _ = id;
        let cid = h
            .sent
            .iter()
            .find(|(_, f)| f[1][0] == "channel_join" && f[1][2]["name"] == name)
            .unwrap()
            .1[1][1]
            .as_u64()
            .unwrap();
        h.reply(
            cid,
            json!({"result": "ok", "list": [], "attrs": {"k": "v"}}),
        );
    }
    let ev = h.take_events();
    assert!(
        ev.contains(&Event::ChannelJoined { ch: a })
            && ev.contains(&Event::ChannelJoined { ch: b })
    );
    assert!(ev.contains(&Event::ChannelAttr {
        ch: b,
        name: json!("k"),
        value: json!("v"),
        kind: json!("update")
    }));
    let msg = |ch: &str, seq: u64, text: &str| {
        let content = json!({"channel": ch, "account": "bob", "uid": 0, "msg": text}).to_string();
        json!([
            "notify",
            [
                "channel2",
                ch,
                seq,
                format!("msg-v2 bob 0 {ch} channel_msg - {content}")
            ]
        ])
    };
    h.frame(msg("a", 1, "to a"));
    h.frame(msg("b", 1, "to b"));
    h.frame(msg("a", 1, "duplicate"));
    h.frame(msg("a", 3, "gap is fine"));
    h.frame(msg("a", 2, "older"));
    h.frame(msg("zzz", 9, "unknown channel"));
    let got: Vec<(u32, String)> = h
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::ChannelMessage { ch, msg, .. } => Some((ch.0, msg.as_string().unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (a.0, "to a".into()),
            (b.0, "to b".into()),
            (a.0, "gap is fine".into())
        ]
    );
}

#[test]
fn commands_before_login_are_queued_and_local_limits_refused() {
    let mut h = H::new(cfg(&["ws://a/"]));
    let ok = h.c.message_instant_send("bob", "early", h.now);
    let big = h.c.message_instant_send("bob", &"x".repeat(8197), h.now);
    let bad = h.c.message_instant_send("b b", "x", h.now);
    let inv = h.c.invoke("user_query_user_status", "{}", h.now);
    h.pump();
    let ev = h.take_events();
    let failures: Vec<(u32, String, Code)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Done {
                req,
                result: Err(f),
            } => Some((req.0, f.err.clone(), f.code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        failures,
        vec![
            (big.0, "too_large".into(), Code::GeneralLargeParam),
            (bad.0, "invalid_args".into(), Code::GeneralWrongParam),
            (inv.0, "invalid_function".into(), Code::GeneralUnknown),
        ]
    );
    assert!(ev.contains(&Event::Error {
        name: "messageInstantSend",
        code: Code::GeneralLargeParam,
        desc: "too_large".into()
    }));
    assert!(h.calls("user_sendmsg").is_empty());
    h.open();
    h.login_ok("L1");
    let sends = h.calls("user_sendmsg");
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0]["content"], "early");
    let _ = ok;
}

#[test]
fn requests_time_out_and_duplicate_replies_are_ignored() {
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    let req = h.c.invoke(
        "io.agora.signal.channel_query_num",
        "{\"name\":\"r\"}",
        h.now,
    );
    h.pump();
    let id = h.call_id("channel_query_num");
    h.reply(id, json!({"result": "ok", "num": 1}));
    h.reply(id, json!({"result": "ok", "num": 2}));
    let done: Vec<_> = h
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, Event::Done { .. }))
        .collect();
    assert_eq!(
        done,
        vec![Event::Done {
            req,
            result: Ok(json!({"result": "ok", "num": 1}))
        }]
    );
    let req = h.c.invoke(
        "io.agora.signal.channel_query_num",
        "{\"name\":\"r\"}",
        h.now,
    );
    h.pump();
    h.frame(json!(["pong", 1])); // keep the watchdog fed
    h.advance(30_000);
    let ev = h.take_events();
    assert!(ev.iter().any(
        |e| matches!(e, Event::Done { req: r, result: Err(f) } if *r == req && f.err == "timeout")
    ));
    // a failure in data.result (the original's second error form)
    let req = h.c.invoke("io.agora.signal.x", "{}", h.now);
    h.pump();
    let id = h.call_id("x");
    h.reply(
        id,
        json!({"result": "failed", "data": {"result": "peer_offline"}}),
    );
    assert!(h.take_events().iter().any(|e| matches!(e, Event::Done { req: r, result: Err(f) } if *r == req && f.err == "peer_offline" && f.code == Code::InvitePeerOffline)));
}

#[test]
fn silent_server_is_detected_by_the_pong_watchdog() {
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    h.advance(34_999);
    assert_eq!(h.c.state(), State::LoggedIn);
    h.advance(1);
    assert_eq!(h.c.state(), State::Reconnecting);
    // traffic keeps it alive
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    for _ in 0..10 {
        h.advance(10_000);
        h.frame(json!(["pong", 1]));
    }
    assert_eq!(h.c.state(), State::LoggedIn);
}

#[test]
fn lbs_lookup_then_connect_with_the_url_rule() {
    let mut c = cfg(&[]);
    c.lbs = vec!["http://lbs1".into(), "http://lbs2/".into()];
    let mut h = H::new(c);
    assert_eq!(
        h.fetches,
        vec![(1, "http://lbs1/getaddr?vid=app".to_string())]
    );
    h.c.handle_fetch(1, None, h.now);
    h.pump();
    assert_eq!(h.fetches[1], (2, "http://lbs2/getaddr?vid=app".to_string()));
    h.c.handle_fetch(
        2,
        Some(json!({"web": [["10.0.0.1", 8000], "ws://direct/"]})),
        h.now,
    );
    h.pump();
    assert_eq!(h.connects[0].1, "wss://10-0-0-1-sig-web.agora.io:8001/");
    h.close();
    assert_eq!(h.connects[1].1, "ws://direct/");
    // an LBS that does not answer in 5 s is skipped; all failing → 201
    let mut c = cfg(&[]);
    c.lbs = vec!["http://slow".into()];
    let mut h = H::new(c);
    h.advance(5_000);
    assert_eq!(
        h.take_events(),
        vec![Event::LoginFailed {
            code: Code::LoginNet
        }]
    );
}

/// Reply to the last `channel_join` for `name` with a member list.
fn join_ok(h: &mut H, name: &str, list: Value) {
    let id = h
        .sent
        .iter()
        .rev()
        .find(|(_, f)| f[1][0] == "channel_join" && f[1][2]["name"] == name)
        .unwrap_or_else(|| panic!("no channel_join {name}"))
        .1[1][1]
        .as_u64()
        .unwrap();
    h.reply(id, json!({"result": "ok", "list": list, "attrs": {}}));
}

fn joined_events(ev: &[Event<Value>]) -> usize {
    ev.iter()
        .filter(|e| matches!(e, Event::ChannelJoined { .. }))
        .count()
}

#[test]
fn one_channel_per_name_joined_once() {
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    // joining: the same Channel, one request
    let first = h.c.channel_join("room", h.now);
    let again = h.c.channel_join("room", h.now);
    h.pump();
    assert_eq!(first, again);
    assert_eq!(h.calls("channel_join").len(), 1);
    join_ok(&mut h, "room", json!([["alice", 0]]));
    assert_eq!(joined_events(&h.take_events()), 1, "announced once");
    // joined: the same Channel; asked again and announced again (as a join would be)
    h.take_sent();
    let third = h.c.channel_join("room", h.now);
    h.pump();
    assert_eq!(third, first);
    assert_eq!(h.calls("channel_join").len(), 1);
    join_ok(&mut h, "room", json!([["alice", 0], ["bob", 0]]));
    let ev = h.take_events();
    assert_eq!(
        ev,
        vec![
            Event::ChannelJoined { ch: first },
            Event::ChannelUserList {
                ch: first,
                list: json!([["alice", 0], ["bob", 0]])
            }
        ]
    );
    // events of the channel reach that one Channel once
    let content = json!({"channel": "room", "account": "bob", "uid": 0, "msg": "hi"}).to_string();
    h.frame(json!([
        "notify",
        [
            "channel2",
            "room",
            5,
            format!("msg-v2 bob 0 room channel_msg - {content}")
        ]
    ]));
    assert_eq!(
        h.take_events(),
        vec![Event::ChannelMessage {
            ch: first,
            account: json!("bob"),
            uid: json!(0),
            msg: json!("hi")
        }]
    );
}

#[test]
fn joining_in_every_login_success_survives_reconnects() {
    // the tutorials join their room in onLoginSuccess, which fires again after a reconnect
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    let ch = h.c.channel_join("room", h.now);
    h.pump();
    join_ok(&mut h, "room", json!([["alice", 0]]));
    h.take_events();
    h.close();
    h.until_reconnect();
    h.open();
    h.take_sent();
    h.login_ok("L2");
    assert!(h
        .take_events()
        .contains(&Event::LoginSuccess { uid: json!(0) }));
    // the app's onLoginSuccess runs now and joins again
    let again = h.c.channel_join("room", h.now);
    h.pump();
    assert_eq!(again, ch, "the same Channel, not a second one");
    assert_eq!(h.calls("channel_join").len(), 1, "only the rejoin goes out");
    join_ok(&mut h, "room", json!([["alice", 0]]));
    let ev = h.take_events();
    assert_eq!(
        joined_events(&ev),
        1,
        "the rejoin announces the channel: {ev:?}"
    );
    // leave through it; a later reconnect does not bring the user back
    let leave = h.c.channel_leave(ch, "room", h.now);
    h.pump();
    let id = h.call_id("channel_leave");
    h.reply(id, json!({"result": "ok"}));
    assert!(h
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::Done { req, .. } if *req == leave)));
    h.close();
    h.until_reconnect();
    h.open();
    h.take_sent();
    h.login_ok("L3");
    assert!(
        h.calls("channel_join").is_empty(),
        "no rejoin of a channel left"
    );
    // a join during the reconnect itself (before the login) also stays one Channel
    let ch2 = h.c.channel_join("lobby", h.now);
    h.pump();
    join_ok(&mut h, "lobby", json!([]));
    h.take_events();
    h.close();
    assert_eq!(h.c.channel_join("lobby", h.now), ch2);
    h.until_reconnect();
    h.open();
    h.take_sent();
    h.login_ok("L4");
    assert_eq!(h.calls("channel_join").len(), 1);
    join_ok(&mut h, "lobby", json!([]));
    assert_eq!(joined_events(&h.take_events()), 1);
}

#[test]
fn leaving_then_joining_the_same_name_makes_a_new_channel() {
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    let ch = h.c.channel_join("room", h.now);
    h.pump();
    join_ok(&mut h, "room", json!([]));
    h.c.channel_leave(ch, "room", h.now);
    let next = h.c.channel_join("room", h.now);
    assert_ne!(next, ch);
}

#[test]
fn a_failed_rejoin_leaves_with_604() {
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    let ch = h.c.channel_join("room", h.now);
    h.pump();
    join_ok(&mut h, "room", json!([]));
    h.take_events();
    h.close();
    h.until_reconnect();
    h.open();
    h.take_sent();
    h.login_ok("L2");
    let id = h.call_id("channel_join");
    h.reply_err(id, "reserved_channel");
    assert!(h
        .take_events()
        .contains(&Event::ChannelLeft { ch, code: 604 }));
    // the name is free again
    assert_ne!(h.c.channel_join("room", h.now), ch);
}

fn token(app: &str, expiry: u64) -> String {
    format!("1:{app}:{expiry}:0123456789abcdef0123456789abcdef")
}

#[test]
fn token_will_expire_fires_30_s_before_the_expiry_and_renewal_is_used_at_the_next_login() {
    // the driver's time 0 is Unix time 1,000,000 s; the token expires 100 s later
    let mut c = cfg(&["ws://a/"]);
    c.unix_ms_at_zero = 1_000_000_000;
    c.token = token("app", 1_000_100);
    let mut h = H::logged_in(c);
    h.advance_alive(69_000);
    assert!(!h.take_events().contains(&Event::TokenWillExpire));
    h.advance_alive(1_000);
    assert_eq!(
        h.take_events()
            .iter()
            .filter(|e| **e == Event::TokenWillExpire)
            .count(),
        1
    );
    // renewal: checked locally, then by the server
    let fresh = token("app", 1_003_600);
    let req = h.c.renew_token(&fresh, h.now);
    h.pump();
    assert_eq!(h.c.token(), fresh);
    let sent = h.calls("user_renew_token");
    assert_eq!(sent[0]["token"], fresh.as_str());
    let id = h.call_id("user_renew_token");
    h.reply(id, json!({"result": "ok"}));
    assert!(h
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::Done { req: r, result: Ok(_) } if *r == req)));
    // the next login (after a loss) uses it, and the warning is re-armed for it
    h.close();
    h.until_reconnect();
    h.take_sent();
    h.open();
    let login = &h.take_sent()[0];
    assert_eq!(login[1]["token"], fresh.as_str());
    h.login_ok("L2");
    h.advance_alive(3_600_000 - 30_000 - h.now - 1_000);
    assert!(!h.take_events().contains(&Event::TokenWillExpire));
    h.advance_alive(2_000);
    assert!(h.take_events().contains(&Event::TokenWillExpire));
}

#[test]
fn renewal_refusals_keep_the_token_in_use() {
    let mut c = cfg(&["ws://a/"]);
    c.unix_ms_at_zero = 1_000_000_000;
    c.token = token("app", 1_000_100);
    let mut h = H::logged_in(c);
    let before = h.c.token().to_string();
    for (bad, err) in [
        (token("otherapp", 1_003_600), "token_invalid"),
        (token("app", 999_000), "token_expired"),
    ] {
        let req = h.c.renew_token(&bad, h.now);
        h.pump();
        let ev = h.take_events();
        assert!(
            ev.iter().any(
                |e| matches!(e, Event::Done { req: r, result: Err(f) } if *r == req && f.err == err)
            ),
            "{ev:?}"
        );
        assert_eq!(h.c.token(), before);
    }
    // the server refuses it (another account's token): back to the previous one
    let other = token("app", 1_003_600);
    let req = h.c.renew_token(&other, h.now);
    h.pump();
    let id = h.call_id("user_renew_token");
    h.reply_err(id, "token_invalid");
    let ev = h.take_events();
    assert!(ev.iter().any(|e| matches!(e, Event::Done { req: r, result: Err(f) } if *r == req && f.code == Code::LoginTokenWrong)));
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::Error {
            name: "renewToken",
            ..
        }
    )));
    assert_eq!(h.c.token(), before);
}

#[test]
fn a_token_renewed_while_reconnecting_is_used_by_the_next_attempt() {
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    h.close();
    let fresh = token("app", 0);
    h.c.renew_token(&fresh, h.now);
    h.until_reconnect();
    h.open();
    assert_eq!(h.take_sent()[0][1]["token"], fresh.as_str());
    h.login_ok("L2");
    assert_eq!(
        h.calls("user_renew_token").len(),
        1,
        "then confirmed with the server"
    );
}

#[test]
fn android_and_ios_queries_send_their_call2() {
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    h.c.query_user_status("bob", h.now);
    h.c.set_attr("color", "blue", h.now);
    h.c.get_user_attr(None, "color", h.now);
    h.c.get_user_attr(Some("bob"), "color", h.now);
    h.c.get_user_attr_all(None, h.now);
    h.c.get_user_attr_all(Some("bob"), h.now);
    h.c.channel_query_user_num("room", h.now);
    h.c.channel_query_user_is_in("room", "bob", h.now);
    h.c.channel_send("room", "psst", true, h.now);
    h.pump();
    let got: Vec<Value> = h
        .take_sent()
        .into_iter()
        .map(|f| {
            let mut args = f[1][2].clone();
            args.as_object_mut().unwrap().remove("line");
            args.as_object_mut().unwrap().remove("msgID");
            json!([f[1][0], args])
        })
        .collect();
    assert_eq!(
        got,
        vec![
            json!(["user_query_user_status", {"account": "bob"}]),
            json!(["user_set_attr", {"name": "color", "value": "blue"}]),
            json!(["user_get_attr", {"account": "alice", "name": "color"}]),
            json!(["user_get_attr", {"account": "bob", "name": "color"}]),
            json!(["user_get_attr_all", {"account": "alice"}]),
            json!(["user_get_attr_all", {"account": "bob"}]),
            json!(["channel_query_num", {"name": "room"}]),
            json!(["channel_query_user_isin", {"name": "room", "account": "bob"}]),
            json!(["channel_sendmsg", {"name": "room", "msg": "psst", "force": true}]),
        ]
    );
    // bad input is refused locally with the op's name
    h.c.query_user_status("has space", h.now);
    h.pump();
    assert!(h.take_events().iter().any(|e| matches!(
        e,
        Event::Error {
            name: "queryUserStatus",
            code: Code::GeneralWrongParam,
            ..
        }
    )));
}

/// A numbered channel message as the server sends it (opensig: the message number is the
/// fifth element).
fn numbered(ch: &str, seq: u64, n: u64, text: &str) -> Value {
    let content = json!({"channel": ch, "account": "bob", "uid": 0, "msg": text}).to_string();
    json!([
        "notify",
        [
            "channel2",
            ch,
            seq,
            format!("msg-v2 bob 0 {ch} channel_msg - {content}"),
            n
        ]
    ])
}

/// A numbered channel message with its send's identity (opensig: the sixth element).
fn numbered_id(ch: &str, seq: u64, n: u64, text: &str, id: u64) -> Value {
    let mut f = numbered(ch, seq, n, text);
    f[1].as_array_mut().unwrap().push(json!(id));
    f
}

fn channel_texts(ev: Vec<Event<Value>>) -> Vec<String> {
    ev.into_iter()
        .filter_map(|e| match e {
            Event::ChannelMessage { msg, .. } => Some(msg.as_string().unwrap()),
            Event::ChannelMessagesLost { count, .. } => Some(format!("lost {count}")),
            Event::ChannelUserJoined { account, .. } => {
                Some(format!("joined {}", account.as_string().unwrap()))
            }
            _ => None,
        })
        .collect()
}

/// A message as the channel's history returns it: number `n`, text "m<n>", from bob.
fn kept(n: u64) -> Value {
    json!({"n": n, "seq": n + 6, "ts": 1, "account": "bob", "msg": format!("m{n}")})
}

/// Answer the channel history request sent last: "room" up to `last`, holding `nums` (as
/// [`kept`] gives them).
fn answer_history(h: &mut H, last: u64, nums: &[u64]) {
    let hid = h.call_id("channel_history");
    let msgs: Vec<Value> = nums.iter().map(|n| kept(*n)).collect();
    h.reply(
        hid,
        json!({"result": "ok", "name": "room", "last": last, "msgs": msgs}),
    );
}

/// Logged in and joined to "room", whose latest message number is `last_msg`.
fn in_room(last_msg: u64) -> H {
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    h.c.channel_join("room", h.now);
    h.pump();
    let id = h.call_id("channel_join");
    h.reply(
        id,
        json!({"result": "ok", "list": [], "attrs": {}, "last_msg": last_msg}),
    );
    h
}

#[test]
fn the_numbers_a_member_saw_ride_with_its_channel_messages_and_its_rejoin() {
    let seen = |args: &Value| (args["seen_seq"].as_u64(), args["seen_msg"].as_u64());
    // joined, nothing heard yet: the latest message number of the join only
    let mut h = in_room(3);
    h.c.channel_send("room", "a", false, h.now);
    h.pump();
    assert_eq!(seen(&h.calls("channel_sendmsg")[0]), (None, Some(3)));
    // what arrived since
    h.frame(numbered("room", 10, 4, "m4"));
    h.c.channel_send("room", "b", false, h.now);
    h.pump();
    assert_eq!(seen(&h.calls("channel_sendmsg")[1]), (Some(10), Some(4)));
    // a channel it is not in: nothing (the server refuses the send anyway)
    h.c.channel_send("other", "c", false, h.now);
    h.pump();
    assert_eq!(seen(&h.calls("channel_sendmsg")[2]), (None, None));
    // the rejoin after a reconnect carries them
    h.close();
    h.until_reconnect();
    h.open();
    h.login_ok("L2");
    h.call_id_after_rejoin();
    let joins = h.calls("channel_join");
    assert_eq!(seen(joins.last().unwrap()), (Some(10), Some(4)));
}

/// A member whose membership was lost (a failover can lose a join) hears nothing until it
/// joins again; the join again fetches what it missed, before the live events that came
/// meanwhile.
#[test]
fn joining_a_joined_channel_again_recovers_what_was_missed() {
    let mut h = in_room(3);
    h.frame(numbered("room", 10, 4, "m4"));
    assert_eq!(channel_texts(h.take_events()), vec!["m4"]);
    // 5 and 6 never came; joined again, 7 arrives before the reply
    h.c.channel_join("room", h.now);
    h.pump();
    let id = h.call_id("channel_join");
    h.frame(numbered("room", 13, 7, "m7"));
    h.reply(
        id,
        json!({"result": "ok", "list": [], "attrs": {}, "last_msg": 6}),
    );
    let asked = h.calls("channel_history");
    assert_eq!(
        (asked[0]["after"].as_u64(), asked[0]["max"].as_u64()),
        (Some(4), Some(2))
    );
    answer_history(&mut h, 7, &[5, 6, 7]);
    let texts: Vec<String> = channel_texts(h.take_events())
        .into_iter()
        .filter(|t| t.starts_with('m'))
        .collect();
    assert_eq!(texts, vec!["m5", "m6", "m7"]);
    // nothing missed: no history asked, what waited is delivered at the reply
    h.c.channel_join("room", h.now);
    h.pump();
    let id = h.call_id("channel_join");
    h.frame(numbered("room", 14, 8, "m8"));
    assert_eq!(channel_texts(h.take_events()), Vec::<String>::new());
    h.reply(
        id,
        json!({"result": "ok", "list": [], "attrs": {}, "last_msg": 7}),
    );
    assert_eq!(h.calls("channel_history").len(), 1);
    assert_eq!(channel_texts(h.take_events()), vec!["m8"]);
}

/// The server's `rejoin` notice (its node lost its subscriptions for a while: a Redis primary
/// died): each joined channel is joined again with the numbers seen, not announced to the
/// app, its live events held while what was missed comes from the history; a failure leaves
/// the channel joined.
#[test]
fn the_server_s_rejoin_notice_recovers_what_its_node_missed() {
    let mut h = in_room(3);
    h.frame(numbered("room", 10, 4, "m4"));
    assert_eq!(channel_texts(h.take_events()), vec!["m4"]);
    h.take_sent();
    // 5 and 6 were published while the node was not subscribed
    h.frame(json!(["notify", ["rejoin"]]));
    let asked = h.calls("channel_join");
    assert_eq!(
        asked,
        vec![json!({"name": "room", "seen_seq": 10, "seen_msg": 4, "line": "L1"})]
    );
    let id = h.call_id("channel_join");
    h.take_sent();
    h.frame(numbered("room", 13, 7, "m7"));
    assert_eq!(channel_texts(h.take_events()), Vec::<String>::new());
    h.reply(
        id,
        json!({"result": "ok", "list": [["bob", 0]], "attrs": {}, "last_msg": 7}),
    );
    let events = h.take_events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::ChannelJoined { .. })),
        "not announced: {events:?}"
    );
    let asked = h.calls("channel_history");
    assert_eq!(
        (asked[0]["after"].as_u64(), asked[0]["max"].as_u64()),
        (Some(4), Some(3))
    );
    answer_history(&mut h, 7, &[5, 6, 7]);
    h.take_sent();
    assert_eq!(channel_texts(h.take_events()), vec!["m5", "m6", "m7"]);
    // refused (its join budget spent): still joined, what waited is delivered
    h.frame(json!(["notify", ["rejoin"]]));
    let id = h.call_id("channel_join");
    h.take_sent();
    h.frame(numbered("room", 14, 8, "m8"));
    h.reply(id, json!({"result": "failed", "reason": "rate_limited"}));
    let texts = channel_texts(h.take_events());
    assert_eq!(texts.last().map(String::as_str), Some("m8"));
    h.frame(numbered("room", 15, 9, "m9"));
    assert_eq!(channel_texts(h.take_events()), vec!["m9"]);
}

/// A live message whose number skips some (their pushes were lost on the way, and nothing
/// told the client): what was skipped comes from the history first, in order, then the live
/// one and what came meanwhile; what the history no longer has is counted lost.
#[test]
fn a_skipped_message_number_fetches_what_was_missed_first() {
    let mut h = in_room(3);
    h.frame(numbered("room", 10, 4, "m4"));
    assert_eq!(channel_texts(h.take_events()), vec!["m4"]);
    h.take_sent();
    // 5 and 6 never came
    h.frame(numbered("room", 13, 7, "m7"));
    h.frame(numbered("room", 14, 8, "m8"));
    assert_eq!(channel_texts(h.take_events()), Vec::<String>::new());
    let asked = h.calls("channel_history");
    assert_eq!(asked.len(), 1, "asked once");
    assert_eq!(
        (asked[0]["after"].as_u64(), asked[0]["max"].as_u64()),
        (Some(4), Some(2))
    );
    answer_history(&mut h, 8, &[5, 6, 7]);
    h.take_sent();
    assert_eq!(channel_texts(h.take_events()), vec!["m5", "m6", "m7", "m8"]);
    // the next number: delivered at once, nothing asked
    h.frame(numbered("room", 15, 9, "m9"));
    assert_eq!(channel_texts(h.take_events()), vec!["m9"]);
    assert!(h.calls("channel_history").is_empty());
    // the history no longer has one of the skipped: counted lost, the other delivered
    h.frame(numbered("room", 18, 12, "m12"));
    answer_history(&mut h, 12, &[11]);
    assert_eq!(channel_texts(h.take_events()), vec!["lost 1", "m11", "m12"]);
    // the history could not be read: all the skipped counted lost, the live one delivered
    h.take_sent();
    h.frame(numbered("room", 20, 15, "m15"));
    let hid = h.call_id("channel_history");
    h.reply(hid, json!({"result": "failed", "reason": "rate_limited"}));
    assert_eq!(channel_texts(h.take_events()), vec!["lost 2", "m15"]);
    // while a rejoin is on its way, the rejoin fetches what was missed: nothing asked here
    h.take_sent();
    h.frame(json!(["notify", ["rejoin"]]));
    h.frame(numbered("room", 22, 17, "m17"));
    assert!(h.calls("channel_history").is_empty());
}

#[test]
fn a_rejoin_recovers_missed_channel_messages_in_order_once_before_live_ones() {
    let mut h = in_room(3);
    h.frame(numbered("room", 10, 4, "m4"));
    h.frame(numbered("room", 10, 4, "m4 again"));
    assert_eq!(channel_texts(h.take_events()), vec!["m4"]);
    // the connection breaks; meanwhile 5..=8 are sent (5 is no longer kept)
    h.close();
    h.until_reconnect();
    h.open();
    h.login_ok("L2");
    let id = h.call_id_after_rejoin();
    h.take_sent();
    h.reply(
        id,
        json!({"result": "ok", "list": [], "attrs": {}, "last_msg": 8}),
    );
    let asked = h.calls("channel_history");
    assert_eq!(asked.len(), 1);
    assert_eq!(
        (asked[0]["after"].as_u64(), asked[0]["max"].as_u64()),
        (Some(4), Some(4))
    );
    // live events before the history reply wait: 9 after a join, and a resent 8
    let join = json!({"channel": "room", "account": "cid", "uid": 0}).to_string();
    h.frame(json!([
        "notify",
        [
            "channel2",
            "room",
            13,
            format!("msg-v2 cid 0 room channel_user_join - {join}")
        ]
    ]));
    h.frame(numbered("room", 14, 9, "m9"));
    assert_eq!(channel_texts(h.take_events()), Vec::<String>::new());
    answer_history(&mut h, 9, &[6, 7, 8, 9]);
    assert_eq!(
        channel_texts(h.take_events()),
        vec!["lost 1", "m6", "m7", "m8", "joined cid", "m9"]
    );
    // live again, duplicates still dropped
    h.frame(numbered("room", 15, 9, "m9 again"));
    h.frame(numbered("room", 16, 10, "m10"));
    assert_eq!(channel_texts(h.take_events()), vec!["m10"]);
}

/// A send the server took twice (the SDK resent it after a reconnect, or Redis ran it again,
/// after the first copy went out but its write was lost with a primary) comes under another
/// number with the same identity: delivered once, live or from the history, while the
/// identity is among the latest thousands remembered (a bounded table).
#[test]
fn a_channel_message_the_server_took_twice_is_delivered_once() {
    let mut h = in_room(3);
    h.frame(numbered_id("room", 10, 4, "m4", 77));
    h.frame(numbered_id("room", 11, 5, "m4 again", 77));
    h.frame(numbered_id("room", 12, 6, "m6", 78));
    assert_eq!(channel_texts(h.take_events()), vec!["m4", "m6"]);
    // joined again (the server's notice): 7 and 8 are copies, live meanwhile a copy of 8
    h.frame(json!(["notify", ["rejoin"]]));
    let id = h.call_id("channel_join");
    h.take_sent();
    h.frame(numbered_id("room", 17, 10, "m8 again", 79));
    h.reply(
        id,
        json!({"result": "ok", "list": [], "attrs": {}, "last_msg": 9}),
    );
    let hid = h.call_id("channel_history");
    let kept = |n: u64, text: &str, id: Option<u64>| {
        let mut k = json!({"n": n, "seq": n + 6, "ts": 1, "account": "bob", "msg": text});
        if let Some(id) = id {
            k["id"] = json!(id);
        }
        k
    };
    h.reply(
        hid,
        json!({"result": "ok", "name": "room", "last": 10, "msgs": [
            kept(7, "m6 again", Some(78)), kept(8, "m8", Some(79)), kept(9, "m9", None)
        ]}),
    );
    // nothing is lost: a copy counts as found
    assert_eq!(channel_texts(h.take_events()), vec!["m8", "m9"]);
    h.frame(numbered_id("room", 18, 11, "m11", 80));
    assert_eq!(channel_texts(h.take_events()), vec!["m11"]);
    // thousands of messages later (an hour at a message a second) a copy is still caught
    for i in 0..4_000u64 {
        h.frame(numbered_id("room", 19 + i, 12 + i, "", 1_000 + i * 7_919));
    }
    h.take_events();
    h.frame(numbered_id("room", 5_000, 4_012, "m8 much later", 79));
    h.frame(numbered_id("room", 5_001, 4_013, "m4013", 81));
    assert_eq!(channel_texts(h.take_events()), vec!["m4013"]);
    // a table of fixed size: an identity is forgotten once enough came after it (the set it
    // falls in filled up)
    for i in 0..4 {
        h.frame(numbered_id(
            "room",
            5_002 + i,
            4_014 + i,
            "",
            80 + 2_048 * (i + 1),
        ));
    }
    h.take_events();
    h.frame(numbered_id("room", 5_010, 4_018, "m11 again", 80));
    assert_eq!(channel_texts(h.take_events()), vec!["m11 again"]);
}

#[test]
fn a_failed_recovery_counts_everything_missed_as_lost() {
    let mut h = in_room(0);
    h.close();
    h.until_reconnect();
    h.open();
    h.login_ok("L2");
    let id = h.call_id_after_rejoin();
    h.reply(
        id,
        json!({"result": "ok", "list": [], "attrs": {}, "last_msg": 50}),
    );
    let hid = h.call_id("channel_history");
    h.reply_err(hid, "unknown_function");
    assert_eq!(channel_texts(h.take_events()), vec!["lost 50"]);
    // nothing missed: no request at all; a server without message numbers: none either
    h.close();
    h.until_reconnect();
    h.open();
    h.login_ok("L3");
    let id = h.call_id_after_rejoin();
    h.sent.clear();
    h.reply(
        id,
        json!({"result": "ok", "list": [], "attrs": {}, "last_msg": 50}),
    );
    assert!(h.calls("channel_history").is_empty());
}

#[test]
fn watched_accounts_report_states_survive_a_reconnect_and_end_with_logout() {
    let mut h = H::logged_in(cfg(&["ws://a/"]));
    let watch = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let req =
        h.c.peers(PeersOp::Subscribe, &watch(&["ann", "bob"]), h.now);
    h.pump();
    let sent = h.calls("user_subscribe_status");
    assert_eq!(sent[0]["accounts"], json!(["ann", "bob"]));
    let id = h.call_id("user_subscribe_status");
    h.reply(
        id,
        json!({"result": "ok", "status": {"ann": "ONLINE", "bob": "OFFLINE"}}),
    );
    let ev = h.take_events();
    assert_eq!(
        ev[0],
        Event::PeersStatus {
            status: json!({"ann": "ONLINE", "bob": "OFFLINE"})
        }
    );
    assert!(matches!(&ev[1], Event::Done { req: r, result: Ok(_) } if *r == req));
    // a change, and a state of an account not watched (ignored)
    h.frame(json!(["notify", ["peer_status", "{\"bob\":\"ONLINE\"}"]]));
    h.frame(json!(["notify", ["peer_status", "{\"cat\":\"ONLINE\"}"]]));
    assert_eq!(
        h.take_events(),
        vec![Event::PeersStatus {
            status: json!({"bob": "ONLINE"})
        }]
    );
    // the connection drops; back, it subscribes again and reports what changed, once
    h.take_sent();
    h.close();
    h.until_reconnect();
    h.open();
    h.login_ok("L2");
    h.take_events();
    let again = h
        .take_sent()
        .into_iter()
        .find(|f| f[0] == "call2" && f[1][0] == "user_subscribe_status")
        .expect("the watches are subscribed again");
    assert_eq!(again[1][2]["accounts"], json!(["ann", "bob"]));
    let id = again[1][1].as_u64().unwrap();
    h.reply(
        id,
        json!({"result": "ok", "status": {"ann": "OFFLINE", "bob": "ONLINE"}}),
    );
    assert_eq!(
        h.take_events(),
        vec![Event::PeersStatus {
            status: json!({"ann": "OFFLINE"})
        }]
    );
    // unwatched accounts are not reported; a logout forgets every watch
    h.c.peers(PeersOp::Unsubscribe, &watch(&["ann"]), h.now);
    h.frame(json!(["notify", ["peer_status", "{\"ann\":\"ONLINE\"}"]]));
    assert!(!h
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::PeersStatus { .. })));
    h.c.logout(h.now);
    h.pump();
    h.frame(json!(["notify", ["peer_status", "{\"bob\":\"OFFLINE\"}"]]));
    assert!(!h
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::PeersStatus { .. })));
    // a bad account is refused before anything is sent
    let bad =
        h.c.peers(PeersOp::Subscribe, &watch(&["with space"]), h.now);
    h.pump();
    assert!(h.take_events().iter().any(|e| matches!(
        e,
        Event::Done { req, result: Err(_) } if *req == bad
    )));
}

/// A driver that reads the hot frames itself (the SDK's JS reader) asks the core whether it
/// may deliver the event itself and does so (the event it would raise is recorded as the
/// core's would be), or hands the frame over whole when told to: the core must end where the
/// same frames read by the core itself end.
fn read_by_driver(h: &mut H, frame: &Value) {
    use opensig_protocol::client::{channel_event_of, ChannelEvent, Direct};
    use opensig_protocol::msg;
    use opensig_protocol::names::msgtype;
    let c = h.conn();
    let p = &frame[1];
    let decided = if p[0] == "channel2" {
        let (name, seq, text) = (
            p[1].as_str().unwrap(),
            p[2].as_u64().unwrap(),
            p[3].as_str().unwrap(),
        );
        let m = msg::parse(text).unwrap();
        let kind = msgtype::CHANNEL_EVENTS
            .iter()
            .position(|(k, _)| *k == m.kind)
            .unwrap();
        let content = serde_json::from_str::<Value>(m.content).unwrap();
        let fields = msgtype::CHANNEL_EVENTS[kind].1.map(|k| {
            content
                .get(k)
                .filter(|_| !k.is_empty())
                .cloned()
                .unwrap_or(json!(""))
        });
        let e = ChannelEvent {
            channel: name,
            seq,
            number: p[4].as_u64(),
            kind,
            id: p[5].as_u64(),
        };
        let d = h.c.channel_event_direct(c, &e, h.now);
        if let Direct::Deliver(ch) = d {
            h.events.push(channel_event_of(ch, kind, fields));
        }
        d
    } else {
        let pair: Value = serde_json::from_str(p[1].as_str().unwrap()).unwrap();
        let m = msg::parse(pair[1].as_str().unwrap()).unwrap();
        let d =
            h.c.instant_direct(c, pair[0].as_u64().unwrap(), m.id, h.now);
        if let Direct::Deliver(_) = d {
            h.events.push(Event::MessageInstant {
                account: json!(m.source),
                msg: json!(m.content),
            });
        }
        d
    };
    if decided == Direct::Full {
        h.frame(frame.clone());
    }
    h.pump();
}

#[test]
fn events_read_by_the_driver_follow_the_same_rules_as_frames() {
    let joined = |h: &mut H| {
        let a = h.c.channel_join("a", h.now);
        h.pump();
        let cid = h.call_id("channel_join");
        h.reply(cid, json!({"result": "ok", "list": [], "attrs": {}}));
        h.take_events();
        a
    };
    let mut core = H::logged_in(cfg(&["ws://a/"]));
    let mut direct = H::logged_in(cfg(&["ws://a/"]));
    let a = joined(&mut core);
    assert_eq!(joined(&mut direct), a);
    let chan = |seq: u64, kind: &str, content: Value, number: Option<u64>| {
        let text = format!("msg-v2 bob 0 a {kind} - {content}");
        match number {
            Some(n) => json!(["notify", ["channel2", "a", seq, text, n]]),
            None => json!(["notify", ["channel2", "a", seq, text]]),
        }
    };
    let sent = |seq: u64, n: u64, text: &str, id: u64| {
        let mut f = chan(
            seq,
            "channel_msg",
            json!({"account": "bob", "msg": text}),
            Some(n),
        );
        f[1].as_array_mut().unwrap().push(json!(id));
        f
    };
    let inst = |v: u64, id: &str, text: &str| {
        json!([
            "notify",
            [
                "recvmsg",
                json!([v, msg_v3(id, "bob", "instant", text)]).to_string()
            ]
        ])
    };
    let frames = vec![
        chan(
            1,
            "channel_msg",
            json!({"account": "bob", "uid": 0, "msg": "one"}),
            Some(1),
        ),
        chan(
            2,
            "channel_user_join",
            json!({"account": "carol", "uid": 7}),
            None,
        ),
        chan(
            2,
            "channel_msg",
            json!({"account": "bob", "msg": "same sequence"}),
            Some(2),
        ),
        chan(
            3,
            "channel_msg",
            json!({"account": "bob", "msg": "an old number"}),
            Some(1),
        ),
        chan(
            4,
            "channel_attr_update",
            json!({"name": "k", "value": "v", "type": "update"}),
            None,
        ),
        chan(5, "channel_user_leave", json!({"account": "carol"}), None),
        chan(6, "channel_msg", json!(["not", "an", "object"]), Some(2)),
        sent(7, 3, "with an identity", 1 << 52),
        sent(8, 4, "a copy under another number", 1 << 52),
        sent(9, 5, "another identity", 1),
        // 6 skipped: held while 6 is asked of the history
        sent(10, 7, "past a skipped number", 2),
        inst(1, "x", "hello"),
        inst(2, "x", "the same id again"),
        inst(4, "z", "a gap"),
        inst(3, "y", "behind the gap"),
        json!([
            "notify",
            [
                "channel2",
                "nowhere",
                9,
                "msg-v2 bob 0 nowhere channel_msg - {}"
            ]
        ]),
    ];
    for f in &frames {
        core.frame(f.clone());
        read_by_driver(&mut direct, f);
    }
    let events = core.take_events();
    assert_eq!(events.len(), 9, "{events:?}");
    assert_eq!(events, direct.take_events());
    assert_eq!(core.take_sent(), direct.take_sent());
    assert!(events.contains(&Event::ChannelMessage {
        ch: a,
        account: json!(""),
        uid: json!(""),
        msg: json!("")
    }));
}
