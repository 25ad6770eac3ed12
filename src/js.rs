//! The browser's own JSON: values made by `JSON.parse` are read in place through
//! [`JsonValue`], and handed to app callbacks as the very same objects.

use js_sys::{Array, Object, Reflect};
use opensig_protocol::json::JsonValue;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = JSON, js_name = parse, catch)]
    pub(crate) fn json_parse(text: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = JSON, js_name = stringify, catch)]
    pub(crate) fn json_stringify(value: &JsValue) -> Result<JsValue, JsValue>;
}

/// A JS value seen as JSON.
#[derive(Clone, Debug)]
pub struct Js(pub JsValue);

thread_local! {
    /// Member names the core reads, as JS strings made once: a name crosses from wasm memory
    /// to JS (a `TextDecoder` call) the first time only.
    static NAMES: std::cell::RefCell<Vec<(String, JsValue)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `key` as a JS string, made at most once (the SDK's names are few and fixed; a bound all
/// the same).
pub(crate) fn name(key: &str) -> JsValue {
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some((_, v)) = names.iter().find(|(k, _)| k == key) {
            return v.clone();
        }
        let v = JsValue::from_str(key);
        if names.len() < 128 {
            names.push((key.to_owned(), v.clone()));
        }
        v
    })
}

/// `Reflect.get(target, key)`.
fn get_member(target: &JsValue, key: &str) -> Option<JsValue> {
    Reflect::get(target, &name(key)).ok()
}

impl JsonValue for Js {
    fn parse(text: &str) -> Option<Self> {
        json_parse(&JsValue::from_str(text)).ok().map(Js)
    }
    fn parse_within(&self, text: &str, at: usize) -> Option<Self> {
        // the tail of the JS string itself (UTF-16 offsets), not a copy back from wasm
        let from = text.get(..at)?.encode_utf16().count() as u32;
        let s = self.0.dyn_ref::<js_sys::JsString>()?;
        json_parse(&s.slice(from, s.length())).ok().map(Js)
    }
    fn get(&self, key: &str) -> Option<Self> {
        if !self.0.is_object() {
            return None;
        }
        let v = get_member(&self.0, key)?;
        (!v.is_undefined()).then_some(Js(v))
    }
    fn at(&self, i: usize) -> Option<Self> {
        let a = self.0.dyn_ref::<Array>()?;
        (i < a.length() as usize).then(|| Js(a.get(i as u32)))
    }
    fn array_len(&self) -> Option<usize> {
        self.0.dyn_ref::<Array>().map(|a| a.length() as usize)
    }
    fn as_string(&self) -> Option<String> {
        self.0.as_string()
    }
    fn as_f64(&self) -> Option<f64> {
        self.0.as_f64()
    }
    fn keys(&self) -> Vec<String> {
        match self.0.dyn_ref::<Object>() {
            Some(o) if self.is_object() => Object::keys(o)
                .iter()
                .filter_map(|k| k.as_string())
                .collect(),
            _ => Vec::new(),
        }
    }
    fn is_object(&self) -> bool {
        self.0.is_object() && !Array::is_array(&self.0)
    }
    fn from_string(s: &str) -> Self {
        Js(JsValue::from_str(s))
    }
    fn from_f64(n: f64) -> Self {
        Js(JsValue::from_f64(n))
    }
    fn to_text(&self) -> String {
        json_stringify(&self.0)
            .ok()
            .and_then(|t| t.as_string())
            .unwrap_or_default()
    }
}

/// JSON text of an app value (`undefined` → `default`).
pub(crate) fn to_json_text(v: &JsValue, default: &str) -> String {
    if v.is_undefined() {
        return default.into();
    }
    json_stringify(v)
        .ok()
        .and_then(|t| t.as_string())
        .unwrap_or_else(|| default.into())
}

/// A list of names: each element of an array as [`to_text`] reads it (one name alone: a list
/// of one).
pub(crate) fn to_texts(v: &JsValue) -> Vec<String> {
    match v.dyn_ref::<Array>() {
        Some(a) => a.iter().map(|e| to_text(&e)).collect(),
        None => vec![to_text(v)],
    }
}

/// A string argument: strings as they are, anything else as JSON text (the original's rule).
pub(crate) fn to_text(v: &JsValue) -> String {
    match v.as_string() {
        Some(s) => s,
        None if v.is_undefined() || v.is_null() => String::new(),
        None => to_json_text(v, ""),
    }
}
