-- Time bucketing: date_bin, date_trunc, extract.

-- query: ordered
SELECT date_bin(INTERVAL '15 minutes', ts) AS bucket, name, avg(value) AS mean, count(*) AS n
FROM telemetry
WHERE source = 'veh-1'
GROUP BY 1, 2
ORDER BY 1, 2;

-- query: ordered
SELECT date_trunc('hour', ts) AS h, count(*) AS n, max(value) AS high
FROM telemetry
WHERE name = 'temp_c'
GROUP BY 1
ORDER BY 1;

-- query: ordered
SELECT extract(hour FROM ts) AS h, extract(minute FROM ts) AS m, count(*) AS n
FROM telemetry
WHERE name = 'altitude_m' AND ts < TIMESTAMP '2026-01-01 00:30:00'
GROUP BY 1, 2
ORDER BY 1, 2;

-- query: ordered
SELECT date_bin(INTERVAL '1 hour', ts) AS h, source, max(value) - min(value) AS spread
FROM telemetry
WHERE name = 'fuel_pct'
GROUP BY 1, 2
ORDER BY 1, 2;
