//! A trained model that answers queries: what [`crate::train_model`]
//! returns, and what the audit's attacks query.
//!
//! It bundles the network with the feature transform it was trained behind
//! (ScatterNet or none), so queries take inputs in the data's own feature
//! space, as a user of the released model would send them.

use crate::config::Features;
use crate::error::TrainError;
use crate::eval::logits_of;
use crate::models::{Classifier, Cnn, Mlp};
use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use dpsgd_data::{Dataset, Scattering};

/// The network of a [`TrainedModel`].
#[derive(Debug, Clone)]
pub(crate) enum Net {
    /// An MLP or logistic regression.
    Mlp(Mlp),
    /// The CNN (boxed: it is much larger than the MLP's layer list).
    Cnn(Box<Cnn>),
}

/// A trained classifier with the feature transform it was trained behind.
///
/// Inputs are in the data's own feature space (`Dataset::n_features()`
/// values per example); with [`Features::Scatter`] the transform is applied
/// first, as in training.
#[derive(Debug, Clone)]
pub struct TrainedModel {
    net: Net,
    features: Features,
    scattering: Option<Scattering>,
    input_shape: Option<[usize; 3]>,
    input_len: usize,
    classes: usize,
    /// The autodiff device the model was trained on.
    device: Device,
}

impl TrainedModel {
    pub(crate) fn new(
        net: Net,
        features: Features,
        raw: &Dataset,
        classes: usize,
        device: Device,
    ) -> Result<Self, TrainError> {
        Self::from_parts(
            net,
            features,
            raw.image_shape(),
            raw.n_features(),
            classes,
            device,
        )
    }

    /// A model taking `input_len` values per example (images of
    /// `input_shape`), with the feature transform `features` in front of
    /// `net`.
    pub(crate) fn from_parts(
        net: Net,
        features: Features,
        input_shape: Option<[usize; 3]>,
        input_len: usize,
        classes: usize,
        device: Device,
    ) -> Result<Self, TrainError> {
        let scattering = match (features, input_shape) {
            (Features::Raw, _) => None,
            (Features::Scatter { .. }, Some([_, h, w])) => Some(
                dpsgd_data::Scattering::new(h, w, 2, 8)
                    .map_err(|e| TrainError::config_from("features", e))?,
            ),
            (Features::Scatter { .. }, None) => {
                return Err(TrainError::config(
                    "features",
                    "ScatterNet features need image data",
                ));
            }
        };
        Ok(Self {
            net,
            features,
            scattering,
            input_shape,
            input_len,
            classes,
            device,
        })
    }

    /// Number of classes (logits per example).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Number of input features per example (before the feature transform).
    pub fn input_len(&self) -> usize {
        self.input_len
    }

    /// Image shape `[channels, height, width]` of the inputs, if images.
    pub fn input_shape(&self) -> Option<[usize; 3]> {
        self.input_shape
    }

    /// The feature transform applied before the network.
    pub fn features(&self) -> Features {
        self.features
    }

    /// The examples of `data` as the network sees them.
    fn prepared<'a>(&self, data: &'a Dataset) -> Result<std::borrow::Cow<'a, Dataset>, TrainError> {
        if data.n_features() != self.input_len {
            return Err(TrainError::config(
                "data",
                format!(
                    "the model takes {} features per example, the data has {}",
                    self.input_len,
                    data.n_features()
                ),
            ));
        }
        match (self.features, &self.scattering) {
            (Features::Scatter { groups }, Some(s)) => Ok(std::borrow::Cow::Owned(
                crate::features::scatter_features(data, s, groups)?,
            )),
            _ => Ok(std::borrow::Cow::Borrowed(data)),
        }
    }

    /// Logits of every example of `data`, row-major `[len, classes]`, in
    /// f64 (computed in f32 by the network, without autodiff).
    ///
    /// # Errors
    ///
    /// [`TrainError::Config`] when `data` has another number of features
    /// than the model's inputs, or the feature transform fails.
    pub fn logits(&self, data: &Dataset) -> Result<Vec<f64>, TrainError> {
        let data = self.prepared(data)?;
        let device = self.device.clone().without_autodiff();
        Ok(match &self.net {
            Net::Mlp(m) => logits_of(&m.valid(), &data, &device),
            Net::Cnn(m) => logits_of(&m.valid(), &data, &device),
        })
    }

    /// Logits of `inputs` (row-major, [`Self::input_len`] values each).
    ///
    /// # Errors
    ///
    /// [`TrainError::Config`] when the length is not a multiple of the
    /// input length or a value is not finite.
    pub fn logits_of_inputs(&self, inputs: &[f32]) -> Result<Vec<f64>, TrainError> {
        self.logits(&self.as_dataset(inputs)?)
    }

    /// Predicted labels of `inputs` (row-major).
    ///
    /// # Errors
    ///
    /// As [`Self::logits_of_inputs`].
    pub fn predict(&self, inputs: &[f32]) -> Result<Vec<usize>, TrainError> {
        let logits = self.logits_of_inputs(inputs)?;
        Ok(logits
            .chunks(self.classes)
            .map(|row| {
                row.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(j, _)| j)
            })
            .collect())
    }

    /// `inputs` as an unlabelled data set of the model's input shape.
    fn as_dataset(&self, inputs: &[f32]) -> Result<Dataset, TrainError> {
        if inputs.is_empty() || !inputs.len().is_multiple_of(self.input_len) {
            return Err(TrainError::config(
                "inputs",
                format!(
                    "{} values are not a whole number of {}-feature examples",
                    inputs.len(),
                    self.input_len
                ),
            ));
        }
        let n = inputs.len() / self.input_len;
        let data = Dataset::new(inputs.to_vec(), vec![0; n], self.input_len, self.classes)
            .map_err(|e| TrainError::config_from("inputs", e))?;
        match self.input_shape {
            Some(shape) => data
                .with_image_shape(shape)
                .map_err(|e| TrainError::config_from("inputs", e)),
            None => Ok(data),
        }
    }

    /// For each input `x_i` (row-major) and class `c_i`, the probability
    /// `p_{c_i}(x_i)` and the gradient `∇_x ln p_{c_i}(x_i)` (row-major, as
    /// the inputs): what a white-box attacker such as model inversion
    /// queries.
    ///
    /// # Errors
    ///
    /// [`TrainError::Config`] for a model trained behind ScatterNet features
    /// (the transform is computed on the host, not differentiated), inputs
    /// that are not `classes.len()` examples, or a class out of range.
    pub fn log_prob_gradient(
        &self,
        inputs: &[f32],
        classes: &[usize],
    ) -> Result<(Vec<f64>, Vec<f32>), TrainError> {
        if self.features != Features::Raw {
            return Err(TrainError::config(
                "features",
                "input gradients need a model on raw features (ScatterNet features are not differentiated)",
            ));
        }
        let n = classes.len();
        if n == 0 || inputs.len() != n * self.input_len {
            return Err(TrainError::config(
                "inputs",
                format!(
                    "expected {n} examples of {} features, got {} values",
                    self.input_len,
                    inputs.len()
                ),
            ));
        }
        if let Some(&c) = classes.iter().find(|&&c| c >= self.classes) {
            return Err(TrainError::config(
                "classes",
                format!("class {c} is not below {}", self.classes),
            ));
        }
        let device = self.device.clone().autodiff();
        let [c, h, w] = self.input_shape.unwrap_or([1, 1, self.input_len]);
        let x: Tensor<4> =
            Tensor::from_data(TensorData::new(inputs.to_vec(), [n, c, h, w]), &device)
                .require_grad();
        // Parameters without gradients: only the input's is wanted.
        let logits = match &self.net {
            Net::Mlp(m) => m.clone().no_grad().logits(x.clone()),
            Net::Cnn(m) => m.clone().no_grad().logits(x.clone()),
        };
        let idx: Vec<i64> = classes.iter().map(|&c| c as i64).collect();
        let idx: Tensor<2, Int> =
            Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &device).reshape([n, 1]);
        let chosen = log_softmax(logits, 1).gather(1, idx);
        let grads = chosen.clone().sum().backward();
        let probs: Vec<f64> = chosen
            .into_data()
            .iter::<f32>()
            .map(|v| f64::from(v).exp())
            .collect();
        let grad = x
            .grad(&grads)
            .map(|g| g.into_data().iter::<f32>().collect())
            .unwrap_or_else(|| vec![0.0; inputs.len()]);
        Ok((probs, grad))
    }
}
