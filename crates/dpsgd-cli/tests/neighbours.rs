//! The neighbouring-data-set harness (issue 24): swap one training record
//! for another (same N) and everything a run releases other than the noisy
//! model — N, q, steps, σ, ε, status, split sizes, the model's shape, what
//! is printed and saved, whether the run stops — must be identical.
//!
//! Each *row* is a command line (an option of `train`, or `audit`); each
//! *variant* replaces the same record of one small CSV file (another label,
//! an unseen category, a huge value, a value that overflows the loss, a
//! missing category, a NaN). Every row runs with the same seed on the base
//! file and on every variant, and the released artefacts are compared
//! after masking only what is computed from the model's weights (accuracy,
//! attack scores), what the report itself files under
//! `not_covered_by_epsilon`, and wall-clock time. A variant that is refused
//! must release nothing: no report, no model, no page, no output folder
//! and nothing on standard output.
//!
//! **Every new option gets a row in [`rows`]**; a new kind of hostile
//! record gets a variant in [`VARIANTS`].
//!
//! A second harness runs the same comparison on a file with a user column
//! ([`user_rows`], [`USER_VARIANTS`]): at user level, replacing all the
//! records of one user (by fewer, more, or as many others, under the same
//! id or a new one, in the same place) must release the same; at record
//! level with a user column, replacing one record by another (same N) —
//! of the same user, or given to another user — must.

mod common;

use common::{dpsgd, temp_dir};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One hostile or ordinary replacement for one record of the base file.
struct Variant {
    name: &'static str,
    /// The replacement record (`x1,x2,colour,label`).
    record: &'static str,
    /// Whether the data is refused (then nothing may be released).
    refused: bool,
    /// Whether the record changes a vocabulary read off the data (a new
    /// category): only a run with a public schema must hide it.
    vocabulary: bool,
}

/// The base record and its replacements: a category nobody else has would
/// add an input column if the vocabulary were read off the data, another
/// label would move N if the split were stratified, and a record whose
/// loss overflows would stop the run if divergence were decided from the
/// batch's exact statistics (all three did, before issue 24).
const VARIANTS: &[Variant] = &[
    Variant {
        name: "base",
        record: "0.25,-0.5,red,0",
        vocabulary: false,
        refused: false,
    },
    Variant {
        name: "another label",
        record: "0.25,-0.5,red,1",
        vocabulary: false,
        refused: false,
    },
    Variant {
        name: "an unseen category",
        record: "0.25,-0.5,ultraviolet,0",
        vocabulary: true,
        refused: false,
    },
    Variant {
        name: "a missing category",
        record: "0.25,-0.5,?,0",
        vocabulary: false,
        refused: false,
    },
    Variant {
        name: "a huge value",
        record: "1e6,-1e6,red,0",
        vocabulary: false,
        refused: false,
    },
    Variant {
        name: "a value that overflows the loss",
        record: "3.0e38,3.0e38,red,0",
        vocabulary: false,
        refused: false,
    },
    Variant {
        name: "a line of empty fields",
        record: ",,,",
        vocabulary: false,
        refused: true,
    },
    Variant {
        name: "a quote never closed",
        record: "0.25,\"-0.5,red,0",
        vocabulary: false,
        refused: true,
    },
    Variant {
        name: "a NaN",
        record: "NaN,0.5,red,0",
        vocabulary: false,
        refused: true,
    },
];

/// Records in the file.
const N: usize = 26;

/// The base file: 26 records, two numeric features, one categorical, a
/// numeric label; the record at `at` is `record`.
fn write_data(dir: &Path, at: usize, record: &str) -> PathBuf {
    let colours = ["red", "green", "blue"];
    let mut text = String::from("x1,x2,colour,label\n");
    for i in 0..N {
        if i == at {
            text += record;
            text.push('\n');
            continue;
        }
        let class = usize::from(i % 2 == 1);
        let c = if class == 0 { -1.0 } else { 1.0 };
        let jitter = ((i as f64) * 0.731).sin() * 0.4;
        text += &format!(
            "{:.4},{:.4},{},{class}\n",
            c + jitter,
            0.5 * c - jitter,
            colours[i % 3]
        );
    }
    let path = dir.join("data.csv");
    std::fs::write(&path, text).expect("write the data");
    path
}

/// The position of the record the variants replace: one that every row
/// trains on (in the training part of `train`'s 80/20 and 70/30 splits and
/// of `audit`'s 50/50 split, which depend on N and the seed only), so that
/// a hostile record is actually sampled into batches.
fn replaced_position() -> usize {
    let seed: u64 = SEED.parse().expect("a numeric seed");
    // `train`'s default 80/20 split, a row's 70/30, `audit`'s 50/50.
    let parts: Vec<Vec<usize>> = [0.2, 0.3, 0.5]
        .iter()
        .map(|&f| {
            dpsgd::data::Dataset::split_positions(N, f, seed)
                .expect("a split")
                .0
        })
        .collect();
    (0..N)
        .find(|p| parts.iter().all(|train| train.contains(p)))
        .expect("a position in every training part")
}

/// The public schema of the data: its categories and classes.
fn write_schema(dir: &Path) -> PathBuf {
    let path = dir.join("schema.json");
    std::fs::write(
        &path,
        r#"{"header": true, "columns": {"colour": ["red", "green", "blue"]}, "classes": ["0", "1"]}"#,
    )
    .expect("write the schema");
    path
}

/// One row of the harness: a command and its options (the data, seed,
/// outputs and schema are added by [`run`]).
struct Row {
    name: &'static str,
    command: &'static str,
    flags: &'static [&'static str],
    /// Report fields, beyond the common ones, that are computed from the
    /// model's weights in this row (JSON pointers).
    model_derived: &'static [&'static str],
    /// Whether the row declares the public schema; a row without one must
    /// say that its vocabulary was read off the data.
    schema: bool,
    /// The flags of a first run on the same data, into the same folder,
    /// before the row's own (a run that the row resumes); empty: none.
    /// What it prints is released too.
    before: &'static [&'static str],
}

/// The fields a row leaves as they usually are: with the schema, no first
/// run.
const ROW: Row = Row {
    name: "",
    command: "train",
    flags: &[],
    model_derived: &[],
    schema: true,
    before: &[],
};

/// Every option that changes what a run does gets a row.
/// The common flags of a row: a hidden layer wide enough that one more
/// input column changes the saved model's size (burn aligns its tensors'
/// data).
const SMALL: &[&str] = &["--epochs", "5", "--batch-size", "2", "--hidden", "64"];

/// What an audit measures of the model (and the records it is asked
/// about): attack scores, bounds, inversions.
const AUDIT_MEASUREMENTS: &[&str] = &[
    "/attacks",
    "/train_accuracy",
    "/epsilon_lower_bound",
    "/inversion",
    "/canary_audit",
];

fn rows() -> Vec<Row> {
    let with = |extra: &'static [&'static str]| -> &'static [&'static str] {
        Box::leak([SMALL, extra].concat().into_boxed_slice())
    };
    vec![
        Row {
            name: "plain (signed-log features, tabular recipe)",
            command: "train",
            flags: with(&[]),
            model_derived: &[],
            schema: true,
            ..ROW
        },
        Row {
            name: "general recipe (MLP)",
            command: "train",
            flags: with(&["--recipe", "general"]),
            model_derived: &[],
            schema: true,
            ..ROW
        },
        Row {
            name: "declared feature range",
            command: "train",
            flags: with(&["--feature-range", "-2:2"]),
            model_derived: &[],
            schema: true,
            ..ROW
        },
        Row {
            name: "fixed noise multiplier, PLD",
            command: "train",
            flags: with(&["--noise-multiplier", "1.5", "--accountant", "pld"]),
            model_derived: &[],
            schema: true,
            ..ROW
        },
        Row {
            name: "early stopping",
            command: "train",
            flags: with(&["--early-stopping", "1"]),
            // The stop is chosen from the released models on the held-out
            // validation records; `epochs`, `steps` and ε are the plan's.
            model_derived: &[
                "/early_stopping/best_epoch",
                "/early_stopping/stopped_at_epoch",
                "/early_stopping/stopped_early",
                "/early_stopping/validation_accuracy",
            ],
            schema: true,
            ..ROW
        },
        Row {
            // α = 0.2 · ln K from the declared number of classes; the
            // branches are chosen per example under DP-SGD.
            name: "RelaxLoss by the default rule",
            command: "train",
            flags: with(&["--relaxloss", "--relaxloss-upper", "0.2"]),
            model_derived: &[],
            schema: true,
            ..ROW
        },
        Row {
            name: "MIST",
            command: "train",
            flags: with(&["--mist", "--mist-submodels", "2"]),
            model_derived: &[],
            schema: true,
            ..ROW
        },
        Row {
            // No --batch-size: the recipe's batch capped at a quarter of a
            // sub-model's expected part, N/M (public).
            name: "MIST with the recipe's batch",
            command: "train",
            flags: &[
                "--epochs",
                "5",
                "--hidden",
                "64",
                "--mist",
                "--mist-submodels",
                "2",
            ],
            model_derived: &[],
            schema: true,
            ..ROW
        },
        Row {
            name: "virtual batches",
            command: "train",
            flags: with(&["--max-physical-batch-size", "1"]),
            model_derived: &[],
            schema: true,
            ..ROW
        },
        Row {
            name: "data parallel",
            command: "train",
            flags: with(&["--devices", "2"]),
            model_derived: &[],
            schema: true,
            ..ROW
        },
        Row {
            name: "defences: label smoothing, weight decay",
            command: "train",
            flags: with(&["--label-smoothing", "0.1", "--weight-decay", "0.01"]),
            model_derived: &[],
            schema: true,
            ..ROW
        },
        Row {
            name: "adaptive clipping",
            command: "train",
            // The clipped count's noise (batch / 20) must exceed σ/2.
            flags: &[
                "--epochs",
                "5",
                "--batch-size",
                "12",
                "--hidden",
                "64",
                "--noise-multiplier",
                "1",
                "--clipping",
                "adaptive",
            ],
            // The final clipping norm is a noisy release of the mechanism
            // (accounted for), like the weights.
            model_derived: &["/clipping/Adaptive/max_grad_norm"],
            schema: true,
            ..ROW
        },
        Row {
            name: "audit",
            command: "audit",
            flags: &[
                "--epochs",
                "3",
                "--batch-size",
                "2",
                "--hidden",
                "64",
                "--attacks",
                "loss,confidence",
            ],
            // Attack scores are computed from the model and the records.
            model_derived: &[
                "/attacks",
                "/train_accuracy",
                "/epsilon_lower_bound",
                "/inversion",
                "/canary_audit",
            ],
            schema: true,
            ..ROW
        },
        Row {
            // White-box canaries (issue 28) planted in the target's run:
            // their slots join N (the same for neighbours), and what the
            // auditor saw is a measurement of the model.
            name: "audit with white-box canaries",
            command: "audit",
            flags: &[
                "--epochs",
                "3",
                "--batch-size",
                "2",
                "--hidden",
                "64",
                "--attacks",
                "loss",
                "--canaries",
                "8",
                "--canary-kind",
                "dirac",
                "--canary-view",
                "all-steps",
            ],
            model_derived: &[
                "/attacks",
                "/train_accuracy",
                "/epsilon_lower_bound",
                "/inversion",
                "/canary_audit",
            ],
            schema: true,
            ..ROW
        },
        Row {
            // Options that only reshape the run, grouped (each changes
            // nothing a record could move; a row apiece would cost the
            // suite's time for no more coverage).
            name: "logistic regression, per-layer clipping, SGD, a large δ allowed",
            command: "train",
            flags: &[
                "--epochs",
                "5",
                "--batch-size",
                "2",
                "--model",
                "logreg",
                "--clipping",
                "per-layer",
                "--max-grad-norm",
                "0.5",
                "--optimizer",
                "sgd",
                "--lr",
                "0.05",
                "--delta",
                "0.05",
                "--allow-large-delta",
            ],
            model_derived: &[],
            schema: true,
            ..ROW
        },
        Row {
            name: "tanh, EMA, dropout, automatic clipping, ε = 1, a 30% test split",
            command: "train",
            flags: with(&[
                "--activation",
                "tanh",
                "--ema-decay",
                "0.9",
                "--dropout",
                "0.1",
                "--clipping",
                "automatic",
                "--target-epsilon",
                "1",
                "--test-fraction",
                "0.3",
                "--quiet",
            ]),
            model_derived: &[],
            schema: true,
            ..ROW
        },
        Row {
            name: "defences: confidence penalty, MIST's knobs",
            command: "train",
            flags: with(&[
                "--confidence-penalty",
                "0.1",
                "--mist",
                "--mist-submodels",
                "2",
                "--mist-weight",
                "0.5",
                "--mist-local-epochs",
                "1",
                "--mist-cross-epochs",
                "1",
            ]),
            model_derived: &[],
            schema: true,
            ..ROW
        },
        Row {
            name: "early stopping with its validation fraction",
            command: "train",
            flags: with(&["--early-stopping", "1", "--validation-fraction", "0.25"]),
            model_derived: &[
                "/early_stopping/best_epoch",
                "/early_stopping/stopped_at_epoch",
                "/early_stopping/stopped_early",
                "/early_stopping/validation_accuracy",
            ],
            schema: true,
            ..ROW
        },
        Row {
            // Outputs and inputs that are public or secret, grouped: the
            // page renders the report; the checkpoint folder's contents
            // are a secret, its file names are not.
            name: "a public scaling reference, an HTML page, checkpoints, the backend named",
            flags: with(&[
                "--scaling-reference",
                "@reference.csv",
                "--html",
                "@page.html",
                "--checkpoint-dir",
                "@checkpoints",
                "--backend",
                "flex",
            ]),
            ..ROW
        },
        Row {
            name: "non-private, with its HTML page",
            flags: with(&["--non-private", "--html", "@page.html"]),
            ..ROW
        },
        Row {
            // Three epochs checkpointed, then two more resumed (a fixed σ,
            // so that the run may grow).
            name: "resumed from a checkpoint",
            before: &[
                "--epochs",
                "3",
                "--batch-size",
                "2",
                "--hidden",
                "64",
                "--noise-multiplier",
                "1",
                "--checkpoint-dir",
                "@checkpoints",
                "--quiet",
            ],
            flags: &[
                "--epochs",
                "5",
                "--batch-size",
                "2",
                "--hidden",
                "64",
                "--noise-multiplier",
                "1",
                "--checkpoint-dir",
                "@checkpoints",
                "--resume",
            ],
            ..ROW
        },
        Row {
            // The audit's own options, grouped: shadow models, a hardened
            // release under a query budget, canaries with their guesses,
            // threads, a page and a public scaling reference.
            name: "audit: shadows, top-1 under a budget, canary guesses, threads, HTML, a reference",
            command: "audit",
            flags: &[
                "--epochs",
                "3",
                "--batch-size",
                "2",
                "--hidden",
                "64",
                "--attacks",
                "loss,shadow",
                "--shadow-models",
                "2",
                "--release",
                "top-1",
                "--query-budget",
                "1000",
                "--canaries",
                "2",
                "--canary-guesses",
                "1",
                "--threads",
                "1",
                "--html",
                "@page.html",
                "--scaling-reference",
                "@reference.csv",
            ],
            model_derived: AUDIT_MEASUREMENTS,
            ..ROW
        },
        Row {
            name: "audit of a non-private model",
            command: "audit",
            flags: &[
                "--epochs",
                "3",
                "--batch-size",
                "2",
                "--hidden",
                "64",
                "--attacks",
                "loss",
                "--non-private",
            ],
            model_derived: AUDIT_MEASUREMENTS,
            ..ROW
        },
        Row {
            // Two budgets (one non-private), two seeds each, each run
            // audited: sweep.json, sweep.csv and the plot.
            name: "sweep: budgets, repeats, shadows, canaries",
            command: "sweep",
            flags: &[
                "--epochs",
                "3",
                "--batch-size",
                "2",
                "--hidden",
                "64",
                "--epsilons",
                "1,inf",
                "--repeats",
                "2",
                "--attacks",
                "loss,shadow",
                "--shadow-models",
                "2",
                "--canaries",
                "2",
            ],
            model_derived: &[
                "/runs/*/attacks",
                "/runs/*/train_accuracy",
                "/runs/*/epsilon_lower_bound",
                "/runs/*/canary_audit",
            ],
            ..ROW
        },
        Row {
            // Each defence trained and attacked on the same split:
            // compare.json, .csv, .md and the plot. No page: its findings
            // name the defence that the measurements favour (declared in
            // compare.json's rows), so its words are measurements too.
            name: "compare: defences, shadows",
            command: "compare",
            flags: &[
                "--epochs",
                "3",
                "--batch-size",
                "2",
                "--hidden",
                "64",
                "--attacks",
                "loss,shadow",
                "--shadow-models",
                "2",
                "--defences",
                "none,label-smoothing,relaxloss,early-stopping:patience=1,dp:eps=1",
                "--grid",
                "none",
            ],
            model_derived: &["/*/attacks", "/*/audit/attacks", "/*/audit/train_accuracy"],
            ..ROW
        },
        Row {
            name: "no schema (vocabulary read off the data, declared so)",
            command: "train",
            flags: with(&["--num-classes", "2"]),
            model_derived: &[],
            schema: false,
            ..ROW
        },
    ]
}

/// One seed for every run.
const SEED: &str = "9";

/// What one run released.
#[derive(Debug, Clone, PartialEq)]
struct Released {
    exit: Option<i32>,
    stdout: String,
    stderr: String,
    report: Option<Value>,
    /// The saved model's size in bytes (its weights are the mechanism's
    /// output; its shape is public).
    model_bytes: Option<u64>,
    /// The saved model's card (architecture, ε, δ, unit), compared whole
    /// but for the checksum of the weights.
    card: Option<Value>,
    /// The files of the output folder: each name, and what its content
    /// releases ([`output_content`]).
    outputs: Vec<(String, Option<Value>)>,
    /// The HTML page, its numbers masked ([`mask_page`]).
    page: Option<String>,
    /// The names of the files in the checkpoint folder (the checkpoint is
    /// a secret, mode 0600; that it exists is not).
    checkpoints: Vec<String>,
    /// A first run's exit code, standard output and error, masked
    /// ([`Row::before`]).
    first: Option<(Option<i32>, String, String)>,
}

impl Released {
    /// Whether a refused run released nothing: no report, no model, no
    /// page, no output or checkpoint file and nothing on standard output
    /// (neither its first run, if it had one).
    fn released_nothing(&self) -> bool {
        self.exit != Some(0)
            && self.stdout.is_empty()
            && self.report.is_none()
            && self.model_bytes.is_none()
            && self.outputs.is_empty()
            && self.page.is_none()
            && self.checkpoints.is_empty()
            && self
                .first
                .as_ref()
                .is_none_or(|(exit, stdout, _)| *exit != Some(0) && stdout.is_empty())
    }
}

/// Runs `row` on `dataset` and collects what it released, masked. A flag
/// that starts with `@` names a file or folder of the row's own (`dir`):
/// the public scaling reference ([`write_reference`]), the HTML page, the
/// checkpoint folder.
fn run(row: &Row, dir: &Path, dataset: &str, schema: &Path) -> Released {
    let report = dir.join("report.json");
    let model = dir.join("model.bin");
    let out = dir.join("out");
    let card = dir.join("model.bin.card.json");
    for stale in [&report, &model, &card, &dir.join(PAGE)] {
        let _ = std::fs::remove_file(stale);
    }
    for stale in [&out, &dir.join(CHECKPOINTS)] {
        let _ = std::fs::remove_dir_all(stale);
    }
    let in_dir = |flags: &[&str]| -> Vec<String> {
        flags
            .iter()
            .map(|f| match f.strip_prefix('@') {
                Some(name) => dir.join(name).display().to_string(),
                None => (*f).to_owned(),
            })
            .collect()
    };
    let common = |flags: &[&str]| -> Vec<String> {
        let mut args = vec![
            row.command.to_owned(),
            "--dataset".into(),
            dataset.to_owned(),
        ];
        args.extend(in_dir(flags));
        args.extend(["--seed".into(), SEED.into()]);
        if row.schema {
            args.extend(["--schema".into(), schema.display().to_string()]);
        }
        args
    };
    let first = (!row.before.is_empty()).then(|| {
        let args = common(row.before);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = dpsgd(&args);
        (
            output.status.code(),
            mask_text(&String::from_utf8_lossy(&output.stdout)),
            mask_text(&String::from_utf8_lossy(&output.stderr)),
        )
    });
    let mut args = common(row.flags);
    if matches!(row.command, "train" | "audit") {
        args.extend(["--report".into(), report.display().to_string()]);
        args.extend(["--save-model".into(), model.display().to_string()]);
    }
    if matches!(row.command, "audit" | "sweep" | "compare") {
        args.extend(["--out".into(), out.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = dpsgd(&args);
    let report = std::fs::read_to_string(&report)
        .ok()
        .map(|text| serde_json::from_str(&text).expect("the report is JSON"))
        .map(|mut v| {
            mask_report(&mut v, row.model_derived);
            v
        });
    let names = |folder: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(folder)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    Released {
        exit: output.status.code(),
        stdout: mask_text(&String::from_utf8_lossy(&output.stdout)),
        stderr: mask_text(&String::from_utf8_lossy(&output.stderr)),
        report,
        model_bytes: std::fs::metadata(&model).ok().map(|m| m.len()),
        card: std::fs::read_to_string(&card).ok().map(|text| {
            let mut card: Value = serde_json::from_str(&text).expect("the card is JSON");
            // The checksum of the saved weights: a function of the model,
            // the mechanism's output (post-processing, covered by ε).
            if let Some(o) = card.as_object_mut() {
                o.remove("record_crc32");
            }
            card
        }),
        outputs: names(&out)
            .into_iter()
            .map(|name| {
                let content = output_content(&out.join(&name), row.model_derived);
                (name, content)
            })
            .collect(),
        page: std::fs::read_to_string(dir.join(PAGE))
            .ok()
            .map(|page| mask_page(&page)),
        checkpoints: names(&dir.join(CHECKPOINTS)),
        first,
    }
}

/// The `--dataset` of a CSV file.
fn csv(data: &Path) -> String {
    format!("csv:{}", data.display())
}

/// The HTML page a row may ask for (`--html @page.html`).
const PAGE: &str = "page.html";

/// The checkpoint folder a row may ask for (`--checkpoint-dir @checkpoints`).
const CHECKPOINTS: &str = "checkpoints";

/// The public scaling reference of a row (`--scaling-reference
/// @reference.csv`): the data's columns, with ranges that do not depend on
/// the data.
fn write_reference(dir: &Path) -> PathBuf {
    let path = dir.join("reference.csv");
    std::fs::write(&path, "x1,x2,colour,label\n-3,-2,red,0\n3,2,blue,1\n")
        .expect("write the reference");
    path
}

/// The HTML page with every number masked (`#`): the page renders the
/// report, whose numbers are compared there (masked only where the model
/// computed them); what the page says in words — its findings, the
/// categories and classes it names, its sections — must match.
fn mask_page(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    let mut chars = page.chars().peekable();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        // A digit inside a word (`u03`, `idx3`) is the word's, and stays.
        let starts_number = c.is_ascii_digit() && !in_word;
        in_word = c.is_alphanumeric() || c == '_';
        if starts_number {
            while chars
                .peek()
                .is_some_and(|&d| d.is_ascii_digit() || d == '.' || d == 'e' || d == '-')
            {
                chars.next();
            }
            out.push('#');
        } else {
            out.push(c);
        }
    }
    out
}

/// Replaces each of the row's model-derived fields (JSON pointers) with
/// `"masked"`, and at any depth what every row computes from the weights
/// or the clock (the weights are the mechanism's output; time is a side
/// channel stated in the threat model) and the report's own
/// `not_covered_by_epsilon`.
///
/// A pointer's segment `*` stands for every element of an array (a
/// sweep's runs, a comparison's rows).
fn mask_report(v: &mut Value, extra: &[&str]) {
    for pointer in extra {
        let segments: Vec<&str> = pointer.split('/').skip(1).collect();
        mask_at(v, &segments);
    }
    mask_timings(v);
}

/// Masks the field at `segments` below `v` (`*`: every element).
fn mask_at(v: &mut Value, segments: &[&str]) {
    let Some((first, rest)) = segments.split_first() else {
        *v = Value::String("masked".into());
        return;
    };
    match v {
        Value::Array(items) if *first == "*" => {
            items.iter_mut().for_each(|item| mask_at(item, rest));
        }
        Value::Array(items) => {
            if let Some(item) = first.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                mask_at(item, rest);
            }
        }
        Value::Object(map) => {
            if let Some(field) = map.get_mut(*first) {
                mask_at(field, rest);
            }
        }
        _ => {}
    }
}

/// What one file of the output folder releases: a JSON file masked as the
/// report is ([`mask_report`]); a CSV table by its header and its rows'
/// names (the first column: its other cells are figures, compared in the
/// JSON file they are copied from, where they are masked only if measured
/// on the model); Markdown, a picture (an SVG plot, a PNG) by its name
/// alone (`None`: a comparison's Markdown renders its JSON, the best
/// defence named by what was measured; a ROC curve's points are the
/// attack's measurement).
fn output_content(path: &Path, model_derived: &[&str]) -> Option<Value> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    let text = std::fs::read_to_string(path).ok()?;
    match extension {
        "json" => {
            let mut v: Value = serde_json::from_str(&text).expect("the output is JSON");
            mask_report(&mut v, model_derived);
            Some(v)
        }
        "csv" => Some(Value::String(
            text.lines()
                .enumerate()
                .map(|(i, line)| match (i, line.split_once(',')) {
                    (0, _) | (_, None) => line.to_owned(),
                    (_, Some((name, rest))) => {
                        format!("{name},{}", vec!["#"; rest.split(',').count()].join(","))
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
        )),
        _ => None,
    }
}

/// Masks, at any depth (an audit nests its target's training report),
/// every `*_seconds` field (wall-clock time), `test_accuracy` and
/// `not_covered_by_epsilon`, and the fields that an object's
/// `not_covered_by_epsilon` declares (its `fields`: JSON pointers, or names,
/// relative to the object) — what the release itself says is not covered.
fn mask_timings(v: &mut Value) {
    let declared: Vec<String> = v
        .pointer("/not_covered_by_epsilon/fields")
        .and_then(Value::as_array)
        .map(|fields| {
            fields
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for field in &declared {
        let segments: Vec<&str> = field.trim_start_matches('/').split('/').collect();
        mask_at(v, &segments);
    }
    match v {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                if key.ends_with("_seconds")
                    || key == "test_accuracy"
                    || key == "not_covered_by_epsilon"
                {
                    *field = Value::String("masked".into());
                } else {
                    mask_timings(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_timings),
        _ => {}
    }
}

/// Masks the numbers of a printed line that are computed from the model,
/// the private records (after "not covered by ε", or a batch loss) or the
/// clock; every other character must match.
fn mask_text(text: &str) -> String {
    text.lines()
        .map(|line| {
            // The audit's table: one row of scores per attack, and the
            // canary and inversion lines, are measurements of the model.
            let first = line.split_whitespace().next().unwrap_or_default();
            if MEASUREMENT_LINES.contains(&first) {
                // Each number one `#`, its sign included, and the columns'
                // padding collapsed: a figure with one more digit (an
                // interval's end at 10%) shifts the padding, which is the
                // number's, not the run's; a correlation measured at
                // −0.05 in one run and 0.05 in the other differs in the
                // model only.
                let words: Vec<String> = line
                    .split_whitespace()
                    .map(|w| {
                        let mut out = String::new();
                        let mut chars = w.chars().peekable();
                        while let Some(c) = chars.next() {
                            let sign = matches!(c, '-' | '−')
                                && chars.peek().is_some_and(char::is_ascii_digit);
                            if sign || (c.is_ascii_digit() && out.ends_with('#')) {
                                continue;
                            }
                            out.push(if c.is_ascii_digit() { '#' } else { c });
                        }
                        out
                    })
                    .collect();
                return words.join(" ");
            }
            // The exact statistics are printed after this marker.
            let line = match line.find("not covered by ε") {
                Some(at) => &line[..at],
                None => line,
            };
            line.split(" | ")
                .map(mask_segment)
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first words of the lines of `audit`'s table that hold scores
/// computed from the model (and the records it is asked about).
const MEASUREMENT_LINES: &[&str] = &[
    "loss",
    "confidence",
    "entropy",
    "modified-entropy",
    "lira-online",
    "lira-offline",
    "rmia-online",
    "rmia-offline",
    "shadow",
    "label-only",
    // The attack's most exposed slice, on its own line under the row.
    "most",
    // The attack's figures per user (`users, mean of …`) and for the
    // heaviest users (`users with ≥ n records, …`), under its row.
    "users,",
    "users",
    "canaries:",
    "canaries,",
    "white-box",
    "inversion:",
];

/// Labels after which a number is a metric of the model (or time).
const METRIC_LABELS: &[&str] = &[
    "test accuracy",
    "test acc",
    "train accuracy",
    "accuracy",
    "AUC",
    "TPR@0.1%FPR",
    "loss",
    "validation",
];

fn mask_segment(segment: &str) -> String {
    let mut out = String::new();
    let mut words = segment.split(' ').peekable();
    let mut masking = false;
    while let Some(word) = words.next() {
        let numeric = word
            .trim_end_matches(['%', ',', ';', ')', ':'])
            .parse::<f64>()
            .is_ok();
        let timing = numeric
            && words
                .peek()
                .is_some_and(|w| w.trim_end_matches([',', ';', ')']) == "s");
        if numeric && (masking || timing) {
            out.push('#');
        } else {
            out.push_str(word);
        }
        out.push(' ');
        if METRIC_LABELS.iter().any(|l| out.trim_end().ends_with(l)) {
            masking = true;
        } else if !numeric {
            masking = METRIC_LABELS.contains(&word);
        }
    }
    out.trim_end().to_owned()
}

/// Runs every row on the base file and on every variant and compares.
#[test]
fn should_release_the_same_everything_but_the_model_for_neighbouring_data() {
    let failures = compare_rows("harness", rows());
    assert!(
        failures.is_empty(),
        "one record changed what a run releases:\n{}",
        failures.join("\n")
    );
}

/// The rows of remote data-parallel workers (feature `distributed`): two
/// `dpsgd worker` processes on 127.0.0.1, the step timeout and the
/// worker-loss policy.
#[cfg(feature = "distributed")]
#[test]
fn should_release_the_same_everything_but_the_model_with_remote_workers() {
    let secrets = temp_dir("dpsgd-neighbours", "remote-token");
    let token = secrets.join("token");
    std::fs::write(&token, "a shared secret\n").expect("write the token");
    let (a, b) = (common::worker(Some(&token)), common::worker(Some(&token)));
    let workers: &'static str = Box::leak(format!("{},{}", a.url, b.url).into_boxed_str());
    let token: &'static str = Box::leak(token.display().to_string().into_boxed_str());
    let flags: &'static [&'static str] = Box::leak(
        [
            &["--workers", workers, "--worker-timeout", "120"][..],
            &["--on-worker-loss", "continue", "--worker-token-file", token],
            SMALL,
        ]
        .concat()
        .into_boxed_slice(),
    );
    let failures = compare_rows(
        "remote",
        vec![Row {
            name: "remote workers, a token, a step timeout, continue on loss",
            command: "train",
            flags,
            model_derived: &[],
            schema: true,
            ..ROW
        }],
    );
    drop((a, b));
    let _ = std::fs::remove_dir_all(&secrets);
    assert!(
        failures.is_empty(),
        "one record changed what a run releases:\n{}",
        failures.join("\n")
    );
}

/// Runs each of `rows` on the base file and on every variant, in a
/// folder of its own (`name`): what differed, in words.
fn compare_rows(name: &str, rows: Vec<Row>) -> Vec<String> {
    let dir = temp_dir("dpsgd-neighbours", name);
    let schema = write_schema(&dir);
    write_reference(&dir);
    let mut failures = Vec::new();
    let at = replaced_position();
    // `DPSGD_NEIGHBOURS_ROWS=text` runs only the rows whose name holds it
    // (while working on one); the suite sets nothing and runs them all.
    let only = std::env::var("DPSGD_NEIGHBOURS_ROWS").ok();
    for row in rows
        .into_iter()
        .filter(|r| only.as_deref().is_none_or(|o| r.name.contains(o)))
    {
        let base_data = write_data(&dir, at, VARIANTS[0].record);
        let base = run(&row, &dir, &csv(&base_data), &schema);
        if base.exit != Some(0) {
            failures.push(format!(
                "{}: the base run failed: {}",
                row.name, base.stderr
            ));
            continue;
        }
        // A row that resumes must resume: its epoch lines start after the
        // first run's (a resume that restarted would pass the comparison).
        if !row.before.is_empty() {
            let first_epoch = base.stderr.lines().find(|l| is_epoch_line(l));
            if !first_epoch.is_some_and(|l| l.starts_with("epoch 4/5 ")) {
                failures.push(format!(
                    "{}: the run did not resume from the first run's epoch 3: {first_epoch:?}",
                    row.name
                ));
            }
        }
        if !row.schema {
            let declared = base
                .report
                .as_ref()
                .and_then(|r| r.pointer("/preprocessing/public"))
                .and_then(Value::as_bool);
            if declared != Some(false) || !base.stderr.contains("read off the private data") {
                failures.push(format!(
                    "{}: a vocabulary read off the data is not declared private: public = {declared:?}, stderr {}",
                    row.name, base.stderr
                ));
            }
        }
        for variant in &VARIANTS[1..] {
            if variant.vocabulary && !row.schema {
                continue;
            }
            let data = write_data(&dir, at, variant.record);
            let got = run(&row, &dir, &csv(&data), &schema);
            failures.extend(variant_failure(
                &row,
                variant.name,
                variant.refused,
                &base,
                &got,
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    failures
}

/// What is wrong with the run of `row` on the variant `name` (`None`:
/// nothing): a refused variant that released anything, or a release that
/// differs from the base run's ([`release_difference`]).
fn variant_failure(
    row: &Row,
    name: &str,
    refused: bool,
    base: &Released,
    got: &Released,
) -> Option<String> {
    if refused {
        (!got.released_nothing())
            .then(|| format!("{} / {name}: a refused variant released {got:?}", row.name))
    } else {
        release_difference(row, base, got).map(|d| format!("{} / {name}: {d}", row.name))
    }
}

/// How `got` differs from `base` in what the rule protects (`None`: in
/// nothing), for `row`: where the row's stop is model-derived, over the
/// epochs both runs printed ([`common_epochs`]).
fn release_difference(row: &Row, base: &Released, got: &Released) -> Option<String> {
    let (base, got) = if row.model_derived.contains(&STOPPED_AT_EPOCH) {
        common_epochs(base, got)
    } else {
        (base.clone(), got.clone())
    };
    (got != base).then(|| difference(&base, &got))
}

/// The report field of the epoch an early-stopped run stopped at.
const STOPPED_AT_EPOCH: &str = "/early_stopping/stopped_at_epoch";

/// Two releases with the epoch lines of standard error cut to the epochs
/// both ran. Where the stop is chosen from the released models (early
/// stopping), so is the number of epochs printed: post-processing of the
/// planned run, which ε covers (`EarlyStopping`'s `# Privacy`). The lines
/// of the epochs both ran, and every other line, must still match.
fn common_epochs(a: &Released, b: &Released) -> (Released, Released) {
    let epochs = |r: &Released| r.stderr.lines().filter(|l| is_epoch_line(l)).count();
    let keep = epochs(a).min(epochs(b));
    let cut = |r: &Released| {
        let mut seen = 0;
        let stderr = r
            .stderr
            .lines()
            .filter(|l| {
                if !is_epoch_line(l) {
                    return true;
                }
                seen += 1;
                seen <= keep
            })
            .collect::<Vec<_>>()
            .join("\n");
        Released {
            stderr,
            ..r.clone()
        }
    };
    (cut(a), cut(b))
}

#[test]
fn should_compare_the_epochs_both_early_stopped_runs_printed() {
    let released = |stderr: &str| Released {
        exit: Some(0),
        stdout: String::new(),
        stderr: stderr.to_owned(),
        report: None,
        model_bytes: Some(1),
        card: None,
        outputs: Vec::new(),
        page: None,
        checkpoints: Vec::new(),
        first: None,
    };
    let three = "plan\nepoch 1/5 | ε 1\nepoch 2/5 | ε 2\nepoch 3/5 | ε 3\nsaved";
    let two = "plan\nepoch 1/5 | ε 1\nepoch 2/5 | ε 2\nsaved";
    let (a, b) = common_epochs(&released(three), &released(two));
    assert_eq!(a, b);
    // A difference in an epoch both ran, or in any other line, still shows.
    for other in [
        "plan\nepoch 1/5 | ε 1\nepoch 2/5 | ε 9\nsaved",
        "plan, another\nepoch 1/5 | ε 1\nepoch 2/5 | ε 2\nsaved",
        "plan\nepoch 1/5 | ε 1\nepoch 2/5 | ε 2\nsaved elsewhere",
    ] {
        let (a, b) = common_epochs(&released(three), &released(other));
        assert_ne!(a, b, "{other}");
    }
}

/// A progress line of one epoch (`epoch 2/5 | step …`).
fn is_epoch_line(line: &str) -> bool {
    line.starts_with("epoch ") && line.contains(" | ")
}

/// The first difference between two releases, for the failure message.
fn difference(a: &Released, b: &Released) -> String {
    if a.exit != b.exit {
        return format!("exit {:?} vs {:?} ({})", a.exit, b.exit, b.stderr);
    }
    if a.stdout != b.stdout {
        return format!("stdout\n  {}\nvs\n  {}", a.stdout, b.stdout);
    }
    if a.stderr != b.stderr {
        return format!("stderr\n  {}\nvs\n  {}", a.stderr, b.stderr);
    }
    if a.model_bytes != b.model_bytes {
        return format!("model size {:?} vs {:?}", a.model_bytes, b.model_bytes);
    }
    if a.outputs != b.outputs {
        let names = |r: &Released| r.outputs.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        if names(a) != names(b) {
            return format!("outputs {:?} vs {:?}", names(a), names(b));
        }
        for ((name, x), (_, y)) in a.outputs.iter().zip(&b.outputs) {
            if x != y {
                let at = match (x, y) {
                    (Some(x), Some(y)) => json_difference("", x, y).unwrap_or_default(),
                    _ => String::new(),
                };
                return format!("output {name}: {at}");
            }
        }
    }
    if a.card != b.card {
        return format!("model card {:?} vs {:?}", a.card, b.card);
    }
    if a.checkpoints != b.checkpoints {
        return format!(
            "checkpoint folder {:?} vs {:?}",
            a.checkpoints, b.checkpoints
        );
    }
    if a.first != b.first {
        return format!("the first run: {:?} vs {:?}", a.first, b.first);
    }
    if a.page != b.page {
        return match (&a.page, &b.page) {
            (Some(x), Some(y)) => {
                let at = x.chars().zip(y.chars()).take_while(|(u, v)| u == v).count();
                let around = |p: &str| {
                    p.chars()
                        .skip(at.saturating_sub(80))
                        .take(200)
                        .collect::<String>()
                };
                format!(
                    "the HTML page, from character {at}:\n  {}\nvs\n  {}",
                    around(x),
                    around(y)
                )
            }
            (x, y) => format!("HTML page {} vs {}", x.is_some(), y.is_some()),
        };
    }
    match (&a.report, &b.report) {
        (Some(x), Some(y)) => json_difference("", x, y).unwrap_or_default(),
        (x, y) => format!("report {} vs {}", x.is_some(), y.is_some()),
    }
}

fn json_difference(at: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()) {
                let (u, v) = (
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                );
                if let Some(d) = json_difference(&format!("{at}/{key}"), u, v) {
                    return Some(d);
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| json_difference(&format!("{at}/{i}"), u, v)),
        _ if a == b => None,
        _ => Some(format!("{at}: {a} vs {b}")),
    }
}

/// The masks must not hide what the rule protects: N, q, steps, σ and ε
/// survive them, and a metric does not.
#[test]
fn should_mask_metrics_but_keep_the_accounting() {
    let line = "test accuracy 91.09% | ε = 3.00 at δ = 1e-5 (RDP, σ = 3.265) | q = 0.0890, 550 steps, 50 epochs, 3.4 s | not covered by ε: train accuracy 94.23%";
    let masked = mask_text(line);
    assert_eq!(
        masked,
        "test accuracy # | ε = 3.00 at δ = 1e-5 (RDP, σ = 3.265) | q = 0.0890, 550 steps, 50 epochs, # s | "
    );
    let mut v = serde_json::json!({"test_accuracy": 0.9, "steps": 10, "epsilon": 3.0,
        "not_covered_by_epsilon": {"train_accuracy": 1.0}});
    mask_report(&mut v, &[]);
    assert_eq!(
        v,
        serde_json::json!({"test_accuracy": "masked", "steps": 10, "epsilon": 3.0,
            "not_covered_by_epsilon": "masked"})
    );
    let mut v = serde_json::json!({"target": {"eval_seconds": 0.1, "dataset_size": 13}});
    mask_report(&mut v, &[]);
    assert_eq!(
        v,
        serde_json::json!({"target": {"eval_seconds": "masked", "dataset_size": 13}})
    );
    // What a release declares not covered is masked where it declares it
    // (pointers or names), and nothing beside it; `*` is every run.
    let mut v = serde_json::json!({"runs": [
        {"auc": 0.7, "epsilon": 1.0, "steps": 3,
         "not_covered_by_epsilon": {"fields": ["/auc", "pareto"]}, "pareto": true},
        {"auc": 0.6, "epsilon": 2.0, "steps": 3, "canary": {"hits": 2, "m": 8}}]});
    mask_report(&mut v, &["/runs/*/canary/hits"]);
    assert_eq!(
        v,
        serde_json::json!({"runs": [
            {"auc": "masked", "epsilon": 1.0, "steps": 3,
             "not_covered_by_epsilon": "masked", "pareto": "masked"},
            {"auc": 0.6, "epsilon": 2.0, "steps": 3, "canary": {"hits": "masked", "m": 8}}]})
    );
    assert_eq!(
        mask_text("loss   0.612 [0.4, 0.8]\nqueries (no budget): loss 26"),
        "loss #.# [#.#, #.#]\nqueries (no budget): loss #"
    );
    // A measurement with one more digit is the same masked line.
    assert_eq!(
        mask_text("loss   9.99% [1.00%,  9.50%]"),
        mask_text("loss  10.00% [1.00%, 12.50%]")
    );
    // Words are not numbers: a changed attack name still shows.
    assert_ne!(mask_text("loss 0.5"), mask_text("lira-online 0.5"));
    // A measurement's sign is the measurement's; a hyphen in a word is not
    // a sign.
    let white_box = |c: &str| {
        mask_text(&format!(
            "white-box canaries: all-steps, measured/claimed noise 1.01, step-to-step correlation {c} — as claimed"
        ))
    };
    assert_eq!(white_box("-0.05"), white_box("0.05"));
    assert_eq!(white_box("−0.05"), white_box("0.05"));
    assert!(white_box("0.05").contains("all-steps") && white_box("0.05").contains("step-to-step"));
    assert_ne!(white_box("0.05"), white_box("0.05 — not as claimed"));
}

// ---------------------------------------------------------------------------
// The user-level harness: data with a user column.
// ---------------------------------------------------------------------------

/// Users in the file with a user column.
const USERS: usize = 16;

/// The user column's text of user `u`.
fn user_name(u: usize) -> String {
    format!("u{u:02}")
}

/// How many records each user owns in the base file. With [`SEED`], the
/// users in `audit`'s training part (a 50/50 split by user) own 16 records:
/// exactly the most that 2 canary users of 2 records may join (one canary
/// record per 4 training records), so that a limit counted in records
/// rather than users shows as a difference when the chosen user owns one
/// record fewer.
const RECORDS_PER_USER: [usize; USERS] = [2, 1, 3, 2, 2, 2, 3, 2, 2, 1, 3, 2, 2, 2, 3, 2];

/// The records user `u` owns in the base file ([`RECORDS_PER_USER`] of
/// them, `x1,x2,colour,label`, as in [`write_data`]).
fn user_records(u: usize) -> Vec<String> {
    let colours = ["red", "green", "blue"];
    let count = RECORDS_PER_USER[u];
    (0..count)
        .map(|j| {
            let i = 3 * u + j;
            let class = usize::from(i % 2 == 1);
            let c = if class == 0 { -1.0 } else { 1.0 };
            let jitter = ((i as f64) * 0.731).sin() * 0.4;
            format!(
                "{:.4},{:.4},{},{class}",
                c + jitter,
                0.5 * c - jitter,
                colours[i % 3]
            )
        })
        .collect()
}

/// One replacement of the chosen user's records (all of them, at the same
/// place in the file), given the user's base records.
struct UserVariant {
    name: &'static str,
    records: fn(&[String]) -> Vec<String>,
    /// The user id text of each replacement record: `None` keeps the chosen
    /// user's; `Some(f)` gives record `j` the id `f(j)`.
    ids: Option<fn(usize) -> &'static str>,
    /// Whether the variant replaces one record only (same N): a record-level
    /// neighbour, which a record-level row must hide too.
    record_level: bool,
    /// Whether the variant replaces one user only: a user-level neighbour,
    /// which a user-level row must hide. (Giving one record to another
    /// user changes two users.)
    user_level: bool,
}

const USER_VARIANTS: &[UserVariant] = &[
    UserVariant {
        name: "base",
        records: <[String]>::to_vec,
        ids: None,
        record_level: true,
        user_level: true,
    },
    UserVariant {
        name: "one record instead",
        records: |_| vec!["0.25,-0.5,red,0".into()],
        ids: None,
        record_level: false,
        user_level: true,
    },
    UserVariant {
        name: "three records, other labels and values",
        records: |_| {
            vec![
                "1e3,-1e3,blue,1".into(),
                "0.1,0.2,green,0".into(),
                "-2.5,2.5,red,1".into(),
            ]
        },
        ids: None,
        record_level: false,
        user_level: true,
    },
    UserVariant {
        name: "as many records, other values",
        records: |base| {
            (0..base.len())
                .map(|j| format!("{}.5,-{j}.25,blue,{}", j + 3, (j + 1) % 2))
                .collect()
        },
        ids: None,
        record_level: false,
        user_level: true,
    },
    UserVariant {
        name: "one record replaced by another of the same user",
        records: |base| {
            let mut records = base.to_vec();
            records[0] = "7.5,-7.5,green,1".into();
            records
        },
        ids: None,
        record_level: true,
        user_level: true,
    },
    UserVariant {
        // A user new to the data, in the replaced user's place: the split
        // by user may not move (its sizes are released).
        name: "another user, a new id, in the same place",
        records: <[String]>::to_vec,
        ids: Some(|_| "newcomer"),
        record_level: false,
        user_level: true,
    },
    UserVariant {
        // At the record level a record's user id is part of the record:
        // the split may not read it. (u00 is a test user of the 80/20
        // split by user, so a split by user at the record level moves the
        // record out of training, and N with it.)
        name: "one record given to another user",
        records: <[String]>::to_vec,
        ids: Some(|j| if j == 0 { "u00" } else { "" }),
        record_level: true,
        user_level: false,
    },
];

/// The file with a user column: [`USERS`] users of 1 to 3 records each,
/// the records of user `chosen` (if any) replaced by `variant`'s.
fn write_user_data(dir: &Path, chosen: Option<usize>, variant: &UserVariant) -> PathBuf {
    let mut text = String::from("user,x1,x2,colour,label\n");
    for u in 0..USERS {
        let mut records = user_records(u);
        let mut ids = vec![user_name(u); records.len()];
        if Some(u) == chosen {
            records = (variant.records)(&records);
            ids = (0..records.len())
                .map(|j| match variant.ids.map(|f| f(j)) {
                    Some(id) if !id.is_empty() => id.to_owned(),
                    _ => user_name(u),
                })
                .collect();
        }
        for (id, record) in ids.iter().zip(records) {
            text += &format!("{id},{record}\n");
        }
    }
    let path = dir.join("users.csv");
    std::fs::write(&path, text).expect("write the data");
    path
}

/// The user whose records the variants replace: one with two records, in
/// the training part of `train`'s 80/20 and of `audit`'s 50/50 split by
/// user (which depend on the users' order of first appearance and the seed
/// only), read as the CLI reads the file, whose first record is in the
/// training part of the record-level 80/20 split by position. Also returns
/// the number of training users of the 80/20 split by user.
fn chosen_user(dir: &Path) -> (usize, usize) {
    let seed: u64 = SEED.parse().expect("a numeric seed");
    let path = write_user_data(dir, None, &USER_VARIANTS[0]);
    let user = dpsgd::data::LabelColumn::Name("user".into());
    let (data, _) =
        dpsgd::data::read_csv_with_users(&path, &dpsgd::data::LabelColumn::Last, &user, None)
            .expect("read the data");
    // The file's records in order: the id of each record's user.
    let ids = data.users().expect("user ids").to_vec();
    let owners: Vec<usize> = (0..USERS)
        .flat_map(|u| std::iter::repeat_n(u, user_records(u).len()))
        .collect();
    assert_eq!(ids.len(), owners.len());
    let training = |fraction: f64| -> Vec<u64> {
        let (train, _) = data.split_by_user(fraction, seed).expect("a split");
        train.users().expect("user ids").to_vec()
    };
    let (train, audit_train) = (training(0.2), training(0.5));
    // `train`'s record-level split (by position): the chosen user's first
    // record, which a record-level variant replaces, must be trained on.
    let (record_train, _) =
        dpsgd::data::Dataset::split_positions(ids.len(), 0.2, seed).expect("a split");
    assert_eq!(
        audit_train.len(),
        16,
        "the audit's training part should be at the canary share's limit"
    );
    let training_users = train.iter().collect::<std::collections::HashSet<_>>().len();
    // The record-level variant gives a record to u00, which must be a test
    // user of the split by user: else a split by user at the record level
    // would keep the record in training and the variant would see nothing.
    let u00 = ids[0];
    assert!(
        !train.contains(&u00),
        "u00 should be a test user of the 80/20 split by user (choose the variant's user anew)"
    );
    let chosen = (0..USERS)
        .find(|&u| {
            let id = ids[owners.iter().position(|&o| o == u).expect("a record")];
            let first = owners.iter().position(|&o| o == u).expect("a record");
            user_records(u).len() == 2
                && train.contains(&id)
                && audit_train.contains(&id)
                && record_train.contains(&first)
        })
        .expect("a user of two records in both training parts");
    (chosen, training_users)
}

/// The rows of the user-level harness.
fn user_rows() -> Vec<Row> {
    let user_level: &'static [&'static str] = &[
        "--user-column",
        "user",
        "--privacy-unit",
        "user",
        "--max-records-per-user",
        "2",
    ];
    let small: &'static [&'static str] = &["--epochs", "3", "--batch-size", "2", "--hidden", "64"];
    let with = |parts: &[&'static [&'static str]]| -> &'static [&'static str] {
        Box::leak(parts.concat().into_boxed_slice())
    };
    vec![
        Row {
            name: "user level",
            command: "train",
            flags: with(&[small, user_level]),
            model_derived: &[],
            schema: true,
            ..ROW
        },
        Row {
            name: "user level, no schema",
            command: "train",
            flags: with(&[small, user_level, &["--num-classes", "2"]]),
            model_derived: &[],
            schema: false,
            ..ROW
        },
        Row {
            name: "audit at user level, canary users",
            command: "audit",
            flags: with(&[
                small,
                user_level,
                &[
                    "--attacks",
                    "loss",
                    "--canaries",
                    "2",
                    "--canary-records-per-user",
                    "2",
                ],
            ]),
            model_derived: &[
                "/attacks",
                "/train_accuracy",
                "/epsilon_lower_bound",
                "/inversion",
                "/canary_audit",
                // The attacks' queries count the audited records: at user
                // level a statistic of the private data, like the attack
                // figures (docs/user-level.md says so).
                "/queries",
            ],
            schema: true,
            ..ROW
        },
        Row {
            name: "record level on data with users",
            command: "train",
            flags: with(&[small, &["--user-column", "user"]]),
            model_derived: &[],
            schema: true,
            ..ROW
        },
    ]
}

/// Whether `row` runs at the user level (then a user is the unit).
fn is_user_level(row: &Row) -> bool {
    row.flags
        .windows(2)
        .any(|w| w == ["--privacy-unit", "user"])
}

/// Runs every user-level row on the base file and on every variant of the
/// chosen user, and compares: at the user level replacing one user's
/// records (any number) changes nothing released but the model; at the
/// record level replacing one record (same N) does not.
#[test]
fn should_release_the_same_everything_but_the_model_for_neighbouring_users() {
    let dir = temp_dir("dpsgd-neighbours", "users");
    let schema = write_schema(&dir);
    let (chosen, training_users) = chosen_user(&dir);
    let mut failures = Vec::new();
    for row in user_rows() {
        let base_data = write_user_data(&dir, Some(chosen), &USER_VARIANTS[0]);
        let base = run(&row, &dir, &csv(&base_data), &schema);
        if base.exit != Some(0) {
            failures.push(format!(
                "{}: the base run failed: {}",
                row.name, base.stderr
            ));
            continue;
        }
        if row.command == "train" && is_user_level(&row) {
            let report = base.report.as_ref();
            let field = |p: &str| report.and_then(|r| r.pointer(p)).cloned();
            let (unit, users, size) = (
                field("/privacy_unit"),
                field("/users"),
                field("/dataset_size"),
            );
            if unit != Some(Value::from("user"))
                || users != Some(Value::from(training_users))
                || size != Some(Value::from(training_users))
            {
                failures.push(format!(
                    "{}: the report does not count the {training_users} training users: \
                     privacy_unit {unit:?}, users {users:?}, dataset_size {size:?}",
                    row.name
                ));
            }
        }
        for variant in &USER_VARIANTS[1..] {
            let applies = if is_user_level(&row) {
                variant.user_level
            } else {
                variant.record_level
            };
            if !applies {
                continue;
            }
            let data = write_user_data(&dir, Some(chosen), variant);
            let got = run(&row, &dir, &csv(&data), &schema);
            failures.extend(variant_failure(&row, variant.name, false, &base, &got));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "one user (or one record at the record level) changed what a run releases:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// The image harness: MNIST's file format, the image recipes' options.
// ---------------------------------------------------------------------------

/// Training images in the image harness (all of them train: the test
/// images are a file of their own).
const IMAGES: usize = 24;

/// The side of the harness's square images: the smallest the image
/// recipes take (below it, the general recipe's MLP trains).
const SIDE: usize = 16;

/// One replacement of one training image.
struct ImageVariant {
    name: &'static str,
    /// The image's pixels (`None`: the base image) and its label.
    pixels: Option<u8>,
    label: u8,
    /// Whether the data is refused (then nothing may be released).
    refused: bool,
}

/// The base image and its replacements: extremes that a scaling or a
/// normalisation read off the data (a mean, a maximum) would show.
const IMAGE_VARIANTS: &[ImageVariant] = &[
    ImageVariant {
        name: "base",
        pixels: None,
        label: 0,
        refused: false,
    },
    ImageVariant {
        name: "another label",
        pixels: None,
        label: 2,
        refused: false,
    },
    ImageVariant {
        name: "a white image of a class nobody else has",
        pixels: Some(255),
        label: 9,
        refused: false,
    },
    ImageVariant {
        name: "a black image",
        pixels: Some(0),
        label: 1,
        refused: false,
    },
    ImageVariant {
        name: "a label past MNIST's ten",
        pixels: None,
        label: 10,
        refused: true,
    },
];

/// The position of the replaced training image.
const REPLACED_IMAGE: usize = 5;

/// Image `k` of class `k mod 3`: a diagonal, an anti-diagonal or a middle
/// row, bright on a dim textured background.
fn image(k: usize) -> Vec<u8> {
    let class = k % 3;
    let mut pixels = Vec::with_capacity(SIDE * SIDE);
    for r in 0..SIDE {
        for c in 0..SIDE {
            let line = match class {
                0 => r == c,
                1 => r == SIDE - 1 - c,
                _ => r == SIDE / 2,
            };
            let dim = 30.0 + 20.0 * ((k as f64) * 0.7 + (r + c) as f64).sin();
            pixels.push(if line { 200 } else { dim as u8 });
        }
    }
    pixels
}

/// Writes MNIST's four files (`idx3` images, `idx1` labels) into
/// `dir/images`: [`IMAGES`] training images, the one at
/// [`REPLACED_IMAGE`] replaced by `variant`, and 9 test images.
fn write_images(dir: &Path, variant: &ImageVariant) -> PathBuf {
    let folder = dir.join("images");
    std::fs::create_dir_all(&folder).expect("create the image folder");
    let write = |stem: &str, images: Vec<(Vec<u8>, u8)>| {
        let n = u32::try_from(images.len()).expect("a few images");
        let side = u32::try_from(SIDE).expect("a small side");
        let mut pixels = [0x803_u32, n, side, side]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect::<Vec<u8>>();
        let mut labels = [0x801_u32, n]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect::<Vec<u8>>();
        for (image, label) in images {
            pixels.extend(image);
            labels.push(label);
        }
        std::fs::write(folder.join(format!("{stem}-images-idx3-ubyte")), pixels)
            .expect("write the images");
        std::fs::write(folder.join(format!("{stem}-labels-idx1-ubyte")), labels)
            .expect("write the labels");
    };
    let labelled = |k: usize| (image(k), u8::try_from(k % 3).expect("a class"));
    let train = (0..IMAGES)
        .map(|k| {
            if k != REPLACED_IMAGE {
                return labelled(k);
            }
            let pixels = variant
                .pixels
                .map_or_else(|| image(k), |v| vec![v; SIDE * SIDE]);
            (pixels, variant.label)
        })
        .collect();
    write("train", train);
    write("t10k", (100..109).map(labelled).collect());
    folder
}

/// The image rows: the recipe chosen for images, and each option that only
/// images have.
fn image_rows() -> Vec<Row> {
    let short: &[&str] = &["--epochs", "2", "--batch-size", "2"];
    let with = |extra: &'static [&'static str]| -> &'static [&'static str] {
        Box::leak([short, extra].concat().into_boxed_slice())
    };
    vec![
        Row {
            name: "images: the recipe's defaults",
            flags: with(&[]),
            schema: false,
            ..ROW
        },
        Row {
            name: "images: CNN, weight standardisation, materialised convolutions",
            flags: with(&[
                "--recipe",
                "image-cnn",
                "--weight-standardization",
                "--conv-strategy",
                "materialize",
            ]),
            schema: false,
            ..ROW
        },
        Row {
            name: "images: CNN, augmentation multiplicity, unfolded convolutions",
            flags: with(&[
                "--recipe",
                "image-cnn",
                "--augment-multiplicity",
                "2",
                "--conv-strategy",
                "unfold",
            ]),
            schema: false,
            ..ROW
        },
        Row {
            name: "images: ScatterNet features",
            flags: with(&["--features", "scatter", "--html", "@page.html"]),
            schema: false,
            ..ROW
        },
        Row {
            name: "images: audit with the inversion attack",
            command: "audit",
            flags: with(&["--attacks", "loss,inversion"]),
            model_derived: AUDIT_MEASUREMENTS,
            schema: false,
            ..ROW
        },
    ]
}

/// Runs every image row on the base images and on every variant.
#[test]
fn should_release_the_same_everything_but_the_model_for_neighbouring_images() {
    let dir = temp_dir("dpsgd-neighbours", "images");
    let schema = write_schema(&dir);
    let mut failures = Vec::new();
    let only = std::env::var("DPSGD_NEIGHBOURS_ROWS").ok();
    for row in image_rows()
        .into_iter()
        .filter(|r| only.as_deref().is_none_or(|o| r.name.contains(o)))
    {
        let dataset = |variant| format!("idx:{}", write_images(&dir, variant).display());
        let base = run(&row, &dir, &dataset(&IMAGE_VARIANTS[0]), &schema);
        if base.exit != Some(0) {
            failures.push(format!(
                "{}: the base run failed: {}",
                row.name, base.stderr
            ));
            continue;
        }
        for variant in &IMAGE_VARIANTS[1..] {
            let got = run(&row, &dir, &dataset(variant), &schema);
            failures.extend(variant_failure(
                &row,
                variant.name,
                variant.refused,
                &base,
                &got,
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "one image changed what a run releases:\n{}",
        failures.join("\n")
    );
}
