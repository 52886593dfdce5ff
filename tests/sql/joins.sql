-- Alerts joined to the readings around them.

-- query: ordered
SELECT a.alert_id, count(t.event_id) AS readings, avg(t.value) AS mean
FROM alerts a
JOIN telemetry t
  ON t.source = a.source AND t.name = a.name
 AND t.ts BETWEEN a.window_start AND a.window_end
GROUP BY a.alert_id
ORDER BY a.alert_id;

-- query: ordered
SELECT t.name, count(DISTINCT a.alert_id) AS alerts, count(*) AS readings
FROM telemetry t
LEFT JOIN alerts a
  ON a.source = t.source AND a.name = t.name AND a.ts = t.ts
GROUP BY t.name
ORDER BY t.name;

-- query: ordered
SELECT source, name
FROM (SELECT DISTINCT source, name FROM telemetry) AS series
WHERE NOT EXISTS (
  SELECT 1 FROM alerts a
  WHERE a.source = series.source AND a.name = series.name AND a.guard = 'threshold'
)
ORDER BY source, name;
