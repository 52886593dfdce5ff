-- Partition pruning: a filter on date and hour reads only that partition's files.

-- query: ordered prune telemetry/date=2026-01-01/hour=02
SELECT name, count(*) AS n, avg(value) AS mean
FROM telemetry
WHERE date = DATE '2026-01-01' AND hour = 2
GROUP BY name
ORDER BY name;

-- query: ordered prune telemetry/date=2026-01-01/hour=01
-- (Not count, min and max alone: DataFusion answers those from statistics, reading no file.)
SELECT count(*) AS n, avg(value) AS mean, max(ts) AS last
FROM telemetry
WHERE hour = 1;

-- A range on ts alone prunes to the partitions it can match.
-- query: ordered prune telemetry/date=2026-01-01/hour=03
SELECT source, count(*) AS n, max(value) AS high
FROM telemetry
WHERE ts >= TIMESTAMP '2026-01-01 03:10:00' AND ts < TIMESTAMP '2026-01-01 04:00:00'
GROUP BY source
ORDER BY source;

-- query: unordered prune telemetry/date=2026-01-01/hour=02
SELECT name, min(ts) AS first
FROM telemetry
WHERE ts BETWEEN TIMESTAMP '2026-01-01 02:00:00' AND TIMESTAMP '2026-01-01 02:59:59'
GROUP BY name;
