//! Callback properties (`session.onLoginSuccess = fn`) are plain JS properties of the SDK
//! objects, as in the original: nothing is exported for them. At dispatch time the property is
//! read from the object and called (with the object as `this`) only if it is a function; what
//! it throws is caught and logged, never breaking the SDK.

use std::cell::RefCell;

use js_sys::{Function, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// The JS object whose callback properties are called.
pub(crate) struct Slots {
    /// The JS object the callbacks belong to (`this`); cleared when the object is finished
    /// so the cycle JS object ↔ Rust state can be collected (no callback fires after that).
    pub(crate) this: RefCell<JsValue>,
}

impl Slots {
    pub(crate) fn new() -> Slots {
        Slots {
            this: RefCell::new(JsValue::UNDEFINED),
        }
    }

    /// Call the callback property `name` with `args` if it holds a function.
    pub(crate) fn fire(&self, name: &str, args: &[JsValue]) {
        let this = self.this.borrow().clone();
        if !this.is_object() {
            return;
        }
        let Ok(f) = Reflect::get(&this, &JsValue::from_str(name)) else {
            return;
        };
        let Some(f) = f.dyn_ref::<Function>() else {
            return;
        };
        let r = match args {
            [] => f.call0(&this),
            [a] => f.call1(&this, a),
            [a, b] => f.call2(&this, a, b),
            [a, b, c] => f.call3(&this, a, b, c),
            _ => f.apply(&this, &args.iter().collect()),
        };
        if let Err(e) = r {
            web_sys::console::error_2(&JsValue::from_str("opensig: an app callback threw:"), &e);
        }
    }
}
