//! Loaders on every input shape: what they read, and the dead letters for what they cannot.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::path::Path;

use vigil_datasets::loaders::{Collected, load_all, plan_paths};
use vigil_operators::{Reading, Record};

fn load(dir: &Path, chunk: u64) -> Collected {
    load_all(&plan_paths(&[dir.to_path_buf()], chunk).unwrap())
}

#[test]
fn nab_csv_with_bad_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("realKnownCause");
    std::fs::create_dir_all(&dir).unwrap();
    let csv = "timestamp,value\n2014-01-01 00:00:00,1.5\n2014-01-01 00:05:00,abc\nnot-a-time,2.0\n2014-01-01 00:10:00,inf\n2014-01-01 00:15:00,3.25\n";
    std::fs::write(dir.join("cpu.csv"), csv).unwrap();
    let got = load(&dir, 1 << 20);
    let values: Vec<(String, String, i64, f64)> = got
        .readings
        .iter()
        .map(|(r, _)| (r.source.to_string(), r.name.to_string(), r.ts, r.value))
        .collect();
    assert_eq!(
        values,
        vec![
            (
                "realKnownCause".into(),
                "cpu".into(),
                1_388_534_400_000,
                1.5
            ),
            (
                "realKnownCause".into(),
                "cpu".into(),
                1_388_535_300_000,
                3.25
            ),
        ]
    );
    let reasons: Vec<(String, String)> = got
        .dead_letters
        .iter()
        .map(|d| (d.1.clone(), d.3.clone()))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].0.ends_with("cpu.csv:3") && reasons[0].1.contains("not a number"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].0.ends_with("cpu.csv:4") && reasons[1].1.contains("not a valid timestamp"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].0.ends_with("cpu.csv:5") && reasons[2].1.contains("not a finite number"),
        "{reasons:?}"
    );
}

#[test]
fn telemetry_csv_and_unknown_header() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = "ts,source,name,value,seq\n2026-01-01T00:00:00Z,veh-1,temp_c,20.5,7\n1767225601000,veh-1,temp_c,21,8\n";
    std::fs::write(tmp.path().join("a.csv"), csv).unwrap();
    std::fs::write(tmp.path().join("b.csv"), "foo,bar\n1,2\n").unwrap();
    let got = load(tmp.path(), 1 << 20);
    let readings: Vec<&Reading> = got.readings.iter().map(|(r, _)| r).collect();
    assert_eq!(readings.len(), 2);
    assert_eq!(readings[0].event_id, "veh-1-temp_c-7");
    assert_eq!(
        (readings[1].ts, readings[1].seq, readings[1].value),
        (1_767_225_601_000, Some(8), 21.0)
    );
    assert_eq!(got.dead_letters.len(), 1);
    assert!(
        got.dead_letters[0]
            .3
            .contains("CSV header `foo,bar` is not one vigil reads")
    );
}

#[test]
fn ndjson_chunks_keep_line_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..2000 {
        if i == 1234 {
            text.push_str("{\"source\":\"veh-1\"}\r\n");
        } else if i % 100 == 0 {
            text.push_str("\r\n");
        } else {
            let r =
                Reading::new("veh-1", "temp_c", 1_767_225_600_000 + i, i as f64).with_seq(i as u64);
            text.push_str(&r.to_json());
            text.push_str("\r\n");
        }
    }
    std::fs::write(tmp.path().join("t.jsonl"), &text).unwrap();
    for chunk in [1 << 20, 4096, 1] {
        let got = load(tmp.path(), chunk);
        assert_eq!(got.readings.len(), 2000 - 20 - 1, "chunk {chunk}");
        assert_eq!(got.dead_letters.len(), 1);
        assert!(
            got.dead_letters[0].1.ends_with("t.jsonl:1235"),
            "{:?}",
            got.dead_letters[0]
        );
        assert!(
            got.dead_letters[0].3.contains("missing field"),
            "{:?}",
            got.dead_letters[0]
        );
        let seqs: Vec<u64> = got.readings.iter().map(|(r, _)| r.seq.unwrap()).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "chunks are read in order"
        );
    }
}

#[test]
fn parquet_in_the_telemetry_shape_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rows: Vec<Reading> = (0..500)
        .map(|i| {
            Reading::new(
                &format!("veh-{}", i % 5),
                "altitude_m",
                1_767_225_600_000 + i * 1000,
                i as f64 * 1.5,
            )
            .with_seq(i as u64)
        })
        .collect();
    rows[3].attrs = Some("{\"stage\":2}".into());
    rows[4].payload = Some(vec![1, 2, 3]);
    rows[4].key_id = Some("k-1234".into());
    let batch = Reading::to_batch(&rows).unwrap();
    let file = std::fs::File::create(tmp.path().join("part.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let got = load(tmp.path(), 1 << 20);
    assert!(got.dead_letters.is_empty(), "{:?}", got.dead_letters);
    let back: Vec<Reading> = got.readings.into_iter().map(|(r, _)| r).collect();
    assert_eq!(
        back, rows,
        "a Parquet file in the telemetry shape replays exactly, ciphertext included"
    );
}

#[test]
fn batches_round_trip_through_the_one_schema() {
    let rows: Vec<Reading> = (0..10)
        .map(|i| Reading::new("dev-1", "BLOOM", i * 10, 0.5))
        .collect();
    let batch = Reading::to_batch(&rows).unwrap();
    assert_eq!(batch.schema(), Reading::schema());
    assert_eq!(Reading::from_batch(&batch).unwrap(), rows);
    let line = rows[0].to_json();
    assert_eq!(serde_json::from_str::<Reading>(&line).unwrap(), rows[0]);
}
