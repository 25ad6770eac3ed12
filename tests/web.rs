//! The SDK in real browsers (`wasm-pack test --headless --chrome` / `--firefox`) against a
//! live opensig-server started by scripts/test, whose URLs arrive at compile time:
//! OPENSIG_TEST_WS (the server), OPENSIG_TEST_PROXY_WS and OPENSIG_TEST_PROXY_CTL (a proxy
//! in front of it whose connections can be cut, for reconnects).
#![cfg(target_arch = "wasm32")]

use js_sys::{Array, Function, Promise, Reflect};
use opensig::Signal;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const WS: &str = match option_env!("OPENSIG_TEST_WS") {
    Some(u) => u,
    None => "ws://127.0.0.1:18080/",
};
const PROXY_WS: &str = match option_env!("OPENSIG_TEST_PROXY_WS") {
    Some(u) => u,
    None => "ws://127.0.0.1:18081/",
};
const PROXY_CTL: &str = match option_env!("OPENSIG_TEST_PROXY_CTL") {
    Some(u) => u,
    None => "http://127.0.0.1:18082",
};
/// A two-node cluster: node A behind a proxy that can take it "away", and node B.
const CLUSTER_A: Option<&str> = option_env!("OPENSIG_TEST_CLUSTER_A");
const CLUSTER_A_CTL: Option<&str> = option_env!("OPENSIG_TEST_CLUSTER_A_CTL");
const CLUSTER_B: Option<&str> = option_env!("OPENSIG_TEST_CLUSTER_B");

#[wasm_bindgen(inline_js = r#"
export function record(obj, names) {
  const log = obj.__log || (obj.__log = []);
  for (const n of names) obj[n] = (...a) => log.push([n, ...a]);
  return log;
}
export function entries(obj, name) {
  return (obj.__log || []).filter((e) => e[0] === name);
}
export async function waitFor(obj, name, count, ms) {
  const t0 = Date.now();
  for (;;) {
    const found = (obj.__log || []).filter((e) => e[0] === name);
    if (found.length >= count) return found[count - 1];
    if (Date.now() - t0 > ms) throw new Error(`${name} x${count} not seen in ${ms} ms; log: ${JSON.stringify(obj.__log)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
export function invoke(obj, method, args) { return obj[method](...args); }
export function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
export function cut(ctl) { return fetch(ctl + '/cut').then((r) => r.json()); }
export function control(url) { return fetch(url).then((r) => r.json()); }
export function strings(a, b) { return [a, b]; }
export function settle(p) { return p.then((v) => ({ ok: true, v }), (e) => ({ ok: false, e })); }
export function uniq(prefix) { return prefix + Math.random().toString(36).slice(2, 9); }
export async function waitStatus(session, n, ms) {
  const t0 = Date.now();
  while (session.getStatus() !== n) {
    if (Date.now() - t0 > ms) throw new Error(`status ${n} not reached; it is ${session.getStatus()}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
const saved = {};
export function captureConsole() {
  const out = [];
  for (const k of ['debug', 'info', 'warn', 'log']) {
    saved[k] = console[k];
    console[k] = (...a) => { out.push(k + ' ' + a.join(' ')); };
  }
  return out;
}
export function restoreConsole() { Object.assign(console, saved); }
"#)]
extern "C" {
    fn record(obj: &JsValue, names: &Array) -> Array;
    fn entries(obj: &JsValue, name: &str) -> Array;
    #[wasm_bindgen(js_name = waitFor)]
    fn wait_for(obj: &JsValue, name: &str, count: u32, ms: u32) -> Promise;
    fn invoke(obj: &JsValue, method: &str, args: &Array) -> JsValue;
    fn sleep(ms: u32) -> Promise;
    fn cut(ctl: &str) -> Promise;
    fn control(url: &str) -> Promise;
    fn strings(a: &str, b: &str) -> Array;
    fn settle(p: &JsValue) -> Promise;
    fn uniq(prefix: &str) -> String;
    #[wasm_bindgen(js_name = waitStatus)]
    fn wait_status(session: &JsValue, n: u8, ms: u32) -> Promise;
    #[wasm_bindgen(js_name = captureConsole)]
    fn capture_console() -> Array;
    #[wasm_bindgen(js_name = restoreConsole)]
    fn restore_console();
}

const SESSION_CBS: &[&str] = &[
    "onLoginSuccess",
    "onLoginFailed",
    "onLogout",
    "onMessageInstantReceive",
    "onInviteReceived",
    "onReconnecting",
    "onReconnected",
    "onError",
];
const CHANNEL_CBS: &[&str] = &[
    "onChannelJoined",
    "onChannelJoinFailed",
    "onChannelLeaved",
    "onChannelUserJoined",
    "onChannelUserLeaved",
    "onChannelUserList",
    "onChannelAttrUpdated",
    "onMessageChannelReceive",
];
const CALL_CBS: &[&str] = &[
    "onInviteReceivedByPeer",
    "onInviteAcceptedByPeer",
    "onInviteRefusedByPeer",
    "onInviteFailed",
    "onInviteEndByPeer",
    "onInviteEndByMyself",
    "onInviteMsg",
];

fn names(list: &[&str]) -> Array {
    list.iter().map(|s| JsValue::from_str(s)).collect()
}

fn args(list: &[JsValue]) -> Array {
    list.iter().collect()
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &key.into()).unwrap()
}

fn call(obj: &JsValue, method: &str, a: &[JsValue]) -> JsValue {
    invoke(obj, method, &args(a))
}

/// Wait for the `count`-th `name` callback; returns its arguments.
async fn seen(obj: &JsValue, name: &str, count: u32) -> Array {
    let e = JsFuture::from(wait_for(obj, name, count, 8000))
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let e: Array = e.into();
    e.slice(1, e.length())
}

async fn settled(p: JsValue) -> (bool, JsValue) {
    let r = JsFuture::from(settle(&p)).await.unwrap();
    let ok = get(&r, "ok").as_bool().unwrap();
    (ok, if ok { get(&r, "v") } else { get(&r, "e") })
}

fn signal(url: &str) -> Signal {
    let s = Signal::new("webtest".into(), JsValue::UNDEFINED);
    s.setup_debugging("ap_url", url.into());
    s
}

/// A logged-in session recording every callback.
async fn user(url: &str, name: &str) -> (JsValue, String) {
    let account = uniq(name);
    let s = signal(url).login(
        account.clone().into(),
        "_no_need_token".into(),
        JsValue::UNDEFINED,
        JsValue::UNDEFINED,
    );
    record(&s, &names(SESSION_CBS));
    seen(&s, "onLoginSuccess", 1).await;
    (s, account)
}

async fn join(session: &JsValue, name: &str) -> JsValue {
    let ch = call(session, "channelJoin", &[name.into()]);
    record(&ch, &names(CHANNEL_CBS));
    seen(&ch, "onChannelJoined", 1).await;
    ch
}

#[wasm_bindgen_test]
fn signal_basics() {
    let s = Signal::new("appid1".into(), JsValue::UNDEFINED);
    assert_eq!(s.get_sdk_version(), "1.4.0");
    assert_eq!(s.get_sdk_version_int(), 1_010_400_000);
    assert_eq!(s.appid(), "appid1");
    assert_eq!(s.vid(), "appid1");
    for level in ["DEBUG", "INFO", "WARNING", "NOPE"] {
        s.set_do_log(true.into(), level.into());
    }
    s.set_do_log(false.into(), JsValue::UNDEFINED);
    assert_eq!(
        s.error_text(703.into()),
        "INVITE_E_PEEROFFLINE (703): the peer is offline"
    );
    assert_eq!(
        s.error_text("too_large".into()),
        "GENERAL_E_LARGE_PARAM (1005): parameter too large"
    );
    assert_eq!(s.error_text(99999.into()), "unknown error");
    s.set_up_debugging("ap_url", WS.into());
}

#[wasm_bindgen_test]
async fn login_status_properties_and_logout() {
    let account = uniq("alice");
    let s = signal(WS).login(
        account.clone().into(),
        "_no_need_token".into(),
        JsValue::UNDEFINED,
        JsValue::UNDEFINED,
    );
    assert_eq!(call(&s, "getStatus", &[]), 1);
    record(&s, &names(SESSION_CBS));
    let uid = seen(&s, "onLoginSuccess", 1).await;
    assert_eq!(uid.get(0), 0);
    assert_eq!(call(&s, "getStatus", &[]), 2);
    assert_eq!(get(&s, "state"), 2);
    assert_eq!(get(&s, "account"), account.as_str());
    let (ok, v) = settled(get(&s, "ready")).await;
    assert!(ok && v == 0);
    let (ok, v) = settled(call(&s, "logout", &[])).await;
    assert!(ok && v == 101, "{v:?}");
    assert_eq!(seen(&s, "onLogout", 1).await.get(0), 101);
    assert_eq!(call(&s, "getStatus", &[]), 0);
}

#[wasm_bindgen_test]
async fn login_failures() {
    let s = signal(WS).login(
        "has space".into(),
        "".into(),
        JsValue::UNDEFINED,
        JsValue::UNDEFINED,
    );
    record(&s, &names(SESSION_CBS));
    assert_eq!(seen(&s, "onLoginFailed", 1).await.get(0), 209);
    let (ok, e) = settled(get(&s, "ready")).await;
    assert!(!ok);
    assert_eq!(get(&e, "code"), 209);
    // nothing listens there: 201
    let s = signal("ws://127.0.0.1:9/").login(
        uniq("x").into(),
        "".into(),
        JsValue::UNDEFINED,
        JsValue::UNDEFINED,
    );
    record(&s, &names(SESSION_CBS));
    assert_eq!(seen(&s, "onLoginFailed", 1).await.get(0), 201);
}

#[wasm_bindgen_test]
async fn callback_properties_are_real_properties() {
    let s = signal(WS).login(
        uniq("p").into(),
        "".into(),
        JsValue::UNDEFINED,
        JsValue::UNDEFINED,
    );
    assert!(
        get(&s, "onLoginSuccess").is_undefined(),
        "unset reads back as undefined"
    );
    let f = Function::new_no_args("throw new Error('app bug')");
    Reflect::set(&s, &"onLoginSuccess".into(), &f).unwrap();
    assert_eq!(get(&s, "onLoginSuccess"), JsValue::from(f));
    Reflect::set(&s, &"onLogout".into(), &"not a function".into()).unwrap();
    assert_eq!(get(&s, "onLogout"), "not a function");
    // a throwing callback is caught and logged; the session goes on working
    JsFuture::from(get(&s, "ready").unchecked_into::<Promise>())
        .await
        .unwrap();
    let (ok, _) = settled(call(
        &s,
        "invoke",
        &[
            "io.agora.signal.user_query_user_status".into(),
            js_sys::JSON::parse("{\"account\":\"nobody\"}").unwrap(),
        ],
    ))
    .await;
    assert!(ok);
    let (ok, v) = settled(call(&s, "logout", &[])).await;
    assert!(ok && v == 101);
}

#[wasm_bindgen_test]
async fn messages_between_two_sessions() {
    let (a, an) = user(WS, "a").await;
    let (b, bn) = user(WS, "b").await;
    let cb_log = Array::new();
    let cb = Closure::<dyn FnMut(JsValue)>::new({
        let log = cb_log.clone();
        move |e: JsValue| {
            log.push(&e);
        }
    });
    let p = call(
        &a,
        "messageInstantSend",
        &[bn.clone().into(), "hello b".into(), cb.as_ref().clone()],
    );
    assert!(settled(p).await.0);
    assert_eq!(cb_log.get(0), false);
    let got = seen(&b, "onMessageInstantReceive", 1).await;
    assert_eq!(
        (got.get(0), got.get(1), got.get(2)),
        (an.as_str().into(), 0.into(), "hello b".into())
    );
    // over the limit: refused locally with GENERAL_E_LARGE_PARAM
    let big = "x".repeat(8197);
    let p = call(
        &a,
        "messageInstantSend",
        &[bn.into(), big.into(), cb.as_ref().clone()],
    );
    let (ok, e) = settled(p).await;
    assert!(!ok);
    assert_eq!(get(&e, "code"), 1005);
    assert_eq!(cb_log.get(1), true);
    let err = seen(&a, "onError", 1).await;
    assert_eq!(
        (err.get(0), err.get(1), err.get(2)),
        ("messageInstantSend".into(), 1005.into(), "too_large".into())
    );
}

#[wasm_bindgen_test]
async fn methods_work_right_after_login_returns() {
    let (b, bn) = user(WS, "b").await;
    let a = signal(WS).login(
        uniq("a").into(),
        "".into(),
        JsValue::UNDEFINED,
        JsValue::UNDEFINED,
    );
    let room = uniq("early");
    let ch = call(&a, "channelJoin", &[room.into()]);
    record(&ch, &names(CHANNEL_CBS));
    let _ = call(
        &a,
        "messageInstantSend",
        &[bn.into(), "sent before login finished".into()],
    );
    seen(&ch, "onChannelJoined", 1).await;
    assert_eq!(get(&ch, "state"), "joined");
    assert_eq!(
        seen(&b, "onMessageInstantReceive", 1).await.get(2),
        "sent before login finished"
    );
}

#[wasm_bindgen_test]
async fn channels_members_messages_attributes_and_leave() {
    let (a, an) = user(WS, "a").await;
    let (b, bn) = user(WS, "b").await;
    let room = uniq("room");
    let ca = join(&a, &room).await;
    assert_eq!(get(&ca, "name"), room.as_str());
    assert_eq!(get(&ca, "state"), "joined");
    assert!(settled(get(&ca, "ready")).await.0);
    let list: Array = seen(&ca, "onChannelUserList", 1).await.get(0).into();
    assert_eq!(list.length(), 1);
    let cb = seen(&a, "onLoginSuccess", 1).await; // (still just one)
    assert_eq!(cb.length(), 1);
    let cb_calls = Array::new();
    let cbf = Closure::<dyn FnMut()>::new({
        let l = cb_calls.clone();
        move || {
            l.push(&JsValue::TRUE);
        }
    });
    assert!(
        settled(call(
            &ca,
            "channelSetAttr",
            &["topic".into(), "t1".into(), cbf.as_ref().clone()]
        ))
        .await
        .0
    );
    let cbb = join(&b, &room).await;
    let upd = seen(&cbb, "onChannelAttrUpdated", 1).await;
    assert_eq!(
        (upd.get(0), upd.get(1), upd.get(2)),
        ("topic".into(), "t1".into(), "update".into())
    );
    let joined = seen(&ca, "onChannelUserJoined", 1).await;
    assert_eq!(
        (joined.get(0), joined.get(1)),
        (bn.as_str().into(), 0.into())
    );
    assert!(
        settled(call(
            &cbb,
            "messageChannelSend",
            &["hi room".into(), cbf.as_ref().clone()]
        ))
        .await
        .0
    );
    for ch in [&ca, &cbb] {
        let m = seen(ch, "onMessageChannelReceive", 1).await;
        assert_eq!(
            (m.get(0), m.get(1), m.get(2)),
            (bn.as_str().into(), 0.into(), "hi room".into())
        );
    }
    assert!(
        settled(call(&ca, "channelDelAttr", &["topic".into()]))
            .await
            .0
    );
    assert_eq!(seen(&cbb, "onChannelAttrUpdated", 2).await.get(2), "del");
    assert!(settled(call(&ca, "channelClearAttr", &[])).await.0);
    assert_eq!(seen(&cbb, "onChannelAttrUpdated", 3).await.get(2), "clear");
    // leave without a callback → onChannelLeaved(0); the other sees onChannelUserLeaved
    assert!(settled(call(&cbb, "channelLeave", &[])).await.0);
    assert_eq!(seen(&cbb, "onChannelLeaved", 1).await.get(0), 0);
    assert_eq!(get(&cbb, "state"), "leaved");
    assert_eq!(
        seen(&ca, "onChannelUserLeaved", 1).await.get(0),
        bn.as_str()
    );
    // with a callback → the callback, not onChannelLeaved
    assert!(
        settled(call(&ca, "channelLeave", &[cbf.as_ref().clone()]))
            .await
            .0
    );
    assert_eq!(entries(&ca, "onChannelLeaved").length(), 0);
    assert_eq!(cb_calls.length(), 3);
    // a message to a channel one left is refused (the promise tells; cb() still fires)
    let (ok, e) = settled(call(
        &ca,
        "messageChannelSend",
        &["late".into(), cbf.as_ref().clone()],
    ))
    .await;
    assert!(!ok);
    assert_eq!(get(&e, "reason"), "not_in_channel");
    assert_eq!(cb_calls.length(), 4);
    let _ = an;
}

#[wasm_bindgen_test]
async fn several_channels_at_once_route_by_name() {
    let (a, _) = user(WS, "a").await;
    let (b, _) = user(WS, "b").await;
    let (r1, r2) = (uniq("r1"), uniq("r2"));
    let a1 = join(&a, &r1).await;
    let a2 = join(&a, &r2).await;
    let b1 = join(&b, &r1).await;
    let b2 = join(&b, &r2).await;
    settled(call(&b1, "messageChannelSend", &["to one".into()])).await;
    settled(call(&b2, "messageChannelSend", &["to two".into()])).await;
    assert_eq!(
        seen(&a1, "onMessageChannelReceive", 1).await.get(2),
        "to one"
    );
    assert_eq!(
        seen(&a2, "onMessageChannelReceive", 1).await.get(2),
        "to two"
    );
    assert_eq!(entries(&a1, "onMessageChannelReceive").length(), 1);
    assert_eq!(entries(&a2, "onMessageChannelReceive").length(), 1);
}

#[wasm_bindgen_test]
async fn invoke_callbacks_and_promises() {
    let (a, an) = user(WS, "a").await;
    let args = js_sys::JSON::parse(&format!("{{\"account\":\"{an}\"}}")).unwrap();
    let (ok, v) = settled(call(
        &a,
        "invoke",
        &["io.agora.signal.user_query_user_status".into(), args],
    ))
    .await;
    assert!(ok);
    assert_eq!(get(&v, "status"), 1);
    assert_eq!(get(&v, "result"), "ok");
    let (ok, e) = settled(call(
        &a,
        "invoke",
        &[
            "user_query_user_status".into(),
            js_sys::Object::new().into(),
        ],
    ))
    .await;
    assert!(!ok);
    assert_eq!(get(&e, "reason"), "invalid_function");
    let (ok, e) = settled(call(
        &a,
        "invoke",
        &["io.agora.signal.nope".into(), js_sys::Object::new().into()],
    ))
    .await;
    assert!(!ok);
    assert_eq!(get(&e, "reason"), "unknown_function");
    assert_eq!(get(&e, "code"), 1002);
}

#[wasm_bindgen_test]
async fn calls_accept_dtmf_end_refuse_and_offline() {
    let (a, an) = user(WS, "a").await;
    let (b, bn) = user(WS, "b").await;
    let out = call(
        &a,
        "channelInviteUser2",
        &["room1".into(), bn.clone().into(), "{\"k\":1}".into()],
    );
    record(&out, &names(CALL_CBS));
    assert_eq!(
        (
            get(&out, "channelName"),
            get(&out, "peer"),
            get(&out, "extra")
        ),
        ("room1".into(), bn.as_str().into(), "{\"k\":1}".into())
    );
    let inc = seen(&b, "onInviteReceived", 1).await.get(0);
    record(&inc, &names(CALL_CBS));
    assert_eq!(
        (
            get(&inc, "channelName"),
            get(&inc, "peer"),
            get(&inc, "extra")
        ),
        ("room1".into(), an.as_str().into(), "{\"k\":1}".into())
    );
    assert_eq!(seen(&out, "onInviteReceivedByPeer", 1).await.get(0), "");
    assert!(settled(get(&out, "ready")).await.0);
    assert!(
        settled(call(&inc, "channelInviteAccept", &["yes".into()]))
            .await
            .0
    );
    assert_eq!(seen(&out, "onInviteAcceptedByPeer", 1).await.get(0), "yes");
    assert!(
        settled(call(&out, "channelInviteDTMF", &["9".into()]))
            .await
            .0
    );
    assert_eq!(
        seen(&inc, "onInviteMsg", 1).await.get(0),
        "{\"msgtype\":\"dtmf\",\"msgdata\":\"9\"}"
    );
    assert!(settled(call(&inc, "channelInviteEnd", &[])).await.0);
    assert_eq!(seen(&inc, "onInviteEndByMyself", 1).await.get(0), "");
    assert_eq!(seen(&out, "onInviteEndByPeer", 1).await.get(0), "");
    // refused
    let out2 = call(
        &a,
        "channelInviteUser2",
        &["room2".into(), bn.into(), JsValue::UNDEFINED],
    );
    record(&out2, &names(CALL_CBS));
    let inc2 = seen(&b, "onInviteReceived", 2).await.get(0);
    call(&inc2, "channelInviteRefuse", &["busy".into()]);
    assert_eq!(seen(&out2, "onInviteRefusedByPeer", 1).await.get(0), "busy");
    // offline peer with _require_peer_online:1
    let extra = "{\"_require_peer_online\":1}";
    let out3 = call(
        &a,
        "channelInviteUser2",
        &["room3".into(), uniq("ghost").into(), extra.into()],
    );
    record(&out3, &names(CALL_CBS));
    let failed = seen(&out3, "onInviteFailed", 1).await;
    assert_eq!((failed.get(0), failed.get(1)), (extra.into(), 703.into()));
}

#[wasm_bindgen_test]
async fn reconnect_after_the_connection_is_cut() {
    let (a, an) = user(PROXY_WS, "a").await;
    let (b, _) = user(WS, "b").await;
    let room = uniq("re");
    let ca = join(&a, &room).await;
    let cb = join(&b, &room).await;
    JsFuture::from(cut(PROXY_CTL)).await.unwrap();
    JsFuture::from(wait_status(&a, 3, 3000))
        .await
        .expect("getStatus() is 3 while reconnecting");
    assert_eq!(seen(&a, "onReconnecting", 1).await.get(0), 1);
    // while a is away, b writes to it
    settled(call(
        &b,
        "messageInstantSend",
        &[an.into(), "while you were away".into()],
    ))
    .await;
    seen(&a, "onReconnected", 1).await;
    assert_eq!(
        entries(&a, "onLoginSuccess").length(),
        2,
        "onLoginSuccess fires again (as 1.4.0)"
    );
    assert_eq!(call(&a, "getStatus", &[]), 2);
    assert_eq!(
        seen(&a, "onMessageInstantReceive", 1).await.get(2),
        "while you were away"
    );
    // the channel was rejoined: the same Channel object gets messages again
    seen(&ca, "onChannelUserList", 2).await;
    settled(call(&cb, "messageChannelSend", &["welcome back".into()])).await;
    assert_eq!(
        seen(&ca, "onMessageChannelReceive", 1).await.get(2),
        "welcome back"
    );
    assert_eq!(entries(&ca, "onChannelJoined").length(), 1);
    assert_eq!(entries(&a, "onLogout").length(), 0);
}

#[wasm_bindgen_test]
async fn channel_join_failures() {
    let (a, _) = user(WS, "a").await;
    let ch = call(&a, "channelJoin", &["has space".into()]);
    record(&ch, &names(CHANNEL_CBS));
    assert_eq!(
        seen(&ch, "onChannelJoinFailed", 1).await.get(0),
        "invalid_args"
    );
    let (ok, e) = settled(get(&ch, "ready")).await;
    assert!(!ok);
    assert_eq!(get(&e, "code"), 1004);
    assert_eq!(seen(&a, "onError", 1).await.get(0), "channelJoin");
    settled(call(&a, "logout", &[])).await;
    let ch = call(&a, "channelJoin", &["room".into()]);
    record(&ch, &names(CHANNEL_CBS));
    assert_eq!(
        seen(&ch, "onChannelJoinFailed", 1).await.get(0),
        "not_logged_in"
    );
}

/// Console lines printed during a login + logout at this log setting.
async fn log_lines(enabled: bool, level: &str) -> Vec<String> {
    let out = capture_console();
    let s = signal(WS);
    s.set_do_log(enabled.into(), level.into());
    let session = s.login(
        uniq("log").into(),
        "".into(),
        JsValue::UNDEFINED,
        JsValue::UNDEFINED,
    );
    record(&session, &names(SESSION_CBS));
    seen(&session, "onLoginSuccess", 1).await;
    settled(call(&session, "logout", &[])).await;
    seen(&session, "onLogout", 1).await;
    restore_console();
    out.iter()
        .filter_map(|l| l.as_string())
        .filter(|l| l.contains("opensig:"))
        .collect()
}

#[wasm_bindgen_test]
async fn set_do_log_levels() {
    let debug = log_lines(true, "DEBUG").await;
    assert!(
        debug
            .iter()
            .any(|l| l.starts_with("debug opensig: send [\"login\"")),
        "{debug:?}"
    );
    assert!(
        debug
            .iter()
            .any(|l| l.starts_with("debug opensig: recv [\"login_ret\"")),
        "{debug:?}"
    );
    assert!(
        debug
            .iter()
            .any(|l| l.starts_with("info opensig: logged in as")),
        "{debug:?}"
    );
    let info = log_lines(true, "INFO").await;
    assert!(info.iter().all(|l| !l.starts_with("debug")), "{info:?}");
    assert!(
        info.iter()
            .any(|l| l.starts_with("info opensig: logged out")),
        "{info:?}"
    );
    let warning = log_lines(true, "WARNING").await;
    assert!(warning.is_empty(), "{warning:?}");
    let off = log_lines(false, "DEBUG").await;
    assert!(off.is_empty(), "{off:?}");
}

#[wasm_bindgen_test]
async fn fails_over_to_another_node_when_its_node_goes_away() {
    let (Some(a_url), Some(a_ctl), Some(b_url)) = (CLUSTER_A, CLUSTER_A_CTL, CLUSTER_B) else {
        panic!("OPENSIG_TEST_CLUSTER_A / _A_CTL / _B are not set (scripts/test sets them)");
    };
    JsFuture::from(control(&format!("{a_ctl}/up")))
        .await
        .unwrap();
    // alice knows both nodes and starts on A; bob is on B
    let options = js_sys::Object::new();
    Reflect::set(&options, &"servers".into(), &strings(a_url, b_url)).unwrap();
    let account = uniq("alice");
    let alice = Signal::new("webcluster".into(), options.into()).login(
        account.clone().into(),
        "".into(),
        JsValue::UNDEFINED,
        JsValue::UNDEFINED,
    );
    record(&alice, &names(SESSION_CBS));
    seen(&alice, "onLoginSuccess", 1).await;
    let bob = Signal::new("webcluster".into(), JsValue::UNDEFINED);
    bob.setup_debugging("ap_url", b_url.into());
    let bob = bob.login(
        uniq("bob").into(),
        "".into(),
        JsValue::UNDEFINED,
        JsValue::UNDEFINED,
    );
    record(&bob, &names(SESSION_CBS));
    seen(&bob, "onLoginSuccess", 1).await;
    let room = uniq("ha");
    let ca = join(&alice, &room).await;
    let cb = join(&bob, &room).await;
    // node A goes away for good
    JsFuture::from(control(&format!("{a_ctl}/down")))
        .await
        .unwrap();
    seen(&alice, "onReconnecting", 1).await;
    settled(call(
        &bob,
        "messageInstantSend",
        &[account.into(), "sent during the failover".into()],
    ))
    .await;
    seen(&alice, "onReconnected", 1).await;
    // the session resumed on B: mail continues, the channel is rejoined
    assert_eq!(
        seen(&alice, "onMessageInstantReceive", 1).await.get(2),
        "sent during the failover"
    );
    seen(&ca, "onChannelUserList", 2).await;
    settled(call(&cb, "messageChannelSend", &["still here?".into()])).await;
    assert_eq!(
        seen(&ca, "onMessageChannelReceive", 1).await.get(2),
        "still here?"
    );
    assert_eq!(entries(&alice, "onLogout").length(), 0);
    JsFuture::from(control(&format!("{a_ctl}/up")))
        .await
        .unwrap();
}
