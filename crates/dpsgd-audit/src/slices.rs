//! Leakage by slice: an attack that looks harmless on average can expose a
//! class or the hardest records. Each slice (a class, or a range of loss
//! percentiles) gets its own ROC, and the most exposed slice is named rather
//! than averaged away.

use crate::error::{Result, invalid};
use crate::metrics::Roc;
use serde::{Deserialize, Serialize};

/// One record as an attack saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record {
    /// The attack's membership score (higher = more likely a member).
    pub score: f64,
    /// Whether the record was in the training set.
    pub member: bool,
    /// Its class label.
    pub label: usize,
    /// Its loss under the target model (for percentile slices).
    pub loss: f64,
}

/// The attack's figures on one slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    /// `class 3` or `loss percentile 90–100`.
    pub name: String,
    /// Members and non-members in the slice.
    pub counts: (usize, usize),
    /// ROC AUC within the slice.
    pub auc: f64,
    /// Membership advantage `max |TPR − FPR|` within the slice.
    pub advantage: f64,
    /// TPR at 1% FPR within the slice.
    pub tpr_at_fpr_0_01: f64,
}

/// Slices with fewer members or non-members than this are skipped: their
/// figures would be noise.
pub const MIN_SLICE: usize = 10;

fn slice(name: String, records: &[&Record]) -> Option<Slice> {
    let members: Vec<f64> = records
        .iter()
        .filter(|r| r.member)
        .map(|r| r.score)
        .collect();
    let others: Vec<f64> = records
        .iter()
        .filter(|r| !r.member)
        .map(|r| r.score)
        .collect();
    if members.len() < MIN_SLICE || others.len() < MIN_SLICE {
        return None;
    }
    let roc = Roc::new(&members, &others).ok()?;
    Some(Slice {
        name,
        counts: roc.counts,
        auc: roc.auc,
        advantage: roc.advantage(),
        tpr_at_fpr_0_01: roc.tpr_at_fpr(0.01),
    })
}

/// Per-class slices and `buckets` loss-percentile slices (of the pooled
/// losses, members and non-members together), most exposed first (by
/// advantage, then AUC). Slices with fewer than [`MIN_SLICE`] members or
/// non-members are left out.
///
/// # Errors
///
/// [`Error::InvalidParameter`](crate::Error::InvalidParameter) for no
/// records, a NaN score or loss, or `buckets = 0`.
pub fn slices(records: &[Record], buckets: usize) -> Result<Vec<Slice>> {
    if records.is_empty() {
        return Err(invalid("records", 0, "need at least one record"));
    }
    if buckets == 0 {
        return Err(invalid("buckets", 0, "need at least one percentile bucket"));
    }
    if let Some(r) = records.iter().find(|r| r.score.is_nan() || r.loss.is_nan()) {
        return Err(invalid(
            "record",
            format!("{r:?}"),
            "scores and losses must not be NaN",
        ));
    }
    let mut out = Vec::new();
    let classes = records.iter().map(|r| r.label).max().unwrap_or(0) + 1;
    for c in 0..classes {
        let in_class: Vec<&Record> = records.iter().filter(|r| r.label == c).collect();
        out.extend(slice(format!("class {c}"), &in_class));
    }
    let mut by_loss: Vec<&Record> = records.iter().collect();
    by_loss.sort_by(|a, b| a.loss.total_cmp(&b.loss));
    let n = by_loss.len();
    for b in 0..buckets {
        let (start, end) = (b * n / buckets, (b + 1) * n / buckets);
        let name = format!(
            "loss percentile {}–{}",
            100 * b / buckets,
            100 * (b + 1) / buckets
        );
        out.extend(slice(name, &by_loss[start..end]));
    }
    out.sort_by(|a, b| {
        b.advantage
            .total_cmp(&a.advantage)
            .then(b.auc.total_cmp(&a.auc))
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Class 1's members are perfectly separable, class 0's not at all: the
    /// average hides it, the slices name it.
    #[test]
    fn should_name_the_most_exposed_class() {
        let mut records = Vec::new();
        for i in 0..40 {
            let x = f64::from(i);
            // Class 0: members and non-members score alike.
            records.push(Record {
                score: x,
                member: true,
                label: 0,
                loss: 1.0 + x,
            });
            records.push(Record {
                score: x,
                member: false,
                label: 0,
                loss: 1.5 + x,
            });
            // Class 1: members score above every non-member.
            records.push(Record {
                score: 100.0 + x,
                member: true,
                label: 1,
                loss: 0.01,
            });
            records.push(Record {
                score: -100.0 - x,
                member: false,
                label: 1,
                loss: 50.0,
            });
        }
        let all = slices(&records, 4).unwrap();
        assert_eq!(all[0].name, "class 1");
        assert_eq!(all[0].auc, 1.0);
        assert_eq!(all[0].advantage, 1.0);
        assert_eq!(all[0].counts, (40, 40));
        let class0 = all.iter().find(|s| s.name == "class 0").unwrap();
        assert_eq!(class0.auc, 0.5);
        // Four loss buckets of 40 records each; the lowest-loss bucket is
        // all class-1 members, so it has no non-members and is skipped.
        assert!(all.iter().all(|s| s.name != "loss percentile 0–25"));
        assert!(all.iter().any(|s| s.name == "loss percentile 50–75"));
    }

    #[test]
    fn should_reject_bad_input() {
        assert!(slices(&[], 4).is_err());
        let r = Record {
            score: 0.0,
            member: true,
            label: 0,
            loss: f64::NAN,
        };
        assert!(slices(&[r], 4).is_err());
        let r = Record { loss: 1.0, ..r };
        assert!(slices(&[r], 0).is_err());
        // Too small to slice: no slices, not an error.
        assert!(slices(&[r], 1).unwrap().is_empty());
    }
}
