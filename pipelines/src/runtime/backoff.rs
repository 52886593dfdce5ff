//! How long to wait before trying a peer again: exponential backoff with jitter.
//!
//! Every retry whose delay grows goes through one [`Backoff`]: the CouchDB listener's requests,
//! the Kafka alerts the broker did not take, the SQL replica's reconnects and the archive's
//! object-store writes. Each keeps its own first delay, cap and [`Jitter`].

use std::time::Duration;

use rand::RngExt;

/// How a retry's wait is drawn from its nominal delay `d`. Jitter keeps the retries of several
/// writers or jobs from reaching a peer in lockstep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Between `d/2` and `d` ("equal jitter"): never longer than the nominal delay.
    Equal,
    /// Between `d/2` and `3d/2`: the nominal delay on average.
    Around,
    /// Between `d` and `3d/2`, drawn in whole milliseconds: never shorter than the nominal
    /// delay.
    Above,
}

/// Jittered exponential backoff: the n-th retry (counting from 0) has the nominal delay
/// `base · 2^n`, capped at `max`, and waits a random time drawn from it as its [`Jitter`] says
/// ([`Jitter::Equal`] unless [`Backoff::with_jitter`] sets another). After a success,
/// [`Backoff::reset`] starts the next failure from `base` again.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use vigil_pipelines::runtime::backoff::{Backoff, Jitter};
///
/// let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
/// // The first wait lies between half the base and the base.
/// let first = backoff.next_delay();
/// assert!(Duration::from_millis(50) <= first && first <= Duration::from_millis(100));
/// // The nominal delay doubles with every failure, up to the cap.
/// assert_eq!(backoff.nominal(), Duration::from_millis(200));
/// for _ in 0..10 {
///     assert!(backoff.next_delay() <= Duration::from_secs(1));
/// }
/// assert_eq!(backoff.nominal(), Duration::from_secs(1));
/// // A success starts over.
/// backoff.reset();
/// assert_eq!(backoff.nominal(), Duration::from_millis(100));
///
/// // Never shorter than the nominal delay, and at most half as long again.
/// let mut backoff = Backoff::new(Duration::from_millis(100), Duration::MAX).with_jitter(Jitter::Above);
/// let first = backoff.next_delay();
/// assert!(Duration::from_millis(100) <= first && first <= Duration::from_millis(150));
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    /// The nominal delay of the first retry.
    base: Duration,
    /// The longest nominal delay.
    max: Duration,
    /// Failures since the start or the last reset.
    attempt: u32,
    /// How a wait is drawn from the nominal delay.
    jitter: Jitter,
}

impl Backoff {
    /// A backoff starting at `base` and capped at `max`, with [`Jitter::Equal`].
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
            jitter: Jitter::Equal,
        }
    }

    /// The same backoff with waits drawn as `jitter` says.
    pub fn with_jitter(self, jitter: Jitter) -> Self {
        Self { jitter, ..self }
    }

    /// The nominal delay of the next retry, before jitter: `base · 2^n` capped at `max` (the
    /// exponent stops growing at 20).
    pub fn nominal(&self) -> Duration {
        self.base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max)
    }

    /// The next wait; the nominal delay after it doubles.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal();
        self.attempt = self.attempt.saturating_add(1);
        match self.jitter {
            Jitter::Equal => {
                let half = nominal / 2;
                half + Duration::from_secs_f64(
                    rand::rng().random_range(0.0..=1.0) * half.as_secs_f64(),
                )
            }
            Jitter::Around => {
                Duration::try_from_secs_f64(rand::random_range(0.5..1.5) * nominal.as_secs_f64())
                    .unwrap_or(Duration::MAX)
            }
            Jitter::Above => nominal.saturating_add(Duration::from_millis(rand::random_range(
                0..=nominal.as_millis() as u64 / 2,
            ))),
        }
    }

    /// After a success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let bounds = [100, 200, 400, 800, 1000, 1000];
        for bound in bounds {
            let delay = backoff.next_delay().as_millis() as u64;
            assert!(
                (bound / 2..=bound).contains(&delay),
                "{delay} ms not within [{}, {bound}]",
                bound / 2
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn every_jitter_stays_within_its_bounds_around_the_doubling_delay() {
        // The replica writer's delays: 200 ms doubling to 30 s.
        let mut around = Backoff::new(Duration::from_millis(200), Duration::from_secs(30))
            .with_jitter(Jitter::Around);
        let mut nominal = Duration::from_millis(200);
        for _ in 0..12 {
            assert_eq!(around.nominal(), nominal);
            let delay = around.next_delay();
            assert!(
                nominal / 2 <= delay && delay < nominal * 3 / 2,
                "{delay:?} not within [{:?}, {:?})",
                nominal / 2,
                nominal * 3 / 2
            );
            nominal = (nominal * 2).min(Duration::from_secs(30));
        }
        assert_eq!(around.nominal(), Duration::from_secs(30));

        // The archive's delays: 100 ms doubling without a cap.
        let mut above =
            Backoff::new(Duration::from_millis(100), Duration::MAX).with_jitter(Jitter::Above);
        for nominal in [100, 200, 400, 800, 1600] {
            let delay = above.next_delay().as_millis() as u64;
            assert!(
                (nominal..=nominal * 3 / 2).contains(&delay),
                "{delay} ms not within [{nominal}, {}]",
                nominal * 3 / 2
            );
        }

        // Far past the cap, and past the exponent's limit, nothing overflows.
        let mut long = Backoff::new(Duration::from_secs(3600), Duration::MAX);
        for _ in 0..40 {
            long.next_delay();
        }
        assert_eq!(long.nominal(), Duration::from_secs(3600) * (1 << 20));
        long.reset();
        assert_eq!(long.nominal(), Duration::from_secs(3600));
    }
}
