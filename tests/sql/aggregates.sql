-- Aggregates over the whole archive and per series.

-- query: ordered
SELECT count(*) AS readings, count(DISTINCT source) AS vehicles, count(DISTINCT name) AS metrics,
       min(ts) AS first, max(ts) AS last
FROM telemetry;

-- query: ordered
SELECT source, name, count(*) AS n, avg(value) AS mean, min(value) AS low, max(value) AS high,
       stddev_samp(value) AS sd
FROM telemetry
GROUP BY source, name
ORDER BY source, name;

-- query: ordered
SELECT name, median(value) AS med, sum(value) AS total, var_pop(value) AS variance
FROM telemetry
GROUP BY name
ORDER BY name;

-- query: ordered
SELECT name, count(*) FILTER (WHERE value > 0) AS positive, count(*) AS n
FROM telemetry
GROUP BY name
HAVING count(*) > 100
ORDER BY name;

-- query: ordered
SELECT date, hour, count(*) AS n, count(DISTINCT source) AS vehicles
FROM telemetry
GROUP BY date, hour
ORDER BY date, hour;

-- query: ordered
SELECT source, percentile_cont(0.9) WITHIN GROUP (ORDER BY value) AS p90
FROM telemetry
WHERE name = 'temp_c'
GROUP BY source
ORDER BY source;

-- query: ordered
SELECT guard, severity, status, count(*) AS n, avg(score) AS mean_score
FROM alerts
GROUP BY guard, severity, status
ORDER BY guard, severity, status;
