//! The records a store keeps outside the process — timer entries and node messages of the
//! Redis store, index entries — decoded from arbitrary text (never a panic; what decodes
//! encodes back to the same text), and built from arbitrary values (decode ∘ encode = id).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use opensig_protocol::frame::Template;
use opensig_protocol::ident::{Account, AppId, ChannelName};
use opensig_server::store::redis::node::{self, NodeMsg};
use opensig_server::store::{InviteKey, Timer};

#[derive(Arbitrary, Debug)]
enum Input {
    Text(String),
    Msg {
        kind: u8,
        a: String,
        b: String,
        c: String,
        number: u64,
        head: String,
        tail: String,
        exclude: Option<String>,
    },
    Timer {
        kind: u8,
        names: [String; 4],
        generation: u64,
    },
}

/// A name as the stores would hold it, or a stand-in.
fn name(s: &str) -> String {
    let n: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect();
    if n.is_empty() {
        "x".into()
    } else {
        n
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Text(s) => {
            if let Some(m) = NodeMsg::decode(&s) {
                assert_eq!(NodeMsg::decode(&m.encode()), Some(m));
            }
            if let Some(t) = Timer::decode(&s) {
                assert_eq!(Timer::decode(&t.encode()), Some(t));
            }
            let _ = node::read_session_entry(&s);
            let _ = node::read_member_entry(&s);
            let _ = node::read_invite_entry(&s);
        }
        Input::Msg {
            kind,
            a,
            b,
            c,
            number,
            head,
            tail,
            exclude,
        } => {
            let frame = Template { head, tail };
            let m = match kind % 5 {
                0 => NodeMsg::Push {
                    app: a,
                    account: b,
                    number,
                    frame,
                },
                1 => NodeMsg::Channel {
                    app: a,
                    channel: b,
                    exclude,
                    number,
                    msg_number: (number % 2 == 0).then_some(number / 2),
                    msg_id: (number % 4 == 0).then_some(number / 4),
                    frame,
                },
                2 => NodeMsg::Joined {
                    app: a,
                    channel: b,
                    account: c,
                    conn: number,
                },
                3 => NodeMsg::Left {
                    app: a,
                    channel: b,
                    account: c,
                },
                _ => NodeMsg::Kick { conn: number },
            };
            assert_eq!(NodeMsg::decode(&m.encode()), Some(m.clone()));
            if let NodeMsg::Push { .. } | NodeMsg::Channel { .. } = m {
                let (before, after) = m.encode_open();
                assert_eq!(
                    NodeMsg::decode(&format!("{before}{number}{after}")),
                    Some(m)
                );
            }
        }
        Input::Timer {
            kind,
            names,
            generation,
        } => {
            let [app, caller, channel, callee] = names.map(|n| name(&n));
            let key = InviteKey {
                app: AppId::from_stored(&app).unwrap(),
                caller: Account::from_stored(&caller).unwrap(),
                channel: ChannelName::from_stored(&channel).unwrap(),
                callee: Account::from_stored(&callee).unwrap(),
            };
            let t = match kind % 5 {
                0 => Timer::InviteOffline(key, generation),
                1 => Timer::InviteTimeout(key, generation),
                2 => Timer::CallerGone(key, generation),
                3 => Timer::MemberNum(key.app, key.channel),
                _ => Timer::UserAttrs(key.app, key.caller),
            };
            assert_eq!(Timer::decode(&t.encode()), Some(t));
        }
    }
});
