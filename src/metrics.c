/*
 * metrics.c
 *	  Shared counters and their export as Prometheus text and JSON.
 *
 * Counters are kept per database in a fixed array of slots in shared memory.
 * A backend finds (or claims) its database's slot once, under a lock, and
 * then counts with lock-free atomic adds; latency histograms live in the
 * same slot and are updated the same way.  Databases beyond
 * harden.max_databases share an overflow slot labelled "_other".
 */
#include "postgres.h"

#include <math.h>

#include "commands/dbcommands.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"

#include "pg_harden.h"

#define OVERFLOW_DB_LABEL "_other"
#define MAX_GAUGE_FNS 16
/* Every family's name starts with it (Prometheus: one prefix per exporter). */
#define METRIC_PREFIX "harden_"

typedef struct MetricsShared
{
	LWLock	   *lock;			/* protects slot ownership, not counts */
	int			nslots;			/* slot 0 is the overflow slot */
	HardenCounterSlot slots[FLEXIBLE_ARRAY_MEMBER];
} MetricsShared;

typedef enum MetricFormat
{
	METRIC_PROMETHEUS,
	METRIC_JSON
} MetricFormat;

struct MetricWriter
{
	MetricFormat format;
	StringInfoData buf;
	const char *family;			/* current family name */
	int			nfamilies;
	int			nsamples;		/* samples in the current family */
};

typedef struct CounterInfo
{
	const char *name;
	const char *help;
} CounterInfo;

static const CounterInfo counter_info[HC_NUM_COUNTERS] = {
#define HARDEN_COUNTER(id, name, help) {name, help},
#include "counters.h"
#undef HARDEN_COUNTER
};

static const CounterInfo histogram_info[HH_NUM_HISTOGRAMS] = {
#define HARDEN_HISTOGRAM(id, name, help) {name, help},
#include "histograms.h"
#undef HARDEN_HISTOGRAM
};

/*
 * Upper bounds of the finite buckets, in nanoseconds: 100 us to 10 s, the
 * 1-2.5-5 steps of Prometheus' default buckets extended downwards, since a
 * cached query or a stock take is often well under a millisecond.
 */
static const uint64 hist_bounds_ns[HARDEN_HIST_NBOUNDS] = {
	100000, 250000, 500000,
	1000000, 2500000, 5000000,
	10000000, 25000000, 50000000,
	100000000, 250000000, 500000000,
	UINT64CONST(1000000000), UINT64CONST(2500000000), UINT64CONST(5000000000),
	UINT64CONST(10000000000)
};

int			harden_max_databases = 64;
bool		harden_metrics_histograms = true;
HardenCounterSlot *harden_my_slot = NULL;

static MetricsShared *metrics_shared = NULL;
static harden_gauge_fn gauge_fns[MAX_GAUGE_FNS];
static int	num_gauge_fns = 0;

void
metrics_define_gucs(bool preloading)
{
	DefineCustomBoolVariable("harden.metrics_histograms",
							 "Whether pg_harden times the operations its latency histograms show.",
							 "Off, the histograms keep their values and no clock is read.",
							 &harden_metrics_histograms,
							 true,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);
	/* Postmaster settings can only be defined while preloading. */
	if (!preloading)
		return;
	DefineCustomIntVariable("harden.max_databases",
							"Number of databases that get their own pg_harden counters.",
							"Further databases share counters labelled database=\"" OVERFLOW_DB_LABEL "\".",
							&harden_max_databases,
							64, 1, 4096,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
}

Size
metrics_shmem_size(void)
{
	/* +1 for the overflow slot */
	return add_size(offsetof(MetricsShared, slots),
					mul_size(harden_max_databases + 1, sizeof(HardenCounterSlot)));
}

void
metrics_shmem_startup(void)
{
	bool		found;

	metrics_shared = ShmemInitStruct("pg_harden metrics",
									 metrics_shmem_size(), &found);
	if (found)
		return;

	metrics_shared->lock = &(GetNamedLWLockTranche("pg_harden"))->lock;
	metrics_shared->nslots = harden_max_databases + 1;
	for (int i = 0; i < metrics_shared->nslots; i++)
	{
		metrics_shared->slots[i].dboid = InvalidOid;
		for (int c = 0; c < HC_NUM_COUNTERS; c++)
			pg_atomic_init_u64(&metrics_shared->slots[i].counters[c], 0);
		for (int h = 0; h < HH_NUM_HISTOGRAMS; h++)
		{
			HardenHistSlot *hs = &metrics_shared->slots[i].hist[h];

			for (int b = 0; b <= HARDEN_HIST_NBOUNDS; b++)
				pg_atomic_init_u64(&hs->buckets[b], 0);
			pg_atomic_init_u64(&hs->sum_ns, 0);
		}
	}
}

/*
 * The slot of database dboid in a shared array of count slots, stride bytes
 * apart, each beginning with its owner's Oid (InvalidOid: free).  Without one
 * the first free slot is claimed for dboid; NULL when none is free.  The
 * caller holds whatever lock guards the array.
 */
void *
harden_db_slot(void *base, int count, Size stride, Oid dboid)
{
	char	   *free_slot = NULL;

	for (int i = 0; i < count; i++)
	{
		char	   *s = (char *) base + i * stride;
		Oid			owner = *(Oid *) s;

		if (owner == dboid)
			return s;
		if (free_slot == NULL && owner == InvalidOid)
			free_slot = s;
	}
	if (free_slot != NULL)
		*(Oid *) free_slot = dboid;
	return free_slot;
}

/*
 * Find or claim the slot of the current database.  Processes not connected
 * to a database, and databases beyond harden.max_databases, count into the
 * overflow slot.
 */
void
metrics_attach_slot(void)
{
	HardenCounterSlot *slot;

	StaticAssertStmt(offsetof(HardenCounterSlot, dboid) == 0,
					 "harden_db_slot() needs dboid first");
	if (metrics_shared == NULL)
		return;
	if (!OidIsValid(MyDatabaseId))
	{
		harden_my_slot = &metrics_shared->slots[0];
		return;
	}

	LWLockAcquire(metrics_shared->lock, LW_EXCLUSIVE);
	slot = harden_db_slot(&metrics_shared->slots[1], metrics_shared->nslots - 1,
						  sizeof(HardenCounterSlot), MyDatabaseId);
	LWLockRelease(metrics_shared->lock);

	harden_my_slot = slot != NULL ? slot : &metrics_shared->slots[0];
}

/*
 * Count for another database than the current one (an eviction, say, made by
 * a backend of a different database).  Counts go to the overflow slot when
 * that database has none.
 */
void
harden_count_db(Oid dboid, HardenCounter c, uint64 n)
{
	HardenCounterSlot *slot;

	if (metrics_shared == NULL)
		return;
	slot = &metrics_shared->slots[0];
	if (dboid == MyDatabaseId)
	{
		harden_count(c, n);
		return;
	}
	/* Slot ownership only ever goes from unused to a database. */
	for (int i = 1; i < metrics_shared->nslots; i++)
		if (metrics_shared->slots[i].dboid == dboid)
		{
			slot = &metrics_shared->slots[i];
			break;
		}
	pg_atomic_fetch_add_u64(&slot->counters[c], n);
}

/* The current database's value of a counter (0 without shared memory). */
uint64
harden_counter_value(HardenCounter c)
{
	if (harden_my_slot == NULL)
		metrics_attach_slot();
	if (harden_my_slot == NULL)
		return 0;
	return pg_atomic_read_u64(&harden_my_slot->counters[c]);
}

/* Zero the current database's counters first..last. */
void
harden_counters_reset(HardenCounter first, HardenCounter last)
{
	if (harden_my_slot == NULL)
		metrics_attach_slot();
	if (harden_my_slot == NULL)
		return;
	for (int c = (int) first; c <= (int) last; c++)
		pg_atomic_write_u64(&harden_my_slot->counters[c], 0);
}

/*
 * Record the time since start (harden_timer_start) in histogram h of the
 * current database: two lock-free atomic adds.  A no-op when shared memory
 * is unavailable or harden.metrics_histograms is off.
 */
void
harden_observe(HardenHistogram h, instr_time start)
{
	instr_time	now;
	int64		ns;
	uint64		v;
	int			b;
	HardenHistSlot *hs;

	/* Not started (histograms were off), or switched off since. */
	if (INSTR_TIME_IS_ZERO(start) || !harden_metrics_histograms)
		return;
	if (unlikely(harden_my_slot == NULL))
	{
		if (!harden_shmem_ready)
			return;
		metrics_attach_slot();
		if (harden_my_slot == NULL)
			return;
	}
	INSTR_TIME_SET_CURRENT(now);
	INSTR_TIME_SUBTRACT(now, start);
	ns = (int64) (INSTR_TIME_GET_DOUBLE(now) * 1e9);
	v = ns > 0 ? (uint64) ns : 0;	/* a clock step back counts as 0 */
	/* le is inclusive: the first bucket whose bound is >= v */
	for (b = 0; b < HARDEN_HIST_NBOUNDS && v > hist_bounds_ns[b]; b++)
		;
	hs = &harden_my_slot->hist[h];
	pg_atomic_fetch_add_u64(&hs->buckets[b], 1);
	pg_atomic_fetch_add_u64(&hs->sum_ns, v);
}

/* Zero the current database's histograms. */
static void
harden_histograms_reset(void)
{
	for (int h = 0; h < HH_NUM_HISTOGRAMS; h++)
	{
		HardenHistSlot *hs = &harden_my_slot->hist[h];

		for (int b = 0; b <= HARDEN_HIST_NBOUNDS; b++)
			pg_atomic_write_u64(&hs->buckets[b], 0);
		pg_atomic_write_u64(&hs->sum_ns, 0);
	}
}

void
metrics_register_gauges(harden_gauge_fn fn)
{
	for (int i = 0; i < num_gauge_fns; i++)
		if (gauge_fns[i] == fn)
			return;
	if (num_gauge_fns >= MAX_GAUGE_FNS)
		elog(ERROR, "too many pg_harden gauge providers");
	gauge_fns[num_gauge_fns++] = fn;
}

/* ---- rendering ---- */

static void
append_prom_label_value(StringInfo buf, const char *value)
{
	for (const char *p = value; *p; p++)
	{
		if (*p == '\\' || *p == '"')
			appendStringInfoChar(buf, '\\');
		if (*p == '\n')
			appendStringInfoString(buf, "\\n");
		else
			appendStringInfoChar(buf, *p);
	}
}

static void
append_number(StringInfo buf, double value, MetricFormat format)
{
	if (isnan(value))
		appendStringInfoString(buf, format == METRIC_JSON ? "null" : "NaN");
	else if (isinf(value))
		appendStringInfoString(buf, format == METRIC_JSON ? "null" :
							   (value > 0 ? "+Inf" : "-Inf"));
	else if (value == floor(value) && fabs(value) < 1e15)
		appendStringInfo(buf, "%.0f", value);
	else
		appendStringInfo(buf, "%.15g", value);
}

static void
close_family(MetricWriter *w)
{
	if (w->family != NULL && w->format == METRIC_JSON)
		appendStringInfoString(&w->buf, "]}");
	w->family = NULL;
}

/*
 * Start a metric family.  name excludes the METRIC_PREFIX; type is
 * "counter" or "gauge".
 */
void
metric_family(MetricWriter *w, const char *name, const char *type,
			  const char *help)
{
	close_family(w);
	w->family = name;
	w->nsamples = 0;
	if (w->format == METRIC_PROMETHEUS)
	{
		appendStringInfo(&w->buf, "# HELP " METRIC_PREFIX "%s %s\n", name, help);
		appendStringInfo(&w->buf, "# TYPE " METRIC_PREFIX "%s %s\n", name, type);
		return;
	}
	if (w->nfamilies > 0)
		appendStringInfoChar(&w->buf, ',');
	appendStringInfo(&w->buf, "\"" METRIC_PREFIX "%s\":{\"type\":", name);
	escape_json(&w->buf, type);
	appendStringInfoString(&w->buf, ",\"help\":");
	escape_json(&w->buf, help);
	appendStringInfoString(&w->buf, ",\"samples\":[");
	w->nfamilies++;
}

/*
 * One sample of the current family, named family+suffix (suffix "" for the
 * family's own name).  In JSON a suffixed sample carries its full name.
 */
static void
write_sample(MetricWriter *w, const char *suffix, double value, int nlabels,
			 va_list args)
{
	Assert(w->family != NULL);
	if (w->format == METRIC_PROMETHEUS)
	{
		appendStringInfo(&w->buf, METRIC_PREFIX "%s%s", w->family, suffix);
		for (int i = 0; i < nlabels; i++)
		{
			const char *k = va_arg(args, const char *);
			const char *v = va_arg(args, const char *);

			appendStringInfo(&w->buf, "%s%s=\"", i == 0 ? "{" : ",", k);
			append_prom_label_value(&w->buf, v);
			appendStringInfoChar(&w->buf, '"');
		}
		appendStringInfoString(&w->buf, nlabels > 0 ? "} " : " ");
		append_number(&w->buf, value, w->format);
		appendStringInfoChar(&w->buf, '\n');
	}
	else
	{
		if (w->nsamples > 0)
			appendStringInfoChar(&w->buf, ',');
		appendStringInfoChar(&w->buf, '{');
		if (suffix[0] != '\0')
			appendStringInfo(&w->buf, "\"name\":\"" METRIC_PREFIX "%s%s\",",
							 w->family, suffix);
		appendStringInfoString(&w->buf, "\"labels\":{");
		for (int i = 0; i < nlabels; i++)
		{
			const char *k = va_arg(args, const char *);
			const char *v = va_arg(args, const char *);

			if (i > 0)
				appendStringInfoChar(&w->buf, ',');
			escape_json(&w->buf, k);
			appendStringInfoChar(&w->buf, ':');
			escape_json(&w->buf, v);
		}
		appendStringInfoString(&w->buf, "},\"value\":");
		append_number(&w->buf, value, w->format);
		appendStringInfoChar(&w->buf, '}');
	}
	w->nsamples++;
}

/*
 * Add a sample to the current family: value, then nlabels pairs of
 * (const char *name, const char *value).
 */
void
metric_sample(MetricWriter *w, double value, int nlabels,...)
{
	va_list		args;

	va_start(args, nlabels);
	write_sample(w, "", value, nlabels, args);
	va_end(args);
}

/* Same, for a series named after the family plus suffix ("_bucket"...). */
void
metric_sample_named(MetricWriter *w, const char *suffix, double value,
					int nlabels,...)
{
	va_list		args;

	va_start(args, nlabels);
	write_sample(w, suffix, value, nlabels, args);
	va_end(args);
}

/* Label for a slot, or NULL when the slot is unused or its database is gone. */
static const char *
slot_label(int i)
{
	Oid			dboid = metrics_shared->slots[i].dboid;

	if (i == 0)
		return OVERFLOW_DB_LABEL;
	if (!OidIsValid(dboid))
		return NULL;
	return get_database_name(dboid);
}

/* One database's histogram h: cumulative buckets ending in +Inf, sum, count. */
static void
write_histogram(MetricWriter *w, const HardenHistSlot *hs, const char *db)
{
	uint64		cumulative = 0;
	char		le[32];

	for (int b = 0; b <= HARDEN_HIST_NBOUNDS; b++)
	{
		cumulative += pg_atomic_read_u64(unconstify(pg_atomic_uint64 *, &hs->buckets[b]));
		if (b < HARDEN_HIST_NBOUNDS)
			snprintf(le, sizeof(le), "%.15g", hist_bounds_ns[b] / 1e9);
		else
			strlcpy(le, "+Inf", sizeof(le));
		metric_sample_named(w, "_bucket", (double) cumulative, 2,
							"database", db, "le", le);
	}
	metric_sample_named(w, "_sum",
						pg_atomic_read_u64(unconstify(pg_atomic_uint64 *, &hs->sum_ns)) / 1e9,
						1, "database", db);
	/* The +Inf bucket by construction, so the two always agree. */
	metric_sample_named(w, "_count", (double) cumulative, 1, "database", db);
}

static void
write_histograms(MetricWriter *w, const char **labels)
{
	for (int h = 0; h < HH_NUM_HISTOGRAMS; h++)
	{
		metric_family(w, histogram_info[h].name, "histogram", histogram_info[h].help);
		for (int i = 0; i < metrics_shared->nslots; i++)
		{
			const HardenHistSlot *hs = &metrics_shared->slots[i].hist[h];

			if (labels[i] == NULL)
				continue;
			/* The overflow slot is listed only once something landed in it. */
			if (i == 0 && pg_atomic_read_u64(unconstify(pg_atomic_uint64 *, &hs->sum_ns)) == 0)
			{
				bool		empty = true;

				for (int b = 0; b <= HARDEN_HIST_NBOUNDS && empty; b++)
					empty = pg_atomic_read_u64(unconstify(pg_atomic_uint64 *, &hs->buckets[b])) == 0;
				if (empty)
					continue;
			}
			write_histogram(w, hs, labels[i]);
		}
	}
}

static void
write_counters(MetricWriter *w)
{
	int			nslots = metrics_shared->nslots;
	const char **labels = palloc0(sizeof(char *) * nslots);

	/* Snapshot slot ownership once so every family lists the same labels. */
	LWLockAcquire(metrics_shared->lock, LW_SHARED);
	for (int i = 0; i < nslots; i++)
		labels[i] = slot_label(i);
	LWLockRelease(metrics_shared->lock);

	for (int c = 0; c < HC_NUM_COUNTERS; c++)
	{
		metric_family(w, counter_info[c].name, "counter", counter_info[c].help);
		for (int i = 0; i < nslots; i++)
		{
			uint64		v;

			if (labels[i] == NULL)
				continue;
			v = pg_atomic_read_u64(&metrics_shared->slots[i].counters[c]);
			/* The overflow slot is listed only once something landed in it. */
			if (i == 0 && v == 0)
				continue;
			metric_sample(w, (double) v, 1, "database", labels[i]);
		}
	}
	write_histograms(w, labels);
}

static char *
render_metrics(MetricFormat format)
{
	MetricWriter w = {0};

	w.format = format;
	initStringInfo(&w.buf);
	harden_count(HC_METRICS_SCRAPES, 1);

	if (format == METRIC_JSON)
		appendStringInfo(&w.buf, "{\"version\":\"%s\",\"preloaded\":%s,\"metrics\":{",
						 PG_HARDEN_VERSION, harden_shmem_ready ? "true" : "false");

	metric_family(&w, "info", "gauge", "pg_harden library version (always 1).");
	metric_sample(&w, 1, 1, "version", PG_HARDEN_VERSION);
	metric_family(&w, "preloaded", "gauge",
				  "1 when pg_harden is in shared_preload_libraries, else 0.");
	metric_sample(&w, harden_shmem_ready ? 1 : 0, 0);

	if (harden_shmem_ready && metrics_shared != NULL)
		write_counters(&w);
	for (int i = 0; i < num_gauge_fns; i++)
		gauge_fns[i] (&w);

	close_family(&w);
	if (format == METRIC_JSON)
		appendStringInfoString(&w.buf, "}}");
	return w.buf.data;
}

PG_FUNCTION_INFO_V1(harden_metrics);
PG_FUNCTION_INFO_V1(harden_metrics_json);
PG_FUNCTION_INFO_V1(harden_metrics_reset);

Datum
harden_metrics(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(render_metrics(METRIC_PROMETHEUS)));
}

Datum
harden_metrics_json(PG_FUNCTION_ARGS)
{
	char	   *json = render_metrics(METRIC_JSON);

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}

/* Zero the current database's counters. */
Datum
harden_metrics_reset(PG_FUNCTION_ARGS)
{
	harden_require_shmem("harden.metrics_reset()");
	harden_counters_reset(0, HC_NUM_COUNTERS - 1);
	if (harden_my_slot != NULL)
		harden_histograms_reset();
	PG_RETURN_VOID();
}
