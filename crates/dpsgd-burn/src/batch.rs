//! Batches that can be split into examples: the generic fallback engine runs
//! micro-batches of one, and virtual batches run physical chunks.

use burn::tensor::{Device, Int, Tensor};

/// A batch of examples along dimension 0.
pub trait ExampleBatch: Sized {
    /// Number of examples.
    fn num_examples(&self) -> usize;
    /// Examples `start..end`.
    fn slice_examples(&self, start: usize, end: usize) -> Self;
    /// The same batch on `device` (data-parallel workers).
    fn to_device(&self, device: &Device) -> Self;
    /// Which examples are white-box gradient canaries (see
    /// [`crate::canary`]); none unless the batch is a
    /// [`WithCanaries`](crate::canary::WithCanaries).
    fn gradient_canaries(&self) -> Option<&crate::canary::CanaryRows> {
        None
    }
}

impl<const D: usize> ExampleBatch for Tensor<D> {
    fn num_examples(&self) -> usize {
        self.dims()[0]
    }
    fn slice_examples(&self, start: usize, end: usize) -> Self {
        self.clone().narrow(0, start, end - start)
    }
    fn to_device(&self, device: &Device) -> Self {
        self.clone().to_device(device)
    }
}

impl<const D: usize> ExampleBatch for Tensor<D, Int> {
    fn num_examples(&self) -> usize {
        self.dims()[0]
    }
    fn slice_examples(&self, start: usize, end: usize) -> Self {
        self.clone().narrow(0, start, end - start)
    }
    fn to_device(&self, device: &Device) -> Self {
        self.clone().to_device(device)
    }
}

/// Implements [`ExampleBatch`] for a batch struct whose fields are all
/// batches along dimension 0 (tensors, `Option`s and tuples of them, other
/// [`ExampleBatch`]es): every field is sliced and moved together. Name
/// every field — one left out is a compile error, not a field silently
/// kept whole.
///
/// ```
/// use burn::tensor::{Int, Tensor};
///
/// #[derive(Clone, Debug)]
/// struct DigitsBatch {
///     images: Tensor<2>,
///     targets: Tensor<1, Int>,
/// }
/// dpsgd_burn::impl_example_batch!(DigitsBatch { images, targets });
///
/// use dpsgd_burn::ExampleBatch;
/// let device = Default::default();
/// let batch = DigitsBatch {
///     images: Tensor::zeros([5, 64], &device),
///     targets: Tensor::zeros([5], &device),
/// };
/// assert_eq!(batch.num_examples(), 5);
/// assert_eq!(batch.slice_examples(1, 3).images.dims(), [2, 64]);
/// ```
///
/// All fields must have the same number of examples, but for those with
/// none (an `Option` field that is `None`): a batch whose fields disagree
/// panics rather than let one record feed two clipped gradients.
#[macro_export]
macro_rules! impl_example_batch {
    ($batch:ty { $($field:ident),+ $(,)? }) => {
        impl $crate::ExampleBatch for $batch {
            fn num_examples(&self) -> usize {
                // A field without examples of its own (an `Option` that is
                // `None`) does not count; every other field must agree.
                let counts = [$($crate::ExampleBatch::num_examples(&self.$field)),+];
                let n = counts.iter().copied().max().unwrap_or(0);
                assert!(
                    counts.iter().all(|&c| c == n || c == 0),
                    "the fields of a batch disagree on its number of examples: {counts:?}"
                );
                n
            }
            fn slice_examples(&self, start: usize, end: usize) -> Self {
                Self {
                    $($field: $crate::ExampleBatch::slice_examples(&self.$field, start, end)),+
                }
            }
            fn to_device(&self, device: &$crate::__private::Device) -> Self {
                Self {
                    $($field: $crate::ExampleBatch::to_device(&self.$field, device)),+
                }
            }
        }
    };
}

/// An optional part of a batch (per-row weights that only some runs have):
/// `None` has no examples of its own and stays `None`.
impl<B: ExampleBatch> ExampleBatch for Option<B> {
    fn num_examples(&self) -> usize {
        self.as_ref().map_or(0, ExampleBatch::num_examples)
    }
    fn slice_examples(&self, start: usize, end: usize) -> Self {
        self.as_ref().map(|b| b.slice_examples(start, end))
    }
    fn to_device(&self, device: &Device) -> Self {
        self.as_ref().map(|b| b.to_device(device))
    }
}

impl<A: ExampleBatch, B: ExampleBatch> ExampleBatch for (A, B) {
    fn num_examples(&self) -> usize {
        self.0.num_examples()
    }
    fn slice_examples(&self, start: usize, end: usize) -> Self {
        (
            self.0.slice_examples(start, end),
            self.1.slice_examples(start, end),
        )
    }
    fn to_device(&self, device: &Device) -> Self {
        (self.0.to_device(device), self.1.to_device(device))
    }
}

impl<A: ExampleBatch, B: ExampleBatch, C: ExampleBatch> ExampleBatch for (A, B, C) {
    fn num_examples(&self) -> usize {
        self.0.num_examples()
    }
    fn slice_examples(&self, start: usize, end: usize) -> Self {
        (
            self.0.slice_examples(start, end),
            self.1.slice_examples(start, end),
            self.2.slice_examples(start, end),
        )
    }
    fn to_device(&self, device: &Device) -> Self {
        (
            self.0.to_device(device),
            self.1.to_device(device),
            self.2.to_device(device),
        )
    }
}

/// A batch in which every example is `k` consecutive rows of `rows`: `k`
/// augmented views of one record ("augmentation multiplicity", De et al.
/// 2022, "Unlocking high-accuracy differentially private image
/// classification through scale"). The record's gradient is the mean of its
/// views' gradients, and that mean is clipped as one per-example gradient,
/// so the sensitivity stays C however many views there are.
///
/// The loss function sees the whole batch (`rows` holds `n·k` rows) and
/// must return one loss per example, the mean over its views, e.g.
/// `losses.reshape([n, k]).mean_dim(1).reshape([n])` for per-row losses in
/// example-major order.
#[derive(Debug, Clone)]
pub struct Augmented<B> {
    /// `n·k` rows, the `k` views of each example consecutive.
    pub rows: B,
    /// Views per example (at least 1).
    pub k: usize,
}

impl<B: ExampleBatch> ExampleBatch for Augmented<B> {
    fn num_examples(&self) -> usize {
        self.rows.num_examples() / self.k.max(1)
    }

    fn slice_examples(&self, start: usize, end: usize) -> Self {
        let k = self.k.max(1);
        Self {
            rows: self.rows.slice_examples(start * k, end * k),
            k,
        }
    }

    fn to_device(&self, device: &Device) -> Self {
        Self {
            rows: self.rows.to_device(device),
            k: self.k,
        }
    }
}
