//! Typed frames (serde) for the server side: decoding what clients send, and building what the
//! server sends. Payloads that the protocol carries as *JSON text inside JSON* (`login_ret[1]`,
//! `call2-ret[2]`, the `recvmsg` argument) are produced only by [`json_text`].

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{value::RawValue, Map, Value};

use crate::codes::ErrorKind;
use crate::names::{call, event, fixed, notify};

/// JSON text of `value`, to be embedded as a JSON *string* (the protocol's double encoding).
pub fn json_text<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("serialising plain JSON data cannot fail")
}

/// Why a client frame could not be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    /// Not valid JSON text (or not UTF-8).
    #[error("frame is not valid JSON")]
    NotJson,
    /// Valid JSON but not `[event, payload]` with a string event.
    #[error("frame is not an [event, payload] array")]
    NotAFrame,
    /// A known event with a payload of the wrong shape.
    #[error("malformed {0} payload")]
    BadPayload(&'static str),
}

/// The `login` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Login {
    /// App id (`vid`).
    pub vid: String,
    /// Account; non-strings are converted with JSON text as the original client does.
    pub account: String,
    /// Token as sent.
    pub token: String,
    /// `device` (`websdk` for web clients).
    pub device: String,
}

/// A `call2` request: name, id (number or string, echoed back), and its args (JSON text).
#[derive(Debug, Clone)]
pub struct Call2 {
    /// Function name.
    pub name: String,
    /// Request id, echoed verbatim in the reply.
    pub id: Value,
    /// Arguments as sent (decoded by [`Call2::decode`]).
    pub args: Box<RawValue>,
}

impl PartialEq for Call2 {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.id == other.id && self.args.get() == other.args.get()
    }
}

/// A call2's arguments decoded: the session `line` they carry, and the typed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// `args.line` when it is a string.
    pub line: Option<String>,
    /// The request, or why it is not usable.
    pub request: Result<Request, ErrorKind>,
}

/// opensig: the numbers of a channel a member has seen — its latest event's sequence
/// (`channel2`'s third element) and its latest message's number — sent with a channel message
/// ([`crate::names::field`]) and with a rejoin, so that the channel's next numbers pass them
/// even when the server lost the writes that used them (a Redis primary that died before its
/// replica had them). 0: none seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// The latest event's sequence.
    pub seq: u64,
    /// The latest message's number.
    pub msg: u64,
}

impl Call2 {
    /// Decode the args: a typed, borrowing decode for well-formed input (what clients send),
    /// falling back to the lenient one (numbers for names, duplicate keys, …).
    /// `Err(InvalidArgs)` when the args are not an object.
    pub fn decode(&self) -> Result<Decoded, ErrorKind> {
        let text = self.args.get();
        if !text.trim_start().starts_with('{') {
            return Err(ErrorKind::InvalidArgs);
        }
        if let Ok(fast) = serde_json::from_str::<FastArgs<'_>>(text) {
            if let Some(request) = fast.request(&self.name) {
                return Ok(Decoded {
                    line: fast.line.map(Cow::into_owned),
                    request,
                });
            }
        }
        let map: Map<String, Value> =
            serde_json::from_str(text).map_err(|_| ErrorKind::InvalidArgs)?;
        Ok(Decoded {
            line: map.get("line").and_then(Value::as_str).map(str::to_owned),
            request: Request::parse(&self.name, &map),
        })
    }
}

/// Every args field of every call2, as the common case sends them: strings as strings.
#[derive(Deserialize, Default)]
#[serde(default)]
struct FastArgs<'a> {
    #[serde(borrow)]
    line: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    peer: Option<Cow<'a, str>>,
    #[serde(borrow)]
    account: Option<Cow<'a, str>>,
    #[serde(borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "channelName")]
    channel_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    msg: Option<Cow<'a, str>>,
    #[serde(borrow)]
    value: Option<Cow<'a, str>>,
    #[serde(borrow)]
    flag: Option<Cow<'a, str>>,
    #[serde(borrow)]
    t: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "messageID")]
    message_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "msgID")]
    msg_id: Option<Cow<'a, str>>,
    ver_clear: Option<u64>,
    max: Option<u64>,
    num: Option<u64>,
    force: Option<bool>,
    /// (`names::field::SEEN_SEQ`, `SEEN_MSG`, `SEEN_ID`)
    seen_seq: Option<u64>,
    seen_msg: Option<u64>,
    #[serde(borrow)]
    seen_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    extra: Option<&'a RawValue>,
}

fn owned(v: &Option<Cow<'_, str>>) -> Option<String> {
    v.as_deref().map(str::to_owned)
}

impl FastArgs<'_> {
    fn seen(&self) -> Seen {
        Seen {
            seq: self.seen_seq.unwrap_or(0),
            msg: self.seen_msg.unwrap_or(0),
        }
    }

    /// The typed request; `None` when something needs the lenient path (a required field
    /// absent or of another type), so that path gives the exact error.
    fn request(&self, name: &str) -> Option<Result<Request, ErrorKind>> {
        let req = |v: &Option<Cow<'_, str>>| owned(v);
        Some(Ok(match name {
            call::USER_LOGOUT => Request::UserLogout,
            call::USER_GETMSG => Request::UserGetmsg {
                ver_clear: self.ver_clear.unwrap_or(0),
                max: self.max.unwrap_or(30),
                seen_id: owned(&self.seen_id),
            },
            call::USER_SENDMSG => Request::UserSendmsg {
                peer: req(&self.peer)?,
                flag: owned(&self.flag).unwrap_or_else(|| fixed::DEFAULT_MSG_FLAG.into()),
                kind: owned(&self.t).unwrap_or_else(|| crate::names::msgtype::INSTANT.into()),
                content: owned(&self.content).unwrap_or_default(),
                message_id: owned(&self.message_id),
            },
            call::USER_QUERY_USER_STATUS => Request::UserQueryUserStatus {
                account: req(&self.account)?,
            },
            call::CHANNEL_JOIN => Request::ChannelJoin {
                name: req(&self.name)?,
                seen: self.seen(),
            },
            call::CHANNEL_LEAVE => Request::ChannelLeave {
                name: req(&self.name)?,
            },
            call::CHANNEL_SENDMSG => Request::ChannelSendmsg {
                name: req(&self.name)?,
                msg: owned(&self.msg).unwrap_or_default(),
                msg_id: owned(&self.msg_id),
                force: self.force.unwrap_or(false),
                seen: self.seen(),
            },
            call::CHANNEL_SET_ATTR => Request::ChannelSetAttr {
                channel: req(&self.channel)?,
                name: req(&self.name)?,
                value: owned(&self.value).unwrap_or_default(),
            },
            other => match VoipKind::from_name(other) {
                Some(kind) => Request::Voip {
                    kind,
                    channel: req(&self.channel_name)?,
                    peer: req(&self.peer)?,
                    extra: match self.extra {
                        Some(raw) => serde_json::from_str(raw.get()).ok()?,
                        None => Value::String(String::new()),
                    },
                    message_id: owned(&self.message_id),
                },
                // the rarer calls take the general path
                None => return None,
            },
        }))
    }
}

/// A decoded client frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// `["login", {...}]`.
    Login(Login),
    /// `["line_login", {...}]` (never sent by 1.4.0).
    LineLogin,
    /// `["set_flag", {"binary": 0|1}]`.
    SetFlag {
        /// Whether the client accepts zlib binary frames.
        binary: bool,
    },
    /// `["ping", n]`.
    Ping(Value),
    /// `["call2", [name, id, args]]`.
    Call2(Call2),
    /// Any other event (ignored by the server).
    Unknown(String),
}

impl ClientFrame {
    /// Decode one text frame.
    pub fn decode(text: &str) -> Result<ClientFrame, DecodeError> {
        let (name, payload): (String, Box<RawValue>) =
            serde_json::from_str(text).map_err(|_| {
                match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                    Ok(_) => DecodeError::NotAFrame,
                    Err(_) => DecodeError::NotJson,
                }
            })?;
        let bad = |ev: &'static str| DecodeError::BadPayload(ev);
        Ok(match name.as_str() {
            event::LOGIN => {
                let v: Map<String, Value> =
                    serde_json::from_str(payload.get()).map_err(|_| bad(event::LOGIN))?;
                let text_of = |k: &str| match v.get(k) {
                    None | Some(Value::Null) => Some(String::new()),
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    Some(_) => None,
                };
                let account = match v.get("account") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                ClientFrame::Login(Login {
                    vid: text_of("vid").ok_or(bad(event::LOGIN))?,
                    account,
                    token: text_of("token").ok_or(bad(event::LOGIN))?,
                    device: text_of("device").unwrap_or_default(),
                })
            }
            event::LINE_LOGIN => ClientFrame::LineLogin,
            event::SET_FLAG => {
                let v: Value =
                    serde_json::from_str(payload.get()).map_err(|_| bad(event::SET_FLAG))?;
                let binary = match v.get("binary") {
                    Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0) != 0.0,
                    Some(Value::Bool(b)) => *b,
                    _ => false,
                };
                ClientFrame::SetFlag { binary }
            }
            event::PING => {
                let v: Value = serde_json::from_str(payload.get()).map_err(|_| bad(event::PING))?;
                ClientFrame::Ping(v)
            }
            event::CALL2 => {
                let (name, id, args): (String, Value, Box<RawValue>) =
                    serde_json::from_str(payload.get()).map_err(|_| bad(event::CALL2))?;
                if !(id.is_number() || id.is_string()) {
                    return Err(bad(event::CALL2));
                }
                ClientFrame::Call2(Call2 { name, id, args })
            }
            _ => ClientFrame::Unknown(name),
        })
    }
}

/// Kinds of call-signalling relays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VoipKind {
    /// `voip_invite`
    Invite,
    /// `voip_invite_ack`
    Ack,
    /// `voip_invite_accept`
    Accept,
    /// `voip_invite_refuse`
    Refuse,
    /// `voip_invite_msg`
    Msg,
    /// `voip_invite_bye`
    Bye,
}

impl VoipKind {
    /// The call2 name, which is also the message type delivered to the peer.
    pub const fn name(self) -> &'static str {
        match self {
            VoipKind::Invite => call::VOIP_INVITE,
            VoipKind::Ack => call::VOIP_INVITE_ACK,
            VoipKind::Accept => call::VOIP_INVITE_ACCEPT,
            VoipKind::Refuse => call::VOIP_INVITE_REFUSE,
            VoipKind::Msg => call::VOIP_INVITE_MSG,
            VoipKind::Bye => call::VOIP_INVITE_BYE,
        }
    }

    /// The kind for a call2 name.
    pub fn from_name(name: &str) -> Option<VoipKind> {
        Some(match name {
            call::VOIP_INVITE => VoipKind::Invite,
            call::VOIP_INVITE_ACK => VoipKind::Ack,
            call::VOIP_INVITE_ACCEPT => VoipKind::Accept,
            call::VOIP_INVITE_REFUSE => VoipKind::Refuse,
            call::VOIP_INVITE_MSG => VoipKind::Msg,
            call::VOIP_INVITE_BYE => VoipKind::Bye,
            _ => return None,
        })
    }
}

/// A call2 request with its arguments checked for presence and type (not yet for limits).
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Request {
    UserLogout,
    UserGetmsg {
        ver_clear: u64,
        max: u64,
        /// opensig: the id of the message processed at `ver_clear` (`names::field::SEEN_ID`).
        seen_id: Option<String>,
    },
    UserGetmsg2 {
        clear_msgs: Vec<String>,
        max: u64,
    },
    UserSendmsg {
        peer: String,
        flag: String,
        kind: String,
        content: String,
        message_id: Option<String>,
    },
    UserQueryUserStatus {
        account: String,
    },
    UserSetAttr {
        name: String,
        value: String,
    },
    UserGetAttr {
        account: String,
        name: String,
    },
    UserGetAttrAll {
        account: String,
    },
    UserRenewToken {
        token: String,
    },
    /// opensig: watch (`on`) or stop watching accounts' presence.
    UserWatchStatus {
        accounts: Vec<String>,
        on: bool,
    },
    /// opensig: the presence states of accounts.
    UserQueryStatus {
        accounts: Vec<String>,
    },
    ChannelJoin {
        name: String,
        /// opensig: the channel's numbers the member saw (a rejoin after a reconnect).
        seen: Seen,
    },
    ChannelLeave {
        name: String,
    },
    ChannelSendmsg {
        name: String,
        msg: String,
        msg_id: Option<String>,
        force: bool,
        /// opensig: the channel's numbers the sender saw.
        seen: Seen,
    },
    ChannelSetAttr {
        channel: String,
        name: String,
        value: String,
    },
    ChannelDelAttr {
        channel: String,
        name: String,
    },
    ChannelClearAttr {
        channel: String,
    },
    ChannelQueryNum {
        name: String,
    },
    ChannelQueryUserIsin {
        name: String,
        account: String,
    },
    ChannelQueryUserlist {
        name: String,
        num: Option<u64>,
    },
    ChannelHistory {
        name: String,
        after: Option<u64>,
        max: Option<u64>,
    },
    Voip {
        kind: VoipKind,
        channel: String,
        peer: String,
        extra: Value,
        message_id: Option<String>,
    },
}

/// Text of a name: strings as they are, numbers in JSON form (the original client turns a
/// non-string account or channel into JSON text).
fn name_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Text of a scalar: strings as they are, numbers and booleans in JSON form.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Non-negative integer from a number or a numeric string.
fn uint(v: &Value) -> Option<u64> {
    // JavaScript clients send every number as a double: integral values up to 2^53 are exact,
    // anything larger (1e300, 2^64) is not a count or a version but garbage.
    const MAX_SAFE: f64 = crate::limits::MAX_SAFE_INTEGER as f64;
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| (0.0..=MAX_SAFE).contains(f) && f.fract() == 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Field accessors that turn absence or a wrong type into `invalid_args`.
struct Args<'a>(&'a Map<String, Value>);

impl Args<'_> {
    /// A list of names (each a string, or a number read as its text).
    fn texts(&self, key: &str) -> Result<Vec<String>, ErrorKind> {
        match self.0.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(scalar_text)
                .collect::<Option<Vec<_>>>()
                .ok_or(ErrorKind::InvalidArgs),
            _ => Err(ErrorKind::InvalidArgs),
        }
    }

    fn text(&self, key: &str) -> Result<String, ErrorKind> {
        self.0
            .get(key)
            .and_then(name_text)
            .ok_or(ErrorKind::InvalidArgs)
    }
    fn text_or(&self, key: &str, default: &str) -> Result<String, ErrorKind> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(default.to_owned()),
            Some(v) => scalar_text(v).ok_or(ErrorKind::InvalidArgs),
        }
    }
    fn opt_text(&self, key: &str) -> Result<Option<String>, ErrorKind> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => scalar_text(v).map(Some).ok_or(ErrorKind::InvalidArgs),
        }
    }
    fn uint_or(&self, key: &str, default: u64) -> Result<u64, ErrorKind> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => uint(v).ok_or(ErrorKind::InvalidArgs),
        }
    }
    fn opt_uint(&self, key: &str) -> Result<Option<u64>, ErrorKind> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => uint(v).map(Some).ok_or(ErrorKind::InvalidArgs),
        }
    }
    fn seen(&self) -> Result<Seen, ErrorKind> {
        Ok(Seen {
            seq: self.uint_or(crate::names::field::SEEN_SEQ, 0)?,
            msg: self.uint_or(crate::names::field::SEEN_MSG, 0)?,
        })
    }
    fn flag(&self, key: &str) -> Result<bool, ErrorKind> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(0.0) != 0.0),
            Some(_) => Err(ErrorKind::InvalidArgs),
        }
    }
}

impl Request {
    /// Check a call2's name and argument types. `Err(UnknownFunction)` for names the server
    /// does not implement; `Err(InvalidArgs)` for a missing field or a wrong type.
    pub fn parse(name: &str, args: &Map<String, Value>) -> Result<Request, ErrorKind> {
        let a = Args(args);
        Ok(match name {
            call::USER_LOGOUT => Request::UserLogout,
            call::USER_GETMSG => Request::UserGetmsg {
                ver_clear: a.uint_or("ver_clear", 0)?,
                max: a.uint_or("max", 30)?,
                seen_id: a.opt_text(crate::names::field::SEEN_ID)?,
            },
            call::USER_GETMSG2 => Request::UserGetmsg2 {
                clear_msgs: match args.get("clear_msgs") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(ids)) => ids
                        .iter()
                        .map(scalar_text)
                        .collect::<Option<Vec<_>>>()
                        .ok_or(ErrorKind::InvalidArgs)?,
                    Some(_) => return Err(ErrorKind::InvalidArgs),
                },
                max: a.uint_or("max", 30)?,
            },
            call::USER_SENDMSG => Request::UserSendmsg {
                peer: a.text("peer")?,
                flag: a.text_or("flag", fixed::DEFAULT_MSG_FLAG)?,
                kind: a.text_or("t", crate::names::msgtype::INSTANT)?,
                content: a.text_or("content", "")?,
                message_id: a.opt_text("messageID")?,
            },
            call::USER_QUERY_USER_STATUS => Request::UserQueryUserStatus {
                account: a.text("account")?,
            },
            call::USER_SET_ATTR => Request::UserSetAttr {
                name: a.text("name")?,
                value: a.text_or("value", "")?,
            },
            call::USER_GET_ATTR => Request::UserGetAttr {
                account: a.text("account")?,
                name: a.text("name")?,
            },
            call::USER_GET_ATTR_ALL => Request::UserGetAttrAll {
                account: a.text("account")?,
            },
            call::USER_RENEW_TOKEN => Request::UserRenewToken {
                token: a.text_or("token", "")?,
            },
            call::USER_SUBSCRIBE_STATUS | call::USER_UNSUBSCRIBE_STATUS => {
                Request::UserWatchStatus {
                    accounts: a.texts("accounts")?,
                    on: name == call::USER_SUBSCRIBE_STATUS,
                }
            }
            call::USER_QUERY_STATUS => Request::UserQueryStatus {
                accounts: a.texts("accounts")?,
            },
            call::CHANNEL_JOIN => Request::ChannelJoin {
                name: a.text("name")?,
                seen: a.seen()?,
            },
            call::CHANNEL_LEAVE => Request::ChannelLeave {
                name: a.text("name")?,
            },
            call::CHANNEL_SENDMSG => Request::ChannelSendmsg {
                name: a.text("name")?,
                msg: a.text_or("msg", "")?,
                msg_id: a.opt_text("msgID")?,
                force: a.flag("force")?,
                seen: a.seen()?,
            },
            call::CHANNEL_SET_ATTR => Request::ChannelSetAttr {
                channel: a.text("channel")?,
                name: a.text("name")?,
                value: a.text_or("value", "")?,
            },
            call::CHANNEL_DEL_ATTR => Request::ChannelDelAttr {
                channel: a.text("channel")?,
                name: a.text("name")?,
            },
            call::CHANNEL_CLEAR_ATTR => Request::ChannelClearAttr {
                channel: a.text("channel")?,
            },
            call::CHANNEL_QUERY_NUM => Request::ChannelQueryNum {
                name: a.text("name")?,
            },
            call::CHANNEL_QUERY_USER_ISIN => Request::ChannelQueryUserIsin {
                name: a.text("name")?,
                account: a.text("account")?,
            },
            call::CHANNEL_HISTORY => Request::ChannelHistory {
                name: a.text("name")?,
                after: a.opt_uint("after")?,
                max: a.opt_uint("max")?,
            },
            call::CHANNEL_QUERY_USERLIST => Request::ChannelQueryUserlist {
                name: a.text("name")?,
                num: None,
            },
            call::CHANNEL_QUERY_USERLIST_ALL => Request::ChannelQueryUserlist {
                name: a.text("name")?,
                num: Some(a.uint_or("num", 1_000_000)?),
            },
            other => match VoipKind::from_name(other) {
                Some(kind) => Request::Voip {
                    kind,
                    channel: a.text("channelName")?,
                    peer: a.text("peer")?,
                    // null counts as absent (as in the typed decoder)
                    extra: args
                        .get("extra")
                        .filter(|v| !v.is_null())
                        .cloned()
                        .unwrap_or(Value::String(String::new())),
                    message_id: a.opt_text("messageID")?,
                },
                None => return Err(ErrorKind::UnknownFunction),
            },
        })
    }
}

/// A frame with one number still to write in (a channel event's sequence, a mailbox
/// message's version): `head`, the number in decimal, then `tail`. Whoever assigns the number
/// (a store, atomically with the change) fills it in without knowing the frame's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// Text before the number.
    pub head: String,
    /// Text after the number.
    pub tail: String,
}

impl Template {
    /// The frame with `n` written in.
    pub fn fill(&self, n: u64) -> String {
        let mut s = String::with_capacity(self.head.len() + self.tail.len() + 20);
        s.push_str(&self.head);
        crate::json::push_u64(&mut s, n);
        s.push_str(&self.tail);
        s
    }
}

/// A channel message as a channel's history keeps it (opensig).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    /// Its message number in the channel (1, 2, … per message; other events do not count).
    pub n: u64,
    /// Its event sequence number in the channel.
    pub seq: u64,
    /// When the server accepted it (ms since the Unix epoch).
    pub ts: u64,
    /// The sender.
    pub account: String,
    /// The text.
    pub msg: String,
    /// The send's identity, when the sender gave a message id: the same for every copy a
    /// resend or a retry made (a number below 2^53, opaque to clients).
    pub id: Option<u64>,
}

impl Kept {
    /// `{"n":…,"seq":…,"ts":…,"account":…,"msg":…}` (and `"id"` when the send had one), as
    /// replies and the HTTP API show it.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({
            "n": self.n, "seq": self.seq, "ts": self.ts,
            "account": self.account, "msg": self.msg,
        });
        if let Some(id) = self.id {
            v["id"] = id.into();
        }
        v
    }
}

/// The outcome of a successful call2, as its reply body carries it (`"result":"ok"` plus
/// these fields).
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// No fields.
    Done,
    /// `user_getmsg` / `user_getmsg2`: the acknowledged version and `[version, text]` pairs.
    Mail {
        /// Highest acknowledged version (`None`: not part of the reply, mode 1).
        ver_clear: Option<u64>,
        /// Messages, ascending.
        msgs: Vec<(u64, std::sync::Arc<str>)>,
    },
    /// `user_query_user_status`.
    UserStatus {
        /// Who.
        account: String,
        /// 1 online, 0 offline.
        status: u8,
    },
    /// `user_get_attr`.
    UserAttr {
        /// Whose.
        account: String,
        /// Attribute name.
        name: String,
        /// Its value (`""` when unset).
        value: String,
    },
    /// `user_get_attr_all`: `json` is the JSON text of the attributes.
    UserAttrAll {
        /// Whose.
        account: String,
        /// Name and value, in name order.
        attrs: Vec<(String, String)>,
    },
    /// `channel_join`: the latest members and every attribute.
    Join {
        /// Members, oldest first.
        list: Vec<String>,
        /// Attributes in insertion order.
        attrs: Vec<(String, String)>,
        /// opensig (`last_msg`): the number of the channel's latest message (0: none yet).
        last_msg: u64,
    },
    /// `channel_history` (opensig): the channel's latest message number and kept messages.
    History {
        /// Channel.
        name: String,
        /// The number of the channel's latest message (0: none since the channel began).
        last: u64,
        /// Kept messages, oldest first.
        msgs: Vec<Kept>,
    },
    /// `user_subscribe_status` / `user_query_status` (opensig): each account's state
    /// (`names::peer_state`), as `status: {account: state}`.
    PeerStatus {
        /// Account and state, in the order asked.
        status: Vec<(String, &'static str)>,
    },
    /// `channel_query_num`.
    ChannelNum {
        /// Channel.
        name: String,
        /// Member count.
        num: usize,
    },
    /// `channel_query_user_isin`.
    ChannelIsIn {
        /// Channel.
        name: String,
        /// Who.
        account: String,
        /// 1 or 0.
        isin: u8,
    },
    /// `channel_query_userlist[_all]`.
    UserList {
        /// Channel.
        name: String,
        /// Member count.
        num: usize,
        /// Latest members, oldest first.
        list: Vec<String>,
    },
}

/// `[[account, 0], …]`, the member lists' shape.
fn member_list(list: &[String]) -> Value {
    Value::Array(
        list.iter()
            .map(|a| Value::Array(vec![Value::String(a.clone()), 0.into()]))
            .collect(),
    )
}

fn object(pairs: &[(String, String)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

impl Reply {
    /// The reply body's fields besides `result`.
    fn fields(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.into(), v);
        };
        match self {
            Reply::Done => {}
            Reply::Mail { ver_clear, msgs } => {
                if let Some(v) = ver_clear {
                    put("ver_clear", (*v).into());
                }
                let list = msgs
                    .iter()
                    .map(|(v, t)| Value::Array(vec![(*v).into(), Value::String(t.to_string())]))
                    .collect();
                put("msgs", Value::Array(list));
            }
            Reply::UserStatus { account, status } => {
                put("account", account.as_str().into());
                put("status", (*status).into());
            }
            Reply::UserAttr {
                account,
                name,
                value,
            } => {
                put("account", account.as_str().into());
                put("name", name.as_str().into());
                put("value", value.as_str().into());
            }
            Reply::UserAttrAll { account, attrs } => {
                put("account", account.as_str().into());
                put("json", json_text(&object(attrs)).into());
            }
            Reply::Join {
                list,
                attrs,
                last_msg,
            } => {
                put("list", member_list(list));
                put("attrs", Value::Object(object(attrs)));
                put("last_msg", (*last_msg).into());
            }
            Reply::History { name, last, msgs } => {
                put("name", name.as_str().into());
                put("last", (*last).into());
                let list = msgs.iter().map(Kept::to_json).collect();
                put("msgs", Value::Array(list));
            }
            Reply::PeerStatus { status } => {
                let states = status
                    .iter()
                    .map(|(a, st)| (a.clone(), Value::from(*st)))
                    .collect();
                put("status", Value::Object(states));
            }
            Reply::ChannelNum { name, num } => {
                put("name", name.as_str().into());
                put("num", (*num).into());
            }
            Reply::ChannelIsIn {
                name,
                account,
                isin,
            } => {
                put("name", name.as_str().into());
                put("account", account.as_str().into());
                put("isin", (*isin).into());
            }
            Reply::UserList { name, num, list } => {
                put("name", name.as_str().into());
                put("num", (*num).into());
                put("list", member_list(list));
            }
        }
        m
    }
}

/// Builders of every frame the server sends, serialised once.
pub mod out {
    use super::*;

    /// `["login_ret",["","{\"result\":\"ok\",\"uid\":0,\"line\":…}"]]`.
    pub fn login_ok(line: &str) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            result: &'a str,
            uid: u32,
            line: &'a str,
            config_msg_set: u32,
            config_inst_msg_with_msgid: u32,
        }
        let body = json_text(&Body {
            result: fixed::RESULT_OK,
            uid: 0,
            line,
            config_msg_set: 0,
            config_inst_msg_with_msgid: 0,
        });
        json_text(&(event::LOGIN_RET, (String::new(), body)))
    }

    /// A failed `login_ret`: the error string both in `[0]` and as `reason`.
    pub fn login_failed(err: &str) -> String {
        let body = json_text(&serde_json::json!({"result": fixed::RESULT_FAILED, "reason": err}));
        json_text(&(event::LOGIN_RET, (err, body)))
    }

    /// `["call2-ret",[id,"",<json text of {result:"ok", …fields}>]]`.
    pub fn call2_ok(id: &Value, fields: Map<String, Value>) -> String {
        let mut body = Map::with_capacity(fields.len() + 1);
        body.insert("result".into(), Value::from(fixed::RESULT_OK));
        body.extend(fields);
        json_text(&(event::CALL2_RET, (id, "", json_text(&body))))
    }

    /// `["call2-ret",[id,"","{\"result\":\"ok\"}"]]` (the most common reply, written directly).
    pub fn call2_ok_plain(id: &Value) -> String {
        let mut s = String::with_capacity(48);
        s.push_str("[\"call2-ret\",[");
        s.push_str(&id.to_string());
        s.push_str(",\"\",\"{\\\"result\\\":\\\"ok\\\"}\"]]");
        s
    }

    /// The reply frame of a successful call2.
    pub fn call2_reply(id: &Value, reply: &Reply) -> String {
        match reply {
            Reply::Done => call2_ok_plain(id),
            other => call2_ok(id, other.fields()),
        }
    }

    /// `["call2-ret",[id,"<err>",""]]`.
    pub fn call2_err(id: &Value, err: ErrorKind) -> String {
        json_text(&(event::CALL2_RET, (id, err.as_str(), "")))
    }

    /// `["notify",["channel2",channel,seq,"<msg string>"]]`.
    pub fn channel2(channel: &str, seq: u64, message: &str) -> String {
        channel2_template(channel, message).fill(seq)
    }

    /// A channel message event with its sequence number and (opensig) its message number
    /// `n` and the send's identity `id` when it has one ([`Kept::id`]), elements the 1.4
    /// client does not read:
    /// `["notify",["channel2",channel,seq,"<msg string>",n(,id)]]`.
    pub fn channel2_numbered(t: &Template, seq: u64, n: u64, id: Option<u64>) -> String {
        let mut s = t.fill(seq);
        if s.ends_with("]]") {
            s.truncate(s.len() - 2);
            s.push(',');
            crate::json::push_u64(&mut s, n);
            if let Some(id) = id {
                s.push(',');
                crate::json::push_u64(&mut s, id);
            }
            s.push_str("]]");
        }
        s
    }

    /// A channel event whose sequence number is filled in by whoever sequences it.
    pub fn channel2_template(channel: &str, message: &str) -> Template {
        let mut head = String::with_capacity(32 + channel.len());
        head.push_str("[\"");
        head.push_str(event::NOTIFY);
        head.push_str("\",[\"");
        head.push_str(notify::CHANNEL2);
        head.push_str("\",");
        head.push_str(&json_text(channel));
        head.push(',');
        let mut tail = String::with_capacity(message.len() + 8);
        tail.push(',');
        tail.push_str(&json_text(message));
        tail.push_str("]]");
        Template { head, tail }
    }

    /// `["notify",["recvmsg","[version,\"<msg string>\"]"]]`.
    pub fn recvmsg(version: u64, message: &str) -> String {
        recvmsg_template(message).fill(version)
    }

    /// A mailbox push whose version is filled in by the mailbox (the version sits inside a
    /// JSON string, where digits need no escaping).
    pub fn recvmsg_template(message: &str) -> Template {
        let mut head = String::from("[\"");
        head.push_str(event::NOTIFY);
        head.push_str("\",[\"");
        head.push_str(notify::RECVMSG);
        head.push_str("\",\"[");
        let mut inner = String::with_capacity(message.len() + 8);
        inner.push(',');
        inner.push_str(&json_text(message));
        inner.push(']');
        let quoted = json_text(&inner);
        let mut tail = String::with_capacity(quoted.len() + 3);
        tail.push_str(&quoted[1..quoted.len() - 1]);
        tail.push_str("\"]]");
        Template { head, tail }
    }

    /// `["notify",["msg",version]]`.
    pub fn msg_notice(version: u64) -> String {
        json_text(&(event::NOTIFY, (notify::MSG, version)))
    }

    /// `["notify",["rejoin"]]` (opensig, [`notify::REJOIN`]).
    pub fn rejoin_notice() -> String {
        json_text(&(event::NOTIFY, [notify::REJOIN]))
    }

    /// `["notify",["peer_status","{\"<account>\":\"<state>\"}"]]` (opensig): watched
    /// accounts' new states.
    pub fn peer_status(states: &[(&str, &str)]) -> String {
        let map: serde_json::Map<String, Value> = states
            .iter()
            .map(|(a, st)| (a.to_string(), Value::from(*st)))
            .collect();
        let inner = json_text(&Value::Object(map));
        json_text(&(event::NOTIFY, (notify::PEER_STATUS, inner)))
    }

    /// `["pong",n]`.
    pub fn pong(n: &Value) -> String {
        json_text(&(event::PONG, n))
    }

    /// `["close",""]`.
    pub fn close() -> String {
        json_text(&(event::CLOSE, ""))
    }

    /// `["kick",""]`.
    pub fn kick() -> String {
        json_text(&(event::KICK, ""))
    }

    /// `["multi",[f1,f2,…]]` from already-serialised frames.
    pub fn multi<S: core::ops::Deref<Target = str>>(frames: &[S]) -> String {
        let len = frames.iter().map(|f| f.len() + 1).sum::<usize>() + 16;
        let mut s = String::with_capacity(len);
        s.push_str("[\"multi\",[");
        for (i, f) in frames.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(f);
        }
        s.push_str("]]");
        s
    }
}

/// Content of channel events and voip messages (PROTOCOL.md §12.4, §13.3).
pub mod content {
    use super::*;

    /// `{"channel":…,"account":…,"uid":0,"msg":…}`.
    pub fn channel_msg(channel: &str, account: &str, msg: &str) -> String {
        json_text(
            &serde_json::json!({"channel": channel, "account": account, "uid": 0, "msg": msg}),
        )
    }

    /// `{"channel":…,"account":…,"uid":0}` for join/leave.
    pub fn channel_user(channel: &str, account: &str) -> String {
        json_text(&serde_json::json!({"channel": channel, "account": account, "uid": 0}))
    }

    /// `{"channel":…,"account":…,"uid":0,"name":…,"value":…,"type":…}`.
    pub fn channel_attr(
        channel: &str,
        account: &str,
        name: &str,
        value: &str,
        kind: &str,
    ) -> String {
        json_text(&serde_json::json!({
            "channel": channel, "account": account, "uid": 0,
            "name": name, "value": value, "type": kind
        }))
    }

    /// `{"channel":C,"peer":P,"extra":E,"peeruid":0}` plus an optional `ecode`.
    pub fn voip(channel: &str, peer: &str, extra: &Value, ecode: Option<u32>) -> String {
        let mut m = Map::new();
        m.insert("channel".into(), channel.into());
        m.insert("peer".into(), peer.into());
        m.insert("extra".into(), extra.clone());
        m.insert("peeruid".into(), 0.into());
        if let Some(code) = ecode {
            m.insert("ecode".into(), code.into());
        }
        json_text(&m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_the_original_clients_frames() {
        let f = ClientFrame::decode(
            r#"["login",{"vid":"APP","account":"alice","uid":0,"token":"_no_need_token","device":"websdk","ip":""}]"#,
        )
        .unwrap();
        assert_eq!(
            f,
            ClientFrame::Login(Login {
                vid: "APP".into(),
                account: "alice".into(),
                token: "_no_need_token".into(),
                device: "websdk".into()
            })
        );
        assert_eq!(
            ClientFrame::decode(r#"["set_flag",{"binary":1}]"#).unwrap(),
            ClientFrame::SetFlag { binary: true }
        );
        assert_eq!(
            ClientFrame::decode(r#"["ping",3]"#).unwrap(),
            ClientFrame::Ping(json!(3))
        );
        let c = ClientFrame::decode(r#"["call2",["channel_join",7,{"line":"L","name":"room1"}]]"#)
            .unwrap();
        let ClientFrame::Call2(c) = c else { panic!() };
        assert_eq!(c.name, "channel_join");
        assert_eq!(c.id, json!(7));
        let d = c.decode().unwrap();
        assert_eq!(d.line.as_deref(), Some("L"));
        let r = d.request.unwrap();
        assert_eq!(
            r,
            Request::ChannelJoin {
                name: "room1".into(),
                seen: Seen::default(),
            }
        );
    }

    #[test]
    fn the_numbers_a_member_saw_ride_with_its_channel_message_and_rejoin() {
        let decode = |text: &str| {
            let ClientFrame::Call2(c) = ClientFrame::decode(text).unwrap() else {
                panic!()
            };
            c.decode().unwrap().request
        };
        let seen = Seen { seq: 9, msg: 4 };
        assert_eq!(
            decode(
                r#"["call2",["channel_sendmsg",3,{"name":"r","msg":"m","seen_seq":9,"seen_msg":4,"line":"L"}]]"#
            ),
            Ok(Request::ChannelSendmsg {
                name: "r".into(),
                msg: "m".into(),
                msg_id: None,
                force: false,
                seen,
            })
        );
        // as text too (the lenient path), and absent: none seen
        assert_eq!(
            decode(r#"["call2",["channel_join",1,{"name":"r","seen_seq":"9","seen_msg":4}]]"#),
            Ok(Request::ChannelJoin {
                name: "r".into(),
                seen
            })
        );
        assert_eq!(
            decode(r#"["call2",["channel_join",1,{"name":"r"}]]"#),
            Ok(Request::ChannelJoin {
                name: "r".into(),
                seen: Seen::default()
            })
        );
        // not a count: refused, not taken for none
        for bad in [r#"-1"#, r#"1.5"#, r#"[1]"#, r#""x""#] {
            let text = format!(r#"["call2",["channel_join",1,{{"name":"r","seen_seq":{bad}}}]]"#);
            assert_eq!(decode(&text), Err(ErrorKind::InvalidArgs), "{bad}");
        }
    }

    #[test]
    fn the_id_a_client_processed_at_its_version_rides_with_its_poll() {
        let decode = |text: &str| {
            let ClientFrame::Call2(c) = ClientFrame::decode(text).unwrap() else {
                panic!()
            };
            c.decode().unwrap().request
        };
        let poll = |seen_id: Option<&str>| Request::UserGetmsg {
            ver_clear: 5,
            max: 30,
            seen_id: seen_id.map(str::to_owned),
        };
        // the typed path and the lenient one (a version as text)
        assert_eq!(
            decode(r#"["call2",["user_getmsg",2,{"ver_clear":5,"max":30,"seen_id":"7a.1"}]]"#),
            Ok(poll(Some("7a.1")))
        );
        assert_eq!(
            decode(r#"["call2",["user_getmsg",2,{"ver_clear":"5","seen_id":"7a.1"}]]"#),
            Ok(poll(Some("7a.1")))
        );
        assert_eq!(
            decode(r#"["call2",["user_getmsg",2,{"ver_clear":5,"seen_id":null}]]"#),
            Ok(poll(None))
        );
        assert_eq!(
            decode(r#"["call2",["user_getmsg",2,{"ver_clear":5,"seen_id":["x"]}]]"#),
            Err(ErrorKind::InvalidArgs)
        );
    }

    #[test]
    fn rejects_bad_frames() {
        assert_eq!(ClientFrame::decode("{"), Err(DecodeError::NotJson));
        assert_eq!(ClientFrame::decode("{}"), Err(DecodeError::NotAFrame));
        assert_eq!(ClientFrame::decode("[1,2]"), Err(DecodeError::NotAFrame));
        assert_eq!(
            ClientFrame::decode(r#"["call2",5]"#),
            Err(DecodeError::BadPayload("call2"))
        );
        assert_eq!(
            ClientFrame::decode(r#"["call2",["x",{},{}]]"#),
            Err(DecodeError::BadPayload("call2"))
        );
        assert_eq!(
            ClientFrame::decode(r#"["login",[]]"#),
            Err(DecodeError::BadPayload("login"))
        );
        assert_eq!(
            ClientFrame::decode(r#"["hello",1]"#),
            Ok(ClientFrame::Unknown("hello".into()))
        );
    }

    #[test]
    fn request_types_are_checked() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            Request::parse("user_getmsg", &m(json!({"ver_clear": "12", "max": 30}))),
            Ok(Request::UserGetmsg {
                ver_clear: 12,
                max: 30,
                seen_id: None,
            })
        );
        assert_eq!(
            Request::parse("user_getmsg", &m(json!({"ver_clear": [1]}))),
            Err(ErrorKind::InvalidArgs)
        );
        // beyond 2^53 a JavaScript number is no count or version (found by cargo fuzz:
        // 1e300 used to saturate to u64::MAX)
        for v in [json!(1e300), json!(18446744073709551616.0_f64), json!(-1)] {
            assert_eq!(
                Request::parse("user_getmsg", &m(json!({ "ver_clear": v }))),
                Err(ErrorKind::InvalidArgs)
            );
        }
        // the typed and the lenient decoder agree that a null extra is no extra (cargo fuzz)
        let c = |args: &str| match ClientFrame::decode(&format!(
            r#"["call2",["voip_invite",1,{args}]]"#
        )) {
            Ok(ClientFrame::Call2(c)) => c.decode().unwrap().request,
            other => panic!("{other:?}"),
        };
        let typed = c(r#"{"channelName":"r","peer":"b","extra":null}"#);
        let lenient = c(r#"{"channelName":"r","peer":"b","peer":"b","extra":null}"#);
        assert_eq!(typed, lenient);
        assert_eq!(
            Request::parse("channel_join", &m(json!({}))),
            Err(ErrorKind::InvalidArgs)
        );
        assert_eq!(
            Request::parse("channel_join", &m(json!({"name": {"x": 1}}))),
            Err(ErrorKind::InvalidArgs)
        );
        assert_eq!(
            Request::parse("nope", &m(json!({}))),
            Err(ErrorKind::UnknownFunction)
        );
        for name in call::ALL {
            // every known name parses or complains about args, never "unknown"
            assert_ne!(
                Request::parse(name, &m(json!({}))),
                Err(ErrorKind::UnknownFunction)
            );
        }
    }

    #[test]
    fn fast_and_lenient_decodes_agree() {
        let cases = [
            r#"["call2",["user_sendmsg",1,{"peer":"bob","flag":"v1:E:3600","t":"instant","content":"hi \"q\"","line":"L"}]]"#,
            r#"["call2",["user_sendmsg",1,{"peer":"bob","content":"x","messageID":"m1","line":"L"}]]"#,
            r#"["call2",["user_getmsg",2,{"ver_clear":5,"max":30,"line":"L"}]]"#,
            r#"["call2",["channel_sendmsg",3,{"name":"r","msg":"m","msgID":"i","force":true,"line":"L"}]]"#,
            r#"["call2",["channel_set_attr",4,{"channel":"r","name":"k","value":"v","line":"L"}]]"#,
            r#"["call2",["voip_invite",5,{"channelName":"r","peer":"b","extra":{"_timeout":3},"line":"L"}]]"#,
            r#"["call2",["voip_invite_msg",6,{"channelName":"r","peer":"b","extra":"{\"msgtype\":\"dtmf\"}","line":"L"}]]"#,
            r#"["call2",["channel_join",7,{"name":"r","line":"L","extra_field":[1,2]}]]"#,
        ];
        for text in cases {
            let ClientFrame::Call2(c) = ClientFrame::decode(text).unwrap() else {
                panic!()
            };
            let fast = c.decode().unwrap();
            let map: Map<String, Value> = serde_json::from_str(c.args.get()).unwrap();
            assert_eq!(fast.request, Request::parse(&c.name, &map), "{text}");
            assert_eq!(fast.line.as_deref(), Some("L"));
        }
        // what the fast path does not take still decodes (leniently) or fails exactly
        let ClientFrame::Call2(c) =
            ClientFrame::decode(r#"["call2",["channel_join",1,{"name":17,"line":"L"}]]"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            c.decode().unwrap().request,
            Ok(Request::ChannelJoin {
                name: "17".into(),
                seen: Seen::default()
            })
        );
        let ClientFrame::Call2(c) = ClientFrame::decode(
            r#"["call2",["channel_join",1,{"line":"A","line":"B","name":"r"}]]"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.decode().unwrap().line.as_deref(), Some("B"));
        let ClientFrame::Call2(c) =
            ClientFrame::decode(r#"["call2",["channel_join",1,"nope"]]"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.decode(), Err(ErrorKind::InvalidArgs));
        let ClientFrame::Call2(c) =
            ClientFrame::decode(r#"["call2",["user_sendmsg",1,{"line":"L"}]]"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.decode().unwrap().request, Err(ErrorKind::InvalidArgs));
        // the hand-written replies are what serde would write
        assert_eq!(
            out::call2_ok_plain(&serde_json::json!(9)),
            out::call2_ok(&serde_json::json!(9), Map::new())
        );
        assert_eq!(
            out::recvmsg(5, "a \"b\""),
            json_text(&(event::NOTIFY, (notify::RECVMSG, json_text(&(5, "a \"b\"")))))
        );
    }

    #[test]
    fn double_encoded_payloads() {
        let f: Value = serde_json::from_str(&out::login_ok("abc")).unwrap();
        assert_eq!(f[0], "login_ret");
        let body: Value = serde_json::from_str(f[1][1].as_str().unwrap()).unwrap();
        assert_eq!(body["result"], "ok");
        assert_eq!(body["line"], "abc");
        let f: Value = serde_json::from_str(&out::recvmsg(5, "msg-v2 a 0 b instant - hi")).unwrap();
        assert_eq!(
            f,
            json!(["notify", ["recvmsg", "[5,\"msg-v2 a 0 b instant - hi\"]"]])
        );
        let f: Value =
            serde_json::from_str(&out::call2_err(&json!(3), ErrorKind::InvalidArgs)).unwrap();
        assert_eq!(f, json!(["call2-ret", [3, "invalid_args", ""]]));
        let f: Value =
            serde_json::from_str(&out::multi(&[out::pong(&json!(1)), out::close()])).unwrap();
        assert_eq!(f, json!(["multi", [["pong", 1], ["close", ""]]]));
    }

    #[test]
    fn templates_fill_in_their_number() {
        // awkward text: quotes, backslashes, a JSON string inside the message
        let text = "msg-v3 i a 0 b instant - \"q\" \\ {\"k\":\"v\"} ünï";
        let f: Value = serde_json::from_str(&out::recvmsg(12, text)).unwrap();
        let inner: Value = serde_json::from_str(f[1][1].as_str().unwrap()).unwrap();
        assert_eq!(inner, json!([12, text]));
        let f: Value = serde_json::from_str(&out::channel2("ro\"om", 7, text)).unwrap();
        assert_eq!(f, json!(["notify", ["channel2", "ro\"om", 7, text]]));
        assert_eq!(
            out::recvmsg_template(text).fill(u64::MAX).len(),
            out::recvmsg_template(text).fill(1).len() + 19
        );
    }

    #[test]
    fn replies_serialise_their_fields() {
        let reply = |r: &Reply| -> Value {
            let f: Value = serde_json::from_str(&out::call2_reply(&json!(4), r)).unwrap();
            assert_eq!(f[0], "call2-ret");
            assert_eq!(f[1][0], 4);
            serde_json::from_str(f[1][2].as_str().unwrap()).unwrap()
        };
        assert_eq!(reply(&Reply::Done), json!({"result": "ok"}));
        assert_eq!(
            reply(&Reply::Join {
                list: vec!["a".into(), "b".into()],
                attrs: vec![("t".into(), "x".into())],
                last_msg: 7,
            }),
            json!({"result": "ok", "list": [["a", 0], ["b", 0]], "attrs": {"t": "x"}, "last_msg": 7})
        );
        let kept = Kept {
            n: 2,
            seq: 9,
            ts: 1_700_000_000_000,
            account: "a".into(),
            msg: "hi".into(),
            id: None,
        };
        let with_id = Kept {
            id: Some(77),
            ..kept.clone()
        };
        assert_eq!(
            reply(&Reply::History {
                name: "c".into(),
                last: 3,
                msgs: vec![kept.clone(), with_id]
            }),
            json!({"result": "ok", "name": "c", "last": 3,
                   "msgs": [{"n": 2, "seq": 9, "ts": 1_700_000_000_000u64, "account": "a", "msg": "hi"},
                            {"n": 2, "seq": 9, "ts": 1_700_000_000_000u64, "account": "a", "msg": "hi", "id": 77}]})
        );
        let t = out::channel2_template("c", "msg-v2 x");
        assert_eq!(
            out::channel2_numbered(&t, 5, 2, None),
            r#"["notify",["channel2","c",5,"msg-v2 x",2]]"#
        );
        assert_eq!(
            out::channel2_numbered(&t, 5, 2, Some(9_007_199_254_740_991)),
            r#"["notify",["channel2","c",5,"msg-v2 x",2,9007199254740991]]"#
        );
        assert_eq!(
            reply(&Reply::Mail {
                ver_clear: Some(3),
                msgs: vec![(4, "m".into())]
            }),
            json!({"result": "ok", "ver_clear": 3, "msgs": [[4, "m"]]})
        );
        let all = reply(&Reply::UserAttrAll {
            account: "a".into(),
            attrs: vec![("c".into(), "d".into())],
        });
        assert_eq!(all["json"], "{\"c\":\"d\"}");
    }
}
