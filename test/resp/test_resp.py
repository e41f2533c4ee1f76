#!/usr/bin/python3
"""The Redis-protocol endpoint with redis-py (python3-redis) and raw sockets.

Run by test/resp/resp.sh with PGH_RESP_SOCK / PGH_RESP_PORT and the psql
environment (PGHOST, PGPORT, PGUSER) of the throwaway cluster.  Prints one
"ok - ..." or "not ok - ..." line per check.
"""
import os
import random
import resource
import socket
import subprocess
import time
import traceback

import redis

SOCK = os.environ["PGH_RESP_SOCK"]
PORT = int(os.environ["PGH_RESP_PORT"])
DB = "pgh_resp"
FAILED = 0


def check(name, cond, detail=""):
    global FAILED
    if cond:
        print("ok - " + name, flush=True)
    else:
        FAILED += 1
        print("not ok - " + name + (" # " + str(detail) if detail else ""), flush=True)


def run(name, fn):
    """A group of checks; an exception fails the group, not the run."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        check(name + " (raised)", False, repr(e))
        traceback.print_exc()


def sql(q, role=None):
    if role:
        q = "SET ROLE %s; %s" % (role, q)
    out = subprocess.run(["psql", "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", "-d", DB, "-c", q],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError("psql: " + out.stderr.strip())
    return out.stdout.strip()


def client(user=None, pw=None, proto=2, tcp=False):
    kw = dict(socket_timeout=10, decode_responses=True)
    if tcp:
        c = redis.Redis(host="127.0.0.1", port=PORT, username=user, password=pw, **kw)
    else:
        c = redis.Redis(unix_socket_path=SOCK, username=user, password=pw, **kw)
    if proto == 3:
        c.execute_command("HELLO", 3)
    return c


def raw(timeout=5):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(SOCK)
    return s


def recv_all(s, until=None, limit=1 << 20, timeout=5):
    """Read until `until` appears, EOF, or timeout; returns (data, eof)."""
    data = b""
    end = time.time() + timeout
    s.settimeout(0.2)
    while time.time() < end and len(data) < limit:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            if until is not None and until in data:
                break
            continue
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        if not chunk:
            return data, True
        data += chunk
        if until is not None and until in data:
            break
    return data, False


class Reader:
    """A minimal RESP2/RESP3 reply reader over a raw socket."""

    def __init__(self, s):
        self.s = s
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _bytes(self, n):
        while len(self.buf) < n + 2:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t in (b"+",):
            return rest.decode()
        if t == b"-":
            return RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t in (b"$", b"="):
            n = int(rest)
            return None if n < 0 else self._bytes(n)
        if t == b"_":
            return None
        if t in (b"*", b"~"):
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        if t == b"%":
            return {self.read(): self.read() for _ in range(int(rest))}
        raise ValueError("bad reply type %r" % line)


class RespError(str):
    pass


def cmd(s, *args):
    """Send one command as a multibulk frame; return the parsed reply."""
    frame = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        frame += b"$%d\r\n%s\r\n" % (len(a), a)
    s.sendall(frame)
    if not hasattr(s, "reader"):
        s.reader = Reader(s)
    return s.reader.read()


class RawConn:
    def __init__(self, user="pgh_resp_alice", pw="alice-pw"):
        self.s = raw()
        self.r = Reader(self.s)
        if user:
            assert self("AUTH", user, pw) == "OK"

    def __call__(self, *args):
        frame = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            frame += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(frame)
        return self.r.read()


def closed_by_server(s, timeout=8):
    _, eof = recv_all(s, until=None, timeout=timeout)
    return eof


def info(c, section):
    return c.info(section)


def admin():
    return client("pgh_resp_admin", "admin-pw")


def worker_pids():
    out = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_harden resp' ORDER BY pid")
    return [int(x) for x in out.split()] if out else []


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def max_rss():
    return max(rss_kb(p) for p in worker_pids())


def setup():
    sql("""
    DO $$ BEGIN
      IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgh_resp_carol') THEN
        EXECUTE 'DROP OWNED BY pgh_resp_alice, pgh_resp_bob, pgh_resp_carol, pgh_resp_admin';
      END IF;
    END $$;
    DROP ROLE IF EXISTS pgh_resp_alice, pgh_resp_bob, pgh_resp_carol, pgh_resp_nologin,
      pgh_resp_expired, pgh_resp_md5, pgh_resp_admin, pgh_resp_anon;
    CREATE ROLE pgh_resp_alice LOGIN PASSWORD 'alice-pw';
    CREATE ROLE pgh_resp_bob LOGIN PASSWORD 'bob-pw';
    CREATE ROLE pgh_resp_carol LOGIN PASSWORD 'carol-pw';
    GRANT pgh_resp_alice TO pgh_resp_carol;
    CREATE ROLE pgh_resp_nologin NOLOGIN PASSWORD 'x-pw';
    CREATE ROLE pgh_resp_expired LOGIN PASSWORD 'x-pw' VALID UNTIL '2001-01-01';
    CREATE ROLE pgh_resp_admin LOGIN PASSWORD 'admin-pw';
    CREATE ROLE pgh_resp_anon NOLOGIN;
    GRANT USAGE ON SCHEMA harden TO pgh_resp_alice, pgh_resp_bob, pgh_resp_carol;
    CREATE TABLE resp_products (id int PRIMARY KEY, name text, price numeric);
    INSERT INTO resp_products SELECT g, 'product ' || g, g * 1.5 FROM generate_series(1, 100) g;
    GRANT SELECT, UPDATE ON resp_products TO pgh_resp_alice;
    SELECT harden.cache_watch('resp_products');
    DELETE FROM harden.cache_policies WHERE prefix LIKE 'pol:%';
    INSERT INTO harden.cache_policies (prefix, default_ttl, max_ttl) VALUES ('pol:ttl:', '100 seconds', '200 seconds');
    INSERT INTO harden.cache_policies (prefix, secure) VALUES ('pol:sec:', true);
    """)
    sql("SET password_encryption = 'md5'; CREATE ROLE pgh_resp_md5 LOGIN PASSWORD 'md5-pw'")


# ---- protocol and commands ----

def t_basic():
    c = client("pgh_resp_alice", "alice-pw")
    check("PING", c.ping() is True)
    r = RawConn()
    check("PING message", r("PING", "hi") == b"hi")
    check("PING with two arguments is an error", isinstance(r("PING", "a", "b"), RespError))
    check("ECHO", c.echo("hello world") == "hello world")
    check("SELECT 0", r("SELECT", 0) == "OK")
    try:
        c.execute_command("SELECT", 1)
        check("SELECT 1 is an error", False)
    except redis.ResponseError as e:
        check("SELECT 1 is an error", "out of range" in str(e))
    check("SET", c.set("b:1", "v1") is True)
    check("GET", c.get("b:1") == "v1")
    check("GET missing is nil", c.get("b:missing") is None)
    check("SET binary value", c.set("b:bin", b"\x00\x01\r\n\xff") is True)
    check("GET binary value", redis.Redis(unix_socket_path=SOCK, username="pgh_resp_alice",
                                          password="alice-pw").get("b:bin") == b"\x00\x01\r\n\xff")
    check("MGET", c.mget("b:1", "b:missing", "b:1") == ["v1", None, "v1"])
    check("EXISTS counts", c.exists("b:1", "b:missing", "b:1") == 2)
    check("TYPE", c.type("b:1") == "string" and c.type("b:missing") == "none")
    check("SET NX on existing is nil", c.set("b:1", "x", nx=True) is None and c.get("b:1") == "v1")
    check("SET NX on new", c.set("b:nx", "n", nx=True) is True and c.get("b:nx") == "n")
    check("SET XX on missing is nil", c.set("b:xx", "x", xx=True) is None and c.get("b:xx") is None)
    check("SET XX on existing", c.set("b:nx", "n2", xx=True) is True and c.get("b:nx") == "n2")
    check("SET GET returns old", c.set("b:1", "v2", get=True) == "v1" and c.get("b:1") == "v2")
    check("SET GET on missing", c.set("b:g", "g", get=True) is None and c.get("b:g") == "g")
    c.set("b:ex", "e", ex=100)
    check("SET EX, TTL", 98 <= c.ttl("b:ex") <= 100)
    c.set("b:px", "p", px=50000)
    check("SET PX, PTTL", 40000 < c.pttl("b:px") <= 50000)
    c.set("b:exat", "e", exat=int(time.time()) + 300)
    check("SET EXAT", 290 <= c.ttl("b:exat") <= 300)
    c.set("b:pxat", "e", pxat=int(time.time() * 1000) + 300000)
    check("SET PXAT", 290 <= c.ttl("b:pxat") <= 300)
    c.set("b:ex", "kept", keepttl=True)
    check("SET KEEPTTL keeps the TTL", c.get("b:ex") == "kept" and 90 <= c.ttl("b:ex") <= 100)
    c.set("b:ex", "plain")
    check("SET without KEEPTTL clears the TTL", c.ttl("b:ex") == -1)
    check("TTL of missing is -2", c.ttl("b:missing") == -2 and c.pttl("b:missing") == -2)
    check("SETEX", c.setex("b:setex", 60, "s") is True and 58 <= c.ttl("b:setex") <= 60)
    check("PSETEX", c.psetex("b:psetex", 60000, "s") is True and 58 <= c.ttl("b:psetex") <= 60)
    check("EXPIRE", c.expire("b:1", 50) is True and 48 <= c.ttl("b:1") <= 50 and c.get("b:1") == "v2")
    check("PEXPIRE", c.pexpire("b:1", 40000) is True and 38 <= c.ttl("b:1") <= 40)
    check("EXPIRE NX on a key with TTL is 0", c.execute_command("EXPIRE", "b:1", 10, "NX") == 0)
    check("EXPIRE GT", c.execute_command("EXPIRE", "b:1", 45, "GT") == 1 and c.ttl("b:1") > 40)
    check("PERSIST", c.persist("b:1") is True and c.ttl("b:1") == -1 and c.get("b:1") == "v2")
    check("PERSIST without TTL is 0", c.persist("b:1") is False)
    check("EXPIRE missing is 0", c.expire("b:missing", 10) is False)
    c.set("b:short", "x", px=100)
    time.sleep(0.3)
    check("an entry expires", c.get("b:short") is None and c.exists("b:short") == 0)
    check("EXPIRE 0 deletes", c.expire("b:g", 0) is True and c.get("b:g") is None)
    check("DEL counts", c.delete("b:nx", "b:missing", "b:setex") == 2 and c.get("b:nx") is None)
    check("UNLINK", c.unlink("b:psetex") == 1)
    check("SETNX", c.setnx("b:setnx", "1") is True and c.setnx("b:setnx", "2") is False)
    check("CLIENT ID", isinstance(c.client_id(), int) and c.client_id() > 0)
    check("CLIENT GETNAME unset", c.client_getname() is None)
    check("CLIENT SETNAME/GETNAME", c.client_setname("worker-7") is True and c.client_getname() == "worker-7")
    try:
        c.client_setname("bad name")
        check("CLIENT SETNAME with a space is an error", False)
    except redis.ResponseError:
        check("CLIENT SETNAME with a space is an error", True)
    check("COMMAND COUNT", r("COMMAND", "COUNT") > 20)
    ci = r("COMMAND", "INFO", "get", "nosuch")
    check("COMMAND INFO", len(ci) == 2 and ci[0][0] == b"get" and ci[0][1] == 2 and ci[1] is None, ci)
    check("COMMAND DOCS", r("COMMAND", "DOCS") == [])
    check("COMMAND LIST", b"scan" in r("COMMAND", "LIST"))
    check("COMMAND (all)", len(r("COMMAND")) == r("COMMAND", "COUNT"))
    check("CONFIG GET", r("CONFIG", "GET", "save") == [])
    check("CONFIG SET is an error", isinstance(r("CONFIG", "SET", "save", ""), RespError))
    srv = c.info("server")
    check("INFO server", "redis_version" in srv and srv["redis_mode"] == "standalone")
    cl = c.info("clients")
    check("INFO clients", cl["connected_clients"] >= 1 and cl["maxclients"] == 1200)
    check("INFO memory", c.info("memory")["used_memory"] > 0)
    st = c.info("stats")
    check("INFO stats", st["total_commands_processed"] > 10 and st["keyspace_hits"] > 0)
    ks = c.info("keyspace")
    check("INFO keyspace", ks["db0"]["keys"] >= 5)
    check("INFO (all sections)", all(k in c.info() for k in ("redis_version", "connected_clients", "used_memory", "keyspace_hits")))
    check("DBSIZE", c.dbsize() == ks["db0"]["keys"])
    for name, args, msg in [("unknown command", ("FLUSHALL",), "unknown command 'FLUSHALL'"),
                            ("unknown command is named", ("XADD", "s", "*", "a", "1"), "'XADD'"),
                            ("wrong arity", ("GET",), "wrong number of arguments for 'get'"),
                            ("invalid key", ("GET", "bad key"), "invalid cache key"),
                            ("invalid key, too long", ("SET", "k" * 251, "v"), "invalid cache key"),
                            ("SET syntax", ("SET", "b:1", "v", "EX"), "syntax error"),
                            ("SET EX 0", ("SET", "b:1", "v", "EX", "0"), "invalid expire"),
                            ("SET EX not a number", ("SET", "b:1", "v", "EX", "ten"), "not an integer"),
                            ("SET NX XX", ("SET", "b:1", "v", "NX", "XX"), "syntax error"),
                            ("value too large", ("SET", "b:big", "x" * (3 << 20)), "too large"),
                            ("HELLO 4", ("HELLO", "4"), "NOPROTO"),
                            ("SCAN bad cursor", ("SCAN", "x"), "invalid cursor"),
                            ("CLIENT bad subcommand", ("CLIENT", "KILL", "x"), "unknown subcommand")]:
        try:
            c.execute_command(*args)
            check("error: " + name, False, "no error")
        except redis.ResponseError as e:
            check("error: " + name, msg in str(e), str(e))
    check("connection still usable after errors", c.get("b:1") == "v2")


def t_scan():
    c = client("pgh_resp_alice", "alice-pw")
    keys = {"scan:%d" % i for i in range(250)}
    p = c.pipeline(transaction=False)
    for k in keys:
        p.set(k, "x")
    p.execute()
    seen = []
    cursor = 0
    calls = 0
    while True:
        cursor, batch = c.scan(cursor, match="scan:*", count=20)
        seen.extend(batch)
        calls += 1
        if cursor == 0 or calls > 1000:
            break
    check("SCAN MATCH COUNT visits every key once", set(seen) == keys and len(seen) == len(keys),
          "%d seen, %d distinct" % (len(seen), len(set(seen))))
    check("SCAN is paged", calls > 5)
    check("SCAN MATCH with ?", set(c.scan_iter(match="scan:1?")) == {"scan:%d" % i for i in range(10, 20)})
    check("SCAN TYPE hash is empty", c.execute_command("SCAN", 0, "TYPE", "hash")[1] == [])
    bob = client("pgh_resp_bob", "bob-pw")
    check("SCAN shows bob none of alice's keys", not any(k.startswith("scan:") for k in bob.scan_iter(match="scan:*")))
    check("DBSIZE counts only visible keys", bob.dbsize() < c.dbsize())


def t_resp3():
    r = RawConn()
    h = r("HELLO", 3)
    check("HELLO 3 returns the server map", isinstance(h, dict) and h.get(b"proto") == 3 and h.get(b"server") == b"redis", h)
    check("RESP3: GET missing is null", r("GET", "r3:none") is None and r.r.buf == b"")
    check("RESP3: COMMAND INFO uses sets", isinstance(r("COMMAND", "INFO", "get"), list))
    check("RESP3: INFO parses", b"connected_clients" in r("INFO", "clients"))
    h = r("HELLO", 2)
    check("HELLO 2 switches back", isinstance(h, list) and b"proto" in h)
    s = raw()
    s.sendall(b"HELLO 3 AUTH pgh_resp_alice alice-pw\r\nGET r3:missing\r\nSET r3:k v\r\nGET r3:k\r\nINFO clients\r\nCONFIG GET x\r\n")
    data, _ = recv_all(s, until=b"connected_clients", timeout=5)
    data2, _ = recv_all(s, until=b"%0\r\n", timeout=2)
    data += data2
    check("RESP3: HELLO reply is a map", data.startswith(b"%7\r\n"), data[:20])
    check("RESP3: nil is _", b"_\r\n+OK\r\n$1\r\nv\r\n" in data, data[:200])
    check("RESP3: INFO is verbatim text", b"=" in data and b"txt:# Clients" in data)
    check("RESP3: CONFIG GET is an empty map", data.endswith(b"%0\r\n"))
    s.close()
    s = raw()
    s.sendall(b"HELLO 3 AUTH pgh_resp_alice wrong\r\n")
    d, _ = recv_all(s, until=b"\r\n")
    check("HELLO AUTH with a wrong password", d.startswith(b"-WRONGPASS"), d)
    s.close()
    s = raw()
    s.sendall(b"HELLO 3\r\n")
    d, _ = recv_all(s, until=b"\r\n")
    check("HELLO 3 unauthenticated is NOAUTH", d.startswith(b"-NOAUTH"), d)
    s.close()


def t_pipeline():
    c = client("pgh_resp_alice", "alice-pw")
    p = c.pipeline(transaction=False)
    for i in range(2000):
        p.set("pl:%d" % i, str(i))
        p.get("pl:%d" % i)
    r = p.execute()
    check("pipeline of 4000 commands", len(r) == 4000 and all(r[2 * i + 1] == str(i) for i in range(2000)))
    s = raw()
    s.sendall(b"AUTH pgh_resp_alice alice-pw\r\n" + b"".join(
        b"*2\r\n$3\r\nGET\r\n$%d\r\npl:%d\r\n" % (len(b"pl:%d" % i), i) for i in range(500)))
    d, _ = recv_all(s, until=b"$3\r\n499\r\n", timeout=10)
    check("raw multibulk pipeline of 500 GETs", d.startswith(b"+OK\r\n") and d.count(b"\r\n") == 1 + 1000, d[-40:])
    # a frame split into single bytes
    s.sendall(b"")
    for ch in b"*3\r\n$3\r\nSET\r\n$4\r\nsp:1\r\n$5\r\nsplit\r\n":
        s.send(bytes([ch]))
    d, _ = recv_all(s, until=b"\r\n", timeout=3)
    check("a frame sent byte by byte", d == b"+OK\r\n" and c.get("sp:1") == "split", d)
    s.sendall(b"SET inl:1 inline-value\r\nGET inl:1\r\n   \r\nEXISTS inl:1 inl:2\n")
    d, _ = recv_all(s, until=b":1\r\n", timeout=3)
    check("inline commands (CRLF and LF, blank lines skipped)", d == b"+OK\r\n$12\r\ninline-value\r\n:1\r\n", d)
    s.sendall(b"*0\r\n*-1\r\nPING\r\n")
    d, _ = recv_all(s, until=b"PONG\r\n", timeout=3)
    check("empty multibulk frames are skipped", d == b"+PONG\r\n", d)
    s.sendall(b"QUIT\r\n")
    d, eof = recv_all(s, timeout=3)
    check("QUIT replies OK and closes", d == b"+OK\r\n" and eof, d)


def t_tcp():
    c = client("pgh_resp_alice", "alice-pw", tcp=True)
    check("TCP loopback: SET and GET", c.set("tcp:1", "t") and c.get("tcp:1") == "t")


# ---- authentication and roles ----

def t_auth():
    s = raw()
    s.sendall(b"GET b:1\r\nPING\r\n")
    d, _ = recv_all(s, until=b"required.\r\n-NOAUTH Authentication required.\r\n", timeout=3)
    check("commands before AUTH are NOAUTH", d.count(b"-NOAUTH") == 2, d)
    s.sendall(b"AUTH onlypassword\r\n")
    d, _ = recv_all(s, until=b"\r\n", timeout=3)
    check("AUTH with only a password is an error", d.startswith(b"-ERR AUTH needs a role name"), d)
    s.close()
    for name, user, pw in [("wrong password", "pgh_resp_alice", "nope"),
                           ("unknown role", "pgh_resp_nosuch", "x"),
                           ("NOLOGIN role", "pgh_resp_nologin", "x-pw"),
                           ("VALID UNTIL in the past", "pgh_resp_expired", "x-pw"),
                           ("role without a password", "pgh_resp_anon", "")]:
        try:
            client(user, pw or "x").ping()
            check("AUTH refused: " + name, False)
        except redis.AuthenticationError:
            check("AUTH refused: " + name, True)
        except redis.ResponseError as e:
            check("AUTH refused: " + name, "WRONGPASS" in str(e), str(e))
    check("AUTH with a SCRAM-SHA-256 secret",
          sql("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'pgh_resp_alice'") == "t"
          and client("pgh_resp_alice", "alice-pw").ping())
    check("AUTH with an md5 secret",
          sql("SELECT rolpassword LIKE 'md5%' FROM pg_authid WHERE rolname = 'pgh_resp_md5'") == "t"
          and client("pgh_resp_md5", "md5-pw").ping())
    a = admin()
    check("auth failures are counted in INFO", a.info("stats")["pg_harden_auth_failures"] >= 5)
    check("auth failures are counted in metrics()",
          int(sql("SELECT sum(split_part(l, ' ', 2)::numeric) FROM regexp_split_to_table(harden.metrics(), E'\\n') l WHERE l LIKE 'harden_resp_auth_failures_total%'") or 0) >= 5)
    # a password change applies to the next AUTH
    c = client("pgh_resp_md5", "md5-pw")
    c.ping()
    sql("ALTER ROLE pgh_resp_md5 PASSWORD 'new-pw'")
    try:
        client("pgh_resp_md5", "md5-pw").ping()
        check("old password refused after ALTER ROLE", False)
    except (redis.AuthenticationError, redis.ResponseError):
        check("old password refused after ALTER ROLE", True)
    check("new password accepted", client("pgh_resp_md5", "new-pw").ping())
    # NOLOGIN takes effect on an open connection
    check("open connection works", c.ping())
    sql("ALTER ROLE pgh_resp_md5 NOLOGIN")
    time.sleep(0.5)
    try:
        c.ping()
        check("NOLOGIN applies to open connections", False)
    except (redis.AuthenticationError, redis.ResponseError) as e:
        check("NOLOGIN applies to open connections", "uthentication required" in str(e), str(e))
    sql("ALTER ROLE pgh_resp_md5 LOGIN")


def t_roles():
    alice = client("pgh_resp_alice", "alice-pw")
    bob = client("pgh_resp_bob", "bob-pw")
    carol = client("pgh_resp_carol", "carol-pw")
    alice.set("r:a", "alice's")
    check("another role does not see an entry", bob.get("r:a") is None and bob.exists("r:a") == 0)
    check("another role's TTL is -2", bob.ttl("r:a") == -2)
    check("a member of the writer sees it", carol.get("r:a") == "alice's")
    # To a role that may not read it, another role's entry is missing: its
    # SET goes to its own view of the key (no existence oracle, as in SQL).
    check("another role's SET does not touch the entry",
          bob.set("r:a", "bob's") is True and bob.get("r:a") == "bob's"
          and alice.get("r:a") == "alice's" and carol.get("r:a") == "alice's")
    check("another role's DEL deletes only its own view of the key",
          bob.delete("r:a") == 1 and bob.get("r:a") is None and alice.get("r:a") == "alice's")
    check("another role's second DEL deletes nothing", bob.delete("r:a") == 0 and alice.get("r:a") == "alice's")
    check("another role's EXPIRE changes nothing", bob.expire("r:a", 5) is False and alice.ttl("r:a") == -1)
    alice.set("r:b", "alice's")
    check("a member may overwrite; the entry is then the member's",
          carol.set("r:b", "carol's") is True and carol.get("r:b") == "carol's" and alice.get("r:b") is None)
    sql("SELECT harden.cache_set('r:pub', 'public value'::text, public => true)", role="pgh_resp_alice")
    check("a public entry is readable by all", bob.get("r:pub") == "public value")
    try:
        bob.set("r:pub", "x")
        check("a public entry is not writable by others", False)
    except redis.ResponseError as e:
        check("a public entry is not writable by others", "permission denied" in str(e), str(e))
    sql("SELECT harden.cache_set('r:sec', 'secret'::text, secure => true)", role="pgh_resp_alice")
    check("a secure entry is readable by its writer", alice.get("r:sec") == "secret")
    check("a secure entry is not readable by a member", carol.get("r:sec") is None)
    check("a secure entry is not readable by others", bob.get("r:sec") is None)
    check("a secure entry's TTL is capped", 0 < alice.ttl("r:sec") <= 3600)
    check("a secure entry's expiry is not extended", alice.persist("r:sec") is False and alice.ttl("r:sec") > 0)
    alice.set("pol:sec:1", "s")
    check("a secure policy makes a RESP SET secure",
          carol.get("pol:sec:1") is None and alice.get("pol:sec:1") == "s" and 0 < alice.ttl("pol:sec:1") <= 3600)
    alice.set("pol:ttl:1", "t")
    check("a policy's default TTL applies", 98 <= alice.ttl("pol:ttl:1") <= 100)
    alice.set("pol:ttl:2", "t", ex=10000)
    check("a policy's max TTL caps", 198 <= alice.ttl("pol:ttl:2") <= 200)
    # membership changes apply within the documented bound
    sql("REVOKE pgh_resp_alice FROM pgh_resp_carol")
    time.sleep(0.5)
    check("a revoked membership applies to open connections", carol.get("r:a") is None)
    sql("GRANT pgh_resp_alice TO pgh_resp_carol")
    time.sleep(0.5)
    check("a granted membership applies to open connections", carol.get("r:a") == "alice's")
    # unauthenticated use with harden.resp_default_role
    sql("ALTER SYSTEM SET harden.resp_default_role = 'pgh_resp_bob'")
    sql("SELECT pg_reload_conf()")
    time.sleep(1.5)
    anon = redis.Redis(unix_socket_path=SOCK, decode_responses=True, socket_timeout=5)
    check("resp_default_role: unauthenticated clients act as it",
          anon.get("r:pub") == "public value" and anon.get("r:a") is None)
    sql("ALTER SYSTEM RESET harden.resp_default_role")
    sql("SELECT pg_reload_conf()")
    time.sleep(1.5)
    try:
        anon.get("r:pub")
        check("without resp_default_role, AUTH is required again", False)
    except (redis.AuthenticationError, redis.ResponseError) as e:
        check("without resp_default_role, AUTH is required again", "uthentication required" in str(e), str(e))


# ---- SQL <-> RESP ----

def t_coherence():
    alice = client("pgh_resp_alice", "alice-pw")
    sql("SELECT harden.cache_set('co:1', 'from sql'::text)", role="pgh_resp_alice")
    check("SQL cache_set -> RESP GET", alice.get("co:1") == "from sql")
    sql("""SELECT harden.cache_set('co:json', '{"a": 1, "b": [1, 2]}'::jsonb)""", role="pgh_resp_alice")
    check("a jsonb entry is returned as its text", alice.get("co:json") == '{"a": 1, "b": [1, 2]}', alice.get("co:json"))
    alice.set("co:2", "from resp")
    check("RESP SET -> SQL cache_get_text",
          sql("SELECT harden.cache_get_text('co:2')", role="pgh_resp_alice") == "from resp")
    try:
        sql("SELECT harden.cache_get('co:2')", role="pgh_resp_alice")
        check("RESP SET is a text entry (jsonb read is wrong type)", False)
    except RuntimeError as e:
        check("RESP SET is a text entry (jsonb read is wrong type)", "holds text" in str(e), str(e))
    alice.delete("co:1")
    check("RESP DEL -> SQL cache_get_text is NULL",
          sql("SELECT harden.cache_get_text('co:1') IS NULL", role="pgh_resp_alice") == "t")
    sql("SELECT harden.cache_set('co:3', 'x'::text)", role="pgh_resp_alice")
    # cache_delete publishes at commit: RESP sees the entry until then
    p = subprocess.Popen(["psql", "-X", "-At", "-q", "-d", DB], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdin.write("SET ROLE pgh_resp_alice; BEGIN; SELECT harden.cache_delete('co:3'); SELECT pg_sleep(1.5); COMMIT;\n")
    p.stdin.flush()
    time.sleep(0.7)
    before = alice.get("co:3")
    p.stdin.close()
    p.wait()
    check("SQL cache_delete: RESP sees the entry before commit", before == "x")
    check("SQL cache_delete: RESP sees it gone after commit", alice.get("co:3") is None)
    # a cache_query result by its key, fresh only
    r = sql("SELECT harden.cache_query('co:prod:7', 'SELECT id, name FROM resp_products WHERE id = 7')",
            role="pgh_resp_alice")
    got = alice.get("co:prod:7")
    check("a cache_query result is read by its key", got is not None and '"product 7"' in got and got == r, (got, r))
    check("another role does not see the cache_query result", client("pgh_resp_bob", "bob-pw").get("co:prod:7") is None)
    sql("UPDATE resp_products SET name = 'changed' WHERE id = 7", role="pgh_resp_alice")
    check("SQL UPDATE of a table the result read -> RESP GET is nil", alice.get("co:prod:7") is None)
    sql("SELECT harden.cache_query('co:prod:8', 'SELECT id FROM resp_products WHERE id = 8')", role="pgh_resp_alice")
    check("RESP DEL removes the role's cache_query result",
          alice.delete("co:prod:8") == 1 and alice.get("co:prod:8") is None)
    sql("SELECT harden.cache_set('co:tag', 'tagged'::text, tags => ARRAY['t1'])", role="pgh_resp_alice")
    alice.expire("co:tag", 100)
    sql("SELECT harden.cache_invalidate_tag('t1')", role="pgh_resp_alice")
    check("EXPIRE keeps tags: cache_invalidate_tag still removes it", alice.get("co:tag") is None)
    sql("SELECT harden.cache_invalidate('co:*')")
    check("cache_invalidate -> RESP GET is nil", alice.get("co:2") is None)


# ---- hostile clients ----

def t_hostile():
    a = admin()
    base = a.info("stats")
    rss0 = max_rss()
    # random bytes
    closed = 0
    for i in range(20):
        s = raw()
        try:
            s.sendall(os.urandom(random.randint(1, 200000)))
        except (BrokenPipeError, ConnectionResetError):
            pass
        if closed_by_server(s, timeout=5):
            closed += 1
        s.close()
    check("random bytes: the connection is closed", closed == 20, closed)
    # a declared 4 GB bulk
    s = raw()
    s.sendall(b"*2\r\n$3\r\nGET\r\n$4294967296\r\n")
    d, eof = recv_all(s, timeout=3)
    check("4 GB bulk length: error and close at once", d.startswith(b"-ERR Protocol error: invalid bulk length") and eof, d)
    s = raw()
    s.sendall(b"*3\r\n$3\r\nSET\r\n$4\r\nbig1\r\n$9000000\r\n")
    d, eof = recv_all(s, timeout=3)
    check("bulk over harden.resp_max_request_size: error and close", d.startswith(b"-ERR Protocol error") and eof, d)
    s = raw()
    s.sendall(b"*99999999999\r\n")
    d, eof = recv_all(s, timeout=3)
    check("huge multibulk count: error and close", d.startswith(b"-ERR Protocol error: invalid multibulk length") and eof, d)
    s = raw()
    s.sendall(b"*1\r\n+PING\r\n")
    d, eof = recv_all(s, timeout=3)
    check("a non-bulk argument: error and close", d.startswith(b"-ERR Protocol error") and eof, d)
    s = raw()
    s.sendall(b"x" * 70000)
    d, eof = recv_all(s, timeout=3)
    check("an inline line over 64 KB: error and close", d.startswith(b"-ERR Protocol error: too big inline") and eof, d)
    # truncated frames, then the client goes away
    for frame in (b"*3\r\n$3\r\nSET\r\n$1\r\nk", b"*2\r\n$3\r\nGE", b"*", b"*1\r\n$4\r\nPIN"):
        s = raw()
        s.sendall(frame)
        s.close()
    st = a.info("stats")
    check("protocol errors are counted",
          st["pg_harden_protocol_errors"] - base["pg_harden_protocol_errors"] >= 10,
          st["pg_harden_protocol_errors"] - base["pg_harden_protocol_errors"])
    check("the endpoint still answers", a.ping())
    # one byte a second: closed by the idle timeout
    s = raw()
    start = time.time()
    eof = False
    for ch in b"*1\r\n$4\r\nPING\r\n" * 3:
        try:
            s.send(bytes([ch]))
        except (BrokenPipeError, ConnectionResetError):
            eof = True
            break
        d, eof = recv_all(s, timeout=0.5)
        if eof:
            break
    took = time.time() - start
    check("a byte every half second: closed by the idle timeout", eof and 3 <= took <= 9, (eof, took))
    check("idle timeouts are counted", a.info("stats")["pg_harden_idle_timeouts"] > base["pg_harden_idle_timeouts"])
    # a client that never reads its replies
    alice = client("pgh_resp_alice", "alice-pw")
    alice.set("big:1", "v" * 500000)
    s = raw()
    s.sendall(b"AUTH pgh_resp_alice alice-pw\r\n")
    s.setblocking(False)
    req = b"GET big:1\r\n" * 100
    sent = 0
    end = time.time() + 10
    eof = False
    while time.time() < end:
        try:
            sent += s.send(req)
        except BlockingIOError:
            time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            eof = True
            break
    s.close()
    check("a client that never reads: its requests stop being read", sent < 200 * 1024 * 1024, sent)
    check("a client that never reads: disconnected", eof)
    st = a.info("stats")
    check("unread output is counted", st["pg_harden_output_overflows"] > base["pg_harden_output_overflows"])
    # one reply larger than harden.resp_max_output
    s = raw(timeout=20)
    s.sendall(b"AUTH pgh_resp_alice alice-pw\r\nMGET " + b"big:1 " * 100 + b"\r\n")
    d, eof = recv_all(s, limit=1 << 30, timeout=10)
    check("a reply over harden.resp_max_output closes the connection", eof and len(d) < 32 * 1024 * 1024 + 100, len(d))
    s.close()
    check("the endpoint still answers after hostile clients", a.ping())
    rss1 = max_rss()
    check("worker memory stays bounded (RSS grew %d kB)" % (rss1 - rss0), rss1 - rss0 < 150 * 1024, (rss0, rss1))


def t_connections():
    a = admin()
    base = a.info("stats")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))
    rss0 = max_rss()
    # 1,000 concurrent connections, each with a command outstanding
    conns = []
    for i in range(1000):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect(SOCK)
        conns.append(s)
    for i, s in enumerate(conns):
        s.sendall(b"AUTH pgh_resp_alice alice-pw\r\nSET conn:%d %d\r\nGET conn:%d\r\n" % (i, i, i))
    good = 0
    for i, s in enumerate(conns):
        want = b"+OK\r\n+OK\r\n$%d\r\n%d\r\n" % (len(str(i)), i)
        d, _ = recv_all(s, until=want, timeout=10)
        good += d == want
    check("1,000 concurrent connections served", good == 1000, good)
    check("INFO counts 1,000 connected clients", a.info("clients")["connected_clients"] >= 1001)
    check("metrics() counts 1,000 connected clients",
          float(sql("SELECT split_part(l, ' ', 2) FROM regexp_split_to_table(harden.metrics(), E'\\n') l WHERE l LIKE 'harden_resp_connected_clients %'") or 0) >= 1001)
    for s in conns:
        s.close()
    # 10,000 connections: beyond harden.resp_max_clients they get an error and are closed
    conns = []
    refused = 0
    for i in range(10000):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        try:
            s.connect(SOCK)
        except OSError:
            refused += 1
            s.close()
            continue
        conns.append(s)
    time.sleep(1)
    errors = 0
    for s in conns:
        s.setblocking(False)
        try:
            d = s.recv(100)
            if d.startswith(b"-ERR max number of clients reached"):
                errors += 1
        except (BlockingIOError, ConnectionResetError):
            pass
    st = a.info("stats")
    check("10,000 connections: the excess get 'max number of clients'", errors >= 8000, (errors, refused))
    check("rejected connections are counted", st["rejected_connections"] - base["rejected_connections"] >= 8000)
    check("the endpoint answers during 10,000 connections", a.ping())
    for s in conns:
        s.close()
    time.sleep(1.5)
    check("connected_clients falls back", a.info("clients")["connected_clients"] < 50,
          a.info("clients")["connected_clients"])
    rss1 = max_rss()
    check("worker memory stays bounded after 10,000 connections (RSS grew %d kB)" % (rss1 - rss0),
          rss1 - rss0 < 150 * 1024)


def t_restart():
    pids = worker_pids()
    check("harden.resp_workers = 2 workers run", len(pids) == 2, pids)
    c = client("pgh_resp_alice", "alice-pw")
    c.set("rs:1", "survives")
    for pid in pids:
        sql("SELECT pg_terminate_backend(%d)" % pid)
    end = time.time() + 15
    new = []
    while time.time() < end:
        new = worker_pids()
        if len(new) == 2 and not set(new) & set(pids):
            break
        time.sleep(0.2)
    check("terminated workers are restarted", len(new) == 2 and not set(new) & set(pids), (pids, new))
    ok = False
    while time.time() < end and not ok:
        try:
            ok = client("pgh_resp_alice", "alice-pw").get("rs:1") == "survives"
        except redis.ConnectionError:
            time.sleep(0.2)
    check("after a restart the endpoint serves the same cache", ok)
    check("the server did not restart", sql("SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'pg_harden launcher'") == "t")


def main():
    setup()
    for name, fn in [("basic", t_basic), ("scan", t_scan), ("resp3", t_resp3),
                     ("pipeline", t_pipeline), ("tcp", t_tcp), ("auth", t_auth),
                     ("roles", t_roles), ("coherence", t_coherence),
                     ("hostile", t_hostile), ("connections", t_connections),
                     ("restart", t_restart)]:
        run(name, fn)
    return 1 if FAILED else 0


if __name__ == "__main__":
    raise SystemExit(main())
