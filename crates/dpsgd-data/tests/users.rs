//! User-level DP: per-record user ids read from a CSV identifier column,
//! kept aligned by every transformation, and splits by user.

use dpsgd_data::{
    CsvSchema, Dataset, Error, LabelColumn, Position, Scaling, read_csv_encoded,
    read_csv_with_schema, read_csv_with_users,
};
use std::collections::HashSet;

mod common;
use common::{corrupt, temp_dir, write};

fn invalid(e: Error) -> (&'static str, String) {
    match e {
        Error::InvalidParameter { name, reason, .. } => (name, reason),
        other => panic!("expected InvalidParameter, got {other}"),
    }
}

fn schema_reason(e: Error) -> String {
    match e {
        Error::Schema { reason, .. } => reason,
        other => panic!("expected Schema, got {other}"),
    }
}

/// A data set of `n` one-feature examples (feature = index) with `users`.
fn with_ids(users: &[u64]) -> Dataset {
    let n = users.len();
    Dataset::new(
        (0..n).map(|i| i as f32).collect(),
        (0..n).map(|i| (i % 3) as u32).collect(),
        1,
        3,
    )
    .unwrap()
    .with_users(users.to_vec())
    .unwrap()
}

const WITH_USERS: &str = "age,user,job,income\n\
                          30,b,clerk,low\n\
                          41,a,?,high\n\
                          25,b,admin,low\n\
                          52,c,clerk,high\n";
const WITHOUT_USERS: &str = "age,job,income\n\
                             30,clerk,low\n\
                             41,?,high\n\
                             25,admin,low\n\
                             52,clerk,high\n";

#[test]
fn ids_follow_first_appearance_and_the_column_is_no_feature() {
    let dir = temp_dir("users");
    let with = write(&dir, "with.csv", WITH_USERS);
    let without = write(&dir, "without.csv", WITHOUT_USERS);
    let (plain, plain_enc) = read_csv_encoded(&without, &LabelColumn::Last).unwrap();
    for user in [LabelColumn::Name("user".into()), LabelColumn::Index(1)] {
        let (data, enc) = read_csv_with_users(&with, &LabelColumn::Last, &user, None).unwrap();
        assert_eq!(groups(data.users().unwrap()), vec![0, 1, 0, 2]);
        assert_eq!(data.num_users(), Some(3));
        assert_eq!(data.n_features(), 3); // age, job=admin, job=clerk
        assert_eq!(data.features(), plain.features());
        assert_eq!(data.labels(), plain.labels());
        assert_eq!(enc, plain_enc);
        assert_eq!(enc.feature_names(), ["age", "job=admin", "job=clerk"]);
        assert_eq!(enc.label_column(), 2);
        assert!(data.users().is_some() && plain.users().is_none());
    }
    // Read as a feature, the user column would add one-hot features.
    let (as_feature, _) = read_csv_encoded(&with, &LabelColumn::Last).unwrap();
    assert_eq!(as_feature.n_features(), 6);
}

#[test]
fn label_given_by_index_refers_to_the_files_columns() {
    let dir = temp_dir("users");
    // label first, user last: label index 0 and user `Last`.
    let p = write(&dir, "a.csv", "1,5.5,u7\n0,6.5,u3\n1,7.5,u7\n");
    let (data, enc) =
        read_csv_with_users(&p, &LabelColumn::Index(0), &LabelColumn::Last, None).unwrap();
    assert_eq!(groups(data.users().unwrap()), vec![0, 1, 0]);
    assert_eq!(data.labels(), &[1, 0, 1]);
    assert_eq!(data.features(), &[5.5, 6.5, 7.5]);
    assert_eq!(enc.label_column(), 0);
    // user before the label: the label index still names the file's column 2.
    let p = write(&dir, "b.csv", "5.5,10,1\n6.5,20,0\n7.5,10,1\n");
    let (data, enc) =
        read_csv_with_users(&p, &LabelColumn::Index(2), &LabelColumn::Index(1), None).unwrap();
    assert_eq!(groups(data.users().unwrap()), vec![0, 1, 0]);
    assert_eq!(data.labels(), &[1, 0, 1]);
    assert_eq!(data.features(), &[5.5, 6.5, 7.5]);
    assert_eq!(enc.label_column(), 1);
    // Numeric ids are compared as written: `1` and `1.0` are two users.
    let p = write(&dir, "c.csv", "5.5,1,1\n6.5,1.0,0\n7.5, 1 ,1\n");
    let (data, _) =
        read_csv_with_users(&p, &LabelColumn::Last, &LabelColumn::Index(1), None).unwrap();
    assert_eq!(groups(data.users().unwrap()), vec![0, 1, 0]);
}

#[test]
fn bad_user_columns_are_refused() {
    let dir = temp_dir("users");
    let p = write(&dir, "with.csv", WITH_USERS);
    let (name, reason) =
        invalid(read_csv_with_users(&p, &LabelColumn::Last, &LabelColumn::Last, None).unwrap_err());
    assert_eq!(name, "user");
    assert!(reason.contains("label"), "{reason}");
    let (name, _) = invalid(
        read_csv_with_users(
            &p,
            &LabelColumn::Name("income".into()),
            &LabelColumn::Index(3),
            None,
        )
        .unwrap_err(),
    );
    assert_eq!(name, "user");
    let (name, _) = invalid(
        read_csv_with_users(&p, &LabelColumn::Last, &LabelColumn::Index(4), None).unwrap_err(),
    );
    assert_eq!(name, "user");
    let (name, _) = invalid(
        read_csv_with_users(
            &p,
            &LabelColumn::Last,
            &LabelColumn::Name("id".into()),
            None,
        )
        .unwrap_err(),
    );
    assert_eq!(name, "user");
}

#[test]
fn a_missing_user_id_is_refused_naming_the_line() {
    let dir = temp_dir("users");
    for missing in ["", "?"] {
        let text = format!("age,user,income\n30,b,low\n41,{missing},high\n25,b,low\n");
        let p = write(&dir, "m.csv", &text);
        let user = LabelColumn::Name("user".into());
        let (pos, reason) =
            corrupt(read_csv_with_users(&p, &LabelColumn::Last, &user, None).unwrap_err());
        assert_eq!(pos, Position::Line(3));
        assert!(reason.contains("missing user id"), "{reason}");
    }
}

#[test]
fn a_schema_may_not_declare_the_user_column() {
    let dir = temp_dir("users");
    let p = write(&dir, "with.csv", WITH_USERS);
    let user = LabelColumn::Name("user".into());
    let bad = CsvSchema::from_json(r#"{"header": true, "columns": {"user": ["a", "b"]}}"#).unwrap();
    let reason =
        schema_reason(read_csv_with_users(&p, &LabelColumn::Last, &user, Some(&bad)).unwrap_err());
    assert!(reason.contains("user column"), "{reason}");
    // Without a header the schema names columns by the file's index.
    let headerless = write(&dir, "h.csv", "30,b,clerk,low\n41,a,admin,high\n");
    let bad = CsvSchema::from_json(r#"{"header": false, "columns": {"1": ["a", "b"]}}"#).unwrap();
    let reason = schema_reason(
        read_csv_with_users(
            &headerless,
            &LabelColumn::Last,
            &LabelColumn::Index(1),
            Some(&bad),
        )
        .unwrap_err(),
    );
    assert!(reason.contains("user column"), "{reason}");
    // A good schema: same features as the file without the user column.
    let json =
        r#"{"header": true, "columns": {"job": ["clerk", "nurse"]}, "classes": ["low", "high"]}"#;
    let schema = CsvSchema::from_json(json).unwrap();
    let (data, enc) = read_csv_with_users(&p, &LabelColumn::Last, &user, Some(&schema)).unwrap();
    let without = write(&dir, "without.csv", WITHOUT_USERS);
    let (plain, plain_enc) = read_csv_with_schema(&without, &LabelColumn::Last, &schema).unwrap();
    assert_eq!(data.features(), plain.features());
    assert_eq!(data.labels(), &[0, 1, 0, 1]);
    assert_eq!(enc, plain_enc);
    assert_eq!(groups(data.users().unwrap()), vec![0, 1, 0, 2]);
    // Declared by index in a headerless file, column 2 is the file's `job`.
    let schema =
        CsvSchema::from_json(r#"{"header": false, "columns": {"2": ["admin", "clerk"]}}"#).unwrap();
    let (data, enc) = read_csv_with_users(
        &headerless,
        &LabelColumn::Last,
        &LabelColumn::Index(1),
        Some(&schema),
    )
    .unwrap();
    assert_eq!(
        enc.feature_names(),
        ["column 0", "column 1=admin", "column 1=clerk"]
    );
    assert_eq!(data.features(), &[30.0, 0.0, 1.0, 41.0, 1.0, 0.0]);
}

#[test]
fn with_users_checks_the_length() {
    let d = Dataset::new(vec![1.0, 2.0, 3.0], vec![0, 1, 0], 1, 2).unwrap();
    assert_eq!(d.users(), None);
    assert_eq!(d.num_users(), None);
    let (name, _) = invalid(d.clone().with_users(vec![0, 1]).unwrap_err());
    assert_eq!(name, "users");
    let (name, _) = invalid(d.with_users(vec![0, 1, 2, 3]).unwrap_err());
    assert_eq!(name, "users");
}

#[test]
fn transformations_keep_the_ids_aligned() {
    let d = with_ids(&[10, 11, 12, 10, 13, 11]);
    let s = d.subset(&[4, 0, 5]);
    assert_eq!(s.users(), Some(&[13, 10, 11][..]));
    assert_eq!(s.features(), &[4.0, 0.0, 5.0]);
    let (train, test) = d.split(0.5, 3).unwrap();
    for part in [&train, &test] {
        let ids = part.users().unwrap();
        assert_eq!(ids.len(), part.len());
        for (i, &id) in ids.iter().enumerate() {
            // feature = original index
            assert_eq!(d.users().unwrap()[part.example(i)[0] as usize], id);
        }
    }
    let mut scaled = d.clone().with_num_classes(5).unwrap();
    scaled.apply(&Scaling::Divide(2.0));
    assert_eq!(scaled.users(), d.users());
    assert_eq!(scaled.features()[5], 2.5);
    let empty = d.subset(&[]);
    assert_eq!(empty.users(), Some(&[][..]));
}

#[test]
fn scatter_and_group_normalize_keep_the_ids() {
    let n = 2;
    let d = Dataset::new(
        (0..n * 64).map(|i| (i % 7) as f32).collect(),
        vec![0, 1],
        64,
        2,
    )
    .unwrap()
    .with_image_shape([1, 8, 8])
    .unwrap()
    .with_users(vec![5, 9])
    .unwrap();
    let scattering = dpsgd_data::Scattering::new(8, 8, 2, 8).unwrap();
    let mut s = dpsgd_data::scatter_dataset(&d, &scattering).unwrap();
    assert_eq!(s.users(), Some(&[5, 9][..]));
    let k = s.image_shape().unwrap()[0];
    dpsgd_data::group_normalize(&mut s, k).unwrap();
    assert_eq!(s.users(), Some(&[5, 9][..]));
}

#[test]
fn split_by_user_keeps_users_whole() {
    // 20 users with 1..=4 records each, interleaved.
    let ids: Vec<u64> = (0..50).map(|i| (i * 7 % 20) as u64 * 3 + 100).collect();
    let d = with_ids(&ids);
    assert_eq!(d.num_users(), Some(20));
    for (frac, seed) in [(0.2, 1), (0.5, 2), (0.33, 9)] {
        let (train, test) = d.split_by_user(frac, seed).unwrap();
        let tr: HashSet<u64> = train.users().unwrap().iter().copied().collect();
        let te: HashSet<u64> = test.users().unwrap().iter().copied().collect();
        assert!(tr.is_disjoint(&te));
        assert_eq!(tr.len() + te.len(), 20);
        assert_eq!(te.len(), (frac * 20.0_f64).round() as usize);
        assert_eq!(train.len() + test.len(), d.len());
        // File order within each part (feature = original index).
        for part in [&train, &test] {
            let idx: Vec<f32> = part.features().to_vec();
            assert!(idx.windows(2).all(|w| w[0] < w[1]));
        }
        // Same seed, same split.
        assert_eq!(d.split_by_user(frac, seed).unwrap(), (train, test));
    }
    // Different seeds pick different test users (for this data).
    let a = d.split_by_user(0.5, 1).unwrap().1;
    let b = d.split_by_user(0.5, 2).unwrap().1;
    assert_ne!(a.users(), b.users());
}

#[test]
fn split_by_user_ignores_a_users_record_count() {
    let groups: Vec<Vec<u64>> = (0u64..10).map(|u| vec![u; 1 + (u as usize % 3)]).collect();
    let ids: Vec<u64> = groups.concat();
    let d = with_ids(&ids);
    // User 4's records replaced, in place, by 5 others (same id, another
    // count and content).
    let mut groups2 = groups.clone();
    groups2[4] = vec![4; 5];
    let ids2: Vec<u64> = groups2.concat();
    let n2 = ids2.len();
    let d2 = Dataset::new(vec![-1.0; n2], vec![2; n2], 1, 3)
        .unwrap()
        .with_users(ids2)
        .unwrap();
    for seed in 0..20 {
        let side = |data: &Dataset| {
            let (_, test) = data.split_by_user(0.3, seed).unwrap();
            let te: HashSet<u64> = test.users().unwrap().iter().copied().collect();
            assert_eq!(te.len(), 3);
            te
        };
        assert_eq!(side(&d), side(&d2), "seed {seed}");
    }
}

#[test]
fn split_by_user_refuses_empty_parts() {
    let one = with_ids(&[7, 7, 7]);
    let (name, reason) = invalid(one.split_by_user(0.5, 0).unwrap_err());
    assert_eq!(name, "test_fraction");
    assert!(reason.contains("no user"), "{reason}");
    let many = with_ids(&[1, 2, 3, 4]);
    assert!(many.split_by_user(0.05, 0).is_err()); // round(0.2) = 0 test users
    assert!(many.split_by_user(0.95, 0).is_err()); // round(3.8) = 4: no training user
    assert_eq!(
        invalid(many.split_by_user(1.0, 0).unwrap_err()).0,
        "test_fraction"
    );
    assert_eq!(
        invalid(many.split_by_user(0.0, 0).unwrap_err()).0,
        "test_fraction"
    );
    // Without ids it is exactly `split`.
    let plain = Dataset::new((0..10).map(|i| i as f32).collect(), vec![0; 10], 1, 1).unwrap();
    assert_eq!(
        plain.split_by_user(0.3, 4).unwrap(),
        plain.split(0.3, 4).unwrap()
    );
}

#[test]
fn content_hash_covers_ids_only_when_present() {
    let d = Dataset::new(vec![1.0, 2.0, 3.0], vec![0, 1, 0], 1, 2).unwrap();
    // The value without ids is the one from before ids existed.
    assert_eq!(d.content_hash(), PLAIN_HASH);
    let a = d.clone().with_users(vec![0, 1, 0]).unwrap();
    let b = d.clone().with_users(vec![0, 1, 1]).unwrap();
    assert_ne!(a.content_hash(), d.content_hash());
    assert_ne!(a.content_hash(), b.content_hash());
    assert_eq!(a.content_hash(), a.clone().content_hash());
}

/// `content_hash` of `Dataset::new([1, 2, 3], [0, 1, 0], 1, 2)`, computed
/// before user ids existed.
const PLAIN_HASH: u64 = 0x6ad8_3564_58bf_6699;

/// Ids renumbered 0, 1, … in order of first appearance: which records
/// share a user, whatever the ids are.
fn groups(ids: &[u64]) -> Vec<u64> {
    let mut seen: Vec<u64> = Vec::new();
    ids.iter()
        .map(|id| match seen.iter().position(|s| s == id) {
            Some(i) => i as u64,
            None => {
                seen.push(*id);
                seen.len() as u64 - 1
            }
        })
        .collect()
}

/// A CSV id is a function of its own text: the same user has the same id
/// wherever and however often they appear, so one user's records never
/// renumber another.
#[test]
fn csv_ids_depend_on_the_text_alone() {
    let dir = std::env::temp_dir().join(format!("dpsgd-users-text-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let read = |name: &str, body: &str| {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        let user = dpsgd_data::LabelColumn::Name("user".into());
        dpsgd_data::read_csv_with_users(&path, &dpsgd_data::LabelColumn::Last, &user, None)
            .unwrap()
            .0
    };
    let a = read("a.csv", "user,x,y\nbob,1,0\nann,2,1\ncid,3,0\n");
    // Bob's records replaced by three of Dan's, first: Ann and Cid keep their ids.
    let b = read(
        "b.csv",
        "user,x,y\ndan,1,0\ndan,5,1\ndan,6,1\nann,2,1\ncid,3,0\n",
    );
    let (a, b) = (a.users().unwrap(), b.users().unwrap());
    assert_eq!(&a[1..], &b[3..]);
    assert_ne!(a[0], b[0]);
    assert_eq!(b[0], b[1]);
    std::fs::remove_dir_all(&dir).ok();
}

/// Replacing one user by another (a new id, U the same) at the same place
/// in the data moves no user between the parts of
/// [`Dataset::split_by_user`]: the newcomer takes the replaced user's part
/// (issue 24's rule: split sizes may not depend on one user's id).
#[test]
fn split_by_user_keeps_every_part_when_one_user_is_replaced() {
    let data = |ids: &[u64]| {
        let n = ids.len();
        Dataset::new((0..n).map(|i| i as f32).collect(), vec![0; n], 1, 2)
            .unwrap()
            .with_users(ids.to_vec())
            .unwrap()
    };
    // 200 users, some with two records (interleaved with the others').
    let base: Vec<u64> = (0..260)
        .map(|i| if i < 200 { i } else { (i - 200) * 3 })
        .collect();
    for seed in 0..20u64 {
        for replaced in [0u64, 57, 199] {
            let other: Vec<u64> = base
                .iter()
                .map(|&u| if u == replaced { 10_000 + seed } else { u })
                .collect();
            let parts = |d: &Dataset| -> Vec<usize> {
                let (train, test) = d.split_by_user(0.3, seed).unwrap();
                assert_eq!(test.num_users(), Some(60));
                vec![train.len(), test.len()]
            };
            let test_users = |d: &Dataset| -> HashSet<u64> {
                d.split_by_user(0.3, seed)
                    .unwrap()
                    .1
                    .users()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect()
            };
            let (a, b) = (test_users(&data(&base)), test_users(&data(&other)));
            let moved = base
                .iter()
                .filter(|&&u| u != replaced && a.contains(&u) != b.contains(&u))
                .count();
            assert_eq!(moved, 0, "seed {seed}: {moved} other users moved");
            assert_eq!(a.contains(&replaced), b.contains(&(10_000 + seed)));
            assert_eq!(parts(&data(&base)), parts(&data(&other)), "seed {seed}");
        }
    }
}
