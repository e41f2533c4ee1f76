/*
 * cache_wal.c
 *	  Write generations in the WAL, for hot standbys (harden.cache_wal).
 *
 * A committed transaction's generation moves (the writes cache_track.c
 * saw: relations, values, role grants) are logged as one record of a
 * custom resource manager, inserted after the commit record, from the
 * commit callback.  A standby replays it after the commit, when snapshots
 * taken there already see the write; its readers read generations before
 * their snapshot as on the primary, so a result computed from a snapshot
 * that missed the commit carries the older generation and is never stored
 * as current.  Every key is logged, whether or not the primary has a slot
 * for it: a standby's results are its own.
 *
 * A record lost by a crash between the commit record and this one is
 * covered by a reset record the launcher logs at every start: a standby
 * replaying it makes all its query results stale.
 *
 * The resource manager is registered whenever pg_harden is preloaded, so a
 * standby replays these records whatever its own setting; one that does
 * not preload pg_harden stops at the first with PostgreSQL's "resource
 * manager with ID ... not registered".
 */
#include "postgres.h"

#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xloginsert.h"
#include "access/xlogreader.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "pg_harden.h"
#include "cache.h"

#define XLOG_HARDEN_GENERATIONS	0x00
#define XLOG_HARDEN_RESET		0x10

/* Keys of one record; a transaction moving more makes its database stale. */
#define WAL_MAX_KEYS 1024

typedef struct HardenGenRecord
{
	Oid			dboid;
	uint32		nkeys;
	uint64		keys[FLEXIBLE_ARRAY_MEMBER];
} HardenGenRecord;

bool		cache_wal = false;
static int	cache_rmgr_id = RM_EXPERIMENTAL_ID;

/* Keys collected while a commit moves generations (cache_wal_begin/end). */
static bool collecting = false;
static uint32 nkeys = 0;
static bool overflow = false;
static uint64 keys[WAL_MAX_KEYS];

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
							 "Logs write generations in the WAL, so hot standbys invalidate cached query results at replay.",
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
 * Log what was collected.  From a commit callback: nothing here may fail
 * but what would fail any WAL insertion.  The walwriter is nudged so the
 * record streams without waiting for the next commit.
 */
void
cache_wal_end(void)
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
	rec.dboid = MyDatabaseId;
	rec.nkeys = nkeys;
	XLogBeginInsert();
	XLogRegisterData((char *) &rec, offsetof(HardenGenRecord, keys));
	XLogRegisterData((char *) keys, sizeof(uint64) * nkeys);
	lsn = XLogInsert((RmgrId) cache_rmgr_id, XLOG_HARDEN_GENERATIONS);
	XLogSetAsyncXactLSN(lsn);
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

static void
harden_rmgr_redo(XLogReaderState *record)
{
	uint8		info = XLogRecGetInfo(record) & XLR_RMGR_INFO_MASK;
	char	   *data = XLogRecGetData(record);

	switch (info)
	{
		case XLOG_HARDEN_GENERATIONS:
			{
				HardenGenRecord *rec = (HardenGenRecord *) data;

				for (uint32 i = 0; i < rec->nkeys; i++)
					cache_gen_bump(rec->keys[i]);
				break;
			}
		case XLOG_HARDEN_RESET:
			cache_gen_bump_epoch();
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
	}
	return NULL;
}
