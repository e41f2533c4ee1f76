/*
 * admin.c
 *	  Administrative overrides: who may make them, and their audit trail.
 *
 * fsm_force, the timer functions (retry, cancel) and a release of a hold by
 * someone other than the role that made it act past the usual rules.  The
 * table's owner may do so on its own tables, members of harden_operator on
 * every table.  Each action leaves a row: forced moves in harden.fsm_log
 * (fsm.c), the others in harden.admin_log (here).
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "pg_harden.h"

Oid
harden_operator_oid(void)
{
	return get_role_oid(HARDEN_OPERATOR_ROLE, true);
}

/* Whether the current user is the table's owner (by privilege) or an operator. */
bool
harden_may_override(Oid relowner)
{
	Oid			user = GetUserId();
	Oid			op = harden_operator_oid();

	if (OidIsValid(relowner) && has_privs_of_role(user, relowner))
		return true;
	return OidIsValid(op) && has_privs_of_role(user, op);
}

void
harden_check_override(Oid relid, const char *what, const char *object)
{
	Oid			owner = get_rel_name(relid) ? harden_rel_owner(relid) : InvalidOid;
	char	   *table = get_rel_name(relid) ?
		quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), get_rel_name(relid)) :
		psprintf("%u", relid);

	if (!harden_may_override(owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s %s", what, object),
				 errdetail("Only the owner of table %s and members of role %s may.",
						   table, HARDEN_OPERATOR_ROLE),
				 errhint("GRANT %s TO the role that needs it.", HARDEN_OPERATOR_ROLE)));
}

/* NULL or empty: an override always says why. */
char *
harden_arg_reason(FunctionCallInfo fcinfo, int argno)
{
	char	   *reason = PG_ARGISNULL(argno) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(argno));

	if (reason == NULL || reason[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("reason must not be %s", reason ? "empty" : "NULL"),
				 errdetail("Overrides are audited with the reason given.")));
	return reason;
}

/*
 * The owner of harden.admin_log, which is the extension's owner: callers
 * need no privileges on the audit trail.
 */
static Oid
admin_log_owner(void)
{
	Oid			relid = get_relname_relid("admin_log", get_namespace_oid("harden", false));

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("harden.admin_log does not exist"),
				 errhint("Update the extension: ALTER EXTENSION pg_harden UPDATE.")));
	return harden_rel_owner(relid);
}

/* Append one row to harden.admin_log; the caller is connected to SPI. */
void
harden_admin_log(const char *action, const char *table, const char *item_json,
				 const char *outcome, const char *reason)
{
	HardenRoleScope scope;
	Oid			types[6] = {TEXTOID, TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', reason ? ' ' : 'n'};
	char	   *role = GetUserNameFromId(GetUserId(), false);
	int			ret;

	values[0] = CStringGetTextDatum(action);
	values[1] = CStringGetTextDatum(table);
	values[2] = DirectFunctionCall1(jsonb_in, CStringGetDatum(item_json));
	values[3] = CStringGetTextDatum(outcome);
	values[4] = CStringGetTextDatum(role);
	values[5] = reason ? CStringGetTextDatum(reason) : (Datum) 0;
	harden_role_enter(&scope, admin_log_owner(), false);
	ret = SPI_execute_with_args("INSERT INTO harden.admin_log (action, table_name, item, outcome, role, reason, txid)"
								" VALUES ($1, $2, $3, $4, $5, $6, pg_catalog.pg_current_xact_id())",
								6, types, values, nulls, false, 0);
	harden_role_leave(&scope);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not write harden.admin_log: %s", SPI_result_code_string(ret));
}

/*
 * The library may be newer than the installed SQL (between the restart and
 * ALTER EXTENSION UPDATE): work that needs the new columns says so.
 */
void
harden_require_column(const char *relname, const char *column)
{
	Oid			relid = get_relname_relid(relname, get_namespace_oid("harden", false));

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"harden.%s\" does not exist", relname),
				 errhint("Reinstall the extension.")));
	if (get_attnum(relid, column) == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("harden.%s is older than the pg_harden %s library", relname, PG_HARDEN_VERSION),
				 errdetail("It has no column \"%s\".", column),
				 errhint("Update the extension: ALTER EXTENSION pg_harden UPDATE.")));
}
