//! The Kafka producers' unit tests: what the broker refused or failed, settled against the spill.

use super::*;

#[test]
fn refused_alerts_are_dead_lettered_and_failed_ones_sent_again() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut spill, _) = Spill::open(dir.path(), None, 1 << 30)?;
    for i in 1..=5 {
        spill.append(format!("alert {i}").as_bytes())?;
    }
    let report = DeliveryReport::default();
    let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
    let not_leader = KafkaError::MessageProduction(RDKafkaErrorCode::NotLeaderForPartition);
    {
        let mut acks = report.acks.lock().map_err(|e| anyhow::anyhow!("{e}"))?;
        acks.delivered(1);
        acks.failed(2, &too_large, b"alert 2");
        acks.delivered(3);
        acks.failed(4, &not_leader, b"alert 4");
        acks.delivered(5);
    }
    let mut resent = Vec::new();
    settle_deliveries(&report, &mut spill, |seq, _| {
        resent.push(seq);
        Ok(())
    });
    // 2 is refused for good: dead-lettered, and the prefix moves past it; 4 waits for
    // its retry, which is not due yet.
    assert_eq!(spill.drained_upto(), 3);
    assert!(resent.is_empty());
    let letters = std::fs::read_to_string(dir.path().join(crate::runtime::spill::DEAD_LETTERS))?;
    let letter: serde_json::Value = serde_json::from_str(letters.trim())?;
    assert_eq!(letter["seq"], 2);
    assert_eq!(letter["message"], "alert 2");
    assert!(
        letter["reason"]
            .as_str()
            .is_some_and(|r| r.contains("too large")),
        "{letter}"
    );

    // Once due, 4 is sent again; when the broker takes it, everything is drained.
    report
        .acks
        .lock()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .retry_at = Some(Instant::now());
    settle_deliveries(&report, &mut spill, |seq, _| {
        resent.push(seq);
        Ok(())
    });
    assert_eq!(resent, [4]);
    report
        .acks
        .lock()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .delivered(4);
    settle_deliveries(&report, &mut spill, |_, _| Ok(()));
    assert_eq!(spill.drained_upto(), 5);
    assert_eq!(spill.pending(), 0);
    Ok(())
}
