//! The archaeology job end to end: what the generator plants is found, the archive holds it,
//! and memory stays bounded however long the stream.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use clap::Parser;
use vigil_datasets::generator::{DeviceParams, device_truth};
use vigil_operators::archaeology::entanglements::Entanglement;
use vigil_operators::{Pattern, Record, Session};
use vigil_pipelines::cli::ArchaeologyArgs;
use vigil_pipelines::jobs::archaeology::run;
use vigil_pipelines::jobs::guard::Summary;
use vigil_pipelines::runtime::stop::Stop;

/// Every row of the archive's `table`.
fn read_table<R: Record>(archive: &Path) -> Vec<R> {
    vigil_tests::archive::read_records(&archive.join(R::TABLE))
}

fn run_args(args: &[&str]) -> Summary {
    let mut argv = vec!["vigil-archaeology", "--no-progress", "--replica", "none"];
    argv.extend_from_slice(args);
    let job = ArchaeologyArgs::try_parse_from(argv)
        .unwrap()
        .into_job()
        .unwrap();
    run(job, Stop::default()).expect("the archaeology job runs")
}

/// The share of `found` that is in `truth`, for the record.
fn precision(found: usize, true_found: usize) -> f64 {
    if found == 0 {
        1.0
    } else {
        true_found as f64 / found as f64
    }
}

#[test]
fn the_planted_patterns_pairs_and_sessions_are_all_found() {
    let spec = DeviceParams {
        devices: 60,
        ticks: 2_400,
        rooms: 4,
        ..DeviceParams::default()
    };
    let truth = device_truth(&spec);
    assert!(
        truth.sessions.len() >= 10,
        "{} meetings",
        truth.sessions.len()
    );
    assert!(!truth.pairs.is_empty());
    let input = format!(
        "gen:devices?devices={}&ticks={}&rooms={}",
        spec.devices, spec.ticks, spec.rooms
    );
    for workers in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let archive_arg = archive.display().to_string();
        let summary = run_args(&["-i", &input, "--archive", &archive_arg, "-w", workers]);
        let findings = summary.findings.clone().unwrap();

        // Sequences: every planted run is found, by every device that performs it.
        let sequences: Vec<&Pattern> = findings
            .patterns
            .iter()
            .filter(|p| p.kind == "sequence")
            .collect();
        for planted in &truth.sequences {
            let found = sequences.iter().find(|p| &p.items == planted);
            let found = found.unwrap_or_else(|| panic!("{planted:?} not found"));
            assert!(found.support >= spec.devices as u64 / 2, "{found:?}");
        }
        // The archive holds what the run reported.
        let archived: BTreeSet<Pattern> = read_table::<Pattern>(&archive).into_iter().collect();
        let reported: BTreeSet<Pattern> = findings.patterns.iter().cloned().collect();
        assert_eq!(archived, reported);

        // Entangled pairs: all found.
        let pairs: BTreeSet<(String, String)> = findings
            .entanglements
            .iter()
            .map(|e| (e.a.to_string(), e.b.to_string()))
            .collect();
        let planted: BTreeSet<(String, String)> = truth.pairs.iter().cloned().collect();
        let missing: Vec<_> = planted.difference(&pairs).collect();
        assert!(missing.is_empty(), "pairs not found: {missing:?}");
        assert_eq!(
            read_table::<Entanglement>(&archive).len(),
            findings.entanglements.len()
        );

        // Sessions: each meeting is one closed session of its room, exactly.
        let sessions: BTreeSet<(String, i64, i64, Vec<String>, u64)> =
            read_table::<Session>(&archive)
                .into_iter()
                .map(|s| {
                    assert!(!s.open, "every session is closed at the end: {s:?}");
                    (s.key, s.start, s.end, s.participants, s.events)
                })
                .collect();
        let meetings: BTreeSet<(String, i64, i64, Vec<String>, u64)> = truth
            .sessions
            .iter()
            .map(|m| {
                let participants = m.participants.clone();
                (m.room.clone(), m.start_ms, m.end_ms, participants, m.events)
            })
            .collect();
        let missing: Vec<_> = meetings.difference(&sessions).collect();
        assert!(missing.is_empty(), "meetings not found: {missing:?}");
        assert_eq!(findings.sessions, sessions.len() as u64);

        let true_sequences = sequences
            .iter()
            .filter(|p| truth.sequences.iter().any(|t| *t == p.items))
            .count();
        eprintln!(
            "-w {workers}: recall 1.0; precision: sequences {:.2} ({} found), pairs {:.2} ({} found), sessions {:.2} ({} found)",
            precision(sequences.len(), true_sequences),
            sequences.len(),
            precision(pairs.len(), planted.len()),
            pairs.len(),
            precision(sessions.len(), meetings.len()),
            sessions.len(),
        );
    }
}

/// Peak memory of a run of the binary over `ticks` ticks of 100 devices.
fn peak_rss(ticks: u64) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let status = Command::new(env!("CARGO_BIN_EXE_vigil-archaeology"))
        .args([
            "--no-progress",
            "--replica",
            "none",
            "-i",
            &format!("gen:devices?devices=100&ticks={ticks}&rooms=4"),
            "--archive",
            &dir.path().join("archive").display().to_string(),
            "--summary-json",
            &summary.display().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap();
    json["peak_rss_bytes"]
        .as_u64()
        .expect("the OS reports peak memory")
}

#[test]
fn memory_stays_bounded_as_the_stream_grows() {
    let short = peak_rss(2_000);
    let long = peak_rss(16_000);
    eprintln!(
        "peak memory: {} MiB over 2,000 ticks, {} MiB over 16,000 ticks (8x the events)",
        short >> 20,
        long >> 20
    );
    assert!(
        long < short + short / 2,
        "peak memory grew from {short} to {long} bytes with 8x the events"
    );
}

/// The sequential patterns of a run, as a set.
fn sequences_of(summary: &Summary) -> BTreeSet<Pattern> {
    let findings = summary.findings.as_ref().unwrap();
    findings
        .patterns
        .iter()
        .filter(|p| p.kind == "sequence")
        .cloned()
        .collect()
}

#[test]
fn a_backfill_in_two_halves_finds_the_patterns_of_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DeviceParams {
        devices: 40,
        ticks: 1_200,
        ..DeviceParams::default()
    };
    // The history, cut in two at a tick in the middle of the rituals.
    let events: Vec<_> = vigil_datasets::generator::device_events(&spec).collect();
    let cut = spec.tick_ts(600) + 1;
    let write = |name: &str, keep: &dyn Fn(i64) -> bool| {
        let path = dir.path().join(name);
        let mut out = String::new();
        for e in events.iter().filter(|e| keep(e.ts)) {
            out.push_str(&serde_json::to_string(e).unwrap());
            out.push('\n');
        }
        std::fs::write(&path, out).unwrap();
        path.display().to_string()
    };
    let first = write("first.ndjson", &|ts| ts < cut);
    let second = write("second.ndjson", &|ts| ts >= cut);
    let archive = |name: &str| dir.path().join(name).display().to_string();
    let config = dir.path().join("min.toml");
    std::fs::write(
        &config,
        "[sequences]\nmin_support = 1\nmin_occurrences = 1\n",
    )
    .unwrap();
    let config = config.display().to_string();

    let whole = run_args(&[
        "-i",
        &first,
        "-i",
        &second,
        "--archive",
        &archive("one"),
        "--config",
        &config,
    ]);
    let state = archive("state");
    for workers in ["1", "2"] {
        let state = format!("{state}-{workers}");
        let run_half = |input: &str, name: &str| {
            run_args(&[
                "-i",
                input,
                "--archive",
                &archive(name),
                "--config",
                &config,
                "--state",
                &state,
                "-w",
                workers,
            ])
        };
        run_half(&first, &format!("first-{workers}"));
        let halves = run_half(&second, &format!("second-{workers}"));
        assert_eq!(sequences_of(&halves), sequences_of(&whole), "-w {workers}");
    }
    // Without the carried state the second half alone finds less: the test can tell.
    let alone = run_args(&[
        "-i",
        &second,
        "--archive",
        &archive("alone"),
        "--config",
        &config,
    ]);
    assert_ne!(sequences_of(&alone), sequences_of(&whole));
}
