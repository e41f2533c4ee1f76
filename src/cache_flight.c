/*
 * cache_flight.c
 *	  Single-flight: concurrent misses on one key compute it once.
 *
 * A backend that misses registers the query (its stored key and
 * fingerprint) in a small shared table and computes; others that miss the
 * same query find the registration and sleep on its condition variable
 * until it is removed, then learn how it ended (published, not storable,
 * failed).  A registration is removed when the computation ends, on error
 * (the caller's PG_CATCH) and when the backend exits (FATAL,
 * pg_terminate_backend), so nothing stays marked as computing; a crash
 * reinitialises shared memory.
 *
 * The table is scanned under one lock, but only on misses of
 * cache_query() and on leases: hits never touch it.
 *
 * A lease (cache_lease()) is a registration with an expiry that outlives
 * the statement: its holder computes outside the database and presents the
 * lease's token with the value, possibly from another backend (through a
 * pooler).  It ends when the value is set, when it expires (the next
 * registration of the key takes it over), or when its backend exits.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "pg_harden.h"
#include "cache.h"

typedef struct FlightSlot
{
	bool		used;
	Oid			dboid;
	int			pid;			/* the computing backend */
	uint16		keylen;
	uint64		fingerprint;
	uint64		seq;			/* moves on every claim and release */
	CacheFlightOutcome outcome;	/* of the computation that ended at seq */
	TimestampTz expires_at;		/* leases only (0: none) */
	uint64		since;			/* leases: cache_store_inval_seq() when issued */
	ConditionVariable cv;
	char		key[CACHE_MAX_STORED_KEY_LEN];
} FlightSlot;

typedef struct FlightShared
{
	LWLock	   *lock;
	int			nslots;
	FlightSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} FlightShared;

/* Nested cache_query() flights, and the leases a backend holds. */
#define MAX_OWNED	64

static FlightShared *flight_shared = NULL;
static CacheFlightTicket owned[MAX_OWNED];
static int	nowned = 0;
static bool exit_callback_registered = false;

static int
flight_slots(void)
{
	return 2 * MaxBackends;
}

Size
cache_flight_shmem_size(void)
{
	return add_size(offsetof(FlightShared, slots),
					mul_size(flight_slots(), sizeof(FlightSlot)));
}

void
cache_flight_shmem_startup(void)
{
	bool		found;

	flight_shared = ShmemInitStruct("pg_harden cache flights", cache_flight_shmem_size(), &found);
	if (found)
		return;
	flight_shared->lock = &(GetNamedLWLockTranche("pg_harden"))[3].lock;
	flight_shared->nslots = flight_slots();
	for (int i = 0; i < flight_shared->nslots; i++)
	{
		flight_shared->slots[i].used = false;
		flight_shared->slots[i].seq = 0;
		flight_shared->slots[i].expires_at = 0;
		ConditionVariableInit(&flight_shared->slots[i].cv);
	}
}

/* A lease whose expiry passed is over, whoever holds it. */
static inline bool
slot_live(const FlightSlot *s, TimestampTz now)
{
	return s->used && (s->expires_at == 0 || s->expires_at > now);
}

/* End a registration under the lock; the caller broadcasts. */
static void
slot_end(FlightSlot *s, CacheFlightOutcome outcome)
{
	s->used = false;
	s->outcome = outcome;
	s->seq++;
}

/* Forget owned registrations that were ended by someone else. */
static void
prune_owned(void)
{
	for (int i = nowned - 1; i >= 0; i--)
	{
		FlightSlot *s = &flight_shared->slots[owned[i].slot];

		if (!s->used || s->seq != owned[i].seq)
			owned[i] = owned[--nowned];
	}
}

static void
release_owned_at_exit(int code, Datum arg)
{
	while (nowned > 0)
		cache_flight_end(&owned[nowned - 1], CACHE_FLIGHT_FAILED);
}

/*
 * Register a computation of key, or find the one running.  A backend never
 * waits for itself (a query that reads its own key computes again).
 */
CacheFlight
cache_flight_begin(const char *key, int keylen, uint64 fingerprint, CacheFlightTicket *t)
{
	return cache_flight_begin_lease(key, keylen, fingerprint, 0, 0, t);
}

/*
 * The same with an expiry (0: none) and, for a lease, the invalidation
 * sequence number it was issued at.  An expired registration of the key is
 * ended (failed) and taken over.
 */
CacheFlight
cache_flight_begin_lease(const char *key, int keylen, uint64 fingerprint,
						 TimestampTz expires_at, uint64 since, CacheFlightTicket *t)
{
	int			free_slot = -1;
	FlightSlot *s;
	TimestampTz now = expires_at != 0 ? GetCurrentTimestamp() : 0;

	if (flight_shared == NULL)
		return CACHE_FLIGHT_NONE;
	/* Before claiming anything, so an exit can always release it. */
	if (!exit_callback_registered)
	{
		before_shmem_exit(release_owned_at_exit, (Datum) 0);
		exit_callback_registered = true;
	}
	LWLockAcquire(flight_shared->lock, LW_EXCLUSIVE);
	if (nowned >= MAX_OWNED)
		prune_owned();
	for (int i = 0; i < flight_shared->nslots; i++)
	{
		s = &flight_shared->slots[i];
		if (!s->used)
		{
			if (free_slot < 0)
				free_slot = i;
			continue;
		}
		if (s->expires_at != 0 && !slot_live(s, now ? now : (now = GetCurrentTimestamp())))
		{
			/* An abandoned lease: over, for its waiters too. */
			slot_end(s, CACHE_FLIGHT_FAILED);
			ConditionVariableBroadcast(&s->cv);
			if (free_slot < 0)
				free_slot = i;
			continue;
		}
		if (s->dboid != MyDatabaseId || s->fingerprint != fingerprint ||
			s->keylen != keylen || memcmp(s->key, key, keylen) != 0)
			continue;
		t->slot = i;
		t->seq = s->seq;
		LWLockRelease(flight_shared->lock);
		return s->pid == MyProcPid ? CACHE_FLIGHT_NONE : CACHE_FLIGHT_WAIT;
	}
	if (free_slot < 0 || nowned >= MAX_OWNED)
	{
		LWLockRelease(flight_shared->lock);
		return CACHE_FLIGHT_NONE;
	}
	s = &flight_shared->slots[free_slot];
	s->used = true;
	s->dboid = MyDatabaseId;
	s->pid = MyProcPid;
	s->keylen = (uint16) keylen;
	s->fingerprint = fingerprint;
	memcpy(s->key, key, keylen);
	s->expires_at = expires_at;
	s->since = since;
	s->seq++;
	t->slot = free_slot;
	t->seq = s->seq;
	owned[nowned++] = *t;
	LWLockRelease(flight_shared->lock);
	return CACHE_FLIGHT_LEAD;
}

/*
 * Whether the computation behind t still runs; if not, how it ended (known
 * only if the slot was not claimed again since: else treat it as failed,
 * so the waiter tries to compute rather than trusting a stranger's end).
 */
static bool
still_computing(const CacheFlightTicket *t, CacheFlightOutcome *outcome)
{
	FlightSlot *s = &flight_shared->slots[t->slot];
	bool		running;

	LWLockAcquire(flight_shared->lock, LW_SHARED);
	running = s->used && s->seq == t->seq &&
		(s->expires_at == 0 || slot_live(s, GetCurrentTimestamp()));
	if (!running)
		*outcome = (s->seq == t->seq + 1) ? s->outcome : CACHE_FLIGHT_FAILED;
	LWLockRelease(flight_shared->lock);
	return running;
}

/*
 * Sleep until the computation behind t ends and return how it ended, or
 * CACHE_FLIGHT_TIMED_OUT once deadline passed.  Interrupts are served while
 * waiting.
 */
CacheFlightOutcome
cache_flight_wait(const CacheFlightTicket *t, TimestampTz deadline)
{
	FlightSlot *s = &flight_shared->slots[t->slot];
	CacheFlightOutcome outcome = CACHE_FLIGHT_FAILED;

	ConditionVariablePrepareToSleep(&s->cv);
	while (still_computing(t, &outcome))
	{
		long		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);

		if (ms <= 0)
		{
			outcome = CACHE_FLIGHT_TIMED_OUT;
			break;
		}
		(void) ConditionVariableTimedSleep(&s->cv, ms, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	return outcome;
}

/* End our computation behind t, saying how, and wake its waiters. */
void
cache_flight_end(const CacheFlightTicket *t, CacheFlightOutcome outcome)
{
	FlightSlot *s = &flight_shared->slots[t->slot];
	bool		ours;

	LWLockAcquire(flight_shared->lock, LW_EXCLUSIVE);
	ours = s->used && s->pid == MyProcPid && s->seq == t->seq;
	if (ours)
		slot_end(s, outcome);
	LWLockRelease(flight_shared->lock);

	for (int i = 0; i < nowned; i++)
	{
		if (owned[i].slot == t->slot && owned[i].seq == t->seq)
		{
			owned[i] = owned[--nowned];
			break;
		}
	}
	if (ours)
		ConditionVariableBroadcast(&s->cv);
}

/*
 * A lease's token: its slot and the slot's sequence number, positive in a
 * bigint.  It identifies the lease from any backend.
 */
int64
cache_flight_token(const CacheFlightTicket *t)
{
	return ((int64) t->slot << 40) | (int64) (t->seq & ((UINT64CONST(1) << 40) - 1));
}

static inline bool
lease_matches(const FlightSlot *s, int64 token, const char *key, int keylen,
			  uint64 fingerprint)
{
	return slot_live(s, GetCurrentTimestamp()) && s->expires_at != 0 &&
		(int64) (s->seq & ((UINT64CONST(1) << 40) - 1)) == (token & ((INT64CONST(1) << 40) - 1)) &&
		s->dboid == MyDatabaseId && s->fingerprint == fingerprint &&
		s->keylen == keylen && memcmp(s->key, key, keylen) == 0;
}

static FlightSlot *
token_slot(int64 token)
{
	if (flight_shared == NULL || token <= 0 || (token >> 40) >= flight_shared->nslots)
		return NULL;
	return &flight_shared->slots[token >> 40];
}

/*
 * Whether the lease behind token is live and for key (not expired, ended,
 * of another key, or made up); *since gets the invalidation sequence
 * number it was issued at.
 */
bool
cache_flight_lease_live(int64 token, const char *key, int keylen, uint64 fingerprint,
						uint64 *since)
{
	FlightSlot *s = token_slot(token);
	bool		live;

	if (s == NULL)
		return false;
	LWLockAcquire(flight_shared->lock, LW_SHARED);
	live = lease_matches(s, token, key, keylen, fingerprint);
	if (live)
		*since = s->since;
	LWLockRelease(flight_shared->lock);
	return live;
}

/* End the lease behind token, if still live, saying how; its waiters wake. */
void
cache_flight_end_lease(int64 token, const char *key, int keylen, uint64 fingerprint,
					   CacheFlightOutcome outcome)
{
	FlightSlot *s = token_slot(token);
	bool		live;

	if (s == NULL)
		return;
	LWLockAcquire(flight_shared->lock, LW_EXCLUSIVE);
	live = lease_matches(s, token, key, keylen, fingerprint);
	if (live)
		slot_end(s, outcome);
	LWLockRelease(flight_shared->lock);
	if (live)
		ConditionVariableBroadcast(&s->cv);
}
