//! The AgoraSig 1.4 web wire protocol, shared by the opensig server, the WASM SDK and the
//! native tools: names, codes, limits, message strings, SignalingToken, typed frames, and the
//! client session as a sans-IO state machine (see `ARCHITECTURE.md`).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod client;
pub mod codes;
pub mod ident;
pub mod json;
pub mod limits;
pub mod msg;
pub mod names;
pub mod small;
pub mod token;

#[cfg(feature = "tokio")]
pub mod driver;
#[cfg(feature = "serde")]
pub mod frame;
#[cfg(feature = "zlib")]
pub mod zlib;

pub use codes::{Code, ErrorKind};
pub use limits::Limits;
