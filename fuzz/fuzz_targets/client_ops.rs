//! Operation sequences on the sans-IO client session (the state machine behind both SDKs):
//! app calls, connections opening and breaking, timers, and server frames — well-formed ones
//! built from templates with fuzzed fields, and arbitrary text. Checked after every step:
//! nothing panics, at most one connection is live (PROTOCOL.md §17 Q3), nothing is still due
//! after `handle_timeout` (a driver never spins), and a logged-out session stays quiet.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use opensig_protocol::client::{Action, CallId, ChannelId, Client, Config, ConnId, Event, State};
use opensig_protocol::names::call;
use serde_json::{json, Value};

#[derive(Arbitrary, Debug)]
enum Server {
    LoginOk,
    LoginFailed(String),
    Reply {
        id: u8,
        err: String,
        body: String,
    },
    Pong,
    Kick,
    Close,
    /// `notify ["channel2", channel, seq, "<msg-v2>"]`
    Channel {
        ch: u8,
        seq: u32,
        source: u8,
        kind: u8,
        content: String,
    },
    /// `notify ["recvmsg", "[version, \"<msg-v2>\"]"]`
    Mail {
        version: u32,
        source: u8,
        kind: u8,
        content: String,
    },
    NewMail(u32),
    Multi(u8),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Open,
    Broken,
    Wait(u16),
    Frame(Server),
    Join(u8),
    Leave(u8),
    ChannelSend(u8, String, bool),
    Attr(u8, Option<String>, Option<String>),
    Send(u8, String),
    Invite(u8, u8, String),
    Reply(u8, u8),
    Dtmf(u8, String),
    Invoke(u8, opensig_fuzz::Args),
    Logout,
    Fetch(Option<String>),
}

const NAMES: &[&str] = &[
    "alice",
    "bob",
    "room",
    "__agora_user_online",
    "",
    "a b",
    "x",
];
const KINDS: &[&str] = &[
    "instant",
    "channel_msg",
    "channel_user_join",
    "channel_user_leave",
    "channel_attr_update",
    "voip_invite",
    "voip_invite_ack",
    "voip_invite_accept",
    "voip_invite_refuse",
    "voip_invite_failed",
    "voip_invite_msg",
    "voip_invite_bye",
    "other",
];

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[i as usize % list.len()]
}

struct Run {
    c: Client<Value>,
    now: u64,
    live: BTreeSet<u32>,
    /// Live connections that reported open (a connection opens at most once).
    opened: BTreeSet<u32>,
    current: Option<ConnId>,
    sent_ids: Vec<Value>,
    channels: Vec<(ChannelId, String)>,
    calls: Vec<CallId>,
    fetch: Option<u32>,
}

impl Run {
    fn drain(&mut self) {
        while let Some(a) = self.c.poll_action() {
            match a {
                Action::Connect { conn, .. } => {
                    assert!(
                        self.live.is_empty(),
                        "a second connection while {:?} is live",
                        self.live
                    );
                    self.live.insert(conn.0);
                    self.current = Some(conn);
                }
                Action::Close { conn } => {
                    self.live.remove(&conn.0);
                    self.opened.remove(&conn.0);
                }
                Action::Send { text, .. } => {
                    let v: Value = serde_json::from_str(&text).expect("the client sends JSON");
                    if v[0] == "call2" {
                        self.sent_ids.push(v[1][1].clone());
                    }
                }
                Action::Fetch { id, .. } => self.fetch = Some(id),
            }
        }
        while let Some(e) = self.c.poll_event() {
            match e {
                Event::ChannelJoined { .. } | Event::Log { .. } => {}
                Event::InviteReceived { call, .. } => self.calls.push(call),
                _ => {}
            }
        }
    }

    fn server_frame(&self, s: Server) -> String {
        let v2 = |source: u8, kind: u8, content: &str| {
            format!(
                "msg-v2 {} 0 {} {} - {}",
                pick(NAMES, source).replace(' ', ""),
                "alice",
                pick(KINDS, kind),
                content
            )
        };
        match s {
            Server::LoginOk => json!([
                "login_ret",
                [
                    "",
                    json!({"result": "ok", "uid": 0, "line": "L"}).to_string()
                ]
            ])
            .to_string(),
            Server::LoginFailed(e) => json!(["login_ret", [e, ""]]).to_string(),
            Server::Reply { id, err, body } => {
                let id = self
                    .sent_ids
                    .get(id as usize % self.sent_ids.len().max(1))
                    .cloned()
                    .unwrap_or(json!(id));
                json!(["call2-ret", [id, err, body]]).to_string()
            }
            Server::Pong => json!(["pong", 1]).to_string(),
            Server::Kick => json!(["kick", ""]).to_string(),
            Server::Close => json!(["close", ""]).to_string(),
            Server::Channel {
                ch,
                seq,
                source,
                kind,
                content,
            } => json!([
                "notify",
                ["channel2", pick(NAMES, ch), seq, v2(source, kind, &content)]
            ])
            .to_string(),
            Server::Mail {
                version,
                source,
                kind,
                content,
            } => json!([
                "notify",
                [
                    "recvmsg",
                    json!([version, v2(source, kind, &content)]).to_string()
                ]
            ])
            .to_string(),
            Server::NewMail(v) => json!(["notify", ["msg", v]]).to_string(),
            Server::Multi(n) => {
                let one = json!(["pong", n]);
                json!(["multi", vec![one; (n % 4) as usize]]).to_string()
            }
            Server::Text(t) => t,
        }
    }

    fn step(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Open => {
                if let Some(conn) = self.current {
                    if self.live.contains(&conn.0) && self.opened.insert(conn.0) {
                        self.c.handle_open(conn, now);
                    }
                }
            }
            Op::Broken => {
                if let Some(conn) = self.current.take() {
                    self.opened.remove(&conn.0);
                    if self.live.remove(&conn.0) {
                        self.c.handle_close(conn, now);
                    }
                }
            }
            Op::Wait(ms) => {
                self.now += ms as u64 * 10;
                self.c.handle_timeout(self.now);
                // everything that was due has been dealt with: a driver sleeping until the
                // next deadline never spins
                if let Some(t) = self.c.poll_timeout() {
                    assert!(
                        t > self.now,
                        "still due after handle_timeout({}): {t}",
                        self.now
                    );
                }
            }
            Op::Frame(s) => {
                if let Some(conn) = self.current.filter(|c| self.opened.contains(&c.0)) {
                    let text = self.server_frame(s);
                    self.c.handle_text(conn, &text, now);
                }
            }
            Op::Join(n) => {
                let name = pick(NAMES, n).to_string();
                let ch = self.c.channel_join(&name, now);
                self.channels.push((ch, name));
            }
            Op::Leave(i) => {
                if !self.channels.is_empty() {
                    let (ch, name) = self.channels.remove(i as usize % self.channels.len());
                    self.c.channel_leave(ch, &name, now);
                }
            }
            Op::ChannelSend(n, text, force) => {
                self.c.channel_send(pick(NAMES, n), &text, force, now);
            }
            Op::Attr(n, k, v) => {
                self.c
                    .channel_attr(pick(NAMES, n), k.as_deref(), v.as_deref(), now);
            }
            Op::Send(p, text) => {
                self.c.message_instant_send(pick(NAMES, p), &text, now);
            }
            Op::Invite(ch, p, extra) => {
                // (`extra_json` is JSON text by contract: the SDK passes JSON.stringify's output)
                let extra = Value::String(extra).to_string();
                let (call, _) = self.c.invite(pick(NAMES, ch), pick(NAMES, p), &extra, now);
                self.calls.push(call);
            }
            Op::Reply(i, what) => {
                if let Some(&call) = self.calls.get(i as usize % self.calls.len().max(1)) {
                    let name = [
                        call::VOIP_INVITE_ACCEPT,
                        call::VOIP_INVITE_REFUSE,
                        call::VOIP_INVITE_BYE,
                    ][what as usize % 3];
                    self.c.call_reply(call, name, "room", "bob", "{}", now);
                }
            }
            Op::Dtmf(i, d) => {
                if let Some(&call) = self.calls.get(i as usize % self.calls.len().max(1)) {
                    self.c.call_dtmf(call, "room", "bob", &d, now);
                }
            }
            Op::Invoke(f, args) => {
                let args = Value::Object(args.0).to_string();
                self.c.invoke(
                    &format!("io.agora.signal.{}", pick(call::ALL, f)),
                    &args,
                    now,
                );
            }
            Op::Logout => {
                self.c.logout(now);
            }
            Op::Fetch(body) => {
                if let Some(id) = self.fetch.take() {
                    let body = body.and_then(|b| serde_json::from_str(&b).ok());
                    self.c.handle_fetch(id, body, now);
                }
            }
        }
        self.drain();
        if self.c.state() == State::LoggedOut {
            assert!(self.live.is_empty() || self.c.poll_action().is_none());
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    use_lbs: bool,
    ops: Vec<Op>,
}

fuzz_target!(|i: Input| {
    let mut cfg = Config::new("app", "alice", "_no_need_token");
    if i.use_lbs {
        cfg.lbs = vec!["http://lbs.invalid".into()];
    } else {
        cfg.servers = vec!["ws://a.invalid/".into(), "ws://b.invalid/".into()];
    }
    let mut run = Run {
        c: Client::new(cfg, 1_000),
        now: 1_000,
        live: BTreeSet::new(),
        opened: BTreeSet::new(),
        current: None,
        sent_ids: vec![],
        channels: vec![],
        calls: vec![],
        fetch: None,
    };
    run.drain();
    for op in i.ops.into_iter().take(200) {
        run.step(op);
    }
});
