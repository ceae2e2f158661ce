//! **Gradient canaries** for white-box auditing (Nasr et al. 2023; Steinke,
//! Nasr & Jagielski 2023, §6): examples whose per-example gradient is a
//! vector the auditor chose, not the gradient of a record.
//!
//! A batch wrapped in [`WithCanaries`] says, for each of its examples,
//! whether it is a canary slot. The [`GradientEngine`](crate::GradientEngine)
//! computes every other example as usual; a canary slot's own loss is
//! masked out of the backward pass (its input is a placeholder) and its
//! gradient is replaced by its [`GradientCanary`] *before* clipping: the
//! canary's norm enters the per-example norms, its clipping factor comes
//! from the run's own policy (flat, per-layer, adaptive, automatic) and
//! the clipped vector joins the sum the noise is added to. Canary slots
//! travel with the batch through every path that splits or moves it —
//! virtual batches, data-parallel shards, the fallback's micro-batches,
//! the recomputation around non-finite examples — so a bug in any of them
//! reaches the canaries as it reaches real records.
//!
//! A slot whose canary is left out of the data set is a
//! [`GradientCanary::zero`]: it is sampled and counted in the batch like
//! any example, but stands for a removed record — no per-example norm (so
//! adaptive clipping's released count does not see it, as it would not
//! see a removed record), nothing in the sum (the add/remove neighbour,
//! with N fixed).
//!
//! This is an auditing instrument: the gradient of a canary slot is not a
//! function of its input, so a run with canaries trains on something other
//! than its data set.

use crate::batch::ExampleBatch;
use burn::module::ParamId;
use burn::tensor::Device;
use std::sync::Arc;

/// A per-example gradient chosen by the auditor: a sparse vector over the
/// model's trainable parameters (`(parameter, flat index, value)`
/// entries; an index repeated adds up). No entry: the zero gradient.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GradientCanary {
    entries: Vec<(ParamId, usize, f32)>,
}

impl GradientCanary {
    /// No gradient: a left-out canary's slot, which stands for a removed
    /// record — sampled and counted in the batch, in no per-example norm
    /// (so adaptive clipping's released count does not see it) and no sum.
    pub fn zero() -> Self {
        Self::default()
    }

    /// The Dirac gradient `value·e_index` on one coordinate of `param`.
    pub fn dirac(param: ParamId, index: usize, value: f32) -> Self {
        Self {
            entries: vec![(param, index, value)],
        }
    }

    /// A sparse gradient from its entries.
    pub fn from_entries(entries: Vec<(ParamId, usize, f32)>) -> Self {
        Self { entries }
    }

    /// The entries: `(parameter, flat index, value)`.
    pub fn entries(&self) -> &[(ParamId, usize, f32)] {
        &self.entries
    }
}

/// Which examples of a batch are canary slots, and their gradients.
#[derive(Debug, Clone, Default)]
pub struct CanaryRows {
    /// The canaries' gradients, shared by every slice of the batch.
    canaries: Arc<[GradientCanary]>,
    /// Per example: the canary it is, if any.
    rows: Vec<Option<usize>>,
}

impl CanaryRows {
    /// `rows[i]`: the index into `canaries` of example `i`'s gradient, or
    /// `None` for an ordinary example.
    ///
    /// # Panics
    ///
    /// When a row names a canary `canaries` does not have (a caller bug).
    pub fn new(canaries: Arc<[GradientCanary]>, rows: Vec<Option<usize>>) -> Self {
        assert!(
            rows.iter().flatten().all(|&c| c < canaries.len()),
            "a canary row names a canary that does not exist"
        );
        Self { canaries, rows }
    }

    /// No canary among `n` examples.
    pub fn none(n: usize) -> Self {
        Self {
            canaries: Arc::from(Vec::new()),
            rows: vec![None; n],
        }
    }

    /// Number of examples described.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no example is described.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Example `i`'s canary gradient, if it is a canary slot.
    pub fn canary(&self, i: usize) -> Option<&GradientCanary> {
        self.rows
            .get(i)
            .copied()
            .flatten()
            .map(|c| &self.canaries[c])
    }

    /// Whether any example is a canary slot.
    pub fn any(&self) -> bool {
        self.rows.iter().any(Option::is_some)
    }

    /// Examples `start..end`.
    pub fn slice(&self, start: usize, end: usize) -> Self {
        Self {
            canaries: Arc::clone(&self.canaries),
            rows: self.rows[start..end].to_vec(),
        }
    }
}

/// A batch with canary slots: the engine gives the loss function
/// [`WithCanaries::batch`] and treats the slots as described in the
/// [module documentation](self).
#[derive(Debug, Clone)]
pub struct WithCanaries<B> {
    /// The examples (a canary slot holds any valid placeholder input).
    pub batch: B,
    /// Which of them are canary slots.
    pub canaries: CanaryRows,
}

impl<B: ExampleBatch> WithCanaries<B> {
    /// `batch` with `canaries` describing its examples.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`](dpsgd_core::Error::Shape) when `canaries` does not
    /// describe exactly the batch's examples.
    pub fn new(batch: B, canaries: CanaryRows) -> dpsgd_core::Result<Self> {
        if canaries.len() != batch.num_examples() {
            return Err(dpsgd_core::Error::Shape(format!(
                "canary rows describe {} examples of a batch of {}",
                canaries.len(),
                batch.num_examples()
            )));
        }
        Ok(Self { batch, canaries })
    }

    /// `batch` without canary slots.
    pub fn plain(batch: B) -> Self {
        let n = batch.num_examples();
        Self {
            batch,
            canaries: CanaryRows::none(n),
        }
    }
}

impl<B: ExampleBatch> ExampleBatch for WithCanaries<B> {
    fn num_examples(&self) -> usize {
        self.batch.num_examples()
    }

    fn slice_examples(&self, start: usize, end: usize) -> Self {
        Self {
            batch: self.batch.slice_examples(start, end),
            canaries: self.canaries.slice(start, end),
        }
    }

    fn to_device(&self, device: &Device) -> Self {
        Self {
            batch: self.batch.to_device(device),
            canaries: self.canaries.clone(),
        }
    }

    fn gradient_canaries(&self) -> Option<&CanaryRows> {
        self.canaries.any().then_some(&self.canaries)
    }
}

/// The engine's view of a batch's canary slots: each entry checked
/// against the model's trainable parameters, and the sizes it needs to
/// add the clipped canaries to the sum.
pub(crate) struct CanaryContext<'a> {
    rows: &'a CanaryRows,
    numel: std::collections::HashMap<ParamId, usize>,
    group_of: &'a std::collections::HashMap<ParamId, usize>,
    n_groups: usize,
}

impl<'a> CanaryContext<'a> {
    /// Checks every canary of `rows` against the trainable `params`
    /// (grouped by `group_of` into `n_groups` clipping groups).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`](dpsgd_core::Error::InvalidParameter)
    /// for an entry on a parameter the model does not train, an index
    /// past the parameter's size, or a value that is not finite.
    pub(crate) fn new(
        rows: &'a CanaryRows,
        params: &[dpsgd_core::ParamInfo],
        group_of: &'a std::collections::HashMap<ParamId, usize>,
        n_groups: usize,
    ) -> dpsgd_core::Result<Self> {
        let numel: std::collections::HashMap<ParamId, usize> = params
            .iter()
            .filter(|p| group_of.contains_key(&p.id))
            .map(|p| (p.id, p.numel()))
            .collect();
        for i in 0..rows.len() {
            for &(id, index, value) in rows.canary(i).map_or(&[][..], GradientCanary::entries) {
                let Some(&size) = numel.get(&id) else {
                    return Err(dpsgd_core::Error::invalid(
                        "gradient canary",
                        format!("{id}"),
                        "names a parameter the model does not train",
                    ));
                };
                if index >= size || !value.is_finite() {
                    return Err(dpsgd_core::Error::invalid(
                        "gradient canary",
                        format!("{id}[{index}] = {value}"),
                        "each entry must be a finite value inside its parameter",
                    ));
                }
            }
        }
        Ok(Self {
            rows,
            numel,
            group_of,
            n_groups,
        })
    }

    /// Whether example `i` is a canary slot.
    pub(crate) fn is_canary(&self, i: usize) -> bool {
        self.rows.canary(i).is_some()
    }

    /// Whether example `i` is the slot of a left-out canary
    /// ([`GradientCanary::zero`]): a removed record.
    pub(crate) fn is_absent(&self, i: usize) -> bool {
        self.rows.canary(i).is_some_and(|c| c.entries.is_empty())
    }

    /// Example `i`'s squared gradient norm per clipping group, if it is a
    /// canary slot (repeated indices add up before squaring).
    pub(crate) fn group_sq(&self, i: usize) -> Option<Vec<f64>> {
        let canary = self.rows.canary(i)?;
        let mut coords: std::collections::HashMap<(ParamId, usize), f64> =
            std::collections::HashMap::new();
        for &(id, index, value) in canary.entries() {
            *coords.entry((id, index)).or_default() += f64::from(value);
        }
        let mut sq = vec![0.0; self.n_groups];
        for ((id, _), v) in coords {
            sq[self.group_of[&id]] += v * v;
        }
        Some(sq)
    }

    /// The canary slots' clipped gradients, summed per parameter: slot `i`
    /// scaled by `factor(i, group)` (its clipping factor in that group).
    pub(crate) fn clipped_sums(
        &self,
        factor: impl Fn(usize, usize) -> f64,
        device: &Device,
    ) -> Vec<(ParamId, burn::tensor::Tensor<1>)> {
        let mut dense: std::collections::HashMap<ParamId, Vec<f32>> =
            std::collections::HashMap::new();
        for i in 0..self.rows.len() {
            let Some(canary) = self.rows.canary(i) else {
                continue;
            };
            for &(id, index, value) in canary.entries() {
                let c = factor(i, self.group_of[&id]);
                let values = dense
                    .entry(id)
                    .or_insert_with(|| vec![0.0; self.numel[&id]]);
                // Rounded toward zero, as every clipped contribution is: a
                // clipped canary never exceeds its budget.
                let clipped = dpsgd_core::round_factor(c, f64::from(value.abs()));
                values[index] += clipped.copysign(value);
            }
        }
        let mut sums: Vec<_> = dense
            .into_iter()
            .map(|(id, values)| {
                let n = values.len();
                (
                    id,
                    burn::tensor::Tensor::from_data(
                        burn::tensor::TensorData::new(values, [n]),
                        device,
                    ),
                )
            })
            .collect();
        // A fixed order: the sum's rounding does not depend on hashing.
        sums.sort_by_key(|(id, _)| id.val());
        sums
    }
}

/// The values of `grads` (one entry per trainable parameter of `model`)
/// at `coordinates`, in their order; 0 for a parameter without one.
pub(crate) fn read_coordinates<M: burn::module::Module>(
    model: &M,
    grads: &burn::optim::GradientsParams,
    coordinates: &[(ParamId, usize)],
) -> Vec<f32> {
    let ranks: std::collections::HashMap<ParamId, usize> = dpsgd_core::trainable_params(model)
        .into_iter()
        .map(|p| (p.id, p.shape.len()))
        .collect();
    let mut flat: std::collections::HashMap<ParamId, Option<Vec<f32>>> =
        std::collections::HashMap::new();
    coordinates
        .iter()
        .map(|&(id, index)| {
            let values = flat.entry(id).or_insert_with(|| {
                let rank = ranks.get(&id).copied().unwrap_or(0);
                flat_values(grads, id, rank)
            });
            values
                .as_ref()
                .and_then(|v| v.get(index).copied())
                .unwrap_or(0.0)
        })
        .collect()
}

/// A gradient of rank 1 to 6, flattened and read back.
fn flat_values(grads: &burn::optim::GradientsParams, id: ParamId, rank: usize) -> Option<Vec<f32>> {
    fn read<const D: usize>(grads: &burn::optim::GradientsParams, id: ParamId) -> Option<Vec<f32>> {
        grads
            .get::<D>(id)
            .map(|t| t.into_data().iter::<f32>().collect())
    }
    match rank {
        1 => read::<1>(grads, id),
        2 => read::<2>(grads, id),
        3 => read::<3>(grads, id),
        4 => read::<4>(grads, id),
        5 => read::<5>(grads, id),
        6 => read::<6>(grads, id),
        _ => None,
    }
}
