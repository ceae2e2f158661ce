//! The findings: what the numbers say and what to do, from the rules
//! stated in docs/report.md, each pointing at its evidence.

use super::charts::tick_label;
use super::inputs::{Finding, Inputs};
use super::privacy::{Privacy, sweep_budget};
use super::text::{attacks, esc, name_of, num, section_id, strongest};
use crate::output::format::percent;
use crate::output::pareto::{AUC_TARGET, cheapest_under, on_front};
use serde_json::Value;

/// A slice's exposure counts when its Bonferroni-adjusted p-value is below
/// this.
const SIGNIFICANCE: f64 = 0.05;

/// Chance level of TPR at 0.1% FPR.
const CHANCE_AT_0_1: f64 = 0.001;

/// The findings, from the rules stated in docs/report.md, most serious
/// first. On a page with several trained models, each finding names the
/// report it is about and links to that report's section.
pub fn findings(inputs: &Inputs) -> Vec<Finding> {
    let mut out = Vec::new();
    let trainings = inputs.trainings();
    let several = trainings.len() > 1;
    let who = |label: &str| {
        if several {
            format!("<code>{}</code>: ", esc(label))
        } else {
            String::new()
        }
    };
    // The audits' findings, each against its own target's guarantee (the
    // audited model's trainings come after the train reports).
    for (j, report) in inputs.audit.iter().enumerate() {
        let training = &trainings[inputs.train.len() + j];
        let prefix = who(&training.label);
        let audit_findings = audit_findings(inputs, &report.value, &training.privacy, j);
        out.extend(audit_findings.into_iter().map(|f| Finding {
            text: format!("{prefix}{}", f.text),
            ..f
        }));
    }
    for (i, t) in trainings.iter().enumerate() {
        let prefix = who(&t.label);
        let guarantee = section_id("guarantee", i);
        let epsilon = t.privacy.epsilon();
        // The price of the guarantee, where a sweep trained at this ε and
        // without DP on the same data (the sweep's own runs, not this
        // model, which may have been trained on another split).
        for (k, sweep) in inputs.sweep.iter().enumerate() {
            if let Some(eps) = epsilon
                && let Some(summary) = sweep_summary(&sweep.value)
                && let Some((_, acc)) = summary
                    .budgets
                    .iter()
                    .find(|(e, _)| (e - eps).abs() <= 1e-6 * eps.max(1.0))
            {
                out.push(Finding {
                    level: "info",
                    text: format!(
                        "{prefix}In the sweep, the guarantee at ε = {} costs {} points of accuracy: {} against {} without DP.",
                        tick_label(eps),
                        fmt_points((summary.baseline - acc).max(0.0)),
                        percent(*acc),
                        percent(summary.baseline)
                    ),
                    evidence: section_id("sweep", k),
                });
            }
        }
        if let Some(f) = t.preprocessing.and_then(private_preprocessing) {
            out.push(Finding {
                level: "warn",
                text: format!("{prefix}{f}"),
                evidence: guarantee.clone(),
            });
        }
        if let Privacy::Private { delta, .. } = t.privacy
            && let Some(n) = num(t.value, "dataset_size")
            && delta * n >= 0.1
        {
            out.push(Finding {
                level: "warn",
                text: format!(
                    "{prefix}δ = {delta:e} is close to 1/N = {:e}: a mechanism may then publish a whole record with probability δ·N = {:.2}. Use δ well below 1/N.",
                    1.0 / n,
                    delta * n
                ),
                evidence: guarantee.clone(),
            });
        }
        // Record-level DP on data with users: a heavy user is protected
        // only at group privacy.
        if let Some(eps) = epsilon
            && num(t.value, "max_records_per_user").is_none()
            && let Some(most) = t
                .value
                .pointer("/not_covered_by_epsilon/users/max_records_of_one_user")
                .and_then(Value::as_f64)
            && most > 1.0
        {
            out.push(Finding {
                level: "warn",
                text: format!(
                    "{prefix}The data names users, but ε = {} protects one record: a user with n records is protected only at about ε·n (group privacy, with δ growing as n·e^((n−1)ε)·δ); a user with {most:.0} records here gets {}. Train with --privacy-unit user to protect each user.",
                    tick_label(eps),
                    crate::training::group_privacy(most as usize, eps, num(t.value, "delta").unwrap_or(f64::NAN))
                ),
                evidence: guarantee.clone(),
            });
        }
        if t.value.get("secure") == Some(&Value::Bool(false)) && epsilon.is_some() {
            out.push(Finding {
                level: "warn",
                text: format!("{prefix}The run was seeded: its noise is reproducible by anyone with the seed. Train the model you ship without --seed."),
                evidence: guarantee,
            });
        }
    }
    // A sweep's preparation (its models are not on the page as trainings).
    for (k, sweep) in inputs.sweep.iter().enumerate() {
        if let Some(f) = sweep
            .value
            .get("preprocessing")
            .and_then(private_preprocessing)
            && out.iter().all(|o| !o.text.ends_with(&f))
        {
            out.push(Finding {
                level: "warn",
                text: f,
                evidence: section_id("sweep", k),
            });
        }
    }
    for (k, compare) in inputs.compare.iter().enumerate() {
        if let Some(rows) = compare.value.as_array()
            && let Some(best) = front_finding(rows)
        {
            out.push(Finding {
                level: "info",
                text: best,
                evidence: section_id("defences", k),
            });
        }
    }
    // Most serious first (the order within a level is the rules' order).
    out.sort_by_key(|f| match f.level {
        "alert" => 0,
        "warn" => 1,
        _ => 2,
    });
    out
}

/// The warning for a preparation derived from the private data, if it was.
fn private_preprocessing(p: &Value) -> Option<String> {
    if p.get("public").and_then(Value::as_bool) != Some(false) {
        return None;
    }
    let read: Vec<String> = p
        .get("read_from_data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(esc)
        .collect();
    let what = if read.is_empty() {
        String::new()
    } else {
        format!(" ({})", read.join("; "))
    };
    Some(format!(
        "The data preparation was derived from the private data{what} (see the guarantee): it is <b>not covered by ε</b> — one record can change it, e.g. a category or class only that record has adds an input or an output to the model, visible in its shape. Use public information instead: a public schema (<code>--schema FILE</code>) for categories and classes, <code>--num-classes</code>, published feature ranges."
    ))
}

/// The findings of the `j`-th audit, whose target's privacy is `privacy`.
fn audit_findings(inputs: &Inputs, audit: &Value, privacy: &Privacy, j: usize) -> Vec<Finding> {
    let mut out = Vec::new();
    let leakage = section_id("leakage", j);
    let epsilon = privacy.epsilon();
    let non_private = *privacy == Privacy::NonPrivate;
    let group = audit
        .get("canary_audit")
        .and_then(|c| num(c, "claimed_group_epsilon"));
    let records = audit
        .pointer("/canary_audit/records_per_canary")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    if let (Some(bound), Some(claimed), Some(group)) = (
        num(audit, "epsilon_lower_bound"),
        audit
            .get("canary_audit")
            .and_then(|c| num(c, "claimed_epsilon")),
        group,
    ) {
        // Canary users against a record-level claim: the claim covers a
        // user of k records only at group privacy (kε).
        let above_record = audit
            .pointer("/canary_audit/exceeds_record_level_claim")
            .and_then(Value::as_bool)
            == Some(true);
        if exceeds_claim(audit) {
            out.push(Finding {
                level: "alert",
                text: format!(
                    "The audit PROVES more leakage than the guarantee allows even at group privacy: canary users of {records} records show ε ≥ {bound:.2}, above the k·ε = {group:.2} that the record-level ε = {claimed:.2} implies for them. The privacy claim is false; do not ship this model, and report the bug."
                ),
                evidence: leakage.clone(),
            });
        } else if above_record {
            out.push(Finding {
                level: "warn",
                text: format!(
                    "Canary users of {records} records show ε ≥ {bound:.2}, above the record-level ε = {claimed:.2}: the claim protects records, not users (a user of {records} records is covered only at k·ε = {group:.2}). Train with --privacy-unit user to protect each user."
                ),
                evidence: leakage.clone(),
            });
        }
    } else if let (Some(bound), Some(claimed)) = (
        num(audit, "epsilon_lower_bound"),
        audit
            .get("canary_audit")
            .and_then(|c| num(c, "claimed_epsilon")),
    ) {
        if exceeds_claim(audit) {
            out.push(Finding {
                level: "alert",
                text: format!(
                    "The audit PROVES more leakage than the guarantee allows: ε ≥ {bound:.2} measured against ε = {claimed:.2} claimed. The privacy claim is false; do not ship this model, and report the bug."
                ),
                evidence: leakage.clone(),
            });
        } else if bound >= 0.5 * claimed {
            out.push(Finding {
                level: "info",
                text: format!(
                    "The accounting is tight: the canary audit proves ε ≥ {bound:.2}, within a factor of two of the claimed ε = {claimed:.2}."
                ),
                evidence: leakage.clone(),
            });
        }
    }
    if non_private && let Some(bound) = num(audit, "epsilon_lower_bound").filter(|b| *b > 0.0) {
        out.push(Finding {
            level: "warn",
            text: format!(
                "The canary audit proves that this model leaks: with {} confidence, no mechanism with ε below {bound:.2} could have produced what the attack saw on the inserted canaries.",
                audit
                    .pointer("/canary_audit/one_run/alpha")
                    .and_then(Value::as_f64)
                    .map_or_else(|| "95%".into(), |a| format!("{:.0}%", 100.0 * (1.0 - a)))
            ),
            evidence: leakage.clone(),
        });
    }
    // The strongest attack is the evidence (a weak one must not hide it).
    if non_private
        && let Some((best, auc)) = strongest(attacks(audit), "auc")
        && auc > 0.55
    {
        let advice = sweep_advice(inputs).unwrap_or_else(|| "Recommended: train with DP-SGD; run <code>dpsgd sweep</code> to choose the ε at which the accuracy loss is acceptable.".into());
        out.push(Finding {
            level: "alert",
            text: format!(
                "Without DP, membership in the training data is measurably inferable: the {} attack's AUC is {auc:.3} (0.5 is guessing). {advice}",
                esc(name_of(best))
            ),
            evidence: leakage.clone(),
        });
    }
    if let Some((lira, tpr)) = strongest(
        attacks(audit).filter(|a| name_of(a).starts_with("lira")),
        "tpr_at_fpr_0_001",
    ) && let Some(auc) = num(lira, "auc")
        && tpr >= 5.0 * CHANCE_AT_0_1
        && auc < 0.6
    {
        out.push(Finding {
            level: "warn",
            text: format!(
                "Averages hide exposed records: the {} attack's AUC is only {auc:.3}, but at a false-positive rate of 0.1% it still identifies {} of the members ({:.0}× chance). A few records are at real risk.",
                esc(name_of(lira)),
                percent(tpr),
                tpr / CHANCE_AT_0_1
            ),
            evidence: leakage.clone(),
        });
    }
    let slices = attacks(audit).flat_map(|a| {
        a.get("slices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(move |s| (a, s))
    });
    // Only a slice whose exposure survives the correction for looking
    // at many slices is a finding: its p-value, adjusted over its
    // attack's slices, below 5% divided by the number of attacks
    // (Bonferroni again, over the attacks searched).
    let searched = attacks(audit)
        .filter(|a| {
            a.get("slices")
                .and_then(Value::as_array)
                .is_some_and(|s| !s.is_empty())
        })
        .count()
        .max(1);
    if let Some((a, slice, adv, p)) = slices
        .filter_map(|(a, s)| Some((a, s, num(s, "advantage")?, num(s, "p_value_adjusted")?)))
        .filter(|x| x.3 * (searched as f64) < SIGNIFICANCE)
        .max_by(|x, y| x.2.total_cmp(&y.2))
        && adv > 0.1
    {
        out.push(Finding {
            level: "warn",
            text: format!(
                "Membership could be inferred with {} balanced accuracy for the most exposed records ({}, by the {} attack): an attacker's advantage of {adv:.2} there (adjusted p {}: not a fluke of looking at many slices).",
                percent(0.5 + adv / 2.0),
                esc(name_of(slice)),
                esc(name_of(a)),
                match crate::output::format::p_value(p) {
                    small if small.starts_with('<') => esc(&small),
                    p => format!("= {p}"),
                }
            ),
            evidence: section_id("slices", j),
        });
    }
    if let Some(eps) = epsilon
        && !exceeds_claim(audit)
        && let Some((best, auc)) = strongest(attacks(audit), "auc")
    {
        out.push(Finding {
            level: "info",
            text: format!(
                "The audit found nothing beyond the guarantee: the strongest attack ({}) reaches AUC {auc:.3}{}.",
                esc(name_of(best)),
                match num(audit, "epsilon_lower_bound") {
                    Some(b) => format!(", and the canaries prove only ε ≥ {b:.2} against the claimed {eps:.2}"),
                    None => String::new(),
                }
            ),
            evidence: leakage.clone(),
        });
    }
    out
}

/// Whether the audit refuted the claim: the audit's own verdict
/// (`canary_audit.exceeds_claim`, which also sets the CLI's exit code), so
/// the page and the command never disagree on where "above the claim"
/// begins.
fn exceeds_claim(audit: &Value) -> bool {
    audit
        .pointer("/canary_audit/exceeds_claim")
        .and_then(Value::as_bool)
        == Some(true)
}

fn fmt_points(drop: f64) -> String {
    format!("{:.1}", 100.0 * drop)
}

/// What a sweep says about the price of DP: the non-private accuracy and
/// the mean accuracy at each swept ε (several seeds averaged), smallest ε
/// first.
struct SweepSummary {
    baseline: f64,
    budgets: Vec<(f64, f64)>,
}

fn sweep_summary(sweep: &Value) -> Option<SweepSummary> {
    let runs = sweep.get("runs")?.as_array()?;
    let mut by_eps: Vec<(f64, Vec<f64>)> = Vec::new();
    let mut baseline = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let Some(acc) = num(r, "test_accuracy") else {
            continue;
        };
        // A budget is a number; the non-private run's is "inf" (or null);
        // anything else is no run of either.
        match sweep_budget(r, i) {
            Ok(Some(e)) => match by_eps.iter_mut().find(|(x, _)| *x == e) {
                Some((_, v)) => v.push(acc),
                None => by_eps.push((e, vec![acc])),
            },
            Ok(None) => baseline.push(acc),
            Err(_) => {}
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    if baseline.is_empty() || by_eps.is_empty() {
        return None;
    }
    by_eps.sort_by(|a, b| a.0.total_cmp(&b.0));
    Some(SweepSummary {
        baseline: mean(&baseline),
        budgets: by_eps.iter().map(|(e, v)| (*e, mean(v))).collect(),
    })
}

/// The DP-SGD advice from a sweep: the smallest ε within 2 points of the
/// non-private accuracy, or, where none is, the largest ε swept and its
/// cost.
fn sweep_advice(inputs: &Inputs) -> Option<String> {
    let summary = inputs.sweep.iter().find_map(|s| sweep_summary(&s.value))?;
    let drop = |acc: f64| (summary.baseline - acc).max(0.0);
    if let Some((eps, acc)) = summary
        .budgets
        .iter()
        .find(|(_, acc)| summary.baseline - acc <= 0.02)
    {
        return Some(format!(
            "Recommended: DP-SGD at ε = {} (the sweep's smallest budget within 2 points of the non-private accuracy: {} points lost).",
            tick_label(*eps),
            fmt_points(drop(*acc))
        ));
    }
    let (eps, acc) = summary.budgets.last()?;
    Some(format!(
        "Recommended: DP-SGD, but no swept budget comes within 2 points of the non-private accuracy ({}): the largest, ε = {}, loses {} points. Sweep larger budgets, or tune the training (epochs, batch size, recipe) under DP, before choosing ε.",
        percent(summary.baseline),
        tick_label(*eps),
        fmt_points(drop(*acc))
    ))
}

/// The comparison's Pareto front read at a leakage target: the cheapest
/// point (the most accurate) whose strongest attack's AUC is at most
/// [`AUC_TARGET`], with what it costs against no defence and whether it
/// carries a guarantee; or, where no point reaches the target, the least
/// leaky point.
fn front_finding(rows: &[Value]) -> Option<String> {
    // The strongest attack's AUC, as compare.json states it (older files:
    // the largest over the attacks).
    let auc_of = |r: &Value| {
        num(r, "strongest_auc").or_else(|| {
            attacks(r)
                .filter_map(|a| num(a, "auc"))
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
        })
    };
    let points: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| {
            (
                num(r, "test_accuracy").unwrap_or(f64::NAN),
                auc_of(r).unwrap_or(f64::NAN),
            )
        })
        .collect();
    let name = |i: usize| {
        rows[i]
            .get("defence")
            .and_then(Value::as_str)
            .unwrap_or("?")
    };
    let kind = |i: usize| match rows[i].get("epsilon").and_then(Value::as_f64) {
        Some(e) => format!("DP-SGD at ε = {e:.2}: a guarantee"),
        None => "an empirical defence: no guarantee".to_owned(),
    };
    let baseline = rows
        .iter()
        .position(|r| r.get("defence").and_then(Value::as_str) == Some("none"))
        .map(|i| points[i]);
    let cost = |i: usize| match baseline {
        Some((acc, auc)) if acc.is_finite() && auc.is_finite() => format!(
            "; no defence: {} at AUC {auc:.3}, so {} points of accuracy",
            percent(acc),
            fmt_points((acc - points[i].0).max(0.0))
        ),
        _ => String::new(),
    };
    // `<code>name</code> (accuracy, AUC; kind; cost)`.
    let point = |i: usize| {
        format!(
            "<code>{}</code> ({}, AUC {:.3}; {}{})",
            esc(name(i)),
            percent(points[i].0),
            points[i].1,
            kind(i),
            cost(i)
        )
    };
    if let Some(i) = cheapest_under(&points, AUC_TARGET) {
        return Some(format!(
            "The cheapest point of the accuracy–leakage front with the strongest attack's AUC ≤ {AUC_TARGET}: {}.",
            point(i)
        ));
    }
    let front = on_front(&points);
    let least = (0..rows.len())
        .filter(|&i| front[i])
        .min_by(|&a, &b| points[a].1.total_cmp(&points[b].1))?;
    Some(format!(
        "No point of the comparison keeps the strongest attack's AUC ≤ {AUC_TARGET}; the least leaky point of the front is {}.",
        point(least)
    ))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{audit, levels, with_audit};
    use serde_json::json;

    /// The audit's verdict with its bound, as the library writes both.
    fn verdict(claimed: f64, bound: f64, exceeds: bool) -> serde_json::Value {
        let mut a = audit(Some(claimed), Some(bound), 0.5, (0.5, 0.001));
        a["canary_audit"]["exceeds_claim"] = json!(exceeds);
        a
    }

    /// The comparison's finding reads the front at AUC ≤ 0.55: the most
    /// accurate point under it, what it costs and whether it carries a
    /// guarantee; with none under it, the least leaky point of the front.
    /// Rows without `strongest_auc` (older files) use their attacks' largest.
    #[test]
    fn the_comparison_finding_reads_the_front_at_the_target() {
        let row = |name: &str, acc: f64, auc: f64, eps: Option<f64>| {
            json!({"defence": name, "test_accuracy": acc, "epsilon": eps,
                   "attacks": [{"name": "loss", "auc": 0.5}, {"name": "lira-online", "auc": auc}]})
        };
        let rows = vec![
            row("none", 0.98, 0.60, None),
            row("relaxloss:alpha=1", 0.93, 0.52, None),
            row("relaxloss:alpha=2", 0.62, 0.51, None),
            row("dp:eps=1", 0.81, 0.54, Some(1.0)),
        ];
        let text = super::front_finding(&rows).expect("a finding");
        assert!(text.contains("<code>relaxloss:alpha=1</code> (93.00%, AUC 0.520; an empirical defence: no guarantee; no defence: 98.00% at AUC 0.600, so 5.0 points"), "{text}");
        let leaky = vec![
            row("none", 0.98, 0.70, None),
            row("dp:eps=8", 0.95, 0.58, Some(8.0)),
            row("mist", 0.90, 0.60, None),
        ];
        let text = super::front_finding(&leaky).expect("a finding");
        assert!(
            text.starts_with("No point of the comparison keeps"),
            "{text}"
        );
        assert!(
            text.contains(
                "<code>dp:eps=8</code> (95.00%, AUC 0.580; DP-SGD at ε = 8.00: a guarantee"
            ),
            "{text}"
        );
        assert!(super::front_finding(&[]).is_none());
    }

    #[test]
    fn a_lower_bound_above_the_claim_is_an_alert_and_a_close_one_is_tight() {
        let found = levels(&with_audit(verdict(2.0, 2.5, true)));
        assert!(
            found[0].0 == "alert" && found[0].1.contains("PROVES"),
            "{found:?}"
        );
        let found = levels(&with_audit(verdict(2.0, 1.2, false)));
        assert!(
            found.iter().any(|f| f.0 == "info" && f.1.contains("tight")),
            "{found:?}"
        );
        // A loose bound is neither: the audit only agrees with the claim.
        let found = levels(&with_audit(verdict(2.0, 0.3, false)));
        assert!(
            found.len() == 1 && found[0].1.contains("nothing beyond the guarantee"),
            "{found:?}"
        );
    }

    /// One threshold: the page alerts exactly when the audit's verdict
    /// (`exceeds_claim`, which sets the CLI's exit code 3) says so. A bound
    /// above the claim by less than the bounds' bisection tolerance (1e-6)
    /// used to be an alert on the page while the CLI passed it.
    #[test]
    fn the_alert_follows_the_audits_verdict() {
        let within_tolerance = verdict(2.0, 2.0 + 5e-7, false);
        let found = levels(&with_audit(within_tolerance));
        assert!(found.iter().all(|f| f.0 != "alert"), "{found:?}");
        assert!(
            found
                .iter()
                .any(|f| f.1.contains("nothing beyond the guarantee")),
            "{found:?}"
        );
        let refuted = levels(&with_audit(verdict(2.0, 2.0 + 5e-7, true)));
        assert!(
            refuted[0].0 == "alert" && refuted[0].1.contains("PROVES"),
            "{refuted:?}"
        );
        assert!(
            refuted
                .iter()
                .all(|f| !f.1.contains("nothing beyond the guarantee")),
            "{refuted:?}"
        );
    }

    #[test]
    fn dp_is_recommended_only_without_dp_and_with_measurable_leakage() {
        let leaky = levels(&with_audit(audit(None, None, 0.60, (0.5, 0.001))));
        assert!(
            leaky
                .iter()
                .any(|f| f.1.contains("Recommended: train with DP-SGD"))
        );
        let mild = levels(&with_audit(audit(None, None, 0.53, (0.52, 0.001))));
        assert!(
            mild.iter().all(|f| !f.1.contains("Recommended")),
            "{mild:?}"
        );
        let private = levels(&with_audit(audit(Some(1.0), None, 0.60, (0.5, 0.001))));
        assert!(
            private.iter().all(|f| !f.1.contains("Recommended")),
            "{private:?}"
        );
    }

    #[test]
    fn the_sweep_picks_the_smallest_budget_within_two_points() {
        let mut inputs = with_audit(audit(None, None, 0.60, (0.5, 0.001)));
        inputs
            .add(
                json!({"runs": [
                    {"target_epsilon": "inf", "test_accuracy": 0.95},
                    {"target_epsilon": 1.0, "test_accuracy": 0.90},
                    {"target_epsilon": 4.0, "test_accuracy": 0.94},
                    {"target_epsilon": 8.0, "test_accuracy": 0.95}
                ]}),
                "sweep",
            )
            .unwrap();
        let found = levels(&inputs);
        assert!(
            found.iter().any(|f| f.1.contains("DP-SGD at ε = 4")),
            "{found:?}"
        );
    }

    /// No swept budget within 2 points: the advice names the largest one
    /// and its cost instead of asking for a sweep that is already there.
    #[test]
    fn a_sweep_with_no_affordable_budget_says_so() {
        let mut inputs = with_audit(audit(None, None, 0.60, (0.5, 0.001)));
        let sweep = json!({"runs": [
            {"target_epsilon": "inf", "test_accuracy": 0.97},
            {"target_epsilon": 1.0, "test_accuracy": 0.50},
            {"target_epsilon": 8.0, "test_accuracy": 0.80},
            {"target_epsilon": 8.0, "test_accuracy": 0.84}
        ]});
        inputs.add(sweep.clone(), "sweep").unwrap();
        let found = levels(&inputs);
        assert!(
            found
                .iter()
                .any(|f| f.1.contains("the largest, ε = 8, loses 15.0 points")),
            "{found:?}"
        );
        assert!(found.iter().all(|f| !f.1.contains("run <code>dpsgd sweep")));
        // Under DP at a swept ε, the sweep's price of the guarantee, and
        // the audit's agreement with it; the seeded-run warning comes first.
        let mut a = audit(Some(1.0), Some(0.2), 0.52, (0.51, 0.001));
        a["target"]["secure"] = json!(false);
        let mut inputs = with_audit(a);
        inputs.add(sweep, "sweep").unwrap();
        let found = levels(&inputs);
        assert_eq!(found[0].0, "warn", "{found:?}");
        assert!(
            found.iter().any(|f| f
                .1
                .contains("at ε = 1 costs 47.0 points of accuracy: 50.00% against 97.00%")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|f| f.1.contains("found nothing beyond the guarantee")
                    && f.1.contains("ε ≥ 0.20 against the claimed 1.00")),
            "{found:?}"
        );
    }

    #[test]
    fn averages_hiding_records_and_a_large_delta_are_warned() {
        let found = levels(&with_audit(audit(None, None, 0.52, (0.55, 0.02))));
        assert!(
            found.iter().any(|f| f.0 == "warn" && f.1.contains("20×")),
            "{found:?}"
        );
        let mut a = audit(Some(1.0), None, 0.5, (0.5, 0.001));
        a["target"]["delta"] = json!(5e-4);
        let found = levels(&with_audit(a));
        assert!(
            found.iter().any(|f| f.1.contains("close to 1/N")),
            "{found:?}"
        );
    }

    /// Preparation derived from the private data is a warning that names
    /// what was read and says it is not covered by ε; public preparation
    /// is not.
    #[test]
    fn private_preprocessing_is_warned() {
        let mut a = audit(Some(1.0), None, 0.5, (0.5, 0.001));
        a["preprocessing"] = json!({"public": false, "scaling": "min-max of the training set"});
        let found = levels(&with_audit(a.clone()));
        assert!(
            found
                .iter()
                .any(|f| f.0 == "warn" && f.1.contains("derived from the private data")),
            "{found:?}"
        );
        a["preprocessing"] = json!({"public": false, "scaling": "none",
            "read_from_data": ["categories of column 2 (`<colour>`)", "the number of classes (largest label + 1)"]});
        let found = levels(&with_audit(a.clone()));
        assert!(
            found.iter().any(|f| f.0 == "warn"
                && f.1
                    .contains("categories of column 2 (`&lt;colour&gt;`); the number of classes")
                && f.1.contains("not covered by ε")
                && f.1.contains("--schema")),
            "{found:?}"
        );
        a["preprocessing"] = json!({"public": true});
        let found = levels(&with_audit(a));
        assert!(
            found
                .iter()
                .all(|f| !f.1.contains("derived from the private data")),
            "{found:?}"
        );
    }

    /// The strongest attack is the evidence: a weak loss attack must not
    /// hide a strong LiRA (and offline LiRA counts as LiRA).
    #[test]
    fn the_strongest_attack_decides() {
        let mut a = audit(None, None, 0.53, (0.52, 0.001));
        a["attacks"][1]["name"] = json!("lira-offline");
        a["attacks"][1]["auc"] = json!(0.61);
        let found = levels(&with_audit(a));
        assert!(
            found
                .iter()
                .any(|f| f.0 == "alert" && f.1.contains("lira-offline attack's AUC is 0.610")),
            "{found:?}"
        );
    }

    /// A slice is a finding only when its exposure survives the correction
    /// for looking at many slices; then the most exposed such slice, over
    /// every attack, is named.
    #[test]
    fn only_a_significant_slice_is_a_finding() {
        let slice = |name: &str, adv: f64, p: f64| json!({"name": name, "advantage": adv, "auc": 0.6, "counts": [50, 50], "p_value_adjusted": p});
        let mut a = audit(Some(1.0), None, 0.5, (0.5, 0.001));
        a["attacks"][0]["slices"] = json!([slice("class 7", 0.3, 0.4)]);
        let found = levels(&with_audit(a.clone()));
        assert!(found.iter().all(|f| !f.1.contains("class 7")), "{found:?}");
        a["attacks"][1]["slices"] =
            json!([slice("class 2", 0.25, 0.001), slice("class 3", 0.2, 0.01)]);
        let found = levels(&with_audit(a.clone()));
        assert!(
            found
                .iter()
                .any(|f| f.1.contains("class 2, by the lira-online attack")
                    && f.1.contains("62.50%")),
            "{found:?}"
        );
        // Two attacks searched: 0.03 < 0.05 is not enough (0.05 / 2).
        a["attacks"][1]["slices"] = json!([slice("class 2", 0.25, 0.03)]);
        let found = levels(&with_audit(a.clone()));
        assert!(found.iter().all(|f| !f.1.contains("class 2")), "{found:?}");
        // Reports from before the p-values: no claim of exposure.
        a["attacks"][1]["slices"] = json!([{"name": "class 2", "advantage": 0.4}]);
        let found = levels(&with_audit(a));
        assert!(found.iter().all(|f| !f.1.contains("class 2")), "{found:?}");
    }
}
