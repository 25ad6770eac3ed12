//! `opensig-server`: run the server, or print a SignalingToken.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use opensig_server::ServerConfig;

/// Every allocation of the process, counted: `memory_max_bytes` compares against it.
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

#[derive(Parser)]
#[command(
    name = "opensig-server",
    version,
    about = "Self-hosted AgoraSig 1.4 signaling server"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Serve,
}

#[derive(Subcommand)]
enum Command {
    /// Print a SignalingToken for an account.
    Token(TokenArgs),
}

#[derive(Args)]
struct Serve {
    /// Address to listen on.
    #[arg(long, env = "OPENSIG_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// An app: `ID` (no token needed) or `ID:CERTIFICATE` (tokens required). Repeatable.
    /// None given = development mode: any app id, any token.
    #[arg(long = "app", env = "OPENSIG_APPS", value_delimiter = ',')]
    apps: Vec<String>,
    /// The WebSocket URL `/getaddr` returns (default: ws://<Host>/ when the request's Host is
    /// loopback or an --allowed-host, else the address the client connected to).
    #[arg(long, env = "OPENSIG_PUBLIC_URL")]
    public_url: Option<String>,
    /// A Host (`name` or `name:port`) `/getaddr` may answer with. Repeatable.
    #[arg(
        long = "allowed-host",
        env = "OPENSIG_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// Where `/metrics` is served, apart from the public port (`off`: not served).
    #[arg(long, env = "OPENSIG_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    metrics_listen: String,
    /// Override a limit: `name=value`, e.g. `user_messages_per_second=100`. Repeatable.
    #[arg(long = "limit", env = "OPENSIG_LIMITS", value_delimiter = ',')]
    limits: Vec<String>,
    /// Folder served at `/` (the demo app).
    #[arg(long, env = "OPENSIG_WWW", default_value = "www")]
    www: PathBuf,
    /// Folder served at `/pkg/` (the built SDK).
    #[arg(long, env = "OPENSIG_PKG", default_value = "pkg")]
    pkg: PathBuf,
    /// Run as a node of a cluster sharing this Redis (`redis://host:port/db`).
    #[arg(long, env = "OPENSIG_REDIS")]
    redis: Option<String>,
    /// Prefix of the cluster's Redis keys (clusters sharing one Redis use different ones).
    #[arg(long, env = "OPENSIG_REDIS_PREFIX", default_value = "opensig:")]
    redis_prefix: String,
    /// This node's id in the cluster (default: random).
    #[arg(long, env = "OPENSIG_NODE_ID")]
    node_id: Option<String>,
    /// PEM certificate chain: serve wss:// and https:// instead of ws:// and http://.
    #[arg(long, env = "OPENSIG_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "OPENSIG_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// An app whose `__agora_*` firehose channels cannot be joined (`*`: every app).
    /// Repeatable.
    #[arg(
        long = "no-firehose",
        env = "OPENSIG_NO_FIREHOSE",
        value_delimiter = ','
    )]
    no_firehose: Vec<String>,
}

#[derive(Args)]
struct TokenArgs {
    /// App id.
    #[arg(long)]
    app_id: String,
    /// App certificate.
    #[arg(long)]
    certificate: String,
    /// Account the token is for.
    #[arg(long)]
    account: String,
    /// Seconds from now until the token expires (0 = never).
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

/// A repeatable or comma-separated option's values, trimmed, empty ones dropped.
fn names(values: &[String], norm: fn(&str) -> String) -> std::collections::BTreeSet<String> {
    values
        .iter()
        .map(|v| norm(v.trim()))
        .filter(|v| !v.is_empty())
        .collect()
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Some(Command::Token(t)) = cli.command {
        let expiry = if t.ttl == 0 {
            0
        } else {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                + t.ttl
        };
        println!(
            "{}",
            opensig_protocol::token::sign(&t.app_id, &t.certificate, &t.account, expiry)
        );
        return;
    }
    // logs on stderr; stdout carries the one line saying where the server listens
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OPENSIG_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let s = cli.serve;
    let mut config = ServerConfig {
        listen: s.listen,
        public_url: s.public_url,
        allowed_hosts: names(&s.allowed_hosts, str::to_ascii_lowercase),
        metrics_listen: Some(s.metrics_listen.clone()).filter(|m| m != "off" && !m.is_empty()),
        www_dir: Some(s.www),
        pkg_dir: Some(s.pkg),
        redis_url: s.redis,
        redis_prefix: s.redis_prefix,
        node_id: s.node_id,
        tls_cert: s.tls_cert,
        tls_key: s.tls_key,
        no_firehose: names(&s.no_firehose, str::to_string),
        ..ServerConfig::default()
    };
    for app in s.apps.iter().filter(|a| !a.trim().is_empty()) {
        if let Err(e) = config.add_app(app) {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
    for l in s.limits.iter().filter(|a| !a.trim().is_empty()) {
        if let Err(e) = config.set_limit(l) {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
    config.memory_gauge = Some(std::sync::Arc::new(|| ALLOCATOR.allocated()));
    let memory_given = s
        .limits
        .iter()
        .any(|l| l.trim().starts_with("memory_max_bytes"));
    if !memory_given {
        if let Some(bytes) = opensig_server::config::machine_memory() {
            config.limits.memory_max_bytes = bytes / 4 * 3;
        }
    }
    if config.limits.memory_max_bytes > 0 {
        tracing::info!(
            "memory cap: {} MiB (limit memory_max_bytes)",
            config.limits.memory_max_bytes >> 20
        );
    }
    let mut mode = if config.development_mode() {
        "development mode: any app id, no token check".to_string()
    } else {
        format!("{} app(s) configured", config.apps.len())
    };
    mode.push_str(match config.redis_url {
        Some(_) => ", cluster node (redis)",
        None => ", in memory",
    });
    let running = match opensig_server::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            std::process::exit(1);
        }
    };
    tracing::info!(
        "opensig-server listening on {} ({mode})",
        running.http_url()
    );
    println!(
        "opensig-server: WebSocket {}  demo {}/",
        running.ws_url(),
        running.http_url()
    );
    if let Some(m) = running.metrics_addr {
        tracing::info!("metrics on http://{m}/metrics");
    }
    shutdown_signal().await;
    tracing::info!("shutting down: closing every session");
    running.shutdown().await;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
