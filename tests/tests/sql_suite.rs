//! The SQL suite: every query of `tests/sql/*.sql` over an archive the guard job writes from
//! the seeded generator, answered by vigil-sql and by DuckDB (the reference), and the two
//! answers compared row by row. Error cases and partition pruning are checked on vigil-sql.
//!
//! A suite file is a list of queries, each after a directive line:
//!
//! - `-- query: ordered` — the rows must match in order (the query orders them fully);
//! - `-- query: unordered` — the rows are sorted before they are compared;
//! - `-- query: error TEXT` — vigil-sql must refuse or fail with a message containing TEXT;
//! - `-- query: prune TABLE/date=D/hour=HH` (with `ordered`/`unordered`) — EXPLAIN must list
//!   exactly the files of that partition and no other;
//! - `-- duckdb: SQL` lines after the query give DuckDB's spelling of a vigil-sql helper.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::path::{Path, PathBuf};

use vigil_pipelines::jobs::guard::{AlertsOut, InputParams, run};
use vigil_pipelines::runtime::stop::Stop;
use vigil_tests::duckdb::{self, Answer, canonical_rows, compare, sorted};
use vigil_tests::jobs::guard_job;

/// One query of a suite file.
#[derive(Debug)]
struct Case {
    file: String,
    line: usize,
    sql: String,
    duckdb_sql: Option<String>,
    ordered: bool,
    error: Option<String>,
    prune: Option<String>,
}

fn parse_suite(file: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(file).unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let mut cases: Vec<Case> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line_no = number + 1;
        if let Some(directive) = line.strip_prefix("-- query:") {
            let mut words = directive.split_whitespace();
            let mut case = Case {
                file: name.clone(),
                line: line_no,
                sql: String::new(),
                duckdb_sql: None,
                ordered: true,
                error: None,
                prune: None,
            };
            while let Some(word) = words.next() {
                match word {
                    "ordered" => case.ordered = true,
                    "unordered" => case.ordered = false,
                    "prune" => case.prune = Some(words.next().unwrap().to_owned()),
                    "error" => {
                        case.error = Some(words.by_ref().collect::<Vec<_>>().join(" "));
                    }
                    other => panic!("{name}:{line_no}: unknown directive word {other:?}"),
                }
            }
            cases.push(case);
        } else if let Some(sql) = line.strip_prefix("-- duckdb:") {
            let case = cases.last_mut().expect("a -- duckdb: line follows a query");
            let alt = case.duckdb_sql.get_or_insert_with(String::new);
            alt.push_str(sql);
            alt.push('\n');
        } else if line.starts_with("--") || line.trim().is_empty() {
            continue;
        } else {
            let case = cases
                .last_mut()
                .unwrap_or_else(|| panic!("{name}:{line_no}: SQL before any -- query: line"));
            case.sql.push_str(line);
            case.sql.push('\n');
        }
    }
    for case in &mut cases {
        case.sql = trim_statement(&case.sql);
        case.duckdb_sql = case.duckdb_sql.as_deref().map(trim_statement);
        assert!(
            !case.sql.is_empty(),
            "{}:{}: a directive without SQL",
            case.file,
            case.line
        );
    }
    cases
}

fn trim_statement(sql: &str) -> String {
    sql.trim().trim_end_matches(';').trim().to_owned()
}

fn suite_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no suite files in {}", dir.display());
    files
}

/// The guard job over the seeded rocket generator: about 72,000 readings over five hours of
/// 2026-01-01, with the alerts of three guards.
fn write_archive(dir: &Path) -> PathBuf {
    let archive = dir.join("archive");
    let input = InputParams::Generator(
        "gen:rocket?vehicles=6&ticks=1500&interval_ms=10000&anomaly_rate=0.01".into(),
    );
    let guards = ["zscore", "level_shift", "threshold:name=temp_c,max=30"];
    let mut job = guard_job(input, &archive, &guards, 2);
    job.alerts = AlertsOut::File(dir.join("alerts.ndjson"));
    // Several files per hour partition, so that pruning has files to leave out.
    job.settings.max_rows_per_file = 4_000;
    let summary = run(job, Stop::default()).unwrap();
    assert!(
        summary.alerts_raised > 0,
        "the suite needs alerts: {summary}"
    );
    archive
}

/// The Parquet files EXPLAIN says a query reads.
fn explained_files(archive: &Path, sql: &str) -> Vec<String> {
    let batches = vigil_tests::archive::sql(archive, &format!("EXPLAIN {sql}"));
    let mut files = Vec::new();
    for batch in &batches {
        for plan in vigil_tests::archive::strings(batch, 1) {
            for piece in plan.split(['[', ']', ',', ' ', '{', '}', '(', ')']) {
                if piece.ends_with(".parquet") {
                    files.push(piece.to_owned());
                }
            }
        }
    }
    files.sort();
    files.dedup();
    files
}

#[test]
fn vigil_sql_answers_like_duckdb() {
    duckdb::require();
    let dir = tempfile::tempdir().unwrap();
    let archive = write_archive(dir.path());
    let cases: Vec<Case> = suite_files().iter().flat_map(|f| parse_suite(f)).collect();
    assert!(cases.len() >= 20, "the suite has {} queries", cases.len());

    let compared: Vec<&Case> = cases.iter().filter(|c| c.error.is_none()).collect();
    let statements: Vec<String> = compared
        .iter()
        .map(|c| c.duckdb_sql.clone().unwrap_or_else(|| c.sql.clone()))
        .collect();
    let answers = duckdb::run(&archive, &statements, 1);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let session = runtime
        .block_on(vigil_sql::Session::open(
            &archive.display().to_string(),
            vigil_sql::Limits::default(),
            None,
        ))
        .unwrap();
    let mut failures = Vec::new();
    for (case, answer) in compared.iter().zip(&answers) {
        let place = format!("{}:{}", case.file, case.line);
        let reference = match answer {
            Answer::Rows(rows, _) => rows.clone(),
            Answer::Error(e) => {
                failures.push(format!("{place}: DuckDB failed: {e}\n{}", case.sql));
                continue;
            }
        };
        let ours = match runtime.block_on(session.query(&case.sql)) {
            Ok(answer) => canonical_rows(&answer.batches),
            Err(e) => {
                failures.push(format!("{place}: vigil-sql failed: {e}\n{}", case.sql));
                continue;
            }
        };
        if reference.is_empty() {
            failures.push(format!(
                "{place}: the query returns no rows, so it proves nothing:\n{}",
                case.sql
            ));
        }
        let (ours, reference) = if case.ordered {
            (ours, reference)
        } else {
            (sorted(ours), sorted(reference))
        };
        if let Err(difference) = compare(&ours, &reference) {
            failures.push(format!("{place}: {difference}\n{}", case.sql));
        }
        if let Some(partition) = &case.prune {
            let listed = explained_files(&archive, &case.sql);
            let on_disk = vigil_tests::files::parquet_files(&archive.join(partition));
            assert!(
                on_disk.len() >= 2,
                "{place}: {partition} should hold several files"
            );
            let all = vigil_tests::files::parquet_files(&archive);
            assert!(all.len() > on_disk.len());
            if listed.len() != on_disk.len() || listed.iter().any(|f| !f.contains(partition)) {
                failures.push(format!(
                    "{place}: EXPLAIN lists {listed:?}, not the {} files of {partition}",
                    on_disk.len()
                ));
            }
        }
    }
    for case in cases.iter().filter(|c| c.error.is_some()) {
        let expected = case.error.as_deref().unwrap_or_default();
        let place = format!("{}:{}", case.file, case.line);
        match runtime.block_on(session.query(&case.sql)) {
            Ok(_) => failures.push(format!("{place}: expected an error, got rows")),
            Err(e)
                if !e
                    .to_string()
                    .to_lowercase()
                    .contains(&expected.to_lowercase()) =>
            {
                failures.push(format!(
                    "{place}: expected an error with {expected:?}, got: {e}"
                ));
            }
            Err(_) => {}
        }
    }
    // Refused statements changed nothing.
    assert!(!archive.join("scratch").exists());
    assert!(
        failures.is_empty(),
        "{} of {} queries differ:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Runs a Python snippet with `archive` and `out` as its arguments; returns its stdout.
fn python(snippet: &str, archive: &Path, out: &Path) -> String {
    duckdb::require();
    let result = std::process::Command::new("python3")
        .args(["-c", snippet])
        .arg(archive)
        .arg(out)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    String::from_utf8(result.stdout).unwrap().trim().to_owned()
}

#[test]
fn duckdb_and_pyarrow_read_the_archive_and_vigil_sql_reads_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let archive = write_archive(dir.path());
    let vigil = |sql: &str| {
        canonical_rows(&vigil_tests::archive::sql(&archive, sql))
            .into_iter()
            .map(|row| serde_json::to_string(&row).unwrap())
            .collect::<Vec<_>>()
    };
    let expected = canonical_rows(&vigil_tests::archive::sql(
        &archive,
        "SELECT count(*), count(DISTINCT source), sum(value), min(hour), max(hour) FROM telemetry",
    ));
    let row = |json: &str| vec![serde_json::from_str::<Vec<serde_json::Value>>(json).unwrap()];

    // pyarrow alone, with hive partitioning, sees the same rows.
    let pyarrow = python(
        r#"
import sys, json
import pyarrow.dataset as ds, pyarrow.compute as pc
t = ds.dataset(sys.argv[1] + "/telemetry", format="parquet", partitioning="hive").to_table()
print(json.dumps([t.num_rows, len(pc.unique(t["source"])), pc.sum(t["value"]).as_py(),
                  pc.min(t["hour"]).as_py(), pc.max(t["hour"]).as_py()]))
"#,
        &archive,
        dir.path(),
    );
    compare(&expected, &row(&pyarrow)).expect("pyarrow reads the archive as vigil-sql does");

    // DuckDB alone (no vigil views) reads it too.
    let duck = python(
        r#"
import sys, json, duckdb
c = duckdb.connect()
r = c.execute("SELECT count(*), count(DISTINCT source), sum(value), min(hour), max(hour) "
              "FROM read_parquet(?, hive_partitioning = true)",
              [sys.argv[1] + "/telemetry/*/*/*.parquet"]).fetchone()
print(json.dumps([int(r[0]), int(r[1]), float(r[2]), int(r[3]), int(r[4])]))
"#,
        &archive,
        dir.path(),
    );
    compare(&expected, &row(&duck)).expect("DuckDB reads the archive as vigil-sql does");

    // Parquet written by DuckDB and by pyarrow reads in vigil-sql.
    let written = python(
        r#"
import sys, json, duckdb, pyarrow as pa, pyarrow.parquet as pq
archive, out = sys.argv[1], sys.argv[2]
c = duckdb.connect()
c.execute("SET TimeZone = 'UTC'")
c.execute(f"COPY (SELECT source, name, count(*) AS n, avg(value) AS mean, max(ts) AS last "
          f"FROM read_parquet('{archive}/telemetry/*/*/*.parquet') GROUP BY ALL ORDER BY ALL) "
          f"TO '{out}/duck.parquet' (FORMAT parquet)")
t = pa.table({"source": ["veh-0", "veh-1"], "limit": pa.array([1.5, None], pa.float64()),
              "tags": pa.array([["a", "b"], []], pa.list_(pa.string()))})
pq.write_table(t, f"{out}/arrow.parquet")
print(c.execute(f"SELECT count(*), sum(n) FROM '{out}/duck.parquet'").fetchone()[0])
"#,
        &archive,
        dir.path(),
    );
    let duck_file = dir.path().join("duck.parquet").display().to_string();
    let arrow_file = dir.path().join("arrow.parquet").display().to_string();
    let series: i64 = written.parse().unwrap();
    let from_duck = vigil(&format!("SELECT count(*), sum(n) FROM '{duck_file}'"));
    let in_archive = vigil(
        "SELECT (SELECT count(*) FROM (SELECT DISTINCT source, name FROM telemetry) AS s) AS series, \
                (SELECT count(*) FROM telemetry) AS readings",
    );
    assert_eq!(from_duck, in_archive);
    assert!(series > 10);
    let joined = vigil(&format!(
        "SELECT d.source, d.name, d.n FROM '{duck_file}' d \
         JOIN (SELECT source, name, count(*) AS n FROM telemetry GROUP BY source, name) t \
         ON d.source = t.source AND d.name = t.name AND d.n = t.n"
    ));
    assert_eq!(
        joined.len() as i64,
        series,
        "every series DuckDB wrote matches the archive"
    );
    let from_arrow = vigil(&format!(
        "SELECT source, \"limit\", cardinality(tags) FROM '{arrow_file}' ORDER BY source"
    ));
    assert_eq!(
        from_arrow,
        vec![r#"["veh-0",1.5,2]"#, r#"["veh-1",null,0]"#]
    );
}
