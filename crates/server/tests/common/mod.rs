//! Test helpers: a server on port 0, native clients (the protocol crate's driver), and a raw
//! WebSocket client for wire-level checks.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use opensig_protocol::client::{Config, Event};
use opensig_protocol::driver::Session;
use opensig_protocol::json::JsonValue;
#[allow(unused_imports)]
pub use opensig_server::store::Store;
use opensig_server::{Server, ServerConfig};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const APP: &str = "testapp";
/// An app that needs tokens, and its certificate (the seeds' known-answer pair).
pub const SECURE: &str = "970ca35de60c44645bbae8a215061b33";
pub const CERT: &str = "5cfd2fd1755d40ecb72977518be15d3b";
pub const WAIT: Duration = Duration::from_secs(5);

/// The store the suite runs on: `OPENSIG_TEST_STORE=redis` runs every test against a
/// Redis-backed node (the same suite, both stores), `OPENSIG_TEST_STORE=redis-cluster`
/// against nodes on a Redis Cluster of three primaries and three replicas.
pub fn redis_store() -> bool {
    std::env::var("OPENSIG_TEST_STORE").is_ok_and(|e| e == "redis" || e == "redis-cluster")
}

/// The suite runs on a Redis Cluster (`OPENSIG_TEST_STORE=redis-cluster`).
pub fn redis_cluster() -> bool {
    std::env::var("OPENSIG_TEST_STORE").is_ok_and(|e| e == "redis-cluster")
}

/// The units each app's channels are spread over on Redis: `OPENSIG_TEST_PARTITIONS`
/// (default 1).
pub fn partitions() -> u32 {
    std::env::var("OPENSIG_TEST_PARTITIONS").map_or(1, |p| p.parse().expect("a number"))
}

/// The unit of an app's account on Redis (its keys' hash tag names it): the app, or
/// `"<app> <p>"` when the account is in the app's unit `p` > 0 of [`partitions`].
pub fn account_unit(app: &str, account: &str) -> String {
    match opensig_server::events::unit_of_name(account, partitions()) {
        0 => app.to_string(),
        p => format!("{app} {p}"),
    }
}

/// `n` account names `<prefix><i>` in the unit of `like` (with the app's accounts over
/// [`partitions`] units, each holds a share of the app's quotas: a test of a quota writes to
/// accounts of one unit, with the quota scaled to give the unit what it tests).
pub fn names_in_unit_of(like: &str, prefix: &str, n: usize) -> Vec<String> {
    let unit = |name: &str| opensig_server::events::unit_of_name(name, partitions());
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|name| unit(name) == unit(like))
        .take(n)
        .collect()
}

pub async fn server() -> Server {
    server_with(|_| {}).await
}

/// `OPENSIG_TEST_LOG=debug` (any filter) prints the server's log while debugging a test.
pub fn init_log() {
    if let Ok(filter) = std::env::var("OPENSIG_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

pub async fn server_with(f: impl FnOnce(&mut ServerConfig)) -> Server {
    init_log();
    let mut c = ServerConfig {
        listen: "127.0.0.1:0".into(),
        ..ServerConfig::default()
    };
    if redis_store() {
        c.redis_url = Some(redis_url());
        c.redis_prefix = unique_prefix();
    }
    c.redis_partitions = partitions();
    f(&mut c);
    opensig_server::start(c).await.expect("server starts")
}

/// `n` nodes sharing one Redis (a fresh key prefix: a cluster of their own).
pub async fn cluster(n: usize, f: impl Fn(&mut ServerConfig)) -> Vec<Server> {
    let prefix = unique_prefix();
    let mut nodes = vec![];
    for i in 0..n {
        let mut c = ServerConfig {
            listen: "127.0.0.1:0".into(),
            redis_url: Some(redis_url()),
            redis_prefix: prefix.clone(),
            redis_partitions: partitions(),
            node_id: Some(format!("node{i}")),
            ..ServerConfig::default()
        };
        f(&mut c);
        nodes.push(opensig_server::start(c).await.expect("node starts"));
    }
    nodes
}

/// Seconds since the Unix epoch (token expiries).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn unique_prefix() -> String {
    format!("t{:x}:", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

/// A Redis for the tests: `OPENSIG_TEST_REDIS`, or a private `redis-server` on a free
/// loopback port that stops by itself when this test process ends (with
/// `OPENSIG_TEST_STORE=redis-cluster`: a private Redis Cluster, see [`redis_cluster_ports`]).
pub fn redis_url() -> String {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(u) = std::env::var("OPENSIG_TEST_REDIS") {
            return u;
        }
        if redis_cluster() {
            let ports = redis_cluster_ports();
            let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
            return format!("redis+cluster://{}/", hosts.join(","));
        }
        let port = redis_port(0);
        redis_server_while_we_run(&format!("redis-server --port {port} --appendonly no"), "");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return format!("redis://127.0.0.1:{port}/");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start on port {port} (is it installed? scripts/setup)");
    })
    .clone()
}

/// Run `start` (a shell line ending in a `redis-server` command, given loopback and no
/// snapshots here) in the background until this test process ends; then stop it and run
/// `after`.
fn redis_server_while_we_run(start: &str, after: &str) {
    let script = format!(
        "{start} --bind 127.0.0.1 --save '' >/dev/null & r=$!; \
         while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill $r; {after}",
        parent = std::process::id()
    );
    let mut child = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("sh to start redis-server (install it: scripts/setup)");
    std::thread::spawn(move || child.wait());
}

/// A free loopback port for a redis-server, below the kernel's ephemeral range (so that no
/// connection made meanwhile can take it as its local port before the server binds it), with
/// `port + bus` free too (a cluster node's bus port: `bus` 10000; 0 for a plain server).
fn redis_port(bus: u16) -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let top = ephemeral_low.saturating_sub(bus).max(2_048);
    let base = top.saturating_sub(4_000).max(1_024);
    // handed out in this process already (its server may not listen yet)
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    loop {
        let port = base + (rand_u64() % u64::from(top - base)) as u16;
        let mut given = GIVEN.lock().unwrap();
        let taken = |p: u16| {
            given
                .iter()
                .any(|g| *g == p || *g + bus == p || p + bus == *g)
        };
        if !taken(port) && free(port) && (bus == 0 || free(port + bus)) {
            given.push(port);
            return port;
        }
    }
}

/// The ports of the private Redis Cluster (three primaries, each with a replica) this test
/// process shares (`OPENSIG_TEST_STORE=redis-cluster`).
pub fn redis_cluster_ports() -> Vec<u16> {
    static PORTS: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    PORTS.get_or_init(|| RedisCluster::start().ports).clone()
}

/// Frozen Redis nodes (`RedisCluster::freeze`), thawed when this goes.
pub struct Frozen(Vec<String>);

impl Frozen {
    /// Freeze the processes `pids` (SIGSTOP) until the returned guard goes.
    pub fn pids(pids: Vec<String>) -> Frozen {
        for pid in &pids {
            RedisCluster::signal(pid, "-STOP");
        }
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in &self.0 {
            RedisCluster::signal(pid, "-CONT");
        }
    }
}

/// A slot being moved ([`RedisCluster::keys_moved`]).
pub struct Moving {
    /// The old primary's port.
    pub from: u16,
    /// The new primary's port.
    pub to: u16,
    slot: String,
    to_id: String,
    /// How many keys moved.
    pub keys: usize,
}

/// A private Redis Cluster of three primaries, each with a replica, in a folder of its own;
/// it stops, and the folder goes, when the test process ends.
pub struct RedisCluster {
    /// Every node's port.
    pub ports: Vec<u16>,
    dir: std::path::PathBuf,
}

/// `redis-cli -p port args…`: the reply as printed (empty when it could not run).
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 6 {
            let p = redis_port(10_000);
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let dir = std::env::temp_dir().join(format!("opensig-cluster-{:x}", rand_u64()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = RedisCluster { ports, dir };
        for p in &c.ports {
            c.node(*p);
        }
        let hosts: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&hosts)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli (scripts/setup installs it with redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // every node agrees the cluster is up, with three primaries and a replica each
        c.until("the Redis Cluster did not come up", |c| {
            c.ports.iter().all(|p| c.whole_from(*p))
        });
        c
    }

    /// Start (or start again) the node on `port`, stopped when this process ends.
    pub fn node(&self, port: u16) {
        let dir = self.dir.display();
        redis_server_while_we_run(
            &format!(
                "cd '{dir}' || exit 1; redis-server --port {port} --appendonly no \
                 --cluster-enabled yes --cluster-config-file nodes-{port}.conf \
                 --cluster-node-timeout 2000 --cluster-require-full-coverage no \
                 --enable-debug-command local"
            ),
            &format!("sleep 0.5; cd /; rm -rf '{dir}'"),
        );
        let up = (0..200).any(|_| {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                || (std::thread::sleep(Duration::from_millis(25)), false).1
        });
        assert!(up, "redis-server did not start on port {port}");
    }

    /// `redis+cluster://` with every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}/", hosts.join(","))
    }

    /// The node on `port` says the cluster is up, with three live primaries and three live
    /// replicas.
    fn whole_from(&self, port: u16) -> bool {
        let nodes = redis_cli(port, &["CLUSTER", "NODES"]);
        let live = |role: &str| {
            nodes
                .lines()
                .filter(|l| {
                    let flags = l.split_whitespace().nth(2).unwrap_or("");
                    flags.split(',').any(|f| f == role) && !flags.contains("fail")
                })
                .count()
        };
        let me = nodes
            .lines()
            .find(|l| l.split_whitespace().nth(2).unwrap_or("").contains("myself"))
            .unwrap_or("");
        // a primary's replica has its copy (a step waiting for one, `WAIT`, gets it)
        let synced = !me.contains("master")
            || redis_cli(port, &["INFO", "replication"])
                .lines()
                .any(|l| l.starts_with("slave0:") && l.contains("state=online"));
        redis_cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            && live("master") == 3
            && live("slave") == 3
            && synced
    }

    fn until(&self, what: &str, cond: impl Fn(&RedisCluster) -> bool) {
        let ok = (0..1200)
            .any(|_| cond(self) || (std::thread::sleep(Duration::from_millis(50)), false).1);
        let now: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("{p}: {}", redis_cli(*p, &["CLUSTER", "NODES"])))
            .collect();
        assert!(ok, "{what}; now: {now:?}");
    }

    /// The port of the live primary that serves `key`'s hash slot (asked of `via`).
    pub fn primary_of(&self, via: u16, key: &str) -> Option<u16> {
        let slot: u16 = redis_cli(via, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .ok()?;
        let nodes = redis_cli(via, &["CLUSTER", "NODES"]);
        nodes.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let flags = f.get(2)?;
            if !flags.split(',').any(|x| x == "master") || flags.contains("fail") {
                return None;
            }
            let serves = f.iter().skip(8).any(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
            });
            let port = f.get(1)?.split(['@', ',']).next()?.rsplit_once(':')?.1.parse().ok()?;
            serves.then_some(port)
        })
    }

    /// The process id of the node on `port`.
    fn pid(&self, port: u16) -> String {
        let info = redis_cli(port, &["INFO", "server"]);
        info.lines()
            .find_map(|l| l.trim().strip_prefix("process_id:"))
            .expect("the node's process id")
            .to_string()
    }

    fn signal(pid: &str, signal: &str) {
        let ok = std::process::Command::new("kill")
            .args([signal, pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} {pid}");
    }

    /// Freeze the nodes on `ports` (SIGSTOP: their sockets stay open and never answer, as a
    /// machine that died without closing them) until the returned guard goes.
    pub fn freeze(&self, ports: &[u16]) -> Frozen {
        Frozen::pids(ports.iter().map(|p| self.pid(*p)).collect())
    }

    /// SIGKILL the node on `port`.
    pub fn kill(&self, port: u16) {
        let pid = self.pid(port);
        RedisCluster::signal(&pid, "-9");
        let gone = (0..200).any(|_| {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
                || (std::thread::sleep(Duration::from_millis(25)), false).1
        });
        assert!(gone, "the node on {port} is still up");
    }

    /// The port of the live primary that serves the nodes' own keys (the registry) under
    /// `prefix`.
    pub fn registry_primary(&self, prefix: &str) -> u16 {
        self.primary_of(self.ports[0], &format!("{{{prefix}~}}"))
            .expect("a primary for the registry")
    }

    /// An operator's failover (`CLUSTER FAILOVER` on the replica of `key`'s primary: no
    /// write lost, the old primary serves on as its replica). Returns (old, new) ports.
    pub fn hand_over(&self, key: &str) -> (u16, u16) {
        let via = self.ports[0];
        let old = self.primary_of(via, key).expect("a primary for the key");
        let replica = self.replica_of(old).expect("the primary's replica");
        let reply = redis_cli(replica, &["CLUSTER", "FAILOVER"]);
        assert!(reply.starts_with("OK"), "CLUSTER FAILOVER: {reply}");
        self.until("the replica did not take over", |c| {
            c.primary_of(via, key) == Some(replica)
                && c.primary_of(old, key) == Some(replica)
                && redis_cli(via, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
        });
        (old, replica)
    }

    /// The node id of the node on `port`.
    fn id_of(port: u16) -> String {
        redis_cli(port, &["CLUSTER", "MYID"]).trim().to_string()
    }

    /// Move `key`'s slot to another primary (its script cache flushed first, as a primary new
    /// to the cluster) as an operator's resharding does: the slot marked
    /// `IMPORTING` on the new primary and `MIGRATING` on the old one, its keys moved `batch` at a
    /// time (`MIGRATE`) while the old primary answers `ASK` for keys it no longer has, then
    /// (once a step met `ASK` and ran on the new primary after `ASKING`) the slot given to the
    /// new primary on every node. Returns (old port, new port, keys moved).
    pub fn migrate(&self, key: &str, batch: usize) -> (u16, u16, usize) {
        let via = self.ports[0];
        let from = self.primary_of(via, key).expect("a primary for the key");
        self.migrate_to(key, batch, self.another_primary(from))
    }

    /// A primary of the cluster other than the one on `port`.
    pub fn another_primary(&self, port: u16) -> u16 {
        self.ports
            .iter()
            .copied()
            .find(|p| *p != port && redis_cli(*p, &["ROLE"]).starts_with("master"))
            .expect("another primary")
    }

    /// Add an empty primary to the cluster, as an operator scaling out does (a node started
    /// and met, no slots yet: `CLUSTER SLOTS` does not name it, so a client that read the
    /// cluster before knows nothing of it). Returns its port; it is not in `ports`.
    pub fn add_primary(&self) -> u16 {
        let port = redis_port(10_000);
        self.node(port);
        let via = self.ports[0];
        let met = redis_cli(via, &["CLUSTER", "MEET", "127.0.0.1", &port.to_string()]);
        assert!(met.starts_with("OK"), "CLUSTER MEET: {met}");
        let id = RedisCluster::id_of(port);
        // every node knows it, and it knows every slot's owner (until then it refuses
        // `CLUSTERDOWN`, a `MIGRATE` to it too)
        self.until("the new primary was not met", |c| {
            c.ports.iter().chain([&port]).all(|p| {
                redis_cli(*p, &["CLUSTER", "NODES"]).lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.first() == Some(&id.as_str())
                        && f.get(2).is_some_and(|flags| flags.contains("master"))
                        && f.get(7) == Some(&"connected")
                })
            }) && redis_cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
        });
        port
    }

    /// [`RedisCluster::migrate`] to the primary on `to`.
    pub fn migrate_to(&self, key: &str, batch: usize, to: u16) -> (u16, u16, usize) {
        let m = self.keys_moved(key, batch, to);
        // every key moved, the slot still the old primary's: every step of the app meets `ASK`
        // now; the slot is handed over once one did and was taken on the new primary
        self.until("no step met ASK", |c| {
            c.stat(m.from, "errorstats", "errorstat_ASK:count=") > 0
                && c.stat(m.to, "commandstats", "cmdstat_asking:calls=") > 0
        });
        self.slot_given(key, &m);
        (m.from, m.to, m.keys)
    }

    /// The first half of [`RedisCluster::migrate_to`]: the slot marked, every key of it moved,
    /// the slot still the old primary's (which answers `ASK` for every key of it).
    pub fn keys_moved(&self, key: &str, batch: usize, to: u16) -> Moving {
        let via = self.ports[0];
        let from = self.primary_of(via, key).expect("a primary for the key");
        let slot = redis_cli(via, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .to_string();
        let (from_id, to_id) = (RedisCluster::id_of(from), RedisCluster::id_of(to));
        // as a primary new to the cluster: it knows none of the store's scripts
        assert!(redis_cli(to, &["SCRIPT", "FLUSH"]).starts_with("OK"));
        let ok = |what: &str, reply: String| {
            assert!(reply.starts_with("OK"), "{what}: {reply}");
        };
        ok(
            "IMPORTING",
            redis_cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]),
        );
        ok(
            "MIGRATING",
            redis_cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]),
        );
        // one connection for the whole move (a process per batch would make it last seconds)
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{from}/"))
            .and_then(|c| c.get_connection())
            .expect("a connection to the old primary");
        let mut moved = 0;
        loop {
            let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(&slot)
                .arg(batch)
                .query(&mut c)
                .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let reply: redis::RedisResult<String> = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut c);
            // NOKEY: every one of them went meanwhile (expired, deleted)
            assert!(
                matches!(reply.as_deref(), Ok("OK" | "NOKEY")),
                "MIGRATE: {reply:?}"
            );
            moved += keys.len();
        }
        Moving {
            from,
            to,
            slot,
            to_id,
            keys: moved,
        }
    }

    /// The second half of [`RedisCluster::migrate_to`]: the slot given to the new primary on
    /// every node.
    pub fn slot_given(&self, key: &str, m: &Moving) {
        let (from, to) = (m.from, m.to);
        // the new owner first, then the old one (which then answers MOVED), then the rest
        let mut order = vec![to, from];
        order.extend(self.ports.iter().filter(|p| **p != to && **p != from));
        for p in order {
            let reply = redis_cli(p, &["CLUSTER", "SETSLOT", &m.slot, "NODE", &m.to_id]);
            // a replica takes the slot's owner from its primary
            assert!(
                reply.starts_with("OK") || reply.contains("only with masters"),
                "SETSLOT NODE on {p}: {reply}"
            );
        }
        self.until("the slot did not move", |c| {
            c.ports.iter().all(|p| c.primary_of(*p, key) == Some(to))
        });
    }

    /// A figure of the node on `port`'s `INFO section`: the number after `field` (0 when the
    /// node has none yet).
    pub fn stat(&self, port: u16, section: &str, field: &str) -> u64 {
        redis_cli(port, &["INFO", section])
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.split([',', '\r']).next()?.parse().ok())
            .unwrap_or(0)
    }

    /// The port of the replica of the primary on `primary`.
    pub fn replica_of(&self, primary: u16) -> Option<u16> {
        let nodes = redis_cli(primary, &["CLUSTER", "NODES"]);
        let id = nodes
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .nth(2)
                    .is_some_and(|f| f.contains("myself"))
            })?
            .split_whitespace()
            .next()?
            .to_string();
        nodes.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(3) != Some(&id.as_str()) || !f.get(2)?.contains("slave") {
                return None;
            }
            f.get(1)?
                .split(['@', ','])
                .next()?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()
        })
    }

    /// Kill the primary of `key`'s slot while its replica lags behind by `lag` (the replica
    /// is frozen with `DEBUG SLEEP` a little longer, its link cut, and the primary killed after
    /// `lag`: what the primary acknowledged meanwhile never reaches it), wait until the replica took over,
    /// start the killed node again and wait until it is back (a replica of the new primary).
    /// Returns (the killed port, the new primary's port).
    pub fn fail_over(&self, key: &str, lag: Duration) -> (u16, u16) {
        let via = self.ports[0];
        let old = self.primary_of(via, key).expect("a primary for the key");
        let replica = self.replica_of(old).expect("the primary's replica");
        if !lag.is_zero() {
            // the replica frozen, its link cut from the primary's side: what the primary
            // acknowledges from now on is on the primary alone (a frozen replica would still
            // find in its socket what was sent before it froze)
            let secs = format!("{:.3}", (lag + Duration::from_millis(200)).as_secs_f64());
            std::thread::spawn(move || redis_cli(replica, &["DEBUG", "SLEEP", &secs]));
            std::thread::sleep(Duration::from_millis(50));
            redis_cli(old, &["CLIENT", "KILL", "TYPE", "replica"]);
            std::thread::sleep(lag);
        }
        self.kill(old);
        self.replaced(key, old, replica)
    }

    /// The primary of `key`'s slot killed while its replica is frozen: the slot has no
    /// primary until `replaced` (with the returned guard gone) sees the replica take over.
    /// Returns (the killed port, the replica's port, the replica's freeze).
    pub fn kill_primary_of(&self, key: &str) -> (u16, u16, Frozen) {
        let old = self
            .primary_of(self.ports[0], key)
            .expect("a primary for the key");
        let replica = self.replica_of(old).expect("the primary's replica");
        let frozen = self.freeze(&[replica]);
        self.kill(old);
        (old, replica, frozen)
    }

    /// Wait until `replica` took over `key`'s slot from the killed `old` (by itself, or else
    /// by force), then start `old` again and wait until it is back (a replica of the new
    /// primary). Returns (old, the new primary's port).
    pub fn replaced(&self, key: &str, old: u16, replica: u16) -> (u16, u16) {
        // asked about the cluster: neither the killed node nor the frozen one
        let asker = *self
            .ports
            .iter()
            .find(|p| **p != old && **p != replica)
            .unwrap();
        let t0 = std::time::Instant::now();
        let took_over = |c: &RedisCluster| {
            c.primary_of(asker, key).is_some_and(|p| p != old)
                && redis_cli(asker, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
        };
        // the replica takes over by itself; on a machine this busy, the election sometimes
        // stalls — then the operator's move: the replica takes over by force
        let by_itself = (0..300)
            .any(|_| took_over(self) || (std::thread::sleep(Duration::from_millis(50)), false).1);
        if !by_itself {
            println!("the replica did not take over within 15 s: CLUSTER FAILOVER TAKEOVER");
            redis_cli(replica, &["CLUSTER", "FAILOVER", "TAKEOVER"]);
        }
        self.until("no replica took over", took_over);
        let new = self.primary_of(asker, key).unwrap();
        println!("replica {new} took over {:?} after it could", t0.elapsed());
        self.node(old);
        self.until("the killed node did not come back", |c| {
            c.whole_from(old) && c.whole_from(asker)
        });
        (old, new)
    }
}

/// A command to the test Redis by `redis-cli` (on a cluster: following its redirections); the
/// reply as printed.
pub fn redis_cli_cmd(args: &[&str]) -> String {
    let mut c = std::process::Command::new("redis-cli");
    if redis_cluster() && std::env::var("OPENSIG_TEST_REDIS").is_err() {
        c.args(["-c", "-p", &redis_cluster_ports()[0].to_string()]);
    } else {
        c.args(["-u", &redis_url()]);
    }
    let out = c.args(args).output().expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every key matching `pattern` in the test Redis (on a cluster: on every primary).
pub async fn redis_keys(pattern: &str) -> Vec<String> {
    redis_keys_with_ttl(pattern)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// The test Redis's keys matching `pattern` (on every node of the test cluster), sorted, each
/// with its `PTTL` (-1: no expiry).
pub async fn redis_keys_with_ttl(pattern: &str) -> Vec<(String, i64)> {
    let cluster = redis_cluster() && std::env::var("OPENSIG_TEST_REDIS").is_err();
    let urls: Vec<String> = if cluster {
        redis_cluster_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    } else {
        vec![redis_url()]
    };
    let mut keys = Vec::new();
    for u in urls {
        let mut r = ::redis::Client::open(u)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        if cluster {
            // a replica answers reads of its primary's slots (not MOVED)
            let () = ::redis::cmd("READONLY").query_async(&mut r).await.unwrap();
        }
        let found: Vec<String> = ::redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut r)
            .await
            .unwrap();
        for k in found {
            let ttl: i64 = ::redis::cmd("PTTL")
                .arg(&k)
                .query_async(&mut r)
                .await
                .unwrap();
            // gone since it was listed
            if ttl != -2 {
                keys.push((k, ttl));
            }
        }
    }
    keys.sort();
    keys.dedup_by(|a, b| a.0 == b.0);
    keys
}

/// A logged-in native client that records what it saw.
pub struct User {
    pub s: Session,
    pub name: String,
    /// Events received but not yet matched by an `expect`.
    pub backlog: std::collections::VecDeque<Event<Value>>,
}

pub fn config(url: &str, account: &str, token: &str) -> Config {
    let mut c = Config::new(APP, account, token);
    c.servers = vec![url.to_string()];
    c
}

impl User {
    pub async fn login(url: &str, account: &str) -> User {
        Self::login_with(config(url, account, "_no_need_token")).await
    }

    pub async fn login_with(c: Config) -> User {
        let name = c.account.clone();
        let mut u = User {
            s: Session::login(c),
            name,
            backlog: Default::default(),
        };
        let e = u
            .expect(|e| matches!(e, Event::LoginSuccess { .. } | Event::LoginFailed { .. }))
            .await;
        assert!(
            matches!(e, Event::LoginSuccess { .. }),
            "{} login: {e:?}",
            u.name
        );
        u
    }

    /// Start logging in without waiting.
    pub fn start(c: Config) -> User {
        let name = c.account.clone();
        User {
            s: Session::login(c),
            name,
            backlog: Default::default(),
        }
    }

    /// Next event that is not a log line (backlog first), within WAIT.
    pub async fn next(&mut self) -> Event<Value> {
        self.next_within(WAIT)
            .await
            .unwrap_or_else(|| panic!("{}: no event within {WAIT:?}", self.name))
    }

    pub async fn next_within(&mut self, d: Duration) -> Option<Event<Value>> {
        if let Some(e) = self.backlog.pop_front() {
            return Some(e);
        }
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let e = tokio::time::timeout_at(deadline, self.s.next_event())
                .await
                .ok()??;
            if !matches!(e, Event::Log { .. }) {
                return Some(e);
            }
        }
    }

    /// The first event (backlog first) that matches; others stay in the backlog.
    pub async fn expect(&mut self, pred: impl Fn(&Event<Value>) -> bool) -> Event<Value> {
        self.expect_within(WAIT, pred).await
    }

    pub async fn expect_within(
        &mut self,
        d: Duration,
        pred: impl Fn(&Event<Value>) -> bool,
    ) -> Event<Value> {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i).unwrap();
        }
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.s.next_event()).await {
                Ok(Some(e)) if pred(&e) => return e,
                Ok(Some(Event::Log { .. })) => {}
                Ok(Some(e)) => self.backlog.push_back(e),
                Ok(None) => panic!("{}: session ended; backlog {:?}", self.name, self.backlog),
                Err(_) => panic!(
                    "{}: expected event not seen within {d:?}; backlog {:?}",
                    self.name, self.backlog
                ),
            }
        }
    }

    /// Barrier: everything the server queued for this user before now has arrived, and it was
    /// nothing (no event other than log lines and request completions). The user sends an
    /// instant message to itself and reads until it comes back: the server delivers a user's
    /// messages and events in the order it processed them, so whatever was already queued for
    /// this user arrives first and fails the check. A negative check that does not depend on
    /// how fast the machine is.
    pub async fn settled(&mut self) {
        assert!(
            self.backlog.iter().all(|e| matches!(e, Event::Done { .. })),
            "{}: unexpected events {:?}",
            self.name,
            self.backlog
        );
        self.backlog.clear();
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let marker = format!(
            "barrier {}",
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let (me, text) = (self.name.clone(), marker.clone());
        let req = self
            .s
            .with(move |c, now| c.message_instant_send(&me, &text, now))
            .await;
        let mut sent = false;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.s.next_event()).await {
                Ok(Some(Event::MessageInstant { account, msg })) if msg == marker => {
                    assert_eq!(account, self.name);
                    if sent {
                        return;
                    }
                    // the completion may come after the echo (later events stay queued)
                    let r = self.done(req).await;
                    assert!(r.is_ok(), "{}: barrier send: {r:?}", self.name);
                    return;
                }
                Ok(Some(Event::Done { req: r, result })) if r == req => {
                    assert!(result.is_ok(), "{}: barrier send: {result:?}", self.name);
                    sent = true;
                }
                Ok(Some(Event::Log { .. } | Event::Done { .. })) => {}
                Ok(Some(e)) => panic!("{}: unexpected event {e:?}", self.name),
                Ok(None) => panic!("{}: session ended before the barrier", self.name),
                Err(_) => panic!("{}: barrier not back within {WAIT:?}", self.name),
            }
        }
    }

    /// Wait for `Done` of `req` and return its result.
    pub async fn done(&mut self, req: opensig_protocol::client::ReqId) -> Result<Value, String> {
        match self
            .expect(|e| matches!(e, Event::Done { req: r, .. } if *r == req))
            .await
        {
            Event::Done { result, .. } => result.map_err(|f| f.err),
            _ => unreachable!(),
        }
    }

    pub async fn send(&mut self, peer: &str, text: &str) -> Result<Value, String> {
        let (p, t) = (peer.to_string(), text.to_string());
        let req = self
            .s
            .with(move |c, now| c.message_instant_send(&p, &t, now))
            .await;
        self.done(req).await
    }

    pub async fn invoke(&mut self, func: &str, args: Value) -> Result<Value, String> {
        let (f, a) = (format!("io.agora.signal.{func}"), args.to_string());
        let req = self.s.with(move |c, now| c.invoke(&f, &a, now)).await;
        self.done(req).await
    }

    /// Wait until the server reports `account` offline (its session's end fully processed:
    /// channels left, then the session closed).
    pub async fn wait_offline(&mut self, account: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = self
                .invoke("user_query_user_status", json!({ "account": account }))
                .await
                .expect("status query");
            if r["status"] == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{account} still online after {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn join(&mut self, channel: &str) -> (opensig_protocol::client::ChannelId, Value) {
        let n = channel.to_string();
        let ch = self.s.with(move |c, now| c.channel_join(&n, now)).await;
        let e = self
            .expect(|e| matches!(e, Event::ChannelJoined { ch: c } | Event::ChannelJoinFailed { ch: c, .. } if *c == ch))
            .await;
        assert!(
            matches!(e, Event::ChannelJoined { .. }),
            "{} join {channel}: {e:?}",
            self.name
        );
        let list = match self
            .expect(|e| matches!(e, Event::ChannelUserList { ch: c, .. } if *c == ch))
            .await
        {
            Event::ChannelUserList { list, .. } => list,
            _ => unreachable!(),
        };
        (ch, list)
    }

    pub async fn channel_send(&mut self, channel: &str, text: &str) -> Result<Value, String> {
        let (n, t) = (channel.to_string(), text.to_string());
        let req = self
            .s
            .with(move |c, now| c.channel_send(&n, &t, false, now))
            .await;
        self.done(req).await
    }
}

/// Poll `cond` until it holds (within WAIT): waiting for a condition, not for a time.
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {WAIT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until the wall clock is past `t`: for rules stated in wall-clock time (a message's
/// expiry, a rate window). The check that follows holds however late it runs.
pub async fn until_past(t: std::time::SystemTime) {
    while let Ok(left) = t.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_millis(1)).await;
    }
}

pub fn s(v: &Value) -> String {
    v.as_string().unwrap_or_else(|| v.to_string())
}

/// Accounts of a join list `[[account, uid], …]`.
pub fn accounts(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_str().unwrap().to_string())
        .collect()
}

/// A raw WebSocket client speaking frames directly.
pub struct Raw {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub line: String,
    pub binary_frames: usize,
    /// Frames of a `multi` batch not consumed yet.
    pub pending: std::collections::VecDeque<Value>,
}

impl Raw {
    pub async fn connect(url: &str) -> Raw {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Raw {
            ws,
            line: String::new(),
            binary_frames: 0,
            pending: Default::default(),
        }
    }

    pub async fn send(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("send");
    }

    pub async fn send_value(&mut self, v: Value) {
        self.send(v.to_string()).await;
    }

    /// Next JSON frame (zlib binary frames inflated; `multi` left as is).
    pub async fn recv(&mut self) -> Option<Value> {
        self.recv_within(WAIT).await
    }

    pub async fn recv_within(&mut self, d: Duration) -> Option<Value> {
        loop {
            let m = tokio::time::timeout(d, self.ws.next()).await.ok()??.ok()?;
            match m {
                Message::Text(t) => {
                    return Some(serde_json::from_str(&t).expect("server sends JSON"))
                }
                Message::Binary(b) => {
                    self.binary_frames += 1;
                    let t = opensig_protocol::zlib::decompress(&b, 1 << 20).expect("zlib frame");
                    return Some(serde_json::from_str(&t).expect("server sends JSON"));
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Next frame, with `multi` batches flattened.
    pub async fn recv_flat(&mut self) -> Option<Value> {
        if let Some(v) = self.pending.pop_front() {
            return Some(v);
        }
        let v = self.recv().await?;
        if v[0] == "multi" {
            self.pending
                .extend(v[1].as_array().unwrap().iter().cloned());
            return self.pending.pop_front();
        }
        Some(v)
    }

    /// Log in and return the login_ret frame.
    pub async fn login(&mut self, app: &str, account: &str, token: &str) -> Value {
        self.send_value(json!(["login", {"vid": app, "account": account, "uid": 0, "token": token, "device": "websdk", "ip": ""}]))
            .await;
        let mut r = self.recv().await.expect("login_ret");
        if r[0] == "multi" {
            // what the session was told at once (a nudge to poll, say) came in its batch
            let mut batch = r[1].as_array().cloned().unwrap_or_default().into_iter();
            r = batch.next().unwrap_or_default();
            self.pending.extend(batch);
        }
        assert_eq!(r[0], "login_ret", "{r}");
        if r[1][0] == "" {
            let body: Value = serde_json::from_str(r[1][1].as_str().unwrap()).unwrap();
            self.line = body["line"].as_str().unwrap_or_default().to_string();
        }
        r
    }

    /// Send `text` to `peer` (call `id`); the reply's error ("" once it is stored).
    pub async fn send_msg(&mut self, id: u64, peer: &str, text: &str) -> String {
        let args = json!({"peer": peer, "content": text});
        self.call("user_sendmsg", id, args).await.0
    }

    /// Skip frames until one that carries `text` (panics when the connection ends first).
    pub async fn until_text(&mut self, text: &str) {
        loop {
            let f = self.recv_flat().await.expect("a frame with the text");
            if f.to_string().contains(text) {
                return;
            }
        }
    }

    /// Send a call2 and wait for its reply `[id, err, body]` (other frames are skipped).
    pub async fn call(&mut self, name: &str, id: u64, mut args: Value) -> (String, Value) {
        if args.get("line").is_none() {
            args["line"] = Value::String(self.line.clone());
        }
        self.send_value(json!(["call2", [name, id, args]])).await;
        self.reply(id).await
    }

    /// Wait for the reply to `id`; other frames stay queued for `recv_flat`.
    pub async fn reply(&mut self, id: u64) -> (String, Value) {
        let mut skipped = Vec::new();
        let result = loop {
            let f = self.recv_flat().await.expect("call2-ret before close");
            if f[0] == "call2-ret" && f[1][0] == id {
                let err = f[1][1].as_str().unwrap().to_string();
                let body = f[1][2]
                    .as_str()
                    .and_then(|t| serde_json::from_str(t).ok())
                    .unwrap_or(Value::Null);
                break (err, body);
            }
            skipped.push(f);
        };
        for f in skipped.into_iter().rev() {
            self.pending.push_front(f);
        }
        result
    }

    /// Try to connect (a refusal is an error, not a panic).
    pub async fn try_connect(url: &str) -> Result<Raw, String> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Raw {
            ws,
            line: String::new(),
            binary_frames: 0,
            pending: Default::default(),
        })
    }

    /// Ping with a marker and wait for its pong (other frames are skipped): the connection
    /// still works.
    pub async fn alive(&mut self) -> bool {
        let marker = format!("alive-{}", rand_u64());
        if self
            .ws
            .send(Message::text(json!(["ping", marker]).to_string()))
            .await
            .is_err()
        {
            return false;
        }
        loop {
            match self.recv_flat().await {
                Some(f) if f[0] == "pong" && f[1] == marker => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    }

    /// The close frame's code and reason once the server closes (None: no close within WAIT,
    /// or the connection ended without a close frame).
    pub async fn close_frame(&mut self) -> Option<(u16, String)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(Some(f))))) => {
                    return Some((f.code.into(), f.reason.to_string()))
                }
                Ok(Some(Ok(Message::Close(None)))) => return Some((1005, String::new())),
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    }

    /// True when the server closed the connection (a close frame or EOF) within WAIT.
    pub async fn closed(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// A plain HTTP/1.1 GET over loopback: (status, headers lowercased, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    http_get_host(addr, path, &addr.to_string()).await
}

/// `GET path` with the given `Host` header.
pub async fn http_get_host(
    addr: std::net::SocketAddr,
    path: &str,
    host: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_string())
}

/// A TCP proxy on a free loopback port in front of `target` that a test can break: `cut()`
/// drops every connection through it at once (both directions, no goodbye), `set_down(true)`
/// refuses new ones until `set_down(false)`. Stops with the test's runtime.
pub struct CutProxy {
    pub addr: std::net::SocketAddr,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    down: std::sync::atomic::AtomicBool,
    /// Bumped by every cut: a connection ends when the generation it started in is over.
    generation: tokio::sync::watch::Sender<u64>,
}

impl CutProxy {
    pub async fn start(target: std::net::SocketAddr) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = std::sync::Arc::new(ProxyState::default());
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if s.down.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = s.generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        CutProxy { addr, state }
    }

    /// `ws://addr/`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Drop every connection through the proxy now.
    pub fn cut(&self) {
        self.state.generation.send_modify(|g| *g += 1);
    }

    /// Refuse (accept and drop) new connections while `down`.
    pub fn set_down(&self, down: bool) {
        self.state
            .down
            .store(down, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Checks a flood against a token bucket (`rate` per second, holding at most `burst`) without
/// assuming how fast the machine is: no more accepted than the bucket can have given since
/// `since`, and at least one refused whenever the flood came faster than the bucket refills.
pub fn within_bucket(
    accepted: usize,
    sent: usize,
    (rate, burst): (u32, u32),
    since: std::time::Instant,
    what: &str,
) {
    let secs = since.elapsed().as_secs_f64();
    let most = burst as f64 + rate as f64 * secs + 1.0;
    assert!(
        accepted as f64 <= most,
        "{what}: {accepted} of {sent} accepted in {secs:.2} s, at most {most:.0} at {rate}/s after a burst of {burst}"
    );
    if most < sent as f64 {
        assert!(
            accepted < sent,
            "{what}: all {sent} accepted in {secs:.2} s at {rate}/s"
        );
    }
}

/// An opensig-server process (the built binary) with `args`, on a free loopback port; killed
/// with SIGKILL when dropped (or by `kill`, as a crash would end it).
pub struct ServerProcess {
    pub child: std::process::Child,
    /// `ws://…/` it listens on.
    pub url: String,
}

impl ServerProcess {
    pub fn start(args: &[&str]) -> ServerProcess {
        ServerProcess::start_logging(args, "warn", None)
    }

    /// With `OPENSIG_LOG=filter`, its log written to `log` (else inherited).
    pub fn start_logging(
        args: &[&str],
        filter: &str,
        log: Option<&std::path::Path>,
    ) -> ServerProcess {
        use std::io::BufRead;
        let stderr = match log {
            Some(p) => std::process::Stdio::from(std::fs::File::create(p).expect("log file")),
            None => std::process::Stdio::inherit(),
        };
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_opensig-server"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--www",
                "/nonexistent",
                "--metrics-listen",
                "off",
            ])
            .args(args)
            .env("OPENSIG_LOG", filter)
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start opensig-server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.split_whitespace().find(|w| w.starts_with("ws://"));
        let Some(url) = url.map(str::to_string) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no URL in {line:?}");
        };
        ServerProcess { child, url }
    }

    /// SIGKILL, and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP answer: status, the headers asked for (by name), and the body (JSON, or a string).
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl HttpReply {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP request with a real client (ureq, on a blocking thread): any status is an
/// answer; `keep` names the response headers to return.
pub async fn http_request(
    method: &'static str,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Value>,
    keep: &'static [&'static str],
) -> HttpReply {
    tokio::task::spawn_blocking(move || {
        let mut req = ureq::request(method, &url).timeout(Duration::from_secs(10));
        for (k, v) in headers {
            req = req.set(k, &v);
        }
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let resp = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {url}: {e}"),
        };
        let status = resp.status();
        let headers = keep
            .iter()
            .filter_map(|k| resp.header(k).map(|v| (k.to_string(), v.to_string())))
            .collect();
        let text = resp.into_string().unwrap_or_default();
        HttpReply {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    })
    .await
    .unwrap()
}
