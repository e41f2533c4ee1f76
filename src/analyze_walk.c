/*
 * analyze_walk.c
 *	  Walk a PlannedStmt and collect advice (AnalyzeFinding) about it.
 *
 * PostgreSQL 15 has no walker for Plan trees, so walk() follows every
 * place a plan keeps children: lefttree/righttree, the lists of Append,
 * MergeAppend, BitmapAnd, BitmapOr and CustomScan, SubqueryScan's subplan;
 * PlannedStmt->subplans holds the initPlans, SubPlans and CTEs.  Every
 * check reads only what the plan and the catalogs say and gives up
 * quietly on shapes it does not know, so no plan makes it fail.
 *
 * Expressions above the scans refer to their children's outputs
 * (OUTER_VAR, INNER_VAR); resolve_var() follows those references down to
 * a table column where it can.
 */
#include "postgres.h"

#include <ctype.h>
#include <math.h>

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/nodeAgg.h"
#include "executor/nodeHash.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "nodes/plannodes.h"
#include "optimizer/optimizer.h"
#include "parser/parsetree.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/ruleutils.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "access/relation.h"
#include "catalog/partition.h"
#include "access/stratnum.h"

#include "pg_harden.h"
#include "analyze.h"

/* A seq scan is reported when its filter keeps at most this share of rows. */
#define SEQ_SCAN_MAX_KEPT	0.2

typedef struct Walk
{
	PlannedStmt *stmt;
	List	   *findings;
	Bitmapset  *initparams;		/* PARAM_EXEC ids that initPlans set */
} Walk;

/* Column references resolved from a plan expression. */
typedef struct ColRef
{
	Oid			relid;
	AttrNumber	attno;
} ColRef;

static void walk(Walk *w, Plan *plan, Plan *parent);

/* ---- helpers ---- */

/*
 * Add advice unless the same advice is already there: partitions of one
 * table and the statements a rule adds repeat it.  key identifies the
 * advice (NULL: the message).
 */
static void
add_finding_key(Walk *w, const char *key, const char *severity, const char *node,
				Oid relid, char *message, char *suggestion)
{
	AnalyzeFinding *f;
	ListCell   *lc;

	if (key == NULL)
		key = message;
	foreach(lc, w->findings)
	{
		f = lfirst(lc);
		if (f->relid == relid && strcmp(f->node, node) == 0 &&
			strcmp(f->key, key) == 0)
			return;
	}
	f = palloc(sizeof(AnalyzeFinding));
	f->key = pstrdup(key);
	f->severity = severity;
	f->node = node;
	f->relid = relid;
	f->message = message;
	f->suggestion = suggestion;
	w->findings = lappend(w->findings, f);
}

static void
add_finding(Walk *w, const char *severity, const char *node, Oid relid,
			char *message, char *suggestion)
{
	add_finding_key(w, NULL, severity, node, relid, message, suggestion);
}

static const char *
node_name(Plan *plan)
{
	switch (nodeTag(plan))
	{
		case T_SeqScan:
			return "Seq Scan";
		case T_Sort:
			return "Sort";
		case T_Hash:
			return "Hash";
		case T_Agg:
			return "HashAggregate";
		case T_NestLoop:
			return "Nested Loop";
		case T_HashJoin:
			return "Hash Join";
		case T_MergeJoin:
			return "Merge Join";
		default:
			return "Plan";
	}
}

static Node *
strip_relabel(Node *node)
{
	while (node && IsA(node, RelabelType))
		node = (Node *) ((RelabelType *) node)->arg;
	return node;
}

static char *
format_bytes(double bytes)
{
	if (bytes >= 1024.0 * 1024 * 1024)
		return psprintf("%.1f GB", bytes / (1024.0 * 1024 * 1024));
	if (bytes >= 1024.0 * 1024)
		return psprintf("%.1f MB", bytes / (1024.0 * 1024));
	return psprintf("%.0f kB", ceil(bytes / 1024.0));
}

/* The table a scan reads, or InvalidOid (a function, a CTE, a subquery). */
static Oid
scan_relid(Walk *w, Scan *scan)
{
	RangeTblEntry *rte;

	if (scan->scanrelid == 0 || (int) scan->scanrelid > list_length(w->stmt->rtable))
		return InvalidOid;
	rte = rt_fetch(scan->scanrelid, w->stmt->rtable);
	return rte->rtekind == RTE_RELATION ? rte->relid : InvalidOid;
}

/* Is node a plain column of the scan's own relation? */
static bool
scan_column(Node *node, Index scanrelid, AttrNumber *attno)
{
	Var		   *var;

	node = strip_relabel(node);
	if (node == NULL || !IsA(node, Var))
		return false;
	var = (Var *) node;
	if (var->varno != (int) scanrelid || var->varattno <= 0 || var->varlevelsup != 0)
		return false;
	*attno = var->varattno;
	return true;
}

static bool
is_equality(OpExpr *op)
{
	char	   *name = get_opname(op->opno);

	return name != NULL && strcmp(name, "=") == 0 && list_length(op->args) == 2;
}

static Plan *
outer_child(Plan *plan)
{
	List	   *children;

	if (IsA(plan, Append))
		children = ((Append *) plan)->appendplans;
	else if (IsA(plan, MergeAppend))
		children = ((MergeAppend *) plan)->mergeplans;
	else
		return plan->lefttree;
	/* Every child has the same output columns; all may have been pruned. */
	return children != NIL ? (Plan *) linitial(children) : NULL;
}

/*
 * Follow a Var in the context of plan down to the table column it reads.
 * False for anything but a plain column (an expression, an aggregate, a
 * function scan, an index-only scan's index columns, ...).
 */
static bool
resolve_var(Walk *w, Plan *plan, Var *var, ColRef *col)
{
	for (int depth = 0; depth < 1000 && plan != NULL; depth++)
	{
		Plan	   *child;
		TargetEntry *tle;
		Node	   *expr;

		if (var->varlevelsup != 0 || var->varattno <= 0)
			return false;
		if (var->varno == OUTER_VAR)
			child = outer_child(plan);
		else if (var->varno == INNER_VAR)
			child = plan->righttree;
		else if (IS_SPECIAL_VARNO(var->varno) || var->varno > list_length(w->stmt->rtable))
			return false;
		else
		{
			RangeTblEntry *rte = rt_fetch(var->varno, w->stmt->rtable);

			if (rte->rtekind == RTE_RELATION)
			{
				col->relid = rte->relid;
				col->attno = var->varattno;
				return true;
			}
			if (rte->rtekind != RTE_SUBQUERY || !IsA(plan, SubqueryScan))
				return false;
			child = ((SubqueryScan *) plan)->subplan;
		}
		if (child == NULL)
			return false;
		tle = get_tle_by_resno(child->targetlist, var->varattno);
		if (tle == NULL)
			return false;
		expr = strip_relabel((Node *) tle->expr);
		if (expr == NULL || !IsA(expr, Var))
			return false;
		var = (Var *) expr;
		plan = child;
	}
	return false;
}

static bool
resolve_node(Walk *w, Plan *plan, Node *node, ColRef *col)
{
	node = strip_relabel(node);
	return node != NULL && IsA(node, Var) && resolve_var(w, plan, (Var *) node, col);
}

static void
add_attno(AttrNumber *attnos, int *n, AttrNumber attno)
{
	for (int i = 0; i < *n; i++)
		if (attnos[i] == attno)
			return;
	if (*n < INDEX_MAX_KEYS)
		attnos[(*n)++] = attno;
}

/*
 * "CREATE INDEX [CONCURRENTLY] ON table": CONCURRENTLY keeps writes going
 * while a large table is indexed; a partitioned table does not take it.
 */
static char *
create_index_head(Oid target)
{
	return psprintf("CREATE INDEX %sON %s",
					get_rel_relkind(target) == RELKIND_PARTITIONED_TABLE ? "" : "CONCURRENTLY ",
					analyze_rel_name(target));
}

static char *
create_index_sql(Oid relid, const AttrNumber *attnos, int n)
{
	return psprintf("%s (%s);", create_index_head(analyze_report_relid(relid)),
					analyze_column_list(relid, attnos, n));
}

static bool
is_large(double rows)
{
	return rows >= (double) analyze_min_rows;
}

/* ---- sequential scans with a filter ---- */

/*
 * Columns of a filter that a btree could serve: compared with something
 * that does not depend on the row, equalities first, then one range.
 */
static int
filter_index_columns(List *qual, Index scanrelid, AttrNumber *attnos)
{
	int			n = 0;
	AttrNumber	range = InvalidAttrNumber;
	ListCell   *lc;

	foreach(lc, qual)
	{
		Node	   *clause = lfirst(lc);
		AttrNumber	attno;
		List	   *interp;
		bool		eq = false;
		ListCell   *ic;
		Node	   *other;
		Oid			opno;

		if (IsA(clause, OpExpr) && list_length(((OpExpr *) clause)->args) == 2)
		{
			OpExpr	   *op = (OpExpr *) clause;

			opno = op->opno;
			if (scan_column(linitial(op->args), scanrelid, &attno))
				other = lsecond(op->args);
			else if (scan_column(lsecond(op->args), scanrelid, &attno))
			{
				other = linitial(op->args);
				opno = get_commutator(opno);
			}
			else
				continue;
		}
		else if (IsA(clause, ScalarArrayOpExpr) &&
				 ((ScalarArrayOpExpr *) clause)->useOr &&
				 scan_column(linitial(((ScalarArrayOpExpr *) clause)->args), scanrelid, &attno))
		{
			opno = ((ScalarArrayOpExpr *) clause)->opno;
			other = lsecond(((ScalarArrayOpExpr *) clause)->args);
		}
		else
			continue;
		if (!OidIsValid(opno) || contain_var_clause(other) ||
			contain_volatile_functions(other))
			continue;
		interp = get_op_btree_interpretation(opno);
		if (interp == NIL)
			continue;
		foreach(ic, interp)
			if (((OpBtreeInterpretation *) lfirst(ic))->strategy == BTEqualStrategyNumber)
				eq = true;
		if (eq)
			add_attno(attnos, &n, attno);
		else if (range == InvalidAttrNumber)
			range = attno;
	}
	if (range != InvalidAttrNumber)
		add_attno(attnos, &n, range);
	return n;
}

static void
check_seq_scan(Walk *w, SeqScan *scan, bool like_reported)
{
	Plan	   *plan = (Plan *) scan;
	Oid			relid = scan_relid(w, &scan->scan);
	AttrNumber	attnos[INDEX_MAX_KEYS];
	int			n;
	double		rows;
	char	   *name;
	Oid			root;
	char	   *key;

	if (!OidIsValid(relid) || plan->qual == NIL)
		return;
	rows = analyze_rel_rows(relid);
	/* A filter that keeps much of the table is best served by this scan. */
	if (!is_large(rows) || plan->plan_rows > rows * SEQ_SCAN_MAX_KEPT)
		return;
	name = analyze_rel_name(relid);
	root = analyze_report_relid(relid);
	n = filter_index_columns(plan->qual, scan->scan.scanrelid, attnos);
	/* One piece of advice for all partitions of a table scanned alike. */
	key = psprintf("seq scan %s", analyze_column_list(relid, attnos, n));
	if (n == 0 && like_reported)
		return;					/* the LIKE advice says it */
	if (n == 0)
		add_finding_key(w, key, "warning", "Seq Scan", root,
					psprintf("Seq Scan on %s reads ~%.0f rows to keep ~%.0f; no part of the filter compares a plain column with a value",
							 name, rows, plan->plan_rows),
					NULL);
	else if (analyze_index_leads_with(relid, attnos[0]))
		add_finding_key(w, key, "info", "Seq Scan", root,
					psprintf("Seq Scan on %s reads ~%.0f rows to keep ~%.0f although an index leading with %s exists: the planner chose not to use it (statistics, settings, or a type or collation mismatch)",
							 name, rows, plan->plan_rows, analyze_column_list(relid, attnos, 1)),
					NULL);
	else
		add_finding_key(w, key, "warning", "Seq Scan", root,
					psprintf("Seq Scan on %s reads ~%.0f rows to keep ~%.0f; no index leads with %s",
							 name, rows, plan->plan_rows, analyze_column_list(relid, attnos, 1)),
					create_index_sql(relid, attnos, n));
}

/* ---- LIKE, ILIKE, regular expressions, SIMILAR TO ---- */

typedef struct LikeContext
{
	Walk	   *w;
	Index		scanrelid;
	Oid			relid;
	bool		advised;		/* some pattern advice for this scan */
} LikeContext;

/* Where a pattern comes from, as far as an index is concerned. */
typedef enum PatternSource
{
	PATTERN_CONST,
	PATTERN_PARAM,				/* $n */
	PATTERN_COMPUTED,			/* an expression of parameters and constants */
	PATTERN_INITPLAN,			/* a subquery run once */
	PATTERN_OTHER_ROW,			/* a join's or a correlated subquery's row */
	PATTERN_SAME_ROW			/* a column of the row being tested */
} PatternSource;

/* What the constant patterns say, over every element of an ANY array. */
typedef struct PatternShape
{
	bool		match_all;		/* every pattern is '%' (LIKE) */
	bool		anchored;		/* every pattern starts with a fixed character */
	bool		similar;		/* a SIMILAR TO pattern, as the parser rewrote it */
	int			count;
} PatternShape;

/* The text an index column holds: a plain column, or an expression of the row. */
typedef struct PatternTarget
{
	AttrNumber	attno;			/* InvalidAttrNumber: expr */
	Node	   *expr;			/* with the scan's Vars renumbered to 1 */
	char	   *text;			/* as advice shows it */
	char	   *index_elem;		/* as CREATE INDEX takes it */
} PatternTarget;

static bool
contain_param_kind(Node *node, ParamKind *kind)
{
	if (node == NULL)
		return false;
	if (IsA(node, Param) && ((Param *) node)->paramkind == *kind)
		return true;
	return expression_tree_walker(node, contain_param_kind, (void *) kind);
}

typedef struct ExecParams
{
	Bitmapset  *initparams;
	bool		other_row;		/* a PARAM_EXEC no initPlan sets */
} ExecParams;

static bool
exec_params_walker(Node *node, ExecParams *e)
{
	if (node == NULL)
		return false;
	if (IsA(node, Param) && ((Param *) node)->paramkind == PARAM_EXEC &&
		!bms_is_member(((Param *) node)->paramid, e->initparams))
		e->other_row = true;
	return expression_tree_walker(node, exec_params_walker, (void *) e);
}

static PatternSource
pattern_source(LikeContext *c, Node *arg)
{
	ParamKind	exec = PARAM_EXEC;
	ExecParams	e = {c->w->initparams, false};

	if (IsA(arg, Const))
		return PATTERN_CONST;
	if (IsA(arg, Param) && ((Param *) arg)->paramkind == PARAM_EXTERN)
		return PATTERN_PARAM;
	if (contain_var_clause(arg) || contain_volatile_functions(arg))
		return PATTERN_SAME_ROW;
	if (!contain_param_kind(arg, &exec))
		return PATTERN_COMPUTED;	/* '%' || $1 || '%' and the like */
	exec_params_walker(arg, &e);
	return e.other_row ? PATTERN_OTHER_ROW : PATTERN_INITPLAN;
}

/* Does a LIKE pattern match every non-NULL string? */
static bool
like_matches_all(const char *p)
{
	if (*p == '\0')
		return false;
	for (; *p; p++)
		if (*p != '%')
			return false;
	return true;
}

static void
shape_one(const char *pattern, bool like, PatternShape *shape)
{
	bool		anchored;
	bool		all = like && like_matches_all(pattern);

	if (like)
		anchored = pattern[0] != '\0' && pattern[0] != '%' && pattern[0] != '_';
	else
	{
		/* similar_to_escape() wraps the pattern in ^(?: ... )$ */
		if (strncmp(pattern, "^(?:", 4) == 0 &&
			strlen(pattern) >= 6 && strcmp(pattern + strlen(pattern) - 2, ")$") == 0)
			shape->similar = true;
		anchored = pattern[0] == '^' && (isalnum((unsigned char) pattern[1]) || pattern[1] == ' ');
	}
	if (shape->count == 0)
	{
		shape->match_all = all;
		shape->anchored = anchored;
	}
	else
	{
		shape->match_all &= all;
		shape->anchored &= anchored;
	}
	shape->count++;
}

/* The shape of a constant pattern or array of patterns; false if unknown. */
static bool
pattern_shape(Const *k, bool like, bool any, PatternShape *shape)
{
	memset(shape, 0, sizeof(*shape));
	if (k->constisnull)
		return false;
	if (!any)
	{
		if (k->consttype != TEXTOID)
			return false;
		shape_one(TextDatumGetCString(k->constvalue), like, shape);
		return true;
	}
	else
	{
		ArrayType  *arr = DatumGetArrayTypeP(k->constvalue);
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		if (ARR_ELEMTYPE(arr) != TEXTOID)
			return false;
		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
		for (int i = 0; i < n; i++)
			if (!nulls[i])
				shape_one(TextDatumGetCString(elems[i]), like, shape);
		return shape->count > 0;
	}
}

/* Renumber the scan's Vars to 1, as in an index expression. */
static bool
renumber_vars(Node *node, Index *scanrelid)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var))
	{
		Var		   *var = (Var *) node;

		if (var->varno != (int) *scanrelid || var->varlevelsup != 0 || var->varattno <= 0)
			return true;
		var->varno = 1;
		var->varnosyn = 1;
		var->varattnosyn = var->varattno;
		var->location = -1;
		return false;
	}
	if (IsA(node, Param) || IsA(node, SubPlan) || IsA(node, AlternativeSubPlan) ||
		IsA(node, Aggref) || IsA(node, WindowFunc))
		return true;
	return expression_tree_walker(node, renumber_vars, (void *) scanrelid);
}

/*
 * What the pattern is matched against: a column of the scan, or an
 * expression of its row alone (lower(name)), which an expression index
 * can hold.
 */
static bool
pattern_target(LikeContext *c, Node *left, PatternTarget *t)
{
	AttrNumber	attno;
	Node	   *expr;

	memset(t, 0, sizeof(*t));
	if (scan_column(left, c->scanrelid, &attno))
	{
		t->attno = attno;
		t->text = analyze_column_list(c->relid, &attno, 1);
		t->index_elem = t->text;
		return true;
	}
	left = strip_relabel(left);
	if (left == NULL || !contain_var_clause(left) || contain_volatile_functions(left) ||
		exprType(left) != TEXTOID)
		return false;
	expr = copyObject(left);
	if (renumber_vars(expr, &c->scanrelid))
		return false;
	t->expr = expr;
	t->text = deparse_expression(expr, deparse_context_for(get_rel_name(c->relid), c->relid),
								 false, false);
	t->index_elem = psprintf("(%s)", t->text);
	return true;
}

static char *
trigram_sql(Oid relid, const PatternTarget *t, const char *schema)
{
	char	   *create = psprintf("%s USING gin (%s %s.gin_trgm_ops);",
								  create_index_head(analyze_report_relid(relid)),
								  t->index_elem, quote_identifier(schema ? schema : "public"));

	return schema ? create : psprintf("CREATE EXTENSION pg_trgm; %s", create);
}

static const char *
source_desc(PatternSource source, const PatternShape *shape, bool like)
{
	switch (source)
	{
		case PATTERN_CONST:
			if (shape->count > 1)
				return shape->anchored ? "left-anchored patterns" : "patterns that do not all start with a fixed character";
			if (shape->anchored)
				return "a left-anchored pattern";
			return like ? "a leading wildcard" : "a pattern that does not start with a fixed character";
		case PATTERN_PARAM:
			return "a pattern given as a parameter (it may start with a wildcard)";
		case PATTERN_COMPUTED:
			return "a pattern computed from parameters (it may start with a wildcard)";
		case PATTERN_INITPLAN:
			return "a pattern a subquery computes once (an initPlan: unknown when planning, it may start with a wildcard)";
		case PATTERN_OTHER_ROW:
			return "a pattern taken from another row (a join or a correlated subquery: a different pattern for each)";
		case PATTERN_SAME_ROW:
			break;
	}
	return "a pattern";
}

/*
 * Advice for one pattern match, col OP pattern or col OP ANY (patterns):
 * LIKE and ILIKE (~~, ~~*) and regular expressions (~, ~*, and SIMILAR TO,
 * which the parser turns into ~).  pg_trgm's operator classes serve all of
 * them; a btree that compares bytes serves a left-anchored LIKE or ~ only.
 */
static void
check_pattern(LikeContext *c, Oid opno, Node *left, Node *right, bool any)
{
	char	   *opname = get_opname(opno);
	bool		like;
	bool		icase;
	Oid			ltype;
	Oid			rtype;
	PatternTarget t;
	PatternSource source;
	PatternShape shape;
	LikeSupport support;
	const char *severity;
	const char *what;
	char	   *schema;
	char	   *relname;
	char	   *on;

	if (opname == NULL)
		return;
	if (strcmp(opname, "~~") == 0 || strcmp(opname, "~~*") == 0)
		like = true;
	else if (strcmp(opname, "~") == 0 || strcmp(opname, "~*") == 0)
		like = false;
	else
		return;
	icase = opname[strlen(opname) - 1] == '*';
	/* text (and varchar, relabelled) only: that is what the opclasses take */
	op_input_types(opno, &ltype, &rtype);
	if (ltype != TEXTOID || right == NULL || !pattern_target(c, left, &t))
		return;
	right = strip_relabel(right);
	source = pattern_source(c, right);
	if (source == PATTERN_SAME_ROW)
		return;					/* no index serves a pattern from the row itself */
	memset(&shape, 0, sizeof(shape));
	if (source == PATTERN_CONST && !pattern_shape((Const *) right, like, any, &shape))
		return;

	what = like ? (icase ? "ILIKE" : "LIKE") :
		shape.similar ? "SIMILAR TO" : (icase ? "~*" : "~");
	if (any)
		what = psprintf("%s ANY", what);
	relname = analyze_rel_name(analyze_report_relid(c->relid));
	on = t.expr ? psprintf("%s of %s", t.text, relname) : psprintf("%s.%s", relname, t.text);
	c->advised = true;

	/* '%' keeps every non-NULL row: no index makes it cheaper */
	if (source == PATTERN_CONST && shape.match_all)
	{
		add_finding(c->w, "info", "Seq Scan", analyze_report_relid(c->relid),
					psprintf("%s '%%' on %s matches every non-NULL value: the condition filters out NULLs only, and no index helps",
							 what, on),
					psprintf("-- write %s IS NOT NULL instead", t.text));
		return;
	}

	support = t.expr ? analyze_expr_like_support(c->relid, t.expr, opno) :
		analyze_like_support(c->relid, t.attno, opno);
	if (support == LIKE_SUPPORT_ANY ||
		(source == PATTERN_CONST && shape.anchored && !icase && !any && !shape.similar &&
		 support == LIKE_SUPPORT_PREFIX))
		return;

	severity = is_large(analyze_rel_rows(c->relid)) ? "warning" : "info";
	if (source == PATTERN_CONST && shape.anchored && !icase && !any && !shape.similar)
	{
		add_finding(c->w, severity, "Seq Scan", analyze_report_relid(c->relid),
					psprintf("%s on %s with %s reads every row: no btree on %s compares bytes (text_pattern_ops or the C collation)",
							 what, on, source_desc(source, &shape, like), t.text),
					psprintf("%s (%s text_pattern_ops);",
							 create_index_head(analyze_report_relid(c->relid)), t.index_elem));
		return;
	}
	schema = analyze_extension_schema("pg_trgm");
	add_finding(c->w, severity, "Seq Scan", analyze_report_relid(c->relid),
				psprintf("%s on %s with %s reads every row: no index on %s supports %s%s%s",
						 what, on, source_desc(source, &shape, like),
						 t.expr ? "the expression" : t.text, opname,
						 any ? " (a trigram index serves each pattern of the array in one bitmap scan)" : "",
						 schema ? "" : "; pg_trgm is not installed"),
				trigram_sql(c->relid, &t, schema));
}

static bool
like_walker(Node *node, LikeContext *c)
{
	if (node == NULL)
		return false;
	/* SubPlans are walked as plans of their own. */
	if (IsA(node, SubPlan) || IsA(node, AlternativeSubPlan))
		return false;
	if (IsA(node, OpExpr) && list_length(((OpExpr *) node)->args) == 2)
		check_pattern(c, ((OpExpr *) node)->opno, linitial(((OpExpr *) node)->args),
					  lsecond(((OpExpr *) node)->args), false);
	else if (IsA(node, ScalarArrayOpExpr) && ((ScalarArrayOpExpr *) node)->useOr &&
			 list_length(((ScalarArrayOpExpr *) node)->args) == 2)
		check_pattern(c, ((ScalarArrayOpExpr *) node)->opno,
					  linitial(((ScalarArrayOpExpr *) node)->args),
					  lsecond(((ScalarArrayOpExpr *) node)->args), true);
	return expression_tree_walker(node, like_walker, (void *) c);
}

/* Pattern advice for a scan's filter; true if there was some. */
static bool
check_scan_like(Walk *w, SeqScan *scan)
{
	LikeContext c;

	c.w = w;
	c.scanrelid = scan->scan.scanrelid;
	c.relid = scan_relid(w, &scan->scan);
	c.advised = false;
	if (OidIsValid(c.relid))
		like_walker((Node *) scan->scan.plan.qual, &c);
	return c.advised;
}

/* ---- sorts and hashes past work_mem ---- */

static double
sort_tuple_bytes(Plan *input)
{
	return (double) (MAXALIGN(Max(input->plan_width, 0)) + MAXALIGN(SizeofHeapTupleHeader));
}

/* A Sort under a Limit with a constant bound keeps only that many rows. */
static double
sort_bound(Plan *parent)
{
	Limit	   *limit;
	double		bound = 0;

	if (parent == NULL || !IsA(parent, Limit))
		return -1;
	limit = (Limit *) parent;
	if (limit->limitCount == NULL || !IsA(limit->limitCount, Const) ||
		((Const *) limit->limitCount)->constisnull)
		return -1;
	bound = (double) DatumGetInt64(((Const *) limit->limitCount)->constvalue);
	if (limit->limitOffset != NULL)
	{
		if (!IsA(limit->limitOffset, Const) || ((Const *) limit->limitOffset)->constisnull)
			return -1;
		bound += (double) DatumGetInt64(((Const *) limit->limitOffset)->constvalue);
	}
	return bound;
}

static void
check_sort(Walk *w, Sort *sort, Plan *parent)
{
	Plan	   *input = sort->plan.lefttree;
	double		limit = (double) work_mem * 1024.0;
	double		rows;
	double		bytes;
	double		bound;

	if (input == NULL)
		return;
	rows = input->plan_rows;
	bytes = rows * sort_tuple_bytes(input);
	bound = sort_bound(parent);
	/* A bounded (top-N) sort holds twice its bound at most. */
	if (bound >= 0 && bound * 2 < rows)
		bytes = bound * 2 * sort_tuple_bytes(input);
	if (bytes <= limit)
		return;
	add_finding(w, "warning", "Sort", InvalidOid,
				psprintf("Sort of ~%.0f rows (~%s) is expected to spill to disk: work_mem is %s",
						 rows, format_bytes(bytes), format_bytes(limit)),
				psprintf("SET work_mem = '%.0fMB';", ceil(bytes * 1.5 / (1024.0 * 1024))));
}

static void
check_hash(Walk *w, Hash *hash)
{
	Plan	   *plan = (Plan *) hash;
	size_t		space = 0;
	int			nbuckets = 0;
	int			nbatch = 0;
	int			nskew = 0;
	double		bytes;

	/* The executor's own sizing: more than one batch means writing to disk. */
	ExecChooseHashTableSize(Max(plan->plan_rows, 1.0), Max(plan->plan_width, 0),
							false, false, 0, &space, &nbuckets, &nbatch, &nskew);
	if (nbatch <= 1)
		return;
	bytes = plan->plan_rows * (MAXALIGN(Max(plan->plan_width, 0)) + MAXALIGN(SizeofMinimalTupleHeader) + 16);
	add_finding(w, "warning", "Hash", InvalidOid,
				psprintf("Hash of ~%.0f rows (~%s) for a hash join is expected to spill to disk in %d batches: hash memory is %s",
						 plan->plan_rows, format_bytes(bytes), nbatch,
						 format_bytes((double) get_hash_memory_limit())),
				psprintf("SET work_mem = '%.0fMB';",
						 ceil(bytes * 1.5 / hash_mem_multiplier / (1024.0 * 1024))));
}

static bool
count_aggrefs(Node *node, int *n)
{
	if (node == NULL)
		return false;
	if (IsA(node, Aggref))
		(*n)++;
	return expression_tree_walker(node, count_aggrefs, (void *) n);
}

static void
check_hash_agg(Walk *w, Agg *agg)
{
	int			ntrans = 0;
	double		bytes;
	double		limit = (double) get_hash_memory_limit();

	if (agg->aggstrategy != AGG_HASHED && agg->aggstrategy != AGG_MIXED)
		return;
	count_aggrefs((Node *) agg->plan.targetlist, &ntrans);
	count_aggrefs((Node *) agg->plan.qual, &ntrans);
	bytes = (double) agg->numGroups *
		(double) hash_agg_entry_size(ntrans, Max(agg->plan.plan_width, 0), agg->transitionSpace);
	if (bytes <= limit)
		return;
	add_finding(w, "warning", "HashAggregate", InvalidOid,
				psprintf("HashAggregate of ~%ld groups (~%s) is expected to spill to disk: hash memory is %s",
						 agg->numGroups, format_bytes(bytes), format_bytes(limit)),
				psprintf("SET work_mem = '%.0fMB';",
						 ceil(bytes * 1.5 / hash_mem_multiplier / (1024.0 * 1024))));
}

/* ---- nested loops over large unindexed inner relations ---- */

/* The column compared with a nested-loop parameter in an inner scan's quals. */
static bool
param_column(List *quals, Index scanrelid, int paramno, AttrNumber *attno)
{
	ListCell   *lc;

	foreach(lc, quals)
	{
		Node	   *clause = lfirst(lc);
		OpExpr	   *op;
		Node	   *a;
		Node	   *b;

		if (!IsA(clause, OpExpr) || !is_equality((OpExpr *) clause))
			continue;
		op = (OpExpr *) clause;
		a = strip_relabel(linitial(op->args));
		b = strip_relabel(lsecond(op->args));
		if (b && IsA(b, Param) && ((Param *) b)->paramkind == PARAM_EXEC &&
			(paramno < 0 || ((Param *) b)->paramid == paramno) &&
			scan_column(a, scanrelid, attno))
			return true;
		if (a && IsA(a, Param) && ((Param *) a)->paramkind == PARAM_EXEC &&
			(paramno < 0 || ((Param *) a)->paramid == paramno) &&
			scan_column(b, scanrelid, attno))
			return true;
	}
	return false;
}

/* The join columns of a nested loop's inner relation, for an index. */
static int
inner_join_columns(Walk *w, NestLoop *nl, Plan *inner, Oid relid, AttrNumber *attnos)
{
	int			n = 0;
	ListCell   *lc;

	foreach(lc, nl->join.joinqual)
	{
		Node	   *clause = lfirst(lc);
		OpExpr	   *op;
		ColRef		col;

		if (!IsA(clause, OpExpr) || !is_equality((OpExpr *) clause))
			continue;
		op = (OpExpr *) clause;
		for (int side = 0; side < 2; side++)
			if (resolve_node(w, (Plan *) nl, list_nth(op->args, side), &col) &&
				col.relid == relid)
				add_attno(attnos, &n, col.attno);
	}
	foreach(lc, nl->nestParams)
	{
		NestLoopParam *p = lfirst(lc);
		AttrNumber	attno;

		if (param_column(inner->qual, ((Scan *) inner)->scanrelid, p->paramno, &attno))
			add_attno(attnos, &n, attno);
	}
	return n;
}

static void
check_nest_loop(Walk *w, NestLoop *nl)
{
	Plan	   *outer = nl->join.plan.lefttree;
	Plan	   *inner = nl->join.plan.righttree;
	Oid			relid;
	double		rows;
	AttrNumber	attnos[INDEX_MAX_KEYS];
	int			n;

	if (outer == NULL || inner == NULL || outer->plan_rows <= 1)
		return;
	while (inner && (IsA(inner, Material) || IsA(inner, Memoize)))
		inner = inner->lefttree;
	if (inner == NULL || !IsA(inner, SeqScan))
		return;
	relid = scan_relid(w, (Scan *) inner);
	if (!OidIsValid(relid))
		return;
	rows = analyze_rel_rows(relid);
	if (!is_large(rows))
		return;
	n = inner_join_columns(w, nl, inner, relid, attnos);
	add_finding(w, "warning", "Nested Loop", analyze_report_relid(relid),
				psprintf("Nested Loop scans %s (~%.0f rows) for each of ~%.0f outer rows%s",
						 analyze_rel_name(relid), rows, outer->plan_rows,
						 n > 0 ? "" : "; the join condition gives no column to index"),
				n > 0 ? create_index_sql(relid, attnos, n) : NULL);
}

/* ---- joins along foreign keys without an index ---- */

/* Is relid the relation a foreign key references, or a partition of it? */
static bool
is_referenced(Oid relid, Oid confrelid)
{
	if (relid == confrelid)
		return true;
	return get_rel_relispartition(relid) &&
		list_member_oid(get_partition_ancestors(relid), confrelid);
}

/* Same column, by name: a partition's attribute numbers may differ. */
static bool
same_column(Oid rel_a, AttrNumber att_a, Oid rel_b, AttrNumber att_b)
{
	char	   *a;
	char	   *b;

	if (rel_a == rel_b)
		return att_a == att_b;
	a = get_attname(rel_a, att_a, true);
	b = get_attname(rel_b, att_b, true);
	return a && b && strcmp(a, b) == 0;
}

/*
 * A join of referencing.col = referenced.col along a foreign key of
 * referencing whose columns no index leads with.
 */
static void
check_fk_side(Walk *w, const char *node, ColRef *ref, ColRef *target)
{
	Relation	rel;
	List	   *fks;
	ListCell   *lc;
	List	   *hits = NIL;

	if (get_rel_relkind(ref->relid) != RELKIND_RELATION)
		return;
	rel = relation_open(ref->relid, AccessShareLock);
	fks = RelationGetFKeyList(rel);
	foreach(lc, fks)
	{
		ForeignKeyCacheInfo *fk = lfirst(lc);

		if (!is_referenced(target->relid, fk->confrelid))
			continue;
		for (int k = 0; k < fk->nkeys; k++)
			if (fk->conkey[k] == ref->attno &&
				same_column(fk->confrelid, fk->confkey[k], target->relid, target->attno))
			{
				hits = lappend(hits, copyObject(fk));
				break;
			}
	}
	relation_close(rel, AccessShareLock);

	foreach(lc, hits)
	{
		ForeignKeyCacheInfo *fk = lfirst(lc);
		char	   *conname;

		if (analyze_fk_indexes(fk->conoid) != NIL)
			continue;
		conname = get_constraint_name(fk->conoid);
		add_finding(w, "warning", node, analyze_report_relid(ref->relid),
					psprintf("join along foreign key %s: no index on %s (%s); deletes and key updates on %s scan it too",
							 quote_identifier(conname ? conname : "?"),
							 analyze_rel_name(ref->relid),
							 analyze_column_list(ref->relid, fk->conkey, fk->nkeys),
							 analyze_rel_name(analyze_report_relid(target->relid))),
					create_index_sql(ref->relid, fk->conkey, fk->nkeys));
	}
}

static void
check_fk_pair(Walk *w, const char *node, ColRef *a, ColRef *b)
{
	if (a->relid == b->relid)
		return;
	check_fk_side(w, node, a, b);
	check_fk_side(w, node, b, a);
}

static void
check_join_clauses(Walk *w, Plan *join, List *clauses)
{
	ListCell   *lc;

	foreach(lc, clauses)
	{
		Node	   *clause = lfirst(lc);
		OpExpr	   *op;
		ColRef		a;
		ColRef		b;

		if (!IsA(clause, OpExpr) || !is_equality((OpExpr *) clause))
			continue;
		op = (OpExpr *) clause;
		if (resolve_node(w, join, linitial(op->args), &a) &&
			resolve_node(w, join, lsecond(op->args), &b))
			check_fk_pair(w, node_name(join), &a, &b);
	}
}

/*
 * The scan under a nested loop that compares a column with parameter
 * paramno, searched through the inner side.
 */
static bool
find_param_scan(Walk *w, Plan *plan, int paramno, ColRef *col)
{
	List	   *quals = NIL;
	AttrNumber	attno;
	Oid			relid;

	if (plan == NULL)
		return false;
	check_stack_depth();
	switch (nodeTag(plan))
	{
		case T_SeqScan:
			quals = plan->qual;
			break;
		case T_IndexScan:
			quals = list_concat_copy(((IndexScan *) plan)->indexqualorig, plan->qual);
			break;
		case T_BitmapHeapScan:
			quals = list_concat_copy(((BitmapHeapScan *) plan)->bitmapqualorig, plan->qual);
			break;
		case T_Material:
		case T_Memoize:
		case T_Sort:
		case T_Gather:
			return find_param_scan(w, plan->lefttree, paramno, col);
		default:
			return false;
	}
	relid = scan_relid(w, (Scan *) plan);
	if (!OidIsValid(relid) || !param_column(quals, ((Scan *) plan)->scanrelid, paramno, &attno))
		return false;
	col->relid = relid;
	col->attno = attno;
	return true;
}

static void
check_nest_loop_params(Walk *w, NestLoop *nl)
{
	ListCell   *lc;

	foreach(lc, nl->nestParams)
	{
		NestLoopParam *p = lfirst(lc);
		ColRef		outer;
		ColRef		inner;

		if (p->paramval == NULL ||
			!resolve_var(w, (Plan *) nl, p->paramval, &outer) ||
			!find_param_scan(w, nl->join.plan.righttree, p->paramno, &inner))
			continue;
		check_fk_pair(w, "Nested Loop", &outer, &inner);
	}
}

/* ---- the walk ---- */

static void
check_node(Walk *w, Plan *plan, Plan *parent)
{
	switch (nodeTag(plan))
	{
		case T_SeqScan:
			check_seq_scan(w, (SeqScan *) plan, check_scan_like(w, (SeqScan *) plan));
			break;
		case T_Sort:
			check_sort(w, (Sort *) plan, parent);
			break;
		case T_Hash:
			check_hash(w, (Hash *) plan);
			break;
		case T_Agg:
			check_hash_agg(w, (Agg *) plan);
			break;
		case T_NestLoop:
			check_nest_loop(w, (NestLoop *) plan);
			check_join_clauses(w, plan, ((Join *) plan)->joinqual);
			check_nest_loop_params(w, (NestLoop *) plan);
			break;
		case T_HashJoin:
			check_join_clauses(w, plan, ((HashJoin *) plan)->hashclauses);
			check_join_clauses(w, plan, ((Join *) plan)->joinqual);
			break;
		case T_MergeJoin:
			check_join_clauses(w, plan, ((MergeJoin *) plan)->mergeclauses);
			check_join_clauses(w, plan, ((Join *) plan)->joinqual);
			break;
		default:
			break;
	}
}

static void
walk_list(Walk *w, List *plans, Plan *parent)
{
	ListCell   *lc;

	foreach(lc, plans)
		walk(w, (Plan *) lfirst(lc), parent);
}

static void
walk(Walk *w, Plan *plan, Plan *parent)
{
	if (plan == NULL)
		return;
	check_stack_depth();
	CHECK_FOR_INTERRUPTS();

	check_node(w, plan, parent);
	walk(w, plan->lefttree, plan);
	walk(w, plan->righttree, plan);
	switch (nodeTag(plan))
	{
		case T_Append:
			walk_list(w, ((Append *) plan)->appendplans, plan);
			break;
		case T_MergeAppend:
			walk_list(w, ((MergeAppend *) plan)->mergeplans, plan);
			break;
		case T_BitmapAnd:
			walk_list(w, ((BitmapAnd *) plan)->bitmapplans, plan);
			break;
		case T_BitmapOr:
			walk_list(w, ((BitmapOr *) plan)->bitmapplans, plan);
			break;
		case T_SubqueryScan:
			walk(w, ((SubqueryScan *) plan)->subplan, plan);
			break;
		case T_CustomScan:
			walk_list(w, ((CustomScan *) plan)->custom_plans, plan);
			break;
		default:
			break;
	}
}

/* The PARAM_EXEC ids the initPlans of plan and everything below it set. */
static void
collect_initparams(Walk *w, Plan *plan)
{
	ListCell   *lc;

	if (plan == NULL)
		return;
	check_stack_depth();
	foreach(lc, plan->initPlan)
	{
		SubPlan    *sp = lfirst(lc);
		ListCell   *pc;

		foreach(pc, sp->setParam)
			w->initparams = bms_add_member(w->initparams, lfirst_int(pc));
	}
	collect_initparams(w, plan->lefttree);
	collect_initparams(w, plan->righttree);
	switch (nodeTag(plan))
	{
		case T_Append:
			foreach(lc, ((Append *) plan)->appendplans)
				collect_initparams(w, lfirst(lc));
			break;
		case T_MergeAppend:
			foreach(lc, ((MergeAppend *) plan)->mergeplans)
				collect_initparams(w, lfirst(lc));
			break;
		case T_BitmapAnd:
			foreach(lc, ((BitmapAnd *) plan)->bitmapplans)
				collect_initparams(w, lfirst(lc));
			break;
		case T_BitmapOr:
			foreach(lc, ((BitmapOr *) plan)->bitmapplans)
				collect_initparams(w, lfirst(lc));
			break;
		case T_SubqueryScan:
			collect_initparams(w, ((SubqueryScan *) plan)->subplan);
			break;
		case T_CustomScan:
			foreach(lc, ((CustomScan *) plan)->custom_plans)
				collect_initparams(w, lfirst(lc));
			break;
		default:
			break;
	}
}

/* Append the advice about stmt's plan (and its subplans) to findings. */
List *
analyze_plan(PlannedStmt *stmt, List *findings)
{
	Walk		w;
	ListCell   *lc;

	w.stmt = stmt;
	w.findings = findings;
	w.initparams = NULL;
	collect_initparams(&w, stmt->planTree);
	foreach(lc, stmt->subplans)
		collect_initparams(&w, lfirst(lc));
	walk(&w, stmt->planTree, NULL);
	/* initPlans, SubPlans and CTEs; an unused one is NULL */
	walk_list(&w, stmt->subplans, NULL);
	return w.findings;
}
