//! Invariants of the accountants, checked with proptest, and error handling.

use dpsgd_accountant::pld::{ComposedPld, PldConfig};
use dpsgd_accountant::{
    Accountant, AccountantKind, AnyAccountant, Error, calibrate_noise, max_steps, rdp,
};
use proptest::prelude::*;

fn eps_rdp(q: f64, sigma: f64, steps: u64) -> f64 {
    rdp::epsilon(q, sigma, steps, 1e-5).unwrap().0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn should_grow_with_steps_and_rate_and_shrink_with_noise(
        q in 1e-4f64..0.5,
        sigma in 0.5f64..5.0,
        steps in 1u64..20_000,
    ) {
        let base = eps_rdp(q, sigma, steps);
        prop_assert!(base.is_finite() && base >= 0.0);
        prop_assert!(eps_rdp(q, sigma, steps * 2) >= base);
        prop_assert!(eps_rdp((q * 1.5).min(1.0), sigma, steps) >= base);
        prop_assert!(eps_rdp(q, sigma * 1.2, steps) <= base);
    }

    #[test]
    fn should_invert_epsilon_and_delta(
        q in 1e-3f64..0.2,
        sigma in 0.7f64..3.0,
        steps in 1u64..5_000,
    ) {
        let mut acc = AnyAccountant::new(AccountantKind::Rdp);
        acc.record(sigma, q, steps).unwrap();
        let eps = acc.epsilon(1e-5).unwrap();
        // δ at the reported ε is within the target (ε is rounded up).
        prop_assert!(acc.delta(eps).unwrap() <= 1e-5 * (1.0 + 1e-9));
    }

    #[test]
    fn should_never_exceed_the_calibration_target(
        q in 1e-3f64..0.1,
        steps in 10u64..10_000,
        target in 0.3f64..10.0,
    ) {
        let c = calibrate_noise(AccountantKind::Rdp, q, steps, 1e-5, target).unwrap();
        prop_assert!(c.epsilon <= target);
        prop_assert!(eps_rdp(q, c.noise_multiplier, steps) <= target);
        // ... and is the smallest such σ, to the stated resolution.
        prop_assert!(eps_rdp(q, c.noise_multiplier * (1.0 - 1e-6), steps) > target);
    }

    #[test]
    fn should_find_the_largest_number_of_steps(
        q in 1e-3f64..0.1,
        sigma in 0.6f64..3.0,
        target in 0.5f64..8.0,
    ) {
        let t = max_steps(AccountantKind::Rdp, q, sigma, 1e-5, target).unwrap();
        if t > 0 {
            prop_assert!(eps_rdp(q, sigma, t) <= target);
        }
        prop_assert!(eps_rdp(q, sigma, t + 1) > target);
    }
}

proptest! {
    // PLD compositions cost milliseconds each: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn should_keep_pld_monotone_and_below_rdp(
        q in 1e-3f64..0.05,
        sigma in 0.8f64..2.0,
        steps in 10u64..2_000,
    ) {
        let cfg = PldConfig::default();
        let eps = |q, s, t| ComposedPld::subsampled_gaussian(q, s, t, &cfg).unwrap().epsilon(1e-5).unwrap();
        let base = eps(q, sigma, steps);
        prop_assert!(eps(q, sigma, steps * 2) >= base);
        prop_assert!(eps(q * 1.5, sigma, steps) >= base);
        prop_assert!(eps(q, sigma * 1.2, steps) <= base);
        prop_assert!(base <= eps_rdp(q, sigma, steps) * (1.0 + 1e-9));
    }
}

#[test]
fn should_calibrate_pld_below_target_and_below_rdp_noise() {
    let q = 256.0 / 60000.0;
    let pld = calibrate_noise(AccountantKind::Pld, q, 14062, 1e-5, 3.0).unwrap();
    let rdp = calibrate_noise(AccountantKind::Rdp, q, 14062, 1e-5, 3.0).unwrap();
    assert!(pld.epsilon <= 3.0 && rdp.epsilon <= 3.0);
    assert!(pld.noise_multiplier < rdp.noise_multiplier);
    let again = dpsgd_accountant::pld::epsilon(q, pld.noise_multiplier, 14062, 1e-5).unwrap();
    assert!(again <= 3.0);
    let t = max_steps(AccountantKind::Pld, q, 1.1, 1e-5, 2.382).unwrap();
    // dp-accounting: ε(14062 steps) = 2.38169 (fixtures/pld.csv).
    assert!((14_062..14_200).contains(&t), "{t}");
    let eps = |t| dpsgd_accountant::pld::epsilon(q, 1.1, t, 1e-5).unwrap();
    assert!(eps(t) <= 2.382 && eps(t + 1) > 2.382);
}

#[test]
fn should_compose_segments_with_changing_noise_and_rate() {
    // Two segments must equal one when they are the same mechanism, and sit
    // between the single-mechanism runs otherwise.
    for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
        let mut split = AnyAccountant::new(kind);
        split.record(1.1, 0.01, 600).unwrap();
        split.record(1.1, 0.01, 400).unwrap();
        let mut whole = AnyAccountant::new(kind);
        whole.record(1.1, 0.01, 1000).unwrap();
        assert_eq!(split.history().segments().len(), 1);
        assert_eq!(split.epsilon(1e-5).unwrap(), whole.epsilon(1e-5).unwrap());

        let mut mixed = AnyAccountant::new(kind);
        mixed.record(1.1, 0.01, 500).unwrap();
        mixed.record(2.0, 0.02, 500).unwrap();
        let mut low = AnyAccountant::new(kind);
        low.record(2.0, 0.02, 1000).unwrap();
        let e = mixed.epsilon(1e-5).unwrap();
        let (a, b) = (low.epsilon(1e-5).unwrap(), whole.epsilon(1e-5).unwrap());
        assert!(
            e > a.min(b) && e < a.max(b),
            "{kind}: {e} not between {a} and {b}"
        );
        // Asking ahead does not record.
        let ahead = mixed
            .epsilon_after(dpsgd_accountant::Segment::new(2.0, 0.02, 10).unwrap(), 1e-5)
            .unwrap();
        assert!(ahead > e);
        assert_eq!(mixed.history().steps(), 1000);
    }
}

#[test]
fn should_round_trip_through_serde() {
    for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
        let mut acc = AnyAccountant::new(kind);
        acc.record(1.3, 0.004, 1000).unwrap();
        acc.record(0.9, 0.008, 10).unwrap();
        let json = serde_json::to_string(&acc).unwrap();
        let back: AnyAccountant = serde_json::from_str(&json).unwrap();
        assert_eq!(back, acc);
        assert_eq!(back.epsilon(1e-6).unwrap(), acc.epsilon(1e-6).unwrap());
        assert!(json.contains(&format!("\"kind\":\"{kind}\"")));
    }
}

#[test]
fn should_name_the_invalid_parameter() {
    let mut acc = AnyAccountant::new(AccountantKind::Rdp);
    let cases: [(Result<(), Error>, &str); 5] = [
        (acc.record(1.0, 0.0, 1), "sample_rate"),
        (acc.record(1.0, 1.5, 1), "sample_rate"),
        (acc.record(-1.0, 0.1, 1), "noise_multiplier"),
        (acc.record(f64::NAN, 0.1, 1), "noise_multiplier"),
        (acc.epsilon(0.0).map(|_| ()), "delta"),
    ];
    for (result, expected) in cases {
        match result {
            Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, expected),
            other => panic!("expected InvalidParameter({expected}), got {other:?}"),
        }
    }
    assert!(matches!(
        acc.delta(f64::INFINITY),
        Err(Error::InvalidParameter {
            name: "epsilon",
            ..
        })
    ));
    assert!(matches!(
        calibrate_noise(AccountantKind::Rdp, 0.01, 0, 1e-5, 1.0),
        Err(Error::InvalidParameter { name: "steps", .. })
    ));
    assert_eq!(acc.history().steps(), 0, "nothing recorded on error");
    // An empty history is perfectly private.
    assert_eq!(acc.epsilon(1e-5).unwrap(), 0.0);
}
