//! Peer messages and the mailbox (mode 0 versions, mode 1 ids, TTL from the sender's flag,
//! page clamps), presence queries, and user attributes (`_conn_timeout`).

use std::time::Duration;

use opensig_protocol::frame::{out, Reply};
use opensig_protocol::ident::{Account, AppId};
use opensig_protocol::limits::{flag_ttl_secs, valid_name};
use opensig_protocol::names::{attr, msgtype};
use opensig_protocol::{msg, ErrorKind, Limits};

use super::{user, RResult, Session, Signaling};
use crate::events::Happened;
use crate::store::{
    Appended, Dedup, MailItem, MailQuota, Poll, StepEvents, Store, UserAttrSet, When,
};

/// A mailbox message, ready to store: its id, its msg-v3 text and the push frame.
pub(super) struct Letter {
    pub id: String,
    pub text: String,
    pub push: opensig_protocol::frame::Template,
    pub ttl: Duration,
}

impl Letter {
    /// As the store takes it, for a mailbox of at most `max` messages, with the events
    /// storing it appends.
    pub(super) fn item<'a>(
        &'a self,
        dedup: Option<Dedup<'a>>,
        max: usize,
        quota: MailQuota<'a>,
        events: &'a StepEvents,
    ) -> MailItem<'a> {
        MailItem {
            id: &self.id,
            text: &self.text,
            push: &self.push,
            ttl: self.ttl,
            dedup,
            max,
            quota,
            events,
        }
    }
}

/// `Appended` as the client sees it.
pub(super) fn appended(a: Appended) -> RResult<Reply> {
    match a {
        Appended::Stored { .. } | Appended::Duplicate => Ok(Reply::Done),
        Appended::Full => Err(ErrorKind::MailboxFull),
        Appended::AppFull => Err(ErrorKind::AppQuota),
        Appended::SenderLimited => Err(ErrorKind::RateLimited),
        Appended::Busy => Err(ErrorKind::ServerBusy),
    }
}

impl<S: Store> Signaling<S> {
    /// The bounds on a message a user sends: the app's quota, the sender's allowance for
    /// offline recipients, and the server's memory.
    pub(super) fn user_mail_quota<'a>(&self, sender: &'a Account) -> MailQuota<'a> {
        let l = &self.limits();
        MailQuota {
            sender: Some(sender),
            offline_per_sender: l.offline_mail_per_sender_per_hour,
            window: Duration::from_secs(3600),
            busy: self.short_of_memory(),
            ..self.system_mail_quota()
        }
    }

    /// The bounds on mail the server writes itself (an invitation's failure, a call ended for
    /// a party): the app's quota only.
    pub(super) fn system_mail_quota(&self) -> MailQuota<'static> {
        let l = &self.limits();
        MailQuota {
            app_messages: l.app_mail_max_messages,
            app_bytes: l.app_mail_max_bytes,
            ..MailQuota::default()
        }
    }

    /// A message from `from` to `to`: `msg-v3 <id> <from> 0 <to> <kind> <flag> <content>`.
    pub(super) fn letter(
        &self,
        from: &str,
        to: &str,
        kind: &str,
        flag: &str,
        ttl_secs: u64,
        content: &str,
    ) -> Letter {
        let id = self.next_msg_id();
        let text = msg::build_v3(&id, from, to, kind, flag, content);
        let push = out::recvmsg_template(&text);
        Letter {
            id,
            text,
            push,
            ttl: Duration::from_secs(ttl_secs),
        }
    }

    pub(super) async fn send_message(
        &self,
        s: &mut Session<S>,
        peer: &str,
        flag: &str,
        kind: &str,
        content: &str,
        message_id: Option<&str>,
    ) -> RResult<Reply> {
        let peer = self.check_peer_message(peer, flag, kind, content)?;
        self.spend(s)?;
        self.store_peer_message(&s.app, &s.account, &peer, (kind, flag, content), message_id)
            .await
    }

    /// A peer message's recipient, once its parts are checked.
    pub(super) fn check_peer_message(
        &self,
        peer: &str,
        flag: &str,
        kind: &str,
        content: &str,
    ) -> RResult<Account> {
        let l = &self.limits();
        let peer = Account::parse(peer, l)?;
        Limits::check_len(content.len(), l.p2p_message_max_bytes)?;
        if flag.contains(' ') || flag.len() > 64 || !valid_name(kind, 64) {
            return Err(ErrorKind::InvalidArgs);
        }
        // call signalling goes through the voip calls and their rules
        if kind.starts_with(msgtype::VOIP_PREFIX) {
            return Err(ErrorKind::InvalidArgs);
        }
        Ok(peer)
    }

    /// Store a checked peer message from `from` (pushed when the recipient is online), within
    /// the bounds of a user's message.
    pub(super) async fn store_peer_message(
        &self,
        app: &AppId,
        from: &Account,
        peer: &Account,
        (kind, flag, content): (&str, &str, &str),
        message_id: Option<&str>,
    ) -> RResult<Reply> {
        let l = &self.limits();
        let letter = self.letter(from, peer, kind, flag, flag_ttl_secs(flag, l), content);
        let dedup = self.dedup(from, message_id);
        let quota = self.user_mail_quota(from);
        let out = self.plan(app, || {
            let stored = Happened::MessageOffline {
                from: from.to_string(),
                to: peer.to_string(),
                text: content.to_string(),
                ttl_secs: letter.ttl.as_secs(),
            };
            vec![(When::Offline, stored)]
        });
        let item = letter.item(dedup, l.mailbox_max_messages, quota, &out);
        let r = self.store.mail_append(user(app, peer), item).await?;
        self.recorded(&out, |_| r.offline());
        appended(r)
    }

    pub(super) async fn get_messages(
        &self,
        s: &mut Session<S>,
        ver_clear: u64,
        max: u64,
        seen_id: Option<&str>,
    ) -> RResult<Reply> {
        let max = (max as usize).clamp(1, self.limits().mailbox_page_max);
        let poll = Poll::Versions {
            ver_clear,
            max,
            seen_id,
        };
        let page = self.store.mail_poll(user(&s.app, &s.account), poll).await?;
        Ok(Reply::Mail {
            ver_clear: Some(page.ver_clear),
            msgs: page.msgs,
        })
    }

    pub(super) async fn get_messages_by_id(
        &self,
        s: &mut Session<S>,
        clear: &[String],
        max: u64,
    ) -> RResult<Reply> {
        let max = (max as usize).clamp(1, self.limits().mailbox_page_max);
        let poll = Poll::Ids { clear, max };
        let page = self.store.mail_poll(user(&s.app, &s.account), poll).await?;
        Ok(Reply::Mail {
            ver_clear: None,
            msgs: page.msgs,
        })
    }

    pub(super) async fn user_status(&self, s: &mut Session<S>, account: &str) -> RResult<Reply> {
        let account = Account::parse(account, &self.limits())?;
        let online = self.store.online(user(&s.app, &account)).await?;
        Ok(Reply::UserStatus {
            account: account.to_string(),
            status: u8::from(online),
        })
    }

    /// `_conn_timeout` is clamped into its range and applies to this session at once.
    /// An account's attributes go once it has been away for `user_attrs_keep_secs` (a
    /// session since then schedules this again when it ends).
    pub(super) async fn reclaim_user_attrs(&self, app: &AppId, account: &Account) -> RResult<()> {
        let who = user(app, account);
        if !self.store.online(who).await? {
            self.store.user_attrs_clear(who).await?;
        }
        Ok(())
    }

    pub(super) async fn set_user_attr(
        &self,
        s: &mut Session<S>,
        name: &str,
        value: &str,
    ) -> RResult<Reply> {
        let (stored, idle) = self.check_user_attr(name, value)?;
        self.spend(s)?;
        let (app, account) = (s.app.clone(), s.account.clone());
        self.store_user_attr(&app, &account, name, &stored).await?;
        if let Some(idle) = idle {
            s.idle = idle;
        }
        Ok(Reply::Done)
    }

    /// The value a user attribute is stored with (`_conn_timeout` clamped; `""` deletes),
    /// and the idle timeout it sets; `server_busy` when a value cannot be stored now.
    pub(super) fn check_user_attr(
        &self,
        name: &str,
        value: &str,
    ) -> RResult<(String, Option<Duration>)> {
        let l = &self.limits();
        l.check_attr_name(name)?;
        Limits::check_len(value.len(), l.attr_value_max_bytes)?;
        let mut stored = value.to_string();
        let mut idle = None;
        if name == attr::CONN_TIMEOUT {
            let secs: i64 = value.trim().parse().map_err(|_| ErrorKind::InvalidArgs)?;
            let clamped = l.clamp_conn_timeout(secs);
            stored = clamped.to_string();
            idle = Some(Duration::from_secs(clamped));
        }
        if !stored.is_empty() {
            self.room_to_store()?;
        }
        Ok((stored, idle))
    }

    /// Set (or, with `""`, delete) a checked user attribute.
    pub(super) async fn store_user_attr(
        &self,
        app: &AppId,
        account: &Account,
        name: &str,
        stored: &str,
    ) -> RResult<()> {
        let set = UserAttrSet {
            name,
            value: (!stored.is_empty()).then_some(stored),
            max: self.limits().attrs_max,
        };
        if !self.store.user_attr_set(user(app, account), set).await? {
            return Err(ErrorKind::TooLarge);
        }
        Ok(())
    }

    pub(super) async fn user_attr(
        &self,
        s: &mut Session<S>,
        account: &str,
        name: &str,
    ) -> RResult<Reply> {
        let l = &self.limits();
        let account = Account::parse(account, l)?;
        l.check_attr_name(name)?;
        let attrs = self.store.user_attrs(user(&s.app, &account)).await?;
        let value = attrs
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap_or_default();
        Ok(Reply::UserAttr {
            account: account.to_string(),
            name: name.into(),
            value,
        })
    }

    pub(super) async fn user_attrs(&self, s: &mut Session<S>, account: &str) -> RResult<Reply> {
        let account = Account::parse(account, &self.limits())?;
        let attrs = self.store.user_attrs(user(&s.app, &account)).await?;
        Ok(Reply::UserAttrAll {
            account: account.to_string(),
            attrs,
        })
    }
}
