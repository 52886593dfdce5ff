//! The job configuration file: the sample in deploy/ parses, bad files give errors that name
//! the file and the key, and `--list-guards` shows every guard with its reaction.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::path::{Path, PathBuf};

use clap::Parser;
use vigil_pipelines::cli::GuardArgs;
use vigil_pipelines::config::JobConfig;
use vigil_pipelines::jobs::engine::settings::Settings;
use vigil_pipelines::jobs::guard::registry::{CATALOGUE, Severity, Topic};
use vigil_pipelines::jobs::guard::{AlertsOut, GuardJob, InputParams};

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/vigil-guard.toml")
}

#[test]
fn the_sample_config_parses_into_a_job() {
    let path = sample();
    let mut job = GuardJob::default();
    JobConfig::load(&path)
        .unwrap()
        .apply(&path, &mut job)
        .unwrap();
    assert_eq!(job.settings.workers, 2);
    let InputParams::Paths(paths) = &job.settings.input else {
        panic!("the sample reads files: {:?}", job.settings.input)
    };
    assert!(paths.iter().all(|p| p.exists()), "{paths:?}");
    let names: Vec<&str> = job.guards.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "anomaly",
            "overheat",
            "jump",
            "silent-sensor",
            "sequence",
            "unknown-source",
            "auth-failures",
            "late-records",
            "schema-violations"
        ]
    );
    assert_eq!(job.guards[1].reaction.severity, Severity::Critical);
    // The replica is the embedded SQLite file beside the archive, relative to the file.
    let replica = job
        .settings
        .replica
        .as_ref()
        .expect("the sample configures a replica");
    assert_eq!(
        replica.url,
        vigil_pipelines::connect::replica::ReplicaUrl::Sqlite(
            path.parent().unwrap().join("../vigil-replica.db")
        )
    );
    assert_eq!(replica.batch_rows, 100_000);
    assert!(!replica.replicate_payload && !replica.migrate);
    assert!(
        job.guards
            .iter()
            .all(|g| !g.reaction.description.is_empty())
    );
    for g in &job.guards {
        let topic = if g.params.per_source() {
            Topic::SecurityGuardFeed
        } else {
            Topic::TelemetryAlerts
        };
        assert_eq!(g.reaction.topic, topic, "{}", g.name);
    }
}

/// Writes `text` as a config file and returns the error loading it gives.
fn error_of(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(&path, text).unwrap();
    let args =
        GuardArgs::try_parse_from(["vigil-guard", "--config", path.to_str().unwrap()]).unwrap();
    let err = format!("{:#}", args.into_job().expect_err("a bad config"));
    assert!(err.contains("job.toml"), "the error names the file: {err}");
    err
}

const REACTION: &str = r#"
[guard.reaction]
topic = "telemetry-alerts"
severity = "warning"
description = "d"
"#;

#[test]
fn bad_configs_name_the_file_and_the_key() {
    let err = error_of(&format!("[[guard]]\n[guard.zscore]\nwindw = 5\n{REACTION}"));
    assert!(err.contains("windw"), "{err}");

    let err = error_of("[[guard]]\n[guard.zscore]\nwindow = 5\n");
    assert!(err.contains("reaction"), "{err}");

    let err = error_of(&format!(
        "[[guard]]\n[guard.zscore]\nwindow = -5\n{REACTION}"
    ));
    assert!(err.contains("window"), "{err}");

    let err = error_of(&format!(
        "[[guard]]\n[guard.ewma]\nthreshold = -1.0\n{REACTION}"
    ));
    assert!(
        err.contains("threshold") && err.contains("positive"),
        "{err}"
    );

    let err = error_of(&format!("[[guard]]\n{REACTION}"));
    assert!(err.contains("no guard table"), "{err}");

    let err = error_of(&format!(
        "[[guard]]\n[guard.zscore]\n[guard.mad]\n{REACTION}"
    ));
    assert!(err.contains("several guard tables"), "{err}");

    let err = error_of(
        "[[guard]]\n[guard.zscore]\n[guard.reaction]\ntopic = \"pager\"\nseverity = \"warning\"\ndescription = \"d\"\n",
    );
    assert!(err.contains("pager"), "{err}");

    let err = error_of("wrokers = 2\n");
    assert!(err.contains("wrokers"), "{err}");

    let err = error_of("[input]\nkafka = [\"kafka://b:9092/t?grup=g\"]\n");
    assert!(err.contains("input.kafka") && err.contains("grup"), "{err}");

    let err = error_of("[input]\ngenerator = \"gen:rocket\"\nkafka = [\"kafka://b:9092/t\"]\n");
    assert!(err.contains("more than one"), "{err}");
}

#[test]
fn kafka_input_alerts_and_spill_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(
        &path,
        "[input]\nkafka = [\"kafka://b:9092/telemetry?group=g&stop=end\"]\nstate = \"state\"\n\
         [alerts]\noutput = \"kafka://b:9092\"\nspill = \"spill\"\n",
    )
    .unwrap();
    let args =
        GuardArgs::try_parse_from(["vigil-guard", "--config", path.to_str().unwrap()]).unwrap();
    let job = args.into_job().unwrap();
    let InputParams::Kafka(input) = &job.settings.input else {
        panic!("a Kafka input: {:?}", job.settings.input);
    };
    assert_eq!(
        (input.topics.as_slice(), input.group.as_str()),
        (&["telemetry".to_owned()][..], "g")
    );
    assert!(matches!(job.alerts, AlertsOut::Kafka(_)));
    assert_eq!(job.settings.spill_dir, dir.path().join("spill"));
    assert_eq!(job.state_dir, dir.path().join("state"));
}

#[test]
fn flags_override_the_config() {
    let path = sample();
    let args = GuardArgs::try_parse_from([
        "vigil-guard",
        "--config",
        path.to_str().unwrap(),
        "-w",
        "3",
        "--guard",
        "zscore",
    ])
    .unwrap();
    let job = args.into_job().unwrap();
    assert_eq!(job.settings.workers, 3);
    assert_eq!(job.guards.len(), 1);
    assert_eq!(job.guards[0].name, "zscore");
}

#[test]
fn list_guards_shows_every_guard_with_its_reaction() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil-guard"))
        .arg("--list-guards")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for entry in CATALOGUE {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{:<13} ", entry.kind)))
            .unwrap_or_else(|| panic!("{} is listed: {text}", entry.kind));
        assert!(line.contains(entry.topic.as_str()) && line.contains(entry.severity.as_str()));
    }

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil-guard"))
        .args(["--config", sample().to_str().unwrap(), "--list-guards"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("overheat") && text.contains("critical"),
        "{text}"
    );
}

#[test]
fn scores_must_name_guards_of_the_job() {
    let args = GuardArgs::try_parse_from(["vigil-guard", "--guard", "zscore", "--scores", "zscor"])
        .unwrap();
    let err = format!("{:#}", args.into_job().expect_err("an unknown guard"));
    assert!(err.contains("zscor") && err.contains("zscore"), "{err}");
    let args =
        GuardArgs::try_parse_from(["vigil-guard", "--guard", "ewma", "--scores", "ewma"]).unwrap();
    assert!(args.into_job().is_ok());
}

#[test]
fn the_archaeology_sample_parses_and_bad_keys_are_named() {
    use vigil_pipelines::config::ArchaeologyConfig;
    use vigil_pipelines::jobs::archaeology::{ArchaeologyParams, SessionKey};

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/vigil-archaeology.toml");
    let mut settings = Settings::default();
    let mut params = ArchaeologyParams::default();
    ArchaeologyConfig::load(&path)
        .unwrap()
        .apply(&path, &mut settings, &mut params)
        .unwrap();
    assert_eq!(settings.workers, 2);
    assert_eq!(params.sequences.max_gap_ms, 3_000);
    assert_eq!(params.entanglements.delta_ms, 1_500);
    assert_eq!(params.sessions.by, SessionKey::Room("room".into()));
    assert_eq!(params.field.window_ms, 60_000);
    assert!(
        settings.replica.is_some(),
        "the sample configures a replica"
    );
    // The sample shows the defaults.
    let defaults = ArchaeologyParams::default();
    assert_eq!(params.sequences, defaults.sequences);
    assert_eq!(params.motifs, defaults.motifs);
    assert_eq!(params.entanglements, defaults.entanglements);

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    for (text, expected) in [
        ("[sequences]\nmax_gapp = \"3s\"\n", "max_gapp"),
        ("[sequences]\nmax_len = 1\n", "max_len"),
        ("[sessions]\nby = \"hall\"\n", "sessions.by"),
        ("[entanglements]\ndelta = \"soon\"\n", "entanglements.delta"),
        ("[motifs]\nsegments = 5\n", "motifs"),
        ("[replica]\nurl = \"mysql://x\"\n", "replica.url"),
        ("[replica]\nbulk = \"fast\"\n", "replica.bulk"),
    ] {
        std::fs::write(&bad, text).unwrap();
        let err = ArchaeologyConfig::load(&bad)
            .and_then(|c| {
                c.apply(
                    &bad,
                    &mut Settings::default(),
                    &mut ArchaeologyParams::default(),
                )
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected) && err.contains("bad.toml"), "{err}");
    }
}

#[test]
fn the_line_limit_comes_from_the_config_and_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(&path, "[input]\nmax_line_bytes = 4096\n").unwrap();
    let job = |flags: &[&str]| {
        let mut args = vec!["vigil-guard", "--config", path.to_str().unwrap()];
        args.extend(flags);
        GuardArgs::try_parse_from(args).unwrap().into_job().unwrap()
    };
    assert_eq!(GuardJob::default().settings.max_line_bytes, 1 << 20);
    assert_eq!(job(&[]).settings.max_line_bytes, 4096);
    assert_eq!(
        job(&["--max-line-bytes", "100"]).settings.max_line_bytes,
        100
    );
    assert!(GuardArgs::try_parse_from(["vigil-guard", "--max-line-bytes", "0"]).is_err());

    let err = error_of("[input]\nmax_line_bytes = 0\n");
    assert!(err.contains("input.max_line_bytes"), "{err}");
}

#[test]
fn every_guard_kind_is_a_guard_table_and_a_misspelt_one_is_named() {
    use vigil_pipelines::jobs::guard::registry::GuardParams;

    // The job file and `--guard` read a kind's parameters alike.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(
        &path,
        format!("[[guard]]\n[guard.seasonal]\nperiod = \"7d\"\nbuckets = 12\n{REACTION}"),
    )
    .unwrap();
    let mut job = GuardJob::default();
    JobConfig::load(&path)
        .unwrap()
        .apply(&path, &mut job)
        .unwrap();
    assert_eq!(
        job.guards[0].params,
        GuardParams::parse("seasonal:period=7d,buckets=12").unwrap()
    );

    let err = error_of(&format!("[[guard]]\n[guard.zscor]\n{REACTION}"));
    assert!(
        err.contains("zscor") && err.contains("[guard.zscore]"),
        "{err}"
    );
    for entry in CATALOGUE {
        assert!(err.contains(&format!("[guard.{}]", entry.kind)), "{err}");
    }
    let err = error_of(&format!(
        "[[guard]]\n[guard.seasonal]\nperiod = \"soon\"\n{REACTION}"
    ));
    assert!(
        err.contains("[guard.seasonal]: period = \"soon\": not a duration"),
        "{err}"
    );
}
