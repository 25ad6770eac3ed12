//! `setDoLog(enabled, level)`: DEBUG prints everything (frames included), INFO prints state
//! changes and warnings, WARNING prints warnings only. Exceptions thrown by app callbacks are
//! always printed (as the original does).

use std::cell::Cell;

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
}

impl LogSettings {
    pub(crate) fn new() -> LogSettings {
        LogSettings {
            enabled: Cell::new(false),
            level: Cell::new(Level::Debug),
        }
    }

    pub(crate) fn enabled(&self, level: Level) -> bool {
        self.enabled.get() && level >= self.level.get()
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
        match level {
            Level::Debug => web_sys::console::debug_1(&line),
            Level::Info => web_sys::console::info_1(&line),
            Level::Warning => web_sys::console::warn_1(&line),
        }
    }
}
