//! What a backend computes on: for wgpu, the adapter its driver reports
//! (a real GPU, or a software rasteriser such as Mesa's lavapipe); for the
//! CPU backends, the host.
//!
//! A benchmark read off a software adapter measures a CPU pretending to be
//! a GPU. [`DeviceReport::software`] lets a script refuse that before it
//! records a single figure (`dpsgd device --require-gpu`,
//! `scripts/gpu-check`).
//!
//! ```
//! use dpsgd_burn::adapter::describe;
//! use dpsgd_burn::backend::Backend;
//!
//! # fn main() -> Result<(), dpsgd_burn::adapter::DescribeError> {
//! let report = describe(Backend::Flex)?;
//! assert_eq!(report.device_type, "cpu");
//! assert!(!report.software);
//! # Ok(()) }
//! ```

use crate::backend::Backend;
use serde::Serialize;

/// The device a backend runs on, as its driver describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceReport {
    /// The backend (`flex`, `ndarray`, `wgpu`, `cuda`).
    pub backend: &'static str,
    /// The adapter's name (`NVIDIA H200`, `llvmpipe (LLVM 15.0.6, 256
    /// bits)`), or the host for a CPU backend.
    pub name: String,
    /// `discrete-gpu`, `integrated-gpu`, `virtual-gpu`, `cpu` (a CPU
    /// backend, or a wgpu adapter that is a CPU) or `other`.
    pub device_type: &'static str,
    /// The graphics API wgpu reached the adapter through (`vulkan`,
    /// `metal`, `dx12`, `gl`), `host` for a CPU backend, `cuda` for CUDA.
    pub api: String,
    /// The driver's name and version, as far as the driver reports them.
    pub driver: String,
    /// A GPU backend running on a software implementation (a CPU adapter
    /// of wgpu, or a known software driver by name): its timings are not a
    /// GPU's.
    pub software: bool,
}

/// Why a backend's device could not be described.
#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    /// The backend's Cargo feature is not in this build.
    #[error("{0}")]
    NotEnabled(String),
    /// wgpu found no adapter it could bring up (no Vulkan loader or driver,
    /// for instance).
    #[cfg(feature = "wgpu")]
    #[error("wgpu could not bring up an adapter")]
    Wgpu(#[source] burn::backend::wgpu::WgpuInitError),
}

/// Names of software GPU implementations, lower case: a wgpu adapter whose
/// name contains one is not a GPU even when it reports another type.
const SOFTWARE_DRIVERS: [&str; 6] = [
    "llvmpipe",
    "lavapipe",
    "softpipe",
    "swiftshader",
    "microsoft basic render",
    "warp",
];

/// Whether an adapter with this type and name is a software implementation.
pub fn is_software(device_type: &str, name: &str) -> bool {
    let name = name.to_lowercase();
    device_type == "cpu"
        || SOFTWARE_DRIVERS.iter().any(|s| {
            // "warp" only as a word: a real adapter's name may contain it.
            if *s == "warp" {
                name.split(|c: char| !c.is_alphanumeric())
                    .any(|w| w == "warp")
            } else {
                name.contains(s)
            }
        })
}

/// Describes the device `backend` computes on. For wgpu this brings up
/// burn's default wgpu device (the adapter every later tensor on
/// `Backend::Wgpu` uses in this process) and reads its driver's
/// description; CUDA reports its ordinal only.
///
/// # Errors
///
/// [`DescribeError::NotEnabled`] when the backend is not in this build;
/// `DescribeError::Wgpu` (a build with the `wgpu` feature) when wgpu finds
/// no adapter.
pub fn describe(backend: Backend) -> Result<DeviceReport, DescribeError> {
    backend.device().map_err(DescribeError::NotEnabled)?;
    match backend {
        Backend::Flex | Backend::Ndarray => Ok(DeviceReport {
            backend: backend.name(),
            name: host_cpu(),
            device_type: "cpu",
            api: "host".into(),
            driver: String::new(),
            software: false,
        }),
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => wgpu_adapter(),
        _ => Ok(DeviceReport {
            backend: backend.name(),
            name: "CUDA device 0".into(),
            device_type: "discrete-gpu",
            api: "cuda".into(),
            driver: String::new(),
            software: false,
        }),
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_adapter() -> Result<DeviceReport, DescribeError> {
    use burn::backend::wgpu::graphics::AutoGraphicsApi;
    use burn::backend::wgpu::wgpu::DeviceType;
    use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, try_init_setup};
    let setup =
        try_init_setup::<AutoGraphicsApi>(&WgpuDevice::default(), RuntimeOptions::default())
            .map_err(DescribeError::Wgpu)?;
    let info = setup.adapter.get_info();
    let device_type = match info.device_type {
        DeviceType::DiscreteGpu => "discrete-gpu",
        DeviceType::IntegratedGpu => "integrated-gpu",
        DeviceType::VirtualGpu => "virtual-gpu",
        DeviceType::Cpu => "cpu",
        DeviceType::Other => "other",
    };
    let driver = format!("{} {}", info.driver, info.driver_info)
        .trim()
        .to_owned();
    Ok(DeviceReport {
        backend: "wgpu",
        software: is_software(device_type, &info.name),
        name: info.name,
        device_type,
        api: format!("{:?}", info.backend).to_lowercase(),
        driver,
    })
}

/// The host's CPU model (Linux), or the architecture.
fn host_cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|r| r.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_tell_software_adapters_from_gpus() {
        for (ty, name) in [
            ("cpu", "anything"),
            ("other", "llvmpipe (LLVM 15.0.6, 256 bits)"),
            ("integrated-gpu", "Lavapipe"),
            ("discrete-gpu", "SwiftShader Device (Subzero)"),
            ("other", "Microsoft Basic Render Driver"),
            ("other", "WARP"),
        ] {
            assert!(is_software(ty, name), "{ty} {name}");
        }
        for (ty, name) in [
            ("discrete-gpu", "NVIDIA H200"),
            ("discrete-gpu", "NVIDIA H100 80GB HBM3"),
            ("integrated-gpu", "Intel(R) Xe Graphics (TGL GT2)"),
            ("discrete-gpu", "AMD Radeon RX 7900 XTX (RADV NAVI31)"),
            ("discrete-gpu", "Warpspeed 9000"),
        ] {
            assert!(!is_software(ty, name), "{ty} {name}");
        }
    }

    #[test]
    fn should_describe_the_host_for_cpu_backends() {
        let r = describe(Backend::Flex).unwrap();
        assert_eq!(
            (r.backend, r.device_type, r.api.as_str()),
            ("flex", "cpu", "host")
        );
        assert!(!r.software);
        assert!(!r.name.is_empty());
    }

    #[test]
    fn should_refuse_a_backend_not_in_the_build() {
        let missing = [Backend::Ndarray, Backend::Wgpu, Backend::Cuda]
            .into_iter()
            .find(|b| !Backend::enabled().contains(b));
        if let Some(b) = missing {
            let e = describe(b).unwrap_err();
            assert!(matches!(e, DescribeError::NotEnabled(_)), "{e}");
            assert!(e.to_string().contains("not enabled"), "{e}");
        }
    }
}
