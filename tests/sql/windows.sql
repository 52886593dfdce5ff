-- Window functions: moving averages, deltas, ranks, z-scores.

-- query: ordered
SELECT source, ts, value,
       avg(value) OVER (PARTITION BY source ORDER BY ts ROWS BETWEEN 9 PRECEDING AND CURRENT ROW) AS moving
FROM telemetry
WHERE name = 'temp_c' AND source IN ('veh-0', 'veh-2')
ORDER BY source, ts;

-- query: ordered
SELECT source, ts, value - lag(value) OVER (PARTITION BY source ORDER BY ts) AS delta
FROM telemetry
WHERE name = 'fuel_pct'
ORDER BY source, ts
LIMIT 300;

-- query: ordered
SELECT source, name, value, ts
FROM (
  SELECT source, name, value, ts,
         row_number() OVER (PARTITION BY source, name ORDER BY value DESC, ts) AS r
  FROM telemetry
) AS ranked
WHERE r <= 3
ORDER BY source, name, r;

-- query: ordered
-- A z-score against the last 30 readings; a flat window (a stuck sensor) has none.
-- DataFusion slides the variance by retraction, so a flat window can show some 1e-5 of
-- noise rather than 0: hence 1e-3 (the sensor's own noise is 2e-2).
SELECT source, ts,
       CASE WHEN stddev_samp(value) OVER w > 1e-3
            THEN (value - avg(value) OVER w) / stddev_samp(value) OVER w END AS z
FROM telemetry
WHERE name = 'pressure_kpa' AND source = 'veh-3'
WINDOW w AS (ORDER BY ts ROWS BETWEEN 29 PRECEDING AND CURRENT ROW)
ORDER BY ts;

-- query: ordered
SELECT source, count(*) AS n, sum(value) AS total,
       rank() OVER (ORDER BY sum(value) DESC) AS place
FROM telemetry
WHERE name = 'thrust_kn'
GROUP BY source
ORDER BY place, source;

-- vigil-sql's zscore helper over a sliding frame, against DuckDB's spelling of it. Exact where
-- the expression above drifts: a flat frame gives NULL, not noise.
-- query: ordered
SELECT source, ts, zscore(value) OVER w AS z
FROM telemetry
WHERE name = 'pressure_kpa' AND source = 'veh-3'
WINDOW w AS (ORDER BY ts ROWS BETWEEN 29 PRECEDING AND CURRENT ROW)
ORDER BY ts;
-- duckdb: SELECT source, ts,
-- duckdb:        CASE WHEN stddev_samp(value) OVER w > 1e-9
-- duckdb:             THEN (value - avg(value) OVER w) / stddev_samp(value) OVER w END AS z
-- duckdb: FROM telemetry
-- duckdb: WHERE name = 'pressure_kpa' AND source = 'veh-3'
-- duckdb: WINDOW w AS (ORDER BY ts ROWS BETWEEN 29 PRECEDING AND CURRENT ROW)
-- duckdb: ORDER BY ts;

-- zscore over a growing frame (everything so far), per vehicle.
-- query: ordered
SELECT source, ts, zscore(value) OVER (PARTITION BY source ORDER BY ts) AS z
FROM telemetry
WHERE name = 'temp_c'
ORDER BY source, ts;
-- duckdb: SELECT source, ts,
-- duckdb:        CASE WHEN stddev_samp(value) OVER w > 1e-9
-- duckdb:             THEN (value - avg(value) OVER w) / stddev_samp(value) OVER w END AS z
-- duckdb: FROM telemetry
-- duckdb: WHERE name = 'temp_c'
-- duckdb: WINDOW w AS (PARTITION BY source ORDER BY ts)
-- duckdb: ORDER BY source, ts;
