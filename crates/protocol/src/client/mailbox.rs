//! The mode-0 mailbox (`user_getmsg` with `ver_clear`), inline deliveries (`recvmsg`), the
//! msg-v3 dedup set, and what a user message becomes (instant messages, call signalling).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::{
    frames::Body, requests::Kind, ChannelId, Client, ConnId, Direct, Event, Millis, State,
};
use crate::json::{as_u64, JsonValue};
use crate::msg;
use crate::names::{call, field::SEEN_ID, msgtype, notify};

const MAILBOX_PAGE: u64 = 30;
const ACK_DELAY_MS: Millis = 1_000;
const RESYNC_MS: Millis = 60_000;
const DEDUP_MAX: usize = 2048;

#[derive(Default, Debug)]
pub(super) struct Mailbox {
    /// Highest version processed locally (sent as `ver_clear`); survives reconnects.
    acked: u64,
    /// The msg-v3 id of the message processed at `acked`, when known (sent as `seen_id`: the
    /// server numbers its mailbox again when it holds another message there).
    acked_id: Option<String>,
    /// Highest version announced by the server.
    notified: u64,
    /// `ver_clear` of the last reply.
    server_clear: u64,
    last_poll: Millis,
    in_flight: bool,
    /// When processed-but-unacknowledged messages must be acknowledged.
    ack_due: Option<Millis>,
}

impl Mailbox {
    /// The next acknowledgement or periodic resync.
    pub(super) fn deadline(&self, logged_in: bool) -> Option<Millis> {
        if !logged_in {
            return None;
        }
        let resync = (!self.in_flight).then_some(self.last_poll + RESYNC_MS);
        super::earliest([self.ack_due, resync])
    }

    /// The poll in flight (if any) is gone with its connection or timed out.
    pub(super) fn forget_poll(&mut self) {
        self.in_flight = false;
    }

    /// The session ended.
    pub(super) fn stop(&mut self) {
        self.ack_due = None;
    }
}

/// Seen msg-v3 ids, forgotten after the dedup window and capped in number.
#[derive(Default, Debug)]
pub(super) struct Dedup {
    seen: Vec<(Millis, String)>,
}

impl Dedup {
    fn first_time(&mut self, id: &str, now: Millis, window: Millis) -> bool {
        let expired = self
            .seen
            .iter()
            .take_while(|(t, _)| now.saturating_sub(*t) > window)
            .count()
            .max(self.seen.len().saturating_sub(DEDUP_MAX - 1));
        if expired > 0 {
            self.seen.drain(..expired);
        }
        if self.seen.iter().any(|(_, s)| s == id) {
            return false;
        }
        self.seen.push((now, id.to_string()));
        true
    }
}

impl<V: JsonValue> Client<V> {
    /// Acknowledge what was processed, or resync after a quiet minute.
    pub(super) fn mailbox_timeouts(&mut self, now: Millis) {
        let ack_due = self.mailbox.ack_due.is_some_and(|t| now >= t);
        let idle = now >= self.mailbox.last_poll + RESYNC_MS;
        if ack_due || idle {
            self.poll_mailbox(now);
        }
    }

    /// A `notify` frame: channel events go to the channels, the rest is mail.
    pub(super) fn on_notify(&mut self, p: V, now: Millis) {
        // string form: "x kind arg" → [kind, arg]
        let (kind, arg1) = match p.as_string() {
            Some(s) => {
                let f = msg::python_split(&s, 2);
                if f.len() < 3 {
                    return;
                }
                (
                    f[1].to_string(),
                    V::parse(f[2]).or_else(|| Some(V::from_string(f[2]))),
                )
            }
            None => match p.at(0).and_then(|k| k.as_string()) {
                Some(k) => (k, p.at(1)),
                None => return,
            },
        };
        match kind.as_str() {
            notify::CHANNEL2 => {
                let channel = arg1.and_then(|c| c.as_string()).unwrap_or_default();
                let seq = p.at(2).as_ref().and_then(as_u64).unwrap_or(0);
                let Some(value) = p.at(3) else { return };
                let text = value.as_string().unwrap_or_default();
                let number = p.at(4).as_ref().and_then(as_u64);
                let id = p.at(5).as_ref().and_then(as_u64);
                self.on_channel2(&channel, (seq, number, id), &value, &text, now);
            }
            notify::MSG => {
                let v = arg1.as_ref().and_then(as_u64).unwrap_or(0);
                self.mailbox.notified = self.mailbox.notified.max(v);
                self.poll_mailbox(now);
            }
            notify::RECVMSG => {
                let Some(text) = arg1.and_then(|a| a.as_string()) else {
                    return;
                };
                let Some(pair) = V::parse(&text) else { return };
                let (Some(v), Some(m)) = (
                    pair.at(0).as_ref().and_then(as_u64),
                    pair.at(1).and_then(|m| m.as_string()),
                ) else {
                    return;
                };
                if self.inline_in_order(v, now) {
                    self.process_user_message(&m, now, true);
                } else if v <= self.mailbox.acked && self.process_user_message(&m, now, false) {
                    // a version processed already, with a message never seen: the mailbox's
                    // numbering went back (the server lost the messages that used it); the
                    // poll makes it number what it holds again after what was processed
                    self.poll_mailbox(now);
                }
            }
            notify::RECVMSG_BY_MSGID => {
                if let Some(m) = arg1.and_then(|a| a.as_string()) {
                    self.process_user_message(&m, now, false);
                }
            }
            notify::REJOIN => self.rejoin_channels(super::requests::JoinMode::Check, now),
            notify::PEER_STATUS => {
                let text = arg1.and_then(|a| a.as_string()).unwrap_or_default();
                if let Some(status) = V::parse(&text) {
                    self.peer_states(&status, false);
                }
            }
            _ => {}
        }
    }

    pub(super) fn poll_mailbox(&mut self, now: Millis) {
        if self.mailbox.in_flight || self.state != State::LoggedIn {
            return;
        }
        self.mailbox.in_flight = true;
        self.mailbox.last_poll = now;
        self.mailbox.ack_due = None;
        let mut body = Body::new()
            .n("ver_clear", self.mailbox.acked)
            .n("max", MAILBOX_PAGE);
        if let Some(id) = &self.mailbox.acked_id {
            body = body.s(SEEN_ID, id);
        }
        let body = body.0;
        self.request_front(call::USER_GETMSG, body, Kind::GetMsg, "getmsg", now);
    }

    pub(super) fn on_getmsg_reply(&mut self, result: Result<V, super::Failure<V>>, now: Millis) {
        self.mailbox.in_flight = false;
        let Ok(body) = result else { return };
        let Some(clear) = body.get("ver_clear").as_ref().and_then(as_u64) else {
            self.log("mailbox reply without ver_clear");
            return;
        };
        self.mailbox.server_clear = clear;
        if clear > self.mailbox.acked {
            self.mailbox.acked = clear;
            self.mailbox.acked_id = None;
        }
        let msgs = body.get("msgs");
        let count = msgs.as_ref().and_then(|m| m.array_len()).unwrap_or(0);
        for i in 0..count {
            let Some(entry) = msgs.as_ref().and_then(|m| m.at(i)) else {
                continue;
            };
            let (Some(v), Some(text)) = (
                entry.at(0).as_ref().and_then(as_u64),
                entry.at(1).and_then(|t| t.as_string()),
            ) else {
                continue;
            };
            if v > self.mailbox.acked {
                self.mailbox.acked = v;
                self.process_user_message(&text, now, true);
            }
        }
        if count as u64 >= MAILBOX_PAGE || self.mailbox.acked < self.mailbox.notified {
            // more pages, or news that arrived meanwhile: fetch (and acknowledge) now
            self.poll_mailbox(now);
        } else if self.mailbox.server_clear < self.mailbox.acked {
            self.mailbox.ack_due.get_or_insert(now + ACK_DELAY_MS);
        }
    }

    /// An inline delivery of mailbox version `v`: whether it is the next one (then it counts
    /// as processed); a later one makes the mailbox be polled for what is missing.
    fn inline_in_order(&mut self, v: u64, now: Millis) -> bool {
        if v == self.mailbox.acked + 1 {
            self.mailbox.acked = v;
            self.mailbox.ack_due.get_or_insert(now + ACK_DELAY_MS);
            return true;
        }
        if v > self.mailbox.acked {
            self.mailbox.notified = self.mailbox.notified.max(v);
            self.poll_mailbox(now);
        }
        false
    }

    /// An instant message delivered inline that the driver read and would deliver itself
    /// (as [`Client::channel_event_direct`] for channel events): `Deliver` when nothing of
    /// the core's is queued and it is the next version (the session's callback: channel id
    /// 0, which no channel has), `Dropped` for an id seen before, `Full` otherwise (nothing
    /// changed).
    pub fn instant_direct(
        &mut self,
        conn: ConnId,
        v: u64,
        id: Option<&str>,
        now: Millis,
    ) -> Direct {
        if !self.events.is_empty() || !self.is_current(conn) || v != self.mailbox.acked + 1 {
            return Direct::Full;
        }
        self.received(conn, now);
        self.inline_in_order(v, now);
        self.mailbox.acked_id = id.map(String::from);
        if self.first_time(id, now) {
            Direct::Deliver(ChannelId(0))
        } else {
            Direct::Dropped
        }
    }

    /// Whether a message with msg-v3 id `id` (none: msg-v2) is new.
    fn first_time(&mut self, id: Option<&str>, now: Millis) -> bool {
        let window = self.cfg.limits.dedup_window_secs * 1000;
        id.is_none_or(|id| self.dedup.first_time(id, now, window))
    }

    /// A user message: delivered unless its msg-v3 id was seen before (returns whether it
    /// was new). `at_acked`: it is the message processed at the acknowledged version.
    fn process_user_message(&mut self, text: &str, now: Millis, at_acked: bool) -> bool {
        let Some(m) = msg::parse(text) else {
            return false;
        };
        if at_acked {
            self.mailbox.acked_id = m.id.map(String::from);
        }
        if !self.first_time(m.id, now) {
            return false;
        }
        if m.kind == msgtype::INSTANT {
            self.events.push_back(Event::MessageInstant {
                account: V::from_string(m.source),
                msg: V::from_string(m.content),
            });
        } else if m.kind.starts_with(msgtype::VOIP_PREFIX) {
            let Some(content) = V::parse(m.content) else {
                self.log("ignored a call message whose content is not JSON");
                return true;
            };
            let channel = content
                .get("channel")
                .and_then(|c| c.as_string())
                .unwrap_or_default();
            let peer = content
                .get("peer")
                .and_then(|c| c.as_string())
                .unwrap_or_default();
            let extra = content.get("extra").unwrap_or_else(|| V::from_string(""));
            let code = content
                .get("ecode")
                .as_ref()
                .and_then(as_u64)
                .map(|c| c as u32);
            self.on_voip(m.kind, channel, peer, extra, code, now);
        }
        true
    }
}
