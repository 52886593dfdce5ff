//! NAB, the Numenta Anomaly Benchmark: its labelled anomaly windows and its scoring rules.
//!
//! The rules follow Lavin & Ahmad, "Evaluating Real-time Anomaly Detection Algorithms — the
//! Numenta Anomaly Benchmark" (2015), as NAB's own scorer applies them:
//! - each labelled anomaly has a window of rows around it; the first 15 % of a file (at most
//!   750 rows) is a probationary period whose rows are not scored;
//! - a detection inside a window scores `A_TP · σ(position)`, where the scaled sigmoid gives
//!   ≈ 1 at the window's left edge and 0 at its right edge; only the best (earliest) detection of
//!   a window counts, and a window without one costs `A_FN`;
//! - every detection outside a window costs `A_FP` times the scaled sigmoid of how far past the
//!   previous window it is (a full `A_FP` if there is none, or it is far away);
//! - scores are normalised so that detecting nothing gives 0 and detecting every window at its
//!   left edge gives 100, per file and over all files together.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

/// A scoring profile: the weights of true positives, false positives and false negatives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Profile {
    /// Weight of a detected window (`A_TP`).
    pub true_positive: f64,
    /// Weight of a detection outside every window (`A_FP`).
    pub false_positive: f64,
    /// Weight of a missed window (`A_FN`).
    pub false_negative: f64,
}

impl Profile {
    /// NAB's standard profile: `A_TP = 1`, `A_FP = 0.11`, `A_FN = 1`.
    pub const STANDARD: Profile = Profile {
        true_positive: 1.0,
        false_positive: 0.11,
        false_negative: 1.0,
    };
}

/// The share of a file, and the most rows, that make up its probationary period.
const PROBATION_SHARE: f64 = 0.15;
const PROBATION_MAX_ROWS: f64 = 0.15 * 5000.0;

/// NAB's scaled sigmoid of a position relative to a window: ≈ 0.98661 at -1 (left edge), 0 at
/// 0 (right edge), ≈ -0.98661 at 1, and -1 from 3 on.
///
/// # Examples
/// ```
/// use vigil_datasets::nab::scaled_sigmoid;
/// assert!((scaled_sigmoid(-1.0) - 0.98661).abs() < 1e-5);
/// assert!((scaled_sigmoid(-0.5) - 0.84828).abs() < 1e-5);
/// assert_eq!(scaled_sigmoid(0.0), 0.0);
/// assert_eq!(scaled_sigmoid(3.0), -1.0);
/// ```
pub fn scaled_sigmoid(position: f64) -> f64 {
    if position >= 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * position).exp()) - 1.0
    }
}

/// How one file (or a set of files, summed) scored.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Score {
    /// The raw score: window rewards and penalties plus false-positive costs.
    pub raw: f64,
    /// What detecting nothing scores.
    pub null: f64,
    /// What detecting every window at its left edge scores.
    pub perfect: f64,
    /// Scored windows (those with rows after the probationary period).
    pub windows: usize,
    /// Windows detected.
    pub detected: usize,
    /// Detections outside every window (after the probationary period).
    pub false_positives: usize,
}

impl Score {
    /// The normalised score: 0 for detecting nothing, 100 for the perfect detector.
    pub fn normalized(&self) -> f64 {
        let range = self.perfect - self.null;
        if range == 0.0 {
            0.0
        } else {
            100.0 * (self.raw - self.null) / range
        }
    }

    /// Adds another file's score, for a corpus total.
    pub fn add(&mut self, other: &Score) {
        self.raw += other.raw;
        self.null += other.null;
        self.perfect += other.perfect;
        self.windows += other.windows;
        self.detected += other.detected;
        self.false_positives += other.false_positives;
    }
}

/// Scores the detections made on one file. `timestamps` are the file's rows in order,
/// `detections` the event times at which the detector fired (each is matched to the row with
/// that time, or the first row after it), `windows` the labelled windows as (start, end)
/// event times, inclusive.
pub fn score(
    timestamps: &[i64],
    detections: &[i64],
    windows: &[(i64, i64)],
    profile: &Profile,
) -> Score {
    let rows = timestamps.len();
    let probation = (PROBATION_SHARE * rows as f64)
        .floor()
        .min(PROBATION_MAX_ROWS) as usize;
    let max_tp = scaled_sigmoid(-1.0);
    let mut windows = windows.to_vec();
    windows.sort_unstable();

    // Per row: the window it is in, and what a detection there would score.
    let mut in_window: Vec<Option<usize>> = vec![None; rows];
    let mut sweep = vec![0.0; rows];
    let mut next_window = 0;
    // The current window (index, right row, width in rows) and the previous one (right, width).
    let mut current: Option<(usize, usize, f64)> = None;
    let mut previous: Option<(usize, f64)> = None;
    for (i, &t) in timestamps.iter().enumerate() {
        // A window that ends before this row holds no row at all: nothing can detect it.
        while current.is_none() && next_window < windows.len() && windows[next_window].1 < t {
            next_window += 1;
        }
        if current.is_none() && next_window < windows.len() && t >= windows[next_window].0 {
            let end = windows[next_window].1;
            let right = timestamps.partition_point(|&x| x <= end).max(i + 1) - 1;
            current = Some((next_window, right, (right - i + 1) as f64));
            next_window += 1;
        }
        match current {
            Some((window, right, width)) => {
                let position = -((right - i + 1) as f64) / width;
                sweep[i] = scaled_sigmoid(position) * profile.true_positive / max_tp;
                in_window[i] = Some(window);
                if i == right {
                    previous = Some((right, width));
                    current = None;
                }
            }
            None => {
                let position = match previous {
                    Some((right, width)) if width > 1.0 => (i - right) as f64 / (width - 1.0),
                    _ => 3.0,
                };
                sweep[i] = scaled_sigmoid(position) * profile.false_positive;
            }
        }
    }

    // Windows with rows after the probationary period are scored; each starts as missed.
    let mut parts: BTreeMap<usize, f64> = in_window[probation.min(rows)..]
        .iter()
        .flatten()
        .map(|&w| (w, -profile.false_negative))
        .collect();
    let mut hit_rows: Vec<usize> = detections
        .iter()
        .map(|&t| timestamps.partition_point(|&x| x < t))
        .filter(|&i| i < rows && i >= probation)
        .collect();
    hit_rows.sort_unstable();
    hit_rows.dedup();
    let mut fp_cost = 0.0;
    let mut false_positives = 0;
    for i in hit_rows {
        match in_window[i] {
            Some(w) => {
                if let Some(part) = parts.get_mut(&w) {
                    *part = part.max(sweep[i]);
                }
            }
            None => {
                fp_cost += sweep[i];
                false_positives += 1;
            }
        }
    }
    let scored = parts.len();
    Score {
        raw: fp_cost + parts.values().sum::<f64>(),
        null: -profile.false_negative * scored as f64,
        perfect: profile.true_positive * scored as f64,
        windows: scored,
        detected: parts
            .values()
            .filter(|&&v| v > -profile.false_negative)
            .count(),
        false_positives,
    }
}

/// Reads NAB's `combined_windows.json`: file (relative to the corpus root, e.g.
/// `realKnownCause/nyc_taxi.csv`) → windows as (start, end) epoch milliseconds, UTC.
pub fn load_windows(path: &Path) -> anyhow::Result<BTreeMap<String, Vec<(i64, i64)>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the NAB windows file {}", path.display()))?;
    let raw: BTreeMap<String, Vec<[String; 2]>> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not NAB's windows JSON", path.display()))?;
    raw.into_iter()
        .map(|(file, windows)| {
            let windows = windows
                .iter()
                .map(|[start, end]| {
                    let parse = |t: &str| {
                        vigil_operators::time::parse_ts(t).with_context(|| {
                            format!(
                                "{}: {file} has a window time {t:?} that is not a time",
                                path.display()
                            )
                        })
                    };
                    Ok((parse(start)?, parse(end)?))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok((file, windows))
        })
        .collect()
}

/// The row timestamps of a NAB CSV file (`timestamp,value`), in file order.
pub fn load_timestamps(path: &Path) -> anyhow::Result<Vec<i64>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the NAB file {}", path.display()))?;
    text.lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let time = line.split(',').next().unwrap_or_default();
            vigil_operators::time::parse_ts(time).with_context(|| {
                format!("{}:{}: {time:?} is not a timestamp", path.display(), i + 2)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100 rows one minute apart; one window over rows 40..=59.
    fn file() -> (Vec<i64>, Vec<(i64, i64)>) {
        let ts: Vec<i64> = (0..100).map(|i| i * 60_000).collect();
        (ts.clone(), vec![(ts[40], ts[59])])
    }

    #[test]
    fn null_and_perfect_detectors_score_0_and_100() {
        let (ts, windows) = file();
        let p = Profile::STANDARD;
        let null = score(&ts, &[], &windows, &p);
        assert_eq!(null.normalized(), 0.0);
        assert_eq!((null.windows, null.detected), (1, 0));
        let perfect = score(&ts, &[ts[40]], &windows, &p);
        assert!((perfect.normalized() - 100.0).abs() < 1e-9);
        // Later detections in the same window add nothing; the best one counts.
        let twice = score(&ts, &[ts[40], ts[55]], &windows, &p);
        assert_eq!(twice, perfect);
    }

    #[test]
    fn late_detections_earn_less_and_false_positives_cost() {
        let (ts, windows) = file();
        let p = Profile::STANDARD;
        // Halfway: position -(59 - 50 + 1)/20 = -0.5.
        let half = score(&ts, &[ts[50]], &windows, &p);
        let expected = scaled_sigmoid(-0.5) / scaled_sigmoid(-1.0);
        assert!((half.raw - expected).abs() < 1e-12);
        // One row past the window's right edge: a small cost, far away a full A_FP.
        let near = score(&ts, &[ts[60]], &windows, &p);
        let far = score(&ts, &[ts[99]], &windows, &p);
        assert_eq!(near.false_positives, 1);
        assert!(near.raw < -1.0 && near.raw > -1.0 - p.false_positive);
        let cost = p.false_positive * scaled_sigmoid(40.0 / 19.0);
        assert!((far.raw - (-1.0 + cost)).abs() < 1e-12);
        // Before any window: a full A_FP.
        let early = score(&ts, &[ts[20]], &windows, &p);
        assert!((early.raw - (-1.0 - p.false_positive)).abs() < 1e-12);
    }

    #[test]
    fn the_probationary_period_is_not_scored() {
        let (ts, windows) = file();
        // 15 rows of probation: a detection at row 10 counts for nothing.
        let s = score(&ts, &[ts[10]], &windows, &Profile::STANDARD);
        assert_eq!((s.false_positives, s.raw), (0, -1.0));
        // A window wholly inside the probationary period is not scored at all.
        let s = score(&ts, &[], &[(ts[2], ts[8])], &Profile::STANDARD);
        assert_eq!(s.windows, 0);
    }

    #[test]
    fn a_window_between_rows_is_not_scored_and_does_not_shift_the_next() {
        let (ts, windows) = file();
        // A window that falls between two rows, before the labelled one.
        let with_empty = [(ts[30] + 1, ts[30] + 2), windows[0]];
        let p = Profile::STANDARD;
        let perfect = score(&ts, &[ts[40]], &with_empty, &p);
        assert_eq!((perfect.windows, perfect.detected), (1, 1));
        assert!((perfect.normalized() - 100.0).abs() < 1e-9);
        // A detection at row 31 lies outside every window.
        assert_eq!(score(&ts, &[ts[31]], &with_empty, &p).false_positives, 1);
    }
}
