//! What the outputs declare as not covered by ε (issue 24's rule: a
//! statistic of the private data that is shown anyway is declared): the
//! model card's uncovered members and split, the audit's
//! `not_covered_by_epsilon`, and the per-epoch line's loss, which is the
//! report's declared value.

mod common;

use common::{dpsgd, ok, read_json, temp_dir, tiny_csv};
use serde_json::Value;
use std::path::Path;

/// `tiny_csv`'s 60 records with a user column: 20 users, interleaved; the
/// first 40 records two each (record `i` to user `i % 20`), the last 20 to
/// users 0–3 (five more each). Unequal counts, so that a split by user
/// has other sizes than a split by position: 4 test users of 20 hold
/// 8 + 5k records (k of them heavy), never the 12 of a 20% split by record.
fn users_csv(dir: &Path) -> std::path::PathBuf {
    let plain = std::fs::read_to_string(tiny_csv(dir)).expect("read the CSV");
    let mut lines = plain.lines();
    let mut text = format!("user,{}\n", lines.next().expect("a header"));
    for (i, line) in lines.enumerate() {
        let user = if i < 40 { i % 20 } else { (i - 40) % 4 };
        text += &format!("p{user},{line}\n");
    }
    let path = dir.join("users.csv");
    std::fs::write(&path, text).expect("write the CSV");
    path
}

#[test]
fn should_count_early_stoppings_validation_records_as_members_not_covered_by_epsilon() {
    let dir = temp_dir("dpsgd-declarations", "card");
    let data = format!("csv:{}", tiny_csv(&dir).display());
    let (report, model) = (dir.join("r.json"), dir.join("m.bin"));
    let args = [
        "train",
        "--dataset",
        &data,
        "--num-classes",
        "2",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--early-stopping",
        "1",
        "--validation-fraction",
        "0.25",
        "--seed",
        "3",
        "--quiet",
        "--report",
        report.to_str().unwrap(),
        "--save-model",
        model.to_str().unwrap(),
    ];
    ok(&dpsgd(&args));
    let report = read_json(&report);
    let card = read_json(dir.join("m.bin.card.json"));
    let validation = report["early_stopping"]["validation_size"]
        .as_u64()
        .expect("a validation size");
    // 48 training records (60 less the 20% test split), 12 of them held out.
    assert_eq!(validation, 12);
    assert_eq!(report["dataset_size"], 36);
    assert_eq!(card["privacy"]["members"], 48);
    assert_eq!(card["privacy"]["not_covered_members"], validation);
    // Without early stopping nothing is held out.
    let plain = dir.join("p.bin");
    ok(&dpsgd(&[
        "train",
        "--dataset",
        &data,
        "--num-classes",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--quiet",
        "--save-model",
        plain.to_str().unwrap(),
    ]));
    let card = read_json(dir.join("p.bin.card.json"));
    assert_eq!(card["privacy"]["not_covered_members"], 0);
    assert_eq!(card["privacy"]["members"], 48);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The audit's declaration, and its split: by user at the record level
/// (said so), by position in `train` at the record level.
#[test]
fn should_declare_the_audits_figures_and_its_split_by_user() {
    let dir = temp_dir("dpsgd-declarations", "audit");
    let csv = users_csv(&dir);
    let data = format!("csv:{}", csv.display());
    // The audit's 50/50 split by user, as the library makes it, must differ
    // from a split by record (30 and 30) for this check to see anything.
    let (records, _) = dpsgd::data::read_csv_with_users(
        &csv,
        &dpsgd::data::LabelColumn::Last,
        &dpsgd::data::LabelColumn::Name("user".into()),
        None,
    )
    .expect("read the data");
    let by_user = records.split_by_user(0.5, 2).expect("a split").1.len();
    assert_ne!(
        by_user, 30,
        "choose another seed: the split by user has 30 test records"
    );
    let audit = |out: &Path, user_column: bool| -> Value {
        let mut args = vec![
            "audit",
            "--dataset",
            &data,
            "--num-classes",
            "2",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--attacks",
            "loss",
            "--seed",
            "2",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ];
        if user_column {
            args.extend(["--user-column", "user"]);
        }
        ok(&dpsgd(&args));
        read_json(out.join("audit.json"))
    };
    let plain = audit(&dir.join("plain"), false);
    let declared = &plain["not_covered_by_epsilon"];
    let fields: Vec<&str> = declared["fields"]
        .as_array()
        .expect("a list of fields")
        .iter()
        .map(|f| f.as_str().expect("a pointer"))
        .collect();
    for field in [
        "/train_accuracy",
        "/attacks",
        "/epsilon_lower_bound",
        "/target/not_covered_by_epsilon",
    ] {
        assert!(fields.contains(&field), "{field} not in {fields:?}");
        // Every pointer names a field the report has.
        assert!(
            plain.pointer(field).is_some(),
            "{field} is not in the report"
        );
    }
    assert!(declared.get("split").is_none(), "{declared}");
    let users = audit(&dir.join("users"), true);
    let split = users["not_covered_by_epsilon"]["split"]
        .as_str()
        .expect("the split declared");
    assert!(split.contains("split by user"), "{split}");
    // The audit split whole users.
    assert_eq!(users["target"]["test_size"], by_user);
    // `train` at the record level splits by position, users or not.
    let (with, without) = (dir.join("with.json"), dir.join("without.json"));
    for (path, user_column) in [(&with, true), (&without, false)] {
        let mut args = vec![
            "train",
            "--dataset",
            &data,
            "--num-classes",
            "2",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--seed",
            "2",
            "--quiet",
            "--report",
            path.to_str().unwrap(),
        ];
        if user_column {
            args.extend(["--user-column", "user"]);
        }
        ok(&dpsgd(&args));
    }
    let (with, without) = (read_json(&with), read_json(&without));
    assert_eq!(with["dataset_size"], 48);
    assert_eq!(with["test_size"], 12);
    assert_eq!(without["test_size"], 12);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The card of a model `audit --save-model` saves declares the audit's
/// split by user at the record level (its N, and with it ε, depend on the
/// records' user ids), naming the card's fields it moves; a card of an
/// audit without users, or of `train` with users (split by position),
/// declares nothing.
#[test]
fn should_declare_the_audits_split_by_user_in_the_saved_models_card() {
    let dir = temp_dir("dpsgd-declarations", "audit-card");
    let data = format!("csv:{}", users_csv(&dir).display());
    let common = [
        "--dataset",
        &data,
        "--num-classes",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--seed",
        "2",
        "--quiet",
    ];
    let audit = |name: &str, user_column: bool| -> (Value, Value) {
        let (out, model) = (dir.join(name), dir.join(format!("{name}.bin")));
        let mut args = vec!["audit", "--attacks", "loss"];
        args.extend(common);
        args.extend([
            "--out",
            out.to_str().unwrap(),
            "--save-model",
            model.to_str().unwrap(),
        ]);
        if user_column {
            args.extend(["--user-column", "user"]);
        }
        ok(&dpsgd(&args));
        (
            read_json(out.join("audit.json")),
            read_json(dir.join(format!("{name}.bin.card.json"))),
        )
    };
    let (report, card) = audit("users", true);
    let declared = &card["privacy"]["not_covered_by_epsilon"];
    let split = declared["split"].as_str().expect("the split declared");
    assert!(split.contains("split by user"), "{split}");
    // The audit's own words.
    assert_eq!(report["not_covered_by_epsilon"]["split"], split);
    let fields: Vec<&str> = declared["fields"]
        .as_array()
        .expect("a list of fields")
        .iter()
        .map(|f| f.as_str().expect("a pointer"))
        .collect();
    for field in ["/privacy/members", "/privacy/epsilon"] {
        assert!(fields.contains(&field), "{field} not in {fields:?}");
    }
    for field in &fields {
        assert!(card.pointer(field).is_some(), "{field} is not in the card");
    }
    // The members are the by-user training part's.
    assert_eq!(card["privacy"]["members"], report["target"]["dataset_size"]);
    // Every field the card had before is still there.
    for field in [
        "epsilon",
        "delta",
        "unit",
        "secure",
        "members",
        "not_covered_members",
    ] {
        assert!(card["privacy"].get(field).is_some(), "{field} missing");
    }
    let (_, plain) = audit("plain", false);
    assert!(
        plain["privacy"]["not_covered_by_epsilon"].is_null(),
        "{plain}"
    );
    // `train` at the record level splits by position, users or not.
    let model = dir.join("train.bin");
    let mut args = vec!["train"];
    args.extend(common);
    args.extend([
        "--user-column",
        "user",
        "--save-model",
        model.to_str().unwrap(),
    ]);
    ok(&dpsgd(&args));
    let trained = read_json(dir.join("train.bin.card.json"));
    assert_eq!(trained["privacy"]["members"], 48);
    assert!(
        trained["privacy"]["not_covered_by_epsilon"].is_null(),
        "{trained}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The per-epoch line prints the epoch's mean training loss, the value the
/// report declares in `not_covered_by_epsilon.epoch_history`, marked.
#[test]
fn should_print_the_declared_epoch_loss_in_the_epoch_lines() {
    let dir = temp_dir("dpsgd-declarations", "epoch-line");
    let data = format!("csv:{}", tiny_csv(&dir).display());
    let report = dir.join("r.json");
    let out = dpsgd(&[
        "train",
        "--dataset",
        &data,
        "--num-classes",
        "2",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--seed",
        "4",
        "--report",
        report.to_str().unwrap(),
    ]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = read_json(&report);
    let history = report["not_covered_by_epsilon"]["epoch_history"]
        .as_array()
        .expect("the epoch history");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("epoch ")).collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    for (line, epoch) in lines.iter().zip(history) {
        let loss = epoch["train_loss"].as_f64().expect("a loss");
        let printed = format!("mean training loss {loss:.4} (not covered by ε)");
        assert!(
            line.ends_with(&printed),
            "{line:?} does not end with {printed:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sweep` at the record level on data with users: split by record, as
/// `train` splits it, its audits leave users unscored instead of refusing
/// (a user's records can fall on both sides), and nothing names a user.
#[test]
fn should_sweep_at_the_record_level_on_data_with_users() {
    let dir = temp_dir("dpsgd-declarations", "sweep");
    let data = format!("csv:{}", users_csv(&dir).display());
    let out = dir.join("out");
    let result = dpsgd(&[
        "sweep",
        "--dataset",
        &data,
        "--num-classes",
        "2",
        "--user-column",
        "user",
        "--epsilons",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--seed",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(&result);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("users are not scored"), "{stderr}");
    assert!(
        !stderr.contains(" p1") && !stderr.contains("user p"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
