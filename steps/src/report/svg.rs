//! Inline SVG for the HTML report, drawn by our own small code (no plotting crate, nothing
//! fetched by the page): [`LineChart`] — linear axes with round-number ticks and titles, solid or
//! dashed series, horizontal reference lines labelled in the right margin, ringed points and a
//! legend laid out below the plot, so it never covers data — and [`confusion_grid`], a confusion
//! matrix as cells shaded by their count. Not in it: log scales, dates, interaction beyond
//! `<title>` tooltips. Every text drawn is escaped ([`esc`]).

use std::fmt::Write as _;

use super::EvalMetrics;

/// Escapes text for HTML and SVG, in elements and in quoted attributes.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// Run colours (Tableau 10: distinguishable, and readable on white).
pub const COLORS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

const FONT: &str = "font-family=\"system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif\"";

/// Approximate width in pixels of `text` at `size` px (SVG has no text metrics before layout;
/// generous, so labels get room rather than overlap).
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.6
}

/// One line of a chart.
pub struct Series {
    /// For tooltips.
    pub name: String,
    pub color: &'static str,
    /// An SVG `stroke-dasharray`; `None` is solid.
    pub dash: Option<&'static str>,
    pub points: Vec<(f64, f64)>,
    /// Draw a dot at each point (for few points; each dot has a tooltip).
    pub dots: bool,
}

/// A horizontal line across the plot at `y`, labelled in the right margin.
pub struct Reference {
    pub label: String,
    /// The tooltip.
    pub title: String,
    pub y: f64,
    pub color: &'static str,
}

/// A ring around a point (the chosen epoch), with a tooltip.
pub struct Ring {
    pub x: f64,
    pub y: f64,
    pub color: &'static str,
    pub title: String,
}

/// What a legend entry shows beside its text.
pub enum Swatch {
    Line { color: &'static str, dash: Option<&'static str> },
    Ring,
}

pub struct LegendEntry {
    pub label: String,
    pub swatch: Swatch,
}

/// A line chart; [`LineChart::svg`] draws it.
pub struct LineChart {
    /// The chart's accessible name (`aria-label`).
    pub label: String,
    pub x_title: String,
    pub y_title: String,
    /// The x values are counts (epochs): ticks on whole numbers only.
    pub integer_x: bool,
    pub series: Vec<Series>,
    pub references: Vec<Reference>,
    pub rings: Vec<Ring>,
    pub legend: Vec<LegendEntry>,
    /// Labelled vertical lines (where epochs start), the labels above the plot.
    pub x_marks: Vec<(f64, String)>,
}

const WIDTH: f64 = 1000.0;
const PLOT_HEIGHT: f64 = 300.0;
const LEFT: f64 = 78.0;
/// Above the plot: the labels of [`LineChart::x_marks`].
const TOP: f64 = 26.0;
/// Below the plot: tick labels and the x-axis title.
const BELOW: f64 = 52.0;
const LEGEND_ROW: f64 = 20.0;

/// Round-number ticks covering `[lo, hi]`: the first at or below `lo`, the last at or above
/// `hi`, about `target` steps of 1, 2 or 5 × 10ⁿ; and the decimals their labels need.
fn ticks(lo: f64, hi: f64, target: f64) -> (Vec<f64>, usize) {
    let span = (hi - lo).max(f64::EPSILON * hi.abs().max(1.0));
    let raw = span / target;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    ((first..=last).map(|i| i as f64 * step).collect(), decimals)
}

impl LineChart {
    /// The `<svg>` element, or `None` when no series has a point.
    pub fn svg(&self) -> Option<String> {
        let points: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .chain(self.rings.iter().map(|r| (r.x, r.y)))
            .collect();
        if points.is_empty() {
            return None;
        }
        let (mut x_lo, mut x_hi) = min_max(points.iter().map(|p| p.0));
        let (mut y_lo, mut y_hi) = min_max(points.iter().map(|p| p.1).chain(self.references.iter().map(|r| r.y)));
        // A little room around the data, so lines do not run along the axes.
        let y_pad = ((y_hi - y_lo) * 0.06).max(1e-3 * y_hi.abs().max(1.0));
        (y_lo, y_hi) = (y_lo - y_pad, y_hi + y_pad);
        let (y_ticks, y_decimals) = ticks(y_lo, y_hi, 5.0);
        (y_lo, y_hi) = (y_ticks[0], y_ticks[y_ticks.len() - 1]);
        let (x_ticks, x_decimals) = if self.integer_x {
            let (lo, hi) = (x_lo.floor(), x_hi.ceil());
            let (t, _) = ticks(lo, hi.max(lo + 1.0), 8.0);
            let step = (t.get(1).copied().unwrap_or(1.0) - t[0]).max(1.0).round();
            let ticks: Vec<f64> =
                (0..).map(|i| lo + i as f64 * step).take_while(|v| *v <= hi + 1e-9).filter(|v| *v >= lo).collect();
            // Half a step of room at the ends: the first and last epochs are points, not edges.
            (x_lo, x_hi) = (lo - 0.25 * step, hi + 0.25 * step);
            (ticks, 0)
        } else {
            let (t, d) = ticks(x_lo.min(0.0), x_hi, 6.0);
            (x_lo, x_hi) = (t[0], t[t.len() - 1]);
            (t, d)
        };

        let right = match self.references.iter().map(|r| text_width(&r.label, 12.0)).fold(0.0, f64::max) {
            w if w > 0.0 => (w + 16.0).min(280.0),
            _ => 24.0,
        };
        let plot_w = WIDTH - LEFT - right;
        let x = |v: f64| LEFT + (v - x_lo) / (x_hi - x_lo).max(f64::MIN_POSITIVE) * plot_w;
        let y = |v: f64| TOP + PLOT_HEIGHT - (v - y_lo) / (y_hi - y_lo).max(f64::MIN_POSITIVE) * PLOT_HEIGHT;
        let bottom = TOP + PLOT_HEIGHT;

        let legend = self.legend_layout();
        let height = bottom + BELOW + legend.rows as f64 * LEGEND_ROW + 8.0;
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{WIDTH}\" height=\"{height}\" \
             viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"{}\" {FONT} font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
            esc(&self.label)
        );
        // Grid and ticks.
        for t in &y_ticks {
            let _ = writeln!(
                out,
                "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#e4e4e4\"/>\
                 <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" dominant-baseline=\"middle\" fill=\"#444\">{t:.y_decimals$}</text>",
                LEFT + plot_w,
                y(*t),
                y(*t),
                LEFT - 6.0,
                y(*t)
            );
        }
        for t in &x_ticks {
            let _ = writeln!(
                out,
                "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{TOP}\" y2=\"{bottom}\" stroke=\"#f0f0f0\"/>\
                 <line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{bottom}\" y2=\"{:.1}\" stroke=\"#444\"/>\
                 <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444\">{t:.x_decimals$}</text>",
                x(*t),
                x(*t),
                x(*t),
                x(*t),
                bottom + 5.0,
                x(*t),
                bottom + 19.0
            );
        }
        let _ = writeln!(
            out,
            "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w:.1}\" height=\"{PLOT_HEIGHT}\" fill=\"none\" stroke=\"#444\"/>\n\
             <text class=\"axis-title\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"13\" fill=\"#222\">{}</text>\n\
             <text class=\"axis-title\" transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\" fill=\"#222\">{}</text>",
            LEFT + plot_w / 2.0,
            bottom + 40.0,
            esc(&self.x_title),
            TOP + PLOT_HEIGHT / 2.0,
            esc(&self.y_title)
        );
        for (at, label) in &self.x_marks {
            let _ = writeln!(
                out,
                "<g class=\"x-mark\"><line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{TOP}\" y2=\"{bottom}\" stroke=\"#999\" \
                 stroke-dasharray=\"3,3\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#666\">{}</text></g>",
                x(*at),
                x(*at),
                x(*at),
                TOP - 7.0,
                esc(label)
            );
        }
        // Reference lines under the data; their labels pushed apart so they never overlap.
        let mut labels: Vec<(f64, &Reference)> = self.references.iter().map(|r| (y(r.y), r)).collect();
        labels.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut placed: Vec<f64> = Vec::new();
        for (at, _) in &labels {
            let min = placed.last().map_or(f64::NEG_INFINITY, |p| p + 14.0);
            placed.push(at.max(min));
        }
        // Pushed past the bottom: shift the whole stack up.
        if let Some(over) = placed.last().map(|p| p - (bottom + 6.0)).filter(|o| *o > 0.0) {
            placed.iter_mut().for_each(|p| *p -= over);
        }
        for ((at, r), label_y) in labels.iter().zip(&placed) {
            let _ = writeln!(
                out,
                "<g class=\"reference\"><line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{at:.1}\" y2=\"{at:.1}\" stroke=\"{}\" \
                 stroke-width=\"1.5\" stroke-dasharray=\"2,3\"/>\
                 <text x=\"{:.1}\" y=\"{label_y:.1}\" dominant-baseline=\"middle\" fill=\"{}\">{}</text><title>{}</title></g>",
                LEFT + plot_w,
                r.color,
                LEFT + plot_w + 6.0,
                r.color,
                esc(&r.label),
                esc(&r.title)
            );
        }
        for s in &self.series {
            let path: Vec<String> = s.points.iter().map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b))).collect();
            let dash = s.dash.map(|d| format!(" stroke-dasharray=\"{d}\"")).unwrap_or_default();
            let _ = writeln!(
                out,
                "<polyline class=\"series\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-linejoin=\"round\"{dash} \
                 points=\"{}\"><title>{}</title></polyline>",
                s.color,
                path.join(" "),
                esc(&s.name)
            );
            if s.dots {
                for (a, b) in &s.points {
                    let _ = writeln!(
                        out,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"><title>{}: {a} → {b:.4}</title></circle>",
                        x(*a),
                        y(*b),
                        s.color,
                        esc(&s.name)
                    );
                }
            }
        }
        for r in &self.rings {
            let _ = writeln!(
                out,
                "<circle class=\"chosen\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"7\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\">\
                 <title>{}</title></circle>",
                x(r.x),
                y(r.y),
                r.color,
                esc(&r.title)
            );
        }
        legend.draw(&mut out, &self.legend, bottom + BELOW);
        out.push_str("</svg>\n");
        Some(out)
    }

    fn legend_layout(&self) -> LegendLayout {
        let mut places = Vec::new();
        let (mut col, mut row) = (LEFT, 0usize);
        for e in &self.legend {
            let w = 34.0 + text_width(&e.label, 12.0) + 22.0;
            if col + w > WIDTH - 8.0 && col > LEFT {
                (col, row) = (LEFT, row + 1);
            }
            places.push((col, row));
            col += w;
        }
        LegendLayout { rows: if places.is_empty() { 0 } else { row + 1 }, places }
    }
}

/// Where each legend entry goes: (x, row).
struct LegendLayout {
    rows: usize,
    places: Vec<(f64, usize)>,
}

impl LegendLayout {
    fn draw(&self, out: &mut String, entries: &[LegendEntry], top: f64) {
        for (e, (x, row)) in entries.iter().zip(&self.places) {
            let y = top + *row as f64 * LEGEND_ROW + LEGEND_ROW / 2.0;
            let swatch = match &e.swatch {
                Swatch::Line { color, dash } => format!(
                    "<line x1=\"{x:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" stroke-width=\"2.5\"{}/>",
                    x + 28.0,
                    dash.map(|d| format!(" stroke-dasharray=\"{d}\"")).unwrap_or_default()
                ),
                Swatch::Ring => format!(
                    "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"6\" fill=\"none\" stroke=\"#333\" stroke-width=\"2\"/>",
                    x + 14.0
                ),
            };
            let _ = writeln!(
                out,
                "<g class=\"legend-entry\">{swatch}<text x=\"{:.1}\" y=\"{y:.1}\" dominant-baseline=\"middle\" fill=\"#222\">{}</text></g>",
                x + 34.0,
                esc(&e.label)
            );
        }
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// The shade of a cell holding `count` of a grid whose largest cell holds `max`: the opacity of
/// one colour, growing with the count.
pub fn shade(count: u64, max: u64) -> f64 {
    0.04 + 0.86 * count as f64 / max.max(1) as f64
}

/// A confusion matrix as a grid: a row per true class, a column per predicted class, each cell
/// shaded by its count ([`shade`]) and showing the count and its share of the row.
pub fn confusion_grid(e: &EvalMetrics, label: &str) -> String {
    let n = e.labels.len();
    let cell = (360.0 / n.max(1) as f64).clamp(30.0, 92.0);
    // Room on the left for the longest class name (about 7 px a character at 12 px).
    let longest = e.labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let (left, top) = ((16.0 + 7.0 * longest as f64).max(70.0), 50.0);
    let (w, h) = (left + cell * n as f64 + 12.0, top + cell * n as f64 + 12.0);
    let max = e.confusion.iter().flatten().copied().max().unwrap_or(0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"confusion\" width=\"{w:.0}\" height=\"{h:.0}\" \
         viewBox=\"0 0 {w:.0} {h:.0}\" role=\"img\" aria-label=\"confusion matrix: {}\" {FONT} font-size=\"12\">\n\
         <text class=\"axis-title\" x=\"{:.1}\" y=\"14\" text-anchor=\"middle\" font-size=\"13\" fill=\"#222\">predicted</text>\n\
         <text class=\"axis-title\" transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\" fill=\"#222\">true</text>\n",
        esc(label),
        left + cell * n as f64 / 2.0,
        top + cell * n as f64 / 2.0
    );
    for (i, class) in e.labels.iter().enumerate() {
        let class = esc(class);
        let at = i as f64 * cell + cell / 2.0;
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444\">{class}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" dominant-baseline=\"middle\" fill=\"#444\">{class}</text>",
            left + at,
            top - 8.0,
            left - 8.0,
            top + at
        );
    }
    for (i, row) in e.confusion.iter().enumerate().take(n) {
        let total: u64 = row.iter().sum();
        for (j, &count) in row.iter().enumerate().take(n) {
            let opacity = shade(count, max);
            let (cx, cy) = (left + j as f64 * cell, top + i as f64 * cell);
            let share = 100.0 * count as f64 / total.max(1) as f64;
            let ink = if opacity > 0.5 { "white" } else { "#222" };
            let _ = write!(
                out,
                "<g><rect class=\"cell\" data-count=\"{count}\" x=\"{cx:.1}\" y=\"{cy:.1}\" width=\"{cell:.1}\" height=\"{cell:.1}\" \
                 fill=\"#1f5fa8\" fill-opacity=\"{opacity:.3}\" stroke=\"white\" stroke-width=\"2\"/>\
                 <title>true {} predicted {}: {count} ({share:.1}% of true {})</title>",
                esc(&e.labels[i]),
                esc(&e.labels[j]),
                esc(&e.labels[i])
            );
            let mid = cx + cell / 2.0;
            if cell >= 56.0 {
                let _ = writeln!(
                    out,
                    "<text x=\"{mid:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"600\" font-size=\"14\" fill=\"{ink}\">{count}</text>\
                     <text x=\"{mid:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\" fill=\"{ink}\">{share:.1}%</text></g>",
                    cy + cell / 2.0 - 2.0,
                    cy + cell / 2.0 + 14.0
                );
            } else {
                let _ = writeln!(
                    out,
                    "<text x=\"{mid:.1}\" y=\"{:.1}\" text-anchor=\"middle\" dominant-baseline=\"middle\" font-size=\"10\" fill=\"{ink}\">{count}</text></g>",
                    cy + cell / 2.0
                );
            }
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers_covering_the_range() {
        let (t, d) = ticks(0.8596, 0.8796, 5.0);
        assert_eq!(d, 3);
        assert!(t[0] <= 0.8596 && *t.last().unwrap() >= 0.8796, "{t:?}");
        assert!(t.len() >= 4 && t.len() <= 8, "{t:?}");
        let (t, d) = ticks(0.0, 9400.0, 6.0);
        assert_eq!((t[0], *t.last().unwrap(), d), (0.0, 10000.0, 0), "{t:?}");
    }

    #[test]
    fn labels_are_escaped_and_the_legend_sits_below_the_plot() {
        let chart = LineChart {
            label: "a <b>".into(),
            x_title: "update".into(),
            y_title: "loss".into(),
            integer_x: false,
            series: vec![Series {
                name: "run \"x\" & <y>".into(),
                color: COLORS[0],
                dash: None,
                points: vec![(1.0, 0.7), (2.0, 0.5)],
                dots: true,
            }],
            references: vec![],
            rings: vec![],
            legend: vec![LegendEntry { label: "<script>".into(), swatch: Swatch::Ring }],
            x_marks: vec![(1.5, "epoch 2".into())],
        };
        let svg = chart.svg().unwrap();
        assert!(!svg.contains("<script>") && svg.contains("&lt;script&gt;"), "{svg}");
        assert!(svg.contains("run &quot;x&quot; &amp; &lt;y&gt;"), "{svg}");
        let legend_y: f64 = svg.split("<g class=\"legend-entry\">").nth(1).unwrap().split("cy=\"").nth(1).unwrap()[..5]
            .trim_end_matches('"')
            .parse()
            .unwrap();
        assert!(legend_y > TOP + PLOT_HEIGHT + 20.0, "legend at {legend_y}: {svg}");
        assert!(LineChart { series: vec![], legend: vec![], ..chart }.svg().is_none());
    }
}
