\set id random(1, 100000)
SELECT harden.cache_get('p:' || :id);
