//! `Session`: what `signal.login()` returns.

use std::rc::Rc;

use js_sys::Promise;
use opensig_protocol::client::{ChannelId, PeersOp};
use wasm_bindgen::prelude::*;

use crate::callbacks::Slots;
use crate::channel::Channel;
use crate::hub::{CallShared, ChannelShared, Hub, ReqKind};
use crate::js::{to_json_text, to_text, to_texts};
use crate::promise::Deferred;

/// A login session.
#[wasm_bindgen]
pub struct Session {
    d: Rc<Hub>,
}

impl Session {
    pub(crate) fn wrap(d: Rc<Hub>) -> JsValue {
        let obj = JsValue::from(Session { d: d.clone() });
        *d.slots.this.borrow_mut() = obj.clone();
        obj
    }
}

/// The app's message id (`msgID` of the Android API), or one the SDK makes up.
pub(crate) fn message_id(app_id: &JsValue, req: u32) -> JsValue {
    match app_id.as_string() {
        Some(s) if !s.is_empty() => JsValue::from_str(&s),
        _ => {
            let mut s = String::from("opensig-");
            opensig_protocol::json::push_u64(&mut s, req as u64);
            JsValue::from_str(&s)
        }
    }
}

/// `(cb, msgID)` from the optional trailing arguments `cb, msgID` or `msgID` alone.
pub(crate) fn cb_and_id(cb: JsValue, id: JsValue) -> (JsValue, JsValue) {
    if cb.is_string() && id.is_undefined() {
        (JsValue::UNDEFINED, cb)
    } else {
        (cb, id)
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

    /// The uid the server gave at the last login (0 before).
    #[wasm_bindgen(getter)]
    pub fn uid(&self) -> f64 {
        self.d.uid.get()
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

    /// Send a peer-to-peer message: `cb(isError)` as in 1.4.0, and (Android)
    /// `onMessageSendSuccess(msgID)` / `onMessageSendError(msgID, ecode)`; `msgID` is the
    /// app's or one the SDK makes up. Also `messageInstantSend(peer, msg, msgID)`.
    #[wasm_bindgen(js_name = messageInstantSend)]
    pub fn message_instant_send(
        &self,
        peer: JsValue,
        msg: JsValue,
        cb: JsValue,
        msg_id: JsValue,
    ) -> Promise {
        let (cb, msg_id) = cb_and_id(cb, msg_id);
        let (peer, msg) = (to_text(&peer), to_text(&msg));
        let req = self
            .d
            .command(|c, now| c.message_instant_send(&peer, &msg, now));
        let id = message_id(&msg_id, req.0);
        let kind = ReqKind::Message { instant: true, id };
        self.d.track(req.0, kind, &cb)
    }

    /// `invoke("io.agora.signal.<function>", args, cb(err, resp))`.
    pub fn invoke(&self, func: JsValue, args: JsValue, cb: JsValue) -> Promise {
        let func = to_text(&func);
        let args = to_json_text(&args, "{}");
        let req = self.d.command(|c, now| c.invoke(&func, &args, now));
        self.d.track(req.0, ReqKind::Invoke, &cb)
    }

    /// Whether `account` is online: `onQueryUserStatusResult(account, status)` (1 online,
    /// 0 offline); the promise resolves with the status.
    #[wasm_bindgen(js_name = queryUserStatus)]
    pub fn query_user_status(&self, account: JsValue) -> Promise {
        let account = to_text(&account);
        let req = self.d.command(|c, now| c.query_user_status(&account, now));
        self.d
            .track(req.0, ReqKind::UserStatus, &JsValue::UNDEFINED)
    }

    /// Set one of this user's attributes (`_conn_timeout` is built in; an empty value
    /// deletes).
    #[wasm_bindgen(js_name = setAttr)]
    pub fn set_attr(&self, name: JsValue, value: JsValue) -> Promise {
        let (name, value) = (to_text(&name), to_text(&value));
        let req = self.d.command(|c, now| c.set_attr(&name, &value, now));
        self.d.track(req.0, ReqKind::Plain, &JsValue::UNDEFINED)
    }

    /// One of this user's attributes: `onUserAttrResult(account, name, value)`.
    #[wasm_bindgen(js_name = getAttr)]
    pub fn get_attr(&self, name: JsValue) -> Promise {
        let name = to_text(&name);
        let req = self.d.command(|c, now| c.get_user_attr(None, &name, now));
        self.d.track(req.0, ReqKind::UserAttr, &JsValue::UNDEFINED)
    }

    /// All of this user's attributes: `onUserAttrAllResult(account, json)`.
    #[wasm_bindgen(js_name = getAttrAll)]
    pub fn get_attr_all(&self) -> Promise {
        let req = self.d.command(|c, now| c.get_user_attr_all(None, now));
        self.d
            .track(req.0, ReqKind::UserAttrAll, &JsValue::UNDEFINED)
    }

    /// One attribute of `account`: `onUserAttrResult(account, name, value)`.
    #[wasm_bindgen(js_name = getUserAttr)]
    pub fn get_user_attr(&self, account: JsValue, name: JsValue) -> Promise {
        let (account, name) = (to_text(&account), to_text(&name));
        let req = self
            .d
            .command(|c, now| c.get_user_attr(Some(&account), &name, now));
        self.d.track(req.0, ReqKind::UserAttr, &JsValue::UNDEFINED)
    }

    /// All attributes of `account`: `onUserAttrAllResult(account, json)`.
    #[wasm_bindgen(js_name = getUserAttrAll)]
    pub fn get_user_attr_all(&self, account: JsValue) -> Promise {
        let account = to_text(&account);
        let req = self
            .d
            .command(|c, now| c.get_user_attr_all(Some(&account), now));
        self.d
            .track(req.0, ReqKind::UserAttrAll, &JsValue::UNDEFINED)
    }

    /// Members of a channel: `onChannelQueryUserNumResult(name, ecode, num)`.
    #[wasm_bindgen(js_name = channelQueryUserNum)]
    pub fn channel_query_user_num(&self, name: JsValue) -> Promise {
        let name = to_text(&name);
        let req = self
            .d
            .command(|c, now| c.channel_query_user_num(&name, now));
        self.d
            .track(req.0, ReqKind::ChannelNum { name }, &JsValue::UNDEFINED)
    }

    /// Whether `account` is in a channel: `onChannelQueryUserIsIn(name, account, isIn)`.
    #[wasm_bindgen(js_name = channelQueryUserIsIn)]
    pub fn channel_query_user_is_in(&self, name: JsValue, account: JsValue) -> Promise {
        let (name, account) = (to_text(&name), to_text(&account));
        let req = self
            .d
            .command(|c, now| c.channel_query_user_is_in(&name, &account, now));
        self.d
            .track(req.0, ReqKind::ChannelIsIn, &JsValue::UNDEFINED)
    }

    /// Send a channel message without joining (Android's `messageChannelSendForce`).
    #[wasm_bindgen(js_name = messageChannelSendForce)]
    pub fn message_channel_send_force(
        &self,
        name: JsValue,
        msg: JsValue,
        cb: JsValue,
        msg_id: JsValue,
    ) -> Promise {
        let (cb, msg_id) = cb_and_id(cb, msg_id);
        let (name, msg) = (to_text(&name), to_text(&msg));
        let req = self
            .d
            .command(|c, now| c.channel_send(&name, &msg, true, now));
        let id = message_id(&msg_id, req.0);
        let kind = ReqKind::Message { instant: false, id };
        self.d.track(req.0, kind, &cb)
    }

    /// opensig (RTM's `subscribePeersOnlineStatus`): watch these accounts' presence.
    /// `onPeersOnlineStatusChanged({account: state})` fires with their states now, then with
    /// every change (`ONLINE`, `UNREACHABLE`, `OFFLINE`); the promise resolves with the
    /// states now. Kept across reconnects (changes missed meanwhile come once it is back),
    /// forgotten at logout.
    #[wasm_bindgen(js_name = subscribePeersOnlineStatus)]
    pub fn subscribe_peers_online_status(&self, accounts: JsValue) -> Promise {
        self.peers(PeersOp::Subscribe, &accounts)
    }

    /// opensig: stop watching these accounts.
    #[wasm_bindgen(js_name = unsubscribePeersOnlineStatus)]
    pub fn unsubscribe_peers_online_status(&self, accounts: JsValue) -> Promise {
        self.peers(PeersOp::Unsubscribe, &accounts)
    }

    /// opensig: these accounts' states now (`{account: state}`), without watching them.
    #[wasm_bindgen(js_name = queryPeersOnlineStatus)]
    pub fn query_peers_online_status(&self, accounts: JsValue) -> Promise {
        self.peers(PeersOp::Query, &accounts)
    }

    /// Use `token` for every later (re)login; `onTokenWillExpire()` fires 30 s before the
    /// expiry of the token in use. The promise rejects (and the previous token stays) when
    /// the token is not this app's and account's, or has expired.
    #[wasm_bindgen(js_name = renewToken)]
    pub fn renew_token(&self, token: JsValue) -> Promise {
        let token = to_text(&token);
        let req = self.d.command(|c, now| c.renew_token(&token, now));
        self.d.track(req.0, ReqKind::Plain, &JsValue::UNDEFINED)
    }

    /// Join a channel; returns the Channel at once. A channel this session has joined or is
    /// joining is that same Channel (joining in every `onLoginSuccess` is safe).
    #[wasm_bindgen(js_name = channelJoin)]
    pub fn channel_join(&self, name: JsValue) -> JsValue {
        let name = to_text(&name);
        let ch: ChannelId = self.d.command(|c, now| c.channel_join(&name, now));
        if let Some(existing) = self.d.channel(ch.0) {
            let obj = existing.slots.this.borrow().clone();
            if obj.is_object() {
                return obj;
            }
        }
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

impl Session {
    /// The three presence calls, one path (the SDK's size: one copy of it).
    #[inline(never)]
    fn peers(&self, op: PeersOp, accounts: &JsValue) -> Promise {
        let accounts = to_texts(accounts);
        let req = self.d.command(|c, now| c.peers(op, &accounts, now));
        let kind = match op {
            PeersOp::Unsubscribe => ReqKind::Plain,
            _ => ReqKind::PeerStatus,
        };
        self.d.track(req.0, kind, &JsValue::UNDEFINED)
    }
}
