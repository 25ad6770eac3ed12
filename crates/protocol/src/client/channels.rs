//! Channel objects: one per channel name while it is joined or being joined, routed by name,
//! rejoined after a reconnect, with the channel's events in sequence order.

use alloc::string::String;
use alloc::vec::Vec;

use super::{
    frames::Body,
    requests::{JoinMode, Kind},
    ChannelId, Client, ConnId, Event, Failure, Millis, ReqId, State,
};
use crate::codes::{Code, ErrorKind};
use crate::json::{as_u64, JsonValue};
use crate::limits::Limits;
use crate::msg;
use crate::names::field::{SEEN_MSG, SEEN_SEQ};
use crate::names::{attr_change, call, msgtype};
use crate::small::VecMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChanState {
    Joining,
    Joined,
    Left,
}

/// A live event held back: a message's number and identity, and the event.
type Held<V> = (Option<u64>, Option<u64>, Event<V>);

#[derive(Clone, Debug)]
struct Chan<V> {
    name: String,
    state: ChanState,
    last_seq: u64,
    /// The number of the latest channel message delivered (or the channel's latest when it
    /// was joined); `None` while the server numbers no messages.
    last_msg: Option<u64>,
    /// Missed messages are being fetched after a rejoin: live events wait here, with their
    /// message numbers and identities, until the missed ones are delivered.
    held: Option<Vec<Held<V>>>,
    /// A rejoin after a reconnect is awaited (or in flight).
    rejoining: bool,
    /// The app called `channelJoin` again meanwhile: the rejoin's reply announces the channel
    /// (`ChannelJoined`) as a join would.
    announce: bool,
}

/// The session's Channel objects.
#[derive(Debug)]
pub(super) struct Channels<V> {
    map: VecMap<u32, Chan<V>>,
    /// The live Channel of each name.
    by_name: VecMap<String, u32>,
    /// The most recent join (events without a channel name go there, as in the original).
    current: Option<u32>,
    /// The identities of the channel messages delivered lately.
    seen: SeenIds,
}

impl<V> Chan<V> {
    /// The messages a live one numbered `number` shows were skipped, `(after, upto)`: the
    /// server numbers a channel's messages one by one and sends each to every member in
    /// order, so a number past the next one means the pushes between were lost (a push the
    /// server could not deliver and did not tell of). Only while joined and not rejoining
    /// (a rejoin fetches what was missed by itself).
    fn gap_before(&self, number: Option<u64>) -> Option<(u64, u64)> {
        let (n, last) = (number?, self.last_msg?);
        let joined = self.state == ChanState::Joined && !self.rejoining;
        (joined && n > last.saturating_add(1)).then(|| (last, n - 1))
    }
}

impl<V> Default for Channels<V> {
    fn default() -> Self {
        Channels {
            map: VecMap::default(),
            by_name: VecMap::default(),
            current: None,
            seen: SeenIds::default(),
        }
    }
}

/// The identities of the channel messages delivered lately, in a table of [`SEEN_SETS`] sets
/// of [`SEEN_WAYS`] (an identity's set: the identity modulo the sets; a fifth one in a set
/// pushes its oldest out): 64 KiB, made when the first identity comes.
const SEEN_SETS: usize = 2048;
const SEEN_WAYS: usize = 4;

/// The identities (opensig: a `channel2` event's sixth element, a history entry's `id`) of
/// the latest channel messages delivered (about 8,000: fewer when many land in one set). A
/// send the server took twice — the SDK sent it again after a reconnect, or the store ran it
/// again, while the first copy had gone out but its write was lost (a Redis primary that died
/// before its replica had it) — comes again under another number with the same identity, and
/// is dropped. (A fixed table, no tree: the WASM SDK's size.)
#[derive(Default, Debug)]
struct SeenIds(Vec<u64>);

impl SeenIds {
    /// Whether a message of identity `id` (none: not a resend's) is new; remembers it. (One
    /// copy for its four callers: size.)
    #[inline(never)]
    fn first_time(&mut self, id: Option<u64>) -> bool {
        let Some(id) = id else { return true };
        if self.0.is_empty() {
            self.0.resize(SEEN_SETS * SEEN_WAYS, 0);
        }
        let key = id.wrapping_add(1);
        let at = (id as usize % SEEN_SETS) * SEEN_WAYS;
        let Some(set) = self.0.get_mut(at..at + SEEN_WAYS) else {
            return true;
        };
        if set.contains(&key) {
            return false;
        }
        // the newest first; the oldest falls out
        let mut carry = key;
        for way in set {
            core::mem::swap(way, &mut carry);
        }
        true
    }
}

/// What [`Client::channel_event_direct`] and [`Client::instant_direct`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direct {
    /// The driver delivers it now (to this channel's callbacks, or the session's).
    Deliver(ChannelId),
    /// It is not delivered (as the rules would drop it).
    Dropped,
    /// The driver hands it over whole (nothing was changed).
    Full,
}

/// What [`Client::channel_event_direct`] decides on: a `channel2` notification as a driver
/// that reads frames itself read it.
#[derive(Clone, Debug)]
pub struct ChannelEvent<'a> {
    /// The channel's name (empty: the newest channel).
    pub channel: &'a str,
    /// The event's sequence number in the channel.
    pub seq: u64,
    /// A channel message's number (history), if any.
    pub number: Option<u64>,
    /// Its type, as an index of [`msgtype::CHANNEL_EVENTS`].
    pub kind: usize,
    /// A channel message's identity (opensig: the sixth element), if any.
    pub id: Option<u64>,
}

/// The event a channel event of type `kind` (an index of [`msgtype::CHANNEL_EVENTS`]) raises
/// for channel `ch`, its content's members in that table's order.
#[inline]
pub fn channel_event_of<V>(ch: ChannelId, kind: usize, fields: [V; 3]) -> Event<V> {
    let [a, b, c] = fields;
    match msgtype::CHANNEL_EVENTS[kind].0 {
        msgtype::CHANNEL_MSG => Event::ChannelMessage {
            ch,
            account: a,
            uid: b,
            msg: c,
        },
        msgtype::CHANNEL_USER_JOIN => Event::ChannelUserJoined {
            ch,
            account: a,
            uid: b,
        },
        msgtype::CHANNEL_USER_LEAVE => Event::ChannelUserLeft {
            ch,
            account: a,
            uid: b,
        },
        _ => Event::ChannelAttr {
            ch,
            name: a,
            value: b,
            kind: c,
        },
    }
}

impl<V: JsonValue> Client<V> {
    /// `channelJoin(name)`: the Channel of that name. A channel this session has joined or is
    /// joining keeps its one Channel (no second membership): a join in progress announces it
    /// once; a joined channel is asked for again and announced again (`ChannelJoined` and a
    /// fresh member list), also when the call comes during a reconnect (the rejoin announces
    /// it). Otherwise a new Channel, whose outcome arrives as `ChannelJoined` or
    /// `ChannelJoinFailed`; before the login completes the join is queued.
    pub fn channel_join(&mut self, name: &str, now: Millis) -> ChannelId {
        if self.state != State::LoggedOut {
            if let Some(ch) = self.live_channel(name) {
                let logged_in = self.state == State::LoggedIn;
                let c = self.chans.map.get_mut(&ch).expect("live channel");
                if c.state == ChanState::Joined {
                    if logged_in && !c.rejoining {
                        // live events wait for the reply: what the member missed (its
                        // membership lost, as a failover can) comes first from the history
                        if c.held.is_none() {
                            c.held = Some(Vec::new());
                        }
                        let body = seen(Body::new().s("name", name), c).0;
                        let mode = JoinMode::Again;
                        self.request(
                            call::CHANNEL_JOIN,
                            body,
                            Kind::Join { ch, mode },
                            "channelJoin",
                            now,
                        );
                    } else {
                        c.announce = true;
                    }
                }
                return ChannelId(ch);
            }
        }
        let ch = self.new_id();
        self.chans.map.insert(
            ch,
            Chan {
                name: name.into(),
                state: ChanState::Joining,
                last_seq: 0,
                last_msg: None,
                held: None,
                rejoining: false,
                announce: false,
            },
        );
        let check = if self.state == State::LoggedOut {
            Err(ErrorKind::NotLoggedIn)
        } else {
            self.cfg.limits.check_channel(name)
        };
        match check {
            Ok(()) => {
                self.chans.by_name.insert(name.into(), ch);
                self.chans.current = Some(ch);
                let body = Body::new().s("name", name).0;
                let kind = Kind::Join {
                    ch,
                    mode: JoinMode::Initial,
                };
                self.request(call::CHANNEL_JOIN, body, kind, "channelJoin", now);
            }
            Err(e) => {
                if let Some(c) = self.chans.map.get_mut(&ch) {
                    c.state = ChanState::Left;
                }
                self.events.push_back(Event::ChannelJoinFailed {
                    ch: ChannelId(ch),
                    err: e.as_str().into(),
                });
                self.events.push_back(Event::Error {
                    name: "channelJoin",
                    code: e.code(),
                    desc: e.as_str().into(),
                });
            }
        }
        ChannelId(ch)
    }

    /// The Channel of `name` that is joined or joining.
    fn live_channel(&self, name: &str) -> Option<u32> {
        let ch = *self.chans.by_name.get(name)?;
        let c = self.chans.map.get(&ch)?;
        (c.state != ChanState::Left).then_some(ch)
    }

    /// Join every joined channel again, ahead of anything queued, with the numbers seen, its
    /// live events waiting for the reply (and a recovery): after a reconnect (`Rejoin`), or on
    /// the server's `rejoin` notice (`Check`: not while a join of it is on its way).
    pub(super) fn rejoin_channels(&mut self, mode: JoinMode, now: Millis) {
        let after_reconnect = mode == JoinMode::Rejoin;
        if !after_reconnect && self.state != State::LoggedIn {
            return;
        }
        let rejoin: Vec<(u32, String)> = self
            .chans
            .map
            .iter_mut()
            .filter(|(_, c)| {
                c.state == ChanState::Joined
                    && (after_reconnect || (!c.rejoining && c.held.is_none()))
            })
            .map(|(id, c)| {
                // what waited for an earlier join comes again with this one
                c.held = Some(Vec::new());
                let body = seen(Body::new().s("name", &c.name), c).0;
                if after_reconnect {
                    c.rejoining = true;
                    c.last_seq = 0;
                }
                (*id, body)
            })
            .collect();
        for (ch, body) in rejoin {
            let kind = Kind::Join { ch, mode };
            self.request_front(call::CHANNEL_JOIN, body, kind, "channelJoin", now);
        }
    }

    pub(super) fn join_reply(
        &mut self,
        ch: u32,
        mode: JoinMode,
        result: &Result<V, Failure<V>>,
        now: Millis,
    ) {
        let Some(c) = self.chans.map.get_mut(&ch) else {
            return;
        };
        if c.state == ChanState::Left {
            return;
        }
        match result {
            Ok(body) => {
                c.state = ChanState::Joined;
                let rejoin = mode == JoinMode::Rejoin;
                // a join of a joined channel: the membership may have been lost meanwhile
                let again = matches!(mode, JoinMode::Again | JoinMode::Check) && !c.rejoining;
                if !rejoin {
                    c.last_seq = 0;
                }
                // the channel's latest message number (opensig): after a rejoin, or a join
                // again, what was sent since the last one delivered is fetched from the
                // channel's history while the live events that came meanwhile wait
                let latest = body.get("last_msg").as_ref().and_then(as_u64);
                let mut recover = None;
                match (latest, c.last_msg) {
                    (Some(upto), Some(last))
                        if (rejoin && upto != last) || (again && upto > last) =>
                    {
                        // a smaller number: the channel began anew while this session was away
                        let after = if upto < last { 0 } else { last };
                        c.last_msg = Some(after);
                        recover = Some((after, upto, c.name.clone()));
                    }
                    (_, Some(_)) if rejoin || again => {}
                    _ => c.last_msg = latest,
                }
                let release = (rejoin || again) && recover.is_none();
                let announce = match mode {
                    JoinMode::Rejoin | JoinMode::Check => c.announce,
                    _ => true,
                };
                if mode == JoinMode::Rejoin {
                    c.rejoining = false;
                    c.announce = false;
                }
                if announce {
                    self.events
                        .push_back(Event::ChannelJoined { ch: ChannelId(ch) });
                }
                let list = body
                    .get("list")
                    .unwrap_or_else(|| V::parse("[]").unwrap_or_else(|| V::from_string("")));
                self.events.push_back(Event::ChannelUserList {
                    ch: ChannelId(ch),
                    list,
                });
                if release {
                    self.release_held(ch, 0);
                }
                if let Some((after, upto, name)) = recover {
                    self.fetch_missed(ch, &name, (after, upto), now);
                }
                if let Some(attrs) = body.get("attrs") {
                    let update = V::from_string(attr_change::UPDATE);
                    for k in attrs.keys() {
                        if let Some(v) = attrs.get(&k) {
                            self.events.push_back(Event::ChannelAttr {
                                ch: ChannelId(ch),
                                name: V::from_string(&k),
                                value: v,
                                kind: update.clone(),
                            });
                        }
                    }
                }
            }
            // asked again while joined: still joined (the error is reported as such)
            Err(_) if matches!(mode, JoinMode::Again | JoinMode::Check) => {
                if !c.rejoining {
                    self.release_held(ch, 0);
                }
            }
            Err(f) => {
                c.state = ChanState::Left;
                c.held = None;
                let name = c.name.clone();
                if self.chans.by_name.get(&name) == Some(&ch) {
                    self.chans.by_name.remove(&name);
                }
                let ev = if mode == JoinMode::Rejoin {
                    Event::ChannelLeft {
                        ch: ChannelId(ch),
                        code: Code::LeaveChannelDisconn.value(),
                    }
                } else {
                    Event::ChannelJoinFailed {
                        ch: ChannelId(ch),
                        err: f.err.clone(),
                    }
                };
                self.events.push_back(ev);
            }
        }
    }

    /// The leave of Channel `ch` completed.
    pub(super) fn left(&mut self, ch: u32) {
        if let Some(c) = self.chans.map.remove(&ch) {
            if self.chans.by_name.get(&c.name) == Some(&ch) {
                self.chans.by_name.remove(&c.name);
            }
            if self.chans.current == Some(ch) {
                self.chans.current = None;
            }
        }
        self.events.push_back(Event::ChannelLeft {
            ch: ChannelId(ch),
            code: 0,
        });
    }

    /// A channel event: routed by name (only an event without a name goes to the newest
    /// channel); sequences at or below the last one seen are dropped, and so are messages
    /// whose number or identity was delivered before.
    pub(super) fn on_channel2(
        &mut self,
        channel: &str,
        (seq, number, id): (u64, Option<u64>, Option<u64>),
        value: &V,
        text: &str,
        now: Millis,
    ) {
        let Some(ch) = self.channel_route(channel, seq) else {
            return;
        };
        let Some(m) = msg::parse(text) else { return };
        let Some(kind) = msgtype::CHANNEL_EVENTS
            .iter()
            .position(|(k, _)| *k == m.kind)
        else {
            return;
        };
        // (the content is a tail of the text: parsed where the text lives)
        let at = m.content.as_ptr() as usize - text.as_ptr() as usize;
        let Some(content) = value.parse_within(text, at) else {
            self.log("ignored a channel event whose content is not JSON");
            return;
        };
        let fields = msgtype::CHANNEL_EVENTS[kind].1.map(|k| {
            content
                .get(k)
                .filter(|_| !k.is_empty())
                .unwrap_or_else(|| V::from_string(""))
        });
        self.channel_event(ch, (number, id), kind, fields, now);
    }

    /// A channel event the driver read and would deliver itself, decided without its
    /// content: [`Direct::Deliver`] when nothing of the core's is queued ahead of it and the
    /// rules for the frame would deliver it now (then the core's state
    /// is as if it had, and the driver calls the callback); [`Direct::Dropped`] when they
    /// would drop it; [`Direct::Full`], with nothing changed, when the driver must hand it
    /// over whole (the channel holds messages back while it recovers, or events are queued).
    pub fn channel_event_direct(
        &mut self,
        conn: ConnId,
        e: &ChannelEvent<'_>,
        now: Millis,
    ) -> Direct {
        if e.kind >= msgtype::CHANNEL_EVENTS.len() || !self.events.is_empty() {
            return Direct::Full;
        }
        if !self.received(conn, now) {
            return Direct::Dropped;
        }
        let routed = if e.channel.is_empty() {
            self.chans.current
        } else {
            self.chans.by_name.get(e.channel).copied()
        };
        let Some((id, c)) = routed.and_then(|id| Some((id, self.chans.map.get_mut(&id)?))) else {
            return Direct::Dropped;
        };
        if c.last_seq != 0 && e.seq <= c.last_seq {
            return Direct::Dropped;
        }
        let message = msgtype::CHANNEL_EVENTS[e.kind].0 == msgtype::CHANNEL_MSG;
        if c.held.is_some() || (message && c.gap_before(e.number).is_some()) {
            return Direct::Full;
        }
        c.last_seq = e.seq;
        if message {
            if let Some(n) = e.number {
                if c.last_msg.is_some_and(|last| n <= last) {
                    return Direct::Dropped;
                }
                c.last_msg = Some(n);
            }
            if !self.chans.seen.first_time(e.id) {
                return Direct::Dropped;
            }
        }
        Direct::Deliver(ChannelId(id))
    }

    /// The channel an event is for, unless its sequence was seen.
    fn channel_route(&mut self, channel: &str, seq: u64) -> Option<u32> {
        let routed = if channel.is_empty() {
            self.chans.current
        } else {
            self.chans.by_name.get(channel).copied()
        };
        let ch = routed?;
        let c = self.chans.map.get_mut(&ch)?;
        if c.last_seq != 0 && seq <= c.last_seq {
            return None;
        }
        c.last_seq = seq;
        Some(ch)
    }

    fn channel_event(
        &mut self,
        ch: u32,
        (number, id): (Option<u64>, Option<u64>),
        kind: usize,
        fields: [V; 3],
        now: Millis,
    ) {
        let at = ch;
        let ch = ChannelId(ch);
        let message = msgtype::CHANNEL_EVENTS[kind].0 == msgtype::CHANNEL_MSG;
        let ev = channel_event_of(ch, kind, fields);
        let (number, id) = if message { (number, id) } else { (None, None) };
        let Some(c) = self.chans.map.get_mut(&at) else {
            return;
        };
        if let (None, Some(missed)) = (&c.held, c.gap_before(number)) {
            // numbers were skipped: what was missed comes from the history first, as after a
            // rejoin, while this one and what follows wait
            c.held = Some(Vec::from([(number, id, ev)]));
            let name = c.name.clone();
            self.fetch_missed(at, &name, missed, now);
            return;
        }
        match &mut c.held {
            Some(held) => held.push((number, id, ev)),
            None => {
                if let Some(n) = number {
                    if c.last_msg.is_some_and(|last| n <= last) {
                        return;
                    }
                    c.last_msg = Some(n);
                }
                if self.chans.seen.first_time(id) {
                    self.events.push_back(ev);
                }
            }
        }
    }

    /// Ask the history of channel `ch` for its messages numbered after `after` up to `upto`,
    /// ahead of anything queued, while its live events wait: [`Client::recovered`] delivers
    /// them.
    fn fetch_missed(&mut self, ch: u32, name: &str, (after, upto): (u64, u64), now: Millis) {
        let body = Body::new()
            .s("name", name)
            .n("after", after)
            .n("max", upto - after)
            .0;
        let kind = Kind::Recover { ch, after, upto };
        self.request_front(call::CHANNEL_HISTORY, body, kind, "channelJoin", now);
    }

    /// The missed messages of a rejoined channel arrived (`Some` reply) or could not be
    /// fetched: deliver those numbered up to `upto`, in order and once, after telling how many
    /// of them are gone (`ChannelMessagesLost`); then what arrived live meanwhile. (A message
    /// whose identity was delivered before counts as found, and is not delivered again.)
    pub(super) fn recovered(&mut self, ch: u32, after: u64, upto: u64, reply: Option<V>) {
        let Some(c) = self.chans.map.get_mut(&ch) else {
            return;
        };
        let Some(held) = c.held.take() else { return };
        let id = ChannelId(ch);
        let mut found = Vec::new();
        let msgs = reply.and_then(|r| r.get("msgs"));
        for i in 0..msgs.as_ref().and_then(|m| m.array_len()).unwrap_or(0) {
            let Some(m) = msgs.as_ref().and_then(|m| m.at(i)) else {
                continue;
            };
            let n = m.get("n").as_ref().and_then(as_u64).unwrap_or(0);
            let last = found.last().map_or(after, |(n, _, _)| *n);
            if n > last && n <= upto {
                let get = |k: &str| m.get(k).unwrap_or_else(|| V::from_string(""));
                let ev = Event::ChannelMessage {
                    ch: id,
                    account: get("account"),
                    uid: V::from_f64(0.0),
                    msg: get("msg"),
                };
                found.push((n, m.get("id").as_ref().and_then(as_u64), ev));
            }
        }
        let lost = (upto - after).saturating_sub(found.len() as u64);
        if lost > 0 {
            self.events.push_back(Event::ChannelMessagesLost {
                ch: id,
                count: lost,
            });
        }
        for (_, sent, ev) in found {
            if self.chans.seen.first_time(sent) {
                self.events.push_back(ev);
            }
        }
        if let Some(c) = self.chans.map.get_mut(&ch) {
            c.last_msg = Some(upto);
            c.held = Some(held);
        }
        self.release_held(ch, upto);
    }

    /// Deliver the live events that waited, in order, each message once (numbered above
    /// the last delivered, and above `floor`; of an identity not delivered before).
    fn release_held(&mut self, ch: u32, floor: u64) {
        let Some(c) = self.chans.map.get_mut(&ch) else {
            return;
        };
        let held = c.held.take().unwrap_or_default();
        let mut last = c.last_msg.unwrap_or(0).max(floor);
        for (n, sent, ev) in held {
            if let Some(n) = n {
                if n <= last {
                    continue;
                }
                last = n;
            }
            if self.chans.seen.first_time(sent) {
                self.events.push_back(ev);
            }
        }
        if c.last_msg.is_some() {
            c.last_msg = Some(last);
        }
    }

    /// `channel.history(limit)` (opensig): the channel's latest `limit` kept messages
    /// (members only); completes with `Done` and the reply (`msgs`, `last`).
    pub fn channel_history(&mut self, name: &str, limit: u64, now: Millis) -> ReqId {
        let check = self.cfg.limits.check_channel(name);
        let body = Body::new().s("name", name).n("max", limit).0;
        self.checked(
            check,
            call::CHANNEL_HISTORY,
            body,
            Kind::User,
            "history",
            now,
        )
    }

    /// `channel.channelLeave()`; completes with `ChannelLeft` and `Done`.
    pub fn channel_leave(&mut self, ch: ChannelId, name: &str, now: Millis) -> ReqId {
        let name = match self.chans.map.get_mut(&ch.0) {
            Some(c) => {
                c.state = ChanState::Left;
                c.name.clone()
            }
            None => name.into(),
        };
        let body = Body::new().s("name", &name).0;
        self.request(
            call::CHANNEL_LEAVE,
            body,
            Kind::Leave { ch: ch.0 },
            "channelLeave",
            now,
        )
    }

    /// `channel.messageChannelSend(msg)`; `force` sends without membership
    /// (`messageChannelSendForce`).
    pub fn channel_send(&mut self, name: &str, text: &str, force: bool, now: Millis) -> ReqId {
        let l = &self.cfg.limits;
        let check = l
            .check_channel(name)
            .and_then(|_| Limits::check_len(text.len(), l.channel_message_max_bytes));
        let mut body = Body::new().s("name", name).s("msg", text);
        body = body.s("msgID", &self.unique_id());
        if let Some(c) = self
            .live_channel(name)
            .and_then(|ch| self.chans.map.get(&ch))
        {
            body = seen(body, c);
        }
        if force {
            body = body.raw("force", "true");
        }
        let op = if force {
            "messageChannelSendForce"
        } else {
            "messageChannelSend"
        };
        self.checked(check, call::CHANNEL_SENDMSG, body.0, Kind::User, op, now)
    }

    /// `channelSetAttr` (`value` Some), `channelDelAttr` (`name` Some, `value` None) or
    /// `channelClearAttr` (both None).
    pub fn channel_attr(
        &mut self,
        channel: &str,
        name: Option<&str>,
        value: Option<&str>,
        now: Millis,
    ) -> ReqId {
        let l = &self.cfg.limits;
        let mut check = l.check_channel(channel);
        let mut body = Body::new().s("channel", channel);
        let (fname, op) = match (name, value) {
            (Some(n), Some(v)) => {
                check = check
                    .and_then(|_| l.check_attr_name(n))
                    .and_then(|_| Limits::check_len(v.len(), l.attr_value_max_bytes));
                body = body.s("name", n).s("value", v);
                (call::CHANNEL_SET_ATTR, "channelSetAttr")
            }
            (Some(n), None) => {
                check = check.and_then(|_| l.check_attr_name(n));
                body = body.s("name", n);
                (call::CHANNEL_DEL_ATTR, "channelDelAttr")
            }
            _ => (call::CHANNEL_CLEAR_ATTR, "channelClearAttr"),
        };
        self.checked(check, fname, body.0, Kind::User, op, now)
    }
}

/// The channel's numbers `c` saw ([`crate::frame::Seen`]), when it saw any: the server has
/// the channel's next ones pass them, should it have lost the writes that used them.
fn seen<V>(mut body: Body, c: &Chan<V>) -> Body {
    if c.last_seq > 0 {
        body = body.n(SEEN_SEQ, c.last_seq);
    }
    if let Some(n) = c.last_msg.filter(|n| *n > 0) {
        body = body.n(SEEN_MSG, n);
    }
    body
}
