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
#include "storage/procarray.h"
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
	uint16		nodes_off;		/* tagged entries: their TagNodes in the blob */
	bool		unindexed;		/* its tags could not all be indexed */
} CacheEntry;

/*
 * Tags follow the key in the blob.  A tagged entry then has, at the next
 * MAXALIGNed offset, one TagNode per tag (its place in the tag index); a
 * cache_query() result a BlobQueryHead and its dependencies.  The value
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

/*
 * ---- the tag index ----
 *
 * Each (database, tag hash) has a head in one of TAG_STRIPES striped
 * open-addressing tables, each under its own lock, and a doubly linked list
 * of the entries carrying the tag.  The list nodes live in the entries'
 * blobs, so indexing allocates only heads.  Lock order: an entry's dshash
 * partition lock, then a stripe lock.  An entry is linked while its
 * partition lock is held and unlinked (under the same lock) before its blob
 * is freed, so a walker holding the stripe lock may read the blobs of the
 * list.  When a head cannot be allocated, the entry stays unindexed and
 * counted; while any is, invalidation by tag scans the whole cache.
 */
#define TAG_STRIPES		64

typedef struct TagNode
{
	dsa_pointer prev;			/* TagNodes; InvalidDsaPointer at the ends */
	dsa_pointer next;
	dsa_pointer blob;			/* the entry's blob: its key first */
	uint64		taghash;
	TimestampTz expires_at;		/* the entry's */
	Oid			owner;
	uint16		keylen;
	uint8		tagno;			/* which of the entry's tags */
	bool		linked;
} TagNode;

typedef struct TagHead
{
	uint64		taghash;
	Oid			dboid;
	bool		used;
	uint32		nmembers;
	dsa_pointer first;
} TagHead;

typedef struct TagStripe
{
	LWLock		lock;
	dsa_pointer table;			/* TagHead[capacity], or invalid */
	uint32		capacity;		/* a power of two */
	uint32		count;
} TagStripe;

#define USAGE_MAX		5
#define USAGE_INITIAL	1

/*
 * Memory an entry costs besides its blob: dshash's item (the entry plus a
 * next pointer and hash, MAXALIGNed) and, on average, two bucket slots.
 */
#define ENTRY_ALLOC_SIZE	(MAXALIGN(sizeof(CacheEntry)) + MAXALIGN(sizeof(dsa_pointer) + sizeof(uint32)) \
							 + 2 * sizeof(dsa_pointer))

/* Invalidation markers: a fixed table, see cache_store_mark(). */
#define CACHE_MARKERS	1024
/* Invalidations logged for leases: a ring, see cache_store_inval_log(). */
#define CACHE_INVAL_LOG	1024

typedef struct MarkerSlot
{
	TransactionId xid;			/* InvalidTransactionId: free */
	Oid			dboid;
	uint8		kind;
	uint16		len;
	uint64		hash;
	char		text[CACHE_MAX_KEY_LEN];	/* CACHE_MARK_PATTERN */
} MarkerSlot;

typedef struct CacheShared
{
	int			tranche_id;
	dshash_table_handle hash_handle;
	LWLock	   *evict_lock;		/* one evictor at a time; never on reads */
	Size		area_size;
	uint64		max_entries;	/* the table is presized for this many */
	pg_atomic_uint64 entries;
	pg_atomic_uint64 shadows;	/* entries under a role's shadow key */
	pg_atomic_uint64 bytes_used;	/* entries + blobs, as requested */
	pg_atomic_uint32 hand;		/* CLOCK hand: first partition of a pass */
	pg_atomic_uint64 last_sweep;	/* TimestampTz of the last expiry sweep */
	LWLock		marker_lock;
	pg_atomic_uint32 markers_used;	/* slots in use, plus one while overflowed */
	TransactionId overflow_xid; /* latest transaction that found no free slot */
	MarkerSlot	markers[CACHE_MARKERS];
	LWLock		inval_lock;
	pg_atomic_uint64 inval_seq; /* invalidations logged so far */
	pg_atomic_uint64 lease_until;	/* TimestampTz: the latest expiry of a lease */
	uint64		inval_seqs[CACHE_INVAL_LOG];
	MarkerSlot	inval_log[CACHE_INVAL_LOG];
	pg_atomic_uint64 tags_unindexed;	/* entries whose tags are not indexed */
	TagStripe	tag_stripes[TAG_STRIPES];
	/* the DSA area follows, MAXALIGNed */
} CacheShared;

int			harden_cache_memory_kb = 64 * 1024;
static int	cache_max_entries = 0;
static int	cache_sweep_interval_s = 60;

static CacheShared *cache_shared = NULL;
static dsa_area *cache_area = NULL;
static dshash_table *cache_hash = NULL;

/*
 * The database whose entries the calls below see: this session's, or the
 * one a replayed WAL record names (the startup process has none).
 */
static Oid	store_db_override = InvalidOid;

static inline Oid
store_db(void)
{
	return OidIsValid(store_db_override) ? store_db_override : MyDatabaseId;
}

/* For WAL replay: act on dboid's entries until called with InvalidOid. */
void
cache_store_use_database(Oid dboid)
{
	store_db_override = dboid;
}

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
	pg_atomic_init_u64(&cache_shared->shadows, 0);
	pg_atomic_init_u64(&cache_shared->bytes_used, 0);
	pg_atomic_init_u32(&cache_shared->hand, 0);
	pg_atomic_init_u64(&cache_shared->last_sweep, 0);
	LWLockInitialize(&cache_shared->marker_lock, cache_shared->tranche_id);
	pg_atomic_init_u32(&cache_shared->markers_used, 0);
	cache_shared->overflow_xid = InvalidTransactionId;
	memset(cache_shared->markers, 0, sizeof(cache_shared->markers));
	LWLockInitialize(&cache_shared->inval_lock, cache_shared->tranche_id);
	pg_atomic_init_u64(&cache_shared->inval_seq, 0);
	pg_atomic_init_u64(&cache_shared->lease_until, 0);
	memset(cache_shared->inval_seqs, 0, sizeof(cache_shared->inval_seqs));
	pg_atomic_init_u64(&cache_shared->tags_unindexed, 0);
	for (int i = 0; i < TAG_STRIPES; i++)
	{
		LWLockInitialize(&cache_shared->tag_stripes[i].lock, cache_shared->tranche_id);
		cache_shared->tag_stripes[i].table = InvalidDsaPointer;
		cache_shared->tag_stripes[i].capacity = 0;
		cache_shared->tag_stripes[i].count = 0;
	}

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
lookup_key_db(Oid dboid, const char *key, int keylen)
{
	CacheKey	k;

	k.dboid = dboid;
	k.keylen = (uint16) keylen;
	k.local = true;
	k.ptr.local = key;
	return k;
}

static inline CacheKey
lookup_key(const char *key, int keylen)
{
	return lookup_key_db(store_db(), key, keylen);
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

static inline TagStripe *
tag_stripe(Oid dboid, uint64 taghash)
{
	return &cache_shared->tag_stripes[(taghash ^ murmurhash32(dboid)) % TAG_STRIPES];
}

static inline TagNode *
node_at(dsa_pointer dp)
{
	return (TagNode *) dsa_get_address(cache_area, dp);
}

/* The head of (dboid, taghash) in its stripe, or NULL; stripe lock held. */
static TagHead *
head_find(TagStripe *st, Oid dboid, uint64 taghash)
{
	TagHead    *table;
	uint32		mask;

	if (st->capacity == 0)
		return NULL;
	table = dsa_get_address(cache_area, st->table);
	mask = st->capacity - 1;
	for (uint32 i = (uint32) taghash & mask;; i = (i + 1) & mask)
	{
		TagHead    *h = &table[i];

		if (!h->used)
			return NULL;
		if (h->taghash == taghash && h->dboid == dboid)
			return h;
	}
}

/* Insert into a table known to have room and not to hold the key. */
static TagHead *
head_place(TagHead *table, uint32 capacity, Oid dboid, uint64 taghash)
{
	uint32		mask = capacity - 1;
	uint32		i = (uint32) taghash & mask;

	while (table[i].used)
		i = (i + 1) & mask;
	table[i].used = true;
	table[i].taghash = taghash;
	table[i].dboid = dboid;
	table[i].nmembers = 0;
	table[i].first = InvalidDsaPointer;
	return &table[i];
}

/*
 * Find or add the head; grow the table at 3/4 full.  NULL when no memory
 * could be had without evicting (which cannot happen under these locks).
 */
static TagHead *
head_get(TagStripe *st, Oid dboid, uint64 taghash)
{
	TagHead    *h = head_find(st, dboid, taghash);

	if (h != NULL)
		return h;
	if ((st->count + 1) * 4 > st->capacity * 3)
	{
		uint32		newcap = Max(16, st->capacity * 2);
		dsa_pointer dp = dsa_allocate_extended(cache_area, sizeof(TagHead) * newcap,
											   DSA_ALLOC_NO_OOM | DSA_ALLOC_ZERO);
		TagHead    *newtab;

		if (!DsaPointerIsValid(dp))
			return NULL;
		newtab = dsa_get_address(cache_area, dp);
		if (st->capacity > 0)
		{
			TagHead    *old = dsa_get_address(cache_area, st->table);

			for (uint32 i = 0; i < st->capacity; i++)
				if (old[i].used)
					*head_place(newtab, newcap, old[i].dboid, old[i].taghash) = old[i];
			dsa_free(cache_area, st->table);
		}
		st->table = dp;
		st->capacity = newcap;
	}
	st->count++;
	return head_place(dsa_get_address(cache_area, st->table), st->capacity, dboid, taghash);
}

/* Remove an empty head, shifting the entries of its run back. */
static void
head_remove(TagStripe *st, TagHead *h)
{
	TagHead    *table = dsa_get_address(cache_area, st->table);
	uint32		mask = st->capacity - 1;
	uint32		i = (uint32) (h - table);
	uint32		j = i;

	table[i].used = false;
	for (;;)
	{
		uint32		home;

		j = (j + 1) & mask;
		if (!table[j].used)
			break;
		home = (uint32) table[j].taghash & mask;
		/* Move j back to i unless its home lies cyclically in (i, j]. */
		if ((i <= j) ? (home > i && home <= j) : (home > i || home <= j))
			continue;
		table[i] = table[j];
		table[j].used = false;
		i = j;
	}
	st->count--;
}

/* Link a new entry's tag nodes; its partition lock is held. */
static void
entry_index_tags(CacheEntry *e)
{
	char	   *blob = entry_blob(e);
	const char *tag = blob + BLOB_TAGS_OFF(e->key.keylen);

	for (int i = 0; i < e->ntags; i++)
	{
		int			len = strlen(tag);
		dsa_pointer ndp = e->key.ptr.blob + e->nodes_off + i * sizeof(TagNode);
		TagNode    *n = node_at(ndp);
		TagStripe  *st;
		TagHead    *h;

		n->taghash = cache_mark_hash(tag, len);
		n->blob = e->key.ptr.blob;
		n->owner = e->owner;
		n->expires_at = e->expires_at;
		n->keylen = e->key.keylen;
		n->tagno = (uint8) i;
		n->linked = false;
		n->prev = InvalidDsaPointer;
		st = tag_stripe(e->key.dboid, n->taghash);
		LWLockAcquire(&st->lock, LW_EXCLUSIVE);
		h = head_get(st, e->key.dboid, n->taghash);
		if (h != NULL)
		{
			n->next = h->first;
			if (DsaPointerIsValid(h->first))
				node_at(h->first)->prev = ndp;
			h->first = ndp;
			h->nmembers++;
			n->linked = true;
		}
		LWLockRelease(&st->lock);
		if (h == NULL && !e->unindexed)
		{
			e->unindexed = true;
			pg_atomic_add_fetch_u64(&cache_shared->tags_unindexed, 1);
		}
		tag += len + 1;
	}
}

/* Unlink an entry's tag nodes before its blob is freed; partition lock held. */
static void
entry_unindex_tags(CacheEntry *e)
{
	for (int i = 0; i < e->ntags; i++)
	{
		dsa_pointer ndp = e->key.ptr.blob + e->nodes_off + i * sizeof(TagNode);
		TagNode    *n = node_at(ndp);
		TagStripe  *st;
		TagHead    *h;

		if (!n->linked)
			continue;
		st = tag_stripe(e->key.dboid, n->taghash);
		LWLockAcquire(&st->lock, LW_EXCLUSIVE);
		h = head_find(st, e->key.dboid, n->taghash);
		Assert(h != NULL);
		if (DsaPointerIsValid(n->prev))
			node_at(n->prev)->next = n->next;
		else
			h->first = n->next;
		if (DsaPointerIsValid(n->next))
			node_at(n->next)->prev = n->prev;
		n->linked = false;
		if (--h->nmembers == 0)
			head_remove(st, h);
		LWLockRelease(&st->lock);
	}
	if (e->unindexed)
	{
		e->unindexed = false;
		pg_atomic_sub_fetch_u64(&cache_shared->tags_unindexed, 1);
	}
}

/*
 * The live entries of the current database carrying tag, through the index:
 * fn gets each one's stored key and owner (copies are the caller's to
 * make), with the stripe lock held, so it must not block or fail.  Returns
 * false when the index is incomplete (some entry is unindexed): the caller
 * scans instead.
 */
bool
cache_store_tag_members(const char *tag, int len, cache_tag_member_fn fn, void *arg)
{
	uint64		taghash = cache_mark_hash(tag, len);
	TagStripe  *st;
	TagHead    *h;
	TimestampTz now = GetCurrentTimestamp();

	cache_attach();
	if (pg_atomic_read_u64(&cache_shared->tags_unindexed) > 0)
		return false;
	st = tag_stripe(store_db(), taghash);
	LWLockAcquire(&st->lock, LW_SHARED);
	h = head_find(st, store_db(), taghash);
	for (dsa_pointer dp = h ? h->first : InvalidDsaPointer; DsaPointerIsValid(dp);)
	{
		TagNode    *n = node_at(dp);
		const char *blob = dsa_get_address(cache_area, n->blob);
		const char *t = blob + BLOB_TAGS_OFF(n->keylen);

		bool		first = true;

		/*
		 * The hash may collide: compare the tag itself.  An entry given the
		 * same tag twice is reported for its first occurrence only.
		 */
		for (int i = 0; i < n->tagno; i++)
		{
			if ((int) strlen(t) == len && memcmp(t, tag, len) == 0)
				first = false;
			t += strlen(t) + 1;
		}
		if (first && (int) strlen(t) == len && memcmp(t, tag, len) == 0 &&
			(n->expires_at == 0 || n->expires_at > now))
			fn(blob, n->keylen, n->owner, arg);
		dp = n->next;
	}
	LWLockRelease(&st->lock);
	return true;
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
	if (cache_key_is_shadow(entry_blob(e), e->key.keylen))
		pg_atomic_sub_fetch_u64(&cache_shared->shadows, 1);
	if (e->ntags > 0)
		entry_unindex_tags(e);
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
	/* Key, tags and value: not the tag index's nodes. */
	info->bytes = e->value_off + e->valuelen -
		(e->ntags > 0 ? MAXALIGN(e->ntags * sizeof(TagNode)) : 0);
	info->expires_at = e->expires_at;
	info->hits = pg_atomic_read_u32(&e->hits);
	info->tags = blob + BLOB_TAGS_OFF(e->key.keylen);
	info->ntags = e->ntags;
	info->owner = e->owner;
	info->flags = e->flags;
	info->value = blob + e->value_off;
	info->valuelen = e->valuelen;
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
static bool store_put(Oid dboid, const CacheItem *item, Oid expected_owner);

bool
cache_store_put(const CacheItem *item, Oid expected_owner)
{
	return store_put(store_db(), item, expected_owner);
}

static bool
store_put(Oid dboid, const CacheItem *item, Oid expected_owner)
{
	CacheKey	k = lookup_key_db(dboid, item->key, item->keylen);
	bool		query = (item->flags & CACHE_FLAG_QUERY) != 0;
	Size		meta_size = query ? MAXALIGN(BLOB_META_SIZE(item->query.ndeps)) : 0;
	Size		nodes_size = item->ntags > 0 ? MAXALIGN(item->ntags * sizeof(TagNode)) : 0;
	Size		nodes_off = BLOB_META_OFF(item->keylen, item->tagslen);
	Size		value_off = nodes_off + nodes_size + meta_size;
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
	e->nodes_off = (uint16) nodes_off;
	e->unindexed = false;
	if (e->ntags > 0)
		entry_index_tags(e);
	dshash_release_lock(cache_hash, e);

	pg_atomic_add_fetch_u64(&cache_shared->bytes_used, ENTRY_ALLOC_SIZE + blob_size);
	pg_atomic_add_fetch_u64(&cache_shared->entries, 1);
	if (cache_key_is_shadow(item->key, item->keylen))
		pg_atomic_add_fetch_u64(&cache_shared->shadows, 1);
	return true;
}

/*
 * Delete an entry of the current database if its owner is expected_owner
 * (InvalidOid: whoever owns it).  Returns whether a live entry was deleted.
 */
static bool store_delete(Oid dboid, const char *key, int keylen, Oid expected_owner,
						 CacheRemoval why);

bool
cache_store_delete(const char *key, int keylen, Oid expected_owner,
				   CacheRemoval why)
{
	return store_delete(store_db(), key, keylen, expected_owner, why);
}

static bool
store_delete(Oid dboid, const char *key, int keylen, Oid expected_owner,
			 CacheRemoval why)
{
	CacheKey	k = lookup_key_db(dboid, key, keylen);
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
 * Delete an entry of the current database if it is live, owner is
 * expected_owner and it still carries tag (it may have been replaced since
 * it was found through the tag).  Returns whether it was deleted.
 */
bool
cache_store_delete_tagged(const char *key, int keylen, Oid expected_owner,
						  const char *tag, int taglen)
{
	CacheKey	k = lookup_key(key, keylen);
	CacheEntry *e;
	const char *t;
	bool		has = false;

	cache_attach();
	e = dshash_find(cache_hash, &k, true);
	if (e == NULL)
		return false;
	t = entry_blob(e) + BLOB_TAGS_OFF(e->key.keylen);
	for (int i = 0; i < e->ntags && !has; i++)
	{
		int			len = strlen(t);

		has = len == taglen && memcmp(t, tag, len) == 0;
		t += len + 1;
	}
	if (!has || e->owner != expected_owner ||
		entry_expired(e, GetCurrentTimestamp()) || entry_stale(e))
	{
		dshash_release_lock(cache_hash, e);
		return false;
	}
	entry_release(e, CACHE_REMOVED_INVALIDATE);
	dshash_delete_entry(cache_hash, e);
	return true;
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

		if (e->key.dboid != store_db())
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

/* Whether any role's shadow of a key is stored (see cache_apply.c). */
bool
cache_store_has_shadows(void)
{
	cache_attach();
	return pg_atomic_read_u64(&cache_shared->shadows) > 0;
}

/*
 * ---- invalidation markers ----
 *
 * A transaction that wrote data and invalidates entries must not let a
 * session that read the old rows refill them before its commit is visible.
 * It registers what it invalidates, with its xid, before deleting; a set
 * stores, then looks for markers matching its entry whose transaction its
 * snapshot did not see, and removes its entry if it finds one.  A marker
 * retires once its transaction precedes every snapshot's xmin.  When no
 * slot is free even after retiring, the table remembers the latest such
 * xid: until it retires, every set checks against it as against a flush.
 */

static uint32 marked_calls = 0;

/* Free the slots every snapshot has seen; caller holds the lock exclusively. */
static void
markers_retire(void)
{
	TransactionId horizon = GetOldestNonRemovableTransactionId(NULL);
	uint32		used = 0;

	for (int i = 0; i < CACHE_MARKERS; i++)
	{
		MarkerSlot *m = &cache_shared->markers[i];

		if (!TransactionIdIsValid(m->xid))
			continue;
		if (TransactionIdPrecedes(m->xid, horizon))
			m->xid = InvalidTransactionId;
		else
			used++;
	}
	if (TransactionIdIsValid(cache_shared->overflow_xid) &&
		TransactionIdPrecedes(cache_shared->overflow_xid, horizon))
		cache_shared->overflow_xid = InvalidTransactionId;
	if (TransactionIdIsValid(cache_shared->overflow_xid))
		used++;
	pg_atomic_write_u32(&cache_shared->markers_used, used);
}

/* A marker slot or an invalidation-log entry for this database's mark. */
static void
marker_fill(MarkerSlot *m, const CacheMark *mk)
{
	m->dboid = store_db();
	m->kind = (uint8) mk->kind;
	m->hash = mk->hash;
	m->len = 0;
	if (mk->kind == CACHE_MARK_PATTERN)
	{
		m->len = (uint16) Min(mk->len, CACHE_MAX_KEY_LEN);
		memcpy(m->text, mk->text, m->len);
	}
}

void
cache_store_mark(const CacheMark *marks, int nmarks, TransactionId xid)
{
	int			next = 0;
	bool		retired = false;

	if (nmarks == 0)
		return;
	cache_attach();
	LWLockAcquire(&cache_shared->marker_lock, LW_EXCLUSIVE);
	for (int k = 0; k < nmarks; k++)
	{
		const CacheMark *mk = &marks[k];
		MarkerSlot *m = NULL;

		while (next < CACHE_MARKERS && TransactionIdIsValid(cache_shared->markers[next].xid))
			next++;
		if (next == CACHE_MARKERS && !retired)
		{
			markers_retire();
			retired = true;
			next = 0;
			while (next < CACHE_MARKERS && TransactionIdIsValid(cache_shared->markers[next].xid))
				next++;
		}
		if (next == CACHE_MARKERS)
		{
			/* No room: every set checks against this xid until it retires. */
			if (!TransactionIdIsValid(cache_shared->overflow_xid))
				pg_atomic_fetch_add_u32(&cache_shared->markers_used, 1);
			if (!TransactionIdIsValid(cache_shared->overflow_xid) ||
				TransactionIdFollows(xid, cache_shared->overflow_xid))
				cache_shared->overflow_xid = xid;
			break;
		}
		m = &cache_shared->markers[next];
		marker_fill(m, mk);
		m->xid = xid;
		pg_atomic_fetch_add_u32(&cache_shared->markers_used, 1);
	}
	LWLockRelease(&cache_shared->marker_lock);
}

/*
 * What marker_matches() compares an item by: the hash of its key as the
 * markers record it (returned, with that key), and of each of its tags.
 */
static uint64
item_hashes(const CacheItem *item, uint64 *taghashes, const char **userkey, int *userlen)
{
	const char *t = item->tags;

	*userkey = cache_user_key(item->key, item->keylen, userlen);
	for (int i = 0; i < item->ntags; i++)
	{
		int			len = strlen(t);

		taghashes[i] = cache_mark_hash(t, len);
		t += len + 1;
	}
	return cache_mark_hash(*userkey, *userlen);
}

static bool
marker_matches(const MarkerSlot *m, Oid dboid, const CacheItem *item, uint64 keyhash,
			   const uint64 *taghashes, const char *userkey, int userlen)
{
	/* a generation key names its database (or none: role grants) itself */
	if (m->kind == CACHE_MARK_GEN)
	{
		if (!(item->flags & CACHE_FLAG_QUERY))
			return false;
		if (m->hash == CACHE_MARK_GEN_ANY)
			return m->dboid == dboid;
		for (int d = 0; d < item->query.ndeps; d++)
			if (item->query.deps[d].key == m->hash)
				return true;
		return false;
	}
	if (m->dboid != dboid)
		return false;
	switch ((CacheMarkKind) m->kind)
	{
		case CACHE_MARK_KEY:	/* by user key: shadows and query results too */
			return m->hash == keyhash;
		case CACHE_MARK_TAG:
			for (int t = 0; t < item->ntags; t++)
				if (taghashes[t] == m->hash)
					return true;
			return false;
		case CACHE_MARK_PATTERN:
			return cache_glob_match(m->text, m->len, userkey, userlen);
		case CACHE_MARK_FLUSH:
			return true;
		case CACHE_MARK_FLUSH_SECURE:
			return (item->flags & CACHE_FLAG_SECURE) != 0;
		case CACHE_MARK_GEN:
			break;
	}
	return false;
}

/*
 * Whether a marker that matches item (by its stored key, tags, user key,
 * flags) belongs to a transaction unseen says was not seen.  Visibility is
 * decided outside the lock, on copies of the matching xids.
 */
bool
cache_store_marked(const CacheItem *item, cache_unseen_fn unseen, void *arg)
{
	uint64		keyhash;
	uint64		taghashes[CACHE_MAX_TAGS];
	TransactionId found[CACHE_MARKERS + 1];
	int			nfound = 0;
	int			userlen;
	const char *userkey;

	cache_attach();
	if (pg_atomic_read_u32(&cache_shared->markers_used) == 0)
		return false;

	/*
	 * Slots are otherwise retired only when the table fills: now and then a
	 * set retires them, so that once every snapshot has seen them sets are
	 * back to one atomic read.
	 */
	if (++marked_calls % 128 == 0 &&
		LWLockConditionalAcquire(&cache_shared->marker_lock, LW_EXCLUSIVE))
	{
		markers_retire();
		LWLockRelease(&cache_shared->marker_lock);
		if (pg_atomic_read_u32(&cache_shared->markers_used) == 0)
			return false;
	}
	keyhash = item_hashes(item, taghashes, &userkey, &userlen);

	LWLockAcquire(&cache_shared->marker_lock, LW_SHARED);
	for (int i = 0; i < CACHE_MARKERS; i++)
	{
		const MarkerSlot *m = &cache_shared->markers[i];

		if (TransactionIdIsValid(m->xid) &&
			marker_matches(m, store_db(), item, keyhash, taghashes, userkey, userlen))
			found[nfound++] = m->xid;
	}
	if (TransactionIdIsValid(cache_shared->overflow_xid))
		found[nfound++] = cache_shared->overflow_xid;
	LWLockRelease(&cache_shared->marker_lock);

	for (int i = 0; i < nfound; i++)
		if (unseen(found[i], arg))
			return true;
	return false;
}

/*
 * ---- the invalidation log of leases ----
 *
 * A lease (cache_lease()) records the log's sequence number when it is
 * issued; a set presenting it stores only if no invalidation logged since
 * matches its entry.  Invalidations are logged, before they delete, only
 * while a lease may be live, so without leases nothing is logged.  When
 * more were logged since a lease than the ring holds, the lease has lost.
 */
uint64
cache_store_lease_begin(TimestampTz expires_at)
{
	uint64		until;

	cache_attach();
	until = pg_atomic_read_u64(&cache_shared->lease_until);
	while ((TimestampTz) until < expires_at &&
		   !pg_atomic_compare_exchange_u64(&cache_shared->lease_until, &until,
										   (uint64) expires_at))
		;
	/* Invalidations that check lease_until after this see it. */
	pg_memory_barrier();
	return pg_atomic_read_u64(&cache_shared->inval_seq);
}

void
cache_store_inval_log(const CacheMark *mk)
{
	uint64		seq;
	MarkerSlot *m;

	cache_attach();
	pg_memory_barrier();
	if ((TimestampTz) pg_atomic_read_u64(&cache_shared->lease_until) <= GetCurrentTimestamp())
		return;
	LWLockAcquire(&cache_shared->inval_lock, LW_EXCLUSIVE);
	seq = pg_atomic_read_u64(&cache_shared->inval_seq) + 1;
	m = &cache_shared->inval_log[seq % CACHE_INVAL_LOG];
	marker_fill(m, mk);
	cache_shared->inval_seqs[seq % CACHE_INVAL_LOG] = seq;
	pg_atomic_write_u64(&cache_shared->inval_seq, seq);
	LWLockRelease(&cache_shared->inval_lock);
}

static bool invalidated_since(Oid dboid, uint64 since, const CacheItem *item);

/* Whether an invalidation logged after since matches item. */
bool
cache_store_invalidated_since(uint64 since, const CacheItem *item)
{
	return invalidated_since(store_db(), since, item);
}

static bool
invalidated_since(Oid dboid, uint64 since, const CacheItem *item)
{
	uint64		keyhash;
	uint64		taghashes[CACHE_MAX_TAGS];
	int			userlen;
	const char *userkey;
	uint64		cur;
	bool		hit = false;

	cache_attach();
	cur = pg_atomic_read_u64(&cache_shared->inval_seq);
	if (cur == since)
		return false;
	if (cur - since >= CACHE_INVAL_LOG)
		return true;
	keyhash = item_hashes(item, taghashes, &userkey, &userlen);
	LWLockAcquire(&cache_shared->inval_lock, LW_SHARED);
	cur = pg_atomic_read_u64(&cache_shared->inval_seq);
	if (cur - since >= CACHE_INVAL_LOG)
		hit = true;
	for (uint64 seq = since + 1; !hit && seq <= cur; seq++)
	{
		int			slot = seq % CACHE_INVAL_LOG;

		hit = cache_shared->inval_seqs[slot] != seq ||
			marker_matches(&cache_shared->inval_log[slot], dboid, item, keyhash, taghashes,
						   userkey, userlen);
	}
	LWLockRelease(&cache_shared->inval_lock);
	return hit;
}

void
cache_store_totals(uint64 *entries, uint64 *bytes_used)
{
	*entries = pg_atomic_read_u64(&cache_shared->entries);
	*bytes_used = pg_atomic_read_u64(&cache_shared->bytes_used);
}

/*
 * ---- persistence (cache_persist.c) ----
 *
 * A dump reads every database's live entries under shared partition locks;
 * fn must not block or raise an error (see cache_scan_fn).
 */
uint64
cache_store_scan_all(cache_scan_fn fn, void *arg)
{
	dshash_seq_status status;
	CacheEntry *e;
	uint64		n = 0;
	TimestampTz now = GetCurrentTimestamp();

	cache_attach();
	dshash_seq_init(&status, cache_hash, false);
	while ((e = dshash_seq_next(&status)) != NULL)
	{
		CacheEntryInfo info;

		if (entry_expired(e, now) || entry_stale(e))
			continue;
		entry_info(e, &info);
		n++;
		if (fn(&info, arg) == CACHE_SCAN_STOP)
			break;
	}
	dshash_seq_term(&status);
	return n;
}

/*
 * Load one entry of database dboid from a dump: it takes the key only if
 * the key is free, and is dropped again if an invalidation logged since
 * "since" (cache_store_lease_begin) matches it, so the load never brings
 * back what a write removed while it ran.
 */
bool
cache_store_load(Oid dboid, const CacheItem *item, uint64 since)
{
	if (!store_put(dboid, item, InvalidOid))
		return false;
	if (invalidated_since(dboid, since, item))
	{
		store_delete(dboid, item->key, item->keylen, item->owner, CACHE_REMOVED_INVALIDATE);
		return false;
	}
	return true;
}
