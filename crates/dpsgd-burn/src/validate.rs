//! Model validation before private training.

use burn::module::{Module, ModuleVisitor};
use dpsgd_core::{Error, Result};

/// Layers that mix examples within a batch, so that one example's gradient
/// depends on the others and per-example clipping bounds nothing.
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

/// Rejects models that cannot be trained with DP-SGD: batch normalisation
/// (in train mode it mixes examples). Dropout and every other per-example
/// layer is fine.
///
/// # Errors
///
/// [`Error::UnsupportedLayer`] naming the first offending layer's path.
pub fn validate_model<M: Module>(model: &M) -> Result<()> {
    let mut f = Finder::default();
    model.visit(&mut f);
    f.found.map_or(Ok(()), Err)
}
