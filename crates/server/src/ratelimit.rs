//! Token buckets: `rate` events per second with a burst of one second's worth (or of a
//! given size).

use tokio::time::Instant;

/// A token bucket refilled continuously.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: u32) -> Bucket {
        Bucket {
            tokens: rate as f64,
            last: Instant::now(),
        }
    }

    /// Whether the bucket has refilled completely (nothing to remember about it).
    pub fn is_full(&self, rate: u32) -> bool {
        let refilled = self.tokens + self.last.elapsed().as_secs_f64() * rate as f64;
        refilled >= rate as f64
    }

    /// A full bucket of `burst` tokens.
    pub fn with_burst(burst: u32) -> Bucket {
        Bucket::new(burst)
    }

    /// Take one token if the rate allows it now. A rate of 0 means unlimited.
    pub fn take(&mut self, rate: u32) -> bool {
        self.take_burst(rate, rate)
    }

    /// Take one token of a bucket refilled at `rate` per second up to `burst` tokens.
    pub fn take_burst(&mut self, rate: u32, burst: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate as f64).min(burst.max(rate) as f64);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_rate_per_second() {
        let mut b = Bucket::new(60);
        let ok = (0..100).filter(|_| b.take(60)).count();
        assert_eq!(ok, 60);
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        let ok = (0..100).filter(|_| b.take(60)).count();
        assert_eq!(ok, 30);
        assert!(Bucket::new(0).take(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_larger_than_the_rate() {
        let mut b = Bucket::with_burst(256);
        let ok = (0..300).filter(|_| b.take_burst(20, 256)).count();
        assert_eq!(ok, 256);
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        let ok = (0..300).filter(|_| b.take_burst(20, 256)).count();
        assert_eq!(ok, 10);
    }
}
