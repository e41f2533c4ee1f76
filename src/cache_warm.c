/*
 * cache_warm.c
 *	  Warm-up: queries registered in harden.cache_warm_queries are run
 *	  through cache_query() by harden.cache_warm(), and by the background
 *	  worker after start and whenever their entry is missing (expired,
 *	  invalidated, evicted).
 *
 * Each query runs as the role that registered it, security-restricted (as
 * pg_harden runs a table owner's code), with the search_path it was
 * registered under (part of the result's fingerprint, so the warmed entry is
 * the one the role's own calls find), in a subtransaction of its own: one
 * failing query does not stop the others.  Its last outcome goes to
 * harden.cache_warm_state, written as the extension's owner; an error is
 * logged when it differs from the query's previous one.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/syscache.h"

#include "pg_harden.h"
#include "cache.h"

typedef struct WarmQuery
{
	Oid			role;
	char	   *key;
	Datum		sql;			/* text */
	Datum		ttl;			/* interval, or NULL */
	bool		ttl_null;
	Datum		params;			/* text[] */
	char	   *search_path;
} WarmQuery;

/* Every registered query, copied into the caller's context. */
static WarmQuery *
warm_load(int *n)
{
	MemoryContext cxt = CurrentMemoryContext;
	HardenRoleScope scope;
	WarmQuery  *q;

	harden_role_enter(&scope, harden_table_owner("cache_warm_queries"), false);
	if (SPI_execute("SELECT role::pg_catalog.oid, key, sql, ttl, params, search_path"
					" FROM harden.cache_warm_queries ORDER BY role, key", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read harden.cache_warm_queries");
	harden_role_leave(&scope);

	*n = (int) SPI_processed;
	q = MemoryContextAllocZero(cxt, Max(*n, 1) * sizeof(WarmQuery));
	for (int i = 0; i < *n; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(cxt);

		q[i].role = DatumGetObjectId(SPI_getbinval(t, d, 1, &isnull));
		q[i].key = TextDatumGetCString(SPI_getbinval(t, d, 2, &isnull));
		q[i].sql = PointerGetDatum(DatumGetTextPCopy(SPI_getbinval(t, d, 3, &isnull)));
		q[i].ttl = SPI_getbinval(t, d, 4, &q[i].ttl_null);
		if (!q[i].ttl_null)
			q[i].ttl = datumCopy(q[i].ttl, false, 16);
		q[i].params = PointerGetDatum(PG_DETOAST_DATUM_COPY(SPI_getbinval(t, d, 5, &isnull)));
		q[i].search_path = TextDatumGetCString(SPI_getbinval(t, d, 6, &isnull));
		MemoryContextSwitchTo(old);
	}
	return q;
}

/* Whether the query's result is in the cache (a cheap shared-lock lookup). */
static bool
warm_present(const WarmQuery *q)
{
	int			len;
	char	   *k = cache_query_key(q->key, strlen(q->key), q->role, &len);
	CacheHit	meta;
	bool		found = cache_store_peek(k, len, &meta);

	pfree(k);
	return found;
}

/* Run one query as its role; raises the query's error. */
static void
warm_run(const WarmQuery *q)
{
	HardenRoleScope scope;
	Oid			types[4] = {TEXTOID, TEXTOID, INTERVALOID, TEXTARRAYOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', q->ttl_null ? 'n' : ' ', ' '};

	values[0] = CStringGetTextDatum(q->key);
	values[1] = q->sql;
	values[2] = q->ttl;
	values[3] = q->params;
	harden_role_enter(&scope, q->role, true);
	(void) set_config_option("search_path", q->search_path, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (SPI_execute_with_args("SELECT harden.cache_query($1, $2, $3, VARIADIC $4)",
							  4, types, values, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not run the warm-up query");
	harden_role_leave(&scope);
}

/*
 * Record the outcome (error NULL: success); log an error that differs from
 * the previous one of the query.
 */
static void
warm_record(const WarmQuery *q, const char *error)
{
	HardenRoleScope scope;
	Oid			types[3] = {OIDOID, TEXTOID, TEXTOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', error ? ' ' : 'n'};
	bool		changed = false;

	values[0] = ObjectIdGetDatum(q->role);
	values[1] = CStringGetTextDatum(q->key);
	values[2] = error ? CStringGetTextDatum(error) : (Datum) 0;
	harden_role_enter(&scope, harden_table_owner("cache_warm_queries"), false);
	/*
	 * One recorder of a query at a time (the worker and cache_warm() may run
	 * it together): the next statement's snapshot then sees the other's
	 * outcome, so an error is logged once.
	 */
	if (SPI_execute_with_args("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended($2,"
							  " CAST($1 AS pg_catalog.int8)))",
							  2, types, values, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not lock the warm-up outcome");
	if (SPI_execute_with_args("WITH old AS (SELECT last_error FROM harden.cache_warm_state"
							  " WHERE role OPERATOR(pg_catalog.=) $1 AND key OPERATOR(pg_catalog.=) $2)"
							  " INSERT INTO harden.cache_warm_state AS s (role, key, last_run, last_ok, last_error, failures)"
							  " VALUES ($1, $2, pg_catalog.now(), CASE WHEN $3 IS NULL THEN pg_catalog.now() END, $3,"
							  "  CASE WHEN $3 IS NULL THEN 0 ELSE 1 END)"
							  " ON CONFLICT (role, key) DO UPDATE SET last_run = excluded.last_run,"
							  "  last_ok = coalesce(excluded.last_ok, s.last_ok), last_error = excluded.last_error,"
							  "  failures = CASE WHEN $3 IS NULL THEN 0 ELSE s.failures OPERATOR(pg_catalog.+) 1 END"
							  " RETURNING CASE WHEN (SELECT last_error FROM old) IS NULL THEN $3 IS NOT NULL"
							  "  WHEN $3 IS NULL THEN true"
							  "  ELSE (SELECT last_error FROM old) OPERATOR(pg_catalog.<>) $3 END",
							  3, types, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not record the warm-up outcome");
	if (SPI_processed == 1)
	{
		bool		isnull;

		changed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	harden_role_leave(&scope);
	if (changed && error)
		ereport(WARNING,
				(errcode(ERRCODE_HARDEN_CACHE_WARM_FAILED),
				 errmsg("pg_harden warm-up query \"%s\" of role %u failed", harden_log_key(q->key), q->role),
				 errdetail("%s", error),
				 errhint("See harden.cache_warm_status; this is logged again only for another error.")));
}

/* Run one query in a subtransaction; whether it succeeded. */
static bool
warm_one(const WarmQuery *q)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	char	   *volatile error = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		warm_run(q);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(cxt);
		ed = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		error = pstrdup(ed->message);
		FreeErrorData(ed);
	}
	PG_END_TRY();
	warm_record(q, error);
	return error == NULL;
}

/*
 * Run the registered queries (missing_only: those whose result is not in
 * the cache); the number run.  Used by harden.cache_warm() and the worker.
 */
int64
cache_warm_run(bool missing_only)
{
	int			n;
	int64		ran = 0;
	WarmQuery  *q;
	int			nest;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	nest = harden_guc_pin();
	q = warm_load(&n);
	for (int i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (missing_only && warm_present(&q[i]))
			continue;
		if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(q[i].role)))
			continue;
		(void) warm_one(&q[i]);
		ran++;
	}
	harden_guc_restore(nest);
	SPI_finish();
	return ran;
}

PG_FUNCTION_INFO_V1(harden_cache_warm);

Datum
harden_cache_warm(PG_FUNCTION_ARGS)
{
	harden_require_shmem("harden.cache_warm()");
	PG_RETURN_INT64(cache_warm_run(PG_GETARG_BOOL(0)));
}
