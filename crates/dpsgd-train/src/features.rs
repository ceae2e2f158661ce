//! Features computed once, before training: the ScatterNet transform and
//! its per-example normalisation (no privacy cost: per example).

use crate::error::TrainError;
use dpsgd_data::Dataset;

/// The scattering transform (J = 2, L = 8) for `data`'s image size.
pub(crate) fn scattering_for(data: &Dataset) -> Result<dpsgd_data::Scattering, TrainError> {
    let Some([_, h, w]) = data.image_shape() else {
        return Err(TrainError::config(
            "features",
            "ScatterNet features need image data",
        ));
    };
    dpsgd_data::Scattering::new(h, w, 2, 8).map_err(|e| TrainError::config_from("features", e))
}

/// ScatterNet features of `data`: the scattering transform, then
/// per-example group normalisation in `groups` groups (both per example: no
/// privacy cost).
pub(crate) fn scatter_features(
    data: &Dataset,
    scattering: &dpsgd_data::Scattering,
    groups: usize,
) -> Result<Dataset, TrainError> {
    let mut out = dpsgd_data::scatter_dataset(data, scattering)
        .map_err(|e| TrainError::config_from("features", e))?;
    dpsgd_data::group_normalize(&mut out, groups)
        .map_err(|e| TrainError::config_from("features", e))?;
    Ok(out)
}
