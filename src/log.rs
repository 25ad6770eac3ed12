//! `setDoLog(enabled, level)`: DEBUG prints everything (frames included), INFO prints state
//! changes and warnings, WARNING prints warnings only. Exceptions thrown by app callbacks are
//! always printed (as the original does).
//!
//! `signal.onLog = (txt) => …` (the Android/iOS `onLog`) receives every line at or above the
//! level, whether or not console printing is enabled.

use std::cell::{Cell, RefCell};

use js_sys::Function;
use wasm_bindgen::JsValue;

/// Severity, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Debug,
    Info,
    Warning,
}

impl Level {
    pub(crate) fn parse(name: &str) -> Option<Level> {
        match name {
            "DEBUG" => Some(Level::Debug),
            "INFO" => Some(Level::Info),
            "WARNING" => Some(Level::Warning),
            _ => None,
        }
    }
}

/// Logging settings of a Signal, shared by its sessions.
pub(crate) struct LogSettings {
    pub enabled: Cell<bool>,
    pub level: Cell<Level>,
    /// `signal.onLog`.
    pub on_log: RefCell<Option<Function>>,
}

impl LogSettings {
    pub(crate) fn new() -> LogSettings {
        LogSettings {
            enabled: Cell::new(false),
            level: Cell::new(Level::Debug),
            on_log: RefCell::new(None),
        }
    }

    /// Whether a line at `level` goes anywhere (the console or `onLog`).
    pub(crate) fn enabled(&self, level: Level) -> bool {
        level >= self.level.get() && (self.enabled.get() || self.on_log.borrow().is_some())
    }

    pub(crate) fn print(&self, level: Level, what: &str, detail: &str) {
        if !self.enabled(level) {
            return;
        }
        let mut line = String::from("opensig: ");
        line.push_str(what);
        if !detail.is_empty() {
            line.push(' ');
            line.push_str(detail);
        }
        let line = JsValue::from_str(&line);
        let hook = self.on_log.borrow().clone();
        if let Some(f) = hook {
            if let Err(e) = f.call1(&JsValue::UNDEFINED, &line) {
                web_sys::console::error_2(&"opensig: onLog threw:".into(), &e);
            }
        }
        if !self.enabled.get() {
            return;
        }
        match level {
            Level::Debug => web_sys::console::debug_1(&line),
            Level::Info => web_sys::console::info_1(&line),
            Level::Warning => web_sys::console::warn_1(&line),
        }
    }
}
