//! Operation sequences against a real server connection handler: one in-process
//! opensig-server (memory store) on loopback, and per input up to three WebSocket clients
//! doing logins, call2s of every name with fuzzed arguments, raw text, binary (zlib or not),
//! set_flag, pings and abrupt closes. A panic anywhere in the server aborts the process (the
//! fuzzer reports it). After each input every client is gone, and the server must be back to
//! no sessions and no channel members, and still serve a fresh login with a ping.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use futures_util::{SinkExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use opensig_fuzz::Args;
use opensig_protocol::names::call;
use opensig_protocol::zlib;
use opensig_server::store::memory::Memory;
use opensig_server::store::Store;
use opensig_server::{ServerConfig, Shared};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Arbitrary, Debug)]
enum Op {
    Connect,
    Login {
        c: u8,
        account: u8,
        app: u8,
    },
    Call {
        c: u8,
        name: u8,
        id: u16,
        args: Args,
        use_line: bool,
    },
    Raw {
        c: u8,
        text: String,
    },
    Binary {
        c: u8,
        bytes: Vec<u8>,
        compress: bool,
    },
    Flag {
        c: u8,
        binary: bool,
    },
    Ping {
        c: u8,
    },
    Close {
        c: u8,
    },
}

const ACCOUNTS: &[&str] = &["alice", "bob", "carol", "", "a b", "__x"];
const APPS: &[&str] = &["app1", "app2", ""];

struct Harness {
    rt: Runtime,
    shared: Arc<Shared<Memory>>,
    url: String,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        // a panic in any server task is a finding, not something tokio may swallow
        std::panic::set_hook(Box::new(|info| {
            eprintln!("{info}");
            std::process::abort();
        }));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let srv = rt.block_on(async {
            let mut c = ServerConfig {
                listen: "127.0.0.1:0".into(),
                ..ServerConfig::default()
            };
            c.limits.login_timeout_secs = 2;
            c.limits.connections_per_ip = 0;
            c.limits.logins_per_ip_per_second = 0;
            let store = Memory::new(&c.limits);
            opensig_server::start_with(c, store, "fuzz".into())
                .await
                .expect("server starts")
        });
        let (shared, url) = (srv.shared.clone(), srv.ws_url());
        // the server lives as long as the fuzzing process
        std::mem::forget(srv);
        Harness { rt, shared, url }
    })
}

struct Client {
    ws: Ws,
    line: String,
}

/// Read whatever is ready (briefly), remembering the session line of a successful login.
async fn drain(c: &mut Client) {
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(3), c.ws.next()).await {
        if let Message::Text(t) = m {
            if let Ok(v) = serde_json::from_str::<Value>(&t) {
                if v[0] == "login_ret" && v[1][0] == "" {
                    if let Ok(body) = serde_json::from_str::<Value>(v[1][1].as_str().unwrap_or(""))
                    {
                        c.line = body["line"].as_str().unwrap_or_default().to_string();
                    }
                }
            }
        }
    }
}

async fn run(ops: Vec<Op>, url: &str) {
    let mut clients: Vec<Client> = vec![];
    for op in ops.into_iter().take(64) {
        let n = clients.len().max(1);
        let msg = match op {
            Op::Connect => {
                if clients.len() < 3 {
                    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
                    clients.push(Client { ws, line: String::new() });
                }
                continue;
            }
            Op::Login { c, account, app } => (c, Message::text(json!(["login", {
                "vid": APPS[app as usize % APPS.len()], "account": ACCOUNTS[account as usize % ACCOUNTS.len()],
                "uid": 0, "token": "", "device": "websdk"}]).to_string())),
            Op::Call { c, name, id, mut args, use_line } => {
                if use_line {
                    if let Some(cl) = clients.get(c as usize % n) {
                        args.0.insert("line".into(), Value::String(cl.line.clone()));
                    }
                }
                let name = call::ALL.get(name as usize).copied().unwrap_or("no_such_call");
                (c, Message::text(json!(["call2", [name, id, Value::Object(args.0)]]).to_string()))
            }
            Op::Raw { c, text } => (c, Message::text(text)),
            Op::Binary { c, bytes, compress } => {
                let b = if compress { zlib::compress(&String::from_utf8_lossy(&bytes)) } else { bytes };
                (c, Message::binary(b))
            }
            Op::Flag { c, binary } => (c, Message::text(json!(["set_flag", {"binary": binary as u8}]).to_string())),
            Op::Ping { c } => (c, Message::text(json!(["ping", c]).to_string())),
            Op::Close { c } => {
                if !clients.is_empty() {
                    drop(clients.remove(c as usize % n));
                }
                continue;
            }
        };
        let Some(cl) = clients.get_mut(msg.0 as usize % n) else {
            continue;
        };
        if cl.ws.send(msg.1).await.is_err() {
            clients.remove(msg.0 as usize % n);
            continue;
        }
        drain(cl).await;
    }
    drop(clients);
}

/// Every session and membership of the input is gone, and a newcomer is served.
async fn check(shared: &Shared<Memory>, url: &str) {
    let store = shared.store();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let fp = store.footprint().await.expect("the memory store always answers");
        if fp.sessions == 0 && fp.members == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "left behind: {fp:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("a newcomer connects");
    ws.send(Message::text(json!(["login", {"vid": "app1", "account": "probe", "uid": 0, "token": "", "device": "websdk"}]).to_string())).await.unwrap();
    ws.send(Message::text(r#"["ping","probe"]"#)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if m.to_text()
                .is_ok_and(|t| t.contains("pong") && t.contains("probe"))
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(got, Ok(true), "the server stopped answering");
    drop(ws);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.footprint().await.expect("answers").sessions != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the probe's session stayed"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let h = harness();
    h.rt.block_on(async {
        run(ops, &h.url).await;
        check(&h.shared, &h.url).await;
    });
});
