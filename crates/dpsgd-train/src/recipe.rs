//! Recipes: complete training settings known to work for a kind of data,
//! so that a run needs no tuning flags. `dpsgd train` picks one with
//! [`Recipe::for_run`] (the data's public shape and the target ε) and
//! names it in its report; every flag overrides one setting.
//!
//! Hyper-parameters tuned on private data leak through the choice (Papernot
//! & Steinke 2022): recipes are fixed in advance, from the literature and
//! from measurements on *public* benchmark data (docs/benchmarks.md), and
//! depend on the data only through its public shape (and on the run
//! through its public budget).

use crate::config::{Features, ModelKind, OptimizerKind, Privacy, TrainConfig};
use crate::models::Activation;
use dpsgd_accountant::AccountantKind;
use dpsgd_data::Dataset;
use serde::Serialize;

/// A complete set of training settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recipe {
    /// Short name, reported with the run (`general`, `image-scatternet`,
    /// `image-cnn`).
    pub name: &'static str,
    /// One line on what it is and where it comes from.
    pub description: &'static str,
    /// Model.
    pub model: ModelKind,
    /// Features the model sees.
    pub features: Features,
    /// Activation between hidden layers.
    pub activation: Activation,
    /// MLP hidden layer sizes.
    pub hidden: Vec<usize>,
    /// Inner optimizer.
    pub optimizer: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
    /// Clipping norm C.
    pub max_grad_norm: f64,
    /// Expected batch size.
    pub batch_size: usize,
    /// Epochs.
    pub epochs: usize,
    /// Parameter averaging (EMA decay), if any.
    pub ema_decay: Option<f64>,
    /// Accountant: PLD (tighter, so less noise for the same ε) for the
    /// image and table recipes, RDP for the general one.
    pub accountant: AccountantKind,
    /// Steps the run is meant to take: when set, [`Recipe::fitted_to`]
    /// sets the epochs with [`Recipe::epochs_for`], so that a small table
    /// gets as many steps as a large one. N, the batch and the steps are all
    /// released: this reads nothing private.
    pub steps: Option<usize>,
    /// Other settings for a small budget: a run with a target ε below
    /// [`SmallBudget::below_epsilon`] takes them ([`Recipe::for_privacy`]).
    pub small_budget: Option<SmallBudget>,
    /// The units of privacy the batch was last capped for
    /// ([`Recipe::fitted_to_units`]; only the last fit is kept), so that
    /// [`Recipe::for_privacy`] keeps the cap. Equality of recipes includes
    /// it: two recipes fitted to different N differ.
    #[serde(skip)]
    fitted_units: Option<usize>,
}

/// A recipe's settings for a small privacy budget. The target ε is a
/// public setting of the run, so choosing by it reads nothing private.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SmallBudget {
    /// A target ε below this takes these settings.
    pub below_epsilon: f64,
    /// Expected batch size.
    pub batch_size: usize,
    /// Learning rate.
    pub lr: f64,
    /// Epochs (for a recipe with a step count, [`Recipe::fitted_to`]
    /// sets them again from the steps).
    pub epochs: usize,
}

/// The smallest image side the image recipes are meant for (MNIST-like
/// data and larger); smaller images (the 8×8 UCI digits) get the general
/// recipe.
pub const MIN_IMAGE_SIDE: usize = 16;

/// Defined here, beside the recipes: a config's defaults are a recipe's.
impl Default for TrainConfig {
    /// The library's general-purpose settings (those of
    /// [`Recipe::general`]) at ε = 3, δ = 1e-5; prefer
    /// [`Recipe::for_data`], which picks settings for the data.
    fn default() -> Self {
        Recipe::general().config(Privacy::TargetEpsilon(3.0), 1e-5)
    }
}

impl Recipe {
    /// Any data: an MLP (one hidden layer of 128 ReLU units) with Adam
    /// (lr 0.01), C = 1, batches of 128, 50 epochs. 93.3% on the UCI digits
    /// at ε = 3 (mean of 10 seeds).
    pub fn general() -> Self {
        Self {
            name: "general",
            description: "MLP (128 ReLU units), Adam lr 0.01, C = 1, batch 128, 50 epochs",
            model: ModelKind::Mlp,
            features: Features::Raw,
            activation: Activation::Relu,
            hidden: crate::config::DEFAULT_HIDDEN.to_vec(),
            optimizer: OptimizerKind::Adam,
            lr: 1e-2,
            max_grad_norm: 1.0,
            batch_size: 128,
            epochs: 50,
            ema_decay: None,
            accountant: AccountantKind::Rdp,
            steps: None,
            small_budget: None,
            fitted_units: None,
        }
    }

    /// Single-channel images of side ≥ [`MIN_IMAGE_SIDE`]: ScatterNet
    /// features with group normalisation and a linear model (Tramèr & Boneh
    /// 2021, "Differentially private learning needs better features"),
    /// SGD with momentum 0.9, a small clipping norm, large batches and
    /// parameter averaging; below ε = 2, larger batches and fewer steps
    /// (batch 4096, lr 4, 40 epochs: 600 steps instead of 1 740, each less
    /// noisy). Measured on MNIST (docs/benchmarks.md, δ = 1e-5, mean of 3
    /// seeds): 98.71% at ε = 3 and 98.29% at ε = 1 (98.04% with the
    /// ε = 3 settings), under a minute on 2 cores.
    pub fn image_scatternet() -> Self {
        Self {
            name: "image-scatternet",
            description: "ScatterNet features (J=2, L=8, group norm 27) + linear model, SGD momentum 0.9 lr 2, C = 0.1, batch 2048, 60 epochs, EMA 0.99; at a target eps below 2: lr 4, batch 4096, 40 epochs (Tramèr & Boneh 2021)",
            model: ModelKind::Logreg,
            features: Features::SCATTER,
            activation: Activation::Tanh,
            hidden: Vec::new(),
            optimizer: OptimizerKind::Sgd,
            lr: 2.0,
            max_grad_norm: 0.1,
            batch_size: 2048,
            epochs: 60,
            ema_decay: Some(0.99),
            accountant: AccountantKind::Pld,
            steps: None,
            small_budget: Some(SmallBudget {
                below_epsilon: 2.0,
                batch_size: 4096,
                lr: 4.0,
                epochs: 40,
            }),
            fitted_units: None,
        }
    }

    /// Single-channel images of side ≥ [`MIN_IMAGE_SIDE`] with a CNN: the
    /// tanh CNN of Papernot et al. (2021, "Tempered sigmoid activations"),
    /// SGD with momentum 0.9 at lr 0.5, C = 0.1, batches of 512, 40 epochs:
    /// 98.1% on MNIST at ε = 3 (mean of 4 runs, docs/benchmarks.md).
    pub fn image_cnn() -> Self {
        Self {
            name: "image-cnn",
            description: "tanh CNN, SGD momentum 0.9 lr 0.5, C = 0.1, batch 512, 40 epochs (Papernot et al. 2021)",
            model: ModelKind::Cnn,
            features: Features::Raw,
            activation: Activation::Tanh,
            hidden: Vec::new(),
            optimizer: OptimizerKind::Sgd,
            lr: 0.5,
            max_grad_norm: 0.1,
            batch_size: 512,
            epochs: 40,
            ema_decay: None,
            accountant: AccountantKind::Pld,
            steps: None,
            small_budget: None,
            fitted_units: None,
        }
    }

    /// Tables (features without an image shape, e.g. CSV data under the
    /// CLI's default signed-log transform): logistic regression with Adam
    /// (lr 0.03), C = 1, batches of 1024 (at most N/4), PLD accounting, and
    /// as many epochs as make about 1 000 steps. Chosen by measurement on
    /// UCI Adult, breast cancer and the UCI digits read as a table
    /// (docs/benchmarks.md, "Tables with no flags"): a linear model on
    /// bounded features loses little to an MLP on these tables and trains
    /// stably under noise where N is small; the fixed step count replaces a
    /// fixed epoch count, which gave 80 noisy steps on 500 records and 1 000
    /// on 30 000.
    pub fn tabular() -> Self {
        Self {
            name: "tabular",
            description: "logistic regression, Adam lr 0.03, C = 1, batch 1024, epochs for 1000 steps",
            model: ModelKind::Logreg,
            features: Features::Raw,
            activation: Activation::Relu,
            hidden: Vec::new(),
            optimizer: OptimizerKind::Adam,
            lr: 0.03,
            max_grad_norm: 1.0,
            batch_size: 1024,
            epochs: 40,
            ema_decay: None,
            accountant: AccountantKind::Pld,
            steps: Some(1000),
            small_budget: None,
            fitted_units: None,
        }
    }

    /// Every recipe's name, for a command line.
    pub const NAMES: [&'static str; 4] = ["general", "tabular", "image-scatternet", "image-cnn"];

    /// The recipe called `name` (one of [`Recipe::NAMES`]).
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "general" => Some(Self::general()),
            "tabular" => Some(Self::tabular()),
            "image-scatternet" => Some(Self::image_scatternet()),
            "image-cnn" => Some(Self::image_cnn()),
            _ => None,
        }
    }

    /// The recipe for `train`, by its public shape only: single-channel
    /// images of side ≥ [`MIN_IMAGE_SIDE`] get [`Recipe::image_scatternet`]
    /// (or [`Recipe::image_cnn`] when `model` asks for the CNN), tables
    /// (no image shape) [`Recipe::tabular`] (with `model` logreg or none),
    /// anything else [`Recipe::general`] with `model` if given. The batch
    /// size is at most a quarter of the training set.
    pub fn for_data(train: &Dataset, model: Option<ModelKind>) -> Self {
        let image = matches!(
            train.image_shape(),
            Some([1, h, w]) if h >= MIN_IMAGE_SIDE && w >= MIN_IMAGE_SIDE
        );
        let table = train.image_shape().is_none();
        let recipe = match (image, table, model) {
            (true, _, None | Some(ModelKind::Logreg)) => Self::image_scatternet(),
            (true, _, Some(ModelKind::Cnn)) => Self::image_cnn(),
            (_, true, None | Some(ModelKind::Logreg)) => Self::tabular(),
            (_, _, Some(model)) => Self {
                model,
                ..Self::general()
            },
            (false, _, None) => Self::general(),
        };
        recipe.fitted_to(train)
    }

    /// The recipe for `train` ([`Recipe::for_data`]) with its settings for
    /// a run at `privacy` ([`Recipe::for_privacy`]), the batch capped at a
    /// quarter of `train` ([`Recipe::fitted_to`]): what `dpsgd train` uses.
    pub fn for_run(train: &Dataset, model: Option<ModelKind>, privacy: Privacy) -> Self {
        Self::for_data(train, model).for_privacy(privacy)
    }

    /// The recipe's settings for a run at `privacy`: its
    /// [`SmallBudget`] when the target ε is below the budget's threshold,
    /// else the recipe as it is (also for a fixed noise multiplier, whose
    /// ε the recipe does not know, and for a non-private run). A recipe
    /// already fitted ([`Recipe::fitted_to_units`]) keeps its batch cap at
    /// a quarter of the units of its last fit.
    #[must_use]
    pub fn for_privacy(mut self, privacy: Privacy) -> Self {
        if let (Some(small), Privacy::TargetEpsilon(epsilon)) = (self.small_budget, privacy)
            && epsilon < small.below_epsilon
        {
            self.batch_size = small.batch_size;
            self.lr = small.lr;
            self.epochs = small.epochs;
            // A recipe already fitted to N keeps its cap.
            if let Some(n) = self.fitted_units {
                return self.fitted_to_units(n);
            }
        }
        self
    }

    /// The same recipe with its batch size at most a quarter of `train`
    /// (at least 1), so that a small data set still gets several steps per
    /// epoch, and, for a recipe with a step count, its epochs.
    #[must_use]
    pub fn fitted_to(self, train: &Dataset) -> Self {
        self.fitted_to_units(train.len())
    }

    /// The same recipe with its batch size at most a quarter of `n` units
    /// of privacy (at least 1): at user level the number of users, which
    /// is public where the number of records is not. A recipe with a step
    /// count ([`Recipe::steps`]) gets [`Recipe::epochs_for`] that batch.
    #[must_use]
    pub fn fitted_to_units(mut self, n: usize) -> Self {
        self.fitted_units = Some(n);
        self.batch_size = self.batch_size.min((n / 4).max(1));
        if let Some(epochs) = self.epochs_for(self.batch_size, n) {
            self.epochs = epochs;
        }
        self
    }

    /// For a recipe with a step count ([`Recipe::steps`]), the epochs
    /// that make at least that many steps with expected batch `batch` over
    /// `n` units: an epoch is `round(n / batch)` steps (at least 1, as the
    /// Poisson sampler counts them), so `⌈steps / round(n / batch)⌉`
    /// (at least 1). `None` for a recipe with a fixed epoch count.
    pub fn epochs_for(&self, batch: usize, n: usize) -> Option<usize> {
        let steps = self.steps?;
        let per_epoch = (n as f64 / batch.max(1) as f64).round().max(1.0) as usize;
        Some(steps.div_ceil(per_epoch).max(1))
    }

    /// A run of this recipe with `privacy` at `delta` (no seed, flat
    /// clipping), with the recipe's settings as they are: call
    /// [`Recipe::for_privacy`] first for those of the budget.
    pub fn config(&self, privacy: Privacy, delta: f64) -> TrainConfig {
        TrainConfig {
            model: self.model,
            activation: self.activation,
            epochs: self.epochs,
            batch_size: self.batch_size,
            max_grad_norm: self.max_grad_norm,
            lr: self.lr,
            optimizer: self.optimizer,
            privacy,
            delta,
            accountant: self.accountant,
            seed: None,
            allow_large_delta: false,
            clipping: crate::config::ClippingMode::Flat,
            hidden: self.hidden.clone(),
            max_physical_batch_size: None,
            devices: 1,
            all_reduce: false,
            remote_workers: Vec::new(),
            worker_token: None,
            worker_timeout: Some(crate::config::DEFAULT_WORKER_TIMEOUT),
            on_worker_loss: dpsgd_burn::parallel::OnWorkerLoss::Stop,
            conv_strategy: crate::config::ConvStrategy::Auto,
            save_model: None,
            checkpoint_dir: None,
            resume: false,
            progress_epsilon: false,
            features: self.features,
            ema_decay: self.ema_decay,
            augment_multiplicity: 1,
            weight_standardization: false,
            recipe: Some(self.name.to_owned()),
            defences: crate::defences::Defences::default(),
            privacy_unit: crate::config::PrivacyUnit::Record,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(n: usize, side: usize) -> Dataset {
        Dataset::new(vec![0.0; n * side * side], vec![0; n], side * side, 10)
            .unwrap()
            .with_image_shape([1, side, side])
            .unwrap()
    }

    #[test]
    fn should_pick_the_documented_image_recipe() {
        let mnist_like = images(60_000, 28);
        let r = Recipe::for_data(&mnist_like, None);
        assert_eq!(r.name, "image-scatternet");
        assert_eq!(r.model, ModelKind::Logreg);
        assert_eq!(r.features, Features::Scatter { groups: 27 });
        assert_eq!(r.optimizer, OptimizerKind::Sgd);
        assert_eq!((r.max_grad_norm, r.batch_size, r.epochs), (0.1, 2048, 60));
        assert_eq!((r.lr, r.ema_decay), (2.0, Some(0.99)));
        let cnn = Recipe::for_data(&mnist_like, Some(ModelKind::Cnn));
        assert_eq!(cnn.name, "image-cnn");
        assert_eq!(cnn.activation, Activation::Tanh);
        assert_eq!(cnn.optimizer, OptimizerKind::Sgd);
        assert_eq!((cnn.max_grad_norm, cnn.batch_size, cnn.lr), (0.1, 512, 0.5));
        assert_eq!(r.accountant, AccountantKind::Pld);
        assert_eq!(Recipe::general().accountant, AccountantKind::Rdp);
        // Explicit MLP on images: the general recipe with that model.
        let mlp = Recipe::for_data(&mnist_like, Some(ModelKind::Mlp));
        assert_eq!((mlp.name, mlp.model), ("general", ModelKind::Mlp));
    }

    /// Below ε = 2 the ScatterNet recipe takes its small-budget settings;
    /// at and above 2, with a fixed σ and without DP it keeps its own;
    /// recipes without a small budget never change.
    #[test]
    fn should_take_the_small_budget_settings_below_its_epsilon() {
        let base = Recipe::image_scatternet();
        let small = base.clone().for_privacy(Privacy::TargetEpsilon(1.0));
        assert_eq!((small.batch_size, small.lr, small.epochs), (4096, 4.0, 40));
        assert_eq!((small.max_grad_norm, small.ema_decay), (0.1, Some(0.99)));
        let just_below = base.clone().for_privacy(Privacy::TargetEpsilon(1.999));
        assert_eq!(just_below.batch_size, 4096);
        for privacy in [
            Privacy::TargetEpsilon(2.0),
            Privacy::TargetEpsilon(3.0),
            Privacy::NoiseMultiplier(5.0),
            Privacy::NonPrivate,
        ] {
            assert_eq!(base.clone().for_privacy(privacy), base, "{privacy:?}");
        }
        for other in [Recipe::general(), Recipe::tabular(), Recipe::image_cnn()] {
            assert_eq!(
                other.clone().for_privacy(Privacy::TargetEpsilon(0.5)),
                other
            );
        }
        let run = Recipe::for_run(&images(20_000, 16), None, Privacy::TargetEpsilon(1.0));
        assert_eq!((run.batch_size, run.lr, run.epochs), (4096, 4.0, 40));
        let capped = Recipe::for_run(&images(8000, 28), None, Privacy::TargetEpsilon(1.0));
        assert_eq!(capped.batch_size, 2000);
        // At user level the last fit is to the users: their cap holds.
        let users = Recipe::image_scatternet()
            .fitted_to(&images(20_000, 16))
            .fitted_to_units(6000)
            .for_privacy(Privacy::TargetEpsilon(1.0));
        assert_eq!(users.batch_size, 1500);
        // Fitted first, then the budget: the cap holds too.
        let fitted_first =
            Recipe::for_data(&images(8000, 28), None).for_privacy(Privacy::TargetEpsilon(1.0));
        assert_eq!((fitted_first.batch_size, fitted_first.lr), (2000, 4.0));
        // The cap at a quarter of N still holds after the budget's batch.
        let small_data = base
            .for_privacy(Privacy::TargetEpsilon(1.0))
            .fitted_to(&images(8000, 28));
        assert_eq!(small_data.batch_size, 2000);
    }

    fn table(n: usize) -> Dataset {
        Dataset::new(vec![0.0; n * 5], vec![0; n], 5, 2).unwrap()
    }

    #[test]
    fn should_keep_the_general_recipe_for_small_images() {
        let small = images(1437, 8);
        assert_eq!(
            Recipe::for_data(&small, None),
            Recipe::general().fitted_to(&small)
        );
        let mlp = Recipe::for_data(&images(1437, 8), Some(ModelKind::Logreg));
        assert_eq!((mlp.name, mlp.model), ("general", ModelKind::Logreg));
    }

    /// Tables get the tabular recipe, with about 1 000 steps whatever N:
    /// Adult (26 048 training rows) 40 epochs of 1024, breast cancer (455)
    /// 250 epochs of 113; an epoch is round(N / batch) steps (as the
    /// sampler counts them), and epochs · steps per epoch ≥ 1000 with one
    /// epoch fewer below it.
    #[test]
    fn should_give_tables_the_tabular_recipe_with_a_fixed_step_count() {
        let r = Recipe::for_data(&table(26_048), None);
        assert_eq!(
            (r.name, r.model, r.optimizer),
            ("tabular", ModelKind::Logreg, OptimizerKind::Adam)
        );
        assert_eq!(
            (r.lr, r.max_grad_norm, r.accountant),
            (0.03, 1.0, AccountantKind::Pld)
        );
        assert_eq!((r.batch_size, r.epochs), (1024, 40));
        let small = Recipe::for_data(&table(455), None);
        assert_eq!((small.batch_size, small.epochs), (113, 250));
        for n in [4, 5, 455, 1437, 4607, 26_048, 1_000_000] {
            let r = Recipe::for_data(&table(n), None);
            let per_epoch = (n as f64 / r.batch_size as f64).round() as usize;
            assert!(r.epochs * per_epoch >= 1000, "{n}: {r:?}");
            assert!((r.epochs - 1) * per_epoch < 1000, "{n}: {r:?}");
        }
        // A batch of the user's: the epochs for that batch.
        assert_eq!(Recipe::tabular().epochs_for(64, 26_048), Some(3));
        assert_eq!(Recipe::tabular().epochs_for(0, 0), Some(1000));
        assert_eq!(Recipe::general().epochs_for(64, 26_048), None);
        // The batch cap and the epochs follow the units at user level.
        let users = Recipe::tabular().fitted_to_units(400);
        assert_eq!((users.batch_size, users.epochs), (100, 250));
        // Another model on a table: the general recipe with it.
        let mlp = Recipe::for_data(&table(3000), Some(ModelKind::Mlp));
        assert_eq!((mlp.name, mlp.model), ("general", ModelKind::Mlp));
        let logreg = Recipe::for_data(&table(3000), Some(ModelKind::Logreg));
        assert_eq!(logreg.name, "tabular");
    }

    #[test]
    fn should_cap_the_batch_at_a_quarter_of_the_data() {
        assert_eq!(Recipe::for_data(&images(1000, 28), None).batch_size, 250);
        assert_eq!(Recipe::for_data(&images(2, 28), None).batch_size, 1);
    }

    #[test]
    fn should_find_every_recipe_by_name() {
        for name in Recipe::NAMES {
            assert_eq!(Recipe::named(name).map(|r| r.name), Some(name));
        }
        assert_eq!(Recipe::named("best"), None);
    }

    #[test]
    fn should_name_the_recipe_in_the_config() {
        let cfg = Recipe::image_scatternet().config(Privacy::TargetEpsilon(3.0), 1e-5);
        assert_eq!(cfg.recipe.as_deref(), Some("image-scatternet"));
        assert_eq!(cfg.ema_decay, Some(0.99));
        assert_eq!(TrainConfig::default().recipe.as_deref(), Some("general"));
    }
}
