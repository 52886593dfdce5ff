//! Seeded, deterministic rocket telemetry and device events, with ground truth for the anomalies
//! and for the planted event structures.
//!
//! Every value is a closed-form function of (seed, source, metric, tick): the noiseless profile
//! is computed from the tick, and the noise and the anomalies are drawn from an xxh3 hash of
//! (seed, source, metric, tick) or of (seed, source, metric, block of ticks); meetings are drawn
//! from (seed, room, block of ticks). Nothing depends on what was generated before, so any
//! partition of sources and ticks among workers yields exactly the same records, and a run with
//! the same spec yields the same records every time.
//!
//! The noise is approximately Gaussian: the Irwin–Hall sum of four uniforms, scaled to the
//! metric's standard deviation. It uses arithmetic only, so it is bit-identical on every
//! platform, and it is bounded at ±3.5 standard deviations, so the injected anomalies are the
//! only far outliers. The flight profile uses `exp`, `ln` and trigonometric functions of the
//! platform's math library, which are the same on every run of a machine.
//!
//! # Rocket telemetry
//! Each vehicle `veh-{i}` reports the eight [`ROCKET_METRICS`] once per tick. One tick stands for
//! one second of mission time whatever `interval_ms` is, so a flight looks the same at any
//! event-time rate. A vehicle flies again and again: a minute on the pad, a burn of about 160 s
//! that pitches over from vertical, a ballistic coast to an apogee above 100 km, a descent to a
//! vertical landing about 530 s after lift-off, refuelling, and a wait of one to six minutes.
//! Its period and phase, and the details of its flight, are drawn from (seed, vehicle).
//!
//! Anomalies are decided per (vehicle, metric, block of [`ANOMALY_BLOCK_TICKS`] ticks): at most one
//! per block, lying entirely inside it. [`rocket_labels`] lists them.
//!
//! # Device events
//! Each device `dev-{i}` emits at most one of the [`DEVICE_EVENTS`] per tick, its value the
//! intensity in [0, 1]. Four structures give the pattern operators something to find:
//! - rituals: in about a quarter of the blocks of 32 ticks, a device emits `BREATH`, `SPIRAL`,
//!   `BLOOM` on three consecutive ticks;
//! - entangled pairs: in about 30 % of the pairs (`dev-{2k}`, `dev-{2k+1}`) the odd device echoes
//!   the even device's event one tick later, most of the time ([`device_pairs`] lists them);
//! - otherwise a device emits with its own probability per tick (3 % to 15 %) an event drawn
//!   with fixed weights, `SACRED_PHRASE` being rare;
//! - meetings, when [`DeviceParams::rooms`] is above 0: see below.
//!
//! # Meetings
//! Each room `room-{r}` has [`GUESTS_PER_ROOM`] guests `guest-{r}-{j}`, which emit nothing but
//! [`MEETING_EVENT`] (`GATHER`) events. In each block of [`MEETING_BLOCK_TICKS`] ticks a room holds
//! a meeting with probability 0.6: 2 to 4 of its guests meet from a drawn start tick for 20 to
//! 120 ticks, and the meeting ends at least [`MEETING_QUIET_TICKS`] ticks before the block does.
//! During a meeting there is one event every 2 ticks, the first at the start and the last at the
//! end, from the participants in turn (in guest order); each carries `attrs` =
//! `{"room":"room-{r}"}`. So the events of a meeting are exactly 2 ticks apart, and two meetings
//! of a room are more than [`MEETING_QUIET_TICKS`] ticks apart: a session window per room finds
//! each meeting as one session. [`device_truth`] lists them, with the rituals and the pairs.
//!
//! Guests are source indices too, numbered after the devices: `0..devices` are the devices and
//! `devices..`[`DeviceParams::sources`] the guests, room by room, so [`device_tick`] generates any
//! range of either.

use std::f64::consts::{FRAC_PI_2, PI};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::ops::Range;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use vigil_operators::time::MAX_TS_MS;
use vigil_operators::{Kind, Reading};

/// The metrics every vehicle reports, in the order [`rocket_tick`] emits them.
pub const ROCKET_METRICS: [&str; 8] = [
    "altitude_m",
    "velocity_mps",
    "acceleration_mps2",
    "temp_c",
    "pressure_kpa",
    "fuel_pct",
    "thrust_kn",
    "pitch_deg",
];

/// Standard deviation of the noise of each of the [`ROCKET_METRICS`].
pub const ROCKET_NOISE_STD: [f64; 8] = [3.0, 0.5, 0.05, 0.2, 0.02, 0.05, 5.0, 0.05];

/// Typical scale of each of the [`ROCKET_METRICS`]: a level shift moves a series by 1 to 1.5
/// times it, a spike by 2 to 3 times it plus half the reading.
pub const ROCKET_ANOMALY_SCALE: [f64; 8] = [5000.0, 300.0, 15.0, 40.0, 30.0, 25.0, 1500.0, 30.0];

/// The event types a device emits.
pub const DEVICE_EVENTS: [&str; 5] = ["BREATH", "SPIRAL", "BLOOM", "TOUCH", "SACRED_PHRASE"];

/// The event type of meetings, the only one guests emit.
pub const MEETING_EVENT: &str = "GATHER";

/// Guests of each room, `guest-{r}-0` to `guest-{r}-{GUESTS_PER_ROOM-1}`.
pub const GUESTS_PER_ROOM: usize = 4;

/// Meetings are decided per (room, block of this many ticks): at most one per block, lying
/// entirely inside it.
pub const MEETING_BLOCK_TICKS: u64 = 300;

/// A meeting's last event is followed by at least this many ticks without its room's events
/// before its block ends, so two meetings of a room are more than this many ticks apart.
pub const MEETING_QUIET_TICKS: u64 = 90;

/// Anomalies are decided per block of this many ticks of a series; each lies inside its block.
pub const ANOMALY_BLOCK_TICKS: u64 = 128;

/// The kinds of injected anomalies, as written in [`Label::kind`].
pub const ANOMALY_KINDS: [&str; 3] = ["spike", "level_shift", "stuck"];

/// Readings are rounded to this many decimals, as a sensor would report them.
const DECIMALS: f64 = 1000.0;

/// Metrics whose readings cannot be negative: noise around zero is folded back (`|x|`).
const NON_NEGATIVE: [bool; 8] = [true, true, false, false, true, false, true, false];

/// Standard gravity, m/s².
const G: f64 = 9.806_65;
/// Sea-level pressure, kPa.
const P0_KPA: f64 = 101.325;
/// Scale height of the atmosphere, m.
const SCALE_HEIGHT_M: f64 = 8400.0;
/// Seconds on the pad before lift-off in each cycle.
const PRELAUNCH_S: f64 = 60.0;
/// Seconds of refuelling after landing.
const REFUEL_S: f64 = 120.0;
/// Speed lost to gravity and drag during the burn, m/s per s.
const BURN_LOSS: f64 = 4.5;

/// Hash domains, so that draws for different purposes never coincide.
const DOMAIN_FLIGHT: u64 = 1;
const DOMAIN_NOISE: u64 = 2;
const DOMAIN_ANOMALY: u64 = 3;
const DOMAIN_DEVICE: u64 = 4;
const DOMAIN_DEVICE_TICK: u64 = 5;
const DOMAIN_RITUAL: u64 = 6;
const DOMAIN_PAIR: u64 = 7;
const DOMAIN_MEETING: u64 = 8;

/// Ritual blocks of device events.
const RITUAL_BLOCK_TICKS: u64 = 32;
const RITUAL_PROBABILITY: f64 = 0.25;
/// Share of device pairs that are entangled, and how often the odd device echoes.
const ENTANGLED_SHARE: f64 = 0.3;
const ECHO_PROBABILITY: f64 = 0.8;
/// Cumulative weights of [`DEVICE_EVENTS`] for spontaneous events.
const EVENT_CUMULATIVE: [f64; 5] = [0.34, 0.59, 0.79, 0.99, 1.0];
/// Share of (room, block) pairs with a meeting.
const MEETING_PROBABILITY: f64 = 0.6;
/// A meeting has one event every this many ticks.
const MEETING_STEP_TICKS: u64 = 2;
/// A meeting lasts from its first to its last event between these many ticks (both even).
const MEETING_MIN_TICKS: u64 = 20;
const MEETING_MAX_TICKS: u64 = 120;
/// Participants of a meeting, at least and at most.
const MEETING_MIN_GUESTS: usize = 2;
const MEETING_MAX_GUESTS: usize = 4;

/// Parameters of the rocket telemetry generator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RocketParams {
    /// Number of vehicles, `veh-0` to `veh-{vehicles-1}`.
    pub vehicles: usize,
    /// Number of ticks; each vehicle reports all its metrics once per tick.
    pub ticks: u64,
    /// Event time between ticks, ms.
    pub interval_ms: i64,
    /// Event time of tick 0, epoch ms.
    pub start_ms: i64,
    /// Seed of every draw.
    pub seed: u64,
    /// Expected anomalies per series per tick (at most one per block of 128 ticks).
    pub anomaly_rate: f64,
}

impl Default for RocketParams {
    fn default() -> Self {
        Self {
            vehicles: 10,
            ticks: 3600,
            interval_ms: 1000,
            start_ms: DEFAULT_START_MS,
            seed: 42,
            anomaly_rate: 1.0 / 2000.0,
        }
    }
}

/// 2026-01-01T00:00:00Z.
const DEFAULT_START_MS: i64 = 1_767_225_600_000;

impl RocketParams {
    /// The keys [`RocketParams::parse`] accepts.
    pub const KEYS: [&str; 6] = [
        "vehicles",
        "ticks",
        "interval_ms",
        "start_ms",
        "seed",
        "anomaly_rate",
    ];

    /// Parses `vehicles=1000&ticks=250&seed=7&interval_ms=100&anomaly_rate=0.001`; keys not
    /// given keep their defaults, unknown keys are an error that lists the valid ones.
    ///
    /// # Examples
    /// ```
    /// use vigil_datasets::generator::RocketParams;
    /// let spec = RocketParams::parse("vehicles=1000&ticks=250").unwrap();
    /// assert_eq!((spec.vehicles, spec.ticks, spec.seed), (1000, 250, 42));
    /// assert!(RocketParams::parse("cars=3").is_err());
    /// ```
    pub fn parse(query: &str) -> anyhow::Result<RocketParams> {
        let mut spec = RocketParams::default();
        parse_query(query, "gen:rocket", &Self::KEYS, |key, value| {
            match key {
                "vehicles" => spec.vehicles = value.parse()?,
                "ticks" => spec.ticks = value.parse()?,
                "interval_ms" => spec.interval_ms = value.parse()?,
                "start_ms" => spec.start_ms = value.parse()?,
                "seed" => spec.seed = value.parse()?,
                _ => spec.anomaly_rate = value.parse()?,
            }
            Ok(())
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks that the spec generates something and that every event time is in vigil's range.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.vehicles >= 1,
            "gen:rocket: vehicles must be at least 1"
        );
        anyhow::ensure!(
            self.anomaly_rate.is_finite() && (0.0..=1.0).contains(&self.anomaly_rate),
            "gen:rocket: anomaly_rate must be between 0 and 1, got {}",
            self.anomaly_rate
        );
        validate_time("gen:rocket", self.ticks, self.interval_ms, self.start_ms)
    }

    /// Event time of a tick, epoch ms.
    pub fn tick_ts(&self, tick: u64) -> i64 {
        tick_ts(self.start_ms, self.interval_ms, tick)
    }

    /// Number of readings the spec generates.
    pub fn readings(&self) -> u64 {
        self.vehicles as u64 * ROCKET_METRICS.len() as u64 * self.ticks
    }
}

/// Parameters of the device event generator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceParams {
    /// Number of devices, `dev-0` to `dev-{devices-1}`.
    pub devices: usize,
    /// Number of ticks; each device emits at most one event per tick.
    pub ticks: u64,
    /// Event time between ticks, ms.
    pub interval_ms: i64,
    /// Event time of tick 0, epoch ms.
    pub start_ms: i64,
    /// Seed of every draw.
    pub seed: u64,
    /// Number of rooms holding meetings, `room-0` to `room-{rooms-1}`, each with
    /// [`GUESTS_PER_ROOM`] guests; 0 (the default) plants no meetings and no guests.
    pub rooms: usize,
}

impl Default for DeviceParams {
    fn default() -> Self {
        Self {
            devices: 50,
            ticks: 3600,
            interval_ms: 1000,
            start_ms: DEFAULT_START_MS,
            seed: 42,
            rooms: 0,
        }
    }
}

impl DeviceParams {
    /// The keys [`DeviceParams::parse`] accepts.
    pub const KEYS: [&str; 6] = [
        "devices",
        "ticks",
        "interval_ms",
        "start_ms",
        "seed",
        "rooms",
    ];

    /// Parses `devices=200&ticks=600&seed=7&interval_ms=100&rooms=4`; keys not given keep their
    /// defaults, unknown keys are an error that lists the valid ones.
    ///
    /// # Examples
    /// ```
    /// use vigil_datasets::generator::DeviceParams;
    /// let spec = DeviceParams::parse("devices=200&seed=7").unwrap();
    /// assert_eq!((spec.devices, spec.ticks, spec.seed, spec.rooms), (200, 3600, 7, 0));
    /// let spec = DeviceParams::parse("devices=200&rooms=4").unwrap();
    /// assert_eq!(spec.sources(), 200 + 4 * 4);
    /// assert!(DeviceParams::parse("vehicles=3").is_err());
    /// ```
    pub fn parse(query: &str) -> anyhow::Result<DeviceParams> {
        let mut spec = DeviceParams::default();
        parse_query(query, "gen:devices", &Self::KEYS, |key, value| {
            match key {
                "devices" => spec.devices = value.parse()?,
                "ticks" => spec.ticks = value.parse()?,
                "interval_ms" => spec.interval_ms = value.parse()?,
                "start_ms" => spec.start_ms = value.parse()?,
                "seed" => spec.seed = value.parse()?,
                _ => spec.rooms = value.parse()?,
            }
            Ok(())
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks that the spec generates something and that every event time is in vigil's range.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.devices >= 1, "gen:devices: devices must be at least 1");
        anyhow::ensure!(
            self.rooms
                .checked_mul(GUESTS_PER_ROOM)
                .and_then(|guests| guests.checked_add(self.devices))
                .is_some(),
            "gen:devices: {} devices and {} rooms are too many sources",
            self.devices,
            self.rooms
        );
        validate_time("gen:devices", self.ticks, self.interval_ms, self.start_ms)
    }

    /// Event time of a tick, epoch ms.
    pub fn tick_ts(&self, tick: u64) -> i64 {
        tick_ts(self.start_ms, self.interval_ms, tick)
    }

    /// Number of sources [`device_tick`] generates: the devices, then the guests of every room.
    /// Pass `0..spec.sources()` to generate a whole tick.
    pub fn sources(&self) -> usize {
        self.devices
            .saturating_add(self.rooms.saturating_mul(GUESTS_PER_ROOM))
    }
}

/// Parses `key=value&…` pairs, calling `set` for each; unknown or repeated keys are errors.
fn parse_query(
    query: &str,
    what: &str,
    keys: &[&str],
    mut set: impl FnMut(&str, &str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let valid = keys.join(", ");
    let mut seen: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("{what}: `{pair}` is not key=value; valid keys: {valid}");
        };
        if !keys.contains(&key) {
            bail!("{what}: unknown key `{key}`; valid keys: {valid}");
        }
        if seen.contains(&key) {
            bail!("{what}: key `{key}` is given twice");
        }
        seen.push(key);
        set(key, value).with_context(|| format!("{what}: invalid value `{value}` for {key}"))?;
    }
    Ok(())
}

fn validate_time(what: &str, ticks: u64, interval_ms: i64, start_ms: i64) -> anyhow::Result<()> {
    anyhow::ensure!(ticks >= 1, "{what}: ticks must be at least 1");
    anyhow::ensure!(interval_ms >= 1, "{what}: interval_ms must be at least 1");
    let last = i128::from(start_ms) + i128::from(ticks - 1) * i128::from(interval_ms);
    anyhow::ensure!(
        start_ms >= 0 && last <= i128::from(MAX_TS_MS),
        "{what}: event times from start_ms={start_ms} over {ticks} ticks of {interval_ms} ms leave \
         1970..9999; choose a smaller start_ms, ticks or interval_ms"
    );
    Ok(())
}

fn tick_ts(start_ms: i64, interval_ms: i64, tick: u64) -> i64 {
    let tick = i64::try_from(tick).unwrap_or(i64::MAX);
    start_ms.saturating_add(tick.saturating_mul(interval_ms))
}

/// One injected anomaly: the ground truth for evaluating the guards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// The vehicle, `veh-{i}`.
    pub source: String,
    /// The metric, one of [`ROCKET_METRICS`].
    pub name: String,
    /// One of [`ANOMALY_KINDS`]: `spike`, `level_shift` or `stuck`.
    pub kind: String,
    /// Event time of the first anomalous reading, epoch ms.
    pub start_ms: i64,
    /// Event time of the last anomalous reading (inclusive), epoch ms.
    pub end_ms: i64,
}

/// Every anomaly injected into the ticks of `spec`, in the order the streams reach them:
/// by `start_ms`, then vehicle index, then metric order. An anomaly that runs past the last
/// tick ends at the last tick.
pub fn rocket_labels(spec: &RocketParams) -> Vec<Label> {
    let mut found = Vec::new();
    for block in 0..spec.ticks.div_ceil(ANOMALY_BLOCK_TICKS) {
        for vehicle in 0..spec.vehicles {
            for metric in 0..ROCKET_METRICS.len() {
                if let Some(anomaly) = anomaly_at(spec, vehicle, metric, block)
                    && anomaly.start < spec.ticks
                {
                    let end = (anomaly.start + anomaly.len).min(spec.ticks) - 1;
                    found.push((anomaly.start, vehicle, metric, anomaly.kind, end));
                }
            }
        }
    }
    found.sort_unstable_by_key(|&(start, vehicle, metric, ..)| (start, vehicle, metric));
    found
        .into_iter()
        .map(|(start, vehicle, metric, kind, end)| Label {
            source: format!("veh-{vehicle}"),
            name: ROCKET_METRICS[metric].to_owned(),
            kind: ANOMALY_KINDS[kind as usize].to_owned(),
            start_ms: spec.tick_ts(start),
            end_ms: spec.tick_ts(end),
        })
        .collect()
}

/// Emits the readings of one tick for the vehicles `sources`, in (vehicle, metric) order. Every
/// reading has `seq` = `tick`. Defined for any tick and vehicle index, but [`rocket_labels`]
/// covers only the ticks and vehicles of `spec`.
pub fn rocket_tick(
    spec: &RocketParams,
    tick: u64,
    sources: Range<usize>,
    out: &mut impl FnMut(Reading),
) {
    let ts = spec.tick_ts(tick);
    let mut source = String::with_capacity(16);
    for vehicle in sources {
        source.clear();
        // Writing into a String cannot fail.
        let _ = write!(source, "veh-{vehicle}");
        let flight = Flight::new(spec.seed, vehicle);
        let profile = flight.profile(tick);
        for (metric, name) in ROCKET_METRICS.iter().enumerate() {
            let value = rocket_value(spec, &flight, &profile, vehicle, metric, tick);
            out(Reading::new(&source, name, ts, value).with_seq(tick));
        }
    }
}

/// The noiseless flight profile of `vehicle`'s metric (an index into [`ROCKET_METRICS`]) at
/// `tick`: what the readings would be without noise and anomalies. `None` when `metric` is not
/// an index into [`ROCKET_METRICS`].
pub fn rocket_profile(
    spec: &RocketParams,
    vehicle: usize,
    metric: usize,
    tick: u64,
) -> Option<f64> {
    Flight::new(spec.seed, vehicle)
        .profile(tick)
        .get(metric)
        .copied()
}

/// All readings of `spec`, tick-major: tick 0 of every vehicle, then tick 1, and so on.
pub fn rocket_readings(spec: &RocketParams) -> impl Iterator<Item = Reading> + use<> {
    let spec = spec.clone();
    (0..spec.ticks).flat_map(move |tick| {
        let mut readings = Vec::with_capacity(spec.vehicles * ROCKET_METRICS.len());
        rocket_tick(&spec, tick, 0..spec.vehicles, &mut |r| readings.push(r));
        readings
    })
}

/// Writes all readings of `spec` as NDJSON (tick-major, one [`Reading`] per line in its serde
/// form) and returns the number of lines. Give it a buffered writer; it never flushes.
pub fn write_rocket_ndjson(spec: &RocketParams, out: &mut impl Write) -> io::Result<u64> {
    write_ndjson(spec.ticks, out, |tick, mut emit| {
        rocket_tick(spec, tick, 0..spec.vehicles, &mut emit)
    })
}

/// Writes all events of `spec` as NDJSON (tick-major, one [`Reading`] per line in its serde
/// form, except that the `attrs` of meeting events are written as the JSON object they hold,
/// which is what the NDJSON loader reads) and returns the number of lines. Give it a buffered
/// writer; it never flushes.
pub fn write_device_ndjson(spec: &DeviceParams, out: &mut impl Write) -> io::Result<u64> {
    write_ndjson(spec.ticks, out, |tick, mut emit| {
        device_tick(spec, tick, 0..spec.sources(), &mut emit)
    })
}

fn write_ndjson<W: Write>(
    ticks: u64,
    out: &mut W,
    mut generate: impl FnMut(u64, &mut dyn FnMut(Reading)),
) -> io::Result<u64> {
    let mut lines = 0u64;
    let mut failure = None;
    for tick in 0..ticks {
        generate(tick, &mut |reading| {
            if failure.is_some() {
                return;
            }
            let written = write_line(&mut *out, &reading)
                .map_err(io::Error::from)
                .and_then(|()| out.write_all(b"\n"));
            match written {
                Ok(()) => lines += 1,
                Err(e) => failure = Some(e),
            }
        });
        if let Some(e) = failure.take() {
            return Err(e);
        }
    }
    Ok(lines)
}

/// A [`Reading`] whose `attrs` is written as the JSON object it holds: the shape the NDJSON
/// loader reads, which rejects `attrs` given as a string. The fields and their order are those
/// of the serde form of [`Reading`].
#[derive(Serialize)]
struct LineWithAttrs<'a> {
    event_id: &'a str,
    source: &'a str,
    kind: Kind,
    name: &'a str,
    ts: i64,
    seq: Option<u64>,
    value: f64,
    attrs: serde_json::Value,
    payload: Option<&'a [u8]>,
    key_id: Option<&'a str>,
}

/// Writes one NDJSON line without its newline: the serde form of `reading`, with `attrs` as an
/// object when it holds one.
fn write_line(out: &mut impl Write, reading: &Reading) -> serde_json::Result<()> {
    let attrs = reading
        .attrs
        .as_deref()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .filter(serde_json::Value::is_object);
    match attrs {
        None => serde_json::to_writer(out, reading),
        Some(attrs) => serde_json::to_writer(
            out,
            &LineWithAttrs {
                event_id: &reading.event_id,
                source: &reading.source,
                kind: reading.kind,
                name: &reading.name,
                ts: reading.ts,
                seq: reading.seq,
                value: reading.value,
                attrs,
                payload: reading.payload.as_deref(),
                key_id: reading.key_id.as_deref(),
            },
        ),
    }
}

/// Emits the events of one tick for the sources `sources`, in source order: at most one event
/// per source, `kind` = [`Kind::Event`], `seq` = `tick`, `value` = intensity in [0, 1].
///
/// Sources `0..spec.devices` are the devices `dev-{i}`; the next ones, up to
/// [`DeviceParams::sources`], are the guests, `guest-{r}-{j}` being source
/// `spec.devices + r * GUESTS_PER_ROOM + j`. Guests emit only [`MEETING_EVENT`], with `attrs` =
/// `{"room":"room-{r}"}`. Indices from [`DeviceParams::sources`] on emit nothing.
pub fn device_tick(
    spec: &DeviceParams,
    tick: u64,
    sources: Range<usize>,
    out: &mut impl FnMut(Reading),
) {
    let ts = spec.tick_ts(tick);
    let mut source = String::with_capacity(16);
    // The meeting of the room last looked at: its guests are consecutive sources.
    let mut room_meeting: Option<(usize, Option<Meeting>)> = None;
    for index in sources.start..sources.end.min(spec.sources()) {
        if index < spec.devices {
            if let Some((event, intensity)) = device_event(spec.seed, index, tick) {
                source.clear();
                // Writing into a String cannot fail.
                let _ = write!(source, "dev-{index}");
                let mut reading =
                    Reading::new(&source, DEVICE_EVENTS[event], ts, intensity).with_seq(tick);
                reading.kind = Kind::Event;
                out(reading);
            }
            continue;
        }
        let guest = index - spec.devices;
        let (room, seat) = (guest / GUESTS_PER_ROOM, guest % GUESTS_PER_ROOM);
        if room_meeting
            .as_ref()
            .is_none_or(|(cached, _)| *cached != room)
        {
            room_meeting = Some((
                room,
                meeting_at(spec.seed, room, tick / MEETING_BLOCK_TICKS),
            ));
        }
        if let Some((_, Some(meeting))) = &room_meeting
            && meeting.speaker(tick) == Some(seat)
        {
            source.clear();
            // Writing into a String cannot fail.
            let _ = write!(source, "guest-{room}-{seat}");
            let intensity = meeting_intensity(spec.seed, room, tick);
            let mut reading = Reading::new(&source, MEETING_EVENT, ts, intensity).with_seq(tick);
            reading.kind = Kind::Event;
            reading.attrs = Some(room_attrs(room));
            out(reading);
        }
    }
}

/// All events of `spec`, tick-major: in each tick the devices, then the guests.
pub fn device_events(spec: &DeviceParams) -> impl Iterator<Item = Reading> + use<> {
    let spec = spec.clone();
    (0..spec.ticks).flat_map(move |tick| {
        let mut events = Vec::new();
        device_tick(&spec, tick, 0..spec.sources(), &mut |r| events.push(r));
        events
    })
}

/// The entangled device pairs of `spec` (`dev-{2k}`, `dev-{2k+1}`): the ground truth for
/// co-occurrence. The second device echoes the first one's events one tick later.
pub fn device_pairs(spec: &DeviceParams) -> Vec<(String, String)> {
    (0..spec.devices / 2)
        .filter(|&pair| entangled(spec.seed, pair as u64))
        .map(|pair| (format!("dev-{}", 2 * pair), format!("dev-{}", 2 * pair + 1)))
        .collect()
}

/// The ground truth of the structures planted in the device events of a spec: what the pattern,
/// co-occurrence and session operators must find. See [`device_truth`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceTruth {
    /// The planted event sequences: the rituals' `[BREATH, SPIRAL]`, `[SPIRAL, BLOOM]` and
    /// `[BREATH, SPIRAL, BLOOM]`, each on consecutive ticks of one device.
    pub sequences: Vec<Vec<String>>,
    /// The entangled device pairs, as [`device_pairs`] lists them.
    pub pairs: Vec<(String, String)>,
    /// Every planted meeting, by start time and then room.
    pub sessions: Vec<TruthSession>,
}

/// One planted meeting: the session a session window over its room's events must find.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruthSession {
    /// The room, `room-{r}`, as in the events' `attrs`.
    pub room: String,
    /// Event time of the meeting's first event, epoch ms.
    pub start_ms: i64,
    /// Event time of the meeting's last event (inclusive), epoch ms.
    pub end_ms: i64,
    /// The guests that emitted its events, `guest-{r}-{j}`, sorted.
    pub participants: Vec<String>,
    /// Number of its events.
    pub events: u64,
}

/// The ground truth of `spec`'s device events, computed from the draws, not from the events.
///
/// `sessions` lists every meeting of the rooms of `spec` that starts within its ticks; a
/// meeting that runs past the last tick is cut there, and then lists only the events generated
/// and the guests that emitted them. In event time, the events of a meeting are exactly
/// `2 * interval_ms` apart, and the last event of a meeting and the first of the room's next
/// one are more than `90 * interval_ms` apart. So a session window keyed by room (the `room` of
/// the `GATHER` events' `attrs`) with an inactivity gap from `2 * interval_ms` to
/// `60 * interval_ms` must find exactly these sessions: same room, first and last event times,
/// participants and event counts. (At exactly `2 * interval_ms`, an operator that closes a
/// session when the gap *reaches* its limit splits every meeting; any larger gap up to 60 ticks
/// is safe either way.)
///
/// # Examples
/// ```
/// use vigil_datasets::generator::{DeviceParams, device_truth};
/// let spec = DeviceParams::parse("devices=10&ticks=3000&rooms=2").unwrap();
/// let truth = device_truth(&spec);
/// assert_eq!(truth.sequences.len(), 3);
/// assert!(!truth.sessions.is_empty());
/// for session in &truth.sessions {
///     assert!((2..=4).contains(&session.participants.len()));
///     assert_eq!((session.end_ms - session.start_ms) / 2000 + 1, session.events as i64);
/// }
/// ```
pub fn device_truth(spec: &DeviceParams) -> DeviceTruth {
    let ritual = &DEVICE_EVENTS[..3];
    let sequences = [&ritual[..2], &ritual[1..], ritual]
        .iter()
        .map(|sequence| sequence.iter().map(|&event| event.to_owned()).collect())
        .collect();
    let mut found = Vec::new();
    for block in 0..spec.ticks.div_ceil(MEETING_BLOCK_TICKS) {
        for room in 0..spec.rooms {
            if let Some(meeting) = meeting_at(spec.seed, room, block)
                && meeting.start < spec.ticks
            {
                found.push((meeting.start, room, meeting));
            }
        }
    }
    found.sort_unstable_by_key(|&(start, room, _)| (start, room));
    let sessions = found
        .into_iter()
        .map(|(start, room, meeting)| {
            let last = meeting.end().min(spec.ticks - 1);
            let events = (last - start) / MEETING_STEP_TICKS + 1;
            let speakers = (events as usize).min(meeting.count);
            let mut participants: Vec<String> = meeting.guests[..speakers]
                .iter()
                .map(|seat| format!("guest-{room}-{seat}"))
                .collect();
            participants.sort_unstable();
            TruthSession {
                room: format!("room-{room}"),
                start_ms: spec.tick_ts(start),
                end_ms: spec.tick_ts(start + (events - 1) * MEETING_STEP_TICKS),
                participants,
                events,
            }
        })
        .collect();
    DeviceTruth {
        sequences,
        pairs: device_pairs(spec),
        sessions,
    }
}

// ----- Draws -----

/// A 128-bit hash of (domain, a, b, c) under `seed`: the source of every random draw.
fn draw(seed: u64, domain: u64, a: u64, b: u64, c: u64) -> (u64, u64) {
    let mut bytes = [0u8; 32];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip([domain, a, b, c]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    let hash = xxhash_rust::xxh3::xxh3_128_with_seed(&bytes, seed);
    (hash as u64, (hash >> 64) as u64)
}

/// A uniform number in [0, 1) from the top 53 bits.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform number in [0, 1) from 32 bits.
fn unit32(bits: u64) -> f64 {
    (bits & 0xffff_ffff) as f64 * (1.0 / (1u64 << 32) as f64)
}

/// Approximately standard normal noise: the Irwin–Hall sum of four uniforms, centred and scaled
/// to unit variance; bounded at ±2√3.
fn noise(seed: u64, vehicle: usize, metric: usize, tick: u64) -> f64 {
    let (lo, hi) = draw(seed, DOMAIN_NOISE, vehicle as u64, metric as u64, tick);
    let sum = unit32(lo) + unit32(lo >> 32) + unit32(hi) + unit32(hi >> 32);
    (sum - 2.0) * 3f64.sqrt()
}

// ----- Rocket flights -----

/// A vehicle's flight, drawn from (seed, vehicle). Times are seconds after lift-off.
struct Flight {
    period: u64,
    phase: u64,
    burn_s: f64,
    accel0: f64,
    /// Share of the vehicle's mass burnt by the end of the burn (acceleration a0 / (1 - k x)).
    burnt: f64,
    pitch_burn: f64,
    vz_burn: f64,
    vx_burn: f64,
    h_burn: f64,
    apogee_s: f64,
    h_apogee: f64,
    descent_s: f64,
    land_s: f64,
    thrust_kn: f64,
    fuel_left: f64,
    temp_pad: f64,
}

impl Flight {
    fn new(seed: u64, vehicle: usize) -> Flight {
        let (a, b) = draw(seed, DOMAIN_FLIGHT, vehicle as u64, 0, 0);
        let (c, d) = draw(seed, DOMAIN_FLIGHT, vehicle as u64, 1, 0);
        let (e, f) = draw(seed, DOMAIN_FLIGHT, vehicle as u64, 2, 0);
        let burn_s = 150.0 + 20.0 * unit32(a);
        let accel0 = 11.0 + 2.0 * unit32(a >> 32);
        let accel_burn = 30.0 + 6.0 * unit32(b);
        let pitch_burn = (22.0 + 10.0 * unit32(b >> 32)).to_radians();
        let burnt = 1.0 - accel0 / accel_burn;
        let v_burn = -(accel0 * burn_s / burnt) * (1.0 - burnt).ln() - BURN_LOSS * burn_s;
        let vz_burn = v_burn * pitch_burn.sin();
        let vx_burn = v_burn * pitch_burn.cos();
        // Altitude grows as x^2.5 during the burn, which meets the coast with the same climb rate.
        let h_burn = vz_burn * burn_s / 2.5;
        let apogee_s = burn_s + vz_burn / G;
        let h_apogee = h_burn + vz_burn * vz_burn / (2.0 * G);
        let descent_s = 250.0 + 60.0 * unit32(c);
        let land_s = apogee_s + descent_s;
        let wait_s = 60.0 + 300.0 * unit32(c >> 32);
        let period = (PRELAUNCH_S + land_s + REFUEL_S + wait_s).ceil() as u64;
        Flight {
            period,
            phase: e % period,
            burn_s,
            accel0,
            burnt,
            pitch_burn,
            vz_burn,
            vx_burn,
            h_burn,
            apogee_s,
            h_apogee,
            descent_s,
            land_s,
            thrust_kn: 7000.0 + 1200.0 * unit32(d),
            fuel_left: 6.0 + 6.0 * unit32(d >> 32),
            temp_pad: 8.0 + 17.0 * unit(f),
        }
    }

    /// Altitude (m), vertical and horizontal velocity (m/s) at mission time `m`.
    fn kinematics(&self, m: f64) -> (f64, f64, f64) {
        if m < 0.0 || m >= self.land_s {
            (0.0, 0.0, 0.0)
        } else if m < self.burn_s {
            let x = m / self.burn_s;
            let v = self.speed_in_burn(m);
            let pitch = self.pitch_in_burn(x);
            (self.h_burn * x.powf(2.5), v * pitch.sin(), v * pitch.cos())
        } else if m < self.apogee_s {
            let t = m - self.burn_s;
            (
                self.h_burn + self.vz_burn * t - 0.5 * G * t * t,
                self.vz_burn - G * t,
                self.vx_burn,
            )
        } else {
            let theta = FRAC_PI_2 * (m - self.apogee_s) / self.descent_s;
            let cos2 = theta.cos() * theta.cos();
            let vz = -self.h_apogee * PI * (2.0 * theta).sin() / (2.0 * self.descent_s);
            (self.h_apogee * cos2, vz, self.vx_burn * cos2)
        }
    }

    fn speed_in_burn(&self, m: f64) -> f64 {
        let x = m / self.burn_s;
        -(self.accel0 * self.burn_s / self.burnt) * (1.0 - self.burnt * x).ln() - BURN_LOSS * m
    }

    fn pitch_in_burn(&self, x: f64) -> f64 {
        FRAC_PI_2 - (FRAC_PI_2 - self.pitch_burn) * x
    }

    fn speed(&self, m: f64) -> f64 {
        let (_, vz, vx) = self.kinematics(m);
        vz.hypot(vx)
    }

    /// The noiseless values of [`ROCKET_METRICS`] at `tick`.
    fn profile(&self, tick: u64) -> [f64; 8] {
        let cycle = (tick % self.period + self.phase) % self.period;
        let m = cycle as f64 - PRELAUNCH_S;
        let (altitude, vz, vx) = self.kinematics(m);
        let speed = vz.hypot(vx);
        let pressure = P0_KPA * (-altitude / SCALE_HEIGHT_M).exp();
        let on_ground = m < 0.0 || m >= self.land_s;
        let burning = !on_ground && m < self.burn_s;
        // Proper acceleration along the flight path, as an accelerometer reports it: 1 g at rest,
        // thrust over mass during the burn, zero in free fall, drag during the descent.
        let acceleration = if on_ground {
            G
        } else if burning {
            self.accel0 / (1.0 - self.burnt * m / self.burn_s)
        } else if m < self.apogee_s {
            0.0
        } else {
            let dv = self.speed(m + 0.5) - self.speed(m - 0.5);
            let sin_path = if speed > 1.0 { vz / speed } else { -1.0 };
            dv + G * sin_path
        };
        let pitch = if on_ground {
            90.0
        } else if burning {
            self.pitch_in_burn(m / self.burn_s).to_degrees()
        } else if m < self.apogee_s {
            vz.atan2(vx).to_degrees()
        } else {
            // The booster turns from level flight at apogee to upright at landing.
            90.0 * (FRAC_PI_2 * (m - self.apogee_s) / self.descent_s).sin()
        };
        let fuel = if m < 0.0 {
            100.0
        } else if burning {
            100.0 - (100.0 - self.fuel_left) * m / self.burn_s
        } else if m < self.land_s {
            self.fuel_left
        } else {
            self.fuel_left + (100.0 - self.fuel_left) * ((m - self.land_s) / REFUEL_S).min(1.0)
        };
        let thrust = if burning {
            self.thrust_kn * (1.0 + 0.1 * (1.0 - pressure / P0_KPA))
        } else {
            0.0
        };
        // Skin temperature: aerodynamic heating grows with the square of speed; the engines heat
        // the vehicle during the burn and it cools afterwards.
        let engine_heat = if m < 0.0 {
            0.0
        } else if burning {
            60.0 * (1.0 - (-m / 30.0).exp())
        } else {
            60.0 * (1.0 - (-self.burn_s / 30.0).exp()) * (-(m - self.burn_s) / 90.0).exp()
        };
        let temp = self.temp_pad + 35.0 * (speed / 1000.0).powi(2) + engine_heat;
        [
            altitude,
            speed,
            acceleration,
            temp,
            pressure,
            fuel,
            thrust,
            pitch,
        ]
    }
}

// ----- Rocket anomalies -----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AnomalyKind {
    Spike = 0,
    LevelShift = 1,
    Stuck = 2,
}

struct Anomaly {
    kind: AnomalyKind,
    /// First tick.
    start: u64,
    /// Number of ticks.
    len: u64,
    /// +1 or -1.
    sign: f64,
    /// In [0, 1): scales the offset.
    size: f64,
}

/// The anomaly of (vehicle, metric) in block `block`, if any.
fn anomaly_at(spec: &RocketParams, vehicle: usize, metric: usize, block: u64) -> Option<Anomaly> {
    let per_block = (spec.anomaly_rate * ANOMALY_BLOCK_TICKS as f64).min(1.0);
    if per_block <= 0.0 {
        return None;
    }
    let (decide, bits) = draw(
        spec.seed,
        DOMAIN_ANOMALY,
        vehicle as u64,
        metric as u64,
        block,
    );
    if unit(decide) >= per_block {
        return None;
    }
    let (kind, len) = match bits & 3 {
        0 | 1 => (AnomalyKind::Spike, 1),
        2 => (AnomalyKind::LevelShift, 30 + (bits >> 2) % 91),
        _ => (AnomalyKind::Stuck, 30 + (bits >> 2) % 91),
    };
    let offset = (bits >> 16) % (ANOMALY_BLOCK_TICKS - len + 1);
    Some(Anomaly {
        kind,
        start: block * ANOMALY_BLOCK_TICKS + offset,
        len,
        sign: if (bits >> 40) & 1 == 0 { 1.0 } else { -1.0 },
        size: unit32(bits >> 41),
    })
}

/// One reading: the profile plus noise, folded at zero for non-negative metrics, rounded, with
/// the anomaly of its block applied when the tick falls inside it.
fn rocket_value(
    spec: &RocketParams,
    flight: &Flight,
    profile: &[f64; 8],
    vehicle: usize,
    metric: usize,
    tick: u64,
) -> f64 {
    let noisy = |clean: f64, tick: u64| {
        let value = clean + ROCKET_NOISE_STD[metric] * noise(spec.seed, vehicle, metric, tick);
        if NON_NEGATIVE[metric] {
            value.abs()
        } else {
            value
        }
    };
    let clean = profile[metric];
    let value = match anomaly_at(spec, vehicle, metric, tick / ANOMALY_BLOCK_TICKS) {
        Some(a) if (a.start..a.start + a.len).contains(&tick) => {
            let scale = ROCKET_ANOMALY_SCALE[metric];
            match a.kind {
                AnomalyKind::Spike => {
                    noisy(clean, tick) + a.sign * ((2.0 + a.size) * scale + 0.5 * clean.abs())
                }
                AnomalyKind::LevelShift => {
                    noisy(clean, tick) + a.sign * (1.0 + 0.5 * a.size) * scale
                }
                AnomalyKind::Stuck => noisy(flight.profile(a.start)[metric], a.start),
            }
        }
        _ => noisy(clean, tick),
    };
    (value * DECIMALS).round() / DECIMALS
}

// ----- Device events -----

/// The event of `device` at `tick`, if it emits one: (index into [`DEVICE_EVENTS`], intensity).
fn device_event(seed: u64, device: usize, tick: u64) -> Option<(usize, f64)> {
    // Rituals: BREATH, SPIRAL, BLOOM on three consecutive ticks of a block.
    let block = tick / RITUAL_BLOCK_TICKS;
    let (ritual, start) = draw(seed, DOMAIN_RITUAL, device as u64, block, 0);
    if unit(ritual) < RITUAL_PROBABILITY {
        let step = (tick % RITUAL_BLOCK_TICKS).wrapping_sub(start % (RITUAL_BLOCK_TICKS - 2));
        if step < 3 {
            let (jitter, _) = draw(seed, DOMAIN_DEVICE_TICK, device as u64, tick, 1);
            let intensity = 0.5 + 0.2 * step as f64 + 0.1 * unit(jitter);
            return Some((step as usize, round_intensity(intensity)));
        }
    }
    let (spontaneous, choice) = draw(seed, DOMAIN_DEVICE_TICK, device as u64, tick, 0);
    // Entangled pairs: the odd device echoes its even partner one tick later. The partner is
    // even, so it never echoes, and this recursion is one level deep.
    if device % 2 == 1
        && entangled(seed, device as u64 / 2)
        && let Some(previous) = tick.checked_sub(1)
        && let Some((event, intensity)) = device_event(seed, device - 1, previous)
        && unit32(choice >> 32) < ECHO_PROBABILITY
    {
        return Some((event, round_intensity(0.9 * intensity)));
    }
    let (rate, _) = draw(seed, DOMAIN_DEVICE, device as u64, 0, 0);
    if unit(spontaneous) >= 0.03 + 0.12 * unit(rate) {
        return None;
    }
    let pick = unit32(choice);
    let event = EVENT_CUMULATIVE.iter().position(|&c| pick < c).unwrap_or(0);
    Some((event, round_intensity(unit(spontaneous.rotate_left(32)))))
}

fn entangled(seed: u64, pair: u64) -> bool {
    let (bits, _) = draw(seed, DOMAIN_PAIR, pair, 0, 0);
    unit(bits) < ENTANGLED_SHARE
}

// ----- Meetings -----

// A meeting fits in its block with its quiet ticks, and a room has enough guests for it.
const _: () = assert!(MEETING_MAX_TICKS + MEETING_QUIET_TICKS < MEETING_BLOCK_TICKS);
const _: () = assert!(MEETING_MIN_GUESTS >= 1 && MEETING_MAX_GUESTS <= GUESTS_PER_ROOM);
const _: () = assert!(
    MEETING_MIN_TICKS.is_multiple_of(MEETING_STEP_TICKS)
        && MEETING_MAX_TICKS.is_multiple_of(MEETING_STEP_TICKS)
);

/// A room's meeting in one block.
struct Meeting {
    /// Tick of the first event.
    start: u64,
    /// Ticks from the first to the last event, a multiple of [`MEETING_STEP_TICKS`].
    span: u64,
    /// The participants (seats in the room) in turn order, which is seat order; the first
    /// `count` are used.
    guests: [usize; MEETING_MAX_GUESTS],
    /// Number of participants.
    count: usize,
}

impl Meeting {
    /// Tick of the last event.
    fn end(&self) -> u64 {
        self.start + self.span
    }

    /// The seat that emits at `tick`, if the meeting has an event then: the k-th event comes
    /// from participant k mod `count`.
    fn speaker(&self, tick: u64) -> Option<usize> {
        let offset = tick.checked_sub(self.start)?;
        if offset > self.span || !offset.is_multiple_of(MEETING_STEP_TICKS) {
            return None;
        }
        let k = offset / MEETING_STEP_TICKS;
        Some(self.guests[(k % self.count as u64) as usize])
    }
}

/// The meeting of `room` in block `block`, if any.
fn meeting_at(seed: u64, room: usize, block: u64) -> Option<Meeting> {
    let (decide, bits) = draw(seed, DOMAIN_MEETING, room as u64, block, 0);
    if unit(decide) >= MEETING_PROBABILITY {
        return None;
    }
    let spans = (MEETING_MAX_TICKS - MEETING_MIN_TICKS) / MEETING_STEP_TICKS + 1;
    let span = MEETING_MIN_TICKS + (bits & 0xffff) % spans * MEETING_STEP_TICKS;
    // The last event leaves MEETING_QUIET_TICKS ticks before the block's end.
    let starts = MEETING_BLOCK_TICKS - MEETING_QUIET_TICKS - span;
    let start = block * MEETING_BLOCK_TICKS + ((bits >> 16) & 0xffff) % starts;
    let sizes = (MEETING_MAX_GUESTS - MEETING_MIN_GUESTS + 1) as u64;
    let count = MEETING_MIN_GUESTS + ((bits >> 32) & 0xff) as usize % sizes as usize;
    // A shuffle of the seats, whose first `count` take part.
    let mut seats: [usize; GUESTS_PER_ROOM] = std::array::from_fn(|seat| seat);
    let mut choice = bits >> 40;
    for i in (1..GUESTS_PER_ROOM).rev() {
        let j = (choice % (i as u64 + 1)) as usize;
        choice /= i as u64 + 1;
        seats.swap(i, j);
    }
    let mut guests = [0; MEETING_MAX_GUESTS];
    guests[..count].copy_from_slice(&seats[..count]);
    guests[..count].sort_unstable();
    Some(Meeting {
        start,
        span,
        guests,
        count,
    })
}

/// The intensity of the meeting event of `room` at `tick`.
fn meeting_intensity(seed: u64, room: usize, tick: u64) -> f64 {
    let (bits, _) = draw(seed, DOMAIN_MEETING, room as u64, tick, 1);
    round_intensity(0.3 + 0.7 * unit(bits))
}

/// The `attrs` of a meeting event of `room`.
fn room_attrs(room: usize) -> String {
    format!(r#"{{"room":"room-{room}"}}"#)
}

fn round_intensity(x: f64) -> f64 {
    (x.clamp(0.0, 1.0) * DECIMALS).round() / DECIMALS
}
