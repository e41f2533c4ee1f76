/*
 * counters.h
 *	  The shared counters, one line each: HARDEN_COUNTER(id, name, help).
 *
 * Included only by pg_harden.h with HARDEN_COUNTER defined.  The name is the
 * Prometheus family without the "pg_harden_" prefix; counters end in _total.
 * Keep each module's counters together so additions stay local.
 */

/* metrics */
HARDEN_COUNTER(METRICS_SCRAPES, "metrics_scrapes_total", "Calls of metrics() and metrics_json()")
