//! The guides, as they are in the repository's `docs/` folder (links
//! between them point into the repository).

#[doc = include_str!("../README.md")]
pub mod readme {}

#[doc = include_str!("../docs/guide.md")]
pub mod guide {}

#[doc = include_str!("../docs/limitations.md")]
pub mod limitations {}

#[doc = include_str!("../docs/accounting.md")]
pub mod accounting {}

#[doc = include_str!("../docs/burn-train.md")]
pub mod burn_train {}

#[doc = include_str!("../docs/user-level.md")]
pub mod user_level {}

#[doc = include_str!("../docs/fine-tuning.md")]
pub mod fine_tuning {}
