//! msg-v2 / msg-v3 strings: parsing arbitrary text never panics, and what the builders make
//! parses back to the same fields (for fields without spaces, as callers guarantee).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use opensig_protocol::msg;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    raw: &'a str,
    id: &'a str,
    source: &'a str,
    dest: &'a str,
    kind: &'a str,
    flag: &'a str,
    content: &'a str,
}

fn field(s: &str) -> bool {
    !s.is_empty() && !s.contains(' ')
}

fuzz_target!(|i: Input<'_>| {
    if let Some(m) = msg::parse(i.raw) {
        // whatever parsed came from the input, in order
        assert!(i.raw.contains(m.source) && i.raw.ends_with(m.content));
    }
    if ![i.id, i.source, i.dest, i.kind, i.flag]
        .iter()
        .all(|f| field(f))
    {
        return;
    }
    let v2 = msg::build_v2(i.source, i.dest, i.kind, i.flag, i.content);
    let m = msg::parse(&v2).expect("a built msg-v2 parses");
    assert_eq!(
        (m.id, m.source, m.dest, m.kind, m.flag, m.content),
        (None, i.source, i.dest, i.kind, i.flag, i.content)
    );
    let v3 = msg::build_v3(i.id, i.source, i.dest, i.kind, i.flag, i.content);
    let m = msg::parse(&v3).expect("a built msg-v3 parses");
    assert_eq!(
        (m.id, m.source, m.dest, m.kind, m.flag, m.content),
        (Some(i.id), i.source, i.dest, i.kind, i.flag, i.content)
    );
});
