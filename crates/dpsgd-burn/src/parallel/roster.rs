//! Which data-parallel workers are still in the run, what happens when one
//! fails a step, and the step itself on the coordinator's reduce: each
//! worker on a thread of its own, waited for up to a deadline.

use super::DataParallel;
use crate::batch::ExampleBatch;
use crate::engine::GradientEngine;
use burn::module::Module;
use burn::tensor::Tensor;
use dpsgd_core::{ClippedGradients, Error, Result};
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// What a data-parallel step does when a worker is lost: it panicked
/// (in burn's remote client: a dropped connection, a worker process that
/// died) or did not answer within the step timeout
/// ([`DataParallel::with_step_timeout`]).
///
/// Either way the failed attempt releases nothing: no noise is drawn, no
/// step is accounted, the model is untouched. An error of the step itself
/// (an invalid batch, a non-finite loss the engine refuses) is not a
/// lost worker: it fails the step under either policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnWorkerLoss {
    /// The step fails with [`Error::Worker`] (the default).
    #[default]
    Stop,
    /// The lost workers leave the run and the same step (the same batch)
    /// is redone on the others, with the same shards re-planned over
    /// them: the reduced sum, the noise and the accounting do not depend
    /// on the number of workers. Fails once no worker is left. The losses
    /// are reported by [`DataParallel::take_lost_workers`].
    Continue,
}

/// A worker that left the run under [`OnWorkerLoss::Continue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostWorker {
    /// Its index among [`DataParallel::devices`].
    pub worker: usize,
    /// Its name ([`DataParallel::with_worker_names`], or `#index`).
    pub name: String,
    /// Why: a timeout or a failure, in words.
    pub reason: String,
}

/// The run's workers: who is still in, and the losses not yet taken by
/// the caller. Shared by the clones of one [`DataParallel`].
#[derive(Debug, Default)]
pub(super) struct Roster {
    lost: Vec<bool>,
    pub(super) unreported: Vec<LostWorker>,
}

impl Roster {
    pub(super) fn new(workers: usize) -> Self {
        Self {
            lost: vec![false; workers],
            unreported: Vec::new(),
        }
    }
}

/// How one attempt at a step went wrong.
enum Failure {
    /// An error of the step itself: it fails under any policy.
    Step(Error),
    /// Workers lost (index, reason), in worker order.
    Lost(Vec<(usize, String)>),
}

type Parts = Vec<(usize, ClippedGradients)>;

/// What a worker's thread tells the step.
enum Message {
    /// A shard is done: the worker is alive.
    Shard,
    /// All its shards, or why not.
    Done(std::thread::Result<Result<Parts>>),
}

impl DataParallel {
    /// The indices of the workers still in the run.
    pub(super) fn live(&self) -> Vec<usize> {
        let roster = self
            .roster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (0..self.devices.len())
            .filter(|&w| !roster.lost[w])
            .collect()
    }

    /// Worker `w`'s name in messages.
    pub(super) fn name(&self, w: usize) -> String {
        self.names
            .get(w)
            .cloned()
            .unwrap_or_else(|| format!("#{w}"))
    }

    /// The step on the coordinator's reduce, redone on the remaining
    /// workers under [`OnWorkerLoss::Continue`].
    pub(super) fn reduced_on_coordinator<M, B, F>(
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
        loop {
            let live = self.live();
            if live.is_empty() {
                let roster = self
                    .roster
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let lost: Vec<String> = roster
                    .unreported
                    .iter()
                    .map(|l| format!("{}: {}", l.name, l.reason))
                    .collect();
                return Err(Error::Worker {
                    worker: "every worker".into(),
                    reason: format!(
                        "no data-parallel worker is left ({}); the step was not taken",
                        if lost.is_empty() {
                            "all were lost".to_owned()
                        } else {
                            lost.join("; ")
                        }
                    ),
                    source: None,
                });
            }
            let lost = match self.attempt(&live, engine, model, batch, loss_fn) {
                Ok(parts) => return self.reduce(engine, parts),
                Err(Failure::Step(e)) => return Err(e),
                Err(Failure::Lost(lost)) => lost,
            };
            if self.on_loss == OnWorkerLoss::Stop {
                let (w, reason) = lost.into_iter().next().unwrap_or((0, String::new()));
                return Err(Error::Worker {
                    worker: self.name(w),
                    reason: format!("{reason}; the step was not taken"),
                    source: None,
                });
            }
            let mut roster = self
                .roster
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (w, reason) in lost {
                roster.lost[w] = true;
                let name = self.name(w);
                roster.unreported.push(LostWorker {
                    worker: w,
                    name,
                    reason,
                });
            }
        }
    }

    /// One attempt on the `live` workers: the `i`-th takes the shards
    /// `s ≡ i (mod live)`, each worker on a thread of its own that copies
    /// the model and its shards to its device, clips them and sends the
    /// sums back to the coordinator. Waits for every worker; with a step
    /// timeout, a worker silent for that long (no shard answered since it
    /// started or since its last shard) is lost. Its thread is left to
    /// finish or block on its own: it holds copies only, and its late
    /// answer goes nowhere (each attempt has its own channel).
    fn attempt<M, B, F>(
        &self,
        live: &[usize],
        engine: &GradientEngine,
        model: &M,
        batch: &B,
        loss_fn: &Arc<F>,
    ) -> std::result::Result<Parts, Failure>
    where
        M: Module + 'static,
        B: ExampleBatch + Send + 'static,
        F: Fn(&M, &B) -> Tensor<1> + Send + Sync + 'static,
    {
        let coordinator = self.coordinator().clone();
        let (tx, rx) = channel::<(usize, Message)>();
        let mut outcomes: Vec<Option<std::thread::Result<Result<Parts>>>> =
            (0..live.len()).map(|_| None).collect();
        for (i, &w) in live.iter().enumerate() {
            // Sliced here, on the coordinator (no worker involved yet).
            let shards = self.shard_slices(i, live.len(), batch);
            let device = self.devices[w].clone();
            let (model, mut engine) = (model.clone(), engine.clone());
            let (loss_fn, coordinator, tx) = (Arc::clone(loss_fn), coordinator.clone(), tx.clone());
            let work = move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    // A remote worker's upload can panic in burn's client
                    // (a dropped connection): caught like a worker's own.
                    let replica = model.fork(&device);
                    shards
                        .into_iter()
                        .map(|(s, shard)| {
                            let shard = shard.to_device(&device);
                            let part = engine.clipped_gradients(&replica, &shard, &*loss_fn)?;
                            let part = part.to_device(&coordinator);
                            // Alive: its deadline starts again.
                            let _ = tx.send((i, Message::Shard));
                            Ok((s, part))
                        })
                        .collect::<Result<Parts>>()
                }));
                let _ = tx.send((i, Message::Done(outcome)));
            };
            if let Err(e) = std::thread::Builder::new()
                .name(format!("dpsgd-worker-{w}"))
                .spawn(work)
            {
                // The started ones finish on their own; nothing is kept.
                return Err(Failure::Step(Error::invalid(
                    "worker",
                    w,
                    format!("cannot start a data-parallel worker thread: {e}"),
                )));
            }
        }
        drop(tx);
        // Each worker's deadline: the step timeout after its last sign of
        // life (its start, or a shard answered). A deadline too far to
        // represent is none.
        let started = Instant::now();
        let mut alive_at = vec![started; live.len()];
        let mut waiting = vec![true; live.len()];
        let mut timed_out = vec![false; live.len()];
        let deadline_of = |at: Instant| self.step_timeout.and_then(|t| at.checked_add(t));
        loop {
            // Whoever is past their deadline is lost now, even while the
            // others keep the channel busy; their later messages are
            // ignored.
            let now = Instant::now();
            for i in 0..live.len() {
                if waiting[i] && deadline_of(alive_at[i]).is_some_and(|d| d <= now) {
                    waiting[i] = false;
                    timed_out[i] = true;
                }
            }
            if !waiting.iter().any(|&w| w) {
                break;
            }
            let deadline = (0..live.len())
                .filter(|&i| waiting[i])
                .filter_map(|i| deadline_of(alive_at[i]))
                .min();
            let next = match deadline {
                Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match next {
                Ok((i, _)) if !waiting[i] => {}
                Ok((i, Message::Shard)) => alive_at[i] = Instant::now(),
                Ok((i, Message::Done(outcome))) => {
                    outcomes[i] = Some(outcome);
                    waiting[i] = false;
                }
                // The deadline passed: marked at the top of the loop.
                Err(RecvTimeoutError::Timeout) => {}
                // Every thread has sent its outcome (the catch above sees
                // every panic): nothing more will come.
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let mut parts = Vec::with_capacity(self.shards);
        let mut lost = Vec::new();
        let mut step_error = None;
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let w = live[i];
            match outcome {
                None if timed_out[i] => lost.push((
                    w,
                    format!(
                        "did not answer within the step timeout ({})",
                        seconds(self.step_timeout)
                    ),
                )),
                None | Some(Err(_)) => lost.push((
                    w,
                    "failed or panicked (a panic in the loss function, or a remote worker's dropped connection)".into(),
                )),
                Some(Ok(Err(e))) => {
                    step_error.get_or_insert(e);
                }
                Some(Ok(Ok(mine))) => parts.extend(mine),
            }
        }
        if let Some(e) = step_error {
            return Err(Failure::Step(e));
        }
        if !lost.is_empty() {
            return Err(Failure::Lost(lost));
        }
        Ok(parts)
    }

    /// The shard sums added in shard order on the coordinator: the same
    /// sum, bit for bit, whichever workers computed them.
    fn reduce(&self, engine: &GradientEngine, mut parts: Parts) -> Result<ClippedGradients> {
        parts.sort_by_key(|(s, _)| *s);
        let mut total = ClippedGradients::empty(engine.clipping().clone());
        for (_, part) in parts {
            total.accumulate(part)?;
        }
        Ok(total)
    }
}

fn seconds(timeout: Option<Duration>) -> String {
    timeout.map_or_else(|| "none".to_owned(), |t| format!("{} s", t.as_secs_f64()))
}
