//! The configuration file and SIGHUP, on the server binary: a file others can read is refused,
//! a certificate on the command line is warned about, and a reload under load changes apps,
//! certificates and limits without dropping a session or a message.
mod common;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use opensig_protocol::client::Event;
use opensig_protocol::codes::Code;
use opensig_protocol::token;

const CERT2: &str = "0123456789abcdef0123456789abcdef";
const MESSAGES: usize = 2_000;

/// A folder of its own for a test's files, removed afterwards.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("opensig-{name}-{}", unique_prefix()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    /// Write `file` with `mode` (replaced whole, as an editor saving it would).
    fn write(&self, file: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.0.join(file);
        let tmp = self.0.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server binary, its WebSocket URL, and its log lines as they come.
struct Server {
    child: Child,
    url: String,
    log: mpsc::Receiver<String>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_opensig-server"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
            .args(["--www", "/nonexistent"])
            .args(args)
            .env("OPENSIG_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start opensig-server");
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(url) = line.split_whitespace().find(|w| w.starts_with("ws://")) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no URL in {line:?}");
        };
        let url = url.to_string();
        Server { child, url, log }
    }

    /// The first log line containing `text` (within WAIT).
    fn log_line(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(l) if l.contains(text) => return l,
                Ok(_) => {}
                Err(_) => panic!("no log line with {text:?} within {WAIT:?}"),
            }
        }
    }

    fn hangup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_file(secure_cert: &str, other_app: bool, attr_max: usize) -> String {
    let other = if other_app { "other = \"\"\n" } else { "" };
    format!(
        "# test configuration\n[apps]\n\"{SECURE}\" = \"{secure_cert}\"\n{other}\n\
         [limits]\nuser_messages_per_second = 100000\nattr_value_max_bytes = {attr_max}\n"
    )
}

/// Set a user attribute of `len` bytes.
async fn set_attr(u: &mut User, len: usize) -> Result<serde_json::Value, String> {
    u.invoke(
        "user_set_attr",
        serde_json::json!({"name": "bio", "value": "x".repeat(len)}),
    )
    .await
}

/// How a login of `account` to `app` with `tok` ends.
async fn login_outcome(url: &str, app: &str, account: &str, tok: &str) -> Code {
    let mut c = config(url, account, tok);
    c.app_id = app.into();
    let mut u = User::start(c);
    match u
        .expect(|e| matches!(e, Event::LoginSuccess { .. } | Event::LoginFailed { .. }))
        .await
    {
        Event::LoginSuccess { .. } => Code::Success,
        Event::LoginFailed { code } => code,
        _ => unreachable!(),
    }
}

async fn login(url: &str, app: &str, account: &str, tok: &str) -> User {
    let mut c = config(url, account, tok);
    c.app_id = app.into();
    User::login_with(c).await
}

#[test]
fn a_config_file_others_can_read_is_refused() {
    let dir = Dir::new("exposed");
    for mode in [0o644, 0o604, 0o660, 0o666] {
        let p = dir.write("opensig.toml", &config_file(CERT, true, 1000), mode);
        let out = Command::new(env!("CARGO_BIN_EXE_opensig-server"))
            .args(["--config", p.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "mode {mode:o}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("chmod 600"), "mode {mode:o}: {err}");
        assert!(!err.contains(CERT), "the certificate is not printed: {err}");
    }
    // an unknown key is refused with its name, not ignored
    let p = dir.write(
        "typo.toml",
        "[limits]\nuser_mesages_per_second = 5\n",
        0o600,
    );
    let out = Command::new(env!("CARGO_BIN_EXE_opensig-server"))
        .args(["--config", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("user_mesages_per_second"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_on_the_command_line_is_warned_about() {
    let srv = Server::start(&["--app", &format!("{SECURE}:{CERT}")]);
    let warning = srv.log_line("WARN");
    assert!(warning.contains("process list"), "{warning}");
    assert!(!warning.contains(CERT), "{warning}");
    // an app without a certificate on the command line is no secret: no warning
    let quiet = Server::start(&["--app", "open"]);
    quiet.log_line("listening on");
    assert!(quiet.log.try_iter().all(|l| !l.contains("process list")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_apps_certificates_and_limits_under_load() {
    let dir = Dir::new("reload");
    let file = dir.write("opensig.toml", &config_file(CERT, true, 1000), 0o600);
    let srv = Server::start(&["--config", file.to_str().unwrap()]);
    let url = srv.url.clone();
    let old_token = |a: &str| token::sign(SECURE, CERT, a, now_secs() + 600);
    let new_token = |a: &str| token::sign(SECURE, CERT2, a, now_secs() + 600);

    let mut alice = login(&url, SECURE, "alice", &old_token("alice")).await;
    let mut bob = login(&url, SECURE, "bob", &old_token("bob")).await;
    let mut carol = login(&url, "other", "carol", "").await;
    set_attr(&mut carol, 500)
        .await
        .expect("500 bytes are within 1000");

    // alice streams acknowledged messages to bob while the configuration changes
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let sender = tokio::spawn(async move {
        for i in 0..MESSAGES {
            alice
                .send("bob", &format!("m{i}"))
                .await
                .expect("acknowledged");
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        alice
    });
    let receiver = tokio::spawn(async move {
        let mut got: HashMap<String, usize> = HashMap::new();
        while got.values().sum::<usize>() < MESSAGES {
            if let Event::MessageInstant { msg, .. } = bob
                .expect_within(Duration::from_secs(30), |e| {
                    matches!(e, Event::MessageInstant { .. })
                })
                .await
            {
                *got.entry(msg.as_str().unwrap_or_default().to_string())
                    .or_default() += 1;
            }
        }
        (bob, got)
    });
    wait_for("a quarter of the stream sent", || {
        let sent = sent.clone();
        async move { sent.load(std::sync::atomic::Ordering::Relaxed) >= MESSAGES / 4 }
    })
    .await;

    // a broken file changes nothing
    dir.write("opensig.toml", "[apps\n", 0o600);
    srv.hangup();
    let refused = srv.log_line("reload refused");
    assert!(refused.contains("opensig.toml"), "{refused}");

    // new certificate, "other" removed, a new limit
    dir.write("opensig.toml", &config_file(CERT2, false, 100), 0o600);
    srv.hangup();
    let done = srv.log_line("configuration reloaded");
    assert!(done.contains("sessions_ended=1"), "{done}");
    assert!(done.contains("\"other\""), "{done}");
    assert!(!done.contains(CERT2) && !done.contains(CERT), "{done}");

    // the removed app's session ends with onLogout(103) and it cannot log in again
    carol
        .expect(|e| {
            *e == Event::Logout {
                code: Code::LogoutKicked,
            }
        })
        .await;
    assert_eq!(
        login_outcome(&url, "other", "carol", "").await,
        Code::LoginTokenWrong
    );
    // the changed certificate applies to new logins; sessions in progress go on
    assert_eq!(
        login_outcome(&url, SECURE, "dave", &old_token("dave")).await,
        Code::LoginTokenWrong
    );
    let mut dave = login(&url, SECURE, "dave", &new_token("dave")).await;
    // the new limit is in force
    assert!(
        set_attr(&mut dave, 500).await.is_err(),
        "500 bytes are past 100"
    );
    set_attr(&mut dave, 100).await.unwrap();

    let mut alice = sender.await.unwrap();
    let (mut bob, got) = receiver.await.unwrap();
    assert_eq!(got.len(), MESSAGES, "every message arrived");
    assert!(got.values().all(|n| *n == 1), "none twice");
    // alice and bob were never logged out
    for u in [&mut alice, &mut bob] {
        assert!(
            u.backlog
                .iter()
                .all(|e| !matches!(e, Event::Logout { .. } | Event::Reconnecting { .. })),
            "{}: {:?}",
            u.name,
            u.backlog
        );
    }
    bob.send("alice", "after the reload").await.unwrap();
    alice
        .expect(|e| matches!(e, Event::MessageInstant { msg, .. } if msg == "after the reload"))
        .await;
    assert!(done.contains("attr_value_max_bytes"), "{done}");
}
