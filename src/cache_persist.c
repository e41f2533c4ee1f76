/*
 * cache_persist.c
 *	  The cache across restarts: a dump file in the data directory, written
 *	  at clean shutdown (and every harden.cache_dump_interval) by a
 *	  background worker that loads it at start, without blocking connections.
 *
 * Only non-secure entries that are not cache_query() results are written:
 * secure entries never leave shared memory, and a query result's write
 * generations do not survive a restart, so it could not be proven fresh.
 *
 * File layout (integers in host byte order: the file never leaves the data
 * directory of the server that wrote it):
 *
 *	  header	magic "PGHCDUMP", version, flags, written_at, entries, payload length
 *	  plain:	payload, CRC-32C of header and payload
 *	  encrypted: 12-byte IV, AES-256-GCM ciphertext of the payload, 16-byte tag
 *				 (the header is authenticated as additional data)
 *
 * The payload is a sequence of records: a fixed record head, then the key,
 * the tags (NUL-terminated) and the value.  A load checks everything (size,
 * header, checksum or tag, every record) before it inserts anything, so a
 * bad file is ignored as a whole, logged once.
 *
 * Entries are loaded only from a dump written at clean shutdown (after
 * the other backends left) and followed directly by the shutdown
 * checkpoint the server started from: after a crash, or a run without
 * pg_harden preloaded, writes since the dump may have invalidated entries
 * it holds.  A loaded dump is removed, so a later crash does not load it
 * again.
 */
#include "postgres.h"

#include <ctype.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/pg_crc32c.h"
#include "portability/instr_time.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "utils/backend_status.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "pg_harden.h"
#include "cache.h"

#define DUMP_FILE		"pg_harden_cache.dump"
#define DUMP_MAGIC		"PGHCDUMP"
#define DUMP_VERSION	1
#define DUMP_ENCRYPTED	0x01
#define DUMP_CLEAN		0x02	/* written at shutdown, after the other backends left */

#define GCM_IV_LEN		12
#define GCM_TAG_LEN		16
#define KEY_LEN			32

/* How long a shutdown dump waits for the other backends to exit. */
#define SHUTDOWN_WAIT_MS	5000

typedef struct DumpHeader
{
	char		magic[8];
	uint32		version;
	uint32		flags;
	int64		written_at;
	uint64		entries;
	uint64		payload_len;
	uint64		lsn;			/* WAL insert position when written */
} DumpHeader;

typedef struct DumpRecord
{
	Oid			dboid;
	Oid			owner;
	int64		expires_at;		/* TimestampTz; 0: never */
	uint32		tagslen;
	uint32		valuelen;
	uint16		keylen;
	uint8		ntags;
	uint8		type;
	uint8		flags;
	uint8		pad[7];
} DumpRecord;

StaticAssertDecl(sizeof(DumpHeader) == 48, "DumpHeader layout");
StaticAssertDecl(sizeof(DumpRecord) == 40, "DumpRecord layout");

/* What a dump keeps of an entry's flags. */
#define DUMP_ENTRY_FLAGS	CACHE_FLAG_PUBLIC

typedef struct PersistShared
{
	pg_atomic_uint32 loaded;	/* the load at start ran (since shared memory was set up) */
} PersistShared;

static int	cache_dump_interval_s = 0;
static char *cache_dump_key_file = NULL;
static PersistShared *persist_shared = NULL;
static volatile sig_atomic_t got_sigterm = false;

PGDLLEXPORT void cache_persist_main(Datum arg);

void
cache_persist_define_gucs(bool preloading)
{
	DefineCustomIntVariable("harden.cache_dump_interval",
							"Seconds between dumps of the cache to the data directory (0: only at clean shutdown; -1: never).",
							"Only a dump written at clean shutdown is loaded at start.",
							&cache_dump_interval_s,
							0, -1, 86400 * 7,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomStringVariable("harden.cache_dump_key_file",
							   "File holding the 32-byte key that encrypts the cache dump (AES-256-GCM).",
							   "64 hex digits or 32 raw bytes; empty: the dump is not encrypted.",
							   &cache_dump_key_file,
							   "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
}

Size
cache_persist_shmem_size(void)
{
	return MAXALIGN(sizeof(PersistShared));
}

void
cache_persist_shmem_startup(void)
{
	bool		found;

	persist_shared = ShmemInitStruct("pg_harden cache persist", sizeof(PersistShared), &found);
	if (!found)
		pg_atomic_init_u32(&persist_shared->loaded, 0);
}

void
cache_persist_register(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "pg_harden");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "cache_persist_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_harden cache persist");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "pg_harden cache persist");
	bgw.bgw_restart_time = 10;
	RegisterBackgroundWorker(&bgw);
}

/* ---- the key ---- */

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Read the key file into key: 64 hex digits (surrounding whitespace
 * ignored) or exactly 32 raw bytes.  On failure, *why says what is wrong.
 */
static bool
read_key(uint8 *key, const char **why)
{
	char		buf[256];
	int			fd;
	int			n;
	int			start = 0,
				end;

	fd = OpenTransientFile(cache_dump_key_file, O_RDONLY | PG_BINARY);
	if (fd < 0)
	{
		*why = psprintf("the key file \"%s\" cannot be opened: %m", cache_dump_key_file);
		return false;
	}
	n = read(fd, buf, sizeof(buf));
	CloseTransientFile(fd);
	if (n < 0)
	{
		*why = psprintf("the key file \"%s\" cannot be read: %m", cache_dump_key_file);
		return false;
	}
	if (n == KEY_LEN)
	{
		memcpy(key, buf, KEY_LEN);
		explicit_bzero(buf, sizeof(buf));
		return true;
	}
	end = n;
	while (start < end && isspace((unsigned char) buf[start]))
		start++;
	while (end > start && isspace((unsigned char) buf[end - 1]))
		end--;
	if (end - start == 2 * KEY_LEN)
	{
		int			i;

		for (i = 0; i < KEY_LEN; i++)
		{
			int			hi = hex_value(buf[start + 2 * i]);
			int			lo = hex_value(buf[start + 2 * i + 1]);

			if (hi < 0 || lo < 0)
				break;
			key[i] = (uint8) (hi << 4 | lo);
		}
		if (i == KEY_LEN)
		{
			explicit_bzero(buf, sizeof(buf));
			return true;
		}
	}
	explicit_bzero(buf, sizeof(buf));
	explicit_bzero(key, KEY_LEN);
	*why = psprintf("the key file \"%s\" holds neither 64 hex digits nor 32 bytes", cache_dump_key_file);
	return false;
}

static bool
key_configured(void)
{
	return cache_dump_key_file != NULL && cache_dump_key_file[0] != '\0';
}

/*
 * AES-256-GCM in place over buf.  Encrypting fills tag; decrypting checks
 * it.  The header is authenticated as additional data.
 */
static bool
gcm_crypt(bool encrypt, const uint8 *key, const uint8 *iv, const DumpHeader *aad,
		  char *buf, uint64 len, uint8 *tag)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	bool		ok = false;
	int			outl;
	uint64		done = 0;

	if (ctx == NULL)
		return false;
	if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, encrypt ? 1 : 0) != 1 ||
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, GCM_IV_LEN, NULL) != 1 ||
		EVP_CipherInit_ex(ctx, NULL, NULL, key, iv, encrypt ? 1 : 0) != 1 ||
		EVP_CipherUpdate(ctx, NULL, &outl, (const unsigned char *) aad, sizeof(*aad)) != 1)
		goto out;
	while (done < len)
	{
		int			chunk = (int) Min(len - done, (uint64) (1 << 30));

		if (EVP_CipherUpdate(ctx, (unsigned char *) buf + done, &outl,
							 (const unsigned char *) buf + done, chunk) != 1)
			goto out;
		done += chunk;
	}
	if (!encrypt &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, GCM_TAG_LEN, tag) != 1)
		goto out;
	if (EVP_CipherFinal_ex(ctx, NULL, &outl) != 1)
		goto out;
	if (encrypt &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, GCM_TAG_LEN, tag) != 1)
		goto out;
	ok = true;
out:
	EVP_CIPHER_CTX_free(ctx);
	return ok;
}

/* ---- writing ---- */

typedef struct DumpBuffer
{
	char	   *data;
	uint64		len;
	uint64		cap;
	uint64		entries;
	bool		failed;			/* out of memory: the dump is not written */
} DumpBuffer;

static bool
buffer_reserve(DumpBuffer *b, uint64 more)
{
	uint64		cap = b->cap;
	char	   *p;

	if (b->len + more <= b->cap)
		return true;
	while (cap < b->len + more)
		cap *= 2;
	if (cap >= MaxAllocHugeSize)
		return false;
	/* No error under the store's partition lock: a failed dump is reported after the scan. */
	p = MemoryContextAllocExtended(CurrentMemoryContext, cap, MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
	if (p == NULL)
		return false;
	memcpy(p, b->data, b->len);
	pfree(b->data);
	b->data = p;
	b->cap = cap;
	return true;
}

static bool
dumpable(const CacheEntryInfo *e)
{
	return (e->flags & (CACHE_FLAG_SECURE | CACHE_FLAG_QUERY)) == 0 &&
		(e->stored_keylen == 0 || e->stored_key[0] != CACHE_QUERY_MARK);
}

static CacheScanAction
dump_entry(const CacheEntryInfo *e, void *arg)
{
	DumpBuffer *b = arg;
	DumpRecord	r;
	Size		tagslen = 0;
	const char *t = e->tags;

	if (!dumpable(e))
		return CACHE_SCAN_KEEP;
	for (int i = 0; i < e->ntags; i++)
	{
		Size		l = strlen(t) + 1;

		tagslen += l;
		t += l;
	}
	if (!buffer_reserve(b, sizeof(r) + e->stored_keylen + tagslen + e->valuelen))
	{
		b->failed = true;
		return CACHE_SCAN_STOP;
	}
	memset(&r, 0, sizeof(r));
	r.dboid = e->dboid;
	r.owner = e->owner;
	r.expires_at = e->expires_at;
	r.tagslen = (uint32) tagslen;
	r.valuelen = (uint32) e->valuelen;
	r.keylen = (uint16) e->stored_keylen;
	r.ntags = (uint8) e->ntags;
	r.type = (uint8) e->type;
	r.flags = e->flags & DUMP_ENTRY_FLAGS;
	memcpy(b->data + b->len, &r, sizeof(r));
	b->len += sizeof(r);
	memcpy(b->data + b->len, e->stored_key, e->stored_keylen);
	b->len += e->stored_keylen;
	memcpy(b->data + b->len, e->tags, tagslen);
	b->len += tagslen;
	memcpy(b->data + b->len, e->value, e->valuelen);
	b->len += e->valuelen;
	b->entries++;
	return CACHE_SCAN_KEEP;
}

static void
write_all(int fd, const char *path, const void *data, uint64 len)
{
	const char *p = data;

	while (len > 0)
	{
		ssize_t		n = write(fd, p, Min(len, (uint64) (1 << 30)));

		if (n <= 0)
		{
			if (n < 0 && errno == EINTR)
				continue;
			if (n == 0)
				errno = ENOSPC;
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not write file \"%s\": %m", path)));
		}
		p += n;
		len -= n;
	}
}

/*
 * Write the dump: to a temporary name, fsynced, then renamed over the
 * file, so a reader sees the old file or the new one.  Returns the number
 * of entries written, or -1 if nothing was written (logged).
 */
static int64
dump_write(bool clean)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_harden cache dump",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	DumpBuffer	b = {0};
	DumpHeader	h;
	uint8		key[KEY_LEN];
	uint8		iv[GCM_IV_LEN];
	uint8		tag[GCM_TAG_LEN];
	bool		encrypt = key_configured();
	const char *why = NULL;
	char		tmp[MAXPGPATH];
	int			fd;
	int64		result = -1;

	if (encrypt && !read_key(key, &why))
	{
		ereport(WARNING,
				(errcode(ERRCODE_HARDEN_CACHE_DUMP_KEY),
				 errmsg("pg_harden cache dump not written"),
				 errdetail("%s", why),
				 errhint("Fix harden.cache_dump_key_file; the dump is never written unencrypted while it is set.")));
		goto done;
	}

	b.cap = 64 * 1024;
	b.data = palloc(b.cap);
	cache_store_scan_all(dump_entry, &b);
	if (b.failed)
	{
		ereport(WARNING,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("pg_harden cache dump not written"),
				 errdetail("The dump of %llu bytes could not be built in memory.",
						   (unsigned long long) b.len)));
		goto done;
	}

	memset(&h, 0, sizeof(h));
	memcpy(h.magic, DUMP_MAGIC, sizeof(h.magic));
	h.version = DUMP_VERSION;
	h.flags = (encrypt ? DUMP_ENCRYPTED : 0) | (clean ? DUMP_CLEAN : 0);
	h.written_at = GetCurrentTimestamp();
	h.entries = b.entries;
	h.payload_len = b.len;
	h.lsn = GetXLogInsertRecPtr();

	if (encrypt)
	{
		if (!pg_strong_random(iv, sizeof(iv)) ||
			!gcm_crypt(true, key, iv, &h, b.data, b.len, tag))
		{
			ereport(WARNING,
					(errcode(ERRCODE_HARDEN_CACHE_DUMP_KEY),
					 errmsg("pg_harden cache dump not written"),
					 errdetail("The dump could not be encrypted.")));
			goto done;
		}
	}

	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", DUMP_FILE, MyProcPid);
	fd = OpenTransientFile(tmp, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create file \"%s\": %m", tmp)));
	PG_TRY();
	{
		write_all(fd, tmp, &h, sizeof(h));
		if (encrypt)
		{
			write_all(fd, tmp, iv, sizeof(iv));
			write_all(fd, tmp, b.data, b.len);
			write_all(fd, tmp, tag, sizeof(tag));
		}
		else
		{
			pg_crc32c	crc;

			INIT_CRC32C(crc);
			COMP_CRC32C(crc, &h, sizeof(h));
			COMP_CRC32C(crc, b.data, b.len);
			FIN_CRC32C(crc);
			write_all(fd, tmp, b.data, b.len);
			write_all(fd, tmp, &crc, sizeof(crc));
		}
	}
	PG_CATCH();
	{
		CloseTransientFile(fd);
		unlink(tmp);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (CloseTransientFile(fd) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not close file \"%s\": %m", tmp)));
	/* fsyncs the new file, renames it, fsyncs the directory */
	if (durable_rename(tmp, DUMP_FILE, ERROR) != 0)
		goto done;
	result = (int64) b.entries;

done:
	explicit_bzero(key, sizeof(key));
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return result;
}

/* ---- loading ---- */

typedef struct LoadedEntry
{
	DumpRecord	rec;			/* a copy, aligned */
	const char *key;
	const char *tags;
	const char *value;
} LoadedEntry;

/* The whole file, or NULL with *why set (a missing file is not an error). */
static char *
read_file(uint64 *len, bool *missing, const char **why)
{
	int			fd;
	struct stat st;
	char	   *data;
	uint64		done = 0;

	*missing = false;
	fd = OpenTransientFile(DUMP_FILE, O_RDONLY | PG_BINARY);
	if (fd < 0)
	{
		if (errno == ENOENT)
			*missing = true;
		else
			*why = psprintf("it cannot be opened: %m");
		return NULL;
	}
	if (fstat(fd, &st) != 0 || st.st_size < 0 || (uint64) st.st_size >= MaxAllocHugeSize)
	{
		CloseTransientFile(fd);
		*why = "its size cannot be read or is too large";
		return NULL;
	}
	data = MemoryContextAllocExtended(CurrentMemoryContext, Max(st.st_size, 1),
									  MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
	if (data == NULL)
	{
		CloseTransientFile(fd);
		*why = "there is not enough memory to read it";
		return NULL;
	}
	while (done < (uint64) st.st_size)
	{
		ssize_t		n = read(fd, data + done, Min((uint64) st.st_size - done, (uint64) (1 << 30)));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
		{
			CloseTransientFile(fd);
			*why = n < 0 ? psprintf("it cannot be read: %m") : "it shrank while being read";
			return NULL;
		}
		done += n;
	}
	CloseTransientFile(fd);
	*len = done;
	return data;
}

/* Whether tags holds exactly ntags non-empty NUL-terminated tags. */
static bool
tags_valid(const char *tags, uint32 tagslen, int ntags)
{
	uint32		pos = 0;

	for (int i = 0; i < ntags; i++)
	{
		const char *end = memchr(tags + pos, '\0', tagslen - pos);

		if (end == NULL || end == tags + pos)
			return false;
		pos = (end - tags) + 1;
	}
	return pos == tagslen;
}

/* A user key: the bytes cache_set accepts (PH101). */
static bool
user_key_valid(const char *key, int keylen)
{
	if (keylen < 1 || keylen > CACHE_MAX_KEY_LEN)
		return false;
	for (int i = 0; i < keylen; i++)
	{
		char		c = key[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  c == ':' || c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

/* A stored key: a user key, or a role's shadow of one; never a query result's. */
static bool
key_valid(const char *key, int keylen)
{
	if (keylen >= 1 && key[0] == CACHE_SHADOW_MARK)
	{
		for (int i = 1; i < CACHE_QUERY_PREFIX_LEN && i < keylen; i++)
			if (!isxdigit((unsigned char) key[i]))
				return false;
		return keylen > CACHE_QUERY_PREFIX_LEN &&
			user_key_valid(key + CACHE_QUERY_PREFIX_LEN, keylen - CACHE_QUERY_PREFIX_LEN);
	}
	return user_key_valid(key, keylen);
}

/*
 * Check every record of the payload; fill entries.  Nothing is inserted
 * here, so a bad record rejects the whole file.
 */
static bool
parse_payload(const char *p, uint64 len, uint64 count, LoadedEntry *entries, const char **why)
{
	uint64		pos = 0;

	for (uint64 i = 0; i < count; i++)
	{
		DumpRecord *r = &entries[i].rec;
		uint64		need;

		if (len - pos < sizeof(DumpRecord))
		{
			*why = psprintf("record %llu is cut short", (unsigned long long) i + 1);
			return false;
		}
		memcpy(r, p + pos, sizeof(DumpRecord));
		pos += sizeof(DumpRecord);
		need = (uint64) r->keylen + r->tagslen + r->valuelen;
		if (len - pos < need)
		{
			*why = psprintf("record %llu is cut short", (unsigned long long) i + 1);
			return false;
		}
		if (!key_valid(p + pos, r->keylen) ||
			r->ntags > CACHE_MAX_TAGS ||
			!tags_valid(p + pos + r->keylen, r->tagslen, r->ntags) ||
			r->type < CACHE_JSONB || r->type > CACHE_BYTEA ||
			(r->flags & ~DUMP_ENTRY_FLAGS) != 0 ||
			!cache_value_fits(r->valuelen) ||
			!OidIsValid(r->dboid) || !OidIsValid(r->owner))
		{
			*why = psprintf("record %llu is not a valid entry", (unsigned long long) i + 1);
			return false;
		}
		entries[i].key = p + pos;
		entries[i].tags = p + pos + r->keylen;
		entries[i].value = p + pos + r->keylen + r->tagslen;
		pos += need;
	}
	if (pos != len)
	{
		*why = "it has data after its last record";
		return false;
	}
	return true;
}

/*
 * Read and check the file: returns the payload (decrypted) and its header,
 * or NULL with *why (a missing file: NULL with *why NULL).
 */
static char *
load_verified(DumpHeader *h, uint64 *payload_len, const char **why)
{
	uint64		len;
	bool		missing;
	char	   *data = read_file(&len, &missing, why);
	bool		encrypted;
	uint64		overhead;
	char	   *payload;

	if (data == NULL)
		return NULL;
	if (len < sizeof(DumpHeader))
	{
		*why = "it is shorter than its header";
		return NULL;
	}
	memcpy(h, data, sizeof(DumpHeader));
	if (memcmp(h->magic, DUMP_MAGIC, sizeof(h->magic)) != 0)
	{
		*why = "it does not start with the dump file's magic number";
		return NULL;
	}
	if (h->version != DUMP_VERSION)
	{
		*why = psprintf("its format version is %u, this server reads %d", h->version, DUMP_VERSION);
		return NULL;
	}
	if ((h->flags & ~(DUMP_ENCRYPTED | DUMP_CLEAN)) != 0)
	{
		*why = "its header has unknown flags";
		return NULL;
	}
	encrypted = (h->flags & DUMP_ENCRYPTED) != 0;
	overhead = sizeof(DumpHeader) + (encrypted ? GCM_IV_LEN + GCM_TAG_LEN : sizeof(pg_crc32c));
	if (len < overhead || h->payload_len != len - overhead)
	{
		*why = psprintf("its size (%llu bytes) does not match its header", (unsigned long long) len);
		return NULL;
	}
	if (h->entries > h->payload_len / sizeof(DumpRecord))
	{
		*why = "its entry count does not match its size";
		return NULL;
	}
	payload = data + sizeof(DumpHeader) + (encrypted ? GCM_IV_LEN : 0);
	if (encrypted != key_configured())
	{
		*why = encrypted ? "it is encrypted, but harden.cache_dump_key_file is not set" :
			"it is not encrypted, but harden.cache_dump_key_file is set";
		return NULL;
	}
	if (encrypted)
	{
		uint8		key[KEY_LEN];
		uint8		tag[GCM_TAG_LEN];
		bool		ok;

		if (!read_key(key, why))
			return NULL;
		memcpy(tag, payload + h->payload_len, GCM_TAG_LEN);
		ok = gcm_crypt(false, key, (uint8 *) data + sizeof(DumpHeader), h, payload,
					   h->payload_len, tag);
		explicit_bzero(key, sizeof(key));
		if (!ok)
		{
			explicit_bzero(payload, h->payload_len);
			*why = "it fails authentication (wrong key, or the file was altered)";
			return NULL;
		}
	}
	else
	{
		pg_crc32c	crc,
					stored;

		INIT_CRC32C(crc);
		COMP_CRC32C(crc, data, sizeof(DumpHeader));
		COMP_CRC32C(crc, payload, h->payload_len);
		FIN_CRC32C(crc);
		memcpy(&stored, payload + h->payload_len, sizeof(stored));
		if (!EQ_CRC32C(crc, stored))
		{
			*why = "its checksum does not match (the file is corrupt)";
			return NULL;
		}
	}
	*payload_len = h->payload_len;
	return payload;
}

typedef struct LoadCounts
{
	uint64		loaded;
	uint64		dropped;
} LoadCounts;

/* Whether the entry's database and owner still exist (catalog access). */
static bool
entry_owner_exists(const DumpRecord *r, Oid *last_db, bool *db_ok, Oid *last_role, bool *role_ok)
{
	if (r->dboid != *last_db)
	{
		*last_db = r->dboid;
		*db_ok = SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(r->dboid));
	}
	if (r->owner != *last_role)
	{
		*last_role = r->owner;
		*role_ok = SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(r->owner));
	}
	return *db_ok && *role_ok;
}

static void
insert_entries(LoadedEntry *entries, uint64 n, uint64 since, LoadCounts *c)
{
	TimestampTz now = GetCurrentTimestamp();
	Oid			last_db = InvalidOid,
				last_role = InvalidOid,
				count_db = InvalidOid;
	bool		db_ok = false,
				role_ok = false;
	uint64		loaded = 0,
				dropped = 0;

	StartTransactionCommand();
	for (uint64 i = 0; i <= n; i++)
	{
		const DumpRecord *r = i < n ? &entries[i].rec : NULL;
		CacheItem	item;
		bool		ok;

		/* Counted per database in runs: a lookup of its slot per run, not per entry. */
		if (r == NULL || r->dboid != count_db)
		{
			if (loaded > 0)
				harden_count_db(count_db, HC_CACHE_DUMP_LOADED, loaded);
			if (dropped > 0)
				harden_count_db(count_db, HC_CACHE_DUMP_DROPPED, dropped);
			c->loaded += loaded;
			c->dropped += dropped;
			loaded = dropped = 0;
			if (r == NULL)
				break;
			count_db = r->dboid;
		}
		if ((i & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
		if ((r->expires_at != 0 && r->expires_at <= now) ||
			!entry_owner_exists(r, &last_db, &db_ok, &last_role, &role_ok))
		{
			dropped++;
			continue;
		}
		memset(&item, 0, sizeof(item));
		item.key = entries[i].key;
		item.keylen = r->keylen;
		item.type = (CacheValueType) r->type;
		item.value = entries[i].value;
		item.valuelen = r->valuelen;
		item.tags = entries[i].tags;
		item.tagslen = r->tagslen;
		item.ntags = r->ntags;
		item.expires_at = r->expires_at;
		item.owner = r->owner;
		item.flags = r->flags;
		ok = cache_store_load(r->dboid, &item, since);
		if (ok)
			loaded++;
		else
			dropped++;
	}
	CommitTransactionCommand();
}

static void
reject(const char *why)
{
	harden_count_db(InvalidOid, HC_CACHE_DUMP_REJECTED, 1);
	ereport(WARNING,
			(errcode(ERRCODE_HARDEN_CACHE_DUMP_INVALID),
			 errmsg("pg_harden cache dump file \"%s\" ignored", DUMP_FILE),
			 errdetail("The file was not loaded because %s.", why),
			 errhint("The cache starts empty; the file is replaced at the next dump.")));
}

/*
 * Whether the dump was written at a clean shutdown with nothing written to
 * WAL between it and the shutdown checkpoint this server started from
 * (the checkpoint's redo point may only have skipped a page header, or
 * the rest of the segment when archiving).  Another run of the server in
 * between, even one without pg_harden, wrote at least its own checkpoint.
 */
static bool
dump_is_current(const DumpHeader *h)
{
	XLogRecPtr	redo = GetRedoRecPtr();
	XLogSegNo	dump_seg,
				redo_seg;

	if ((h->flags & DUMP_CLEAN) == 0 || h->lsn > redo)
		return false;
	if (redo - h->lsn <= SizeOfXLogLongPHD)
		return true;
	/* With archiving, the shutdown switches to a new segment first. */
	XLByteToSeg(h->lsn, dump_seg, wal_segment_size);
	XLByteToSeg(redo, redo_seg, wal_segment_size);
	return redo_seg == dump_seg + 1 &&
		XLogSegmentOffset(redo, wal_segment_size) == SizeOfXLogLongPHD;
}

static void
dump_load(void)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "pg_harden cache load",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	DumpHeader	h;
	uint64		len;
	const char *why = NULL;
	char	   *payload;
	LoadedEntry *entries;
	LoadCounts	c = {0};
	uint64		since;
	instr_time	start,
				elapsed;

	INSTR_TIME_SET_CURRENT(start);
	payload = load_verified(&h, &len, &why);
	if (payload == NULL)
	{
		if (why != NULL)
			reject(why);
		goto done;
	}
	if (!dump_is_current(&h))
	{
		ereport(LOG,
				(errmsg("pg_harden cache dump file \"%s\" not loaded", DUMP_FILE),
				 errdetail("It was not written at the clean shutdown this server started from: writes since may have invalidated its entries.")));
		goto done;
	}
	entries = MemoryContextAllocExtended(cxt, Max(h.entries, 1) * sizeof(LoadedEntry),
										 MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
	if (entries == NULL)
	{
		reject("there is not enough memory to load it");
		goto done;
	}
	if (!parse_payload(payload, len, h.entries, entries, &why))
	{
		reject(why);
		goto done;
	}

	/*
	 * Invalidations are logged while the load runs (as for a lease), so an
	 * entry a write invalidated meanwhile is not brought back.
	 */
	since = cache_store_lease_begin(GetCurrentTimestamp() + 3600 * USECS_PER_SEC);
	insert_entries(entries, h.entries, since, &c);
	/* A later crash must not load this dump again. */
	if (unlink(DUMP_FILE) != 0 && errno != ENOENT)
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not remove file \"%s\": %m", DUMP_FILE)));
	INSTR_TIME_SET_CURRENT(elapsed);
	INSTR_TIME_SUBTRACT(elapsed, start);
	ereport(LOG,
			(errmsg("pg_harden cache: loaded %llu entries from \"%s\" in %.3f ms (%llu dropped)",
					(unsigned long long) c.loaded, DUMP_FILE,
					INSTR_TIME_GET_MILLISEC(elapsed), (unsigned long long) c.dropped)));
done:
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}

/* ---- the worker ---- */

static void
persist_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * Client backends and background workers still running: the processes
 * that could write to a table.  Walsenders stay until after the shutdown
 * checkpoint and write nothing, so they are not waited for.
 */
static int
writers_running(void)
{
	int			n = 0;
	int			nbackends;

	pgstat_clear_snapshot();
	nbackends = pgstat_fetch_stat_numbackends();
	for (int i = 1; i <= nbackends; i++)
	{
		LocalPgBackendStatus *l = pgstat_fetch_stat_local_beentry(i);

		if (l == NULL || l->backendStatus.st_procpid == MyProcPid ||
			l->backendStatus.st_procpid == 0)
			continue;
		if (l->backendStatus.st_backendType == B_BACKEND ||
			l->backendStatus.st_backendType == B_BG_WORKER)
			n++;
	}
	pgstat_clear_snapshot();
	return n;
}

/*
 * At shutdown the other backends are told to exit at the same time as we
 * are: wait for them, so no write after the dump invalidates what it holds.
 * Returns whether they all left in time (else the dump is not "clean").
 */
static bool
wait_for_backends(void)
{
	for (int waited = 0; waited < SHUTDOWN_WAIT_MS; waited += 10)
	{
		if (writers_running() == 0)
			return true;
		pg_usleep(10 * 1000L);
	}
	return false;
}

static void
dump_logged(bool clean)
{
	int64		n = dump_write(clean);

	if (n >= 0)
	{
		ereport(clean ? LOG : DEBUG1,
				(errmsg("pg_harden cache: wrote %lld entries to \"%s\"", (long long) n, DUMP_FILE)));
	}
}

void
cache_persist_main(Datum arg)
{
	TimestampTz last_dump = GetCurrentTimestamp();

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, persist_sigterm);
	BackgroundWorkerUnblockSignals();
	/* Shared catalogs only: roles and databases. */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("pg_harden cache persist");

	if (pg_atomic_exchange_u32(&persist_shared->loaded, 1) == 0 && cache_dump_interval_s >= 0)
		dump_load();

	while (!got_sigterm)
	{
		long		timeout = -1;
		int			events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;

		if (cache_dump_interval_s > 0)
		{
			TimestampTz next = TimestampTzPlusMilliseconds(last_dump, cache_dump_interval_s * 1000L);

			timeout = Max(TimestampDifferenceMilliseconds(GetCurrentTimestamp(), next), 1);
			events |= WL_TIMEOUT;
		}
		(void) WaitLatch(MyLatch, events, timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		/* Absorbs barriers (DROP DATABASE waits for them); SIGTERM only sets got_sigterm. */
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (got_sigterm)
			break;
		if (cache_dump_interval_s > 0 &&
			TimestampDifferenceExceeds(last_dump, GetCurrentTimestamp(), cache_dump_interval_s * 1000))
		{
			dump_logged(false);
			last_dump = GetCurrentTimestamp();
		}
	}
	if (cache_dump_interval_s >= 0)
		dump_logged(wait_for_backends());
	proc_exit(0);
}

/* ---- SQL ---- */

PG_FUNCTION_INFO_V1(harden_cache_dump);

/*
 * harden.cache_dump(): write the dump file now; the number of entries
 * written.  Not "clean": a crash after it must not load it.
 */
Datum
harden_cache_dump(PG_FUNCTION_ARGS)
{
	int64		n;

	harden_require_shmem("harden.cache_dump()");
	if (cache_dump_interval_s < 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the cache dump is turned off"),
				 errdetail("harden.cache_dump_interval is -1."),
				 errhint("Set harden.cache_dump_interval to 0 or more.")));
	n = dump_write(false);
	if (n < 0)
		ereport(ERROR,
				(errcode(ERRCODE_HARDEN_CACHE_DUMP_KEY),
				 errmsg("the cache dump was not written"),
				 errdetail("See the preceding warning.")));
	PG_RETURN_INT64(n);
}
