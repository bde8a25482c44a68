//! Charts (io::plot): every picture gsure draws is written, decodes as a PNG of the chart's size, and
//! holds what was asked for, for empty, one-point, many-series and non-finite inputs alike.
use gsure::io::plot::{Chart, Drawn};
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gsure-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Decodes a PNG: (width, height, RGB bytes).
fn decode(path: &PathBuf) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Pixels of (close to) one colour: how a series is found on the chart.
fn count_colour(rgb: &[u8], c: (u8, u8, u8)) -> usize {
    let near = |a: u8, b: u8| (a as i32 - b as i32).abs() <= 24;
    rgb.chunks(3).filter(|p| near(p[0], c.0) && near(p[1], c.1) && near(p[2], c.2)).count()
}

const BLUE: (u8, u8, u8) = (31, 119, 180);
const ORANGE: (u8, u8, u8) = (255, 127, 14);
const NOTE_RED: (u8, u8, u8) = (160, 30, 30);

fn write(chart: &Chart, name: &str) -> (Drawn, Vec<u8>) {
    let path = tmp(name);
    let drawn = chart.write_png(&path).unwrap();
    let (w, h, rgb) = decode(&path);
    assert_eq!((w, h), chart.size, "{name}");
    (drawn, rgb)
}

#[test]
fn a_loss_curve_on_a_log_axis() {
    let pts: Vec<(f64, f64)> = (1..=400).map(|i| (i as f64, 2.0 / (i as f64).sqrt())).collect();
    let chart = Chart::new("Training loss", "step", "loss").log_y().with_series("", pts);
    let (drawn, rgb) = write(&chart, "loss.png");
    assert_eq!(drawn, Drawn { points: 400, skipped: 0 });
    assert!(count_colour(&rgb, BLUE) > 300, "the curve is drawn");
    assert_eq!(count_colour(&rgb, NOTE_RED), 0, "nothing to note");
}

#[test]
fn an_empty_chart_is_written_and_says_so() {
    let (drawn, rgb) = write(&Chart::new("Nothing yet", "step", "loss").log_y(), "empty.png");
    assert_eq!(drawn, Drawn { points: 0, skipped: 0 });
    assert!(count_colour(&rgb, NOTE_RED) > 20, "the 'no data' note is drawn");
    let (drawn, _) = write(&Chart::new("Empty series", "t", "MSE").with_series("a", vec![]), "empty-series.png");
    assert_eq!(drawn.points, 0);
}

#[test]
fn one_point_is_drawn_as_a_mark() {
    for (name, chart) in [
        ("one-linear.png", Chart::new("One point", "x", "y").with_series("only", vec![(3.0, 7.0)])),
        ("one-log.png", Chart::new("One point", "x", "y").log_x().log_y().with_series("only", vec![(3.0, 7.0)])),
    ] {
        let (drawn, rgb) = write(&chart, name);
        assert_eq!(drawn, Drawn { points: 1, skipped: 0 }, "{name}");
        assert!(count_colour(&rgb, BLUE) > 15, "{name}: the point is marked");
    }
}

#[test]
fn many_series_share_one_chart_with_a_legend() {
    let mut chart = Chart::new("Denoising error", "t", "MSE").log_x().log_y();
    for k in 0..25 {
        let pts =
            [10, 50, 100, 300, 700].iter().map(|&t| (t as f64, (k + 1) as f64 * 1e-3 * (t as f64).sqrt())).collect();
        chart = chart.with_series(format!("run {k}"), pts);
    }
    let (drawn, rgb) = write(&chart, "many.png");
    assert_eq!(drawn, Drawn { points: 125, skipped: 0 });
    assert!(count_colour(&rgb, BLUE) > 50 && count_colour(&rgb, ORANGE) > 50, "distinct colours per series");
}

#[test]
fn non_finite_points_are_skipped_with_a_note() {
    let pts = vec![(1.0, 0.5), (2.0, f64::NAN), (3.0, f64::INFINITY), (4.0, 0.25), (f64::NAN, 1.0), (5.0, 0.1)];
    let (drawn, rgb) = write(&Chart::new("Loss", "step", "loss").with_series("", pts.clone()), "nan.png");
    assert_eq!(drawn, Drawn { points: 3, skipped: 3 });
    assert!(count_colour(&rgb, NOTE_RED) > 20, "the skipped points are noted on the chart");
    // On a log axis a zero or negative value cannot be drawn either.
    let mut with_zero = pts;
    with_zero.push((6.0, 0.0));
    with_zero.push((7.0, -1.0));
    let (drawn, _) = write(&Chart::new("Loss", "step", "loss").log_y().with_series("", with_zero), "nan-log.png");
    assert_eq!(drawn, Drawn { points: 3, skipped: 5 });
    // All points non-finite: an empty chart, not an error.
    let (drawn, _) = write(&Chart::new("Loss", "step", "loss").with_series("", vec![(1.0, f64::NAN)]), "all-nan.png");
    assert_eq!(drawn, Drawn { points: 0, skipped: 1 });
}

#[test]
fn a_chart_too_small_to_draw_is_an_error_naming_the_file() {
    let mut chart = Chart::new("Tiny", "x", "y").with_series("", vec![(0.0, 1.0), (1.0, 2.0)]);
    chart.size = (40, 30);
    let path = tmp("tiny.png");
    let err = format!("{:#}", chart.write_png(&path).unwrap_err());
    assert!(err.contains("tiny.png") && err.contains("too small"), "{err}");
}

#[test]
fn several_runs_losses_on_one_chart() {
    let runs: Vec<PathBuf> = (0..3)
        .map(|k| {
            let dir = tmp(&format!("run{k}"));
            std::fs::create_dir_all(&dir).unwrap();
            let log: String =
                (1..=50).map(|s| format!("{{\"step\":{s},\"loss\":{}}}\n", (k + 1) as f64 / s as f64)).collect();
            std::fs::write(dir.join("log.jsonl"), log).unwrap();
            dir
        })
        .collect();
    let out = tmp("losses.png");
    gsure::train::loss_curve::compare(&runs, &out).unwrap();
    let (w, h, rgb) = decode(&out);
    assert_eq!((w, h), (800, 480));
    assert!(count_colour(&rgb, BLUE) > 100 && count_colour(&rgb, ORANGE) > 100);
    let missing = format!("{:#}", gsure::train::loss_curve::compare(&[tmp("no-such-run")], &out).unwrap_err());
    assert!(missing.contains("log.jsonl") && missing.contains("no-such-run"), "{missing}");
}

#[test]
fn denoising_curves_are_read_from_summary_files() {
    let point = |t: usize, mse: f64| serde_json::json!({"t": t, "alpha_bar": 0.9, "sigma": 0.3, "mse": mse, "std_error": 0.0, "count": 4});
    let summary = serde_json::json!({
        "oracle": {"denoise": [point(10, 0.01), point(100, 0.05)], "swd": {"swd": 0.1}},
        "gsure": [point(10, 0.012), point(100, 0.055)],
        "floor": {"swd": 0.03},
    });
    let path = tmp("summary.json");
    std::fs::write(&path, summary.to_string()).unwrap();
    let curves = gsure::eval::report::read_denoise_curves(&path).unwrap();
    let names: Vec<&str> = curves.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ["gsure", "oracle"]);
    assert_eq!(curves[1].1[1].mse, 0.05);
    std::fs::write(&path, "{\"floor\": {\"swd\": 0.03}}").unwrap();
    let err = format!("{:#}", gsure::eval::report::read_denoise_curves(&path).unwrap_err());
    assert!(err.contains("summary.json") && err.contains("no denoising curve"), "{err}");
}
