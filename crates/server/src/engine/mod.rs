//! All state shared between connections goes through [`Engine`]: sessions and presence, user
//! attributes, mailboxes, channels, invitations, and delivery to connections. Everything is
//! scoped by app id. `memory` is the single-process default.

use std::future::Future;
use std::sync::Arc;

use opensig_protocol::frame::VoipKind;
use opensig_protocol::ErrorKind;
use serde_json::Value;

use crate::delivery::ConnHandle;

pub mod memory;
pub mod redis;

/// What a successful login needs to know.
/// What an engine holds on behalf of clients right now (for tests that check that a client's
/// state is released: everything here must return to its earlier value once the client is
/// gone). Time-bounded caches (resend ids, offline-since times, rate buckets) are not counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Sessions (logged-in connections) on this node.
    pub sessions: usize,
    /// Channels that exist (memory engine) / channels with members on this node (Redis).
    pub channels: usize,
    /// Channel memberships (on this node for Redis).
    pub members: usize,
    /// Invitations in progress (memory engine).
    pub invites: usize,
    /// Messages stored in mailboxes and not yet acknowledged (memory engine).
    pub stored_messages: usize,
    /// User attributes set (memory engine).
    pub user_attrs: usize,
}

/// What the engine knows about a session at login.
#[derive(Debug, Clone)]
pub struct LoginInfo {
    /// The account's `_conn_timeout` (seconds), already clamped.
    pub conn_timeout_secs: u64,
}

/// The join reply's content.
#[derive(Debug, Clone, Default)]
pub struct JoinInfo {
    /// Latest members (join order, oldest first), the joiner included.
    pub list: Vec<String>,
    /// Current attributes in insertion order.
    pub attrs: Vec<(String, String)>,
}

/// A page of a mailbox.
#[derive(Debug, Clone, Default)]
pub struct MailPage {
    /// Highest acknowledged version.
    pub ver_clear: u64,
    /// `(version, msg string)`, ascending, all above `ver_clear`.
    pub msgs: Vec<(u64, Arc<str>)>,
}

/// A channel attribute change.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrOp {
    /// Set `name` to `value`.
    Set {
        /// Attribute name.
        name: String,
        /// New value.
        value: String,
    },
    /// Delete `name`.
    Del {
        /// Attribute name.
        name: String,
    },
    /// Delete every attribute.
    Clear,
}

/// A call-signalling message from the acting user about `(channel, peer)`.
#[derive(Debug, Clone)]
pub struct Relay {
    /// Which voip_* call.
    pub kind: VoipKind,
    /// The channel the call is about.
    pub channel: String,
    /// The counterpart.
    pub peer: String,
    /// `extra` as the sender gave it (string or JSON value), relayed verbatim.
    pub extra: Value,
    /// Client message id for dropping resent duplicates.
    pub message_id: Option<String>,
}

/// A peer-to-peer message to store and deliver.
#[derive(Debug, Clone)]
pub struct Mail<'a> {
    /// Sender.
    pub from: &'a str,
    /// Recipient.
    pub to: &'a str,
    /// Message type (`instant`, or another app-defined type without spaces).
    pub kind: &'a str,
    /// The sender's flag (kept in the msg string).
    pub flag: &'a str,
    /// Seconds to keep it.
    pub ttl_secs: u64,
    /// Body.
    pub content: &'a str,
    /// Client message id for dropping resent duplicates.
    pub message_id: Option<&'a str>,
}

/// Result alias for engine operations.
pub type EResult<T> = Result<T, ErrorKind>;

/// The shared state of the service.
pub trait Engine: Send + Sync + 'static {
    /// Register `conn` as `account`'s session (kicking an older one) and mark it online.
    /// `welcome` (the `login_ret`) must be queued on `conn` before the session becomes
    /// visible to others, so nothing — a kick by a newer login, a message — can overtake it.
    fn login(
        &self,
        app: &str,
        account: &str,
        conn: ConnHandle,
        welcome: crate::delivery::Frame,
    ) -> impl Future<Output = EResult<LoginInfo>> + Send;
    /// The session of `conn_id` ended: mark offline (unless a newer session took over).
    fn logout(&self, app: &str, account: &str, conn_id: u64) -> impl Future<Output = ()> + Send;
    /// Append to the recipient's mailbox and push it when online.
    fn send_message(&self, app: &str, mail: Mail<'_>) -> impl Future<Output = EResult<()>> + Send;
    /// Mode 0 poll: acknowledge up to `ver_clear`, return what follows.
    fn get_messages(
        &self,
        app: &str,
        account: &str,
        ver_clear: u64,
        max: usize,
    ) -> impl Future<Output = EResult<MailPage>> + Send;
    /// Mode 1 poll: drop `clear_ids`, return (and consider delivered) what remains.
    fn get_messages_by_id(
        &self,
        app: &str,
        account: &str,
        clear_ids: &[String],
        max: usize,
    ) -> impl Future<Output = EResult<MailPage>> + Send;
    /// Whether `account` has a session.
    fn user_online(&self, app: &str, account: &str) -> impl Future<Output = EResult<bool>> + Send;
    /// Set (or with an empty value, delete) a user attribute.
    fn set_user_attr(
        &self,
        app: &str,
        account: &str,
        name: &str,
        value: &str,
    ) -> impl Future<Output = EResult<()>> + Send;
    /// All attributes of `account`, in name order.
    fn user_attrs(
        &self,
        app: &str,
        account: &str,
    ) -> impl Future<Output = EResult<Vec<(String, String)>>> + Send;
    /// Add `account` (on `conn`) to `channel`.
    fn join(
        &self,
        app: &str,
        channel: &str,
        account: &str,
        conn: &ConnHandle,
    ) -> impl Future<Output = EResult<JoinInfo>> + Send;
    /// Remove `account` from `channel` if it is there on `conn_id`.
    fn leave(
        &self,
        app: &str,
        channel: &str,
        account: &str,
        conn_id: u64,
    ) -> impl Future<Output = EResult<()>> + Send;
    /// Send a channel message (members only unless `force`).
    fn channel_send(
        &self,
        app: &str,
        channel: &str,
        from: &str,
        msg: &str,
        force: bool,
        msg_id: Option<&str>,
    ) -> impl Future<Output = EResult<()>> + Send;
    /// Change channel attributes and tell every member.
    fn channel_attr(
        &self,
        app: &str,
        channel: &str,
        from: &str,
        op: AttrOp,
    ) -> impl Future<Output = EResult<()>> + Send;
    /// Member count and the latest `max` members.
    fn channel_members(
        &self,
        app: &str,
        channel: &str,
        max: usize,
    ) -> impl Future<Output = EResult<(usize, Vec<String>)>> + Send;
    /// Whether `account` is a member of `channel`.
    fn channel_has(
        &self,
        app: &str,
        channel: &str,
        account: &str,
    ) -> impl Future<Output = EResult<bool>> + Send;
    /// Relay a call-signalling message from `from`.
    fn voip(&self, app: &str, from: &str, relay: Relay)
        -> impl Future<Output = EResult<()>> + Send;
    /// WebSocket URLs of the live nodes (empty for a single node: the caller uses its own).
    fn live_nodes(&self) -> impl Future<Output = Vec<String>> + Send;
    /// Sessions held by this node.
    fn local_sessions(&self) -> usize;
    /// What this engine holds on behalf of clients (see [`Footprint`]).
    fn footprint(&self) -> Footprint;
    /// Stop touching shared state at once, as a crashed node would (tests of failover).
    fn halt(&self) {}
}

/// The engine chosen at startup: in memory (default) or Redis (`--redis`).
#[derive(Clone)]
pub enum AnyEngine {
    /// Single process.
    Memory(memory::Memory),
    /// A node of a Redis-backed cluster.
    Redis(redis::Redis),
}

macro_rules! delegate {
    ($self:ident, $e:ident => $call:expr) => {
        match $self {
            AnyEngine::Memory($e) => $call,
            AnyEngine::Redis($e) => $call,
        }
    };
}

impl Engine for AnyEngine {
    async fn login(
        &self,
        app: &str,
        account: &str,
        conn: ConnHandle,
        welcome: crate::delivery::Frame,
    ) -> EResult<LoginInfo> {
        delegate!(self, e => e.login(app, account, conn, welcome).await)
    }
    async fn logout(&self, app: &str, account: &str, conn_id: u64) {
        delegate!(self, e => e.logout(app, account, conn_id).await)
    }
    async fn send_message(&self, app: &str, mail: Mail<'_>) -> EResult<()> {
        delegate!(self, e => e.send_message(app, mail).await)
    }
    async fn get_messages(
        &self,
        app: &str,
        account: &str,
        ver_clear: u64,
        max: usize,
    ) -> EResult<MailPage> {
        delegate!(self, e => e.get_messages(app, account, ver_clear, max).await)
    }
    async fn get_messages_by_id(
        &self,
        app: &str,
        account: &str,
        clear_ids: &[String],
        max: usize,
    ) -> EResult<MailPage> {
        delegate!(self, e => e.get_messages_by_id(app, account, clear_ids, max).await)
    }
    async fn user_online(&self, app: &str, account: &str) -> EResult<bool> {
        delegate!(self, e => e.user_online(app, account).await)
    }
    async fn set_user_attr(
        &self,
        app: &str,
        account: &str,
        name: &str,
        value: &str,
    ) -> EResult<()> {
        delegate!(self, e => e.set_user_attr(app, account, name, value).await)
    }
    async fn user_attrs(&self, app: &str, account: &str) -> EResult<Vec<(String, String)>> {
        delegate!(self, e => e.user_attrs(app, account).await)
    }
    async fn join(
        &self,
        app: &str,
        channel: &str,
        account: &str,
        conn: &ConnHandle,
    ) -> EResult<JoinInfo> {
        delegate!(self, e => e.join(app, channel, account, conn).await)
    }
    async fn leave(&self, app: &str, channel: &str, account: &str, conn_id: u64) -> EResult<()> {
        delegate!(self, e => e.leave(app, channel, account, conn_id).await)
    }
    async fn channel_send(
        &self,
        app: &str,
        channel: &str,
        from: &str,
        msg: &str,
        force: bool,
        msg_id: Option<&str>,
    ) -> EResult<()> {
        delegate!(self, e => e.channel_send(app, channel, from, msg, force, msg_id).await)
    }
    async fn channel_attr(&self, app: &str, channel: &str, from: &str, op: AttrOp) -> EResult<()> {
        delegate!(self, e => e.channel_attr(app, channel, from, op).await)
    }
    async fn channel_members(
        &self,
        app: &str,
        channel: &str,
        max: usize,
    ) -> EResult<(usize, Vec<String>)> {
        delegate!(self, e => e.channel_members(app, channel, max).await)
    }
    async fn channel_has(&self, app: &str, channel: &str, account: &str) -> EResult<bool> {
        delegate!(self, e => e.channel_has(app, channel, account).await)
    }
    async fn voip(&self, app: &str, from: &str, relay: Relay) -> EResult<()> {
        delegate!(self, e => e.voip(app, from, relay).await)
    }
    async fn live_nodes(&self) -> Vec<String> {
        delegate!(self, e => e.live_nodes().await)
    }
    fn local_sessions(&self) -> usize {
        delegate!(self, e => e.local_sessions())
    }
    fn footprint(&self) -> Footprint {
        delegate!(self, e => e.footprint())
    }
    fn halt(&self) {
        delegate!(self, e => e.halt())
    }
}
