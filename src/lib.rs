//! opensig WASM SDK (placeholder until the SDK lands).
