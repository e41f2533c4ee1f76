/*
 * log_values.c
 *	  harden.log_values: what pg_harden's messages and the statements it
 *	  runs for a caller may show of the caller's data.
 *
 *	  on	everything (PostgreSQL's own behaviour), except the statements
 *			of secure cache entries
 *	  keys	cache keys, table, machine and state names; no statement text,
 *			literals, parameters or row values (row keys are redacted)
 *	  off	as keys, and no cache keys in messages that use harden_log_key
 *
 * A statement run through SPI adds its text to every message raised while
 * it runs (the "SQL statement" context line, or the "QUERY" of a syntax
 * error).  A redaction scope strips it: errors are caught, cleaned and
 * re-thrown, so the client gets the same error as the log, with its
 * SQLSTATE, message, detail and hint; notices and warnings that go to the
 * log are cleaned in emit_log_hook.  The STATEMENT line, which holds the
 * caller's text, is left out too.
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/elog.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "pg_harden.h"

int			harden_log_values = HARDEN_LOG_VALUES_ON;

static const struct config_enum_entry log_values_options[] = {
	{"on", HARDEN_LOG_VALUES_ON, false},
	{"keys", HARDEN_LOG_VALUES_KEYS, false},
	{"off", HARDEN_LOG_VALUES_OFF, false},
	{"true", HARDEN_LOG_VALUES_ON, true},
	{"false", HARDEN_LOG_VALUES_OFF, true},
	{NULL, 0, false}
};

/* The redaction scopes active in this backend, innermost first. */
static HardenRedact *redactions = NULL;
static emit_log_hook_type prev_emit_log_hook = NULL;

static void redact_emit_log(ErrorData *edata);

void
harden_log_define_gucs(bool preloading)
{
	DefineCustomEnumVariable("harden.log_values",
							 "What of the caller's data pg_harden's messages may show: on, keys or off.",
							 "keys: cache keys and object names, but no statement text, literals, parameters "
							 "or row values; off: as keys, and no cache keys where messages support it.  "
							 "Statements of secure cache entries are never shown.",
							 &harden_log_values,
							 HARDEN_LOG_VALUES_ON, log_values_options,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = redact_emit_log;
}

/* A cache key for a message: redacted when harden.log_values is off. */
const char *
harden_log_key(const char *key)
{
	return harden_log_shows_keys() ? key : HARDEN_KEY_REDACTED;
}

/*
 * Drop the context lines that show the statement (it may span lines), and
 * say instead that a statement was left out.
 */
static char *
strip_context(const char *context, const HardenRedact *r)
{
	StringInfoData buf;
	const char *rest = context;
	const char *hit;
	size_t		sqllen = strlen(r->sql);
	bool		dropped = false;

	initStringInfo(&buf);
	while ((hit = strstr(rest, r->sql)) != NULL)
	{
		const char *from = hit;
		const char *to = strchr(hit + sqllen, '\n');

		while (from > rest && from[-1] != '\n')
			from--;
		appendBinaryStringInfo(&buf, rest, from - rest);
		if (!dropped)
			appendStringInfo(&buf, "%s statement (text not shown: %s)%s", r->what,
							 r->secure ? "secure entry" : "harden.log_values", to ? "\n" : "");
		dropped = true;
		rest = to ? to + 1 : hit + strlen(hit);
	}
	appendStringInfoString(&buf, rest);
	/* No empty last line when the statement was the last. */
	if (buf.len > 0 && buf.data[buf.len - 1] == '\n')
		buf.data[--buf.len] = '\0';
	return buf.data;
}

static void
redact_edata(ErrorData *edata, const HardenRedact *r)
{
	if (r->sql[0] == '\0')
		return;
	if (edata->internalquery && strstr(edata->internalquery, r->sql) != NULL)
	{
		edata->internalquery = NULL;
		edata->internalpos = 0;
		/* The position was into the statement: it says nothing without it. */
		edata->cursorpos = 0;
	}
	if (edata->context)
		edata->context = strip_context(edata->context, r);
	edata->hide_stmt = true;
}

void
harden_redact_begin(HardenRedact *r, const char *sql, const char *what, bool secure)
{
	r->sql = sql;
	r->what = what;
	r->secure = secure;
	r->active = secure || !harden_log_shows_values();
	r->cxt = CurrentMemoryContext;
	r->next = redactions;
	if (r->active)
		redactions = r;
}

void
harden_redact_end(HardenRedact *r)
{
	if (r->active)
		redactions = r->next;
}

/*
 * In a PG_CATCH block of the scope: end it and re-throw the error without
 * the statement.
 */
void
harden_redact_rethrow(HardenRedact *r)
{
	ErrorData  *edata;

	harden_redact_end(r);
	if (!r->active)
		PG_RE_THROW();
	MemoryContextSwitchTo(r->cxt);
	edata = CopyErrorData();
	FlushErrorState();
	redact_edata(edata, r);
	ReThrowError(edata);
}

/*
 * Messages below ERROR raised inside a scope (a NOTICE of a function the
 * statement calls) are reported at once: clean them here.  pg_harden's own
 * errors (class PH) already leave row keys out unless harden.log_values is
 * on; then the STATEMENT line, which has the caller's literals, goes too.
 * Runs in ErrorContext, where the cleaned strings are allocated.
 */
static void
redact_emit_log(ErrorData *edata)
{
	if (redactions != NULL && edata->elevel < ERROR)
		for (HardenRedact *r = redactions; r != NULL; r = r->next)
			redact_edata(edata, r);
	if (!harden_log_shows_values() &&
		ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_TO_CATEGORY(ERRCODE_HARDEN_NOT_PRELOADED))
		edata->hide_stmt = true;
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}
