SELECT harden.breaker_record('bench-api', true);
