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
//! charged. Seeded runs are charged too: their redone steps draw the same
//! noise, but not always the same sums (a resume on other workers rounds
//! differently, and nothing checks that a replay is exact), and two
//! releases with the same noise and different sums give their difference
//! away without any noise.
//!
//! The ledger also keeps every charge made so far (`redone`), so that a
//! charge made at a resume survives a second failure before the next
//! checkpoint; the checkpoint keeps the same list as of its own writing,
//! and the ledger's must extend it. Each checkpoint also records the
//! ledger's run id and its `released_through` when it was written
//! ([`LedgerMark`]): on resume the ledger must be there, be this run's and
//! not be behind the checkpoint (a fresh or another run's ledger is
//! refused, not read as "nothing released"). A ledger edited consistently
//! with the checkpoint cannot be detected: both are the coordinator's own
//! records.

use crate::error::TrainError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file name of the ledger of the steps released to remote workers, in
/// [`crate::TrainConfig::checkpoint_dir`] beside [`crate::CHECKPOINT_FILE`]:
/// written during a run with remote workers and read on
/// [`crate::TrainConfig::resume`] (docs/distributed.md "Resuming"), so an
/// input of a resumed run that no output may replace.
pub const RELEASED_FILE: &str = "released.json";

/// Steps charged at one resume: `steps` discarded steps, charged after
/// `after_epochs` completed epochs (the checkpoint's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Redone {
    pub(crate) after_epochs: usize,
    pub(crate) steps: u64,
}

/// What a checkpoint records of the ledger beside it when it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LedgerMark {
    /// The run's ledger id (random, fixed for the run and its resumes).
    pub(crate) run: u64,
    /// The ledger's `released_through` at the checkpoint.
    pub(crate) released_through: u64,
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
    /// The run's id ([`LedgerMark::run`]).
    run: u64,
    /// The last loop step whose parameters may have left the process.
    released_through: u64,
    /// Every charge so far.
    redone: Vec<Redone>,
}

/// The ledger of one run's checkpoint folder.
#[derive(Debug)]
pub(crate) struct ReleaseLedger {
    path: PathBuf,
    run: u64,
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
    /// of an earlier run in the folder is replaced; any other file of that
    /// name is refused, left as it was).
    ///
    /// # Errors
    ///
    /// [`TrainError::Config`] for a [`RELEASED_FILE`] in `dir` that is not
    /// a ledger (unreadable, too large, or not one); [`TrainError::Save`]
    /// when it cannot be written (or is not a regular file).
    pub(crate) fn start(dir: &Path) -> Result<Self, TrainError> {
        let path = dir.join(RELEASED_FILE);
        // Someone's file of that name, never replaced (as a checkpoint in
        // the folder is not).
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file()) {
            read(&path).map_err(|reason| {
                TrainError::config(
                    "checkpoint_dir",
                    format!(
                        "{reason}; a fresh run would replace it with its record of the steps released to workers: move it away, or use another folder"
                    ),
                )
            })?;
        }
        let ledger = Self {
            path,
            run: new_run_id(),
            released_through: 0,
            redone: Vec::new(),
        };
        ledger.write()?;
        Ok(ledger)
    }

    /// The ledger of a run resumed from a checkpoint in `dir` after
    /// `checkpoint_step` loop steps and `epochs_done` epochs, whose state
    /// lists the charges `charged` (already in its engine) and the ledger
    /// as it stood (`mark`; `None` for a checkpoint older than ledgers,
    /// which starts one). The ledger is rewritten at the checkpoint's step,
    /// with the new charge, before the caller goes on.
    ///
    /// # Errors
    ///
    /// [`TrainError::Config`] for a ledger that is missing, unreadable, not
    /// a regular file, another run's, behind the checkpoint or not
    /// extending its charges; [`TrainError::Save`] when it cannot be
    /// rewritten.
    pub(crate) fn resume(
        dir: &Path,
        checkpoint_step: u64,
        epochs_done: usize,
        charged: &[Redone],
        mark: Option<LedgerMark>,
    ) -> Result<Resumed, TrainError> {
        let path = dir.join(RELEASED_FILE);
        let refuse = |reason: String| {
            TrainError::config(
                "resume",
                format!("cannot resume from {}: {reason}", dir.display()),
            )
        };
        let found = read(&path).map_err(refuse)?;
        let (run, redone) = match (found, mark) {
            (None, Some(_)) => {
                return Err(refuse(format!(
                    "{RELEASED_FILE}, the record of the steps this run released to workers, is missing: without it the steps they saw after the checkpoint cannot be charged"
                )));
            }
            (None, None) => (new_run_id(), charged.to_vec()),
            (Some(record), mark) => {
                let foreign = mark.is_some_and(|m| m.run != record.run);
                let behind = mark.is_some_and(|m| record.released_through < m.released_through);
                if foreign || behind || !record.redone.starts_with(charged) {
                    return Err(refuse(format!(
                        "{RELEASED_FILE} is not this checkpoint's ({}; edited, or another run's)",
                        if foreign {
                            "another run's id"
                        } else if behind {
                            "behind the checkpoint"
                        } else {
                            "it does not extend the checkpoint's record of redone steps"
                        }
                    )));
                }
                // Charges made by an earlier resume of this checkpoint that
                // was never checkpointed again are in the ledger, in order.
                let mut redone = record.redone;
                let discarded = record
                    .released_through
                    .saturating_sub(checkpoint_step.saturating_add(1));
                if discarded > 0 {
                    redone.push(Redone {
                        after_epochs: epochs_done,
                        steps: discarded,
                    });
                }
                (record.run, redone)
            }
        };
        let charge = redone_steps(&redone).saturating_sub(redone_steps(charged));
        let ledger = Self {
            path,
            run,
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

    /// What a checkpoint written now records of the ledger.
    pub(crate) fn mark(&self) -> LedgerMark {
        LedgerMark {
            run: self.run,
            released_through: self.released_through,
        }
    }

    fn write(&self) -> Result<(), TrainError> {
        let record = Record {
            run: self.run,
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
        let spent = engine.epsilon()?;
        return Err(TrainError::config(
            "resume",
            format!(
                "the {redone} steps redone after checkpoints, which workers outside this process had already seen, are charged: the rest of the run would reach ε = {epsilon:.4} > the budget {budget} at δ = {delta}, so it cannot finish. What the workers saw is spent all the same: ε = {spent:.4} so far, which adds to that of any new run on this data (docs/distributed.md, \"Resuming\")"
            ),
        ));
    }
    Ok(())
}

/// A fresh, non-zero run id from the operating system's generator.
fn new_run_id() -> u64 {
    use rand::TryRngCore;
    rand::rngs::OsRng
        .try_next_u64()
        .unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
        .max(1)
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
        // The checkpoint after 10 steps, the ledger as it stood then.
        ledger.release(10).unwrap();
        let at = ledger.mark();
        let mark = Some(at);
        // Steps 11..=14 started, the run dies in step 14: the outcome of
        // steps 11, 12 and 13 was seen.
        for step in 11..=14 {
            ledger.release(step).unwrap();
        }
        let first = ReleaseLedger::resume(&dir, 10, 1, &[], mark).unwrap();
        assert_eq!(first.charge, 3);
        assert_eq!(
            first.ledger.redone(),
            &[Redone {
                after_epochs: 1,
                steps: 3
            }]
        );
        assert_eq!(first.ledger.mark().run, at.run, "the same run");
        // The resumed run dies again in step 12, before a checkpoint: the
        // first charge is kept, step 11's outcome is charged anew.
        let mut again = first.ledger;
        again.release(11).unwrap();
        again.release(12).unwrap();
        let second = ReleaseLedger::resume(&dir, 10, 1, &[], mark).unwrap();
        assert_eq!(second.charge, 4);
        assert_eq!(redone_steps(second.ledger.redone()), 4);
        // Resumed once more without any step: nothing new.
        let third = ReleaseLedger::resume(&dir, 10, 1, &[], mark).unwrap();
        assert_eq!(third.charge, 4);
        // Once the checkpoint holds the charges, they are not charged twice.
        let charged = third.ledger.redone().to_vec();
        let fourth = ReleaseLedger::resume(&dir, 10, 1, &charged, mark).unwrap();
        assert_eq!(fourth.charge, 0);
        assert_eq!(redone_before(&charged, 1), 0);
        assert_eq!(redone_before(&charged, 2), 4);
    }

    #[test]
    fn should_charge_nothing_for_the_checkpoints_own_step() {
        // Died in the step right after the checkpoint: the workers saw the
        // checkpoint's parameters only.
        let dir = folder("own-step");
        let mut ledger = ReleaseLedger::start(&dir).unwrap();
        ledger.release(10).unwrap();
        let at = ledger.mark();
        let mark = Some(at);
        ledger.release(11).unwrap();
        let resumed = ReleaseLedger::resume(&dir, 10, 1, &[], mark).unwrap();
        assert_eq!(resumed.charge, 0);
        assert!(resumed.ledger.redone().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn should_refuse_a_missing_foreign_stale_or_odd_ledger() {
        let dir = folder("refuse");
        let mut ledger = ReleaseLedger::start(&dir).unwrap();
        ledger.release(10).unwrap();
        let at = ledger.mark();
        let mark = Some(at);
        std::fs::remove_file(dir.join(RELEASED_FILE)).unwrap();
        let err = ReleaseLedger::resume(&dir, 10, 1, &[], mark).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        // A checkpoint older than ledgers starts one.
        let old = ReleaseLedger::resume(&dir, 10, 1, &[], None).unwrap();
        assert_eq!(old.charge, 0);
        assert_ne!(old.ledger.mark().run, at.run);
        // Another run's ledger (a fresh one), and one behind the checkpoint.
        ReleaseLedger::start(&dir).unwrap();
        let err = ReleaseLedger::resume(&dir, 10, 1, &[], mark).unwrap_err();
        assert!(err.to_string().contains("another run's id"), "{err}");
        let mut behind = ReleaseLedger::start(&dir).unwrap();
        behind.run = at.run;
        behind.write().unwrap();
        let err = ReleaseLedger::resume(&dir, 10, 1, &[], mark).unwrap_err();
        assert!(err.to_string().contains("behind the checkpoint"), "{err}");
        // Charges the checkpoint holds and the ledger lacks.
        let charged = [Redone {
            after_epochs: 1,
            steps: 2,
        }];
        let mut same = ReleaseLedger::start(&dir).unwrap();
        same.run = at.run;
        same.release(10).unwrap();
        let err = ReleaseLedger::resume(&dir, 10, 1, &charged, mark).unwrap_err();
        assert!(err.to_string().contains("does not extend"), "{err}");
        std::fs::write(dir.join(RELEASED_FILE), b"{\"released_through\": 3}").unwrap();
        assert!(ReleaseLedger::resume(&dir, 10, 1, &[], mark).is_err());
        #[cfg(unix)]
        {
            std::fs::remove_file(dir.join(RELEASED_FILE)).unwrap();
            std::os::unix::fs::symlink("/dev/null", dir.join(RELEASED_FILE)).unwrap();
            assert!(ReleaseLedger::resume(&dir, 10, 1, &[], mark).is_err());
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

    #[test]
    fn should_refuse_to_replace_a_file_that_is_not_a_ledger() {
        let dir = folder("foreign");
        let path = dir.join(RELEASED_FILE);
        std::fs::write(&path, b"precious, not a ledger").unwrap();
        let err = ReleaseLedger::start(&dir).unwrap_err();
        assert!(matches!(err, TrainError::Config(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("is not a ledger"), "{text}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious, not a ledger");
        // An earlier run's ledger is replaced.
        std::fs::remove_file(&path).unwrap();
        let earlier = ReleaseLedger::start(&dir).unwrap().mark();
        let fresh = ReleaseLedger::start(&dir).unwrap().mark();
        assert_ne!(earlier.run, fresh.run);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
