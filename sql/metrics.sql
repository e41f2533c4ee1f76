-- metrics(): Prometheus text exposition, metrics_json(), version()
SELECT harden.version() = extversion AS library_matches_extension
  FROM pg_extension WHERE extname = 'pg_harden';

-- Every line is a HELP or TYPE comment or a sample with the harden_ prefix.
SELECT count(*) > 0 AS has_lines,
       bool_and(line ~ '^# HELP harden_[a-z_]+ \S.*$'
             OR line ~ '^# TYPE harden_[a-z_]+ (counter|gauge|histogram)$'
             OR line ~ '^harden_[a-z_]+(\{[a-z_]+="([^"\\]|\\.)*"(,[a-z_]+="([^"\\]|\\.)*")*\})? (-?[0-9]+(\.[0-9]+)?(e[-+][0-9]+)?|NaN|[-+]Inf)$')
         AS every_line_valid
  FROM regexp_split_to_table(rtrim(harden.metrics(), E'\n'), E'\n') AS line;

-- Each family is introduced by HELP then TYPE, once, and its samples follow.
WITH lines AS (
  SELECT line, n FROM regexp_split_to_table(harden.metrics(), E'\n') WITH ORDINALITY AS t(line, n)
), help AS (
  SELECT split_part(line, ' ', 3) AS family, n FROM lines WHERE line LIKE '# HELP %'
), type AS (
  SELECT split_part(line, ' ', 3) AS family, n FROM lines WHERE line LIKE '# TYPE %'
)
SELECT count(*) >= 3 AS has_families,
       bool_and(t.n = h.n + 1) AS type_follows_help,
       count(DISTINCT h.family) = count(*) AS no_repeats
  FROM help h JOIN type t USING (family);

-- Counter families end in _total and carry a database label.
SELECT line
  FROM regexp_split_to_table(harden.metrics(), E'\n') AS line
 WHERE line LIKE 'harden_metrics_scrapes_total%'
   AND line NOT LIKE '%database="%';

SELECT line FROM regexp_split_to_table(harden.metrics(), E'\n') AS line
 WHERE line ~ '^harden_(info|preloaded)';

-- The scrape counter moves by one per call.
SELECT (jsonb_path_query_first(harden.metrics_json(),
          '$.metrics.harden_metrics_scrapes_total.samples[*] ? (@.labels.database == $db).value',
          jsonb_build_object('db', current_database())))::text::bigint AS before \gset
SELECT (jsonb_path_query_first(harden.metrics_json(),
          '$.metrics.harden_metrics_scrapes_total.samples[*] ? (@.labels.database == $db).value',
          jsonb_build_object('db', current_database())))::text::bigint - :before AS delta;

-- metrics_json() carries the same families as metrics().
SELECT j->>'version' = harden.version() AS version_ok,
       j->'preloaded' AS preloaded,
       j->'metrics'->'harden_metrics_scrapes_total'->>'type' AS scrape_type,
       jsonb_typeof(j->'metrics'->'harden_metrics_scrapes_total'->'samples') AS samples
  FROM harden.metrics_json() AS j;
SELECT (SELECT count(*) FROM jsonb_object_keys(harden.metrics_json()->'metrics'))
     = (SELECT count(*) FROM regexp_split_to_table(harden.metrics(), E'\n') AS l
         WHERE l LIKE '# TYPE %') AS same_families;

-- metrics_reset() zeroes this database's counters.
SELECT harden.metrics_reset();
SELECT (jsonb_path_query_first(harden.metrics_json(),
          '$.metrics.harden_metrics_scrapes_total.samples[*] ? (@.labels.database == $db).value',
          jsonb_build_object('db', current_database())))::text::bigint AS after_reset;
