//! One module per subcommand.

pub mod audit;
pub mod audit_target;
pub mod bench;
pub mod calibrate;
pub mod compare;
pub mod device;
pub mod epsilon;
pub mod report;
pub mod serve;
pub mod sweep;
pub mod train;
pub mod worker;
