//! The fallback for models outside the DP-aware layers: micro-batches of
//! one example, one backward pass each. Correct and slow; chosen
//! automatically and reported in [`ClippedGradients::method`].

use super::{GradientEngine, loss_values};
use crate::batch::ExampleBatch;
use crate::canary::CanaryContext;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{Gradients, Tensor};
use dpsgd_core::gradients::add_to_sum;
use dpsgd_core::{ClippedGradients, GradientMethod, Result, round_factor};
use std::collections::{HashMap, HashSet};

impl GradientEngine {
    /// Clipped sum of `batch` one example at a time (parameters grouped by
    /// `group_of` into clipping groups numbered from 0); `reason` says why the
    /// fast path was not taken.
    pub(super) fn fallback<M, B, F>(
        &self,
        model: &M,
        batch: &B,
        loss_fn: &F,
        group_of: &HashMap<ParamId, usize>,
        canaries: Option<&CanaryContext<'_>>,
        reason: &str,
    ) -> Result<ClippedGradients>
    where
        M: Module,
        B: ExampleBatch,
        F: Fn(&M, &B) -> Tensor<1>,
    {
        let n = batch.num_examples();
        // Groups are numbered from 0, each with a parameter.
        let n_groups = group_of.values().max().map_or(0, |g| g + 1);
        let mut sums: HashMap<ParamId, Tensor<1>> = HashMap::new();
        let mut norms = Vec::with_capacity(n);
        let mut loss_sum = 0.0;
        let mut dropped = 0;
        let mut absent = 0;
        // Each canary slot's clipping factor per group: the canaries are
        // summed once, after the loop.
        let mut canary_factors: HashMap<usize, Vec<f64>> = HashMap::new();
        for i in 0..n {
            // A left-out canary's slot stands for a removed record.
            if canaries.is_some_and(|c| c.is_absent(i)) {
                absent += 1;
                continue;
            }
            // A canary slot: its canary's gradient, clipped by the same
            // policy; its placeholder input is never run.
            if let Some(sq) = canaries.and_then(|c| c.group_sq(i)) {
                let group_sq: Vec<Vec<f64>> = sq.into_iter().map(|v| vec![v]).collect();
                let norm = group_sq.iter().map(|g| g[0]).sum::<f64>().sqrt();
                norms.push((norm as f32).min(f32::MAX));
                let factors = self.factors_of(&group_sq, i)?;
                canary_factors.insert(i, factors.into_iter().map(|f| f[0]).collect());
                continue;
            }
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
                seen: HashSet::new(),
            };
            model.visit(&mut collector);
            let per_param: Vec<(ParamId, Tensor<1>)> = collector.out;
            // Each gradient is scaled to [−1, 1] before squaring, so that
            // its square cannot overflow f32; the scale multiplies in f64.
            let mut group_sq = vec![vec![0.0f64]; n_groups];
            let mut scales = Vec::with_capacity(per_param.len());
            if !per_param.is_empty() {
                let mut parts: Vec<Tensor<1>> = Vec::with_capacity(2 * per_param.len());
                for (_, g) in &per_param {
                    let s = g.clone().abs().max();
                    let s = s.clone().mask_fill(s.equal_elem(0.0), 1.0);
                    parts.push((g.clone() / s.clone()).powi_scalar(2).sum());
                    parts.push(s);
                }
                let values: Vec<f32> = Tensor::cat(parts, 0).into_data().iter::<f32>().collect();
                for ((id, _), v) in per_param.iter().zip(values.chunks(2)) {
                    let group = group_of.get(id).copied().unwrap_or(0);
                    let scale = f64::from(v[1]);
                    group_sq[group][0] += f64::from(v[0]) * scale * scale;
                    scales.push(scale);
                }
            }
            let norm = group_sq.iter().map(|g| g[0]).sum::<f64>().sqrt();
            if !norm.is_finite() {
                dropped += 1;
                continue;
            }
            loss_sum += f64::from(value);
            norms.push((norm as f32).min(f32::MAX));
            let factors = self.factors_of(&group_sq, i)?;
            for ((id, g), scale) in per_param.into_iter().zip(scales) {
                let group = group_of.get(&id).copied().unwrap_or(0);
                let c = round_factor(factors[group][0], scale);
                add_to_sum(&mut sums, id, (g / scale as f32).mul_scalar(c));
            }
        }
        // A canary names a trainable parameter (checked): the model has a
        // device.
        if let (Some(c), Some(device)) = (canaries, model.devices().first())
            && !canary_factors.is_empty()
        {
            let factor = |r: usize, g: usize| canary_factors.get(&r).map_or(0.0, |f| f[g]);
            for (id, t) in c.clipped_sums(factor, device) {
                add_to_sum(&mut sums, id, t);
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
        (0..absent).for_each(|_| clipped.push_absent());
        Ok(clipped)
    }
}

impl GradientEngine {
    /// The clipping factors of example `i` of a chunk from its per-group
    /// squared norms (1 for the first example under the test-only
    /// unclipped-example fault).
    fn factors_of(&self, group_sq: &[Vec<f64>], i: usize) -> Result<Vec<Vec<f64>>> {
        let mut factors = self.clipping.exact_factors(group_sq, 1)?;
        if self.unclipped_first && i == 0 {
            factors.iter_mut().for_each(|g| g[0] = 1.0);
        }
        Ok(factors)
    }
}

/// Collects each trainable parameter's gradient, flattened, once: a
/// parameter held by several fields (tied weights) has one gradient (burn
/// sums its uses), which must enter the norm and the sum once.
struct GradCollector<'a> {
    grads: &'a Gradients,
    out: Vec<(ParamId, Tensor<1>)>,
    seen: HashSet<ParamId>,
}

impl ModuleVisitor for GradCollector<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        if let Some(g) = param.val().grad(self.grads) {
            let numel: usize = g.dims().iter().product();
            self.out.push((param.id, g.reshape([numel])));
        }
    }
}
