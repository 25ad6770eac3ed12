//! Issue 7's guarantees other than the hostile-client catalogue (`hostile.rs`): slow consumers
//! are cut off without hurting anyone else, node limits answer with clear reasons, apps are
//! isolated (and their firehose channels can be turned off), secrets stay out of logs, TLS.
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use opensig_protocol::client::Event;
use opensig_protocol::names::{close, login_error};
use opensig_protocol::token;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

// ------------------------------------------------ live-byte accounting (peak since a reset)

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size() as isize, Ordering::Relaxed) + l.size() as isize;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ------------------------------------------------------------------ captured logs

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of the server and protocol crates at TRACE level, from the first call on.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let c = Captured::default();
        let w = c.clone();
        tracing_subscriber::fmt()
            .with_env_filter("opensig_server=trace,opensig_protocol=trace")
            .with_ansi(false)
            .with_writer(move || w.clone())
            .init();
        c
    })
}

async fn login_raw(url: &str, app: &str, account: &str) -> Raw {
    let mut r = Raw::connect(url).await;
    let ret = r.login(app, account, "").await;
    assert_eq!(ret[1][0], "", "{account}@{app} logs in: {ret}");
    r
}

// ------------------------------------------------------------------ slow consumers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_nobody_else_notices() {
    let srv = server_with(|c| {
        c.limits.outbound_queue = 64;
        c.limits.channel_messages_per_second = 0;
        c.limits.user_messages_per_second = 0;
    })
    .await;
    let url = srv.ws_url();
    // the slow one joins the flooded channel, then never reads again
    let mut slow = login_raw(&url, APP, "slow").await;
    let (err, _) = slow.call("channel_join", 1, json!({"name": "flood"})).await;
    assert_eq!(err, "");

    // the flooder writes and reads on separate halves (it receives its own messages back)
    let mut flooder = login_raw(&url, APP, "flooder").await;
    let (err, _) = flooder
        .call("channel_join", 1, json!({"name": "flood"}))
        .await;
    assert_eq!(err, "");
    let line = flooder.line.clone();
    let (mut tx, mut rx) = flooder.ws.split();
    let drain = tokio::spawn(async move {
        let mut errors = std::collections::BTreeMap::<String, usize>::new();
        while let Some(Ok(m)) = rx.next().await {
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                let frames = if v[0] == "multi" {
                    v[1].as_array().unwrap().clone()
                } else {
                    vec![v]
                };
                for f in frames {
                    let key = if f[0] == "call2-ret" {
                        f[1][1].to_string()
                    } else {
                        f[0].to_string()
                    };
                    *errors.entry(key).or_default() += 1;
                }
            }
        }
        errors
    });

    // bystanders exchange p2p messages through all of it
    let mut a = User::login(&url, "by_a").await;
    let mut b = User::login(&url, "by_b").await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bystanders = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let text = format!("hello {n}");
                let t0 = Instant::now();
                a.send("by_b", &text).await.expect("bystander send");
                b.expect(|e| matches!(e, Event::MessageInstant { msg, .. } if *msg == text))
                    .await;
                worst = worst.max(t0.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (n, worst)
        })
    };

    let chunk = "z".repeat(8000); // the largest channel message
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut sent = 0usize;
    let t0 = Instant::now();
    while srv.stats().slow_consumers.load(Ordering::Relaxed) == 0 {
        if sent == 20_000 {
            drop(tx);
            panic!(
                "160 MB sent and the reader was never cut off; replies: {:?}",
                drain.await
            );
        }
        let frame = json!(["call2", ["channel_sendmsg", 10 + sent, {"line": line, "name": "flood", "msg": chunk}]]);
        tx.send(Message::text(frame.to_string())).await.unwrap();
        sent += 1;
    }
    let peak = PEAK.load(Ordering::Relaxed) - base;
    eprintln!(
        "slow consumer cut off after {sent} frames ({} MiB) in {:?}; peak live growth {} KiB",
        (sent * chunk.len()) >> 20,
        t0.elapsed(),
        peak / 1024
    );
    // memory stays bounded: the queue (64 frames, shared with the flooder's copy) plus buffers,
    // not everything that was sent
    assert!(
        (peak as usize) < 8 << 20,
        "peak growth {} KiB while {} MiB were sent",
        peak / 1024,
        (sent * chunk.len()) >> 20
    );

    // the slow reader finds, after what the kernel had buffered, the end of its connection
    // (a stuck write means no farewell frame can be sent)
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ended = false;
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), slow.ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => {
                let (code, reason) = close::SLOW_CONSUMER;
                let f = f.map(|f| (u16::from(f.code), f.reason.to_string()));
                assert_eq!(f, Some((code, reason.to_string())));
                ended = true;
                break;
            }
            Ok(Some(Ok(_))) => continue,
            Ok(None) | Ok(Some(Err(_))) => {
                ended = true;
                break;
            }
            Err(_) => break,
        }
    }
    assert!(ended, "the slow consumer's connection was closed");
    // and its session is gone: the others see it offline
    let mut probe = login_raw(&url, APP, "probe").await;
    let (_, st) = probe
        .call("user_query_user_status", 1, json!({"account": "slow"}))
        .await;
    assert_eq!(st["status"], 0, "the slow consumer went offline");

    stop.store(true, Ordering::Relaxed);
    let (n, worst) = bystanders.await.unwrap();
    eprintln!("bystanders: {n} round trips, worst {worst:?}");
    assert!(n >= 2, "bystanders kept talking");
    // a stalled reader never blocks anyone: no round trip waits on the flood
    assert!(
        worst < Duration::from_secs(1),
        "worst bystander round trip {worst:?}"
    );
    drop(tx);
    drain.abort();
}

// ------------------------------------------------------------------ node limits

#[tokio::test]
async fn a_full_node_says_so_and_frees_places_when_people_leave() {
    let srv = server_with(|c| c.limits.max_sessions = 3).await;
    let url = srv.ws_url();
    let mut first = login_raw(&url, APP, "s1").await;
    let _s2 = login_raw(&url, APP, "s2").await;
    let _s3 = login_raw(&url, APP, "s3").await;
    let mut r = Raw::connect(&url).await;
    let ret = r.login(APP, "s4", "").await;
    assert_eq!(ret[1][0], login_error::SERVER_BUSY);
    let (code, reason) = close::SERVER_BUSY;
    assert_eq!(r.close_frame().await, Some((code, reason.to_string())));
    // the same account logging in again replaces its session: not a new place
    let mut again = Raw::connect(&url).await;
    assert_eq!(again.login(APP, "s1", "").await[1][0], "");
    assert_eq!(first.recv_flat().await, Some(json!(["kick", ""])));
    // someone leaves: there is room again
    let (err, _) = again.call("user_logout", 1, json!({})).await;
    assert_eq!(err, "");
    let deadline = Instant::now() + WAIT;
    loop {
        let mut r = Raw::connect(&url).await;
        if r.login(APP, "s5", "").await[1][0] == "" {
            break;
        }
        assert!(Instant::now() < deadline, "no room after a logout");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Past `memory_max_bytes` (here a gauge the test sets), the server takes no new session and
/// no new stored state; what is delivered at once still is, existing sessions keep working
/// and releasing state, and once memory is back under the cap everything is taken again.
#[tokio::test]
async fn past_the_memory_cap_new_sessions_and_stored_state_are_refused() {
    let used = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gauge = used.clone();
    let srv = server_with(move |c| {
        c.limits.memory_max_bytes = 1 << 30;
        c.memory_gauge = Some(Arc::new(move || gauge.load(Ordering::Relaxed)));
    })
    .await;
    let url = srv.ws_url();
    let mut ann = User::login(&url, "ann").await;
    let mut bob = User::login(&url, "bob").await;
    ann.join("room").await;
    used.store(1 << 30, Ordering::Relaxed);

    let mut r = Raw::connect(&url).await;
    assert_eq!(
        r.login(APP, "cat", "").await[1][0],
        login_error::SERVER_BUSY
    );
    let (code, reason) = close::SERVER_BUSY;
    assert_eq!(r.close_frame().await, Some((code, reason.to_string())));
    let busy = Err("server_busy".to_string());
    assert_eq!(
        ann.send("dan", "kept for later").await,
        busy,
        "offline mail"
    );
    let set = json!({"name": "k", "value": "v"});
    assert_eq!(ann.invoke("user_set_attr", set).await, busy);
    let set = json!({"channel": "room", "name": "k", "value": "v"});
    assert_eq!(ann.invoke("channel_set_attr", set).await, busy);
    // delivered at once: still served
    assert!(ann.send("bob", "hello").await.is_ok());
    let got = bob
        .expect(|e| matches!(e, Event::MessageInstant { .. }))
        .await;
    assert!(format!("{got:?}").contains("hello"), "{got:?}");
    assert!(ann.channel_send("room", "still here").await.is_ok());
    let del = json!({"channel": "room", "name": "k"});
    assert!(ann.invoke("channel_del_attr", del).await.is_ok());

    used.store((1 << 30) - 1, Ordering::Relaxed);
    assert!(ann.send("dan", "kept for later").await.is_ok());
    let mut r = Raw::connect(&url).await;
    assert_eq!(r.login(APP, "cat", "").await[1][0], "");
}

#[tokio::test]
async fn login_timeout_closes_connections_that_never_log_in() {
    let srv = server_with(|c| c.limits.login_timeout_secs = 1).await;
    let mut r = Raw::connect(&srv.ws_url()).await;
    let t0 = Instant::now();
    assert_eq!(r.recv_flat().await, Some(json!(["close", ""])));
    let (code, reason) = close::TIMEOUT;
    assert_eq!(r.close_frame().await, Some((code, reason.to_string())));
    assert!(t0.elapsed() >= Duration::from_millis(900));
}

// ------------------------------------------------------------------ isolation

#[tokio::test]
async fn one_app_never_sees_into_another() {
    let srv = server_with(|c| {
        c.add_app("app-a").unwrap();
        c.add_app("app-b").unwrap();
    })
    .await;
    let url = srv.ws_url();
    let mut a = login_raw(&url, "app-a", "alice").await;
    let mut a_watch = login_raw(&url, "app-a", "watcher").await;
    for (i, ch) in ["__agora_user_online", "__agora_channel_event"]
        .into_iter()
        .enumerate()
    {
        let (err, _) = a_watch
            .call("channel_join", 1 + i as u64, json!({"name": ch}))
            .await;
        assert_eq!(err, "");
    }
    // the same account and channel names in app B
    let mut b = login_raw(&url, "app-b", "bob").await;
    let mut b_alice = login_raw(&url, "app-b", "alice").await;
    let (err, body) = b.call("channel_join", 1, json!({"name": "room"})).await;
    assert_eq!(err, "", "{body}");
    let (err, _) = b
        .call(
            "channel_set_attr",
            2,
            json!({"channel": "room", "name": "secret", "value": "b-only"}),
        )
        .await;
    assert_eq!(err, "");
    let (err, _) = b
        .call("user_set_attr", 3, json!({"name": "pin", "value": "1234"}))
        .await;
    assert_eq!(err, "");

    // queries from A see nothing of B
    let (_, st) = a
        .call("user_query_user_status", 10, json!({"account": "bob"}))
        .await;
    assert_eq!(st["status"], 0, "bob is not online in app A");
    let (_, n) = a
        .call("channel_query_num", 11, json!({"name": "room"}))
        .await;
    assert_eq!(n["num"], 0);
    let (_, isin) = a
        .call(
            "channel_query_user_isin",
            12,
            json!({"name": "room", "account": "bob"}),
        )
        .await;
    assert_eq!(isin["isin"], 0, "{isin}");
    let (_, list) = a
        .call("channel_query_userlist", 13, json!({"name": "room"}))
        .await;
    assert_eq!(list["list"], json!([]), "{list}");
    let (_, attr) = a
        .call("user_get_attr_all", 14, json!({"account": "bob"}))
        .await;
    assert!(!attr.to_string().contains("1234"), "{attr}");

    // joining the same name in A is a different channel: no B members, no B attributes
    let (err, join) = a.call("channel_join", 20, json!({"name": "room"})).await;
    assert_eq!(err, "");
    assert!(
        !join.to_string().contains("bob") && !join.to_string().contains("b-only"),
        "{join}"
    );
    // messages from A to "bob" and to "room" never reach app B
    let (err, _) = a
        .call(
            "user_sendmsg",
            21,
            json!({"peer": "bob", "content": "psst"}),
        )
        .await;
    assert_eq!(err, "");
    let (err, _) = a
        .call(
            "channel_sendmsg",
            22,
            json!({"name": "room", "msg": "to room A"}),
        )
        .await;
    assert_eq!(err, "");
    // an invite from A to "alice" never rings app B's alice
    let (err, _) = a
        .call(
            "voip_invite",
            23,
            json!({"peer": "watcher", "channelName": "call", "extra": "{}"}),
        )
        .await;
    assert_eq!(err, "");
    // B's people see nothing of any of it, and A's firehose saw nothing of B
    for r in [&mut b, &mut b_alice] {
        while let Some(f) = r.recv_within(Duration::from_millis(400)).await {
            let t = f.to_string();
            assert!(
                !t.contains("psst") && !t.contains("to room A") && !t.contains("call"),
                "app B got {t}"
            );
        }
    }
    while let Some(f) = a_watch.recv_within(Duration::from_millis(400)).await {
        let t = f.to_string();
        assert!(
            !t.contains("bob") && !t.contains("b-only"),
            "app A's firehose got {t}"
        );
    }
}

#[tokio::test]
async fn firehose_channels_can_be_turned_off_per_app() {
    let srv = server_with(|c| {
        c.add_app("open-app").unwrap();
        c.add_app("quiet-app").unwrap();
        c.no_firehose.insert("quiet-app".into());
    })
    .await;
    let url = srv.ws_url();
    let mut open = login_raw(&url, "open-app", "u").await;
    let mut quiet = login_raw(&url, "quiet-app", "u").await;
    for (i, ch) in ["__agora_user_online", "__agora_channel_event"]
        .into_iter()
        .enumerate()
    {
        let (err, _) = open
            .call("channel_join", 1 + i as u64, json!({"name": ch}))
            .await;
        assert_eq!(err, "", "{ch} in open-app");
        let (err, _) = quiet
            .call("channel_join", 1 + i as u64, json!({"name": ch}))
            .await;
        assert_eq!(err, "reserved_channel", "{ch} in quiet-app");
    }
    // ordinary channels still work in the quiet app
    let (err, _) = quiet
        .call("channel_join", 3, json!({"name": "lobby"}))
        .await;
    assert_eq!(err, "");
}

// ------------------------------------------------------------------ secrets

#[tokio::test]
async fn certificates_and_tokens_never_reach_the_logs() {
    let logs = logs();
    const APP_S: &str = SECURE;
    let srv = server_with(|c| {
        c.add_app(&format!("{APP_S}:{CERT}")).unwrap();
    })
    .await;
    let url = srv.ws_url();
    let good = token::sign(APP_S, CERT, "carol", now_secs() + 3600);
    let wrong = token::sign(APP_S, CERT, "someone-else", now_secs() + 3600);
    let expired = token::sign(APP_S, CERT, "carol", now_secs() - 5);
    let mut r = Raw::connect(&url).await;
    assert_eq!(r.login(APP_S, "carol", &good).await[1][0], "");
    for (t, want) in [
        (&wrong, login_error::TOKEN_INVALID),
        (&expired, login_error::TOKEN_EXPIRED),
    ] {
        let mut r = Raw::connect(&url).await;
        let ret = r.login(APP_S, "carol", t).await;
        assert_eq!(ret[1][0], want);
        assert!(!ret.to_string().contains(CERT), "certificate echoed: {ret}");
    }
    let (err, _) = r
        .call("user_sendmsg", 1, json!({"peer": "x", "content": "hi"}))
        .await;
    assert_eq!(err, "");
    drop(r);
    // every session's end processed (and logged)
    let store = &srv;
    wait_for("all sessions ended", || async {
        store.local_sessions() == 0
    })
    .await;

    // the configuration prints without its secrets
    let mut config = (*srv.config()).clone();
    config.redis_url = Some("redis://:hunter2-password@127.0.0.1:6379/".into());
    let shown = format!("{config:?}");
    assert!(shown.contains(APP_S), "{shown}");
    assert!(
        !shown.contains(CERT) && !shown.contains("hunter2"),
        "{shown}"
    );
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(logged.contains("login refused"), "the refusals are logged");
    for secret in [
        CERT,
        &good[good.len() - 32..],
        &wrong[wrong.len() - 32..],
        &expired[expired.len() - 32..],
    ] {
        assert!(!logged.contains(secret), "{secret} appears in the log");
    }
}

// ------------------------------------------------------------------ TLS

#[tokio::test]
async fn tls_serves_wss_and_https() {
    use tokio_rustls::rustls::{self, pki_types::ServerName, RootCertStore};
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "opensig-tls-{}",
        unique_prefix().trim_end_matches(':')
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    let srv = server_with(|c| {
        c.tls_cert = Some(cert_path.clone());
        c.tls_key = Some(key_path.clone());
    })
    .await;
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(srv.ws_url().starts_with("wss://"), "{}", srv.ws_url());
    assert!(srv.http_url().starts_with("https://"), "{}", srv.http_url());

    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(srv.addr()).await.unwrap();
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake with the server's certificate")
    };

    // https: /healthz
    let mut s = connect().await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await; // (a close without close_notify is fine here)
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    // wss: a whole login and a message round trip
    let port = srv.addr().port();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{port}/"), connect().await)
            .await
            .expect("WebSocket over TLS");
    ws.send(Message::text(json!(["login", {"vid": APP, "account": "tls-user", "uid": 0, "token": "", "device": "websdk"}]).to_string()))
        .await
        .unwrap();
    let ret: Value = loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) => break serde_json::from_str(&t).unwrap(),
            _ => continue,
        }
    };
    assert_eq!(ret[0], "login_ret");
    assert_eq!(ret[1][0], "", "{ret}");

    // a plain-text client gets nothing but a closed connection
    let mut plain = tokio::net::TcpStream::connect(srv.addr()).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, plain.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
}

/// A renewed certificate (the same files, new contents) is read again by a reload: new
/// connections get it, a session over the old one goes on.
#[tokio::test]
async fn a_reload_reads_the_tls_certificate_again() {
    use tokio_rustls::rustls::{self, pki_types::ServerName, RootCertStore};
    let make = || rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (first, second) = (make(), make());
    let dir = std::env::temp_dir().join(format!(
        "opensig-tls-reload-{}",
        unique_prefix().trim_end_matches(':')
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    let install = |k: &rcgen::CertifiedKey| {
        std::fs::write(&cert_path, k.cert.pem()).unwrap();
        std::fs::write(&key_path, k.key_pair.serialize_pem()).unwrap();
    };
    install(&first);
    let srv = server_with(|c| {
        c.tls_cert = Some(cert_path.clone());
        c.tls_key = Some(key_path.clone());
    })
    .await;
    // a client that trusts only `k`'s certificate
    let handshake = |k: &rcgen::CertifiedKey| {
        let mut roots = RootCertStore::empty();
        roots.add(k.cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let addr = srv.addr();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
        }
    };
    let port = srv.addr().port();
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!("wss://localhost:{port}/"),
        handshake(&first).await.unwrap(),
    )
    .await
    .unwrap();
    ws.send(Message::text(json!(["login", {"vid": APP, "account": "tls-user", "uid": 0, "token": "", "device": "websdk"}]).to_string()))
        .await
        .unwrap();
    assert!(ws.next().await.unwrap().is_ok());

    install(&second);
    let r = srv.reload((*srv.config()).clone()).unwrap();
    assert!(r.tls_reloaded && r.need_restart.is_empty(), "{r:?}");
    assert!(
        handshake(&second).await.is_ok(),
        "new connections: the new certificate"
    );
    assert!(
        handshake(&first).await.is_err(),
        "the old one is no longer served"
    );
    // a missing key: the reload is refused and the certificate in force stays
    std::fs::remove_file(&key_path).unwrap();
    assert!(srv.reload((*srv.config()).clone()).is_err());
    assert!(handshake(&second).await.is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
    // the session that started before the reload goes on
    ws.send(Message::text(json!(["ping", 7]).to_string()))
        .await
        .unwrap();
    let pong = loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) if t.contains("pong") => break t,
            _ => continue,
        }
    };
    assert!(pong.contains("pong"));
}
