/*
 * analyze_health.c
 *	  Thresholds of the query analysis (GUCs), harden.health_report(), and
 *	  its summary in metrics().
 *
 * The checks themselves are SQL (harden._health_rows() over the analysis
 * views).  health_report() runs them and keeps, per database, the number
 * of findings by check and severity in shared memory; metrics() shows the
 * counts of the last run.  metrics() does not run the checks: a scrape
 * must stay cheap and cannot fail on a catalog query, and a report every
 * scrape interval would load the server for nothing.
 */
#include "postgres.h"

#include <unistd.h>

#include "access/htup_details.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "pg_harden.h"
#include "analyze.h"

#define HEALTH_MAX_ITEMS	40	/* (check, severity) pairs kept per database */
#define HEALTH_NAME_LEN		32
#define HEALTH_SEVERITY_LEN	16

int			analyze_min_rows = 10000;
static int	health_min_size_kb = 10 * 1024;
static double health_bloat_ratio = 0.5;
static int	health_xid_age = 500000000;
static int	health_long_query_ms = 5 * 60 * 1000;
static int	health_slow_query_ms = 1000;
static double health_cache_hit_ratio = 0.95;
static double health_sequence_ratio = 0.75;
int			analyze_snapshot_interval_ms = 0;
static int	analyze_snapshot_retention_s = 30 * 24 * 3600;

typedef struct HealthItem
{
	char		check[HEALTH_NAME_LEN];
	char		severity[HEALTH_SEVERITY_LEN];
	uint32		count;
} HealthItem;

typedef struct HealthSlot
{
	Oid			dboid;			/* InvalidOid: unused */
	TimestampTz at;				/* end of the last run */
	int			nitems;
	HealthItem	items[HEALTH_MAX_ITEMS];
} HealthSlot;

typedef struct HealthShared
{
	slock_t		mutex;
	int			nslots;
	HealthSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} HealthShared;

static HealthShared *health_shared = NULL;

static void health_write_metrics(MetricWriter *w);

void
analyze_define_gucs(bool preloading)
{
	DefineCustomIntVariable("harden.analyze_min_rows",
							"Estimated rows from which query_check() and health_report() treat a table as large.",
							"Sequential scans, nested loops and missing indexes on smaller tables are not reported (LIKE advice on them is info).",
							&analyze_min_rows,
							10000, 0, INT_MAX,
							PGC_USERSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("harden.health_min_size",
							"Smallest bloat or unused index that health_report() reports.",
							NULL,
							&health_min_size_kb,
							10 * 1024, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_KB,
							NULL, NULL, NULL);
	DefineCustomRealVariable("harden.health_bloat_ratio",
							 "Estimated share of wasted space from which health_report() reports a table or index as bloated.",
							 NULL,
							 &health_bloat_ratio,
							 0.5, 0.0, 1.0,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("harden.health_xid_age",
							"Transaction ID age of a table from which health_report() warns (critical from 1.5 billion).",
							NULL,
							&health_xid_age,
							500000000, 0, INT_MAX,
							PGC_USERSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("harden.health_long_query",
							"Age from which a running statement or an open transaction is long-running.",
							"Used by harden.long_running_queries and health_report().",
							&health_long_query_ms,
							5 * 60 * 1000, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("harden.health_slow_query",
							"Mean execution time from which health_report() reports a pg_stat_statements entry.",
							NULL,
							&health_slow_query_ms,
							1000, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomRealVariable("harden.health_cache_hit_ratio",
							 "Buffer cache hit ratio below which health_report() warns.",
							 NULL,
							 &health_cache_hit_ratio,
							 0.95, 0.0, 1.0,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomRealVariable("harden.health_sequence_ratio",
							 "Share of a sequence's usable range from which health_report() warns (critical from 0.95).",
							 "The range ends at the sequence's maximum or at the maximum of the column it feeds, whichever is lower.",
							 &health_sequence_ratio,
							 0.75, 0.0, 1.0,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("harden.analyze_snapshot_interval",
							"How often the background worker runs harden.analyze_snapshot() in each database (0: never).",
							"Snapshots keep query statistics and relation sizes for harden.size_growth and harden.query_slowdown.",
							&analyze_snapshot_interval_ms,
							0, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("harden.analyze_snapshot_retention",
							"How long harden.analyze_snapshot() keeps snapshots.",
							NULL,
							&analyze_snapshot_retention_s,
							30 * 24 * 3600, 60, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
	metrics_register_gauges(health_write_metrics);
}

Size
analyze_shmem_size(void)
{
	/* One slot per database that has counters of its own. */
	return add_size(offsetof(HealthShared, slots),
					mul_size(harden_max_databases, sizeof(HealthSlot)));
}

void
analyze_shmem_startup(void)
{
	bool		found;

	health_shared = ShmemInitStruct("pg_harden health", analyze_shmem_size(), &found);
	if (found)
		return;
	SpinLockInit(&health_shared->mutex);
	health_shared->nslots = harden_max_databases;
	for (int i = 0; i < health_shared->nslots; i++)
		health_shared->slots[i].dboid = InvalidOid;
}

/* ---- counting a run ---- */

static void
count_item(HealthSlot *s, const char *check, const char *severity)
{
	for (int i = 0; i < s->nitems; i++)
		if (strcmp(s->items[i].check, check) == 0 &&
			strcmp(s->items[i].severity, severity) == 0)
		{
			s->items[i].count++;
			return;
		}
	if (s->nitems >= HEALTH_MAX_ITEMS)
		return;
	strlcpy(s->items[s->nitems].check, check, HEALTH_NAME_LEN);
	strlcpy(s->items[s->nitems].severity, severity, HEALTH_SEVERITY_LEN);
	s->items[s->nitems].count = 1;
	s->nitems++;
}

/* Replace this database's counts with those of a finished run. */
static void
publish_run(HealthSlot *run)
{
	HealthSlot *slot;

	StaticAssertStmt(offsetof(HealthSlot, dboid) == 0,
					 "harden_db_slot() needs dboid first");
	if (health_shared == NULL || !harden_shmem_ready)
		return;
	SpinLockAcquire(&health_shared->mutex);
	slot = harden_db_slot(health_shared->slots, health_shared->nslots,
						  sizeof(HealthSlot), MyDatabaseId);
	/* All taken: replace the run reported longest ago (maybe a dropped database's). */
	if (slot == NULL)
	{
		slot = &health_shared->slots[0];
		for (int i = 1; i < health_shared->nslots; i++)
			if (health_shared->slots[i].at < slot->at)
				slot = &health_shared->slots[i];
	}
	memcpy(slot, run, sizeof(HealthSlot));
	SpinLockRelease(&health_shared->mutex);
}

static char *
column_text(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

PG_FUNCTION_INFO_V1(harden_health_report);

/* harden.health_report() → (check, severity, object, detail, suggestion) */
Datum
harden_health_report(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HealthSlot *run = palloc0(sizeof(HealthSlot));
	int			ret;

	InitMaterializedSRF(fcinfo, 0);
	run->dboid = MyDatabaseId;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute("SELECT \"check\", severity, object, detail, suggestion"
					  " FROM harden._health_rows()", true, 0);
	if (ret != SPI_OK_SELECT || SPI_tuptable->tupdesc->natts != 5)
		elog(ERROR, "harden._health_rows() failed: %s", SPI_result_code_string(ret));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum		values[5];
		bool		nulls[5];
		char	   *check = column_text(tup, desc, 1);
		char	   *severity = column_text(tup, desc, 2);

		for (int c = 0; c < 5; c++)
			values[c] = SPI_getbinval(tup, desc, c + 1, &nulls[c]);
		/* The tuplestore copies the values out of SPI's memory. */
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		if (check && severity)
			count_item(run, check, severity);
	}
	SPI_finish();

	run->at = GetCurrentTimestamp();
	publish_run(run);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(harden_machine);

/*
 * harden._machine() → (ram_bytes, cpus): what harden.settings_advice
 * measures the settings against.  0 where the system does not say.
 */
Datum
harden_machine(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	long		pages = sysconf(_SC_PHYS_PAGES);
	long		pagesize = sysconf(_SC_PAGESIZE);
	long		cpus = sysconf(_SC_NPROCESSORS_ONLN);

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "harden._machine() must return a record");
	values[0] = Int64GetDatum(pages > 0 && pagesize > 0 ? (int64) pages * pagesize : 0);
	values[1] = Int32GetDatum(cpus > 0 ? (int32) cpus : 0);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/* ---- metrics ---- */

static void
health_write_metrics(MetricWriter *w)
{
	int			n;
	HealthSlot *copy;
	const char **names;

	if (health_shared == NULL || !harden_shmem_ready)
		return;
	/* Copy under the spinlock; catalog lookups come after. */
	copy = palloc(sizeof(HealthSlot) * health_shared->nslots);
	n = 0;
	SpinLockAcquire(&health_shared->mutex);
	for (int i = 0; i < health_shared->nslots; i++)
		if (OidIsValid(health_shared->slots[i].dboid))
			memcpy(&copy[n++], &health_shared->slots[i], sizeof(HealthSlot));
	SpinLockRelease(&health_shared->mutex);
	/* A dropped database's slot stays, unlabelled and not shown. */
	names = palloc0(sizeof(char *) * Max(n, 1));
	for (int i = 0; i < n; i++)
		names[i] = get_database_name(copy[i].dboid);

	metric_family(w, "health_findings", "gauge",
				  "Findings of the last harden.health_report() run, by check and severity (absent: none).");
	for (int i = 0; i < n; i++)
		for (int j = 0; names[i] && j < copy[i].nitems; j++)
			metric_sample(w, (double) copy[i].items[j].count, 3,
						  "database", names[i],
						  "check", copy[i].items[j].check,
						  "severity", copy[i].items[j].severity);
	metric_family(w, "health_report_timestamp_seconds", "gauge",
				  "End of the last harden.health_report() run (Unix time).");
	for (int i = 0; i < n; i++)
		if (names[i])
			metric_sample(w, (double) timestamptz_to_time_t(copy[i].at), 1,
						  "database", names[i]);
}
