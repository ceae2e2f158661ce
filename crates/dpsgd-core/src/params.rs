//! Walking a burn module's trainable parameters: ids, shapes, paths and the
//! layers they belong to.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

/// One trainable float parameter of a module.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    /// Its id (the key of its gradient).
    pub id: ParamId,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Field names from the root, e.g. `["fc1", "weight"]`.
    pub path: Vec<String>,
    /// The struct types entered on the way, e.g. `["Struct:Net", "Struct:DpLinear"]`.
    pub containers: Vec<String>,
}

impl ParamInfo {
    /// Number of scalars.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The path joined with dots.
    pub fn name(&self) -> String {
        self.path.join(".")
    }

    /// The layer (module) that owns the parameter: its path without the
    /// parameter's own field name.
    pub fn layer(&self) -> String {
        self.path[..self.path.len().saturating_sub(1)].join(".")
    }
}

#[derive(Default)]
struct Collector {
    path: Vec<String>,
    containers: Vec<String>,
    params: Vec<ParamInfo>,
    /// The ids met so far: a parameter held by several fields (tied
    /// weights) is one parameter, listed once.
    seen: std::collections::HashSet<ParamId>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_owned());
        self.containers.push(container_type.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.containers.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if !is_trainable(&value) || !self.seen.insert(param.id) {
            return;
        }
        self.params.push(ParamInfo {
            id: param.id,
            shape: value.dims().to_vec(),
            path: self.path.clone(),
            containers: self.containers.clone(),
        });
    }
}

/// Whether a parameter's value is trained (not frozen): on an autodiff
/// device, it requires grad.
pub fn is_trainable<const D: usize>(value: &Tensor<D>) -> bool {
    value.is_require_grad() || !value.is_autodiff()
}

/// The trainable float parameters of `module`, in declaration order, each
/// once: a parameter held by several fields (tied weights, the same
/// [`ParamId`]) is listed at its first field only, so that its gradient is
/// counted once in a norm and its noise drawn once.
pub fn trainable_params<M: Module>(module: &M) -> Vec<ParamInfo> {
    let mut c = Collector::default();
    module.visit(&mut c);
    c.params
}

/// The values of every float parameter of `module` (frozen ones included),
/// in declaration order, one after the other: two models of one
/// architecture are the same model exactly when these are equal bit for
/// bit (a resumed run against an uninterrupted one, a checkpoint against
/// the model it claims to hold).
pub fn parameter_values<M: Module>(module: &M) -> Vec<f32> {
    struct Values(Vec<f32>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let data = param.val().into_data().convert::<f32>();
            self.0.extend(data.iter::<f32>());
        }
    }
    let mut values = Values(Vec::new());
    module.visit(&mut values);
    values.0
}

/// Groups parameters by the layer that owns them, in declaration order:
/// `groups[l]` holds indices into `params`. Per-layer clipping budgets are
/// given in this order.
pub fn layer_groups(params: &[ParamInfo]) -> Vec<Vec<usize>> {
    let mut names: Vec<String> = Vec::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let layer = p.layer();
        match names.iter().position(|n| *n == layer) {
            Some(l) => groups[l].push(i),
            None => {
                names.push(layer);
                groups.push(vec![i]);
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[derive(Module, Debug)]
    struct Two {
        a: Param<Tensor<2>>,
        b: Param<Tensor<1>>,
    }

    #[test]
    fn parameter_values_are_every_float_parameter_in_declaration_order() {
        let device = Device::flex();
        let two = Two {
            a: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]),
                &device,
            )),
            // Frozen parameters count too: they are part of the model.
            b: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![-0.5f32, 7.0], [2]),
                &device,
            ))
            .set_require_grad(false),
        };
        assert_eq!(parameter_values(&two), vec![1.0, 2.0, 3.0, 4.0, -0.5, 7.0]);
    }
}
