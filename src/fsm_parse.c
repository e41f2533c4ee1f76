/*
 * fsm_parse.c
 *	  The state-machine rule language.
 *
 *	  rules      := [statement] { ";" [statement] }
 *	  statement  := states "->" states { "->" states } { modifier }
 *	  states     := name { "," name }
 *	  modifier   := "on" name | "after" duration
 *	  duration   := number unit { number unit }
 *	  name       := letter { letter | digit | "_" } | '"' any text '"'
 *
 * Every pair of adjacent state lists produces one transition per (from, to)
 * combination; a statement's modifiers apply to all of them.  "--" starts a
 * comment that runs to the end of the line.  Every error names the
 * character position and the text at the offending token.
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/hsearch.h"

#include "pg_harden.h"
#include "fsm.h"

typedef enum TokKind
{
	TOK_END,
	TOK_NAME,					/* bare identifier */
	TOK_QUOTED,					/* "quoted name" */
	TOK_NUMBER,
	TOK_ARROW,
	TOK_COMMA,
	TOK_SEMI
} TokKind;

typedef struct Token
{
	TokKind		kind;
	int			pos;			/* byte offset in the input */
	char	   *text;			/* name (unquoted), or number digits */
} Token;

typedef struct Parser
{
	const char *machine;
	const char *what;			/* "rules" or "initial states" */
	const char *input;
	int			len;
	int			pos;
	Token		tok;
	FsmDef	   *def;
	int			maxstates;
	int			maxtrans;
	HTAB	   *names;			/* state name -> number */
	int		   *last_from;		/* per state: its latest transition, or -1 */
	int		   *prev_from;		/* per transition: the previous one from its state */
} Parser;

typedef struct StateName
{
	char		name[NAMEDATALEN];
	int			num;
} StateName;

static inline bool
ident_start(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static inline bool
ident_char(unsigned char c)
{
	return ident_start(c) || (c >= '0' && c <= '9');
}

/* Up to 30 characters of input from pos, for an error's DETAIL. */
static char *
near_text(Parser *p, int pos)
{
	int			n = 0;
	int			i = pos;

	while (i < p->len && n < 30 && p->input[i] != '\n' && p->input[i] != '\r')
	{
		i += pg_mblen(p->input + i);
		n++;
	}
	if (i > p->len)
		i = p->len;
	return psprintf("%.*s%s", i - pos, p->input + pos, i < p->len ? "..." : "");
}

static void
parse_error_at(Parser *p, int pos, const char *msg)
{
	/* Character (not byte) position, 1-based, as PostgreSQL reports them. */
	int			charpos = pg_mbstrlen_with_len(p->input, Min(pos, p->len)) + 1;

	if (pos >= p->len)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_RULES),
				 errmsg("invalid %s for state machine \"%s\": %s", p->what, p->machine, msg),
				 errdetail("At the end of the %s (character %d).", p->what, charpos)));
	ereport(ERROR,
			(errcode(ERRCODE_HARDEN_FSM_INVALID_RULES),
			 errmsg("invalid %s for state machine \"%s\": %s", p->what, p->machine, msg),
			 errdetail("At character %d: \"%s\".", charpos, near_text(p, pos))));
}

static const char *
tok_desc(const Token *t)
{
	switch (t->kind)
	{
		case TOK_END:
			return "the end of the input";
		case TOK_NAME:
		case TOK_NUMBER:
			return psprintf("\"%s\"", t->text);
		case TOK_QUOTED:
			return psprintf("\"\"%s\"\"", t->text);
		case TOK_ARROW:
			return "\"->\"";
		case TOK_COMMA:
			return "\",\"";
		case TOK_SEMI:
			return "\";\"";
	}
	return "?";
}

static void
skip_space(Parser *p)
{
	while (p->pos < p->len)
	{
		char		c = p->input[p->pos];

		if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v')
			p->pos++;
		else if (c == '-' && p->pos + 1 < p->len && p->input[p->pos + 1] == '-')
		{
			while (p->pos < p->len && p->input[p->pos] != '\n')
				p->pos++;
		}
		else
			break;
	}
}

static void
next_token(Parser *p)
{
	Token	   *t = &p->tok;
	unsigned char c;

	skip_space(p);
	t->pos = p->pos;
	t->text = NULL;
	if (p->pos >= p->len)
	{
		t->kind = TOK_END;
		return;
	}
	c = (unsigned char) p->input[p->pos];
	if (c == '-' && p->pos + 1 < p->len && p->input[p->pos + 1] == '>')
	{
		t->kind = TOK_ARROW;
		p->pos += 2;
	}
	else if (c == ',')
	{
		t->kind = TOK_COMMA;
		p->pos++;
	}
	else if (c == ';')
	{
		t->kind = TOK_SEMI;
		p->pos++;
	}
	else if (c >= '0' && c <= '9')
	{
		int			start = p->pos;

		while (p->pos < p->len && p->input[p->pos] >= '0' && p->input[p->pos] <= '9')
			p->pos++;
		t->kind = TOK_NUMBER;
		t->text = pnstrdup(p->input + start, p->pos - start);
	}
	else if (ident_start(c))
	{
		int			start = p->pos;

		while (p->pos < p->len && ident_char((unsigned char) p->input[p->pos]))
			p->pos++;
		t->kind = TOK_NAME;
		t->text = pnstrdup(p->input + start, p->pos - start);
	}
	else if (c == '"')
	{
		StringInfoData buf;

		initStringInfo(&buf);
		p->pos++;
		for (;;)
		{
			if (p->pos >= p->len)
				parse_error_at(p, t->pos, "unterminated quoted name");
			if (p->input[p->pos] == '"')
			{
				if (p->pos + 1 < p->len && p->input[p->pos + 1] == '"')
				{
					appendStringInfoChar(&buf, '"');
					p->pos += 2;
					continue;
				}
				p->pos++;
				break;
			}
			appendStringInfoChar(&buf, p->input[p->pos]);
			p->pos++;
		}
		t->kind = TOK_QUOTED;
		t->text = buf.data;
	}
	else
		parse_error_at(p, p->pos, psprintf("unexpected character \"%.*s\"",
										   pg_mblen(p->input + p->pos), p->input + p->pos));
}

static bool
is_keyword(const Token *t, const char *kw)
{
	return t->kind == TOK_NAME && pg_strcasecmp(t->text, kw) == 0;
}

/* The current token as a state or event name; advances past it. */
static char *
expect_name(Parser *p, const char *what)
{
	char	   *name;

	if (p->tok.kind != TOK_NAME && p->tok.kind != TOK_QUOTED)
		parse_error_at(p, p->tok.pos, psprintf("expected %s, found %s", what, tok_desc(&p->tok)));
	name = p->tok.text;
	if (name[0] == '\0')
		parse_error_at(p, p->tok.pos, psprintf("%s must not be empty", what));
	if (strlen(name) > FSM_MAX_NAME)
		parse_error_at(p, p->tok.pos, psprintf("%s is longer than %d bytes", what, FSM_MAX_NAME));
	next_token(p);
	return name;
}

static int
state_number(Parser *p, const char *name, int pos, bool create)
{
	FsmDef	   *d = p->def;
	char		key[NAMEDATALEN];
	StateName  *e;

	/* expect_name bounds names to FSM_MAX_NAME bytes. */
	memset(key, 0, sizeof(key));
	strlcpy(key, name, NAMEDATALEN);
	e = hash_search(p->names, key, HASH_FIND, NULL);
	if (e != NULL)
		return e->num;
	if (!create)
		return -1;
	if (d->nstates >= FSM_MAX_STATES)
		parse_error_at(p, pos, psprintf("a machine may have at most %d states", FSM_MAX_STATES));
	if (d->nstates >= p->maxstates)
	{
		p->maxstates *= 2;
		d->states = repalloc(d->states, sizeof(char *) * p->maxstates);
		p->last_from = repalloc(p->last_from, sizeof(int) * p->maxstates);
	}
	d->states[d->nstates] = pstrdup(name);
	p->last_from[d->nstates] = -1;
	e = hash_search(p->names, key, HASH_ENTER, NULL);
	e->num = d->nstates;
	return d->nstates++;
}

/* states := name { "," name }; returns state numbers, count in *n. */
static int *
parse_states(Parser *p, int *n, int **positions)
{
	int			max = 4;
	int		   *nums = palloc(sizeof(int) * max);
	int		   *pos = palloc(sizeof(int) * max);

	*n = 0;
	for (;;)
	{
		int			at = p->tok.pos;
		char	   *name;

		CHECK_FOR_INTERRUPTS();
		name = expect_name(p, "a state name");
		if (*n >= max)
		{
			max *= 2;
			nums = repalloc(nums, sizeof(int) * max);
			pos = repalloc(pos, sizeof(int) * max);
		}
		pos[*n] = at;
		nums[(*n)++] = state_number(p, name, at, true);
		if (p->tok.kind != TOK_COMMA)
			break;
		next_token(p);
	}
	*positions = pos;
	return nums;
}

/* duration := number unit { number unit }: days and microseconds. */
static void
parse_duration(Parser *p, Interval *iv)
{
	int64		days = 0;
	int64		usecs = 0;
	int			start = p->tok.pos;

	if (p->tok.kind != TOK_NUMBER)
		parse_error_at(p, p->tok.pos,
					   psprintf("expected a duration such as \"30 seconds\", found %s", tok_desc(&p->tok)));
	while (p->tok.kind == TOK_NUMBER)
	{
		int			numpos = p->tok.pos;
		int64		n;
		const char *u;

		if (strlen(p->tok.text) > 9)
			parse_error_at(p, numpos, "duration is too long");
		n = strtol(p->tok.text, NULL, 10);
		next_token(p);
		if (p->tok.kind != TOK_NAME)
			parse_error_at(p, p->tok.pos,
						   psprintf("expected a time unit (seconds, minutes, hours, days, weeks), found %s",
									tok_desc(&p->tok)));
		u = p->tok.text;
		if (!pg_strcasecmp(u, "s") || !pg_strcasecmp(u, "sec") || !pg_strcasecmp(u, "secs") ||
			!pg_strcasecmp(u, "second") || !pg_strcasecmp(u, "seconds"))
			usecs += n * USECS_PER_SEC;
		else if (!pg_strcasecmp(u, "m") || !pg_strcasecmp(u, "min") || !pg_strcasecmp(u, "mins") ||
				 !pg_strcasecmp(u, "minute") || !pg_strcasecmp(u, "minutes"))
			usecs += n * USECS_PER_MINUTE;
		else if (!pg_strcasecmp(u, "h") || !pg_strcasecmp(u, "hr") || !pg_strcasecmp(u, "hrs") ||
				 !pg_strcasecmp(u, "hour") || !pg_strcasecmp(u, "hours"))
			usecs += n * USECS_PER_HOUR;
		else if (!pg_strcasecmp(u, "d") || !pg_strcasecmp(u, "day") || !pg_strcasecmp(u, "days"))
			days += n;
		else if (!pg_strcasecmp(u, "w") || !pg_strcasecmp(u, "week") || !pg_strcasecmp(u, "weeks"))
			days += 7 * n;
		else
			parse_error_at(p, p->tok.pos,
						   psprintf("unknown time unit \"%s\" (use seconds, minutes, hours, days or weeks)", u));
		/* Each term is below 10^9 weeks or hours: no overflow before this check. */
		if (days > 36500 || usecs > INT64CONST(36500) * USECS_PER_DAY)
			parse_error_at(p, start, "duration is longer than 100 years");
		next_token(p);
	}
	if (days == 0 && usecs == 0)
		parse_error_at(p, start, "duration must be positive");
	iv->month = 0;
	iv->day = (int32) days;
	iv->time = usecs;
}

static void
add_transition(Parser *p, int from, int to, const char *event, bool timed,
			   const Interval *after, int pos, int modpos)
{
	FsmDef	   *d = p->def;
	FsmDefTransition *t;

	CHECK_FOR_INTERRUPTS();
	if (from == to)
		parse_error_at(p, pos, psprintf("state \"%s\" cannot move to itself", d->states[from]));
	/* Only the transitions from the same state can conflict. */
	for (int i = p->last_from[from]; i >= 0; i = p->prev_from[i])
	{
		FsmDefTransition *o = &d->trans[i];

		if (o->to == to)
			parse_error_at(p, pos, psprintf("duplicate transition \"%s\" -> \"%s\"",
											d->states[from], d->states[to]));
		if (event && o->event && strcmp(o->event, event) == 0)
			parse_error_at(p, modpos, psprintf("event \"%s\" leads from \"%s\" to both \"%s\" and \"%s\"",
											   event, d->states[from], d->states[o->to], d->states[to]));
		if (timed && o->timed)
			parse_error_at(p, modpos, psprintf("state \"%s\" has more than one timed exit",
											   d->states[from]));
	}
	if (d->ntrans >= FSM_MAX_TRANSITIONS)
		parse_error_at(p, pos, psprintf("a machine may have at most %d transitions", FSM_MAX_TRANSITIONS));
	if (d->ntrans >= p->maxtrans)
	{
		p->maxtrans *= 2;
		d->trans = repalloc(d->trans, sizeof(FsmDefTransition) * p->maxtrans);
		p->prev_from = repalloc(p->prev_from, sizeof(int) * p->maxtrans);
	}
	p->prev_from[d->ntrans] = p->last_from[from];
	p->last_from[from] = d->ntrans;
	t = &d->trans[d->ntrans++];
	t->from = from;
	t->to = to;
	t->event = event ? pstrdup(event) : NULL;
	t->timed = timed;
	if (timed)
		t->after = *after;
	else
		memset(&t->after, 0, sizeof(Interval));
}

static void
parse_statement(Parser *p)
{
	int			maxlists = 4;
	int			nlists = 0;
	int		  **lists = palloc(sizeof(int *) * maxlists);
	int		  **poss = palloc(sizeof(int *) * maxlists);
	int		   *counts = palloc(sizeof(int) * maxlists);
	char	   *event = NULL;
	bool		timed = false;
	Interval	after;
	int			modpos = -1;

	lists[0] = parse_states(p, &counts[0], &poss[0]);
	nlists = 1;
	if (p->tok.kind != TOK_ARROW)
		parse_error_at(p, p->tok.pos, psprintf("expected \"->\" or \",\", found %s", tok_desc(&p->tok)));
	while (p->tok.kind == TOK_ARROW)
	{
		next_token(p);
		if (nlists >= maxlists)
		{
			maxlists *= 2;
			lists = repalloc(lists, sizeof(int *) * maxlists);
			poss = repalloc(poss, sizeof(int *) * maxlists);
			counts = repalloc(counts, sizeof(int) * maxlists);
		}
		lists[nlists] = parse_states(p, &counts[nlists], &poss[nlists]);
		nlists++;
	}
	for (;;)
	{
		if (is_keyword(&p->tok, "on"))
		{
			if (event)
				parse_error_at(p, p->tok.pos, "a statement may name only one event");
			if (modpos < 0)
				modpos = p->tok.pos;
			next_token(p);
			event = expect_name(p, "an event name");
		}
		else if (is_keyword(&p->tok, "after"))
		{
			if (timed)
				parse_error_at(p, p->tok.pos, "a statement may have only one \"after\"");
			if (modpos < 0)
				modpos = p->tok.pos;
			next_token(p);
			parse_duration(p, &after);
			timed = true;
		}
		else
			break;
	}
	if (p->tok.kind != TOK_SEMI && p->tok.kind != TOK_END)
		parse_error_at(p, p->tok.pos,
					   psprintf("expected \";\", \",\", \"->\", \"on\" or \"after\", found %s",
								tok_desc(&p->tok)));

	for (int l = 0; l + 1 < nlists; l++)
		for (int i = 0; i < counts[l]; i++)
			for (int j = 0; j < counts[l + 1]; j++)
				add_transition(p, lists[l][i], lists[l + 1][j], event, timed, &after,
							   poss[l + 1][j], modpos >= 0 ? modpos : poss[l + 1][j]);
}

static void
parser_init(Parser *p, const char *machine, const char *what, const char *input)
{
	p->machine = machine;
	p->what = what;
	p->input = input;
	p->len = strlen(input);
	p->pos = 0;
}

/* A machine name: 1..48 bytes of [A-Za-z0-9_], not starting with a digit. */
void
fsm_check_machine_name(const char *name)
{
	size_t		len = strlen(name);
	bool		ok = len >= 1 && len <= FSM_MAX_MACHINE_NAME && !(name[0] >= '0' && name[0] <= '9');

	for (size_t i = 0; ok && i < len; i++)
	{
		unsigned char c = (unsigned char) name[i];

		ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_RULES),
				 errmsg("invalid state machine name \"%s\"", len > 64 ? "(too long)" : name),
				 errdetail("A machine name is 1 to %d characters of A-Z, a-z, 0-9 and \"_\", not starting with a digit.",
						   FSM_MAX_MACHINE_NAME)));
}

/*
 * Parse a definition.  initial is a comma-separated list of states, or NULL
 * for the first state the rules name.
 */
FsmDef *
fsm_parse(const char *machine, const char *rules, const char *initial)
{
	Parser		p;
	FsmDef	   *d = palloc0(sizeof(FsmDef));
	HASHCTL		ctl;

	if (strlen(rules) > FSM_MAX_RULES_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_RULES),
				 errmsg("rules for state machine \"%s\" are too long", machine),
				 errdetail("The rules are %zu bytes; the limit is %d.", strlen(rules), FSM_MAX_RULES_LEN)));
	if (initial != NULL && strlen(initial) > FSM_MAX_RULES_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_FSM_INVALID_RULES),
				 errmsg("initial states for state machine \"%s\" are too long", machine),
				 errdetail("They are %zu bytes; the limit is %d.", strlen(initial), FSM_MAX_RULES_LEN)));
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN;
	ctl.entrysize = sizeof(StateName);
	ctl.hcxt = CurrentMemoryContext;
	p.names = hash_create("pg_harden fsm parser states", 64, &ctl,
						  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	parser_init(&p, machine, "rules", rules);
	p.def = d;
	p.maxstates = 16;
	p.maxtrans = 16;
	d->states = palloc(sizeof(char *) * p.maxstates);
	d->trans = palloc(sizeof(FsmDefTransition) * p.maxtrans);
	p.last_from = palloc(sizeof(int) * p.maxstates);
	p.prev_from = palloc(sizeof(int) * p.maxtrans);

	next_token(&p);
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (p.tok.kind == TOK_END)
			break;
		if (p.tok.kind == TOK_SEMI)
		{
			next_token(&p);
			continue;
		}
		parse_statement(&p);
	}
	if (d->ntrans == 0)
		parse_error_at(&p, p.len, "the rules define no transition (write them as \"a -> b; b -> c\")");

	d->initial = palloc0(sizeof(bool) * d->nstates);
	if (initial == NULL)
	{
		d->initial[0] = true;
		return d;
	}

	parser_init(&p, machine, "initial states", initial);
	next_token(&p);
	for (;;)
	{
		int			at = p.tok.pos;
		char	   *name;
		int			s;

		CHECK_FOR_INTERRUPTS();
		name = expect_name(&p, "a state name");
		s = state_number(&p, name, at, false);

		/* The rules' parser state is done; p.def only serves lookups here. */
		if (s < 0)
			parse_error_at(&p, at, psprintf("\"%s\" is not a state of the rules", name));
		d->initial[s] = true;
		if (p.tok.kind == TOK_END)
			break;
		if (p.tok.kind != TOK_COMMA)
			parse_error_at(&p, p.tok.pos, psprintf("expected \",\", found %s", tok_desc(&p.tok)));
		next_token(&p);
	}
	return d;
}
