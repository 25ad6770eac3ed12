//! Server configuration: where to listen, which apps exist, limits, static folders.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use opensig_protocol::Limits;

/// Everything the server needs to start.
#[derive(Clone)]
pub struct ServerConfig {
    /// `host:port` to listen on (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// App id → certificate. Empty = development mode: any app id, no token check.
    pub apps: BTreeMap<String, Option<String>>,
    /// The WebSocket URL `/getaddr` hands out; `None` = the request's `Host` when it is a
    /// loopback name or in `allowed_hosts`, else the address the client connected to.
    pub public_url: Option<String>,
    /// `Host` values (`name` or `name:port`) `/getaddr` may build its answer from.
    pub allowed_hosts: BTreeSet<String>,
    /// Where `/metrics` is served (its own listener; `None`: not served).
    pub metrics_listen: Option<String>,
    /// Limits (seed defaults, overridable).
    pub limits: Limits,
    /// Folder served at `/` (the demo app), when it exists.
    pub www_dir: Option<PathBuf>,
    /// Folder served at `/pkg/` (the built SDK), when it exists.
    pub pkg_dir: Option<PathBuf>,
    /// `redis://…` (one Redis) or `redis+cluster://host:port,…/` (a Redis Cluster): run as a
    /// node of a Redis-backed cluster instead of in memory.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and topic of this cluster.
    pub redis_prefix: String,
    /// Replicas that must hold a step's writes before it is acknowledged (Redis `WAIT`;
    /// 0: Redis's asynchronous replication as it is).
    pub redis_wait_replicas: u32,
    /// How many units (hash slots of a Redis Cluster) each app's channels and accounts are
    /// spread over (1: an app on one; fixed for the life of the data, a node refuses to start
    /// with another number than the cluster's).
    pub redis_partitions: u32,
    /// This node's id in the cluster (default: random).
    pub node_id: Option<String>,
    /// PEM certificate chain: serve `wss://` and `https://` (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Apps whose `__agora_*` firehose channels (every login/logout, every join/leave of the
    /// app) cannot be joined; `*` = every app.
    pub no_firehose: BTreeSet<String>,
    /// Apps without a certificate whose backend HTTP API answers callers from anywhere (by
    /// default only from loopback); `*` = every such app.
    pub api_open: BTreeSet<String>,
    /// The process's allocated bytes, for `memory_max_bytes` (none: no cap). The server
    /// binary counts its allocations; an embedder plugs in its own count.
    pub memory_gauge: Option<MemoryGauge>,
    /// Where each app's events are delivered (`[[webhooks]]`).
    pub webhooks: Vec<Webhook>,
    /// The backend API keys of each app (`[[api_keys]]`).
    pub api_keys: Vec<ApiKey>,
    /// Apps whose backend API refuses the certificate-signed credential (keys only); `*` =
    /// every app.
    pub api_no_certificate: BTreeSet<String>,
    /// Who may sign in to the operator console (`[[operators]]`; none: no console).
    pub operators: Vec<Operator>,
    /// Where the console is served: `None` on the metrics listener (when there is one),
    /// else its own listener.
    pub console_listen: Option<String>,
}

/// An operator of the console (`[[operators]]` in the configuration file): a name and the
/// Argon2id hash of a password (`opensig-server operator` makes it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    /// The name signed in with (logs show it beside every action).
    pub name: String,
    /// The PHC string of an Argon2id hash (`$argon2id$v=19$…`).
    pub password_hash: String,
    /// Looks, never acts (every write refused by the server).
    #[serde(default)]
    pub read_only: bool,
}

/// A backend API key of an app (`[[api_keys]]` in the configuration file): its name and the
/// SHA-256 of the key (`opensig-server api-key` makes both and prints the key once).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The app whose API it opens.
    pub app: String,
    /// Its name, unique in the app (`a-z`, `0-9`, `-`; part of the key; logs show it).
    pub name: String,
    /// `sha256:<hex>` of the key.
    pub hash: String,
    /// Only reads (`GET`).
    #[serde(default)]
    pub read_only: bool,
}

/// A webhook endpoint of an app (`[[webhooks]]` in the configuration file): where its events
/// are POSTed, signed with `secret`.
#[derive(Clone, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// The app whose events it gets.
    pub app: String,
    /// Its name, unique in the app (default: its URL): metrics, logs and the delivery
    /// position are kept under it.
    #[serde(default)]
    pub name: String,
    /// `http://` or `https://` URL (never a client's: only the operator's file sets it).
    pub url: String,
    /// The HMAC-SHA256 key of the signature header. Never logged.
    pub secret: String,
    /// Event types it gets (`user.online`, or `user.*`; empty: all).
    #[serde(default)]
    pub events: Vec<String>,
    /// Channel names (`lobby`, or `support-*`) whose events it gets; events about other
    /// channels are left out, events without a channel are not (empty: all).
    #[serde(default)]
    pub channels: Vec<String>,
}

/// `pattern` (a name, or a prefix followed by `*`) matches `name`.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl Webhook {
    /// Whether it gets an event of `kind` about `channel`.
    pub fn wants(&self, kind: &str, channel: Option<&str>) -> bool {
        let kind_ok = self.events.is_empty() || self.events.iter().any(|p| matches(p, kind));
        let channel_ok = match channel {
            Some(ch) if !self.channels.is_empty() => self.channels.iter().any(|p| matches(p, ch)),
            _ => true,
        };
        kind_ok && channel_ok
    }

    /// Refuse what cannot work: a URL that is not HTTP(S), no secret, an event type that
    /// does not exist. Fills in the name.
    fn check(&mut self) -> Result<(), ConfigError> {
        let bad = |why: String| ConfigError::BadWebhook(self.url.clone(), why);
        let url = reqwest::Url::parse(&self.url).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad("the URL must be http:// or https:// with a host".into()));
        }
        if self.secret.trim().is_empty() {
            return Err(bad(
                "a secret is needed (the deliveries are signed with it)".into(),
            ));
        }
        if self.app.trim().is_empty() {
            return Err(bad("app is missing".into()));
        }
        let known = opensig_protocol::names::domain::ALL;
        for p in &self.events {
            if !known.iter().any(|k| matches(p, k)) {
                return Err(bad(format!("unknown event type {p:?}; known: {known:?}")));
            }
        }
        if self.name.is_empty() {
            self.name.clone_from(&self.url);
        }
        Ok(())
    }
}

/// Debug output never shows the secret.
impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("app", &self.app)
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &"<secret>")
            .field("events", &self.events)
            .field("channels", &self.channels)
            .finish()
    }
}

/// The limits of the configuration in force when they were read (a reload replaces the
/// configuration whole; a request works with the one it started with).
pub struct LimitsNow(pub Arc<ServerConfig>);

impl std::ops::Deref for LimitsNow {
    type Target = Limits;
    fn deref(&self) -> &Limits {
        &self.0.limits
    }
}

/// Reads the bytes a process has allocated.
pub type MemoryGauge = Arc<dyn Fn() -> usize + Send + Sync>;

/// Debug output never shows an app certificate or a Redis password.
impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let apps: BTreeMap<&str, &str> = self
            .apps
            .iter()
            .map(|(id, c)| {
                (
                    id.as_str(),
                    if c.is_some() {
                        "<certificate>"
                    } else {
                        "<none>"
                    },
                )
            })
            .collect();
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("apps", &apps)
            .field("public_url", &self.public_url)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("metrics_listen", &self.metrics_listen)
            .field("limits", &self.limits)
            .field("www_dir", &self.www_dir)
            .field("pkg_dir", &self.pkg_dir)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("redis_wait_replicas", &self.redis_wait_replicas)
            .field("redis_partitions", &self.redis_partitions)
            .field("node_id", &self.node_id)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("no_firehose", &self.no_firehose)
            .field("api_open", &self.api_open)
            .field("memory_gauge", &self.memory_gauge.as_ref().map(|g| g()))
            .field("webhooks", &self.webhooks)
            .field("api_keys", &self.api_keys)
            .field("api_no_certificate", &self.api_no_certificate)
            .field(
                "operators",
                &self.operators.iter().map(|o| &o.name).collect::<Vec<_>>(),
            )
            .field("console_listen", &self.console_listen)
            .finish()
    }
}

/// A URL with any password replaced (`redis://user:secret@host` → `redis://user:***@host`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(x) => x,
        None => return url.to_string(),
    };
    let user = auth.split_once(':').map(|(u, _)| u).unwrap_or("");
    format!("{scheme}://{user}:***@{host}")
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            apps: BTreeMap::new(),
            public_url: None,
            allowed_hosts: BTreeSet::new(),
            metrics_listen: None,
            limits: Limits::default(),
            www_dir: None,
            pkg_dir: None,
            redis_url: None,
            redis_prefix: "opensig:".into(),
            redis_wait_replicas: 0,
            redis_partitions: 1,
            node_id: None,
            tls_cert: None,
            tls_key: None,
            no_firehose: BTreeSet::new(),
            api_open: BTreeSet::new(),
            memory_gauge: None,
            webhooks: Vec::new(),
            api_keys: Vec::new(),
            api_no_certificate: BTreeSet::new(),
            operators: Vec::new(),
            console_listen: None,
        }
    }
}

/// Why a configuration value was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read {0}: {1}")]
    Unreadable(PathBuf, #[source] std::io::Error),
    /// Other users may read or change the configuration file, which holds certificates.
    #[error(
        "{0} can be read or changed by other users (mode {1:04o}); it holds app certificates: \
         run `chmod 600 {0}` (group read, 640, is allowed)"
    )]
    Exposed(PathBuf, u32),
    /// The configuration file is not valid TOML or has an unknown key.
    #[error("{0}: {1}")]
    BadFile(PathBuf, String),
    /// `--app` with an empty id or certificate.
    #[error("--app must be ID or ID:CERTIFICATE (got {0:?})")]
    BadApp(String),
    /// A `[[api_keys]]` entry that cannot work.
    #[error("api key {0:?}: {1}")]
    BadApiKey(String, String),
    /// An `[[operators]]` entry that cannot work.
    #[error("operator {0:?}: {1}")]
    BadOperator(String, String),
    /// A `[[webhooks]]` entry that cannot work.
    #[error("webhook {0:?}: {1}")]
    BadWebhook(String, String),
    /// `--limit` not of the form name=value, or an unknown name / bad value.
    #[error("--limit {0:?}: {1}")]
    BadLimit(String, String),
}

impl ServerConfig {
    /// Whether the process has allocated `memory_max_bytes` or more.
    pub fn short_of_memory(&self) -> bool {
        let max = self.limits.memory_max_bytes;
        match &self.memory_gauge {
            Some(gauge) if max > 0 => gauge() as u64 >= max,
            _ => false,
        }
    }

    /// Add `ID` or `ID:CERTIFICATE`.
    pub fn add_app(&mut self, spec: &str) -> Result<(), ConfigError> {
        let (id, cert) = match spec.split_once(':') {
            Some((id, cert)) => (id.trim(), Some(cert.trim())),
            None => (spec.trim(), None),
        };
        if id.is_empty() || cert.is_some_and(str::is_empty) {
            return Err(ConfigError::BadApp(spec.into()));
        }
        self.apps.insert(id.into(), cert.map(str::to_owned));
        Ok(())
    }

    /// Apply `name=value` to the limits (names are the `Limits` field names).
    pub fn set_limit(&mut self, spec: &str) -> Result<(), ConfigError> {
        let (name, value) = spec
            .split_once('=')
            .ok_or_else(|| ConfigError::BadLimit(spec.into(), "expected name=value".into()))?;
        let parsed: serde_json::Value = serde_json::from_str(value.trim())
            .map_err(|e| ConfigError::BadLimit(spec.into(), e.to_string()))?;
        self.set_limit_value(name.trim(), parsed)
            .map_err(|e| ConfigError::BadLimit(spec.into(), e))
    }

    /// Set the limit `name` (a `Limits` field name) to `value`.
    fn set_limit_value(&mut self, name: &str, value: serde_json::Value) -> Result<(), String> {
        let mut current = serde_json::to_value(&self.limits).expect("limits serialise");
        let map = current.as_object_mut().expect("limits are an object");
        if !map.contains_key(name) {
            let known: Vec<&String> = map.keys().collect();
            return Err(format!("unknown limit; known: {known:?}"));
        }
        map.insert(name.into(), value);
        self.limits = serde_json::from_value(current).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Whether the backend API of `app` (an app without a certificate) answers callers from
    /// other machines.
    pub fn api_open(&self, app: &str) -> bool {
        self.api_open.contains(app) || self.api_open.contains("*")
    }

    /// Whether the backend API of `app` takes the certificate-signed credential.
    pub fn api_certificate_allowed(&self, app: &str) -> bool {
        !(self.api_no_certificate.contains(app) || self.api_no_certificate.contains("*"))
    }

    /// The API key of `app` named `name`.
    pub fn api_key(&self, app: &str, name: &str) -> Option<&ApiKey> {
        self.api_keys
            .iter()
            .find(|k| k.app == app && k.name == name)
    }

    /// Whether the firehose channels of `app` may be joined.
    pub fn firehose_allowed(&self, app: &str) -> bool {
        !(self.no_firehose.contains(app) || self.no_firehose.contains("*"))
    }

    /// Whether sessions of `app` may exist (development mode: every app).
    pub fn app_allowed(&self, app: &str) -> bool {
        self.development_mode() || self.apps.contains_key(app)
    }

    /// The webhook endpoints of `app`.
    pub fn webhooks_of<'a>(&'a self, app: &'a str) -> impl Iterator<Item = &'a Webhook> + 'a {
        self.webhooks.iter().filter(move |w| w.app == app)
    }

    /// Whether anything listens to the events of `app`: a webhook endpoint, or the console
    /// (its live tail).
    pub fn events_wanted(&self, app: &str) -> bool {
        self.webhooks_of(app).next().is_some() || crate::console::wanted(self)
    }

    /// Whether any app is configured (otherwise every app id is accepted without tokens).
    pub fn development_mode(&self) -> bool {
        self.apps.is_empty()
    }
}

/// The configuration file (`--config opensig.toml`, TOML): every key optional; the command
/// line and the environment override it. `docs/opensig.example.toml` shows every key.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `listen`.
    pub listen: Option<String>,
    /// `public_url`.
    pub public_url: Option<String>,
    /// `allowed_hosts`.
    pub allowed_hosts: Option<Vec<String>>,
    /// `metrics_listen` (`"off"`: not served).
    pub metrics_listen: Option<String>,
    /// `www`.
    pub www: Option<PathBuf>,
    /// `pkg`.
    pub pkg: Option<PathBuf>,
    /// `redis`.
    pub redis: Option<String>,
    /// `redis_prefix`.
    pub redis_prefix: Option<String>,
    /// `redis_wait_replicas`.
    pub redis_wait_replicas: Option<u32>,
    /// `redis_partitions`.
    pub redis_partitions: Option<u32>,
    /// `node_id`.
    pub node_id: Option<String>,
    /// `no_firehose`.
    pub no_firehose: Option<Vec<String>>,
    /// `api_open`.
    pub api_open: Option<Vec<String>>,
    /// `api_no_certificate`.
    pub api_no_certificate: Option<Vec<String>>,
    /// `[tls] cert = …, key = …`.
    pub tls: Option<TlsFiles>,
    /// `[apps]`: app id = certificate (`""`: an app without one; tokens are not checked).
    #[serde(default)]
    pub apps: BTreeMap<String, String>,
    /// `[limits]`: any `Limits` field, e.g. `user_messages_per_second = 100`.
    #[serde(default)]
    pub limits: BTreeMap<String, toml::Value>,
    /// `[[webhooks]]`: an app's event endpoints.
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
    /// `[[api_keys]]`: an app's backend API keys.
    #[serde(default)]
    pub api_keys: Vec<ApiKey>,
    /// `[[operators]]`: who may sign in to the operator console.
    #[serde(default)]
    pub operators: Vec<Operator>,
    /// `console_listen` (default: on the metrics listener; `"off"`: no console).
    pub console_listen: Option<String>,
}

/// `[tls]` of the configuration file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl FileConfig {
    /// Read `path`, refusing a file other users can read or anyone but its owner and group
    /// can change (it holds certificates).
    pub fn read(path: &std::path::Path) -> Result<FileConfig, ConfigError> {
        let unreadable = |e| ConfigError::Unreadable(path.to_owned(), e);
        let file = std::fs::File::open(path).map_err(unreadable)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file.metadata().map_err(unreadable)?.permissions().mode() & 0o7777;
            if mode & 0o027 != 0 {
                return Err(ConfigError::Exposed(path.to_owned(), mode));
            }
        }
        let text = std::io::read_to_string(file).map_err(unreadable)?;
        toml::from_str(&text).map_err(|e| ConfigError::BadFile(path.to_owned(), e.to_string()))
    }

    /// Put what the file sets into `c`.
    pub fn apply(&self, c: &mut ServerConfig) -> Result<(), ConfigError> {
        let set = |slot: &mut String, v: &Option<String>| {
            if let Some(v) = v {
                slot.clone_from(v);
            }
        };
        set(&mut c.listen, &self.listen);
        set(&mut c.redis_prefix, &self.redis_prefix);
        if let Some(n) = self.redis_wait_replicas {
            c.redis_wait_replicas = n;
        }
        if let Some(n) = self.redis_partitions {
            c.redis_partitions = n;
        }
        if self.public_url.is_some() {
            c.public_url.clone_from(&self.public_url);
        }
        if let Some(hosts) = &self.allowed_hosts {
            c.allowed_hosts = hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect();
        }
        if let Some(m) = &self.metrics_listen {
            c.metrics_listen = Some(m.clone()).filter(|m| m != "off" && !m.is_empty());
        }
        if self.www.is_some() {
            c.www_dir.clone_from(&self.www);
        }
        if self.pkg.is_some() {
            c.pkg_dir.clone_from(&self.pkg);
        }
        if self.redis.is_some() {
            c.redis_url.clone_from(&self.redis);
        }
        if self.node_id.is_some() {
            c.node_id.clone_from(&self.node_id);
        }
        if let Some(f) = &self.no_firehose {
            c.no_firehose = f.iter().map(|n| n.trim().to_string()).collect();
        }
        if let Some(f) = &self.api_open {
            c.api_open = f.iter().map(|n| n.trim().to_string()).collect();
        }
        if let Some(f) = &self.api_no_certificate {
            c.api_no_certificate = f.iter().map(|n| n.trim().to_string()).collect();
        }
        if let Some(tls) = &self.tls {
            c.tls_cert = Some(tls.cert.clone());
            c.tls_key = Some(tls.key.clone());
        }
        for (id, cert) in &self.apps {
            let spec = match cert.trim() {
                "" => id.clone(),
                cert => format!("{id}:{cert}"),
            };
            if id.contains(':') {
                return Err(ConfigError::BadApp(id.clone()));
            }
            c.add_app(&spec)?;
        }
        let mut webhooks = Vec::new();
        for w in &self.webhooks {
            let mut w = w.clone();
            w.check()?;
            if webhooks
                .iter()
                .any(|o: &Webhook| o.app == w.app && o.name == w.name)
            {
                return Err(ConfigError::BadWebhook(
                    w.url.clone(),
                    format!("two endpoints of app {:?} are named {:?}", w.app, w.name),
                ));
            }
            webhooks.push(w);
        }
        c.webhooks = webhooks;
        let mut keys: Vec<ApiKey> = Vec::new();
        for k in &self.api_keys {
            let bad = |why: &str| ConfigError::BadApiKey(k.name.clone(), why.to_string());
            if !crate::apikeys::valid_name(&k.name) {
                return Err(bad("a name is 1–64 of a-z, 0-9 and -"));
            }
            if !crate::apikeys::valid_hash(&k.hash) {
                return Err(bad(
                    "hash must be sha256:<64 hex digits> (opensig-server api-key prints it)",
                ));
            }
            if keys.iter().any(|o| o.app == k.app && o.name == k.name) {
                return Err(bad(&format!("two keys of app {:?} have this name", k.app)));
            }
            keys.push(k.clone());
        }
        c.api_keys = keys;
        let mut operators: Vec<Operator> = Vec::new();
        for o in &self.operators {
            let bad = |why: &str| ConfigError::BadOperator(o.name.clone(), why.to_string());
            if o.name.is_empty() || o.name.len() > 64 || o.name.chars().any(char::is_control) {
                return Err(bad("a name is 1–64 printable characters"));
            }
            if !crate::console::auth::valid_hash(&o.password_hash) {
                return Err(bad(
                    "password_hash must be an Argon2id PHC string (opensig-server operator prints it)",
                ));
            }
            if operators.iter().any(|p| p.name == o.name) {
                return Err(bad("two operators have this name"));
            }
            operators.push(o.clone());
        }
        c.operators = operators;
        if let Some(at) = &self.console_listen {
            c.console_listen = Some(at.clone()).filter(|a| !a.is_empty());
        }
        for (name, value) in &self.limits {
            let v = serde_json::to_value(value)
                .map_err(|e| ConfigError::BadLimit(format!("[limits] {name}"), e.to_string()))?;
            c.set_limit_value(name, v)
                .map_err(|e| ConfigError::BadLimit(format!("[limits] {name}"), e))?;
        }
        Ok(())
    }
}

/// The memory this process may use on this machine, in bytes: the smaller of the physical
/// memory (`/proc/meminfo`) and the control group's limit (`memory.max`), when known (Linux).
pub fn machine_memory() -> Option<u64> {
    let physical = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    let group = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    match (physical, group) {
        (Some(p), Some(g)) => Some(p.min(g)),
        (p, g) => p.or(g),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_and_limits() {
        let mut c = ServerConfig::default();
        c.add_app("a1").unwrap();
        c.add_app("a2:cert").unwrap();
        assert!(c.add_app("a3:").is_err());
        assert!(c.add_app("").is_err());
        assert_eq!(c.apps["a1"], None);
        assert_eq!(c.apps["a2"].as_deref(), Some("cert"));
        c.set_limit("user_messages_per_second=5").unwrap();
        assert_eq!(c.limits.user_messages_per_second, 5);
        assert!(c.set_limit("nope=1").is_err());
        assert!(c.set_limit("user_messages_per_second=x").is_err());
        assert!(c.set_limit("user_messages_per_second").is_err());
    }

    #[test]
    fn webhook_endpoints_are_checked() {
        let parse = |t: &str| -> Result<ServerConfig, ConfigError> {
            let file: FileConfig =
                toml::from_str(t).map_err(|e| ConfigError::BadApp(e.to_string()))?;
            let mut c = ServerConfig::default();
            file.apply(&mut c)?;
            Ok(c)
        };
        let ok = "[[webhooks]]\napp = \"a\"\nurl = \"https://h.example/x\"\nsecret = \"s\"\nevents = [\"user.*\", \"invite.failed\"]\nchannels = [\"sup-*\"]";
        let c = parse(ok).unwrap();
        let w = &c.webhooks[0];
        assert_eq!(
            w.name, "https://h.example/x",
            "the name defaults to the URL"
        );
        assert!(w.wants("user.online", None));
        assert!(w.wants("invite.failed", Some("sup-1")));
        assert!(!w.wants("invite.failed", Some("lobby")));
        assert!(!w.wants("channel.message", Some("sup-1")));
        assert!(
            !format!("{c:?}").contains("secret = \"s\"") && format!("{w:?}").contains("<secret>")
        );
        assert!(c.events_wanted("a") && !c.events_wanted("b"));
        for bad in [
            ok.replace("https://h.example/x", "ftp://h.example/x"),
            ok.replace("https://h.example/x", "not a url"),
            ok.replace("secret = \"s\"", "secret = \"\""),
            ok.replace("user.*", "user.teleported"),
            format!(
                "{ok}\n[[webhooks]]\napp = \"a\"\nurl = \"https://h.example/x\"\nsecret = \"t\""
            ),
            format!("{ok}\nretries = 3"),
        ] {
            assert!(parse(&bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn the_documented_example_file_is_valid() {
        let text = include_str!("../../../docs/opensig.example.toml");
        let file: FileConfig = toml::from_str(text).expect("docs/opensig.example.toml parses");
        let mut c = ServerConfig::default();
        file.apply(&mut c).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080");
        assert_eq!(c.apps["my-test-app"], None);
        assert_eq!(
            c.apps["970ca35de60c44645bbae8a215061b33"].as_deref(),
            Some("5cfd2fd1755d40ecb72977518be15d3b")
        );
        assert_eq!(c.limits.user_messages_per_second, 60);
        // every limit name the file could use is a `Limits` field; a wrong value is refused
        let bad: FileConfig = toml::from_str("[limits]\nuser_messages_per_second = \"x\"").unwrap();
        assert!(bad.apply(&mut c).is_err());
    }
}
