/*
 * cache_watch.c
 *	  Write generations of watched relations, for cache_query() results.
 *
 * cache_watch(table) puts a statement-level trigger on the table.  The
 * trigger notes the table in the writing transaction, and when that
 * transaction has committed, the table's generation in shared memory goes
 * up by one.  A cached result records the generations of the relations it
 * read before its snapshot was taken; it is stale as soon as one of them
 * moved.  Because the counter moves only after the commit is visible, a
 * result computed from a snapshot that missed the write always carries the
 * older generation (no stale refill).
 *
 * The table of generations is open-addressed and insert-only: a slot's key
 * is written once, after its generation, so readers probe it without a
 * lock.  Only creating a slot takes the lock.  When the table is full, a
 * write to a relation without a slot moves the epoch instead, which every
 * cached result also records: too many watched tables cost hit ratio, never
 * correctness.
 */
#include "postgres.h"

#include "access/xlog.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"

#include "pg_harden.h"
#include "cache.h"

#define WATCH_TRIGGER_NAME	"harden_cache_watch"

typedef struct WatchSlot
{
	pg_atomic_uint64 key;		/* (dboid << 32) | relid; 0: free */
	pg_atomic_uint64 generation;
} WatchSlot;

typedef struct WatchShared
{
	LWLock	   *lock;			/* serialises slot creation only */
	uint32		nslots;			/* a power of two */
	uint32		used;
	pg_atomic_uint64 epoch;
	WatchSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} WatchShared;

static int	cache_max_watched = 1024;
static WatchShared *watch_shared = NULL;

/* Relations written in this transaction, bumped after it commits. */
static List *written = NIL;
static bool callback_registered = false;

static void watched_rel_changed(Datum arg, Oid relid);
static void rules_changed(Datum arg, int cacheid, uint32 hashvalue);

void
cache_watch_define_gucs(bool preloading)
{
	if (!preloading)
		return;
	/* Registered in the postmaster, so every backend inherits them. */
	CacheRegisterRelcacheCallback(watched_rel_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, rules_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, rules_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, rules_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, rules_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(RULERELNAME, rules_changed, (Datum) 0);
	DefineCustomIntVariable("harden.cache_max_watched",
							"Most relations whose writes invalidate cached query results by generation.",
							"Beyond this, writes to further watched relations invalidate every cached query result.",
							&cache_max_watched,
							1024, 16, 1 << 20,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
}

static uint32
slot_count(void)
{
	uint32		n = 64;

	while (n < (uint32) cache_max_watched * 2)
		n <<= 1;
	return n;
}

Size
cache_watch_shmem_size(void)
{
	return add_size(offsetof(WatchShared, slots),
					mul_size(slot_count(), sizeof(WatchSlot)));
}

void
cache_watch_shmem_startup(void)
{
	bool		found;

	watch_shared = ShmemInitStruct("pg_harden cache watch", cache_watch_shmem_size(), &found);
	if (found)
		return;
	watch_shared->lock = &(GetNamedLWLockTranche("pg_harden"))[2].lock;
	watch_shared->nslots = slot_count();
	watch_shared->used = 0;
	pg_atomic_init_u64(&watch_shared->epoch, 1);
	for (uint32 i = 0; i < watch_shared->nslots; i++)
	{
		pg_atomic_init_u64(&watch_shared->slots[i].key, 0);
		pg_atomic_init_u64(&watch_shared->slots[i].generation, 0);
	}
}

static inline uint64
slot_key(Oid dboid, Oid relid)
{
	return ((uint64) dboid << 32) | (uint64) relid;
}

/*
 * Probe for a relation's slot: the slot holding its key, or else the free
 * slot where it would go (*found false), or NULL when the table is full.
 * Lock-free: keys are written once and never removed.
 */
static WatchSlot *
slot_probe(Oid dboid, Oid relid, bool *found)
{
	uint64		key = slot_key(dboid, relid);
	uint32		mask = watch_shared->nslots - 1;
	uint32		i = hash_combine(murmurhash32(dboid), murmurhash32(relid)) & mask;

	for (uint32 n = 0; n <= mask; n++, i = (i + 1) & mask)
	{
		uint64		k = pg_atomic_read_u64(&watch_shared->slots[i].key);

		*found = (k == key);
		if (*found)
		{
			/* The generation was written before the key: read it after. */
			pg_read_barrier();
			return &watch_shared->slots[i];
		}
		if (k == 0)
			return &watch_shared->slots[i];
	}
	*found = false;
	return NULL;
}

/* The slot of a relation, or NULL. */
static WatchSlot *
slot_find(Oid dboid, Oid relid)
{
	bool		found;
	WatchSlot  *slot = slot_probe(dboid, relid, &found);

	return found ? slot : NULL;
}

/* Generation of a relation of a database; 0 if it has no slot. */
uint64
cache_gen_current(Oid dboid, Oid relid)
{
	WatchSlot  *slot;

	if (watch_shared == NULL)
		return 0;
	slot = slot_find(dboid, relid);
	return slot ? pg_atomic_read_u64(&slot->generation) : 0;
}

/*
 * Results computed on a standby saw no generation move (replayed writes fire
 * no triggers) and recorded their dependencies as unwatched: they carry this
 * bit, which the epoch loses when recovery ends, so a promoted server never
 * serves them.
 */
#define EPOCH_IN_RECOVERY (UINT64CONST(1) << 63)

uint64
cache_gen_epoch(void)
{
	if (watch_shared == NULL)
		return 0;
	return pg_atomic_read_u64(&watch_shared->epoch) |
		(RecoveryInProgress() ? EPOCH_IN_RECOVERY : 0);
}

/*
 * Whether a result computed with these generations is still current.  The
 * callers read the generations before taking a snapshot; the barrier keeps
 * the reads before it.
 */
bool
cache_deps_current(Oid dboid, const CacheQueryMeta *meta)
{
	bool		current = meta->epoch == cache_gen_epoch();

	for (int i = 0; current && i < meta->ndeps; i++)
		current = cache_gen_current(dboid, meta->deps[i].relid) == meta->deps[i].generation;
	return current;
}

/*
 * Give a relation of this database a slot; false when the table is full.
 * A new slot starts at generation 1, so results computed while the
 * relation had none (generation 0) become stale.
 */
static bool
slot_create(Oid relid)
{
	WatchSlot  *slot;
	bool		found;

	if (slot_find(MyDatabaseId, relid) != NULL)
		return true;
	LWLockAcquire(watch_shared->lock, LW_EXCLUSIVE);
	slot = slot_probe(MyDatabaseId, relid, &found);
	if (!found && slot != NULL && watch_shared->used < (uint32) cache_max_watched)
	{
		pg_atomic_write_u64(&slot->generation, 1);
		pg_write_barrier();
		pg_atomic_write_u64(&slot->key, slot_key(MyDatabaseId, relid));
		watch_shared->used++;
		found = true;
	}
	LWLockRelease(watch_shared->lock);
	return found;
}

/*
 * Give a watched relation a slot if there is room; false if not.  Without
 * one, a write to it moves the epoch, which every cached result records.
 */
bool
cache_gen_ensure(Oid relid)
{
	return watch_shared == NULL || slot_create(relid);
}

/*
 * A watched relation's definition changed (GRANT/REVOKE, ALTER POLICY,
 * ALTER TABLE, ...): results computed under the old rules go stale.  Every
 * backend that processes the invalidation bumps; a few extra bumps only
 * cost misses.  Whole-cache resets (relid 0) are not treated as changes.
 */
static void
watched_rel_changed(Datum arg, Oid relid)
{
	WatchSlot  *slot;

	if (watch_shared == NULL || !OidIsValid(relid) || !OidIsValid(MyDatabaseId))
		return;
	slot = slot_find(MyDatabaseId, relid);
	if (slot != NULL)
		pg_atomic_fetch_add_u64(&slot->generation, 1);
}

/*
 * Roles, memberships, schemas, functions or view definitions changed: a
 * result may rely on any of them (privileges, BYPASSRLS, a function or view
 * the query reads), so every cached query result goes stale.  Such changes
 * are rare.  A backend processes the invalidation before its next lookup,
 * so it never serves a result computed under the old rules after them.
 */
static void
rules_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	/*
	 * Hash value 0 is a whole-cache reset of a backend that fell behind:
	 * not a change (the backends that saw the change, its own among them,
	 * bump).  Were it one, every idle process's reset would empty the
	 * cache of query results.
	 */
	if (watch_shared != NULL && hashvalue != 0)
		pg_atomic_fetch_add_u64(&watch_shared->epoch, 1);
}

/* ---- bumping at commit ---- */

static void
bump_written(void)
{
	ListCell   *lc;

	foreach(lc, written)
	{
		WatchSlot  *slot = slot_find(MyDatabaseId, lfirst_oid(lc));

		if (slot != NULL)
			pg_atomic_fetch_add_u64(&slot->generation, 1);
		else
			pg_atomic_fetch_add_u64(&watch_shared->epoch, 1);
	}
}

static void
watch_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			/* COMMIT PREPARED runs elsewhere, where we cannot bump. */
			if (written != NIL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that wrote to a table watched by the pg_harden cache"),
						 errhint("Write watched tables outside of two-phase transactions, or remove the watch with harden.cache_unwatch().")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			/* After the commit is visible: a plain atomic add, which cannot fail. */
			if (written != NIL && watch_shared != NULL)
				bump_written();
			written = NIL;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			written = NIL;
			break;
		default:
			break;
	}
}

/*
 * Whether this transaction wrote a watched table: its own reads then differ
 * from what others see, so cache_query() neither reads nor publishes.
 */
bool
cache_watch_wrote_in_xact(void)
{
	return written != NIL;
}

/* Bump relid's generation when this transaction commits. */
static void
note_written(Oid relid)
{
	MemoryContext old;

	if (!callback_registered)
	{
		RegisterXactCallback(watch_xact_callback, NULL);
		callback_registered = true;
	}
	/* No slot and a full table: the epoch moves at commit instead. */
	(void) slot_create(relid);
	old = MemoryContextSwitchTo(TopTransactionContext);
	written = list_append_unique_oid(written, relid);
	MemoryContextSwitchTo(old);
}

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
	if (harden_shmem_ready)
		note_written(RelationGetRelid(trigdata->tg_relation));
	return PointerGetDatum(NULL);
}

/* ---- cache_watch / cache_unwatch ---- */

static bool has_watch_trigger(Oid relid, bool enabled_only);

/*
 * Whether writes to a relation move its generation: it has the watch
 * trigger, firing in ordinary sessions, and this is not a standby (replayed
 * WAL fires no triggers).
 */
bool
cache_rel_is_watched(Oid relid)
{
	return !RecoveryInProgress() && has_watch_trigger(relid, true);
}

/* The trigger cache_watch() installs: our function, statement level. */
static bool
is_watch_trigger(const Trigger *t)
{
	char	   *fn;
	bool		ours;

	if (strcmp(t->tgname, WATCH_TRIGGER_NAME) != 0 || TRIGGER_FOR_ROW(t->tgtype))
		return false;
	fn = get_func_name(t->tgfoid);
	ours = fn != NULL && strcmp(fn, "cache_watch_trigger") == 0 &&
		get_func_namespace(t->tgfoid) == get_namespace_oid("harden", true);
	return ours;
}

static bool
has_watch_trigger(Oid relid, bool enabled_only)
{
	Relation	rel = RelationIdGetRelation(relid);
	bool		watched = false;

	if (rel == NULL)
		return false;
	if (rel->trigdesc != NULL)
	{
		for (int i = 0; i < rel->trigdesc->numtriggers; i++)
		{
			Trigger    *t = &rel->trigdesc->triggers[i];

			/* 'O' and 'A' fire in ordinary sessions; 'R' and 'D' do not. */
			if (is_watch_trigger(t) &&
				(!enabled_only || t->tgenabled == TRIGGER_FIRES_ON_ORIGIN ||
				 t->tgenabled == TRIGGER_FIRES_ALWAYS))
			{
				watched = true;
				break;
			}
		}
	}
	RelationClose(rel);
	return watched;
}

/* The relation and, for a partitioned table, all its partitions. */
static List *
watch_targets(Oid relid, const char *fn)
{
	char		relkind = get_rel_relkind(relid);

	/* Results reading temporary tables are never cached. */
	if (get_rel_persistence(relid) == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s: \"%s\" is a temporary table", fn, get_rel_name(relid)),
				 errdetail("cache_query() never caches results that read temporary tables.")));
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
run_ddl(const char *fmt, Oid relid)
{
	char	   *name = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
												  get_rel_name(relid));
	char	   *sql = psprintf(fmt, name);

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

/*
 * Install (watch) or drop the watch trigger on a table and, for a
 * partitioned table, on every partition; true if anything changed.  Either
 * way the tables' results go stale at commit: those computed before a watch
 * recorded them as unwatched, those computed before an unwatch relied on
 * it (later ones are TTL-only).  The DDL runs as the caller, so CREATE /
 * DROP TRIGGER's privilege rules apply.
 */
static bool
set_watch(FunctionCallInfo fcinfo, bool watch)
{
	const char *fn = watch ? "harden.cache_watch()" : "harden.cache_unwatch()";
	List	   *targets = watch_targets(arg_relation(fcinfo, fn), fn);
	ListCell   *lc;
	bool		changed = false;

	foreach(lc, targets)
	{
		Oid			target = lfirst_oid(lc);

		if (has_watch_trigger(target, false) == watch)
			continue;
		if (watch)
		{
			run_ddl("CREATE TRIGGER " WATCH_TRIGGER_NAME
					" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s"
					" FOR EACH STATEMENT EXECUTE FUNCTION harden.cache_watch_trigger()", target);
			if (!cache_gen_ensure(target))
				ereport(NOTICE,
						(errmsg("harden.cache_max_watched (%d) is reached", cache_max_watched),
						 errdetail("Writes to \"%s\" will invalidate every cached query result, not only those that read it.",
								   get_rel_name(target)),
						 errhint("Raise harden.cache_max_watched and restart the server.")));
		}
		else
			run_ddl("DROP TRIGGER " WATCH_TRIGGER_NAME " ON %s", target);
		if (harden_shmem_ready)
			note_written(target);
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
