-- The compose demo warehouse: the last 7 days of generated events and
-- metrics in the shape the demo ingestions of sluice.yaml read (the same
-- tables pkg/demo seeds), with a handful of deliberately bad rows per day
-- so the rejected-rows panels have something to show. Runs once, when the
-- warehouse volume is first created.

CREATE TABLE events (
  event_id     VARCHAR NOT NULL,
  ds           DATE NOT NULL,
  event_ts     TIMESTAMP NOT NULL,
  event_time_s BIGINT NOT NULL,
  event_name   VARCHAR,
  event_value  VARCHAR,
  user_id      VARCHAR,
  device_id    VARCHAR,
  company_id   BIGINT,
  country      VARCHAR,
  platform     VARCHAR,
  properties   VARCHAR
);

CREATE TABLE metrics (
  ds           DATE NOT NULL,
  unit_id      VARCHAR NOT NULL,
  id_type      VARCHAR NOT NULL,
  metric_name  VARCHAR NOT NULL,
  metric_value DOUBLE PRECISION,
  numerator    DOUBLE PRECISION,
  denominator  DOUBLE PRECISION
);

-- 5000 events a day, spread over the day (epoch seconds in event_time_s).
INSERT INTO events
SELECT
  'ev-' || to_char(d.ds, 'YYYYMMDD') || '-' || n,
  d.ds,
  d.ds + make_interval(secs => (n * 86399 / 5000)),
  extract(epoch FROM d.ds + make_interval(secs => (n * 86399 / 5000)))::bigint,
  (ARRAY['page_view','page_view','page_view','search','add_to_cart','checkout','purchase','signup','login'])[1 + n % 9],
  CASE WHEN n % 9 = 6 THEN to_char((n % 200) + 0.99, 'FM999.00') END,
  'user-' || (n % 900),
  'device-' || (n % 1300),
  CASE WHEN n % 4 = 0 THEN 1000 + n % 37 END,
  (ARRAY['US','GB','DE','FR','IN','BR','CA','JP'])[1 + n % 8],
  (ARRAY['web','web','ios','android'])[1 + n % 4],
  json_build_object('page', '/products/sku-' || (n % 50), 'referrer',
    (ARRAY['google','direct','newsletter'])[1 + n % 3])::text
FROM generate_series(1, 7) AS g(back)
CROSS JOIN LATERAL (SELECT current_date - g.back AS ds) AS d
CROSS JOIN generate_series(1, 5000) AS n;

-- Bad rows: no event name, no id at all, broken metadata JSON.
UPDATE events SET event_name = NULL WHERE event_id LIKE '%-17';
UPDATE events SET user_id = NULL, device_id = NULL, company_id = NULL WHERE event_id LIKE '%-29';
UPDATE events SET properties = '{"page": "/cart"' WHERE event_id LIKE '%-41';

-- Per user and day: sessions, revenue and a conversion ratio.
INSERT INTO metrics
SELECT d.ds, 'user-' || u, 'userID', m.name,
  CASE WHEN m.name = 'conversion' THEN NULL ELSE ((u * 7 + g.back) % 13)::double precision END,
  CASE WHEN m.name = 'conversion' THEN (u % 3)::double precision END,
  CASE WHEN m.name = 'conversion' THEN 3 END
FROM generate_series(1, 7) AS g(back)
CROSS JOIN LATERAL (SELECT current_date - g.back AS ds) AS d
CROSS JOIN generate_series(1, 400) AS u
CROSS JOIN (VALUES ('sessions'), ('revenue'), ('conversion')) AS m(name);

-- Bad rows: an id type the project does not have, a ratio without a denominator.
UPDATE metrics SET id_type = 'deviceID' WHERE unit_id = 'user-7' AND metric_name = 'sessions';
UPDATE metrics SET denominator = NULL WHERE unit_id = 'user-11' AND metric_name = 'conversion';
