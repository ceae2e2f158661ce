//! Batches that can be split into examples: the generic fallback engine runs
//! micro-batches of one, and virtual batches run physical chunks.

use burn::tensor::{Int, Tensor};

/// A batch of examples along dimension 0.
pub trait ExampleBatch: Sized {
    /// Number of examples.
    fn num_examples(&self) -> usize;
    /// Examples `start..end`.
    fn slice_examples(&self, start: usize, end: usize) -> Self;
}

impl<const D: usize> ExampleBatch for Tensor<D> {
    fn num_examples(&self) -> usize {
        self.dims()[0]
    }
    fn slice_examples(&self, start: usize, end: usize) -> Self {
        self.clone().narrow(0, start, end - start)
    }
}

impl<const D: usize> ExampleBatch for Tensor<D, Int> {
    fn num_examples(&self) -> usize {
        self.dims()[0]
    }
    fn slice_examples(&self, start: usize, end: usize) -> Self {
        self.clone().narrow(0, start, end - start)
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
}
