/*
 * cache_xact.c
 *	  The cache's transaction layer: publish on commit.  Cache writes made
 *	  inside a transaction block are kept in the backend and applied to the
 *	  shared store at commit, through the apply layer.
 *
 * Each write is an operation in a log, in call order, numbered by its
 * position and tagged with the subtransaction that made it.  Lookups never
 * walk the log: a hash by key finds the last SET or DELETE of a key, and
 * the operations that remove many entries (by tag, pattern or flush) are
 * indexed by tag and role, by pattern, and by the position of the last
 * flush.  A key's pending state is its last key operation, unless a
 * removing operation that comes after it matches: constant time per
 * operation, plus the distinct patterns when there are any.
 *
 * A rolled-back savepoint drops its operations: those at the end of the log
 * made by it or by its (released) children, which are exactly the ones
 * whose subtransaction id is at least its own.  Every index entry remembers
 * the operation it replaced, so dropping undoes it.  An abort drops all.
 *
 * At PRE_COMMIT, where an error (such as another role having taken a key in
 * the meantime) still aborts the transaction cleanly, each distinct
 * removing operation is applied once, then each key's last operation;
 * after commit nothing may fail.
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/procarray.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "pg_harden.h"
#include "cache.h"

/* A name (key, tag or pattern) with the role it is indexed under. */
typedef struct NameRef
{
	const char *s;				/* the bytes of one of the log's operations */
	int			len;
	Oid			role;			/* tags only; InvalidOid otherwise */
} NameRef;

typedef struct NameSlot
{
	NameRef		name;
	uint32		hash;
	char		status;
	int64		latest;			/* last operation on it; patterns: its place in the list */
} NameSlot;

/*
 * The count a deferred cache_invalidate_tag() reports, memoized per
 * statement in a small direct-mapped table, so that a statement calling it
 * for many rows scans the store once per tag.
 */
#define TAG_MEMO_SIZE 64

typedef struct TagCountMemo
{
	const char *tag;			/* NULL: unused */
	int			len;
	Oid			role;
	TimestampTz stmt;
	CommandId	cid;
	int64		count;
} TagCountMemo;

static inline uint32
name_hash(NameRef n)
{
	return hash_combine(hash_bytes((const unsigned char *) n.s, n.len), murmurhash32(n.role));
}

#define SH_PREFIX namemap
#define SH_ELEMENT_TYPE NameSlot
#define SH_KEY_TYPE NameRef
#define SH_KEY name
#define SH_HASH_KEY(tb, key) name_hash(key)
#define SH_EQUAL(tb, a, b) ((a).len == (b).len && (a).role == (b).role && \
							memcmp((a).s, (b).s, (a).len) == 0)
#define SH_STORE_HASH
#define SH_GET_HASH(tb, a) ((a)->hash)
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

typedef struct PendingOp
{
	CachePendingKind kind;
	SubTransactionId subid;
	Oid			role;			/* who made the call */
	char	   *name;			/* key, pattern or tag */
	int			namelen;
	CacheItem  *item;			/* CACHE_PENDING_SET: a deep copy */
	int64		prev_same;		/* the index entry's previous operation, or -1 */
	int64		prev_global;	/* removing operations: the previous one, or -1 */
} PendingOp;

/* A pattern pending removal, and the last operation that named it. */
typedef struct PendingPattern
{
	const char *s;
	int			len;
	int64		latest;
} PendingPattern;

typedef struct XactState
{
	PendingOp  *ops;
	int64		nops;
	int64		maxops;
	namemap_hash *keys;			/* key -> last SET or DELETE */
	namemap_hash *tags;			/* (tag, role) -> last invalidation */
	namemap_hash *patterns;		/* pattern -> its place in pattern_list */
	PendingPattern *pattern_list;
	int			npatterns;
	int			maxpatterns;
	Oid		   *tag_roles;		/* the roles that invalidated tags */
	int			ntag_roles;
	int			maxtag_roles;
	int64		last_flush;
	int64		last_flush_secure;
	int64		last_global;	/* last removing operation of any kind */
	TagCountMemo tag_memo[TAG_MEMO_SIZE];
} XactState;

/* Lives in TopTransactionContext, so an abort frees it with the rest. */
static XactState *xs = NULL;
static bool callbacks_registered = false;

static void cache_xact_callback(XactEvent event, void *arg);
static void cache_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
								   SubTransactionId parentSubid, void *arg);

/*
 * Whether a write made now must wait for the commit: inside a transaction
 * block, and inside any subtransaction (IsTransactionBlock() answers for the
 * current level), so a PL/pgSQL EXCEPTION block defers too.
 */
bool
cache_xact_deferred(void)
{
	return IsTransactionBlock();
}

static XactState *
state_get(void)
{
	MemoryContext old;

	if (xs != NULL)
		return xs;
	if (!callbacks_registered)
	{
		RegisterXactCallback(cache_xact_callback, NULL);
		RegisterSubXactCallback(cache_subxact_callback, NULL);
		callbacks_registered = true;
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	xs = palloc0(sizeof(XactState));
	xs->maxops = 64;
	xs->ops = palloc(sizeof(PendingOp) * xs->maxops);
	xs->keys = namemap_create(TopTransactionContext, 64, NULL);
	xs->tags = namemap_create(TopTransactionContext, 16, NULL);
	xs->patterns = namemap_create(TopTransactionContext, 16, NULL);
	xs->last_flush = xs->last_flush_secure = xs->last_global = -1;
	MemoryContextSwitchTo(old);
	return xs;
}

static inline NameRef
name_ref(const char *s, int len, Oid role)
{
	NameRef		n = {s, len, role};

	return n;
}

/* The map a kind of operation is indexed in (flushes have none). */
static namemap_hash *
map_for(CachePendingKind kind)
{
	switch (kind)
	{
		case CACHE_PENDING_SET:
		case CACHE_PENDING_DELETE:
			return xs->keys;
		case CACHE_PENDING_TAG:
			return xs->tags;
		case CACHE_PENDING_INVALIDATE:
			return xs->patterns;
		default:
			return NULL;
	}
}

static inline bool
is_global(CachePendingKind kind)
{
	return kind != CACHE_PENDING_SET && kind != CACHE_PENDING_DELETE;
}

static void
remember_tag_role(Oid role)
{
	for (int i = 0; i < xs->ntag_roles; i++)
		if (xs->tag_roles[i] == role)
			return;
	if (xs->ntag_roles == xs->maxtag_roles)
	{
		xs->maxtag_roles = Max(4, xs->maxtag_roles * 2);
		xs->tag_roles = xs->tag_roles == NULL ?
			MemoryContextAlloc(TopTransactionContext, sizeof(Oid) * xs->maxtag_roles) :
			repalloc(xs->tag_roles, sizeof(Oid) * xs->maxtag_roles);
	}
	xs->tag_roles[xs->ntag_roles++] = role;
}

/* Index operation idx; remember what it replaced. */
static void
index_op(int64 idx)
{
	PendingOp  *op = &xs->ops[idx];
	namemap_hash *map = map_for(op->kind);
	bool		found;

	op->prev_same = -1;
	op->prev_global = -1;
	if (map != NULL)
	{
		NameSlot   *slot = namemap_insert(map, name_ref(op->name, op->namelen,
												   op->kind == CACHE_PENDING_TAG ? op->role : InvalidOid),
										  &found);

		if (op->kind == CACHE_PENDING_INVALIDATE)
		{
			if (!found)
			{
				if (xs->npatterns == xs->maxpatterns)
				{
					xs->maxpatterns = Max(8, xs->maxpatterns * 2);
					xs->pattern_list = xs->pattern_list == NULL ?
						MemoryContextAlloc(TopTransactionContext,
										   sizeof(PendingPattern) * xs->maxpatterns) :
						repalloc(xs->pattern_list, sizeof(PendingPattern) * xs->maxpatterns);
				}
				slot->latest = xs->npatterns;
				xs->pattern_list[xs->npatterns].s = op->name;
				xs->pattern_list[xs->npatterns].len = op->namelen;
				xs->pattern_list[xs->npatterns].latest = idx;
				xs->npatterns++;
			}
			else
			{
				op->prev_same = xs->pattern_list[slot->latest].latest;
				xs->pattern_list[slot->latest].latest = idx;
			}
		}
		else
		{
			if (found)
				op->prev_same = slot->latest;
			slot->latest = idx;
		}
	}
	if (op->kind == CACHE_PENDING_FLUSH)
	{
		op->prev_same = xs->last_flush;
		xs->last_flush = idx;
	}
	else if (op->kind == CACHE_PENDING_FLUSH_SECURE)
	{
		op->prev_same = xs->last_flush_secure;
		xs->last_flush_secure = idx;
	}
	if (op->kind == CACHE_PENDING_TAG)
		remember_tag_role(op->role);
	if (is_global(op->kind))
	{
		op->prev_global = xs->last_global;
		xs->last_global = idx;
	}
}

/* Undo index_op() for the last operation of the log, and drop it. */
static void
drop_last_op(void)
{
	int64		idx = xs->nops - 1;
	PendingOp  *op = &xs->ops[idx];
	namemap_hash *map = map_for(op->kind);

	if (map != NULL)
	{
		NameRef		n = name_ref(op->name, op->namelen,
								 op->kind == CACHE_PENDING_TAG ? op->role : InvalidOid);
		NameSlot   *slot = namemap_lookup(map, n);

		Assert(slot != NULL);
		if (op->kind == CACHE_PENDING_INVALIDATE)
		{
			if (op->prev_same < 0)
			{
				/* It created the pattern's entry, the last of the list. */
				Assert(slot->latest == xs->npatterns - 1);
				xs->npatterns--;
				namemap_delete(map, n);
			}
			else
				xs->pattern_list[slot->latest].latest = op->prev_same;
		}
		else if (op->prev_same < 0)
			namemap_delete(map, n);
		else
			slot->latest = op->prev_same;
	}
	if (op->kind == CACHE_PENDING_FLUSH)
		xs->last_flush = op->prev_same;
	else if (op->kind == CACHE_PENDING_FLUSH_SECURE)
		xs->last_flush_secure = op->prev_same;
	if (is_global(op->kind))
		xs->last_global = op->prev_global;
	xs->nops--;
}

static PendingOp *
new_op(CachePendingKind kind, const char *name, int namelen, Oid role)
{
	MemoryContext old;
	PendingOp  *op;

	state_get();
	old = MemoryContextSwitchTo(TopTransactionContext);
	if (xs->nops == xs->maxops)
	{
		xs->maxops *= 2;
		xs->ops = repalloc_huge(xs->ops, sizeof(PendingOp) * xs->maxops);
	}
	op = &xs->ops[xs->nops];
	op->kind = kind;
	op->subid = GetCurrentSubTransactionId();
	op->role = role;
	op->name = name ? pnstrdup(name, namelen) : NULL;
	op->namelen = namelen;
	op->item = NULL;
	MemoryContextSwitchTo(old);
	xs->nops++;
	index_op(xs->nops - 1);
	return op;
}

static void
add_set(const CacheItem *item)
{
	PendingOp  *op = new_op(CACHE_PENDING_SET, item->key, item->keylen, item->owner);
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	CacheItem  *copy = palloc(sizeof(CacheItem));
	char	   *value = palloc(Max(item->valuelen, 1));

	memcpy(value, item->value, item->valuelen);
	*copy = *item;
	copy->key = op->name;
	copy->value = value;
	if (item->tagslen > 0)
	{
		char	   *tags = palloc(item->tagslen);

		memcpy(tags, item->tags, item->tagslen);
		copy->tags = tags;
	}
	if (item->query.ndeps > 0)
	{
		CacheDep   *deps = palloc(sizeof(CacheDep) * item->query.ndeps);

		memcpy(deps, item->query.deps, sizeof(CacheDep) * item->query.ndeps);
		copy->query.deps = deps;
	}
	op->item = copy;
	MemoryContextSwitchTo(old);
}

/*
 * Does a removing operation after position after remove an entry with
 * these properties?  Invalidations by tag remove only entries their caller
 * may modify, like the immediate path.
 */
static bool
removed_after(int64 after, const char *key, int keylen, Oid owner, uint8 flags,
			  const char *tags, int ntags)
{
	if (xs->last_global <= after)
		return false;
	if (xs->last_flush > after)
		return true;
	if ((flags & CACHE_FLAG_SECURE) && xs->last_flush_secure > after)
		return true;
	if (xs->npatterns > 0)
	{
		int			userlen;
		const char *userkey = cache_user_key(key, keylen, &userlen);

		for (int i = 0; i < xs->npatterns; i++)
		{
			PendingPattern *p = &xs->pattern_list[i];

			if (p->latest > after && cache_glob_match(p->s, p->len, userkey, userlen))
				return true;
		}
	}
	for (int t = 0; t < ntags; t++)
	{
		int			len = strlen(tags);

		for (int r = 0; r < xs->ntag_roles; r++)
		{
			NameSlot   *slot = namemap_lookup(xs->tags, name_ref(tags, len, xs->tag_roles[r]));

			if (slot != NULL && slot->latest > after &&
				cache_role_may_modify(xs->tag_roles[r], owner))
				return true;
		}
		tags += len + 1;
	}
	return false;
}

static void
fill_hit(const CacheItem *item, CacheHit *hit, bool want_value)
{
	hit->type = item->type;
	hit->valuelen = item->valuelen;
	hit->owner = item->owner;
	hit->flags = item->flags;
	hit->expires_at = item->expires_at;
	hit->tags = (char *) item->tags;
	hit->fingerprint = item->query.fingerprint;
	hit->ndeps = item->query.ndeps;
	hit->deps = (CacheDep *) item->query.deps;
	hit->ntags = item->ntags;
	hit->value = NULL;
	if (want_value)
	{
		hit->value = palloc(item->valuelen + VARHDRSZ);
		memcpy(hit->value + VARHDRSZ, item->value, item->valuelen);
	}
}

/* A pending entry that expired or went stale (a query result) is missing. */
static bool
item_live(const CacheItem *item)
{
	if (item->expires_at != 0 && item->expires_at <= GetCurrentTimestamp())
		return false;
	if ((item->flags & CACHE_FLAG_QUERY) && !cache_deps_current(MyDatabaseId, &item->query))
		return false;
	return true;
}

/*
 * The entry under a key in this session's view for role: its pending
 * operations, then what role sees in the store.  Returns false when no
 * pending operation decides (read the store); otherwise *found says
 * whether there is an entry, filled into *hit (value copied when
 * want_value).  Whether role may read a pending entry is the caller's
 * check.
 */
static bool
pending_lookup(const char *key, int keylen, Oid role, CacheHit *hit, bool want_value,
			   bool *found)
{
	NameSlot   *slot;
	int64		after = -1;
	CacheHit	meta;

	if (xs == NULL || xs->nops == 0)
		return false;
	slot = namemap_lookup(xs->keys, name_ref(key, keylen, InvalidOid));
	if (slot != NULL)
	{
		PendingOp  *op = &xs->ops[slot->latest];

		*found = false;
		if (op->kind == CACHE_PENDING_DELETE)
			return true;
		after = slot->latest;
		if (removed_after(after, key, keylen, op->item->owner, op->item->flags,
						  op->item->tags, op->item->ntags) ||
			!item_live(op->item))
			return true;
		fill_hit(op->item, hit, want_value);
		*found = true;
		return true;
	}
	if (xs->last_global < 0)
		return false;
	/* Only removing operations may decide: on the entry role sees now. */
	if (!cache_apply_visible(key, keylen, role, &meta, false, true))
		return false;
	if (!removed_after(-1, key, keylen, meta.owner, meta.flags, meta.tags, meta.ntags))
		return false;
	*found = false;
	return true;
}

/*
 * This session's view of a key for role: its own pending writes first,
 * then the store; entries role may not read are missing.
 */
bool
cache_xact_lookup(const char *key, int keylen, Oid role, CacheHit *hit, bool want_value)
{
	bool		found;

	if (!pending_lookup(key, keylen, role, hit, want_value, &found))
		return cache_apply_visible(key, keylen, role, hit, want_value, false);
	return found && cache_role_may_read(role, hit->owner, hit->flags);
}

/*
 * How many committed entries carrying a tag role may modify: counted once
 * per statement, so a statement calling it for many rows scans once.
 */
static int64
count_tag(const char *tag, int len, Oid role)
{
	TagCountMemo *m = &xs->tag_memo[name_hash(name_ref(tag, len, role)) % TAG_MEMO_SIZE];
	TimestampTz stmt = GetCurrentStatementStartTimestamp();
	CommandId	cid = GetCurrentCommandId(false);

	if (m->tag != NULL && m->len == len && m->role == role && m->stmt == stmt &&
		m->cid == cid && memcmp(m->tag, tag, len) == 0)
		return m->count;
	m->count = cache_apply_count_invalidate_tag(tag, len, role);
	/* The name of the operation just logged: it lives as long as the memo. */
	m->tag = xs->ops[xs->nops - 1].name;
	m->len = len;
	m->role = role;
	m->stmt = stmt;
	m->cid = cid;
	return m->count;
}

/*
 * ---- never early ----
 *
 * A transaction that wrote data registers what it invalidates (markers,
 * see cache_store.c) before deleting anything, so a session that read the
 * old rows and sets a value before the commit is visible removes it again.
 * A transaction without an xid changed no rows: it needs no markers.
 */

/* Whether the setter's snapshot (arg; NULL: none) did not see xid commit. */
static bool
unseen_by(TransactionId xid, void *arg)
{
	Snapshot	snap = (Snapshot) arg;

	if (TransactionIdIsCurrentTransactionId(xid))
		return false;
	if (TransactionIdIsInProgress(xid))
		return true;
	return snap != NULL && XidInMVCCSnapshot(xid, snap);
}

/*
 * A set replaces what the standbys hold under the key (their entries are
 * their own): logged as a write of the key.  Query results are not: a
 * standby's are checked against replayed generations.
 */
static void
wal_set(const CacheItem *item)
{
	if (!(item->flags & CACHE_FLAG_QUERY))
		cache_wal_inval(CACHE_PENDING_SET, item->key, item->keylen, item->owner);
}

/*
 * Before an invalidation is applied now: its marker, for a transaction
 * that may have written rows, and its WAL record for the standbys (first:
 * a standby may remove more than this server, never less).
 */
static void
announce_now(CachePendingKind kind, const char *name, int namelen, Oid role)
{
	TransactionId xid = GetTopTransactionIdIfAny();

	if (TransactionIdIsValid(xid))
	{
		CacheMark	m = cache_mark_of(kind, name, namelen);

		cache_store_mark(&m, 1, xid);
	}
	cache_wal_inval(kind, name, namelen, role);
}

/* The markers of every pending operation that removes or replaces entries. */
static void
mark_pending(void)
{
	TransactionId xid = GetTopTransactionIdIfAny();
	CacheMark  *marks;
	int			n = 0;
	int			max = 64;

	if (!TransactionIdIsValid(xid))
		return;
	marks = palloc(sizeof(CacheMark) * max);
	if (xs->last_flush >= 0)
		marks[n++] = cache_mark_of(CACHE_PENDING_FLUSH, NULL, 0);
	if (xs->last_flush_secure >= 0)
		marks[n++] = cache_mark_of(CACHE_PENDING_FLUSH_SECURE, NULL, 0);
	for (int64 i = 0; i < xs->nops; i++)
	{
		PendingOp  *op = &xs->ops[i];
		namemap_hash *map = map_for(op->kind);
		NameSlot   *slot;

		if (map == NULL)
			continue;
		slot = namemap_lookup(map, name_ref(op->name, op->namelen,
											op->kind == CACHE_PENDING_TAG ? op->role : InvalidOid));
		/* Once per key, tag or pattern. */
		if (op->kind == CACHE_PENDING_INVALIDATE ?
			xs->pattern_list[slot->latest].latest != i : slot->latest != i)
			continue;
		if (n == max)
		{
			max *= 2;
			marks = repalloc_huge(marks, sizeof(CacheMark) * max);
		}
		marks[n++] = cache_mark_of(op->kind, op->name, op->namelen);
	}
	cache_store_mark(marks, n, xid);
	pfree(marks);
}

/*
 * A write by role: applied now outside a transaction block, else kept
 * until commit.  name is the key (SET, DELETE), the pattern or the tag;
 * item the entry of a SET.  Returns what the SQL function reports: for
 * SET whether it was stored (a leased set may lose), for DELETE whether the
 * entry existed (in this session's view), for
 * invalidations how many entries they remove (deferred: how many committed
 * entries match now).
 */
int64
cache_xact_write(CachePendingKind kind, const char *name, int namelen, Oid role,
				 const CacheItem *item)
{
	bool		deferred = cache_xact_deferred();
	CacheHit	meta;
	bool		existed;

	switch (kind)
	{
		case CACHE_PENDING_SET:
			Assert(item != NULL && item->owner == role);
			if (!deferred)
			{
				bool		stored = cache_apply_set(item, unseen_by,
													 ActiveSnapshotSet() ? GetActiveSnapshot() : NULL);

				wal_set(item);
				return stored ? 1 : 0;
			}
			/* A leased set that lost already is not kept; at commit it is checked again. */
			if (!cache_apply_lease_valid(item))
				return 0;

			/*
			 * Nor a query result a marker says its snapshot is too old for
			 * (at commit no snapshot is left to ask): on a standby, a
			 * replayed write that moved a generation the result read.
			 */
			if ((item->flags & CACHE_FLAG_QUERY) && ActiveSnapshotSet() &&
				cache_store_marked(item, unseen_by, GetActiveSnapshot()))
				return 0;

			/*
			 * Fail now rather than at commit when the key is already taken:
			 * by an entry role sees, or by a pending write of this very
			 * session (under another role), which teaches it nothing.
			 */
			if (pending_lookup(item->key, item->keylen, role, &meta, false, &existed) ?
				existed : cache_apply_visible(item->key, item->keylen, role, &meta, false, false))
				cache_check_may_modify(role, item->key, item->keylen, meta.owner, meta.flags);
			add_set(item);
			return 1;
		case CACHE_PENDING_DELETE:
			if (!deferred)
			{
				announce_now(kind, name, namelen, role);
				return cache_apply_removal(kind, name, namelen, role);
			}
			if (pending_lookup(name, namelen, role, &meta, false, &existed))
			{
				/* This session's pending entry of a role it may not read stays. */
				if (existed && !cache_role_may_read(role, meta.owner, meta.flags))
					return 0;
			}
			else
				existed = cache_apply_visible(name, namelen, role, &meta, false, false);
			if (existed)
				cache_check_may_modify(role, name, namelen, meta.owner, meta.flags);
			new_op(kind, name, namelen, role);
			return existed ? 1 : 0;
		case CACHE_PENDING_INVALIDATE:
			if (!deferred)
			{
				announce_now(kind, name, namelen, role);
				return cache_apply_removal(kind, name, namelen, role);
			}
			new_op(kind, name, namelen, role);
			return cache_apply_count_invalidate(name, namelen, role);
		case CACHE_PENDING_TAG:
			if (!deferred)
			{
				announce_now(kind, name, namelen, role);
				return cache_apply_removal(kind, name, namelen, role);
			}
			new_op(kind, name, namelen, role);
			return count_tag(name, namelen, role);
		case CACHE_PENDING_FLUSH:
		case CACHE_PENDING_FLUSH_SECURE:
			{
				bool		secure_only = kind == CACHE_PENDING_FLUSH_SECURE;

				if (!deferred)
				{
					announce_now(kind, NULL, 0, role);
					return cache_apply_removal(kind, NULL, 0, role);
				}
				new_op(kind, NULL, 0, role);
				return cache_apply_count_flush(secure_only, role);
			}
	}
	return 0;
}

/* A removing operation at commit: logged for the standbys, then applied. */
static void
remove_now(CachePendingKind kind, const char *name, int namelen, Oid role)
{
	cache_wal_inval(kind, name, namelen, role);
	(void) cache_apply_removal(kind, name, namelen, role);
}

/*
 * Apply the pending operations: each distinct removing operation once (they
 * commute), then the last operation of each key, in call order.  A key
 * whose last SET a later removing operation matched ends up missing.
 */
static void
apply_pending(void)
{
	mark_pending();
	cache_wal_inval_begin();
	if (xs->last_flush >= 0)
		remove_now(CACHE_PENDING_FLUSH, NULL, 0, xs->ops[xs->last_flush].role);
	else if (xs->last_flush_secure >= 0)
		remove_now(CACHE_PENDING_FLUSH_SECURE, NULL, 0, xs->ops[xs->last_flush_secure].role);
	for (int i = 0; i < xs->npatterns; i++)
		remove_now(CACHE_PENDING_INVALIDATE, xs->pattern_list[i].s, xs->pattern_list[i].len,
				   xs->ops[xs->pattern_list[i].latest].role);
	for (int64 i = 0; i < xs->nops; i++)
	{
		PendingOp  *op = &xs->ops[i];

		if (op->kind == CACHE_PENDING_TAG &&
			namemap_lookup(xs->tags, name_ref(op->name, op->namelen, op->role))->latest == i)
			remove_now(CACHE_PENDING_TAG, op->name, op->namelen, op->role);
	}
	for (int64 i = 0; i < xs->nops; i++)
	{
		PendingOp  *op = &xs->ops[i];
		const CacheItem *it = op->item;

		if (is_global(op->kind) ||
			namemap_lookup(xs->keys, name_ref(op->name, op->namelen, InvalidOid))->latest != i)
			continue;
		if (op->kind == CACHE_PENDING_SET &&
			!removed_after(i, it->key, it->keylen, it->owner, it->flags, it->tags, it->ntags))
		{
			/* A stale query result must not replace a fresh one. */
			if (!(it->flags & CACHE_FLAG_QUERY) || cache_deps_current(MyDatabaseId, &it->query))
				(void) cache_apply_set(it, unseen_by, NULL);
			wal_set(it);
		}
		else
			remove_now(CACHE_PENDING_DELETE, op->name, op->namelen, op->role);
	}
	cache_wal_inval_end();
}

static void
cache_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (xs != NULL && xs->nops > 0)
				apply_pending();
			xs = NULL;
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (xs != NULL && xs->nops > 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that has pending pg_harden cache writes"),
						 errhint("Make cache writes outside of two-phase transactions.")));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			cache_wal_inval_cancel();
			xs = NULL;
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			xs = NULL;
			break;
		default:
			break;
	}
}

/*
 * A savepoint rolled back drops its operations: they are at the end of the
 * log, and their subtransaction ids are at least its own (ids grow, and
 * every subtransaction started since it is its descendant).  A released
 * one's operations simply stay.
 */
static void
cache_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	if (xs == NULL || event != SUBXACT_EVENT_ABORT_SUB)
		return;
	while (xs->nops > 0 && xs->ops[xs->nops - 1].subid >= mySubid)
		drop_last_op();
}
