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
#include "catalog/pg_auth_members.h"
#include "catalog/pg_class.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "nodes/plannodes.h"
#include "parser/parser.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/catcache.h"
#include "utils/syscache.h"
#include "access/xlog.h"
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
static int	cache_untracked_ttl_s = 60;

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
	DefineCustomIntVariable("harden.cache_untracked_ttl",
							"Longest life of a cache_query() result with a dependency whose writes are not seen (0: such results are not cached).",
							"Foreign tables, SQL and procedural functions, and every relation on a standby are such dependencies.",
							&cache_untracked_ttl_s,
							60, 0, INT_MAX / 1000,
							PGC_USERSET, GUC_UNIT_S,
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
	bool		untyped;		/* text values whose types the query decides */
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
	if (q->untyped)
		h = hash_combine64(h, UINT64CONST(0x61c8864680b583eb));
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

/* The generations a result depends on, as they are collected. */
typedef struct DepList
{
	CacheDep   *deps;
	int			n;
	bool		untracked;		/* a dependency whose writes are not seen */
	bool		too_many;		/* more than CACHE_QUERY_MAX_DEPS: not cached */
} DepList;

static void
dep_add(DepList *l, Oid dboid, CacheDepKind kind, uint32 a, uint64 b, Oid relid,
		bool watched, bool shown)
{
	uint64		key = cache_gen_key(dboid, kind, a, b);
	CacheDep   *d;

	for (int i = 0; i < l->n; i++)
		if (l->deps[i].key == key)
		{
			l->deps[i].shown |= shown;
			return;
		}
	if (l->n >= CACHE_QUERY_MAX_DEPS)
	{
		l->too_many = true;
		return;
	}
	d = &l->deps[l->n++];
	memset(d, 0, sizeof(CacheDep));
	d->key = key;
	d->relid = relid;
	d->kind = (uint8) kind;
	d->watched = watched;
	d->shown = shown;
	if (!watched)
		l->untracked = true;
}

static void
dep_add_catalog(DepList *l, Oid dboid, int cacheid, uint32 hashvalue)
{
	dep_add(l, dboid, CACHE_DEP_CATALOG, (uint32) cacheid, hashvalue, InvalidOid, true, false);
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
 * The role and every role it is a member of, with the memberships between
 * them: a REVOKE of one of them, or a change to one of the roles
 * (NOINHERIT, BYPASSRLS, ...), changes what the role may read.  GRANTs of
 * roles are noted by the utility hook for their grantees.
 */
static void
add_role_deps(DepList *l, Oid role)
{
	List	   *todo = list_make1_oid(role);
	List	   *seen = NIL;

	while (todo != NIL)
	{
		Oid			r = llast_oid(todo);
		CatCList   *members;

		todo = list_delete_last(todo);
		if (list_member_oid(seen, r))
			continue;
		seen = lappend_oid(seen, r);
		if (list_length(seen) > 64)
		{
			l->too_many = true;
			return;
		}
		dep_add_catalog(l, InvalidOid, AUTHOID,
						GetSysCacheHashValue1(AUTHOID, ObjectIdGetDatum(r)));
		members = SearchSysCacheList1(AUTHMEMMEMROLE, ObjectIdGetDatum(r));
		for (int i = 0; i < members->n_members; i++)
		{
			Form_pg_auth_members m = (Form_pg_auth_members) GETSTRUCT(&members->members[i]->tuple);

			dep_add_catalog(l, InvalidOid, AUTHMEMROLEMEM,
							GetSysCacheHashValue2(AUTHMEMROLEMEM, ObjectIdGetDatum(m->roleid),
												  ObjectIdGetDatum(m->member)));
			todo = lappend_oid(todo, m->roleid);
		}
		ReleaseSysCacheList(members);
	}
}

/* What the functions a query calls tell about its dependencies. */
typedef struct HiddenReads
{
	bool		untracked;		/* a function may read tables the plan does not name */
	bool		temp;			/* a function of a temporary schema */
} HiddenReads;

/*
 * Functions in SQL or a procedural language may read tables the plan does
 * not name: their dependencies cannot be tracked.  Functions in C, the
 * built-in ones included, are taken not to read tables.  A function of a
 * temporary schema is this session's own: such results are not cached,
 * as for temporary tables.
 */
static void
check_function(Oid fn, HiddenReads *h)
{
	HeapTuple	tup;
	Form_pg_proc proc;

	if (fn < FirstNormalObjectId)
		return;
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(tup))
	{
		h->untracked = true;
		return;
	}
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (proc->prolang != ClanguageId && proc->prolang != INTERNALlanguageId)
		h->untracked = true;
	if (isAnyTempNamespace(proc->pronamespace))
		h->temp = true;
	ReleaseSysCache(tup);
}

static bool
hidden_reads_walker(Node *node, void *context)
{
	HiddenReads *h = (HiddenReads *) context;

	if (node == NULL)
		return false;
	check_stack_depth();
	if (IsA(node, FuncExpr))
		check_function(((FuncExpr *) node)->funcid, h);
	else if (IsA(node, OpExpr) || IsA(node, DistinctExpr) || IsA(node, NullIfExpr))
		check_function(get_opcode(((OpExpr *) node)->opno), h);
	if (h->temp)
		return true;			/* not cached: nothing more to learn */
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, hidden_reads_walker, context, 0);
	return expression_tree_walker(node, hidden_reads_walker, context);
}

/* Strip implicit binary-compatible casts. */
static Node *
strip_relabel(Node *n)
{
	while (n != NULL && IsA(n, RelabelType))
		n = (Node *) ((RelabelType *) n)->arg;
	return n;
}

static List *
flatten_ands(Node *qual, List *out)
{
	ListCell   *lc;

	if (qual == NULL)
		return out;
	check_stack_depth();
	if (is_andclause(qual))
	{
		foreach(lc, ((BoolExpr *) qual)->args)
			out = flatten_ands(lfirst(lc), out);
		return out;
	}
	return lappend(out, qual);
}

/*
 * The value a clause "column = value" pins the relation's column to, when
 * value is a parameter or a constant of the column's type compared with
 * its default equality under its collation (so that equal values hash
 * alike, as the watch trigger hashes them).
 */
static bool
pinned_by_clause(Node *clause, int rti, Form_pg_attribute att, const QueryCall *q,
				 uint64 *hash)
{
	OpExpr	   *op;
	Node	   *l;
	Node	   *r;
	Datum		value;
	Oid			type;

	if (!IsA(clause, OpExpr) || list_length(((OpExpr *) clause)->args) != 2)
		return false;
	op = (OpExpr *) clause;
	l = strip_relabel(linitial(op->args));
	r = strip_relabel(lsecond(op->args));
	if (!IsA(l, Var))
	{
		Node	   *t = l;

		l = r;
		r = t;
	}
	if (!IsA(l, Var) || ((Var *) l)->varno != rti || ((Var *) l)->varlevelsup != 0 ||
		((Var *) l)->varattno != att->attnum)
		return false;
	if (op->opno != lookup_type_cache(att->atttypid, TYPECACHE_EQ_OPR)->eq_opr ||
		op->inputcollid != att->attcollation)
		return false;
	if (IsA(r, Param) && ((Param *) r)->paramkind == PARAM_EXTERN &&
		((Param *) r)->paramid >= 1 && ((Param *) r)->paramid <= q->nargs)
	{
		int			i = ((Param *) r)->paramid - 1;

		if (q->nulls[i] == 'n')
			return false;
		value = q->values[i];
		type = q->argtypes[i];
	}
	else if (IsA(r, Const) && !((Const *) r)->constisnull)
	{
		value = ((Const *) r)->constvalue;
		type = ((Const *) r)->consttype;
	}
	else
		return false;
	return type == att->atttypid &&
		cache_value_hash(att->atttypid, att->attcollation, value, hash);
}

/*
 * Whether the query reads relid only once, at its top level, with its
 * WHERE clause pinning the column attnum to one value: the result then
 * depends on the rows of that value only.
 */
static bool
pinned_value(Query *query, Oid relid, AttrNumber attnum, const QueryCall *q, uint64 *hash)
{
	int			rti = 0;
	int			found = 0;
	ListCell   *lc;
	List	   *clauses;
	HeapTuple	atttup;
	bool		pinned = false;

	if (query == NULL || query->commandType != CMD_SELECT || query->jointree == NULL ||
		has_subclass(relid))
		return false;
	foreach(lc, query->rtable)
	{
		RangeTblEntry *rte = lfirst(lc);

		rti++;
		if (rte->rtekind == RTE_RELATION && rte->relid == relid)
		{
			if (found != 0)
				return false;
			found = rti;
		}
	}
	if (found == 0)
		return false;
	atttup = SearchSysCache2(ATTNUM, ObjectIdGetDatum(relid), Int16GetDatum(attnum));
	if (!HeapTupleIsValid(atttup))
		return false;
	clauses = flatten_ands(query->jointree->quals, NIL);
	foreach(lc, clauses)
		if ((pinned = pinned_by_clause(lfirst(lc), found,
									   (Form_pg_attribute) GETSTRUCT(atttup), q, hash)))
			break;
	ReleaseSysCache(atttup);
	return pinned;
}

/* The analysed, rewritten query of a one-statement plan, or NULL. */
static Query *
plan_query(SPIPlanPtr plan)
{
	List	   *sources = SPI_plan_get_plan_sources(plan);
	CachedPlanSource *src;

	if (list_length(sources) != 1)
		return NULL;
	src = linitial(sources);
	if (list_length(src->query_list) != 1)
		return NULL;
	return linitial_node(Query, src->query_list);
}

/* How often relid appears in the plan's relation list (self-joins, views). */
static int
count_oid(List *oids, Oid relid)
{
	ListCell   *lc;
	int			n = 0;

	foreach(lc, oids)
		n += lfirst_oid(lc) == relid;
	return n;
}

/*
 * A relation the plan reads: its generation (any write, or, when its
 * watched column is pinned to a value, writes of that value and writes of
 * unknown values), and its schema's.  Writes to foreign tables happen
 * elsewhere, and on a standby nothing is seen: those are untracked.
 */
static void
add_relation_deps(DepList *l, Oid relid, char kind, PlannedStmt *stmt, Query *query,
				  const QueryCall *q)
{
	bool		tracked = kind != RELKIND_FOREIGN_TABLE &&
		(!RecoveryInProgress() || cache_wal_replayed()) &&
		(cache_track_writes || cache_track_watched(relid));
	AttrNumber	attnum;
	uint64		hash;

	if (tracked && kind == RELKIND_RELATION &&
		count_oid(stmt->relationOids, relid) == 1 &&
		cache_track_by_column(relid, &attnum) &&
		pinned_value(query, relid, attnum, q, &hash))
	{
		dep_add(l, MyDatabaseId, CACHE_DEP_REL_UNKNOWN, relid, 0, relid, true, true);
		dep_add(l, MyDatabaseId, CACHE_DEP_VALUE, relid, hash, relid, true, false);
	}
	else
		dep_add(l, MyDatabaseId, CACHE_DEP_REL, relid, 0, relid, tracked, true);
	dep_add_catalog(l, MyDatabaseId, NAMESPACEOID,
					GetSysCacheHashValue1(NAMESPACEOID,
										  ObjectIdGetDatum(get_rel_namespace(relid))));
}

/*
 * Plan the query once to check it is a single read-only SELECT and to
 * collect what its result depends on: every relation its range table
 * references (views included: a REVOKE on a view sends an invalidation of
 * the view only; tables read through views, subqueries, RLS policies),
 * their inheritance ancestors and schemas, the functions and types the
 * plan depends on (its invalItems), the role and its memberships, and the
 * database.  *temp tells whether any relation is temporary.
 */
static void
plan_dependencies(SPIPlanPtr plan, const QueryCall *q, DepList *l, bool *temp)
{
	CachedPlan *cplan = SPI_plan_get_cached_plan(plan);
	PlannedStmt *stmt;
	Query	   *query = plan_query(plan);
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
			kind != RELKIND_MATVIEW && kind != RELKIND_FOREIGN_TABLE &&
			kind != RELKIND_VIEW)
			continue;
		if (get_rel_persistence(relid) == RELPERSISTENCE_TEMP)
			*temp = true;
		if (list_member_oid(rels, relid))
			continue;
		rels = lappend_oid(rels, relid);
		if (has_superclass(relid))
			rels = add_ancestors(rels, relid, 0);
	}
	foreach(lc, rels)
	{
		Oid			relid = lfirst_oid(lc);

		add_relation_deps(l, relid, get_rel_relkind(relid), stmt, query, q);
	}
	foreach(lc, stmt->invalItems)
	{
		PlanInvalItem *item = lfirst_node(PlanInvalItem, lc);

		dep_add_catalog(l, MyDatabaseId, item->cacheId, item->hashValue);
	}
	ReleaseCachedPlan(cplan, NULL);
	if (query == NULL)
		l->untracked = true;
	else
	{
		HiddenReads h = {0};

		(void) hidden_reads_walker((Node *) query, &h);
		l->untracked |= h.untracked;
		*temp |= h.temp;
	}
	add_role_deps(l, q->role);
	dep_add(l, MyDatabaseId, CACHE_DEP_DATABASE, MyDatabaseId, 0, InvalidOid, true, false);
}

/*
 * Read the generations, creating slots where there are none, before the
 * caller takes its snapshot.  False if one could not be had: the result is
 * then returned but not cached.
 */
static bool
read_generations(DepList *l, uint64 *epoch)
{
	bool		ok;

	*epoch = cache_gen_epoch();
	ok = !l->too_many && cache_gen_read(l->deps, l->n);
	/* The reads above must not move past the snapshot taken next. */
	pg_memory_barrier();
	return ok;
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
 * generations it records.
 */
static bool
may_publish(void)
{
	return !IsolationUsesXactSnapshot();
}

/*
 * Whether this transaction wrote something the result depends on: its
 * rows are not committed.  A result with untracked dependencies may read
 * anything the transaction wrote.
 */
static bool
reads_own_writes(const CacheDep *deps, int ndeps, bool untracked)
{
	if (!cache_track_wrote_in_xact())
		return false;
	if (untracked)
		return true;
	for (int i = 0; i < ndeps; i++)
		if (OidIsValid(deps[i].relid) && cache_track_wrote(deps[i].relid))
			return true;
	return false;
}

/*
 * A result with a dependency whose writes are not seen lives at most
 * harden.cache_untracked_ttl.
 */
static void
cap_untracked_expiry(CacheItem *item)
{
	TimestampTz cap = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												  (int64) cache_untracked_ttl_s * 1000);

	if (item->expires_at == 0 || item->expires_at > cap)
		item->expires_at = cap;
	harden_count(HC_CACHE_QUERY_UNTRACKED, 1);
}

/*
 * Store a computed result unless it may not be (above), reads a temporary
 * table (another session's rows) or this transaction's own writes, is too
 * large or already stale, or the query changed the current role (its
 * result is not the caller's).  Returns whether it was stored or queued
 * for commit.
 */
static bool
publish(const QueryCall *q, Jsonb *result, const DepList *l, uint64 epoch, bool temp)
{
	CacheItem	item = {0};

	if (!may_publish() || temp || reads_own_writes(l->deps, l->n, l->untracked) ||
		(l->untracked && cache_untracked_ttl_s == 0) ||
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
	item.query.ndeps = l->n;
	item.query.deps = l->deps;
	/* Catalog changes committed while we computed move generations now. */
	AcceptInvalidationMessages();
	if (!cache_deps_current(MyDatabaseId, &item.query))
		return false;
	cache_query_item_expiry(&item, q->userkey, q->userlen, q->ttl);
	if (l->untracked)
		cap_untracked_expiry(&item);
	cache_xact_write(CACHE_PENDING_SET, item.key, item.keylen, item.owner, &item);
	return true;
}

/*
 * Untyped parameters (what node-postgres and psycopg send): analyse the
 * query with variable parameter types, as PREPARE without types does, and
 * convert each text value with the input function of the type the query
 * gives its parameter (text where it gives none).
 */
static void
resolve_untyped(QueryCall *q)
{
	List	   *raw = raw_parser(q->sql, RAW_PARSE_DEFAULT);
	Oid		   *types = palloc(sizeof(Oid) * Max(q->nargs, 1));
	int			n = q->nargs;

	q->untyped = false;
	if (list_length(raw) != 1)
		return;					/* SPI reports it */
	for (int i = 0; i < q->nargs; i++)
		types[i] = UNKNOWNOID;
	(void) pg_analyze_and_rewrite_varparams(linitial_node(RawStmt, raw), q->sql,
											&types, &n, NULL);
	for (int i = 0; i < q->nargs; i++)
	{
		Oid			t = (i < n && OidIsValid(types[i]) && types[i] != UNKNOWNOID) ? types[i] : TEXTOID;

		if (t != TEXTOID && q->nulls[i] != 'n')
		{
			Oid			in;
			Oid			ioparam;

			getTypeInputInfo(t, &in, &ioparam);
			q->values[i] = OidInputFunctionCall(in, TextDatumGetCString(q->values[i]), ioparam, -1);
		}
		q->argtypes[i] = t;
	}
}

/* What running the query found: its dependencies and their generations. */
typedef struct QueryRun
{
	DepList		deps;
	uint64		epoch;
	bool		temp;
	bool		current;		/* the generations were current when read */
} QueryRun;

/*
 * Whether a policy makes the key's entries secure: their statements are
 * never shown in messages (log_values.c).
 */
static bool
query_secure(const QueryCall *q)
{
	CacheItem	probe;

	memset(&probe, 0, sizeof(probe));
	cache_query_item_expiry(&probe, q->userkey, q->userlen, NULL);
	return (probe.flags & CACHE_FLAG_SECURE) != 0;
}

/* Prepare and run the query; its rows are in SPI_tuptable. */
static void
run_query(QueryCall *q, QueryRun *run)
{
	SPIPlanPtr	plan;
	Snapshot	snap;
	int			rc;

	if (q->untyped)
		resolve_untyped(q);
	/* Parallel plans are fine: the query runs once, read-only, to the end. */
	plan = SPI_prepare_cursor(q->sql, q->nargs, q->argtypes, CURSOR_OPT_PARALLEL_OK);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	run->deps.deps = palloc(sizeof(CacheDep) * CACHE_QUERY_MAX_DEPS);
	plan_dependencies(plan, q, &run->deps, &run->temp);
	run->current = read_generations(&run->deps, &run->epoch);

	/* A snapshot taken after the generations were read (see above). */
	snap = GetTransactionSnapshot();
	rc = SPI_execute_snapshot(plan, q->values, q->nulls, snap, InvalidSnapshot,
							  true, false, 0);
	if (rc != SPI_OK_SELECT)
		not_cacheable("The statement did not return rows.");
}

/* Run the query and cache its result if it may be; returns the result. */
static Jsonb *
compute(QueryCall *q, bool *published)
{
	QueryRun	run = {0};
	HardenRedact redact;
	Jsonb	   *result;
	bool		stored;
	instr_time	start;

	harden_timer_start(&start);
	harden_count(HC_CACHE_QUERIES, 1);
	/* Invalidations processed from here on may concern this result. */
	cache_gen_computing(true);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* The statement's text stays out of messages it causes, if it must. */
	harden_redact_begin(&redact, q->sql, "harden.cache_query()", query_secure(q));
	PG_TRY();
	{
		run_query(q, &run);
	}
	PG_CATCH();
	{
		harden_redact_rethrow(&redact);
	}
	PG_END_TRY();
	harden_redact_end(&redact);

	result = DatumGetJsonbP(rows_to_jsonb());
	stored = run.current && publish(q, result, &run.deps, run.epoch, run.temp);
	if (published)
		*published = stored;

	cache_gen_computing(false);

	/* Into the caller's context, before SPI frees its own. */
	result = (Jsonb *) SPI_datumTransfer(JsonbPGetDatum(result), false, -1);
	SPI_finish();
	harden_observe(HH_CACHE_QUERY, start);
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
		char	   *name;

		if (!hit->deps[i].shown)
			continue;
		name = get_rel_name(hit->deps[i].relid);

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
		hit.fingerprint != q->fingerprint || shadowed_by_temp(&hit) ||
		reads_own_writes(hit.deps, hit.ndeps, false))
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

/* The text values of VARIADIC params text[] (untyped parameters). */
static void
collect_text_params(FunctionCallInfo fcinfo, int argno, QueryCall *q)
{
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *elnulls;
	int			nelems;

	q->nargs = 0;
	q->untyped = true;
	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return;
	arr = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("harden.cache_query(): parameters must be a one-dimensional array")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &elnulls, &nelems);
	q->argtypes = palloc(sizeof(Oid) * Max(nelems, 1));
	q->values = palloc(sizeof(Datum) * Max(nelems, 1));
	q->nulls = palloc(Max(nelems, 1));
	for (int i = 0; i < nelems; i++)
	{
		q->argtypes[i] = TEXTOID;
		q->values[i] = elems[i];
		q->nulls[i] = elnulls[i] ? 'n' : ' ';
	}
	q->nargs = nelems;
}

static Datum
cache_query_call(FunctionCallInfo fcinfo, bool untyped)
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
	if (untyped)
		collect_text_params(fcinfo, 3, &q);
	else
		collect_params(fcinfo, 3, &q);
	q.fingerprint = query_fingerprint(&q);
	q.role = GetUserId();
	q.key = cache_query_key(q.userkey, q.userlen, q.role, &q.keylen);

	/*
	 * No need to process invalidations first: a transaction that changed a
	 * catalog object moves its generation again once its commit is visible
	 * (cache_watch.c), before its COMMIT returns.
	 */
	result = lookup(&q);
	if (result != NULL)
	{
		harden_count(HC_CACHE_HITS, 1);
		PG_RETURN_JSONB_P(result);
	}
	harden_count(HC_CACHE_MISSES, 1);
	PG_RETURN_JSONB_P(fill(&q));
}

PG_FUNCTION_INFO_V1(harden_cache_query);
PG_FUNCTION_INFO_V1(harden_cache_query_untyped);

/*
 * cache_query(key, sql, ttl DEFAULT NULL, VARIADIC params "any")
 *	  The rows of sql as a jsonb array of objects, from the cache when
 *	  current, else computed and cached.
 */
Datum
harden_cache_query(PG_FUNCTION_ARGS)
{
	return cache_query_call(fcinfo, false);
}

/*
 * cache_query(key, sql, ttl, VARIADIC params text[])
 *	  The same for untyped parameters and literals (chosen by the parser
 *	  when every parameter is of unknown type): their types come from the
 *	  query.
 */
Datum
harden_cache_query_untyped(PG_FUNCTION_ARGS)
{
	return cache_query_call(fcinfo, true);
}
