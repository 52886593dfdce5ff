//! `vigil-datagen`: write the seeded generator's rocket telemetry or device events as NDJSON.
//!
//! ```text
//! vigil-datagen rocket --vehicles 1000 --ticks 250 --seed 42 --out rocket.ndjson --labels labels.json
//! vigil-datagen devices --devices 200 --ticks 3600 --out devices.ndjson
//! vigil-datagen devices --devices 200 --rooms 4 --ticks 3600 --out devices.ndjson --truth truth.json
//! ```
//!
//! `--labels` writes the injected rocket anomalies; `--truth` writes the planted device
//! structures (ritual sequences, entangled pairs and, with `--rooms`, the meetings as sessions).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use vigil_datasets::generator::{self, DeviceParams, RocketParams};

/// Writes vigil's seeded, deterministic telemetry as NDJSON, one reading per line.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Rocket telemetry: 8 metrics per vehicle per tick, with injected anomalies.
    Rocket {
        /// Number of vehicles (`veh-0`, `veh-1`, …).
        #[arg(long, default_value_t = RocketParams::default().vehicles)]
        vehicles: usize,
        /// Expected anomalies per series per tick.
        #[arg(long, default_value_t = RocketParams::default().anomaly_rate)]
        anomaly_rate: f64,
        /// Also write the injected anomalies to this file, as a JSON array.
        #[arg(long)]
        labels: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Device events (`BREATH`, `SPIRAL`, `BLOOM`, `TOUCH`, `SACRED_PHRASE`) with intensities,
    /// and with `--rooms` the guests' meetings (`GATHER`).
    Devices {
        /// Number of devices (`dev-0`, `dev-1`, …).
        #[arg(long, default_value_t = DeviceParams::default().devices)]
        devices: usize,
        /// Number of rooms holding meetings (`room-0`, …), each with its guests
        /// (`guest-0-0`, …); 0 plants none.
        #[arg(long, default_value_t = DeviceParams::default().rooms)]
        rooms: usize,
        /// Also write the planted structures (sequences, pairs, sessions) to this file, as JSON.
        #[arg(long)]
        truth: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
}

/// Options both generators share.
#[derive(Args)]
struct Common {
    /// Number of ticks.
    #[arg(long, default_value_t = RocketParams::default().ticks)]
    ticks: u64,
    /// Seed of every draw: the same seed writes the same file.
    #[arg(long, default_value_t = RocketParams::default().seed)]
    seed: u64,
    /// Event time between ticks, ms.
    #[arg(long, default_value_t = RocketParams::default().interval_ms)]
    interval_ms: i64,
    /// Event time of the first tick, epoch ms (default 2026-01-01T00:00:00Z).
    #[arg(long, default_value_t = RocketParams::default().start_ms)]
    start_ms: i64,
    /// The NDJSON file to write.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let started = Instant::now();
    let (what, out, rows) = match cli.command {
        Command::Rocket {
            vehicles,
            anomaly_rate,
            labels,
            common,
        } => {
            let spec = RocketParams {
                vehicles,
                ticks: common.ticks,
                interval_ms: common.interval_ms,
                start_ms: common.start_ms,
                seed: common.seed,
                anomaly_rate,
            };
            spec.validate()?;
            let rows = write_file(&common.out, |w| generator::write_rocket_ndjson(&spec, w))?;
            if let Some(path) = labels {
                write_file(&path, |w| {
                    serde_json::to_writer_pretty(&mut *w, &generator::rocket_labels(&spec))?;
                    w.write_all(b"\n")
                })?;
            }
            ("rocket", common.out, rows)
        }
        Command::Devices {
            devices,
            rooms,
            truth,
            common,
        } => {
            let spec = DeviceParams {
                devices,
                ticks: common.ticks,
                interval_ms: common.interval_ms,
                start_ms: common.start_ms,
                seed: common.seed,
                rooms,
            };
            spec.validate()?;
            let rows = write_file(&common.out, |w| generator::write_device_ndjson(&spec, w))?;
            if let Some(path) = truth {
                write_file(&path, |w| {
                    serde_json::to_writer_pretty(&mut *w, &generator::device_truth(&spec))?;
                    w.write_all(b"\n")
                })?;
            }
            ("devices", common.out, rows)
        }
    };
    let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "vigil-datagen {what}: {rows} rows, {bytes} bytes, {seconds:.2} s -> {}",
        out.display()
    );
    Ok(())
}

/// Creates `path`, hands a buffered writer to `write`, and flushes once at the end.
fn write_file<T>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<T>,
) -> anyhow::Result<T> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let result = write(&mut writer).with_context(|| format!("writing {}", path.display()))?;
    writer
        .flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(result)
}
