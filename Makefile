# pg_harden: PGXS build.
#
#   make / make install     build and install the extension
#   make test               the whole suite on a throwaway cluster
#   make demo               the shop walk-through on a throwaway cluster
#   make bench              side-by-side benchmarks, printed as a table
#   make stress             sqlsmith, a randomized workload and the 1M-call memory check
#   make sanitize           the suite with pg_harden built with ASan and UBSan
#
# Two install paths (docs/upgrading.md).  sql/pg_harden.sql is the full
# script of the newest version, the one place to edit it; the build copies
# it to sql/pg_harden--$(EXTVERSION).sql, so CREATE EXTENSION of the newest
# version runs it alone.  The other sql/pg_harden--*.sql are frozen: the
# 0.1.0 full script and the upgrade chain, which ALTER EXTENSION ... UPDATE
# runs.  A change of the SQL surface goes into both sql/pg_harden.sql and
# the newest upgrade script; test/upgrade.sh fails, naming the objects, when
# an upgraded database and a fresh install differ.

EXTENSION   = pg_harden
EXTVERSION  = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" pg_harden.control)
MODULE_big  = pg_harden
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
DATA_built  = sql/pg_harden--$(EXTVERSION).sql
DATA        = $(filter-out $(DATA_built),$(sort $(wildcard sql/pg_harden--*.sql)))

# Every sql/*.sql that is not an extension script is a pg_regress test.
REGRESS      = $(sort $(patsubst sql/%.sql,%,$(filter-out sql/pg_harden--% sql/pg_harden.sql,$(wildcard sql/*.sql))))
REGRESS_OPTS = --load-extension=pg_harden
ISOLATION    = $(sort $(patsubst test/specs/%.spec,%,$(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test --load-extension=pg_harden

PG_CPPFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers
ifdef SANITIZE
PG_CPPFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -g
PG_LDFLAGS  += -fsanitize=address,undefined
# Without a preloaded runtime ASan cannot see PostgreSQL's siglongjmp out of
# an error, and stale stack poisoning gives false reports: no stack checks.
ifeq ($(SANITIZE),nopreload)
PG_CPPFLAGS += --param asan-stack=0
endif
endif
# The cache dump's AES-256-GCM (cache_persist.c): the libcrypto PostgreSQL uses.
SHLIB_LINK  = -lcrypto
EXTRA_CLEAN = results regression.diffs regression.out output_iso

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

ifdef SANITIZE
# No JIT bitcode for an instrumented build (the cluster runs with jit = off).
with_llvm = no
endif

sql/pg_harden--$(EXTVERSION).sql: sql/pg_harden.sql pg_harden.control
	cp $< $@

# PGXS does not track headers: every object depends on all of ours.
$(OBJS): $(wildcard src/*.h)

.PHONY: test demo bench stress sanitize list-tests

test:
	bash test/run.sh

demo:
	bash test/demo/run.sh

bench:
	bash test/bench/run.sh

stress:
	bash test/stress/run.sh

# SANITIZE=1 builds with AddressSanitizer and UndefinedBehaviorSanitizer;
# test/run.sh then starts the server with their runtime loaded (see
# pgh_sanitizer_env in test/lib.sh).
sanitize:
	SANITIZE=1 bash test/run.sh

# Used by the scripts in test/ so the test lists are defined once, here.
list-tests:
	@echo "REGRESS=$(REGRESS)"
	@echo "ISOLATION=$(ISOLATION)"
