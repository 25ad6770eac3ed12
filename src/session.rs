//! `Session`: what `signal.login()` returns.

use std::rc::Rc;

use js_sys::Promise;
use opensig_protocol::client::ChannelId;
use wasm_bindgen::prelude::*;

use crate::callbacks::Slots;
use crate::channel::Channel;
use crate::js::{to_json_text, to_text};
use crate::transport::{CallShared, ChannelShared, Deferred, Driver, ReqKind};

/// A login session.
#[wasm_bindgen]
pub struct Session {
    d: Rc<Driver>,
}

impl Session {
    pub(crate) fn wrap(d: Rc<Driver>) -> JsValue {
        let obj = JsValue::from(Session { d: d.clone() });
        *d.slots.this.borrow_mut() = obj.clone();
        obj
    }
}

#[wasm_bindgen]
impl Session {
    /// 0 not logged in, 1 logging in, 2 logged in, 3 reconnecting.
    #[wasm_bindgen(js_name = getStatus)]
    pub fn get_status(&self) -> u8 {
        self.d.state() as u8
    }

    /// Same as `getStatus()`.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> u8 {
        self.get_status()
    }

    /// The account name.
    #[wasm_bindgen(getter)]
    pub fn account(&self) -> String {
        self.d.account.clone()
    }

    /// Resolves with the uid on login; rejects with the login-failure (or logout) code.
    #[wasm_bindgen(getter)]
    pub fn ready(&self) -> Promise {
        self.d.ready.promise.clone()
    }

    /// Log out; ends in `onLogout(101)` (also while connecting or reconnecting).
    pub fn logout(&self) -> Promise {
        let req = self.d.command(|c, now| c.logout(now));
        self.d.track(req.0, ReqKind::Plain, &JsValue::UNDEFINED)
    }

    /// Send a peer-to-peer message; `cb(isError)` as in 1.4.0.
    #[wasm_bindgen(js_name = messageInstantSend)]
    pub fn message_instant_send(&self, peer: JsValue, msg: JsValue, cb: JsValue) -> Promise {
        let (peer, msg) = (to_text(&peer), to_text(&msg));
        let req = self
            .d
            .command(|c, now| c.message_instant_send(&peer, &msg, now));
        self.d.track(req.0, ReqKind::Instant, &cb)
    }

    /// `invoke("io.agora.signal.<function>", args, cb(err, resp))`.
    pub fn invoke(&self, func: JsValue, args: JsValue, cb: JsValue) -> Promise {
        let func = to_text(&func);
        let args = to_json_text(&args, "{}");
        let req = self.d.command(|c, now| c.invoke(&func, &args, now));
        self.d.track(req.0, ReqKind::Invoke, &cb)
    }

    /// Join a channel; returns the Channel at once.
    #[wasm_bindgen(js_name = channelJoin)]
    pub fn channel_join(&self, name: JsValue) -> JsValue {
        let name = to_text(&name);
        let ch: ChannelId = self.d.command(|c, now| c.channel_join(&name, now));
        let shared = Rc::new(ChannelShared {
            id: ch.0,
            name,
            state: std::cell::RefCell::new("joining"),
            slots: Slots::new(),
            ready: Deferred::new(),
            leave_has_cb: std::cell::Cell::new(false),
            session: self.d.me(),
        });
        self.d.add_channel(shared.clone());
        Channel::wrap(shared)
    }

    /// Invite `peer` into `channel`; returns the Call at once.
    #[wasm_bindgen(js_name = channelInviteUser2)]
    pub fn channel_invite_user2(&self, channel: JsValue, peer: JsValue, extra: JsValue) -> JsValue {
        let (channel, peer) = (to_text(&channel), to_text(&peer));
        let extra = if extra.is_undefined() || extra.is_null() {
            JsValue::from_str("")
        } else {
            extra
        };
        let extra_json = to_json_text(&extra, "\"\"");
        let (call, req) = self
            .d
            .command(|c, now| c.invite(&channel, &peer, &extra_json, now));
        let shared = Rc::new(CallShared {
            id: call.0,
            channel,
            peer,
            extra,
            slots: Slots::new(),
            ready: Deferred::new(),
            session: self.d.me(),
        });
        self.d.add_call(shared.clone());
        let _ = self.d.track_with(
            req.0,
            ReqKind::Plain,
            &JsValue::UNDEFINED,
            shared.ready.clone(),
        );
        crate::call::Call::wrap(shared)
    }
}
