//! Everything a command writes, below the commands and the HTML report
//! (both import it; it imports neither): atomic owner-only files and
//! `--report`'s target ([`files`]), the checks that no output replaces an
//! input or another output ([`clobbering`]), number formatting
//! ([`format`]), the accuracy–leakage front of a comparison ([`pareto`]),
//! and each command's tables and figures ([`audit`],
//! [`compare`], [`sweep`]: CSV, Markdown, text and SVG drawn with
//! plotters; the HTML report draws its own SVG, see `html`).

pub mod audit;
pub mod clobbering;
pub mod compare;
pub mod files;
pub mod format;
pub mod pareto;
pub mod sweep;
