//! One conformance suite for every store: the same tests, races included, run against the
//! memory store and the Redis store (a real `redis-server`), so both keep the contract of
//! `opensig_server::store::Store` — and the rules above them can rely on it. "Two nodes" are two
//! handles on the same state: a clone in memory, a second node on the same Redis prefix.
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opensig_protocol::frame::{Seen, Template};
use opensig_protocol::ident::{Account, AppId, ChannelName};
use opensig_protocol::Limits;
use opensig_server::delivery::{ConnHandle, Outbox};
use opensig_server::store::memory::Memory;
use opensig_server::store::redis::{Redis, RedisConfig};
use opensig_server::store::*;
use tokio::sync::mpsc;

/// Connection ids of the tests: above every node run's first (`Store::first_conn_id`, its
/// start in ms × 1024, below 2^52 until 2109), so that no node takes a test's connection for
/// one a previous run of it left.
static CONN_IDS: AtomicU64 = AtomicU64::new(1 << 52);
/// Node ids of the tests (unique in the process).
static NODE_IDS: AtomicU64 = AtomicU64::new(1);
const WAIT: Duration = Duration::from_secs(5);

fn limits() -> Limits {
    Limits {
        channel_history_keep_empty_secs: 1,
        ..Limits::default()
    }
}

fn app(s: &str) -> AppId {
    AppId::from_stored(s).unwrap()
}
fn acct(s: &str) -> Account {
    Account::from_stored(s).unwrap()
}
fn chan_name(s: &str) -> ChannelName {
    ChannelName::from_stored(s).unwrap()
}

/// A connection: its handle, and what was queued for it.
struct Conn {
    h: ConnHandle,
    out: Outbox,
    seen: Vec<String>,
}

impl Conn {
    fn new() -> Conn {
        let (h, out) = ConnHandle::new(CONN_IDS.fetch_add(1, Ordering::Relaxed), 4096);
        Conn {
            h,
            out,
            seen: Vec::new(),
        }
    }

    /// Wait until `n` frames in all were queued; returns them all.
    async fn frames(&mut self, n: usize) -> &[String] {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut batch = std::collections::VecDeque::new();
            self.out.take(&mut batch);
            self.seen.extend(batch.iter().map(|f| f.to_string()));
            if self.seen.len() >= n {
                return &self.seen;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                tokio::time::timeout(left, self.out.woken()).await.is_ok(),
                "{n} frames not queued within {WAIT:?}; got {:?}",
                self.seen
            );
        }
    }
}

/// A frame template whose text names what it is.
fn tpl(what: &str) -> Template {
    Template {
        head: format!("{what}#"),
        tail: String::new(),
    }
}

fn item<'a>(id: &'a str, text: &'a str, push: &'a Template) -> MailItem<'a> {
    MailItem {
        events: &NO_EVENTS,
        id,
        text,
        push,
        ttl: Duration::from_secs(3600),
        dedup: None,
        max: 100,
        quota: MailQuota::default(),
    }
}

fn ev(frame: &Template) -> Event<'_> {
    Event {
        frame,
        exclude: None,
    }
}

/// The user attribute a session's open reads (the server asks for the connection timeout).
const ATTR: &str = "timeout";

fn opening<'a>(app: &'a AppId, account: &'a Account, conn: &'a Conn) -> Opening<'a> {
    Opening {
        events: &NO_EVENTS,
        attr: ATTR,
        user: User { app, account },
        conn: &conn.h,
        welcome: "welcome".to_string().into(),
    }
}

fn joining<'a>(
    account: &'a Account,
    conn: &'a ConnHandle,
    event: Option<Event<'a>>,
) -> Joining<'a> {
    Joining {
        events: &NO_EVENTS,
        account,
        conn,
        event,
        list_max: 10,
        seen: Seen::default(),
    }
}

fn attr_set<'a>(name: &'a str, value: Option<&'a str>, max: usize) -> UserAttrSet<'a> {
    UserAttrSet { name, value, max }
}

fn set_attr<'a>(name: &'a str, value: &'a str, max: usize) -> AttrOp<'a> {
    AttrOp::Set(AttrSet {
        name,
        value,
        setting: None,
        rate_limited: false,
        max,
        quota: AttrQuota::default(),
    })
}

/// A store under test, its "second node", and its work.
trait Harness: Store + Clone {
    fn make_with(l: Limits) -> impl std::future::Future<Output = (Self, Self)> + Send;
    /// The units an app's channels are spread over (`RedisConfig::partitions`).
    fn partitions() -> u32 {
        1
    }
    fn make() -> impl std::future::Future<Output = (Self, Self)> + Send {
        Self::make_with(limits())
    }
}

impl Harness for Memory {
    async fn make_with(l: Limits) -> (Memory, Memory) {
        let m = Memory::new(&l);
        (m.clone(), m)
    }
}

/// A node of the test Redis under `prefix`, its id `n` and a number of its own.
fn node_cfg(prefix: &str, n: &str) -> RedisConfig {
    RedisConfig {
        url: common::redis_url(),
        wait_replicas: 0,
        partitions: common::partitions(),
        prefix: prefix.into(),
        node_id: format!("{n}{}", NODE_IDS.fetch_add(1, Ordering::Relaxed)),
        public_url: format!("ws://{n}/"),
    }
}

impl Harness for Redis {
    fn partitions() -> u32 {
        common::partitions()
    }
    async fn make_with(l: Limits) -> (Redis, Redis) {
        let prefix = common::unique_prefix();
        let a = Redis::connect(node_cfg(&prefix, "a"), &l).await.unwrap();
        let b = Redis::connect(node_cfg(&prefix, "b"), &l).await.unwrap();
        (a, b)
    }
}

fn work<S: Store>(s: &S) -> mpsc::UnboundedReceiver<Work<S>> {
    let (tx, rx) = mpsc::unbounded_channel();
    s.run_work(tx);
    rx
}

// ---------------------------------------------------------------------------- the tests

async fn sessions_replace_and_close_by_compare<S: Harness>() {
    let (s, other) = S::make().await;
    let (a, u) = (app("app"), acct("ann"));
    let user = User {
        app: &a,
        account: &u,
    };
    let mut c1 = Conn::new();
    let opened = s.session_open(opening(&a, &u, &c1)).await.unwrap();
    assert!(opened.previous.is_none());
    assert_eq!(opened.attr, None, "the attribute asked, not set");
    assert_eq!(
        c1.frames(1).await[0],
        "welcome",
        "the welcome is queued first"
    );
    assert!(s.online(user).await.unwrap());
    assert!(
        other.online(user).await.unwrap(),
        "seen from the other node"
    );
    let first = s.session_of(&c1.h);
    let c2 = Conn::new();
    // the attribute asked is read with the open; another one is not
    s.user_attr_set(user, attr_set(ATTR, Some("90"), 3))
        .await
        .unwrap();
    s.user_attr_set(user, attr_set("other", Some("1"), 3))
        .await
        .unwrap();
    let opened = s.session_open(opening(&a, &u, &c2)).await.unwrap();
    assert_eq!(opened.attr.as_deref(), Some("90"));
    let prev = opened.previous;
    assert!(prev.is_some(), "the older session is returned");
    assert!(s.session_alive(prev.as_ref().unwrap()).await);
    // the old connection's teardown must not end the new session
    assert!(!s.session_close(user, &first, &NO_EVENTS).await.unwrap());
    assert!(s.online(user).await.unwrap());
    let second = s.session_of(&c2.h);
    assert!(s.session_close(user, &second, &NO_EVENTS).await.unwrap());
    assert!(!s.online(user).await.unwrap());
    assert_eq!(s.footprint().await.unwrap().sessions, 0);
}

async fn racing_logins_replace_exactly_one<S: Harness>() {
    let (s, other) = S::make().await;
    let (a, u) = (app("app"), acct("racer"));
    for _ in 0..20 {
        let (c1, c2) = (Conn::new(), Conn::new());
        let user = User {
            app: &a,
            account: &u,
        };
        let o1 = Opening {
            events: &NO_EVENTS,
            attr: ATTR,
            user,
            conn: &c1.h,
            welcome: "w".to_string().into(),
        };
        let o2 = Opening {
            events: &NO_EVENTS,
            attr: ATTR,
            user,
            conn: &c2.h,
            welcome: "w".to_string().into(),
        };
        let (r1, r2) = tokio::join!(s.session_open(o1), other.session_open(o2));
        let (r1, r2) = (r1.unwrap().previous, r2.unwrap().previous);
        // the second to land saw the first; the first saw none (or a previous round's)
        let saw = [&r1, &r2]
            .iter()
            .filter(|r| {
                r.as_ref().is_some_and(|p| {
                    format!("{p:?}").contains(&format!("{}", c1.h.id))
                        || format!("{p:?}").contains(&format!("{}", c2.h.id))
                })
            })
            .count();
        assert_eq!(saw, 1, "{r1:?} / {r2:?}");
        let s1 = s.session_of(&c1.h);
        let s2 = other.session_of(&c2.h);
        let closed = s.session_close(user, &s1, &NO_EVENTS).await.unwrap() as u8
            + other.session_close(user, &s2, &NO_EVENTS).await.unwrap() as u8;
        assert_eq!(closed, 1, "exactly one of them is the session");
    }
}

/// Two logins of one account racing on one node: the one the store answers last is the
/// session, and it stays reachable (its pushes arrive) after the other is closed.
async fn racing_logins_on_one_node_leave_the_winner_reachable<S: Harness>() {
    let (s, _) = S::make().await;
    let (a, u) = (app("app"), acct("twin"));
    let user = User {
        app: &a,
        account: &u,
    };
    let before = s.local_sessions();
    for round in 0..30 {
        let (mut c1, mut c2) = (Conn::new(), Conn::new());
        let (r1, r2) = tokio::join!(
            s.session_open(opening(&a, &u, &c1)),
            s.session_open(opening(&a, &u, &c2))
        );
        let (r1, r2) = (r1.unwrap().previous, r2.unwrap().previous);
        let names = |r: &Option<S::Session>, c: &Conn| {
            r.as_ref()
                .is_some_and(|p| format!("{p:?}").contains(&format!("{}", c.h.id)))
        };
        // the winner replaced the loser; the loser replaced the previous round's winner
        let (winner, loser) = match (names(&r1, &c2), names(&r2, &c1)) {
            (true, false) => (&mut c1, &mut c2),
            (false, true) => (&mut c2, &mut c1),
            other => panic!("round {round}: {other:?} ({r1:?} / {r2:?})"),
        };
        // the loser's connection ends (it was kicked): its close changes nothing for the winner
        let gone = s.session_of(&loser.h);
        assert!(!s.session_close(user, &gone, &NO_EVENTS).await.unwrap());
        assert_eq!(s.local_sessions(), before + 1, "round {round}");
        let (id, text, push) = (format!("r{round}"), "x".to_string(), tpl("reach"));
        s.mail_append(user, item(&id, &text, &push)).await.unwrap();
        let got = winner.frames(2).await;
        assert!(got[1].starts_with("reach#"), "round {round}: {got:?}");
        let won = s.session_of(&winner.h);
        assert!(s.session_close(user, &won, &NO_EVENTS).await.unwrap());
        assert_eq!(s.local_sessions(), before, "round {round}");
    }
}

async fn user_attributes_and_a_racing_maximum<S: Harness>() {
    let (s, other) = S::make().await;
    let (a, u) = (app("app"), acct("bea"));
    let user = User {
        app: &a,
        account: &u,
    };
    assert!(s
        .user_attr_set(user, attr_set("b", Some("2"), 3))
        .await
        .unwrap());
    assert!(s
        .user_attr_set(user, attr_set("a", Some("1"), 3))
        .await
        .unwrap());
    assert_eq!(
        s.user_attrs(user).await.unwrap(),
        vec![("a".into(), "1".into()), ("b".into(), "2".into())],
        "in name order"
    );
    assert!(s.user_attr_set(user, attr_set("a", None, 3)).await.unwrap());
    assert_eq!(s.user_attrs(user).await.unwrap().len(), 1);
    // two nodes race for the last place: one gets it
    for round in 0..10 {
        let (n1, n2) = (format!("x{round}"), format!("y{round}"));
        let (r1, r2) = tokio::join!(
            s.user_attr_set(user, attr_set(&n1, Some("v"), 2)),
            other.user_attr_set(user, attr_set(&n2, Some("v"), 2))
        );
        assert_eq!(r1.unwrap() as u8 + r2.unwrap() as u8, 1, "round {round}");
        let attrs = s.user_attrs(user).await.unwrap();
        assert_eq!(attrs.len(), 2);
        let last = attrs.iter().find(|(n, _)| n != "b").unwrap().0.clone();
        assert!(s
            .user_attr_set(user, attr_set(&last, None, 2))
            .await
            .unwrap());
    }
    // an existing one may change at the maximum
    assert!(s
        .user_attr_set(user, attr_set("b", Some("3"), 1))
        .await
        .unwrap());
    assert_eq!(s.footprint().await.unwrap().user_attrs, 1);
    assert_eq!(other.user_attr_count(user).await.unwrap(), 1);
    // cleared all at once (from either node); another account's stay
    let (v, w) = (acct("vic"), acct("wes"));
    let (vic, wes) = (
        User {
            app: &a,
            account: &v,
        },
        User {
            app: &a,
            account: &w,
        },
    );
    for (who, n) in [(vic, "p"), (vic, "q"), (wes, "r")] {
        assert!(s
            .user_attr_set(who, attr_set(n, Some("1"), 9))
            .await
            .unwrap());
    }
    other.user_attrs_clear(vic).await.unwrap();
    assert_eq!(s.user_attr_count(vic).await.unwrap(), 0);
    assert_eq!(s.user_attrs(vic).await.unwrap(), vec![]);
    assert_eq!(s.user_attr_count(wes).await.unwrap(), 1);
    s.user_attrs_clear(vic).await.unwrap();
    assert_eq!(s.footprint().await.unwrap().user_attrs, 2);
}

/// An app's mailboxes share a quota (messages and bytes, freed as mail is acknowledged or
/// withdrawn, on every node); a sender's allowance counts only mail for offline recipients;
/// a busy server refuses only mail that would wait. Other apps are not affected. (With an
/// app's accounts in several units, each unit holds its share of the quota: recipients of
/// one unit here, and the quota that gives them these shares.)
async fn mail_quotas_per_app_and_per_sender<S: Harness>() {
    let (s, other) = S::make().await;
    let (a, b) = (app("quota"), app("other"));
    let names: [Account; 4] = accounts_in_one_unit("r", S::partitions());
    let units = S::partitions() as usize;
    let (sam, tom) = (acct("sam"), acct("tom"));
    let to = |app, i: usize| User {
        app,
        account: &names[i],
    };
    let quota = MailQuota {
        app_messages: 3 * units,
        app_bytes: 12 * units,
        ..MailQuota::default()
    };
    let p = tpl("m");
    let capped = |text| MailItem {
        events: &NO_EVENTS,
        quota,
        ..item("i", text, &p)
    };
    for i in 0..3 {
        let store = if i % 2 == 0 { &s } else { &other };
        let r = store.mail_append(to(&a, i), capped("abc")).await.unwrap();
        assert!(matches!(r, Appended::Stored { .. }), "{i}: {r:?}");
    }
    assert_eq!(
        other.mail_append(to(&a, 3), capped("abc")).await.unwrap(),
        Appended::AppFull,
        "the app's fourth message"
    );
    assert!(matches!(
        s.mail_append(to(&b, 3), capped("abc")).await.unwrap(),
        Appended::Stored { .. }
    ));
    // acknowledged and withdrawn mail frees the quota, wherever it is freed
    let acked = Poll::Versions {
        ver_clear: 1,
        max: 10,
        seen_id: None,
    };
    other.mail_poll(to(&a, 0), acked).await.unwrap();
    assert!(matches!(
        s.mail_append(to(&a, 3), capped("abcdef")).await.unwrap(),
        Appended::Stored { .. }
    ));
    // 3 + 3 + 6 bytes held: one more byte is over
    assert!(s.mail_withdraw(to(&a, 1), 1, "i").await.unwrap());
    assert_eq!(
        s.mail_append(to(&a, 1), capped("abcd")).await.unwrap(),
        Appended::AppFull,
        "bytes"
    );
    assert!(matches!(
        other.mail_append(to(&a, 1), capped("abc")).await.unwrap(),
        Appended::Stored { .. }
    ));
    let ids = Poll::Ids {
        clear: &["i".to_string()],
        max: 10,
    };
    s.mail_poll(to(&a, 2), ids).await.unwrap();
    assert!(matches!(
        s.mail_append(to(&a, 2), capped("abc")).await.unwrap(),
        Appended::Stored { .. }
    ));

    // the sender's allowance: mail for offline recipients only, per sender
    let online = Conn::new();
    let open = Opening {
        events: &NO_EVENTS,
        attr: ATTR,
        user: to(&b, 0),
        conn: &online.h,
        welcome: "w".to_string().into(),
    };
    s.session_open(open).await.unwrap();
    let from = |sender, busy| MailItem {
        events: &NO_EVENTS,
        quota: MailQuota {
            sender: Some(sender),
            offline_per_sender: 2 * units as u32,
            window: Duration::from_secs(3600),
            busy,
            ..MailQuota::default()
        },
        ..item("j", "x", &p)
    };
    for store in [&s, &other] {
        let r = store.mail_append(to(&b, 1), from(&sam, false)).await;
        assert!(matches!(r.unwrap(), Appended::Stored { .. }));
    }
    let dedup = Dedup {
        from: &sam,
        id: "d1",
        window: Duration::from_secs(60),
    };
    let resend = MailItem {
        events: &NO_EVENTS,
        dedup: Some(dedup),
        ..from(&sam, false)
    };
    assert_eq!(
        other.mail_append(to(&b, 2), resend).await.unwrap(),
        Appended::SenderLimited
    );
    for _ in 0..3 {
        let r = s.mail_append(to(&b, 0), from(&sam, false)).await;
        assert!(
            matches!(r.unwrap(), Appended::Stored { .. }),
            "online recipient"
        );
    }
    let r = s.mail_append(to(&b, 2), from(&tom, false)).await;
    assert!(
        matches!(r.unwrap(), Appended::Stored { .. }),
        "another sender"
    );
    // busy: what would wait is refused, what is delivered is not
    assert_eq!(
        s.mail_append(to(&b, 3), from(&tom, true)).await.unwrap(),
        Appended::Busy
    );
    let r = other.mail_append(to(&b, 0), from(&tom, true)).await;
    assert!(matches!(r.unwrap(), Appended::Stored { .. }));
    // a refused resend was not taken for a duplicate
    let later = MailItem {
        events: &NO_EVENTS,
        dedup: Some(dedup),
        ..item("k", "x", &p)
    };
    assert!(matches!(
        s.mail_append(to(&b, 2), later).await.unwrap(),
        Appended::Stored { .. }
    ));
}

async fn mailboxes_number_push_acknowledge_and_bound<S: Harness>() {
    let (s, other) = S::make().await;
    let (a, u, from) = (app("app"), acct("cat"), acct("dan"));
    let user = User {
        app: &a,
        account: &u,
    };
    let mut c = Conn::new();
    let open = Opening {
        events: &NO_EVENTS,
        attr: ATTR,
        user,
        conn: &c.h,
        welcome: "w".to_string().into(),
    };
    s.session_open(open).await.unwrap();
    let pushes: Vec<Template> = (1..=5).map(|i| tpl(&format!("push{i}"))).collect();
    for (i, p) in pushes.iter().enumerate() {
        let (id, text) = (format!("id{i}"), format!("text{i}"));
        // from both nodes: versions come from the one mailbox
        let store = if i % 2 == 0 { &s } else { &other };
        let r = store.mail_append(user, item(&id, &text, p)).await.unwrap();
        let version = i as u64 + 1;
        assert_eq!(
            r,
            Appended::Stored {
                version,
                offline: false
            }
        );
    }
    let got = c.frames(6).await[1..].to_vec();
    assert_eq!(
        got,
        (1..=5).map(|i| format!("push{i}#{i}")).collect::<Vec<_>>(),
        "pushed in version order, version filled in"
    );
    let poll = |ver_clear, max| Poll::Versions {
        ver_clear,
        max,
        seen_id: None,
    };
    let page = s.mail_poll(user, poll(2, 2)).await.unwrap();
    assert_eq!(page.ver_clear, 2);
    assert_eq!(
        page.msgs
            .iter()
            .map(|(v, t)| (*v, t.to_string()))
            .collect::<Vec<_>>(),
        vec![(3, "text2".into()), (4, "text3".into())]
    );
    // never backwards
    assert_eq!(s.mail_poll(user, poll(0, 10)).await.unwrap().ver_clear, 2);
    assert!(
        !s.mail_withdraw(user, 5, "id3").await.unwrap(),
        "not its id"
    );
    assert!(s.mail_withdraw(user, 5, "id4").await.unwrap());
    assert!(!s.mail_withdraw(user, 5, "id4").await.unwrap());
    assert!(
        !s.mail_withdraw(user, 1, "id0").await.unwrap(),
        "acknowledged already"
    );
    assert_eq!(s.footprint().await.unwrap().stored_messages, 2);
    // resends are dropped, also across nodes
    let p = tpl("again");
    let dedup = Dedup {
        from: &from,
        id: "m1",
        window: Duration::from_secs(60),
    };
    let once = MailItem {
        events: &NO_EVENTS,
        dedup: Some(dedup),
        ..item("i", "t", &p)
    };
    assert!(matches!(
        s.mail_append(user, once).await.unwrap(),
        Appended::Stored { .. }
    ));
    assert_eq!(
        other.mail_append(user, once).await.unwrap(),
        Appended::Duplicate
    );
    // bounded: a full mailbox refuses, and a refused resend may try again
    let full = MailItem {
        events: &NO_EVENTS,
        max: 3,
        dedup: Some(Dedup { id: "m2", ..dedup }),
        ..item("i", "t", &p)
    };
    assert_eq!(s.mail_append(user, full).await.unwrap(), Appended::Full);
    let room = MailItem { max: 10, ..full };
    assert!(matches!(
        s.mail_append(user, room).await.unwrap(),
        Appended::Stored { .. }
    ));
    // expired messages go
    let short = MailItem {
        events: &NO_EVENTS,
        ttl: Duration::from_millis(30),
        ..item("s", "short", &p)
    };
    s.mail_append(user, short).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = s.mail_poll(user, poll(0, 100)).await.unwrap();
        if page.msgs.iter().all(|(_, t)| &**t != "short") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "expired mail stays");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // mode 1: listed ids are dropped, the rest count as delivered
    let page = s
        .mail_poll(
            user,
            Poll::Ids {
                clear: &["i".to_string()],
                max: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.msgs.len(), 1);
    let after = s.mail_poll(user, poll(0, 100)).await.unwrap();
    assert!(after.ver_clear >= page.msgs[0].0);
}

async fn channels_sequence_events_for_members<S: Harness>() {
    let (s, other) = S::make().await;
    let (a, ch) = (app("app"), chan_name("room"));
    let at = Chan {
        app: &a,
        channel: &ch,
    };
    let (ann, bob) = (acct("ann"), acct("bob"));
    let (mut ca, mut cb) = (Conn::new(), Conn::new());
    for (who, c, store) in [(&ann, &ca, &s), (&bob, &cb, &other)] {
        let open = Opening {
            events: &NO_EVENTS,
            attr: ATTR,
            user: User {
                app: &a,
                account: who,
            },
            conn: &c.h,
            welcome: "w".to_string().into(),
        };
        store.session_open(open).await.unwrap();
    }
    let join_a = tpl("join-ann");
    let r = s
        .join(
            at,
            joining(
                &ann,
                &ca.h,
                Some(Event {
                    frame: &join_a,
                    exclude: Some(&ann),
                }),
            ),
        )
        .await
        .unwrap();
    assert!(r.fresh);
    assert_eq!(r.list, vec!["ann".to_string()]);
    let join_b = tpl("join-bob");
    let r = other
        .join(
            at,
            joining(
                &bob,
                &cb.h,
                Some(Event {
                    frame: &join_b,
                    exclude: Some(&bob),
                }),
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.list, vec!["ann".to_string(), "bob".to_string()]);
    // ann sees bob's join (sequence 2: her own was 1 and went to nobody)
    assert_eq!(ca.frames(2).await[1], "join-bob#2");
    // a message to everyone, in order
    let m = tpl("msg");
    let member = Publish {
        events: &NO_EVENTS,
        member: Some(&bob),
        ..Publish::event(ev(&m))
    };
    assert_eq!(other.publish(at, member).await.unwrap(), Published::Sent);
    assert_eq!(ca.frames(3).await[2], "msg#3");
    assert_eq!(cb.frames(2).await[1], "msg#3");
    // members only
    let stranger = acct("eve");
    let outsider = Publish {
        events: &NO_EVENTS,
        member: Some(&stranger),
        ..Publish::event(ev(&m))
    };
    assert_eq!(s.publish(at, outsider).await.unwrap(), Published::NotMember);
    // joining again (a newer session of bob, on the other node) moves the membership (nobody
    // is told)
    let mut cb2 = Conn::new();
    let reopen = Opening {
        events: &NO_EVENTS,
        attr: ATTR,
        user: User {
            app: &a,
            account: &bob,
        },
        conn: &cb2.h,
        welcome: "w".to_string().into(),
    };
    s.session_open(reopen).await.unwrap();
    cb2.frames(1).await;
    let r = s
        .join(at, joining(&bob, &cb2.h, Some(ev(&join_b))))
        .await
        .unwrap();
    assert!(!r.fresh);
    // the old connection cannot leave for the new one
    let old = other.session_of(&cb.h);
    let leave = |session| Leaving {
        events: &NO_EVENTS,
        account: &bob,
        session,
        event: None,
    };
    assert!(!other.leave(at, leave(&old)).await.unwrap());
    let m2 = tpl("second");
    s.publish(at, Publish::event(ev(&m2))).await.unwrap();
    assert_eq!(cb2.frames(2).await[1], "second#4");
    assert_eq!(ca.frames(4).await[3], "second#4");
    let new = s.session_of(&cb2.h);
    let bye = tpl("bye");
    let l = Leaving {
        events: &NO_EVENTS,
        account: &bob,
        session: &new,
        event: Some(Event {
            frame: &bye,
            exclude: Some(&bob),
        }),
    };
    assert!(s.leave(at, l).await.unwrap());
    assert_eq!(ca.frames(5).await[4], "bye#5");
    assert_eq!(s.members(at, 10).await.unwrap(), (1, vec!["ann".into()]));
    assert!(s.is_member(at, &ann).await.unwrap());
    assert!(!other.is_member(at, &bob).await.unwrap());
    let fp = s.footprint().await.unwrap();
    assert_eq!((fp.channels, fp.members), (1, 1));
}

async fn settings_gate_events_and_rates<S: Harness>() {
    let (s, _) = S::make().await;
    let (a, ch) = (app("app"), chan_name("quiet"));
    let at = Chan {
        app: &a,
        channel: &ch,
    };
    let (ann, bob) = (acct("ann"), acct("bob"));
    let (mut ca, cb) = (Conn::new(), Conn::new());
    let open = Opening {
        events: &NO_EVENTS,
        attr: ATTR,
        user: User {
            app: &a,
            account: &ann,
        },
        conn: &ca.h,
        welcome: "w".to_string().into(),
    };
    s.session_open(open).await.unwrap();
    ca.frames(1).await;
    ca.seen.clear();
    s.join(at, joining(&ann, &ca.h, None)).await.unwrap();
    let quiet = AttrSet {
        setting: Some(Setting::Notify(false)),
        ..match set_attr("_quiet", "0", 10) {
            AttrOp::Set(a) => a,
            _ => unreachable!(),
        }
    };
    let upd = tpl("attr");
    let change = |op| AttrChange {
        events: &NO_EVENTS,
        op,
        event: ev(&upd),
    };
    assert_eq!(
        s.attr_change(at, change(AttrOp::Set(quiet))).await.unwrap(),
        AttrOutcome::Done
    );
    assert_eq!(ca.frames(1).await[0], "attr#1", "the setter is told too");
    assert!(!s.settings(at).await.unwrap().unwrap().notify);
    // no join event while notify is off: the next event comes right after the attribute
    let jb = tpl("join-bob");
    s.join(at, joining(&bob, &cb.h, Some(ev(&jb))))
        .await
        .unwrap();
    let m = tpl("msg");
    s.publish(at, Publish::event(ev(&m))).await.unwrap();
    assert_eq!(ca.frames(2).await[1], "msg#2");
    // the channel's message rate
    let slow = AttrSet {
        setting: Some(Setting::SendmsgLimit(1)),
        ..quiet
    };
    s.attr_change(at, change(AttrOp::Set(slow))).await.unwrap();
    let rated = Publish {
        events: &NO_EVENTS,
        rate_limited: true,
        ..Publish::event(ev(&m))
    };
    let mut limited = 0;
    let since = std::time::Instant::now();
    for _ in 0..5 {
        if s.publish(at, rated).await.unwrap() == Published::RateLimited {
            limited += 1;
        }
    }
    // a burst of one, then one a second: no timing assumption about this machine
    let most = 2 + since.elapsed().as_secs() as usize;
    assert!(5 - limited <= most, "5 messages at 1/s: {limited} refused");
    // each attribute's rate
    let strict = AttrSet {
        setting: Some(Setting::SetattrLimit(1)),
        ..quiet
    };
    s.attr_change(at, change(AttrOp::Set(strict)))
        .await
        .unwrap();
    let topic = AttrSet {
        rate_limited: true,
        ..match set_attr("topic", "t", 10) {
            AttrOp::Set(a) => a,
            _ => unreachable!(),
        }
    };
    let mut refused = 0;
    for _ in 0..5 {
        if s.attr_change(at, change(AttrOp::Set(topic))).await.unwrap() == AttrOutcome::RateLimited
        {
            refused += 1;
        }
    }
    assert!(refused >= 3);
    // too many attributes
    let many = s
        .attr_change(at, change(set_attr("new", "v", 1)))
        .await
        .unwrap();
    assert_eq!(many, AttrOutcome::TooMany);
    // deleting puts the setting back; clearing puts them all back
    let del = AttrOp::Del {
        name: "_quiet",
        setting: Some(Setting::Notify(true)),
    };
    s.attr_change(at, change(del)).await.unwrap();
    assert!(s.settings(at).await.unwrap().unwrap().notify);
    let defaults = ChannelSettings::defaults(&limits());
    s.attr_change(at, change(AttrOp::Clear { defaults }))
        .await
        .unwrap();
    assert_eq!(s.settings(at).await.unwrap(), Some(defaults));
    // membership changes are counted once
    s.touch_members(at).await.unwrap();
    assert_eq!(s.take_members_changed(at).await.unwrap(), Some(2));
    assert_eq!(s.take_members_changed(at).await.unwrap(), None);
}

async fn empty_channels_keep_state_only_for_attributes<S: Harness>() {
    let (s, _) = S::make().await;
    let a = app("app");
    let ann = acct("ann");
    let c = Conn::new();
    let session = s.session_of(&c.h);
    let bare = chan_name("bare");
    let at = Chan {
        app: &a,
        channel: &bare,
    };
    let j = Joining {
        events: &NO_EVENTS,
        account: &ann,
        conn: &c.h,
        event: None,
        list_max: 10,
        seen: Seen::default(),
    };
    s.join(at, j).await.unwrap();
    let leave = || Leaving {
        events: &NO_EVENTS,
        account: &ann,
        session: &session,
        event: None,
    };
    assert!(s.leave(at, leave()).await.unwrap());
    assert_eq!(
        s.settings(at).await.unwrap(),
        None,
        "gone at once without attributes"
    );
    // publishing creates no state
    let ghost = chan_name("ghost");
    let m = tpl("m");
    let at = Chan {
        app: &a,
        channel: &ghost,
    };
    assert_eq!(
        s.publish(at, Publish::event(ev(&m))).await.unwrap(),
        Published::Sent
    );
    assert_eq!(s.settings(at).await.unwrap(), None);
    // with an attribute it stays (for its ttl)
    let kept = chan_name("kept");
    let at = Chan {
        app: &a,
        channel: &kept,
    };
    let upd = tpl("u");
    let change = AttrChange {
        events: &NO_EVENTS,
        op: set_attr("topic", "x", 10),
        event: ev(&upd),
    };
    s.attr_change(at, change).await.unwrap();
    assert!(s.settings(at).await.unwrap().is_some());
    assert_eq!(s.footprint().await.unwrap().channels, 1);
    // a ttl of 0 counts as 1 s: the state outlives the last member's leave, then goes
    let zero = chan_name("zero");
    let at = Chan {
        app: &a,
        channel: &zero,
    };
    s.join(at, joining(&ann, &c.h, None)).await.unwrap();
    let ttl0 = AttrOp::Set(AttrSet {
        setting: Some(Setting::Ttl(0)),
        ..match set_attr("topic", "x", 10) {
            AttrOp::Set(a) => a,
            _ => unreachable!(),
        }
    });
    let change = AttrChange {
        events: &NO_EVENTS,
        op: ttl0,
        event: ev(&upd),
    };
    s.attr_change(at, change).await.unwrap();
    assert!(s.leave(at, leave()).await.unwrap());
    assert!(
        s.settings(at).await.unwrap().is_some(),
        "kept past the leave"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.settings(at).await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "never went");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` channel names whose keys are in one unit of `partitions` (any names with one).
/// `n` accounts of one unit of an app spread over `partitions` (the one `events::unit_of_name`
/// gives `prefix0`: what a unit holds a share of the app's quotas for).
fn accounts_in_one_unit<const N: usize>(prefix: &str, partitions: u32) -> [Account; N] {
    let first = opensig_server::events::unit_of_name(&format!("{prefix}0"), partitions);
    let names: Vec<Account> = (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|name| opensig_server::events::unit_of_name(name, partitions) == first)
        .take(N)
        .map(|name| acct(&name))
        .collect();
    names.try_into().unwrap()
}

fn names_in_one_unit(n: usize, partitions: u32) -> Vec<ChannelName> {
    (0..)
        .map(|i| format!("c{i}"))
        .filter(|name| opensig_server::events::stable_hash(name) % partitions == 0)
        .take(n)
        .map(|name| chan_name(&name))
        .collect()
}

/// The attributes of all channels of an app share a quota (channels with attributes, and
/// bytes of names and values), members or not, on every node; deleting, clearing, shrinking
/// and the state's expiry free it; other apps are not affected. (With the app's channels in
/// several units, each unit holds its share of the quota: channels of one unit here, and the
/// quota that gives them these shares; `a_unit_holds_its_share_of_the_app_s_quotas`.)
async fn channel_attributes_share_the_app_s_quota<S: Harness>() {
    let (s, other) = S::make().await;
    let (a, b) = (app("quota"), app("other"));
    let p = S::partitions() as usize;
    let names = names_in_one_unit(5, S::partitions());
    let at = |app, i: usize| Chan {
        app,
        channel: &names[i],
    };
    let u = tpl("u");
    let quota = AttrQuota {
        channels: 2 * p,
        bytes: 20 * p,
    };
    let set = |name, value| AttrChange {
        events: &NO_EVENTS,
        op: AttrOp::Set(AttrSet {
            name,
            value,
            setting: None,
            rate_limited: false,
            max: 100,
            quota,
        }),
        event: ev(&u),
    };
    let done = AttrOutcome::Done;
    assert_eq!(
        s.attr_change(at(&a, 0), set("a", "12345")).await.unwrap(),
        done
    );
    assert_eq!(
        other.attr_change(at(&a, 1), set("b", "1")).await.unwrap(),
        done
    );
    assert_eq!(
        s.attr_change(at(&a, 2), set("c", "1")).await.unwrap(),
        AttrOutcome::AppFull,
        "a third channel"
    );
    assert_eq!(s.settings(at(&a, 2)).await.unwrap(), None, "no state");
    assert_eq!(s.attr_change(at(&b, 2), set("c", "1")).await.unwrap(), done);
    // 6 + 2 bytes held: "a" grows by 8, then one more attribute is over
    let longer = "1234567890123";
    assert_eq!(
        other
            .attr_change(at(&a, 0), set("a", longer))
            .await
            .unwrap(),
        done
    );
    assert_eq!(
        s.attr_change(at(&a, 0), set("d", "12345")).await.unwrap(),
        AttrOutcome::AppFull,
        "bytes"
    );
    // shrinking is never refused, and frees bytes
    assert_eq!(s.attr_change(at(&a, 0), set("a", "1")).await.unwrap(), done);
    assert_eq!(
        s.attr_change(at(&a, 0), set("d", "12345")).await.unwrap(),
        done
    );
    // deleting the last attribute frees the channel
    let del = AttrChange {
        events: &NO_EVENTS,
        op: AttrOp::Del {
            name: "b",
            setting: None,
        },
        event: ev(&u),
    };
    assert_eq!(s.attr_change(at(&a, 1), del).await.unwrap(), done);
    assert_eq!(
        other.attr_change(at(&a, 2), set("c", "1")).await.unwrap(),
        done
    );
    // clearing frees the channel and its bytes
    let clear = AttrChange {
        events: &NO_EVENTS,
        op: AttrOp::Clear {
            defaults: ChannelSettings::defaults(&limits()),
        },
        event: ev(&u),
    };
    assert_eq!(other.attr_change(at(&a, 0), clear).await.unwrap(), done);
    assert_eq!(s.attr_change(at(&a, 3), set("e", "1")).await.unwrap(), done);
    // a channel whose state expires (its ttl after its last member) frees its place
    let short = AttrChange {
        events: &NO_EVENTS,
        op: AttrOp::Set(AttrSet {
            setting: Some(Setting::Ttl(1)),
            ..match set("f", "1").op {
                AttrOp::Set(x) => x,
                _ => unreachable!(),
            }
        }),
        event: ev(&u),
    };
    assert_eq!(s.attr_change(at(&a, 3), short).await.unwrap(), done);
    assert_eq!(
        s.attr_change(at(&a, 4), set("g", "1")).await.unwrap(),
        AttrOutcome::AppFull
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if s.attr_change(at(&a, 4), set("g", "1")).await.unwrap() == done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "an expired channel still holds its place"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.settings(at(&a, 3)).await.unwrap(), None, "expired");
}

async fn racing_joins_leaves_and_attributes<S: Harness>() {
    let (s, other) = S::make().await;
    let (a, ch) = (app("app"), chan_name("busy"));
    let at = Chan {
        app: &a,
        channel: &ch,
    };
    let accounts: Vec<Account> = (0..20).map(|i| acct(&format!("u{i}"))).collect();
    let conns: Vec<Conn> = (0..20).map(|_| Conn::new()).collect();
    // everyone joins at once, half through each node
    let mut tasks = Vec::new();
    for (i, (who, c)) in accounts.iter().zip(&conns).enumerate() {
        let store = if i % 2 == 0 { s.clone() } else { other.clone() };
        let (who, h, a, ch) = (who.clone(), c.h.clone(), a.clone(), ch.clone());
        tasks.push(tokio::spawn(async move {
            let at = Chan {
                app: &a,
                channel: &ch,
            };
            let j = Joining {
                events: &NO_EVENTS,
                account: &who,
                conn: &h,
                event: None,
                list_max: 5,
                seen: Seen::default(),
            };
            store.join(at, j).await.unwrap().fresh
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    assert_eq!(s.members(at, 0).await.unwrap().0, 20);
    // half leave while the rest join again
    let mut tasks = Vec::new();
    for (i, (who, c)) in accounts.iter().zip(&conns).enumerate() {
        let store = if i % 2 == 0 { s.clone() } else { other.clone() };
        let session = store.session_of(&c.h);
        let (who, h, a, ch) = (who.clone(), c.h.clone(), a.clone(), ch.clone());
        tasks.push(tokio::spawn(async move {
            let at = Chan {
                app: &a,
                channel: &ch,
            };
            if i < 10 {
                let l = Leaving {
                    events: &NO_EVENTS,
                    account: &who,
                    session: &session,
                    event: None,
                };
                assert!(store.leave(at, l).await.unwrap());
            } else {
                let j = Joining {
                    events: &NO_EVENTS,
                    account: &who,
                    conn: &h,
                    event: None,
                    list_max: 5,
                    seen: Seen::default(),
                };
                assert!(!store.join(at, j).await.unwrap().fresh);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (n, list) = s.members(at, 5).await.unwrap();
    assert_eq!(n, 10);
    assert_eq!(list.len(), 5);
    // two nodes race for the attributes' last places
    let upd = tpl("u");
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = if i % 2 == 0 { s.clone() } else { other.clone() };
        let (a, ch, upd) = (a.clone(), ch.clone(), upd.clone());
        tasks.push(tokio::spawn(async move {
            let at = Chan {
                app: &a,
                channel: &ch,
            };
            let name = format!("k{i}");
            let change = AttrChange {
                events: &NO_EVENTS,
                op: set_attr(&name, "v", 4),
                event: ev(&upd),
            };
            store.attr_change(at, change).await.unwrap()
        }));
    }
    let mut done = 0;
    for t in tasks {
        if t.await.unwrap() == AttrOutcome::Done {
            done += 1;
        }
    }
    assert_eq!(done, 4, "exactly the maximum");
}

fn invite_key(a: &AppId, caller: &str, callee: &str) -> InviteKey {
    InviteKey {
        app: a.clone(),
        caller: acct(caller),
        channel: chan_name("call"),
        callee: acct(callee),
    }
}

async fn invitations_live_step_and_end_once<S: Harness>() {
    let (s, other) = S::make().await;
    let a = app("app");
    let key = invite_key(&a, "ann", "bob");
    let p = tpl("invite");
    let open = InviteOpen {
        key: &key,
        extra: "{\"x\":1}",
        generation: 7,
        mail: item("inv", "invite", &p),
        timers: &[],
    };
    let stored = Appended::Stored {
        version: 1,
        offline: true,
    };
    assert_eq!(s.invite_open(open).await.unwrap(), stored);
    let r = other.invite_get(&key).await.unwrap().unwrap();
    assert_eq!(
        (
            r.extra.as_str(),
            r.state,
            r.version,
            r.generation,
            r.msg_id.as_str()
        ),
        (
            "{\"x\":1}",
            InviteState::Ringing { acked: false },
            1,
            7,
            "inv"
        )
    );
    let caller = User {
        app: &a,
        account: &key.caller,
    };
    assert_eq!(s.invites_by(caller).await.unwrap(), vec![(key.clone(), 7)]);
    assert_eq!(s.footprint().await.unwrap().invites, 1);
    let m = tpl("ack");
    let ack = InviteRelay {
        keys: std::slice::from_ref(&key),
        step: InviteStep::Ack,
        require_live: true,
        to: &key.caller,
        mail: item("a", "ack", &m),
    };
    let r = other.invite_relay(ack).await.unwrap();
    assert!(r.live);
    assert!(matches!(r.appended, Appended::Stored { .. }));
    assert_eq!(
        s.invite_get(&key).await.unwrap().unwrap().state,
        InviteState::Ringing { acked: true }
    );
    // a take of another generation, or of an accepted one while ringing-only, does nothing
    let take = |generation, ringing_only| Take {
        generation,
        ringing_only,
    };
    assert!(s.invite_take(&key, take(6, false)).await.unwrap().is_none());
    let accept = InviteRelay {
        step: InviteStep::Accept,
        ..ack
    };
    other.invite_relay(accept).await.unwrap();
    assert!(s.invite_take(&key, take(7, true)).await.unwrap().is_none());
    // ending removes it; a message about no invitation is not stored when it must be live
    let end = InviteRelay {
        step: InviteStep::End,
        ..ack
    };
    assert!(s.invite_relay(end).await.unwrap().live);
    assert!(s.invite_get(&key).await.unwrap().is_none());
    let stray = InviteRelay {
        step: InviteStep::Keep,
        ..ack
    };
    let r = other.invite_relay(stray).await.unwrap();
    assert!(!r.live);
    assert_eq!(r.appended, Appended::Duplicate, "not stored");
    assert!(s.invites_by(caller).await.unwrap().is_empty());
}

async fn a_caller_s_invitations_are_its_own<S: Harness>() {
    let (s, other) = S::make().await;
    let (a, b) = (app("app"), app("app2"));
    let p = tpl("invite");
    // ann's, one to ann, and ann's of another app
    let keys = [
        invite_key(&a, "ann", "bob"),
        invite_key(&a, "cat", "ann"),
        invite_key(&b, "ann", "bob"),
        invite_key(&a, "ann", "cat"),
    ];
    for (i, key) in keys.iter().enumerate() {
        let id = format!("inv{i}");
        let open = InviteOpen {
            key,
            extra: "",
            generation: i as u64,
            mail: item(&id, "invite", &p),
            timers: &[],
        };
        assert!(matches!(
            s.invite_open(open).await.unwrap(),
            Appended::Stored { .. }
        ));
    }
    let ann = acct("ann");
    let caller = User {
        app: &a,
        account: &ann,
    };
    let mut by_ann = other.invites_by(caller).await.unwrap();
    by_ann.sort_by(|x, y| x.0.callee.cmp(&y.0.callee));
    assert_eq!(by_ann, vec![(keys[0].clone(), 0), (keys[3].clone(), 3)]);
    assert_eq!(s.footprint().await.unwrap().invites, 4);
    // the last of them taken, it has none
    let take = |generation| Take {
        generation,
        ringing_only: false,
    };
    assert!(s.invite_take(&keys[0], take(0)).await.unwrap().is_some());
    assert!(s.invite_take(&keys[3], take(3)).await.unwrap().is_some());
    assert!(other.invites_by(caller).await.unwrap().is_empty());
    assert_eq!(s.footprint().await.unwrap().invites, 2);
}

/// `account` leaves through `session`, no event.
fn leaving<'a, T>(account: &'a Account, session: &'a T) -> Leaving<'a, T> {
    Leaving {
        events: &NO_EVENTS,
        account,
        session,
        event: None,
    }
}

async fn channels_are_listed_by_name_a_page_at_a_time<S: Harness>() {
    let (s, other) = S::make().await;
    let (a, b) = (app("app"), app("app2"));
    let (ann, bob) = (acct("ann"), acct("bob"));
    let (ca, cb) = (Conn::new(), Conn::new());
    // listed before any channel (the Redis store's first listing looks for older ones)
    let none = s.channels(&a, "", "", 2).await.unwrap();
    assert_eq!(none, ChannelPage::default());
    for name in ["e", "b", "d", "a", "c"] {
        let ch = chan_name(name);
        let at = Chan {
            app: &a,
            channel: &ch,
        };
        s.join(at, joining(&ann, &ca.h, None)).await.unwrap();
    }
    // b has two members; another app's channel is not this app's
    let (bc, zz) = (chan_name("b"), chan_name("zz"));
    let at = |app, channel| Chan { app, channel };
    other
        .join(at(&a, &bc), joining(&bob, &cb.h, None))
        .await
        .unwrap();
    other
        .join(at(&b, &zz), joining(&bob, &cb.h, None))
        .await
        .unwrap();
    // c empties
    let c = chan_name("c");
    let session = s.session_of(&ca.h);
    assert!(s.leave(at(&a, &c), leaving(&ann, &session)).await.unwrap());
    let named = |names: &[(&str, usize)]| -> Vec<(String, usize)> {
        names.iter().map(|(n, m)| (n.to_string(), *m)).collect()
    };
    let first = other.channels(&a, "", "", 2).await.unwrap();
    assert_eq!(first.channels, named(&[("a", 1), ("b", 2)]));
    assert_eq!(first.next.as_deref(), Some("b"), "the page's last name");
    let second = s.channels(&a, "b", "", 2).await.unwrap();
    assert_eq!(second.channels, named(&[("d", 1), ("e", 1)]));
    assert_eq!(second.next, None);
    let all = other.channels(&a, "", "", 10).await.unwrap();
    assert_eq!(
        all.channels,
        named(&[("a", 1), ("b", 2), ("d", 1), ("e", 1)])
    );
    let theirs = s.channels(&b, "", "", 10).await.unwrap();
    assert_eq!(theirs.channels, named(&[("zz", 1)]));
    // from a name on (a prefix search), and after a cursor past it
    let from_c = other.channels(&a, "", "c", 10).await.unwrap();
    assert_eq!(from_c.channels, named(&[("d", 1), ("e", 1)]));
    let from_b = s.channels(&a, "", "b", 1).await.unwrap();
    assert_eq!(from_b.channels, named(&[("b", 2)]), "`from` itself");
    assert_eq!(from_b.next.as_deref(), Some("b"));
    let after_d = other.channels(&a, "d", "b", 10).await.unwrap();
    assert_eq!(after_d.channels, named(&[("e", 1)]));
    // emptied and joined again: listed again
    assert!(s.leave(at(&a, &bc), leaving(&ann, &session)).await.unwrap());
    let session = other.session_of(&cb.h);
    assert!(other
        .leave(at(&a, &bc), leaving(&bob, &session))
        .await
        .unwrap());
    s.join(at(&a, &c), joining(&ann, &ca.h, None))
        .await
        .unwrap();
    let all = other.channels(&a, "", "", 10).await.unwrap();
    assert_eq!(
        all.channels,
        named(&[("a", 1), ("c", 1), ("d", 1), ("e", 1)])
    );
}

async fn accept_and_timeout_race_to_one_outcome<S: Harness>() {
    let (s, other) = S::make().await;
    let a = app("app");
    for round in 0..20u64 {
        let key = invite_key(&a, "ann", &format!("bob{round}"));
        let p = tpl("invite");
        let open = InviteOpen {
            key: &key,
            extra: "\"\"",
            generation: round,
            mail: item("inv", "invite", &p),
            timers: &[],
        };
        s.invite_open(open).await.unwrap();
        let m = tpl("accept");
        let accept = InviteRelay {
            keys: std::slice::from_ref(&key),
            step: InviteStep::Accept,
            require_live: true,
            to: &key.caller,
            mail: item("a", "accept", &m),
        };
        let take = Take {
            generation: round,
            ringing_only: true,
        };
        let (accepted, timed_out) =
            tokio::join!(other.invite_relay(accept), s.invite_take(&key, take));
        let (accepted, timed_out) = (accepted.unwrap().live, timed_out.unwrap().is_some());
        assert!(
            accepted != timed_out,
            "round {round}: accepted {accepted}, timed out {timed_out}"
        );
    }
}

/// The next work of `rx`, a timer due within [`WAIT`]: the timer and its claim.
async fn fired<S: Store>(rx: &mut mpsc::UnboundedReceiver<Work<S>>) -> (Timer, S::Claim) {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(Work::Timer { timer, claim })) => (timer, claim),
        _ => panic!("no timer due within {WAIT:?}"),
    }
}

async fn timers_fire_once_and_rescheduling_replaces<S: Harness>() {
    let (s, _) = S::make().await;
    let mut rx = work(&s);
    let a = app("app");
    let key = invite_key(&a, "ann", "bob");
    let t = Timer::InviteTimeout(key.clone(), 1);
    s.schedule(t.clone(), Duration::from_millis(50))
        .await
        .unwrap();
    let (timer, claim) = fired(&mut rx).await;
    assert_eq!(timer, t);
    // rescheduled while being handled: it comes again, once
    s.schedule(t.clone(), Duration::from_millis(50))
        .await
        .unwrap();
    s.timer_done(claim).await;
    let (timer, claim) = fired(&mut rx).await;
    assert_eq!(timer, t);
    s.timer_done(claim).await;
    // scheduling again before it is due moves it (one firing, the later one)
    let m = Timer::MemberNum(a.clone(), chan_name("room"));
    s.schedule(m.clone(), Duration::from_millis(30))
        .await
        .unwrap();
    s.schedule(m.clone(), Duration::from_millis(300))
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    let (timer, claim) = fired(&mut rx).await;
    assert_eq!(timer, m);
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "fired at the later time"
    );
    s.timer_done(claim).await;
    // a marker timer scheduled after it comes next: nothing else was due in between
    let marker = Timer::MemberNum(a.clone(), chan_name("marker"));
    s.schedule(marker.clone(), Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(fired(&mut rx).await.0, marker);
}

/// A channel message published as one: numbered (the fifth element of its frame), kept in the
/// history within its size, read back after a number, on both nodes; a send's identity is the
/// sixth element and is kept with it.
fn message<'a>(from: &'a str, text: &'a str, keep: bool) -> Message<'a> {
    Message {
        from,
        text,
        max_age: Duration::from_secs(3600),
        max_bytes: 1 << 20,
        keep,
        id: None,
    }
}

/// The (sequence, message number) of the first `n` numbered channel messages `c` got.
async fn numbered(c: &mut Conn, n: usize) -> Vec<(u64, u64)> {
    loop {
        let got: Vec<(u64, u64)> = c
            .seen
            .iter()
            .filter_map(|f| serde_json::from_str::<serde_json::Value>(f).ok())
            .filter_map(|f| Some((f[1][2].as_u64()?, f[1][4].as_u64()?)))
            .collect();
        if got.len() >= n {
            return got[..n].to_vec();
        }
        let more = c.seen.len() + 1;
        c.frames(more).await;
    }
}

/// A member's message or rejoin carries the channel's numbers it saw (`Seen`): a channel
/// behind them (on Redis: a failover lost the writes that used them) goes on from them, by at
/// most `CATCH_UP_MAX` — every store alike.
async fn channel_numbers_catch_up_to_what_a_member_saw<S: Harness>() {
    let (s, other) = S::make().await;
    let (a, ch) = (app("app"), chan_name("lapse"));
    let at = Chan {
        app: &a,
        channel: &ch,
    };
    let (ann, bob, cid) = (acct("ann"), acct("bob"), acct("cid"));
    let (ca, mut cb, cc) = (Conn::new(), Conn::new(), Conn::new());
    s.session_open(opening(&a, &ann, &ca)).await.unwrap();
    other.session_open(opening(&a, &bob, &cb)).await.unwrap();
    other.session_open(opening(&a, &cid, &cc)).await.unwrap();
    s.join(at, joining(&ann, &ca.h, None)).await.unwrap();
    other.join(at, joining(&bob, &cb.h, None)).await.unwrap();
    let frame = &opensig_protocol::frame::out::channel2_template("lapse", "x");
    let send = |text: &'static str, seen: Seen| {
        let (s, at) = (s.clone(), at);
        async move {
            let p = Publish {
                events: &NO_EVENTS,
                message: Some(message("ann", text, true)),
                seen,
                ..Publish::event(ev(frame))
            };
            assert_eq!(s.publish(at, p).await.unwrap(), Published::Sent);
        }
    };
    send("one", Seen::default()).await;
    // ann saw up to sequence 50 and message 20: the channel goes on from there
    send("two", Seen { seq: 50, msg: 20 }).await;
    // numbers behind the channel's change nothing, nor do numbers too far ahead
    send("three", Seen { seq: 3, msg: 1 }).await;
    let far = 52 + opensig_server::store::CATCH_UP_MAX + 1;
    send("four", Seen { seq: far, msg: far }).await;
    assert_eq!(
        numbered(&mut cb, 4).await,
        [(1, 1), (51, 21), (52, 22), (53, 23)]
    );
    // a rejoin that saw more: its reply's latest message and the next numbers pass it
    let j = Joining {
        seen: Seen { seq: 100, msg: 40 },
        ..joining(&cid, &cc.h, None)
    };
    assert_eq!(other.join(at, j).await.unwrap().last_msg, 40);
    send("five", Seen::default()).await;
    assert_eq!(numbered(&mut cb, 5).await[4], (101, 41));
    let h = other
        .history(at, 0, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(h.last, 41);
    let kept: Vec<u64> = h.msgs.iter().map(|m| m.n).collect();
    assert_eq!(kept, [1, 21, 22, 23, 41]);
}

async fn channel_history_numbers_keeps_and_trims<S: Harness>() {
    let (s, other) = S::make().await;
    let (a, ch) = (app("app"), chan_name("hist"));
    let at = Chan {
        app: &a,
        channel: &ch,
    };
    let (ann, bob, cid) = (acct("ann"), acct("bob"), acct("cid"));
    let (ca, mut cb, cc) = (Conn::new(), Conn::new(), Conn::new());
    for (who, c, store) in [(&ann, &ca, &s), (&bob, &cb, &other), (&cid, &cc, &s)] {
        store.session_open(opening(&a, who, c)).await.unwrap();
    }
    s.join(at, joining(&ann, &ca.h, None)).await.unwrap();
    let r = other.join(at, joining(&bob, &cb.h, None)).await.unwrap();
    assert_eq!(r.last_msg, 0);
    let frame = opensig_protocol::frame::out::channel2_template("hist", "x");
    let texts: Vec<String> = (1..=5).map(|i| format!("t{i}")).collect();
    // the even ones with an identity (the largest one a JavaScript number holds exactly)
    let id_of = |i: usize| (i % 2 == 0).then_some((1u64 << 53) - 1 - i as u64);
    for (i, t) in texts.iter().enumerate() {
        let p = Publish {
            events: &NO_EVENTS,
            message: Some(Message {
                id: id_of(i + 1),
                ..message("ann", t, true)
            }),
            ..Publish::event(ev(&frame))
        };
        assert_eq!(s.publish(at, p).await.unwrap(), Published::Sent);
    }
    // bob (on the other node) sees each with its sequence, message number and identity
    let got: Vec<serde_json::Value> = cb.frames(6).await[1..6]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f[1][4], i as u64 + 1, "{f}");
        assert_eq!(f[1][2], i as u64 + 1, "{f}");
        assert_eq!(f[1][5].as_u64(), id_of(i + 1), "{f}");
        assert_eq!(
            f[1].as_array().unwrap().len(),
            5 + usize::from(i % 2 == 1),
            "{f}"
        );
    }
    let h = other
        .history(at, 2, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(h.last, 5);
    let kept: Vec<(u64, &str, &str)> = h
        .msgs
        .iter()
        .map(|k| (k.n, k.account.as_str(), k.msg.as_str()))
        .collect();
    assert_eq!(
        kept,
        vec![(3, "ann", "t3"), (4, "ann", "t4"), (5, "ann", "t5")]
    );
    let ids: Vec<Option<u64>> = h.msgs.iter().map(|k| k.id).collect();
    assert_eq!(ids, [id_of(3), id_of(4), id_of(5)]);
    assert!(h
        .msgs
        .windows(2)
        .all(|w| w[0].seq < w[1].seq && w[0].ts <= w[1].ts));
    // a smaller `_history` drops the oldest at once
    let size = AttrOp::Set(AttrSet {
        name: "_history",
        value: "2",
        setting: Some(Setting::History(2)),
        rate_limited: false,
        max: 100,
        quota: AttrQuota::default(),
    });
    let upd = tpl("attr");
    let change = AttrChange {
        events: &NO_EVENTS,
        op: size,
        event: ev(&upd),
    };
    assert_eq!(s.attr_change(at, change).await.unwrap(), AttrOutcome::Done);
    let numbers = |h: History| h.msgs.iter().map(|k| k.n).collect::<Vec<_>>();
    let age = Duration::from_secs(3600);
    assert_eq!(numbers(s.history(at, 0, age).await.unwrap()), vec![4, 5]);
    let p = Publish {
        events: &NO_EVENTS,
        message: Some(message("bob", "t6", true)),
        ..Publish::event(ev(&frame))
    };
    other.publish(at, p).await.unwrap();
    assert_eq!(numbers(s.history(at, 0, age).await.unwrap()), vec![5, 6]);
    // not kept (the server is short of memory): numbered all the same
    let p = Publish {
        events: &NO_EVENTS,
        message: Some(message("bob", "t7", false)),
        ..Publish::event(ev(&frame))
    };
    other.publish(at, p).await.unwrap();
    let h = s.history(at, 0, age).await.unwrap();
    assert_eq!((h.last, numbers(h)), (7, vec![5, 6]));
    // a byte bound keeps only what fits
    let p = Publish {
        events: &NO_EVENTS,
        message: Some(Message {
            max_bytes: 2,
            ..message("bob", "t8", true)
        }),
        ..Publish::event(ev(&frame))
    };
    other.publish(at, p).await.unwrap();
    assert_eq!(numbers(s.history(at, 0, age).await.unwrap()), vec![8]);
    // a joiner learns the latest number
    let r = s.join(at, joining(&cid, &cc.h, None)).await.unwrap();
    assert_eq!(r.last_msg, 8);
    // other events are not numbered
    s.publish(at, Publish::event(ev(&frame))).await.unwrap();
    assert_eq!(s.history(at, 0, age).await.unwrap().last, 8);
    // a long stream keeps exactly the latest `_history` for readers
    let texts: Vec<String> = (9..=48).map(|i| format!("t{i}")).collect();
    for t in &texts {
        let p = Publish {
            events: &NO_EVENTS,
            message: Some(message("ann", t, true)),
            ..Publish::event(ev(&frame))
        };
        s.publish(at, p).await.unwrap();
    }
    let h = other.history(at, 0, age).await.unwrap();
    assert_eq!((h.last, numbers(h)), (48, vec![47, 48]));
    assert_eq!(numbers(s.history(at, 47, age).await.unwrap()), vec![48]);
    let p = Publish {
        events: &NO_EVENTS,
        message: Some(message("ann", "t49", true)),
        ..Publish::event(ev(&frame))
    };
    s.publish(at, p).await.unwrap();
    // an empty channel keeps its kept messages for a while (members reconnecting together
    // find what they missed), then goes
    let clear = AttrChange {
        events: &NO_EVENTS,
        op: AttrOp::Clear {
            defaults: ChannelSettings::defaults(&limits()),
        },
        event: ev(&upd),
    };
    assert_eq!(s.attr_change(at, clear).await.unwrap(), AttrOutcome::Done);
    assert_eq!(numbers(s.history(at, 0, age).await.unwrap()), vec![48, 49]);
    for (who, c, store) in [(&ann, &ca, &s), (&bob, &cb, &other), (&cid, &cc, &s)] {
        let l = Leaving {
            events: &NO_EVENTS,
            account: who,
            session: &store.session_of(&c.h),
            event: None,
        };
        assert!(store.leave(at, l).await.unwrap());
    }
    assert_eq!(
        numbers(other.history(at, 0, age).await.unwrap()),
        vec![48, 49]
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.history(at, 0, age).await.unwrap() != History::default() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "kept beyond keep_empty_secs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.settings(at).await.unwrap(), None);
}

/// The event log: numbered per partition, read in order after a position, the oldest dropped
/// past the caps, cursors and leases shared by every handle.
async fn event_logs_number_bound_cursor_and_lease<S: Harness>() {
    let (s, other) = S::make().await;
    let (a, b) = (app("app"), app("other"));
    let open = EventCap {
        max_events: 0,
        max_bytes: 0,
        max_age: Duration::from_secs(3600),
    };
    for i in 1..=5u64 {
        assert_eq!(
            s.event_append(&a, 0, &format!("e{i}"), open).await.unwrap(),
            i
        );
    }
    let texts = |p: &EventPage| {
        p.events
            .iter()
            .map(|(n, t)| (*n, t.to_string()))
            .collect::<Vec<_>>()
    };
    let page = other.event_read(&a, 0, 0, 10).await.unwrap();
    assert_eq!(page.last, 5);
    assert_eq!(
        texts(&page),
        (1..=5).map(|i| (i, format!("e{i}"))).collect::<Vec<_>>()
    );
    let page = s.event_read(&a, 0, 3, 1).await.unwrap();
    assert_eq!(texts(&page), vec![(4, "e4".to_string())]);
    // other partitions and apps are apart
    assert_eq!(
        s.event_read(&a, 1, 0, 10).await.unwrap(),
        EventPage::default()
    );
    assert_eq!(
        s.event_read(&b, 0, 0, 10).await.unwrap(),
        EventPage::default()
    );
    // past the caps the oldest go (by count, then by bytes)
    let three = EventCap {
        max_events: 3,
        ..open
    };
    assert_eq!(s.event_append(&a, 0, "e6", three).await.unwrap(), 6);
    let page = s.event_read(&a, 0, 0, 10).await.unwrap();
    assert_eq!(
        page.events.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    let ten_bytes = EventCap {
        max_bytes: 10,
        ..open
    };
    for text in ["aaaa", "bbbb", "cccc"] {
        s.event_append(&a, 2, text, ten_bytes).await.unwrap();
    }
    let page = s.event_read(&a, 2, 0, 10).await.unwrap();
    assert_eq!(
        texts(&page),
        vec![(2, "bbbb".to_string()), (3, "cccc".to_string())]
    );
    // cursors
    assert_eq!(s.event_cursor(&a, "hook", 0).await.unwrap(), None);
    s.event_cursor_set(&a, "hook", 0, 4, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(other.event_cursor(&a, "hook", 0).await.unwrap(), Some(4));
    assert_eq!(s.event_cursor(&a, "other-hook", 0).await.unwrap(), None);
    // leases: one holder at a time, renewable, free again once they lapse
    let ttl = Duration::from_millis(300);
    assert!(s.event_lease(&a, "hook", 0, "n1", ttl).await.unwrap());
    assert!(!other.event_lease(&a, "hook", 0, "n2", ttl).await.unwrap());
    assert!(other.event_lease(&a, "hook", 1, "n2", ttl).await.unwrap());
    assert!(s.event_lease(&a, "hook", 0, "n1", ttl).await.unwrap());
    let deadline = tokio::time::Instant::now() + WAIT;
    while !other.event_lease(&a, "hook", 0, "n2", ttl).await.unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!s.event_lease(&a, "hook", 0, "n1", ttl).await.unwrap());
}

/// Watches: bounded per app (refused together), pushed to the watching sessions only, ended
/// by unwatching (and the count with them); the unreachable mark lasts its time.
async fn watches_are_bounded_pushed_and_ended<S: Harness>() {
    let (s, other) = S::make().await;
    let a = app("watching");
    let (ann, bob, cat) = (acct("ann"), acct("bob"), acct("cat"));
    let (mut w1, mut w2) = (Conn::new(), Conn::new());
    let (w1_acct, w2_acct) = (acct("w1"), acct("w2"));
    s.session_open(opening(&a, &w1_acct, &w1)).await.unwrap();
    s.session_open(opening(&a, &w2_acct, &w2)).await.unwrap();
    let (s1, s2) = (s.session_of(&w1.h), s.session_of(&w2.h));
    let (u1, u2) = (
        User {
            app: &a,
            account: &w1_acct,
        },
        User {
            app: &a,
            account: &w2_acct,
        },
    );
    // ann, bob and cat are in one unit, which holds a share of the app's bound: the bound
    // that gives it 3
    let unit = |x: &Account| opensig_server::events::unit_of_name(x.as_str(), S::partitions());
    assert!(unit(&ann) == unit(&bob) && unit(&bob) == unit(&cat));
    let max = 3 * S::partitions() as usize;
    assert!(s
        .watch(u1, &s1, &[ann.clone(), bob.clone()], true, max)
        .await
        .unwrap());
    // 2 + 2 new would pass 3: nothing of it is kept
    assert!(!s
        .watch(u2, &s2, &[ann.clone(), cat.clone()], true, max)
        .await
        .unwrap());
    assert!(s
        .watch(u2, &s2, std::slice::from_ref(&ann), true, max)
        .await
        .unwrap());
    // watching again what is watched costs nothing
    assert!(s
        .watch(u1, &s1, std::slice::from_ref(&ann), true, max)
        .await
        .unwrap());
    let to = |account| User { app: &a, account };
    other.watchers_push(to(&ann), "to both").await.unwrap();
    other.watchers_push(to(&cat), "to nobody").await.unwrap();
    other.watchers_push(to(&bob), "to w1").await.unwrap();
    assert_eq!(w1.frames(3).await[1..], ["to both", "to w1"]);
    assert_eq!(w2.frames(2).await[1..], ["to both"]);
    // unwatching frees the app's count
    assert!(s
        .watch(u1, &s1, &[ann.clone(), bob.clone()], false, 0)
        .await
        .unwrap());
    assert!(s
        .watch(u2, &s2, &[bob.clone(), cat.clone()], true, max)
        .await
        .unwrap());
    other.watchers_push(to(&ann), "to w2").await.unwrap();
    assert_eq!(w2.frames(3).await[2..], ["to w2"]);
    // unreachable for its time only
    assert!(!other.unreachable(to(&ann)).await.unwrap());
    s.unreachable_set(to(&ann), Some(Duration::from_millis(200)))
        .await
        .unwrap();
    assert!(other.unreachable(to(&ann)).await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while other.unreachable(to(&ann)).await.unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "unreachable outlived its time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.unreachable_set(to(&bob), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    s.unreachable_set(to(&bob), None).await.unwrap();
    assert!(!other.unreachable(to(&bob)).await.unwrap());
}

/// A node's console report is read by every node while it lasts; the next one replaces it;
/// it is gone once its time is up (a node that stops reporting leaves the console).
async fn node_reports_are_shared_replaced_and_expire<S: Harness>() {
    let (s, other) = S::make().await;
    let (first, second) = (r#"{"id":"me","n":1}"#, r#"{"id":"me","n":2}"#);
    s.node_report_put(first, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(other
        .node_reports()
        .await
        .unwrap()
        .contains(&first.to_string()));
    s.node_report_put(second, Duration::from_millis(300))
        .await
        .unwrap();
    let seen = other.node_reports().await.unwrap();
    assert!(seen.contains(&second.to_string()) && !seen.contains(&first.to_string()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while other
        .node_reports()
        .await
        .unwrap()
        .contains(&second.to_string())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the report outlived its time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Expired mail stops holding the app's quota within `QUOTA_EXPIRY_STEP` (100 ms) of its
/// expiry, on both stores (not at a minute's sweep).
async fn expired_mail_leaves_the_app_s_quota<S: Harness>() {
    let (s, other) = S::make().await;
    let a = app("expiring");
    // (one unit's, with its share of the app's quota)
    let names: [Account; 3] = accounts_in_one_unit("e", S::partitions());
    let share = S::partitions() as usize;
    let to = |i: usize| User {
        app: &a,
        account: &names[i],
    };
    let p = tpl("m");
    let quota = MailQuota {
        app_messages: 2 * share,
        ..MailQuota::default()
    };
    let short = |id| MailItem {
        quota,
        ttl: Duration::from_millis(500),
        ..item(id, "x", &p)
    };
    for i in 0..2 {
        let r = s.mail_append(to(i), short("m")).await.unwrap();
        assert!(r.version().is_some(), "{r:?}");
    }
    let full = other.mail_append(to(2), short("n")).await.unwrap();
    assert_eq!(full, Appended::AppFull);
    // past their ttl (nobody read them): room again, on the other node too
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = other.mail_append(to(2), short("o")).await.unwrap();
    assert!(r.version().is_some(), "expired mail still counted: {r:?}");
}

/// One acknowledgement covering several messages frees exactly what they held in the app's
/// quota, messages and bytes, once — also when one of them had expired and left the quota
/// before (it is not counted out twice).
async fn one_acknowledgement_frees_exactly_what_its_messages_held<S: Harness>() {
    let (s, other) = S::make().await;
    let a = app("acked");
    // (one unit's, with its share of the app's quota)
    let names: [Account; 3] = accounts_in_one_unit("k", S::partitions());
    let share = S::partitions() as usize;
    let to = |i: usize| User {
        app: &a,
        account: &names[i],
    };
    let p = tpl("m");
    let quota = MailQuota {
        app_messages: 4 * share,
        app_bytes: 10 * share,
        ..MailQuota::default()
    };
    let mail = |text, ttl_ms| MailItem {
        quota,
        ttl: Duration::from_millis(ttl_ms),
        ..item("i", text, &p)
    };
    for (text, ttl) in [("aa", 3_600_000), ("bbb", 3_600_000), ("c", 300)] {
        let r = s.mail_append(to(0), mail(text, ttl)).await.unwrap();
        assert!(r.version().is_some(), "{text}: {r:?}");
    }
    // 6 bytes held; once "c" expired, 5 more fit (10), and only because it no longer counts
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = other
        .mail_append(to(1), mail("eeeee", 3_600_000))
        .await
        .unwrap();
    assert!(
        r.version().is_some(),
        "the expired message still held its byte: {r:?}"
    );
    // versions 1-3 acknowledged at once: "aa" and "bbb" leave, 5 bytes are held
    let page = other
        .mail_poll(
            to(0),
            Poll::Versions {
                ver_clear: 3,
                max: 10,
                seen_id: None,
            },
        )
        .await
        .unwrap();
    assert!(page.msgs.is_empty(), "{:?}", page.msgs);
    let r = s
        .mail_append(to(2), mail("fffff", 3_600_000))
        .await
        .unwrap();
    assert!(r.version().is_some(), "{r:?}");
    // exactly 10 bytes held now: one more is over (with "c" counted out twice it would fit)
    assert_eq!(
        other
            .mail_append(to(2), mail("g", 3_600_000))
            .await
            .unwrap(),
        Appended::AppFull
    );
}

/// A mailbox's numbering outlives its messages for `mailbox_state_keep_secs` after its last
/// message or poll, on both nodes; an empty mailbox left longer starts again at 1.
async fn mailbox_numbering_is_kept_for_its_time_then_starts_again<S: Harness>() {
    let l = Limits {
        mailbox_state_keep_secs: 1,
        ..limits()
    };
    let (s, other) = S::make_with(l).await;
    let (a, bob) = (app("app"), acct("bob"));
    let user = User {
        app: &a,
        account: &bob,
    };
    let p = tpl("push");
    let ack = |v| Poll::Versions {
        ver_clear: v,
        max: 10,
        seen_id: None,
    };
    let stored = |r: Appended| r.version().expect("stored");
    assert_eq!(
        stored(s.mail_append(user, item("m1", "a", &p)).await.unwrap()),
        1
    );
    other.mail_poll(user, ack(1)).await.unwrap();
    // empty, but numbered on
    assert_eq!(
        stored(other.mail_append(user, item("m2", "b", &p)).await.unwrap()),
        2
    );
    let page = s.mail_poll(user, ack(2)).await.unwrap();
    assert_eq!((page.ver_clear, page.msgs.len()), (2, 0));
    // left alone past the keep time: it starts again (the numbering of a mailbox that has
    // messages is kept while they are: their ttl is at most the keep time by default)
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        stored(other.mail_append(user, item("m3", "c", &p)).await.unwrap()),
        1
    );
    let page = s.mail_poll(user, ack(0)).await.unwrap();
    assert_eq!(page.ver_clear, 0);
    assert_eq!(page.msgs.iter().map(|m| m.0).collect::<Vec<_>>(), [1]);
}

/// A full mailbox takes messages again as soon as one leaves it, whichever way it left
/// (withdrawn, acknowledged by version or by id, expired), and a mailbox numbered again holds
/// as many as before.
async fn a_full_mailbox_takes_messages_again_however_they_left<S: Harness>() {
    let (s, other) = S::make().await;
    let (s, other) = (&s, &other);
    let (a, bob) = (app("app"), acct("bob"));
    let user = User {
        app: &a,
        account: &bob,
    };
    let p = tpl("push");
    let three = |id, ttl_ms| MailItem {
        max: 3,
        ttl: Duration::from_millis(ttl_ms),
        ..item(id, id, &p)
    };
    let hour = 3_600_000;
    let fill = |id: &'static str| async move {
        let r = s.mail_append(user, three(id, hour)).await.unwrap();
        assert!(r.version().is_some(), "{id}: {r:?}");
    };
    let full = |id: &'static str| async move {
        let r = other.mail_append(user, three(id, hour)).await.unwrap();
        assert_eq!(r, Appended::Full, "{id}");
    };
    for id in ["a", "b", "c"] {
        fill(id).await;
    }
    full("d").await;
    // withdrawn
    assert!(other.mail_withdraw(user, 3, "c").await.unwrap());
    fill("d").await;
    full("e").await;
    // acknowledged by version
    let versions = |ver_clear| Poll::Versions {
        ver_clear,
        max: 10,
        seen_id: None,
    };
    let page = other.mail_poll(user, versions(1)).await.unwrap();
    assert_eq!(page.msgs.len(), 2, "b and d are left");
    fill("e").await;
    full("f").await;
    // dropped by id
    let ids = ["b".to_string()];
    other
        .mail_poll(
            user,
            Poll::Ids {
                clear: &ids,
                max: 0,
            },
        )
        .await
        .unwrap();
    fill("f").await;
    full("g").await;
    // numbered again (acknowledged above the last version): the same three, as full
    let page = other.mail_poll(user, versions(100)).await.unwrap();
    let numbers: Vec<u64> = page.msgs.iter().map(|m| m.0).collect();
    assert_eq!(numbers, [101, 102, 103]);
    full("g").await;
    other.mail_poll(user, versions(103)).await.unwrap();
    for id in ["g", "h"] {
        fill(id).await;
    }
    let short = s.mail_append(user, three("i", 200)).await.unwrap();
    assert!(short.version().is_some(), "{short:?}");
    full("j").await;
    // expired (and not polled since): it makes room by itself
    tokio::time::sleep(Duration::from_millis(400)).await;
    fill("j").await;
    full("k").await;
}

/// Resends are dropped for every id of the window, however many the sender sent.
async fn every_id_of_the_dedup_window_is_remembered<S: Harness>() {
    let (s, other) = S::make().await;
    let (a, from, to) = (app("app"), acct("ann"), acct("bob"));
    let user = User {
        app: &a,
        account: &to,
    };
    let window = Duration::from_secs(300);
    let ids: Vec<String> = (0..10_001).map(|i| format!("id{i}")).collect();
    let p = tpl("push");
    let with = |id| MailItem {
        dedup: Some(Dedup {
            from: &from,
            id,
            window,
        }),
        max: 20_000,
        ..item(id, "x", &p)
    };
    for batch in ids.chunks(100) {
        let sends = batch.iter().enumerate().map(|(i, id)| {
            let store = if i % 2 == 0 { &s } else { &other };
            store.mail_append(user, with(id))
        });
        for r in futures_util::future::join_all(sends).await {
            assert!(r.unwrap().version().is_some());
        }
    }
    let again = other.mail_append(user, with(&ids[0])).await.unwrap();
    assert_eq!(again, Appended::Duplicate);
}

/// A step's events in partition 0, one on each of `whens`, named "<step>:<when>".
fn planned(app: &AppId, step: &str, whens: &[When], cap: EventCap) -> StepEvents {
    StepEvents {
        app: app.to_string(),
        events: whens
            .iter()
            .map(|&when| Planned {
                when,
                partition: 0,
                text: format!("{step}:{}", when.name()).into(),
            })
            .collect(),
        cap,
    }
}

/// Messages sent at once to one app (Redis stores those that wait for the app's previous call
/// in one call): each gets its own outcome — stored with its own version and text, a resend
/// found a duplicate, the app's quota refusing exactly those past it — and its own events.
async fn messages_sent_at_once_each_get_their_own_outcome<S: Harness>() {
    let (s, other) = S::make().await;
    let a = app("burst");
    let (from, to) = (acct("ann"), acct("bob"));
    let user = User {
        app: &a,
        account: &to,
    };
    let p = tpl("push");
    let cap = EventCap {
        max_events: 0,
        max_bytes: 0,
        max_age: Duration::from_secs(3600),
    };
    let plan = |id: &str| planned(&a, id, &[When::Offline, When::Done], cap);
    // 60 distinct messages (ids m0..m59, each sent twice), the app's quota 40 messages
    let ids: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();
    let texts: Vec<String> = ids.iter().map(|id| format!("text of {id}")).collect();
    let plans: Vec<StepEvents> = ids.iter().map(|id| plan(id)).collect();
    let send = |i: usize| MailItem {
        dedup: Some(Dedup {
            from: &from,
            id: &ids[i],
            window: Duration::from_secs(300),
        }),
        quota: MailQuota {
            // (bob's unit's share of it: 40)
            app_messages: 40 * S::partitions() as usize,
            ..MailQuota::default()
        },
        events: &plans[i],
        ..item(&ids[i], &texts[i], &p)
    };
    let sends = (0..120).map(|n| {
        let i = n % 60;
        let store = if n % 3 == 0 { &other } else { &s };
        async move { (i, store.mail_append(user, send(i)).await.unwrap()) }
    });
    let outcomes = futures_util::future::join_all(sends).await;
    let mut stored = std::collections::BTreeMap::new();
    let (mut dup, mut full) = (0, 0);
    for (i, r) in outcomes {
        match r {
            Appended::Stored { version, offline } => {
                assert!(offline, "{i}: bob has no session");
                assert!(
                    stored.insert(version, i).is_none(),
                    "version {version} twice"
                );
            }
            Appended::Duplicate => dup += 1,
            Appended::AppFull => full += 1,
            other => panic!("{i}: {other:?}"),
        }
    }
    assert_eq!(stored.len(), 40, "the quota");
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>()
    );
    // a refused message is not remembered as sent: its resend was refused again or stored
    assert_eq!(dup + full, 80);
    let stored_ids: std::collections::BTreeSet<usize> = stored.values().copied().collect();
    assert_eq!(stored_ids.len(), 40, "each message stored once");
    // what a poll returns is each version's own text
    let page = other
        .mail_poll(
            user,
            Poll::Versions {
                ver_clear: 0,
                max: 100,
                seen_id: None,
            },
        )
        .await
        .unwrap();
    let got: Vec<(u64, String)> = page.msgs.iter().map(|(v, t)| (*v, t.to_string())).collect();
    let want: Vec<(u64, String)> = stored
        .iter()
        .map(|(v, i)| (*v, texts[*i].clone()))
        .collect();
    assert_eq!(got, want);
    // each stored message appended its own two events, in the order they were stored (in
    // the first partition of bob's unit)
    let first = opensig_server::events::unit_of_name("bob", S::partitions()) * 8;
    let log = s.event_read(&a, first, 0, 1000).await.unwrap();
    let events: Vec<String> = log.events.iter().map(|(_, t)| t.to_string()).collect();
    let want: Vec<String> = stored
        .values()
        .flat_map(|i| [format!("m{i}:offline"), format!("m{i}:done")])
        .collect();
    assert_eq!(events, want);
    // messages sent at once from both nodes to an account with a session on one of them
    // (Redis pushes those of one call in one bundle): every push arrives, in version order
    let carl = acct("carl");
    let mut c = Conn::new();
    assert!(other
        .session_open(opening(&a, &carl, &c))
        .await
        .unwrap()
        .previous
        .is_none());
    let to_carl = User {
        app: &a,
        account: &carl,
    };
    let sends = (0..60).map(|i| {
        let store = if i % 2 == 0 { &other } else { &s };
        let m = MailItem {
            max: 1000,
            ..item(&ids[i], &texts[i], &p)
        };
        async move { store.mail_append(to_carl, m).await.unwrap() }
    });
    for r in futures_util::future::join_all(sends).await {
        assert!(
            matches!(r, Appended::Stored { offline: false, .. }),
            "{r:?}"
        );
    }
    let got = c.frames(61).await;
    let pushes: Vec<&str> = got.iter().skip(1).map(String::as_str).collect();
    let want: Vec<String> = (1..=60).map(|v| format!("push#{v}")).collect();
    assert_eq!(pushes, want);
}

/// A step's events are appended with it, each on its outcome (the store says which happened,
/// the rules said what to append): joins, leaves, messages, attribute changes, letters,
/// sessions. An empty channel whose attributes expire hands the rules a timer.
async fn steps_append_their_events_on_their_outcomes<S: Harness>() {
    let (s, other) = S::make().await;
    let mut due = work(&other);
    let a = app("ev");
    let (ann, bob) = (acct("ann"), acct("bob"));
    let cap = EventCap {
        max_events: 0,
        max_bytes: 0,
        max_age: Duration::from_secs(3600),
    };
    // every event of a step in its first partition (with several units: its unit's), named
    // after its outcome and the step; what each step appended, read from every partition
    let all = [When::First, When::Done, When::Last, When::Offline];
    let plan = |step: &str| planned(&a, step, &all, cap);
    let mut seen = vec![0u64; other.event_partitions() as usize];
    let mut appended = async || {
        let mut texts = Vec::new();
        for (q, seen) in seen.iter_mut().enumerate() {
            let page = other.event_read(&a, q as u32, *seen, 100).await.unwrap();
            *seen = page.last;
            texts.extend(page.events.iter().map(|(_, t)| t.to_string()));
        }
        texts
    };
    // sessions: the first one of an account, another, a close that is not the session's
    let (ca, cb) = (Conn::new(), Conn::new());
    let out = plan("open");
    let o = Opening {
        events: &out,
        ..opening(&a, &ann, &ca)
    };
    assert!(s.session_open(o).await.unwrap().previous.is_none());
    assert_eq!(appended().await, ["open:first", "open:done"]);
    let o = Opening {
        events: &out,
        ..opening(&a, &ann, &cb)
    };
    let old = s.session_open(o).await.unwrap().previous.unwrap();
    assert_eq!(appended().await, ["open:done"]);
    let ann_user = User {
        app: &a,
        account: &ann,
    };
    let close = plan("close");
    assert!(!s.session_close(ann_user, &old, &close).await.unwrap());
    assert_eq!(appended().await, Vec::<String>::new());
    // joins: the first member, a second one, a member joining again
    let room = chan_name("room");
    let at = Chan {
        app: &a,
        channel: &room,
    };
    let join = plan("join");
    let j = |account, conn| Joining {
        events: &join,
        ..joining(account, conn, None)
    };
    s.join(at, j(&ann, &ca.h)).await.unwrap();
    assert_eq!(appended().await, ["join:first", "join:done"]);
    other.join(at, j(&bob, &cb.h)).await.unwrap();
    assert_eq!(appended().await, ["join:done"]);
    s.join(at, j(&bob, &cb.h)).await.unwrap();
    assert_eq!(appended().await, Vec::<String>::new());
    // messages: sent, refused to a non-member
    let m = tpl("m");
    let sent = plan("msg");
    let p = Publish {
        events: &sent,
        ..Publish::event(ev(&m))
    };
    assert_eq!(s.publish(at, p).await.unwrap(), Published::Sent);
    let stranger = acct("stranger");
    let p = Publish {
        member: Some(&stranger),
        ..p
    };
    assert_eq!(s.publish(at, p).await.unwrap(), Published::NotMember);
    assert_eq!(appended().await, ["msg:done"]);
    // attributes: made, refused past the maximum; the channel's ttl is 1 s
    let upd = tpl("u");
    let attr = plan("attr");
    let topic = AttrOp::Set(AttrSet {
        setting: Some(Setting::Ttl(1)),
        ..match set_attr("topic", "x", 1) {
            AttrOp::Set(a) => a,
            _ => unreachable!(),
        }
    });
    let change = |op| AttrChange {
        events: &attr,
        op,
        event: ev(&upd),
    };
    assert_eq!(
        s.attr_change(at, change(topic)).await.unwrap(),
        AttrOutcome::Done
    );
    let second = set_attr("second", "y", 1);
    let refused = s.attr_change(at, change(second)).await.unwrap();
    assert_eq!(refused, AttrOutcome::TooMany);
    assert_eq!(appended().await, ["attr:done"]);
    // letters: to an account with a session, to one without
    let p = tpl("push");
    let mail = plan("mail");
    let letter = |id| MailItem {
        events: &mail,
        ..item(id, "hi", &p)
    };
    let r = other.mail_append(ann_user, letter("m1")).await.unwrap();
    assert!(!r.offline());
    assert_eq!(appended().await, ["mail:done"]);
    let bob_user = User {
        app: &a,
        account: &bob,
    };
    let r = s.mail_append(bob_user, letter("m2")).await.unwrap();
    assert!(r.offline());
    assert_eq!(appended().await, ["mail:offline", "mail:done"]);
    // leaves: not the last member, the last one; nobody listens to another's
    let leave = plan("leave");
    let sb = s.session_of(&cb.h);
    let sa = s.session_of(&ca.h);
    let l = |account, session| Leaving {
        events: &leave,
        account,
        session,
        event: None,
    };
    assert!(!s.leave(at, l(&ann, &sb)).await.unwrap());
    assert_eq!(appended().await, Vec::<String>::new());
    assert!(s.leave(at, l(&bob, &sb)).await.unwrap());
    assert_eq!(appended().await, ["leave:done"]);
    assert!(other.leave(at, l(&ann, &sa)).await.unwrap());
    assert_eq!(appended().await, ["leave:done", "leave:last"]);
    // the session ends
    let close_it = s.session_of(&cb.h);
    assert!(s.session_close(ann_user, &close_it, &close).await.unwrap());
    assert_eq!(appended().await, ["close:done"]);
    // the empty channel's attribute expires with its ttl: the rules hear of it (once)
    let expired = Timer::ChannelExpired(a.clone(), room.clone());
    let got = tokio::time::timeout(WAIT, async {
        loop {
            match due.recv().await.expect("work") {
                Work::Timer { timer, claim } if timer == expired => {
                    other.timer_done(claim).await;
                    return timer;
                }
                Work::Timer { claim, .. } => other.timer_done(claim).await,
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(got.expect("no expiry timer"), expired);
    assert_eq!(s.channel_attrs(at).await.unwrap(), vec![]);
}

/// A poll that finds a mailbox's numbering went back under its client (`store::renumbered`)
/// — the message held at the version it acknowledges is not the one it processed there, or it
/// acknowledges a version above the last one handed out (a Redis primary died before its
/// replica had the messages that used them; a server without Redis restarted) — numbers the
/// messages above the acknowledged version again after it, in their order, and drops none of
/// them; the numbering goes on from there. Every store alike.
async fn a_poll_that_finds_the_numbering_went_back_numbers_again<S: Harness>() {
    let (s, other) = S::make().await;
    let (a, u) = (app("app"), acct("eve"));
    let user = User {
        app: &a,
        account: &u,
    };
    let p = tpl("p");
    let poll = |ver_clear, seen_id| Poll::Versions {
        ver_clear,
        max: 10,
        seen_id,
    };
    let append = |i: u32| {
        let (id, text) = (format!("id{i}"), format!("t{i}"));
        let s = &s;
        let p = &p;
        async move {
            let r = s.mail_append(user, item(&id, &text, p)).await.unwrap();
            r.version().expect("stored")
        }
    };
    let page = |m: MailPage| {
        let msgs: Vec<(u64, String)> = m.msgs.iter().map(|(v, t)| (*v, t.to_string())).collect();
        (m.ver_clear, msgs)
    };
    let t = |v: u64, i: u32| (v, format!("t{i}"));
    for i in 1..=3 {
        assert_eq!(append(i).await, u64::from(i));
    }
    // the message at the version acknowledged is the one processed there: as ever
    let got = other.mail_poll(user, poll(2, Some("id2"))).await.unwrap();
    assert_eq!(page(got), (2, vec![t(3, 3)]));
    // the client processed another message at version 3 than the mailbox holds there
    let got = s.mail_poll(user, poll(3, Some("lost"))).await.unwrap();
    assert_eq!(page(got), (3, vec![t(4, 3)]), "numbered again, not dropped");
    // withdrawing what was at 4 before (an invitation, by its id) leaves what is there now
    assert!(!other.mail_withdraw(user, 4, "id4").await.unwrap());
    assert_eq!(append(4).await, 5, "the numbering goes on from there");
    // a client that acknowledges a version above the last one handed out
    let got = other.mail_poll(user, poll(9, None)).await.unwrap();
    assert_eq!(page(got), (9, vec![t(10, 3), t(11, 4)]));
    assert_eq!(append(5).await, 12);
    // matching, or no id said: acknowledged as ever
    let got = s.mail_poll(user, poll(10, Some("id3"))).await.unwrap();
    assert_eq!(page(got), (10, vec![t(11, 4), t(12, 5)]));
    assert_eq!(s.footprint().await.unwrap().stored_messages, 2);
    let got = other.mail_poll(user, poll(12, None)).await.unwrap();
    assert_eq!(page(got), (12, vec![]));
    assert_eq!(s.footprint().await.unwrap().stored_messages, 0);
    // what it renumbered still counts against the app's quota exactly: a quota of one
    // message takes one more, and then no more
    let quota = MailQuota {
        app_messages: 1,
        ..MailQuota::default()
    };
    let one = |id| MailItem {
        quota,
        ..item(id, "x", &p)
    };
    assert!(matches!(
        s.mail_append(user, one("q1")).await.unwrap(),
        Appended::Stored { .. }
    ));
    assert_eq!(
        s.mail_append(user, one("q2")).await.unwrap(),
        Appended::AppFull
    );
}

/// A mailbox exists (for its numbering) only once a message was stored in it: a poll of one
/// nobody wrote to (every login of such an account polls from 0) or a message refused keeps
/// nothing, in either store.
async fn a_mailbox_is_kept_only_once_written<S: Harness>() {
    let (s, other) = S::make().await;
    let a = app("app");
    let (ann, bob) = (acct("ann"), acct("bob"));
    let to = |account| User { app: &a, account };
    // a poll from `ver_clear` that finds nothing
    async fn nothing<S: Store>(s: &S, who: User<'_>, ver_clear: u64) -> bool {
        let poll = Poll::Versions {
            ver_clear,
            max: 10,
            seen_id: None,
        };
        s.mail_poll(who, poll).await.unwrap().msgs.is_empty()
    }
    let p = tpl("p");
    assert!(nothing(&s, to(&ann), 0).await);
    let busy = MailItem {
        quota: MailQuota {
            busy: true,
            ..MailQuota::default()
        },
        ..item("id0", "t0", &p)
    };
    assert_eq!(s.mail_append(to(&ann), busy).await.unwrap(), Appended::Busy);
    assert!(nothing(&other, to(&ann), 0).await);
    // a mode-1 poll (by ids) too
    let by_ids = Poll::Ids {
        clear: &["id0".to_string()],
        max: 10,
    };
    let page = s.mail_poll(to(&ann), by_ids).await.unwrap();
    assert!(page.msgs.is_empty());
    assert_eq!(s.footprint().await.unwrap().mailboxes, 0, "ann's");
    let stored = |id, text| s.mail_append(to(&bob), item(id, text, &p));
    assert_eq!(stored("id1", "t1").await.unwrap().version(), Some(1));
    assert!(nothing(&other, to(&bob), 1).await);
    let fp = s.footprint().await.unwrap();
    assert_eq!(
        (fp.mailboxes, fp.stored_messages),
        (1, 0),
        "bob's numbering is kept, his message acknowledged"
    );
    assert!(nothing(&s, to(&ann), 0).await);
    assert_eq!(s.footprint().await.unwrap().mailboxes, 1);
    // and the numbering goes on
    assert_eq!(stored("id2", "t2").await.unwrap().version(), Some(2));
}

macro_rules! conformance {
    ($module:ident, $store:ty, $($test:ident),* $(,)?) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test::<$store>().await;
                }
            )*
        }
    };
}

macro_rules! suite {
    ($($module:ident: $store:ty),*) => {
        $(conformance!(
            $module,
            $store,
            sessions_replace_and_close_by_compare,
            racing_logins_replace_exactly_one,
            racing_logins_on_one_node_leave_the_winner_reachable,
            user_attributes_and_a_racing_maximum,
            mailboxes_number_push_acknowledge_and_bound,
            mail_quotas_per_app_and_per_sender,
            channels_sequence_events_for_members,
            channel_history_numbers_keeps_and_trims,
            channel_numbers_catch_up_to_what_a_member_saw,
            a_poll_that_finds_the_numbering_went_back_numbers_again,
            settings_gate_events_and_rates,
            empty_channels_keep_state_only_for_attributes,
            channel_attributes_share_the_app_s_quota,
            racing_joins_leaves_and_attributes,
            channels_are_listed_by_name_a_page_at_a_time,
            invitations_live_step_and_end_once,
            a_caller_s_invitations_are_its_own,
            accept_and_timeout_race_to_one_outcome,
            timers_fire_once_and_rescheduling_replaces,
            event_logs_number_bound_cursor_and_lease,
            steps_append_their_events_on_their_outcomes,
            mailbox_numbering_is_kept_for_its_time_then_starts_again,
            every_id_of_the_dedup_window_is_remembered,
            a_full_mailbox_takes_messages_again_however_they_left,
            messages_sent_at_once_each_get_their_own_outcome,
            expired_mail_leaves_the_app_s_quota,
            one_acknowledgement_frees_exactly_what_its_messages_held,
            node_reports_are_shared_replaced_and_expire,
            watches_are_bounded_pushed_and_ended,
            a_mailbox_is_kept_only_once_written,
        );)*
    };
}

suite!(memory: Memory, redis: Redis);

/// Redis only: a channel someone joined and left keeps no key at all (as the memory store
/// keeps nothing), and neither does a message published to no one.
#[tokio::test]
async fn redis_keeps_no_key_of_a_channel_joined_and_left() {
    let prefix = common::unique_prefix();
    let cfg = node_cfg(&prefix, "k");
    let s = Redis::connect(cfg, &limits()).await.unwrap();
    let (a, ann, room) = (app("app"), acct("ann"), chan_name("passing"));
    let c = Conn::new();
    let at = Chan {
        app: &a,
        channel: &room,
    };
    let frame = tpl("join");
    s.join(at, joining(&ann, &c.h, Some(ev(&frame))))
        .await
        .unwrap();
    let msg = tpl("msg");
    let publish = Publish {
        events: &NO_EVENTS,
        seen: Seen::default(),
        event: ev(&msg),
        member: Some(&ann),
        dedup: None,
        rate_limited: true,
        message: None,
    };
    assert_eq!(s.publish(at, publish).await.unwrap(), Published::Sent);
    let session = s.session_of(&c.h);
    let l = Leaving {
        events: &NO_EVENTS,
        account: &ann,
        session: &session,
        event: Some(ev(&frame)),
    };
    assert!(s.leave(at, l).await.unwrap());
    let keys = common::redis_keys(&format!("{prefix}*")).await;
    let about: Vec<&String> = keys.iter().filter(|k| k.contains("passing")).collect();
    assert!(about.is_empty(), "left behind: {about:?}");
}

/// Redis only: a channel with attributes is kept whole while it has members — a leave that
/// leaves members gives none of its keys an expiry (the script skips the "empty?" step
/// then) — and from its last member's leave for its ttl; the next first member (however
/// long a member list it asks for: the script tells "first" from that list, or counts when
/// the list is of one) takes the expiry off again.
#[tokio::test]
async fn redis_a_channel_expires_only_once_empty() {
    let prefix = common::unique_prefix();
    let s = Redis::connect(node_cfg(&prefix, "e"), &limits())
        .await
        .unwrap();
    let (a, room) = (app("app"), chan_name("lasting"));
    let at = Chan {
        app: &a,
        channel: &room,
    };
    let (ann, bob) = (acct("ann"), acct("bob"));
    let (ca, cb) = (Conn::new(), Conn::new());
    let frame = tpl("ev");
    let expiring = || async {
        let keys = common::redis_keys_with_ttl(&format!("{prefix}*")).await;
        let about: Vec<(String, i64)> = keys
            .into_iter()
            .filter(|(k, _)| k.contains("lasting"))
            .collect();
        assert!(about.len() >= 3, "the channel's keys: {about:?}");
        about
            .into_iter()
            .filter(|(_, ttl)| *ttl >= 0)
            .collect::<Vec<_>>()
    };
    for (who, c) in [(&ann, &ca), (&bob, &cb)] {
        s.join(at, joining(who, &c.h, Some(ev(&frame))))
            .await
            .unwrap();
    }
    let change = AttrChange {
        events: &NO_EVENTS,
        op: set_attr("topic", "x", 10),
        event: ev(&frame),
    };
    s.attr_change(at, change).await.unwrap();
    let leave = |who, session| Leaving {
        events: &NO_EVENTS,
        account: who,
        session,
        event: Some(ev(&frame)),
    };
    let (sa, sb) = (s.session_of(&ca.h), s.session_of(&cb.h));
    assert!(s.leave(at, leave(&ann, &sa)).await.unwrap());
    assert_eq!(expiring().await, vec![], "bob is still in");
    assert!(s.leave(at, leave(&bob, &sb)).await.unwrap());
    let kept = expiring().await;
    assert!(kept.len() >= 3, "kept for its ttl once empty: {kept:?}");
    // back, asking for a list of 10 members, then (after emptying it again) of one
    for list_max in [10, 1] {
        let j = Joining {
            list_max,
            ..joining(&ann, &ca.h, Some(ev(&frame)))
        };
        assert!(s.join(at, j).await.unwrap().fresh);
        assert_eq!(
            expiring().await,
            vec![],
            "a member again (list of {list_max})"
        );
        assert!(s.leave(at, leave(&ann, &sa)).await.unwrap());
        assert!(!expiring().await.is_empty(), "empty again");
    }
}

/// Redis only: a poll from 0 skips its script only for a mailbox with neither messages nor
/// numbering; one whose numbering went while its messages stay (evicted, or an operator's
/// `mailbox_state_keep_secs` below a message's ttl) still hands its messages out.
#[tokio::test]
async fn redis_a_poll_from_0_finds_messages_without_their_numbering() {
    let prefix = common::unique_prefix();
    let s = Redis::connect(node_cfg(&prefix, "p"), &limits())
        .await
        .unwrap();
    let a = app("app");
    let (bob, cy) = (acct("bob"), acct("cy"));
    let to = |account| User { app: &a, account };
    let from_0 = Poll::Versions {
        ver_clear: 0,
        max: 10,
        seen_id: None,
    };
    let p = tpl("p");
    let r = s.mail_append(to(&bob), item("i", "hello", &p)).await;
    assert!(r.unwrap().version().is_some());
    let meta = common::redis_keys(&format!("{prefix}mbm *")).await;
    assert_eq!(meta.len(), 1, "{meta:?}");
    common::redis_cli_cmd(&["DEL", &meta[0]]);
    let page = s.mail_poll(to(&bob), from_0).await.unwrap();
    let texts: Vec<&str> = page.msgs.iter().map(|(_, t)| &**t).collect();
    assert_eq!(texts, ["hello"]);
    // nobody wrote to cy: nothing, and nothing kept
    let page = s.mail_poll(to(&cy), from_0).await.unwrap();
    assert_eq!((page.ver_clear, page.msgs.len()), (0, 0));
    let kept = common::redis_keys(&format!("{prefix}mb* * cy")).await;
    assert!(kept.is_empty(), "{kept:?}");
}

/// Redis only: a poll that changes nothing (by versions or, mode 1, by ids) leaves the
/// numbering's expiry as the last message set it, never shorter (a poll extends it as messages do: when an eighth of the keep time
/// has passed). `a_mailbox_is_kept_only_once_written` has the poll of a mailbox nobody wrote
/// to, in both stores.
#[tokio::test]
async fn redis_polls_extend_the_numbering_s_keep_as_messages_do() {
    let prefix = common::unique_prefix();
    let s = Redis::connect(node_cfg(&prefix, "k"), &limits())
        .await
        .unwrap();
    let a = app("app");
    let bob = acct("bob");
    let poll = |ver_clear| Poll::Versions {
        ver_clear,
        max: 10,
        seen_id: None,
    };
    let to = |account| User { app: &a, account };
    // bob's numbering is kept for the keep time and an eighth from his message
    let p = tpl("p");
    let r = s
        .mail_append(to(&bob), item("id1", "t1", &p))
        .await
        .unwrap();
    assert_eq!(r.version(), Some(1));
    let page = s.mail_poll(to(&bob), poll(1)).await.unwrap();
    assert!(page.msgs.is_empty());
    let page = s.mail_poll(to(&bob), poll(1)).await.unwrap();
    assert!(page.msgs.is_empty());
    // a mode-1 poll (by ids) keeps it by the same rule
    let by_ids = Poll::Ids {
        clear: &["id1".to_string()],
        max: 10,
    };
    let page = s.mail_poll(to(&bob), by_ids).await.unwrap();
    assert!(page.msgs.is_empty());
    let keep = limits().mailbox_state_keep_secs as i64 * 1000;
    let meta = common::redis_keys_with_ttl(&format!("{prefix}*"))
        .await
        .into_iter()
        .find(|(k, _)| k.ends_with(" bob") && k.contains(":mbm "))
        .expect("bob's numbering is kept");
    assert!(
        meta.1 > keep,
        "a poll shortened the numbering's expiry: {meta:?}"
    );
    // and it goes on from there
    let r = s
        .mail_append(to(&bob), item("id2", "t2", &p))
        .await
        .unwrap();
    assert_eq!(r.version(), Some(2));
}

/// Whether `want` comes among the timers of `rx` within `within`.
async fn fires(
    rx: &mut mpsc::UnboundedReceiver<Work<Redis>>,
    want: Timer,
    within: Duration,
) -> bool {
    let got = tokio::time::timeout(within, async {
        loop {
            if let Work::Timer { timer, .. } = rx.recv().await.expect("work") {
                if timer == want {
                    return;
                }
            }
        }
    });
    got.await.is_ok()
}

/// Redis only: a timer one node scheduled fires on another when the first stops — whether
/// that node had indexed the timer's app (the cluster's index of apps with timers) or stopped
/// before it could (a node's apps are asked when it is reaped, or as it stops on purpose). The
/// other node never served those apps: nothing else tells it of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_fires_on_another_node_when_its_node_stops() {
    let prefix = common::unique_prefix();
    let node = |n: &str| node_cfg(&prefix, n);
    let a = Redis::connect(node("a"), &limits()).await.unwrap();
    let b = Redis::connect(node("b"), &limits()).await.unwrap();
    let _a_work = work(&a);
    let mut rx = work(&b);
    // indexed: `a` asked its new timer's app and wrote when it is due, then stopped
    let t1 = Timer::MemberNum(app("x1"), chan_name("room"));
    a.schedule(t1.clone(), Duration::from_secs(2))
        .await
        .unwrap();
    let index = format!("{prefix}due *");
    let indexed = tokio::time::timeout(WAIT, async {
        while common::redis_keys(&index).await.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert!(indexed.await.is_ok(), "the index never named the app");
    a.halt();
    assert!(
        fires(&mut rx, t1, WAIT * 2).await,
        "the indexed timer did not fire on the other node"
    );
    // before `a` could be reaped (its registration lasts 5 s): the index carried it
    assert_eq!(
        common::redis_keys(&format!("{prefix}reap *")).await,
        Vec::<String>::new(),
        "it fired only once its node was reaped"
    );
    // not indexed: `c` runs no timer poller (no rules), schedules and stops
    let c = Redis::connect(node("c"), &limits()).await.unwrap();
    let t2 = Timer::MemberNum(app("x2"), chan_name("room"));
    c.schedule(t2.clone(), Duration::from_millis(10))
        .await
        .unwrap();
    c.halt();
    assert!(
        fires(&mut rx, t2, WAIT * 6).await,
        "the timer of a node that stopped before indexing it did not fire when it was reaped"
    );
    // a node that stops on purpose hands its apps' timers over as it goes (it is not reaped)
    let d_cfg = node("d");
    let d_id = d_cfg.node_id.clone();
    let d = Redis::connect(d_cfg, &limits()).await.unwrap();
    let t3 = Timer::MemberNum(app("x3"), chan_name("room"));
    d.schedule(t3.clone(), Duration::from_millis(10))
        .await
        .unwrap();
    d.deregister().await;
    assert!(
        fires(&mut rx, t3, WAIT).await,
        "the timer of a node that stopped on purpose did not fire"
    );
    // and leaves no list of its apps behind
    let lists = common::redis_keys(&format!("{prefix}napps *")).await;
    assert!(
        !lists.iter().any(|k| k.ends_with(&format!(" {d_id}"))),
        "{lists:?}"
    );
}

/// Redis only: a failover that loses the last writes of the registry's primary may lose the
/// index's word on an app's timers. A node whose heartbeat finds the registry back after
/// failing writes its apps' timers to the index again (the other nodes fire them from it if
/// this one stops), not at its next periodic ask minutes later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_indexes_its_timers_again_when_the_registry_comes_back() {
    let own = SmallRedis::start("64mb");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-u", &own.url])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let prefix = "back:";
    let index = format!("{prefix}due {{{prefix}~}}");
    let cfg = RedisConfig {
        url: own.url.clone(),
        ..node_cfg(prefix, "a")
    };
    let a = Redis::connect(cfg, &limits()).await.unwrap();
    let _work = work(&a);
    let x = app("x");
    a.schedule(
        Timer::MemberNum(x.clone(), chan_name("room")),
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let named = |cli: &dyn Fn(&[&str]) -> String| cli(&["ZRANGE", &index, "0", "-1"]) == *x;
    common::wait_for("the index to name the app", || async { named(&cli) }).await;
    // the write is lost (as by a failover), and the registry is out of reach for longer
    // than a Redis operation may take: the heartbeat fails, then gets through again
    assert_eq!(cli(&["DEL", &index]), "1");
    assert_eq!(cli(&["CLIENT", "PAUSE", "3000", "WRITE"]), "OK");
    // (the pause, the heartbeat's timeout and the next tick: longer than `wait_for` waits)
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while !named(&cli) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the index did not name the app again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let due: f64 = cli(&["ZSCORE", &index, &x]).parse().unwrap();
    let now_ms: f64 = cli(&["TIME"])
        .lines()
        .next()
        .unwrap()
        .parse::<f64>()
        .unwrap()
        * 1000.0;
    assert!(
        due > now_ms + 3_000_000.0,
        "indexed as due in {} ms, not in about an hour",
        due - now_ms
    );
}

/// Redis only: a node forgets an app nothing on it uses any more (`idle_app_forget_secs`) —
/// it leaves the node's list of apps and, on a Redis Cluster, its topic is unsubscribed — and
/// keeps every app it still serves (a session, a channel member). An app used again is
/// registered again, and messages reach its sessions on that node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_forgets_the_apps_it_no_longer_serves() {
    let prefix = common::unique_prefix();
    // (each app one unit: the lists below name apps)
    let one = |n: &str| RedisConfig {
        partitions: 1,
        ..node_cfg(&prefix, n)
    };
    let cfg = one("a");
    let napps = format!("{prefix}napps {{{prefix}~}} {}", cfg.node_id);
    let topic = |app: &str| {
        if common::redis_cluster() {
            format!("{prefix}n {{{prefix}{app}}} {}", cfg.node_id)
        } else {
            String::new()
        }
    };
    let quick = Limits {
        idle_app_forget_secs: 1,
        ..limits()
    };
    let a = Redis::connect(cfg.clone(), &quick).await.unwrap();
    let b = Redis::connect(one("b"), &limits()).await.unwrap();
    let (kept, member, gone) = (app("kept"), app("member"), app("gone"));
    let ann = acct("ann");
    let c_kept = Conn::new();
    a.session_open(opening(&kept, &ann, &c_kept)).await.unwrap();
    let c_member = Conn::new();
    let room = Chan {
        app: &member,
        channel: &chan_name("room"),
    };
    a.join(room, joining(&ann, &c_member.h, None))
        .await
        .unwrap();
    let c_gone = Conn::new();
    let user = User {
        app: &gone,
        account: &ann,
    };
    a.session_open(opening(&gone, &ann, &c_gone)).await.unwrap();
    let listed = || common::redis_cli_cmd(&["SMEMBERS", &napps]);
    for app in [&kept, &member, &gone] {
        assert!(
            listed().lines().any(|l| l == app.as_str()),
            "{app}: {}",
            listed()
        );
    }
    let session = a.session_of(&c_gone.h);
    assert!(a.session_close(user, &session, &NO_EVENTS).await.unwrap());
    until_forgotten(&napps, &gone, "the app nothing uses was not forgotten").await;
    // forgotten after a second unused; the others were in use all that time
    for app in [&kept, &member] {
        assert!(
            listed().lines().any(|l| l == app.as_str()),
            "{app}: {}",
            listed()
        );
    }
    let subscribers = |app: &str| -> u64 {
        let topic = topic(app);
        (common::redis_cluster_ports().iter())
            .map(|p| {
                let out = common::redis_cli(*p, &["PUBSUB", "SHARDNUMSUB", &topic]);
                out.lines()
                    .nth(1)
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0)
            })
            .sum()
    };
    if common::redis_cluster() {
        assert_eq!(subscribers(&kept), 1, "the kept app's topic");
        assert_eq!(subscribers(&gone), 0, "the forgotten app's topic");
    }
    // used again: registered again, and what is sent to it arrives
    let mut c_again = Conn::new();
    a.session_open(opening(&gone, &ann, &c_again))
        .await
        .unwrap();
    assert!(listed().lines().any(|l| l == gone.as_str()), "{}", listed());
    let p = tpl("m");
    let r = b.mail_append(user, item("i1", "hello", &p)).await.unwrap();
    assert!(r.version().is_some(), "{r:?}");
    assert_eq!(c_again.frames(2).await[1], "m#1");
    if common::redis_cluster() {
        assert_eq!(subscribers(&gone), 1, "the app's topic again");
    }
}

/// Redis only: a membership that moves to another node leaves the index of the node it moved
/// from even when the mover has not seen that node in the registry yet (it reads the registry
/// at most every 500 ms), so that node forgets the app once nothing on it uses the app; an
/// entry left there kept the app listed (and, on a cluster, subscribed) for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_moved_from_a_node_the_mover_did_not_know_leaves_its_index() {
    let prefix = common::unique_prefix();
    let b = Redis::connect(node_cfg(&prefix, "b"), &limits())
        .await
        .unwrap();
    let x = app("moved");
    let room = Chan {
        app: &x,
        channel: &chan_name("room"),
    };
    // b reads the registry for its first join: a is not in it yet
    let c_bob = Conn::new();
    let read = std::time::Instant::now();
    b.join(room, joining(&acct("bob"), &c_bob.h, None))
        .await
        .unwrap();
    let cfg = node_cfg(&prefix, "a");
    let index = format!("{prefix}nc {{{prefix}{x}}} {}", cfg.node_id);
    let napps = format!("{prefix}napps {{{prefix}~}} {}", cfg.node_id);
    let quick = Limits {
        idle_app_forget_secs: 1,
        ..limits()
    };
    let a = Redis::connect(cfg, &quick).await.unwrap();
    let ann = acct("ann");
    let c_a = Conn::new();
    a.join(room, joining(&ann, &c_a.h, None)).await.unwrap();
    let held = || common::redis_cli_cmd(&["SCARD", &index]).trim().to_string();
    assert_eq!(held(), "1", "a's index of its memberships");
    // ann's membership moves to b
    let c_b = Conn::new();
    b.join(room, joining(&ann, &c_b.h, None)).await.unwrap();
    if read.elapsed() >= Duration::from_millis(500) {
        // (b read the registry again, a in it: the join took a's entry out by the other path)
        eprintln!(
            "b may have seen a: {:?} since it read the registry",
            read.elapsed()
        );
    }
    assert_eq!(
        held(),
        "0",
        "the moved membership's entry stayed in a's index"
    );
    until_forgotten(&napps, &x, "a kept the app its only member moved away from").await;
}

/// Wait until the node's list of apps `napps` no longer holds `app` (`why`: the failure).
async fn until_forgotten(napps: &str, app: &AppId, why: &str) {
    let listed = || common::redis_cli_cmd(&["SMEMBERS", napps]);
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    while listed().lines().any(|l| l == app.as_str()) {
        assert!(tokio::time::Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Redis only: a session's key expires by itself (30 s: what clears a session whose close did
/// not get through) and its node renews that expiry while the session lasts (every 10 s, the
/// keys of every app it serves): the expiry of sessions in two apps goes up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_node_renews_its_sessions_expiry() {
    let prefix = common::unique_prefix();
    // (each app one unit: the keys below are named so)
    let cfg = RedisConfig {
        partitions: 1,
        ..node_cfg(&prefix, "r")
    };
    let s = Redis::connect(cfg, &limits()).await.unwrap();
    let (one, two) = (app("one"), app("two"));
    let ann = acct("ann");
    let (c1, c2) = (Conn::new(), Conn::new());
    s.session_open(opening(&one, &ann, &c1)).await.unwrap();
    s.session_open(opening(&two, &ann, &c2)).await.unwrap();
    let key = |a: &AppId| format!("{prefix}s {{{prefix}{a}}} ann");
    let pttl = |a: &AppId| -> i64 {
        let out = common::redis_cli_cmd(&["PTTL", &key(a)]);
        out.trim().parse().unwrap_or(-2)
    };
    // the lowest expiry seen so far per app, and whether it went up again since
    let mut low = [pttl(&one), pttl(&two)];
    let mut renewed = [false, false];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    while renewed != [true, true] {
        for (i, a) in [&one, &two].into_iter().enumerate() {
            let now = pttl(a);
            assert!(now > 0, "{a}'s session key is gone or has no expiry: {now}");
            if now > low[i] + 1_000 {
                renewed[i] = true;
            }
            low[i] = low[i].min(now);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sessions' expiry was not renewed: {renewed:?}, {low:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Redis only: every key of stored mail and of the app's mail quota expires by itself, through
/// messages that expire, are acknowledged one by one and together, and fill the quota — a key
/// without one would outlive everything it counts.
#[tokio::test]
async fn redis_mail_and_quota_keys_always_expire() {
    let prefix = common::unique_prefix();
    // (each app one unit: the keys below are named so)
    let cfg = RedisConfig {
        partitions: 1,
        ..node_cfg(&prefix, "q")
    };
    let s = Redis::connect(cfg, &limits()).await.unwrap();
    let a = app("quota");
    let names = ["q0", "q1", "q2"].map(acct);
    let to = |i: usize| User {
        app: &a,
        account: &names[i],
    };
    let p = tpl("m");
    let quota = MailQuota {
        app_messages: 6,
        ..MailQuota::default()
    };
    let mail = |ttl_ms| MailItem {
        quota,
        ttl: Duration::from_millis(ttl_ms),
        ..item("i", "text", &p)
    };
    for (i, ttl) in [
        (0, 200),
        (1, 200),
        (0, 3_600_000),
        (1, 3_600_000),
        (2, 3_600_000),
    ] {
        let r = s.mail_append(to(i), mail(ttl)).await.unwrap();
        assert!(r.version().is_some(), "{r:?}");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    // the two short ones have expired and left the quota: 3 held, 3 more fit, then none
    for i in 0..3 {
        let r = s.mail_append(to(2), mail(3_600_000)).await.unwrap();
        assert!(r.version().is_some(), "message {i}: {r:?}");
    }
    assert_eq!(
        s.mail_append(to(2), mail(3_600_000)).await.unwrap(),
        Appended::AppFull
    );
    // q0 acknowledges everything, q1 withdraws its long one: 4 held, 2 fit
    s.mail_poll(
        to(0),
        Poll::Versions {
            ver_clear: 2,
            max: 10,
            seen_id: None,
        },
    )
    .await
    .unwrap();
    assert!(s.mail_withdraw(to(1), 2, "i").await.unwrap());
    for i in 0..2 {
        let r = s.mail_append(to(0), mail(3_600_000)).await.unwrap();
        assert!(r.version().is_some(), "after acknowledging, {i}: {r:?}");
    }
    assert_eq!(
        s.mail_append(to(0), mail(3_600_000)).await.unwrap(),
        Appended::AppFull
    );
    let keys = common::redis_keys_with_ttl(&format!("{prefix}*")).await;
    let mail_keys: Vec<&(String, i64)> = keys.iter().filter(|(k, _)| k.contains("quota")).collect();
    assert!(
        mail_keys
            .iter()
            .any(|(k, _)| k.starts_with(&format!("{prefix}mq "))),
        "no quota key: {keys:?}"
    );
    let forever: Vec<&&(String, i64)> = mail_keys.iter().filter(|(_, ttl)| *ttl < 0).collect();
    assert!(forever.is_empty(), "without expiry: {forever:?}");
}

/// A redis-server of its own with a small `maxmemory` (stopped when dropped).
struct SmallRedis {
    child: std::process::Child,
    url: String,
}

impl SmallRedis {
    fn start(maxmemory: &str) -> SmallRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory", maxmemory, "--maxmemory-policy", "noeviction"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup installs it)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        SmallRedis {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
        }
    }

    /// The one node of a test on this Redis, its keys under `prefix`.
    fn node(&self, prefix: &str) -> RedisConfig {
        RedisConfig {
            url: self.url.clone(),
            wait_replicas: 0,
            partitions: common::partitions(),
            prefix: prefix.into(),
            node_id: "n1".into(),
            public_url: "ws://n1/".into(),
        }
    }
}

impl Drop for SmallRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Redis only: past its `maxmemory`, every change that stores more is refused whole
/// (`StoreError::Full`: nothing of it written, not even a resend marker), while reading,
/// acknowledging, deleting and leaving still work, so clients can drain what is stored.
#[tokio::test]
async fn a_full_redis_refuses_changes_whole_and_still_drains() {
    let small = SmallRedis::start("3mb");
    let cfg = small.node("full:");
    let s = Redis::connect(cfg, &limits()).await.unwrap();
    let (a, ann, bob, room) = (app("app"), acct("ann"), acct("bob"), chan_name("room"));
    let to_ann = User {
        app: &a,
        account: &ann,
    };
    let p = tpl("m");
    for i in 0..3 {
        let id = format!("id{i}");
        let r = s.mail_append(to_ann, item(&id, "kept", &p)).await.unwrap();
        assert!(matches!(r, Appended::Stored { .. }));
    }
    let c = Conn::new();
    let at = Chan {
        app: &a,
        channel: &room,
    };
    s.join(at, joining(&bob, &c.h, None)).await.unwrap();
    let upd = tpl("u");
    let change = |op| AttrChange {
        events: &NO_EVENTS,
        op,
        event: ev(&upd),
    };
    let done = s.attr_change(at, change(set_attr("k", "v", 10))).await;
    assert_eq!(done.unwrap(), AttrOutcome::Done);
    let to_bob = User {
        app: &a,
        account: &bob,
    };
    assert!(s
        .user_attr_set(to_bob, attr_set("k", Some("v"), 10))
        .await
        .unwrap());

    // fill it
    let mut r = ::redis::Client::open(small.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // in steps down to a few bytes: a refused big value's own buffer does not count after
    let mut n = 0;
    for size in [256 * 1024, 4096, 16] {
        let filler = "f".repeat(size);
        loop {
            n += 1;
            let set: Result<(), ::redis::RedisError> = ::redis::cmd("SET")
                .arg(format!("filler{n}"))
                .arg(&filler)
                .query_async(&mut r)
                .await;
            if set.is_err() {
                break;
            }
            assert!(n < 100_000, "maxmemory never reached");
        }
    }
    fn full<T>(r: SResult<T>) -> bool {
        matches!(r, Err(StoreError::Full(_)))
    }
    let from = acct("cat");
    let resend = MailItem {
        events: &NO_EVENTS,
        dedup: Some(Dedup {
            from: &from,
            id: "once",
            window: Duration::from_secs(60),
        }),
        ..item("id9", "refused", &p)
    };
    let refused = s.mail_append(to_ann, resend).await;
    assert!(
        matches!(refused, Err(StoreError::Full(_))),
        "mail: {refused:?}"
    );
    assert!(full(
        s.attr_change(at, change(set_attr("k2", "v", 10))).await
    ));
    assert!(full(
        s.user_attr_set(to_bob, attr_set("k2", Some("v"), 10)).await
    ));
    let dan = acct("dan");
    assert!(full(s.join(at, joining(&dan, &c.h, None)).await), "join");
    // nothing of the refused changes was written
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("full:dd *")
        .query_async(&mut r)
        .await
        .unwrap();
    assert!(keys.is_empty(), "a resend marker of refused mail: {keys:?}");
    // draining works
    let page = s
        .mail_poll(
            to_ann,
            Poll::Versions {
                ver_clear: 0,
                max: 10,
                seen_id: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.msgs.len(), 3, "only what was stored before");
    let page = s
        .mail_poll(
            to_ann,
            Poll::Versions {
                ver_clear: 3,
                max: 10,
                seen_id: None,
            },
        )
        .await
        .unwrap();
    assert!(page.msgs.is_empty());
    assert!(s
        .user_attr_set(to_bob, attr_set("k", None, 10))
        .await
        .unwrap());
    let del = AttrOp::Del {
        name: "k",
        setting: None,
    };
    assert_eq!(
        s.attr_change(at, change(del)).await.unwrap(),
        AttrOutcome::Done
    );
    let session = s.session_of(&c.h);
    let l = Leaving {
        events: &NO_EVENTS,
        account: &bob,
        session: &session,
        event: None,
    };
    assert!(s.leave(at, l).await.unwrap());
    // room again: taken again, and the refused resend is not a duplicate
    let _: () = ::redis::cmd("FLUSHDB").query_async(&mut r).await.unwrap();
    let again = s.mail_append(to_ann, resend).await.unwrap();
    assert!(matches!(again, Appended::Stored { .. }), "{again:?}");
}

/// Redis only: what the store holds is never read as zeros when Redis cannot answer.
#[tokio::test]
async fn a_footprint_redis_cannot_answer_is_an_error_not_zeros() {
    let mut r = SmallRedis::start("64mb");
    let cfg = r.node("fp:");
    let s = Redis::connect(cfg, &limits()).await.unwrap();
    let (a, ann) = (app("app"), acct("ann"));
    let to_ann = User {
        app: &a,
        account: &ann,
    };
    let p = tpl("m");
    s.mail_append(to_ann, item("id", "kept", &p)).await.unwrap();
    assert_eq!(s.footprint().await.unwrap().stored_messages, 1);
    let _ = r.child.kill();
    let _ = r.child.wait();
    assert!(
        s.footprint().await.is_err(),
        "zeros from a Redis that is gone"
    );
}

/// Two nodes on `prefix` with each app spread over 3 units, and what each finds due.
async fn two_nodes_in_three_units(prefix: &str) -> ([Redis; 2], WorkRx, WorkRx) {
    let cfg = |n: &str| RedisConfig {
        partitions: 3,
        ..node_cfg(prefix, n)
    };
    let s = Redis::connect(cfg("a"), &limits()).await.unwrap();
    let other = Redis::connect(cfg("b"), &limits()).await.unwrap();
    let (rx, other_rx) = (work(&s), work(&other));
    ([s, other], rx, other_rx)
}

type WorkRx = mpsc::UnboundedReceiver<Work<Redis>>;

/// Redis only: an app's channels spread over its units (`RedisConfig::partitions`), each a
/// hash slot of its own, and everything about a channel stays whole: its members and their
/// events across nodes, its timers, the listing (merged by name, in pages), the event log (a
/// channel's events in its unit's partitions, among the `event_partitions()` a consumer
/// reads) and the attribute quota (each unit holds its share). A node given another number
/// of units than the cluster's refuses to start.
#[tokio::test]
async fn an_app_s_channels_spread_over_its_units() {
    let prefix = common::unique_prefix();
    let ([s, other], mut rx, _other_work) = two_nodes_in_three_units(&prefix).await;
    let refused = Redis::connect(
        RedisConfig {
            partitions: 2,
            ..node_cfg(&prefix, "c")
        },
        &limits(),
    )
    .await;
    let e = refused.err().expect("another number of units refused");
    assert!(e.to_string().contains("redis_partitions"), "{e}");
    for bad in [0, 65] {
        let cfg = RedisConfig {
            partitions: bad,
            ..node_cfg(&common::unique_prefix(), "d")
        };
        assert!(Redis::connect(cfg, &limits()).await.is_err(), "{bad} units");
    }
    assert_eq!(s.event_partitions(), 24);
    let a = app("spread");
    let (ann, bob) = (acct("ann"), acct("bob"));
    let unit = |c: &ChannelName| opensig_server::events::stable_hash(c.as_str()) % 3;
    let names: Vec<ChannelName> = (0..12).map(|i| chan_name(&format!("ch{i:02}"))).collect();
    let in_unit = |u: u32| names.iter().filter(move |c| unit(c) == u);
    assert!(
        (0..3).all(|u| in_unit(u).count() >= 2),
        "every unit has two"
    );
    let at = |c| Chan {
        app: &a,
        channel: c,
    };
    let (mut ca, mut cb) = (Conn::new(), Conn::new());
    s.session_open(opening(&a, &ann, &ca)).await.unwrap();
    other.session_open(opening(&a, &bob, &cb)).await.unwrap();
    for c in &names {
        s.join(at(c), joining(&ann, &ca.h, None)).await.unwrap();
    }
    // a channel of the third unit: bob on the other node hears ann's message, and the
    // message's event is in that unit's first partition (16 of 24)
    let far = in_unit(2).next().unwrap();
    other
        .join(at(far), joining(&bob, &cb.h, None))
        .await
        .unwrap();
    let m = tpl("msg");
    let cap = EventCap {
        max_events: 0,
        max_bytes: 0,
        max_age: Duration::from_secs(3600),
    };
    let out = planned(&a, "far", &[When::Done], cap);
    let said = Publish {
        events: &out,
        member: Some(&ann),
        ..Publish::event(ev(&m))
    };
    assert_eq!(s.publish(at(far), said).await.unwrap(), Published::Sent);
    assert_eq!(
        cb.frames(2).await[1],
        "msg#1",
        "after the session's welcome"
    );
    assert_eq!(ca.frames(2).await[1], "msg#1");
    let texts = |p: EventPage| {
        p.events
            .into_iter()
            .map(|(_, t)| t.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        texts(other.event_read(&a, 16, 0, 10).await.unwrap()),
        ["far:done"]
    );
    for q in (0..24).filter(|q| *q != 16) {
        assert!(
            s.event_read(&a, q, 0, 10).await.unwrap().events.is_empty(),
            "{q}"
        );
    }
    // the listing: every unit's channels, by name, five at a time
    let mut listed = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = other.channels(&a, &cursor, "", 5).await.unwrap();
        assert!(page.channels.len() <= 5);
        listed.extend(page.channels);
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    let want: Vec<(String, usize)> = (names.iter())
        .map(|c| (c.to_string(), if c == far { 2 } else { 1 }))
        .collect();
    assert_eq!(listed, want);
    // a timer of a channel of the second unit fires
    let t = Timer::MemberNum(a.clone(), in_unit(1).next().unwrap().clone());
    s.schedule(t.clone(), Duration::from_millis(20))
        .await
        .unwrap();
    let (timer, claim) = fired(&mut rx).await;
    assert_eq!(timer, t);
    s.timer_done(claim).await;
    // a quota of 3 channels with attributes: one per unit
    let quota = AttrQuota {
        channels: 3,
        bytes: 0,
    };
    let u = tpl("u");
    let set = || AttrChange {
        events: &NO_EVENTS,
        op: AttrOp::Set(AttrSet {
            name: "topic",
            value: "x",
            setting: None,
            rate_limited: false,
            max: 10,
            quota,
        }),
        event: ev(&u),
    };
    let mut ones = in_unit(1);
    let (first, second) = (ones.next().unwrap(), ones.next().unwrap());
    assert_eq!(
        s.attr_change(at(first), set()).await.unwrap(),
        AttrOutcome::Done
    );
    assert_eq!(
        other.attr_change(at(second), set()).await.unwrap(),
        AttrOutcome::AppFull,
        "the unit's share is used"
    );
    for u in [0, 2] {
        let c = in_unit(u).next().unwrap();
        assert_eq!(
            s.attr_change(at(c), set()).await.unwrap(),
            AttrOutcome::Done
        );
    }
}

/// Redis only: an app's accounts spread over its units with its channels
/// (`RedisConfig::partitions`): an account's session, mailbox and what a message to it checks
/// are in its unit (a message across nodes and units pushed, its event in the recipient's
/// unit), each unit holds its share of the mail quota, an invitation's record, index and
/// timers are with its caller and its message with its callee (two steps where they differ,
/// each appending the events keyed by its unit; a resend after a failure between them writes
/// the record), and watches cross units. A record of a version that spread only channels is
/// refused.
#[tokio::test]
async fn an_app_s_accounts_spread_over_their_units() {
    use opensig_server::events::{partition_among, unit_of_name};
    let prefix = common::unique_prefix();
    let ([s, other], mut rx, _other_work) = two_nodes_in_three_units(&prefix).await;
    let a = app("spread");
    let unit = |x: &Account| unit_of_name(x.as_str(), 3);
    // the first of an account's log partitions, and one account of each unit
    let log_of = |x: &Account| partition_among(&format!("u:{x}"), 24);
    let in_unit = |u: u32, skip: usize| {
        (0..)
            .map(|i| acct(&format!("user{i}")))
            .filter(|x| unit(x) == u)
            .nth(skip)
            .unwrap()
    };
    let [u0, u1, u2] = [0, 1, 2].map(|u| in_unit(u, 0));
    let user = |x| User {
        app: &a,
        account: x,
    };
    let (c0, mut c1, mut c2) = (Conn::new(), Conn::new(), Conn::new());
    s.session_open(opening(&a, &u0, &c0)).await.unwrap();
    other.session_open(opening(&a, &u1, &c1)).await.unwrap();
    s.session_open(opening(&a, &u2, &c2)).await.unwrap();
    for x in [&u0, &u1, &u2] {
        assert!(other.online(user(x)).await.unwrap(), "{x}");
    }
    let cap = EventCap {
        max_events: 0,
        max_bytes: 0,
        max_age: Duration::from_secs(3600),
    };
    let about = |x: &Account, step: &str| StepEvents {
        app: a.to_string(),
        events: vec![Planned {
            when: When::Done,
            partition: log_of(x),
            text: format!("{step}:done").into(),
        }],
        cap,
    };
    let texts = |p: EventPage| {
        (p.events.into_iter())
            .map(|(_, t)| t.to_string())
            .collect::<Vec<_>>()
    };
    // a message from node a to u1 on node b: pushed there, its event in u1's unit
    let m = tpl("m");
    let out = about(&u1, "mail");
    let mail = MailItem {
        events: &out,
        ..item("m1", "hello", &m)
    };
    let stored = Appended::Stored {
        version: 1,
        offline: false,
    };
    assert_eq!(s.mail_append(user(&u1), mail).await.unwrap(), stored);
    assert_eq!(c1.frames(2).await[1], "m#1");
    assert_eq!(
        texts(other.event_read(&a, log_of(&u1), 0, 10).await.unwrap()),
        ["mail:done"]
    );
    // the mail quota of 3 messages: a share of one per unit
    let quota = MailQuota {
        app_messages: 3,
        ..MailQuota::default()
    };
    let capped = |id| MailItem {
        quota,
        ..item(id, "x", &m)
    };
    assert!(matches!(
        other.mail_append(user(&u2), capped("q1")).await.unwrap(),
        Appended::Stored { .. }
    ));
    let refused = [&u2, &u1].map(|x| s.mail_append(user(x), capped("q2")));
    for r in futures_util::future::join_all(refused).await {
        assert_eq!(r.unwrap(), Appended::AppFull, "the unit's share is used");
    }
    assert!(matches!(
        s.mail_append(user(&u0), capped("q3")).await.unwrap(),
        Appended::Stored { .. }
    ));
    // an invitation from u0 to u2: the message in u2's unit (pushed), the record, the caller's
    // index and the timer in u0's, with the event keyed by the caller
    let key = InviteKey {
        app: a.clone(),
        caller: u0.clone(),
        channel: chan_name("call"),
        callee: u2.clone(),
    };
    let p = tpl("inv");
    let timeout = Timer::InviteTimeout(key.clone(), 7);
    let out = about(&u0, "open");
    let open = InviteOpen {
        key: &key,
        extra: "{}",
        generation: 7,
        mail: MailItem {
            events: &out,
            ..item("i1", "invite", &p)
        },
        timers: &[(timeout.clone(), Duration::from_millis(20))],
    };
    let Appended::Stored { version, .. } = s.invite_open(open).await.unwrap() else {
        panic!("not stored");
    };
    assert_eq!(c2.frames(3).await[2], format!("inv#{version}"));
    let r = other.invite_get(&key).await.unwrap().unwrap();
    assert_eq!(
        (r.version, r.generation, r.msg_id.as_str()),
        (version, 7, "i1")
    );
    assert_eq!(
        other.invites_by(user(&u0)).await.unwrap(),
        vec![(key.clone(), 7)]
    );
    assert_eq!(
        texts(s.event_read(&a, log_of(&u0), 0, 10).await.unwrap()),
        ["open:done"]
    );
    for q in (0..24).filter(|q| *q / 8 == unit(&u2)) {
        assert!(
            s.event_read(&a, q, 0, 10).await.unwrap().events.is_empty(),
            "{q}"
        );
    }
    let (timer, claim) = fired(&mut rx).await;
    assert_eq!(timer, timeout);
    s.timer_done(claim).await;
    // the caller's bye: its record (u0's unit) ends, then the message to u2 (u2's unit)
    let reverse = InviteKey {
        caller: u2.clone(),
        callee: u0.clone(),
        ..key.clone()
    };
    let keys = [reverse, key.clone()];
    let out = about(&u0, "bye");
    let b = tpl("bye");
    let bye = InviteRelay {
        keys: &keys,
        step: InviteStep::End,
        require_live: true,
        to: &u2,
        mail: MailItem {
            events: &out,
            ..item("b1", "bye", &b)
        },
    };
    let r = s.invite_relay(bye).await.unwrap();
    assert!(r.live);
    let Appended::Stored { version, .. } = r.appended else {
        panic!("{:?}", r.appended);
    };
    assert_eq!(c2.frames(4).await[3], format!("bye#{version}"));
    assert!(other.invite_get(&key).await.unwrap().is_none());
    assert!(other.invites_by(user(&u0)).await.unwrap().is_empty());
    assert_eq!(
        texts(s.event_read(&a, log_of(&u0), 1, 10).await.unwrap()),
        ["bye:done"]
    );
    // again: no invitation is live, nothing is stored
    let again = other.invite_relay(bye).await.unwrap();
    assert!(!again.live);
    assert_eq!(again.appended, Appended::Duplicate);
    // an invitation's message stored and its record not (a failure between the two steps):
    // the caller's resend finds the message a duplicate and writes the record
    let key2 = InviteKey {
        channel: chan_name("call2"),
        ..key.clone()
    };
    let once = Dedup {
        from: &u0,
        id: "i2",
        window: Duration::from_secs(60),
    };
    let open2 = |generation| InviteOpen {
        key: &key2,
        extra: "{}",
        generation,
        mail: MailItem {
            dedup: Some(once),
            ..item("i2", "invite", &p)
        },
        timers: &[],
    };
    let first = s.invite_open(open2(8)).await.unwrap();
    assert!(matches!(first, Appended::Stored { .. }), "{first:?}");
    assert_eq!(unit(&u0), 0, "the record's key below is the first unit's");
    let record = format!("{prefix}inv {{{prefix}{a}}} {u0} call2 {u2}");
    assert_eq!(common::redis_cli_cmd(&["DEL", &record]), "1");
    assert!(other.invite_get(&key2).await.unwrap().is_none());
    assert_eq!(s.invite_open(open2(9)).await.unwrap(), Appended::Duplicate);
    let r = other.invite_get(&key2).await.unwrap().unwrap();
    assert_eq!(
        (r.version, r.generation, r.msg_id.as_str()),
        (0, 9, "i2"),
        "written again, its version not known"
    );
    // a resend of one whose record is there changes nothing
    assert_eq!(s.invite_open(open2(10)).await.unwrap(), Appended::Duplicate);
    assert_eq!(
        other.invite_get(&key2).await.unwrap().unwrap().generation,
        9
    );
    // u1 (node b) watches u0 and u2 (node a pushes): within each unit's share of 3 watches
    let w = other.session_of(&c1.h);
    let watched = [u0.clone(), u2.clone()];
    assert!(other.watch(user(&u1), &w, &watched, true, 3).await.unwrap());
    s.watchers_push(user(&u0), "u0 here").await.unwrap();
    s.watchers_push(user(&u2), "u2 here").await.unwrap();
    assert_eq!(c1.frames(4).await[2..], ["u0 here", "u2 here"]);
    // another of u0's unit passes its share: refused, and the watch of u1's unit with it
    let (more, mine) = (in_unit(0, 1), in_unit(1, 1));
    let refused = [mine.clone(), more];
    assert!(!other.watch(user(&u1), &w, &refused, true, 3).await.unwrap());
    s.watchers_push(user(&mine), "not watched").await.unwrap();
    s.watchers_push(user(&u2), "still watched").await.unwrap();
    assert_eq!(c1.frames(5).await[4], "still watched");
    // a record of a version that spread only channels
    let old = common::unique_prefix();
    common::redis_cli_cmd(&["SET", &format!("{old}partitions {{{old}~}}"), "3"]);
    let refused = Redis::connect(
        RedisConfig {
            partitions: 3,
            ..node_cfg(&old, "c")
        },
        &limits(),
    )
    .await;
    let e = refused.err().expect("the old placement refused");
    assert!(e.to_string().contains("redis_prefix"), "{e}");
}

/// Redis only: channels occupied before the store kept its index of them (an older version
/// joined them) are listed too, from the app's first listing on; an index entry of a channel
/// that has no members is dropped by the listing that finds it so.
#[tokio::test]
async fn channels_occupied_before_the_index_are_listed() {
    let r = SmallRedis::start("64mb");
    // (older versions kept an app in one unit)
    let cfg = RedisConfig {
        partitions: 1,
        ..r.node("ix:")
    };
    let s = Redis::connect(cfg, &limits()).await.unwrap();
    let (a, ann) = (app("app"), acct("ann"));
    let c = Conn::new();
    for name in ["c", "a", "b"] {
        let ch = chan_name(name);
        let at = Chan {
            app: &a,
            channel: &ch,
        };
        s.join(at, joining(&ann, &c.h, None)).await.unwrap();
    }
    let mut raw = ::redis::Client::open(r.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // as an older version left it: no index; and an entry of a channel nobody is in
    let index = "ix:clo {ix:app}";
    use ::redis::AsyncCommands;
    let () = raw.del(index).await.unwrap();
    let () = raw.zadd(index, "gone", 0).await.unwrap();
    let page = s.channels(&a, "", "", 10).await.unwrap();
    let names: Vec<&str> = page.channels.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let listed: Vec<String> = raw.zrange(index, 0, -1).await.unwrap();
    assert_eq!(listed, ["a", "b", "c"], "the empty one's entry dropped");
    // found once: a channel that leaves the index now is not looked for again
    let () = raw.zrem(index, "b").await.unwrap();
    let page = s.channels(&a, "", "", 10).await.unwrap();
    let names: Vec<&str> = page.channels.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "c"]);
}
