//! A local webhook receiver for `opensig-bench webhooks`: takes every delivery (200), counts
//! its events and keeps each event's latency (now − the event's `time`, in ms).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;

/// What the receiver saw.
#[derive(Default)]
pub struct Sink {
    /// Events taken.
    pub events: AtomicU64,
    /// Latency of each event (ms).
    pub latency_ms: std::sync::Mutex<Vec<u64>>,
    /// When the last event arrived (ms since the Unix epoch).
    pub last_ms: AtomicU64,
}

/// Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Sink {
    /// Forget what was seen.
    pub fn reset(&self) {
        self.events.store(0, Ordering::SeqCst);
        self.latency_ms.lock().unwrap().clear();
    }

    /// p50 and p99 of the latencies seen (ms).
    pub fn percentiles(&self) -> (u64, u64) {
        let mut v = self.latency_ms.lock().unwrap().clone();
        if v.is_empty() {
            return (0, 0);
        }
        v.sort_unstable();
        let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        (at(0.50), at(0.99))
    }
}

/// Start a receiver on a free loopback port: `http://addr/hook`.
pub async fn start() -> Result<(SocketAddr, Arc<Sink>)> {
    let sink = Arc::new(Sink::default());
    let s = sink.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let s = s.clone();
            async move {
                let now = now_ms();
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let events = v["events"].as_array().map_or(&[][..], |a| a.as_slice());
                let mut lat = s.latency_ms.lock().unwrap();
                for e in events {
                    lat.push(now.saturating_sub(e["time"].as_u64().unwrap_or(now)));
                }
                s.events.fetch_add(events.len() as u64, Ordering::SeqCst);
                s.last_ms.store(now, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, sink))
}
