//! The HTML page against its JSON report, number by number (issue 25,
//! item 7): the guarantee table's σ, q, δ, steps, N, ε and accountant, the
//! ε-over-training chart's points, and MIST's table of sub-models.

mod common;

use common::{dpsgd, read_json, temp_dir};
use serde_json::Value;

/// Trains on the digits with `extra` flags, writing the report and page;
/// returns both.
fn train(name: &str, extra: &[&str]) -> (Value, String) {
    let dir = temp_dir("dpsgd-report-values", name);
    let (report, page) = (dir.join("report.json"), dir.join("page.html"));
    let mut args = vec![
        "train",
        "--quiet",
        "--hidden",
        "16",
        "--seed",
        "3",
        "--report",
        report.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = dpsgd(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pair = (read_json(&report), std::fs::read_to_string(&page).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    pair
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {v}"))
}

/// The table row `label | value` as the page writes it.
fn table_row(label: &str, value: &str) -> String {
    format!("<tr><td>{label}</td><td>{value}</td></tr>")
}

#[test]
fn should_show_the_reports_accounting_and_its_epsilon_curve() {
    let epochs = 4;
    let (v, html) = train("guarantee", &["--epochs", "4", "--noise-multiplier", "1.1"]);
    let eps = num(&v, "epsilon");
    for (label, value) in [
        ("ε (privacy loss)", format!("{eps:.3}")),
        ("δ", format!("{:e}", num(&v, "delta"))),
        ("accountant", v["accountant"].as_str().unwrap().to_owned()),
        (
            "noise multiplier σ",
            format!("{:.3}", num(&v, "noise_multiplier")),
        ),
        ("sampling rate q", format!("{:.4}", num(&v, "sample_rate"))),
        ("steps", format!("{:.0}", num(&v, "steps"))),
        (
            "training records N",
            format!("{:.0}", num(&v, "dataset_size")),
        ),
    ] {
        let want = table_row(label, &value);
        assert!(html.contains(&want), "{want} not on the page");
    }
    // ε after each epoch: one point per epoch, ε growing, the last the
    // report's ε.
    let history = v["not_covered_by_epsilon"]["epoch_history"]
        .as_array()
        .unwrap();
    assert_eq!(history.len(), epochs);
    let curve: Vec<f64> = history.iter().map(|r| num(r, "epsilon")).collect();
    assert!(curve.windows(2).all(|w| w[0] < w[1]), "{curve:?}");
    assert!(
        (curve[epochs - 1] - eps).abs() <= 1e-9 * eps,
        "{curve:?} vs {eps}"
    );
    let budget = html
        .split("id=\"budget\"")
        .nth(1)
        .expect("the ε-over-training section");
    let points = budget
        .split("<polyline points=\"")
        .nth(1)
        .and_then(|p| p.split('"').next())
        .expect("the ε curve");
    let xy: Vec<(f64, f64)> = points
        .split(' ')
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect();
    assert_eq!(xy.len(), epochs, "{points}");
    // Pixels: x grows with the epoch, y falls as ε grows (SVG's y points
    // down), and the curve spans the plot (its ends are the axis ends).
    assert!(
        xy.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 > w[1].1),
        "{xy:?}"
    );
    // The axis ticks are the curve's first and last ε, to two
    // significant digits.
    for e in [curve[0], eps] {
        let decimals = (1 - e.log10().floor() as i32).max(0) as usize;
        let tick = format!("{e:.decimals$}");
        let tick = tick.trim_end_matches('0').trim_end_matches('.');
        assert!(
            budget.contains(&format!(">{tick}</text>")),
            "no tick for ε = {e} ({tick}) in the chart"
        );
    }
}

#[test]
fn should_show_every_mist_sub_model_as_the_report_does() {
    let (v, html) = train(
        "mist",
        &[
            "--epochs",
            "2",
            "--mist",
            "--mist-submodels",
            "2",
            "--noise-multiplier",
            "1.1",
        ],
    );
    let subs = v["mist"].as_array().expect("the sub-models");
    let parts = v["not_covered_by_epsilon"]["mist_submodels"]
        .as_array()
        .expect("the parts");
    assert_eq!((subs.len(), parts.len()), (2, 2));
    for (i, (sub, part)) in subs.iter().zip(parts).enumerate() {
        let want = format!(
            "<tr><td>{}</td><td>{:.3}</td><td>{:.4}</td><td>{:.0}</td><td>{:.0}</td></tr>",
            i + 1,
            num(sub, "epsilon"),
            num(sub, "sample_rate"),
            num(sub, "steps"),
            num(part, "records")
        );
        assert!(html.contains(&want), "{want} not on the page");
    }
}
