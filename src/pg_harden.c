/*
 * pg_harden.c
 *	  Module entry point: GUCs, shared-memory request and start-up.
 *
 * Each concern registers its GUCs and its share of shared memory through the
 * module table below, so adding a module touches one line here.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "pg_harden.h"
#include "cache.h"
#include "fsm.h"
#include "stock.h"
#include "worker.h"
#include "analyze.h"
#include "cache_resp.h"

PG_MODULE_MAGIC;

typedef struct HardenModule
{
	const char *name;
	void		(*define_gucs) (bool preloading);	/* every process that loads us */
	Size		(*shmem_size) (void);	/* NULL: no shared memory */
	void		(*shmem_startup) (void);	/* called under AddinShmemInitLock */
} HardenModule;

static const HardenModule harden_modules[] = {
	{"metrics", metrics_define_gucs, metrics_shmem_size, metrics_shmem_startup},
	{"log values", harden_log_define_gucs, NULL, NULL},
	{"cache", cache_define_gucs, cache_shmem_size, cache_shmem_startup},
	{"cache sql", cache_sql_define_gucs, NULL, NULL},
	{"cache wal", cache_wal_define_gucs, NULL, NULL},
	{"cache watch", cache_watch_define_gucs, cache_watch_shmem_size, cache_watch_shmem_startup},
	{"cache track", cache_track_define_gucs, NULL, NULL},
	{"cache query", cache_query_define_gucs, cache_flight_shmem_size, cache_flight_shmem_startup},
	{"cache persist", cache_persist_define_gucs, cache_persist_shmem_size, cache_persist_shmem_startup},
	{"fsm", fsm_define_gucs, fsm_shmem_size, fsm_shmem_startup},
	{"stock", stock_define_gucs, NULL, NULL},
	{"worker", worker_define_gucs, worker_shmem_size, worker_shmem_startup},
	{"analyze", analyze_define_gucs, analyze_shmem_size, analyze_shmem_startup},
	{"breaker", breaker_define_gucs, breaker_shmem_size, breaker_shmem_startup},
	{"redact", redact_define_gucs, NULL, NULL},
	{"resp", resp_define_gucs, resp_shmem_size, resp_shmem_startup},
};

#define NUM_MODULES lengthof(harden_modules)

/* True once this process has attached to pg_harden's shared memory. */
bool		harden_shmem_ready = false;

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif

void		_PG_init(void);

static void
harden_shmem_request(void)
{
	Size		size = 0;

#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	for (size_t i = 0; i < NUM_MODULES; i++)
		if (harden_modules[i].shmem_size)
			size = add_size(size, harden_modules[i].shmem_size());
	RequestAddinShmemSpace(size);
	/* [0] metrics slot ownership, [1] cache eviction, [2] watch slots, [3] flights */
	RequestNamedLWLockTranche("pg_harden", 4);
	RequestNamedLWLockTranche("pg_harden_worker", 1);
}

static void
harden_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	for (size_t i = 0; i < NUM_MODULES; i++)
		if (harden_modules[i].shmem_startup)
			harden_modules[i].shmem_startup();
	LWLockRelease(AddinShmemInitLock);

	harden_shmem_ready = true;
}

void
_PG_init(void)
{
	for (size_t i = 0; i < NUM_MODULES; i++)
		harden_modules[i].define_gucs(process_shared_preload_libraries_in_progress);
#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("harden");
#else
	EmitWarningsOnPlaceholders("harden");
#endif

	/*
	 * Without preloading there is no shared memory: SQL functions that need
	 * it report so through harden_require_shmem().
	 */
	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = harden_shmem_startup;
#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = harden_shmem_request;
#else
	harden_shmem_request();
#endif
	worker_register_launcher();
	resp_register_workers();
	cache_persist_register();
	worker_utility_hook_install();
	cache_track_hooks_install();
}

/*
 * Raise the standard error for a feature that needs shared memory when
 * pg_harden was not preloaded.
 */
void
harden_require_shmem(const char *feature)
{
	if (harden_shmem_ready)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_NOT_PRELOADED),
			 errmsg("%s requires pg_harden to be loaded via shared_preload_libraries", feature),
			 errdetail("pg_harden's shared memory was not set up when the server started."),
			 errhint("Add pg_harden to shared_preload_libraries in postgresql.conf and restart the server.")));
}

PG_FUNCTION_INFO_V1(harden_version);

Datum
harden_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(PG_HARDEN_VERSION));
}
