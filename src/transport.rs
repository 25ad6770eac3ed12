//! The only IO of the SDK: browser WebSockets, `setTimeout`, `fetch` and
//! `DecompressionStream` driving the protocol core, and the dispatch of its events to the JS
//! objects' callbacks and promises.
//!
//! Re-entrancy: app callbacks may call SDK methods. No `RefCell` borrow is held while JS code
//! runs; commands made inside a callback are picked up by the pump loop that is running, and
//! commands made outside one schedule a pump as a microtask (so the app can set callbacks on
//! a returned object before anything fires).

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use js_sys::{Array, Function, Promise, Reflect, Uint8Array};
use opensig_protocol::client::{Action, CallEvent, Client, Config, ConnId, Event, Millis, State};
use opensig_protocol::small::{Queue, VecMap};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, MessageEvent, WebSocket};

use crate::callbacks::Slots;
use crate::js::{json_parse, Js};
use crate::log::{Level, LogSettings};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &JsValue, ms: f64) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
    #[wasm_bindgen(js_name = queueMicrotask)]
    fn queue_microtask(f: &JsValue);
    #[wasm_bindgen(js_name = fetch)]
    fn fetch(url: &str) -> Thenable;
    /// A promise seen through its untyped `then(ok, err)`.
    type Thenable;
    #[wasm_bindgen(method, js_name = then)]
    fn then_js(this: &Thenable, ok: &JsValue, err: &JsValue) -> Thenable;
    /// `DecompressionStream` (not yet in stable web-sys).
    type DecompressionStream;
    #[wasm_bindgen(constructor, catch)]
    fn new(format: &str) -> Result<DecompressionStream, JsValue>;
}

/// Session callback properties.
pub(crate) mod scb {
    pub const LOGIN_SUCCESS: &str = "onLoginSuccess";
    pub const LOGIN_FAILED: &str = "onLoginFailed";
    pub const LOGOUT: &str = "onLogout";
    pub const MESSAGE_INSTANT: &str = "onMessageInstantReceive";
    pub const INVITE_RECEIVED: &str = "onInviteReceived";
    pub const RECONNECTING: &str = "onReconnecting";
    pub const RECONNECTED: &str = "onReconnected";
    pub const ERROR: &str = "onError";
}

/// Channel callback properties.
pub(crate) mod ccb {
    pub const JOINED: &str = "onChannelJoined";
    pub const JOIN_FAILED: &str = "onChannelJoinFailed";
    pub const LEAVED: &str = "onChannelLeaved";
    pub const USER_JOINED: &str = "onChannelUserJoined";
    pub const USER_LEAVED: &str = "onChannelUserLeaved";
    pub const USER_LIST: &str = "onChannelUserList";
    pub const ATTR_UPDATED: &str = "onChannelAttrUpdated";
    pub const MESSAGE: &str = "onMessageChannelReceive";
}

/// Call callback properties.
pub(crate) mod kcb {
    pub const RECEIVED_BY_PEER: &str = "onInviteReceivedByPeer";
    pub const ACCEPTED_BY_PEER: &str = "onInviteAcceptedByPeer";
    pub const REFUSED_BY_PEER: &str = "onInviteRefusedByPeer";
    pub const FAILED: &str = "onInviteFailed";
    pub const END_BY_PEER: &str = "onInviteEndByPeer";
    pub const END_BY_MYSELF: &str = "onInviteEndByMyself";
    pub const MSG: &str = "onInviteMsg";
}

/// A promise and its settle functions.
#[derive(Clone)]
pub(crate) struct Deferred {
    pub promise: Promise,
    resolve: Function,
    reject: Function,
}

thread_local! {
    static IGNORE: Closure<dyn FnMut(JsValue)> = Closure::new(|_| {});
}

impl Deferred {
    /// A promise whose rejection, if the app ignores it, is not reported as unhandled.
    pub fn new() -> Deferred {
        let mut parts = None;
        let promise = Promise::new(&mut |res, rej| parts = Some((res, rej)));
        let (resolve, reject) = parts.expect("Promise executor runs synchronously");
        IGNORE.with(|f| {
            let _ = promise.catch(f);
        });
        Deferred {
            promise,
            resolve,
            reject,
        }
    }

    pub fn resolve(&self, v: &JsValue) {
        let _ = self.resolve.call1(&JsValue::UNDEFINED, v);
    }

    pub fn reject(&self, code: u32, reason: &str, response: Option<&JsValue>) {
        let _ = self
            .reject
            .call1(&JsValue::UNDEFINED, &error(code, reason, response));
    }
}

/// `Error(reason)` with `.code` and `.reason` (and `.response` when the server sent one).
pub(crate) fn error(code: u32, reason: &str, response: Option<&JsValue>) -> JsValue {
    let e: JsValue = js_sys::Error::new(reason).into();
    let _ = Reflect::set(&e, &"code".into(), &JsValue::from(code));
    let _ = Reflect::set(&e, &"reason".into(), &JsValue::from_str(reason));
    if let Some(r) = response {
        let _ = Reflect::set(&e, &"response".into(), r);
    }
    e
}

/// How a finished request is reported to the app.
pub(crate) enum ReqKind {
    /// `messageInstantSend`: `cb(isError)`.
    Instant,
    /// `invoke`: `cb(err, resp)`.
    Invoke,
    /// Channel ops: `cb()` whatever the outcome.
    ChannelOp,
    /// `channelLeave`: `cb()` (or `onChannelLeaved(0)` without a cb).
    Leave,
    /// Promise only (`logout`, call replies, `call.ready`).
    Plain,
}

struct Pending {
    kind: ReqKind,
    cb: Option<Function>,
    deferred: Deferred,
}

/// State of a Channel object shared by the JS wrapper and the driver.
pub(crate) struct ChannelShared {
    pub id: u32,
    pub name: String,
    pub state: RefCell<&'static str>,
    pub slots: Slots,
    pub ready: Deferred,
    pub leave_has_cb: Cell<bool>,
    pub session: Weak<Driver>,
}

/// State of a Call object.
pub(crate) struct CallShared {
    pub id: u32,
    pub channel: String,
    pub peer: String,
    pub extra: JsValue,
    pub slots: Slots,
    pub ready: Deferred,
    pub session: Weak<Driver>,
}

struct Socket {
    ws: WebSocket,
    _handlers: [Closure<dyn FnMut(JsValue)>; 4],
    /// Frames waiting behind a binary frame that is still being inflated.
    queue: Queue<Option<JsValue>>,
}

struct DriverState {
    core: Client<Js>,
    start: f64,
    sockets: VecMap<u32, Socket>,
    graveyard: Vec<Socket>,
    timer: Option<(JsValue, Millis)>,
    channels: VecMap<u32, Rc<ChannelShared>>,
    calls: VecMap<u32, Rc<CallShared>>,
    requests: VecMap<u32, Pending>,
    pump_scheduled: bool,
    pumping: bool,
}

/// One Session: the core, its sockets and timers, and the JS-facing state.
pub(crate) struct Driver {
    st: RefCell<DriverState>,
    pub slots: Slots,
    pub ready: Deferred,
    pub account: String,
    log: Rc<LogSettings>,
    me: Weak<Driver>,
    pump_closure: Closure<dyn FnMut()>,
    timer_closure: Closure<dyn FnMut()>,
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

impl Driver {
    pub(crate) fn start(config: Config, log: Rc<LogSettings>) -> Rc<Driver> {
        let start = now_ms();
        let account = config.account.clone();
        let rc = Rc::new_cyclic(|me: &Weak<Driver>| {
            let (m1, m2) = (me.clone(), me.clone());
            Driver {
                st: RefCell::new(DriverState {
                    core: Client::new(config, 0),
                    start,
                    sockets: VecMap::new(),
                    graveyard: Vec::new(),
                    timer: None,
                    channels: VecMap::new(),
                    calls: VecMap::new(),
                    requests: VecMap::new(),
                    pump_scheduled: false,
                    pumping: false,
                }),
                slots: Slots::new(),
                ready: Deferred::new(),
                account,
                log,
                me: me.clone(),
                pump_closure: Closure::new(move || {
                    if let Some(d) = m1.upgrade() {
                        d.st.borrow_mut().pump_scheduled = false;
                        d.pump();
                    }
                }),
                timer_closure: Closure::new(move || {
                    if let Some(d) = m2.upgrade() {
                        let now = d.now();
                        {
                            let mut st = d.st.borrow_mut();
                            st.timer = None;
                            st.core.handle_timeout(now);
                        }
                        d.pump();
                    }
                }),
            }
        });
        rc.schedule();
        rc
    }

    fn now(&self) -> Millis {
        let start = self.st.borrow().start;
        (now_ms() - start).max(0.0) as Millis
    }

    /// Run `f` on the core (a command), then make sure its effects are pumped.
    pub(crate) fn command<R>(&self, f: impl FnOnce(&mut Client<Js>, Millis) -> R) -> R {
        let now = self.now();
        let r = f(&mut self.st.borrow_mut().core, now);
        self.schedule();
        r
    }

    pub(crate) fn state(&self) -> State {
        self.st.borrow().core.state()
    }

    /// Register a request's callback and promise; returns the promise.
    pub(crate) fn track(&self, req: u32, kind: ReqKind, cb: &JsValue) -> Promise {
        self.track_with(req, kind, cb, Deferred::new())
    }

    /// Like `track`, settling a promise made earlier (e.g. `call.ready`).
    pub(crate) fn track_with(
        &self,
        req: u32,
        kind: ReqKind,
        cb: &JsValue,
        deferred: Deferred,
    ) -> Promise {
        let promise = deferred.promise.clone();
        let cb = cb.dyn_ref::<Function>().cloned();
        self.st
            .borrow_mut()
            .requests
            .insert(req, Pending { kind, cb, deferred });
        promise
    }

    pub(crate) fn add_channel(&self, ch: Rc<ChannelShared>) {
        self.st.borrow_mut().channels.insert(ch.id, ch);
    }

    pub(crate) fn add_call(&self, call: Rc<CallShared>) {
        self.st.borrow_mut().calls.insert(call.id, call);
    }

    pub(crate) fn me(&self) -> Weak<Driver> {
        self.me.clone()
    }

    fn schedule(&self) {
        let mut st = self.st.borrow_mut();
        if st.pumping || st.pump_scheduled {
            return;
        }
        st.pump_scheduled = true;
        drop(st);
        queue_microtask(self.pump_closure.as_ref());
    }

    /// Perform the core's IO and dispatch its events until it has nothing more to say.
    fn pump(&self) {
        {
            let mut st = self.st.borrow_mut();
            if st.pumping {
                return;
            }
            st.pumping = true;
            st.graveyard.clear();
        }
        loop {
            let (actions, events) = {
                let mut st = self.st.borrow_mut();
                let mut a = Vec::new();
                while let Some(x) = st.core.poll_action() {
                    a.push(x);
                }
                let mut e = Vec::new();
                while let Some(x) = st.core.poll_event() {
                    e.push(x);
                }
                (a, e)
            };
            if actions.is_empty() && events.is_empty() {
                break;
            }
            for a in actions {
                self.perform(a);
            }
            for e in events {
                self.dispatch(e);
            }
        }
        self.st.borrow_mut().pumping = false;
        self.rearm();
    }

    fn rearm(&self) {
        let mut st = self.st.borrow_mut();
        let want = st.core.poll_timeout();
        match (want, &st.timer) {
            (None, None) => {}
            (None, Some(_)) => {
                if let Some((id, _)) = st.timer.take() {
                    clear_timeout(&id);
                }
            }
            // an armed timer that fires no later than needed: a spurious wake-up is harmless
            (Some(w), Some((_, at))) if *at <= w => {}
            (Some(w), _) => {
                if let Some((id, _)) = st.timer.take() {
                    clear_timeout(&id);
                }
                let elapsed = (now_ms() - st.start).max(0.0);
                let delay = (w as f64 - elapsed).max(0.0);
                let id = set_timeout(self.timer_closure.as_ref(), delay);
                st.timer = Some((id, w));
            }
        }
    }

    fn perform(&self, a: Action) {
        match a {
            Action::Connect { conn, url } => self.connect(conn, &url),
            Action::Send { conn, text } => {
                self.log.print(Level::Debug, "send", &text);
                let st = self.st.borrow();
                if let Some(s) = st.sockets.get(&conn.0) {
                    let _ = s.ws.send_with_str(&text);
                }
            }
            Action::Close { conn } => {
                let mut st = self.st.borrow_mut();
                if let Some(s) = st.sockets.remove(&conn.0) {
                    s.ws.set_onopen(None);
                    s.ws.set_onmessage(None);
                    s.ws.set_onclose(None);
                    s.ws.set_onerror(None);
                    let _ = s.ws.close();
                    st.graveyard.push(s);
                }
            }
            Action::Fetch { id, url } => self.lbs(id, &url),
        }
    }

    fn connect(&self, conn: ConnId, url: &str) {
        self.log.print(Level::Info, "connecting to", url);
        let ws = match WebSocket::new(url) {
            Ok(ws) => ws,
            Err(_) => {
                let now = self.now();
                self.st.borrow_mut().core.handle_close(conn, now);
                return;
            }
        };
        ws.set_binary_type(BinaryType::Arraybuffer);
        let handler = |kind: u8| {
            let me = self.me.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
                if let Some(d) = me.upgrade() {
                    d.on_socket(conn, kind, ev);
                }
            })
        };
        let handlers = [handler(0), handler(1), handler(2), handler(3)];
        ws.set_onopen(Some(handlers[0].as_ref().unchecked_ref()));
        ws.set_onmessage(Some(handlers[1].as_ref().unchecked_ref()));
        ws.set_onclose(Some(handlers[2].as_ref().unchecked_ref()));
        ws.set_onerror(Some(handlers[3].as_ref().unchecked_ref()));
        self.st.borrow_mut().sockets.insert(
            conn.0,
            Socket {
                ws,
                _handlers: handlers,
                queue: Queue::new(),
            },
        );
    }

    fn on_socket(&self, conn: ConnId, kind: u8, ev: JsValue) {
        let now = self.now();
        match kind {
            0 => self.st.borrow_mut().core.handle_open(conn, now),
            1 => {
                let data = ev.unchecked_into::<MessageEvent>().data();
                if data.is_string() {
                    let queued = {
                        let mut st = self.st.borrow_mut();
                        match st.sockets.get_mut(&conn.0) {
                            Some(s) if !s.queue.is_empty() => {
                                s.queue.push_back(Some(data.clone()));
                                true
                            }
                            _ => false,
                        }
                    };
                    if !queued {
                        self.text_frame(conn, &data, now);
                    }
                } else {
                    self.binary_frame(conn, data);
                }
            }
            // error and close are treated alike (Q15): the core reconnects
            _ => {
                let mut st = self.st.borrow_mut();
                if let Some(s) = st.sockets.remove(&conn.0) {
                    st.graveyard.push(s);
                }
                st.core.handle_close(conn, now);
            }
        }
        self.pump();
    }

    fn text_frame(&self, conn: ConnId, text: &JsValue, now: Millis) {
        if self.log.enabled(Level::Debug) {
            self.log
                .print(Level::Debug, "recv", &text.as_string().unwrap_or_default());
        }
        match json_parse(text) {
            Ok(v) => self.st.borrow_mut().core.handle_frame(conn, Js(v), now),
            Err(_) => self
                .log
                .print(Level::Warning, "ignored a frame that is not JSON", ""),
        }
    }

    /// zlib (RFC 1950) frames are inflated by the browser; frames behind one wait for it.
    fn binary_frame(&self, conn: ConnId, data: JsValue) {
        let slot = {
            let mut st = self.st.borrow_mut();
            let Some(s) = st.sockets.get_mut(&conn.0) else {
                return;
            };
            s.queue.push_back(None);
            s.queue.len() - 1
        };
        let _ = slot;
        let me = self.me.clone();
        let done = Closure::once_into_js(move |text: JsValue| {
            if let Some(d) = me.upgrade() {
                d.inflated(conn, text);
            }
        });
        let me = self.me.clone();
        let failed = Closure::once_into_js(move |_: JsValue| {
            if let Some(d) = me.upgrade() {
                d.log.print(
                    Level::Warning,
                    "ignored a binary frame that is not zlib",
                    "",
                );
                d.inflated(conn, JsValue::NULL);
            }
        });
        match inflate(&data) {
            Ok(p) => {
                let _ = p.unchecked_ref::<Thenable>().then_js(&done, &failed);
            }
            Err(_) => {
                let _ = failed
                    .unchecked_ref::<Function>()
                    .call1(&JsValue::UNDEFINED, &JsValue::NULL);
            }
        }
    }

    fn inflated(&self, conn: ConnId, text: JsValue) {
        // fill the oldest pending binary slot, then hand over every frame that is ready
        let ready: Vec<JsValue> = {
            let mut st = self.st.borrow_mut();
            let Some(s) = st.sockets.get_mut(&conn.0) else {
                return;
            };
            if let Some(slot) = s.queue.iter_mut().find(|x| x.is_none()) {
                *slot = Some(text);
            }
            let mut out = Vec::new();
            while let Some(Some(_)) = s.queue.front() {
                if let Some(Some(v)) = s.queue.pop_front() {
                    out.push(v);
                }
            }
            out
        };
        let now = self.now();
        for t in ready {
            if t.is_string() {
                self.text_frame(conn, &t, now);
            }
        }
        self.pump();
    }

    fn lbs(&self, id: u32, url: &str) {
        self.log.print(Level::Info, "asking", url);
        let me = self.me.clone();
        let on_body = Closure::once_into_js(move |body: JsValue| {
            if let Some(d) = me.upgrade() {
                let now = d.now();
                let body = (!body.is_null() && !body.is_undefined()).then_some(Js(body));
                d.st.borrow_mut().core.handle_fetch(id, body, now);
                d.pump();
            }
        });
        let me = self.me.clone();
        let on_fail = Closure::once_into_js(move |_: JsValue| {
            if let Some(d) = me.upgrade() {
                let now = d.now();
                d.st.borrow_mut().core.handle_fetch(id, None, now);
                d.pump();
            }
        });
        let to_json = Closure::once_into_js(|resp: JsValue| -> JsValue {
            let resp: web_sys::Response = resp.unchecked_into();
            if resp.ok() {
                resp.json().map(JsValue::from).unwrap_or(JsValue::NULL)
            } else {
                JsValue::NULL
            }
        });
        let _ = fetch(url)
            .then_js(&to_json, &JsValue::UNDEFINED)
            .then_js(&on_body, &on_fail);
    }

    // ------------------------------------------------------------------ events → JS

    fn dispatch(&self, e: Event<Js>) {
        match e {
            Event::LoginSuccess { uid } => {
                self.log.print(Level::Info, "logged in as", &self.account);
                self.slots
                    .fire(scb::LOGIN_SUCCESS, std::slice::from_ref(&uid.0));
                self.ready.resolve(&uid.0);
            }
            Event::LoginFailed { code } => {
                self.log.print(Level::Warning, "login failed", code.name());
                self.slots.fire(scb::LOGIN_FAILED, &[code.value().into()]);
                self.ready.reject(code.value(), code.name(), None);
                self.finished();
            }
            Event::Logout { code } => {
                self.log.print(Level::Info, "logged out", code.name());
                self.slots.fire(scb::LOGOUT, &[code.value().into()]);
                self.ready.reject(code.value(), code.name(), None);
                self.finished();
            }
            Event::Reconnecting { attempt } => {
                if self.log.enabled(Level::Info) {
                    let mut n = String::new();
                    opensig_protocol::json::push_u64(&mut n, attempt as u64);
                    self.log.print(Level::Info, "reconnecting, attempt", &n);
                }
                self.slots.fire(scb::RECONNECTING, &[attempt.into()]);
            }
            Event::Reconnected => self.slots.fire(scb::RECONNECTED, &[]),
            Event::Error { name, code, desc } => {
                self.log.print(Level::Warning, name, &desc);
                self.slots
                    .fire(scb::ERROR, &[name.into(), code.value().into(), desc.into()]);
            }
            Event::MessageInstant { account, msg } => self.slots.fire(
                scb::MESSAGE_INSTANT,
                &[account.into(), 0.into(), msg.into()],
            ),
            Event::InviteReceived {
                call,
                channel,
                peer,
                extra,
            } => {
                let shared = Rc::new(CallShared {
                    id: call.0,
                    channel,
                    peer,
                    extra: extra.0,
                    slots: Slots::new(),
                    ready: Deferred::new(),
                    session: self.me.clone(),
                });
                let obj = crate::call::Call::wrap(shared.clone());
                self.add_call(shared);
                self.slots.fire(scb::INVITE_RECEIVED, &[obj]);
            }
            Event::Call {
                call,
                what,
                extra,
                code,
            } => {
                let shared = self.st.borrow().calls.get(&call.0).cloned();
                let Some(c) = shared else { return };
                let (slot, ends) = match what {
                    CallEvent::ReceivedByPeer => (kcb::RECEIVED_BY_PEER, false),
                    CallEvent::AcceptedByPeer => (kcb::ACCEPTED_BY_PEER, false),
                    CallEvent::RefusedByPeer => (kcb::REFUSED_BY_PEER, true),
                    CallEvent::Failed => (kcb::FAILED, true),
                    CallEvent::EndByPeer => (kcb::END_BY_PEER, true),
                    CallEvent::EndByMyself => (kcb::END_BY_MYSELF, true),
                    CallEvent::Msg => (kcb::MSG, false),
                };
                match code {
                    // opensig passes the INVITE_E_* code as a second argument
                    Some(code) => c.slots.fire(slot, &[extra.0, code.into()]),
                    None => c.slots.fire(slot, &[extra.0]),
                }
                if ends {
                    self.st.borrow_mut().calls.remove(&call.0);
                    *c.slots.this.borrow_mut() = JsValue::UNDEFINED;
                }
            }
            Event::ChannelJoined { ch } => self.on_channel(ch.0, |c| {
                *c.state.borrow_mut() = "joined";
                c.slots.fire(crate::transport::ccb::JOINED, &[]);
                c.ready.resolve(&JsValue::UNDEFINED);
            }),
            Event::ChannelJoinFailed { ch, err } => {
                self.on_channel(ch.0, |c| {
                    c.slots.fire(ccb::JOIN_FAILED, &[JsValue::from_str(&err)]);
                    let code = opensig_protocol::codes::call_error_code(&err);
                    c.ready.reject(code.value(), &err, None);
                });
                self.drop_channel(ch.0);
            }
            Event::ChannelLeft { ch, code } => {
                self.on_channel(ch.0, |c| {
                    *c.state.borrow_mut() = "leaved";
                    if !(code == 0 && c.leave_has_cb.get()) {
                        c.slots.fire(ccb::LEAVED, &[code.into()]);
                    }
                });
                self.drop_channel(ch.0);
            }
            Event::ChannelUserList { ch, list } => {
                self.on_channel(ch.0, |c| c.slots.fire(ccb::USER_LIST, &[list.0]))
            }
            Event::ChannelUserJoined { ch, account, uid } => self.on_channel(ch.0, |c| {
                c.slots.fire(ccb::USER_JOINED, &[account.0, uid.0])
            }),
            Event::ChannelUserLeft { ch, account, uid } => self.on_channel(ch.0, |c| {
                c.slots.fire(ccb::USER_LEAVED, &[account.0, uid.0])
            }),
            Event::ChannelAttr {
                ch,
                name,
                value,
                kind,
            } => self.on_channel(ch.0, |c| {
                c.slots.fire(ccb::ATTR_UPDATED, &[name.0, value.0, kind.0])
            }),
            Event::ChannelMessage {
                ch,
                account,
                uid,
                msg,
            } => self.on_channel(ch.0, |c| {
                c.slots.fire(ccb::MESSAGE, &[account.0, uid.0, msg.0])
            }),
            Event::Done { req, result } => self.done(req.0, result),
            Event::Log { text } => self.log.print(Level::Debug, "", &text),
        }
    }

    fn on_channel(&self, id: u32, f: impl FnOnce(&ChannelShared)) {
        let c = self.st.borrow().channels.get(&id).cloned();
        if let Some(c) = c {
            f(&c);
        }
    }

    fn drop_channel(&self, id: u32) {
        if let Some(c) = self.st.borrow_mut().channels.remove(&id) {
            *c.slots.this.borrow_mut() = JsValue::UNDEFINED;
        }
    }

    fn done(&self, req: u32, result: Result<Js, opensig_protocol::client::Failure<Js>>) {
        let Some(p) = self.st.borrow_mut().requests.remove(&req) else {
            return;
        };
        let cb = p.cb.as_ref();
        let call_cb = |args: &[JsValue]| {
            if let Some(f) = cb {
                let r = match args {
                    [] => f.call0(&JsValue::UNDEFINED),
                    [a] => f.call1(&JsValue::UNDEFINED, a),
                    [a, b] => f.call2(&JsValue::UNDEFINED, a, b),
                    _ => Ok(JsValue::UNDEFINED),
                };
                if let Err(e) = r {
                    web_sys::console::error_2(&"opensig: an app callback threw:".into(), &e);
                }
            }
        };
        match p.kind {
            ReqKind::Instant => call_cb(&[result.is_err().into()]),
            ReqKind::Invoke => match &result {
                Ok(body) => call_cb(&["".into(), body.0.clone()]),
                Err(f) => {
                    let raw = f
                        .raw
                        .as_ref()
                        .map_or(JsValue::from_str(""), |r| r.0.clone());
                    call_cb(&[JsValue::from_str(&f.err), raw]);
                }
            },
            ReqKind::ChannelOp | ReqKind::Leave => call_cb(&[]),
            ReqKind::Plain => {}
        }
        match result {
            Ok(v) => p.deferred.resolve(&v.0),
            Err(f) => p
                .deferred
                .reject(f.code.value(), &f.err, f.raw.as_ref().map(|r| &r.0)),
        }
    }

    /// The session reached state 0: release timers and sockets so everything can be collected.
    fn finished(&self) {
        let mut st = self.st.borrow_mut();
        if let Some((id, _)) = st.timer.take() {
            clear_timeout(&id);
        }
        let sockets: Vec<Socket> = std::mem::take(&mut st.sockets).into_values().collect();
        st.graveyard.extend(sockets);
        drop(st);
        *self.slots.this.borrow_mut() = JsValue::UNDEFINED;
    }
}

fn inflate(data: &JsValue) -> Result<Promise, JsValue> {
    let parts = Array::of1(&Uint8Array::new(data));
    let blob = web_sys::Blob::new_with_u8_array_sequence(&parts)?;
    // zlib format is "deflate" in the Compression Streams API ("deflate-raw" is raw)
    let ds = DecompressionStream::new("deflate")?;
    let stream = blob
        .stream()
        .pipe_through(ds.unchecked_ref::<web_sys::ReadableWritablePair>());
    let resp = web_sys::Response::new_with_opt_readable_stream(Some(&stream))?;
    resp.text()
}
