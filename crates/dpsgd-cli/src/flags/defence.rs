//! `compare --defences`: the defences to compare, each with its settings
//! (`relaxloss:alpha=1,upper=0.2`, `relaxloss+dp:eps=8`).

use dpsgd::train::{Defences, EarlyStopping, MistSettings, RelaxLossSettings};

/// One defence of the comparison, as spelled on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct DefenceSpec {
    /// The spelling, e.g. `relaxloss:alpha=1` or `relaxloss+dp:eps=8`.
    pub name: String,
    /// The empirical defences it turns on.
    pub defences: Defences,
    /// DP-SGD at this target ε, if part of it.
    pub epsilon: Option<f64>,
}

/// `key=value` pairs after a defence's colon.
fn params(name: &str, text: &str) -> Result<Vec<(String, f64)>, String> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("`{name}`: `{p}` is not key=value"))?;
            let v: f64 = v
                .trim()
                .parse()
                .map_err(|_| format!("`{name}`: `{v}` is not a number"))?;
            if !v.is_finite() {
                return Err(format!("`{name}`: `{v}` is not finite"));
            }
            Ok((k.trim().to_owned(), v))
        })
        .collect()
}

fn get(
    name: &str,
    pairs: &[(String, f64)],
    key: &str,
    default: f64,
    allowed: &[&str],
) -> Result<f64, String> {
    if let Some((k, _)) = pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "`{name}` has no parameter `{k}` (expected {})",
            allowed.join(", ")
        ));
    }
    Ok(pairs
        .iter()
        .find(|(k, _)| k == key)
        .map_or(default, |(_, v)| *v))
}

/// Parses one defence: `none`, `label-smoothing[:e=0.1]`,
/// `confidence-penalty[:beta=0.5]`, `relaxloss[:alpha=0.5,upper=0.3]`,
/// `mist[:m=4,t1=1,t2=1,lambda=1]`,
/// `early-stopping[:patience=5,validation=0.1]`, `weight-decay[:l=0.001]`,
/// `dropout[:p=0.3]`, `dp:eps=E`, or several joined with `+`
/// (`relaxloss+dp:eps=8`).
///
/// # Errors
///
/// An unknown defence or parameter, or a value out of its domain.
pub fn defence(s: &str) -> Result<DefenceSpec, String> {
    let mut spec = DefenceSpec {
        name: s.trim().to_owned(),
        defences: Defences::default(),
        epsilon: None,
    };
    for part in s.trim().split('+') {
        let (kind, rest) = part.split_once(':').unwrap_or((part, ""));
        let p = params(part, rest)?;
        let d = &mut spec.defences;
        match kind.trim() {
            "none" if p.is_empty() => {}
            "label-smoothing" => {
                let e = get(part, &p, "e", 0.1, &["e"])?;
                if !(0.0..1.0).contains(&e) {
                    return Err(format!("`{part}`: e must be in [0, 1)"));
                }
                d.label_smoothing = Some(e as f32);
            }
            "confidence-penalty" => {
                let b = get(part, &p, "beta", 0.5, &["beta"])?;
                if b < 0.0 {
                    return Err(format!("`{part}`: beta must be ≥ 0"));
                }
                d.confidence_penalty = Some(b as f32);
            }
            "relaxloss" => {
                let alpha = get(part, &p, "alpha", 0.5, &["alpha", "upper"])?;
                let upper = get(part, &p, "upper", 0.3, &["alpha", "upper"])?;
                if alpha <= 0.0 || !(upper > 0.0 && upper <= 1.0) {
                    return Err(format!("`{part}`: needs alpha > 0 and upper in (0, 1]"));
                }
                d.relaxloss = Some(RelaxLossSettings {
                    alpha: alpha as f32,
                    upper: upper as f32,
                });
            }
            "early-stopping" => {
                let allowed = ["patience", "validation"];
                let patience = get(part, &p, "patience", 5.0, &allowed)?;
                let validation = get(part, &p, "validation", 0.1, &allowed)?;
                if patience < 1.0
                    || patience.fract() != 0.0
                    || !(validation > 0.0 && validation < 1.0)
                {
                    return Err(format!(
                        "`{part}`: needs a whole patience ≥ 1 and validation in (0, 1)"
                    ));
                }
                d.early_stopping = Some(EarlyStopping {
                    validation_fraction: validation,
                    patience: patience as usize,
                });
            }
            "weight-decay" => {
                let l = get(part, &p, "l", 1e-3, &["l"])?;
                if l < 0.0 {
                    return Err(format!("`{part}`: l must be ≥ 0"));
                }
                d.weight_decay = Some(l);
            }
            "dropout" => {
                let q = get(part, &p, "p", 0.3, &["p"])?;
                if !(0.0..1.0).contains(&q) {
                    return Err(format!("`{part}`: p must be in [0, 1)"));
                }
                d.dropout = Some(q);
            }
            "dp" => {
                let eps = get(part, &p, "eps", f64::NAN, &["eps"])?;
                if eps.is_nan() || eps <= 0.0 {
                    return Err(format!("`{part}`: needs eps > 0, as dp:eps=1"));
                }
                spec.epsilon = Some(eps);
            }
            "mist" => {
                let allowed = ["m", "t1", "t2", "lambda"];
                let defaults = MistSettings::default();
                let m = get(part, &p, "m", defaults.submodels as f64, &allowed)?;
                let t1 = get(part, &p, "t1", defaults.local_epochs as f64, &allowed)?;
                let t2 = get(part, &p, "t2", defaults.cross_epochs as f64, &allowed)?;
                let lambda = get(part, &p, "lambda", f64::from(defaults.weight), &allowed)?;
                let whole = |v: f64, min: f64| v >= min && v.fract() == 0.0 && v < 1e6;
                if !(whole(m, 2.0) && whole(t1, 1.0) && whole(t2, 1.0) && lambda > 0.0) {
                    return Err(format!(
                        "`{part}`: needs whole m ≥ 2, t1 ≥ 1, t2 ≥ 1 and lambda > 0"
                    ));
                }
                d.mist = Some(MistSettings {
                    submodels: m as usize,
                    local_epochs: t1 as usize,
                    cross_epochs: t2 as usize,
                    weight: lambda as f32,
                });
            }
            other => {
                return Err(format!(
                    "`{other}` is not a defence (expected none, label-smoothing, confidence-penalty, relaxloss, mist, early-stopping, weight-decay, dropout, dp:eps=E, joined with +)"
                ));
            }
        }
    }
    Ok(spec)
}

/// `--defences` takes commas inside a defence's parameters, so the list is
/// split on commas that start a new defence: `a,b:x=1,y=2,c` → `a`,
/// `b:x=1,y=2`, `c`.
pub fn split_defences(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in text.split(',') {
        let is_param = piece.contains('=') && !piece.contains(':');
        match out.last_mut() {
            Some(last) if is_param && last.contains(':') => {
                last.push(',');
                last.push_str(piece);
            }
            _ => out.push(piece.to_owned()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_split_defences_on_commas_that_start_a_defence() {
        assert_eq!(
            split_defences("none,relaxloss:alpha=1,upper=0.2,dp:eps=8,early-stopping"),
            [
                "none",
                "relaxloss:alpha=1,upper=0.2",
                "dp:eps=8",
                "early-stopping"
            ]
        );
        assert_eq!(split_defences("relaxloss+dp:eps=1"), ["relaxloss+dp:eps=1"]);
    }

    #[test]
    fn should_parse_each_defence_with_its_defaults() {
        let none = defence("none").unwrap();
        assert!(none.defences.is_none() && none.epsilon.is_none());
        assert_eq!(
            defence("label-smoothing").unwrap().defences.label_smoothing,
            Some(0.1)
        );
        assert_eq!(
            defence("relaxloss:alpha=1,upper=0.2")
                .unwrap()
                .defences
                .relaxloss,
            Some(RelaxLossSettings {
                alpha: 1.0,
                upper: 0.2
            })
        );
        let es = defence("early-stopping:patience=3")
            .unwrap()
            .defences
            .early_stopping
            .unwrap();
        assert_eq!((es.patience, es.validation_fraction), (3, 0.1));
        let both = defence("relaxloss+dp:eps=8").unwrap();
        assert_eq!(both.epsilon, Some(8.0));
        assert!(both.defences.relaxloss.is_some());
        assert_eq!(
            defence("mist").unwrap().defences.mist,
            Some(MistSettings::default())
        );
        assert_eq!(
            defence("mist:m=3,t2=2,lambda=0.5").unwrap().defences.mist,
            Some(MistSettings {
                submodels: 3,
                local_epochs: 1,
                cross_epochs: 2,
                weight: 0.5
            })
        );
    }

    #[test]
    fn should_refuse_unknown_defences_and_bad_parameters() {
        for bad in [
            "purple",
            "dp",
            "dp:eps=0",
            "relaxloss:beta=1",
            "relaxloss:upper=2",
            "label-smoothing:e=1",
            "early-stopping:patience=0",
            "early-stopping:patience=1.5",
            "dropout:p=1",
            "weight-decay:l=-1",
            "dp:eps=x",
            "none:e=1",
            "mist:m=1",
            "mist:t1=0.5",
            "mist:lambda=0",
            "mist:k=2",
        ] {
            assert!(defence(bad).is_err(), "{bad}");
        }
    }
}
