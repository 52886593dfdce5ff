//! `vigil-sql --chart` as users run it: lines per series with a legend, shaded alert intervals,
//! the HTML page, refusals with the expected shape, thinning of long series, the shell's
//! `\chart`.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use clap::CommandFactory;
use common::archive;
use tempfile::TempDir;

/// The fixture's readings as time series: reading `i` at 2026-01-01 00:00 plus `i` minutes.
const READINGS: &str = "SELECT to_timestamp_millis(1767225600000 + CAST(value AS BIGINT) * 60000) AS ts, \
                        value AS temperature, source FROM readings";

/// The fixture's alerts as intervals: dev-0's closed (minutes 2 to 4), dev-2's still open.
const ALERTS: &str = "SELECT to_timestamp_millis(1767225600000 + level * 60000) AS start_ts, \
                      CASE WHEN level = 2 THEN to_timestamp_millis(1767225600000 + 240000) END AS end_ts, \
                      source FROM alerts";

fn vigil_sql(archive: &TempDir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil-sql"))
        .arg("--archive")
        .arg(archive.path())
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(dir: &TempDir, name: &str) -> String {
    dir.path().join(name).to_str().unwrap().to_owned()
}

/// Checks that `svg` is well-formed XML as far as a chart uses it: tags nest and close,
/// attribute quotes pair up, and every `&` starts an entity.
fn assert_well_formed(svg: &str) {
    let mut open: Vec<&str> = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find('<') {
        assert_entities(&rest[..start]);
        let end = start + rest[start..].find('>').expect("an unclosed tag");
        let tag = &rest[start + 1..end];
        assert_eq!(tag.matches('"').count() % 2, 0, "quotes pair up in <{tag}>");
        assert!(!tag.contains('<'), "no < inside <{tag}>");
        assert_entities(tag);
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop(), Some(name.trim()), "closing </{name}>");
        } else if !tag.ends_with('/') && !tag.starts_with('?') && !tag.starts_with('!') {
            open.push(tag.split_whitespace().next().unwrap());
        }
        rest = &rest[end + 1..];
    }
    assert!(open.is_empty(), "unclosed: {open:?}");
}

fn assert_entities(text: &str) {
    for (i, _) in text.match_indices('&') {
        let entity = &text[i..];
        assert!(
            ["&lt;", "&gt;", "&amp;", "&quot;", "&apos;", "&#"]
                .iter()
                .any(|e| entity.starts_with(e)),
            "a bare & in {text:?}"
        );
    }
}

/// The polylines of the chart's data lines (`stroke-width="2"`; the legend's samples are
/// short two-point lines).
fn data_lines(svg: &str) -> Vec<&str> {
    svg.lines()
        .filter(|l| l.starts_with("<polyline") && l.contains(r#"stroke-width="2""#))
        .filter(|l| points(l) > 2)
        .collect()
}

fn points(polyline: &str) -> usize {
    let start = polyline.find("points=\"").unwrap() + "points=\"".len();
    let end = start + polyline[start..].find('"').unwrap();
    polyline[start..end].split_whitespace().count()
}

#[test]
fn a_chart_draws_a_line_per_series_its_legend_and_the_alert_bands() {
    let dir = archive();
    let file = path(&dir, "chart.svg");
    let out = vigil_sql(
        &dir,
        &[
            "--chart",
            &file,
            "--chart-alerts",
            ALERTS,
            "--chart-title",
            "Readings & alerts",
            READINGS,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("chart written to {file}: 3 series, 12 of 12 readings drawn, 2 alert intervals\n")
    );
    let svg = std::fs::read_to_string(&file).unwrap();
    assert!(svg.starts_with("<svg "), "{svg}");
    assert_well_formed(&svg);
    assert_eq!(data_lines(&svg).len(), 3, "{svg}");
    for name in [
        "dev-0",
        "dev-1",
        "dev-2",
        "Readings &amp; alerts",
        "temperature",
        "time (UTC)",
    ] {
        assert!(
            svg.contains(&format!(">\n{name}\n</text>")),
            "{name} in {svg}"
        );
    }
    // Each band in its series' colour (dev-0 the first, dev-2 the third), under the lines.
    let bands: Vec<&str> = svg
        .lines()
        .filter(|l| l.starts_with("<rect") && l.contains(r#"opacity="0.18""#))
        .collect();
    assert_eq!(bands.len(), 2, "{bands:?}");
    assert!(
        bands[0].contains("#4E79A7") && bands[1].contains("#59A14F"),
        "{bands:?}"
    );
    let first_band = svg.find(bands[0]).unwrap();
    assert!(first_band < svg.find(data_lines(&svg)[0]).unwrap());
    // The open alert runs to the right edge of the plot, where the grid ends too.
    let right = |l: &str| -> i64 {
        let number = |key: &str| {
            let at = l.find(&format!("{key}=\"")).unwrap() + key.len() + 2;
            l[at..at + l[at..].find('"').unwrap()]
                .parse::<i64>()
                .unwrap()
        };
        number("x") + number("width")
    };
    let line_ends = data_lines(&svg)
        .iter()
        .map(|l| {
            let start = l.find("points=\"").unwrap() + 8;
            let last = l[start..]
                .split('"')
                .next()
                .unwrap()
                .split_whitespace()
                .last()
                .unwrap();
            last.split(',').next().unwrap().parse::<i64>().unwrap()
        })
        .max()
        .unwrap();
    assert!(
        (right(bands[1]) - line_ends).abs() <= 1,
        "{} vs {line_ends}",
        bands[1]
    );
}

#[test]
fn an_html_chart_holds_the_same_svg_inline_and_loads_nothing() {
    let dir = archive();
    let (svg_file, html_file) = (path(&dir, "c.svg"), path(&dir, "c.HTML"));
    for file in [&svg_file, &html_file] {
        let out = vigil_sql(&dir, &["--chart", file, "--chart-alerts", ALERTS, READINGS]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let svg = std::fs::read_to_string(&svg_file).unwrap();
    let html = std::fs::read_to_string(&html_file).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains(&svg), "the SVG inline, as the .svg holds it");
    let outside = html.replace(&svg, "");
    for forbidden in ["<script", "<link", "src=", "href=", "http", "@import"] {
        assert!(!outside.contains(forbidden), "{forbidden} in {outside}");
    }
    // The default title is the query, shortened, and escaped in the page's <title>.
    let title = &html[html.find("<title>").unwrap() + 7..html.find("</title>").unwrap()];
    assert!(
        title.starts_with("SELECT to_timestamp_millis(") && title.ends_with('…'),
        "{title}"
    );
    assert!(title.chars().count() <= 90);
}

#[test]
fn a_query_of_the_wrong_shape_is_refused_with_the_shape_expected() {
    let dir = archive();
    let file = path(&dir, "wrong.svg");
    let out = vigil_sql(
        &dir,
        &["--chart", &file, "SELECT source, value FROM readings"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--chart needs (ts, value[, series]) columns")
            && stderr.contains("the query returned (source: Utf8"),
        "{stderr}"
    );
    assert!(!Path::new(&file).exists());

    let out = vigil_sql(
        &dir,
        &[
            "--chart",
            &file,
            "--chart-alerts",
            "SELECT 1 AS a",
            READINGS,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--chart-alerts needs (start, end[, series]) columns")
            && stderr.contains("the query returned (a: Int64)"),
        "{stderr}"
    );

    let out = vigil_sql(
        &dir,
        &["--chart", &file, "--chart-alerts", "SELECT nope", READINGS],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the --chart-alerts query"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_unknown_extension_or_a_missing_query_is_refused() {
    let dir = archive();
    let png = path(&dir, "c.png");
    let out = vigil_sql(&dir, &["--chart", &png, READINGS]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(".svg, .html or .htm"),
        "{}",
        text(&out.stderr)
    );
    assert!(!Path::new(&png).exists());

    let out = vigil_sql(&dir, &["--chart", &path(&dir, "c.svg")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("pass the query"),
        "{}",
        text(&out.stderr)
    );

    let out = vigil_sql(&dir, &["--chart-title", "t", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(2), "--chart-title needs --chart");
}

#[test]
fn a_failed_query_leaves_the_previous_chart_and_no_temporary_file() {
    let dir = archive();
    let file = path(&dir, "kept.svg");
    std::fs::write(&file, "previous").unwrap();
    let out = vigil_sql(&dir, &["--chart", &file, "SELECT nope FROM readings"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "previous");
    let out = vigil_sql(&dir, &["--chart", &file, READINGS]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(&file).unwrap().starts_with("<svg"));
    let stray: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn a_hundred_thousand_readings_are_thinned_to_a_small_file() {
    let dir = archive();
    let file = path(&dir, "big.svg");
    // One slow wave with a single spike: thinning must keep the spike.
    let sql = "SELECT to_timestamp_millis(v * 1000) AS ts, \
               CASE WHEN v = 54321 THEN 100.0 ELSE sin(CAST(v AS DOUBLE) / 5000.0) END AS value \
               FROM generate_series(1, 100000) t(v)";
    let out = vigil_sql(&dir, &["--chart", &file, sql]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("of 100000 readings drawn"),
        "{}",
        text(&out.stdout)
    );
    let svg = std::fs::read_to_string(&file).unwrap();
    assert!(svg.len() < 150_000, "{} bytes", svg.len());
    let lines = data_lines(&svg);
    assert_eq!(lines.len(), 1);
    let drawn = points(lines[0]);
    assert!(
        (vigil_sql::SLICES..=vigil_sql::MAX_POINTS).contains(&drawn),
        "{drawn} points"
    );
    // The spike is the top of the value axis: some point sits near the plot's top edge.
    let top = lines[0]
        .split("points=\"")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .filter_map(|p| {
            p.split(',')
                .nth(1)?
                .trim_end_matches('"')
                .parse::<i64>()
                .ok()
        })
        .min()
        .unwrap();
    assert!(top < 200, "the spike was drawn (highest point at y={top})");
}

#[test]
fn no_rows_draw_a_chart_that_says_so() {
    let dir = archive();
    let file = path(&dir, "empty.svg");
    let out = vigil_sql(
        &dir,
        &["--chart", &file, &format!("{READINGS} WHERE value < 0")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let svg = std::fs::read_to_string(&file).unwrap();
    assert_well_formed(&svg);
    assert!(svg.contains("no rows"), "{svg}");
    assert!(data_lines(&svg).is_empty());
}

#[test]
fn the_shell_draws_with_backslash_chart() {
    let dir = archive();
    let file = path(&dir, "shell.svg");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil-sql"))
        .arg("--archive")
        .arg(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let script = format!(
        "\\chart {file} {READINGS} WHERE source = 'dev-1';\n\\chart nowhere.png SELECT 1\n"
    );
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        text(&out.stdout).contains(&format!(
            "chart written to {file}: 1 series, 4 of 4 readings"
        )),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        data_lines(&std::fs::read_to_string(&file).unwrap()).len(),
        1
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "the second \\chart fails the script"
    );
    assert!(
        text(&out.stderr).contains(".svg, .html or .htm"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_help_states_the_thinning_rule_with_the_numbers_the_code_uses() {
    let command = vigil_sql::Args::command();
    let chart = command
        .get_arguments()
        .find(|a| a.get_id() == "chart")
        .unwrap();
    let help = chart.get_help().unwrap().to_string();
    for expected in [
        format!("more than {} readings", vigil_sql::MAX_POINTS),
        format!("each of {} equal slices", vigil_sql::SLICES),
        format!("at most {}", vigil_sql::MAX_SERIES),
    ] {
        assert!(help.contains(&expected), "{expected:?} in {help}");
    }
}
