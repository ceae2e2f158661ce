//! The reports a page is built from ([`Inputs`]), each filed by its kind
//! and its privacy fields checked, and a page's [`Finding`]s.

use super::privacy::{self, Privacy};
use serde_json::Value;

/// One report and the file it came from.
#[derive(Debug, Clone)]
pub struct Report {
    /// The document.
    pub value: Value,
    /// Where it came from (a path, or the command that wrote it).
    pub source: String,
    /// The inversion grid found beside an audit report (PNG bytes).
    pub inversion_png: Option<Vec<u8>>,
}

/// The reports a page is built from: every one given is shown.
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    /// `train` reports.
    pub train: Vec<Report>,
    /// `audit` reports.
    pub audit: Vec<Report>,
    /// `sweep.json`s.
    pub sweep: Vec<Report>,
    /// `compare.json`s.
    pub compare: Vec<Report>,
    /// Where each came from, for the page's sources section.
    pub sources: Vec<String>,
}

/// A trained model the page states the guarantee of: a train report, or
/// an audit's target.
pub(crate) struct Training<'a> {
    /// The report.
    pub value: &'a Value,
    /// Its privacy, read strictly.
    pub privacy: Privacy,
    /// Which report it is, for a page with several.
    pub label: String,
    /// How its data were prepared.
    pub preprocessing: Option<&'a Value>,
}

impl Inputs {
    /// Files an input by its content: an audit report (`attacks` and
    /// `target`), a sweep (`runs`), a comparison (a list of rows with
    /// `defence`), or a training report (`not_covered_by_epsilon`); then
    /// checks its privacy fields (see [`privacy`]). Returns the kind.
    ///
    /// # Errors
    ///
    /// A document of none of these kinds, or one whose ε, δ or budgets
    /// cannot be read, naming the source and the field.
    pub fn add(&mut self, v: Value, source: &str) -> Result<&'static str, String> {
        if v.get("kind").and_then(Value::as_str) == Some("endpoint-audit") {
            // Its ε is what the endpoint's card claims, with none of the
            // training report the page reads its guarantee from: read as
            // an audit, the page would state a mechanism nobody checked.
            return Err(format!(
                "{source}: an audit of a deployed endpoint (`audit --target`): its ε is the endpoint's own claim, not a training report, and the HTML report does not read it; see its table and audit.json"
            ));
        }
        let kind = if v.get("attacks").is_some() && v.get("target").is_some() {
            "audit"
        } else if v.get("runs").is_some_and(Value::is_array) {
            "sweep"
        } else if v
            .as_array()
            .is_some_and(|rows| rows.iter().all(|r| r.get("defence").is_some()))
        {
            "compare"
        } else if v.get("not_covered_by_epsilon").is_some() {
            "train"
        } else {
            return Err(format!(
                "{source}: not a report of dpsgd train, audit, sweep or compare"
            ));
        };
        privacy::check(kind, &v)
            .map_err(|why| format!("{source}: {why}: no guarantee can be read from this report"))?;
        let report = Report {
            value: v,
            source: source.to_owned(),
            inversion_png: None,
        };
        match kind {
            "audit" => self.audit.push(report),
            "sweep" => self.sweep.push(report),
            "compare" => self.compare.push(report),
            _ => self.train.push(report),
        }
        self.sources.push(format!("{source} ({kind})"));
        Ok(kind)
    }

    /// Attaches an inversion grid to the last audit added (the one beside
    /// it); ignored without one.
    pub fn attach_inversion(&mut self, png: Vec<u8>) {
        if let Some(a) = self.audit.last_mut() {
            a.inversion_png = Some(png);
        }
    }

    /// The trained models: every train report, then every audit's target,
    /// each with how its data were prepared (an audit records it beside
    /// its target).
    pub(crate) fn trainings(&self) -> Vec<Training<'_>> {
        fn of(t: &Report) -> Training<'_> {
            Training {
                value: &t.value,
                privacy: privacy::training(&t.value, ""),
                label: t.source.clone(),
                preprocessing: t.value.get("preprocessing").filter(|p| !p.is_null()),
            }
        }
        fn audited(a: &Report) -> Training<'_> {
            let target = &a.value["target"];
            Training {
                value: target,
                privacy: privacy::training(target, "target."),
                label: format!("{} (the audited model)", a.source),
                preprocessing: target
                    .get("preprocessing")
                    .or_else(|| a.value.get("preprocessing"))
                    .filter(|p| !p.is_null()),
            }
        }
        self.train
            .iter()
            .map(of)
            .chain(self.audit.iter().map(audited))
            .collect()
    }

    /// Whether anything is there to report.
    pub fn is_empty(&self) -> bool {
        self.train.is_empty()
            && self.audit.is_empty()
            && self.sweep.is_empty()
            && self.compare.is_empty()
    }
}

/// A finding: what the numbers say, what to do, and the section that holds
/// the evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// `alert`, `warn` or `info`.
    pub level: &'static str,
    /// The finding and its recommendation, in plain words.
    pub text: String,
    /// The id of the section with the evidence.
    pub evidence: String,
}
