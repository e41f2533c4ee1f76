SELECT harden.breaker_allow('bench-api');
