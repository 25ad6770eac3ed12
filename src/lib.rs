//! opensig: a drop-in Rust/WebAssembly replacement for the Agora Signaling Web SDK 1.4.
//!
//! The JS classes `Signal`, `Session`, `Channel` and `Call` are thin wasm-bindgen wrappers
//! over the sans-IO client core of `opensig-protocol`. `hub` holds a session's core, its JS
//! objects and waiting requests; `transport` is the only IO (it drives the core); `dispatch`
//! turns the core's events into callbacks and settled promises. See `ARCHITECTURE.md`.
#![deny(unsafe_code)]
#![allow(non_snake_case)]

pub mod call;
mod callbacks;
pub mod channel;
mod dispatch;
mod hub;
mod js;
mod log;
mod promise;
pub mod session;
pub mod signal;
mod transport;

pub use call::Call;
pub use channel::Channel;
pub use session::Session;
pub use signal::Signal;

/// The SDK runs on the browser's one JS thread: talc's wasm allocator (see Cargo.toml).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
// SAFETY: the one global allocator of this wasm module, as talc's documentation asks (the
// only unsafe code in the SDK)
#[allow(unsafe_code)]
static ALLOC: talc::TalckWasm = unsafe { talc::TalckWasm::new_global() };
