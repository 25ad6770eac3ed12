//! `msg-v2` / `msg-v3` message strings (PROTOCOL.md §10.2): space-separated fields, the last
//! one (content) may contain spaces. Parsing uses the original's "python-style split".

/// Prefix of 7-field messages.
pub const V2: &str = "msg-v2";
/// Prefix of 8-field messages (with a dedup id).
pub const V3: &str = "msg-v3";
/// The value put in unused fields (the sender uid is always 0).
pub const UID_FIELD: &str = "0";
/// The flag field when there is none.
pub const NO_FLAG: &str = "-";

/// Split `s` on single spaces at most `max_splits` times, like Python's `str.split(" ", n)`.
pub fn python_split(s: &str, max_splits: usize) -> Vec<&str> {
    s.splitn(max_splits + 1, ' ').collect()
}

/// The fields of a message string that clients use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// msg-v3 dedup id (`None` for msg-v2).
    pub id: Option<&'a str>,
    /// Acting account: sender, joiner, attribute setter.
    pub source: &'a str,
    /// Recipient account or channel name (unused by clients).
    pub dest: &'a str,
    /// Message type (`instant`, `channel_msg`, `voip_invite`, …).
    pub kind: &'a str,
    /// The sender's flag (`v1:E:3600`) or `-`.
    pub flag: &'a str,
    /// Everything after the last fixed field; may contain spaces; may be empty.
    pub content: &'a str,
}

/// Parse a msg-v2 or msg-v3 string exactly as the 1.4.0 client accepts it: msg-v2 needs at
/// least 5 spaces, msg-v3 at least 6; a missing content field is the empty string. Anything
/// else is `None` (the original silently ignores it).
pub fn parse(s: &str) -> Option<Message<'_>> {
    if s.starts_with("msg-v2 ") {
        let f = python_split(s, 6);
        if f.len() < 6 || f[0] != V2 {
            return None;
        }
        Some(Message {
            id: None,
            source: f[1],
            dest: f[3],
            kind: f[4],
            flag: f[5],
            content: f.get(6).copied().unwrap_or(""),
        })
    } else if s.starts_with("msg-v3 ") {
        let f = python_split(s, 7);
        if f.len() < 7 || f[0] != V3 {
            return None;
        }
        Some(Message {
            id: Some(f[1]),
            source: f[2],
            dest: f[4],
            kind: f[5],
            flag: f[6],
            content: f.get(7).copied().unwrap_or(""),
        })
    } else {
        None
    }
}

fn push_fields(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(f);
    }
}

/// Build `msg-v2 <source> 0 <dest> <kind> <flag> <content>`. Fields other than content must
/// not contain spaces (callers validate names first).
pub fn build_v2(source: &str, dest: &str, kind: &str, flag: &str, content: &str) -> String {
    let mut s = String::with_capacity(32 + source.len() + dest.len() + content.len());
    push_fields(&mut s, &[V2, source, UID_FIELD, dest, kind, flag, content]);
    s
}

/// Build `msg-v3 <id> <source> 0 <dest> <kind> <flag> <content>`.
pub fn build_v3(
    id: &str,
    source: &str,
    dest: &str,
    kind: &str,
    flag: &str,
    content: &str,
) -> String {
    let mut s = String::with_capacity(48 + source.len() + dest.len() + content.len());
    push_fields(
        &mut s,
        &[V3, id, source, UID_FIELD, dest, kind, flag, content],
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_like_python() {
        assert_eq!(python_split("a b c d", 2), vec!["a", "b", "c d"]);
        assert_eq!(python_split("a  b", 5), vec!["a", "", "b"]);
        assert_eq!(python_split("abc", 3), vec!["abc"]);
    }

    #[test]
    fn v2_round_trip_and_edges() {
        let s = build_v2("bob", "alice", "instant", "v1:E:3600", "hello  world ");
        assert_eq!(s, "msg-v2 bob 0 alice instant v1:E:3600 hello  world ");
        let m = parse(&s).unwrap();
        assert_eq!(
            (m.id, m.source, m.dest, m.kind, m.flag, m.content),
            (
                None,
                "bob",
                "alice",
                "instant",
                "v1:E:3600",
                "hello  world "
            )
        );
        // exactly 5 spaces: delivered with empty content
        let m = parse("msg-v2 bob 0 alice instant -").unwrap();
        assert_eq!(m.content, "");
        // fewer: ignored
        assert_eq!(parse("msg-v2 bob 0 alice instant"), None);
        assert_eq!(parse("msg-v4 a b c d e f g"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn v3_round_trip_and_edges() {
        let s = build_v3("9f1c", "carol", "alice", "voip_invite", "-", "{\"a\": 1}");
        let m = parse(&s).unwrap();
        assert_eq!(m.id, Some("9f1c"));
        assert_eq!(m.source, "carol");
        assert_eq!(m.kind, "voip_invite");
        assert_eq!(m.content, "{\"a\": 1}");
        assert_eq!(parse("msg-v3 id a 0 b c -").unwrap().content, "");
        assert_eq!(parse("msg-v3 id a 0 b c"), None);
    }
}
