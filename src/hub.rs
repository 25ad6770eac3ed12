//! The state of one session shared by its JS objects: the protocol core, the Channel and Call
//! objects, and the app requests waiting for their outcome (callbacks and promises). No IO
//! here: commands wake the session's driver (`transport`) through [`Wake`], which performs
//! the core's actions and hands its events to `dispatch`.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use js_sys::{Function, Promise};
use opensig_protocol::client::{Client, Millis, State};
use opensig_protocol::small::VecMap;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::callbacks::Slots;
use crate::js::Js;
use crate::log::LogSettings;
use crate::promise::Deferred;

/// How a finished request is reported to the app.
pub(crate) enum ReqKind {
    /// `messageInstantSend` / `messageChannelSend*`: `cb(isError)` for instant messages (as
    /// 1.4.0), `cb()` for channel messages, and `onMessageSendSuccess(id)` /
    /// `onMessageSendError(id, ecode)` on the session.
    Message { instant: bool, id: JsValue },
    /// `invoke`: `cb(err, resp)`.
    Invoke,
    /// Channel attribute ops: `cb()` whatever the outcome.
    ChannelOp,
    /// `channelLeave`: `cb()` (or `onChannelLeaved(0)` without a cb).
    Leave,
    /// `queryUserStatus`: `onQueryUserStatusResult(account, status)`, resolves with status.
    UserStatus,
    /// `getAttr` / `getUserAttr`: `onUserAttrResult(account, name, value)`, resolves with value.
    UserAttr,
    /// `getAttrAll` / `getUserAttrAll`: `onUserAttrAllResult(account, json)`, resolves with
    /// the attributes as an object.
    UserAttrAll,
    /// `channelQueryUserNum`: `onChannelQueryUserNumResult(name, ecode, num)`, resolves with num.
    ChannelNum { name: String },
    /// `channelQueryUserIsIn`: `onChannelQueryUserIsIn(name, account, isIn)`, resolves with a
    /// boolean.
    ChannelIsIn,
    /// `channel.history(limit)`: resolves with the kept messages
    /// (`[{n, seq, ts, account, msg}, …]`, oldest first).
    History,
    /// `subscribePeersOnlineStatus` / `queryPeersOnlineStatus` (opensig): resolves with the
    /// states (`{account: state}`).
    PeerStatus,
    /// Promise only (`logout`, `setAttr`, `renewToken`, call replies, `call.ready`).
    Plain,
}

/// An app request waiting for its outcome.
pub(crate) struct Pending {
    pub kind: ReqKind,
    pub cb: Option<Function>,
    pub deferred: Deferred,
}

/// State of a Channel object shared by the JS wrapper and the session.
pub(crate) struct ChannelShared {
    pub id: u32,
    pub name: String,
    pub state: RefCell<&'static str>,
    pub slots: Slots,
    pub ready: Deferred,
    pub leave_has_cb: Cell<bool>,
    pub session: Weak<Hub>,
}

/// State of a Call object.
pub(crate) struct CallShared {
    pub id: u32,
    pub channel: String,
    pub peer: String,
    pub extra: JsValue,
    pub slots: Slots,
    pub ready: Deferred,
    pub session: Weak<Hub>,
}

/// What the driver of a session does when told.
pub(crate) trait Wake {
    /// Commands were given to the core: perform what follows (soon, not now).
    fn wake(&self);
    /// The session reached state 0: release sockets and timers.
    fn finished(&self);
}

pub(crate) struct HubState {
    pub core: Client<Js>,
    pub channels: VecMap<u32, Rc<ChannelShared>>,
    pub calls: VecMap<u32, Rc<CallShared>>,
    pub requests: VecMap<u32, Pending>,
}

/// One session.
pub(crate) struct Hub {
    pub st: RefCell<HubState>,
    pub slots: Slots,
    pub ready: Deferred,
    pub account: String,
    /// The uid of the last login (`session.uid`).
    pub uid: Cell<f64>,
    pub log: Rc<LogSettings>,
    /// `Date.now()` at the core's time 0.
    pub start: f64,
    me: Weak<Hub>,
    driver: RefCell<Option<Box<dyn Wake>>>,
}

impl Hub {
    pub(crate) fn new(core: Client<Js>, start: f64, log: Rc<LogSettings>) -> Rc<Hub> {
        let account = core.account().to_string();
        Rc::new_cyclic(|me| Hub {
            st: RefCell::new(HubState {
                core,
                channels: VecMap::new(),
                calls: VecMap::new(),
                requests: VecMap::new(),
            }),
            slots: Slots::new(),
            ready: Deferred::new(),
            account,
            uid: Cell::new(0.0),
            log,
            start,
            me: me.clone(),
            driver: RefCell::new(None),
        })
    }

    /// Attach the driver (once, right after creation).
    pub(crate) fn drive_with(&self, driver: Box<dyn Wake>) {
        *self.driver.borrow_mut() = Some(driver);
    }

    fn wake(&self) {
        if let Some(d) = self.driver.borrow().as_ref() {
            d.wake();
        }
    }

    /// The session is over: let go of its IO and of its JS object.
    pub(crate) fn finished(&self) {
        if let Some(d) = self.driver.borrow().as_ref() {
            d.finished();
        }
        *self.slots.this.borrow_mut() = JsValue::UNDEFINED;
    }

    /// Milliseconds on the core's clock.
    pub(crate) fn now(&self) -> Millis {
        self.at(js_sys::Date::now())
    }

    /// The core's clock at `Date.now()` = `unix_ms`.
    pub(crate) fn at(&self, unix_ms: f64) -> Millis {
        (unix_ms - self.start).max(0.0) as Millis
    }

    /// Run `f` on the core (a command), then make sure its effects are performed.
    pub(crate) fn command<R>(&self, f: impl FnOnce(&mut Client<Js>, Millis) -> R) -> R {
        let now = self.now();
        let r = f(&mut self.st.borrow_mut().core, now);
        self.wake();
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

    /// The live Channel object of core channel `id`.
    pub(crate) fn channel(&self, id: u32) -> Option<Rc<ChannelShared>> {
        self.st.borrow().channels.get(&id).cloned()
    }

    pub(crate) fn add_channel(&self, ch: Rc<ChannelShared>) {
        self.st.borrow_mut().channels.insert(ch.id, ch);
    }

    pub(crate) fn add_call(&self, call: Rc<CallShared>) {
        self.st.borrow_mut().calls.insert(call.id, call);
    }

    pub(crate) fn me(&self) -> Weak<Hub> {
        self.me.clone()
    }
}
