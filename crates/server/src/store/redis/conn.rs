//! One Redis, or a Redis Cluster: the connection the store sends its commands on, and where
//! each of them goes.
//!
//! On one Redis every command goes to it. On a cluster the client routes each command by its
//! key's hash slot (a script by its first key: every key of one script shares a slot, see
//! `keys.rs`) and follows the cluster through failovers and slot moves; the few commands that
//! are about a node rather than a key (`SCAN`) are sent to each primary, or to the primary of
//! one slot, by hand.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

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
/// it).
#[derive(Clone)]
pub enum Conn {
    /// One Redis (reconnects by itself).
    One(ConnectionManager),
    /// A Redis Cluster (routes by slot, follows failovers).
    Cluster(ClusterConnection),
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
                    .retries(3)
                    .max_retry_wait(1000)
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// A cluster connection for sharded subscriptions (RESP3): what its `SSUBSCRIBE`d topics
    /// carry comes out of `pushes`, and the client subscribes again by itself after a
    /// failover or a slot move.
    pub async fn subscriber(
        seeds: &[String],
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> RedisResult<ClusterConnection> {
        let client = redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2))
            .retries(3)
            .max_retry_wait(1000)
            .build()?;
        client.get_async_connection().await
    }

    /// `cmd` on the primary that holds `key`'s slot (one Redis: on it).
    pub async fn on_slot_of(&mut self, key: &str, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Conn::One(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => {
                let slot: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(key)
                    .query_async(c)
                    .await?;
                let route = redis::cluster_routing::Route::new(
                    slot,
                    redis::cluster_routing::SlotAddr::Master,
                );
                c.route_command(
                    cmd,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                )
                .await
            }
        }
    }

    /// The primaries as `(host, port)` (one Redis: `None`, meaning "the one").
    pub async fn primaries(&mut self) -> RedisResult<Option<Vec<(String, u16)>>> {
        let Conn::Cluster(c) = self else {
            return Ok(None);
        };
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(c).await?;
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
        let Conn::Cluster(c) = self else {
            return Ok(None);
        };
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(c).await?;
        Ok(Some(slot_owners(&nodes)))
    }

    /// `cmd` on the node at `at` (`None`: the one Redis).
    pub async fn on_node(&mut self, at: Option<&(String, u16)>, cmd: &Cmd) -> RedisResult<Value> {
        match (self, at) {
            (Conn::Cluster(c), Some((host, port))) => {
                let to = SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                c.route_command(cmd, RoutingInfo::SingleNode(to)).await
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
            Conn::Cluster(c) => c.req_packed_command(cmd),
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
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::One(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
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
    use super::{slot_owners, Target};

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
