//! The record of what a training run has done: segments of identical steps.

use crate::error::{Result, check_noise_multiplier, check_sample_rate};
use serde::{Deserialize, Serialize};

/// `steps` consecutive steps of the Poisson-subsampled Gaussian mechanism
/// with the same noise multiplier and sampling rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// σ: noise standard deviation divided by the clipping norm.
    pub noise_multiplier: f64,
    /// q: the probability that an example is in a step's batch.
    pub sample_rate: f64,
    /// Number of steps.
    pub steps: u64,
}

impl Segment {
    /// A validated segment.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`](crate::Error::InvalidParameter) when
    /// `σ ≤ 0` or `q ∉ (0, 1]`.
    pub fn new(noise_multiplier: f64, sample_rate: f64, steps: u64) -> Result<Self> {
        check_noise_multiplier(noise_multiplier)?;
        check_sample_rate(sample_rate)?;
        Ok(Self {
            noise_multiplier,
            sample_rate,
            steps,
        })
    }
}

/// The steps taken so far, as a list of segments; consecutive steps with the
/// same (σ, q) are merged, so the history stays short for the usual runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    segments: Vec<Segment>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a segment, merging it with the last one when (σ, q) match.
    pub fn push(&mut self, segment: Segment) {
        if segment.steps == 0 {
            return;
        }
        match self.segments.last_mut() {
            Some(last)
                if last.noise_multiplier == segment.noise_multiplier
                    && last.sample_rate == segment.sample_rate =>
            {
                // Saturating: a count that cannot grow further is kept at
                // its maximum (more steps only raise ε), never wrapped.
                last.steps = last.steps.saturating_add(segment.steps);
            }
            _ => self.segments.push(segment),
        }
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Total number of steps.
    pub fn steps(&self) -> u64 {
        self.segments
            .iter()
            .fold(0u64, |total, s| total.saturating_add(s.steps))
    }
}
