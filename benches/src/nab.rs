//! `vigil-bench nab`: detection quality on the Numenta Anomaly Benchmark.
//!
//! Runs the real `vigil-guard` binary over NAB's CSV files as they are (source = the file's
//! directory, series = its stem), takes every raised alert as a detection at the alert's event
//! time, and scores the detections with NAB's standard profile, per file and in total.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use vigil_datasets::nab::{Profile, Score, load_timestamps, load_windows, score};
use vigil_operators::{Alert, AlertStatus, SeriesReading};

/// Scores `guards` on the NAB files under `dir` (which holds `combined_windows.json`):
/// through the vigil-guard binary, or with `in_process` by replaying each file's series
/// through the guards directly (the same logic without the dataflow, for quick evaluation).
pub fn run(dir: &Path, guards: &[String], workers: usize, in_process: bool) -> anyhow::Result<()> {
    let (windows, files) = corpus(dir)?;
    let started = std::time::Instant::now();
    let detections = if in_process {
        replay(&files, guards)?
    } else {
        through_binary(&files, guards, workers)?
    };
    let elapsed = started.elapsed();
    let title = format!("vigil-guard --guard {}", guards.join(" --guard "));
    let total = report(&title, &files, &windows, &detections)?;
    println!(
        "NAB score (standard, normalized): {:.1}   [{:.2}s]",
        total.normalized(),
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// Scores a published detector's results on the same files and by the same rules as vigil:
/// `results` is NAB's `results/<detector>` directory, whose `<category>/<detector>_<file>.csv`
/// hold an `anomaly_score` per row; every row scoring at least `threshold` is a detection, as
/// in NAB's own scorer.
pub fn run_published(dir: &Path, results: &Path, threshold: f64) -> anyhow::Result<()> {
    let (windows, files) = corpus(dir)?;
    let detector = results
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} does not name a detector", results.display()))?;
    let mut detections = BTreeMap::new();
    for (name, _) in &files {
        let (category, file) = name
            .split_once('/')
            .with_context(|| format!("{name} is not <category>/<file> as NAB names files"))?;
        let path = results.join(category).join(format!("{detector}_{file}"));
        detections.insert(name.clone(), published_detections(&path, threshold)?);
    }
    let title = format!("published {detector} results at threshold {threshold}");
    let total = report(&title, &files, &windows, &detections)?;
    println!(
        "NAB score of {detector} on these files (standard, normalized): {:.1}",
        total.normalized()
    );
    Ok(())
}

/// The times of the rows of a NAB results file whose `anomaly_score` is at least `threshold`.
fn published_detections(path: &Path, threshold: f64) -> anyhow::Result<Vec<i64>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {}: --results must be a detector's directory under NAB's results/",
            path.display()
        )
    })?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("{} has no {name} column", path.display()))
    };
    let (time_at, score_at) = (column("timestamp")?, column("anomaly_score")?);
    let mut detections = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        let field = |at: usize| {
            fields
                .get(at)
                .copied()
                .with_context(|| format!("{}:{}: too few fields", path.display(), i + 2))
        };
        let score: f64 = field(score_at)?.parse().with_context(|| {
            format!(
                "{}:{}: anomaly_score is not a number",
                path.display(),
                i + 2
            )
        })?;
        if score >= threshold {
            let time = field(time_at)?;
            detections.push(vigil_operators::time::parse_ts(time).with_context(|| {
                format!("{}:{}: {time:?} is not a timestamp", path.display(), i + 2)
            })?);
        }
    }
    Ok(detections)
}

/// The corpus under `dir`: its windows and the files of them that are present.
fn corpus(dir: &Path) -> anyhow::Result<(Windows, Vec<(String, PathBuf)>)> {
    let windows = load_windows(&dir.join("combined_windows.json"))?;
    let files: Vec<(String, PathBuf)> = windows
        .keys()
        .map(|name| (name.clone(), dir.join(name)))
        .filter(|(_, path)| path.exists())
        .collect();
    anyhow::ensure!(
        !files.is_empty(),
        "no NAB files of {} found under {}: pass --dir with the NAB corpus",
        dir.join("combined_windows.json").display(),
        dir.display()
    );
    Ok((windows, files))
}

type Windows = BTreeMap<String, Vec<(i64, i64)>>;

/// Prints the per-file and total scores of `detections` and returns the total.
fn report(
    title: &str,
    files: &[(String, PathBuf)],
    windows: &Windows,
    detections: &BTreeMap<String, Vec<i64>>,
) -> anyhow::Result<Score> {
    println!("NAB standard profile (A_TP 1, A_FP 0.11, A_FN 1), {title}");
    println!(
        "{:<52} {:>7} {:>8} {:>4} {:>8} {:>10}",
        "file", "windows", "detected", "FP", "raw", "normalized"
    );
    let mut total = Score::default();
    for (name, path) in files {
        let timestamps = load_timestamps(path)?;
        let hits = detections.get(name).map_or(&[][..], Vec::as_slice);
        let s = score(&timestamps, hits, &windows[name], &Profile::STANDARD);
        println!(
            "{:<52} {:>7} {:>8} {:>4} {:>8.3} {:>10.1}",
            name,
            s.windows,
            s.detected,
            s.false_positives,
            s.raw,
            s.normalized()
        );
        total.add(&s);
    }
    println!(
        "{:<52} {:>7} {:>8} {:>4} {:>8.3} {:>10.1}",
        format!("total ({} files)", files.len()),
        total.windows,
        total.detected,
        total.false_positives,
        total.raw,
        total.normalized()
    );
    Ok(total)
}

/// Detections per file (keyed as in the windows file) from a vigil-guard run over all files.
fn through_binary(
    files: &[(String, PathBuf)],
    guards: &[String],
    workers: usize,
) -> anyhow::Result<BTreeMap<String, Vec<i64>>> {
    let tmp = tempfile::tempdir()?;
    let alerts_path = tmp.path().join("alerts.ndjson");
    let mut command = Command::new(crate::binaries::sibling_binary("vigil-guard")?);
    for (_, path) in files {
        command.arg("--input").arg(path);
    }
    for guard in guards {
        command.args(["--guard", guard]);
    }
    let status = command
        .arg("--archive")
        .arg(tmp.path().join("archive"))
        .arg("--alerts")
        .arg(&alerts_path)
        .args([
            "--no-progress",
            "--replica",
            "none",
            "-w",
            &workers.to_string(),
        ])
        .status()
        .context("running vigil-guard")?;
    anyhow::ensure!(status.success(), "vigil-guard failed: {status}");
    // Detections: the event times at which alerts were raised.
    let mut detections: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for line in std::fs::read_to_string(&alerts_path)?.lines() {
        let alert: Alert = serde_json::from_str(line).context("reading vigil-guard's alerts")?;
        if alert.status == AlertStatus::Raised {
            let file = format!("{}/{}.csv", alert.source, alert.name);
            detections.entry(file).or_default().push(alert.ts);
        }
    }
    Ok(detections)
}

/// Detections per file from replaying each file's series through the guards in this process.
fn replay(
    files: &[(String, PathBuf)],
    guards: &[String],
) -> anyhow::Result<BTreeMap<String, Vec<i64>>> {
    let specs = vigil_pipelines::jobs::guard::registry::GuardParams::parse_all(guards)?;
    let mut detections = BTreeMap::new();
    for (name, path) in files {
        let limits = vigil_datasets::loaders::TextLimits {
            chunk_bytes: 1 << 30,
            ..Default::default()
        };
        let plan = vigil_datasets::loaders::plan_paths(std::slice::from_ref(path), limits)?;
        let loaded = vigil_datasets::loaders::load_all(&plan);
        let mut points: Vec<SeriesReading> = loaded
            .readings
            .iter()
            .map(|(r, _)| SeriesReading::from(r))
            .collect();
        points.sort_by(SeriesReading::guard_order);
        let mut hits = Vec::new();
        for spec in &specs {
            let alerts = spec.build().replay(&points);
            hits.extend(
                alerts
                    .iter()
                    .filter(|a| a.status == AlertStatus::Raised)
                    .map(|a| a.ts),
            );
        }
        detections.insert(name.clone(), hits);
    }
    Ok(detections)
}
