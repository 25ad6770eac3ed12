//! Server configuration: where to listen, which apps exist, limits, static folders.

use std::collections::BTreeMap;
use std::path::PathBuf;

use opensig_protocol::Limits;

/// Everything the server needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `host:port` to listen on (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// App id → certificate. Empty = development mode: any app id, no token check.
    pub apps: BTreeMap<String, Option<String>>,
    /// The WebSocket URL `/getaddr` hands out; `None` = derived from the request's Host.
    pub public_url: Option<String>,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            apps: BTreeMap::new(),
            public_url: None,
            limits: Limits::default(),
            www_dir: None,
            pkg_dir: None,
            redis_url: None,
            redis_prefix: "opensig:".into(),
            node_id: None,
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

    /// Whether any app is configured (otherwise every app id is accepted without tokens).
    pub fn development_mode(&self) -> bool {
        self.apps.is_empty()
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
