//! Per-example clipping policies.
//!
//! # Privacy
//!
//! Clipping bounds the contribution of any one example to the gradient sum:
//! with flat clipping at C, `‖Σ_i c_i ∇_i − Σ_{i≠j} c_i ∇_i‖ ≤ C`, so the sum has
//! L2 sensitivity C under add/remove neighbours. Per-layer clipping with
//! budgets C_l bounds each layer's part by C_l, and the whole by
//! `√(Σ_l C_l²)`: noise is calibrated to that.

use crate::error::{Result, invalid};
use serde::{Deserialize, Serialize};

/// How per-example gradients are clipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Clipping {
    /// Clip the whole gradient of each example to L2 norm `max_grad_norm`:
    /// `c_i = min(1, C / ‖∇_i‖)` (Abadi et al. 2016).
    Flat {
        /// C.
        max_grad_norm: f64,
    },
    /// Clip each layer's gradient separately, layer `l` to `max_grad_norms[l]`
    /// (layers in the order the model declares them; see
    /// [`crate::params::layer_groups`]).
    PerLayer {
        /// C_l for each layer.
        max_grad_norms: Vec<f64>,
    },
    /// Automatic clipping (Bu et al. 2022, "Automatic clipping: differentially
    /// private deep learning made easier and stronger"): every per-example
    /// gradient is normalised, `c_i = C / (‖∇_i‖ + γ)`, so its contribution
    /// has norm `< C` whatever its size and C needs no tuning (take C = 1
    /// and tune the learning rate).
    Automatic {
        /// C (the sensitivity).
        max_grad_norm: f64,
        /// γ > 0, keeps small gradients from being blown up (0.01 in the paper).
        stability: f64,
    },
    /// Adaptive clipping (Andrew et al. 2021, "Differentially private
    /// learning with adaptive clipping"): flat clipping at a C that tracks
    /// the `target_quantile` of the per-example norms, updated after each
    /// step by `C ← C·exp(−η (b̃ − γ))` from the noisy fraction `b̃` of
    /// unclipped examples. The count is released with Gaussian noise of
    /// standard deviation `count_noise_std`, and its privacy cost is
    /// accounted: the gradient noise multiplier becomes
    /// `σ_Δ = (σ⁻² − (2σ_b)⁻²)^{−1/2}` so that the pair is exactly as private
    /// as one Gaussian mechanism with multiplier σ (Theorem 1 of the paper).
    Adaptive {
        /// The current C (starts at the initial value).
        max_grad_norm: f64,
        /// γ ∈ (0, 1): the quantile of per-example norms to track (0.5 = median).
        target_quantile: f64,
        /// η > 0: geometric learning rate of C (0.2 in the paper).
        learning_rate: f64,
        /// σ_b: noise standard deviation of the unclipped count
        /// (the paper uses expected batch size / 20).
        count_noise_std: f64,
    },
}

impl Clipping {
    /// Flat clipping at `max_grad_norm`.
    ///
    /// # Errors
    ///
    /// `max_grad_norm` not finite and > 0.
    pub fn flat(max_grad_norm: f64) -> Result<Self> {
        check_norm(max_grad_norm)?;
        Ok(Self::Flat { max_grad_norm })
    }

    /// Per-layer clipping with one budget per layer.
    ///
    /// # Errors
    ///
    /// An empty list or a budget that is not finite and > 0.
    pub fn per_layer(max_grad_norms: Vec<f64>) -> Result<Self> {
        if max_grad_norms.is_empty() {
            return Err(invalid("max_grad_norms", "[]", "need one budget per layer"));
        }
        for &c in &max_grad_norms {
            check_norm(c)?;
        }
        Ok(Self::PerLayer { max_grad_norms })
    }

    /// Automatic clipping at `C` with stability `γ = 0.01`.
    ///
    /// # Errors
    ///
    /// `C` not finite and > 0.
    pub fn automatic(max_grad_norm: f64) -> Result<Self> {
        check_norm(max_grad_norm)?;
        Ok(Self::Automatic {
            max_grad_norm,
            stability: 0.01,
        })
    }

    /// Adaptive clipping starting at `initial` and tracking the
    /// `target_quantile` of the norms, with η = 0.2 and the given count noise.
    ///
    /// # Errors
    ///
    /// An invalid C, quantile outside (0, 1) or non-positive count noise.
    pub fn adaptive(initial: f64, target_quantile: f64, count_noise_std: f64) -> Result<Self> {
        check_norm(initial)?;
        if !(target_quantile > 0.0 && target_quantile < 1.0) {
            return Err(invalid(
                "target_quantile",
                target_quantile,
                "must be in (0, 1)",
            ));
        }
        if !(count_noise_std.is_finite() && count_noise_std > 0.0) {
            return Err(invalid(
                "count_noise_std",
                count_noise_std,
                "must be a finite number > 0",
            ));
        }
        Ok(Self::Adaptive {
            max_grad_norm: initial,
            target_quantile,
            learning_rate: 0.2,
            count_noise_std,
        })
    }

    /// Checks every field, whichever way the policy was built (a struct
    /// literal or a deserialised checkpoint skips the constructors).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`](crate::Error::InvalidParameter) for a
    /// norm that is not finite and > 0, an empty per-layer list, an
    /// automatic stability γ that is not finite and > 0 (a negative γ lets
    /// an example whose norm is near |γ| contribute far more than C), an
    /// adaptive quantile outside (0, 1), a learning rate that is not finite
    /// and ≥ 0, or a count noise that is not finite and > 0.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Flat { max_grad_norm } => check_norm(*max_grad_norm),
            Self::PerLayer { max_grad_norms } => {
                if max_grad_norms.is_empty() {
                    return Err(invalid("max_grad_norms", "[]", "need one budget per layer"));
                }
                max_grad_norms.iter().try_for_each(|&c| check_norm(c))
            }
            Self::Automatic {
                max_grad_norm,
                stability,
            } => {
                check_norm(*max_grad_norm)?;
                if stability.is_finite() && *stability > 0.0 {
                    Ok(())
                } else {
                    Err(invalid(
                        "stability",
                        stability,
                        "automatic clipping needs a finite γ > 0 (C/(‖g‖ + γ) bounds each example by C only then)",
                    ))
                }
            }
            Self::Adaptive {
                max_grad_norm,
                target_quantile,
                learning_rate,
                count_noise_std,
            } => {
                check_norm(*max_grad_norm)?;
                if !(*target_quantile > 0.0 && *target_quantile < 1.0) {
                    return Err(invalid(
                        "target_quantile",
                        target_quantile,
                        "must be in (0, 1)",
                    ));
                }
                if !(learning_rate.is_finite() && *learning_rate >= 0.0) {
                    return Err(invalid(
                        "learning_rate",
                        learning_rate,
                        "must be a finite number >= 0",
                    ));
                }
                if !(count_noise_std.is_finite() && *count_noise_std > 0.0) {
                    return Err(invalid(
                        "count_noise_std",
                        count_noise_std,
                        "must be a finite number > 0",
                    ));
                }
                Ok(())
            }
        }
    }

    /// Automatic clipping at `C` with stability `γ`.
    ///
    /// # Errors
    ///
    /// `C` or `γ` not finite and > 0.
    pub fn automatic_with_stability(max_grad_norm: f64, stability: f64) -> Result<Self> {
        let c = Self::Automatic {
            max_grad_norm,
            stability,
        };
        c.validate()?;
        Ok(c)
    }

    /// The L2 sensitivity of the clipped sum: `C` (flat) or `√(Σ C_l²)`.
    pub fn sensitivity(&self) -> f64 {
        match self {
            Self::Flat { max_grad_norm }
            | Self::Automatic { max_grad_norm, .. }
            | Self::Adaptive { max_grad_norm, .. } => *max_grad_norm,
            Self::PerLayer { max_grad_norms } => {
                max_grad_norms.iter().map(|c| c * c).sum::<f64>().sqrt()
            }
        }
    }

    /// Number of layers a per-layer policy expects (`None` for flat).
    pub fn layers(&self) -> Option<usize> {
        match self {
            Self::PerLayer { max_grad_norms } => Some(max_grad_norms.len()),
            _ => None,
        }
    }

    /// Clip factors from per-example, per-layer squared norms
    /// (`sq_norms[l][i]` for layer group `l`, example `i`), as f32 rounded
    /// toward zero ([`round_factor`]) so that `c·‖g‖ ≤ C` survives rounding.
    ///
    /// Returns `factors[l][i]`: the same for every layer under flat clipping.
    ///
    /// A non-finite norm gets factor 0: such an example contributes nothing
    /// (the engine also drops it from the sum and counts it).
    ///
    /// # Errors
    ///
    /// An invalid policy (see [`Clipping::validate`]); a per-layer policy
    /// whose number of budgets differs from the number of layer groups.
    pub fn factors(&self, sq_norms: &[Vec<f64>], batch: usize) -> Result<Vec<Vec<f32>>> {
        Ok(self
            .exact_factors(sq_norms, batch)?
            .into_iter()
            .map(|layer| layer.into_iter().map(|c| round_factor(c, 1.0)).collect())
            .collect())
    }

    /// The clip factors of [`Clipping::factors`] in f64, unrounded: for an
    /// engine that computes gradients from scaled tensors (`∇ = s·∇̃`) and
    /// applies `round_factor(c, s)` to `∇̃`, so that neither the factor nor
    /// the gradient leaves f32's range.
    ///
    /// # Errors
    ///
    /// As [`Clipping::factors`].
    pub fn exact_factors(&self, sq_norms: &[Vec<f64>], batch: usize) -> Result<Vec<Vec<f64>>> {
        self.validate()?;
        let total_norm = |i: usize| sq_norms.iter().map(|l| l[i]).sum::<f64>().sqrt();
        match self {
            Self::Flat { max_grad_norm } | Self::Adaptive { max_grad_norm, .. } => {
                let factors: Vec<f64> = (0..batch)
                    .map(|i| clip_factor(*max_grad_norm, total_norm(i)))
                    .collect();
                Ok(vec![factors; sq_norms.len()])
            }
            Self::Automatic {
                max_grad_norm,
                stability,
            } => {
                let factors: Vec<f64> = (0..batch)
                    .map(|i| {
                        let norm = total_norm(i);
                        if norm.is_finite() {
                            max_grad_norm / (norm + stability) // C/(‖g‖ + γ)
                        } else {
                            0.0
                        }
                    })
                    .collect();
                Ok(vec![factors; sq_norms.len()])
            }
            Self::PerLayer { max_grad_norms } => {
                if max_grad_norms.len() != sq_norms.len() {
                    return Err(invalid(
                        "max_grad_norms",
                        max_grad_norms.len(),
                        format!("the model has {} layers with parameters", sq_norms.len()),
                    ));
                }
                Ok(sq_norms
                    .iter()
                    .zip(max_grad_norms)
                    .map(|(layer, &c)| layer.iter().map(|s| clip_factor(c, s.sqrt())).collect())
                    .collect())
            }
        }
    }
}

/// `c·scale` as f32, rounded toward zero (and at most `f32::MAX`): the
/// factor applied to a gradient computed at `1/scale` of its size never
/// exceeds the exact one, so a clipped contribution never exceeds its
/// bound through rounding.
pub fn round_factor(c: f64, scale: f64) -> f32 {
    let exact = c * scale;
    if exact.is_nan() || exact <= 0.0 {
        return 0.0;
    }
    let f = (exact as f32).min(f32::MAX);
    if f64::from(f) > exact {
        f.next_down()
    } else {
        f
    }
}

/// `min(1, C/‖g‖)` (exact, in f64); a zero gradient keeps factor 1, a
/// non-finite one gets 0.
fn clip_factor(c: f64, norm: f64) -> f64 {
    if !norm.is_finite() {
        0.0
    } else if norm <= c {
        1.0
    } else {
        c / norm
    }
}

fn check_norm(c: f64) -> Result<()> {
    if !(c.is_finite() && c > 0.0) {
        Err(invalid("max_grad_norm", c, "must be a finite number > 0"))
    } else if c > f64::from(f32::MAX) {
        // Gradients are clipped in f32: C would be +∞ there.
        Err(invalid(
            "max_grad_norm",
            format!("{c:e}"),
            format!(
                "gradients are clipped in 32-bit floats, which end at {:e}",
                f32::MAX
            ),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_clip_flat_by_total_norm() {
        let c = Clipping::flat(1.0).unwrap();
        // Two layers; example 0 has total norm 5, example 1 norm 0.5.
        let sq = vec![vec![9.0, 0.25], vec![16.0, 0.0]];
        let f = c.factors(&sq, 2).unwrap();
        assert!((f[0][0] - 0.2).abs() < 1e-7 && f[0][0] * 5.0 <= 1.0);
        assert_eq!(f[1][0], f[0][0]);
        assert_eq!(f[0][1], 1.0);
    }

    #[test]
    fn should_clip_each_layer_to_its_budget() {
        let c = Clipping::per_layer(vec![1.0, 2.0]).unwrap();
        let f = c.factors(&[vec![4.0], vec![1.0]], 1).unwrap();
        assert!((f[0][0] - 0.5).abs() < 1e-7);
        assert_eq!(f[1][0], 1.0);
        assert!((c.sensitivity() - 5f64.sqrt()).abs() < 1e-12);
        assert!(c.factors(&[vec![4.0]], 1).is_err());
    }

    #[test]
    fn should_normalise_with_automatic_clipping() {
        let c = Clipping::automatic(1.0).unwrap();
        let f = c.factors(&[vec![100.0, 0.0001, 0.0]], 3).unwrap();
        // ‖c_i g_i‖ = ‖g‖/(‖g‖ + 0.01) < 1 for every size, even tiny ones.
        for (i, norm) in [10.0f64, 0.01, 0.0].iter().enumerate() {
            let scaled = f64::from(f[0][i]) * norm;
            assert!(scaled < 1.0, "{scaled}");
        }
        assert!((f64::from(f[0][0]) * 10.0 - 10.0 / 10.01).abs() < 1e-6);
        assert!((f64::from(f[0][1]) * 0.01 - 0.5).abs() < 1e-6);
    }

    #[test]
    fn should_reject_bad_norms() {
        assert!(Clipping::flat(0.0).is_err());
        assert!(Clipping::flat(f64::NAN).is_err());
        assert!(Clipping::per_layer(vec![]).is_err());
    }

    #[test]
    fn should_validate_policies_built_without_constructors() {
        // A negative γ: C/(‖g‖ + γ) for ‖g‖ = 0.011 and γ = −0.01 scales the
        // example to norm 11·C. Every path that computes factors refuses it.
        let bad = Clipping::Automatic {
            max_grad_norm: 1.0,
            stability: -0.01,
        };
        assert!(bad.validate().is_err());
        assert!(bad.factors(&[vec![0.011f64.powi(2)]], 1).is_err());
        assert!(Clipping::automatic_with_stability(1.0, 0.0).is_err());
        assert!(
            Clipping::Flat {
                max_grad_norm: -1.0
            }
            .validate()
            .is_err()
        );
        assert!(
            Clipping::Flat {
                max_grad_norm: f64::INFINITY
            }
            .factors(&[vec![1.0]], 1)
            .is_err()
        );
        let mut adaptive = Clipping::adaptive(1.0, 0.5, 1.0).unwrap();
        assert!(adaptive.validate().is_ok());
        if let Clipping::Adaptive { learning_rate, .. } = &mut adaptive {
            *learning_rate = f64::NAN;
        }
        assert!(adaptive.validate().is_err());
    }

    #[test]
    fn should_give_non_finite_norms_factor_zero() {
        for c in [
            Clipping::flat(1.0).unwrap(),
            Clipping::automatic(1.0).unwrap(),
            Clipping::per_layer(vec![1.0]).unwrap(),
        ] {
            let f = c.factors(&[vec![f64::INFINITY, f64::NAN, 4.0]], 3).unwrap();
            assert_eq!((f[0][0], f[0][1]), (0.0, 0.0), "{c:?}");
            assert!(f[0][2] > 0.0);
        }
    }
}
