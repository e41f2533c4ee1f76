/*
 * fsm_sql.c
 *	  SQL-callable state-machine functions: define / drop, attach / detach,
 *	  fire / can / next, diagrams, and applying due timers.
 *
 * These run SQL through SPI (they are not on the per-row path); every
 * identifier that goes into a statement is quoted, and values travel as
 * parameters.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/regproc.h"
#include "utils/timestamp.h"
#include "catalog/pg_inherits.h"
#include "catalog/partition.h"
#include "utils/partcache.h"
#include "optimizer/optimizer.h"
#include "utils/inval.h"
#include "utils/snapmgr.h"
#include "utils/guc.h"
#include "utils/syscache.h"
#include "utils/typcache.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_class.h"

#include "pg_harden.h"
#include "fsm.h"
#include "worker.h"

/* One machine attached to a table, as its trigger records it. */
typedef struct FsmAttachment
{
	char	   *machine;
	AttrNumber	attnum;
	char	   *column;
	Oid			typid;
	int32		typmod;
} FsmAttachment;

/* ---- argument helpers ---- */

static char *
arg_text(FunctionCallInfo fcinfo, int n)
{
	return PG_ARGISNULL(n) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(n));
}

static Oid
arg_table(FunctionCallInfo fcinfo, int n)
{
	Oid			relid;

	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
				 errmsg("table must not be NULL")));
	relid = PG_GETARG_OID(n);
	/* A regclass can hold the oid of a dropped or never existing relation. */
	if (get_rel_name(relid) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	return relid;
}

static char *
arg_machine(FunctionCallInfo fcinfo, int n)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_UNKNOWN_MACHINE),
				 errmsg("state machine name must not be NULL")));
	return arg_text(fcinfo, n);
}

static void
spi_connect(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

static void
spi_exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
		 bool read_only, int expect)
{
	int			ret = SPI_execute_with_args(sql, nargs, types, values, nulls, read_only, 0);

	if (ret != expect)
		elog(ERROR, "pg_harden: \"%s\" failed: %s", sql, SPI_result_code_string(ret));
}

/* ---- acting as another role: see role_scope.c ---- */

static char *
rel_qualified_name(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), get_rel_name(relid));
}

/* The extension's owner: the owner of its tables. */
static Oid
harden_owner(void)
{
	return harden_rel_owner(fsm_harden_relid("fsm_machines"));
}

/* ---- attachments ---- */

static List *
attachments_of(Relation rel)
{
	List	   *result = NIL;
	TriggerDesc *td = rel->trigdesc;
	Oid			fn = fsm_trigger_func_oid();

	if (td == NULL)
		return NIL;
	for (int i = 0; i < td->numtriggers; i++)
	{
		Trigger    *t = &td->triggers[i];
		FsmAttachment *a;
		Form_pg_attribute att;

		if (t->tgfoid != fn || t->tgnargs < 1 || t->tgnattr != 1 ||
			t->tgattr[0] <= 0 || t->tgattr[0] > RelationGetDescr(rel)->natts)
			continue;
		att = TupleDescAttr(RelationGetDescr(rel), t->tgattr[0] - 1);
		a = palloc(sizeof(FsmAttachment));
		a->machine = pstrdup(t->tgargs[0]);
		a->attnum = t->tgattr[0];
		a->column = pstrdup(NameStr(att->attname));
		a->typid = att->atttypid;
		a->typmod = att->atttypmod;
		result = lappend(result, a);
	}
	return result;
}

typedef bool (*attachment_pred) (FsmMachine *m, const char *arg);

static bool
machine_has_event(FsmMachine *m, const char *event)
{
	for (int s = 0; s < m->nstates; s++)
		for (int i = 0; i < m->states[s].ntrans; i++)
			if (m->states[s].trans[i].event && strcmp(m->states[s].trans[i].event, event) == 0)
				return true;
	return false;
}

static bool
machine_has_state(FsmMachine *m, const char *state)
{
	return fsm_state_lookup(m, state, strlen(state)) >= 0;
}

/*
 * The attachment a call means: the named machine, or the only machine of
 * the table, or the only one for which pred holds.
 */
static FsmAttachment *
choose_attachment(Relation rel, const char *machine, attachment_pred pred,
				  const char *what, const char *arg)
{
	List	   *all = attachments_of(rel);
	List	   *fit = NIL;
	ListCell   *lc;

	if (all == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
				 errmsg("no state machine is attached to %s", fsm_table_name(rel)),
				 errhint("Attach one with harden.fsm_attach(table, column, machine).")));
	foreach(lc, all)
	{
		FsmAttachment *a = lfirst(lc);

		if (machine != NULL)
		{
			if (strcmp(a->machine, machine) == 0)
				return a;
			continue;
		}
		if (list_length(all) == 1 || pred(fsm_machine_get(a->machine, false), arg))
			fit = lappend(fit, a);
	}
	if (machine != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
				 errmsg("state machine \"%s\" is not attached to %s", fsm_truncate(machine), fsm_table_name(rel))));
	if (list_length(fit) == 1)
		return linitial(fit);
	if (fit == NIL)
		ereport(ERROR,
				(errcode(pred == machine_has_event ? ERRCODE_HARDEN_FSM_EVENT_NOT_AVAILABLE :
						 ERRCODE_HARDEN_FSM_UNKNOWN_STATE),
				 errmsg("no state machine attached to %s has %s \"%s\"", fsm_table_name(rel), what, fsm_truncate(arg))));
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_FSM_AMBIGUOUS),
			 errmsg("several state machines attached to %s have %s \"%s\"", fsm_table_name(rel), what, fsm_truncate(arg)),
			 errhint("Name the machine: machine => '...'.")));
	return NULL;
}

/* ---- row keys and row access ---- */

/* The primary-key columns of rel; an error when there is none. */
static List *
pk_columns(Relation rel)
{
	Bitmapset  *pk = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
	List	   *cols = NIL;
	int			x = -1;

	while ((x = bms_next_member(pk, x)) >= 0)
	{
		AttrNumber	attnum = x + FirstLowInvalidHeapAttributeNumber;

		if (attnum > 0)
			cols = lappend(cols, pstrdup(NameStr(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->attname)));
	}
	if (cols == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
				 errmsg("%s has no primary key", fsm_table_name(rel)),
				 errdetail("State machines identify rows by their primary key."),
				 errhint("Add a primary key: ALTER TABLE ... ADD PRIMARY KEY (...).")));
	return cols;
}

/*
 * A row key as a jsonb object of the primary-key columns.  A scalar is
 * accepted for a one-column key.
 */
static Datum
normalize_key(Relation rel, Jsonb *key)
{
	List	   *cols = pk_columns(rel);
	Datum		k = JsonbPGetDatum(key);
	ListCell   *lc;

	if (JB_ROOT_IS_SCALAR(key) && list_length(cols) == 1)
	{
		StringInfoData buf;

		initStringInfo(&buf);
		appendStringInfoChar(&buf, '{');
		escape_json(&buf, linitial(cols));
		appendStringInfo(&buf, ": %s}", fsm_jsonb_text(k));
		k = DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
		key = DatumGetJsonbP(k);
	}
	if (!JB_ROOT_IS_OBJECT(key))
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_ROW_NOT_FOUND),
				 errmsg("invalid row key for %s: %s", fsm_table_name(rel), fsm_key_text(k)),
				 errdetail("A row key is a jsonb object of the primary-key columns, or a scalar for a one-column key.")));
	foreach(lc, cols)
	{
		char	   *col = lfirst(lc);
		JsonbValue	kv;
		JsonbValue *v;

		kv.type = jbvString;
		kv.val.string.val = col;
		kv.val.string.len = strlen(col);
		v = findJsonbValueFromContainer(&key->root, JB_FOBJECT, &kv);
		if (v == NULL || v->type == jbvNull)
			ereport(ERROR,
					(errcode(ERRCODE_HARDEN_FSM_ROW_NOT_FOUND),
					 errmsg("invalid row key for %s: %s", fsm_table_name(rel), fsm_key_text(k)),
					 errdetail("The key has no value for primary-key column \"%s\".", col)));
	}
	return k;
}

/*
 * "OPERATOR(schema.=)" for a column's type, so the query means the same
 * under any search_path.
 */
static char *
eq_operator(Relation rel, const char *column)
{
	AttrNumber	attnum = get_attnum(RelationGetRelid(rel), column);
	Oid			typid = TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid;
	TypeCacheEntry *tc = lookup_type_cache(typid, TYPECACHE_EQ_OPR);
	HeapTuple	tup;
	Form_pg_operator op;
	char	   *result;

	if (!OidIsValid(tc->eq_opr))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("could not identify an equality operator for type %s of column \"%s\" of %s",
						format_type_be(typid), column, fsm_table_name(rel))));
	tup = SearchSysCache1(OPEROID, ObjectIdGetDatum(tc->eq_opr));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for operator %u", tc->eq_opr);
	op = (Form_pg_operator) GETSTRUCT(tup);
	result = psprintf("OPERATOR(%s.%s)", quote_identifier(get_namespace_name(op->oprnamespace)),
					  NameStr(op->oprname));
	ReleaseSysCache(tup);
	return result;
}

typedef struct FsmRow
{
	bool		found;
	char	   *state;			/* NULL: the column is NULL */
	ItemPointerData ctid;
	Oid			tableoid;
} FsmRow;

/*
 * Read (and with lock, lock FOR UPDATE) the row with key; the state is
 * copied into outer, which outlives the SPI connection.  Under READ COMMITTED the lock
 * follows the row to its newest version, so the state read is the one an
 * UPDATE would replace.
 */
static FsmRow
read_row(Relation rel, FsmAttachment *a, Datum key, bool lock, MemoryContext outer)
{
	char	   *table = fsm_table_name(rel);
	List	   *cols = pk_columns(rel);
	StringInfoData sql;
	ListCell   *lc;
	Oid			argtype = JSONBOID;
	FsmRow		row;

	StringInfoData coldefs;

	/*
	 * The key's columns only, with their types: a whole-row record of the
	 * table would have to satisfy every other column's domain.  ONLY for a
	 * plain table: the trigger is not on inheritance children.
	 */
	initStringInfo(&coldefs);
	foreach(lc, cols)
	{
		AttrNumber	attnum = get_attnum(RelationGetRelid(rel), lfirst(lc));
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), attnum - 1);

		appendStringInfo(&coldefs, "%s%s %s", foreach_current_index(lc) > 0 ? ", " : "",
						 quote_identifier(lfirst(lc)),
						 format_type_extended(att->atttypid, att->atttypmod,
											  FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY));
	}
	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT t.%s, t.ctid, t.tableoid FROM %s%s t, pg_catalog.jsonb_to_record($1) AS k(%s) WHERE ",
					 quote_identifier(a->column),
					 rel->rd_rel->relkind == RELKIND_RELATION ? "ONLY " : "", table, coldefs.data);
	foreach(lc, cols)
	{
		const char *c = quote_identifier(lfirst(lc));

		appendStringInfo(&sql, "%st.%s %s k.%s", foreach_current_index(lc) > 0 ? " AND " : "", c,
						 eq_operator(rel, lfirst(lc)), c);
	}
	if (lock)
		appendStringInfoString(&sql, " FOR UPDATE OF t");
	spi_exec(sql.data, 1, &argtype, &key, NULL, !lock, SPI_OK_SELECT);
	memset(&row, 0, sizeof(row));
	if (SPI_processed > 1)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_ROW_NOT_FOUND),
				 errmsg("row key %s matches %llu rows of %s", fsm_key_text(key),
						(unsigned long long) SPI_processed, table)));
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		bool		isnull;
		Datum		d = SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull);

		row.found = true;
		if (!isnull)
		{
			int			len;
			char	   *s = fsm_datum_state(a->typid, d, &len);
			MemoryContext old = MemoryContextSwitchTo(outer);

			row.state = pnstrdup(s, len);
			MemoryContextSwitchTo(old);
		}
		row.ctid = *(ItemPointer) DatumGetPointer(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
		row.tableoid = DatumGetObjectId(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull));
	}
	return row;
}

static void
row_not_found(Relation rel, Datum key)
{
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_FSM_ROW_NOT_FOUND),
			 errmsg("%s has no row with key %s", fsm_table_name(rel), fsm_key_text(key))));
}

/* Move a locked row to state; the trigger validates and audits. */
static void
update_row(Relation rel, FsmAttachment *a, FsmRow *row, const char *state, FsmActor *actor)
{
	StringInfoData sql;
	Oid			types[3] = {a->typid, TIDOID, OIDOID};
	Datum		values[3];
	Oid			infunc;
	Oid			ioparam;
	FsmActor   *prev = fsm_current_actor;

	/* A forced move records the reason given to fsm_force. */
	if (!actor->forced)
	{
		const char *reason = GetConfigOption("harden.reason", true, false);

		actor->reason = (reason && reason[0]) ? pstrdup(reason) : NULL;
	}
	getTypeInputInfo(a->typid, &infunc, &ioparam);
	values[0] = OidInputFunctionCall(infunc, (char *) state, ioparam, a->typmod);
	values[1] = PointerGetDatum(&row->ctid);
	values[2] = ObjectIdGetDatum(row->tableoid);
	initStringInfo(&sql);
	appendStringInfo(&sql, "UPDATE %s%s SET %s = $1 WHERE ctid OPERATOR(pg_catalog.=) $2 "
					 "AND tableoid OPERATOR(pg_catalog.=) $3",
					 rel->rd_rel->relkind == RELKIND_RELATION ? "ONLY " : "",
					 fsm_table_name(rel), quote_identifier(a->column));
	fsm_current_actor = actor;
	PG_TRY();
	{
		spi_exec(sql.data, 3, types, values, NULL, false, SPI_OK_UPDATE);
	}
	PG_FINALLY();
	{
		fsm_current_actor = prev;
	}
	PG_END_TRY();
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_TRANSITION_SKIPPED),
				 errmsg("the transition of %s row to \"%s\" did not happen", fsm_table_name(rel),
						fsm_truncate(state)),
				 errdetail("The locked row was not updated: a BEFORE UPDATE trigger on the table returned NULL."),
				 errhint("Make the trigger return the new row for this update, or disable it.")));
}

/* ---- fsm_fire / fsm_can / fsm_next ---- */

static pg_noinline void
event_not_available(FsmMachine *m, Relation rel, Datum key, int from, const char *event)
{
	StringInfoData events;
	const FsmState *s = &m->states[from];
	int			n = 0;

	initStringInfo(&events);
	for (int i = 0; i < s->ntrans; i++)
		if (s->trans[i].event)
			appendStringInfo(&events, "%s\"%s\"", n++ > 0 ? ", " : "", s->trans[i].event);
	fsm_count(m, true);
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_FSM_EVENT_NOT_AVAILABLE),
			 errmsg("event \"%s\" is not available for %s row %s in state \"%s\"",
					fsm_truncate(event), fsm_table_name(rel), fsm_key_text(key), s->name),
			 errdetail("State machine \"%s\" has these events from \"%s\": %s.",
					   m->name, s->name, n > 0 ? events.data : "none")));
}

static void
current_state_unknown(FsmMachine *m, Relation rel, Datum key, const char *state)
{
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_FSM_UNKNOWN_STATE),
			 errmsg("%s row %s is in state %s, which is not a state of machine \"%s\"",
					fsm_table_name(rel), fsm_key_text(key),
					state ? quote_literal_cstr(fsm_truncate(state)) : "NULL", m->name)));
}

/* Argument 1 of the row functions, the row's key, is required. */
static void
require_row_key(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_ROW_NOT_FOUND),
				 errmsg("row key must not be NULL")));
}

static void
require_state(const char *state)
{
	if (state == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_UNKNOWN_STATE),
				 errmsg("state must not be NULL")));
}

/*
 * The index of a state of machine m named by the caller; an error if m has
 * no such state, with a pointer to harden.fsm_states if with_detail.
 */
static int
machine_state(FsmMachine *m, const char *state, bool with_detail)
{
	int			s = fsm_state_lookup(m, state, strlen(state));

	if (s < 0)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_UNKNOWN_STATE),
				 errmsg("\"%s\" is not a state of machine \"%s\"", fsm_truncate(state), m->name),
				 with_detail ? errdetail("Its states are listed in harden.fsm_states.") : 0));
	return s;
}

PG_FUNCTION_INFO_V1(harden_fsm_fire);

Datum
harden_fsm_fire(PG_FUNCTION_ARGS)
{
	Oid			relid = arg_table(fcinfo, 0);
	char	   *event = arg_text(fcinfo, 2);
	char	   *machine = arg_text(fcinfo, 3);
	Relation	rel;
	FsmAttachment *a;
	Datum		key;
	FsmRow		row;
	FsmMachine *m;
	int			from;
	char	   *target = NULL;
	FsmActor	actor;
	MemoryContext outer = CurrentMemoryContext;
	text	   *result;

	harden_deny_on_standby("harden.fsm_fire()");

	require_row_key(fcinfo);
	if (event == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_EVENT_NOT_AVAILABLE),
				 errmsg("event must not be NULL")));
	rel = table_open(relid, AccessShareLock);
	a = choose_attachment(rel, machine, machine_has_event, "event", event);
	key = normalize_key(rel, PG_GETARG_JSONB_P(1));

	spi_connect();
	row = read_row(rel, a, key, true, outer);
	if (!row.found)
		row_not_found(rel, key);
	/* Looked up after the SQL above, which may have changed definitions. */
	m = fsm_machine_get(a->machine, false);
	from = row.state ? fsm_state_lookup(m, row.state, strlen(row.state)) : -1;
	if (from < 0)
		current_state_unknown(m, rel, key, row.state);
	for (int i = 0; i < m->states[from].ntrans; i++)
	{
		const FsmTransition *t = &m->states[from].trans[i];

		if (t->event && strcmp(t->event, event) == 0)
			target = pstrdup(m->states[t->to].name);
	}
	if (target == NULL)
		event_not_available(m, rel, key, from, event);
	memset(&actor, 0, sizeof(actor));
	actor.machine = pstrdup(m->name);
	actor.from = pstrdup(m->states[from].name);
	actor.to = target;
	actor.event = event;
	actor.actor = "event";
	update_row(rel, a, &row, target, &actor);
	result = (text *) MemoryContextAlloc(outer, VARHDRSZ + strlen(target));
	SET_VARSIZE(result, VARHDRSZ + strlen(target));
	memcpy(VARDATA(result), target, strlen(target));
	SPI_finish();
	table_close(rel, NoLock);
	PG_RETURN_TEXT_P(result);
}

PG_FUNCTION_INFO_V1(harden_fsm_can);

Datum
harden_fsm_can(PG_FUNCTION_ARGS)
{
	Oid			relid = arg_table(fcinfo, 0);
	char	   *to_state = arg_text(fcinfo, 2);
	char	   *machine = arg_text(fcinfo, 3);
	Relation	rel;
	FsmAttachment *a;
	Datum		key;
	FsmRow		row;
	FsmMachine *m;
	int			from;
	int			to;

	require_row_key(fcinfo);
	require_state(to_state);
	rel = table_open(relid, AccessShareLock);
	a = choose_attachment(rel, machine, machine_has_state, "state", to_state);
	key = normalize_key(rel, PG_GETARG_JSONB_P(1));
	{
		MemoryContext outer = CurrentMemoryContext;

		spi_connect();
		row = read_row(rel, a, key, false, outer);
		SPI_finish();
	}
	if (!row.found)
		row_not_found(rel, key);
	m = fsm_machine_get(a->machine, false);
	to = machine_state(m, to_state, false);
	from = row.state ? fsm_state_lookup(m, row.state, strlen(row.state)) : -1;
	table_close(rel, AccessShareLock);
	PG_RETURN_BOOL(from >= 0 && fsm_transition_find(m, from, to) != NULL);
}

PG_FUNCTION_INFO_V1(harden_fsm_next);

Datum
harden_fsm_next(PG_FUNCTION_ARGS)
{
	FsmMachine *m = fsm_machine_get(arg_machine(fcinfo, 0), false);
	char	   *state = arg_text(fcinfo, 1);
	Datum	   *elems = palloc(sizeof(Datum) * Max(m->nstates, 1));
	int			n = 0;

	if (state == NULL)
	{
		for (int i = 0; i < m->nstates; i++)
			if (m->states[i].initial)
				elems[n++] = CStringGetTextDatum(m->states[i].name);
	}
	else
	{
		int			s = machine_state(m, state, true);

		for (int i = 0; i < m->states[s].ntrans; i++)
			elems[n++] = CStringGetTextDatum(m->states[m->states[s].trans[i].to].name);
	}
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* ---- fsm_force: past the rules, on the record ---- */

PG_FUNCTION_INFO_V1(harden_fsm_force);

/*
 * fsm_force(table, key, to_state, reason, machine) -> true if the row moved,
 * false if it was in that state already.  For the table's owner and members
 * of harden_operator.  The row is read and moved as the table's owner,
 * security-restricted, as for a timer: an operator needs no privilege on
 * the table, and the owner's triggers never run with the operator's.  Any
 * state of the machine may be the target, from any state (even one the
 * machine does not have); the trigger records the move in harden.fsm_log
 * with forced, the caller's role and the reason, even where the machine
 * is attached without audit.
 */
Datum
harden_fsm_force(PG_FUNCTION_ARGS)
{
	Oid			relid = arg_table(fcinfo, 0);
	char	   *to_state = arg_text(fcinfo, 2);
	char	   *machine = arg_text(fcinfo, 4);
	char	   *reason;
	Relation	rel;
	FsmAttachment *a;
	Datum		key;
	FsmRow		row;
	FsmMachine *m;
	int			to;
	FsmActor	actor;
	HardenRoleScope scope;
	bool		moved = false;
	char	   *caller = GetUserNameFromId(GetUserId(), false);

	require_row_key(fcinfo);
	require_state(to_state);
	reason = harden_arg_reason(fcinfo, 3);
	rel = table_open(relid, AccessShareLock);
	harden_check_override(relid, "force a state on", fsm_table_name(rel));
	a = choose_attachment(rel, machine, machine_has_state, "state", to_state);
	key = normalize_key(rel, PG_GETARG_JSONB_P(1));
	m = fsm_machine_get(a->machine, false);
	(void) machine_state(m, to_state, true);

	spi_connect();
	harden_role_enter(&scope, rel->rd_rel->relowner, true);
	row = read_row(rel, a, key, true, CurrentMemoryContext);
	if (!row.found)
		row_not_found(rel, key);
	/* Looked up after the SQL above, which may have changed definitions. */
	m = fsm_machine_get(a->machine, false);
	to = machine_state(m, to_state, false);
	if (row.state == NULL || strcmp(row.state, m->states[to].name) != 0)
	{
		memset(&actor, 0, sizeof(actor));
		actor.machine = pstrdup(m->name);
		actor.from = row.state;
		actor.to = pstrdup(m->states[to].name);
		actor.actor = "force";
		actor.reason = reason;
		actor.role = caller;
		actor.forced = true;
		update_row(rel, a, &row, actor.to, &actor);
		/* A disabled trigger would let the move through unrecorded. */
		if (!actor.audited)
			ereport(ERROR,
					(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
					 errmsg("cannot force a state on %s: the trigger of state machine \"%s\" did not run",
							fsm_table_name(rel), actor.machine),
					 errdetail("A forced move is made only when it is recorded in harden.fsm_log."),
					 errhint("Enable the trigger: ALTER TABLE ... ENABLE TRIGGER \"%s%s\".",
							 FSM_TRIGGER_PREFIX, actor.machine)));
		moved = true;
	}
	harden_role_leave(&scope);
	SPI_finish();
	table_close(rel, NoLock);
	if (moved)
		harden_count(HC_FSM_FORCED, 1);
	PG_RETURN_BOOL(moved);
}

/* ---- diagrams ---- */

/* "1d 2h 30m 5s": the rule language's own duration syntax. */
static char *
format_after(const Interval *iv)
{
	StringInfoData buf;
	int64		t = iv->time;
	int64		h = t / USECS_PER_HOUR;
	int64		mi = (t / USECS_PER_MINUTE) % 60;
	int64		s = (t / USECS_PER_SEC) % 60;

	initStringInfo(&buf);
	if (iv->day)
		appendStringInfo(&buf, "%dd", iv->day);
	if (h)
		appendStringInfo(&buf, "%s" INT64_FORMAT "h", buf.len ? " " : "", h);
	if (mi)
		appendStringInfo(&buf, "%s" INT64_FORMAT "m", buf.len ? " " : "", mi);
	if (s || buf.len == 0)
		appendStringInfo(&buf, "%s" INT64_FORMAT "s", buf.len ? " " : "", s);
	return buf.data;
}

static char *
edge_label(const FsmTransition *t)
{
	if (t->event && t->timed)
		return psprintf("%s / after %s", t->event, format_after(&t->after));
	if (t->event)
		return pstrdup(t->event);
	if (t->timed)
		return psprintf("after %s", format_after(&t->after));
	return NULL;
}

static bool
plain_identifier(const char *s)
{
	if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
			return false;
	return true;
}

/* Mermaid text: quotes become #quot;, line breaks and ";" spaces. */
static void
append_mermaid_text(StringInfo buf, const char *s)
{
	for (; *s; s++)
	{
		if (*s == '"')
			appendStringInfoString(buf, "#quot;");
		else if (*s == '\n' || *s == '\r' || *s == ';')
			appendStringInfoChar(buf, ' ');
		else
			appendStringInfoChar(buf, *s);
	}
}

static const char *
mermaid_id(const FsmMachine *m, int s)
{
	return plain_identifier(m->states[s].name) ? m->states[s].name : psprintf("s%d", s + 1);
}

static char *
diagram_mermaid(const FsmMachine *m)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "stateDiagram-v2\n");
	for (int s = 0; s < m->nstates; s++)
		if (!plain_identifier(m->states[s].name))
		{
			appendStringInfoString(&buf, "    state \"");
			append_mermaid_text(&buf, m->states[s].name);
			appendStringInfo(&buf, "\" as %s\n", mermaid_id(m, s));
		}
	for (int s = 0; s < m->nstates; s++)
		if (m->states[s].initial)
			appendStringInfo(&buf, "    [*] --> %s\n", mermaid_id(m, s));
	for (int s = 0; s < m->nstates; s++)
	{
		for (int i = 0; i < m->states[s].ntrans; i++)
		{
			const FsmTransition *t = &m->states[s].trans[i];
			char	   *label = edge_label(t);

			appendStringInfo(&buf, "    %s --> %s", mermaid_id(m, s), mermaid_id(m, t->to));
			if (label)
			{
				appendStringInfoString(&buf, " : ");
				append_mermaid_text(&buf, label);
			}
			appendStringInfoChar(&buf, '\n');
		}
	}
	for (int s = 0; s < m->nstates; s++)
		if (m->states[s].ntrans == 0)
			appendStringInfo(&buf, "    %s --> [*]\n", mermaid_id(m, s));
	return buf.data;
}

static void
append_dot_string(StringInfo buf, const char *s)
{
	appendStringInfoChar(buf, '"');
	for (; *s; s++)
	{
		if (*s == '"' || *s == '\\')
			appendStringInfoChar(buf, '\\');
		if (*s == '\n')
			appendStringInfoString(buf, "\\n");
		else if (*s != '\r')
			appendStringInfoChar(buf, *s);
	}
	appendStringInfoChar(buf, '"');
}

static char *
diagram_dot(const FsmMachine *m)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "digraph ");
	append_dot_string(&buf, m->name);
	appendStringInfoString(&buf, " {\n    rankdir=LR;\n    node [shape=box, style=rounded];\n"
						   "    \"\" [shape=point];\n");
	for (int s = 0; s < m->nstates; s++)
	{
		appendStringInfoString(&buf, "    ");
		append_dot_string(&buf, m->states[s].name);
		appendStringInfoString(&buf, m->states[s].ntrans == 0 ? " [peripheries=2];\n" : ";\n");
	}
	for (int s = 0; s < m->nstates; s++)
		if (m->states[s].initial)
		{
			appendStringInfoString(&buf, "    \"\" -> ");
			append_dot_string(&buf, m->states[s].name);
			appendStringInfoString(&buf, ";\n");
		}
	for (int s = 0; s < m->nstates; s++)
		for (int i = 0; i < m->states[s].ntrans; i++)
		{
			const FsmTransition *t = &m->states[s].trans[i];
			char	   *label = edge_label(t);

			appendStringInfoString(&buf, "    ");
			append_dot_string(&buf, m->states[s].name);
			appendStringInfoString(&buf, " -> ");
			append_dot_string(&buf, m->states[t->to].name);
			if (label)
			{
				appendStringInfoString(&buf, " [label=");
				append_dot_string(&buf, label);
				appendStringInfoChar(&buf, ']');
			}
			appendStringInfoString(&buf, ";\n");
		}
	appendStringInfoString(&buf, "}\n");
	return buf.data;
}

PG_FUNCTION_INFO_V1(harden_fsm_diagram);

Datum
harden_fsm_diagram(PG_FUNCTION_ARGS)
{
	FsmMachine *m = fsm_machine_get(arg_machine(fcinfo, 0), false);
	char	   *format = arg_text(fcinfo, 1);

	if (format != NULL && pg_strcasecmp(format, "mermaid") == 0)
		PG_RETURN_TEXT_P(cstring_to_text(diagram_mermaid(m)));
	if (format != NULL && pg_strcasecmp(format, "dot") == 0)
		PG_RETURN_TEXT_P(cstring_to_text(diagram_dot(m)));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown diagram format %s", format ? quote_literal_cstr(fsm_truncate(format)) : "NULL"),
			 errhint("Use 'mermaid' or 'dot'.")));
	PG_RETURN_NULL();
}

/* ---- definitions ---- */

static Datum
text_array(char **items, bool *nulls, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	int			dims[1] = {n};
	int			lbs[1] = {1};

	for (int i = 0; i < n; i++)
		d[i] = nulls && nulls[i] ? (Datum) 0 : CStringGetTextDatum(items[i]);
	return PointerGetDatum(construct_md_array(d, nulls, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * Rows of table whose column holds no state of states (or NULL): raise
 * PH209 naming up to five of those values.  Read as the table's owner,
 * security-restricted: an administrator who attaches or redefines a machine
 * must not run the owner's code (row-level security policies) with its own
 * privileges.
 */
static void
check_rows_in_states(Oid relid, const char *column, Datum states, const char *machine,
					 const char *doing)
{
	HardenRoleScope scope;
	char	   *table;
	StringInfoData sql;
	Oid			argtype = TEXTARRAYOID;
	StringInfoData found;

	table = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), get_rel_name(relid));
	initStringInfo(&sql);
	/* ONLY for a plain table: the trigger does not see inheritance children. */
	appendStringInfo(&sql, "SELECT CAST(t.%s AS pg_catalog.text), pg_catalog.count(*) FROM %s%s t WHERE t.%s IS NULL "
					 "OR NOT (CAST(t.%s AS pg_catalog.text) OPERATOR(pg_catalog.=) ANY ($1)) "
					 "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5",
					 quote_identifier(column), get_rel_relkind(relid) == RELKIND_RELATION ? "ONLY " : "",
					 table, quote_identifier(column), quote_identifier(column));
	/*
	 * Not read-only: the caller holds a lock that made writers finish, and
	 * only a fresh snapshot sees what they committed meanwhile.  A
	 * transaction snapshot would predate the lock, hence the check.
	 */
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot %s state machine \"%s\" in a %s transaction", doing, machine,
						IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errdetail("The rows of %s must be checked with a snapshot taken after they are locked.", table),
				 errhint("Run it in a READ COMMITTED transaction.")));
	harden_role_enter(&scope, harden_rel_owner(relid), true);
	spi_exec(sql.data, 1, &argtype, &states, NULL, false, SPI_OK_SELECT);
	harden_role_leave(&scope);
	if (SPI_processed == 0)
		return;
	initStringInfo(&found);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *v = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		char	   *c = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);

		appendStringInfo(&found, "%s%s (%s %s)", i > 0 ? ", " : "",
						 v ? quote_literal_cstr(v) : "NULL", c, strcmp(c, "1") == 0 ? "row" : "rows");
	}
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_FSM_STATES_IN_USE),
			 errmsg("cannot %s state machine \"%s\": rows of %s are in states it does not have",
					doing, machine, table),
			 errdetail("Column \"%s\" holds %s.", column, found.data),
			 errhint("Move those rows to states of the machine first, or include their states in the rules.")));
}

/* The tables (and columns) a machine is attached to, from the catalog. */
static void
attached_tables(const char *machine, List **relids, List **columns)
{
	Oid			argtype = TEXTOID;
	Datum		arg = CStringGetTextDatum(machine);

	*relids = NIL;
	*columns = NIL;
	/*
	 * With a snapshot taken after the machine's row was locked: an attach
	 * we waited for has committed, and even a REPEATABLE READ snapshot
	 * would not show it.
	 */
	PushActiveSnapshot(GetLatestSnapshot());
	spi_exec("SELECT CAST(table_name AS pg_catalog.oid), CAST(column_name AS pg_catalog.text) "
			 "FROM harden.fsm_attachments WHERE machine OPERATOR(pg_catalog.=) $1 ORDER BY 1",
			 1, &argtype, &arg, NULL, true, SPI_OK_SELECT);
	PopActiveSnapshot();
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		HeapTuple	tup = SPI_tuptable->vals[i];

		*relids = lappend_oid(*relids, DatumGetObjectId(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull)));
		*columns = lappend(*columns, SPI_getvalue(tup, SPI_tuptable->tupdesc, 2));
	}
}

/* Lock the machine's row; true if it exists.  A shipped machine is read-only. */
static bool
lock_machine_row(const char *machine, const char *doing)
{
	Oid			argtype = TEXTOID;
	Datum		arg = CStringGetTextDatum(machine);
	bool		isnull;

	spi_exec("SELECT shipped FROM harden.fsm_machines WHERE machine OPERATOR(pg_catalog.=) $1 FOR UPDATE",
			 1, &argtype, &arg, NULL, false, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_MACHINE_IN_USE),
				 errmsg("cannot %s state machine \"%s\": it ships with pg_harden", doing, machine),
				 errdetail("Shipped machines are recreated by CREATE EXTENSION and are not dumped."),
				 errhint("Define a copy under another name: SELECT harden.fsm_define('my_%s', rules) FROM harden.fsm_machines WHERE machine = '%s';",
						 machine, machine)));
	return true;
}

static void
store_definition(const char *machine, const char *rules, FsmDef *d)
{
	Oid			mtypes[2] = {TEXTOID, TEXTOID};
	Datum		mvals[2];
	Oid			stypes[4] = {TEXTOID, TEXTARRAYOID, BOOLARRAYOID, BOOLARRAYOID};
	Datum		svals[4];
	Oid			ttypes[5] = {TEXTOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INTERVALARRAYOID};
	Datum		tvals[5];
	Datum	   *b1 = palloc(sizeof(Datum) * d->nstates);
	Datum	   *b2 = palloc(sizeof(Datum) * d->nstates);
	char	  **from = palloc(sizeof(char *) * d->ntrans);
	char	  **to = palloc(sizeof(char *) * d->ntrans);
	char	  **ev = palloc(sizeof(char *) * d->ntrans);
	bool	   *evnull = palloc(sizeof(bool) * d->ntrans);
	Datum	   *after = palloc(sizeof(Datum) * d->ntrans);
	bool	   *afternull = palloc(sizeof(bool) * d->ntrans);
	bool	   *has_exit = palloc0(sizeof(bool) * d->nstates);
	int			dims[1];
	int			lbs[1] = {1};

	mvals[0] = svals[0] = tvals[0] = CStringGetTextDatum(machine);
	mvals[1] = CStringGetTextDatum(rules);

	/*
	 * Update the machine's row in place (not delete and insert): an attach
	 * waiting for its lock follows the update to the new version.
	 */
	spi_exec("UPDATE harden.fsm_machines SET rules = $2, defined_at = pg_catalog.now() "
			 "WHERE machine OPERATOR(pg_catalog.=) $1",
			 2, mtypes, mvals, NULL, false, SPI_OK_UPDATE);
	if (SPI_processed == 0)
		spi_exec("INSERT INTO harden.fsm_machines (machine, rules) VALUES ($1, $2)",
				 2, mtypes, mvals, NULL, false, SPI_OK_INSERT);
	else
		spi_exec("DELETE FROM harden.fsm_states WHERE machine OPERATOR(pg_catalog.=) $1", 1, mtypes, mvals, NULL, false,
				 SPI_OK_DELETE);

	for (int i = 0; i < d->ntrans; i++)
	{
		FsmDefTransition *t = &d->trans[i];

		has_exit[t->from] = true;
		from[i] = d->states[t->from];
		to[i] = d->states[t->to];
		ev[i] = t->event;
		evnull[i] = t->event == NULL;
		afternull[i] = !t->timed;
		after[i] = t->timed ? IntervalPGetDatum(&t->after) : (Datum) 0;
	}
	for (int i = 0; i < d->nstates; i++)
	{
		b1[i] = BoolGetDatum(d->initial[i]);
		b2[i] = BoolGetDatum(!has_exit[i]);
	}
	svals[1] = text_array(d->states, NULL, d->nstates);
	svals[2] = PointerGetDatum(construct_array(b1, d->nstates, BOOLOID, 1, true, TYPALIGN_CHAR));
	svals[3] = PointerGetDatum(construct_array(b2, d->nstates, BOOLOID, 1, true, TYPALIGN_CHAR));
	spi_exec("INSERT INTO harden.fsm_states (machine, state, position, initial, terminal) "
			 "SELECT $1, s, n, i, t FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4)) WITH ORDINALITY AS u(s, i, t, n)",
			 4, stypes, svals, NULL, false, SPI_OK_INSERT);

	tvals[1] = text_array(from, NULL, d->ntrans);
	tvals[2] = text_array(to, NULL, d->ntrans);
	tvals[3] = text_array(ev, evnull, d->ntrans);
	dims[0] = d->ntrans;
	tvals[4] = PointerGetDatum(construct_md_array(after, afternull, 1, dims, lbs, INTERVALOID,
												  sizeof(Interval), false, TYPALIGN_DOUBLE));
	spi_exec("INSERT INTO harden.fsm_transitions (machine, from_state, to_state, event, after, position) "
			 "SELECT $1, f, t, e, a, n FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5)) WITH ORDINALITY AS u(f, t, e, a, n)",
			 5, ttypes, tvals, NULL, false, SPI_OK_INSERT);
}

PG_FUNCTION_INFO_V1(harden_fsm_define);

Datum
harden_fsm_define(PG_FUNCTION_ARGS)
{
	char	   *machine;
	char	   *rules = arg_text(fcinfo, 1);
	char	   *initial = arg_text(fcinfo, 2);
	FsmDef	   *d;
	List	   *relids;
	List	   *columns;
	ListCell   *lr;
	ListCell   *lcol;

	harden_deny_on_standby("harden.fsm_define()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_RULES),
				 errmsg("state machine name must not be NULL")));
	machine = arg_text(fcinfo, 0);
	fsm_check_machine_name(machine);
	if (rules == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_RULES),
				 errmsg("rules for state machine \"%s\" must not be NULL", machine)));
	d = fsm_parse(machine, rules, initial);

	spi_connect();
	if (lock_machine_row(machine, "redefine"))
	{
		Datum		states = text_array(d->states, NULL, d->nstates);

		/* Writers wait while the rows are checked, then see the new rules. */
		attached_tables(machine, &relids, &columns);
		forboth(lr, relids, lcol, columns)
		{
			char	   *lock = psprintf("LOCK TABLE %s IN SHARE MODE",
										quote_qualified_identifier(get_namespace_name(get_rel_namespace(lfirst_oid(lr))),
																   get_rel_name(lfirst_oid(lr))));

			spi_exec(lock, 0, NULL, NULL, NULL, false, SPI_OK_UTILITY);
			check_rows_in_states(lfirst_oid(lr), lfirst(lcol), states, machine, "redefine");
		}
	}
	store_definition(machine, rules, d);
	SPI_finish();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(harden_fsm_drop);

Datum
harden_fsm_drop(PG_FUNCTION_ARGS)
{
	char	   *machine = arg_machine(fcinfo, 0);
	Oid			argtype = TEXTOID;
	Datum		arg = CStringGetTextDatum(machine);
	List	   *relids;
	List	   *columns;

	harden_deny_on_standby("harden.fsm_drop()");

	spi_connect();
	if (!lock_machine_row(machine, "drop"))
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_UNKNOWN_MACHINE),
				 errmsg("state machine \"%s\" does not exist", machine)));
	attached_tables(machine, &relids, &columns);
	if (relids != NIL)
	{
		StringInfoData list;
		ListCell   *lc;

		initStringInfo(&list);
		foreach(lc, relids)
			appendStringInfo(&list, "%s%s", foreach_current_index(lc) > 0 ? ", " : "",
							 quote_qualified_identifier(get_namespace_name(get_rel_namespace(lfirst_oid(lc))),
														get_rel_name(lfirst_oid(lc))));
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_MACHINE_IN_USE),
				 errmsg("cannot drop state machine \"%s\": it is attached to %s", machine, list.data),
				 errhint("Detach it first with harden.fsm_detach(table, '%s').", machine)));
	}
	spi_exec("DELETE FROM harden.fsm_machines WHERE machine OPERATOR(pg_catalog.=) $1", 1, &argtype, &arg, NULL, false, SPI_OK_DELETE);
	SPI_finish();
	PG_RETURN_VOID();
}

/* ---- attach / detach ---- */

/*
 * A state column in the partition key would move rows between partitions
 * on a change of state, which fires the new partition's INSERT trigger:
 * every transition would have to lead to an initial state.
 */
static void
partition_key_check(Relation rel, AttrNumber attnum, const char *column)
{
	PartitionKey key = RelationGetPartitionKey(rel);
	Bitmapset  *exprcols = NULL;

	pull_varattnos((Node *) key->partexprs, 1, &exprcols);
	for (int i = 0; i <= key->partnatts; i++)
		if ((i < key->partnatts && key->partattrs[i] == attnum) ||
			(i == key->partnatts && bms_is_member(attnum - FirstLowInvalidHeapAttributeNumber, exprcols)))
			ereport(ERROR,
					(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
					 errmsg("cannot attach a state machine to column \"%s\" of %s: it is in the partition key",
							column, fsm_table_name(rel)),
					 errdetail("A change of state would move the row to another partition, where it is checked as an insert.")));
}

/*
 * Lock the machine's row FOR SHARE until the attaching transaction ends:
 * fsm_define and fsm_drop lock it FOR UPDATE, so they wait and then see the
 * attachment, and an attach that waited for a redefinition sees the new
 * rules.  As the extension's owner: locking needs UPDATE on the table.
 */
static void
lock_machine_for_attach(const char *machine)
{
	HardenRoleScope scope;
	Oid			argtype = TEXTOID;
	Datum		arg = CStringGetTextDatum(machine);
	bool		found;

	harden_role_enter(&scope, harden_owner(), false);
	spi_exec("SELECT 1 FROM harden.fsm_machines WHERE machine OPERATOR(pg_catalog.=) $1 FOR SHARE",
			 1, &argtype, &arg, NULL, false, SPI_OK_SELECT);
	found = SPI_processed > 0;
	harden_role_leave(&scope);
	if (!found)
		(void) fsm_machine_get(machine, false); /* the usual "does not exist" */
	/* A redefinition we waited for committed: see its invalidation now. */
	AcceptInvalidationMessages();
}

PG_FUNCTION_INFO_V1(harden_fsm_attach);

Datum
harden_fsm_attach(PG_FUNCTION_ARGS)
{
	Oid			relid = arg_table(fcinfo, 0);
	char	   *column;
	char	   *machine = arg_machine(fcinfo, 2);
	bool		audit = PG_ARGISNULL(3) ? true : PG_GETARG_BOOL(3);
	Relation	rel;
	AttrNumber	attnum;
	char	   *table;
	char	   *trigname = psprintf("%s%s", FSM_TRIGGER_PREFIX, machine);
	FsmMachine *m;
	Datum		states;
	char	  **names;
	AclResult	acl;

	harden_deny_on_standby("harden.fsm_attach()");

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
				 errmsg("column must not be NULL")));
	column = NameStr(*PG_GETARG_NAME(1));
	acl = pg_class_aclcheck(relid, GetUserId(), ACL_TRIGGER);
	if (acl != ACLCHECK_OK)
		aclcheck_error(acl, get_relkind_objtype(get_rel_relkind(relid)), get_rel_name(relid));

	/* Writers wait from here: the rows checked are the rows enforced. */
	rel = relation_open(relid, ShareRowExclusiveLock);
	table = fsm_table_name(rel);
	if (rel->rd_rel->relkind != RELKIND_RELATION && rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
				 errmsg("cannot attach a state machine to %s", table),
				 errdetail("It is not a table.")));
	attnum = get_attnum(relid, column);
	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
				 errmsg("column \"%s\" of %s does not exist", column, table)));
	fsm_column_type_check(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid, table, column);
	if (TupleDescAttr(RelationGetDescr(rel), attnum - 1)->attgenerated)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
				 errmsg("cannot attach a state machine to generated column \"%s\" of %s", column, table),
				 errdetail("A generated column is computed after BEFORE triggers run, so its transitions cannot be checked.")));
	if (rel->rd_rel->relkind == RELKIND_RELATION && rel->rd_rel->relhassubclass &&
		find_inheritance_children(relid, NoLock) != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
				 errmsg("cannot attach a state machine to %s: it has inheritance children", table),
				 errdetail("Row triggers do not fire for rows of child tables, so they would be neither enforced nor audited."),
				 errhint("Attach the machine to each child table, or use a partitioned table.")));
	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		partition_key_check(rel, attnum, column);
	pk_columns(rel);
	spi_connect();
	lock_machine_for_attach(machine);
	m = fsm_machine_get(machine, false);
	if (rel->trigdesc)
		for (int i = 0; i < rel->trigdesc->numtriggers; i++)
			if (strcmp(rel->trigdesc->triggers[i].tgname, trigname) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
						 errmsg("state machine \"%s\" is already attached to %s", machine, table),
						 errhint("Detach it first to attach it to another column.")));

	names = palloc(sizeof(char *) * Max(m->nstates, 1));
	for (int i = 0; i < m->nstates; i++)
		names[i] = pstrdup(m->states[i].name);
	states = text_array(names, NULL, m->nstates);
	check_rows_in_states(relid, column, states, machine, "attach");

	/*
	 * The caller has the TRIGGER privilege but not EXECUTE on fsm_enforce:
	 * the extension's owner records the attachment and creates the trigger.
	 */
	{
		HardenRoleScope scope;
		Oid			types[3] = {OIDOID, TEXTOID, OIDOID};
		Datum		values[3];

		values[0] = ObjectIdGetDatum(relid);
		values[1] = CStringGetTextDatum(machine);
		values[2] = ObjectIdGetDatum(GetUserId());
		harden_role_enter(&scope, harden_owner(), false);
		spi_exec("INSERT INTO harden.fsm_attached (relid, machine, attached_by) VALUES ($1, $2, $3) "
				 "ON CONFLICT (relid, machine) DO UPDATE SET attached_at = pg_catalog.now(), attached_by = excluded.attached_by",
				 3, types, values, NULL, false, SPI_OK_INSERT);
		spi_exec(psprintf("CREATE TRIGGER %s BEFORE INSERT OR UPDATE OF %s ON %s FOR EACH ROW "
						  "EXECUTE FUNCTION harden.fsm_enforce(%s, %s)",
						  quote_identifier(trigname), quote_identifier(column), table,
						  quote_literal_cstr(machine), audit ? "'audit'" : "'noaudit'"),
				 0, NULL, NULL, NULL, false, SPI_OK_UTILITY);
		harden_role_leave(&scope);
	}
	SPI_finish();
	relation_close(rel, NoLock);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(harden_fsm_detach);

Datum
harden_fsm_detach(PG_FUNCTION_ARGS)
{
	Oid			relid = arg_table(fcinfo, 0);
	char	   *machine = arg_text(fcinfo, 1);
	Relation	rel;
	List	   *drops = NIL;
	ListCell   *lc;
	char	   *table;
	Oid			fn = fsm_trigger_func_oid();

	harden_deny_on_standby("harden.fsm_detach()");

	rel = relation_open(relid, ShareRowExclusiveLock);
	table = fsm_table_name(rel);
	if (rel->trigdesc)
		for (int i = 0; i < rel->trigdesc->numtriggers; i++)
		{
			Trigger    *t = &rel->trigdesc->triggers[i];

			if (t->tgfoid != fn || t->tgnargs < 1 ||
				(machine != NULL && strcmp(t->tgargs[0], machine) != 0))
				continue;
			if (t->tgisclone)
				ereport(ERROR,
						(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
						 errmsg("cannot detach state machine \"%s\" from partition %s", t->tgargs[0], table),
						 errdetail("It is attached to the partitioned table %s, whose partitions all enforce it.",
								   rel_qualified_name(get_partition_parent(relid, true))),
						 errhint("Detach it from the partitioned table.")));
			drops = lappend(drops, pstrdup(t->tgname));
		}
	if (drops == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
				 machine ? errmsg("state machine \"%s\" is not attached to %s", fsm_truncate(machine), table) :
				 errmsg("no state machine is attached to %s", table)));
	spi_connect();
	foreach(lc, drops)
		spi_exec(psprintf("DROP TRIGGER %s ON %s", quote_identifier(lfirst(lc)), table),
				 0, NULL, NULL, NULL, false, SPI_OK_UTILITY);
	{
		HardenRoleScope scope;
		Oid			types[2] = {OIDOID, TEXTOID};
		Datum		values[2];
		char		nulls[2] = {' ', machine ? ' ' : 'n'};

		values[0] = ObjectIdGetDatum(relid);
		values[1] = machine ? CStringGetTextDatum(machine) : (Datum) 0;
		harden_role_enter(&scope, harden_owner(), false);
		spi_exec("DELETE FROM harden.fsm_attached WHERE relid OPERATOR(pg_catalog.=) $1 "
				 "AND ($2 IS NULL OR machine OPERATOR(pg_catalog.=) $2)",
				 2, types, values, nulls, false, SPI_OK_DELETE);
		harden_role_leave(&scope);
	}
	SPI_finish();
	relation_close(rel, NoLock);
	PG_RETURN_INT32(list_length(drops));
}

/* ---- timers ---- */

typedef struct DueRow
{
	int64		id;
	char	   *machine;
	Oid			relid;
	char	   *table;
	Datum		key;
	char	   *from;
	char	   *to;
	bool		superseded;
	int			attempts;		/* failed so far */
	char	   *last_error;		/* NULL: none */
	bool		due;			/* its deadline has passed */
} DueRow;

typedef enum DueOutcome
{
	DUE_APPLIED,
	DUE_DROPPED,
	DUE_FAILED
} DueOutcome;

static const char *
due_outcome_name(DueOutcome o)
{
	return o == DUE_APPLIED ? "applied" : o == DUE_DROPPED ? "dropped" : "failed";
}

/* Apply one due timer, or tell why it no longer applies. */
static DueOutcome
due_apply(DueRow *d)
{
	Relation	rel;
	List	   *atts;
	ListCell   *lc;
	FsmAttachment *a = NULL;
	FsmMachine *m;
	int			from;
	int			to;
	const FsmTransition *t;
	FsmRow		row;
	FsmActor	actor;
	HardenRoleScope scope;

	if (d->superseded)
		return DUE_DROPPED;
	rel = try_relation_open(d->relid, AccessShareLock);
	if (rel == NULL)
		return DUE_DROPPED;
	if (rel->rd_rel->relkind != RELKIND_RELATION)
	{
		relation_close(rel, AccessShareLock);
		return DUE_DROPPED;
	}
	atts = attachments_of(rel);
	foreach(lc, atts)
		if (strcmp(((FsmAttachment *) lfirst(lc))->machine, d->machine) == 0)
			a = lfirst(lc);
	m = a ? fsm_machine_get(d->machine, true) : NULL;
	if (m == NULL)
	{
		table_close(rel, AccessShareLock);
		return DUE_DROPPED;
	}
	/* The machine may have been redefined since the timer was set. */
	from = fsm_state_lookup(m, d->from, strlen(d->from));
	to = fsm_state_lookup(m, d->to, strlen(d->to));
	t = (from >= 0 && to >= 0) ? fsm_transition_find(m, from, to) : NULL;
	if (t == NULL || !t->timed)
	{
		table_close(rel, AccessShareLock);
		return DUE_DROPPED;
	}

	/*
	 * Lock and move the row as the table's owner, in a restricted security
	 * context: the owner's triggers and expressions must not run with the
	 * privileges of whoever calls fsm_run_due (an administrator, the worker).
	 */
	harden_role_enter(&scope, rel->rd_rel->relowner, true);
	row = read_row(rel, a, d->key, true, CurrentMemoryContext);
	if (!row.found || row.state == NULL || strcmp(row.state, d->from) != 0)
	{
		harden_role_leave(&scope);
		table_close(rel, AccessShareLock);
		return DUE_DROPPED;
	}
	memset(&actor, 0, sizeof(actor));
	actor.machine = d->machine;
	actor.from = d->from;
	actor.to = d->to;
	actor.event = NULL;
	actor.actor = "timer";
	update_row(rel, a, &row, d->to, &actor);
	harden_role_leave(&scope);
	table_close(rel, NoLock);
	return DUE_APPLIED;
}

/*
 * Statements on harden.fsm_due run as the extension's owner, like those on
 * harden.stock_holds: an operator who retries a timer needs no privilege on
 * pg_harden's tables.
 */
static void
due_exec(const char *sql, int nargs, Oid *types, Datum *values, int expect)
{
	HardenRoleScope scope;

	harden_role_enter(&scope, harden_owner(), false);
	spi_exec(sql, nargs, types, values, NULL, false, expect);
	harden_role_leave(&scope);
}

/*
 * A timer done with (applied or dropped) is deleted; a failed one stays,
 * with its error, and is tried again after a delay that doubles with each
 * failure (worker_retry_delay_ms).
 */
static void
due_finish(DueRow *d, const char *error)
{
	Oid			types[3] = {INT8OID, TEXTOID, INTERVALOID};
	Datum		values[3];
	Interval   *delay;
	int64		ms;

	values[0] = Int64GetDatum(d->id);
	if (error == NULL)
	{
		due_exec("DELETE FROM harden.fsm_due WHERE id OPERATOR(pg_catalog.=) $1", 1, types, values,
				 SPI_OK_DELETE);
		return;
	}
	ms = worker_retry_delay_ms(d->attempts + 1);
	delay = palloc0(sizeof(Interval));
	delay->time = ms * 1000;
	values[1] = CStringGetTextDatum(error);
	values[2] = IntervalPGetDatum(delay);
	due_exec("UPDATE harden.fsm_due SET attempts = attempts OPERATOR(pg_catalog.+) 1, last_error = $2, "
			 "next_try = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) $3 "
			 "WHERE id OPERATOR(pg_catalog.=) $1",
			 3, types, values, SPI_OK_UPDATE);
}

static int64
prune_log(void)
{
	Oid			argtype = INT4OID;
	Datum		arg = Int32GetDatum(fsm_log_retention_s);

	if (fsm_log_retention_s <= 0)
		return 0;
	spi_exec("DELETE FROM harden.fsm_log WHERE at OPERATOR(pg_catalog.<) "
			 "(pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => $1))",
			 1, &argtype, &arg, NULL, false, SPI_OK_DELETE);
	return (int64) SPI_processed;
}

/*
 * The columns due_from_result reads.  A timer superseded by a newer one for
 * the same row and machine is stale: the row left the state and came back.
 */
#define DUE_COLUMNS \
	"SELECT d.id, d.machine, d.table_name, d.row_key, d.from_state, d.to_state, " \
	"EXISTS (SELECT 1 FROM harden.fsm_due n WHERE n.relid OPERATOR(pg_catalog.=) d.relid " \
	"AND n.row_key OPERATOR(pg_catalog.=) d.row_key AND n.machine OPERATOR(pg_catalog.=) d.machine " \
	"AND n.id OPERATOR(pg_catalog.>) d.id), CAST(d.relid AS pg_catalog.oid), d.attempts, d.last_error, " \
	"d.due_at OPERATOR(pg_catalog.<=) pg_catalog.now() FROM harden.fsm_due d "

static DueRow *
due_from_result(int *n)
{
	DueRow	   *rows;

	*n = (int) SPI_processed;
	rows = palloc(sizeof(DueRow) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		rows[i].id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		rows[i].machine = SPI_getvalue(tup, desc, 2);
		rows[i].table = SPI_getvalue(tup, desc, 3);
		rows[i].key = datumCopy(SPI_getbinval(tup, desc, 4, &isnull), false, -1);
		rows[i].from = SPI_getvalue(tup, desc, 5);
		rows[i].to = SPI_getvalue(tup, desc, 6);
		rows[i].superseded = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
		rows[i].relid = DatumGetObjectId(SPI_getbinval(tup, desc, 8, &isnull));
		rows[i].attempts = DatumGetInt32(SPI_getbinval(tup, desc, 9, &isnull));
		rows[i].last_error = SPI_getvalue(tup, desc, 10);
		rows[i].due = DatumGetBool(SPI_getbinval(tup, desc, 11, &isnull));
	}
	return rows;
}

static DueRow *
fetch_due(int limit, int *n)
{
	Oid			argtype = INT4OID;
	Datum		arg = Int32GetDatum(limit);

	/*
	 * SKIP LOCKED: concurrent runners share the work.  A failing timer waits
	 * for its next_try; the expression is the one fsm_due_next_try indexes.
	 */
	due_exec(DUE_COLUMNS
			 "WHERE COALESCE(d.next_try, d.due_at) OPERATOR(pg_catalog.<=) pg_catalog.now() "
			 "ORDER BY COALESCE(d.next_try, d.due_at), d.id LIMIT $1 "
			 "FOR UPDATE OF d SKIP LOCKED",
			 1, &argtype, &arg, SPI_OK_SELECT);
	return due_from_result(n);
}

/* Lock one timer by id for the admin functions; PH214 if there is none. */
static DueRow
lock_timer(int64 id)
{
	Oid			argtype = INT8OID;
	Datum		arg = Int64GetDatum(id);
	int			n;

	due_exec(DUE_COLUMNS "WHERE d.id OPERATOR(pg_catalog.=) $1 FOR UPDATE OF d",
			 1, &argtype, &arg, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_UNKNOWN_TIMER),
				 errmsg("timer " INT64_FORMAT " does not exist", id),
				 errdetail("It was applied, dropped or cancelled, or never existed."),
				 errhint("harden.fsm_timers lists the pending timers.")));
	return *due_from_result(&n);
}

/* How many timers wait for a retry: worker_status and metrics show it. */
static void
count_backoff(void)
{
	bool		isnull;

	due_exec("SELECT pg_catalog.count(*) FROM harden.fsm_due WHERE attempts OPERATOR(pg_catalog.>) 0",
			 0, NULL, NULL, SPI_OK_SELECT);
	worker_note_backoff(WORKER_ITEM_TIMER,
						DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)));
}

typedef struct DueCall
{
	DueRow	   *d;
	DueOutcome	outcome;
} DueCall;

static void
due_apply_cb(void *arg)
{
	DueCall    *c = (DueCall *) arg;

	c->outcome = due_apply(c->d);
}

/*
 * A failure is logged when its error differs from the one recorded for the
 * timer (the first time, or a new error), not on every retry; the end of a
 * series of failures is logged too.
 */
static void
report_due(DueRow *d, DueOutcome outcome, ErrorData *edata, const char *error)
{
	if (error != NULL)
	{
		worker_note_item_error(error);
		if (d->last_error == NULL || strcmp(d->last_error, error) != 0)
			ereport(WARNING,
					(errcode(edata->sqlerrcode),
					 errmsg("timed transition " INT64_FORMAT " of state machine \"%s\" on %s failed: %s",
							d->id, d->machine, d->table, error),
					 errdetail("Attempt %d; it is tried again after a delay that grows with each failure (harden.fsm_timers.next_try). The same error again is not logged.",
							   d->attempts + 1),
					 errhint("harden.fsm_timers shows it; harden.fsm_timer_retry() and harden.fsm_timer_cancel() act on it.")));
	}
	else if (d->attempts > 0)
	{
		harden_count(HC_FSM_TIMERS_RECOVERED, 1);
		ereport(LOG,
				(errmsg("timed transition " INT64_FORMAT " of state machine \"%s\" on %s %s after %d failed attempt%s",
						d->id, d->machine, d->table,
						outcome == DUE_APPLIED ? "applied" : "dropped (it no longer applies)",
						d->attempts, d->attempts == 1 ? "" : "s")));
	}
}

/*
 * Apply one timer in a subtransaction, so one failure does not stop the
 * rest; a failed timer stays, with its error, for a later attempt.
 */
static DueOutcome
run_one_due(DueRow *d)
{
	DueCall		c = {d, DUE_DROPPED};
	ErrorData  *edata;
	char	   *error = NULL;
	if (!harden_try_in_subxact(due_apply_cb, &c, &edata))
	{
		error = edata->message ? pstrdup(edata->message) : "error";
		c.outcome = DUE_FAILED;
	}
	due_finish(d, error);
	report_due(d, c.outcome, edata, error);
	if (edata)
		FreeErrorData(edata);
	switch (c.outcome)
	{
		case DUE_APPLIED:
			harden_count(HC_FSM_TIMERS_APPLIED, 1);
			break;
		case DUE_DROPPED:
			harden_count(HC_FSM_TIMERS_DROPPED, 1);
			break;
		case DUE_FAILED:
			harden_count(HC_FSM_TIMERS_FAILED, 1);
			break;
	}
	return c.outcome;
}

PG_FUNCTION_INFO_V1(harden_fsm_run_due);

Datum
harden_fsm_run_due(PG_FUNCTION_ARGS)
{
	int			limit = PG_ARGISNULL(0) ? 1000 : PG_GETARG_INT32(0);
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	int64		counts[3] = {0, 0, 0};
	int			n;
	DueRow	   *rows;
	int			nest;

	harden_deny_on_standby("harden.fsm_run_due()");

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (limit < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_rows must not be negative")));
	harden_require_column("fsm_due", "next_try");

	/*
	 * The caller is an administrator or the worker, and the rows' tables
	 * belong to others: none of the caller's settings (its search_path)
	 * apply, and nothing set while the timers run outlives the call.
	 */
	nest = harden_guc_pin();
	spi_connect();
	rows = fetch_due(limit, &n);
	for (int i = 0; i < n; i++)
		counts[run_one_due(&rows[i])]++;
	count_backoff();
	values[0] = Int64GetDatum(counts[DUE_APPLIED]);
	values[1] = Int64GetDatum(counts[DUE_DROPPED]);
	values[2] = Int64GetDatum(counts[DUE_FAILED]);
	values[3] = Int64GetDatum(prune_log());
	SPI_finish();
	harden_guc_restore(nest);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* ---- timer admin: retry now, cancel; audited in harden.admin_log ---- */

static int64
arg_timer_id(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("timer id must not be NULL"),
				 errhint("harden.fsm_timers lists the pending timers.")));
	return PG_GETARG_INT64(0);
}

/* What harden.admin_log records of a timer. */
static char *
due_item_json(DueRow *d)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"timer\": " INT64_FORMAT ", \"machine\": ", d->id);
	escape_json(&buf, d->machine);
	appendStringInfo(&buf, ", \"row_key\": %s, \"from_state\": ", fsm_jsonb_text(d->key));
	escape_json(&buf, d->from);
	appendStringInfoString(&buf, ", \"to_state\": ");
	escape_json(&buf, d->to);
	appendStringInfo(&buf, ", \"attempts\": %d}", d->attempts);
	return buf.data;
}

PG_FUNCTION_INFO_V1(harden_fsm_timer_retry);

/*
 * fsm_timer_retry(id, reason) -> 'applied', 'dropped' or 'failed': a due
 * timer now, whatever its backoff, exactly as fsm_run_due would apply it.
 * A timer whose deadline has not come is refused: moving the row early is
 * fsm_force's business.
 */
Datum
harden_fsm_timer_retry(PG_FUNCTION_ARGS)
{
	int64		id = arg_timer_id(fcinfo);
	char	   *reason = harden_arg_reason(fcinfo, 1);
	DueRow		d;
	DueOutcome	outcome;
	const char *name;
	int			nest;

	harden_require_column("fsm_due", "next_try");
	nest = harden_guc_pin();
	spi_connect();
	d = lock_timer(id);
	harden_check_override(d.relid, "retry", psprintf("timer " INT64_FORMAT, id));
	if (!d.due)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_TIMER_NOT_DUE),
				 errmsg("timer " INT64_FORMAT " is not due yet", id),
				 errdetail("Its deadline is in harden.fsm_timers.due_at."),
				 errhint("To move the row before its deadline, use harden.fsm_force().")));
	outcome = run_one_due(&d);
	name = due_outcome_name(outcome);
	harden_admin_log("timer_retry", d.table, due_item_json(&d), name, reason);
	harden_count(HC_FSM_TIMERS_RETRIED, 1);
	SPI_finish();
	harden_guc_restore(nest);
	PG_RETURN_TEXT_P(cstring_to_text(name));
}

PG_FUNCTION_INFO_V1(harden_fsm_timer_cancel);

/* fsm_timer_cancel(id, reason): the timer goes, its row stays where it is. */
Datum
harden_fsm_timer_cancel(PG_FUNCTION_ARGS)
{
	int64		id = arg_timer_id(fcinfo);
	char	   *reason = harden_arg_reason(fcinfo, 1);
	DueRow		d;
	Oid			argtype = INT8OID;
	Datum		arg = Int64GetDatum(id);
	int			nest;

	harden_require_column("fsm_due", "next_try");
	nest = harden_guc_pin();
	spi_connect();
	d = lock_timer(id);
	harden_check_override(d.relid, "cancel", psprintf("timer " INT64_FORMAT, id));
	due_exec("DELETE FROM harden.fsm_due WHERE id OPERATOR(pg_catalog.=) $1", 1, &argtype, &arg,
			 SPI_OK_DELETE);
	harden_admin_log("timer_cancel", d.table, due_item_json(&d), "cancelled", reason);
	harden_count(HC_FSM_TIMERS_CANCELLED, 1);
	SPI_finish();
	harden_guc_restore(nest);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(harden_fsm_log_prune);

Datum
harden_fsm_log_prune(PG_FUNCTION_ARGS)
{
	int64		n;
	int			nest = harden_guc_pin();

	harden_deny_on_standby("harden.fsm_log_prune()");

	spi_connect();
	n = prune_log();
	SPI_finish();
	harden_guc_restore(nest);
	PG_RETURN_INT64(n);
}
