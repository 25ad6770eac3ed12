//! The embedded, single-process store: sharded maps in memory, timers as tokio tasks (so
//! tests can run them on paused time).
//!
//! Atomicity: a channel is one `Mutex` (sequence numbers are assigned and frames queued under
//! it, so every member sees a channel's events in order); a mailbox is one `DashMap` entry
//! (versions assigned and pushes queued under it). No lock is held across an `await`, and no
//! code holds two channel locks at once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::mapref::one::RefMut;
use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::time::Instant;

use opensig_protocol::frame::{out, Kept};
use opensig_protocol::ident::{Account, AppId, ChannelName};
use opensig_protocol::limits::MAX_SAFE_INTEGER;
use opensig_protocol::Limits;

use super::{now_ms, page_start};
use super::{
    Appended, AttrChange, AttrOp, AttrOutcome, AttrQuota, Chan, ChannelPage, ChannelSettings,
    Dedup, Event, EventCap, EventPage, Footprint, History, InviteKey, InviteOpen, InviteRecord,
    InviteRelay, InviteState, InviteStep, Joined, Joining, Leaving, MailItem, MailPage, MailQuota,
    Message, Opened, Opening, Poll, Publish, Published, Relayed, SResult, Setting, StepEvents,
    Store, Take, Timer, User, UserAttrSet, When, Work, WorkSender,
};
use crate::delivery::{ConnHandle, Frame};
use crate::ratelimit::Bucket;

/// Where an invitation is within its caller's (`Inner::invites`): the channel and the callee.
type Callee = (ChannelName, Account);

/// An invitation's caller (`Inner::invites`' key) and its place there.
fn invite_at(k: &InviteKey) -> (String, Callee) {
    (
        key(&k.app, &k.caller),
        (k.channel.clone(), k.callee.clone()),
    )
}

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

/// What all mailboxes of one app hold together (messages and their text bytes).
#[derive(Debug, Default)]
struct AppMail {
    messages: AtomicUsize,
    bytes: AtomicUsize,
    /// When the app's expired mail was last dropped to make room.
    purged: Mutex<Option<Instant>>,
}

/// Whether a total of `now` can grow by `add` under a cap of `max` (0: no cap; growing by
/// nothing always can).
fn within(now: usize, add: usize, max: usize) -> bool {
    max == 0 || add == 0 || now + add <= max
}

impl AppMail {
    /// Whether one more message of `len` bytes stays within the quota.
    fn has_room(&self, len: usize, quota: &MailQuota<'_>) -> bool {
        within(self.messages.load(Ordering::Relaxed), 1, quota.app_messages)
            && within(self.bytes.load(Ordering::Relaxed), len, quota.app_bytes)
    }
}

#[derive(Debug)]
struct Mailbox {
    last: u64,
    cleared: u64,
    /// Only changed through `push` and `retain`, which keep `app` up to date.
    msgs: VecDeque<Stored>,
    touched: Option<Instant>,
    app: Arc<AppMail>,
}

impl Mailbox {
    fn new(app: Arc<AppMail>) -> Mailbox {
        Mailbox {
            last: 0,
            cleared: 0,
            msgs: VecDeque::new(),
            touched: None,
            app,
        }
    }

    fn push(&mut self, m: Stored) {
        self.app.messages.fetch_add(1, Ordering::Relaxed);
        self.app.bytes.fetch_add(m.text.len(), Ordering::Relaxed);
        self.msgs.push_back(m);
    }

    fn retain(&mut self, mut keep: impl FnMut(&Stored) -> bool) {
        let (mut n, mut bytes) = (0, 0);
        self.msgs.retain(|m| {
            let k = keep(m);
            if !k {
                n += 1;
                bytes += m.text.len();
            }
            k
        });
        self.app.messages.fetch_sub(n, Ordering::Relaxed);
        self.app.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Number the messages above the acknowledged version again from `from + 1` on, in
    /// their order ([`super::renumbered`]); not when that would pass `MAX_SAFE_INTEGER`.
    fn renumber(&mut self, from: u64) {
        let cleared = self.cleared;
        let n = self.msgs.iter().filter(|m| m.version > cleared).count() as u64;
        if n == 0 || from.saturating_add(n) > MAX_SAFE_INTEGER {
            return;
        }
        let mut v = from;
        for m in self.msgs.iter_mut().filter(|m| m.version > cleared) {
            v += 1;
            m.version = v;
        }
        self.last = self.last.max(v);
    }

    /// Empty and untouched for `keep`: its numbering is gone.
    fn forgotten(&self, now: Instant, keep: Duration) -> bool {
        self.msgs.is_empty() && self.touched.is_none_or(|t| now.duration_since(t) > keep)
    }

    fn purge(&mut self, now: Instant) {
        let cleared = self.cleared;
        self.retain(|m| m.version > cleared && m.expires > now);
    }

    fn page(&self, max: usize) -> MailPage {
        MailPage {
            ver_clear: self.cleared,
            msgs: self
                .msgs
                .iter()
                .take(max)
                .map(|m| (m.version, m.text.clone()))
                .collect(),
        }
    }
}

/// Message ids seen recently, per sender, to drop resends: every id of the window (as with
/// Redis; bounded by the sender's message rate × the window, 18,000 at the defaults). Ids are
/// kept as 64-bit keyed hashes (SipHash with this process's random keys), so their size
/// matters; a false "resend" needs a collision among those, which a client cannot aim at
/// without the keys.
#[derive(Debug, Default)]
struct Seen {
    order: VecDeque<(Instant, u64)>,
    ids: HashSet<u64>,
}

/// The keys of the id hashes (one per process).
fn id_hash(id: &str) -> u64 {
    use std::hash::BuildHasher;
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default).hash_one(id)
}

impl Seen {
    fn first_time(&mut self, id: &str, now: Instant, window: Duration) -> bool {
        while let Some((t, _)) = self.order.front() {
            if now.duration_since(*t) <= window {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        let h = id_hash(id);
        if !self.ids.insert(h) {
            return false;
        }
        self.order.push_back((now, h));
        true
    }

    fn forget(&mut self, id: &str) {
        let h = id_hash(id);
        self.ids.remove(&h);
        self.order.retain(|(_, i)| *i != h);
    }
}

#[derive(Debug)]
struct Member {
    conn: ConnHandle,
    order: u64,
}

/// What the channels of one app hold together: channels with attributes, and the bytes of
/// their attributes' names and values.
#[derive(Debug, Default)]
struct AppChannels {
    channels: AtomicUsize,
    bytes: AtomicUsize,
    /// The names of the app's channels that have members, for listing them by name (taken
    /// after a channel's lock, never before one).
    occupied: Mutex<BTreeSet<String>>,
}

#[derive(Debug)]
struct Channel {
    members: HashMap<String, Member>,
    /// join order → account (for "the latest N").
    order: BTreeMap<u64, String>,
    next_order: u64,
    /// Only changed through `change` and `release`, which keep `app` up to date.
    attrs: Vec<(String, String)>,
    /// Bytes of the attributes' names and values.
    attr_bytes: usize,
    app: Arc<AppChannels>,
    settings: ChannelSettings,
    seq: u64,
    /// The latest message number.
    msgs: u64,
    /// Kept messages, oldest first, and the bytes of their text.
    history: VecDeque<Kept>,
    history_bytes: usize,
    rate: Bucket,
    attr_rates: HashMap<String, Bucket>,
    changed: bool,
    ttl_gen: u64,
    dead: bool,
}

impl Channel {
    fn new(settings: ChannelSettings, app: Arc<AppChannels>) -> Channel {
        Channel {
            members: HashMap::new(),
            order: BTreeMap::new(),
            next_order: 0,
            attrs: Vec::new(),
            attr_bytes: 0,
            app,
            rate: Bucket::new(settings.sendmsg_limit),
            settings,
            seq: 0,
            msgs: 0,
            history: VecDeque::new(),
            history_bytes: 0,
            attr_rates: HashMap::new(),
            changed: false,
            ttl_gen: 0,
            dead: false,
        }
    }

    /// The channel's numbers caught up to what a member saw ([`super::catch_up`]).
    fn catch_up(&mut self, seen: opensig_protocol::frame::Seen) {
        self.seq = super::catch_up(self.seq, seen.seq);
        self.msgs = super::catch_up(self.msgs, seen.msg);
    }

    /// Sequence `event` and queue it for every member but its `exclude`.
    fn publish(&mut self, event: Event<'_>) {
        self.publish_message(event, None);
    }

    /// Sequence `event` (a message: number and keep it too) and queue it for every member
    /// but its `exclude`.
    fn publish_message(&mut self, event: Event<'_>, message: Option<Message<'_>>) {
        self.seq += 1;
        let frame: Frame = match message {
            None => event.frame.fill(self.seq).into(),
            Some(m) => {
                self.msgs += 1;
                if m.keep && self.settings.history > 0 {
                    self.history_bytes += m.text.len();
                    self.history.push_back(Kept {
                        n: self.msgs,
                        seq: self.seq,
                        ts: now_ms(),
                        account: m.from.to_owned(),
                        msg: m.text.to_owned(),
                        id: m.id,
                    });
                }
                self.trim_history(m.max_age, m.max_bytes);
                out::channel2_numbered(event.frame, self.seq, self.msgs, m.id).into()
            }
        };
        for (account, m) in &self.members {
            if Some(account.as_str()) != event.exclude.map(|a| a.as_str()) {
                m.conn.push(frame.clone());
            }
        }
    }

    /// Drop kept messages beyond the channel's size, older than `max_age` or past
    /// `max_bytes`, the oldest first.
    fn trim_history(&mut self, max_age: Duration, max_bytes: usize) {
        let oldest = now_ms().saturating_sub(max_age.as_millis() as u64);
        while let Some(first) = self.history.front() {
            let over = self.history.len() > self.settings.history as usize
                || self.history_bytes > max_bytes
                || first.ts < oldest;
            if !over {
                break;
            }
            self.history_bytes -= first.msg.len();
            self.history.pop_front();
        }
    }

    fn latest(&self, max: usize) -> Vec<String> {
        let mut v: Vec<String> = self.order.values().rev().take(max).cloned().collect();
        v.reverse();
        v
    }

    /// Apply an attribute change (under the channel's lock).
    fn change(&mut self, op: AttrOp<'_>) -> AttrOutcome {
        match op {
            AttrOp::Set(set) => {
                if set.rate_limited {
                    let limit = self.settings.setattr_limit;
                    let bucket = self
                        .attr_rates
                        .entry(set.name.to_owned())
                        .or_insert_with(|| Bucket::new(limit));
                    if !bucket.take(limit) {
                        return AttrOutcome::RateLimited;
                    }
                }
                let count = self.attrs.len();
                let old = self.attrs.iter().position(|(n, _)| n == set.name);
                let (before, after) = match old {
                    Some(i) => (self.attr_bytes, self.attr_bytes - self.attrs[i].1.len()),
                    None if count >= set.max => return AttrOutcome::TooMany,
                    None => (self.attr_bytes, self.attr_bytes + set.name.len()),
                };
                let after = after + set.value.len();
                if !self.has_room(after.saturating_sub(before), &set.quota) {
                    return AttrOutcome::AppFull;
                }
                match old {
                    Some(i) => self.attrs[i].1 = set.value.to_owned(),
                    None => self.attrs.push((set.name.to_owned(), set.value.to_owned())),
                }
                self.account(before, after);
                if let Some(s) = set.setting {
                    self.apply(s);
                }
            }
            AttrOp::Del { name, setting } => {
                if let Some(i) = self.attrs.iter().position(|(n, _)| n == name) {
                    let (n, v) = self.attrs.remove(i);
                    self.account(self.attr_bytes, self.attr_bytes - n.len() - v.len());
                }
                if let Some(s) = setting {
                    self.apply(s);
                }
            }
            AttrOp::Clear { defaults } => {
                self.release();
                self.settings = defaults;
                self.apply(Setting::History(defaults.history));
            }
        }
        AttrOutcome::Done
    }

    /// Whether `more` bytes (and the channel itself, when it has no attributes yet) fit in
    /// the app's quota.
    fn has_room(&self, more: usize, quota: &AttrQuota) -> bool {
        let new_channel = usize::from(self.attrs.is_empty());
        within(
            self.app.channels.load(Ordering::Relaxed),
            new_channel,
            quota.channels,
        ) && within(self.app.bytes.load(Ordering::Relaxed), more, quota.bytes)
    }

    /// The attributes went from `before` to `after` bytes (and the channel has attributes
    /// exactly when `attrs` is not empty now).
    fn account(&mut self, before: usize, after: usize) {
        let had = before > 0;
        self.attr_bytes = after;
        self.app.bytes.fetch_add(after, Ordering::Relaxed);
        self.app.bytes.fetch_sub(before, Ordering::Relaxed);
        match (had, !self.attrs.is_empty()) {
            (false, true) => self.app.channels.fetch_add(1, Ordering::Relaxed),
            (true, false) => self.app.channels.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// Drop every attribute (the channel's state is going).
    fn release(&mut self) {
        let before = self.attr_bytes;
        let had = !self.attrs.is_empty();
        self.attrs.clear();
        self.attr_bytes = 0;
        self.app.bytes.fetch_sub(before, Ordering::Relaxed);
        if had {
            self.app.channels.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn apply(&mut self, setting: Setting) {
        let s = &mut self.settings;
        match setting {
            Setting::Notify(on) => s.notify = on,
            Setting::Ttl(secs) => s.ttl_secs = secs,
            Setting::SendmsgLimit(n) => s.sendmsg_limit = n,
            Setting::SetattrLimit(n) => s.setattr_limit = n,
            Setting::AutoUpdate(secs) => s.auto_update_secs = secs,
            Setting::History(n) => {
                s.history = n;
                while self.history.len() > n as usize {
                    if let Some(k) = self.history.pop_front() {
                        self.history_bytes -= k.msg.len();
                    }
                }
            }
        }
    }
}

struct Inner {
    defaults: ChannelSettings,
    /// How long a mailbox's numbering is kept after its last message or poll.
    mailbox_keep: Duration,
    sessions: DashMap<String, ConnHandle>,
    mailboxes: DashMap<String, Mailbox>,
    /// Per app: what its mailboxes hold.
    app_mail: DashMap<String, Arc<AppMail>>,
    /// Per app: what its channels hold.
    app_channels: DashMap<String, Arc<AppChannels>>,
    /// Per sender: messages left for offline recipients in the current window.
    offline_sent: DashMap<String, Window>,
    user_attrs: DashMap<String, BTreeMap<String, String>>,
    channels: DashMap<String, Arc<Mutex<Channel>>>,
    /// Per caller: its invitations (a logout finds its own without a look at anyone else's).
    invites: DashMap<String, HashMap<Callee, InviteRecord>>,
    seen: DashMap<String, Seen>,
    /// The pending timers: the token of each one's latest schedule.
    timers: Mutex<HashMap<Timer, u64>>,
    timer_seq: AtomicU64,
    work: Mutex<Option<WorkSender<Memory>>>,
    /// Per app and partition: its event log.
    events: DashMap<(String, u32), Mutex<EventLog>>,
    /// Per app, consumer and partition: the last sequence number handled.
    event_cursors: DashMap<(String, String, u32), u64>,
    /// Per app, consumer and partition: who consumes it, until when.
    event_leases: DashMap<(String, String, u32), (String, Instant)>,
    /// This node's console report, until when it is current.
    report: Mutex<Option<(String, Instant)>>,
    /// Per watched account (`app account`): the sessions watching it.
    watchers: DashMap<String, HashMap<u64, ConnHandle>>,
    /// Per app: its watches.
    app_watches: DashMap<String, usize>,
    /// Accounts whose connection dropped, until when they count as unreachable.
    unreachable: DashMap<String, Instant>,
}

/// One partition of an app's event log.
#[derive(Default)]
struct EventLog {
    last: u64,
    /// `(sequence, event, appended at)`, oldest first.
    entries: VecDeque<(u64, Arc<str>, Instant)>,
    bytes: usize,
}

impl EventLog {
    /// Drop the oldest entries that fall outside `cap`.
    fn trim(&mut self, cap: EventCap, now: Instant) {
        while let Some((_, text, at)) = self.entries.front() {
            let over = (cap.max_events > 0 && self.entries.len() > cap.max_events)
                || (cap.max_bytes > 0 && self.bytes > cap.max_bytes)
                || now.duration_since(*at) > cap.max_age;
            if !over {
                break;
            }
            self.bytes -= text.len();
            self.entries.pop_front();
        }
    }
}

/// The in-memory store. Cloning shares the same state.
#[derive(Clone)]
pub struct Memory {
    inner: Arc<Inner>,
}

impl Memory {
    /// A fresh, empty store. Starts a background sweeper (needs a tokio runtime).
    pub fn new(limits: &Limits) -> Memory {
        let inner = Arc::new(Inner {
            defaults: ChannelSettings::defaults(limits),
            mailbox_keep: Duration::from_secs(limits.mailbox_state_keep_secs),
            sessions: DashMap::new(),
            mailboxes: DashMap::new(),
            app_mail: DashMap::new(),
            offline_sent: DashMap::new(),
            app_channels: DashMap::new(),
            user_attrs: DashMap::new(),
            channels: DashMap::new(),
            invites: DashMap::new(),
            seen: DashMap::new(),
            timers: Mutex::new(HashMap::new()),
            timer_seq: AtomicU64::new(0),
            work: Mutex::new(None),
            events: DashMap::new(),
            event_cursors: DashMap::new(),
            event_leases: DashMap::new(),
            report: Mutex::new(None),
            watchers: DashMap::new(),
            app_watches: DashMap::new(),
            unreachable: DashMap::new(),
        });
        tokio::spawn(sweeper(Arc::downgrade(&inner), limits.dedup_window_secs));
        Memory { inner }
    }
}

/// Drops expired mail, idle empty mailboxes and stale dedup sets every minute.
async fn sweeper(inner: Weak<Inner>, dedup_window_secs: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        inner.mailboxes.retain(|_, mb| {
            mb.purge(now);
            !mb.forgotten(now, inner.mailbox_keep)
        });
        inner.offline_sent.retain(|_, w| now < w.ends);
        inner
            .app_mail
            .retain(|_, a| Arc::strong_count(a) > 1 || a.messages.load(Ordering::Relaxed) > 0);
        inner
            .app_channels
            .retain(|_, a| Arc::strong_count(a) > 1 || a.channels.load(Ordering::Relaxed) > 0);
        let window = Duration::from_secs(dedup_window_secs);
        inner.seen.retain(|_, s| {
            s.order
                .back()
                .is_some_and(|(t, _)| now.duration_since(*t) <= window)
        });
    }
}

/// A fixed window's count.
#[derive(Debug)]
struct Window {
    ends: Instant,
    n: u32,
}

impl Inner {
    /// Remove the invitation when `take` says so (and its caller's entry with its last).
    fn invite_remove_if(
        &self,
        k: &InviteKey,
        take: impl FnOnce(&InviteRecord) -> bool,
    ) -> Option<InviteRecord> {
        let (caller, at) = invite_at(k);
        let Entry::Occupied(mut calls) = self.invites.entry(caller) else {
            return None;
        };
        let taken = match calls.get().get(&at) {
            Some(r) if take(r) => calls.get_mut().remove(&at),
            _ => None,
        };
        if calls.get().is_empty() {
            calls.remove();
        }
        taken
    }

    /// The account's mailbox (an empty one left `mailbox_keep` since its last message or
    /// poll starts again from version 1).
    fn mailbox(&self, app: &str, account: &str, now: Instant) -> RefMut<'_, String, Mailbox> {
        let mut mb = self
            .mailboxes
            .entry(key(app, account))
            .or_insert_with(|| Mailbox::new(self.app_mail.entry(app.into()).or_default().clone()));
        if mb.forgotten(now, self.mailbox_keep) {
            mb.last = 0;
            mb.cleared = 0;
        }
        mb
    }

    /// Count a message for an offline recipient against its sender's window; false when the
    /// window's allowance is used up.
    fn offline_allowance(&self, app: &str, quota: &MailQuota<'_>, now: Instant) -> bool {
        let Some(sender) = quota.sender.filter(|_| quota.offline_per_sender > 0) else {
            return true;
        };
        let mut w = self.offline_sent.entry(key(app, sender)).or_insert(Window {
            ends: now + quota.window,
            n: 0,
        });
        if now >= w.ends {
            *w = Window {
                ends: now + quota.window,
                n: 0,
            };
        }
        if w.n >= quota.offline_per_sender {
            return false;
        }
        w.n += 1;
        true
    }

    fn channel(&self, app: &str, name: &str) -> Arc<Mutex<Channel>> {
        self.channels
            .entry(key(app, name))
            .or_insert_with(|| {
                let app = self.app_channels.entry(app.into()).or_default().clone();
                Arc::new(Mutex::new(Channel::new(self.defaults, app)))
            })
            .clone()
    }

    fn existing_channel(&self, app: &str, name: &str) -> Option<Arc<Mutex<Channel>>> {
        self.channels.get(&key(app, name)).map(|c| c.clone())
    }

    fn first_time(&self, app: &str, dedup: Option<Dedup<'_>>) -> bool {
        let Some(d) = dedup else { return true };
        self.seen
            .entry(key(app, d.from))
            .or_default()
            .first_time(d.id, Instant::now(), d.window)
    }

    fn forget(&self, app: &str, dedup: Option<Dedup<'_>>) {
        if let Some(d) = dedup {
            if let Some(mut s) = self.seen.get_mut(&key(app, d.from)) {
                s.forget(d.id);
            }
        }
    }

    fn append(&self, app: &str, to: &str, item: &MailItem<'_>) -> Appended {
        let max = item.max;
        if !self.first_time(app, item.dedup) {
            return Appended::Duplicate;
        }
        let k = key(app, to);
        let now = Instant::now();
        let mut mb = self.mailbox(app, to, now);
        // expired mail does not hold the app's quota (within QUOTA_EXPIRY_STEP, as with Redis)
        if !mb.app.has_room(item.text.len(), &item.quota) {
            let app_mail = mb.app.clone();
            drop(mb); // the walk takes every mailbox's lock
            self.purge_app(app, &app_mail, now);
            mb = self.mailbox(app, to, now);
        }
        if mb.msgs.len() >= max {
            mb.purge(now);
        }
        let quota = &item.quota;
        let refused = if mb.msgs.len() >= max || mb.last >= MAX_SAFE_INTEGER {
            Some(Appended::Full)
        } else if !mb.app.has_room(item.text.len(), quota) {
            Some(Appended::AppFull)
        } else if self.sessions.contains_key(&k) {
            None
        } else if quota.busy {
            Some(Appended::Busy)
        } else if !self.offline_allowance(app, quota, now) {
            Some(Appended::SenderLimited)
        } else {
            None
        };
        if let Some(refused) = refused {
            drop(mb);
            self.forget(app, item.dedup);
            return refused;
        }
        mb.last += 1;
        let version = mb.last;
        mb.touched = Some(now);
        mb.push(Stored {
            version,
            text: item.text.into(),
            id: item.id.into(),
            expires: now + item.ttl,
        });
        // queued under the mailbox entry lock: pushes leave in version order
        let offline = match self.sessions.get(&k) {
            Some(conn) => {
                conn.push(item.push.fill(version).into());
                false
            }
            None => {
                self.fire(item.events, When::Offline);
                true
            }
        };
        self.fire(item.events, When::Done);
        Appended::Stored { version, offline }
    }

    /// Append `event` to the partition of `app`'s log; its sequence number.
    fn log_append(&self, app: &str, partition: u32, event: &str, cap: EventCap) -> u64 {
        let log = self.events.entry((app.to_string(), partition)).or_default();
        let mut log = log.lock();
        let now = Instant::now();
        log.last += 1;
        let seq = log.last;
        log.bytes += event.len();
        log.entries.push_back((seq, event.into(), now));
        log.trim(cap, now);
        seq
    }

    /// The step's outcome `when` happened: append its events planned for it.
    fn fire(&self, out: &StepEvents, when: When) {
        for e in out.on(when) {
            self.log_append(&out.app, e.partition, &e.text.get(), out.cap);
        }
    }

    /// Drop the app's expired mail; at most every `QUOTA_EXPIRY_STEP` (it walks every mailbox).
    fn purge_app(&self, app: &str, mail: &AppMail, now: Instant) {
        {
            let mut last = mail.purged.lock();
            if last.is_some_and(|t| now.duration_since(t) < super::QUOTA_EXPIRY_STEP) {
                return;
            }
            *last = Some(now);
        }
        let prefix = key(app, "");
        for mut mb in self.mailboxes.iter_mut() {
            if mb.key().starts_with(&prefix) {
                mb.purge(now);
            }
        }
    }

    fn send_work(&self, w: Work<Memory>) {
        if let Some(tx) = self.work.lock().as_ref() {
            let _ = tx.send(w);
        }
    }
}

/// An empty channel goes: at once without attributes (returns true: the caller, holding the
/// lock, removes it), after its TTL with some.
fn empty_channel(inner: &Arc<Inner>, app: &str, name: &str, ch: &mut Channel) -> bool {
    if !ch.members.is_empty() {
        return false;
    }
    ch.ttl_gen += 1;
    if ch.attrs.is_empty() && ch.history.is_empty() {
        ch.dead = true;
        return true;
    }
    let generation = ch.ttl_gen;
    // at least 1 s, as with Redis (an expiry of 0 would delete at once)
    let ttl = Duration::from_secs(match ch.attrs.is_empty() {
        true => ch.settings.keep_empty_secs,
        false => ch.settings.ttl_secs,
    })
    .max(Duration::from_secs(1));
    let k = key(app, name);
    // the rules hear of attributes that expire
    let expired = AppId::from_stored(app)
        .zip(ChannelName::from_stored(name))
        .map(|(a, c)| Timer::ChannelExpired(a, c));
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        tokio::time::sleep(ttl).await;
        let Some(inner) = weak.upgrade() else { return };
        let Some(arc) = inner.channels.get(&k).map(|c| c.clone()) else {
            return;
        };
        let mut ch = arc.lock();
        if ch.ttl_gen == generation && ch.members.is_empty() {
            ch.dead = true;
            let had_attrs = !ch.attrs.is_empty();
            ch.release();
            drop(ch);
            inner.channels.remove_if(&k, |_, v| Arc::ptr_eq(v, &arc));
            if let (true, Some(timer)) = (had_attrs, expired) {
                inner.send_work(Work::Timer { timer, claim: () });
            }
        }
    });
    false
}

/// Remove a channel found dead under its lock (now released).
fn remove_dead(inner: &Inner, app: &str, name: &str, arc: &Arc<Mutex<Channel>>) {
    inner
        .channels
        .remove_if(&key(app, name), |_, v| Arc::ptr_eq(v, arc));
}

impl Store for Memory {
    type Session = ConnHandle;
    type Claim = ();

    fn run_work(&self, work: WorkSender<Self>) {
        *self.inner.work.lock() = Some(work);
    }

    fn session_of(&self, conn: &ConnHandle) -> ConnHandle {
        conn.clone()
    }

    async fn session_open(&self, s: Opening<'_>) -> SResult<Opened<ConnHandle>> {
        s.conn.push(s.welcome);
        let k = key(s.user.app, s.user.account);
        let attr = (self.inner.user_attrs.get(&k)).and_then(|a| a.get(s.attr).cloned());
        // under the account's entry: a racing open or close of the account waits
        let inner = &self.inner;
        let previous = match inner.sessions.entry(k) {
            Entry::Occupied(mut e) => Some(e.insert(s.conn.clone())),
            Entry::Vacant(e) => {
                e.insert(s.conn.clone());
                inner.fire(s.events, When::First);
                None
            }
        };
        inner.fire(s.events, When::Done);
        Ok(Opened { previous, attr })
    }

    async fn session_close(
        &self,
        user: User<'_>,
        session: &ConnHandle,
        events: &StepEvents,
    ) -> SResult<bool> {
        let k = key(user.app, user.account);
        let inner = &self.inner;
        let removed = match inner.sessions.entry(k) {
            Entry::Occupied(e) if e.get().id == session.id => {
                e.remove();
                inner.fire(events, When::Done);
                true
            }
            _ => false,
        };
        Ok(removed)
    }

    async fn session_alive(&self, session: &ConnHandle) -> bool {
        session.is_open()
    }

    async fn kick(&self, _user: User<'_>, session: &ConnHandle) -> SResult<()> {
        session.kick();
        Ok(())
    }

    async fn online(&self, user: User<'_>) -> SResult<bool> {
        Ok(self
            .inner
            .sessions
            .contains_key(&key(user.app, user.account)))
    }

    async fn session_get(&self, user: User<'_>) -> SResult<Option<ConnHandle>> {
        let k = key(user.app, user.account);
        Ok(self.inner.sessions.get(&k).map(|c| c.clone()))
    }

    async fn user_attrs(&self, user: User<'_>) -> SResult<Vec<(String, String)>> {
        let attrs = self.inner.user_attrs.get(&key(user.app, user.account));
        Ok(attrs
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    async fn user_attr_set(&self, user: User<'_>, set: UserAttrSet<'_>) -> SResult<bool> {
        let k = key(user.app, user.account);
        let Some(value) = set.value else {
            let mut empty = false;
            if let Some(mut a) = self.inner.user_attrs.get_mut(&k) {
                a.remove(set.name);
                empty = a.is_empty();
            }
            if empty {
                self.inner.user_attrs.remove_if(&k, |_, a| a.is_empty());
            }
            return Ok(true);
        };
        let mut attrs = self.inner.user_attrs.entry(k).or_default();
        if !attrs.contains_key(set.name) && attrs.len() >= set.max {
            return Ok(false);
        }
        attrs.insert(set.name.to_owned(), value.to_owned());
        Ok(true)
    }

    async fn user_attr_count(&self, user: User<'_>) -> SResult<usize> {
        let attrs = self.inner.user_attrs.get(&key(user.app, user.account));
        Ok(attrs.map_or(0, |a| a.len()))
    }

    async fn user_attrs_clear(&self, user: User<'_>) -> SResult<()> {
        self.inner.user_attrs.remove(&key(user.app, user.account));
        Ok(())
    }

    async fn mail_append(&self, to: User<'_>, item: MailItem<'_>) -> SResult<Appended> {
        Ok(self.inner.append(to.app, to.account, &item))
    }

    async fn mail_poll(&self, user: User<'_>, poll: Poll<'_>) -> SResult<MailPage> {
        let now = Instant::now();
        // a mailbox nobody wrote to, polled from 0 (every login of such an account), is
        // not made for that: it would hold nothing but zeros for the keep time
        let from_zero = matches!(poll, Poll::Versions { ver_clear: 0, .. } | Poll::Ids { .. });
        let keep = self.inner.mailbox_keep;
        let held = |k| {
            let mb = self.inner.mailboxes.get(&k);
            mb.is_some_and(|m| !m.forgotten(now, keep))
        };
        if from_zero && !held(key(user.app, user.account)) {
            return Ok(MailPage::default());
        }
        let mut mb = self.inner.mailbox(user.app, user.account, now);
        mb.touched = Some(now);
        match poll {
            Poll::Versions {
                ver_clear,
                max,
                seen_id,
            } => {
                let want = ver_clear.min(MAX_SAFE_INTEGER);
                let at_want = mb
                    .msgs
                    .iter()
                    .find(|m| m.version == want && want > mb.cleared);
                if super::renumbered(want, mb.last, at_want.map(|m| m.id.as_str()), seen_id) {
                    let from = want.max(mb.last);
                    mb.renumber(from);
                }
                mb.cleared = mb.cleared.max(want);
                mb.last = mb.last.max(mb.cleared);
                mb.purge(now);
                Ok(mb.page(max))
            }
            Poll::Ids { clear, max } => {
                let clear: HashSet<&str> = clear.iter().map(String::as_str).collect();
                mb.retain(|m| !clear.contains(m.id.as_str()));
                mb.purge(now);
                let page = mb.page(max);
                // returned messages count as delivered (mode-1 clients never acknowledge)
                if let Some((v, _)) = page.msgs.last() {
                    mb.cleared = mb.cleared.max(*v);
                    mb.purge(now);
                }
                Ok(MailPage {
                    ver_clear: mb.cleared,
                    msgs: page.msgs,
                })
            }
        }
    }

    async fn mail_withdraw(&self, user: User<'_>, version: u64, id: &str) -> SResult<bool> {
        let Some(mut mb) = self.inner.mailboxes.get_mut(&key(user.app, user.account)) else {
            return Ok(false);
        };
        let before = mb.msgs.len();
        mb.retain(|m| m.version != version || m.id != id);
        Ok(before != mb.msgs.len())
    }

    async fn join(&self, at: Chan<'_>, j: Joining<'_>) -> SResult<Joined> {
        let inner = &self.inner;
        loop {
            let arc = inner.channel(at.app, at.channel);
            let mut ch = arc.lock();
            if ch.dead {
                continue;
            }
            ch.ttl_gen += 1; // cancels a pending destruction
            ch.catch_up(j.seen);
            let fresh = match ch.members.get_mut(j.account.as_str()) {
                Some(m) => {
                    m.conn = j.conn.clone();
                    false
                }
                None => {
                    ch.next_order += 1;
                    let order = ch.next_order;
                    let member = Member {
                        conn: j.conn.clone(),
                        order,
                    };
                    ch.members.insert(j.account.to_string(), member);
                    ch.order.insert(order, j.account.to_string());
                    ch.changed = true;
                    if let (Some(e), true) = (j.event, ch.settings.notify) {
                        ch.publish(e);
                    }
                    if ch.members.len() == 1 {
                        ch.app.occupied.lock().insert(at.channel.to_string());
                        inner.fire(j.events, When::First);
                    }
                    inner.fire(j.events, When::Done);
                    true
                }
            };
            let mut attrs = ch.attrs.clone();
            attrs.sort();
            return Ok(Joined {
                fresh,
                list: ch.latest(j.list_max),
                attrs,
                last_msg: ch.msgs,
            });
        }
    }

    async fn leave(&self, at: Chan<'_>, l: Leaving<'_, ConnHandle>) -> SResult<bool> {
        let inner = &self.inner;
        let Some(arc) = inner.existing_channel(at.app, at.channel) else {
            return Ok(false);
        };
        let mut ch = arc.lock();
        let account = l.account.as_str();
        let mine = ch
            .members
            .get(account)
            .is_some_and(|m| m.conn.id == l.session.id);
        if mine {
            if let Some(m) = ch.members.remove(account) {
                ch.order.remove(&m.order);
            }
            ch.changed = true;
            if let (Some(e), true) = (l.event, ch.settings.notify) {
                ch.publish(e);
            }
            inner.fire(l.events, When::Done);
            if ch.members.is_empty() {
                ch.app.occupied.lock().remove(at.channel.as_str());
                inner.fire(l.events, When::Last);
            }
            if empty_channel(inner, at.app, at.channel, &mut ch) {
                drop(ch);
                remove_dead(inner, at.app, at.channel, &arc);
            }
        }
        Ok(mine)
    }

    async fn publish(&self, at: Chan<'_>, p: Publish<'_>) -> SResult<Published> {
        let inner = &self.inner;
        let Some(arc) = inner.existing_channel(at.app, at.channel) else {
            return Ok(match p.member {
                Some(_) => Published::NotMember,
                None => {
                    inner.fire(p.events, When::Done);
                    Published::Sent
                }
            });
        };
        let mut ch = arc.lock();
        if let Some(m) = p.member {
            if !ch.members.contains_key(m.as_str()) {
                return Ok(Published::NotMember);
            }
        }
        if ch.members.is_empty() {
            inner.fire(p.events, When::Done);
            return Ok(Published::Sent);
        }
        if !inner.first_time(at.app, p.dedup) {
            return Ok(Published::Duplicate);
        }
        if p.rate_limited {
            let limit = ch.settings.sendmsg_limit;
            if !ch.rate.take(limit) {
                drop(ch);
                inner.forget(at.app, p.dedup);
                return Ok(Published::RateLimited);
            }
        }
        ch.catch_up(p.seen);
        ch.publish_message(p.event, p.message);
        inner.fire(p.events, When::Done);
        Ok(Published::Sent)
    }

    async fn attr_change(&self, at: Chan<'_>, c: AttrChange<'_>) -> SResult<AttrOutcome> {
        let inner = &self.inner;
        loop {
            let arc = inner.channel(at.app, at.channel);
            let mut ch = arc.lock();
            if ch.dead {
                continue;
            }
            let outcome = ch.change(c.op);
            if outcome == AttrOutcome::Done {
                ch.publish(c.event);
                inner.fire(c.events, When::Done);
            }
            if empty_channel(inner, at.app, at.channel, &mut ch) {
                drop(ch);
                remove_dead(inner, at.app, at.channel, &arc);
            }
            return Ok(outcome);
        }
    }

    async fn channels(
        &self,
        app: &AppId,
        cursor: &str,
        from: &str,
        limit: usize,
    ) -> SResult<ChannelPage> {
        // names in order, from after the cursor (the cursor is the last name of a page)
        let inner = &self.inner;
        let Some(listed) = inner.app_channels.get(app.as_str()).map(|a| a.clone()) else {
            return Ok(ChannelPage::default());
        };
        let mut names: Vec<String> = {
            let occupied = listed.occupied.lock();
            let after = (page_start(cursor, from), Bound::Unbounded);
            (occupied.range::<str, _>(after).take(limit + 1).cloned()).collect()
        };
        let more = names.len() > limit;
        names.truncate(limit);
        // (the index's lock is not held while a channel's is taken)
        let count = |name: &str| {
            let ch = inner.existing_channel(app, name);
            ch.map_or(0, |c| c.lock().members.len())
        };
        let channels = (names.iter())
            .map(|name| (name.clone(), count(name)))
            .filter(|(_, n)| *n > 0)
            .collect();
        Ok(ChannelPage {
            channels,
            next: more.then(|| names.pop()).flatten(),
        })
    }

    async fn channel_attrs(&self, at: Chan<'_>) -> SResult<Vec<(String, String)>> {
        let ch = self.inner.existing_channel(at.app, at.channel);
        let mut attrs = ch.map(|c| c.lock().attrs.clone()).unwrap_or_default();
        attrs.sort();
        Ok(attrs)
    }

    async fn history(&self, at: Chan<'_>, after: u64, max_age: Duration) -> SResult<History> {
        let Some(arc) = self.inner.existing_channel(at.app, at.channel) else {
            return Ok(History::default());
        };
        let ch = arc.lock();
        let oldest = now_ms().saturating_sub(max_age.as_millis() as u64);
        let msgs = ch
            .history
            .iter()
            .filter(|k| k.n > after && k.ts >= oldest)
            .cloned()
            .collect();
        Ok(History {
            last: ch.msgs,
            msgs,
        })
    }

    async fn settings(&self, at: Chan<'_>) -> SResult<Option<ChannelSettings>> {
        let ch = self.inner.existing_channel(at.app, at.channel);
        Ok(ch.map(|c| c.lock().settings))
    }

    async fn touch_members(&self, at: Chan<'_>) -> SResult<()> {
        if let Some(c) = self.inner.existing_channel(at.app, at.channel) {
            c.lock().changed = true;
        }
        Ok(())
    }

    async fn take_members_changed(&self, at: Chan<'_>) -> SResult<Option<usize>> {
        let ch = self.inner.existing_channel(at.app, at.channel);
        Ok(ch.and_then(|c| {
            let mut ch = c.lock();
            std::mem::take(&mut ch.changed).then_some(ch.members.len())
        }))
    }

    async fn members(&self, at: Chan<'_>, max: usize) -> SResult<(usize, Vec<String>)> {
        let ch = self.inner.existing_channel(at.app, at.channel);
        Ok(ch.map_or((0, Vec::new()), |c| {
            let ch = c.lock();
            (ch.members.len(), ch.latest(max))
        }))
    }

    async fn is_member(&self, at: Chan<'_>, account: &Account) -> SResult<bool> {
        let ch = self.inner.existing_channel(at.app, at.channel);
        Ok(ch.is_some_and(|c| c.lock().members.contains_key(account.as_str())))
    }

    async fn invite_open(&self, open: InviteOpen<'_>) -> SResult<Appended> {
        let key = open.key;
        let appended = self.inner.append(&key.app, &key.callee, &open.mail);
        if let Some(version) = appended.version() {
            let record = InviteRecord {
                extra: open.extra.into(),
                state: InviteState::Ringing { acked: false },
                version,
                msg_id: open.mail.id.to_string(),
                generation: open.generation,
            };
            let (caller, at) = invite_at(key);
            self.inner
                .invites
                .entry(caller)
                .or_default()
                .insert(at, record);
            for (t, after) in open.timers {
                self.schedule(t.clone(), *after).await?;
            }
        }
        Ok(appended)
    }

    async fn invite_relay(&self, relay: InviteRelay<'_>) -> SResult<Relayed> {
        let inner = &self.inner;
        let mut live = false;
        for k in relay.keys {
            live |= match relay.step {
                InviteStep::End => inner.invite_remove_if(k, |_| true).is_some(),
                step => {
                    let (caller, at) = invite_at(k);
                    let mut calls = inner.invites.get_mut(&caller);
                    let r = calls.as_mut().and_then(|c| c.get_mut(&at));
                    r.map(|r| r.take_step(step)).is_some()
                }
            };
        }
        let appended = match relay.keys.first() {
            Some(k) if live || !relay.require_live => inner.append(&k.app, relay.to, &relay.mail),
            _ => Appended::Duplicate,
        };
        Ok(Relayed { live, appended })
    }

    async fn invite_get(&self, key: &InviteKey) -> SResult<Option<InviteRecord>> {
        let (caller, at) = invite_at(key);
        let calls = self.inner.invites.get(&caller);
        Ok(calls.and_then(|c| c.get(&at).cloned()))
    }

    async fn invite_take(&self, key: &InviteKey, take: Take) -> SResult<Option<InviteRecord>> {
        Ok(self.inner.invite_remove_if(key, |r| r.taken_by(take)))
    }

    async fn invites_by(&self, caller: User<'_>) -> SResult<Vec<(InviteKey, u64)>> {
        let calls = self.inner.invites.get(&key(caller.app, caller.account));
        let key_of = |(channel, callee): &Callee| InviteKey {
            app: caller.app.clone(),
            caller: caller.account.clone(),
            channel: channel.clone(),
            callee: callee.clone(),
        };
        Ok(calls.map_or_else(Vec::new, |c| {
            c.iter().map(|(at, r)| (key_of(at), r.generation)).collect()
        }))
    }

    async fn schedule(&self, timer: Timer, after: Duration) -> SResult<()> {
        let token = self.inner.timer_seq.fetch_add(1, Ordering::Relaxed);
        self.inner.timers.lock().insert(timer.clone(), token);
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(inner) = weak.upgrade() else { return };
            let current = {
                let mut timers = inner.timers.lock();
                let current = timers.get(&timer) == Some(&token);
                if current {
                    timers.remove(&timer);
                }
                current
            };
            if current {
                inner.send_work(Work::Timer { timer, claim: () });
            }
        });
        Ok(())
    }

    async fn event_append(
        &self,
        app: &AppId,
        partition: u32,
        event: &str,
        cap: EventCap,
    ) -> SResult<u64> {
        Ok(self.inner.log_append(app, partition, event, cap))
    }

    async fn event_read(
        &self,
        app: &AppId,
        partition: u32,
        after: u64,
        max: usize,
    ) -> SResult<EventPage> {
        let Some(log) = self.inner.events.get(&(app.to_string(), partition)) else {
            return Ok(EventPage::default());
        };
        let log = log.lock();
        let start = log.entries.partition_point(|(seq, _, _)| *seq <= after);
        Ok(EventPage {
            last: log.last,
            events: log
                .entries
                .range(start..)
                .take(max)
                .map(|(seq, text, _)| (*seq, text.clone()))
                .collect(),
        })
    }

    async fn event_cursor(
        &self,
        app: &AppId,
        consumer: &str,
        partition: u32,
    ) -> SResult<Option<u64>> {
        let k = (app.to_string(), consumer.to_string(), partition);
        Ok(self.inner.event_cursors.get(&k).map(|c| *c))
    }

    async fn event_cursor_set(
        &self,
        app: &AppId,
        consumer: &str,
        partition: u32,
        seq: u64,
        _keep: Duration,
    ) -> SResult<()> {
        let k = (app.to_string(), consumer.to_string(), partition);
        self.inner.event_cursors.insert(k, seq);
        Ok(())
    }

    async fn event_lease(
        &self,
        app: &AppId,
        consumer: &str,
        partition: u32,
        holder: &str,
        ttl: Duration,
    ) -> SResult<bool> {
        let now = Instant::now();
        let k = (app.to_string(), consumer.to_string(), partition);
        let mut lease = self
            .inner
            .event_leases
            .entry(k)
            .or_insert_with(|| (holder.to_string(), now));
        if lease.0 != holder && lease.1 > now {
            return Ok(false);
        }
        *lease = (holder.to_string(), now + ttl);
        Ok(true)
    }

    async fn timer_done(&self, _claim: ()) {}

    async fn live_nodes(&self) -> Vec<String> {
        Vec::new()
    }

    fn local_sessions(&self) -> usize {
        self.inner.sessions.len()
    }

    async fn watch(
        &self,
        user: User<'_>,
        watcher: &ConnHandle,
        accounts: &[Account],
        on: bool,
        app_max: usize,
    ) -> SResult<bool> {
        let (i, app) = (&self.inner, user.app);
        // the app's count is held while the watches change: the bound is exact
        let mut count = i.app_watches.entry(app.to_string()).or_insert(0);
        if on {
            let fresh: Vec<String> = accounts
                .iter()
                .map(|a| key(app, a))
                .filter(|k| {
                    !i.watchers
                        .get(k)
                        .is_some_and(|w| w.contains_key(&watcher.id))
                })
                .collect();
            if *count + fresh.len() > app_max {
                return Ok(false);
            }
            for k in fresh {
                i.watchers
                    .entry(k)
                    .or_default()
                    .insert(watcher.id, watcher.clone());
                *count += 1;
            }
        } else {
            for a in accounts {
                let k = key(app, a);
                let removed = i
                    .watchers
                    .get_mut(&k)
                    .and_then(|mut w| w.remove(&watcher.id));
                i.watchers.remove_if(&k, |_, w| w.is_empty());
                if removed.is_some() {
                    *count = count.saturating_sub(1);
                }
            }
        }
        let empty = *count == 0;
        drop(count);
        if empty {
            i.app_watches.remove_if(app.as_str(), |_, n| *n == 0);
        }
        Ok(true)
    }

    async fn watchers_push(&self, user: User<'_>, frame: &str) -> SResult<()> {
        let i = &self.inner;
        let k = key(user.app, user.account);
        let frame = Frame::from(frame.to_string());
        let mut gone = Vec::new();
        if let Some(w) = i.watchers.get(&k) {
            for (id, h) in w.iter() {
                if !h.is_open() {
                    gone.push(*id);
                } else {
                    h.push(frame.clone());
                }
            }
        }
        if !gone.is_empty() {
            let mut count = i.app_watches.entry(user.app.to_string()).or_insert(0);
            if let Some(mut w) = i.watchers.get_mut(&k) {
                for id in gone {
                    if w.remove(&id).is_some() {
                        *count = count.saturating_sub(1);
                    }
                }
            }
            i.watchers.remove_if(&k, |_, w| w.is_empty());
        }
        Ok(())
    }

    async fn unreachable_set(&self, user: User<'_>, grace: Option<Duration>) -> SResult<()> {
        let k = key(user.app, user.account);
        match grace {
            Some(g) => {
                self.inner.unreachable.insert(k, Instant::now() + g);
            }
            None => {
                self.inner.unreachable.remove(&k);
            }
        }
        Ok(())
    }

    async fn unreachable(&self, user: User<'_>) -> SResult<bool> {
        let k = key(user.app, user.account);
        let now = Instant::now();
        let until = self.inner.unreachable.get(&k).map(|u| *u);
        if until.is_some_and(|u| u <= now) {
            self.inner.unreachable.remove_if(&k, |_, u| *u <= now);
        }
        Ok(until.is_some_and(|u| u > now))
    }

    fn session_node(&self, _: &ConnHandle) -> Option<String> {
        None
    }

    async fn node_report_put(&self, report: &str, ttl: Duration) -> SResult<()> {
        let until = Instant::now() + ttl;
        *self.inner.report.lock() = Some((report.to_string(), until));
        Ok(())
    }

    async fn node_reports(&self) -> SResult<Vec<String>> {
        let now = Instant::now();
        Ok(self
            .inner
            .report
            .lock()
            .iter()
            .filter(|r| r.1 > now)
            .map(|r| r.0.clone())
            .collect())
    }

    async fn footprint(&self) -> SResult<Footprint> {
        let i = &self.inner;
        let now = Instant::now();
        let mut channels = 0;
        let mut members = 0;
        for c in i.channels.iter() {
            let c = c.lock();
            if !c.dead {
                channels += 1;
                members += c.members.len();
            }
        }
        Ok(Footprint {
            sessions: i.sessions.len(),
            channels,
            members,
            invites: i.invites.iter().map(|c| c.len()).sum(),
            stored_messages: i.mailboxes.iter().map(|m| m.msgs.len()).sum(),
            mailboxes: i
                .mailboxes
                .iter()
                .filter(|m| !m.forgotten(now, i.mailbox_keep))
                .count(),
            user_attrs: i.user_attrs.iter().map(|a| a.len()).sum(),
        })
    }
}
