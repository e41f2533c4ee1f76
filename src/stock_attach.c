/*
 * stock_attach.c
 *	  stock_attach / stock_detach: validate a table's stock columns, add the
 *	  CHECK (qty >= 0) guard when the table has none, and record the table in
 *	  harden.stock_tables.
 *
 * Attaching is an administrative act: EXECUTE is revoked from PUBLIC and the
 * caller must also own the table (it alters the table's constraints).
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "pg_harden.h"
#include "analyze.h"
#include "stock.h"

/* The name of the guard stock_attach adds. */
#define STOCK_GUARD_NAME "harden_stock_nonnegative"

static void
invalid_table(Oid relid, const char *msg, const char *detail, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_STOCK_INVALID_TABLE),
			 errmsg("cannot attach %s as a stock table: %s", stock_table_name(relid), msg),
			 detail ? errdetail_internal("%s", detail) : 0,
			 hint ? errhint("%s", hint) : 0));
}

/* The table must exist, be a (partitioned) table, and belong to the caller. */
static void
check_table(Oid relid)
{
	char		relkind = get_rel_relkind(relid);

	if (relkind == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
		invalid_table(relid, "not a table", NULL, NULL);
#if PG_VERSION_NUM >= 160000
	if (!object_ownercheck(RelationRelationId, relid, GetUserId()))
#else
	if (!pg_class_ownercheck(relid, GetUserId()))
#endif
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of table %s", stock_table_name(relid))));
}

static AttrNumber
column(Oid relid, Name name, const char *what)
{
	AttrNumber	att = get_attnum(relid, NameStr(*name));

	if (att <= 0)
		invalid_table(relid, psprintf("it has no %s column \"%s\"", what, NameStr(*name)),
					  NULL, NULL);
	return att;
}

static bool
visit_unique(Form_pg_index idx, HeapTuple tup, void *arg)
{
	AttrNumber	att = *(AttrNumber *) arg;

	return idx->indisunique && idx->indnkeyatts == 1 && idx->indkey.values[0] == att &&
		heap_attisnull(tup, Anum_pg_index_indpred, NULL) &&
		heap_attisnull(tup, Anum_pg_index_indexprs, NULL);
}

/* Whether a valid, non-partial unique index covers exactly the column. */
static bool
column_is_unique(Relation rel, AttrNumber att)
{
	return analyze_any_index(RelationGetRelid(rel), visit_unique, &att);
}

/* The key column: the named one, which must be unique, or the primary key. */
static void
key_column(Oid relid, NameData *key, bool given)
{
	Relation	rel = table_open(relid, AccessShareLock);
	AttrNumber	att;
	TypeCacheEntry *tc;

	if (!given)
	{
		Oid			pk = RelationGetPrimaryKeyIndex(rel);
		HeapTuple	tup;
		Form_pg_index idx;

		if (!OidIsValid(pk))
			invalid_table(relid, "it has no primary key", NULL,
						  "Name the key column: harden.stock_attach(table, quantity_column, key_column).");
		tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(pk));
		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for index %u", pk);
		idx = (Form_pg_index) GETSTRUCT(tup);
		if (idx->indnkeyatts != 1)
			invalid_table(relid, "its primary key has more than one column", NULL,
						  "Name a unique key column: harden.stock_attach(table, quantity_column, key_column).");
		att = idx->indkey.values[0];
		ReleaseSysCache(tup);
		namestrcpy(key, get_attname(relid, att, false));
	}
	else
	{
		att = column(relid, key, "key");
		if (!column_is_unique(rel, att))
			invalid_table(relid, psprintf("key column \"%s\" is not unique", NameStr(*key)),
						  "The key column needs a unique index (or a primary key) on that column alone.",
						  NULL);
	}
	tc = lookup_type_cache(get_atttype(relid, att), TYPECACHE_CMP_PROC | TYPECACHE_EQ_OPR);
	if (!OidIsValid(tc->cmp_proc) || !OidIsValid(tc->eq_opr))
		invalid_table(relid, psprintf("key column \"%s\" has type %s, which has no default btree ordering",
									  NameStr(*key), format_type_be(tc->type_id)), NULL, NULL);
	table_close(rel, AccessShareLock);
}

static void
qty_column(Oid relid, NameData *qty, const NameData *key)
{
	AttrNumber	att = column(relid, qty, "quantity");
	Oid			type;
	int32		typmod;
	Oid			coll;
	HeapTuple	tup;
	bool		notnull;

	if (namestrcmp(qty, NameStr(*key)) == 0)
		invalid_table(relid, "the quantity column is the key column", NULL, NULL);
	get_atttypetypmodcoll(relid, att, &type, &typmod, &coll);
	if (type != INT2OID && type != INT4OID && type != INT8OID && type != NUMERICOID)
		invalid_table(relid, psprintf("quantity column \"%s\" has type %s", NameStr(*qty), format_type_be(type)),
					  "A quantity column must be smallint, integer, bigint or numeric.", NULL);
	/*
	 * numeric(p,s) keeps its scale in the low 16 bits of typmod - VARHDRSZ;
	 * a numeric without a typmod holds fractions too.
	 */
	if (type == NUMERICOID && (typmod < (int32) VARHDRSZ || ((typmod - VARHDRSZ) & 0xffff) != 0))
		invalid_table(relid, psprintf("quantity column \"%s\" has fractional scale", NameStr(*qty)),
					  "Quantities are whole units; use numeric(p) (scale 0) or an integer type.", NULL);
	tup = SearchSysCache2(ATTNUM, ObjectIdGetDatum(relid), Int16GetDatum(att));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for attribute %d of relation %u", att, relid);
	notnull = ((Form_pg_attribute) GETSTRUCT(tup))->attnotnull;
	ReleaseSysCache(tup);
	if (!notnull)
		invalid_table(relid, psprintf("quantity column \"%s\" allows NULL", NameStr(*qty)), NULL,
					  psprintf("ALTER TABLE %s ALTER COLUMN %s SET NOT NULL", stock_table_name(relid),
							   quote_identifier(NameStr(*qty))));
}

/* ---- the guard ---- */

/* Whether a validated CHECK (qty >= 0) is already there, under any name. */
static bool
has_guard(Oid relid, const NameData *qty)
{
	Oid			argtypes[3] = {OIDOID, TEXTOID, TEXTOID};
	const char *q = quote_identifier(NameStr(*qty));
	Datum		values[3];
	StockOwnerScope scope;
	int			ret;

	values[0] = ObjectIdGetDatum(relid);
	values[1] = CStringGetTextDatum(psprintf("CHECK ((%s >= 0))", q));
	values[2] = CStringGetTextDatum(psprintf("CHECK ((%s >= (0)::numeric))", q));
	stock_owner_enter(&scope);
	ret = SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_constraint"
								" WHERE conrelid OPERATOR(pg_catalog.=) $1 AND contype OPERATOR(pg_catalog.=) 'c'"
								" AND convalidated AND pg_catalog.pg_get_constraintdef(oid)"
								" OPERATOR(pg_catalog.=) ANY (ARRAY[$2, $3])",
								3, argtypes, values, NULL, false, 1);
	stock_owner_leave(&scope);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_constraint: %s", SPI_result_code_string(ret));
	return SPI_processed > 0;
}

static char *
qualified_name(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

static void
run_utility(const char *sql)
{
	int			ret = SPI_execute(sql, false, 0);

	if (ret != SPI_OK_UTILITY)
		elog(ERROR, "could not run \"%s\": %s", sql, SPI_result_code_string(ret));
}

static void
add_guard(Oid relid, const NameData *qty)
{
	const char *q = quote_identifier(NameStr(*qty));

	run_utility(psprintf("ALTER TABLE %s ADD CONSTRAINT %s CHECK (%s OPERATOR(pg_catalog.>=) 0)",
						 qualified_name(relid), STOCK_GUARD_NAME, q));
}

static void
drop_guard(Oid relid, const char *guard)
{
	run_utility(psprintf("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s",
						 qualified_name(relid), quote_identifier(guard)));
}

/* ---- harden.stock_tables ---- */

typedef struct StockConfig
{
	bool		found;
	NameData	qty;
	NameData	key;
	bool		has_guard;
	NameData	guard;
} StockConfig;

static StockConfig
config_read(Oid relid)
{
	StockConfig cfg = {0};
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	StockOwnerScope scope;
	bool		isnull;
	Datum		d;
	int			ret;

	stock_owner_enter(&scope);
	ret = SPI_execute_with_args("SELECT qty_column, key_column, guard FROM harden.stock_tables"
								" WHERE relid OPERATOR(pg_catalog.=) $1 FOR UPDATE",
								1, argtypes, values, NULL, false, 1);
	stock_owner_leave(&scope);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read harden.stock_tables: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return cfg;
	cfg.found = true;
	namestrcpy(&cfg.qty, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	namestrcpy(&cfg.key, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	if (!isnull)
	{
		cfg.has_guard = true;
		namestrcpy(&cfg.guard, NameStr(*DatumGetName(d)));
	}
	return cfg;
}

static int64
active_holds(Oid relid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	StockOwnerScope scope;
	bool		isnull;
	int			ret;

	stock_owner_enter(&scope);
	ret = SPI_execute_with_args("SELECT pg_catalog.count(*) FROM harden.stock_holds"
								" WHERE relid OPERATOR(pg_catalog.=) $1 AND status OPERATOR(pg_catalog.=) 'held'",
								1, argtypes, values, NULL, false, 1);
	stock_owner_leave(&scope);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read harden.stock_holds: %s", SPI_result_code_string(ret));
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

static void
refuse_if_held(Oid relid, const char *action)
{
	int64		n = active_holds(relid);

	if (n > 0)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_STOCK_HOLDS_ACTIVE),
				 errmsg("cannot %s stock table %s while it has active reservations",
						action, stock_table_name(relid)),
				 errdetail_plural("%d reservation is held.", "%d reservations are held.",
								  (unsigned long) n, (int) n),
				 errhint("Commit or release them first (see harden.stock_reservations).")));
}

static void
config_write(Oid relid, const NameData *qty, const NameData *key, const char *guard)
{
	Oid			argtypes[5] = {OIDOID, NAMEOID, NAMEOID, NAMEOID, OIDOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', guard ? ' ' : 'n', ' '};
	Oid			caller = GetUserId();
	StockOwnerScope scope;
	int			ret;

	values[0] = ObjectIdGetDatum(relid);
	values[1] = NameGetDatum(qty);
	values[2] = NameGetDatum(key);
	values[3] = guard ? CStringGetDatum(guard) : (Datum) 0;
	values[4] = ObjectIdGetDatum(caller);
	if (guard)
	{
		NameData   *g = palloc(sizeof(NameData));

		namestrcpy(g, guard);
		values[3] = NameGetDatum(g);
	}
	stock_owner_enter(&scope);
	ret = SPI_execute_with_args("INSERT INTO harden.stock_tables"
								" (relid, qty_column, key_column, guard, attached_by)"
								" VALUES ($1, $2, $3, $4, $5)"
								" ON CONFLICT (relid) DO UPDATE SET qty_column = excluded.qty_column,"
								" key_column = excluded.key_column, guard = excluded.guard,"
								" attached_at = pg_catalog.now(), attached_by = excluded.attached_by",
								5, argtypes, values, nulls, false, 0);
	stock_owner_leave(&scope);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not write harden.stock_tables: %s", SPI_result_code_string(ret));
}

static void
config_delete(Oid relid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	StockOwnerScope scope;
	int			ret;

	stock_owner_enter(&scope);
	ret = SPI_execute_with_args("DELETE FROM harden.stock_tables WHERE relid OPERATOR(pg_catalog.=) $1",
								1, argtypes, values, NULL, false, 0);
	stock_owner_leave(&scope);
	if (ret != SPI_OK_DELETE)
		elog(ERROR, "could not write harden.stock_tables: %s", SPI_result_code_string(ret));
}

/* Every backend rereads the table's configuration after commit. */
static void
config_changed(Oid relid)
{
	CacheInvalidateRelcacheByRelid(relid);
	stock_table_forget(relid);
}

/* ---- SQL functions ---- */

PG_FUNCTION_INFO_V1(harden_stock_attach);

/* stock_attach(tbl regclass, qty_column name, key_column name DEFAULT NULL) */
Datum
harden_stock_attach(PG_FUNCTION_ARGS)
{
	Oid			relid;
	NameData	qty;
	NameData	key;
	StockConfig old;
	const char *guard = NULL;

	harden_deny_on_standby("harden.stock_attach()");

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stock table and quantity column must not be NULL")));
	relid = PG_GETARG_OID(0);
	namestrcpy(&qty, NameStr(*PG_GETARG_NAME(1)));
	if (!PG_ARGISNULL(2))
		namestrcpy(&key, NameStr(*PG_GETARG_NAME(2)));

	check_table(relid);
	/* One attach or detach of a table at a time; DML goes on. */
	LockRelationOid(relid, ShareUpdateExclusiveLock);
	key_column(relid, &key, !PG_ARGISNULL(2));
	qty_column(relid, &qty, &key);

	SPI_connect();
	old = config_read(relid);
	if (old.found && (namestrcmp(&old.qty, NameStr(qty)) != 0 || namestrcmp(&old.key, NameStr(key)) != 0))
	{
		refuse_if_held(relid, "re-attach");
		if (old.has_guard && namestrcmp(&old.qty, NameStr(qty)) != 0)
		{
			drop_guard(relid, NameStr(old.guard));
			old.has_guard = false;
		}
	}
	if (old.found && old.has_guard)
		guard = NameStr(old.guard);
	else if (!has_guard(relid, &qty))
	{
		add_guard(relid, &qty);
		guard = STOCK_GUARD_NAME;
	}
	config_write(relid, &qty, &key, guard);
	SPI_finish();
	config_changed(relid);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(harden_stock_detach);

/* stock_detach(tbl regclass) -> false if it was not attached */
Datum
harden_stock_detach(PG_FUNCTION_ARGS)
{
	Oid			relid;
	StockConfig old;

	harden_deny_on_standby("harden.stock_detach()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stock table must not be NULL")));
	relid = PG_GETARG_OID(0);
	check_table(relid);
	LockRelationOid(relid, ShareUpdateExclusiveLock);

	SPI_connect();
	old = config_read(relid);
	if (old.found)
	{
		refuse_if_held(relid, "detach");
		config_delete(relid);
		if (old.has_guard)
			drop_guard(relid, NameStr(old.guard));
	}
	SPI_finish();
	if (old.found)
		config_changed(relid);
	PG_RETURN_BOOL(old.found);
}
