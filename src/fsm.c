/*
 * fsm.c
 *	  State machines: the per-backend definition cache, the enforcement
 *	  trigger, the audit trail and timer rows, and per-machine counters.
 *
 * Definitions live in harden.fsm_machines / fsm_states / fsm_transitions.
 * A backend compiles each machine it meets once (states hashed by name,
 * transitions listed per state) and keeps it until a statement trigger on
 * those tables invalidates their relcache entries, so the trigger's hot path
 * is a hash lookup and a short scan, with no SQL.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_enum.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"
#include "commands/dbcommands.h"
#include "nodes/bitmapset.h"
#include "utils/typcache.h"
#include "utils/snapmgr.h"
#include "access/genam.h"
#include "nodes/readfuncs.h"
#include "mb/pg_wchar.h"
#include "catalog/partition.h"

#include "pg_harden.h"
#include "fsm.h"

/* ---- settings ---- */

int			fsm_log_retention_s = 90 * 24 * 3600;
static char *fsm_reason = NULL;
static int	fsm_max_machines = 256;

/* ---- shared counters: one slot per (database, machine), never freed ---- */

struct FsmCounterSlot
{
	Oid			dboid;
	char		machine[NAMEDATALEN];
	pg_atomic_uint64 transitions;
	pg_atomic_uint64 rejections;
};

typedef struct FsmShared
{
	slock_t		mutex;			/* protects nused and claiming a slot */
	int			nslots;
	int			nused;
	FsmCounterSlot slots[FLEXIBLE_ARRAY_MEMBER];
} FsmShared;

static FsmShared *fsm_shared = NULL;

/* ---- the per-backend cache ---- */

typedef struct FsmStateIndexEntry
{
	char		name[NAMEDATALEN];
	int			num;
} FsmStateIndexEntry;

static MemoryContext fsm_cache_cxt = NULL;
static int	fsm_cache_pins = 0;
static List *fsm_retired_cxts = NIL;	/* in TopMemoryContext */
static HTAB *fsm_machines = NULL;
static HTAB *fsm_registry = NULL;
static bool fsm_cache_stale = true;
static bool fsm_callbacks_registered = false;
static Oid	fsm_config_relids[4];
static Oid	fsm_trigger_oid = InvalidOid;
static Oid	fsm_log_relid = InvalidOid;
static Oid	fsm_log_seqid = InvalidOid;
static Oid	fsm_due_relid = InvalidOid;
static Oid	fsm_due_seqid = InvalidOid;
/*
 * What the direct inserts know about fsm_log and fsm_due: verified against
 * the layout once per relcache invalidation, with the table's CHECK
 * constraints compiled once (not per row).
 */
typedef struct FsmTarget
{
	bool		verified;
	bool		busy;			/* its expressions are being evaluated */
	MemoryContext cxt;			/* the expressions and their EState */
	EState	   *estate;
	int			nchecks;
	ExprState **checks;
	char	  **check_names;
} FsmTarget;

static FsmTarget fsm_log_target;
static FsmTarget fsm_due_target;
uint64		fsm_cache_generation = 0;

FsmActor   *fsm_current_actor = NULL;

static void fsm_write_metrics(MetricWriter *w);
static void fsm_relinfo_inval(Oid relid);
static void fsm_register_callbacks(void);
static void fsm_xact_callback(XactEvent event, void *arg);
typedef struct FsmRelInfo FsmRelInfo;
static FsmRelInfo *fsm_relinfo_get(Relation rel);
static const char *fsm_rel_name(Relation rel);

void
fsm_define_gucs(bool preloading)
{
	DefineCustomIntVariable("harden.fsm_log_retention",
							"How long rows of harden.fsm_log are kept (0: forever).",
							"Older rows are deleted by harden.fsm_log_prune() and harden.fsm_run_due().",
							&fsm_log_retention_s,
							90 * 24 * 3600, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomStringVariable("harden.reason",
							   "Reason recorded with state-machine transitions in harden.fsm_log.",
							   "Set it with SET LOCAL in the transaction that moves rows.",
							   &fsm_reason,
							   "",
							   PGC_USERSET, 0,
							   NULL, NULL, NULL);
	metrics_register_gauges(fsm_write_metrics);
	if (!preloading)
		return;
	DefineCustomIntVariable("harden.fsm_max_machines",
							"Number of (database, machine) pairs whose transitions are counted in metrics().",
							"Machines beyond this are enforced as usual but not counted per machine.",
							&fsm_max_machines,
							256, 1, 65536,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
}

Size
fsm_shmem_size(void)
{
	return add_size(offsetof(FsmShared, slots),
					mul_size(fsm_max_machines, sizeof(FsmCounterSlot)));
}

void
fsm_shmem_startup(void)
{
	bool		found;

	fsm_shared = ShmemInitStruct("pg_harden fsm", fsm_shmem_size(), &found);
	if (found)
		return;
	SpinLockInit(&fsm_shared->mutex);
	fsm_shared->nslots = fsm_max_machines;
	fsm_shared->nused = 0;
}

/*
 * Find or claim the counter slot of (this database, machine).  Slots below
 * nused are never rewritten, so the scan runs without the lock; the lock
 * is held only to look at slots claimed meanwhile and to append.
 */
static FsmCounterSlot *
fsm_claim_slot(const char *machine)
{
	FsmCounterSlot *slot = NULL;
	int			n;

	if (fsm_shared == NULL || !harden_shmem_ready)
		return NULL;
	SpinLockAcquire(&fsm_shared->mutex);
	n = fsm_shared->nused;
	SpinLockRelease(&fsm_shared->mutex);
	for (int i = 0; i < n; i++)
	{
		FsmCounterSlot *s = &fsm_shared->slots[i];

		if (s->dboid == MyDatabaseId && strcmp(s->machine, machine) == 0)
			return s;
	}
	SpinLockAcquire(&fsm_shared->mutex);
	for (int i = n; i < fsm_shared->nused; i++)
	{
		FsmCounterSlot *s = &fsm_shared->slots[i];

		if (s->dboid == MyDatabaseId && strcmp(s->machine, machine) == 0)
		{
			slot = s;
			break;
		}
	}
	if (slot == NULL && fsm_shared->nused < fsm_shared->nslots)
	{
		slot = &fsm_shared->slots[fsm_shared->nused];
		slot->dboid = MyDatabaseId;
		strlcpy(slot->machine, machine, NAMEDATALEN);
		pg_atomic_init_u64(&slot->transitions, 0);
		pg_atomic_init_u64(&slot->rejections, 0);
		fsm_shared->nused++;
	}
	SpinLockRelease(&fsm_shared->mutex);
	return slot;
}

/*
 * The slot of a machine, remembered by name for the life of the backend
 * (slots are never freed), so recompiling a machine does not claim again.
 */
typedef struct FsmSlotEntry
{
	char		machine[NAMEDATALEN];
	FsmCounterSlot *slot;
} FsmSlotEntry;

static HTAB *fsm_slot_cache = NULL;

static FsmCounterSlot *
fsm_machine_slot(const char *machine)
{
	FsmSlotEntry *e;
	bool		found;
	char		key[NAMEDATALEN];

	if (fsm_slot_cache == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = NAMEDATALEN;
		ctl.entrysize = sizeof(FsmSlotEntry);
		fsm_slot_cache = hash_create("pg_harden fsm counter slots", 16, &ctl,
									 HASH_ELEM | HASH_STRINGS);
	}
	memset(key, 0, sizeof(key));
	strlcpy(key, machine, NAMEDATALEN);
	e = hash_search(fsm_slot_cache, key, HASH_FIND, NULL);
	if (e != NULL)
		return e->slot;
	{
		FsmCounterSlot *slot = fsm_claim_slot(key);

		/* Remember a miss only once shared memory exists: the array is full. */
		if (slot == NULL && (fsm_shared == NULL || !harden_shmem_ready))
			return NULL;
		e = hash_search(fsm_slot_cache, key, HASH_ENTER, &found);
		e->slot = slot;
		return slot;
	}
}

/*
 * Count a transition or a rejection.  Rejections roll back with their
 * transaction, which is why the counts live in shared memory, not a table.
 */
void
fsm_count(FsmMachine *m, bool rejected)
{
	harden_count(rejected ? HC_FSM_REJECTIONS : HC_FSM_TRANSITIONS, 1);
	if (!m->counters_claimed)
	{
		m->counters = fsm_machine_slot(m->name);
		m->counters_claimed = true;
	}
	if (m->counters)
		pg_atomic_fetch_add_u64(rejected ? &m->counters->rejections : &m->counters->transitions, 1);
}

typedef struct SlotCopy
{
	Oid			dboid;
	char	   *machine;
	FsmCounterSlot *slot;
} SlotCopy;

static SlotCopy *
fsm_snapshot_slots(int *n)
{
	SlotCopy   *copies;

	*n = 0;
	if (fsm_shared == NULL || !harden_shmem_ready)
		return NULL;
	SpinLockAcquire(&fsm_shared->mutex);
	*n = fsm_shared->nused;
	SpinLockRelease(&fsm_shared->mutex);
	/* Slots below nused are never rewritten: read them without the lock. */
	copies = palloc(sizeof(SlotCopy) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
	{
		copies[i].dboid = fsm_shared->slots[i].dboid;
		copies[i].machine = pstrdup(fsm_shared->slots[i].machine);
		copies[i].slot = &fsm_shared->slots[i];
	}
	return copies;
}

static void
fsm_write_metrics(MetricWriter *w)
{
	int			n;
	SlotCopy   *slots = fsm_snapshot_slots(&n);
	char	  **dbnames;

	if (slots == NULL)
		return;
	dbnames = palloc0(sizeof(char *) * Max(n, 1));
	for (int i = 0; i < n; i++)
		dbnames[i] = get_database_name(slots[i].dboid);
	for (int pass = 0; pass < 2; pass++)
	{
		metric_family(w, pass == 0 ? "fsm_machine_transitions_total" : "fsm_machine_rejections_total",
					  "counter",
					  pass == 0 ? "State-machine transitions accepted, per machine" :
					  "State-machine transitions and events refused, per machine");
		for (int i = 0; i < n; i++)
		{
			FsmCounterSlot *s = slots[i].slot;

			if (dbnames[i] == NULL)
				continue;
			metric_sample(w, (double) pg_atomic_read_u64(pass == 0 ? &s->transitions : &s->rejections),
						  2, "database", dbnames[i], "machine", slots[i].machine);
		}
	}
}

/* harden.fsm_stats: this database's per-machine counters. */
PG_FUNCTION_INFO_V1(harden_fsm_stats);

Datum
harden_fsm_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			n;
	SlotCopy   *slots;

	InitMaterializedSRF(fcinfo, 0);
	slots = fsm_snapshot_slots(&n);
	for (int i = 0; i < n; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		if (slots[i].dboid != MyDatabaseId)
			continue;
		values[0] = CStringGetTextDatum(slots[i].machine);
		values[1] = Int64GetDatum((int64) pg_atomic_read_u64(&slots[i].slot->transitions));
		values[2] = Int64GetDatum((int64) pg_atomic_read_u64(&slots[i].slot->rejections));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* ---- the definition cache ---- */

static void
fsm_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == fsm_config_relids[0] ||
		relid == fsm_config_relids[1] || relid == fsm_config_relids[2] ||
		relid == fsm_config_relids[3])
		fsm_cache_stale = true;
	fsm_relinfo_inval(relid);
	if (relid == InvalidOid || relid == fsm_log_relid)
		fsm_log_target.verified = false;
	if (relid == InvalidOid || relid == fsm_due_relid)
		fsm_due_target.verified = false;
}

Oid
fsm_harden_relid(const char *relname)
{
	Oid			relid = get_relname_relid(relname, get_namespace_oid("harden", false));

	if (!OidIsValid(relid))
		elog(ERROR, "harden.%s is missing", relname);
	return relid;
}

static void
fsm_free_retired(void)
{
	ListCell   *lc;

	foreach(lc, fsm_retired_cxts)
		MemoryContextDelete(lfirst(lc));
	list_free(fsm_retired_cxts);
	fsm_retired_cxts = NIL;
}

/*
 * Machines in use by a trigger call lower on the stack must outlive a
 * recompile by a nested one (a user function in an index expression or a
 * CHECK constraint of fsm_log can move rows of another attached table): a
 * recompile while pinned retires the old cache rather than freeing it.
 */
void
fsm_cache_pin(void)
{
	fsm_cache_pins++;
}

void
fsm_cache_unpin(void)
{
	if (fsm_cache_pins > 0 && --fsm_cache_pins == 0 && fsm_retired_cxts != NIL)
		fsm_free_retired();
}

/* An error skips the unpin: every pin ends with the transaction. */
static void
fsm_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		fsm_cache_pins = 0;
		fsm_log_target.busy = fsm_due_target.busy = false;
		if (fsm_retired_cxts != NIL)
			fsm_free_retired();
	}
}

static void
fsm_cache_reset(void)
{
	HASHCTL		ctl;

	fsm_register_callbacks();
	if (fsm_cache_cxt != NULL && fsm_cache_pins > 0)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		fsm_retired_cxts = lappend(fsm_retired_cxts, fsm_cache_cxt);
		MemoryContextSwitchTo(old);
		fsm_cache_cxt = NULL;
	}
	if (fsm_cache_cxt == NULL)
		fsm_cache_cxt = AllocSetContextCreate(TopMemoryContext, "pg_harden fsm cache",
											  ALLOCSET_DEFAULT_SIZES);
	else
		MemoryContextReset(fsm_cache_cxt);
	fsm_cache_generation++;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN;
	ctl.entrysize = sizeof(FsmMachine);
	ctl.hcxt = fsm_cache_cxt;
	fsm_machines = hash_create("pg_harden fsm machines", 16, &ctl,
							   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	fsm_registry = NULL;
	fsm_trigger_oid = InvalidOid;
	fsm_log_relid = fsm_log_seqid = fsm_due_relid = fsm_due_seqid = InvalidOid;
	fsm_log_target.verified = fsm_due_target.verified = false;

	/* Invalidations that arrive during these lookups mark us stale again. */
	fsm_cache_stale = false;
	fsm_config_relids[0] = fsm_harden_relid("fsm_machines");
	fsm_config_relids[1] = fsm_harden_relid("fsm_states");
	fsm_config_relids[2] = fsm_harden_relid("fsm_transitions");
	fsm_config_relids[3] = fsm_harden_relid("fsm_attached");
}

/*
 * Run a read-only query of harden's tables with the active snapshot, which
 * the callers set to a fresh one: what the cache compiles must be what was
 * committed before it was marked current, whatever the transaction's own
 * snapshot (REPEATABLE READ) predates.
 */
static void
fsm_read_latest(const char *sql, int nargs, Oid *types, Datum *values)
{
	int			ret;

	ret = SPI_execute_with_args(sql, nargs, types, values, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "pg_harden: \"%s\" failed: %s", sql, SPI_result_code_string(ret));
}

/* ---- registered attachments: (table, machine) pairs fsm_attach made ---- */

typedef struct FsmRegistryKey
{
	Oid			relid;
	char		machine[NAMEDATALEN];
} FsmRegistryKey;

static void
fsm_registry_load(void)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(FsmRegistryKey);
	ctl.entrysize = sizeof(FsmRegistryKey);
	ctl.hcxt = fsm_cache_cxt;
	fsm_registry = hash_create("pg_harden fsm attachments", 16, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetLatestSnapshot());
	fsm_read_latest("SELECT CAST(relid AS pg_catalog.oid), machine FROM harden.fsm_attached", 0, NULL, NULL);
	PopActiveSnapshot();
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		FsmRegistryKey key;
		bool		isnull;
		char	   *machine = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);

		memset(&key, 0, sizeof(key));
		key.relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		strlcpy(key.machine, machine, NAMEDATALEN);
		hash_search(fsm_registry, &key, HASH_ENTER, NULL);
	}
	SPI_finish();
}

/* Whether fsm_attach attached machine to relid (and it was not detached). */
bool
fsm_attachment_registered(Oid relid, const char *machine)
{
	FsmRegistryKey key;

	if (fsm_cache_stale || fsm_machines == NULL)
		fsm_cache_reset();
	if (fsm_registry == NULL)
		fsm_registry_load();
	if (strlen(machine) >= NAMEDATALEN)
		return false;
	memset(&key, 0, sizeof(key));
	key.relid = relid;
	strlcpy(key.machine, machine, NAMEDATALEN);
	return hash_search(fsm_registry, &key, HASH_FIND, NULL) != NULL;
}

static char *
spi_text(HeapTuple tup, TupleDesc desc, int col, MemoryContext cxt)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	if (isnull)
		return NULL;
	return MemoryContextStrdup(cxt, TextDatumGetCString(d));
}

/*
 * Read one machine's definition into m (allocated in the cache), all three
 * tables with one fresh snapshot.
 */
static bool
fsm_machine_load(const char *name, FsmMachine *m)
{
	Oid			argtype = TEXTOID;
	Datum		arg = CStringGetTextDatum(name);
	MemoryContext mcxt;
	HASHCTL		ctl;
	int		   *counts;
	bool		isnull;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetLatestSnapshot());
	fsm_read_latest("SELECT shipped FROM harden.fsm_machines WHERE machine OPERATOR(pg_catalog.=) $1", 1, &argtype, &arg);
	if (SPI_processed == 0)
	{
		PopActiveSnapshot();
		SPI_finish();
		return false;
	}
	memset(m, 0, sizeof(FsmMachine));
	strlcpy(m->name, name, NAMEDATALEN);
	m->shipped = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	mcxt = AllocSetContextCreate(fsm_cache_cxt, "pg_harden fsm machine", ALLOCSET_SMALL_SIZES);
	fsm_read_latest("SELECT state, initial FROM harden.fsm_states WHERE machine OPERATOR(pg_catalog.=) $1 "
					"ORDER BY position, state",
					1, &argtype, &arg);
	m->nstates = (int) SPI_processed;
	m->states = MemoryContextAllocZero(mcxt, sizeof(FsmState) * Max(m->nstates, 1));
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN;
	ctl.entrysize = sizeof(FsmStateIndexEntry);
	ctl.hcxt = mcxt;
	m->index = hash_create("pg_harden fsm states", Max(m->nstates, 8), &ctl,
						   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	for (int i = 0; i < m->nstates; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		FsmStateIndexEntry *e;
		char		key[NAMEDATALEN];

		m->states[i].name = spi_text(tup, SPI_tuptable->tupdesc, 1, mcxt);
		m->states[i].initial = DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
		m->states[i].timed = -1;
		memset(key, 0, sizeof(key));
		strlcpy(key, m->states[i].name, NAMEDATALEN);
		e = hash_search(m->index, key, HASH_ENTER, NULL);
		e->num = i;
	}

	fsm_read_latest("SELECT from_state, to_state, event, after FROM harden.fsm_transitions "
					"WHERE machine OPERATOR(pg_catalog.=) $1 ORDER BY position, from_state, to_state",
					1, &argtype, &arg);
	counts = palloc0(sizeof(int) * Max(m->nstates, 1));
	for (int pass = 0; pass < 2; pass++)
	{
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			char	   *from = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
			char	   *to = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
			int			f = fsm_state_lookup(m, from, strlen(from));
			int			t = fsm_state_lookup(m, to, strlen(to));
			FsmTransition *tr;
			Datum		after;

			/* The foreign keys rule this out; skip rather than trust it blindly. */
			if (f < 0 || t < 0)
				continue;
			if (pass == 0)
			{
				m->states[f].ntrans++;
				continue;
			}
			tr = &m->states[f].trans[counts[f]++];
			tr->to = t;
			tr->event = spi_text(tup, desc, 3, mcxt);
			after = SPI_getbinval(tup, desc, 4, &isnull);
			tr->timed = !isnull;
			if (tr->timed)
			{
				tr->after = *DatumGetIntervalP(after);
				m->states[f].timed = counts[f] - 1;
			}
		}
		if (pass == 0)
			for (int s = 0; s < m->nstates; s++)
				m->states[s].trans = MemoryContextAllocZero(mcxt, sizeof(FsmTransition) *
															Max(m->states[s].ntrans, 1));
	}
	PopActiveSnapshot();
	SPI_finish();
	return true;
}

/*
 * The compiled machine called name.  The result stays valid until the next
 * call after a definition changed: callers that run SQL in between must
 * look it up again (fsm_cache_generation tells).
 */
FsmMachine *
fsm_machine_get(const char *name, bool missing_ok)
{
	FsmMachine *m;
	FsmMachine	loaded;
	char		key[NAMEDATALEN];

	if (name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_UNKNOWN_MACHINE),
				 errmsg("state machine name must not be NULL")));
	if (fsm_cache_stale || fsm_machines == NULL)
		fsm_cache_reset();
	if (strlen(name) <= FSM_MAX_MACHINE_NAME)
	{
		memset(key, 0, sizeof(key));
		strlcpy(key, name, NAMEDATALEN);
		m = hash_search(fsm_machines, key, HASH_FIND, NULL);
		if (m != NULL)
			return m;
		if (fsm_machine_load(name, &loaded))
		{
			m = hash_search(fsm_machines, key, HASH_ENTER, NULL);
			memcpy(m, &loaded, sizeof(FsmMachine));
			return m;
		}
	}
	if (missing_ok)
		return NULL;
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_FSM_UNKNOWN_MACHINE),
			 errmsg("state machine \"%s\" does not exist",
					strlen(name) > 64 ? "(name too long)" : name),
			 errhint("harden.fsm_machines lists the defined machines; define one with harden.fsm_define().")));
	return NULL;				/* keep the compiler quiet */
}

int
fsm_state_lookup(const FsmMachine *m, const char *name, int len)
{
	char		key[NAMEDATALEN];
	FsmStateIndexEntry *e;

	if (len <= 0 || len > FSM_MAX_NAME || memchr(name, '\0', len) != NULL)
		return -1;
	memcpy(key, name, len);
	memset(key + len, 0, NAMEDATALEN - len);
	e = hash_search(m->index, key, HASH_FIND, NULL);
	return e ? e->num : -1;
}

const FsmTransition *
fsm_transition_find(const FsmMachine *m, int from, int to)
{
	const FsmState *s = &m->states[from];

	for (int i = 0; i < s->ntrans; i++)
		if (s->trans[i].to == to)
			return &s->trans[i];
	return NULL;
}

/* "\"a\", \"b\"" for a DETAIL: at most 20 names. */
static void
append_state_names(StringInfo buf, const FsmMachine *m, const int *nums, int n)
{
	if (n == 0)
	{
		appendStringInfoString(buf, "none");
		return;
	}
	for (int i = 0; i < n && i < 20; i++)
		appendStringInfo(buf, "%s\"%s\"", i > 0 ? ", " : "", m->states[nums[i]].name);
	if (n > 20)
		appendStringInfo(buf, " and %d more", n - 20);
}

/* The states reachable from "from" (from < 0: the initial states). */
char *
fsm_next_list(const FsmMachine *m, int from)
{
	StringInfoData buf;
	int		   *nums = palloc(sizeof(int) * Max(m->nstates, 1));
	int			n = 0;

	if (from < 0)
	{
		for (int i = 0; i < m->nstates; i++)
			if (m->states[i].initial)
				nums[n++] = i;
	}
	else
		for (int i = 0; i < m->states[from].ntrans; i++)
			nums[n++] = m->states[from].trans[i].to;
	initStringInfo(&buf);
	append_state_names(&buf, m, nums, n);
	if (n == 0 && from >= 0)
		appendStringInfoString(&buf, " (it is a final state)");
	return buf.data;
}

Oid
fsm_trigger_func_oid(void)
{
	if (fsm_cache_stale || fsm_machines == NULL)
		fsm_cache_reset();
	if (!OidIsValid(fsm_trigger_oid))
		fsm_trigger_oid = LookupFuncName(list_make2(makeString("harden"), makeString("fsm_enforce")),
										 0, NULL, false);
	return fsm_trigger_oid;
}

/* ---- columns and values ---- */

static bool
state_type_ok(Oid typid, bool *is_enum)
{
	Oid			base = getBaseType(typid);

	*is_enum = false;
	if (base == TEXTOID || base == VARCHAROID)
		return true;
	if (type_is_enum(base))
	{
		*is_enum = true;
		return true;
	}
	return false;
}

void
fsm_column_type_check(Oid typid, const char *table, const char *column)
{
	bool		is_enum;

	if (!state_type_ok(typid, &is_enum))
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
				 errmsg("column \"%s\" of %s cannot hold a state", column, table),
				 errdetail("Its type is %s; a state column must be text, varchar or an enum (or a domain over one).",
						   format_type_be(typid)),
				 errhint("Drop any trigger harden_fsm_* on the column and attach the machine to a state column.")));
}

/*
 * The state a column value names: text and varchar point into the datum
 * (not NUL-terminated), enums are looked up in pg_enum.
 */
static char *datum_state(bool is_enum, Datum value, int *len);

char *
fsm_datum_state(Oid typid, Datum value, int *len)
{
	bool		is_enum = false;

	if (typid != TEXTOID && typid != VARCHAROID && !state_type_ok(typid, &is_enum))
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
				 errmsg("a value of type %s cannot be a state", format_type_be(typid)),
				 errdetail("A state column must be text, varchar or an enum (or a domain over one)."),
				 errhint("Attach the machine to such a column with harden.fsm_attach(table, column, machine).")));
	return datum_state(is_enum, value, len);
}

/* The same, with the column's kind already known (the trigger's hot path). */
static char *
datum_state(bool is_enum, Datum value, int *len)
{
	if (is_enum)
	{
		HeapTuple	tup = SearchSysCache1(ENUMOID, value);
		char	   *label;

		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for enum value %u", DatumGetObjectId(value));
		label = pstrdup(NameStr(((Form_pg_enum) GETSTRUCT(tup))->enumlabel));
		ReleaseSysCache(tup);
		*len = strlen(label);
		return label;
	}
	else
	{
		text	   *t = DatumGetTextPP(value);

		*len = VARSIZE_ANY_EXHDR(t);
		return VARDATA_ANY(t);
	}
}

/* A user-supplied value for a message: at most 64 bytes, then "...". */
const char *
fsm_truncate(const char *s)
{
	int			len;

	if (s == NULL)
		return "(null)";
	len = strlen(s);
	if (len <= 64)
		return s;
	len = pg_mbcliplen(s, len, 64);
	return psprintf("%.*s...", len, s);
}

char *
fsm_table_name(Relation rel)
{
	return pstrdup(fsm_rel_name(rel));
}

/* ---- per-table facts for the audit rows, cached per backend ---- */

typedef struct FsmKeyCol
{
	AttrNumber	attnum;
	char	   *name;
	int			namelen;
	Oid			typid;
	FmgrInfo	out;
} FsmKeyCol;

struct FsmRelInfo
{
	Oid			relid;			/* hash key */
	bool		valid;
	MemoryContext cxt;
	char	   *name;			/* schema-qualified, quoted */
	int			nkeys;
	FsmKeyCol  *keys;			/* primary-key columns, in attnum order */
};

static HTAB *fsm_relinfo = NULL;
static uint64 fsm_relinfo_invals = 0;

static void
fsm_relinfo_inval(Oid relid)
{
	FsmRelInfo *e;

	fsm_relinfo_invals++;
	if (fsm_relinfo == NULL)
		return;
	if (OidIsValid(relid))
	{
		e = hash_search(fsm_relinfo, &relid, HASH_FIND, NULL);
		if (e != NULL)
			e->valid = false;
	}
	else
	{
		HASH_SEQ_STATUS seq;

		hash_seq_init(&seq, fsm_relinfo);
		while ((e = hash_seq_search(&seq)) != NULL)
			e->valid = false;
	}
}

/* A schema renamed: every cached table name may be wrong. */
static void
fsm_namespace_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	fsm_relinfo_inval(InvalidOid);
}

static Oid	fsm_role_id = InvalidOid;
static char fsm_role_name[NAMEDATALEN];

static void
fsm_role_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	fsm_role_id = InvalidOid;
}

static void
fsm_register_callbacks(void)
{
	if (fsm_callbacks_registered)
		return;
	CacheRegisterRelcacheCallback(fsm_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, fsm_namespace_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, fsm_role_callback, (Datum) 0);
	RegisterXactCallback(fsm_xact_callback, NULL);
	fsm_callbacks_registered = true;
}

/* The current user's name, for the audit trail. */
static const char *
fsm_current_role_name(void)
{
	Oid			role = GetUserId();

	if (role != fsm_role_id)
	{
		strlcpy(fsm_role_name, GetUserNameFromId(role, false), NAMEDATALEN);
		fsm_role_id = role;
	}
	return fsm_role_name;
}

static FsmRelInfo *
fsm_relinfo_get(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	FsmRelInfo *e;
	bool		found;
	uint64		invals;
	MemoryContext old;
	Bitmapset  *pk;
	int			x = -1;

	fsm_register_callbacks();
	if (fsm_relinfo == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(FsmRelInfo);
		fsm_relinfo = hash_create("pg_harden fsm tables", 16, &ctl, HASH_ELEM | HASH_BLOBS);
	}
	e = hash_search(fsm_relinfo, &relid, HASH_ENTER, &found);
	if (!found)
	{
		e->valid = false;
		e->cxt = NULL;
	}
	if (e->valid)
		return e;
	if (e->cxt == NULL)
		e->cxt = AllocSetContextCreate(TopMemoryContext, "pg_harden fsm table", ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(e->cxt);
	invals = fsm_relinfo_invals;
	old = MemoryContextSwitchTo(e->cxt);
	e->name = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
										 RelationGetRelationName(rel));
	pk = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
	e->keys = palloc0(sizeof(FsmKeyCol) * Max(bms_num_members(pk), 1));
	e->nkeys = 0;
	while ((x = bms_next_member(pk, x)) >= 0)
	{
		AttrNumber	attnum = x + FirstLowInvalidHeapAttributeNumber;
		Form_pg_attribute att;
		FsmKeyCol  *k;
		Oid			outfunc;
		bool		varlena;

		if (attnum <= 0)
			continue;
		att = TupleDescAttr(RelationGetDescr(rel), attnum - 1);
		k = &e->keys[e->nkeys++];
		k->attnum = attnum;
		k->name = pstrdup(NameStr(att->attname));
		k->namelen = strlen(k->name);
		k->typid = att->atttypid;
		getTypeOutputInfo(att->atttypid, &outfunc, &varlena);
		fmgr_info_cxt(outfunc, &k->out, e->cxt);
	}
	MemoryContextSwitchTo(old);
	/* Valid only if nothing was invalidated while it was built. */
	e->valid = (invals == fsm_relinfo_invals);
	return e;
}

static const char *
fsm_rel_name(Relation rel)
{
	return fsm_relinfo_get(rel)->name;
}

/* One key column's value as a jsonb value, as jsonb_in would read it. */
static void
fsm_key_value(JsonbValue *v, FsmKeyCol *k, Datum value)
{
	char	   *out;

	switch (k->typid)
	{
		case INT2OID:
			v->type = jbvNumeric;
			v->val.numeric = DatumGetNumeric(DirectFunctionCall1(int2_numeric, value));
			return;
		case INT4OID:
			v->type = jbvNumeric;
			v->val.numeric = DatumGetNumeric(DirectFunctionCall1(int4_numeric, value));
			return;
		case INT8OID:
			v->type = jbvNumeric;
			v->val.numeric = DatumGetNumeric(DirectFunctionCall1(int8_numeric, value));
			return;
		case BOOLOID:
			v->type = jbvBool;
			v->val.boolean = DatumGetBool(value);
			return;
	}
	out = OutputFunctionCall(&k->out, value);
	switch (k->typid)
	{
		case OIDOID:
		case NUMERICOID:
		case FLOAT4OID:
		case FLOAT8OID:
			/* NaN and infinities are not JSON numbers. */
			if ((out[0] >= '0' && out[0] <= '9') || (out[0] == '-' && out[1] >= '0' && out[1] <= '9'))
			{
				v->type = jbvNumeric;
				v->val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(out),
																	 ObjectIdGetDatum(InvalidOid),
																	 Int32GetDatum(-1)));
				return;
			}
			break;
		case JSONOID:
		case JSONBOID:
			{
				Jsonb	   *j = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(out)));

				v->type = jbvBinary;
				v->val.binary.data = &j->root;
				v->val.binary.len = VARSIZE(j) - VARHDRSZ;
				return;
			}
	}
	v->type = jbvString;
	v->val.string.val = out;
	v->val.string.len = strlen(out);
}

/*
 * A row's key as jsonb: its primary-key columns, built directly (no JSON
 * text to parse).  A table whose primary key was dropped after attaching
 * falls back to the tuple's ctid.
 */
Datum
fsm_row_key(Relation rel, HeapTuple tuple)
{
	FsmRelInfo *ri = fsm_relinfo_get(rel);
	TupleDesc	desc = RelationGetDescr(rel);
	JsonbParseState *st = NULL;
	JsonbValue	k;
	JsonbValue	v;
	JsonbValue *res;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < ri->nkeys; i++)
	{
		FsmKeyCol  *col = &ri->keys[i];
		bool		isnull;
		Datum		d;

		k.type = jbvString;
		k.val.string.val = col->name;
		k.val.string.len = col->namelen;
		pushJsonbValue(&st, WJB_KEY, &k);
		d = heap_getattr(tuple, col->attnum, desc, &isnull);
		if (isnull)
			v.type = jbvNull;
		else
			fsm_key_value(&v, col, d);
		pushJsonbValue(&st, WJB_VALUE, &v);
	}
	if (ri->nkeys == 0 && ItemPointerIsValid(&tuple->t_self))
	{
		k.type = jbvString;
		k.val.string.val = "ctid";
		k.val.string.len = 4;
		pushJsonbValue(&st, WJB_KEY, &k);
		v.type = jbvString;
		v.val.string.val = psprintf("(%u,%u)", ItemPointerGetBlockNumber(&tuple->t_self),
									ItemPointerGetOffsetNumber(&tuple->t_self));
		v.val.string.len = strlen(v.val.string.val);
		pushJsonbValue(&st, WJB_VALUE, &v);
	}
	res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	return JsonbPGetDatum(JsonbValueToJsonb(res));
}

char *
fsm_jsonb_text(Datum j)
{
	return JsonbToCString(NULL, &DatumGetJsonbP(j)->root, VARSIZE(DatumGetPointer(j)));
}

/*
 * A row key for a message: truncated, or "(key redacted)" unless
 * harden.log_values is on (a key is the row's data: an e-mail, a name).
 */
const char *
fsm_key_text(Datum key)
{
	if (!harden_log_shows_values())
		return HARDEN_KEY_REDACTED;
	return fsm_truncate(fsm_jsonb_text(key));
}

/* ---- direct inserts into harden's own tables ---- */

static pg_noinline void
fsm_altered_table(Relation rel, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_FSM_ALTERED_TABLE),
			 errmsg("%s is not the table pg_harden created", fsm_table_name(rel)),
			 errdetail_internal("%s", detail),
			 errhint("Restore the table's original definition, or reinstall the extension.")));
}

/*
 * The rows are formed here, not by the parser: the table must still have
 * exactly the columns and types pg_harden writes, and no deferred unique or
 * exclusion check (whose recheck an insert outside the executor cannot
 * queue).  Checked once per relcache invalidation of the table.
 */
/*
 * The table may also have the layout of the previous version (min_natts
 * columns, a prefix of the current one): the library is installed and the
 * server restarted before ALTER EXTENSION UPDATE, and writers must not fail
 * in between.
 */
static void
fsm_verify_table(Relation rel, const Oid *types, int natts, int min_natts)
{
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *indexes;
	ListCell   *lc;

	if (rel->rd_rel->relkind != RELKIND_RELATION)
		fsm_altered_table(rel, "It is not a plain table.");
	if (desc->natts != natts && desc->natts != min_natts)
		fsm_altered_table(rel, psprintf("It has %d columns; pg_harden writes %d.", desc->natts, natts));
	natts = desc->natts;
	for (int i = 0; i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			fsm_altered_table(rel, psprintf("Column %d was dropped.", i + 1));
		if (att->atttypid != types[i])
			fsm_altered_table(rel, psprintf("Column \"%s\" is of type %s; pg_harden writes %s.",
											NameStr(att->attname), format_type_be(att->atttypid),
											format_type_be(types[i])));
		if (att->attgenerated)
			fsm_altered_table(rel, psprintf("Column \"%s\" is generated.", NameStr(att->attname)));
	}
	indexes = RelationGetIndexList(rel);
	foreach(lc, indexes)
	{
		Relation	ind = index_open(lfirst_oid(lc), AccessShareLock);
		bool		deferred = !ind->rd_index->indimmediate;
		char	   *name = pstrdup(RelationGetRelationName(ind));

		index_close(ind, AccessShareLock);
		if (deferred)
			fsm_altered_table(rel, psprintf("Index \"%s\" is deferrable.", name));
	}
}

/*
 * Insert one row into a harden table without SQL.  The heap insert goes
 * through the table AM; NOT NULL and CHECK constraints are checked with the
 * executor's ExecConstraints, and index entries (unique and exclusion
 * checks included) are made with ExecInsertIndexTuples, so every constraint
 * and index on the table -- ours and any an administrator adds -- holds.
 * Privileges are not checked on purpose: writers must not need (or have)
 * INSERT on the audit trail.
 */
/* Compile the table's CHECK constraints into t, for every later row. */
static void
fsm_target_compile(FsmTarget *t, Relation rel)
{
	TupleConstr *constr = RelationGetDescr(rel)->constr;
	MemoryContext old;
	int			n = constr ? constr->num_check : 0;

	if (t->cxt != NULL)
		MemoryContextDelete(t->cxt);
	t->cxt = AllocSetContextCreate(TopMemoryContext, "pg_harden fsm insert target",
								   ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(t->cxt);
	t->estate = CreateExecutorState();
	t->nchecks = n;
	t->checks = palloc0(sizeof(ExprState *) * Max(n, 1));
	t->check_names = palloc0(sizeof(char *) * Max(n, 1));
	MemoryContextSwitchTo(t->estate->es_query_cxt);
	for (int i = 0; i < n; i++)
	{
		Expr	   *expr = (Expr *) stringToNode(constr->check[i].ccbin);

		t->checks[i] = ExecPrepareExpr(expr, t->estate);
		t->check_names[i] = pstrdup(constr->check[i].ccname);
	}
	MemoryContextSwitchTo(old);
}

/* NOT NULL and CHECK constraints, with the compiled expressions. */
static void
fsm_target_check(FsmTarget *t, Relation rel, TupleTableSlot *slot, bool *nulls, int natts)
{
	TupleDesc	desc = RelationGetDescr(rel);
	ExprContext *econtext;

	if (desc->constr && desc->constr->has_not_null)
		for (int i = 0; i < natts; i++)
			if (nulls[i] && TupleDescAttr(desc, i)->attnotnull)
				ereport(ERROR,
						(errcode(ERRCODE_NOT_NULL_VIOLATION),
						 errmsg("null value in column \"%s\" of relation \"%s\" violates not-null constraint",
								NameStr(TupleDescAttr(desc, i)->attname), RelationGetRelationName(rel)),
						 errtablecol(rel, i + 1)));
	if (t->nchecks == 0)
		return;
	econtext = GetPerTupleExprContext(t->estate);
	ResetExprContext(econtext);
	econtext->ecxt_scantuple = slot;
	t->busy = true;
	for (int i = 0; i < t->nchecks; i++)
		if (!ExecCheck(t->checks[i], econtext))
		{
			t->busy = false;
			ereport(ERROR,
					(errcode(ERRCODE_CHECK_VIOLATION),
					 errmsg("new row for relation \"%s\" violates check constraint \"%s\"",
							RelationGetRelationName(rel), t->check_names[i]),
					 errtableconstraint(rel, t->check_names[i])));
		}
	t->busy = false;
	econtext->ecxt_scantuple = NULL;
}

/*
 * Insert one row into a harden table without SQL.  The heap insert goes
 * through the table AM; NOT NULL and CHECK constraints are checked first,
 * and index entries (unique and exclusion checks included) are made with
 * the executor's ExecInsertIndexTuples, so every constraint and index on
 * the table -- ours and any an administrator adds -- holds.  Privileges are
 * not checked on purpose: writers must not need (or have) INSERT on the
 * audit trail.
 */
static void
fsm_insert_row(Oid relid, const Oid *types, FsmTarget *t, Datum *values, bool *nulls, int natts,
			   int min_natts)
{
	Relation	rel = table_open(relid, RowExclusiveLock);
	TupleDesc	desc = RelationGetDescr(rel);
	TupleTableSlot *slot;
	EState	   *estate;
	ResultRelInfo *rri;

	/*
	 * A CHECK expression that errors leaves busy set: the expressions may be
	 * mid-evaluation only if this call is nested in one of them.
	 */
	if (t->busy && fsm_cache_pins <= 1)
		t->busy = false;
	if (!t->verified && !t->busy)
	{
		fsm_verify_table(rel, types, natts, min_natts);
		fsm_target_compile(t, rel);
		t->verified = true;
	}
	else if (!t->verified)
		fsm_verify_table(rel, types, natts, min_natts);
	/* Verified: natts or min_natts, the columns written. */
	natts = desc->natts;
	slot = MakeSingleTupleTableSlot(desc, &TTSOpsVirtual);
	ExecClearTuple(slot);
	memcpy(slot->tts_values, values, sizeof(Datum) * natts);
	memcpy(slot->tts_isnull, nulls, sizeof(bool) * natts);
	ExecStoreVirtualTuple(slot);

	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 0, NULL, 0);
	if (desc->constr && (desc->constr->has_not_null || desc->constr->num_check > 0))
	{
		/* Nested in a CHECK expression, or changed meanwhile: the executor's way. */
		if (t->busy || !t->verified)
			ExecConstraints(rri, slot, estate);
		else
			fsm_target_check(t, rel, slot, nulls, natts);
	}
	simple_table_tuple_insert(rel, slot);
	if (rel->rd_rel->relhasindex)
	{
		List	   *recheck;

		ExecOpenIndices(rri, false);
		recheck = ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL);
		/* Verified above: no index defers its check. */
		Assert(recheck == NIL);
		list_free(recheck);
		ExecCloseIndices(rri);
	}
	FreeExecutorState(estate);
	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, NoLock);
}

/* A harden table's oid, looked up once per cache generation. */
static Oid
cached_relid(Oid *cache, const char *relname)
{
	if (!OidIsValid(*cache))
		*cache = fsm_harden_relid(relname);
	return *cache;
}

static Datum
text_or_null(const char *s, bool *isnull)
{
	*isnull = (s == NULL);
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

/* Columns in 0.5.0, and in 0.3.0 and 0.4.0 (before forced and next_try). */
#define FSM_LOG_NATTS 13
#define FSM_LOG_NATTS_0_3 12
#define FSM_DUE_NATTS 12
#define FSM_DUE_NATTS_0_3 11

static const Oid fsm_log_types[FSM_LOG_NATTS] = {
	INT8OID, TIMESTAMPTZOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, TEXTOID, XID8OID, TEXTOID, BOOLOID
};
static const Oid fsm_due_types[FSM_DUE_NATTS] = {
	INT8OID, TIMESTAMPTZOID, TEXTOID, REGCLASSOID, TEXTOID, JSONBOID, TEXTOID, TEXTOID,
	TIMESTAMPTZOID, INT4OID, TEXTOID, TIMESTAMPTZOID
};

static void
fsm_audit(FsmMachine *m, const char *table, Datum key, const char *from,
		  const char *to, const char *event, const char *actor, const char *reason,
		  const char *role, bool forced)
{
	Datum		v[FSM_LOG_NATTS];
	bool		n[FSM_LOG_NATTS];

	memset(n, 0, sizeof(n));
	v[0] = Int64GetDatum(nextval_internal(cached_relid(&fsm_log_seqid, "fsm_log_id_seq"), false));
	v[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	v[2] = CStringGetTextDatum(m->name);
	v[3] = CStringGetTextDatum(table);
	v[4] = key;
	v[5] = text_or_null(from, &n[5]);
	v[6] = CStringGetTextDatum(to);
	v[7] = text_or_null(event, &n[7]);
	v[8] = CStringGetTextDatum(actor);
	v[9] = CStringGetTextDatum(role ? role : fsm_current_role_name());
	v[10] = FullTransactionIdGetDatum(GetTopFullTransactionId());
	v[11] = text_or_null(reason, &n[11]);
	v[12] = BoolGetDatum(forced);
	fsm_insert_row(cached_relid(&fsm_log_relid, "fsm_log"), fsm_log_types, &fsm_log_target,
				   v, n, FSM_LOG_NATTS, FSM_LOG_NATTS_0_3);
}

/* A row entered a state with a timed exit: store its deadline. */
static void
fsm_due_insert(FsmMachine *m, Oid relid, const char *table, Datum key, int state)
{
	const FsmState *s = &m->states[state];
	const FsmTransition *t = &s->trans[s->timed];
	TimestampTz now = GetCurrentTimestamp();
	Datum		v[FSM_DUE_NATTS];
	bool		n[FSM_DUE_NATTS];

	memset(n, 0, sizeof(n));
	v[0] = Int64GetDatum(nextval_internal(cached_relid(&fsm_due_seqid, "fsm_due_id_seq"), false));
	v[1] = DirectFunctionCall2(timestamptz_pl_interval, TimestampTzGetDatum(now),
							   IntervalPGetDatum(&t->after));
	v[2] = CStringGetTextDatum(m->name);
	v[3] = ObjectIdGetDatum(relid);
	v[4] = CStringGetTextDatum(table);
	v[5] = key;
	v[6] = CStringGetTextDatum(s->name);
	v[7] = CStringGetTextDatum(m->states[t->to].name);
	v[8] = TimestampTzGetDatum(now);
	v[9] = Int32GetDatum(0);
	n[10] = true;
	n[11] = true;
	fsm_insert_row(cached_relid(&fsm_due_relid, "fsm_due"), fsm_due_types, &fsm_due_target,
				   v, n, FSM_DUE_NATTS, FSM_DUE_NATTS_0_3);
}

/* ---- the trigger ---- */

/*
 * Is this the move fsm_force is making?  Only the one UPDATE it issues, of
 * its machine, from the state it read to the state it names: any other
 * change in the same statement (a trigger's own UPDATE) is checked as usual.
 */
static bool
fsm_forced_move(const FsmMachine *m, const char *from, const char *to)
{
	FsmActor   *a = fsm_current_actor;

	if (a == NULL || !a->forced || to == NULL || strcmp(a->machine, m->name) != 0 ||
		strcmp(a->to, to) != 0)
		return false;
	if (a->from == NULL || from == NULL)
		return a->from == from;
	return strcmp(a->from, from) == 0;
}

typedef struct FsmCheck
{
	FsmMachine *m;
	Relation	rel;
	HeapTuple	keytuple;		/* the tuple whose key identifies the row */
	AttrNumber	attnum;
} FsmCheck;

static pg_noinline void
fsm_reject(FsmCheck *c, int sqlstate, int from, const char *from_name,
		   const char *to_name, bool new_unknown)
{
	char	   *table = fsm_table_name(c->rel);
	const char *key = fsm_key_text(fsm_row_key(c->rel, c->keytuple));
	char	   *to_q = to_name ? psprintf("\"%s\"", fsm_truncate(to_name)) : "NULL";
	char	   *next = fsm_next_list(c->m, from);

	fsm_count(c->m, true);
	if (sqlstate == ERRCODE_HARDEN_FSM_NOT_INITIAL)
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("invalid initial state for %s row %s: %s", table, key, to_q),
				 errdetail("State machine \"%s\" starts in: %s.", c->m->name, next),
				 errtablecol(c->rel, c->attnum)));
	if (new_unknown && from_name == NULL)
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("invalid state for %s row %s: %s is not a state of machine \"%s\"",
						table, key, to_q, c->m->name),
				 errdetail("State machine \"%s\" starts in: %s.", c->m->name, next),
				 errtablecol(c->rel, c->attnum)));
	if (new_unknown)
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("invalid state for %s row %s: %s is not a state of machine \"%s\"",
						table, key, to_q, c->m->name),
				 errdetail("Allowed next states from \"%s\": %s.", from_name, next),
				 errtablecol(c->rel, c->attnum)));
	if (from < 0)
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("invalid transition for %s row %s: the current state %s is not a state of machine \"%s\"",
						table, key, from_name ? psprintf("\"%s\"", fsm_truncate(from_name)) : "NULL", c->m->name),
				 errdetail("The row was given that state while the machine was not enforced on it."),
				 errhint("Correct the row with the trigger %s%s disabled, or redefine the machine.",
						 FSM_TRIGGER_PREFIX, c->m->name),
				 errtablecol(c->rel, c->attnum)));
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("invalid transition for %s row %s: \"%s\" -> %s", table, key, from_name, to_q),
			 errdetail("State machine \"%s\" allows from \"%s\": %s.", c->m->name, from_name, next),
			 errtablecol(c->rel, c->attnum)));
}

/*
 * The trigger runs only as fsm_attach installed it: named after its
 * machine, on a table harden.fsm_attached records (or a partition of one,
 * for the clones PostgreSQL makes).  A trigger created any other way --
 * before EXECUTE was revoked, or restored without its registration -- would
 * let a table's owner have harden write its tables and timers run UPDATEs
 * on the owner's behalf.  The answer is kept for the statement.
 */
typedef struct FsmTriggerCache
{
	Oid			tgoid;
	uint64		generation;
	bool		is_enum;		/* the column holds an enum (or a domain over one) */
} FsmTriggerCache;

static FsmTriggerCache *
fsm_trigger_check_registered(FunctionCallInfo fcinfo, Trigger *trig, Relation rel)
{
	FsmTriggerCache *tc = (FsmTriggerCache *) fcinfo->flinfo->fn_extra;
	const char *machine = trig->tgargs[0];
	bool		ok;

	if (tc != NULL && tc->tgoid == trig->tgoid && tc->generation == fsm_cache_generation &&
		!fsm_cache_stale)
		return tc;
	ok = strncmp(trig->tgname, FSM_TRIGGER_PREFIX, strlen(FSM_TRIGGER_PREFIX)) == 0 &&
		strcmp(trig->tgname + strlen(FSM_TRIGGER_PREFIX), machine) == 0;
	if (ok && !fsm_attachment_registered(RelationGetRelid(rel), machine))
	{
		ok = false;
		if (trig->tgisclone)
		{
			List	   *ancestors = get_partition_ancestors(RelationGetRelid(rel));
			ListCell   *lc;

			foreach(lc, ancestors)
				if (fsm_attachment_registered(lfirst_oid(lc), machine))
					ok = true;
		}
	}
	if (ok)
	{
		TupleDesc	desc = RelationGetDescr(rel);
		AttrNumber	attnum = trig->tgattr[0];

		if (attnum <= 0 || attnum > desc->natts || TupleDescAttr(desc, attnum - 1)->attisdropped)
			ereport(ERROR,
					(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
					 errmsg("trigger \"%s\" on %s names a column that does not exist",
							trig->tgname, fsm_table_name(rel)),
					 errhint("Drop the trigger and attach the machine with harden.fsm_attach(table, column, machine).")));
		fsm_column_type_check(TupleDescAttr(desc, attnum - 1)->atttypid, fsm_table_name(rel),
							  NameStr(TupleDescAttr(desc, attnum - 1)->attname));
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
				 errmsg("trigger \"%s\" on %s was not created by harden.fsm_attach()",
						trig->tgname, fsm_table_name(rel)),
				 errdetail("harden.fsm_attached has no attachment of machine \"%s\" to the table.",
						   fsm_truncate(machine)),
				 errhint("Drop the trigger and attach the machine with harden.fsm_attach(table, column, machine).")));
	if (tc == NULL)
		tc = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(FsmTriggerCache));
	tc->tgoid = trig->tgoid;
	tc->generation = fsm_cache_generation;
	(void) state_type_ok(TupleDescAttr(RelationGetDescr(rel), trig->tgattr[0] - 1)->atttypid, &tc->is_enum);
	fcinfo->flinfo->fn_extra = tc;
	return tc;
}

static Datum fsm_enforce_row(TriggerData *td, FsmCheck *cp, bool is_enum,
							  instr_time start);

PG_FUNCTION_INFO_V1(harden_fsm_enforce);

Datum
harden_fsm_enforce(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Trigger    *trig;
	FsmCheck	c;
	Datum		result;
	FsmTriggerCache *tc;
	instr_time	start;

	harden_timer_start(&start);
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("harden.fsm_enforce() must be called as a trigger")));
	trig = td->tg_trigger;
	if (!TRIGGER_FIRED_BEFORE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event)) ||
		trig->tgnargs < 1 || trig->tgnattr != 1)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_ATTACHMENT),
				 errmsg("trigger \"%s\" was not created by harden.fsm_attach()", trig->tgname),
				 errhint("Drop it and attach the machine with harden.fsm_attach(table, column, machine).")));

	c.rel = td->tg_relation;
	c.attnum = trig->tgattr[0];
	tc = fsm_trigger_check_registered(fcinfo, trig, c.rel);
	c.m = fsm_machine_get(trig->tgargs[0], false);
	fsm_cache_pin();
	result = fsm_enforce_row(td, &c, tc->is_enum, start);
	fsm_cache_unpin();
	return result;
}

static Datum
fsm_enforce_row(TriggerData *td, FsmCheck *cp, bool is_enum, instr_time start)
{
	FsmCheck	c = *cp;
	Trigger    *trig = td->tg_trigger;
	TupleDesc	desc;
	HeapTuple	newtup;
	bool		is_insert;
	bool		audit;
	Datum		newd;
	bool		newnull;
	char	   *to_name = NULL;
	char	   *from_name = NULL;
	int			to_len = 0;
	int			from = -1;
	int			to = -1;
	FsmActor   *actor;
	const char *event = NULL;
	bool		forced = false;

	desc = RelationGetDescr(c.rel);
	audit = !(trig->tgnargs >= 2 && strcmp(trig->tgargs[1], "noaudit") == 0);
	is_insert = TRIGGER_FIRED_BY_INSERT(td->tg_event);
	newtup = is_insert ? td->tg_trigtuple : td->tg_newtuple;
	c.keytuple = td->tg_trigtuple;

	newd = heap_getattr(newtup, c.attnum, desc, &newnull);
	if (!newnull)
	{
		to_name = datum_state(is_enum, newd, &to_len);
		to = fsm_state_lookup(c.m, to_name, to_len);
	}
	if (is_insert)
	{
		if (to < 0)
			fsm_reject(&c, ERRCODE_HARDEN_FSM_UNKNOWN_STATE, -1, NULL,
					   newnull ? NULL : pnstrdup(to_name, to_len), true);
		if (!c.m->states[to].initial)
			fsm_reject(&c, ERRCODE_HARDEN_FSM_NOT_INITIAL, -1, NULL, c.m->states[to].name, false);
	}
	else
	{
		bool		oldnull;
		Datum		oldd = heap_getattr(td->tg_trigtuple, c.attnum, desc, &oldnull);
		int			from_len = 0;

		if (!oldnull)
		{
			from_name = datum_state(is_enum, oldd, &from_len);
			/* Not a change of state: nothing to check or record. */
			if (!newnull && from_len == to_len && memcmp(from_name, to_name, to_len) == 0)
				return PointerGetDatum(newtup);
			from = fsm_state_lookup(c.m, from_name, from_len);
			from_name = pnstrdup(from_name, from_len);
		}
		else if (newnull)
			return PointerGetDatum(newtup);
		forced = fsm_forced_move(c.m, from_name, to >= 0 ? c.m->states[to].name : NULL);
		if (from < 0 && !forced)
			fsm_reject(&c, ERRCODE_HARDEN_FSM_UNKNOWN_STATE, -1, from_name,
					   newnull ? NULL : pnstrdup(to_name, to_len), false);
		if (to < 0)
			fsm_reject(&c, ERRCODE_HARDEN_FSM_UNKNOWN_STATE, from,
					   from >= 0 ? c.m->states[from].name : from_name,
					   newnull ? NULL : pnstrdup(to_name, to_len), true);
		if (!forced && fsm_transition_find(c.m, from, to) == NULL)
			fsm_reject(&c, ERRCODE_HARDEN_FSM_INVALID_TRANSITION, from, c.m->states[from].name,
					   c.m->states[to].name, false);
	}

	fsm_count(c.m, false);
	actor = fsm_current_actor;
	if (forced)
	{
		audit = true;			/* a forced move is always on the record */
		fsm_current_actor->audited = true;
	}
	else if (actor && !actor->forced && strcmp(actor->machine, c.m->name) == 0 &&
			 strcmp(actor->to, c.m->states[to].name) == 0 &&
			 from >= 0 && strcmp(actor->from, c.m->states[from].name) == 0)
		event = actor->event;
	else
		actor = NULL;
	if (audit || c.m->states[to].timed >= 0)
	{
		char	   *table = fsm_table_name(c.rel);
		Datum		key;

		/*
		 * The row's key as it will be: an UPDATE may change the primary key
		 * together with the state.  (Without a primary key the fallback is
		 * the old version's ctid.)
		 */
		if (!is_insert && !ItemPointerIsValid(&newtup->t_self))
			newtup->t_self = c.keytuple->t_self;
		key = fsm_row_key(c.rel, newtup);

		/*
		 * A move pg_harden makes records the reason set when it began: a
		 * trigger of the table's owner, which runs first, cannot change the
		 * audit of a timer's move.
		 */
		if (audit)
			fsm_audit(c.m, table, key, from >= 0 ? c.m->states[from].name : from_name,
					  c.m->states[to].name, event, actor ? actor->actor : "sql",
					  actor ? actor->reason : (fsm_reason && fsm_reason[0] ? fsm_reason : NULL),
					  actor ? actor->role : NULL, forced);
		if (c.m->states[to].timed >= 0)
			fsm_due_insert(c.m, RelationGetRelid(c.rel), table, key, to);
	}
	/* Accepted transitions only: a row whose state did not change returned above. */
	harden_observe(HH_FSM_TRANSITION, start);
	return PointerGetDatum(newtup);
}

/* Statement trigger on the definition tables: every backend recompiles. */
PG_FUNCTION_INFO_V1(harden_fsm_definitions_changed);

Datum
harden_fsm_definitions_changed(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("harden.fsm_definitions_changed() must be called as a trigger")));
	CacheInvalidateRelcache(td->tg_relation);
	PG_RETURN_POINTER(NULL);
}
