//! The text of every frame a client sends: the SDK, the native driver and the load generator
//! all build their frames here. Outgoing frames are small and fixed in shape, so they are
//! written directly (no JSON library in the SDK).

use alloc::string::String;

use crate::json::{push_str, push_u64};
use crate::names::{event, fixed};

/// The members of a JSON object without its braces (`"a":"x","n":1`), built in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Body(pub String);

impl Body {
    /// An empty member list.
    pub fn new() -> Body {
        Body(String::new())
    }

    fn key(mut self, k: &str) -> Body {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        push_str(&mut self.0, k);
        self.0.push(':');
        self
    }

    /// A string member.
    pub fn s(self, k: &str, v: &str) -> Body {
        let mut b = self.key(k);
        push_str(&mut b.0, v);
        b
    }

    /// A number member.
    pub fn n(self, k: &str, v: u64) -> Body {
        let mut b = self.key(k);
        push_u64(&mut b.0, v);
        b
    }

    /// A member whose value is JSON text already.
    pub fn raw(self, k: &str, json: &str) -> Body {
        let mut b = self.key(k);
        b.0.push_str(json);
        b
    }
}

/// `["login",{"vid":…,"account":…,"uid":0,"token":…,"device":"websdk","ip":""}]`.
pub fn login(app_id: &str, account: &str, token: &str) -> String {
    let mut text = String::with_capacity(96 + app_id.len() + account.len() + token.len());
    text.push_str("[\"");
    text.push_str(event::LOGIN);
    text.push_str("\",{");
    let body = Body::new()
        .s("vid", app_id)
        .s("account", account)
        .n("uid", 0)
        .s("token", token)
        .s("device", fixed::DEVICE_WEB)
        .s("ip", "");
    text.push_str(&body.0);
    text.push_str("}]");
    text
}

/// `["call2",[name,id,{<body>,"line":line}]]`.
pub fn call2(name: &str, id: u64, body: &str, line: &str) -> String {
    let mut text = String::with_capacity(48 + name.len() + body.len() + line.len());
    text.push_str("[\"");
    text.push_str(event::CALL2);
    text.push_str("\",[");
    push_str(&mut text, name);
    text.push(',');
    push_u64(&mut text, id);
    text.push_str(",{");
    text.push_str(body);
    if !body.is_empty() {
        text.push(',');
    }
    text.push_str("\"line\":");
    push_str(&mut text, line);
    text.push_str("}]]");
    text
}

/// `["ping",n]`.
pub fn ping(n: u64) -> String {
    let mut text = String::from("[\"");
    text.push_str(event::PING);
    text.push_str("\",");
    push_u64(&mut text, n);
    text.push(']');
    text
}

/// `["set_flag",{"binary":1}]`: zlib frames are welcome.
pub fn set_flag_binary() -> String {
    let mut text = String::from("[\"");
    text.push_str(event::SET_FLAG);
    text.push_str("\",{\"binary\":1}]");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_the_original_text() {
        assert_eq!(
            login("app", "alice", "_no_need_token"),
            r#"["login",{"vid":"app","account":"alice","uid":0,"token":"_no_need_token","device":"websdk","ip":""}]"#
        );
        assert_eq!(
            call2(
                "user_getmsg",
                3,
                &Body::new().n("ver_clear", 0).n("max", 30).0,
                "L"
            ),
            r#"["call2",["user_getmsg",3,{"ver_clear":0,"max":30,"line":"L"}]]"#
        );
        assert_eq!(
            call2("user_logout", 9, "", "L"),
            r#"["call2",["user_logout",9,{"line":"L"}]]"#
        );
        assert_eq!(ping(7), r#"["ping",7]"#);
        assert_eq!(set_flag_binary(), r#"["set_flag",{"binary":1}]"#);
        assert_eq!(
            Body::new().s("a", "x\"y").raw("b", "[1]").0,
            r#""a":"x\"y","b":[1]"#
        );
    }
}
