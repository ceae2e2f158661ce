//! dpsgd-core: under construction (see the workspace README).
#![warn(missing_docs)]
