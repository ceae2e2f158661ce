//! Per-example gradients by their definition, for checking an engine:
//! one backward pass per example, each gradient read back to the host in
//! f64, clipped and summed there.
//!
//! This is the naive loop DP-SGD is defined by (Abadi et al. 2016, Alg. 1):
//! `Σ_i g_i · min(1, C/‖g_i‖)` with `g_i = ∇ℓ_i`. It shares no code with the
//! [`GradientEngine`](crate::GradientEngine)'s fast path or its fallback
//! (only burn's autodiff), so the engine's tests and `dpsgd bench check`
//! hold both against it on any backend. It costs one backward pass and one
//! read back per example: for checks, not training.
//!
//! ```
//! use burn::tensor::{Device, Tensor, TensorData};
//! use dpsgd_burn::layers::{DpLinear, DpLinearConfig};
//! use dpsgd_burn::reference::{clipped_sum, naive_per_example, norm};
//!
//! let device = Device::flex().autodiff();
//! let layer: DpLinear = DpLinearConfig::new(3, 2).init(&device);
//! let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, -1.0, 0.5, 0.0], [2, 3]), &device);
//! let per_example = naive_per_example(&layer, &x, |m: &DpLinear, x: &Tensor<2>| {
//!     m.forward(x.clone()).powi_scalar(2).sum_dim(1).reshape([-1])
//! });
//! assert_eq!(per_example.len(), 2);
//! let sum = clipped_sum(&per_example, 0.1);
//! // Every example's contribution has norm at most C: the sum, at most 2C.
//! assert!(norm(&sum) <= 2.0 * 0.1 + 1e-9);
//! ```

use crate::ExampleBatch;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{Gradients, Tensor};
use std::collections::HashMap;

/// One example's gradient: every float parameter's, flattened, in f64.
pub type ExampleGradient = HashMap<ParamId, Vec<f64>>;

struct Reader<'a> {
    grads: &'a Gradients,
    out: ExampleGradient,
}

impl ModuleVisitor for Reader<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let g: Vec<f64> = match param.val().grad(self.grads) {
            Some(g) => g.into_data().iter::<f32>().map(f64::from).collect(),
            None => vec![0.0; param.val().dims().iter().product()],
        };
        self.out.insert(param.id, g);
    }
}

/// `∇ℓ_i` for every example `i` of `batch`: one backward pass of
/// `loss(model, example_i).sum()` each. A parameter that receives no
/// gradient (frozen, or unused by the loss) reads as zeros.
pub fn naive_per_example<M: Module, B: ExampleBatch>(
    model: &M,
    batch: &B,
    loss: impl Fn(&M, &B) -> Tensor<1>,
) -> Vec<ExampleGradient> {
    (0..batch.num_examples())
        .map(|i| {
            let example = batch.slice_examples(i, i + 1);
            let grads = loss(model, &example).sum().backward();
            let mut reader = Reader {
                grads: &grads,
                out: HashMap::new(),
            };
            model.visit(&mut reader);
            reader.out
        })
        .collect()
}

/// The Euclidean norm of a gradient over all its parameters.
pub fn norm(g: &ExampleGradient) -> f64 {
    g.values().flatten().map(|x| x * x).sum::<f64>().sqrt()
}

/// `Σ_i min(1, C/‖g_i‖) · g_i`, in f64. An example of norm zero
/// contributes zero.
pub fn clipped_sum(per_example: &[ExampleGradient], c: f64) -> ExampleGradient {
    let mut sum: ExampleGradient = HashMap::new();
    for g in per_example {
        let n = norm(g);
        let f = if n > 0.0 { (c / n).min(1.0) } else { 0.0 };
        for (id, v) in g {
            let acc = sum.entry(*id).or_insert_with(|| vec![0.0; v.len()]);
            for (a, x) in acc.iter_mut().zip(v) {
                *a += f * x;
            }
        }
    }
    sum
}

/// `‖a − b‖`, over the pairs of values (the shorter length).
pub fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// A parameter's error against its reference, `‖got − want‖ /
/// max(‖want‖, 10⁻¹·whole)`: relative to its own reference sum, except that
/// a parameter whose sum is below a tenth of the whole model's (`whole`,
/// e.g. the norm of [`clipped_sum`]) is held to 10⁻¹·whole. A sum that is
/// zero in exact arithmetic (a bias before instance normalisation, a key
/// bias under the softmax) holds only f32 rounding, whose size relative to
/// itself means nothing.
pub fn floored_relative_error(got: &[f64], want: &[f64], whole: f64) -> f64 {
    let own = want.iter().map(|v| v * v).sum::<f64>().sqrt();
    distance(got, want) / own.max(1e-1 * whole).max(f64::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_clip_each_example_to_c_and_add() {
        let id = ParamId::new();
        let g = |v: Vec<f64>| HashMap::from([(id, v)]);
        // Norms 5 (clipped to 1: factor 0.2), 0.5 (kept), 0 (nothing).
        let sum = clipped_sum(
            &[g(vec![3.0, 4.0]), g(vec![0.3, -0.4]), g(vec![0.0, 0.0])],
            1.0,
        );
        let want = [0.6 + 0.3, 0.8 - 0.4];
        for (a, b) in sum[&id].iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        assert!((norm(&g(vec![3.0, 4.0])) - 5.0).abs() < 1e-12);
    }

    #[test]
    fn should_measure_errors_against_the_sum_or_the_floor() {
        assert_eq!(distance(&[1.0, 2.0], &[4.0, 6.0]), 5.0);
        // Own norm 5 above the floor 0.1 · 10: relative to itself.
        assert_eq!(floored_relative_error(&[3.0, 5.0], &[3.0, 4.0], 10.0), 0.2);
        // Own norm 0.5 below the floor 0.1 · 100 = 10.
        assert_eq!(
            floored_relative_error(&[0.3, 0.4], &[0.3, -0.6], 100.0),
            0.1
        );
        // Nothing to compare with: the error itself.
        assert_eq!(floored_relative_error(&[0.0], &[0.0], 0.0), 0.0);
    }
}
