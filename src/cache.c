/*
 * cache.c
 *	  SQL-callable cache functions: validation, TTL policies, and the
 *	  cache_stats / cache_entries views.
 *
 * Every write goes down through the transaction layer (cache_xact.c),
 * which applies it now or at commit through the apply layer
 * (cache_apply.c), where the privilege decisions are made for the role
 * passed down: here always the current user.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/int.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "pg_harden.h"
#include "cache.h"

/* Longest TTL accepted: 100 years. */
#define CACHE_MAX_TTL_US	(INT64CONST(100) * 365 * USECS_PER_DAY)
#define TTL_NONE			INT64CONST(-1)

static int	cache_max_entry_size = 1024 * 1024;
static int	cache_default_ttl_s = 0;
static int	cache_secure_max_ttl_s = 3600;
static int	cache_lease_ttl_ms = 10000;

typedef struct CachePolicy
{
	char	   *prefix;
	int			prefixlen;
	int64		default_ttl;	/* microseconds, or TTL_NONE */
	int64		max_ttl;
	bool		secure;
} CachePolicy;

/* Backend-local copy of harden.cache_policies, reloaded after a change. */
static MemoryContext policy_cxt = NULL;
static CachePolicy *policies = NULL;
static int	npolicies = 0;
static bool policies_valid = false;
static Oid	policies_relid = InvalidOid;
static bool policy_callback_registered = false;

void
cache_sql_define_gucs(bool preloading)
{
	DefineCustomIntVariable("harden.cache_max_entry_size",
							"Largest value one cache entry may hold.",
							"Larger values are rejected; the effective limit is also at most an eighth of harden.cache_memory.",
							&cache_max_entry_size,
							1024 * 1024, 16, 1024 * 1024 * 1024,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);
	DefineCustomIntVariable("harden.cache_default_ttl",
							"TTL of cache entries set without one and without a matching policy (0: no expiry).",
							NULL,
							&cache_default_ttl_s,
							0, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("harden.cache_lease_ttl",
							"How long a lease from harden.cache_lease() is held before another session may take it over.",
							NULL,
							&cache_lease_ttl_ms,
							10000, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("harden.cache_secure_max_ttl",
							"Longest TTL of a secure cache entry.",
							"Secure entries set without a TTL, or with a longer one, get this TTL.",
							&cache_secure_max_ttl_s,
							3600, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
}

/* ---- validation ---- */

static inline bool
key_char_ok(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || c == ':' || c == '_' || c == '.' || c == '-';
}

/*
 * Check a key or tag: 1..250 bytes of [A-Za-z0-9:_.-].  The DETAIL names
 * the offending position, never the whole input, which may be huge.
 */
static void
check_name(const char *what, int errcode_, const char *s, int len, bool allow_glob)
{
	if (len == 0 || len > CACHE_MAX_KEY_LEN)
		ereport(ERROR,
				(errcode(errcode_),
				 errmsg("invalid cache %s", what),
				 errdetail("A cache %s must be 1 to %d bytes long; this one is %d bytes.",
						   what, CACHE_MAX_KEY_LEN, len),
				 errhint("Hash long identifiers, for example with md5(), before using them in a %s.", what)));
	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (key_char_ok(c) || (allow_glob && (c == '*' || c == '?')))
			continue;
		ereport(ERROR,
				(errcode(errcode_),
				 errmsg("invalid cache %s", what),
				 errdetail("Byte %d (0x%02x) is not allowed; a cache %s may contain only A-Z, a-z, 0-9 and \":_.-\"%s.",
						   i + 1, c, what, allow_glob ? ", plus the wildcards * and ?" : ""),
				 errhint("Encode other characters, for example with encode(convert_to(...), 'hex').")));
	}
}

/* The key argument: a NULL key is an invalid key, not a NULL result. */
static const char *
arg_key(FunctionCallInfo fcinfo, int argno, int *len, bool pattern)
{
	text	   *t;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_CACHE_INVALID_KEY),
				 errmsg("cache %s must not be NULL", pattern ? "key pattern" : "key")));
	t = PG_GETARG_TEXT_PP(argno);
	*len = VARSIZE_ANY_EXHDR(t);
	check_name(pattern ? "key pattern" : "key", ERRCODE_HARDEN_CACHE_INVALID_KEY,
			   VARDATA_ANY(t), *len, pattern);
	return VARDATA_ANY(t);
}

const char *
cache_arg_key(FunctionCallInfo fcinfo, int argno, int *len)
{
	return arg_key(fcinfo, argno, len, false);
}

static inline Size
value_size_limit(void)
{
	return Min((Size) cache_max_entry_size, cache_memory_limit() / 8);
}

bool
cache_value_fits(Size valuelen)
{
	return valuelen <= value_size_limit();
}

static void
check_value_size(const char *key, int keylen, Size valuelen)
{
	Size		limit = value_size_limit();

	if (valuelen > limit)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_CACHE_VALUE_TOO_LARGE),
				 errmsg("cache value for key \"%.*s\" is too large", keylen, key),
				 errdetail("The value is %zu bytes; the limit is %zu bytes.", valuelen, limit),
				 errhint("Raise harden.cache_max_entry_size (at most an eighth of harden.cache_memory) or cache less.")));
}

/* Tags as NUL-separated strings; NULL means none. */
static void
arg_tags(FunctionCallInfo fcinfo, int argno, CacheItem *item)
{
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	StringInfoData buf;

	item->tags = NULL;
	item->tagslen = 0;
	item->ntags = 0;
	if (PG_ARGISNULL(argno))
		return;
	arr = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_CACHE_INVALID_TAG),
				 errmsg("cache tags must be a one-dimensional array")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n > CACHE_MAX_TAGS)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_CACHE_INVALID_TAG),
				 errmsg("too many cache tags"),
				 errdetail("%d tags were given; an entry may have at most %d.", n, CACHE_MAX_TAGS)));
	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
	{
		text	   *t;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_HARDEN_CACHE_INVALID_TAG),
					 errmsg("cache tags must not contain NULL"),
					 errdetail("Element %d is NULL.", i + 1)));
		t = DatumGetTextPP(elems[i]);
		check_name("tag", ERRCODE_HARDEN_CACHE_INVALID_TAG,
				   VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), false);
		appendBinaryStringInfo(&buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
		appendStringInfoChar(&buf, '\0');
	}
	item->tags = buf.data;
	item->tagslen = buf.len;
	item->ntags = n;
}

/* ---- TTL policies ---- */

static void
policies_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == policies_relid)
	{
		policies_valid = false;
		policies_relid = InvalidOid;
	}
}

static int64
interval_us(const Interval *iv, const char *what)
{
	int64		us,
				days;

	if (pg_mul_s64_overflow((int64) iv->month, DAYS_PER_MONTH, &days) ||
		pg_add_s64_overflow(days, (int64) iv->day, &days) ||
		pg_mul_s64_overflow(days, USECS_PER_DAY, &us) ||
		pg_add_s64_overflow(us, iv->time, &us) ||
		us <= 0 || us > CACHE_MAX_TTL_US)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a positive interval of at most 100 years", what),
				 errdetail("The %s given is %s.", what,
						   DatumGetCString(DirectFunctionCall1(interval_out,
															   IntervalPGetDatum(iv))))));
	return us;
}

static void
policies_load(void)
{
	Oid			nsp;
	int			ret;

	if (!policy_callback_registered)
	{
		CacheRegisterRelcacheCallback(policies_invalidate, (Datum) 0);
		policy_callback_registered = true;
	}
	if (policy_cxt == NULL)
		policy_cxt = AllocSetContextCreate(TopMemoryContext, "pg_harden cache policies",
										   ALLOCSET_SMALL_SIZES);
	MemoryContextReset(policy_cxt);
	policies = NULL;
	npolicies = 0;

	nsp = get_namespace_oid("harden", false);
	policies_relid = get_relname_relid("cache_policies", nsp);
	if (!OidIsValid(policies_relid))
		elog(ERROR, "harden.cache_policies is missing");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute("SELECT prefix, default_ttl, max_ttl, secure FROM harden.cache_policies",
					  true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read harden.cache_policies: %s", SPI_result_code_string(ret));

	policies = MemoryContextAllocZero(policy_cxt, sizeof(CachePolicy) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		CachePolicy *p = &policies[i];
		bool		isnull;
		Datum		d;

		p->prefix = MemoryContextStrdup(policy_cxt, SPI_getvalue(tup, desc, 1));
		p->prefixlen = strlen(p->prefix);
		d = SPI_getbinval(tup, desc, 2, &isnull);
		p->default_ttl = isnull ? TTL_NONE : interval_us(DatumGetIntervalP(d), "default_ttl");
		d = SPI_getbinval(tup, desc, 3, &isnull);
		p->max_ttl = isnull ? TTL_NONE : interval_us(DatumGetIntervalP(d), "max_ttl");
		d = SPI_getbinval(tup, desc, 4, &isnull);
		p->secure = !isnull && DatumGetBool(d);
	}
	npolicies = (int) SPI_processed;
	SPI_finish();
	policies_valid = true;
}

/* The policy with the longest prefix of key, or NULL. */
static const CachePolicy *
policy_for(const char *key, int keylen)
{
	const CachePolicy *best = NULL;

	if (!policies_valid)
		policies_load();
	for (int i = 0; i < npolicies; i++)
	{
		const CachePolicy *p = &policies[i];

		if (p->prefixlen <= keylen && memcmp(p->prefix, key, p->prefixlen) == 0 &&
			(best == NULL || p->prefixlen > best->prefixlen))
			best = p;
	}
	return best;
}

/* Statement trigger on harden.cache_policies: make every backend reload. */
PG_FUNCTION_INFO_V1(harden_cache_policies_changed);

Datum
harden_cache_policies_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("harden.cache_policies_changed() must be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	PG_RETURN_POINTER(NULL);
}

/*
 * The expiry time of a new entry: the TTL given, else the policy's default,
 * else harden.cache_default_ttl; capped by the policy's max_ttl and, for
 * secure entries, by harden.cache_secure_max_ttl.
 */
static TimestampTz
entry_expiry(int64 ttl, const CachePolicy *policy, bool secure)
{
	TimestampTz now;
	TimestampTz result;

	if (ttl == TTL_NONE && policy != NULL)
		ttl = policy->default_ttl;
	if (ttl == TTL_NONE && cache_default_ttl_s > 0)
		ttl = (int64) cache_default_ttl_s * USECS_PER_SEC;
	if (policy != NULL && policy->max_ttl != TTL_NONE &&
		(ttl == TTL_NONE || ttl > policy->max_ttl))
		ttl = policy->max_ttl;
	if (secure && (ttl == TTL_NONE || ttl > (int64) cache_secure_max_ttl_s * USECS_PER_SEC))
		ttl = (int64) cache_secure_max_ttl_s * USECS_PER_SEC;
	if (ttl == TTL_NONE)
		return 0;
	now = GetCurrentTimestamp();
	if (pg_add_s64_overflow(now, ttl, &result))
		result = DT_NOEND;
	return result;
}

/*
 * Secure flag and expiry of a cache_query() result under a user key: its
 * policy applies as to cache_set(); ttl NULL means the default.
 */
void
cache_query_item_expiry(CacheItem *item, const char *userkey, int userlen,
						const Interval *ttl)
{
	const CachePolicy *policy = policy_for(userkey, userlen);
	bool		secure = policy != NULL && policy->secure;

	if (secure)
		item->flags |= CACHE_FLAG_SECURE;
	item->expires_at = entry_expiry(ttl ? interval_us(ttl, "TTL") : TTL_NONE,
									policy, secure);
}

/* ---- roles ---- */

static inline bool
may_read(Oid owner, uint8 flags)
{
	return cache_role_may_read(GetUserId(), owner, flags);
}

/* ---- set / get / delete ---- */

/*
 * cache_set(key, value, ttl, tags, secure, public), or with lease_arg >= 0
 * cache_set_leased(key, value, lease, ttl, ...): the arguments after the
 * lease move one on.  Returns whether the entry was stored (or queued).
 */
static bool
cache_set_common(FunctionCallInfo fcinfo, CacheValueType type, int lease_arg)
{
	CacheItem	item = {0};
	struct varlena *value;
	const CachePolicy *policy;
	int64		ttl = TTL_NONE;
	bool		secure;
	int			a = lease_arg >= 0 ? 3 : 2;	/* the TTL's position */
	int64		token = 0;
	bool		stored;

	harden_require_shmem(lease_arg >= 0 ? "harden.cache_set_leased()" : "harden.cache_set()");
	item.key = arg_key(fcinfo, 0, &item.keylen, false);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("cache value must not be NULL"),
				 errhint("Use harden.cache_delete() to remove an entry.")));
	value = PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(1));
	item.type = type;
	item.value = VARDATA_ANY(value);
	item.valuelen = VARSIZE_ANY_EXHDR(value);
	check_value_size(item.key, item.keylen, item.valuelen);
	if (lease_arg >= 0)
	{
		if (PG_ARGISNULL(lease_arg))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("cache lease must not be NULL"),
					 errhint("Use harden.cache_set() to store without a lease.")));
		token = PG_GETARG_INT64(lease_arg);
	}
	if (!PG_ARGISNULL(a))
		ttl = interval_us(PG_GETARG_INTERVAL_P(a), "TTL");
	arg_tags(fcinfo, a + 1, &item);
	secure = !PG_ARGISNULL(a + 2) && PG_GETARG_BOOL(a + 2);
	if (!PG_ARGISNULL(a + 3) && PG_GETARG_BOOL(a + 3))
		item.flags |= CACHE_FLAG_PUBLIC;

	policy = policy_for(item.key, item.keylen);
	secure = secure || (policy != NULL && policy->secure);
	/* A secret readable by every role is a mistake, not a use case. */
	if (secure && (item.flags & CACHE_FLAG_PUBLIC))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a secure cache entry cannot be public"),
				 errdetail("Key \"%.*s\" is secure%s.", item.keylen, item.key,
						   (policy != NULL && policy->secure) ? " by policy" : ""),
				 errhint("Drop public => true, or store the value under a key without a secure policy.")));
	if (secure)
		item.flags |= CACHE_FLAG_SECURE;
	item.expires_at = entry_expiry(ttl, policy, secure);
	item.owner = GetUserId();
	if (lease_arg < 0)
		return cache_xact_write(CACHE_PENDING_SET, item.key, item.keylen, item.owner, &item) > 0;

	/* An expired, ended or made-up lease stores nothing. */
	item.leased = true;
	if (!cache_flight_lease_live(token, item.key, item.keylen, CACHE_LEASE_FINGERPRINT,
								 &item.lease_since))
		return false;
	stored = cache_xact_write(CACHE_PENDING_SET, item.key, item.keylen, item.owner, &item) > 0;
	cache_flight_end_lease(token, item.key, item.keylen, CACHE_LEASE_FINGERPRINT,
						   stored ? CACHE_FLIGHT_PUBLISHED : CACHE_FLIGHT_UNPUBLISHED);
	return stored;
}

PG_FUNCTION_INFO_V1(harden_cache_set_jsonb);
PG_FUNCTION_INFO_V1(harden_cache_set_text);
PG_FUNCTION_INFO_V1(harden_cache_set_bytea);

Datum
harden_cache_set_jsonb(PG_FUNCTION_ARGS)
{
	cache_set_common(fcinfo, CACHE_JSONB, -1);
	PG_RETURN_VOID();
}

Datum
harden_cache_set_text(PG_FUNCTION_ARGS)
{
	cache_set_common(fcinfo, CACHE_TEXT, -1);
	PG_RETURN_VOID();
}

Datum
harden_cache_set_bytea(PG_FUNCTION_ARGS)
{
	cache_set_common(fcinfo, CACHE_BYTEA, -1);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(harden_cache_set_leased_jsonb);
PG_FUNCTION_INFO_V1(harden_cache_set_leased_text);
PG_FUNCTION_INFO_V1(harden_cache_set_leased_bytea);

/*
 * cache_set_leased(key, value, lease, ttl, tags, secure, public): store only
 * if the lease is live and nothing invalidated the key or its tags since it
 * was issued; returns whether it stored.  Ends the lease either way.
 */
Datum
harden_cache_set_leased_jsonb(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(cache_set_common(fcinfo, CACHE_JSONB, 2));
}

Datum
harden_cache_set_leased_text(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(cache_set_common(fcinfo, CACHE_TEXT, 2));
}

Datum
harden_cache_set_leased_bytea(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(cache_set_common(fcinfo, CACHE_BYTEA, 2));
}

static const char *
type_name(CacheValueType type)
{
	switch (type)
	{
		case CACHE_JSONB:
			return "jsonb";
		case CACHE_TEXT:
			return "text";
		case CACHE_BYTEA:
			return "bytea";
	}
	return "unknown";
}

static const char *
getter_for(CacheValueType type)
{
	switch (type)
	{
		case CACHE_JSONB:
			return "harden.cache_get()";
		case CACHE_TEXT:
			return "harden.cache_get_text()";
		case CACHE_BYTEA:
			return "harden.cache_get_bytea()";
	}
	return "?";
}

/* This session's view of a key for the current user. */
static bool
visible_lookup(const char *key, int keylen, CacheHit *hit, bool want_value)
{
	return cache_xact_lookup(key, keylen, GetUserId(), hit, want_value);
}

/*
 * An untyped literal or parameter passed to cache_set() resolves to its
 * text overload before pg_harden sees it, so a client that sends JSON as
 * an untyped parameter stores text.  The jsonb getters read such an entry:
 * a text entry that is valid JSON is returned as that jsonb value.  Any
 * other text entry read as jsonb is PH102.  Returns the value with its
 * varlena header set, or NULL when it is of another type.
 */
static struct varlena *
value_as(CacheHit *hit, CacheValueType want)
{
	if (hit->type == want)
	{
		SET_VARSIZE(hit->value, hit->valuelen + VARHDRSZ);
		return (struct varlena *) hit->value;
	}
	if (want == CACHE_JSONB && hit->type == CACHE_TEXT)
	{
		char	   *json = pnstrdup(hit->value + VARHDRSZ, hit->valuelen);
		JsonLexContext *lex = makeJsonLexContextCstringLen(json, strlen(json),
														   GetDatabaseEncoding(), true);

		/* Validated first: jsonb_in would raise an error on bad input. */
		if (strlen(json) == hit->valuelen && pg_parse_json(lex, &nullSemAction) == JSON_SUCCESS)
			return (struct varlena *) DatumGetPointer(DirectFunctionCall1(jsonb_in,
																		  CStringGetDatum(json)));
	}
	return NULL;
}

static void
report_wrong_type(const char *key, int keylen, CacheValueType have, CacheValueType want)
{
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_CACHE_WRONG_TYPE),
			 errmsg("cache entry \"%.*s\" holds %s, not %s", keylen, key,
					type_name(have), type_name(want)),
			 errhint("Read it with %s.", getter_for(have))));
}

/*
 * Read an entry the caller may see; NULL on a miss.  Entries of roles the
 * caller lacks the privileges of are misses, so their existence and type
 * are not revealed.
 */
static struct varlena *
cache_get_common(FunctionCallInfo fcinfo, CacheValueType want)
{
	CacheHit	hit;
	const char *key;
	int			keylen;
	struct varlena *value;

	harden_require_shmem("harden.cache_get()");
	key = arg_key(fcinfo, 0, &keylen, false);
	if (!visible_lookup(key, keylen, &hit, true))
	{
		harden_count(HC_CACHE_MISSES, 1);
		return NULL;
	}
	value = value_as(&hit, want);
	if (value == NULL)
		report_wrong_type(key, keylen, hit.type, want);
	harden_count(HC_CACHE_HITS, 1);
	return value;
}

PG_FUNCTION_INFO_V1(harden_cache_get);
PG_FUNCTION_INFO_V1(harden_cache_get_text);
PG_FUNCTION_INFO_V1(harden_cache_get_bytea);

#define RETURN_VARLENA_OR_NULL(v) \
	do { struct varlena *v_ = (v); if (v_ == NULL) PG_RETURN_NULL(); PG_RETURN_POINTER(v_); } while (0)

Datum
harden_cache_get(PG_FUNCTION_ARGS)
{
	RETURN_VARLENA_OR_NULL(cache_get_common(fcinfo, CACHE_JSONB));
}

Datum
harden_cache_get_text(PG_FUNCTION_ARGS)
{
	RETURN_VARLENA_OR_NULL(cache_get_common(fcinfo, CACHE_TEXT));
}

Datum
harden_cache_get_bytea(PG_FUNCTION_ARGS)
{
	RETURN_VARLENA_OR_NULL(cache_get_common(fcinfo, CACHE_BYTEA));
}

/* ---- leases ---- */

/* harden.cache_wait_timeout, in milliseconds (cache_query.c defines it). */
static int
wait_timeout_ms(void)
{
	const char *v = GetConfigOption("harden.cache_wait_timeout", true, false);
	int			ms = 5000;

	if (v != NULL)
		(void) parse_int(v, &ms, GUC_UNIT_MS, NULL);
	return ms;
}

/*
 * cache_lease(key) -> (value, lease): a hit returns the value and no lease;
 * a miss returns a lease token for cache_set_leased().  While another
 * session holds the key's lease, wait for it (at most
 * harden.cache_wait_timeout) and return what it stored; if it stored
 * nothing or the wait times out, return neither: retry.  The same session
 * asking again gets its lease again.
 */
static Datum
lease_common(FunctionCallInfo fcinfo, CacheValueType want)
{
	const char *key;
	int			keylen;
	TupleDesc	desc;
	Datum		values[2] = {0};
	bool		nulls[2] = {true, true};
	TimestampTz deadline;

	harden_require_shmem("harden.cache_lease()");
	key = arg_key(fcinfo, 0, &keylen, false);
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_timeout_ms());
	for (;;)
	{
		CacheHit	hit;
		CacheFlightTicket t = {-1, 0};
		TimestampTz expires;
		uint64		since;
		CacheFlight f;

		if (visible_lookup(key, keylen, &hit, true))
		{
			struct varlena *value = value_as(&hit, want);

			if (value == NULL)
				report_wrong_type(key, keylen, hit.type, want);
			harden_count(HC_CACHE_HITS, 1);
			values[0] = PointerGetDatum(value);
			nulls[0] = false;
			break;
		}
		expires = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), cache_lease_ttl_ms);
		since = cache_store_lease_begin(expires);
		f = cache_flight_begin_lease(key, keylen, CACHE_LEASE_FINGERPRINT, expires, since, &t);
		if (f == CACHE_FLIGHT_LEAD || (f == CACHE_FLIGHT_NONE && t.slot >= 0))
		{
			harden_count(HC_CACHE_MISSES, 1);
			values[1] = Int64GetDatum(cache_flight_token(&t));
			nulls[1] = false;
			break;
		}
		if (f == CACHE_FLIGHT_NONE || GetCurrentTimestamp() >= deadline)
			break;				/* no room for a lease, or waited long enough */
		if (cache_flight_wait(&t, deadline) == CACHE_FLIGHT_TIMED_OUT)
			break;
		harden_count(HC_CACHE_COALESCED, 1);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

PG_FUNCTION_INFO_V1(harden_cache_lease);
PG_FUNCTION_INFO_V1(harden_cache_lease_text);
PG_FUNCTION_INFO_V1(harden_cache_lease_bytea);

Datum
harden_cache_lease(PG_FUNCTION_ARGS)
{
	return lease_common(fcinfo, CACHE_JSONB);
}

Datum
harden_cache_lease_text(PG_FUNCTION_ARGS)
{
	return lease_common(fcinfo, CACHE_TEXT);
}

Datum
harden_cache_lease_bytea(PG_FUNCTION_ARGS)
{
	return lease_common(fcinfo, CACHE_BYTEA);
}

/* Metadata of an entry the caller may see. */
static bool
peek_visible(FunctionCallInfo fcinfo, const char *fn, CacheHit *meta)
{
	const char *key;
	int			keylen;

	harden_require_shmem(fn);
	key = arg_key(fcinfo, 0, &keylen, false);
	return visible_lookup(key, keylen, meta, false);
}

PG_FUNCTION_INFO_V1(harden_cache_exists);
PG_FUNCTION_INFO_V1(harden_cache_ttl);

Datum
harden_cache_exists(PG_FUNCTION_ARGS)
{
	CacheHit	meta;

	PG_RETURN_BOOL(peek_visible(fcinfo, "harden.cache_exists()", &meta));
}

/* Time left; NULL when the entry is missing or never expires. */
Datum
harden_cache_ttl(PG_FUNCTION_ARGS)
{
	CacheHit	meta;
	TimestampTz now;

	if (!peek_visible(fcinfo, "harden.cache_ttl()", &meta) || meta.expires_at == 0)
		PG_RETURN_NULL();
	now = GetCurrentTimestamp();
	PG_RETURN_DATUM(DirectFunctionCall2(timestamp_mi,
										TimestampTzGetDatum(Max(meta.expires_at, now)),
										TimestampTzGetDatum(now)));
}

PG_FUNCTION_INFO_V1(harden_cache_delete);

/* The caller's cache_query() result under a key. */
static bool
delete_query_result(const char *key, int keylen)
{
	int			qlen;
	char	   *qkey = cache_query_key(key, keylen, GetUserId(), &qlen);

	return cache_xact_write(CACHE_PENDING_DELETE, qkey, qlen, GetUserId(), NULL) > 0;
}

/* Both writes always: the entry and the caller's query result. */
static bool
delete_key(const char *key, int keylen)
{
	bool		plain = cache_xact_write(CACHE_PENDING_DELETE, key, keylen, GetUserId(), NULL) > 0;

	return delete_query_result(key, keylen) || plain;
}

/*
 * Delete the entry under a key and the caller's cache_query() result under
 * it; true if either existed (in this session's view).
 */
Datum
harden_cache_delete(PG_FUNCTION_ARGS)
{
	const char *key;
	int			keylen;

	harden_require_shmem("harden.cache_delete()");
	key = arg_key(fcinfo, 0, &keylen, false);
	PG_RETURN_BOOL(delete_key(key, keylen));
}

/*
 * The elements of a text[] argument of keys or tags, each checked before
 * any is used, so a bad one changes nothing.
 */
static text **
arg_names(FunctionCallInfo fcinfo, int argno, bool tags, int *n)
{
	const char *what = tags ? "tag" : "key";
	int			code = tags ? ERRCODE_HARDEN_CACHE_INVALID_TAG : ERRCODE_HARDEN_CACHE_INVALID_KEY;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	text	  **names;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(code),
				 errmsg("cache %ss must not be NULL", what)));
	arr = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(code),
				 errmsg("cache %ss must be a one-dimensional array", what)));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, n);
	names = palloc(sizeof(text *) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(code),
					 errmsg("cache %ss must not contain NULL", what),
					 errdetail("Element %d is NULL.", i + 1)));
		names[i] = DatumGetTextPP(elems[i]);
		check_name(what, code, VARDATA_ANY(names[i]), VARSIZE_ANY_EXHDR(names[i]), false);
	}
	return names;
}

PG_FUNCTION_INFO_V1(harden_cache_delete_many);

/*
 * cache_delete(keys text[]): delete each key as cache_delete(key) does;
 * returns how many of them had an entry (in this session's view).
 */
Datum
harden_cache_delete_many(PG_FUNCTION_ARGS)
{
	int			n;
	text	  **keys;
	int64		deleted = 0;

	harden_require_shmem("harden.cache_delete()");
	keys = arg_names(fcinfo, 0, false, &n);
	for (int i = 0; i < n; i++)
		if (delete_key(VARDATA_ANY(keys[i]), VARSIZE_ANY_EXHDR(keys[i])))
			deleted++;
	PG_RETURN_INT64(deleted);
}

/* ---- invalidation ---- */

PG_FUNCTION_INFO_V1(harden_cache_invalidate);

/* Delete every entry of this database whose key matches a glob. */
Datum
harden_cache_invalidate(PG_FUNCTION_ARGS)
{
	const char *pattern;
	int			len;

	harden_require_shmem("harden.cache_invalidate()");
	pattern = arg_key(fcinfo, 0, &len, true);
	PG_RETURN_INT64(cache_xact_write(CACHE_PENDING_INVALIDATE, pattern, len, GetUserId(), NULL));
}

PG_FUNCTION_INFO_V1(harden_cache_invalidate_tag);

/*
 * Delete the entries of this database carrying a tag, among those the
 * caller may modify; returns how many were deleted.
 */
Datum
harden_cache_invalidate_tag(PG_FUNCTION_ARGS)
{
	text	   *t;

	harden_require_shmem("harden.cache_invalidate_tag()");
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_CACHE_INVALID_TAG),
				 errmsg("cache tag must not be NULL")));
	t = PG_GETARG_TEXT_PP(0);
	check_name("tag", ERRCODE_HARDEN_CACHE_INVALID_TAG, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), false);
	PG_RETURN_INT64(cache_xact_write(CACHE_PENDING_TAG, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t),
									 GetUserId(), NULL));
}

PG_FUNCTION_INFO_V1(harden_cache_invalidate_tags);

/*
 * cache_invalidate_tag(tags text[]): each tag as cache_invalidate_tag(tag)
 * does; returns the sum of what each removed (inside a transaction block:
 * of the committed entries each matches, so an entry with two of the tags
 * counts twice).
 */
Datum
harden_cache_invalidate_tags(PG_FUNCTION_ARGS)
{
	int			n;
	text	  **tags;
	int64		removed = 0;

	harden_require_shmem("harden.cache_invalidate_tag()");
	tags = arg_names(fcinfo, 0, true, &n);
	for (int i = 0; i < n; i++)
		removed += cache_xact_write(CACHE_PENDING_TAG, VARDATA_ANY(tags[i]),
									VARSIZE_ANY_EXHDR(tags[i]), GetUserId(), NULL);
	PG_RETURN_INT64(removed);
}

PG_FUNCTION_INFO_V1(harden_cache_flush);
PG_FUNCTION_INFO_V1(harden_cache_flush_secure);
PG_FUNCTION_INFO_V1(harden_cache_sweep);

Datum
harden_cache_flush(PG_FUNCTION_ARGS)
{
	harden_require_shmem("harden.cache_flush()");
	PG_RETURN_INT64(cache_xact_write(CACHE_PENDING_FLUSH, NULL, 0, GetUserId(), NULL));
}

Datum
harden_cache_flush_secure(PG_FUNCTION_ARGS)
{
	harden_require_shmem("harden.cache_flush_secure()");
	PG_RETURN_INT64(cache_xact_write(CACHE_PENDING_FLUSH_SECURE, NULL, 0, GetUserId(), NULL));
}

/* Free expired entries of every database now; returns how many. */
Datum
harden_cache_sweep(PG_FUNCTION_ARGS)
{
	harden_require_shmem("harden.cache_sweep()");
	PG_RETURN_INT64((int64) cache_store_sweep(true));
}

/* ---- views ---- */

PG_FUNCTION_INFO_V1(harden_cache_stats);
PG_FUNCTION_INFO_V1(harden_cache_stats_reset);

/* Counters of this database; entries and bytes of the whole cache. */
Datum
harden_cache_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[11];
	bool		nulls[11] = {0};
	uint64		hits,
				misses,
				entries,
				bytes_used;

	harden_require_shmem("harden.cache_stats");
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	hits = harden_counter_value(HC_CACHE_HITS);
	misses = harden_counter_value(HC_CACHE_MISSES);
	cache_store_totals(&entries, &bytes_used);
	values[0] = Int64GetDatum((int64) hits);
	values[1] = Int64GetDatum((int64) misses);
	if (hits + misses > 0)
		values[2] = Float8GetDatum((double) hits / (double) (hits + misses));
	else
		nulls[2] = true;
	values[3] = Int64GetDatum((int64) harden_counter_value(HC_CACHE_SETS));
	values[4] = Int64GetDatum((int64) harden_counter_value(HC_CACHE_EVICTIONS));
	values[5] = Int64GetDatum((int64) harden_counter_value(HC_CACHE_EXPIRATIONS));
	values[6] = Int64GetDatum((int64) harden_counter_value(HC_CACHE_INVALIDATIONS));
	values[7] = Int64GetDatum((int64) entries);
	values[8] = Int64GetDatum((int64) bytes_used);
	values[9] = Int64GetDatum((int64) cache_memory_limit());
	/* Absent from the 0.2.0 definition, whose rows end before it. */
	values[10] = Int64GetDatum((int64) harden_counter_value(HC_CACHE_COALESCED));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

Datum
harden_cache_stats_reset(PG_FUNCTION_ARGS)
{
	harden_require_shmem("harden.cache_stats_reset()");
	harden_counters_reset(HC_CACHE_HITS, HC_CACHE_COALESCED);
	PG_RETURN_VOID();
}

static CacheScanAction
collect_all(const CacheEntryInfo *e, void *arg)
{
	List	  **found = arg;
	CacheEntryInfo *copy = palloc(sizeof(CacheEntryInfo));

	Size		tagslen = 0;

	for (int i = 0; i < e->ntags; i++)
		tagslen += strlen(e->tags + tagslen) + 1;
	*copy = *e;
	copy->key = pnstrdup(e->key, e->keylen);
	copy->tags = palloc(Max(tagslen, 1));
	memcpy(copy->tags, e->tags, tagslen);
	if (e->ndeps > 0)
	{
		CacheDep   *deps = palloc(sizeof(CacheDep) * e->ndeps);

		memcpy(deps, e->deps, sizeof(CacheDep) * e->ndeps);
		copy->deps = deps;
	}
	*found = lappend(*found, copy);
	return CACHE_SCAN_KEEP;
}

static Datum
tags_array(const CacheEntryInfo *e)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(1, e->ntags));
	const char *t = e->tags;

	for (int i = 0; i < e->ntags; i++)
	{
		elems[i] = CStringGetTextDatum(t);
		t += strlen(t) + 1;
	}
	return PointerGetDatum(construct_array(elems, e->ntags, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * The relations a query result depends on, or only those whose writes are
 * not tracked (TTL-capped).
 */
static Datum
deps_array(const CacheEntryInfo *e, bool unwatched_only)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(1, e->ndeps));
	int			n = 0;

	for (int i = 0; i < e->ndeps; i++)
		if (e->deps[i].shown && (!unwatched_only || !e->deps[i].watched))
			elems[n++] = ObjectIdGetDatum(e->deps[i].relid);
	return PointerGetDatum(construct_array(elems, n, REGCLASSOID, sizeof(Oid), true, TYPALIGN_INT));
}

PG_FUNCTION_INFO_V1(harden_cache_entries);

/*
 * The entries of this database the caller may read.  A secure entry's tags
 * are never shown (values never are).
 */
Datum
harden_cache_entries(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	List	   *found = NIL;
	ListCell   *lc;
	TimestampTz now = GetCurrentTimestamp();

	harden_require_shmem("harden.cache_entries");
	InitMaterializedSRF(fcinfo, 0);
	cache_store_scan(collect_all, &found, false, CACHE_REMOVED_EXPIRE);

	foreach(lc, found)
	{
		CacheEntryInfo *e = lfirst(lc);
		Datum		values[12];
		bool		nulls[12] = {0};
		bool		secure = (e->flags & CACHE_FLAG_SECURE) != 0;

		if (!may_read(e->owner, e->flags))
			continue;
		/* Query results belong to one role: only it (or a superuser) sees them. */
		if ((e->flags & CACHE_FLAG_QUERY) && e->owner != GetUserId() && !superuser())
			continue;
		values[0] = PointerGetDatum(cstring_to_text_with_len(e->key, e->keylen));
		values[1] = CStringGetTextDatum(type_name(e->type));
		values[2] = Int64GetDatum((int64) e->bytes);
		if (e->expires_at == 0)
			nulls[3] = nulls[4] = true;
		else
		{
			values[3] = TimestampTzGetDatum(e->expires_at);
			values[4] = DirectFunctionCall2(timestamp_mi,
											TimestampTzGetDatum(Max(e->expires_at, now)),
											TimestampTzGetDatum(now));
		}
		values[5] = Int64GetDatum((int64) e->hits);
		if (secure)
			nulls[6] = true;
		else
			values[6] = tags_array(e);
		values[7] = ObjectIdGetDatum(e->owner);
		values[8] = BoolGetDatum(secure);
		values[9] = BoolGetDatum((e->flags & CACHE_FLAG_PUBLIC) != 0);
		/* Only query results track dependencies; 0.2.0's rows end before. */
		if (e->flags & CACHE_FLAG_QUERY)
		{
			values[10] = deps_array(e, false);
			values[11] = deps_array(e, true);
		}
		else
			nulls[10] = nulls[11] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
