//! App commands that are plain requests (peer messages, `invoke`, and the Android/iOS query
//! and attribute methods), and token renewal with its expiry warning.

use alloc::string::String;

use super::{frames::Body, requests::Kind, Client, Event, Millis, ReqId, State};
use crate::codes::ErrorKind;
use crate::json::JsonValue;
use crate::limits::Limits;
use crate::names::{call, fixed, msgtype};
use crate::token;

/// When to warn that the token in use is about to expire.
#[derive(Debug, Default)]
pub(super) struct TokenClock {
    warn_at: Option<Millis>,
}

impl TokenClock {
    pub(super) fn deadline(&self) -> Option<Millis> {
        self.warn_at
    }

    pub(super) fn stop(&mut self) {
        self.warn_at = None;
    }
}

impl<V: JsonValue> Client<V> {
    /// `messageInstantSend(peer, msg)`.
    pub fn message_instant_send(&mut self, peer: &str, text: &str, now: Millis) -> ReqId {
        let l = &self.cfg.limits;
        let check = l
            .check_account(peer)
            .and_then(|_| Limits::check_len(text.len(), l.p2p_message_max_bytes));
        let body = Body::new()
            .s("peer", peer)
            .s("flag", fixed::DEFAULT_MSG_FLAG)
            .s("t", msgtype::INSTANT)
            .s("content", text)
            .s("messageID", &self.unique_id())
            .0;
        self.checked(
            check,
            call::USER_SENDMSG,
            body,
            Kind::User,
            "messageInstantSend",
            now,
        )
    }

    /// `invoke(func, args)`; `args_json` is the JSON text of the app's args object.
    pub fn invoke(&mut self, func: &str, args_json: &str, now: Millis) -> ReqId {
        let name = func
            .strip_prefix(call::INVOKE_PREFIX)
            .map(|rest| rest.split('.').next().unwrap_or(""))
            .filter(|n| !n.is_empty());
        let trimmed = args_json.trim();
        let inner = trimmed
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .map(str::trim);
        match (name, inner) {
            (None, _) => self.failed_now(ErrorKind::InvalidFunction, "invoke"),
            (Some(_), None) => self.failed_now(ErrorKind::InvalidArgs, "invoke"),
            (Some(n), Some(inner)) => {
                let check = Limits::check_len(args_json.len(), self.cfg.limits.max_frame_bytes / 2);
                self.checked(check, n, inner.into(), Kind::User, "invoke", now)
            }
        }
    }

    /// `queryUserStatus(account)`: the reply's `status` is 1 online, 0 offline.
    pub fn query_user_status(&mut self, account: &str, now: Millis) -> ReqId {
        let check = self.cfg.limits.check_account(account);
        let body = Body::new().s("account", account).0;
        let name = call::USER_QUERY_USER_STATUS;
        self.checked(check, name, body, Kind::User, "queryUserStatus", now)
    }

    /// `setAttr(name, value)`: one of this user's attributes (an empty value deletes it).
    pub fn set_attr(&mut self, name: &str, value: &str, now: Millis) -> ReqId {
        let l = &self.cfg.limits;
        let check = l
            .check_attr_name(name)
            .and_then(|_| Limits::check_len(value.len(), l.attr_value_max_bytes));
        let body = Body::new().s("name", name).s("value", value).0;
        self.checked(check, call::USER_SET_ATTR, body, Kind::User, "setAttr", now)
    }

    /// `getUserAttr(account, name)` (and `getAttr(name)` for this user): the reply has
    /// `account`, `name` and `value`.
    pub fn get_user_attr(&mut self, account: Option<&str>, name: &str, now: Millis) -> ReqId {
        let op = if account.is_some() {
            "getUserAttr"
        } else {
            "getAttr"
        };
        let account = account.map_or_else(|| self.cfg.account.clone(), String::from);
        let l = &self.cfg.limits;
        let check = l
            .check_account(&account)
            .and_then(|_| l.check_attr_name(name));
        let body = Body::new().s("account", &account).s("name", name).0;
        self.checked(check, call::USER_GET_ATTR, body, Kind::User, op, now)
    }

    /// `getUserAttrAll(account)` (and `getAttrAll()` for this user): the reply's `json` is
    /// the JSON text of every attribute.
    pub fn get_user_attr_all(&mut self, account: Option<&str>, now: Millis) -> ReqId {
        let op = if account.is_some() {
            "getUserAttrAll"
        } else {
            "getAttrAll"
        };
        let account = account.map_or_else(|| self.cfg.account.clone(), String::from);
        let check = self.cfg.limits.check_account(&account);
        let body = Body::new().s("account", &account).0;
        self.checked(check, call::USER_GET_ATTR_ALL, body, Kind::User, op, now)
    }

    /// `channelQueryUserNum(channel)`: the reply's `num`.
    pub fn channel_query_user_num(&mut self, channel: &str, now: Millis) -> ReqId {
        let check = self.cfg.limits.check_channel(channel);
        let body = Body::new().s("name", channel).0;
        let op = "channelQueryUserNum";
        self.checked(check, call::CHANNEL_QUERY_NUM, body, Kind::User, op, now)
    }

    /// `channelQueryUserIsIn(channel, account)`: the reply's `isin` is 1 or 0.
    pub fn channel_query_user_is_in(&mut self, channel: &str, account: &str, now: Millis) -> ReqId {
        let l = &self.cfg.limits;
        let check = l
            .check_channel(channel)
            .and_then(|_| l.check_account(account));
        let body = Body::new().s("name", channel).s("account", account).0;
        let op = "channelQueryUserIsIn";
        self.checked(
            check,
            call::CHANNEL_QUERY_USER_ISIN,
            body,
            Kind::User,
            op,
            now,
        )
    }

    // ---------------------------------------------------------------- tokens

    /// `renewToken(token)`: use `token` for every later (re)login. A SignalingToken must be
    /// for this app and not expired (checked here); the server then checks it is this
    /// account's (`user_renew_token`, sent now or after the login in progress). Refused, the
    /// previous token stays in use.
    pub fn renew_token(&mut self, token: &str, now: Millis) -> ReqId {
        if self.state == State::LoggedOut {
            return self.failed_now(ErrorKind::NotLoggedIn, "renewToken");
        }
        if let Some(f) = token::fields(token) {
            if f.app_id != self.cfg.app_id {
                return self.failed_now(ErrorKind::TokenInvalid, "renewToken");
            }
            if self
                .unix_ms(now)
                .is_some_and(|t| f.expiry != 0 && f.expiry * 1000 <= t)
            {
                return self.failed_now(ErrorKind::TokenExpired, "renewToken");
            }
        }
        let previous = core::mem::replace(&mut self.cfg.token, token.into());
        self.token_changed(now);
        let body = Body::new().s("token", token).0;
        let kind = Kind::RenewToken {
            previous,
            renewed: token.into(),
        };
        self.request(call::USER_RENEW_TOKEN, body, kind, "renewToken", now)
    }

    /// The server refused `renewed`: go back to `previous` unless another token came since.
    pub(super) fn token_refused(&mut self, previous: String, renewed: &str, now: Millis) {
        if self.cfg.token == renewed {
            self.cfg.token = previous;
            self.token_changed(now);
        }
    }

    fn unix_ms(&self, now: Millis) -> Option<u64> {
        (self.cfg.unix_ms_at_zero != 0).then_some(self.cfg.unix_ms_at_zero + now)
    }

    /// Arm the expiry warning for the token in use (none for tokens that never expire, or
    /// when the driver did not say what time it is).
    pub(super) fn token_changed(&mut self, now: Millis) {
        let warn = self.cfg.limits.token_expiry_warning_ms;
        self.token.warn_at = token::fields(&self.cfg.token)
            .filter(|f| f.expiry != 0 && self.cfg.unix_ms_at_zero != 0)
            .map(|f| {
                let warn_unix = (f.expiry * 1000).saturating_sub(warn);
                warn_unix.saturating_sub(self.cfg.unix_ms_at_zero).max(now)
            });
    }

    pub(super) fn token_timeouts(&mut self, now: Millis) {
        if self.token.warn_at.is_some_and(|t| now >= t) {
            self.token.warn_at = None;
            self.events.push_back(Event::TokenWillExpire);
        }
    }
}
