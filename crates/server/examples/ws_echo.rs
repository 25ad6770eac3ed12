//! A WebSocket echo server on the server's own accept loop and WebSocket settings, for the
//! Autobahn conformance cases (`scripts/autobahn`). Never part of a normal start.
//!
//! `cargo run --example ws_echo -- 127.0.0.1:9001`
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let mut config = opensig_server::ServerConfig {
        listen,
        ..opensig_server::ServerConfig::default()
    };
    // the Autobahn cases send messages up to 16 MiB (section 9); everything else as `/`
    config.limits.max_frame_bytes = 16 << 20;
    let (addr, _stop) = opensig_server::start_echo(config)
        .await
        .expect("echo server starts");
    println!("ws_echo listening on ws://{addr}/");
    tokio::signal::ctrl_c().await.ok();
}
