//! Activations whose burn kernels are slow where the DP step runs.

use burn::tensor::{DType, Tensor, TensorData};

/// Below this many values the fast path's fixed costs (two uploads, three
/// element-wise operations) are not worth it.
const FAST_MIN: usize = 1 << 14;

/// GELU, `x Φ(x) = ½ x (1 + erf(x / √2))` (Hendrycks and Gimpel 2016,
/// "Gaussian Error Linear Units"): burn's `activation::gelu`, with the same
/// values (but for the sign of a zero) and the same gradients bit for bit,
/// and faster on the flex backend.
///
/// burn-flex evaluates GELU one value at a time on one thread, with libm's
/// `erff`, and again in the backward pass. Here, for an f32 tensor of at
/// least 2¹⁴ values on flex, the value `g(x)` and the derivative
/// `g'(x) = Φ(x) + x φ(x)` are computed once, on all cores, with the same
/// f32 formulas (libm's `erff` and `expf`), and the result is
/// `g(x̄) + g'(x̄) ⊙ (x − x̄)` with `x̄` the detached input: the value is
/// `g(x)` (`x − x̄` is zero; a `−0` may come out `+0`), and the backward
/// pass multiplies the output gradient by `g'(x)` as burn's does. On any other backend or
/// dtype, for a smaller tensor, or when a value is not finite, it is burn's
/// `gelu`.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// let x = Tensor::<1>::from_floats([-1.0, 0.0, 2.0], &Device::flex());
/// let y: Vec<f32> = dpsgd_burn::layers::gelu(x).into_data().iter::<f32>().collect();
/// assert!((y[0] + 0.158_655_25).abs() < 1e-6 && y[1] == 0.0);
/// assert!((y[2] - 1.954_500_0).abs() < 1e-6);
/// ```
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !crate::backend::is_flex(&x.device())
        || x.dtype() != DType::F32
        || x.shape().num_elements() < FAST_MIN
    {
        return burn::tensor::activation::gelu(x);
    }
    let device = x.device();
    let dims = x.dims();
    let data = x.clone().detach().into_data();
    let Ok(values) = data.as_slice::<f32>() else {
        return burn::tensor::activation::gelu(x);
    };
    let Some((value, slope)) = value_and_slope(values) else {
        return burn::tensor::activation::gelu(x);
    };
    let value = Tensor::<D>::from_data(TensorData::new(value, dims), &device);
    if !x.is_autodiff() {
        return value;
    }
    let slope = Tensor::<D>::from_data(TensorData::new(slope, dims), &device);
    let offset = x.clone() - x.detach();
    value + slope * offset
}

/// `g(x)` and `g'(x)` of every value, with burn-flex's f32 formulas, on
/// every core; `None` if a value is not finite.
fn value_and_slope(xs: &[f32]) -> Option<(Vec<f32>, Vec<f32>)> {
    let mut value = vec![0.0f32; xs.len()];
    let mut slope = vec![0.0f32; xs.len()];
    let threads = dpsgd_core::cores().min(xs.len().div_ceil(FAST_MIN)).max(1);
    let chunk = xs.len().div_ceil(threads);
    let finite = std::thread::scope(|s| {
        let runs: Vec<_> = xs
            .chunks(chunk)
            .zip(value.chunks_mut(chunk).zip(slope.chunks_mut(chunk)))
            .map(|(x, (v, d))| s.spawn(move || fill(x, v, d)))
            .collect();
        runs.into_iter()
            .all(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    });
    finite.then_some((value, slope))
}

/// [`value_and_slope`] of one chunk; whether every value was finite.
fn fill(xs: &[f32], value: &mut [f32], slope: &mut [f32]) -> bool {
    let sqrt2 = std::f32::consts::SQRT_2;
    let inv_sqrt_2pi = 1.0 / (2.0 * std::f32::consts::PI).sqrt();
    let mut finite = true;
    for ((&x, v), d) in xs.iter().zip(value).zip(slope) {
        finite &= x.is_finite();
        let erf = libm::erff(x / sqrt2);
        // burn-flex's `gelu` and `gelu_backward`, operation for operation.
        *v = 0.5 * x * (1.0 + erf);
        let cdf = 0.5 * (1.0 + erf);
        let pdf = inv_sqrt_2pi * (-0.5 * x * x).exp();
        *d = cdf + x * pdf;
    }
    finite
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    /// Values and gradients of `gelu` against burn's, through an
    /// operation before it (so the input is not a leaf) and a weighted sum
    /// after it (so the output gradient is not uniform).
    fn compare(len: usize, spread: f64) {
        let device = Device::flex().autodiff();
        let leaf = Tensor::<2>::random([2, len / 2], Distribution::Normal(0.0, spread), &device)
            .require_grad();
        let weights = Tensor::<2>::random([2, len / 2], Distribution::Normal(0.0, 1.0), &device);
        let run = |f: fn(Tensor<2>) -> Tensor<2>| {
            let y = f(leaf.clone() * 1.5);
            let grads = (y.clone() * weights.clone()).sum().backward();
            let dx: Vec<f32> = leaf
                .grad(&grads)
                .unwrap()
                .into_data()
                .iter::<f32>()
                .collect();
            let y: Vec<f32> = y.into_data().iter::<f32>().collect();
            (y, dx)
        };
        let (ours, burns) = (run(gelu), run(burn::tensor::activation::gelu));
        // Values equal (a zero may differ in sign: `g(x̄)` of −0 plus a
        // slope times +0), gradients bit for bit.
        let same_value = |a: &f32, b: &f32| a == b;
        let same_bits = |a: &f32, b: &f32| a.to_bits() == b.to_bits();
        for (what, a, b, same) in [
            (
                "value",
                &ours.0,
                &burns.0,
                &same_value as &dyn Fn(&f32, &f32) -> bool,
            ),
            ("gradient", &ours.1, &burns.1, &same_bits),
        ] {
            let first = a.iter().zip(b.iter()).position(|(a, b)| !same(a, b));
            assert_eq!(
                first.map(|i| (i, a[i], b[i])),
                None,
                "{what}s differ ({len} values)"
            );
        }
    }

    #[test]
    fn should_give_burns_values_and_gradients_bit_for_bit() {
        // The fast path (on both sides of the threads' split), and burn's
        // own below the threshold.
        compare(FAST_MIN * 4 + 2, 3.0);
        compare(FAST_MIN, 0.1);
        compare(FAST_MIN - 2, 3.0);
    }

    #[test]
    fn should_match_the_exact_gelu_and_its_derivative() {
        // g(x) = x Φ(x), g'(x) = Φ(x) + x φ(x), in f64 by statrs.
        use statrs::distribution::{Continuous, ContinuousCDF, Normal};
        let n = Normal::standard();
        let xs: Vec<f32> = (0..FAST_MIN)
            .map(|i| (i as f32 / FAST_MIN as f32 - 0.5) * 16.0)
            .collect();
        let (value, slope) = value_and_slope(&xs).unwrap();
        for ((&x, &v), &d) in xs.iter().zip(&value).zip(&slope) {
            let x64 = f64::from(x);
            let (g, dg) = (x64 * n.cdf(x64), n.cdf(x64) + x64 * n.pdf(x64));
            // f32 arithmetic: a few ulps of the larger of |x| and 1 (the
            // sum 1 + erf loses the small values' relative precision, as
            // burn's does).
            let tol = 4.0 * f64::from(f32::EPSILON) * x64.abs().max(1.0);
            assert!(
                (f64::from(v) - g).abs() <= tol,
                "g({x}) = {v}, expected {g}"
            );
            assert!(
                (f64::from(d) - dg).abs() <= tol,
                "g'({x}) = {d}, expected {dg}"
            );
        }
    }

    #[test]
    fn should_leave_non_finite_inputs_to_burn() {
        let device = Device::flex();
        let mut xs = vec![0.5f32; FAST_MIN * 2];
        xs[7] = f32::INFINITY;
        xs[9] = f32::NEG_INFINITY;
        xs[11] = f32::NAN;
        assert!(value_and_slope(&xs).is_none());
        let x = Tensor::<1>::from_data(TensorData::new(xs, [FAST_MIN * 2]), &device);
        let y: Vec<f32> = gelu(x).into_data().iter::<f32>().collect();
        assert_eq!(y[7], f32::INFINITY);
        assert!(y[11].is_nan());
        assert_eq!(
            y[0],
            0.5 * 0.5 * (1.0 + libm::erff(0.5 / std::f32::consts::SQRT_2))
        );
    }
}
