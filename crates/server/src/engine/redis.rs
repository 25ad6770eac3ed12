//! The cluster engine: many opensig-server nodes sharing one Redis.
//!
//! What lives in Redis (so a node can die without losing it): sessions (which node holds which
//! account, with expiry), user attributes, mailboxes (a sorted set per account, score =
//! version) with their counters, channel membership, attributes and sequences (expiring
//! `_channel_ttl` after the last member leaves), invitations, and every timer (a sorted set of
//! due times, claimed with a lease so each fires once even if its node died).
//!
//! Every multi-step change is one Lua script (`lua/`), so it is atomic, and the script itself
//! publishes what must be delivered, so deliveries leave Redis in the order of the change.
//! Delivery goes over pub/sub: each node subscribes to exactly one topic, `<prefix>n:<node>`,
//! which carries, in order, pushes for its connections (`m`), channel events for its members
//! (`c`, once per node, never per recipient), membership changes of its connections (`j`/`l`),
//! and kicks (`k`). Nodes register with a heartbeat; a node whose heartbeat lapsed is reaped by
//! one of the others (its sessions end, its members leave, with the usual events).
//!
//! Everything is scoped by app id; keys use spaces as separators (names never contain one).
//! Meant for a single Redis (or a primary with replicas), not Redis Cluster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script, Value as RValue};
use serde_json::Value;
use tracing::{info, warn};

use opensig_protocol::codes::Code;
use opensig_protocol::frame::{content, out, VoipKind};
use opensig_protocol::names::{attr, attr_change, invite_option, msgtype, special};
use opensig_protocol::{msg, ErrorKind, Limits};

use super::{AttrOp, EResult, Engine, JoinInfo, LoginInfo, Mail, MailPage, Relay};
use crate::delivery::{ConnHandle, Frame};

const HEARTBEAT: Duration = Duration::from_millis(1000);
const NODE_TTL_MS: u64 = 5000;
const SESSION_TTL_MS: u64 = 30_000;
const SESSION_REFRESH: Duration = Duration::from_secs(10);
const TIMER_POLL: Duration = Duration::from_millis(100);
const TIMER_LEASE_MS: u64 = 10_000;
const REAP_EVERY: Duration = Duration::from_millis(2000);
/// Longest a Redis operation may take before the request gets `unavailable`.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

fn lua(body: &str) -> Script {
    Script::new(body)
}

fn channel_lua(body: &str) -> Script {
    Script::new(&format!("{}\n{}", include_str!("lua/helpers.lua"), body))
}

struct Scripts {
    append: Script,
    getmsg: Script,
    getmsg2: Script,
    session: Script,
    join: Script,
    leave: Script,
    chansend: Script,
    attr: Script,
    event: Script,
    membernum: Script,
    timers: Script,
    invite: Script,
    ack: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            append: lua(include_str!("lua/append.lua")),
            getmsg: lua(include_str!("lua/getmsg.lua")),
            getmsg2: lua(include_str!("lua/getmsg2.lua")),
            session: lua(include_str!("lua/session.lua")),
            join: channel_lua(include_str!("lua/join.lua")),
            leave: channel_lua(include_str!("lua/leave.lua")),
            chansend: channel_lua(include_str!("lua/chansend.lua")),
            attr: channel_lua(include_str!("lua/attr.lua")),
            event: channel_lua(include_str!("lua/event.lua")),
            membernum: channel_lua(include_str!("lua/membernum.lua")),
            timers: lua(include_str!("lua/timers.lua")),
            invite: lua(include_str!("lua/invite.lua")),
            ack: lua("if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'acked', '1') end return 1"),
        }
    }
}

/// Key names (one place).
struct Keys {
    p: String,
}

impl Keys {
    fn sess(&self, app: &str, account: &str) -> String {
        format!("{}s {app} {account}", self.p)
    }
    fn node_sessions(&self, node: &str) -> String {
        format!("{}ns {node}", self.p)
    }
    fn node_channels_prefix(&self) -> String {
        format!("{}nc ", self.p)
    }
    fn node_channels(&self, node: &str) -> String {
        format!("{}nc {node}", self.p)
    }
    fn node(&self, node: &str) -> String {
        format!("{}node {node}", self.p)
    }
    fn node_prefix(&self) -> String {
        format!("{}node ", self.p)
    }
    fn nodes(&self) -> String {
        format!("{}nodes", self.p)
    }
    fn reap(&self, node: &str) -> String {
        format!("{}reap {node}", self.p)
    }
    fn topic_prefix(&self) -> String {
        format!("{}n:", self.p)
    }
    fn user_attrs(&self, app: &str, account: &str) -> String {
        format!("{}ua {app} {account}", self.p)
    }
    fn mailbox(&self, app: &str, account: &str) -> [String; 2] {
        [
            format!("{}mb {app} {account}", self.p),
            format!("{}mbm {app} {account}", self.p),
        ]
    }
    fn dedup(&self, app: &str, from: &str, id: &str) -> String {
        format!("{}dd {app} {from} {id}", self.p)
    }
    fn channel(&self, app: &str, ch: &str) -> [String; 8] {
        let b = format!("{app} {ch}");
        [
            format!("{}cm {b}", self.p),
            format!("{}co {b}", self.p),
            format!("{}cn {b}", self.p),
            format!("{}cd {b}", self.p),
            format!("{}ca {b}", self.p),
            format!("{}cs {b}", self.p),
            format!("{}cc {b}", self.p),
            format!("{}cr {b}", self.p),
        ]
    }
    fn invite(&self, app: &str, caller: &str, ch: &str, callee: &str) -> String {
        format!("{}inv {app} {caller} {ch} {callee}", self.p)
    }
    fn timers(&self) -> String {
        format!("{}timers", self.p)
    }
}

/// How to reach Redis and who this node is.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key and topic (several clusters can share one Redis).
    pub prefix: String,
    /// This node's id (unique in the cluster; no spaces).
    pub node_id: String,
    /// The WebSocket URL clients use for this node (listed by `/getaddr`).
    pub public_url: String,
}

type LocalMember = (String, u64, ConnHandle);

struct Inner {
    limits: Limits,
    cfg: RedisConfig,
    keys: Keys,
    scripts: Scripts,
    conn: ConnectionManager,
    client: redis::Client,
    /// Connections of this node that logged in, by id.
    conns: DashMap<u64, ConnHandle>,
    /// Sessions of this node: "app account" → conn id.
    sessions: DashMap<String, u64>,
    /// Channel members on this node: "app channel" → (account, conn id, handle).
    members: DashMap<String, Vec<LocalMember>>,
    msg_counter: AtomicU64,
    generation: AtomicU64,
    registered: AtomicBool,
    stopping: AtomicBool,
    /// Crashed on purpose (tests): every operation fails, background tasks stop.
    halted: AtomicBool,
    /// Short-lived cache of live node ids (for presence checks of invites).
    live: Mutex<(std::time::Instant, Vec<String>)>,
}

/// The Redis engine. Cloning shares the same node.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

fn unavailable<E: std::fmt::Display>(e: E) -> ErrorKind {
    warn!("redis: {e}");
    ErrorKind::Unavailable
}

async fn timed<T>(f: impl std::future::Future<Output = redis::RedisResult<T>>) -> EResult<T> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(unavailable("timed out")),
    }
}

fn text(v: &RValue) -> String {
    match v {
        RValue::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        RValue::SimpleString(s) => s.clone(),
        RValue::Int(i) => i.to_string(),
        RValue::VerbatimString { text, .. } => text.clone(),
        _ => String::new(),
    }
}

fn int(v: &RValue) -> i64 {
    match v {
        RValue::Int(i) => *i,
        other => text(other).parse().unwrap_or(0),
    }
}

fn list(v: RValue) -> Vec<RValue> {
    match v {
        RValue::Array(a) | RValue::Set(a) => a,
        RValue::Nil => Vec::new(),
        other => vec![other],
    }
}

impl Redis {
    /// Connect, register this node and start its background tasks (subscriber, heartbeat,
    /// timers, reaper).
    pub async fn connect(cfg: RedisConfig, limits: Limits) -> Result<Redis, redis::RedisError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let mgr_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(OP_TIMEOUT)
            .set_number_of_retries(2)
            .set_max_delay(1000);
        let conn = client.get_connection_manager_with_config(mgr_cfg).await?;
        let keys = Keys {
            p: cfg.prefix.clone(),
        };
        let inner = Arc::new(Inner {
            limits,
            keys,
            scripts: Scripts::new(),
            conn,
            client,
            conns: DashMap::new(),
            sessions: DashMap::new(),
            members: DashMap::new(),
            msg_counter: AtomicU64::new(0),
            generation: AtomicU64::new(rand::random::<u32>() as u64),
            registered: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            halted: AtomicBool::new(false),
            live: Mutex::new((
                std::time::Instant::now() - Duration::from_secs(10),
                Vec::new(),
            )),
            cfg,
        });
        inner.heartbeat_once().await.map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::IoError, "cannot register the node"))
        })?;
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(subscriber(Arc::downgrade(&inner), subscribed_tx));
        let _ = tokio::time::timeout(Duration::from_secs(5), subscribed_rx).await;
        tokio::spawn(heartbeat(Arc::downgrade(&inner)));
        tokio::spawn(timers(Arc::downgrade(&inner)));
        tokio::spawn(reaper(Arc::downgrade(&inner)));
        info!(node = %inner.cfg.node_id, "joined the cluster at {}", inner.cfg.url);
        Ok(Redis { inner })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.cfg.node_id
    }

    /// Sessions held by this node.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Leave the cluster (graceful shutdown): stop the heartbeat and deregister.
    pub async fn deregister(&self) {
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::SeqCst);
        let mut c = inner.conn.clone();
        let _: EResult<()> = timed(c.del(inner.keys.node(&inner.cfg.node_id))).await;
        let _: EResult<()> = timed(c.srem(inner.keys.nodes(), &inner.cfg.node_id)).await;
    }
}

impl Inner {
    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A halted (crashed on purpose) node refuses every operation.
    fn check(&self) -> EResult<()> {
        if self.halted.load(Ordering::Relaxed) {
            Err(ErrorKind::Unavailable)
        } else {
            Ok(())
        }
    }

    fn next_msg_id(&self) -> String {
        let n = self.msg_counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.cfg.node_id)
    }

    fn me(&self, conn: u64) -> String {
        format!("{} {conn}", self.cfg.node_id)
    }

    async fn heartbeat_once(&self) -> EResult<()> {
        let mut c = self.conn();
        let key = self.keys.node(&self.cfg.node_id);
        let prev: Option<String> = timed(
            redis::cmd("SET")
                .arg(&key)
                .arg(&self.cfg.public_url)
                .arg("PX")
                .arg(NODE_TTL_MS)
                .arg("GET")
                .query_async(&mut c),
        )
        .await?;
        let _: () = timed(c.sadd(self.keys.nodes(), &self.cfg.node_id)).await?;
        let was_registered = self.registered.swap(true, Ordering::SeqCst);
        if was_registered && prev.is_none() {
            // The cluster thought this node dead (Redis was unreachable too long) and may have
            // ended its sessions: drop every connection so the clients reconnect and resume.
            warn!("this node's registration had lapsed: reconnecting every client");
            for c in self.conns.iter() {
                c.drop_silently();
            }
        }
        Ok(())
    }

    async fn live_nodes(&self) -> Vec<String> {
        {
            let live = self.live.lock();
            if live.0.elapsed() < Duration::from_millis(500) {
                return live.1.clone();
            }
        }
        let mut c = self.conn();
        let nodes: Vec<String> = timed(c.smembers(self.keys.nodes()))
            .await
            .unwrap_or_default();
        let mut alive = Vec::new();
        if !nodes.is_empty() {
            let keys: Vec<String> = nodes.iter().map(|n| self.keys.node(n)).collect();
            let urls: Vec<Option<String>> = timed(c.mget(&keys)).await.unwrap_or_default();
            for (n, u) in nodes.into_iter().zip(urls) {
                if u.is_some() {
                    alive.push(n);
                }
            }
        }
        *self.live.lock() = (std::time::Instant::now(), alive.clone());
        alive
    }

    async fn online(&self, app: &str, account: &str) -> EResult<bool> {
        let mut c = self.conn();
        let r: i64 = timed(
            self.scripts
                .session
                .key(self.keys.sess(app, account))
                .key(self.keys.node_sessions(&self.cfg.node_id))
                .arg("online")
                .arg(self.keys.node_prefix())
                .invoke_async(&mut c),
        )
        .await?;
        Ok(r == 1)
    }

    /// Append to a mailbox (pushing to the recipient's node); Ok(version) or Ok(0) for a
    /// dropped duplicate.
    async fn append(&self, app: &str, mail: &Mail<'_>) -> EResult<u64> {
        let id = self.next_msg_id();
        let text = msg::build_v3(&id, mail.from, mail.to, mail.kind, mail.flag, mail.content);
        let [mb, mbm] = self.keys.mailbox(app, mail.to);
        let dd = mail
            .message_id
            .map(|m| self.keys.dedup(app, mail.from, m))
            .unwrap_or_default();
        let mut c = self.conn();
        let r: Vec<i64> = timed(
            self.scripts
                .append
                .key(mb)
                .key(mbm)
                .key(self.keys.sess(app, mail.to))
                .key(dd)
                .arg(mail.ttl_secs.saturating_mul(1000))
                .arg(self.limits.mailbox_max_messages)
                .arg(&text)
                .arg(if mail.message_id.is_some() { "1" } else { "0" })
                .arg(self.limits.dedup_window_secs * 1000)
                .arg(self.keys.topic_prefix())
                .invoke_async(&mut c),
        )
        .await?;
        match r.first() {
            Some(0) => Ok(r.get(1).copied().unwrap_or(0) as u64),
            Some(1) => Ok(0),
            _ => Err(ErrorKind::MailboxFull),
        }
    }

    async fn special_event(&self, app: &str, channel: &str, source: &str, kind: &str, body: &str) {
        let keys = self.keys.channel(app, channel);
        let mut c = self.conn();
        let mut inv = self.scripts.event.prepare_invoke();
        for k in &keys {
            inv.key(k);
        }
        inv.arg(app)
            .arg(channel)
            .arg(self.keys.topic_prefix())
            .arg(source)
            .arg(kind)
            .arg(body);
        let _: EResult<i64> = timed(inv.invoke_async(&mut c)).await;
    }

    async fn leave_as(
        &self,
        app: &str,
        channel: &str,
        account: &str,
        node: &str,
        conn: u64,
    ) -> EResult<bool> {
        let keys = self.keys.channel(app, channel);
        let mut c = self.conn();
        let mut inv = self.scripts.leave.prepare_invoke();
        for k in &keys {
            inv.key(k);
        }
        inv.arg(app)
            .arg(channel)
            .arg(self.keys.topic_prefix())
            .arg(account)
            .arg(node)
            .arg(conn)
            .arg(if channel.starts_with(special::PREFIX) {
                "1"
            } else {
                "0"
            })
            .arg(content::channel_user(channel, account))
            .arg(self.limits.channel_ttl_default_secs)
            .arg(self.keys.node_channels_prefix());
        let r: i64 = timed(inv.invoke_async(&mut c)).await?;
        Ok(r == 1)
    }

    async fn end_session(&self, app: &str, account: &str, node: &str, conn: u64) -> bool {
        let mut c = self.conn();
        let member = format!("{app} {account} {conn}");
        let r: EResult<i64> = timed(
            self.scripts
                .session
                .key(self.keys.sess(app, account))
                .key(self.keys.node_sessions(node))
                .arg("logout")
                .arg(format!("{node} {conn}"))
                .arg(0)
                .arg(member)
                .invoke_async(&mut c),
        )
        .await;
        if r == Ok(1) {
            let body = content::channel_user(special::USER_ONLINE, account);
            self.special_event(
                app,
                special::USER_ONLINE,
                account,
                msgtype::CHANNEL_USER_LEAVE,
                &body,
            )
            .await;
            true
        } else {
            false
        }
    }

    async fn schedule(&self, member: &str, after_ms: u64) {
        let mut c = self.conn();
        let now: EResult<(i64, i64)> = timed(redis::cmd("TIME").query_async(&mut c)).await;
        let Ok((s, us)) = now else { return };
        let due = s * 1000 + us / 1000 + after_ms as i64;
        let _: EResult<()> = timed(c.zadd(self.keys.timers(), member, due)).await;
    }

    async fn voip_failed(
        &self,
        app: &str,
        caller: &str,
        channel: &str,
        callee: &str,
        extra: &Value,
        code: Code,
    ) {
        let body = content::voip(channel, callee, extra, Some(code.value()));
        let mail = voip_mail(
            callee,
            caller,
            msgtype::VOIP_INVITE_FAILED,
            &body,
            self.limits.message_ttl_default_secs,
        );
        let _ = self.append(app, &mail).await;
    }

    /// Apply a pub/sub message addressed to this node.
    fn deliver(&self, payload: &str) {
        if self.halted.load(Ordering::Relaxed) {
            return;
        }
        let mut it = payload.splitn(2, ' ');
        let (Some(kind), Some(rest)) = (it.next(), it.next()) else {
            return;
        };
        match kind {
            "m" => {
                let f = msg::python_split(rest, 2);
                if f.len() < 3 {
                    return;
                }
                let (Ok(conn), Ok(version)) = (f[0].parse::<u64>(), f[1].parse::<u64>()) else {
                    return;
                };
                if let Some(h) = self.conns.get(&conn) {
                    h.push(out::recvmsg(version, f[2]).into());
                }
            }
            "c" => {
                // app ch seq exclude source kind content
                let f = msg::python_split(rest, 6);
                if f.len() < 7 {
                    return;
                }
                let Ok(seq) = f[2].parse::<u64>() else { return };
                let (ch, exclude) = (f[1], f[3]);
                let key = format!("{} {}", f[0], ch);
                let Some(members) = self.members.get(&key) else {
                    return;
                };
                let text = msg::build_v2(f[4], ch, f[5], msg::NO_FLAG, f[6]);
                let frame: Frame = out::channel2(ch, seq, &text).into();
                for (account, _, h) in members.iter() {
                    if account != exclude {
                        h.push(frame.clone());
                    }
                }
            }
            "j" | "l" => {
                // app ch account conn
                let f: Vec<&str> = rest.split(' ').collect();
                if f.len() != 4 {
                    return;
                }
                let Ok(conn) = f[3].parse::<u64>() else {
                    return;
                };
                let key = format!("{} {}", f[0], f[1]);
                if kind == "j" {
                    let Some(h) = self.conns.get(&conn).map(|h| h.clone()) else {
                        return;
                    };
                    let mut m = self.members.entry(key).or_default();
                    m.retain(|(a, _, _)| a != f[2]);
                    m.push((f[2].to_owned(), conn, h));
                } else {
                    let mut empty = false;
                    if let Some(mut m) = self.members.get_mut(&key) {
                        m.retain(|(a, c, _)| !(a == f[2] && *c == conn));
                        empty = m.is_empty();
                    }
                    if empty {
                        self.members.remove_if(&key, |_, m| m.is_empty());
                    }
                }
            }
            "k" => {
                if let Ok(conn) = rest.parse::<u64>() {
                    if let Some(h) = self.conns.get(&conn) {
                        h.kick();
                    }
                }
            }
            _ => {}
        }
    }
}

fn voip_mail<'a>(
    from: &'a str,
    to: &'a str,
    kind: &'a str,
    content: &'a str,
    ttl_secs: u64,
) -> Mail<'a> {
    Mail {
        from,
        to,
        kind,
        flag: msg::NO_FLAG,
        ttl_secs,
        content,
        message_id: None,
    }
}

fn parse_extra_options(extra: &Value) -> (bool, u64) {
    let obj = match extra {
        Value::String(s) => serde_json::from_str::<Value>(s).ok(),
        Value::Object(_) => Some(extra.clone()),
        _ => None,
    };
    let num = |k: &str| -> Option<f64> {
        let v = obj.as_ref()?.get(k)?;
        v.as_f64().or_else(|| v.as_str()?.trim().parse().ok())
    };
    (
        num(invite_option::REQUIRE_PEER_ONLINE).is_some_and(|n| n != 0.0),
        num(invite_option::TIMEOUT).map_or(0, |n| n.max(0.0) as u64),
    )
}

/// Receives this node's topic in order; reconnects by itself.
async fn subscriber(inner: Weak<Inner>, ready: tokio::sync::oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    let mut reconnected = false;
    loop {
        let Some(i) = inner.upgrade() else { return };
        let topic = format!("{}{}", i.keys.topic_prefix(), i.cfg.node_id);
        let client = i.client.clone();
        drop(i);
        let pubsub =
            match tokio::time::timeout(Duration::from_secs(3), client.get_async_pubsub()).await {
                Ok(Ok(mut p)) => match p.subscribe(&topic).await {
                    Ok(()) => Some(p),
                    Err(e) => {
                        warn!("redis subscribe: {e}");
                        None
                    }
                },
                Ok(Err(e)) => {
                    warn!("redis pub/sub: {e}");
                    None
                }
                Err(_) => None,
            };
        let Some(mut pubsub) = pubsub else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        backoff = Duration::from_millis(100);
        if let Some(tx) = ready.take() {
            let _ = tx.send(());
        }
        if reconnected {
            // pushes may have been lost while disconnected: have every client poll its mailbox
            if let Some(i) = inner.upgrade() {
                let nudge: Frame = out::msg_notice(1).into();
                for c in i.conns.iter() {
                    c.push(nudge.clone());
                }
            }
        }
        reconnected = true;
        let mut stream = pubsub.on_message();
        while let Some(m) = stream.next().await {
            let Some(i) = inner.upgrade() else { return };
            if let Ok(payload) = std::str::from_utf8(m.get_payload_bytes()) {
                i.deliver(payload);
            }
        }
        warn!("redis pub/sub connection lost; reconnecting");
    }
}

async fn heartbeat(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut last_refresh = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let Some(i) = inner.upgrade() else { return };
        if i.stopping.load(Ordering::SeqCst) {
            return;
        }
        let _ = i.heartbeat_once().await;
        if last_refresh.elapsed() >= SESSION_REFRESH {
            last_refresh = tokio::time::Instant::now();
            let keys: Vec<String> = i
                .sessions
                .iter()
                .map(|e| format!("{}s {}", i.keys.p, e.key()))
                .collect();
            let mut c = i.conn();
            for chunk in keys.chunks(500) {
                let mut pipe = redis::pipe();
                for k in chunk {
                    pipe.pexpire(k, SESSION_TTL_MS as i64).ignore();
                }
                let _: EResult<()> = timed(pipe.query_async(&mut c)).await;
            }
        }
    }
}

async fn timers(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(TIMER_POLL);
    loop {
        tick.tick().await;
        let Some(i) = inner.upgrade() else { return };
        if i.stopping.load(Ordering::SeqCst) {
            return;
        }
        let mut c = i.conn();
        let due: EResult<Vec<String>> = timed(
            i.scripts
                .timers
                .key(i.keys.timers())
                .arg(TIMER_LEASE_MS)
                .arg(100)
                .invoke_async(&mut c),
        )
        .await;
        for member in due.unwrap_or_default() {
            let engine = Redis { inner: i.clone() };
            tokio::spawn(async move {
                if engine.fire(&member).await {
                    let mut c = engine.inner.conn();
                    let _: EResult<()> = timed(c.zrem(engine.inner.keys.timers(), &member)).await;
                }
            });
        }
    }
}

/// Ends the sessions and memberships of nodes whose heartbeat lapsed (one reaper per node).
async fn reaper(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    loop {
        tick.tick().await;
        let Some(i) = inner.upgrade() else { return };
        if i.stopping.load(Ordering::SeqCst) {
            return;
        }
        let mut c = i.conn();
        let nodes: Vec<String> = timed(c.smembers(i.keys.nodes())).await.unwrap_or_default();
        for node in nodes.into_iter().filter(|n| *n != i.cfg.node_id) {
            let alive: EResult<bool> = timed(c.exists(i.keys.node(&node))).await;
            if alive != Ok(false) {
                continue;
            }
            let locked: EResult<Option<String>> = timed(
                redis::cmd("SET")
                    .arg(i.keys.reap(&node))
                    .arg(&i.cfg.node_id)
                    .arg("NX")
                    .arg("PX")
                    .arg(60_000)
                    .query_async(&mut c),
            )
            .await;
            if !matches!(locked, Ok(Some(_))) {
                continue;
            }
            info!(node = %node, "reaping a node that stopped");
            let sessions: Vec<String> = timed(c.smembers(i.keys.node_sessions(&node)))
                .await
                .unwrap_or_default();
            for s in sessions {
                let f: Vec<&str> = s.split(' ').collect();
                if let [app, account, conn] = f[..] {
                    if let Ok(conn) = conn.parse() {
                        i.end_session(app, account, &node, conn).await;
                    }
                }
            }
            let memberships: Vec<String> = timed(c.smembers(i.keys.node_channels(&node)))
                .await
                .unwrap_or_default();
            for m in memberships {
                let f: Vec<&str> = m.split(' ').collect();
                if let [app, ch, account, conn] = f[..] {
                    if let Ok(conn) = conn.parse() {
                        let _ = i.leave_as(app, ch, account, &node, conn).await;
                    }
                }
            }
            let _: EResult<()> =
                timed(c.del(&[i.keys.node_sessions(&node), i.keys.node_channels(&node)])).await;
            let _: EResult<()> = timed(c.srem(i.keys.nodes(), &node)).await;
        }
    }
}

impl Redis {
    /// Fire a claimed timer; true when it is finished (false: it rescheduled itself).
    async fn fire(&self, member: &str) -> bool {
        let inner = &self.inner;
        let f: Vec<&str> = member.split(' ').collect();
        match f.first().copied() {
            // inv <gen> <code> <app> <caller> <channel> <callee>
            Some("inv") if f.len() == 7 => {
                let (gen, code, app, caller, channel, callee) =
                    (f[1], f[2], f[3], f[4], f[5], f[6]);
                let code = if code == "703" {
                    Code::InvitePeerOffline
                } else {
                    Code::InviteTimeout
                };
                let key = inner.keys.invite(app, caller, channel, callee);
                let online = inner.online(app, callee).await.unwrap_or(false);
                if code == Code::InvitePeerOffline {
                    // only fails if still unacknowledged and the callee still away
                    let mut c = inner.conn();
                    let acked: EResult<Option<String>> = timed(c.hget(&key, "acked")).await;
                    if online || matches!(acked, Ok(Some(ref a)) if a == "1") {
                        return true;
                    }
                }
                let mut c = inner.conn();
                let taken: EResult<Option<Vec<Option<String>>>> =
                    timed(inner.scripts.invite.key(&key).arg(gen).invoke_async(&mut c)).await;
                let fields = match taken {
                    Ok(Some(f)) => f,
                    Ok(None) => return true,
                    Err(_) => return false, // Redis trouble: the lease brings it back
                };
                let version: u64 = fields
                    .get(1)
                    .cloned()
                    .flatten()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let extra: Value = fields
                    .get(2)
                    .cloned()
                    .flatten()
                    .and_then(|e| serde_json::from_str(&e).ok())
                    .unwrap_or(Value::String(String::new()));
                // destroy the invite: an undelivered copy is withdrawn; a delivered one is ended
                let [mb, _] = inner.keys.mailbox(app, callee);
                let withdrawn: EResult<i64> = timed(c.zrembyscore(&mb, version, version)).await;
                if withdrawn != Ok(1) || online {
                    let body = content::voip(
                        channel,
                        caller,
                        &Value::String(String::new()),
                        Some(code.value()),
                    );
                    let mail = voip_mail(
                        caller,
                        callee,
                        VoipKind::Bye.name(),
                        &body,
                        inner.limits.message_ttl_default_secs,
                    );
                    let _ = inner.append(app, &mail).await;
                }
                inner
                    .voip_failed(app, caller, channel, callee, &extra, code)
                    .await;
                true
            }
            // mn <app> <channel>
            Some("mn") if f.len() == 3 => {
                let (app, channel) = (f[1], f[2]);
                let keys = inner.keys.channel(app, channel);
                let tpl = content::channel_attr(
                    channel,
                    "",
                    attr::MEMBER_NUM,
                    "\u{0}",
                    attr_change::UPDATE,
                );
                let Some((pre, post)) = tpl.split_once("\\u0000") else {
                    return true;
                };
                let mut c = inner.conn();
                let mut inv = inner.scripts.membernum.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                inv.arg(app)
                    .arg(channel)
                    .arg(inner.keys.topic_prefix())
                    .arg(pre)
                    .arg(post);
                let r: EResult<Vec<i64>> = timed(inv.invoke_async(&mut c)).await;
                match r {
                    Ok(r) if r.first().copied().unwrap_or(0) > 0 => {
                        inner.schedule(member, r[0] as u64 * 1000).await;
                        false
                    }
                    Ok(_) => true,
                    Err(_) => false,
                }
            }
            _ => true,
        }
    }
}

impl Engine for Redis {
    async fn login(
        &self,
        app: &str,
        account: &str,
        conn: ConnHandle,
        welcome: Frame,
    ) -> EResult<LoginInfo> {
        self.inner.check()?;
        let inner = &self.inner;
        let mut c = inner.conn();
        let attrs: HashMap<String, String> =
            timed(c.hgetall(inner.keys.user_attrs(app, account))).await?;
        let conn_timeout = attrs
            .get(attr::CONN_TIMEOUT)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map_or(inner.limits.conn_timeout_default_secs, |s| {
                inner.limits.clamp_conn_timeout(s)
            });
        conn.push(welcome);
        let id = conn.id;
        inner.conns.insert(id, conn.clone());
        inner.sessions.insert(format!("{app} {account}"), id);
        let old: EResult<Option<String>> = timed(
            inner
                .scripts
                .session
                .key(inner.keys.sess(app, account))
                .key(inner.keys.node_sessions(&inner.cfg.node_id))
                .arg("login")
                .arg(inner.me(id))
                .arg(SESSION_TTL_MS)
                .arg(format!("{app} {account} {id}"))
                .invoke_async(&mut c),
        )
        .await;
        let old = match old {
            Ok(o) => o,
            Err(e) => {
                inner.conns.remove(&id);
                inner
                    .sessions
                    .remove_if(&format!("{app} {account}"), |_, v| *v == id);
                return Err(e);
            }
        };
        let mut was_online = false;
        if let Some(old) = old {
            if let Some((node, oconn)) = old.split_once(' ') {
                let alive =
                    node == inner.cfg.node_id || inner.live_nodes().await.iter().any(|n| n == node);
                was_online = alive;
                if node == inner.cfg.node_id {
                    if let Some(h) = oconn
                        .parse::<u64>()
                        .ok()
                        .and_then(|o| inner.conns.get(&o).map(|h| h.clone()))
                    {
                        h.kick();
                    }
                } else if alive {
                    let _: EResult<()> = timed(c.publish(
                        format!("{}{node}", inner.keys.topic_prefix()),
                        format!("k {oconn}"),
                    ))
                    .await;
                }
            }
        }
        if !was_online {
            let body = content::channel_user(special::USER_ONLINE, account);
            inner
                .special_event(
                    app,
                    special::USER_ONLINE,
                    account,
                    msgtype::CHANNEL_USER_JOIN,
                    &body,
                )
                .await;
        }
        Ok(LoginInfo {
            conn_timeout_secs: conn_timeout,
        })
    }

    async fn logout(&self, app: &str, account: &str, conn_id: u64) {
        if self.inner.check().is_err() {
            return;
        }
        let inner = &self.inner;
        inner.conns.remove(&conn_id);
        inner
            .sessions
            .remove_if(&format!("{app} {account}"), |_, v| *v == conn_id);
        inner
            .end_session(app, account, &inner.cfg.node_id, conn_id)
            .await;
    }

    async fn send_message(&self, app: &str, mail: Mail<'_>) -> EResult<()> {
        self.inner.check()?;
        self.inner.append(app, &mail).await.map(|_| ())
    }

    async fn get_messages(
        &self,
        app: &str,
        account: &str,
        ver_clear: u64,
        max: usize,
    ) -> EResult<MailPage> {
        self.inner.check()?;
        let inner = &self.inner;
        let [mb, mbm] = inner.keys.mailbox(app, account);
        let max = max.clamp(1, inner.limits.mailbox_page_max);
        let mut c = inner.conn();
        let r: RValue = timed(
            inner
                .scripts
                .getmsg
                .key(mb)
                .key(mbm)
                .arg(ver_clear)
                .arg(max)
                .invoke_async(&mut c),
        )
        .await?;
        Ok(page(r))
    }

    async fn get_messages_by_id(
        &self,
        app: &str,
        account: &str,
        clear_ids: &[String],
        max: usize,
    ) -> EResult<MailPage> {
        self.inner.check()?;
        let inner = &self.inner;
        let [mb, mbm] = inner.keys.mailbox(app, account);
        let max = max.clamp(1, inner.limits.mailbox_page_max);
        let mut c = inner.conn();
        let mut inv = inner.scripts.getmsg2.prepare_invoke();
        inv.key(mb).key(mbm).arg(max);
        for id in clear_ids {
            inv.arg(id);
        }
        let r: RValue = timed(inv.invoke_async(&mut c)).await?;
        Ok(page(r))
    }

    async fn user_online(&self, app: &str, account: &str) -> EResult<bool> {
        self.inner.check()?;
        self.inner.online(app, account).await
    }

    async fn set_user_attr(
        &self,
        app: &str,
        account: &str,
        name: &str,
        value: &str,
    ) -> EResult<()> {
        self.inner.check()?;
        let inner = &self.inner;
        let key = inner.keys.user_attrs(app, account);
        let mut c = inner.conn();
        if value.is_empty() {
            let _: () = timed(c.hdel(&key, name)).await?;
        } else {
            let (n, exists): (usize, bool) = timed(
                redis::pipe()
                    .hlen(&key)
                    .hexists(&key, name)
                    .query_async(&mut c),
            )
            .await?;
            if !exists && n >= inner.limits.attrs_max {
                return Err(ErrorKind::TooLarge);
            }
            let _: () = timed(c.hset(&key, name, value)).await?;
        }
        Ok(())
    }

    async fn user_attrs(&self, app: &str, account: &str) -> EResult<Vec<(String, String)>> {
        self.inner.check()?;
        let inner = &self.inner;
        let mut c = inner.conn();
        let m: std::collections::BTreeMap<String, String> =
            timed(c.hgetall(inner.keys.user_attrs(app, account))).await?;
        Ok(m.into_iter().collect())
    }

    async fn join(
        &self,
        app: &str,
        channel: &str,
        account: &str,
        conn: &ConnHandle,
    ) -> EResult<JoinInfo> {
        self.inner.check()?;
        let inner = &self.inner;
        let keys = inner.keys.channel(app, channel);
        let mut c = inner.conn();
        let mut inv = inner.scripts.join.prepare_invoke();
        for k in &keys {
            inv.key(k);
        }
        inv.arg(app)
            .arg(channel)
            .arg(inner.keys.topic_prefix())
            .arg(account)
            .arg(&inner.cfg.node_id)
            .arg(conn.id)
            .arg(inner.limits.channel_list_max)
            .arg(if channel.starts_with(special::PREFIX) {
                "1"
            } else {
                "0"
            })
            .arg(content::channel_user(channel, account))
            .arg(inner.keys.node_channels_prefix());
        let r = list(timed(inv.invoke_async::<RValue>(&mut c)).await?);
        let fresh = r.first().map(int).unwrap_or(0) == 1;
        let n = r.get(1).map(int).unwrap_or(0).max(0) as usize;
        let mut members: Vec<String> = r.iter().skip(2).take(n).map(text).collect();
        members.reverse();
        let rest: Vec<String> = r.iter().skip(2 + n).map(text).collect();
        let attrs = rest
            .chunks(2)
            .filter(|p| p.len() == 2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect();
        if fresh && !channel.starts_with(special::PREFIX) {
            let body = content::channel_user(channel, account);
            inner
                .special_event(
                    app,
                    special::CHANNEL_EVENT,
                    account,
                    msgtype::CHANNEL_USER_JOIN,
                    &body,
                )
                .await;
        }
        Ok(JoinInfo {
            list: members,
            attrs,
        })
    }

    async fn leave(&self, app: &str, channel: &str, account: &str, conn_id: u64) -> EResult<()> {
        self.inner.check()?;
        let inner = &self.inner;
        let left = inner
            .leave_as(app, channel, account, &inner.cfg.node_id, conn_id)
            .await?;
        if left && !channel.starts_with(special::PREFIX) {
            let body = content::channel_user(channel, account);
            inner
                .special_event(
                    app,
                    special::CHANNEL_EVENT,
                    account,
                    msgtype::CHANNEL_USER_LEAVE,
                    &body,
                )
                .await;
        }
        Ok(())
    }

    async fn channel_send(
        &self,
        app: &str,
        channel: &str,
        from: &str,
        text: &str,
        force: bool,
        msg_id: Option<&str>,
    ) -> EResult<()> {
        self.inner.check()?;
        let inner = &self.inner;
        if channel.starts_with(special::PREFIX) {
            return Err(ErrorKind::ReservedChannel);
        }
        let keys = inner.keys.channel(app, channel);
        let mut c = inner.conn();
        let mut inv = inner.scripts.chansend.prepare_invoke();
        for k in &keys {
            inv.key(k);
        }
        inv.arg(app)
            .arg(channel)
            .arg(inner.keys.topic_prefix())
            .arg(from)
            .arg(if force { "1" } else { "0" })
            .arg(content::channel_msg(channel, from, text))
            .arg(inner.limits.channel_messages_per_second)
            .arg(
                msg_id
                    .map(|m| inner.keys.dedup(app, from, m))
                    .unwrap_or_default(),
            )
            .arg(inner.limits.dedup_window_secs * 1000);
        let r: String = timed(inv.invoke_async(&mut c)).await?;
        result(&r)
    }

    async fn channel_attr(&self, app: &str, channel: &str, from: &str, op: AttrOp) -> EResult<()> {
        self.inner.check()?;
        let inner = &self.inner;
        if channel.starts_with(special::PREFIX) {
            return Err(ErrorKind::ReservedChannel);
        }
        let (opname, name, value, kind) = match &op {
            AttrOp::Set { name, value } => {
                ("set", name.as_str(), value.as_str(), attr_change::UPDATE)
            }
            AttrOp::Del { name } => ("del", name.as_str(), "", attr_change::DEL),
            AttrOp::Clear => ("clear", "", "", attr_change::CLEAR),
        };
        if name == attr::MEMBER_NUM && opname != "clear" {
            return Err(ErrorKind::ReadOnlyAttr);
        }
        if opname == "set"
            && matches!(
                name,
                attr::USER_NOTIFICATION
                    | attr::CHANNEL_TTL
                    | attr::SENDMSG_LIMIT
                    | attr::SETATTR_LIMIT
                    | attr::AUTO_UPDATE_NUM
            )
            && value.trim().parse::<u64>().is_err()
        {
            return Err(ErrorKind::InvalidArgs);
        }
        let keys = inner.keys.channel(app, channel);
        let mut c = inner.conn();
        let mut inv = inner.scripts.attr.prepare_invoke();
        for k in &keys {
            inv.key(k);
        }
        inv.arg(app)
            .arg(channel)
            .arg(inner.keys.topic_prefix())
            .arg(opname)
            .arg(from)
            .arg(name)
            .arg(value)
            .arg(content::channel_attr(channel, from, name, value, kind))
            .arg(inner.limits.attr_changes_per_second)
            .arg(inner.limits.attrs_max)
            .arg(inner.limits.channel_ttl_default_secs)
            .arg("0");
        let r: String = timed(inv.invoke_async(&mut c)).await?;
        result(&r)?;
        if opname == "set" && name == attr::AUTO_UPDATE_NUM {
            if let Ok(secs) = value.trim().parse::<u64>() {
                if secs > 0 {
                    // membership counts as changed so the first tick reports the count
                    let _: EResult<()> = timed(c.set(&keys[6], "1")).await;
                    inner
                        .schedule(&format!("mn {app} {channel}"), secs * 1000)
                        .await;
                }
            }
        }
        Ok(())
    }

    async fn channel_members(
        &self,
        app: &str,
        channel: &str,
        max: usize,
    ) -> EResult<(usize, Vec<String>)> {
        self.inner.check()?;
        let inner = &self.inner;
        let keys = inner.keys.channel(app, channel);
        let mut c = inner.conn();
        let (n, mut list): (usize, Vec<String>) = if max == 0 {
            (timed(c.zcard(&keys[0])).await?, Vec::new())
        } else {
            timed(
                redis::pipe()
                    .zcard(&keys[0])
                    .zrevrange(&keys[0], 0, max as isize - 1)
                    .query_async(&mut c),
            )
            .await?
        };
        list.reverse();
        Ok((n, list))
    }

    async fn channel_has(&self, app: &str, channel: &str, account: &str) -> EResult<bool> {
        self.inner.check()?;
        let inner = &self.inner;
        let keys = inner.keys.channel(app, channel);
        let mut c = inner.conn();
        timed(c.hexists(&keys[2], account)).await
    }

    async fn voip(&self, app: &str, from: &str, relay: Relay) -> EResult<()> {
        self.inner.check()?;
        let inner = &self.inner;
        if relay.peer == from {
            return Err(ErrorKind::InvalidPeer);
        }
        let mut c = inner.conn();
        if let Some(id) = &relay.message_id {
            let fresh: Option<String> = timed(
                redis::cmd("SET")
                    .arg(inner.keys.dedup(app, from, id))
                    .arg("1")
                    .arg("NX")
                    .arg("PX")
                    .arg(inner.limits.dedup_window_secs * 1000)
                    .query_async(&mut c),
            )
            .await?;
            if fresh.is_none() {
                return Ok(());
            }
        }
        let ttl = inner.limits.message_ttl_default_secs;
        let body = content::voip(&relay.channel, from, &relay.extra, None);
        let kind = relay.kind.name();
        match relay.kind {
            VoipKind::Invite => {
                let (require_online, timeout) = parse_extra_options(&relay.extra);
                let online = inner.online(app, &relay.peer).await?;
                if require_online && !online {
                    inner
                        .voip_failed(
                            app,
                            from,
                            &relay.channel,
                            &relay.peer,
                            &relay.extra,
                            Code::InvitePeerOffline,
                        )
                        .await;
                    return Ok(());
                }
                let version = inner
                    .append(app, &voip_mail(from, &relay.peer, kind, &body, ttl))
                    .await?;
                let gen = inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
                let key = inner.keys.invite(app, from, &relay.channel, &relay.peer);
                let extra = serde_json::to_string(&relay.extra).unwrap_or_default();
                let _: () = timed(
                    redis::pipe()
                        .hset_multiple(
                            &key,
                            &[
                                ("acked", "0"),
                                ("version", &version.to_string()),
                                ("extra", &extra),
                                ("gen", &gen.to_string()),
                            ],
                        )
                        .pexpire(&key, (ttl * 1000) as i64)
                        .query_async(&mut c),
                )
                .await?;
                let target = format!("{app} {from} {} {}", relay.channel, relay.peer);
                let timeout = timeout.min(inner.limits.invite_timeout_max_secs);
                if timeout > 0 {
                    inner
                        .schedule(&format!("inv {gen} 704 {target}"), timeout * 1000)
                        .await;
                }
                if !online {
                    inner
                        .schedule(
                            &format!("inv {gen} 703 {target}"),
                            inner.limits.invite_offline_grace_secs * 1000,
                        )
                        .await;
                }
            }
            other => {
                let as_callee = inner.keys.invite(app, &relay.peer, &relay.channel, from);
                let as_caller = inner.keys.invite(app, from, &relay.channel, &relay.peer);
                match other {
                    VoipKind::Ack => {
                        let _: EResult<i64> =
                            timed(inner.scripts.ack.key(&as_callee).invoke_async(&mut c)).await;
                    }
                    VoipKind::Accept => {
                        let _: EResult<()> = timed(c.del(&as_callee)).await;
                    }
                    VoipKind::Refuse | VoipKind::Bye => {
                        let _: EResult<()> = timed(c.del(&[&as_callee, &as_caller])).await;
                    }
                    _ => {}
                }
                inner
                    .append(app, &voip_mail(from, &relay.peer, kind, &body, ttl))
                    .await?;
            }
        }
        Ok(())
    }

    async fn live_nodes(&self) -> Vec<String> {
        let inner = &self.inner;
        let nodes = inner.live_nodes().await;
        if nodes.is_empty() {
            return Vec::new();
        }
        let keys: Vec<String> = nodes.iter().map(|n| inner.keys.node(n)).collect();
        let mut c = inner.conn();
        let urls: Vec<Option<String>> = timed(c.mget(&keys)).await.unwrap_or_default();
        let mut urls: Vec<String> = urls.into_iter().flatten().collect();
        urls.sort();
        urls.dedup();
        urls
    }

    fn local_sessions(&self) -> usize {
        self.inner.sessions.len()
    }

    fn footprint(&self) -> super::Footprint {
        // what this node holds; the shared state is Redis's (expiring keys)
        super::Footprint {
            sessions: self.inner.sessions.len(),
            channels: self.inner.members.len(),
            members: self.inner.members.iter().map(|m| m.len()).sum(),
            ..Default::default()
        }
    }

    fn halt(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.halted.store(true, Ordering::SeqCst);
    }
}

fn result(r: &str) -> EResult<()> {
    if r == "ok" {
        Ok(())
    } else {
        Err(ErrorKind::from_wire(r).unwrap_or(ErrorKind::Unavailable))
    }
}

fn page(r: RValue) -> MailPage {
    let items = list(r);
    let ver_clear = items.first().map(int).unwrap_or(0).max(0) as u64;
    let msgs = items[1.min(items.len())..]
        .chunks(2)
        .filter(|p| p.len() == 2)
        .map(|p| (int(&p[0]).max(0) as u64, Arc::<str>::from(text(&p[1]))))
        .collect();
    MailPage { ver_clear, msgs }
}
