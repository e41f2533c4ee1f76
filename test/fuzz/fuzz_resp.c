/*
 * fuzz_resp.c
 *	  Standalone fuzz run of the RESP parser and reply writer
 *	  (src/cache_resp_proto.c), built with -fsanitize=address,undefined by
 *	  test/resp/resp.sh.
 *
 *	  fuzz_resp N: N inputs, alternating random bytes and mutations of valid
 *	  frames, each fed whole and in random chunks (as a socket delivers
 *	  them), with small and large request limits.  Checks the parser's
 *	  invariants (arguments inside the consumed bytes, progress on OK) and
 *	  that chunked and whole parses agree.  Exits non-zero on a violation;
 *	  the sanitizers abort on memory errors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_resp.h"

static unsigned long long rng_state = 88172645463325252ULL;

static unsigned
rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (unsigned) (rng_state >> 11);
}

static void *
grow(void *p, size_t n)
{
	return realloc(p, n);
}

static const char *seeds[] = {
	"*1\r\n$4\r\nPING\r\n",
	"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n",
	"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
	"PING\r\n",
	"SET a b EX 10\r\n",
	"*0\r\n",
	"*-1\r\n",
	"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n",
	"*2\r\n$3\r\nGET\r\n$4294967296\r\n",
	"*5\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n",
	"  \t GET   k  \n",
	"*3\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n",
};

typedef struct Outcome
{
	int			ncmds;
	long		args;
	size_t		argbytes;
	int			error;
} Outcome;

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

/* Feed input in chunks (chunk 0: whole); returns what was parsed. */
static Outcome
feed(const char *input, size_t len, size_t max_request, int chunked)
{
	RespParser p;
	Outcome		o = {0};
	char	   *buf = malloc(len + 1);
	size_t		have = 0,
				start = 0,
				delivered = 0;

	resp_parser_init(&p, max_request, grow);
	while (delivered < len || have > start)
	{
		size_t		consumed;
		RespParseResult r;
		size_t		step = chunked ? 1 + rnd() % 64 : len;

		if (delivered < len)
		{
			if (step > len - delivered)
				step = len - delivered;
			memcpy(buf + have, input + delivered, step);
			have += step;
			delivered += step;
		}
		for (;;)
		{
			r = resp_parse(&p, buf + start, have - start, &consumed);
			if (r != RESP_PARSE_OK)
				break;
			if (consumed == 0 || consumed > have - start)
				FAIL("bad consumed %zu of %zu", consumed, have - start);
			for (long i = 0; i < p.argc; i++)
			{
				if (p.argoff[i] + p.arglen[i] > consumed)
					FAIL("argument outside the frame");
				o.argbytes += p.arglen[i];
			}
			o.ncmds++;
			o.args += p.argc;
			start += consumed;
			resp_parser_reset(&p);
		}
		if (r == RESP_PARSE_ERROR)
		{
			if (p.error == NULL)
				FAIL("error without a reason");
			o.error = 1;
			break;
		}
		if (delivered >= len)
			break;
	}
	free(p.argoff);
	free(p.arglen);
	free(buf);
	return o;
}

static size_t
make_input(char *buf, size_t cap)
{
	size_t		n = 0;

	if (rnd() % 2 == 0)
	{
		size_t		len = rnd() % 512;

		for (; n < len && n < cap; n++)
			buf[n] = (rnd() % 4 == 0) ? "*$\r\n0123456789-"[rnd() % 15] : (char) rnd();
		return n;
	}
	/* a few valid frames, then mutations */
	for (int f = 1 + rnd() % 4; f > 0; f--)
	{
		const char *s = seeds[rnd() % (sizeof(seeds) / sizeof(seeds[0]))];
		size_t		l = strlen(s);

		if (n + l > cap)
			break;
		memcpy(buf + n, s, l);
		n += l;
	}
	for (int m = rnd() % 6; m > 0 && n > 0; m--)
	{
		size_t		at = rnd() % n;

		switch (rnd() % 4)
		{
			case 0:
				buf[at] = (char) rnd();
				break;
			case 1:
				n = at;			/* truncate */
				break;
			case 2:
				if (n < cap)
				{
					memmove(buf + at + 1, buf + at, n - at);
					buf[at] = "0123456789*$\r\n-"[rnd() % 15];
					n++;
				}
				break;
			case 3:
				memmove(buf + at, buf + at + 1, n - at - 1);
				n--;
				break;
		}
	}
	return n;
}

static void
exercise_writer(const char *s, size_t n)
{
	RespBuf		b;
	int64_t		v;

	resp_buf_init(&b, grow);
	resp_add_simple(&b, "OK\r\nx");
	resp_add_errorf(&b, "ERR %.*s", (int) (n < 100 ? n : 100), s);
	resp_add_bulk(&b, s, n);
	resp_add_null(&b, 2 + rnd() % 2);
	resp_add_map(&b, 2 + rnd() % 2, 3);
	resp_add_verbatim(&b, 3, s, n);
	if (resp_arg_int(s, n, &v))
		resp_add_int(&b, v);
	(void) resp_arg_is(s, n, "GET");
	(void) resp_glob_match(s, n < 40 ? n : 40, s, n);
	(void) resp_glob_match("*[a-z]?\\*", 9, s, n);
	resp_buf_consume(&b, rnd() % (b.len + 1));
	if (b.failed)
		FAIL("writer failed");
	free(b.data);
}

int
main(int argc, char **argv)
{
	long		n = argc > 1 ? atol(argv[1]) : 100000;
	static char buf[4096];
	long		oks = 0,
				errors = 0;

	for (long i = 0; i < n; i++)
	{
		size_t		len = make_input(buf, sizeof(buf));
		size_t		limit = (rnd() % 2) ? 64 : 1 << 20;
		Outcome		whole = feed(buf, len, limit, 0);
		Outcome		parts = feed(buf, len, limit, 1);

		if (whole.ncmds != parts.ncmds || whole.args != parts.args ||
			whole.argbytes != parts.argbytes || whole.error != parts.error)
			{ fwrite(buf, 1, len, stderr); FAIL("input %ld: whole and chunked parses differ (%d/%d commands)",
				 i, whole.ncmds, parts.ncmds); }
		oks += whole.ncmds;
		errors += whole.error;
		exercise_writer(buf, len);
	}
	printf("%ld inputs: %ld commands parsed, %ld protocol errors, no invariant violated\n",
		   n, oks, errors);
	return 0;
}
