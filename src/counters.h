/*
 * counters.h
 *	  The shared counters, one line each: HARDEN_COUNTER(id, name, help).
 *
 * Included only by pg_harden.h with HARDEN_COUNTER defined.  The name is the
 * Prometheus family without the "harden_" prefix (METRIC_PREFIX); counters end in _total.
 * Keep each module's counters together so additions stay local.
 */

/* metrics */
HARDEN_COUNTER(METRICS_SCRAPES, "metrics_scrapes_total", "Calls of metrics() and metrics_json()")

/* cache */
HARDEN_COUNTER(CACHE_HITS, "cache_hits_total", "Cache reads that found a live entry the reader may see")
HARDEN_COUNTER(CACHE_MISSES, "cache_misses_total", "Cache reads that found no entry the reader may see")
HARDEN_COUNTER(CACHE_SETS, "cache_sets_total", "Cache entries written")
HARDEN_COUNTER(CACHE_EVICTIONS, "cache_evictions_total", "Cache entries evicted to make room")
HARDEN_COUNTER(CACHE_EXPIRATIONS, "cache_expirations_total", "Cache entries removed after their TTL ran out")
HARDEN_COUNTER(CACHE_INVALIDATIONS, "cache_invalidations_total", "Cache entries removed by invalidation (pattern, tag, flush or a write to a watched table)")
HARDEN_COUNTER(CACHE_QUERIES, "cache_queries_total", "Queries run by cache_query() on a miss")
HARDEN_COUNTER(CACHE_COALESCED, "cache_coalesced_total", "cache_query() misses served by waiting for another session's computation")
HARDEN_COUNTER(CACHE_GEN_EVICTIONS, "cache_generation_evictions_total", "Write generations evicted from a full bucket of the generation table (their results become misses)")
HARDEN_COUNTER(CACHE_GEN_EXHAUSTED, "cache_generation_exhausted_total", "cache_query() results not cached because no generation slot could be had")
HARDEN_COUNTER(CACHE_DUMP_LOADED, "cache_dump_loaded_total", "Cache entries loaded from the dump file at start")
HARDEN_COUNTER(CACHE_DUMP_DROPPED, "cache_dump_dropped_total", "Cache entries of the dump file not loaded (expired, owner or database dropped, key taken or invalidated meanwhile)")
HARDEN_COUNTER(CACHE_DUMP_REJECTED, "cache_dump_rejected_total", "Cache dump files ignored as truncated, corrupt, tampered with or unreadable with the key")
HARDEN_COUNTER(CACHE_QUERY_UNTRACKED, "cache_query_untracked_total", "cache_query() results cached with a dependency whose writes are not seen (TTL capped by harden.cache_untracked_ttl)")

/* state machines */
HARDEN_COUNTER(FSM_TRANSITIONS, "fsm_transitions_total", "State-machine transitions accepted by the trigger (including ones whose transaction later rolled back)")
HARDEN_COUNTER(FSM_REJECTIONS, "fsm_rejections_total", "State-machine transitions and events refused")
HARDEN_COUNTER(FSM_TIMERS_APPLIED, "fsm_timers_applied_total", "Timed transitions applied by fsm_run_due()")
HARDEN_COUNTER(FSM_TIMERS_DROPPED, "fsm_timers_dropped_total", "Timed transitions dropped because the row had left the state (or was gone)")
HARDEN_COUNTER(FSM_TIMERS_FAILED, "fsm_timers_failed_total", "Timed transitions that raised an error and were postponed")
HARDEN_COUNTER(FSM_TIMERS_RECOVERED, "fsm_timers_recovered_total", "Timed transitions applied or dropped after failed attempts")
HARDEN_COUNTER(FSM_FORCED, "fsm_forced_total", "Rows moved by fsm_force() past the transition rules")
HARDEN_COUNTER(FSM_TIMERS_RETRIED, "fsm_timers_retried_total", "Timers run at once by fsm_timer_retry()")
HARDEN_COUNTER(FSM_TIMERS_CANCELLED, "fsm_timers_cancelled_total", "Timers deleted by fsm_timer_cancel()")

/* stock */
HARDEN_COUNTER(STOCK_TAKES, "stock_takes_total", "Stock lines deducted by stock_take, stock_take_many and stock_reserve")
HARDEN_COUNTER(STOCK_SHORTAGES, "stock_shortages_total", "Stock calls refused for insufficient stock")
HARDEN_COUNTER(STOCK_SKIPS, "stock_skips_total", "Stock calls with wait => skip that found a row locked")
HARDEN_COUNTER(STOCK_PUTS, "stock_puts_total", "Stock lines returned by stock_put")
HARDEN_COUNTER(STOCK_RESERVATIONS, "stock_reservations_total", "Reservations made by stock_reserve")
HARDEN_COUNTER(STOCK_COMMITS, "stock_commits_total", "Reservations made final by stock_commit")
HARDEN_COUNTER(STOCK_RELEASES, "stock_releases_total", "Reservations given back by stock_release and stock_release_ref")
HARDEN_COUNTER(STOCK_EXPIRATIONS, "stock_expirations_total", "Expired reservations given back by stock_run_due")
HARDEN_COUNTER(STOCK_EXPIRATIONS_FAILED, "stock_expirations_failed_total", "Expired reservations whose give-back raised an error and was postponed")
HARDEN_COUNTER(STOCK_EXPIRATIONS_RECOVERED, "stock_expirations_recovered_total", "Expired reservations given back after failed attempts")
HARDEN_COUNTER(STOCK_FORCED_RELEASES, "stock_forced_releases_total", "Reservations released by someone other than the role that made them (audited)")

/* background worker */
HARDEN_COUNTER(WORKER_RUNS, "worker_runs_total", "Runs of the background worker (each runs fsm_run_due and stock_run_due once)")
HARDEN_COUNTER(WORKER_TRANSITIONS, "worker_transitions_total", "Timed transitions applied by the background worker")
HARDEN_COUNTER(WORKER_HOLDS_RELEASED, "worker_holds_released_total", "Expired reservations given back by the background worker")
HARDEN_COUNTER(WORKER_ERRORS, "worker_errors_total", "Background worker steps that failed with an error (retried with backoff)")

/* Redis-protocol endpoint */
HARDEN_COUNTER(RESP_CONNECTIONS, "resp_connections_total", "Connections accepted by the Redis-protocol endpoint")
HARDEN_COUNTER(RESP_REJECTED, "resp_rejected_connections_total", "Redis-protocol connections refused because harden.resp_max_clients were connected")
HARDEN_COUNTER(RESP_COMMANDS, "resp_commands_total", "Commands executed by the Redis-protocol endpoint")
HARDEN_COUNTER(RESP_ERRORS, "resp_error_replies_total", "Redis-protocol commands answered with an error")
HARDEN_COUNTER(RESP_PROTOCOL_ERRORS, "resp_protocol_errors_total", "Redis-protocol connections closed for a malformed or oversized request")
HARDEN_COUNTER(RESP_OUTPUT_OVERFLOWS, "resp_output_overflows_total", "Redis-protocol connections closed because their replies were not read")
HARDEN_COUNTER(RESP_IDLE_TIMEOUTS, "resp_idle_timeouts_total", "Redis-protocol connections closed after harden.resp_idle_timeout without a complete command")
HARDEN_COUNTER(RESP_AUTH_FAILURES, "resp_auth_failures_total", "Failed Redis-protocol AUTH attempts")
HARDEN_COUNTER(RESP_HITS, "resp_keyspace_hits_total", "Redis-protocol reads that found an entry the role may see")
HARDEN_COUNTER(RESP_MISSES, "resp_keyspace_misses_total", "Redis-protocol reads that found no entry the role may see")
