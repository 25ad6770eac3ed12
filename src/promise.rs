//! Promises the SDK hands out, and the `Error` objects they reject with.

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::prelude::*;

thread_local! {
    static IGNORE: Closure<dyn FnMut(JsValue)> = Closure::new(|_| {});
}

/// A promise and its settle functions.
#[derive(Clone)]
pub(crate) struct Deferred {
    pub promise: Promise,
    resolve: Function,
    reject: Function,
}

impl Deferred {
    /// A promise whose rejection, if the app ignores it, is not reported as unhandled.
    pub fn new() -> Deferred {
        let mut parts = None;
        let promise = Promise::new(&mut |res, rej| parts = Some((res, rej)));
        let (resolve, reject) = parts.expect("Promise executor runs synchronously");
        IGNORE.with(|f| {
            let _ = promise.catch(f);
        });
        Deferred {
            promise,
            resolve,
            reject,
        }
    }

    pub fn resolve(&self, v: &JsValue) {
        let _ = self.resolve.call1(&JsValue::UNDEFINED, v);
    }

    pub fn reject(&self, code: u32, reason: &str, response: Option<&JsValue>) {
        let _ = self
            .reject
            .call1(&JsValue::UNDEFINED, &error(code, reason, response));
    }
}

/// `Error(reason)` with `.code` and `.reason` (and `.response` when the server sent one).
pub(crate) fn error(code: u32, reason: &str, response: Option<&JsValue>) -> JsValue {
    let e: JsValue = js_sys::Error::new(reason).into();
    let _ = Reflect::set(&e, &"code".into(), &JsValue::from(code));
    let _ = Reflect::set(&e, &"reason".into(), &JsValue::from_str(reason));
    if let Some(r) = response {
        let _ = Reflect::set(&e, &"response".into(), r);
    }
    e
}

/// A promise already rejected (for methods called on an object whose session is gone).
pub(crate) fn rejected(code: u32, reason: &str) -> Promise {
    let d = Deferred::new();
    d.reject(code, reason, None);
    d.promise
}
