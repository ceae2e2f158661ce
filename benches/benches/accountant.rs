//! ε of a typical DP-SGD run (q = 256/60000, σ = 1.1, δ = 1e-5) by RDP and by
//! PLD: the figures docs/benchmarks.md compares with dp-accounting.
//!
//! The `per_step` group is what a training loop pays per step: recording one
//! step and checking the budget against a limit computed once
//! (`max_additional_steps`), next to re-composing the history as the budget
//! check did before issue 9 (`epsilon_after`).
//!
//! Run: `cargo bench -p dpsgd-benches --bench accountant`

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dpsgd_accountant::{Accountant, AccountantKind, AnyAccountant, Segment, pld, rdp};
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

    let mut group = c.benchmark_group("per_step");
    group.measurement_time(Duration::from_secs(5));
    for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
        let mut acc = AnyAccountant::new(kind);
        acc.record(SIGMA, Q, 10_000).expect("valid");
        group.bench_function(BenchmarkId::new("limit_once", kind.name()), |b| {
            b.iter(|| acc.max_additional_steps(black_box(SIGMA), Q, DELTA, 3.0))
        });
        group.bench_function(BenchmarkId::new("epsilon_after", kind.name()), |b| {
            let one = Segment::new(SIGMA, Q, 1).expect("valid");
            b.iter(|| acc.epsilon_after(black_box(one), DELTA))
        });
    }
    group.bench_function("rdp_record_and_epsilon", |b| {
        let mut acc = AnyAccountant::new(AccountantKind::Rdp);
        b.iter(|| {
            acc.record(black_box(SIGMA), Q, 1).expect("valid");
            acc.epsilon(DELTA)
        })
    });
    group.finish();
}

criterion_group!(benches, accountant);
criterion_main!(benches);
