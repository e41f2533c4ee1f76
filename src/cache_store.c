/*
 * cache_store.c
 *	  The cache's shared-memory store: one DSA area of harden.cache_memory
 *	  bytes, placed in the main shared memory segment at server start, with a
 *	  dshash table keyed by (database oid, key).
 *
 * Each dshash entry is fixed-size metadata; the key, the tags and the value
 * live together in one separately allocated "blob", so short keys cost no
 * padding.  A dshash key therefore refers to its bytes indirectly: a lookup
 * key points at backend memory, a stored key at the blob.
 *
 * Reads take only the shared lock of one of dshash's partitions.  When the
 * area fills up, a set evicts (CLOCK: a hit raises an entry's usage count, an
 * eviction pass lowers it and removes entries that reached zero), so a set
 * never fails because the cache is full.
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "lib/dshash.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/dsa.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "pg_harden.h"
#include "cache.h"

/* Lookup keys point at backend memory; stored keys at their blob. */
typedef struct CacheKey
{
	Oid			dboid;
	uint16		keylen;
	bool		local;
	union
	{
		const char *local;
		dsa_pointer blob;
	}			ptr;
} CacheKey;

typedef struct CacheEntry
{
	CacheKey	key;			/* dshash key: must be first */
	TimestampTz expires_at;		/* 0: never */
	Oid			owner;
	uint32		valuelen;
	uint32		value_off;		/* value's offset in the blob */
	pg_atomic_uint32 hits;
	uint32		hash;
	uint8		type;
	uint8		flags;
	uint8		usage;			/* CLOCK usage count */
	uint8		ntags;
	uint16		ndeps;			/* CACHE_FLAG_QUERY: dependencies in the blob */
} CacheEntry;

/*
 * Tags follow the key in the blob.  A cache_query() result then has, at the
 * next MAXALIGNed offset, a BlobQueryHead and its dependencies.  The value
 * starts MAXALIGNed after all that.
 */
typedef struct BlobQueryHead
{
	uint64		fingerprint;
	uint64		epoch;
} BlobQueryHead;

#define BLOB_TAGS_OFF(keylen)	(keylen)
#define BLOB_META_OFF(keylen, tagslen)	MAXALIGN((keylen) + (tagslen))
#define BLOB_META_SIZE(ndeps)	(sizeof(BlobQueryHead) + (ndeps) * sizeof(CacheDep))

#define USAGE_MAX		5
#define USAGE_INITIAL	1

/*
 * Memory an entry costs besides its blob: dshash's item (the entry plus a
 * next pointer and hash, MAXALIGNed) and, on average, two bucket slots.
 */
#define ENTRY_ALLOC_SIZE	(MAXALIGN(sizeof(CacheEntry)) + MAXALIGN(sizeof(dsa_pointer) + sizeof(uint32)) \
							 + 2 * sizeof(dsa_pointer))

typedef struct CacheShared
{
	int			tranche_id;
	dshash_table_handle hash_handle;
	LWLock	   *evict_lock;		/* one evictor at a time; never on reads */
	Size		area_size;
	uint64		max_entries;	/* the table is presized for this many */
	pg_atomic_uint64 entries;
	pg_atomic_uint64 bytes_used;	/* entries + blobs, as requested */
	pg_atomic_uint32 hand;		/* CLOCK hand: first partition of a pass */
	pg_atomic_uint64 last_sweep;	/* TimestampTz of the last expiry sweep */
	/* the DSA area follows, MAXALIGNed */
} CacheShared;

int			harden_cache_memory_kb = 64 * 1024;
static int	cache_max_entries = 0;
static int	cache_sweep_interval_s = 60;

static CacheShared *cache_shared = NULL;
static dsa_area *cache_area = NULL;
static dshash_table *cache_hash = NULL;

static int	cache_key_compare(const void *a, const void *b, size_t size, void *arg);
static dshash_hash cache_key_hash(const void *key, size_t size, void *arg);
static void cache_evict(Size need);

static dshash_parameters cache_hash_params = {
	sizeof(CacheKey),
	sizeof(CacheEntry),
	cache_key_compare,
	cache_key_hash,
	0							/* tranche, set at start-up */
};

#define CACHE_AREA(shared) ((char *) (shared) + MAXALIGN(sizeof(CacheShared)))

void
cache_define_gucs(bool preloading)
{
	DefineCustomIntVariable("harden.cache_sweep_interval",
							"Seconds between sweeps that free expired cache entries.",
							"Entries are also expired lazily when read.",
							&cache_sweep_interval_s,
							60, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	if (!preloading)
		return;
	DefineCustomIntVariable("harden.cache_memory",
							"Shared memory for the pg_harden cache.",
							"Set at server start; a full cache evicts.",
							&harden_cache_memory_kb,
							64 * 1024, 1024, INT_MAX / 2,
							PGC_POSTMASTER, GUC_UNIT_KB,
							NULL, NULL, NULL);
	DefineCustomIntVariable("harden.cache_max_entries",
							"Most entries the pg_harden cache holds (0: one per 256 bytes of harden.cache_memory).",
							"The hash table is sized for this many at server start, so it never has to grow in a full cache.",
							&cache_max_entries,
							0, 0, INT_MAX,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
}

static uint64
max_entries_setting(void)
{
	if (cache_max_entries > 0)
		return (uint64) cache_max_entries;
	return Max(cache_memory_limit() / 256, 1024);
}

Size
cache_memory_limit(void)
{
	return (Size) harden_cache_memory_kb * 1024;
}

Size
cache_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(CacheShared)), cache_memory_limit());
}

/*
 * Grow the new, empty table to its final size.  dshash doubles its buckets
 * when one partition passes 3/4 of its share, and never shrinks; growing it
 * later means allocating one large bucket array, which a full, fragmented
 * area may not have.  So we make it grow now: dummy keys whose hashes all
 * fall in partition 0 (spread over its buckets) push that partition past the
 * threshold of every size up to the one max_entries needs; then they are
 * deleted.  Dummy keys have keylen 0, which real keys never have.
 */
static void
presize_table(dshash_table *hash, uint64 max_entries)
{
	int			log2 = 7;		/* dshash starts with one bucket per partition */
	uint32		n;
	uint32	   *hashes;
	CacheKey	k = {0};
	bool		found;

	while (log2 < 30 && ((uint64) 1 << log2) * 3 / 4 < max_entries)
		log2++;
	/* One more than the threshold of the size below the target. */
	n = (uint32) ((((uint64) 1 << (log2 - 8)) * 3) / 4) + 2;
	hashes = palloc(sizeof(uint32) * n);
	k.local = true;
	for (uint32 i = 0; i < n; i++)
	{
		void	   *e;

		hashes[i] = i << (32 - log2);
		k.ptr.local = (const char *) &hashes[i];
		e = dshash_find_or_insert(hash, &k, &found);
		dshash_release_lock(hash, e);
	}
	for (uint32 i = 0; i < n; i++)
	{
		k.ptr.local = (const char *) &hashes[i];
		dshash_delete_key(hash, &k);
	}
	pfree(hashes);
}

/*
 * Create the area and the hash table in the postmaster.  The area is pinned
 * and limited to its initial size, so it never creates DSM segments: memory
 * use is fixed at harden.cache_memory.
 */
void
cache_shmem_startup(void)
{
	bool		found;
	dsa_area   *area;
	dshash_table *hash;

	cache_shared = ShmemInitStruct("pg_harden cache", cache_shmem_size(), &found);
	if (found)
		return;

	cache_shared->tranche_id = LWLockNewTrancheId();
	cache_shared->evict_lock = &(GetNamedLWLockTranche("pg_harden"))[1].lock;
	cache_shared->area_size = cache_memory_limit();
	cache_shared->max_entries = max_entries_setting();
	pg_atomic_init_u64(&cache_shared->entries, 0);
	pg_atomic_init_u64(&cache_shared->bytes_used, 0);
	pg_atomic_init_u32(&cache_shared->hand, 0);
	pg_atomic_init_u64(&cache_shared->last_sweep, 0);

	area = dsa_create_in_place(CACHE_AREA(cache_shared), cache_shared->area_size,
							   cache_shared->tranche_id, NULL);
	dsa_pin(area);
	dsa_set_size_limit(area, cache_shared->area_size);
	cache_hash_params.tranche_id = cache_shared->tranche_id;
	hash = dshash_create(area, &cache_hash_params, area);
	cache_shared->hash_handle = dshash_get_hash_table_handle(hash);
	presize_table(hash, cache_shared->max_entries);

	/* The postmaster never touches the cache again. */
	dshash_detach(hash);
	dsa_detach(area);
}

/* Attach this backend to the area and the table, once. */
static void
cache_attach(void)
{
	MemoryContext old;

	if (cache_hash != NULL)
		return;
	harden_require_shmem("the pg_harden cache");

	LWLockRegisterTranche(cache_shared->tranche_id, "pg_harden_cache");
	old = MemoryContextSwitchTo(TopMemoryContext);
	cache_area = dsa_attach_in_place(CACHE_AREA(cache_shared), NULL);
	dsa_pin_mapping(cache_area);
	on_shmem_exit(dsa_on_shmem_exit_release_in_place,
				  PointerGetDatum(CACHE_AREA(cache_shared)));
	cache_hash_params.tranche_id = cache_shared->tranche_id;
	cache_hash = dshash_attach(cache_area, &cache_hash_params,
							   cache_shared->hash_handle, cache_area);
	MemoryContextSwitchTo(old);
}

/* ---- keys ---- */

static inline const char *
key_bytes(const CacheKey *k, dsa_area *area)
{
	return k->local ? k->ptr.local : (const char *) dsa_get_address(area, k->ptr.blob);
}

static int
cache_key_compare(const void *a, const void *b, size_t size, void *arg)
{
	const CacheKey *ka = a;
	const CacheKey *kb = b;

	if (ka->dboid != kb->dboid || ka->keylen != kb->keylen)
		return 1;
	if (ka->keylen == 0)		/* presize_table's dummies: compare hashes */
		return memcmp(ka->ptr.local, kb->ptr.local, sizeof(uint32));
	return memcmp(key_bytes(ka, arg), key_bytes(kb, arg), ka->keylen);
}

static inline uint32
key_hash(Oid dboid, const char *key, int keylen)
{
	return hash_combine(murmurhash32(dboid),
						hash_bytes((const unsigned char *) key, keylen));
}

/* dshash hashes only lookup keys, which are always local. */
static dshash_hash
cache_key_hash(const void *key, size_t size, void *arg)
{
	const CacheKey *k = key;
	uint32		h;

	if (k->keylen == 0)			/* presize_table's dummies carry their hash */
	{
		memcpy(&h, k->ptr.local, sizeof(uint32));
		return h;
	}
	return key_hash(k->dboid, key_bytes(k, arg), k->keylen);
}

static inline CacheKey
lookup_key(const char *key, int keylen)
{
	CacheKey	k;

	k.dboid = MyDatabaseId;
	k.keylen = (uint16) keylen;
	k.local = true;
	k.ptr.local = key;
	return k;
}

/* ---- entries ---- */

static inline char *
entry_blob(CacheEntry *e)
{
	return dsa_get_address(cache_area, e->key.ptr.blob);
}

static inline Size
entry_blob_size(CacheEntry *e)
{
	return e->value_off + e->valuelen;
}

static inline bool
entry_expired(CacheEntry *e, TimestampTz now)
{
	return e->expires_at != 0 && e->expires_at <= now;
}

/* A cache_query() result's fingerprint, epoch and dependencies. */
static inline CacheQueryMeta
entry_query_meta(CacheEntry *e)
{
	CacheQueryMeta m = {0};
	char	   *p;

	if (!(e->flags & CACHE_FLAG_QUERY))
		return m;
	/* It sits just before the value. */
	p = entry_blob(e) + e->value_off - MAXALIGN(BLOB_META_SIZE(e->ndeps));
	m.fingerprint = ((BlobQueryHead *) p)->fingerprint;
	m.epoch = ((BlobQueryHead *) p)->epoch;
	m.ndeps = e->ndeps;
	m.deps = (const CacheDep *) (p + sizeof(BlobQueryHead));
	return m;
}

/*
 * Whether an entry is stale: computed before a committed write to one of
 * the relations it depends on.  Lock-free reads of the generations.
 */
static inline bool
entry_stale(CacheEntry *e)
{
	CacheQueryMeta m;

	if (!(e->flags & CACHE_FLAG_QUERY))
		return false;
	m = entry_query_meta(e);
	return !cache_deps_current(e->key.dboid, &m);
}

/* Free an entry's blob and account for it; the caller removes the entry. */
static void
entry_release(CacheEntry *e, CacheRemoval why)
{
	Size		size = ENTRY_ALLOC_SIZE + entry_blob_size(e);

	switch (why)
	{
		case CACHE_REMOVED_EXPIRE:
			harden_count_db(e->key.dboid, HC_CACHE_EXPIRATIONS, 1);
			break;
		case CACHE_REMOVED_EVICT:
			harden_count_db(e->key.dboid, HC_CACHE_EVICTIONS, 1);
			break;
		case CACHE_REMOVED_INVALIDATE:
			harden_count_db(e->key.dboid, HC_CACHE_INVALIDATIONS, 1);
			break;
		case CACHE_REMOVED_DELETE:
			break;
	}
	dsa_free(cache_area, e->key.ptr.blob);
	pg_atomic_sub_fetch_u64(&cache_shared->bytes_used, size);
	pg_atomic_sub_fetch_u64(&cache_shared->entries, 1);
}

static void
entry_info(CacheEntry *e, CacheEntryInfo *info)
{
	char	   *blob = entry_blob(e);

	info->dboid = e->key.dboid;
	info->key = (char *) cache_user_key(blob, e->key.keylen, &info->keylen);
	info->stored_key = blob;
	info->stored_keylen = e->key.keylen;
	info->type = (CacheValueType) e->type;
	info->bytes = e->value_off + e->valuelen;
	info->expires_at = e->expires_at;
	info->hits = pg_atomic_read_u32(&e->hits);
	info->tags = blob + BLOB_TAGS_OFF(e->key.keylen);
	info->ntags = e->ntags;
	info->owner = e->owner;
	info->flags = e->flags;
	info->ndeps = 0;
	info->deps = NULL;
	if (e->flags & CACHE_FLAG_QUERY)
	{
		CacheQueryMeta m = entry_query_meta(e);

		info->ndeps = m.ndeps;
		info->deps = m.deps;
	}
}

/*
 * Remove an expired or stale entry found under a shared lock: retake the
 * partition lock exclusively and delete it if it still is.
 */
static void
remove_lazily(CacheKey *k, TimestampTz now)
{
	CacheEntry *e = dshash_find(cache_hash, k, true);

	if (e == NULL)
		return;
	if (entry_expired(e, now))
	{
		entry_release(e, CACHE_REMOVED_EXPIRE);
		dshash_delete_entry(cache_hash, e);
	}
	else if (entry_stale(e))
	{
		entry_release(e, CACHE_REMOVED_INVALIDATE);
		dshash_delete_entry(cache_hash, e);
	}
	else
		dshash_release_lock(cache_hash, e);
}

typedef enum LookupWant
{
	WANT_META,
	WANT_TAGS,
	WANT_VALUE					/* also counts a hit */
} LookupWant;

/*
 * Look up a live entry of the current database and copy what is wanted; a
 * value read counts a hit, which raises the entry's usage count.  An expired
 * entry is removed.
 */
static bool
store_lookup(const char *key, int keylen, CacheHit *hit, LookupWant want)
{
	CacheKey	k = lookup_key(key, keylen);
	CacheEntry *e;
	TimestampTz now = 0;

	cache_attach();
	e = dshash_find(cache_hash, &k, false);
	if (e == NULL)
		return false;

	if ((e->expires_at != 0 && e->expires_at <= (now = GetCurrentTimestamp())) ||
		entry_stale(e))
	{
		dshash_release_lock(cache_hash, e);
		remove_lazily(&k, now ? now : GetCurrentTimestamp());
		return false;
	}

	hit->type = (CacheValueType) e->type;
	hit->valuelen = e->valuelen;
	hit->owner = e->owner;
	hit->flags = e->flags;
	hit->expires_at = e->expires_at;
	hit->value = NULL;
	hit->tags = NULL;
	hit->ntags = e->ntags;
	hit->fingerprint = 0;
	hit->ndeps = 0;
	hit->deps = NULL;
	if (want == WANT_TAGS && e->ntags > 0)
	{
		const char *tags = entry_blob(e) + BLOB_TAGS_OFF(e->key.keylen);
		Size		len = e->value_off - BLOB_TAGS_OFF(e->key.keylen);

		hit->tags = palloc(len);
		memcpy(hit->tags, tags, len);
	}
	if (want == WANT_VALUE)
	{
		hit->value = palloc(e->valuelen + VARHDRSZ);
		memcpy(hit->value + VARHDRSZ, entry_blob(e) + e->value_off, e->valuelen);
		if (e->flags & CACHE_FLAG_QUERY)
		{
			CacheQueryMeta m = entry_query_meta(e);

			hit->fingerprint = m.fingerprint;
			hit->ndeps = m.ndeps;
			hit->deps = palloc(sizeof(CacheDep) * Max(m.ndeps, 1));
			memcpy(hit->deps, m.deps, sizeof(CacheDep) * m.ndeps);
		}
		/* Benign race: concurrent readers may lose an increment of usage. */
		if (e->usage < USAGE_MAX)
			e->usage++;
		pg_atomic_fetch_add_u32(&e->hits, 1);
	}
	dshash_release_lock(cache_hash, e);
	return true;
}

/* A live entry's value (palloc'd, VARHDRSZ bytes reserved in front). */
bool
cache_store_get(const char *key, int keylen, CacheHit *hit)
{
	return store_lookup(key, keylen, hit, WANT_VALUE);
}

/* A live entry's metadata, without its value or counting a hit. */
bool
cache_store_peek(const char *key, int keylen, CacheHit *meta)
{
	return store_lookup(key, keylen, meta, WANT_META);
}

/* The same, with a copy of its tags. */
bool
cache_store_peek_tags(const char *key, int keylen, CacheHit *meta)
{
	return store_lookup(key, keylen, meta, WANT_TAGS);
}

/*
 * Allocate a blob, evicting until it fits.  DSA serves small sizes from
 * per-size-class superblocks, so after a change in value sizes the free
 * space may sit in superblocks of other classes: eviction goes on until
 * whole superblocks come free, at worst until the cache is empty, which
 * always fits a value within harden.cache_max_entry_size.
 */
static dsa_pointer
blob_allocate(Size size)
{
	Size		limit = cache_shared->area_size;
	Size		high_water = limit - limit / 32;

	if (pg_atomic_read_u64(&cache_shared->bytes_used) + size + ENTRY_ALLOC_SIZE > high_water ||
		pg_atomic_read_u64(&cache_shared->entries) >= cache_shared->max_entries)
		cache_evict(size + ENTRY_ALLOC_SIZE);

	for (;;)
	{
		dsa_pointer dp = dsa_allocate_extended(cache_area, size, DSA_ALLOC_NO_OOM);

		if (DsaPointerIsValid(dp))
			return dp;
		if (pg_atomic_read_u64(&cache_shared->entries) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_HARDEN_CACHE_VALUE_TOO_LARGE),
					 errmsg("cache value does not fit in harden.cache_memory"),
					 errdetail("The entry needs %zu bytes; the cache has %zu bytes.", size, limit),
					 errhint("Raise harden.cache_memory or store smaller values.")));
		CHECK_FOR_INTERRUPTS();
		cache_evict(size + ENTRY_ALLOC_SIZE);
	}
}

/*
 * dshash allocates the entry itself, and raises an ERROR (with the partition
 * locks held) when the area is full.  Nothing has been changed at that point,
 * so on out-of-memory we release the locks and report it; the caller evicts
 * and tries again.  last (the cache is empty): rethrow instead.
 */
static CacheEntry *
try_find_or_insert(CacheKey *k, bool *found, bool last)
{
	MemoryContext cxt = CurrentMemoryContext;
	CacheEntry *volatile e = NULL;

	PG_TRY();
	{
		e = dshash_find_or_insert(cache_hash, k, found);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_OUT_OF_MEMORY || last)
			PG_RE_THROW();
		FlushErrorState();
		FreeErrorData(edata);
		/* Only dshash's partition locks can be held here. */
		LWLockReleaseAll();
	}
	PG_END_TRY();
	return e;
}

static CacheEntry *
entry_find_or_insert(CacheKey *k, bool *found)
{
	for (;;)
	{
		bool		last = pg_atomic_read_u64(&cache_shared->entries) == 0;
		CacheEntry *e = try_find_or_insert(k, found, last);

		if (e != NULL)
			return e;
		CHECK_FOR_INTERRUPTS();
		cache_evict(ENTRY_ALLOC_SIZE);
	}
}

/*
 * Store an entry of the current database.  An existing live entry is
 * replaced only if its owner is expected_owner (InvalidOid: expect none);
 * otherwise nothing changes and false is returned, so the caller can check
 * its privileges on the actual owner and try again.  A key that is free (or
 * whose entry expired) is simply taken.
 */
bool
cache_store_put(const CacheItem *item, Oid expected_owner)
{
	CacheKey	k = lookup_key(item->key, item->keylen);
	bool		query = (item->flags & CACHE_FLAG_QUERY) != 0;
	Size		meta_size = query ? MAXALIGN(BLOB_META_SIZE(item->query.ndeps)) : 0;
	Size		value_off = BLOB_META_OFF(item->keylen, item->tagslen) + meta_size;
	Size		blob_size = value_off + item->valuelen;
	dsa_pointer blob;
	char	   *p;
	CacheEntry *e;
	bool		found;

	cache_attach();
	cache_store_sweep(false);

	blob = blob_allocate(blob_size);
	p = dsa_get_address(cache_area, blob);
	memcpy(p, item->key, item->keylen);
	if (item->tagslen > 0)
		memcpy(p + BLOB_TAGS_OFF(item->keylen), item->tags, item->tagslen);
	if (query)
	{
		BlobQueryHead *head = (BlobQueryHead *) (p + value_off - meta_size);

		head->fingerprint = item->query.fingerprint;
		head->epoch = item->query.epoch;
		if (item->query.ndeps > 0)
			memcpy(head + 1, item->query.deps, item->query.ndeps * sizeof(CacheDep));
	}
	memcpy(p + value_off, item->value, item->valuelen);

	PG_TRY();
	{
		e = entry_find_or_insert(&k, &found);
	}
	PG_CATCH();
	{
		dsa_free(cache_area, blob);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (found)
	{
		bool		live = !entry_expired(e, GetCurrentTimestamp()) && !entry_stale(e);

		if (live && e->owner != expected_owner)
		{
			dshash_release_lock(cache_hash, e);
			dsa_free(cache_area, blob);
			return false;
		}
		entry_release(e, live ? CACHE_REMOVED_DELETE : CACHE_REMOVED_EXPIRE);
	}

	e->key.local = false;
	e->key.ptr.blob = blob;
	e->expires_at = item->expires_at;
	e->owner = item->owner;
	e->valuelen = (uint32) item->valuelen;
	e->value_off = (uint32) value_off;
	pg_atomic_init_u32(&e->hits, 0);
	e->hash = key_hash(k.dboid, item->key, item->keylen);
	e->type = (uint8) item->type;
	e->flags = item->flags;
	e->usage = USAGE_INITIAL;
	e->ntags = (uint8) item->ntags;
	e->ndeps = query ? (uint16) item->query.ndeps : 0;
	dshash_release_lock(cache_hash, e);

	pg_atomic_add_fetch_u64(&cache_shared->bytes_used, ENTRY_ALLOC_SIZE + blob_size);
	pg_atomic_add_fetch_u64(&cache_shared->entries, 1);
	return true;
}

/*
 * Delete an entry of the current database if its owner is expected_owner
 * (InvalidOid: whoever owns it).  Returns whether a live entry was deleted.
 */
bool
cache_store_delete(const char *key, int keylen, Oid expected_owner,
				   CacheRemoval why)
{
	CacheKey	k = lookup_key(key, keylen);
	CacheEntry *e;
	bool		live;

	cache_attach();
	e = dshash_find(cache_hash, &k, true);
	if (e == NULL)
		return false;
	live = !entry_expired(e, GetCurrentTimestamp()) && !entry_stale(e);
	if (live && OidIsValid(expected_owner) && e->owner != expected_owner)
	{
		dshash_release_lock(cache_hash, e);
		return false;
	}
	entry_release(e, live ? why : CACHE_REMOVED_EXPIRE);
	dshash_delete_entry(cache_hash, e);
	return live;
}

/*
 * Call fn for every live entry of the current database.  Expired entries met
 * on the way are removed.  Returns the number of entries fn deleted.
 */
uint64
cache_store_scan(cache_scan_fn fn, void *arg, bool exclusive, CacheRemoval why)
{
	dshash_seq_status status;
	CacheEntry *e;
	uint64		deleted = 0;
	TimestampTz now = GetCurrentTimestamp();

	cache_attach();
	/* Expired entries are removed only under an exclusive lock. */
	dshash_seq_init(&status, cache_hash, exclusive);
	while ((e = dshash_seq_next(&status)) != NULL)
	{
		CacheEntryInfo info;
		CacheScanAction action;

		if (e->key.dboid != MyDatabaseId)
			continue;
		if (entry_expired(e, now) || entry_stale(e))
		{
			if (exclusive)
			{
				entry_release(e, entry_expired(e, now) ?
							  CACHE_REMOVED_EXPIRE : CACHE_REMOVED_INVALIDATE);
				dshash_delete_current(&status);
			}
			continue;
		}
		entry_info(e, &info);
		action = fn(&info, arg);
		if (action == CACHE_SCAN_DELETE && exclusive)
		{
			entry_release(e, why);
			dshash_delete_current(&status);
			deleted++;
		}
		else if (action == CACHE_SCAN_STOP)
			break;
	}
	dshash_seq_term(&status);
	return deleted;
}

/*
 * Free expired entries of every database, at most once per
 * harden.cache_sweep_interval across the cluster unless forced: the backend
 * that wins the compare-and-swap on the sweep time does it.
 */
uint64
cache_store_sweep(bool force)
{
	TimestampTz now = GetCurrentTimestamp();
	uint64		last;
	dshash_seq_status status;
	CacheEntry *e;
	uint64		removed = 0;

	cache_attach();
	last = pg_atomic_read_u64(&cache_shared->last_sweep);
	if (!force &&
		!TimestampDifferenceExceeds((TimestampTz) last, now, cache_sweep_interval_s * 1000))
		return 0;
	if (!pg_atomic_compare_exchange_u64(&cache_shared->last_sweep, &last, (uint64) now) &&
		!force)
		return 0;

	dshash_seq_init(&status, cache_hash, true);
	while ((e = dshash_seq_next(&status)) != NULL)
	{
		if (entry_expired(e, now))
			entry_release(e, CACHE_REMOVED_EXPIRE);
		else if (entry_stale(e))
			entry_release(e, CACHE_REMOVED_INVALIDATE);
		else
			continue;
		dshash_delete_current(&status);
		removed++;
	}
	dshash_seq_term(&status);
	return removed;
}

/* The partition dshash places a hash in (its top bits). */
#define CACHE_PARTITION_BITS 7
#define CACHE_PARTITION(hash) ((hash) >> (32 - CACHE_PARTITION_BITS))

/*
 * One CLOCK lap over the partitions in [from, to): expired entries go first,
 * entries at usage zero are evicted while more is needed, the rest lose one
 * usage.  Returns bytes freed.
 */
static Size
evict_lap(uint32 from, uint32 to, Size need, TimestampTz now)
{
	dshash_seq_status status;
	CacheEntry *e;
	Size		freed = 0;

	dshash_seq_init(&status, cache_hash, true);
	while ((e = dshash_seq_next(&status)) != NULL)
	{
		uint32		part = CACHE_PARTITION(e->hash);
		Size		size;

		if (part < from || part >= to)
			continue;
		size = ENTRY_ALLOC_SIZE + entry_blob_size(e);
		if (entry_expired(e, now))
			entry_release(e, CACHE_REMOVED_EXPIRE);
		else if (entry_stale(e))
			entry_release(e, CACHE_REMOVED_INVALIDATE);
		else if (e->usage == 0 && freed < need)
			entry_release(e, CACHE_REMOVED_EVICT);
		else
		{
			if (e->usage > 0)
				e->usage--;
			continue;
		}
		dshash_delete_current(&status);
		freed += size;
	}
	dshash_seq_term(&status);
	return freed;
}

/*
 * Free at least "need" bytes (more, in a batch, so passes are rare).  One
 * backend evicts at a time; one that finds an eviction running waits for it
 * and then re-checks instead of evicting again.  The starting partition
 * rotates so no part of the key space is always evicted first.
 */
static void
cache_evict(Size need)
{
	Size		limit = cache_shared->area_size;
	Size		target = Max(need, limit / 32);
	Size		freed = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (!LWLockConditionalAcquire(cache_shared->evict_lock, LW_EXCLUSIVE))
	{
		LWLockAcquire(cache_shared->evict_lock, LW_EXCLUSIVE);
		if (pg_atomic_read_u64(&cache_shared->bytes_used) + need < limit - limit / 32 &&
			pg_atomic_read_u64(&cache_shared->entries) < cache_shared->max_entries)
		{
			LWLockRelease(cache_shared->evict_lock);
			return;
		}
	}

	/* Every entry loses a usage count per full pass; USAGE_MAX + 1 empty the cache. */
	for (int pass = 0; pass <= USAGE_MAX + 1 && freed < target; pass++)
	{
		uint32		hand = pg_atomic_read_u32(&cache_shared->hand);
		uint32		nparts = 1 << CACHE_PARTITION_BITS;

		freed += evict_lap(hand, nparts, target - Min(freed, target), now);
		if (freed < target)
			freed += evict_lap(0, hand, target - Min(freed, target), now);
		pg_atomic_write_u32(&cache_shared->hand, (hand + 13) % nparts);
		if (pg_atomic_read_u64(&cache_shared->entries) == 0)
			break;
	}
	LWLockRelease(cache_shared->evict_lock);
}

void
cache_store_totals(uint64 *entries, uint64 *bytes_used)
{
	*entries = pg_atomic_read_u64(&cache_shared->entries);
	*bytes_used = pg_atomic_read_u64(&cache_shared->bytes_used);
}
