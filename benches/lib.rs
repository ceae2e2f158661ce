//! Criterion benchmarks of the dpsgd workspace live in `benches/`; this
//! library is empty and exists so that the package has a target.
