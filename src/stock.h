/*
 * stock.h
 *	  Interface between the stock-row locking files: the per-backend table
 *	  cache with its prepared plans (stock_plan.c), the line operations and
 *	  SQL functions (stock.c), attach/detach (stock_attach.c) and the
 *	  reservations (stock_hold.c).
 */
#ifndef PG_HARDEN_STOCK_H
#define PG_HARDEN_STOCK_H

#include "executor/spi.h"
#include "pg_harden.h"
#include "fmgr.h"
#include "utils/array.h"

/* How a call waits for a row another transaction has locked. */
typedef enum StockWaitMode
{
	STOCK_WAIT_BLOCK,
	STOCK_WAIT_NOWAIT,
	STOCK_WAIT_SKIP,
	STOCK_WAIT_TIMEOUT
} StockWaitMode;

typedef struct StockWait
{
	StockWaitMode mode;
	int			timeout_ms;		/* STOCK_WAIT_TIMEOUT only */
} StockWait;

/* Row-locking plans, indexed by StockWaitMode (TIMEOUT uses BLOCK's). */
#define STOCK_LOCK_PLANS 3

/*
 * One attached table as this backend last read it from harden.stock_tables,
 * with plans prepared for it.  Entries live in a hash keyed by relid and are
 * revalidated after a relcache invalidation of the table.
 */
typedef struct StockTable
{
	Oid			relid;			/* hash key */
	bool		valid;			/* false: reread the configuration */
	Oid			relnamespace;	/* the plans name the table as it was then */
	NameData	relname;
	NameData	qty_column;
	NameData	key_column;
	Oid			qty_type;
	Oid			key_type;
	int32		key_typmod;
	Oid			key_collation;
	int64		qty_max;		/* largest column value; 0 for numeric */
	FmgrInfo   *key_cmp;		/* btree comparison (type cache owns it) */
	Oid			key_output;
	Oid			key_input;
	Oid			key_ioparam;
	SPIPlanPtr	take;			/* deduct if enough, one statement */
	SPIPlanPtr	lock[STOCK_LOCK_PLANS];	/* lock a row, say if enough */
	SPIPlanPtr	peek;			/* current quantity, no lock */
	SPIPlanPtr	deduct;			/* deduct from a locked row */
	SPIPlanPtr	put;			/* add, refusing to exceed qty_max */
} StockTable;

/* One merged order line: a key in the column's type and its quantity. */
typedef struct StockLine
{
	Datum		key;
	int64		qty;
	char	   *key_text;		/* output form, made on demand */
	int64		remaining;
} StockLine;

/*
 * Work on pg_harden's own tables (harden.stock_tables, harden.stock_holds)
 * as the extension's owner, with a search_path of pg_catalog only.
 */
typedef HardenRoleScope StockOwnerScope;

/* stock_plan.c */
extern StockTable *stock_table_get(Oid relid);
extern void stock_table_forget(Oid relid);
extern char *stock_table_name(Oid relid);
extern SPIPlanPtr stock_prepare(const char *sql, int nargs, Oid *argtypes);
extern void stock_owner_enter(StockOwnerScope *scope);
extern void stock_owner_leave(StockOwnerScope *scope);

/* stock.c */
extern void stock_define_gucs(bool preloading);
extern StockWait stock_parse_wait(FunctionCallInfo fcinfo, int argno);
extern int64 stock_arg_qty(FunctionCallInfo fcinfo, int argno);
extern StockLine *stock_lines_from_arrays(StockTable *st, FunctionCallInfo fcinfo,
										  int keys_argno, int qtys_argno,
										  int *nlines, int **positions, int *ninput);
extern StockLine *stock_lines_from_holds(StockTable *st, int nholds, ArrayType **keys,
										 ArrayType **qtys, int *nlines);
extern bool stock_take_lines(StockTable *st, StockLine *lines, int nlines, StockWait wait);
extern void stock_put_lines(StockTable *st, StockLine *lines, int nlines, bool skip_missing);
extern const char *stock_line_key(StockTable *st, StockLine *line);
extern int	stock_key_style_enter(void);
extern void stock_key_style_leave(int nest);
extern int	stock_hold_retention_s;

#endif							/* PG_HARDEN_STOCK_H */
