/*
 * pg_harden.h
 *	  Declarations shared between pg_harden's source files.
 */
#ifndef PG_HARDEN_H
#define PG_HARDEN_H

#include "postgres.h"

#include "port/atomics.h"
#include "portability/instr_time.h"
#include "fmgr.h"
#include "utils/elog.h"

#define PG_HARDEN_VERSION "0.5.0"

/*
 * pg_harden SQLSTATEs live in class "PH" (classes starting with I-Z are free
 * for extensions).  Every code is listed in the README.
 */
#define ERRCODE_HARDEN_NOT_PRELOADED	MAKE_SQLSTATE('P','H','0','0','1')

/* cache: PH1xx */
#define ERRCODE_HARDEN_CACHE_INVALID_KEY	MAKE_SQLSTATE('P','H','1','0','1')
#define ERRCODE_HARDEN_CACHE_WRONG_TYPE		MAKE_SQLSTATE('P','H','1','0','2')
#define ERRCODE_HARDEN_CACHE_VALUE_TOO_LARGE	MAKE_SQLSTATE('P','H','1','0','3')
#define ERRCODE_HARDEN_CACHE_INVALID_TAG	MAKE_SQLSTATE('P','H','1','0','4')
#define ERRCODE_HARDEN_CACHE_QUERY_NOT_CACHEABLE	MAKE_SQLSTATE('P','H','1','0','5')
#define ERRCODE_HARDEN_CACHE_DUMP_INVALID	MAKE_SQLSTATE('P','H','1','0','6')
#define ERRCODE_HARDEN_CACHE_DUMP_KEY		MAKE_SQLSTATE('P','H','1','0','7')
#define ERRCODE_HARDEN_CACHE_WARM_FAILED	MAKE_SQLSTATE('P','H','1','0','8')

/* state machines: PH2xx */
#define ERRCODE_HARDEN_FSM_INVALID_TRANSITION	MAKE_SQLSTATE('P','H','2','0','1')
#define ERRCODE_HARDEN_FSM_UNKNOWN_STATE	MAKE_SQLSTATE('P','H','2','0','2')
#define ERRCODE_HARDEN_FSM_INVALID_RULES	MAKE_SQLSTATE('P','H','2','0','3')
#define ERRCODE_HARDEN_FSM_UNKNOWN_MACHINE	MAKE_SQLSTATE('P','H','2','0','4')
#define ERRCODE_HARDEN_FSM_NOT_INITIAL		MAKE_SQLSTATE('P','H','2','0','5')
#define ERRCODE_HARDEN_FSM_EVENT_NOT_AVAILABLE	MAKE_SQLSTATE('P','H','2','0','6')
#define ERRCODE_HARDEN_FSM_ROW_NOT_FOUND	MAKE_SQLSTATE('P','H','2','0','7')
#define ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT	MAKE_SQLSTATE('P','H','2','0','8')
#define ERRCODE_HARDEN_FSM_STATES_IN_USE	MAKE_SQLSTATE('P','H','2','0','9')
#define ERRCODE_HARDEN_FSM_MACHINE_IN_USE	MAKE_SQLSTATE('P','H','2','1','0')
#define ERRCODE_HARDEN_FSM_AMBIGUOUS		MAKE_SQLSTATE('P','H','2','1','1')
#define ERRCODE_HARDEN_FSM_ALTERED_TABLE	MAKE_SQLSTATE('P','H','2','1','2')
#define ERRCODE_HARDEN_FSM_TRANSITION_SKIPPED	MAKE_SQLSTATE('P','H','2','1','3')
#define ERRCODE_HARDEN_FSM_UNKNOWN_TIMER	MAKE_SQLSTATE('P','H','2','1','4')
#define ERRCODE_HARDEN_FSM_TIMER_NOT_DUE	MAKE_SQLSTATE('P','H','2','1','5')

/* stock: PH3xx */
#define ERRCODE_HARDEN_STOCK_INSUFFICIENT	MAKE_SQLSTATE('P','H','3','0','1')
#define ERRCODE_HARDEN_STOCK_NOT_ATTACHED	MAKE_SQLSTATE('P','H','3','0','2')
#define ERRCODE_HARDEN_STOCK_UNKNOWN_RESERVATION	MAKE_SQLSTATE('P','H','3','0','3')
#define ERRCODE_HARDEN_STOCK_NOT_HELD		MAKE_SQLSTATE('P','H','3','0','4')
#define ERRCODE_HARDEN_STOCK_UNKNOWN_KEY	MAKE_SQLSTATE('P','H','3','0','5')
#define ERRCODE_HARDEN_STOCK_INVALID_TABLE	MAKE_SQLSTATE('P','H','3','0','6')
#define ERRCODE_HARDEN_STOCK_TABLE_CHANGED	MAKE_SQLSTATE('P','H','3','0','7')
#define ERRCODE_HARDEN_STOCK_HOLDS_ACTIVE	MAKE_SQLSTATE('P','H','3','0','8')
#define ERRCODE_HARDEN_STOCK_UPDATE_SKIPPED	MAKE_SQLSTATE('P','H','3','0','9')

/* query analysis: PH4xx */
#define ERRCODE_HARDEN_ANALYZE_NOT_PLANNABLE	MAKE_SQLSTATE('P','H','4','0','1')

/* circuit breakers: PH5xx */
#define ERRCODE_HARDEN_BREAKER_UNKNOWN		MAKE_SQLSTATE('P','H','5','0','1')
#define ERRCODE_HARDEN_BREAKER_INVALID_NAME	MAKE_SQLSTATE('P','H','5','0','2')
#define ERRCODE_HARDEN_BREAKER_INVALID_DEFINITION	MAKE_SQLSTATE('P','H','5','0','3')
#define ERRCODE_HARDEN_BREAKER_TOO_MANY		MAKE_SQLSTATE('P','H','5','0','4')

/*
 * Shared counters.  counters.h lists them once (X-macro); each becomes an
 * enum value here and a Prometheus family in metrics.c.
 */
typedef enum HardenCounter
{
#define HARDEN_COUNTER(id, name, help) HC_##id,
#include "counters.h"
#undef HARDEN_COUNTER
	HC_NUM_COUNTERS
} HardenCounter;

/* Latency histograms, listed once in histograms.h (X-macro). */
typedef enum HardenHistogram
{
#define HARDEN_HISTOGRAM(id, name, help) HH_##id,
#include "histograms.h"
#undef HARDEN_HISTOGRAM
	HH_NUM_HISTOGRAMS
} HardenHistogram;

/* Finite bucket bounds; one more bucket (+Inf) follows them. */
#define HARDEN_HIST_NBOUNDS 16

/*
 * One histogram of one database: per-bucket (not cumulative) counts, so an
 * observation is two atomic adds and _count is the sum of the buckets.
 */
typedef struct HardenHistSlot
{
	pg_atomic_uint64 buckets[HARDEN_HIST_NBOUNDS + 1];
	pg_atomic_uint64 sum_ns;
} HardenHistSlot;

/* One database's counters; slots live in shared memory (metrics.c). */
typedef struct HardenCounterSlot
{
	Oid			dboid;			/* InvalidOid = unused, or the overflow slot */
	pg_atomic_uint64 counters[HC_NUM_COUNTERS];
	HardenHistSlot hist[HH_NUM_HISTOGRAMS];
} HardenCounterSlot;

/* breaker.c */
extern void breaker_define_gucs(bool preloading);
extern Size breaker_shmem_size(void);
extern void breaker_shmem_startup(void);

/* redact.c */
extern void redact_define_gucs(bool preloading);

/* pg_harden.c */
extern bool harden_shmem_ready;
extern void harden_require_shmem(const char *feature);

/*
 * role_scope.c: pg_harden's own work as another role, search_path pinned;
 * leaving a scope (or harden_guc_restore) rolls back every setting made in
 * it, including a plain SET or set_config(..., false) by user code
 */
#define HARDEN_SEARCH_PATH "pg_catalog, pg_temp"

extern int	harden_guc_pin(void);
extern void harden_guc_restore(int nest);

typedef struct HardenRoleScope
{
	Oid			save_user;
	int			save_sec;
	int			nest;
} HardenRoleScope;

extern void harden_role_enter(HardenRoleScope *scope, Oid role, bool restricted);
extern void harden_role_leave(HardenRoleScope *scope);
extern Oid	harden_rel_owner(Oid relid);
extern Oid	harden_table_owner(const char *relname);

/*
 * subxact.c: fn(arg) in an internal subtransaction; on an error (other than
 * a cancel) rolls back, sets *error (in the caller's memory context) and
 * returns false
 */
extern bool harden_try_in_subxact(void (*fn) (void *), void *arg, ErrorData **error);

/*
 * subxact.c: in a PG_CATCH block, the error copied into cxt and cleared; a
 * cancel or an operator intervention is thrown on instead
 */
extern ErrorData *harden_catch_error(MemoryContext cxt);

/*
 * admin.c: overrides (fsm_force, timer retry and cancel, releasing another
 * role's hold) are for the table's owner and members of harden_operator,
 * and are audited
 */
#define HARDEN_OPERATOR_ROLE "harden_operator"

extern Oid	harden_operator_oid(void);
extern bool harden_may_override(Oid relowner);
extern void harden_check_override(Oid relid, const char *what, const char *object);
extern char *harden_arg_reason(FunctionCallInfo fcinfo, int argno);
extern void harden_admin_log(const char *action, const char *table, const char *item_json,
							 const char *outcome, const char *reason);
extern void harden_require_column(const char *relname, const char *column);

/*
 * log_values.c: harden.log_values, what messages and logs may show of the
 * caller's data, and redaction scopes for statements run for a caller.
 */
typedef enum HardenLogValues
{
	HARDEN_LOG_VALUES_OFF,
	HARDEN_LOG_VALUES_KEYS,
	HARDEN_LOG_VALUES_ON
} HardenLogValues;

extern int	harden_log_values;

/* May messages show statement text, literals, parameters and row values? */
static inline bool
harden_log_shows_values(void)
{
	return harden_log_values == HARDEN_LOG_VALUES_ON;
}

/* May they show cache keys (names of tables, machines, states always)? */
static inline bool
harden_log_shows_keys(void)
{
	return harden_log_values != HARDEN_LOG_VALUES_OFF;
}

/* What messages say instead of a row's key or a cache key they may not show. */
#define HARDEN_KEY_REDACTED "(key redacted)"

extern void harden_log_define_gucs(bool preloading);
extern const char *harden_log_key(const char *key);

/*
 * A statement whose text must not reach messages: active when secure or
 * harden.log_values is not on.  Begin before running it through SPI; in a
 * PG_CATCH call harden_redact_rethrow, else harden_redact_end.
 */
typedef struct HardenRedact
{
	const char *sql;
	const char *what;			/* "harden.cache_query()" */
	bool		secure;
	bool		active;
	MemoryContext cxt;
	struct HardenRedact *next;
} HardenRedact;

extern void harden_redact_begin(HardenRedact *r, const char *sql, const char *what, bool secure);
extern void harden_redact_end(HardenRedact *r);
extern void harden_redact_rethrow(HardenRedact *r) pg_attribute_noreturn();

/* standby.c: 25006 for a function that writes tables, on a standby */
extern void harden_deny_on_standby(const char *function);

/* metrics.c: counters */
extern HardenCounterSlot *harden_my_slot;
extern int	harden_max_databases;
extern void metrics_define_gucs(bool preloading);
extern Size metrics_shmem_size(void);
extern void metrics_shmem_startup(void);
extern void metrics_attach_slot(void);
extern void *harden_db_slot(void *base, int count, Size stride, Oid dboid);
extern void harden_count_db(Oid dboid, HardenCounter c, uint64 n);
extern uint64 harden_counter_value(HardenCounter c);
extern void harden_counters_reset(HardenCounter first, HardenCounter last);

extern bool harden_metrics_histograms;
extern void harden_observe(HardenHistogram h, instr_time start);

/* Start timing an operation for harden_observe(); zero when not timing. */
static inline void
harden_timer_start(instr_time *start)
{
	if (harden_metrics_histograms)
		INSTR_TIME_SET_CURRENT(*start);
	else
		INSTR_TIME_SET_ZERO(*start);
}

/*
 * Count an event for the current database.  A lock-free atomic add on this
 * backend's cached slot; a no-op when shared memory is unavailable.
 */
static inline void
harden_count(HardenCounter c, uint64 n)
{
	if (unlikely(harden_my_slot == NULL))
	{
		if (!harden_shmem_ready)
			return;
		metrics_attach_slot();
		if (harden_my_slot == NULL)
			return;
	}
	pg_atomic_fetch_add_u64(&harden_my_slot->counters[c], n);
}

/*
 * Metrics export.  Modules that own gauges register a callback that writes
 * families and samples; metrics() renders them as Prometheus text or JSON.
 */
typedef struct MetricWriter MetricWriter;
typedef void (*harden_gauge_fn) (MetricWriter *w);

extern void metrics_register_gauges(harden_gauge_fn fn);
extern void metric_family(MetricWriter *w, const char *name,
						  const char *type, const char *help);
extern void metric_sample(MetricWriter *w, double value, int nlabels,...);
extern void metric_sample_named(MetricWriter *w, const char *suffix,
								double value, int nlabels,...);

#endif							/* PG_HARDEN_H */
