//! `compare --defences`: the defences to compare, each with its settings
//! (`relaxloss:alpha=1,upper=0.2`, `relaxloss+dp:eps=8`), and sweeps of
//! their knobs (`relaxloss:alpha=0.1|0.3|1|2`, `--grid default`).

use super::parse::{RelaxAlpha, relax_alpha};
use dpsgd::train::{Defences, EarlyStopping, MistSettings, RelaxLossSettings};

/// The key RelaxLoss's `alpha=SlnK` is read under.
const PER_LN_K: &str = "alpha_per_ln_k";

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

/// `key=value` pairs after a defence's colon; RelaxLoss's `alpha=SlnK`
/// (a share of ln K) comes back as `alpha_per_ln_k=S`.
fn params(name: &str, text: &str) -> Result<Vec<(String, f64)>, String> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("`{name}`: `{p}` is not key=value"))?;
            if name.trim_start().starts_with("relaxloss")
                && k.trim() == "alpha"
                && v.trim().to_ascii_lowercase().ends_with("lnk")
            {
                return match relax_alpha(v) {
                    Ok(RelaxAlpha::PerLnK(share)) => Ok((PER_LN_K.to_owned(), share)),
                    Ok(RelaxAlpha::Absolute(_)) | Err(_) => {
                        Err(format!("`{name}`: `{v}` is not a positive share of ln K"))
                    }
                };
            }
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

/// Parses one defence for data with `classes` classes: `none`,
/// `label-smoothing[:e=0.1]`, `confidence-penalty[:beta=0.5]`,
/// `relaxloss[:alpha=0.2lnK,upper=0.3]` (α absolute, or a share of ln K),
/// `mist[:m=4,t1=1,t2=1,lambda=1]`,
/// `early-stopping[:patience=5,validation=0.1]`, `weight-decay[:l=0.001]`,
/// `dropout[:p=0.3]`, `dp:eps=E`, or several joined with `+`
/// (`relaxloss+dp:eps=8`).
///
/// # Errors
///
/// An unknown defence or parameter, or a value out of its domain.
pub fn defence(s: &str, classes: usize) -> Result<DefenceSpec, String> {
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
                let allowed = ["alpha", "upper", PER_LN_K];
                let upper = f64::from(RelaxLossSettings::DEFAULT_UPPER);
                let upper = get(part, &p, "upper", upper, &allowed)?;
                let alpha = match (
                    p.iter().find(|(k, _)| k == "alpha"),
                    p.iter().find(|(k, _)| k == PER_LN_K),
                ) {
                    (Some(_), Some(_)) => {
                        return Err(format!("`{part}`: gives alpha twice"));
                    }
                    (Some(&(_, a)), None) => RelaxAlpha::Absolute(a),
                    (None, Some(&(_, share))) => RelaxAlpha::PerLnK(share),
                    (None, None) => RelaxAlpha::DEFAULT,
                };
                let positive = match alpha {
                    RelaxAlpha::Absolute(a) | RelaxAlpha::PerLnK(a) => a > 0.0,
                };
                if !(positive && upper > 0.0 && upper <= 1.0) {
                    return Err(format!("`{part}`: needs alpha > 0 and upper in (0, 1]"));
                }
                let settings = alpha.settings(classes, upper);
                if !settings.alpha.is_finite() {
                    return Err(format!("`{part}`: alpha is too large"));
                }
                d.relaxloss = Some(settings);
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

/// Each defence's default grid for `compare --grid default`: its knob
/// over a range from mild to strong, around the defaults of
/// [`defence`] (and the values the RelaxLoss and MIST papers sweep).
pub fn default_grid(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "label-smoothing" => "e=0.05|0.1|0.2|0.4",
        "confidence-penalty" => "beta=0.1|0.5|1|2",
        "relaxloss" => "alpha=0.05lnK|0.1lnK|0.2lnK|0.35lnK|0.5lnK|0.7lnK",
        "mist" => "lambda=0.5|1|2|3",
        "early-stopping" => "patience=2|5|10",
        "weight-decay" => "l=0.0001|0.001|0.01",
        "dropout" => "p=0.1|0.3|0.5",
        "dp" => "eps=0.5|1|2|4|8",
        _ => return None,
    })
}

/// A parameter and the values it is swept over.
type Knob = (String, Vec<String>);

/// The most points one `--defences` item may expand to.
pub const MAX_POINTS: usize = 256;

/// Expands the sweeps of one defence into the defences it stands for: a
/// value `a|b|c` is swept, several swept values (in one part or in parts
/// joined by `+`) give every combination, in order (the last knob
/// fastest); with `grid`, a part with no parameters (`relaxloss`, but not
/// `none`) takes its [`default_grid`]. `mist:weight=…` is MIST's `lambda`.
/// An item without sweeps comes back as it is.
///
/// # Errors
///
/// An empty swept value, or more than [`MAX_POINTS`] combinations.
pub fn expand(item: &str, grid: bool) -> Result<Vec<String>, String> {
    // Per part: its kind and its parameters, each with its values.
    let mut parts: Vec<(String, Vec<Knob>)> = Vec::new();
    for part in item.trim().split('+') {
        let (kind, rest) = part.split_once(':').unwrap_or((part, ""));
        let kind = kind.trim();
        let rest = match (rest.trim().is_empty(), grid, default_grid(kind)) {
            (true, true, Some(g)) => g,
            _ => rest,
        };
        let mut params = Vec::new();
        for p in rest.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let k = match (kind, k.trim()) {
                ("mist", "weight") => "lambda".to_owned(),
                (_, k) => k.to_owned(),
            };
            let values: Vec<String> = v.split('|').map(|v| v.trim().to_owned()).collect();
            if values.len() > 1 && values.iter().any(String::is_empty) {
                return Err(format!("`{part}`: an empty value in the sweep `{v}`"));
            }
            params.push((k, values));
        }
        parts.push((kind.to_owned(), params));
    }
    // How many values each knob takes, in order.
    let knobs: Vec<usize> = parts
        .iter()
        .flat_map(|(_, ps)| ps.iter().map(|(_, v)| v.len()))
        .collect();
    let points: usize = knobs
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .unwrap_or(usize::MAX);
    if points > MAX_POINTS {
        return Err(format!(
            "`{}` sweeps {points} combinations (at most {MAX_POINTS})",
            item.trim()
        ));
    }
    let mut out = Vec::with_capacity(points);
    for index in 0..points {
        // The mixed-radix digits of `index`, the last knob fastest.
        let mut digits = vec![0; knobs.len()];
        let mut rest = index;
        for (d, &n) in digits.iter_mut().zip(&knobs).rev() {
            *d = rest % n;
            rest /= n;
        }
        let mut digit = digits.into_iter();
        let spelled: Vec<String> = parts
            .iter()
            .map(|(kind, ps)| {
                let params: Vec<String> = ps
                    .iter()
                    .map(|(k, vs)| {
                        let v = &vs[digit.next().unwrap_or(0)];
                        if v.is_empty() {
                            k.clone()
                        } else {
                            format!("{k}={v}")
                        }
                    })
                    .collect();
                if params.is_empty() {
                    kind.clone()
                } else {
                    format!("{kind}:{}", params.join(","))
                }
            })
            .collect();
        out.push(spelled.join("+"));
    }
    Ok(out)
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
        let none = defence("none", 10).unwrap();
        assert!(none.defences.is_none() && none.epsilon.is_none());
        assert_eq!(
            defence("label-smoothing", 10)
                .unwrap()
                .defences
                .label_smoothing,
            Some(0.1)
        );
        assert_eq!(
            defence("relaxloss:alpha=1,upper=0.2", 10)
                .unwrap()
                .defences
                .relaxloss,
            Some(RelaxLossSettings {
                alpha: 1.0,
                upper: 0.2
            })
        );
        // Bare RelaxLoss takes the default rule, α = 0.2 · ln K; an
        // `lnK` value is a share of ln K on the data's K.
        let alpha = |d: &str, k: usize| defence(d, k).unwrap().defences.relaxloss.unwrap();
        assert!((alpha("relaxloss", 10).alpha - 0.2 * 10f32.ln()).abs() < 1e-6);
        assert!((alpha("relaxloss", 2).alpha - 0.2 * 2f32.ln()).abs() < 1e-6);
        assert_eq!(alpha("relaxloss", 30).upper, 0.3);
        let relative = alpha("relaxloss:alpha=0.5lnK,upper=0.1", 30);
        assert!((relative.alpha - 0.5 * 30f32.ln()).abs() < 1e-6 && relative.upper == 0.1);
        let es = defence("early-stopping:patience=3", 10)
            .unwrap()
            .defences
            .early_stopping
            .unwrap();
        assert_eq!((es.patience, es.validation_fraction), (3, 0.1));
        let both = defence("relaxloss+dp:eps=8", 10).unwrap();
        assert_eq!(both.epsilon, Some(8.0));
        assert!(both.defences.relaxloss.is_some());
        assert_eq!(
            defence("mist", 10).unwrap().defences.mist,
            Some(MistSettings::default())
        );
        assert_eq!(
            defence("mist:m=3,t2=2,lambda=0.5", 10)
                .unwrap()
                .defences
                .mist,
            Some(MistSettings {
                submodels: 3,
                local_epochs: 1,
                cross_epochs: 2,
                weight: 0.5
            })
        );
    }

    #[test]
    fn should_expand_sweeps_and_default_grids() {
        assert_eq!(
            expand("relaxloss:alpha=0.1|1,upper=0.3", false).unwrap(),
            [
                "relaxloss:alpha=0.1,upper=0.3",
                "relaxloss:alpha=1,upper=0.3"
            ]
        );
        // Every combination across `+`, the last knob fastest.
        assert_eq!(
            expand("relaxloss:alpha=1|2+dp:eps=1|8", false).unwrap(),
            [
                "relaxloss:alpha=1+dp:eps=1",
                "relaxloss:alpha=1+dp:eps=8",
                "relaxloss:alpha=2+dp:eps=1",
                "relaxloss:alpha=2+dp:eps=8"
            ]
        );
        assert_eq!(expand(" none ", true).unwrap(), ["none"]);
        assert_eq!(expand("relaxloss", false).unwrap(), ["relaxloss"]);
        let grid = expand("relaxloss", true).unwrap();
        assert_eq!(grid.len(), 6);
        assert_eq!(grid[0], "relaxloss:alpha=0.05lnK");
        // Each share of ln K resolves on the data's K: 0.7 · ln 2.
        let last = defence(&grid[5], 2).unwrap().defences.relaxloss.unwrap();
        assert!((last.alpha - 0.7 * 2f32.ln()).abs() < 1e-6);
        assert_eq!(expand("dp", true).unwrap()[4], "dp:eps=8");
        // A part with parameters keeps them under --grid default.
        assert_eq!(expand("dropout:p=0.2", true).unwrap(), ["dropout:p=0.2"]);
        assert_eq!(
            expand("mist:weight=0.5|2", false).unwrap(),
            ["mist:lambda=0.5", "mist:lambda=2"]
        );
        // Every grid and every expansion parses.
        for kind in [
            "label-smoothing",
            "confidence-penalty",
            "relaxloss",
            "mist",
            "early-stopping",
            "weight-decay",
            "dropout",
            "dp",
        ] {
            for d in expand(kind, true).unwrap() {
                defence(&d, 10).unwrap_or_else(|e| panic!("{d}: {e}"));
            }
        }
        assert!(expand("relaxloss:alpha=1|", false).is_err());
        let huge = "dropout:p=0.1|0.2|0.3|0.4+weight-decay:l=1|2|3|4|5+dp:eps=1|2|3|4|5|6|7|8|9|10|11|12|13|14";
        assert!(
            expand(huge, false)
                .unwrap_err()
                .contains("280 combinations")
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
            "relaxloss:alpha=0lnK",
            "relaxloss:alpha=-1lnK",
            "relaxloss:alpha=lnK",
            "relaxloss:alpha=0",
            "relaxloss:alpha=1,alpha=0.2lnK",
            "relaxloss:alpha=1e300",
            "label-smoothing:e=0.5lnK",
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
            assert!(defence(bad, 10).is_err(), "{bad}");
        }
    }
}
