//! Choosing a burn backend at run time. Backends are Cargo features of this
//! crate: `flex` (default, burn's recommended CPU backend), `ndarray`,
//! `wgpu` (GPU; on a machine without one, a software Vulkan driver such as
//! lavapipe works) and `cuda` (burn's CubeCL CUDA backend, NVIDIA GPUs).

use burn::backend::DispatchDevice;
use burn::tensor::Device;
use std::fmt;
use std::str::FromStr;

/// A burn backend this library can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// burn-flex (CPU).
    Flex,
    /// burn-ndarray (CPU).
    Ndarray,
    /// burn-wgpu (GPU).
    Wgpu,
    /// burn-cuda (NVIDIA GPU, device 0).
    Cuda,
}

impl Backend {
    /// The backends compiled into this build.
    pub fn enabled() -> Vec<Backend> {
        let mut v = Vec::new();
        if cfg!(feature = "flex") {
            v.push(Backend::Flex);
        }
        if cfg!(feature = "ndarray") {
            v.push(Backend::Ndarray);
        }
        if cfg!(feature = "wgpu") {
            v.push(Backend::Wgpu);
        }
        if cfg!(feature = "cuda") {
            v.push(Backend::Cuda);
        }
        v
    }

    /// Its name (`flex`, `ndarray`, `wgpu`, `cuda`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Ndarray => "ndarray",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
        }
    }

    /// The device without autodiff (evaluation, non-private inference).
    ///
    /// # Errors
    ///
    /// When the backend's feature is not enabled in this build.
    pub fn device(self) -> Result<Device, String> {
        match self {
            #[cfg(feature = "flex")]
            Backend::Flex => Ok(Device::flex()),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            Backend::Ndarray => Ok(Device::ndarray()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::default())),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Ok(Device::cuda(0)),
            #[allow(unreachable_patterns)]
            other => Err(format!(
                "backend `{}` is not enabled in this build (enabled: {}); rebuild with `--features {}`",
                other.name(),
                Backend::enabled()
                    .iter()
                    .map(|b| b.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                other.name()
            )),
        }
    }

    /// The device with autodiff (training).
    ///
    /// # Errors
    ///
    /// As [`Backend::device`].
    pub fn autodiff_device(self) -> Result<Device, String> {
        self.device().map(Device::autodiff)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "flex" => Ok(Backend::Flex),
            "ndarray" => Ok(Backend::Ndarray),
            "wgpu" => Ok(Backend::Wgpu),
            "cuda" => Ok(Backend::Cuda),
            _ => Err(format!(
                "unknown backend `{s}` (expected flex, ndarray, wgpu or cuda)"
            )),
        }
    }
}

/// Whether `device` is burn-flex's (whose matrix products are plain f32
/// GEMM).
pub(crate) fn is_flex(device: &Device) -> bool {
    #[allow(unreachable_patterns)]
    match device.clone().inner().as_dispatch() {
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => true,
        _ => false,
    }
}

/// Whether `device` computes in host memory (a CPU backend: flex,
/// ndarray; both multiply and add in plain f32).
pub(crate) fn is_host(device: &Device) -> bool {
    #[allow(unreachable_patterns)]
    match device.clone().inner().as_dispatch() {
        #[cfg(feature = "ndarray")]
        DispatchDevice::NdArray(_) => true,
        _ => is_flex(device),
    }
}

/// Whether `device`'s matrix products multiply and add in plain f32 (each
/// operation rounded to nearest; subnormals may be flushed): the CPU
/// backends, and a wgpu device without matrix-multiply hardware.
///
/// burn's CubeCL matrix products stage f32 operands as TF32 (10 stored
/// mantissa bits) only on a runtime that registers the TF32 type
/// (`cubek-matmul`'s `adjust_dtypes`, cubecl 0.11: CUDA from compute
/// capability 8.0), and use matrix-multiply instructions only where the
/// device reports them (cooperative, manual or cube-level MMA). The wgpu
/// runtime registers no TF32; on burn's `wgpu` feature (the WGSL compiler)
/// it reports no MMA either, and its kernels multiply and add with WGSL's
/// correctly rounded f32 operations. A wgpu device that reports MMA (the
/// SPIR-V or MSL compiler, which burn's `vulkan` or `metal` feature
/// selects, possibly through another crate's dependency) computes f32
/// products in hardware of unstated precision, and any other device (CUDA,
/// or a runtime not listed) may round a product's inputs to TF32: both
/// get the TF32 model.
pub(crate) fn plain_f32_products(device: &Device) -> bool {
    #[allow(unreachable_patterns)]
    match device.clone().inner().as_dispatch() {
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        DispatchDevice::Cube(cube) => {
            cube.runtime() == burn::backend::RuntimeId::Wgpu && {
                let client = cube.client();
                let matmul = &client.properties().features.matmul;
                matmul.cmma.is_empty() && matmul.mma.is_empty() && matmul.cube_mma.is_empty()
            }
        }
        _ => is_host(device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Gram norms' error bound treats every enabled backend's products
    /// as plain f32 but CUDA's (TF32 possible), with or without autodiff
    /// (wgpu as this workspace builds it: burn's `wgpu` feature, whose WGSL
    /// compiler reports no matrix-multiply hardware).
    #[test]
    fn should_treat_only_cuda_products_as_possibly_tf32() {
        for backend in Backend::enabled() {
            let device = backend.device().expect("enabled backend");
            let plain = backend != Backend::Cuda;
            assert_eq!(plain_f32_products(&device), plain, "{backend}");
            assert_eq!(
                plain_f32_products(&device.autodiff()),
                plain,
                "{backend} with autodiff"
            );
        }
    }
}
