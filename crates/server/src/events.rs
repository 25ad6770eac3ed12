//! Events out: what happens in opensig, as typed domain events, once, above the stores.
//!
//! The rules ([`crate::signaling`]) say what happened ([`Happened`]). The events a change
//! causes ride with it: [`Events::outbox`] gives each its id, time and ordering key and the
//! step's outcome it depends on, and the store appends those whose outcome happened to the
//! app's event log (a partition chosen by the key, so events of one user or one channel stay
//! in order) in the same atomic step as the change ([`StepEvents`]). Steps that are events of
//! their own (a kick, an invitation the server ends, attributes expiring) are appended by
//! [`Events::emit`]. Either way before the request that caused them is answered; consumers
//! read the log beside WebSocket delivery ([`crate::webhooks`] today). An app nobody listens
//! to costs nothing: no event is built.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opensig_protocol::ident::AppId;
use opensig_protocol::names::domain;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use tokio::sync::Notify;

use crate::config::LimitsNow;
use crate::store::{now_ms, EventCap, EventText, Planned, StepEvents, Store, When};

/// Partitions of an app's event log: events of one key are in one partition, in order.
/// Changing it moves keys between partitions (events in flight may then be reordered once).
pub const PARTITIONS: u32 = 8;

/// An invitation as events name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Who invited.
    pub caller: String,
    /// Whom.
    pub callee: String,
    /// Into which channel.
    pub channel: String,
}

/// Something that happened, with what a backend needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened {
    /// An account came online.
    UserOnline {
        /// Account.
        account: String,
    },
    /// An account went offline.
    UserOffline {
        /// Account.
        account: String,
        /// One of [`domain::offline`].
        reason: &'static str,
    },
    /// A session was ended by someone else.
    UserKicked {
        /// Account.
        account: String,
        /// One of [`domain::kicked_by`].
        by: &'static str,
    },
    /// A channel got its first member.
    ChannelOccupied {
        /// Channel.
        channel: String,
    },
    /// A channel's last member left.
    ChannelVacated {
        /// Channel.
        channel: String,
    },
    /// An account joined a channel.
    MemberJoined {
        /// Channel.
        channel: String,
        /// Account.
        account: String,
    },
    /// An account left a channel.
    MemberLeft {
        /// Channel.
        channel: String,
        /// Account.
        account: String,
    },
    /// A channel message.
    ChannelMessage {
        /// Channel.
        channel: String,
        /// Sender.
        from: String,
        /// Text.
        text: String,
    },
    /// A channel attribute changed.
    ChannelAttr {
        /// Channel.
        channel: String,
        /// Who changed it (`""`: the server).
        by: String,
        /// `update`, `del` or `clear` (the protocol's attribute change kinds).
        op: &'static str,
        /// Attribute (`""` for `clear`).
        name: String,
        /// New value (`""` for `del` and `clear`).
        value: String,
    },
    /// A peer message was stored for an offline account.
    MessageOffline {
        /// Sender.
        from: String,
        /// Recipient.
        to: String,
        /// Text.
        text: String,
        /// Seconds it is kept.
        ttl_secs: u64,
    },
    /// An invitation's step: sent, received, accepted, refused or ended ([`domain`] type).
    Invite {
        /// The event type.
        kind: &'static str,
        /// Which invitation.
        call: Call,
        /// Who took the step (`invite.ended`: either side).
        by: String,
        /// The `extra` of the step (JSON text; `""` when none).
        extra: String,
    },
    /// The server ended an invitation.
    InviteFailed {
        /// Which invitation.
        call: Call,
        /// The caller's `extra` (JSON text).
        extra: String,
        /// The code the caller's `onInviteFailed` gets.
        code: u32,
        /// One of [`domain::invite_failed`].
        reason: &'static str,
    },
    /// A test delivery.
    WebhookTest,
}

impl Happened {
    /// The event's type ([`domain`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Happened::UserOnline { .. } => domain::USER_ONLINE,
            Happened::UserOffline { .. } => domain::USER_OFFLINE,
            Happened::UserKicked { .. } => domain::USER_KICKED,
            Happened::ChannelOccupied { .. } => domain::CHANNEL_OCCUPIED,
            Happened::ChannelVacated { .. } => domain::CHANNEL_VACATED,
            Happened::MemberJoined { .. } => domain::MEMBER_JOINED,
            Happened::MemberLeft { .. } => domain::MEMBER_LEFT,
            Happened::ChannelMessage { .. } => domain::CHANNEL_MESSAGE,
            Happened::ChannelAttr { .. } => domain::CHANNEL_ATTR,
            Happened::MessageOffline { .. } => domain::MESSAGE_OFFLINE,
            Happened::Invite { kind, .. } => kind,
            Happened::InviteFailed { .. } => domain::INVITE_FAILED,
            Happened::WebhookTest => domain::WEBHOOK_TEST,
        }
    }

    /// What orders it: events of one user (`u:<account>`) or one channel (`c:<channel>`)
    /// reach a consumer in the order they happened. An invitation's events are its caller's.
    pub fn key(&self) -> String {
        match self {
            Happened::UserOnline { account }
            | Happened::UserOffline { account, .. }
            | Happened::UserKicked { account, .. } => format!("u:{account}"),
            Happened::ChannelOccupied { channel }
            | Happened::ChannelVacated { channel }
            | Happened::MemberJoined { channel, .. }
            | Happened::MemberLeft { channel, .. }
            | Happened::ChannelMessage { channel, .. }
            | Happened::ChannelAttr { channel, .. } => format!("c:{channel}"),
            Happened::MessageOffline { to, .. } => format!("u:{to}"),
            Happened::Invite { call, .. } | Happened::InviteFailed { call, .. } => {
                format!("u:{}", call.caller)
            }
            Happened::WebhookTest => String::new(),
        }
    }
}

/// An invitation's `extra` as events carry it: JSON when it is JSON, else its text (`""`:
/// null).
struct Extra<'a>(&'a str);

impl Serialize for Extra<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            "" => s.serialize_none(),
            e => match serde_json::from_str::<Value>(e) {
                Ok(v) => v.serialize(s),
                Err(_) => s.serialize_str(e),
            },
        }
    }
}

/// The event's `data`, written straight from the fields (no tree built: one is rendered for
/// every step of an app that listens, most of them never appended).
struct Data<'a>(&'a Happened);

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self.0 {
            Happened::UserOnline { account } => m.serialize_entry("account", account)?,
            Happened::UserOffline { account, reason } => {
                m.serialize_entry("account", account)?;
                m.serialize_entry("reason", reason)?;
            }
            Happened::UserKicked { account, by } => {
                m.serialize_entry("account", account)?;
                m.serialize_entry("by", by)?;
            }
            Happened::ChannelOccupied { channel } | Happened::ChannelVacated { channel } => {
                m.serialize_entry("channel", channel)?
            }
            Happened::MemberJoined { channel, account }
            | Happened::MemberLeft { channel, account } => {
                m.serialize_entry("channel", channel)?;
                m.serialize_entry("account", account)?;
            }
            Happened::ChannelMessage {
                channel,
                from,
                text,
            } => {
                m.serialize_entry("channel", channel)?;
                m.serialize_entry("from", from)?;
                m.serialize_entry("text", text)?;
            }
            Happened::ChannelAttr {
                channel,
                by,
                op,
                name,
                value,
            } => {
                m.serialize_entry("channel", channel)?;
                m.serialize_entry("by", by)?;
                m.serialize_entry("op", op)?;
                m.serialize_entry("name", name)?;
                m.serialize_entry("value", value)?;
            }
            Happened::MessageOffline {
                from,
                to,
                text,
                ttl_secs,
            } => {
                m.serialize_entry("from", from)?;
                m.serialize_entry("to", to)?;
                m.serialize_entry("text", text)?;
                m.serialize_entry("ttl", ttl_secs)?;
            }
            Happened::Invite {
                call, by, extra, ..
            } => {
                m.serialize_entry("caller", &call.caller)?;
                m.serialize_entry("callee", &call.callee)?;
                m.serialize_entry("channel", &call.channel)?;
                m.serialize_entry("by", by)?;
                m.serialize_entry("extra", &Extra(extra))?;
            }
            Happened::InviteFailed {
                call,
                extra,
                code,
                reason,
            } => {
                m.serialize_entry("caller", &call.caller)?;
                m.serialize_entry("callee", &call.callee)?;
                m.serialize_entry("channel", &call.channel)?;
                m.serialize_entry("extra", &Extra(extra))?;
                m.serialize_entry("code", code)?;
                m.serialize_entry("reason", reason)?;
            }
            Happened::WebhookTest => {}
        }
        m.end()
    }
}

/// An event as consumers get it.
#[derive(serde::Serialize)]
struct Rendered<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    time: u64,
    app: &'a str,
    key: String,
    data: Data<'a>,
}

/// An event as consumers get it: `{"id","type","time","app","key","data"}` (JSON text).
pub fn render(id: &str, app: &str, time_ms: u64, happened: &Happened) -> String {
    let r = Rendered {
        id,
        kind: happened.kind(),
        time: time_ms,
        app,
        key: happened.key(),
        data: Data(happened),
    };
    serde_json::to_string(&r).unwrap_or_default()
}

/// The partition of an ordering key.
pub fn partition(key: &str) -> u32 {
    stable_hash(key) % PARTITIONS
}

/// Which of `units` places a channel or an account is in, by its name: a store that spreads
/// an app over several places (the Redis store's units, `redis_partitions`) keeps the
/// channel's or the account's state there, and the events keyed by it.
pub fn unit_of_name(name: &str, units: u32) -> u32 {
    stable_hash(name) % units.max(1)
}

/// The partition of an ordering key among an app's `partitions` (the store's
/// [`crate::store::Store::event_partitions`]: [`PARTITIONS`] per place): the place of the
/// channel or account the key names ([`unit_of_name`]), then [`partition`] within it — so an
/// event rides with the step of its channel or account, in the same place.
pub fn partition_among(key: &str, partitions: u32) -> u32 {
    let units = (partitions / PARTITIONS).max(1);
    let unit = match key.split_at_checked(2) {
        Some(("u:" | "c:", name)) => unit_of_name(name, units),
        _ => 0,
    };
    unit * PARTITIONS + partition(key)
}

/// FNV-1a of a name: the same on every node and every build (what places an event in its
/// partition, and a channel in its app's unit on Redis).
pub fn stable_hash(key: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The bounds of one of the `partitions` of an app's log (the store's
/// [`Store::event_partitions`]), from the limits in force: the app's bounds shared out.
pub fn cap(l: &LimitsNow, partitions: u32) -> EventCap {
    let per = |n: usize| match n {
        0 => 0,
        n => (n / partitions.max(1) as usize).max(1),
    };
    EventCap {
        max_events: per(l.app_events_max),
        max_bytes: per(l.app_events_max_bytes),
        max_age: Duration::from_secs(l.webhook_retention_secs),
    }
}

/// Events kept of an app that only the console's live tail reads (no webhook endpoint), over
/// all its log's partitions: a short window, not the retention a delivery needs. Shared out
/// like [`cap`]'s bounds (256 per partition of the 8 of one store or one Redis unit; with more
/// units each keeps fewer, down to [`TAIL_ONLY_EVENTS_MIN`]), so the window does not grow
/// with `redis_partitions`.
pub const TAIL_ONLY_EVENTS: usize = 2048;
/// The fewest a partition keeps for the live tail, however many partitions share the window
/// (the most is then 16 × 8 × 64 units = 8,192 events of an app).
pub const TAIL_ONLY_EVENTS_MIN: usize = 16;
/// Bytes a tail-only event counts for in the window's byte bound.
const TAIL_ONLY_EVENT_BYTES: usize = 1024;
/// Seconds those are kept.
pub const TAIL_ONLY_SECS: u64 = 60;

/// The bounds of one of the `partitions` of `app`'s log: [`cap`], or a short window when
/// nothing but the console reads it.
pub fn cap_of(l: &LimitsNow, app: &str, partitions: u32) -> EventCap {
    let mut c = cap(l, partitions);
    if l.0.webhooks_of(app).next().is_none() {
        // (0 is "no cap": the window is tighter than any)
        let tighter = |n: usize, m: usize| if n == 0 { m } else { n.min(m) };
        let window = (TAIL_ONLY_EVENTS / partitions.max(1) as usize).max(TAIL_ONLY_EVENTS_MIN);
        c.max_events = tighter(c.max_events, window);
        c.max_bytes = tighter(c.max_bytes, window * TAIL_ONLY_EVENT_BYTES);
        let window = Duration::from_secs(TAIL_ONLY_SECS);
        c.max_age = if c.max_age.is_zero() {
            window
        } else {
            c.max_age.min(window)
        };
    }
    c
}

/// Where the rules send what happened.
pub struct Events {
    /// This process's id prefix (unique per boot): event ids are `<prefix>.<n>`.
    prefix: String,
    /// The partitions of an app's log in the store ([`Store::event_partitions`]).
    partitions: u32,
    seq: AtomicU64,
    /// Woken on every event this node appends (consumers poll for other nodes' events).
    pub appended: Arc<Notify>,
    /// Events this node appended, and failed to append.
    pub stats: EventStats,
}

/// Counters of the event stream on this node.
#[derive(Default)]
pub struct EventStats {
    /// Events appended to the log.
    pub appended: AtomicU64,
    /// Events that could not be appended (the store failed; logged).
    pub lost: AtomicU64,
}

impl Events {
    /// Events with ids starting `prefix`, for a store whose app logs have `partitions`.
    pub fn new(prefix: &str, partitions: u32) -> Events {
        Events {
            prefix: prefix.to_string(),
            partitions,
            seq: AtomicU64::new(0),
            appended: Arc::new(Notify::new()),
            stats: EventStats::default(),
        }
    }

    /// A new event id, unique in the cluster.
    pub fn next_id(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n:x}", self.prefix)
    }

    /// The events of a step of `app`, each appended on an outcome of the step (by the store,
    /// in the same atomic step as its change: [`StepEvents`]).
    pub fn outbox(
        &self,
        limits: &LimitsNow,
        app: &AppId,
        planned: impl IntoIterator<Item = (When, Happened)>,
    ) -> StepEvents {
        let now = now_ms();
        let events = planned
            .into_iter()
            .map(|(when, happened)| {
                let (id, app) = (self.next_id(), app.to_string());
                Planned {
                    when,
                    partition: partition_among(&happened.key(), self.partitions),
                    text: EventText::Later(Arc::new(move || render(&id, &app, now, &happened))),
                }
            })
            .collect();
        StepEvents {
            app: app.to_string(),
            events,
            cap: cap_of(limits, app, self.partitions),
        }
    }

    /// A step carrying `out` was made; `fired` says which of its outcomes happened.
    pub fn recorded(&self, out: &StepEvents, fired: impl Fn(When) -> bool) {
        let n = out.events.iter().filter(|e| fired(e.when)).count();
        if n > 0 {
            self.stats.appended.fetch_add(n as u64, Ordering::Relaxed);
            self.appended.notify_waiters();
        }
    }

    /// Append what happened in `app` to its log, before the caller goes on: for an event that
    /// is a step of its own (a kick, an invitation that failed), not the effect of a change
    /// in the store (those ride with the change, [`Events::outbox`]).
    pub async fn emit<S: Store>(
        &self,
        store: &S,
        limits: &LimitsNow,
        app: &AppId,
        happened: Happened,
    ) {
        let id = self.next_id();
        let key = happened.key();
        let text = render(&id, app, now_ms(), &happened);
        match store
            .event_append(
                app,
                partition_among(&key, self.partitions),
                &text,
                cap_of(limits, app, self.partitions),
            )
            .await
        {
            Ok(_) => {
                self.stats.appended.fetch_add(1, Ordering::Relaxed);
                self.appended.notify_waiters();
            }
            Err(e) => {
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(app = %app, kind = happened.kind(), "event not recorded: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_render_with_their_type_key_and_data() {
        let h = Happened::InviteFailed {
            call: Call {
                caller: "alice".into(),
                callee: "bob".into(),
                channel: "room".into(),
            },
            extra: r#"{"_timeout":5}"#.into(),
            code: 704,
            reason: domain::invite_failed::NO_ANSWER,
        };
        let v: Value = serde_json::from_str(&render("n.1", "app", 7, &h)).unwrap();
        assert_eq!(v["type"], "invite.failed");
        assert_eq!(v["key"], "u:alice");
        assert_eq!(v["data"]["extra"]["_timeout"], 5);
        assert_eq!(v["data"]["code"], 704);
        assert_eq!(v["data"]["reason"], "no_answer");
        assert_eq!(v["time"], 7);
        assert!(partition("u:alice") < PARTITIONS);
        assert_eq!(partition("u:alice"), partition("u:alice"));
    }

    #[test]
    fn an_event_is_placed_with_its_channel_or_account() {
        // one place: the key's partition
        for key in ["u:alice", "c:room", ""] {
            assert_eq!(partition_among(key, PARTITIONS), partition(key));
        }
        // three: the place of the name, then the key's partition there
        let p = 3 * PARTITIONS;
        for (key, name) in [("u:alice", "alice"), ("c:room", "room"), ("u:bob", "bob")] {
            let q = partition_among(key, p);
            assert_eq!(q / PARTITIONS, unit_of_name(name, 3), "{key}");
            assert_eq!(q % PARTITIONS, partition(key), "{key}");
        }
        // a key that names neither is in the first place
        assert_eq!(partition_among("", p), partition(""));
        let spread: std::collections::BTreeSet<u32> = (0..30)
            .map(|i| partition_among(&format!("u:user{i}"), p) / PARTITIONS)
            .collect();
        assert_eq!(spread.len(), 3, "accounts land in every place");
    }

    #[test]
    fn the_tail_only_window_is_the_app_s_however_many_partitions_share_it() {
        let l = LimitsNow(std::sync::Arc::new(crate::config::ServerConfig::default()));
        let kept = |partitions: u32| {
            let c = cap_of(&l, "app", partitions);
            assert_eq!(c.max_age, Duration::from_secs(TAIL_ONLY_SECS));
            assert_eq!(c.max_bytes, c.max_events * 1024);
            c.max_events
        };
        // one store's 8 partitions, or one Redis unit's: 256 each
        assert_eq!(kept(PARTITIONS), 256);
        // 3 units: the same 2,048 of the app over 24 partitions
        assert_eq!(kept(3 * PARTITIONS), 85);
        assert!(kept(3 * PARTITIONS) * 3 * PARTITIONS as usize <= TAIL_ONLY_EVENTS);
        // 64 units: the floor, 8,192 in all
        assert_eq!(kept(64 * PARTITIONS), TAIL_ONLY_EVENTS_MIN);
    }
}
