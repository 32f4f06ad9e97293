//! Bar charts as inline SVG, drawn on the server: no script, no chart library.

use std::fmt::Write as _;

use crate::html::esc;

/// Width and height of a chart's drawing area, in SVG units.
const WIDTH: u64 = 640;
const BAR_AREA: u64 = 150;

/// Vertical bars, one per `(label, value)`, labelled underneath, values on top.
pub fn bars(title: &str, items: &[(String, u64)]) -> String {
    let max = items.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let n = u64::try_from(items.len()).unwrap_or(1).max(1);
    let slot = (WIDTH / n).max(1);
    let bar = (slot * 7 / 10).max(1);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"{}\" \
         viewBox=\"0 0 {WIDTH} {}\" width=\"100%\" style=\"max-width:{WIDTH}px;background:#fff\">",
        esc(title),
        BAR_AREA + 40
    );
    for (i, (text, value)) in (0u64..).zip(items) {
        let h = value * BAR_AREA / max;
        let x = i * slot + (slot - bar) / 2;
        let y = BAR_AREA + 10 - h;
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{bar}\" height=\"{h}\" fill=\"#c0392b\"><title>{}: {value}</title></rect>",
            esc(text)
        );
        if *value > 0 {
            let _ = write!(
                svg,
                "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{value}</text>",
                x + bar / 2,
                y.saturating_sub(2)
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            x + bar / 2,
            BAR_AREA + 26,
            esc(text)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_and_escape_labels() {
        let svg = bars("t", &[("<51>".to_owned(), 4), ("05".to_owned(), 2)]);
        assert!(svg.contains("height=\"150\""), "{svg}");
        assert!(svg.contains("height=\"75\""), "{svg}");
        assert!(svg.contains("&lt;51&gt;"));
        assert!(!svg.contains("<51>"));
    }
}
