/*
 * cache_resp_cmd.c
 *	  The commands of the Redis-protocol endpoint.
 *
 * Every command acts as the connection's role with the rules of the SQL
 * functions: an entry is read by its writer, by roles with the writer's
 * privileges, or by anyone if public; a secure entry only by its writer;
 * only roles with the writer's privileges replace or delete an entry.  A
 * key that is not a plain entry falls back to the role's own cache_query()
 * result under that key, which the store returns only while its
 * generations are current.  Writes go straight to the store: there is no
 * transaction to publish at.
 *
 * Reads, writes and deletes go through the apply layer with the
 * connection's role; its role checks read the catalogs, so they run inside
 * the batch's transaction (resp_xact_ensure()).  The hot path needs no
 * catalog and no transaction: a miss, an entry of the connection's own
 * role, or a public one is decided from the store's answer alone, and a
 * write or delete of such an entry is one store call under that expected
 * owner; anything else (another role's entry, a concurrent change of
 * owner) goes to the apply layer in the transaction.
 * Conditional writes (NX, XX, GET, KEEPTTL) and EXPIRE need a decision and
 * a store call under one expected owner, so they peek through the apply
 * layer and put with that owner.  Store scan callbacks run under partition
 * locks and only copy what they see.
 */
#include "postgres.h"

#include <unistd.h>

#include "access/xlog.h"
#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "pg_harden.h"
#include "cache.h"
#include "cache_resp.h"

#define RESP_COMPAT_VERSION "7.0.0"
#define SCAN_MAX_COUNT 10000

typedef void (*resp_cmd_fn) (RespClient *c, long argc, const char **argv, const size_t *argl);

typedef struct RespCommand
{
	const char *name;
	int			arity;			/* > 0: exactly; < 0: at least -arity */
	bool		noauth;			/* allowed before AUTH */
	bool		keyspace;		/* needs the batch's transaction from the start */
	bool		write;
	int			firstkey;		/* for COMMAND INFO */
	int			lastkey;
	resp_cmd_fn fn;
} RespCommand;

/* ---- helpers ---- */

#define OUT (&c->out)

static inline bool
key_char_ok(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		(ch >= '0' && ch <= '9') || ch == ':' || ch == '_' || ch == '.' || ch == '-';
}

/* The SQL key rules: 1..250 bytes of [A-Za-z0-9:_.-]. */
static void
check_key(const char *k, size_t len)
{
	if (len == 0 || len > CACHE_MAX_KEY_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_CACHE_INVALID_KEY),
				 errmsg("invalid cache key: must be 1 to %d bytes long, this one is %zu bytes",
						CACHE_MAX_KEY_LEN, len)));
	for (size_t i = 0; i < len; i++)
		if (!key_char_ok((unsigned char) k[i]))
			ereport(ERROR,
					(errcode(ERRCODE_HARDEN_CACHE_INVALID_KEY),
					 errmsg("invalid cache key: byte %zu (0x%02x) is not allowed, only A-Z a-z 0-9 and :_.-",
							i + 1, (unsigned char) k[i])));
}

/*
 * The SQL rule (cache_role_may_read).  Only another role's non-public entry
 * needs the catalog, so only then is the batch's transaction started.
 */
static bool
role_may_read(Oid role, Oid owner, uint8 flags)
{
	if (owner == role || (flags & CACHE_FLAG_PUBLIC))
		return true;
	resp_xact_ensure();
	return cache_role_may_read(role, owner, flags);
}

/* The SQL rule, and a secure entry only for its writer (not members). */
static bool
may_read(Oid role, Oid owner, uint8 flags)
{
	if (flags & CACHE_FLAG_SECURE)
		return owner == role;
	return role_may_read(role, owner, flags);
}

static inline bool
store_read(const char *key, int keylen, CacheHit *hit, bool want_value)
{
	return want_value ? cache_store_get(key, keylen, hit) : cache_store_peek(key, keylen, hit);
}

/*
 * The plain entry a role sees under a key, as the apply layer decides it:
 * the stored one if the role may read it, else the role's shadow of the key
 * (docs/cache.md: a key holding an entry a role may not read is, to that
 * role, a free key).  *wkey and *wlen say which stored key holds it; an
 * entry of another role needs a transaction (catalog access).
 */
static bool
plain_lookup(Oid role, const char *key, int keylen, CacheHit *hit, bool want_value,
			 const char **wkey, int *wlen)
{
	*wkey = key;
	*wlen = keylen;
	if (store_read(key, keylen, hit, want_value) &&
		role_may_read(role, hit->owner, hit->flags))
		return true;
	if (!cache_store_has_shadows())
		return false;
	*wkey = cache_shadow_key(key, keylen, role, wlen);
	return store_read(*wkey, *wlen, hit, want_value);
}

/*
 * The entry a role sees under a key: the plain entry if it may read it
 * (secure ones only its writer's), else its own fresh cache_query() result
 * under the key (the store returns a query result only while its
 * generations are current).  The common cases (a miss, the role's own
 * entry, a public one) need no catalog access and no transaction.
 */
static bool
visible_lookup(Oid role, const char *key, size_t keylen, CacheHit *hit, bool want_value)
{
	const char *wkey;
	int			wlen;
	char	   *qkey;
	int			qlen;

	if (plain_lookup(role, key, (int) keylen, hit, want_value, &wkey, &wlen) &&
		may_read(role, hit->owner, hit->flags))
		return true;
	qkey = cache_query_key(key, (int) keylen, role, &qlen);
	return store_read(qkey, qlen, hit, want_value) && hit->owner == role;
}

/* A value as the bytes a Redis client gets: jsonb as its text. */
static void
add_value(RespClient *c, CacheHit *hit)
{
	if (hit->type == CACHE_JSONB)
	{
		Jsonb	   *jb = (Jsonb *) hit->value;
		char	   *s;

		SET_VARSIZE(jb, hit->valuelen + VARHDRSZ);
		s = JsonbToCString(NULL, &jb->root, hit->valuelen);
		resp_add_bulk_str(OUT, s);
	}
	else
		resp_add_bulk(OUT, hit->value + VARHDRSZ, hit->valuelen);
}

static void
count_read(bool hit)
{
	harden_count(hit ? HC_RESP_HITS : HC_RESP_MISSES, 1);
	harden_count(hit ? HC_CACHE_HITS : HC_CACHE_MISSES, 1);
}

static void
syntax_error(RespClient *c)
{
	resp_add_error(OUT, "ERR syntax error");
}

/* ---- connection ---- */

/*
 * May the client run commands, and as which role?  An authenticated role
 * is checked again after pg_authid changed, and when its password expires.
 */
bool
resp_client_authorized(RespClient *c)
{
	if (c->authed)
	{
		if (c->valid_until != 0 && c->valid_until < resp_batch_now)
			c->authed = false;
		else if (c->auth_gen != resp_auth_gen)
		{
			if (resp_role_still_valid(c->role))
				c->auth_gen = resp_auth_gen;
			else
				c->authed = false;
		}
		if (c->authed)
			return true;
		c->role = InvalidOid;
	}
	c->role = resp_default_role_oid();
	return OidIsValid(c->role);
}

static bool
do_auth(RespClient *c, const char *user, size_t ul, const char *pass, size_t pl)
{
	Oid			role = InvalidOid;
	TimestampTz valid_until = 0;
	const char *why;

	if (!resp_auth_check(user, ul, pass, pl, &role, &valid_until, &why))
	{
		harden_count(HC_RESP_AUTH_FAILURES, 1);
		ereport(LOG,
				(errmsg("pg_harden resp: authentication failed for client %llu",
						(unsigned long long) c->id),
				 errdetail_log("%s", why)));
		resp_add_error(OUT, "WRONGPASS invalid username-password pair or user is disabled.");
		return false;
	}
	c->role = role;
	c->authed = true;
	c->auth_gen = resp_auth_gen;
	c->valid_until = valid_until;
	return true;
}

static void
cmd_auth(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	if (argc == 2)
	{
		resp_add_error(OUT, "ERR AUTH needs a role name: AUTH <role> <password>");
		return;
	}
	if (argc != 3)
	{
		syntax_error(c);
		return;
	}
	if (do_auth(c, argv[1], argl[1], argv[2], argl[2]))
		resp_add_simple(OUT, "OK");
}

static void
add_kv_str(RespClient *c, const char *k, const char *v)
{
	resp_add_bulk_str(OUT, k);
	resp_add_bulk_str(OUT, v);
}

static void
cmd_hello(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	int64_t		proto = c->proto;
	long		i = 1;

	if (argc >= 2)
	{
		if (!resp_arg_int(argv[1], argl[1], &proto) || (proto != 2 && proto != 3))
		{
			resp_add_error(OUT, "NOPROTO unsupported protocol version");
			return;
		}
		i = 2;
	}
	for (; i < argc; i++)
	{
		if (resp_arg_is(argv[i], argl[i], "AUTH") && i + 2 < argc)
		{
			if (!do_auth(c, argv[i + 1], argl[i + 1], argv[i + 2], argl[i + 2]))
				return;
			i += 2;
		}
		else if (resp_arg_is(argv[i], argl[i], "SETNAME") && i + 1 < argc)
		{
			strlcpy(c->name, argv[i + 1], Min(argl[i + 1] + 1, sizeof(c->name)));
			i++;
		}
		else
		{
			syntax_error(c);
			return;
		}
	}
	if (!resp_client_authorized(c))
	{
		resp_add_error(OUT, "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
		return;
	}
	c->proto = (int) proto;
	resp_add_map(OUT, c->proto, 7);
	add_kv_str(c, "server", "redis");
	add_kv_str(c, "version", RESP_COMPAT_VERSION);
	resp_add_bulk_str(OUT, "proto");
	resp_add_int(OUT, c->proto);
	resp_add_bulk_str(OUT, "id");
	resp_add_int(OUT, (int64_t) c->id);
	add_kv_str(c, "mode", "standalone");
	add_kv_str(c, "role", "master");
	resp_add_bulk_str(OUT, "modules");
	resp_add_array(OUT, 0);
}

static void
cmd_ping(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	if (argc > 2)
		resp_add_error(OUT, "ERR wrong number of arguments for 'ping' command");
	else if (argc == 2)
		resp_add_bulk(OUT, argv[1], argl[1]);
	else
		resp_add_simple(OUT, "PONG");
}

static void
cmd_echo(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	resp_add_bulk(OUT, argv[1], argl[1]);
}

static void
cmd_quit(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	resp_add_simple(OUT, "OK");
	c->closing = true;
}

static void
cmd_select(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	int64_t		db;

	if (!resp_arg_int(argv[1], argl[1], &db))
		resp_add_error(OUT, "ERR value is not an integer or out of range");
	else if (db != 0)
		resp_add_error(OUT, "ERR DB index is out of range");
	else
		resp_add_simple(OUT, "OK");
}

static void
cmd_client(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	const char *sub = argv[1];
	size_t		sl = argl[1];

	if (resp_arg_is(sub, sl, "ID") && argc == 2)
		resp_add_int(OUT, (int64_t) c->id);
	else if (resp_arg_is(sub, sl, "GETNAME") && argc == 2)
	{
		if (c->name[0] == '\0')
			resp_add_null(OUT, c->proto);
		else
			resp_add_bulk_str(OUT, c->name);
	}
	else if (resp_arg_is(sub, sl, "SETNAME") && argc == 3)
	{
		for (size_t i = 0; i < argl[2]; i++)
			if (argv[2][i] <= ' ' || argv[2][i] > '~')
			{
				resp_add_error(OUT, "ERR Client names cannot contain spaces, newlines or special characters.");
				return;
			}
		if (argl[2] >= sizeof(c->name))
		{
			resp_add_errorf(OUT, "ERR Client names are limited to %d bytes.", RESP_NAME_MAX - 1);
			return;
		}
		memcpy(c->name, argv[2], argl[2]);
		c->name[argl[2]] = '\0';
		resp_add_simple(OUT, "OK");
	}
	else if (resp_arg_is(sub, sl, "SETINFO") && argc == 4)
		resp_add_simple(OUT, "OK");
	else
		resp_add_errorf(OUT, "ERR unknown subcommand '%.*s' for 'client'",
						(int) Min(sl, 64), sub);
}

/* ---- reads ---- */

static void
cmd_get(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	CacheHit	hit;
	bool		found;

	check_key(argv[1], argl[1]);
	found = visible_lookup(c->role, argv[1], argl[1], &hit, true);
	count_read(found);
	if (found)
		add_value(c, &hit);
	else
		resp_add_null(OUT, c->proto);
}

static void
cmd_mget(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	for (long i = 1; i < argc; i++)
		check_key(argv[i], argl[i]);
	resp_add_array(OUT, argc - 1);
	for (long i = 1; i < argc && !OUT->failed; i++)
	{
		CacheHit	hit;
		bool		found = visible_lookup(c->role, argv[i], argl[i], &hit, true);

		count_read(found);
		if (found)
			add_value(c, &hit);
		else
			resp_add_null(OUT, c->proto);
	}
}

static void
cmd_exists(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	int64_t		n = 0;

	for (long i = 1; i < argc; i++)
	{
		CacheHit	hit;

		check_key(argv[i], argl[i]);
		if (visible_lookup(c->role, argv[i], argl[i], &hit, false))
			n++;
	}
	resp_add_int(OUT, n);
}

static void
cmd_type(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	CacheHit	hit;

	check_key(argv[1], argl[1]);
	resp_add_simple(OUT, visible_lookup(c->role, argv[1], argl[1], &hit, false) ?
					"string" : "none");
}

static void
ttl_common(RespClient *c, const char **argv, const size_t *argl, bool ms)
{
	CacheHit	hit;
	int64		left;

	check_key(argv[1], argl[1]);
	if (!visible_lookup(c->role, argv[1], argl[1], &hit, false))
	{
		resp_add_int(OUT, -2);
		return;
	}
	if (hit.expires_at == 0)
	{
		resp_add_int(OUT, -1);
		return;
	}
	left = Max(hit.expires_at - GetCurrentTimestamp(), 0);
	resp_add_int(OUT, ms ? (left + 500) / 1000 : (left + 500000) / USECS_PER_SEC);
}

static void
cmd_ttl(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	ttl_common(c, argv, argl, false);
}

static void
cmd_pttl(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	ttl_common(c, argv, argl, true);
}

/* ---- writes ---- */

/*
 * True while cache.c's copy of harden.cache_policies is known to be loaded.
 * That copy is dropped only by a relcache invalidation, which this process
 * handles only inside a transaction; the callback below then clears this
 * flag too, so a SET outside a transaction never makes cache.c reload the
 * policies (with SPI) where it cannot.
 */
static bool policies_loaded = false;
static bool policies_callback = false;

static void
policies_maybe_changed(Datum arg, Oid relid)
{
	policies_loaded = false;
}

/* Expiry of a new entry under key: TTL (µs, <0: none) and the policies. */
static void
item_expiry(CacheItem *item, int64 ttl_us)
{
	Interval	iv = {0};

	if (!policies_callback)
	{
		CacheRegisterRelcacheCallback(policies_maybe_changed, (Datum) 0);
		policies_callback = true;
	}
	iv.time = ttl_us;
	if (!policies_loaded)
	{
		/* the policies are read with SPI, which wants a snapshot */
		resp_xact_ensure();
		PushActiveSnapshot(GetTransactionSnapshot());
		cache_query_item_expiry(item, item->key, item->keylen, ttl_us >= 0 ? &iv : NULL);
		PopActiveSnapshot();
	}
	else
		cache_query_item_expiry(item, item->key, item->keylen, ttl_us >= 0 ? &iv : NULL);
	policies_loaded = true;
}

/* Parse EX/PX/EXAT/PXAT: a TTL in µs, or -1 for none; false on bad input. */
static bool
parse_expire(RespClient *c, const char *opt, size_t ol, const char *val, size_t vl,
			 int64 *ttl_us)
{
	int64_t		v;
	int64		now_unix_us;

	if (!resp_arg_int(val, vl, &v))
	{
		resp_add_error(OUT, "ERR value is not an integer or out of range");
		return false;
	}
	now_unix_us = GetCurrentTimestamp() +
		((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC);
	if (v <= 0 || v > INT64CONST(3153600000000))	/* 100 years in ms, the larger unit bound */
	{
		resp_add_error(OUT, "ERR invalid expire time in 'set' command");
		return false;
	}
	if (resp_arg_is(opt, ol, "EX"))
		*ttl_us = v * USECS_PER_SEC;
	else if (resp_arg_is(opt, ol, "PX"))
		*ttl_us = v * 1000;
	else if (resp_arg_is(opt, ol, "EXAT"))
		*ttl_us = v * USECS_PER_SEC - now_unix_us;
	else
		*ttl_us = v * 1000 - now_unix_us;
	if (*ttl_us <= 0)
		*ttl_us = 1;			/* already past: expires at once */
	if (*ttl_us > INT64CONST(100) * 365 * USECS_PER_DAY)
	{
		resp_add_error(OUT, "ERR invalid expire time in 'set' command");
		return false;
	}
	return true;
}

typedef struct SetOpts
{
	bool		nx,
				xx,
				get,
				keepttl;
	int64		ttl_us;
} SetOpts;

/*
 * Store a text entry as the connection's role.  Returns false (nothing
 * written) when NX/XX says so; *old gets the previous visible value for GET.
 */
static bool
store_entry(RespClient *c, const char *key, size_t keylen, const char *val, size_t vallen,
			const SetOpts *o, CacheHit *old, bool *had_old)
{
	CacheItem	item = {0};

	check_key(key, keylen);
	if (!cache_value_fits(vallen))
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_CACHE_VALUE_TOO_LARGE),
				 errmsg("cache value for key \"%.*s\" is too large (%zu bytes)",
						(int) keylen, key, vallen)));
	item.key = key;
	item.keylen = (int) keylen;
	item.type = CACHE_TEXT;
	item.value = val;
	item.valuelen = vallen;
	item.owner = c->role;
	item_expiry(&item, o->ttl_us);
	*had_old = false;
	if (!o->nx && !o->xx && !o->get && !o->keepttl)
	{
		/*
		 * Free or the role's own, and no shadows: one store call, no catalog
		 * (the store refuses a live entry of another owner).
		 */
		if (!resp_in_xact() && !cache_store_has_shadows() &&
			cache_store_put(&item, c->role))
		{
			harden_count(HC_CACHE_SETS, 1);
			return true;
		}
		resp_xact_ensure();
		/* Over RESP a write takes effect at once: no snapshot to check it against. */
		(void) cache_apply_set(&item, NULL, NULL);
		return true;
	}
	resp_xact_ensure();

	for (int attempt = 0; attempt < 8; attempt++)
	{
		CacheHit	meta;
		const char *wkey;
		int			wlen;
		bool		found = plain_lookup(c->role, key, (int) keylen, &meta, false, &wkey, &wlen);

		item.key = wkey;
		item.keylen = wlen;
		if (found)
		{
			cache_check_may_modify(c->role, key, (int) keylen, meta.owner, meta.flags);
			if (o->get && may_read(c->role, meta.owner, meta.flags) &&
				cache_store_get(wkey, wlen, old) && old->owner == meta.owner)
				*had_old = true;
			if (o->nx)
				return false;
			if (o->keepttl)
				item.expires_at = meta.expires_at;
		}
		else if (o->xx)
			return false;
		if (cache_store_put(&item, found ? meta.owner : InvalidOid))
		{
			/* A write to the key itself supersedes the role's shadow of it. */
			if (wkey == key && cache_store_has_shadows())
			{
				int			slen;
				char	   *skey = cache_shadow_key(key, (int) keylen, c->role, &slen);

				(void) cache_store_delete(skey, slen, c->role, CACHE_REMOVED_DELETE);
			}
			harden_count(HC_CACHE_SETS, 1);
			return true;
		}
		*had_old = false;
	}
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("cache key \"%.*s\" is being changed concurrently", (int) keylen, key)));
	return false;
}

/*
 * A write replaces what hot standbys hold under the key: with
 * harden.cache_wal it is logged (role privileges come from the catalog).
 */
static void
wal_write(RespClient *c, const char *key, size_t keylen, CachePendingKind kind)
{
	if (!cache_wal || RecoveryInProgress())
		return;
	resp_xact_ensure();
	cache_wal_inval(kind, key, (int) keylen, c->role);
}

static bool
set_entry(RespClient *c, const char *key, size_t keylen, const char *val, size_t vallen,
		  const SetOpts *o, CacheHit *old, bool *had_old)
{
	bool		done = store_entry(c, key, keylen, val, vallen, o, old, had_old);

	if (done)
		wal_write(c, key, keylen, CACHE_PENDING_SET);
	return done;
}

static void
cmd_set(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	SetOpts		o = {.ttl_us = -1};
	bool		expiry = false;
	bool		had_old,
				done;
	CacheHit	old;

	for (long i = 3; i < argc; i++)
	{
		const char *a = argv[i];
		size_t		l = argl[i];

		if (resp_arg_is(a, l, "NX") && !o.xx)
			o.nx = true;
		else if (resp_arg_is(a, l, "XX") && !o.nx)
			o.xx = true;
		else if (resp_arg_is(a, l, "GET"))
			o.get = true;
		else if (resp_arg_is(a, l, "KEEPTTL") && !expiry)
			o.keepttl = expiry = true;
		else if ((resp_arg_is(a, l, "EX") || resp_arg_is(a, l, "PX") ||
				  resp_arg_is(a, l, "EXAT") || resp_arg_is(a, l, "PXAT")) &&
				 !expiry && i + 1 < argc)
		{
			if (!parse_expire(c, a, l, argv[i + 1], argl[i + 1], &o.ttl_us))
				return;
			expiry = true;
			i++;
		}
		else
		{
			syntax_error(c);
			return;
		}
	}
	done = set_entry(c, argv[1], argl[1], argv[2], argl[2], &o, &old, &had_old);
	if (o.get)
	{
		if (had_old)
			add_value(c, &old);
		else
			resp_add_null(OUT, c->proto);
	}
	else if (done)
		resp_add_simple(OUT, "OK");
	else
		resp_add_null(OUT, c->proto);
}

static void
cmd_setex(RespClient *c, long argc, const char **argv, const size_t *argl, bool ms)
{
	SetOpts		o = {.ttl_us = -1};
	bool		had_old;
	CacheHit	old;

	if (!parse_expire(c, ms ? "PX" : "EX", 2, argv[2], argl[2], &o.ttl_us))
		return;
	set_entry(c, argv[1], argl[1], argv[3], argl[3], &o, &old, &had_old);
	resp_add_simple(OUT, "OK");
}

static void
cmd_setex_s(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	cmd_setex(c, argc, argv, argl, false);
}

static void
cmd_psetex(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	cmd_setex(c, argc, argv, argl, true);
}

static void
cmd_setnx(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	SetOpts		o = {.ttl_us = -1,.nx = true};
	bool		had_old;
	CacheHit	old;

	resp_add_int(OUT, set_entry(c, argv[1], argl[1], argv[2], argl[2], &o, &old, &had_old) ? 1 : 0);
}

/* Delete the plain entry and the role's cache_query() result under a key. */
static bool
delete_key(RespClient *c, const char *key, size_t keylen)
{
	bool		plain;
	char	   *qkey;
	int			qlen;

	check_key(key, keylen);
	qkey = cache_query_key(key, (int) keylen, c->role, &qlen);
	if (!resp_in_xact() && !cache_store_has_shadows() && !cache_wal)
	{
		CacheHit	meta;
		bool		found = cache_store_peek(key, (int) keylen, &meta);

		/* the role's own cache_query() result: its owner is the role */
		if (!found || meta.owner == c->role)
		{
			plain = found && cache_store_delete(key, (int) keylen, c->role, CACHE_REMOVED_DELETE);
			if (!found || plain)
				return cache_store_delete(qkey, qlen, c->role, CACHE_REMOVED_DELETE) || plain;
		}
	}
	/* another role's entry, or shadows: the role check reads the catalog */
	resp_xact_ensure();
	plain = cache_apply_delete(key, (int) keylen, c->role);
	plain = cache_apply_delete(qkey, qlen, c->role) || plain;
	wal_write(c, key, keylen, CACHE_PENDING_DELETE);
	wal_write(c, qkey, qlen, CACHE_PENDING_DELETE);
	return plain;
}

static void
cmd_del(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	int64_t		n = 0;

	for (long i = 1; i < argc; i++)
		check_key(argv[i], argl[i]);
	for (long i = 1; i < argc; i++)
		if (delete_key(c, argv[i], argl[i]))
			n++;
	resp_add_int(OUT, n);
}

/*
 * Give an existing plain entry a new expiry (0: none) by writing it again
 * with its value and tags.  A secure entry's expiry is never extended.
 */
static bool
reexpire(RespClient *c, const char *key, size_t keylen, TimestampTz expires_at,
		 int cond)
{
	for (int attempt = 0; attempt < 8; attempt++)
	{
		CacheHit	hit,
					tags;
		CacheItem	item = {0};
		const char *wkey;
		int			wlen;

		if (!plain_lookup(c->role, key, (int) keylen, &hit, true, &wkey, &wlen) ||
			!may_read(c->role, hit.owner, hit.flags) ||
			(hit.flags & CACHE_FLAG_QUERY))
			return false;
		if (hit.owner != c->role)
			resp_xact_ensure();
		cache_check_may_modify(c->role, key, (int) keylen, hit.owner, hit.flags);
		/* NX: only without expiry; XX: only with; GT/LT compare (none = infinite) */
		if ((cond == 'N' && hit.expires_at != 0) || (cond == 'X' && hit.expires_at == 0) ||
			(cond == 'G' && (hit.expires_at == 0 || expires_at <= hit.expires_at)) ||
			(cond == 'L' && hit.expires_at != 0 && expires_at >= hit.expires_at))
			return false;
		if ((hit.flags & CACHE_FLAG_SECURE) &&
			(expires_at == 0 || expires_at > hit.expires_at))
			return false;
		item.key = wkey;
		item.keylen = wlen;
		item.type = hit.type;
		item.value = hit.value + VARHDRSZ;
		item.valuelen = hit.valuelen;
		item.owner = hit.owner;
		item.flags = hit.flags;
		item.expires_at = expires_at;
		if (hit.ntags > 0)
		{
			if (!cache_store_peek_tags(wkey, wlen, &tags) || tags.owner != hit.owner)
				continue;
			item.tags = tags.tags;
			item.ntags = tags.ntags;
			item.tagslen = 0;
			for (int i = 0; i < tags.ntags; i++)
				item.tagslen += strlen(tags.tags + item.tagslen) + 1;
		}
		if (cache_store_put(&item, hit.owner))
		{
			/* a standby's copy under the key would keep the old expiry */
			wal_write(c, key, keylen, CACHE_PENDING_SET);
			return true;
		}
	}
	return false;
}

static int
expire_cond(RespClient *c, long argc, const char **argv, const size_t *argl, long from)
{
	int			cond = 0;

	for (long i = from; i < argc; i++)
	{
		if (cond != 0)
			return -1;
		if (resp_arg_is(argv[i], argl[i], "NX"))
			cond = 'N';
		else if (resp_arg_is(argv[i], argl[i], "XX"))
			cond = 'X';
		else if (resp_arg_is(argv[i], argl[i], "GT"))
			cond = 'G';
		else if (resp_arg_is(argv[i], argl[i], "LT"))
			cond = 'L';
		else
			return -1;
	}
	return cond;
}

static void
expire_common(RespClient *c, long argc, const char **argv, const size_t *argl, bool ms)
{
	int64_t		v;
	int			cond;
	TimestampTz now = GetCurrentTimestamp();

	check_key(argv[1], argl[1]);
	if (!resp_arg_int(argv[2], argl[2], &v) ||
		v > (ms ? INT64CONST(3153600000000) : INT64CONST(3153600000)) ||
		v < -(ms ? INT64CONST(3153600000000) : INT64CONST(3153600000)))
	{
		resp_add_error(OUT, "ERR value is not an integer or out of range");
		return;
	}
	cond = expire_cond(c, argc, argv, argl, 3);
	if (cond < 0)
	{
		syntax_error(c);
		return;
	}
	if (v <= 0)
	{
		CacheHit	hit;

		/* a past expiry deletes, as in Redis */
		if (!visible_lookup(c->role, argv[1], argl[1], &hit, false))
			resp_add_int(OUT, 0);
		else
			resp_add_int(OUT, delete_key(c, argv[1], argl[1]) ? 1 : 0);
		return;
	}
	resp_add_int(OUT, reexpire(c, argv[1], argl[1],
							   now + (ms ? v * 1000 : v * USECS_PER_SEC), cond) ? 1 : 0);
}

static void
cmd_expire(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	expire_common(c, argc, argv, argl, false);
}

static void
cmd_pexpire(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	expire_common(c, argc, argv, argl, true);
}

static void
cmd_persist(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	CacheHit	hit;

	check_key(argv[1], argl[1]);
	if (!visible_lookup(c->role, argv[1], argl[1], &hit, false) || hit.expires_at == 0)
	{
		resp_add_int(OUT, 0);
		return;
	}
	resp_add_int(OUT, reexpire(c, argv[1], argl[1], 0, 0) ? 1 : 0);
}

/* ---- keyspace ---- */

typedef struct ScanItem
{
	uint64		pos;			/* cursor position: (hash >> 1) + 1 */
	char	   *key;
	int			keylen;
	Oid			owner;
	uint8		flags;
	TimestampTz expires_at;
} ScanItem;

typedef struct ScanState
{
	uint64		cursor;
	const char *match;
	size_t		matchlen;
	int			want;			/* keep this many lowest positions */
	uint64		bound;			/* once truncated: skip positions above */
	bool		truncated;
	bool		keys;			/* copy keys */
	ScanItem   *items;
	int			n;
	int			cap;
} ScanState;

static int
scan_item_cmp(const void *a, const void *b)
{
	uint64		x = ((const ScanItem *) a)->pos,
				y = ((const ScanItem *) b)->pos;

	return x < y ? -1 : (x > y ? 1 : 0);
}

static void
scan_truncate(ScanState *s)
{
	int			keep = s->want;

	qsort(s->items, s->n, sizeof(ScanItem), scan_item_cmp);
	while (keep < s->n && s->items[keep].pos == s->items[keep - 1].pos)
		keep++;
	if (keep < s->n)
	{
		s->truncated = true;
		s->n = keep;
		s->bound = s->items[keep - 1].pos;
	}
}

/* Runs under the store's partition lock: copies, never checks roles. */
static CacheScanAction
scan_collect(const CacheEntryInfo *e, void *arg)
{
	ScanState  *s = arg;
	uint64		pos = 0;
	ScanItem   *it;

	if (s->keys)
	{
		pos = (hash_bytes_extended((const unsigned char *) e->key, e->keylen, 0) >> 1) + 1;
		if (pos < s->cursor || (s->truncated && pos > s->bound))
			return CACHE_SCAN_KEEP;
		if (s->match && !resp_glob_match(s->match, s->matchlen, e->key, e->keylen))
			return CACHE_SCAN_KEEP;
	}
	if (s->n == s->cap)
	{
		if (s->keys && s->n >= 4 * s->want)
			scan_truncate(s);
		if (s->n == s->cap)
		{
			s->cap = s->cap ? s->cap * 2 : 256;
			s->items = s->items ? repalloc_huge(s->items, sizeof(ScanItem) * s->cap) :
				palloc(sizeof(ScanItem) * s->cap);
		}
	}
	it = &s->items[s->n++];
	it->pos = pos;
	it->key = s->keys ? pnstrdup(e->key, e->keylen) : NULL;
	it->keylen = e->keylen;
	it->owner = e->owner;
	it->flags = e->flags;
	it->expires_at = e->expires_at;
	return CACHE_SCAN_KEEP;
}

static bool
item_visible(Oid role, const ScanItem *it)
{
	if (it->flags & CACHE_FLAG_QUERY)
		return it->owner == role;
	return may_read(role, it->owner, it->flags);
}

static void
cmd_scan(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	ScanState	s = {0};
	uint64		cursor;
	int64_t		count = 10;
	char		buf[32];
	long		nvis = 0;
	bool	   *vis;
	char	   *end;
	bool		none = false;

	if (argl[1] == 0 || argl[1] > 20 || !isdigit((unsigned char) argv[1][0]))
	{
		resp_add_error(OUT, "ERR invalid cursor");
		return;
	}
	errno = 0;
	cursor = strtoull(pnstrdup(argv[1], argl[1]), &end, 10);
	if (errno != 0 || *end != '\0')
	{
		resp_add_error(OUT, "ERR invalid cursor");
		return;
	}
	for (long i = 2; i < argc; i += 2)
	{
		if (i + 1 >= argc)
		{
			syntax_error(c);
			return;
		}
		if (resp_arg_is(argv[i], argl[i], "MATCH"))
		{
			s.match = argv[i + 1];
			s.matchlen = argl[i + 1];
		}
		else if (resp_arg_is(argv[i], argl[i], "COUNT"))
		{
			if (!resp_arg_int(argv[i + 1], argl[i + 1], &count) || count < 1)
			{
				resp_add_error(OUT, "ERR value is not an integer or out of range");
				return;
			}
		}
		else if (resp_arg_is(argv[i], argl[i], "TYPE"))
		{
			/* every entry is a string to Redis clients */
			if (!resp_arg_is(argv[i + 1], argl[i + 1], "string"))
				none = true;
		}
		else
		{
			syntax_error(c);
			return;
		}
	}
	s.cursor = cursor;
	s.want = (int) Min(count, SCAN_MAX_COUNT);
	s.keys = true;
	if (!none)
		cache_store_scan(scan_collect, &s, false, CACHE_REMOVED_EXPIRE);
	if (s.n > s.want)
		scan_truncate(&s);
	vis = palloc0(sizeof(bool) * Max(s.n, 1));
	for (int i = 0; i < s.n; i++)
		if ((vis[i] = item_visible(c->role, &s.items[i])))
			nvis++;
	resp_add_array(OUT, 2);
	snprintf(buf, sizeof(buf), "%llu",
			 s.truncated ? (unsigned long long) (s.bound + 1) : 0ULL);
	resp_add_bulk_str(OUT, buf);
	resp_add_array(OUT, nvis);
	for (int i = 0; i < s.n; i++)
		if (vis[i])
			resp_add_bulk(OUT, s.items[i].key, s.items[i].keylen);
}

/* Entries the role may see in this database: count, and with an expiry. */
static void
count_visible(Oid role, int64 *keys, int64 *expires)
{
	ScanState	s = {0};

	cache_store_scan(scan_collect, &s, false, CACHE_REMOVED_EXPIRE);
	*keys = *expires = 0;
	for (int i = 0; i < s.n; i++)
		if (item_visible(role, &s.items[i]))
		{
			(*keys)++;
			if (s.items[i].expires_at != 0)
				(*expires)++;
		}
}

static void
cmd_dbsize(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	int64		keys,
				expires;

	count_visible(c->role, &keys, &expires);
	resp_add_int(OUT, keys);
}

/* ---- introspection ---- */

static bool
want_section(const char *sec, size_t seclen, const char *name)
{
	return sec == NULL || resp_arg_is(sec, seclen, name) ||
		resp_arg_is(sec, seclen, "all") || resp_arg_is(sec, seclen, "everything") ||
		resp_arg_is(sec, seclen, "default");
}

static void
info_human(StringInfo b, const char *name, uint64 v)
{
	if (v >= 1024 * 1024 * 1024)
		appendStringInfo(b, "%s:%.2fG\r\n", name, v / 1073741824.0);
	else if (v >= 1024 * 1024)
		appendStringInfo(b, "%s:%.2fM\r\n", name, v / 1048576.0);
	else
		appendStringInfo(b, "%s:%.2fK\r\n", name, v / 1024.0);
}

static void
cmd_info(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	StringInfoData b;
	const char *sec = argc > 1 ? argv[1] : NULL;
	size_t		seclen = argc > 1 ? argl[1] : 0;
	long		uptime = (long) ((GetCurrentTimestamp() - resp_start_time()) / USECS_PER_SEC);
	uint64		entries,
				bytes;

	initStringInfo(&b);
	if (want_section(sec, seclen, "server"))
		appendStringInfo(&b, "# Server\r\nredis_version:%s\r\npg_harden_version:%s\r\n"
						 "redis_mode:standalone\r\nos:Linux\r\narch_bits:%d\r\n"
						 "process_id:%d\r\nrun_id:%040d\r\ntcp_port:%d\r\n"
						 "uptime_in_seconds:%ld\r\nuptime_in_days:%ld\r\n"
						 "hz:10\r\nexecutable:postgres\r\n\r\n",
						 RESP_COMPAT_VERSION, PG_HARDEN_VERSION, (int) (sizeof(void *) * 8),
						 MyProcPid, 0, resp_listen_port(), uptime, uptime / 86400);
	if (want_section(sec, seclen, "clients"))
		appendStringInfo(&b, "# Clients\r\nconnected_clients:%d\r\nblocked_clients:0\r\n"
						 "tracking_clients:0\r\nmaxclients:%d\r\n\r\n",
						 resp_connected_clients(), resp_max_clients);
	if (want_section(sec, seclen, "memory"))
	{
		cache_store_totals(&entries, &bytes);
		appendStringInfo(&b, "# Memory\r\nused_memory:" UINT64_FORMAT "\r\n", bytes);
		info_human(&b, "used_memory_human", bytes);
		appendStringInfo(&b, "maxmemory:%zu\r\n", cache_memory_limit());
		info_human(&b, "maxmemory_human", cache_memory_limit());
		appendStringInfo(&b, "maxmemory_policy:allkeys-lru\r\nmem_fragmentation_ratio:1.00\r\n\r\n");
	}
	if (want_section(sec, seclen, "stats"))
		appendStringInfo(&b, "# Stats\r\ntotal_connections_received:" UINT64_FORMAT
						 "\r\ntotal_commands_processed:" UINT64_FORMAT
						 "\r\ninstantaneous_ops_per_sec:0\r\nrejected_connections:" UINT64_FORMAT
						 "\r\nexpired_keys:" UINT64_FORMAT "\r\nevicted_keys:" UINT64_FORMAT
						 "\r\nkeyspace_hits:" UINT64_FORMAT "\r\nkeyspace_misses:" UINT64_FORMAT
						 "\r\ntotal_error_replies:" UINT64_FORMAT
						 "\r\npg_harden_protocol_errors:" UINT64_FORMAT
						 "\r\npg_harden_output_overflows:" UINT64_FORMAT
						 "\r\npg_harden_idle_timeouts:" UINT64_FORMAT
						 "\r\npg_harden_auth_failures:" UINT64_FORMAT "\r\n\r\n",
						 harden_counter_value(HC_RESP_CONNECTIONS),
						 harden_counter_value(HC_RESP_COMMANDS),
						 harden_counter_value(HC_RESP_REJECTED),
						 harden_counter_value(HC_CACHE_EXPIRATIONS),
						 harden_counter_value(HC_CACHE_EVICTIONS),
						 harden_counter_value(HC_RESP_HITS),
						 harden_counter_value(HC_RESP_MISSES),
						 harden_counter_value(HC_RESP_ERRORS),
						 harden_counter_value(HC_RESP_PROTOCOL_ERRORS),
						 harden_counter_value(HC_RESP_OUTPUT_OVERFLOWS),
						 harden_counter_value(HC_RESP_IDLE_TIMEOUTS),
						 harden_counter_value(HC_RESP_AUTH_FAILURES));
	if (want_section(sec, seclen, "keyspace"))
	{
		int64		keys,
					expires;

		count_visible(c->role, &keys, &expires);
		appendStringInfoString(&b, "# Keyspace\r\n");
		if (keys > 0)
			appendStringInfo(&b, "db0:keys=" INT64_FORMAT ",expires=" INT64_FORMAT ",avg_ttl=0\r\n",
							 keys, expires);
	}
	resp_add_verbatim(OUT, c->proto, b.data, b.len);
}

static void
cmd_config(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	if (resp_arg_is(argv[1], argl[1], "GET") && argc >= 3)
		resp_add_map(OUT, c->proto, 0);	/* no settings are exposed */
	else
		resp_add_errorf(OUT, "ERR unknown subcommand '%.*s' for 'config'",
						(int) Min(argl[1], 64), argv[1]);
}

static void cmd_command(RespClient *c, long argc, const char **argv, const size_t *argl);

static const RespCommand commands[] = {
	{"get", 2, false, false, false, 1, 1, cmd_get},
	{"set", -3, false, false, true, 1, 1, cmd_set},
	{"ping", -1, false, false, false, 0, 0, cmd_ping},
	{"auth", -2, true, false, false, 0, 0, cmd_auth},
	{"hello", -1, true, false, false, 0, 0, cmd_hello},
	{"echo", 2, false, false, false, 0, 0, cmd_echo},
	{"quit", -1, true, false, false, 0, 0, cmd_quit},
	{"select", 2, false, false, false, 0, 0, cmd_select},
	{"mget", -2, false, false, false, 1, -1, cmd_mget},
	{"setex", 4, false, false, true, 1, 1, cmd_setex_s},
	{"psetex", 4, false, false, true, 1, 1, cmd_psetex},
	{"setnx", 3, false, false, true, 1, 1, cmd_setnx},
	{"del", -2, false, false, true, 1, -1, cmd_del},
	{"unlink", -2, false, false, true, 1, -1, cmd_del},
	{"exists", -2, false, false, false, 1, -1, cmd_exists},
	{"type", 2, false, false, false, 1, 1, cmd_type},
	{"ttl", 2, false, false, false, 1, 1, cmd_ttl},
	{"pttl", 2, false, false, false, 1, 1, cmd_pttl},
	{"expire", -3, false, true, true, 1, 1, cmd_expire},
	{"pexpire", -3, false, true, true, 1, 1, cmd_pexpire},
	{"persist", 2, false, true, true, 1, 1, cmd_persist},
	{"scan", -2, false, true, false, 0, 0, cmd_scan},
	{"dbsize", 1, false, true, false, 0, 0, cmd_dbsize},
	{"info", -1, false, true, false, 0, 0, cmd_info},
	{"client", -2, false, false, false, 0, 0, cmd_client},
	{"command", -1, false, false, false, 0, 0, cmd_command},
	{"config", -2, false, false, false, 0, 0, cmd_config},
};

static void
add_command_info(RespClient *c, const RespCommand *cmd)
{
	resp_add_array(OUT, 10);
	resp_add_bulk_str(OUT, cmd->name);
	resp_add_int(OUT, cmd->arity);
	resp_add_set(OUT, c->proto, 1);
	resp_add_simple(OUT, cmd->write ? "write" : "readonly");
	resp_add_int(OUT, cmd->firstkey);
	resp_add_int(OUT, cmd->lastkey);
	resp_add_int(OUT, cmd->firstkey ? 1 : 0);
	resp_add_set(OUT, c->proto, 0);	/* ACL categories */
	resp_add_array(OUT, 0);		/* tips */
	resp_add_array(OUT, 0);		/* key specs */
	resp_add_array(OUT, 0);		/* subcommands */
}

static const RespCommand *
find_command(const char *name, size_t len)
{
	for (size_t i = 0; i < lengthof(commands); i++)
		if (resp_arg_is(name, len, commands[i].name))
			return &commands[i];
	return NULL;
}

static void
cmd_command(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	if (argc == 1)
	{
		resp_add_array(OUT, lengthof(commands));
		for (size_t i = 0; i < lengthof(commands); i++)
			add_command_info(c, &commands[i]);
	}
	else if (resp_arg_is(argv[1], argl[1], "COUNT"))
		resp_add_int(OUT, lengthof(commands));
	else if (resp_arg_is(argv[1], argl[1], "INFO"))
	{
		resp_add_array(OUT, argc - 2);
		for (long i = 2; i < argc; i++)
		{
			const RespCommand *cmd = find_command(argv[i], argl[i]);

			if (cmd)
				add_command_info(c, cmd);
			else
				resp_add_null_array(OUT, c->proto);
		}
	}
	else if (resp_arg_is(argv[1], argl[1], "DOCS"))
		resp_add_map(OUT, c->proto, 0);
	else if (resp_arg_is(argv[1], argl[1], "LIST"))
	{
		resp_add_array(OUT, lengthof(commands));
		for (size_t i = 0; i < lengthof(commands); i++)
			resp_add_bulk_str(OUT, commands[i].name);
	}
	else
		resp_add_errorf(OUT, "ERR unknown subcommand '%.*s' for 'command'",
						(int) Min(argl[1], 64), argv[1]);
}

/* A client-supplied name for an error message: printable and short. */
static char *
printable(const char *s, size_t n)
{
	size_t		len = Min(n, 64);
	char	   *out = palloc(len + 1);

	for (size_t i = 0; i < len; i++)
		out[i] = (s[i] >= ' ' && s[i] <= '~' && s[i] != '\'') ? s[i] : '?';
	out[len] = '\0';
	return out;
}

void
resp_execute(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	const RespCommand *cmd = find_command(argv[0], argl[0]);

	harden_count(HC_RESP_COMMANDS, 1);
	if (cmd == NULL)
	{
		resp_add_errorf(OUT, "ERR unknown command '%s', with args beginning with: ",
						printable(argv[0], argl[0]));
		return;
	}
	if ((cmd->arity > 0 && argc != cmd->arity) || (cmd->arity < 0 && argc < -cmd->arity))
	{
		resp_add_errorf(OUT, "ERR wrong number of arguments for '%s' command", cmd->name);
		return;
	}
	if (!cmd->noauth && !resp_client_authorized(c))
	{
		resp_add_error(OUT, "NOAUTH Authentication required.");
		return;
	}
	if (cmd->keyspace)
		resp_xact_ensure();
	cmd->fn(c, argc, argv, argl);
}
