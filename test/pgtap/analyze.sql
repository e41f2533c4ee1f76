-- Query analysis: the LIKE/ILIKE advice matrix (operator x pattern x index
-- kind), the other pattern operators, and the views and functions a plain
-- role may use.
BEGIN;
SELECT plan(42);

CREATE TABLE m (id int, t text);
INSERT INTO m SELECT i, 'word ' || i FROM generate_series(1, 200) AS i;
ANALYZE m;

-- The advice query_check() gives for each operator and pattern, as
-- 'trigram', 'pattern_ops' or 'none'.
CREATE FUNCTION pg_temp.like_advice() RETURNS TABLE (op text, pattern text, advice text)
LANGUAGE plpgsql AS $$
DECLARE
  o text;
  p text;
  s text;
BEGIN
  FOREACH o IN ARRAY ARRAY['LIKE', 'ILIKE'] LOOP
    FOREACH p IN ARRAY ARRAY['''%ord%''', '''_ord%''', '''word 1%''', '$1'] LOOP
      SELECT string_agg(q.suggestion, ' ') INTO s
        FROM harden.query_check(format('SELECT id FROM m WHERE t %s %s', o, p)) q;
      op := o;
      pattern := p;
      advice := CASE WHEN s LIKE '%gin_trgm_ops%' THEN 'trigram'
                     WHEN s LIKE '%text_pattern_ops%' THEN 'pattern_ops'
                     ELSE 'none' END;
      RETURN NEXT;
    END LOOP;
  END LOOP;
END $$;

CREATE FUNCTION pg_temp.expect(like_anchored text, other text) RETURNS TABLE (op text, pattern text, advice text)
LANGUAGE sql AS $$
  VALUES ('LIKE', '''%ord%''', other), ('LIKE', '''_ord%''', other),
         ('LIKE', '''word 1%''', like_anchored), ('LIKE', '$1', other),
         ('ILIKE', '''%ord%''', other), ('ILIKE', '''_ord%''', other),
         ('ILIKE', '''word 1%''', other), ('ILIKE', '$1', other)
$$;

SELECT results_eq('SELECT * FROM pg_temp.like_advice()',
                  $$SELECT * FROM pg_temp.expect('pattern_ops', 'trigram')$$,
                  'no index: trigram advice, text_pattern_ops for left-anchored LIKE');

CREATE INDEX m_hash ON m USING hash (t);
SELECT results_eq('SELECT * FROM pg_temp.like_advice()',
                  $$SELECT * FROM pg_temp.expect('pattern_ops', 'trigram')$$,
                  'a hash index serves no pattern');
DROP INDEX m_hash;

CREATE INDEX m_partial_pattern ON m (t text_pattern_ops) WHERE id > 100;
SELECT results_eq('SELECT * FROM pg_temp.like_advice()',
                  $$SELECT * FROM pg_temp.expect('pattern_ops', 'trigram')$$,
                  'a partial btree does not count');
DROP INDEX m_partial_pattern;

CREATE INDEX m_second ON m (id, t text_pattern_ops);
SELECT results_eq('SELECT * FROM pg_temp.like_advice()',
                  $$SELECT * FROM pg_temp.expect('pattern_ops', 'trigram')$$,
                  'a btree whose first column is another does not count');
DROP INDEX m_second;

CREATE INDEX m_pattern ON m (t text_pattern_ops);
SELECT results_eq('SELECT * FROM pg_temp.like_advice()',
                  $$SELECT * FROM pg_temp.expect('none', 'trigram')$$,
                  'text_pattern_ops serves left-anchored LIKE only');
DROP INDEX m_pattern;

CREATE INDEX m_c ON m (t COLLATE "C");
SELECT results_eq('SELECT * FROM pg_temp.like_advice()',
                  $$SELECT * FROM pg_temp.expect('none', 'trigram')$$,
                  'a btree under the C collation serves left-anchored LIKE only');
DROP INDEX m_c;

CREATE INDEX m_gin ON m USING gin (t gin_trgm_ops);
SELECT results_eq('SELECT * FROM pg_temp.like_advice()',
                  $$SELECT * FROM pg_temp.expect('none', 'none')$$,
                  'a gin trigram index serves every pattern');
DROP INDEX m_gin;

CREATE INDEX m_gist ON m USING gist (t gist_trgm_ops);
SELECT results_eq('SELECT * FROM pg_temp.like_advice()',
                  $$SELECT * FROM pg_temp.expect('none', 'none')$$,
                  'a gist trigram index serves every pattern');
DROP INDEX m_gist;

-- Patterns beyond LIKE: regular expressions, SIMILAR TO, ANY arrays and
-- expressions of the row, before and after the indexes that serve them.
CREATE FUNCTION pg_temp.pattern_advice() RETURNS TABLE (q text, advice text)
LANGUAGE plpgsql AS $$
DECLARE
  s text;
BEGIN
  FOREACH q IN ARRAY ARRAY['t ~ ''ord [0-9]''', 't ~* ''ORD''', 't SIMILAR TO ''%(1|2)''',
                           't LIKE ANY (ARRAY[''%a%'', ''%b%''])', 'lower(t) LIKE ''%ord%''',
                           't LIKE ''%''', 't ~ ''^word'''] LOOP
    SELECT string_agg(c.suggestion, ' ') INTO s FROM harden.query_check('SELECT id FROM m WHERE ' || q) c;
    advice := CASE WHEN s LIKE '%(lower(t)) public.gin_trgm_ops%' THEN 'trigram on lower(t)'
                   WHEN s LIKE '%gin_trgm_ops%' THEN 'trigram'
                   WHEN s LIKE '%text_pattern_ops%' THEN 'pattern_ops'
                   WHEN s LIKE '%IS NOT NULL%' THEN 'matches all'
                   ELSE 'none' END;
    RETURN NEXT;
  END LOOP;
END $$;
SELECT results_eq('SELECT advice FROM pg_temp.pattern_advice()',
                  $$VALUES ('trigram'), ('trigram'), ('trigram'), ('trigram'), ('trigram on lower(t)'),
                           ('matches all'), ('pattern_ops')$$,
                  'no index: trigram advice for ~, ~*, SIMILAR TO, LIKE ANY and lower(t); none for LIKE ''%''');
CREATE INDEX m_gin2 ON m USING gin (t gin_trgm_ops);
SELECT results_eq('SELECT advice FROM pg_temp.pattern_advice()',
                  $$VALUES ('none'), ('none'), ('none'), ('none'), ('trigram on lower(t)'),
                           ('matches all'), ('none')$$,
                  'a trigram index on t serves every pattern on t, not one on lower(t)');
CREATE INDEX m_gin_lower ON m USING gin (lower(t) gin_trgm_ops);
SELECT results_eq('SELECT advice FROM pg_temp.pattern_advice()',
                  $$VALUES ('none'), ('none'), ('none'), ('none'), ('none'), ('matches all'), ('none')$$,
                  'an expression index serves the expression');
DROP INDEX m_gin2, m_gin_lower;

-- A small table gets info, a large one a warning.
SELECT is((SELECT severity FROM harden.query_check('SELECT id FROM m WHERE t LIKE ''%x%''')), 'info',
          'LIKE advice on a small table is info');
SET LOCAL harden.analyze_min_rows = 100;
SELECT is((SELECT severity FROM harden.query_check('SELECT id FROM m WHERE t LIKE ''%x%''')), 'warning',
          'LIKE advice on a large table is a warning');
RESET harden.analyze_min_rows;

-- Every view and function is there for a plain role.
SELECT has_view('harden', v, 'view harden.' || v)
  FROM unnest(ARRAY['unused_indexes', 'duplicate_indexes', 'missing_fk_indexes', 'invalid_indexes',
                    'table_sizes', 'index_sizes', 'bloat', 'seq_scan_tables', 'cache_hit_ratio',
                    'slow_queries', 'blocking_locks', 'long_running_queries', 'vacuum_health',
                    'sequence_exhaustion', 'not_valid_constraints', 'connections', 'replication_slots',
                    'replication_lag', 'table_cache_hits', 'index_cache_hits', 'unread_tables',
                    'settings_advice', 'suggested_indexes', 'size_growth', 'query_slowdown']) AS v;

CREATE ROLE pgh_analyze_plain;
GRANT USAGE ON SCHEMA harden TO pgh_analyze_plain;
GRANT SELECT ON m TO pgh_analyze_plain;
CREATE FUNCTION pg_temp.read_all() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  n bigint := 0;
  c bigint;
  v text;
BEGIN
  FOREACH v IN ARRAY ARRAY['unused_indexes', 'duplicate_indexes', 'missing_fk_indexes', 'invalid_indexes',
                           'table_sizes', 'index_sizes', 'bloat', 'seq_scan_tables', 'cache_hit_ratio',
                           'slow_queries', 'blocking_locks', 'long_running_queries', 'vacuum_health',
                           'sequence_exhaustion', 'not_valid_constraints', 'connections', 'replication_slots',
                           'replication_lag', 'table_cache_hits', 'index_cache_hits', 'unread_tables',
                           'settings_advice', 'suggested_indexes', 'size_growth', 'query_slowdown'] LOOP
    EXECUTE format('SELECT count(*) FROM harden.%I', v) INTO c;
    n := n + 1;
  END LOOP;
  RETURN n;
END $$;
SET LOCAL ROLE pgh_analyze_plain;
SELECT is(pg_temp.read_all(), 25::bigint, 'a plain role reads every analysis view');
SELECT lives_ok($$ SELECT * FROM harden.health_report() $$, 'a plain role runs health_report()');
SELECT lives_ok($$ SELECT * FROM harden.query_check('SELECT * FROM m WHERE t = ''x''') $$,
                'a plain role checks a query on a table it may read');
SELECT throws_ok($$ SELECT harden.analyze_snapshot() $$, '42501', NULL,
                 'taking a snapshot is for administrators');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
