/*
 * cache_resp.c
 *	  The Redis-protocol endpoint: settings, listening sockets, and the
 *	  event-loop background workers that serve the cache over RESP.
 *
 * The postmaster opens the listening sockets while loading the library, so
 * that every endpoint worker (harden.resp_workers of them) inherits the
 * same sockets and accepts from them; a worker that exits is restarted by
 * the postmaster and finds the sockets still open.  A worker connects to
 * harden.resp_database and serves that database's cache namespace.
 *
 * Each worker runs one WaitEventSet over its clients' non-blocking sockets.
 * One wakeup is a batch: every ready client is read, its complete commands
 * are executed (pipelining), and the replies are written.  Commands that
 * touch entries check roles, which reads the catalogs: the first of them in
 * a batch starts a transaction (no snapshot, nothing written) that the
 * batch shares, committed before the worker waits again.  One is also
 * started at least every RESP_REFRESH_MS while clients are connected, so
 * that role changes are seen on idle connections too.  No LWLock is held
 * across I/O: the store's locks are taken and released inside one command.
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/condition_variable.h"
#include "storage/fd.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "pg_harden.h"
#include "cache_resp.h"

#define RESP_MAX_LISTEN		8
#define RESP_READ_CHUNK		(16 * 1024)
#define RESP_ACCEPT_BATCH	64
#define RESP_REFRESH_MS		100
#define RESP_TICK_MS		1000
/* Stop executing a client's commands while this much output is unsent. */
#define RESP_OUTPUT_SOFT	(256 * 1024)

int			resp_workers = 1;
int			resp_max_clients = 10000;
int			resp_idle_timeout_s = 300;
int			resp_max_request_size = 4 * 1024 * 1024;
int			resp_max_output_kb = 32 * 1024;
char	   *resp_listen = NULL;
char	   *resp_database = NULL;
char	   *resp_default_role = NULL;

TimestampTz resp_batch_now = 0;

typedef struct RespShared
{
	TimestampTz started_at;
	pg_atomic_uint64 next_client_id;
	pg_atomic_uint32 nclients[RESP_MAX_WORKERS];
} RespShared;

static RespShared *resp_shared = NULL;

/* Inherited from the postmaster. */
static int	listen_fds[RESP_MAX_LISTEN];
static int	nlisten = 0;
static int	listen_port = 0;
static char unix_paths[RESP_MAX_LISTEN][sizeof(((struct sockaddr_un *) 0)->sun_path)];
static int	nunix = 0;

/* Worker state. */
static int	my_index = -1;
static WaitEventSet *wes = NULL;
static int	wes_capacity = 0;
static int	wes_used = 0;
static int	listen_pos[RESP_MAX_LISTEN];
static bool accept_paused = false;
static RespClient *clients = NULL;
static int	nclients = 0;
static MemoryContext loop_cxt = NULL;
static MemoryContext cmd_cxt = NULL;
static MemoryContext grow_cxt = NULL;
static bool in_xact = false;
static TimestampTz last_xact = 0;
static int	fd_limit = 1024;

PGDLLEXPORT void harden_resp_main(Datum arg);

/* ---- settings ---- */

static bool
check_listen(char **newval, void **extra, GucSource source)
{
	char	   *copy = pstrdup(*newval ? *newval : "");
	List	   *items;
	bool		ok = SplitGUCList(copy, ',', &items);

	if (!ok)
		GUC_check_errdetail("List syntax is invalid.");
	else if (list_length(items) > RESP_MAX_LISTEN)
	{
		GUC_check_errdetail("At most %d addresses may be given.", RESP_MAX_LISTEN);
		ok = false;
	}
	list_free(items);
	pfree(copy);
	return ok;
}

static void
resp_write_metrics(MetricWriter *w)
{
	if (!harden_shmem_ready || resp_shared == NULL)
		return;
	metric_family(w, "resp_connected_clients", "gauge",
				  "Clients connected to the Redis-protocol endpoint (all workers).");
	metric_sample(w, resp_connected_clients(), 0);
}

void
resp_define_gucs(bool preloading)
{
	metrics_register_gauges(resp_write_metrics);
	DefineCustomIntVariable("harden.resp_max_clients",
							"Most clients connected to the Redis-protocol endpoint at once.",
							"Further connections get an error and are closed.",
							&resp_max_clients, 10000, 1, 1000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("harden.resp_idle_timeout",
							"Redis-protocol connections without a complete command or reply progress for this long are closed (0: never).",
							NULL, &resp_idle_timeout_s, 300, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("harden.resp_max_request_size",
							"Largest Redis-protocol request (one command with its arguments).",
							"A larger request, or a larger declared length, is a protocol error and closes the connection.",
							&resp_max_request_size, 4 * 1024 * 1024, 1024, 512 * 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("harden.resp_max_output",
							"Most unsent reply bytes a Redis-protocol connection may have before it is closed.",
							NULL, &resp_max_output_kb, 32 * 1024, 64, INT_MAX / 1024,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomStringVariable("harden.resp_default_role",
							   "Role of Redis-protocol clients that have not authenticated ('' = AUTH required).",
							   "Use only with loopback or unix-socket endpoints.",
							   &resp_default_role, "", PGC_SIGHUP, 0,
							   NULL, NULL, NULL);
	/* Postmaster settings can only be defined while preloading. */
	if (!preloading)
		return;
	DefineCustomStringVariable("harden.resp_listen",
							   "Where the Redis-protocol endpoint listens: unix socket paths and host:port pairs, comma-separated ('' = off).",
							   "Bind to loopback or a unix socket unless every client authenticates over a trusted network.",
							   &resp_listen, "", PGC_POSTMASTER, 0,
							   check_listen, NULL, NULL);
	DefineCustomIntVariable("harden.resp_workers",
							"Event-loop processes serving the Redis-protocol endpoint.",
							NULL, &resp_workers, 1, 1, RESP_MAX_WORKERS,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("harden.resp_database",
							   "Database whose cache the Redis-protocol endpoint serves.",
							   NULL, &resp_database, "postgres", PGC_POSTMASTER, 0,
							   NULL, NULL, NULL);
}

Size
resp_shmem_size(void)
{
	return sizeof(RespShared);
}

void
resp_shmem_startup(void)
{
	bool		found;

	resp_shared = ShmemInitStruct("pg_harden resp", sizeof(RespShared), &found);
	if (found)
		return;
	memset(resp_shared, 0, sizeof(RespShared));
	resp_shared->started_at = GetCurrentTimestamp();
	pg_atomic_init_u64(&resp_shared->next_client_id, 1);
	for (int i = 0; i < RESP_MAX_WORKERS; i++)
		pg_atomic_init_u32(&resp_shared->nclients[i], 0);
}

int
resp_connected_clients(void)
{
	uint32		n = 0;

	if (resp_shared == NULL)
		return 0;
	for (int i = 0; i < RESP_MAX_WORKERS; i++)
		n += pg_atomic_read_u32(&resp_shared->nclients[i]);
	return (int) n;
}

TimestampTz
resp_start_time(void)
{
	return resp_shared ? resp_shared->started_at : 0;
}

RespClient *
resp_client_list(void)
{
	return clients;
}

int
resp_worker_index(void)
{
	return my_index;
}

int
resp_listen_port(void)
{
	return listen_port;
}

/* ---- listening sockets (in the postmaster) ---- */

static void
unlink_unix_sockets(int code, Datum arg)
{
	for (int i = 0; i < nunix; i++)
		unlink(unix_paths[i]);
}

static void
add_listen_fd(int fd)
{
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	listen_fds[nlisten++] = fd;
}

static void
listen_unix(const char *path)
{
	struct sockaddr_un sa = {0};
	int			fd;
	struct stat st;

	if (strlen(path) >= sizeof(sa.sun_path))
	{
		ereport(LOG, (errmsg("harden.resp_listen: unix socket path \"%s\" is too long", path)));
		return;
	}
	sa.sun_family = AF_UNIX;
	strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
	/* A socket file left by a crash is removed; one in use is not. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
	{
		int			probe = socket(AF_UNIX, SOCK_STREAM, 0);

		if (probe >= 0 && connect(probe, (struct sockaddr *) &sa, sizeof(sa)) < 0 &&
			errno == ECONNREFUSED)
			unlink(path);
		if (probe >= 0)
			close(probe);
	}
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ||
		chmod(path, 0777) < 0 || listen(fd, 4096) < 0)
	{
		ereport(LOG, (errcode_for_socket_access(),
					  errmsg("harden.resp_listen: could not listen on unix socket \"%s\": %m", path)));
		if (fd >= 0)
			close(fd);
		return;
	}
	strlcpy(unix_paths[nunix++], path, sizeof(unix_paths[0]));
	add_listen_fd(fd);
	ereport(LOG, (errmsg("pg_harden Redis-protocol endpoint listening on unix socket \"%s\"", path)));
}

static bool
addr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *) sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *) sa)->sin6_addr);
	return false;
}

static void
listen_tcp(char *spec)
{
	char	   *colon = strrchr(spec, ':');
	char	   *host = spec;
	const char *port;
	struct addrinfo hints = {0},
			   *res,
			   *ai;
	int			rc;

	if (colon == NULL)
	{
		ereport(LOG, (errmsg("harden.resp_listen: \"%s\" is neither a unix socket path nor host:port", spec)));
		return;
	}
	*colon = '\0';
	port = colon + 1;
	if (host[0] == '[' && host[strlen(host) - 1] == ']')
	{
		host[strlen(host) - 1] = '\0';
		host++;
	}
	if (strcmp(host, "*") == 0 || host[0] == '\0')
		host = NULL;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0)
	{
		ereport(LOG, (errmsg("harden.resp_listen: could not resolve \"%s\": %s",
							 host ? host : "*", gai_strerror(rc))));
		return;
	}
	for (ai = res; ai != NULL && nlisten < RESP_MAX_LISTEN; ai = ai->ai_next)
	{
		int			fd = socket(ai->ai_family, SOCK_STREAM, 0);
		int			one = 1;
		char		name[NI_MAXHOST] = "?";

		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		getnameinfo(ai->ai_addr, ai->ai_addrlen, name, sizeof(name), NULL, 0, NI_NUMERICHOST);
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0)
		{
			ereport(LOG, (errcode_for_socket_access(),
						  errmsg("harden.resp_listen: could not listen on %s port %s: %m", name, port)));
			close(fd);
			continue;
		}
		add_listen_fd(fd);
		listen_port = atoi(port);
		if (addr_is_loopback(ai->ai_addr))
			ereport(LOG, (errmsg("pg_harden Redis-protocol endpoint listening on %s port %s", name, port)));
		else
			ereport(LOG,
					(errmsg("pg_harden Redis-protocol endpoint listening on non-loopback address %s port %s", name, port),
					 errdetail("Passwords and cached values travel unencrypted."),
					 errhint("Bind harden.resp_listen to a unix socket or a loopback address unless the network is trusted.")));
	}
	freeaddrinfo(res);
}

static void
resp_open_listeners(void)
{
	char	   *copy = pstrdup(resp_listen);
	List	   *items;
	ListCell   *lc;

	if (!SplitGUCList(copy, ',', &items))
		return;
	foreach(lc, items)
	{
		char	   *item = lfirst(lc);

		if (item[0] == '/')
			listen_unix(item);
		else
			listen_tcp(item);
	}
	if (nunix > 0)
		on_proc_exit(unlink_unix_sockets, (Datum) 0);
}

/* Called from _PG_init while preloading, in the postmaster. */
void
resp_register_workers(void)
{
	if (resp_listen == NULL || resp_listen[0] == '\0' || IsUnderPostmaster ||
		!IsPostmasterEnvironment)
		return;
	resp_open_listeners();
	if (nlisten == 0)
	{
		ereport(LOG, (errmsg("pg_harden Redis-protocol endpoint not started: no address of harden.resp_listen could be used")));
		return;
	}
	for (int i = 0; i < resp_workers; i++)
	{
		BackgroundWorker bgw = {0};

		bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
		bgw.bgw_restart_time = 1;
		snprintf(bgw.bgw_library_name, BGW_MAXLEN, "pg_harden");
		snprintf(bgw.bgw_function_name, BGW_MAXLEN, "harden_resp_main");
		snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_harden resp %d", i);
		snprintf(bgw.bgw_type, BGW_MAXLEN, "pg_harden resp");
		bgw.bgw_main_arg = Int32GetDatum(i);
		RegisterBackgroundWorker(&bgw);
	}
}

/* ---- transactions for catalog access ---- */

/*
 * Commands call this before catalog access.  The transaction lasts until
 * the end of the batch; starting it also processes invalidation messages.
 */
void
resp_xact_ensure(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (in_xact)
		return;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	in_xact = true;
	last_xact = resp_batch_now;
	MemoryContextSwitchTo(cxt);
}

bool
resp_in_xact(void)
{
	return in_xact;
}

static void
xact_finish(void)
{
	if (!in_xact)
		return;
	CommitTransactionCommand();
	in_xact = false;
	MemoryContextSwitchTo(loop_cxt);
}

/* ---- clients ---- */

static void *
resp_grow(void *ptr, size_t n)
{
	if (ptr == NULL)
		return MemoryContextAllocExtended(grow_cxt, n, MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
	return repalloc_huge(ptr, n);
}

static void
set_events(RespClient *c, uint32 events)
{
	if (c->events == events || c->dead)
		return;
	ModifyWaitEvent(wes, c->evpos, events, NULL);
	c->events = events;
}

static void
client_close(RespClient *c)
{
	if (c->dead)
		return;
	close(c->sock);
	c->dead = true;
	nclients--;
	pg_atomic_fetch_sub_u32(&resp_shared->nclients[my_index], 1);
}

/* Free the clients closed during the batch. */
static void
reap_clients(void)
{
	RespClient **p = &clients;

	while (*p)
	{
		RespClient *c = *p;

		if (c->dead)
		{
			*p = c->next;
			MemoryContextDelete(c->cxt);
		}
		else
			p = &c->next;
	}
}

static void
build_wait_set(void)
{
	RespClient *c;

	if (wes != NULL)
		FreeWaitEventSet(wes);
	wes_capacity = Min(Max(resp_max_clients, nclients), fd_limit) + nlisten + 2;
	wes = CreateWaitEventSet(loop_cxt, wes_capacity);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int i = 0; i < nlisten; i++)
	{
		listen_pos[i] = AddWaitEventToSet(wes, WL_SOCKET_READABLE,
										  listen_fds[i], NULL, &listen_fds[i]);
		if (accept_paused)
			ModifyWaitEvent(wes, listen_pos[i], 0, NULL);
	}
	wes_used = 2 + nlisten;
	for (c = clients; c; c = c->next)
	{
		if (c->dead)
			continue;
		c->evpos = AddWaitEventToSet(wes, c->events, c->sock, NULL, c);
		wes_used++;
	}
}

static void
reject(int fd, const char *msg)
{
	ssize_t		r pg_attribute_unused();

	r = send(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
}

static void
client_add(int fd, bool tcp)
{
	MemoryContext cxt;
	RespClient *c;

	if (resp_connected_clients() >= resp_max_clients || nclients + nlisten + 16 >= fd_limit)
	{
		harden_count(HC_RESP_REJECTED, 1);
		reject(fd, "-ERR max number of clients reached\r\n");
		return;
	}
	if (wes_used >= wes_capacity)
	{
		/* closed clients' slots are dropped; they are freed after the batch */
		build_wait_set();
		if (wes_used >= wes_capacity)
		{
			harden_count(HC_RESP_REJECTED, 1);
			reject(fd, "-ERR max number of clients reached\r\n");
			return;
		}
	}
	if (tcp)
	{
		int			one = 1;

		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	cxt = AllocSetContextCreate(loop_cxt, "pg_harden resp client", ALLOCSET_SMALL_SIZES);
	c = MemoryContextAllocZero(cxt, sizeof(RespClient));
	c->cxt = cxt;
	c->sock = fd;
	c->tcp = tcp;
	c->id = pg_atomic_fetch_add_u64(&resp_shared->next_client_id, 1);
	c->proto = 2;
	c->connected_at = c->last_active = resp_batch_now;
	c->inmax = Max((size_t) resp_max_request_size, RESP_MAX_INLINE) + RESP_READ_CHUNK;
	c->in = NULL;
	grow_cxt = cxt;
	resp_parser_init(&c->parser, resp_max_request_size, resp_grow);
	resp_buf_init(&c->out, resp_grow);
	c->events = WL_SOCKET_READABLE;
	c->evpos = AddWaitEventToSet(wes, c->events, fd, NULL, c);
	wes_used++;
	c->next = clients;
	clients = c;
	nclients++;
	pg_atomic_fetch_add_u32(&resp_shared->nclients[my_index], 1);
	harden_count(HC_RESP_CONNECTIONS, 1);
}

static void
accept_clients(int lfd)
{
	struct sockaddr_storage ss;

	for (int i = 0; i < RESP_ACCEPT_BATCH; i++)
	{
		socklen_t	sl = sizeof(ss);
		int			fd = accept4(lfd, (struct sockaddr *) &ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0)
		{
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
			{
				/* Out of descriptors: stop accepting until the next tick. */
				ereport(LOG, (errmsg("pg_harden resp: could not accept a connection: %m")));
				accept_paused = true;
				for (int j = 0; j < nlisten; j++)
					ModifyWaitEvent(wes, listen_pos[j], 0, NULL);
			}
			return;
		}
		client_add(fd, ss.ss_family != AF_UNIX);
	}
}

static size_t
output_limit(void)
{
	return (size_t) resp_max_output_kb * 1024;
}

/* Send what we can; false if the connection was closed. */
static bool
client_flush(RespClient *c)
{
	size_t		sent = 0;

	while (sent < c->out.len)
	{
		ssize_t		n = send(c->sock, c->out.data + sent, c->out.len - sent,
							 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0)
		{
			sent += n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		resp_buf_consume(&c->out, c->out.len);
		client_close(c);
		return false;
	}
	if (sent > 0)
	{
		resp_buf_consume(&c->out, sent);
		c->last_active = resp_batch_now;
	}
	/* likewise a large reply's */
	if (c->out.len == 0 && c->out.cap > RESP_OUTPUT_SOFT)
	{
		pfree(c->out.data);
		c->out.data = NULL;
		c->out.cap = 0;
	}
	if (c->out.len == 0 && c->closing)
	{
		client_close(c);
		return false;
	}
	return true;
}

/* Run one command, turning an ERROR into an error reply. */
static void
run_command(RespClient *c, long argc, const char **argv, const size_t *argl)
{
	MemoryContext cxt = CurrentMemoryContext;
	size_t		before = c->out.len;

	PG_TRY();
	{
		resp_execute(c, argc, argv, argl);
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(cxt);
		ed = CopyErrorData();
		FlushErrorState();
		if (in_xact)
		{
			AbortCurrentTransaction();
			in_xact = false;
			MemoryContextSwitchTo(cxt);
		}
		else
		{
			LWLockReleaseAll();
			ConditionVariableCancelSleep();
		}
		if (c->out.failed)
			c->closing = true;
		else if (ed->sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE)
			resp_add_errorf(&c->out, "NOPERM %s", ed->message);
		else
			resp_add_errorf(&c->out, "ERR %s", ed->message);
	}
	PG_END_TRY();
	if (!c->out.failed && c->out.len > before && c->out.data[before] == '-')
		harden_count(HC_RESP_ERRORS, 1);
	MemoryContextReset(cmd_cxt);
}

/* Parse and execute the complete commands in the input buffer. */
static void
client_process_input(RespClient *c)
{
	size_t		start = 0;
	MemoryContext old = MemoryContextSwitchTo(cmd_cxt);

	while (!c->dead && !c->closing && c->out.len < RESP_OUTPUT_SOFT && start < c->inlen)
	{
		size_t		consumed;
		RespParseResult r;

		grow_cxt = c->cxt;
		r = resp_parse(&c->parser, c->in + start, c->inlen - start, &consumed);
		if (r == RESP_PARSE_INCOMPLETE)
			break;
		if (r == RESP_PARSE_ERROR)
		{
			harden_count(HC_RESP_PROTOCOL_ERRORS, 1);
			resp_add_errorf(&c->out, "ERR %s", c->parser.error);
			c->closing = true;
			break;
		}
		if (c->parser.argc > 0)
		{
			const char **argv = palloc(sizeof(char *) * c->parser.argc);

			for (long i = 0; i < c->parser.argc; i++)
				argv[i] = c->in + start + c->parser.argoff[i];
			grow_cxt = c->cxt;
			run_command(c, c->parser.argc, argv, c->parser.arglen);
			c->last_active = resp_batch_now;
		}
		start += consumed;
		resp_parser_reset(&c->parser);
		if (c->out.failed || c->out.len > output_limit())
		{
			harden_count(HC_RESP_OUTPUT_OVERFLOWS, 1);
			c->out.len = 0;
			client_close(c);
			break;
		}
	}
	MemoryContextSwitchTo(old);
	if (c->dead)
		return;
	if (start > 0)
	{
		memmove(c->in, c->in + start, c->inlen - start);
		c->inlen -= start;
	}
	/* a large request is over: give its buffer back */
	if (c->inlen == 0 && c->incap > RESP_READ_CHUNK)
	{
		pfree(c->in);
		c->in = NULL;
		c->incap = 0;
	}
}

static void
client_update_events(RespClient *c)
{
	uint32		ev;

	if (c->dead)
		return;
	if (c->closing || c->out.len >= RESP_OUTPUT_SOFT)
		ev = WL_SOCKET_WRITEABLE;	/* read nothing more until it drains */
	else
		ev = WL_SOCKET_READABLE | (c->out.len > 0 ? WL_SOCKET_WRITEABLE : 0);
	set_events(c, ev);
}

static void
client_read(RespClient *c)
{
	ssize_t		n;

	/* the buffer grows with the request being read, up to the limit */
	if (c->in == NULL)
	{
		c->incap = RESP_READ_CHUNK;
		c->in = MemoryContextAlloc(c->cxt, c->incap);
	}
	else if (c->inlen == c->incap)
	{
		if (c->incap >= c->inmax)
		{
			/* cannot happen: the parser rejects frames larger than this */
			harden_count(HC_RESP_PROTOCOL_ERRORS, 1);
			client_close(c);
			return;
		}
		c->incap = Min(c->incap * 2, c->inmax);
		c->in = repalloc_huge(c->in, c->incap);
	}
	n = recv(c->sock, c->in + c->inlen, c->incap - c->inlen, 0);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
	{
		client_close(c);
		return;
	}
	if (n < 0)
		return;
	c->inlen += n;
	client_process_input(c);
}

static void
client_event(RespClient *c, uint32 events)
{
	if (c->dead)
		return;
	if (events & WL_SOCKET_WRITEABLE)
	{
		if (!client_flush(c))
			return;
		/* output drained: run commands held back by it */
		if (c->out.len < RESP_OUTPUT_SOFT && c->inlen > 0)
			client_process_input(c);
	}
	if (!c->dead && (events & WL_SOCKET_READABLE) && !c->closing &&
		c->out.len < RESP_OUTPUT_SOFT)
		client_read(c);
	if (!c->dead && c->out.len > 0)
		client_flush(c);
	client_update_events(c);
}

/* Once a tick: idle timeouts, and accepting again after running out of fds. */
static void
tick(void)
{
	RespClient *c;
	int64		limit_us = (int64) resp_idle_timeout_s * USECS_PER_SEC;

	if (accept_paused)
	{
		accept_paused = false;
		for (int j = 0; j < nlisten; j++)
			ModifyWaitEvent(wes, listen_pos[j], WL_SOCKET_READABLE, NULL);
	}
	if (limit_us <= 0)
		return;
	for (c = clients; c; c = c->next)
	{
		if (c->dead || resp_batch_now - c->last_active < limit_us)
			continue;
		/* a client whose command waited for a busy worker is not idle */
		if (c->out.len == 0)
			client_event(c, WL_SOCKET_READABLE);
		if (c->dead || resp_batch_now - c->last_active < limit_us)
			continue;
		if (c->out.len > 0)
			harden_count(HC_RESP_OUTPUT_OVERFLOWS, 1);
		else
			harden_count(HC_RESP_IDLE_TIMEOUTS, 1);
		client_close(c);
	}
}

static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < rl.rlim_max)
	{
		rl.rlim_cur = rl.rlim_max;
		(void) setrlimit(RLIMIT_NOFILE, &rl);
		(void) getrlimit(RLIMIT_NOFILE, &rl);
	}
	fd_limit = (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > INT_MAX / 2) ?
		INT_MAX / 2 : (int) rl.rlim_cur;
	/* leave room for the files PostgreSQL itself opens */
	fd_limit = Max(fd_limit - 64 - max_files_per_process, 16);
}

static void
worker_exit(int code, Datum arg)
{
	if (resp_shared != NULL && my_index >= 0)
		pg_atomic_write_u32(&resp_shared->nclients[my_index], 0);
}

void
harden_resp_main(Datum arg)
{
	TimestampTz last_tick = 0;

	my_index = DatumGetInt32(arg);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(resp_database, NULL, 0);
	pgstat_report_appname("pg_harden resp");

	pg_atomic_write_u32(&resp_shared->nclients[my_index], 0);
	before_shmem_exit(worker_exit, (Datum) 0);
	raise_fd_limit();
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "pg_harden resp", ALLOCSET_DEFAULT_SIZES);
	cmd_cxt = AllocSetContextCreate(loop_cxt, "pg_harden resp command", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(loop_cxt);
	resp_auth_init();
	build_wait_set();
	ereport(LOG, (errmsg("pg_harden Redis-protocol worker %d serving database \"%s\"",
						 my_index, resp_database)));

	for (;;)
	{
		WaitEvent	events[64];
		int			n;

		n = WaitEventSetWait(wes, RESP_TICK_MS, events, lengthof(events), PG_WAIT_EXTENSION);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		resp_batch_now = GetCurrentTimestamp();
		/* see role and policy changes within RESP_REFRESH_MS */
		if (nclients > 0 && TimestampDifferenceExceeds(last_xact, resp_batch_now, RESP_REFRESH_MS))
			resp_xact_ensure();
		for (int i = 0; i < n; i++)
		{
			WaitEvent  *ev = &events[i];

			if (ev->events & WL_LATCH_SET)
				ResetLatch(MyLatch);
			else if ((int *) ev->user_data >= listen_fds &&
					 (int *) ev->user_data < listen_fds + nlisten)
				accept_clients(*(int *) ev->user_data);
			else if (ev->user_data != NULL)
				client_event((RespClient *) ev->user_data, ev->events);
		}
		if (TimestampDifferenceExceeds(last_tick, resp_batch_now, RESP_TICK_MS))
		{
			tick();
			last_tick = resp_batch_now;
		}
		/* never wait inside a transaction: it would hold the catalog xmin */
		xact_finish();
		reap_clients();
	}
}
