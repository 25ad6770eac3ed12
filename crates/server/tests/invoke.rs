//! Every `invoke` function of the seed 003 table, through the client core.
mod common;
use common::*;
use serde_json::json;

#[tokio::test]
async fn every_invoke_function() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let _bob = User::login(&srv.ws_url(), "bob").await;
    alice.join("room").await;
    let ok = |mut v: serde_json::Value| {
        v["result"] = json!("ok");
        Ok(v)
    };
    let cases = [
        (
            "user_query_user_status",
            json!({"account": "bob"}),
            ok(json!({"account": "bob", "status": 1})),
        ),
        (
            "user_query_user_status",
            json!({"account": "zed"}),
            ok(json!({"account": "zed", "status": 0})),
        ),
        (
            "user_set_attr",
            json!({"name": "color", "value": "red"}),
            ok(json!({})),
        ),
        (
            "user_set_attr",
            json!({"name": "size", "value": 42}),
            ok(json!({})),
        ),
        (
            "user_get_attr",
            json!({"account": "alice", "name": "color"}),
            ok(json!({"account": "alice", "name": "color", "value": "red"})),
        ),
        (
            "user_get_attr",
            json!({"account": "alice", "name": "none"}),
            ok(json!({"account": "alice", "name": "none", "value": ""})),
        ),
        (
            "user_get_attr_all",
            json!({"account": "alice"}),
            ok(json!({"account": "alice", "json": "{\"color\":\"red\",\"size\":\"42\"}"})),
        ),
        (
            "user_get_attr_all",
            json!({"account": "bob"}),
            ok(json!({"account": "bob", "json": "{}"})),
        ),
        (
            "channel_query_num",
            json!({"name": "room"}),
            ok(json!({"name": "room", "num": 1})),
        ),
        (
            "channel_query_num",
            json!({"name": "empty"}),
            ok(json!({"name": "empty", "num": 0})),
        ),
        (
            "channel_query_user_isin",
            json!({"name": "room", "account": "alice"}),
            ok(json!({"name": "room", "account": "alice", "isin": 1})),
        ),
        (
            "channel_query_user_isin",
            json!({"name": "room", "account": "bob"}),
            ok(json!({"name": "room", "account": "bob", "isin": 0})),
        ),
        (
            "channel_query_userlist",
            json!({"name": "room"}),
            ok(json!({"name": "room", "num": 1, "list": [["alice", 0]]})),
        ),
        (
            "channel_query_userlist_all",
            json!({"name": "room", "num": 5}),
            ok(json!({"name": "room", "num": 1, "list": [["alice", 0]]})),
        ),
        (
            "channel_set_attr",
            json!({"channel": "room", "name": "k", "value": "v"}),
            ok(json!({})),
        ),
        (
            "channel_del_attr",
            json!({"channel": "room", "name": "k"}),
            ok(json!({})),
        ),
        (
            "channel_clear_attr",
            json!({"channel": "room"}),
            ok(json!({})),
        ),
        (
            "channel_sendmsg",
            json!({"name": "room", "msg": "via invoke"}),
            ok(json!({})),
        ),
        (
            "user_ext_call",
            json!({}),
            Err("unknown_function".to_string()),
        ),
        (
            "user_query_user_status",
            json!({}),
            Err("invalid_args".to_string()),
        ),
        (
            "user_query_user_status",
            json!({"account": 5}),
            ok(json!({"account": "5", "status": 0})),
        ),
        (
            "user_set_attr",
            json!({"name": "big", "value": "x".repeat(8097)}),
            Err("too_large".to_string()),
        ),
        (
            "channel_query_num",
            json!({"name": {"nested": 1}}),
            Err("invalid_args".to_string()),
        ),
    ];
    for (func, args, want) in cases {
        assert_eq!(
            alice.invoke(func, args.clone()).await,
            want,
            "{func} {args}"
        );
    }
    // an empty value deletes a user attribute
    alice
        .invoke("user_set_attr", json!({"name": "size", "value": ""}))
        .await
        .unwrap();
    let r = alice
        .invoke("user_get_attr_all", json!({"account": "alice"}))
        .await
        .unwrap();
    assert_eq!(r["json"], "{\"color\":\"red\"}");
}

#[tokio::test]
async fn invoke_without_the_prefix_or_with_non_object_args_fails_locally() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let req = alice
        .s
        .with(|c, now| c.invoke("user_query_user_status", "{}", now))
        .await;
    assert_eq!(alice.done(req).await, Err("invalid_function".into()));
    let req = alice
        .s
        .with(|c, now| c.invoke("io.agora.signal.user_query_user_status", "\"x\"", now))
        .await;
    assert_eq!(alice.done(req).await, Err("invalid_args".into()));
    // the app's own "line" cannot override the session's
    let r = alice
        .invoke(
            "user_query_user_status",
            json!({"account": "alice", "line": "forged"}),
        )
        .await;
    assert_eq!(r.unwrap()["status"], 1);
}

#[tokio::test]
async fn apps_are_isolated() {
    let srv = server().await;
    let mut a = User::login(&srv.ws_url(), "alice").await;
    let mut c = config(&srv.ws_url(), "bob", "");
    c.app_id = "otherapp".into();
    let mut b = User::login_with(c).await;
    // same names, different apps: no presence, no messages, no shared channels
    assert_eq!(
        a.invoke("user_query_user_status", json!({"account": "bob"}))
            .await
            .unwrap()["status"],
        0
    );
    a.join("shared").await;
    let (_, list) = b.join("shared").await;
    assert_eq!(accounts(&list), vec!["bob"]);
    a.send("bob", "cross-app?").await.unwrap();
    b.settled().await;
    assert_eq!(
        b.invoke("channel_query_num", json!({"name": "shared"}))
            .await
            .unwrap()["num"],
        1
    );
}

#[tokio::test]
async fn user_attributes_are_reclaimed_after_the_keep_time_offline() {
    let srv = server_with(|c| c.limits.user_attrs_keep_secs = 2).await;
    let app = opensig_protocol::ident::AppId::from_stored(APP).unwrap();
    let count = |name: &str| {
        let (app, account) = (
            app.clone(),
            opensig_protocol::ident::Account::from_stored(name).unwrap(),
        );
        let srv = &srv;
        async move {
            let who = opensig_server::store::User {
                app: &app,
                account: &account,
            };
            opensig_server::on_running!(srv, r => r.shared.store().user_attr_count(who).await.unwrap())
        }
    };
    let set = json!({"name": "color", "value": "red"});
    let mut watcher = User::login(&srv.ws_url(), "watcher").await;
    // bob leaves and is back at once: his attributes stay
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    bob.invoke("user_set_attr", set.clone()).await.unwrap();
    drop(bob);
    watcher.wait_offline("bob").await;
    let bob = User::login(&srv.ws_url(), "bob").await;
    // alice leaves for good (her reclaim is scheduled after bob's, with the same delay)
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    alice.invoke("user_set_attr", set.clone()).await.unwrap();
    drop(alice);
    wait_for("alice's attributes reclaimed", || async {
        count("alice").await == 0
    })
    .await;
    assert_eq!(count("bob").await, 1, "bob was back within the keep time");
    let got = watcher
        .invoke("user_get_attr", json!({"account": "bob", "name": "color"}))
        .await
        .unwrap();
    assert_eq!(got["value"], "red");
    // and his next absence is counted from his next logout
    drop(bob);
    wait_for("bob's attributes reclaimed", || async {
        count("bob").await == 0
    })
    .await;
}
