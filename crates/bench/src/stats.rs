//! Latency samples and percentiles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Collected latencies (a plain vector; for a few thousand samples).
#[derive(Default, Clone, Debug)]
pub struct Samples {
    v: Vec<u64>,
}

impl Samples {
    /// Record one latency.
    pub fn add(&mut self, d: Duration) {
        self.v.push(d.as_micros() as u64);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.v.len()
    }

    /// Nearest-rank percentile (`p` in 0..=100) in microseconds; 0 without samples.
    pub fn percentile(&mut self, p: f64) -> u64 {
        if self.v.is_empty() {
            return 0;
        }
        self.v.sort_unstable();
        let rank = ((p / 100.0) * self.v.len() as f64).ceil() as usize;
        self.v[rank.clamp(1, self.v.len()) - 1]
    }
}

/// Buckets: 1 µs wide up to 2 ms, 100 µs wide up to 10 s (larger values land in the last).
const FINE: u64 = 2000;
const COARSE_STEP: u64 = 100;
const MAX_US: u64 = 10_000_000;
const BUCKETS: usize = (FINE + (MAX_US - FINE) / COARSE_STEP + 1) as usize;

/// A lock-free latency histogram many tasks record into at once.
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    fn bucket(us: u64) -> usize {
        if us < FINE {
            us as usize
        } else {
            ((FINE + (us.min(MAX_US) - FINE) / COARSE_STEP) as usize).min(BUCKETS - 1)
        }
    }

    fn value(b: usize) -> u64 {
        let b = b as u64;
        if b < FINE {
            b
        } else {
            FINE + (b - FINE) * COARSE_STEP
        }
    }

    /// Record one latency in microseconds.
    pub fn record_us(&self, us: u64) {
        self.buckets[Self::bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Nearest-rank percentile in microseconds (bucket lower bound); 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return Self::value(i);
            }
        }
        Self::value(BUCKETS - 1)
    }

    /// Forget everything (after a warm-up).
    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
        self.count.store(0, Ordering::Relaxed);
    }
}

/// `1234` µs → `"1.23 ms"`.
pub fn fmt_us(us: u64) -> String {
    if us >= 1000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        assert_eq!(s.percentile(50.0), 0);
        for us in 1..=100 {
            s.add(Duration::from_micros(us));
        }
        assert_eq!(s.len(), 100);
        assert_eq!(s.percentile(50.0), 50);
        assert_eq!(s.percentile(99.0), 99);
        assert_eq!(s.percentile(99.9), 100);
        assert_eq!(s.percentile(100.0), 100);
        assert_eq!(s.percentile(0.0), 1);
        assert_eq!(fmt_us(1234), "1.23 ms");
        assert_eq!(fmt_us(999), "999 µs");
    }

    #[test]
    fn histogram_matches_exact_percentiles() {
        let h = Histogram::default();
        assert_eq!(h.percentile(99.0), 0);
        let mut s = Samples::default();
        for i in 0..10_000u64 {
            // fine range exact, coarse range within one 100 µs bucket
            let us = (i * 7919) % 5000;
            h.record_us(us);
            s.add(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 10_000);
        for p in [50.0, 90.0, 99.0, 99.9] {
            let exact = s.percentile(p);
            let approx = h.percentile(p);
            assert!(
                approx <= exact && exact - approx < COARSE_STEP,
                "p{p}: {approx} vs {exact}"
            );
        }
        assert_eq!(h.percentile(10.0), s.percentile(10.0));
        h.record_us(u64::MAX);
        assert_eq!(h.percentile(100.0), MAX_US);
        h.reset();
        assert_eq!(h.count(), 0);
    }
}
