/*
 * histograms.h
 *	  The shared latency histograms, one line each: HARDEN_HISTOGRAM(id, name, help).
 *
 * Included only by pg_harden.h with HARDEN_HISTOGRAM defined.  The name is the
 * Prometheus family without the "harden_" prefix; in base unit seconds.  The
 * buckets are the same for all (HARDEN_HIST_BOUNDS_NS in metrics.c).
 */

HARDEN_HISTOGRAM(CACHE_QUERY, "cache_query_duration_seconds", "Time cache_query() took to run a query on a miss and publish its result")
HARDEN_HISTOGRAM(STOCK_TAKE, "stock_take_duration_seconds", "Time of stock_take() and stock_take_many() calls that returned, lock waits included")
HARDEN_HISTOGRAM(FSM_TRANSITION, "fsm_transition_duration_seconds", "Time the state-machine trigger took to check and record an accepted transition, audit row included")
HARDEN_HISTOGRAM(WORKER_RUN, "worker_run_duration_seconds", "Time of one background worker run (fsm_run_due and stock_run_due once each)")
