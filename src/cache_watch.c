/*
 * cache_watch.c
 *	  Write generations: the bottom layer of the cache.
 *
 * A cache_query() result depends on generations, each named by a 64-bit
 * key: one per relation it read (moved by every write to it seen after
 * commit, and by the relation's invalidations: GRANT, REVOKE, ALTER POLICY,
 * ALTER TABLE), one per (relation, column value) for relations watched by
 * a column, one per catalog object whose syscache invalidation may change
 * the result (its role and role memberships, the schemas and functions it
 * uses) and one per database.  A result records the generations it read
 * before its snapshot was taken; it is stale as soon as one of them moved.
 *
 * Generations live in a set-associative table in shared memory: a key can
 * only sit in one of the BUCKET_WAYS slots of its bucket, so a lookup reads
 * at most one bucket and never probes further.  Readers and writers do not
 * lock; only creating a slot does.  A result remembers the slot where it
 * read each generation, so checking it costs two atomic reads per
 * dependency.
 *
 * Every value a generation takes comes from one shared counter, so no
 * generation value ever repeats, in any slot.  That makes evicting a slot
 * safe without locking readers out: a result whose slot was taken over by
 * another key sees a foreign key (or a fresh generation) and is a miss.  A
 * full bucket evicts its least recently read slot; a database that holds
 * more than its fair share of the table (slots / databases using it) can
 * only evict its own, so one tenant cannot push out the others.
 * Collisions of two keys are harmless: they share a generation and each
 * invalidates the other's results, never fewer.
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/sinval.h"
#include "commands/dbcommands.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "pg_harden.h"
#include "cache.h"

#define BUCKET_WAYS		8
#define MAX_TENANTS		64		/* databases counted for fair shares */

typedef struct GenSlot
{
	pg_atomic_uint64 key;		/* 0: free */
	pg_atomic_uint64 generation;
	Oid			dboid;			/* owner, for fair shares; under the lock */
	uint32		usage;			/* set when read, cleared by eviction; racy */
	uint64		pad;
} GenSlot;

typedef struct GenTenant
{
	Oid			dboid;			/* InvalidOid: unused (harden_db_slot layout) */
	uint32		slots;			/* slots the database holds */
} GenTenant;

typedef struct WatchShared
{
	LWLock	   *lock;			/* serialises slot creation and eviction */
	uint32		nbuckets;		/* a power of two */
	pg_atomic_uint64 next_generation;
	pg_atomic_uint64 epoch;		/* moves on cluster-wide events only */
	GenTenant	tenants[MAX_TENANTS];
	GenSlot		slots[FLEXIBLE_ARRAY_MEMBER];
} WatchShared;

static int	cache_max_watched = 16384;
static WatchShared *watch_shared = NULL;

/*
 * Generations of the invalidations this transaction sends, moved again
 * after its commit (see remember_local()).  The array grows without
 * raising errors; should memory run out, the database's (or, for shared
 * catalogs, every) generation moves instead.
 */
static uint64 *local_keys = NULL;
static int	nlocal_keys = 0;
static int	maxlocal_keys = 0;
static bool local_overflow = false;
static bool local_overflow_shared = false;

/* cache_query() computations under way in this backend (they can nest). */
static int	computing = 0;

static void rel_changed(Datum arg, Oid relid);
static void gen_xact_callback(XactEvent event, void *arg);
static void db_catalog_changed(Datum arg, int cacheid, uint32 hashvalue);
static void shared_catalog_changed(Datum arg, int cacheid, uint32 hashvalue);
static void gen_write_metrics(MetricWriter *w);

void
cache_watch_define_gucs(bool preloading)
{
	if (!preloading)
		return;
	/* Registered in the postmaster, so every backend inherits them. */
	CacheRegisterRelcacheCallback(rel_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, db_catalog_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, db_catalog_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(TYPEOID, db_catalog_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, shared_catalog_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, shared_catalog_changed, (Datum) 0);
	RegisterXactCallback(gen_xact_callback, NULL);
	DefineCustomIntVariable("harden.cache_max_watched",
							"Number of write generations kept for cache_query() results (relations, column values, catalog objects).",
							"When the table is full, the least recently read generations are evicted; their results become misses.",
							&cache_max_watched,
							16384, 64, 1 << 24,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
	metrics_register_gauges(gen_write_metrics);
}

static uint32
bucket_count(void)
{
	uint32		n = 8;

	while (n * BUCKET_WAYS < (uint32) cache_max_watched)
		n <<= 1;
	return n;
}

Size
cache_watch_shmem_size(void)
{
	return add_size(offsetof(WatchShared, slots),
					mul_size(bucket_count() * BUCKET_WAYS, sizeof(GenSlot)));
}

void
cache_watch_shmem_startup(void)
{
	bool		found;
	uint32		nslots;

	watch_shared = ShmemInitStruct("pg_harden cache watch", cache_watch_shmem_size(), &found);
	if (found)
		return;
	watch_shared->lock = &(GetNamedLWLockTranche("pg_harden"))[2].lock;
	watch_shared->nbuckets = bucket_count();
	pg_atomic_init_u64(&watch_shared->next_generation, 1);
	pg_atomic_init_u64(&watch_shared->epoch, 1);
	memset(watch_shared->tenants, 0, sizeof(watch_shared->tenants));
	nslots = watch_shared->nbuckets * BUCKET_WAYS;
	for (uint32 i = 0; i < nslots; i++)
	{
		pg_atomic_init_u64(&watch_shared->slots[i].key, 0);
		pg_atomic_init_u64(&watch_shared->slots[i].generation, 0);
		watch_shared->slots[i].dboid = InvalidOid;
		watch_shared->slots[i].usage = 0;
	}
}

/* ---- keys and lookups ---- */

/*
 * The key of a generation: what it is of (kind), in which database (0 for
 * shared catalogs), of which object (a), and which value (b).  Never 0.
 */
uint64
cache_gen_key(Oid dboid, CacheDepKind kind, uint32 a, uint64 b)
{
	uint64		h;

	h = hash_combine64(murmurhash32(dboid), murmurhash32((uint32) kind));
	h = hash_combine64(h, murmurhash32(a));
	h = hash_combine64(h, hash_bytes_uint32_extended((uint32) b, b >> 32));
	return h == 0 ? 1 : h;
}

static inline GenSlot *
bucket_of(uint64 key)
{
	/* The low bits pick the bucket; hash_combine64 mixes them well. */
	return &watch_shared->slots[(uint32) (key & (watch_shared->nbuckets - 1)) * BUCKET_WAYS];
}

/* The slot holding key, or NULL.  Lock-free. */
static GenSlot *
slot_find(uint64 key)
{
	GenSlot    *b = bucket_of(key);

	for (int i = 0; i < BUCKET_WAYS; i++)
		if (pg_atomic_read_u64(&b[i].key) == key)
			return &b[i];
	return NULL;
}

/*
 * A generation value never used before.  Each backend takes a block of
 * values from the shared counter at a time, so concurrent commits do not
 * all hit one cache line.
 */
#define GENERATION_BLOCK	UINT64CONST(65536)
static uint64 next_local_generation = 0;
static uint64 end_local_generation = 0;

static inline uint64
fresh_generation(void)
{
	if (next_local_generation == end_local_generation)
	{
		next_local_generation = pg_atomic_fetch_add_u64(&watch_shared->next_generation,
														 GENERATION_BLOCK) + 1;
		end_local_generation = next_local_generation + GENERATION_BLOCK;
	}
	return next_local_generation++;
}

/*
 * Move a generation, if it has a slot: without one, no cached result
 * depends on it.  A plain store of a value never used before, which
 * cannot fail (it runs in commit callbacks).
 */
void
cache_gen_bump(uint64 key)
{
	GenSlot    *slot;

	if (watch_shared == NULL)
		return;
	slot = slot_find(key);
	if (slot != NULL)
		pg_atomic_write_u64(&slot->generation, fresh_generation());
}

/* The keys a write to a relation moves (at most two). */
int
cache_gen_rel_keys(Oid dboid, Oid relid, bool values_known, uint64 *keys)
{
	keys[0] = cache_gen_key(dboid, CACHE_DEP_REL, relid, 0);
	if (values_known)
		return 1;
	keys[1] = cache_gen_key(dboid, CACHE_DEP_REL_UNKNOWN, relid, 0);
	return 2;
}

/* A write to a relation committed: move what results reading it rely on. */
void
cache_gen_bump_rel(Oid dboid, Oid relid, bool values_known)
{
	uint64		keys[2];
	int			n = cache_gen_rel_keys(dboid, relid, values_known, keys);

	for (int i = 0; i < n; i++)
		cache_gen_bump(keys[i]);
}

/* A committed write changed rows whose column had this value (hash). */
void
cache_gen_bump_value(Oid dboid, Oid relid, uint64 valuehash)
{
	cache_gen_bump(cache_gen_key(dboid, CACHE_DEP_VALUE, relid, valuehash));
}

/* Every result of a database goes stale (COMMIT PREPARED, say). */
void
cache_gen_bump_database(Oid dboid)
{
	cache_gen_bump(cache_gen_key(dboid, CACHE_DEP_DATABASE, dboid, 0));
}

/*
 * Results computed on a standby saw no write move a generation (replayed
 * writes run no hooks): they carry this bit, which the epoch loses when
 * recovery ends, so a promoted server never serves them.
 */
#define EPOCH_IN_RECOVERY (UINT64CONST(1) << 63)

/* Every cached query result goes stale (replay of a reset record). */
void
cache_gen_bump_epoch(void)
{
	if (watch_shared != NULL)
		pg_atomic_fetch_add_u64(&watch_shared->epoch, 1);
}

uint64
cache_gen_epoch(void)
{
	if (watch_shared == NULL)
		return 0;
	return pg_atomic_read_u64(&watch_shared->epoch) |
		(RecoveryInProgress() ? EPOCH_IN_RECOVERY : 0);
}

/*
 * Whether a result computed with these generations is still current: each
 * dependency's slot still holds its key and the generation it read.  The
 * key is read before the generation; a slot taken over meanwhile got a
 * fresh generation first, so the pair never matches a foreign slot.
 */
bool
cache_deps_current(Oid dboid, const CacheQueryMeta *meta)
{
	uint32		nslots;

	if (watch_shared == NULL)
		return meta->ndeps == 0;
	if (meta->epoch != cache_gen_epoch())
		return false;
	nslots = watch_shared->nbuckets * BUCKET_WAYS;
	for (int i = 0; i < meta->ndeps; i++)
	{
		const CacheDep *d = &meta->deps[i];
		GenSlot    *s;

		if (d->slot >= nslots)
			return false;
		s = &watch_shared->slots[d->slot];
		if (pg_atomic_read_u64(&s->key) != d->key)
			return false;
		pg_read_barrier();
		if (pg_atomic_read_u64(&s->generation) != d->generation)
			return false;
	}
	return true;
}

/* ---- creating slots ---- */

/* A database's tenant entry, without claiming one; NULL if it has none. */
static GenTenant *
tenant_find(Oid dboid)
{
	for (int i = 0; i < MAX_TENANTS; i++)
		if (watch_shared->tenants[i].dboid == dboid && OidIsValid(dboid))
			return &watch_shared->tenants[i];
	return NULL;
}

static bool
tenant_free(void)
{
	for (int i = 0; i < MAX_TENANTS; i++)
		if (!OidIsValid(watch_shared->tenants[i].dboid))
			return true;
	return false;
}

/* The same, claiming a free entry; NULL when all are taken. */
static GenTenant *
tenant_of(Oid dboid)
{
	return (GenTenant *) harden_db_slot(watch_shared->tenants, MAX_TENANTS,
										sizeof(GenTenant), dboid);
}

static void
tenant_adjust(Oid dboid, int delta)
{
	GenTenant  *t = delta > 0 ? tenant_of(dboid) : tenant_find(dboid);

	if (t == NULL)
		return;
	t->slots += delta;
	if (t->slots == 0)
		t->dboid = InvalidOid;
}

/*
 * A database's fair share of the table: the slots over the databases
 * using it, the one asking included.
 */
static uint32
fair_share(Oid dboid)
{
	uint32		tenants = tenant_find(dboid) == NULL ? 1 : 0;

	for (int i = 0; i < MAX_TENANTS; i++)
		if (OidIsValid(watch_shared->tenants[i].dboid))
			tenants++;
	return (watch_shared->nbuckets * BUCKET_WAYS) / Max(tenants, 1);
}

/*
 * The slot of a full bucket that dboid may take over, or NULL.  Within its
 * fair share a database may evict itself, any database above its share,
 * or any holding more slots than it does; above it, only itself.  Second chance: a slot read since the last pass
 * is spared once.
 */
static bool
in_use_by(const GenSlot *s, const CacheDep *deps, int n)
{
	uint32		idx = (uint32) (s - watch_shared->slots);

	for (int i = 0; i < n; i++)
		if (deps[i].slot == idx)
			return true;
	return false;
}

static GenSlot *
victim(GenSlot *b, Oid dboid, const CacheDep *mine_deps, int nmine)
{
	uint32		share = fair_share(dboid);
	GenTenant  *mine = tenant_find(dboid);
	/* A database without an entry (too many tenants) counts as over. */
	bool		over = mine != NULL ? mine->slots >= share : !tenant_free();
	uint32		mine_slots = mine != NULL ? mine->slots : 0;
	int			candidates[BUCKET_WAYS];
	int			n = 0;

	for (int i = 0; i < BUCKET_WAYS; i++)
	{
		GenTenant  *t;

		/* Never a generation the same result has just read. */
		if (in_use_by(&b[i], mine_deps, nmine))
			continue;
		if (b[i].dboid == dboid)
			candidates[n++] = i;
		else if (!over && (t = tenant_find(b[i].dboid)) != NULL &&
				 (t->slots > share || t->slots > mine_slots + 1))
			candidates[n++] = i;
	}
	for (int pass = 0; pass < 2; pass++)
		for (int j = 0; j < n; j++)
		{
			GenSlot    *s = &b[candidates[j]];

			if (s->usage == 0)
				return s;
			s->usage = 0;
		}
	return n > 0 ? &b[candidates[0]] : NULL;
}

/*
 * Create key's slot in its bucket (evicting if full, but none of the slots
 * of deps[0..n-1]); NULL if refused.
 */
static GenSlot *
slot_create(uint64 key, const CacheDep *deps, int n)
{
	GenSlot    *b = bucket_of(key);
	GenSlot    *slot = NULL;

	LWLockAcquire(watch_shared->lock, LW_EXCLUSIVE);
	slot = slot_find(key);
	if (slot == NULL)
	{
		for (int i = 0; i < BUCKET_WAYS && slot == NULL; i++)
			if (pg_atomic_read_u64(&b[i].key) == 0)
				slot = &b[i];
		if (slot == NULL && (slot = victim(b, MyDatabaseId, deps, n)) != NULL)
		{
			tenant_adjust(slot->dboid, -1);
			harden_count_db(slot->dboid, HC_CACHE_GEN_EVICTIONS, 1);
		}
		if (slot != NULL)
		{
			/* A fresh generation before the key: see cache_deps_current(). */
			pg_atomic_write_u64(&slot->generation, fresh_generation());
			pg_write_barrier();
			pg_atomic_write_u64(&slot->key, key);
			slot->dboid = MyDatabaseId;
			slot->usage = 1;
			tenant_adjust(MyDatabaseId, 1);
		}
	}
	LWLockRelease(watch_shared->lock);
	return slot;
}

/*
 * Read the generations of a result's dependencies (their keys set),
 * creating slots where there are none, and remember the slots.  False when
 * one could not be had (its bucket is full of generations this database
 * may not evict): the result cannot be cached.  The caller takes its
 * snapshot after this.
 */
bool
cache_gen_read(CacheDep *deps, int n)
{
	if (watch_shared == NULL)
		return false;
	for (int i = 0; i < n; i++)
	{
		CacheDep   *dep = &deps[i];
		GenSlot    *slot = slot_find(dep->key);

		if (slot == NULL)
			slot = slot_create(dep->key, deps, i);
		if (slot == NULL)
		{
			harden_count(HC_CACHE_GEN_EXHAUSTED, 1);
			return false;
		}
		pg_read_barrier();
		dep->generation = pg_atomic_read_u64(&slot->generation);
		dep->slot = (uint32) (slot - watch_shared->slots);
		if (slot->usage == 0)
			slot->usage = 1;
	}
	return true;
}

/* ---- invalidations ---- */

/*
 * A backend computing a result moves the generations of the invalidations
 * it processes meanwhile (and when it checks before storing): its plan may
 * have been made from catalog rows they replace.  Other backends need not:
 * the committing transaction itself moves them once its commit is visible
 * (remember_invalidations()), so a backend catching up late does not
 * invalidate results computed since.  On a standby no committer runs here,
 * so every backend moves them.
 */
void
cache_gen_computing(bool on)
{
	computing += on ? 1 : (computing > 0 ? -1 : 0);
}

static inline bool
moves_on_invalidation(void)
{
	return computing > 0 || RecoveryInProgress();
}

/*
 * Other backends process a committed transaction's invalidations only
 * when they next look (a backend started later never does), and the
 * committing backend processes its own before the commit: a session
 * computing a result meanwhile, from the old catalog rows, could read the
 * moved generation and store a result that outlives the commit.  So a
 * transaction that has written moves, once its commit is visible, the
 * generations of every invalidation it sends, and before COMMIT returns.
 */
static void
remember_local(uint64 key, bool shared)
{
	if (nlocal_keys > 0 && local_keys[nlocal_keys - 1] == key)
		return;
	if (nlocal_keys == maxlocal_keys)
	{
		int			n = Max(64, maxlocal_keys * 2);
		uint64	   *grown = MemoryContextAllocExtended(TopMemoryContext, sizeof(uint64) * n,
													   MCXT_ALLOC_NO_OOM);

		if (grown == NULL)
		{
			if (shared)
				local_overflow_shared = true;
			else
				local_overflow = true;
			return;
		}
		if (local_keys != NULL)
		{
			memcpy(grown, local_keys, sizeof(uint64) * nlocal_keys);
			pfree(local_keys);
		}
		local_keys = grown;
		maxlocal_keys = n;
	}
	local_keys[nlocal_keys++] = key;
}

/* The generations the invalidations this transaction will send move. */
static void
remember_invalidations(void)
{
	SharedInvalidationMessage *msgs;
	bool		relcache_init;
	int			n;

	if (!TransactionIdIsValid(GetTopTransactionIdIfAny()))
		return;
	n = xactGetCommittedInvalidationMessages(&msgs, &relcache_init);
	for (int i = 0; i < n; i++)
	{
		SharedInvalidationMessage *m = &msgs[i];

		if (m->id == SHAREDINVALRELCACHE_ID && OidIsValid(m->rc.relId) &&
			OidIsValid(m->rc.dbId))
		{
			remember_local(cache_gen_key(m->rc.dbId, CACHE_DEP_REL, m->rc.relId, 0), false);
			remember_local(cache_gen_key(m->rc.dbId, CACHE_DEP_REL_UNKNOWN, m->rc.relId, 0), false);
		}
		else if (m->id >= 0 && m->cc.hashValue != 0 &&
				 (m->id == PROCOID || m->id == NAMESPACEOID || m->id == TYPEOID ||
				  m->id == AUTHOID || m->id == AUTHMEMROLEMEM))
			remember_local(cache_gen_key(m->cc.dbId, CACHE_DEP_CATALOG, m->id, m->cc.hashValue),
						   !OidIsValid(m->cc.dbId));
	}
}

/*
 * Whether this transaction changes roles or role memberships: COMMIT
 * PREPARED publishes such changes from another backend, which could only
 * move every generation of the cluster.
 */
static bool
changes_roles(void)
{
	SharedInvalidationMessage *msgs;
	bool		relcache_init;
	int			n;

	if (!TransactionIdIsValid(GetTopTransactionIdIfAny()))
		return false;
	n = xactGetCommittedInvalidationMessages(&msgs, &relcache_init);
	for (int i = 0; i < n; i++)
		if (msgs[i].id == AUTHOID || msgs[i].id == AUTHMEMROLEMEM)
			return true;
	return false;
}

static void
gen_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_PRE_PREPARE && watch_shared != NULL && changes_roles())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot PREPARE a transaction that changes roles or role memberships"),
				 errdetail("pg_harden could not invalidate the cached query results that depend on them when it commits."),
				 errhint("Change roles outside of two-phase transactions.")));
	/* After deferred triggers and portals: the messages are final. */
	if (event == XACT_EVENT_PRE_COMMIT && watch_shared != NULL)
		remember_invalidations();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		for (int i = 0; i < nlocal_keys; i++)
			cache_gen_bump(local_keys[i]);
		if (local_overflow && OidIsValid(MyDatabaseId))
			cache_gen_bump_database(MyDatabaseId);
		if (local_overflow_shared && watch_shared != NULL)
			pg_atomic_fetch_add_u64(&watch_shared->epoch, 1);
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		nlocal_keys = 0;
		local_overflow = local_overflow_shared = false;
		computing = 0;
		/* A large transaction's array is not kept for the next one. */
		if (maxlocal_keys > 1024)
		{
			pfree(local_keys);
			local_keys = NULL;
			maxlocal_keys = 0;
		}
	}
}

/*
 * A relation's definition changed (GRANT/REVOKE on it or its columns,
 * ALTER POLICY, ALTER TABLE, CREATE OR REPLACE VIEW, TRUNCATE, ...):
 * results computed under the old rules go stale.  Relcache invalidations
 * reach only the backends of the relation's database.  Whole-cache resets
 * (relid 0) are not changes.
 */
static void
rel_changed(Datum arg, Oid relid)
{
	if (watch_shared == NULL || !OidIsValid(relid) || !OidIsValid(MyDatabaseId) ||
		!moves_on_invalidation())
		return;
	cache_gen_bump_rel(MyDatabaseId, relid, false);
}

/*
 * A function, type or schema of this database changed (GRANT/REVOKE,
 * CREATE OR REPLACE, ALTER): only results that use that very object (by
 * its syscache hash value) go stale.  Hash value 0 is a whole-cache reset
 * of a backend that fell behind, not a change: the backends that saw the
 * change, its own among them, move the generation.
 */
static void
db_catalog_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	if (watch_shared == NULL || hashvalue == 0 || !OidIsValid(MyDatabaseId) ||
		!moves_on_invalidation())
		return;
	cache_gen_bump(cache_gen_key(MyDatabaseId, CACHE_DEP_CATALOG, cacheid, hashvalue));
}

/*
 * The same for roles and role memberships, which all databases share.
 * Processes without a database (launchers) take no part: they never read
 * results, and they process invalidations late, when they wake up.
 */
static void
shared_catalog_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	if (watch_shared == NULL || hashvalue == 0 || !OidIsValid(MyDatabaseId) ||
		!moves_on_invalidation())
		return;
	cache_gen_bump(cache_gen_key(InvalidOid, CACHE_DEP_CATALOG, cacheid, hashvalue));
}

/* ---- metrics ---- */

static void
gen_write_metrics(MetricWriter *w)
{
	GenTenant	tenants[MAX_TENANTS];
	uint64		dropped = 0;

	if (!harden_shmem_ready || watch_shared == NULL)
		return;
	LWLockAcquire(watch_shared->lock, LW_SHARED);
	memcpy(tenants, watch_shared->tenants, sizeof(tenants));
	LWLockRelease(watch_shared->lock);

	metric_family(w, "cache_generation_slots", "gauge",
				  "Slots of the table of write generations (harden.cache_max_watched, rounded up).");
	metric_sample(w, (double) watch_shared->nbuckets * BUCKET_WAYS, 0);
	metric_family(w, "cache_generation_slots_used", "gauge",
				  "Slots of the table of write generations in use, per database.");
	for (int i = 0; i < MAX_TENANTS; i++)
		if (OidIsValid(tenants[i].dboid))
		{
			char	   *name = get_database_name(tenants[i].dboid);

			if (name != NULL)
				metric_sample(w, (double) tenants[i].slots, 1, "database", name);
			else
				dropped += tenants[i].slots;
		}
	/* Slots of dropped databases, until they are evicted. */
	if (dropped > 0)
		metric_sample(w, (double) dropped, 1, "database", "_dropped");
}
