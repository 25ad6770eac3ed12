//! Every name that travels on the wire, in one place: frame events, call2 functions, notify
//! kinds, message types, special channels and built-in attributes (PROTOCOL.md §6–§14).

/// Frame events (the first element of a frame's JSON array).
pub mod event {
    /// Client → server: the login request.
    pub const LOGIN: &str = "login";
    /// Client → server: resume by session line (never sent by 1.4.0; refused by the server).
    pub const LINE_LOGIN: &str = "line_login";
    /// Client → server: capability flags (`{"binary":1}`).
    pub const SET_FLAG: &str = "set_flag";
    /// Client → server: keepalive with a counter.
    pub const PING: &str = "ping";
    /// Client → server: an RPC `[name, id, args]`.
    pub const CALL2: &str = "call2";
    /// Server → client: the login reply `[err, "<json>"]`.
    pub const LOGIN_RET: &str = "login_ret";
    /// Server → client: an RPC reply `[id, err, "<json>"]`.
    pub const CALL2_RET: &str = "call2-ret";
    /// Server → client: a pushed event.
    pub const NOTIFY: &str = "notify";
    /// Server → client: the keepalive answer.
    pub const PONG: &str = "pong";
    /// Server → client: the session is over (network/server reasons, `onLogout(102)`).
    pub const CLOSE: &str = "close";
    /// Server → client: the session is over, socket left open (`onLogout(102)`).
    pub const CLOSE_SILENT: &str = "_close";
    /// Server → client: another login of the same account took over (`onLogout(103)`).
    pub const KICK: &str = "kick";
    /// Server → client: a batch of frames `[[event, payload], …]`.
    pub const MULTI: &str = "multi";
}

/// opensig's own `call2` args fields.
pub mod field {
    /// With `channel_sendmsg` and a rejoin's `channel_join`: the latest `channel2` sequence
    /// the member saw of the channel (`frame::Seen`).
    pub const SEEN_SEQ: &str = "seen_seq";
    /// With them: the number of the latest channel message the member saw.
    pub const SEEN_MSG: &str = "seen_msg";
    /// With `user_getmsg`: the msg-v3 id of the message the client processed at version
    /// `ver_clear`, so that the server can tell that version was handed out again (a Redis
    /// primary died before its replica had the message that used it).
    pub const SEEN_ID: &str = "seen_id";
}

/// `call2` function names (PROTOCOL.md §9.3 and the `invoke` table of §14).
pub mod call {
    /// End the session.
    pub const USER_LOGOUT: &str = "user_logout";
    /// Mailbox poll, mode 0.
    pub const USER_GETMSG: &str = "user_getmsg";
    /// Mailbox poll, mode 1.
    pub const USER_GETMSG2: &str = "user_getmsg2";
    /// Send a peer-to-peer message.
    pub const USER_SENDMSG: &str = "user_sendmsg";
    /// Online status of an account.
    pub const USER_QUERY_USER_STATUS: &str = "user_query_user_status";
    /// Set one of the caller's attributes.
    pub const USER_SET_ATTR: &str = "user_set_attr";
    /// Read one attribute of an account.
    pub const USER_GET_ATTR: &str = "user_get_attr";
    /// Read all attributes of an account.
    pub const USER_GET_ATTR_ALL: &str = "user_get_attr_all";
    /// Join a channel.
    pub const CHANNEL_JOIN: &str = "channel_join";
    /// Leave a channel.
    pub const CHANNEL_LEAVE: &str = "channel_leave";
    /// Send a channel message (with `force`, without being a member).
    pub const CHANNEL_SENDMSG: &str = "channel_sendmsg";
    /// Set a channel attribute.
    pub const CHANNEL_SET_ATTR: &str = "channel_set_attr";
    /// Delete a channel attribute.
    pub const CHANNEL_DEL_ATTR: &str = "channel_del_attr";
    /// Delete all channel attributes.
    pub const CHANNEL_CLEAR_ATTR: &str = "channel_clear_attr";
    /// Number of members of a channel.
    pub const CHANNEL_QUERY_NUM: &str = "channel_query_num";
    /// Whether an account is a member of a channel.
    pub const CHANNEL_QUERY_USER_ISIN: &str = "channel_query_user_isin";
    /// The latest members of a channel.
    pub const CHANNEL_QUERY_USERLIST: &str = "channel_query_userlist";
    /// Up to `num` latest members of a channel (deprecated in the docs).
    pub const CHANNEL_QUERY_USERLIST_ALL: &str = "channel_query_userlist_all";
    /// Invite a peer into a channel.
    pub const VOIP_INVITE: &str = "voip_invite";
    /// Automatic "invite received" answer.
    pub const VOIP_INVITE_ACK: &str = "voip_invite_ack";
    /// Accept an invite.
    pub const VOIP_INVITE_ACCEPT: &str = "voip_invite_accept";
    /// Refuse an invite.
    pub const VOIP_INVITE_REFUSE: &str = "voip_invite_refuse";
    /// In-call message (DTMF).
    pub const VOIP_INVITE_MSG: &str = "voip_invite_msg";
    /// End a call or withdraw an invite.
    pub const VOIP_INVITE_BYE: &str = "voip_invite_bye";

    /// opensig: hand the session a fresh token for its later logins (`session.renewToken`);
    /// the server checks it belongs to the session's app and account.
    pub const USER_RENEW_TOKEN: &str = "user_renew_token";
    /// opensig: a channel's kept messages — those after a message number (`after`, what a
    /// client recovering after a reconnect asks), or the latest `max`.
    pub const CHANNEL_HISTORY: &str = "channel_history";
    /// opensig: watch accounts' presence (`subscribePeersOnlineStatus`): `accounts`; the
    /// reply carries their states now, `peer_status` notifies every change after.
    pub const USER_SUBSCRIBE_STATUS: &str = "user_subscribe_status";
    /// opensig: stop watching `accounts` (`unsubscribePeersOnlineStatus`).
    pub const USER_UNSUBSCRIBE_STATUS: &str = "user_unsubscribe_status";
    /// opensig: the states of `accounts` now, without watching (`queryPeersOnlineStatus`).
    pub const USER_QUERY_STATUS: &str = "user_query_status";

    /// Prefix that `invoke` requires on function names.
    pub const INVOKE_PREFIX: &str = "io.agora.signal.";

    /// Every call2 name the server understands.
    pub const ALL: &[&str] = &[
        USER_LOGOUT,
        USER_GETMSG,
        USER_GETMSG2,
        USER_SENDMSG,
        USER_QUERY_USER_STATUS,
        USER_SET_ATTR,
        USER_GET_ATTR,
        USER_GET_ATTR_ALL,
        CHANNEL_JOIN,
        CHANNEL_LEAVE,
        CHANNEL_SENDMSG,
        CHANNEL_SET_ATTR,
        CHANNEL_DEL_ATTR,
        CHANNEL_CLEAR_ATTR,
        CHANNEL_QUERY_NUM,
        CHANNEL_QUERY_USER_ISIN,
        CHANNEL_QUERY_USERLIST,
        CHANNEL_QUERY_USERLIST_ALL,
        VOIP_INVITE,
        VOIP_INVITE_ACK,
        VOIP_INVITE_ACCEPT,
        VOIP_INVITE_REFUSE,
        VOIP_INVITE_MSG,
        VOIP_INVITE_BYE,
        USER_RENEW_TOKEN,
        CHANNEL_HISTORY,
        USER_SUBSCRIBE_STATUS,
        USER_UNSUBSCRIBE_STATUS,
        USER_QUERY_STATUS,
    ];
}

/// Kinds of `notify` payloads (PROTOCOL.md §10.1).
pub mod notify {
    /// A channel event `["channel2", channel, seq, "<msg string>"]`.
    pub const CHANNEL2: &str = "channel2";
    /// "New mail up to version" `["msg", version]`.
    pub const MSG: &str = "msg";
    /// Inline mailbox delivery `["recvmsg", "[version, \"<msg string>\"]"]`.
    pub const RECVMSG: &str = "recvmsg";
    /// Inline delivery acknowledged by id `["recvmsg_by_msgid", "<msg-v3 string>"]`.
    pub const RECVMSG_BY_MSGID: &str = "recvmsg_by_msgid";
    /// opensig: watched accounts' new states `["peer_status", "<JSON text of {account: state}>"]`
    /// (states: [`super::peer_state`]), only to sessions that subscribed.
    pub const PEER_STATUS: &str = "peer_status";
    /// opensig: `["rejoin"]`, "this session's node may have missed channel events" (its
    /// subscriptions went with a Redis primary that died, or with its pub/sub connection):
    /// the client joins its channels again, with the numbers it saw, and fetches what it
    /// missed from their history.
    pub const REJOIN: &str = "rejoin";
}

/// opensig: the states of a watched account (RTM's `PeerOnlineState`).
pub mod peer_state {
    /// It has a session.
    pub const ONLINE: &str = "ONLINE";
    /// Its connection dropped less than `presence_grace_secs` ago: it may be back.
    pub const UNREACHABLE: &str = "UNREACHABLE";
    /// No session (logged out, kicked, or away past the grace period).
    pub const OFFLINE: &str = "OFFLINE";
}

/// Message types (field F4 of msg-v2, F5 of msg-v3).
pub mod msgtype {
    /// A peer-to-peer text message.
    pub const INSTANT: &str = "instant";
    /// A channel message.
    pub const CHANNEL_MSG: &str = "channel_msg";
    /// Someone joined the channel.
    pub const CHANNEL_USER_JOIN: &str = "channel_user_join";
    /// Someone left the channel.
    pub const CHANNEL_USER_LEAVE: &str = "channel_user_leave";
    /// A channel attribute changed.
    pub const CHANNEL_ATTR_UPDATE: &str = "channel_attr_update";
    /// Prefix shared by every call-signalling type.
    pub const VOIP_PREFIX: &str = "voip_";
    /// The invite failed (server → caller).
    pub const VOIP_INVITE_FAILED: &str = "voip_invite_failed";
    /// The channel event types a client delivers, each with the members of its content that
    /// its callback gets, in argument order (`""`: none). A driver that reads frames itself
    /// (the SDK's JS reader) is handed this table instead of spelling it again.
    pub const CHANNEL_EVENTS: [(&str, [&str; 3]); 4] = [
        (CHANNEL_MSG, ["account", "uid", "msg"]),
        (CHANNEL_USER_JOIN, ["account", "uid", ""]),
        (CHANNEL_USER_LEAVE, ["account", "uid", ""]),
        (CHANNEL_ATTR_UPDATE, ["name", "value", "type"]),
    ];
}

/// `type` values of `channel_attr_update`.
pub mod attr_change {
    /// An attribute was set.
    pub const UPDATE: &str = "update";
    /// An attribute was deleted.
    pub const DEL: &str = "del";
    /// All attributes were deleted.
    pub const CLEAR: &str = "clear";
}

/// Special channels (seed 003, `channelJoin`).
pub mod special {
    /// Members see every login/logout of the app as user join/leave.
    pub const USER_ONLINE: &str = "__agora_user_online";
    /// Members see every channel join/leave of the app.
    pub const CHANNEL_EVENT: &str = "__agora_channel_event";
    /// Prefix of reserved channel names.
    pub const PREFIX: &str = "__agora_";
}

/// Built-in attribute names (seed 003 `channelSetAttr`, seed 002 `setAttr`).
pub mod attr {
    /// User attribute: seconds without traffic before the connection is dropped (20–120).
    pub const CONN_TIMEOUT: &str = "_conn_timeout";
    /// Channel: 0 = no join/leave events.
    pub const USER_NOTIFICATION: &str = "_userNotification";
    /// Channel: seconds the channel's state outlives its last member.
    pub const CHANNEL_TTL: &str = "_channel_ttl";
    /// Channel: current member count, maintained by the server.
    pub const MEMBER_NUM: &str = "_member_num";
    /// Channel: push `_member_num` every N seconds when membership changed (0 = off).
    pub const AUTO_UPDATE_NUM: &str = "_auto_update_num";
    /// Channel: messages per second allowed in the whole channel.
    pub const SENDMSG_LIMIT: &str = "_sendmsg_limit";
    /// Channel: changes per second allowed for each attribute.
    pub const SETATTR_LIMIT: &str = "_setattr_limit";
    /// Channel (opensig): messages the channel keeps for history and recovery (0 = none).
    pub const HISTORY: &str = "_history";
}

/// The backend HTTP API (opensig).
pub mod api {
    /// Where it is served.
    pub const PREFIX: &str = "/api/v1";
    /// The account a backend credential is a SignalingToken of. It has a space, so no user
    /// can log in with it and a token service that only signs valid account names never
    /// hands it out by accident.
    pub const ACCOUNT: &str = "opensig api";
    /// The error of every request that is not let in (unknown app, wrong or expired
    /// credential, an app without a certificate called from another machine): HTTP 401.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// A path the API does not have: HTTP 404.
    pub const NOT_FOUND: &str = "not_found";
}

/// The operator console (opensig: README "Operator console"): where it is served, its
/// cookie and header, and the errors its own endpoints answer with.
pub mod console {
    /// Where it is served (the page; its JSON under `/console/api`, the backend API's
    /// routes under `/console/api/v1`).
    pub const PREFIX: &str = "/console";
    /// The sign-in cookie (`HttpOnly`, `SameSite=Strict`, `Path=/console`).
    pub const COOKIE: &str = "opensig_console";
    /// The header every state-changing request carries with the sign-in's CSRF token.
    pub const CSRF_HEADER: &str = "x-csrf-token";
    /// Wrong name or password, or no valid sign-in: HTTP 401.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// Too many failed sign-ins of this name: HTTP 429 until the lockout ends.
    pub const LOCKED: &str = "locked";
    /// A state-changing request without the sign-in's CSRF token, or from another origin:
    /// HTTP 403.
    pub const CSRF: &str = "csrf";
    /// A read-only operator asked to act: HTTP 403.
    pub const READ_ONLY: &str = "read_only";
}

/// The events an app's backend hears (opensig: webhooks, README "Webhooks"): each event's
/// `type`, and the reasons it carries.
pub mod domain {
    /// An account came online (not a reconnect within the grace period).
    pub const USER_ONLINE: &str = "user.online";
    /// An account went offline (`reason`: one of [`offline`]).
    pub const USER_OFFLINE: &str = "user.offline";
    /// A session was ended by someone else (`by`: one of [`kicked_by`]).
    pub const USER_KICKED: &str = "user.kicked";
    /// A channel got its first member.
    pub const CHANNEL_OCCUPIED: &str = "channel.occupied";
    /// A channel's last member left.
    pub const CHANNEL_VACATED: &str = "channel.vacated";
    /// An account joined a channel.
    pub const MEMBER_JOINED: &str = "member.joined";
    /// An account left a channel.
    pub const MEMBER_LEFT: &str = "member.left";
    /// A channel message was sent.
    pub const CHANNEL_MESSAGE: &str = "channel.message";
    /// A channel attribute was set, deleted or cleared.
    pub const CHANNEL_ATTR: &str = "channel.attr";
    /// A peer message was stored for an account that is offline.
    pub const MESSAGE_OFFLINE: &str = "message.offline";
    /// An invitation was sent (stored for the callee).
    pub const INVITE_SENT: &str = "invite.sent";
    /// The callee's client received an invitation.
    pub const INVITE_RECEIVED: &str = "invite.received";
    /// The callee accepted.
    pub const INVITE_ACCEPTED: &str = "invite.accepted";
    /// The callee refused.
    pub const INVITE_REFUSED: &str = "invite.refused";
    /// One side ended an invitation or a call.
    pub const INVITE_ENDED: &str = "invite.ended";
    /// The server ended an invitation (`reason`: one of [`invite_failed`], with its code).
    pub const INVITE_FAILED: &str = "invite.failed";
    /// A test delivery (`POST /api/v1/apps/{app}/webhooks/test`).
    pub const WEBHOOK_TEST: &str = "webhook.test";

    /// Every type an endpoint may ask for.
    pub const ALL: [&str; 17] = [
        USER_ONLINE,
        USER_OFFLINE,
        USER_KICKED,
        CHANNEL_OCCUPIED,
        CHANNEL_VACATED,
        MEMBER_JOINED,
        MEMBER_LEFT,
        CHANNEL_MESSAGE,
        CHANNEL_ATTR,
        MESSAGE_OFFLINE,
        INVITE_SENT,
        INVITE_RECEIVED,
        INVITE_ACCEPTED,
        INVITE_REFUSED,
        INVITE_ENDED,
        INVITE_FAILED,
        WEBHOOK_TEST,
    ];

    /// The header of every webhook delivery with its signature:
    /// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`.
    pub const SIGNATURE_HEADER: &str = "x-opensig-signature";
    /// The header naming a webhook delivery: its first event's id (the same on every retry).
    pub const DELIVERY_HEADER: &str = "x-opensig-delivery";

    /// Why an account went offline.
    pub mod offline {
        /// It logged out.
        pub const LOGOUT: &str = "logout";
        /// Its session was ended by a kick (the API, or its app removed).
        pub const KICKED: &str = "kicked";
        /// Its connection broke and it was not back within the grace period.
        pub const CONNECTION_LOST: &str = "connection_lost";
        /// Its node died; another node ended the session.
        pub const NODE_DIED: &str = "node_died";
        /// The server shut down.
        pub const SERVER_SHUTDOWN: &str = "server_shutdown";
    }

    /// Who ended a session.
    pub mod kicked_by {
        /// A login of the same account elsewhere.
        pub const LOGIN_ELSEWHERE: &str = "login_elsewhere";
        /// The backend API (`POST …/users/{account}/kick`).
        pub const API: &str = "api";
    }

    /// Why the server ended an invitation.
    pub mod invite_failed {
        /// The callee was offline (at once with `_require_peer_online`, or too long).
        pub const CALLEE_OFFLINE: &str = "callee_offline";
        /// Nobody answered within `_timeout`.
        pub const NO_ANSWER: &str = "no_answer";
        /// The caller went away and was not back within the grace period.
        pub const CALLER_GONE: &str = "caller_gone";
    }
}

/// Keys inside `voip_invite` `extra` that the server interprets.
pub mod invite_option {
    /// 1: fail at once when the peer is offline; 0: after 20 s offline.
    pub const REQUIRE_PEER_ONLINE: &str = "_require_peer_online";
    /// Seconds (0–30) before an unanswered invite fails and is destroyed.
    pub const TIMEOUT: &str = "_timeout";
}

/// Login reply error strings (PROTOCOL.md §7.4, §16).
pub mod login_error {
    /// The session was kicked → 207.
    pub const KICK: &str = "kick";
    /// The token has expired → 204.
    pub const TOKEN_EXPIRED: &str = "TokenErrorExpired";
    /// Any other token problem → 206 (every string starting with `TokenError`).
    pub const TOKEN_INVALID: &str = "TokenErrorInvalid";
    /// The app id is not configured on this server → 206.
    pub const TOKEN_UNKNOWN_APP: &str = "TokenErrorUnknownAppId";
    /// Prefix shared by the token errors.
    pub const TOKEN_PREFIX: &str = "TokenError";
    /// The account breaks the account rule → 209.
    pub const WRONG_ACCOUNT: &str = "wrong account format";
    /// Prefix that maps to 209.
    pub const WRONG_ACCOUNT_PREFIX: &str = "wrong account";
    /// The server is shutting down → 201.
    pub const UNAVAILABLE: &str = "server_unavailable";
    /// The node holds `max_sessions` already, or is short of memory → 201 (the same string
    /// as the request error).
    pub const SERVER_BUSY: &str = crate::codes::ErrorKind::ServerBusy.as_str();
    /// Over `logins_per_ip_per_second` → 201.
    pub const TOO_MANY_LOGINS: &str = "too_many_logins";
    /// A second `login` on a logged-in connection (the connection stays).
    pub const ALREADY_LOGGED_IN: &str = "already_logged_in";
    /// A login frame whose payload is not a login (fields of the wrong type) → 201.
    pub const MALFORMED: &str = "invalid_login";
}

/// WebSocket close frames the server sends (code, reason).
pub mod close {
    /// Normal end (`close`, `kick`, logout, shutdown).
    pub const NORMAL: (u16, &str) = (1000, "bye");
    /// More connections from this IP address than `connections_per_ip`.
    pub const TOO_MANY_CONNECTIONS: (u16, &str) = (1008, "too many connections from this address");
    /// More logins from this IP address than `logins_per_ip_per_second`.
    pub const TOO_MANY_LOGINS: (u16, &str) = (1008, "too many logins from this address");
    /// A login was refused (token, account, app).
    pub const LOGIN_REFUSED: (u16, &str) = (1008, "login refused");
    /// The node holds `max_sessions` already.
    pub const SERVER_BUSY: (u16, &str) = (1013, "server busy, try another node or later");
    /// No login within `login_timeout_secs`, or silent past the session's idle timeout.
    pub const TIMEOUT: (u16, &str) = (1000, "timeout");
    /// The client did not read: its queue of `outbound_queue` frames filled.
    pub const SLOW_CONSUMER: (u16, &str) = (1008, "slow consumer: outbound queue full");
    /// A message over `max_frame_bytes` (also once inflated).
    pub const BAD_FRAME: (u16, &str) = (1009, "frame too large or malformed");
    /// A frame that breaks the WebSocket protocol (reserved bits or opcodes, a fragmented or
    /// oversize control frame, a bad close frame…).
    pub const PROTOCOL_ERROR: (u16, &str) = (1002, "websocket protocol error");
    /// A text message that is not UTF-8.
    pub const INVALID_UTF8: (u16, &str) = (1007, "text is not UTF-8");
}

/// Fixed values of the login frame and replies.
pub mod fixed {
    /// `device` sent by web clients.
    pub const DEVICE_WEB: &str = "websdk";
    /// Token accepted when the app has no certificate.
    pub const NO_NEED_TOKEN: &str = "_no_need_token";
    /// The `flag` web clients put on every p2p message: version 1, expire after 3600 s.
    pub const DEFAULT_MSG_FLAG: &str = "v1:E:3600";
    /// `result` of a successful reply body.
    pub const RESULT_OK: &str = "ok";
    /// `result` of a failed reply body.
    pub const RESULT_FAILED: &str = "failed";
    /// The SDK version string the web SDK reports.
    pub const SDK_VERSION: &str = "1.4.0";
    /// The numeric SDK version the web SDK reports.
    pub const SDK_VERSION_INT: u32 = 1_010_400_000;
}
