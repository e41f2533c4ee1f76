-- Included by pgTAP files that drive other sessions (\ir lib/sessions.sql;
-- they create dblink first).
-- connect(name): a dblink connection of that name to this database as this
-- user, made afresh; returns its backend's pid.
CREATE FUNCTION pg_temp.connect(name text) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  IF name = ANY (coalesce(dblink_get_connections(), '{}')) THEN
    PERFORM dblink_disconnect(name);
  END IF;
  PERFORM dblink_connect(name, format('dbname=%s host=%s port=%s user=%s',
    current_database(), current_setting('unix_socket_directories'),
    current_setting('port'), current_user));
  RETURN (SELECT pid FROM dblink(name, 'SELECT pg_backend_pid()') AS t(pid int));
END $$;
-- waits_on(pid, wtype): whether backend pid waits on wait_event_type wtype
-- within 20 s.
CREATE FUNCTION pg_temp.waits_on(p int, wtype text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1 .. 1000 LOOP
    PERFORM pg_stat_clear_snapshot();
    IF EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = p AND wait_event_type = wtype) THEN
      RETURN true;
    END IF;
    PERFORM pg_sleep(0.02);
  END LOOP;
  RETURN false;
END $$;
