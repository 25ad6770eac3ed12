//! Callback properties (`session.onLoginSuccess = fn`) are plain JS properties of the SDK
//! objects, as in the original: nothing is exported for them. At dispatch time the property is
//! read from the object and called (with the object as `this`) only if it is a function; what
//! it throws is caught and logged, never breaking the SDK.

use std::cell::RefCell;

use wasm_bindgen::prelude::*;

use crate::js::name;

#[wasm_bindgen(module = "/js/reader.js")]
extern "C" {
    /// `obj[name](…the first n of a, b, c)` if it is a function, its exception logged.
    #[wasm_bindgen(js_name = fire)]
    fn fire_js(obj: &JsValue, name: &JsValue, n: u32, a: &JsValue, b: &JsValue, c: &JsValue);
}

/// The JS object whose callbacks are called.
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

    /// Call the callback property `key` with `args` (at most 3) if it holds a function.
    pub(crate) fn fire(&self, key: &str, args: &[JsValue]) {
        // `this` only changes when the object is made or finished, both outside its callbacks
        // (the pump does not run again inside one), so it is borrowed, not copied, meanwhile
        let Ok(this) = self.this.try_borrow() else {
            return;
        };
        let u = JsValue::UNDEFINED;
        let arg = |i: usize| args.get(i).unwrap_or(&u);
        fire_js(&this, &name(key), args.len() as u32, arg(0), arg(1), arg(2));
    }
}
