//! The report's charts as SVG text, drawn with `plotters`' SVG backend.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::{ClassCount, Projection, ReportError};

const FONT: &str = "sans-serif";
const BAR: RGBColor = RGBColor(0x3b, 0x7d, 0xd8);

fn fail<E: std::fmt::Debug>(e: E) -> ReportError {
    ReportError(format!("{e:?}"))
}

/// The colour of class `i` of `n`: hues evenly round the wheel.
pub fn class_colour(i: usize, n: usize) -> RGBColor {
    let (r, g, b) = HSLColor(i as f64 / n.max(1) as f64, 0.75, 0.45).rgb();
    RGBColor(r, g, b)
}

/// `#rrggbb` of a colour, for the page's legend.
pub fn hex(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// Photos per class as horizontal bars, most at the top.
pub fn class_bars(classes: &[ClassCount]) -> Result<String, ReportError> {
    let mut svg = String::new();
    let n = classes.len().max(1);
    let height = 60 + 16 * n as u32;
    {
        let root = SVGBackend::with_string(&mut svg, (820, height)).into_drawing_area();
        root.fill(&WHITE).map_err(fail)?;
        let max = classes.iter().map(|c| c.photos).max().unwrap_or(1);
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(220)
            .build_cartesian_2d(0u64..max + max / 10 + 1, (0..n).into_segmented())
            .map_err(fail)?;
        let name = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => (n - 1)
                .checked_sub(*i)
                .and_then(|j| classes.get(j))
                .map(|c| c.label.clone())
                .unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&name)
            .x_desc("photos")
            .label_style((FONT, 12))
            .draw()
            .map_err(fail)?;
        chart
            .draw_series(
                Histogram::horizontal(&chart)
                    .style(BAR.filled())
                    .margin(2)
                    .data(
                        classes
                            .iter()
                            .enumerate()
                            .map(|(i, c)| (n - 1 - i, c.photos)),
                    ),
            )
            .map_err(fail)?;
        root.present().map_err(fail)?;
    }
    Ok(svg)
}

/// The cumulative explained variance, with the kept `k` marked.
pub fn variance_curve(ratio: &[f64], k: usize) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (820, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(fail)?;
        let cumulative: Vec<f64> = ratio
            .iter()
            .scan(0.0, |s, r| {
                *s += r;
                Some(*s)
            })
            .collect();
        let mut chart = ChartBuilder::on(&root)
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0usize..ratio.len().max(1), 0.0f64..1.0)
            .map_err(fail)?;
        chart
            .configure_mesh()
            .x_desc("principal components")
            .y_desc("cumulative share of variance")
            .label_style((FONT, 12))
            .draw()
            .map_err(fail)?;
        chart
            .draw_series(LineSeries::new(
                cumulative.iter().enumerate().map(|(i, v)| (i + 1, *v)),
                BAR.stroke_width(2),
            ))
            .map_err(fail)?;
        if k > 0 && k <= cumulative.len() {
            let at = cumulative[k - 1];
            chart
                .draw_series(LineSeries::new([(k, 0.0), (k, at)], RED.stroke_width(1)))
                .map_err(fail)?;
            chart
                .draw_series([Circle::new((k, at), 4, RED.filled())])
                .map_err(fail)?;
            chart
                .draw_series([Text::new(
                    format!("k = {k}: {:.1} %", 100.0 * at),
                    (k + ratio.len() / 50 + 1, at - 0.08),
                    (FONT, 14).into_font().color(&RED),
                )])
                .map_err(fail)?;
        }
        root.present().map_err(fail)?;
    }
    Ok(svg)
}

/// The photos on the first two principal components, coloured by class.
pub fn projection(p: &Projection, classes: usize) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (820, 620)).into_drawing_area();
        root.fill(&WHITE).map_err(fail)?;
        let span = |f: fn(&(f32, f32, usize)) -> f32| {
            let (lo, hi) = p
                .points
                .iter()
                .map(f)
                .fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
            if lo > hi {
                (-1.0, 1.0)
            } else {
                let pad = (hi - lo).max(1e-6) * 0.04;
                (lo - pad, hi + pad)
            }
        };
        let ((x0, x1), (y0, y1)) = (span(|p| p.0), span(|p| p.1));
        let mut chart = ChartBuilder::on(&root)
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(fail)?;
        chart
            .configure_mesh()
            .x_desc("PC 1")
            .y_desc("PC 2")
            .label_style((FONT, 12))
            .draw()
            .map_err(fail)?;
        chart
            .draw_series(p.points.iter().map(|&(x, y, c)| {
                Circle::new((x, y), 2, class_colour(c, classes).mix(0.8).filled())
            }))
            .map_err(fail)?;
        root.present().map_err(fail)?;
    }
    Ok(svg)
}
