//! **Test-only fault injection** (issue 28, item 4): a mechanism broken on
//! purpose, so that tests can measure what an audit detects. A fault is
//! planted with [`DpOptimizer::plant_fault`](crate::DpOptimizer::plant_fault)
//! (and `dpsgd_burn::PrivacyEngine::plant_fault`), which refuses unless the
//! crate is built with the `fault-injection` feature: no default build, and
//! no release build of the command-line tool, can run a broken mechanism.
//! The claim (σ, ε) of a run with a fault stays the honest one: that is
//! what a buggy implementation would report.

/// A planted bug.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MechanismFault {
    /// The noise added has standard deviation `σ_Δ·S·scale` (scale in
    /// (0, 1]).
    NoiseScale(f64),
    /// The first example of every chunk the gradient engine clips (a
    /// physical batch, a data-parallel shard, one of the engine's passes)
    /// is summed without clipping.
    UnclippedExample,
    /// Every second step adds the previous step's noise again: steps
    /// `2k` and `2k + 1` share one draw.
    ReusedNoise,
}

/// Whether this build can plant faults (the `fault-injection` feature).
pub const FAULTS_COMPILED_IN: bool = cfg!(feature = "fault-injection");

/// Refuses a fault in a build without fault injection, or outside its
/// domain.
///
/// # Errors
///
/// [`Error::InvalidParameter`](crate::Error::InvalidParameter).
pub(crate) fn check(fault: MechanismFault) -> crate::Result<()> {
    if !FAULTS_COMPILED_IN {
        return Err(crate::error::invalid(
            "fault",
            format!("{fault:?}"),
            "fault injection is compiled out of this build (the test-only fault-injection feature)",
        ));
    }
    if let MechanismFault::NoiseScale(s) = fault
        && !(s > 0.0 && s <= 1.0)
    {
        return Err(crate::error::invalid(
            "fault",
            format!("{fault:?}"),
            "the noise scale must be in (0, 1]",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the feature no fault can be planted; with it, only faults
    /// inside their domain.
    #[test]
    fn should_plant_faults_only_where_compiled_in() {
        for fault in [
            MechanismFault::NoiseScale(0.5),
            MechanismFault::UnclippedExample,
            MechanismFault::ReusedNoise,
        ] {
            let planted = check(fault);
            assert_eq!(
                planted.is_ok(),
                FAULTS_COMPILED_IN,
                "{fault:?}: {planted:?}"
            );
            if let Err(e) = planted {
                assert!(e.to_string().contains("compiled out"), "{e}");
            }
        }
        for bad in [0.0, -1.0, 1.5, f64::NAN] {
            assert!(check(MechanismFault::NoiseScale(bad)).is_err(), "{bad}");
        }
    }
}
