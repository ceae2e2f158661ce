//! User-level DP-SGD: the engine's clipped sum of user contributions
//! against a naive per-user loop, the sampler's user-level rate, ε at user
//! level, and the refusals.

mod common;

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::*;
use dpsgd_burn::layers::{DpLinear, DpLinearConfig};
use dpsgd_burn::users::choose_records;
use dpsgd_burn::{
    Augmented, DpSgdConfig, EngineMode, GradientEngine, PoissonSampler, PrivacyUnit, UserIndex,
};
use dpsgd_core::{Clipping, trainable_params};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::HashMap;

#[derive(Module, Debug)]
struct Mlp {
    fc1: DpLinear,
    fc2: DpLinear,
}

impl Mlp {
    fn new(device: &Device) -> Self {
        Self {
            fc1: DpLinearConfig::new(4, 6).init(device),
            fc2: DpLinearConfig::new(6, 3).init(device),
        }
    }

    /// Per-row cross-entropy.
    fn losses(&self, x: Tensor<2>, y: Tensor<1, Int>) -> Tensor<1> {
        let logits = self.fc2.forward(relu(self.fc1.forward(x)));
        dpsgd_burn::loss::cross_entropy_per_example(logits, y)
    }
}

/// Deterministic features of `records` records (no RNG in the values).
fn records(n: usize) -> (Vec<f32>, Vec<i64>) {
    let x = (0..n * 4)
        .map(|i| ((i as f32 * 0.7548 + 0.3) * 1.618).sin() * 2.0)
        .collect();
    let y = (0..n).map(|i| (i * 7 % 3) as i64).collect();
    (x, y)
}

/// The rows of `rows` as tensors.
fn gather(x: &[f32], y: &[i64], rows: &[usize], device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let xs: Vec<f32> = rows
        .iter()
        .flat_map(|&r| x[r * 4..r * 4 + 4].to_vec())
        .collect();
    let ys: Vec<i64> = rows.iter().map(|&r| y[r]).collect();
    (
        Tensor::from_data(TensorData::new(xs, [rows.len(), 4]), device),
        Tensor::from_data(TensorData::new(ys, [rows.len()]), device),
    )
}

/// A user batch: `slots` rows per user, with their weights.
type UserRows = Augmented<(Tensor<2>, Tensor<1, Int>, Tensor<1>)>;

/// Each user's loss: Σ weight·loss over the user's rows.
fn user_loss(m: &Mlp, b: &UserRows) -> Tensor<1> {
    let (x, y, w) = b.rows.clone();
    let per_row = m.losses(x, y) * w;
    let n = per_row.dims()[0] / b.k;
    per_row.reshape([n, b.k]).sum_dim(1).reshape([n])
}

/// The naive per-user loop: for each user, the gradient of the mean loss
/// over their chosen records (a forward of those records alone, no
/// fillers), clipped to C, summed.
fn naive_user_sum(
    model: &Mlp,
    x: &[f32],
    y: &[i64],
    chosen: &[Vec<usize>],
    c: f64,
    device: &Device,
) -> HashMap<burn::module::ParamId, Vec<f64>> {
    let per_user: Vec<_> = chosen
        .iter()
        .map(|rows| {
            let (xs, ys) = gather(x, y, rows, device);
            let batch = Augmented {
                rows: (xs, ys),
                k: rows.len(),
            };
            naive_per_example(model, &batch, |m: &Mlp, b: &Augmented<_>| {
                m.losses(b.rows.0.clone(), b.rows.1.clone())
                    .mean()
                    .reshape([1])
            })
            .remove(0)
        })
        .collect();
    naive_clipped_sum(&per_user, c)
}

/// User ids: user u owns u+1 records (1..=6), interleaved in the file.
fn user_ids() -> Vec<u64> {
    let mut ids = Vec::new();
    for round in 0..6u64 {
        for u in round..6 {
            ids.push(u * 11 + 5);
        }
    }
    ids
}

#[test]
fn should_clip_each_users_mean_gradient_like_the_naive_per_user_loop() {
    for (backend, device) in devices() {
        let model = Mlp::new(&device);
        let ids = user_ids();
        let index = UserIndex::from_ids(&ids).unwrap();
        assert_eq!(index.num_users(), 6);
        let (x, y) = records(ids.len());
        for k in [1, 3, 6] {
            let mut rng = ChaCha20Rng::seed_from_u64(k as u64);
            let users: Vec<usize> = (0..6).collect();
            let plan = choose_records(&index, &users, k, &mut rng);
            let chosen: Vec<Vec<usize>> = (0..6)
                .map(|u| {
                    plan.rows[u * k..(u + 1) * k]
                        .iter()
                        .zip(&plan.weights[u * k..(u + 1) * k])
                        .filter(|(_, w)| **w > 0.0)
                        .map(|(r, _)| *r)
                        .collect()
                })
                .collect();
            for (u, rows) in chosen.iter().enumerate() {
                assert_eq!(
                    rows.len(),
                    (u + 1).min(k),
                    "user {u} contributes min(n_u, K)"
                );
                assert!(rows.iter().all(|r| index.records_of(u).contains(r)));
            }
            let (xs, ys) = gather(&x, &y, &plan.rows, &device);
            let w = Tensor::from_data(
                TensorData::new(plan.weights.clone(), [plan.rows.len()]),
                &device,
            );
            let batch = Augmented {
                rows: (xs, ys, w),
                k,
            };
            for c in [0.05, 0.5, 50.0] {
                let expected = naive_user_sum(&model, &x, &y, &chosen, c, &device);
                for mode in [EngineMode::Auto, EngineMode::FallbackOnly] {
                    let mut engine =
                        GradientEngine::new(Clipping::flat(c).unwrap()).with_mode(mode);
                    let got = engine.clipped_gradients(&model, &batch, user_loss).unwrap();
                    assert_eq!(got.per_example_norms().len(), 6, "one norm per user");
                    for p in trainable_params(&model) {
                        let actual = to_vec(got.sum(&p.id).unwrap());
                        let want = &expected[&p.id];
                        let scale = want.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-3);
                        let err = dpsgd_burn::reference::distance(&actual, want);
                        assert!(
                            err <= 1e-4 * scale,
                            "{backend} K={k} C={c} {mode:?}: error {err} against {scale}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn should_sample_users_at_the_user_level_rate() {
    // 200 users owning 1–10 records each (1100 records); 32 expected users
    // a batch: q = 32/200 = 0.16, whatever the records. Over 1000 steps
    // each user's count is Binomial(1000, 0.16) (sd 11.6), the total
    // Binomial(2e5, 0.16) (sd 164); 5-sd bands.
    let ids: Vec<u64> = (0..200u64)
        .flat_map(|u| std::iter::repeat_n(u, (u % 10 + 1) as usize))
        .collect();
    let index = UserIndex::from_ids(&ids).unwrap();
    let sampler = PoissonSampler::new(index.num_users(), 32).unwrap();
    assert!((sampler.sample_rate() - 0.16).abs() < 1e-12);
    let mut engine = DpSgdConfig::new(1.0)
        .with_noise_multiplier(1.0)
        .with_seed(3)
        .with_privacy_unit(PrivacyUnit::User {
            max_records_per_user: 4,
        })
        .init(burn::optim::SgdConfig::new().init(), sampler)
        .unwrap();
    let mut counts = vec![0u32; 200];
    let mut total = 0usize;
    for _ in 0..1000 {
        let b = engine.sample_users(&index).unwrap();
        assert_eq!(b.rows.len(), b.len() * 4);
        for (slot, &u) in b.users.iter().enumerate() {
            counts[u] += 1;
            let own = index.records_of(u);
            let rows = &b.rows[slot * 4..slot * 4 + 4];
            assert!(
                rows.iter().all(|r| own.contains(r)),
                "only the user's own records"
            );
            let real = b.weights[slot * 4..slot * 4 + 4]
                .iter()
                .filter(|&&w| w > 0.0)
                .count();
            assert_eq!(real, own.len().min(4));
        }
        total += b.len();
    }
    assert!((total as f64 - 32_000.0).abs() < 5.0 * 164.0, "{total}");
    assert!(
        counts
            .iter()
            .all(|&c| (f64::from(c) - 160.0).abs() < 6.0 * 11.6)
    );
    // Heavy and light users are sampled alike.
    let light: u32 = (0..200).filter(|u| u % 10 == 0).map(|u| counts[u]).sum();
    let heavy: u32 = (0..200).filter(|u| u % 10 == 9).map(|u| counts[u]).sum();
    assert!((f64::from(light) - f64::from(heavy)).abs() < 5.0 * (2.0 * 20.0 * 134.4f64).sqrt());
}

#[test]
fn should_account_users_as_the_record_level_accountant_at_the_user_rate() {
    // 500 users, 25 a batch: q = 0.05. The user-level engine's ε over 400
    // steps is the record-level engine's at the same q (here over 10 000
    // records at 500 a batch: same q), for both accountants and a target.
    let user = PrivacyUnit::User {
        max_records_per_user: 8,
    };
    for accountant in [
        dpsgd_accountant::AccountantKind::Rdp,
        dpsgd_accountant::AccountantKind::Pld,
    ] {
        let users = PoissonSampler::new(500, 25).unwrap();
        let records = PoissonSampler::new(10_000, 500).unwrap();
        assert_eq!(users.sample_rate(), records.sample_rate());
        let at = |sampler, unit| {
            DpSgdConfig::new(1.0)
                .with_noise_multiplier(1.1)
                .with_delta(1e-5)
                .with_accountant(accountant)
                .with_privacy_unit(unit)
                .init(burn::optim::SgdConfig::new().init(), sampler)
                .unwrap()
        };
        let u = at(users, user);
        let r = at(records, PrivacyUnit::Record);
        let (eu, er) = (u.epsilon_over(400).unwrap(), r.epsilon_over(400).unwrap());
        assert!(eu > 0.5 && (eu - er).abs() <= 1e-12 * er, "{eu} vs {er}");
        let report = u.report_over(400).unwrap();
        assert_eq!(report.privacy_unit, "user");
        assert_eq!(report.users, Some(500));
        assert_eq!(report.dataset_size, 500);
        assert_eq!(report.max_records_per_user, Some(8));
        let report = r.report_over(400).unwrap();
        assert_eq!(
            (
                report.privacy_unit.as_str(),
                report.users,
                report.max_records_per_user
            ),
            ("record", None, None)
        );
        // A target: the same σ is calibrated at the same q.
        let target = |sampler, unit| {
            DpSgdConfig::new(1.0)
                .with_target_epsilon(2.0, 1e-5, 10)
                .with_accountant(accountant)
                .with_privacy_unit(unit)
                .init(burn::optim::SgdConfig::new().init(), sampler)
                .unwrap()
                .noise_multiplier()
        };
        assert_eq!(target(users, user), target(records, PrivacyUnit::Record));
    }
}

#[test]
fn should_refuse_what_does_not_combine() {
    let sampler = PoissonSampler::new(100, 10).unwrap();
    let err = DpSgdConfig::new(1.0)
        .with_noise_multiplier(1.0)
        .with_privacy_unit(PrivacyUnit::User {
            max_records_per_user: 0,
        })
        .init(burn::optim::SgdConfig::new().init(), sampler)
        .err()
        .expect("K = 0 refused");
    assert!(err.to_string().contains("max_records_per_user"), "{err}");
    // δ is compared with 1/U, U the number of users.
    let err = DpSgdConfig::new(1.0)
        .with_noise_multiplier(1.0)
        .with_delta(0.02)
        .with_privacy_unit(PrivacyUnit::User {
            max_records_per_user: 2,
        })
        .init(burn::optim::SgdConfig::new().init(), sampler)
        .err()
        .expect("δ ≥ 1/U refused");
    assert!(err.to_string().contains("1/U"), "{err}");
    // A record-level engine does not sample users; a user-level one needs
    // the sampler's number of users.
    let mut record = DpSgdConfig::new(1.0)
        .with_noise_multiplier(1.0)
        .init(burn::optim::SgdConfig::new().init(), sampler)
        .unwrap();
    let index = UserIndex::from_ids(&(0..100u64).collect::<Vec<_>>()).unwrap();
    assert!(record.sample_users(&index).is_err());
    let mut user = DpSgdConfig::new(1.0)
        .with_noise_multiplier(1.0)
        .with_privacy_unit(PrivacyUnit::User {
            max_records_per_user: 2,
        })
        .init(burn::optim::SgdConfig::new().init(), sampler)
        .unwrap();
    let other = UserIndex::from_ids(&(0..99u64).collect::<Vec<_>>()).unwrap();
    let err = user.sample_users(&other).expect_err("wrong U refused");
    assert!(err.to_string().contains("100 users"), "{err}");
    assert!(user.sample_users(&index).is_ok());
}
