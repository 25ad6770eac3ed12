//! Login and logout: credentials and tokens, one session per account (a newer one kicks the
//! older), presence events, `_conn_timeout`, and what ends with a session.

use std::collections::BTreeSet;
use std::time::Duration;

use opensig_protocol::frame::{content, Login, Reply};
use opensig_protocol::ident::{Account, AppId, ChannelName};
use opensig_protocol::names::{attr, domain, login_error, msgtype, special};
use opensig_protocol::{token, ErrorKind};
use tracing::warn;

use super::{
    ask_each_at, chan, channel_event, event, user, RResult, Session, Signaling, ASKED_AT_ONCE,
};
use crate::delivery::{ConnHandle, Frame};
use crate::events::Happened;
use crate::ratelimit::Bucket;
use crate::store::{Opened, Opening, Publish, Store, Timer, When};
use crate::ServerConfig;

/// Why a token is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// The server does not serve this app.
    UnknownApp,
    /// Valid but expired.
    Expired,
    /// Malformed, another account's or another certificate's.
    Invalid,
}

/// A refused login: the `login_ret` error string.
pub type LoginRefusal = &'static str;

/// The app's token rule: development mode and apps without a certificate accept any token;
/// an app with one needs a SignalingToken of this account, not expired.
pub(super) fn token_check(
    config: &ServerConfig,
    app: &str,
    account: &str,
    token_text: &str,
) -> Result<(), TokenRefusal> {
    if config.development_mode() {
        return Ok(());
    }
    match config.apps.get(app) {
        None => Err(TokenRefusal::UnknownApp),
        Some(None) => Ok(()),
        Some(Some(cert)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            token::verify(token_text, app, cert, account, now).map_err(|e| match e {
                token::TokenError::Expired => TokenRefusal::Expired,
                token::TokenError::Invalid => TokenRefusal::Invalid,
            })?;
            // the operator's policy on long-lived tokens (they cannot be revoked, short of
            // changing the certificate)
            let l = &config.limits;
            let expiry = token::fields(token_text).map_or(0, |f| f.expiry);
            let too_long = match expiry {
                0 => !l.token_never_expiring,
                e => {
                    l.token_lifetime_max_secs != 0
                        && e > now.saturating_add(l.token_lifetime_max_secs)
                }
            };
            if too_long {
                return Err(TokenRefusal::Invalid);
            }
            Ok(())
        }
    }
}

impl<S: Store> Signaling<S> {
    /// The account rule, the app id and the token of a login.
    pub fn check_credentials(&self, login: &Login) -> Result<(AppId, Account), LoginRefusal> {
        let l = &self.limits();
        let account = Account::parse(&login.account, l).map_err(|_| login_error::WRONG_ACCOUNT)?;
        let app = AppId::parse(&login.vid, l).map_err(|_| login_error::TOKEN_UNKNOWN_APP)?;
        token_check(&self.config.load(), &app, &account, &login.token).map_err(|e| match e {
            TokenRefusal::UnknownApp => login_error::TOKEN_UNKNOWN_APP,
            TokenRefusal::Expired => login_error::TOKEN_EXPIRED,
            TokenRefusal::Invalid => login_error::TOKEN_INVALID,
        })?;
        Ok((app, account))
    }

    /// Make `conn` the account's session: `welcome` (the `login_ret`) is queued before anyone
    /// can see the session; an older session of the account is kicked; otherwise the account
    /// comes online (`__agora_user_online`).
    pub async fn login(
        &self,
        app: AppId,
        account: Account,
        conn: &ConnHandle,
        welcome: Frame,
        line: String,
    ) -> RResult<Session<S>> {
        let store = &self.store;
        let l = &self.limits();
        // a session whose node died and was not reaped yet never went offline for the
        // backend: its account is back, not new
        let out = self.plan(&app, || {
            let online = Happened::UserOnline {
                account: account.to_string(),
            };
            vec![(When::First, online)]
        });
        let opening = Opening {
            user: user(&app, &account),
            conn,
            welcome,
            events: &out,
            attr: attr::CONN_TIMEOUT,
        };
        let Opened { previous, attr } = store.session_open(opening).await?;
        let idle = (attr.and_then(|v| v.trim().parse::<i64>().ok()))
            .map_or(l.conn_timeout_default_secs, |s| l.clamp_conn_timeout(s));
        self.recorded(&out, |_| previous.is_none());
        let mut replaced = false;
        if let Some(old) = previous {
            if store.session_alive(&old).await {
                // the login is stored: it stands whether the old session hears its kick or
                // not (a kick lost on the way leaves it as this would), where failing here
                // would leave a stored session nobody holds, online until a next login
                if let Err(e) = store.kick(user(&app, &account), &old).await {
                    warn!(app = %app, account = %account, "the replaced session not kicked: {e}");
                }
                replaced = true;
            }
        }
        if !replaced {
            // two independent tells, at once: their store steps go out together (one round
            // trip to Redis, where one after the other took two or three)
            tokio::join!(
                self.presence(&app, &account, msgtype::CHANNEL_USER_JOIN),
                self.watched_online(&app, &account)
            );
        }
        if replaced {
            let kicked = Happened::UserKicked {
                account: account.to_string(),
                by: domain::kicked_by::LOGIN_ELSEWHERE,
            };
            self.emit(&app, kicked).await;
        }
        Ok(Session {
            store_ref: store.session_of(conn),
            app,
            account,
            conn: conn.clone(),
            line,
            channels: BTreeSet::new(),
            rate: Bucket::new(l.user_messages_per_second),
            joins: Bucket::with_burst(join_burst(l)),
            idle: Duration::from_secs(idle),
            watching: BTreeSet::new(),
            watch_calls: Bucket::with_burst(l.watch_calls_per_5s),
        })
    }

    /// The session is over (logout, connection gone, kicked: `reason`, one of
    /// [`domain::offline`]): it leaves its channels and goes offline.
    pub async fn end(&self, s: &Session<S>, reason: &'static str) {
        let channels: Vec<ChannelName> = s.channels.iter().cloned().collect();
        self.unwatch_all(s).await;
        if let Err(e) = self
            .end_session(
                &s.app,
                &s.account,
                &s.store_ref,
                &channels,
                reason,
                ASKED_AT_ONCE,
            )
            .await
        {
            warn!(app = %s.app, account = %s.account, "ending a session: {e:?}");
        }
    }

    /// Leave `channels` (`at_once` at a time: they are independent steps), then end the
    /// session (if it still is the account's): the account goes offline, and its unanswered
    /// invitations end unless it is back within the grace period (702).
    pub(super) async fn end_session(
        &self,
        app: &AppId,
        account: &Account,
        session: &S::Session,
        channels: &[ChannelName],
        reason: &'static str,
        at_once: usize,
    ) -> RResult<()> {
        let leave =
            |ch: ChannelName| async move { self.leave_channel(app, account, session, &ch).await };
        ask_each_at(at_once, channels.iter().cloned().map(leave)).await?;
        let out = self.plan(app, || {
            let offline = Happened::UserOffline {
                account: account.to_string(),
                reason,
            };
            vec![(When::Done, offline)]
        });
        if self
            .store
            .session_close(user(app, account), session, &out)
            .await?
        {
            self.recorded(&out, |_| true);
            // the tells and the two reads are independent: at once, one round trip to Redis
            let (_, _, invites, attrs) = tokio::join!(
                self.presence(app, account, msgtype::CHANNEL_USER_LEAVE),
                self.watched_gone(app, account, reason),
                self.store.invites_by(user(app, account)),
                self.store.user_attr_count(user(app, account))
            );
            let grace = Duration::from_secs(self.limits().invite_offline_grace_secs);
            let end_later = |(key, generation)| async move {
                Ok(self
                    .store
                    .schedule(Timer::CallerGone(key, generation), grace)
                    .await?)
            };
            ask_each_at(at_once, invites?.into_iter().map(end_later)).await?;
            // its attributes are kept for a while, then reclaimed (unless it is back)
            if attrs? > 0 {
                let keep = Duration::from_secs(self.limits().user_attrs_keep_secs);
                let timer = Timer::UserAttrs(app.clone(), account.clone());
                self.store.schedule(timer, keep).await?;
            }
        }
        Ok(())
    }

    /// A login or logout, for the members of `__agora_user_online` (if there are any).
    async fn presence(&self, app: &AppId, account: &Account, kind: &str) {
        let Ok(ch) = ChannelName::parse(special::USER_ONLINE, &self.limits()) else {
            return;
        };
        let body = content::channel_user(&ch, account);
        let frame = channel_event(&ch, account, kind, &body);
        let r = self
            .store
            .publish(chan(app, &ch), Publish::event(event(&frame, None)))
            .await;
        if let Err(e) = r {
            // the login or logout itself stands; watchers miss this one event
            warn!(app = %app, account = %account, "presence event lost: {e}");
        }
    }

    /// opensig: a fresh token for this session's later logins, checked as a login would be.
    pub(super) fn renew_token(&self, s: &Session<S>, token: &str) -> RResult<Reply> {
        token_check(&self.config.load(), &s.app, &s.account, token).map_err(|e| match e {
            TokenRefusal::Expired => ErrorKind::TokenExpired,
            _ => ErrorKind::TokenInvalid,
        })?;
        Ok(Reply::Done)
    }
}

/// A session's join burst: all its channels at once (a reconnect rejoins them), and at least
/// one second's worth.
pub(super) fn join_burst(l: &opensig_protocol::Limits) -> u32 {
    (l.channels_per_session.min(u32::MAX as usize) as u32).max(l.joins_per_second)
}
