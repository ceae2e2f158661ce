//! Measured leakage: the loss-threshold membership-inference attack.

/// ROC AUC of the loss-threshold membership-inference attack (Yeom et al.
/// 2018): the probability that a random member (training example) has a
/// lower loss than a random non-member (test example), ties counting half.
/// 0.5 means no measurable leakage.
pub fn loss_threshold_auc(member_losses: &[f32], non_member_losses: &[f32]) -> f64 {
    if member_losses.is_empty() || non_member_losses.is_empty() {
        return f64::NAN;
    }
    // Mann–Whitney U with mid-ranks over the pooled losses.
    let mut pooled: Vec<(f32, bool)> = member_losses
        .iter()
        .map(|&l| (l, true))
        .chain(non_member_losses.iter().map(|&l| (l, false)))
        .collect();
    pooled.sort_by(|a, b| b.0.total_cmp(&a.0)); // highest loss first: rank 1
    let mut rank_sum_members = 0.0;
    let mut i = 0;
    while i < pooled.len() {
        let mut j = i;
        while j < pooled.len() && pooled[j].0 == pooled[i].0 {
            j += 1;
        }
        let mid_rank = (i + j + 1) as f64 / 2.0;
        rank_sum_members += pooled[i..j].iter().filter(|p| p.1).count() as f64 * mid_rank;
        i = j;
    }
    let (m, n) = (member_losses.len() as f64, non_member_losses.len() as f64);
    (rank_sum_members - m * (m + 1.0) / 2.0) / (m * n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_compute_auc_as_mann_whitney() {
        // Members all below non-members: perfect attack.
        assert_eq!(loss_threshold_auc(&[0.1, 0.2], &[0.5, 0.9, 1.0]), 1.0);
        assert_eq!(loss_threshold_auc(&[0.5, 0.9], &[0.1, 0.2]), 0.0);
        // Identical distributions with ties: 0.5.
        assert_eq!(loss_threshold_auc(&[0.3, 0.3], &[0.3, 0.3]), 0.5);
        // One of four pairs ordered the wrong way: 0.75.
        assert_eq!(loss_threshold_auc(&[0.1, 0.6], &[0.5, 0.7]), 0.75);
    }
}
