//! Shared test data of the user-level tests.
#![allow(dead_code)]

use dpsgd_data::{Dataset, Scaling, digits};

/// The embedded digits with synthetic users: user u owns `u % 7 + 1`
/// consecutive records (1–7), split by user with `test_fraction`, scaled
/// by the public maximum pixel value.
pub fn digits_with_users(test_fraction: f64) -> (Dataset, Dataset) {
    let all = digits();
    let mut ids = Vec::with_capacity(all.len());
    let mut u = 0u64;
    while ids.len() < all.len() {
        let n = (u % 7 + 1) as usize;
        ids.extend(std::iter::repeat_n(u, n.min(all.len() - ids.len())));
        u += 1;
    }
    let all = all.with_users(ids).unwrap();
    let (mut tr, mut te) = all.split_by_user(test_fraction, 0).unwrap();
    tr.apply(&Scaling::Divide(16.0));
    te.apply(&Scaling::Divide(16.0));
    (tr, te)
}
