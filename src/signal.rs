//! `Signal(appid[, options])`: settings shared by the sessions it creates, and `login`.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Reflect;
use opensig_protocol::client::{reconnect_time_ms, Config};
use opensig_protocol::names::fixed;
use opensig_protocol::Code;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::js::to_text;
use crate::log::{Level, LogSettings};
use crate::session::Session;

/// The SDK entry point: `Signal(appid)` or `new Signal(appid)`.
#[wasm_bindgen]
pub struct Signal {
    appid: String,
    /// From `options` (`server`/`servers`): used in this order.
    servers: Vec<String>,
    /// From `setup_debugging('ap_url', …)`: shuffled at each login, as 1.4.0 does.
    debug_servers: RefCell<Vec<String>>,
    lbs: RefCell<Vec<String>>,
    log: Rc<LogSettings>,
    /// `options.WebSocket`: the WebSocket class to use (Node.js without a global one).
    web_socket: JsValue,
}

fn strings(v: &JsValue) -> Vec<String> {
    if let Some(s) = v.as_string() {
        return vec![s];
    }
    if js_sys::Array::is_array(v) {
        return js_sys::Array::from(v)
            .iter()
            .filter_map(|x| x.as_string())
            .collect();
    }
    Vec::new()
}

fn option(options: &JsValue, key: &str) -> JsValue {
    if options.is_object() {
        Reflect::get(options, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    } else {
        JsValue::UNDEFINED
    }
}

/// The page's own origin (`location.origin`), the default LBS.
fn page_origin() -> Option<String> {
    let location = Reflect::get(&js_sys::global(), &"location".into()).ok()?;
    let origin = Reflect::get(&location, &"origin".into())
        .ok()?
        .as_string()?;
    (origin.starts_with("http")).then_some(origin)
}

#[wasm_bindgen]
impl Signal {
    /// `options`: `{server: "ws://…"}` / `{servers: [...]}` to connect directly, or
    /// `{lbs: "https://…"}` / `{lbs: [...]}` for the `/getaddr` lookup (default: the page's
    /// origin); `{WebSocket}`: the WebSocket class to use (default: the global one).
    #[wasm_bindgen(constructor)]
    pub fn new(appid: JsValue, options: JsValue) -> Signal {
        // debug and test builds: a panic reads as an error with its message (release builds
        // compile panics out)
        #[cfg(debug_assertions)]
        console_error_panic_hook::set_once();
        let mut servers = strings(&option(&options, "server"));
        servers.extend(strings(&option(&options, "servers")));
        let mut lbs = strings(&option(&options, "lbs"));
        if lbs.is_empty() {
            lbs.extend(page_origin());
        }
        Signal {
            appid: to_text(&appid),
            servers,
            debug_servers: RefCell::new(Vec::new()),
            lbs: RefCell::new(lbs),
            log: Rc::new(LogSettings::new()),
            web_socket: option(&options, "WebSocket"),
        }
    }

    /// The app id.
    #[wasm_bindgen(getter)]
    pub fn appid(&self) -> String {
        self.appid.clone()
    }

    /// The app id (the original's other name for it).
    #[wasm_bindgen(getter)]
    pub fn vid(&self) -> String {
        self.appid.clone()
    }

    /// `"1.4.0"`: the API level this SDK implements.
    #[wasm_bindgen(js_name = getSDKVersion)]
    pub fn get_sdk_version(&self) -> String {
        fixed::SDK_VERSION.into()
    }

    /// `1010400000`.
    #[wasm_bindgen(js_name = getSDKVersion_int)]
    pub fn get_sdk_version_int(&self) -> u32 {
        fixed::SDK_VERSION_INT
    }

    /// `setDoLog(enabled, level)`: level `DEBUG` (default), `INFO` or `WARNING`.
    #[wasm_bindgen(js_name = setDoLog)]
    pub fn set_do_log(&self, enabled: JsValue, level: JsValue) {
        let level = match level.as_string() {
            None => Level::Debug,
            Some(name) => match Level::parse(&name) {
                Some(l) => l,
                None => {
                    web_sys::console::log_1(
                        &"opensig: setDoLog accepts DEBUG / WARNING / INFO; the default level is DEBUG".into(),
                    );
                    return;
                }
            },
        };
        self.log.enabled.set(enabled.is_truthy());
        self.log.level.set(level);
    }

    /// `setup_debugging('ap_url', 'ws://host:port/')` connects to that URL verbatim (call it
    /// before `login`; several calls add several URLs). `'lbs'` sets the lookup base URL.
    pub fn setup_debugging(&self, kind: &str, value: JsValue) {
        let Some(v) = value.as_string() else { return };
        match kind {
            "ap_url" => self.debug_servers.borrow_mut().push(v),
            "ap" => {
                let url = String::from("wss://") + &v.replace('.', "-") + "-sig-web.agora.io:8002/";
                self.debug_servers.borrow_mut().push(url);
            }
            "lbs" => *self.lbs.borrow_mut() = vec![v],
            _ => {}
        }
    }

    /// A sentence for an error code or error string, e.g. `errorText(703)` →
    /// `"INVITE_E_PEEROFFLINE (703): the peer is offline"` (opensig addition).
    #[wasm_bindgen(js_name = errorText)]
    pub fn error_text(&self, code: JsValue) -> String {
        let code = match code.as_f64() {
            Some(n) => Code::from_value(n as u32),
            None => Some(opensig_protocol::codes::call_error_code(&to_text(&code))),
        };
        let Some(code) = code else {
            return "unknown error".into();
        };
        let mut s = String::from(code.name());
        s.push_str(" (");
        opensig_protocol::json::push_u64(&mut s, code.value() as u64);
        s.push_str("): ");
        s.push_str(opensig_protocol::codes::describe(code));
        s
    }

    /// `signal.onLog = (txt) => …`: every log line of this Signal's sessions at or above the
    /// `setDoLog` level, whether or not console printing is on (Android's `onLog`).
    #[wasm_bindgen(getter = onLog)]
    pub fn on_log(&self) -> JsValue {
        self.log
            .on_log
            .borrow()
            .as_ref()
            .map_or(JsValue::UNDEFINED, |f| f.into())
    }

    /// Set (or with anything but a function, clear) the log hook.
    #[wasm_bindgen(setter = onLog)]
    pub fn set_on_log(&self, f: JsValue) {
        *self.log.on_log.borrow_mut() = f.dyn_into::<js_sys::Function>().ok();
    }

    /// Alias of `setup_debugging`.
    #[wasm_bindgen(js_name = setUpDebugging)]
    pub fn set_up_debugging(&self, kind: &str, value: JsValue) {
        self.setup_debugging(kind, value)
    }

    /// Log in; returns the Session at once (its methods are usable immediately).
    /// `reconnect_count` defaults to 10; `reconnect_time` is in seconds as documented
    /// (default 30), a value of 1000 or more is read as milliseconds (1.4.0's code unit).
    pub fn login(
        &self,
        account: JsValue,
        token: JsValue,
        reconnect_count: JsValue,
        reconnect_time: JsValue,
    ) -> JsValue {
        let mut cfg = Config::new(&self.appid, &to_text(&account), &to_text(&token));
        cfg.reconnect_count = reconnect_count
            .as_f64()
            .filter(|n| *n >= 1.0)
            .map_or(0, |n| n as u32);
        cfg.reconnect_time_ms = reconnect_time.as_f64().map_or(0, reconnect_time_ms);
        let mut debug = self.debug_servers.borrow().clone();
        shuffle(&mut debug);
        cfg.servers = self.servers.iter().cloned().chain(debug).collect();
        cfg.lbs = self.lbs.borrow().clone();
        Session::wrap(crate::transport::start(
            cfg,
            self.log.clone(),
            self.web_socket.clone(),
        ))
    }
}

fn shuffle(v: &mut [String]) {
    for i in (1..v.len()).rev() {
        let j = (js_sys::Math::random() * (i + 1) as f64) as usize;
        v.swap(i, j.min(i));
    }
}
