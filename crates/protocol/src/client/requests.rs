//! The call2 table: requests queued until the session is logged in, requests in flight, their
//! timeouts, and the replies (`call2-ret`), which are routed to the part that asked.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::{frames, Client, Event, Failure, Millis, ReqId, State};
use crate::codes::{Code, ErrorKind};
use crate::json::{as_u64, push_u64, JsonValue};
use crate::names::fixed;
use crate::small::{Queue, VecMap};

/// How a channel join was asked for (what its reply means).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum JoinMode {
    /// `channelJoin` of a new Channel: `ChannelJoined` or `ChannelJoinFailed`.
    Initial,
    /// Rejoin after a reconnect: a fresh member list; a failure leaves with 604.
    Rejoin,
    /// `channelJoin` again for a Channel that is joined: `ChannelJoined` and a fresh list.
    Again,
    /// Joined again on the server's `rejoin` notice: a fresh list, what was missed fetched;
    /// a failure changes nothing.
    Check,
}

/// Who waits for a reply.
#[derive(Clone, Debug)]
pub(super) enum Kind {
    /// App request: report `Done`.
    User,
    /// Mailbox poll.
    GetMsg,
    /// Channel join.
    Join { ch: u32, mode: JoinMode },
    /// Channel leave.
    Leave { ch: u32 },
    /// Outgoing invite.
    Invite { call: u32 },
    /// Automatic invite ack: nobody waits for it.
    Silent,
    /// user_logout.
    Logout,
    /// Token renewal: on refusal the token in use goes back from `renewed` to `previous`.
    RenewToken { previous: String, renewed: String },
    /// A rejoined channel's missed messages: numbered above `after` up to `upto` (the
    /// channel's latest number when the rejoin was made).
    Recover { ch: u32, after: u64, upto: u64 },
    /// An app's subscribe: its reply's states are all reported.
    Watch,
    /// The subscribe again after a reconnect: only what changed is reported.
    Rewatch,
}

#[derive(Clone, Debug)]
pub(super) struct Req {
    pub(super) id: u32,
    name: String,
    /// Members of the args object without braces and without `line`.
    body: String,
    pub(super) kind: Kind,
    pub(super) op: &'static str,
    deadline: Millis,
}

/// Requests waiting for the login, and requests in flight.
#[derive(Debug, Default)]
pub(super) struct Requests {
    queue: Queue<Req>,
    in_flight: VecMap<u32, Req>,
}

impl Requests {
    /// The earliest request timeout.
    pub(super) fn deadline(&self) -> Option<Millis> {
        self.in_flight
            .values()
            .chain(self.queue.iter())
            .map(|r| r.deadline)
            .min()
    }
}

pub(super) fn fail<V>(err: ErrorKind) -> Failure<V> {
    Failure {
        err: err.as_str().to_string(),
        code: err.code(),
        raw: None,
    }
}

fn wrong_resp(text: Option<&str>) -> String {
    let mut s = String::from("wrong resp:");
    s.push_str(text.unwrap_or(""));
    s
}

impl<V: JsonValue> Client<V> {
    /// A message id for the server to drop resent duplicates: the same for a resend (it is
    /// made once, with the request), different for every message of every session.
    pub(super) fn unique_id(&mut self) -> String {
        let n = self.new_id();
        let mut s = String::new();
        push_u64(&mut s, self.id_tag);
        s.push('-');
        push_u64(&mut s, n as u64);
        s
    }

    /// A request that fails at once (locally) with `err`.
    pub(super) fn failed_now(&mut self, err: ErrorKind, op: &'static str) -> ReqId {
        let id = self.new_id();
        self.events.push_back(Event::Error {
            name: op,
            code: err.code(),
            desc: err.as_str().into(),
        });
        self.events.push_back(Event::Done {
            req: ReqId(id),
            result: Err(fail(err)),
        });
        ReqId(id)
    }

    /// Send `name` unless `check` (or the session's state) refuses it locally.
    pub(super) fn checked(
        &mut self,
        check: Result<(), ErrorKind>,
        name: &str,
        body: String,
        kind: Kind,
        op: &'static str,
        now: Millis,
    ) -> ReqId {
        let check = check.and_then(|_| {
            if self.state == State::LoggedOut {
                Err(ErrorKind::NotLoggedIn)
            } else {
                Ok(())
            }
        });
        match check {
            Ok(()) => self.request(name, body, kind, op, now),
            Err(e) => {
                let req = self.new_req(name, body, kind, op, now);
                let id = req.id;
                self.complete(req, Err(fail(e)), now);
                ReqId(id)
            }
        }
    }

    fn new_req(
        &mut self,
        name: &str,
        body: String,
        kind: Kind,
        op: &'static str,
        now: Millis,
    ) -> Req {
        Req {
            id: self.new_id(),
            name: name.into(),
            body,
            kind,
            op,
            deadline: now + self.cfg.limits.request_timeout_ms,
        }
    }

    /// Send now when logged in, else after the login (in order).
    pub(super) fn request(
        &mut self,
        name: &str,
        body: String,
        kind: Kind,
        op: &'static str,
        now: Millis,
    ) -> ReqId {
        let r = self.new_req(name, body, kind, op, now);
        let id = r.id;
        if self.state == State::LoggedIn {
            self.transmit(r);
        } else {
            self.reqs.queue.push_back(r);
        }
        ReqId(id)
    }

    /// Like `request`, ahead of everything queued.
    pub(super) fn request_front(
        &mut self,
        name: &str,
        body: String,
        kind: Kind,
        op: &'static str,
        now: Millis,
    ) {
        let r = self.new_req(name, body, kind, op, now);
        if self.state == State::LoggedIn {
            self.transmit(r);
        } else {
            self.reqs.queue.push_front(r);
        }
    }

    /// Send what waited for the login.
    pub(super) fn flush(&mut self) {
        while self.state == State::LoggedIn {
            let Some(r) = self.reqs.queue.pop_front() else {
                break;
            };
            self.transmit(r);
        }
    }

    fn transmit(&mut self, r: Req) {
        let text = frames::call2(&r.name, r.id as u64, &r.body, &self.link.line);
        self.send_text(text);
        self.reqs.in_flight.insert(r.id, r);
    }

    /// The connection was lost: requests in flight are sent again after the re-login (with
    /// the same message ids, so the server drops duplicates); mailbox polls and rejoins are
    /// simply redone. Returns true when a logout was in flight (the session is then over).
    pub(super) fn requeue_in_flight(&mut self, now: Millis) -> bool {
        let lost: Vec<Req> = core::mem::take(&mut self.reqs.in_flight)
            .into_values()
            .collect();
        for r in lost.into_iter().rev() {
            match r.kind {
                Kind::GetMsg => {}
                Kind::Join {
                    mode: JoinMode::Rejoin,
                    ..
                }
                | Kind::Recover { .. } => {}
                Kind::Logout => {
                    self.finish_logout(now);
                    return true;
                }
                _ => self.reqs.queue.push_front(r),
            }
        }
        false
    }

    /// The session ended: everything still waiting fails with `session_ended`.
    pub(super) fn fail_all_requests(&mut self, now: Millis) {
        let waiting: Vec<Req> = core::mem::take(&mut self.reqs.in_flight)
            .into_values()
            .chain(core::mem::take(&mut self.reqs.queue))
            .collect();
        for r in waiting {
            if !matches!(r.kind, Kind::Logout) {
                self.complete(r, Err(fail(ErrorKind::SessionEnded)), now);
            }
        }
    }

    /// Requests past their deadline fail with `timeout`.
    pub(super) fn request_timeouts(&mut self, now: Millis) {
        let expired: Vec<u32> = self
            .reqs
            .in_flight
            .values()
            .filter(|r| now >= r.deadline)
            .map(|r| r.id)
            .collect();
        for id in expired {
            if let Some(r) = self.reqs.in_flight.remove(&id) {
                if matches!(r.kind, Kind::GetMsg) {
                    self.mailbox.forget_poll();
                }
                self.complete(r, Err(fail(ErrorKind::Timeout)), now);
            }
        }
        while let Some(pos) = self.reqs.queue.iter().position(|r| now >= r.deadline) {
            if let Some(r) = self.reqs.queue.remove(pos) {
                self.complete(r, Err(fail(ErrorKind::Timeout)), now);
            }
        }
    }

    /// A `call2-ret` arrived.
    pub(super) fn on_call2_ret(&mut self, p: V, now: Millis) {
        let Some(id) = p
            .at(0)
            .and_then(|i| as_u64(&i).or_else(|| i.as_string().and_then(|s| s.parse().ok())))
        else {
            return;
        };
        let Some(req) = self.reqs.in_flight.remove(&(id as u32)) else {
            return; // unknown or duplicate reply
        };
        let err = p.at(1).and_then(|e| e.as_string()).unwrap_or_default();
        let raw = p.at(2);
        let result = if !err.is_empty() {
            Err(Failure {
                code: crate::codes::call_error_code(&err),
                err,
                raw,
            })
        } else {
            let text = raw.as_ref().and_then(|r| r.as_string());
            match text.as_deref().and_then(V::parse) {
                Some(body) => {
                    let result = body.get("result").and_then(|r| r.as_string());
                    if result.as_deref() == Some(fixed::RESULT_OK) {
                        Ok(body)
                    } else {
                        // data.result, then reason, then result (the original's order)
                        let e = body
                            .get("data")
                            .and_then(|d| d.get("result"))
                            .and_then(|r| r.as_string())
                            .or_else(|| body.get("reason").and_then(|r| r.as_string()))
                            .or(result)
                            .unwrap_or_else(|| wrong_resp(text.as_deref()));
                        Err(Failure {
                            code: crate::codes::call_error_code(&e),
                            err: e,
                            raw: Some(body),
                        })
                    }
                }
                None => Err(Failure {
                    err: wrong_resp(text.as_deref()),
                    code: Code::General,
                    raw,
                }),
            }
        };
        self.complete(req, result, now);
    }

    /// A request is over: tell the part that asked, and the app.
    pub(super) fn complete(&mut self, req: Req, result: Result<V, Failure<V>>, now: Millis) {
        match req.kind {
            Kind::User => {}
            Kind::Silent => return,
            Kind::GetMsg => {
                self.on_getmsg_reply(result, now);
                return;
            }
            Kind::Logout => {
                if self.state != State::LoggedOut {
                    self.finish_logout(now);
                }
                return;
            }
            Kind::Join { ch, mode } => {
                self.join_reply(ch, mode, &result, now);
                if let (Err(f), JoinMode::Initial | JoinMode::Again) = (&result, mode) {
                    self.events.push_back(Event::Error {
                        name: req.op,
                        code: f.code,
                        desc: f.err.clone(),
                    });
                }
                return;
            }
            Kind::Recover { ch, after, upto } => {
                self.recovered(ch, after, upto, result.ok());
                return;
            }
            Kind::Rewatch => {
                if let Some(status) = result.ok().and_then(|b| b.get("status")) {
                    self.peer_states(&status, false);
                }
                return;
            }
            Kind::Watch => {
                if let Some(status) = result.as_ref().ok().and_then(|b| b.get("status")) {
                    self.peer_states(&status, true);
                }
            }
            Kind::Leave { ch } => {
                self.left(ch);
                // a leave always "succeeds" for the app (the original treats any reply as left)
                self.events.push_back(Event::Done {
                    req: ReqId(req.id),
                    result: Ok(result.unwrap_or_else(|_| V::from_string(""))),
                });
                return;
            }
            Kind::Invite { call } => {
                if let Err(f) = &result {
                    self.invite_refused(call, f);
                }
            }
            Kind::RenewToken {
                ref previous,
                ref renewed,
            } => {
                if result.is_err() {
                    let (previous, renewed) = (previous.clone(), renewed.clone());
                    self.token_refused(previous, &renewed, now);
                }
            }
        }
        if let Err(f) = &result {
            self.events.push_back(Event::Error {
                name: req.op,
                code: f.code,
                desc: f.err.clone(),
            });
        }
        self.events.push_back(Event::Done {
            req: ReqId(req.id),
            result,
        });
    }
}
