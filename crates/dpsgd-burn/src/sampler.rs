//! Batch samplers. DP-SGD's accounting assumes **Poisson sampling**: each
//! example joins each batch independently with probability q, so batch sizes
//! vary (and may be zero). The sampler owns q; the DP optimizer takes it from
//! here, so the accountant and the data pipeline cannot disagree.

use dpsgd_core::{Error, Result};
use rand::Rng;

/// Poisson sampling with rate `q = expected_batch_size / dataset_size`.
///
/// # Privacy
///
/// The sampling randomness must be secret for privacy amplification by
/// subsampling to hold: draw batches with a cryptographically secure
/// generator (the [`crate::PrivacyEngine`] uses ChaCha20 seeded from the OS).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoissonSampler {
    dataset_size: usize,
    sample_rate: f64,
}

impl PoissonSampler {
    /// A sampler whose batches have `expected_batch_size` examples on average.
    ///
    /// # Errors
    ///
    /// An empty dataset, or an expected batch size of 0 or above the dataset size.
    pub fn new(dataset_size: usize, expected_batch_size: usize) -> Result<Self> {
        if dataset_size == 0 {
            return Err(Error::invalid("dataset_size", 0, "the dataset is empty"));
        }
        if expected_batch_size == 0 || expected_batch_size > dataset_size {
            return Err(Error::invalid(
                "batch_size",
                expected_batch_size,
                format!("must be in 1..={dataset_size} (the dataset size)"),
            ));
        }
        Self::with_sample_rate(
            dataset_size,
            expected_batch_size as f64 / dataset_size as f64,
        )
    }

    /// A sampler with an explicit rate.
    ///
    /// # Errors
    ///
    /// `q ∉ (0, 1]` or an empty dataset.
    pub fn with_sample_rate(dataset_size: usize, sample_rate: f64) -> Result<Self> {
        if dataset_size == 0 {
            return Err(Error::invalid("dataset_size", 0, "the dataset is empty"));
        }
        if !(sample_rate.is_finite() && sample_rate > 0.0 && sample_rate <= 1.0) {
            return Err(Error::invalid(
                "sample_rate",
                sample_rate,
                "must be in (0, 1]",
            ));
        }
        Ok(Self {
            dataset_size,
            sample_rate,
        })
    }

    /// q.
    pub fn sample_rate(&self) -> f64 {
        self.sample_rate
    }

    /// N.
    pub fn dataset_size(&self) -> usize {
        self.dataset_size
    }

    /// q·N.
    pub fn expected_batch_size(&self) -> f64 {
        self.sample_rate * self.dataset_size as f64
    }

    /// Steps per epoch: `round(1/q)`, so that an "epoch" sees N examples in
    /// expectation.
    pub fn steps_per_epoch(&self) -> u64 {
        (1.0 / self.sample_rate).round().max(1.0) as u64
    }

    /// One batch: sorted indices, each included with probability q (by
    /// geometric skipping, O(batch size)). May be empty.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Vec<usize> {
        if self.sample_rate >= 1.0 {
            return (0..self.dataset_size).collect();
        }
        let log_1mq = (-self.sample_rate).ln_1p();
        let mut out = Vec::with_capacity((self.expected_batch_size() * 1.2) as usize + 8);
        let mut i: f64 = -1.0;
        loop {
            let u: f64 = rng.random();
            // Gap ~ Geometric(q): P(gap = k) = (1−q)^k q.
            let gap = ((1.0 - u).ln() / log_1mq).floor();
            i += gap + 1.0;
            if i >= self.dataset_size as f64 {
                return out;
            }
            out.push(i as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn should_include_each_example_with_probability_q() {
        // 2000 batches of N = 1000 at q = 0.05: each index's inclusion count
        // is Binomial(2000, 0.05) (mean 100, sd 9.7); the total is
        // Binomial(2e6, 0.05): mean 1e5, sd 308; 5-sd bands (false alarm ≈ 6e-7 each).
        let s = PoissonSampler::new(1000, 50).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let mut counts = vec![0u32; 1000];
        let mut sizes = Vec::new();
        for _ in 0..2000 {
            let b = s.sample(&mut rng);
            assert!(b.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
            sizes.push(b.len());
            for i in b {
                counts[i] += 1;
            }
        }
        let total: usize = sizes.iter().sum();
        assert!((total as f64 - 1e5).abs() < 5.0 * 308.0, "{total}");
        assert!(
            counts
                .iter()
                .all(|&c| (c as f64 - 100.0).abs() < 6.0 * 9.75)
        );
        assert!(sizes.iter().min() < sizes.iter().max(), "batch sizes vary");
        assert!(counts[0] > 0 && counts[999] > 0, "both ends reachable");
    }

    #[test]
    fn should_produce_empty_batches_at_tiny_rates() {
        let s = PoissonSampler::with_sample_rate(10, 0.01).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let empties = (0..100).filter(|_| s.sample(&mut rng).is_empty()).count();
        // P(empty) = 0.99^10 ≈ 0.904.
        assert!(empties > 75, "{empties}");
        assert_eq!(s.steps_per_epoch(), 100);
    }

    #[test]
    fn should_reject_bad_sizes() {
        assert!(PoissonSampler::new(0, 1).is_err());
        assert!(PoissonSampler::new(10, 0).is_err());
        assert!(PoissonSampler::new(10, 11).is_err());
        assert!(PoissonSampler::with_sample_rate(10, 1.5).is_err());
        assert_eq!(
            PoissonSampler::new(10, 10)
                .unwrap()
                .sample(&mut ChaCha20Rng::seed_from_u64(0))
                .len(),
            10
        );
    }
}
