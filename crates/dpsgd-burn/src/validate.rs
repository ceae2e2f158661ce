//! Model validation before private training.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use dpsgd_core::{Error, Result};

/// Layers that mix examples within a batch, so that one example's gradient
/// depends on the others and per-example clipping bounds nothing — those
/// known by name. Any other mixing (a batch statistic computed in the
/// forward pass, attention across the batch) is not seen here; the
/// engine's fast path measures it (`engine/independence.rs`).
const MIXING: [(&str, &str); 1] = [(
    "BatchNorm",
    "batch normalisation mixes the examples of a batch; use GroupNorm or LayerNorm \
     (dpsgd_burn::layers::DpGroupNormConfig / DpLayerNormConfig) instead",
)];

#[derive(Default)]
struct Finder {
    path: Vec<String>,
    found: Option<Error>,
}

impl ModuleVisitor for Finder {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_owned());
        // The container type is the struct that holds the field being entered.
        let ty = container_type
            .strip_prefix("Struct:")
            .unwrap_or(container_type);
        if self.found.is_none()
            && let Some((layer, suggestion)) = MIXING.iter().find(|(m, _)| *m == ty)
        {
            let owner = self.path[..self.path.len() - 1].join(".");
            self.found = Some(Error::UnsupportedLayer {
                path: if owner.is_empty() {
                    "<root>".into()
                } else {
                    owner
                },
                layer: (*layer).to_owned(),
                suggestion: (*suggestion).to_owned(),
            });
        }
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
}

/// Marks every float tensor as requiring gradients. Parameters keep what
/// the mapper returns; burn's `RunningState` (the buffer batch norm updates
/// in its forward pass) forces its value back to "no gradient", which is how
/// such state is told apart from a frozen parameter.
struct MarkAll;

impl ModuleMapper for MarkAll {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| if t.is_autodiff() { t.require_grad() } else { t })
    }
}

/// Finds float tensors that stayed without gradient after [`MarkAll`].
#[derive(Default)]
struct StateFinder {
    path: Vec<String>,
    container: Vec<String>,
    found: Option<(String, String)>,
}

impl ModuleVisitor for StateFinder {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_owned());
        self.container.push(container_type.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.container.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if self.found.is_none() && value.is_autodiff() && !value.is_require_grad() {
            let layer = self.container.last().map_or("<root>", |c| {
                c.strip_prefix("Struct:").unwrap_or(c.as_str())
            });
            self.found = Some((self.path.join("."), layer.to_owned()));
        }
    }
}

/// Rejects models that cannot be trained with DP-SGD:
///
/// * batch normalisation (in train mode it mixes examples), by name;
/// * any module with non-parameter state that its forward pass updates
///   (burn's `RunningState`, e.g. batch norm's running statistics): that
///   state averages raw examples, is saved with the model, and is not
///   privatised.
///
/// Dropout and every other per-example layer is fine; frozen parameters
/// are fine. The [`GradientEngine`](crate::GradientEngine) runs this check
/// on every call, so a model that skips it is still refused.
///
/// This check is by name only: a model that mixes examples by other means
/// (`y - y.mean_dim(0)`, attention across the batch) passes it. The
/// engine's fast path refuses such a model by its per-example independence
/// check (see [`GradientEngine::clipped_gradients`](crate::GradientEngine::clipped_gradients)),
/// except where examples are mixed before its first DP-aware layer.
///
/// # Errors
///
/// [`Error::UnsupportedLayer`] naming the first offending layer's path.
pub fn validate_model<M: Module>(model: &M) -> Result<()> {
    let mut f = Finder::default();
    model.visit(&mut f);
    if let Some(e) = f.found {
        return Err(e);
    }
    // State detection needs autodiff (the engine's requirement anyway):
    // on a plain device nothing is ever marked, so there is nothing to see.
    let mut state = StateFinder::default();
    model.clone().map(&mut MarkAll).visit(&mut state);
    match state.found {
        Some((path, layer)) => Err(Error::UnsupportedLayer {
            path: if path.is_empty() {
                "<root>".into()
            } else {
                path
            },
            layer,
            suggestion: "the module keeps non-parameter state that its forward pass updates \
                         (a running statistic averages raw examples outside DP-SGD's clipping and \
                         noise); compute it from parameters only, or drop it"
                .into(),
        }),
        None => Ok(()),
    }
}
