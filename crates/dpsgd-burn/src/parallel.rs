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
//! A worker that fails (an error, a panic in the loss function, a dropped
//! connection) fails the step on every worker: the coordinator waits for
//! every worker's answer before it looks at any (or, with a step timeout,
//! gives up on one silent for that long: [`DataParallel::with_step_timeout`]),
//! and the step returns the error with the model unchanged, nothing noised
//! and nothing accounted. Or, under [`OnWorkerLoss::Continue`], a lost
//! worker (panicked, disconnected, timed out) leaves the run and the same
//! step is redone on the others.
//!
//! # Two reductions
//!
//! * **The coordinator's** (default, any backend): the shard sums are
//!   moved to the first device with burn's `to_device` and added there in
//!   shard order — bit-identical for any number of workers.
//! * **A collective all-reduce** ([`DataParallel::with_all_reduce`],
//!   [`DataParallel::with_burn_all_reduce`]): each worker adds its own
//!   shards, then every worker all-reduces its sum, flattened in one layout
//!   (the union of the workers' parameters, by id; zeros where a worker
//!   saw no example). burn 0.22 implements its collective
//!   (`burn::tensor::distributed::all_reduce`) for CUDA only (NCCL);
//!   [`DataParallel::with_burn_all_reduce`] refuses other devices. The
//!   collective is entered only after a barrier at which every worker has
//!   its part: a failing worker keeps all of them out, so none blocks in
//!   it. Noise and accounting are unchanged: the coordinator's copy of the
//!   reduced sum is noised once.
//!
//! Workers in other processes or hosts (`dpsgd_burn::remote`, feature
//! `distributed`) run this same protocol on burn's remote devices, with
//! the coordinator in this process ([`DataParallel::with_coordinator`]);
//! burn 0.22 has no collective across processes for these backends.

use crate::batch::ExampleBatch;
use crate::engine::GradientEngine;
use burn::module::{Module, ParamId};
use burn::tensor::DeviceType;
use burn::tensor::TensorData;
use burn::tensor::{Device, Tensor};
use dpsgd_core::{ClippedGradients, Error, Result};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

mod roster;

use roster::Roster;
pub use roster::{LostWorker, OnWorkerLoss};

/// Devices a DP step's per-example work is spread over (see the module
/// documentation).
#[derive(Debug, Clone)]
pub struct DataParallel {
    devices: Vec<Device>,
    /// Where the model lives between steps and the shard sums are reduced
    /// (`None`: the first worker's device).
    coordinator: Option<Device>,
    shards: usize,
    /// The collective that sums the workers' parts; `None`: the
    /// coordinator's reduce.
    all_reduce: Option<Arc<dyn AllReduce>>,
    /// Held through a collective step (two interleaved steps would mix
    /// their sums).
    collective_lock: Arc<Mutex<()>>,
    /// The workers' names in messages (empty: `#index`).
    names: Vec<String>,
    /// How long a step waits for its workers (`None`: as long as it takes).
    step_timeout: Option<Duration>,
    /// What a lost worker does to the run.
    on_loss: OnWorkerLoss,
    /// The workers still in the run (shared by clones).
    roster: Arc<Mutex<Roster>>,
}

/// A collective sum across the data-parallel workers: worker `w` calls
/// [`AllReduce::sum`] with its flat tensor on its device, every worker
/// with a tensor of the same length, and every call returns the
/// element-wise sum over the workers, on the caller's device.
///
/// Like every collective it blocks until all workers have called it:
/// [`DataParallel`] only enters it once every worker has computed its part
/// without error.
pub trait AllReduce: Send + Sync + std::fmt::Debug {
    /// The sum of every worker's `tensor`.
    ///
    /// # Errors
    ///
    /// When the reduction cannot run.
    fn sum(&self, worker: usize, tensor: Tensor<1>) -> Result<Tensor<1>>;
}

/// burn's collective all-reduce (`burn::tensor::distributed::all_reduce`,
/// [`ReduceOperation::Sum`](burn::tensor::distributed::ReduceOperation)).
/// In burn 0.22 only the CUDA backend implements it (NCCL between GPUs);
/// [`DataParallel::with_burn_all_reduce`] refuses other devices.
#[derive(Debug, Clone)]
pub struct BurnAllReduce {
    devices: Vec<Device>,
}

impl AllReduce for BurnAllReduce {
    fn sum(&self, _worker: usize, tensor: Tensor<1>) -> Result<Tensor<1>> {
        Ok(burn::tensor::distributed::all_reduce(
            tensor,
            burn::tensor::distributed::ReduceOperation::Sum,
            self.devices.clone(),
        )
        .resolve())
    }
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
        let roster = Arc::new(Mutex::new(Roster::new(devices.len())));
        Ok(Self {
            devices,
            coordinator: None,
            shards,
            all_reduce: None,
            collective_lock: Arc::default(),
            names: Vec::new(),
            step_timeout: None,
            on_loss: OnWorkerLoss::Stop,
            roster,
        })
    }

    /// Names for the workers in errors and [`LostWorker`] (such as their
    /// addresses), one per device.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] unless there is one name per device.
    pub fn with_worker_names(mut self, names: Vec<String>) -> Result<Self> {
        if names.len() != self.devices.len() {
            return Err(Error::invalid(
                "worker names",
                names.len(),
                format!("need one per device ({})", self.devices.len()),
            ));
        }
        self.names = names;
        Ok(self)
    }

    /// A step waits at most `timeout` for each sign of life of each
    /// worker (its start, then each shard it answers): one silent for
    /// that long is lost (see [`OnWorkerLoss`]), so a hung worker (a
    /// stopped process, a silently dropped network) fails the step instead
    /// of hanging the run. A liveness limit, not a limit on the step's
    /// work: set it well above one shard's time (a step whose lost worker
    /// is replaced may take longer than `timeout` in all). Without it a
    /// step waits as long as its workers take.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for a zero timeout, or with a
    /// collective all-reduce (whose workers wait for each other inside
    /// the collective, where no deadline can reach them; a collective set
    /// afterwards fails the step instead).
    pub fn with_step_timeout(mut self, timeout: Duration) -> Result<Self> {
        if timeout.is_zero() {
            return Err(Error::invalid("step timeout", "0", "must be positive"));
        }
        self.refuse_with_collective("a step timeout")?;
        self.step_timeout = Some(timeout);
        Ok(self)
    }

    /// What a lost worker does to the run (default [`OnWorkerLoss::Stop`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for [`OnWorkerLoss::Continue`] with a
    /// collective all-reduce (its group is fixed).
    pub fn with_on_worker_loss(mut self, policy: OnWorkerLoss) -> Result<Self> {
        if policy == OnWorkerLoss::Continue {
            self.refuse_with_collective("continuing without a lost worker")?;
        }
        self.on_loss = policy;
        Ok(self)
    }

    fn refuse_timeout_or_continue(&self) -> Result<()> {
        if self.step_timeout.is_some() {
            self.refuse_with_collective("a step timeout")?;
        }
        if self.on_loss == OnWorkerLoss::Continue {
            self.refuse_with_collective("continuing without a lost worker")?;
        }
        Ok(())
    }

    fn refuse_with_collective(&self, what: &str) -> Result<()> {
        if self.all_reduce.is_some() {
            return Err(Error::invalid(
                "reduction",
                "all-reduce",
                format!("{what} needs the coordinator's reduce, not a collective"),
            ));
        }
        Ok(())
    }

    /// The workers still in the run (all of them unless
    /// [`OnWorkerLoss::Continue`] dropped some).
    pub fn live_workers(&self) -> usize {
        self.live().len()
    }

    /// The workers lost since the last call (under
    /// [`OnWorkerLoss::Continue`]), for the caller to report.
    pub fn take_lost_workers(&self) -> Vec<LostWorker> {
        std::mem::take(
            &mut self
                .roster
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .unreported,
        )
    }

    /// The workers' parts summed by `all_reduce` instead of on the
    /// coordinator: each worker adds its own shards (in shard order), the
    /// workers' sums are all-reduced, and the coordinator's copy of the
    /// result is the step's clipped sum. The sum is the same up to the
    /// order of the float additions (no longer bit-identical across worker
    /// counts), and the per-example norms come in worker order.
    #[must_use]
    pub fn with_all_reduce(mut self, all_reduce: Arc<dyn AllReduce>) -> Self {
        self.all_reduce = Some(all_reduce);
        self
    }

    /// The model lives on `coordinator` between steps and the shard sums
    /// are reduced there, in shard order, while every shard is clipped on
    /// the workers' devices (default: the first worker's device is the
    /// coordinator). For workers in other processes or hosts
    /// (`dpsgd_burn::remote`, feature `distributed`), the coordinator is the
    /// local device: the noise is added there and never travels.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] with a collective all-reduce, which
    /// reduces on the workers.
    pub fn with_coordinator(mut self, coordinator: Device) -> Result<Self> {
        if self.all_reduce.is_some() {
            return Err(Error::invalid(
                "reduction",
                "all-reduce",
                "a collective reduces on the workers: a separate coordinator takes the coordinator's reduce",
            ));
        }
        self.coordinator = Some(coordinator);
        Ok(self)
    }

    /// The device the model lives on between steps, where the shard sums
    /// are reduced.
    pub fn coordinator(&self) -> &Device {
        self.coordinator.as_ref().unwrap_or(&self.devices[0])
    }

    /// [`DataParallel::with_all_reduce`] with burn's collective all-reduce.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] unless the workers are on distinct CUDA
    /// devices: burn 0.22 implements its all-reduce for CUDA only (flex,
    /// ndarray and wgpu would panic inside burn).
    pub fn with_burn_all_reduce(self) -> Result<Self> {
        let distinct = self
            .devices
            .iter()
            .enumerate()
            .all(|(i, d)| !self.devices[..i].contains(d));
        if !distinct || !all_cuda(&self.devices) {
            return Err(Error::invalid(
                "reduction",
                "all-reduce",
                "burn 0.22 implements its collective all-reduce only between distinct CUDA devices (build with --features cuda); use the coordinator's reduce",
            ));
        }
        let devices = self.devices.clone();
        Ok(self.with_all_reduce(Arc::new(BurnAllReduce { devices })))
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

    /// The workers' devices (the first is also the coordinator unless
    /// [`DataParallel::with_coordinator`] set one).
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The non-empty shards `s ≡ i (mod k)` of `batch` (contiguous, sizes
    /// differing by at most one), by shard index, where they are.
    fn shard_slices<B: ExampleBatch>(&self, i: usize, k: usize, batch: &B) -> Vec<(usize, B)> {
        let n = batch.num_examples();
        (i..self.shards)
            .step_by(k)
            .map(|s| (s, s * n / self.shards, (s + 1) * n / self.shards))
            .filter(|&(_, start, end)| end > start)
            .map(|(s, start, end)| (s, batch.slice_examples(start, end)))
            .collect()
    }

    /// Worker `w`'s non-empty shards of `batch` (`s ≡ w mod W`, contiguous,
    /// sizes differing by at most one), by shard index, on `device`.
    fn shards_of<B: ExampleBatch>(&self, w: usize, batch: &B, device: &Device) -> Vec<(usize, B)> {
        self.shard_slices(w, self.devices.len(), batch)
            .into_iter()
            .map(|(s, shard)| (s, shard.to_device(device)))
            .collect()
    }

    /// The clipped sum of `batch` under `loss_fn`, computed by the workers
    /// (with `engine`'s clipping policy and convolution strategy) and
    /// reduced onto the coordinator in shard order.
    ///
    /// On the coordinator's reduce each worker runs on a thread of its own
    /// (it copies the model and its shards to its device itself, so a
    /// worker that hangs in its upload holds up nobody) and the step waits
    /// for all of them, each for at most the step timeout without a sign
    /// of life
    /// ([`DataParallel::with_step_timeout`]). A lost worker (panicked,
    /// disconnected, timed out) fails the step or leaves the run
    /// ([`OnWorkerLoss`]).
    ///
    /// # Errors
    ///
    /// The first worker's error, in worker order; [`Error::Worker`] for a
    /// lost worker under [`OnWorkerLoss::Stop`], or once every worker is
    /// lost. Nothing is reduced then.
    pub fn clipped_gradients<M, B, F>(
        &self,
        engine: &GradientEngine,
        model: &M,
        batch: &B,
        loss_fn: &Arc<F>,
    ) -> Result<ClippedGradients>
    where
        M: Module + 'static,
        B: ExampleBatch + Send + 'static,
        F: Fn(&M, &B) -> Tensor<1> + Send + Sync + 'static,
    {
        if let Some(all_reduce) = &self.all_reduce {
            if self.coordinator.is_some() {
                // The collective leaves the sum on the workers' devices,
                // not on a coordinator of its own.
                return Err(Error::invalid(
                    "reduction",
                    "all-reduce",
                    "a collective reduces on the workers: a separate coordinator takes the coordinator's reduce",
                ));
            }
            // A collective's group is fixed and waits inside burn: no
            // deadline reaches it and no worker can be dropped.
            self.refuse_timeout_or_continue()?;
            return self.all_reduced(all_reduce.as_ref(), engine, model, batch, &**loss_fn);
        }
        self.reduced_on_coordinator(engine, model, batch, loss_fn)
    }

    /// [`DataParallel::clipped_gradients`] with a collective.
    ///
    /// 1. Every worker's model copy and shards are prepared before any
    ///    thread starts; a failure there fails the step with no thread
    ///    started.
    /// 2. Each worker clips its shards and publishes its sum's layout, then
    ///    waits at a gate.
    /// 3. Each worker flattens its sum in the union layout, with its
    ///    example count appended, and waits at a second gate.
    /// 4. Only if every worker got that far does any enter the collective;
    ///    the reduced count must equal the batch size (a mean, a worker
    ///    counted twice or a wrong group is refused).
    ///
    /// Every step before the collective is caught (errors and panics) and
    /// reported at the gates, and a thread that cannot start aborts them,
    /// so nobody blocks waiting for a dead peer. A failure inside the
    /// collective itself cannot be seen by the others (as for any
    /// collective). Steps through one `DataParallel` are serialised: two
    /// interleaved collectives would mix their sums.
    fn all_reduced<M, B, F>(
        &self,
        all_reduce: &dyn AllReduce,
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
        let _one_step_at_a_time = self
            .collective_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = batch.num_examples();
        let workers = self.devices.len();
        let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.devices
                .iter()
                .enumerate()
                .map(|(w, device)| {
                    let shards: Vec<B> = self
                        .shards_of(w, batch, device)
                        .into_iter()
                        .map(|(_, shard)| shard)
                        .collect();
                    (model.clone().fork(device), shards)
                })
                .collect::<Vec<_>>()
        }))
        .map_err(|_| panicked(0))?;
        let layouts: Mutex<Vec<Vec<(ParamId, usize)>>> = Mutex::new(vec![Vec::new(); workers]);
        let (clipped, flattened) = (Gate::new(workers), Gate::new(workers));
        let results: Vec<Result<ClippedGradients>> = std::thread::scope(|scope| {
            let mut handles = Vec::with_capacity(workers);
            for (w, (replica, shards)) in prepared.into_iter().enumerate() {
                let device = &self.devices[w];
                let mut engine = engine.clone();
                let (layouts, clipped, flattened) = (&layouts, &clipped, &flattened);
                let work = move || -> Result<ClippedGradients> {
                    let caught = |f: &mut dyn FnMut() -> Result<()>| {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                            .unwrap_or_else(|_| Err(panicked(w)))
                    };
                    // Phase 1: this worker's clipped sum and its layout.
                    let mut sum = ClippedGradients::empty(engine.clipping().clone());
                    let phase1 = caught(&mut || {
                        for shard in &shards {
                            sum.accumulate(engine.clipped_gradients(&replica, shard, loss_fn)?)?;
                        }
                        let layout = sum.layout();
                        layouts.lock().map_err(|_| panicked(w))?[w] = layout;
                        Ok(())
                    });
                    if !clipped.pass(phase1.is_ok()) {
                        return phase1.map(|()| sum.without_sums());
                    }
                    // Phase 2: the flat tensor with this worker's example
                    // count as its last element, built before anyone
                    // enters the collective.
                    let mut ready = None;
                    let phase2 = caught(&mut || {
                        let layout = union_layout(layouts)?;
                        let part = std::mem::replace(
                            &mut sum,
                            ClippedGradients::empty(engine.clipping().clone()),
                        );
                        let count = part.batch_size() as f32;
                        let (part, flat) = part.flatten(&layout, device)?;
                        let count = Tensor::from_data(TensorData::new(vec![count], [1]), device);
                        let counted = match flat {
                            Some(flat) => Tensor::cat(vec![flat, count], 0),
                            None => count,
                        };
                        ready = Some((part, counted, layout));
                        Ok(())
                    });
                    if !flattened.pass(phase2.is_ok()) {
                        return phase2.map(|()| ClippedGradients::empty(engine.clipping().clone()));
                    }
                    let Some((part, counted, layout)) = ready else {
                        return Err(panicked(w));
                    };
                    // Phase 3: the collective; the counts must add up to
                    // the batch.
                    let reduced = all_reduce.sum(w, counted)?;
                    let len = reduced.dims()[0];
                    let counted: Vec<f32> = reduced
                        .clone()
                        .narrow(0, len.saturating_sub(1), 1)
                        .try_into_data()
                        .map_err(|e| {
                            Error::invalid(
                                "all_reduce",
                                w,
                                format!("the reduced sum cannot be read: {e:?}"),
                            )
                        })?
                        .iter::<f32>()
                        .collect();
                    if counted.first().copied() != Some(n as f32) {
                        return Err(Error::invalid(
                            "all_reduce",
                            format!("{counted:?}"),
                            format!(
                                "the collective counted {counted:?} examples for a batch of {n}: it must add each worker's part exactly once"
                            ),
                        ));
                    }
                    if len == 1 {
                        return Ok(part);
                    }
                    part.unflatten(&layout, reduced.narrow(0, 0, len - 1))
                };
                match std::thread::Builder::new().spawn_scoped(scope, work) {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        // The started workers must not wait for this one.
                        clipped.abort();
                        flattened.abort();
                        handles.clear();
                        return vec![Err(Error::invalid(
                            "worker",
                            w,
                            format!("cannot start a data-parallel worker: {e}"),
                        ))];
                    }
                }
            }
            handles
                .into_iter()
                .enumerate()
                .map(|(w, h)| h.join().unwrap_or_else(|_| Err(panicked(w))))
                .collect()
        });
        let mut parts = Vec::with_capacity(workers);
        for r in results {
            parts.push(r?);
        }
        if !clipped.all_passed() || !flattened.all_passed() {
            // Every failure is also some worker's error, returned above;
            // this only guards against releasing a partial sum.
            return Err(Error::invalid(
                "worker",
                "?",
                "a data-parallel worker failed; the step was not taken",
            ));
        }
        let mut parts = parts.into_iter();
        let mut total = match parts.next() {
            Some(first) => first.to_device(&self.devices[0]),
            None => return Ok(ClippedGradients::empty(engine.clipping().clone())),
        };
        for part in parts {
            total.accumulate(part.without_sums())?;
        }
        Ok(total)
    }
}

/// A meeting point for the workers before the collective: each reports
/// whether it is ready; all learn whether everyone is. `abort` releases
/// the waiting workers when a peer will never arrive.
#[derive(Debug)]
struct Gate {
    workers: usize,
    state: Mutex<GateState>,
    arrived: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    arrived: usize,
    failed: bool,
}

impl Gate {
    fn new(workers: usize) -> Self {
        Self {
            workers,
            state: Mutex::new(GateState::default()),
            arrived: Condvar::new(),
        }
    }

    /// Arrives with `ok`; waits for every worker (or an abort); whether
    /// every worker arrived ok.
    fn pass(&self, ok: bool) -> bool {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.arrived += 1;
        state.failed |= !ok;
        self.arrived.notify_all();
        while state.arrived < self.workers && !state.failed {
            state = self
                .arrived
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        !state.failed
    }

    /// Releases every waiting worker: the step fails.
    fn abort(&self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.failed = true;
        self.arrived.notify_all();
    }

    /// Whether every worker arrived, none failed and nothing aborted.
    fn all_passed(&self) -> bool {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.arrived == self.workers && !state.failed
    }
}

fn panicked(worker: usize) -> Error {
    Error::Worker {
        worker: format!("#{worker}"),
        reason: "failed or panicked (a panic in the loss function, or a remote worker's dropped connection); the step was not taken".into(),
        source: None,
    }
}

/// The union of the workers' layouts, ordered by parameter id.
///
/// # Errors
///
/// [`Error::Shape`] when two workers disagree on a parameter's size.
fn union_layout(layouts: &Mutex<Vec<Vec<(ParamId, usize)>>>) -> Result<Vec<(ParamId, usize)>> {
    let all = layouts
        .lock()
        .map_err(|_| Error::invalid("worker", "?", "a data-parallel worker panicked"))?;
    let mut union: std::collections::BTreeMap<u64, (ParamId, usize)> = Default::default();
    for &(id, numel) in all.iter().flatten() {
        match union.get(&id.val()) {
            Some(&(_, n)) if n != numel => {
                return Err(Error::Shape(format!(
                    "workers disagree on parameter {id}: {n} vs {numel} elements"
                )));
            }
            Some(_) => {}
            None => {
                union.insert(id.val(), (id, numel));
            }
        }
    }
    Ok(union.into_values().collect())
}

/// Whether every device is a CUDA device burn lists on this machine.
fn all_cuda(devices: &[Device]) -> bool {
    #[cfg(feature = "cuda")]
    {
        let cuda = Device::enumerate(DeviceType::Cuda).into_vec();
        devices
            .iter()
            .all(|d| cuda.iter().any(|c| c == d || c.clone().autodiff() == *d))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = devices;
        false
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
    let kinds: Vec<DeviceType> = vec![
        #[cfg(feature = "flex")]
        DeviceType::Flex,
        #[cfg(feature = "ndarray")]
        DeviceType::NdArray,
        #[cfg(feature = "cuda")]
        DeviceType::Cuda,
        #[cfg(feature = "wgpu")]
        DeviceType::Wgpu,
    ];
    let found = kinds
        .into_iter()
        .find_map(same_kind)
        .unwrap_or_else(|| vec![coordinator.clone()]);
    (0..workers)
        .map(|w| found[w % found.len()].clone())
        .collect()
}
