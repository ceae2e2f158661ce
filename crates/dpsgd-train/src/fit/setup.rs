//! What a run is built from before its first step: the optimizer, the
//! clipping policy, the DP-SGD engine and its plan, and the seeded model
//! initialisation. Shared by the standard loop and MIST.

use crate::config::{
    ClippingMode, OptimizerKind, Privacy, PrivacyUnit, TrainConfig, privacy_units,
};
use crate::ema::Ema;
use crate::error::TrainError;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, ModuleOptimizer, SgdConfig, momentum::MomentumConfig};
use burn::tensor::{Device, Tensor};
use dpsgd_accountant::{Accountant, Segment};
use dpsgd_burn::{DatasetFingerprint, DpSgdConfig, PoissonSampler, PrivacyEngine, UserIndex};
use dpsgd_core::{Clipping, layer_groups, trainable_params};
use dpsgd_data::Dataset;

/// The optimizer applied to the (noisy, under DP) gradient, with the
/// defences' weight decay: post-processing, free in ε.
pub(crate) fn inner_optimizer(cfg: &TrainConfig) -> ModuleOptimizer {
    let decay = cfg
        .defences
        .weight_decay
        .map(|w| WeightDecayConfig::new(w as f32));
    match cfg.optimizer {
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
            .with_weight_decay(decay)
            .init(),
        OptimizerKind::Adam => AdamConfig::new().with_weight_decay(decay).init(),
    }
}

/// Serialises seeded initialisations: burn's initialisation RNG is one
/// per device, so two runs seeding and initialising at the same time (the
/// audit's shadow models) would interleave their draws.
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Initialises a model with `init`, from `cfg.seed` when set (burn's RNG
/// serves initialisation only; DP noise never uses it). Every
/// initialisation holds [`INIT_LOCK`], seeded or not: an unseeded one
/// drawing between another's seeding and its draws would change them.
///
/// burn initialises parameters lazily, at their first use, so the model's
/// parameters are materialised here, under the lock: otherwise a model
/// would draw its initial weights in its first training step, after
/// another thread had re-seeded the device (an audit's shadows trained on
/// two threads came out different from one thread's, depending on timing).
pub(crate) fn seeded<M: burn::module::Module>(
    cfg: &TrainConfig,
    device: &Device,
    init: impl FnOnce() -> M,
) -> M {
    let _guard = INIT_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(seed) = cfg.seed {
        device.seed(seed);
    }
    let model = init();
    materialise(&model);
    model
}

/// Draws every lazily initialised parameter of `model` now.
fn materialise<M: burn::module::Module>(model: &M) {
    struct Touch;
    impl burn::module::ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let _ = param.val();
        }
        fn visit_int<const D: usize>(
            &mut self,
            param: &burn::module::Param<Tensor<D, burn::tensor::Int>>,
        ) {
            let _ = param.val();
        }
        fn visit_bool<const D: usize>(
            &mut self,
            param: &burn::module::Param<Tensor<D, burn::tensor::Bool>>,
        ) {
            let _ = param.val();
        }
    }
    model.visit(&mut Touch);
}

/// What `run` needs besides the config, the data and the model.
pub(crate) struct Extra {
    /// Seconds spent computing features.
    pub(crate) feature_seconds: f64,
    /// Parameter averaging, if asked for.
    pub(crate) ema: Option<Ema>,
    /// Early stopping's validation split (features computed).
    pub(crate) validation: Option<Dataset>,
}

/// The clipping policy of `cfg` for `model`.
pub(crate) fn clipping_for<M: burn::module::Module>(
    cfg: &TrainConfig,
    model: &M,
) -> Result<Clipping, TrainError> {
    Ok(match cfg.clipping {
        ClippingMode::Flat => Clipping::flat(cfg.max_grad_norm)?,
        ClippingMode::PerLayer => {
            // An equal share per layer: the whole gradient stays within C.
            let layers = layer_groups(&trainable_params(model)).len().max(1);
            Clipping::per_layer(vec![cfg.max_grad_norm / (layers as f64).sqrt(); layers])?
        }
        ClippingMode::Automatic => Clipping::automatic(cfg.max_grad_norm)?,
        ClippingMode::Adaptive => {
            Clipping::adaptive(cfg.max_grad_norm, 0.5, cfg.batch_size as f64 / 20.0)?
        }
    })
}

/// The DP-SGD settings of `cfg` for `model` trained on `data` for `epochs`
/// epochs (a target ε is calibrated over them); `None` without DP.
pub(crate) fn dp_config<M: burn::module::Module>(
    cfg: &TrainConfig,
    model: &M,
    data: &Dataset,
    epochs: usize,
) -> Result<Option<DpSgdConfig>, TrainError> {
    let base = DpSgdConfig::new(cfg.max_grad_norm)
        .with_clipping(clipping_for(cfg, model)?)
        .with_conv_strategy(cfg.conv_strategy)
        .with_accountant(cfg.accountant)
        .with_delta(cfg.delta)
        .with_allow_large_delta(cfg.allow_large_delta)
        .with_privacy_unit(cfg.privacy_unit)
        // The report carries the engine's warnings; its caller shows them.
        .with_announce_fallback(false)
        .with_dataset(DatasetFingerprint {
            // The sampler's N: users at user level.
            size: privacy_units(cfg.privacy_unit, data),
            hash: data.content_hash(),
        });
    let base = match cfg.max_physical_batch_size {
        Some(m) => base.with_max_physical_batch_size(m),
        None => base,
    };
    Ok(match cfg.privacy {
        Privacy::NonPrivate => None,
        Privacy::NoiseMultiplier(s) => Some(base.with_noise_multiplier(s)),
        Privacy::TargetEpsilon(e) => Some(base.with_target_epsilon(e, cfg.delta, epochs)),
    })
}

/// The users of `data` at user-level DP (`None` at record level).
///
/// # Errors
///
/// [`TrainError::Config`] for user-level DP on data without user ids.
pub(crate) fn user_index(
    cfg: &TrainConfig,
    data: &Dataset,
) -> Result<Option<UserIndex>, TrainError> {
    if cfg.privacy_unit == PrivacyUnit::Record {
        return Ok(None);
    }
    let ids = data.users().ok_or_else(|| {
        TrainError::config(
            "privacy_unit",
            "user-level DP needs the user of every record (Dataset::with_users; --user-column for CSV data)",
        )
    })?;
    UserIndex::from_ids(ids)
        .map(Some)
        .map_err(|e| TrainError::config_from("privacy_unit", e))
}

/// A privacy engine for `dp` over `sampler`'s data, its generators seeded
/// from `seed` when set.
pub(crate) fn start_engine(
    cfg: &TrainConfig,
    dp: DpSgdConfig,
    sampler: PoissonSampler,
    seed: Option<u64>,
) -> Result<PrivacyEngine, TrainError> {
    with_run_seed(dp, seed)
        .init(inner_optimizer(cfg), sampler)
        .map_err(|e| engine_error(cfg, e))
}

/// `dp` seeded with the run's seed, if any.
pub(crate) fn with_run_seed(dp: DpSgdConfig, seed: Option<u64>) -> DpSgdConfig {
    match seed {
        Some(seed) => dp.with_seed(seed),
        None => dp,
    }
}

/// An error of the engine's settings in the run's terms.
pub(crate) fn engine_error(cfg: &TrainConfig, e: dpsgd_core::Error) -> TrainError {
    match e {
        dpsgd_core::Error::InvalidParameter {
            name: "count_noise_std",
            reason,
            ..
        } => TrainError::config(
            "clipping",
            format!(
                "adaptive clipping releases its count with noise batch size / 20 = {}, too little for this σ ({reason}); use a larger batch size or another clipping mode",
                cfg.batch_size as f64 / 20.0
            ),
        ),
        e => e.into(),
    }
}

/// Refuses now, not after hours of training when ε is first asked for, a
/// fixed σ the accountant cannot bound over the `steps` planned (σ so small
/// that ε overflows, or a PLD grid too large to hold).
pub(crate) fn check_plan(
    cfg: &TrainConfig,
    p: &PrivacyEngine,
    steps: u64,
) -> Result<(), TrainError> {
    if let Privacy::NoiseMultiplier(_) = cfg.privacy {
        let remaining = steps.saturating_sub(p.steps());
        if remaining > 0 {
            let planned = Segment::new(p.noise_multiplier(), p.sampler().sample_rate(), remaining)?;
            p.optimizer()
                .accountant()
                .epsilon_after(planned, p.delta())?;
        }
    }
    Ok(())
}
