//! The attacks an audit can run, by name: one list for the library, the
//! command line and the reports.

use crate::scores::ScoreKind;
use serde::Serialize;

/// One attack of the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// Loss threshold (Yeom et al. 2018).
    Loss,
    /// Confidence of the true class.
    Confidence,
    /// Prediction entropy.
    Entropy,
    /// Modified entropy (Song & Mittal 2021).
    ModifiedEntropy,
    /// Shadow-model attack classifiers per class (Shokri et al. 2017).
    Shadow,
    /// LiRA online and offline (Carlini et al. 2022).
    Lira,
    /// RMIA online and offline (Zarifzadeh et al. 2024), on the same
    /// reference (shadow) models as LiRA.
    Rmia,
    /// LiRA's online variant alone (the same shadows; one row).
    LiraOnline,
    /// LiRA's offline variant alone.
    LiraOffline,
    /// RMIA's online variant alone.
    RmiaOnline,
    /// RMIA's offline variant alone.
    RmiaOffline,
    /// Label-only: robustness of the label to input noise
    /// (Choquette-Choo et al. 2021).
    LabelOnly,
    /// Model inversion (Fredrikson et al. 2015).
    Inversion,
}

impl Attack {
    /// Every attack, in the order the report lists them.
    pub const ALL: [Self; 13] = [
        Self::Loss,
        Self::Confidence,
        Self::Entropy,
        Self::ModifiedEntropy,
        Self::Shadow,
        Self::Lira,
        Self::Rmia,
        Self::LiraOnline,
        Self::LiraOffline,
        Self::RmiaOnline,
        Self::RmiaOffline,
        Self::LabelOnly,
        Self::Inversion,
    ];

    /// LiRA's online variant's name in reports.
    pub const LIRA_ONLINE: &'static str = "lira-online";
    /// LiRA's offline variant's name in reports.
    pub const LIRA_OFFLINE: &'static str = "lira-offline";
    /// RMIA's online variant's name in reports.
    pub const RMIA_ONLINE: &'static str = "rmia-online";
    /// RMIA's offline variant's name in reports.
    pub const RMIA_OFFLINE: &'static str = "rmia-offline";

    /// The attack's name on the command line and in reports (LiRA reports
    /// its two variants as [`Attack::LIRA_ONLINE`] and
    /// [`Attack::LIRA_OFFLINE`]).
    pub fn name(self) -> &'static str {
        match self {
            Self::Loss => "loss",
            Self::Confidence => "confidence",
            Self::Entropy => "entropy",
            Self::ModifiedEntropy => "modified-entropy",
            Self::Shadow => "shadow",
            Self::Lira => "lira",
            Self::Rmia => "rmia",
            Self::LiraOnline => Self::LIRA_ONLINE,
            Self::LiraOffline => Self::LIRA_OFFLINE,
            Self::RmiaOnline => Self::RMIA_ONLINE,
            Self::RmiaOffline => Self::RMIA_OFFLINE,
            Self::LabelOnly => "label-only",
            Self::Inversion => "inversion",
        }
    }

    /// The attack family a variant belongs to (LiRA's and RMIA's variants:
    /// [`Attack::Lira`], [`Attack::Rmia`]; every other attack itself): what
    /// is trained and queried for it.
    pub fn family(self) -> Self {
        match self {
            Self::LiraOnline | Self::LiraOffline => Self::Lira,
            Self::RmiaOnline | Self::RmiaOffline => Self::Rmia,
            other => other,
        }
    }

    /// Whether asking for the attacks `asked` reports the row `row`
    /// (`lira-online`, …): a family reports all its variants, a variant
    /// itself.
    pub fn reports(asked: &[Self], row: &str) -> bool {
        asked.iter().any(|a| {
            a.name() == row
                || match a {
                    Self::Lira => row == Self::LIRA_ONLINE || row == Self::LIRA_OFFLINE,
                    Self::Rmia => row == Self::RMIA_ONLINE || row == Self::RMIA_OFFLINE,
                    _ => false,
                }
        })
    }

    /// Whether it needs shadow (reference) models.
    pub fn needs_shadows(self) -> bool {
        matches!(self.family(), Self::Shadow | Self::Lira | Self::Rmia)
    }

    /// The score a threshold attack thresholds (`None` for the others).
    pub fn threshold_score(self) -> Option<ScoreKind> {
        match self {
            Self::Loss => Some(ScoreKind::Loss),
            Self::Confidence => Some(ScoreKind::Confidence),
            Self::Entropy => Some(ScoreKind::Entropy),
            Self::ModifiedEntropy => Some(ScoreKind::ModifiedEntropy),
            _ => None,
        }
    }
}

impl std::str::FromStr for Attack {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|a| a.name()).collect();
                format!("`{s}` is not an attack (expected {})", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_parse_every_name_back_and_list_them_when_refusing() {
        for a in Attack::ALL {
            assert_eq!(a.name().parse::<Attack>(), Ok(a));
        }
        let refusal = "nope".parse::<Attack>().unwrap_err();
        for a in Attack::ALL {
            assert!(refusal.contains(a.name()), "{refusal}");
        }
        assert!(Attack::LIRA_ONLINE.starts_with(Attack::Lira.name()));
        assert!(Attack::LIRA_OFFLINE.starts_with(Attack::Lira.name()));
        assert!(Attack::RMIA_ONLINE.starts_with(Attack::Rmia.name()));
        assert!(Attack::RMIA_OFFLINE.starts_with(Attack::Rmia.name()));
    }

    /// A variant is its family's one row: `rmia-offline` trains RMIA's
    /// shadows and reports only its offline row.
    #[test]
    fn should_report_a_variants_row_only() {
        let asked = ["rmia-offline".parse::<Attack>().unwrap()];
        assert_eq!(asked[0].family(), Attack::Rmia);
        assert!(asked[0].needs_shadows());
        assert!(Attack::reports(&asked, Attack::RMIA_OFFLINE));
        assert!(!Attack::reports(&asked, Attack::RMIA_ONLINE));
        assert!(!Attack::reports(&asked, Attack::LIRA_OFFLINE));
        let families = [Attack::Lira, Attack::Rmia];
        for row in [
            Attack::LIRA_ONLINE,
            Attack::LIRA_OFFLINE,
            Attack::RMIA_ONLINE,
            Attack::RMIA_OFFLINE,
        ] {
            assert!(Attack::reports(&families, row), "{row}");
        }
        assert!(!Attack::Loss.needs_shadows());
        assert!(Attack::Shadow.needs_shadows());
    }

    #[test]
    fn should_threshold_only_the_threshold_attacks() {
        let thresholded: Vec<Attack> = Attack::ALL
            .into_iter()
            .filter(|a| a.threshold_score().is_some())
            .collect();
        assert_eq!(
            thresholded,
            [
                Attack::Loss,
                Attack::Confidence,
                Attack::Entropy,
                Attack::ModifiedEntropy
            ]
        );
    }
}
