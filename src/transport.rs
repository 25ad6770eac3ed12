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
use opensig_protocol::client::{Action, Client, Config, ConnId, Millis};
use opensig_protocol::small::{Queue, VecMap};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, MessageEvent, WebSocket};

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

/// One WebSocket and the closures the browser calls for it.
struct Socket {
    ws: WebSocket,
    _handlers: [Closure<dyn FnMut(JsValue)>; 4],
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
    hub: Weak<Hub>,
    me: Weak<Io>,
    /// The WebSocket class the app gave (undefined: the global `WebSocket`).
    web_socket: JsValue,
    st: RefCell<IoState>,
    /// Runs a scheduled pump (a microtask); lives as long as the session.
    pump_closure: Closure<dyn FnMut()>,
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
        Io {
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
        loop {
            let (actions, events) = {
                let mut hs = hub.st.borrow_mut();
                let mut a = Vec::new();
                while let Some(x) = hs.core.poll_action() {
                    a.push(x);
                }
                let mut e = Vec::new();
                while let Some(x) = hs.core.poll_event() {
                    e.push(x);
                }
                (a, e)
            };
            if actions.is_empty() && events.is_empty() {
                break;
            }
            for a in actions {
                self.perform(&hub, a);
            }
            for e in events {
                crate::dispatch::event(&hub, e);
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
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let now = hub.now();
        match kind {
            0 => hub.st.borrow_mut().core.handle_open(conn, now),
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
                        text_frame(&hub, conn, &data, now);
                    }
                } else {
                    self.binary_frame(conn, data);
                }
            }
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
