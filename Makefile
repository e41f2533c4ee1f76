# pg_harden: PGXS build.
#
#   make / make install     build and install the extension
#   make test               the whole suite on a throwaway cluster
#   make demo               the shop walk-through on a throwaway cluster
#   make bench              side-by-side benchmarks, printed as a table
#   make stress             sqlsmith, a randomized workload and the 1M-call memory check

EXTENSION   = pg_harden
MODULE_big  = pg_harden
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
DATA        = $(sort $(wildcard sql/pg_harden--*.sql))

# Every sql/*.sql that is not a versioned script is a pg_regress test.
REGRESS      = $(sort $(patsubst sql/%.sql,%,$(filter-out sql/pg_harden--%,$(wildcard sql/*.sql))))
REGRESS_OPTS = --load-extension=pg_harden
ISOLATION    = $(sort $(patsubst test/specs/%.spec,%,$(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test --load-extension=pg_harden

PG_CPPFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers
EXTRA_CLEAN = results regression.diffs regression.out output_iso

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS does not track headers: every object depends on all of ours.
$(OBJS): $(wildcard src/*.h)

.PHONY: test demo bench stress list-tests

test:
	bash test/run.sh

demo:
	bash test/demo/run.sh

bench:
	bash test/bench/run.sh

stress:
	bash test/stress/run.sh

# Used by the scripts in test/ so the test lists are defined once, here.
list-tests:
	@echo "REGRESS=$(REGRESS)"
	@echo "ISOLATION=$(ISOLATION)"
