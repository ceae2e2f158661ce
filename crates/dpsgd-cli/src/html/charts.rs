//! Inline SVG charts: line charts (with a legend inside the plot) and
//! scatter charts (with a legend column beside it).

use super::text::esc;
use std::fmt::Write as _;

/// One curve of a chart: its label, colour and points.
pub(super) type Series = (String, &'static str, Vec<(f64, f64)>);

/// A line chart: `series` of (label, colour, points), axes labelled.
pub(super) fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_axes: bool,
) -> String {
    chart(title, x_label, y_label, series, log_axes, true)
}

/// A chart of points (no lines between them), but for a series of more
/// than one point (a Pareto front), which is joined.
pub(super) fn scatter_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> String {
    chart(title, x_label, y_label, series, false, false)
}

fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_axes: bool,
    lines: bool,
) -> String {
    // A scatter's points are named in a legend column right of the plot
    // (labels beside clustered points would collide).
    let legend_w = if lines { 0.0 } else { 170.0 };
    let (w, h, m) = (460.0 + legend_w, 300.0, 46.0);
    let tx = |x: f64| if log_axes { x.max(1e-4).log10() } else { x };
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.2.iter().map(|&(x, y)| (tx(x), tx(y))))
        .collect();
    if all.is_empty() {
        return String::new();
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if log_axes {
        (x0, y0, x1, y1) = (-4.0, -4.0, 0.0, 0.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let px = |x: f64| m + (x - x0) / (x1 - x0) * (w - legend_w - 1.5 * m);
    let py = |y: f64| h - m - (y - y0) / (y1 - y0) * (h - 1.8 * m);
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" class="chart{wide}" role="img" aria-label="{t}"><text x="{cx}" y="16" class="title">{t}</text><line x1="{m}" y1="{b}" x2="{r}" y2="{b}" class="axis"/><line x1="{m}" y1="{b}" x2="{m}" y2="{top}" class="axis"/><text x="{cx}" y="{xl}" class="label">{xlab}</text><text x="12" y="{cy}" class="label" transform="rotate(-90 12 {cy})">{ylab}</text>"##,
        t = esc(title),
        wide = if lines { "" } else { " wide" },
        cx = (w - legend_w) / 2.0,
        b = h - m,
        r = w - legend_w - 0.5 * m,
        top = 0.8 * m,
        xl = h - 10.0,
        cy = h / 2.0,
        xlab = esc(x_label),
        ylab = esc(y_label),
    );
    let tick = |v: f64| tick_label(if log_axes { 10f64.powf(v) } else { v });
    for (v, is_x) in [(x0, true), (x1, true), (y0, false), (y1, false)] {
        if is_x {
            // The first x tick starts at the axis, the last ends there: a
            // long label never runs past the chart.
            let anchor = if v == x1 { "end" } else { "start" };
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" class="tick" text-anchor="{anchor}">{}</text>"#,
                px(v),
                h - m + 14.0,
                tick(v)
            );
        } else {
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" class="tick" text-anchor="end">{}</text>"#,
                m - 4.0,
                py(v) + 4.0,
                tick(v)
            );
        }
    }
    for (i, (label, colour, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(tx(x)), py(tx(y))))
            .collect();
        if lines || points.len() > 1 {
            let _ = write!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                path.join(" ")
            );
        }
        if lines {
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" class="legend" fill="{colour}">{}</text>"#,
                m + 8.0,
                0.8 * m + 14.0 * (i as f64 + 1.0),
                esc(label)
            );
        } else {
            let (lx, ly) = (w - legend_w + 10.0, 0.8 * m + 16.0 * i as f64);
            let _ = write!(
                svg,
                r#"<circle cx="{lx}" cy="{ly}" r="3" fill="{colour}"/><text x="{}" y="{}" class="legend" fill="{colour}">{}</text>"#,
                lx + 8.0,
                ly + 4.0,
                esc(label)
            );
        }
        if points.len() <= 12 || !lines {
            for &(x, y) in points {
                let (cx, cy) = (px(tx(x)), py(tx(y)));
                let _ = write!(
                    svg,
                    r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="3" fill="{colour}"/>"#,
                );
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

pub(super) const COLOURS: [&str; 10] = [
    "#1f5fbf", "#c0392b", "#2e8b57", "#8e44ad", "#d35400", "#555555", "#17becf", "#b8860b",
    "#e377c2", "#000000",
];

/// An axis end as a person writes it: `300`, `0.05`, `1.5`, `0.0001`.
pub(super) fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || !a.is_finite() {
        return format!("{v}");
    }
    if (v - v.round()).abs() < 1e-9 * a.max(1.0) {
        return format!("{:.0}", v.round());
    }
    // Two significant digits, without trailing zeros.
    let decimals = (1 - a.log10().floor() as i32).max(0) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_ends_read_like_numbers() {
        for (v, want) in [
            (300.0, "300"),
            (1.0, "1"),
            (0.05, "0.05"),
            (0.0001, "0.0001"),
            (10f64.powf(-4.0), "0.0001"),
            (0.5, "0.5"),
            (1.26, "1.3"),
            (12.6, "13"),
            (0.0, "0"),
            (0.123, "0.12"),
        ] {
            assert_eq!(tick_label(v), want, "{v}");
        }
    }
}
