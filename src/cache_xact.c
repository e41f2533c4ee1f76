/*
 * cache_xact.c
 *	  Publish on commit: cache writes made inside a transaction block are
 *	  kept in the backend and applied to the shared store at commit.
 *
 * Each write is an operation in a list, in call order, tagged with the
 * subtransaction that made it: a rolled-back savepoint drops its
 * operations, an abort drops them all, and commit replays them.  The
 * writing session reads through the list (the last operation that touches
 * a key decides), so it sees its own pending writes.
 *
 * Operations are applied at PRE_COMMIT, where an error (such as another
 * role having taken a key in the meantime) still aborts the transaction
 * cleanly; after commit nothing may fail.
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "pg_harden.h"
#include "cache.h"

typedef struct PendingOp
{
	CachePendingKind kind;
	SubTransactionId subid;
	Oid			role;			/* who made the call */
	char	   *name;			/* key, pattern or tag */
	int			namelen;
	CacheItem	item;			/* CACHE_PENDING_SET: a deep copy */
} PendingOp;

/* Lives in TopTransactionContext, so an abort frees it with the rest. */
static List *pending = NIL;
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

static PendingOp *
new_op(CachePendingKind kind, const char *name, int namelen, Oid role)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	PendingOp  *op = palloc0(sizeof(PendingOp));

	if (!callbacks_registered)
	{
		RegisterXactCallback(cache_xact_callback, NULL);
		RegisterSubXactCallback(cache_subxact_callback, NULL);
		callbacks_registered = true;
	}
	op->kind = kind;
	op->subid = GetCurrentSubTransactionId();
	op->role = role;
	op->name = name ? pnstrdup(name, namelen) : NULL;
	op->namelen = namelen;
	pending = lappend(pending, op);
	MemoryContextSwitchTo(old);
	return op;
}

static void
add_set(const CacheItem *item)
{
	PendingOp  *op = new_op(CACHE_PENDING_SET, item->key, item->keylen, item->owner);
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	char	   *value = palloc(Max(item->valuelen, 1));

	memcpy(value, item->value, item->valuelen);
	op->item = *item;
	op->item.key = op->name;
	op->item.value = value;
	if (item->tagslen > 0)
	{
		char	   *tags = palloc(item->tagslen);

		memcpy(tags, item->tags, item->tagslen);
		op->item.tags = tags;
	}
	if (item->query.ndeps > 0)
	{
		CacheDep   *deps = palloc(sizeof(CacheDep) * item->query.ndeps);

		memcpy(deps, item->query.deps, sizeof(CacheDep) * item->query.ndeps);
		op->item.query.deps = deps;
	}
	MemoryContextSwitchTo(old);
}

/* The state of a key as seen by this session before operation upto. */
typedef enum Seen
{
	SEEN_SHARED,				/* no pending operation decides: ask the store */
	SEEN_MISSING,
	SEEN_PENDING				/* a pending set: *op */
} Seen;

/*
 * Does operation op, made by op->role, remove an entry with these
 * properties?  Invalidations by tag remove only entries their caller may
 * modify, like the immediate path.
 */
static bool
op_removes(const PendingOp *op, Oid owner, uint8 flags, const char *tags, int ntags)
{
	switch (op->kind)
	{
		case CACHE_PENDING_FLUSH:
			return true;
		case CACHE_PENDING_FLUSH_SECURE:
			return (flags & CACHE_FLAG_SECURE) != 0;
		case CACHE_PENDING_TAG:
			return cache_tags_contain(tags, ntags, op->name, op->namelen) &&
				cache_role_may_modify(op->role, owner);
		default:
			return false;
	}
}

static Seen
seen_before(const char *key, int keylen, int upto, PendingOp **found)
{
	for (int i = upto - 1; i >= 0; i--)
	{
		PendingOp  *op = list_nth(pending, i);
		Seen		below;

		switch (op->kind)
		{
			case CACHE_PENDING_SET:
			case CACHE_PENDING_DELETE:
				if (op->namelen != keylen || memcmp(op->name, key, keylen) != 0)
					continue;
				if (op->kind == CACHE_PENDING_DELETE)
					return SEEN_MISSING;
				*found = op;
				return SEEN_PENDING;
			case CACHE_PENDING_INVALIDATE:
				{
					int			userlen;
					const char *userkey = cache_user_key(key, keylen, &userlen);

					if (cache_glob_match(op->name, op->namelen, userkey, userlen))
						return SEEN_MISSING;
				}
				continue;
			case CACHE_PENDING_FLUSH:
				return SEEN_MISSING;
			case CACHE_PENDING_FLUSH_SECURE:
			case CACHE_PENDING_TAG:
				/* Depends on what the entry below this operation is. */
				below = seen_before(key, keylen, i, found);
				if (below == SEEN_PENDING)
				{
					const CacheItem *it = &(*found)->item;

					return op_removes(op, it->owner, it->flags, it->tags, it->ntags) ?
						SEEN_MISSING : SEEN_PENDING;
				}
				if (below == SEEN_SHARED)
				{
					CacheHit	meta;

					if (cache_apply_peek(key, keylen, &meta, true) &&
						op_removes(op, meta.owner, meta.flags, meta.tags, meta.ntags))
						return SEEN_MISSING;
				}
				return below;
		}
	}
	return SEEN_SHARED;
}

/*
 * The entry under a key in this session's view (its pending writes, then
 * the store), whoever may read it: the basis of write privilege checks.
 * Returns false when no pending operation decides (read the store);
 * otherwise *hit_found says whether there is an entry, filled into *hit
 * (value copied when want_value).
 */
static bool
pending_lookup(const char *key, int keylen, CacheHit *hit, bool want_value,
			   bool *hit_found)
{
	PendingOp  *op = NULL;
	Seen		seen;

	if (pending == NIL)
		return false;
	seen = seen_before(key, keylen, list_length(pending), &op);
	if (seen == SEEN_SHARED)
		return false;
	*hit_found = false;
	if (seen == SEEN_MISSING)
		return true;
	if (op->item.expires_at != 0 && op->item.expires_at <= GetCurrentTimestamp())
		return true;
	/* A pending query result goes stale like a stored one. */
	if ((op->item.flags & CACHE_FLAG_QUERY) &&
		!cache_deps_current(MyDatabaseId, &op->item.query))
		return true;
	hit->type = op->item.type;
	hit->valuelen = op->item.valuelen;
	hit->owner = op->item.owner;
	hit->flags = op->item.flags;
	hit->expires_at = op->item.expires_at;
	hit->tags = (char *) op->item.tags;
	hit->fingerprint = op->item.query.fingerprint;
	hit->ndeps = op->item.query.ndeps;
	hit->deps = (CacheDep *) op->item.query.deps;
	hit->ntags = op->item.ntags;
	hit->value = NULL;
	if (want_value)
	{
		hit->value = palloc(op->item.valuelen + VARHDRSZ);
		memcpy(hit->value + VARHDRSZ, op->item.value, op->item.valuelen);
	}
	*hit_found = true;
	return true;
}

/* The entry in this session's view, whoever may read it. */
static bool
own_view_peek(const char *key, int keylen, CacheHit *meta)
{
	bool		found;

	if (pending_lookup(key, keylen, meta, false, &found))
		return found;
	return cache_apply_peek(key, keylen, meta, false);
}

/*
 * This session's view of a key for role: its own pending writes first,
 * then the store; entries role may not read are missing.
 */
bool
cache_xact_lookup(const char *key, int keylen, Oid role, CacheHit *hit, bool want_value)
{
	bool		found;

	if (!pending_lookup(key, keylen, hit, want_value, &found))
		return cache_apply_lookup(key, keylen, role, hit, want_value);
	return found && cache_role_may_read(role, hit->owner, hit->flags);
}

/*
 * A write by role: applied now outside a transaction block, else kept
 * until commit.  name is the key (SET, DELETE), the pattern or the tag;
 * item the entry of a SET.  Returns what the SQL function reports: for
 * DELETE whether the entry existed (in this session's view), for
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
				cache_apply_set(item);
				return 1;
			}
			/* Fail now rather than at commit when the key is already taken. */
			if (own_view_peek(item->key, item->keylen, &meta))
				cache_check_may_modify(role, item->key, item->keylen, meta.owner, meta.flags);
			add_set(item);
			return 1;
		case CACHE_PENDING_DELETE:
			if (!deferred)
				return cache_apply_delete(name, namelen, role) ? 1 : 0;
			existed = own_view_peek(name, namelen, &meta);
			if (existed)
			{
				/* An entry the caller cannot even read is, to it, not there. */
				if (!cache_role_may_read(role, meta.owner, meta.flags))
					return 0;
				cache_check_may_modify(role, name, namelen, meta.owner, meta.flags);
			}
			new_op(kind, name, namelen, role);
			return existed ? 1 : 0;
		case CACHE_PENDING_INVALIDATE:
			if (!deferred)
				return cache_apply_invalidate(name, namelen, role);
			new_op(kind, name, namelen, role);
			return cache_apply_count_invalidate(name, namelen, role);
		case CACHE_PENDING_TAG:
			if (!deferred)
				return cache_apply_invalidate_tag(name, namelen, role);
			new_op(kind, name, namelen, role);
			return cache_apply_count_invalidate_tag(name, namelen, role);
		case CACHE_PENDING_FLUSH:
		case CACHE_PENDING_FLUSH_SECURE:
			{
				bool		secure_only = kind == CACHE_PENDING_FLUSH_SECURE;

				if (!deferred)
					return cache_apply_flush(secure_only, role);
				new_op(kind, NULL, 0, role);
				return cache_apply_count_flush(secure_only, role);
			}
	}
	return 0;
}

/* Replay the pending operations, in order, against the store. */
static void
apply_pending(void)
{
	ListCell   *lc;

	foreach(lc, pending)
	{
		PendingOp  *op = lfirst(lc);

		switch (op->kind)
		{
			case CACHE_PENDING_SET:
				/* A stale query result must not replace a fresh one. */
				if (!(op->item.flags & CACHE_FLAG_QUERY) ||
					cache_deps_current(MyDatabaseId, &op->item.query))
					cache_apply_set(&op->item);
				break;
			case CACHE_PENDING_DELETE:
				cache_apply_delete(op->name, op->namelen, op->role);
				break;
			case CACHE_PENDING_INVALIDATE:
				cache_apply_invalidate(op->name, op->namelen, op->role);
				break;
			case CACHE_PENDING_TAG:
				cache_apply_invalidate_tag(op->name, op->namelen, op->role);
				break;
			case CACHE_PENDING_FLUSH:
				cache_apply_flush(false, op->role);
				break;
			case CACHE_PENDING_FLUSH_SECURE:
				cache_apply_flush(true, op->role);
				break;
		}
	}
}

static void
cache_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (pending != NIL)
				apply_pending();
			pending = NIL;
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (pending != NIL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that has pending pg_harden cache writes"),
						 errhint("Make cache writes outside of two-phase transactions.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			pending = NIL;
			break;
		default:
			break;
	}
}

/*
 * A savepoint rolled back drops its operations; one released hands them to
 * its parent.
 */
static void
cache_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	if (pending == NIL)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		foreach(lc, pending)
		{
			PendingOp  *op = lfirst(lc);

			if (op->subid == mySubid)
				pending = foreach_delete_current(pending, lc);
		}
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		foreach(lc, pending)
		{
			PendingOp  *op = lfirst(lc);

			if (op->subid == mySubid)
				op->subid = parentSubid;
		}
	}
}
