//! ε of a typical DP-SGD run (q = 256/60000, σ = 1.1, δ = 1e-5) by RDP and by
//! PLD: the figures docs/benchmarks.md compares with dp-accounting.
//!
//! Run: `cargo bench -p dpsgd-benches --bench accountant`

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dpsgd_accountant::{pld, rdp};
use std::hint::black_box;
use std::time::Duration;

const Q: f64 = 256.0 / 60000.0;
const SIGMA: f64 = 1.1;
const DELTA: f64 = 1e-5;

fn accountant(c: &mut Criterion) {
    let mut group = c.benchmark_group("epsilon");
    group.measurement_time(Duration::from_secs(5));
    for steps in [14_062u64, 100_000] {
        group.bench_with_input(BenchmarkId::new("rdp", steps), &steps, |b, &t| {
            b.iter(|| rdp::epsilon(black_box(Q), black_box(SIGMA), t, DELTA).map(|(e, _)| e))
        });
        group.bench_with_input(BenchmarkId::new("pld", steps), &steps, |b, &t| {
            b.iter(|| pld::epsilon(black_box(Q), black_box(SIGMA), t, DELTA))
        });
    }
    group.finish();
}

criterion_group!(benches, accountant);
criterion_main!(benches);
