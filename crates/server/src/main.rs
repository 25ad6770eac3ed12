//! `opensig-server`: run the server, or print a SignalingToken.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use opensig_server::config::{ConfigError, FileConfig};
use opensig_server::{Server, ServerConfig};

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
    /// Make a backend API key: prints the key (once: only its hash is kept) and the
    /// `[[api_keys]]` entry for the configuration file.
    ApiKey(ApiKeyArgs),
    /// Make an operator of the console: reads the password from standard input (one line)
    /// and prints the `[[operators]]` entry with its Argon2id hash.
    Operator(OperatorArgs),
}

#[derive(Args)]
struct OperatorArgs {
    /// The name the operator signs in with.
    #[arg(long)]
    name: String,
    /// Looks, never acts.
    #[arg(long)]
    read_only: bool,
}

#[derive(Args)]
struct ApiKeyArgs {
    /// The app whose API it opens.
    #[arg(long)]
    app: String,
    /// Its name (a-z, 0-9, -): logs show it, and the key starts with it.
    #[arg(long)]
    name: String,
    /// Only reads (GET).
    #[arg(long)]
    read_only: bool,
}

#[derive(Args)]
struct Serve {
    /// A TOML file with apps and their certificates, limits, Redis, TLS (see
    /// docs/opensig.example.toml); read again on SIGHUP. Other users must not be able to read
    /// it. Options given here or in the environment override it.
    #[arg(long, env = "OPENSIG_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "OPENSIG_LISTEN")]
    listen: Option<String>,
    /// An app: `ID` (no token needed) or `ID:CERTIFICATE` (tokens required). Repeatable.
    /// None given (here or in --config) = development mode: any app id, any token. A
    /// certificate here is visible to every local user in the process list: prefer --config.
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
    /// Where `/metrics` is served, apart from the public port (`off`: not served)
    /// [default: 127.0.0.1:9464].
    #[arg(long, env = "OPENSIG_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Override a limit: `name=value`, e.g. `user_messages_per_second=100`. Repeatable.
    #[arg(long = "limit", env = "OPENSIG_LIMITS", value_delimiter = ',')]
    limits: Vec<String>,
    /// Folder served at `/` (the demo app) [default: www].
    #[arg(long, env = "OPENSIG_WWW")]
    www: Option<PathBuf>,
    /// Folder served at `/pkg/` (the built SDK) [default: pkg].
    #[arg(long, env = "OPENSIG_PKG")]
    pkg: Option<PathBuf>,
    /// Run as a node of a cluster sharing this Redis (`redis://host:port/db`), or this Redis
    /// Cluster (`redis+cluster://host:port,host:port/`: any of its nodes).
    #[arg(long, env = "OPENSIG_REDIS")]
    redis: Option<String>,
    /// Prefix of the cluster's Redis keys (clusters sharing one Redis use different ones)
    /// [default: opensig:].
    #[arg(long, env = "OPENSIG_REDIS_PREFIX")]
    redis_prefix: Option<String>,
    /// Acknowledge a step only once this many Redis replicas hold it (Redis `WAIT`): an
    /// acknowledged message then survives the loss of a primary [default: 0, asynchronous
    /// replication].
    #[arg(long, env = "OPENSIG_REDIS_WAIT_REPLICAS")]
    redis_wait_replicas: Option<u32>,
    /// Spread each app's channels and accounts over this many hash slots of a Redis Cluster
    /// (fixed for the life of the cluster's data) [default: 1].
    #[arg(long, env = "OPENSIG_REDIS_PARTITIONS")]
    redis_partitions: Option<u32>,
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
    /// An app without a certificate whose backend HTTP API (`/api/v1/`) answers callers
    /// from any address, not only from this machine (`*`: every such app). Repeatable.
    #[arg(long = "api-open", env = "OPENSIG_API_OPEN", value_delimiter = ',')]
    api_open: Vec<String>,
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
    #[arg(long, required_unless_present = "api", conflicts_with = "api")]
    account: Option<String>,
    /// The app's backend API credential instead (the token of the account "opensig api").
    #[arg(long)]
    api: bool,
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
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let certificate_on_command_line = matches.value_source("apps")
        == Some(clap::parser::ValueSource::CommandLine)
        && cli.serve.apps.iter().any(|a| a.contains(':'));
    if let Some(Command::ApiKey(k)) = &cli.command {
        if !opensig_server::apikeys::valid_name(&k.name) {
            eprintln!("--name must be 1-64 of a-z, 0-9 and -");
            std::process::exit(2);
        }
        let (key, hash) = opensig_server::apikeys::make(&k.name);
        println!("{key}");
        eprintln!(
            "\nThe key above is shown once. Add this to the configuration file and reload \
             (SIGHUP):\n\n[[api_keys]]\napp = {:?}\nname = {:?}\nhash = {hash:?}{}\n",
            k.app,
            k.name,
            if k.read_only {
                "\nread_only = true"
            } else {
                ""
            }
        );
        return;
    }
    if let Some(Command::Operator(o)) = &cli.command {
        if o.name.is_empty() || o.name.len() > 64 || o.name.chars().any(char::is_control) {
            eprintln!("--name must be 1-64 printable characters");
            std::process::exit(2);
        }
        let mut password = String::new();
        if std::io::stdin().read_line(&mut password).is_err() {
            eprintln!("cannot read the password from standard input");
            std::process::exit(2);
        }
        let password = password.trim_end_matches(['\r', '\n']);
        if password.chars().count() < 12 {
            eprintln!("the password must be at least 12 characters");
            std::process::exit(2);
        }
        let hash = opensig_server::console::auth::hash_password(password);
        println!(
            "[[operators]]\nname = {:?}\npassword_hash = {hash:?}{}",
            o.name,
            if o.read_only {
                "\nread_only = true"
            } else {
                ""
            }
        );
        return;
    }
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
        let account = match &t.account {
            Some(a) if !t.api => a.as_str(),
            _ => opensig_protocol::names::api::ACCOUNT,
        };
        println!(
            "{}",
            opensig_protocol::token::sign(&t.app_id, &t.certificate, account, expiry)
        );
        return;
    }
    // logs on stderr; stdout carries the one line saying where the server listens
    // colours only on a terminal: a log file or journal gets plain text
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OPENSIG_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let s = cli.serve;
    if certificate_on_command_line {
        tracing::warn!(
            "an app certificate was given with --app on the command line: every local user can \
             read it in the process list; put it in a --config file (chmod 600) instead"
        );
    }
    let mut config = match build_config(&s) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    config.memory_gauge = Some(std::sync::Arc::new(|| ALLOCATOR.allocated()));
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
    mode.push_str(match config.redis_url.as_deref() {
        Some(u) if u.starts_with("redis+cluster://") => ", cluster node (redis cluster)",
        Some(_) => ", cluster node (redis)",
        None => ", in memory",
    });
    let signals = Signals::install();
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
    if let Some(m) = running.metrics_addr() {
        tracing::info!("metrics on http://{m}/metrics");
    }
    if let Some(c) = running.console_addr() {
        tracing::info!("operator console on http://{c}/console/");
        let nobody = running.config().operators.is_empty();
        let hint = if nobody {
            "  (no [[operators]] yet: `opensig-server operator --name NAME` makes one)"
        } else {
            ""
        };
        println!("opensig-server: operator console http://{c}/console/{hint}");
    }
    serve_signals(signals, &running, &s).await;
    tracing::info!("shutting down: closing every session");
    running.shutdown().await;
}

/// The configuration: defaults, then the --config file, then the command line and
/// environment; `memory_max_bytes` defaults to ¾ of the machine (or its cgroup limit).
fn build_config(s: &Serve) -> Result<ServerConfig, ConfigError> {
    let mut config = ServerConfig {
        metrics_listen: Some("127.0.0.1:9464".into()),
        www_dir: Some("www".into()),
        pkg_dir: Some("pkg".into()),
        ..ServerConfig::default()
    };
    let file = s.config.as_deref().map(FileConfig::read).transpose()?;
    if let Some(f) = &file {
        f.apply(&mut config)?;
    }
    if let Some(l) = &s.listen {
        config.listen.clone_from(l);
    }
    if s.public_url.is_some() {
        config.public_url.clone_from(&s.public_url);
    }
    if !s.allowed_hosts.is_empty() {
        config.allowed_hosts = names(&s.allowed_hosts, str::to_ascii_lowercase);
    }
    if let Some(m) = &s.metrics_listen {
        config.metrics_listen = Some(m.clone()).filter(|m| m != "off" && !m.is_empty());
    }
    if s.www.is_some() {
        config.www_dir.clone_from(&s.www);
    }
    if s.pkg.is_some() {
        config.pkg_dir.clone_from(&s.pkg);
    }
    if s.redis.is_some() {
        config.redis_url.clone_from(&s.redis);
    }
    if let Some(p) = &s.redis_prefix {
        config.redis_prefix.clone_from(p);
    }
    if let Some(n) = s.redis_wait_replicas {
        config.redis_wait_replicas = n;
    }
    if let Some(n) = s.redis_partitions {
        config.redis_partitions = n;
    }
    if s.node_id.is_some() {
        config.node_id.clone_from(&s.node_id);
    }
    if s.tls_cert.is_some() {
        config.tls_cert.clone_from(&s.tls_cert);
        config.tls_key.clone_from(&s.tls_key);
    }
    if !s.no_firehose.is_empty() {
        config.no_firehose = names(&s.no_firehose, str::to_string);
    }
    if !s.api_open.is_empty() {
        config.api_open = names(&s.api_open, str::to_string);
    }
    for app in s.apps.iter().filter(|a| !a.trim().is_empty()) {
        config.add_app(app)?;
    }
    for l in s.limits.iter().filter(|a| !a.trim().is_empty()) {
        config.set_limit(l)?;
    }
    let memory_given = s
        .limits
        .iter()
        .any(|l| l.trim().starts_with("memory_max_bytes"))
        || file
            .as_ref()
            .is_some_and(|f| f.limits.contains_key("memory_max_bytes"));
    if !memory_given {
        if let Some(bytes) = opensig_server::config::machine_memory() {
            config.limits.memory_max_bytes = bytes / 4 * 3;
        }
    }
    Ok(config)
}

/// The signals the server answers, taken over before it starts listening: a SIGHUP sent as
/// soon as it answers must reload it, not end it (the default action of an unhandled one).
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let on = |kind, name| {
                signal(kind).unwrap_or_else(|e| panic!("install the {name} handler: {e}"))
            };
            Signals {
                int: on(SignalKind::interrupt(), "SIGINT"),
                term: on(SignalKind::terminate(), "SIGTERM"),
                hup: on(SignalKind::hangup(), "SIGHUP"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }
}

/// Until SIGINT or SIGTERM: SIGHUP reloads the configuration (see [`Server::reload`]).
async fn serve_signals(mut signals: Signals, running: &Server, s: &Serve) {
    #[cfg(unix)]
    loop {
        tokio::select! {
            _ = signals.int.recv() => return,
            _ = signals.term.recv() => return,
            _ = signals.hup.recv() => reload(running, s),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (&mut signals, running, s);
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Read the configuration again and put it in force; a bad file changes nothing.
fn reload(running: &Server, s: &Serve) {
    let config = match build_config(s) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload refused, configuration unchanged: {e}");
            return;
        }
    };
    match running.reload(config) {
        Ok(r) => {
            for what in &r.need_restart {
                tracing::warn!("reload: {what} changed; it applies at the next start");
            }
            tracing::info!(
                apps_added = ?r.apps_added,
                apps_removed = ?r.apps_removed,
                certificates_changed = ?r.certificates_changed,
                limits_changed = ?r.limits_changed,
                webhooks_changed = ?r.webhooks_changed,
                sessions_ended = r.sessions_ended,
                tls_reloaded = r.tls_reloaded,
                "configuration reloaded"
            );
        }
        Err(e) => tracing::error!("reload refused, configuration unchanged: {e}"),
    }
}
