"""Runs SQL in DuckDB over a vigil archive and prints the results in a canonical JSON form.

The vigil test suite and benchmark compare vigil-sql with DuckDB through this script; it is
also how a user can check that the archive reads without vigil.

    python3 tests/duckdb/query.py ARCHIVE < requests.json

Standard input holds a JSON list of requests: {"sql": "...", "repeat": N}. Standard output
gets one JSON list of answers, in order: {"rows": [[...], ...], "seconds": [...]} or
{"error": "..."}. Every directory of ARCHIVE becomes a view of the same name over its
Parquet files, with the hive partition columns typed as vigil-sql types them (date DATE,
hour INTEGER).

Canonical values: integers and floats as JSON numbers, timestamps as microseconds since the
Unix epoch (UTC), dates as YYYY-MM-DD, intervals as microseconds, bytes as hex, NULL as null.
"""

import datetime
import decimal
import json
import math
import os
import sys
import time

try:
    import duckdb
except ImportError:
    sys.exit(
        "error: the DuckDB Python package is missing: run scripts/setup.sh --tests "
        "(or python3 -m pip install duckdb pyarrow)"
    )

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

# DataFusion spellings DuckDB knows under another name, so one query text runs on both.
MACROS = [
    "CREATE MACRO date_bin(width, t) AS time_bucket(width, t)",
]


def canonical(value):
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return (value - EPOCH) // datetime.timedelta(microseconds=1)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value // datetime.timedelta(microseconds=1)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return str(value)


def connect(archive):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    threads = os.environ.get("VIGIL_DUCKDB_THREADS")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    for macro in MACROS:
        con.execute(macro)
    for name in sorted(os.listdir(archive)):
        table = os.path.join(archive, name)
        if not os.path.isdir(table) or not name.isidentifier():
            continue
        files = os.path.join(table, "*", "*", "*.parquet")
        con.execute(
            f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{files}', "
            "hive_partitioning = true, hive_types = {'date': DATE, 'hour': INTEGER})"
        )
    return con


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: query.py ARCHIVE < requests.json")
    con = connect(sys.argv[1])
    answers = []
    for request in json.load(sys.stdin):
        try:
            seconds = []
            rows = []
            for _ in range(max(1, int(request.get("repeat", 1)))):
                start = time.perf_counter()
                rows = con.execute(request["sql"]).fetchall()
                seconds.append(time.perf_counter() - start)
            answers.append(
                {"rows": [[canonical(v) for v in row] for row in rows], "seconds": seconds}
            )
        except duckdb.Error as error:
            answers.append({"error": str(error)})
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
