//! Number formatting shared by the commands' text output and the HTML
//! report.

/// `x` as a percentage with two decimals (the CLI's tables and the HTML report).
pub fn percent(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// `x` as written by `{}`, or in scientific notation where that would be
/// long: δ = 1e-300 is not printed as 300 digits.
pub fn number(x: f64) -> String {
    if x != 0.0 && x.is_finite() && !(1e-4..1e6).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// A p-value to two significant digits, `< 1e-6` below that.
pub fn p_value(p: f64) -> String {
    if p < 1e-6 {
        "< 1e-6".into()
    } else if p < 0.01 {
        format!("{p:.1e}")
    } else {
        format!("{p:.2}")
    }
}

/// An optional number as `{}` writes it, empty when absent (a CSV cell).
pub fn opt(v: Option<f64>) -> String {
    v.map_or_else(String::new, |x| format!("{x}"))
}
