/*
 * cache_query.c
 *	  harden.cache_query(): cache-aside in one call.
 *
 * On a miss the query runs through SPI, read-only, and its rows are stored
 * as a jsonb array of objects.  Correctness rules:
 *
 * - Results are per role: the stored key includes the role that computed
 *   the result (current_user), so a result computed under row-level
 *   security or column privileges is never read by another role.
 * - The entry records the SQL text and parameters (a 64-bit fingerprint):
 *   reusing a key for a different query or different parameters is a miss,
 *   never someone else's rows.
 * - The relations the plan reads are recorded with their write generations
 *   (cache_watch.c), read before the query's snapshot is taken.  A result
 *   whose generations moved is stale and never served, so a refill from a
 *   snapshot that missed a committed write cannot be published over it.
 * - Concurrent misses on one key compute once (cache_flight.c).
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/plannodes.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "pg_harden.h"
#include "cache.h"

/* More dependencies than this: the result is returned but not cached. */
#define CACHE_QUERY_MAX_DEPS	256

static int	cache_wait_timeout_ms = 5000;

void
cache_query_define_gucs(bool preloading)
{
	DefineCustomIntVariable("harden.cache_wait_timeout",
							"Longest wait for another session computing the same cache_query() key (0: never wait).",
							"After it, the waiting session computes the result itself.",
							&cache_wait_timeout_ms,
							5000, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/* ---- the query and its parameters ---- */

typedef struct QueryCall
{
	const char *userkey;
	int			userlen;
	char	   *key;			/* stored key */
	int			keylen;
	char	   *sql;
	const Interval *ttl;
	int			nargs;
	Oid		   *argtypes;
	Datum	   *values;
	char	   *nulls;			/* SPI style: 'n' or ' ' */
	uint64		fingerprint;
	Oid			role;			/* the role the key was made for */
} QueryCall;

static void
add_param(QueryCall *q, int i, Oid type, Datum value, bool isnull)
{
	/* An untyped literal is a cstring of type unknown: pass it as text. */
	if (type == UNKNOWNOID)
	{
		type = TEXTOID;
		if (!isnull)
			value = CStringGetTextDatum(DatumGetCString(value));
	}
	q->argtypes[i] = type;
	q->values[i] = value;
	q->nulls[i] = isnull ? 'n' : ' ';
}

/*
 * The VARIADIC "any" arguments from argno on, or the elements of an array
 * passed with VARIADIC.
 */
static void
collect_params(FunctionCallInfo fcinfo, int argno, QueryCall *q)
{
	int			n = PG_NARGS() - argno;

	q->nargs = 0;
	if (n <= 0)
		return;
	if (get_fn_expr_variadic(fcinfo->flinfo))
	{
		ArrayType  *arr;
		Oid			elemtype;
		int16		elmlen;
		bool		elmbyval;
		char		elmalign;
		Datum	   *elems;
		bool	   *elnulls;
		int			nelems;

		if (PG_ARGISNULL(argno))
			return;
		arr = PG_GETARG_ARRAYTYPE_P(argno);
		elemtype = ARR_ELEMTYPE(arr);
		get_typlenbyvalalign(elemtype, &elmlen, &elmbyval, &elmalign);
		deconstruct_array(arr, elemtype, elmlen, elmbyval, elmalign, &elems, &elnulls, &nelems);
		q->argtypes = palloc(sizeof(Oid) * Max(nelems, 1));
		q->values = palloc(sizeof(Datum) * Max(nelems, 1));
		q->nulls = palloc(Max(nelems, 1));
		for (int i = 0; i < nelems; i++)
			add_param(q, i, elemtype, elems[i], elnulls[i]);
		q->nargs = nelems;
		return;
	}
	q->argtypes = palloc(sizeof(Oid) * n);
	q->values = palloc(sizeof(Datum) * n);
	q->nulls = palloc(n);
	for (int i = 0; i < n; i++)
	{
		Oid			type = get_fn_expr_argtype(fcinfo->flinfo, argno + i);

		if (!OidIsValid(type))
			elog(ERROR, "could not determine the type of parameter $%d", i + 1);
		add_param(q, i, type, PG_GETARG_DATUM(argno + i), PG_ARGISNULL(argno + i));
	}
	q->nargs = n;
}

/*
 * A parameter's value as bytes that do not depend on settings: the binary
 * send form (extra_float_digits and DateStyle change the text form), or the
 * text form for a type without one.
 */
static uint64
param_hash(Oid type, Datum value, int i)
{
	Oid			fn;
	bool		isvarlena;

	getTypeBinaryOutputInfo(type, &fn, &isvarlena);
	if (OidIsValid(fn))
	{
		bytea	   *b = OidSendFunctionCall(fn, value);

		return hash_bytes_extended((const unsigned char *) VARDATA(b), VARSIZE(b) - VARHDRSZ, i + 1);
	}
	getTypeOutputInfo(type, &fn, &isvarlena);
	{
		char	   *s = OidOutputFunctionCall(fn, value);

		return hash_bytes_extended((const unsigned char *) s, strlen(s), i + 1);
	}
}

/*
 * The SQL text, the search path it is resolved in (its explicit schemas;
 * temporary tables are handled on lookup), and each parameter's type and
 * value, hashed together: a key reused for another query, another schema
 * (schema-per-tenant) or other parameters is a miss.
 */
static uint64
query_fingerprint(const QueryCall *q)
{
	uint64		h = hash_bytes_extended((const unsigned char *) q->sql, strlen(q->sql), 0);
	List	   *path = fetch_search_path(false);
	ListCell   *lc;

	foreach(lc, path)
		h = hash_combine64(h, murmurhash32(lfirst_oid(lc)));
	h = hash_combine64(h, UINT64CONST(0x2545f4914f6cdd1d));
	for (int i = 0; i < q->nargs; i++)
	{
		h = hash_combine64(h, murmurhash32(q->argtypes[i]));
		if (q->nulls[i] == 'n')
			h = hash_combine64(h, UINT64CONST(0x9e3779b97f4a7c15));
		else
			h = hash_combine64(h, param_hash(q->argtypes[i], q->values[i], i));
	}
	return h;
}

static void
not_cacheable(const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_CACHE_QUERY_NOT_CACHEABLE),
			 errmsg("harden.cache_query() runs exactly one read-only SELECT"),
			 errdetail("%s", why),
			 errhint("Pass a single SELECT without FOR UPDATE/SHARE or data-modifying WITH.")));
}

/*
 * Add the inheritance ancestors of relid (partitioned tables included) to
 * rels: a write through a parent fires only the parent's statement triggers.
 */
static List *
add_ancestors(List *rels, Oid relid, int depth)
{
	Relation	inh;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	List	   *parents = NIL;
	ListCell   *lc;

	check_stack_depth();
	if (depth > 64)
		return rels;
	inh = table_open(InheritsRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_inherits_inhrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(inh, InheritsRelidSeqnoIndexId, true, NULL, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
		parents = lappend_oid(parents, ((Form_pg_inherits) GETSTRUCT(tup))->inhparent);
	systable_endscan(scan);
	table_close(inh, AccessShareLock);

	foreach(lc, parents)
	{
		Oid			parent = lfirst_oid(lc);

		if (list_member_oid(rels, parent))
			continue;
		rels = lappend_oid(rels, parent);
		rels = add_ancestors(rels, parent, depth + 1);
	}
	return rels;
}

/*
 * Plan the query once to check it is a single read-only SELECT and to
 * record the relations it reads (views expanded, subqueries included), with
 * their inheritance ancestors.  *temp tells whether any is temporary.
 */
static List *
plan_relations(SPIPlanPtr plan, bool *temp)
{
	CachedPlan *cplan = SPI_plan_get_cached_plan(plan);
	PlannedStmt *stmt;
	List	   *rels = NIL;
	ListCell   *lc;

	if (cplan == NULL || list_length(cplan->stmt_list) != 1)
	{
		if (cplan)
			ReleaseCachedPlan(cplan, NULL);
		not_cacheable("The SQL text holds no statement or more than one.");
	}
	stmt = linitial_node(PlannedStmt, cplan->stmt_list);
	if (stmt->commandType != CMD_SELECT || !CommandIsReadOnly(stmt))
	{
		ReleaseCachedPlan(cplan, NULL);
		not_cacheable("The statement is not a plain SELECT.");
	}
	foreach(lc, stmt->relationOids)
	{
		Oid			relid = lfirst_oid(lc);
		char		kind = get_rel_relkind(relid);

		if (kind != RELKIND_RELATION && kind != RELKIND_PARTITIONED_TABLE &&
			kind != RELKIND_MATVIEW && kind != RELKIND_FOREIGN_TABLE)
			continue;
		if (get_rel_persistence(relid) == RELPERSISTENCE_TEMP)
			*temp = true;
		if (list_member_oid(rels, relid))
			continue;
		rels = lappend_oid(rels, relid);
		if (has_superclass(relid))
			rels = add_ancestors(rels, relid, 0);
	}
	ReleaseCachedPlan(cplan, NULL);
	return rels;
}

/*
 * Generations of the relations, read before the caller takes its snapshot.
 * A watched relation without a slot (after a restart) gets one first.
 */
static CacheDep *
read_generations(List *rels, int *ndeps, uint64 *epoch)
{
	CacheDep   *deps = palloc(sizeof(CacheDep) * Max(list_length(rels), 1));
	ListCell   *lc;
	int			n = 0;

	foreach(lc, rels)
	{
		Oid			relid = lfirst_oid(lc);

		deps[n].relid = relid;
		deps[n].watched = cache_rel_is_watched(relid);
		if (deps[n].watched)
			(void) cache_gen_ensure(relid);	/* no room: the epoch covers it */
		n++;
	}
	*epoch = cache_gen_epoch();
	for (int i = 0; i < n; i++)
		deps[i].generation = cache_gen_current(MyDatabaseId, deps[i].relid);
	/* The reads above must not move past the snapshot taken next. */
	pg_memory_barrier();
	*ndeps = n;
	return deps;
}

/* Two columns of one name would silently become one object key. */
static void
check_column_names(TupleDesc desc)
{
	for (int i = 0; i < desc->natts; i++)
		for (int j = i + 1; j < desc->natts; j++)
			if (strcmp(NameStr(TupleDescAttr(desc, i)->attname),
					   NameStr(TupleDescAttr(desc, j)->attname)) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_COLUMN),
						 errmsg("harden.cache_query(): column name \"%s\" appears more than once",
								NameStr(TupleDescAttr(desc, i)->attname)),
						 errdetail("Each column becomes a key of the row's jsonb object."),
						 errhint("Give the columns distinct aliases.")));
}

/* Rows of the last SPI result as a jsonb array of objects. */
static Datum
rows_to_jsonb(void)
{
	StringInfoData buf;
	TupleDesc	desc = BlessTupleDesc(SPI_tuptable->tupdesc);

	check_column_names(desc);

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Datum		row = heap_copy_tuple_as_datum(SPI_tuptable->vals[i], desc);
		text	   *json = DatumGetTextPP(DirectFunctionCall1(row_to_json, row));

		if (i > 0)
			appendStringInfoChar(&buf, ',');
		appendBinaryStringInfo(&buf, VARDATA_ANY(json), VARSIZE_ANY_EXHDR(json));
	}
	appendStringInfoChar(&buf, ']');
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
}

/*
 * Whether a result computed now may be stored: not from a transaction
 * snapshot (REPEATABLE READ, SERIALIZABLE), which may predate the
 * generations it records, nor by a transaction that wrote a watched table
 * (its rows are not committed).
 */
static bool
may_publish(void)
{
	return !IsolationUsesXactSnapshot() && !cache_watch_wrote_in_xact();
}

/*
 * Store a computed result unless it may not be (above), reads a temporary
 * table (another session's rows), is too large or already stale, or the
 * query changed the current role (its result is not the caller's).
 * Returns whether it was stored or queued for commit.
 */
static bool
publish(const QueryCall *q, Jsonb *result, CacheDep *deps, int ndeps, uint64 epoch,
		bool temp)
{
	CacheItem	item = {0};

	if (!may_publish() || temp || ndeps > CACHE_QUERY_MAX_DEPS ||
		GetUserId() != q->role || !cache_value_fits(VARSIZE(result) - VARHDRSZ))
		return false;
	item.key = q->key;
	item.keylen = q->keylen;
	item.type = CACHE_JSONB;
	item.value = VARDATA(result);
	item.valuelen = VARSIZE(result) - VARHDRSZ;
	item.owner = q->role;
	item.flags = CACHE_FLAG_QUERY;
	item.query.fingerprint = q->fingerprint;
	item.query.epoch = epoch;
	item.query.ndeps = ndeps;
	item.query.deps = deps;
	if (!cache_deps_current(MyDatabaseId, &item.query))
		return false;
	cache_query_item_expiry(&item, q->userkey, q->userlen, q->ttl);
	cache_xact_write(CACHE_PENDING_SET, item.key, item.keylen, item.owner, &item);
	return true;
}

/* Run the query and cache its result if it may be; returns the result. */
static Jsonb *
compute(QueryCall *q, bool *published)
{
	SPIPlanPtr	plan;
	List	   *rels;
	CacheDep   *deps;
	int			ndeps;
	uint64		epoch;
	Snapshot	snap;
	int			rc;
	Jsonb	   *result;
	bool		temp = false;
	bool		stored;

	harden_count(HC_CACHE_QUERIES, 1);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* Parallel plans are fine: the query runs once, read-only, to the end. */
	plan = SPI_prepare_cursor(q->sql, q->nargs, q->argtypes, CURSOR_OPT_PARALLEL_OK);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	rels = plan_relations(plan, &temp);
	deps = read_generations(rels, &ndeps, &epoch);

	/* A snapshot taken after the generations were read (see above). */
	snap = GetTransactionSnapshot();
	rc = SPI_execute_snapshot(plan, q->values, q->nulls, snap, InvalidSnapshot,
							  true, false, 0);
	if (rc != SPI_OK_SELECT)
		not_cacheable("The statement did not return rows.");

	result = DatumGetJsonbP(rows_to_jsonb());
	stored = publish(q, result, deps, ndeps, epoch, temp);
	if (published)
		*published = stored;

	/* Into the caller's context, before SPI frees its own. */
	result = (Jsonb *) SPI_datumTransfer(JsonbPGetDatum(result), false, -1);
	SPI_finish();
	return result;
}

/*
 * Whether one of a result's relations is shadowed, for this session, by a
 * temporary table of the same name (searched first, implicitly): the
 * session's own query would read that table instead.  Only sessions that
 * have temporary tables pay for the check.
 */
static bool
shadowed_by_temp(const CacheHit *hit)
{
	Oid			temp_ns;
	Oid			temp_toast_ns;

	GetTempNamespaceState(&temp_ns, &temp_toast_ns);
	if (!OidIsValid(temp_ns))
		return false;
	for (int i = 0; i < hit->ndeps; i++)
	{
		char	   *name = get_rel_name(hit->deps[i].relid);

		if (name != NULL && OidIsValid(get_relname_relid(name, temp_ns)))
			return true;
	}
	return false;
}

/* A live, current result of this very query in the session's view. */
static Jsonb *
lookup(const QueryCall *q)
{
	CacheHit	hit;

	if (!cache_xact_lookup(q->key, q->keylen, q->role, &hit, true) ||
		hit.type != CACHE_JSONB || !(hit.flags & CACHE_FLAG_QUERY) ||
		hit.fingerprint != q->fingerprint || shadowed_by_temp(&hit))
		return NULL;
	SET_VARSIZE(hit.value, hit.valuelen + VARHDRSZ);
	return (Jsonb *) hit.value;
}

/* Compute as the registered computation of the key; always deregister. */
static Jsonb *
compute_as_leader(QueryCall *q, const CacheFlightTicket *t)
{
	Jsonb	   *volatile result = NULL;
	bool		published = false;

	PG_TRY();
	{
		/* Another leader may have published between our miss and now. */
		result = lookup(q);
		if (result != NULL)
			published = true;
		else
			result = compute(q, &published);
	}
	PG_CATCH();
	{
		cache_flight_end(t, CACHE_FLIGHT_FAILED);
		PG_RE_THROW();
	}
	PG_END_TRY();
	cache_flight_end(t, published ? CACHE_FLIGHT_PUBLISHED : CACHE_FLIGHT_UNPUBLISHED);
	return result;
}

/*
 * Miss path: compute, or wait for the session computing the same query and
 * read what it published.  When that session failed or exited, a waiter
 * takes over (one computes, the others wait for it); when it could not
 * store its result (too large, say), or harden.cache_wait_timeout passed,
 * the waiter computes on its own.  Computations that will not be stored
 * now (inside a transaction block, or from a transaction snapshot) neither
 * lead nor wait: nobody could read their result.
 */
static Jsonb *
fill(QueryCall *q)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   cache_wait_timeout_ms);

	if (!may_publish() || cache_xact_deferred())
		return compute(q, NULL);
	for (;;)
	{
		CacheFlightTicket t;
		Jsonb	   *result;

		switch (cache_flight_begin(q->key, q->keylen, q->fingerprint, &t))
		{
			case CACHE_FLIGHT_LEAD:
				return compute_as_leader(q, &t);
			case CACHE_FLIGHT_NONE:
				return compute(q, NULL);
			case CACHE_FLIGHT_WAIT:
				if (cache_wait_timeout_ms == 0)
					return compute(q, NULL);
				switch (cache_flight_wait(&t, deadline))
				{
					case CACHE_FLIGHT_PUBLISHED:
						result = lookup(q);
						if (result != NULL)
						{
							harden_count(HC_CACHE_COALESCED, 1);
							return result;
						}
						break;	/* gone again already: try to lead */
					case CACHE_FLIGHT_FAILED:
						break;	/* try to lead */
					case CACHE_FLIGHT_UNPUBLISHED:
					case CACHE_FLIGHT_TIMED_OUT:
						return compute(q, NULL);
				}
				break;
		}
	}
}

PG_FUNCTION_INFO_V1(harden_cache_query);

/*
 * cache_query(key, sql, ttl DEFAULT NULL, VARIADIC params "any")
 *	  The rows of sql as a jsonb array of objects, from the cache when
 *	  current, else computed and cached.
 */
Datum
harden_cache_query(PG_FUNCTION_ARGS)
{
	QueryCall	q = {0};
	Jsonb	   *result;

	harden_require_shmem("harden.cache_query()");
	q.userkey = cache_arg_key(fcinfo, 0, &q.userlen);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("harden.cache_query(): the SQL text must not be NULL")));
	q.sql = text_to_cstring(PG_GETARG_TEXT_PP(1));
	q.ttl = (PG_NARGS() > 2 && !PG_ARGISNULL(2)) ? PG_GETARG_INTERVAL_P(2) : NULL;
	collect_params(fcinfo, 3, &q);
	q.fingerprint = query_fingerprint(&q);
	q.role = GetUserId();
	q.key = cache_query_key(q.userkey, q.userlen, q.role, &q.keylen);

	/* After writing a watched table, this transaction sees its own rows. */
	if (cache_watch_wrote_in_xact())
		PG_RETURN_JSONB_P(compute(&q, NULL));

	result = lookup(&q);
	if (result != NULL)
	{
		harden_count(HC_CACHE_HITS, 1);
		PG_RETURN_JSONB_P(result);
	}
	harden_count(HC_CACHE_MISSES, 1);
	PG_RETURN_JSONB_P(fill(&q));
}
