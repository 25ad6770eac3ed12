//! The store chosen at startup: in memory (default) or Redis (`--redis`). Delegation only.

use std::time::Duration;

use opensig_protocol::ident::{Account, AppId};

use super::memory::Memory;
use super::redis::{NodeSession, Redis};
use super::{
    Appended, AttrChange, AttrOutcome, Chan, ChannelPage, ChannelSettings, EventCap, EventPage,
    Footprint, History, InviteKey, InviteOpen, InviteRecord, InviteRelay, Joined, Joining, Leaving,
    MailItem, MailPage, Opening, Poll, Publish, Published, Relayed, SResult, StepEvents, Store,
    StoreError, Take, Timer, User, UserAttrSet, Work, WorkSender,
};
use crate::delivery::ConnHandle;

/// One of the stores.
#[derive(Clone)]
pub enum AnyStore {
    /// Single process.
    Memory(Memory),
    /// A node of a Redis-backed cluster.
    Redis(Redis),
}

/// A session of either store.
#[derive(Clone, Debug)]
pub enum AnySession {
    /// In memory.
    Memory(ConnHandle),
    /// In the cluster.
    Redis(NodeSession),
}

/// A due timer's handle in either store.
#[derive(Debug)]
pub enum AnyClaim {
    /// In memory.
    Memory(()),
    /// In the cluster.
    Redis((String, String)),
}

macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Memory($s) => $call,
            AnyStore::Redis($s) => $call,
        }
    };
}

/// The session given to the other store: a bug, refused rather than mixed up.
fn mismatch() -> StoreError {
    StoreError::BadReply("a session of the other store".into())
}

/// Forward one store's work to the rules, as work of `AnyStore`.
fn forward<S: Store>(
    store: &S,
    to: WorkSender<AnyStore>,
    session: fn(S::Session) -> AnySession,
    claim: fn(S::Claim) -> AnyClaim,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Work<S>>();
    store.run_work(tx);
    tokio::spawn(async move {
        while let Some(w) = rx.recv().await {
            let w = match w {
                Work::Timer { timer, claim: c } => Work::Timer {
                    timer,
                    claim: claim(c),
                },
                Work::Orphan {
                    app,
                    account,
                    session: s,
                    channels,
                    done,
                } => Work::Orphan {
                    app,
                    account,
                    session: session(s),
                    channels,
                    done,
                },
            };
            if to.send(w).is_err() {
                return;
            }
        }
    });
}

impl Store for AnyStore {
    type Session = AnySession;
    type Claim = AnyClaim;

    fn run_work(&self, work: WorkSender<Self>) {
        match self {
            AnyStore::Memory(s) => forward(s, work, AnySession::Memory, AnyClaim::Memory),
            AnyStore::Redis(s) => forward(s, work, AnySession::Redis, AnyClaim::Redis),
        }
    }

    fn session_of(&self, conn: &ConnHandle) -> AnySession {
        match self {
            AnyStore::Memory(s) => AnySession::Memory(s.session_of(conn)),
            AnyStore::Redis(s) => AnySession::Redis(s.session_of(conn)),
        }
    }

    async fn session_open(&self, o: Opening<'_>) -> SResult<Option<AnySession>> {
        Ok(match self {
            AnyStore::Memory(s) => s.session_open(o).await?.map(AnySession::Memory),
            AnyStore::Redis(s) => s.session_open(o).await?.map(AnySession::Redis),
        })
    }

    async fn session_close(
        &self,
        user: User<'_>,
        session: &AnySession,
        events: &StepEvents,
    ) -> SResult<bool> {
        match (self, session) {
            (AnyStore::Memory(s), AnySession::Memory(x)) => s.session_close(user, x, events).await,
            (AnyStore::Redis(s), AnySession::Redis(x)) => s.session_close(user, x, events).await,
            _ => Err(mismatch()),
        }
    }

    async fn session_alive(&self, session: &AnySession) -> bool {
        match (self, session) {
            (AnyStore::Memory(s), AnySession::Memory(x)) => s.session_alive(x).await,
            (AnyStore::Redis(s), AnySession::Redis(x)) => s.session_alive(x).await,
            _ => false,
        }
    }

    async fn kick(&self, session: &AnySession) -> SResult<()> {
        match (self, session) {
            (AnyStore::Memory(s), AnySession::Memory(x)) => s.kick(x).await,
            (AnyStore::Redis(s), AnySession::Redis(x)) => s.kick(x).await,
            _ => Err(mismatch()),
        }
    }

    async fn online(&self, user: User<'_>) -> SResult<bool> {
        each!(self, s => s.online(user).await)
    }

    async fn user_attrs(&self, user: User<'_>) -> SResult<Vec<(String, String)>> {
        each!(self, s => s.user_attrs(user).await)
    }

    async fn user_attr_set(&self, user: User<'_>, set: UserAttrSet<'_>) -> SResult<bool> {
        each!(self, s => s.user_attr_set(user, set).await)
    }

    async fn user_attr_count(&self, user: User<'_>) -> SResult<usize> {
        each!(self, s => s.user_attr_count(user).await)
    }

    async fn user_attrs_clear(&self, user: User<'_>) -> SResult<()> {
        each!(self, s => s.user_attrs_clear(user).await)
    }

    async fn mail_append(&self, to: User<'_>, item: MailItem<'_>) -> SResult<Appended> {
        each!(self, s => s.mail_append(to, item).await)
    }

    async fn mail_poll(&self, user: User<'_>, poll: Poll<'_>) -> SResult<MailPage> {
        each!(self, s => s.mail_poll(user, poll).await)
    }

    async fn mail_withdraw(&self, user: User<'_>, version: u64) -> SResult<bool> {
        each!(self, s => s.mail_withdraw(user, version).await)
    }

    async fn join(&self, at: Chan<'_>, j: Joining<'_>) -> SResult<Joined> {
        each!(self, s => s.join(at, j).await)
    }

    async fn leave(&self, at: Chan<'_>, l: Leaving<'_, AnySession>) -> SResult<bool> {
        let (account, event, events) = (l.account, l.event, l.events);
        match (self, l.session) {
            (AnyStore::Memory(s), AnySession::Memory(session)) => {
                s.leave(
                    at,
                    Leaving {
                        account,
                        session,
                        event,
                        events,
                    },
                )
                .await
            }
            (AnyStore::Redis(s), AnySession::Redis(session)) => {
                s.leave(
                    at,
                    Leaving {
                        account,
                        session,
                        event,
                        events,
                    },
                )
                .await
            }
            _ => Err(mismatch()),
        }
    }

    async fn publish(&self, at: Chan<'_>, p: Publish<'_>) -> SResult<Published> {
        each!(self, s => s.publish(at, p).await)
    }

    async fn attr_change(&self, at: Chan<'_>, c: AttrChange<'_>) -> SResult<AttrOutcome> {
        each!(self, s => s.attr_change(at, c).await)
    }

    async fn settings(&self, at: Chan<'_>) -> SResult<Option<ChannelSettings>> {
        each!(self, s => s.settings(at).await)
    }

    async fn touch_members(&self, at: Chan<'_>) -> SResult<()> {
        each!(self, s => s.touch_members(at).await)
    }

    async fn take_members_changed(&self, at: Chan<'_>) -> SResult<Option<usize>> {
        each!(self, s => s.take_members_changed(at).await)
    }

    async fn members(&self, at: Chan<'_>, max: usize) -> SResult<(usize, Vec<String>)> {
        each!(self, s => s.members(at, max).await)
    }

    async fn history(&self, at: Chan<'_>, after: u64, max_age: Duration) -> SResult<History> {
        each!(self, s => s.history(at, after, max_age).await)
    }

    async fn session_get(&self, user: User<'_>) -> SResult<Option<AnySession>> {
        match self {
            AnyStore::Memory(s) => Ok(s.session_get(user).await?.map(AnySession::Memory)),
            AnyStore::Redis(s) => Ok(s.session_get(user).await?.map(AnySession::Redis)),
        }
    }

    async fn channels(&self, app: &AppId, cursor: &str, limit: usize) -> SResult<ChannelPage> {
        each!(self, s => s.channels(app, cursor, limit).await)
    }

    async fn channel_attrs(&self, at: Chan<'_>) -> SResult<Vec<(String, String)>> {
        each!(self, s => s.channel_attrs(at).await)
    }

    async fn is_member(&self, at: Chan<'_>, account: &Account) -> SResult<bool> {
        each!(self, s => s.is_member(at, account).await)
    }

    async fn invite_open(&self, open: InviteOpen<'_>) -> SResult<Appended> {
        each!(self, s => s.invite_open(open).await)
    }

    async fn invite_relay(&self, relay: InviteRelay<'_>) -> SResult<Relayed> {
        each!(self, s => s.invite_relay(relay).await)
    }

    async fn invite_get(&self, key: &InviteKey) -> SResult<Option<InviteRecord>> {
        each!(self, s => s.invite_get(key).await)
    }

    async fn invite_take(&self, key: &InviteKey, take: Take) -> SResult<Option<InviteRecord>> {
        each!(self, s => s.invite_take(key, take).await)
    }

    async fn invites_by(&self, caller: User<'_>) -> SResult<Vec<(InviteKey, u64)>> {
        each!(self, s => s.invites_by(caller).await)
    }

    async fn schedule(&self, timer: Timer, after: Duration) -> SResult<()> {
        each!(self, s => s.schedule(timer, after).await)
    }

    async fn timer_done(&self, claim: AnyClaim) {
        match (self, claim) {
            (AnyStore::Memory(s), AnyClaim::Memory(c)) => s.timer_done(c).await,
            (AnyStore::Redis(s), AnyClaim::Redis(c)) => s.timer_done(c).await,
            _ => {}
        }
    }

    async fn event_append(
        &self,
        app: &AppId,
        partition: u32,
        event: &str,
        cap: EventCap,
    ) -> SResult<u64> {
        each!(self, s => s.event_append(app, partition, event, cap).await)
    }

    async fn event_read(
        &self,
        app: &AppId,
        partition: u32,
        after: u64,
        max: usize,
    ) -> SResult<EventPage> {
        each!(self, s => s.event_read(app, partition, after, max).await)
    }

    async fn event_cursor(
        &self,
        app: &AppId,
        consumer: &str,
        partition: u32,
    ) -> SResult<Option<u64>> {
        each!(self, s => s.event_cursor(app, consumer, partition).await)
    }

    async fn event_cursor_set(
        &self,
        app: &AppId,
        consumer: &str,
        partition: u32,
        seq: u64,
        keep: Duration,
    ) -> SResult<()> {
        each!(self, s => s.event_cursor_set(app, consumer, partition, seq, keep).await)
    }

    async fn event_lease(
        &self,
        app: &AppId,
        consumer: &str,
        partition: u32,
        holder: &str,
        ttl: Duration,
    ) -> SResult<bool> {
        each!(self, s => s.event_lease(app, consumer, partition, holder, ttl).await)
    }

    async fn live_nodes(&self) -> Vec<String> {
        each!(self, s => s.live_nodes().await)
    }

    fn local_sessions(&self) -> usize {
        each!(self, s => s.local_sessions())
    }

    async fn watch(
        &self,
        app: &AppId,
        watcher: &AnySession,
        accounts: &[Account],
        on: bool,
        app_max: usize,
    ) -> SResult<bool> {
        match (self, watcher) {
            (AnyStore::Memory(s), AnySession::Memory(w)) => {
                s.watch(app, w, accounts, on, app_max).await
            }
            (AnyStore::Redis(s), AnySession::Redis(w)) => {
                s.watch(app, w, accounts, on, app_max).await
            }
            _ => Err(mismatch()),
        }
    }

    async fn watchers_push(&self, user: User<'_>, frame: &str) -> SResult<()> {
        each!(self, s => s.watchers_push(user, frame).await)
    }

    async fn unreachable_set(&self, user: User<'_>, grace: Option<Duration>) -> SResult<()> {
        each!(self, s => s.unreachable_set(user, grace).await)
    }

    async fn unreachable(&self, user: User<'_>) -> SResult<bool> {
        each!(self, s => s.unreachable(user).await)
    }

    fn session_node(&self, session: &AnySession) -> Option<String> {
        match (self, session) {
            (AnyStore::Memory(s), AnySession::Memory(x)) => s.session_node(x),
            (AnyStore::Redis(s), AnySession::Redis(x)) => s.session_node(x),
            _ => None,
        }
    }

    async fn node_report_put(&self, report: &str, ttl: Duration) -> SResult<()> {
        each!(self, s => s.node_report_put(report, ttl).await)
    }

    async fn node_reports(&self) -> SResult<Vec<String>> {
        each!(self, s => s.node_reports().await)
    }

    async fn footprint(&self) -> SResult<Footprint> {
        each!(self, s => s.footprint().await)
    }

    fn halt(&self) {
        each!(self, s => s.halt())
    }
}
