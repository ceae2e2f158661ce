//! `dpsgd device`: what a backend computes on (for wgpu, the adapter its
//! driver reports, and whether it is a real GPU), with a product of two
//! matrices computed there and checked against the host.

use crate::flags::parse;
use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor, TensorData};
use dpsgd_burn::adapter::{DeviceReport, describe};
use dpsgd_burn::backend::Backend;
use serde_json::json;
use std::time::Instant;

/// Arguments of `dpsgd device`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Backend: one compiled into this build.
    #[arg(long, default_value = "flex", value_parser = parse::backend())]
    backend: Backend,
    /// Fail (exit 1) unless the backend runs on a real GPU: a CPU backend,
    /// a wgpu adapter that is a CPU, or a software driver (lavapipe,
    /// llvmpipe, SwiftShader, WARP) is refused. For scripts that must not
    /// record a CPU's timings as a GPU's.
    #[arg(long)]
    require_gpu: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Side of the square matrices of the smoke test.
const SMOKE: usize = 256;

/// Runs the command.
///
/// # Errors
///
/// The backend is not in the build, brings up no device, computes a wrong
/// product, or (with `--require-gpu`) is not a GPU.
pub fn run(a: &Args) -> Result<()> {
    let report = describe(a.backend).with_context(|| format!("backend {}", a.backend))?;
    let device = a.backend.device().map_err(anyhow::Error::msg)?;
    let (err, ms) = smoke(&device)?;
    if a.json {
        let mut out = serde_json::to_value(&report)?;
        out["smoke_matmul"] = json!({ "size": SMOKE, "relative_error": err, "ms": ms });
        println!("{out}");
    } else {
        println!(
            "{}: {} ({}, {}{}){}; a {SMOKE}×{SMOKE} product agrees with the host to {err:.1e} ({ms:.2} ms)",
            report.backend,
            report.name,
            report.device_type,
            report.api,
            if report.driver.is_empty() {
                String::new()
            } else {
                format!(", {}", report.driver)
            },
            if report.software {
                " — a software implementation, not a GPU"
            } else {
                ""
            }
        );
    }
    // f32 sums of 256 products of values in [-1, 1], against f64. A NaN
    // (a product that came back non-finite) fails too.
    if err.is_nan() || err > 1e-4 {
        bail!(
            "the device's {SMOKE}×{SMOKE} matrix product differs from the host's by {err:.2e} (relative): the device computes wrongly"
        );
    }
    if a.require_gpu {
        require_gpu(&report)?;
    }
    Ok(())
}

/// Refuses a report that is not a real GPU.
fn require_gpu(r: &DeviceReport) -> Result<()> {
    if r.device_type == "cpu" && !r.software && r.api == "host" {
        bail!(
            "--require-gpu: backend {} runs on the host CPU ({}); use --backend wgpu or cuda",
            r.backend,
            r.name
        );
    }
    if r.software {
        bail!(
            "--require-gpu: {} found only a software adapter, {} ({}): no GPU driver is visible (for Vulkan, VK_DRIVER_FILES / VK_ICD_FILENAMES name the driver's ICD file)",
            r.backend,
            r.name,
            r.device_type
        );
    }
    Ok(())
}

/// A `SMOKE`² matrix product on `device` against the same product in f64
/// on the host: the largest error relative to the largest |entry|, and the
/// device's time (including the read back).
fn smoke(device: &Device) -> Result<(f64, f64)> {
    let n = SMOKE;
    let a: Vec<f32> = (0..n * n).map(|i| ((i as f32) * 0.7548).sin()).collect();
    let b: Vec<f32> = (0..n * n)
        .map(|i| ((i as f32) * 0.2917 + 1.0).cos())
        .collect();
    let mut want = vec![0.0f64; n * n];
    for i in 0..n {
        for k in 0..n {
            let x = f64::from(a[i * n + k]);
            for j in 0..n {
                want[i * n + j] += x * f64::from(b[k * n + j]);
            }
        }
    }
    let ta = Tensor::<2>::from_data(TensorData::new(a, [n, n]), device);
    let tb = Tensor::<2>::from_data(TensorData::new(b, [n, n]), device);
    let t = Instant::now();
    let got: Vec<f32> = ta
        .matmul(tb)
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading the product back: {e:?}"))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    if got.len() != want.len() {
        bail!(
            "the device returned {} values for a {n}×{n} product",
            got.len()
        );
    }
    // A non-finite value is an infinite error (f64::max would skip a NaN).
    let err = got
        .iter()
        .zip(&want)
        .map(|(g, w)| {
            let d = (f64::from(*g) - w).abs();
            if d.is_finite() { d } else { f64::INFINITY }
        })
        .fold(0.0f64, f64::max)
        / scale;
    Ok((err, ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(device_type: &'static str, api: &str, software: bool) -> DeviceReport {
        DeviceReport {
            backend: "wgpu",
            name: "x".into(),
            device_type,
            api: api.into(),
            driver: String::new(),
            software,
        }
    }

    #[test]
    fn should_require_a_real_gpu() {
        assert!(require_gpu(&report("discrete-gpu", "vulkan", false)).is_ok());
        let host = require_gpu(&report("cpu", "host", false)).unwrap_err();
        assert!(host.to_string().contains("host CPU"), "{host}");
        let soft = require_gpu(&report("cpu", "vulkan", true)).unwrap_err();
        assert!(soft.to_string().contains("software adapter"), "{soft}");
    }

    #[test]
    fn should_compute_the_smoke_product_on_the_host_backend() {
        let (err, ms) = smoke(&Backend::Flex.device().unwrap()).unwrap();
        assert!(err < 1e-5, "{err}");
        assert!(ms >= 0.0);
    }
}
