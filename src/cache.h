/*
 * cache.h
 *	  The cache's layers and what they share.  Each layer calls only the
 *	  ones below it:
 *
 *	  SQL-callable	cache.c, cache_query.c
 *	  transaction	cache_xact.c	pending writes, publish at commit
 *	  apply			cache_apply.c	role checks, glob/tag matching, one operation
 *	  store			cache_store.c	DSA + dshash, eviction, expiry
 *	  generations	cache_watch.c	write generations (relations, values, catalog objects)
 *
 *	  Key formats and flags live here.
 */
#ifndef PG_HARDEN_CACHE_H
#define PG_HARDEN_CACHE_H

#include "common/hashfn.h"
#include "datatype/timestamp.h"
#include "access/attnum.h"
#include "fmgr.h"

#define CACHE_MAX_KEY_LEN	250
#define CACHE_MAX_TAGS		32

typedef enum CacheValueType
{
	CACHE_JSONB = 1,
	CACHE_TEXT = 2,
	CACHE_BYTEA = 3
} CacheValueType;

#define CACHE_FLAG_SECURE	0x01
#define CACHE_FLAG_PUBLIC	0x02
#define CACHE_FLAG_QUERY	0x04	/* a cache_query() result: has a CacheQueryMeta */

/*
 * cache_query() results live in a key space of their own per role: the
 * stored key is CACHE_QUERY_MARK, the role's oid in 8 hex digits, then the
 * caller's key.  User keys never contain the mark byte.
 */
#define CACHE_QUERY_MARK	'\x01'
#define CACHE_QUERY_PREFIX_LEN	9
#define CACHE_MAX_STORED_KEY_LEN	(CACHE_MAX_KEY_LEN + CACHE_QUERY_PREFIX_LEN)

/*
 * A role's shadow of a key (see cache_apply.c): CACHE_SHADOW_MARK, the
 * role's oid, the key.  Same length as a query result's prefix.
 */
#define CACHE_SHADOW_MARK	'\x02'

/* Whether a stored key carries a per-role prefix (mark byte + role oid). */
static inline bool
cache_key_is_prefixed(const char *key, int keylen)
{
	return keylen > CACHE_QUERY_PREFIX_LEN &&
		(key[0] == CACHE_QUERY_MARK || key[0] == CACHE_SHADOW_MARK);
}

static inline bool
cache_key_is_shadow(const char *key, int keylen)
{
	return keylen > CACHE_QUERY_PREFIX_LEN && key[0] == CACHE_SHADOW_MARK;
}

/* A user key with a role's prefix in front (palloc'd). */
static inline char *
cache_prefixed_key(char mark, const char *key, int keylen, Oid role, int *len)
{
	char	   *k = palloc(CACHE_QUERY_PREFIX_LEN + keylen + 1);

	snprintf(k, CACHE_QUERY_PREFIX_LEN + 1, "%c%08x", mark, role);
	memcpy(k + CACHE_QUERY_PREFIX_LEN, key, keylen);
	k[CACHE_QUERY_PREFIX_LEN + keylen] = '\0';
	*len = CACHE_QUERY_PREFIX_LEN + keylen;
	return k;
}

/* The stored key of a role's cache_query() result under a user key. */
static inline char *
cache_query_key(const char *key, int keylen, Oid role, int *len)
{
	return cache_prefixed_key(CACHE_QUERY_MARK, key, keylen, role, len);
}

/* The stored key of a role's shadow of a user key. */
static inline char *
cache_shadow_key(const char *key, int keylen, Oid role, int *len)
{
	return cache_prefixed_key(CACHE_SHADOW_MARK, key, keylen, role, len);
}

/* The key a user gave, without the per-role prefix of a stored key. */
static inline const char *
cache_user_key(const char *key, int keylen, int *userlen)
{
	if (cache_key_is_prefixed(key, keylen))
	{
		*userlen = keylen - CACHE_QUERY_PREFIX_LEN;
		return key + CACHE_QUERY_PREFIX_LEN;
	}
	*userlen = keylen;
	return key;
}

/* What a generation a cached result depends on is of (cache_watch.c). */
typedef enum CacheDepKind
{
	CACHE_DEP_REL = 1,			/* any write to a relation; its invalidations */
	CACHE_DEP_REL_UNKNOWN = 2,	/* a write whose column values are unknown */
	CACHE_DEP_VALUE = 3,		/* a write of one value of a watched column */
	CACHE_DEP_CATALOG = 4,		/* a syscache object (role, function, schema) */
	CACHE_DEP_DATABASE = 5		/* every result of a database */
} CacheDepKind;

/* A generation a cached result was computed from, and its value then. */
typedef struct CacheDep
{
	uint64		key;			/* cache_gen_key() */
	uint64		generation;
	Oid			relid;			/* the relation, for relation kinds; else 0 */
	uint32		slot;			/* where the generation was read */
	uint8		kind;			/* CacheDepKind */
	uint8		watched;		/* writes to it are seen (else TTL-capped) */
	uint8		shown;			/* listed in cache_entries.deps */
} CacheDep;

/* What a cache_query() entry carries besides its value. */
typedef struct CacheQueryMeta
{
	uint64		fingerprint;	/* of the SQL text and its parameters */
	uint64		epoch;			/* cache_gen_epoch() when computed */
	int			ndeps;
	const CacheDep *deps;
} CacheQueryMeta;

/*
 * One entry as a writer supplies it.  tags holds ntags NUL-terminated
 * strings back to back (tagslen bytes in all).
 */
typedef struct CacheItem
{
	const char *key;
	int			keylen;
	CacheValueType type;
	const char *value;			/* varlena payload, without header */
	Size		valuelen;
	const char *tags;
	Size		tagslen;
	int			ntags;
	TimestampTz expires_at;		/* 0: never */
	Oid			owner;
	uint8		flags;
	CacheQueryMeta query;		/* CACHE_FLAG_QUERY only */
	bool		leased;			/* set with a lease: stored only if nothing */
	uint64		lease_since;	/* ... invalidated it since this log position */
} CacheItem;

/* What a lookup returns; value is a palloc'd copy. */
typedef struct CacheHit
{
	CacheValueType type;
	char	   *value;
	Size		valuelen;
	Oid			owner;
	uint8		flags;
	TimestampTz expires_at;
	char	   *tags;			/* cache_store_peek_tags only: NUL-separated copies */
	int			ntags;
	uint64		fingerprint;	/* CACHE_FLAG_QUERY only */
	int			ndeps;			/* CACHE_FLAG_QUERY value reads only: a copy */
	CacheDep   *deps;
} CacheHit;

/* A copy of one entry's metadata, made during a scan. */
typedef struct CacheEntryInfo
{
	Oid			dboid;
	char	   *key;			/* the user's key, without a per-role prefix */
	int			keylen;
	const char *stored_key;		/* the key as stored */
	int			stored_keylen;
	CacheValueType type;
	Size		bytes;			/* key + tags + value */
	TimestampTz expires_at;
	uint64		hits;
	char	   *tags;			/* NUL-separated, ntags of them */
	int			ntags;
	Oid			owner;
	uint8		flags;
	const char *value;			/* in the store: valid only during the scan */
	Size		valuelen;
	int			ndeps;			/* CACHE_FLAG_QUERY only */
	const CacheDep *deps;
} CacheEntryInfo;

typedef enum CacheScanAction
{
	CACHE_SCAN_KEEP,
	CACHE_SCAN_DELETE,
	CACHE_SCAN_STOP
} CacheScanAction;

/*
 * Called for every entry of the current database during a scan, with the
 * entry's partition lock held: it must not do catalog access or anything
 * else that can block or raise an error.
 */
typedef CacheScanAction (*cache_scan_fn) (const CacheEntryInfo *e, void *arg);

/* Why an entry left the cache, for the counters. */
typedef enum CacheRemoval
{
	CACHE_REMOVED_DELETE,
	CACHE_REMOVED_INVALIDATE,
	CACHE_REMOVED_EXPIRE,
	CACHE_REMOVED_EVICT
} CacheRemoval;

/* A cache write kept until commit. */
typedef enum CachePendingKind
{
	CACHE_PENDING_SET,
	CACHE_PENDING_DELETE,
	CACHE_PENDING_INVALIDATE,
	CACHE_PENDING_TAG,
	CACHE_PENDING_FLUSH,
	CACHE_PENDING_FLUSH_SECURE
} CachePendingKind;

/* Glob match: '*' any run of bytes, '?' one byte; iterative backtracking. */
static inline bool
cache_glob_match(const char *p, int plen, const char *s, int slen)
{
	int			pi = 0,
				si = 0,
				star = -1,
				mark = 0;

	while (si < slen)
	{
		if (pi < plen && (p[pi] == '?' || p[pi] == s[si]))
		{
			pi++;
			si++;
		}
		else if (pi < plen && p[pi] == '*')
		{
			star = pi++;
			mark = si;
		}
		else if (star >= 0)
		{
			pi = star + 1;
			si = ++mark;
		}
		else
			return false;
	}
	while (pi < plen && p[pi] == '*')
		pi++;
	return pi == plen;
}

/*
 * An invalidation marker: what a transaction that wrote data invalidates,
 * registered before the entries are deleted and kept until every snapshot
 * sees that transaction (cache_store.c).  A set checks the markers that
 * match its entry.
 */
typedef enum CacheMarkKind
{
	CACHE_MARK_KEY,				/* hash: of the user key */
	CACHE_MARK_TAG,				/* hash: of the tag */
	CACHE_MARK_PATTERN,			/* text: the glob, over user keys */
	CACHE_MARK_FLUSH,
	CACHE_MARK_FLUSH_SECURE,
	CACHE_MARK_GEN				/* a generation key (replayed on a standby) */
} CacheMarkKind;

/* A CACHE_MARK_GEN hash that matches every query result of its database. */
#define CACHE_MARK_GEN_ANY	UINT64CONST(0)

typedef struct CacheMark
{
	CacheMarkKind kind;
	uint64		hash;
	const char *text;			/* CACHE_MARK_PATTERN */
	int			len;
} CacheMark;

static inline uint64
cache_mark_hash(const char *s, int len)
{
	return hash_bytes_extended((const unsigned char *) s, len, 0x5eed);
}

/* The marker of a write: what a set from an older snapshot must not survive. */
static inline CacheMark
cache_mark_of(CachePendingKind kind, const char *name, int namelen)
{
	CacheMark	m = {0};

	switch (kind)
	{
		case CACHE_PENDING_SET:
		case CACHE_PENDING_DELETE:
			{
				int			userlen;
				const char *userkey = cache_user_key(name, namelen, &userlen);

				m.kind = CACHE_MARK_KEY;
				m.hash = cache_mark_hash(userkey, userlen);
			}
			break;
		case CACHE_PENDING_TAG:
			m.kind = CACHE_MARK_TAG;
			m.hash = cache_mark_hash(name, namelen);
			break;
		case CACHE_PENDING_INVALIDATE:
			m.kind = CACHE_MARK_PATTERN;
			m.text = name;
			m.len = namelen;
			break;
		case CACHE_PENDING_FLUSH:
			m.kind = CACHE_MARK_FLUSH;
			break;
		case CACHE_PENDING_FLUSH_SECURE:
			m.kind = CACHE_MARK_FLUSH_SECURE;
			break;
	}
	return m;
}

/* Whether a marker's transaction is one the setter's snapshot did not see. */
typedef bool (*cache_unseen_fn) (TransactionId xid, void *arg);

/* cache_query.c */
extern void cache_query_define_gucs(bool preloading);

/* cache_watch.c: write generations (the bottom layer) */
extern void cache_watch_define_gucs(bool preloading);
extern Size cache_watch_shmem_size(void);
extern void cache_watch_shmem_startup(void);
extern uint64 cache_gen_key(Oid dboid, CacheDepKind kind, uint32 a, uint64 b);
extern bool cache_gen_read(CacheDep *deps, int n);
extern void cache_gen_bump(uint64 key);
extern void cache_gen_bump_rel(Oid dboid, Oid relid, bool values_known);
extern int	cache_gen_rel_keys(Oid dboid, Oid relid, bool values_known, uint64 *keys);
extern void cache_gen_bump_value(Oid dboid, Oid relid, uint64 valuehash);
extern void cache_gen_bump_database(Oid dboid);
extern uint64 cache_gen_epoch(void);
extern void cache_gen_bump_epoch(void);

/* cache_wal.c: generation moves in the WAL, for hot standbys */
extern bool cache_wal;
extern void cache_wal_define_gucs(bool preloading);
extern bool cache_wal_replayed(void);
extern void cache_wal_begin(void);
extern void cache_wal_note(uint64 key);
extern void cache_wal_end(bool flush);
extern void cache_wal_log_reset(void);
extern void cache_wal_inval_begin(void);
extern void cache_wal_inval_end(void);
extern void cache_wal_inval_cancel(void);
extern void cache_wal_inval(CachePendingKind kind, const char *name, int namelen, Oid role);
extern void cache_gen_computing(bool on);
extern bool cache_deps_current(Oid dboid, const CacheQueryMeta *meta);

/* cache_track.c: writes seen by hooks and triggers, moved after commit */
extern bool cache_track_writes;
extern void cache_track_define_gucs(bool preloading);
extern void cache_track_hooks_install(void);
extern bool cache_track_wrote_in_xact(void);
extern bool cache_track_wrote(Oid relid);
extern bool cache_track_watched(Oid relid);
extern bool cache_track_by_column(Oid relid, AttrNumber *attnum);
extern bool cache_value_hash(Oid type, Oid collation, Datum value, uint64 *hash);

/* cache_flight.c: single-flight computation of a query */
typedef enum CacheFlight
{
	CACHE_FLIGHT_LEAD,			/* we compute; cache_flight_end() when done */
	CACHE_FLIGHT_WAIT,			/* another backend computes: cache_flight_wait() */
	CACHE_FLIGHT_NONE			/* no coordination possible: just compute */
} CacheFlight;

/* How a computation ended, as its waiters learn it. */
typedef enum CacheFlightOutcome
{
	CACHE_FLIGHT_PUBLISHED,		/* its result is in the cache */
	CACHE_FLIGHT_UNPUBLISHED,	/* computed, but it could not be stored */
	CACHE_FLIGHT_FAILED,		/* error, cancel or exit: someone else computes */
	CACHE_FLIGHT_TIMED_OUT		/* (waiter only) harden.cache_wait_timeout passed */
} CacheFlightOutcome;

typedef struct CacheFlightTicket
{
	int			slot;
	uint64		seq;
} CacheFlightTicket;

extern Size cache_flight_shmem_size(void);
extern void cache_flight_shmem_startup(void);
extern CacheFlight cache_flight_begin(const char *key, int keylen, uint64 fingerprint,
									  CacheFlightTicket *t);
extern CacheFlightOutcome cache_flight_wait(const CacheFlightTicket *t, TimestampTz deadline);
extern void cache_flight_end(const CacheFlightTicket *t, CacheFlightOutcome outcome);
extern CacheFlight cache_flight_begin_lease(const char *key, int keylen, uint64 fingerprint,
											TimestampTz expires_at, uint64 since,
											CacheFlightTicket *t);
extern int64 cache_flight_token(const CacheFlightTicket *t);
extern bool cache_flight_lease_live(int64 token, const char *key, int keylen,
									uint64 fingerprint, uint64 *since);
extern void cache_flight_end_lease(int64 token, const char *key, int keylen,
								   uint64 fingerprint, CacheFlightOutcome outcome);

/* The fingerprint of a lease's registration (query fingerprints are hashes). */
#define CACHE_LEASE_FINGERPRINT	UINT64CONST(0x1ea5e1ea5e1ea5e1)

/* cache.c (SQL-callable functions; cache_query.c uses these helpers) */
extern void cache_sql_define_gucs(bool preloading);
extern const char *cache_arg_key(FunctionCallInfo fcinfo, int argno, int *len);
extern bool cache_value_fits(Size valuelen);
extern void cache_query_item_expiry(CacheItem *item, const char *userkey, int userlen,
									const Interval *ttl);

/* cache_xact.c: the transaction layer (pending writes, publish at commit) */
extern bool cache_xact_deferred(void);
extern bool cache_xact_lookup(const char *key, int keylen, Oid role, CacheHit *hit,
							  bool want_value);
extern int64 cache_xact_write(CachePendingKind kind, const char *name, int namelen,
							  Oid role, const CacheItem *item);

/*
 * cache_apply.c: the apply layer.  Each function acts now, for the role it
 * is given (never the session's current user).
 */
extern bool cache_role_may_read(Oid role, Oid owner, uint8 flags);
extern bool cache_role_may_modify(Oid role, Oid owner);
extern void cache_check_may_modify(Oid role, const char *key, int keylen, Oid owner,
								   uint8 flags);
extern bool cache_tags_contain(const char *tags, int ntags, const char *tag, int taglen);
extern bool cache_apply_visible(const char *key, int keylen, Oid role, CacheHit *hit,
								bool want_value, bool with_tags);
extern bool cache_apply_set(const CacheItem *item, cache_unseen_fn unseen, void *arg);
extern bool cache_apply_lease_valid(const CacheItem *item);
extern bool cache_apply_delete(const char *key, int keylen, Oid role);
extern int64 cache_apply_invalidate(const char *pattern, int len, Oid role);
extern int64 cache_apply_count_invalidate(const char *pattern, int len, Oid role);
extern int64 cache_apply_invalidate_tag(const char *tag, int len, Oid role);
extern int64 cache_apply_count_invalidate_tag(const char *tag, int len, Oid role);
extern int64 cache_apply_flush(bool secure_only, Oid role);
extern int64 cache_apply_count_flush(bool secure_only, Oid role);
extern int64 cache_apply_removal(CachePendingKind kind, const char *name, int namelen, Oid role);

/* WAL replay (no catalog there): the roles whose privileges a role had. */
typedef struct CacheRolePrivs
{
	Oid			role;
	int			n;				/* -1: every role (a superuser) */
	const Oid  *privs;			/* role itself first */
} CacheRolePrivs;
extern void cache_apply_replay(const CacheRolePrivs *sets, int nsets);

/* cache_store.c */
extern int	harden_cache_memory_kb;
extern void cache_define_gucs(bool preloading);
extern Size cache_shmem_size(void);
extern void cache_shmem_startup(void);

extern Size cache_memory_limit(void);
extern bool cache_store_get(const char *key, int keylen, CacheHit *hit);
extern bool cache_store_peek(const char *key, int keylen, CacheHit *meta);
extern bool cache_store_peek_tags(const char *key, int keylen, CacheHit *meta);
extern bool cache_store_put(const CacheItem *item, Oid expected_owner);
extern bool cache_store_delete(const char *key, int keylen, Oid expected_owner,
							   CacheRemoval why);
extern uint64 cache_store_scan(cache_scan_fn fn, void *arg, bool exclusive,
							   CacheRemoval why);
extern uint64 cache_store_sweep(bool force);
extern void cache_store_totals(uint64 *entries, uint64 *bytes_used);
extern bool cache_store_has_shadows(void);
extern void cache_store_use_database(Oid dboid);
extern uint64 cache_store_scan_all(cache_scan_fn fn, void *arg);
extern bool cache_store_load(Oid dboid, const CacheItem *item, uint64 since);

/* cache_persist.c: the dump file */
extern void cache_persist_define_gucs(bool preloading);
extern void cache_persist_register(void);
/* cache_warm.c: registered queries kept warm */
extern int64 cache_warm_run(bool missing_only);
extern Size cache_persist_shmem_size(void);
extern void cache_persist_shmem_startup(void);

/* Called for each member of a tag, under the tag index's lock: must not block or fail. */
typedef void (*cache_tag_member_fn) (const char *key, int keylen, Oid owner, void *arg);
extern bool cache_store_tag_members(const char *tag, int len, cache_tag_member_fn fn, void *arg);
extern bool cache_store_delete_tagged(const char *key, int keylen, Oid expected_owner,
									  const char *tag, int taglen);
extern void cache_store_mark(const CacheMark *marks, int nmarks, TransactionId xid);
extern uint64 cache_store_lease_begin(TimestampTz expires_at);
extern void cache_store_inval_log(const CacheMark *m);
extern bool cache_store_invalidated_since(uint64 since, const CacheItem *item);
extern bool cache_store_marked(const CacheItem *item, cache_unseen_fn unseen, void *arg);

#endif							/* PG_HARDEN_CACHE_H */
