//! The audit at user level, on the embedded digits with synthetic users:
//! canary users (k records, one coin each) and the one-run bound over
//! them, user-level attack figures for every attack (at record level too),
//! the record-level claim judged at group privacy against canary users,
//! and white-box canaries refused at user level.

mod common;

use burn::tensor::Device;
use dpsgd_data::Dataset;
use dpsgd_train::audit::{Attack, AuditConfig, AuditReport, CanaryKind, audit};
use dpsgd_train::{ModelKind, Privacy, PrivacyUnit, TrainConfig, TrainError};

/// Digits with users (1–7 records each), split by user.
fn data() -> (Dataset, Dataset) {
    common::digits_with_users(0.3)
}

fn config(unit: PrivacyUnit) -> TrainConfig {
    TrainConfig {
        model: ModelKind::Logreg,
        epochs: 2,
        batch_size: 32,
        lr: 0.05,
        privacy: Privacy::TargetEpsilon(2.0),
        seed: Some(5),
        privacy_unit: unit,
        ..TrainConfig::default()
    }
}

fn audit_config(canaries: usize, records: Option<usize>) -> AuditConfig {
    AuditConfig {
        attacks: vec![Attack::Loss, Attack::Confidence],
        canaries,
        canary_records_per_user: records,
        bootstrap_resamples: 20,
        seed: 11,
        ..AuditConfig::default()
    }
}

fn run(cfg: &TrainConfig, data: &(Dataset, Dataset), a: &AuditConfig) -> AuditReport {
    audit(cfg, &data.0, &data.1, a, &Device::flex(), &|_| {})
        .unwrap()
        .report
}

/// Every attack reads users too: one entry per aggregate, over the
/// distinct users of each split.
fn assert_user_figures(report: &AuditReport, data: &(Dataset, Dataset)) {
    let users = (data.0.num_users().unwrap(), data.1.num_users().unwrap());
    // The heavy users, counted naively: the record count at the 80th
    // percentile of the population's users is the bar.
    let count = |d: &Dataset| {
        let mut c = std::collections::BTreeMap::<u64, usize>::new();
        for id in d.users().unwrap() {
            *c.entry(*id).or_default() += 1;
        }
        c
    };
    let (train_counts, test_counts) = (count(&data.0), count(&data.1));
    let mut all: Vec<usize> = train_counts
        .values()
        .chain(test_counts.values())
        .copied()
        .collect();
    all.sort_unstable();
    let bar = all[all.len() * 4 / 5];
    assert!(bar >= 2, "{bar}");
    let heavy =
        |c: &std::collections::BTreeMap<u64, usize>| c.values().filter(|&&n| n >= bar).count();
    let heavy_users = (heavy(&train_counts), heavy(&test_counts));
    assert!(!report.attacks.is_empty());
    for a in &report.attacks {
        let aggregates: Vec<(&str, usize)> = a
            .users
            .iter()
            .map(|u| (u.aggregate, u.min_records))
            .collect();
        assert_eq!(
            aggregates,
            [("mean", 1), ("max", 1), ("mean", bar), ("max", bar)],
            "{}",
            a.name
        );
        for u in &a.users {
            let expected = if u.min_records == 1 {
                users
            } else {
                heavy_users
            };
            assert_eq!(u.users, expected, "{} {}", a.name, u.aggregate);
            assert!((0.0..=1.0).contains(&u.auc));
            assert!(u.auc_interval.low <= u.auc_interval.high);
            assert!(u.tpr_at_fpr_0_001 <= u.tpr_at_fpr_0_01 + 1e-12);
        }
        assert_eq!(a.records, (data.0.len(), data.1.len()));
    }
    let json = serde_json::to_value(report).unwrap();
    let first = &json["attacks"][0]["users"][0];
    for key in [
        "aggregate",
        "min_records",
        "users",
        "auc",
        "auc_interval",
        "tpr_at_fpr_0_01",
        "tpr_at_fpr_0_001",
    ] {
        assert!(!first[key].is_null(), "{key}");
    }
}

#[test]
fn should_audit_a_user_level_target_with_canary_users() {
    let split = data();
    let k = 3;
    let cfg = config(PrivacyUnit::User {
        max_records_per_user: k,
    });
    let report = run(&cfg, &split, &audit_config(20, None));
    let c = report.canary_audit.as_ref().unwrap();
    assert_eq!(c.records_per_canary, k, "k = K by default at user level");
    assert_eq!(c.unit, "user");
    assert_eq!(c.one_run.canaries, 20, "the bound counts canary users");
    assert_eq!(c.claimed_group_epsilon, None);
    assert_eq!(c.exceeds_record_level_claim, None);
    assert!(!c.exceeds_claim, "{c:?}");
    // The target trained on the training users and the included canary
    // users, each of k records.
    let included = c.one_run.included as usize;
    let p = &report.target.privacy;
    assert_eq!(p.privacy_unit, "user");
    assert_eq!(p.users, Some(split.0.num_users().unwrap() + included));
    assert_eq!(
        report
            .target
            .not_covered_by_epsilon
            .users
            .as_ref()
            .unwrap()
            .records,
        split.0.len() + included * k
    );
    assert_user_figures(&report, &split);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["canary_audit"]["records_per_canary"], k);
    assert_eq!(json["canary_audit"]["unit"], "user");
    assert!(
        json["canary_audit"]
            .get("exceeds_record_level_claim")
            .is_none()
    );
}

#[test]
fn should_judge_a_record_level_claim_at_group_privacy_against_canary_users() {
    let split = data();
    let cfg = config(PrivacyUnit::Record);
    let report = run(&cfg, &split, &audit_config(20, Some(4)));
    // User-level figures at record level too: the data has users.
    assert_user_figures(&report, &split);
    let c = report.canary_audit.as_ref().unwrap();
    let eps = report.epsilon.unwrap();
    assert_eq!((c.records_per_canary, c.unit), (4, "user"));
    assert_eq!(c.claimed_group_epsilon, Some(4.0 * eps));
    let bound = c.one_run.epsilon;
    assert_eq!(c.exceeds_record_level_claim, Some(bound > eps + 1e-6));
    // Judged at 4ε (a bound at the group δ is no larger than at δ).
    if bound <= 4.0 * eps + 1e-6 {
        assert!(!c.exceeds_claim, "{c:?}");
    }
    assert_eq!(c.exceeds_claim, c.refutes_at(c.one_run.alpha).unwrap());
    assert_eq!(c.estimators.fdp_run_curve_epsilon, None);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["canary_audit"]["exceeds_record_level_claim"],
        c.exceeds_record_level_claim.unwrap()
    );
    // The target counts the canary users beside the training users.
    assert_eq!(report.target.privacy.privacy_unit, "record");
    let counts = report.target.not_covered_by_epsilon.users.as_ref().unwrap();
    assert_eq!(
        (counts.users, counts.records),
        (
            split.0.num_users().unwrap() + c.one_run.included as usize,
            split.0.len() + 4 * c.one_run.included as usize
        )
    );

    // One record per canary at record level: no user canaries, no group.
    let single = run(&cfg, &split, &audit_config(20, None));
    let c = single.canary_audit.as_ref().unwrap();
    assert_eq!((c.records_per_canary, c.unit), (1, "record"));
    assert_eq!(c.exceeds_record_level_claim, None);
}

#[test]
fn should_refuse_what_the_user_level_audit_cannot_do() {
    let split = data();
    let user = config(PrivacyUnit::User {
        max_records_per_user: 3,
    });
    let refuse = |cfg: &TrainConfig, data: &(Dataset, Dataset), a: AuditConfig| -> String {
        match audit(cfg, &data.0, &data.1, &a, &Device::flex(), &|_| {}) {
            Err(e @ TrainError::Config { .. }) => e.to_string(),
            Err(e) => panic!("refused otherwise: {e}"),
            Ok(o) => panic!("not refused: {:?}", o.report.epsilon),
        }
    };
    let dirac = AuditConfig {
        canary_kind: CanaryKind::Dirac,
        ..audit_config(8, None)
    };
    let e = refuse(&user, &split, dirac);
    assert!(e.contains("record slots"), "{e}");
    let e = refuse(&user, &split, audit_config(4, Some(0)));
    assert!(e.contains("canary_records_per_user"), "{e}");
    // At user level canary users count against the training users (the
    // records are private there); at record level their records count.
    let users = split.0.num_users().unwrap();
    let e = refuse(&user, &split, audit_config(users / 4 + 1, None));
    assert!(e.contains(&format!("for {users} training users")), "{e}");
    let n = split.0.len();
    let e = refuse(
        &config(PrivacyUnit::Record),
        &split,
        audit_config(n / 4 / 3 + 1, Some(3)),
    );
    assert!(e.contains(&format!("for {n} training records")), "{e}");
    // A user on both sides of the split.
    let (tr, te) = &split;
    let leaked = te.users().unwrap()[0];
    let mut ids = tr.users().unwrap().to_vec();
    ids[0] = leaked;
    let mixed = (tr.clone().with_users(ids).unwrap(), te.clone());
    let e = refuse(&config(PrivacyUnit::Record), &mixed, audit_config(0, None));
    assert!(e.contains("split the data by user"), "{e}");
    // Ids on one side only.
    let plain = (
        Dataset::new(
            tr.features().to_vec(),
            tr.labels().to_vec(),
            tr.n_features(),
            tr.n_classes(),
        )
        .unwrap(),
        te.clone(),
    );
    let e = refuse(&config(PrivacyUnit::Record), &plain, audit_config(0, None));
    assert!(e.contains("user ids"), "{e}");
}
