//! Parameter averaging: an exponential moving average of the model's
//! parameters along training (Polyak & Juditsky 1992; under DP, De et al.
//! 2022 "Unlocking high-accuracy differentially private image
//! classification through scale"). The average of the private iterates is
//! post-processing: it costs no ε.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use std::collections::HashMap;

/// `θ̄ ← d_t·θ̄ + (1 − d_t)·θ` after every step, with the warm-up
/// `d_t = min(β, (1 + t)/(10 + t))` (t = updates so far) so that early,
/// poor iterates are forgotten quickly.
#[derive(Debug, Clone)]
pub struct Ema {
    decay: f64,
    updates: u64,
    average: HashMap<ParamId, Tensor<1>>,
}

impl Ema {
    /// An empty average with decay `β ∈ [0, 1)`.
    ///
    /// # Errors
    ///
    /// A decay outside `[0, 1)` (as text, for the caller's error).
    pub fn new(decay: f64) -> Result<Self, String> {
        if (0.0..1.0).contains(&decay) {
            Ok(Self {
                decay,
                updates: 0,
                average: HashMap::new(),
            })
        } else {
            Err(format!("must be in [0, 1), not {decay}"))
        }
    }

    /// The decay used at the next update.
    pub fn current_decay(&self) -> f64 {
        let t = self.updates as f64;
        self.decay.min((1.0 + t) / (10.0 + t))
    }

    /// Folds `model`'s current parameters into the average.
    pub fn update<M: Module>(&mut self, model: &M) {
        let d = self.current_decay();
        let mut visitor = Update {
            decay: d as f32,
            average: &mut self.average,
            accumulate: false,
        };
        model.visit(&mut visitor);
        self.updates += 1;
    }

    /// `model` with its parameters replaced by their averages (those never
    /// averaged are left as they are).
    pub fn apply<M: Module>(&self, model: M) -> M {
        with_parameters(model, &self.average)
    }
}

/// The uniform average of `models`' parameters, by parameter id: the models
/// must be copies of one model (same ids), as MIST's sub-models are. The
/// result has `models[0]`'s structure; `None` for no models.
pub(crate) fn mean_of<M: Module + Clone>(models: &[M]) -> Option<M> {
    let first = models.first()?;
    let mut sum = HashMap::new();
    for m in models {
        m.visit(&mut Update {
            decay: 1.0,
            average: &mut sum,
            accumulate: true,
        });
    }
    let scale = 1.0 / models.len() as f32;
    let mean = sum
        .into_iter()
        .map(|(id, t)| (id, t.mul_scalar(scale)))
        .collect();
    Some(with_parameters(first.clone(), &mean))
}

/// `model` with the parameters in `values` (flattened, by id) put in;
/// parameters not in `values` are left as they are.
fn with_parameters<M: Module>(model: M, values: &HashMap<ParamId, Tensor<1>>) -> M {
    model.map(&mut Apply { average: values })
}

/// Folds parameters into `average`: `d·avg + (1 − d)·θ`, or with
/// `accumulate` the plain sum `avg + θ`.
struct Update<'a> {
    decay: f32,
    average: &'a mut HashMap<ParamId, Tensor<1>>,
    accumulate: bool,
}

impl ModuleVisitor for Update<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // Off autodiff altogether: `detach` keeps a leaf's `require_grad`,
        // so on a parameter it would leave the average tracked, each
        // update chained onto the last in one ever-growing graph that burn
        // walked after every backward pass (twice as slow a 60-epoch
        // MNIST run, and gigabytes held).
        let value = param.val().inner();
        let numel = value.dims().iter().product::<usize>();
        let flat: Tensor<1> = value.reshape([numel]);
        let next = match self.average.remove(&param.id) {
            Some(sum) if self.accumulate => sum + flat,
            Some(avg) => avg.mul_scalar(self.decay) + flat.mul_scalar(1.0 - self.decay),
            None => flat,
        };
        self.average.insert(param.id, next);
    }
}

struct Apply<'a> {
    average: &'a HashMap<ParamId, Tensor<1>>,
}

impl ModuleMapper for Apply<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(avg) = self.average.get(&param.id) else {
            return param;
        };
        let avg = avg.clone();
        param.map(|t| {
            let dims = t.dims();
            let grad = t.is_require_grad();
            let v: Tensor<D> = avg.reshape(dims);
            // Back on autodiff where the parameter was, with its
            // gradient-checkpointing strategy (tensors of different
            // strategies cannot meet).
            let v = match t.gradient_checkpointing_strategy() {
                Some(strategy) => {
                    Tensor::from_inner(v).with_gradient_checkpointing_strategy(strategy)
                }
                None => v,
            };
            if grad { v.require_grad() } else { v }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Mlp;
    use burn::tensor::{Device, TensorData};
    use dpsgd_burn::backend::Backend;

    use dpsgd_core::parameter_values as values;

    fn filled(m: Mlp, v: f32) -> Mlp {
        struct Fill(f32);
        impl ModuleMapper for Fill {
            fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let v = self.0;
                p.map(|t| {
                    let dims = t.dims();
                    let n = dims.iter().product::<usize>();
                    Tensor::from_data(TensorData::new(vec![v; n], dims), &t.device())
                })
            }
        }
        m.map(&mut Fill(v))
    }

    #[test]
    fn should_average_with_warm_up() {
        for backend in Backend::enabled() {
            let device = backend.device().unwrap();
            let model = Mlp::new(&[3, 2], &device);
            let mut ema = Ema::new(0.5).unwrap();
            // d_0 = min(0.5, 1/10) = 0.1: the first update takes the value.
            ema.update(&filled(model.clone(), 1.0));
            assert!((ema.current_decay() - 2.0 / 11.0).abs() < 1e-12);
            // d_1 = 2/11: 2/11·1 + 9/11·3.
            ema.update(&filled(model.clone(), 3.0));
            let expected = 2.0 / 11.0 + 9.0 / 11.0 * 3.0;
            for v in values(&ema.apply(model.clone())) {
                assert!((f64::from(v) - expected).abs() < 1e-6, "{v} vs {expected}");
            }
            // Long runs settle at β.
            for _ in 0..100 {
                ema.update(&filled(model.clone(), 0.0));
            }
            assert_eq!(ema.current_decay(), 0.5);
        }
    }

    /// Marks every parameter as requiring gradients.
    struct RequireGrad;
    impl ModuleMapper for RequireGrad {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            p.map(|t| t.require_grad())
        }
    }

    /// Counts the float parameters that are autodiff leaves requiring
    /// gradients.
    struct Trainable(usize);
    impl ModuleVisitor for Trainable {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let t = p.val();
            self.0 += usize::from(t.is_autodiff() && t.is_require_grad());
        }
    }

    /// The average is data outside autodiff, whatever the model's
    /// parameters are: a tracked average chained every update onto the
    /// last (burn's `detach` keeps a leaf parameter's `require_grad`), a
    /// graph that grew with every step of training.
    #[test]
    fn should_keep_the_average_off_the_autodiff_graph() {
        for backend in Backend::enabled() {
            let device = backend.autodiff_device().unwrap();
            let model = Mlp::new(&[3, 2], &device);
            let mut ema = Ema::new(0.9).unwrap();
            for v in [1.0, 2.0, 3.0] {
                let m = filled(model.clone(), v).map(&mut RequireGrad);
                let mut trainable = Trainable(0);
                m.visit(&mut trainable);
                assert_eq!(trainable.0, 2, "{backend}: the test's model is not tracked");
                ema.update(&m);
            }
            assert_eq!(ema.average.len(), 2);
            for t in ema.average.values() {
                assert!(!t.is_tracked(), "{backend}: the average is tracked");
            }
            // Applied, the parameters keep their autodiff settings and
            // take the average: d = 1/10, 2/11, 3/12.
            let expected = (0.25 * (2.0 / 11.0 * 1.0 + 9.0 / 11.0 * 2.0) + 0.75 * 3.0) as f32;
            let applied = ema.apply(model.clone());
            let mut trainable = Trainable(0);
            applied.visit(&mut trainable);
            assert_eq!(trainable.0, 2);
            for v in values(&applied) {
                assert!((v - expected).abs() < 1e-5, "{v} vs {expected}");
            }
        }
    }

    /// On a device with gradient checkpointing, the averaged parameters
    /// keep the device's strategy: they meet the device's other tensors
    /// (burn refuses operands of different strategies).
    #[test]
    fn should_keep_the_gradient_checkpointing_strategy() {
        for backend in Backend::enabled() {
            let device = backend.autodiff_device().unwrap().gradient_checkpointing();
            let model = Mlp::new(&[3, 2], &device).map(&mut RequireGrad);
            let mut ema = Ema::new(0.9).unwrap();
            ema.update(&model);
            let averaged = ema.apply(model.clone());
            let mean = mean_of(&[model.clone(), model]).unwrap();
            struct Meet(Device, usize);
            impl ModuleVisitor for Meet {
                fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                    let t = p.val();
                    let ones = Tensor::<D>::ones(t.dims(), &self.0);
                    assert_eq!(
                        t.gradient_checkpointing_strategy(),
                        ones.gradient_checkpointing_strategy()
                    );
                    let _ = (t + ones).into_data();
                    self.1 += 1;
                }
            }
            for m in [averaged, mean] {
                let mut meet = Meet(device.clone(), 0);
                m.visit(&mut meet);
                assert_eq!(meet.1, 2, "{backend}");
            }
        }
    }

    /// MIST's average of sub-models on the autodiff device: parameters
    /// that still require gradients, holding the mean.
    #[test]
    fn mean_of_keeps_autodiff_parameters_trainable() {
        for backend in Backend::enabled() {
            let device = backend.autodiff_device().unwrap();
            let model = Mlp::new(&[3, 2], &device);
            let copies = [1.0, 2.0, 6.0].map(|v| filled(model.clone(), v).map(&mut RequireGrad));
            let mean = mean_of(&copies).unwrap();
            let mut trainable = Trainable(0);
            mean.visit(&mut trainable);
            assert_eq!(trainable.0, 2, "{backend}");
            for v in values(&mean) {
                assert!((v - 3.0).abs() < 1e-6, "{v}");
            }
        }
    }

    #[test]
    fn mean_of_averages_copies_of_one_model() {
        for backend in Backend::enabled() {
            let device = backend.device().unwrap();
            let model = Mlp::new(&[3, 2], &device);
            let copies = [1.0, 2.0, 6.0].map(|v| filled(model.clone(), v));
            let mean = mean_of(&copies).unwrap();
            for v in values(&mean) {
                assert!((v - 3.0).abs() < 1e-6, "{v}");
            }
            assert!(mean_of::<Mlp>(&[]).is_none());
        }
    }

    #[test]
    fn should_refuse_decays_outside_the_unit_interval() {
        for d in [1.0, -0.1, f64::NAN, 2.0] {
            assert!(Ema::new(d).is_err(), "{d}");
        }
        assert!(Ema::new(0.0).is_ok());
    }
}
