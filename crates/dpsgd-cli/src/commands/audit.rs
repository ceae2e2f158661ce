//! `dpsgd audit`: train a model as `dpsgd train` would, attack it, and
//! report how much it leaks — membership-inference ROC figures, an
//! empirical ε lower bound from canaries, model inversion.

use crate::error;
use crate::error::EXIT_CLAIM_REFUTED;
use crate::flags::parse;
use crate::flags::train::{PrivacyOptions, TrainOptions};
use crate::output::audit::{plot_roc, table};
use crate::output::clobbering;
use crate::output::files::{ReportTarget, check_output_path, check_save_path, write_atomically};
use crate::setup::{audit_config, check_canaries, config, load_for_audit};
use crate::training::run_audit;
use anyhow::{Context, Result};
use dpsgd::audit::hardening::Release;
use dpsgd::train::TrainConfig;
use dpsgd::train::audit::{Attack, AuditConfig, CanaryKind, CanaryView};
use std::path::PathBuf;

fn attacks(s: &str) -> Result<Attack, String> {
    s.trim().parse()
}

fn canary_kind(s: &str) -> Result<CanaryKind, String> {
    s.parse()
}

fn canary_view(s: &str) -> Result<CanaryView, String> {
    s.parse()
}

/// `full`, `label-only`, `top-K`, `round-D` or `top-K-round-D`.
pub fn release(s: &str) -> Result<Release, String> {
    s.parse()
}

/// Arguments of `dpsgd audit`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when the audit ran; 1 when training or an attack failed; \
2 for unusable arguments; 3 when a measured ε lower bound exceeds the claimed ε (the \
privacy claim is refuted: a bug). --test-fraction defaults to 0.5 here: members and \
non-members in equal numbers, shadows on random halves."
)]
pub struct Args {
    #[command(flatten)]
    pub options: TrainOptions,
    #[command(flatten)]
    pub privacy: PrivacyOptions,
    /// Attacks, comma-separated: loss, confidence, entropy,
    /// modified-entropy, shadow, lira, rmia, label-only, inversion (lira and
    /// rmia report their online and offline variants; lira-online,
    /// lira-offline, rmia-online or rmia-offline report one).
    #[arg(long, value_delimiter = ',', value_parser = attacks, default_value = "loss,confidence,entropy,lira,rmia")]
    pub attacks: Vec<Attack>,
    /// Shadow models for the shadow and LiRA attacks, trained with the
    /// target's recipe on random halves of the data (at least 2).
    #[arg(long, allow_hyphen_values = true, value_name = "K", default_value_t = 16, value_parser = parse::positive_count)]
    pub shadow_models: usize,
    /// Canaries for the empirical ε lower bound (one-run audit), each
    /// added to the training set with probability ½ (0: none; mislabeled
    /// and ood canaries are refused with --early-stopping).
    #[arg(long, value_name = "M", default_value_t = 0)]
    pub canaries: usize,
    /// What the canaries are: mislabeled copies of training records, ood
    /// (random N(0,1) inputs with random labels), or dirac (white-box
    /// gradient canaries planted in the target's own DP-SGD run — its
    /// sampler, clipping, virtual batches, workers and MIST parts — each a
    /// record slot whose gradient is one coordinate of the model; their
    /// slots join the run's N; DP runs only).
    #[arg(long, value_name = "mislabeled|ood|dirac", default_value = "mislabeled", value_parser = canary_kind)]
    pub canary_kind: CanaryKind,
    /// What the white-box auditor observes of dirac canaries: every step's
    /// released noisy gradient (all-steps: every intermediate model) or
    /// only the final model (default: all-steps; dirac canaries only).
    #[arg(long, value_name = "all-steps|final", value_parser = canary_view)]
    pub canary_view: Option<CanaryView>,
    /// Records per input canary: each canary is then a canary *user* of K
    /// copies of one canary record (mislabeled or ood: a user whose records
    /// are near-identical), all in or all out, scored by their mean loss
    /// (default: --max-records-per-user at user level, 1 at record level).
    /// Against a record-level claim, canary users of K records show what
    /// that claim leaves of a K-record user (its bound is judged at group
    /// privacy, K·ε).
    #[arg(long, allow_hyphen_values = true, value_name = "K", value_parser = parse::positive_count)]
    pub canary_records_per_user: Option<usize>,
    /// Guesses of the one-run audit, fixed before the scores are seen
    /// (default: M/5).
    #[arg(long, allow_hyphen_values = true, value_name = "R", value_parser = parse::positive_count)]
    pub canary_guesses: Option<usize>,
    /// What the model releases to the black-box attacks (output
    /// hardening): full, label-only, top-K (the K largest probabilities),
    /// round-D (D decimals) or top-K-round-D (default: full; with
    /// --target, refused: the endpoint decides).
    #[arg(long, value_name = "full|label-only|top-K|round-D", value_parser = release)]
    pub release: Option<Release>,
    /// Audit a deployed model instead of training one: the `dpsgd serve`
    /// endpoint at http://HOST:PORT, queried with one key, as deployed
    /// (its release, budget, rate and monitor). Load the data as the
    /// model was trained on it (the same --dataset, --seed and
    /// --test-fraction: the training split are the members, and the
    /// model's card must count as many); the shadow models train here,
    /// through this command's recipe. Attacks the endpoint refuses are
    /// reported refused. No canaries, --release, --save-model or --html.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// The endpoint's key for --target, read from this file (`-`:
    /// standard input); default: the DPSGD_API_KEY environment variable.
    /// Never on the command line, where every user of the machine could
    /// read it.
    #[arg(long, value_name = "FILE", requires = "target")]
    pub key_file: Option<PathBuf>,
    /// Per-attack query budget, in records: each black-box attack is one
    /// client of the (hardened) model, and an attack whose queries would go
    /// past the budget is refused and reported (default: no limit; the
    /// queries are counted either way).
    #[arg(long, allow_hyphen_values = true, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub query_budget: Option<u64>,
    /// Threads training shadow models (default: one per core).
    #[arg(long, allow_hyphen_values = true, value_name = "N", value_parser = parse::positive_count)]
    pub threads: Option<usize>,
    /// Output folder: audit.json, roc.svg, roc-loglog.svg and, for image
    /// data with the inversion attack, inversion.png.
    #[arg(long, default_value = "audit-out")]
    pub out: PathBuf,
    /// Also write the JSON report here (`-`: standard output).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Also write the privacy report as one self-contained HTML page here
    /// (as `dpsgd report` does).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Save the audited (target) model here, as `train --save-model` does.
    #[arg(long, value_name = "FILE")]
    pub save_model: Option<PathBuf>,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// The files an audit writes in its `--out` folder.
pub(super) fn out_files(a: &Args) -> Vec<&'static str> {
    let mut names = vec!["audit.json", "roc.svg", "roc-loglog.svg"];
    if a.attacks.contains(&Attack::Inversion) {
        names.push("inversion.png");
    }
    names
}

/// Checks every output before any work (issue 26): each can be written
/// (`--out` a folder; `--report`, `--html` and `--save-model` files in
/// existing folders, only `--report` on standard output), and none
/// replaces an input of `o` or another output (the files in `--out`
/// included). Returns where `--report` goes.
///
/// # Errors
///
/// [`error::UsageError`] naming the flag (and the other flag of a clash).
fn check_outputs(a: &Args, o: &TrainOptions) -> Result<Option<ReportTarget>, error::UsageError> {
    // Clashes first: they name both flags, where a path in an `--out`
    // folder yet to be created would otherwise read as a missing folder.
    let names = out_files(a);
    // The folder itself too: `--html` on it cannot be written either.
    let mut written = vec![("--out", a.out.clone())];
    written.extend(clobbering::in_folder("--out", &a.out, &names));
    // The model's card goes beside it (dpsgd::train::card_path).
    let card = a.save_model.as_deref().map(dpsgd::train::card_path);
    written.extend(clobbering::given([
        ("--report", a.report.as_ref()),
        ("--html", a.html.as_ref()),
        ("--save-model", a.save_model.as_ref()),
        ("--save-model", card.as_ref()),
    ]));
    clobbering::check_no_clobbering(&o.inputs(), &written)?;
    clobbering::check_output_folder("--out", &a.out, &names)?;
    let report_target = a.report.as_deref().map(ReportTarget::check).transpose()?;
    if let Some(path) = &a.html {
        check_output_path("--html", path)?;
    }
    if let Some(path) = &a.save_model {
        check_save_path(path)?;
    }
    Ok(report_target)
}

/// Runs the command.
///
/// # Errors
///
/// Bad data, bad settings, a failed run or unwritable output.
pub fn run(a: &Args) -> Result<std::process::ExitCode> {
    if let Some(url) = &a.target {
        return super::audit_target::run(a, url);
    }
    let mut o = a.options.clone();
    o.test_fraction.get_or_insert(0.5);
    check_canaries(a.canaries, a.canary_kind, &o)?;
    if a.canary_view.is_some() && (a.canary_kind != CanaryKind::Dirac || a.canaries == 0) {
        return Err(error::UsageError {
            flag: "--canary-view",
            message: "says what the white-box auditor observes of gradient canaries: give it with --canaries M --canary-kind dirac".into(),
        }
        .into());
    }
    if a.canary_records_per_user.is_some()
        && (a.canaries == 0 || a.canary_kind == CanaryKind::Dirac)
    {
        return Err(error::UsageError {
            flag: "--canary-records-per-user",
            message: "sizes input canary users: give it with --canaries M (mislabeled or ood)"
                .into(),
        }
        .into());
    }
    let report_target = check_outputs(a, &o)?;
    let audit = AuditConfig {
        release: a.release.unwrap_or(Release::Full),
        canary_view: a.canary_view.unwrap_or_default(),
        query_budget: a.query_budget,
        canary_records_per_user: a.canary_records_per_user,
        ..audit_config(
            &a.attacks,
            a.shadow_models,
            a.canaries,
            a.canary_kind,
            a.canary_guesses,
            a.threads,
            o.seed.unwrap_or(0),
        )?
    };
    // By user whenever the data has users: the audit scores users.
    let (train, test, preprocessing) = load_for_audit(&o, o.seed.unwrap_or(0))?;
    let cfg = TrainConfig {
        save_model: a.save_model.clone(),
        // The target's ε after every epoch, for the report's budget curve.
        progress_epsilon: true,
        ..config(&o, a.privacy.privacy(), &train)
    };
    if !a.quiet
        && let Some(line) = crate::setup::recipe_line(&cfg)
    {
        eprintln!("{line}");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let outcome = run_audit(&cfg, &o, &audit, &train, &test, a.quiet)?;
    let report = &outcome.report;
    for w in report.target.warnings.iter().chain(&report.warnings) {
        eprintln!("WARNING: dpsgd: {w}");
    }
    let table = table(report);
    if let Some(ReportTarget::Stdout) = report_target {
        eprint!("{table}");
    } else {
        print!("{table}");
    }
    let mut json = serde_json::to_value(report)?;
    json["dataset"] = o.dataset.to_string().into();
    json["preprocessing"] = serde_json::to_value(&preprocessing)?;
    let text = serde_json::to_string_pretty(&json)?;
    write_atomically(&a.out.join("audit.json"), &text)?;
    let title = format!(
        "{} on {}, {}",
        serde_json::to_value(report.target.model)?
            .as_str()
            .unwrap_or("model")
            .to_owned(),
        o.dataset,
        match report.epsilon {
            Some(e) => format!("DP-SGD ε = {e:.2}"),
            None => "non-private".into(),
        }
    );
    let mut written = write_figures(&report.attacks, report.inversion.as_ref(), &a.out, &title)?;
    if let Some(target) = &report_target {
        target.write(&text)?;
    }
    if let Some(path) = &a.html {
        crate::html::write_html_of(
            &json,
            &a.out.join("audit.json").display().to_string(),
            Some(&a.out.join("inversion.png")),
            path,
        )?;
        written.push("the HTML report");
    }
    if !a.quiet {
        eprintln!("wrote {} in {}", written.join(", "), a.out.display());
    }
    if report
        .canary_audit
        .as_ref()
        .is_some_and(|c| c.exceeds_claim)
    {
        eprintln!(
            "ERROR: dpsgd: the measured ε lower bound exceeds the claimed ε: the privacy claim is false (a bug); see canary_audit in the report"
        );
        return Ok(std::process::ExitCode::from(EXIT_CLAIM_REFUTED));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The figures an audit writes in `out` beside its `audit.json`: the ROC
/// curves (linear and log-log) of `attacks` and, for single-channel
/// images, the grid of `inversion`'s reconstructions. Returns every file
/// name written, `audit.json` first.
///
/// # Errors
///
/// A figure that cannot be drawn or written.
pub(super) fn write_figures(
    attacks: &[dpsgd::train::audit::AttackResult],
    inversion: Option<&dpsgd::train::audit::InversionReport>,
    out: &std::path::Path,
    title: &str,
) -> Result<Vec<&'static str>> {
    plot_roc(attacks, &out.join("roc.svg"), title, false)?;
    plot_roc(attacks, &out.join("roc-loglog.svg"), title, true)?;
    let mut written = vec!["audit.json", "roc.svg", "roc-loglog.svg"];
    if let Some(inv) = inversion
        && let Some([1, h, w]) = inv.image_shape
    {
        let png = dpsgd::audit::image::encode_png_grid(
            &inv.images,
            h,
            w,
            inv.images.len().min(10),
            inv.range,
            if h < 16 { 8 } else { 4 },
        )?;
        // Owner-only and atomic like every other output (the class
        // averages are computed from the private model).
        let path = out.join("inversion.png");
        dpsgd_burn::io::write_atomically(&path, &png, dpsgd_burn::io::Access::OwnerOnly)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push("inversion.png");
    }
    Ok(written)
}
