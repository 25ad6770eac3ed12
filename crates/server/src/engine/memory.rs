//! The embedded, single-process engine: sharded maps in memory, timers as tokio tasks.
//!
//! Locking: a channel is one `Mutex` (sequence numbers are assigned and frames queued under
//! it, so every member sees a channel's events in order); a mailbox is one DashMap entry
//! (versions assigned and `recvmsg` queued under it). No lock is held across an `await`, and
//! no code holds two channel locks at once (firehose events are sent after the first is
//! released).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;

use opensig_protocol::codes::Code;
use opensig_protocol::frame::{content, out, VoipKind};
use opensig_protocol::names::{attr, attr_change, invite_option, msgtype, special};
use opensig_protocol::{msg, ErrorKind, Limits};

use super::{AttrOp, EResult, Engine, JoinInfo, LoginInfo, Mail, MailPage, Relay};
use crate::delivery::{ConnHandle, Frame};
use crate::ratelimit::Bucket;

/// Highest mailbox version handed out (JS numbers are exact below 2^53).
const MAX_VERSION: u64 = (1 << 53) - 1;

fn key(app: &str, name: &str) -> String {
    let mut k = String::with_capacity(app.len() + name.len() + 1);
    k.push_str(app);
    k.push('\u{1}');
    k.push_str(name);
    k
}

#[derive(Debug)]
struct Stored {
    version: u64,
    text: Arc<str>,
    id: String,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Mailbox {
    last: u64,
    cleared: u64,
    msgs: VecDeque<Stored>,
    touched: Option<Instant>,
}

impl Mailbox {
    fn purge(&mut self, now: Instant) {
        let cleared = self.cleared;
        self.msgs.retain(|m| m.version > cleared && m.expires > now);
    }
}

/// Message ids seen recently, per sender, to drop resends.
#[derive(Debug, Default)]
struct Seen {
    order: VecDeque<(Instant, String)>,
    ids: HashSet<String>,
}

impl Seen {
    fn first_time(&mut self, id: &str, now: Instant, window: Duration) -> bool {
        while let Some((t, _)) = self.order.front() {
            if now.duration_since(*t) <= window && self.order.len() < 10_000 {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        if !self.ids.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back((now, id.to_owned()));
        true
    }
}

#[derive(Debug)]
struct Member {
    conn: ConnHandle,
    order: u64,
}

#[derive(Debug)]
struct Channel {
    name: String,
    special: bool,
    members: HashMap<String, Member>,
    /// join order → account (for "the latest N").
    order: BTreeMap<u64, String>,
    next_order: u64,
    attrs: Vec<(String, String)>,
    seq: u64,
    rate: Bucket,
    attr_rates: HashMap<String, Bucket>,
    notify_users: bool,
    ttl_secs: u64,
    auto_update_secs: u64,
    sendmsg_limit: u32,
    setattr_limit: u32,
    members_changed: bool,
    auto_gen: u64,
    ttl_gen: u64,
    dead: bool,
}

impl Channel {
    fn new(name: &str, limits: &Limits) -> Channel {
        let special = name.starts_with(special::PREFIX);
        Channel {
            name: name.to_owned(),
            special,
            members: HashMap::new(),
            order: BTreeMap::new(),
            next_order: 0,
            attrs: Vec::new(),
            seq: 0,
            rate: Bucket::new(limits.channel_messages_per_second),
            attr_rates: HashMap::new(),
            // the special channels carry presence / firehose events only: their own
            // subscribers joining and leaving would look like app users logging in and out
            notify_users: !special,
            ttl_secs: limits.channel_ttl_default_secs,
            auto_update_secs: 0,
            sendmsg_limit: limits.channel_messages_per_second,
            setattr_limit: limits.attr_changes_per_second,
            members_changed: false,
            auto_gen: 0,
            ttl_gen: 0,
            dead: false,
        }
    }

    /// Queue a channel2 event for every member except `exclude`.
    fn broadcast(&mut self, source: &str, kind: &str, content: &str, exclude: Option<&str>) {
        self.seq += 1;
        let text = msg::build_v2(source, &self.name, kind, msg::NO_FLAG, content);
        let frame: Frame = out::channel2(&self.name, self.seq, &text).into();
        for (account, m) in &self.members {
            if Some(account.as_str()) != exclude {
                m.conn.push(frame.clone());
            }
        }
    }

    fn latest(&self, max: usize) -> Vec<String> {
        let mut v: Vec<String> = self.order.values().rev().take(max).cloned().collect();
        v.reverse();
        v
    }

    fn reset_builtin(&mut self, name: &str, limits: &Limits) {
        match name {
            attr::USER_NOTIFICATION => self.notify_users = true,
            attr::CHANNEL_TTL => self.ttl_secs = limits.channel_ttl_default_secs,
            attr::AUTO_UPDATE_NUM => {
                self.auto_update_secs = 0;
                self.auto_gen += 1;
            }
            attr::SENDMSG_LIMIT => self.sendmsg_limit = limits.channel_messages_per_second,
            attr::SETATTR_LIMIT => self.setattr_limit = limits.attr_changes_per_second,
            _ => {}
        }
    }
}

#[derive(Debug)]
struct Invite {
    extra: Value,
    acked: bool,
    /// The callee's mailbox version holding the invite.
    version: u64,
    generation: u64,
}

struct Inner {
    limits: Limits,
    sessions: DashMap<String, ConnHandle>,
    offline_since: DashMap<String, Instant>,
    mailboxes: DashMap<String, Mailbox>,
    user_attrs: DashMap<String, BTreeMap<String, String>>,
    channels: DashMap<String, Arc<Mutex<Channel>>>,
    /// app, caller, channel, callee → invite.
    invites: DashMap<(String, String, String, String), Invite>,
    seen: DashMap<String, Seen>,
    msg_counter: AtomicU64,
    boot_id: String,
    generation: AtomicU64,
}

/// The in-memory engine. Cloning shares the same state.
#[derive(Clone)]
pub struct Memory {
    inner: Arc<Inner>,
}

impl Memory {
    /// A fresh, empty engine. Starts a background sweeper (needs a tokio runtime).
    pub fn new(limits: Limits) -> Memory {
        let inner = Arc::new(Inner {
            limits,
            sessions: DashMap::new(),
            offline_since: DashMap::new(),
            mailboxes: DashMap::new(),
            user_attrs: DashMap::new(),
            channels: DashMap::new(),
            invites: DashMap::new(),
            seen: DashMap::new(),
            msg_counter: AtomicU64::new(0),
            boot_id: format!("{:x}", rand::random::<u32>()),
            generation: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(sweeper(weak));
        Memory { inner }
    }

    /// Number of sessions (for tests and metrics).
    pub fn session_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Number of channel records alive (for tests of TTL and leaks).
    pub fn channel_count(&self) -> usize {
        self.inner.channels.len()
    }
}

/// Drops expired mail, idle empty mailboxes and stale dedup sets every minute.
async fn sweeper(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let idle = Duration::from_secs(3600);
        inner.mailboxes.retain(|k, mb| {
            mb.purge(now);
            let idle_long = mb.touched.is_none_or(|t| now.duration_since(t) > idle);
            !(mb.msgs.is_empty() && idle_long && !inner.sessions.contains_key(k))
        });
        let window = Duration::from_secs(inner.limits.dedup_window_secs);
        inner.seen.retain(|_, s| {
            s.order
                .back()
                .is_some_and(|(t, _)| now.duration_since(*t) <= window)
        });
        inner
            .offline_since
            .retain(|_, t| now.duration_since(*t) < Duration::from_secs(3600));
    }
}

/// A call-signalling message (no flag, no client id).
fn voip_mail<'a>(
    from: &'a str,
    to: &'a str,
    kind: &'a str,
    content: &'a str,
    ttl_secs: u64,
) -> Mail<'a> {
    Mail {
        from,
        to,
        kind,
        flag: msg::NO_FLAG,
        ttl_secs,
        content,
        message_id: None,
    }
}

fn parse_extra_options(extra: &Value) -> (bool, u64) {
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

impl Inner {
    fn next_msg_id(&self) -> String {
        let n = self.msg_counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.boot_id)
    }

    fn channel(&self, app: &str, name: &str) -> Arc<Mutex<Channel>> {
        self.channels
            .entry(key(app, name))
            .or_insert_with(|| Arc::new(Mutex::new(Channel::new(name, &self.limits))))
            .clone()
    }

    fn existing_channel(&self, app: &str, name: &str) -> Option<Arc<Mutex<Channel>>> {
        self.channels.get(&key(app, name)).map(|c| c.clone())
    }

    fn first_time(&self, app: &str, from: &str, id: Option<&str>) -> bool {
        let Some(id) = id else { return true };
        let window = Duration::from_secs(self.limits.dedup_window_secs);
        self.seen
            .entry(key(app, from))
            .or_default()
            .first_time(id, Instant::now(), window)
    }

    /// Store a message in `to`'s mailbox and push it if `to` is online. Returns its version.
    fn deliver(&self, app: &str, mail: &Mail<'_>) -> EResult<u64> {
        let (from, to, kind, flag, body, ttl) = (
            mail.from,
            mail.to,
            mail.kind,
            mail.flag,
            mail.content,
            mail.ttl_secs,
        );
        let id = self.next_msg_id();
        let text: Arc<str> = msg::build_v3(&id, from, to, kind, flag, body).into();
        let k = key(app, to);
        let now = Instant::now();
        let mut mb = self.mailboxes.entry(k.clone()).or_default();
        if mb.msgs.len() >= self.limits.mailbox_max_messages {
            mb.purge(now);
            if mb.msgs.len() >= self.limits.mailbox_max_messages {
                return Err(ErrorKind::MailboxFull);
            }
        }
        if mb.last >= MAX_VERSION {
            return Err(ErrorKind::MailboxFull);
        }
        mb.last += 1;
        let version = mb.last;
        mb.touched = Some(now);
        mb.msgs.push_back(Stored {
            version,
            text: text.clone(),
            id,
            expires: now + Duration::from_secs(ttl),
        });
        // queued under the mailbox entry lock: recvmsg frames leave in version order
        if let Some(conn) = self.sessions.get(&k) {
            conn.push(out::recvmsg(version, &text).into());
        }
        Ok(version)
    }

    /// Remove a not-yet-acknowledged message; true when it was still waiting.
    fn withdraw(&self, app: &str, to: &str, version: u64) -> bool {
        let Some(mut mb) = self.mailboxes.get_mut(&key(app, to)) else {
            return false;
        };
        let before = mb.msgs.len();
        mb.msgs.retain(|m| m.version != version);
        before != mb.msgs.len()
    }

    fn online(&self, app: &str, account: &str) -> bool {
        self.sessions.contains_key(&key(app, account))
    }

    /// Presence/firehose events into a special channel, if anyone listens.
    fn special_event(&self, app: &str, channel: &str, source: &str, kind: &str, body: &str) {
        if let Some(ch) = self.existing_channel(app, channel) {
            let mut ch = ch.lock();
            if !ch.dead && !ch.members.is_empty() {
                ch.broadcast(source, kind, body, None);
            }
        }
    }

    fn voip_failed(
        &self,
        app: &str,
        caller: &str,
        channel: &str,
        callee: &str,
        extra: &Value,
        code: Code,
    ) {
        let body = content::voip(channel, callee, extra, Some(code.value()));
        let ttl = self.limits.message_ttl_default_secs;
        let _ = self.deliver(
            app,
            &voip_mail(callee, caller, msgtype::VOIP_INVITE_FAILED, &body, ttl),
        );
    }
}

fn schedule_destroy(inner: &Arc<Inner>, app: &str, ch: &mut Channel) {
    if ch.special || !ch.members.is_empty() {
        return;
    }
    ch.ttl_gen += 1;
    let generation = ch.ttl_gen;
    // an empty channel is kept for its TTL only for its attributes: without any, it goes at
    // once (otherwise joining and leaving new names would pile up channels for hours)
    let ttl = if ch.attrs.is_empty() {
        Duration::ZERO
    } else {
        Duration::from_secs(ch.ttl_secs)
    };
    let k = key(app, &ch.name);
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        tokio::time::sleep(ttl).await;
        let Some(inner) = weak.upgrade() else { return };
        let Some(arc) = inner.channels.get(&k).map(|c| c.clone()) else {
            return;
        };
        let mut ch = arc.lock();
        if ch.ttl_gen == generation && ch.members.is_empty() && !ch.dead {
            ch.dead = true;
            drop(ch);
            inner.channels.remove_if(&k, |_, v| Arc::ptr_eq(v, &arc));
        }
    });
}

fn schedule_member_num(inner: &Arc<Inner>, app: &str, ch: &mut Channel) {
    ch.auto_gen += 1;
    let generation = ch.auto_gen;
    let period = Duration::from_secs(ch.auto_update_secs.max(1));
    let k = key(app, &ch.name);
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            let Some(arc) = inner.channels.get(&k).map(|c| c.clone()) else {
                return;
            };
            let mut ch = arc.lock();
            if ch.dead || ch.auto_gen != generation {
                return;
            }
            if ch.members_changed {
                ch.members_changed = false;
                let num = ch.members.len().to_string();
                match ch.attrs.iter_mut().find(|(n, _)| n == attr::MEMBER_NUM) {
                    Some(a) => a.1 = num.clone(),
                    None => ch.attrs.push((attr::MEMBER_NUM.into(), num.clone())),
                }
                let name = ch.name.clone();
                let body =
                    content::channel_attr(&name, "", attr::MEMBER_NUM, &num, attr_change::UPDATE);
                ch.broadcast("-", msgtype::CHANNEL_ATTR_UPDATE, &body, None);
            }
        }
    });
}

impl Engine for Memory {
    async fn login(
        &self,
        app: &str,
        account: &str,
        conn: ConnHandle,
        welcome: Frame,
    ) -> EResult<LoginInfo> {
        let inner = &self.inner;
        let k = key(app, account);
        let conn_timeout = inner
            .user_attrs
            .get(&k)
            .and_then(|a| {
                a.get(attr::CONN_TIMEOUT)
                    .and_then(|v| v.trim().parse::<i64>().ok())
            })
            .map_or(inner.limits.conn_timeout_default_secs, |s| {
                inner.limits.clamp_conn_timeout(s)
            });
        conn.push(welcome);
        let older = inner.sessions.insert(k.clone(), conn);
        match older {
            Some(old) => old.kick(),
            None => {
                inner.offline_since.remove(&k);
                let body = content::channel_user(special::USER_ONLINE, account);
                inner.special_event(
                    app,
                    special::USER_ONLINE,
                    account,
                    msgtype::CHANNEL_USER_JOIN,
                    &body,
                );
            }
        }
        Ok(LoginInfo {
            conn_timeout_secs: conn_timeout,
        })
    }

    async fn logout(&self, app: &str, account: &str, conn_id: u64) {
        let inner = &self.inner;
        let k = key(app, account);
        if inner
            .sessions
            .remove_if(&k, |_, c| c.id == conn_id)
            .is_some()
        {
            inner.offline_since.insert(k, Instant::now());
            // a caller who went away and does not come back within the grace period
            // ends its unanswered invitations (the callee stops ringing)
            if !inner.invites.is_empty() {
                let grace = Duration::from_secs(inner.limits.invite_offline_grace_secs);
                let mine: Vec<_> = inner
                    .invites
                    .iter()
                    .filter(|i| i.key().0 == app && i.key().1 == account)
                    .map(|i| (i.key().clone(), i.generation))
                    .collect();
                for (ikey, generation) in mine {
                    spawn_invite_timer(&self.inner, ikey, generation, grace, Code::InviteNet);
                }
            }
            let body = content::channel_user(special::USER_ONLINE, account);
            inner.special_event(
                app,
                special::USER_ONLINE,
                account,
                msgtype::CHANNEL_USER_LEAVE,
                &body,
            );
        }
    }

    async fn send_message(&self, app: &str, mail: Mail<'_>) -> EResult<()> {
        let inner = &self.inner;
        if !inner.first_time(app, mail.from, mail.message_id) {
            return Ok(());
        }
        inner.deliver(app, &mail).map(|_| ())
    }

    async fn get_messages(
        &self,
        app: &str,
        account: &str,
        ver_clear: u64,
        max: usize,
    ) -> EResult<MailPage> {
        let inner = &self.inner;
        let now = Instant::now();
        let mut mb = inner.mailboxes.entry(key(app, account)).or_default();
        mb.cleared = mb.cleared.max(ver_clear.min(MAX_VERSION));
        mb.last = mb.last.max(mb.cleared);
        mb.touched = Some(now);
        mb.purge(now);
        let max = max.clamp(1, inner.limits.mailbox_page_max);
        Ok(MailPage {
            ver_clear: mb.cleared,
            msgs: mb
                .msgs
                .iter()
                .take(max)
                .map(|m| (m.version, m.text.clone()))
                .collect(),
        })
    }

    async fn get_messages_by_id(
        &self,
        app: &str,
        account: &str,
        clear_ids: &[String],
        max: usize,
    ) -> EResult<MailPage> {
        let inner = &self.inner;
        let now = Instant::now();
        let mut mb = inner.mailboxes.entry(key(app, account)).or_default();
        let clear: HashSet<&str> = clear_ids.iter().map(String::as_str).collect();
        mb.msgs.retain(|m| !clear.contains(m.id.as_str()));
        mb.touched = Some(now);
        mb.purge(now);
        let max = max.clamp(1, inner.limits.mailbox_page_max);
        let msgs: Vec<(u64, Arc<str>)> = mb
            .msgs
            .iter()
            .take(max)
            .map(|m| (m.version, m.text.clone()))
            .collect();
        // returned messages count as delivered (the mode-1 client never acknowledges them)
        if let Some((v, _)) = msgs.last() {
            mb.cleared = mb.cleared.max(*v);
            mb.purge(now);
        }
        Ok(MailPage {
            ver_clear: mb.cleared,
            msgs,
        })
    }

    async fn user_online(&self, app: &str, account: &str) -> EResult<bool> {
        Ok(self.inner.online(app, account))
    }

    async fn set_user_attr(
        &self,
        app: &str,
        account: &str,
        name: &str,
        value: &str,
    ) -> EResult<()> {
        let mut attrs = self.inner.user_attrs.entry(key(app, account)).or_default();
        if value.is_empty() {
            attrs.remove(name);
        } else {
            if !attrs.contains_key(name) && attrs.len() >= self.inner.limits.attrs_max {
                return Err(ErrorKind::TooLarge);
            }
            attrs.insert(name.to_owned(), value.to_owned());
        }
        Ok(())
    }

    async fn user_attrs(&self, app: &str, account: &str) -> EResult<Vec<(String, String)>> {
        Ok(self
            .inner
            .user_attrs
            .get(&key(app, account))
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    async fn join(
        &self,
        app: &str,
        channel: &str,
        account: &str,
        conn: &ConnHandle,
    ) -> EResult<JoinInfo> {
        let inner = &self.inner;
        let (info, fresh) = loop {
            let arc = inner.channel(app, channel);
            let mut ch = arc.lock();
            if ch.dead {
                continue;
            }
            ch.ttl_gen += 1; // cancels a pending destruction
            let fresh = match ch.members.get_mut(account) {
                Some(m) => {
                    m.conn = conn.clone();
                    false
                }
                None => {
                    ch.next_order += 1;
                    let order = ch.next_order;
                    ch.members.insert(
                        account.to_owned(),
                        Member {
                            conn: conn.clone(),
                            order,
                        },
                    );
                    ch.order.insert(order, account.to_owned());
                    ch.members_changed = true;
                    if ch.notify_users {
                        let body = content::channel_user(channel, account);
                        ch.broadcast(account, msgtype::CHANNEL_USER_JOIN, &body, Some(account));
                    }
                    true
                }
            };
            let info = JoinInfo {
                list: ch.latest(inner.limits.channel_list_max),
                attrs: ch.attrs.clone(),
            };
            break (info, fresh);
        };
        if fresh && !channel.starts_with(special::PREFIX) {
            let body = content::channel_user(channel, account);
            inner.special_event(
                app,
                special::CHANNEL_EVENT,
                account,
                msgtype::CHANNEL_USER_JOIN,
                &body,
            );
        }
        Ok(info)
    }

    async fn leave(&self, app: &str, channel: &str, account: &str, conn_id: u64) -> EResult<()> {
        let inner = &self.inner;
        let Some(arc) = inner.existing_channel(app, channel) else {
            return Ok(());
        };
        let left = {
            let mut ch = arc.lock();
            let mine = ch
                .members
                .get(account)
                .is_some_and(|m| m.conn.id == conn_id);
            if mine {
                if let Some(m) = ch.members.remove(account) {
                    ch.order.remove(&m.order);
                }
                ch.members_changed = true;
                if ch.notify_users {
                    let body = content::channel_user(channel, account);
                    ch.broadcast(account, msgtype::CHANNEL_USER_LEAVE, &body, Some(account));
                }
                schedule_destroy(inner, app, &mut ch);
            }
            mine
        };
        if left && !channel.starts_with(special::PREFIX) {
            let body = content::channel_user(channel, account);
            inner.special_event(
                app,
                special::CHANNEL_EVENT,
                account,
                msgtype::CHANNEL_USER_LEAVE,
                &body,
            );
        }
        Ok(())
    }

    async fn channel_send(
        &self,
        app: &str,
        channel: &str,
        from: &str,
        text: &str,
        force: bool,
        msg_id: Option<&str>,
    ) -> EResult<()> {
        let inner = &self.inner;
        if channel.starts_with(special::PREFIX) {
            return Err(ErrorKind::ReservedChannel);
        }
        let Some(arc) = inner.existing_channel(app, channel) else {
            return if force {
                Ok(())
            } else {
                Err(ErrorKind::NotInChannel)
            };
        };
        let mut ch = arc.lock();
        if !force && !ch.members.contains_key(from) {
            return Err(ErrorKind::NotInChannel);
        }
        if !inner.first_time(app, from, msg_id) {
            return Ok(());
        }
        let limit = ch.sendmsg_limit;
        if !ch.rate.take(limit) {
            return Err(ErrorKind::RateLimited);
        }
        let body = content::channel_msg(channel, from, text);
        ch.broadcast(from, msgtype::CHANNEL_MSG, &body, None);
        Ok(())
    }

    async fn channel_attr(&self, app: &str, channel: &str, from: &str, op: AttrOp) -> EResult<()> {
        let inner = &self.inner;
        if channel.starts_with(special::PREFIX) {
            return Err(ErrorKind::ReservedChannel);
        }
        loop {
            let arc = inner.channel(app, channel);
            let mut ch = arc.lock();
            if ch.dead {
                continue;
            }
            match &op {
                AttrOp::Set { name, value } => {
                    if name == attr::MEMBER_NUM {
                        return Err(ErrorKind::ReadOnlyAttr);
                    }
                    let limit = ch.setattr_limit;
                    if !ch
                        .attr_rates
                        .entry(name.clone())
                        .or_insert_with(|| Bucket::new(limit))
                        .take(limit)
                    {
                        return Err(ErrorKind::RateLimited);
                    }
                    let number = || {
                        value
                            .trim()
                            .parse::<u64>()
                            .map_err(|_| ErrorKind::InvalidArgs)
                    };
                    match name.as_str() {
                        attr::USER_NOTIFICATION => ch.notify_users = number()? != 0,
                        attr::CHANNEL_TTL => ch.ttl_secs = number()?,
                        attr::SENDMSG_LIMIT => {
                            ch.sendmsg_limit = number()?.min(u32::MAX as u64) as u32
                        }
                        attr::SETATTR_LIMIT => {
                            ch.setattr_limit = number()?.min(u32::MAX as u64) as u32
                        }
                        attr::AUTO_UPDATE_NUM => {
                            ch.auto_update_secs = number()?;
                            if ch.auto_update_secs > 0 {
                                ch.members_changed = true;
                                schedule_member_num(inner, app, &mut ch);
                            } else {
                                ch.auto_gen += 1;
                            }
                        }
                        _ => {}
                    }
                    match ch.attrs.iter_mut().find(|(n, _)| n == name) {
                        Some(a) => a.1 = value.clone(),
                        None => {
                            if ch.attrs.len() >= inner.limits.attrs_max {
                                return Err(ErrorKind::TooLarge);
                            }
                            ch.attrs.push((name.clone(), value.clone()))
                        }
                    }
                    let body =
                        content::channel_attr(channel, from, name, value, attr_change::UPDATE);
                    ch.broadcast(from, msgtype::CHANNEL_ATTR_UPDATE, &body, None);
                }
                AttrOp::Del { name } => {
                    if name == attr::MEMBER_NUM {
                        return Err(ErrorKind::ReadOnlyAttr);
                    }
                    ch.attrs.retain(|(n, _)| n != name);
                    ch.reset_builtin(name, &inner.limits);
                    let body = content::channel_attr(channel, from, name, "", attr_change::DEL);
                    ch.broadcast(from, msgtype::CHANNEL_ATTR_UPDATE, &body, None);
                }
                AttrOp::Clear => {
                    let names: Vec<String> = ch.attrs.drain(..).map(|(n, _)| n).collect();
                    for n in names {
                        ch.reset_builtin(&n, &inner.limits);
                    }
                    let body = content::channel_attr(channel, from, "", "", attr_change::CLEAR);
                    ch.broadcast(from, msgtype::CHANNEL_ATTR_UPDATE, &body, None);
                }
            }
            if ch.members.is_empty() {
                schedule_destroy(inner, app, &mut ch);
            }
            return Ok(());
        }
    }

    async fn channel_members(
        &self,
        app: &str,
        channel: &str,
        max: usize,
    ) -> EResult<(usize, Vec<String>)> {
        Ok(match self.inner.existing_channel(app, channel) {
            Some(arc) => {
                let ch = arc.lock();
                (ch.members.len(), ch.latest(max))
            }
            None => (0, Vec::new()),
        })
    }

    async fn channel_has(&self, app: &str, channel: &str, account: &str) -> EResult<bool> {
        Ok(self
            .inner
            .existing_channel(app, channel)
            .is_some_and(|arc| arc.lock().members.contains_key(account)))
    }

    async fn voip(&self, app: &str, from: &str, relay: Relay) -> EResult<()> {
        let inner = &self.inner;
        if relay.peer == from {
            return Err(ErrorKind::InvalidPeer);
        }
        if !inner.first_time(app, from, relay.message_id.as_deref()) {
            return Ok(());
        }
        let ttl = inner.limits.message_ttl_default_secs;
        let body = content::voip(&relay.channel, from, &relay.extra, None);
        let kind = relay.kind.name();
        match relay.kind {
            VoipKind::Invite => {
                let (require_online, timeout) = parse_extra_options(&relay.extra);
                let online = inner.online(app, &relay.peer);
                if require_online && !online {
                    inner.voip_failed(
                        app,
                        from,
                        &relay.channel,
                        &relay.peer,
                        &relay.extra,
                        Code::InvitePeerOffline,
                    );
                    return Ok(());
                }
                let version =
                    inner.deliver(app, &voip_mail(from, &relay.peer, kind, &body, ttl))?;
                let generation = inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
                let ikey = (
                    app.to_owned(),
                    from.to_owned(),
                    relay.channel.clone(),
                    relay.peer.clone(),
                );
                inner.invites.insert(
                    ikey.clone(),
                    Invite {
                        extra: relay.extra.clone(),
                        acked: false,
                        version,
                        generation,
                    },
                );
                let timeout = timeout.min(inner.limits.invite_timeout_max_secs);
                if timeout > 0 {
                    spawn_invite_timer(
                        &self.inner,
                        ikey.clone(),
                        generation,
                        Duration::from_secs(timeout),
                        Code::InviteTimeout,
                    );
                }
                if !online {
                    let grace = Duration::from_secs(inner.limits.invite_offline_grace_secs);
                    spawn_invite_timer(
                        &self.inner,
                        ikey,
                        generation,
                        grace,
                        Code::InvitePeerOffline,
                    );
                }
            }
            other => {
                // replies from the callee, or the caller withdrawing (bye)
                let as_callee = (
                    app.to_owned(),
                    relay.peer.clone(),
                    relay.channel.clone(),
                    from.to_owned(),
                );
                let as_caller = (
                    app.to_owned(),
                    from.to_owned(),
                    relay.channel.clone(),
                    relay.peer.clone(),
                );
                match other {
                    VoipKind::Ack => {
                        if let Some(mut i) = inner.invites.get_mut(&as_callee) {
                            i.acked = true;
                        }
                    }
                    VoipKind::Accept => {
                        inner.invites.remove(&as_callee);
                    }
                    VoipKind::Refuse | VoipKind::Bye => {
                        inner.invites.remove(&as_callee);
                        inner.invites.remove(&as_caller);
                    }
                    _ => {}
                }
                inner.deliver(app, &voip_mail(from, &relay.peer, kind, &body, ttl))?;
            }
        }
        Ok(())
    }

    async fn live_nodes(&self) -> Vec<String> {
        Vec::new()
    }

    fn local_sessions(&self) -> usize {
        self.inner.sessions.len()
    }

    fn footprint(&self) -> super::Footprint {
        let i = &self.inner;
        let mut channels = 0;
        let mut members = 0;
        for c in i.channels.iter() {
            let c = c.lock();
            if !c.dead {
                channels += 1;
                members += c.members.len();
            }
        }
        super::Footprint {
            sessions: i.sessions.len(),
            channels,
            members,
            invites: i.invites.len(),
            stored_messages: i.mailboxes.iter().map(|m| m.msgs.len()).sum(),
            user_attrs: i.user_attrs.iter().map(|a| a.len()).sum(),
        }
    }
}

/// After `after`, fail the invite with `code` unless it was answered (or, for the offline
/// rule, unless the callee came online or acknowledged it; for a caller who went away
/// (`InviteNet`), unless the caller came back).
fn spawn_invite_timer(
    inner: &Arc<Inner>,
    ikey: (String, String, String, String),
    generation: u64,
    after: Duration,
    code: Code,
) {
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let Some(inner) = weak.upgrade() else { return };
        let (app, caller, channel, callee) = &ikey;
        let fire = match inner.invites.get(&ikey) {
            Some(i) if i.generation == generation => match code {
                Code::InvitePeerOffline => !i.acked && !inner.online(app, callee),
                Code::InviteNet => !inner.online(app, caller),
                _ => true,
            },
            _ => false,
        };
        if !fire {
            return;
        }
        let Some((_, invite)) = inner.invites.remove(&ikey) else {
            return;
        };
        // destroy the invite: an undelivered copy is withdrawn; a delivered one is ended
        let withdrawn = inner.withdraw(app, callee, invite.version);
        if !withdrawn || inner.online(app, callee) {
            let body = content::voip(
                channel,
                caller,
                &Value::String(String::new()),
                Some(code.value()),
            );
            let ttl = inner.limits.message_ttl_default_secs;
            let _ = inner.deliver(
                app,
                &voip_mail(caller, callee, VoipKind::Bye.name(), &body, ttl),
            );
        }
        inner.voip_failed(app, caller, channel, callee, &invite.extra, code);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_options_are_read_leniently() {
        assert_eq!(
            parse_extra_options(&Value::String(r#"{"_require_peer_online":1}"#.into())),
            (true, 0)
        );
        assert_eq!(
            parse_extra_options(&serde_json::json!({"_timeout": 5})),
            (false, 5)
        );
        assert_eq!(
            parse_extra_options(&serde_json::json!({"_timeout": "7", "_require_peer_online": "0"})),
            (false, 7)
        );
        assert_eq!(
            parse_extra_options(&Value::String("not json".into())),
            (false, 0)
        );
        assert_eq!(parse_extra_options(&Value::Null), (false, 0));
    }
}
