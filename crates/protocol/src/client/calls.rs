//! Invitations: outgoing (`channelInviteUser2`) and incoming (`voip_invite`) Calls, keyed by
//! (channel, peer), and the call-signalling messages between them.

use alloc::string::{String, ToString};

use super::{
    frames::Body, requests::Kind, CallEvent, CallId, Client, Event, Failure, Millis, ReqId,
};
use crate::json::{push_str, JsonValue};
use crate::limits::Limits;
use crate::names::{call, msgtype};

impl<V: JsonValue> Client<V> {
    pub(super) fn on_voip(
        &mut self,
        kind: &str,
        channel: String,
        peer: String,
        extra: V,
        code: Option<u32>,
        now: Millis,
    ) {
        let key = (channel, peer);
        if kind == call::VOIP_INVITE {
            let call = self.new_id();
            self.calls.insert(key.clone(), call);
            let body = Body::new()
                .s("channelName", &key.0)
                .s("peer", &key.1)
                .s("extra", "")
                .0;
            self.request(call::VOIP_INVITE_ACK, body, Kind::Silent, "invite", now);
            self.events.push_back(Event::InviteReceived {
                call: CallId(call),
                channel: key.0,
                peer: key.1,
                extra,
            });
            return;
        }
        let Some(&call) = self.calls.get(&key) else {
            return;
        };
        let (what, ends) = match kind {
            call::VOIP_INVITE_ACK => (CallEvent::ReceivedByPeer, false),
            call::VOIP_INVITE_ACCEPT => (CallEvent::AcceptedByPeer, false),
            call::VOIP_INVITE_REFUSE => (CallEvent::RefusedByPeer, true),
            msgtype::VOIP_INVITE_FAILED => (CallEvent::Failed, true),
            call::VOIP_INVITE_BYE => (CallEvent::EndByPeer, true),
            call::VOIP_INVITE_MSG => (CallEvent::Msg, false),
            _ => return,
        };
        if ends {
            self.calls.remove(&key);
        }
        self.events.push_back(Event::Call {
            call: CallId(call),
            what,
            extra,
            code,
        });
    }

    /// The server refused the invitation request itself.
    pub(super) fn invite_refused(&mut self, call: u32, f: &Failure<V>) {
        self.events.push_back(Event::Call {
            call: CallId(call),
            what: CallEvent::Failed,
            extra: V::from_string(&f.err),
            code: Some(f.code.value()),
        });
        self.calls.retain(|_, v| *v != call);
    }

    /// `channelInviteUser2(channel, peer, extra)`; `extra_json` is the JSON text of the app's
    /// value (a JSON string literal for string extras).
    pub fn invite(
        &mut self,
        channel: &str,
        peer: &str,
        extra_json: &str,
        now: Millis,
    ) -> (CallId, ReqId) {
        let call = self.new_id();
        let l = &self.cfg.limits;
        let check = l
            .check_channel(channel)
            .and_then(|_| l.check_account(peer))
            .and_then(|_| Limits::check_len(extra_json.len(), l.invite_extra_max_bytes + 2));
        if check.is_ok() {
            self.calls.insert((channel.into(), peer.into()), call);
        }
        let id = self.unique_id();
        let body = Body::new()
            .s("channelName", channel)
            .s("peer", peer)
            .raw("extra", extra_json)
            .s("messageID", &id)
            .0;
        let req = self.checked(
            check,
            call::VOIP_INVITE,
            body,
            Kind::Invite { call },
            "channelInviteUser2",
            now,
        );
        (CallId(call), req)
    }

    /// `call.channelInviteAccept/Refuse/DTMF/End`: relay `name` about the call (channel, peer).
    /// `extra_json` is JSON text. `channelInviteEnd` also fires `onInviteEndByMyself("")`.
    pub fn call_reply(
        &mut self,
        call: CallId,
        name: &'static str,
        channel: &str,
        peer: &str,
        extra_json: &str,
        now: Millis,
    ) -> ReqId {
        let op = match name {
            call::VOIP_INVITE_ACCEPT => "channelInviteAccept",
            call::VOIP_INVITE_REFUSE => "channelInviteRefuse",
            call::VOIP_INVITE_MSG => "channelInviteDTMF",
            _ => "channelInviteEnd",
        };
        let check = Limits::check_len(extra_json.len(), self.cfg.limits.invite_extra_max_bytes + 2);
        let id = self.unique_id();
        let body = Body::new()
            .s("channelName", channel)
            .s("peer", peer)
            .raw("extra", extra_json)
            .s("messageID", &id)
            .0;
        let req = self.checked(check, name, body, Kind::User, op, now);
        let key = (channel.to_string(), peer.to_string());
        if matches!(name, call::VOIP_INVITE_REFUSE | call::VOIP_INVITE_BYE)
            && self.calls.get(&key) == Some(&call.0)
        {
            self.calls.remove(&key);
        }
        if name == call::VOIP_INVITE_BYE {
            self.events.push_back(Event::Call {
                call,
                what: CallEvent::EndByMyself,
                extra: V::from_string(""),
                code: None,
            });
        }
        req
    }

    /// `call.channelInviteDTMF(dtmf)`: `extra` is the JSON text
    /// `{"msgtype":"dtmf","msgdata":"<dtmf>"}`, sent as a string.
    pub fn call_dtmf(
        &mut self,
        call: CallId,
        channel: &str,
        peer: &str,
        dtmf: &str,
        now: Millis,
    ) -> ReqId {
        let mut inner = String::from("{\"msgtype\":\"dtmf\",\"msgdata\":");
        push_str(&mut inner, dtmf);
        inner.push('}');
        let mut extra = String::new();
        push_str(&mut extra, &inner);
        self.call_reply(call, call::VOIP_INVITE_MSG, channel, peer, &extra, now)
    }
}
