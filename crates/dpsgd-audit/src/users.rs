//! Membership of **users**: one score per user from the scores of their
//! records.
//!
//! Under user-level DP the unit of privacy is a user with all their
//! records; an attack on it asks "was this *user* in the training set?".
//! Every record-level score (higher means member) becomes a user-level
//! one by aggregating the user's records:
//!
//! * [`UserAggregate::Mean`]: the mean of their records' scores, the
//!   attacker who pools the evidence of every record;
//! * [`UserAggregate::Max`]: the best of them, the attacker who bets on
//!   the user's most exposed record.
//!
//! A user is a member when their records are (all of them): data split by
//! record, with one user on both sides, has no user-level membership and
//! is refused (split it by user instead).
//!
//! # Example
//!
//! ```
//! use dpsgd_audit::users::{UserAggregate, user_scores};
//! // Users 7 (two member records) and 3 (one non-member record).
//! let s = user_scores(&[0.2, 0.9, 0.4], &[7, 7, 3], &[true, true, false], UserAggregate::Max)?;
//! assert_eq!(s.users, [3, 7]);
//! assert_eq!(s.scores, [0.4, 0.9]);
//! assert_eq!(s.is_member, [false, true]);
//! # Ok::<(), dpsgd_audit::Error>(())
//! ```

use crate::error::{Result, invalid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a user's record scores become the user's score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserAggregate {
    /// The mean of the user's record scores.
    Mean,
    /// The highest of the user's record scores (the most member-like).
    Max,
}

impl UserAggregate {
    /// Both aggregates, in the order reports list them.
    pub const ALL: [UserAggregate; 2] = [UserAggregate::Mean, UserAggregate::Max];

    /// `mean` or `max`.
    pub fn name(&self) -> &'static str {
        match self {
            UserAggregate::Mean => "mean",
            UserAggregate::Max => "max",
        }
    }
}

/// One score per distinct user, in ascending order of user id (three
/// parallel vectors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserScores {
    /// The user ids, ascending.
    pub users: Vec<u64>,
    /// Each user's aggregate score.
    pub scores: Vec<f64>,
    /// Whether each user is a member.
    pub is_member: Vec<bool>,
}

impl UserScores {
    /// The member users' scores.
    pub fn members(&self) -> Vec<f64> {
        self.side(true)
    }

    /// The non-member users' scores.
    pub fn non_members(&self) -> Vec<f64> {
        self.side(false)
    }

    fn side(&self, member: bool) -> Vec<f64> {
        self.scores
            .iter()
            .zip(&self.is_member)
            .filter(|(_, m)| **m == member)
            .map(|(s, _)| *s)
            .collect()
    }
}

/// Each user's aggregate (`how`) of their records' `scores` ("higher means
/// member"), with their membership: record `i` belongs to user `users[i]`
/// and is a member when `is_member[i]`.
///
/// # Errors
///
/// [`Error::InvalidParameter`](crate::Error::InvalidParameter) when the
/// three slices differ in length, when there is no record, for a NaN
/// score, and when one user has both member and non-member records (split
/// the data by user).
pub fn user_scores(
    scores: &[f64],
    users: &[u64],
    is_member: &[bool],
    how: UserAggregate,
) -> Result<UserScores> {
    if users.len() != scores.len() || is_member.len() != scores.len() {
        return Err(invalid(
            "users",
            format!(
                "{} scores, {} user ids, {} memberships",
                scores.len(),
                users.len(),
                is_member.len()
            ),
            "need one user id and one membership per score",
        ));
    }
    if scores.is_empty() {
        return Err(invalid("users", "[]", "need at least one user"));
    }
    if let Some(s) = scores.iter().find(|s| s.is_nan()) {
        return Err(invalid("scores", s, "scores must not be NaN"));
    }
    // Per user: (sum, max, count, membership).
    let mut by_user: BTreeMap<u64, (f64, f64, usize, bool)> = BTreeMap::new();
    for ((&s, &u), &m) in scores.iter().zip(users).zip(is_member) {
        let e = by_user.entry(u).or_insert((0.0, f64::NEG_INFINITY, 0, m));
        if e.3 != m {
            return Err(invalid(
                "users",
                u,
                "this user has both member and non-member records: split the data by user (Dataset::split_by_user)",
            ));
        }
        e.0 += s;
        e.1 = e.1.max(s);
        e.2 += 1;
    }
    let mut out = UserScores {
        users: Vec::with_capacity(by_user.len()),
        scores: Vec::with_capacity(by_user.len()),
        is_member: Vec::with_capacity(by_user.len()),
    };
    for (u, (sum, max, n, m)) in by_user {
        out.users.push(u);
        out.scores.push(match how {
            // One record: its score exactly (±∞ kept, no ∞ − ∞ from a sum).
            UserAggregate::Mean if n == 1 => max,
            UserAggregate::Mean => sum / n as f64,
            UserAggregate::Max => max,
        });
        out.is_member.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn should_aggregate_each_users_records_by_hand() {
        let scores = [1.0, 3.0, -2.0, 0.5, 0.25, 2.0];
        let users = [9, 9, 4, 4, 4, 1];
        let member = [true, true, false, false, false, true];
        let mean = user_scores(&scores, &users, &member, UserAggregate::Mean).unwrap();
        assert_eq!(mean.users, [1, 4, 9]);
        assert_eq!(mean.scores, [2.0, -1.25 / 3.0, 2.0]);
        assert_eq!(mean.is_member, [true, false, true]);
        assert_eq!(mean.members(), [2.0, 2.0]);
        assert_eq!(mean.non_members(), [-1.25 / 3.0]);
        let max = user_scores(&scores, &users, &member, UserAggregate::Max).unwrap();
        assert_eq!(max.users, [1, 4, 9]);
        assert_eq!(max.scores, [2.0, 0.5, 3.0]);
        assert_eq!(max.is_member, mean.is_member);
    }

    #[test]
    fn should_keep_infinite_scores_of_single_records() {
        let s = user_scores(
            &[f64::INFINITY, f64::NEG_INFINITY],
            &[1, 2],
            &[true, false],
            UserAggregate::Mean,
        )
        .unwrap();
        assert_eq!(s.scores, [f64::INFINITY, f64::NEG_INFINITY]);
    }

    #[test]
    fn should_refuse_what_has_no_user_level_membership() {
        let err = |r: Result<UserScores>| r.unwrap_err().to_string();
        let e = err(user_scores(
            &[1.0, 2.0],
            &[1],
            &[true, true],
            UserAggregate::Mean,
        ));
        assert!(
            e.contains("one user id and one membership per score"),
            "{e}"
        );
        let e = err(user_scores(&[1.0], &[1], &[], UserAggregate::Max));
        assert!(e.contains("one membership"), "{e}");
        let e = err(user_scores(&[], &[], &[], UserAggregate::Mean));
        assert!(e.contains("at least one user"), "{e}");
        let e = err(user_scores(
            &[1.0, 2.0],
            &[5, 5],
            &[true, false],
            UserAggregate::Mean,
        ));
        assert!(e.contains("split the data by user"), "{e}");
        let e = err(user_scores(&[f64::NAN], &[5], &[true], UserAggregate::Max));
        assert!(e.contains("NaN"), "{e}");
    }

    fn records() -> impl Strategy<Value = (Vec<f64>, Vec<u64>, Vec<bool>)> {
        prop::collection::vec((-10.0f64..10.0, 0u64..12), 1..60).prop_map(|v| {
            let scores = v.iter().map(|p| p.0).collect();
            let users: Vec<u64> = v.iter().map(|p| p.1).collect();
            // Membership a function of the user: even ids are members.
            let member = users.iter().map(|u| u % 2 == 0).collect();
            (scores, users, member)
        })
    }

    proptest! {
        #[test]
        fn max_is_never_below_mean((scores, users, member) in records()) {
            let mean = user_scores(&scores, &users, &member, UserAggregate::Mean).unwrap();
            let max = user_scores(&scores, &users, &member, UserAggregate::Max).unwrap();
            prop_assert_eq!(&mean.users, &max.users);
            prop_assert_eq!(&mean.is_member, &max.is_member);
            for (a, b) in mean.scores.iter().zip(&max.scores) {
                prop_assert!(*b >= *a - 1e-12, "max {} < mean {}", b, a);
            }
            // One entry per distinct user, ascending.
            prop_assert!(mean.users.windows(2).all(|w| w[0] < w[1]));
            let mut distinct = users.clone();
            distinct.sort_unstable();
            distinct.dedup();
            prop_assert_eq!(mean.users, distinct);
        }

        #[test]
        fn one_record_per_user_gives_the_record_scores_back(
            scores in prop::collection::vec(-10.0f64..10.0, 1..40),
        ) {
            // Users in reverse order of the records.
            let users: Vec<u64> = (0..scores.len() as u64).rev().collect();
            let member: Vec<bool> = (0..scores.len()).map(|i| i % 3 == 0).collect();
            for how in UserAggregate::ALL {
                let s = user_scores(&scores, &users, &member, how).unwrap();
                let back: Vec<f64> = scores.iter().rev().copied().collect();
                let back_member: Vec<bool> = member.iter().rev().copied().collect();
                prop_assert_eq!(&s.scores, &back);
                prop_assert_eq!(&s.is_member, &back_member);
            }
        }
    }
}
