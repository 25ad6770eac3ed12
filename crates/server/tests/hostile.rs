//! Hostile clients: every case below attacks one server while two bystanders keep
//! exchanging messages. For each case: the documented reply or close, the bystanders
//! unaffected, no panic anywhere in the process, everything the server held for the attacker
//! released (store footprint and connections back to where they were), and memory back to
//! its level (each case runs twice; the second run must not leave more allocated than the
//! first did).
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use opensig_protocol::names::{close, login_error};
use opensig_protocol::{token, ErrorKind, Limits};
use opensig_server::Server;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------- process-wide measurements

/// Bytes allocated and not yet freed, by anything in this test process (server included).
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Panics anywhere in the process (a server task that panics is caught by tokio, so a hook
/// is the only way to see it).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
}

// ---------------------------------------------------------------- the environment

/// The hostile server's mail bounds: messages per sender per hour for offline accounts, and
/// messages stored per app.
const OFFLINE_PER_SENDER: usize = 20;
const APP_MAIL_MAX: usize = 600;
/// Its channel-state bounds per app: channels with attributes, and their bytes.
const ATTR_CHANNELS_MAX: usize = 40;
const ATTR_BYTES_MAX: usize = 512 * 1024;

struct Env {
    url: String,
    addr: SocketAddr,
    srv: Server,
    /// Messages the running case leaves stored by the rules (for accounts that are offline
    /// now and will read them at their next login); everything else must be gone.
    stored: AtomicUsize,
}

impl Env {
    /// The running case left `n` more messages stored, as the protocol promises.
    fn leaves_stored(&self, n: usize) {
        self.stored.fetch_add(n, Ordering::SeqCst);
    }

    async fn raw(&self, account: &str) -> Raw {
        let mut r = Raw::connect(&self.url).await;
        let ret = r.login(APP, account, "").await;
        assert_eq!(ret[1][0], "", "{account} logs in: {ret}");
        r
    }
}

/// One zlib stream of arbitrary bytes (the protocol crate only compresses text).
fn zlib_bytes(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(b).unwrap();
    enc.finish().unwrap()
}

/// Call `name` once the user's message budget (spent by a flood) lets it through; the
/// reply's error string.
async fn call_within_budget(r: &mut Raw, name: &str, args: Value) -> String {
    for id in 5000.. {
        let err = r.call(name, id, args.clone()).await.0;
        if err != e(ErrorKind::RateLimited) || id > 5000 + 200 {
            return err;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unreachable!()
}

/// Send `frame` (a call2) and return the reply's error string.
async fn err_of(r: &mut Raw, frame: Value) -> String {
    let id = frame[1][1].as_u64().expect("numeric id");
    r.send_value(frame).await;
    r.reply(id).await.0
}

/// The per-user message budget (p2p, user attributes, call messages) and its burst.
fn user_bucket() -> (u32, u32) {
    let rate = Limits::default().user_messages_per_second;
    (rate, rate)
}

fn e(k: ErrorKind) -> String {
    k.as_str().to_string()
}

/// Each call2 in `cases` (name, args) must be answered with `want`; the connection stays.
async fn expect_errors(env: &Env, who: &str, want: ErrorKind, cases: Vec<(&str, Value)>) {
    let mut r = env.raw(who).await;
    for (i, (name, mut args)) in cases.into_iter().enumerate() {
        if args.get("line").is_none() {
            args["line"] = Value::String(r.line.clone());
        }
        let frame = json!(["call2", [name, 100 + i as u64, args]]);
        let got = err_of(&mut r, frame.clone()).await;
        assert_eq!(got, e(want), "{frame}");
    }
    assert!(r.alive().await, "{who}: the connection still works");
}

/// Send each frame; none gets an answer, the connection keeps working.
async fn ignored(env: &Env, who: &str, frames: Vec<Message>) {
    let mut r = env.raw(who).await;
    for f in frames {
        r.ws.send(f).await.expect("send");
    }
    assert!(r.alive().await, "{who}: the connection survives");
}

/// The server closes with exactly this close frame.
async fn closes_with(r: &mut Raw, (code, reason): (u16, &str)) {
    let got = r.close_frame().await;
    assert_eq!(got, Some((code, reason.to_string())));
}

/// A raw TCP connection that must be closed by the server within `within`.
async fn tcp_closed_within(addr: SocketAddr, send: &[u8], within: Duration) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(send).await.unwrap();
    let mut buf = [0u8; 1024];
    let t0 = Instant::now();
    let r = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue, // e.g. a 408 answer before the close
            }
        }
    })
    .await;
    assert!(r.is_ok(), "still open after {:?}", t0.elapsed());
}

// ---------------------------------------------------------------- the cases

type CaseFut<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;
type CaseFn = for<'a> fn(&'a Env) -> CaseFut<'a>;

macro_rules! cases {
    ($($name:literal => |$env:ident| $body:block)*) => {
        vec![$(($name, {
            fn run<'a>($env: &'a Env) -> CaseFut<'a> { Box::pin(async move $body) }
            run as CaseFn
        })),*]
    };
}

fn all_cases() -> Vec<(&'static str, CaseFn)> {
    cases! {
        "truncated JSON" => |env| {
            ignored(env, "m1", vec![Message::text("[\"ping\","), Message::text("[\"call2\",[\"channel_join\",1,{")]).await;
        }
        "not JSON at all" => |env| {
            ignored(env, "m2", vec![Message::text("hello"), Message::text(""), Message::text("\u{0}\u{1}")]).await;
        }
        "JSON of the wrong shape" => |env| {
            ignored(env, "m3", ["{}", "{\"a\":1}", "\"text\"", "42", "null", "[]", "[1,2,3]", "[null,null]"]
                .into_iter().map(Message::text).collect()).await;
        }
        "deep nesting" => |env| {
            ignored(env, "m4", vec![Message::text("[".repeat(60_000)), Message::text(format!("[\"ping\",{}1{}]", "[".repeat(5000), "]".repeat(5000)))]).await;
        }
        "huge numbers" => |env| {
            ignored(env, "m5", vec![
                Message::text("[\"call2\",[\"user_getmsg\",1e400,{}]]"),
                Message::text("[\"ping\",1e999999]"),
                Message::text(format!("[\"call2\",[\"channel_join\",{},{{}}]]", "9".repeat(500))),
            ]).await;
        }
        "huge numbers in arguments" => |env| {
            expect_errors(env, "m6", ErrorKind::InvalidArgs, vec![
                ("user_getmsg", json!({"ver_clear": 1e300})),
                ("user_getmsg", json!({"ver_clear": -1})),
                ("user_getmsg", json!({"max": 18446744073709551616.0_f64})),
                ("channel_query_userlist_all", json!({"name": "r", "num": -3})),
            ]).await;
        }
        "invalid UTF-8 and binary garbage" => |env| {
            ignored(env, "m7", vec![
                Message::binary(vec![0xff, 0xfe, 0xfd]),
                Message::binary(vec![0x78, 0x9c, 0xff, 0xff]),
                Message::binary(zlib_bytes(&[0xc3, 0x28, 0xa0, 0xa1])),
                Message::binary(Vec::<u8>::new()),
            ]).await;
        }
        "zlib bomb" => |env| {
            let mut r = env.raw("m8").await;
            let bomb = opensig_protocol::zlib::compress(&format!("[\"ping\",\"{}\"]", "a".repeat(20 << 20)));
            r.ws.send(Message::binary(bomb)).await.unwrap();
            let got = r.recv_flat().await;
            assert_eq!(got, Some(json!(["close", ""])));
            closes_with(&mut r, close::BAD_FRAME).await;
        }
        "oversize frame" => |env| {
            let mut r = env.raw("m9").await;
            let _ = r.ws.send(Message::text(format!("[\"ping\",\"{}\"]", "x".repeat(65 * 1024)))).await;
            assert!(r.closed().await, "closed after a frame over 64 KiB");
        }
        "oversize fields" => |env| {
            expect_errors(env, "m10", ErrorKind::TooLarge, vec![
                ("user_sendmsg", json!({"peer": "m10", "content": "x".repeat(8197)})),
                ("channel_join", json!({"name": "c".repeat(129)})),
                ("channel_sendmsg", json!({"name": "r", "msg": "x".repeat(8193), "force": true})),
                ("channel_set_attr", json!({"channel": "r", "name": "n".repeat(129), "value": "v"})),
                ("channel_set_attr", json!({"channel": "r", "name": "n", "value": "v".repeat(8097)})),
                ("user_set_attr", json!({"name": "n", "value": "v".repeat(8097)})),
                ("voip_invite", json!({"channelName": "r", "peer": "p", "extra": "x".repeat(8193)})),
                ("user_query_user_status", json!({"account": "a".repeat(129)})),
            ]).await;
        }
        "unknown events" => |env| {
            ignored(env, "m11", vec![
                Message::text("[\"nonsense\",{}]"),
                Message::text("[\"login_ret\",[\"\",\"{}\"]]"),
                Message::text("[\"multi\",[[\"ping\",1]]]"),
                Message::text("[\"call2-ret\",[1,\"\",\"{}\"]]"),
                Message::text("[\"set_flag\",\"yes\"]"),
                Message::text("[\"set_flag\",{\"binary\":[1]}]"),
            ]).await;
        }
        "unknown call2 names" => |env| {
            expect_errors(env, "m12", ErrorKind::UnknownFunction, vec![
                ("no_such_function", json!({})),
                ("", json!({})),
                ("USER_GETMSG", json!({})),
                ("voip_invite_everyone", json!({"channelName": "r", "peer": "x"})),
            ]).await;
        }
        "call2 of the wrong shape" => |env| {
            ignored(env, "m13", vec![
                Message::text("[\"call2\"]"),
                Message::text("[\"call2\",5]"),
                Message::text("[\"call2\",[]]"),
                Message::text("[\"call2\",[\"channel_join\"]]"),
                Message::text("[\"call2\",[7,1,{}]]"),
            ]).await;
            let mut r = env.raw("m13b").await;
            assert_eq!(err_of(&mut r, json!(["call2", ["channel_join", 1, "args as a string"]])).await, e(ErrorKind::InvalidArgs));
            assert_eq!(err_of(&mut r, json!(["call2", ["channel_join", 2, [1, 2]]])).await, e(ErrorKind::InvalidArgs));
        }
        "call2 before login" => |env| {
            let mut r = Raw::connect(&env.url).await;
            let got = err_of(&mut r, json!(["call2", ["user_sendmsg", 1, {"line": "x", "peer": "by_a", "content": "hi"}]])).await;
            assert_eq!(got, e(ErrorKind::NotLoggedIn));
            let got = err_of(&mut r, json!(["call2", ["channel_join", 2, {"name": "r"}]])).await;
            assert_eq!(got, e(ErrorKind::NotLoggedIn));
            assert!(r.alive().await);
        }
        "another session's line" => |env| {
            let victim = env.raw("victim").await;
            let mut r = env.raw("m15").await;
            let got = err_of(&mut r, json!(["call2", ["user_sendmsg", 1, {"line": victim.line, "peer": "by_a", "content": "as victim"}]])).await;
            assert_eq!(got, e(ErrorKind::InvalidLine));
            let got = err_of(&mut r, json!(["call2", ["channel_join", 2, {"name": "r"}]])).await;
            assert_eq!(got, e(ErrorKind::InvalidLine), "no line at all");
            let got = err_of(&mut r, json!(["call2", ["channel_join", 3, {"line": 5, "name": "r"}]])).await;
            assert_eq!(got, e(ErrorKind::InvalidLine), "a line of the wrong type");
        }
        "wrong types: user messages" => |env| {
            expect_errors(env, "m16", ErrorKind::InvalidArgs, vec![
                ("user_sendmsg", json!({"peer": null, "content": "x"})),
                ("user_sendmsg", json!({"peer": ["a"], "content": "x"})),
                ("user_sendmsg", json!({"peer": "a", "content": {"o": 1}})),
                ("user_sendmsg", json!({"peer": "a", "content": "x", "flag": [1]})),
                ("user_sendmsg", json!({"peer": "a", "content": "x", "t": {}})),
                ("user_sendmsg", json!({"peer": "a", "content": "x", "messageID": [1]})),
                ("user_sendmsg", json!({"content": "no peer"})),
            ]).await;
        }
        "wrong types: channels" => |env| {
            expect_errors(env, "m17", ErrorKind::InvalidArgs, vec![
                ("channel_join", json!({"name": null})),
                ("channel_join", json!({"name": true})),
                ("channel_join", json!({})),
                ("channel_leave", json!({"name": {}})),
                ("channel_sendmsg", json!({"name": "r", "msg": "x", "force": "yes"})),
                ("channel_sendmsg", json!({"name": [], "msg": "x"})),
                ("channel_query_num", json!({"name": null})),
                ("channel_query_userlist", json!({})),
                ("channel_query_user_isin", json!({"name": "r"})),
            ]).await;
        }
        "wrong types: attributes" => |env| {
            expect_errors(env, "m18", ErrorKind::InvalidArgs, vec![
                ("channel_set_attr", json!({"channel": "r", "name": null, "value": "v"})),
                ("channel_set_attr", json!({"channel": [], "name": "n", "value": "v"})),
                ("channel_set_attr", json!({"channel": "r", "name": "n", "value": {"v": 1}})),
                ("channel_del_attr", json!({"channel": "r"})),
                ("channel_clear_attr", json!({"channel": false})),
                ("user_set_attr", json!({"name": {}})),
                ("user_get_attr", json!({"account": "a"})),
                ("user_get_attr_all", json!({"account": null})),
            ]).await;
        }
        "wrong types: calls" => |env| {
            let mut cases = vec![];
            for name in ["voip_invite", "voip_invite_accept", "voip_invite_refuse", "voip_invite_bye", "voip_invite_msg"] {
                cases.push((name, json!({"channelName": null, "peer": "p"})));
                cases.push((name, json!({"channelName": "c", "peer": {"p": 1}})));
                cases.push((name, json!({"channelName": "c", "peer": "p", "messageID": {}})));
            }
            expect_errors(env, "m19", ErrorKind::InvalidArgs, cases).await;
        }
        "wrong types: mailbox and queries" => |env| {
            expect_errors(env, "m20", ErrorKind::InvalidArgs, vec![
                ("user_getmsg", json!({"ver_clear": "abc"})),
                ("user_getmsg", json!({"ver_clear": [1]})),
                ("user_getmsg", json!({"ver_clear": 1, "max": "many"})),
                ("user_getmsg2", json!({"clear_msgs": "x"})),
                ("user_getmsg2", json!({"clear_msgs": [{}]})),
                ("user_query_user_status", json!({"account": null})),
                ("user_query_user_status", json!({})),
            ]).await;
        }
        "wrong types in the login frame" => |env| {
            for (i, login) in [
                // (a non-string account is taken as its JSON text, like the original client does)
                json!({"vid": true, "account": "x", "uid": 0, "token": "", "device": "websdk", "ip": ""}),
                json!({"vid": {"a": 1}, "account": "x", "uid": 0, "token": ""}),
                json!({"vid": APP, "account": "x", "uid": "zero", "token": {"t": 1}}),
                json!("login as a string"),
                json!([APP, "x"]),
            ].into_iter().enumerate() {
                let mut r = Raw::connect(&env.url).await;
                r.send_value(json!(["login", login])).await;
                match r.recv().await {
                    // a frame that is not a login at all: `close`, then the connection ends
                    Some(ret) if ret[0] == "close" => {
                        assert!(r.closed().await, "case {i}: closed after `close`");
                    }
                    // refused with a login_ret, then closed
                    Some(ret) => {
                        assert_eq!(ret[0], "login_ret", "case {i}: {ret}");
                        assert_ne!(ret[1][0], "", "case {i} must not log in: {ret}");
                        assert!(r.closed().await, "case {i}: closed after the refusal");
                    }
                    // or not understood at all (then the login timeout closes it)
                    None => {}
                }
            }
        }
        "bad account names" => |env| {
            for account in ["a".repeat(129), "with space".into(), "tab\there".into(), "nul\u{0}".into(), String::new()] {
                let mut r = Raw::connect(&env.url).await;
                let ret = r.login(APP, &account, "").await;
                assert_eq!(ret[1][0], login_error::WRONG_ACCOUNT, "{account:?}");
                closes_with(&mut r, close::LOGIN_REFUSED).await;
            }
        }
        "bad tokens" => |env| {
            let cases = [
                ("", login_error::TOKEN_INVALID),
                ("garbage", login_error::TOKEN_INVALID),
                (&*format!("1:{SECURE}:{}:{}", now_secs() + 3600, "0".repeat(32)), login_error::TOKEN_INVALID),
                (&*token::sign(SECURE, CERT, "someone-else", now_secs() + 3600), login_error::TOKEN_INVALID),
                (&*token::sign(SECURE, CERT, "m23", now_secs() - 10), login_error::TOKEN_EXPIRED),
                (&*"9".repeat(10_000), login_error::TOKEN_INVALID),
            ];
            for (tok, want) in cases {
                let mut r = Raw::connect(&env.url).await;
                let ret = r.login(SECURE, "m23", tok).await;
                assert_eq!(ret[1][0], want, "token {tok:.40}");
                closes_with(&mut r, close::LOGIN_REFUSED).await;
            }
            // the right token works
            let mut r = Raw::connect(&env.url).await;
            let ret = r.login(SECURE, "m23", &token::sign(SECURE, CERT, "m23", now_secs() + 60)).await;
            assert_eq!(ret[1][0], "");
        }
        "unknown app id" => |env| {
            for app in ["nope", "", &"a".repeat(300)] {
                let mut r = Raw::connect(&env.url).await;
                let ret = r.login(app, "m24", "").await;
                assert_eq!(ret[1][0], login_error::TOKEN_UNKNOWN_APP, "app {app:.20}");
                closes_with(&mut r, close::LOGIN_REFUSED).await;
            }
        }
        "second login and line_login on one connection" => |env| {
            let mut r = env.raw("m25").await;
            let ret = r.login(APP, "someone-else", "").await;
            assert_eq!(ret[1][0], login_error::ALREADY_LOGGED_IN);
            assert!(r.alive().await, "still the first session");
            r.send_value(json!(["line_login", {"line": r.line.clone()}])).await;
            assert_eq!(r.recv_flat().await, Some(json!(["close", ""])));
        }
        "p2p flood beyond the rate limit" => |env| {
            let mut r = env.raw("m26").await;
            let line = r.line.clone();
            let since = Instant::now();
            for i in 0..100u64 {
                r.send_value(json!(["call2", ["user_sendmsg", i + 1, {"line": line, "peer": "m26", "content": "flood", "t": "instant"}]])).await;
            }
            let mut limited = 0;
            for i in 0..100u64 {
                if r.reply(i + 1).await.0 == e(ErrorKind::RateLimited) {
                    limited += 1;
                }
            }
            within_bucket(100 - limited, 100, user_bucket(), since, "p2p flood");
            assert!(r.alive().await);
            // the accepted ones wait in m26's mailbox (it never acknowledged them)
            env.leaves_stored(100 - limited);
        }
        "user attribute flood, and attributes left behind" => |env| {
            // user attributes spend the message budget, and are reclaimed once their owner
            // has been away user_attrs_keep_secs (1 s here): the harness sees them gone
            let mut r = env.raw("m26a").await;
            let line = r.line.clone();
            let big = "v".repeat(8000);
            let since = Instant::now();
            for i in 0..100u64 {
                r.send_value(json!(["call2", ["user_set_attr", i + 1, {"line": line, "name": format!("a{i}"), "value": big}]])).await;
            }
            let mut accepted = 0;
            for i in 0..100u64 {
                match r.reply(i + 1).await.0.as_str() {
                    "" => accepted += 1,
                    err => assert_eq!(err, e(ErrorKind::RateLimited)),
                }
            }
            within_bucket(accepted, 100, user_bucket(), since, "user attribute flood");
            for i in 0..20 {
                let mut other = env.raw(&format!("m26a-{i}")).await;
                assert_eq!(other.call("user_set_attr", 1, json!({"name": "k", "value": "v"})).await.0, "");
            }
        }
        "offline mail to many accounts, from many senders" => |env| {
            // each sender may leave OFFLINE_PER_SENDER messages an hour for offline accounts
            // (rate_limited after that); all senders together fill the app's quota
            // (app_quota_exceeded after that); messages to online accounts still go
            static RUN: AtomicUsize = AtomicUsize::new(0);
            let run = RUN.fetch_add(1, Ordering::SeqCst);
            // (in one unit, as the one too many: each unit holds its share of the app's
            // quota and of a sender's allowance, which the server's limits scale to these)
            let recipients = names_in_unit_of("one-too-many", &format!("m27-r{run}-"), OFFLINE_PER_SENDER);
            let big = "x".repeat(8000);
            let (mut accepted, mut senders) = (0, 0);
            let mut full = false;
            while !full {
                assert!(senders <= APP_MAIL_MAX / OFFLINE_PER_SENDER + 1, "the app's quota never filled");
                let name = format!("m27-s{run}-{senders}");
                let mut r = env.raw(&name).await;
                senders += 1;
                let line = r.line.clone();
                let err = err_of(&mut r, json!(["call2", ["user_sendmsg", 99, {"line": line, "peer": name, "content": "to myself", "t": "instant"}]])).await;
                assert_eq!(err, "", "online recipients are not limited");
                env.leaves_stored(1);
                for (i, to) in recipients.iter().chain(["one-too-many".to_string()].iter()).enumerate() {
                    let id = i as u64 + 1;
                    let err = err_of(&mut r, json!(["call2", ["user_sendmsg", id, {"line": line, "peer": to, "content": big, "t": "instant"}]])).await;
                    match err.as_str() {
                        "" => accepted += 1,
                        x if x == e(ErrorKind::AppQuota) => full = true,
                        x => {
                            assert_eq!(x, e(ErrorKind::RateLimited), "message {id}");
                            assert_eq!(i, OFFLINE_PER_SENDER, "only the sender's allowance is limited");
                        }
                    }
                }
            }
            assert!(accepted <= APP_MAIL_MAX, "{accepted} stored beyond the quota");
            assert!(env.srv.footprint().await.unwrap().stored_messages <= APP_MAIL_MAX + 64);
            // the recipients read their mail: the quota is free again
            for to in &recipients {
                let mut r = env.raw(to).await;
                let (err, _) = r.call("user_getmsg", 1, json!({"ver_clear": u64::MAX >> 11, "max": 1})).await;
                assert_eq!(err, "");
            }
        }
        "call messages without an invitation" => |env| {
            // replies, in-call messages and ends to 200 never-seen accounts: refused, nothing
            // stored for any of them (and they spend the sender's budget like any message)
            let mut r = env.raw("m26w").await;
            let line = r.line.clone();
            let names = ["voip_invite_ack", "voip_invite_accept", "voip_invite_refuse", "voip_invite_msg", "voip_invite_bye"];
            for i in 0..200u64 {
                let name = names[i as usize % names.len()];
                r.send_value(json!(["call2", [name, i + 1, {"line": line, "channelName": "c", "peer": format!("stranger-{i}"), "extra": "x".repeat(8000)}]])).await;
            }
            for i in 0..200u64 {
                let err = r.reply(i + 1).await.0;
                assert!(err == e(ErrorKind::NoInvitation) || err == e(ErrorKind::RateLimited), "{err}");
            }
            assert!(r.alive().await);
        }
        "call message flood beyond the rate limit" => |env| {
            // in-call messages within a live invitation are mail too, under the same budget
            let mut caller = env.raw("m26v").await;
            let mut callee = env.raw("m26v-peer").await;
            let (err, _) = caller.call("voip_invite", 1, json!({"channelName": "c", "peer": "m26v-peer", "extra": ""})).await;
            assert_eq!(err, "");
            let line = caller.line.clone();
            let since = Instant::now();
            for i in 0..100u64 {
                caller.send_value(json!(["call2", ["voip_invite_msg", i + 10, {"line": line, "channelName": "c", "peer": "m26v-peer", "extra": "x"}]])).await;
            }
            let mut accepted = 0;
            for i in 0..100u64 {
                match caller.reply(i + 10).await.0.as_str() {
                    "" => accepted += 1,
                    err => assert_eq!(err, e(ErrorKind::RateLimited)),
                }
            }
            within_bucket(accepted, 100, user_bucket(), since, "call message flood");
            // the callee refuses: the invitation is over, and so are its messages
            let (err, _) = callee.call("voip_invite_refuse", 2, json!({"channelName": "c", "peer": "m26v", "extra": ""})).await;
            assert_eq!(err, "");
            let (err, _) = callee.call("voip_invite_msg", 3, json!({"channelName": "c", "peer": "m26v", "extra": "late"})).await;
            assert_eq!(err, e(ErrorKind::NoInvitation));
            assert!(caller.alive().await);
            // kept (neither side acknowledged): the invitation and the accepted messages for the
            // callee, the refusal for the caller
            env.leaves_stored(1 + accepted + 1);
        }
        "channel flood beyond the rate limit" => |env| {
            let mut r = env.raw("m27").await;
            assert_eq!(r.call("channel_join", 1, json!({"name": "flooded"})).await.0, "");
            let line = r.line.clone();
            let since = Instant::now();
            for i in 0..300u64 {
                r.send_value(json!(["call2", ["channel_sendmsg", i + 10, {"line": line, "name": "flooded", "msg": "x"}]])).await;
            }
            let mut limited = 0;
            for i in 0..300u64 {
                if r.reply(i + 10).await.0 == e(ErrorKind::RateLimited) {
                    limited += 1;
                }
            }
            let rate = Limits::default().channel_messages_per_second;
            within_bucket(300 - limited, 300, (rate, rate), since, "channel flood");
        }
        "attributes on channels nobody joined" => |env| {
            // a non-member may set attributes (as in the original), but all channels of the
            // app share a quota: channels with attributes, and their bytes
            let mut r = env.raw("m28n").await;
            let long_ttl = json!({"channel": "m28n-0", "name": "_channel_ttl", "value": "99999999999"});
            assert_eq!(call_within_budget(&mut r, "channel_set_attr", long_ttl).await, "");
            let mut channels = 1;
            loop {
                let set = json!({"channel": format!("m28n-{channels}"), "name": "k", "value": "v"});
                match call_within_budget(&mut r, "channel_set_attr", set).await.as_str() {
                    "" => channels += 1,
                    err => {
                        assert_eq!(err, e(ErrorKind::AppQuota));
                        break;
                    }
                }
                assert!(channels <= ATTR_CHANNELS_MAX, "{channels} channels with attributes");
            }
            let big = "v".repeat(8000);
            let mut attrs = 0;
            loop {
                let set = json!({"channel": "m28n-0", "name": format!("a{attrs}"), "value": big});
                match call_within_budget(&mut r, "channel_set_attr", set).await.as_str() {
                    "" => attrs += 1,
                    err => {
                        assert_eq!(err, e(ErrorKind::AppQuota));
                        break;
                    }
                }
                assert!(attrs * 8000 <= ATTR_BYTES_MAX, "{attrs} attributes of 8000 bytes");
            }
            assert!(attrs > 0);
            for i in 0..channels {
                let clear = json!({"channel": format!("m28n-{i}")});
                assert_eq!(call_within_budget(&mut r, "channel_clear_attr", clear).await, "");
            }
        }
        "attribute flood beyond the rate limit" => |env| {
            let mut r = env.raw("m28").await;
            assert_eq!(r.call("channel_join", 1, json!({"name": "attrs"})).await.0, "");
            let line = r.line.clone();
            let since = Instant::now();
            for i in 0..200u64 {
                r.send_value(json!(["call2", ["channel_set_attr", i + 10, {"line": line, "channel": "attrs", "name": "k", "value": i.to_string()}]])).await;
            }
            let mut limited = 0;
            for i in 0..200u64 {
                if r.reply(i + 10).await.0 == e(ErrorKind::RateLimited) {
                    limited += 1;
                }
            }
            let rate = Limits::default().attr_changes_per_second;
            within_bucket(200 - limited, 200, (rate, rate), since, "attribute flood");
            assert_eq!(call_within_budget(&mut r, "channel_clear_attr", json!({"channel": "attrs"})).await, "");
        }
        "thousands of channels joined by one session" => |env| {
            let mut r = env.raw("m29").await;
            let line = r.line.clone();
            for i in 0..2000u64 {
                r.send_value(json!(["call2", ["channel_join", i + 1, {"line": line, "name": format!("many{i}")}]])).await;
            }
            let mut ok = 0;
            let mut refused = 0;
            for i in 0..2000u64 {
                match r.reply(i + 1).await.0.as_str() {
                    "" => ok += 1,
                    x if x == ErrorKind::TooManyChannels.as_str() => refused += 1,
                    x => panic!("join {i}: {x}"),
                }
            }
            assert_eq!((ok, refused), (256, 1744), "channels_per_session is 256");
        }
        "join and leave thousands of channel names" => |env| {
            let mut r = env.raw("m30").await;
            let line = r.line.clone();
            let since = Instant::now();
            for i in 0..1000u64 {
                r.send_value(json!(["call2", ["channel_join", 2 * i + 1, {"line": line, "name": format!("churn{i}")}]])).await;
                r.send_value(json!(["call2", ["channel_leave", 2 * i + 2, {"line": line, "name": format!("churn{i}")}]])).await;
            }
            // joins past a burst of channels_per_session are limited (20/s); leaving never is
            let mut limited = 0;
            for i in 0..2000u64 {
                let err = r.reply(i + 1).await.0;
                if i % 2 == 0 && err == e(ErrorKind::RateLimited) {
                    limited += 1;
                } else {
                    assert_eq!(err, "", "request {}", i + 1);
                }
            }
            let l = Limits::default();
            let burst = l.channels_per_session as u32;
            within_bucket(1000 - limited, 1000, (l.joins_per_second, burst), since, "joins");
        }
        "invites to oneself" => |env| {
            let mut r = env.raw("m31").await;
            let got = r.call("voip_invite", 1, json!({"channelName": "c", "peer": "m31", "extra": ""})).await.0;
            assert_eq!(got, e(ErrorKind::InvalidPeer));
            // answering an invite nobody sent is refused, and nothing is stored
            let got = r.call("voip_invite_accept", 2, json!({"channelName": "c", "peer": "ghost", "extra": ""})).await.0;
            assert_eq!(got, e(ErrorKind::NoInvitation));
            assert!(r.alive().await);
        }
        "special channels are read-only" => |env| {
            expect_errors(env, "m32", ErrorKind::ReservedChannel, vec![
                ("channel_sendmsg", json!({"name": "__agora_user_online", "msg": "x", "force": true})),
                ("channel_set_attr", json!({"channel": "__agora_user_online", "name": "a", "value": "b"})),
                ("channel_clear_attr", json!({"channel": "__agora_channel_event"})),
            ]).await;
        }
        "relogin storm" => |env| {
            let mut tasks = vec![];
            for _ in 0..50 {
                let url = env.url.clone();
                tasks.push(tokio::spawn(async move {
                    let mut r = Raw::connect(&url).await;
                    r.login(APP, "stormy", "").await;
                    r
                }));
            }
            let mut raws = vec![];
            for t in tasks {
                raws.push(t.await.unwrap());
            }
            // exactly one of them is still logged in (once the replaced ones are gone: the
            // bystanders and the last stormy)
            let store = &env.srv;
            wait_for("the replaced sessions gone", || async { eprintln!("local {}", store.local_sessions()); store.local_sessions() == 3 }).await;
            let mut alive = 0;
            for r in &mut raws {
                if r.alive().await {
                    alive += 1;
                }
            }
            assert_eq!(alive, 1, "one session survives a storm of logins of one account");
        }
        "kick ping-pong" => |env| {
            let mut a = env.raw("pingpong").await;
            for _ in 0..10 {
                let b = env.raw("pingpong").await;
                assert_eq!(a.recv_flat().await, Some(json!(["kick", ""])), "the older one is kicked");
                a = b;
            }
            assert!(a.alive().await);
        }
        "login flood from one address" => |env| {
            // logins_per_ip_per_second = 100: a burst of 250 gets refusals, then it recovers.
            // Connect first, then send all 250 logins back to back.
            let mut conns = vec![];
            for _ in 0..250 {
                conns.push(Raw::connect(&env.url).await);
            }
            for (i, r) in conns.iter_mut().enumerate() {
                r.send_value(json!(["login", {"vid": APP, "account": format!("lf{i}"), "uid": 0, "token": "", "device": "websdk"}])).await;
            }
            let mut tasks = vec![];
            for mut r in conns {
                tasks.push(tokio::spawn(async move {
                    let ret = r.recv().await.expect("login_ret");
                    let refused = ret[1][0] == login_error::TOO_MANY_LOGINS;
                    let frame = if refused { r.close_frame().await } else { None };
                    (refused, frame)
                }));
            }
            let mut refused = 0;
            for t in tasks {
                let (r, frame) = t.await.unwrap();
                if r {
                    refused += 1;
                    let (code, reason) = close::TOO_MANY_LOGINS;
                    assert_eq!(frame, Some((code, reason.to_string())));
                }
            }
            assert!(refused >= 100, "only {refused} of 250 logins were refused");
            tokio::time::sleep(Duration::from_millis(1100)).await;
            env.raw("after-the-flood").await;
        }
        "connection flood from one address" => |env| {
            // connections_per_ip = 300 (the bystanders hold 2)
            let mut held = vec![];
            let mut refused = None;
            for _ in 0..320 {
                let mut r = Raw::connect(&env.url).await;
                if held.len() < 298 {
                    held.push(r);
                } else {
                    refused = r.close_frame().await;
                    break;
                }
            }
            let (code, reason) = close::TOO_MANY_CONNECTIONS;
            assert_eq!(refused, Some((code, reason.to_string())));
            let (status, _, body) = http_get(env.addr, "/healthz").await;
            assert_eq!((status, body.as_str()), (429, reason));
            drop(held);
            // and once they are gone, connections are welcome again
            wait_for("connections welcome again", || async {
                http_get(env.addr, "/healthz").await.0 == 200
            })
            .await;
        }
        "slowloris: silent TCP" => |env| {
            tcp_closed_within(env.addr, b"", Duration::from_secs(4)).await;
        }
        "slowloris: headers that never end" => |env| {
            tcp_closed_within(env.addr, b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n", Duration::from_secs(4)).await;
        }
        "WebSocket without login" => |env| {
            let mut r = Raw::connect(&env.url).await;
            assert_eq!(r.recv_flat().await, Some(json!(["close", ""])));
            closes_with(&mut r, close::TIMEOUT).await;
        }
        "not a WebSocket at all" => |env| {
            tcp_closed_within(env.addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage-tls-hello\r\n\r\n", Duration::from_secs(4)).await;
            tcp_closed_within(env.addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n", Duration::from_secs(4)).await;
        }
        "huge ping payloads" => |env| {
            let mut r = env.raw("m40").await;
            let big = "p".repeat(60 * 1024);
            r.send_value(json!(["ping", big])).await;
            let got = r.recv_flat().await;
            assert_eq!(got, Some(json!(["pong", big])));
        }
        "odd call2 ids" => |env| {
            let mut r = env.raw("m41").await;
            let line = r.line.clone();
            // ids that are neither numbers nor strings make the frame malformed: ignored
            for id in [json!(null), json!({"o": 1}), json!([1])] {
                r.send_value(json!(["call2", ["user_query_user_status", id, {"line": line, "account": "by_a"}]])).await;
            }
            for id in [json!("text-id"), json!(-1), json!(1.5), json!(u64::MAX)] {
                r.send_value(json!(["call2", ["user_query_user_status", id, {"line": line, "account": "by_a"}]])).await;
                let f = r.recv_flat().await.unwrap_or_else(|| panic!("no answer to id {id}"));
                assert_eq!(f[0], "call2-ret");
                assert_eq!(f[1][0], id, "the id comes back as it was");
            }
        }
        "mailbox versions out of range" => |env| {
            let mut r = env.raw("m42").await;
            for (i, v) in [u64::MAX >> 11, 1 << 53, 0].into_iter().enumerate() {
                let (err, body) = r.call("user_getmsg", i as u64 + 1, json!({"ver_clear": v, "max": 100000})).await;
                assert_eq!(err, "", "ver_clear {v}");
                assert!(body["msgs"].is_array(), "{body}");
            }
        }
        "WebSocket frames of every kind" => |env| {
            ignored(env, "m43", vec![
                Message::Ping(vec![1, 2, 3].into()),
                Message::Pong(vec![9].into()),
                Message::text("[\"ping\",\"between\"]"),
            ]).await;
        }
        "messages to users who do not exist" => |env| {
            let mut r = env.raw("m44").await;
            for (i, peer) in ["", "x y", &"q".repeat(129)].into_iter().enumerate() {
                let got = r.call("user_sendmsg", i as u64 + 1, json!({"peer": peer, "content": "?"})).await.0;
                assert!(got == e(ErrorKind::InvalidArgs) || got == e(ErrorKind::TooLarge), "peer {peer:.10}: {got}");
            }
        }
        "a client that closes mid-request" => |env| {
            let mut peer = env.raw("m45-peer").await;
            let conns = env.srv.connection_count();
            for i in 0..20 {
                let mut r = env.raw(&format!("m45-{i}")).await;
                let line = r.line.clone();
                r.send_value(json!(["call2", ["channel_join", 1, {"line": line, "name": "abrupt"}]])).await;
                r.send_value(json!(["call2", ["voip_invite", 2, {"line": line, "channelName": "abrupt", "peer": "m45-peer", "extra": ""}]])).await;
                drop(r); // no close handshake (the server may or may not read what was sent)
            }
            let store = &env.srv;
            wait_for("the callers' connections gone", || async {
                env.srv.connection_count() == conns
            })
            .await;
            // each invitation that was opened ends once its caller is gone past the grace
            // period (702): the ringing copy is withdrawn from the peer's mailbox, the peer
            // (online) gets a bye, the caller the failure
            wait_for("the abandoned invitations ended", || async {
                store.footprint().await.unwrap().invites == 0
            })
            .await;
            let (err, page) = peer.call("user_getmsg", 1, json!({"ver_clear": 0, "max": 30})).await;
            assert_eq!(err, "");
            let kinds: Vec<String> = page["msgs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| opensig_protocol::msg::parse(m[1].as_str().unwrap()).unwrap().kind.to_string())
                .collect();
            assert!(kinds.iter().all(|k| k == "voip_invite_bye"), "{kinds:?}");
            // the peer reads them and acknowledges: what stays are the callers' failures
            let last = page["msgs"].as_array().unwrap().iter().filter_map(|m| m[0].as_u64()).max();
            let (err, page) = peer.call("user_getmsg", 2, json!({"ver_clear": last.unwrap_or(0), "max": 30})).await;
            assert_eq!((err.as_str(), page["msgs"].as_array().map(Vec::len)), ("", Some(0)));
            env.leaves_stored(kinds.len());
        }
    }
}

// ---------------------------------------------------------------- the harness

async fn bystander_round_trip(a: &mut User, b: &mut User, n: &mut u32) {
    *n += 1;
    let text = format!("still fine {n}");
    tokio::time::timeout(Duration::from_secs(5), async {
        a.channel_send("bystanders", &text).await.expect("bystander send");
        b.expect(|ev| {
            matches!(ev, opensig_protocol::client::Event::ChannelMessage { msg, .. } if *msg == text)
        })
        .await;
    })
    .await
    .expect("bystanders keep exchanging messages");
}

/// Wait until the server holds exactly what it held before (the bystanders' state).
async fn settle(
    srv: &Server,
    want: &opensig_server::store::Footprint,
    conns: usize,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let mut fp = srv.footprint().await.unwrap();
        // the mailboxes a case wrote to keep their numbering for its time (for
        // `mailbox_state_keep_secs`, as everyone's do): what they hold is `stored_messages`
        fp.mailboxes = want.mailboxes;
        let c = srv.connection_count();
        if fp == *want && c == conns {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "server still holds {fp:?} and {c} connections; before: {want:?} and {conns}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Live bytes once they stop moving.
async fn settled_memory() -> isize {
    let mut last = LIVE.load(Ordering::Relaxed);
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = LIVE.load(Ordering::Relaxed);
        if (now - last).abs() < 4096 {
            return now;
        }
        last = now;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_change_nothing_for_anyone_else() {
    count_panics();
    let srv = server_with(|c| {
        c.add_app(APP).unwrap();
        c.add_app(&format!("{SECURE}:{CERT}")).unwrap();
        c.limits.login_timeout_secs = 1;
        c.limits.handshake_timeout_secs = 1;
        c.limits.connections_per_ip = 300;
        c.limits.logins_per_ip_per_second = 100;
        c.limits.invite_offline_grace_secs = 1;
        c.limits.user_attrs_keep_secs = 1;
        c.limits.channel_history_keep_empty_secs = 1;
        // (with the app's accounts spread over units, each unit's share is these)
        let units = partitions() as usize;
        c.limits.offline_mail_per_sender_per_hour = (OFFLINE_PER_SENDER * units) as u32;
        c.limits.app_mail_max_messages = APP_MAIL_MAX * units;
        c.limits.app_channels_with_attrs_max = ATTR_CHANNELS_MAX;
        c.limits.app_channel_attr_max_bytes = ATTR_BYTES_MAX;
    })
    .await;
    let env = Env {
        url: srv.ws_url(),
        addr: srv.addr(),
        srv,
        stored: AtomicUsize::new(0),
    };
    let mut a = User::login(&env.url, "by_a").await;
    let mut b = User::login(&env.url, "by_b").await;
    a.join("bystanders").await;
    b.join("bystanders").await;
    let mut n = 0;
    bystander_round_trip(&mut a, &mut b, &mut n).await;

    let cases = all_cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = vec![];
    // HOSTILE_CASE=<part of a name> runs only the matching cases (when debugging one)
    let only = std::env::var("HOSTILE_CASE").unwrap_or_default();
    for (name, run) in cases.into_iter().filter(|(name, _)| name.contains(&*only)) {
        let base = env.srv.footprint().await.unwrap();
        env.stored.store(0, Ordering::SeqCst);
        let conns = env.srv.connection_count();
        let panics = PANICS.load(Ordering::SeqCst);
        let mut mem = [0isize; 2];
        for (round, m) in mem.iter_mut().enumerate() {
            let t0 = Instant::now();
            if tokio::time::timeout(Duration::from_secs(60), run(&env))
                .await
                .is_err()
            {
                failures.push(format!("{name}: did not finish"));
            }
            let mut want = base.clone();
            want.stored_messages += env.stored.load(Ordering::SeqCst);
            if let Err(why) = settle(&env.srv, &want, conns).await {
                failures.push(format!("{name} (round {round}): {why}"));
            }
            bystander_round_trip(&mut a, &mut b, &mut n).await;
            *m = settled_memory().await;
            eprintln!(
                "[hostile] {name} (round {round}): {:?}, {} KiB live",
                t0.elapsed(),
                *m / 1024
            );
        }
        if PANICS.load(Ordering::SeqCst) != panics {
            failures.push(format!("{name}: something panicked"));
        }
        // the second run leaves no more behind than the first did
        if mem[1] - mem[0] > 512 * 1024 {
            failures.push(format!(
                "{name}: memory grew by {} KiB on the second run",
                (mem[1] - mem[0]) / 1024
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
