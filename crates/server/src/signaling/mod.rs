//! Every rule of the protocol, once, over any [`Store`]: what a login does (kick, presence,
//! `_conn_timeout`), what each request checks and in which order (validation, then rate,
//! then the store's atomic step), what a channel's built-in attributes mean, how an
//! invitation lives and ends, which events the firehose channels carry. Stores only store.
//!
//! The connection handler ([`crate::conn`]) calls [`Signaling::login`], [`Signaling::request`]
//! and [`Signaling::end`]; the store's background work (due timers, sessions of dead nodes)
//! comes back through [`Signaling::start`].

pub mod api;
mod channels;
mod invites;
mod mailbox;
mod session;
mod watch;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use opensig_protocol::frame::{out, Reply, Request, Template};
use opensig_protocol::ident::{Account, AppId, ChannelName};
use opensig_protocol::names::domain;
use opensig_protocol::{msg, ErrorKind};
use tokio::sync::mpsc;
use tracing::warn;

use crate::config::LimitsNow;
use crate::delivery::ConnHandle;
use crate::events::{Events, Happened};
use crate::ratelimit::Bucket;
use crate::store::{
    Chan, Dedup, Event, StepEvents, Store, StoreError, User, When, Work, NO_EVENTS,
};
use crate::ServerConfig;
use arc_swap::ArcSwap;

pub use session::{LoginRefusal, TokenRefusal};

/// A logged-in session, as its connection holds it.
pub struct Session<S: Store> {
    /// App.
    pub app: AppId,
    /// Account.
    pub account: Account,
    /// The connection's handle.
    pub conn: ConnHandle,
    /// The session as the store knows it.
    pub store_ref: S::Session,
    /// The line every call2 must carry.
    pub line: String,
    /// Channels joined on this connection.
    pub channels: BTreeSet<ChannelName>,
    /// The user's message budget (`user_messages_per_second`).
    pub rate: Bucket,
    /// The session's join budget (`joins_per_second`, burst `channels_per_session`).
    pub joins: Bucket,
    /// Seconds of silence before the connection is dropped (`_conn_timeout`).
    pub idle: Duration,
    /// Accounts whose presence this session watches.
    pub watching: BTreeSet<Account>,
    /// The session's subscribe / unsubscribe / query budget (`watch_calls_per_5s`).
    pub watch_calls: Bucket,
}

/// Pieces of background work (due timers, sessions of dead nodes) in progress at once.
const WORK_IN_PROGRESS_MAX: usize = 32;

/// The rules, over a store.
pub struct Signaling<S: Store> {
    store: S,
    /// The configuration in force; a reload replaces it whole.
    config: Arc<ArcSwap<ServerConfig>>,
    /// Prefix of this process's msg-v3 ids (unique per boot).
    id_prefix: String,
    id_seq: AtomicU64,
    /// Invitation generations.
    generation: AtomicU64,
    /// What happened, for the app's backend.
    events: Events,
}

/// A store failure becomes `unavailable` at the edge (logged with its cause), or
/// `server_busy` when the store is full.
impl From<StoreError> for ErrorKind {
    fn from(e: StoreError) -> ErrorKind {
        warn!("store: {e}");
        match e {
            StoreError::Full(_) => ErrorKind::ServerBusy,
            _ => ErrorKind::Unavailable,
        }
    }
}

/// Result of a rule.
pub type RResult<T> = Result<T, ErrorKind>;

/// Store requests one rule has in flight at once when it asks the same of many accounts or
/// channels (on Redis they go out together on the shared connection, where one after the
/// other each waited for its own round trip).
const ASKED_AT_ONCE: usize = 64;

/// The answers of `asks`, [`ASKED_AT_ONCE`] in flight at a time, in their order; or the
/// first error.
async fn ask_each<T, Fut>(asks: impl IntoIterator<Item = Fut>) -> RResult<Vec<T>>
where
    Fut: std::future::Future<Output = RResult<T>>,
{
    ask_each_at(ASKED_AT_ONCE, asks).await
}

/// [`ask_each`] with `at_once` in flight. Every ask runs to its end, whatever the others
/// answer (none is dropped half way: a step that may have been applied is never left
/// unaccounted).
async fn ask_each_at<T, Fut>(at_once: usize, asks: impl IntoIterator<Item = Fut>) -> RResult<Vec<T>>
where
    Fut: std::future::Future<Output = RResult<T>>,
{
    use futures_util::StreamExt;
    let asked = futures_util::stream::iter(asks).buffered(at_once.max(1));
    asked.collect::<Vec<_>>().await.into_iter().collect()
}

impl<S: Store> Signaling<S> {
    /// The rules over `store`, configured by `config`. Call [`Signaling::start`] once the
    /// value is shared.
    pub fn new(store: S, config: Arc<ServerConfig>, id_prefix: String) -> Signaling<S> {
        Signaling {
            events: Events::new(&id_prefix, store.event_partitions()),
            store,
            config: Arc::new(ArcSwap::new(config)),
            id_seq: AtomicU64::new(0),
            generation: AtomicU64::new(rand::random::<u32>() as u64),
            id_prefix,
        }
    }

    /// Take the store's background work (due timers, orphaned sessions) from now on.
    pub fn start(self: &Arc<Self>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.store.run_work(tx);
        let weak: Weak<Self> = Arc::downgrade(self);
        let gate = Arc::new(tokio::sync::Semaphore::new(WORK_IN_PROGRESS_MAX));
        tokio::spawn(async move {
            while let Some(work) = rx.recv().await {
                // a few pieces at a time: the thousands of sessions of a dead node are ended
                // without queueing their store steps in front of live traffic
                let Ok(permit) = gate.clone().acquire_owned().await else {
                    return;
                };
                let Some(me) = weak.upgrade() else { return };
                // each piece of work on its own: a slow store step does not hold the others
                tokio::spawn(async move {
                    me.work(work).await;
                    drop(permit);
                });
            }
        });
    }

    async fn work(&self, work: Work<S>) {
        match work {
            Work::Timer { timer, claim } => match self.fire(&timer).await {
                Ok(()) => self.store.timer_done(claim).await,
                // not reported done: the store brings it back
                Err(e) => warn!("timer {timer:?} failed: {e:?}"),
            },
            Work::Orphan {
                app,
                account,
                session,
                channels,
                done,
            } => {
                let ok = self
                    .end_session(
                        &app,
                        &account,
                        &session,
                        &channels,
                        domain::offline::NODE_DIED,
                        // its channels one at a time: the gate above is what runs the
                        // thousands of a dead node's sessions beside live traffic
                        1,
                    )
                    .await;
                let _ = done.send(ok.is_ok());
            }
        }
    }

    /// The store (for tests and metrics).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The event stream.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Record what happened in `app`, when anything listens to the app's events (before the
    /// request that caused it is answered).
    pub(crate) async fn emit(&self, app: &AppId, happened: Happened) {
        let limits = self.limits();
        if limits.0.events_wanted(app) {
            self.events.emit(&self.store, &limits, app, happened).await;
        }
    }

    /// The events a step of `app` appends with its change (`make` runs only when anything
    /// listens to them).
    pub(crate) fn plan(
        &self,
        app: &AppId,
        make: impl FnOnce() -> Vec<(When, Happened)>,
    ) -> StepEvents {
        let limits = self.limits();
        if !limits.0.events_wanted(app) {
            return NO_EVENTS.clone();
        }
        self.events.outbox(&limits, app, make())
    }

    /// The step carrying `out` was made, with the outcomes `fired` says.
    pub(crate) fn recorded(&self, out: &StepEvents, fired: impl Fn(When) -> bool) {
        self.events.recorded(out, fired)
    }

    /// Whether anything listens to the events of `app`.
    pub(crate) fn events_wanted(&self, app: &AppId) -> bool {
        self.config.load().events_wanted(app)
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    /// Put `config` in force: every request from now on reads it.
    pub fn replace_config(&self, config: Arc<ServerConfig>) {
        self.config.store(config);
    }

    /// The limits in force.
    fn limits(&self) -> LimitsNow {
        LimitsNow(self.config.load_full())
    }

    /// Past `memory_max_bytes`: new stored state is refused.
    fn short_of_memory(&self) -> bool {
        self.config.load().short_of_memory()
    }

    /// `server_busy` when the server has no memory for new stored state.
    fn room_to_store(&self) -> RResult<()> {
        if self.short_of_memory() {
            Err(ErrorKind::ServerBusy)
        } else {
            Ok(())
        }
    }

    /// A msg-v3 id unique in the cluster.
    fn next_msg_id(&self) -> String {
        let n = self.id_seq.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.id_prefix)
    }

    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn dedup<'a>(&self, from: &'a Account, id: Option<&'a str>) -> Option<Dedup<'a>> {
        id.map(|id| Dedup {
            from,
            id,
            window: Duration::from_secs(self.limits().dedup_window_secs),
        })
    }

    /// Take one token of the user's message budget.
    fn spend(&self, session: &mut Session<S>) -> RResult<()> {
        if session.rate.take(self.limits().user_messages_per_second) {
            Ok(())
        } else {
            Err(ErrorKind::RateLimited)
        }
    }

    /// Handle one request of a logged-in session.
    pub async fn request(&self, s: &mut Session<S>, request: Request) -> RResult<Reply> {
        match request {
            // the connection ends the session (it knows how to close)
            Request::UserLogout => Ok(Reply::Done),
            Request::UserGetmsg {
                ver_clear,
                max,
                seen_id,
            } => {
                self.get_messages(s, ver_clear, max, seen_id.as_deref())
                    .await
            }
            Request::UserGetmsg2 { clear_msgs, max } => {
                self.get_messages_by_id(s, &clear_msgs, max).await
            }
            Request::UserSendmsg {
                peer,
                flag,
                kind,
                content,
                message_id,
            } => {
                self.send_message(s, &peer, &flag, &kind, &content, message_id.as_deref())
                    .await
            }
            Request::UserQueryUserStatus { account } => self.user_status(s, &account).await,
            Request::UserSetAttr { name, value } => self.set_user_attr(s, &name, &value).await,
            Request::UserGetAttr { account, name } => self.user_attr(s, &account, &name).await,
            Request::UserGetAttrAll { account } => self.user_attrs(s, &account).await,
            Request::UserRenewToken { token } => self.renew_token(s, &token),
            Request::UserWatchStatus { accounts, on } => self.watch(s, &accounts, on).await,
            Request::UserQueryStatus { accounts } => self.query_status(s, &accounts).await,
            Request::ChannelJoin { name, seen } => self.join(s, &name, seen).await,
            Request::ChannelLeave { name } => self.leave(s, &name).await,
            Request::ChannelSendmsg {
                name,
                msg,
                msg_id,
                force,
                seen,
            } => {
                self.channel_send(s, &name, &msg, msg_id.as_deref(), force, seen)
                    .await
            }
            Request::ChannelSetAttr {
                channel,
                name,
                value,
            } => self.set_channel_attr(s, &channel, &name, &value).await,
            Request::ChannelDelAttr { channel, name } => {
                self.del_channel_attr(s, &channel, &name).await
            }
            Request::ChannelClearAttr { channel } => self.clear_channel_attrs(s, &channel).await,
            Request::ChannelQueryNum { name } => self.channel_num(s, &name).await,
            Request::ChannelQueryUserIsin { name, account } => {
                self.channel_has(s, &name, &account).await
            }
            Request::ChannelQueryUserlist { name, num } => self.channel_list(s, &name, num).await,
            Request::ChannelHistory { name, after, max } => {
                self.channel_history(s, &name, after, max).await
            }
            Request::Voip {
                kind,
                channel,
                peer,
                extra,
                message_id,
            } => {
                self.voip(s, kind, &channel, &peer, &extra, message_id.as_deref())
                    .await
            }
        }
    }
}

/// A channel event from `source`: a msg-v2 string of `kind` with `content`, its sequence to
/// be filled in by the store.
fn channel_event(channel: &str, source: &str, kind: &str, content: &str) -> Template {
    let text = msg::build_v2(source, channel, kind, msg::NO_FLAG, content);
    out::channel2_template(channel, &text)
}

/// An account of an app, as the store takes it.
fn user<'a>(app: &'a AppId, account: &'a Account) -> User<'a> {
    User { app, account }
}

/// A channel of an app, as the store takes it.
fn chan<'a>(app: &'a AppId, channel: &'a ChannelName) -> Chan<'a> {
    Chan { app, channel }
}

/// The event as the store takes it.
fn event<'a>(frame: &'a Template, exclude: Option<&'a Account>) -> Event<'a> {
    Event { frame, exclude }
}
