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
    /// `redis://…`: run as a node of a Redis-backed cluster instead of in memory.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and topic of this cluster.
    pub redis_prefix: String,
    /// This node's id in the cluster (default: random).
    pub node_id: Option<String>,
    /// PEM certificate chain: serve `wss://` and `https://` (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Apps whose `__agora_*` firehose channels (every login/logout, every join/leave of the
    /// app) cannot be joined; `*` = every app.
    pub no_firehose: BTreeSet<String>,
    /// The process's allocated bytes, for `memory_max_bytes` (none: no cap). The server
    /// binary counts its allocations; an embedder plugs in its own count.
    pub memory_gauge: Option<MemoryGauge>,
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
            .field("node_id", &self.node_id)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("no_firehose", &self.no_firehose)
            .field("memory_gauge", &self.memory_gauge.as_ref().map(|g| g()))
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
            node_id: None,
            tls_cert: None,
            tls_key: None,
            no_firehose: BTreeSet::new(),
            memory_gauge: None,
        }
    }
}

/// Why a configuration value was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--app` with an empty id or certificate.
    #[error("--app must be ID or ID:CERTIFICATE (got {0:?})")]
    BadApp(String),
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
        let mut current = serde_json::to_value(&self.limits).expect("limits serialise");
        let map = current.as_object_mut().expect("limits are an object");
        if !map.contains_key(name.trim()) {
            let known: Vec<&String> = map.keys().collect();
            return Err(ConfigError::BadLimit(
                spec.into(),
                format!("unknown limit; known: {known:?}"),
            ));
        }
        let parsed: serde_json::Value = serde_json::from_str(value.trim())
            .map_err(|e| ConfigError::BadLimit(spec.into(), e.to_string()))?;
        map.insert(name.trim().into(), parsed);
        self.limits = serde_json::from_value(current)
            .map_err(|e| ConfigError::BadLimit(spec.into(), e.to_string()))?;
        Ok(())
    }

    /// Whether the firehose channels of `app` may be joined.
    pub fn firehose_allowed(&self, app: &str) -> bool {
        !(self.no_firehose.contains(app) || self.no_firehose.contains("*"))
    }

    /// Whether any app is configured (otherwise every app id is accepted without tokens).
    pub fn development_mode(&self) -> bool {
        self.apps.is_empty()
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
}
