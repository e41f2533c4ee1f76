/*
 * cache_track.c
 *	  Writes that invalidate cached query results: seen by executor and
 *	  utility hooks (and by watch triggers), moved after commit.
 *
 * Every INSERT, UPDATE, DELETE and MERGE through this server reaches the
 * executor: ExecutorStart notes the plan's result relations and
 * ExecutorEnd the partitions rows were routed to.  TRUNCATE, COPY FROM and
 * REFRESH MATERIALIZED VIEW are utility commands, noted by the
 * ProcessUtility hook.  When the writing transaction has committed, the
 * relations' generations move (cache_watch.c); a relation that no cached
 * result depends on has no generation slot, so the common case costs one
 * probe per written relation at commit.
 *
 * Writes the hooks cannot see (logical replication's apply worker) are
 * seen by the statement trigger cache_watch() installs, when enabled
 * ALWAYS.  A relation watched by a column has a row trigger that notes the
 * old and new value of that column, so a write moves the generations of
 * those values only (and the relation's "any write" generation, which
 * results not pinned to a value read).
 *
 * COMMIT PREPARED runs in another transaction than the writes it
 * publishes: it moves the database's generation, which every result of the
 * database depends on.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parsetree.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "pg_harden.h"
#include "cache.h"

#define WATCH_TRIGGER_NAME	"harden_cache_watch"
#define WATCH_BY_TRIGGER_NAME	"harden_cache_watch_by"

/* Distinct column values noted per transaction; beyond, the whole table. */
#define MAX_TRACKED_VALUES	4096
#define VALUE_SET_SIZE		(MAX_TRACKED_VALUES * 2)

/* What this transaction wrote, in TopTransactionContext. */
static List *written = NIL;		/* relations */
static List *unknown = NIL;		/* ... of which some values are unknown */
static List *granted = NIL;		/* roles that were granted or revoked roles */
static uint64 *values = NULL;	/* generation keys of written values: a set */
static int	nvalues = 0;
static Oid	values_db = InvalidOid;

bool		cache_track_writes = true;

static ExecutorStart_hook_type prev_executor_start = NULL;
static ExecutorEnd_hook_type prev_executor_end = NULL;
static ProcessUtility_hook_type prev_utility = NULL;

void
cache_track_define_gucs(bool preloading)
{
	if (!preloading)
		return;
	DefineCustomBoolVariable("harden.cache_track",
							 "Whether writes seen by the executor and utility hooks invalidate cached query results.",
							 "Off: the hooks are not installed, and every cache_query() result is bounded by harden.cache_untracked_ttl (writes to watched tables still invalidate).",
							 &cache_track_writes,
							 true,
							 PGC_POSTMASTER, 0,
							 NULL, NULL, NULL);
}

/* ---- noting writes ---- */

static void
forget(void)
{
	written = unknown = granted = NIL;
	values = NULL;
	nvalues = 0;
}

static void
note_rel(Oid relid, bool values_known)
{
	MemoryContext old;

	if (!harden_shmem_ready || !OidIsValid(relid))
		return;
	old = MemoryContextSwitchTo(TopTransactionContext);
	written = list_append_unique_oid(written, relid);
	if (!values_known)
		unknown = list_append_unique_oid(unknown, relid);
	MemoryContextSwitchTo(old);
}

/* The relation and, when inh, every inheritor (partitions included). */
static void
note_tree(Oid relid, bool inh)
{
	List	   *rels;
	ListCell   *lc;

	if (!inh || !has_subclass(relid))
	{
		note_rel(relid, false);
		return;
	}
	rels = find_all_inheritors(relid, NoLock, NULL);
	foreach(lc, rels)
		note_rel(lfirst_oid(lc), false);
}

static void
note_value(Oid relid, uint64 valuehash)
{
	uint64		key = cache_gen_key(MyDatabaseId, CACHE_DEP_VALUE, relid, valuehash);
	uint32		i;

	if (values == NULL)
		values = MemoryContextAllocZero(TopTransactionContext, sizeof(uint64) * VALUE_SET_SIZE);
	values_db = MyDatabaseId;
	for (i = (uint32) (key >> 32) % VALUE_SET_SIZE; values[i] != 0; i = (i + 1) % VALUE_SET_SIZE)
		if (values[i] == key)
			return;
	if (nvalues >= MAX_TRACKED_VALUES)
	{
		/* Too many to remember: the whole table's results go stale. */
		note_rel(relid, false);
		return;
	}
	values[i] = key;
	nvalues++;
}

/*
 * Whether this transaction wrote a relation (seen by a hook or trigger):
 * its own reads then differ from what others see.
 */
bool
cache_track_wrote_in_xact(void)
{
	return written != NIL;
}

bool
cache_track_wrote(Oid relid)
{
	return list_member_oid(written, relid);
}

/* ---- moving generations at commit ---- */

/* Every generation key the transaction's writes move, to fn. */
static void
each_moved_key(void (*fn) (uint64 key))
{
	ListCell   *lc;

	foreach(lc, written)
	{
		uint64		keys[2];
		Oid			relid = lfirst_oid(lc);
		int			n = cache_gen_rel_keys(MyDatabaseId, relid,
										   !list_member_oid(unknown, relid), keys);

		for (int i = 0; i < n; i++)
			fn(keys[i]);
	}
	if (values != NULL && values_db == MyDatabaseId)
		for (int i = 0; i < VALUE_SET_SIZE; i++)
			if (values[i] != 0)
				fn(values[i]);
	foreach(lc, granted)
		fn(cache_gen_key(InvalidOid, CACHE_DEP_CATALOG, AUTHOID,
						 GetSysCacheHashValue1(AUTHOID, ObjectIdGetDatum(lfirst_oid(lc)))));
}

/*
 * For hot standbys (harden.cache_wal), before the commit record: logged
 * with it, the moves reach a standby no later than the commit (its redo
 * keeps results computed from snapshots that miss the commit out).
 */
static void
log_moves(void)
{
	cache_wal_begin();
	each_moved_key(cache_wal_note);
	cache_wal_end(false);
}

static void
track_xact_callback(XactEvent event, void *arg)
{
	bool		moves = written != NIL || values != NULL || granted != NIL;

	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (moves)
				log_moves();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			/* after the commit is visible: atomic stores only, which cannot fail */
			if (moves)
				each_moved_key(cache_gen_bump);
			forget();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* A prepared transaction's writes count at COMMIT PREPARED. */
			forget();
			break;
		default:
			break;
	}
}

/* ---- the executor ---- */

/* Whether trigger t fires in this session (session_replication_role). */
static bool
trigger_fires(const Trigger *t)
{
	if (t->tgenabled == TRIGGER_DISABLED)
		return false;
	if (SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA)
		return t->tgenabled == TRIGGER_FIRES_ON_REPLICA || t->tgenabled == TRIGGER_FIRES_ALWAYS;
	return t->tgenabled == TRIGGER_FIRES_ON_ORIGIN || t->tgenabled == TRIGGER_FIRES_ALWAYS;
}

static bool is_our_trigger(const Trigger *t, const char *name, const char *fn, bool row);

/* A trigger of cache_watch()'s on an open relation, or NULL. */
static const Trigger *
our_trigger(Relation rel, const char *name, const char *fn, bool row)
{
	if (rel->trigdesc == NULL)
		return NULL;
	for (int i = 0; i < rel->trigdesc->numtriggers; i++)
	{
		const Trigger *t = &rel->trigdesc->triggers[i];

		if (is_our_trigger(t, name, fn, row))
			return t;
	}
	return NULL;
}

/* The by-column row trigger of an open relation, or NULL. */
static const Trigger *
by_trigger(Relation rel)
{
	return our_trigger(rel, WATCH_BY_TRIGGER_NAME, "cache_watch_by_trigger", true);
}

/*
 * Whether the column values of every row a statement writes to rel are
 * noted (by its by-column row trigger, firing in this session).
 */
static bool
values_seen(Relation rel)
{
	const Trigger *t;

	if (rel->trigdesc == NULL)
		return false;
	t = by_trigger(rel);
	return t != NULL && trigger_fires(t);
}

static void
note_relation(Relation rel)
{
	note_rel(RelationGetRelid(rel), values_seen(rel));
}

/* The same by OID, for a relation that may be gone (then nothing). */
static void
note_relid(Oid relid)
{
	Relation	rel = RelationIdGetRelation(relid);

	if (rel == NULL)
		return;
	note_relation(rel);
	RelationClose(rel);
}

static inline bool
plan_writes(QueryDesc *qd)
{
	return qd->operation != CMD_SELECT || qd->plannedstmt->hasModifyingCTE;
}

static void
track_executor_start(QueryDesc *qd, int eflags)
{
	ListCell   *lc;

	if (prev_executor_start)
		prev_executor_start(qd, eflags);
	else
		standard_ExecutorStart(qd, eflags);
	if (!harden_shmem_ready || (eflags & EXEC_FLAG_EXPLAIN_ONLY) || !plan_writes(qd))
		return;
	foreach(lc, qd->plannedstmt->resultRelations)
		note_relid(rt_fetch(lfirst_int(lc), qd->plannedstmt->rtable)->relid);
}

/* Rows routed to partitions: the partitions are written too. */
static void
track_executor_end(QueryDesc *qd)
{
	if (harden_shmem_ready && qd->estate != NULL && plan_writes(qd))
	{
		ListCell   *lc;

		foreach(lc, qd->estate->es_tuple_routing_result_relations)
			note_relation(((ResultRelInfo *) lfirst(lc))->ri_RelationDesc);
	}
	if (prev_executor_end)
		prev_executor_end(qd);
	else
		standard_ExecutorEnd(qd);
}

/* ---- utility commands ---- */

static void
note_copy_from(CopyStmt *stmt)
{
	Oid			relid = RangeVarGetRelid(stmt->relation, NoLock, true);
	List	   *rels;
	ListCell   *lc;

	if (!OidIsValid(relid))
		return;
	rels = has_subclass(relid) ? find_all_inheritors(relid, NoLock, NULL) : list_make1_oid(relid);
	/* COPY fires row triggers, so by-column values are noted. */
	foreach(lc, rels)
		note_relid(lfirst_oid(lc));
}

static void
note_grantees(GrantRoleStmt *stmt)
{
	ListCell   *lc;
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

	foreach(lc, stmt->grantee_roles)
	{
		Oid			role = get_rolespec_oid(lfirst(lc), true);

		if (OidIsValid(role))
			granted = list_append_unique_oid(granted, role);
	}
	MemoryContextSwitchTo(old);
}

/* What a utility statement wrote, noted after it ran. */
static void
note_utility(Node *parsetree)
{
	ListCell   *lc;

	switch (nodeTag(parsetree))
	{
		case T_TruncateStmt:
			foreach(lc, ((TruncateStmt *) parsetree)->relations)
			{
				RangeVar   *rv = lfirst(lc);
				Oid			relid = RangeVarGetRelid(rv, NoLock, true);

				if (OidIsValid(relid))
					note_tree(relid, rv->inh);
			}
			break;
		case T_CopyStmt:
			if (((CopyStmt *) parsetree)->is_from && ((CopyStmt *) parsetree)->relation)
				note_copy_from((CopyStmt *) parsetree);
			break;
		case T_RefreshMatViewStmt:
			note_rel(RangeVarGetRelid(((RefreshMatViewStmt *) parsetree)->relation, NoLock, true),
					 false);
			break;
		case T_GrantRoleStmt:
			note_grantees((GrantRoleStmt *) parsetree);
			break;
		case T_TransactionStmt:
			if (((TransactionStmt *) parsetree)->kind == TRANS_STMT_COMMIT_PREPARED)
			{
				/* after its commit record: flushed at once, for the standbys */
				cache_wal_begin();
				cache_wal_note(cache_gen_key(MyDatabaseId, CACHE_DEP_DATABASE, MyDatabaseId, 0));
				cache_wal_end(true);
				cache_gen_bump_database(MyDatabaseId);
			}
			break;
		default:
			break;
	}
}

static void
track_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
			  ProcessUtilityContext context, ParamListInfo params,
			  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (prev_utility)
		prev_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
	if (harden_shmem_ready)
		note_utility(pstmt->utilityStmt);
}

void
cache_track_hooks_install(void)
{
	if (!cache_track_writes)
	{
		/* Watch triggers still note writes and need the callback. */
		RegisterXactCallback(track_xact_callback, NULL);
		return;
	}
	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = track_executor_start;
	prev_executor_end = ExecutorEnd_hook;
	ExecutorEnd_hook = track_executor_end;
	prev_utility = ProcessUtility_hook;
	ProcessUtility_hook = track_utility;
	RegisterXactCallback(track_xact_callback, NULL);
}

/* ---- watch triggers ---- */

PG_FUNCTION_INFO_V1(harden_cache_watch_trigger);

/*
 * The statement trigger cache_watch() installs.  Without preloading there
 * is no cache to invalidate, and a write must never fail because of it.
 */
Datum
harden_cache_watch_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("harden.cache_watch_trigger() must be an AFTER ... FOR EACH STATEMENT trigger"),
				 errhint("Use harden.cache_watch(table) to install it.")));
	note_rel(RelationGetRelid(trigdata->tg_relation), false);
	return PointerGetDatum(NULL);
}

/*
 * The hash of a column value, as cache_query() computes it for a value its
 * plan pins the column to: the type's default hash function (consistent
 * with its equality) under the column's collation.  False for NULL.
 */
bool
cache_value_hash(Oid type, Oid collation, Datum value, uint64 *hash)
{
	TypeCacheEntry *tc = lookup_type_cache(type, TYPECACHE_HASH_EXTENDED_PROC_FINFO);

	if (!OidIsValid(tc->hash_extended_proc))
		return false;
	*hash = DatumGetUInt64(FunctionCall2Coll(&tc->hash_extended_proc_finfo, collation,
											 value, UInt64GetDatum(0)));
	return true;
}

static void
note_row_value(Relation rel, HeapTuple tuple, AttrNumber attnum)
{
	Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), attnum - 1);
	bool		isnull;
	Datum		value;
	uint64		hash;

	if (tuple == NULL)
		return;
	value = heap_getattr(tuple, attnum, RelationGetDescr(rel), &isnull);
	/* A NULL never equals the value a result is pinned to. */
	if (isnull)
		return;
	if (cache_value_hash(att->atttypid, att->attcollation, value, &hash))
		note_value(RelationGetRelid(rel), hash);
	else
		note_rel(RelationGetRelid(rel), false);
}

PG_FUNCTION_INFO_V1(harden_cache_watch_by_trigger);

/* The row trigger of cache_watch(table, by => column): notes old and new values. */
Datum
harden_cache_watch_by_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	AttrNumber	attnum;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!TRIGGER_FIRED_AFTER(td->tg_event) || td->tg_trigger->tgnargs != 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("harden.cache_watch_by_trigger() must be an AFTER ... FOR EACH ROW trigger with a column name"),
				 errhint("Use harden.cache_watch(table, by => column) to install it.")));
	if (!harden_shmem_ready)
		return PointerGetDatum(NULL);
	attnum = get_attnum(RelationGetRelid(td->tg_relation), td->tg_trigger->tgargs[0]);
	if (attnum <= 0)
	{
		note_rel(RelationGetRelid(td->tg_relation), false);
		return PointerGetDatum(NULL);
	}
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
		note_row_value(td->tg_relation, td->tg_trigtuple, attnum);
	else if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
		note_row_value(td->tg_relation, td->tg_trigtuple, attnum);
	else
	{
		note_row_value(td->tg_relation, td->tg_trigtuple, attnum);
		note_row_value(td->tg_relation, td->tg_newtuple, attnum);
	}
	/* The "any write" generation moves too (results not pinned to a value). */
	note_rel(RelationGetRelid(td->tg_relation), true);
	return PointerGetDatum(NULL);
}

/* ---- cache_watch / cache_unwatch ---- */

/* A trigger cache_watch() installs: its name, our function, its level. */
static bool
is_our_trigger(const Trigger *t, const char *name, const char *fn, bool row)
{
	char	   *proname;

	if (strcmp(t->tgname, name) != 0 || TRIGGER_FOR_ROW(t->tgtype) != row)
		return false;
	proname = get_func_name(t->tgfoid);
	return proname != NULL && strcmp(proname, fn) == 0 &&
		get_func_namespace(t->tgfoid) == get_namespace_oid("harden", true);
}

/*
 * The column a relation is watched by (its by-column trigger, enabled),
 * for cache_query() to pin results to a value of it.
 */
bool
cache_track_by_column(Oid relid, AttrNumber *attnum)
{
	Relation	rel = RelationIdGetRelation(relid);
	const Trigger *t;
	bool		found = false;

	if (rel == NULL)
		return false;
	t = by_trigger(rel);
	if (t != NULL && t->tgenabled != TRIGGER_DISABLED && t->tgnargs == 1)
	{
		*attnum = get_attnum(relid, t->tgargs[0]);
		found = *attnum > 0;
	}
	RelationClose(rel);
	return found;
}

static bool
has_trigger(Oid relid, const char *name, const char *fn, bool row)
{
	Relation	rel = RelationIdGetRelation(relid);
	bool		found;

	if (rel == NULL)
		return false;
	found = our_trigger(rel, name, fn, row) != NULL;
	RelationClose(rel);
	return found;
}

/*
 * Whether writes to a relation are seen without the hooks: it has the
 * statement trigger cache_watch() installs, firing in ordinary sessions.
 */
bool
cache_track_watched(Oid relid)
{
	Relation	rel = RelationIdGetRelation(relid);
	const Trigger *t;
	bool		found;

	if (rel == NULL)
		return false;
	t = our_trigger(rel, WATCH_TRIGGER_NAME, "cache_watch_trigger", false);
	found = t != NULL &&
		(t->tgenabled == TRIGGER_FIRES_ON_ORIGIN || t->tgenabled == TRIGGER_FIRES_ALWAYS);
	RelationClose(rel);
	return found;
}

/* The relation and, for a partitioned table, all its partitions. */
static List *
watch_targets(Oid relid, const char *fn, bool by)
{
	char		relkind = get_rel_relkind(relid);

	/* Results reading temporary tables are never cached. */
	if (get_rel_persistence(relid) == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s: \"%s\" is a temporary table", fn, get_rel_name(relid)),
				 errdetail("cache_query() never caches results that read temporary tables.")));
	if (by && (relkind != RELKIND_RELATION || has_subclass(relid) || has_superclass(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s: \"%s\" cannot be watched by a column", fn, get_rel_name(relid)),
				 errdetail("Only plain tables without inheritance can be watched by a column."),
				 errhint("Watch it without by => ...; writes then invalidate every result reading it.")));
	if (relkind == RELKIND_PARTITIONED_TABLE)
		return find_all_inheritors(relid, AccessShareLock, NULL);
	if (relkind == RELKIND_RELATION || relkind == RELKIND_FOREIGN_TABLE)
		return list_make1_oid(relid);
	ereport(ERROR,
			(errcode(ERRCODE_WRONG_OBJECT_TYPE),
			 errmsg("%s: \"%s\" is not a table", fn, get_rel_name(relid)),
			 errdetail("Only tables, partitioned tables and foreign tables can be watched."),
			 errhint("Watch the tables a view or materialized view reads instead.")));
	return NIL;
}

static void
run_ddl(const char *fmt, Oid relid, const char *arg)
{
	char	   *name = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
												  get_rel_name(relid));
	char	   *sql = psprintf(fmt, name, arg ? quote_literal_cstr(arg) : "");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "SPI_execute failed: %s", sql);
	SPI_finish();
}

static Oid
arg_relation(FunctionCallInfo fcinfo, const char *fn)
{
	Oid			relid;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s: table must not be NULL", fn)));
	relid = PG_GETARG_OID(0);
	if (get_rel_name(relid) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("%s: relation with OID %u does not exist", fn, relid)));
	return relid;
}

/* The by column of cache_watch(table, by), checked; NULL without one. */
static const char *
arg_by_column(FunctionCallInfo fcinfo, Oid relid, const char *fn)
{
	const char *col;

	if (PG_NARGS() < 2 || PG_ARGISNULL(1))
		return NULL;
	col = NameStr(*PG_GETARG_NAME(1));
	if (get_attnum(relid, col) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("%s: column \"%s\" of \"%s\" does not exist", fn, col, get_rel_name(relid))));
	return col;
}

#define CREATE_WATCH "CREATE TRIGGER " WATCH_TRIGGER_NAME \
	" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s" \
	" FOR EACH STATEMENT EXECUTE FUNCTION harden.cache_watch_trigger()%s"
#define CREATE_WATCH_TRUNCATE "CREATE TRIGGER " WATCH_TRIGGER_NAME \
	" AFTER TRUNCATE ON %s" \
	" FOR EACH STATEMENT EXECUTE FUNCTION harden.cache_watch_trigger()%s"
#define CREATE_WATCH_BY "CREATE TRIGGER " WATCH_BY_TRIGGER_NAME \
	" AFTER INSERT OR UPDATE OR DELETE ON %s" \
	" FOR EACH ROW EXECUTE FUNCTION harden.cache_watch_by_trigger(%s)"
#define DROP_WATCH "DROP TRIGGER " WATCH_TRIGGER_NAME " ON %s%s"
#define DROP_WATCH_BY "DROP TRIGGER " WATCH_BY_TRIGGER_NAME " ON %s%s"

/*
 * Install (watch) or drop the watch triggers on a table and, for a
 * partitioned table, on every partition; true if anything changed.  Either
 * way the tables' results go stale at commit.  The DDL runs as the caller,
 * so CREATE / DROP TRIGGER's privilege rules apply.
 */
static bool
set_watch(FunctionCallInfo fcinfo, bool watch)
{
	const char *fn = watch ? "harden.cache_watch()" : "harden.cache_unwatch()";
	Oid			relid = arg_relation(fcinfo, fn);
	const char *by = watch ? arg_by_column(fcinfo, relid, fn) : NULL;
	List	   *targets = watch_targets(relid, fn, by != NULL);
	ListCell   *lc;
	bool		changed = false;

	foreach(lc, targets)
	{
		Oid			target = lfirst_oid(lc);
		bool		has_stmt = has_trigger(target, WATCH_TRIGGER_NAME, "cache_watch_trigger", false);
		bool		has_by = has_trigger(target, WATCH_BY_TRIGGER_NAME, "cache_watch_by_trigger", true);
		AttrNumber	cur;
		bool		same_by = by != NULL ? (has_by && cache_track_by_column(target, &cur) &&
											cur == get_attnum(target, by)) : !has_by;

		if (watch && has_stmt && same_by)
			continue;
		if (!watch && !has_stmt && !has_by)
			continue;
		if (has_stmt)
			run_ddl(DROP_WATCH, target, NULL);
		if (has_by)
			run_ddl(DROP_WATCH_BY, target, NULL);
		if (watch && by == NULL)
			run_ddl(CREATE_WATCH, target, NULL);
		else if (watch)
		{
			run_ddl(CREATE_WATCH_TRUNCATE, target, NULL);
			run_ddl(CREATE_WATCH_BY, target, by);
		}
		note_rel(target, false);
		changed = true;
	}
	return changed;
}

PG_FUNCTION_INFO_V1(harden_cache_watch);
PG_FUNCTION_INFO_V1(harden_cache_unwatch);

Datum
harden_cache_watch(PG_FUNCTION_ARGS)
{
	harden_deny_on_standby("harden.cache_watch()");
	PG_RETURN_BOOL(set_watch(fcinfo, true));
}

Datum
harden_cache_unwatch(PG_FUNCTION_ARGS)
{
	harden_deny_on_standby("harden.cache_unwatch()");
	PG_RETURN_BOOL(set_watch(fcinfo, false));
}
