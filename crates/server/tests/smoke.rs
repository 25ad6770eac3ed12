mod common;
use common::*;
use opensig_protocol::client::Event;

#[tokio::test]
async fn two_users_exchange_a_message() {
    let srv = server().await;
    let mut alice = User::login(&srv.ws_url(), "alice").await;
    let mut bob = User::login(&srv.ws_url(), "bob").await;
    alice.send("bob", "hello bob").await.unwrap();
    let e = bob
        .expect(|e| matches!(e, Event::MessageInstant { .. }))
        .await;
    assert_eq!(
        e,
        Event::MessageInstant {
            account: "alice".into(),
            msg: "hello bob".into()
        }
    );
}
