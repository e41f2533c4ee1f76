/*
 * cache_resp.h
 *	  The Redis-protocol (RESP) endpoint: protocol, commands, worker.
 *
 * The protocol part (cache_resp_proto.c) is plain C with no PostgreSQL
 * dependency so that it can be built and fuzzed on its own: memory comes
 * from a caller-supplied grow function.
 */
#ifndef PG_HARDEN_CACHE_RESP_H
#define PG_HARDEN_CACHE_RESP_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* ---- cache_resp_proto.c ---- */

/* realloc-like: returns NULL only when it cannot grow (never frees) */
typedef void *(*resp_grow_fn) (void *ptr, size_t newsize);

/* A growable output buffer. */
typedef struct RespBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
	bool		failed;			/* an allocation failed: contents unusable */
	resp_grow_fn grow;
} RespBuf;

typedef enum RespParseResult
{
	RESP_PARSE_OK,				/* a whole command: argc/argv filled */
	RESP_PARSE_INCOMPLETE,		/* need more bytes */
	RESP_PARSE_ERROR			/* protocol error: reply err, then close */
} RespParseResult;

#define RESP_MAX_INLINE		(64 * 1024)
#define RESP_MAX_ARGS		(1024 * 1024)

/*
 * Incremental parser state for one connection.  Arguments are offsets into
 * the caller's input buffer, which may move between calls (only its
 * contents from the start of the current command must stay).
 */
typedef struct RespParser
{
	/* limits */
	size_t		max_request;	/* bytes in one command frame */
	/* progress inside the current frame */
	size_t		pos;			/* bytes of the frame parsed so far */
	long		nexpected;		/* -1: header not read yet */
	long		argc;
	size_t	   *argoff;
	size_t	   *arglen;
	long		argcap;
	bool		failed_alloc;
	resp_grow_fn grow;
	const char *error;			/* RESP_PARSE_ERROR: why */
} RespParser;

extern void resp_parser_init(RespParser *p, size_t max_request, resp_grow_fn grow);
extern RespParseResult resp_parse(RespParser *p, const char *buf, size_t len,
								  size_t *consumed);
extern void resp_parser_reset(RespParser *p);

extern void resp_buf_init(RespBuf *b, resp_grow_fn grow);
extern void resp_buf_append(RespBuf *b, const char *s, size_t n);
extern void resp_buf_consume(RespBuf *b, size_t n);

/* Replies.  proto is 2 or 3. */
extern void resp_add_simple(RespBuf *b, const char *s);
extern void resp_add_error(RespBuf *b, const char *s);
extern void resp_add_errorf(RespBuf *b, const char *fmt,...) __attribute__((format(printf, 2, 3)));
extern void resp_add_int(RespBuf *b, int64_t v);
extern void resp_add_bulk(RespBuf *b, const char *s, size_t n);
extern void resp_add_bulk_str(RespBuf *b, const char *s);
extern void resp_add_null(RespBuf *b, int proto);
extern void resp_add_null_array(RespBuf *b, int proto);
extern void resp_add_array(RespBuf *b, long n);
extern void resp_add_map(RespBuf *b, int proto, long n);
extern void resp_add_set(RespBuf *b, int proto, long n);
extern void resp_add_verbatim(RespBuf *b, int proto, const char *s, size_t n);

/* Case-insensitive comparison of an argument with a word. */
extern bool resp_arg_is(const char *arg, size_t len, const char *word);
/* Strict decimal int64 parse of an argument. */
extern bool resp_arg_int(const char *arg, size_t len, int64_t *v);
/* Redis-style glob match: * ? [abc] [a-z] [^x] and \ escapes. */
extern bool resp_glob_match(const char *p, size_t plen, const char *s, size_t slen);

#endif							/* PG_HARDEN_CACHE_RESP_H */

/* ---- the PostgreSQL side (not in the standalone protocol build) ---- */
#ifdef PG_HARDEN_H

#include "datatype/timestamp.h"

#define RESP_MAX_WORKERS	64
#define RESP_NAME_MAX		128

typedef struct RespClient
{
	int			sock;
	int			evpos;			/* position in the worker's WaitEventSet */
	uint32		events;			/* the events registered there */
	uint64		id;
	bool		dead;			/* closed in this batch; freed after it */
	bool		closing;		/* close once the output is sent */
	bool		tcp;
	MemoryContext cxt;
	char	   *in;
	size_t		inlen;
	size_t		incap;
	size_t		inmax;			/* largest input buffer: a request plus a read */
	RespParser	parser;
	RespBuf		out;
	TimestampTz connected_at;
	TimestampTz last_active;	/* last whole command or output progress */
	/* session */
	int			proto;			/* 2 or 3 */
	Oid			role;			/* InvalidOid: not authenticated */
	bool		authed;			/* role came from AUTH, not the default */
	uint64		auth_gen;		/* resp_auth_gen when role was checked */
	TimestampTz valid_until;	/* of the role's password; 0: none */
	char		name[RESP_NAME_MAX];
	struct RespClient *next;	/* the worker's list */
} RespClient;

/* cache_resp.c */
extern int	resp_max_clients;
extern int	resp_idle_timeout_s;
extern int	resp_max_request_size;
extern char *resp_listen;
extern char *resp_default_role;
extern TimestampTz resp_batch_now;
extern void resp_define_gucs(bool preloading);
extern Size resp_shmem_size(void);
extern void resp_shmem_startup(void);
extern void resp_register_workers(void);
extern void resp_xact_ensure(void);
extern bool resp_in_xact(void);
extern int	resp_connected_clients(void);
extern TimestampTz resp_start_time(void);
extern RespClient *resp_client_list(void);
extern int	resp_worker_index(void);
extern int	resp_listen_port(void);

/* cache_resp_auth.c */
extern uint64 resp_auth_gen;
extern void resp_auth_init(void);
extern bool resp_auth_check(const char *user, size_t userlen, const char *pass,
							size_t passlen, Oid *role, TimestampTz *valid_until,
							const char **why);
extern bool resp_role_still_valid(Oid role);
extern Oid	resp_default_role_oid(void);

/* cache_resp_cmd.c */
extern void resp_execute(RespClient *c, long argc, const char **argv, const size_t *argl);
extern bool resp_client_authorized(RespClient *c);

#endif							/* PG_HARDEN_H */
