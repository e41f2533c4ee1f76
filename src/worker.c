/*
 * worker.c
 *	  The launcher and the per-database workers.
 *
 * The launcher, registered at start-up, connects to no database (like the
 * autovacuum launcher) and reads the shared catalog pg_database.  It keeps
 * one slot per connectable, non-template database and starts a dynamic
 * worker for each.  A worker that finds no pg_harden 0.3.0 in its database
 * says so and exits; the launcher looks again when a backend reports a
 * CREATE or ALTER EXTENSION there, and every few minutes.  At most
 * MAX_STARTING workers are starting at a time.  The launcher also sweeps the
 * cluster-wide cache, so exactly one process does that.  It and the workers
 * start only once recovery has finished (BgWorkerStart_RecoveryFinished): a
 * standby runs none of them.
 *
 * A database's worker runs harden.fsm_run_due() and harden.stock_run_due()
 * every harden.worker_interval, each in its own transaction.  An error in one
 * is caught, recorded and retried with backoff without stopping the other;
 * an error the worker cannot recover from ends the process, and the launcher
 * starts it again with backoff.  A full batch is followed by the next run at
 * once.
 *
 * The worker connects as the bootstrap superuser.  The functions it calls
 * run user code (triggers of the tables they write) as the table's owner;
 * the worker itself runs nothing of the database's: each step gets a fixed
 * search_path and every setting made during it is rolled back at its end.
 */
#include "postgres.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "pg_harden.h"
#include "analyze.h"
#include "cache.h"
#include "worker.h"

#define LAUNCHER_RESTART_S 10
#define RESCAN_MS (10 * 1000)
#define REPROBE_MS (300 * 1000)
#define BACKOFF_MAX_MS (60 * 1000)

/*
 * Most workers the launcher has started that have not yet said whether
 * pg_harden is installed.  On a server with many databases, probing them
 * all at once would take every background worker slot for a moment, and a
 * parallel query or a replication worker starting then would get none.
 */
#define MAX_STARTING 2

/* ---- registration ---- */

static void
worker_fill(BackgroundWorker *bgw, const char *function)
{
	memset(bgw, 0, sizeof(*bgw));
	bgw->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw->bgw_start_time = BgWorkerStart_RecoveryFinished;
	snprintf(bgw->bgw_library_name, BGW_MAXLEN, "pg_harden");
	snprintf(bgw->bgw_function_name, BGW_MAXLEN, "%s", function);
}

/* Called from _PG_init while preloading. */
void
worker_register_launcher(void)
{
	BackgroundWorker bgw;

	worker_fill(&bgw, "harden_worker_launcher_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_harden launcher");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "pg_harden launcher");
	bgw.bgw_restart_time = LAUNCHER_RESTART_S;
	RegisterBackgroundWorker(&bgw);
}

static BackgroundWorkerHandle *
start_db_worker(WorkerSlot *slot)
{
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;

	worker_fill(&bgw, "harden_worker_db_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_harden worker %s", NameStr(slot->dbname));
	snprintf(bgw.bgw_type, BGW_MAXLEN, "pg_harden worker");
	/* The launcher restarts workers itself, with its own backoff. */
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	bgw.bgw_notify_pid = MyProcPid;
	bgw.bgw_main_arg = ObjectIdGetDatum(slot->dboid);
	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
		return NULL;
	return handle;
}

static int
backoff_ms(int failures)
{
	int64		ms = (int64) Max(worker_interval_ms, 1000);

	for (int i = 1; i < failures && ms < BACKOFF_MAX_MS; i++)
		ms *= 2;
	return (int) Min(ms, BACKOFF_MAX_MS);
}

/* ---- the launcher ---- */

typedef struct LauncherDb
{
	Oid			oid;
	NameData	name;
} LauncherDb;

/* Launcher-local, per slot: the handle of the worker it started. */
static BackgroundWorkerHandle **handles;
static bool *terminating;
static bool logged_no_slot = false;
static bool logged_slots_full = false;

static void
launcher_detach(int code, Datum arg)
{
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	worker_shared->launcher_latch = NULL;
	worker_shared->launcher_pid = 0;
	LWLockRelease(worker_shared->lock);
}

/* Connectable, non-template databases, read from the shared catalog. */
static List *
list_databases(void)
{
	MemoryContext outer = CurrentMemoryContext;
	List	   *dbs = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database d = (Form_pg_database) GETSTRUCT(tup);
		MemoryContext old;
		LauncherDb *db;

		/* Templates are left alone: a connection would block CREATE DATABASE. */
		if (!d->datallowconn || d->datistemplate)
			continue;
		old = MemoryContextSwitchTo(outer);
		db = palloc(sizeof(LauncherDb));
		db->oid = d->oid;
		db->name = d->datname;
		dbs = lappend(dbs, db);
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return dbs;
}

static void
stop_worker(int i)
{
	if (handles[i] != NULL && !terminating[i])
	{
		TerminateBackgroundWorker(handles[i]);
		terminating[i] = true;
	}
}

/* Match the slots to pg_database: free the dropped, claim the new. */
static void
sync_slots(List *dbs)
{
	ListCell   *lc;

	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < worker_shared->nslots; i++)
	{
		WorkerSlot *s = &worker_shared->slots[i];
		bool		present = false;

		if (!OidIsValid(s->dboid))
			continue;
		foreach(lc, dbs)
		{
			LauncherDb *db = lfirst(lc);

			if (db->oid == s->dboid)
			{
				present = true;
				s->dbname = db->name;	/* it may have been renamed */
			}
		}
		if (!present && handles[i] == NULL)
			memset(s, 0, sizeof(*s));
		else if (!present)
			stop_worker(i);
	}
	foreach(lc, dbs)
	{
		LauncherDb *db = lfirst(lc);
		WorkerSlot *s;

		if (worker_slot_find(db->oid) != NULL)
			continue;
		s = worker_slot_find(InvalidOid);
		if (s == NULL)
		{
			if (!logged_slots_full)
				ereport(LOG,
						(errmsg("pg_harden launcher: more databases than harden.max_databases (%d)",
								worker_shared->nslots),
						 errdetail("Database \"%s\" and further ones get no background worker.",
								   NameStr(db->name)),
						 errhint("Raise harden.max_databases and restart the server.")));
			logged_slots_full = true;
			break;
		}
		memset(s, 0, sizeof(*s));
		s->dboid = db->oid;
		s->dbname = db->name;
		s->state = WS_NEW;
		s->probe = true;
	}
	worker_shared->rescan = false;
	LWLockRelease(worker_shared->lock);
}

/* Note workers that have exited and decide when each may start again. */
static void
reap_workers(TimestampTz now)
{
	for (int i = 0; i < worker_shared->nslots; i++)
	{
		WorkerSlot *s = &worker_shared->slots[i];
		pid_t		pid;
		bool		failed = false;
		int			delay = 0;

		if (handles[i] == NULL)
			continue;
		if (GetBackgroundWorkerPid(handles[i], &pid) != BGWH_STOPPED)
			continue;
		pfree(handles[i]);
		handles[i] = NULL;

		LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
		s->pid = 0;
		if (!OidIsValid(s->dboid))
			;					/* freed by sync_slots */
		else if (s->state == WS_NOT_INSTALLED)
		{
			s->failures = 0;
			s->next_start = TimestampTzPlusMilliseconds(now, REPROBE_MS);
		}
		else if (s->state == WS_DISABLED || terminating[i] || s->paused_until > now)
			s->next_start = 0;
		else
		{
			/* Anything else is an abnormal exit: it logged why. */
			failed = true;
			s->failures++;
			delay = backoff_ms(s->failures);
			s->state = WS_BACKOFF;
			s->next_start = TimestampTzPlusMilliseconds(now, delay);
		}
		LWLockRelease(worker_shared->lock);
		terminating[i] = false;
		if (failed)
			ereport(LOG,
					(errmsg("pg_harden worker for database \"%s\" exited; restarting it in %d ms",
							NameStr(s->dbname), delay)));
	}
}

/* What a slot's worker should be doing now; the caller holds the lock. */
static WorkerState
wanted_state(WorkerSlot *s, TimestampTz now)
{
	if (!worker_enabled)
		return WS_DISABLED;
	if (worker_database_skipped(NameStr(s->dbname)))
		return WS_SKIPPED;
	if (s->paused_until > now)
		return WS_PAUSED;
	return WS_RUNNING;
}

/* Start the workers that should run and stop those that should not. */
static void
start_workers(TimestampTz now)
{
	int			starting = 0;

	LWLockAcquire(worker_shared->lock, LW_SHARED);
	for (int i = 0; i < worker_shared->nslots; i++)
		if (handles[i] != NULL && worker_shared->slots[i].state == WS_STARTING)
			starting++;
	LWLockRelease(worker_shared->lock);

	for (int i = 0; i < worker_shared->nslots; i++)
	{
		WorkerSlot *s = &worker_shared->slots[i];
		WorkerState want;
		BackgroundWorkerHandle *h;

		LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
		if (!OidIsValid(s->dboid))
		{
			LWLockRelease(worker_shared->lock);
			continue;
		}
		want = wanted_state(s, now);
		if (want != WS_RUNNING)
		{
			if (handles[i] != NULL)
				stop_worker(i);
			else
				s->state = want;
			s->probe = true;	/* look again once allowed */
			LWLockRelease(worker_shared->lock);
			continue;
		}

		/*
		 * Wait while a worker runs, while a backoff or re-probe delay lasts,
		 * and while a worker of a previous launcher is still exiting.
		 */
		if (handles[i] != NULL || s->pid != 0 ||
			(!s->probe && s->next_start > now))
		{
			LWLockRelease(worker_shared->lock);
			continue;
		}
		/* The others start once these have checked their databases. */
		if (starting >= MAX_STARTING)
		{
			LWLockRelease(worker_shared->lock);
			continue;
		}
		h = start_db_worker(s);
		if (h == NULL)
		{
			s->state = WS_NO_SLOT;
			s->next_start = TimestampTzPlusMilliseconds(now, backoff_ms(2));
			LWLockRelease(worker_shared->lock);
			if (!logged_no_slot)
				ereport(LOG,
						(errmsg("pg_harden launcher could not start a worker for database \"%s\"",
								NameStr(s->dbname)),
						 errdetail("All background worker slots are in use; it retries, and this is logged once until a start succeeds."),
						 errhint("Raise max_worker_processes (one worker per database with pg_harden, plus the launcher).")));
			logged_no_slot = true;
			continue;
		}
		logged_no_slot = false;
		starting++;
		handles[i] = h;
		terminating[i] = false;
		s->state = WS_STARTING;
		s->probe = false;
		s->next_start = 0;
		LWLockRelease(worker_shared->lock);
	}
}

/* Milliseconds until the launcher has something to do. */
static long
launcher_timeout(TimestampTz now, TimestampTz next_scan)
{
	TimestampTz next = next_scan;

	LWLockAcquire(worker_shared->lock, LW_SHARED);
	for (int i = 0; i < worker_shared->nslots; i++)
	{
		WorkerSlot *s = &worker_shared->slots[i];

		if (OidIsValid(s->dboid) && handles[i] == NULL && s->next_start > now &&
			s->next_start < next)
			next = s->next_start;
		if (OidIsValid(s->dboid) && s->paused_until > now && s->paused_until < next)
			next = s->paused_until;
	}
	LWLockRelease(worker_shared->lock);
	/* Sweep the cache at least every interval; rate-limited inside. */
	return Min(Max(TimestampDifferenceMilliseconds(now, next), 10), worker_interval_ms);
}

static void
sweep_cache(void)
{
	uint64		n;

	if (!harden_shmem_ready)
		return;
	n = cache_store_sweep(false);
	if (n > 0)
		pg_atomic_fetch_add_u64(&worker_shared->cache_swept, n);
}

void
harden_worker_launcher_main(Datum arg)
{
	TimestampTz next_scan = 0;
	MemoryContext scan_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	/* Standbys forget what a crash before this start may have lost. */
	cache_wal_log_reset();
	pgstat_report_appname("pg_harden launcher");

	handles = MemoryContextAllocZero(TopMemoryContext,
									 sizeof(BackgroundWorkerHandle *) * worker_shared->nslots);
	terminating = MemoryContextAllocZero(TopMemoryContext,
										 sizeof(bool) * worker_shared->nslots);
	scan_cxt = AllocSetContextCreate(TopMemoryContext, "pg_harden launcher",
									 ALLOCSET_DEFAULT_SIZES);

	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	worker_shared->launcher_pid = MyProcPid;
	worker_shared->launcher_latch = MyLatch;
	/*
	 * After a restart of the launcher alone, workers it started before may
	 * still run; it has no handles for them, so it stops them and starts
	 * its own once they are gone.
	 */
	for (int i = 0; i < worker_shared->nslots; i++)
	{
		WorkerSlot *s = &worker_shared->slots[i];

		s->probe = OidIsValid(s->dboid);
		if (s->pid != 0 && kill(s->pid, SIGTERM) != 0)
			s->pid = 0;
	}
	LWLockRelease(worker_shared->lock);
	before_shmem_exit(launcher_detach, 0);

	for (;;)
	{
		TimestampTz now;
		bool		rescan;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		now = GetCurrentTimestamp();
		reap_workers(now);

		LWLockAcquire(worker_shared->lock, LW_SHARED);
		rescan = worker_shared->rescan;
		LWLockRelease(worker_shared->lock);
		if (rescan || now >= next_scan)
		{
			MemoryContext old = MemoryContextSwitchTo(scan_cxt);

			sync_slots(list_databases());
			MemoryContextSwitchTo(old);
			MemoryContextReset(scan_cxt);
			next_scan = TimestampTzPlusMilliseconds(now, RESCAN_MS);
		}
		start_workers(now);
		sweep_cache();

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 launcher_timeout(now, next_scan), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* ---- a database's worker ---- */

typedef enum StepResult
{
	STEP_DONE,
	STEP_FAILED,
	STEP_GONE					/* pg_harden is no longer installed */
} StepResult;

typedef struct WorkerStep
{
	const char *name;
	/*
	 * $1: harden.worker_batch_size.  Returns what the step counts (applied
	 * transitions, expired holds) and how many due rows it handled in all:
	 * a full batch means more may be due.
	 */
	const char *sql;
	int			failures;		/* consecutive */
	TimestampTz next_try;
	char		last_error[WORKER_ERROR_LEN];
} WorkerStep;

static WorkerStep steps[] = {
	{"fsm_run_due", "SELECT applied, applied OPERATOR(pg_catalog.+) dropped OPERATOR(pg_catalog.+) failed"
	 " FROM harden.fsm_run_due($1)"},
	{"stock_run_due", "SELECT CAST(n AS pg_catalog.int8), CAST(n AS pg_catalog.int8) FROM harden.stock_run_due($1) AS n"},
	/* cache warm-up (cache_warm.c): registered queries whose entry is missing */
	{"cache_warm", "SELECT n, CAST(0 AS pg_catalog.int8) FROM harden.cache_warm(true) AS n WHERE $1 IS NOT NULL"},
};

/*
 * pg_harden's own queries, and the lookups above, run with search_path
 * pinned to HARDEN_SEARCH_PATH (harden_guc_pin), whatever the database or a
 * trigger sets: an object a user creates in a schema of theirs must never
 * be picked up by them.
 */

static WorkerSlot *my_slot = NULL;
static NameData my_dbname;
static MemoryContext step_cxt = NULL;

static void
db_worker_detach(int code, Datum arg)
{
	if (my_slot == NULL)
		return;
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	if (my_slot->pid == MyProcPid)
		my_slot->pid = 0;
	LWLockRelease(worker_shared->lock);
}

static void
set_state(WorkerState state)
{
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	my_slot->state = state;
	LWLockRelease(worker_shared->lock);
}

static bool
function_exists(const char *name)
{
	Oid			argtypes[1] = {INT4OID};
	List	   *fname = list_make2(makeString("harden"), makeString(pstrdup(name)));

	return OidIsValid(LookupFuncName(fname, 1, argtypes, true));
}

/*
 * Is pg_harden 0.3.0 or later installed?  Holding a lock on the extension
 * keeps a concurrent DROP EXTENSION from removing the functions mid-run: it
 * waits for this transaction, and the next run finds the extension gone.
 */
static bool
extension_ready(void)
{
	Oid			ext = get_extension_oid("pg_harden", true);

	if (!OidIsValid(ext))
		return false;
	LockDatabaseObject(ExtensionRelationId, ext, 0, AccessShareLock);
	if (get_extension_oid("pg_harden", true) != ext)
		return false;
	return function_exists("fsm_run_due") && function_exists("stock_run_due");
}

static void
begin_xact(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
end_xact(void)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

static bool
probe_extension(void)
{
	bool		ready;

	begin_xact("pg_harden worker: checking the extension");
	ready = extension_ready();
	end_xact();
	return ready;
}

static int64
result_int8(int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? 0 : DatumGetInt64(d);
}

/*
 * Run one step's function; returns the number it reports in *n and the
 * number of due rows it handled in *handled.
 *
 * Every setting is saved at a new GUC nesting level and rolled back before
 * the commit: a setting made by user code the step ran (a trigger's
 * set_config('search_path', ..., false), say) does not outlive the step,
 * and the database's own search_path never applies to it.
 */
static StepResult
step_exec(WorkerStep *step, int64 *n, int64 *handled)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(worker_batch_size)};
	int			guc_level;
	StepResult	result = STEP_DONE;

	begin_xact(step->sql);
	guc_level = harden_guc_pin();
	if (!extension_ready())
		result = STEP_GONE;
	else if (strcmp(step->name, "cache_warm") == 0 &&
			 !OidIsValid(LookupFuncName(list_make2(makeString("harden"), makeString("cache_warm")),
										1, (Oid[]) {BOOLOID}, true)))
		*n = *handled = 0;		/* an installed version before warm-up */
	else
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute_with_args(step->sql, 1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "unexpected result from %s", step->name);
		*n = result_int8(1);
		*handled = result_int8(2);
		SPI_finish();
	}
	harden_guc_restore(guc_level);
	end_xact();
	return result;
}

static void
record_error(WorkerStep *step, ErrorData *edata)
{
	bool		repeated = step->failures > 0 &&
		strncmp(step->last_error, edata->message, WORKER_ERROR_LEN - 1) == 0;
	int			delay;

	step->failures++;
	strlcpy(step->last_error, edata->message, WORKER_ERROR_LEN);
	delay = backoff_ms(step->failures);
	step->next_try = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay);

	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	my_slot->errors++;
	strlcpy(my_slot->last_error, edata->message, WORKER_ERROR_LEN);
	my_slot->last_error_at = GetCurrentTimestamp();
	LWLockRelease(worker_shared->lock);
	harden_count(HC_WORKER_ERRORS, 1);

	/* Once per failure, not once per retry of the same failure. */
	if (!repeated)
		ereport(LOG,
				(errcode(edata->sqlerrcode),
				 errmsg("pg_harden worker: %s failed in database \"%s\": %s",
						step->name, NameStr(my_dbname), edata->message),
				 errdetail("It is retried with backoff (next in %d ms); the same error again is not logged.",
						   delay)));
}

/*
 * Run a step, catching its error so the worker carries on: the transaction
 * is aborted and the step retried later, with backoff.
 */
static StepResult
run_step(WorkerStep *step, int64 *n, int64 *handled)
{
	volatile StepResult result = STEP_FAILED;

	*n = 0;
	*handled = 0;
	if (step->failures > 0 && GetCurrentTimestamp() < step->next_try)
		return STEP_FAILED;
	MemoryContextSwitchTo(step_cxt);
	PG_TRY();
	{
		result = step_exec(step, n, handled);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(step_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		pgstat_report_activity(STATE_IDLE, NULL);
		RESUME_INTERRUPTS();
		record_error(step, edata);
		FreeErrorData(edata);
		result = STEP_FAILED;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(step_cxt);
	if (result == STEP_DONE && step->failures > 0)
	{
		ereport(LOG,
				(errmsg("pg_harden worker: %s works again in database \"%s\" after %d failed attempts",
						step->name, NameStr(my_dbname), step->failures)));
		step->failures = 0;
		step->last_error[0] = '\0';
	}
	return result;
}

/*
 * One run: every step once.  False when pg_harden has gone.  *more is set
 * when a step handled a full batch, so more may be due at once.
 */
static bool
run_once(bool *more)
{
	int64		counts[lengthof(steps)] = {0};
	instr_time	start;

	harden_timer_start(&start);
	*more = false;
	set_state(WS_RUNNING);
	for (int i = 0; i < (int) lengthof(steps); i++)
	{
		int64		handled;

		switch (run_step(&steps[i], &counts[i], &handled))
		{
			case STEP_GONE:
				return false;
			case STEP_FAILED:
				break;
			case STEP_DONE:
				if (handled >= worker_batch_size)
					*more = true;
				break;
		}
	}
	MemoryContextReset(step_cxt);

	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	/*
	 * The process got through a run (a failed step is caught and retried on
	 * its own): that ends a series of abnormal exits, so the next restart is
	 * not delayed by old ones.
	 */
	my_slot->failures = 0;
	my_slot->runs++;
	my_slot->transitions += counts[0];
	my_slot->holds_released += counts[1];
	my_slot->last_run = GetCurrentTimestamp();
	my_slot->state = WS_IDLE;
	LWLockRelease(worker_shared->lock);
	harden_count(HC_WORKER_RUNS, 1);
	harden_count(HC_WORKER_TRANSITIONS, (uint64) counts[0]);
	harden_count(HC_WORKER_HOLDS_RELEASED, (uint64) counts[1]);
	harden_observe(HH_WORKER_RUN, start);
	return true;
}

static void
attach_slot(Oid dboid)
{
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	my_slot = worker_slot_find(dboid);
	if (my_slot != NULL)
	{
		my_slot->pid = MyProcPid;
		my_slot->started_at = GetCurrentTimestamp();
		my_slot->state = WS_STARTING;
		my_dbname = my_slot->dbname;
	}
	LWLockRelease(worker_shared->lock);
	if (my_slot == NULL)
		proc_exit(0);			/* the database left the launcher's list */
	before_shmem_exit(db_worker_detach, 0);
}

void
harden_worker_db_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	/* As a setting, so that rolling back a step's settings keeps the name. */
	SetConfigOption("application_name", "pg_harden worker", PGC_USERSET, PGC_S_SESSION);
	attach_slot(dboid);
	step_cxt = AllocSetContextCreate(TopMemoryContext, "pg_harden worker",
									 ALLOCSET_DEFAULT_SIZES);

	if (!probe_extension())
	{
		set_state(WS_NOT_INSTALLED);
		proc_exit(0);
	}
	/* No longer starting: the launcher may start the next worker. */
	set_state(WS_RUNNING);
	worker_wake_launcher(false);

	for (;;)
	{
		bool		more;

		/*
		 * A cancel (pg_cancel_backend) that arrives between runs has no
		 * statement to cancel; outside a step it would otherwise end the
		 * process.  One during a step fails that step, which is retried.
		 */
		QueryCancelPending = false;
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (!worker_enabled)
		{
			set_state(WS_DISABLED);
			proc_exit(0);
		}
		if (!run_once(&more))
		{
			set_state(WS_NOT_INSTALLED);
			proc_exit(0);
		}
		/* query-analysis history (analyze_history.c), when enabled */
		analyze_worker_snapshot();
		/* A full batch: the rest is due now, so run again without waiting. */
		if (more)
			continue;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 worker_interval_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
