//! Line charts as PNG, drawn by `plotters` on an RGB buffer with an embedded font (DejaVu Sans from the
//! `dejavu` crate), so that a chart looks the same on every machine whatever fonts it has installed.
//!
//! A chart never fails on its data: points that cannot be drawn (non-finite, or not positive on a log
//! axis) are left out and counted, the count is printed on the chart and returned in [`Drawn`]; a chart
//! with nothing to draw still has its axes and says "no data".
use anyhow::{anyhow, Context, Result};
use plotters::coord::ranged1d::{KeyPointHint, KeyPointWeight, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// How an axis maps values to pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Log10; for quantities that span decades (losses, errors against t).
    Log,
}

/// One named line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Drawn pale and thin, behind the others (raw values under their running mean).
    pub faint: bool,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, faint: false }
    }
}

/// A line chart: title, labelled axes with ticks, a legend when there are several series (or a named one).
#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    pub y_scale: Scale,
    pub series: Vec<Series>,
    /// Pixels (width, height).
    pub size: (u32, u32),
}

/// What a written chart holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drawn {
    pub points: usize,
    /// Points left out: non-finite, or ≤ 0 on a log axis.
    pub skipped: usize,
}

impl Chart {
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            series: Vec::new(),
            size: (800, 480),
        }
    }

    pub fn log_x(mut self) -> Self {
        self.x_scale = Scale::Log;
        self
    }

    pub fn log_y(mut self) -> Self {
        self.y_scale = Scale::Log;
        self
    }

    pub fn with_series(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push(Series::new(name, points));
        self
    }

    /// Adds a series drawn pale and thin (see [`Series::faint`]).
    pub fn with_faint_series(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push(Series { faint: true, ..Series::new(name, points) });
        self
    }

    /// Draws the chart into an RGB buffer of `size` pixels.
    pub fn render(&self) -> Result<(Vec<u8>, Drawn)> {
        register_font();
        let (w, h) = self.size;
        if w < 200 || h < 150 {
            return Err(anyhow!("chart {:?}: {w}×{h} pixels is too small to draw (at least 200×150)", self.title));
        }
        let keep = |v: f64, s: Scale| v.is_finite() && (s == Scale::Linear || v > 0.0);
        let mut skipped = 0;
        let kept: Vec<Vec<(f64, f64)>> = self
            .series
            .iter()
            .map(|s| {
                let k: Vec<_> =
                    s.points.iter().copied().filter(|&(x, y)| keep(x, self.x_scale) && keep(y, self.y_scale)).collect();
                skipped += s.points.len() - k.len();
                k
            })
            .collect();
        let points = kept.iter().map(Vec::len).sum();
        let xr = axis_range(kept.iter().flatten().map(|p| p.0), self.x_scale);
        let yr = axis_range(kept.iter().flatten().map(|p| p.1), self.y_scale);
        let mut notes = Vec::new();
        if points == 0 {
            notes.push("no data".to_string());
        }
        if skipped > 0 {
            let why = if self.x_scale == Scale::Log || self.y_scale == Scale::Log {
                "non-finite or not positive on a log axis"
            } else {
                "non-finite"
            };
            notes.push(format!("{skipped} point{} not drawn ({why})", if skipped == 1 { "" } else { "s" }));
        }
        let mut buf = vec![255u8; w as usize * h as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            let (x, y) = (Axis::new(xr, self.x_scale), Axis::new(yr, self.y_scale));
            self.draw(&root, x, y, &kept, &notes)?;
            root.present().map_err(|e| anyhow!("chart {:?}: {e}", self.title))?;
        }
        Ok((buf, Drawn { points, skipped }))
    }

    /// Renders the chart and writes it as a PNG.
    pub fn write_png(&self, path: &Path) -> Result<Drawn> {
        let (buf, drawn) = self.render().with_context(|| format!("drawing {}", path.display()))?;
        super::image::write_png(path, self.size.0 as usize, self.size.1 as usize, 3, &buf)?;
        Ok(drawn)
    }

    fn draw(
        &self,
        root: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
        x: Axis,
        y: Axis,
        kept: &[Vec<(f64, f64)>],
        notes: &[String],
    ) -> Result<()> {
        let err = |e: &dyn std::fmt::Display| anyhow!("chart {:?}: {e}", self.title);
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 22))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(76)
            .build_cartesian_2d(x.clone(), y.clone())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .x_labels(10)
            .y_labels(8)
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(214, 214, 214))
            .draw()
            .map_err(|e| err(&e))?;
        for (k, (series, pts)) in self.series.iter().zip(kept).enumerate() {
            let colour = if series.faint { mix_with_white(colour(k), 0.55) } else { colour(k) };
            let style = ShapeStyle::from(&colour).stroke_width(if series.faint { 1 } else { 2 });
            let drawn = chart.draw_series(LineSeries::new(pts.iter().copied(), style)).map_err(|e| err(&e))?;
            if !series.name.is_empty() {
                drawn.label(series.name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], ShapeStyle::from(&colour).stroke_width(2))
                });
            }
            // A point alone makes no line: mark every point of a short series so that it is seen.
            if pts.len() <= 32 && !series.faint {
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, ShapeStyle::from(&colour).filled())))
                    .map_err(|e| err(&e))?;
            }
        }
        if self.series.iter().any(|s| !s.name.is_empty()) {
            let (_, py) = chart.plotting_area().get_pixel_range();
            let named = self.series.iter().filter(|s| !s.name.is_empty()).count();
            // Rows of 1.4 × the font's size must fit the plotting area's height.
            let font = ((py.end - py.start - 16) as f64 / (1.4 * named as f64)).clamp(9.0, 14.0);
            chart
                .configure_series_labels()
                .position(quietest_corner(kept, &x, &y))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .label_font((FONT, font))
                .draw()
                .map_err(|e| err(&e))?;
        }
        // Notes go in the top-left corner, beside the title, where no data is drawn.
        for (i, note) in notes.iter().enumerate() {
            let at = (8, 6 + 16 * i as i32);
            root.draw(&Text::new(note.as_str(), at, (FONT, 13).into_font().color(&RGBColor(160, 30, 30))))
                .map_err(|e| err(&e))?;
        }
        Ok(())
    }
}

/// The family name the embedded font is registered under.
const FONT: &str = "sans-serif";

fn register_font() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // A font the crate ships cannot fail to parse; if it did, every chart would say so when drawn.
            let _ = plotters::style::register_font(FONT, style, dejavu::sans::regular());
        }
    });
}

/// The data's range along one axis, widened a little so that no point sits on the frame; a degenerate
/// range (one value, or no values) is widened around the value (or 1).
fn axis_range(values: impl Iterator<Item = f64>, scale: Scale) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return if scale == Scale::Log { 0.1..10.0 } else { 0.0..1.0 };
    }
    match scale {
        Scale::Log => {
            let (l, h) = (lo.log10(), hi.log10());
            let pad = if h > l { 0.04 * (h - l) } else { 0.5 };
            10f64.powf(l - pad)..10f64.powf(h + pad)
        }
        Scale::Linear => {
            let pad = if hi > lo { 0.04 * (hi - lo) } else { 0.5 * lo.abs().max(1e-12) };
            lo - pad..hi + pad
        }
    }
}

/// A tick label short enough for the axis: integers as they are, small or large values in e-notation.
fn tick(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// One axis, linear or log10, with its own tick positions: a 1-2-5 sequence on a linear axis; decades
/// on a log axis (with 2× and 5× between them when the range spans fewer than three decades), so that
/// every tick is a round number and no two labels print the same text.
#[derive(Clone, Debug)]
struct Axis {
    lo: f64,
    hi: f64,
    scale: Scale,
}

impl Axis {
    fn new(r: std::ops::Range<f64>, scale: Scale) -> Self {
        Axis { lo: r.start, hi: r.end, scale }
    }

    /// Where `v` lies along the axis, 0 at `lo` and 1 at `hi`.
    fn fraction(&self, v: f64) -> f64 {
        match self.scale {
            Scale::Linear => (v - self.lo) / (self.hi - self.lo),
            Scale::Log => (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10()),
        }
    }

    fn ticks(&self, max: usize, minor: bool) -> Vec<f64> {
        let max = max.max(2);
        let inside = |v: &f64| *v >= self.lo && *v <= self.hi;
        match self.scale {
            Scale::Linear => {
                let step = nice_step((self.hi - self.lo) / max as f64) / if minor { 5.0 } else { 1.0 };
                let first = (self.lo / step).ceil() as i64;
                let last = (self.hi / step).floor() as i64;
                (first..=last).map(|k| k as f64 * step).filter(inside).collect()
            }
            Scale::Log => {
                let (a, b) = (self.lo.log10().floor() as i32, self.hi.log10().ceil() as i32);
                let with = |mults: &[f64]| -> Vec<f64> {
                    (a..=b).flat_map(|e| mults.iter().map(move |m| m * 10f64.powi(e))).filter(inside).collect()
                };
                let candidates: Vec<Vec<f64>> = if minor {
                    vec![with(&[1., 2., 3., 4., 5., 6., 7., 8., 9.]), with(&[1.])]
                } else {
                    vec![with(&[1.]), with(&[1., 2., 5.]), with(&[1., 2., 3., 4., 5., 6., 7., 8., 9.])]
                };
                // The first candidate with at least four ticks that fits (minor: the densest that fits).
                let mut best = Vec::new();
                for c in candidates {
                    if c.len() <= max && (best.len() < 4 || minor) {
                        best = c;
                        if minor || best.len() >= 4 {
                            break;
                        }
                    }
                }
                if best.len() > max {
                    let every = best.len().div_ceil(max);
                    best = best.into_iter().step_by(every).collect();
                }
                best
            }
        }
    }
}

impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        limit.0 + (self.fraction(*v) * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // Minor ticks subdivide the major ones, so both are derived from the major count.
        self.ticks(hint.bold_points(), matches!(hint.weight(), KeyPointWeight::Any))
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for Axis {
    fn format(v: &f64) -> String {
        tick(*v)
    }
}

/// The smallest of 1, 2, 5 × 10^k at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let e = 10f64.powf(raw.max(1e-300).log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * e).find(|s| *s >= raw).unwrap_or(10.0 * e)
}

/// The corner of the plotting area with the fewest points near it, for the legend.
fn quietest_corner(kept: &[Vec<(f64, f64)>], x: &Axis, y: &Axis) -> SeriesLabelPosition {
    let mut count = [0usize; 4]; // upper left, upper right, lower left, lower right
    for &(px, py) in kept.iter().flatten() {
        let (fx, fy) = (x.fraction(px), y.fraction(py));
        if fx < 0.45 && fy > 0.55 {
            count[0] += 1;
        }
        if fx > 0.55 && fy > 0.55 {
            count[1] += 1;
        }
        if fx < 0.45 && fy < 0.45 {
            count[2] += 1;
        }
        if fx > 0.55 && fy < 0.45 {
            count[3] += 1;
        }
    }
    let order = [
        SeriesLabelPosition::UpperRight,
        SeriesLabelPosition::UpperLeft,
        SeriesLabelPosition::LowerRight,
        SeriesLabelPosition::LowerLeft,
    ];
    let index = [1, 0, 3, 2];
    let best = (0..4).min_by_key(|&i| count[index[i]]).unwrap_or(0);
    order[best].clone()
}

fn mix_with_white(c: RGBColor, amount: f64) -> RGBColor {
    let m = |v: u8| (v as f64 + (255.0 - v as f64) * amount).round() as u8;
    RGBColor(m(c.0), m(c.1), m(c.2))
}

/// Tableau's ten colours, then darker variants, so that up to 20 series stay distinct.
fn colour(k: usize) -> RGBColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = TAB10[k % 10];
    let dark = if (k / 10) % 2 == 1 { 0.6 } else { 1.0 };
    RGBColor((r as f64 * dark) as u8, (g as f64 * dark) as u8, (b as f64 * dark) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(300.0), "300");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(1.5e-5), "1.5e-5");
        assert_eq!(tick(123.456), "123.5");
    }

    #[test]
    fn ranges_are_never_empty() {
        for s in [Scale::Linear, Scale::Log] {
            for pts in [vec![], vec![3.0], vec![1.0, 1000.0]] {
                let r = axis_range(pts.into_iter(), s);
                assert!(r.start < r.end && r.start.is_finite() && r.end.is_finite(), "{r:?}");
                if s == Scale::Log {
                    assert!(r.start > 0.0);
                }
            }
        }
    }
}
