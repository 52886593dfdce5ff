//! The guard suite end to end: a backfill of recorded data and a generator-driven run give the
//! same alerts with every statistical guard on; security guards reach the security feed.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::io::Write;
use std::path::Path;

use vigil_datasets::generator::{RocketParams, write_rocket_ndjson};
use vigil_operators::{AlertStatus, Reading};
use vigil_pipelines::jobs::guard::{AlertsOut, GuardJob, InputParams, run};
use vigil_pipelines::runtime::stop::Stop;
use vigil_tests::archive::read_alerts;
use vigil_tests::jobs::guard_job;

const STATISTICAL: [&str; 9] = [
    "zscore",
    "ewma",
    "mad",
    "rate",
    "level_shift",
    "seasonal:period=1h",
    "composite",
    "silence",
    "threshold:name=temp_c,max=30",
];

fn job(input: InputParams, dir: &Path, name: &str, guards: &[&str], workers: usize) -> GuardJob {
    let mut job = guard_job(input, &dir.join(format!("archive-{name}")), guards, workers);
    job.alerts = AlertsOut::File(dir.join(format!("{name}.ndjson")));
    // Small units, so that every worker reads part of even the small inputs here.
    job.settings.chunk_bytes = 4 << 10;
    job
}

#[test]
fn backfill_and_generator_give_identical_alerts() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = RocketParams {
        vehicles: 6,
        ticks: 600,
        interval_ms: 10_000,
        anomaly_rate: 0.01,
        ..RocketParams::default()
    };
    let file = tmp.path().join("rocket.ndjson");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    write_rocket_ndjson(&spec, &mut out).unwrap();
    out.flush().unwrap();
    drop(out);
    let generator = format!(
        "gen:rocket?vehicles={}&ticks={}&interval_ms={}&anomaly_rate={}",
        spec.vehicles, spec.ticks, spec.interval_ms, spec.anomaly_rate
    );

    let live = job(
        InputParams::Generator(generator),
        tmp.path(),
        "live",
        &STATISTICAL,
        2,
    );
    let summary = run(live, Stop::default()).unwrap();
    assert!(summary.alerts_raised > 20, "{summary}");
    for workers in [1, 2] {
        let name = format!("backfill-{workers}");
        let backfill = job(
            InputParams::Paths(vec![file.clone()]),
            tmp.path(),
            &name,
            &STATISTICAL,
            workers,
        );
        run(backfill, Stop::default()).unwrap();
        assert_eq!(
            std::fs::read(tmp.path().join("live.ndjson")).unwrap(),
            std::fs::read(tmp.path().join(format!("{name}.ndjson"))).unwrap(),
            "a backfill at {workers} workers gives the generator's alerts byte for byte"
        );
    }
    let all = read_alerts(&tmp.path().join("live.ndjson"));
    for guard in ["zscore", "ewma", "mad", "rate", "composite", "threshold"] {
        assert!(
            all.iter()
                .any(|a| a.guard == guard && a.status == AlertStatus::Raised),
            "{guard} raises on the injected anomalies"
        );
    }
}

#[test]
fn security_guards_reach_the_security_feed() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input.ndjson");
    let mut lines = Vec::new();
    for s in 0..300i64 {
        let ts = 1_767_225_600_000 + s * 1000;
        // veh-1 skips seq 100..102; veh-2 is clean; rogue-7 is not registered.
        if !(100..103).contains(&s) {
            lines.push(
                serde_json::to_string(
                    &Reading::new("veh-1", "temp_c", ts, 20.0).with_seq(s as u64),
                )
                .unwrap(),
            );
        }
        lines.push(
            serde_json::to_string(&Reading::new("veh-2", "temp_c", ts, 20.0).with_seq(s as u64))
                .unwrap(),
        );
        if s == 150 {
            lines.push(serde_json::to_string(&Reading::new("rogue-7", "temp_c", ts, 1.0)).unwrap());
        }
        if (200..212).contains(&s) {
            let mut failure = Reading::new("veh-2", "AUTH_FAILURE", ts + 1, 1.0);
            failure.kind = vigil_operators::Kind::Event;
            lines.push(serde_json::to_string(&failure).unwrap());
        }
        if s == 250 {
            // Far behind the watermark, and a line that is not JSON.
            lines.push(
                serde_json::to_string(&Reading::new("veh-2", "temp_c", ts - 120_000, 1.0)).unwrap(),
            );
            lines.push("{not json".to_owned());
        }
    }
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let guards = [
        "sequence",
        "unknown_source:registry=veh-*",
        "auth_failures",
        "late_records",
        "schema_violations",
    ];
    let j = job(
        InputParams::Paths(vec![input.clone()]),
        tmp.path(),
        "security",
        &guards,
        2,
    );
    let summary = run(j, Stop::default()).unwrap();
    assert_eq!((summary.late, summary.errors), (1, 2), "{summary}");
    let raised: Vec<(String, String)> = read_alerts(&tmp.path().join("security.ndjson"))
        .into_iter()
        .filter(|a| a.status == AlertStatus::Raised)
        .inspect(|a| assert_eq!(a.reaction, "security-guard-feed"))
        .map(|a| (a.guard.to_string(), a.source.to_string()))
        .collect();
    for (guard, source) in [
        ("sequence", "veh-1"),
        ("unknown_source", "rogue-7"),
        ("auth_failures", "veh-2"),
        ("late_records", "veh-2"),
        ("schema_violations", input.to_str().unwrap()),
    ] {
        assert!(
            raised.iter().any(|(g, s)| g == guard && s == source),
            "{guard} on {source}: {raised:?}"
        );
    }
    assert_eq!(raised.len(), 5, "nothing else: {raised:?}");
}

#[test]
fn rate_of_change_flags_engine_events_of_a_real_launch() {
    // SES-11 (SpaceX webcast telemetry, 1 Hz, committed under datasets/spacex) with its flight
    // events as `event` records.
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/spacex/ses-11.ndjson");
    let events: Vec<Reading> = std::fs::read_to_string(&data)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Reading>(l).unwrap())
        .filter(|r| r.kind == vigil_operators::Kind::Event)
        .collect();
    let at = |name: &str| events.iter().find(|e| e.name == name).unwrap().ts;
    let tmp = tempfile::tempdir().unwrap();
    let j = job(
        InputParams::Paths(vec![data]),
        tmp.path(),
        "launch",
        &["rate:order=2"],
        1,
    );
    run(j, Stop::default()).unwrap();
    let raised: Vec<i64> = read_alerts(&tmp.path().join("launch.ndjson"))
        .into_iter()
        .filter(|a| a.status == AlertStatus::Raised && a.name == "velocity_mps")
        .map(|a| a.ts)
        .collect();
    for event in ["MECO", "ENTRY_START"] {
        let t = at(event);
        let error = raised.iter().map(|r| (r - t).abs()).min().unwrap();
        assert!(
            error <= 2_000,
            "{event} flagged within 2 s (off by {error} ms): {raised:?}"
        );
    }
    assert!(
        raised.len() <= 6,
        "few alerts over the whole flight: {raised:?}"
    );
}

#[test]
fn silence_is_decided_the_same_at_any_worker_count() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input.ndjson");
    let mut lines = Vec::new();
    for s in 0..300i64 {
        let ts = 1_767_225_600_000 + s * 1000;
        for source in ["veh-1", "veh-2", "veh-3"] {
            // veh-1 stops at 100 s for good; veh-3 pauses from 150 s to 200 s.
            let quiet =
                (source == "veh-1" && s >= 100) || (source == "veh-3" && (150..200).contains(&s));
            if !quiet {
                lines.push(
                    serde_json::to_string(&Reading::new(source, "temp_c", ts, 20.0)).unwrap(),
                );
            }
        }
    }
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    for workers in [1, 2, 3] {
        let name = format!("silence-{workers}");
        let j = job(
            InputParams::Paths(vec![input.clone()]),
            tmp.path(),
            &name,
            &["silence"],
            workers,
        );
        run(j, Stop::default()).unwrap();
    }
    let one = std::fs::read(tmp.path().join("silence-1.ndjson")).unwrap();
    for workers in [2, 3] {
        assert_eq!(
            one,
            std::fs::read(tmp.path().join(format!("silence-{workers}.ndjson"))).unwrap()
        );
    }
    let got: Vec<(String, AlertStatus, i64)> = read_alerts(&tmp.path().join("silence-1.ndjson"))
        .into_iter()
        .map(|a| {
            (
                a.source.to_string(),
                a.status,
                (a.ts - 1_767_225_600_000) / 1000,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("veh-1".to_owned(), AlertStatus::Raised, 104),
            ("veh-3".to_owned(), AlertStatus::Raised, 154),
            ("veh-3".to_owned(), AlertStatus::Cleared, 200),
        ]
    );
}
