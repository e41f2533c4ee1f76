/*
 * stock.c
 *	  Stock deduction: stock_take, stock_take_many and stock_put, and the line
 *	  operations the reservations reuse.
 *
 * A single line in block mode is one UPDATE ... WHERE qty >= n, as cheap as
 * the statement an application would write.  Several lines (or a wait policy
 * other than block) lock every row first, in the key column's btree order,
 * so any two callers lock shared rows in the same order and cannot deadlock;
 * only when every line is known and sufficient is anything deducted.
 *
 * Every function runs with the caller's privileges (SECURITY INVOKER): the
 * caller needs SELECT and UPDATE on the stock table, as for the UPDATE it
 * replaces.  (Expiry, in stock_hold.c, runs these as the table's owner.)
 * Every UPDATE's row count is checked: a trigger or policy that turns one
 * into a no-op is PH309, never a silent success.
 */
#include "postgres.h"

#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "lib/stringinfo.h"
#include "parser/parse_coerce.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/typcache.h"

#include "pg_harden.h"
#include "stock.h"

/* Most lines one call takes, reserves or gives back. */
#define STOCK_MAX_LINES 100000

/* Longest list of lines an error DETAIL spells out. */
#define STOCK_DETAIL_MAX_LINES 100

int			stock_hold_retention_s = 7 * 24 * 3600;

void
stock_define_gucs(bool preloading)
{
	DefineCustomIntVariable("harden.stock_hold_retention",
							"How long finished reservations stay in harden.stock_holds (0: forever).",
							"harden.stock_run_due() deletes committed, released and expired holds closed longer ago than this.",
							&stock_hold_retention_s,
							7 * 24 * 3600, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
}

/* ---- argument checks ---- */

static Oid
arg_table(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stock table must not be NULL")));
	return PG_GETARG_OID(argno);
}

static void
check_qty(int64 qty, int line)
{
	if (qty > 0)
		return;
	if (line > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stock quantity must be positive"),
				 errdetail("Line %d has quantity " INT64_FORMAT ".", line, qty)));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("stock quantity must be positive"),
			 errdetail("The quantity given is " INT64_FORMAT ".", qty)));
}

int64
stock_arg_qty(FunctionCallInfo fcinfo, int argno)
{
	int64		qty;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stock quantity must not be NULL")));
	qty = PG_GETARG_INT64(argno);
	check_qty(qty, 0);
	return qty;
}

/* block | nowait | skip | a lock timeout such as '200ms' or '2s'. */
StockWait
stock_parse_wait(FunctionCallInfo fcinfo, int argno)
{
	StockWait	w = {STOCK_WAIT_BLOCK, 0};
	char	   *s;
	const char *hint = NULL;

	if (PG_NARGS() <= argno)
		return w;
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stock wait policy must not be NULL"),
				 errhint("Use 'block', 'nowait', 'skip' or a lock timeout such as '200ms'.")));
	s = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (pg_strcasecmp(s, "block") == 0)
		return w;
	if (pg_strcasecmp(s, "nowait") == 0)
		w.mode = STOCK_WAIT_NOWAIT;
	else if (pg_strcasecmp(s, "skip") == 0)
		w.mode = STOCK_WAIT_SKIP;
	else if (parse_int(s, &w.timeout_ms, GUC_UNIT_MS, &hint) && w.timeout_ms > 0)
		w.mode = STOCK_WAIT_TIMEOUT;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid stock wait policy \"%s\"", s),
				 errdetail("A wait policy is 'block', 'nowait', 'skip', or a positive lock timeout."),
				 errhint("For a timeout write a duration such as '200ms' or '2s'.")));
	return w;
}

/* ---- keys ---- */

static Datum
call_cast(Oid funcid, Datum value)
{
	if (get_func_nargs(funcid) == 1)
		return OidFunctionCall1(funcid, value);
	return OidFunctionCall3(funcid, value, Int32GetDatum(-1), BoolGetDatum(false));
}

/*
 * An assignment cast may round (numeric or float to integer): 1.5 would
 * become key 2 and take another row's stock.  Cast the key back and refuse
 * it unless it is the value given.
 */
static void
check_lossless(StockTable *st, Datum value, Oid srctype, Datum key)
{
	Oid			funcid;
	TypeCacheEntry *tc;

	if (find_coercion_pathway(srctype, st->key_type, COERCION_ASSIGNMENT, &funcid) != COERCION_PATH_FUNC)
		return;
	tc = lookup_type_cache(srctype, TYPECACHE_EQ_OPR_FINFO);
	if (!OidIsValid(tc->eq_opr_finfo.fn_oid))
		return;
	if (!DatumGetBool(FunctionCall2Coll(&tc->eq_opr_finfo, DEFAULT_COLLATION_OID, value,
										call_cast(funcid, key))))
	{
		Oid			out;
		bool		varlena;

		getTypeOutputInfo(srctype, &out, &varlena);
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("stock key %s does not fit key column \"%s\" of type %s",
						OidOutputFunctionCall(out, value), NameStr(st->key_column),
						format_type_be(st->key_type)),
				 errdetail("As %s it would be %s, another key.", format_type_be(st->key_type),
						   OidOutputFunctionCall(st->key_output, key))));
	}
}

/*
 * Convert a key of the caller's type to the key column's type: assignment
 * casts, and text-like values through the column type's input function (so
 * a quoted literal works for any key type).
 */
static Datum
coerce_key(StockTable *st, Datum value, Oid srctype)
{
	Oid			funcid;
	CoercionPathType path;

	if (srctype == st->key_type)
		return value;
	path = find_coercion_pathway(st->key_type, srctype, COERCION_ASSIGNMENT, &funcid);
	if (path == COERCION_PATH_NONE && TypeCategory(srctype) == TYPCATEGORY_STRING)
		path = COERCION_PATH_COERCEVIAIO;
	switch (path)
	{
		case COERCION_PATH_RELABELTYPE:
			return value;
		case COERCION_PATH_FUNC:
			{
				Datum		key = call_cast(funcid, value);

				check_lossless(st, value, srctype, key);
				return key;
			}
		case COERCION_PATH_COERCEVIAIO:
			{
				Oid			out;
				bool		varlena;

				getTypeOutputInfo(srctype, &out, &varlena);
				return OidInputFunctionCall(st->key_input, OidOutputFunctionCall(out, value),
											st->key_ioparam, st->key_typmod);
			}
		default:
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("stock key of type %s does not fit key column \"%s\" of type %s",
							format_type_be(srctype), NameStr(st->key_column),
							format_type_be(st->key_type)),
					 errhint("Cast the key to %s.", format_type_be(st->key_type))));
	}
	return (Datum) 0;			/* keep the compiler quiet */
}

/*
 * The key as text for a message, made only when one needs it; redacted
 * unless harden.log_values is on (a key is the row's data).
 */
const char *
stock_line_key(StockTable *st, StockLine *line)
{
	if (!harden_log_shows_values())
		return HARDEN_KEY_REDACTED;
	if (line->key_text == NULL)
		line->key_text = OidOutputFunctionCall(st->key_output, line->key);
	return line->key_text;
}

/*
 * Keys are stored in a hold as text and read back later, maybe by another
 * session (expiry) with other settings.  Both happen with the settings that
 * change how values print pinned, so a date, an interval, a float or a
 * money key reads back as the same value under any session's DateStyle,
 * IntervalStyle, extra_float_digits or lc_monetary.
 */
int
stock_key_style_enter(void)
{
	static const char *const settings[][2] = {
		{"DateStyle", "ISO, YMD"},
		{"IntervalStyle", "postgres"},
		{"extra_float_digits", "1"},
		{"bytea_output", "hex"},
		{"lc_monetary", "C"},
	};
	int			nest = NewGUCNestLevel();

	for (size_t i = 0; i < lengthof(settings); i++)
		(void) set_config_option(settings[i][0], settings[i][1], PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	return nest;
}

void
stock_key_style_leave(int nest)
{
	AtEOXact_GUC(true, nest);
}

/* ---- line lists ---- */

typedef struct SortItem
{
	StockLine	line;
	int			input;			/* position in the caller's arrays */
} SortItem;

static int
cmp_items(const void *a, const void *b, void *arg)
{
	StockTable *st = (StockTable *) arg;
	const SortItem *x = a;
	const SortItem *y = b;
	int			c = DatumGetInt32(FunctionCall2Coll(st->key_cmp, st->key_collation,
													x->line.key, y->line.key));

	if (c != 0)
		return c;
	return (x->input > y->input) - (x->input < y->input);
}

/*
 * Sort items into key order and sum duplicates.  Returns the merged lines;
 * positions (when not NULL) maps each input position to its merged line.
 */
static StockLine *
merge_items(StockTable *st, SortItem *items, int n, int *nlines, int *positions)
{
	StockLine  *lines = palloc(sizeof(StockLine) * Max(n, 1));
	int			m = 0;

	qsort_arg(items, n, sizeof(SortItem), cmp_items, st);
	for (int i = 0; i < n; i++)
	{
		if (m > 0 && DatumGetInt32(FunctionCall2Coll(st->key_cmp, st->key_collation,
													 lines[m - 1].key, items[i].line.key)) == 0)
		{
			if (pg_add_s64_overflow(lines[m - 1].qty, items[i].line.qty, &lines[m - 1].qty))
				ereport(ERROR,
						(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
						 errmsg("stock quantity out of range"),
						 errdetail("The lines for key %s add up to more than a bigint holds.",
								   stock_line_key(st, &lines[m - 1]))));
		}
		else
		{
			lines[m] = items[i].line;
			m++;
		}
		if (positions)
			positions[items[i].input] = m - 1;
	}
	*nlines = m;
	return lines;
}

static void
check_array(ArrayType *arr, const char *what)
{
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("stock %s must be a one-dimensional array", what)));
}

/*
 * Lines from the keys (anyarray) and qtys (bigint[]) arguments, merged and
 * in key order.  *ninput is the number of input lines, and positions[i] is
 * the merged line of input line i.
 */
StockLine *
stock_lines_from_arrays(StockTable *st, FunctionCallInfo fcinfo, int keys_argno,
						int qtys_argno, int *nlines, int **positions, int *ninput)
{
	ArrayType  *keys;
	ArrayType  *qtys;
	Oid			elemtype;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Datum	   *kd,
			   *qd;
	bool	   *kn,
			   *qn;
	int			nk,
				nq;
	SortItem   *items;

	if (PG_ARGISNULL(keys_argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stock keys must not be NULL")));
	if (PG_ARGISNULL(qtys_argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stock quantities must not be NULL")));
	keys = PG_GETARG_ARRAYTYPE_P(keys_argno);
	qtys = PG_GETARG_ARRAYTYPE_P(qtys_argno);
	check_array(keys, "keys");
	check_array(qtys, "quantities");
	nk = ArrayGetNItems(ARR_NDIM(keys), ARR_DIMS(keys));
	if (nk > STOCK_MAX_LINES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("an order has at most %d lines", STOCK_MAX_LINES),
				 errdetail("%d keys were given.", nk)));
	elemtype = ARR_ELEMTYPE(keys);
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(keys, elemtype, typlen, typbyval, typalign, &kd, &kn, &nk);
	deconstruct_array(qtys, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &qd, &qn, &nq);
	if (nk != nq)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("stock keys and quantities differ in length"),
				 errdetail("There are %d keys and %d quantities.", nk, nq)));
	if (nk == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an order needs at least one line")));

	items = palloc0(sizeof(SortItem) * nk);
	for (int i = 0; i < nk; i++)
	{
		if (kn[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("stock key must not be NULL"),
					 errdetail("Line %d has a NULL key.", i + 1)));
		if (qn[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("stock quantity must not be NULL"),
					 errdetail("Line %d has a NULL quantity.", i + 1)));
		check_qty(DatumGetInt64(qd[i]), i + 1);
		items[i].line.key = coerce_key(st, kd[i], elemtype);
		items[i].line.qty = DatumGetInt64(qd[i]);
		items[i].input = i;
	}
	*positions = palloc(sizeof(int) * nk);
	*ninput = nk;
	return merge_items(st, items, nk, nlines, *positions);
}

/*
 * Lines of one or more holds (keys in their stored text form) on one table,
 * merged and in key order, so giving several holds back locks each row once
 * and in the same order as every take.
 */
StockLine *
stock_lines_from_holds(StockTable *st, int nholds, ArrayType **keys, ArrayType **qtys,
					   int *nlines)
{
	SortItem   *items = NULL;
	int			n = 0;
	int			nest = stock_key_style_enter();

	for (int h = 0; h < nholds; h++)
	{
		Datum	   *kd,
				   *qd;
		bool	   *kn,
				   *qn;
		int			nk,
					nq;

		deconstruct_array(keys[h], TEXTOID, -1, false, TYPALIGN_INT, &kd, &kn, &nk);
		deconstruct_array(qtys[h], INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &qd, &qn, &nq);
		if (nk != nq)
			elog(ERROR, "stock hold has %d keys and %d quantities", nk, nq);
		items = items ? repalloc(items, sizeof(SortItem) * (n + nk))
			: palloc(sizeof(SortItem) * Max(nk, 1));
		for (int i = 0; i < nk; i++, n++)
		{
			if (kn[i] || qn[i])
				elog(ERROR, "stock hold has a NULL line");
			memset(&items[n], 0, sizeof(SortItem));
			items[n].line.key_text = TextDatumGetCString(kd[i]);
			items[n].line.key = OidInputFunctionCall(st->key_input, items[n].line.key_text,
													 st->key_ioparam, st->key_typmod);
			items[n].line.qty = DatumGetInt64(qd[i]);
			items[n].input = n;
		}
	}
	stock_key_style_leave(nest);
	return merge_items(st, items, n, nlines, NULL);
}

/* ---- errors ---- */

static void
append_line(StringInfo buf, int *listed, const char *fmt, const char *key,
			int64 qty, const char *avail)
{
	if (*listed == STOCK_DETAIL_MAX_LINES)
		appendStringInfoString(buf, "\n...");
	if (*listed >= STOCK_DETAIL_MAX_LINES)
	{
		(*listed)++;
		return;
	}
	if (*listed > 0)
		appendStringInfoChar(buf, '\n');
	appendStringInfo(buf, fmt, key, qty, avail);
	(*listed)++;
}

static void
not_unique(StockTable *st)
{
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_STOCK_TABLE_CHANGED),
			 errmsg("key column \"%s\" of stock table %s is not unique",
					NameStr(st->key_column), stock_table_name(st->relid)),
			 errdetail("One key matched several rows; nothing was changed."),
			 errhint("Restore the unique index on the key column, then attach the table again.")));
}

static void
unknown_keys(StockTable *st, StockLine *lines, int nlines, const bool *missing)
{
	StringInfoData buf;
	int			n = 0;
	const char *first = NULL;

	initStringInfo(&buf);
	for (int i = 0; i < nlines; i++)
	{
		if (!missing[i])
			continue;
		if (first == NULL)
			first = stock_line_key(st, &lines[i]);
		if (n < STOCK_DETAIL_MAX_LINES)
			appendStringInfo(&buf, "%s%s", n ? ", " : "", stock_line_key(st, &lines[i]));
		else if (n == STOCK_DETAIL_MAX_LINES)
			appendStringInfoString(&buf, ", ...");
		n++;
	}
	if (n == 1)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_STOCK_UNKNOWN_KEY),
				 errmsg("stock table %s has no row with key %s", stock_table_name(st->relid), first),
				 errdetail("Key column \"%s\" has no such value.", NameStr(st->key_column))));
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_STOCK_UNKNOWN_KEY),
			 errmsg("stock table %s has no row for %d of the %d keys", stock_table_name(st->relid),
					n, nlines),
			 errdetail("Keys not found: %s.", buf.data)));
}

static void
insufficient(StockTable *st, int nlines, int nshort, const char *first, const char *detail)
{
	harden_count(HC_STOCK_SHORTAGES, 1);
	if (nlines == 1)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_STOCK_INSUFFICIENT),
				 errmsg("insufficient stock for key %s in %s", first, stock_table_name(st->relid)),
				 errdetail_internal("%s", detail)));
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_STOCK_INSUFFICIENT),
			 errmsg("insufficient stock for %d of the %d lines in %s", nshort, nlines,
					stock_table_name(st->relid)),
			 errdetail_internal("%s", detail)));
}

/* ---- the line operations ---- */

static void
exec_check(int ret, int expected, const char *what)
{
	if (ret != expected)
		elog(ERROR, "stock %s failed: %s", what, SPI_result_code_string(ret));
}

static int64
returned_int8(void)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

	return isnull ? 0 : DatumGetInt64(d);
}

/* The enough flag and the quantity (as text) of the row the last query returned. */
static bool
returned_avail(char **avail)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

	*avail = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	if (*avail == NULL)
		*avail = "NULL";
	return !isnull && DatumGetBool(d);
}

/*
 * An UPDATE of a row that is there (and locked) changed no row: a BEFORE
 * UPDATE trigger returned NULL, or a row-level security policy hid it.
 */
static void
update_skipped(StockTable *st, StockLine *line, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_STOCK_UPDATE_SKIPPED),
			 errmsg("%s of stock for key %s in %s changed no row",
					what, stock_line_key(st, line), stock_table_name(st->relid)),
			 errdetail("The row is there, but its UPDATE was skipped by a BEFORE UPDATE trigger"
					   " that returned NULL or by a row-level security policy; nothing was changed."),
			 errhint("A trigger on a stock table must return the new row for stock updates.")));
}

static bool take_locked(StockTable *st, StockLine *lines, int nlines, StockWait wait);

/*
 * One line in block mode: one UPDATE.  When it changes nothing, lock the row
 * and take it the careful way, which tells a missing key, a shortage and a
 * skipped update apart.
 */
static void
take_one(StockTable *st, StockLine *line, StockWait wait)
{
	Datum		values[2] = {line->key, Int64GetDatum(line->qty)};

	exec_check(SPI_execute_plan(st->take, values, NULL, false, 0),
			   SPI_OK_UPDATE_RETURNING, "take");
	if (SPI_processed == 1)
	{
		line->remaining = returned_int8();
		return;
	}
	if (SPI_processed > 1)
		not_unique(st);
	(void) take_locked(st, line, 1, wait);
}

/*
 * Deduct every line or none.  Returns false, having deducted nothing, when
 * wait is skip and a row is locked by another transaction.
 */
static bool
take_locked(StockTable *st, StockLine *lines, int nlines, StockWait wait)
{
	SPIPlanPtr	lock = st->lock[wait.mode == STOCK_WAIT_TIMEOUT ? STOCK_WAIT_BLOCK : wait.mode];
	bool	   *missing = palloc0(sizeof(bool) * nlines);
	bool		any_missing = false;
	StringInfoData shortages;
	int			nshort = 0;
	const char *first_short = NULL;

	initStringInfo(&shortages);
	for (int i = 0; i < nlines; i++)
	{
		Datum		values[2] = {lines[i].key, Int64GetDatum(lines[i].qty)};
		char	   *avail;

		exec_check(SPI_execute_plan(lock, values, NULL, false, 0), SPI_OK_SELECT, "lock");
		if (SPI_processed > 1)
			not_unique(st);
		if (SPI_processed == 0)
		{
			if (wait.mode == STOCK_WAIT_SKIP)
			{
				exec_check(SPI_execute_plan(st->peek, values, NULL, false, 1), SPI_OK_SELECT, "peek");
				if (SPI_processed > 0)
				{
					harden_count(HC_STOCK_SKIPS, 1);
					return false;
				}
			}
			missing[i] = any_missing = true;
			continue;
		}
		if (!returned_avail(&avail))
		{
			if (first_short == NULL)
				first_short = stock_line_key(st, &lines[i]);
			append_line(&shortages, &nshort, "Key %s: requested " INT64_FORMAT ", available %s.",
						stock_line_key(st, &lines[i]), lines[i].qty, avail);
		}
	}
	if (any_missing)
		unknown_keys(st, lines, nlines, missing);
	if (nshort > 0)
		insufficient(st, nlines, nshort, first_short, shortages.data);

	for (int i = 0; i < nlines; i++)
	{
		Datum		values[2] = {lines[i].key, Int64GetDatum(lines[i].qty)};

		exec_check(SPI_execute_plan(st->deduct, values, NULL, false, 0),
				   SPI_OK_UPDATE_RETURNING, "deduct");
		if (SPI_processed > 1)
			not_unique(st);
		if (SPI_processed == 0)
			update_skipped(st, &lines[i], "a take");
		lines[i].remaining = returned_int8();
	}
	return true;
}

/*
 * Deduct lines (merged, in key order) under a wait policy.  A lock timeout
 * is set like SET LOCAL for the duration of the call only; an error unwinds
 * it with the (sub)transaction.
 */
bool
stock_take_lines(StockTable *st, StockLine *lines, int nlines, StockWait wait)
{
	int			nest = -1;
	bool		taken;

	if (wait.mode == STOCK_WAIT_TIMEOUT)
	{
		nest = NewGUCNestLevel();
		(void) set_config_option("lock_timeout", psprintf("%d", wait.timeout_ms),
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	}
	if (nlines == 1 && (wait.mode == STOCK_WAIT_BLOCK || wait.mode == STOCK_WAIT_TIMEOUT))
	{
		take_one(st, &lines[0], wait);
		taken = true;
	}
	else
		taken = take_locked(st, lines, nlines, wait);
	if (nest >= 0)
		AtEOXact_GUC(true, nest);
	if (taken)
		harden_count(HC_STOCK_TAKES, nlines);
	return taken;
}

/*
 * Add lines (merged, in key order), refusing to overflow the column.  One
 * UPDATE per line; when it changes nothing, lock the row to tell a missing
 * key, an overflow and a skipped update apart.  With skip_missing (giving a
 * hold back) a row deleted since is skipped with a WARNING: its stock went
 * with it, and the hold's other lines still go back.
 */
void
stock_put_lines(StockTable *st, StockLine *lines, int nlines, bool skip_missing)
{
	int			put = 0;

	for (int i = 0; i < nlines; i++)
	{
		Datum		values[3] = {lines[i].key, Int64GetDatum(lines[i].qty), (Datum) 0};
		char		nulls[3] = {' ', ' ', 'n'};
		char	   *avail;

		if (st->qty_max > 0)
		{
			values[2] = Int64GetDatum(st->qty_max - lines[i].qty);
			nulls[2] = ' ';
		}
		for (int attempt = 0;; attempt++)
		{
			exec_check(SPI_execute_plan(st->put, values, nulls, false, 0),
					   SPI_OK_UPDATE_RETURNING, "put");
			if (SPI_processed > 1)
				not_unique(st);
			if (SPI_processed == 1)
			{
				lines[i].remaining = returned_int8();
				put++;
				break;
			}
			/* The row was locked and had room, yet the UPDATE changed nothing. */
			if (attempt > 0)
				update_skipped(st, &lines[i], "a put");
			exec_check(SPI_execute_plan(st->lock[STOCK_WAIT_BLOCK], values, NULL, false, 0),
					   SPI_OK_SELECT, "lock");
			if (SPI_processed > 1)
				not_unique(st);
			if (SPI_processed == 0 && skip_missing)
			{
				ereport(WARNING,
						(errcode(ERRCODE_HARDEN_STOCK_UNKNOWN_KEY),
						 errmsg("stock table %s has no row with key %s any more",
								stock_table_name(st->relid), stock_line_key(st, &lines[i])),
						 errdetail("The " INT64_FORMAT " units held for it are not given back; the other lines are.",
								   lines[i].qty)));
				lines[i].remaining = -1;
				break;
			}
			if (SPI_processed == 0)
			{
				bool	   *missing = palloc0(sizeof(bool) * nlines);

				missing[i] = true;
				unknown_keys(st, lines, nlines, missing);
			}
			(void) returned_avail(&avail);
			if (st->qty_max > 0 && pg_strtoint64(avail) > st->qty_max - lines[i].qty)
				ereport(ERROR,
						(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
						 errmsg("stock for key %s in %s would exceed the range of %s",
								stock_line_key(st, &lines[i]), stock_table_name(st->relid),
								format_type_be(st->qty_type)),
						 errdetail("Key %s: on hand %s, adding " INT64_FORMAT ", largest value " INT64_FORMAT ".",
								   stock_line_key(st, &lines[i]), avail, lines[i].qty, st->qty_max)));
		}
	}
	harden_count(HC_STOCK_PUTS, put);
}

/* ---- SQL functions ---- */

/* The single line of stock_take / stock_put. */
static StockLine
single_line(StockTable *st, FunctionCallInfo fcinfo, int keyno, int64 qty)
{
	StockLine	line = {0};

	line.key = coerce_key(st, PG_GETARG_DATUM(keyno), get_fn_expr_argtype(fcinfo->flinfo, keyno));
	line.qty = qty;
	return line;
}

static void
check_key_arg(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stock key must not be NULL")));
}

PG_FUNCTION_INFO_V1(harden_stock_take);

/* stock_take(tbl, key, qty, wait) -> remaining, NULL when skipped */
Datum
harden_stock_take(PG_FUNCTION_ARGS)
{
	Oid			relid = arg_table(fcinfo, 0);
	int64		qty;
	StockWait	wait;
	StockTable *st;
	StockLine	line;
	bool		taken;
	instr_time	start;

	harden_deny_on_standby("harden.stock_take()");

	harden_timer_start(&start);
	check_key_arg(fcinfo, 1);
	qty = stock_arg_qty(fcinfo, 2);
	wait = stock_parse_wait(fcinfo, 3);

	SPI_connect();
	st = stock_table_get(relid);
	line = single_line(st, fcinfo, 1, qty);
	taken = stock_take_lines(st, &line, 1, wait);
	SPI_finish();
	harden_observe(HH_STOCK_TAKE, start);
	if (!taken)
		PG_RETURN_NULL();
	PG_RETURN_INT64(line.remaining);
}

PG_FUNCTION_INFO_V1(harden_stock_take_many);

/* stock_take_many(tbl, keys, qtys, wait) -> remaining per input line */
Datum
harden_stock_take_many(PG_FUNCTION_ARGS)
{
	Oid			relid = arg_table(fcinfo, 0);
	StockWait	wait = stock_parse_wait(fcinfo, 3);
	MemoryContext callercxt = CurrentMemoryContext;
	instr_time	start;
	StockTable *st;
	StockLine  *lines;
	int			nlines,
				ninput;
	int		   *positions;
	Datum	   *remaining;
	ArrayType  *result = NULL;

	harden_deny_on_standby("harden.stock_take_many()");

	harden_timer_start(&start);
	SPI_connect();
	st = stock_table_get(relid);
	lines = stock_lines_from_arrays(st, fcinfo, 1, 2, &nlines, &positions, &ninput);
	if (stock_take_lines(st, lines, nlines, wait))
	{
		MemoryContext spicxt = MemoryContextSwitchTo(callercxt);

		remaining = palloc(sizeof(Datum) * ninput);
		for (int i = 0; i < ninput; i++)
			remaining[i] = Int64GetDatum(lines[positions[i]].remaining);
		result = construct_array(remaining, ninput, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
		MemoryContextSwitchTo(spicxt);
	}
	SPI_finish();
	harden_observe(HH_STOCK_TAKE, start);
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_ARRAYTYPE_P(result);
}

PG_FUNCTION_INFO_V1(harden_stock_put);

/* stock_put(tbl, key, qty) -> new quantity on hand */
Datum
harden_stock_put(PG_FUNCTION_ARGS)
{
	Oid			relid = arg_table(fcinfo, 0);
	int64		qty;
	StockTable *st;
	StockLine	line;

	harden_deny_on_standby("harden.stock_put()");

	check_key_arg(fcinfo, 1);
	qty = stock_arg_qty(fcinfo, 2);

	SPI_connect();
	st = stock_table_get(relid);
	line = single_line(st, fcinfo, 1, qty);
	stock_put_lines(st, &line, 1, false);
	SPI_finish();
	PG_RETURN_INT64(line.remaining);
}
