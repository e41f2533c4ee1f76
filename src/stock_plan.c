/*
 * stock_plan.c
 *	  Per-backend cache of attached stock tables and their prepared plans.
 *
 * Each attached table gets its plans prepared once per backend (SPI_keepplan).
 * A relcache invalidation of the table (ALTER TABLE, DROP TABLE, and the
 * invalidation stock_attach / stock_detach send) marks the entry stale; the
 * next call rereads harden.stock_tables, checks the columns again and keeps
 * the plans only if nothing they depend on changed.
 *
 * Every statement names its operators with OPERATOR(schema.op) and its
 * relation by a quoted, qualified name, so neither the caller's search_path
 * nor odd identifiers can change what runs.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_operator.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "pg_harden.h"
#include "stock.h"

static HTAB *stock_tables = NULL;
static SPIPlanPtr config_plan = NULL;

/* harden.stock_tables itself: dropping it (DROP EXTENSION) forgets everything. */
static Oid	config_relid = InvalidOid;

static void
stock_relcache_callback(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS seq;
	StockTable *st;

	if (stock_tables == NULL)
		return;
	if (OidIsValid(relid) && relid == config_relid)
	{
		config_relid = InvalidOid;
		relid = InvalidOid;
	}
	if (OidIsValid(relid))
	{
		st = hash_search(stock_tables, &relid, HASH_FIND, NULL);
		if (st)
			st->valid = false;
		return;
	}
	hash_seq_init(&seq, stock_tables);
	while ((st = hash_seq_search(&seq)) != NULL)
		st->valid = false;
}

static void
stock_tables_init(void)
{
	HASHCTL		ctl;

	if (stock_tables)
		return;
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(StockTable);
	ctl.hcxt = CacheMemoryContext;
	stock_tables = hash_create("pg_harden stock tables", 16, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	CacheRegisterRelcacheCallback(stock_relcache_callback, (Datum) 0);
}

/* The table as the user would write it: qualified only when not visible. */
char *
stock_table_name(Oid relid)
{
	return DatumGetCString(DirectFunctionCall1(regclassout, ObjectIdGetDatum(relid)));
}

static void
free_plans(StockTable *st)
{
	SPIPlanPtr *plans[] = {&st->take, &st->lock[0], &st->lock[1], &st->lock[2],
	&st->peek, &st->deduct, &st->put};

	for (size_t i = 0; i < lengthof(plans); i++)
	{
		if (*plans[i])
			SPI_freeplan(*plans[i]);
		*plans[i] = NULL;
	}
}

void
stock_table_forget(Oid relid)
{
	StockTable *st;

	if (stock_tables == NULL)
		return;
	st = hash_search(stock_tables, &relid, HASH_FIND, NULL);
	if (st == NULL)
		return;
	free_plans(st);
	hash_search(stock_tables, &relid, HASH_REMOVE, NULL);
}

/*
 * Read the columns' current types into st.  Types that were fine at attach
 * time may have been altered since: that is reported as a changed table.
 */
static void
describe_columns(StockTable *st, Oid relid)
{
	char	   *tname = stock_table_name(relid);
	AttrNumber	qatt = get_attnum(relid, NameStr(st->qty_column));
	AttrNumber	katt = get_attnum(relid, NameStr(st->key_column));
	int32		qtypmod;
	Oid			qcoll;
	TypeCacheEntry *tc;

	if (qatt <= 0 || katt <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_STOCK_TABLE_CHANGED),
				 errmsg("stock table %s has no column \"%s\" any more",
						tname, NameStr((qatt <= 0 ? st->qty_column : st->key_column))),
				 errdetail("It was attached with quantity column \"%s\" and key column \"%s\".",
						   NameStr(st->qty_column), NameStr(st->key_column)),
				 errhint("Attach the table again with harden.stock_attach().")));
	get_atttypetypmodcoll(relid, qatt, &st->qty_type, &qtypmod, &qcoll);
	get_atttypetypmodcoll(relid, katt, &st->key_type, &st->key_typmod, &st->key_collation);
	switch (st->qty_type)
	{
		case INT2OID:
			st->qty_max = PG_INT16_MAX;
			break;
		case INT4OID:
			st->qty_max = PG_INT32_MAX;
			break;
		case INT8OID:
			st->qty_max = PG_INT64_MAX;
			break;
		case NUMERICOID:
			st->qty_max = 0;
			if (qtypmod < (int32) VARHDRSZ || ((qtypmod - VARHDRSZ) & 0xffff) != 0)
				ereport(ERROR,
						(errcode(ERRCODE_HARDEN_STOCK_TABLE_CHANGED),
						 errmsg("quantity column \"%s\" of stock table %s has fractional scale",
								NameStr(st->qty_column), tname),
						 errdetail("Quantities are whole units; use numeric(p) (scale 0) or an integer type."),
						 errhint("Attach the table again with harden.stock_attach().")));
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_HARDEN_STOCK_TABLE_CHANGED),
					 errmsg("quantity column \"%s\" of stock table %s is of type %s",
							NameStr(st->qty_column), tname, format_type_be(st->qty_type)),
					 errdetail("A quantity column must be smallint, integer, bigint or numeric."),
					 errhint("Attach the table again with harden.stock_attach().")));
	}
	tc = lookup_type_cache(st->key_type, TYPECACHE_CMP_PROC_FINFO | TYPECACHE_EQ_OPR);
	if (!OidIsValid(tc->cmp_proc_finfo.fn_oid) || !OidIsValid(tc->eq_opr))
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_STOCK_TABLE_CHANGED),
				 errmsg("key column \"%s\" of stock table %s has type %s, which has no default btree ordering",
						NameStr(st->key_column), tname, format_type_be(st->key_type)),
				 errhint("Attach the table again with harden.stock_attach().")));
	st->key_cmp = &tc->cmp_proc_finfo;
	{
		bool		varlena;

		getTypeOutputInfo(st->key_type, &st->key_output, &varlena);
		getTypeInputInfo(st->key_type, &st->key_input, &st->key_ioparam);
	}
}

/* Switch to the extension's owner (role_scope.c), search_path pinned. */
void
stock_owner_enter(StockOwnerScope *scope)
{
	harden_role_enter(scope, harden_table_owner("stock_holds"), false);
}

void
stock_owner_leave(StockOwnerScope *scope)
{
	harden_role_leave(scope);
}

/* "OPERATOR(schema.=)" for the key type's btree equality. */
static char *
key_eq_operator(Oid keytype)
{
	TypeCacheEntry *tc = lookup_type_cache(keytype, TYPECACHE_EQ_OPR);
	HeapTuple	tup = SearchSysCache1(OPEROID, ObjectIdGetDatum(tc->eq_opr));
	Form_pg_operator op;
	char	   *result;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for operator %u", tc->eq_opr);
	op = (Form_pg_operator) GETSTRUCT(tup);
	result = psprintf("OPERATOR(%s.%s)",
					  quote_identifier(get_namespace_name(op->oprnamespace)),
					  NameStr(op->oprname));
	ReleaseSysCache(tup);
	return result;
}

SPIPlanPtr
stock_prepare(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	return plan;
}

/* Prepare every plan first and keep them only when all succeeded. */
static void
prepare_plans(StockTable *st)
{
	Oid			relid = st->relid;

	/*
	 * ONLY a plain table: its unique index covers none of its inheritance
	 * children's rows.  (A partitioned table's unique index covers all its
	 * partitions.)
	 */
	char	   *tbl = psprintf("%s%s", get_rel_relkind(relid) == RELKIND_RELATION ? "ONLY " : "",
							   quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
														  get_rel_name(relid)));
	const char *q = quote_identifier(NameStr(st->qty_column));
	const char *k = quote_identifier(NameStr(st->key_column));
	char	   *eq = key_eq_operator(st->key_type);
	Oid			args[3] = {st->key_type, INT8OID, INT8OID};
	static const char *const lock_clause[STOCK_LOCK_PLANS] = {
		[STOCK_WAIT_BLOCK] = "",
		[STOCK_WAIT_NOWAIT] = " NOWAIT",
		[STOCK_WAIT_SKIP] = " SKIP LOCKED",
	};
	SPIPlanPtr	take,
				lock[STOCK_LOCK_PLANS],
				peek,
				deduct,
				put;

	take = stock_prepare(psprintf("UPDATE %s SET %s = %s OPERATOR(pg_catalog.-) $2"
							" WHERE %s %s $1 AND %s OPERATOR(pg_catalog.>=) $2"
							" RETURNING CAST(%s AS pg_catalog.int8)",
							tbl, q, q, k, eq, q, q), 2, args);
	for (int i = 0; i < STOCK_LOCK_PLANS; i++)
		lock[i] = stock_prepare(psprintf("SELECT %s OPERATOR(pg_catalog.>=) $2, CAST(%s AS pg_catalog.text)"
								   " FROM %s WHERE %s %s $1 FOR NO KEY UPDATE%s",
								   q, q, tbl, k, eq, lock_clause[i]), 2, args);
	peek = stock_prepare(psprintf("SELECT %s OPERATOR(pg_catalog.>=) $2, CAST(%s AS pg_catalog.text)"
							" FROM %s WHERE %s %s $1",
							q, q, tbl, k, eq), 2, args);
	deduct = stock_prepare(psprintf("UPDATE %s SET %s = %s OPERATOR(pg_catalog.-) $2"
							  " WHERE %s %s $1 RETURNING CAST(%s AS pg_catalog.int8)",
							  tbl, q, q, k, eq, q), 2, args);
	put = stock_prepare(psprintf("UPDATE %s SET %s = %s OPERATOR(pg_catalog.+) $2"
						   " WHERE %s %s $1 AND ($3 IS NULL OR %s OPERATOR(pg_catalog.<=) $3)"
						   " RETURNING CAST(%s AS pg_catalog.int8)",
						   tbl, q, q, k, eq, q, q), 3, args);

	SPI_keepplan(take);
	for (int i = 0; i < STOCK_LOCK_PLANS; i++)
		SPI_keepplan(lock[i]);
	SPI_keepplan(peek);
	SPI_keepplan(deduct);
	SPI_keepplan(put);
	st->take = take;
	memcpy(st->lock, lock, sizeof(lock));
	st->peek = peek;
	st->deduct = deduct;
	st->put = put;
}

/*
 * The configuration of relid from harden.stock_tables, or false.  The caller
 * is connected to SPI.
 */
static bool
read_config(Oid relid, NameData *qty, NameData *key)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	bool		isnull;
	int			ret;
	StockOwnerScope scope;

	/* As the extension's owner: the caller needs no access to schema harden. */
	stock_owner_enter(&scope);
	if (config_plan == NULL)
	{
		SPIPlanPtr	plan = stock_prepare("SELECT qty_column, key_column FROM harden.stock_tables"
								   " WHERE relid OPERATOR(pg_catalog.=) $1", 1, argtypes);

		SPI_keepplan(plan);
		config_plan = plan;
	}
	if (!OidIsValid(config_relid))
		config_relid = get_relname_relid("stock_tables", get_namespace_oid("harden", false));
	ret = SPI_execute_plan(config_plan, values, NULL, true, 1);
	stock_owner_leave(&scope);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read harden.stock_tables: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return false;
	namestrcpy(qty, NameStr(*DatumGetName(SPI_getbinval(SPI_tuptable->vals[0],
														SPI_tuptable->tupdesc, 1, &isnull))));
	namestrcpy(key, NameStr(*DatumGetName(SPI_getbinval(SPI_tuptable->vals[0],
														SPI_tuptable->tupdesc, 2, &isnull))));
	return true;
}

static void
not_attached(Oid relid)
{
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_STOCK_NOT_ATTACHED),
			 errmsg("table %s is not attached as a stock table", stock_table_name(relid)),
			 errhint("Attach it with harden.stock_attach(table, quantity_column, key_column).")));
}

/*
 * The attached table relid, with valid plans.  Raises PH302 when it is not
 * attached and PH307 when its columns no longer fit.  The caller is
 * connected to SPI.
 */
StockTable *
stock_table_get(Oid relid)
{
	StockTable *st;
	StockTable	fresh;
	bool		found;

	stock_tables_init();

	/*
	 * Lock the table first, as the statements will: that takes in every
	 * invalidation committed so far, and no one can rename, drop or alter
	 * the table until this transaction ends, so the plans checked below
	 * are the ones that run.  (A plan names its table; were it re-analysed
	 * after a rename, it could resolve to another table of the old name.)
	 */
	LockRelationOid(relid, RowExclusiveLock);
	st = hash_search(stock_tables, &relid, HASH_FIND, &found);
	if (found && st->valid)
		return st;

	memset(&fresh, 0, sizeof(fresh));
	fresh.relid = relid;
	if (get_rel_relkind(relid) == '\0' || !read_config(relid, &fresh.qty_column, &fresh.key_column))
	{
		stock_table_forget(relid);
		not_attached(relid);
	}
	describe_columns(&fresh, relid);
	fresh.relnamespace = get_rel_namespace(relid);
	namestrcpy(&fresh.relname, get_rel_name(relid));

	/* Plans survive when the table's name and definition still match them. */
	if (found && st->take &&
		st->relnamespace == fresh.relnamespace &&
		namestrcmp(&st->relname, NameStr(fresh.relname)) == 0 &&
		namestrcmp(&st->qty_column, NameStr(fresh.qty_column)) == 0 &&
		namestrcmp(&st->key_column, NameStr(fresh.key_column)) == 0 &&
		st->qty_type == fresh.qty_type && st->key_type == fresh.key_type &&
		st->key_collation == fresh.key_collation)
	{
		st->key_cmp = fresh.key_cmp;
		st->valid = true;
		return st;
	}
	stock_table_forget(relid);

	prepare_plans(&fresh);
	st = hash_search(stock_tables, &relid, HASH_ENTER, NULL);
	*st = fresh;
	st->valid = true;
	return st;
}
