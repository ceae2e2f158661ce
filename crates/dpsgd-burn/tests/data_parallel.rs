//! Data-parallel DP-SGD: 1, 2 and 4 workers give the same parameters bit
//! for bit (same global batch, same noise), the noise is added once, and a
//! failing worker fails the step without a hang.

mod common;

use burn::module::Module;
use burn::optim::SgdConfig;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{Net, devices, net_data as data, pick};
use dpsgd_burn::layers::{DpLinear, DpLinearConfig};
use dpsgd_burn::loss::cross_entropy_per_example;
use dpsgd_burn::parallel::DataParallel;
use dpsgd_burn::{DatasetFingerprint, DpSgdConfig, PoissonSampler, PrivacyEngine};
use dpsgd_core::parameter_values as values;

/// The seeded model, its (lazily initialised) parameters drawn at once
/// under a lock: tests run in parallel and share the device's RNG.
fn seeded_net(device: &Device) -> Net {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    device.seed(5);
    let model = Net {
        fc1: DpLinearConfig::new(6, 8).init(device),
        fc2: DpLinearConfig::new(8, 3).init(device),
    };
    let _ = values(&model);
    model
}

fn engine(n: usize, batch: usize) -> PrivacyEngine {
    engine_with(n, batch, None)
}

/// With `physical = Some(m)`, each sampled batch is processed in virtual
/// chunks of at most `m` examples.
fn engine_with(n: usize, batch: usize, physical: Option<usize>) -> PrivacyEngine {
    let config = DpSgdConfig::new(0.5)
        .with_noise_multiplier(1.0)
        .with_seed(11)
        .with_dataset(DatasetFingerprint { size: n, hash: 7 });
    let config = match physical {
        Some(m) => config.with_max_physical_batch_size(m),
        None => config,
    };
    config
        .init(
            SgdConfig::new().init(),
            PoissonSampler::new(n, batch).unwrap(),
        )
        .unwrap()
}

/// Five seeded DP steps with `workers` workers over 4 fixed shards.
fn train(workers: usize, device: &Device) -> (Vec<f32>, f64) {
    train_with(workers, None, device)
}

/// [`train`], each batch in virtual chunks of at most `physical` examples
/// when given.
fn train_with(workers: usize, physical: Option<usize>, device: &Device) -> (Vec<f32>, f64) {
    let mut model = seeded_net(device);
    let n = 64;
    let all = data(n, device);
    let parallel = DataParallel::new(vec![device.clone(); workers], 4).unwrap();
    let mut pe = engine_with(n, 16, physical);
    for _ in 0..5 {
        let b = pick(&all, &pe.sample_batch());
        model = pe
            .step_data_parallel(0.1, model, &b, |m: &Net, b| m.losses(b), &parallel)
            .map_err(|r| r.error)
            .unwrap();
    }
    (values(&model), pe.epsilon().unwrap())
}

#[test]
fn should_give_the_same_parameters_with_one_two_and_four_workers() {
    for (backend, device) in devices() {
        let (one, eps1) = train(1, &device);
        let (two, eps2) = train(2, &device);
        let (four, eps4) = train(4, &device);
        assert_eq!(one, two, "{backend}: 2 workers differ from 1");
        assert_eq!(one, four, "{backend}: 4 workers differ from 1");
        // One accounting step per global step.
        assert_eq!(eps1, eps2);
        assert_eq!(eps1, eps4);
    }
}

/// Virtual batches: each physical chunk is sharded over the workers, the
/// chunks' sums are added, and noise is still drawn once per (logical)
/// step. 1, 2 and 4 workers agree bit for bit, and the step count is the
/// logical one.
#[test]
fn should_give_the_same_parameters_with_virtual_batches() {
    for (backend, device) in devices() {
        let (one, eps1) = train_with(1, Some(5), &device);
        let (two, eps2) = train_with(2, Some(5), &device);
        let (four, eps4) = train_with(4, Some(5), &device);
        assert_eq!(one, two, "{backend}: 2 workers differ from 1");
        assert_eq!(one, four, "{backend}: 4 workers differ from 1");
        assert_eq!((eps1, eps1), (eps2, eps4));
        // Same sampled batches and noise as without chunks: the same ε, and
        // parameters equal up to the order of the float additions.
        let (whole, eps) = train(2, &device);
        assert_eq!(eps, eps1);
        let gap = one
            .iter()
            .zip(&whole)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(gap < 1e-4, "{backend}: chunked vs whole differ by {gap}");
    }
}

/// The standard deviation of one DP step's update over a 200×200 layer
/// when every gradient is zero (the update is then the noise alone), for a
/// batch of `rows` examples out of 64 with expected batch 16.
fn update_std_with_zero_gradients(parallel: &DataParallel, rows: usize) -> f64 {
    let device = parallel.devices()[0].clone();
    let layer = DpLinearConfig::new(200, 200).init(&device);
    let before = values(&layer);
    let mut pe = engine(64, 16);
    let x = Tensor::<2>::from_data(
        TensorData::new(vec![0.3f32; rows * 200], [rows, 200]),
        &device,
    );
    // A loss with zero gradient: each example's loss times zero.
    let zero = |m: &DpLinear, x: &Tensor<2>| {
        let rows = x.dims()[0];
        m.forward(x.clone()).sum_dim(1).reshape([rows]) * 0.0
    };
    let _ = pe.sample_batch();
    let after = pe
        .step_data_parallel(1.0, layer, &x, zero, parallel)
        .map_err(|r| r.error)
        .unwrap();
    let delta: Vec<f64> = values(&after)
        .iter()
        .zip(&before)
        .map(|(a, b)| f64::from(a - b))
        .collect();
    let mean = delta.iter().sum::<f64>() / delta.len() as f64;
    (delta.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / delta.len() as f64).sqrt()
}

/// σ = 1, C = 0.5, qN = 16: one noise draw gives an update of standard
/// deviation σC/(qN) = 1/32 (W draws of full variance would give √W
/// times that). Standard error over 40 000 coordinates ≈ 0.4%; 3%
/// tolerance.
const ONE_DRAW_STD: f64 = 1.0 * 0.5 / 16.0;

/// With zero gradients the update is the noise alone: drawn once.
#[test]
fn should_add_the_noise_once() {
    let device = devices()[0].1.clone();
    let parallel = DataParallel::new(vec![device; 4], 4).unwrap();
    let std = update_std_with_zero_gradients(&parallel, 16);
    assert!(
        (std / ONE_DRAW_STD - 1.0).abs() < 0.03,
        "std {std} vs {ONE_DRAW_STD}"
    );
}

/// One step in which the second shard's worker panics (the loss function
/// fails there), on a thread, waited for at most 60 s (its normal run
/// takes 0.1 s): the error, whether the model came back untouched, and
/// the steps accounted.
fn step_with_a_failing_worker(
    parallel: impl FnOnce(&Device) -> DataParallel + Send + 'static,
) -> (String, bool, u64) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let device = devices()[0].1.clone();
        let model = Net {
            fc1: DpLinearConfig::new(6, 8).init(&device),
            fc2: DpLinearConfig::new(8, 3).init(&device),
        };
        let before = values(&model);
        let parallel = parallel(&device);
        let mut pe = engine(64, 16);
        let b = data(16, &device);
        let failing = |m: &Net, b: &(Tensor<2>, Tensor<1, Int>)| {
            let first: Vec<f32> =
                b.0.clone()
                    .narrow(0, 0, 1)
                    .into_data()
                    .iter::<f32>()
                    .collect();
            assert!(first[0] != ((8 * 6) as f32 * 0.47).sin(), "worker failure");
            m.losses(b)
        };
        let rejected = pe
            .step_data_parallel(0.1, model, &b, failing, &parallel)
            .unwrap_err();
        let _ = tx.send((
            rejected.error.to_string(),
            values(&rejected.model) == before,
            pe.steps(),
        ));
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the step hung")
}

#[test]
fn should_fail_every_worker_without_a_hang() {
    let (error, untouched, steps) =
        step_with_a_failing_worker(|device| DataParallel::new(vec![device.clone(); 2], 2).unwrap());
    assert!(error.contains("worker"), "{error}");
    assert!(untouched, "the model is untouched");
    assert_eq!(steps, 0, "no step was accounted");
    let device = devices()[0].1.clone();
    assert!(DataParallel::new(Vec::new(), 2).is_err());
    assert!(DataParallel::new(vec![device.clone(); 3], 2).is_err());
}

/// The model must live on the coordinator (the first device): refused
/// before anything is computed, released or accounted.
#[cfg(all(feature = "flex", feature = "ndarray"))]
#[test]
fn should_refuse_a_model_off_the_coordinator() {
    use dpsgd_burn::backend::Backend;
    let flex = Backend::Flex.autodiff_device().unwrap();
    let ndarray = Backend::Ndarray.autodiff_device().unwrap();
    let model = Net {
        fc1: DpLinearConfig::new(6, 8).init(&flex),
        fc2: DpLinearConfig::new(8, 3).init(&flex),
    };
    let parallel = DataParallel::new(vec![ndarray.clone(), ndarray], 2).unwrap();
    let mut pe = engine(64, 16);
    let b = data(16, &flex);
    let rejected = pe
        .step_data_parallel(0.1, model, &b, |m: &Net, b| m.losses(b), &parallel)
        .unwrap_err();
    assert!(
        rejected.error.to_string().contains("coordinator"),
        "{}",
        rejected.error
    );
    assert_eq!(pe.steps(), 0);
}

/// On a CPU backend every worker shares the one device; `for_device` cuts
/// 8 shards for up to 8 workers (so their results agree) and refuses none.
#[test]
fn should_share_the_one_cpu_device_between_workers() {
    for (backend, device) in devices() {
        let workers = dpsgd_burn::parallel::worker_devices(&device, 3);
        assert_eq!(workers, vec![device.clone(); 3], "{backend}");
        let parallel = DataParallel::for_device(&device, 3).unwrap();
        assert_eq!((parallel.workers(), parallel.shards()), (3, 8));
        assert_eq!(DataParallel::for_device(&device, 12).unwrap().shards(), 12);
        assert!(DataParallel::for_device(&device, 0).is_err());
    }
}

/// A host-side all-reduce for the tests: each worker's flat tensor is read
/// back, summed in worker order behind a barrier, and returned on the
/// caller's device. It stands in for burn's collective (CUDA only in burn
/// 0.22) to test the protocol around it.
#[derive(Debug)]
struct HostAllReduce {
    barrier: std::sync::Barrier,
    slots: std::sync::Mutex<Vec<Vec<f32>>>,
}

impl HostAllReduce {
    fn new(workers: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            barrier: std::sync::Barrier::new(workers),
            slots: std::sync::Mutex::new(vec![Vec::new(); workers]),
        })
    }
}

impl dpsgd_burn::parallel::AllReduce for HostAllReduce {
    fn sum(&self, worker: usize, tensor: Tensor<1>) -> dpsgd_core::Result<Tensor<1>> {
        let device = tensor.device();
        let values: Vec<f32> = tensor.into_data().iter::<f32>().collect();
        let n = values.len();
        self.slots.lock().unwrap()[worker] = values;
        self.barrier.wait();
        let mut sum = vec![0.0f32; n];
        for slot in self.slots.lock().unwrap().iter() {
            assert_eq!(slot.len(), n, "the workers' flat tensors differ in length");
            for (s, v) in sum.iter_mut().zip(slot) {
                *s += v;
            }
        }
        // Nobody overwrites a slot before everyone has read them all.
        self.barrier.wait();
        Ok(Tensor::from_data(TensorData::new(sum, [n]), &device))
    }
}

/// [`train_with`] through the host all-reduce; every step's statistics
/// cover the whole batch (every worker's norms, not only the
/// coordinator's).
fn train_all_reduced(workers: usize, physical: Option<usize>, device: &Device) -> (Vec<f32>, f64) {
    let mut model = seeded_net(device);
    let n = 64;
    let all = data(n, device);
    let parallel = DataParallel::new(vec![device.clone(); workers], 4)
        .unwrap()
        .with_all_reduce(HostAllReduce::new(workers));
    let mut pe = engine_with(n, 16, physical);
    for _ in 0..5 {
        let indices = pe.sample_batch();
        let b = pick(&all, &indices);
        model = pe
            .step_data_parallel(0.1, model, &b, |m: &Net, b| m.losses(b), &parallel)
            .map_err(|r| r.error)
            .unwrap();
        let stats = pe.last_step().unwrap();
        assert_eq!(stats.per_example_norms.len(), indices.len());
        assert_eq!(stats.batch_size, indices.len());
    }
    (values(&model), pe.epsilon().unwrap())
}

/// Sums every worker's tensor, then divides by the number of workers: a
/// mean, which would noise the average at the sum's sensitivity.
#[derive(Debug)]
struct MeanAllReduce(std::sync::Arc<HostAllReduce>, usize);

impl dpsgd_burn::parallel::AllReduce for MeanAllReduce {
    fn sum(&self, worker: usize, tensor: Tensor<1>) -> dpsgd_core::Result<Tensor<1>> {
        Ok(self.0.sum(worker, tensor)? / self.1 as f32)
    }
}

/// A collective that does not add each part exactly once is caught by the
/// example count carried through it: the step is refused, unaccounted.
#[test]
fn should_refuse_a_collective_that_does_not_sum() {
    let device = devices()[0].1.clone();
    let model = seeded_net(&device);
    let before = values(&model);
    let parallel = DataParallel::new(vec![device.clone(); 2], 2)
        .unwrap()
        .with_all_reduce(std::sync::Arc::new(MeanAllReduce(HostAllReduce::new(2), 2)));
    let mut pe = engine(64, 16);
    let b = data(16, &device);
    let _ = pe.sample_batch();
    let rejected = pe
        .step_data_parallel(0.1, model, &b, |m: &Net, b| m.losses(b), &parallel)
        .unwrap_err();
    assert!(
        rejected.error.to_string().contains("counted"),
        "{}",
        rejected.error
    );
    assert_eq!(values(&rejected.model), before);
    assert_eq!(pe.steps(), 0);
}

/// The collective path: the workers' sums all-reduced instead of moved to
/// the coordinator give the coordinator's parameters up to the order of
/// the float additions, with one noise draw and one accounting step, with
/// and without virtual batches.
#[test]
fn should_give_the_coordinators_parameters_through_an_all_reduce() {
    for (backend, device) in devices() {
        let (reference, eps) = train(2, &device);
        let (chunked, _) = train_with(2, Some(5), &device);
        for (workers, physical) in [(1, None), (2, None), (4, None), (2, Some(5)), (4, Some(5))] {
            let (reduced, eps_reduced) = train_all_reduced(workers, physical, &device);
            let reference = if physical.is_some() {
                &chunked
            } else {
                &reference
            };
            assert_eq!(eps, eps_reduced, "{backend}, {workers} workers");
            let gap = reference
                .iter()
                .zip(&reduced)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(gap < 1e-5, "{backend}, {workers} workers: {gap}");
        }
    }
}

/// Through the all-reduce too, the noise is drawn once, and a batch
/// smaller than the shards (two examples for four workers) leaves some
/// workers without examples: they still take part with zeros.
#[test]
fn should_add_the_noise_once_through_an_all_reduce() {
    let device = devices()[0].1.clone();
    let parallel = DataParallel::new(vec![device; 4], 4)
        .unwrap()
        .with_all_reduce(HostAllReduce::new(4));
    let std = update_std_with_zero_gradients(&parallel, 2);
    assert!(
        (std / ONE_DRAW_STD - 1.0).abs() < 0.03,
        "std {std} vs {ONE_DRAW_STD}"
    );
}

/// A worker that fails before the collective keeps every worker out of
/// it: the step fails with the model untouched, within a bounded wait
/// (the step runs on a thread; 60 s is far beyond its normal 0.1 s).
#[test]
fn should_fail_every_worker_before_the_all_reduce_without_a_hang() {
    let (error, untouched, steps) = step_with_a_failing_worker(|device| {
        DataParallel::new(vec![device.clone(); 2], 2)
            .unwrap()
            .with_all_reduce(HostAllReduce::new(2))
    });
    assert!(error.contains("worker"), "{error}");
    assert!(untouched, "the model is untouched");
    assert_eq!(steps, 0, "no step was accounted");
}

/// burn's own all-reduce is CUDA-only in burn 0.22: CPU devices are
/// refused up front instead of panicking inside burn.
#[test]
fn should_refuse_burns_all_reduce_off_cuda() {
    for (backend, device) in devices() {
        let err = DataParallel::new(vec![device.clone(); 2], 2)
            .unwrap()
            .with_burn_all_reduce()
            .unwrap_err();
        assert!(err.to_string().contains("CUDA"), "{backend}: {err}");
    }
}

/// A model the fast path cannot serve (a plain burn layer): the workers
/// find out on their copies of the engine, and the engine keeps the
/// reason, so later steps go straight to the fallback.
#[test]
fn should_keep_what_the_workers_learnt_about_the_fast_path() {
    #[derive(Module, Debug)]
    struct Mixed {
        dp: DpLinear,
        plain: burn::nn::Linear,
    }
    let device = devices()[0].1.clone();
    let mut model = Mixed {
        dp: DpLinearConfig::new(6, 4).init(&device),
        plain: burn::nn::LinearConfig::new(4, 3).init(&device),
    };
    let parallel = DataParallel::new(vec![device.clone(); 2], 2).unwrap();
    let mut pe = engine(64, 16);
    let loss = |m: &Mixed, b: &(Tensor<2>, Tensor<1, Int>)| {
        cross_entropy_per_example(m.plain.forward(m.dp.forward(b.0.clone())), b.1.clone())
    };
    assert_eq!(pe.fallback_reason(), None);
    for _ in 0..2 {
        let _ = pe.sample_batch();
        model = pe
            .step_data_parallel(0.1, model, &data(16, &device), loss, &parallel)
            .map_err(|r| r.error)
            .unwrap();
        let reason = pe.fallback_reason().expect("the reason is kept");
        assert!(reason.contains("plain.weight"), "{reason}");
    }
}

/// The loss, except on the worker thread `hung` (named `dpsgd-worker-N`),
/// where it first sleeps for `seconds`: a worker that hangs.
fn hanging_on(
    hung: usize,
    seconds: u64,
) -> impl Fn(&Net, &(Tensor<2>, Tensor<1, Int>)) -> Tensor<1> + Clone + Send + Sync + 'static {
    move |m: &Net, b: &(Tensor<2>, Tensor<1, Int>)| {
        if std::thread::current().name() == Some(&format!("dpsgd-worker-{hung}")) {
            std::thread::sleep(std::time::Duration::from_secs(seconds));
        }
        m.losses(b)
    }
}

/// A worker silent for longer than the step timeout is lost: under `Stop`
/// the step fails within the timeout (the model untouched, nothing
/// accounted); under `Continue` the same step is redone on the other
/// worker, with the same shards, to the parameters and ε of the run in
/// which nobody hung (bit for bit: the same sums in the same order), and
/// the loss is reported once. A timeout too long to represent is none.
#[test]
fn should_time_out_a_silent_worker_and_stop_or_go_on_without_it() {
    use dpsgd_burn::parallel::OnWorkerLoss;
    use std::time::{Duration, Instant};
    let device = devices()[0].1.clone();
    let timeout = Duration::from_millis(300);
    // Stop: the step fails, at the timeout and not at the hang's end.
    let parallel = DataParallel::new(vec![device.clone(); 2], 4)
        .unwrap()
        .with_worker_names(vec!["first".into(), "second".into()])
        .unwrap()
        .with_step_timeout(timeout)
        .unwrap();
    let model = seeded_net(&device);
    let before = values(&model);
    let mut pe = engine(64, 16);
    let b = pick(&data(64, &device), &pe.sample_batch());
    let started = Instant::now();
    let rejected = pe
        .step_data_parallel(0.1, model, &b, hanging_on(1, 3), &parallel)
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited for the hang"
    );
    let error = rejected.error.to_string();
    assert!(error.contains("second"), "{error}");
    assert!(
        error.contains("did not answer within the step timeout (0.3 s)"),
        "{error}"
    );
    assert_eq!(values(&rejected.model), before, "the model is untouched");
    assert_eq!(pe.steps(), 0, "nothing accounted");
    // Continue: five steps, worker 1 lost in the first.
    let (want, want_epsilon) = train(2, &device);
    let parallel = DataParallel::new(vec![device.clone(); 2], 4)
        .unwrap()
        .with_step_timeout(timeout)
        .unwrap()
        .with_on_worker_loss(OnWorkerLoss::Continue)
        .unwrap();
    let mut model = seeded_net(&device);
    let n = 64;
    let all = data(n, &device);
    let mut pe = engine_with(n, 16, None);
    for _ in 0..5 {
        let b = pick(&all, &pe.sample_batch());
        model = pe
            .step_data_parallel(0.1, model, &b, hanging_on(1, 3), &parallel)
            .map_err(|r| r.error)
            .unwrap();
    }
    assert_eq!(values(&model), want);
    assert_eq!(pe.epsilon().unwrap(), want_epsilon);
    assert_eq!(parallel.live_workers(), 1);
    let lost = parallel.take_lost_workers();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!((lost[0].worker, lost[0].name.as_str()), (1, "#1"));
    assert!(lost[0].reason.contains("step timeout"), "{lost:?}");
    assert!(parallel.take_lost_workers().is_empty(), "reported once");
    // Every worker lost: the step fails, naming them.
    let parallel = DataParallel::new(vec![device.clone()], 4)
        .unwrap()
        .with_step_timeout(timeout)
        .unwrap()
        .with_on_worker_loss(OnWorkerLoss::Continue)
        .unwrap();
    let model = seeded_net(&device);
    let mut pe = engine(64, 16);
    let b = pick(&data(64, &device), &pe.sample_batch());
    let rejected = pe
        .step_data_parallel(0.1, model, &b, hanging_on(0, 2), &parallel)
        .unwrap_err();
    let error = rejected.error.to_string();
    assert!(
        error.contains("no data-parallel worker is left (#0: did not answer"),
        "{error}"
    );
    assert_eq!(pe.steps(), 0);
    // Refused: a zero timeout; a timeout or continuing with a collective
    // (whose workers wait inside it), set before or after it.
    let two = || DataParallel::new(vec![device.clone(); 2], 4).unwrap();
    assert!(two().with_step_timeout(Duration::ZERO).is_err());
    let collective = || two().with_all_reduce(HostAllReduce::new(2));
    assert!(collective().with_step_timeout(timeout).is_err());
    assert!(
        collective()
            .with_on_worker_loss(OnWorkerLoss::Continue)
            .is_err()
    );
    let late = two()
        .with_on_worker_loss(OnWorkerLoss::Continue)
        .unwrap()
        .with_all_reduce(HostAllReduce::new(2));
    let mut pe = engine(64, 16);
    let b = pick(&data(64, &device), &pe.sample_batch());
    let rejected = pe
        .step_data_parallel(
            0.1,
            seeded_net(&device),
            &b,
            |m: &Net, b| m.losses(b),
            &late,
        )
        .unwrap_err();
    assert!(
        rejected.error.to_string().contains("collective"),
        "{}",
        rejected.error
    );
    // The longest timeout is no deadline at all (not an overflow).
    let parallel = DataParallel::new(vec![device.clone(); 2], 4)
        .unwrap()
        .with_step_timeout(Duration::MAX)
        .unwrap();
    let model = seeded_net(&device);
    let mut pe = engine(64, 16);
    let b = pick(&data(64, &device), &pe.sample_batch());
    assert!(
        pe.step_data_parallel(0.1, model, &b, |m: &Net, b| m.losses(b), &parallel)
            .is_ok()
    );
}

/// A worker that answers after the step gave up on it is ignored, even
/// while another worker keeps the step going: worker 1 is silent for 1 s
/// (the timeout is 0.6 s) and then answers, while worker 0 answers a
/// shard every 0.4 s until 1.6 s. The step fails naming worker 1, as if
/// it had never answered.
#[test]
fn should_ignore_a_worker_that_answers_after_its_timeout() {
    use std::time::Duration;
    let device = devices()[0].1.clone();
    let parallel = DataParallel::new(vec![device.clone(); 2], 8)
        .unwrap()
        .with_step_timeout(Duration::from_millis(600))
        .unwrap();
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let (late, slow) = (
        std::sync::Arc::new(AtomicBool::new(false)),
        std::sync::Arc::new(AtomicBool::new(false)),
    );
    let loss = {
        let (late, slow) = (late.clone(), slow.clone());
        move |m: &Net, b: &(Tensor<2>, Tensor<1, Int>)| {
            match std::thread::current().name() {
                Some("dpsgd-worker-0") if slow.load(SeqCst) => {
                    std::thread::sleep(Duration::from_millis(400))
                }
                Some("dpsgd-worker-1") if late.swap(false, SeqCst) => {
                    std::thread::sleep(Duration::from_millis(1000));
                }
                _ => {}
            }
            m.losses(b)
        }
    };
    let mut pe = engine(64, 32);
    // A first step at full speed: the engine's per-example independence
    // check (one more call of the loss function, on a few examples of a
    // worker's first shard) runs there, not in the timed step.
    let first = pe.sample_batch();
    let model = pe
        .step_data_parallel(
            0.1,
            seeded_net(&device),
            &pick(&data(64, &device), &first),
            loss.clone(),
            &parallel,
        )
        .unwrap();
    slow.store(true, SeqCst);
    late.store(true, SeqCst);
    let b = pick(&data(64, &device), &pe.sample_batch());
    let rejected = pe
        .step_data_parallel(0.1, model, &b, loss, &parallel)
        .unwrap_err();
    let error = rejected.error.to_string();
    assert!(error.contains("#1"), "{error}");
    assert!(
        error.contains("did not answer within the step timeout"),
        "{error}"
    );
    assert_eq!(pe.steps(), 1);
}
