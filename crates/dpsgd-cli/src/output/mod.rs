//! Everything a command writes, below the commands and the HTML report
//! (both import it; it imports neither): atomic owner-only files and
//! `--report`'s target ([`files`]), the checks that no output replaces an
//! input or another output ([`clobbering`]), and number formatting
//! ([`format`]).

pub mod clobbering;
pub mod files;
pub mod format;
