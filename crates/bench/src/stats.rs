//! Latency samples and percentiles.

use std::time::Duration;

/// Collected latencies.
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
        assert_eq!(s.percentile(50.0), 50);
        assert_eq!(s.percentile(99.0), 99);
        assert_eq!(s.percentile(99.9), 100);
        assert_eq!(s.percentile(100.0), 100);
        assert_eq!(s.percentile(0.0), 1);
        let mut one = Samples::default();
        one.add(Duration::from_micros(7));
        assert_eq!(one.percentile(99.0), 7);
        assert_eq!(fmt_us(1234), "1.23 ms");
        assert_eq!(fmt_us(999), "999 µs");
    }
}
