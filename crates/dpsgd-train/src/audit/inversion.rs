//! Model inversion: one input reconstructed per class, white-box (input
//! gradients) or black-box (zeroth-order, through the hardened release),
//! measured against the members, the non-members and an independent judge.

use super::results::InversionReport;
use super::settings::{Attack, AuditConfig, audit_error};
use super::target::{Findings, Gate};
use crate::config::{Features, Privacy, TrainConfig};
use crate::error::TrainError;
use crate::fit::train_model;
use crate::recipe::Recipe;
use crate::trained::TrainedModel;
use dpsgd_audit::hardening::Release;
use dpsgd_audit::inversion::{
    InversionConfig, NearestDistance, WhiteBox, ZerothOrder, invert, nearest_distances,
};
use dpsgd_data::Dataset;

/// Salt of black-box inversion's random directions.
const INVERSION_SALT: u64 = 0x1a7e_0b0c;

/// The target model as a white-box (input-gradient) oracle.
pub(crate) struct GradientQueries<'a> {
    model: &'a TrainedModel,
}

impl WhiteBox for GradientQueries<'_> {
    fn input_len(&self) -> usize {
        self.model.input_len()
    }

    fn log_prob_gradient(
        &mut self,
        inputs: &[f32],
        classes: &[usize],
    ) -> dpsgd_audit::Result<(Vec<f64>, Vec<f32>)> {
        self.model
            .log_prob_gradient(inputs, classes)
            .map_err(|e| dpsgd_audit::Error::Query {
                reason: e.to_string(),
            })
    }
}

/// What inversion needs to know of the target besides its answers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InversionTarget {
    /// Its number of classes.
    pub(crate) classes: usize,
    /// Values per input.
    pub(crate) input_len: usize,
    /// `[channels, height, width]` of image inputs.
    pub(crate) input_shape: Option<[usize; 3]>,
    /// The feature transform in front of its network, where the audit has
    /// the model (`None`: a deployed model, queried on its raw inputs,
    /// black-box only).
    pub(crate) features: Option<Features>,
}

impl InversionTarget {
    /// The shape of a trained model.
    pub(crate) fn of(model: &TrainedModel) -> Self {
        Self {
            classes: model.classes(),
            input_len: model.input_len(),
            input_shape: model.input_shape(),
            features: Some(model.features()),
        }
    }
}

/// Model inversion of every class, measured against the members and
/// non-members and an independent classifier trained on the non-members.
pub(crate) fn run_inversion<W: WhiteBox>(
    oracle: &mut W,
    target: InversionTarget,
    train: &Dataset,
    test: &Dataset,
    cfg: &TrainConfig,
    inversion: &InversionConfig,
    device: &burn::tensor::Device,
) -> Result<InversionReport, TrainError> {
    let (lo, hi) = feature_range(train);
    let classes: Vec<usize> = (0..target.classes).collect();
    let image_shape = target.input_shape;
    let config = InversionConfig {
        range: (lo, hi),
        image_shape: match image_shape {
            Some([1, h, w]) => Some([h, w]),
            _ => None,
        },
        ..inversion.clone()
    };
    let inversion = invert(oracle, &classes, &config).map_err(audit_error)?;
    let to_usize = |d: &Dataset| -> Vec<usize> { d.labels().iter().map(|&y| y as usize).collect() };
    let (member_labels, non_member_labels) = (to_usize(train), to_usize(test));
    // Every class is reconstructed (the model's classes are public); a
    // distance is measured where the class has a member and a non-member.
    // Which classes the private data holds must not decide whether the
    // audit runs: a class with no example (one record's label, in a small
    // data set) gets no distance (`NaN`, `null` in JSON) instead of
    // failing the audit.
    let measured: Vec<usize> = classes
        .iter()
        .copied()
        .filter(|c| member_labels.contains(c) && non_member_labels.contains(c))
        .collect();
    let found = if measured.is_empty() {
        Vec::new()
    } else {
        let images: Vec<Vec<f32>> = measured
            .iter()
            .map(|&c| inversion.images[c].clone())
            .collect();
        nearest_distances(
            &images,
            &measured,
            train.features(),
            &member_labels,
            test.features(),
            &non_member_labels,
            train.n_features(),
        )
        .map_err(audit_error)?
    };
    let distance = |class: usize, of: fn(&NearestDistance) -> f64| {
        found.iter().find(|d| d.class == class).map_or(f64::NAN, of)
    };
    // An independent judge: a non-private model of the general recipe,
    // trained on the non-members only.
    let mut judge_cfg = Recipe::general()
        .fitted_to(test)
        .config(Privacy::NonPrivate, cfg.delta);
    judge_cfg.seed = cfg.seed.map(|s| s ^ 0x1d9e);
    let (_, judge) = train_model(&judge_cfg, test, test, device, |_| {})?;
    let flat: Vec<f32> = inversion.images.iter().flatten().copied().collect();
    let judged = judge.predict(&flat)?;
    let independent_accuracy =
        judged.iter().zip(&classes).filter(|(p, c)| p == c).count() as f64 / classes.len() as f64;
    let ratios: Vec<f64> = found
        .iter()
        .map(NearestDistance::ratio)
        .filter(|r| r.is_finite())
        .collect();
    // No class measured: no ratio (`NaN`, `null` in JSON), not the empty
    // sum's −0, which would read as reconstructions on the training data.
    let mean_distance_ratio = if ratios.is_empty() {
        f64::NAN
    } else {
        ratios.iter().sum::<f64>() / ratios.len() as f64
    };
    Ok(InversionReport {
        measured_classes: found.len(),
        distance_to_member: classes
            .iter()
            .map(|&c| distance(c, |d| d.to_member))
            .collect(),
        distance_to_non_member: classes
            .iter()
            .map(|&c| distance(c, |d| d.to_non_member))
            .collect(),
        classes,
        confidence: inversion.confidence.clone(),
        mean_distance_ratio,
        independent_accuracy,
        images: inversion.images,
        image_shape,
        range: (lo, hi),
    })
}

/// The smallest and largest feature value of `data`: the public input range
/// inversion stays in.
pub(crate) fn feature_range(data: &Dataset) -> (f32, f32) {
    data.features()
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Random directions per gradient estimate of black-box inversion.
const INVERSION_DIRECTIONS: usize = 16;
/// The finite-difference radius of black-box inversion, in range widths.
const INVERSION_SMOOTHING: f64 = 0.05;

/// Model inversion, if asked for: white-box against a full release
/// without a budget; otherwise (and always against a deployed model, on
/// its raw inputs) black-box, from the hardened outputs through the gate.
/// Skipped (with a warning) for a trained model on features that are not
/// differentiated.
#[allow(clippy::too_many_arguments)]
pub(crate) fn inversion_attack(
    cfg: &TrainConfig,
    model: Option<&TrainedModel>,
    target: InversionTarget,
    train: &Dataset,
    test: &Dataset,
    audit: &AuditConfig,
    gate: &mut Gate<'_>,
    findings: &mut Findings,
    device: &burn::tensor::Device,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Option<InversionReport>, TrainError> {
    if !audit.attacks.contains(&Attack::Inversion) {
        return Ok(None);
    }
    let black_box =
        audit.release != Release::Full || audit.query_budget.is_some() || model.is_none();
    Ok(match (target.features.unwrap_or(Features::Raw), model) {
        (Features::Raw, _) | (_, None) if black_box => {
            log(&format!(
                "inversion: reconstructing one input per class from the released outputs ({INVERSION_DIRECTIONS} random directions per gradient estimate)"
            ));
            let client = Attack::Inversion.name();
            let width = feature_range(train).1 - feature_range(train).0;
            let mut oracle = ZerothOrder::new(
                gate.client(client),
                target.input_len,
                INVERSION_DIRECTIONS,
                f64::from(width.max(f32::MIN_POSITIVE)) * INVERSION_SMOOTHING,
                audit.seed ^ INVERSION_SALT,
            )
            .map_err(audit_error)?;
            let result = run_inversion(
                &mut oracle,
                target,
                train,
                test,
                cfg,
                &audit.inversion,
                device,
            );
            drop(oracle);
            match result {
                Ok(report) => Some(report),
                Err(e) if gate.refused(client) > 0 => {
                    findings.refuse(
                        client,
                        &format!(
                            "{e}, after {} records served ({} refused)",
                            gate.served(client),
                            gate.refused(client)
                        ),
                    );
                    None
                }
                Err(e) => return Err(e),
            }
        }
        (Features::Raw, Some(model)) => {
            log("inversion: reconstructing one input per class");
            let mut oracle = GradientQueries { model };
            Some(run_inversion(
                &mut oracle,
                target,
                train,
                test,
                cfg,
                &audit.inversion,
                device,
            )?)
        }
        (other, _) => {
            findings.warnings.push(format!(
                "inversion skipped: the model sees {} features, which are not differentiated; audit a model on raw features",
                match other {
                    Features::Scatter { .. } => "ScatterNet",
                    Features::Raw => "raw",
                }
            ));
            None
        }
    })
}
