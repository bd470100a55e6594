//! Throughput-over-time plots (SVG), for the demo, the benchmark and speedtest jobs.

use plotters::prelude::*;
use std::path::Path;

/// One line: a label and `(seconds, value)` points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Turns cumulative byte counters sampled at times `t` into Mbit/s per interval.
pub fn rates_mbit(samples: &[(f64, u64)]) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| {
            (
                w[1].0,
                (w[1].1.saturating_sub(w[0].1)) as f64 * 8.0 / 1e6 / (w[1].0 - w[0].0),
            )
        })
        .collect()
}

/// Writes a line chart to `path` (SVG).
pub fn line_chart_svg(path: &Path, title: &str, y_label: &str, series: &[Series]) -> anyhow::Result<()> {
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0_f64, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart.configure_mesh().x_desc("seconds").y_desc(y_label).draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_from_counters() {
        let r = rates_mbit(&[(0.0, 0), (1.0, 1_000_000), (2.0, 1_000_000)]);
        assert_eq!(r, vec![(1.0, 8.0), (2.0, 0.0)]);
    }

    #[test]
    fn writes_an_svg() {
        let dir = std::env::temp_dir().join(format!("bt-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.svg");
        line_chart_svg(
            &path,
            "t",
            "Mbit/s",
            &[Series {
                label: "a".into(),
                points: vec![(0.0, 1.0), (1.0, 2.0)],
            }],
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("<svg"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
