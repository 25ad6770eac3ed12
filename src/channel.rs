//! `Channel`: what `session.channelJoin()` returns.

use std::rc::Rc;

use js_sys::Promise;
use opensig_protocol::client::ChannelId;
use wasm_bindgen::prelude::*;

use crate::hub::{ChannelShared, ReqKind};
use crate::js::to_text;
use crate::promise::rejected;
use crate::session::{cb_and_id, message_id};

/// A channel joined (or being joined) by a session.
#[wasm_bindgen]
pub struct Channel {
    c: Rc<ChannelShared>,
}

impl Channel {
    pub(crate) fn wrap(c: Rc<ChannelShared>) -> JsValue {
        let obj = JsValue::from(Channel { c: c.clone() });
        *c.slots.this.borrow_mut() = obj.clone();
        obj
    }

    fn op(
        &self,
        kind: ReqKind,
        cb: &JsValue,
        f: impl FnOnce(
            &mut opensig_protocol::client::Client<crate::js::Js>,
            u64,
        ) -> opensig_protocol::client::ReqId,
    ) -> Promise {
        match self.c.session.upgrade() {
            Some(d) => {
                let req = d.command(f);
                d.track(req.0, kind, cb)
            }
            None => rejected(1003, "session_ended"),
        }
    }

    fn send(&self, msg: &JsValue, cb: JsValue, msg_id: JsValue, force: bool) -> Promise {
        let (cb, msg_id) = cb_and_id(cb, msg_id);
        let (name, msg) = (self.c.name.clone(), to_text(msg));
        let Some(d) = self.c.session.upgrade() else {
            return rejected(1003, "session_ended");
        };
        let req = d.command(|c, now| c.channel_send(&name, &msg, force, now));
        let id = message_id(&msg_id, req.0);
        d.track(req.0, ReqKind::Message { instant: false, id }, &cb)
    }
}

#[wasm_bindgen]
impl Channel {
    /// The channel name.
    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.c.name.clone()
    }

    /// `"joining"`, `"joined"` or `"leaved"`.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        (*self.c.state.borrow()).into()
    }

    /// Resolves when joined; rejects with the join error.
    #[wasm_bindgen(getter)]
    pub fn ready(&self) -> Promise {
        self.c.ready.promise.clone()
    }

    /// Send a channel message; `cb()` whatever the outcome (as 1.4.0), the promise and
    /// `session.onMessageSendSuccess(msgID)` / `onMessageSendError(msgID, ecode)` tell.
    #[wasm_bindgen(js_name = messageChannelSend)]
    pub fn message_channel_send(&self, msg: JsValue, cb: JsValue, msg_id: JsValue) -> Promise {
        self.send(&msg, cb, msg_id, false)
    }

    /// Send a channel message without being a member (Android's `messageChannelSendForce`).
    #[wasm_bindgen(js_name = messageChannelSendForce)]
    pub fn message_channel_send_force(
        &self,
        msg: JsValue,
        cb: JsValue,
        msg_id: JsValue,
    ) -> Promise {
        self.send(&msg, cb, msg_id, true)
    }

    /// opensig: the channel's latest `limit` kept messages (default and most: the server's
    /// `channel_history_max_messages`), oldest first, as `{n, seq, ts, account, msg}`
    /// (`ts`: ms since the epoch); members only.
    pub fn history(&self, limit: JsValue) -> Promise {
        let limit = limit
            .as_f64()
            .filter(|n| *n >= 0.0)
            .map_or(u64::MAX, |n| n as u64);
        let name = self.c.name.clone();
        self.op(ReqKind::History, &JsValue::UNDEFINED, |c, now| {
            c.channel_history(&name, limit, now)
        })
    }

    /// Leave; `cb()` if given, otherwise `onChannelLeaved(0)`.
    #[wasm_bindgen(js_name = channelLeave)]
    pub fn channel_leave(&self, cb: JsValue) -> Promise {
        self.c.leave_has_cb.set(cb.is_function());
        let (id, name) = (self.c.id, self.c.name.clone());
        self.op(ReqKind::Leave, &cb, |c, now| {
            c.channel_leave(ChannelId(id), &name, now)
        })
    }

    /// Set a channel attribute.
    #[wasm_bindgen(js_name = channelSetAttr)]
    pub fn channel_set_attr(&self, name: JsValue, value: JsValue, cb: JsValue) -> Promise {
        let (ch, n, v) = (self.c.name.clone(), to_text(&name), to_text(&value));
        self.op(ReqKind::ChannelOp, &cb, |c, now| {
            c.channel_attr(&ch, Some(&n), Some(&v), now)
        })
    }

    /// Delete a channel attribute.
    #[wasm_bindgen(js_name = channelDelAttr)]
    pub fn channel_del_attr(&self, name: JsValue, cb: JsValue) -> Promise {
        let (ch, n) = (self.c.name.clone(), to_text(&name));
        self.op(ReqKind::ChannelOp, &cb, |c, now| {
            c.channel_attr(&ch, Some(&n), None, now)
        })
    }

    /// Delete every channel attribute.
    #[wasm_bindgen(js_name = channelClearAttr)]
    pub fn channel_clear_attr(&self, cb: JsValue) -> Promise {
        let ch = self.c.name.clone();
        self.op(ReqKind::ChannelOp, &cb, |c, now| {
            c.channel_attr(&ch, None, None, now)
        })
    }
}
