//! call2 argument decoding: the fast typed decoder (what well-formed clients hit) must agree
//! exactly with the lenient one (`Request::parse` over a JSON map) on every input both accept,
//! and neither may panic. Inputs are JSON objects over the real field names, with values of
//! every type, plus raw argument text.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use opensig_fuzz::Args;
use opensig_protocol::frame::{ClientFrame, Request};
use opensig_protocol::names::call;
use serde_json::Value;

#[derive(Arbitrary, Debug)]
struct Input {
    name: u8,
    other_name: String,
    args: Args,
    raw: String,
}

fuzz_target!(|i: Input| {
    let name = call::ALL
        .get(i.name as usize)
        .map_or(i.other_name.as_str(), |n| *n);
    let args = Value::Object(i.args.0.clone()).to_string();
    let frame = format!("[\"call2\",[{},1,{args}]]", Value::from(name));
    let Ok(ClientFrame::Call2(c)) = ClientFrame::decode(&frame) else {
        panic!("a well-formed call2 frame did not decode: {frame}");
    };
    let decoded = c.decode().expect("an object decodes");
    // the lenient reading of the same text (not of `i.args`: serde_json's float parsing
    // need not give back the exact f64 that was printed)
    let map: serde_json::Map<String, Value> = serde_json::from_str(&args).unwrap();
    assert_eq!(
        decoded.request,
        Request::parse(name, &map),
        "fast and lenient decoding disagree on {frame}"
    );
    assert_eq!(
        decoded.line.as_deref(),
        map.get("line").and_then(Value::as_str)
    );
    // raw argument text: anything goes, nothing panics
    let frame = format!(
        "[\"call2\",[\"{}\",2,{}]]",
        name.replace(['"', '\\'], ""),
        i.raw
    );
    if let Ok(ClientFrame::Call2(c)) = ClientFrame::decode(&frame) {
        let _ = c.decode();
    }
});
