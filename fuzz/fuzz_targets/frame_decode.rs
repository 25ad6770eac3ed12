//! Frames as they arrive off the wire, on both sides: the server's client-frame decoder
//! (text, and zlib binary frames inflated with the frame limit) must never panic, and a
//! decoded call2's arguments must decode without panicking too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opensig_protocol::frame::ClientFrame;
use opensig_protocol::zlib;

fn decode(text: &str) {
    if let Ok(ClientFrame::Call2(c)) = ClientFrame::decode(text) {
        let _ = c.decode();
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        decode(text);
    }
    // the same bytes as a binary frame: inflate (bounded like the server), then decode
    match zlib::decompress(data, 64 * 1024) {
        Ok(text) => {
            assert!(text.len() <= 64 * 1024, "inflated past the limit");
            decode(&text);
        }
        Err(_) => {}
    }
});
