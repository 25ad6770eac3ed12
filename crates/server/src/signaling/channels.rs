//! Channel rules: reserved names and the firehose channels, membership events, what each
//! built-in attribute means (and that `_member_num` is the server's), rates, and page clamps.

use std::time::Duration;

use opensig_protocol::frame::{content, Reply, Seen};
use opensig_protocol::ident::{Account, AppId, ChannelName};
use opensig_protocol::names::{attr, attr_change, msgtype, special};
use opensig_protocol::{ErrorKind, Limits};

use super::{chan, channel_event, event, RResult, Session, Signaling};
use crate::events::Happened;
use crate::store::{
    AttrChange, AttrOp, AttrOutcome, AttrQuota, AttrSet, Chan, ChannelSettings, Joining, Leaving,
    Message, Publish, Published, Setting, Store, Timer, When, NO_EVENTS,
};

/// Largest member page a query may ask for.
const LIST_PAGE_MAX: u64 = 100_000;

/// A channel's own rate: a member may lower the server's, never lift it (0 asks for the
/// server's; a server rate of 0 means no limit, so then any rate goes).
fn lower_only(asked: u64, server: u32) -> u32 {
    let asked = asked.min(u32::MAX as u64) as u32;
    match (asked, server) {
        (0, s) => s,
        (a, 0) => a,
        (a, s) => a.min(s),
    }
}

/// The setting a built-in attribute carries, from its value (`invalid_args` when a number is
/// expected and the value is not one), within the server's bounds.
fn builtin_setting(name: &str, value: &str, l: &Limits) -> RResult<Option<Setting>> {
    let number = || {
        value
            .trim()
            .parse::<u64>()
            .map_err(|_| ErrorKind::InvalidArgs)
    };
    Ok(Some(match name {
        attr::USER_NOTIFICATION => Setting::Notify(number()? != 0),
        attr::CHANNEL_TTL => Setting::Ttl(number()?.min(l.channel_ttl_max_secs)),
        attr::SENDMSG_LIMIT => {
            Setting::SendmsgLimit(lower_only(number()?, l.channel_messages_per_second))
        }
        attr::SETATTR_LIMIT => {
            Setting::SetattrLimit(lower_only(number()?, l.attr_changes_per_second))
        }
        attr::AUTO_UPDATE_NUM => Setting::AutoUpdate(number()?.min(l.auto_update_max_secs)),
        attr::HISTORY => Setting::History(
            number()?
                .min(l.channel_history_max_messages as u64)
                .try_into()
                .unwrap_or(u32::MAX),
        ),
        _ => return Ok(None),
    }))
}

/// The attribute change kind as a `'static` name.
fn kind_name(kind: &str) -> &'static str {
    match kind {
        attr_change::DEL => attr_change::DEL,
        attr_change::CLEAR => attr_change::CLEAR,
        _ => attr_change::UPDATE,
    }
}

/// Built-in attributes only the channel's members may change: what members are told, and
/// the channel's own rates.
fn members_only(name: &str) -> bool {
    matches!(
        name,
        attr::USER_NOTIFICATION | attr::SENDMSG_LIMIT | attr::SETATTR_LIMIT | attr::HISTORY
    )
}

/// The setting a built-in attribute goes back to when it is deleted.
fn default_setting(name: &str, d: &ChannelSettings) -> Option<Setting> {
    Some(match name {
        attr::USER_NOTIFICATION => Setting::Notify(d.notify),
        attr::CHANNEL_TTL => Setting::Ttl(d.ttl_secs),
        attr::SENDMSG_LIMIT => Setting::SendmsgLimit(d.sendmsg_limit),
        attr::SETATTR_LIMIT => Setting::SetattrLimit(d.setattr_limit),
        attr::AUTO_UPDATE_NUM => Setting::AutoUpdate(d.auto_update_secs),
        attr::HISTORY => Setting::History(d.history),
        _ => return None,
    })
}

impl<S: Store> Signaling<S> {
    fn firehose_allowed(&self, app: &AppId) -> bool {
        self.config.load().firehose_allowed(app)
    }

    /// A channel name for an operation that ordinary channels only allow.
    pub(super) fn ordinary(&self, name: &str) -> RResult<ChannelName> {
        let ch = ChannelName::parse(name, &self.limits())?;
        if ch.is_special() {
            return Err(ErrorKind::ReservedChannel);
        }
        Ok(ch)
    }

    pub(super) async fn join(&self, s: &mut Session<S>, name: &str, seen: Seen) -> RResult<Reply> {
        let l = &self.limits();
        let ch = ChannelName::parse(name, l)?;
        // the firehose channels see every login and join of the app
        if ch.is_special() && !self.firehose_allowed(&s.app) {
            return Err(ErrorKind::ReservedChannel);
        }
        if !s.channels.contains(&ch) && s.channels.len() >= l.channels_per_session {
            return Err(ErrorKind::TooManyChannels);
        }
        if !s
            .joins
            .take_burst(l.joins_per_second, super::session::join_burst(l))
        {
            return Err(ErrorKind::RateLimited);
        }
        // the special channels carry presence and firehose events only: their own members
        // coming and going would look like the app's users doing so
        let frame = (!ch.is_special()).then(|| {
            let body = content::channel_user(&ch, &s.account);
            channel_event(&ch, &s.account, msgtype::CHANNEL_USER_JOIN, &body)
        });
        let ev = frame.as_ref().map(|f| event(f, Some(&s.account)));
        let out = match ch.is_special() {
            true => NO_EVENTS.clone(),
            false => self.plan(&s.app, || {
                let channel = ch.to_string();
                let occupied = Happened::ChannelOccupied {
                    channel: channel.clone(),
                };
                let account = s.account.to_string();
                let joined = Happened::MemberJoined { channel, account };
                vec![(When::First, occupied), (When::Done, joined)]
            }),
        };
        let joining = Joining {
            account: &s.account,
            conn: &s.conn,
            event: ev,
            list_max: l.channel_list_max,
            events: &out,
            seen,
        };
        let joined = self.store.join(chan(&s.app, &ch), joining).await?;
        if joined.fresh {
            let first = joined.list.len() == 1;
            self.recorded(&out, |w| w == When::Done || (w == When::First && first));
            self.firehose(&s.app, &s.account, &ch, msgtype::CHANNEL_USER_JOIN)
                .await;
        }
        s.channels.insert(ch);
        Ok(Reply::Join {
            list: joined.list,
            attrs: joined.attrs,
            last_msg: joined.last_msg,
        })
    }

    pub(super) async fn leave(&self, s: &mut Session<S>, name: &str) -> RResult<Reply> {
        let ch = ChannelName::parse(name, &self.limits())?;
        self.leave_channel(&s.app, &s.account, &s.store_ref, &ch)
            .await?;
        s.channels.remove(&ch);
        Ok(Reply::Done)
    }

    /// End the membership `session` holds; the others (and the firehose) hear of it.
    pub(super) async fn leave_channel(
        &self,
        app: &AppId,
        account: &Account,
        session: &S::Session,
        ch: &ChannelName,
    ) -> RResult<()> {
        let frame = (!ch.is_special()).then(|| {
            let body = content::channel_user(ch, account);
            channel_event(ch, account, msgtype::CHANNEL_USER_LEAVE, &body)
        });
        let ev = frame.as_ref().map(|f| event(f, Some(account)));
        let out = match ch.is_special() {
            true => NO_EVENTS.clone(),
            false => self.plan(app, || {
                let channel = ch.to_string();
                let left = Happened::MemberLeft {
                    channel: channel.clone(),
                    account: account.to_string(),
                };
                let vacated = Happened::ChannelVacated { channel };
                vec![(When::Done, left), (When::Last, vacated)]
            }),
        };
        let leaving = Leaving {
            account,
            session,
            event: ev,
            events: &out,
        };
        let left = self.store.leave(chan(app, ch), leaving).await?;
        if left {
            if !out.is_empty() {
                // counted only: the store appended them with the leave
                let (members, _) = self.store.members(chan(app, ch), 0).await?;
                self.recorded(&out, |w| w == When::Done || members == 0);
            }
            self.firehose(app, account, ch, msgtype::CHANNEL_USER_LEAVE)
                .await;
        }
        Ok(())
    }

    /// A join or leave of an ordinary channel, for the members of `__agora_channel_event`.
    async fn firehose(&self, app: &AppId, account: &Account, ch: &ChannelName, kind: &str) {
        if ch.is_special() {
            return;
        }
        let Ok(fh) = ChannelName::parse(special::CHANNEL_EVENT, &self.limits()) else {
            return;
        };
        let body = content::channel_user(ch, account);
        let frame = channel_event(&fh, account, kind, &body);
        let r = self
            .store
            .publish(chan(app, &fh), Publish::event(event(&frame, None)))
            .await;
        if let Err(e) = r {
            tracing::warn!(app = %app, channel = %ch, "firehose event lost: {e}");
        }
    }

    /// A channel message as the history keeps it, within the server's bounds (numbered but
    /// not kept while the server is short of memory), with its send's identity.
    pub(super) fn history_entry<'a>(
        &self,
        l: &Limits,
        from: &'a str,
        text: &'a str,
        msg_id: Option<&str>,
    ) -> Message<'a> {
        Message {
            from,
            text,
            max_age: Duration::from_secs(l.channel_history_max_secs),
            max_bytes: l.channel_history_max_bytes,
            keep: !self.short_of_memory(),
            id: msg_id.map(|id| send_identity(from, id)),
        }
    }

    /// `channel_history`: members only; `after` a message number: the kept messages after
    /// it, oldest first (what a client recovering after a reconnect asks); otherwise the
    /// latest `max`. Pages are at most `channel_history_max_messages`; a read takes a token of
    /// the session's join budget (a recovery follows a rejoin).
    pub(super) async fn channel_history(
        &self,
        s: &mut Session<S>,
        name: &str,
        after: Option<u64>,
        max: Option<u64>,
    ) -> RResult<Reply> {
        let l = &self.limits();
        let ch = self.ordinary(name)?;
        if !self.store.is_member(chan(&s.app, &ch), &s.account).await? {
            return Err(ErrorKind::NotInChannel);
        }
        if !s
            .joins
            .take_burst(l.joins_per_second, super::session::join_burst(l))
        {
            return Err(ErrorKind::RateLimited);
        }
        self.history_page(&s.app, &ch, after, max).await
    }

    /// A page of a channel's history (the rules of `channel_history`, without the caller's).
    pub(crate) async fn history_page(
        &self,
        app: &AppId,
        ch: &ChannelName,
        after: Option<u64>,
        max: Option<u64>,
    ) -> RResult<Reply> {
        let l = &self.limits();
        let cap = l.channel_history_max_messages as u64;
        let max = max.unwrap_or(cap).min(cap) as usize;
        let age = Duration::from_secs(l.channel_history_max_secs);
        let h = self
            .store
            .history(chan(app, ch), after.unwrap_or(0), age)
            .await?;
        let mut msgs = h.msgs;
        match after {
            Some(_) => msgs.truncate(max),
            None => {
                let skip = msgs.len().saturating_sub(max);
                msgs.drain(..skip);
            }
        }
        Ok(Reply::History {
            name: ch.to_string(),
            last: h.last,
            msgs,
        })
    }

    /// Members only, unless `force`; the sender's budget, then the channel's.
    pub(super) async fn channel_send(
        &self,
        s: &mut Session<S>,
        name: &str,
        msg: &str,
        msg_id: Option<&str>,
        force: bool,
        seen: Seen,
    ) -> RResult<Reply> {
        let ch = self.check_channel_message(name, msg)?;
        self.spend(s)?;
        let member = (!force).then_some(&s.account);
        self.publish_message(chan(&s.app, &ch), &s.account, msg, msg_id, member, seen)
            .await
    }

    /// A channel message's channel, once the message is checked.
    pub(super) fn check_channel_message(&self, name: &str, msg: &str) -> RResult<ChannelName> {
        let l = &self.limits();
        let ch = ChannelName::parse(name, l)?;
        Limits::check_len(msg.len(), l.channel_message_max_bytes)?;
        if ch.is_special() {
            return Err(ErrorKind::ReservedChannel);
        }
        Ok(ch)
    }

    /// Publish a checked channel message from `from` (only if `member` is a member, when
    /// given), numbered and kept, within the channel's rate.
    pub(super) async fn publish_message(
        &self,
        at: Chan<'_>,
        from: &Account,
        msg: &str,
        msg_id: Option<&str>,
        member: Option<&Account>,
        seen: Seen,
    ) -> RResult<Reply> {
        let (app, ch) = (at.app, at.channel);
        let l = &self.limits();
        let body = content::channel_msg(ch, from, msg);
        let frame = channel_event(ch, from, msgtype::CHANNEL_MSG, &body);
        let out = self.plan(app, || {
            let message = Happened::ChannelMessage {
                channel: ch.to_string(),
                from: from.to_string(),
                text: msg.to_string(),
            };
            vec![(When::Done, message)]
        });
        let publish = Publish {
            event: event(&frame, None),
            member,
            dedup: self.dedup(from, msg_id),
            rate_limited: true,
            message: Some(self.history_entry(l, from, msg, msg_id)),
            events: &out,
            seen,
        };
        match self.store.publish(at, publish).await? {
            Published::Sent => {
                self.recorded(&out, |_| true);
                Ok(Reply::Done)
            }
            Published::Duplicate => Ok(Reply::Done),
            Published::NotMember => Err(ErrorKind::NotInChannel),
            Published::RateLimited => Err(ErrorKind::RateLimited),
        }
    }

    /// An empty channel's attributes reached its TTL and went: `channel.attr` `clear` by the
    /// server (a due timer: delivered at least once).
    pub(super) async fn channel_expired(&self, app: &AppId, ch: &ChannelName) -> RResult<()> {
        let expired = Happened::ChannelAttr {
            channel: ch.to_string(),
            by: String::new(),
            op: attr_change::CLEAR,
            name: String::new(),
            value: String::new(),
        };
        self.emit(app, expired).await;
        Ok(())
    }

    /// `not_in_channel` when `name` is one only members may change and `s` is not one.
    async fn member_for(&self, s: &Session<S>, ch: &ChannelName, name: &str) -> RResult<()> {
        if members_only(name) && !self.store.is_member(chan(&s.app, ch), &s.account).await? {
            return Err(ErrorKind::NotInChannel);
        }
        Ok(())
    }

    /// Change attributes, publish the change to every member (the changer included).
    pub(super) async fn change_attrs(
        &self,
        app: &AppId,
        ch: &ChannelName,
        from: &str,
        op: AttrOp<'_>,
        (name, value, kind): (&str, &str, &str),
    ) -> RResult<()> {
        let body = content::channel_attr(ch, from, name, value, kind);
        let frame = channel_event(ch, from, msgtype::CHANNEL_ATTR_UPDATE, &body);
        let out = self.plan(app, || {
            let changed = Happened::ChannelAttr {
                channel: ch.to_string(),
                by: from.to_string(),
                op: kind_name(kind),
                name: name.to_string(),
                value: value.to_string(),
            };
            vec![(When::Done, changed)]
        });
        let change = AttrChange {
            op,
            event: event(&frame, None),
            events: &out,
        };
        match self.store.attr_change(chan(app, ch), change).await? {
            AttrOutcome::Done => {
                self.recorded(&out, |_| true);
                Ok(())
            }
            AttrOutcome::RateLimited => Err(ErrorKind::RateLimited),
            AttrOutcome::TooMany => Err(ErrorKind::TooLarge),
            AttrOutcome::AppFull => Err(ErrorKind::AppQuota),
        }
    }

    /// Values are validated before any budget is spent; `_member_num` is the server's.
    pub(super) async fn set_channel_attr(
        &self,
        s: &mut Session<S>,
        channel: &str,
        name: &str,
        value: &str,
    ) -> RResult<Reply> {
        let (ch, setting) = self.check_channel_attr(channel, name, value)?;
        self.member_for(s, &ch, name).await?;
        self.room_to_store()?;
        self.spend(s)?;
        self.store_channel_attr(&s.app, &ch, &s.account, (name, value, setting))
            .await?;
        Ok(Reply::Done)
    }

    /// A channel attribute's channel and the setting it carries, once checked.
    pub(super) fn check_channel_attr(
        &self,
        channel: &str,
        name: &str,
        value: &str,
    ) -> RResult<(ChannelName, Option<Setting>)> {
        let l = &self.limits();
        let ch = self.ordinary(channel)?;
        l.check_attr_name(name)?;
        Limits::check_len(value.len(), l.attr_value_max_bytes)?;
        if name == attr::MEMBER_NUM {
            return Err(ErrorKind::ReadOnlyAttr);
        }
        Ok((ch, builtin_setting(name, value, l)?))
    }

    /// Set a checked channel attribute for `from` (told to every member), within the app's
    /// quota and the attribute's rate; a `_auto_update_num` starts its reports.
    pub(super) async fn store_channel_attr(
        &self,
        app: &AppId,
        ch: &ChannelName,
        from: &str,
        (name, value, setting): (&str, &str, Option<Setting>),
    ) -> RResult<()> {
        let l = &self.limits();
        let op = AttrOp::Set(AttrSet {
            name,
            value,
            setting,
            rate_limited: true,
            max: l.attrs_max,
            quota: AttrQuota {
                channels: l.app_channels_with_attrs_max,
                bytes: l.app_channel_attr_max_bytes,
            },
        });
        self.change_attrs(app, ch, from, op, (name, value, attr_change::UPDATE))
            .await?;
        if let Some(Setting::AutoUpdate(secs)) = setting {
            if secs > 0 {
                // the first report comes after one period, whatever happened before
                self.store.touch_members(chan(app, ch)).await?;
                let timer = Timer::MemberNum(app.clone(), ch.clone());
                self.store
                    .schedule(timer, Duration::from_secs(secs))
                    .await?;
            }
        }
        Ok(())
    }

    pub(super) async fn del_channel_attr(
        &self,
        s: &mut Session<S>,
        channel: &str,
        name: &str,
    ) -> RResult<Reply> {
        let ch = self.ordinary(channel)?;
        self.limits().check_attr_name(name)?;
        if name == attr::MEMBER_NUM {
            return Err(ErrorKind::ReadOnlyAttr);
        }
        self.member_for(s, &ch, name).await?;
        self.spend(s)?;
        self.delete_channel_attr(&s.app, &ch, &s.account, name)
            .await?;
        Ok(Reply::Done)
    }

    /// Delete a channel attribute for `from` (its setting back to the default).
    pub(super) async fn delete_channel_attr(
        &self,
        app: &AppId,
        ch: &ChannelName,
        from: &str,
        name: &str,
    ) -> RResult<()> {
        let defaults = ChannelSettings::defaults(&self.limits());
        let setting = default_setting(name, &defaults);
        let op = AttrOp::Del { name, setting };
        self.change_attrs(app, ch, from, op, (name, "", attr_change::DEL))
            .await
    }

    pub(super) async fn clear_channel_attrs(
        &self,
        s: &mut Session<S>,
        channel: &str,
    ) -> RResult<Reply> {
        let ch = self.ordinary(channel)?;
        let defaults = ChannelSettings::defaults(&self.limits());
        if !self.store.is_member(chan(&s.app, &ch), &s.account).await? {
            // clearing would reset what only members may change
            if let Some(now) = self.store.settings(chan(&s.app, &ch)).await? {
                let d = &defaults;
                if (
                    now.notify,
                    now.sendmsg_limit,
                    now.setattr_limit,
                    now.history,
                ) != (d.notify, d.sendmsg_limit, d.setattr_limit, d.history)
                {
                    return Err(ErrorKind::NotInChannel);
                }
            }
        }
        self.spend(s)?;
        let op = AttrOp::Clear { defaults };
        self.change_attrs(&s.app, &ch, &s.account, op, ("", "", attr_change::CLEAR))
            .await?;
        Ok(Reply::Done)
    }

    /// The `_member_num` report: when the membership changed, the count becomes the
    /// attribute (an ordinary update from `""`); again after the period while it is set.
    pub(super) async fn report_members(&self, app: &AppId, ch: &ChannelName) -> RResult<()> {
        let Some(settings) = self.store.settings(chan(app, ch)).await? else {
            return Ok(());
        };
        if settings.auto_update_secs == 0 {
            return Ok(());
        }
        if let Some(n) = self.store.take_members_changed(chan(app, ch)).await? {
            let num = n.to_string();
            let op = AttrOp::Set(AttrSet {
                name: attr::MEMBER_NUM,
                value: &num,
                setting: None,
                rate_limited: false,
                max: usize::MAX,
                // the server's own report: counted, never refused
                quota: AttrQuota::default(),
            });
            let change = (attr::MEMBER_NUM, num.as_str(), attr_change::UPDATE);
            self.change_attrs(app, ch, "", op, change).await?;
        }
        let period = Duration::from_secs(settings.auto_update_secs);
        let timer = Timer::MemberNum(app.clone(), ch.clone());
        self.store.schedule(timer, period).await?;
        Ok(())
    }

    pub(super) async fn channel_num(&self, s: &mut Session<S>, name: &str) -> RResult<Reply> {
        let ch = ChannelName::parse(name, &self.limits())?;
        let (num, _) = self.store.members(chan(&s.app, &ch), 0).await?;
        Ok(Reply::ChannelNum {
            name: ch.to_string(),
            num,
        })
    }

    pub(super) async fn channel_has(
        &self,
        s: &mut Session<S>,
        name: &str,
        account: &str,
    ) -> RResult<Reply> {
        let l = &self.limits();
        let ch = ChannelName::parse(name, l)?;
        let account = Account::parse(account, l)?;
        let isin = self.store.is_member(chan(&s.app, &ch), &account).await?;
        Ok(Reply::ChannelIsIn {
            name: ch.to_string(),
            account: account.to_string(),
            isin: u8::from(isin),
        })
    }

    /// The latest members: `channel_list_max` of them, or up to `num` (at most 100,000).
    pub(super) async fn channel_list(
        &self,
        s: &mut Session<S>,
        name: &str,
        num: Option<u64>,
    ) -> RResult<Reply> {
        let l = &self.limits();
        let ch = ChannelName::parse(name, l)?;
        let max = num.map_or(l.channel_list_max, |n| n.min(LIST_PAGE_MAX) as usize);
        let (count, list) = self.store.members(chan(&s.app, &ch), max).await?;
        Ok(Reply::UserList {
            name: ch.to_string(),
            num: count,
            list,
        })
    }
}

/// The identity of a channel send with message id `msg_id` from `from`: a number below 2^53
/// (exact in a JavaScript number), the same on every node and for every copy of the send (the
/// SDK's resend after a reconnect, a store's retry), so that a client drops a second copy the
/// channel numbered anew after its write of the first was lost. (52 bits of a SHA-256: a
/// message mistaken for one of the 16,384 a client remembers at most has odds of 2^-38.)
fn send_identity(from: &str, msg_id: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(from.as_bytes());
    h.update([0]);
    h.update(msg_id.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b) >> 12
}
