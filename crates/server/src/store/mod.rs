//! Where the service's shared state lives: the [`Store`] trait, narrow and without protocol
//! rules — each method is one atomic step in its backend (a lock in `memory`, a Lua script in
//! `redis`), and everything protocol-shaped (frames, message strings, error strings, which
//! attribute means what) reaches it as data from [`crate::signaling`], which holds the rules.
//!
//! Frames arrive as [`Template`]s: a store fills in the number it assigns (a channel event's
//! sequence, a mailbox message's version) atomically with the change, without knowing the
//! frame's shape. Timers are [`Timer`] values the store keeps and hands back when due.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use opensig_protocol::frame::{Kept, Seen, Template};
use opensig_protocol::ident::{Account, AppId, ChannelName};
use opensig_protocol::Limits;
use tokio::sync::mpsc;

use crate::delivery::{ConnHandle, Frame};

pub mod codec;
pub mod memory;
pub mod redis;

use codec::{Reader, Writer};

/// Why a store operation could not be done (the state is as it was before it).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis answered with an error or the connection broke.
    #[error("redis: {0}")]
    Redis(#[source] ::redis::RedisError),
    /// Redis is past its `maxmemory` and refused a change that would store more (nothing
    /// of it was done).
    #[error("redis is full: {0}")]
    Full(#[source] ::redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Fewer replicas than asked for held a step's writes in time (`--redis-wait-replicas`):
    /// the step may be lost with its primary, so it is not acknowledged.
    #[error("{got} of {wanted} redis replicas confirmed the write in time")]
    NotReplicated {
        /// Replicas asked for.
        wanted: u32,
        /// Replicas that confirmed.
        got: i64,
    },
    /// This node was stopped as a crash would stop it (tests of failover).
    #[error("the node is halted")]
    Halted,
    /// A reply of a shape the store does not write.
    #[error("unexpected reply from the store: {0}")]
    BadReply(String),
}

impl StoreError {
    /// The same error for each of several operations that failed together (one Redis call
    /// made for all of them): the same variant, a Redis error's kind and text.
    pub fn for_each_of_many(&self) -> StoreError {
        let redis = |e: &::redis::RedisError| {
            ::redis::RedisError::from((e.kind(), "in a call for several steps", e.to_string()))
        };
        match self {
            StoreError::Redis(e) => StoreError::Redis(redis(e)),
            StoreError::Full(e) => StoreError::Full(redis(e)),
            StoreError::Timeout(d) => StoreError::Timeout(*d),
            StoreError::NotReplicated { wanted, got } => StoreError::NotReplicated {
                wanted: *wanted,
                got: *got,
            },
            StoreError::Halted => StoreError::Halted,
            StoreError::BadReply(r) => StoreError::BadReply(r.clone()),
        }
    }
}

impl From<::redis::RedisError> for StoreError {
    fn from(e: ::redis::RedisError) -> StoreError {
        if e.code() == Some("OOM") {
            StoreError::Full(e)
        } else {
            StoreError::Redis(e)
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch (when a kept message was accepted).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Result of a store operation.
pub type SResult<T> = Result<T, StoreError>;

/// What a store holds on behalf of clients right now (tests check that a client's state is
/// released: each figure returns to its earlier value once the client is gone). Time-bounded
/// caches (message ids for dedup, rate buckets) are not counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Sessions (logged-in connections).
    pub sessions: usize,
    /// Channels with any state.
    pub channels: usize,
    /// Channel memberships.
    pub members: usize,
    /// Invitations in progress.
    pub invites: usize,
    /// Messages stored in mailboxes and not yet acknowledged.
    pub stored_messages: usize,
    /// Mailboxes whose numbering is kept (they held a message within
    /// `mailbox_state_keep_secs`); a mailbox nobody wrote to is none, whoever polled it.
    pub mailboxes: usize,
    /// User attributes set.
    pub user_attrs: usize,
}

/// "Drop a resent request": `(from, id)` seen within `window` is a duplicate.
#[derive(Debug, Clone, Copy)]
pub struct Dedup<'a> {
    /// The sender.
    pub from: &'a Account,
    /// The client's message id.
    pub id: &'a str,
    /// How long an id is remembered.
    pub window: Duration,
}

/// A message to store in a mailbox.
#[derive(Debug, Clone, Copy)]
pub struct MailItem<'a> {
    /// Its id (mode-1 clients acknowledge by it).
    pub id: &'a str,
    /// The text returned by polls.
    pub text: &'a str,
    /// The frame pushed to the recipient's session, with the version to fill in.
    pub push: &'a Template,
    /// How long to keep it.
    pub ttl: Duration,
    /// Drop it when it is a resend.
    pub dedup: Option<Dedup<'a>>,
    /// The most messages the mailbox may hold.
    pub max: usize,
    /// What else bounds it.
    pub quota: MailQuota<'a>,
    /// Appended with it: [`When::Offline`] when it is stored for an account without a
    /// session, then [`When::Done`] when it is stored.
    pub events: &'a StepEvents,
}

pub use opensig_protocol::limits::CATCH_UP_MAX;

/// A channel's sequence or message number `current`, caught up to `seen`, what a member
/// says it saw of the channel: when `seen` is ahead, the channel's numbers went back — a Redis
/// primary died before its replica had the writes that used them, and handed out again they
/// would be skipped by every member that saw them (clients drop a sequence or message number
/// they have seen) — so the channel goes on from `seen`. By at most [`CATCH_UP_MAX`]: more
/// than any lost writes, and a member cannot move a channel's numbers out of what clients
/// count exactly (2^53). The memory store loses no writes: only a member's own claim moves
/// it there, the same way. (The Redis scripts keep the same rule: channel.lua's
/// `catch_up`.)
pub fn catch_up(current: u64, seen: u64) -> u64 {
    if seen > current && seen - current <= CATCH_UP_MAX {
        seen
    } else {
        current
    }
}

/// Whether a mode-0 poll finds that a mailbox's numbering went back under the client: it
/// acknowledges version `want` above the `last` version the mailbox handed out, or the
/// message the mailbox holds at `want` (`at_want`, its id, when it holds one not yet
/// acknowledged) is not the one the client processed there (`seen`, its id, when the client
/// says). A Redis primary died before its replica had the messages that used those versions
/// (or a server without Redis restarted, or a mailbox's numbering was forgotten after
/// `mailbox_state_keep_secs`): new messages got them again, and acknowledging `want` would
/// drop ones the client never had. Then the messages above the mailbox's acknowledged version
/// are numbered again after `max(want, last)`, in their order (unless that passes
/// `MAX_SAFE_INTEGER`), so the client gets them; those it had already processed come again
/// with their ids, which clients drop as seen. (The Redis scripts keep the same rule:
/// mail_poll.lua.)
pub fn renumbered(want: u64, last: u64, at_want: Option<&str>, seen: Option<&str>) -> bool {
    want > last || matches!((at_want, seen), (Some(a), Some(s)) if a != s)
}

/// How late an expired message may still count against its app's mail quota, on every store:
/// the memory store walks an app's mailboxes for expired mail at most this often (when the
/// quota would refuse a message), Redis counts messages in groups that expire within this
/// step and counts a group out once it has ended (two commands per message instead of an
/// entry per message).
pub const QUOTA_EXPIRY_STEP: Duration = Duration::from_millis(100);

/// Bounds on mail beyond one mailbox's: what one app's mailboxes hold together, what one
/// sender leaves for offline recipients per window, and whether the server has memory for
/// more. A store keeps the app's totals (unacknowledged, unexpired messages and their text
/// bytes) whatever the quota says; 0 means no cap.
#[derive(Debug, Clone, Copy, Default)]
pub struct MailQuota<'a> {
    /// Messages in all mailboxes of the app.
    pub app_messages: usize,
    /// Text bytes in all mailboxes of the app.
    pub app_bytes: usize,
    /// The sender whose window counts this message when the recipient is offline.
    pub sender: Option<&'a Account>,
    /// Messages per window a sender may leave for offline recipients.
    pub offline_per_sender: u32,
    /// The sender's window.
    pub window: Duration,
    /// The server is short of memory: refuse the message when the recipient is offline.
    pub busy: bool,
}

/// The outcome of storing mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored (and pushed when the recipient is online).
    Stored {
        /// Its version.
        version: u64,
        /// The recipient had no session.
        offline: bool,
    },
    /// A resend: nothing done.
    Duplicate,
    /// The mailbox holds its maximum already (after dropping expired messages).
    Full,
    /// The app's mailboxes hold their quota already.
    AppFull,
    /// The recipient is offline and the sender has used its window's allowance.
    SenderLimited,
    /// The recipient is offline and the server is short of memory.
    Busy,
}

impl Appended {
    /// The version it was stored with (`None`: not stored).
    pub fn version(self) -> Option<u64> {
        match self {
            Appended::Stored { version, .. } => Some(version),
            _ => None,
        }
    }

    /// Stored for a recipient without a session.
    pub fn offline(self) -> bool {
        matches!(self, Appended::Stored { offline: true, .. })
    }
}

/// A page of a mailbox.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MailPage {
    /// Highest acknowledged version.
    pub ver_clear: u64,
    /// `(version, text)`, ascending, all above `ver_clear`.
    pub msgs: Vec<(u64, Arc<str>)>,
}

/// A channel event to publish: the store assigns the channel's next sequence number, fills it
/// into `frame`, and queues the frame for every member but `exclude`, in sequence order.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The frame, sequence to fill in.
    pub frame: &'a Template,
    /// A member that does not get it (the joiner of its own join).
    pub exclude: Option<&'a Account>,
}

/// Per-channel settings the store applies itself (set through built-in attributes by the
/// rules; a new channel starts with [`ChannelSettings::defaults`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelSettings {
    /// Membership events (`join`/`leave`'s events) are published.
    pub notify: bool,
    /// Seconds the state of an empty channel that has attributes is kept.
    pub ttl_secs: u64,
    /// Channel messages per second (`publish` with `rate_limited`; 0: no limit).
    pub sendmsg_limit: u32,
    /// Changes per second of each attribute (`attr_change` with `rate_limited`; 0: no limit).
    pub setattr_limit: u32,
    /// Period of the member-count timer (0: none). Kept for the rules; the store does nothing
    /// with it.
    pub auto_update_secs: u64,
    /// Channel messages kept for history (0: none).
    pub history: u32,
    /// Seconds an empty channel without attributes is kept while it has kept messages (a
    /// server-wide value, not changed per channel).
    pub keep_empty_secs: u64,
}

impl ChannelSettings {
    /// A new channel's settings.
    pub fn defaults(l: &Limits) -> ChannelSettings {
        ChannelSettings {
            notify: true,
            ttl_secs: l.channel_ttl_default_secs,
            sendmsg_limit: l.channel_messages_per_second,
            setattr_limit: l.attr_changes_per_second,
            auto_update_secs: 0,
            history: l.channel_history_messages,
            keep_empty_secs: l.channel_history_keep_empty_secs,
        }
    }
}

/// One setting changed along with an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `notify`.
    Notify(bool),
    /// `ttl_secs` (an empty channel's state is kept at least 1 s: 0 counts as 1).
    Ttl(u64),
    /// `sendmsg_limit`.
    SendmsgLimit(u32),
    /// `setattr_limit`.
    SetattrLimit(u32),
    /// `auto_update_secs`.
    AutoUpdate(u64),
    /// `history` (the store drops what is beyond the new size at once).
    History(u32),
}

/// Set an attribute: `name` to `value` (and `setting`). With `rate_limited`, one change of
/// this attribute is taken from its budget (`setattr_limit`); a new attribute beyond `max`
/// attributes is refused.
#[derive(Debug, Clone, Copy)]
pub struct AttrSet<'a> {
    /// Attribute.
    pub name: &'a str,
    /// Value.
    pub value: &'a str,
    /// The setting this attribute carries, if any.
    pub setting: Option<Setting>,
    /// Counts against the attribute's rate.
    pub rate_limited: bool,
    /// Most attributes a channel may have.
    pub max: usize,
    /// What the app's channels may hold together.
    pub quota: AttrQuota,
}

/// Bounds on the attributes of all channels of one app together (whoever set them, and
/// however long they outlive their members): channels with attributes, and the bytes of
/// their names and values. A store keeps the app's totals whatever the quota says; a change
/// that adds neither a channel nor bytes is never refused; 0 means no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttrQuota {
    /// Channels with attributes.
    pub channels: usize,
    /// Bytes of attribute names and values.
    pub bytes: usize,
}

/// A change of channel attributes.
#[derive(Debug, Clone, Copy)]
pub enum AttrOp<'a> {
    /// Set one.
    Set(AttrSet<'a>),
    /// Delete `name` (and put `setting` back).
    Del {
        /// Attribute.
        name: &'a str,
        /// The setting's default, when the attribute carried one.
        setting: Option<Setting>,
    },
    /// Delete every attribute; the settings become `defaults`.
    Clear {
        /// The settings afterwards.
        defaults: ChannelSettings,
    },
}

/// The outcome of an attribute change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrOutcome {
    /// Done, and published to the members.
    Done,
    /// The attribute's rate is spent: nothing done.
    RateLimited,
    /// A new attribute beyond the maximum: nothing done.
    TooMany,
    /// Beyond the app's quota: nothing done.
    AppFull,
}

/// The outcome of a channel publish. Publishing never creates channel state: a channel
/// without members gets nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Sequenced and queued for the members (none, if there are none).
    Sent,
    /// A resend: nothing done.
    Duplicate,
    /// `rules.member` is not a member.
    NotMember,
    /// The channel's rate is spent.
    RateLimited,
}

/// A join's outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Joined {
    /// The account was not a member before (it may have been, on another connection: then
    /// the membership moved to this one).
    pub fresh: bool,
    /// The latest members, oldest first, the joiner included.
    pub list: Vec<String>,
    /// Every attribute, in insertion order.
    pub attrs: Vec<(String, String)>,
    /// The number of the channel's latest message (0: none since its state began).
    pub last_msg: u64,
}

/// An invitation's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InviteKey {
    /// App.
    pub app: AppId,
    /// Who invited.
    pub caller: Account,
    /// Into which channel.
    pub channel: ChannelName,
    /// Whom.
    pub callee: Account,
}

/// Where an invitation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteState {
    /// Not answered yet; `acked`: the callee's client received it.
    Ringing {
        /// Received by the callee's client.
        acked: bool,
    },
    /// Accepted; until one side ends it.
    Accepted,
}

/// An invitation the store keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRecord {
    /// The `extra` as the caller gave it (JSON text).
    pub extra: String,
    /// Where it is.
    pub state: InviteState,
    /// The callee's mailbox version holding the invitation.
    pub version: u64,
    /// The invitation message's msg-v3 id (withdrawn only while that version still holds
    /// it: a mailbox numbered again may hold another message there).
    pub msg_id: String,
    /// Tells this invitation from an earlier one with the same key.
    pub generation: u64,
}

impl InviteRecord {
    /// Take `step` (not `End`, which removes the record).
    pub fn take_step(&mut self, step: InviteStep) {
        match step {
            InviteStep::Ack => {
                if let InviteState::Ringing { acked } = &mut self.state {
                    *acked = true;
                }
            }
            InviteStep::Accept => self.state = InviteState::Accepted,
            InviteStep::Keep | InviteStep::End => {}
        }
    }

    /// Whether `take` ends this invitation.
    pub fn taken_by(&self, take: Take) -> bool {
        self.generation == take.generation
            && (!take.ringing_only || matches!(self.state, InviteState::Ringing { .. }))
    }
}

/// What a call-signalling message does to the invitations it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteStep {
    /// Nothing (an in-call message).
    Keep,
    /// The callee's client received it.
    Ack,
    /// The callee accepted.
    Accept,
    /// It is over (refused, ended, withdrawn).
    End,
}

/// The outcome of a call-signalling message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    /// Some of the invitations it is about existed (and took the step).
    pub live: bool,
    /// What became of the message.
    pub appended: Appended,
}

/// Something to do later, kept by the store until it is due. Scheduling a timer again
/// replaces it (same value, new due time).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Timer {
    /// The callee of an invitation may have been offline too long (703).
    InviteOffline(InviteKey, u64),
    /// An invitation's `_timeout` elapsed (704).
    InviteTimeout(InviteKey, u64),
    /// An invitation's caller went away and may not be back (702).
    CallerGone(InviteKey, u64),
    /// A channel's member-count report.
    MemberNum(AppId, ChannelName),
    /// An account's attributes may have been kept long enough since its last session.
    UserAttrs(AppId, Account),
    /// An empty channel's attributes reached its TTL and went (scheduled by the store when
    /// the channel is left empty with attributes, cancelled when it is joined again or they
    /// go otherwise).
    ChannelExpired(AppId, ChannelName),
    /// An account's connection dropped `presence_grace_secs` ago: unless it is back, its
    /// watchers see it offline now.
    PresenceGrace(AppId, Account),
}

impl Timer {
    /// The app it is about (a store may keep an app's timers with the app's state).
    pub fn app(&self) -> &AppId {
        match self {
            Timer::InviteOffline(k, _) | Timer::InviteTimeout(k, _) | Timer::CallerGone(k, _) => {
                &k.app
            }
            Timer::MemberNum(app, _)
            | Timer::UserAttrs(app, _)
            | Timer::ChannelExpired(app, _)
            | Timer::PresenceGrace(app, _) => app,
        }
    }

    /// The one encoding (for stores that keep timers outside the process).
    pub fn encode(&self) -> String {
        let invite = |tag, k: &InviteKey, generation| {
            Writer::new(tag)
                .text(&k.app)
                .text(&k.caller)
                .text(&k.channel)
                .text(&k.callee)
                .num(generation)
                .finish()
        };
        match self {
            Timer::InviteOffline(k, g) => invite('o', k, *g),
            Timer::InviteTimeout(k, g) => invite('t', k, *g),
            Timer::CallerGone(k, g) => invite('g', k, *g),
            Timer::MemberNum(app, ch) => Writer::new('n').text(app).text(ch).finish(),
            Timer::UserAttrs(app, account) => Writer::new('u').text(app).text(account).finish(),
            Timer::ChannelExpired(app, ch) => Writer::new('x').text(app).text(ch).finish(),
            Timer::PresenceGrace(app, a) => Writer::new('p').text(app).text(a).finish(),
        }
    }

    /// The timer an [`Timer::encode`] made; `None` for anything else.
    pub fn decode(s: &str) -> Option<Timer> {
        let (tag, mut r) = Reader::new(s)?;
        let t = match tag {
            'o' | 't' | 'g' => {
                let key = InviteKey {
                    app: AppId::from_stored(r.text()?)?,
                    caller: Account::from_stored(r.text()?)?,
                    channel: ChannelName::from_stored(r.text()?)?,
                    callee: Account::from_stored(r.text()?)?,
                };
                let generation = r.num()?;
                match tag {
                    'o' => Timer::InviteOffline(key, generation),
                    't' => Timer::InviteTimeout(key, generation),
                    _ => Timer::CallerGone(key, generation),
                }
            }
            'n' => Timer::MemberNum(
                AppId::from_stored(r.text()?)?,
                ChannelName::from_stored(r.text()?)?,
            ),
            'u' => Timer::UserAttrs(
                AppId::from_stored(r.text()?)?,
                Account::from_stored(r.text()?)?,
            ),
            'x' => Timer::ChannelExpired(
                AppId::from_stored(r.text()?)?,
                ChannelName::from_stored(r.text()?)?,
            ),
            'p' => Timer::PresenceGrace(
                AppId::from_stored(r.text()?)?,
                Account::from_stored(r.text()?)?,
            ),
            _ => return None,
        };
        r.end()?;
        Some(t)
    }
}

/// An account of an app.
#[derive(Debug, Clone, Copy)]
pub struct User<'a> {
    /// App.
    pub app: &'a AppId,
    /// Account.
    pub account: &'a Account,
}

/// A channel of an app.
#[derive(Debug, Clone, Copy)]
pub struct Chan<'a> {
    /// App.
    pub app: &'a AppId,
    /// Channel.
    pub channel: &'a ChannelName,
}

/// A login taking its place.
#[derive(Debug, Clone)]
pub struct Opening<'a> {
    /// Whose session.
    pub user: User<'a>,
    /// Its connection.
    pub conn: &'a ConnHandle,
    /// The `login_ret`, queued before anyone can see the session.
    pub welcome: Frame,
    /// Appended with it: [`When::Done`] always, [`When::First`] when the account had no
    /// session.
    pub events: &'a StepEvents,
    /// A user attribute of the account read in the same step (the login's connection
    /// timeout): one step where a read before it took another.
    pub attr: &'a str,
}

/// Where a page of [`Store::channels`] starts: after `cursor`, and at `from` or after it.
pub fn page_start<'a>(cursor: &'a str, from: &'a str) -> std::ops::Bound<&'a str> {
    use std::ops::Bound;
    match (cursor, from) {
        ("", "") => Bound::Unbounded,
        (c, f) if f > c => Bound::Included(f),
        (c, _) => Bound::Excluded(c),
    }
}

/// What [`Store::session_open`] found.
#[derive(Debug)]
pub struct Opened<S> {
    /// The session it replaced.
    pub previous: Option<S>,
    /// The value of [`Opening::attr`], when the account has it.
    pub attr: Option<String>,
}

/// Set (`value: Some`) or delete (`None`) a user attribute.
#[derive(Debug, Clone, Copy)]
pub struct UserAttrSet<'a> {
    /// Attribute.
    pub name: &'a str,
    /// Value.
    pub value: Option<&'a str>,
    /// Most attributes an account may have.
    pub max: usize,
}

/// What a mailbox poll acknowledges.
#[derive(Debug, Clone, Copy)]
pub enum Poll<'a> {
    /// Mode 0: everything up to `ver_clear` (never lowering it); up to `max` messages after it.
    Versions {
        /// Highest version processed by the client.
        ver_clear: u64,
        /// Page size.
        max: usize,
        /// The msg-v3 id of the message the client processed at `ver_clear`, when it says
        /// ([`renumbered`]).
        seen_id: Option<&'a str>,
    },
    /// Mode 1: the messages with these ids are dropped; up to `max` of the rest, which count
    /// as acknowledged.
    Ids {
        /// Ids received by push.
        clear: &'a [String],
        /// Page size.
        max: usize,
    },
}

/// A membership to make.
#[derive(Debug, Clone, Copy)]
pub struct Joining<'a> {
    /// Who.
    pub account: &'a Account,
    /// On which connection.
    pub conn: &'a ConnHandle,
    /// Published on a fresh membership (if `notify`).
    pub event: Option<Event<'a>>,
    /// Members in the reply.
    pub list_max: usize,
    /// Appended with it: [`When::Done`] on a fresh membership, [`When::First`] when it is the
    /// channel's only member (before the `Done` ones).
    pub events: &'a StepEvents,
    /// The channel's numbers the member saw (a rejoin): the channel catches up to them
    /// ([`catch_up`]) before the join's own event and reply.
    pub seen: Seen,
}

/// A membership to end.
#[derive(Debug, Clone, Copy)]
pub struct Leaving<'a, S> {
    /// Who.
    pub account: &'a Account,
    /// The session holding the membership (another one's membership stays).
    pub session: &'a S,
    /// Published when it ended (if `notify`).
    pub event: Option<Event<'a>>,
    /// Appended with it: [`When::Done`] when it ended, then [`When::Last`] when nobody is
    /// left.
    pub events: &'a StepEvents,
}

/// A channel event to publish and what to check first.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    /// The event.
    pub event: Event<'a>,
    /// Only if this account is a member.
    pub member: Option<&'a Account>,
    /// Drop it when it is a resend (checked before the rate).
    pub dedup: Option<Dedup<'a>>,
    /// Counts against the channel's message rate (`sendmsg_limit`).
    pub rate_limited: bool,
    /// A channel message: it gets the channel's next message number (filled in as the
    /// event's fifth element, [`opensig_protocol::frame::out::channel2_numbered`]) and is
    /// kept in the channel's history.
    pub message: Option<Message<'a>>,
    /// Appended with it: [`When::Done`] when it was sent.
    pub events: &'a StepEvents,
    /// The channel's numbers the sender saw: the channel catches up to them ([`catch_up`])
    /// before numbering this one.
    pub seen: Seen,
}

/// A channel message as the history keeps it, and the history's bounds. The channel keeps
/// its `history` setting's number of messages, none older than `max_age`, their text at
/// most `max_bytes`; what falls outside goes at once (the oldest first).
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The sender.
    pub from: &'a str,
    /// The text.
    pub text: &'a str,
    /// How long a message is kept.
    pub max_age: Duration,
    /// Text bytes one channel's history holds.
    pub max_bytes: usize,
    /// Keep it (false: only numbered, e.g. when the server is short of memory).
    pub keep: bool,
    /// The send's identity, when the sender gave a message id (the same for every copy a
    /// resend or retry makes): with the event and the kept message, for clients to drop a
    /// second copy the channel numbered anew.
    pub id: Option<u64>,
}

/// A page of an app's channels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelPage {
    /// Channel names and member counts.
    pub channels: Vec<(String, usize)>,
    /// Where the next page starts (`None`: this was the last).
    pub next: Option<String>,
}

/// A channel's history as a reader sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// The number of the channel's latest message (0: none since its state began).
    pub last: u64,
    /// Kept messages after the one asked for, oldest first, none older than asked.
    pub msgs: Vec<Kept>,
}

impl<'a> Publish<'a> {
    /// An event without conditions.
    pub fn event(event: Event<'a>) -> Publish<'a> {
        Publish {
            event,
            member: None,
            dedup: None,
            rate_limited: false,
            message: None,
            events: &NO_EVENTS,
            seen: Seen::default(),
        }
    }

    /// An event without conditions and with nothing else to it (no message, step events or
    /// seen numbers): to a channel without members it does nothing at all.
    pub fn is_bare_event(&self) -> bool {
        self.member.is_none()
            && self.dedup.is_none()
            && !self.rate_limited
            && self.message.is_none()
            && self.events.is_empty()
            && self.seen.seq == 0
            && self.seen.msg == 0
    }
}

/// An attribute change and the event that tells the members.
#[derive(Debug, Clone, Copy)]
pub struct AttrChange<'a> {
    /// The change.
    pub op: AttrOp<'a>,
    /// Its event.
    pub event: Event<'a>,
    /// Appended with it: [`When::Done`] when the change was made.
    pub events: &'a StepEvents,
}

/// An invitation to open.
#[derive(Debug, Clone, Copy)]
pub struct InviteOpen<'a> {
    /// Which.
    pub key: &'a InviteKey,
    /// The caller's `extra` (JSON text).
    pub extra: &'a str,
    /// Tells it from earlier ones with the same key.
    pub generation: u64,
    /// The invitation for the callee's mailbox.
    pub mail: MailItem<'a>,
    /// Its timers.
    pub timers: &'a [(Timer, Duration)],
}

/// A call-signalling message about invitations.
#[derive(Debug, Clone, Copy)]
pub struct InviteRelay<'a> {
    /// The invitations it is about (same app).
    pub keys: &'a [InviteKey],
    /// What it does to them.
    pub step: InviteStep,
    /// Not stored when none of them exists.
    pub require_live: bool,
    /// Its recipient.
    pub to: &'a Account,
    /// The message.
    pub mail: MailItem<'a>,
}

/// Which invitation a take ends.
#[derive(Debug, Clone, Copy)]
pub struct Take {
    /// Only of this generation.
    pub generation: u64,
    /// Only while ringing (not accepted).
    pub ringing_only: bool,
}

/// The bounds of one partition of an app's event log; 0 means no cap. What falls outside
/// goes at once, the oldest first (a consumer sees the gap in the sequence numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCap {
    /// Events kept.
    pub max_events: usize,
    /// Bytes of event text kept.
    pub max_bytes: usize,
    /// Events older than this go.
    pub max_age: Duration,
}

/// On which outcome of a step one of its planned events is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// The step took effect: a join that made a membership, a leave that ended one, a
    /// message published, an attribute changed, a letter stored, a session opened or closed.
    Done,
    /// A join gave the channel its first member; a session opened where the account had
    /// none.
    First,
    /// A leave took the channel's last member.
    Last,
    /// A letter was stored for an account without a session (before the `Done` ones).
    Offline,
}

impl When {
    /// Its name where stores keep it outside the process.
    pub fn name(self) -> &'static str {
        match self {
            When::Done => "done",
            When::First => "first",
            When::Last => "last",
            When::Offline => "offline",
        }
    }
}

/// An event a step appends to partition `partition` of the app's log, on outcome `when`.
#[derive(Debug, Clone)]
pub struct Planned {
    /// On which outcome.
    pub when: When,
    /// Into which partition.
    pub partition: u32,
    /// The event (JSON text, rendered by the rules).
    pub text: EventText,
}

/// An event's text: rendered, or rendered when a store needs it (most planned events are
/// never appended — a letter to an account that is online — and a store in the process
/// only renders those that are).
#[derive(Clone)]
pub enum EventText {
    /// Rendered.
    Ready(String),
    /// Renders it.
    Later(Arc<dyn Fn() -> String + Send + Sync>),
}

impl EventText {
    /// The text.
    pub fn get(&self) -> std::borrow::Cow<'_, str> {
        match self {
            EventText::Ready(s) => std::borrow::Cow::Borrowed(s),
            EventText::Later(f) => std::borrow::Cow::Owned(f()),
        }
    }
}

impl std::fmt::Debug for EventText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.get())
    }
}

impl From<String> for EventText {
    fn from(s: String) -> EventText {
        EventText::Ready(s)
    }
}

/// The events a step appends to its app's event log in the same atomic step as its change
/// (a node dying between the two cannot lose one): the store appends each planned event
/// whose outcome happened, in order, under `cap`. The rules decide what the events are and
/// on which outcome; a store only reports outcomes.
#[derive(Debug, Clone)]
pub struct StepEvents {
    /// The app whose log they go to.
    pub app: String,
    /// The events.
    pub events: Vec<Planned>,
    /// The partitions' bounds.
    pub cap: EventCap,
}

/// The outbox of a step nobody listens to.
pub static NO_EVENTS: StepEvents = StepEvents {
    app: String::new(),
    events: Vec::new(),
    cap: EventCap {
        max_events: 0,
        max_bytes: 0,
        max_age: Duration::ZERO,
    },
};

impl StepEvents {
    /// No events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events planned for `when`.
    pub fn on(&self, when: When) -> impl Iterator<Item = &Planned> {
        self.events.iter().filter(move |e| e.when == when)
    }
}

/// A page of a partition of an app's event log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventPage {
    /// The sequence number of the partition's latest event (0: none yet).
    pub last: u64,
    /// `(sequence, event)` after the one asked for, oldest first.
    pub events: Vec<(u64, Arc<str>)>,
}

/// Work a store's background tasks hand to the rules.
#[derive(Debug)]
pub enum Work<S: Store + ?Sized> {
    /// A timer is due; report [`Store::timer_done`] with `claim` once it was handled (a
    /// timer not reported comes back).
    Timer {
        /// What is due.
        timer: Timer,
        /// The store's handle on it.
        claim: S::Claim,
    },
    /// A session whose node died: end it (and its memberships) as its own node would have,
    /// then say whether that worked on `done`.
    Orphan {
        /// App.
        app: AppId,
        /// Account.
        account: Account,
        /// The session (on the dead node).
        session: S::Session,
        /// The channels it was in.
        channels: Vec<ChannelName>,
        /// Handled (true) or not (it is tried again later).
        done: tokio::sync::oneshot::Sender<bool>,
    },
}

/// Where work goes.
pub type WorkSender<S> = mpsc::UnboundedSender<Work<S>>;

/// The shared state of the service. Every method is atomic in its backend; none applies a
/// protocol rule beyond what its documentation says.
pub trait Store: Send + Sync + 'static {
    /// A session as the store identifies it (a connection on some node).
    type Session: Clone + Send + Sync + std::fmt::Debug + 'static;
    /// The store's handle on a due timer.
    type Claim: Send + Sync + std::fmt::Debug + 'static;

    /// Hand due timers and orphaned sessions to `work` from now on.
    fn run_work(&self, work: WorkSender<Self>);
    /// The session of the local connection `conn`.
    fn session_of(&self, conn: &ConnHandle) -> Self::Session;

    // ---------------------------------------------------------------- sessions

    /// Make the connection the account's session; its welcome is queued on it before the
    /// session is visible to anyone. Returns the session it replaced and the attribute asked.
    fn session_open(
        &self,
        s: Opening<'_>,
    ) -> impl Future<Output = SResult<Opened<Self::Session>>> + Send;
    /// End `session` if it is still the account's session; true when it was (then `events`'
    /// [`When::Done`] ones are appended with it).
    fn session_close(
        &self,
        user: User<'_>,
        session: &Self::Session,
        events: &StepEvents,
    ) -> impl Future<Output = SResult<bool>> + Send;
    /// Whether `session` is still connected (its node alive, or not known to be dead: the
    /// registry of nodes out of reach).
    fn session_alive(&self, session: &Self::Session) -> impl Future<Output = bool> + Send;
    /// Tell `session` it was replaced (its connection sends `kick` and closes).
    fn kick(
        &self,
        user: User<'_>,
        session: &Self::Session,
    ) -> impl Future<Output = SResult<()>> + Send;
    /// Whether the account has a live session.
    fn online(&self, user: User<'_>) -> impl Future<Output = SResult<bool>> + Send;
    /// The account's session, if it has one.
    fn session_get(
        &self,
        user: User<'_>,
    ) -> impl Future<Output = SResult<Option<Self::Session>>> + Send;

    // ---------------------------------------------------------------- user attributes

    /// All attributes of an account, in name order.
    fn user_attrs(
        &self,
        user: User<'_>,
    ) -> impl Future<Output = SResult<Vec<(String, String)>>> + Send;
    /// Set or delete one; false when a new attribute would exceed the maximum.
    fn user_attr_set(
        &self,
        user: User<'_>,
        set: UserAttrSet<'_>,
    ) -> impl Future<Output = SResult<bool>> + Send;
    /// How many attributes an account has.
    fn user_attr_count(&self, user: User<'_>) -> impl Future<Output = SResult<usize>> + Send;
    /// Delete all of an account's attributes.
    fn user_attrs_clear(&self, user: User<'_>) -> impl Future<Output = SResult<()>> + Send;

    // ---------------------------------------------------------------- mailboxes

    /// Store `item` in the recipient's mailbox under its next version, unless it is a resend
    /// or the mailbox is full; push it to the recipient's session if there is one. Pushes of
    /// a mailbox leave in version order.
    fn mail_append(
        &self,
        to: User<'_>,
        item: MailItem<'_>,
    ) -> impl Future<Output = SResult<Appended>> + Send;
    /// A page of the mailbox after `poll`'s acknowledgement.
    fn mail_poll(
        &self,
        user: User<'_>,
        poll: Poll<'_>,
    ) -> impl Future<Output = SResult<MailPage>> + Send;
    /// Remove the message `version` with msg-v3 id `id` if it is not acknowledged yet; true
    /// when it was there. Another message at that version stays (a poll numbered the mailbox
    /// again, [`renumbered`]).
    fn mail_withdraw(
        &self,
        user: User<'_>,
        version: u64,
        id: &str,
    ) -> impl Future<Output = SResult<bool>> + Send;

    // ---------------------------------------------------------------- channels

    /// Make the account (on its connection) a member. On a fresh membership the event is
    /// published (if the channel's `notify` setting is on) and the membership counts as
    /// changed.
    fn join(&self, at: Chan<'_>, j: Joining<'_>) -> impl Future<Output = SResult<Joined>> + Send;
    /// End the membership the account holds through its session; true when it did. Then the
    /// event is published (if `notify`); an empty channel without attributes or kept messages
    /// is gone; with attributes it is kept for its `ttl_secs`, with kept messages only for
    /// `keep_empty_secs`.
    fn leave(
        &self,
        at: Chan<'_>,
        l: Leaving<'_, Self::Session>,
    ) -> impl Future<Output = SResult<bool>> + Send;
    /// Publish an event after its rules.
    fn publish(
        &self,
        at: Chan<'_>,
        p: Publish<'_>,
    ) -> impl Future<Output = SResult<Published>> + Send;
    /// Change attributes (creating the channel's state) and publish the change to every
    /// member.
    fn attr_change(
        &self,
        at: Chan<'_>,
        c: AttrChange<'_>,
    ) -> impl Future<Output = SResult<AttrOutcome>> + Send;
    /// A channel's settings (`None`: it has no state).
    fn settings(
        &self,
        at: Chan<'_>,
    ) -> impl Future<Output = SResult<Option<ChannelSettings>>> + Send;
    /// Count the membership as changed.
    fn touch_members(&self, at: Chan<'_>) -> impl Future<Output = SResult<()>> + Send;
    /// If the membership changed since the last call: the member count (and the flag is
    /// cleared).
    fn take_members_changed(
        &self,
        at: Chan<'_>,
    ) -> impl Future<Output = SResult<Option<usize>>> + Send;
    /// A page of the app's channels that have members, with their member counts, by name (in
    /// byte order): at most `limit`, those after `cursor`, which is `""` for the first page,
    /// then the `next` of the page before (the page's last name; `None`: no more). Each
    /// channel appears on one page; one that gains or loses its members meanwhile may or may
    /// not (a page may be short when some emptied). None before `from` either (`""`: no
    /// bound; a search by prefix starts at the prefix): [`page_start`].
    fn channels(
        &self,
        app: &AppId,
        cursor: &str,
        from: &str,
        limit: usize,
    ) -> impl Future<Output = SResult<ChannelPage>> + Send;
    /// Every attribute of a channel (none when it has no state).
    fn channel_attrs(
        &self,
        at: Chan<'_>,
    ) -> impl Future<Output = SResult<Vec<(String, String)>>> + Send;
    /// Member count and the latest `max` members, oldest first.
    fn members(
        &self,
        at: Chan<'_>,
        max: usize,
    ) -> impl Future<Output = SResult<(usize, Vec<String>)>> + Send;
    /// The channel's latest message number and its kept messages numbered above `after`
    /// and younger than `max_age`.
    fn history(
        &self,
        at: Chan<'_>,
        after: u64,
        max_age: Duration,
    ) -> impl Future<Output = SResult<History>> + Send;
    /// Whether the account is a member.
    fn is_member(
        &self,
        at: Chan<'_>,
        account: &Account,
    ) -> impl Future<Output = SResult<bool>> + Send;

    // ---------------------------------------------------------------- invitations

    /// In one step: store the mail in the callee's mailbox (unless it is a resend or the
    /// mailbox is full), and with it the invitation (ringing, not acknowledged) and its
    /// timers.
    fn invite_open(&self, open: InviteOpen<'_>) -> impl Future<Output = SResult<Appended>> + Send;
    /// In one step: the invitations of `keys` that exist take the step; the mail goes to its
    /// recipient (not when `require_live` and none exists).
    fn invite_relay(&self, relay: InviteRelay<'_>)
        -> impl Future<Output = SResult<Relayed>> + Send;
    /// The invitation of `key`.
    fn invite_get(
        &self,
        key: &InviteKey,
    ) -> impl Future<Output = SResult<Option<InviteRecord>>> + Send;
    /// Remove and return the invitation if it is the one of `take`: who takes it ends it,
    /// once.
    fn invite_take(
        &self,
        key: &InviteKey,
        take: Take,
    ) -> impl Future<Output = SResult<Option<InviteRecord>>> + Send;
    /// The invitations the account made, with their generations.
    fn invites_by(
        &self,
        caller: User<'_>,
    ) -> impl Future<Output = SResult<Vec<(InviteKey, u64)>>> + Send;

    // ---------------------------------------------------------------- the event log

    /// How many partitions each app's log has: a consumer reads `0 .. event_partitions()`.
    /// The events of a step go where the store puts the step's keys, each in the partition
    /// of its ordering key there ([`crate::events::partition`], below
    /// [`crate::events::PARTITIONS`]); a store that spreads an app over several places has
    /// [`crate::events::PARTITIONS`] per place.
    fn event_partitions(&self) -> u32 {
        crate::events::PARTITIONS
    }

    /// Append `event` to partition `partition` of the app's log under the partition's next
    /// sequence number (returned), then drop what falls outside `cap`.
    fn event_append(
        &self,
        app: &AppId,
        partition: u32,
        event: &str,
        cap: EventCap,
    ) -> impl Future<Output = SResult<u64>> + Send;
    /// Up to `max` events of the partition numbered above `after`.
    fn event_read(
        &self,
        app: &AppId,
        partition: u32,
        after: u64,
        max: usize,
    ) -> impl Future<Output = SResult<EventPage>> + Send;
    /// The last sequence number `consumer` handled in the partition (`None`: it never did),
    /// kept as long as the partition's events are.
    fn event_cursor(
        &self,
        app: &AppId,
        consumer: &str,
        partition: u32,
    ) -> impl Future<Output = SResult<Option<u64>>> + Send;
    /// Set what [`Store::event_cursor`] returns.
    fn event_cursor_set(
        &self,
        app: &AppId,
        consumer: &str,
        partition: u32,
        seq: u64,
        keep: Duration,
    ) -> impl Future<Output = SResult<()>> + Send;
    /// Hold, or go on holding, the right of `holder` to consume the partition for
    /// `consumer` during `ttl`; false while another holder has it.
    fn event_lease(
        &self,
        app: &AppId,
        consumer: &str,
        partition: u32,
        holder: &str,
        ttl: Duration,
    ) -> impl Future<Output = SResult<bool>> + Send;

    // ---------------------------------------------------------------- presence watches

    /// Make `watcher` (a session of `app`) watch `accounts` (`on`), or stop watching them.
    /// New watches are refused together (false, nothing changed) when the app's watches
    /// would pass `app_max`; stopping is never refused.
    fn watch(
        &self,
        watcher: User<'_>,
        session: &Self::Session,
        accounts: &[Account],
        on: bool,
        app_max: usize,
    ) -> impl Future<Output = SResult<bool>> + Send;
    /// Queue `frame` on every session watching `user` (watches of sessions that are gone
    /// are dropped on the way).
    fn watchers_push(
        &self,
        user: User<'_>,
        frame: &str,
    ) -> impl Future<Output = SResult<()>> + Send;
    /// Keep `user` unreachable for `grace` (its connection dropped; `None`: not any more).
    fn unreachable_set(
        &self,
        user: User<'_>,
        grace: Option<Duration>,
    ) -> impl Future<Output = SResult<()>> + Send;
    /// Whether `user` is unreachable now.
    fn unreachable(&self, user: User<'_>) -> impl Future<Output = SResult<bool>> + Send;

    // ---------------------------------------------------------------- timers and the node

    /// Keep `timer`, due `after` from now (replacing the same timer).
    fn schedule(&self, timer: Timer, after: Duration) -> impl Future<Output = SResult<()>> + Send;
    /// A timer handed out as work was handled.
    fn timer_done(&self, claim: Self::Claim) -> impl Future<Output = ()> + Send;
    /// WebSocket URLs of the live nodes (empty for a single process).
    fn live_nodes(&self) -> impl Future<Output = Vec<String>> + Send;
    /// Sessions on this node.
    fn local_sessions(&self) -> usize;
    /// The id of the node `session` is on (`None`: this process, the only one).
    fn session_node(&self, session: &Self::Session) -> Option<String>;
    /// Keep this node's `report` (the console's figures, JSON) where every node reads it,
    /// for `ttl`, replacing the one before.
    fn node_report_put(
        &self,
        report: &str,
        ttl: Duration,
    ) -> impl Future<Output = SResult<()>> + Send;
    /// The reports of the live nodes (this one's included) that have not expired.
    fn node_reports(&self) -> impl Future<Output = SResult<Vec<String>>> + Send;
    /// What the store holds on behalf of clients.
    fn footprint(&self) -> impl Future<Output = SResult<Footprint>> + Send;
    /// The store's own Prometheus metrics, appended to `out` (none for a store that has no
    /// figures of its own).
    fn render_metrics(&self, out: &mut String) {
        let _ = out;
    }
    /// Stop touching shared state at once, as a crashed node would (tests of failover).
    fn halt(&self) {}
    /// Where this node's connection ids start: past every id a previous run of the node (the
    /// same node id, in a shared store) handed out, so that what that run left names none of
    /// this run's connections (in memory: nothing outlives a run).
    fn first_conn_id(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_round_trip() {
        let key = InviteKey {
            app: AppId::from_stored("app").unwrap(),
            caller: Account::from_stored("a:1;").unwrap(),
            channel: ChannelName::from_stored("room:2;").unwrap(),
            callee: Account::from_stored("b").unwrap(),
        };
        let all = [
            Timer::InviteOffline(key.clone(), 7),
            Timer::InviteTimeout(key.clone(), u64::MAX),
            Timer::CallerGone(key.clone(), 0),
            Timer::MemberNum(key.app.clone(), key.channel.clone()),
            Timer::UserAttrs(key.app.clone(), key.caller.clone()),
            Timer::ChannelExpired(key.app.clone(), key.channel.clone()),
        ];
        for t in all {
            assert_eq!(
                Timer::decode(&t.encode()),
                Some(t.clone()),
                "{}",
                t.encode()
            );
        }
        assert_eq!(Timer::decode("u3:app"), None);
        assert_eq!(Timer::decode("z"), None);
    }
}
