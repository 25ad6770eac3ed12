//! Counters exposed at `/metrics` (Prometheus text format).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters and gauges.
#[derive(Default, Debug)]
pub struct Stats {
    /// Open WebSocket connections.
    pub connections: AtomicU64,
    /// Logged-in sessions on this node.
    pub sessions: AtomicU64,
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Frames (or batches) written.
    pub frames_out: AtomicU64,
    /// Peer-to-peer messages accepted.
    pub p2p_messages: AtomicU64,
    /// Channel messages accepted.
    pub channel_messages: AtomicU64,
    /// Requests refused with an error reply.
    pub errors: AtomicU64,
    /// Connections closed for not reading their queue.
    pub slow_consumers: AtomicU64,
    /// Successful logins.
    pub logins: AtomicU64,
    /// Failed logins.
    pub login_failures: AtomicU64,
    /// Error replies by kind (their wire string): rate limits, quotas, bad input.
    pub refused: dashmap::DashMap<&'static str, u64>,
}

impl Stats {
    /// Add one.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtract one.
    pub fn dec(c: &AtomicU64) {
        c.fetch_sub(1, Ordering::Relaxed);
    }

    /// Count an error reply of `kind` (and in `errors`).
    pub fn refusal(&self, kind: opensig_protocol::ErrorKind) {
        Stats::inc(&self.errors);
        *self.refused.entry(kind.as_str()).or_insert(0) += 1;
    }

    /// Error replies so far, by kind.
    pub fn refusals(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.refused
            .iter()
            .map(|e| (*e.key(), *e.value()))
            .collect()
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let rows: [(&str, &str, &AtomicU64); 10] = [
            ("opensig_connections", "gauge", &self.connections),
            ("opensig_sessions", "gauge", &self.sessions),
            ("opensig_frames_in_total", "counter", &self.frames_in),
            ("opensig_frames_out_total", "counter", &self.frames_out),
            ("opensig_p2p_messages_total", "counter", &self.p2p_messages),
            (
                "opensig_channel_messages_total",
                "counter",
                &self.channel_messages,
            ),
            ("opensig_error_replies_total", "counter", &self.errors),
            (
                "opensig_slow_consumers_total",
                "counter",
                &self.slow_consumers,
            ),
            ("opensig_logins_total", "counter", &self.logins),
            (
                "opensig_login_failures_total",
                "counter",
                &self.login_failures,
            ),
        ];
        for (name, kind, v) in rows {
            let _ = writeln!(
                s,
                "# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(s, "# TYPE opensig_error_replies_by_kind_total counter");
        for (kind, n) in self.refusals() {
            let _ = writeln!(
                s,
                "opensig_error_replies_by_kind_total{{kind=\"{kind}\"}} {n}"
            );
        }
        s
    }
}
