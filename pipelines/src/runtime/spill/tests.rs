use std::path::{Path, PathBuf};

use serde_json::Value;

use super::dead_letters::DEAD_LETTERS;
use super::record::{HEADER, MAGIC, SEALED, TRAILER, encode, header_sum, scan};
use super::segments::{LEGACY_LOG, MARK, list_segments, segment_name};
use super::wal::Spill;
use crate::runtime::crypto::PayloadKey;

/// The bytes of every segment file in `dir`.
fn segment_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for (_, path) in list_segments(dir)? {
        total += std::fs::metadata(path)?.len();
    }
    Ok(total)
}

/// The only segment in `dir`.
fn only_segment(dir: &Path) -> anyhow::Result<PathBuf> {
    let segments = list_segments(dir)?;
    anyhow::ensure!(segments.len() == 1, "{} segments", segments.len());
    Ok(segments[0].1.clone())
}

fn dead_letters(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(dir.join(DEAD_LETTERS))?;
    text.lines()
        .map(|l| serde_json::from_str(l).map_err(anyhow::Error::from))
        .collect()
}

#[test]
fn undelivered_messages_survive_a_restart_sealed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key = PayloadKey::from_hex(&"ab".repeat(32))?;
    let (mut spill, again) = Spill::open(dir.path(), Some(key.clone()), 1 << 30)?;
    assert!(again.is_empty());
    for i in 0..5 {
        spill.append(format!("{{\"alert\":{i}}}").as_bytes())?;
    }
    spill.sync()?;
    spill.drained(2)?;
    drop(spill);
    let log = std::fs::read(only_segment(dir.path())?)?;
    assert!(
        !String::from_utf8_lossy(&log).contains("alert"),
        "sealed on disk"
    );

    let (mut spill, again) = Spill::open(dir.path(), Some(key.clone()), 1 << 30)?;
    assert_eq!(
        again,
        [
            (3, b"{\"alert\":2}".to_vec()),
            (4, b"{\"alert\":3}".to_vec()),
            (5, b"{\"alert\":4}".to_vec())
        ]
    );
    assert_eq!(spill.append(b"next")?, 6);
    spill.sync()?;
    drop(spill);

    // Without the key, or with another, an encrypted spill is refused with a clear error.
    let error = Spill::open(dir.path(), None, 1 << 30)
        .err()
        .map(|e| e.to_string());
    assert!(error.is_some_and(|e| e.contains("encrypted")));
    let other = PayloadKey::from_hex(&"cd".repeat(32))?;
    let error = Spill::open(dir.path(), Some(other), 1 << 30)
        .err()
        .map(|e| e.to_string());
    assert!(error.is_some_and(|e| e.contains("configure the key")));
    Ok(())
}

#[test]
fn full_when_undelivered_bytes_reach_the_limit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let record = (HEADER + 10 + TRAILER) as u64;
    let (mut spill, _) = Spill::open(dir.path(), None, 5 * record)?;
    while !spill.full() {
        spill.append(b"0123456789")?;
    }
    assert_eq!(spill.pending(), 5);
    let last = spill.next - 1;
    spill.drained(last)?;
    assert!(!spill.full());
    Ok(())
}

#[test]
fn steady_appending_and_draining_keeps_the_spill_small() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let segment = 4 << 10;
    let (mut spill, _) = Spill::open_sized(dir.path(), None, 1 << 30, segment)?;
    let message = [7u8; 100];
    let record = (HEADER + message.len() + TRAILER) as u64;
    let mut largest = 0;
    // The consumer stays about 20 messages behind, then catches up now and then.
    for round in 0..2_000u64 {
        let seq = spill.append(&message)?;
        spill.sync()?;
        let upto = if round % 100 == 99 {
            seq
        } else {
            seq.saturating_sub(20)
        };
        spill.drained(upto)?;
        largest = largest.max(segment_bytes(dir.path())?);
    }
    // What is undelivered, plus a segment and a record being filled, plus the full
    // segment whose last records are still undelivered.
    let bound = 21 * record + 2 * (segment + record);
    assert!(
        largest <= bound,
        "the spill grew to {largest} bytes (bound {bound}) over 2,000 messages of {record}"
    );
    assert!(list_segments(dir.path())?.len() <= 3);
    Ok(())
}

#[test]
fn a_torn_tail_and_a_damaged_middle_record_are_skipped_and_counted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut spill, _) = Spill::open(dir.path(), None, 1 << 30)?;
    for i in 1..=5 {
        spill.append(format!("message {i}").as_bytes())?;
    }
    spill.sync()?;
    drop(spill);
    let path = only_segment(dir.path())?;
    let mut bytes = std::fs::read(&path)?;
    let record = HEADER + "message 1".len() + TRAILER;
    // A flipped byte in the body of the second record, and the last one cut short.
    bytes[record + HEADER + 2] ^= 0x40;
    bytes.truncate(bytes.len() - 5);
    std::fs::write(&path, &bytes)?;

    let (mut spill, again) = Spill::open(dir.path(), None, 1 << 30)?;
    let seqs: Vec<u64> = again.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [1, 3, 4]);
    assert_eq!(again[1].1, b"message 3");
    assert_eq!(spill.damaged(), 2);
    // The lost sequence numbers do not hold the drained mark back.
    assert_eq!(spill.settled().collect::<Vec<_>>(), [2]);
    spill.drained(1)?;
    assert_eq!(spill.drained_upto(), 2);
    // New records follow whole ones: the torn tail was cut off.
    assert_eq!(spill.append(b"after")?, 5);
    spill.sync()?;
    drop(spill);
    let (_, again) = Spill::open(dir.path(), None, 1 << 30)?;
    let seqs: Vec<u64> = again.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [3, 4, 5]);
    Ok(())
}

#[test]
fn an_absurd_length_is_damage_not_an_allocation() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // A record whose header checksum is right but whose length is 4 GiB, between two
    // good ones: the length is refused before anything is allocated for it.
    let mut bytes = encode(1, 0, b"first");
    let mut absurd = Vec::new();
    absurd.extend_from_slice(&MAGIC);
    absurd.extend_from_slice(&2u64.to_le_bytes());
    absurd.push(0);
    absurd.extend_from_slice(&u32::MAX.to_le_bytes());
    let sum = header_sum(&absurd);
    absurd.extend_from_slice(&sum.to_le_bytes());
    absurd.extend_from_slice(b"short");
    bytes.extend_from_slice(&absurd);
    bytes.extend_from_slice(&encode(3, 0, b"third"));
    std::fs::write(dir.path().join(segment_name(1)), &bytes)?;

    let (spill, again) = Spill::open(dir.path(), None, 1 << 30)?;
    assert_eq!(again, [(1, b"first".to_vec()), (3, b"third".to_vec())]);
    assert_eq!(spill.damaged(), 1);
    Ok(())
}

#[test]
fn a_message_that_can_never_be_delivered_is_dead_lettered_and_the_rest_drain() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let (mut spill, _) = Spill::open(dir.path(), None, 1 << 30)?;
    for i in 1..=4 {
        spill.append(format!("message {i}").as_bytes())?;
    }
    spill.sync()?;
    // The consumer delivers 1, is refused 2 for good, then delivers 3 and 4.
    spill.drained(1)?;
    spill.dead_letter(2, "too large for the broker", b"message 2")?;
    assert_eq!(spill.drained_upto(), 2);
    spill.drained(4)?;
    assert_eq!(spill.pending(), 0);
    drop(spill);

    let letters = dead_letters(dir.path())?;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["seq"], 2);
    assert_eq!(letters[0]["reason"], "too large for the broker");
    assert_eq!(letters[0]["message"], "message 2");
    let (_, again) = Spill::open(dir.path(), None, 1 << 30)?;
    assert!(again.is_empty());
    Ok(())
}

#[test]
fn a_record_that_cannot_be_opened_is_dead_lettered_at_open() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key = PayloadKey::from_hex(&"ab".repeat(32))?;
    let (mut spill, _) = Spill::open(dir.path(), Some(key.clone()), 1 << 30)?;
    for i in 1..=3 {
        spill.append(format!("message {i}").as_bytes())?;
    }
    spill.sync()?;
    drop(spill);
    // Record 2 rewritten with a sound frame around a ciphertext that does not open.
    let path = only_segment(dir.path())?;
    let bytes = std::fs::read(&path)?;
    let scanned = scan(&bytes);
    let (_, _, body) = &scanned.records[1];
    let mut forged = bytes[body.clone()].to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let mut rewritten = bytes[..body.start - HEADER].to_vec();
    rewritten.extend_from_slice(&encode(2, SEALED, &forged));
    rewritten.extend_from_slice(&bytes[body.end + TRAILER..]);
    std::fs::write(&path, rewritten)?;

    let (spill, again) = Spill::open(dir.path(), Some(key), 1 << 30)?;
    let seqs: Vec<u64> = again.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [1, 3]);
    assert_eq!(spill.dead_lettered(), 1);
    assert_eq!(spill.settled().collect::<Vec<_>>(), [2]);
    let letters = dead_letters(dir.path())?;
    assert_eq!(letters[0]["seq"], 2);
    assert_eq!(letters[0]["sealed"], true);
    Ok(())
}

#[test]
fn a_spill_log_from_before_segments_is_carried_over() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut legacy = Vec::new();
    for (seq, body) in [(1u64, &b"old one"[..]), (2, b"old two"), (3, b"old three")] {
        legacy.extend_from_slice(&seq.to_le_bytes());
        legacy.push(0);
        legacy.extend_from_slice(&(body.len() as u32).to_le_bytes());
        legacy.extend_from_slice(body);
    }
    std::fs::write(dir.path().join(LEGACY_LOG), legacy)?;
    std::fs::write(dir.path().join(MARK), "1")?;
    let (mut spill, again) = Spill::open(dir.path(), None, 1 << 30)?;
    assert_eq!(
        again,
        [(2, b"old two".to_vec()), (3, b"old three".to_vec())]
    );
    assert!(!dir.path().join(LEGACY_LOG).exists());
    assert_eq!(spill.append(b"new")?, 4);
    Ok(())
}
