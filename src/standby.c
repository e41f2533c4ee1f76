/*
 * standby.c
 *	  What pg_harden does on a hot standby.
 *
 * A standby's pg_harden has its own shared memory: the cache and the
 * counters work there and write no WAL.  Everything that writes a table
 * (state machines, stock, their configuration, watches) can only run on
 * the primary.  PostgreSQL refuses those writes too, but from deep inside
 * the SQL pg_harden runs ("cannot execute SELECT FOR UPDATE in a read-only
 * transaction", or a lock-level error for the DDL ones); checking first
 * names the function and says where to run it, with the same SQLSTATE
 * PostgreSQL uses for writes during recovery.
 */
#include "postgres.h"

#include "access/xlog.h"

#include "pg_harden.h"

/*
 * Raise 25006 when this server is in recovery.  After recovery has ended
 * RecoveryInProgress() reads a backend-local flag: no cost on a primary.
 */
void
harden_deny_on_standby(const char *function)
{
	if (likely(!RecoveryInProgress()))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
			 errmsg("cannot execute %s during recovery", function),
			 errdetail("This server is a standby: %s writes tables, and only the primary can write.", function),
			 errhint("Run it on the primary server. A standby serves reads: the cache, harden.cache_query(), harden.fsm_can(), harden.fsm_next() and the views.")));
}
