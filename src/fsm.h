/*
 * fsm.h
 *	  Interface between the state-machine files: the rule parser
 *	  (fsm_parse.c), the definition cache, trigger and audit (fsm.c), and the
 *	  SQL functions (fsm_sql.c).
 */
#ifndef PG_HARDEN_FSM_H
#define PG_HARDEN_FSM_H

#include "datatype/timestamp.h"
#include "access/htup.h"
#include "utils/relcache.h"

/* State and event names are at most NAMEDATALEN - 1 bytes. */
#define FSM_MAX_NAME		(NAMEDATALEN - 1)
#define FSM_MAX_MACHINE_NAME 48
#define FSM_MAX_STATES		1000
#define FSM_MAX_TRANSITIONS	10000
#define FSM_MAX_RULES_LEN	(1024 * 1024)

/* The trigger every attachment installs, and its name prefix. */
#define FSM_TRIGGER_PREFIX	"harden_fsm_"

/* ---- fsm_parse.c: a definition as parsed from the rule language ---- */

typedef struct FsmDefTransition
{
	int			from;
	int			to;
	char	   *event;			/* NULL: none */
	bool		timed;
	Interval	after;			/* when timed */
} FsmDefTransition;

typedef struct FsmDef
{
	int			nstates;
	char	  **states;			/* in order of first mention */
	bool	   *initial;
	int			ntrans;
	FsmDefTransition *trans;
} FsmDef;

extern FsmDef *fsm_parse(const char *machine, const char *rules, const char *initial);
extern void fsm_check_machine_name(const char *name);

/* ---- fsm.c: compiled machines, cached per backend ---- */

typedef struct FsmTransition
{
	int			to;
	const char *event;
	bool		timed;
	Interval	after;
} FsmTransition;

typedef struct FsmState
{
	const char *name;
	bool		initial;
	int			ntrans;
	FsmTransition *trans;
	int			timed;			/* index into trans of the timed exit, or -1 */
} FsmState;

typedef struct FsmCounterSlot FsmCounterSlot;

typedef struct FsmMachine
{
	char		name[NAMEDATALEN];	/* hash key */
	bool		shipped;
	int			nstates;
	FsmState   *states;
	struct HTAB *index;			/* state name -> state number */
	FsmCounterSlot *counters;	/* NULL: not kept */
	bool		counters_claimed;
} FsmMachine;

/*
 * Who is moving a row, for the audit trail: set by fsm_fire and
 * fsm_run_due around the one UPDATE they issue, read by the trigger.
 */
typedef struct FsmActor
{
	const char *machine;
	const char *from;
	const char *to;
	const char *event;
	const char *actor;			/* "event", "timer" or "force" */
	const char *reason;			/* harden.reason when the move began, or NULL */
	const char *role;			/* recorded as the mover; NULL: the current user */
	bool		forced;			/* fsm_force: past the transition rules */
	bool		audited;		/* set by the trigger once it recorded a forced move */
} FsmActor;

extern FsmActor *fsm_current_actor;
extern int	fsm_log_retention_s;
extern uint64 fsm_cache_generation;

extern void fsm_define_gucs(bool preloading);
extern Size fsm_shmem_size(void);
extern void fsm_shmem_startup(void);

extern FsmMachine *fsm_machine_get(const char *name, bool missing_ok);
extern int	fsm_state_lookup(const FsmMachine *m, const char *name, int len);
extern const FsmTransition *fsm_transition_find(const FsmMachine *m, int from, int to);
extern char *fsm_next_list(const FsmMachine *m, int from);
extern void fsm_count(FsmMachine *m, bool rejected);
extern Oid	fsm_trigger_func_oid(void);
extern Oid	fsm_harden_relid(const char *relname);
extern void fsm_column_type_check(Oid typid, const char *table, const char *column);
extern char *fsm_datum_state(Oid typid, Datum value, int *len);
extern Datum fsm_row_key(Relation rel, HeapTuple tuple);
extern char *fsm_jsonb_text(Datum jsonb);
extern const char *fsm_key_text(Datum key);
extern char *fsm_table_name(Relation rel);
extern const char *fsm_truncate(const char *s);
extern bool fsm_attachment_registered(Oid relid, const char *machine);
extern void fsm_cache_pin(void);
extern void fsm_cache_unpin(void);

#endif							/* PG_HARDEN_FSM_H */
