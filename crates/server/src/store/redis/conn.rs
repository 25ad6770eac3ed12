//! One Redis, or a Redis Cluster: the connection the store sends its commands on, and where
//! each of them goes.
//!
//! On one Redis every command goes to it. On a cluster the client routes each command by its
//! key's hash slot (a script by its first key: every key of one script shares a slot, see
//! `keys.rs`) and follows the cluster through failovers and slot moves; the few commands that
//! are about a node rather than a key (`SCAN`) are sent to each primary, or to the primary of
//! one slot, by hand.
//!
//! A cluster is reached over several cluster connections ([`Shards`]): one for the slots of
//! each primary (as the node found them when it started) and one for what names no key. The
//! `redis` crate's cluster connection holds every request while it looks for a dead node's
//! replacement; apart, a primary that dies holds the steps of its own slots only, and every
//! other app's go on.

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use super::keys::Keys;

/// Where the store's Redis is: `redis://host:port/db` (one Redis, or a primary with
/// replicas), or `redis+cluster://host:port,host:port/` (a Redis Cluster: any of its nodes,
/// the client finds the others).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One Redis.
    One(String),
    /// A Redis Cluster's seed nodes, as `redis://host:port` URLs (credentials kept).
    Cluster(Vec<String>),
}

impl Target {
    /// Read a `--redis` URL.
    pub fn parse(url: &str) -> Result<Target, String> {
        let Some(rest) = url.strip_prefix("redis+cluster://") else {
            return Ok(Target::One(url.to_string()));
        };
        // userinfo applies to every node: "user:pass@h1:p1,h2:p2/"
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((a, h)) => (format!("{a}@"), h),
            None => (String::new(), rest),
        };
        let hosts = hosts.trim_end_matches('/');
        if hosts.contains('/') {
            return Err(
                "a redis+cluster:// URL names no database (a cluster has only db 0)".into(),
            );
        }
        let seeds: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| format!("redis://{auth}{h}/"))
            .collect();
        if seeds.is_empty() {
            return Err("a redis+cluster:// URL needs at least one host:port".into());
        }
        Ok(Target::Cluster(seeds))
    }
}

/// The store's shared connection (cheap to clone; requests from many tasks are pipelined on
/// it). A step takes a clone of its own: on a cluster its `WAIT` goes where its writes went.
#[derive(Clone)]
pub enum Conn {
    /// One Redis (reconnects by itself).
    One(ConnectionManager),
    /// A Redis Cluster (routes by slot, follows failovers).
    Cluster(Shards),
}

/// At most this many cluster connections for the primaries' slots (primaries past it share
/// them: primary k uses connection k mod this). Each connection keeps a TCP connection to
/// every node of the cluster (primaries and replicas), and a node has two sets (requests and
/// subscriptions): `2 × (1 + min(primaries, 8)) × nodes` in all, 48 for 3 primaries with a
/// replica each.
const SHARD_CONNS: usize = 8;

/// A Redis Cluster's connections: `conns[0]` for what names no key (`CLUSTER NODES`, `SCRIPT
/// LOAD`, a primary's `SCAN`), `conns[k]` for the slots that primary k - 1 served at start
/// (`of_slot`). Each one follows failovers and slot moves by itself, so any choice is correct;
/// apart, a primary's death holds only the connection that sends it requests.
#[derive(Clone)]
pub struct Shards {
    conns: std::sync::Arc<Vec<ClusterConnection>>,
    /// Slot → index in `conns` (0: no primary served it at start).
    of_slot: std::sync::Arc<Vec<u8>>,
    /// The slot of the last request that named a key through this handle: a `WAIT` goes to
    /// its primary, on the connection the request went by.
    last: Option<u16>,
    /// Where the last request that named a key ran, when a `MOVED` or `ASK` sent it to a node
    /// the slot map did not name (yet): a `WAIT` or `SCRIPT LOAD` after it goes there.
    redirected: Option<(String, u16)>,
    /// Requests sent again ([`Again`]): after `MOVED`, after `ASK`, after a pause.
    sent_again: std::sync::Arc<[std::sync::atomic::AtomicU64; 3]>,
    /// Connections of its own to the nodes a redirection named that the cluster connections
    /// do not know.
    direct: std::sync::Arc<Direct>,
}

/// Connections to the nodes a `MOVED` or `ASK` named that the `redis` crate's cluster
/// connection has none to: a primary new to the cluster, before it serves a slot, is in no
/// `CLUSTER SLOTS` reply, so the crate connects to it only once the migration that gives it
/// its first slot has ended — every step of an app whose keys moved to it would wait until
/// then (on a large app, for the whole migration). Here a request it must run goes to it on
/// a connection of its own, made once and kept (one per such node; a broken one is dropped
/// and made again when next needed).
struct Direct {
    /// A seed's URL (`redis://[auth@]host:port/`): its credentials are every node's.
    seed: String,
    /// Each request's timeout.
    timeout: Duration,
    conns: parking_lot::Mutex<std::collections::HashMap<(String, u16), MultiplexedConnection>>,
}

/// At most this many [`Direct`] connections: a cluster gains a few primaries at a time; past
/// it the oldest-made is not told apart, all are dropped and made again as needed.
const DIRECT_CONNS: usize = 16;

impl Direct {
    /// The connection to `host:port`, made now if there is none.
    async fn conn(&self, host: &str, port: u16) -> RedisResult<MultiplexedConnection> {
        let at = (host.to_string(), port);
        if let Some(c) = self.conns.lock().get(&at) {
            return Ok(c.clone());
        }
        let client = redis::Client::open(node_url(&self.seed, host, port))?;
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(self.timeout);
        let c = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        let mut conns = self.conns.lock();
        if conns.len() >= DIRECT_CONNS {
            conns.clear();
        }
        Ok(conns.entry(at).or_insert(c).clone())
    }

    /// Forget the connection to `host:port` (it broke).
    fn drop_conn(&self, host: &str, port: u16) {
        self.conns.lock().remove(&(host.to_string(), port));
    }
}

/// The URL of the node at `host:port`, with the credentials of `seed` (a seed's URL).
fn node_url(seed: &str, host: &str, port: u16) -> String {
    let auth = seed
        .strip_prefix("redis://")
        .and_then(|rest| rest.rsplit_once('@'))
        .map_or("", |(auth, _)| auth);
    let at = if auth.is_empty() { "" } else { "@" };
    format!("redis://{auth}{at}{host}:{port}/")
}

/// The crate's cluster connection has no connection to the node a request was sent to.
fn unknown_node(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::ClientError && e.to_string().contains("connection not found")
}

impl Shards {
    /// One cluster connection of `client` for what names no key and one for each primary's
    /// slots (up to [`SHARD_CONNS`]).
    async fn open(
        client: &redis::cluster::ClusterClient,
        seed: &str,
        timeout: Duration,
    ) -> RedisResult<Shards> {
        let general = client.get_async_connection().await?;
        let nodes = cluster_nodes(general.clone()).await?;
        let owners = slot_owners(&nodes);
        let mut ids: Vec<&str> = Vec::new();
        let mut of_slot = vec![0u8; 16384];
        for (a, b, id) in &owners {
            let k = match ids.iter().position(|i| i == id) {
                Some(k) => k,
                None => {
                    ids.push(id);
                    ids.len() - 1
                }
            };
            for slot in *a..=(*b).min(16383) {
                of_slot[usize::from(slot)] = (1 + k % SHARD_CONNS) as u8;
            }
        }
        let mut conns = vec![general];
        for _ in 0..ids.len().min(SHARD_CONNS) {
            conns.push(client.get_async_connection().await?);
        }
        Ok(Shards {
            conns: std::sync::Arc::new(conns),
            of_slot: std::sync::Arc::new(of_slot),
            last: None,
            redirected: None,
            sent_again: Default::default(),
            direct: std::sync::Arc::new(Direct {
                seed: seed.to_string(),
                timeout,
                conns: Default::default(),
            }),
        })
    }

    /// The connection for `slot` (`None`: what names no key).
    fn of(&self, slot: Option<u16>) -> ClusterConnection {
        let k = slot.map_or(0, |s| usize::from(self.of_slot[usize::from(s % 16384)]));
        self.conns[k].clone()
    }

    /// Requests sent again so far because the cluster said they did not run: (after
    /// `MOVED`, after `ASK`, after a pause).
    pub fn sent_again(&self) -> (u64, u64, u64) {
        let n = |i: usize| self.sent_again[i].load(std::sync::atomic::Ordering::Relaxed);
        (n(0), n(1), n(2))
    }

    /// The connection for what names no key.
    fn general(&self) -> ClusterConnection {
        self.of(None)
    }

    /// Subscribe `topic` (a sharded one) on the connection for its slot.
    pub async fn ssubscribe(&self, topic: &str) -> RedisResult<()> {
        self.of(Some(Keys::slot(topic))).ssubscribe(topic).await
    }

    /// Unsubscribe `topic` (a sharded one) on the connection for its slot.
    pub async fn sunsubscribe(&self, topic: &str) -> RedisResult<()> {
        self.of(Some(Keys::slot(topic))).sunsubscribe(topic).await
    }

    /// The connection `cmd` goes by, and how: a `WAIT` or `SCRIPT LOAD` after a request that
    /// named a key goes to that key's primary on that request's connection (its writes are on
    /// that primary, sent by that connection; a script it did not know is loaded where it is
    /// run, by a connection that knows where that is); anything else by the slot of the key
    /// it names.
    /// Also says whether `cmd` names a key.
    fn route(&mut self, cmd: &Cmd) -> (ClusterConnection, Option<RoutingInfo>, bool) {
        match command_slot(cmd) {
            Keyed::Slot(slot) => {
                self.last = Some(slot);
                self.redirected = None;
                (self.of(Some(slot)), None, true)
            }
            Keyed::AfterKey => match (self.last, &self.redirected) {
                (Some(slot), Some((host, port))) => {
                    (self.of(Some(slot)), Some(by_address(host, *port)), false)
                }
                (Some(slot), None) => (self.of(Some(slot)), Some(to_primary_of(slot)), false),
                (None, _) => (self.general(), None, false),
            },
            Keyed::None => (self.general(), None, false),
        }
    }
}

/// How long a request that surely did not run is sent again before its error is the
/// answer (the store's own timeout, `OP_TIMEOUT`, ends it sooner).
const AGAIN_FOR: Duration = Duration::from_secs(2);

/// The longest pause before a request is sent again (the first is 5 ms, doubling).
const AGAIN_PAUSE: Duration = Duration::from_millis(200);

/// What to do with a cluster request's error: the `redis` crate's own retries are off
/// (`retries(0)`), because it also sends again a request whose connection was reset or timed
/// out — one that may have run, so that a script would run twice (a message stored and
/// delivered twice). Here only what surely did not run is sent again.
#[derive(Debug, PartialEq)]
enum Again {
    /// Answer the error: the request may have run (reset, end of stream, timeout), or it
    /// failed in itself.
    No,
    /// `MOVED`: the slot is another node's now; send it there (the crate refreshes its slot
    /// map meanwhile).
    To(String, u16),
    /// `ASK`: the slot is being migrated and the keys are on that node; send it there after
    /// `ASKING`, in one pipeline (nothing else on that connection can come between).
    Asking(String, u16),
    /// The cluster could not take it now (`TRYAGAIN` while a slot's keys move, `CLUSTERDOWN`,
    /// `MASTERDOWN`, a node loading, a connection refused or missing while a failover goes
    /// on): send it again after a pause.
    Later,
}

fn again(e: &RedisError) -> Again {
    use redis::ErrorKind as K;
    let at = || {
        let (addr, _slot) = e.redirect_node()?;
        let (host, port) = addr.rsplit_once(':')?;
        Some((host.to_string(), port.parse().ok()?))
    };
    match e.kind() {
        K::Moved => at().map_or(Again::Later, |(h, p)| Again::To(h, p)),
        K::Ask => at().map_or(Again::Later, |(h, p)| Again::Asking(h, p)),
        K::TryAgain
        | K::ClusterDown
        | K::MasterDown
        | K::BusyLoadingError
        | K::ClusterConnectionNotFound => Again::Later,
        _ if e.is_connection_refusal() => Again::Later,
        _ => Again::No,
    }
}

/// To the node at `host:port`.
fn node_at(host: &str, port: u16) -> SingleNodeRoutingInfo {
    SingleNodeRoutingInfo::ByAddress {
        host: host.to_string(),
        port,
    }
}

/// To the node at `host:port`, for one command.
fn by_address(host: &str, port: u16) -> RoutingInfo {
    RoutingInfo::SingleNode(node_at(host, port))
}

/// A request on a cluster connection: one command (with the route [`Shards::route`] chose,
/// `None`: by the slot map) or a part of a pipeline (every pipeline the store sends is of one
/// slot, and safe to send whole again).
enum Req<'a> {
    One(&'a Cmd, Option<RoutingInfo>),
    Many(&'a Pipeline, usize, usize),
}

/// What a [`Req`] got.
enum Reply {
    One(Value),
    Many(Vec<Value>),
}

impl Reply {
    /// The reply of one command (a pipeline's last).
    fn one(self) -> Value {
        match self {
            Reply::One(v) => v,
            Reply::Many(mut v) => v.pop().unwrap_or(Value::Nil),
        }
    }
}

impl Req<'_> {
    /// Send it once: as routed, or to the node `to` (after `ASKING` when `asking`); to a node
    /// the cluster connection does not know, on a connection of its own ([`Direct`]).
    async fn send(
        &self,
        c: &mut ClusterConnection,
        to: Option<&(String, u16)>,
        asking: bool,
        direct: &Direct,
    ) -> RedisResult<Reply> {
        match self.send_by(c, to, asking).await {
            Err(e) if unknown_node(&e) => {
                let node = match (self, to) {
                    (_, Some((host, port))) => (host.as_str(), *port),
                    (
                        Req::One(
                            _,
                            Some(RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                                host,
                                port,
                            })),
                        ),
                        None,
                    ) => (host.as_str(), *port),
                    _ => return Err(e),
                };
                self.send_direct(direct, node, asking).await
            }
            r => r,
        }
    }

    /// Send it once on the [`Direct`] connection to `host:port`.
    async fn send_direct(
        &self,
        direct: &Direct,
        (host, port): (&str, u16),
        asking: bool,
    ) -> RedisResult<Reply> {
        let mut c = direct.conn(host, port).await?;
        // a connection of one node answers a command's error as a value: the cluster
        // connection's way is an `Err` (what `again` reads), for a pipeline when any of its
        // commands did not run
        let one = |v: Value| match v {
            Value::ServerError(e) => Err(RedisError::from(e)),
            v => Ok(Reply::One(v)),
        };
        let r = match self {
            Req::One(cmd, _) if asking => {
                let mut pipe = redis::pipe();
                pipe.cmd("ASKING").add_command((*cmd).clone());
                let mut got = c.req_packed_commands(&pipe, 1, 1).await?;
                one(got.pop().unwrap_or(Value::Nil))
            }
            Req::One(cmd, _) => c.req_packed_command(cmd).await.and_then(one),
            Req::Many(pipe, offset, count) => {
                let got = c.req_packed_commands(pipe, *offset, *count).await?;
                let not_run = got.iter().find_map(|v| match v {
                    Value::ServerError(e) => {
                        let e = RedisError::from(e.clone());
                        (again(&e) != Again::No).then_some(e)
                    }
                    _ => None,
                });
                match not_run {
                    Some(e) => Err(e),
                    None => Ok(Reply::Many(got)),
                }
            }
        };
        if let Err(e) = &r {
            if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                direct.drop_conn(host, port);
            }
        }
        r
    }

    /// Send it once by the cluster connection.
    async fn send_by(
        &self,
        c: &mut ClusterConnection,
        to: Option<&(String, u16)>,
        asking: bool,
    ) -> RedisResult<Reply> {
        match (self, to) {
            (Req::One(cmd, _), Some((host, port))) if asking => {
                let mut pipe = redis::pipe();
                pipe.cmd("ASKING").add_command((*cmd).clone());
                let mut got = c.route_pipeline(&pipe, 1, 1, node_at(host, *port)).await?;
                Ok(Reply::One(got.pop().unwrap_or(Value::Nil)))
            }
            (Req::One(cmd, _), Some((host, port))) => c
                .route_command(cmd, by_address(host, *port))
                .await
                .map(Reply::One),
            (Req::One(cmd, Some(route)), None) => {
                c.route_command(cmd, route.clone()).await.map(Reply::One)
            }
            (Req::One(cmd, None), None) => c.req_packed_command(cmd).await.map(Reply::One),
            (Req::Many(pipe, offset, count), Some((host, port))) => c
                .route_pipeline(pipe, *offset, *count, node_at(host, *port))
                .await
                .map(Reply::Many),
            (Req::Many(pipe, offset, count), None) => c
                .req_packed_commands(pipe, *offset, *count)
                .await
                .map(Reply::Many),
        }
    }

    /// Send it, and again while its error says it did not run ([`again`]), for up to
    /// [`AGAIN_FOR`]. Returns the reply and, when a redirection made it run on a node the
    /// slot map did not name, that node.
    async fn until_taken(
        &self,
        mut c: ClusterConnection,
        counts: &[std::sync::atomic::AtomicU64; 3],
        direct: &Direct,
    ) -> Outcome {
        let start = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(5);
        let (mut to, mut asking) = (None::<(String, u16)>, false);
        loop {
            let e = match self.send(&mut c, to.as_ref(), asking, direct).await {
                Ok(v) => return (Ok(v), to),
                Err(e) => e,
            };
            // `ASKING` covers one command: a pipeline's commands go one by one, each its own
            // way (the old primary answers for the keys it still has)
            if let (Req::Many(pipe, 0, count), Again::Asking(..)) = (self, again(&e)) {
                if !pipe.is_transaction() {
                    counts[1].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return one_by_one(pipe, *count, c, counts, direct).await;
                }
            }
            let next = match again(&e) {
                // any other refusal by the client to send it where it was told to
                _ if to.is_some() && e.kind() == redis::ErrorKind::ClientError => Again::Later,
                // `ASKING` covers one command, and a pipeline's transaction cannot be split:
                // it waits for the migration's end
                Again::Asking(..) if matches!(self, Req::Many(..)) => Again::Later,
                next => next,
            };
            if next == Again::No || start.elapsed() >= AGAIN_FOR {
                return (Err(e), to);
            }
            tracing::debug!(error = %e, "a Redis Cluster request that did not run, sent again");
            let counted = match next {
                Again::To(..) => 0,
                Again::Asking(..) => 1,
                _ => 2,
            };
            counts[counted].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (to, asking) = match next {
                Again::To(h, p) => (Some((h, p)), false),
                Again::Asking(h, p) => (Some((h, p)), true),
                _ => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(AGAIN_PAUSE);
                    (None, false)
                }
            };
        }
    }
}

/// What [`Req::until_taken`] gives: the reply, and the node a redirection made it run on.
type Outcome = (RedisResult<Reply>, Option<(String, u16)>);

/// [`one_by_one`]'s future (boxed: it calls [`Req::until_taken`], which may call it).
type Taken<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send + 'a>>;

/// The first `count` commands of `pipe`, each sent as a request of its own ([`Req::until_taken`])
/// — what a pipeline that met `ASK` does: it may have run in part on the old primary, so
/// this sends again what ran, which every pipeline the store sends allows (reads, and writes
/// that leave the same state when done twice: `DEL`, `SREM`, `HSET`, `PEXPIRE`).
fn one_by_one<'a>(
    pipe: &'a Pipeline,
    count: usize,
    c: ClusterConnection,
    counts: &'a [std::sync::atomic::AtomicU64; 3],
    direct: &'a Direct,
) -> Taken<'a> {
    Box::pin(async move {
        let (mut out, mut at) = (Vec::with_capacity(count), None);
        for cmd in pipe.cmd_iter().take(count) {
            let (r, to) = Req::One(cmd, None)
                .until_taken(c.clone(), counts, direct)
                .await;
            at = to;
            match r {
                Ok(r) => out.push(r.one()),
                Err(e) => return (Err(e), at),
            }
        }
        (Ok(Reply::Many(out)), at)
    })
}

/// The cluster's `CLUSTER NODES` (asked of any node).
async fn cluster_nodes(mut c: ClusterConnection) -> RedisResult<String> {
    redis::cmd("CLUSTER").arg("NODES").query_async(&mut c).await
}

/// To the primary of `slot`.
fn to_primary_of(slot: u16) -> RoutingInfo {
    let route = redis::cluster_routing::Route::new(slot, redis::cluster_routing::SlotAddr::Master);
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route))
}

/// What a command names, for [`Shards::route`].
#[derive(Debug, PartialEq)]
enum Keyed {
    /// A key in this slot.
    Slot(u16),
    /// `WAIT` or `SCRIPT LOAD`: about what the request before did.
    AfterKey,
    /// No key.
    None,
}

/// The slot of the key `cmd` names: a script's first key, or the first argument of a command
/// that names keys (commands about the server name none).
fn command_slot(cmd: &Cmd) -> Keyed {
    const KEYLESS: [&[u8]; 12] = [
        b"CLUSTER",
        b"SCRIPT",
        b"FUNCTION",
        b"PING",
        b"INFO",
        b"TIME",
        b"SCAN",
        b"CONFIG",
        b"DBSIZE",
        b"CLIENT",
        b"DEBUG",
        b"READONLY",
    ];
    let mut args = cmd.args_iter().filter_map(|a| match a {
        redis::Arg::Simple(b) => Some(b),
        redis::Arg::Cursor => None,
    });
    let Some(name) = args.next() else {
        return Keyed::None;
    };
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    let key = if is(b"EVALSHA") || is(b"EVAL") || is(b"EVALSHA_RO") || is(b"EVAL_RO") {
        let _script = args.next();
        let keys = args
            .next()
            .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u32>().ok());
        match keys {
            Some(n) if n > 0 => args.next(),
            _ => None,
        }
    } else if is(b"WAIT")
        || (is(b"SCRIPT") && args.next().is_some_and(|a| a.eq_ignore_ascii_case(b"LOAD")))
    {
        return Keyed::AfterKey;
    } else if KEYLESS.iter().any(|k| is(k)) {
        None
    } else {
        args.next()
    };
    key.map_or(Keyed::None, |k| Keyed::Slot(Keys::slot(k)))
}

/// The slot of the first request of `pipe` that names a key (every key of a pipeline the store
/// sends shares one).
fn pipeline_slot(pipe: &Pipeline) -> Keyed {
    pipe.cmd_iter()
        .map(command_slot)
        .find(|k| *k != Keyed::None)
        .unwrap_or(Keyed::None)
}

impl Conn {
    /// Connect, with `timeout` for each request.
    pub async fn open(target: &Target, timeout: Duration) -> RedisResult<Conn> {
        match target {
            Target::One(url) => {
                let client = redis::Client::open(url.as_str())?;
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Duration::from_secs(2))
                    .set_response_timeout(timeout)
                    .set_number_of_retries(2)
                    .set_max_delay(1000);
                Ok(Conn::One(
                    client.get_connection_manager_with_config(cfg).await?,
                ))
            }
            Target::Cluster(seeds) => {
                let client = redis::cluster::ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(Duration::from_secs(2))
                    .response_timeout(timeout)
                    // sent again here only when surely not run: see `again`
                    .retries(0)
                    .build()?;
                Ok(Conn::Cluster(
                    Shards::open(&client, seeds.first().map_or("", String::as_str), timeout)
                        .await?,
                ))
            }
        }
    }

    /// Cluster connections for sharded subscriptions (RESP3), one for each primary's slots as
    /// for requests: what their `SSUBSCRIBE`d topics carry comes out of `pushes`, and the
    /// client subscribes again by itself after a failover or a slot move.
    pub async fn subscriber(
        seeds: &[String],
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> RedisResult<Shards> {
        let client = redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2))
            .retries(3)
            .max_retry_wait(1000)
            .build()?;
        Shards::open(
            &client,
            seeds.first().map_or("", String::as_str),
            Duration::from_secs(2),
        )
        .await
    }

    /// `cmd` on the primary that holds `key`'s slot (one Redis: on it).
    pub async fn on_slot_of(&mut self, key: &str, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Conn::One(c) => cmd.query_async(c).await,
            Conn::Cluster(s) => {
                let slot = Keys::slot(key);
                s.of(Some(slot))
                    .route_command(cmd, to_primary_of(slot))
                    .await
            }
        }
    }

    /// The primaries as `(host, port)` (one Redis: `None`, meaning "the one").
    pub async fn primaries(&mut self) -> RedisResult<Option<Vec<(String, u16)>>> {
        let Conn::Cluster(s) = self else {
            return Ok(None);
        };
        let nodes = cluster_nodes(s.general()).await?;
        let mut out = Vec::new();
        // a primary without slots holds no keys
        for f in live_primaries(&nodes).filter(|f| f.len() > 8) {
            let hostport = f[1].split(['@', ',']).next().unwrap_or("");
            if let Some((h, p)) = hostport.rsplit_once(':') {
                if let Ok(p) = p.parse() {
                    out.push((h.to_string(), p));
                }
            }
        }
        Ok(Some(out))
    }

    /// Which primary serves which slots: (first slot, last slot, the primary's node id) per
    /// range (`None` on one Redis). A replica promoted in a failover has an id of its own.
    pub async fn slot_owners(&mut self) -> RedisResult<Option<Vec<(u16, u16, String)>>> {
        let Conn::Cluster(s) = self else {
            return Ok(None);
        };
        let nodes = cluster_nodes(s.general()).await?;
        Ok(Some(slot_owners(&nodes)))
    }

    /// `cmd` on the node at `at` (`None`: the one Redis).
    pub async fn on_node(&mut self, at: Option<&(String, u16)>, cmd: &Cmd) -> RedisResult<Value> {
        match (self, at) {
            (Conn::Cluster(s), Some((host, port))) => {
                match s
                    .general()
                    .route_command(cmd, by_address(host, *port))
                    .await
                {
                    // a primary added since the crate read the cluster
                    Err(e) if unknown_node(&e) => Req::One(cmd, None)
                        .send_direct(&s.direct, (host, *port), false)
                        .await
                        .map(Reply::one),
                    r => r,
                }
            }
            (Conn::One(c), _) => cmd.query_async(c).await,
            (Conn::Cluster(_), None) => Err(RedisError::from((
                redis::ErrorKind::ClientError,
                "a cluster command needs a node",
            ))),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::One(c) => c.req_packed_command(cmd),
            Conn::Cluster(s) => {
                let (c, to, keyed) = s.route(cmd);
                Box::pin(async move {
                    let (r, at) = Req::One(cmd, to)
                        .until_taken(c, &s.sent_again, &s.direct)
                        .await;
                    if keyed {
                        s.redirected = at;
                    }
                    r.map(Reply::one)
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::One(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(s) => {
                let slot = match pipeline_slot(cmd) {
                    Keyed::Slot(slot) => {
                        s.last = Some(slot);
                        s.redirected = None;
                        Some(slot)
                    }
                    _ => None,
                };
                let c = s.of(slot);
                Box::pin(async move {
                    let (r, at) = Req::Many(cmd, offset, count)
                        .until_taken(c, &s.sent_again, &s.direct)
                        .await;
                    if slot.is_some() {
                        s.redirected = at;
                    }
                    r.map(|r| match r {
                        Reply::Many(v) => v,
                        Reply::One(v) => vec![v],
                    })
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::One(c) => c.get_db(),
            Conn::Cluster(s) => s.general().get_db(),
        }
    }
}

/// The fields of the lines of a `CLUSTER NODES` reply that name a primary not marked failed:
/// `<id> <ip:port@cport[,hostname]> <flags> <primary> … <link-state> <slots…>`.
fn live_primaries(nodes: &str) -> impl Iterator<Item = Vec<&str>> {
    nodes
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<&str>>())
        .filter(|f| {
            f.get(2).is_some_and(|flags| {
                flags.split(',').any(|x| x == "master") && !flags.contains("fail")
            })
        })
}

/// The slot ranges of the live primaries in a `CLUSTER NODES` reply, with each one's id.
fn slot_owners(nodes: &str) -> Vec<(u16, u16, String)> {
    let mut out = Vec::new();
    for f in live_primaries(nodes) {
        // "a-b" or "a"; a slot being moved ("[a->-id]") is still its owner's
        for r in f.iter().skip(8).filter(|r| !r.starts_with('[')) {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                out.push((a, b, f[0].to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{again, command_slot, node_url, pipeline_slot, slot_owners, Again, Keyed, Target};
    use crate::store::redis::keys::Keys;

    #[test]
    fn a_node_new_to_the_client_is_reached_with_the_seeds_credentials() {
        for (seed, url) in [
            ("redis://10.0.0.1:7000/", "redis://10.0.0.9:7006/"),
            ("redis://:pw@10.0.0.1:7000/", "redis://:pw@10.0.0.9:7006/"),
            (
                "redis://ops:p@ss@10.0.0.1:7000/",
                "redis://ops:p@ss@10.0.0.9:7006/",
            ),
            ("", "redis://10.0.0.9:7006/"),
        ] {
            assert_eq!(node_url(seed, "10.0.0.9", 7006), url, "{seed}");
        }
    }

    #[test]
    fn a_request_goes_by_the_slot_of_the_key_it_names() {
        let key = "os:mail {os:app} amy";
        let slot = Keyed::Slot(Keys::slot(key));
        let mut eval = redis::cmd("EVALSHA");
        eval.arg("0123abcd")
            .arg(2)
            .arg(key)
            .arg("os:meta {os:app} amy")
            .arg("x");
        assert_eq!(command_slot(&eval), slot);
        let mut none = redis::cmd("EVALSHA");
        none.arg("0123abcd").arg(0).arg("x");
        assert_eq!(command_slot(&none), Keyed::None);
        assert_eq!(command_slot(redis::cmd("HGET").arg(key).arg("f")), slot);
        assert_eq!(command_slot(redis::cmd("SPUBLISH").arg(key).arg("m")), slot);
        assert_eq!(
            command_slot(redis::cmd("WAIT").arg(1).arg(1000)),
            Keyed::AfterKey
        );
        let load = redis::cmd("SCRIPT").arg("load").arg("return 1").clone();
        assert_eq!(command_slot(&load), Keyed::AfterKey);
        assert_eq!(command_slot(redis::cmd("SCRIPT").arg("FLUSH")), Keyed::None);
        assert_eq!(
            command_slot(redis::cmd("CLUSTER").arg("NODES")),
            Keyed::None
        );
        assert_eq!(command_slot(redis::cmd("scan").arg(0)), Keyed::None);
        assert_eq!(command_slot(&redis::cmd("TIME")), Keyed::None);
        let mut pipe = redis::pipe();
        pipe.cmd("TIME")
            .cmd("SADD")
            .arg(key)
            .arg("m")
            .cmd("WAIT")
            .arg(1)
            .arg(0);
        assert_eq!(pipeline_slot(&pipe), slot);
    }

    /// Only what surely did not run is sent again: a reset, an end of stream or a timeout
    /// may come after the script ran, and a script run twice stores a message twice.
    #[test]
    fn only_a_request_that_surely_did_not_run_is_sent_again() {
        use redis::{ErrorKind as K, RedisError};
        use std::io::{Error, ErrorKind as Io};
        let server = |kind, detail: &str| {
            RedisError::from((kind, "An error was signalled by the server", detail.into()))
        };
        assert_eq!(
            again(&server(K::Moved, "3999 127.0.0.1:6381")),
            Again::To("127.0.0.1".into(), 6381)
        );
        assert_eq!(
            again(&server(K::Ask, "3999 10.0.0.7:7002")),
            Again::Asking("10.0.0.7".into(), 7002)
        );
        assert_eq!(again(&server(K::Moved, "garbled")), Again::Later);
        for kind in [
            K::TryAgain,
            K::ClusterDown,
            K::MasterDown,
            K::BusyLoadingError,
        ] {
            assert_eq!(again(&server(kind, "")), Again::Later, "{kind:?}");
        }
        let missing = RedisError::from((K::ClusterConnectionNotFound, "No connections found"));
        assert_eq!(again(&missing), Again::Later);
        assert_eq!(
            again(&RedisError::from(Error::from(Io::ConnectionRefused))),
            Again::Later
        );
        for io in [
            Io::ConnectionReset,
            Io::UnexpectedEof,
            Io::BrokenPipe,
            Io::TimedOut,
            Io::ConnectionAborted,
        ] {
            assert_eq!(
                again(&RedisError::from(Error::from(io))),
                Again::No,
                "{io:?}"
            );
        }
        for kind in [
            K::ResponseError,
            K::NoScriptError,
            K::ReadOnly,
            K::CrossSlot,
        ] {
            assert_eq!(again(&server(kind, "")), Again::No, "{kind:?}");
        }
    }

    #[test]
    fn slot_owners_are_the_live_primaries_ranges() {
        let nodes = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460 [93->-b2]
b2 127.0.0.1:7002@17002 master - 0 1700000000000 2 connected 5461-10922 12
c3 127.0.0.1:7003@17003 master,fail - 1 1700000000000 3 disconnected 10923-16383
d4 127.0.0.1:7004@17004 slave b2 0 1700000000000 2 connected
e5 127.0.0.1:7005@17005 master,fail? - 1 1700000000000 5 connected 13
";
        let owners = slot_owners(nodes);
        assert_eq!(
            owners,
            [
                (0, 5460, "a1".to_string()),
                (5461, 10922, "b2".to_string()),
                (12, 12, "b2".to_string()),
            ]
        );
    }

    #[test]
    fn cluster_urls_name_every_seed() {
        assert_eq!(
            Target::parse("redis://h:1/2").unwrap(),
            Target::One("redis://h:1/2".into())
        );
        assert_eq!(
            Target::parse("redis+cluster://a:1,b:2/").unwrap(),
            Target::Cluster(vec!["redis://a:1/".into(), "redis://b:2/".into()])
        );
        assert_eq!(
            Target::parse("redis+cluster://u:p@a:1,b:2").unwrap(),
            Target::Cluster(vec!["redis://u:p@a:1/".into(), "redis://u:p@b:2/".into()])
        );
        assert!(Target::parse("redis+cluster:///").is_err());
        assert!(Target::parse("redis+cluster://a:1/3").is_err());
    }
}
