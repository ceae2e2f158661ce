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

    /// Per-layer clipping that splits a total budget `C` equally over
    /// `layers` layers: `C_l = C / √L`, so the total sensitivity stays `C`.
    ///
    /// # Errors
    ///
    /// As [`Clipping::per_layer`].
    pub fn per_layer_equal(max_grad_norm: f64, layers: usize) -> Result<Self> {
        check_norm(max_grad_norm)?;
        Self::per_layer(vec![max_grad_norm / (layers as f64).sqrt(); layers])
    }

    /// The L2 sensitivity of the clipped sum: `C` (flat) or `√(Σ C_l²)`.
    pub fn sensitivity(&self) -> f64 {
        match self {
            Self::Flat { max_grad_norm } => *max_grad_norm,
            Self::PerLayer { max_grad_norms } => {
                max_grad_norms.iter().map(|c| c * c).sum::<f64>().sqrt()
            }
        }
    }

    /// Number of layers a per-layer policy expects (`None` for flat).
    pub fn layers(&self) -> Option<usize> {
        match self {
            Self::Flat { .. } => None,
            Self::PerLayer { max_grad_norms } => Some(max_grad_norms.len()),
        }
    }

    /// Clip factors from per-example, per-layer squared norms
    /// (`sq_norms[l][i]` for layer group `l`, example `i`).
    ///
    /// Returns `factors[l][i]`: the same for every layer under flat clipping.
    ///
    /// # Errors
    ///
    /// A per-layer policy whose number of budgets differs from the number of
    /// layer groups.
    pub fn factors(&self, sq_norms: &[Vec<f64>], batch: usize) -> Result<Vec<Vec<f32>>> {
        match self {
            Self::Flat { max_grad_norm } => {
                let factors: Vec<f32> = (0..batch)
                    .map(|i| {
                        let norm = sq_norms.iter().map(|l| l[i]).sum::<f64>().sqrt();
                        clip_factor(*max_grad_norm, norm)
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

/// `min(1, C/‖g‖)`, rounded down in f32 so that `c·‖g‖ ≤ C` survives
/// rounding; a zero gradient keeps factor 1.
fn clip_factor(c: f64, norm: f64) -> f32 {
    if norm <= c {
        1.0
    } else {
        let f = (c / norm) as f32;
        // Round toward zero: never scale above the bound.
        if f64::from(f) * norm > c {
            f.next_down()
        } else {
            f
        }
    }
}

fn check_norm(c: f64) -> Result<()> {
    if c.is_finite() && c > 0.0 {
        Ok(())
    } else {
        Err(invalid("max_grad_norm", c, "must be a finite number > 0"))
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
    fn should_reject_bad_norms() {
        assert!(Clipping::flat(0.0).is_err());
        assert!(Clipping::flat(f64::NAN).is_err());
        assert!(Clipping::per_layer(vec![]).is_err());
    }
}
