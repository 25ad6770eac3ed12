//! opensig presence subscriptions (RTM's `subscribePeersOnlineStatus`): the accounts this
//! session watches and their last known states. A subscribe's reply reports the states of
//! the accounts it names; `peer_status` notifications report changes; after a reconnect the
//! session subscribes again to everything it watches and reports only what changed while it
//! was away (once); a logout forgets it all (protocol §14).

use alloc::string::String;
use alloc::vec::Vec;

use super::frames::Body;
use super::requests::Kind;
use super::{Client, Event, Millis, ReqId};
use crate::json::{push_str, JsonValue};
use crate::names::call;

/// Watched accounts and their last known state (`""`: none yet), in watch order.
#[derive(Debug, Default)]
pub(super) struct Watch {
    known: Vec<(String, String)>,
}

impl Watch {
    fn find(&mut self, account: &str) -> Option<&mut String> {
        self.known
            .iter_mut()
            .find(|(a, _)| a == account)
            .map(|(_, s)| s)
    }
}

/// A presence call ([`Client::peers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeersOp {
    /// `subscribePeersOnlineStatus`.
    Subscribe,
    /// `unsubscribePeersOnlineStatus`.
    Unsubscribe,
    /// `queryPeersOnlineStatus`.
    Query,
}

/// `["a","b"]`.
fn json_list(accounts: &[String]) -> String {
    let mut out = String::from("[");
    for (i, a) in accounts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(&mut out, a);
    }
    out.push(']');
    out
}

impl<V: JsonValue> Client<V> {
    /// `subscribePeersOnlineStatus(accounts)`: watch them (the reply's `status` holds their
    /// states now, also reported by a [`Event::PeersStatus`]; every change follows);
    /// `unsubscribePeersOnlineStatus`: stop; `queryPeersOnlineStatus`: the states now.
    pub fn peers(&mut self, op: PeersOp, accounts: &[String], now: Millis) -> ReqId {
        let l = &self.cfg.limits;
        let check = accounts
            .iter()
            .try_for_each(|a| l.check_account(a).map(|_| ()));
        let (name, kind, what) = match op {
            PeersOp::Subscribe => (call::USER_SUBSCRIBE_STATUS, Kind::Watch, "subscribe"),
            PeersOp::Unsubscribe => (call::USER_UNSUBSCRIBE_STATUS, Kind::User, "unsubscribe"),
            PeersOp::Query => (call::USER_QUERY_STATUS, Kind::User, "query"),
        };
        if check.is_ok() {
            match op {
                PeersOp::Subscribe => {
                    for a in accounts {
                        if self.watch.find(a).is_none() {
                            self.watch.known.push((a.clone(), String::new()));
                        }
                    }
                }
                PeersOp::Unsubscribe => self.watch.known.retain(|(a, _)| !accounts.contains(a)),
                PeersOp::Query => {}
            }
        }
        let body = Body::new().raw("accounts", &json_list(accounts)).0;
        self.checked(check, name, body, kind, what, now)
    }

    /// After a reconnect: watch everything again (ahead of anything queued); the reply
    /// reports what changed meanwhile.
    pub(super) fn resubscribe(&mut self, now: Millis) {
        if self.watch.known.is_empty() {
            return;
        }
        let accounts: Vec<String> = self.watch.known.iter().map(|(a, _)| a.clone()).collect();
        let body = Body::new().raw("accounts", &json_list(&accounts)).0;
        let op = "subscribePeersOnlineStatus";
        self.request_front(call::USER_SUBSCRIBE_STATUS, body, Kind::Rewatch, op, now);
    }

    /// States arrived (`status`: `{account: state}`): remember those of watched accounts and
    /// report them — every one (`all`, a subscribe's reply) or those that changed.
    pub(super) fn peer_states(&mut self, status: &V, all: bool) {
        let mut text = String::from("{");
        for account in status.keys() {
            let Some(state) = status.get(&account).and_then(|s| s.as_string()) else {
                continue;
            };
            let Some(last) = self.watch.find(&account) else {
                continue; // unwatched meanwhile
            };
            if !all && *last == state {
                continue;
            }
            last.clone_from(&state);
            if text.len() > 1 {
                text.push(',');
            }
            push_str(&mut text, &account);
            text.push(':');
            push_str(&mut text, &state);
        }
        text.push('}');
        if text.len() > 2 {
            if let Some(status) = V::parse(&text) {
                self.events.push_back(Event::PeersStatus { status });
            }
        }
    }

    /// A logout: nothing is watched any more.
    pub(super) fn forget_watches(&mut self) {
        self.watch = Watch::default();
    }
}
