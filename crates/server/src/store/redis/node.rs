//! What nodes tell each other over their pub/sub topics: typed messages with one encoding
//! ([`crate::store::codec`]). A channel event and a mailbox push carry a hole for the number
//! the script assigns (sequence, version); the script only glues the digits in.

use opensig_protocol::frame::Template;

use crate::store::codec::{Reader, Writer};

/// A message on a node's topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeMsg {
    /// Push mail to the account's session on this node: the frame with `number` filled in.
    Push {
        /// App.
        app: String,
        /// Recipient.
        account: String,
        /// The mailbox version.
        number: u64,
        /// The frame.
        frame: Template,
    },
    /// A channel event for this node's members of the channel (but `exclude`).
    Channel {
        /// App.
        app: String,
        /// Channel.
        channel: String,
        /// A member that does not get it.
        exclude: Option<String>,
        /// The sequence.
        number: u64,
        /// A channel message's number (a field the script appends).
        msg_number: Option<u64>,
        /// A channel message's identity (a last field the script appends, after its number).
        msg_id: Option<u64>,
        /// The frame.
        frame: Template,
    },
    /// From now on the account's connection `conn` on this node gets the channel's events.
    Joined {
        /// App.
        app: String,
        /// Channel.
        channel: String,
        /// Member.
        account: String,
        /// Its connection on this node.
        conn: u64,
    },
    /// The account's membership on this node ended.
    Left {
        /// App.
        app: String,
        /// Channel.
        channel: String,
        /// Member.
        account: String,
    },
    /// The session of connection `conn` was replaced by a newer login.
    Kick {
        /// Connection on this node.
        conn: u64,
    },
    /// A frame for connection `conn` on this node (a watched account's new state).
    Frame {
        /// Connection on this node.
        conn: u64,
        /// The frame.
        frame: String,
    },
}

impl NodeMsg {
    fn writer(&self) -> Writer {
        match self {
            NodeMsg::Push {
                app,
                account,
                frame,
                ..
            } => Writer::new('p')
                .text(app)
                .text(account)
                .text(&frame.head)
                .text(&frame.tail),
            NodeMsg::Channel {
                app,
                channel,
                exclude,
                frame,
                ..
            } => Writer::new('c')
                .text(app)
                .text(channel)
                .opt_text(exclude.as_deref())
                .text(&frame.head)
                .text(&frame.tail),
            NodeMsg::Joined {
                app,
                channel,
                account,
                conn,
            } => Writer::new('j')
                .text(app)
                .text(channel)
                .text(account)
                .num(*conn),
            NodeMsg::Left {
                app,
                channel,
                account,
            } => Writer::new('l').text(app).text(channel).text(account),
            NodeMsg::Kick { conn } => Writer::new('k').num(*conn),
            NodeMsg::Frame { conn, frame } => Writer::new('f').num(*conn).text(frame),
        }
    }

    /// The message, numbers included.
    pub fn encode(&self) -> String {
        match self {
            NodeMsg::Push { number, .. } => {
                let (before, after) = self.encode_open();
                format!("{before}{number}{after}")
            }
            NodeMsg::Channel {
                number,
                msg_number,
                msg_id,
                ..
            } => {
                let (before, after) = self.encode_open();
                let mut extra = msg_number.map(|n| format!("{n};")).unwrap_or_default();
                if let (Some(_), Some(id)) = (msg_number, msg_id) {
                    extra.push_str(&format!("{id};"));
                }
                format!("{before}{number}{after}{extra}")
            }
            _ => self.writer().finish(),
        }
    }

    /// A push or channel event with its number left open: `(before, after)`; the script
    /// publishes `before .. number .. after`.
    pub fn encode_open(&self) -> (String, String) {
        self.writer().hole().finish_open()
    }

    /// The message [`NodeMsg::encode`] made; `None` for anything else.
    pub fn decode(s: &str) -> Option<NodeMsg> {
        let (tag, mut r) = Reader::new(s)?;
        let template = |r: &mut Reader<'_>| -> Option<(Template, u64)> {
            let head = r.text()?.to_string();
            let tail = r.text()?.to_string();
            let number = r.num()?;
            Some((Template { head, tail }, number))
        };
        let m = match tag {
            'p' => {
                let app = r.text()?.to_string();
                let account = r.text()?.to_string();
                let (frame, number) = template(&mut r)?;
                NodeMsg::Push {
                    app,
                    account,
                    number,
                    frame,
                }
            }
            'c' => {
                let app = r.text()?.to_string();
                let channel = r.text()?.to_string();
                let exclude = r.opt_text()?.map(str::to_string);
                let (frame, number) = template(&mut r)?;
                let mut field = || match r.rest_is_empty() {
                    true => Ok(None),
                    false => r.num().map(Some).ok_or(()),
                };
                let msg_number = field().ok()?;
                let msg_id = msg_number.and(field().ok()?);
                NodeMsg::Channel {
                    app,
                    channel,
                    exclude,
                    number,
                    msg_number,
                    msg_id,
                    frame,
                }
            }
            'j' => NodeMsg::Joined {
                app: r.text()?.into(),
                channel: r.text()?.into(),
                account: r.text()?.into(),
                conn: r.num()?,
            },
            'l' => NodeMsg::Left {
                app: r.text()?.into(),
                channel: r.text()?.into(),
                account: r.text()?.into(),
            },
            'k' => NodeMsg::Kick { conn: r.num()? },
            'f' => NodeMsg::Frame {
                conn: r.num()?,
                frame: r.text()?.into(),
            },
            _ => return None,
        };
        r.end()?;
        Some(m)
    }
}

/// Messages to one node's topic as one payload: the message alone, or several in a bundle
/// that [`unbundle`] reads (lua/bundle.lua's `publish_all` writes the same).
pub fn bundle(mut msgs: Vec<String>) -> String {
    match msgs.len() {
        1 => msgs.swap_remove(0),
        _ => (msgs.iter().fold(Writer::new('b'), |w, m| w.text(m))).finish(),
    }
}

/// The messages of a payload on a node's topic: one message, or a bundle of several that
/// one script published together (`b`, then each message as a text field, in order).
/// `None` when a bundle is malformed.
pub fn unbundle(s: &str) -> Option<Vec<&str>> {
    let Some(("b", _)) = s.split_at_checked(1) else {
        return Some(vec![s]);
    };
    let (_, mut r) = Reader::new(s)?;
    let mut msgs = Vec::new();
    while !r.rest_is_empty() {
        msgs.push(r.text()?);
    }
    Some(msgs)
}

/// An index entry of a node's sessions: `(app, account, conn)`.
pub fn session_entry(app: &str, account: &str, conn: u64) -> String {
    Writer::new('s').text(app).text(account).num(conn).finish()
}

/// Read a [`session_entry`].
pub fn read_session_entry(s: &str) -> Option<(String, String, u64)> {
    let (tag, mut r) = Reader::new(s)?;
    if tag != 's' {
        return None;
    }
    let e = (r.text()?.to_string(), r.text()?.to_string(), r.num()?);
    r.end()?;
    Some(e)
}

/// An index entry of a node's channel memberships: `(app, channel, account)`.
pub fn member_entry(app: &str, channel: &str, account: &str) -> String {
    Writer::new('m')
        .text(app)
        .text(channel)
        .text(account)
        .finish()
}

/// Read a [`member_entry`].
pub fn read_member_entry(s: &str) -> Option<(String, String, String)> {
    let (tag, mut r) = Reader::new(s)?;
    if tag != 'm' {
        return None;
    }
    let e = (
        r.text()?.to_string(),
        r.text()?.to_string(),
        r.text()?.to_string(),
    );
    r.end()?;
    Some(e)
}

/// An entry of a caller's index of invitations: `(channel, callee)`.
pub fn invite_entry(channel: &str, callee: &str) -> String {
    Writer::new('i').text(channel).text(callee).finish()
}

/// Read an [`invite_entry`].
pub fn read_invite_entry(s: &str) -> Option<(String, String)> {
    let (tag, mut r) = Reader::new(s)?;
    if tag != 'i' {
        return None;
    }
    let e = (r.text()?.to_string(), r.text()?.to_string());
    r.end()?;
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Template {
        Template {
            head: "[\"notify\",[\"channel2\",\"r 1\",".into(),
            tail: ",\"msg-v2 a 0 r channel_msg - {}\"]]".into(),
        }
    }

    #[test]
    fn a_bundle_is_its_messages_in_order() {
        let one = NodeMsg::Kick { conn: 7 }.encode();
        let two = NodeMsg::Frame {
            conn: 8,
            frame: "b:1;x".into(),
        }
        .encode();
        // as lua/bundle.lua's publish_all writes it
        let bundle = format!("b{}:{one}{}:{two}", one.len(), two.len());
        assert_eq!(unbundle(&bundle), Some(vec![one.as_str(), two.as_str()]));
        assert_eq!(super::bundle(vec![one.clone(), two.clone()]), bundle);
        assert_eq!(super::bundle(vec![one.clone()]), one);
        assert_eq!(unbundle(&one), Some(vec![one.as_str()]));
        assert_eq!(unbundle("b3:k1;9:cut"), None);
        assert_eq!(unbundle("b"), Some(vec![]));
    }

    #[test]
    fn node_messages_round_trip() {
        let all = [
            NodeMsg::Push {
                app: "a".into(),
                account: "b".into(),
                number: 7,
                frame: t(),
            },
            NodeMsg::Channel {
                app: "a".into(),
                channel: "r".into(),
                exclude: Some("x".into()),
                number: 9_007_199_254_740_991,
                msg_number: Some(4),
                msg_id: None,
                frame: t(),
            },
            NodeMsg::Channel {
                app: "a".into(),
                channel: "r".into(),
                exclude: None,
                number: 5,
                msg_number: Some(4),
                msg_id: Some(9_007_199_254_740_991),
                frame: t(),
            },
            NodeMsg::Channel {
                app: "a".into(),
                channel: "r".into(),
                exclude: None,
                number: 1,
                msg_number: None,
                msg_id: None,
                frame: t(),
            },
            NodeMsg::Joined {
                app: "a".into(),
                channel: "r".into(),
                account: "b".into(),
                conn: 3,
            },
            NodeMsg::Left {
                app: "a".into(),
                channel: "r".into(),
                account: "b".into(),
            },
            NodeMsg::Kick { conn: 12 },
        ];
        for m in all {
            assert_eq!(NodeMsg::decode(&m.encode()), Some(m.clone()), "{m:?}");
        }
        // what a script publishes: before .. number .. after
        let m = NodeMsg::Push {
            app: "a".into(),
            account: "b".into(),
            number: 0,
            frame: t(),
        };
        let (before, after) = m.encode_open();
        match NodeMsg::decode(&format!("{before}42{after}")) {
            Some(NodeMsg::Push { number, frame, .. }) => {
                assert_eq!(number, 42);
                assert_eq!(frame, t());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(NodeMsg::decode("z"), None);
        assert_eq!(NodeMsg::decode("k12;x"), None, "trailing bytes");
    }

    #[test]
    fn index_entries_round_trip() {
        let s = session_entry("a", "b", 5);
        assert_eq!(read_session_entry(&s), Some(("a".into(), "b".into(), 5)));
        let m = member_entry("a", "r", "b");
        assert_eq!(
            read_member_entry(&m),
            Some(("a".into(), "r".into(), "b".into()))
        );
        let i = invite_entry("r", "b");
        assert_eq!(read_invite_entry(&i), Some(("r".into(), "b".into())));
        assert_eq!(read_session_entry(&m), None);
    }
}
