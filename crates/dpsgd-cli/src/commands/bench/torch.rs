//! `dpsgd bench step --compare-torch`: PyTorch's step and Opacus's DP
//! modes on the same model and shapes of batch, timed by the reference
//! script `benches/reference/torch_step.py` (embedded in this binary) in a
//! child Python process, once per round of dpsgd's own measurement, so the
//! two sides are interleaved on the same machine.

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

/// The reference script, as `benches/reference/torch_step.py` holds it.
const SCRIPT: &str = include_str!("../../../reference/torch_step.py");

/// The Opacus modes the script knows.
pub(super) const MODES: [&str; 2] = ["hooks", "ghost"];

/// How to run the PyTorch side.
#[derive(Debug, Clone)]
pub(super) struct TorchSide {
    /// The Python interpreter.
    pub python: OsString,
    /// A script to run instead of the embedded one.
    pub script: Option<PathBuf>,
    /// `mlp`, `cnn`, `lstm` or `transformer`.
    pub model: String,
    /// Tokens per sequence of the text models.
    pub seq_len: usize,
    /// Timed steps per mode (the script reports their median).
    pub repeats: usize,
    /// Opacus modes besides torch's own step.
    pub modes: Vec<String>,
    /// `cpu` or `cuda`.
    pub device: String,
    /// The threads torch may use (`OMP_NUM_THREADS`, unless set).
    pub threads: usize,
}

/// One run of the script at one batch size.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TorchTimes {
    /// torch's own (non-private) step, ms.
    pub torch_ms: f64,
    /// Each Opacus mode's step, ms, in the order asked for.
    pub opacus_ms: Vec<(String, f64)>,
    /// The threads torch ran on (`torch.get_num_threads()`).
    pub threads: Option<u64>,
    /// The device the script named.
    pub device: Option<String>,
}

/// The rounds' times at one batch size, against dpsgd's steps.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Comparison {
    /// The median of the rounds' torch times, and each round's.
    pub torch_ms: (f64, Vec<f64>),
    /// Each Opacus mode: its median over the rounds, and each round's.
    pub opacus_ms: Vec<(String, f64, Vec<f64>)>,
    /// dpsgd's non-private step over torch's.
    pub non_private_vs_torch: f64,
    /// dpsgd's DP step over torch's non-private one.
    pub dp_vs_torch: f64,
    /// The fastest Opacus mode, and dpsgd's DP step over it.
    pub best: Option<(String, f64)>,
    /// torch's threads, as its first round reported them.
    pub threads: Option<u64>,
    /// torch's device, as its first round reported it.
    pub device: Option<String>,
}

impl TorchSide {
    /// Checks, before anything is timed, the modes, the script, and that
    /// the interpreter imports torch (and opacus when a mode asks for it).
    ///
    /// # Errors
    ///
    /// An unknown mode or a script that is not a file (usage errors); the
    /// interpreter does not start, or an import fails (its last line of
    /// standard error quoted).
    pub fn check(&self) -> Result<()> {
        if let Some(bad) = self.modes.iter().find(|m| !MODES.contains(&m.as_str())) {
            bail!(crate::error::UsageError {
                flag: "--torch-modes",
                message: format!("unknown Opacus mode `{bad}` (expected hooks or ghost, or none)"),
            });
        }
        if let Some(path) = &self.script
            && !path.is_file()
        {
            bail!(crate::error::UsageError {
                flag: "--torch-script",
                message: format!("`{}` is not a readable file", path.display()),
            });
        }
        let imports = if self.modes.is_empty() {
            "import torch"
        } else {
            "import torch, opacus"
        };
        let out = self
            .command()
            .args(["-c", imports])
            .output()
            .with_context(|| {
                format!(
                    "--compare-torch: could not start `{}` (give another interpreter with --python)",
                    self.python.to_string_lossy()
                )
            })?;
        if !out.status.success() {
            bail!(
                "--compare-torch: `{}` could not `{imports}` ({}); install torch{} or give another interpreter with --python",
                self.python.to_string_lossy(),
                last_line(&out.stderr),
                if self.modes.is_empty() {
                    ""
                } else {
                    " and opacus (or pass --torch-modes '')"
                }
            );
        }
        Ok(())
    }

    /// The interpreter, with torch held to this process's thread count
    /// unless `OMP_NUM_THREADS` is set already.
    fn command(&self) -> Command {
        let mut c = Command::new(&self.python);
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            c.env("OMP_NUM_THREADS", self.threads.max(1).to_string());
        }
        c
    }

    /// Times torch's step and each Opacus mode at `batch` examples.
    ///
    /// # Errors
    ///
    /// The script fails or prints no result for `batch`.
    pub fn measure(&self, batch: usize) -> Result<TorchTimes> {
        let mut c = self.command();
        match &self.script {
            Some(path) => c.arg(path),
            None => c.args(["-c", SCRIPT]),
        };
        let out = c
            .args(["--model", &self.model])
            .args(["--batch-sizes", &batch.to_string()])
            .args(["--seq-len", &self.seq_len.to_string()])
            .args(["--repeats", &self.repeats.to_string()])
            .args(["--modes", &self.modes.join(",")])
            .args(["--device", &self.device])
            .output()
            .context("--compare-torch: run the reference script")?;
        if !out.status.success() {
            bail!(
                "--compare-torch: the reference script failed at batch {batch} ({})",
                last_line(&out.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["batch_size"].as_u64() == Some(batch as u64))
            .with_context(|| {
                format!("--compare-torch: the reference script printed no result for batch {batch}")
            })?;
        parse(&line, &self.modes)
            .with_context(|| format!("--compare-torch: unexpected result {line}"))
    }

    /// The rounds' times at one batch size against dpsgd's steps; `None`
    /// without rounds.
    pub fn compare(
        &self,
        rounds: &[TorchTimes],
        non_private_ms: f64,
        dp_ms: f64,
    ) -> Option<Comparison> {
        let first = rounds.first()?;
        let torch: Vec<f64> = rounds.iter().map(|r| r.torch_ms).collect();
        let torch_ms = super::median(torch.clone());
        let opacus_ms: Vec<(String, f64, Vec<f64>)> = self
            .modes
            .iter()
            .map(|mode| {
                let times: Vec<f64> = rounds
                    .iter()
                    .filter_map(|r| r.opacus_ms.iter().find(|(m, _)| m == mode).map(|(_, t)| *t))
                    .collect();
                (mode.clone(), super::median(times.clone()), times)
            })
            .collect();
        let best = opacus_ms
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(mode, ms, _)| (mode.clone(), dp_ms / ms));
        Some(Comparison {
            torch_ms: (torch_ms, torch),
            opacus_ms,
            non_private_vs_torch: non_private_ms / torch_ms,
            dp_vs_torch: dp_ms / torch_ms,
            best,
            threads: first.threads,
            device: first.device.clone(),
        })
    }
}

impl Comparison {
    /// The fields `--compare-torch` adds to a JSON line.
    pub fn json_fields(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("torch_ms".into(), json!(self.torch_ms.0));
        out.insert("torch_round_ms".into(), json!(self.torch_ms.1));
        for (mode, ms, rounds) in &self.opacus_ms {
            out.insert(format!("opacus_{mode}_ms"), json!(ms));
            out.insert(format!("opacus_{mode}_round_ms"), json!(rounds));
        }
        out.insert(
            "non_private_vs_torch".into(),
            json!(self.non_private_vs_torch),
        );
        out.insert("dp_vs_torch".into(), json!(self.dp_vs_torch));
        let best = self.best.as_ref();
        out.insert("opacus_best_mode".into(), json!(best.map(|b| &b.0)));
        out.insert("dp_vs_opacus_best".into(), json!(best.map(|b| b.1)));
        out.insert("torch_threads".into(), json!(self.threads));
        out.insert("torch_device".into(), json!(self.device));
        out
    }

    /// The line `--compare-torch` adds to the text output.
    pub fn text(&self) -> String {
        let opacus = self.best.as_ref().map_or_else(String::new, |(mode, r)| {
            format!(", ×{r:.2} of Opacus's fastest mode ({mode})")
        });
        format!(
            "  PyTorch: {:.2} ms non-private; dpsgd's DP step ×{:.2} of it{opacus}",
            self.torch_ms.0, self.dp_vs_torch
        )
    }
}

/// A script line's times: `torch_ms` and `opacus_<mode>_ms` for each mode.
fn parse(line: &Value, modes: &[String]) -> Option<TorchTimes> {
    let ms = |key: &str| line[key].as_f64().filter(|t| t.is_finite() && *t > 0.0);
    let opacus_ms = modes
        .iter()
        .map(|m| ms(&format!("opacus_{m}_ms")).map(|t| (m.clone(), t)))
        .collect::<Option<Vec<_>>>()?;
    Some(TorchTimes {
        torch_ms: ms("torch_ms")?,
        opacus_ms,
        threads: line["threads"].as_u64(),
        device: line["device"].as_str().map(str::to_owned),
    })
}

/// The last non-empty line of a child's standard error, for an error
/// message.
fn last_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_read_the_times_of_each_asked_mode() {
        let modes = vec!["hooks".to_owned(), "ghost".to_owned()];
        let line = json!({"batch_size": 64, "threads": 2, "device": "cpu",
            "torch_ms": 4.5, "opacus_hooks_ms": 30.0, "opacus_ghost_ms": 21.5});
        assert_eq!(
            parse(&line, &modes),
            Some(TorchTimes {
                torch_ms: 4.5,
                opacus_ms: vec![("hooks".into(), 30.0), ("ghost".into(), 21.5)],
                threads: Some(2),
                device: Some("cpu".into()),
            })
        );
        // A missing mode, or a time that is not a positive number, is not
        // a result.
        let partial = json!({"batch_size": 64, "torch_ms": 4.5, "opacus_ghost_ms": 21.5});
        assert_eq!(parse(&partial, &modes), None);
        let negative = json!({"batch_size": 64, "torch_ms": -1.0});
        assert_eq!(parse(&negative, &[]), None);
    }

    #[test]
    fn should_compare_dp_with_torch_and_the_fastest_opacus_mode() {
        let side = TorchSide {
            python: "python3".into(),
            script: None,
            model: "mlp".into(),
            seq_len: 64,
            repeats: 1,
            modes: vec!["hooks".into(), "ghost".into()],
            device: "cpu".into(),
            threads: 2,
        };
        let round = |torch_ms, hooks, ghost| TorchTimes {
            torch_ms,
            opacus_ms: vec![("hooks".into(), hooks), ("ghost".into(), ghost)],
            threads: Some(2),
            device: Some("cpu".into()),
        };
        let rounds = [
            round(4.0, 30.0, 20.0),
            round(5.0, 28.0, 25.0),
            round(6.0, 40.0, 22.0),
        ];
        assert_eq!(side.compare(&[], 10.0, 11.0), None);
        let c = side.compare(&rounds, 10.0, 11.0).unwrap();
        assert_eq!(
            c.text(),
            "  PyTorch: 5.00 ms non-private; dpsgd's DP step ×2.20 of it, ×0.50 of Opacus's fastest mode (ghost)"
        );
        let s = c.json_fields();
        assert_eq!(s["torch_ms"], json!(5.0));
        assert_eq!(s["torch_round_ms"], json!([4.0, 5.0, 6.0]));
        assert_eq!(s["opacus_hooks_ms"], json!(30.0));
        assert_eq!(s["opacus_ghost_ms"], json!(22.0));
        assert_eq!(s["opacus_best_mode"], json!("ghost"));
        assert_eq!(s["dp_vs_opacus_best"], json!(0.5));
        assert_eq!(s["dp_vs_torch"], json!(2.2));
        assert_eq!(s["non_private_vs_torch"], json!(2.0));
        assert_eq!(s["torch_threads"], json!(2));
    }

    #[test]
    fn should_embed_the_reference_script() {
        assert!(SCRIPT.contains("def main()") && SCRIPT.contains("opacus_{mode}_ms"));
    }
}
