-- Helpers each chapter gets (not echoed: they are not what the demo teaches).
\set ECHO none
\set VERBOSITY default
-- Runs a statement that must fail with the given SQLSTATE and shows the
-- error as a row; any other outcome (another error, or none) is an error
-- that stops the demo.
CREATE FUNCTION pg_temp.expect_error(expected text, sql text,
    OUT expected_error text, OUT message text, OUT detail text)
LANGUAGE plpgsql AS $$
DECLARE
  state text;
BEGIN
  BEGIN
    EXECUTE sql;
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL;
  END;
  IF state IS DISTINCT FROM expected THEN
    RAISE EXCEPTION 'demo: expected error % but got %: %', expected,
      coalesce(state, 'no error'), coalesce(message, sql);
  END IF;
  expected_error := state;
END $$;
-- Waits (at most 30 s) until a query returns true; stops the demo otherwise.
CREATE FUNCTION pg_temp.wait_for(cond text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  ok boolean;
BEGIN
  FOR i IN 1..300 LOOP
    EXECUTE cond INTO ok;
    IF ok THEN RETURN true; END IF;
    PERFORM pg_sleep(0.1);
    PERFORM pg_stat_clear_snapshot();   -- pg_stat_activity is read once per transaction otherwise
  END LOOP;
  RAISE EXCEPTION 'demo: timed out waiting for: %', cond;
END $$;
\set ECHO queries
