//! How many examples one forward and backward pass of the engine takes.
//!
//! The fast path holds every DP-aware layer's recorded input and per-example
//! output gradient until the clipping factors are known (book-keeping), so
//! its memory grows with the examples of a pass. Clipping is per example,
//! so a batch split into passes has exactly the clipped sum of the whole
//! (up to the order of f32 additions): on a CPU the engine splits a large
//! batch into passes whose records stay under a budget. On the benchmark
//! MLP at batch 4096 (5 passes) this took the DP step's peak resident
//! memory from 1.6× to 0.7× the non-private step's, and on the MNIST CNN at
//! 1024 (4 passes) from 1.2× to 0.55× (docs/benchmarks.md, issue 31).

use serde::{Deserialize, Serialize};
use std::num::NonZeroUsize;

/// How a batch is split into forward and backward passes.
///
/// Only time and memory depend on it: the clipped sum is the same up to
/// the order of f32 additions, and the split depends on the number of
/// examples and the shapes of the model and of the batch's first example,
/// never on values. (A loss that trims each slice's padding to its longest
/// sequence makes the first example's shape, so the split, depend on
/// data: that changes rounding, time and memory only.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PassSize {
    /// On a CPU backend (flex, ndarray), [`PassSize::Budget`] of
    /// [`PassSize::DEFAULT_BUDGET`] values; elsewhere (GPU backends, whose
    /// throughput needs large passes), [`PassSize::Whole`].
    #[default]
    Auto,
    /// The whole batch in one pass.
    Whole,
    /// At most this many examples per pass.
    Examples(NonZeroUsize),
    /// Passes of about as many examples as keep the values the layers
    /// record (inputs and output gradients) under this many, but at least
    /// [`PassSize::MIN_EXAMPLES`]. A batch of more than
    /// [`PassSize::MIN_EXAMPLES`] examples is measured first by a forward
    /// pass of its first example (its records' sizes, not its values), so
    /// a call's passes depend on its own batch only, never on earlier
    /// calls.
    Budget(NonZeroUsize),
}

impl PassSize {
    /// The budget of [`PassSize::Auto`] on a CPU: 2 Mi values (8 MiB of
    /// f32) recorded per pass.
    pub const DEFAULT_BUDGET: usize = 1 << 21;

    /// The fewest examples a [`PassSize::Budget`] pass takes (when the
    /// batch has that many left): below it, per-pass overheads outgrow the
    /// memory saved.
    pub const MIN_EXAMPLES: usize = 64;

    /// The policy in force on a device (`host`: a CPU backend).
    pub(crate) fn resolve(self, host: bool) -> Self {
        match self {
            PassSize::Auto if host => PassSize::Budget(
                NonZeroUsize::new(Self::DEFAULT_BUDGET).unwrap_or(NonZeroUsize::MIN),
            ),
            PassSize::Auto => PassSize::Whole,
            other => other,
        }
    }

    /// The number of examples of the next pass when `remaining` (≥ 1) are
    /// left, given the values recorded per example (`None` when not
    /// measured, or the model has no records: one pass). Passes of a
    /// capped policy are balanced: `remaining` is split into the fewest
    /// passes under the cap, of sizes that differ by at most one.
    pub(crate) fn next_pass(self, remaining: usize, values_per_example: Option<usize>) -> usize {
        let cap = match self {
            PassSize::Auto | PassSize::Whole => return remaining,
            PassSize::Examples(m) => m.get(),
            PassSize::Budget(budget) => match values_per_example {
                None => return remaining,
                Some(v) => (budget.get() / v.max(1)).max(Self::MIN_EXAMPLES),
            },
        };
        let passes = remaining.div_ceil(cap);
        remaining.div_ceil(passes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plan(size: PassSize, n: usize, per_example: Option<usize>) -> Vec<usize> {
        let mut passes = Vec::new();
        let mut left = n;
        while left > 0 {
            let next = size.next_pass(left, per_example);
            passes.push(next);
            left -= next;
        }
        passes
    }

    fn nz(v: usize) -> NonZeroUsize {
        NonZeroUsize::new(v).unwrap()
    }

    #[test]
    fn should_plan_the_benchmark_mlp_in_balanced_passes() {
        // 784-512-256-10: 1 552 inputs and 778 output gradients per example.
        let budget = PassSize::Auto.resolve(true);
        assert_eq!(budget, PassSize::Budget(nz(1 << 21)));
        // 2 097 152 / 2 330 = 900 examples at most: 4 096 in 5 passes.
        assert_eq!(
            plan(budget, 4096, Some(2330)),
            vec![820, 819, 819, 819, 819]
        );
        assert_eq!(plan(budget, 900, Some(2330)), vec![900]);
        assert_eq!(plan(budget, 901, Some(2330)), vec![451, 450]);
        // Nothing measured (or nothing recorded): one pass.
        assert_eq!(budget.next_pass(4096, None), 4096);
        // Huge records: still 64 examples a pass.
        assert_eq!(plan(budget, 200, Some(1 << 30)), vec![50, 50, 50, 50]);
        // GPUs and `Whole`: one pass.
        assert_eq!(PassSize::Auto.resolve(false), PassSize::Whole);
        assert_eq!(plan(PassSize::Whole, 4096, Some(2330)), vec![4096]);
        assert_eq!(
            plan(PassSize::Examples(nz(1000)), 2500, None),
            vec![834, 833, 833]
        );
    }

    proptest! {
        /// Every policy covers the batch exactly, in passes under its cap
        /// (or the floor) whose sizes differ by at most one once measured.
        #[test]
        fn should_cover_every_example_once(
            n in 1usize..20_000,
            cap in 1usize..5_000,
            per_example in proptest::option::of(1usize..100_000),
        ) {
            for size in [
                PassSize::Whole,
                PassSize::Examples(nz(cap)),
                PassSize::Budget(nz(cap * 1000)),
            ] {
                let passes = plan(size, n, per_example);
                prop_assert_eq!(passes.iter().sum::<usize>(), n);
                prop_assert!(passes.iter().all(|&p| p >= 1));
                let limit = match size {
                    PassSize::Examples(m) => m.get(),
                    PassSize::Budget(b) => match per_example {
                        Some(v) => (b.get() / v).max(PassSize::MIN_EXAMPLES),
                        None => n,
                    },
                    _ => n,
                };
                prop_assert!(passes.iter().all(|&p| p <= limit.max(1)), "{:?}", passes);
                let (lo, hi) = (passes.iter().min().unwrap(), passes.iter().max().unwrap());
                prop_assert!(hi - lo <= 1, "{:?}", passes);
            }
        }
    }
}
