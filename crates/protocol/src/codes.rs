//! The documented error codes (seed 003 list, plus 209) and the error strings the server puts
//! in `call2-ret` replies, each mapped to its code in exactly one place.

use crate::names::login_error;

/// A documented numeric code (seed 003 `onLoginFailed` list; 209 from the shipped 1.4.0 client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum Code {
    Success = 0,
    LogoutOther = 100,
    LogoutUser = 101,
    LogoutNet = 102,
    LogoutKicked = 103,
    LogoutPacket = 104,
    LogoutTokenExpired = 105,
    LogoutOldVersion = 106,
    LogoutTokenWrong = 107,
    LogoutAlreadyLogout = 108,
    LoginOther = 200,
    LoginNet = 201,
    LoginFailed = 202,
    LoginCancel = 203,
    LoginTokenExpired = 204,
    LoginOldVersion = 205,
    LoginTokenWrong = 206,
    LoginTokenKicked = 207,
    LoginAlreadyLogin = 208,
    /// Undocumented; the 1.4.0 client maps `wrong account…` to it.
    LoginWrongAccount = 209,
    JoinChannelOther = 300,
    SendMessageOther = 400,
    SendMessageTimeout = 401,
    QueryUserNumOther = 500,
    QueryUserNumTimeout = 501,
    QueryUserNumByUser = 502,
    LeaveChannelOther = 600,
    LeaveChannelKicked = 601,
    LeaveChannelByUser = 602,
    LeaveChannelLogout = 603,
    LeaveChannelDisconn = 604,
    InviteOther = 700,
    InviteReinvite = 701,
    InviteNet = 702,
    InvitePeerOffline = 703,
    InviteTimeout = 704,
    InviteCantRecv = 705,
    General = 1000,
    GeneralFailed = 1001,
    GeneralUnknown = 1002,
    GeneralNotLogin = 1003,
    GeneralWrongParam = 1004,
    GeneralLargeParam = 1005,
}

impl Code {
    /// The number apps see.
    pub const fn value(self) -> u32 {
        self as u32
    }

    /// The documented constant name (e.g. `INVITE_E_PEEROFFLINE`).
    pub const fn name(self) -> &'static str {
        use Code::*;
        match self {
            Success => "SUCCESS",
            LogoutOther => "LOGOUT_E_OTHER",
            LogoutUser => "LOGOUT_E_USER",
            LogoutNet => "LOGOUT_E_NET",
            LogoutKicked => "LOGOUT_E_KICKED",
            LogoutPacket => "LOGOUT_E_PACKET",
            LogoutTokenExpired => "LOGOUT_E_TOKENEXPIRED",
            LogoutOldVersion => "LOGOUT_E_OLDVERSION",
            LogoutTokenWrong => "LOGOUT_E_TOKENWRONG",
            LogoutAlreadyLogout => "LOGOUT_E_ALREADY_LOGOUT",
            LoginOther => "LOGIN_E_OTHER",
            LoginNet => "LOGIN_E_NET",
            LoginFailed => "LOGIN_E_FAILED",
            LoginCancel => "LOGIN_E_CANCEL",
            LoginTokenExpired => "LOGIN_E_TOKENEXPIRED",
            LoginOldVersion => "LOGIN_E_OLDVERSION",
            LoginTokenWrong => "LOGIN_E_TOKENWRONG",
            LoginTokenKicked => "LOGIN_E_TOKEN_KICKED",
            LoginAlreadyLogin => "LOGIN_E_ALREADY_LOGIN",
            LoginWrongAccount => "LOGIN_E_WRONG_ACCOUNT",
            JoinChannelOther => "JOINCHANNEL_E_OTHER",
            SendMessageOther => "SENDMESSAGE_E_OTHER",
            SendMessageTimeout => "SENDMESSAGE_E_TIMEOUT",
            QueryUserNumOther => "QUERYUSERNUM_E_OTHER",
            QueryUserNumTimeout => "QUERYUSERNUM_E_TIMEOUT",
            QueryUserNumByUser => "QUERYUSERNUM_E_BYUSER",
            LeaveChannelOther => "LEAVECHANNEL_E_OTHER",
            LeaveChannelKicked => "LEAVECHANNEL_E_KICKED",
            LeaveChannelByUser => "LEAVECHANNEL_E_BYUSER",
            LeaveChannelLogout => "LEAVECHANNEL_E_LOGOUT",
            LeaveChannelDisconn => "LEAVECHANNEL_E_DISCONN",
            InviteOther => "INVITE_E_OTHER",
            InviteReinvite => "INVITE_E_REINVITE",
            InviteNet => "INVITE_E_NET",
            InvitePeerOffline => "INVITE_E_PEEROFFLINE",
            InviteTimeout => "INVITE_E_TIMEOUT",
            InviteCantRecv => "INVITE_E_CANTRECV",
            General => "GENERAL_E",
            GeneralFailed => "GENERAL_E_FAILED",
            GeneralUnknown => "GENERAL_E_UNKNOWN",
            GeneralNotLogin => "GENERAL_E_NOT_LOGIN",
            GeneralWrongParam => "GENERAL_E_WRONG_PARAM",
            GeneralLargeParam => "GENERAL_E_LARGE_PARAM",
        }
    }

    /// Every documented code, in numeric order.
    pub const ALL: &'static [Code] = {
        use Code::*;
        &[
            Success,
            LogoutOther,
            LogoutUser,
            LogoutNet,
            LogoutKicked,
            LogoutPacket,
            LogoutTokenExpired,
            LogoutOldVersion,
            LogoutTokenWrong,
            LogoutAlreadyLogout,
            LoginOther,
            LoginNet,
            LoginFailed,
            LoginCancel,
            LoginTokenExpired,
            LoginOldVersion,
            LoginTokenWrong,
            LoginTokenKicked,
            LoginAlreadyLogin,
            LoginWrongAccount,
            JoinChannelOther,
            SendMessageOther,
            SendMessageTimeout,
            QueryUserNumOther,
            QueryUserNumTimeout,
            QueryUserNumByUser,
            LeaveChannelOther,
            LeaveChannelKicked,
            LeaveChannelByUser,
            LeaveChannelLogout,
            LeaveChannelDisconn,
            InviteOther,
            InviteReinvite,
            InviteNet,
            InvitePeerOffline,
            InviteTimeout,
            InviteCantRecv,
            General,
            GeneralFailed,
            GeneralUnknown,
            GeneralNotLogin,
            GeneralWrongParam,
            GeneralLargeParam,
        ]
    };

    /// The code with this number, if it is documented.
    pub fn from_value(value: u32) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.value() == value)
    }
}

/// What `onLoginFailed` receives for a `login_ret` error string, exactly as the 1.4.0 client
/// maps it (PROTOCOL.md §7.4).
pub fn login_failure_code(err: &str) -> Code {
    if err == login_error::KICK {
        Code::LoginTokenKicked
    } else if err == login_error::TOKEN_EXPIRED {
        Code::LoginTokenExpired
    } else if err.starts_with(login_error::TOKEN_PREFIX) {
        Code::LoginTokenWrong
    } else if err.starts_with(login_error::WRONG_ACCOUNT_PREFIX) {
        Code::LoginWrongAccount
    } else {
        Code::LoginNet
    }
}

/// A failure reported in the `err` field of `call2-ret` (or found locally by the SDK before
/// sending). The string is what every client sees (the original passes it to
/// `onChannelJoinFailed`, `onInviteFailed`, `invoke`'s callback); the code is what the opensig
/// SDK's `onError` and promise rejections carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A call2 arrived before a successful login.
    NotLoggedIn,
    /// `args.line` is not this connection's session line.
    InvalidLine,
    /// Missing field, wrong type, or a value that breaks a rule (spaces in an account…).
    InvalidArgs,
    /// A field is longer than its documented limit.
    TooLarge,
    /// The call2 name is not a known function.
    UnknownFunction,
    /// A message rate limit was exceeded (per user, per channel, per attribute).
    RateLimited,
    /// `channel_sendmsg` without being a member (and without `force`).
    NotInChannel,
    /// The peer is offline and the operation needs it online.
    PeerOffline,
    /// The recipient's mailbox is full.
    MailboxFull,
    /// The channel name is reserved (`__agora_*`) for this operation.
    ReservedChannel,
    /// The attribute is maintained by the server and cannot be changed.
    ReadOnlyAttr,
    /// Too many channels joined by one session.
    TooManyChannels,
    /// The shared state (e.g. Redis) is unreachable; retry later.
    Unavailable,
    /// An invitation to oneself.
    InvalidPeer,
    /// `invoke` with a function name outside `io.agora.signal.` (client-side).
    InvalidFunction,
    /// No reply within the request timeout (client-side).
    Timeout,
    /// The session ended (logout, kick, reconnect given up) before the reply (client-side).
    SessionEnded,
    /// A renewed token is not a valid token of this app and account.
    TokenInvalid,
    /// A renewed token has expired already.
    TokenExpired,
    /// A reply to, or a message within, an invitation that does not exist (never sent, ended
    /// already, or not between these two accounts).
    NoInvitation,
    /// The app's share of the server's storage of this kind is full (offline mail, channel
    /// state); other apps are not affected.
    AppQuota,
    /// The server is short of memory: it takes no new sessions or new stored state until
    /// some is released; existing sessions keep working.
    ServerBusy,
    /// opensig: a session would watch more accounts than `watch_peers_per_session` (RTM's
    /// `OVERFLOW`), or the app more than `app_watches_max`.
    TooManyPeers,
}

impl ErrorKind {
    /// The wire string.
    pub const fn as_str(self) -> &'static str {
        use ErrorKind::*;
        match self {
            NotLoggedIn => "not_logged_in",
            InvalidLine => "invalid_line",
            InvalidArgs => "invalid_args",
            TooLarge => "too_large",
            UnknownFunction => "unknown_function",
            RateLimited => "rate_limited",
            NotInChannel => "not_in_channel",
            PeerOffline => "peer_offline",
            MailboxFull => "mailbox_full",
            ReservedChannel => "reserved_channel",
            ReadOnlyAttr => "read_only_attr",
            TooManyChannels => "too_many_channels",
            Unavailable => "unavailable",
            InvalidPeer => "invalid_peer",
            InvalidFunction => "invalid_function",
            Timeout => "timeout",
            SessionEnded => "session_ended",
            TokenInvalid => "token_invalid",
            TokenExpired => "token_expired",
            NoInvitation => "no_invitation",
            AppQuota => "app_quota_exceeded",
            ServerBusy => "server_busy",
            TooManyPeers => "too_many_peers",
        }
    }

    /// The HTTP status the backend API answers this failure with (its body carries
    /// `as_str` and `code`).
    pub const fn http_status(self) -> u16 {
        use ErrorKind::*;
        match self {
            RateLimited => 429,
            MailboxFull | AppQuota => 409,
            NotInChannel | PeerOffline | NoInvitation => 404,
            Unavailable | ServerBusy | Timeout => 503,
            NotLoggedIn | InvalidLine | SessionEnded | TokenInvalid | TokenExpired => 401,
            InvalidArgs | TooLarge | UnknownFunction | ReservedChannel | ReadOnlyAttr
            | TooManyChannels | InvalidPeer | InvalidFunction | TooManyPeers => 400,
        }
    }

    /// The documented code for this failure.
    pub const fn code(self) -> Code {
        use ErrorKind::*;
        match self {
            NotLoggedIn | InvalidLine | SessionEnded => Code::GeneralNotLogin,
            InvalidArgs | ReservedChannel | ReadOnlyAttr | InvalidPeer => Code::GeneralWrongParam,
            InvalidFunction => Code::GeneralUnknown,
            Timeout => Code::GeneralFailed,
            TooLarge => Code::GeneralLargeParam,
            UnknownFunction => Code::GeneralUnknown,
            RateLimited | MailboxFull | TooManyChannels | AppQuota | ServerBusy | TooManyPeers => {
                Code::GeneralFailed
            }
            NotInChannel => Code::SendMessageOther,
            PeerOffline => Code::InvitePeerOffline,
            Unavailable => Code::General,
            TokenInvalid => Code::LoginTokenWrong,
            TokenExpired => Code::LoginTokenExpired,
            NoInvitation => Code::InviteOther,
        }
    }

    /// Every server error.
    pub const ALL: &'static [ErrorKind] = {
        use ErrorKind::*;
        &[
            NotLoggedIn,
            InvalidLine,
            InvalidArgs,
            TooLarge,
            UnknownFunction,
            RateLimited,
            NotInChannel,
            PeerOffline,
            MailboxFull,
            ReservedChannel,
            ReadOnlyAttr,
            TooManyChannels,
            Unavailable,
            InvalidPeer,
            InvalidFunction,
            Timeout,
            SessionEnded,
            TokenInvalid,
            TokenExpired,
            NoInvitation,
            AppQuota,
            ServerBusy,
            TooManyPeers,
        ]
    };

    /// Parse a wire string.
    pub fn from_wire(s: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.iter().copied().find(|e| e.as_str() == s)
    }
}

/// The code a client reports for any `call2-ret` error string (unknown strings → `GENERAL_E`).
pub fn call_error_code(err: &str) -> Code {
    ErrorKind::from_wire(err).map_or(Code::General, ErrorKind::code)
}

/// A human-readable sentence for a code, for logs and UIs.
pub fn describe(code: Code) -> &'static str {
    use Code::*;
    match code {
        Success => "success",
        LogoutUser => "logged out by the user",
        LogoutNet => "connection to the server lost",
        LogoutKicked => "logged in somewhere else",
        LogoutOther | LogoutPacket | LogoutOldVersion | LogoutAlreadyLogout => "logged out",
        LogoutTokenExpired => "token expired",
        LogoutTokenWrong => "token rejected",
        LoginNet => "could not reach the server",
        LoginTokenExpired => "the token has expired",
        LoginTokenWrong => "the token or app id was rejected",
        LoginTokenKicked => "kicked during login",
        LoginWrongAccount => "the account name is not allowed (1-128 visible bytes, no spaces)",
        LoginOther | LoginFailed | LoginOldVersion => "login failed",
        LoginCancel => "login cancelled",
        LoginAlreadyLogin => "already logged in",
        JoinChannelOther => "could not join the channel",
        SendMessageOther => "message not sent",
        SendMessageTimeout => "message timed out",
        QueryUserNumOther | QueryUserNumTimeout | QueryUserNumByUser => "query failed",
        LeaveChannelOther | LeaveChannelKicked | LeaveChannelByUser | LeaveChannelLogout
        | LeaveChannelDisconn => "left the channel",
        InviteOther => "the invitation failed",
        InviteReinvite => "invited again",
        InviteNet => "network failure during the invitation",
        InvitePeerOffline => "the peer is offline",
        InviteTimeout => "nobody answered in time",
        InviteCantRecv => "the peer cannot receive invitations",
        General => "server error",
        GeneralFailed => "operation refused (rate limit or capacity)",
        GeneralUnknown => "unknown function",
        GeneralNotLogin => "not logged in",
        GeneralWrongParam => "invalid parameter",
        GeneralLargeParam => "parameter too large",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_strings_map_like_the_original() {
        assert_eq!(login_failure_code("kick"), Code::LoginTokenKicked);
        assert_eq!(
            login_failure_code("TokenErrorExpired"),
            Code::LoginTokenExpired
        );
        assert_eq!(
            login_failure_code("TokenErrorInvalid"),
            Code::LoginTokenWrong
        );
        assert_eq!(
            login_failure_code("TokenErrorUnknownAppId"),
            Code::LoginTokenWrong
        );
        assert_eq!(
            login_failure_code("wrong account format"),
            Code::LoginWrongAccount
        );
        assert_eq!(login_failure_code("whatever"), Code::LoginNet);
        assert_eq!(login_failure_code(""), Code::LoginNet);
    }

    #[test]
    fn codes_round_trip_and_have_names() {
        for c in Code::ALL {
            assert_eq!(Code::from_value(c.value()), Some(*c));
            assert!(!c.name().is_empty());
            assert!(!describe(*c).is_empty());
        }
        assert_eq!(Code::InvitePeerOffline.value(), 703);
        assert_eq!(Code::GeneralLargeParam.value(), 1005);
        assert_eq!(Code::from_value(999), None);
    }

    #[test]
    fn server_errors_round_trip() {
        for e in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_wire(e.as_str()), Some(*e));
            assert!(!e.as_str().contains(' '));
        }
        assert_eq!(call_error_code("too_large"), Code::GeneralLargeParam);
        assert_eq!(call_error_code("something new"), Code::General);
    }
}
