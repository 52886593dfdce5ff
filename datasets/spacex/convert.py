#!/usr/bin/env python3
"""Converts the SES-11 launch telemetry (SpaceX webcast, OCR by shahar603) to vigil's NDJSON.

Reads `analysed.ndjson` (one row per second of flight: velocity, altitude, acceleration,
downrange distance, flight path angle, aerodynamic pressure) and `events.ndjson` (flight events
in seconds after lift-off) of the SES-11 flight, and writes `ses-11.ndjson`: one vigil
`telemetry` record per line, in the serde form of `vigil_operators::Reading`, ordered by event
time. Standard library only.

    python3 datasets/spacex/convert.py [--launch-dir DIR] [--out FILE]

The launch directory defaults to `../shared/datasets/launch/SES-11` beside the project root.
"""

import argparse
import bisect
import json
import math
from datetime import datetime, timezone
from pathlib import Path

SOURCE = "SES-11"
# SES-11 lifted off from LC-39A on 2017-10-11 at 22:53:00 UTC; upstream times count from T+0.
LAUNCH = datetime(2017, 10, 11, 22, 53, 0, tzinfo=timezone.utc)

# (upstream key, vigil metric name, factor to vigil's unit)
METRICS = [
    ("velocity", "velocity_mps", 1.0),  # m/s
    ("altitude", "altitude_km", 1.0),  # km
    ("acceleration", "acceleration_mps2", 1.0),  # m/s², including gravity
    ("q", "q_kpa", 0.001),  # aerodynamic pressure, Pa -> kPa
    ("downrange_distance", "downrange_km", 1.0),  # km
    ("angle", "angle_deg", 1.0),  # flight path angle, degrees above the horizon
]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LAUNCH_DIR = PROJECT_ROOT.parent / "shared" / "datasets" / "launch" / "SES-11"
DEFAULT_OUT = Path(__file__).resolve().parent / "ses-11.ndjson"


def read_ndjson(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def record(kind, name, ts, seq, value):
    """A telemetry record with the fields in the order vigil's serde form writes them."""
    if not math.isfinite(value):
        raise ValueError(f"{name} at seq {seq} is not finite: {value}")
    return {
        "event_id": f"{SOURCE}-{name}-{seq}",
        "source": SOURCE,
        "kind": kind,
        "name": name,
        "ts": ts,
        "seq": seq,
        "value": value,
        "attrs": None,
        "payload": None,
        "key_id": None,
    }


def convert(launch_dir):
    launch_ms = int(LAUNCH.timestamp() * 1000)
    rows = read_ndjson(launch_dir / "analysed.ndjson")
    times = [row["time"] for row in rows]
    if times != sorted(times):
        raise ValueError("analysed.ndjson is not in time order")
    # (ts, readings before events, record)
    out = []
    for seq, row in enumerate(rows):
        ts = launch_ms + round(row["time"] * 1000)
        for key, name, factor in METRICS:
            value = round(float(row[key]) * factor, 3)
            out.append((ts, 0, record("reading", name, ts, seq, value)))
    for event in read_ndjson(launch_dir / "events.ndjson"):
        for key, seconds in event.items():
            if seconds is None:
                continue  # the event was not shown in the webcast
            ts = launch_ms + round(seconds * 1000)
            # The seq of the telemetry row at the event's time.
            seq = max(bisect.bisect_right(times, seconds) - 1, 0)
            out.append((ts, 1, record("event", key.upper(), ts, seq, 1.0)))
    out.sort(key=lambda item: (item[0], item[1]))
    return [rec for _, _, rec in out]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launch-dir", type=Path, default=DEFAULT_LAUNCH_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    records = convert(args.launch_dir)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, separators=(",", ":"), ensure_ascii=False))
            f.write("\n")
    events = sum(1 for rec in records if rec["kind"] == "event")
    print(f"wrote {len(records)} records ({events} events) to {args.out}")


if __name__ == "__main__":
    main()
