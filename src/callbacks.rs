//! Callback properties: whatever the app assigns is stored and read back as is; at dispatch
//! time it is called (with the SDK object as `this`) only if it is a function, and whatever it
//! throws is caught and logged, never breaking the SDK.

use std::cell::RefCell;

use js_sys::Function;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// A fixed set of callback properties of one object.
pub(crate) struct Slots {
    values: RefCell<Vec<JsValue>>,
    /// The JS object the callbacks belong to (`this`); cleared when the object is finished
    /// so the cycle JS object ↔ Rust state can be collected.
    pub(crate) this: RefCell<JsValue>,
}

impl Slots {
    pub(crate) fn new(n: usize) -> Slots {
        Slots {
            values: RefCell::new(vec![JsValue::UNDEFINED; n]),
            this: RefCell::new(JsValue::UNDEFINED),
        }
    }

    pub(crate) fn get(&self, i: usize) -> JsValue {
        self.values.borrow()[i].clone()
    }

    pub(crate) fn set(&self, i: usize, v: JsValue) {
        self.values.borrow_mut()[i] = v;
    }

    /// Call slot `i` with `args` if it holds a function.
    pub(crate) fn fire(&self, i: usize, args: &[JsValue]) {
        let f = self.get(i);
        let Some(f) = f.dyn_ref::<Function>() else {
            return;
        };
        let this = self.this.borrow().clone();
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

/// Getter/setter pairs for callback properties, e.g. `session.onLoginSuccess = fn`.
macro_rules! callback_properties {
    ($ty:ident { $($idx:expr => $js:ident / $set:ident),* $(,)? }) => {
        #[wasm_bindgen]
        impl $ty {
            $(
                #[wasm_bindgen(getter = $js)]
                pub fn $js(&self) -> JsValue {
                    self.slots().get($idx)
                }
                #[wasm_bindgen(setter = $js)]
                pub fn $set(&self, f: JsValue) {
                    self.slots().set($idx, f)
                }
            )*
        }
    };
}
pub(crate) use callback_properties;
