//! The DP step's noise: N(0, σ²) values for every parameter of the
//! benchmark MLP 784-512-256-10 (535 818 values in six parts), drawn from
//! a seeded `NoiseSource` — the ChaCha20 key schedule, the per-chunk
//! streams and the ziggurat sampler — on every available thread, and on
//! one background thread as the optimizer prefetches it. At small batches
//! this is most of the DP step's extra time (issue 31), so a slower sampler
//! shows here first.
//!
//! Run: `cargo bench -p dpsgd-benches --bench noise`

use criterion::{Criterion, criterion_group, criterion_main};
use dpsgd_core::NoiseSource;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::StandardNormal;
use std::hint::black_box;
use std::time::Duration;

/// The parameter tensors of the MLP, in the order the optimizer draws them.
const PARTS: [usize; 6] = [784 * 512, 512, 512 * 256, 256, 256 * 10, 10];

fn noise(c: &mut Criterion) {
    let mut group = c.benchmark_group("noise");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    let mut source = NoiseSource::seeded(1);
    group.bench_function("mlp_parts_all_threads", |b| {
        b.iter(|| black_box(source.gaussian_parts(&PARTS, 1.0)))
    });
    // The background path: one thread fills every part while the caller
    // waits (the optimizer's prefetch, without a step to overlap).
    group.bench_function("mlp_parts_prefetched", |b| {
        b.iter(|| {
            source.prefetch(&PARTS, 1.0);
            black_box(source.gaussian_parts(&PARTS, 1.0))
        })
    });
    // The reference: `rand_distr`'s f64 ziggurat, which the library used
    // before its own sampler (issue 31, fifth pass): one chunk's stream
    // (65 536 values, which `gaussian` fills on one thread) into a fresh
    // zeroed buffer, as the library's draw of the same size does.
    let n = 1 << 16;
    group.bench_function("rand_distr_one_chunk", |b| {
        b.iter(|| {
            let mut rng = ChaCha20Rng::seed_from_u64(1);
            let mut out = vec![0f32; n];
            for v in out.iter_mut() {
                *v = rng.sample::<f32, _>(StandardNormal);
            }
            black_box(out)
        })
    });
    group.bench_function("library_one_chunk", |b| {
        b.iter(|| black_box(source.gaussian(n, 1.0)))
    });
    group.finish();
}

criterion_group!(benches, noise);
criterion_main!(benches);
