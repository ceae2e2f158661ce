//! `dpsgd audit --target http://…`: the audit's black-box attacks against a
//! deployed `dpsgd serve` endpoint, queried with one key, as deployed
//! (`dpsgd::train::audit::audit_deployed`). Shadow models train here,
//! through this command's recipe; members and non-members are the data
//! loaded here, split as `train` split it.

use super::audit::{Args, out_files, write_figures};
use crate::error::UsageError;
use crate::output::audit::deployed_table;
use crate::output::clobbering;
use crate::output::files::{ReportTarget, write_atomically};
use crate::setup::{config, load, users_unscored_at_record_level};
use anyhow::{Context, Result};
use dpsgd::train::TrainConfig;
use dpsgd::train::TrainError;
use dpsgd::train::audit::{AuditConfig, CanaryKind, audit_deployed};
use dpsgd_serve::client::{ClientSettings, Endpoint};
use std::io::Read;

/// The environment variable a key may come from.
pub const KEY_VAR: &str = "DPSGD_API_KEY";

/// The flags that say something only of an audit that trains its target.
fn refuse_training_flags(a: &Args) -> Result<(), UsageError> {
    let refuse = |flag: &'static str, what: &str| {
        Err(UsageError {
            flag,
            message: format!("{what}; with --target the model is the endpoint's, already trained"),
        })
    };
    if a.canaries > 0 {
        return refuse(
            "--canaries",
            "canaries are planted in the target's training run",
        );
    }
    if a.canary_view.is_some()
        || a.canary_records_per_user.is_some()
        || a.canary_guesses.is_some()
        || a.canary_kind != CanaryKind::default()
    {
        return refuse(
            "--canary-kind",
            "the canary flags shape canaries planted in the target's training run",
        );
    }
    if a.release.is_some() {
        return refuse(
            "--release",
            "the endpoint decides what each key is released (the audit reads it from the answers)",
        );
    }
    if a.save_model.is_some() {
        return refuse("--save-model", "no model is trained");
    }
    if a.html.is_some() {
        return refuse(
            "--html",
            "the HTML report is not made for endpoint audits yet (audit.json and the ROC figures are written)",
        );
    }
    Ok(())
}

/// The most bytes read for a key (one is 73).
const KEY_FILE_LIMIT: u64 = 4096;

/// At most [`KEY_FILE_LIMIT`] bytes of `from`, as text.
fn read_key(from: impl Read) -> std::io::Result<String> {
    let mut s = String::new();
    from.take(KEY_FILE_LIMIT).read_to_string(&mut s)?;
    Ok(s)
}

/// The endpoint's key: from `--key-file` (`-`: standard input) or
/// [`KEY_VAR`]. Never from the command line, where every user of the
/// machine could read it.
fn key(a: &Args) -> Result<String> {
    let key = match a.key_file.as_deref() {
        Some(p) if p.as_os_str() == "-" => {
            read_key(std::io::stdin()).context("reading the key from standard input")?
        }
        Some(p) => std::fs::File::open(p)
            .and_then(read_key)
            .with_context(|| format!("reading the key from {}", p.display()))?,
        None => std::env::var(KEY_VAR).map_err(|_| UsageError {
            flag: "--key-file",
            message: format!(
                "--target needs the endpoint's key: --key-file FILE (- for standard input) or the {KEY_VAR} environment variable"
            ),
        })?,
    };
    Ok(key.trim().to_owned())
}

/// Runs `dpsgd audit --target URL`.
///
/// # Errors
///
/// Flags that apply only to a trained target, a missing key, an endpoint
/// that cannot be reached or refuses the population, data that is not
/// the model's, a failed shadow, an unwritable output.
pub fn run(a: &Args, url: &str) -> Result<std::process::ExitCode> {
    refuse_training_flags(a)?;
    // The split is the training run's own: `train`'s default test
    // fraction, not the audit's ½ (the model's card checks the count).
    let o = a.options.clone();
    let written = clobbering::in_folder("--out", &a.out, &out_files(a));
    let mut outputs = vec![("--out", a.out.clone())];
    outputs.extend(written);
    outputs.extend(clobbering::given([("--report", a.report.as_ref())]));
    // The key file is an input too: no output may replace it.
    let mut inputs = o.inputs();
    if let Some(file) = a.key_file.as_ref().filter(|p| p.as_os_str() != "-") {
        inputs.push(("--key-file", file.clone()));
    }
    clobbering::check_no_clobbering(&inputs, &outputs)?;
    clobbering::check_output_folder("--out", &a.out, &out_files(a))?;
    let report_target = a.report.as_deref().map(ReportTarget::check).transpose()?;
    let key = key(a)?;
    let audit = AuditConfig {
        query_budget: a.query_budget,
        ..crate::setup::audit_config(
            &a.attacks,
            a.shadow_models,
            0,
            CanaryKind::default(),
            None,
            a.threads,
            o.seed.unwrap_or(0),
        )?
    };
    let mut endpoint = Endpoint::connect(url, &key, ClientSettings::default())
        .with_context(|| format!("connecting to {url}"))?;
    drop(key);
    if !endpoint.is_loopback() {
        eprintln!(
            "WARNING: dpsgd: {url} is not on this machine and the key travels in clear over plain HTTP: use an SSH tunnel or a TLS-terminating proxy on this machine"
        );
    }
    let deployed = endpoint.deployed_model();
    // Split as `train` split it (the members must be the model's): at the
    // record level by position, so a user's records may fall on both
    // sides, and the per-user figures are left out.
    let (train, test, preprocessing) = load(&o, o.seed.unwrap_or(0))?;
    let (train, test) = users_unscored_at_record_level(&o, train, test, "audit", a.quiet);
    // The shadows' recipe: this command's flags, fitted to the data.
    let cfg = TrainConfig {
        progress_epsilon: false,
        ..config(&o, a.privacy.privacy(), &train)
    };
    if !a.quiet
        && let Some(line) = crate::setup::recipe_line(&cfg)
    {
        eprintln!("{line} (the shadow models')");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let device = o.backend.device().map_err(anyhow::Error::msg)?;
    let quiet = a.quiet;
    let log = move |line: &str| {
        if !quiet {
            eprintln!("dpsgd audit: {line}");
        }
    };
    let report = audit_deployed(
        &cfg,
        &train,
        &test,
        &audit,
        &deployed,
        &mut endpoint,
        &device,
        &log,
    )
    .map_err(|e| match e {
        TrainError::Config(_) => anyhow::Error::from(e),
        e => anyhow::Error::from(e).context(format!("auditing {url}")),
    })?;
    let usage = endpoint.usage();
    for w in &report.warnings {
        eprintln!("WARNING: dpsgd: {w}");
    }
    let table = deployed_table(&report, &usage);
    if let Some(ReportTarget::Stdout) = report_target {
        eprint!("{table}");
    } else {
        print!("{table}");
    }
    let mut json = serde_json::to_value(&report)?;
    json["kind"] = "endpoint-audit".into();
    json["endpoint_usage"] = serde_json::to_value(usage)?;
    json["model"] = endpoint.health().model.clone().into();
    json["dataset"] = o.dataset.to_string().into();
    json["preprocessing"] = serde_json::to_value(&preprocessing)?;
    let text = serde_json::to_string_pretty(&json)?;
    write_atomically(&a.out.join("audit.json"), &text)?;
    let title = format!(
        "{} at {}, {}",
        endpoint.health().model,
        endpoint.url(),
        match report.epsilon {
            Some(e) => format!("claims ε = {e:.2}, {} release", report.release),
            None => format!("non-private, {} release", report.release),
        }
    );
    let written = write_figures(&report.attacks, report.inversion.as_ref(), &a.out, &title)?;
    if let Some(target) = &report_target {
        target.write(&text)?;
    }
    if !a.quiet {
        eprintln!("wrote {} in {}", written.join(", "), a.out.display());
    }
    Ok(std::process::ExitCode::SUCCESS)
}
