//! The JSON the client core needs, without a JSON library of its own.
//!
//! Incoming frames are parsed by whoever drives the core — `JSON.parse` in the browser,
//! serde_json natively — and read through [`JsonValue`]. Values the app should see verbatim
//! (a join `list`, an `invoke` reply, a call's `extra`) pass through untouched, so in the
//! browser they reach callbacks as the very objects `JSON.parse` made. Outgoing frames are
//! small and fixed in shape; [`push_str`] and [`push_u64`] write them.

use core::fmt::Debug;

/// Read access to a parsed JSON value, implemented by the driver's native value type.
pub trait JsonValue: Clone + Debug {
    /// Parse JSON text; `None` when it is not valid JSON.
    fn parse(text: &str) -> Option<Self>;
    /// Parse the JSON text that starts at byte `at` of this string value, whose text is
    /// `text` (as [`JsonValue::as_string`] gave it). A driver whose strings live elsewhere
    /// (the browser) parses its own copy and spares sending the text back.
    fn parse_within(&self, text: &str, at: usize) -> Option<Self> {
        Self::parse(text.get(at..)?)
    }
    /// Object member `key`; `None` when this is not an object or the member is absent.
    fn get(&self, key: &str) -> Option<Self>;
    /// Array element `i`; `None` when this is not an array or `i` is out of range.
    fn at(&self, i: usize) -> Option<Self>;
    /// Length, when this is an array.
    fn array_len(&self) -> Option<usize>;
    /// The string, when this is a string.
    fn as_string(&self) -> Option<String>;
    /// The number, when this is a number.
    fn as_f64(&self) -> Option<f64>;
    /// Member names in order, when this is an object (empty otherwise).
    fn keys(&self) -> Vec<String>;
    /// Whether this is an object (not an array, not null).
    fn is_object(&self) -> bool;
    /// A string value.
    fn from_string(s: &str) -> Self;
    /// A number value.
    fn from_f64(n: f64) -> Self;
    /// JSON text of this value.
    fn to_text(&self) -> String;
}

/// Append `s` as a JSON string literal (with quotes).
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Append `n` in decimal.
pub fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // SAFETY-free: digits are ASCII
    for &d in &buf[i..] {
        out.push(d as char);
    }
}

/// A JSON string literal of `s`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_str(&mut out, s);
    out
}

/// A number read as an unsigned integer (the wire's ids, versions and sequences).
pub fn as_u64<V: JsonValue>(v: &V) -> Option<u64> {
    let f = v.as_f64()?;
    (f >= 0.0 && f.fract() == 0.0 && f <= 9_007_199_254_740_992.0).then_some(f as u64)
}

#[cfg(feature = "serde")]
impl JsonValue for serde_json::Value {
    fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
    fn get(&self, key: &str) -> Option<Self> {
        self.as_object()?.get(key).cloned()
    }
    fn at(&self, i: usize) -> Option<Self> {
        self.as_array()?.get(i).cloned()
    }
    fn array_len(&self) -> Option<usize> {
        self.as_array().map(Vec::len)
    }
    fn as_string(&self) -> Option<String> {
        self.as_str().map(str::to_owned)
    }
    fn as_f64(&self) -> Option<f64> {
        serde_json::Value::as_f64(self)
    }
    fn keys(&self) -> Vec<String> {
        self.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
    fn is_object(&self) -> bool {
        serde_json::Value::is_object(self)
    }
    fn from_string(s: &str) -> Self {
        serde_json::Value::String(s.to_owned())
    }
    fn from_f64(n: f64) -> Self {
        serde_json::Number::from_f64(n)
            .map(|n| {
                if let Some(i) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9e15) {
                    serde_json::Value::from(i as i64)
                } else {
                    serde_json::Value::Number(n)
                }
            })
            .unwrap_or(serde_json::Value::Null)
    }
    fn to_text(&self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_like_json() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "nl\n\r\t",
            "\u{1}\u{1f}",
            "中文 ✓",
            "",
        ] {
            let text = quote(s);
            let back: String = serde_json::from_str(&text).unwrap();
            assert_eq!(back, s);
        }
        assert_eq!(quote("\u{1}"), "\"\\u0001\"");
    }

    #[test]
    fn integers() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut s = String::new();
            push_u64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn serde_value_impl() {
        let v = <serde_json::Value as JsonValue>::parse(r#"{"a":[1,"x"],"b":2.5}"#).unwrap();
        let get = |k| JsonValue::get(&v, k).unwrap();
        assert_eq!(v.keys(), vec!["a", "b"]);
        assert_eq!(get("a").array_len(), Some(2));
        assert_eq!(as_u64(&get("a").at(0).unwrap()), Some(1));
        assert_eq!(get("a").at(1).unwrap().as_string().as_deref(), Some("x"));
        assert_eq!(as_u64(&get("b")), None);
        assert!(<serde_json::Value as JsonValue>::parse("{").is_none());
        assert_eq!(
            <serde_json::Value as JsonValue>::from_f64(3.0).to_text(),
            "3"
        );
    }
}
