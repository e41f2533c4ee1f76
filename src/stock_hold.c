/*
 * stock_hold.c
 *	  Reservations: stock_reserve deducts now and records a hold in
 *	  harden.stock_holds; stock_commit makes it final; stock_release,
 *	  stock_release_ref and stock_run_due (expiry) give it back.
 *
 * A hold changes state only while its row is locked (FOR UPDATE), and only
 * from 'held': whichever of commit, release and expiry locks it first wins,
 * the others see the new state and do nothing, so stock is given back at
 * most once.  Hold rows are always locked before stock rows, and stock rows
 * in key order, so these calls cannot deadlock with each other or with takes.
 *
 * The hold table is written as the extension's owner.  The stock table is
 * updated as the caller, who therefore needs UPDATE on it, and may commit or
 * release only holds it made (or on tables it owns); expiry updates each
 * table as its owner, security-restricted, one table per subtransaction.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "pg_harden.h"
#include "stock.h"
#include "worker.h"

typedef enum HoldPlan
{
	HOLD_INSERT,
	HOLD_LOCK,
	HOLD_CLOSE,
	HOLD_BY_REF,
	HOLD_DUE,
	HOLD_PURGE,
	HOLD_FAILED,
	HOLD_BACKOFF,
	NUM_HOLD_PLANS
} HoldPlan;

static const struct
{
	const char *sql;
	int			nargs;
	Oid			argtypes[6];
}			hold_sql[NUM_HOLD_PLANS] = {
	[HOLD_INSERT] = {
		"INSERT INTO harden.stock_holds (relid, ref, keys, qtys, expires_at, owner)"
		" VALUES ($1, $2, $3, $4, pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) $5, $6) RETURNING id",
		6, {OIDOID, TEXTOID, TEXTARRAYOID, INT8ARRAYOID, INTERVALOID, OIDOID}
	},
	[HOLD_LOCK] = {
		"SELECT id, CAST(relid AS pg_catalog.oid), keys, qtys, status, CAST(owner AS pg_catalog.oid), attempts, last_error"
		" FROM harden.stock_holds WHERE id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
		1, {INT8OID}
	},
	[HOLD_CLOSE] = {
		"UPDATE harden.stock_holds SET status = $2, closed_at = pg_catalog.clock_timestamp()"
		" WHERE id OPERATOR(pg_catalog.=) ANY ($1) AND status OPERATOR(pg_catalog.=) 'held'",
		2, {INT8ARRAYOID, TEXTOID}
	},
	[HOLD_BY_REF] = {
		"SELECT id, CAST(relid AS pg_catalog.oid), keys, qtys, status, CAST(owner AS pg_catalog.oid), attempts, last_error"
		" FROM harden.stock_holds h"
		" WHERE ref OPERATOR(pg_catalog.=) $1 AND status OPERATOR(pg_catalog.=) 'held'"
		" AND (pg_catalog.pg_has_role($2, CAST(owner AS pg_catalog.oid), 'USAGE')"
		"      OR pg_catalog.pg_has_role($2, (SELECT relowner FROM pg_catalog.pg_class c"
		"                                     WHERE c.oid OPERATOR(pg_catalog.=) h.relid), 'USAGE'))"
		" ORDER BY id FOR UPDATE",
		2, {TEXTOID, OIDOID}
	},
	[HOLD_DUE] = {
		"SELECT id, CAST(relid AS pg_catalog.oid), keys, qtys, status, CAST(owner AS pg_catalog.oid), attempts, last_error"
		" FROM harden.stock_holds WHERE status OPERATOR(pg_catalog.=) 'held'"
		" AND expires_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()"
		" AND (next_try IS NULL OR next_try OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp())"
		" ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
		1, {INT4OID}
	},
	[HOLD_PURGE] = {
		"DELETE FROM harden.stock_holds"
		" WHERE status OPERATOR(pg_catalog.<>) 'held'"
		" AND closed_at OPERATOR(pg_catalog.<) (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) $1)",
		1, {INTERVALOID}
	},
	[HOLD_FAILED] = {
		"UPDATE harden.stock_holds SET attempts = attempts OPERATOR(pg_catalog.+) 1, last_error = $2,"
		" next_try = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) $3"
		" WHERE id OPERATOR(pg_catalog.=) ANY ($1) AND status OPERATOR(pg_catalog.=) 'held'",
		3, {INT8ARRAYOID, TEXTOID, INTERVALOID}
	},
	[HOLD_BACKOFF] = {
		"SELECT pg_catalog.count(*) FROM harden.stock_holds"
		" WHERE status OPERATOR(pg_catalog.=) 'held' AND attempts OPERATOR(pg_catalog.>) 0",
		0, {InvalidOid}
	},
};

static SPIPlanPtr hold_plans[NUM_HOLD_PLANS];

/* A hold row, copied out of SPI's tuple table. */
typedef struct Hold
{
	int64		id;
	Oid			relid;
	ArrayType  *keys;
	ArrayType  *qtys;
	char	   *status;
	Oid			owner;			/* the role that reserved */
	int			attempts;		/* failed expiries so far */
	char	   *last_error;		/* NULL: none */
} Hold;

/* Run one hold statement as the extension's owner. */
static int
hold_exec(HoldPlan p, Datum *values, const char *nulls, long tcount)
{
	StockOwnerScope scope;
	int			ret;

	stock_owner_enter(&scope);
	if (hold_plans[p] == NULL)
	{
		SPIPlanPtr	plan = stock_prepare(hold_sql[p].sql, hold_sql[p].nargs,
										 (Oid *) hold_sql[p].argtypes);

		SPI_keepplan(plan);
		hold_plans[p] = plan;
	}
	ret = SPI_execute_plan(hold_plans[p], values, nulls, false, tcount);
	stock_owner_leave(&scope);
	if (ret < 0)
		elog(ERROR, "stock hold statement failed: %s", SPI_result_code_string(ret));
	return ret;
}

static Hold *
holds_from_result(int *nholds)
{
	Hold	   *holds = palloc0(sizeof(Hold) * Max(SPI_processed, 1));
	TupleDesc	desc = SPI_tuptable->tupdesc;

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;

		holds[i].id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		holds[i].relid = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
		holds[i].keys = DatumGetArrayTypePCopy(SPI_getbinval(tup, desc, 3, &isnull));
		holds[i].qtys = DatumGetArrayTypePCopy(SPI_getbinval(tup, desc, 4, &isnull));
		holds[i].status = SPI_getvalue(tup, desc, 5);
		holds[i].owner = DatumGetObjectId(SPI_getbinval(tup, desc, 6, &isnull));
		holds[i].attempts = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
		holds[i].last_error = SPI_getvalue(tup, desc, 8);
	}
	*nholds = (int) SPI_processed;
	return holds;
}

static int
cmp_hold_relid(const void *a, const void *b)
{
	const Hold *x = a;
	const Hold *y = b;

	if (x->relid != y->relid)
		return x->relid < y->relid ? -1 : 1;
	return (x->id > y->id) - (x->id < y->id);
}

/* Give back the holds[first..last] (one table) and close them with status. */
static void
give_back_table(Hold *holds, int first, int last, const char *status, bool as_owner)
{
	int			n = last - first + 1;
	ArrayType **keys = palloc(sizeof(ArrayType *) * n);
	ArrayType **qtys = palloc(sizeof(ArrayType *) * n);
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum		values[2];
	StockTable *st;
	StockLine  *lines;
	int			nlines;
	HardenRoleScope scope;

	for (int i = first; i <= last; i++)
	{
		keys[i - first] = holds[i].keys;
		qtys[i - first] = holds[i].qtys;
		ids[i - first] = Int64GetDatum(holds[i].id);
	}
	if (as_owner)
		/* As the table's owner (role_scope.c): its code never runs as whoever runs expiry. */
		harden_role_enter(&scope, harden_rel_owner(holds[first].relid), true);
	st = stock_table_get(holds[first].relid);
	lines = stock_lines_from_holds(st, n, keys, qtys, &nlines);
	stock_put_lines(st, lines, nlines, true);
	if (as_owner)
		harden_role_leave(&scope);

	values[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	values[1] = CStringGetTextDatum(status);
	if (hold_exec(HOLD_CLOSE, values, NULL, 0) != SPI_OK_UPDATE || SPI_processed != (uint64) n)
		elog(ERROR, "could not close %d stock holds", n);
}

/*
 * give_back_table in a subtransaction: an error (a trigger that raises, a
 * key that no longer parses, a skipped update) is reported as a WARNING and
 * recorded in the holds' attempts and last_error; they stay held, to be
 * tried again, while the other tables' expired holds still go back.
 * Returns whether it worked.
 */
typedef struct GiveBackCall
{
	Hold	   *holds;
	int			first;
	int			last;
	const char *status;
} GiveBackCall;

static void
give_back_table_cb(void *arg)
{
	GiveBackCall *c = (GiveBackCall *) arg;

	give_back_table(c->holds, c->first, c->last, c->status, true);
}

/* Expired holds given back after failed attempts: the failure is over. */
static void
report_recovered(Hold *holds, int first, int last)
{
	for (int i = first; i <= last; i++)
		if (holds[i].attempts > 0)
		{
			harden_count(HC_STOCK_EXPIRATIONS_RECOVERED, 1);
			ereport(LOG,
					(errmsg("expired stock hold " INT64_FORMAT " on table %s given back after %d failed attempt%s",
							holds[i].id, stock_table_name(holds[i].relid), holds[i].attempts,
							holds[i].attempts == 1 ? "" : "s")));
		}
}

/*
 * On failure the holds are tried again after a delay that doubles with each
 * failure (worker_retry_delay_ms).  The error is logged when it is new for
 * one of the holds, not on every retry: a table whose give-back keeps
 * failing logs once, and once more when it works again.
 */
static bool
give_back_table_guarded(Hold *holds, int first, int last, const char *status)
{
	GiveBackCall c = {holds, first, last, status};
	ErrorData  *edata;
	Datum	   *ids;
	Datum		values[3];
	int			attempts = 0;
	bool		news = false;
	Interval   *delay = palloc0(sizeof(Interval));
	int64		ms;

	if (harden_try_in_subxact(give_back_table_cb, &c, &edata))
	{
		report_recovered(holds, first, last);
		return true;
	}
	ids = palloc(sizeof(Datum) * (last - first + 1));
	for (int i = first; i <= last; i++)
	{
		ids[i - first] = Int64GetDatum(holds[i].id);
		attempts = Max(attempts, holds[i].attempts);
		if (holds[i].last_error == NULL || strcmp(holds[i].last_error, edata->message) != 0)
			news = true;
	}
	ms = worker_retry_delay_ms(attempts + 1);
	delay->time = ms * 1000;
	values[0] = PointerGetDatum(construct_array(ids, last - first + 1, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = CStringGetTextDatum(edata->message);
	values[2] = IntervalPGetDatum(delay);
	hold_exec(HOLD_FAILED, values, NULL, 0);
	harden_count(HC_STOCK_EXPIRATIONS_FAILED, last - first + 1);
	worker_note_item_error(edata->message);
	if (news)
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("could not give back %d expired stock hold%s on table %s: %s",
						last - first + 1, last > first ? "s" : "",
						stock_table_name(holds[first].relid), edata->message),
				 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
				 errhint("They stay held and are tried again after a delay that grows with each failure "
						 "(harden.stock_reservations.next_try); the same error again is not logged.")));
	FreeErrorData(edata);
	return false;
}

/*
 * Give back the stock of locked holds and mark them closed with status.
 * Tables in OID order, each table's lines merged and in key order.  With
 * as_owner (expiry), each table's stock goes back as that table's owner,
 * one table at a time so that a failing table does not hold up the others;
 * otherwise as the caller, who was checked for UPDATE on it, and any error
 * is the caller's.  Returns the number of holds closed.
 */
static int
give_back(Hold *holds, int nholds, const char *status, bool as_owner)
{
	int			closed = 0;

	if (nholds == 0)
		return 0;
	qsort(holds, nholds, sizeof(Hold), cmp_hold_relid);
	for (int first = 0; first < nholds;)
	{
		int			last = first;

		while (last + 1 < nholds && holds[last + 1].relid == holds[first].relid)
			last++;
		if (!as_owner)
			give_back_table(holds, first, last, status, false);
		else if (!give_back_table_guarded(holds, first, last, status))
		{
			first = last + 1;
			continue;
		}
		closed += last - first + 1;
		first = last + 1;
	}
	return closed;
}

/* Lock one hold by id; PH303 if there is none. */
static Hold
lock_hold(int64 id)
{
	Datum		values[1] = {Int64GetDatum(id)};
	int			n;

	hold_exec(HOLD_LOCK, values, NULL, 1);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_STOCK_UNKNOWN_RESERVATION),
				 errmsg("stock reservation " INT64_FORMAT " does not exist", id),
				 errhint("Finished reservations are deleted after harden.stock_hold_retention.")));
	return *holds_from_result(&n);
}

/*
 * Who may commit or release a hold: the role that reserved it (or a member
 * with its privileges) and the owner of its table.  Others who can update
 * the same table cannot finish another role's reservation.  Releasing also
 * needs UPDATE on the table: the stock goes back with the caller's
 * privileges.
 */
static void
check_hold_privilege(const Hold *h, bool release)
{
	Oid			user = GetUserId();
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(h->relid));
	Oid			relowner;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", h->relid)));
	relowner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	if (!has_privs_of_role(user, h->owner) && !has_privs_of_role(user, relowner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for stock reservation " INT64_FORMAT, h->id),
				 errdetail("Only role %s, which made it, or the owner of table %s may %s it.",
						   GetUserNameFromId(h->owner, true) ? GetUserNameFromId(h->owner, true) : "(dropped)",
						   stock_table_name(h->relid), release ? "release" : "commit")));
	if (release && pg_class_aclcheck(h->relid, user, ACL_UPDATE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for stock reservation " INT64_FORMAT, h->id),
				 errdetail("Releasing it needs UPDATE on table %s.",
						   stock_table_name(h->relid))));
}

/* A table as harden.admin_log names it: schema-qualified, as fsm_log does. */
static char *
audit_table_name(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), get_rel_name(relid));
}

/* What harden.admin_log records of a hold. */
static char *
hold_item_json(const Hold *h)
{
	StringInfoData buf;
	const char *owner = GetUserNameFromId(h->owner, true);

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"reservation\": " INT64_FORMAT ", \"status\": ", h->id);
	escape_json(&buf, h->status);
	appendStringInfo(&buf, ", \"keys\": %s, \"qtys\": %s, \"owner\": ",
					 text_to_cstring(DatumGetTextPP(DirectFunctionCall1(array_to_json, PointerGetDatum(h->keys)))),
					 text_to_cstring(DatumGetTextPP(DirectFunctionCall1(array_to_json, PointerGetDatum(h->qtys)))));
	if (owner)
		escape_json(&buf, owner);
	else
		appendStringInfoString(&buf, "null");
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/*
 * A hold released by its table's owner rather than by the role that made
 * it is an override: recorded in harden.admin_log with harden.reason.
 */
static void
audit_foreign_release(const Hold *h)
{
	const char *reason;
	Oid			user = GetUserId();

	/* Not by privilege: a superuser releasing another role's hold is audited. */
	if (user == h->owner || is_member_of_role_nosuper(user, h->owner))
		return;
	reason = GetConfigOption("harden.reason", true, false);
	harden_admin_log("hold_release", audit_table_name(h->relid), hold_item_json(h), "released",
					 reason && reason[0] ? reason : NULL);
	harden_count(HC_STOCK_FORCED_RELEASES, 1);
}

static int64
arg_id(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stock reservation id must not be NULL")));
	return PG_GETARG_INT64(0);
}

PG_FUNCTION_INFO_V1(harden_stock_reserve);

/* stock_reserve(tbl, keys, qtys, ttl, ref, wait) -> id, NULL when skipped */
Datum
harden_stock_reserve(PG_FUNCTION_ARGS)
{
	Oid			relid;
	Interval   *ttl;
	StockWait	wait = stock_parse_wait(fcinfo, 5);
	StockTable *st;
	StockLine  *lines;
	int			nlines,
				ninput;
	int		   *positions;
	Datum	   *keys,
			   *qtys;
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	int64		id = 0;
	bool		taken;

	harden_deny_on_standby("harden.stock_reserve()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stock table must not be NULL")));
	relid = PG_GETARG_OID(0);
	if (PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("reservation TTL must not be NULL"),
				 errhint("Every hold expires; give a TTL such as '15 minutes'.")));
	ttl = PG_GETARG_INTERVAL_P(3);
	/* At most 100 years, so the expiry time stays in the timestamp range. */
	if (ttl->month < 0 || ttl->day < 0 || ttl->time < 0 ||
		(ttl->month == 0 && ttl->day == 0 && ttl->time == 0) || ttl->month > 1200 ||
		(double) ttl->month * 30 * USECS_PER_DAY + (double) ttl->day * USECS_PER_DAY +
		(double) ttl->time > 100.0 * 365 * USECS_PER_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("reservation TTL must be positive and at most 100 years"),
				 errdetail("The TTL given is %s.",
						   DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(ttl))))));

	SPI_connect();
	st = stock_table_get(relid);
	lines = stock_lines_from_arrays(st, fcinfo, 1, 2, &nlines, &positions, &ninput);
	taken = stock_take_lines(st, lines, nlines, wait);
	if (taken)
	{
		int			nest = stock_key_style_enter();

		keys = palloc(sizeof(Datum) * nlines);
		qtys = palloc(sizeof(Datum) * nlines);
		for (int i = 0; i < nlines; i++)
		{
			keys[i] = CStringGetTextDatum(OidOutputFunctionCall(st->key_output, lines[i].key));
			qtys[i] = Int64GetDatum(lines[i].qty);
		}
		stock_key_style_leave(nest);
		values[0] = ObjectIdGetDatum(relid);
		values[1] = PG_ARGISNULL(4) ? (Datum) 0 : PG_GETARG_DATUM(4);
		nulls[1] = PG_ARGISNULL(4) ? 'n' : ' ';
		values[2] = PointerGetDatum(construct_array(keys, nlines, TEXTOID, -1, false, TYPALIGN_INT));
		values[3] = PointerGetDatum(construct_array(qtys, nlines, INT8OID, 8, FLOAT8PASSBYVAL,
													TYPALIGN_DOUBLE));
		values[4] = IntervalPGetDatum(ttl);
		values[5] = ObjectIdGetDatum(GetUserId());
		if (hold_exec(HOLD_INSERT, values, nulls, 0) != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
			elog(ERROR, "could not record the stock hold");
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		harden_count(HC_STOCK_RESERVATIONS, 1);
	}
	SPI_finish();
	if (!taken)
		PG_RETURN_NULL();
	PG_RETURN_INT64(id);
}

PG_FUNCTION_INFO_V1(harden_stock_commit);

/*
 * stock_commit(id) -> true if committed now, false if it already was.  A
 * released or expired reservation cannot be committed: its stock went back.
 */
Datum
harden_stock_commit(PG_FUNCTION_ARGS)
{
	int64		id = arg_id(fcinfo);
	Hold		h;
	bool		done = false;

	harden_deny_on_standby("harden.stock_commit()");

	SPI_connect();
	h = lock_hold(id);
	check_hold_privilege(&h, false);
	if (strcmp(h.status, "held") == 0)
	{
		Datum		idd = Int64GetDatum(id);
		Datum		values[2];

		values[0] = PointerGetDatum(construct_array(&idd, 1, INT8OID, 8, FLOAT8PASSBYVAL,
													TYPALIGN_DOUBLE));
		values[1] = CStringGetTextDatum("committed");
		if (hold_exec(HOLD_CLOSE, values, NULL, 0) != SPI_OK_UPDATE || SPI_processed != 1)
			elog(ERROR, "could not commit stock hold " INT64_FORMAT, id);
		harden_count(HC_STOCK_COMMITS, 1);
		done = true;
	}
	else if (strcmp(h.status, "committed") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_STOCK_NOT_HELD),
				 errmsg("stock reservation " INT64_FORMAT " is %s and cannot be committed", id, h.status),
				 errdetail("Its stock was given back to table %s.", stock_table_name(h.relid)),
				 errhint("Take the stock again with harden.stock_take_many() or make a new reservation.")));
	SPI_finish();
	PG_RETURN_BOOL(done);
}

PG_FUNCTION_INFO_V1(harden_stock_release);

/* stock_release(id) -> true if its stock went back now; false if not held */
Datum
harden_stock_release(PG_FUNCTION_ARGS)
{
	int64		id = arg_id(fcinfo);
	Hold		h;
	bool		done = false;

	harden_deny_on_standby("harden.stock_release()");

	SPI_connect();
	h = lock_hold(id);
	check_hold_privilege(&h, true);
	if (strcmp(h.status, "held") == 0)
	{
		give_back(&h, 1, "released", false);
		harden_count(HC_STOCK_RELEASES, 1);
		audit_foreign_release(&h);
		done = true;
	}
	SPI_finish();
	PG_RETURN_BOOL(done);
}

PG_FUNCTION_INFO_V1(harden_stock_force_release);

/*
 * stock_force_release(id, reason) -> true if its stock went back now, false
 * if it was not held.  For the table's owner and members of harden_operator,
 * who need no privilege on the table: the stock goes back as the table's
 * owner, security-restricted, as for an expiry.  Every call is recorded in
 * harden.admin_log, with its outcome.
 */
Datum
harden_stock_force_release(PG_FUNCTION_ARGS)
{
	int64		id = arg_id(fcinfo);
	char	   *reason = harden_arg_reason(fcinfo, 1);
	Hold		h;
	bool		done = false;
	char	   *outcome;

	SPI_connect();
	h = lock_hold(id);
	harden_check_override(h.relid, "force-release",
						  psprintf("stock reservation " INT64_FORMAT, id));
	if (strcmp(h.status, "held") == 0)
	{
		give_back_table(&h, 0, 0, "released", true);
		harden_count(HC_STOCK_RELEASES, 1);
		harden_count(HC_STOCK_FORCED_RELEASES, 1);
		done = true;
		outcome = "released";
	}
	else
		outcome = psprintf("not held (%s)", h.status);
	harden_admin_log("hold_release", audit_table_name(h.relid), hold_item_json(&h), outcome, reason);
	SPI_finish();
	PG_RETURN_BOOL(done);
}

PG_FUNCTION_INFO_V1(harden_stock_release_ref);

/* stock_release_ref(ref) -> number of holds given back */
Datum
harden_stock_release_ref(PG_FUNCTION_ARGS)
{
	Datum		values[2];
	Hold	   *holds;
	int			n;

	harden_deny_on_standby("harden.stock_release_ref()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stock reservation ref must not be NULL")));
	values[0] = PG_GETARG_DATUM(0);
	/* Only the holds the caller may release (see check_hold_privilege). */
	values[1] = ObjectIdGetDatum(GetUserId());
	SPI_connect();
	hold_exec(HOLD_BY_REF, values, NULL, 0);
	holds = holds_from_result(&n);
	for (int i = 0; i < n; i++)
		check_hold_privilege(&holds[i], true);
	give_back(holds, n, "released", false);
	harden_count(HC_STOCK_RELEASES, n);
	for (int i = 0; i < n; i++)
		audit_foreign_release(&holds[i]);
	SPI_finish();
	PG_RETURN_INT32(n);
}

PG_FUNCTION_INFO_V1(harden_stock_run_due);

/*
 * stock_run_due(max_holds) -> number of expired holds given back.  Holds
 * another transaction has locked are skipped (it is committing or releasing
 * them); finished holds older than harden.stock_hold_retention are deleted.
 */
Datum
harden_stock_run_due(PG_FUNCTION_ARGS)
{
	int32		max_holds = PG_ARGISNULL(0) ? 1000 : PG_GETARG_INT32(0);
	Datum		values[1];
	Hold	   *holds;
	int			n;
	int			nest;

	harden_deny_on_standby("harden.stock_run_due()");

	if (max_holds <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_holds must be positive"),
				 errdetail("The value given is %d.", max_holds)));
	values[0] = Int32GetDatum(max_holds);
	harden_require_column("stock_holds", "next_try");
	/* As in fsm_run_due: the caller's settings neither apply nor change. */
	nest = harden_guc_pin();
	SPI_connect();
	hold_exec(HOLD_DUE, values, NULL, 0);
	holds = holds_from_result(&n);
	n = give_back(holds, n, "expired", true);
	harden_count(HC_STOCK_EXPIRATIONS, n);
	if (stock_hold_retention_s > 0)
	{
		Interval   *keep = palloc0(sizeof(Interval));

		keep->time = (int64) stock_hold_retention_s * USECS_PER_SEC;
		values[0] = IntervalPGetDatum(keep);
		hold_exec(HOLD_PURGE, values, NULL, 0);
	}
	hold_exec(HOLD_BACKOFF, NULL, NULL, 0);
	{
		bool		isnull;

		worker_note_backoff(WORKER_ITEM_HOLD,
							DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)));
	}
	SPI_finish();
	harden_guc_restore(nest);
	PG_RETURN_INT32(n);
}
