/*
 * subxact.c
 *	  Running one piece of pg_harden's work in an internal subtransaction.
 *
 * For loops over independent items (due timers, expired stock holds) where
 * one item's error must not stop the rest: the error is rolled back and
 * handed to the caller.  A cancel or an operator intervention is not an
 * item's failure and goes on up.  harden_catch_error() is that rule for
 * any PG_CATCH block that recovers from an error.
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "pg_harden.h"

ErrorData *
harden_catch_error(MemoryContext cxt)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
		ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_OPERATOR_INTERVENTION)
		PG_RE_THROW();
	FlushErrorState();
	return edata;
}

bool
harden_try_in_subxact(void (*fn) (void *), void *arg, ErrorData **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;

	*error = NULL;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata = harden_catch_error(cxt);

		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		*error = edata;
		ok = false;
	}
	PG_END_TRY();
	return ok;
}
