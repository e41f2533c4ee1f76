/*
 * worker_utility.c
 *	  A ProcessUtility hook that keeps the background worker out of the way
 *	  of commands on databases and tells it about new installations.
 *
 * DROP DATABASE, ALTER DATABASE ... RENAME / SET TABLESPACE and CREATE
 * DATABASE ... TEMPLATE fail while another session is connected to the
 * database; a worker is such a session.  Before those commands run, the
 * database's worker is asked to stop for a few seconds, within the time the
 * command waits for other sessions to leave.  Only a role the command's own
 * permission check will let through can do that (the database's owner, or
 * for a template use a role with CREATEDB that owns the source): anyone
 * else's attempt fails without pausing the worker, so it cannot be used to
 * keep another database's worker stopped.
 *
 * Every other statement goes straight to the previous hook or
 * standard_ProcessUtility after a switch on its node tag: no catalog access,
 * no lock.  The hook is installed only when pg_harden is preloaded.
 *
 * CREATE DATABASE and CREATE / ALTER EXTENSION pg_harden wake the launcher
 * when their transaction commits, so a new installation is served at once
 * instead of at the launcher's next periodic look.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"

#include "pg_harden.h"
#include "worker.h"

static ProcessUtility_hook_type prev_utility_hook = NULL;
static bool pending_probe = false;
static bool pending_rescan = false;
static bool xact_callback_registered = false;

static bool
owns_database(Oid dboid)
{
#if PG_VERSION_NUM >= 160000
	return object_ownercheck(DatabaseRelationId, dboid, GetUserId());
#else
	return pg_database_ownercheck(dboid, GetUserId());
#endif
}

/*
 * Pause the worker of a database the command may act on.  need_createdb:
 * the command also requires CREATEDB (RENAME, CREATE DATABASE).
 */
static void
release_by_name(const char *dbname, bool need_createdb)
{
	Oid			dboid;

	if (dbname == NULL || worker_shared == NULL)
		return;
	/* These commands refuse to run in a transaction block anyway. */
	if (IsTransactionBlock())
		return;
	dboid = get_database_oid(dbname, true);
	if (!OidIsValid(dboid) || !owns_database(dboid))
		return;
	if (need_createdb && !have_createdb_privilege())
		return;
	worker_release_database(dboid);
}

static const char *
option_string(List *options, const char *name)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *def = lfirst(lc);

		if (strcmp(def->defname, name) == 0 && def->arg != NULL)
			return defGetString(def);
	}
	return NULL;
}

/* Commands that need the database without other sessions. */
static void
before_utility(Node *stmt)
{
	switch (nodeTag(stmt))
	{
		case T_DropdbStmt:
			release_by_name(((DropdbStmt *) stmt)->dbname, false);
			break;
		case T_RenameStmt:
			if (((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
				release_by_name(((RenameStmt *) stmt)->subname, true);
			break;
		case T_AlterDatabaseStmt:
			if (option_string(((AlterDatabaseStmt *) stmt)->options, "tablespace") != NULL)
				release_by_name(((AlterDatabaseStmt *) stmt)->dbname, false);
			break;
		case T_CreatedbStmt:
			/* A template database has no worker; a plain one needs its owner. */
			release_by_name(option_string(((CreatedbStmt *) stmt)->options, "template"), true);
			break;
		default:
			break;
	}
}

static void
worker_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT)
	{
		if (pending_probe)
			worker_request_probe(MyDatabaseId);
		if (pending_rescan)
			worker_wake_launcher(true);
	}
	/*
	 * A prepared transaction commits later, maybe in another session; the
	 * launcher's periodic look finds what it installed.
	 */
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
		pending_probe = pending_rescan = false;
}

static bool
is_pg_harden(const char *extname)
{
	return extname != NULL && strcmp(extname, "pg_harden") == 0;
}

/* Commands after which the launcher should look again, once committed. */
static void
after_utility(Node *stmt)
{
	switch (nodeTag(stmt))
	{
		case T_CreateExtensionStmt:
			pending_probe |= is_pg_harden(((CreateExtensionStmt *) stmt)->extname);
			break;
		case T_AlterExtensionStmt:
			pending_probe |= is_pg_harden(((AlterExtensionStmt *) stmt)->extname);
			break;
		case T_CreatedbStmt:
		case T_DropdbStmt:
			pending_rescan = true;
			break;
		case T_RenameStmt:
			pending_rescan |= ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE;
			break;
		default:
			return;
	}
	if ((pending_probe || pending_rescan) && !xact_callback_registered)
	{
		RegisterXactCallback(worker_xact_callback, NULL);
		xact_callback_registered = true;
	}
}

static void
worker_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
			   ProcessUtilityContext context, ParamListInfo params,
			   QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	before_utility(stmt);
	if (prev_utility_hook)
		prev_utility_hook(pstmt, queryString, readOnlyTree, context, params,
						  queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
	after_utility(stmt);
}

void
worker_utility_hook_install(void)
{
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = worker_utility;
}
