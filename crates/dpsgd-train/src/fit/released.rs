//! The ledger of steps released outside the process, kept beside the
//! checkpoint: what a resumed run must charge for the steps it redoes.
//!
//! Data-parallel workers in other processes or hosts see every step's
//! parameters. A run that fails between two checkpoints has released the
//! parameters of every step since the last checkpoint to them; resumed, it
//! goes back to the checkpoint and redoes those steps. With OS-seeded
//! noise the redone steps draw fresh noise: the workers have then seen two
//! different noisy continuations of the same checkpoint, and composition
//! counts both. The discarded steps are charged to the accountant
//! ([`dpsgd_burn::PrivacyEngine::charge_discarded_steps`]) when the run
//! resumes.
//!
//! The parameters of loop step `t` are a function of the noise of steps
//! `1 … t − 1`. Before those parameters leave (before step `t` starts),
//! the ledger records `released_through = t`, durably (written atomically
//! and synced). A run resumed from a checkpoint after step `s` whose
//! ledger says `t` has shown the workers the noisy outcome of steps
//! `s + 1 … t − 1` that its redone steps replace: `t − 1 − s` steps are
//! charged. A seeded run replays the same batches and the same noise, so
//! its redone steps release what the workers saw already (bit for bit on
//! the same number of workers; to the last float bit otherwise, see
//! docs/distributed.md), and nothing is charged.
//!
//! The ledger also keeps every charge made so far (`redone`), so that a
//! charge made at a resume survives a second failure before the next
//! checkpoint; the checkpoint keeps the same list as of its own writing,
//! and the ledger's must extend it. A checkpoint written while workers ran
//! outside the process requires the ledger on resume: a missing ledger is
//! refused, not read as "nothing released". (A ledger edited down cannot
//! be detected: it is the coordinator's own record, as the checkpoint is.)

use crate::error::TrainError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The ledger's file name in the checkpoint folder.
pub(crate) const RELEASED_FILE: &str = "released.json";

/// Steps charged at one resume: `steps` discarded steps, charged after
/// `after_epochs` completed epochs (the checkpoint's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Redone {
    pub(crate) after_epochs: usize,
    pub(crate) steps: u64,
}

/// The steps charged by `redone`.
pub(crate) fn redone_steps(redone: &[Redone]) -> u64 {
    redone
        .iter()
        .fold(0u64, |total, r| total.saturating_add(r.steps))
}

/// The steps charged before the end of epoch `epoch` (for that epoch's ε).
pub(crate) fn redone_before(redone: &[Redone], epoch: usize) -> u64 {
    redone
        .iter()
        .filter(|r| r.after_epochs < epoch)
        .fold(0u64, |total, r| total.saturating_add(r.steps))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    /// The last loop step whose parameters may have left the process.
    released_through: u64,
    /// Every charge so far.
    redone: Vec<Redone>,
}

/// The ledger of one run's checkpoint folder.
#[derive(Debug)]
pub(crate) struct ReleaseLedger {
    path: PathBuf,
    released_through: u64,
    redone: Vec<Redone>,
}

/// What a resume found in the ledger.
#[derive(Debug)]
pub(crate) struct Resumed {
    pub(crate) ledger: ReleaseLedger,
    /// The steps to charge now (not yet in the checkpoint's engine).
    pub(crate) charge: u64,
}

impl ReleaseLedger {
    /// A fresh run's ledger in `dir`: nothing released yet (a stale ledger
    /// of an earlier run in the folder is replaced).
    ///
    /// # Errors
    ///
    /// [`TrainError::Save`] when it cannot be written.
    pub(crate) fn start(dir: &Path) -> Result<Self, TrainError> {
        let ledger = Self {
            path: dir.join(RELEASED_FILE),
            released_through: 0,
            redone: Vec::new(),
        };
        ledger.write()?;
        Ok(ledger)
    }

    /// The ledger of a run resumed from a checkpoint in `dir` after
    /// `checkpoint_step` loop steps and `epochs_done` epochs, whose state
    /// lists the charges `charged` (already in its engine) and says
    /// whether workers ran outside the process (`workers_outside`). The
    /// discarded steps are charged only when `secure` (OS-seeded noise:
    /// the redone steps draw fresh noise). The ledger is rewritten at the
    /// checkpoint's step, with the new charge, before the caller goes on.
    ///
    /// # Errors
    ///
    /// [`TrainError::Config`] for a ledger that is missing where workers
    /// ran outside, unreadable, not a regular file, or inconsistent with
    /// the checkpoint; [`TrainError::Save`] when it cannot be rewritten.
    pub(crate) fn resume(
        dir: &Path,
        checkpoint_step: u64,
        epochs_done: usize,
        charged: &[Redone],
        workers_outside: bool,
        secure: bool,
    ) -> Result<Resumed, TrainError> {
        let path = dir.join(RELEASED_FILE);
        let refuse = |reason: String| {
            TrainError::config(
                "resume",
                format!("cannot resume from {}: {reason}", dir.display()),
            )
        };
        let found = read(&path).map_err(refuse)?;
        // Charges made by an earlier resume of this checkpoint that was
        // never checkpointed again are in the ledger, in order.
        let redone = match found {
            None if workers_outside => {
                return Err(refuse(format!(
                    "{RELEASED_FILE}, the record of the steps workers outside this process saw, is missing (the checkpoint was written while they ran): without it the steps they saw after the checkpoint cannot be charged"
                )));
            }
            None => charged.to_vec(),
            Some(record) => {
                if !record.redone.starts_with(charged) {
                    return Err(refuse(format!(
                        "{RELEASED_FILE} does not extend the checkpoint's record of redone steps (edited, or another run's)"
                    )));
                }
                let mut redone = record.redone;
                let discarded = record
                    .released_through
                    .saturating_sub(checkpoint_step.saturating_add(1));
                if secure && discarded > 0 {
                    redone.push(Redone {
                        after_epochs: epochs_done,
                        steps: discarded,
                    });
                }
                redone
            }
        };
        let charge = redone_steps(&redone).saturating_sub(redone_steps(charged));
        let ledger = Self {
            path,
            released_through: checkpoint_step,
            redone,
        };
        ledger.write()?;
        Ok(Resumed { ledger, charge })
    }

    /// Records that the parameters of loop step `step` are about to leave
    /// the process; returns once that is on disk.
    ///
    /// # Errors
    ///
    /// [`TrainError::Save`] when it cannot be written (the step must not
    /// be taken then).
    pub(crate) fn release(&mut self, step: u64) -> Result<(), TrainError> {
        if step > self.released_through {
            self.released_through = step;
            self.write()?;
        }
        Ok(())
    }

    /// Every charge so far.
    pub(crate) fn redone(&self) -> &[Redone] {
        &self.redone
    }

    fn write(&self) -> Result<(), TrainError> {
        let record = Record {
            released_through: self.released_through,
            redone: self.redone.clone(),
        };
        let failed = |reason: String| TrainError::Save {
            path: self.path.clone(),
            reason,
        };
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| !m.file_type().is_file()) {
            return Err(failed(
                "not a regular file (a link or a device): the ledger is replaced atomically, only in the checkpoint folder itself".into(),
            ));
        }
        let bytes = serde_json::to_vec(&record).map_err(|e| failed(e.to_string()))?;
        dpsgd_burn::io::write_atomically(&self.path, &bytes, dpsgd_burn::io::Access::OwnerOnly)
            .map_err(|e| failed(e.to_string()))
    }
}

/// Refuses a resumed run whose enforced budget can no longer cover its
/// plan of `total` accounted steps once `redone` discarded steps are
/// charged: it would stop with the budget exhausted part-way, so it is
/// refused now, saying why (the charge stays in the ledger: a later
/// resume sees it too).
///
/// # Errors
///
/// [`TrainError::Config`] when the plan does not fit; an accountant error.
pub(crate) fn check_budget_after_redone(
    engine: &dpsgd_burn::PrivacyEngine,
    total: u64,
    redone: u64,
) -> Result<(), TrainError> {
    let Some((budget, delta)) = engine.optimizer().settings().budget else {
        return Ok(());
    };
    let remaining = total.saturating_sub(engine.steps());
    let epsilon = if remaining == 0 {
        engine.epsilon()?
    } else {
        let rest = dpsgd_accountant::Segment::new(
            engine.noise_multiplier(),
            engine.sampler().sample_rate(),
            remaining,
        )?;
        use dpsgd_accountant::Accountant;
        engine.optimizer().accountant().epsilon_after(rest, delta)?
    };
    if epsilon > budget {
        return Err(TrainError::config(
            "resume",
            format!(
                "the {redone} steps redone after checkpoints, which workers outside this process had already seen with other noise, are charged: the rest of the run would reach ε = {epsilon:.4} > the budget {budget} at δ = {delta}, so it cannot finish (see docs/distributed.md, \"Resuming\"; seeded runs, or --on-worker-loss continue, avoid the charge)"
            ),
        ));
    }
    Ok(())
}

/// The ledger at `path`, `None` when there is none.
fn read(path: &Path) -> Result<Option<Record>, String> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        Ok(m) if !m.file_type().is_file() => {
            return Err(format!(
                "{} is not a regular file (a link or a device)",
                path.display()
            ));
        }
        Ok(m) if m.len() > 1 << 20 => {
            return Err(format!("{} is too large for a ledger", path.display()));
        }
        Ok(_) => {}
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("{} is not a ledger: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dpsgd-ledger-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn should_charge_the_steps_seen_after_the_checkpoint_once() {
        let dir = folder("charge");
        let mut ledger = ReleaseLedger::start(&dir).unwrap();
        // Checkpoint after 10 steps; steps 11..=14 started, the run dies in
        // step 14: the outcome of steps 11, 12 and 13 was seen.
        for step in 11..=14 {
            ledger.release(step).unwrap();
        }
        let first = ReleaseLedger::resume(&dir, 10, 1, &[], true, true).unwrap();
        assert_eq!(first.charge, 3);
        assert_eq!(
            first.ledger.redone(),
            &[Redone {
                after_epochs: 1,
                steps: 3
            }]
        );
        // The resumed run dies again in step 12, before a checkpoint: the
        // first charge is kept, step 11's outcome is charged anew.
        let mut again = first.ledger;
        again.release(11).unwrap();
        again.release(12).unwrap();
        let second = ReleaseLedger::resume(&dir, 10, 1, &[], true, true).unwrap();
        assert_eq!(second.charge, 4);
        assert_eq!(redone_steps(second.ledger.redone()), 4);
        // Resumed once more without any step: nothing new.
        let third = ReleaseLedger::resume(&dir, 10, 1, &[], true, true).unwrap();
        assert_eq!(third.charge, 4);
        // Once the checkpoint holds the charges, they are not charged twice.
        let charged = third.ledger.redone().to_vec();
        let fourth = ReleaseLedger::resume(&dir, 10, 1, &charged, true, true).unwrap();
        assert_eq!(fourth.charge, 0);
        assert_eq!(redone_before(&charged, 1), 0);
        assert_eq!(redone_before(&charged, 2), 4);
    }

    #[test]
    fn should_charge_nothing_for_a_seeded_replay_or_the_checkpoints_own_step() {
        let dir = folder("seeded");
        let mut ledger = ReleaseLedger::start(&dir).unwrap();
        ledger.release(20).unwrap();
        assert_eq!(
            ReleaseLedger::resume(&dir, 10, 1, &[], true, false)
                .unwrap()
                .charge,
            0
        );
        // Died right after the checkpoint, in its next step: the workers
        // saw the checkpoint's parameters only.
        let mut ledger = ReleaseLedger::start(&dir).unwrap();
        ledger.release(11).unwrap();
        assert_eq!(
            ReleaseLedger::resume(&dir, 10, 1, &[], true, true)
                .unwrap()
                .charge,
            0
        );
    }

    #[test]
    fn should_refuse_a_missing_foreign_or_odd_ledger() {
        let dir = folder("refuse");
        let err = ReleaseLedger::resume(&dir, 10, 1, &[], true, true).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        // In-process workers only: no ledger is needed.
        assert_eq!(
            ReleaseLedger::resume(&dir, 10, 1, &[], false, true)
                .unwrap()
                .charge,
            0
        );
        let charged = [Redone {
            after_epochs: 1,
            steps: 2,
        }];
        ReleaseLedger::start(&dir).unwrap();
        let err = ReleaseLedger::resume(&dir, 10, 1, &charged, true, true).unwrap_err();
        assert!(err.to_string().contains("does not extend"), "{err}");
        std::fs::write(dir.join(RELEASED_FILE), b"{\"released_through\": 3}").unwrap();
        assert!(ReleaseLedger::resume(&dir, 10, 1, &[], true, true).is_err());
        #[cfg(unix)]
        {
            std::fs::remove_file(dir.join(RELEASED_FILE)).unwrap();
            std::os::unix::fs::symlink("/dev/null", dir.join(RELEASED_FILE)).unwrap();
            assert!(ReleaseLedger::resume(&dir, 10, 1, &[], true, true).is_err());
            assert!(ReleaseLedger::start(&dir).is_err());
            assert!(
                std::fs::symlink_metadata(dir.join(RELEASED_FILE))
                    .unwrap()
                    .file_type()
                    .is_symlink()
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
