//! Running a training or an audit: progress on standard error (a bar, or
//! one line per epoch in a log), the library's refusals as usage errors
//! naming their flag, and the line that sums a run up.

use crate::error;
use crate::flags::train::TrainOptions;
use anyhow::Result;
use dpsgd::data::Dataset;
use dpsgd::train::audit::AuditConfig;
use dpsgd::train::{Progress, TrainConfig, TrainError, TrainReport};
use dpsgd_burn::backend::Backend;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// Runs one training with a progress bar (unless `quiet`).
///
/// # Errors
///
/// As [`dpsgd::train::train`].
pub fn run_one(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    backend: Backend,
    quiet: bool,
) -> Result<TrainReport> {
    let device = backend.device().map_err(anyhow::Error::msg)?;
    // ε for the bar once per epoch, and not at all when nobody sees it
    // (the caller may ask for it anyway, for a report's budget curve).
    let cfg = &TrainConfig {
        progress_epsilon: cfg.progress_epsilon || !quiet,
        ..cfg.clone()
    };
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(1)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // A log file (stderr not a terminal, where the bar is not drawn) gets
    // one line per epoch instead.
    let epoch_lines = !quiet && !std::io::stderr().is_terminal();
    // Only released quantities: step, test accuracy, ε (the batch loss is
    // an exact statistic of the private batch).
    let (mut last_eps, mut last_acc) = (None, None);
    let report = dpsgd::train::train(cfg, train, test, &device, |p| {
        bar.set_length(p.total_steps);
        bar.set_position(p.step);
        if p.test_accuracy.is_some() {
            // `p.epoch`, not a count: a resumed run starts past epoch 1.
            if epoch_lines {
                eprintln!("{}", epoch_line(p.epoch, cfg.epochs, &p));
            }
        }
        if p.epsilon.is_none() && p.test_accuracy.is_none() {
            return;
        }
        last_eps = p.epsilon.or(last_eps);
        last_acc = p.test_accuracy.or(last_acc);
        let eps = last_eps.map_or_else(|| "ε –".to_owned(), |e| format!("ε {e:.2}"));
        let acc = last_acc.map_or_else(
            || "test acc –".to_owned(),
            |a| format!("test acc {:.1}%", 100.0 * a),
        );
        bar.set_message(format!("{acc} {eps}"));
    })
    .map_err(|e| match usage_error(e) {
        e if e.is::<error::UsageError>() => e,
        e => e.context("training failed"),
    })?;
    bar.finish_and_clear();
    // The library returns its warnings; the binary shows them.
    for w in &report.warnings {
        eprintln!("WARNING: dpsgd: {w}");
    }
    Ok(report)
}

/// The line logged at the end of an epoch: the epoch, its test accuracy and
/// ε so far (released quantities), then the epoch's mean training loss,
/// marked as not covered by ε: an exact statistic of the private data, the
/// same value as the report's `not_covered_by_epsilon.epoch_history`
/// declares (the last batch's loss, printed before, was declared nowhere).
pub fn epoch_line(epoch: usize, epochs: usize, p: &Progress) -> String {
    let accuracy = p
        .test_accuracy
        .map_or_else(|| "–".to_owned(), |a| format!("{:.2}%", 100.0 * a));
    let epsilon = p
        .epsilon
        .map_or_else(|| "∞".to_owned(), |e| format!("{e:.3}"));
    let loss = p
        .epoch_loss
        .map_or_else(|| "–".to_owned(), |l| format!("{l:.4}"));
    format!(
        "epoch {epoch}/{epochs} | step {}/{} | test accuracy {accuracy} | ε {epsilon} | mean training loss {loss} (not covered by ε)",
        p.step, p.total_steps
    )
}

/// A configuration the library refuses, as a usage error naming the flag
/// of the refused setting; other errors unchanged.
fn usage_error(e: TrainError) -> anyhow::Error {
    let flag = match &e {
        TrainError::Config(c) => match c.setting {
            "model" => Some("--model"),
            "epochs" => Some("--epochs"),
            "hidden" => Some("--hidden"),
            "clipping" => Some("--clipping"),
            "max_physical_batch_size" => Some("--max-physical-batch-size"),
            "all_reduce" => Some("--all-reduce"),
            "devices" => Some("--devices"),
            "checkpoint_dir" => Some("--checkpoint-dir"),
            "features" => Some("--features"),
            "ema_decay" => Some("--ema-decay"),
            "augment_multiplicity" => Some("--augment-multiplicity"),
            "privacy_unit" => Some("--privacy-unit"),
            "max_records_per_user" => Some("--max-records-per-user"),
            "resume" => Some("--resume"),
            "label_smoothing" => Some("--label-smoothing"),
            "confidence_penalty" => Some("--confidence-penalty"),
            "relaxloss" => Some("--relaxloss"),
            "early_stopping" => Some("--early-stopping"),
            "weight_decay" => Some("--weight-decay"),
            "dropout" => Some("--dropout"),
            "mist" => Some("--mist"),
            "defences" => Some("--label-smoothing/--confidence-penalty/--relaxloss"),
            "num_classes" => Some("--num-classes"),
            "delta" => Some("--delta"),
            _ => None,
        },
        // δ ≥ 1/N without --allow-large-delta, found once N is known.
        TrainError::Dp(dpsgd::optim::Error::InvalidParameter { name: "delta", .. }) => {
            Some("--delta")
        }
        // σ·C or C beyond f32.
        TrainError::Dp(dpsgd::optim::Error::InvalidParameter {
            name: "noise_multiplier",
            ..
        }) => Some("--noise-multiplier"),
        TrainError::Dp(dpsgd::optim::Error::InvalidParameter {
            name: "max_grad_norm",
            ..
        }) => Some("--max-grad-norm"),
        // burn's collective all-reduce on a backend without it.
        TrainError::Dp(dpsgd::optim::Error::InvalidParameter {
            name: "reduction", ..
        }) => Some("--all-reduce"),
        TrainError::Resume(_) => Some("--resume"),
        _ => None,
    };
    match (flag, e) {
        (Some(flag), TrainError::Config(c)) => error::UsageError {
            flag,
            message: c.message,
        }
        .into(),
        (Some(flag), e @ (TrainError::Dp(_) | TrainError::Resume(_))) => error::UsageError {
            flag,
            message: e.to_string(),
        }
        .into(),
        (_, e) => e.into(),
    }
}

/// What an (ε, δ) record-level guarantee leaves of a user with `n`
/// records: group privacy, (nε, n·e^{(n−1)ε}·δ) (Dwork & Roth 2014, Thm
/// 2.2), or nothing at all once that δ reaches 1.
pub fn group_privacy(n: usize, epsilon: f64, delta: f64) -> String {
    let k = n as f64;
    let group_delta = k * ((k - 1.0) * epsilon).exp() * delta;
    if group_delta >= 1.0 {
        format!(
            "group privacy ({n}·ε = {:.1}, δ ≥ 1): no guarantee at all",
            k * epsilon
        )
    } else {
        format!(
            "group privacy, about {n}·ε = {:.1} at δ = {group_delta:.1e}",
            k * epsilon
        )
    }
}

/// One line that says what the run cost and bought.
pub fn summary(r: &TrainReport) -> String {
    let p = &r.privacy;
    let unit = match p.max_records_per_user {
        Some(k) => {
            format!(" for any one user's records (all of them; up to {k} of them train each step)")
        }
        None => String::new(),
    };
    let privacy = match (p.epsilon, p.noise_multiplier, p.accountant) {
        (Some(e), Some(s), Some(accountant)) => format!(
            "ε = {e:.2} at δ = {:e}{unit} ({}, σ = {s:.3})",
            p.delta,
            accountant.name().to_uppercase()
        ),
        _ => "non-private (ε = ∞)".to_owned(),
    };
    let nc = &r.not_covered_by_epsilon;
    // Users' record counts are statistics of the private data; at record
    // level they say how little a heavy user is protected.
    let users = match (&nc.users, p.max_records_per_user, p.epsilon) {
        (Some(u), None, Some(e)) => format!(
            ", {} users with up to {} records each (record-level ε: such a user is protected only at {})",
            u.users,
            u.max_records_of_one_user,
            group_privacy(u.max_records_of_one_user, e, p.delta)
        ),
        (Some(u), _, _) => format!(
            ", {} records of {} users (up to {} each)",
            u.records, u.users, u.max_records_of_one_user
        ),
        (None, _, _) => String::new(),
    };
    format!(
        "test accuracy {:.2}% | {privacy} | q = {:.4}, {} steps, {} epochs, {:.1} s{} | not covered by ε: train accuracy {:.2}%, loss-threshold MIA AUC {:.3}{}",
        100.0 * r.test_accuracy,
        p.sample_rate,
        p.steps,
        r.epochs,
        r.wall_seconds,
        // Without DP `secure` is false too, but a run is "seeded" only
        // when it has a seed.
        if p.seed.is_some() {
            " (seeded: not secure)"
        } else {
            ""
        },
        100.0 * nc.train_accuracy,
        nc.loss_threshold_auc,
        if nc.dropped_examples > 0 {
            format!(", {} non-finite examples dropped", nc.dropped_examples)
        } else {
            String::new()
        },
    ) + &users
}

/// Runs an audit of `cfg` with progress lines on stderr (unless `quiet`).
///
/// # Errors
///
/// As [`dpsgd::train::audit::audit`].
pub fn run_audit(
    cfg: &TrainConfig,
    options: &TrainOptions,
    audit: &AuditConfig,
    train: &dpsgd::data::Dataset,
    test: &dpsgd::data::Dataset,
    quiet: bool,
) -> Result<dpsgd::train::audit::AuditOutcome> {
    let device = options.backend.device().map_err(anyhow::Error::msg)?;
    let log = |line: &str| {
        if !quiet {
            eprintln!("dpsgd audit: {line}");
        }
    };
    dpsgd::train::audit::audit(cfg, train, test, audit, &device, &log).map_err(|e| match e {
        TrainError::Config(_) => anyhow::Error::from(e),
        e => anyhow::Error::from(e).context("audit failed"),
    })
}

#[cfg(test)]
mod tests {
    use super::group_privacy;

    /// Group privacy of n records (Dwork & Roth 2014, Thm 2.2): (nε,
    /// n·e^{(n−1)ε}·δ); vacuous once that δ reaches 1.
    #[test]
    fn should_state_group_privacy_with_its_delta() {
        // 4·e³·1e-5 = 8.03e-4.
        assert_eq!(
            group_privacy(4, 1.0, 1e-5),
            "group privacy, about 4·ε = 4.0 at δ = 8.0e-4"
        );
        // 50·e⁴⁹·1e-5 ≫ 1.
        assert_eq!(
            group_privacy(50, 1.0, 1e-5),
            "group privacy (50·ε = 50.0, δ ≥ 1): no guarantee at all"
        );
    }
}
