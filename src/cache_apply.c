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

#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/acl.h"

#include "pg_harden.h"
#include "cache.h"

/* ---- roles ---- */

bool
cache_role_may_read(Oid role, Oid owner, uint8 flags)
{
	return owner == role || (flags & CACHE_FLAG_PUBLIC) || has_privs_of_role(role, owner);
}

bool
cache_role_may_modify(Oid role, Oid owner)
{
	return owner == role || has_privs_of_role(role, owner);
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

/* Glob match: '*' any run of bytes, '?' one byte; iterative backtracking. */
bool
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

/* ---- lookups ---- */

/*
 * The live entry under a stored key, whoever may read it: the basis of
 * write privilege checks and of the transaction layer's view.
 */
bool
cache_apply_peek(const char *key, int keylen, CacheHit *meta, bool with_tags)
{
	return with_tags ? cache_store_peek_tags(key, keylen, meta) :
		cache_store_peek(key, keylen, meta);
}

/* The entry under a key that role may read; its value copied when want_value. */
bool
cache_apply_lookup(const char *key, int keylen, Oid role, CacheHit *hit, bool want_value)
{
	bool		found = want_value ? cache_store_get(key, keylen, hit) :
		cache_store_peek(key, keylen, hit);

	return found && cache_role_may_read(role, hit->owner, hit->flags);
}

/* ---- writes ---- */

/* Store an entry now, as item->owner. */
void
cache_apply_set(const CacheItem *item)
{
	for (int attempt = 0; attempt < 8; attempt++)
	{
		CacheHit	meta;
		Oid			expected = InvalidOid;

		if (cache_store_peek(item->key, item->keylen, &meta))
		{
			cache_check_may_modify(item->owner, item->key, item->keylen, meta.owner, meta.flags);
			expected = meta.owner;
		}
		if (cache_store_put(item, expected))
		{
			harden_count(HC_CACHE_SETS, 1);
			return;
		}
	}
	report_contention(item->key, item->keylen);
}

/* Delete one entry now, as role; true if it existed. */
bool
cache_apply_delete(const char *key, int keylen, Oid role)
{
	for (int attempt = 0; attempt < 8; attempt++)
	{
		CacheHit	meta;

		if (!cache_store_peek(key, keylen, &meta))
			return false;
		/* An entry the caller cannot even read is, to it, not there. */
		if (!cache_role_may_read(role, meta.owner, meta.flags))
			return false;
		cache_check_may_modify(role, key, keylen, meta.owner, meta.flags);
		if (cache_store_delete(key, keylen, meta.owner, CACHE_REMOVED_DELETE))
			return true;
	}
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
	List	   *found;			/* CacheEntryInfo copies: key and owner */
} TagArg;

static CacheScanAction
collect_tagged(const CacheEntryInfo *e, void *arg)
{
	TagArg	   *ta = arg;
	CacheEntryInfo *copy;

	if (!cache_tags_contain(e->tags, e->ntags, ta->tag, ta->len))
		return CACHE_SCAN_KEEP;
	copy = palloc(sizeof(CacheEntryInfo));
	*copy = *e;
	copy->key = pnstrdup(e->stored_key, e->stored_keylen);
	copy->keylen = e->stored_keylen;
	copy->tags = NULL;
	ta->found = lappend(ta->found, copy);
	return CACHE_SCAN_KEEP;
}

/*
 * The tagged entries role may modify, collected under the store's locks;
 * privileges are checked outside them.  delete: remove them too.
 */
static int64
tag_pass(const char *tag, int len, Oid role, bool delete)
{
	TagArg		ta = {tag, len, NIL};
	ListCell   *lc;
	int64		n = 0;

	cache_store_scan(collect_tagged, &ta, false, CACHE_REMOVED_INVALIDATE);
	foreach(lc, ta.found)
	{
		CacheEntryInfo *e = lfirst(lc);

		if (!cache_role_may_modify(role, e->owner))
			continue;
		if (!delete ||
			cache_store_delete(e->key, e->keylen, e->owner, CACHE_REMOVED_INVALIDATE))
			n++;
	}
	return n;
}

/* Delete the tagged entries role may modify, now; returns how many. */
int64
cache_apply_invalidate_tag(const char *tag, int len, Oid role)
{
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
	return (int64) cache_store_scan(secure_only ? match_secure : match_all, NULL, true,
									CACHE_REMOVED_INVALIDATE);
}

int64
cache_apply_count_flush(bool secure_only, Oid role)
{
	return count_matches(secure_only ? match_secure : match_all, NULL);
}
