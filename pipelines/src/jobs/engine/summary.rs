//! What a run did: the summary every dataflow job prints and writes as JSON.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::jobs::engine::findings::Findings;

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Valid records read.
    pub events_in: u64,
    /// Telemetry rows made durable in the archive.
    pub archived: u64,
    /// Rows written to the SQL replica (upserted or deleted).
    pub replicated: u64,
    /// Alerts raised.
    pub alerts_raised: u64,
    /// Alerts cleared.
    pub alerts_cleared: u64,
    /// In a live run (Kafka input): how long after their event time raised alerts were sent,
    /// by the wall clock, as the 50th and 99th percentile in ms.
    pub alert_lag_ms: Option<(i64, i64)>,
    /// Dead letters (malformed, late or unusable input).
    pub errors: u64,
    /// Of the dead letters, how many were late.
    pub late: u64,
    /// Archive files written.
    pub files: u64,
    /// Archive bytes written.
    pub bytes: u64,
    /// Series the guards held state for (summed over guards).
    pub series: u64,
    /// Bytes of guard state (summed over guards and workers).
    pub guard_state_bytes: u64,
    /// Series forgotten: quiet past `--series-idle`, or to make room under `--max-series`.
    pub series_forgotten: u64,
    /// Readings not judged because every series held had an open alert at `--max-series`.
    pub series_refused: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Peak resident memory of the process, where the OS reports it.
    pub peak_rss_bytes: Option<u64>,
    /// CPU time the process used (user and system), where the OS reports it.
    pub cpu_seconds: Option<f64>,
    /// What pattern archaeology found, for an archaeology job.
    pub findings: Option<Findings>,
}

impl Summary {
    /// The summary as one JSON object, for scripts and the benchmark harness.
    pub fn to_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "events_in": self.events_in,
            "archived": self.archived,
            "replicated": self.replicated,
            "alerts_raised": self.alerts_raised,
            "alerts_cleared": self.alerts_cleared,
            "alert_lag_p50_ms": self.alert_lag_ms.map(|l| l.0),
            "alert_lag_p99_ms": self.alert_lag_ms.map(|l| l.1),
            "errors": self.errors,
            "late": self.late,
            "files": self.files,
            "bytes": self.bytes,
            "series": self.series,
            "guard_state_bytes": self.guard_state_bytes,
            "series_forgotten": self.series_forgotten,
            "series_refused": self.series_refused,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "events_per_second": self.events_per_second(),
            "peak_rss_bytes": self.peak_rss_bytes,
            "cpu_seconds": self.cpu_seconds,
        });
        if let (Some(findings), Some(object)) = (&self.findings, json.as_object_mut()) {
            object.insert("findings".into(), findings.to_json());
        }
        json
    }

    /// Records (valid and dead letters) per second of wall-clock time.
    pub fn events_per_second(&self) -> f64 {
        (self.events_in + self.errors) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(found) = &self.findings {
            return write!(
                f,
                "events in {}, patterns {}, entangled pairs {}, sessions {}, errors {} (late {}), elapsed {:.2}s, {:.0} ev/s",
                self.events_in,
                found.patterns.len(),
                found.entanglements.len(),
                found.sessions,
                self.errors,
                self.late,
                self.elapsed.as_secs_f64(),
                self.events_per_second()
            );
        }
        write!(
            f,
            "events in {}, archived {}, alerts raised {} / cleared {}, errors {} (late {}), elapsed {:.2}s, {:.0} ev/s",
            self.events_in,
            self.archived,
            self.alerts_raised,
            self.alerts_cleared,
            self.errors,
            self.late,
            self.elapsed.as_secs_f64(),
            self.events_per_second()
        )?;
        if let Some((p50, p99)) = self.alert_lag_ms {
            write!(f, ", alert lag p50 {p50} ms / p99 {p99} ms")?;
        }
        Ok(())
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) events_in: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) late: AtomicU64,
}

/// The process's peak resident set size (`VmHWM`), on Linux.
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The process's CPU time, user and system (`/proc/self/stat`, in clock ticks of 1/100 s).
pub(crate) fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (which ends with ')'): utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}
