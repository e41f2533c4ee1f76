/*
 * role_scope.c
 *	  Running pg_harden's own work as another role, and with pinned settings.
 *
 * Like a SECURITY DEFINER function with a pinned search_path; restricted,
 * as a table's owner the way autovacuum and REFRESH MATERIALIZED VIEW do,
 * so the owner's triggers, defaults and input functions cannot act with the
 * privileges of whoever runs the work (an administrator, or the background
 * worker as superuser) nor change the session.  An error needs no cleanup:
 * (sub)transaction abort restores the user and the GUC nesting level.
 *
 * Leaving a scope rolls back every setting made inside it, as an abort
 * would: unlike a function's SET clause, which keeps a plain SET (or
 * set_config(..., false)) done inside, a trigger of the owner must not
 * leave a search_path behind for the SQL pg_harden runs next with the
 * caller's privileges.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "pg_harden.h"

/*
 * Start a GUC nesting level with search_path pinned to pg_catalog, pg_temp;
 * returns the level for harden_guc_restore.
 */
int
harden_guc_pin(void)
{
	int			nest = NewGUCNestLevel();

	(void) set_config_option("search_path", HARDEN_SEARCH_PATH, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nest;
}

/* Undo every setting made since harden_guc_pin, SET and set_config included. */
void
harden_guc_restore(int nest)
{
	AtEOXact_GUC(false, nest);
}

void
harden_role_enter(HardenRoleScope *scope, Oid role, bool restricted)
{
	GetUserIdAndSecContext(&scope->save_user, &scope->save_sec);
	SetUserIdAndSecContext(role, scope->save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   (restricted ? SECURITY_RESTRICTED_OPERATION : 0));
	scope->nest = harden_guc_pin();
}

void
harden_role_leave(HardenRoleScope *scope)
{
	harden_guc_restore(scope->nest);
	SetUserIdAndSecContext(scope->save_user, scope->save_sec);
}

/* The owner of a relation; 42P01 if it is gone. */
Oid
harden_rel_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * The owner of the table harden.<relname>: the extension's owner.  Callers
 * never get direct write access to pg_harden's tables; the functions write
 * as this role.
 */
Oid
harden_table_owner(const char *relname)
{
	Oid			nsp = get_namespace_oid("harden", false);
	Oid			rel = get_relname_relid(relname, nsp);
	HeapTuple	tup;
	Oid			owner;

	if (!OidIsValid(rel))
		elog(ERROR, "relation harden.%s does not exist", relname);
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(rel));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", rel);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}
