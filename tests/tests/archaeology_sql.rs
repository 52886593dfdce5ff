//! Archaeology over history: what `vigil-archaeology` archives, vigil-sql queries.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use clap::Parser;
use vigil_pipelines::cli::ArchaeologyArgs;
use vigil_pipelines::jobs::archaeology::run;
use vigil_pipelines::runtime::stop::Stop;
use vigil_tests::archive::{sql, sql_count, strings};

#[test]
fn the_archaeology_tables_answer_sql() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let job = ArchaeologyArgs::try_parse_from([
        "vigil-archaeology",
        "--no-progress",
        "--replica",
        "none",
        "-i",
        "gen:devices?devices=40&ticks=1200&rooms=3",
        "--archive",
        &archive.display().to_string(),
        "-w",
        "2",
    ])
    .unwrap()
    .into_job()
    .unwrap();
    let summary = run(job, Stop::default()).unwrap();
    let findings = summary.findings.unwrap();
    let sequences = findings
        .patterns
        .iter()
        .filter(|p| p.kind == "sequence")
        .count();
    assert!(sequences > 0);
    assert_eq!(
        sql_count(
            &archive,
            "SELECT count(*) FROM patterns WHERE kind = 'sequence'"
        ),
        sequences as i64
    );
    assert_eq!(
        sql_count(&archive, "SELECT count(*) FROM patterns"),
        findings.patterns.len() as i64
    );
    assert_eq!(
        sql_count(&archive, "SELECT count(*) FROM sessions WHERE NOT open"),
        findings.sessions as i64
    );
    assert_eq!(
        sql_count(&archive, "SELECT count(*) FROM entanglements"),
        findings.entanglements.len() as i64
    );
    // The report's first sequence is the most supported one by SQL too.
    let first = findings
        .patterns
        .iter()
        .find(|p| p.kind == "sequence")
        .unwrap();
    let top = sql(
        &archive,
        "SELECT max(support) FROM patterns WHERE kind = 'sequence'",
    );
    assert_eq!(strings(&top[0], 0), [first.support.to_string()]);
    let tied = sql(
        &archive,
        &format!(
            "SELECT array_to_string(items, ' ') FROM patterns \
             WHERE kind = 'sequence' AND support = {} AND occurrences = {}",
            first.support, first.occurrences
        ),
    );
    let tied: Vec<String> = tied.iter().flat_map(|b| strings(b, 0)).collect();
    assert!(tied.contains(&first.items.join(" ")), "{tied:?}");
}
