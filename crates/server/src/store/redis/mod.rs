//! The cluster store: many opensig-server nodes sharing one Redis.
//!
//! What lives in Redis (so a node can die without losing it): sessions (which node holds which
//! account, with expiry), user attributes, mailboxes, channels (members, attributes, settings,
//! sequence), invitations, and timers (a sorted set of due times, claimed with a lease so each
//! fires once even if its node died). Each [`Store`] method is one Lua script (`lua/`), so it is
//! atomic, and a script that changes what others see also publishes it, so deliveries leave
//! Redis in the order of the changes.
//!
//! Delivery: each node subscribes to its topic and reads it in order; it carries typed
//! [`NodeMsg`]s — pushes for its sessions, channel events for its members (once per node, never
//! per recipient), membership changes of its connections (ordered with the events), kicks.
//! Nodes register with a heartbeat; the sessions of a node whose heartbeat lapsed are handed
//! to the rules as orphans by one of the others.
//!
//! The same code runs on one Redis (or a primary with replicas) and on a Redis Cluster
//! (`redis+cluster://`): every key of an app shares a hash slot (`keys.rs`), so each script
//! runs on the one primary that holds its app; there a node has a sharded topic per app in the
//! app's slot (the app's scripts `SPUBLISH` to it) and one of its own for kicks.

mod conn;
mod keys;
pub mod node;

pub use self::conn::Target;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::{AsyncCommands, Script, ScriptInvocation, Value as RValue};
use tracing::{debug, info, warn};

use opensig_protocol::frame::{out, Kept, Seen};
use opensig_protocol::ident::{Account, AppId, ChannelName};
use opensig_protocol::Limits;

use self::conn::Conn;
use self::keys::Keys;
use self::node::NodeMsg;
use super::{
    now_ms, page_start, Appended, AttrChange, AttrOp, AttrOutcome, AttrQuota, AttrSet, Chan,
    ChannelPage, ChannelSettings, Event, EventCap, EventPage, Footprint, History, InviteKey,
    InviteOpen, InviteRecord, InviteRelay, InviteState, InviteStep, Joined, Joining, Leaving,
    MailItem, MailPage, Opened, Opening, Poll, Publish, Published, Relayed, SResult, Setting,
    StepEvents, Store, StoreError, Take, Timer, User, UserAttrSet, Work, WorkSender, NO_EVENTS,
};
use crate::delivery::{ConnHandle, Frame};
use crate::events::{self, PARTITIONS};

const HEARTBEAT: Duration = Duration::from_millis(1000);
const NODE_TTL_MS: u64 = 5000;
const SESSION_TTL_MS: u64 = 30_000;
const SESSION_REFRESH: Duration = Duration::from_secs(10);
const TIMER_POLL: Duration = Duration::from_millis(100);
/// Longest an app of its own goes unasked by a node that has not heard of a change to its
/// timers (a node asks again when its own steps may have scheduled one, when the next known
/// one is due, and when its heartbeat finds the registry back after failing — a failover of
/// its primary may have lost the index's last writes; the cluster's index of timers, read
/// every [`TIMER_TAKE`], tells it of the others'). A backstop only, for a lost write no
/// heartbeat saw: one script per app and node this often (10,000 apps: 17 a second).
const TIMER_RECHECK: Duration = Duration::from_secs(600);
/// How often a node reads the cluster's index of apps with timers (`timers_due.lua`).
const TIMER_TAKE: Duration = Duration::from_millis(500);
/// Apps a node takes from the index at once (when it took as many, it reads again at the
/// next tick: a reaped node's thousands of apps are asked within seconds).
const TIMER_TAKE_MAX: usize = 100;
/// How long an app a node took from the index is left to it by the others.
const TIMER_TAKE_LEASE_MS: u64 = 2000;
/// A node does not write the index again for a due time this close to what it wrote last.
const TIMER_SAID_CLOSE: Duration = Duration::from_millis(100);
const TIMER_LEASE_MS: u64 = 10_000;
const REAP_EVERY: Duration = Duration::from_millis(2000);
/// How many pipelines of a node's background work over its apps (one per app: reading its
/// indexes when reaping or ending a previous run, subscribing a previous run's apps again,
/// refreshing its sessions' expiry) are in flight at once: a node of many apps takes round
/// trips of this many, not one per app, and Redis reads them together.
const PIPELINES_AT_ONCE: usize = 16;
/// Longest a Redis operation may take before the request gets `unavailable`.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Clients told at once that pushes may have been missed ([`Inner::missed_pushes`]): each then
/// polls its mailbox and joins its channels again, one script each in Redis.
const NUDGE_BATCH: usize = 1000;
/// The pause between two such batches.
const NUDGE_PAUSE: Duration = Duration::from_millis(50);

/// Whether a script may run while Redis is past its `maxmemory`. Redis refuses a script that
/// would store more whole, before its first write (Redis 7 script flags), so a full Redis
/// never leaves half a change; scripts that only read, deliver or release run anyway, so
/// clients can still drain what is stored.
#[derive(Clone, Copy)]
enum Oom {
    /// Stores more: refused when Redis is full.
    Refuse,
    /// Reads, delivers or releases: runs when Redis is full.
    Run,
}

/// A script with the helpers it needs prepended, flagged for `oom`, publishing with `PUBLISH`
/// (one Redis) or `SPUBLISH` (`sharded`: a Redis Cluster's sharded pub/sub, which goes to the
/// primary of the topic's slot and its replicas only, where `PUBLISH` goes to every node).
/// Every script starts with `QUOTA_STEP_MS` (mail.lua's ledger groups), `CATCH_UP_MAX`
/// (channel.lua's `catch_up`), the clock, `publish_all` (one message to a node's topic, or
/// several bundled) and the event log (a step's events ride at the end of
/// its keys and arguments, see [`Inner::step_events`]).
fn script(oom: Oom, sharded: bool, parts: &[&str]) -> Script {
    let flags = match oom {
        Oom::Refuse => "#!lua",
        Oom::Run => "#!lua flags=allow-oom",
    };
    let body = body(sharded, [CLOCK, BUNDLE, EVENTS], parts);
    match cfg!(debug_assertions) {
        true => Script::new(&format!(
            "{flags}\n{KEYS_DECLARED}\n{}",
            body.replace("redis.call(", "keys_declared_call(")
        )),
        false => Script::new(&format!("{flags}\n{body}")),
    }
}

/// What [`script`] puts after the flags line: the constants, then `helpers` (clock, bundle
/// and events, in that order), then `parts`.
fn body(sharded: bool, helpers: [&str; 3], parts: &[&str]) -> String {
    let publish = if sharded { "SPUBLISH" } else { "PUBLISH" };
    let [clock, bundle, events] = helpers;
    format!(
        "local PUBLISH = '{publish}'\nlocal QUOTA_STEP_MS = {step}\n\
         local CATCH_UP_MAX = {catch_up}\n{clock}\n{bundle}\n{events}\n{}",
        parts.join("\n"),
        step = super::QUOTA_EXPIRY_STEP.as_millis(),
        catch_up = super::CATCH_UP_MAX,
    )
}

/// The Lua files a p2p message's script is made of, by name, as compiled into the server:
/// for `opensig-bench script`, which measures that script piece by piece.
pub const MAIL_LUA: [(&str, &str); 5] = [
    ("clock", CLOCK),
    ("bundle", BUNDLE),
    ("events", EVENTS),
    ("mail", MAIL),
    ("mail_append", MAIL_APPEND),
];

/// The text a release build sends to one Redis for a script that stores (refused when Redis
/// is full) made of `parts`, with `lua` giving the helpers by the names of [`MAIL_LUA`] (the
/// server's own, or an edited copy being measured against them).
pub fn release_text(lua: &dyn Fn(&str) -> String, parts: &[&str]) -> String {
    let helpers = [lua("clock"), lua("bundle"), lua("events")];
    let body = body(false, helpers.each_ref().map(String::as_str), parts);
    format!("#!lua\n{body}")
}

/// Debug builds (the tests) run every script with each `redis.call` checked: a key it names
/// must be one of the script's `KEYS`. Redis Cluster requires it (a key built in a script
/// is not checked for its slot before the script runs), and so does partitioning an app's
/// keys over several slots later.
const KEYS_DECLARED: &str = include_str!("lua/keys_declared.lua");

const CLOCK: &str = include_str!("lua/clock.lua");
const BUNDLE: &str = include_str!("lua/bundle.lua");
const EVENTS: &str = include_str!("lua/events.lua");
const MAIL: &str = include_str!("lua/mail.lua");
const MAIL_APPEND: &str = include_str!("lua/mail_append.lua");
const CHANNEL: &str = include_str!("lua/channel.lua");

/// Every script; the ones whose operations both store and release come twice, flagged for
/// each (`…_grow` for the operations that store more).
struct Scripts {
    session: Script,
    session_grow: Script,
    user_attr: Script,
    user_attr_grow: Script,
    mail_append: Script,
    mail_poll: Script,
    mail_poll_ids: Script,
    mail_withdraw: Script,
    join: Script,
    leave: Script,
    publish: Script,
    attr: Script,
    attr_grow: Script,
    channel_state: Script,
    invite: Script,
    invite_grow: Script,
    timers: Script,
    timers_due: Script,
    event_append: Script,
    event_lease: Script,
    watch: Script,
}

impl Scripts {
    fn new(sharded: bool) -> Scripts {
        use Oom::{Refuse, Run};
        let script = |oom, parts: &[&str]| script(oom, sharded, parts);
        let channel = |oom, body| script(oom, &[CHANNEL, body]);
        let session = include_str!("lua/session.lua");
        let user_attr = include_str!("lua/user_attr.lua");
        let attr = include_str!("lua/attr.lua");
        let invite = include_str!("lua/invite.lua");
        Scripts {
            session: script(Run, &[session]),
            session_grow: script(Refuse, &[session]),
            user_attr: script(Run, &[user_attr]),
            user_attr_grow: script(Refuse, &[user_attr]),
            mail_append: script(Refuse, &[MAIL, MAIL_APPEND]),
            mail_poll: script(Run, &[MAIL, include_str!("lua/mail_poll.lua")]),
            mail_poll_ids: script(Run, &[MAIL, include_str!("lua/mail_poll_ids.lua")]),
            mail_withdraw: script(Run, &[MAIL, include_str!("lua/mail_withdraw.lua")]),
            join: channel(Refuse, include_str!("lua/join.lua")),
            leave: channel(Run, include_str!("lua/leave.lua")),
            publish: channel(Run, include_str!("lua/publish.lua")),
            attr: channel(Run, attr),
            attr_grow: channel(Refuse, attr),
            channel_state: channel(Run, include_str!("lua/channel_state.lua")),
            invite: script(Run, &[MAIL, invite]),
            invite_grow: script(Refuse, &[MAIL, invite]),
            timers: script(Run, &[include_str!("lua/timers.lua")]),
            timers_due: script(Run, &[include_str!("lua/timers_due.lua")]),
            event_append: script(Refuse, &[include_str!("lua/event_append.lua")]),
            event_lease: script(Run, &[include_str!("lua/event_lease.lua")]),
            watch: script(Refuse, &[include_str!("lua/watch.lua")]),
        }
    }
}

/// How to reach Redis and who this node is.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://host:port/db`, or `redis+cluster://host:port,host:port/` (a Redis Cluster).
    pub url: String,
    /// Prefix of every key and topic (several clusters can share one Redis).
    pub prefix: String,
    /// Replicas that must hold a step's writes before its caller hears it happened (`WAIT`
    /// after every script, on every primary this node wrote to; 0: none).
    pub wait_replicas: u32,
    /// How many units each app's channels and accounts are spread over (1 ..=
    /// [`MAX_PARTITIONS`]; 1: an app in one hash slot). Fixed for the life of the cluster's data: the first node to
    /// start records it, and a node given another number refuses to start. Each unit past
    /// the first costs, per app a node serves, one more sharded subscription (about 220 B of
    /// Redis memory) and eight more partitions of the app's event log to read.
    pub partitions: u32,
    /// This node's id (unique in the cluster; no spaces).
    pub node_id: String,
    /// The WebSocket URL clients use for this node (listed by `/getaddr`).
    pub public_url: String,
}

/// The most units an app can be spread over (`RedisConfig::partitions`).
pub const MAX_PARTITIONS: u32 = 64;

/// What the units of a cluster with several place, in its record of their number: channels
/// by channel, accounts by account.
const PLACED: &str = "channels accounts";

/// A session of the cluster: a connection on a node (`conn: None` — any connection of that
/// node, for sessions found through a dead node's memberships).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSession {
    /// The node.
    pub node: String,
    /// The connection on it.
    pub conn: Option<u64>,
}

impl NodeSession {
    /// How sessions and memberships record it: `"node conn"` (`"node "`: any).
    fn location(&self) -> String {
        match self.conn {
            Some(c) => format!("{} {c}", self.node),
            None => format!("{} ", self.node),
        }
    }

    /// A session as [`NodeSession::location`] records it (`None`: not a location).
    fn from_location(s: &str) -> Option<NodeSession> {
        let (node, conn) = s.split_once(' ')?;
        Some(NodeSession {
            node: node.into(),
            conn: conn.parse().ok(),
        })
    }
}

/// A node whose registration holds: `(id, public URL)`.
type LiveNode = (String, String);

struct Inner {
    defaults: ChannelSettings,
    /// How long a mailbox's numbering is kept after its last message or poll (ms).
    mailbox_keep_ms: u64,
    cfg: RedisConfig,
    keys: Keys,
    scripts: Scripts,
    conn: Conn,
    /// How many units each app's channels are in (`Keys::unit`, `RedisConfig::partitions`;
    /// its accounts are in the first).
    partitions: u32,
    /// Units this node has registered in its list of apps (`Keys::node_apps`; an app's
    /// first unit is the app) — before its first write of their sessions, memberships or
    /// timers, so that its timer poller asks them and a reaper finds them — until it forgets
    /// them ([`Inner::forget_idle_apps`]).
    known_apps: DashMap<String, Arc<KnownApp>>,
    /// Registering an app and forgetting it take the app's turn (one of these, by the app's
    /// hash), so that the list in Redis and the subscription follow the order they happen in.
    app_turns: Box<[tokio::sync::Mutex<()>]>,
    /// How long an app nothing on this node uses stays known (`idle_app_forget_secs`; none:
    /// for ever).
    forget_apps_after: Option<Duration>,
    /// Sharded topics this node unsubscribed from itself (an app it forgot): Redis's word
    /// that they are unsubscribed is no loss.
    unsubscribing: Mutex<BTreeSet<String>>,
    /// This run's first connection id ([`Store::first_conn_id`]): what names a connection of
    /// this node below it is a previous run's.
    first_conn: u64,
    /// What a previous run of this node left has been ended ([`Inner::end_previous_run`]).
    previous_run_ended: AtomicBool,
    /// A task is subscribing this node's sharded topics again ([`resubscribe`]).
    resubscribing: AtomicBool,
    /// A connection this node's sharded topics were subscribed on was lost (which topics it
    /// carried is not known).
    subs_lost: AtomicBool,
    /// Apps whose sharded topic Redis unsubscribed this node from (their slot moved to
    /// another primary: an operator's failover, a slot migration).
    topics_lost: Mutex<BTreeSet<String>>,
    /// What arrives on topics whose subscription was lost, held until their clients were
    /// told to poll and rejoin ([`HeldPushes`]).
    held: Mutex<HeldPushes>,
    /// When the timer poller asks each app's timers next (absent: at the next tick).
    timers_next: Mutex<BTreeMap<String, tokio::time::Instant>>,
    /// What this node last wrote in the cluster's index of timers for each app it asked: when
    /// its next timer is due, or `None` (it had none and left the index).
    timers_said: Mutex<HashMap<String, Option<tokio::time::Instant>>>,
    /// On a Redis Cluster: the connection this node's sharded topics are subscribed on (one
    /// for the node, one per app it registered).
    subs: Option<conn::Shards>,
    /// On a Redis Cluster: which primary served which slots when this node last subscribed
    /// ([`Conn::slot_owners`]), to tell after a failover whose topics moved.
    owners: Mutex<Vec<(u16, u16, String)>>,
    /// Connections of this node that logged in, by id.
    conns: DashMap<u64, ConnHandle>,
    /// Sessions of this node: "app account" → conn id.
    sessions: DashMap<String, u64>,
    /// Logins of one account on this node take turns (one of these, by the account's hash),
    /// so `sessions` ends up naming the login Redis applied last.
    login_turns: Box<[tokio::sync::Mutex<()>]>,
    /// Channel members on this node: "app channel" → (account, handle).
    members: DashMap<String, Vec<(String, ConnHandle)>>,
    /// When the last heartbeat that got through was sent (none before the first).
    registered_at: Mutex<Option<tokio::time::Instant>>,
    stopping: AtomicBool,
    /// Crashed on purpose (tests): every operation fails, background tasks stop.
    halted: AtomicBool,
    /// Short-lived cache of the live nodes, `(id, public URL)` (kept, however old, while the
    /// registry cannot be read: a node that cannot be checked is not taken for dead).
    live: Mutex<(std::time::Instant, Option<Vec<LiveNode>>)>,
    /// Since when this node's heartbeats have got through without a break or a lapse (none
    /// before the first, and after one failed).
    steady_since: Mutex<Option<tokio::time::Instant>>,
    work: Mutex<Option<WorkSender<Redis>>>,
    /// Messages waiting to be stored, by their recipients' unit: while a unit's call of
    /// `mail_append.lua` runs, its next messages wait here and go in its next call together.
    mail_queues: Mutex<std::collections::HashMap<String, MailQueue>>,
}

/// Most messages one call of `mail_append.lua` stores (a bound on the call's size, so its
/// time in Redis, whatever waits behind it).
const MAIL_BATCH_MAX: usize = 64;

/// A unit's messages waiting to be stored; `running` while a task sends them.
#[derive(Default)]
struct MailQueue {
    waiting: std::collections::VecDeque<MailWaiting>,
    running: bool,
}

/// A message waiting to be stored: its part of the call, and who waits for its outcome.
struct MailWaiting {
    call: Call,
    done: tokio::sync::oneshot::Sender<SResult<Appended>>,
}

/// Keys and arguments of one part of a script call, gathered before the call is made.
#[derive(Default)]
struct Call {
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

/// Where a script call's keys and arguments go: a call being prepared, or a part kept for
/// a call made later ([`Call`]).
trait Invoke {
    fn key<T: redis::ToRedisArgs>(&mut self, key: T) -> &mut Self;
    fn arg<T: redis::ToRedisArgs>(&mut self, arg: T) -> &mut Self;
}

impl Invoke for ScriptInvocation<'_> {
    fn key<T: redis::ToRedisArgs>(&mut self, key: T) -> &mut Self {
        ScriptInvocation::key(self, key)
    }
    fn arg<T: redis::ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        ScriptInvocation::arg(self, arg)
    }
}

impl Invoke for Call {
    fn key<T: redis::ToRedisArgs>(&mut self, key: T) -> &mut Self {
        self.keys.extend(key.to_redis_args());
        self
    }
    fn arg<T: redis::ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }
}

/// How many login turns a node has (logins of accounts with the same turn wait for each other
/// for one script call).
const LOGIN_TURNS: usize = 64;

fn turn_of(local: &str) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(local) as usize % LOGIN_TURNS
}

/// An app in this node's list of apps ([`Inner::app`]). The steps of the app hold it while
/// they run (so it is in use while anything but `known_apps` holds it).
struct KnownApp {
    /// Set once the app is in the list in Redis (and its topic subscribed, on a cluster).
    registered: tokio::sync::OnceCell<()>,
    /// When a step last asked for it.
    used: Mutex<tokio::time::Instant>,
}

impl KnownApp {
    fn new() -> KnownApp {
        KnownApp {
            registered: tokio::sync::OnceCell::new(),
            used: Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Registered, held by no step, and asked for by none for `after`.
    fn unused(self: &Arc<Self>, after: Duration) -> bool {
        Arc::strong_count(self) == 1
            && self.registered.initialized()
            && self.used.lock().elapsed() >= after
    }
}

/// Where a run's connection ids start: the start's Unix time in ms × 1024 (a later run
/// starts past every id an earlier one handed out unless that one took more than 1,024
/// connections per millisecond it ran; below 2^53 until the year 2248).
fn first_conn_id() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ms.saturating_mul(1024)
}

/// The Redis store. Cloning shares the same node.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

async fn timed<T>(f: impl std::future::Future<Output = redis::RedisResult<T>>) -> SResult<T> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(StoreError::Timeout(OP_TIMEOUT)),
    }
}

fn text(v: &RValue) -> String {
    match v {
        RValue::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        RValue::SimpleString(s) => s.clone(),
        RValue::Int(i) => i.to_string(),
        RValue::VerbatimString { text, .. } => text.clone(),
        _ => String::new(),
    }
}

fn int(v: &RValue) -> i64 {
    match v {
        RValue::Int(i) => *i,
        other => text(other).parse().unwrap_or(0),
    }
}

fn list(v: RValue) -> Vec<RValue> {
    match v {
        RValue::Array(a) | RValue::Set(a) => a,
        RValue::Nil => Vec::new(),
        other => vec![other],
    }
}

fn page(r: RValue) -> MailPage {
    let items = list(r);
    let ver_clear = items.first().map(int).unwrap_or(0).max(0) as u64;
    let msgs = items[1.min(items.len())..]
        .chunks(2)
        .filter(|p| p.len() == 2)
        .map(|p| (int(&p[0]).max(0) as u64, Arc::<str>::from(text(&p[1]))))
        .collect();
    MailPage { ver_clear, msgs }
}

fn appended(status: i64, version: i64, offline: i64) -> Appended {
    match status {
        0 => Appended::Stored {
            version: version.max(0) as u64,
            offline: offline == 1,
        },
        1 => Appended::Duplicate,
        3 => Appended::AppFull,
        4 => Appended::SenderLimited,
        5 => Appended::Busy,
        _ => Appended::Full,
    }
}

fn pairs(items: &[RValue]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = items
        .chunks(2)
        .filter(|p| p.len() == 2)
        .map(|p| (text(&p[0]), text(&p[1])))
        .collect();
    v.sort();
    v
}

fn invite_record(fields: Vec<Option<String>>) -> Option<InviteRecord> {
    let get = |i: usize| fields.get(i).cloned().flatten();
    let state = match get(1)?.as_str() {
        "accepted" => InviteState::Accepted,
        "acked" => InviteState::Ringing { acked: true },
        _ => InviteState::Ringing { acked: false },
    };
    Some(InviteRecord {
        extra: get(0).unwrap_or_default(),
        state,
        version: get(2)?.parse().ok()?,
        generation: get(3)?.parse().ok()?,
        // a record from before ids were kept: withdraws nothing (the callee gets a bye)
        msg_id: get(4).unwrap_or_default(),
    })
}

/// `s` matched literally in a Redis glob pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// The setting as a field of the settings hash.
fn setting_field(s: Option<Setting>) -> (&'static str, String) {
    match s {
        None => ("", String::new()),
        Some(Setting::Notify(on)) => ("notify", if on { "1" } else { "0" }.into()),
        Some(Setting::Ttl(secs)) => ("ttl", secs.to_string()),
        Some(Setting::SendmsgLimit(n)) => ("msg_rate", n.to_string()),
        Some(Setting::SetattrLimit(n)) => ("attr_rate", n.to_string()),
        Some(Setting::AutoUpdate(secs)) => ("auto", secs.to_string()),
        Some(Setting::History(n)) => ("history", n.to_string()),
    }
}

/// An invitation's timers as invite.lua reads them: their count, then member and delay (ms)
/// of each.
fn timer_args(inv: &mut ScriptInvocation<'_>, timers: &[(Timer, Duration)]) {
    inv.arg(timers.len());
    for (t, after) in timers {
        inv.arg(t.encode()).arg(after.as_millis() as u64);
    }
}

impl Redis {
    /// An invitation whose caller and callee are in different units: its message in the
    /// callee's unit, then the record, the caller's index and the timers in the caller's
    /// `unit`, with the events (keyed by the caller). A failure between the two leaves a
    /// message without a record: the caller was told the step failed, and its resend (a
    /// duplicate of the message) writes the record, its version not known.
    async fn invite_open_apart(
        &self,
        open: InviteOpen<'_>,
        unit: &str,
        ik: keys::InviteKeys,
        entry: &str,
    ) -> SResult<Appended> {
        let inner = &self.inner;
        let key = open.key;
        let callee_unit = inner.account_unit(&key.app, &key.callee);
        let mail_events = inner.events_in(open.mail.events, &callee_unit);
        let mail = MailItem {
            events: &mail_events,
            ..open.mail
        };
        let mut inv = inner.scripts.invite_grow.prepare_invoke();
        inv.arg("relay");
        inner.mail_call(&mut inv, &callee_unit, &key.callee, &mail);
        inv.arg("keep").arg("0");
        inner.step_events(&mut inv, &callee_unit, &mail_events);
        let r: Vec<i64> = inner.run(&inv).await?;
        let get = |i: usize| r.get(i).copied().unwrap_or(0);
        let (status, version, offline) = (get(1), get(2), get(3));
        // stored, or a resend (its record may be missing); refused: no record
        if status > 1 {
            return Ok(appended(status, version, offline));
        }
        let mut inv = inner.scripts.invite_grow.prepare_invoke();
        inv.arg("record");
        inv.key(ik.record)
            .key(ik.by_caller)
            .key(inner.keys.timers(unit));
        inv.arg(status).arg(version).arg(offline);
        inv.arg(open.extra).arg(open.generation).arg(entry);
        inv.arg(open.mail.id).arg(open.mail.ttl.as_millis() as u64);
        timer_args(&mut inv, open.timers);
        inner.step_events(&mut inv, unit, &inner.events_in(open.mail.events, unit));
        let _: i64 = inner.run(&inv).await?;
        inner.timers_touched(unit);
        Ok(appended(status, version, offline))
    }

    /// Connect, register this node and start its background tasks (subscriber, heartbeat,
    /// timers, reaper).
    pub async fn connect(cfg: RedisConfig, limits: &Limits) -> Result<Redis, redis::RedisError> {
        if cfg.node_id.is_empty() || cfg.node_id.contains(char::is_whitespace) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "the node id must be a word without spaces",
            )));
        }
        if !Keys::prefix_ok(&cfg.prefix) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "the key prefix must not contain { or } (they name Redis Cluster hash slots)",
            )));
        }
        if !(1..=MAX_PARTITIONS).contains(&cfg.partitions) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "redis_partitions out of range",
                format!("1 to {MAX_PARTITIONS}, not {}", cfg.partitions),
            )));
        }
        let target = Target::parse(&cfg.url).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "redis URL", e))
        })?;
        let conn = Conn::open(&target, OP_TIMEOUT).await?;
        let keys = Keys::new(&cfg.prefix, matches!(target, Target::Cluster(_)));
        // the cluster's number of units: the first node's, for the life of the data (`SET NX`
        // then `GET`: Redis 6.2 has no `SET NX GET`); with several, what they place
        // ([`PLACED`]: a record without it is of a version that spread channels only)
        let record = match cfg.partitions {
            1 => "1".to_string(),
            n => format!("{n} {PLACED}"),
        };
        let (recorded,): (Option<String>,) = timed(
            redis::pipe()
                .cmd("SET")
                .arg(keys.partitions())
                .arg(&record)
                .arg("NX")
                .ignore()
                .get(keys.partitions())
                .query_async(&mut conn.clone()),
        )
        .await
        .map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::IoError,
                "reading the cluster's redis_partitions",
                e.to_string(),
            ))
        })?;
        match recorded.filter(|r| *r != record) {
            None => {}
            Some(r) if r == cfg.partitions.to_string() => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "this prefix's data was written by a version that spread only channels over the units (accounts are spread too now): start with a new redis_prefix",
                    format!("the cluster's record {r:?}"),
                )));
            }
            Some(r) => {
                let n = r.split(' ').next().unwrap_or_default();
                return Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "redis_partitions differs from the cluster's (its data is placed by it: start with the cluster's)",
                    format!("this node's {}, the cluster's {n}", cfg.partitions),
                )));
            }
        }
        let (pushes_tx, pushes) = tokio::sync::mpsc::unbounded_channel();
        let subs = match &target {
            Target::One(_) => None,
            Target::Cluster(seeds) => Some(Conn::subscriber(seeds, pushes_tx).await?),
        };
        let inner = Arc::new(Inner {
            defaults: ChannelSettings::defaults(limits),
            mailbox_keep_ms: limits.mailbox_state_keep_secs.saturating_mul(1000).max(1),
            keys,
            scripts: Scripts::new(matches!(target, Target::Cluster(_))),
            conn,
            partitions: cfg.partitions,
            known_apps: DashMap::new(),
            app_turns: (0..LOGIN_TURNS).map(|_| Default::default()).collect(),
            forget_apps_after: (limits.idle_app_forget_secs > 0)
                .then(|| Duration::from_secs(limits.idle_app_forget_secs)),
            unsubscribing: Mutex::new(BTreeSet::new()),
            first_conn: first_conn_id(),
            previous_run_ended: AtomicBool::new(false),
            resubscribing: AtomicBool::new(false),
            subs_lost: AtomicBool::new(false),
            topics_lost: Mutex::new(BTreeSet::new()),
            held: Mutex::new(HeldPushes::default()),
            timers_next: Mutex::new(BTreeMap::new()),
            timers_said: Mutex::new(HashMap::new()),
            subs,
            owners: Mutex::new(Vec::new()),
            conns: DashMap::new(),
            sessions: DashMap::new(),
            login_turns: (0..LOGIN_TURNS).map(|_| Default::default()).collect(),
            members: DashMap::new(),
            registered_at: Mutex::new(None),
            stopping: AtomicBool::new(false),
            halted: AtomicBool::new(false),
            live: Mutex::new((std::time::Instant::now() - Duration::from_secs(10), None)),
            steady_since: Mutex::new(None),
            work: Mutex::new(None),
            mail_queues: Mutex::new(Default::default()),
            cfg,
        });
        inner.heartbeat_once().await.map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::IoError, "cannot register the node"))
        })?;
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        match inner.subs.clone() {
            None => {
                tokio::spawn(subscriber(Arc::downgrade(&inner), subscribed_tx));
            }
            Some(_) => {
                // a node's topics are per app (each subscribed before the app's first step
                // on this node: `Inner::app`)
                tokio::spawn(sharded_subscriber(Arc::downgrade(&inner), pushes));
                let _ = subscribed_tx.send(());
                // unknown (an error): a failover then asks every client
                inner.moved_apps().await;
            }
        }
        // a node that cannot hear its topic would miss every push addressed to it
        if !matches!(
            tokio::time::timeout(Duration::from_secs(5), subscribed_rx).await,
            Ok(Ok(()))
        ) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "cannot subscribe to this node's topic within 5 s",
            )));
        }
        tokio::spawn(heartbeat(Arc::downgrade(&inner)));
        tokio::spawn(timers(Arc::downgrade(&inner)));
        tokio::spawn(reaper(Arc::downgrade(&inner)));
        info!(node = %inner.cfg.node_id, "joined the cluster at {}", crate::config::redact_url(&inner.cfg.url));
        Ok(Redis { inner })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.cfg.node_id
    }

    /// Leave the cluster (graceful shutdown): stop the heartbeat and deregister.
    pub async fn deregister(&self) {
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::SeqCst);
        // what its steps scheduled since its poller last asked: another node asks now
        if let Err(e) = inner.timers_soon(&inner.apps_known()).await {
            warn!("handing this node's timers to the others: {e}");
        }
        let mut c = inner.conn.clone();
        let node = &inner.cfg.node_id;
        let r: SResult<()> = timed(
            redis::pipe()
                .del(inner.keys.node(node))
                .srem(inner.keys.nodes(), node)
                .del(inner.keys.node_apps(node))
                .query_async(&mut c),
        )
        .await;
        if let Err(e) = r {
            warn!("deregistering this node: {e} (the others will reap it)");
        }
    }
}

impl Inner {
    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// The unit of a channel's keys (all of them, its rate buckets, the resend markers of
    /// its messages, the events its steps append): its partition is a hash of its name.
    fn channel_unit<'a>(&self, app: &'a str, channel: &str) -> Cow<'a, str> {
        Keys::unit(app, events::unit_of_name(channel, self.partitions))
    }

    /// The unit of an account's keys (its session, user attributes, unreachable mark and
    /// watchers; its mailbox and numbering, and what a message to it checks — the resend
    /// marker, the sender's offline allowance; the invitations it made, their caller's
    /// index and timers; the events keyed by it): its partition is a hash of its name.
    fn account_unit<'a>(&self, app: &'a str, account: &str) -> Cow<'a, str> {
        Keys::unit(app, events::unit_of_name(account, self.partitions))
    }

    /// A unit's share of a quota of the app's (0: none): a `P`th, rounded up — the quota
    /// holds overall, and an app whose use is skewed to one unit meets it sooner there.
    fn share(&self, bound: usize) -> usize {
        match bound {
            0 => 0,
            n => n.div_ceil(self.partitions as usize),
        }
    }

    /// Where the app's log partition `q` of `0 .. event_partitions()` is: the unit
    /// `q / PARTITIONS`, its partition `q % PARTITIONS` there (`events::partition_among`
    /// places an event keyed by a channel or an account in that one's unit, where the steps
    /// that append it run).
    fn event_place<'a>(&self, app: &'a str, q: u32) -> (Cow<'a, str>, u32) {
        (Keys::unit(app, q / PARTITIONS), q % PARTITIONS)
    }

    /// The events of `out` keyed by a channel or account of `unit` (a step that spans two
    /// units appends each event with the part in its unit).
    fn events_in(&self, out: &StepEvents, unit: &str) -> StepEvents {
        let app = Keys::unit_app(unit);
        StepEvents {
            app: out.app.clone(),
            events: (out.events.iter())
                .filter(|e| self.event_place(app, e.partition).0 == unit)
                .cloned()
                .collect(),
            cap: out.cap,
        }
    }

    /// A watch's entry in the watched account's set: the watcher's session's location, and
    /// with several units the partition of the watcher's unit (`"node conn p"`), whose topic
    /// of its node carries the pushes to it.
    fn watch_entry(&self, watcher: User<'_>, session: &NodeSession) -> String {
        match self.partitions {
            1 => session.location(),
            n => {
                let p = events::unit_of_name(watcher.account, n);
                format!("{} {p}", session.location())
            }
        }
    }

    /// `watch.lua` in `unit` for `accounts` of it (`on`: watched by `entry`, within the
    /// unit's share of `app_max`; else not any more).
    async fn watch_call(
        &self,
        unit: &str,
        entry: &str,
        accounts: &[&Account],
        on: bool,
        app_max: usize,
    ) -> SResult<bool> {
        let mut inv = self.scripts.watch.prepare_invoke();
        inv.key(self.keys.app_watches(unit));
        for a in accounts {
            inv.key(self.keys.watchers(unit, a));
        }
        inv.arg(entry)
            .arg(if on { "1" } else { "0" })
            .arg(self.share(app_max));
        let ok: i64 = self.run(&inv).await?;
        Ok(ok == 1)
    }

    /// `step` (keep: none) on invitations of `unit` without a message (`invite.lua`
    /// `records`), with `events` when it changed one: whether one is live.
    async fn invite_records(
        &self,
        unit: &str,
        keys: &[&InviteKey],
        step: &str,
        events: &StepEvents,
    ) -> SResult<bool> {
        let mut inv = self.scripts.invite.prepare_invoke();
        inv.arg("records").arg(step);
        for k in keys {
            let ik = self.keys.invite(unit, &k.caller, &k.channel, &k.callee);
            inv.key(ik.record).key(ik.by_caller);
            inv.arg(node::invite_entry(&k.channel, &k.callee));
        }
        self.step_events(&mut inv, unit, events);
        let live: i64 = self.run(&inv).await?;
        Ok(live == 1)
    }

    /// An account's user attributes (in its unit).
    fn user_attrs_key(&self, user: User<'_>) -> String {
        let unit = self.account_unit(user.app, user.account);
        self.keys.user_attrs(&unit, user.account)
    }

    /// The unit of a channel step.
    fn unit_of<'a>(&self, at: Chan<'a>) -> Cow<'a, str> {
        self.channel_unit(at.app.as_str(), at.channel.as_str())
    }

    /// The unit of a timer's entry: a channel's is with the channel's keys, an account's
    /// with the account's, an invitation's with its caller's (where its record is).
    fn timer_unit<'a>(&self, timer: &'a Timer) -> Cow<'a, str> {
        match timer {
            Timer::MemberNum(app, ch) | Timer::ChannelExpired(app, ch) => {
                self.channel_unit(app, ch)
            }
            Timer::UserAttrs(app, a) | Timer::PresenceGrace(app, a) => self.account_unit(app, a),
            Timer::InviteOffline(k, _) | Timer::InviteTimeout(k, _) | Timer::CallerGone(k, _) => {
                self.account_unit(&k.app, &k.caller)
            }
        }
    }

    /// This node's subscriptions were gone for a while (its pub/sub connection, or a Redis
    /// primary that died before the node subscribed on its replica): what was published
    /// meanwhile never came. Every client (of `only` these units' apps: those whose topics
    /// moved)
    /// polls its mailbox and joins its channels again (the opensig SDK fetches the messages
    /// it missed from their history).
    ///
    /// Told [`NUDGE_BATCH`] clients at a time, [`NUDGE_PAUSE`] apart, so that the polls and
    /// joins they answer with reach Redis spread out (20,000 clients over about a second),
    /// not all at once.
    async fn missed_pushes(self: Arc<Self>, only: Option<BTreeSet<String>>) {
        let poll: Frame = out::msg_notice(1).into();
        let rejoin: Frame = out::rejoin_notice().into();
        // (units: a unit's loss is told to every client of its app)
        let only: Option<BTreeSet<&str>> =
            (only.as_ref()).map(|units| units.iter().map(|u| Keys::unit_app(u)).collect());
        let conns: Vec<ConnHandle> = match &only {
            None => self.conns.iter().map(|c| c.value().clone()).collect(),
            Some(apps) => self
                .sessions
                .iter()
                .filter(|e| {
                    e.key()
                        .split_once(' ')
                        .is_some_and(|(a, _)| apps.contains(a))
                })
                .filter_map(|e| self.conns.get(e.value()).map(|c| c.value().clone()))
                .collect(),
        };
        for (i, batch) in conns.chunks(NUDGE_BATCH).enumerate() {
            if i > 0 {
                tokio::time::sleep(NUDGE_PAUSE).await;
            }
            for c in batch {
                c.push(poll.clone());
                c.push(rejoin.clone());
            }
        }
    }

    /// Deliver what came on `topic`, or hold it while the topic's subscription is being
    /// made good ([`HeldPushes`]).
    fn deliver_or_hold(&self, topic: &str, payload: &str) {
        let mut held = self.held.lock();
        if held.holding() && held.hold(topic, payload) {
            return;
        }
        drop(held);
        self.deliver(payload);
    }

    /// The clients were told of what was lost up to the mark `upto`: deliver what was held
    /// since (but for the topics in `still`), in order — under the lock, so that nothing that
    /// comes meanwhile goes ahead of it.
    fn release_held(&self, upto: u64, still: &BTreeSet<String>) {
        let mut held = self.held.lock();
        for payload in held.release(upto, still) {
            self.deliver(&payload);
        }
    }

    /// Start [`resubscribe`] unless it runs.
    fn resubscribe_soon(self: &Arc<Self>) {
        if !self.resubscribing.swap(true, Ordering::SeqCst) {
            tokio::spawn(resubscribe(Arc::downgrade(self)));
        }
    }

    /// On a Redis Cluster, the apps whose topics (their hash slot) another primary serves now
    /// than when this node last looked; `None` when none did (a connection lost and back:
    /// which topics it carried is not known, so every app's) or on one Redis.
    async fn moved_apps(&self) -> Option<BTreeSet<String>> {
        let mut c = self.conn();
        let now = match timed(c.slot_owners()).await {
            Ok(Some(now)) => now,
            Ok(None) => return None,
            Err(e) => {
                warn!("reading which primary serves which slots: {e}");
                self.owners.lock().clear();
                return None;
            }
        };
        let before = std::mem::replace(&mut *self.owners.lock(), now.clone());
        let node = &self.cfg.node_id;
        let apps = self.apps_known().into_iter().map(|a| {
            let slot = Keys::slot(self.keys.app_topic(&a, node));
            (a, slot)
        });
        let moved = moved_between(&before, &now, apps);
        (!moved.is_empty()).then_some(moved)
    }

    /// Register `app` — a unit's name (`Keys::unit`): the app itself for its accounts, the
    /// channel's unit for a channel's step — in this node's list of apps and subscribe its
    /// topic, once until the node forgets it (and again with every session refresh, see
    /// `heartbeat`): what its timer poller asks, and a reaper reads. The step that asks holds
    /// what this returns while it runs: the unit is not forgotten meanwhile.
    async fn app(&self, app: &str) -> SResult<Arc<KnownApp>> {
        // (a clone taken here keeps `forget_app` from removing it: it counts the holders)
        let known = self.known_apps.get(app).map(|k| k.value().clone());
        if let Some(known) = known.filter(|k| k.registered.initialized()) {
            *known.used.lock() = tokio::time::Instant::now();
            return Ok(known);
        }
        let _turn = self.app_turns[turn_of(app)].lock().await;
        let known = (self.known_apps.entry(app.to_string()))
            .or_insert_with(|| Arc::new(KnownApp::new()))
            .clone();
        *known.used.lock() = tokio::time::Instant::now();
        known
            .registered
            .get_or_try_init(|| async {
                if let Some(subs) = self.subs.clone() {
                    // before anything of the app can be addressed to this node
                    let topic = self.keys.app_topic(app, &self.cfg.node_id);
                    self.unsubscribing.lock().remove(&topic);
                    timed(subs.ssubscribe(&topic)).await?;
                }
                let mut c = self.conn();
                timed(c.sadd::<_, _, ()>(self.keys.node_apps(&self.cfg.node_id), app)).await
            })
            .await?;
        Ok(known)
    }

    /// Forget the apps nothing on this node has used for `idle_app_forget_secs`: no session
    /// or channel member here, no step asking for them. The list of apps (and, on a cluster,
    /// the subscriptions) of a node then holds what it serves, not every app it ever served.
    async fn forget_idle_apps(&self) {
        let Some(after) = self.forget_apps_after else {
            return;
        };
        // a session's unit: its account's; a membership's: its channel's
        let mut in_use: BTreeSet<String> = (self.sessions.iter())
            .filter_map(|e| {
                let (app, account) = e.key().split_once(' ')?;
                Some(self.account_unit(app, account).into_owned())
            })
            .collect();
        in_use.extend(self.members.iter().filter_map(|e| {
            let (app, channel) = e.key().split_once(' ')?;
            Some(self.channel_unit(app, channel).into_owned())
        }));
        let idle: Vec<String> = (self.known_apps.iter())
            .filter(|e| !in_use.contains(e.key()) && e.value().unused(after))
            .map(|e| e.key().clone())
            .collect();
        for app in idle {
            if let Err(e) = self.forget_app(&app, after).await {
                warn!(app = %app, "forgetting an app this node no longer serves: {e}");
            }
        }
    }

    /// Forget `app` if it is still unused, and nothing of it is indexed under this node in
    /// Redis (a membership whose `Joined` has not come back yet, a session whose close did not
    /// get through): its timers are handed to the cluster's index, it leaves the list of
    /// apps, and its topic is unsubscribed. A step of it after registers it again.
    async fn forget_app(&self, app: &str, after: Duration) -> SResult<()> {
        let _turn = self.app_turns[turn_of(app)].lock().await;
        if !(self.known_apps.get(app)).is_some_and(|k| k.value().unused(after)) {
            return Ok(());
        }
        let node = &self.cfg.node_id;
        let (sessions, members): (u64, u64) = timed(
            redis::pipe()
                .scard(self.keys.node_sessions(app, node))
                .scard(self.keys.node_members(app, node))
                .query_async(&mut self.conn()),
        )
        .await?;
        if sessions + members > 0 {
            return Ok(());
        }
        let Some((_, known)) = self.known_apps.remove_if(app, |_, k| k.unused(after)) else {
            return Ok(());
        };
        let gone = async {
            // what its timers are: asked by whichever node takes it from the index
            self.timers_soon(&[app.to_string()]).await?;
            timed(self.conn().srem::<_, _, ()>(self.keys.node_apps(node), app)).await
        };
        if let Err(e) = gone.await {
            self.known_apps.insert(app.to_string(), known);
            return Err(e);
        }
        self.timers_next.lock().remove(app);
        self.timers_said.lock().remove(app);
        if let Some(subs) = &self.subs {
            let topic = self.keys.app_topic(app, node);
            self.unsubscribing.lock().insert(topic.clone());
            // (a subscription left by a failure here carries nothing this node delivers)
            timed(subs.sunsubscribe(&topic)).await?;
        }
        debug!(app = %app, "forgot an app this node no longer serves");
        Ok(())
    }

    /// A step of this node may have scheduled or moved a timer of `app`: the poller asks at
    /// its next tick.
    fn timers_touched(&self, app: &str) {
        self.timers_next.lock().remove(app);
    }

    /// The registry was out of this node's reach (its primary failing over, or Redis
    /// restarting) and is back: what this node wrote to the index of timers last may be
    /// lost. Its own apps are asked at the next tick and what they have is written again.
    fn timers_index_again(&self) {
        self.timers_said.lock().clear();
        self.timers_next.lock().clear();
    }

    /// `timers_due.lua`'s `op` on the cluster's index of apps with timers.
    async fn timers_index(&self, op: &str, args: &[&str]) -> SResult<RValue> {
        let mut inv = self.scripts.timers_due.prepare_invoke();
        inv.key(self.keys.timers_due()).arg(op);
        for a in args {
            inv.arg(*a);
        }
        timed(inv.invoke_async(&mut self.conn())).await
    }

    /// This node asked `app`'s timers: the next is due in `next_ms` (-1: none). The index
    /// says so. An app without timers leaves it, and is asked once more after: a timer that
    /// another node scheduled meanwhile (and indexed before this node dropped the app) is
    /// then found and indexed again.
    /// `taken`: from the index, which moved it by the take's lease, so it is written anyway.
    async fn timers_indexed(
        &self,
        app: &str,
        next_ms: i64,
        now: tokio::time::Instant,
        taken: bool,
    ) {
        let at = u64::try_from(next_ms)
            .ok()
            .map(|ms| now + Duration::from_millis(ms));
        // what this node said last still holds (another node's word since is as good): most
        // asks follow a step that changed no timer
        let same = !taken
            && match (self.timers_said.lock().get(app), at) {
                (Some(None), None) => true,
                (Some(Some(said)), Some(at)) => {
                    *said > now
                        && said.saturating_duration_since(at) < TIMER_SAID_CLOSE
                        && at.saturating_duration_since(*said) < TIMER_SAID_CLOSE
                }
                _ => false,
            };
        if same {
            return;
        }
        // what the index says after: `at`, or what the second ask found
        let r = async {
            if next_ms >= 0 {
                self.timers_index("set", &[app, &next_ms.to_string()])
                    .await?;
                return SResult::Ok(at);
            }
            self.timers_index("drop", &[app]).await?;
            let next: Vec<String> = timed(
                self.scripts
                    .timers
                    .key(self.keys.timers(app))
                    .arg("claim")
                    .arg(TIMER_LEASE_MS)
                    .arg(0)
                    .invoke_async(&mut self.conn()),
            )
            .await?;
            match next.last().and_then(|n| n.parse::<u64>().ok()) {
                Some(n) => {
                    self.timers_index("set", &[app, &n.to_string()]).await?;
                    Ok(Some(now + Duration::from_millis(n)))
                }
                None => Ok(None),
            }
        };
        match r.await {
            Ok(said) => {
                self.timers_said.lock().insert(app.to_string(), said);
            }
            Err(e) => {
                // this node asks its own apps again by itself; another node's, the next node
                // that asks or reaps does
                self.timers_said.lock().remove(app);
                warn!("indexing an app's timers: {e}");
            }
        }
    }

    /// Have the cluster's index say `apps` are due now (a node that stopped may have
    /// scheduled timers of them it did not index).
    async fn timers_soon(&self, apps: &[String]) -> SResult<()> {
        for chunk in apps.chunks(1000) {
            let mut args: Vec<&str> = Vec::with_capacity(chunk.len());
            args.extend(chunk.iter().map(String::as_str));
            self.timers_index("soon", &args).await?;
        }
        Ok(())
    }

    /// Nodes of versions before the index of timers kept a list of every app instead (each
    /// node asked every app every 2 s): its apps are asked once, through the index, and the
    /// list goes.
    async fn timers_index_from_the_apps_list(&self) {
        let key = self.keys.apps_before_the_index();
        let r = async {
            let apps: Vec<String> = timed(self.conn().smembers(&key)).await?;
            if !apps.is_empty() {
                self.timers_soon(&apps).await?;
                timed(self.conn().del::<_, ()>(&key)).await?;
            }
            SResult::Ok(())
        };
        if let Err(e) = r.await {
            warn!("moving the apps list of an earlier version to the index of timers: {e}");
        }
    }

    /// The apps registered by this node.
    fn apps_known(&self) -> Vec<String> {
        self.known_apps
            .iter()
            .filter(|e| e.value().registered.initialized())
            .map(|e| e.key().clone())
            .collect()
    }

    /// Publish `msg` on `topic` (`SPUBLISH` on a cluster: topics are sharded there).
    async fn publish(&self, topic: &str, msg: String) -> SResult<()> {
        let cmd = if self.subs.is_some() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let mut c = self.conn();
        timed(redis::cmd(cmd).arg(topic).arg(msg).query_async(&mut c)).await
    }

    /// A halted (crashed on purpose) node refuses every operation.
    fn check(&self) -> SResult<()> {
        if self.halted.load(Ordering::Relaxed) {
            Err(StoreError::Halted)
        } else {
            Ok(())
        }
    }

    fn me(&self, conn: u64) -> NodeSession {
        NodeSession {
            node: self.cfg.node_id.clone(),
            conn: Some(conn),
        }
    }

    async fn heartbeat_once(&self) -> SResult<()> {
        let sent = tokio::time::Instant::now();
        let registering = async {
            let mut c = self.conn();
            let key = self.keys.node(&self.cfg.node_id);
            let prev: Option<String> = timed(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&self.cfg.public_url)
                    .arg("PX")
                    .arg(NODE_TTL_MS)
                    .arg("GET")
                    .query_async(&mut c),
            )
            .await?;
            let added: i64 = timed(c.sadd(self.keys.nodes(), &self.cfg.node_id)).await?;
            SResult::Ok((prev, added))
        };
        let (prev, added) = match registering.await {
            Ok(r) => r,
            Err(e) => {
                // other nodes may be out of reach too: no reaping until this one has held
                // a while again ([`Inner::may_reap`])
                *self.steady_since.lock() = None;
                return Err(e);
            }
        };
        let last = self.registered_at.lock().replace(sent);
        // Lapsed: Redis says the registration had expired, or no heartbeat got through for
        // as long as one lasts (one that timed out may have been applied late and registered
        // the node again: Redis can no longer tell).
        let ttl = Duration::from_millis(NODE_TTL_MS);
        let lapsed = last.is_some_and(|t| prev.is_none() || t.elapsed() >= ttl);
        let back = {
            let mut steady = self.steady_since.lock();
            let back = lapsed || steady.is_none();
            if back {
                // the other nodes' registrations may have lapsed with this one: this node's
                // reaper gives them a registration's time to come back
                *steady = Some(sent);
            }
            back
        };
        if back {
            self.timers_index_again();
        }
        if lapsed {
            // Redis was out of reach longer than a registration lasts (from here, or for
            // every node: the registry's primary failing over). Reaped (its index gone from
            // the list of nodes, or a reaper's lock on it: its sessions and memberships
            // were, or are being, ended): drop every connection so the clients reconnect and
            // resume. Else its sessions stand, but another node may have taken this one for
            // dead meanwhile and let a login replace one of them without a kick.
            let reaped = match added {
                1 => Ok(true),
                _ => {
                    let lock = self.keys.reap(&self.cfg.node_id);
                    timed(self.conn().exists::<_, bool>(lock)).await
                }
            };
            match reaped {
                Ok(false) => {
                    warn!("this node's registration had lapsed, no node reaped it: checking its sessions");
                    if let Err(e) = self.check_sessions().await {
                        warn!("checking this node's sessions ({e}): reconnecting every client");
                        self.drop_every_client();
                    }
                }
                _ => {
                    warn!("this node's registration had lapsed and it was reaped: reconnecting every client");
                    self.drop_every_client();
                }
            }
        }
        Ok(())
    }

    fn drop_every_client(&self) {
        for c in self.conns.iter() {
            c.drop_silently();
        }
    }

    /// Each session of this node as Redis holds it: a session another login replaced is
    /// kicked (`onLogout(103)`), one Redis no longer holds is dropped (the client reconnects
    /// and logs in again). One `MGET` per unit and 500 sessions.
    async fn check_sessions(&self) -> SResult<()> {
        // unit → (app, [(account, connection)])
        let mut by_unit: BTreeMap<String, (String, Vec<(String, u64)>)> = BTreeMap::new();
        for e in self.sessions.iter() {
            if let Some((app, account)) = e.key().split_once(' ') {
                let held = (account.to_string(), *e.value());
                let unit = self.account_unit(app, account).into_owned();
                let at = by_unit
                    .entry(unit)
                    .or_insert_with(|| (app.to_string(), vec![]));
                at.1.push(held);
            }
        }
        let mut c = self.conn();
        for (unit, (app, held)) in &by_unit {
            for chunk in held.chunks(500) {
                let keys: Vec<String> = chunk
                    .iter()
                    .map(|(account, _)| self.keys.session(unit, account, &self.cfg.node_id).session)
                    .collect();
                let now: Vec<Option<String>> = timed(c.mget(&keys)).await?;
                for (((account, conn), stored), key) in chunk.iter().zip(now).zip(&keys) {
                    let mine = self.me(*conn).location();
                    if stored.as_ref() == Some(&mine) {
                        continue;
                    }
                    // again between this node's logins of the account (one may have been
                    // storing its session: it settles the account itself)
                    let local = local(app, account);
                    let _turn = self.login_turns[turn_of(&local)].lock().await;
                    if self.sessions.get(&local).is_none_or(|v| *v != *conn) {
                        continue;
                    }
                    let stored: Option<String> = timed(c.get(key)).await?;
                    let Some(h) = self.conns.get(conn) else {
                        continue;
                    };
                    match stored {
                        Some(s) if s == mine => {}
                        Some(_) => h.kick(),
                        None => h.drop_silently(),
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether this node's reaper may take another node for dead: its own heartbeats have got
    /// through for a registration's lifetime (after Redis was out of reach, maybe for every
    /// node, each gets that long to register again before any is reaped).
    fn may_reap(&self) -> bool {
        let since = *self.steady_since.lock();
        since.is_some_and(|t| t.elapsed() >= Duration::from_millis(NODE_TTL_MS))
    }

    /// The nodes whose registration holds, `(id, public URL)` (read at most every 500 ms).
    /// While the registry cannot be read, the last list read, however old: an error when
    /// there is none.
    async fn live_nodes(&self) -> SResult<Vec<LiveNode>> {
        {
            let live = self.live.lock();
            if let (true, Some(l)) = (live.0.elapsed() < Duration::from_millis(500), &live.1) {
                return Ok(l.clone());
            }
        }
        match self.read_live_nodes().await {
            Ok(alive) => {
                *self.live.lock() = (std::time::Instant::now(), Some(alive.clone()));
                Ok(alive)
            }
            Err(e) => self.live.lock().1.clone().ok_or(e),
        }
    }

    async fn read_live_nodes(&self) -> SResult<Vec<LiveNode>> {
        let mut c = self.conn();
        let nodes: Vec<String> = timed(c.smembers(self.keys.nodes())).await?;
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = nodes.iter().map(|n| self.keys.node(n)).collect();
        let urls: Vec<Option<String>> = timed(c.mget(&keys)).await?;
        Ok(nodes
            .into_iter()
            .zip(urls)
            .filter_map(|(n, u)| Some((n, u?)))
            .collect())
    }

    /// `leave.lua`: `account` leaves the channel if its membership is at `location` (`"node
    /// conn"`, `"node "`: any connection of that node, `"node -"`: none), publishing `event`;
    /// an entry of that node's index whose membership is elsewhere leaves the index. Whether
    /// it left.
    async fn leave_call(
        &self,
        at: Chan<'_>,
        account: &Account,
        location: &str,
        event: Option<Event<'_>>,
        events: &StepEvents,
    ) -> SResult<bool> {
        let node = location.split(' ').next().unwrap_or_default();
        let (before, after) = self.channel_msg(at, event);
        let unit = self.unit_of(at);
        let index = self.keys.node_members(&unit, node);
        let mut inv =
            self.channel_call(&self.scripts.leave, at, &unit, Seen::default(), Some(index));
        inv.arg(account.as_str()).arg(location);
        inv.arg(before).arg(after).arg(left_msg(at, account));
        inv.arg(node::member_entry(at.app, at.channel, account));
        self.step_events(&mut inv, &unit, events);
        let r: i64 = self.run(&inv).await?;
        Ok(r == 1)
    }

    /// A channel script with its keys (in `unit`, the channel's: [`Inner::unit_of`]) and the
    /// common arguments; `own` is the one key of the script's own (channel.lua's `OWN`;
    /// `None`: the unit's unused key).
    fn channel_call<'s>(
        &self,
        s: &'s Script,
        at: Chan<'_>,
        unit: &str,
        seen: Seen,
        own: Option<String>,
    ) -> ScriptInvocation<'s> {
        let k = self.keys.channel(unit, at.channel);
        let mut inv = s.prepare_invoke();
        for key in k.all() {
            inv.key(key);
        }
        inv.key(self.keys.timers(unit));
        inv.key(own.unwrap_or_else(|| self.keys.unused(unit)));
        let d = &self.defaults;
        inv.arg(self.keys.topic_prefix(unit))
            .arg(if d.notify { "1" } else { "0" })
            .arg(d.ttl_secs)
            .arg(d.sendmsg_limit)
            .arg(d.setattr_limit)
            .arg(d.auto_update_secs)
            .arg(at.channel.as_str())
            .arg(d.history)
            .arg(d.keep_empty_secs)
            .arg(Timer::ChannelExpired(at.app.clone(), at.channel.clone()).encode())
            .arg(seen.seq)
            .arg(seen.msg);
        inv
    }

    /// A step's events at the end of its keys and arguments, as events.lua takes them off:
    /// (stream, meta) keys of `unit`'s log (the step's) and (when, event) arguments per
    /// event, then the cap and the marker. Call it last.
    fn step_events(&self, inv: &mut impl Invoke, unit: &str, out: &StepEvents) {
        if out.is_empty() {
            return;
        }
        self.event_parts(inv, unit, out);
        inv.arg(format!("\u{1f}outbox:{}", out.events.len()));
    }

    /// A step's events, (stream, meta) keys of `unit`'s log and (when, event) arguments per
    /// event, then the log's caps (none when there are no events).
    fn event_parts(&self, inv: &mut impl Invoke, unit: &str, out: &StepEvents) {
        if out.is_empty() {
            return;
        }
        for e in &out.events {
            // in the step's unit (an event rides with the step of the channel or account it
            // is keyed by: `events::partition_among`), its partition there
            let [stream, meta] = self.keys.event_log(unit, e.partition % PARTITIONS);
            inv.key(stream).key(meta);
            inv.arg(e.when.name()).arg(&*e.text.get());
        }
        inv.arg(out.cap.max_events)
            .arg(out.cap.max_bytes)
            .arg(out.cap.max_age.as_millis() as u64);
    }

    /// Store a unit's waiting messages, up to [`MAIL_BATCH_MAX`] per call of
    /// `mail_append.lua`, until none waits (messages whose sender stopped waiting are left
    /// out: it was told the store did not answer).
    async fn store_mail(self: Arc<Inner>, unit: String) {
        loop {
            let batch: Vec<MailWaiting> = {
                let mut queues = self.mail_queues.lock();
                let Some(q) = queues.get_mut(&unit) else {
                    return;
                };
                let mut batch = Vec::new();
                while batch.len() < MAIL_BATCH_MAX {
                    match q.waiting.pop_front() {
                        Some(w) if w.done.is_closed() => {}
                        Some(w) => batch.push(w),
                        None => break,
                    }
                }
                if batch.is_empty() {
                    queues.remove(&unit);
                    return;
                }
                batch
            };
            let mut inv = self.scripts.mail_append.prepare_invoke();
            inv.arg(batch.len());
            for w in &batch {
                for k in &w.call.keys {
                    inv.key(k.as_slice());
                }
                for a in &w.call.args {
                    inv.arg(a.as_slice());
                }
            }
            let r: SResult<Vec<i64>> = match self.check() {
                Ok(()) => self.run(&inv).await,
                Err(e) => Err(e),
            };
            for (i, w) in batch.into_iter().enumerate() {
                let outcome = match &r {
                    Ok(r) => {
                        let get = |j: usize| r.get(i * 3 + j).copied().unwrap_or(0);
                        Ok(appended(get(0), get(1), get(2)))
                    }
                    Err(e) => Err(e.for_each_of_many()),
                };
                let _ = w.done.send(outcome);
            }
        }
    }

    /// Run a prepared script (within the operation timeout).
    async fn run<T: redis::FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> SResult<T> {
        let mut c = self.conn();
        let r = timed(inv.invoke_async(&mut c)).await?;
        self.replicated(&mut c).await?;
        Ok(r)
    }

    /// With `wait_replicas`, wait until that many replicas hold every write this node sent so
    /// far (on a cluster: of every primary; the client sends `WAIT` to each and takes the
    /// least). Fewer within the time: the step fails (`unavailable`), its sender resends, and
    /// the resend is stored again or found a duplicate — never acknowledged unreplicated.
    async fn replicated(&self, c: &mut Conn) -> SResult<()> {
        let n = self.cfg.wait_replicas;
        if n == 0 {
            return Ok(());
        }
        let ms = OP_TIMEOUT.as_millis() as u64 / 2;
        let got: i64 = timed(redis::cmd("WAIT").arg(n).arg(ms).query_async(c)).await?;
        if got < i64::from(n) {
            return Err(StoreError::NotReplicated { wanted: n, got });
        }
        Ok(())
    }

    /// How many members each of the app's channels `names` has.
    /// The member counts of channels of one unit (one pipeline: the unit's slot).
    async fn member_counts(&self, unit: &str, names: &[String]) -> SResult<Vec<usize>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for name in names {
            pipe.zcard(self.keys.channel_members(unit, name));
        }
        timed(pipe.query_async(&mut self.conn())).await
    }

    /// Make a unit's index of its channels with members hold those occupied before it was
    /// kept (a version before it, or a node of one during a rolling upgrade, joined them):
    /// once, by a walk of the unit's channels in the keyspace, before its first listing.
    async fn channels_index_built(&self, unit: &str) -> SResult<()> {
        let built = self.keys.channels_indexed(unit);
        let mut c = self.conn();
        if timed(c.exists::<_, bool>(&built)).await? {
            return Ok(());
        }
        let head = self.keys.channel_members(unit, "");
        let pattern = format!("{}*", glob_escape(&head));
        let index = self.keys.channels_occupied(unit);
        let mut cur = "0".to_string();
        loop {
            // the unit's keys are all on the primary of its slot
            let mut scan = redis::cmd("SCAN");
            scan.arg(&cur)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let r = timed(c.on_slot_of(&head, &scan)).await?;
            let (next, keys): (String, Vec<String>) = redis::from_redis_value(&r)?;
            let names: Vec<String> = (keys.iter())
                .filter_map(|k| Some(k.strip_prefix(&head)?.to_string()))
                .collect();
            let counts = self.member_counts(unit, &names).await?;
            let occupied: Vec<(u8, &String)> = (names.iter().zip(counts))
                .filter(|(_, n)| *n > 0)
                .map(|(name, _)| (0, name))
                .collect();
            if !occupied.is_empty() {
                timed(c.zadd_multiple::<_, _, _, i64>(&index, &occupied)).await?;
            }
            if next == "0" {
                break;
            }
            cur = next;
        }
        timed(c.set::<_, _, ()>(&built, 1)).await
    }

    /// `channel_state.lua`'s `op` on a channel.
    async fn channel_state(&self, at: Chan<'_>, op: &str) -> SResult<RValue> {
        self.check()?;
        let unit = self.unit_of(at);
        let _unit = self.app(&unit).await?;
        let script = &self.scripts.channel_state;
        let mut inv = self.channel_call(script, at, &unit, Seen::default(), None);
        inv.arg(op);
        let r = self.run(&inv).await;
        self.timers_touched(&unit);
        r
    }

    /// Every key of a kind under this cluster's prefix (on a Redis Cluster: from each
    /// primary).
    async fn scan(&self, kind: &str) -> SResult<Vec<String>> {
        let mut c = self.conn();
        let primaries = timed(c.primaries()).await?;
        let nodes: Vec<Option<&(String, u16)>> = match &primaries {
            None => vec![None],
            Some(p) => p.iter().map(Some).collect(),
        };
        let mut found = Vec::new();
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(self.keys.pattern(kind));
                scan.arg("COUNT").arg(1000);
                let r = timed(c.on_node(node, &scan)).await?;
                let (next, keys): (u64, Vec<String>) = redis::from_redis_value(&r)?;
                found.extend(keys);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(found)
    }

    /// The total size of sorted sets (`zsets`) or hashes.
    async fn total(&self, keys: Vec<String>, zsets: bool) -> SResult<usize> {
        let mut c = self.conn();
        let mut n = 0;
        for k in keys {
            let len: usize = if zsets {
                timed(c.zcard(&k)).await?
            } else {
                timed(c.hlen(&k)).await?
            };
            n += len;
        }
        Ok(n)
    }

    /// A channel event as published to the nodes: `(before, after)` around the sequence.
    fn channel_msg(&self, at: Chan<'_>, e: Option<Event<'_>>) -> (String, String) {
        match e {
            None => (String::new(), String::new()),
            Some(e) => NodeMsg::Channel {
                app: at.app.to_string(),
                channel: at.channel.to_string(),
                exclude: e.exclude.map(|a| a.to_string()),
                number: 0,
                msg_number: None,
                msg_id: None,
                frame: e.frame.clone(),
            }
            .encode_open(),
        }
    }

    /// A mailbox's keys (in `unit`, the account's) and arguments, as mail.lua's `box_at`
    /// reads them.
    fn box_call(&self, inv: &mut impl Invoke, unit: &str, account: &str) {
        let mb = self.keys.mailbox(unit, account);
        for k in mb.all() {
            inv.key(k);
        }
        inv.arg(self.mailbox_keep_ms);
    }

    /// A message's keys and arguments, as mail.lua's `mail_at` reads them: all in `unit`,
    /// the recipient's ([`Inner::account_unit`]; its resend marker and its sender's offline
    /// allowance too), which holds a share of the app's mail quota and of the sender's
    /// allowance ([`Inner::share`]).
    fn mail_call(&self, inv: &mut impl Invoke, unit: &str, to: &str, m: &MailItem<'_>) {
        let app = Keys::unit_app(unit);
        self.box_call(inv, unit, to);
        // a key not used stands in the unit's slot (window 0, allowance 0) for one not needed
        let dedup = m
            .dedup
            .map(|d| self.keys.dedup(unit, d.from, d.id))
            .unwrap_or_else(|| self.keys.unused(unit));
        let window = m.dedup.map_or(0, |d| d.window.as_millis().max(1) as u64);
        let q = &m.quota;
        let sender = q.sender.filter(|_| q.offline_per_sender > 0);
        // (each unit holds its share of a sender's allowance: it counts in the recipient's)
        let allowance = if sender.is_some() {
            self.share(q.offline_per_sender as usize)
        } else {
            0
        };
        let sender = sender.map_or_else(
            || self.keys.unused(unit),
            |s| self.keys.offline_sent(unit, s),
        );
        let (before, after) = NodeMsg::Push {
            app: app.into(),
            account: to.into(),
            number: 0,
            frame: m.push.clone(),
        }
        .encode_open();
        inv.key(self.keys.session(unit, to, &self.cfg.node_id).session)
            .key(dedup)
            .key(sender)
            .arg(window)
            .arg(m.ttl.as_millis() as u64)
            .arg(m.max)
            .arg(m.id)
            .arg(m.text)
            .arg(self.keys.topic_prefix(unit))
            .arg(before)
            .arg(after)
            .arg(self.share(q.app_messages))
            .arg(self.share(q.app_bytes))
            .arg(allowance)
            .arg(q.window.as_millis().max(1) as u64)
            .arg(if q.busy { "1" } else { "0" });
    }

    /// Apply the messages of a payload on this node's topic, in order.
    fn deliver(&self, payload: &str) {
        match node::unbundle(payload) {
            Some(msgs) => msgs.into_iter().for_each(|m| self.deliver_one(m)),
            None => warn!("ignored a malformed bundle of node messages"),
        }
    }

    /// Apply a message of this node's topic.
    fn deliver_one(&self, payload: &str) {
        if self.halted.load(Ordering::Relaxed) {
            return;
        }
        let Some(msg) = NodeMsg::decode(payload) else {
            warn!("ignored a malformed node message");
            return;
        };
        match msg {
            NodeMsg::Push {
                app,
                account,
                number,
                frame,
            } => {
                let conn = self.sessions.get(&local(&app, &account)).map(|c| *c);
                if let Some(h) = conn.and_then(|c| self.conns.get(&c).map(|h| h.clone())) {
                    h.push(frame.fill(number).into());
                }
            }
            NodeMsg::Channel {
                app,
                channel,
                exclude,
                number,
                msg_number,
                msg_id,
                frame,
            } => {
                let Some(members) = self.members.get(&local(&app, &channel)) else {
                    return;
                };
                let frame: Frame = match msg_number {
                    None => frame.fill(number).into(),
                    Some(n) => out::channel2_numbered(&frame, number, n, msg_id).into(),
                };
                for (account, h) in members.iter() {
                    if Some(account) != exclude.as_ref() {
                        h.push(frame.clone());
                    }
                }
            }
            NodeMsg::Joined {
                app,
                channel,
                account,
                conn,
            } => {
                let Some(h) = self.conns.get(&conn).map(|h| h.clone()) else {
                    return;
                };
                let mut m = self.members.entry(local(&app, &channel)).or_default();
                m.retain(|(a, _)| *a != account);
                m.push((account, h));
            }
            NodeMsg::Left {
                app,
                channel,
                account,
            } => {
                let key = local(&app, &channel);
                let mut empty = false;
                if let Some(mut m) = self.members.get_mut(&key) {
                    m.retain(|(a, _)| *a != account);
                    empty = m.is_empty();
                }
                if empty {
                    self.members.remove_if(&key, |_, m| m.is_empty());
                }
            }
            NodeMsg::Kick { conn } => {
                if let Some(h) = self.conns.get(&conn) {
                    h.kick();
                }
            }
            NodeMsg::Frame { conn, frame } => {
                if let Some(h) = self.conns.get(&conn) {
                    h.push(Frame::from(frame));
                }
            }
        }
    }

    fn send_work(&self, w: Work<Redis>) -> bool {
        match self.work.lock().as_ref() {
            Some(tx) => tx.send(w).is_ok(),
            None => false,
        }
    }
}

impl Store for Redis {
    type Session = NodeSession;
    /// The timer's app, its entry and the end of the lease it was claimed with.
    type Claim = (String, String, String);

    fn run_work(&self, work: WorkSender<Self>) {
        *self.inner.work.lock() = Some(work);
    }

    fn session_of(&self, conn: &ConnHandle) -> NodeSession {
        self.inner.me(conn.id)
    }

    async fn session_open(&self, s: Opening<'_>) -> SResult<Opened<NodeSession>> {
        let inner = &self.inner;
        inner.check()?;
        let (app, account, id) = (s.user.app, s.user.account, s.conn.id);
        let unit = inner.account_unit(app, account);
        let _unit = inner.app(&unit).await?;
        let local = local(app, account);
        // held across the script: two logins of one account on this node must update
        // `sessions` in the order Redis applies them (the later one replaced the earlier)
        let _turn = inner.login_turns[turn_of(&local)].lock().await;
        // what reaches the session before its login is stored waits in a queue of its own:
        // the welcome goes first, and only when the login is stored (a refused login gets its
        // refusal alone)
        let (stand_in, held) = s.conn.stand_in();
        inner.conns.insert(id, stand_in);
        inner.sessions.insert(local.clone(), id);
        let k = inner.keys.session(&unit, account, &inner.cfg.node_id);
        let mut inv = inner.scripts.session_grow.prepare_invoke();
        inv.key(k.session).key(k.node_index);
        inv.key(inner.keys.user_attrs(&unit, account)).arg("open");
        inv.arg(inner.me(id).location()).arg(SESSION_TTL_MS);
        inv.arg(node::session_entry(app, account, id)).arg(s.attr);
        inner.step_events(&mut inv, &unit, s.events);
        let r: SResult<(Option<String>, Option<String>)> = inner.run(&inv).await;
        let (old, attr) = r.inspect_err(|_| {
            inner.conns.remove(&id);
            inner.sessions.remove_if(&local, |_, v| *v == id);
        })?;
        // deliveries look the connection up in `conns`: none goes past the held ones
        // while they are handed on
        let entry = inner.conns.get_mut(&id);
        s.conn.push(s.welcome);
        held.hand_to(s.conn);
        if let Some(mut conn) = entry {
            *conn = s.conn.clone();
        }
        let previous = old.as_deref().and_then(NodeSession::from_location);
        Ok(Opened { previous, attr })
    }

    async fn session_close(
        &self,
        user: User<'_>,
        session: &NodeSession,
        events: &StepEvents,
    ) -> SResult<bool> {
        let inner = &self.inner;
        inner.check()?;
        let (app, account) = (user.app, user.account);
        if let (true, Some(conn)) = (session.node == inner.cfg.node_id, session.conn) {
            inner.conns.remove(&conn);
            let local = local(app, account);
            inner.sessions.remove_if(&local, |_, v| *v == conn);
        }
        let unit = inner.account_unit(app, account);
        let k = inner.keys.session(&unit, account, &session.node);
        let entry = node::session_entry(app, account, session.conn.unwrap_or(0));
        let mut inv = inner.scripts.session.prepare_invoke();
        inv.key(k.session).key(k.node_index).arg("close");
        inv.arg(session.location()).arg(0).arg(entry);
        inner.step_events(&mut inv, &unit, events);
        let r: i64 = inner.run(&inv).await?;
        Ok(r == 1)
    }

    async fn session_alive(&self, session: &NodeSession) -> bool {
        let inner = &self.inner;
        if session.node != inner.cfg.node_id {
            // a node that cannot be checked (the registry out of reach) is taken for alive:
            // its session is kicked (over the app's topic), not left connected
            return inner
                .live_nodes()
                .await
                .map_or(true, |l| l.iter().any(|(n, _)| *n == session.node));
        }
        let open = |c: u64| inner.conns.get(&c).is_some_and(|h| h.is_open());
        session.conn.is_some_and(open)
    }

    async fn kick(&self, user: User<'_>, session: &NodeSession) -> SResult<()> {
        let inner = &self.inner;
        let Some(conn) = session.conn else {
            return Ok(());
        };
        if session.node == inner.cfg.node_id {
            if let Some(h) = inner.conns.get(&conn) {
                h.kick();
            }
            return Ok(());
        }
        // over the topic of the account's unit on that node (on a cluster: the unit's slot,
        // which the session's login there subscribed, not the registry's)
        let msg = NodeMsg::Kick { conn }.encode();
        let unit = inner.account_unit(user.app, user.account);
        let topic = inner.keys.app_topic(&unit, &session.node);
        inner.publish(&topic, msg).await
    }

    async fn online(&self, user: User<'_>) -> SResult<bool> {
        let inner = &self.inner;
        // a session, and its node alive (two keys in two slots: read one after the other)
        let Some(s) = self.session_get(user).await? else {
            return Ok(false);
        };
        let mut c = inner.conn();
        timed(c.exists(inner.keys.node(&s.node))).await
    }

    async fn session_get(&self, user: User<'_>) -> SResult<Option<NodeSession>> {
        let inner = &self.inner;
        inner.check()?;
        let unit = inner.account_unit(user.app, user.account);
        let k = inner.keys.session(&unit, user.account, &inner.cfg.node_id);
        let mut c = inner.conn();
        let cur: Option<String> = timed(c.get(&k.session)).await?;
        Ok(cur.as_deref().and_then(NodeSession::from_location))
    }

    async fn user_attrs(&self, user: User<'_>) -> SResult<Vec<(String, String)>> {
        let inner = &self.inner;
        inner.check()?;
        let mut c = inner.conn();
        let key = inner.user_attrs_key(user);
        let m: BTreeMap<String, String> = timed(c.hgetall(key)).await?;
        Ok(m.into_iter().collect())
    }

    async fn user_attr_set(&self, user: User<'_>, set: UserAttrSet<'_>) -> SResult<bool> {
        let inner = &self.inner;
        inner.check()?;
        let script = match set.value {
            Some(_) => &inner.scripts.user_attr_grow,
            None => &inner.scripts.user_attr,
        };
        let mut inv = script.prepare_invoke();
        inv.key(inner.user_attrs_key(user));
        inv.arg(set.name).arg(set.value.unwrap_or("")).arg(set.max);
        inv.arg(if set.value.is_some() { "set" } else { "del" });
        let r: i64 = inner.run(&inv).await?;
        Ok(r == 1)
    }

    async fn user_attr_count(&self, user: User<'_>) -> SResult<usize> {
        let inner = &self.inner;
        inner.check()?;
        let mut c = inner.conn();
        let key = inner.user_attrs_key(user);
        timed(c.hlen(key)).await
    }

    async fn user_attrs_clear(&self, user: User<'_>) -> SResult<()> {
        let inner = &self.inner;
        inner.check()?;
        let mut c = inner.conn();
        let key = inner.user_attrs_key(user);
        timed(c.del::<_, ()>(key)).await
    }

    async fn mail_append(&self, to: User<'_>, item: MailItem<'_>) -> SResult<Appended> {
        let inner = &self.inner;
        inner.check()?;
        let mut call = Call::default();
        let unit = inner.account_unit(to.app, to.account).into_owned();
        inner.mail_call(&mut call, &unit, to.account, &item);
        // its events, as mail_append.lua reads them: their count first
        call.arg(item.events.events.len());
        inner.event_parts(&mut call, &unit, item.events);
        let (done, outcome) = tokio::sync::oneshot::channel();
        let lead = {
            let mut queues = inner.mail_queues.lock();
            let q = queues.entry(unit.clone()).or_default();
            q.waiting.push_back(MailWaiting { call, done });
            !std::mem::replace(&mut q.running, true)
        };
        if lead {
            tokio::spawn(Inner::store_mail(self.inner.clone(), unit));
        }
        // the call before its own and its own, each a script and a WAIT within the operation's
        // time (a message not sent yet when its sender stops waiting is left out)
        let wait = OP_TIMEOUT * 3;
        match tokio::time::timeout(wait, outcome).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(StoreError::Halted),
            Err(_) => Err(StoreError::Timeout(wait)),
        }
    }

    async fn mail_poll(&self, user: User<'_>, poll: Poll<'_>) -> SResult<MailPage> {
        let inner = &self.inner;
        inner.check()?;
        // A poll from 0 (a login's) of a mailbox with neither messages nor numbering (an
        // account nobody wrote to, or not for the keep time): the script would find nothing
        // and write nothing; one EXISTS of both keys finds that.
        let unit = inner.account_unit(user.app, user.account);
        if let Poll::Versions { ver_clear: 0, .. } = poll {
            let mb = inner.keys.mailbox(&unit, user.account);
            let mut c = inner.conn();
            let kept: usize = timed(c.exists(&[&mb.messages, &mb.meta])).await?;
            if kept == 0 {
                return Ok(MailPage {
                    ver_clear: 0,
                    msgs: vec![],
                });
            }
        }
        let script = match poll {
            Poll::Versions { .. } => &inner.scripts.mail_poll,
            Poll::Ids { .. } => &inner.scripts.mail_poll_ids,
        };
        let mut inv = script.prepare_invoke();
        inner.box_call(&mut inv, &unit, user.account);
        match poll {
            Poll::Versions {
                ver_clear,
                max,
                seen_id,
            } => {
                inv.arg(ver_clear).arg(max).arg(seen_id.unwrap_or(""));
            }
            Poll::Ids { clear, max } => {
                inv.arg(max);
                for id in clear {
                    inv.arg(id);
                }
            }
        }
        let r: RValue = inner.run(&inv).await?;
        Ok(page(r))
    }

    async fn mail_withdraw(&self, user: User<'_>, version: u64, id: &str) -> SResult<bool> {
        let inner = &self.inner;
        inner.check()?;
        let mut inv = inner.scripts.mail_withdraw.prepare_invoke();
        let unit = inner.account_unit(user.app, user.account);
        inner.box_call(&mut inv, &unit, user.account);
        inv.arg(version).arg(id);
        let n: i64 = inner.run(&inv).await?;
        Ok(n > 0)
    }

    async fn join(&self, at: Chan<'_>, j: Joining<'_>) -> SResult<Joined> {
        let inner = &self.inner;
        inner.check()?;
        let (app, channel, account) = (at.app, at.channel, j.account);
        let unit = inner.unit_of(at);
        let _unit = inner.app(&unit).await?;
        let (before, after) = inner.channel_msg(at, j.event);
        let joined = NodeMsg::Joined {
            app: app.to_string(),
            channel: channel.to_string(),
            account: account.to_string(),
            conn: j.conn.id,
        };
        let node = &inner.cfg.node_id;
        let own = inner.keys.node_members(&unit, node);
        // a membership that moves from another node leaves that node's index
        let others: Vec<String> = (inner.live_nodes().await?.into_iter())
            .map(|(id, _)| id)
            .filter(|id| id != node)
            .collect();
        let mut inv = inner.channel_call(&inner.scripts.join, at, &unit, j.seen, Some(own));
        for other in &others {
            inv.key(inner.keys.node_members(&unit, other));
        }
        inv.arg(account.as_str()).arg(node).arg(j.conn.id);
        inv.arg(j.list_max).arg(before).arg(after);
        inv.arg(joined.encode()).arg(left_msg(at, account));
        inv.arg(node::member_entry(app, channel, account));
        for other in &others {
            inv.arg(other);
        }
        inner.step_events(&mut inv, &unit, j.events);
        let r = list(inner.run::<RValue>(&inv).await?);
        inner.timers_touched(&unit);
        let fresh = r.first().map(int).unwrap_or(0) == 1;
        let n = r.get(1).map(int).unwrap_or(0).max(0) as usize;
        let last_msg = r.get(2).map(int).unwrap_or(0).max(0) as u64;
        let moved_from = r.get(3).map(text).unwrap_or_default();
        let mut members: Vec<String> = r.iter().skip(4).take(n).map(text).collect();
        members.reverse();
        let attrs = pairs(r.get(4 + n..).unwrap_or(&[]));
        if !moved_from.is_empty() {
            // the membership moved from a node this one did not know of (registered since it
            // last read the registry, or gone): its entry leaves that node's index, which
            // would otherwise keep the app listed there (the join has happened either way).
            // "node -" names no connection: nobody leaves, even if the membership went back
            // there meanwhile (its entry then stays)
            let location = format!("{moved_from} -");
            if let Err(e) = inner
                .leave_call(at, account, &location, None, &NO_EVENTS)
                .await
            {
                warn!(node = %moved_from, "a moved membership's entry left in that node's index: {e}");
            }
        }
        Ok(Joined {
            fresh,
            list: members,
            attrs,
            last_msg,
        })
    }

    async fn leave(&self, at: Chan<'_>, l: Leaving<'_, NodeSession>) -> SResult<bool> {
        let inner = &self.inner;
        inner.check()?;
        let unit = inner.unit_of(at);
        let _unit = inner.app(&unit).await?;
        let location = l.session.location();
        let left = inner.leave_call(at, l.account, &location, l.event, l.events);
        let left = left.await?;
        inner.timers_touched(&unit);
        Ok(left)
    }

    async fn publish(&self, at: Chan<'_>, p: Publish<'_>) -> SResult<Published> {
        let inner = &self.inner;
        inner.check()?;
        // A presence or firehose event (`__agora_user_online`, `__agora_channel_event`: one
        // per login, logout, join and leave) most often goes to a channel nobody joined: one
        // EXISTS finds that, not the channel's script. It happens at the EXISTS, as the
        // script's own check of the members would.
        let unit = inner.unit_of(at);
        if p.is_bare_event() {
            let members = inner.keys.channel_members(&unit, at.channel);
            let mut c = inner.conn();
            let held: bool = timed(c.exists(members)).await?;
            if !held {
                return Ok(Published::Sent);
            }
        }
        let (before, after) = inner.channel_msg(at, Some(p.event));
        let dedup = p.dedup.map(|d| inner.keys.dedup(&unit, d.from, d.id));
        let window = p.dedup.map_or(1, |d| d.window.as_millis().max(1) as u64);
        let marked = if dedup.is_some() { "1" } else { "0" };
        let mut inv = inner.channel_call(&inner.scripts.publish, at, &unit, p.seen, dedup);
        inv.arg(p.member.map_or("", |m| m.as_str()));
        inv.arg(marked).arg(window);
        inv.arg(if p.rate_limited { "1" } else { "0" });
        inv.arg(before).arg(after);
        match p.message {
            None => inv.arg("0").arg("").arg("").arg(0).arg(0).arg("0").arg(""),
            Some(m) => inv
                .arg("1")
                .arg(m.from)
                .arg(m.text)
                .arg(m.max_age.as_millis() as u64)
                .arg(m.max_bytes)
                .arg(if m.keep { "1" } else { "0" })
                .arg(m.id.map(|i| i.to_string()).unwrap_or_default()),
        };
        inner.step_events(&mut inv, &unit, p.events);
        let r: String = inner.run(&inv).await?;
        match r.as_str() {
            "sent" => Ok(Published::Sent),
            "duplicate" => Ok(Published::Duplicate),
            "not_member" => Ok(Published::NotMember),
            "rate_limited" => Ok(Published::RateLimited),
            other => Err(StoreError::BadReply(other.into())),
        }
    }

    async fn attr_change(&self, at: Chan<'_>, ch: AttrChange<'_>) -> SResult<AttrOutcome> {
        let inner = &self.inner;
        inner.check()?;
        let (before, after) = inner.channel_msg(at, Some(ch.event));
        let none = AttrQuota::default();
        let (opname, name, value, setting, rate, max, quota) = match ch.op {
            AttrOp::Set(a) => {
                let AttrSet {
                    name,
                    value,
                    setting,
                    rate_limited,
                    max,
                    quota,
                } = a;
                ("set", name, value, setting, rate_limited, max, quota)
            }
            AttrOp::Del { name, setting } => ("del", name, "", setting, false, usize::MAX, none),
            AttrOp::Clear { .. } => ("clear", "", "", None, false, usize::MAX, none),
        };
        let (field, fvalue) = setting_field(setting);
        let script = match opname {
            "set" => &inner.scripts.attr_grow,
            _ => &inner.scripts.attr,
        };
        let unit = inner.unit_of(at);
        let _unit = inner.app(&unit).await?;
        let bucket = rate.then(|| inner.keys.channel_attr_rate(&unit, at.channel, name));
        let mut inv = inner.channel_call(script, at, &unit, Seen::default(), bucket);
        inv.arg(opname).arg(name).arg(value).arg(field).arg(fvalue);
        inv.arg(if rate { "1" } else { "0" })
            .arg(max.min(i64::MAX as usize));
        inv.arg(before).arg(after);
        // (the unit's ledger holds its share of the app's quota)
        inv.arg(inner.share(quota.channels))
            .arg(inner.share(quota.bytes));
        inner.step_events(&mut inv, &unit, ch.events);
        let r: String = inner.run(&inv).await?;
        inner.timers_touched(&unit);
        match r.as_str() {
            "done" => Ok(AttrOutcome::Done),
            "rate_limited" => Ok(AttrOutcome::RateLimited),
            "too_many" => Ok(AttrOutcome::TooMany),
            "app_full" => Ok(AttrOutcome::AppFull),
            other => Err(StoreError::BadReply(other.into())),
        }
    }

    async fn settings(&self, at: Chan<'_>) -> SResult<Option<ChannelSettings>> {
        let r = list(self.inner.channel_state(at, "settings").await?);
        if r.first().map(int).unwrap_or(0) == 0 {
            return Ok(None);
        }
        let num = |i: usize| r.get(i).map(int).unwrap_or(0).max(0) as u64;
        let rate = |i: usize| num(i).min(u32::MAX as u64) as u32;
        Ok(Some(ChannelSettings {
            notify: num(1) != 0,
            ttl_secs: num(2),
            sendmsg_limit: rate(3),
            setattr_limit: rate(4),
            auto_update_secs: num(5),
            history: rate(6),
            keep_empty_secs: self.inner.defaults.keep_empty_secs,
        }))
    }

    async fn channels(
        &self,
        app: &AppId,
        cursor: &str,
        from: &str,
        limit: usize,
    ) -> SResult<ChannelPage> {
        // by name from each unit's index of its channels with members (join.lua and
        // leave.lua keep it), merged: the cursor is the last name of the page before
        let inner = &self.inner;
        inner.check()?;
        let from = match page_start(cursor, from) {
            Bound::Unbounded => "-".to_string(),
            Bound::Included(f) => format!("[{f}"),
            Bound::Excluded(c) => format!("({c}"),
        };
        let units: Vec<Cow<str>> = (0..inner.partitions).map(|p| Keys::unit(app, p)).collect();
        // (unit, name): the first `limit + 1` names of the units together (read at once)
        let reads = units.iter().enumerate().map(|(u, unit)| {
            let from = &from;
            async move {
                // (versions before the index had one unit: only the first can hold channels
                // it does not list)
                if u == 0 {
                    inner.channels_index_built(unit).await?;
                }
                let index = inner.keys.channels_occupied(unit);
                let mut c = inner.conn();
                let some: Vec<String> =
                    timed(c.zrangebylex_limit(&index, from, "+", 0, limit as isize + 1)).await?;
                SResult::Ok(some.into_iter().map(move |n| (u, n)))
            }
        });
        let mut names: Vec<(usize, String)> = (futures_util::future::try_join_all(reads).await?)
            .into_iter()
            .flatten()
            .collect();
        names.sort_by(|a, b| a.1.cmp(&b.1));
        let more = names.len() > limit;
        names.truncate(limit);
        // each unit's member counts (a pipeline each, at once)
        let counted = units.iter().enumerate().map(|(u, unit)| {
            let (at, of_unit): (Vec<usize>, Vec<String>) = (names.iter().enumerate())
                .filter(|(_, (nu, _))| *nu == u)
                .map(|(i, (_, name))| (i, name.clone()))
                .unzip();
            async move {
                let n = inner.member_counts(unit, &of_unit).await?;
                SResult::Ok(at.into_iter().zip(n))
            }
        });
        let mut counts = vec![0; names.len()];
        for (i, n) in (futures_util::future::try_join_all(counted).await?)
            .into_iter()
            .flatten()
        {
            counts[i] = n;
        }
        let mut names: Vec<String> = names.into_iter().map(|(_, name)| name).collect();
        let mut channels = Vec::with_capacity(names.len());
        for (name, n) in names.iter().zip(counts) {
            if n > 0 {
                channels.push((name.clone(), n));
            } else if let Some(ch) = ChannelName::from_stored(name) {
                // listed by the first listing of channels occupied before the index was
                // kept, and emptied meanwhile: out, unless it has members again
                let at = Chan { app, channel: &ch };
                inner.channel_state(at, "unlist").await?;
            }
        }
        Ok(ChannelPage {
            channels,
            next: more.then(|| names.pop()).flatten(),
        })
    }

    async fn channel_attrs(&self, at: Chan<'_>) -> SResult<Vec<(String, String)>> {
        let inner = &self.inner;
        inner.check()?;
        let attrs = inner.keys.channel(&inner.unit_of(at), at.channel).attrs;
        let mut c = inner.conn();
        let mut all: Vec<(String, String)> = timed(c.hgetall(attrs)).await?;
        all.sort();
        Ok(all)
    }

    async fn history(&self, at: Chan<'_>, after: u64, max_age: Duration) -> SResult<History> {
        let inner = &self.inner;
        inner.check()?;
        let oldest = now_ms().saturating_sub(max_age.as_millis() as u64);
        let unit = inner.unit_of(at);
        let script = &inner.scripts.channel_state;
        let mut inv = inner.channel_call(script, at, &unit, Seen::default(), None);
        inv.arg("history").arg(after).arg(oldest);
        let r = list(inner.run::<RValue>(&inv).await?);
        let last = r.first().map(int).unwrap_or(0).max(0) as u64;
        let num = |v: &RValue| text(v).parse::<u64>().unwrap_or(0);
        let msgs = r
            .get(1..)
            .unwrap_or(&[])
            .chunks_exact(6)
            .map(|e| Kept {
                n: num(&e[0]),
                ts: num(&e[1]),
                seq: num(&e[2]),
                account: text(&e[3]),
                msg: text(&e[4]),
                id: text(&e[5]).parse().ok(),
            })
            .collect();
        Ok(History { last, msgs })
    }

    async fn touch_members(&self, at: Chan<'_>) -> SResult<()> {
        self.inner.channel_state(at, "touch").await.map(|_| ())
    }

    async fn take_members_changed(&self, at: Chan<'_>) -> SResult<Option<usize>> {
        let r = self.inner.channel_state(at, "take").await?;
        Ok(match r {
            RValue::Nil => None,
            n => Some(int(&n).max(0) as usize),
        })
    }

    async fn members(&self, at: Chan<'_>, max: usize) -> SResult<(usize, Vec<String>)> {
        let inner = &self.inner;
        inner.check()?;
        let members = inner.keys.channel(&inner.unit_of(at), at.channel).members;
        let mut c = inner.conn();
        if max == 0 {
            return Ok((timed(c.zcard(&members)).await?, Vec::new()));
        }
        let last = max.min(isize::MAX as usize) as isize - 1;
        let mut pipe = redis::pipe();
        pipe.zcard(&members).zrevrange(&members, 0, last);
        let (n, mut list): (usize, Vec<String>) = timed(pipe.query_async(&mut c)).await?;
        list.reverse();
        Ok((n, list))
    }

    async fn is_member(&self, at: Chan<'_>, account: &Account) -> SResult<bool> {
        let inner = &self.inner;
        inner.check()?;
        let location = inner.keys.channel(&inner.unit_of(at), at.channel).location;
        let mut c = inner.conn();
        timed(c.hexists(location, account.as_str())).await
    }

    async fn invite_open(&self, open: InviteOpen<'_>) -> SResult<Appended> {
        let inner = &self.inner;
        inner.check()?;
        let key = open.key;
        // the record, the caller's index and the timers in the caller's unit; the message
        // in the callee's
        let unit = inner.account_unit(&key.app, &key.caller);
        let _unit = inner.app(&unit).await?;
        let ik = inner
            .keys
            .invite(&unit, &key.caller, &key.channel, &key.callee);
        let entry = node::invite_entry(&key.channel, &key.callee);
        if inner.account_unit(&key.app, &key.callee) != unit {
            return self.invite_open_apart(open, &unit, ik, &entry).await;
        }
        let mut inv = inner.scripts.invite_grow.prepare_invoke();
        inv.arg("open");
        // (the callee's unit is the caller's here)
        inner.mail_call(&mut inv, &unit, &key.callee, &open.mail);
        inv.key(ik.record)
            .key(ik.by_caller)
            .key(inner.keys.timers(&unit));
        inv.arg(open.extra).arg(open.generation).arg(&entry);
        timer_args(&mut inv, open.timers);
        inner.step_events(&mut inv, &unit, open.mail.events);
        let r: Vec<i64> = inner.run(&inv).await?;
        inner.timers_touched(&unit);
        let get = |i: usize| r.get(i).copied().unwrap_or(0);
        Ok(appended(get(0), get(1), get(2)))
    }

    async fn invite_relay(&self, relay: InviteRelay<'_>) -> SResult<Relayed> {
        let inner = &self.inner;
        inner.check()?;
        let Some(app) = relay.keys.first().map(|k| &k.app) else {
            return Err(StoreError::BadReply("a relay about no invitation".into()));
        };
        // each record is in its caller's unit, the message in its recipient's: the records
        // of other units are asked whether one is live (a script per unit), then the message
        // goes with the records of its unit, then the others take their step (with the
        // events keyed by their callers: when it changed a record). A failure before that
        // last step leaves them as they were, and the resend (its message a duplicate) takes
        // it.
        let mail_unit = inner.account_unit(app, relay.to);
        let mut apart: BTreeMap<Cow<'_, str>, Vec<&InviteKey>> = BTreeMap::new();
        let mut here = Vec::new();
        for k in relay.keys {
            match inner.account_unit(&k.app, &k.caller) {
                u if u == mail_unit => here.push(k),
                u => apart.entry(u).or_default().push(k),
            }
        }
        let step = match relay.step {
            InviteStep::Keep => "keep",
            InviteStep::Ack => "ack",
            InviteStep::Accept => "accept",
            InviteStep::End => "end",
        };
        let mut live_apart = false;
        for (unit, keys) in &apart {
            live_apart |= inner.invite_records(unit, keys, "keep", &NO_EVENTS).await?;
        }
        let events = match apart.is_empty() {
            true => Cow::Borrowed(relay.mail.events),
            false => Cow::Owned(inner.events_in(relay.mail.events, &mail_unit)),
        };
        let mail = MailItem {
            events: &events,
            ..relay.mail
        };
        let mut inv = inner.scripts.invite_grow.prepare_invoke();
        inv.arg("relay");
        inner.mail_call(&mut inv, &mail_unit, relay.to, &mail);
        let require_live = relay.require_live && !live_apart;
        inv.arg(step).arg(if require_live { "1" } else { "0" });
        for k in here {
            let ik = inner
                .keys
                .invite(&mail_unit, &k.caller, &k.channel, &k.callee);
            inv.key(ik.record).key(ik.by_caller);
            inv.arg(node::invite_entry(&k.channel, &k.callee));
        }
        inner.step_events(&mut inv, &mail_unit, &events);
        let r: Vec<i64> = inner.run(&inv).await?;
        inner.timers_touched(&mail_unit);
        if live_apart && step != "keep" {
            for (unit, keys) in &apart {
                let events = inner.events_in(relay.mail.events, unit);
                inner.invite_records(unit, keys, step, &events).await?;
            }
        }
        let get = |i: usize| r.get(i).copied().unwrap_or(0);
        let appended = appended(get(1), get(2), get(3));
        Ok(Relayed {
            live: live_apart || get(0) == 1,
            appended,
        })
    }

    async fn invite_get(&self, key: &InviteKey) -> SResult<Option<InviteRecord>> {
        let inner = &self.inner;
        inner.check()?;
        let unit = inner.account_unit(&key.app, &key.caller);
        let ik = inner
            .keys
            .invite(&unit, &key.caller, &key.channel, &key.callee);
        let mut inv = inner.scripts.invite.prepare_invoke();
        inv.key(ik.record).arg("get");
        let r: Option<Vec<Option<String>>> = inner.run(&inv).await?;
        Ok(r.and_then(invite_record))
    }

    async fn invite_take(&self, key: &InviteKey, take: Take) -> SResult<Option<InviteRecord>> {
        let inner = &self.inner;
        inner.check()?;
        let unit = inner.account_unit(&key.app, &key.caller);
        let ik = inner
            .keys
            .invite(&unit, &key.caller, &key.channel, &key.callee);
        let mut inv = inner.scripts.invite.prepare_invoke();
        inv.key(ik.record)
            .key(ik.by_caller)
            .arg("take")
            .arg(take.generation);
        inv.arg(if take.ringing_only { "1" } else { "0" });
        inv.arg(node::invite_entry(&key.channel, &key.callee));
        let r: Option<Vec<Option<String>>> = inner.run(&inv).await?;
        Ok(r.and_then(invite_record))
    }

    async fn invites_by(&self, caller: User<'_>) -> SResult<Vec<(InviteKey, u64)>> {
        let inner = &self.inner;
        inner.check()?;
        let unit = inner.account_unit(caller.app, caller.account);
        let index = inner.keys.invite(&unit, caller.account, "", "").by_caller;
        let mut c = inner.conn();
        let entries: Vec<String> = timed(c.smembers(&index)).await?;
        let mut out = Vec::new();
        for e in entries {
            let key = node::read_invite_entry(&e).and_then(|(ch, callee)| {
                Some(InviteKey {
                    app: caller.app.clone(),
                    caller: caller.account.clone(),
                    channel: ChannelName::from_stored(&ch)?,
                    callee: Account::from_stored(&callee)?,
                })
            });
            let record = match &key {
                Some(k) => self.invite_get(k).await?,
                None => None,
            };
            match (key, record) {
                (Some(k), Some(r)) => out.push((k, r.generation)),
                // an entry whose record expired
                _ => timed(c.srem::<_, _, i64>(&index, &e)).await.map(|_| ())?,
            }
        }
        Ok(out)
    }

    async fn schedule(&self, timer: Timer, after: Duration) -> SResult<()> {
        let inner = &self.inner;
        inner.check()?;
        let unit = inner.timer_unit(&timer);
        let _unit = inner.app(&unit).await?;
        let mut inv = inner.scripts.timers.prepare_invoke();
        inv.key(inner.keys.timers(&unit)).arg("schedule");
        inv.arg(timer.encode()).arg(after.as_millis() as u64);
        inner.run::<i64>(&inv).await?;
        inner.timers_touched(&unit);
        Ok(())
    }

    async fn timer_done(&self, (unit, member, lease): (String, String, String)) {
        let inner = &self.inner;
        let mut inv = inner.scripts.timers.prepare_invoke();
        inv.key(inner.keys.timers(&unit))
            .arg("done")
            .arg(member)
            .arg(lease);
        if let Err(e) = inner.run::<i64>(&inv).await {
            // its lease runs out and it fires again; the rules are idempotent for it
            warn!("a fired timer stays scheduled: {e}");
        }
    }

    fn event_partitions(&self) -> u32 {
        PARTITIONS * self.inner.partitions
    }

    async fn event_append(
        &self,
        app: &AppId,
        partition: u32,
        event: &str,
        cap: EventCap,
    ) -> SResult<u64> {
        let inner = &self.inner;
        inner.check()?;
        let (unit, partition) = inner.event_place(app, partition);
        let [stream, meta] = inner.keys.event_log(&unit, partition);
        let mut inv = inner.scripts.event_append.prepare_invoke();
        inv.key(stream).key(meta);
        inv.arg(event)
            .arg(cap.max_events)
            .arg(cap.max_bytes)
            .arg(cap.max_age.as_millis() as u64);
        let seq: i64 = inner.run(&inv).await?;
        Ok(seq.max(0) as u64)
    }

    async fn event_read(
        &self,
        app: &AppId,
        partition: u32,
        after: u64,
        max: usize,
    ) -> SResult<EventPage> {
        let inner = &self.inner;
        inner.check()?;
        let (unit, partition) = inner.event_place(app, partition);
        let [stream, meta] = inner.keys.event_log(&unit, partition);
        let mut pipe = redis::pipe();
        pipe.hget(&meta, "last")
            .cmd("XRANGE")
            .arg(&stream)
            .arg(format!("({after}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(max.max(1));
        let mut c = inner.conn();
        let (last, entries): (Option<u64>, RValue) = timed(pipe.query_async(&mut c)).await?;
        let mut events = Vec::new();
        for entry in list(entries) {
            let mut parts = list(entry).into_iter();
            let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
                return Err(StoreError::BadReply("event log entry".into()));
            };
            let id = text(&id);
            let seq = id
                .split_once('-')
                .and_then(|(n, _)| n.parse::<u64>().ok())
                .ok_or_else(|| StoreError::BadReply(format!("event id {id}")))?;
            let fields = list(fields);
            let event = fields
                .chunks(2)
                .find(|f| f.len() == 2 && text(&f[0]) == "e")
                .map(|f| text(&f[1]))
                .ok_or_else(|| StoreError::BadReply(format!("event {id} without text")))?;
            events.push((seq, Arc::<str>::from(event)));
        }
        Ok(EventPage {
            last: last.unwrap_or(0),
            events,
        })
    }

    async fn event_cursor(
        &self,
        app: &AppId,
        consumer: &str,
        partition: u32,
    ) -> SResult<Option<u64>> {
        let inner = &self.inner;
        inner.check()?;
        let mut c = inner.conn();
        let (unit, partition) = inner.event_place(app, partition);
        let key = inner.keys.event_cursors(&unit, partition);
        timed(c.hget(key, consumer)).await
    }

    async fn event_cursor_set(
        &self,
        app: &AppId,
        consumer: &str,
        partition: u32,
        seq: u64,
        keep: Duration,
    ) -> SResult<()> {
        let inner = &self.inner;
        inner.check()?;
        let (unit, partition) = inner.event_place(app, partition);
        let key = inner.keys.event_cursors(&unit, partition);
        let mut pipe = redis::pipe();
        pipe.hset(&key, consumer, seq)
            .ignore()
            .pexpire(&key, keep.as_millis() as i64 + 60_000)
            .ignore();
        let mut c = inner.conn();
        timed(pipe.query_async::<()>(&mut c)).await
    }

    async fn event_lease(
        &self,
        app: &AppId,
        consumer: &str,
        partition: u32,
        holder: &str,
        ttl: Duration,
    ) -> SResult<bool> {
        let inner = &self.inner;
        inner.check()?;
        let mut inv = inner.scripts.event_lease.prepare_invoke();
        let (unit, partition) = inner.event_place(app, partition);
        inv.key(inner.keys.event_lease(&unit, consumer, partition));
        inv.arg(holder).arg(ttl.as_millis() as u64);
        let r: i64 = inner.run(&inv).await?;
        Ok(r == 1)
    }

    async fn live_nodes(&self) -> Vec<String> {
        let inner = &self.inner;
        let nodes = inner.live_nodes().await.unwrap_or_default();
        let mut urls: Vec<String> = nodes.into_iter().map(|(_, url)| url).collect();
        urls.sort();
        urls.dedup();
        urls
    }

    fn local_sessions(&self) -> usize {
        self.inner.sessions.len()
    }

    fn first_conn_id(&self) -> u64 {
        self.inner.first_conn
    }

    async fn watch(
        &self,
        watcher: User<'_>,
        session: &NodeSession,
        accounts: &[Account],
        on: bool,
        app_max: usize,
    ) -> SResult<bool> {
        let inner = &self.inner;
        inner.check()?;
        let entry = inner.watch_entry(watcher, session);
        // a step per unit of the watched accounts (each holds a share of the app's bound):
        // one refused, or failing, takes back the new watches of the others
        let mut by_unit: BTreeMap<Cow<'_, str>, Vec<&Account>> = BTreeMap::new();
        for a in accounts {
            by_unit
                .entry(inner.account_unit(watcher.app, a))
                .or_default()
                .push(a);
        }
        let mut done: Vec<(&Cow<'_, str>, &Vec<&Account>)> = Vec::new();
        for (unit, some) in &by_unit {
            let r = inner.watch_call(unit, &entry, some, on, app_max).await;
            if on && !matches!(r, Ok(true)) {
                for (unit, some) in done {
                    if let Err(e) = inner.watch_call(unit, &entry, some, false, 0).await {
                        warn!(app = %watcher.app, "taking back watches: {e}");
                    }
                }
                return r;
            }
            r?;
            done.push((unit, some));
        }
        Ok(true)
    }

    async fn watchers_push(&self, user: User<'_>, frame: &str) -> SResult<()> {
        let inner = &self.inner;
        inner.check()?;
        let unit = inner.account_unit(user.app, user.account);
        let key = inner.keys.watchers(&unit, user.account);
        let mut c = inner.conn();
        let watchers: Vec<String> = timed(c.smembers(&key)).await?;
        if watchers.is_empty() {
            return Ok(());
        }
        let mut gone = Vec::new();
        // the watchers on other nodes, by node and the watchers' unit's partition: (their
        // entries, a message to each)
        type Watchers<'w> = (Vec<&'w String>, Vec<String>);
        let mut remote: BTreeMap<(&str, u32), Watchers<'_>> = BTreeMap::new();
        for w in &watchers {
            let Some((node, conn, p)) = read_watch_entry(w) else {
                gone.push(w.clone());
                continue;
            };
            if node == inner.cfg.node_id {
                match inner.conns.get(&conn) {
                    Some(h) if h.is_open() => {
                        h.push(Frame::from(frame.to_string()));
                    }
                    _ => gone.push(w.clone()),
                }
            } else {
                let frame = frame.to_string();
                let (entries, msgs) = remote.entry((node, p)).or_default();
                entries.push(w);
                msgs.push(NodeMsg::Frame { conn, frame }.encode());
            }
        }
        if !remote.is_empty() {
            // the nodes not reaped yet: a node whose registration lapsed may be back (Redis
            // out of every node's reach), and a watch ends with its session, when its node is
            // reaped
            let listed: Vec<String> = timed(c.smembers(inner.keys.nodes())).await?;
            for ((node, p), (entries, msgs)) in remote {
                if listed.iter().any(|n| n == node) {
                    // one message to each node (over the topic of the watchers' unit, which
                    // their logins subscribed), however many of its sessions watch
                    let topic = inner.keys.app_topic(&Keys::unit(user.app, p), node);
                    inner.publish(&topic, node::bundle(msgs)).await?;
                } else {
                    // its node was reaped: the watch went with it
                    gone.extend(entries.into_iter().cloned());
                }
            }
        }
        if !gone.is_empty() {
            let removed: i64 = timed(c.srem(&key, &gone)).await?;
            if removed > 0 {
                let _: i64 = timed(c.decr(inner.keys.app_watches(&unit), removed)).await?;
            }
        }
        Ok(())
    }

    async fn unreachable_set(&self, user: User<'_>, grace: Option<Duration>) -> SResult<()> {
        let inner = &self.inner;
        inner.check()?;
        let key = inner
            .keys
            .unreachable(&inner.account_unit(user.app, user.account), user.account);
        let mut c = inner.conn();
        match grace {
            Some(g) => {
                let ms = g.as_millis().max(1) as u64;
                let _: () = timed(c.pset_ex(key, "1", ms)).await?;
            }
            None => {
                let _: () = timed(c.del(key)).await?;
            }
        }
        Ok(())
    }

    async fn unreachable(&self, user: User<'_>) -> SResult<bool> {
        let inner = &self.inner;
        inner.check()?;
        let key = inner
            .keys
            .unreachable(&inner.account_unit(user.app, user.account), user.account);
        let mut c = inner.conn();
        timed(c.exists(key)).await
    }

    fn session_node(&self, session: &NodeSession) -> Option<String> {
        Some(session.node.clone())
    }

    async fn node_report_put(&self, report: &str, ttl: Duration) -> SResult<()> {
        let inner = &self.inner;
        let key = inner.keys.node_report(&inner.cfg.node_id);
        let ms = ttl.as_millis().max(1) as u64;
        let _: () = timed(inner.conn().pset_ex(key, report, ms)).await?;
        Ok(())
    }

    async fn node_reports(&self) -> SResult<Vec<String>> {
        let inner = &self.inner;
        let nodes = inner.live_nodes().await?;
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = nodes
            .iter()
            .map(|(n, _)| inner.keys.node_report(n))
            .collect();
        let reports: Vec<Option<String>> = timed(inner.conn().mget(&keys)).await?;
        Ok(reports.into_iter().flatten().collect())
    }

    fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let i = &self.inner;
        if let Conn::Cluster(s) = &i.conn {
            let (moved, ask, pause) = s.sent_again();
            let _ = writeln!(out, "# TYPE opensig_redis_sent_again_total counter");
            for (after, n) in [("moved", moved), ("ask", ask), ("pause", pause)] {
                let _ = writeln!(
                    out,
                    "opensig_redis_sent_again_total{{after=\"{after}\"}} {n}"
                );
            }
        }
        let held = i.held.lock();
        let _ = writeln!(
            out,
            "# TYPE opensig_pushes_held_bytes gauge\nopensig_pushes_held_bytes {}\n\
             # TYPE opensig_pushes_held_dropped_total counter\nopensig_pushes_held_dropped_total {}",
            held.bytes, held.dropped
        );
    }

    /// The cluster's state (under this prefix) as Redis holds it, and this node's sessions.
    async fn footprint(&self) -> SResult<Footprint> {
        let inner = &self.inner;
        let member_keys = inner.scan("cm").await?;
        let mut channels: std::collections::BTreeSet<String> = BTreeSet::new();
        for k in member_keys.iter().chain(inner.scan("ca").await?.iter()) {
            // "<prefix>cm <app> <channel>" → "<app> <channel>"
            channels.insert(k.split_once(' ').map_or("", |(_, rest)| rest).to_string());
        }
        Ok(Footprint {
            sessions: inner.sessions.len(),
            channels: channels.len(),
            members: inner.total(member_keys, true).await?,
            invites: inner.scan("inv").await?.len(),
            stored_messages: inner.total(inner.scan("mb").await?, true).await?,
            mailboxes: inner.scan("mbm").await?.len(),
            user_attrs: inner.total(inner.scan("ua").await?, false).await?,
        })
    }

    fn halt(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.halted.store(true, Ordering::SeqCst);
    }
}

/// Of `apps` (each with its topic's slot), those whose slot another primary serves in `now`
/// than in `before` (slot ranges with their primary's id, [`Conn::slot_owners`]).
fn moved_between(
    before: &[(u16, u16, String)],
    now: &[(u16, u16, String)],
    apps: impl IntoIterator<Item = (String, u16)>,
) -> BTreeSet<String> {
    let owner = |of: &[(u16, u16, String)], slot: u16| {
        of.iter()
            .find(|(a, b, _)| *a <= slot && slot <= *b)
            .map(|o| o.2.clone())
    };
    apps.into_iter()
        .filter(|(_, slot)| owner(before, *slot) != owner(now, *slot))
        .map(|(app, _)| app)
        .collect()
}

/// A watch entry's node, connection and the partition of its watcher's unit (0 when the
/// entry names none: one unit).
fn read_watch_entry(entry: &str) -> Option<(&str, u64, u32)> {
    let mut parts = entry.split(' ');
    let node = parts.next()?;
    let conn = parts.next()?.parse().ok()?;
    let p = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    parts.next().is_none().then_some((node, conn, p))
}

/// The key of this node's maps (`sessions`, `members`): "app account" or "app channel".
fn local(app: impl std::fmt::Display, name: impl std::fmt::Display) -> String {
    format!("{app} {name}")
}

/// "The account's membership on its old node ended" (published by join and leave).
fn left_msg(at: Chan<'_>, account: &Account) -> String {
    NodeMsg::Left {
        app: at.app.to_string(),
        channel: at.channel.to_string(),
        account: account.to_string(),
    }
    .encode()
}

/// Receives this node's topic in order (one Redis; a cluster's sharded topics are
/// [`sharded_subscriber`]'s); reconnects by itself.
async fn subscriber(inner: Weak<Inner>, ready: tokio::sync::oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    let mut reconnected = false;
    loop {
        let Some(i) = inner.upgrade() else { return };
        let topic = i.keys.topic(&i.cfg.node_id);
        let url = i.cfg.url.clone();
        drop(i);
        let client = match redis::Client::open(url.as_str()) {
            Ok(c) => c,
            Err(e) => {
                warn!("redis pub/sub: {e}");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let pubsub =
            match tokio::time::timeout(Duration::from_secs(3), client.get_async_pubsub()).await {
                Ok(Ok(mut p)) => match p.subscribe(&topic).await {
                    Ok(()) => Some(p),
                    Err(e) => {
                        warn!("redis subscribe: {e}");
                        None
                    }
                },
                Ok(Err(e)) => {
                    warn!("redis pub/sub: {e}");
                    None
                }
                Err(_) => None,
            };
        let Some(mut pubsub) = pubsub else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        backoff = Duration::from_millis(100);
        if let Some(tx) = ready.take() {
            let _ = tx.send(());
        }
        if reconnected {
            // pushes may have been lost while disconnected: the clients are told, and what
            // comes meanwhile is held until they were
            if let Some(i) = inner.upgrade() {
                let upto = i.held.lock().lost;
                tokio::spawn(async move {
                    i.clone().missed_pushes(None).await;
                    i.release_held(upto, &BTreeSet::new());
                });
            }
        }
        reconnected = true;
        let mut stream = pubsub.on_message();
        while let Some(m) = stream.next().await {
            let Some(i) = inner.upgrade() else { return };
            if let Ok(payload) = std::str::from_utf8(m.get_payload_bytes()) {
                i.deliver_or_hold(&topic, payload);
            }
        }
        if let Some(i) = inner.upgrade() {
            i.held.lock().lost(None);
        }
        warn!("redis pub/sub connection lost; reconnecting");
    }
}

/// At most this many bytes of pushes are held for topics whose subscription was lost
/// ([`HeldPushes`]); past it they are dropped (the poll and the rejoin that their clients are
/// told to make fetch the mail and the channel messages among them).
const HELD_BYTES: usize = 16 << 20;

/// Pushes held after a topic's subscription was lost (on a cluster, a sharded topic's; on
/// one Redis, the node's pub/sub connection), until the clients concerned were told to poll
/// their mailboxes and rejoin their channels. Messages published while no
/// subscription heard them (a slot in migration runs its scripts on the new primary, where
/// this node is not subscribed yet; a primary that died) are fetched by that poll and rejoin,
/// from after the last one each client got: a push that reached a client before it was told
/// would move that mark past the gap, and what is in the gap would be lost without a word.
#[derive(Default)]
struct HeldPushes {
    /// Subscriptions lost so far (each a mark that a round of [`resubscribe`] tells up to).
    lost: u64,
    /// Since which loss every topic's pushes are held (a connection was lost: which topics
    /// it carried is not known).
    all_since: Option<u64>,
    /// Topic → since which loss its pushes are held, and those held (oldest first).
    topics: std::collections::HashMap<String, (u64, Vec<String>)>,
    /// The bytes held, all topics together (at most [`HELD_BYTES`]).
    bytes: usize,
    /// Pushes dropped since the node started, past [`HELD_BYTES`].
    dropped: u64,
}

impl HeldPushes {
    /// A subscription was lost: `topic`'s, or (`None`) a connection's with every topic.
    fn lost(&mut self, topic: Option<String>) {
        self.lost += 1;
        let since = self.lost;
        match topic {
            Some(t) => {
                self.topics.entry(t).or_insert((since, Vec::new()));
            }
            None => {
                self.all_since.get_or_insert(since);
            }
        }
    }

    /// Some topic's pushes are held.
    fn holding(&self) -> bool {
        self.all_since.is_some() || !self.topics.is_empty()
    }

    /// Hold `payload` if `topic`'s pushes are held; false: deliver it now.
    fn hold(&mut self, topic: &str, payload: &str) -> bool {
        let held = match (self.topics.get_mut(topic), self.all_since) {
            (Some((_, held)), _) => held,
            (None, Some(since)) => {
                &mut self
                    .topics
                    .entry(topic.to_string())
                    .or_insert((since, Vec::new()))
                    .1
            }
            (None, None) => return false,
        };
        if self.bytes + payload.len() <= HELD_BYTES {
            self.bytes += payload.len();
            held.push(payload.to_string());
        } else {
            self.dropped += 1;
        }
        true
    }

    /// Stop holding what was lost up to the mark `upto` (the clients were told), except the
    /// topics in `still` (not subscribed yet: their turn comes in a next round); returns the
    /// pushes held for them, to deliver in order.
    fn release(&mut self, upto: u64, still: &BTreeSet<String>) -> Vec<String> {
        if self.all_since.is_some_and(|s| s <= upto) {
            self.all_since = None;
        }
        let done: Vec<String> = self
            .topics
            .iter()
            .filter(|(t, (since, _))| *since <= upto && !still.contains(*t))
            .map(|(t, _)| t.clone())
            .collect();
        let mut out = Vec::new();
        for t in done {
            if let Some((_, held)) = self.topics.remove(&t) {
                self.bytes -= held.iter().map(String::len).sum::<usize>();
                out.extend(held);
            }
        }
        out
    }
}

/// Receives this node's sharded topics (a Redis Cluster): each topic in order. When a
/// connection to a Redis node drops (its primary died, or it moved), the subscriptions on it
/// went with it: [`resubscribe`] takes over.
async fn sharded_subscriber(
    inner: Weak<Inner>,
    mut pushes: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
) {
    while let Some(p) = pushes.recv().await {
        let Some(i) = inner.upgrade() else { return };
        match p.kind {
            redis::PushKind::SMessage | redis::PushKind::Message => {
                if let Some(RValue::BulkString(payload)) = p.data.get(1) {
                    if let Ok(payload) = std::str::from_utf8(payload) {
                        let topic = p.data.first();
                        i.deliver_or_hold(&topic.map(text).unwrap_or_default(), payload);
                    }
                }
            }
            redis::PushKind::Disconnection => {
                // (what this node was unsubscribing from went with the connection)
                i.unsubscribing.lock().clear();
                i.held.lock().lost(None);
                i.subs_lost.store(true, Ordering::SeqCst);
                i.resubscribe_soon();
            }
            // Redis unsubscribed the node (the topic's slot moved), unless the node did
            // itself (an app it forgot)
            redis::PushKind::SUnsubscribe => {
                let topic = p.data.first().map(text).unwrap_or_default();
                if i.unsubscribing.lock().remove(&topic) {
                    continue;
                }
                i.held.lock().lost(Some(topic.clone()));
                let node = &i.cfg.node_id;
                if let Some(app) = i
                    .apps_known()
                    .into_iter()
                    .find(|a| i.keys.app_topic(a, node) == topic)
                {
                    i.topics_lost.lock().insert(app);
                }
                i.resubscribe_soon();
            }
            _ => {}
        }
    }
}

/// Subscribe every sharded topic of this node again, every half second until all are (the
/// cluster may still be electing the dead primary's replica; `SSUBSCRIBE` of a topic already
/// subscribed changes nothing); then the clients of the apps whose topics were lost (those
/// Redis unsubscribed, and those whose slot another primary serves now — every app's when a
/// connection was lost and no slot moved) are asked to poll their mailboxes and rejoin their
/// channels, for the pushes missed meanwhile. A round tries every topic: the apps whose
/// topic could not be subscribed (their primary dead and not replaced yet) wait for the next
/// round, and are told when it succeeds; the others hear their pushes again at once. Again
/// while more was lost during a round.
async fn resubscribe(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(i) = inner.upgrade() else { return };
        if i.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Some(subs) = i.subs.clone() else {
            return;
        };
        // what was lost before this round's subscriptions (what is lost after comes again)
        let upto = i.held.lock().lost;
        let conn_lost = i.subs_lost.swap(false, Ordering::SeqCst);
        let unsubscribed = std::mem::take(&mut *i.topics_lost.lock());
        let node = &i.cfg.node_id;
        let apps = i.apps_known();
        let mut failed = BTreeSet::new();
        for app in &apps {
            if let Err(e) = timed(subs.ssubscribe(&i.keys.app_topic(app, node))).await {
                warn!("subscribing this node's topic of app {app} again: {e}");
                failed.insert(app.clone());
            }
        }
        // tried again (and told when subscribed) next round
        i.topics_lost.lock().extend(failed.iter().cloned());
        let lost_now = |apps: BTreeSet<String>| -> BTreeSet<String> {
            apps.into_iter().filter(|a| !failed.contains(a)).collect()
        };
        let told = match conn_lost {
            false => Some(lost_now(unsubscribed)),
            true => match i.moved_apps().await {
                Some(mut m) => {
                    m.extend(unsubscribed);
                    Some(lost_now(m))
                }
                // which apps lost pushes is not known: all those subscribed now
                None if failed.is_empty() => None,
                None => Some(lost_now(apps.iter().cloned().collect())),
            },
        };
        match &told {
            Some(apps) if apps.is_empty() => {}
            Some(apps) => info!(
                "this node's topics are subscribed again; the clients of the {} app(s) whose \
                 topics moved poll their mailboxes and rejoin their channels",
                apps.len()
            ),
            None => info!("this node's topics are subscribed again; clients poll their mailboxes and rejoin their channels"),
        }
        // the pushes held meanwhile go out once the clients were told (after the notices)
        let still: BTreeSet<String> = failed.iter().map(|a| i.keys.app_topic(a, node)).collect();
        let i2 = i.clone();
        tokio::spawn(async move {
            if told.as_ref().is_none_or(|apps| !apps.is_empty()) {
                i2.clone().missed_pushes(told).await;
            }
            i2.release_held(upto, &still);
        });
        i.resubscribing.store(false, Ordering::SeqCst);
        let more = i.subs_lost.load(Ordering::SeqCst) || !i.topics_lost.lock().is_empty();
        if !more || i.resubscribing.swap(true, Ordering::SeqCst) {
            return;
        }
    }
}

async fn heartbeat(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut last_refresh = tokio::time::Instant::now();
    let mut last_forget = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let Some(i) = inner.upgrade() else { return };
        if i.stopping.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = i.heartbeat_once().await {
            warn!("heartbeat: {e}");
        }
        // (in this task: the refresh of the list of apps below never writes back an app
        // forgotten meanwhile)
        let forget_every = i
            .forget_apps_after
            .map(|a| (a / 2).clamp(HEARTBEAT, SESSION_REFRESH));
        if forget_every.is_some_and(|every| last_forget.elapsed() >= every) {
            last_forget = tokio::time::Instant::now();
            i.forget_idle_apps().await;
        }
        if last_refresh.elapsed() >= SESSION_REFRESH {
            last_refresh = tokio::time::Instant::now();
            // pipelines of 500 keys, PIPELINES_AT_ONCE of them in flight: on a Redis Cluster
            // one per unit (a pipeline stays in one hash slot), on one Redis of every unit's
            let by_unit = i.subs.is_some();
            let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for e in i.sessions.iter() {
                if let Some((app, account)) = e.key().split_once(' ') {
                    let unit = i.account_unit(app, account);
                    let key = i.keys.session(&unit, account, &i.cfg.node_id).session;
                    let group = if by_unit {
                        unit.into_owned()
                    } else {
                        String::new()
                    };
                    groups.entry(group).or_default().push(key);
                }
            }
            let pipes: Vec<redis::Pipeline> = (groups.values())
                .flat_map(|keys| keys.chunks(500))
                .map(|chunk| {
                    let mut pipe = redis::pipe();
                    for k in chunk {
                        pipe.pexpire(k, SESSION_TTL_MS as i64).ignore();
                    }
                    pipe
                })
                .collect();
            for some in pipes.chunks(PIPELINES_AT_ONCE) {
                let sends = some.iter().map(|pipe| {
                    let mut c = i.conn();
                    async move { timed(pipe.query_async::<()>(&mut c)).await }
                });
                for r in futures_util::future::join_all(sends).await {
                    if let Err(e) = r {
                        warn!("refreshing this node's sessions: {e}");
                    }
                }
            }
            let mut c = i.conn();
            // the node's list of apps again (a failover may have lost a write)
            let apps = i.apps_known();
            if !apps.is_empty() {
                let r: SResult<()> = timed(c.sadd(i.keys.node_apps(&i.cfg.node_id), &apps)).await;
                if let Err(e) = r {
                    warn!("registering this node's apps: {e}");
                }
            }
        }
    }
}

/// Claims due timers and hands them to the rules (a timer not reported done comes back when
/// its lease runs out).
async fn timers(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(TIMER_POLL);
    // when the cluster's index of apps with timers was last read
    let mut read_at: Option<tokio::time::Instant> = None;
    if let Some(i) = inner.upgrade() {
        i.timers_index_from_the_apps_list().await;
    }
    loop {
        tick.tick().await;
        let Some(i) = inner.upgrade() else { return };
        if i.stopping.load(Ordering::SeqCst) {
            return;
        }
        if i.work.lock().is_none() {
            continue;
        }
        let mut c = i.conn();
        // each app's timers are in its slot. This node asks an app of its own when its next
        // timer is due, when a step of this node may have changed them, and every
        // TIMER_RECHECK; any app, when the cluster's index says it is due (another node
        // scheduled it and stopped, or asked it last)
        let now = tokio::time::Instant::now();
        let mut apps: BTreeSet<String> = i
            .apps_known()
            .into_iter()
            .filter(|a| i.timers_next.lock().get(a).is_none_or(|t| *t <= now))
            .collect();
        for app in &apps {
            // (set before asking: a step that schedules meanwhile clears it again)
            i.timers_next
                .lock()
                .insert(app.clone(), now + TIMER_RECHECK);
        }
        let mut taken = BTreeSet::new();
        if read_at.is_none_or(|at| now.duration_since(at) >= TIMER_TAKE) {
            read_at = Some(now);
            match i
                .timers_index(
                    "take",
                    &[
                        &TIMER_TAKE_MAX.to_string(),
                        &TIMER_TAKE_LEASE_MS.to_string(),
                    ],
                )
                .await
            {
                Ok(v) => taken.extend(list(v).iter().map(text)),
                Err(e) => warn!("reading the cluster's index of timers: {e}"),
            }
            if taken.len() >= TIMER_TAKE_MAX {
                // more are due (a reaped node's apps): read again at the next tick
                read_at = None;
            }
        }
        apps.extend(taken.iter().cloned());
        for app in apps {
            let due: SResult<Vec<String>> = timed(
                i.scripts
                    .timers
                    .key(i.keys.timers(&app))
                    .arg("claim")
                    .arg(TIMER_LEASE_MS)
                    .arg(100)
                    .invoke_async(&mut c),
            )
            .await;
            // (what Redis answered counts from when it answered: it may have been slow)
            let answered = tokio::time::Instant::now();
            let mut due = due.unwrap_or_default();
            if due.len() % 2 == 1 {
                let next_ms: i64 = due.pop().and_then(|n| n.parse().ok()).unwrap_or(-1);
                if next_ms >= 0 {
                    let at = answered + Duration::from_millis(next_ms as u64);
                    let mut next = i.timers_next.lock();
                    if let Some(t) = next.get_mut(&app) {
                        *t = (*t).min(at);
                    }
                }
                i.timers_indexed(&app, next_ms, answered, taken.contains(&app))
                    .await;
            } else {
                // not answered: ask again at the next tick
                i.timers_touched(&app);
            }
            for pair in due.chunks(2) {
                let [member, lease] = pair else { continue };
                match Timer::decode(member) {
                    Some(timer) => {
                        i.send_work(Work::Timer {
                            timer,
                            claim: (app.clone(), member.clone(), lease.clone()),
                        });
                    }
                    None => {
                        warn!("dropped a timer entry this version does not know");
                        let _ = timed(c.zrem::<_, _, i64>(i.keys.timers(&app), member)).await;
                    }
                }
            }
        }
    }
}

impl Inner {
    /// Hand sessions and memberships of `node` to the rules, to end as their own node would
    /// have: `(app, account, connection (none: any of the node's), channels)` each. `true`
    /// when all ended.
    async fn end_orphans(
        &self,
        node: &str,
        orphans: impl Iterator<Item = (String, String, Option<u64>, Vec<String>)>,
    ) -> bool {
        let mut waits = Vec::new();
        for (app, account, conn, channels) in orphans {
            let (Some(app), Some(account)) =
                (AppId::from_stored(&app), Account::from_stored(&account))
            else {
                continue;
            };
            let (done, wait) = tokio::sync::oneshot::channel();
            let sent = self.send_work(Work::Orphan {
                app,
                account,
                session: NodeSession {
                    node: node.to_string(),
                    conn,
                },
                channels: channels
                    .iter()
                    .filter_map(|c| ChannelName::from_stored(c))
                    .collect(),
                done,
            });
            if sent {
                waits.push(wait);
            }
        }
        let mut all_done = true;
        for w in waits {
            all_done &= w.await.unwrap_or(false);
        }
        all_done
    }

    /// Per app of `apps` (in their order): the entries of `node`'s index of its sessions and
    /// of its memberships, read with one pipeline per app, [`PIPELINES_AT_ONCE`] apps at a time.
    async fn node_indexes(
        &self,
        apps: &[String],
        node: &str,
    ) -> SResult<Vec<(Vec<String>, Vec<String>)>> {
        let mut read = Vec::with_capacity(apps.len());
        for some in apps.chunks(PIPELINES_AT_ONCE) {
            let reads = some.iter().map(|app| {
                let mut pipe = redis::pipe();
                pipe.smembers(self.keys.node_sessions(app, node))
                    .smembers(self.keys.node_members(app, node));
                let mut c = self.conn();
                async move { timed(pipe.query_async::<(Vec<String>, Vec<String>)>(&mut c)).await }
            });
            read.extend(futures_util::future::try_join_all(reads).await?);
        }
        Ok(read)
    }

    /// What a previous run of this node left (the same node id, stopped without leaving — a
    /// crash — and back before another node reaped it: none does once it is back) ends as a
    /// dead node's would: its sessions, and its memberships (each ended only where Redis
    /// still names that run's connection: the scripts compare). Its connections are those
    /// below this run's first id. `false`: some did not end yet (the next round tries again).
    async fn end_previous_run(&self) -> SResult<bool> {
        let node = &self.cfg.node_id;
        let mut c = self.conn();
        let apps: Vec<String> = timed(c.smembers(self.keys.node_apps(node))).await?;
        // the apps it listed are this run's too (subscribed, their timers asked), until
        // forgotten like any other: the list then holds what this run serves
        for some in apps.chunks(PIPELINES_AT_ONCE) {
            futures_util::future::try_join_all(some.iter().map(|app| self.app(app))).await?;
        }
        // (app, account, connection) → channels
        let mut orphans: BTreeMap<(String, String, u64), Vec<String>> = BTreeMap::new();
        let own = |location: &str| -> Option<u64> {
            let (at, conn) = location.split_once(' ')?;
            let conn: u64 = conn.parse().ok()?;
            (at == node.as_str() && conn < self.first_conn).then_some(conn)
        };
        for (s, m) in self.node_indexes(&apps, node).await? {
            for (app, account, conn) in s.iter().filter_map(|e| node::read_session_entry(e)) {
                if conn < self.first_conn {
                    orphans.entry((app, account, conn)).or_default();
                }
            }
            // where each membership is now: pipelines of 1,000 (the index's unit's slot)
            let m: Vec<_> = m
                .iter()
                .filter_map(|e| node::read_member_entry(e))
                .collect();
            let mut at: Vec<Option<String>> = Vec::with_capacity(m.len());
            for some in m.chunks(1000) {
                let mut pipe = redis::pipe();
                for (app, ch, account) in some {
                    let unit = self.channel_unit(app, ch);
                    pipe.hget(self.keys.channel(&unit, ch).location, account);
                }
                at.extend(timed(pipe.query_async::<Vec<Option<String>>>(&mut c)).await?);
            }
            for ((app, ch, account), at) in m.into_iter().zip(at) {
                if let Some(conn) = at.as_deref().and_then(own) {
                    orphans.entry((app, account, conn)).or_default().push(ch);
                }
            }
        }
        if orphans.is_empty() {
            return Ok(true);
        }
        info!(
            node = %node,
            "ending {} session(s) and membership(s) a previous run of this node left",
            orphans.len()
        );
        let all = orphans
            .into_iter()
            .map(|((app, account, conn), channels)| (app, account, Some(conn), channels));
        Ok(self.end_orphans(node, all).await)
    }
}

/// Hands the sessions and memberships of nodes whose heartbeat lapsed to the rules, to end
/// as their own node would have (one reaper per dead node, by lock).
async fn reaper(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    loop {
        tick.tick().await;
        let Some(i) = inner.upgrade() else { return };
        if i.stopping.load(Ordering::SeqCst) {
            return;
        }
        if i.work.lock().is_some() && !i.previous_run_ended.load(Ordering::SeqCst) {
            match i.end_previous_run().await {
                Ok(true) => i.previous_run_ended.store(true, Ordering::SeqCst),
                Ok(false) => warn!("some of what a previous run of this node left did not end yet"),
                Err(e) => warn!("ending what a previous run of this node left: {e}"),
            }
        }
        if i.work.lock().is_some() && i.may_reap() {
            if let Err(e) = reap_once(&i).await {
                warn!("reaping: {e}");
            }
        }
    }
}

async fn reap_once(i: &Inner) -> SResult<()> {
    let mut c = i.conn();
    if !timed(c.exists::<_, bool>(i.keys.node(&i.cfg.node_id))).await? {
        // this node's own registration lapsed (Redis out of reach, maybe for every node):
        // its heartbeat registers it again, and the others get their time (`may_reap`)
        return Ok(());
    }
    let nodes: Vec<String> = timed(c.smembers(i.keys.nodes())).await?;
    for node in nodes.into_iter().filter(|n| *n != i.cfg.node_id) {
        let alive: bool = timed(c.exists(i.keys.node(&node))).await?;
        if alive {
            continue;
        }
        let locked: Option<String> = timed(
            redis::cmd("SET")
                .arg(i.keys.reap(&node))
                .arg(&i.cfg.node_id)
                .arg("NX")
                .arg("PX")
                .arg(60_000)
                .query_async(&mut c),
        )
        .await?;
        if locked.is_none() {
            continue;
        }
        info!(node = %node, "reaping a node that stopped");
        let apps: Vec<String> = timed(c.smembers(i.keys.node_apps(&node))).await?;
        // it may have scheduled timers it did not index before it stopped
        i.timers_soon(&apps).await?;
        // per app: its sessions' and memberships' index entries
        let read = i.node_indexes(&apps, &node).await?;
        let sessions = read.iter().flat_map(|r| &r.0);
        let memberships = read.iter().flat_map(|r| &r.1);
        // A node that only seemed dead (Redis out of its reach longer than its expiry, as
        // while a primary fails over) registers again, drops its clients and takes their new
        // sessions: what was read after it came back may be those. Leave it be.
        if timed(c.exists::<_, bool>(i.keys.node(&node))).await? {
            info!(node = %node, "a node taken for dead is back: not reaped");
            let _: () = timed(c.del(i.keys.reap(&node))).await?;
            continue;
        }
        if !i.may_reap() {
            // this node's own heartbeats stopped getting through meanwhile
            let _: () = timed(c.del(i.keys.reap(&node))).await?;
            return Ok(());
        }
        // (app, account) → (conn, channels)
        let mut orphans: BTreeMap<(String, String), (Option<u64>, Vec<String>)> = BTreeMap::new();
        for s in sessions {
            if let Some((app, account, conn)) = node::read_session_entry(s) {
                orphans.entry((app, account)).or_default().0 = Some(conn);
            }
        }
        for m in memberships {
            if let Some((app, ch, account)) = node::read_member_entry(m) {
                orphans.entry((app, account)).or_default().1.push(ch);
            }
        }
        let all = orphans
            .into_iter()
            .map(|((app, account), (conn, channels))| (app, account, conn, channels));
        if i.end_orphans(&node, all).await {
            // what was ended leaves the indexes (not what a node that came back meanwhile
            // put there)
            for (app, (s, m)) in apps.iter().zip(&read) {
                for chunk in s.chunks(1000) {
                    let _: () = timed(c.srem(i.keys.node_sessions(app, &node), chunk)).await?;
                }
                for chunk in m.chunks(1000) {
                    let _: () = timed(c.srem(i.keys.node_members(app, &node), chunk)).await?;
                }
            }
            if !timed(c.exists::<_, bool>(i.keys.node(&node))).await? {
                let _: () = timed(
                    redis::pipe()
                        .del(i.keys.node_apps(&node))
                        .srem(i.keys.nodes(), &node)
                        .query_async(&mut c),
                )
                .await?;
            }
        } else {
            // the lock expires and the next round tries again
            warn!(node = %node, "some sessions of a dead node could not be ended yet");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{moved_between, HeldPushes, HELD_BYTES};
    use std::collections::BTreeSet;

    /// A topic's pushes are held from the moment its subscription was lost until the round
    /// that told its clients, in order; a loss after the round began waits for the next
    /// round, a topic not subscribed yet stays held, and a lost connection holds every topic.
    #[test]
    fn pushes_after_a_lost_subscription_wait_until_the_clients_were_told() {
        let none = BTreeSet::new();
        let mut h = HeldPushes::default();
        assert!(!h.holding());
        assert!(!h.hold("t1", "a"));
        h.lost(Some("t1".into()));
        assert!(h.hold("t1", "b") && h.hold("t1", "c"));
        assert!(!h.hold("t2", "x"), "another topic flows");
        let round = h.lost;
        // lost again while the round tells: that one is the next round's
        h.lost(Some("t2".into()));
        assert!(h.hold("t2", "y"));
        assert_eq!(h.release(round, &none), ["b", "c"]);
        assert!(!h.hold("t1", "d"), "told: flows again");
        assert!(h.hold("t2", "z"));
        let round = h.lost;
        assert_eq!(h.release(round, &none), ["y", "z"]);
        assert!(!h.holding() && h.bytes == 0);
        // a connection lost: every topic held; one not subscribed again stays held
        h.lost(None);
        assert!(h.hold("t1", "e") && h.hold("t3", "f"));
        let round = h.lost;
        let still = BTreeSet::from(["t3".to_string()]);
        assert_eq!(h.release(round, &still), ["e"]);
        assert!(!h.hold("t1", "g"));
        assert!(h.hold("t3", "h"));
        assert_eq!(h.release(h.lost, &none), ["f", "h"]);
        // bounded: past HELD_BYTES a push is dropped (held, never delivered)
        h.lost(Some("t1".into()));
        let big = "x".repeat(HELD_BYTES / 2 + 1);
        assert!(h.hold("t1", &big) && h.hold("t1", &big) && h.hold("t1", "i"));
        assert_eq!((h.bytes, h.dropped), (big.len() + 1, 1));
        assert_eq!(h.release(h.lost, &none).len(), 2);
        assert_eq!(h.bytes, 0);
    }

    #[test]
    fn the_apps_a_failover_moved_are_those_of_the_slots_that_changed_hands() {
        let range = |a, b, id: &str| (a, b, id.to_string());
        let before = [
            range(0, 5460, "p1"),
            range(5461, 10922, "p2"),
            range(10923, 16383, "p3"),
        ];
        // p2's replica r2 took over; p1 gave slot 100 to p3
        let now = [
            range(0, 99, "p1"),
            range(100, 100, "p3"),
            range(101, 5460, "p1"),
            range(5461, 10922, "r2"),
            range(10923, 16383, "p3"),
        ];
        let apps =
            [("a", 50), ("b", 100), ("c", 6000), ("d", 16000)].map(|(a, s)| (a.to_string(), s));
        let moved: Vec<String> = moved_between(&before, &now, apps.clone())
            .into_iter()
            .collect();
        assert_eq!(moved, ["b", "c"]);
        // nothing known before: every app
        assert_eq!(moved_between(&[], &now, apps.clone()).len(), 4);
        // a primary marked failed and not yet replaced serves nothing: its apps moved
        let gone = [range(0, 5460, "p1"), range(10923, 16383, "p3")];
        let moved: Vec<String> = moved_between(&before, &gone, apps).into_iter().collect();
        assert_eq!(moved, ["c"]);
    }
}
