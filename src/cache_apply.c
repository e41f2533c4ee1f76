/*
 * cache_apply.c
 *	  The cache's apply layer: one operation, applied now, on behalf of a
 *	  given role.
 *
 * Every privilege decision about an entry is made here, outside the
 * store's locks, and the store is told which owner the decision was about
 * so a concurrent change is noticed.  The acting role is always an argument,
 * never the session's current user: the SQL functions pass GetUserId(), a
 * protocol endpoint passes the role it authenticated.
 *
 * Callers: the transaction layer (cache_xact.c).  Callees: the store.
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/acl.h"

#include "pg_harden.h"
#include "cache.h"

/* ---- roles ---- */

/*
 * While replaying a WAL record (cache_wal.c), role checks use the
 * privileges the record carries, and an operation the role may not apply
 * to an entry skips it instead of raising an error.
 */
static const CacheRolePrivs *replay_sets = NULL;
static int	replay_nsets = 0;

void
cache_apply_replay(const CacheRolePrivs *sets, int nsets)
{
	replay_sets = sets;
	replay_nsets = sets ? nsets : 0;
}

static bool
replay_has_privs(Oid role, Oid owner)
{
	for (int i = 0; i < replay_nsets; i++)
	{
		const CacheRolePrivs *rp = &replay_sets[i];

		if (rp->role != role)
			continue;
		if (rp->n < 0)
			return true;
		for (int j = 0; j < rp->n; j++)
			if (rp->privs[j] == owner)
				return true;
		return false;
	}
	return false;
}

/*
 * Role membership is read from the catalog, which needs a transaction: a
 * caller outside one (the Redis endpoint between batches) gets an error,
 * not a crash in the catalog cache.
 */
static bool
role_has_privs(Oid role, Oid owner)
{
	if (replay_sets != NULL)
		return replay_has_privs(role, owner);
	if (!IsTransactionState())
		elog(ERROR, "pg_harden: cache role check outside a transaction");
	return has_privs_of_role(role, owner);
}

bool
cache_role_may_read(Oid role, Oid owner, uint8 flags)
{
	return owner == role || (flags & CACHE_FLAG_PUBLIC) || role_has_privs(role, owner);
}

bool
cache_role_may_modify(Oid role, Oid owner)
{
	return owner == role || role_has_privs(role, owner);
}

/*
 * The writer's name is shown only to a caller that may read the entry (a
 * public one): others learn that the key is taken, nothing more.
 */
void
cache_check_may_modify(Oid role, const char *key, int keylen, Oid owner, uint8 flags)
{
	char	   *rolname;
	int			userlen;
	const char *userkey;

	if (cache_role_may_modify(role, owner))
		return;
	userkey = cache_user_key(key, keylen, &userlen);
	rolname = (flags & CACHE_FLAG_PUBLIC) ? GetUserNameFromId(owner, true) : NULL;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for cache key \"%.*s\"", userlen, userkey),
			 rolname ? errdetail("The entry was written by role \"%s\".", rolname) :
			 errdetail("The key holds an entry of another role."),
			 errhint("Only roles with the privileges of the writing role may replace or delete it; use another key.")));
}

/* A concurrent writer kept changing the entry's owner under us. */
static void
report_contention(const char *key, int keylen)
{
	int			userlen;
	const char *userkey = cache_user_key(key, keylen, &userlen);

	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("cache key \"%.*s\" is being changed concurrently", userlen, userkey),
			 errhint("Retry the operation.")));
}

/* ---- matching ---- */

/* Whether ntags NUL-separated tags include tag. */
bool
cache_tags_contain(const char *tags, int ntags, const char *tag, int taglen)
{
	for (int i = 0; i < ntags; i++)
	{
		int			len = strlen(tags);

		if (len == taglen && memcmp(tags, tag, len) == 0)
			return true;
		tags += len + 1;
	}
	return false;
}

/*
 * ---- shadows ----
 *
 * A role learns nothing about keys it may not read.  When a key holds an
 * entry the acting role may not read, the role's writes to that key go to
 * its shadow of the key instead (a stored key of its own: a mark byte and
 * its oid in front), and its reads of the key find the shadow.  To the
 * role, the key behaves exactly like a free one.  Shadows are looked for
 * only while some exist (the store counts them), so reads pay nothing
 * otherwise.  Query result keys and shadows are per role already.
 */

static inline bool
shadows_possible(const char *key, int keylen)
{
	return !cache_key_is_prefixed(key, keylen) && cache_store_has_shadows();
}

static inline bool
store_read(const char *key, int keylen, CacheHit *hit, bool want_value, bool with_tags)
{
	if (want_value)
		return cache_store_get(key, keylen, hit);
	return with_tags ? cache_store_peek_tags(key, keylen, hit) :
		cache_store_peek(key, keylen, hit);
}

/*
 * The live entry role sees under a key: the stored one if role may read
 * it, else role's shadow of it.  want_value copies the value (and counts a
 * hit), with_tags the tags.
 */
bool
cache_apply_visible(const char *key, int keylen, Oid role, CacheHit *hit,
					bool want_value, bool with_tags)
{
	char	   *skey;
	int			slen;

	if (store_read(key, keylen, hit, want_value, with_tags) &&
		cache_role_may_read(role, hit->owner, hit->flags))
		return true;
	if (!shadows_possible(key, keylen))
		return false;
	skey = cache_shadow_key(key, keylen, role, &slen);
	return store_read(skey, slen, hit, want_value, with_tags);
}

/* ---- writes ---- */

/* Log an invalidation for live leases (cache_store_inval_log), before it deletes. */
static void
log_inval(CacheMarkKind kind, const char *s, int len)
{
	CacheMark	m = {0};

	m.kind = kind;
	if (kind == CACHE_MARK_KEY)
	{
		int			userlen;
		const char *userkey = cache_user_key(s, len, &userlen);

		m.hash = cache_mark_hash(userkey, userlen);
	}
	else if (kind == CACHE_MARK_TAG)
		m.hash = cache_mark_hash(s, len);
	else if (kind == CACHE_MARK_PATTERN)
	{
		m.text = s;
		m.len = len;
	}
	cache_store_inval_log(&m);
}

/*
 * After a set: if an invalidation marker matches the entry and belongs to a
 * transaction the setter did not see (unseen), the value may have been
 * read before that transaction's writes: remove it again.
 */
static void
recheck_markers(const CacheItem *stored, cache_unseen_fn unseen, void *arg)
{
	if (unseen != NULL && cache_store_marked(stored, unseen, arg))
		cache_store_delete(stored->key, stored->keylen, stored->owner, CACHE_REMOVED_INVALIDATE);
}

/* A leased set: whether nothing invalidated its entry since the lease. */
bool
cache_apply_lease_valid(const CacheItem *item)
{
	return !item->leased || !cache_store_invalidated_since(item->lease_since, item);
}

/* After a leased set: undo it if an invalidation was logged in between. */
static bool
recheck_lease(const CacheItem *stored)
{
	if (cache_apply_lease_valid(stored))
		return true;
	cache_store_delete(stored->key, stored->keylen, stored->owner, CACHE_REMOVED_INVALIDATE);
	return false;
}

/*
 * Store item under role's shadow of its key; false on a concurrent change
 * (try again), else *stored says whether the entry stayed.
 */
static bool
put_shadow(const CacheItem *item, cache_unseen_fn unseen, void *arg, bool *stored)
{
	CacheItem	shadow = *item;
	CacheHit	meta;

	shadow.key = cache_shadow_key(item->key, item->keylen, item->owner, &shadow.keylen);
	if (!cache_store_put(&shadow, cache_store_peek(shadow.key, shadow.keylen, &meta) ?
						 meta.owner : InvalidOid))
		return false;
	recheck_markers(&shadow, unseen, arg);
	*stored = recheck_lease(&shadow);
	return true;
}

/*
 * Store an entry now, as item->owner; then, with unseen, undo it if a
 * concurrent invalidation it did not see matches it (see recheck_markers).
 * A leased set stores only if nothing invalidated the entry since its lease
 * was issued; returns whether the entry was stored.
 */
bool
cache_apply_set(const CacheItem *item, cache_unseen_fn unseen, void *arg)
{
	bool		prefixed = cache_key_is_prefixed(item->key, item->keylen);

	if (!cache_apply_lease_valid(item))
		return false;

	for (int attempt = 0; attempt < 8; attempt++)
	{
		CacheHit	meta;
		Oid			expected = InvalidOid;

		if (cache_store_peek(item->key, item->keylen, &meta))
		{
			if (!prefixed && !cache_role_may_read(item->owner, meta.owner, meta.flags))
			{
				bool		stored;

				if (!put_shadow(item, unseen, arg, &stored))
					continue;
				harden_count(HC_CACHE_SETS, 1);
				return stored;
			}
			cache_check_may_modify(item->owner, item->key, item->keylen, meta.owner, meta.flags);
			expected = meta.owner;
		}
		if (cache_store_put(item, expected))
		{
			/* A shadow of the key the role may have is superseded. */
			if (shadows_possible(item->key, item->keylen))
			{
				int			slen;
				char	   *skey = cache_shadow_key(item->key, item->keylen, item->owner, &slen);

				cache_store_delete(skey, slen, item->owner, CACHE_REMOVED_DELETE);
			}
			recheck_markers(item, unseen, arg);
			harden_count(HC_CACHE_SETS, 1);
			return recheck_lease(item);
		}
	}
	report_contention(item->key, item->keylen);
	return false;
}

/*
 * Delete the entry role sees under a key now; true if it existed.  An entry
 * role may not read is, to it, not there: its shadow is what it deletes.
 */
bool
cache_apply_delete(const char *key, int keylen, Oid role)
{
	log_inval(CACHE_MARK_KEY, key, keylen);
	for (int attempt = 0; attempt < 8; attempt++)
	{
		CacheHit	meta;

		if (cache_store_peek(key, keylen, &meta) &&
			cache_role_may_read(role, meta.owner, meta.flags))
		{
			if (replay_sets != NULL && !cache_role_may_modify(role, meta.owner))
				return false;
			cache_check_may_modify(role, key, keylen, meta.owner, meta.flags);
			if (cache_store_delete(key, keylen, meta.owner, CACHE_REMOVED_DELETE))
				return true;
			continue;
		}
		if (shadows_possible(key, keylen))
		{
			int			slen;
			char	   *skey = cache_shadow_key(key, keylen, role, &slen);

			return cache_store_delete(skey, slen, role, CACHE_REMOVED_DELETE);
		}
		return false;
	}
	if (replay_sets == NULL)
		report_contention(key, keylen);
	return false;
}

/* ---- invalidation ---- */

/* Counting: how many live entries an invalidation would remove now. */
typedef struct CountArg
{
	cache_scan_fn match;
	void	   *arg;
	int64		n;
} CountArg;

static CacheScanAction
count_one(const CacheEntryInfo *e, void *arg)
{
	CountArg   *ca = arg;

	if (ca->match(e, ca->arg) == CACHE_SCAN_DELETE)
		ca->n++;
	return CACHE_SCAN_KEEP;
}

static int64
count_matches(cache_scan_fn match, void *arg)
{
	CountArg	ca = {match, arg, 0};

	cache_store_scan(count_one, &ca, false, CACHE_REMOVED_INVALIDATE);
	return ca.n;
}

typedef struct PatternArg
{
	const char *pattern;
	int			len;
} PatternArg;

static CacheScanAction
match_pattern(const CacheEntryInfo *e, void *arg)
{
	PatternArg *pa = arg;

	return cache_glob_match(pa->pattern, pa->len, e->key, e->keylen) ?
		CACHE_SCAN_DELETE : CACHE_SCAN_KEEP;
}

/*
 * Delete every entry of this database whose key matches a glob, whoever
 * wrote it: the SQL function is an administrator's (no EXECUTE for PUBLIC),
 * and a caller acting for someone else checks that privilege itself.
 */
int64
cache_apply_invalidate(const char *pattern, int len, Oid role)
{
	PatternArg	pa = {pattern, len};

	log_inval(CACHE_MARK_PATTERN, pattern, len);
	return (int64) cache_store_scan(match_pattern, &pa, true, CACHE_REMOVED_INVALIDATE);
}

int64
cache_apply_count_invalidate(const char *pattern, int len, Oid role)
{
	PatternArg	pa = {pattern, len};

	return count_matches(match_pattern, &pa);
}

typedef struct TagArg
{
	const char *tag;
	int			len;
	List	   *found;			/* CacheEntryInfo copies: stored key and owner */
} TagArg;

static void
add_found(TagArg *ta, const char *key, int keylen, Oid owner)
{
	CacheEntryInfo *copy = palloc0(sizeof(CacheEntryInfo));

	copy->key = pnstrdup(key, keylen);
	copy->keylen = keylen;
	copy->owner = owner;
	ta->found = lappend(ta->found, copy);
}

/* Under the tag index's lock: a copy, nothing else. */
static void
collect_member(const char *key, int keylen, Oid owner, void *arg)
{
	add_found((TagArg *) arg, key, keylen, owner);
}

static CacheScanAction
collect_tagged(const CacheEntryInfo *e, void *arg)
{
	TagArg	   *ta = arg;

	if (cache_tags_contain(e->tags, e->ntags, ta->tag, ta->len))
		add_found(ta, e->stored_key, e->stored_keylen, e->owner);
	return CACHE_SCAN_KEEP;
}

/*
 * The tagged entries role may modify: found through the tag index (a scan
 * of the whole cache only while it is incomplete), under the store's locks;
 * privileges are checked outside them.  delete: remove them too, each only
 * if it still carries the tag.
 */
static int64
tag_pass(const char *tag, int len, Oid role, bool delete)
{
	TagArg		ta = {tag, len, NIL};
	ListCell   *lc;
	int64		n = 0;

	if (!cache_store_tag_members(tag, len, collect_member, &ta))
		cache_store_scan(collect_tagged, &ta, false, CACHE_REMOVED_INVALIDATE);
	foreach(lc, ta.found)
	{
		CacheEntryInfo *e = lfirst(lc);

		if (!cache_role_may_modify(role, e->owner))
			continue;
		if (!delete || cache_store_delete_tagged(e->key, e->keylen, e->owner, tag, len))
			n++;
	}
	return n;
}

/* Delete the tagged entries role may modify, now; returns how many. */
int64
cache_apply_invalidate_tag(const char *tag, int len, Oid role)
{
	log_inval(CACHE_MARK_TAG, tag, len);
	return tag_pass(tag, len, role, true);
}

int64
cache_apply_count_invalidate_tag(const char *tag, int len, Oid role)
{
	return tag_pass(tag, len, role, false);
}

static CacheScanAction
match_all(const CacheEntryInfo *e, void *arg)
{
	return CACHE_SCAN_DELETE;
}

static CacheScanAction
match_secure(const CacheEntryInfo *e, void *arg)
{
	return (e->flags & CACHE_FLAG_SECURE) ? CACHE_SCAN_DELETE : CACHE_SCAN_KEEP;
}

/* Delete every (secure) entry of this database; an administrator's call. */
int64
cache_apply_flush(bool secure_only, Oid role)
{
	log_inval(secure_only ? CACHE_MARK_FLUSH_SECURE : CACHE_MARK_FLUSH, NULL, 0);
	return (int64) cache_store_scan(secure_only ? match_secure : match_all, NULL, true,
									CACHE_REMOVED_INVALIDATE);
}

int64
cache_apply_count_flush(bool secure_only, Oid role)
{
	return count_matches(secure_only ? match_secure : match_all, NULL);
}

/*
 * A removing operation by kind (a set's removes the entry role sees under
 * its key): for the operations replayed from the WAL and those applied at
 * commit.
 */
int64
cache_apply_removal(CachePendingKind kind, const char *name, int namelen, Oid role)
{
	switch (kind)
	{
		case CACHE_PENDING_SET:
		case CACHE_PENDING_DELETE:
			return cache_apply_delete(name, namelen, role) ? 1 : 0;
		case CACHE_PENDING_INVALIDATE:
			return cache_apply_invalidate(name, namelen, role);
		case CACHE_PENDING_TAG:
			return cache_apply_invalidate_tag(name, namelen, role);
		case CACHE_PENDING_FLUSH:
		case CACHE_PENDING_FLUSH_SECURE:
			return cache_apply_flush(kind == CACHE_PENDING_FLUSH_SECURE, role);
	}
	return 0;
}
