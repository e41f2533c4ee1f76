/*
 * breaker.c
 *	  Circuit breakers: live state in shared memory, definitions and the
 *	  recorded state in tables, every state change audited by the shipped
 *	  circuit_breaker machine.
 *
 * breaker_allow() and breaker_record() touch only one slot under its
 * spinlock.  The slot is authoritative; harden.breaker_states follows it:
 * the call that changes a state moves the row in its own transaction, as
 * circuit_breaker events (trip, probe, reset), so the machine's trigger
 * checks and audits each step.  A row that could not be moved (read-only
 * transaction, row locked, rollback) is brought up to date by the next
 * breaker_record() or breaker_sync().  open -> half_open happens lazily when
 * the cooldown is over; the machine's timer (its deadline set to the end of
 * the cooldown) records it even when no call comes.
 *
 * A slot is loaded from the tables on first use in a database (also after a
 * restart).  A change of definitions bumps a generation at commit; a
 * backend's cached slot number is checked against it on every call.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "access/xlog.h"
#include "mb/pg_wchar.h"

#include "pg_harden.h"
#include "fsm.h"

#define BREAKER_NAME_MAX	63
#define BREAKER_BUCKETS		10	/* the window is counted in tenths */
#define BREAKER_MAX_US		(INT64CONST(100) * 365 * USECS_PER_DAY)
#define BREAKER_WARN_US		(60 * USECS_PER_SEC)	/* one sync warning a minute */
#define BREAKER_RETRY_US	(100 * 1000)	/* after a failed move, calls skip it this long */
#define BREAKER_MACHINE		"circuit_breaker"

typedef enum BreakerState
{
	BS_CLOSED,
	BS_OPEN,
	BS_HALF_OPEN
} BreakerState;

static const char *const breaker_state_names[] = {"closed", "open", "half_open"};

typedef struct BreakerConfig
{
	int32		threshold;		/* failures that trip (count mode) */
	double		rate;			/* > 0: rate mode, share of failures that trips */
	int32		min_calls;		/* rate mode: calls needed in the window */
	int64		window_us;
	int64		cooldown_us;
	int32		probes;
} BreakerConfig;

typedef struct BreakerBucket
{
	int64		epoch;			/* which tenth of which window */
	uint32		calls;
	uint32		failures;
} BreakerBucket;

/* A state change not yet moved into harden.breaker_states. */
typedef struct BreakerChange
{
	uint8		from;
	uint8		to;
	uint32		calls;			/* a trip: the window's calls and failures */
	uint32		failures;
} BreakerChange;

#define BREAKER_MAX_PENDING 8

typedef struct BreakerSlot
{
	slock_t		mutex;			/* everything below */
	uint32		ident;			/* changes when the slot is claimed or freed */
	bool		in_use;
	Oid			dboid;
	uint64		loaded_gen;		/* definitions generation of cfg (0: reload) */
	int64		def_id;			/* harden.breakers.id ... */
	Oid			def_relid;		/* ... of this harden.breakers (a new extension: new ids) */
	char		name[BREAKER_NAME_MAX + 1];
	BreakerConfig cfg;
	BreakerState state;
	TimestampTz since;
	TimestampTz round_at;		/* half-open: when probes were last handed out */
	int32		probes_granted;
	int32		probes_ok;
	uint64		changes;		/* state changes since loaded */
	int			npending;		/* changes to record, oldest first */
	BreakerChange pending[BREAKER_MAX_PENDING];
	bool		resync;			/* the row may be behind beyond pending */
	TimestampTz warned_at;
	TimestampTz retry_at;		/* no move before (the last one failed) */
	BreakerBucket buckets[BREAKER_BUCKETS];
	uint64		allowed;
	uint64		rejected;
	uint64		successes;
	uint64		failures;
	uint64		opens;
} BreakerSlot;

typedef struct BreakerShared
{
	LWLock		lock;			/* claiming and freeing slots */
	int			tranche_id;
	pg_atomic_uint64 defs_gen;
	int			nslots;
	BreakerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} BreakerShared;

/* A backend's memo of where a breaker lives. */
typedef struct BreakerEntry
{
	char		name[BREAKER_NAME_MAX + 1];	/* hash key */
	int			slot;
	uint32		ident;
	uint64		gen;
} BreakerEntry;

/* A row of the tables, as read by a load. */
typedef struct BreakerRow
{
	int64		id;
	Oid			relid;
	BreakerConfig cfg;
	bool		has_state;
	BreakerState state;
	TimestampTz since;
} BreakerRow;

static int	breaker_max = 1000;
static BreakerShared *bs = NULL;
static HTAB *breaker_local = NULL;

/* Slots this transaction moved rows for: unsynced again if it aborts. */
#define BREAKER_MAX_TOUCHED 32
static int	touched_slot[BREAKER_MAX_TOUCHED];
static uint32 touched_ident[BREAKER_MAX_TOUCHED];
static int	ntouched = 0;
static bool touched_overflow = false;
static bool defs_dirty = false;
static bool callbacks_registered = false;

static void breaker_write_metrics(MetricWriter *w);

void
breaker_define_gucs(bool preloading)
{
	metrics_register_gauges(breaker_write_metrics);
	if (!preloading)
		return;
	DefineCustomIntVariable("harden.breaker_max",
							"Number of circuit breakers (of all databases) shared memory holds.",
							NULL,
							&breaker_max,
							1000, 1, 100000,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
}

Size
breaker_shmem_size(void)
{
	return add_size(offsetof(BreakerShared, slots),
					mul_size(breaker_max, sizeof(BreakerSlot)));
}

void
breaker_shmem_startup(void)
{
	bool		found;

	bs = ShmemInitStruct("pg_harden breakers", breaker_shmem_size(), &found);
	if (!found)
	{
		memset(bs, 0, breaker_shmem_size());
		bs->tranche_id = LWLockNewTrancheId();
		LWLockInitialize(&bs->lock, bs->tranche_id);
		pg_atomic_init_u64(&bs->defs_gen, 1);
		bs->nslots = breaker_max;
		for (int i = 0; i < bs->nslots; i++)
			SpinLockInit(&bs->slots[i].mutex);
	}
	LWLockRegisterTranche(bs->tranche_id, "pg_harden_breaker");
}

/* ---- helpers ---- */

static void
breaker_check_name(const char *p, int len)
{
	bool		ok = len >= 1 && len <= BREAKER_NAME_MAX;

	for (int i = 0; ok && i < len; i++)
		ok = isascii((unsigned char) p[i]) &&
			(isalnum((unsigned char) p[i]) || strchr("_.:-", p[i]) != NULL) && p[i] != '\0';
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_BREAKER_INVALID_NAME),
				 errmsg("invalid breaker name \"%s\"",
						pnstrdup(p, pg_mbcliplen(p, len, BREAKER_NAME_MAX))),
				 errdetail("A breaker name is 1 to %d characters of A-Z, a-z, 0-9, \"_\", \".\", \":\" and \"-\".",
						   BREAKER_NAME_MAX)));
}

/* Argument n as a breaker name, copied into buf. */
static void
breaker_arg_name(FunctionCallInfo fcinfo, int n, char *buf)
{
	text	   *t;
	int			len;

	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_BREAKER_INVALID_NAME),
				 errmsg("breaker name must not be NULL")));
	t = PG_GETARG_TEXT_PP(n);
	len = VARSIZE_ANY_EXHDR(t);
	breaker_check_name(VARDATA_ANY(t), len);
	memcpy(buf, VARDATA_ANY(t), len);
	buf[len] = '\0';
}

static int64
interval_us(const Interval *iv)
{
	/* Months count as 30 days; anything beyond 100 years is capped. */
	double		us = (double) iv->time + (double) iv->day * USECS_PER_DAY +
		(double) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;

	if (us > (double) BREAKER_MAX_US)
		return BREAKER_MAX_US;
	return (int64) us;
}

static char *
format_us(int64 us)
{
	if (us % USECS_PER_SEC == 0)
		return psprintf("%lld s", (long long) (us / USECS_PER_SEC));
	return psprintf("%.3f s", (double) us / USECS_PER_SEC);
}

static BreakerState
state_from_name(const char *s)
{
	for (int i = 0; i < (int) lengthof(breaker_state_names); i++)
		if (strcmp(s, breaker_state_names[i]) == 0)
			return (BreakerState) i;
	/* A state this code does not know: treat the breaker as closed. */
	return BS_CLOSED;
}

static void
breaker_bad_definition(const char *what, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_BREAKER_INVALID_DEFINITION),
			 errmsg("invalid breaker definition: %s", what),
			 errdetail_internal("%s", detail)));
}

/* ---- transaction callbacks ---- */

static void
breaker_mark_unsynced(void)
{
	for (int i = 0; i < bs->nslots && touched_overflow; i++)
	{
		BreakerSlot *s = &bs->slots[i];

		SpinLockAcquire(&s->mutex);
		if (s->in_use && s->dboid == MyDatabaseId)
			s->resync = true;
		SpinLockRelease(&s->mutex);
	}
	for (int i = 0; i < ntouched && !touched_overflow; i++)
	{
		BreakerSlot *s = &bs->slots[touched_slot[i]];

		SpinLockAcquire(&s->mutex);
		if (s->ident == touched_ident[i])
			s->resync = true;
		SpinLockRelease(&s->mutex);
	}
}

static void
breaker_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* The rows moved may be gone: check them again. */
			if (bs)
				breaker_mark_unsynced();
			/* FALLTHROUGH */
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			/* Committed or rolled back, definitions changed: reload. */
			if (defs_dirty && bs)
				pg_atomic_fetch_add_u64(&bs->defs_gen, 1);
			defs_dirty = false;
			ntouched = 0;
			touched_overflow = false;
			break;
		default:
			break;
	}
}

static void
breaker_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && bs && ntouched > 0)
		breaker_mark_unsynced();
}

static void
breaker_register_callbacks(void)
{
	if (callbacks_registered)
		return;
	RegisterXactCallback(breaker_xact_callback, NULL);
	RegisterSubXactCallback(breaker_subxact_callback, NULL);
	callbacks_registered = true;
}

static void
breaker_touched(int slot, uint32 ident)
{
	breaker_register_callbacks();
	for (int i = 0; i < ntouched; i++)
		if (touched_slot[i] == slot && touched_ident[i] == ident)
			return;
	if (ntouched >= BREAKER_MAX_TOUCHED)
	{
		touched_overflow = true;
		return;
	}
	touched_slot[ntouched] = slot;
	touched_ident[ntouched] = ident;
	ntouched++;
}

/* ---- SQL as the extension's owner ---- */

typedef struct BreakerSpi
{
	HardenRoleScope scope;
} BreakerSpi;

static void
breaker_spi_begin(BreakerSpi *spi)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	harden_role_enter(&spi->scope, harden_rel_owner(fsm_harden_relid("breakers")), true);
}

static void
breaker_spi_end(BreakerSpi *spi)
{
	harden_role_leave(&spi->scope);
	SPI_finish();
}

/*
 * Run a statement with a fresh snapshot: a load must see definitions
 * committed after the transaction's snapshot, and moving the recorded state
 * must not fail in a REPEATABLE READ transaction that began earlier.
 */
static void
breaker_exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
			 bool read_only, int expect)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);
	int			rc;

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	rc = SPI_execute_snapshot(plan, values, nulls, GetLatestSnapshot(), InvalidSnapshot,
							  read_only, true, 0);
	if (rc != expect)
		elog(ERROR, "SPI_execute_snapshot failed for \"%s\": %s", sql, SPI_result_code_string(rc));
	SPI_freeplan(plan);
}

/* Read a breaker's definition and recorded state; false if undefined. */
static bool
breaker_read(const char *name, BreakerRow *row)
{
	BreakerSpi	spi;
	Oid			type = TEXTOID;
	Datum		value = CStringGetTextDatum(name);
	bool		found;

	breaker_spi_begin(&spi);
	breaker_exec("SELECT b.failure_threshold, b.failure_rate, b.min_calls, b.failure_window, "
				 "b.cooldown, b.half_open_probes, s.state, s.since, b.id "
				 "FROM harden.breakers b LEFT JOIN harden.breaker_states s ON s.name OPERATOR(pg_catalog.=) b.name "
				 "WHERE b.name OPERATOR(pg_catalog.=) $1",
				 1, &type, &value, NULL, true, SPI_OK_SELECT);
	found = SPI_processed == 1;
	if (found)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;

		row->cfg.threshold = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		d = SPI_getbinval(tup, desc, 2, &isnull);
		row->cfg.rate = isnull ? 0 : DatumGetFloat8(d);
		row->cfg.min_calls = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		row->cfg.window_us = Max(interval_us(DatumGetIntervalP(SPI_getbinval(tup, desc, 4, &isnull))), 1);
		row->cfg.cooldown_us = Max(interval_us(DatumGetIntervalP(SPI_getbinval(tup, desc, 5, &isnull))), 1);
		row->cfg.probes = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
		row->id = DatumGetInt64(SPI_getbinval(tup, desc, 9, &isnull));
		row->relid = fsm_harden_relid("breakers");
		d = SPI_getbinval(tup, desc, 7, &isnull);
		row->has_state = !isnull;
		if (!isnull)
		{
			char	   *st = TextDatumGetCString(d);

			row->state = state_from_name(st);
			row->since = DatumGetTimestampTz(SPI_getbinval(tup, desc, 8, &isnull));
		}
	}
	breaker_spi_end(&spi);
	return found;
}

/* ---- slots ---- */

/* The slot of this database's breaker, or -1.  Caller holds bs->lock. */
static int
breaker_find_slot(const char *name)
{
	for (int i = 0; i < bs->nslots; i++)
	{
		BreakerSlot *s = &bs->slots[i];

		if (s->in_use && s->dboid == MyDatabaseId && strcmp(s->name, name) == 0)
			return i;
	}
	return -1;
}

static void
breaker_clear_window(BreakerSlot *s)
{
	memset(s->buckets, 0, sizeof(s->buckets));
}

/* Caller holds bs->lock exclusively. */
static void
breaker_free_slot(BreakerSlot *s)
{
	SpinLockAcquire(&s->mutex);
	s->in_use = false;
	s->ident++;
	SpinLockRelease(&s->mutex);
}

/*
 * Free the slots of breakers that were dropped (in this database, or with
 * their database).  Called when no slot is free.
 */
static void
breaker_collect(void)
{
	Datum	   *names = palloc(sizeof(Datum) * bs->nslots);
	int			n = 0;
	BreakerSpi	spi;
	Oid			type = TEXTARRAYOID;
	Datum		value;
	List	   *gone = NIL;
	ListCell   *lc;
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext old;

	LWLockAcquire(&bs->lock, LW_EXCLUSIVE);
	for (int i = 0; i < bs->nslots; i++)
	{
		BreakerSlot *s = &bs->slots[i];

		if (!s->in_use)
			continue;
		if (s->dboid != MyDatabaseId &&
			!SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(s->dboid)))
			breaker_free_slot(s);
		else if (s->dboid == MyDatabaseId)
			names[n++] = CStringGetTextDatum(s->name);
	}
	LWLockRelease(&bs->lock);
	if (n == 0)
		return;

	value = PointerGetDatum(construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT));
	breaker_spi_begin(&spi);
	breaker_exec("SELECT n FROM pg_catalog.unnest($1) n "
				 "WHERE NOT EXISTS (SELECT 1 FROM harden.breakers b WHERE b.name OPERATOR(pg_catalog.=) n)",
				 1, &type, &value, NULL, true, SPI_OK_SELECT);
	/* Kept past SPI_finish, which frees what SPI allocated. */
	old = MemoryContextSwitchTo(outer);
	for (uint64 i = 0; i < SPI_processed; i++)
		gone = lappend(gone, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	MemoryContextSwitchTo(old);
	breaker_spi_end(&spi);

	LWLockAcquire(&bs->lock, LW_EXCLUSIVE);
	foreach(lc, gone)
	{
		int			i = breaker_find_slot(lfirst(lc));

		if (i >= 0)
			breaker_free_slot(&bs->slots[i]);
	}
	LWLockRelease(&bs->lock);
}

/* Set up a slot for a breaker as its rows describe it.  Caller holds its spinlock. */
static void
breaker_init_slot(BreakerSlot *s, const char *name, const BreakerRow *row, uint64 gen)
{
	s->ident++;
	s->in_use = true;
	s->dboid = MyDatabaseId;
	s->loaded_gen = gen;
	s->def_id = row->id;
	s->def_relid = row->relid;
	strlcpy(s->name, name, sizeof(s->name));
	s->cfg = row->cfg;
	s->state = row->has_state ? row->state : BS_CLOSED;
	s->since = row->has_state ? row->since : GetCurrentTimestamp();
	s->round_at = s->since;
	s->probes_granted = 0;
	s->probes_ok = 0;
	s->changes = 0;
	s->npending = 0;
	/* A breaker without its row gets one from the first sync. */
	s->resync = !row->has_state;
	s->warned_at = 0;
	s->retry_at = 0;
	breaker_clear_window(s);
	s->allowed = s->rejected = s->successes = s->failures = s->opens = 0;
}

static int
breaker_claim_slot(const char *name, const BreakerRow *row, uint64 gen)
{
	for (int i = 0; i < bs->nslots; i++)
		if (!bs->slots[i].in_use)
		{
			SpinLockAcquire(&bs->slots[i].mutex);
			breaker_init_slot(&bs->slots[i], name, row, gen);
			SpinLockRelease(&bs->slots[i].mutex);
			return i;
		}
	return -1;
}

/*
 * Load a breaker into its slot from the tables (first use, or definitions
 * changed) and remember it in e.
 */
static void
breaker_load(const char *name, BreakerEntry *e)
{
	uint64		gen = pg_atomic_read_u64(&bs->defs_gen);
	BreakerRow	row;
	bool		found;
	int			i;

	LWLockAcquire(&bs->lock, LW_SHARED);
	i = breaker_find_slot(name);
	/* A transaction that changed definitions reads its own. */
	if (i >= 0 && bs->slots[i].loaded_gen == gen && !defs_dirty)
	{
		e->slot = i;
		e->ident = bs->slots[i].ident;
		e->gen = gen;
		LWLockRelease(&bs->lock);
		return;
	}
	LWLockRelease(&bs->lock);

	found = breaker_read(name, &row);
	/* Uncommitted definitions of this transaction: nobody keeps them. */
	if (defs_dirty)
		gen = 0;

	LWLockAcquire(&bs->lock, LW_EXCLUSIVE);
	i = breaker_find_slot(name);
	if (!found)
	{
		if (i >= 0)
			breaker_free_slot(&bs->slots[i]);
		LWLockRelease(&bs->lock);
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_BREAKER_UNKNOWN),
				 errmsg("circuit breaker \"%s\" does not exist", name),
				 errhint("Define it with harden.breaker_define().")));
	}
	if (i < 0)
	{
		i = breaker_claim_slot(name, &row, gen);
		if (i < 0)
		{
			LWLockRelease(&bs->lock);
			breaker_collect();
			LWLockAcquire(&bs->lock, LW_EXCLUSIVE);
			i = breaker_find_slot(name);
			if (i < 0)
				i = breaker_claim_slot(name, &row, gen);
		}
		if (i < 0)
		{
			LWLockRelease(&bs->lock);
			ereport(ERROR,
					(errcode(ERRCODE_HARDEN_BREAKER_TOO_MANY),
					 errmsg("too many circuit breakers in use"),
					 errdetail("Shared memory holds %d breakers, and all are in use.", bs->nslots),
					 errhint("Drop unused breakers, or raise harden.breaker_max and restart the server.")));
		}
	}
	else
	{
		BreakerSlot *s = &bs->slots[i];

		SpinLockAcquire(&s->mutex);
		if (s->def_id != row.id || s->def_relid != row.relid)
			breaker_init_slot(s, name, &row, gen);	/* dropped and defined anew */
		else
		{
			if (s->cfg.window_us != row.cfg.window_us)
				breaker_clear_window(s);
			s->cfg = row.cfg;
			s->loaded_gen = gen;
		}
		SpinLockRelease(&s->mutex);
	}
	e->slot = i;
	e->ident = bs->slots[i].ident;
	e->gen = gen;
	LWLockRelease(&bs->lock);
}

/*
 * The slot of a breaker, locked.  The fast path is a backend-local hash
 * probe, one atomic read and the slot's spinlock.
 */
static BreakerSlot *
breaker_acquire(const char *name, int *slot, uint32 *ident)
{
	BreakerEntry *e;
	bool		found;

	if (breaker_local == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = BREAKER_NAME_MAX + 1;
		ctl.entrysize = sizeof(BreakerEntry);
		ctl.hcxt = TopMemoryContext;
		breaker_local = hash_create("pg_harden breakers", 64, &ctl,
									HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	e = hash_search(breaker_local, name, HASH_ENTER, &found);
	if (!found)
		e->gen = 0;
	for (;;)
	{
		BreakerSlot *s;

		if (e->gen == 0 || e->gen != pg_atomic_read_u64(&bs->defs_gen))
		{
			PG_TRY();
			{
				breaker_load(name, e);
			}
			PG_CATCH();
			{
				hash_search(breaker_local, name, HASH_REMOVE, NULL);
				PG_RE_THROW();
			}
			PG_END_TRY();
		}
		s = &bs->slots[e->slot];
		SpinLockAcquire(&s->mutex);
		if (s->ident == e->ident)
		{
			*slot = e->slot;
			*ident = e->ident;
			return s;
		}
		SpinLockRelease(&s->mutex);
		e->gen = 0;
	}
}

/* ---- the state machine in shared memory (slot spinlock held) ---- */

static void
breaker_enter(BreakerSlot *s, BreakerState state, TimestampTz now, uint64 calls, uint64 failures)
{
	if (s->npending < BREAKER_MAX_PENDING)
	{
		BreakerChange *c = &s->pending[s->npending++];

		c->from = (uint8) s->state;
		c->to = (uint8) state;
		c->calls = (uint32) Min(calls, PG_UINT32_MAX);
		c->failures = (uint32) Min(failures, PG_UINT32_MAX);
	}
	else
		s->resync = true;		/* too many at once: record the end state */
	s->state = state;
	s->since = now;
	s->round_at = now;
	s->probes_granted = 0;
	s->probes_ok = 0;
	s->changes++;
	if (state == BS_OPEN)
		s->opens++;
	if (state != BS_HALF_OPEN)
		breaker_clear_window(s);
}

/* Time moves an open breaker to half-open, and restarts stuck probes. */
static void
breaker_advance(BreakerSlot *s, TimestampTz now)
{
	if (s->state == BS_OPEN && now - s->since >= s->cfg.cooldown_us)
		breaker_enter(s, BS_HALF_OPEN, now, 0, 0);
	else if (s->state == BS_HALF_OPEN && s->probes_granted >= s->cfg.probes &&
			 now - s->round_at >= s->cfg.cooldown_us)
	{
		/* Probes handed out a cooldown ago never reported: hand out more. */
		s->probes_granted = s->probes_ok;
		s->round_at = now;
	}
}

static void
breaker_window_totals(const BreakerSlot *s, TimestampTz now, uint64 *calls, uint64 *failures)
{
	int64		width = Max(s->cfg.window_us / BREAKER_BUCKETS, 1);
	int64		epoch = now / width;

	*calls = *failures = 0;
	for (int i = 0; i < BREAKER_BUCKETS; i++)
		if (s->buckets[i].epoch > epoch - BREAKER_BUCKETS && s->buckets[i].epoch <= epoch)
		{
			*calls += s->buckets[i].calls;
			*failures += s->buckets[i].failures;
		}
}

static void
breaker_count(BreakerSlot *s, bool success, TimestampTz now)
{
	int64		width = Max(s->cfg.window_us / BREAKER_BUCKETS, 1);
	int64		epoch = now / width;
	BreakerBucket *b = &s->buckets[epoch % BREAKER_BUCKETS];
	uint64		calls;
	uint64		failures;
	bool		trip;

	if (b->epoch != epoch)
	{
		b->epoch = epoch;
		b->calls = 0;
		b->failures = 0;
	}
	if (b->calls < PG_UINT32_MAX)
		b->calls++;
	if (!success && b->failures < PG_UINT32_MAX)
		b->failures++;
	if (success)
		return;
	breaker_window_totals(s, now, &calls, &failures);
	if (s->cfg.rate > 0)
		trip = calls >= (uint64) s->cfg.min_calls && failures >= s->cfg.rate * calls;
	else
		trip = failures >= (uint64) s->cfg.threshold;
	if (trip)
		breaker_enter(s, BS_OPEN, now, calls, failures);
}

static void
breaker_apply(BreakerSlot *s, bool success, TimestampTz now)
{
	if (success)
		s->successes++;
	else
		s->failures++;
	switch (s->state)
	{
		case BS_CLOSED:
			breaker_count(s, success, now);
			break;
		case BS_OPEN:
			/* A call let through before it opened: nothing to decide. */
			break;
		case BS_HALF_OPEN:
			if (!success)
				breaker_enter(s, BS_OPEN, now, 0, 0);
			else if (++s->probes_ok >= s->cfg.probes)
				breaker_enter(s, BS_CLOSED, now, 0, 0);
			break;
	}
}

/* ---- moving the recorded state ---- */

typedef struct BreakerSyncArg
{
	const char *name;
	int			slot;
	uint32		ident;
	bool		wait;			/* for the row lock (else fail at once) */
	int			moved;
} BreakerSyncArg;

/* The next step from one state towards another along the machine. */
static BreakerState
breaker_step(BreakerState from, BreakerState to)
{
	if (from == BS_CLOSED)
		return BS_OPEN;
	if (from == BS_OPEN)
		return BS_HALF_OPEN;
	return to;
}

static const char *
breaker_event(BreakerState from, BreakerState to)
{
	if (to == BS_OPEN)
		return "trip";
	if (to == BS_HALF_OPEN)
		return "probe";
	return "reset";
}

/* Why the row moves, for harden.fsm_log.reason; c is NULL for a catch-up step. */
static char *
breaker_reason(const BreakerSlot *copy, const BreakerChange *c, BreakerState from,
			   BreakerState to, const char *role)
{
	const BreakerConfig *cfg = &copy->cfg;
	char	   *why;

	if (c && to == BS_OPEN && from == BS_CLOSED && cfg->rate > 0)
		why = psprintf("%u of %u calls failed within %s (failure rate %g)",
					   c->failures, c->calls, format_us(cfg->window_us), cfg->rate);
	else if (c && to == BS_OPEN && from == BS_CLOSED)
		why = psprintf("%u failure%s within %s (threshold %d)",
					   c->failures, c->failures == 1 ? "" : "s", format_us(cfg->window_us),
					   cfg->threshold);
	else if (c && to == BS_OPEN)
		why = pstrdup("a half-open probe failed");
	else if (c && to == BS_HALF_OPEN)
		why = psprintf("cooldown of %s over", format_us(cfg->cooldown_us));
	else if (c)
		why = psprintf("%d half-open probe%s succeeded", cfg->probes, cfg->probes == 1 ? "" : "s");
	else
		why = psprintf("catching up with the live state \"%s\"", breaker_state_names[copy->state]);
	return psprintf("breaker %s: %s; recorded by %s", copy->name, why, role);
}

/* The caller's harden.reason, added to the audit rows of the changes it records. */
static char *
breaker_caller_reason(const char *role)
{
	const char *r = GetConfigOption("harden.reason", true, false);

	if (r == NULL || r[0] == '\0')
		return pstrdup(role);
	return psprintf("%s (%s)", role, r);
}

static void
breaker_move_row(const char *name, BreakerState from, BreakerState to, TimestampTz since,
				 const char *reason)
{
	Oid			types[3] = {TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[3];
	FsmActor	actor;
	FsmActor   *prev = fsm_current_actor;

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(breaker_state_names[to]);
	values[2] = TimestampTzGetDatum(since);
	memset(&actor, 0, sizeof(actor));
	actor.machine = BREAKER_MACHINE;
	actor.from = breaker_state_names[from];
	actor.to = breaker_state_names[to];
	actor.event = breaker_event(from, to);
	actor.actor = "event";
	/* The audit row's reason; the caller's harden.reason stays as it is. */
	actor.reason = reason;
	fsm_current_actor = &actor;
	PG_TRY();
	{
		breaker_exec("UPDATE harden.breaker_states SET state = $2, since = $3 WHERE name OPERATOR(pg_catalog.=) $1",
					 3, types, values, NULL, false, SPI_OK_UPDATE);
	}
	PG_FINALLY();
	{
		fsm_current_actor = prev;
	}
	PG_END_TRY();
}

/* The machine's timer out of "open" fires when this breaker's cooldown ends. */
static void
breaker_set_timer(const char *name, TimestampTz due)
{
	Oid			types[2] = {TEXTOID, TIMESTAMPTZOID};
	Datum		values[2];

	values[0] = CStringGetTextDatum(name);
	values[1] = TimestampTzGetDatum(due);
	breaker_exec("UPDATE harden.fsm_due SET due_at = $2 "
				 "WHERE relid OPERATOR(pg_catalog.=) 'harden.breaker_states'::pg_catalog.regclass "
				 "AND machine OPERATOR(pg_catalog.=) '" BREAKER_MACHINE "' AND from_state OPERATOR(pg_catalog.=) 'open' "
				 "AND row_key OPERATOR(pg_catalog.=) pg_catalog.jsonb_build_object('name', $1)",
				 2, types, values, NULL, false, SPI_OK_UPDATE);
}

/*
 * Move the row from one state to another along the machine's shortest path
 * (after a rollback lost recorded changes, or more changes than are queued).
 */
static BreakerState
breaker_walk(const char *name, const BreakerSlot *copy, BreakerState cur, BreakerState to,
			 const char *role, int *moved)
{
	while (cur != to)
	{
		BreakerState next = breaker_step(cur, to);

		breaker_move_row(name, cur, next, GetCurrentTimestamp(),
						 breaker_reason(copy, NULL, cur, next, role));
		cur = next;
		(*moved)++;
	}
	return cur;
}

/* Bring one breaker's row up to its slot.  Runs in a subtransaction. */
static void
breaker_sync_fn(void *varg)
{
	BreakerSyncArg *a = varg;
	BreakerSlot *s = &bs->slots[a->slot];
	BreakerSlot copy;
	char	   *role = breaker_caller_reason(GetUserNameFromId(GetUserId(), false));
	Oid			types[2] = {TEXTOID};
	Datum		values[2] = {CStringGetTextDatum(a->name)};
	BreakerSpi	spi;
	BreakerState cur;

	breaker_spi_begin(&spi);
	/* NOWAIT: breaker_record() never queues behind another transaction. */
	breaker_exec(a->wait ? "SELECT state FROM harden.breaker_states WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE" :
				 "SELECT state FROM harden.breaker_states WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE NOWAIT",
				 1, types, values, NULL, false, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		breaker_exec("INSERT INTO harden.breaker_states (name) VALUES ($1)",
					 1, types, values, NULL, false, SPI_OK_INSERT);
		cur = BS_CLOSED;
	}
	else
		cur = state_from_name(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));

	SpinLockAcquire(&s->mutex);
	if (s->ident != a->ident)
	{
		SpinLockRelease(&s->mutex);
		breaker_spi_end(&spi);
		return;
	}
	memcpy(&copy, s, sizeof(copy));
	SpinLockRelease(&s->mutex);

	/* Each change in order; one the machine's timer made already is skipped. */
	for (int i = 0; i < copy.npending; i++)
	{
		const BreakerChange *c = &copy.pending[i];

		if (cur == (BreakerState) c->to)
			continue;
		cur = breaker_walk(a->name, &copy, cur, (BreakerState) c->from, role, &a->moved);
		breaker_move_row(a->name, cur, c->to, GetCurrentTimestamp(),
						 breaker_reason(&copy, c, cur, c->to, role));
		cur = c->to;
		a->moved++;
	}
	cur = breaker_walk(a->name, &copy, cur, copy.state, role, &a->moved);
	/* The row's since and the timer follow the live state. */
	types[1] = TIMESTAMPTZOID;
	values[1] = TimestampTzGetDatum(copy.since);
	breaker_exec("UPDATE harden.breaker_states SET since = $2 WHERE name OPERATOR(pg_catalog.=) $1 AND since OPERATOR(pg_catalog.<>) $2",
				 2, types, values, NULL, false, SPI_OK_UPDATE);
	if (copy.state == BS_OPEN && a->moved > 0)
		breaker_set_timer(a->name, copy.since + copy.cfg.cooldown_us);
	breaker_spi_end(&spi);

	breaker_touched(a->slot, a->ident);
	SpinLockAcquire(&s->mutex);
	if (s->ident == a->ident)
	{
		/* Drop what was recorded; changes made meanwhile stay queued. */
		int			done = Min(copy.npending, s->npending);

		memmove(s->pending, s->pending + done, sizeof(BreakerChange) * (s->npending - done));
		s->npending -= done;
		if (s->changes == copy.changes)
			s->resync = false;
	}
	SpinLockRelease(&s->mutex);
}

/*
 * Move the row; on failure the slot stays unsynced for a later call.  With
 * report (breaker_sync()), it waits for the row lock and raises an error;
 * otherwise an error is a warning at most once a minute per breaker (a
 * locked row is not worth one), and calls leave the row alone for
 * BREAKER_RETRY_US rather than each paying for a failing attempt.
 */
static int
breaker_sync(const char *name, int slot, uint32 ident, bool report)
{
	BreakerSyncArg arg = {name, slot, ident, report, 0};
	BreakerSlot *s = &bs->slots[slot];
	ErrorData  *edata;
	TimestampTz now;
	bool		warn;

	if (harden_try_in_subxact(breaker_sync_fn, &arg, &edata))
		return arg.moved;
	if (report)
		ReThrowError(edata);

	now = GetCurrentTimestamp();
	SpinLockAcquire(&s->mutex);
	warn = s->ident == ident && now - s->warned_at >= BREAKER_WARN_US &&
		edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE;
	if (warn)
		s->warned_at = now;
	if (s->ident == ident)
		s->retry_at = now + BREAKER_RETRY_US;
	SpinLockRelease(&s->mutex);
	if (warn)
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("could not record the state of circuit breaker \"%s\"", name),
				 errdetail_internal("%s", edata->message),
				 errhint("The breaker works; harden.breaker_states and harden.fsm_log catch up at a later harden.breaker_record() or harden.breaker_sync().")));
	FreeErrorData(edata);
	return 0;
}

static bool
breaker_can_write(void)
{
	return !XactReadOnly && !RecoveryInProgress() && !IsInParallelMode();
}

/* ---- SQL functions ---- */

PG_FUNCTION_INFO_V1(harden_breaker_allow);

Datum
harden_breaker_allow(PG_FUNCTION_ARGS)
{
	char		name[BREAKER_NAME_MAX + 1];
	TimestampTz now;
	BreakerSlot *s;
	int			slot;
	uint32		ident;
	bool		allow;

	harden_require_shmem("harden.breaker_allow()");
	breaker_arg_name(fcinfo, 0, name);
	now = GetCurrentTimestamp();
	s = breaker_acquire(name, &slot, &ident);
	breaker_advance(s, now);
	switch (s->state)
	{
		case BS_CLOSED:
			allow = true;
			break;
		case BS_HALF_OPEN:
			allow = s->probes_granted < s->cfg.probes;
			if (allow)
				s->probes_granted++;
			break;
		default:
			allow = false;
			break;
	}
	if (allow)
		s->allowed++;
	else
		s->rejected++;
	SpinLockRelease(&s->mutex);
	PG_RETURN_BOOL(allow);
}

PG_FUNCTION_INFO_V1(harden_breaker_record);

Datum
harden_breaker_record(PG_FUNCTION_ARGS)
{
	char		name[BREAKER_NAME_MAX + 1];
	TimestampTz now;
	BreakerSlot *s;
	int			slot;
	uint32		ident;
	BreakerState state;
	bool		unsynced;

	harden_require_shmem("harden.breaker_record()");
	breaker_arg_name(fcinfo, 0, name);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the outcome of a breaker call must not be NULL"),
				 errhint("Pass true for a success, false for a failure.")));
	now = GetCurrentTimestamp();
	s = breaker_acquire(name, &slot, &ident);
	breaker_advance(s, now);
	breaker_apply(s, PG_GETARG_BOOL(1), now);
	state = s->state;
	unsynced = (s->npending > 0 || s->resync) && now >= s->retry_at;
	SpinLockRelease(&s->mutex);

	if (unsynced && breaker_can_write())
		breaker_sync(name, slot, ident, false);
	PG_RETURN_TEXT_P(cstring_to_text(breaker_state_names[state]));
}

PG_FUNCTION_INFO_V1(harden_breaker_sync);

Datum
harden_breaker_sync(PG_FUNCTION_ARGS)
{
	List	   *names = NIL;
	ListCell   *lc;
	int			moved = 0;

	harden_deny_on_standby("harden.breaker_sync()");

	harden_require_shmem("harden.breaker_sync()");
	PreventCommandIfReadOnly("harden.breaker_sync()");
	if (!PG_ARGISNULL(0))
	{
		char	   *name = palloc(BREAKER_NAME_MAX + 1);

		breaker_arg_name(fcinfo, 0, name);
		names = list_make1(name);
	}
	else
	{
		/* Every defined breaker that is loaded. */
		BreakerSpi	spi;
		List	   *defined = NIL;
		ListCell   *lc2;

		MemoryContext outer = CurrentMemoryContext;

		breaker_spi_begin(&spi);
		breaker_exec("SELECT name FROM harden.breakers ORDER BY name", 0, NULL, NULL, NULL,
					 true, SPI_OK_SELECT);
		/* Kept past SPI_finish, which frees what SPI allocated. */
		for (uint64 i = 0; i < SPI_processed; i++)
			defined = lappend(defined, MemoryContextStrdup(outer,
														   SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1)));
		breaker_spi_end(&spi);
		LWLockAcquire(&bs->lock, LW_SHARED);
		foreach(lc2, defined)
			if (breaker_find_slot(lfirst(lc2)) >= 0)
				names = lappend(names, lfirst(lc2));
		LWLockRelease(&bs->lock);
	}
	foreach(lc, names)
	{
		BreakerSlot *s;
		int			slot;
		uint32		ident;
		TimestampTz now = GetCurrentTimestamp();

		s = breaker_acquire(lfirst(lc), &slot, &ident);
		breaker_advance(s, now);
		SpinLockRelease(&s->mutex);
		moved += breaker_sync(lfirst(lc), slot, ident, true);
	}
	PG_RETURN_INT32(moved);
}

static Datum
interval_arg(FunctionCallInfo fcinfo, int n, const char *what)
{
	Interval   *iv;

	if (PG_ARGISNULL(n))
		breaker_bad_definition(psprintf("%s must not be NULL", what), "Give an interval greater than zero.");
	iv = PG_GETARG_INTERVAL_P(n);
	if (interval_us(iv) <= 0)
		breaker_bad_definition(psprintf("%s must be greater than zero", what),
							   psprintf("%s is %s.", what,
										DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv)))));
	return IntervalPGetDatum(iv);
}

static int32
int_arg(FunctionCallInfo fcinfo, int n, const char *what, int32 min, int32 max)
{
	int32		v;

	if (PG_ARGISNULL(n))
		breaker_bad_definition(psprintf("%s must not be NULL", what),
							   psprintf("Give a number from %d to %d.", min, max));
	v = PG_GETARG_INT32(n);
	if (v < min || v > max)
		breaker_bad_definition(psprintf("%s must be between %d and %d", what, min, max),
							   psprintf("%s is %d.", what, v));
	return v;
}

PG_FUNCTION_INFO_V1(harden_breaker_define);

Datum
harden_breaker_define(PG_FUNCTION_ARGS)
{
	char		name[BREAKER_NAME_MAX + 1];
	Oid			types[7] = {TEXTOID, INT4OID, FLOAT8OID, INT4OID, INTERVALOID, INTERVALOID, INT4OID};
	Datum		values[7];
	char		nulls[7] = "       ";
	BreakerSpi	spi;

	harden_deny_on_standby("harden.breaker_define()");

	harden_require_shmem("harden.breaker_define()");
	breaker_arg_name(fcinfo, 0, name);
	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(int_arg(fcinfo, 1, "failure_threshold", 1, PG_INT32_MAX));
	values[4] = interval_arg(fcinfo, 2, "failure_window");
	values[5] = interval_arg(fcinfo, 3, "cooldown");
	values[6] = Int32GetDatum(int_arg(fcinfo, 4, "half_open_probes", 1, 1000000));
	if (PG_ARGISNULL(5))
	{
		nulls[2] = 'n';
		values[2] = (Datum) 0;
	}
	else
	{
		double		rate = PG_GETARG_FLOAT8(5);

		if (!(rate > 0 && rate <= 1))
			breaker_bad_definition("failure_rate must be greater than 0 and at most 1",
								   psprintf("failure_rate is %g.", rate));
		values[2] = Float8GetDatum(rate);
	}
	values[3] = Int32GetDatum(int_arg(fcinfo, 6, "min_calls", 1, PG_INT32_MAX));

	breaker_spi_begin(&spi);
	breaker_exec("INSERT INTO harden.breakers AS b (name, failure_threshold, failure_rate, min_calls, "
				 "failure_window, cooldown, half_open_probes) VALUES ($1, $2, $3, $4, $5, $6, $7) "
				 "ON CONFLICT (name) DO UPDATE SET failure_threshold = excluded.failure_threshold, "
				 "failure_rate = excluded.failure_rate, min_calls = excluded.min_calls, "
				 "failure_window = excluded.failure_window, cooldown = excluded.cooldown, "
				 "half_open_probes = excluded.half_open_probes, defined_at = pg_catalog.now()",
				 7, types, values, nulls, false, SPI_OK_INSERT);
	breaker_exec("INSERT INTO harden.breaker_states (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
				 1, types, values, NULL, false, SPI_OK_INSERT);
	breaker_spi_end(&spi);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(harden_breaker_drop);

Datum
harden_breaker_drop(PG_FUNCTION_ARGS)
{
	char		name[BREAKER_NAME_MAX + 1];
	Oid			type = TEXTOID;
	Datum		value;
	BreakerSpi	spi;
	bool		dropped;

	harden_deny_on_standby("harden.breaker_drop()");

	harden_require_shmem("harden.breaker_drop()");
	breaker_arg_name(fcinfo, 0, name);
	value = CStringGetTextDatum(name);
	breaker_spi_begin(&spi);
	breaker_exec("DELETE FROM harden.breakers WHERE name OPERATOR(pg_catalog.=) $1", 1, &type, &value, NULL,
				 false, SPI_OK_DELETE);
	dropped = SPI_processed > 0;
	breaker_spi_end(&spi);
	PG_RETURN_BOOL(dropped);
}

/* Statement trigger on harden.breakers: slots reload after commit. */
PG_FUNCTION_INFO_V1(harden_breakers_changed);

Datum
harden_breakers_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("harden.breakers_changed() must be called as a trigger")));
	if (bs != NULL)
	{
		breaker_register_callbacks();
		defs_dirty = true;
	}
	PG_RETURN_POINTER(NULL);
}

/*
 * harden.breaker_status: every breaker of the tables, with the live state
 * and counters of those loaded into shared memory.
 */
typedef struct BreakerLive
{
	char		name[BREAKER_NAME_MAX + 1];	/* hash key */
	BreakerSlot slot;
} BreakerLive;

PG_FUNCTION_INFO_V1(harden_breaker_status);

Datum
harden_breaker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz now;
	HASHCTL		ctl;
	HTAB	   *live;
	BreakerSpi	spi;
	Oid			relid;

	harden_require_shmem("harden.breaker_status");
	InitMaterializedSRF(fcinfo, 0);

	/* The live slots of this database, copied out. */
	ctl.keysize = BREAKER_NAME_MAX + 1;
	ctl.entrysize = sizeof(BreakerLive);
	ctl.hcxt = CurrentMemoryContext;
	live = hash_create("pg_harden breaker status", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	now = GetCurrentTimestamp();
	for (int i = 0; i < bs->nslots; i++)
	{
		BreakerSlot *s = &bs->slots[i];
		BreakerSlot copy;

		SpinLockAcquire(&s->mutex);
		if (!s->in_use || s->dboid != MyDatabaseId)
		{
			SpinLockRelease(&s->mutex);
			continue;
		}
		breaker_advance(s, now);
		memcpy(&copy, s, sizeof(copy));
		SpinLockRelease(&s->mutex);
		((BreakerLive *) hash_search(live, copy.name, HASH_ENTER, NULL))->slot = copy;
	}

	breaker_spi_begin(&spi);
	/* The caller's snapshot: a view reads like the tables it shows. */
	if (SPI_execute("SELECT b.name, s.state, s.since, b.failure_threshold, b.failure_rate, b.min_calls, "
					"b.failure_window, b.cooldown, b.half_open_probes, b.id "
					"FROM harden.breakers b LEFT JOIN harden.breaker_states s ON s.name OPERATOR(pg_catalog.=) b.name "
					"ORDER BY b.name", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed for the breaker status");
	relid = fsm_harden_relid("breakers");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *name = SPI_getvalue(tup, desc, 1);
		char	   *recorded = SPI_getvalue(tup, desc, 2);
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 10, &isnull));
		BreakerLive *l = hash_search(live, name, HASH_FIND, NULL);
		BreakerSlot *c = l ? &l->slot : NULL;
		Datum		v[18];
		bool		n[18] = {0};
		uint64		calls = 0;
		uint64		failures = 0;
		const char *state;

		/* A slot left from a breaker dropped and defined again is not this one. */
		if (c && (c->def_id != id || c->def_relid != relid))
			c = NULL;
		state = c ? breaker_state_names[c->state] : (recorded ? recorded : "closed");
		if (c && c->state == BS_CLOSED)
			breaker_window_totals(c, now, &calls, &failures);
		v[0] = CStringGetTextDatum(name);
		v[1] = CStringGetTextDatum(state);
		if (c)
			v[2] = TimestampTzGetDatum(c->since);
		else
			v[2] = SPI_getbinval(tup, desc, 3, &n[2]);
		v[3] = Int64GetDatum(calls);
		v[4] = Int64GetDatum(failures);
		v[5] = Int64GetDatum(c ? c->allowed : 0);
		v[6] = Int64GetDatum(c ? c->rejected : 0);
		v[7] = Int64GetDatum(c ? c->successes : 0);
		v[8] = Int64GetDatum(c ? c->failures : 0);
		v[9] = Int64GetDatum(c ? c->opens : 0);
		v[10] = recorded ? CStringGetTextDatum(recorded) : (Datum) 0;
		n[10] = recorded == NULL;
		v[11] = BoolGetDatum(recorded != NULL && strcmp(recorded, state) == 0);
		for (int k = 0; k < 6; k++)
			v[12 + k] = SPI_getbinval(tup, desc, 4 + k, &n[12 + k]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
	}
	breaker_spi_end(&spi);
	return (Datum) 0;
}

/* metrics(): each loaded breaker's state and how often it opened. */
static void
breaker_write_metrics(MetricWriter *w)
{
	BreakerSlot *copies;
	int			n = 0;
	TimestampTz now;
	char	   *db;

	if (bs == NULL || !harden_shmem_ready)
		return;
	copies = palloc(sizeof(BreakerSlot) * bs->nslots);
	now = GetCurrentTimestamp();
	for (int i = 0; i < bs->nslots; i++)
	{
		BreakerSlot *s = &bs->slots[i];

		SpinLockAcquire(&s->mutex);
		if (s->in_use && s->dboid == MyDatabaseId)
		{
			breaker_advance(s, now);
			memcpy(&copies[n++], s, sizeof(BreakerSlot));
		}
		SpinLockRelease(&s->mutex);
	}
	metric_family(w, "breaker_state", "gauge",
				  "Circuit breaker state: 0 closed, 1 open, 2 half-open.");
	db = get_database_name(MyDatabaseId);
	for (int i = 0; i < n; i++)
		metric_sample(w, (double) copies[i].state, 2, "database", db, "breaker", copies[i].name);
	metric_family(w, "breaker_opens_total", "counter",
				  "Times the circuit breaker opened since it was loaded into shared memory.");
	for (int i = 0; i < n; i++)
		metric_sample(w, (double) copies[i].opens, 2, "database", db, "breaker", copies[i].name);
	pfree(copies);
}
