/*
 * redact.c
 *	  harden.redact(): personal data masked for audit exports.
 *
 * Text: e-mail addresses, card numbers (13 to 19 digits passing the Luhn
 * check), national ids (US SSN, UK National Insurance number), phone
 * numbers, and the value after a sensitive name ("password=...",
 * "token: ...").  jsonb: the value of every sensitive key, whatever its
 * type, and the same text masking in every string, key and integer.
 * Sensitive names: harden.redact_keys, or the built-in list.
 *
 * One left-to-right pass with bounded look-ahead, so the cost is linear in
 * the input; jsonb is walked with its iterator (no recursion).
 */
#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "pg_harden.h"

#define REDACTED		"[redacted]"
#define MASK_EMAIL		"[email]"
#define MASK_CARD		"[card]"
#define MASK_ID			"[national id]"
#define MASK_PHONE		"[phone]"

#define NUMBER_MAX_CHARS	40	/* longer digit runs are no phone or card */
#define KEY_MAX_CHARS		64	/* longer words are no sensitive name */
#define CONTAINS_MIN_LEN	5	/* names this long also match inside a key */

static char *redact_keys_setting = NULL;

/* The parsed harden.redact_keys, kept until the setting changes. */
static char *parsed_from = NULL;
static List *sensitive_names = NIL;

/* The names masked by default, and what "default" in the setting stands for. */
static const char *const builtin_names[] = {
	"password", "passwd", "secret", "token", "api_key", "access_key", "private_key",
	"authorization", "cookie", "cvv", "cvc", "pin", "ssn", "card_number"
};

void
redact_define_gucs(bool preloading)
{
	DefineCustomStringVariable("harden.redact_keys",
							   "Names whose values harden.redact() masks (empty: the built-in list).",
							   "Comma-separated; \"default\" stands for the built-in list.  Compared "
							   "case-insensitively ignoring \"_\", \"-\", \".\" and spaces; names of 5 or "
							   "more characters also match inside a longer name.",
							   &redact_keys_setting,
							   "",
							   PGC_USERSET, GUC_LIST_INPUT,
							   NULL, NULL, NULL);
}

/* Lowercase, without the separators that vary between naming styles. */
static int
normalize_name(const char *s, int len, char *out, int outsize)
{
	int			n = 0;

	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '_' || c == '-' || c == '.' || c == ' ' || c == '\t')
			continue;
		if (n >= outsize - 1)
			return -1;
		out[n++] = (char) pg_ascii_tolower(c);
	}
	out[n] = '\0';
	return n;
}

static void
add_name(const char *p, int len)
{
	char		buf[KEY_MAX_CHARS + 1];

	if (normalize_name(p, len, buf, sizeof(buf)) <= 0)
		return;
	if (strcmp(buf, "default") == 0)
	{
		for (int i = 0; i < (int) lengthof(builtin_names); i++)
			add_name(builtin_names[i], strlen(builtin_names[i]));
		return;
	}
	sensitive_names = lappend(sensitive_names, pstrdup(buf));
}

static void
load_sensitive_names(void)
{
	const char *setting = redact_keys_setting ? redact_keys_setting : "";
	MemoryContext old;
	const char *p;

	if (parsed_from && strcmp(parsed_from, setting) == 0)
		return;
	old = MemoryContextSwitchTo(TopMemoryContext);
	list_free_deep(sensitive_names);
	sensitive_names = NIL;
	if (parsed_from)
		pfree(parsed_from);
	parsed_from = pstrdup(setting);
	p = setting;
	if (strspn(p, " \t,") == strlen(p))
		add_name("default", 7);
	while (*p)
	{
		const char *end = strchr(p, ',');
		int			len = end ? (int) (end - p) : (int) strlen(p);

		add_name(p, len);
		p += len;
		if (*p == ',')
			p++;
	}
	MemoryContextSwitchTo(old);
}

static bool
name_is_sensitive(const char *s, int len)
{
	char		buf[KEY_MAX_CHARS + 1];
	int			n;
	ListCell   *lc;

	if (len > KEY_MAX_CHARS)
		return false;
	n = normalize_name(s, len, buf, sizeof(buf));
	if (n <= 0)
		return false;
	foreach(lc, sensitive_names)
	{
		const char *name = lfirst(lc);
		int			nlen = strlen(name);

		if (n == nlen ? strcmp(buf, name) == 0 :
			(nlen >= CONTAINS_MIN_LEN && n > nlen && strstr(buf, name) != NULL))
			return true;
	}
	return false;
}

/* ---- e-mail addresses ---- */

static inline bool
is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static inline bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static inline bool
is_upper(char c)
{
	return c >= 'A' && c <= 'Z';
}

static inline bool
is_local_char(char c)
{
	return is_alnum(c) || (c != '\0' && strchr("._%+-", c) != NULL);
}

/*
 * The end of the domain of an address whose '@' is at at, or -1.  A domain
 * is dot-separated labels of letters, digits and '-', ending in a label of
 * two or more letters.
 */
static int
email_domain_end(const char *s, int len, int at)
{
	int			i = at + 1;
	int			end = -1;
	int			dots = 0;

	while (i < len)
	{
		int			start = i;
		bool		letters = true;

		if (!is_alnum(s[i]))
			break;
		while (i < len && (is_alnum(s[i]) || s[i] == '-'))
		{
			letters = letters && !is_digit(s[i]) && s[i] != '-';
			i++;
		}
		if (i == start)
			break;
		if (dots > 0 && letters && i - start >= 2)
			end = i;
		if (i + 1 < len && s[i] == '.' && (is_alnum(s[i + 1])))
		{
			dots++;
			i++;
			continue;
		}
		break;
	}
	return end;
}

/* ---- numbers: cards, national ids, phones ---- */

static bool
luhn_ok(const char *digits, int n)
{
	int			sum = 0;

	for (int i = 0; i < n; i++)
	{
		int			d = digits[n - 1 - i] - '0';

		if (i % 2 == 1)
		{
			d *= 2;
			if (d > 9)
				d -= 9;
		}
		sum += d;
	}
	return sum % 10 == 0;
}

/*
 * A run of digit groups starting at i (optionally after '+' or '('),
 * separated by one or two of " -.()": what it is, and where it ends.
 * Returns the mask for it, or NULL.
 */
static const char *
classify_number(const char *s, int len, int i, int *end)
{
	char		digits[NUMBER_MAX_CHARS + 1];
	int			groups[NUMBER_MAX_CHARS];
	int			ngroups = 0;
	int			n = 0;
	int			j = i;
	bool		plus = false;
	bool		paren = false;
	bool		seps = false;
	bool		only_space_dash = true;
	char		sepchar = 0;
	bool		one_sep = true;

	if (s[j] == '+')
	{
		plus = true;
		j++;
	}
	if (j < len && s[j] == '(')
	{
		paren = true;
		j++;
	}
	if (j >= len || !is_digit(s[j]))
		return NULL;
	for (;;)
	{
		int			g = 0;
		int			k;

		while (j < len && is_digit(s[j]))
		{
			if (n >= NUMBER_MAX_CHARS || j - i >= NUMBER_MAX_CHARS)
				return NULL;
			digits[n++] = s[j++];
			g++;
		}
		groups[ngroups++] = g;
		*end = j;
		/* A separator of one or two characters, then more digits. */
		k = j;
		while (k < len && k - j < 2 && strchr(" -.()", s[k]) != NULL && s[k] != '\0')
			k++;
		if (k == j || k >= len || !is_digit(s[k]))
			break;
		for (int x = j; x < k; x++)
		{
			if (s[x] != ' ' && s[x] != '-')
				only_space_dash = false;
			/* "(555) 123-4567": what follows the parentheses may differ. */
			if ((s[x] != ' ' && s[x] != '-' && s[x] != '.') || (paren && ngroups == 1))
				continue;
			if (sepchar && s[x] != sepchar)
				one_sep = false;
			sepchar = s[x];
		}
		if (k - j == 2 && !(s[j] == ')' && s[j + 1] == ' '))
			one_sep = false;
		seps = true;
		j = k;
	}
	/* No letter or digit right after: "12ab" is not a number. */
	if (*end < len && is_alnum(s[*end]))
		return NULL;
	if (paren && ngroups < 2)
		return NULL;

	if (n >= 13 && n <= 19 && only_space_dash && !plus && !paren && luhn_ok(digits, n))
		return MASK_CARD;
	if (!plus && !paren && ngroups == 3 && groups[0] == 3 && groups[1] == 2 && groups[2] == 4 &&
		only_space_dash && one_sep)
		return MASK_ID;
	if (n >= 7 && n <= 15)
	{
		if (plus && (seps || n >= 8))
			return MASK_PHONE;
		if ((seps || paren) && one_sep && groups[ngroups - 1] >= 4)
			return MASK_PHONE;
	}
	return NULL;
}

/* UK National Insurance number: AB 12 34 56 C (spaces optional). */
static int
nino_end(const char *s, int len, int i)
{
	int			j = i;
	int			d = 0;

	if (j + 2 > len || !is_upper(s[j]) || !is_upper(s[j + 1]))
		return -1;
	j += 2;
	while (j < len && d < 6)
	{
		if (s[j] == ' ' && d % 2 == 0)
			j++;
		if (j >= len || !is_digit(s[j]))
			return -1;
		j++;
		d++;
	}
	if (d != 6)
		return -1;
	if (j < len && s[j] == ' ')
		j++;
	if (j >= len || s[j] < 'A' || s[j] > 'D')
		return -1;
	j++;
	if (j < len && is_alnum(s[j]))
		return -1;
	return j;
}

/* ---- sensitive name = value ---- */

static inline bool
is_word_char(char c)
{
	return is_alnum(c) || c == '_' || c == '-';
}

/*
 * After a name ending at j: an optional closing quote, '=' or ':', spaces.
 * Returns where the value starts, or -1 if no assignment follows.
 */
static int
assignment_start(const char *s, int len, int j)
{
	if (j < len && (s[j] == '"' || s[j] == '\''))
		j++;
	while (j < len && s[j] == ' ')
		j++;
	if (j >= len || (s[j] != '=' && s[j] != ':'))
		return -1;
	j++;
	while (j < len && s[j] == ' ')
		j++;
	return j < len ? j : -1;
}

/*
 * The value starting at j: up to the closing quote of a quoted one, else up
 * to a space or a delimiter.  Sets where the masked part starts and ends;
 * false for an empty unquoted value.
 */
static bool
assignment_value(const char *s, int len, int j, int *vstart, int *vend)
{
	if (s[j] == '"' || s[j] == '\'')
	{
		const char *close = memchr(s + j + 1, s[j], len - j - 1);

		*vstart = j + 1;
		*vend = close ? (int) (close - s) : len;
		return true;
	}
	*vstart = j;
	while (j < len && s[j] != ' ' && s[j] != '\t' && s[j] != '\n' && s[j] != '\r' &&
		   strchr(",;&}])\"'", s[j]) == NULL)
		j++;
	*vend = j;
	return *vend > *vstart;
}

/* ---- text ---- */

/* Append s[0..len) to out with personal data masked; true if anything was. */
static bool
redact_chars(const char *s, int len, StringInfo out)
{
	bool		changed = false;
	int			next_at = -1;	/* the next '@' at or after i */
	int			i = 0;

	while (i < len)
	{
		char		c = s[i];
		bool		boundary = i == 0 || !is_alnum(s[i - 1]);
		int			end;
		const char *mask;

		if ((i & 0xFFFF) == 0)
			CHECK_FOR_INTERRUPTS();

		/* An e-mail address starts where a run of local-part characters does. */
		if (is_local_char(c) && (i == 0 || !is_local_char(s[i - 1])))
		{
			int			j = i;

			if (next_at < i)
			{
				const char *at = memchr(s + i, '@', len - i);

				next_at = at ? (int) (at - s) : len;
			}
			while (j < len && j < next_at && is_local_char(s[j]))
				j++;
			if (j == next_at && j > i && j < len && (end = email_domain_end(s, len, j)) > 0)
			{
				appendStringInfoString(out, MASK_EMAIL);
				changed = true;
				i = end;
				continue;
			}
		}

		/* name=value, name: value, "name": "value" */
		if (is_word_char(c) && (i == 0 || !is_word_char(s[i - 1])))
		{
			int			j = i;
			int			v,
						vstart,
						vend;

			while (j < len && j - i <= KEY_MAX_CHARS && is_word_char(s[j]))
				j++;
			/* The cheap test first: most words are not followed by '=' or ':'. */
			if ((v = assignment_start(s, len, j)) >= 0 && name_is_sensitive(s + i, j - i) &&
				assignment_value(s, len, v, &vstart, &vend))
			{
				appendBinaryStringInfo(out, s + i, vstart - i);
				appendStringInfoString(out, REDACTED);
				changed = true;
				i = vend;
				continue;
			}
		}

		if (boundary && (is_digit(c) || c == '+' || c == '('))
		{
			mask = classify_number(s, len, i, &end);
			if (mask)
			{
				appendStringInfoString(out, mask);
				changed = true;
				i = end;
				continue;
			}
		}
		if (boundary && is_upper(c) && (end = nino_end(s, len, i)) > 0)
		{
			appendStringInfoString(out, MASK_ID);
			changed = true;
			i = end;
			continue;
		}
		appendStringInfoChar(out, c);
		i++;
	}
	return changed;
}

PG_FUNCTION_INFO_V1(harden_redact_text);

Datum
harden_redact_text(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	StringInfoData out;

	load_sensitive_names();
	initStringInfo(&out);
	if (!redact_chars(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), &out))
		PG_RETURN_TEXT_P(t);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}

/* ---- jsonb ---- */

static void
string_value(JsonbValue *v, const char *s, int len)
{
	v->type = jbvString;
	v->val.string.val = (char *) s;
	v->val.string.len = len;
}

/* A string (or an integer's digits) with its personal data masked. */
static void
redact_scalar(JsonbValue *v, StringInfo buf)
{
	if (v->type == jbvString)
	{
		resetStringInfo(buf);
		if (redact_chars(v->val.string.val, v->val.string.len, buf))
			string_value(v, pstrdup(buf->data), buf->len);
	}
	else if (v->type == jbvNumeric)
	{
		char	   *digits = DatumGetCString(DirectFunctionCall1(numeric_out,
																 NumericGetDatum(v->val.numeric)));
		int			len = strlen(digits);

		/* Long integers only: a card or phone number stored as a number. */
		if (len < 7 || strspn(digits, "0123456789") != (size_t) len)
			return;
		resetStringInfo(buf);
		if (redact_chars(digits, len, buf))
			string_value(v, pstrdup(buf->data), buf->len);
	}
}

PG_FUNCTION_INFO_V1(harden_redact_jsonb);

Datum
harden_redact_jsonb(PG_FUNCTION_ARGS)
{
	Jsonb	   *in = PG_GETARG_JSONB_P(0);
	JsonbIterator *it;
	JsonbParseState *state = NULL;
	JsonbValue	v;
	JsonbValue *res = NULL;
	JsonbIteratorToken tok;
	StringInfoData buf;
	bool		mask_next = false;	/* the key just pushed is sensitive */
	uint64		n = 0;

	load_sensitive_names();
	initStringInfo(&buf);
	it = JsonbIteratorInit(&in->root);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if ((++n & 0xFFFF) == 0)
			CHECK_FOR_INTERRUPTS();
		if (mask_next)
		{
			mask_next = false;
			if (tok == WJB_BEGIN_ARRAY || tok == WJB_BEGIN_OBJECT)
			{
				/* Skip the whole container: it is the sensitive value. */
				int			depth = 1;

				while (depth > 0)
				{
					tok = JsonbIteratorNext(&it, &v, false);
					if (tok == WJB_BEGIN_ARRAY || tok == WJB_BEGIN_OBJECT)
						depth++;
					else if (tok == WJB_END_ARRAY || tok == WJB_END_OBJECT)
						depth--;
				}
			}
			string_value(&v, REDACTED, strlen(REDACTED));
			res = pushJsonbValue(&state, WJB_VALUE, &v);
			continue;
		}
		switch (tok)
		{
			case WJB_KEY:
				mask_next = name_is_sensitive(v.val.string.val, v.val.string.len);
				redact_scalar(&v, &buf);
				res = pushJsonbValue(&state, tok, &v);
				break;
			case WJB_VALUE:
			case WJB_ELEM:
				redact_scalar(&v, &buf);
				res = pushJsonbValue(&state, tok, &v);
				break;
			default:
				/* Only a raw scalar's pseudo-array carries a value. */
				res = pushJsonbValue(&state, tok,
									 (tok == WJB_BEGIN_ARRAY && v.val.array.rawScalar) ? &v : NULL);
				break;
		}
	}
	PG_RETURN_JSONB_P(JsonbValueToJsonb(res));
}
