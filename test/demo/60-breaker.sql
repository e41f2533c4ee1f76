\echo
\echo '# 8. A circuit breaker that trips'
\echo 'The shop calls a payment API.  After 3 failures within a minute the'
\echo 'breaker opens and calls fail fast; after the cooldown (here 1 second)'
\echo 'one probe call goes through, and its success closes the breaker.'
SELECT harden.breaker_define('payments-api', failure_threshold => 3, cooldown => '1 second') \g /dev/null
SELECT harden.breaker_allow('payments-api') AS may_call;
SELECT harden.breaker_record('payments-api', false) AS after_1st_failure,
       harden.breaker_record('payments-api', false) AS after_2nd,
       harden.breaker_record('payments-api', false) AS after_3rd;
SELECT harden.breaker_allow('payments-api') AS may_call_while_open;
SELECT pg_sleep(1.1) \g /dev/null
SELECT harden.breaker_allow('payments-api') AS probe, harden.breaker_allow('payments-api') AS second_call;
SELECT harden.breaker_record('payments-api', true) AS after_probe_succeeded;
\echo 'Each change went through the shipped circuit_breaker machine and its audit trail:'
SELECT from_state, to_state, reason FROM harden.fsm_log
 WHERE table_name = 'harden.breaker_states' AND from_state IS NOT NULL ORDER BY id;
SELECT name, state, allowed, rejected, failures, opens, synced FROM harden.breaker_status;

\echo
\echo '# 9. No personal data in an audit export'
SELECT harden.redact('{"customer": {"email": "ada@example.com", "card": "4111 1111 1111 1111",
                      "password": "s3cret", "note": "call +44 20 7946 0958"}}'::jsonb) AS exported;
SELECT harden.redact('payment failed for ada@example.com, token=abc123') AS log_line;
