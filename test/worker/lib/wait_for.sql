-- Included by the worker's pgTAP files (\ir lib/wait_for.sql).
-- wait_for(condition, timeout): true once the condition holds.  Each check
-- runs with a new snapshot, so commits of the worker are seen.
CREATE FUNCTION pg_temp.wait_for(cond text, timeout interval DEFAULT '30 s')
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  ok boolean;
  deadline timestamptz := clock_timestamp() + timeout;
BEGIN
  LOOP
    EXECUTE 'SELECT coalesce((' || cond || '), false)' INTO ok;
    IF ok THEN RETURN true; END IF;
    IF clock_timestamp() > deadline THEN RETURN false; END IF;
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;
