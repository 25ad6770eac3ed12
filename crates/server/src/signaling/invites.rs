//! How an invitation lives and ends: `_require_peer_online` and `_timeout`, no invitation to
//! oneself, the callee's acknowledgement, accept / refuse / bye, and the three ways the server
//! ends one itself — 703 (callee offline too long), 704 (timeout), 702 (caller gone past the
//! grace period) — each with `voip_invite_failed` to the caller and, to a callee that had it,
//! `voip_invite_bye`. The store's timers call back into [`Signaling::fire`].

use std::time::Duration;

use opensig_protocol::codes::Code;
use opensig_protocol::frame::{content, Reply, VoipKind};
use opensig_protocol::ident::{Account, ChannelName};
use opensig_protocol::names::{invite_option, msgtype};
use opensig_protocol::{msg, ErrorKind, Limits};
use serde_json::Value;

use super::mailbox::appended;
use super::{user, RResult, Session, Signaling};
use crate::events::{Call, Happened};
use crate::store::{
    InviteKey, InviteOpen, InviteRelay, InviteState, InviteStep, Store, Take, Timer, When,
    NO_EVENTS,
};
use opensig_protocol::names::domain;

/// `_require_peer_online` and `_timeout` from an invitation's `extra` (an object, or a
/// string holding one; numbers or numeric strings).
pub(super) fn invite_options(extra: &Value) -> (bool, u64) {
    let obj = match extra {
        Value::String(s) => serde_json::from_str::<Value>(s).ok(),
        Value::Object(_) => Some(extra.clone()),
        _ => None,
    };
    let num = |k: &str| -> Option<f64> {
        let v = obj.as_ref()?.get(k)?;
        v.as_f64().or_else(|| v.as_str()?.trim().parse().ok())
    };
    let require_online = num(invite_option::REQUIRE_PEER_ONLINE).is_some_and(|n| n != 0.0);
    let timeout = num(invite_option::TIMEOUT).map_or(0, |n| n.max(0.0) as u64);
    (require_online, timeout)
}

/// An invitation as events name it.
fn call_of(key: &InviteKey) -> Call {
    Call {
        caller: key.caller.to_string(),
        callee: key.callee.to_string(),
        channel: key.channel.to_string(),
    }
}

impl<S: Store> Signaling<S> {
    pub(super) async fn voip(
        &self,
        s: &mut Session<S>,
        kind: VoipKind,
        channel: &str,
        peer: &str,
        extra: &Value,
        message_id: Option<&str>,
    ) -> RResult<Reply> {
        let l = &self.limits();
        let channel = ChannelName::parse(channel, l)?;
        let peer = Account::parse(peer, l)?;
        let extra_len = match extra {
            Value::String(s) => s.len(),
            other => other.to_string().len(),
        };
        Limits::check_len(extra_len, l.invite_extra_max_bytes)?;
        if peer == s.account {
            return Err(ErrorKind::InvalidPeer);
        }
        // every kind is a message to the peer's mailbox: all spend the sender's budget
        self.spend(s)?;
        if kind == VoipKind::Invite {
            return self.invite(s, channel, peer, extra, message_id).await;
        }
        // a reply of the callee, an in-call message, or an end from either side
        let as_callee = InviteKey {
            app: s.app.clone(),
            caller: peer.clone(),
            channel: channel.clone(),
            callee: s.account.clone(),
        };
        let as_caller = InviteKey {
            app: s.app.clone(),
            caller: s.account.clone(),
            channel: channel.clone(),
            callee: peer.clone(),
        };
        let (keys, step) = match kind {
            VoipKind::Ack => (vec![as_callee], InviteStep::Ack),
            VoipKind::Accept => (vec![as_callee], InviteStep::Accept),
            VoipKind::Refuse => (vec![as_callee], InviteStep::End),
            VoipKind::Bye => (vec![as_callee, as_caller], InviteStep::End),
            _ => (vec![as_callee, as_caller], InviteStep::Keep),
        };
        let body = content::voip(&channel, &s.account, extra, None);
        let ttl = l.message_ttl_default_secs;
        let letter = self.letter(&s.account, &peer, kind.name(), msg::NO_FLAG, ttl, &body);
        let dedup = self.dedup(&s.account, message_id);
        // which invitation an end is about (it is gone once ended)
        let event_kind = match kind {
            VoipKind::Ack => Some(domain::INVITE_RECEIVED),
            VoipKind::Accept => Some(domain::INVITE_ACCEPTED),
            VoipKind::Refuse => Some(domain::INVITE_REFUSED),
            VoipKind::Bye => Some(domain::INVITE_ENDED),
            _ => None,
        }
        .filter(|_| self.events_wanted(&s.app));
        let about = match event_kind {
            Some(domain::INVITE_ENDED) if self.store.invite_get(&keys[0]).await?.is_none() => {
                keys.get(1).cloned()
            }
            Some(_) => keys.first().cloned(),
            None => None,
        };
        let out = match (event_kind, about) {
            (Some(kind), Some(key)) => self.plan(&s.app, || {
                let step = Happened::Invite {
                    kind,
                    call: call_of(&key),
                    by: s.account.to_string(),
                    extra: serde_json::to_string(extra).unwrap_or_default(),
                };
                vec![(When::Done, step)]
            }),
            _ => NO_EVENTS.clone(),
        };
        let relay = InviteRelay {
            keys: &keys,
            step,
            require_live: true,
            to: &peer,
            mail: letter.item(
                dedup,
                l.mailbox_max_messages,
                self.user_mail_quota(&s.account),
                &out,
            ),
        };
        let relayed = self.store.invite_relay(relay).await?;
        if !relayed.live {
            // nothing is stored for an account that has no invitation with the sender
            return Err(ErrorKind::NoInvitation);
        }
        self.recorded(&out, |_| relayed.appended.version().is_some());
        appended(relayed.appended)
    }

    async fn invite(
        &self,
        s: &mut Session<S>,
        channel: ChannelName,
        peer: Account,
        extra: &Value,
        message_id: Option<&str>,
    ) -> RResult<Reply> {
        let l = &self.limits();
        let (require_online, timeout) = invite_options(extra);
        let online = self.store.online(user(&s.app, &peer)).await?;
        let extra_text = serde_json::to_string(extra).unwrap_or_default();
        let key = InviteKey {
            app: s.app.clone(),
            caller: s.account.clone(),
            channel,
            callee: peer,
        };
        if require_online && !online {
            self.invite_failed(&key, &extra_text, Code::InvitePeerOffline)
                .await?;
            return Ok(Reply::Done);
        }
        let body = content::voip(&key.channel, &s.account, extra, None);
        let ttl = l.message_ttl_default_secs;
        let letter = self.letter(
            &s.account,
            &key.callee,
            VoipKind::Invite.name(),
            msg::NO_FLAG,
            ttl,
            &body,
        );
        let generation = self.next_generation();
        let mut timers = Vec::new();
        let timeout = timeout.min(l.invite_timeout_max_secs);
        if timeout > 0 {
            let t = Timer::InviteTimeout(key.clone(), generation);
            timers.push((t, Duration::from_secs(timeout)));
        }
        if !online {
            let t = Timer::InviteOffline(key.clone(), generation);
            timers.push((t, Duration::from_secs(l.invite_offline_grace_secs)));
        }
        let dedup = self.dedup(&s.account, message_id);
        let out = self.plan(&s.app, || {
            let sent = Happened::Invite {
                kind: domain::INVITE_SENT,
                call: call_of(&key),
                by: s.account.to_string(),
                extra: extra_text.clone(),
            };
            vec![(When::Done, sent)]
        });
        let open = InviteOpen {
            key: &key,
            extra: &extra_text,
            generation,
            mail: letter.item(
                dedup,
                l.mailbox_max_messages,
                self.user_mail_quota(&s.account),
                &out,
            ),
            timers: &timers,
        };
        let r = self.store.invite_open(open).await?;
        self.recorded(&out, |_| r.version().is_some());
        appended(r)
    }

    /// `voip_invite_failed` (from the callee) to the caller, with the invitation's `extra`
    /// and the reason.
    async fn invite_failed(&self, key: &InviteKey, extra: &str, code: Code) -> RResult<()> {
        let reason = match code {
            Code::InvitePeerOffline => domain::invite_failed::CALLEE_OFFLINE,
            Code::InviteTimeout => domain::invite_failed::NO_ANSWER,
            _ => domain::invite_failed::CALLER_GONE,
        };
        let failed = Happened::InviteFailed {
            call: call_of(key),
            extra: extra.to_string(),
            code: code.value(),
            reason,
        };
        self.emit(&key.app, failed).await;
        let extra: Value = serde_json::from_str(extra).unwrap_or(Value::String(String::new()));
        let body = content::voip(&key.channel, &key.callee, &extra, Some(code.value()));
        let ttl = self.limits().message_ttl_default_secs;
        let letter = self.letter(
            &key.callee,
            &key.caller,
            msgtype::VOIP_INVITE_FAILED,
            msg::NO_FLAG,
            ttl,
            &body,
        );
        let item = letter.item(
            None,
            self.limits().mailbox_max_messages,
            self.system_mail_quota(),
            &NO_EVENTS,
        );
        self.store
            .mail_append(user(&key.app, &key.caller), item)
            .await?;
        Ok(())
    }

    /// A due timer.
    pub(super) async fn fire(&self, timer: &Timer) -> RResult<()> {
        match timer {
            Timer::InviteOffline(key, generation) => {
                // only while unacknowledged and the callee is still away
                let Some(r) = self.store.invite_get(key).await? else {
                    return Ok(());
                };
                let acked = matches!(r.state, InviteState::Ringing { acked: true });
                if r.generation != *generation
                    || acked
                    || self.store.online(user(&key.app, &key.callee)).await?
                {
                    return Ok(());
                }
                self.end_invite(key, *generation, Code::InvitePeerOffline, true)
                    .await
            }
            Timer::InviteTimeout(key, generation) => {
                self.end_invite(key, *generation, Code::InviteTimeout, true)
                    .await
            }
            Timer::CallerGone(key, generation) => {
                if self.store.online(user(&key.app, &key.caller)).await? {
                    return Ok(());
                }
                self.end_invite(key, *generation, Code::InviteNet, false)
                    .await
            }
            Timer::MemberNum(app, ch) => self.report_members(app, ch).await,
            Timer::UserAttrs(app, account) => self.reclaim_user_attrs(app, account).await,
            Timer::ChannelExpired(app, ch) => self.channel_expired(app, ch).await,
            Timer::PresenceGrace(app, account) => self.presence_grace_over(app, account).await,
        }
    }

    /// End an invitation (once, whoever takes it): an undelivered copy is withdrawn from the
    /// callee's mailbox, a delivered one ended with a `voip_invite_bye`; the caller gets
    /// `voip_invite_failed`.
    async fn end_invite(
        &self,
        key: &InviteKey,
        generation: u64,
        code: Code,
        ringing_only: bool,
    ) -> RResult<()> {
        let store = &self.store;
        let take = Take {
            generation,
            ringing_only,
        };
        let Some(invite) = store.invite_take(key, take).await? else {
            return Ok(());
        };
        let callee = user(&key.app, &key.callee);
        let withdrawn = store
            .mail_withdraw(callee, invite.version, &invite.msg_id)
            .await?;
        if !withdrawn || store.online(callee).await? {
            let body = content::voip(
                &key.channel,
                &key.caller,
                &Value::String(String::new()),
                Some(code.value()),
            );
            let ttl = self.limits().message_ttl_default_secs;
            let letter = self.letter(
                &key.caller,
                &key.callee,
                VoipKind::Bye.name(),
                msg::NO_FLAG,
                ttl,
                &body,
            );
            let item = letter.item(
                None,
                self.limits().mailbox_max_messages,
                self.system_mail_quota(),
                &NO_EVENTS,
            );
            store.mail_append(callee, item).await?;
        }
        self.invite_failed(key, &invite.extra, code).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_options_are_read_leniently() {
        assert_eq!(
            invite_options(&Value::String(r#"{"_require_peer_online":1}"#.into())),
            (true, 0)
        );
        assert_eq!(
            invite_options(&serde_json::json!({"_timeout": 5})),
            (false, 5)
        );
        assert_eq!(
            invite_options(&serde_json::json!({"_timeout": "7", "_require_peer_online": "0"})),
            (false, 7)
        );
        assert_eq!(
            invite_options(&Value::String("not json".into())),
            (false, 0)
        );
        assert_eq!(invite_options(&Value::Null), (false, 0));
    }
}
