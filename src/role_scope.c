/*
 * role_scope.c
 *	  Running pg_harden's own work as another role.
 *
 * Like a SECURITY DEFINER function with a pinned search_path; restricted,
 * as a table's owner the way autovacuum and REFRESH MATERIALIZED VIEW do,
 * so the owner's triggers, defaults and input functions cannot act with the
 * privileges of whoever runs the work (an administrator, or the background
 * worker as superuser) nor change the session.  An error needs no cleanup:
 * (sub)transaction abort restores the user and the GUC nesting level.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "pg_harden.h"

void
harden_role_enter(HardenRoleScope *scope, Oid role, bool restricted)
{
	GetUserIdAndSecContext(&scope->save_user, &scope->save_sec);
	SetUserIdAndSecContext(role, scope->save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   (restricted ? SECURITY_RESTRICTED_OPERATION : 0));
	scope->nest = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

void
harden_role_leave(HardenRoleScope *scope)
{
	AtEOXact_GUC(true, scope->nest);
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
