//! The training "loader" handed to `SupervisedTraining::new`.
//!
//! DP-SGD's batches are Poisson samples drawn from the privacy engine's
//! secret generator, one per step, each possibly empty — something burn's
//! `DataLoader` (a batch type with no empty value) cannot express, and
//! which burn-train's own strategies would train on with raw, unclipped
//! gradients. So the DP strategy samples and batches itself, from the data
//! set and batcher given to `DpTraining`; this loader fills
//! `SupervisedTraining`'s slot, tells burn-train how many examples there
//! are, and turns a run that forgot `.with_training_strategy(dp.strategy(…))`
//! into a clear error at its first batch instead of a non-private model.

use crate::error::Error;
use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::data::dataset::DatasetError;
use burn::tensor::Device;
use std::marker::PhantomData;
use std::sync::Arc;

/// The data loader of a DP run (see the module documentation): iterating
/// it outside the DP strategy fails with [`Error::NotDrivenByDp`].
pub struct PoissonLoader<B> {
    num_items: usize,
    _batch: PhantomData<fn() -> B>,
}

impl<B> PoissonLoader<B> {
    pub(crate) fn new(num_items: usize) -> Self {
        Self {
            num_items,
            _batch: PhantomData,
        }
    }
}

impl<B: Send + 'static> DataLoader<B> for PoissonLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<B> + 'a> {
        Box::new(Refusal {
            done: false,
            _batch: PhantomData,
        })
    }

    fn num_items(&self) -> usize {
        self.num_items
    }

    fn to_device(&self, _device: &Device) -> Arc<dyn DataLoader<B>> {
        Arc::new(Self::new(self.num_items))
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B>> {
        Arc::new(Self::new(end.min(self.num_items).saturating_sub(start)))
    }
}

/// Yields the refusal once.
struct Refusal<B> {
    done: bool,
    _batch: PhantomData<fn() -> B>,
}

impl<B> Iterator for Refusal<B> {
    type Item = Result<B, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.done = true;
        Some(Err(DatasetError::new(Error::NotDrivenByDp)))
    }
}

impl<B> DataLoaderIterator<B> for Refusal<B> {
    fn progress(&self) -> Progress {
        Progress::new(0, 0, Some("steps".into()))
    }
}
