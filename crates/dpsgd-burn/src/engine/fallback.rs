//! The fallback for models outside the DP-aware layers: micro-batches of
//! one example, one backward pass each. Correct and slow; chosen
//! automatically and reported in [`ClippedGradients::method`].

use super::{GradientEngine, loss_values, total_norms};
use crate::batch::ExampleBatch;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{Gradients, Tensor};
use dpsgd_core::gradients::add_to_sum;
use dpsgd_core::{ClippedGradients, GradientMethod, Result};
use std::collections::HashMap;

impl GradientEngine {
    /// Clipped sum of `batch` one example at a time (parameters grouped by
    /// `group_of` into `n_groups` clipping groups); `reason` says why the
    /// fast path was not taken.
    pub(super) fn fallback<M, B, F>(
        &self,
        model: &M,
        batch: &B,
        loss_fn: &F,
        group_of: &HashMap<ParamId, usize>,
        n_groups: usize,
        reason: &str,
    ) -> Result<ClippedGradients>
    where
        M: Module,
        B: ExampleBatch,
        F: Fn(&M, &B) -> Tensor<1>,
    {
        let n = batch.num_examples();
        let mut sums: HashMap<ParamId, Tensor<1>> = HashMap::new();
        let mut norms = Vec::with_capacity(n);
        let mut loss_sum = 0.0;
        let mut dropped = 0;
        for i in 0..n {
            let example = batch.slice_examples(i, i + 1);
            let loss = loss_fn(model, &example);
            let value = loss_values(&loss, 1)?[0];
            if !value.is_finite() {
                dropped += 1; // contributes zero; see `clipped_gradients`
                continue;
            }
            let grads = loss.sum().backward();
            let mut collector = GradCollector {
                grads: &grads,
                out: Vec::new(),
            };
            model.visit(&mut collector);
            let per_param: Vec<(ParamId, Tensor<1>)> = collector.out;
            let mut group_sq = vec![vec![0.0f64]; n_groups];
            if !per_param.is_empty() {
                let sq: Vec<Tensor<1>> = per_param
                    .iter()
                    .map(|(_, g)| g.clone().powi_scalar(2).sum())
                    .collect();
                let values: Vec<f32> = Tensor::cat(sq, 0).into_data().iter::<f32>().collect();
                for ((id, _), v) in per_param.iter().zip(values) {
                    let group = group_of.get(id).copied().unwrap_or(0);
                    group_sq[group][0] += f64::from(v);
                }
            }
            let norm = total_norms(&group_sq, 1)[0];
            if !norm.is_finite() {
                dropped += 1;
                continue;
            }
            loss_sum += f64::from(value);
            norms.push(norm);
            let factors = self.clipping.factors(&group_sq, 1)?;
            for (id, g) in per_param {
                let group = group_of.get(&id).copied().unwrap_or(0);
                add_to_sum(&mut sums, id, g.mul_scalar(factors[group][0]));
            }
        }
        let mut clipped = ClippedGradients::new(
            sums,
            norms,
            GradientMethod::Fallback {
                reason: reason.to_owned(),
            },
            self.clipping.clone(),
        )?;
        clipped.set_loss_sum(loss_sum);
        (0..dropped).for_each(|_| clipped.push_dropped());
        Ok(clipped)
    }
}

/// Collects each trainable parameter's gradient, flattened.
struct GradCollector<'a> {
    grads: &'a Gradients,
    out: Vec<(ParamId, Tensor<1>)>,
}

impl ModuleVisitor for GradCollector<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            let numel: usize = g.dims().iter().product();
            self.out.push((param.id, g.reshape([numel])));
        }
    }
}
