/*
 * analyze.c
 *	  harden.query_check(sql): plan a statement without running it and
 *	  report what its plan is likely to do badly (analyze_walk.c).
 *
 * The statement goes through the same steps as PREPARE: raw parse, parse
 * analysis with parameter types inferred from context ($1..$n), rewrite
 * (views, rules, row-level security), and planning for a generic plan.
 * Nothing is executed, but the caller needs the privileges the statement
 * would need, as for EXPLAIN: a plan's estimates describe the data.
 */
#include "postgres.h"

#include "executor/executor.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/analyze.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "pg_harden.h"
#include "analyze.h"

static void
not_plannable(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_ANALYZE_NOT_PLANNABLE),
			 errmsg("harden.query_check() analyses exactly one SELECT, INSERT, UPDATE, DELETE or MERGE"),
			 errdetail("%s", detail),
			 errhint("Pass the statement itself, without EXPLAIN, PREPARE or a trailing second statement.")));
}

/*
 * Errors from parsing or planning the user's text point into that text
 * (like SPI's), not into the query that called query_check().
 */
static void
query_check_error_callback(void *arg)
{
	int			pos = geterrposition();

	if (pos > 0)
	{
		errposition(0);
		internalerrposition(pos);
		internalerrquery((const char *) arg);
	}
	else
		errcontext("statement analysed by harden.query_check()");
}

/* The single raw statement of sql, if it is one that can be planned. */
static RawStmt *
parse_one(const char *sql)
{
	List	   *raw = pg_parse_query(sql);
	RawStmt    *stmt;

	if (list_length(raw) != 1)
		not_plannable(psprintf("The SQL text holds %d statements.", list_length(raw)));
	stmt = linitial_node(RawStmt, raw);
	switch (nodeTag(stmt->stmt))
	{
		case T_SelectStmt:
		case T_InsertStmt:
		case T_UpdateStmt:
		case T_DeleteStmt:
#if PG_VERSION_NUM >= 150000
		case T_MergeStmt:
#endif
			return stmt;
		default:
			not_plannable(psprintf("%s is a utility statement, which has no plan.",
								   CreateCommandName(stmt->stmt)));
	}
	return NULL;				/* not reached */
}

static void
check_permissions(PlannedStmt *pstmt)
{
#if PG_VERSION_NUM >= 160000
	ExecCheckPermissions(pstmt->rtable, pstmt->permInfos, true);
#else
	ExecCheckRTPerms(pstmt->rtable, true);
#endif
}

/* Plan sql: the PlannedStmts of every statement it rewrites to. */
static List *
plan_statement(const char *sql)
{
	RawStmt    *raw;
	Query	   *query;
	Oid		   *paramtypes = NULL;
	int			nparams = 0;
	List	   *queries;
	ListCell   *lc;
	List	   *plans = NIL;
	ErrorContextCallback errcb;

	errcb.callback = query_check_error_callback;
	errcb.arg = (void *) sql;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	raw = parse_one(sql);
	query = parse_analyze_varparams(raw, sql, &paramtypes, &nparams, NULL);
	if (query->commandType == CMD_UTILITY)
		not_plannable(psprintf("%s is a utility statement, which has no plan.",
							   CreateCommandName(query->utilityStmt)));
	queries = pg_rewrite_query(query);
	foreach(lc, queries)
	{
		Query	   *q = lfirst_node(Query, lc);
		PlannedStmt *pstmt;

		/* A rule can add a utility statement (NOTIFY): nothing to plan. */
		if (q->commandType == CMD_UTILITY)
			continue;
		pstmt = pg_plan_query(q, sql, CURSOR_OPT_GENERIC_PLAN, NULL);
		check_permissions(pstmt);
		plans = lappend(plans, pstmt);
	}

	error_context_stack = errcb.previous;
	return plans;
}

static double
plans_cost(List *plans)
{
	double		cost = 0;
	ListCell   *lc;

	foreach(lc, plans)
		cost += lfirst_node(PlannedStmt, lc)->planTree->total_cost;
	return cost;
}

/* The types parse analysis infers for sql's parameters $1..$n. */
Oid *
analyze_statement_params(const char *sql, int *nparams)
{
	Oid		   *paramtypes = NULL;

	*nparams = 0;
	parse_analyze_varparams(parse_one(sql), sql, &paramtypes, nparams, NULL);
	return paramtypes;
}

/* The estimated total cost of sql's plans, as planned now. */
double
analyze_statement_cost(const char *sql)
{
	return plans_cost(plan_statement(sql));
}

/* Plan sql and walk every plan it rewrites to; returns the findings. */
static List *
check_statement(const char *sql)
{
	List	   *plans = plan_statement(sql);
	List	   *findings = NIL;
	ListCell   *lc;

	foreach(lc, plans)
		findings = analyze_plan(lfirst_node(PlannedStmt, lc), findings);
	/* Each proposed index, tried as a hypothetical one where hypopg is installed. */
	analyze_hypo_findings(sql, plans_cost(plans), findings);
	return findings;
}

static int
severity_rank(const char *severity)
{
	return strcmp(severity, "warning") == 0 ? 0 : 1;
}

PG_FUNCTION_INFO_V1(harden_query_check);

/*
 * harden.query_check(sql text) → (severity, node, relation, message,
 * suggestion): warnings first, each in plan order.
 */
Datum
harden_query_check(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext work;
	MemoryContext old;
	char	   *sql;
	List	   *findings;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("harden.query_check() needs SQL text, not NULL")));
	InitMaterializedSRF(fcinfo, 0);

	/* Parse trees and plans are garbage once the rows are out. */
	work = AllocSetContextCreate(CurrentMemoryContext, "harden query_check",
								 ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(work);
	sql = text_to_cstring(PG_GETARG_TEXT_PP(0));
	findings = check_statement(sql);

	for (int pass = 0; pass < 2; pass++)
	{
		ListCell   *lc;

		foreach(lc, findings)
		{
			AnalyzeFinding *f = lfirst(lc);
			Datum		values[5];
			bool		nulls[5] = {false, false, false, false, false};

			if (severity_rank(f->severity) != pass)
				continue;
			values[0] = CStringGetTextDatum(f->severity);
			values[1] = CStringGetTextDatum(f->node);
			values[2] = ObjectIdGetDatum(f->relid);
			nulls[2] = !OidIsValid(f->relid);
			values[3] = CStringGetTextDatum(f->message);
			values[4] = f->suggestion ? CStringGetTextDatum(f->suggestion) : (Datum) 0;
			nulls[4] = f->suggestion == NULL;
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(work);
	return (Datum) 0;
}
