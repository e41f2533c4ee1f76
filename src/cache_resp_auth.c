/*
 * cache_resp_auth.c
 *	  AUTH for the Redis-protocol endpoint, and the role checks its commands
 *	  make.
 *
 * AUTH verifies the password against the role's own secret in pg_authid
 * (SCRAM-SHA-256 or md5, with PostgreSQL's verifiers) and honours
 * rolcanlogin and rolvaliduntil.  When pg_authid changes (a syscache
 * invalidation, processed when the worker starts a transaction, which it
 * does at least every 100 ms while clients are connected) every
 * authenticated connection's role is checked again before its next
 * command.  Membership is checked by the apply layer on every command, so
 * a GRANT or REVOKE applies as soon as its invalidation is processed.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "common/hmac.h"
#include "common/sha2.h"
#include "libpq/crypt.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "pg_harden.h"
#include "cache_resp.h"

/* Longer secrets are refused before any work is spent on them. */
#define RESP_MAX_PASSWORD 1024

#define AUTH_CACHE_SIZE 64

typedef struct AuthCacheEntry
{
	uint8		mac[PG_SHA256_DIGEST_LENGTH];
	Oid			role;
	TimestampTz valid_until;
	uint64		gen;
} AuthCacheEntry;

static AuthCacheEntry auth_cache[AUTH_CACHE_SIZE];
static uint8 auth_key[32];
static bool auth_key_ok = false;

uint64		resp_auth_gen = 1;
static Oid	default_role = InvalidOid;
static uint64 default_role_gen = 0;
static char *default_role_name = NULL;

static void
authid_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	resp_auth_gen++;
}

void
resp_auth_init(void)
{
	CacheRegisterSyscacheCallback(AUTHOID, authid_changed, (Datum) 0);
	auth_key_ok = pg_strong_random(auth_key, sizeof(auth_key));
}

/* HMAC of user NUL password; false if it could not be computed. */
static bool
auth_mac(const char *user, size_t ul, const char *pass, size_t pl, uint8 *mac)
{
	pg_hmac_ctx *ctx;
	bool		ok;

	if (!auth_key_ok || (ctx = pg_hmac_create(PG_SHA256)) == NULL)
		return false;
	ok = pg_hmac_init(ctx, auth_key, sizeof(auth_key)) == 0 &&
		pg_hmac_update(ctx, (const uint8 *) user, ul) == 0 &&
		pg_hmac_update(ctx, (const uint8 *) "", 1) == 0 &&
		pg_hmac_update(ctx, (const uint8 *) pass, pl) == 0 &&
		pg_hmac_final(ctx, mac, PG_SHA256_DIGEST_LENGTH) == 0;
	pg_hmac_free(ctx);
	return ok;
}

static AuthCacheEntry *
auth_cache_slot(const uint8 *mac)
{
	return &auth_cache[mac[0] % AUTH_CACHE_SIZE];
}

/* NUL-terminated copy, or NULL if the argument contains a NUL byte. */
static char *
arg_cstring(const char *s, size_t n)
{
	if (memchr(s, '\0', n) != NULL)
		return NULL;
	return pnstrdup(s, n);
}

/*
 * Check a user name and password.  On success sets *role and
 * *valid_until (0 when the password does not expire).  On failure *why is
 * the reason for the server log; the client only learns that it failed.
 */
bool
resp_auth_check(const char *user, size_t userlen, const char *pass, size_t passlen,
				Oid *role, TimestampTz *valid_until, const char **why)
{
	char	   *u,
			   *p,
			   *shadow;
	HeapTuple	tup;
	Form_pg_authid form;
	bool		isnull;
	Datum		d;
	const char *logdetail = NULL;

	uint8		mac[PG_SHA256_DIGEST_LENGTH] = {0};
	bool		have_mac;
	AuthCacheEntry *ce;

	*why = "invalid user name or password";
	if (userlen == 0 || userlen >= NAMEDATALEN || passlen == 0 ||
		passlen > RESP_MAX_PASSWORD)
		return false;
	/* the HMAC's OpenSSL context belongs to a resource owner */
	resp_xact_ensure();
	have_mac = auth_mac(user, userlen, pass, passlen, mac);
	ce = auth_cache_slot(mac);
	if (have_mac && ce->gen == resp_auth_gen && memcmp(ce->mac, mac, sizeof(mac)) == 0 &&
		(ce->valid_until == 0 || ce->valid_until > GetCurrentTimestamp()))
	{
		*role = ce->role;
		*valid_until = ce->valid_until;
		return true;
	}
	u = arg_cstring(user, userlen);
	p = arg_cstring(pass, passlen);
	if (u == NULL || p == NULL)
		return false;

	tup = SearchSysCache1(AUTHNAME, CStringGetDatum(u));
	if (!HeapTupleIsValid(tup))
	{
		*why = "role does not exist";
		return false;
	}
	form = (Form_pg_authid) GETSTRUCT(tup);
	*role = form->oid;
	if (!form->rolcanlogin)
	{
		ReleaseSysCache(tup);
		*why = "role is not permitted to log in";
		return false;
	}
	d = SysCacheGetAttr(AUTHNAME, tup, Anum_pg_authid_rolvaliduntil, &isnull);
	*valid_until = isnull ? 0 : DatumGetTimestampTz(d);
	ReleaseSysCache(tup);

	/* NULL when there is no password or it has expired */
	shadow = get_role_password(u, &logdetail);
	if (shadow == NULL)
	{
		*why = logdetail ? logdetail : "role has no valid password";
		return false;
	}
	if (plain_crypt_verify(u, shadow, p, &logdetail) != STATUS_OK)
	{
		*why = logdetail ? logdetail : "password does not match";
		return false;
	}
	if (have_mac)
	{
		memcpy(ce->mac, mac, sizeof(mac));
		ce->role = *role;
		ce->valid_until = *valid_until;
		ce->gen = resp_auth_gen;
	}
	return true;
}

/* Can an authenticated role still log in (it may have changed since)? */
bool
resp_role_still_valid(Oid role)
{
	HeapTuple	tup;
	bool		ok,
				isnull;
	Datum		d;

	resp_xact_ensure();
	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(role));
	if (!HeapTupleIsValid(tup))
		return false;
	ok = ((Form_pg_authid) GETSTRUCT(tup))->rolcanlogin;
	d = SysCacheGetAttr(AUTHOID, tup, Anum_pg_authid_rolvaliduntil, &isnull);
	if (!isnull && DatumGetTimestampTz(d) < GetCurrentTimestamp())
		ok = false;
	ReleaseSysCache(tup);
	return ok;
}

/* The role of unauthenticated clients, or InvalidOid. */
Oid
resp_default_role_oid(void)
{
	if (resp_default_role == NULL || resp_default_role[0] == '\0')
		return InvalidOid;
	if (default_role_gen == resp_auth_gen && default_role_name != NULL &&
		strcmp(default_role_name, resp_default_role) == 0)
		return default_role;
	resp_xact_ensure();
	default_role = get_role_oid(resp_default_role, true);
	if (default_role_name != NULL)
		pfree(default_role_name);
	default_role_name = MemoryContextStrdup(TopMemoryContext, resp_default_role);
	default_role_gen = resp_auth_gen;
	return default_role;
}
