/*
 * worker_shared.c
 *	  The background worker's settings, its shared status (one slot per
 *	  database), the worker_status view and the worker's metrics gauges.
 *
 * The launcher owns the slots: it claims one per connectable database it
 * finds in pg_database and starts that database's worker.  Workers write
 * their own progress into their slot; backends only read, or ask the
 * launcher to act through worker_request_probe() and
 * worker_release_database().
 */
#include "postgres.h"

#include <signal.h>

#include "catalog/pg_authid.h"
#include "common/pg_prng.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "pg_harden.h"
#include "worker.h"

/* How long a database's worker stays stopped for a DROP or RENAME. */
#define WORKER_PAUSE_MS 10000

bool		worker_enabled = true;
int			worker_interval_ms = 1000;
int			worker_batch_size = 1000;
char	   *worker_skip_databases = NULL;
int			worker_retry_base_ms = 10 * 1000;
int			worker_retry_max_ms = 3600 * 1000;

WorkerShared *worker_shared = NULL;

static void worker_write_metrics(MetricWriter *w);

static bool
check_skip_databases(char **newval, void **extra, GucSource source)
{
	char	   *copy = pstrdup(*newval);
	List	   *names;
	bool		ok = SplitIdentifierString(copy, ',', &names);

	if (!ok)
		GUC_check_errdetail("List syntax is invalid.");
	list_free(names);
	pfree(copy);
	return ok;
}

void
worker_define_gucs(bool preloading)
{
	DefineCustomBoolVariable("harden.worker_enabled",
							 "Runs pg_harden's background worker (needs preloading).",
							 "When off, per-database workers exit and due work waits for harden.fsm_run_due() and harden.stock_run_due() calls.",
							 &worker_enabled,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("harden.worker_interval",
							"Time between two runs of a database's background worker.",
							NULL,
							&worker_interval_ms,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("harden.worker_batch_size",
							"Most timed transitions, and most expired holds, one worker run handles.",
							"The rest waits for the next run, which follows at once.",
							&worker_batch_size,
							1000, 1, 1000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomStringVariable("harden.worker_skip_databases",
							   "Databases the background worker leaves alone (comma-separated names).",
							   "Due work in them is applied only by explicit *_run_due() calls.",
							   &worker_skip_databases,
							   "",
							   PGC_SIGHUP, GUC_LIST_INPUT,
							   check_skip_databases, NULL, NULL);
	DefineCustomIntVariable("harden.worker_retry_base",
							"First delay before a failed timer or hold expiry is tried again.",
							"Each further failure doubles it, up to harden.worker_retry_max; each delay is drawn between half and all of that (jitter).",
							&worker_retry_base_ms,
							10 * 1000, 10, 24 * 3600 * 1000,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("harden.worker_retry_max",
							"Longest delay before a failed timer or hold expiry is tried again.",
							NULL,
							&worker_retry_max_ms,
							3600 * 1000, 10, 24 * 3600 * 1000,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	metrics_register_gauges(worker_write_metrics);
}

/*
 * Delay before attempt attempts + 1 of an item that failed attempts times:
 * base * 2^(attempts - 1), at most the cap, drawn uniformly from its upper
 * half so that items that failed together do not retry together.
 */
int64
worker_retry_delay_ms(int attempts)
{
	double		d = worker_retry_base_ms;

	for (int i = 1; i < attempts && d < worker_retry_max_ms; i++)
		d *= 2;
	d = Min(d, (double) worker_retry_max_ms);
	return (int64) (d / 2 + pg_prng_double(&pg_global_prng_state) * d / 2);
}

/* This database's slot, with the lock held exclusively; NULL if none. */
static WorkerSlot *
lock_my_slot(void)
{
	WorkerSlot *slot;

	if (!harden_shmem_ready || worker_shared == NULL || !OidIsValid(MyDatabaseId))
		return NULL;
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	slot = worker_slot_find(MyDatabaseId);
	if (slot == NULL)
		LWLockRelease(worker_shared->lock);
	return slot;
}

/* An item failed in this database, whoever ran it (the worker or a call). */
void
worker_note_item_error(const char *message)
{
	WorkerSlot *slot = lock_my_slot();

	if (slot == NULL)
		return;
	slot->item_errors++;
	slot->last_item_error_at = GetCurrentTimestamp();
	strlcpy(slot->last_item_error, message, WORKER_ERROR_LEN);
	LWLockRelease(worker_shared->lock);
}

/* How many items of a kind wait for a retry, as the last run counted them. */
void
worker_note_backoff(WorkerItemKind kind, int64 n)
{
	WorkerSlot *slot = lock_my_slot();

	if (slot == NULL)
		return;
	slot->in_backoff[kind] = n;
	LWLockRelease(worker_shared->lock);
}

Size
worker_shmem_size(void)
{
	return add_size(offsetof(WorkerShared, slots),
					mul_size(harden_max_databases, sizeof(WorkerSlot)));
}

void
worker_shmem_startup(void)
{
	bool		found;

	worker_shared = ShmemInitStruct("pg_harden worker",
									worker_shmem_size(), &found);
	if (found)
		return;
	memset(worker_shared, 0, worker_shmem_size());
	worker_shared->lock = &(GetNamedLWLockTranche("pg_harden_worker"))->lock;
	pg_atomic_init_u64(&worker_shared->cache_swept, 0);
	worker_shared->nslots = harden_max_databases;
}

/* The slot of a database; the caller holds the lock. */
WorkerSlot *
worker_slot_find(Oid dboid)
{
	for (int i = 0; i < worker_shared->nslots; i++)
		if (worker_shared->slots[i].dboid == dboid)
			return &worker_shared->slots[i];
	return NULL;
}

/* Is the database listed in harden.worker_skip_databases? */
bool
worker_database_skipped(const char *dbname)
{
	char	   *copy;
	List	   *names;
	ListCell   *lc;
	bool		found = false;

	if (worker_skip_databases == NULL || worker_skip_databases[0] == '\0')
		return false;
	copy = pstrdup(worker_skip_databases);
	if (SplitIdentifierString(copy, ',', &names))
		foreach(lc, names)
			if (strcmp((char *) lfirst(lc), dbname) == 0)
				found = true;
	list_free(names);
	pfree(copy);
	return found;
}

void
worker_wake_launcher(bool rescan)
{
	Latch	   *latch;

	if (worker_shared == NULL)
		return;
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	if (rescan)
		worker_shared->rescan = true;
	latch = worker_shared->launcher_latch;
	LWLockRelease(worker_shared->lock);
	if (latch != NULL)
		SetLatch(latch);
}

/* pg_harden was installed or updated in a database: check it at once. */
void
worker_request_probe(Oid dboid)
{
	WorkerSlot *slot;
	bool		rescan = false;

	if (worker_shared == NULL)
		return;
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	slot = worker_slot_find(dboid);
	if (slot != NULL)
	{
		slot->probe = true;
		slot->next_start = 0;
	}
	else
		rescan = true;
	LWLockRelease(worker_shared->lock);
	worker_wake_launcher(rescan);
}

/*
 * Stop a database's worker for a while, so that a command which needs the
 * database to itself (DROP, RENAME, use as a template) does not fail on its
 * connection.  The launcher terminates the worker; the command's own wait
 * for other sessions covers the time that takes.
 */
void
worker_release_database(Oid dboid)
{
	WorkerSlot *slot;
	bool		found = false;

	if (worker_shared == NULL)
		return;
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	slot = worker_slot_find(dboid);
	if (slot != NULL)
	{
		slot->paused_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														  WORKER_PAUSE_MS);
		found = true;
	}
	LWLockRelease(worker_shared->lock);
	if (found)
		worker_wake_launcher(false);
}

const char *
worker_state_name(WorkerState s)
{
	switch (s)
	{
		case WS_NEW:
			return "new";
		case WS_STARTING:
			return "starting";
		case WS_RUNNING:
			return "running";
		case WS_IDLE:
			return "idle";
		case WS_NOT_INSTALLED:
			return "not installed";
		case WS_SKIPPED:
			return "skipped";
		case WS_DISABLED:
			return "disabled";
		case WS_BACKOFF:
			return "restarting";
		case WS_NO_SLOT:
			return "no worker slot";
		case WS_PAUSED:
			return "paused";
	}
	return "unknown";
}

/* A copy of the used slots, taken under the lock. */
static WorkerSlot *
snapshot_slots(int *n)
{
	WorkerSlot *copy = palloc(sizeof(WorkerSlot) * worker_shared->nslots);

	*n = 0;
	LWLockAcquire(worker_shared->lock, LW_SHARED);
	for (int i = 0; i < worker_shared->nslots; i++)
		if (OidIsValid(worker_shared->slots[i].dboid))
			copy[(*n)++] = worker_shared->slots[i];
	LWLockRelease(worker_shared->lock);
	return copy;
}

static Datum
timestamp_or_null(TimestampTz t, bool *isnull)
{
	*isnull = (t == 0);
	return TimestampTzGetDatum(t);
}

/*
 * Start a worker_status-style SRF: the slots of every database, and whether
 * the caller may see the error texts of other databases (pg_read_all_stats).
 */
static WorkerSlot *
status_slots(FunctionCallInfo fcinfo, bool *see_all, int *n)
{
	harden_require_shmem("harden.worker_status");
	InitMaterializedSRF(fcinfo, 0);
	*see_all = has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS);
	return snapshot_slots(n);
}

PG_FUNCTION_INFO_V1(harden_worker_status);

/*
 * One row per database the launcher knows.  Error texts of other databases
 * are shown only to members of pg_read_all_stats: they may quote row data.
 */
Datum
harden_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		see_all;
	WorkerSlot *slots;
	int			n;

	slots = status_slots(fcinfo, &see_all, &n);
	for (int i = 0; i < n; i++)
	{
		WorkerSlot *s = &slots[i];
		Datum		values[12];
		bool		nulls[12] = {0};
		bool		show_error = see_all || s->dboid == MyDatabaseId;

		values[0] = NameGetDatum(&s->dbname);
		values[1] = Int32GetDatum((int32) s->pid);
		nulls[1] = (s->pid == 0);
		values[2] = CStringGetTextDatum(worker_state_name(s->state));
		values[3] = timestamp_or_null(s->started_at, &nulls[3]);
		values[4] = timestamp_or_null(s->last_run, &nulls[4]);
		values[5] = Int64GetDatum((int64) s->runs);
		values[6] = Int64GetDatum((int64) s->transitions);
		values[7] = Int64GetDatum((int64) s->holds_released);
		values[8] = Int64GetDatum((int64) s->errors);
		values[9] = CStringGetTextDatum(s->last_error);
		nulls[9] = (s->last_error[0] == '\0' || !show_error);
		values[10] = timestamp_or_null(s->last_error_at, &nulls[10]);
		values[11] = timestamp_or_null(s->next_start, &nulls[11]);
		if (s->state != WS_BACKOFF && s->state != WS_NO_SLOT && s->state != WS_NOT_INSTALLED)
			nulls[11] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(harden_worker_items);

/*
 * The failures of single items per database, for the columns worker_status
 * appends (a function of its own, so the view could be replaced in place).
 * Error texts as in harden_worker_status.
 */
Datum
harden_worker_items(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		see_all;
	WorkerSlot *slots;
	int			n;

	slots = status_slots(fcinfo, &see_all, &n);
	for (int i = 0; i < n; i++)
	{
		WorkerSlot *s = &slots[i];
		Datum		values[5];
		bool		nulls[5] = {0};

		values[0] = NameGetDatum(&s->dbname);
		values[1] = Int64GetDatum((int64) s->item_errors);
		values[2] = CStringGetTextDatum(s->last_item_error);
		nulls[2] = (s->last_item_error[0] == '\0' || !(see_all || s->dboid == MyDatabaseId));
		values[3] = timestamp_or_null(s->last_item_error_at, &nulls[3]);
		values[4] = Int64GetDatum(s->in_backoff[WORKER_ITEM_TIMER] + s->in_backoff[WORKER_ITEM_HOLD]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

static double
unix_seconds(TimestampTz t)
{
	return (double) t / USECS_PER_SEC +
		(double) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
}

static bool
state_is_up(WorkerState s)
{
	return s == WS_STARTING || s == WS_RUNNING || s == WS_IDLE;
}

static void
worker_write_metrics(MetricWriter *w)
{
	WorkerSlot *slots;
	int			n;

	if (!harden_shmem_ready || worker_shared == NULL)
		return;
	slots = snapshot_slots(&n);
	metric_family(w, "worker_up", "gauge",
				  "1 while the database's background worker runs, else 0 (databases with pg_harden only).");
	for (int i = 0; i < n; i++)
		if (slots[i].state != WS_NOT_INSTALLED && slots[i].state != WS_NEW)
			metric_sample(w, state_is_up(slots[i].state) ? 1 : 0, 1,
						  "database", NameStr(slots[i].dbname));
	metric_family(w, "worker_last_run_timestamp_seconds", "gauge",
				  "When the database's background worker last finished a run (Unix time).");
	for (int i = 0; i < n; i++)
		if (slots[i].last_run != 0)
			metric_sample(w, unix_seconds(slots[i].last_run), 1,
						  "database", NameStr(slots[i].dbname));
	metric_family(w, "worker_items_in_backoff", "gauge",
				  "Timers and expired holds that failed and wait for a retry, as the last run counted them.");
	for (int i = 0; i < n; i++)
		if (slots[i].state != WS_NOT_INSTALLED && slots[i].state != WS_NEW)
		{
			metric_sample(w, (double) slots[i].in_backoff[WORKER_ITEM_TIMER], 2,
						  "database", NameStr(slots[i].dbname), "item", "timer");
			metric_sample(w, (double) slots[i].in_backoff[WORKER_ITEM_HOLD], 2,
						  "database", NameStr(slots[i].dbname), "item", "hold");
		}
	metric_family(w, "worker_item_errors_total", "counter",
				  "Timers and expired holds that failed (each is retried with backoff).");
	for (int i = 0; i < n; i++)
		if (slots[i].state != WS_NOT_INSTALLED && slots[i].state != WS_NEW)
			metric_sample(w, (double) slots[i].item_errors, 1,
						  "database", NameStr(slots[i].dbname));
	metric_family(w, "worker_cache_swept_total", "counter",
				  "Expired cache entries freed by the background worker's sweeps (all databases).");
	metric_sample(w, (double) pg_atomic_read_u64(&worker_shared->cache_swept), 0);
}
