#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub use dpsgd_accountant as accountant;
pub use dpsgd_burn as burn;
pub use dpsgd_core as core;
pub use dpsgd_data as data;
