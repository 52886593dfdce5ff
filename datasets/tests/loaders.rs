//! Loaders on every input shape: what they read, and the dead letters for what they cannot.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::path::Path;

use vigil_datasets::loaders::{
    Collected, PAYLOAD_REMOVED, TextLimits, UnitSource, load_all, plan_paths, read_unit,
};
use vigil_operators::{Reading, Record};

fn load(dir: &Path, chunk: u64) -> Collected {
    let limits = TextLimits {
        chunk_bytes: chunk,
        ..TextLimits::default()
    };
    load_all(&plan_paths(&[dir.to_path_buf()], limits).unwrap())
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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A reading as an NDJSON line, `pad` spaces long inside its braces.
fn line(seq: u64, pad: usize, payload: &str) -> String {
    format!(
        "{{{}\"source\":\"veh-1\",\"name\":\"temp_c\",\"ts\":{},\"seq\":{seq},\"value\":1.5,\"payload\":\"{payload}\"}}",
        " ".repeat(pad),
        1_767_225_600_000 + seq * 1000
    )
}

#[test]
fn a_giant_line_is_a_dead_letter_and_is_never_held_whole() {
    const MIB: u64 = 1 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for seq in 0..10 {
        text.push_str(&line(seq, 0, "note"));
        text.push('\n');
    }
    // Three MiB, with the payload near the start so that the kept head of the line holds it.
    let giant = format!(
        "{{\"source\":\"veh-1\",\"payload\":\"TOPSECRET {}\",\"value\":1}}",
        "x".repeat(3 * MIB as usize)
    );
    text.push_str(&giant);
    text.push('\n');
    for seq in 10..20 {
        text.push_str(&line(seq, 0, "note"));
        text.push('\n');
    }
    let path = tmp.path().join("t.ndjson");
    std::fs::write(&path, &text).unwrap();

    for chunk_bytes in [64 << 10, 4 * MIB] {
        let limits = TextLimits {
            chunk_bytes,
            max_line_bytes: MIB,
        };
        let plan = plan_paths(std::slice::from_ref(&path), limits).unwrap();
        let mut got = Collected::default();
        let mut buf = Vec::new();
        for unit in &plan.units {
            assert!(
                unit.size <= chunk_bytes + MIB,
                "a unit of {} bytes at chunk {chunk_bytes}",
                unit.size
            );
            read_unit(unit, &mut buf, &mut got);
            assert!(buf.len() as u64 <= chunk_bytes + MIB, "chunk {chunk_bytes}");
            if chunk_bytes < MIB {
                assert!(
                    (buf.capacity() as u64) < 3 * MIB,
                    "the reader held {} bytes",
                    buf.capacity()
                );
            }
        }
        let seqs: Vec<u64> = got.readings.iter().map(|(r, _)| r.seq.unwrap()).collect();
        assert_eq!(seqs, (0..20).collect::<Vec<_>>(), "chunk {chunk_bytes}");
        assert_eq!(got.dead_letters.len(), 1, "chunk {chunk_bytes}");
        let (_, origin, kind, reason, raw) = &got.dead_letters[0];
        assert!(origin.ends_with("t.ndjson:11"), "{origin}");
        assert_eq!(*kind, "oversize");
        assert!(
            reason.contains("1048576-byte limit") && reason.contains("--max-line-bytes"),
            "{reason}"
        );
        let raw = raw.as_deref().unwrap();
        assert!(raw.len() <= 4096 + PAYLOAD_REMOVED.len(), "{}", raw.len());
        assert!(raw.starts_with(b"{\"source\":\"veh-1\",\"payload\":"));
        assert!(contains(raw, PAYLOAD_REMOVED) && !contains(raw, b"TOPSECRET"));
    }
}

#[test]
fn a_line_exactly_at_the_limit_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let max = line(0, 0, "note").len() + 40;
    let mut text = String::new();
    for seq in 0..50u64 {
        // Every third line is one byte over the limit; the others are exactly at it.
        let over = usize::from(seq % 3 == 2);
        let pad = max + over - line(seq, 0, "note").len();
        text.push_str(&line(seq, pad, "note"));
        text.push('\n');
    }
    let path = tmp.path().join("t.ndjson");
    std::fs::write(&path, &text).unwrap();
    for chunk_bytes in [1, 7, 64, 1 << 20] {
        let limits = TextLimits {
            chunk_bytes,
            max_line_bytes: max as u64,
        };
        let got = load_all(&plan_paths(std::slice::from_ref(&path), limits).unwrap());
        let seqs: Vec<u64> = got.readings.iter().map(|(r, _)| r.seq.unwrap()).collect();
        let expected: Vec<u64> = (0..50).filter(|s| s % 3 != 2).collect();
        assert_eq!(seqs, expected, "chunk {chunk_bytes}");
        let over: Vec<&str> = got
            .dead_letters
            .iter()
            .map(|d| {
                assert_eq!(d.2, "oversize", "{d:?}");
                d.1.rsplit(':').next().unwrap()
            })
            .collect();
        let lines: Vec<String> = (0..50u64)
            .filter(|s| s % 3 == 2)
            .map(|s| (s + 1).to_string())
            .collect();
        assert_eq!(over, lines, "chunk {chunk_bytes}");
    }
}

#[test]
fn units_cut_inside_a_giant_line_skip_its_rest() {
    let tmp = tempfile::tempdir().unwrap();
    // Lines of 10, 5000 and 10 bytes at a limit of 100 and chunks of 64: the long line spans
    // several units, and only the first reports it.
    let text = format!("not json!!\n{}\nnot json!!\n", "y".repeat(5000));
    let path = tmp.path().join("t.ndjson");
    std::fs::write(&path, &text).unwrap();
    let limits = TextLimits {
        chunk_bytes: 64,
        max_line_bytes: 100,
    };
    let plan = plan_paths(std::slice::from_ref(&path), limits).unwrap();
    assert!(plan.units.len() > 3, "{} units", plan.units.len());
    let cut = plan
        .units
        .iter()
        .filter(|u| {
            matches!(
                u.source,
                UnitSource::Text {
                    ends_mid_line: true,
                    ..
                }
            )
        })
        .count();
    assert!(cut >= 2, "{cut} units end inside the long line");
    let got = load_all(&plan);
    let kinds: Vec<(&str, &str)> = got
        .dead_letters
        .iter()
        .map(|d| (d.1.rsplit(':').next().unwrap(), d.2))
        .collect();
    // The two short lines are not JSON: parse errors, around one oversize line.
    assert_eq!(
        kinds,
        vec![("1", "parse"), ("2", "oversize"), ("3", "parse")]
    );
}

#[test]
fn csv_dead_letters_blank_the_payload_cell() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = "TOPSECRET, with a comma";
    let mut csv = String::from("source,name,ts,value,payload\n");
    csv.push_str(&format!("veh-1,temp_c,1767225600000,20.5,\"{secret}\"\n"));
    csv.push_str(&format!("veh-1,temp_c,1767225601000,warm,\"{secret}\"\n"));
    // An unquoted comma moves the payload one cell on: the row is left out whole.
    csv.push_str("veh-1,temp_c,1767225602000,warm,TOPSECRET,more\n");
    csv.push_str(&format!(
        "veh-1,temp_c,1767225603000,1,\"{secret} {}\"\n",
        "z".repeat(3000)
    ));
    let path = tmp.path().join("a.csv");
    std::fs::write(&path, &csv).unwrap();
    let limits = TextLimits {
        chunk_bytes: 1 << 20,
        max_line_bytes: 1000,
    };
    let got = load_all(&plan_paths(std::slice::from_ref(&path), limits).unwrap());
    assert_eq!(got.readings.len(), 1);
    let letters: Vec<(&str, Option<&[u8]>)> = got
        .dead_letters
        .iter()
        .map(|d| (d.2, d.4.as_deref()))
        .collect();
    assert_eq!(
        letters,
        vec![
            ("schema", Some(&b"veh-1,temp_c,1767225601000,warm,"[..])),
            ("schema", None),
            ("oversize", Some(&b"veh-1,temp_c,1767225603000,1,"[..])),
        ]
    );
}

#[test]
fn ndjson_dead_letters_keep_no_clear_payload() {
    let tmp = tempfile::tempdir().unwrap();
    let lines = [
        r#"{"source":"veh-1","name":"temp_c","ts":1767225600000,"value":"warm","payload":"TOPSECRET"}"#,
        r#"{"ts":1,"source":"a","payload":"TOPSECRET"#,
        r#"{"source":"veh-1","payload":{"note":"TOPSECRET "quoted""},"value":}"#,
    ];
    let path = tmp.path().join("t.ndjson");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let got = load(tmp.path(), 1 << 20);
    assert_eq!(got.dead_letters.len(), 3);
    let raws: Vec<String> = got
        .dead_letters
        .iter()
        .map(|d| String::from_utf8(d.4.clone().unwrap()).unwrap())
        .collect();
    // A line that parses loses its payload key; the others keep their shape, masked.
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&raws[0]).unwrap(),
        serde_json::json!({"source":"veh-1","name":"temp_c","ts":1767225600000u64,"value":"warm"})
    );
    assert_eq!(
        raws[1..],
        [
            r#"{"ts":1,"source":"a","payload":"<payload removed>""#,
            r#"{"source":"veh-1","payload":"<payload removed>","value":}"#,
        ]
    );
}
