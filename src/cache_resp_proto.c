/*
 * cache_resp_proto.c
 *	  RESP2/RESP3 request parser (multibulk and inline) and reply writer.
 *
 * Plain C: no PostgreSQL headers, no catalog access, memory only through the
 * caller's grow function, so test/fuzz builds this file alone with
 * sanitizers.  Every length the client sends is checked against the request
 * limit before anything is allocated or waited for, so a declared 4 GB bulk
 * is an error at once, not a 4 GB buffer.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cache_resp.h"

/* Longest "*<n>\r\n" or "$<n>\r\n" header we accept. */
#define RESP_MAX_HEADER 32

void
resp_parser_init(RespParser *p, size_t max_request, resp_grow_fn grow)
{
	memset(p, 0, sizeof(*p));
	p->max_request = max_request;
	p->grow = grow;
	p->nexpected = -1;
}

/* Forget the current frame (after a whole command was consumed). */
void
resp_parser_reset(RespParser *p)
{
	p->pos = 0;
	p->nexpected = -1;
	p->argc = 0;
	p->error = NULL;
}

static bool
add_arg(RespParser *p, size_t off, size_t len)
{
	if (p->argc == p->argcap)
	{
		long		ncap = p->argcap ? p->argcap * 2 : 16;
		size_t	   *o = p->grow(p->argoff, ncap * sizeof(size_t));

		if (o == NULL)
			return false;
		p->argoff = o;
		o = p->grow(p->arglen, ncap * sizeof(size_t));
		if (o == NULL)
			return false;
		p->arglen = o;
		p->argcap = ncap;
	}
	p->argoff[p->argc] = off;
	p->arglen[p->argc] = len;
	p->argc++;
	return true;
}

/*
 * A header line "<c><digits>\r\n" at buf[at..len).  Returns 1 and sets *v
 * and *hdrlen, 0 if incomplete, -1 if malformed.
 */
static int
parse_header(const char *buf, size_t at, size_t len, long long *v, size_t *hdrlen)
{
	size_t		i = at + 1;
	bool		neg = false;
	long long	n = 0;
	int			digits = 0;

	if (i < len && buf[i] == '-')
	{
		neg = true;
		i++;
	}
	for (; i < len && i - at < RESP_MAX_HEADER; i++)
	{
		char		c = buf[i];

		if (c == '\r')
		{
			if (i + 1 >= len)
				return 0;
			if (buf[i + 1] != '\n' || digits == 0)
				return -1;
			*v = neg ? -n : n;
			*hdrlen = i + 2 - at;
			return 1;
		}
		if (c < '0' || c > '9' || digits >= 18)
			return -1;
		n = n * 10 + (c - '0');
		digits++;
	}
	return (i - at >= RESP_MAX_HEADER) ? -1 : 0;
}

static RespParseResult
fail(RespParser *p, const char *why)
{
	p->error = why;
	return RESP_PARSE_ERROR;
}

static RespParseResult
parse_inline(RespParser *p, const char *buf, size_t len, size_t *consumed)
{
	const char *nl = memchr(buf, '\n', len < RESP_MAX_INLINE ? len : RESP_MAX_INLINE);
	size_t		end,
				i = 0;

	if (nl == NULL)
		return len >= RESP_MAX_INLINE ? fail(p, "Protocol error: too big inline request") :
			RESP_PARSE_INCOMPLETE;
	end = (size_t) (nl - buf);
	*consumed = end + 1;
	if (end > 0 && buf[end - 1] == '\r')
		end--;
	p->argc = 0;
	while (i < end)
	{
		size_t		start;

		while (i < end && (buf[i] == ' ' || buf[i] == '\t'))
			i++;
		if (i >= end)
			break;
		start = i;
		while (i < end && buf[i] != ' ' && buf[i] != '\t')
			i++;
		if (!add_arg(p, start, i - start))
			return fail(p, "out of memory");
	}
	return RESP_PARSE_OK;
}

/*
 * Parse one command from buf[0..len).  On RESP_PARSE_OK the arguments are
 * p->argoff/arglen[0..argc) (argc may be 0: an empty command, to be
 * skipped) and *consumed is the frame's size; the caller drops those bytes
 * and calls resp_parser_reset().  On RESP_PARSE_INCOMPLETE call again with
 * the same bytes and more.
 */
RespParseResult
resp_parse(RespParser *p, const char *buf, size_t len, size_t *consumed)
{
	*consumed = 0;
	if (len == 0)
		return RESP_PARSE_INCOMPLETE;
	if (p->nexpected < 0)
	{
		long long	n;
		size_t		hl;
		int			r;

		if (buf[0] != '*')
			return parse_inline(p, buf, len, consumed);
		r = parse_header(buf, 0, len, &n, &hl);
		if (r == 0)
			return RESP_PARSE_INCOMPLETE;
		if (r < 0 || n > RESP_MAX_ARGS)
			return fail(p, "Protocol error: invalid multibulk length");
		p->pos = hl;
		p->argc = 0;
		if (n <= 0)
		{
			*consumed = hl;
			return RESP_PARSE_OK;
		}
		p->nexpected = (long) n;
	}
	while (p->argc < p->nexpected)
	{
		long long	n;
		size_t		hl;
		int			r;

		if (p->pos >= len)
			return RESP_PARSE_INCOMPLETE;
		if (buf[p->pos] != '$')
			return fail(p, "Protocol error: expected '$'");
		r = parse_header(buf, p->pos, len, &n, &hl);
		if (r == 0)
			return RESP_PARSE_INCOMPLETE;
		if (r < 0 || n < 0 || (unsigned long long) n > p->max_request)
			return fail(p, "Protocol error: invalid bulk length");
		/* the whole frame, as far as it is known, must fit the limit */
		if (p->pos + hl + (size_t) n + 2 > p->max_request)
			return fail(p, "Protocol error: request too large");
		if (len < p->pos + hl + (size_t) n + 2)
			return RESP_PARSE_INCOMPLETE;
		if (buf[p->pos + hl + n] != '\r' || buf[p->pos + hl + n + 1] != '\n')
			return fail(p, "Protocol error: bulk string not terminated by CRLF");
		if (!add_arg(p, p->pos + hl, (size_t) n))
			return fail(p, "out of memory");
		p->pos += hl + (size_t) n + 2;
	}
	*consumed = p->pos;
	return RESP_PARSE_OK;
}

/* ---- output ---- */

void
resp_buf_init(RespBuf *b, resp_grow_fn grow)
{
	memset(b, 0, sizeof(*b));
	b->grow = grow;
}

void
resp_buf_append(RespBuf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n > b->cap)
	{
		size_t		ncap = b->cap ? b->cap : 256;
		char	   *d;

		while (ncap < b->len + n)
			ncap *= 2;
		d = b->grow(b->data, ncap);
		if (d == NULL)
		{
			b->failed = true;
			return;
		}
		b->data = d;
		b->cap = ncap;
	}
	if (n > 0)
		memcpy(b->data + b->len, s, n);
	b->len += n;
}

/* Drop n sent bytes from the front. */
void
resp_buf_consume(RespBuf *b, size_t n)
{
	if (n >= b->len)
		b->len = 0;
	else
	{
		memmove(b->data, b->data + n, b->len - n);
		b->len -= n;
	}
}

static void
add_line(RespBuf *b, char type, const char *s, size_t n)
{
	char		t = type;

	resp_buf_append(b, &t, 1);
	resp_buf_append(b, s, n);
	resp_buf_append(b, "\r\n", 2);
}

static void
add_num(RespBuf *b, char type, int64_t v)
{
	char		tmp[32];
	int			n = snprintf(tmp, sizeof(tmp), "%c%lld\r\n", type, (long long) v);

	resp_buf_append(b, tmp, (size_t) n);
}

/* Simple strings and errors must not contain CR or LF: they are replaced. */
static void
add_safe_line(RespBuf *b, char type, const char *s)
{
	size_t		n = strlen(s);
	size_t		start = b->len;

	add_line(b, type, s, n);
	if (b->failed)
		return;
	for (size_t i = start + 1; i < start + 1 + n; i++)
		if (b->data[i] == '\r' || b->data[i] == '\n')
			b->data[i] = ' ';
}

void
resp_add_simple(RespBuf *b, const char *s)
{
	add_safe_line(b, '+', s);
}

void
resp_add_error(RespBuf *b, const char *s)
{
	add_safe_line(b, '-', s);
}

void
resp_add_errorf(RespBuf *b, const char *fmt,...)
{
	char		msg[512];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	add_safe_line(b, '-', msg);
}

void
resp_add_int(RespBuf *b, int64_t v)
{
	add_num(b, ':', v);
}

void
resp_add_bulk(RespBuf *b, const char *s, size_t n)
{
	add_num(b, '$', (int64_t) n);
	resp_buf_append(b, s, n);
	resp_buf_append(b, "\r\n", 2);
}

void
resp_add_bulk_str(RespBuf *b, const char *s)
{
	resp_add_bulk(b, s, strlen(s));
}

void
resp_add_null(RespBuf *b, int proto)
{
	if (proto >= 3)
		resp_buf_append(b, "_\r\n", 3);
	else
		resp_buf_append(b, "$-1\r\n", 5);
}

void
resp_add_null_array(RespBuf *b, int proto)
{
	if (proto >= 3)
		resp_buf_append(b, "_\r\n", 3);
	else
		resp_buf_append(b, "*-1\r\n", 5);
}

void
resp_add_array(RespBuf *b, long n)
{
	add_num(b, '*', n);
}

/* A map of n pairs: RESP3 '%', else a flat array of 2n elements. */
void
resp_add_map(RespBuf *b, int proto, long n)
{
	if (proto >= 3)
		add_num(b, '%', n);
	else
		add_num(b, '*', 2 * n);
}

void
resp_add_set(RespBuf *b, int proto, long n)
{
	add_num(b, proto >= 3 ? '~' : '*', n);
}

/* Text meant for humans (INFO): RESP3 verbatim "txt", else a bulk string. */
void
resp_add_verbatim(RespBuf *b, int proto, const char *s, size_t n)
{
	if (proto < 3)
	{
		resp_add_bulk(b, s, n);
		return;
	}
	add_num(b, '=', (int64_t) n + 4);
	resp_buf_append(b, "txt:", 4);
	resp_buf_append(b, s, n);
	resp_buf_append(b, "\r\n", 2);
}

/* ---- argument helpers ---- */

bool
resp_arg_is(const char *arg, size_t len, const char *word)
{
	size_t		wl = strlen(word);

	if (len != wl)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		char		a = arg[i],
					w = word[i];

		if (a >= 'a' && a <= 'z')
			a -= 'a' - 'A';
		if (w >= 'a' && w <= 'z')
			w -= 'a' - 'A';
		if (a != w)
			return false;
	}
	return true;
}

bool
resp_arg_int(const char *arg, size_t len, int64_t *v)
{
	size_t		i = 0;
	bool		neg = false;
	uint64_t	n = 0;

	if (len == 0 || len > 20)
		return false;
	if (arg[0] == '-' || arg[0] == '+')
	{
		neg = arg[0] == '-';
		i = 1;
		if (len == 1)
			return false;
	}
	for (; i < len; i++)
	{
		if (arg[i] < '0' || arg[i] > '9')
			return false;
		if (n > (UINT64_C(9223372036854775808) - (uint64_t) (arg[i] - '0')) / 10)
			return false;
		n = n * 10 + (uint64_t) (arg[i] - '0');
	}
	if (!neg && n > (uint64_t) INT64_MAX)
		return false;
	*v = neg ? (int64_t) (0 - n) : (int64_t) n;
	return true;
}

/* One [...] class at p[*pi]; advances *pi past it.  Malformed: literal '['. */
static bool
class_match(const char *p, size_t plen, size_t *pi, char c, bool *ok)
{
	size_t		i = *pi + 1;
	bool		neg = false,
				hit = false;

	if (i < plen && p[i] == '^')
	{
		neg = true;
		i++;
	}
	for (; i < plen && p[i] != ']'; i++)
	{
		if (p[i] == '\\' && i + 1 < plen)
		{
			i++;
			hit |= p[i] == c;
		}
		else if (i + 2 < plen && p[i + 1] == '-' && p[i + 2] != ']')
		{
			char		lo = p[i],
						hi = p[i + 2];

			if (lo > hi)
			{
				char		t = lo;

				lo = hi;
				hi = t;
			}
			hit |= c >= lo && c <= hi;
			i += 2;
		}
		else
			hit |= p[i] == c;
	}
	if (i >= plen)
		return false;			/* no closing bracket */
	*pi = i + 1;
	*ok = neg ? !hit : hit;
	return true;
}

/*
 * Iterative matching with one backtrack point for the last '*': linear in
 * practice and never recursive, so a hostile pattern cannot exhaust the
 * stack.
 */
bool
resp_glob_match(const char *p, size_t plen, const char *s, size_t slen)
{
	size_t		pi = 0,
				si = 0,
				star_p = (size_t) -1,
				star_s = 0;

	while (si < slen)
	{
		if (pi < plen)
		{
			char		c = p[pi];
			bool		ok;
			size_t		next = pi;

			if (c == '*')
			{
				star_p = ++pi;
				star_s = si;
				continue;
			}
			if (c == '?')
			{
				pi++;
				si++;
				continue;
			}
			if (c == '[' && class_match(p, plen, &next, s[si], &ok))
			{
				if (ok)
				{
					pi = next;
					si++;
					continue;
				}
			}
			else
			{
				if (c == '\\' && pi + 1 < plen)
					c = p[++pi];
				if (c == s[si])
				{
					pi++;
					si++;
					continue;
				}
			}
		}
		if (star_p == (size_t) -1)
			return false;
		pi = star_p;
		si = ++star_s;
	}
	while (pi < plen && p[pi] == '*')
		pi++;
	return pi == plen;
}
