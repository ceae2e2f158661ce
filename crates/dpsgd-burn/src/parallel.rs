//! Data-parallel DP-SGD over several devices of one process.
//!
//! # What is computed where
//!
//! * **Sampling**: the Poisson batch is sampled ONCE, globally, by the
//!   privacy engine (one sampler, one seed), exactly as on one device: each
//!   record is in the batch with probability q, independently, so the
//!   accountant's analysis of the subsampled Gaussian mechanism is the
//!   single-device one.
//! * **Clipping**: the batch is cut into `S` fixed, contiguous *shards*
//!   (sizes differing by at most one; `S` does not depend on the number of
//!   workers). Worker `w` takes the shards `s ≡ w (mod W)`: it runs the
//!   engine's per-example clipping on its copy of the model on its device
//!   and returns one clipped sum per shard.
//! * **Reduction**: the shard sums are moved to the first device and added
//!   in shard order (a reduce to the coordinator). Because the shards and
//!   the order of the additions are fixed, 1, 2 or 4 workers produce the
//!   same clipped sum bit for bit, and so the same parameters.
//! * **Noise**: the privacy engine then adds `N(0, σ²C²)` ONCE, from its
//!   CSPRNG, to the reduced sum, takes the optimizer step and records ONE
//!   accounting step. Workers never draw noise: there are neither `W`
//!   independent full-variance draws nor `σ/√W` per worker.
//! * **Model**: every step the workers start from a copy of the updated
//!   model (a broadcast from the coordinator).
//!
//! A worker that fails (an error, or a panic in the loss function) fails
//! the step on every worker: the coordinator joins every worker thread
//! before it looks at the results, so nobody waits on a dead peer, and the
//! step returns the error with the model unchanged.
//!
//! burn 0.22's own collective all-reduce (`burn::tensor::distributed`) is
//! implemented only for its CUDA and remote backends, not for the CPU
//! backends this library tests on; the reduction here is therefore the
//! coordinator's, over tensors moved between devices with burn's
//! `to_device`. Multi-process training is not supported yet.

use crate::batch::ExampleBatch;
use crate::engine::GradientEngine;
use burn::module::Module;
use burn::tensor::DeviceType;
use burn::tensor::{Device, Tensor};
use dpsgd_core::{ClippedGradients, Error, Result};

/// Devices a DP step's per-example work is spread over (see the module
/// documentation).
#[derive(Debug, Clone)]
pub struct DataParallel {
    devices: Vec<Device>,
    shards: usize,
}

impl DataParallel {
    /// Workers on `devices` (autodiff devices; the first is the
    /// coordinator, where the model lives between steps), each batch cut
    /// into `shards` fixed shards.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for no device, or fewer shards than
    /// devices.
    pub fn new(devices: Vec<Device>, shards: usize) -> Result<Self> {
        if devices.is_empty() {
            return Err(Error::invalid("devices", 0, "need at least one device"));
        }
        if shards < devices.len() {
            return Err(Error::invalid(
                "shards",
                shards,
                format!("need at least one shard per device ({})", devices.len()),
            ));
        }
        Ok(Self { devices, shards })
    }

    /// `workers` workers for a model on `coordinator`, over the devices of
    /// its kind on this machine ([`worker_devices`]), each batch cut into
    /// `max(workers, 8)` fixed shards (so 1 to 8 workers give the same
    /// result bit for bit).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for no worker.
    pub fn for_device(coordinator: &Device, workers: usize) -> Result<Self> {
        if workers == 0 {
            return Err(Error::invalid("devices", 0, "need at least one worker"));
        }
        Self::new(worker_devices(coordinator, workers), workers.max(8))
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.devices.len()
    }

    /// The number of shards each batch is cut into.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The devices, the coordinator first.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// `start..end` of each shard of `n` examples.
    fn bounds(&self, n: usize) -> Vec<(usize, usize)> {
        (0..self.shards)
            .map(|s| (s * n / self.shards, (s + 1) * n / self.shards))
            .collect()
    }

    /// The clipped sum of `batch` under `loss_fn`, computed by the workers
    /// (with `engine`'s clipping policy and convolution strategy) and
    /// reduced onto the first device in shard order.
    ///
    /// # Errors
    ///
    /// The first worker's error, in worker order (a panicking worker is
    /// reported as [`Error::InvalidParameter`] on `worker`); nothing is
    /// reduced then.
    pub fn clipped_gradients<M, B, F>(
        &self,
        engine: &GradientEngine,
        model: &M,
        batch: &B,
        loss_fn: &F,
    ) -> Result<ClippedGradients>
    where
        M: Module,
        B: ExampleBatch + Send,
        F: Fn(&M, &B) -> Tensor<1> + Sync,
    {
        let bounds = self.bounds(batch.num_examples());
        let coordinator = &self.devices[0];
        let results: Vec<Result<Vec<(usize, ClippedGradients)>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .devices
                .iter()
                .enumerate()
                .map(|(w, device)| {
                    let replica = model.clone().fork(device);
                    let shards: Vec<(usize, B)> = (w..self.shards)
                        .step_by(self.devices.len())
                        .filter(|&s| bounds[s].1 > bounds[s].0)
                        .map(|s| {
                            let (a, b) = bounds[s];
                            (s, batch.slice_examples(a, b).to_device(device))
                        })
                        .collect();
                    let mut engine = engine.clone();
                    scope.spawn(move || -> Result<Vec<(usize, ClippedGradients)>> {
                        shards
                            .into_iter()
                            .map(|(s, shard)| {
                                let part = engine.clipped_gradients(&replica, &shard, loss_fn)?;
                                Ok((s, part.to_device(coordinator)))
                            })
                            .collect()
                    })
                })
                .collect();
            // Every worker is joined before any result is looked at.
            handles
                .into_iter()
                .enumerate()
                .map(|(w, h)| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::invalid(
                            "worker",
                            w,
                            "a data-parallel worker panicked; the step was not taken",
                        ))
                    })
                })
                .collect()
        });
        let mut parts = Vec::with_capacity(self.shards);
        for r in results {
            parts.extend(r?);
        }
        parts.sort_by_key(|(s, _)| *s);
        let mut total = ClippedGradients::empty(engine.clipping().clone());
        for (_, part) in parts {
            total.accumulate(part)?;
        }
        Ok(total)
    }
}

/// The devices of `workers` data-parallel workers whose coordinator is
/// `coordinator`: the devices of the same kind that burn finds on this
/// machine ([`Device::enumerate`]), the coordinator first, assigned round
/// robin. On CUDA with two GPUs and two workers, each worker gets its own
/// GPU; a CPU backend has one device, which every worker shares (threads);
/// a device that burn does not list among its kind (wgpu's default
/// device, chosen by wgpu's heuristics) is shared by every worker.
// One push per enabled feature below: a `vec![]` cannot hold `#[cfg]`s.
#[allow(clippy::vec_init_then_push)]
pub fn worker_devices(coordinator: &Device, workers: usize) -> Vec<Device> {
    let same_kind = |kind: DeviceType| -> Option<Vec<Device>> {
        let mut found: Vec<Device> = Device::enumerate(kind)
            .into_iter()
            .map(|d| {
                if coordinator.is_autodiff() {
                    d.autodiff()
                } else {
                    d
                }
            })
            .collect();
        let at = found.iter().position(|d| d == coordinator)?;
        found.rotate_left(at);
        Some(found)
    };
    // The kinds this build has, cheapest to list first (listing a GPU
    // runtime opens its devices).
    let mut kinds = Vec::new();
    #[cfg(feature = "flex")]
    kinds.push(DeviceType::Flex);
    #[cfg(feature = "ndarray")]
    kinds.push(DeviceType::NdArray);
    #[cfg(feature = "cuda")]
    kinds.push(DeviceType::Cuda);
    #[cfg(feature = "wgpu")]
    kinds.push(DeviceType::Wgpu);
    let found = kinds
        .into_iter()
        .find_map(same_kind)
        .unwrap_or_else(|| vec![coordinator.clone()]);
    (0..workers)
        .map(|w| found[w % found.len()].clone())
        .collect()
}
