//! The store chosen at startup: in memory (default) or Redis (`--redis`). Delegation only.

use std::time::Duration;

use opensig_protocol::ident::{Account, AppId, ChannelName};

use super::memory::Memory;
use super::redis::{NodeSession, Redis};
use super::{
    Appended, AttrOp, AttrOutcome, ChannelSettings, Event, Footprint, InviteKey, InviteRecord,
    InviteStep, Joined, MailItem, MailPage, PublishRules, Published, Relayed, SResult, Store,
    StoreError, Timer, Work, WorkSender,
};
use crate::delivery::{ConnHandle, Frame};

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

    async fn session_open(
        &self,
        app: &AppId,
        account: &Account,
        conn: &ConnHandle,
        welcome: Frame,
    ) -> SResult<Option<AnySession>> {
        Ok(match self {
            AnyStore::Memory(s) => s
                .session_open(app, account, conn, welcome)
                .await?
                .map(AnySession::Memory),
            AnyStore::Redis(s) => s
                .session_open(app, account, conn, welcome)
                .await?
                .map(AnySession::Redis),
        })
    }

    async fn session_close(
        &self,
        app: &AppId,
        account: &Account,
        session: &AnySession,
    ) -> SResult<bool> {
        match (self, session) {
            (AnyStore::Memory(s), AnySession::Memory(x)) => s.session_close(app, account, x).await,
            (AnyStore::Redis(s), AnySession::Redis(x)) => s.session_close(app, account, x).await,
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

    async fn online(&self, app: &AppId, account: &Account) -> SResult<bool> {
        each!(self, s => s.online(app, account).await)
    }

    async fn user_attrs(&self, app: &AppId, account: &Account) -> SResult<Vec<(String, String)>> {
        each!(self, s => s.user_attrs(app, account).await)
    }

    async fn user_attr_set(
        &self,
        app: &AppId,
        account: &Account,
        name: &str,
        value: Option<&str>,
        max: usize,
    ) -> SResult<bool> {
        each!(self, s => s.user_attr_set(app, account, name, value, max).await)
    }

    async fn mail_append(
        &self,
        app: &AppId,
        to: &Account,
        item: MailItem<'_>,
        max: usize,
    ) -> SResult<Appended> {
        each!(self, s => s.mail_append(app, to, item, max).await)
    }

    async fn mail_poll(
        &self,
        app: &AppId,
        account: &Account,
        ver_clear: u64,
        max: usize,
    ) -> SResult<MailPage> {
        each!(self, s => s.mail_poll(app, account, ver_clear, max).await)
    }

    async fn mail_poll_ids(
        &self,
        app: &AppId,
        account: &Account,
        clear_ids: &[String],
        max: usize,
    ) -> SResult<MailPage> {
        each!(self, s => s.mail_poll_ids(app, account, clear_ids, max).await)
    }

    async fn mail_withdraw(&self, app: &AppId, account: &Account, version: u64) -> SResult<bool> {
        each!(self, s => s.mail_withdraw(app, account, version).await)
    }

    async fn join(
        &self,
        app: &AppId,
        channel: &ChannelName,
        account: &Account,
        conn: &ConnHandle,
        event: Option<Event<'_>>,
        list_max: usize,
    ) -> SResult<Joined> {
        each!(self, s => s.join(app, channel, account, conn, event, list_max).await)
    }

    async fn leave(
        &self,
        app: &AppId,
        channel: &ChannelName,
        account: &Account,
        session: &AnySession,
        event: Option<Event<'_>>,
    ) -> SResult<bool> {
        match (self, session) {
            (AnyStore::Memory(s), AnySession::Memory(x)) => {
                s.leave(app, channel, account, x, event).await
            }
            (AnyStore::Redis(s), AnySession::Redis(x)) => {
                s.leave(app, channel, account, x, event).await
            }
            _ => Err(mismatch()),
        }
    }

    async fn publish(
        &self,
        app: &AppId,
        channel: &ChannelName,
        event: Event<'_>,
        rules: PublishRules<'_>,
    ) -> SResult<Published> {
        each!(self, s => s.publish(app, channel, event, rules).await)
    }

    async fn attr_change(
        &self,
        app: &AppId,
        channel: &ChannelName,
        op: AttrOp<'_>,
        event: Event<'_>,
    ) -> SResult<AttrOutcome> {
        each!(self, s => s.attr_change(app, channel, op, event).await)
    }

    async fn settings(
        &self,
        app: &AppId,
        channel: &ChannelName,
    ) -> SResult<Option<ChannelSettings>> {
        each!(self, s => s.settings(app, channel).await)
    }

    async fn touch_members(&self, app: &AppId, channel: &ChannelName) -> SResult<()> {
        each!(self, s => s.touch_members(app, channel).await)
    }

    async fn take_members_changed(
        &self,
        app: &AppId,
        channel: &ChannelName,
    ) -> SResult<Option<usize>> {
        each!(self, s => s.take_members_changed(app, channel).await)
    }

    async fn members(
        &self,
        app: &AppId,
        channel: &ChannelName,
        max: usize,
    ) -> SResult<(usize, Vec<String>)> {
        each!(self, s => s.members(app, channel, max).await)
    }

    async fn is_member(
        &self,
        app: &AppId,
        channel: &ChannelName,
        account: &Account,
    ) -> SResult<bool> {
        each!(self, s => s.is_member(app, channel, account).await)
    }

    async fn invite_open(
        &self,
        key: &InviteKey,
        extra: &str,
        generation: u64,
        mail: MailItem<'_>,
        max_mail: usize,
        timers: &[(Timer, Duration)],
    ) -> SResult<Appended> {
        each!(self, s => s.invite_open(key, extra, generation, mail, max_mail, timers).await)
    }

    async fn invite_relay(
        &self,
        keys: &[InviteKey],
        step: InviteStep,
        require_live: bool,
        to: &Account,
        mail: MailItem<'_>,
        max_mail: usize,
    ) -> SResult<Relayed> {
        each!(self, s => s.invite_relay(keys, step, require_live, to, mail, max_mail).await)
    }

    async fn invite_get(&self, key: &InviteKey) -> SResult<Option<InviteRecord>> {
        each!(self, s => s.invite_get(key).await)
    }

    async fn invite_take(
        &self,
        key: &InviteKey,
        generation: u64,
        ringing_only: bool,
    ) -> SResult<Option<InviteRecord>> {
        each!(self, s => s.invite_take(key, generation, ringing_only).await)
    }

    async fn invites_by(&self, app: &AppId, caller: &Account) -> SResult<Vec<(InviteKey, u64)>> {
        each!(self, s => s.invites_by(app, caller).await)
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

    async fn live_nodes(&self) -> Vec<String> {
        each!(self, s => s.live_nodes().await)
    }

    fn local_sessions(&self) -> usize {
        each!(self, s => s.local_sessions())
    }

    async fn footprint(&self) -> Footprint {
        each!(self, s => s.footprint().await)
    }

    fn halt(&self) {
        each!(self, s => s.halt())
    }
}
