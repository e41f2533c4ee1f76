/*
 * analyze_size.c
 *	  Relation sizes and names for the analysis views, without relation
 *	  locks: harden._relation_bytes() and harden._qualified().
 *
 * pg_relation_size() and its siblings open the relation, so they queue
 * behind an ALTER TABLE waiting for its lock, and every later reader of
 * that table queues behind them.  The analysis views are what one runs
 * when the server is in trouble, so they must answer at once: sizes come
 * from the catalog row and stat() of the files, as dbsize.c measures them
 * once it has the relation open.  A relation dropped or rewritten at that
 * moment counts what is on disk (a missing file is 0 bytes).
 */
#include "postgres.h"

#include <sys/stat.h>
#include <unistd.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_inherits.h"
#include "common/relpath.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#if PG_VERSION_NUM < 170000
#include "storage/backendid.h"
#endif
#if PG_VERSION_NUM < 160000
#include "storage/relfilenode.h"
#else
#include "storage/relfilelocator.h"
#endif
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/relmapper.h"
#include "utils/syscache.h"

#include "pg_harden.h"
#include "analyze.h"

/* The names of PostgreSQL 16 (relfilenumbers) and 17 (proc numbers). */
#if PG_VERSION_NUM >= 160000
typedef RelFileLocator HardenFileNode;
#define HFN_SPC(n) ((n).spcOid)
#define HFN_DB(n) ((n).dbOid)
#define HFN_REL(n) ((n).relNumber)
#define harden_map_filenode RelationMapOidToFilenumber
#else
typedef RelFileNode HardenFileNode;
#define HFN_SPC(n) ((n).spcNode)
#define HFN_DB(n) ((n).dbNode)
#define HFN_REL(n) ((n).relNode)
#define harden_map_filenode RelationMapOidToFilenode
#endif
#if PG_VERSION_NUM >= 170000
typedef ProcNumber HardenBackend;
#define HARDEN_NO_BACKEND INVALID_PROC_NUMBER
#define harden_temp_backend() ProcNumberForTempRelations()
#else
typedef BackendId HardenBackend;
#define HARDEN_NO_BACKEND InvalidBackendId
#define harden_temp_backend() BackendIdForTempRelations()
#endif

typedef struct RelBytes
{
	int64		main;			/* main fork */
	int64		table;			/* every fork */
	int64		indexes;		/* every fork of every index */
	int64		toast;			/* TOAST table and its index */
	double		rows;			/* pg_class.reltuples, unknown counted as 0 */
} RelBytes;

/* Bytes of one fork: the sum of its segments (only a full one has a next). */
static int64
fork_bytes(const char *path)
{
	int64		total = 0;

	for (unsigned int segno = 0;; segno++)
	{
		char		segpath[MAXPGPATH];
		struct stat st;

		if (segno == 0)
			snprintf(segpath, sizeof(segpath), "%s", path);
		else
			snprintf(segpath, sizeof(segpath), "%s.%u", path, segno);
		if (stat(segpath, &st) < 0)
		{
			if (errno == ENOENT)
				break;
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not stat file \"%s\": %m", segpath)));
		}
		total += st.st_size;
		if (st.st_size < (off_t) RELSEG_SIZE * BLCKSZ)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	return total;
}

/*
 * Bytes of relid's own storage (no TOAST, no indexes): the main fork into
 * *main, all forks into *all.  False when relid is gone or has no storage
 * of its own, or is another session's temporary relation.
 */
static bool
storage_bytes(Oid relid, bool main_only, int64 *main, int64 *all, Oid *toast,
			  double *rows)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Form_pg_class rel;
	HardenFileNode node;
	HardenBackend backend = HARDEN_NO_BACKEND;

	*main = *all = 0;
	*toast = InvalidOid;
	*rows = 0;
	if (!HeapTupleIsValid(tup))
		return false;
	rel = (Form_pg_class) GETSTRUCT(tup);
	*toast = rel->reltoastrelid;
	*rows = Max(rel->reltuples, 0);
	if (!RELKIND_HAS_STORAGE(rel->relkind) ||
		(rel->relpersistence == RELPERSISTENCE_TEMP &&
		 !isTempOrTempToastNamespace(rel->relnamespace)))
	{
		ReleaseSysCache(tup);
		return false;
	}
	if (rel->relpersistence == RELPERSISTENCE_TEMP)
		backend = harden_temp_backend();
	HFN_SPC(node) = OidIsValid(rel->reltablespace) ? rel->reltablespace : MyDatabaseTableSpace;
	HFN_DB(node) = rel->relisshared ? InvalidOid : MyDatabaseId;
	HFN_REL(node) = OidIsValid(rel->relfilenode) ? rel->relfilenode :
		harden_map_filenode(relid, rel->relisshared);
	ReleaseSysCache(tup);
	if (!OidIsValid(HFN_REL(node)))
		return false;
	for (ForkNumber fork = 0; fork <= (main_only ? MAIN_FORKNUM : MAX_FORKNUM); fork++)
	{
		char	   *path = relpathbackend(node, backend, fork);
		int64		bytes = fork_bytes(path);

		pfree(path);
		if (fork == MAIN_FORKNUM)
			*main = bytes;
		*all += bytes;
	}
	return true;
}

/* Every fork of every index of relid, found in pg_index (no relcache). */
static int64
indexes_bytes(Oid relid)
{
	Relation	pg_index = table_open(IndexRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	int64		total = 0;

	ScanKeyInit(&key, Anum_pg_index_indrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(pg_index, IndexIndrelidIndexId, true, NULL, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		int64		main;
		int64		all;
		Oid			toast;
		double		rows;

		if (storage_bytes(((Form_pg_index) GETSTRUCT(tup))->indexrelid, false, &main, &all, &toast, &rows))
			total += all;
	}
	systable_endscan(scan);
	table_close(pg_index, AccessShareLock);
	return total;
}

/* Add one relation with storage (a table, an index, a leaf partition). */
static void
add_leaf(Oid relid, RelBytes *b)
{
	int64		main;
	int64		all;
	Oid			toast;
	double		rows;

	if (!storage_bytes(relid, false, &main, &all, &toast, &rows))
		return;
	b->rows += rows;
	b->main += main;
	b->table += all;
	if (get_rel_relkind(relid) != RELKIND_INDEX)
		b->indexes += indexes_bytes(relid);
	if (OidIsValid(toast) && storage_bytes(toast, false, &main, &all, &toast, &rows))
		b->toast += all + indexes_bytes(toast);
}

PG_FUNCTION_INFO_V1(harden_relation_bytes);

/*
 * harden._relation_bytes(rel oid) → (main_bytes, table_bytes, index_bytes,
 * toast_bytes, rows): like pg_relation_size(), pg_table_size() without TOAST,
 * pg_indexes_size() and the TOAST part of pg_total_relation_size(); a
 * partitioned table or index sums its leaf partitions.  NULL for a
 * relation that does not exist.
 */
Datum
harden_relation_bytes(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char		kind = get_rel_relkind(relid);
	RelBytes	b = {0, 0, 0, 0, 0};
	TupleDesc	desc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	if (kind == '\0')
		PG_RETURN_NULL();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "harden._relation_bytes() must return a record");
	if (kind == RELKIND_PARTITIONED_TABLE || kind == RELKIND_PARTITIONED_INDEX)
	{
		/* NoLock: the tree as pg_inherits shows it now, no waiting. */
		List	   *tree = find_all_inheritors(relid, NoLock, NULL);
		ListCell   *lc;

		foreach(lc, tree)
			add_leaf(lfirst_oid(lc), &b);
	}
	else
		add_leaf(relid, &b);
	values[0] = Int64GetDatum(b.main);
	values[1] = Int64GetDatum(b.table);
	values[2] = Int64GetDatum(b.indexes);
	values[3] = Int64GetDatum(b.toast);
	values[4] = Float8GetDatum(b.rows);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

PG_FUNCTION_INFO_V1(harden_main_bytes);

/*
 * harden._main_bytes(rel oid): the main fork, as pg_relation_size(); a
 * partitioned table or index sums its leaves.  NULL for a relation that
 * does not exist.  One stat() for most relations.
 */
Datum
harden_main_bytes(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char		kind = get_rel_relkind(relid);
	int64		total = 0;
	int64		main;
	int64		all;
	Oid			toast;
	double		rows;

	if (kind == '\0')
		PG_RETURN_NULL();
	if (kind == RELKIND_PARTITIONED_TABLE || kind == RELKIND_PARTITIONED_INDEX)
	{
		List	   *tree = find_all_inheritors(relid, NoLock, NULL);
		ListCell   *lc;

		foreach(lc, tree)
			if (storage_bytes(lfirst_oid(lc), true, &main, &all, &toast, &rows))
				total += main;
	}
	else if (storage_bytes(relid, true, &main, &all, &toast, &rows))
		total = main;
	PG_RETURN_INT64(total);
}

PG_FUNCTION_INFO_V1(harden_qualified);

/* harden._qualified(rel oid): "schema"."name", quoted as needed; NULL if gone. */
Datum
harden_qualified(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *rel = get_rel_name(relid);
	char	   *nsp;

	if (rel == NULL)
		PG_RETURN_NULL();
	nsp = get_namespace_name(get_rel_namespace(relid));
	if (nsp == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(quote_qualified_identifier(nsp, rel)));
}
