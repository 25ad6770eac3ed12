//! What an app's own backend may do through the HTTP API (`crate::api`): the same rules as
//! a user's request, with the backend choosing who a message is from, and no membership
//! needed. The HTTP layer authenticates the app and spends its API budget first.

use opensig_protocol::frame::{Reply, Seen};
use opensig_protocol::ident::{Account, AppId, ChannelName};
use opensig_protocol::names::{attr, attr_change, msgtype};
use opensig_protocol::ErrorKind;

use opensig_protocol::names::api;

use super::session::token_check;
use super::{ask_each, chan, user, RResult, Signaling};
use crate::events::Happened;
use crate::store::{AttrOp, ChannelPage, ChannelSettings, Store};
use opensig_protocol::names::domain;

/// Accounts one status query may ask about.
pub const STATUS_MAX_ACCOUNTS: usize = 256;
/// Largest page of members or channels.
pub const PAGE_MAX: usize = 1000;
/// Pages of the store's channel list one prefix search or account lookup reads at most.
pub const SCAN_PAGES: usize = 4;

/// An account as [`Signaling::api_user`] finds it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UserLookup {
    /// It has a live session.
    pub online: bool,
    /// The node its session is on (`None`: a single process, or offline).
    pub node: Option<String>,
    /// Its attributes, in name order.
    pub attrs: Vec<(String, String)>,
    /// The channels it is a member of (of those looked at).
    pub channels: Vec<String>,
    /// Every channel of the app was looked at.
    pub complete: bool,
}

/// Who may call an app's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAccess {
    /// The caller proved it holds the app's certificate (`key: None`) or one of its API keys.
    Granted {
        /// The key's name.
        key: Option<String>,
        /// The key only reads.
        read_only: bool,
    },
    /// An app without a certificate: callers on this machine, or anyone when the operator
    /// opened it (`--api-open`).
    WithoutCredential {
        /// Opened to callers from other machines.
        open: bool,
    },
    /// Not let in (and not told why: unknown app, wrong or expired credential).
    Refused,
}

impl<S: Store> Signaling<S> {
    /// Whether `credential` lets its bearer call `app`'s API: one of the app's API keys
    /// (`osk_…`, [`crate::apikeys`]), or a SignalingToken of the account [`api::ACCOUNT`]
    /// (expiry rules as for logins; checked in constant time) unless the app refuses those
    /// (`api_no_certificate`).
    pub fn api_access(&self, app: &str, credential: Option<&str>) -> ApiAccess {
        let config = self.config.load();
        let certificate = match config.apps.get(app) {
            Some(c) => c.as_deref(),
            None if config.development_mode() => None,
            None => return ApiAccess::Refused,
        };
        // an API key (of any app, with a certificate or not): its hash in the file, or nothing
        if let Some(c) = credential.filter(|c| c.starts_with(crate::apikeys::PREFIX)) {
            let found = crate::apikeys::name_of(c)
                .and_then(|name| config.api_key(app, name))
                .filter(|k| crate::apikeys::matches(c, &k.hash));
            return match found {
                Some(k) => ApiAccess::Granted {
                    key: Some(k.name.clone()),
                    read_only: k.read_only,
                },
                None => ApiAccess::Refused,
            };
        }
        match (certificate, credential) {
            (None, _) => ApiAccess::WithoutCredential {
                open: config.api_open(app),
            },
            (Some(_), Some(c))
                if config.api_certificate_allowed(app)
                    && token_check(&config, app, api::ACCOUNT, c).is_ok() =>
            {
                ApiAccess::Granted {
                    key: None,
                    read_only: false,
                }
            }
            (Some(_), _) => ApiAccess::Refused,
        }
    }

    /// A peer message from `from` to `to`, kept `ttl_secs` (default and bounds as for
    /// users) when `to` is offline: `onMessageInstantReceive(from, 0, msg)`.
    pub async fn api_peer_message(
        &self,
        app: &AppId,
        (from, to): (&str, &str),
        msg: &str,
        ttl_secs: Option<u64>,
    ) -> RResult<()> {
        let from = Account::parse(from, &self.limits())?;
        let flag = match ttl_secs {
            Some(t) => format!("v1:E:{t}"),
            None => opensig_protocol::names::fixed::DEFAULT_MSG_FLAG.to_string(),
        };
        let kind = msgtype::INSTANT;
        let peer = self.check_peer_message(to, &flag, kind, msg)?;
        self.store_peer_message(app, &from, &peer, (kind, &flag, msg), None)
            .await
            .map(|_| ())
    }

    /// A channel message from `from` to the channel's members (`onMessageChannelReceive`),
    /// numbered and kept like any other.
    pub async fn api_channel_message(
        &self,
        app: &AppId,
        channel: &str,
        from: &str,
        msg: &str,
    ) -> RResult<()> {
        let ch = self.check_channel_message(channel, msg)?;
        let from = Account::parse(from, &self.limits())?;
        self.publish_message(
            super::chan(app, &ch),
            &from,
            msg,
            None,
            None,
            Seen::default(),
        )
        .await
        .map(|_| ())
    }

    /// Online (true) or not, for each account.
    pub async fn api_status(&self, app: &AppId, accounts: &[String]) -> RResult<Vec<bool>> {
        if accounts.len() > STATUS_MAX_ACCOUNTS {
            return Err(ErrorKind::TooLarge);
        }
        let l = &self.limits();
        let parsed = accounts
            .iter()
            .map(|a| Account::parse(a, l))
            .collect::<Result<Vec<_>, _>>()?;
        // (each owns its account: a future borrowing from the list is not Send for the router)
        let online = |a: Account| async move { Ok(self.store.online(user(app, &a)).await?) };
        ask_each(parsed.into_iter().map(online)).await
    }

    /// An account's attributes, in name order.
    pub async fn api_user_attrs(
        &self,
        app: &AppId,
        account: &str,
    ) -> RResult<Vec<(String, String)>> {
        let account = Account::parse(account, &self.limits())?;
        Ok(self.store.user_attrs(user(app, &account)).await?)
    }

    /// Set (`""`: delete) one of an account's attributes.
    pub async fn api_set_user_attr(
        &self,
        app: &AppId,
        account: &str,
        name: &str,
        value: &str,
    ) -> RResult<()> {
        let account = Account::parse(account, &self.limits())?;
        let (stored, _) = self.check_user_attr(name, value)?;
        self.store_user_attr(app, &account, name, &stored).await
    }

    /// End the account's session (`onLogout(103)`, on whichever node it is); false when it
    /// had none.
    pub async fn api_kick(&self, app: &AppId, account: &str) -> RResult<bool> {
        let account = Account::parse(account, &self.limits())?;
        let Some(session) = self.store.session_get(user(app, &account)).await? else {
            return Ok(false);
        };
        self.store.kick(user(app, &account), &session).await?;
        let kicked = Happened::UserKicked {
            account: account.to_string(),
            by: domain::kicked_by::API,
        };
        self.emit(app, kicked).await;
        Ok(true)
    }

    /// A page of the app's channels with members whose names start with `prefix` (`""`:
    /// all), by name. A prefix reads at most [`SCAN_PAGES`] of the store's pages per call,
    /// from its first name and none past its last; a page may then be short (or empty) with
    /// a `next` to go on from.
    pub async fn api_channels(
        &self,
        app: &AppId,
        cursor: &str,
        limit: usize,
        prefix: &str,
    ) -> RResult<ChannelPage> {
        if cursor.len() > 256 || prefix.len() > self.limits().channel_name_max_bytes {
            return Err(ErrorKind::InvalidArgs);
        }
        let limit = limit.clamp(1, PAGE_MAX);
        if prefix.is_empty() {
            return Ok(self.store.channels(app, cursor, "", limit).await?);
        }
        let mut out = ChannelPage {
            channels: Vec::new(),
            next: Some(cursor.to_string()),
        };
        for _ in 0..SCAN_PAGES {
            let Some(at) = out.next.take() else { break };
            // pages go by name: from the prefix's first name
            let page = self.store.channels(app, &at, prefix, PAGE_MAX).await?;
            out.channels.extend(
                page.channels
                    .into_iter()
                    .filter(|(n, _)| n.starts_with(prefix)),
            );
            // and past its names, none follows
            let past = |n: &String| n.as_str() > prefix && !n.starts_with(prefix);
            out.next = page.next.filter(|n| !past(n));
            if out.channels.len() >= limit {
                break;
            }
        }
        if out.channels.len() > limit {
            // the rest comes after the last one given
            out.channels.truncate(limit);
            out.next = out.channels.last().map(|(n, _)| n.clone());
        }
        Ok(out)
    }

    /// An account as an operator looks it up: online, on which node (`None` with a single
    /// process), its attributes, and the channels it is a member of among the first
    /// [`SCAN_PAGES`] pages of the app's channels (`complete`: all of them were looked at).
    pub async fn api_user(&self, app: &AppId, account: &str) -> RResult<UserLookup> {
        let account = Account::parse(account, &self.limits())?;
        let session = self.store.session_get(user(app, &account)).await?;
        let node = session.as_ref().and_then(|s| self.store.session_node(s));
        let attrs = self.store.user_attrs(user(app, &account)).await?;
        let mut channels = Vec::new();
        let mut next = Some(String::new());
        if session.is_some() {
            for _ in 0..SCAN_PAGES {
                let Some(at) = next.take() else { break };
                let page = self.store.channels(app, &at, "", PAGE_MAX).await?;
                let l = self.limits();
                let names = page.channels.into_iter().map(|(n, _)| n);
                let named = names.filter_map(|n| Some((ChannelName::parse(&n, &l).ok()?, n)));
                let member = |(ch, name): (ChannelName, String)| {
                    let account = &account;
                    async move {
                        let is = self.store.is_member(chan(app, &ch), account).await?;
                        Ok(is.then_some(name))
                    }
                };
                channels.extend(ask_each(named.map(member)).await?.into_iter().flatten());
                next = page.next;
            }
        } else {
            next = None;
        }
        // in name order, each once: the pages come by name, each channel on one of them
        Ok(UserLookup {
            online: session.is_some(),
            node,
            attrs,
            channels,
            complete: next.is_none(),
        })
    }

    /// The member count and a page of members, oldest first: `limit` of them after skipping
    /// `offset` from the newest end's count (offset 0: the latest `limit`).
    pub async fn api_members(
        &self,
        app: &AppId,
        channel: &str,
        offset: usize,
        limit: usize,
    ) -> RResult<(usize, Vec<String>)> {
        let ch = ChannelName::parse(channel, &self.limits())?;
        let limit = limit.clamp(1, PAGE_MAX);
        let (count, mut latest) = self
            .store
            .members(chan(app, &ch), offset.saturating_add(limit).min(100_000))
            .await?;
        let keep = latest.len().saturating_sub(offset);
        latest.truncate(keep);
        let skip = latest.len().saturating_sub(limit);
        latest.drain(..skip);
        Ok((count, latest))
    }

    /// A channel's attributes, in name order.
    pub async fn api_channel_attrs(
        &self,
        app: &AppId,
        channel: &str,
    ) -> RResult<Vec<(String, String)>> {
        let ch = ChannelName::parse(channel, &self.limits())?;
        Ok(self.store.channel_attrs(chan(app, &ch)).await?)
    }

    /// Set a channel attribute (`onChannelAttrUpdated(name, value, "update")` for the
    /// members); built-in ones mean what they mean for members.
    pub async fn api_set_channel_attr(
        &self,
        app: &AppId,
        channel: &str,
        name: &str,
        value: &str,
    ) -> RResult<()> {
        let (ch, setting) = self.check_channel_attr(channel, name, value)?;
        self.room_to_store()?;
        self.store_channel_attr(app, &ch, "", (name, value, setting))
            .await
    }

    /// Delete a channel attribute (`onChannelAttrUpdated(name, "", "del")`).
    pub async fn api_del_channel_attr(
        &self,
        app: &AppId,
        channel: &str,
        name: &str,
    ) -> RResult<()> {
        let ch = self.ordinary(channel)?;
        self.limits().check_attr_name(name)?;
        if name == attr::MEMBER_NUM {
            return Err(ErrorKind::ReadOnlyAttr);
        }
        self.delete_channel_attr(app, &ch, "", name).await
    }

    /// Delete every channel attribute (`onChannelAttrUpdated("", "", "clear")`).
    pub async fn api_clear_channel_attrs(&self, app: &AppId, channel: &str) -> RResult<()> {
        let ch = self.ordinary(channel)?;
        let op = AttrOp::Clear {
            defaults: ChannelSettings::defaults(&self.limits()),
        };
        self.change_attrs(app, &ch, "", op, ("", "", attr_change::CLEAR))
            .await
    }

    /// A page of a channel's history (`after` a message number, or the latest `limit`).
    pub async fn api_history(
        &self,
        app: &AppId,
        channel: &str,
        after: Option<u64>,
        limit: Option<u64>,
    ) -> RResult<Reply> {
        let ch = self.ordinary(channel)?;
        self.history_page(app, &ch, after, limit).await
    }

    /// The app id of an API path, by the rule logins use.
    pub fn api_app(&self, app: &str) -> RResult<AppId> {
        AppId::parse(app, &self.limits())
    }
}
