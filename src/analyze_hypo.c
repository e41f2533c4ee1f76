/*
 * analyze_hypo.c
 *	  Index suggestions proven with hypothetical indexes (hypopg).
 *
 * Where the hypopg extension is installed, each index query_check() or
 * health_report() proposes is created as a hypothetical index (known to
 * the planner of this backend only; nothing is built or written) and the
 * statement is planned again.  A suggestion stands only if the estimated
 * plan cost goes down, and says from what to what.  Without hypopg the
 * advice says the estimate is unverified.  hypopg simulates btree, hash,
 * brin and bloom indexes: a trigram (gin) proposal stays unverified.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/prepare.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"

#include "pg_harden.h"
#include "analyze.h"

typedef struct HypoTest
{
	const char *schema;			/* hypopg's, quoted */
	const char *sql;			/* the statement */
	const char *index_sql;		/* CREATE INDEX, without CONCURRENTLY */
	Oid			indexrelid;		/* the hypothetical index, once created */
	double		cost;			/* the statement's cost with it */
} HypoTest;

static Datum
hypo_call(const char *sql, Oid argtype, Datum arg)
{
	Datum		result = (Datum) 0;
	bool		isnull = true;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(sql, 1, &argtype, &arg, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "%s returned no row", sql);
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	SPI_finish();
	return isnull ? (Datum) 0 : result;
}

static void
hypo_create(void *arg)
{
	HypoTest   *t = arg;

	t->indexrelid = DatumGetObjectId(
		hypo_call(psprintf("SELECT indexrelid FROM %s.hypopg_create_index($1)", t->schema),
				  TEXTOID, CStringGetTextDatum(t->index_sql)));
}

/*
 * hypopg adds its indexes only to the plans of EXPLAIN, so the statement
 * is prepared and explained: EXPLAIN EXECUTE of a generic plan, the plan
 * query_check() looks at.
 */
static void
hypo_plan(void *arg)
{
	HypoTest   *t = arg;
	static uint32 counter = 0;
	int			nparams;
	Oid		   *types = analyze_statement_params(t->sql, &nparams);
	char	   *name = psprintf("pg_harden_hypo_%u", ++counter);
	StringInfoData prepare;
	StringInfoData explain;
	int			nestlevel;
	char	   *json;
	char	   *cost;

	initStringInfo(&prepare);
	initStringInfo(&explain);
	appendStringInfo(&prepare, "PREPARE %s", name);
	appendStringInfo(&explain, "EXPLAIN (FORMAT JSON) EXECUTE %s", name);
	for (int i = 0; i < nparams; i++)
	{
		appendStringInfo(&prepare, "%s%s", i == 0 ? " (" : ", ",
						 format_type_be_qualified(OidIsValid(types[i]) ? types[i] : TEXTOID));
		appendStringInfo(&explain, "%sNULL", i == 0 ? " (" : ", ");
	}
	appendStringInfo(&prepare, "%s AS %s", nparams > 0 ? ")" : "", t->sql);
	appendStringInfoString(&explain, nparams > 0 ? ")" : "");

	nestlevel = NewGUCNestLevel();
	(void) set_config_option("plan_cache_mode", "force_generic_plan", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute(prepare.data, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not prepare the statement");
	PG_TRY();
	{
		if (SPI_execute(explain.data, false, 0) != SPI_OK_UTILITY || SPI_processed < 1)
			elog(ERROR, "could not explain the statement");
		json = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		/* the first "Total Cost" is the top plan node's */
		cost = json ? strstr(json, "\"Total Cost\": ") : NULL;
		if (cost == NULL)
			elog(ERROR, "EXPLAIN showed no cost");
		t->cost = strtod(cost + strlen("\"Total Cost\": "), NULL);
	}
	PG_FINALLY();
	{
		/* prepared statements outlive a rolled-back subtransaction */
		DropPreparedStatement(name, false);
	}
	PG_END_TRY();
	SPI_finish();
	AtEOXact_GUC(true, nestlevel);
}

static void
hypo_drop(void *arg)
{
	HypoTest   *t = arg;

	hypo_call(psprintf("SELECT %s.hypopg_drop_index($1)", t->schema),
			  OIDOID, ObjectIdGetDatum(t->indexrelid));
}

/*
 * Plan sql again with the index suggestion proposes as a hypothetical one:
 * NULL with *after set, or why it could not be tested.
 */
static char *
hypo_test(const char *sql, const char *suggestion, double *after)
{
	char	   *schema = analyze_extension_schema("hypopg");
	const char *create;
	HypoTest	t;
	ErrorData  *error;
	char	   *why = NULL;
	char	   *p;

	if (schema == NULL)
		return "hypopg is not installed";
	create = strstr(suggestion, "CREATE INDEX ");
	if (create == NULL)
		return "no index to test";
	if (create != suggestion)
		return "its extension is not installed";	/* CREATE EXTENSION pg_trgm; ... */
	t.schema = quote_identifier(schema);
	t.sql = sql;
	t.index_sql = pstrdup(create);
	if ((p = strstr(t.index_sql, "CONCURRENTLY ")) != NULL)
		memmove(p, p + strlen("CONCURRENTLY "), strlen(p + strlen("CONCURRENTLY ")) + 1);
	t.indexrelid = InvalidOid;
	if (!harden_try_in_subxact(hypo_create, &t, &error))
		return psprintf("hypopg cannot simulate it: %s", error->message);
	if (!harden_try_in_subxact(hypo_plan, &t, &error))
		why = psprintf("the statement could not be planned with it: %s", error->message);
	/* hypothetical indexes outlive a rolled-back subtransaction: always drop */
	if (!harden_try_in_subxact(hypo_drop, &t, &error))
		ereport(WARNING,
				(errmsg("could not drop hypothetical index %u: %s", t.indexrelid, error->message)));
	*after = t.cost;
	return why;
}

/*
 * Test every index the findings of sql propose (cost: sql's plan cost
 * now) and say what came out; a proposal that does not lower the cost is
 * withdrawn.
 */
void
analyze_hypo_findings(const char *sql, double cost, List *findings)
{
	ListCell   *lc;

	bool		measured = false;
	char	   *before_why = NULL;

	foreach(lc, findings)
	{
		AnalyzeFinding *f = lfirst(lc);
		double		after = 0;
		char	   *why;

		if (f->suggestion == NULL || strstr(f->suggestion, "CREATE INDEX ") == NULL)
			continue;
		/* the cost without the index, measured as the one with it will be */
		if (!measured && analyze_extension_schema("hypopg") != NULL)
		{
			HypoTest	t;
			ErrorData  *error;

			t.sql = sql;
			if (harden_try_in_subxact(hypo_plan, &t, &error))
				cost = t.cost;
			else
				before_why = psprintf("the statement could not be explained: %s", error->message);
			measured = true;
		}
		why = before_why ? before_why : hypo_test(sql, f->suggestion, &after);
		if (why != NULL)
			f->message = psprintf("%s (estimate unverified: %s)", f->message, why);
		else if (after < cost)
			f->message = psprintf("%s (with the index, tried as a hypothetical one: plan cost %.0f instead of %.0f)",
								  f->message, after, cost);
		else
		{
			f->message = psprintf("%s; tried as a hypothetical index, the index does not lower the plan cost (%.0f): no index is proposed",
								  f->message, cost);
			f->suggestion = NULL;
		}
	}
}

PG_FUNCTION_INFO_V1(harden_hypo_cost);

/*
 * harden._hypo_cost(sql text, index_sql text) → (cost_before, cost_after,
 * unverified): sql's plan cost without and with index_sql's index as a
 * hypothetical one, or why it could not be tested (NULL costs).
 */
Datum
harden_hypo_cost(PG_FUNCTION_ARGS)
{
	char	   *sql = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *index_sql = text_to_cstring(PG_GETARG_TEXT_PP(1));
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {true, true, true};
	HypoTest	t;
	ErrorData  *error;
	char	   *why = NULL;
	double		after = 0;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "harden._hypo_cost() must return a record");
	if (analyze_extension_schema("hypopg") == NULL)
		why = "hypopg is not installed";
	else
	{
		t.sql = sql;
		if (!harden_try_in_subxact(hypo_plan, &t, &error))
			why = psprintf("the statement could not be planned: %s", error->message);
		else
			why = hypo_test(sql, index_sql, &after);
	}
	if (why == NULL)
	{
		values[0] = Float8GetDatum(t.cost);
		values[1] = Float8GetDatum(after);
		nulls[0] = nulls[1] = false;
	}
	else
	{
		values[2] = CStringGetTextDatum(why);
		nulls[2] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
