//! The page's sections: the guarantee, ε over training, accuracy against
//! ε, measured leakage, and defences compared.

use super::charts::{COLOURS, Series, line_chart, scatter_chart, tick_label};
use super::inputs::{Report, Training};
use super::privacy::{self, Privacy};
use super::text::{
    attack, attacks, ends, esc, heading_label, level_percent, name_of, num, opt, row, row_html,
    section_id,
};
use crate::output::format::percent;
use base64::Engine as _;
use serde_json::Value;
use std::fmt::Write as _;

/// The unit of privacy a report protects, in words.
fn privacy_unit(t: &Value) -> String {
    match num(t, "max_records_per_user") {
        Some(k) => format!("one user (up to {k:.0} of their records a step)"),
        None => "one record".to_owned(),
    }
}

pub(super) fn guarantee_section(training: &Training<'_>, i: usize, several: bool) -> String {
    let t = training.value;
    let mut s = format!(
        "<h2 id=\"{}\">The guarantee{}</h2>",
        section_id("guarantee", i),
        heading_label(&training.label, several)
    );
    match &training.privacy {
        Privacy::Private {
            epsilon: eps,
            delta,
        } => {
            let (eps, delta) = (*eps, *delta);
            match num(t, "max_records_per_user") {
                Some(k) => {
                    let _ = write!(
                        s,
                        "<p>The model was trained with <b>user-level DP-SGD</b>: for any one <b>user and all their records</b>, the chance of any outcome of training changes by at most a factor <b>e<sup>ε</sup> = {:.2}</b> (ε = {eps:.3}) whether or not the user took part, except with probability δ = {delta:e}. Each step samples users, and a sampled user contributes the mean gradient of at most {k:.0} of their records, clipped as one: however many records a user has, ε bounds what anyone can learn about that user from the model.</p>",
                        eps.exp(),
                    );
                }
                None => {
                    let _ = write!(
                        s,
                        "<p>The model was trained with <b>DP-SGD</b>: for any one person's record, the chance of any outcome of training changes by at most a factor <b>e<sup>ε</sup> = {:.2}</b> (ε = {eps:.3}) whether or not the record was used, except with probability δ = {delta:e}. This bounds what anyone can learn about a single record from the model — any attack, any number of queries. A person with n records is protected only at about n·ε (group privacy).</p>",
                        eps.exp(),
                    );
                }
            }
            s.push_str("<table>");
            for (k, v) in [
                ("ε (privacy loss)", format!("{eps:.3}")),
                ("δ", format!("{delta:e}")),
                (
                    "accountant",
                    t.get("accountant")
                        .and_then(Value::as_str)
                        .unwrap_or("—")
                        .to_owned(),
                ),
                (
                    "noise multiplier σ",
                    opt(num(t, "noise_multiplier"), |x| format!("{x:.3}")),
                ),
                (
                    "sampling rate q",
                    opt(num(t, "sample_rate"), |x| format!("{x:.4}")),
                ),
                ("steps", opt(num(t, "steps"), |x| format!("{x:.0}"))),
                ("unit of privacy", privacy_unit(t)),
                (
                    if num(t, "users").is_some() {
                        "training users N"
                    } else {
                        "training records N"
                    },
                    opt(num(t, "dataset_size"), |x| format!("{x:.0}")),
                ),
                ("test accuracy", opt(num(t, "test_accuracy"), percent)),
            ] {
                s.push_str(&row(&[k.to_owned(), v]));
            }
            s.push_str("</table>");
            if let Some(subs) = t.get("mist").and_then(Value::as_array) {
                // Each part's size and dropped examples sit under
                // not_covered_by_epsilon (reports before issue 24 kept the
                // size beside ε).
                let parts = t
                    .pointer("/not_covered_by_epsilon/mist_submodels")
                    .and_then(Value::as_array);
                s.push_str("<p>Trained with MIST: each record trained one sub-model, each with its own accountant; the guarantee above is the largest of theirs (a record's privacy loss is its own sub-model's). The records of each part are not covered by ε.</p><table><tr><th>sub-model</th><th>ε</th><th>q</th><th>steps</th><th>records (not covered by ε)</th></tr>");
                for (i, sub) in subs.iter().enumerate() {
                    let records = parts
                        .and_then(|p| p.get(i))
                        .and_then(|p| num(p, "records"))
                        .or_else(|| num(sub, "records"));
                    s.push_str(&row(&[
                        (i + 1).to_string(),
                        opt(num(sub, "epsilon"), |e| format!("{e:.3}")),
                        opt(num(sub, "sample_rate"), |x| format!("{x:.4}")),
                        opt(num(sub, "steps"), |x| format!("{x:.0}")),
                        opt(records, |x| format!("{x:.0}")),
                    ]));
                }
                s.push_str("</table>");
            }
        }
        Privacy::NonPrivate => {
            s.push_str("<p><b>No guarantee.</b> This model was trained without differential privacy: nothing bounds what it reveals about individual training records. The measured leakage below is all there is to go on.</p>");
        }
        Privacy::Invalid(why) => {
            let _ = write!(
                s,
                "<p><b>ε missing/invalid — no guarantee can be read from this report</b> ({}). Nothing on this page bounds what the model reveals about individual training records until a valid report is produced.</p>",
                esc(why)
            );
        }
    }
    s.push_str("<p><b>What the guarantee does not cover</b>:</p><ul>");
    let _ = write!(
        s,
        "<li>data preparation before training (scaling, vocabulary, feature ranges) unless it used public information only — here: {};</li><li>figures computed on the private data outside the mechanism: training accuracy ({}), final loss and the loss-threshold attack of the training report are exact statistics, not protected by ε;</li><li>the test set, hyper-parameter choices and repeated runs on the same data (each run spends its own ε);</li><li>{}</li></ul>",
        preprocessing_text(training.preprocessing),
        opt(
            t.get("not_covered_by_epsilon")
                .and_then(|n| num(n, "train_accuracy")),
            percent
        ),
        if t.get("secure") == Some(&Value::Bool(false)) {
            "the run was <b>seeded</b>: its noise can be regenerated from the seed, which voids the guarantee against anyone who has it."
        } else {
            "the noise came from the operating system's CSPRNG (not seeded)."
        }
    );
    s
}

/// The report's `preprocessing` in words: whether it used public
/// information only, what it did, and what it read off the private data.
fn preprocessing_text(preprocessing: Option<&Value>) -> String {
    let Some(p) = preprocessing.and_then(Value::as_object) else {
        return "not recorded in these reports".into();
    };
    let details: Vec<String> = p
        .iter()
        .filter(|(k, _)| k.as_str() != "public")
        .filter(|(_, v)| v.as_array().is_none_or(|a| !a.is_empty()))
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            };
            format!("{} {}", esc(&k.replace('_', " ")), esc(&v))
        })
        .collect();
    match p.get("public").and_then(Value::as_bool) {
        // Reports from before the vocabulary was checked said `public`
        // without looking at it: claim only what they checked.
        Some(true) if !p.contains_key("read_from_data") => format!(
            "public scaling and a declared number of classes, as recorded; this report predates the check of the vocabulary (one-hot categories, class names), which may have been read off the private data and then is not covered ({})",
            details.join("; ")
        ),
        Some(true) => format!(
            "public information only, so it is covered: nothing in it was read off the private data ({})",
            details.join("; ")
        ),
        Some(false) => format!(
            "<b>partly read off the private data, so not covered by ε</b> ({})",
            details.join("; ")
        ),
        None => details.join("; "),
    }
}

pub(super) fn budget_section(training: &Training<'_>, i: usize, several: bool) -> String {
    let t = training.value;
    let history = t
        .get("not_covered_by_epsilon")
        .and_then(|n| n.get("epoch_history"))
        .and_then(Value::as_array);
    let points: Vec<(f64, f64)> = history
        .map(|h| {
            h.iter()
                .filter_map(|r| Some((num(r, "epoch")?, num(r, "epsilon")?)))
                .collect()
        })
        .unwrap_or_default();
    if points.is_empty() {
        return String::new();
    }
    format!(
        "<h2 id=\"{}\">ε spent over training{}</h2><p>Privacy loss accumulates with every step; this is the accountant's ε after each epoch.</p>{}",
        section_id("budget", i),
        heading_label(&training.label, several),
        line_chart(
            "ε after each epoch",
            "epoch",
            "ε",
            &[("ε".into(), COLOURS[0], points)],
            false
        )
    )
}

pub(super) fn sweep_section(report: &Report, i: usize, several: bool) -> String {
    let sweep = &report.value;
    let runs = sweep.get("runs").and_then(Value::as_array);
    let mut rows: Vec<(f64, f64, Option<f64>)> = runs
        .map(|r| {
            r.iter()
                .enumerate()
                .filter_map(|(i, run)| {
                    let eps = privacy::sweep_budget(run, i).ok()??;
                    let lira = attack(run, dpsgd::audit::Attack::LIRA_ONLINE)
                        .or_else(|| attack(run, "loss"))
                        .and_then(|a| num(a, "auc"));
                    Some((eps, num(run, "test_accuracy")?, lira))
                })
                .collect()
        })
        .unwrap_or_default();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    if rows.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "<h2 id=\"{}\">Accuracy against ε{}</h2><p>Smaller ε means a stronger guarantee and, usually, lower accuracy; the attack's AUC shows the leakage measured at each budget (0.5: none).</p>",
        section_id("sweep", i),
        heading_label(&report.source, several)
    );
    s.push_str(&line_chart(
        "test accuracy vs ε",
        "ε",
        "test accuracy",
        &[(
            "accuracy".into(),
            COLOURS[0],
            rows.iter().map(|r| (r.0, r.1)).collect(),
        )],
        false,
    ));
    s.push_str("<table><tr><th>ε</th><th>test accuracy</th><th>attack AUC</th></tr>");
    for (e, acc, auc) in &rows {
        s.push_str(&row(&[
            tick_label(*e),
            percent(*acc),
            opt(*auc, |a| format!("{a:.3}")),
        ]));
    }
    // The non-private runs, for the price of the guarantee.
    for run in runs
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(i, r)| privacy::sweep_budget(r, *i) == Ok(None))
        .map(|(_, r)| r)
    {
        s.push_str(&row(&[
            "∞ (no DP)".into(),
            opt(num(run, "test_accuracy"), percent),
            opt(
                attack(run, dpsgd::audit::Attack::LIRA_ONLINE)
                    .or_else(|| attack(run, "loss"))
                    .and_then(|a| num(a, "auc")),
                |a| format!("{a:.3}"),
            ),
        ]));
    }
    s.push_str("</table>");
    s
}

/// The attacks' figures per user (data with a user column): each user
/// scored by the mean, and by the best, of their records' scores; empty
/// without users.
fn users_table(audit: &Value) -> String {
    let mut rows = String::new();
    for a in attacks(audit) {
        for u in a
            .get("users")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let aggregate = match u.get("aggregate").and_then(Value::as_str) {
                Some("max") => "best",
                Some(other) => other,
                None => "—",
            };
            let counts = u.get("users").and_then(Value::as_array).map_or_else(
                || "—".to_owned(),
                |c| {
                    let n = |i: usize| c.get(i).and_then(Value::as_u64).unwrap_or(0);
                    format!("{} / {}", n(0), n(1))
                },
            );
            let interval = ends(u, "auc_interval")
                .map_or_else(|| "—".into(), |(l, h)| format!("[{l:.3}, {h:.3}]"));
            let which = match num(u, "min_records") {
                Some(n) if n > 1.0 => format!(", ≥ {n:.0} records"),
                _ => String::new(),
            };
            rows.push_str(&row(&[
                format!("{} ({aggregate}{which})", name_of(a)),
                counts,
                opt(num(u, "auc"), |x| format!("{x:.3} {interval}")),
                opt(num(u, "tpr_at_fpr_0_01"), percent),
                opt(num(u, "tpr_at_fpr_0_001"), percent),
            ]));
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "<h3>Membership of users</h3><p>The same attacks deciding whether a <b>user</b> took part: each user scored by the mean (or the best) of their records' scores, members being the training split's users; rows marked ≥ n records are the heaviest fifth of the users. Under record-level DP a user with many records is protected only at group privacy; here that shows.</p><table><tr><th>attack (per user)</th><th>members / non-members</th><th>AUC [percentile]</th><th>TPR at 1% FPR</th><th>TPR at 0.1% FPR</th></tr>{rows}</table>"
    )
}

pub(super) fn leakage_section(report: &Report, i: usize, several: bool) -> String {
    let audit = &report.value;
    let mut s = format!(
        "<h2 id=\"{}\">Measured leakage{}</h2><p>Membership-inference attacks try to tell training records (members) from unseen ones. AUC 0.5 is guessing; the true-positive rate at a 0.1% false-positive rate shows whether a few records are identifiable with confidence (chance: 0.1%).</p><table><tr><th>attack</th><th>AUC</th><th>TPR at 1% FPR</th><th>TPR at 0.1% FPR</th><th>advantage</th></tr>",
        section_id("leakage", i),
        heading_label(&report.source, several)
    );
    const BCA: [&str; 3] = ["auc_bca", "tpr_at_fpr_0_01_bca", "tpr_at_fpr_0_001_bca"];
    // The level the intervals are stated at (1 − α, the same for all).
    let level_of = |a: &Value, key: &str| {
        a.get(key)
            .and_then(|c| num(c, "level"))
            .and_then(level_percent)
    };
    let level = attacks(audit).find_map(|a| BCA.iter().find_map(|k| level_of(a, k)));
    // The intervals in a table of their own: beside the figures, nine
    // columns would not fit a narrow window.
    let mut intervals = String::from(
        "<table><tr><th>attack</th><th>AUC, BCa</th><th>AUC, percentile</th><th>TPR at 1% FPR, BCa</th><th>TPR at 0.1% FPR, BCa</th></tr>",
    );
    for a in attacks(audit) {
        let bca = |key: &str, show: fn(f64) -> String| {
            ends(a, key).map_or_else(
                || "—".to_owned(),
                |(low, high)| {
                    let other = level_of(a, key).filter(|l| Some(l) != level.as_ref());
                    format!(
                        "[{}, {}]{}",
                        show(low),
                        show(high),
                        other.map_or_else(String::new, |l| format!(" (level {l})"))
                    )
                },
            )
        };
        let three = |x: f64| format!("{x:.3}");
        let percentile = ends(a, "auc_interval")
            .map_or_else(|| "—".into(), |(l, h)| format!("[{l:.3}, {h:.3}]"));
        s.push_str(&row(&[
            name_of(a).to_owned(),
            opt(num(a, "auc"), three),
            opt(num(a, "tpr_at_fpr_0_01"), percent),
            opt(num(a, "tpr_at_fpr_0_001"), percent),
            opt(num(a, "advantage"), three),
        ]));
        intervals.push_str(&row(&[
            name_of(a).to_owned(),
            bca(BCA[0], three),
            percentile,
            bca(BCA[1], percent),
            bca(BCA[2], percent),
        ]));
    }
    s.push_str("</table>");
    intervals.push_str("</table>");
    s.push_str(&intervals);
    s.push_str(&users_table(audit));
    let _ = write!(
        s,
        "<p>{}</p>",
        esc(&match &level {
            Some(l) => format!(
                "Intervals: BCa bootstrap (Efron 1987), level 1 − α = {l}, over the audited records (the AUC's percentile bootstrap interval beside it), in the second table; — where one could not be computed. They describe the sampling uncertainty of the figures, not a privacy guarantee."
            ),
            None => "No BCa bootstrap interval (level 1 − α) in this report: too few records or resamples, or a report written before they were added.".to_owned(),
        })
    );
    let series = roc_series(audit);
    s.push_str(&line_chart(
        "ROC (linear)",
        "false-positive rate",
        "true-positive rate",
        &series,
        false,
    ));
    s.push_str(&line_chart(
        "ROC (log-log)",
        "false-positive rate",
        "true-positive rate",
        &series,
        true,
    ));
    if let Some(c) = audit.get("canary_audit").filter(|c| !c.is_null()) {
        let _ = write!(
            s,
            "<p><b>Audited ε lower bound</b> (canaries): ε ≥ <b>{}</b>, {}</p>",
            opt(
                num(c, "one_run").or_else(|| c.get("one_run").and_then(|o| num(o, "epsilon"))),
                |x| format!("{x:.3}")
            ),
            match (
                privacy::training(&audit["target"], "target."),
                num(c, "claimed_epsilon"),
            ) {
                (Privacy::Private { .. }, Some(claimed)) if num(c, "claimed_group_epsilon").is_some() => format!(
                    "from canary users of {} records, against the record-level claim ε = {claimed:.3}, which covers such a user only at group privacy, k·ε = {:.3}: a bound above ε shows that the claim does not cover users; only one above k·ε would prove it false.",
                    num(c, "records_per_canary").unwrap_or(1.0),
                    num(c, "claimed_group_epsilon").unwrap_or(f64::NAN)
                ),
                (Privacy::Private { .. }, Some(claimed)) => format!(
                    "against the claimed ε = {claimed:.3}. A lower bound above the claim would prove the guarantee false."
                ),
                (Privacy::NonPrivate, _) => "with no claim to test: the model was trained without DP. The bound is how much leakage the audit proves.".into(),
                _ => "with no claim that can be read: ε missing/invalid — no guarantee can be read from this report.".into(),
            }
        );
        if let Some(w) = c.get("white_box").filter(|w| w.is_object()) {
            let check = w.get("noise_check").filter(|n| n.is_object());
            let _ = write!(
                s,
                "<p>White-box gradient canaries planted in the target's own run (N = {} with their slots); the auditor saw {} ({} releases).{}</p>",
                opt(num(w, "dataset_size"), |x| format!("{x:.0}")),
                match w.get("view").and_then(Value::as_str) {
                    Some("final") => "the final model only",
                    Some("all-steps") => "every step's released gradient",
                    _ => "an unknown view",
                },
                opt(num(w, "observed_steps"), |x| format!("{x:.0}")),
                check.map_or_else(String::new, |n| format!(
                    " Noise check (a diagnostic, not a bound): measured over claimed noise {}, step-to-step correlation {} — <b>{}</b>.",
                    opt(num(n, "noise_ratio"), |x| format!("{x:.3}")),
                    opt(num(n, "lag1_correlation"), |x| format!("{x:.3}")),
                    match n.get("consistent").and_then(Value::as_bool) {
                        Some(true) => "as claimed",
                        Some(false) => "not the noise ε assumes",
                        None => "unreadable",
                    }
                )),
            );
        }
        if let Some(e) = c.get("estimators").filter(|e| e.is_object()) {
            let shown = |v: Option<f64>| opt(v, |x| format!("{x:.3}"));
            let gdp = e.get("gdp_estimate").filter(|g| g.is_object());
            let _ = write!(
                s,
                "<p>Other readings of the same canaries (none decides the verdict): the f-DP one-run bound (Mahloujifar et al. 2024) ε ≥ <b>{}</b> reading the claim as an (ε, δ) trade-off curve, <b>{}</b> reading it as the run's own privacy curve (its T steps of the subsampled Gaussian at rate q), and <b>{}</b> reading it as a Gaussian mechanism (a bound only if the mechanism is Gaussian-DP); a Gaussian-DP estimate (Nasr et al. 2023) ε ≈ <b>{}</b> (μ = {}), which is an estimate, not a bound.</p>",
                shown(num(e, "fdp_epsilon")),
                shown(num(e, "fdp_run_curve_epsilon")),
                shown(num(e, "fdp_gaussian_epsilon")),
                shown(gdp.and_then(|g| num(g, "epsilon"))),
                shown(gdp.and_then(|g| num(g, "mu"))),
            );
        }
    }
    let _ = write!(
        s,
        "<h3 id=\"{}\">Most exposed records</h3><p>Each attack's three most exposed slices (a class, or a range of the records' losses). The adjusted p-value is the chance of an advantage this large on a slice this size if the attack could not tell members from non-members, corrected for the number of slices looked at: above 5%, the slice's figure may be noise.</p><table><tr><th>attack</th><th>slice</th><th>members / non-members</th><th>AUC</th><th>advantage</th><th>adjusted p</th></tr>",
        section_id("slices", i)
    );
    for a in attacks(audit) {
        for slice in a
            .get("slices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .take(3)
        {
            let counts = slice.get("counts").and_then(Value::as_array).map_or_else(
                || "—".into(),
                |c| {
                    c.iter()
                        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(" / ")
                },
            );
            s.push_str(&row(&[
                name_of(a).to_owned(),
                name_of(slice).to_owned(),
                counts,
                opt(num(slice, "auc"), |x| format!("{x:.3}")),
                opt(num(slice, "advantage"), |x| format!("{x:.3}")),
                opt(
                    num(slice, "p_value_adjusted"),
                    crate::output::format::p_value,
                ),
            ]));
        }
    }
    s.push_str("</table>");
    if let Some(inv) = audit.get("inversion").filter(|i| !i.is_null()) {
        let _ = write!(
            s,
            "<h3 id=\"{}\">Model inversion</h3><p>Reconstructions of one input per class from the model. An independent classifier recognises {} of them; their distance to the nearest training record over the nearest unseen one is {}.</p>",
            section_id("inversion", i),
            opt(num(inv, "independent_accuracy"), percent),
            num(inv, "mean_distance_ratio").map_or_else(
                || "not measured (no class has both a training record and an unseen one)"
                    .to_owned(),
                |x| match num(inv, "measured_classes") {
                    Some(k) => format!(
                        "{x:.3} over {k} of the classes (below 1: closer to the training data)"
                    ),
                    None => format!("{x:.3} (below 1: closer to the training data)"),
                }
            )
        );
        if let Some(png) = &report.inversion_png {
            let _ = write!(
                s,
                "<img class=\"grid\" alt=\"model inversion reconstructions\" src=\"data:image/png;base64,{}\">",
                base64::engine::general_purpose::STANDARD.encode(png)
            );
        }
    }
    s
}

pub(super) fn compare_section(report: &Report, i: usize, several: bool) -> String {
    let compare = &report.value;
    let mut s = format!(
        "<h2 id=\"{}\">Defences compared{}</h2><p>The same model trained with each defence on the same split and attacked the same way. Only DP-SGD (rows with an ε) comes with a guarantee.</p><table><tr><th>defence</th><th>test accuracy</th><th>ε</th><th>attack</th><th>AUC</th><th>TPR at 0.1% FPR</th></tr>",
        section_id("defences", i),
        heading_label(&report.source, several)
    );
    let mut points = Vec::new();
    for (i, r) in compare.as_array().into_iter().flatten().enumerate() {
        let name = r.get("defence").and_then(Value::as_str).unwrap_or("?");
        let best = attack(r, dpsgd::audit::Attack::LIRA_ONLINE)
            .or_else(|| attack(r, dpsgd::audit::Attack::Loss.name()));
        // The first cell is markup (`<code>`): every cell escaped here.
        s.push_str(&row_html(&[
            format!("<code>{}</code>", esc(name)),
            esc(&opt(num(r, "test_accuracy"), percent)),
            esc(&match privacy::compare_epsilon(r, i) {
                Ok(e) => opt(e, |e| format!("{e:.2}")),
                Err(_) => "invalid".into(),
            }),
            esc(best
                .and_then(|a| a.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("—")),
            esc(&opt(best.and_then(|a| num(a, "auc")), |x| {
                format!("{x:.3}")
            })),
            esc(&opt(best.and_then(|a| num(a, "tpr_at_fpr_0_001")), percent)),
        ]));
        if let (Some(auc), Some(acc)) = (best.and_then(|a| num(a, "auc")), num(r, "test_accuracy"))
        {
            points.push((
                name.to_owned(),
                COLOURS[points.len() % COLOURS.len()],
                vec![(auc, acc)],
            ));
        }
    }
    s.push_str("</table>");
    s.push_str(&scatter_chart(
        "accuracy against attack AUC (one point per defence)",
        "attack AUC",
        "test accuracy",
        &points,
    ));
    // The Pareto fronts against the strongest attack, as compare.json
    // marks them (older files have no marks: no front is drawn).
    for (key, flag, title, x_label) in [
        (
            "strongest_auc",
            "pareto_auc",
            "accuracy against the strongest attack's AUC, Pareto front joined",
            "strongest attack's AUC",
        ),
        (
            "strongest_tpr_at_fpr_0_001",
            "pareto_tpr",
            "accuracy against the strongest attack's TPR at 0.1% FPR, Pareto front joined",
            "strongest attack's TPR at 0.1% FPR",
        ),
    ] {
        let rows: Vec<&Value> = compare.as_array().into_iter().flatten().collect();
        let mut series: Vec<Series> = Vec::new();
        let mut front = Vec::new();
        for r in &rows {
            let (Some(x), Some(acc)) = (num(r, key), num(r, "test_accuracy")) else {
                continue;
            };
            let name = r.get("defence").and_then(Value::as_str).unwrap_or("?");
            series.push((
                name.to_owned(),
                COLOURS[series.len() % COLOURS.len()],
                vec![(x, acc)],
            ));
            if r.get(flag).and_then(Value::as_bool) == Some(true) {
                front.push((x, acc));
            }
        }
        if front.is_empty() {
            continue;
        }
        front.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        // A front of one point is drawn as that point alone.
        if front.len() > 1 {
            series.push(("Pareto front".to_owned(), "#000000", front));
        }
        s.push_str(&scatter_chart(title, x_label, "test accuracy", &series));
    }
    s
}

fn roc_series(audit: &Value) -> Vec<Series> {
    audit
        .get("attacks")
        .and_then(Value::as_array)
        .map(|attacks| {
            attacks
                .iter()
                .enumerate()
                .filter_map(|(i, a)| {
                    let points: Vec<(f64, f64)> = a
                        .get("roc")?
                        .as_array()?
                        .iter()
                        .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                        .collect();
                    Some((
                        a.get("name")?.as_str()?.to_owned(),
                        COLOURS[i % COLOURS.len()],
                        points,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::preprocessing_text;
    use serde_json::json;

    /// What was read off the data is listed in words (not as JSON), marked
    /// as not covered; a public preparation says nothing was read; a report
    /// from before the vocabulary was checked is not taken at its word.
    #[test]
    fn the_preparation_says_what_was_read_off_the_data() {
        let private = json!({"public": false, "scaling": "none", "read_from_data":
            ["categories of column 2 (`colour`)", "the number of classes (largest label + 1)"]});
        let text = preprocessing_text(Some(&private));
        assert!(
            text.contains("not covered by ε")
                && text.contains(
                    "read from data categories of column 2 (`colour`), the number of classes"
                )
                && !text.contains('['),
            "{text}"
        );
        let public = json!({"public": true, "scaling": "none", "read_from_data": []});
        let text = preprocessing_text(Some(&public));
        assert!(
            text.contains("nothing in it was read off the private data")
                && !text.contains("read from data"),
            "{text}"
        );
        let old = json!({"public": true, "scaling": "none"});
        let text = preprocessing_text(Some(&old));
        assert!(
            text.contains("predates the check of the vocabulary") && !text.contains("is covered"),
            "{text}"
        );
    }
}
