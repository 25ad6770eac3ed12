//! Input generators shared by the fuzz targets.

use arbitrary::{Arbitrary, Unstructured};
use serde_json::{Map, Value};

/// Every argument name a call2 uses, and one that none does.
pub const FIELDS: &[&str] = &[
    "line",
    "name",
    "peer",
    "account",
    "channel",
    "channelName",
    "content",
    "msg",
    "value",
    "flag",
    "t",
    "messageID",
    "msgID",
    "ver_clear",
    "max",
    "num",
    "force",
    "extra",
    "clear_msgs",
    "dtmf",
    "attr",
    "x",
];

/// A call2 argument object over the real field names, values of every JSON type.
#[derive(Debug)]
pub struct Args(pub Map<String, Value>);

/// A JSON value of any type (nested up to depth 3).
pub fn value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    Ok(match u.int_in_range(0..=9)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<u32>()?),
        3 => Value::from(u.arbitrary::<i64>()?),
        4 => serde_json::Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        5 => Value::from(u.int_in_range(0u64..=20)?.to_string()),
        6 if depth < 3 => {
            let n = u.int_in_range(0..=3)?;
            Value::Array(
                (0..n)
                    .map(|_| value(u, depth + 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        7 if depth < 3 => Value::Object(object(u, depth + 1)?),
        _ => Value::String(u.arbitrary()?),
    })
}

/// A JSON object, mostly over [`FIELDS`].
pub fn object(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Map<String, Value>> {
    let mut m = Map::new();
    for _ in 0..u.int_in_range(0..=6)? {
        let k = if u.ratio(1, 8)? {
            u.arbitrary::<String>()?
        } else {
            u.choose(FIELDS)?.to_string()
        };
        m.insert(k, value(u, depth)?);
    }
    Ok(m)
}

impl<'a> Arbitrary<'a> for Args {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Args(object(u, 0)?))
    }
}
