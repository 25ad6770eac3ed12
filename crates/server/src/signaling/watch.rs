//! opensig presence subscriptions (RTM's `subscribePeersOnlineStatus`): a session watches the
//! accounts it names, and only its watchers hear an account's changes — the cost of a change
//! grows with its watchers, not with the app's users. States: `ONLINE`; `UNREACHABLE` while a
//! dropped connection is within `presence_grace_secs` (the webhooks' debounce: a quick
//! reconnect is never seen as offline); `OFFLINE`. One session per account, so several tabs
//! of one account are one state. Bounded per session (`watch_peers_per_session`, calls per
//! 5 s), per app (`app_watches_max`) and overall (the memory cap).

use std::time::Duration;

use opensig_protocol::frame::{out, Reply};
use opensig_protocol::ident::{Account, AppId};
use opensig_protocol::names::{domain, peer_state};
use opensig_protocol::ErrorKind;
use tracing::warn;

use super::{ask_each, user, RResult, Session, Signaling};
use crate::store::{Store, Timer};

impl<S: Store> Signaling<S> {
    /// Each account's state now.
    pub(super) async fn peer_states(
        &self,
        app: &AppId,
        accounts: &[Account],
    ) -> RResult<Vec<(String, &'static str)>> {
        // (each owns its account: a future borrowing from the list is not Send for the router)
        ask_each(accounts.iter().cloned().map(|a| async move {
            let state = if self.store.online(user(app, &a)).await? {
                peer_state::ONLINE
            } else if self.store.unreachable(user(app, &a)).await? {
                peer_state::UNREACHABLE
            } else {
                peer_state::OFFLINE
            };
            Ok((a.to_string(), state))
        }))
        .await
    }

    /// The accounts of a subscribe, unsubscribe or query, spending the session's call budget.
    fn watch_request(&self, s: &mut Session<S>, accounts: &[String]) -> RResult<Vec<Account>> {
        let l = &self.limits();
        let rate = l.watch_calls_per_5s;
        // `rate` calls per 5 s: a bucket of `rate` refilled at a fifth of it a second
        if rate > 0 && !s.watch_calls.take_burst((rate / 5).max(1), rate) {
            return Err(ErrorKind::RateLimited);
        }
        if accounts.len() > l.watch_peers_per_session.max(1) {
            return Err(ErrorKind::TooManyPeers);
        }
        let mut parsed = accounts
            .iter()
            .map(|a| Account::parse(a, l))
            .collect::<Result<Vec<_>, _>>()?;
        parsed.sort();
        parsed.dedup();
        Ok(parsed)
    }

    /// `user_subscribe_status` (`on`) / `user_unsubscribe_status`: the states of the newly
    /// watched accounts come back in the reply.
    pub(super) async fn watch(
        &self,
        s: &mut Session<S>,
        accounts: &[String],
        on: bool,
    ) -> RResult<Reply> {
        let accounts = self.watch_request(s, accounts)?;
        if !on {
            self.store
                .watch(user(&s.app, &s.account), &s.store_ref, &accounts, false, 0)
                .await?;
            for a in &accounts {
                s.watching.remove(a);
            }
            return Ok(Reply::Done);
        }
        let fresh: Vec<Account> = accounts
            .iter()
            .filter(|a| !s.watching.contains(*a))
            .cloned()
            .collect();
        let l = self.limits();
        if s.watching.len() + fresh.len() > l.watch_peers_per_session {
            return Err(ErrorKind::TooManyPeers);
        }
        if !fresh.is_empty() && l.0.short_of_memory() {
            return Err(ErrorKind::ServerBusy);
        }
        let app_max = l.app_watches_max;
        drop(l);
        if !self
            .store
            .watch(
                user(&s.app, &s.account),
                &s.store_ref,
                &fresh,
                true,
                app_max,
            )
            .await?
        {
            return Err(ErrorKind::TooManyPeers);
        }
        s.watching.extend(fresh);
        let status = self.peer_states(&s.app, &accounts).await?;
        Ok(Reply::PeerStatus { status })
    }

    /// `user_query_status`: states, without watching.
    pub(super) async fn query_status(
        &self,
        s: &mut Session<S>,
        accounts: &[String],
    ) -> RResult<Reply> {
        let accounts = self.watch_request(s, accounts)?;
        let status = self.peer_states(&s.app, &accounts).await?;
        Ok(Reply::PeerStatus { status })
    }

    /// The session's watches end with it.
    pub(super) async fn unwatch_all(&self, s: &Session<S>) {
        if s.watching.is_empty() {
            return;
        }
        let accounts: Vec<Account> = s.watching.iter().cloned().collect();
        if let Err(e) = self
            .store
            .watch(user(&s.app, &s.account), &s.store_ref, &accounts, false, 0)
            .await
        {
            // the store drops watches of gone sessions when it next pushes to them
            warn!(app = %s.app, account = %s.account, "ending watches: {e}");
        }
    }

    /// Tell the account's watchers its new state.
    pub(super) async fn tell_watchers(&self, app: &AppId, account: &Account, state: &str) {
        let frame = out::peer_status(&[(account.as_str(), state)]);
        if let Err(e) = self.store.watchers_push(user(app, account), &frame).await {
            warn!(app = %app, account = %account, "watchers not told {state}: {e}");
        }
    }

    /// The account came online (a login that did not replace a live session). Its mark of a
    /// dropped connection goes and its watchers are told at once (one round trip to Redis):
    /// the session is stored already, and a session makes the account online whatever the
    /// mark says (`peer_states`).
    pub(super) async fn watched_online(&self, app: &AppId, account: &Account) {
        let _ = tokio::join!(
            self.store.unreachable_set(user(app, account), None),
            self.tell_watchers(app, account, peer_state::ONLINE)
        );
    }

    /// The account's session ended for `reason`: a dropped connection is unreachable for the
    /// grace period first, anything else offline at once.
    pub(super) async fn watched_gone(&self, app: &AppId, account: &Account, reason: &str) {
        let grace = Duration::from_secs(self.limits().presence_grace_secs);
        if reason == domain::offline::CONNECTION_LOST && !grace.is_zero() {
            let who = user(app, account);
            let timer = Timer::PresenceGrace(app.clone(), account.clone());
            // the mark and the timer that ends it, at once (one round trip to Redis): a timer
            // without its mark finds the account offline and says so again, harmlessly
            let (marked, scheduled) = tokio::join!(
                self.store.unreachable_set(who, Some(grace)),
                self.store.schedule(timer, grace)
            );
            if marked.is_ok() && scheduled.is_ok() {
                self.tell_watchers(app, account, peer_state::UNREACHABLE)
                    .await;
                return;
            }
        }
        self.tell_watchers(app, account, peer_state::OFFLINE).await;
    }

    /// The grace period of a dropped connection ended: offline, unless it is back.
    pub(super) async fn presence_grace_over(&self, app: &AppId, account: &Account) -> RResult<()> {
        if self.store.online(user(app, account)).await? {
            return Ok(());
        }
        self.store.unreachable_set(user(app, account), None).await?;
        self.tell_watchers(app, account, peer_state::OFFLINE).await;
        Ok(())
    }
}
