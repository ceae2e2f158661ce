#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod audit;
pub mod augment;
mod config;
mod config_error;
pub mod defences;
pub mod ema;
mod error;
mod eval;
mod features;
mod fit;
pub mod model_file;
pub mod models;
mod recipe;
mod report;
pub mod text;
mod trained;

pub use audit::dirac as whitebox;
pub use config::{
    CHECKPOINT_FILE, ClippingMode, ConvStrategy, DEFAULT_HIDDEN, DEFAULT_WORKER_TIMEOUT, Features,
    ModelKind, OptimizerKind, Privacy, PrivacyUnit, Progress, TrainConfig, WorkerToken,
    default_delta, privacy_units,
};
pub use config_error::ConfigError;
pub use defences::{Defences, EarlyStopping, MistSettings, RelaxLossSettings};
pub use error::TrainError;
pub use eval::{accuracy, batch, per_example_losses};
pub use fit::canaries;
pub use fit::canaries::{CanaryObservation, CanaryView, GradientCanaries};
pub use fit::mist;
pub use fit::{
    MAX_CLASSES, MAX_PARAMETERS, RELEASED_FILE, train, train_model, train_with_gradient_canaries,
};
pub use model_file::{CardNotCovered, CardPrivacy, ModelCard, card_path};
pub use models::{Activation, Classifier, Cnn, Mlp};
pub use recipe::{MIN_IMAGE_SIDE, Recipe, SmallBudget};
pub use report::{
    EarlyStopReport, EpochRecord, MistPart, MistSubModel, NotCovered, TrainReport, UserCounts,
};
pub use trained::TrainedModel;
