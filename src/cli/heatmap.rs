//! PNG heatmaps (plotters, bitmap backend). Text is drawn with DejaVu Sans embedded from the
//! `dejavu` crate through plotters' `ab_glyph` feature, so labels render on machines with no
//! system fonts (a bare CI image).

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

/// The font family name every label uses (registered once, from embedded bytes).
const FAMILY: &str = "sans-serif";

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font shipped by the crate; failure would be a bug.
        let _ = register_font(FAMILY, FontStyle::Normal, dejavu::sans::regular());
        let _ = register_font(FAMILY, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Viridis-like colour for `t` in `[0, 1]` (perceptually ordered, readable in grey).
pub fn colour(t: f64) -> RGBColor {
    const STOPS: [(f64, (f64, f64, f64)); 5] = [
        (0.00, (68.0, 1.0, 84.0)),
        (0.25, (59.0, 82.0, 139.0)),
        (0.50, (33.0, 145.0, 140.0)),
        (0.75, (94.0, 201.0, 98.0)),
        (1.00, (253.0, 231.0, 37.0)),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let i = STOPS
        .windows(2)
        .position(|w| t <= w[1].0)
        .unwrap_or(STOPS.len() - 2);
    let ((t0, a), (t1, b)) = (STOPS[i], STOPS[i + 1]);
    let f = (t - t0) / (t1 - t0);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Draws `values[row][col]` as a heatmap PNG at `path`: rows on the y axis (first row at the
/// top), columns on the x axis, one tick label per row/column, a title and a colour scale.
/// `range` fixes the colour scale (default: the values' min and max).
#[allow(clippy::too_many_arguments)]
pub fn heatmap_png(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    x_ticks: &[String],
    y_ticks: &[String],
    values: &[Vec<f64>],
    range: Option<(f64, f64)>,
) -> anyhow::Result<()> {
    let (rows, cols) = check_shape(x_ticks, y_ticks, values)?;
    let (lo, hi) = range.unwrap_or_else(|| {
        let finite = values.iter().flatten().copied().filter(|v| v.is_finite());
        let lo = finite.clone().fold(f64::INFINITY, f64::min);
        let hi = finite.fold(f64::NEG_INFINITY, f64::max);
        if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) }
    });
    let span = if hi > lo { hi - lo } else { 1.0 };
    register_fonts();

    let cell_w = (480 / cols).clamp(14, 90) as u32;
    let cell_h = (560 / rows).clamp(14, 60) as u32;
    let plot_w = cell_w * cols as u32;
    let plot_h = cell_h * rows as u32;
    let longest = |t: &[String]| t.iter().map(|s| s.chars().count()).max().unwrap_or(1) as u32;
    let y_area = 40 + 8 * longest(y_ticks);
    let x_area = 50u32;
    let side_w = 110u32;
    let w = (plot_w + y_area + 40 + side_w).max(11 * title.chars().count() as u32 + 40 + side_w);
    let h = plot_h + x_area + 70;
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE)?;
    let (main, side) = root.split_horizontally(w - side_w);
    let mut chart = ChartBuilder::on(&main)
        .caption(title, (FAMILY, 20).into_font())
        .margin(12)
        .x_label_area_size(x_area)
        .y_label_area_size(y_area)
        .build_cartesian_2d(0f64..cols as f64, 0f64..rows as f64)?;
    let tick_font = (FAMILY, 13).into_font();
    // Tick labels are drawn at the cell centres below, so the mesh only draws the axes and
    // their descriptions.
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(0)
        .x_desc(x_label)
        .y_desc(y_label)
        .axis_desc_style((FAMILY, 15).into_font())
        .draw()?;
    // Row 0 at the top: the y axis runs upwards.
    chart.draw_series(values.iter().enumerate().flat_map(|(r, row)| {
        row.iter().enumerate().map(move |(c, &v)| {
            let y = (rows - 1 - r) as f64;
            Rectangle::new(
                [(c as f64, y), (c as f64 + 1.0, y + 1.0)],
                colour((v - lo) / span).filled(),
            )
        })
    }))?;
    let centre = |c: f64, r: f64| chart.backend_coord(&(c, r));
    for (c, t) in x_ticks.iter().enumerate() {
        let (px, py) = centre(c as f64 + 0.5, 0.0);
        main.draw(&Text::new(
            t.clone(),
            (px, py + 6),
            TextStyle::from(tick_font.clone()).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    for (r, t) in y_ticks.iter().enumerate() {
        let (px, py) = centre(0.0, (rows - 1 - r) as f64 + 0.5);
        main.draw(&Text::new(
            t.clone(),
            (px - 6, py),
            TextStyle::from(tick_font.clone()).pos(Pos::new(HPos::Right, VPos::Center)),
        ))?;
    }
    let (_, top) = centre(0.0, rows as f64);
    let (_, bottom) = centre(0.0, 0.0);

    draw_colour_scale(&side, top, bottom, lo, span, &tick_font)?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The grid's (rows, columns), checked: non-empty, rectangular, one tick label per row/column.
fn check_shape(
    x_ticks: &[String],
    y_ticks: &[String],
    values: &[Vec<f64>],
) -> anyhow::Result<(usize, usize)> {
    let rows = values.len();
    let cols = values.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        bail!("nothing to draw: the heatmap has no rows or no columns");
    }
    if values.iter().any(|r| r.len() != cols) {
        bail!("the heatmap rows have different lengths");
    }
    if x_ticks.len() != cols || y_ticks.len() != rows {
        bail!(
            "{} x tick labels for {cols} columns and {} y tick labels for {rows} rows",
            x_ticks.len(),
            y_ticks.len()
        );
    }
    Ok((rows, cols))
}

/// The colour scale: a vertical bar from `top` to `bottom` with the range's ends and middle
/// labelled.
fn draw_colour_scale(
    side: &DrawingArea<BitMapBackend<'_>, Shift>,
    top: i32,
    bottom: i32,
    lo: f64,
    span: f64,
    tick_font: &FontDesc<'_>,
) -> anyhow::Result<()> {
    let bar_top = top;
    let bar_h = (bottom - top).max(60);
    let steps = 64;
    for i in 0..steps {
        let t = 1.0 - i as f64 / steps as f64;
        let y0 = bar_top + bar_h * i / steps;
        let y1 = bar_top + bar_h * (i + 1) / steps;
        side.draw(&Rectangle::new([(10, y0), (32, y1)], colour(t).filled()))?;
    }
    side.draw(&Rectangle::new(
        [(10, bar_top), (32, bar_top + bar_h)],
        BLACK.stroke_width(1),
    ))?;
    for (t, y) in [
        (1.0, bar_top),
        (0.5, bar_top + bar_h / 2),
        (0.0, bar_top + bar_h),
    ] {
        side.draw(&Text::new(
            format_value(lo + t * span),
            (38, y - 7),
            tick_font.clone(),
        ))?;
    }
    Ok(())
}

fn format_value(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1000.0 || v.abs() < 0.01) {
        format!("{v:.1e}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_scale_is_ordered_and_clamped() {
        assert_eq!(colour(0.0), RGBColor(68, 1, 84));
        assert_eq!(colour(1.0), RGBColor(253, 231, 37));
        assert_eq!(colour(-3.0), colour(0.0));
        assert_eq!(colour(f64::NAN), colour(0.0));
        // Brightness (green channel) grows along the scale.
        let g: Vec<u8> = (0..=10).map(|i| colour(i as f64 / 10.0).1).collect();
        assert!(g.windows(2).all(|w| w[0] <= w[1]), "{g:?}");
    }

    #[test]
    fn draws_a_png_with_labels_and_rejects_bad_shapes() {
        let dir = std::env::temp_dir().join(format!("ckv-heatmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.png");
        let values = vec![vec![0.0, 1.0, 2.0], vec![3.0, 4.0, 5.0]];
        let xt: Vec<String> = (0..3).map(|i| i.to_string()).collect();
        let yt: Vec<String> = (0..2).map(|i| format!("L{i}")).collect();
        heatmap_png(&path, "t", "x", "y", &xt, &yt, &values, None).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(heatmap_png(&path, "t", "x", "y", &xt[..2], &yt, &values, None).is_err());
        assert!(heatmap_png(&path, "t", "x", "y", &[], &[], &[], None).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
