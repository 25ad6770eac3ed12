//! Every limit of the protocol in one struct, with the seeds' values as defaults, and the
//! input rules (account, channel name, sizes) both the server and the SDK check.

use crate::codes::ErrorKind;

/// Sizes, rates, timeouts and capacities. The server reads overrides from its CLI/env; the SDK
/// uses the defaults to refuse oversize input locally.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct Limits {
    /// Account names: at most this many bytes, visible characters, no spaces (seed 003).
    pub account_max_bytes: usize,
    /// Channel names (seed 003 `channelJoin`).
    pub channel_name_max_bytes: usize,
    /// Peer-to-peer message body (seed 003 `messageInstantSend`: 8196).
    pub p2p_message_max_bytes: usize,
    /// Channel message body (seed 003 `messageChannelSend`: 8 K).
    pub channel_message_max_bytes: usize,
    /// Attribute names (channel and user).
    pub attr_name_max_bytes: usize,
    /// Attribute values (channel and user: 8096).
    pub attr_value_max_bytes: usize,
    /// Invitation `extra` (8 K).
    pub invite_extra_max_bytes: usize,
    /// Largest WebSocket message the server accepts; a larger one closes the connection.
    pub max_frame_bytes: usize,
    /// Messages per second one user may send (p2p and channel together).
    pub user_messages_per_second: u32,
    /// Default messages per second for a whole channel (`_sendmsg_limit` overrides).
    pub channel_messages_per_second: u32,
    /// Default changes per second for each channel attribute (`_setattr_limit` overrides).
    pub attr_changes_per_second: u32,
    /// Members listed in a join reply / `channel_query_userlist` (the latest ones).
    pub channel_list_max: usize,
    /// Default and largest p2p message time-to-live in seconds (`v1:E:3600`).
    pub message_ttl_default_secs: u64,
    /// Largest TTL a sender may ask for.
    pub message_ttl_max_secs: u64,
    /// Stored messages per mailbox; further sends get `mailbox_full`.
    pub mailbox_max_messages: usize,
    /// Messages returned by one `user_getmsg`, whatever `max` asks.
    pub mailbox_page_max: usize,
    /// Messages stored in all mailboxes of one app together (unacknowledged, unexpired; 0: no
    /// cap). Further sends get `app_quota_exceeded`.
    pub app_mail_max_messages: usize,
    /// Bytes of stored messages in all mailboxes of one app together (0: no cap). Further
    /// sends get `app_quota_exceeded`.
    pub app_mail_max_bytes: usize,
    /// Messages one account may leave per hour for recipients who are offline (0: no cap).
    /// Further such sends get `rate_limited`; messages to online recipients do not count.
    pub offline_mail_per_sender_per_hour: u32,
    /// Default `_conn_timeout` (seconds without traffic before a connection is dropped).
    pub conn_timeout_default_secs: u64,
    /// Smallest `_conn_timeout`.
    pub conn_timeout_min_secs: u64,
    /// Largest `_conn_timeout`.
    pub conn_timeout_max_secs: u64,
    /// Default `_channel_ttl`: seconds channel state outlives its last member.
    pub channel_ttl_default_secs: u64,
    /// Largest `_channel_ttl` (larger values are clamped to it).
    pub channel_ttl_max_secs: u64,
    /// Largest `_auto_update_num` period in seconds (larger values are clamped to it).
    pub auto_update_max_secs: u64,
    /// Seconds a peer may stay offline before an invite with `_require_peer_online:0` fails.
    pub invite_offline_grace_secs: u64,
    /// Largest `_timeout` of an invite.
    pub invite_timeout_max_secs: u64,
    /// Seconds a connection may take from upgrade to a successful login.
    pub login_timeout_secs: u64,
    /// Seconds a new connection may take to finish its TLS handshake and send its HTTP
    /// request headers (slowloris).
    pub handshake_timeout_secs: u64,
    /// Connections open at once from one IP address (0: no cap). Over it, the WebSocket is
    /// closed with 1008 "too many connections from this address".
    pub connections_per_ip: usize,
    /// Logins per second from one IP address, with bursts of that many (0: no cap). Over it,
    /// the login fails (`too_many_logins`, code 201) and the connection closes with 1008.
    pub logins_per_ip_per_second: u32,
    /// Sessions logged in on this node at once (0: no cap). Over it, the login fails
    /// (`server_busy`, code 201) and the connection closes with 1013.
    pub max_sessions: usize,
    /// Bytes of memory the server process may have allocated before it refuses new sessions
    /// (`server_busy`, close 1013) and new stored state (offline mail, attributes:
    /// `server_busy`); existing sessions keep working and releasing state (0: no cap). The
    /// server binary sets it to three quarters of the machine's memory unless given.
    pub memory_max_bytes: u64,
    /// Channels one session may be in at once.
    pub channels_per_session: usize,
    /// Channel joins per second one session may make, after a burst of `channels_per_session`
    /// (a session rejoining all its channels at once); further joins get `rate_limited`.
    /// Leaving is never refused.
    pub joins_per_second: u32,
    /// Attributes per channel and per user.
    pub attrs_max: usize,
    /// Channels with attributes in one app (members or not, kept up to their `_channel_ttl`;
    /// 0: no cap). An attribute for one more channel gets `app_quota_exceeded`.
    pub app_channels_with_attrs_max: usize,
    /// Bytes of channel attribute names and values in one app (0: no cap). A change that
    /// would add bytes beyond it gets `app_quota_exceeded`.
    pub app_channel_attr_max_bytes: usize,
    /// Channel messages a channel keeps for history and recovery when its `_history`
    /// attribute is not set (0: no history unless a channel asks for it).
    pub channel_history_messages: u32,
    /// Largest `_history` (larger values are clamped to it), and the largest page of
    /// `channel_history`.
    pub channel_history_max_messages: u32,
    /// Seconds a channel message stays in its channel's history.
    pub channel_history_max_secs: u64,
    /// Bytes of message text one channel's history holds at most (the oldest go first).
    pub channel_history_max_bytes: usize,
    /// Seconds an empty channel without attributes keeps its state while it has kept
    /// messages (so members reconnecting together find what they missed).
    pub channel_history_keep_empty_secs: u64,
    /// Backend HTTP API requests per second one app may make (with bursts of that many; 0: no
    /// cap). Over it: HTTP 429 `rate_limited`.
    pub api_requests_per_second: u32,
    /// Seconds an account's attributes are kept after its last session ended; then they are
    /// deleted (a new session within that time keeps them).
    pub user_attrs_keep_secs: u64,
    /// Frames queued for one connection; a client that lets it fill is disconnected.
    pub outbound_queue: usize,
    /// Seconds a sent message id is remembered to drop resent duplicates (every id of the
    /// window: a sender's are bounded by `user_messages_per_second` × this).
    pub dedup_window_secs: u64,
    /// Seconds a mailbox's numbering (its latest version and what was acknowledged) is kept
    /// after its last message or poll; an empty mailbox left longer starts again at 1.
    pub mailbox_state_keep_secs: u64,
    /// Seconds an app without sessions, channel members or steps on a node stays in that
    /// node's list of apps before the node forgets it (on Redis: the apps its timer poller
    /// asks and a reaper reads, and on a Redis Cluster a subscription each; an app used again
    /// is registered again).
    pub idle_app_forget_secs: u64,
    /// Client: milliseconds between pings.
    pub ping_interval_ms: u64,
    /// Client: milliseconds without any frame from the server before the connection is
    /// considered dead (pong watchdog).
    pub pong_timeout_ms: u64,
    /// Client: milliseconds a WebSocket may stay CONNECTING.
    pub connect_timeout_ms: u64,
    /// Client: milliseconds from `login()` to `login_ret` before `onLoginFailed(201)`.
    pub client_login_timeout_ms: u64,
    /// Client: milliseconds before an unanswered request fails.
    pub request_timeout_ms: u64,
    /// Client: default `reconnect_count`.
    pub reconnect_count_default: u32,
    /// Client: default `reconnect_time` in milliseconds (the docs' 30 s).
    pub reconnect_time_default_ms: u64,
    /// Client: how long before the token's expiry `onTokenWillExpire` fires (ms).
    pub token_expiry_warning_ms: u64,
    /// Server: the longest a token may still be valid when it is presented, in seconds; a
    /// token that expires later is refused as invalid (0: no cap).
    pub token_lifetime_max_secs: u64,
    /// Server: whether a token with expiry 0 ("never expires") is accepted.
    pub token_never_expiring: bool,
    /// Events kept for one app's webhooks at most (not yet delivered to every endpoint;
    /// 0: no cap). Past it the oldest go, and are counted as dropped.
    pub app_events_max: usize,
    /// Bytes of events kept for one app's webhooks at most (0: no cap).
    pub app_events_max_bytes: usize,
    /// Seconds a dropped connection may take to come back before its account is reported
    /// offline to webhooks (a quick reconnect shows neither offline nor online).
    pub presence_grace_secs: u64,
    /// Events in one webhook delivery at most.
    pub webhook_batch_max_events: usize,
    /// Milliseconds a webhook batch waits for more events once its first is ready.
    pub webhook_batch_linger_ms: u64,
    /// Seconds a webhook endpoint has to answer a delivery.
    pub webhook_timeout_secs: u64,
    /// Seconds an event is retried for; then it is dropped and counted.
    pub webhook_retention_secs: u64,
    /// Longest wait between two tries of a delivery (the wait starts at 1 s and doubles).
    pub webhook_retry_max_secs: u64,
    /// opensig presence subscriptions: accounts one session may watch at once (RTM: 512).
    pub watch_peers_per_session: usize,
    /// Subscribe, unsubscribe and query calls one session may make per 5 seconds (RTM: 10).
    pub watch_calls_per_5s: u32,
    /// Watches (a session watching an account) one app may hold at once, on all nodes.
    pub app_watches_max: usize,
    /// Seconds an operator's console sign-in lasts (then the cookie is refused).
    pub console_session_secs: u64,
    /// Console sign-ins kept on one node at once (the oldest is signed out past it).
    pub console_sessions_max: usize,
    /// Failed console sign-ins of one name within `console_lockout_secs` that lock the name
    /// for `console_lockout_secs`.
    pub console_signin_failures: u32,
    /// Seconds of the failure window and of the lockout after it.
    pub console_lockout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            account_max_bytes: 128,
            channel_name_max_bytes: 128,
            p2p_message_max_bytes: 8196,
            channel_message_max_bytes: 8192,
            attr_name_max_bytes: 128,
            attr_value_max_bytes: 8096,
            invite_extra_max_bytes: 8192,
            max_frame_bytes: 64 * 1024,
            user_messages_per_second: 60,
            channel_messages_per_second: 200,
            attr_changes_per_second: 100,
            channel_list_max: 200,
            message_ttl_default_secs: 3600,
            message_ttl_max_secs: 7 * 24 * 3600,
            mailbox_max_messages: 10_000,
            mailbox_page_max: 100,
            app_mail_max_messages: 1_000_000,
            app_mail_max_bytes: 256 << 20,
            offline_mail_per_sender_per_hour: 1_000,
            conn_timeout_default_secs: 120,
            conn_timeout_min_secs: 20,
            conn_timeout_max_secs: 120,
            channel_ttl_default_secs: 7200,
            channel_ttl_max_secs: 7 * 24 * 3600,
            auto_update_max_secs: 24 * 3600,
            invite_offline_grace_secs: 20,
            invite_timeout_max_secs: 30,
            login_timeout_secs: 30,
            handshake_timeout_secs: 10,
            connections_per_ip: 1000,
            logins_per_ip_per_second: 100,
            max_sessions: 200_000,
            memory_max_bytes: 0,
            channels_per_session: 256,
            joins_per_second: 20,
            attrs_max: 1024,
            app_channels_with_attrs_max: 100_000,
            app_channel_attr_max_bytes: 256 << 20,
            user_attrs_keep_secs: 7 * 24 * 3600,
            api_requests_per_second: 200,
            channel_history_messages: 100,
            channel_history_max_messages: 1000,
            channel_history_max_secs: 3600,
            channel_history_max_bytes: 1 << 20,
            channel_history_keep_empty_secs: 120,
            outbound_queue: 4096,
            dedup_window_secs: 300,
            mailbox_state_keep_secs: 7 * 24 * 3600,
            idle_app_forget_secs: 60,
            ping_interval_ms: 10_000,
            pong_timeout_ms: 35_000,
            connect_timeout_ms: 6_000,
            client_login_timeout_ms: 30_000,
            request_timeout_ms: 30_000,
            reconnect_count_default: 10,
            reconnect_time_default_ms: 30_000,
            token_expiry_warning_ms: 30_000,
            token_lifetime_max_secs: 366 * 24 * 3600,
            token_never_expiring: true,
            app_events_max: 100_000,
            app_events_max_bytes: 64 << 20,
            presence_grace_secs: 5,
            webhook_batch_max_events: 20,
            webhook_batch_linger_ms: 250,
            webhook_timeout_secs: 5,
            webhook_retention_secs: 3600,
            webhook_retry_max_secs: 60,
            watch_peers_per_session: 512,
            watch_calls_per_5s: 10,
            app_watches_max: 1_000_000,
            console_session_secs: 8 * 3600,
            console_sessions_max: 64,
            console_signin_failures: 5,
            console_lockout_secs: 900,
        }
    }
}

/// The largest integer a JavaScript number holds exactly (2^53 - 1): mailbox versions and
/// sequence numbers stay at or below it.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// How far the numbers a member says it saw of a channel (`seen_seq`, `seen_msg`:
/// [`crate::frame::Seen`]) may move the channel's numbers on: more than any writes a failover
/// loses, and a member cannot move a channel's numbers out of what clients count exactly
/// ([`MAX_SAFE_INTEGER`]). The server's rule is `store::catch_up`.
pub const CATCH_UP_MAX: u64 = 100_000;

/// Characters allowed in accounts and channel names: visible, no whitespace, no controls.
fn is_visible(c: char) -> bool {
    !c.is_whitespace() && !c.is_control()
}

/// A name (account or channel) of 1..=max bytes of visible characters without spaces.
pub fn valid_name(name: &str, max_bytes: usize) -> bool {
    !name.is_empty() && name.len() <= max_bytes && name.chars().all(is_visible)
}

impl Limits {
    /// The account rule of seed 003: ≤ 128 bytes, visible, no spaces.
    pub fn check_account(&self, account: &str) -> Result<(), ErrorKind> {
        if account.len() > self.account_max_bytes {
            Err(ErrorKind::TooLarge)
        } else if valid_name(account, self.account_max_bytes) {
            Ok(())
        } else {
            Err(ErrorKind::InvalidArgs)
        }
    }

    /// Channel names follow the account rule (they travel in space-separated strings).
    pub fn check_channel(&self, name: &str) -> Result<(), ErrorKind> {
        if name.len() > self.channel_name_max_bytes {
            Err(ErrorKind::TooLarge)
        } else if valid_name(name, self.channel_name_max_bytes) {
            Ok(())
        } else {
            Err(ErrorKind::InvalidArgs)
        }
    }

    /// Attribute names: 1..=128 bytes, no spaces.
    pub fn check_attr_name(&self, name: &str) -> Result<(), ErrorKind> {
        if name.len() > self.attr_name_max_bytes {
            Err(ErrorKind::TooLarge)
        } else if valid_name(name, self.attr_name_max_bytes) {
            Ok(())
        } else {
            Err(ErrorKind::InvalidArgs)
        }
    }

    /// A size check: `Err(TooLarge)` when `len > max`.
    pub fn check_len(len: usize, max: usize) -> Result<(), ErrorKind> {
        if len > max {
            Err(ErrorKind::TooLarge)
        } else {
            Ok(())
        }
    }

    /// Clamp a requested `_conn_timeout` into 20–120 s (seed 002 `setAttr`).
    pub fn clamp_conn_timeout(&self, secs: i64) -> u64 {
        (secs.max(0) as u64).clamp(self.conn_timeout_min_secs, self.conn_timeout_max_secs)
    }
}

/// Parse a message flag such as `v1:E:3600` into a TTL in seconds, within the limits.
pub fn flag_ttl_secs(flag: &str, limits: &Limits) -> u64 {
    let mut parts = flag.split(':');
    let ttl = match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some("E"), Some(secs)) => secs.parse::<u64>().ok(),
        _ => None,
    };
    ttl.unwrap_or(limits.message_ttl_default_secs)
        .clamp(1, limits.message_ttl_max_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_rule() {
        let l = Limits::default();
        assert!(l.check_account("alice").is_ok());
        assert!(l.check_account("用户").is_ok());
        assert_eq!(l.check_account(""), Err(ErrorKind::InvalidArgs));
        assert_eq!(l.check_account("a b"), Err(ErrorKind::InvalidArgs));
        assert_eq!(l.check_account("a\tb"), Err(ErrorKind::InvalidArgs));
        assert_eq!(l.check_account("a\u{7}"), Err(ErrorKind::InvalidArgs));
        assert!(l.check_account(&"x".repeat(128)).is_ok());
        assert_eq!(l.check_account(&"x".repeat(129)), Err(ErrorKind::TooLarge));
    }

    #[test]
    fn flag_ttl() {
        let l = Limits::default();
        assert_eq!(flag_ttl_secs("v1:E:3600", &l), 3600);
        assert_eq!(flag_ttl_secs("v1:E:60", &l), 60);
        assert_eq!(flag_ttl_secs("nonsense", &l), 3600);
        assert_eq!(flag_ttl_secs("v1:E:0", &l), 1);
        assert_eq!(
            flag_ttl_secs("v1:E:99999999999", &l),
            l.message_ttl_max_secs
        );
    }

    #[test]
    fn conn_timeout_clamps() {
        let l = Limits::default();
        assert_eq!(l.clamp_conn_timeout(5), 20);
        assert_eq!(l.clamp_conn_timeout(60), 60);
        assert_eq!(l.clamp_conn_timeout(500), 120);
        assert_eq!(l.clamp_conn_timeout(-3), 20);
    }
}
