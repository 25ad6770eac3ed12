//! Login, tokens, kick, logout, keepalive and dead-connection handling.
mod common;
use std::time::Duration;

use common::*;
use opensig_protocol::client::{Event, State};
use opensig_protocol::token;
use opensig_protocol::Code;
use opensig_server::Server;
use serde_json::{json, Value};

#[tokio::test]
async fn login_reply_is_double_encoded_with_a_line_and_set_flag_ping_work() {
    let srv = server().await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    let r = raw.login(APP, "alice", "_no_need_token").await;
    assert_eq!(r[1][0], "");
    let body: Value = serde_json::from_str(r[1][1].as_str().expect("body is JSON text")).unwrap();
    assert_eq!(body["result"], "ok");
    assert_eq!(body["uid"], 0);
    let line = body["line"].as_str().unwrap();
    assert_eq!(line.len(), 32);
    assert!(line.bytes().all(|b| b.is_ascii_hexdigit()));
    raw.send(r#"["set_flag",{"binary":1}]"#).await;
    raw.send(r#"["ping",7]"#).await;
    assert_eq!(raw.recv().await.unwrap(), json!(["pong", 7]));
}

#[tokio::test]
async fn account_rule_gives_wrong_account() {
    let srv = server().await;
    for bad in ["", "has space", "tab\there", &"x".repeat(129)] {
        let mut raw = Raw::connect(&srv.ws_url()).await;
        let r = raw.login(APP, bad, "").await;
        assert_eq!(r[1][0], "wrong account format", "{bad:?}");
        assert!(raw.closed().await, "closed after a failed login");
    }
    // 128 bytes of visible characters is fine
    let mut raw = Raw::connect(&srv.ws_url()).await;
    assert_eq!(raw.login(APP, &"x".repeat(128), "").await[1][0], "");
}

#[tokio::test]
async fn tokens_are_verified_for_apps_with_a_certificate() {
    let srv = server_with(|c| {
        c.add_app(&format!("{SECURE}:{CERT}")).unwrap();
        c.add_app("open").unwrap();
    })
    .await;
    let url = srv.ws_url();
    let login = |app: &str, account: &str, tok: String| {
        let mut c = config(&url, account, &tok);
        c.app_id = app.into();
        User::start(c)
    };
    let outcome = |mut u: User| async move {
        match u
            .expect(|e| matches!(e, Event::LoginSuccess { .. } | Event::LoginFailed { .. }))
            .await
        {
            Event::LoginSuccess { .. } => Code::Success,
            Event::LoginFailed { code } => code,
            _ => unreachable!(),
        }
    };
    let ok = token::sign(SECURE, CERT, "ann", now_secs() + 600);
    assert_eq!(
        outcome(login(SECURE, "ann", ok.clone())).await,
        Code::Success
    );
    let expired = token::sign(SECURE, CERT, "ben", now_secs() - 5);
    assert_eq!(
        outcome(login(SECURE, "ben", expired)).await,
        Code::LoginTokenExpired
    );
    // another account's token
    assert_eq!(
        outcome(login(SECURE, "cat", ok)).await,
        Code::LoginTokenWrong
    );
    assert_eq!(
        outcome(login(SECURE, "dan", "_no_need_token".into())).await,
        Code::LoginTokenWrong
    );
    assert_eq!(
        outcome(login(SECURE, "dan", String::new())).await,
        Code::LoginTokenWrong
    );
    // apps without a certificate take _no_need_token and ""
    assert_eq!(
        outcome(login("open", "eve", "_no_need_token".into())).await,
        Code::Success
    );
    assert_eq!(
        outcome(login("open", "fay", String::new())).await,
        Code::Success
    );
    // unknown app ids are refused when apps are configured
    assert_eq!(
        outcome(login("other", "gus", String::new())).await,
        Code::LoginTokenWrong
    );
    // the exact wire strings
    let mut raw = Raw::connect(&url).await;
    let expired = token::sign(SECURE, CERT, "hal", now_secs() - 5);
    assert_eq!(
        raw.login(SECURE, "hal", &expired).await[1][0],
        "TokenErrorExpired"
    );
    let mut raw = Raw::connect(&url).await;
    assert_eq!(
        raw.login(SECURE, "hal", "1:x:1:y").await[1][0],
        "TokenErrorInvalid"
    );
}

#[tokio::test]
async fn long_lived_tokens_follow_the_operator_s_policy() {
    let app = format!("{SECURE}:{CERT}");
    let login = |url: String, account: &'static str, tok: String| async move {
        let mut raw = Raw::connect(&url).await;
        raw.login(SECURE, account, &tok).await[1][0].clone()
    };
    let year = 365 * 24 * 3600;
    // defaults: up to 366 days ahead, and "never" (expiry 0) as the token tool allows
    let srv = server_with(|c| c.add_app(&app).unwrap()).await;
    for (expiry, want) in [
        (now_secs() + year, ""),
        (0, ""),
        (now_secs() + 2 * year, "TokenErrorInvalid"),
        (u64::MAX, "TokenErrorInvalid"),
    ] {
        let tok = token::sign(SECURE, CERT, "lee", expiry);
        assert_eq!(
            login(srv.ws_url(), "lee", tok).await,
            want,
            "expiry {expiry}"
        );
    }
    // an operator who wants short tokens only
    let strict = server_with(|c| {
        c.add_app(&app).unwrap();
        c.set_limit("token_lifetime_max_secs=3600").unwrap();
        c.set_limit("token_never_expiring=false").unwrap();
    })
    .await;
    for (expiry, want) in [
        (now_secs() + 600, ""),
        (now_secs() + 7200, "TokenErrorInvalid"),
        (0, "TokenErrorInvalid"),
    ] {
        let tok = token::sign(SECURE, CERT, "max", expiry);
        assert_eq!(
            login(strict.ws_url(), "max", tok).await,
            want,
            "expiry {expiry}"
        );
    }
    // and the same policy for renewals
    let mut raw = Raw::connect(&strict.ws_url()).await;
    let first = token::sign(SECURE, CERT, "max", now_secs() + 600);
    assert_eq!(raw.login(SECURE, "max", &first).await[1][0], "");
    let forever = token::sign(SECURE, CERT, "max", 0);
    let (err, _) = raw
        .call("user_renew_token", 1, json!({ "token": forever }))
        .await;
    assert_eq!(err, "token_invalid");
}

#[tokio::test]
async fn second_login_kicks_the_first_session() {
    let srv = server().await;
    let mut first = Raw::connect(&srv.ws_url()).await;
    first.login(APP, "alice", "").await;
    let mut second = User::login(&srv.ws_url(), "alice").await;
    assert_eq!(first.recv().await.unwrap(), json!(["kick", ""]));
    assert!(first.closed().await);
    // the new session is the one that is online and reachable
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    bob.send("alice", "still there?").await.unwrap();
    second
        .expect(|e| matches!(e, Event::MessageInstant { msg, .. } if msg == "still there?"))
        .await;
    let r = bob
        .invoke("user_query_user_status", json!({"account": "alice"}))
        .await
        .unwrap();
    assert_eq!(r["status"], 1);
    // and the kicked client sees onLogout(103)
    let mut a1 = User::login(&srv.ws_url(), "carl").await;
    let _a2 = User::login(&srv.ws_url(), "carl").await;
    a1.expect(|e| {
        *e == Event::Logout {
            code: Code::LogoutKicked,
        }
    })
    .await;
    assert_eq!(a1.s.state().await, State::LoggedOut);
}

#[tokio::test]
async fn logout_replies_closes_and_marks_offline() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    let req = alice.s.with(|c, now| c.logout(now)).await;
    alice
        .expect(|e| {
            *e == Event::Logout {
                code: Code::LogoutUser,
            }
        })
        .await;
    alice.done(req).await.unwrap();
    let r = bob
        .invoke("user_query_user_status", json!({"account": "alice"}))
        .await
        .unwrap();
    assert_eq!(r["status"], 0);
    // raw: the reply arrives, then the server closes
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "carol", "").await;
    let (err, body) = raw.call("user_logout", 1, json!({})).await;
    assert_eq!((err.as_str(), &body["result"]), ("", &json!("ok")));
    assert!(raw.closed().await);
}

#[tokio::test]
async fn login_must_come_first_and_within_the_login_timeout() {
    let srv = server_with(|c| c.limits.login_timeout_secs = 1).await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.send_value(json!(["call2", ["channel_join", 1, {"line": "x", "name": "r"}]]))
        .await;
    assert_eq!(raw.reply(1).await.0, "not_logged_in");
    let t = std::time::Instant::now();
    assert_eq!(
        raw.recv_within(Duration::from_secs(3)).await.unwrap(),
        json!(["close", ""])
    );
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert!(raw.closed().await);
}

/// A server that allows a 1 s connection timeout, and "sleepy" logged in, having set it.
async fn sleepy_with_a_1s_conn_timeout() -> (Server, Raw) {
    let srv = server_with(|c| c.limits.conn_timeout_min_secs = 1).await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "sleepy", "").await;
    let (err, _) = raw
        .call(
            "user_set_attr",
            1,
            json!({"name": "_conn_timeout", "value": "1"}),
        )
        .await;
    assert_eq!(err, "");
    (srv, raw)
}

/// The connection timeout an account set holds for its next logins too (read with the
/// session's open).
#[tokio::test]
async fn an_account_s_conn_timeout_holds_from_its_next_login() {
    let (srv, mut raw) = sleepy_with_a_1s_conn_timeout().await;
    raw.call("user_logout", 2, json!({})).await;
    // a new connection that says nothing after its login: closed after about a second (the
    // default is two minutes)
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "sleepy", "").await;
    assert_eq!(
        raw.recv_within(Duration::from_secs(10)).await.unwrap(),
        json!(["close", ""])
    );
}

#[tokio::test]
async fn silent_connections_are_dropped_after_conn_timeout() {
    let (srv, mut raw) = sleepy_with_a_1s_conn_timeout().await;
    // stays open while it talks
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        raw.send_value(json!(["ping", i])).await;
        assert_eq!(raw.recv().await.unwrap()[0], "pong");
    }
    // then silence: closed after about a second, with a close frame first
    let t = std::time::Instant::now();
    assert_eq!(
        raw.recv_within(Duration::from_secs(3)).await.unwrap(),
        json!(["close", ""])
    );
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );
    // the attribute was clamped into range and is readable
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    let r = bob
        .invoke(
            "user_get_attr",
            json!({"account": "sleepy", "name": "_conn_timeout"}),
        )
        .await
        .unwrap();
    assert_eq!(r["value"], "1");
    // default clamps: 5 → 20 with the documented minimum
    let srv2 = server().await;
    let mut raw = Raw::connect(&srv2.ws_url()).await;
    raw.login(APP, "x", "").await;
    raw.call(
        "user_set_attr",
        1,
        json!({"name": "_conn_timeout", "value": "5"}),
    )
    .await;
    let (_, body) = raw
        .call(
            "user_get_attr",
            2,
            json!({"account": "x", "name": "_conn_timeout"}),
        )
        .await;
    assert_eq!(body["value"], "20");
    let (_, body) = {
        raw.call(
            "user_set_attr",
            3,
            json!({"name": "_conn_timeout", "value": "999"}),
        )
        .await;
        raw.call(
            "user_get_attr",
            4,
            json!({"account": "x", "name": "_conn_timeout"}),
        )
        .await
    };
    assert_eq!(body["value"], "120");
}

#[tokio::test]
async fn graceful_shutdown_sends_close_to_everyone() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let mut raw = Raw::connect(&srv.ws_url()).await;
    raw.login(APP, "bob", "").await;
    srv.shutdown().await;
    assert_eq!(raw.recv().await.unwrap(), json!(["close", ""]));
    alice
        .expect(|e| {
            *e == Event::Logout {
                code: Code::LogoutNet,
            }
        })
        .await;
}

#[test]
fn token_subcommand_prints_a_verifiable_token() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_opensig-server"))
        .args([
            "token",
            "--app-id",
            SECURE,
            "--certificate",
            CERT,
            "--account",
            "TestAccount",
            "--ttl",
            "600",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let tok = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(tok.starts_with(&format!("1:{SECURE}:")));
    assert_eq!(
        token::verify(&tok, SECURE, CERT, "TestAccount", now_secs()),
        Ok(())
    );
    assert_eq!(
        token::verify(&tok, SECURE, CERT, "TestAccount", now_secs() + 601),
        Err(token::TokenError::Expired)
    );
}

#[tokio::test]
async fn a_session_renews_its_token_with_its_own_tokens_only() {
    let srv = server_with(|c| {
        c.add_app(&format!("{SECURE}:{CERT}")).unwrap();
        c.add_app("open").unwrap();
    })
    .await;
    let url = srv.ws_url();
    let mut raw = Raw::connect(&url).await;
    let first = token::sign(SECURE, CERT, "ivy", now_secs() + 60);
    assert_eq!(raw.login(SECURE, "ivy", &first).await[1][0], "");
    let renew = |t: String| json!({ "token": t });
    let fresh = token::sign(SECURE, CERT, "ivy", now_secs() + 3600);
    assert_eq!(raw.call("user_renew_token", 1, renew(fresh)).await.0, "");
    for (bad, err) in [
        (
            token::sign(SECURE, CERT, "someone-else", now_secs() + 3600),
            "token_invalid",
        ),
        (
            token::sign(SECURE, "0000", "ivy", now_secs() + 3600),
            "token_invalid",
        ),
        (
            token::sign(SECURE, CERT, "ivy", now_secs() - 5),
            "token_expired",
        ),
        ("_no_need_token".to_string(), "token_invalid"),
    ] {
        assert_eq!(raw.call("user_renew_token", 2, renew(bad)).await.0, err);
    }
    // an app without a certificate takes any token
    let mut raw = Raw::connect(&url).await;
    raw.login("open", "jay", "").await;
    assert_eq!(
        raw.call("user_renew_token", 1, renew("_no_need_token".into()))
            .await
            .0,
        ""
    );
}
