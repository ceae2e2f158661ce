//! The command line's flags, each declared once: the value parsers
//! ([`parse`]), the options of a training run ([`train`]: data, model,
//! training, defences, privacy), `compare`'s defence specs ([`defence`]),
//! and the run shape of `epsilon` and `calibrate` ([`run`]). Each command
//! flattens the groups it takes into its own `Args`.

pub mod defence;
pub mod parse;
pub mod run;
pub mod train;
