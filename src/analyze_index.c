/*
 * analyze_index.c
 *	  Catalog lookups for query analysis: relation sizes, which indexes
 *	  serve a column or a foreign key, and the expression/predicate
 *	  comparison behind harden.duplicate_indexes.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/relation.h"
#include "catalog/partition.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_index.h"
#include "catalog/pg_opfamily.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/nodes.h"
#include "optimizer/optimizer.h"
#include "optimizer/plancat.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/pg_locale.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"

#include "pg_harden.h"
#include "analyze.h"

static List *index_tree(HeapTuple tup, AttrNumber attr);

/*
 * Estimated rows of a table, as the planner sees them: pg_class statistics
 * scaled to the relation's current size.  -1 for relations without storage.
 */
double
analyze_rel_rows(Oid relid)
{
	char		kind = get_rel_relkind(relid);
	Relation	rel;
	BlockNumber pages;
	double		tuples;
	double		allvisfrac;

	if (kind != RELKIND_RELATION && kind != RELKIND_MATVIEW)
		return -1;
	/* The statement's parse analysis already holds a lock on it. */
	rel = relation_open(relid, AccessShareLock);
	estimate_rel_size(rel, NULL, &pages, &tuples, &allvisfrac);
	relation_close(rel, AccessShareLock);
	return tuples;
}

/*
 * Visit each valid index of relid with its pg_index row until visit returns
 * true; returns whether one did.
 */
bool
analyze_any_index(Oid relid, analyze_index_visitor visit, void *arg)
{
	Relation	rel = relation_open(relid, AccessShareLock);
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	bool		found = false;

	relation_close(rel, AccessShareLock);
	foreach(lc, indexes)
	{
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));
		Form_pg_index idx;

		if (!HeapTupleIsValid(tup))
			continue;
		idx = (Form_pg_index) GETSTRUCT(tup);
		if (idx->indisvalid && idx->indisready)
			found = visit(idx, tup, arg);
		ReleaseSysCache(tup);
		if (found)
			break;
	}
	list_free(indexes);
	return found;
}

static Oid
index_am(Oid indexrelid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(indexrelid));
	Oid			am;

	if (!HeapTupleIsValid(tup))
		return InvalidOid;
	am = ((Form_pg_class) GETSTRUCT(tup))->relam;
	ReleaseSysCache(tup);
	return am;
}

/* Element i of an oidvector column of a pg_index tuple; InvalidOid if none. */
static Oid
index_oidvector_at(HeapTuple tup, AttrNumber attnum, int i)
{
	bool		isnull;
	Datum		d = SysCacheGetAttr(INDEXRELID, tup, attnum, &isnull);
	oidvector  *v = (oidvector *) DatumGetPointer(d);

	if (isnull || i >= v->dim1)
		return InvalidOid;
	return v->values[i];
}

/* Operator family of key column i of an index. */
static Oid
index_opfamily(HeapTuple tup, int i)
{
	Oid			opclass = index_oidvector_at(tup, Anum_pg_index_indclass, i);

	return OidIsValid(opclass) ? get_opclass_family(opclass) : InvalidOid;
}

static Oid
index_collation(HeapTuple tup, int i)
{
	return index_oidvector_at(tup, Anum_pg_index_indcollation, i);
}

typedef struct LikeArgs
{
	AttrNumber	attno;
	Oid			opno;
	LikeSupport best;
} LikeArgs;

/*
 * Can key column i of this index serve col LIKE/ILIKE pattern?  Any index
 * whose operator family has the operator itself (pg_trgm's) serves every
 * pattern.  A non-partial btree leading with the column serves
 * left-anchored LIKE through the planner's prefix rewrite when its opclass
 * compares bytes: the pattern opclasses, or the default one under the C
 * collation.
 */
static LikeSupport
key_like_support(Form_pg_index idx, HeapTuple tup, int i, Oid opno)
{
	Oid			family = index_opfamily(tup, i);

	if (OidIsValid(family) && op_in_opfamily(opno, family))
		return LIKE_SUPPORT_ANY;
	if (i == 0 && index_am(idx->indexrelid) == BTREE_AM_OID &&
		heap_attisnull(tup, Anum_pg_index_indpred, NULL) &&
		(family == TEXT_PATTERN_BTREE_FAM_OID ||
		 family == BPCHAR_PATTERN_BTREE_FAM_OID ||
		 ((family == TEXT_BTREE_FAM_OID || family == BPCHAR_BTREE_FAM_OID) &&
		  lc_collate_is_c(index_collation(tup, i)))))
		return LIKE_SUPPORT_PREFIX;
	return LIKE_SUPPORT_NONE;
}

/* Keeps the better of two; true when nothing can be better (stop looking). */
static bool
better_like(LikeSupport *best, LikeSupport s)
{
	if (s > *best)
		*best = s;
	return *best == LIKE_SUPPORT_ANY;
}

/* The best support of the key columns that are the column. */
static bool
visit_like(Form_pg_index idx, HeapTuple tup, void *arg)
{
	LikeArgs   *a = arg;

	for (int i = 0; i < idx->indnkeyatts; i++)
	{
		if (idx->indkey.values[i] != a->attno)
			continue;
		if (better_like(&a->best, key_like_support(idx, tup, i, a->opno)))
			return true;
	}
	return false;
}

LikeSupport
analyze_like_support(Oid relid, AttrNumber attno, Oid opno)
{
	LikeArgs	a = {attno, opno, LIKE_SUPPORT_NONE};

	analyze_any_index(relid, visit_like, &a);
	return a.best;
}

typedef struct ExprLikeArgs
{
	Node	   *expr;
	Oid			opno;
	LikeSupport best;
} ExprLikeArgs;

/* The same test for an expression (its Vars numbered 1), against expression indexes. */
static bool
visit_expr_like(Form_pg_index idx, HeapTuple tup, void *arg)
{
	ExprLikeArgs *a = arg;
	List	   *exprs;
	ListCell   *next;

	if (heap_attisnull(tup, Anum_pg_index_indexprs, NULL))
		return false;
	/* as the planner sees them (RelationGetIndexExpressions) */
	exprs = (List *) eval_const_expressions(NULL, (Node *) index_tree(tup, Anum_pg_index_indexprs));
	next = list_head(exprs);
	for (int i = 0; i < idx->indnkeyatts && next != NULL; i++)
	{
		Node	   *e;

		if (idx->indkey.values[i] != 0)
			continue;
		e = lfirst(next);
		next = lnext(exprs, next);
		if (!equal(e, a->expr))
			continue;
		if (better_like(&a->best, key_like_support(idx, tup, i, a->opno)))
			return true;
	}
	return false;
}

LikeSupport
analyze_expr_like_support(Oid relid, Node *expr, Oid opno)
{
	ExprLikeArgs a = {expr, opno, LIKE_SUPPORT_NONE};

	analyze_any_index(relid, visit_expr_like, &a);
	return a.best;
}

static bool
visit_leads(Form_pg_index idx, HeapTuple tup, void *arg)
{
	return idx->indnkeyatts > 0 && idx->indkey.values[0] == *(AttrNumber *) arg;
}

/* Is there a valid index whose first key column is attno? */
bool
analyze_index_leads_with(Oid relid, AttrNumber attno)
{
	return analyze_any_index(relid, visit_leads, &attno);
}

/* What a foreign key's lookups on its referencing table need of an index. */
typedef struct FkLookup
{
	int			n;
	AttrNumber	conkey[INDEX_MAX_KEYS];
	Oid			pfeqop[INDEX_MAX_KEYS];
	Oid			collation[INDEX_MAX_KEYS];
} FkLookup;

static bool
fk_lookup(Oid conoid, Oid *conrelid, FkLookup *fk)
{
	HeapTuple	tup = SearchSysCache1(CONSTROID, ObjectIdGetDatum(conoid));
	Form_pg_constraint con;
	AttrNumber	confkey[INDEX_MAX_KEYS];
	Oid			ppeqop[INDEX_MAX_KEYS];
	Oid			ffeqop[INDEX_MAX_KEYS];

	if (!HeapTupleIsValid(tup))
		return false;
	con = (Form_pg_constraint) GETSTRUCT(tup);
	if (con->contype != CONSTRAINT_FOREIGN)
	{
		ReleaseSysCache(tup);
		return false;
	}
	*conrelid = con->conrelid;
#if PG_VERSION_NUM >= 150000
	DeconstructFkConstraintRow(tup, &fk->n, fk->conkey, confkey, fk->pfeqop,
							   ppeqop, ffeqop, NULL, NULL);
#else
	DeconstructFkConstraintRow(tup, &fk->n, fk->conkey, confkey, fk->pfeqop,
							   ppeqop, ffeqop);
#endif
	/* RI's queries compare under the referenced column's collation. */
	for (int i = 0; i < fk->n; i++)
	{
		Oid			typid;
		int32		typmod;

		get_atttypetypmodcoll(con->confrelid, confkey[i], &typid, &typmod, &fk->collation[i]);
	}
	ReleaseSysCache(tup);
	return true;
}

/*
 * Does this index serve the foreign key's lookups (ON DELETE / ON UPDATE of
 * referenced rows, joins along the key)?  Each key column it uses must
 * have the key's equality operator in its operator family and the
 * collation the lookup compares with, or the lookup still reads the whole
 * table.  A valid non-partial btree whose leading key columns are the
 * key's columns in any order serves it; so does a hash index on a
 * one-column key.
 */
static bool
index_serves_fk(Form_pg_index idx, HeapTuple tup, const FkLookup *fk)
{
	Oid			am;

	if (!idx->indisvalid || !idx->indisready || idx->indnkeyatts < fk->n ||
		!heap_attisnull(tup, Anum_pg_index_indpred, NULL))
		return false;
	am = index_am(idx->indexrelid);
	if (am == HASH_AM_OID ? fk->n != 1 : am != BTREE_AM_OID)
		return false;
	for (int i = 0; i < fk->n; i++)
	{
		int			j;
		Oid			family;

		for (j = 0; j < fk->n; j++)
			if (idx->indkey.values[j] == fk->conkey[i])
				break;
		if (j == fk->n)
			return false;
		family = index_opfamily(tup, j);
		if (!OidIsValid(family) || !op_in_opfamily(fk->pfeqop[i], family))
			return false;
		if (OidIsValid(fk->collation[i]) && index_collation(tup, j) != fk->collation[i])
			return false;
	}
	return true;
}

/*
 * The indexes that serve foreign key conoid's lookups.  pg_index is read
 * directly, not through the relcache, so no lock on the table is taken:
 * harden.missing_fk_indexes and harden.unused_indexes answer while DDL
 * waits for the table.
 */
List *
analyze_fk_indexes(Oid conoid)
{
	FkLookup	fk;
	Oid			conrelid;
	Relation	pg_index;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	List	   *result = NIL;

	if (!fk_lookup(conoid, &conrelid, &fk))
		return NIL;
	pg_index = table_open(IndexRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_index_indrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(conrelid));
	scan = systable_beginscan(pg_index, IndexIndrelidIndexId, true, NULL, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_index idx = (Form_pg_index) GETSTRUCT(tup);

		if (index_serves_fk(idx, tup, &fk))
			result = lappend_oid(result, idx->indexrelid);
	}
	systable_endscan(scan);
	table_close(pg_index, AccessShareLock);
	return result;
}

PG_FUNCTION_INFO_V1(harden_fk_indexes);

/* harden._fk_indexes(con oid) → oid[]: the indexes serving a foreign key. */
Datum
harden_fk_indexes(PG_FUNCTION_ARGS)
{
	List	   *indexes = analyze_fk_indexes(PG_GETARG_OID(0));
	int			n = list_length(indexes);
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	int			i = 0;
	ListCell   *lc;

	foreach(lc, indexes)
		elems[i++] = ObjectIdGetDatum(lfirst_oid(lc));
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, n, OIDOID, sizeof(Oid), true, TYPALIGN_INT));
}

/*
 * The relation to name in advice: a partition's root, where one
 * CREATE INDEX reaches every partition.
 */
Oid
analyze_report_relid(Oid relid)
{
	if (get_rel_relispartition(relid))
	{
		List	   *ancestors = get_partition_ancestors(relid);

		if (ancestors != NIL)
			return llast_oid(ancestors);
	}
	return relid;
}

char *
analyze_rel_name(Oid relid)
{
	char	   *nsp = get_namespace_name(get_rel_namespace(relid));
	char	   *rel = get_rel_name(relid);

	if (nsp == NULL || rel == NULL)
		return psprintf("%u", relid);
	return quote_qualified_identifier(nsp, rel);
}

/* "a, b" with each column quoted; names are shared by a partition tree. */
char *
analyze_column_list(Oid relid, const AttrNumber *attnos, int n)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
	{
		char	   *name = get_attname(relid, attnos[i], true);

		appendStringInfo(&buf, "%s%s", i > 0 ? ", " : "",
						 name ? quote_identifier(name) : "?");
	}
	return buf.data;
}

/* ---- harden._index_same_expr ---- */

/* A pg_index node-tree column as a list (NIL when NULL). */
static List *
index_tree(HeapTuple tup, AttrNumber attr)
{
	bool		isnull;
	Datum		d = SysCacheGetAttr(INDEXRELID, tup, attr, &isnull);
	Node	   *node;

	if (isnull)
		return NIL;
	node = stringToNode(TextDatumGetCString(d));
	if (attr == Anum_pg_index_indpred)
		return list_make1(node);
	return (List *) node;
}

PG_FUNCTION_INFO_V1(harden_index_same_expr);

/*
 * True when index a's expressions are, in order, the first expressions of
 * index b and both have the same predicate.  The trees are compared with
 * equal(), which ignores parse locations and spelling, so "(lower(x))" and
 * "lower( x )" match and different casts do not.  Not-an-index is false.
 */
Datum
harden_index_same_expr(PG_FUNCTION_ARGS)
{
	Oid			a = PG_GETARG_OID(0);
	Oid			b = PG_GETARG_OID(1);
	HeapTuple	ta = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(a));
	HeapTuple	tb;
	bool		same = false;

	if (!HeapTupleIsValid(ta))
		PG_RETURN_BOOL(false);
	tb = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(b));
	if (HeapTupleIsValid(tb))
	{
		List	   *ea = index_tree(ta, Anum_pg_index_indexprs);
		List	   *eb = index_tree(tb, Anum_pg_index_indexprs);

		same = ((Form_pg_index) GETSTRUCT(ta))->indrelid ==
			((Form_pg_index) GETSTRUCT(tb))->indrelid &&
			list_length(ea) <= list_length(eb) &&
			equal(index_tree(ta, Anum_pg_index_indpred),
				  index_tree(tb, Anum_pg_index_indpred));
		for (int i = 0; same && i < list_length(ea); i++)
			same = equal(list_nth(ea, i), list_nth(eb, i));
		ReleaseSysCache(tb);
	}
	ReleaseSysCache(ta);
	PG_RETURN_BOOL(same);
}

/*
 * The schema an extension is installed in, or NULL when it is not: advice
 * names the objects of pg_trgm and hypopg qualified, whatever the
 * search_path.
 */
char *
analyze_extension_schema(const char *extname)
{
	Oid			extoid = get_extension_oid(extname, true);
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			nsp = InvalidOid;

	if (!OidIsValid(extoid))
		return NULL;
	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(extoid));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		nsp = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return OidIsValid(nsp) ? get_namespace_name(nsp) : NULL;
}
