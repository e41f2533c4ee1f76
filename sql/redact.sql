-- harden.redact(): personal data masked in text and jsonb, for audit
-- exports: patterns (e-mail, card with Luhn check, national id, phone) and
-- the values of sensitive names (harden.redact_keys).

-- ---- text: patterns ----
SELECT harden.redact('mail jane.doe@example.com, J.Doe+tag@mail.example.co.uk or JANE@EXAMPLE.ORG.');
SELECT harden.redact('not e-mails: a@b, x@y.1, @example.com, user@, a@-.io') AS unchanged;
SELECT harden.redact('cards 4111 1111 1111 1111, 4111-1111-1111-1111, 5500000000000004, 378282246310005');
-- A card number must pass the Luhn check; other long numbers stay.
SELECT harden.redact('order 4111111111111112, tracking 1234567890123') AS unchanged;
SELECT harden.redact('SSN 123-45-6789 or 123 45 6789; NINO QQ 12 34 56 C or AB123456D');
SELECT harden.redact('call +1 (555) 123-4567, (555) 123-4567, 555-123-4567, 555.123.4567, +442079460958 or (020) 7946 0958');
SELECT harden.redact('short 555-12, unbalanced (555 123, no group of four 55 55 55 55') AS unchanged;
-- Dates, times, addresses, versions, decimals and plain numbers are not phones.
SELECT harden.redact('2024-01-05 10:30:00, 192.168.1.1, v1.2.3, 3.14159, 1234567, 12ab-3456789, 55-12') AS unchanged;

-- ---- text: name = value ----
SELECT harden.redact('login failed for jane.doe@example.com, password=hunter2');
SELECT harden.redact('{"user": {"email": "jane@example.com", "password": "x", "note": "call me at +1 555 123 4567"}}'::jsonb);
SELECT harden.redact('API_KEY=1 apiKey: 2 password_confirmation=3') AS name_styles;
SELECT harden.redact('password=hunter2 user=jane');
SELECT harden.redact('token: abc.def, api_key="s3 cr3t", X-Api-Key: k1&next=1');
SELECT harden.redact('{"password": "p", "Authorization": "Bearer abc", "user": "jane"}');
-- Short names match exactly, longer ones also inside a name.
SELECT harden.redact('pin=1234 spin=3 shipping=5 user_password=x new-token=y');
SELECT harden.redact('a password without a value, secret') AS unchanged;

-- ---- jsonb ----
SELECT jsonb_pretty(harden.redact('{
  "user": {"email": "jane@example.com", "Password": "x", "tokens": [1, 2],
           "access_token": {"jwt": "e.y.J"}, "cvv": 123, "card": 4111111111111111,
           "note": "call me at +1 555 123 4567", "n": 42, "ok": true, "none": null},
  "list": ["a@b.io", "plain", 5500000000000004, 1.5],
  "jane@example.com": "keys are masked too"
}'::jsonb));
SELECT harden.redact('"jane@example.com"'::jsonb) AS scalar, harden.redact('5'::jsonb) AS number,
       harden.redact('null'::jsonb) AS json_null, harden.redact('[]'::jsonb) AS empty,
       harden.redact('{}'::jsonb) AS empty_object;
-- Nothing to mask: the same document.
SELECT harden.redact('{"a": [1, {"b": "c"}], "d": "e"}'::jsonb) = '{"a": [1, {"b": "c"}], "d": "e"}'::jsonb AS same;

-- ---- NULL in, NULL out ----
SELECT harden.redact(NULL::jsonb) IS NULL AS null_jsonb, harden.redact(NULL::text) IS NULL AS null_text;

-- ---- configurable names ----
SET harden.redact_keys = 'name, Customer-ID';
SELECT harden.redact('{"name": "Jane", "customer_id": 7, "password": "x"}'::jsonb);
SET harden.redact_keys = 'default, iban';
SELECT harden.redact('{"IBAN": "DE89370400440532013000", "password": "x", "name": "Jane"}'::jsonb);
RESET harden.redact_keys;
SELECT harden.redact('{"IBAN": "DE89", "password": "x"}'::jsonb);

-- ---- deep and huge input ----
SELECT harden.redact((repeat('[', 10000) || '"a@b.io"' || repeat(']', 10000))::jsonb)::text
       = repeat('[', 10000) || '"[email]"' || repeat(']', 10000) AS deep_array;
SELECT harden.redact(((SELECT string_agg('{"password": ', '') FROM generate_series(1, 5000))
                      || '1' || repeat('}', 5000))::jsonb) AS deep_object_masked_at_the_top;
SELECT harden.redact(((SELECT string_agg('{"k": ', '') FROM generate_series(1, 5000))
                      || '{"pin": 1}' || repeat('}', 5000))::jsonb)::text
       = (SELECT string_agg('{"k": ', '') FROM generate_series(1, 5000)) || '{"pin": "[redacted]"}' || repeat('}', 5000)
       AS deep_object_masked_at_the_bottom;
SELECT length(harden.redact(repeat('jane@example.com 4111111111111111 ', 100000))) AS masked_length;
SELECT length(harden.redact(repeat('1 ', 1000000))) AS digits_length;
SELECT length(harden.redact(repeat('a@', 500000))) AS ats_length;
SELECT length(harden.redact(repeat('+1-', 300000))) AS separators_length;
SELECT harden.redact(jsonb_build_object('token', repeat('x', 2000000), 'mail', repeat('y', 100) || '@example.com'));
