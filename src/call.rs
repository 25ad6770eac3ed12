//! `Call`: an invitation, outgoing (`channelInviteUser2`) or incoming (`onInviteReceived`).

use std::rc::Rc;

use js_sys::Promise;
use opensig_protocol::client::CallId;
use opensig_protocol::names::call as name;
use wasm_bindgen::prelude::*;

use crate::hub::{CallShared, ReqKind};
use crate::js::{to_json_text, to_text};
use crate::promise::rejected;

/// An invitation to a channel.
#[wasm_bindgen]
pub struct Call {
    c: Rc<CallShared>,
}

impl Call {
    pub(crate) fn wrap(c: Rc<CallShared>) -> JsValue {
        let obj = JsValue::from(Call { c: c.clone() });
        *c.slots.this.borrow_mut() = obj.clone();
        obj
    }

    fn reply(&self, which: &'static str, extra: &JsValue) -> Promise {
        let Some(d) = self.c.session.upgrade() else {
            return rejected(1003, "session_ended");
        };
        let (id, ch, peer) = (
            CallId(self.c.id),
            self.c.channel.clone(),
            self.c.peer.clone(),
        );
        let req = if which == name::VOIP_INVITE_MSG {
            let dtmf = to_text(extra);
            d.command(|c, now| c.call_dtmf(id, &ch, &peer, &dtmf, now))
        } else {
            let extra = to_json_text(extra, "\"\"");
            d.command(|c, now| c.call_reply(id, which, &ch, &peer, &extra, now))
        };
        d.track(req.0, ReqKind::Plain, &JsValue::UNDEFINED)
    }
}

#[wasm_bindgen]
impl Call {
    /// The channel the invitation is about.
    #[wasm_bindgen(getter = channelName)]
    pub fn channel_name(&self) -> String {
        self.c.channel.clone()
    }

    /// The other party.
    #[wasm_bindgen(getter)]
    pub fn peer(&self) -> String {
        self.c.peer.clone()
    }

    /// `extra` as given by the inviter.
    #[wasm_bindgen(getter)]
    pub fn extra(&self) -> JsValue {
        self.c.extra.clone()
    }

    /// For an outgoing call: resolves when the server took the invitation.
    #[wasm_bindgen(getter)]
    pub fn ready(&self) -> Promise {
        self.c.ready.promise.clone()
    }

    /// Accept (the inviter gets `onInviteAcceptedByPeer(extra)`).
    #[wasm_bindgen(js_name = channelInviteAccept)]
    pub fn channel_invite_accept(&self, extra: JsValue) -> Promise {
        self.reply(name::VOIP_INVITE_ACCEPT, &extra)
    }

    /// Refuse (the inviter gets `onInviteRefusedByPeer(extra)`).
    #[wasm_bindgen(js_name = channelInviteRefuse)]
    pub fn channel_invite_refuse(&self, extra: JsValue) -> Promise {
        self.reply(name::VOIP_INVITE_REFUSE, &extra)
    }

    /// Send DTMF tones (the peer gets `onInviteMsg('{"msgtype":"dtmf","msgdata":…}')`).
    #[wasm_bindgen(js_name = channelInviteDTMF)]
    pub fn channel_invite_dtmf(&self, dtmf: JsValue) -> Promise {
        self.reply(name::VOIP_INVITE_MSG, &dtmf)
    }

    /// End the call (fires `onInviteEndByMyself("")` here, `onInviteEndByPeer` there).
    #[wasm_bindgen(js_name = channelInviteEnd)]
    pub fn channel_invite_end(&self, extra: JsValue) -> Promise {
        self.reply(name::VOIP_INVITE_BYE, &extra)
    }
}
