/*
 * worker.h
 *	  The background worker: a launcher and one worker per database that has
 *	  pg_harden installed.  Shared state, settings and the hooks that steer it.
 */
#ifndef HARDEN_WORKER_H
#define HARDEN_WORKER_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

#define WORKER_ERROR_LEN 256

/* What a database's worker is doing, as worker_status shows it. */
typedef enum WorkerState
{
	WS_NEW,						/* seen, not probed yet */
	WS_STARTING,				/* registered, connecting */
	WS_RUNNING,					/* running a batch */
	WS_IDLE,					/* waiting for the next interval */
	WS_NOT_INSTALLED,			/* pg_harden (0.3.0 or later) is not installed */
	WS_SKIPPED,					/* listed in harden.worker_skip_databases */
	WS_DISABLED,				/* harden.worker_enabled is off */
	WS_BACKOFF,					/* exited abnormally, restart pending */
	WS_NO_SLOT,					/* no background worker slot free */
	WS_PAUSED					/* stopped so a DROP/RENAME/template use can proceed */
} WorkerState;

typedef struct WorkerSlot
{
	Oid			dboid;			/* InvalidOid: free */
	NameData	dbname;
	WorkerState state;
	pid_t		pid;			/* 0 when no process runs */
	bool		probe;			/* recheck the database at once */
	int			failures;		/* consecutive abnormal exits or failed steps */
	TimestampTz started_at;
	TimestampTz last_run;
	TimestampTz next_start;		/* launcher: do not (re)start before */
	TimestampTz paused_until;
	TimestampTz last_error_at;
	uint64		runs;
	uint64		transitions;
	uint64		holds_released;
	uint64		errors;
	char		last_error[WORKER_ERROR_LEN];
	/* single items (a timer, a table's expired holds) that failed */
	uint64		item_errors;
	TimestampTz last_item_error_at;
	char		last_item_error[WORKER_ERROR_LEN];
	int64		in_backoff[2];	/* WorkerItemKind: failing items still pending */
} WorkerSlot;

typedef enum WorkerItemKind
{
	WORKER_ITEM_TIMER,
	WORKER_ITEM_HOLD
} WorkerItemKind;

typedef struct WorkerShared
{
	LWLock	   *lock;			/* protects everything but the atomics */
	pid_t		launcher_pid;
	Latch	   *launcher_latch; /* NULL while no launcher runs */
	bool		rescan;			/* re-read pg_database at once */
	pg_atomic_uint64 cache_swept;
	int			nslots;
	WorkerSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} WorkerShared;

extern WorkerShared *worker_shared;

/* settings */
extern bool worker_enabled;
extern int	worker_interval_ms;
extern int	worker_batch_size;
extern char *worker_skip_databases;
extern int	worker_retry_base_ms;
extern int	worker_retry_max_ms;

/* worker_shared.c */
extern void worker_define_gucs(bool preloading);
extern Size worker_shmem_size(void);
extern void worker_shmem_startup(void);
extern WorkerSlot *worker_slot_find(Oid dboid);
extern bool worker_database_skipped(const char *dbname);
extern void worker_wake_launcher(bool rescan);
extern void worker_request_probe(Oid dboid);
extern void worker_release_database(Oid dboid);
extern const char *worker_state_name(WorkerState s);
extern int64 worker_retry_delay_ms(int attempts);
extern void worker_note_item_error(const char *message);
extern void worker_note_backoff(WorkerItemKind kind, int64 n);

/* worker.c */
extern void worker_register_launcher(void);
extern PGDLLEXPORT void harden_worker_launcher_main(Datum arg);
extern PGDLLEXPORT void harden_worker_db_main(Datum arg);

/* worker_utility.c */
extern void worker_utility_hook_install(void);

#endif							/* HARDEN_WORKER_H */
