//! Planted meetings: the truth's sessions are what a plain scan of the events finds, the
//! generator is still partition-independent with guests, and `rooms=0` changes nothing.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::{BTreeMap, BTreeSet};

use vigil_datasets::generator::{
    self, DEVICE_EVENTS, DeviceParams, DeviceTruth, GUESTS_PER_ROOM, MEETING_EVENT,
    MEETING_QUIET_TICKS, TruthSession,
};
use vigil_datasets::loaders::{Collected, load_all, parse_message, plan_generator};
use vigil_operators::{Kind, Reading};

/// Specs with meetings: several seeds, an interval other than a second, and tick counts that
/// cut a block (and perhaps a meeting) short.
fn room_specs() -> Vec<DeviceParams> {
    vec![
        DeviceParams {
            devices: 12,
            ticks: 3000,
            seed: 11,
            rooms: 3,
            ..DeviceParams::default()
        },
        DeviceParams {
            devices: 5,
            ticks: 2471,
            interval_ms: 250,
            seed: 3,
            rooms: 5,
            ..DeviceParams::default()
        },
        DeviceParams {
            devices: 1,
            ticks: 6000,
            seed: 42,
            rooms: 2,
            ..DeviceParams::default()
        },
    ]
}

fn tick_vec(spec: &DeviceParams, tick: u64, sources: std::ops::Range<usize>) -> Vec<Reading> {
    let mut out = Vec::new();
    generator::device_tick(spec, tick, sources, &mut |r| out.push(r));
    out
}

/// The room in a meeting event's `attrs`.
fn room_of(reading: &Reading) -> String {
    let attrs: serde_json::Value =
        serde_json::from_str(reading.attrs.as_deref().expect("a meeting event has attrs"))
            .expect("attrs is JSON");
    attrs["room"]
        .as_str()
        .expect("attrs names the room")
        .to_owned()
}

/// The plain reference: the `GATHER` events of each room in event time, a new session whenever
/// the next event comes more than `gap_ms` after the previous one.
fn sessions_by_scan(events: &[Reading], gap_ms: i64) -> Vec<TruthSession> {
    let mut by_room: BTreeMap<String, Vec<&Reading>> = BTreeMap::new();
    for event in events.iter().filter(|e| e.name == MEETING_EVENT) {
        by_room.entry(room_of(event)).or_default().push(event);
    }
    let mut sessions = Vec::new();
    for (room, mut events) in by_room {
        events.sort_by_key(|e| e.ts);
        let mut current: Option<(TruthSession, BTreeSet<String>)> = None;
        for event in events {
            match &mut current {
                Some((session, guests)) if event.ts - session.end_ms <= gap_ms => {
                    session.end_ms = event.ts;
                    session.events += 1;
                    guests.insert(event.source.to_string());
                }
                _ => {
                    sessions.extend(current.take().map(close));
                    let session = TruthSession {
                        room: room.clone(),
                        start_ms: event.ts,
                        end_ms: event.ts,
                        participants: Vec::new(),
                        events: 1,
                    };
                    current = Some((session, BTreeSet::from([event.source.to_string()])));
                }
            }
        }
        sessions.extend(current.map(close));
    }
    sessions.sort_by(|a, b| {
        let room = |s: &TruthSession| s.room["room-".len()..].parse::<usize>().unwrap();
        (a.start_ms, room(a)).cmp(&(b.start_ms, room(b)))
    });
    sessions
}

fn close((mut session, guests): (TruthSession, BTreeSet<String>)) -> TruthSession {
    session.participants = guests.into_iter().collect();
    session
}

#[test]
fn rooms_zero_leaves_the_output_byte_identical() {
    // Hashes of the output written before meetings existed.
    let baselines = [
        (
            DeviceParams::default(),
            21_164,
            3_538_746,
            0xc08b_efea_575a_5860,
        ),
        (
            DeviceParams {
                devices: 7,
                ticks: 999,
                seed: 3,
                interval_ms: 250,
                ..DeviceParams::default()
            },
            821,
            134_632,
            0x2d85_f269_1c43_902c,
        ),
    ];
    for (spec, lines, bytes, hash) in baselines {
        assert_eq!(spec.rooms, 0);
        assert_eq!(spec.sources(), spec.devices);
        let mut out = Vec::new();
        let written = generator::write_device_ndjson(&spec, &mut out).unwrap();
        assert_eq!(
            (written, out.len(), xxhash_rust::xxh3::xxh3_64(&out)),
            (lines, bytes, hash),
            "{spec:?}"
        );
        assert!(
            generator::device_events(&spec).all(|e| e.source.starts_with("dev-")
                && e.name != MEETING_EVENT
                && e.attrs.is_none())
        );
        assert!(generator::device_truth(&spec).sessions.is_empty());
    }
    assert_eq!(
        DeviceParams::parse("rooms=0").unwrap(),
        DeviceParams::default()
    );
}

#[test]
fn rooms_leave_the_devices_alone() {
    for spec in room_specs() {
        let without = DeviceParams {
            rooms: 0,
            ..spec.clone()
        };
        let devices: Vec<Reading> = generator::device_events(&spec)
            .filter(|e| e.source.starts_with("dev-"))
            .collect();
        let expected: Vec<Reading> = generator::device_events(&without).collect();
        assert_eq!(devices, expected);
    }
}

#[test]
fn truth_sessions_equal_the_sessions_a_scan_finds() {
    for spec in room_specs() {
        let events: Vec<Reading> = generator::device_events(&spec).collect();
        let truth = generator::device_truth(&spec);
        let tick = spec.interval_ms;
        let scanned = sessions_by_scan(&events, 10 * tick);
        assert!(truth.sessions.len() >= 5, "{spec:?}: {:?}", truth.sessions);
        assert_eq!(truth.sessions, scanned, "{spec:?}");
        // Any inactivity gap from 2 to 60 ticks finds the same sessions.
        assert_eq!(sessions_by_scan(&events, 2 * tick), scanned);
        assert_eq!(sessions_by_scan(&events, 60 * tick), scanned);
        assert_ne!(sessions_by_scan(&events, 2 * tick - 1), scanned);

        let rooms: BTreeSet<&str> = truth.sessions.iter().map(|s| s.room.as_str()).collect();
        assert_eq!(rooms.len(), spec.rooms, "every room meets at least once");
        let last_tick_ms = spec.tick_ts(spec.ticks - 1);
        let mut previous_end: BTreeMap<&str, i64> = BTreeMap::new();
        for session in &truth.sessions {
            let ticks = (session.end_ms - session.start_ms) / tick;
            assert_eq!(ticks as u64 / 2 + 1, session.events);
            let cut = session.end_ms + 2 * tick > last_tick_ms;
            assert!(cut || (20..=120).contains(&ticks), "{session:?}");
            assert!(
                cut || (2..=4).contains(&session.participants.len()),
                "{session:?}"
            );
            let r = &session.room["room-".len()..];
            assert!(
                session.participants.iter().all(|p| p
                    .strip_prefix("guest-")
                    .unwrap()
                    .split('-')
                    .next()
                    == Some(r))
            );
            if let Some(end) = previous_end.insert(&session.room, session.end_ms) {
                assert!(session.start_ms - end > MEETING_QUIET_TICKS as i64 * tick);
            }
        }
    }
}

#[test]
fn meeting_events_are_well_formed() {
    let spec = &room_specs()[0];
    let mut last_in_room: BTreeMap<String, i64> = BTreeMap::new();
    let mut guests = BTreeSet::new();
    for event in generator::device_events(spec) {
        if event.source.starts_with("dev-") {
            assert!(DEVICE_EVENTS.contains(&event.name.as_str()));
            continue;
        }
        assert_eq!(event.name, MEETING_EVENT);
        assert_eq!(event.kind, Kind::Event);
        assert!((0.0..=1.0).contains(&event.value));
        assert_eq!(event.ts, spec.tick_ts(event.seq.unwrap()));
        let room = room_of(&event);
        let (r, j) = event.source["guest-".len()..].split_once('-').unwrap();
        assert_eq!(room, format!("room-{r}"));
        assert!(j.parse::<usize>().unwrap() < GUESTS_PER_ROOM);
        if let Some(last) = last_in_room.insert(room, event.ts) {
            assert!(event.ts - last >= 2 * spec.interval_ms, "{event:?}");
        }
        guests.insert(event.source.to_string());
    }
    assert!(guests.len() > spec.rooms * 2, "{guests:?}");
}

#[test]
fn split_source_ranges_equal_the_full_range() {
    for spec in room_specs() {
        let sources = spec.sources();
        assert_eq!(sources, spec.devices + spec.rooms * GUESTS_PER_ROOM);
        let cuts = [
            1,
            spec.devices,
            spec.devices + 1,
            spec.devices + GUESTS_PER_ROOM,
            sources - 1,
        ];
        for tick in 0..spec.ticks {
            let whole = tick_vec(&spec, tick, 0..sources);
            for cut in cuts {
                let mut split = tick_vec(&spec, tick, 0..cut);
                split.extend(tick_vec(&spec, tick, cut..sources));
                assert_eq!(split, whole, "tick {tick} cut at {cut}");
            }
            let one_by_one: Vec<Reading> = (0..sources)
                .flat_map(|source| tick_vec(&spec, tick, source..source + 1))
                .collect();
            assert_eq!(one_by_one, whole, "tick {tick} one source at a time");
            assert!(tick_vec(&spec, tick, sources..sources + 10).is_empty());
        }
    }
}

#[test]
fn meeting_events_round_trip_through_ndjson_and_the_generator_input() {
    let spec = DeviceParams {
        devices: 6,
        ticks: 650,
        seed: 5,
        rooms: 3,
        ..DeviceParams::default()
    };
    let events: Vec<Reading> = generator::device_events(&spec).collect();
    assert!(events.iter().any(|e| e.name == MEETING_EVENT));

    let mut ndjson = Vec::new();
    let lines = generator::write_device_ndjson(&spec, &mut ndjson).unwrap();
    assert_eq!(lines as usize, events.len());
    let text = std::str::from_utf8(&ndjson).unwrap();
    assert!(
        text.contains(r#""attrs":{"room":"room-0"}"#),
        "attrs is an object"
    );
    let mut read = Collected::default();
    parse_message(&ndjson, &|| "devices.ndjson".to_owned(), &mut read);
    assert!(read.dead_letters.is_empty(), "{:?}", read.dead_letters);
    let back: Vec<Reading> = read.readings.into_iter().map(|(r, _)| r).collect();
    assert_eq!(back, events, "the NDJSON loader reads back every event");

    let query = "devices=6&ticks=650&seed=5&rooms=3";
    assert_eq!(DeviceParams::parse(query).unwrap(), spec);
    let loaded = load_all(&plan_generator(&format!("gen:devices?{query}")).unwrap());
    assert!(loaded.dead_letters.is_empty());
    let back: Vec<Reading> = loaded.readings.into_iter().map(|(r, _)| r).collect();
    assert_eq!(back, events, "the generator input yields the same events");
}

#[test]
fn truth_lists_the_planted_structures_and_round_trips() {
    let spec = &room_specs()[0];
    let truth = generator::device_truth(spec);
    let sequences: Vec<Vec<&str>> = truth
        .sequences
        .iter()
        .map(|s| s.iter().map(String::as_str).collect())
        .collect();
    assert_eq!(
        sequences,
        [
            vec!["BREATH", "SPIRAL"],
            vec!["SPIRAL", "BLOOM"],
            vec!["BREATH", "SPIRAL", "BLOOM"]
        ]
    );
    assert_eq!(truth.pairs, generator::device_pairs(spec));
    let json = serde_json::to_string_pretty(&truth).unwrap();
    assert_eq!(serde_json::from_str::<DeviceTruth>(&json).unwrap(), truth);
    assert_eq!(generator::device_truth(spec), truth, "deterministic");
}

#[test]
fn datagen_writes_the_events_and_the_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, truth) = (tmp.path().join("d.ndjson"), tmp.path().join("truth.json"));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_vigil-datagen"))
        .args([
            "devices",
            "--devices",
            "4",
            "--rooms",
            "2",
            "--ticks",
            "900",
        ])
        .args(["--seed", "9", "--out"])
        .arg(&out)
        .arg("--truth")
        .arg(&truth)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let spec = DeviceParams {
        devices: 4,
        rooms: 2,
        ticks: 900,
        seed: 9,
        ..DeviceParams::default()
    };
    let mut expected = Vec::new();
    generator::write_device_ndjson(&spec, &mut expected).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), expected);
    let written: DeviceTruth =
        serde_json::from_str(&std::fs::read_to_string(&truth).unwrap()).unwrap();
    assert_eq!(written, generator::device_truth(&spec));
}
