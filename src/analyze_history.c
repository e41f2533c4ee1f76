/*
 * analyze_history.c
 *	  The background worker's part in query-analysis history: it runs
 *	  harden.analyze_snapshot() every harden.analyze_snapshot_interval
 *	  (off by default) in each database it serves.
 *
 * The snapshot itself is SQL (it reads harden.slow_queries and
 * harden.table_sizes and prunes by harden.analyze_snapshot_retention).
 * Here: when it is due, and running it in a transaction of its own whose
 * failure is logged and does not disturb the worker's other work.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "pg_harden.h"
#include "analyze.h"

static TimestampTz last_snapshot = 0;

static bool
snapshot_function_exists(void)
{
	List	   *name = list_make2(makeString("harden"), makeString("analyze_snapshot"));

	return OidIsValid(LookupFuncName(name, 0, NULL, true));
}

static void
take_snapshot(void)
{
	int			nestlevel;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "pg_harden worker: harden.analyze_snapshot()");
	/* pg_harden's own SQL, whatever the database's search_path */
	nestlevel = harden_guc_pin();
	if (snapshot_function_exists())
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute("SELECT harden.analyze_snapshot()", false, 0) != SPI_OK_SELECT)
			elog(ERROR, "harden.analyze_snapshot() failed");
		SPI_finish();
	}
	harden_guc_restore(nestlevel);
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

void
analyze_worker_snapshot(void)
{
	TimestampTz now = GetCurrentTimestamp();
	MemoryContext cxt = CurrentMemoryContext;

	if (analyze_snapshot_interval_ms <= 0)
		return;
	if (last_snapshot != 0 &&
		!TimestampDifferenceExceeds(last_snapshot, now, analyze_snapshot_interval_ms))
		return;
	last_snapshot = now;
	PG_TRY();
	{
		take_snapshot();
	}
	PG_CATCH();
	{
		ErrorData  *edata = harden_catch_error(cxt);

		AbortCurrentTransaction();
		pgstat_report_activity(STATE_IDLE, NULL);
		ereport(LOG,
				(errcode(edata->sqlerrcode),
				 errmsg("pg_harden worker: harden.analyze_snapshot() failed: %s", edata->message),
				 errdetail("It is tried again after harden.analyze_snapshot_interval.")));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
}
