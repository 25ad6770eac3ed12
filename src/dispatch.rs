//! The core's events become JS callbacks (read from the objects' properties at the moment
//! they fire) and settled promises.

use std::rc::Rc;

use js_sys::Function;
use opensig_protocol::client::{CallEvent, Event, Failure};
use opensig_protocol::json::JsonValue;
use opensig_protocol::names::msgtype;
use wasm_bindgen::prelude::*;

use crate::callbacks::Slots;
use crate::hub::{CallShared, ChannelShared, Hub, ReqKind};
use crate::js::{json_parse, Js};
use crate::log::Level;
use crate::promise::Deferred;

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
    pub const TOKEN_WILL_EXPIRE: &str = "onTokenWillExpire";
    pub const MESSAGE_SEND_SUCCESS: &str = "onMessageSendSuccess";
    pub const MESSAGE_SEND_ERROR: &str = "onMessageSendError";
    pub const QUERY_USER_STATUS_RESULT: &str = "onQueryUserStatusResult";
    pub const USER_ATTR_RESULT: &str = "onUserAttrResult";
    pub const USER_ATTR_ALL_RESULT: &str = "onUserAttrAllResult";
    pub const CHANNEL_QUERY_USER_NUM_RESULT: &str = "onChannelQueryUserNumResult";
    pub const CHANNEL_QUERY_USER_IS_IN: &str = "onChannelQueryUserIsIn";
    pub const PEERS_ONLINE_STATUS_CHANGED: &str = "onPeersOnlineStatusChanged";
}

/// Channel callback properties.
mod ccb {
    pub const JOINED: &str = "onChannelJoined";
    pub const JOIN_FAILED: &str = "onChannelJoinFailed";
    pub const LEAVED: &str = "onChannelLeaved";
    pub const USER_JOINED: &str = "onChannelUserJoined";
    pub const USER_LEAVED: &str = "onChannelUserLeaved";
    pub const USER_LIST: &str = "onChannelUserList";
    pub const ATTR_UPDATED: &str = "onChannelAttrUpdated";
    pub const MESSAGE: &str = "onMessageChannelReceive";
    pub const MESSAGES_LOST: &str = "onMessageChannelLost";
}

/// The callback of each channel event type, in `msgtype::CHANNEL_EVENTS` order, and how
/// many of the event's members it gets (the JS reader calls them too).
pub(crate) const CHANNEL_CALLBACKS: [(&str, u32); 4] = [
    (ccb::MESSAGE, 3),
    (ccb::USER_JOINED, 2),
    (ccb::USER_LEAVED, 2),
    (ccb::ATTR_UPDATED, 3),
];

/// The callback of channel event type `kind` (found when compiling).
const fn channel_cb(kind: &str) -> &'static str {
    let mut i = 0;
    while i < msgtype::CHANNEL_EVENTS.len() {
        let k = msgtype::CHANNEL_EVENTS[i].0.as_bytes();
        let (a, mut j) = (kind.as_bytes(), 0);
        while j < a.len() && j < k.len() && a[j] == k[j] {
            j += 1;
        }
        if j == a.len() && j == k.len() {
            return CHANNEL_CALLBACKS[i].0;
        }
        i += 1;
    }
    panic!("not a channel event type")
}
const CB_MESSAGE: &str = channel_cb(msgtype::CHANNEL_MSG);
const CB_USER_JOINED: &str = channel_cb(msgtype::CHANNEL_USER_JOIN);
const CB_USER_LEFT: &str = channel_cb(msgtype::CHANNEL_USER_LEAVE);
const CB_ATTR: &str = channel_cb(msgtype::CHANNEL_ATTR_UPDATE);

/// Call callback properties.
mod kcb {
    pub const RECEIVED_BY_PEER: &str = "onInviteReceivedByPeer";
    pub const ACCEPTED_BY_PEER: &str = "onInviteAcceptedByPeer";
    pub const REFUSED_BY_PEER: &str = "onInviteRefusedByPeer";
    pub const FAILED: &str = "onInviteFailed";
    pub const END_BY_PEER: &str = "onInviteEndByPeer";
    pub const END_BY_MYSELF: &str = "onInviteEndByMyself";
    pub const MSG: &str = "onInviteMsg";
}

/// Hand one event of the core to the app.
pub(crate) fn event(hub: &Hub, e: Event<Js>) {
    match e {
        Event::LoginSuccess { uid } => {
            hub.log.print(Level::Info, "logged in as", &hub.account);
            hub.uid.set(uid.as_f64().unwrap_or(0.0));
            hub.slots
                .fire(scb::LOGIN_SUCCESS, std::slice::from_ref(&uid.0));
            hub.ready.resolve(&uid.0);
        }
        Event::LoginFailed { code } => {
            hub.log.print(Level::Warning, "login failed", code.name());
            hub.slots.fire(scb::LOGIN_FAILED, &[code.value().into()]);
            hub.ready.reject(code.value(), code.name(), None);
            hub.finished();
        }
        Event::Logout { code } => {
            hub.log.print(Level::Info, "logged out", code.name());
            hub.slots.fire(scb::LOGOUT, &[code.value().into()]);
            hub.ready.reject(code.value(), code.name(), None);
            hub.finished();
        }
        Event::Reconnecting { attempt } => {
            if hub.log.enabled(Level::Info) {
                let mut n = String::new();
                opensig_protocol::json::push_u64(&mut n, attempt as u64);
                hub.log.print(Level::Info, "reconnecting, attempt", &n);
            }
            hub.slots.fire(scb::RECONNECTING, &[attempt.into()]);
        }
        Event::Reconnected => hub.slots.fire(scb::RECONNECTED, &[]),
        Event::PeersStatus { status } => hub
            .slots
            .fire(scb::PEERS_ONLINE_STATUS_CHANGED, &[status.0]),
        Event::TokenWillExpire => {
            hub.log.print(Level::Info, "the token expires soon", "");
            hub.slots.fire(scb::TOKEN_WILL_EXPIRE, &[]);
        }
        Event::Error { name, code, desc } => {
            hub.log.print(Level::Warning, name, &desc);
            hub.slots
                .fire(scb::ERROR, &[name.into(), code.value().into(), desc.into()]);
        }
        Event::MessageInstant { account, msg } => hub
            .slots
            .fire(scb::MESSAGE_INSTANT, &[account.0, 0.into(), msg.0]),
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
                session: hub.me(),
            });
            let obj = crate::call::Call::wrap(shared.clone());
            hub.add_call(shared);
            hub.slots.fire(scb::INVITE_RECEIVED, &[obj]);
        }
        Event::Call {
            call,
            what,
            extra,
            code,
        } => {
            let shared = hub.st.borrow().calls.get(&call.0).cloned();
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
                hub.st.borrow_mut().calls.remove(&call.0);
                *c.slots.this.borrow_mut() = JsValue::UNDEFINED;
            }
        }
        Event::ChannelJoined { ch } => on_channel(hub, ch.0, |c| {
            *c.state.borrow_mut() = "joined";
            c.slots.fire(ccb::JOINED, &[]);
            c.ready.resolve(&JsValue::UNDEFINED);
        }),
        Event::ChannelJoinFailed { ch, err } => {
            on_channel(hub, ch.0, |c| {
                c.slots.fire(ccb::JOIN_FAILED, &[JsValue::from_str(&err)]);
                let code = opensig_protocol::codes::call_error_code(&err);
                c.ready.reject(code.value(), &err, None);
            });
            drop_channel(hub, ch.0);
        }
        Event::ChannelLeft { ch, code } => {
            on_channel(hub, ch.0, |c| {
                *c.state.borrow_mut() = "leaved";
                if !(code == 0 && c.leave_has_cb.get()) {
                    c.slots.fire(ccb::LEAVED, &[code.into()]);
                }
            });
            drop_channel(hub, ch.0);
        }
        Event::ChannelUserList { ch, list } => {
            on_channel(hub, ch.0, |c| c.slots.fire(ccb::USER_LIST, &[list.0]))
        }
        Event::ChannelUserJoined { ch, account, uid } => on_channel(hub, ch.0, |c| {
            c.slots.fire(CB_USER_JOINED, &[account.0, uid.0])
        }),
        Event::ChannelUserLeft { ch, account, uid } => on_channel(hub, ch.0, |c| {
            c.slots.fire(CB_USER_LEFT, &[account.0, uid.0])
        }),
        Event::ChannelAttr {
            ch,
            name,
            value,
            kind,
        } => on_channel(hub, ch.0, |c| {
            c.slots.fire(CB_ATTR, &[name.0, value.0, kind.0])
        }),
        Event::ChannelMessage {
            ch,
            account,
            uid,
            msg,
        } => on_channel(hub, ch.0, |c| {
            c.slots.fire(CB_MESSAGE, &[account.0, uid.0, msg.0])
        }),
        Event::ChannelMessagesLost { ch, count } => on_channel(hub, ch.0, |c| {
            c.slots.fire(ccb::MESSAGES_LOST, &[(count as f64).into()])
        }),
        Event::Done { req, result } => done(hub, req.0, result),
        Event::Log { text } => hub.log.print(Level::Debug, "", &text),
    }
}

fn on_channel(hub: &Hub, id: u32, f: impl FnOnce(&ChannelShared)) {
    if let Some(c) = hub.channel(id) {
        f(&c);
    }
}

fn drop_channel(hub: &Hub, id: u32) {
    if let Some(c) = hub.st.borrow_mut().channels.remove(&id) {
        *c.slots.this.borrow_mut() = JsValue::UNDEFINED;
    }
}

/// A field of a reply body, or `undefined`.
fn field(body: &Js, key: &str) -> JsValue {
    body.get(key).map_or(JsValue::UNDEFINED, |v| v.0)
}

fn call_cb(cb: Option<&Function>, args: &[JsValue]) {
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
}

/// A request finished: its callbacks, then its promise.
fn done(hub: &Hub, req: u32, result: Result<Js, Failure<Js>>) {
    let Some(p) = hub.st.borrow_mut().requests.remove(&req) else {
        return;
    };
    let cb = p.cb.as_ref();
    let code = |r: &Result<Js, Failure<Js>>| r.as_ref().err().map_or(0, |f| f.code.value());
    // what the promise resolves with (the reply body unless said otherwise)
    let mut value: Option<JsValue> = None;
    match (&p.kind, &result) {
        (ReqKind::Message { instant, id }, _) => {
            if *instant {
                call_cb(cb, &[result.is_err().into()]);
            } else {
                call_cb(cb, &[]);
            }
            match &result {
                Ok(_) => hub
                    .slots
                    .fire(scb::MESSAGE_SEND_SUCCESS, std::slice::from_ref(id)),
                Err(f) => hub.slots.fire(
                    scb::MESSAGE_SEND_ERROR,
                    &[id.clone(), f.code.value().into()],
                ),
            }
        }
        (ReqKind::Invoke, Ok(body)) => call_cb(cb, &["".into(), body.0.clone()]),
        (ReqKind::Invoke, Err(f)) => {
            let raw = f
                .raw
                .as_ref()
                .map_or(JsValue::from_str(""), |r| r.0.clone());
            call_cb(cb, &[JsValue::from_str(&f.err), raw]);
        }
        (ReqKind::ChannelOp | ReqKind::Leave, _) => call_cb(cb, &[]),
        (ReqKind::UserStatus, Ok(body)) => {
            let status = field(body, "status");
            let args = [field(body, "account"), status.clone()];
            hub.slots.fire(scb::QUERY_USER_STATUS_RESULT, &args);
            value = Some(status);
        }
        (ReqKind::UserAttr, Ok(body)) => {
            let v = field(body, "value");
            let args = [field(body, "account"), field(body, "name"), v.clone()];
            hub.slots.fire(scb::USER_ATTR_RESULT, &args);
            value = Some(v);
        }
        (ReqKind::UserAttrAll, Ok(body)) => {
            let json = field(body, "json");
            let args = [field(body, "account"), json.clone()];
            hub.slots.fire(scb::USER_ATTR_ALL_RESULT, &args);
            value = Some(json_parse(&json).unwrap_or_else(|_| js_sys::Object::new().into()));
        }
        (ReqKind::ChannelNum { name }, _) => {
            let num = result
                .as_ref()
                .map_or(JsValue::from(0), |b| field(b, "num"));
            let args = [name.into(), code(&result).into(), num.clone()];
            hub.slots.fire(scb::CHANNEL_QUERY_USER_NUM_RESULT, &args);
            value = Some(num);
        }
        (ReqKind::History, Ok(body)) => value = Some(field(body, "msgs")),
        (ReqKind::PeerStatus, Ok(body)) => value = Some(field(body, "status")),
        (ReqKind::ChannelIsIn, Ok(body)) => {
            let isin = field(body, "isin");
            let args = [field(body, "name"), field(body, "account"), isin.clone()];
            hub.slots.fire(scb::CHANNEL_QUERY_USER_IS_IN, &args);
            value = Some(JsValue::from_bool(isin.as_f64() == Some(1.0)));
        }
        _ => {}
    }
    match result {
        Ok(v) => p.deferred.resolve(value.as_ref().unwrap_or(&v.0)),
        Err(f) => p
            .deferred
            .reject(f.code.value(), &f.err, f.raw.as_ref().map(|r| &r.0)),
    }
}
