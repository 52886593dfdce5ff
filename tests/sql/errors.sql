-- What vigil-sql refuses or cannot answer, with the words its message must hold.

-- query: error read-only
CREATE TABLE scratch AS SELECT * FROM telemetry;

-- query: error read-only
INSERT INTO telemetry SELECT * FROM telemetry;

-- query: error read-only
COPY (SELECT * FROM telemetry) TO 'scratch/out.parquet';

-- query: error read-only
DROP TABLE telemetry;

-- query: error No field named nosuchcolumn
SELECT nosuchcolumn FROM telemetry;

-- query: error syntax error
SELEC count(*) FROM telemetry;
