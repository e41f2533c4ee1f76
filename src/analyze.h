/*
 * analyze.h
 *	  Interface between the query-analysis files: planning a statement and
 *	  walking its plan (analyze.c, analyze_walk.c), index and foreign-key
 *	  lookups (analyze_index.c), and the health report with its thresholds
 *	  and metrics (analyze_health.c).
 */
#ifndef PG_HARDEN_ANALYZE_H
#define PG_HARDEN_ANALYZE_H

#include "nodes/pg_list.h"
#include "nodes/plannodes.h"

/* Thresholds (GUCs, analyze_health.c). */
extern int	analyze_min_rows;

/* One piece of advice about a plan. */
typedef struct AnalyzeFinding
{
	const char *key;			/* what makes two findings the same advice */
	const char *severity;		/* "warning" or "info" */
	const char *node;			/* plan node, as EXPLAIN names it */
	Oid			relid;			/* InvalidOid: no single relation */
	char	   *message;
	char	   *suggestion;		/* SQL, or NULL */
} AnalyzeFinding;

/* analyze.c */
extern double analyze_statement_cost(const char *sql);
extern Oid *analyze_statement_params(const char *sql, int *nparams);

/* analyze_hypo.c */
extern void analyze_hypo_findings(const char *sql, double cost, List *findings);

/* analyze_walk.c */
extern List *analyze_plan(PlannedStmt *stmt, List *findings);

/* analyze_index.c */
typedef enum LikeSupport		/* weakest first */
{
	LIKE_SUPPORT_NONE,
	LIKE_SUPPORT_PREFIX,		/* a btree usable for left-anchored patterns */
	LIKE_SUPPORT_ANY			/* an index whose opfamily has the operator */
} LikeSupport;

extern double analyze_rel_rows(Oid relid);
extern LikeSupport analyze_like_support(Oid relid, AttrNumber attno, Oid opno);
extern LikeSupport analyze_expr_like_support(Oid relid, Node *expr, Oid opno);
extern bool analyze_index_leads_with(Oid relid, AttrNumber attno);
extern List *analyze_fk_indexes(Oid conoid);
struct FormData_pg_index;
typedef bool (*analyze_index_visitor) (struct FormData_pg_index *idx, HeapTuple tup, void *arg);
extern bool analyze_any_index(Oid relid, analyze_index_visitor visit, void *arg);
extern Oid	analyze_report_relid(Oid relid);
extern char *analyze_rel_name(Oid relid);
extern char *analyze_column_list(Oid relid, const AttrNumber *attnos, int n);
extern char *analyze_extension_schema(const char *extname);

/* analyze_history.c: called by the background worker between its runs */
extern int	analyze_snapshot_interval_ms;
extern void analyze_worker_snapshot(void);

/* analyze_health.c */
extern void analyze_define_gucs(bool preloading);
extern Size analyze_shmem_size(void);
extern void analyze_shmem_startup(void);

#endif							/* PG_HARDEN_ANALYZE_H */
