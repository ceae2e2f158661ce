//! What a report says about privacy, read strictly (issue 26): a guarantee
//! only from an ε that is a non-negative number with a δ in (0, 1), "no
//! DP" only where the report marks itself non-private the way the CLI
//! writes it, and anything else invalid, naming the field. `dpsgd report`
//! refuses an invalid report at load ([`check`]); the page shows one it is
//! given anyway as "no guarantee can be read", never as a guarantee and
//! never as "trained without DP".

use serde_json::Value;

/// The privacy of one trained model, as its report states it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Privacy {
    /// DP-SGD: `epsilon` a number ≥ 0 and `delta` a number in (0, 1).
    Private {
        /// ε.
        epsilon: f64,
        /// δ.
        delta: f64,
    },
    /// Trained without DP, marked as the CLI marks it: `epsilon` null,
    /// with no accountant and no noise multiplier.
    NonPrivate,
    /// Neither: what is wrong, naming the field.
    Invalid(String),
}

impl Privacy {
    /// ε, under DP.
    pub(crate) fn epsilon(&self) -> Option<f64> {
        match self {
            Self::Private { epsilon, .. } => Some(*epsilon),
            _ => None,
        }
    }
}

/// `v` as the report holds it, short enough for one line (JSON escapes
/// control characters).
fn shown(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s,
    }
}

/// An ε (or a budget) at `field`: a number ≥ 0.
fn epsilon_at(field: &str, v: &Value) -> Result<f64, String> {
    match v.as_f64() {
        Some(e) if e >= 0.0 && e.is_finite() => Ok(e),
        Some(e) => Err(format!("`{field}` is {e}, negative")),
        None => Err(format!("`{field}` is {}, not a number", shown(v))),
    }
}

/// The privacy of the train report `t` (or an audit's `target`); `at`
/// prefixes the field names (`target.`).
pub(crate) fn training(t: &Value, at: &str) -> Privacy {
    let Some(obj) = t.as_object() else {
        return Privacy::Invalid(format!(
            "`{}` is {}, not a training report",
            at.trim_end_matches('.'),
            shown(t)
        ));
    };
    let epsilon = match obj.get("epsilon") {
        None => return Privacy::Invalid(format!("`{at}epsilon` is missing")),
        Some(Value::Null) => {
            // The CLI's non-private report: no accountant, no noise.
            for key in ["accountant", "noise_multiplier"] {
                if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
                    return Privacy::Invalid(format!(
                        "`{at}epsilon` is null (no DP) but `{at}{key}` is {}",
                        shown(v)
                    ));
                }
            }
            return Privacy::NonPrivate;
        }
        Some(e) => match epsilon_at(&format!("{at}epsilon"), e) {
            Ok(e) => e,
            Err(why) => return Privacy::Invalid(why),
        },
    };
    match obj.get("delta") {
        None => Privacy::Invalid(format!("`{at}delta` is missing")),
        Some(d) => match d.as_f64() {
            Some(delta) if delta > 0.0 && delta < 1.0 => Privacy::Private { epsilon, delta },
            Some(x) => Privacy::Invalid(format!("`{at}delta` is {x}, outside (0, 1)")),
            None => Privacy::Invalid(format!("`{at}delta` is {}, not a number", shown(d))),
        },
    }
}

/// A sweep run's budget: `Some(ε)`, `None` for the non-private run
/// (`"inf"`, or null in older sweeps).
///
/// # Errors
///
/// Anything else (missing, negative, another string), naming the field.
pub(crate) fn sweep_budget(run: &Value, i: usize) -> Result<Option<f64>, String> {
    let field = format!("runs[{i}].target_epsilon");
    match run.get("target_epsilon") {
        None => Err(format!("`{field}` is missing")),
        Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "inf" => Ok(None),
        Some(e) => epsilon_at(&field, e).map(Some),
    }
}

/// A compare row's ε: `Some(ε)` for DP-SGD, `None` for a defence without
/// DP (null).
///
/// # Errors
///
/// Anything else (missing, negative, not a number), naming the field.
pub(crate) fn compare_epsilon(row: &Value, i: usize) -> Result<Option<f64>, String> {
    let field = format!("[{i}].epsilon");
    match row.get("epsilon") {
        None => Err(format!("`{field}` is missing")),
        Some(Value::Null) => Ok(None),
        Some(e) => epsilon_at(&field, e).map(Some),
    }
}

/// Refuses a report of `kind` whose privacy fields cannot be read: the
/// training's ε and δ (an audit's target's), the audit's claimed ε and
/// lower bound, every sweep budget, every compare row's ε.
///
/// # Errors
///
/// The first invalid field and what is wrong with it.
pub(crate) fn check(kind: &str, v: &Value) -> Result<(), String> {
    match kind {
        "train" => match training(v, "") {
            Privacy::Invalid(why) => Err(why),
            _ => Ok(()),
        },
        "audit" => check_audit(v),
        "sweep" => {
            for (i, run) in v["runs"].as_array().into_iter().flatten().enumerate() {
                sweep_budget(run, i)?;
            }
            Ok(())
        }
        "compare" => {
            for (i, row) in v.as_array().into_iter().flatten().enumerate() {
                compare_epsilon(row, i)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn check_audit(v: &Value) -> Result<(), String> {
    let privacy = training(&v["target"], "target.");
    if let Privacy::Invalid(why) = &privacy {
        return Err(why.clone());
    }
    if let Some(b) = v.get("epsilon_lower_bound").filter(|b| !b.is_null()) {
        epsilon_at("epsilon_lower_bound", b)?;
    }
    let Some(canary) = v.get("canary_audit").filter(|c| !c.is_null()) else {
        return Ok(());
    };
    let field = "canary_audit.claimed_epsilon";
    match (
        canary.get("claimed_epsilon").filter(|c| !c.is_null()),
        &privacy,
    ) {
        (Some(c), Privacy::Private { .. }) => epsilon_at(field, c).map(|_| ()),
        (None, Privacy::NonPrivate) => Ok(()),
        (None, _) => Err(format!(
            "`{field}` is missing, but `target.epsilon` claims a guarantee"
        )),
        (Some(c), _) => Err(format!(
            "`{field}` is {}, but `target.epsilon` is null (no DP)",
            shown(c)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn why(v: Value) -> String {
        match training(&v, "") {
            Privacy::Invalid(why) => why,
            other => panic!("{v} read as {other:?}"),
        }
    }

    #[test]
    fn only_a_number_and_a_delta_in_range_are_a_guarantee() {
        assert_eq!(
            training(&json!({"epsilon": 1.5, "delta": 1e-5}), ""),
            Privacy::Private {
                epsilon: 1.5,
                delta: 1e-5
            }
        );
        assert!(why(json!({"delta": 1e-5})).contains("`epsilon` is missing"));
        assert!(why(json!({"epsilon": -5, "delta": 1e-5})).contains("negative"));
        for bad in ["NaN", "inf", "-inf", "Infinity", "1.0"] {
            let w = why(json!({"epsilon": bad, "delta": 1e-5}));
            assert!(w.contains("not a number"), "{bad}: {w}");
        }
        assert!(why(json!({"epsilon": true, "delta": 1e-5})).contains("not a number"));
        assert!(why(json!({"epsilon": 1})).contains("`delta` is missing"));
        for d in [json!(0), json!(1), json!(-1e-5), json!(2)] {
            assert!(why(json!({"epsilon": 1, "delta": d})).contains("outside (0, 1)"));
        }
        assert!(why(json!({"epsilon": 1, "delta": "1e-5"})).contains("not a number"));
    }

    #[test]
    fn no_dp_is_read_only_from_the_clis_marking() {
        let marked =
            json!({"epsilon": null, "accountant": null, "noise_multiplier": null, "delta": 1e-5});
        assert_eq!(training(&marked, ""), Privacy::NonPrivate);
        let mut contradicted = marked.clone();
        contradicted["accountant"] = json!("rdp");
        assert!(why(contradicted).contains("`accountant` is \"rdp\""));
        let mut noisy = marked;
        noisy["noise_multiplier"] = json!(1.1);
        assert!(why(noisy).contains("noise_multiplier"));
    }

    #[test]
    fn budgets_of_sweeps_and_comparisons_are_checked() {
        let sweep = json!({"runs": [{"target_epsilon": 1}, {"target_epsilon": "inf"}, {"target_epsilon": null}]});
        assert!(check("sweep", &sweep).is_ok());
        for bad in [json!("NaN"), json!(-1), json!("1")] {
            let sweep = json!({"runs": [{"target_epsilon": 1}, {"target_epsilon": bad}]});
            let w = check("sweep", &sweep).unwrap_err();
            assert!(w.contains("runs[1].target_epsilon"), "{w}");
        }
        assert!(check("sweep", &json!({"runs": [{}]})).is_err());
        assert!(check("compare", &json!([{"epsilon": null}, {"epsilon": 2}])).is_ok());
        let w = check("compare", &json!([{"epsilon": null}, {"epsilon": "inf"}])).unwrap_err();
        assert!(w.contains("[1].epsilon"), "{w}");
        assert!(check("compare", &json!([{"defence": "none"}])).is_err());
    }

    #[test]
    fn an_audits_claim_agrees_with_its_target() {
        let target = json!({"epsilon": 1, "delta": 1e-5});
        let ok = json!({"target": target, "canary_audit": {"claimed_epsilon": 1}, "epsilon_lower_bound": 0.2});
        assert!(check("audit", &ok).is_ok());
        let mut unclaimed = ok.clone();
        unclaimed["canary_audit"]["claimed_epsilon"] = Value::Null;
        assert!(
            check("audit", &unclaimed)
                .unwrap_err()
                .contains("claimed_epsilon")
        );
        let mut negative = ok.clone();
        negative["epsilon_lower_bound"] = json!(-1);
        assert!(check("audit", &negative).is_err());
        let mut bad_target = ok;
        bad_target["target"]["epsilon"] = json!("NaN");
        assert!(
            check("audit", &bad_target)
                .unwrap_err()
                .contains("`target.epsilon`")
        );
        let nonprivate =
            json!({"target": {"epsilon": null}, "canary_audit": {"claimed_epsilon": 3}});
        assert!(check("audit", &nonprivate).is_err());
    }
}
