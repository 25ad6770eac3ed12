//! The only IO of the SDK: browser WebSockets, timers, `fetch` and `DecompressionStream`
//! driving the protocol core of one session, and the pump that performs the core's actions
//! and hands its events to `dispatch`.
//!
//! Lifetimes: every JS callback the browser may still call is alive. A socket's four handlers
//! are detached before its closures are dropped; the timer is a `gloo_timers` `Timeout`,
//! which cancels itself when dropped. So nothing calls a freed closure, whatever the network
//! does.
//!
//! Re-entrancy: app callbacks may call SDK methods. No `RefCell` borrow is held while JS code
//! runs; commands made inside a callback are picked up by the pump loop that is running, and
//! commands made outside one schedule a pump as a microtask (so the app can set callbacks on
//! a returned object before anything fires).

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use gloo_timers::callback::Timeout;
use js_sys::{Array, Function, Promise, Reflect, Uint8Array};
use opensig_protocol::client::{Action, ChannelEvent, Client, Config, ConnId, Direct, Millis};
use opensig_protocol::small::{Queue, VecMap};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, WebSocket};

use crate::dispatch::{scb, CHANNEL_CALLBACKS};
use crate::hub::{Hub, Wake};
use crate::js::{json_parse, Js};
use crate::log::{Level, LogSettings};

#[wasm_bindgen]
extern "C" {
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

#[wasm_bindgen(module = "/js/reader.js")]
extern "C" {
    /// The JS reader of a socket's frames (js/reader.js): it hands the core each frame, or
    /// each hot event read in JS, through its two entries (`enter`, `next`).
    fn listen(ws: &WebSocket, t: &Array, enter: &JsValue, next: &JsValue, io: u32, conn: u32);
}

/// What the JS reader compares with, from crates/protocol (js/reader.js `listen`'s `t`).
fn reader_names() -> Array {
    use opensig_protocol::msg;
    use opensig_protocol::names::{event, msgtype, notify};
    let t: Array = [
        event::NOTIFY,
        event::MULTI,
        notify::CHANNEL2,
        notify::RECVMSG,
        msg::V2,
        msg::V3,
        msgtype::INSTANT,
    ]
    .iter()
    .map(|s| JsValue::from_str(s))
    .collect();
    let kinds: Array = msgtype::CHANNEL_EVENTS
        .iter()
        .zip(CHANNEL_CALLBACKS)
        .map(|((kind, fields), (callback, n))| {
            let fields: Array = fields.iter().map(|s| JsValue::from_str(s)).collect();
            Array::of4(&(*kind).into(), &fields, &callback.into(), &n.into())
        })
        .collect();
    t.push(&kinds);
    t.push(&scb::MESSAGE_INSTANT.into());
    t
}

thread_local! {
    /// Every session's IO by its number, for the reader's entry.
    static IOS: RefCell<VecMap<u32, Weak<Io>>> = const { RefCell::new(VecMap::new()) };
    static NEXT_IO: std::cell::Cell<u32> = const { std::cell::Cell::new(1) };
}

/// The reader's entries into the core (js/reader.js `listen`'s `enter` and `next`), called by
/// the reader as the wasm exports themselves: no closure glue between a frame and the core.
const READER_ENTRY: &str = "__opensig_read";
const READER_NEXT: &str = "__opensig_next";

/// What the reader of session IO `io`'s socket `conn` hands over or asks at `Date.now()` =
/// `t` (js/reader.js `listen`).
#[wasm_bindgen(js_name = "__opensig_read", skip_typescript)]
#[allow(clippy::too_many_arguments)]
pub fn reader_entry(
    io: u32,
    conn: u32,
    t: f64,
    op: u32,
    kind: u32,
    x: f64,
    y: f64,
    a: JsValue,
    b: JsValue,
) -> JsValue {
    io_of(io).map_or(0.into(), |io| {
        io.enter(ConnId(conn), t, [op, kind], [x, y], [a, b])
    })
}

/// What the reader of session IO `io`'s socket `conn` asks with numbers only, both ways (no JS
/// value crosses) at `Date.now()` = `t`: op 1, may it deliver this channel event (`kind`, seq
/// `x`, number `y` or -1, identity `z` or -1) of the channel it named last (`enter` op 1)? op 2, this msg-v2
/// instant message (mailbox version `x`)? Answers as `enter` does, or -1 when the core was
/// last told another channel (nothing changed: ask with the name).
///
/// A plain wasm export: numbers need no wasm-bindgen shim (its argument conversions were
/// ~350 bytes). `no_mangle` counts as unsafe code only for a name that could clash with
/// another symbol; this one is the SDK's own.
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn __opensig_next(
    io: u32,
    conn: u32,
    t: f64,
    op: u32,
    kind: u32,
    x: f64,
    y: f64,
    z: f64,
) -> f64 {
    io_of(io).map_or(0.0, |io| io.next(ConnId(conn), t, op, kind, [x, y, z]))
}

/// Session IO number `io`, if it is still there (one copy for both entries: size).
#[inline(never)]
fn io_of(io: u32) -> Option<Rc<Io>> {
    IOS.with(|m| m.borrow().get(&io).and_then(Weak::upgrade))
}

/// One WebSocket and the closures the browser calls for it.
struct Socket {
    ws: WebSocket,
    /// open, close, error
    _handlers: [Closure<dyn FnMut(JsValue)>; 3],
    /// Frames waiting behind a binary frame that is still being inflated.
    queue: Queue<Option<JsValue>>,
}

impl Socket {
    /// Detach the handlers (so the browser never calls them again) and close.
    fn dispose(&self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        let _ = self.ws.close();
    }
}

struct IoState {
    sockets: VecMap<u32, Socket>,
    /// Disposed sockets, dropped at the next pump (one of their closures may be running).
    graveyard: Vec<Socket>,
    /// The core's next deadline, armed.
    timer: Option<(Timeout, Millis)>,
    pump_scheduled: bool,
    pumping: bool,
}

/// The IO of one session.
struct Io {
    /// Its number in `IOS`.
    id: u32,
    hub: Weak<Hub>,
    me: Weak<Io>,
    /// The WebSocket class the app gave (undefined: the global `WebSocket`).
    web_socket: JsValue,
    st: RefCell<IoState>,
    /// Runs a scheduled pump (a microtask); lives as long as the session.
    pump_closure: Closure<dyn FnMut()>,
    /// The socket and channel name of the last channel event the reader named (`enter` op 1):
    /// a stream of events for one channel crosses into wasm memory once (`__opensig_next`).
    last_channel: RefCell<(ConnId, String)>,
}

impl Drop for Io {
    fn drop(&mut self) {
        IOS.with(|m| m.borrow_mut().remove(&self.id));
    }
}

/// The Hub's handle on its IO.
struct Driver(Rc<Io>);

impl Wake for Driver {
    fn wake(&self) {
        self.0.schedule();
    }

    fn finished(&self) {
        let mut st = self.0.st.borrow_mut();
        st.timer = None;
        let sockets: Vec<Socket> = std::mem::take(&mut st.sockets).into_values().collect();
        for s in &sockets {
            s.dispose();
        }
        st.graveyard.extend(sockets);
    }
}

/// Start a session: its core, its hub and its IO. `web_socket`: the WebSocket class to use
/// (`Signal(appid, {WebSocket})`, e.g. the `ws` package in Node.js), or undefined for the
/// global one.
pub(crate) fn start(mut config: Config, log: Rc<LogSettings>, web_socket: JsValue) -> Rc<Hub> {
    let start = js_sys::Date::now();
    config.jitter_seed ^= (js_sys::Math::random() * 9_007_199_254_740_992.0) as u64;
    config.unix_ms_at_zero = start as u64;
    let hub = Hub::new(Client::new(config, 0), start, log);
    let weak = Rc::downgrade(&hub);
    let io = Rc::new_cyclic(|me: &Weak<Io>| {
        let m = me.clone();
        let id = NEXT_IO.with(|n| n.replace(n.get().wrapping_add(1)));
        IOS.with(|m| m.borrow_mut().insert(id, me.clone()));
        Io {
            id,
            hub: weak,
            me: me.clone(),
            web_socket,
            st: RefCell::new(IoState {
                sockets: VecMap::new(),
                graveyard: Vec::new(),
                timer: None,
                pump_scheduled: false,
                pumping: false,
            }),
            last_channel: RefCell::new((ConnId(0), String::new())),
            pump_closure: Closure::new(move || {
                if let Some(io) = m.upgrade() {
                    io.st.borrow_mut().pump_scheduled = false;
                    io.pump();
                }
            }),
        }
    });
    hub.drive_with(Box::new(Driver(io.clone())));
    io.schedule();
    hub
}

impl Io {
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
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        {
            let mut st = self.st.borrow_mut();
            if st.pumping {
                return;
            }
            st.pumping = true;
            st.graveyard.clear();
        }
        // the core's actions first, then its next event, until it has neither (what an app
        // callback commands lands behind what is already queued)
        loop {
            let action = hub.st.borrow_mut().core.poll_action();
            if let Some(a) = action {
                self.perform(&hub, a);
                continue;
            }
            let event = hub.st.borrow_mut().core.poll_event();
            match event {
                Some(e) => crate::dispatch::event(&hub, e),
                None => break,
            }
        }
        self.st.borrow_mut().pumping = false;
        self.rearm(&hub);
    }

    /// Arm the timer for the core's next deadline (a spurious early wake-up is harmless).
    fn rearm(&self, hub: &Hub) {
        let want = hub.st.borrow().core.poll_timeout();
        let mut st = self.st.borrow_mut();
        match (want, &st.timer) {
            (None, _) => st.timer = None,
            (Some(w), Some((_, at))) if *at <= w => {}
            (Some(w), _) => {
                let delay = (w as f64 - hub.now() as f64).clamp(0.0, u32::MAX as f64) as u32;
                let me = self.me.clone();
                let timeout = Timeout::new(delay, move || {
                    if let Some(io) = me.upgrade() {
                        io.on_timer();
                    }
                });
                st.timer = Some((timeout, w));
            }
        }
    }

    fn on_timer(&self) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        // the Timeout that is calling us is done; dropping it now is safe
        let fired = self.st.borrow_mut().timer.take();
        let now = hub.now();
        hub.st.borrow_mut().core.handle_timeout(now);
        self.pump();
        drop(fired);
    }

    fn perform(&self, hub: &Hub, a: Action) {
        match a {
            Action::Connect { conn, url } => self.connect(hub, conn, &url),
            Action::Send { conn, text } => {
                hub.log.print(Level::Debug, "send", &text);
                if let Some(s) = self.st.borrow().sockets.get(&conn.0) {
                    let _ = s.ws.send_with_str(&text);
                }
            }
            Action::Close { conn } => {
                let mut st = self.st.borrow_mut();
                if let Some(s) = st.sockets.remove(&conn.0) {
                    s.dispose();
                    st.graveyard.push(s);
                }
            }
            Action::Fetch { id, url } => self.lbs(hub, id, &url),
        }
    }

    fn connect(&self, hub: &Hub, conn: ConnId, url: &str) {
        hub.log.print(Level::Info, "connecting to", url);
        let ws = if self.web_socket.is_function() {
            Reflect::construct(
                self.web_socket.unchecked_ref::<Function>(),
                &Array::of1(&url.into()),
            )
            .map(JsCast::unchecked_into::<WebSocket>)
        } else {
            WebSocket::new(url)
        };
        let ws = match ws {
            Ok(ws) => ws,
            Err(_) => {
                let now = hub.now();
                hub.st.borrow_mut().core.handle_close(conn, now);
                return;
            }
        };
        ws.set_binary_type(BinaryType::Arraybuffer);
        let handler = |kind: u8| {
            let me = self.me.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
                if let Some(io) = me.upgrade() {
                    io.on_socket(conn, kind, ev);
                }
            })
        };
        let handlers = [handler(0), handler(2), handler(3)];
        ws.set_onopen(Some(handlers[0].as_ref().unchecked_ref()));
        ws.set_onclose(Some(handlers[1].as_ref().unchecked_ref()));
        ws.set_onerror(Some(handlers[2].as_ref().unchecked_ref()));
        let entry = |name: &str| Reflect::get(&wasm_bindgen::exports(), &name.into());
        let (enter, next) = (entry(READER_ENTRY), entry(READER_NEXT));
        listen(
            &ws,
            &reader_names(),
            &enter.unwrap_or_default(),
            &next.unwrap_or_default(),
            self.id,
            conn.0,
        );
        self.st.borrow_mut().sockets.insert(
            conn.0,
            Socket {
                ws,
                _handlers: handlers,
                queue: Queue::new(),
            },
        );
    }

    /// What the reader hands over or asks (js/reader.js `listen`), then the pump. Answers a
    /// number: bit 2, the reader may deliver the channel event or instant message it asked
    /// about itself (nothing of the core's is queued ahead of it; the core counted it as
    /// delivered), to the object numbered by the bits above (0: the session, else a channel),
    /// which op 4 answers; otherwise bit 1, hand the frame over as it is instead; bit 0, hand
    /// frames over as they are for now (frames wait behind a binary one, or the core's
    /// received frames are logged).
    fn enter(&self, conn: ConnId, t: f64, op: [u32; 2], x: [f64; 2], v: [JsValue; 2]) -> JsValue {
        let [x, y] = x;
        let [a, b] = v;
        let Some(hub) = self.hub.upgrade() else {
            return 0.into();
        };
        let [op, kind] = op;
        match op {
            // a channel event: channel name, sequence, number (or -1), identity (or
            // undefined), type
            1 => {
                *self.last_channel.borrow_mut() = (conn, a.as_string().unwrap_or_default());
                let id = b.as_f64().unwrap_or(-1.0);
                self.channel_event(&hub, conn, t, kind, [x, y, id]).into()
            }
            // an instant message: mailbox version, msg-v3 id (or undefined)
            2 => self.instant(&hub, conn, t, x, a.as_string()).into(),
            // the object numbered x (0: the session, else a channel)
            4 => match x as u32 {
                0 => hub.slots.this.borrow().clone(),
                ch => hub
                    .channel(ch)
                    .map_or(JsValue::UNDEFINED, |c| c.slots.this.borrow().clone()),
            },
            // a frame as it arrived, or parsed
            _ => {
                self.cold(&hub, conn, a, b, hub.at(t));
                self.pump();
                self.answer(&hub, Direct::Dropped).into()
            }
        }
    }

    /// `__opensig_next`: a channel event of the channel the reader named last, or a msg-v2
    /// instant message.
    fn next(&self, conn: ConnId, t: f64, op: u32, kind: u32, x: [f64; 3]) -> f64 {
        let Some(hub) = self.hub.upgrade() else {
            return 0.0;
        };
        if op == 2 {
            return self.instant(&hub, conn, t, x[0], None);
        }
        if self.last_channel.borrow().0 != conn {
            return -1.0;
        }
        self.channel_event(&hub, conn, t, kind, x)
    }

    /// Decide on an instant message (mailbox version `v`, msg-v3 id) (js/reader.js `listen`).
    #[inline(never)]
    fn instant(&self, hub: &Hub, conn: ConnId, t: f64, v: f64, id: Option<String>) -> f64 {
        let decided = if hub.log.enabled(Level::Debug) {
            Direct::Full
        } else {
            let now = hub.at(t);
            let mut hs = hub.st.borrow_mut();
            hs.core.instant_direct(conn, v as u64, id.as_deref(), now)
        };
        // what the core did for it (an ack due) is a deadline at most: no pump, the timer
        if decided != Direct::Full {
            self.rearm(hub);
        }
        self.answer(hub, decided)
    }

    /// Decide on a channel event of the channel in `last_channel` (js/reader.js `listen`).
    /// One copy for both entries (size).
    #[inline(never)]
    fn channel_event(&self, hub: &Hub, conn: ConnId, t: f64, kind: u32, x: [f64; 3]) -> f64 {
        let [seq, n, id] = x;
        // not while received frames are logged: they are, as frames
        let decided = if hub.log.enabled(Level::Debug) {
            Direct::Full
        } else {
            let last = self.last_channel.borrow();
            let e = ChannelEvent {
                channel: &last.1,
                seq: seq as u64,
                number: (n >= 0.0).then_some(n as u64),
                kind: kind as usize,
                id: (id >= 0.0).then_some(id as u64),
            };
            let now = hub.at(t);
            hub.st.borrow_mut().core.channel_event_direct(conn, &e, now)
        };
        // decided here, the event leaves the core nothing to do (its watchdog's later deadline
        // is seen when the armed timer fires): no pump
        self.answer(hub, decided)
    }

    /// The reader's answer (`enter`) to what the core decided: delivered to the object
    /// numbered as the core says (an instant message's is 0, the session), or bits.
    fn answer(&self, hub: &Hub, decided: Direct) -> f64 {
        if let Direct::Deliver(to) = decided {
            return 4.0 + 8.0 * to.0 as f64;
        }
        let waiting = self
            .st
            .borrow()
            .sockets
            .values()
            .map(|s| s.queue.len())
            .sum::<usize>();
        let full = decided == Direct::Full;
        ((waiting > 0 || hub.log.enabled(Level::Debug)) as u32 | (full as u32) << 1).into()
    }

    /// A frame as it arrived (`frame` undefined) or as the reader parsed it.
    fn cold(&self, hub: &Hub, conn: ConnId, data: JsValue, frame: JsValue, now: Millis) {
        if !frame.is_undefined() {
            if hub.log.enabled(Level::Debug) {
                hub.log
                    .print(Level::Debug, "recv", &crate::js::to_json_text(&frame, ""));
            }
            hub.st.borrow_mut().core.handle_frame(conn, Js(frame), now);
        } else if data.is_string() {
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
                text_frame(hub, conn, &data, now);
            }
        } else {
            self.binary_frame(conn, data);
        }
    }

    fn on_socket(&self, conn: ConnId, kind: u8, _ev: JsValue) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let now = hub.now();
        match kind {
            0 => hub.st.borrow_mut().core.handle_open(conn, now),
            // error and close are treated alike: the core reconnects
            _ => {
                {
                    let mut st = self.st.borrow_mut();
                    if let Some(s) = st.sockets.remove(&conn.0) {
                        s.dispose();
                        st.graveyard.push(s);
                    }
                }
                hub.st.borrow_mut().core.handle_close(conn, now);
            }
        }
        self.pump();
    }

    /// zlib (RFC 1950) frames are inflated by the browser; frames behind one wait for it.
    fn binary_frame(&self, conn: ConnId, data: JsValue) {
        {
            let mut st = self.st.borrow_mut();
            let Some(s) = st.sockets.get_mut(&conn.0) else {
                return;
            };
            s.queue.push_back(None);
        }
        let me = self.me.clone();
        let done = Closure::once_into_js(move |text: JsValue| {
            if let Some(io) = me.upgrade() {
                io.inflated(conn, text);
            }
        });
        let me = self.me.clone();
        let failed = Closure::once_into_js(move |_: JsValue| {
            if let Some(io) = me.upgrade() {
                if let Some(hub) = io.hub.upgrade() {
                    hub.log.print(
                        Level::Warning,
                        "ignored a binary frame that is not zlib",
                        "",
                    );
                }
                io.inflated(conn, JsValue::NULL);
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
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
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
        let now = hub.now();
        for t in ready {
            if t.is_string() {
                text_frame(&hub, conn, &t, now);
            }
        }
        self.pump();
    }

    fn lbs(&self, hub: &Hub, id: u32, url: &str) {
        hub.log.print(Level::Info, "asking", url);
        let me = self.me.clone();
        let answer = move |body: Option<Js>| {
            if let Some(io) = me.upgrade() {
                if let Some(hub) = io.hub.upgrade() {
                    let now = hub.now();
                    hub.st.borrow_mut().core.handle_fetch(id, body, now);
                    io.pump();
                }
            }
        };
        let answer2 = answer.clone();
        let on_body = Closure::once_into_js(move |body: JsValue| {
            answer((!body.is_null() && !body.is_undefined()).then_some(Js(body)))
        });
        let on_fail = Closure::once_into_js(move |_: JsValue| answer2(None));
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
}

fn text_frame(hub: &Hub, conn: ConnId, text: &JsValue, now: Millis) {
    if hub.log.enabled(Level::Debug) {
        hub.log
            .print(Level::Debug, "recv", &text.as_string().unwrap_or_default());
    }
    match json_parse(text) {
        Ok(v) => hub.st.borrow_mut().core.handle_frame(conn, Js(v), now),
        Err(_) => hub
            .log
            .print(Level::Warning, "ignored a frame that is not JSON", ""),
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
