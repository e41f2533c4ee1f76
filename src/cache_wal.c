/*
 * cache_wal.c
 *	  Write generations and explicit invalidations in the WAL, for hot
 *	  standbys (harden.cache_wal).
 *
 * A transaction's generation moves (the writes cache_track.c saw:
 * relations, values, role grants) are logged as one record of a custom
 * resource manager at pre-commit, so it is flushed and streamed with the
 * commit record.  A standby replays it before the commit: it marks the keys
 * under the writer's xid, then moves them, so a result computed from a
 * snapshot that misses the commit is either tagged with the old generation
 * or removed by the marker.  Every key is logged, whether or not the
 * primary has a slot for it: a standby's results are its own.
 *
 * Explicit invalidations (deletes, writes under a key, patterns, tags,
 * flushes) are logged as this server applies them: for a transaction
 * block at pre-commit, before its commit record.  Redo registers their
 * markers under the writer's xid, as the primary did, then applies them to
 * the standby's own entries with the role privileges the record carries.
 *
 * COMMIT PREPARED logs its database move after the commit.  The launcher
 * logs a reset record at every start: a standby replaying it makes all its
 * query results stale.
 *
 * The resource manager is registered whenever pg_harden is preloaded, so a
 * standby replays these records whatever its own setting; one that does
 * not preload pg_harden stops at the first with PostgreSQL's "resource
 * manager with ID ... not registered".
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xloginsert.h"
#include "access/xlogreader.h"
#include "access/xlogutils.h"
#include "lib/stringinfo.h"
#include "catalog/pg_auth_members.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "utils/catcache.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "pg_harden.h"
#include "cache.h"

#define XLOG_HARDEN_GENERATIONS	0x00
#define XLOG_HARDEN_RESET		0x10
#define XLOG_HARDEN_INVALIDATIONS	0x20

/* Keys of one record; a transaction moving more makes its database stale. */
#define WAL_MAX_KEYS 1024

typedef struct HardenGenRecord
{
	Oid			dboid;
	TransactionId xid;			/* the writer's top xid (pre-commit), or invalid */
	uint32		nkeys;
	uint64		keys[FLEXIBLE_ARRAY_MEMBER];
} HardenGenRecord;

/*
 * Explicit invalidations: the header, then nroles role entries (role,
 * count or -1 for every role, that many role oids), then nops operations
 * (kind, name length, role, name bytes).  Read with memcpy: unaligned.
 */
typedef struct HardenInvalRecord
{
	Oid			dboid;
	TransactionId xid;			/* the writer's top xid, or invalid */
	uint32		nroles;
	uint32		nops;
} HardenInvalRecord;

typedef struct HardenInvalOp
{
	uint8		kind;			/* CachePendingKind */
	uint16		len;
	Oid			role;
} HardenInvalOp;

/* A role with more than this many is logged as having every role's. */
#define WAL_MAX_ROLE_PRIVS	256
/* A generations record with more keys gets one marker for the database. */
#define WAL_MARKED_KEYS		16
/* A batch is written out once its operations reach this size. */
#define WAL_INVAL_FLUSH		(64 * 1024)

bool		cache_wal = false;
static int	cache_rmgr_id = RM_EXPERIMENTAL_ID;

/* Keys collected while a commit moves generations (cache_wal_begin/end). */
static bool collecting = false;
static uint32 nkeys = 0;
static bool overflow = false;
static uint64 keys[WAL_MAX_KEYS];

/* Explicit invalidations collected between cache_wal_inval_begin and _end. */
static bool inval_batching = false;
static StringInfo inval_ops = NULL;
static uint32 inval_nops = 0;
static StringInfo inval_roles = NULL;
static uint32 inval_nroles = 0;
static List *inval_logged_roles = NIL;

static void harden_rmgr_redo(XLogReaderState *record);
static void harden_rmgr_desc(StringInfo buf, XLogReaderState *record);
static const char *harden_rmgr_identify(uint8 info);

static RmgrData harden_rmgr = {
	.rm_name = "pg_harden",
	.rm_redo = harden_rmgr_redo,
	.rm_desc = harden_rmgr_desc,
	.rm_identify = harden_rmgr_identify,
};

void
cache_wal_define_gucs(bool preloading)
{
	if (!preloading)
		return;
	DefineCustomBoolVariable("harden.cache_wal",
							 "Logs write generations and explicit cache invalidations in the WAL, so hot standbys invalidate their caches at replay.",
							 "On the primary: log them. On a standby: trust replayed ones (set it on every server). Every standby must preload pg_harden.",
							 &cache_wal,
							 false,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("harden.cache_rmgr_id",
							"Custom WAL resource manager id of pg_harden's records.",
							"Change it, on every server, only if another extension uses the same id.",
							&cache_rmgr_id,
							RM_EXPERIMENTAL_ID, RM_MIN_CUSTOM_ID, RM_MAX_CUSTOM_ID,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
	RegisterCustomRmgr((RmgrId) cache_rmgr_id, &harden_rmgr);
}

/* Whether results computed in recovery can rely on replayed generations. */
bool
cache_wal_replayed(void)
{
	return cache_wal && RecoveryInProgress();
}

/* Collect the keys a committing transaction moves. */
void
cache_wal_begin(void)
{
	collecting = cache_wal && !RecoveryInProgress();
	nkeys = 0;
	overflow = false;
}

void
cache_wal_note(uint64 key)
{
	if (!collecting)
		return;
	if (nkeys < WAL_MAX_KEYS)
		keys[nkeys++] = key;
	else
		overflow = true;
}

/*
 * Log what was collected: at pre-commit, flushed with the commit record;
 * after COMMIT PREPARED (flush), at once.  Every key is logged whether or
 * not this server has a slot for it: a standby may.
 */
void
cache_wal_end(bool flush)
{
	HardenGenRecord rec;
	XLogRecPtr	lsn;

	if (!collecting)
		return;
	collecting = false;
	if (nkeys == 0 && !overflow)
		return;
	if (overflow)
	{
		nkeys = 1;
		keys[0] = cache_gen_key(MyDatabaseId, CACHE_DEP_DATABASE, MyDatabaseId, 0);
	}
	memset(&rec, 0, sizeof(rec));
	rec.dboid = MyDatabaseId;
	rec.xid = GetTopTransactionIdIfAny();
	rec.nkeys = nkeys;
	XLogBeginInsert();
	XLogRegisterData((char *) &rec, offsetof(HardenGenRecord, keys));
	XLogRegisterData((char *) keys, sizeof(uint64) * nkeys);
	lsn = XLogInsert((RmgrId) cache_rmgr_id, XLOG_HARDEN_GENERATIONS);
	if (flush)
		XLogFlush(lsn);
	else
		XLogSetAsyncXactLSN(lsn);
}

/*
 * The roles whose privileges role has (as has_privs_of_role() decides,
 * PostgreSQL 15 rules: membership through roles that inherit, and the
 * database owner's in pg_database_owner), role first; -1 for a superuser
 * or too many to log.
 */
static int
role_privs(Oid role, Oid *out)
{
	int			n = 1;
	Oid			dba = InvalidOid;
	HeapTuple	dbtup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(MyDatabaseId));

	if (HeapTupleIsValid(dbtup))
	{
		dba = ((Form_pg_database) GETSTRUCT(dbtup))->datdba;
		ReleaseSysCache(dbtup);
	}
	if (superuser_arg(role))
		return -1;
	out[0] = role;
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(out[i]));
		bool		inherit = HeapTupleIsValid(tup) &&
			((Form_pg_authid) GETSTRUCT(tup))->rolinherit;
		CatCList   *members;

		if (HeapTupleIsValid(tup))
			ReleaseSysCache(tup);
		if (!inherit)
			continue;
		members = SearchSysCacheList1(AUTHMEMMEMROLE, ObjectIdGetDatum(out[i]));
		for (int m = 0; m < members->n_members; m++)
		{
			Oid			granted = ((Form_pg_auth_members) GETSTRUCT(&members->members[m]->tuple))->roleid;
			bool		seen = false;

			for (int k = 0; k < n && !seen; k++)
				seen = out[k] == granted;
			if (seen)
				continue;
			if (n == WAL_MAX_ROLE_PRIVS)
			{
				ReleaseSysCacheList(members);
				return -1;
			}
			out[n++] = granted;
		}
		ReleaseSysCacheList(members);
		if (out[i] == dba && OidIsValid(dba))
		{
			bool		seen = false;

			for (int k = 0; k < n && !seen; k++)
				seen = out[k] == ROLE_PG_DATABASE_OWNER;
			if (!seen && n == WAL_MAX_ROLE_PRIVS)
				return -1;
			if (!seen)
				out[n++] = ROLE_PG_DATABASE_OWNER;
		}
	}
	return n;
}

static void
inval_reset(void)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	if (inval_ops == NULL)
	{
		inval_ops = makeStringInfo();
		inval_roles = makeStringInfo();
	}
	MemoryContextSwitchTo(old);
	resetStringInfo(inval_ops);
	resetStringInfo(inval_roles);
	inval_nops = 0;
	inval_nroles = 0;
	list_free(inval_logged_roles);
	inval_logged_roles = NIL;
}

/* The role's privileges, once per record: only deletes and tags check them. */
static void
inval_add_role(Oid role)
{
	Oid			privs[WAL_MAX_ROLE_PRIVS];
	int32		n;
	MemoryContext old;

	if (list_member_oid(inval_logged_roles, role))
		return;
	n = role_privs(role, privs);
	appendBinaryStringInfo(inval_roles, (char *) &role, sizeof(Oid));
	appendBinaryStringInfo(inval_roles, (char *) &n, sizeof(int32));
	if (n > 0)
		appendBinaryStringInfo(inval_roles, (char *) privs, sizeof(Oid) * n);
	inval_nroles++;
	old = MemoryContextSwitchTo(TopMemoryContext);
	inval_logged_roles = lappend_oid(inval_logged_roles, role);
	MemoryContextSwitchTo(old);
}

static void
inval_flush(void)
{
	HardenInvalRecord rec;
	XLogRecPtr	lsn;

	if (inval_nops == 0)
		return;
	rec.dboid = MyDatabaseId;
	rec.xid = GetTopTransactionIdIfAny();
	rec.nroles = inval_nroles;
	rec.nops = inval_nops;
	XLogBeginInsert();
	XLogRegisterData((char *) &rec, sizeof(rec));
	if (inval_roles->len > 0)
		XLogRegisterData(inval_roles->data, inval_roles->len);
	XLogRegisterData(inval_ops->data, inval_ops->len);
	lsn = XLogInsert((RmgrId) cache_rmgr_id, XLOG_HARDEN_INVALIDATIONS);
	XLogSetAsyncXactLSN(lsn);
	inval_reset();
}

/* Collect the invalidations a commit applies into one record. */
void
cache_wal_inval_begin(void)
{
	if (!cache_wal || RecoveryInProgress())
		return;
	inval_reset();
	inval_batching = true;
}

/*
 * A transaction that failed while its invalidations were collected: those
 * collected were applied here already (the cache is not transactional),
 * so they are logged all the same.  Nothing here reads the catalog.
 */
void
cache_wal_inval_cancel(void)
{
	if (!inval_batching)
		return;
	inval_batching = false;
	inval_flush();
}

void
cache_wal_inval_end(void)
{
	if (!inval_batching)
		return;
	inval_batching = false;
	inval_flush();
}

/*
 * An explicit invalidation this server has just applied: a delete, a set
 * (which replaces what a standby holds under the key), a pattern, a tag,
 * a flush, by role in this database.  Logged at once unless batching;
 * standbys apply it at replay, before the commit record that follows it.
 */
void
cache_wal_inval(CachePendingKind kind, const char *name, int namelen, Oid role)
{
	HardenInvalOp op;

	if (!cache_wal || RecoveryInProgress())
		return;
	if (!inval_batching)
		inval_reset();
	memset(&op, 0, sizeof(op));
	if (kind == CACHE_PENDING_SET || kind == CACHE_PENDING_DELETE || kind == CACHE_PENDING_TAG)
		inval_add_role(role);
	op.kind = (uint8) kind;
	Assert(namelen >= 0 && namelen <= PG_UINT16_MAX);	/* keys and tags are short */
	op.len = (uint16) Min(Max(namelen, 0), PG_UINT16_MAX);
	op.role = role;
	appendBinaryStringInfo(inval_ops, (char *) &op, sizeof(op));
	if (op.len > 0)
		appendBinaryStringInfo(inval_ops, name, op.len);
	inval_nops++;
	if (!inval_batching || inval_ops->len >= WAL_INVAL_FLUSH)
		inval_flush();
}

/* ---- replay ---- */

/* Read n bytes at *pos of a record of len bytes; false if it is short. */
static bool
take(const char *data, Size len, Size *pos, void *out, Size n)
{
	if (*pos + n > len)
		return false;
	memcpy(out, data + *pos, n);
	*pos += n;
	return true;
}

/* Replay allocates here, reset after each record: redo has no other reset. */
static MemoryContext redo_cxt = NULL;

static void
redo_invalidations(const char *data, Size len)
{
	HardenInvalRecord rec;
	CacheRolePrivs *sets;
	CacheMark  *marks;
	Size		pos = 0,
				ops_at;
	int			nmarks = 0;
	MemoryContext old;

	if (!take(data, len, &pos, &rec, sizeof(rec)))
		elog(PANIC, "pg_harden redo: short invalidation record");
	if (redo_cxt == NULL)
		redo_cxt = AllocSetContextCreate(TopMemoryContext, "pg_harden redo",
										 ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(redo_cxt);
	sets = palloc0(sizeof(CacheRolePrivs) * Max(rec.nroles, 1));
	for (uint32 i = 0; i < rec.nroles; i++)
	{
		int32		n;

		if (!take(data, len, &pos, &sets[i].role, sizeof(Oid)) ||
			!take(data, len, &pos, &n, sizeof(int32)))
			elog(PANIC, "pg_harden redo: short invalidation record");
		sets[i].n = n;
		if (n > 0)
		{
			Oid		   *privs = palloc(sizeof(Oid) * n);

			if (!take(data, len, &pos, privs, sizeof(Oid) * n))
				elog(PANIC, "pg_harden redo: short invalidation record");
			sets[i].privs = privs;
		}
	}
	ops_at = pos;
	marks = palloc(sizeof(CacheMark) * Max(rec.nops, 1));
	cache_store_use_database(rec.dboid);
	cache_apply_replay(sets, (int) rec.nroles);
	/* as on the primary: the markers first, then the deletes (two passes) */
	for (int pass = 0; pass < 2; pass++)
	{
		pos = ops_at;
		for (uint32 i = 0; i < rec.nops; i++)
		{
			HardenInvalOp op;
			const char *name;

			if (!take(data, len, &pos, &op, sizeof(op)) || pos + op.len > len)
				elog(PANIC, "pg_harden redo: short invalidation record");
			name = data + pos;
			pos += op.len;
			if (pass == 0)
			{
				marks[nmarks++] = cache_mark_of((CachePendingKind) op.kind, name, op.len);
				continue;
			}
			(void) cache_apply_removal((CachePendingKind) op.kind, name, op.len, op.role);
		}
		if (pass == 0 && TransactionIdIsValid(rec.xid))
			cache_store_mark(marks, nmarks, rec.xid);
	}
	cache_apply_replay(NULL, 0);
	cache_store_use_database(InvalidOid);
	MemoryContextSwitchTo(old);
	MemoryContextReset(redo_cxt);
}

/* At start (the launcher): a standby forgets what a crash may have lost. */
void
cache_wal_log_reset(void)
{
	XLogRecPtr	lsn;
	Oid			none = InvalidOid;

	if (!cache_wal || RecoveryInProgress())
		return;
	XLogBeginInsert();
	XLogRegisterData((char *) &none, sizeof(none));
	lsn = XLogInsert((RmgrId) cache_rmgr_id, XLOG_HARDEN_RESET);
	XLogSetAsyncXactLSN(lsn);
}

/*
 * Moves logged before their commit record: markers under the writer's xid
 * first, so that a result computed from a snapshot that misses the commit
 * but read a moved generation is not stored (cache_apply_set, and the
 * deferred sets of cache_xact.c, check them), then the moves themselves.
 */
static void
redo_generations(const HardenGenRecord *rec, Size len)
{
	if (len < offsetof(HardenGenRecord, keys) ||
		(len - offsetof(HardenGenRecord, keys)) / sizeof(uint64) < rec->nkeys)
		elog(PANIC, "pg_harden redo: short generations record");
	if (TransactionIdIsValid(rec->xid))
	{
		/* many keys: one marker for every query result of the database */
		int			n = rec->nkeys <= WAL_MARKED_KEYS ? (int) rec->nkeys : 1;
		CacheMark  *marks = palloc0(sizeof(CacheMark) * Max(n, 1));

		for (int i = 0; i < n; i++)
		{
			marks[i].kind = CACHE_MARK_GEN;
			marks[i].hash = n < (int) rec->nkeys ? CACHE_MARK_GEN_ANY : rec->keys[i];
		}
		cache_store_use_database(rec->dboid);
		cache_store_mark(marks, n, rec->xid);
		cache_store_use_database(InvalidOid);
		pfree(marks);
	}
	for (uint32 i = 0; i < rec->nkeys; i++)
		cache_gen_bump(rec->keys[i]);
}

static void
harden_rmgr_redo(XLogReaderState *record)
{
	uint8		info = XLogRecGetInfo(record) & XLR_RMGR_INFO_MASK;
	char	   *data = XLogRecGetData(record);

	/*
	 * Until hot standby accepts connections nothing can be cached here
	 * (crash recovery, a standby catching up, hot_standby off): the records
	 * have nothing to act on, and snapshot horizons are not known yet.
	 */
	if (standbyState != STANDBY_SNAPSHOT_READY)
		return;
	switch (info)
	{
		case XLOG_HARDEN_GENERATIONS:
			redo_generations((HardenGenRecord *) data, XLogRecGetDataLen(record));
			break;
		case XLOG_HARDEN_RESET:
			cache_gen_bump_epoch();
			break;
		case XLOG_HARDEN_INVALIDATIONS:
			redo_invalidations(data, XLogRecGetDataLen(record));
			break;
		default:
			elog(PANIC, "pg_harden redo: unknown record type %u", info);
	}
}

static void
harden_rmgr_desc(StringInfo buf, XLogReaderState *record)
{
	uint8		info = XLogRecGetInfo(record) & XLR_RMGR_INFO_MASK;

	if (info == XLOG_HARDEN_GENERATIONS)
	{
		HardenGenRecord *rec = (HardenGenRecord *) XLogRecGetData(record);

		appendStringInfo(buf, "db %u; %u generations", rec->dboid, rec->nkeys);
	}
	else if (info == XLOG_HARDEN_INVALIDATIONS)
	{
		HardenInvalRecord rec;

		memcpy(&rec, XLogRecGetData(record), sizeof(rec));
		appendStringInfo(buf, "db %u; xid %u; %u invalidations", rec.dboid, rec.xid, rec.nops);
	}
}

static const char *
harden_rmgr_identify(uint8 info)
{
	switch (info & XLR_RMGR_INFO_MASK)
	{
		case XLOG_HARDEN_GENERATIONS:
			return "GENERATIONS";
		case XLOG_HARDEN_RESET:
			return "RESET";
		case XLOG_HARDEN_INVALIDATIONS:
			return "INVALIDATIONS";
	}
	return NULL;
}
