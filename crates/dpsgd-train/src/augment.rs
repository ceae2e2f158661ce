//! The augmented views of augmentation multiplicity (De et al. 2022): each
//! sampled image becomes `k` random translations of itself, whose mean
//! gradient is clipped as one per-example gradient
//! ([`dpsgd_burn::Augmented`]). Each view depends on its own record only
//! (and on randomness independent of the data), so the sensitivity stays C.

use burn::tensor::{Device, Int, Tensor, TensorData};
use dpsgd_burn::Augmented;
use dpsgd_data::Dataset;
use rand::Rng;

/// The largest translation for images of side `min_side`: one pixel per
/// 14 (2 for 28×28 MNIST), at least 1.
pub fn max_shift(min_side: usize) -> usize {
    (min_side / 14).max(1)
}

/// `k` views of each example of `indices` (image data), each translated by
/// a random `(dy, dx) ∈ [−s, s]²` with zeros shifted in, `s =`
/// [`max_shift`]; the views of one example are consecutive rows.
///
/// # Panics
///
/// On data without an image shape, or `k = 0` (checked by the caller).
pub fn shifted_views(
    data: &Dataset,
    indices: &[usize],
    k: usize,
    rng: &mut impl Rng,
    device: &Device,
) -> Augmented<(Tensor<4>, Tensor<1, Int>)> {
    assert!(k >= 1, "at least one view per example");
    let [c, h, w] = data.image_shape().expect("augmentation needs image data");
    let s = max_shift(h.min(w)) as i64;
    let size = c * h * w;
    let mut x = vec![0.0f32; indices.len() * k * size];
    let mut y = Vec::with_capacity(indices.len() * k);
    for (e, &i) in indices.iter().enumerate() {
        let image = data.example(i);
        for v in 0..k {
            let (dy, dx) = (rng.random_range(-s..=s), rng.random_range(-s..=s));
            let view = &mut x[(e * k + v) * size..(e * k + v + 1) * size];
            for ch in 0..c {
                for r in 0..h {
                    let src_r = r as i64 - dy;
                    if !(0..h as i64).contains(&src_r) {
                        continue;
                    }
                    for col in 0..w {
                        let src_c = col as i64 - dx;
                        if (0..w as i64).contains(&src_c) {
                            view[(ch * h + r) * w + col] =
                                image[(ch * h + src_r as usize) * w + src_c as usize];
                        }
                    }
                }
            }
            y.push(i64::from(data.labels()[i]));
        }
    }
    let rows = indices.len() * k;
    Augmented {
        rows: (
            Tensor::from_data(TensorData::new(x, [rows, c, h, w]), device),
            Tensor::from_data(TensorData::new(y, [rows]), device),
        ),
        k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn should_make_k_shifted_views_of_each_example() {
        // Two 4×4 images: a single bright pixel at (1, 2), and all ones.
        let mut pixels = vec![0.0f32; 16];
        pixels[4 + 2] = 1.0;
        pixels.extend(vec![1.0f32; 16]);
        let data = Dataset::new(pixels, vec![0, 1], 16, 2)
            .unwrap()
            .with_image_shape([1, 4, 4])
            .unwrap();
        let device = Device::flex();
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let views = shifted_views(&data, &[0, 1], 5, &mut rng, &device);
        assert_eq!(views.k, 5);
        assert_eq!(views.rows.0.dims(), [10, 1, 4, 4]);
        let labels: Vec<i64> = views.rows.1.into_data().iter::<i64>().collect();
        assert_eq!(labels, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
        let x: Vec<f32> = views.rows.0.into_data().iter::<f32>().collect();
        let mut moved = 0;
        for v in 0..5 {
            // The bright pixel moved by at most one (max_shift(4) = 1),
            // never lost: it is at most one pixel from the border.
            let view = &x[v * 16..(v + 1) * 16];
            let on: Vec<usize> = (0..16).filter(|&p| view[p] == 1.0).collect();
            assert_eq!(on.len(), 1, "view {v}: {view:?}");
            let (r, c) = (on[0] / 4, on[0] % 4);
            assert!(r.abs_diff(1) <= 1 && c.abs_diff(2) <= 1, "view {v}");
            moved += usize::from((r, c) != (1, 2));
            // The all-ones image keeps (4 − |dy|)(4 − |dx|) ones.
            let ones = x[(5 + v) * 16..(6 + v) * 16]
                .iter()
                .filter(|&&p| p == 1.0)
                .count();
            assert!([16, 12, 9].contains(&ones), "view {v}: {ones}");
        }
        assert!(moved > 0, "five random views, none moved");
        assert_eq!((max_shift(28), max_shift(8), max_shift(32)), (2, 1, 2));
    }
}
