-- One PostgreSQL role per service, each with only the grants its process needs. Applied by the migration
-- task (infra/database/apply_roles.py) as the master user, after `txoutbox migrate`, on every deployment:
-- it revokes first, so the grants below are exactly what each role has, whatever an earlier version gave.
-- The passwords are not here: the task sets each role's password from that service's own generated secret.
-- A new table of a migration gets its grants here too (tests/infra/test_service_roles.py fails until then).

DO $$
DECLARE
    service text;
BEGIN
    FOREACH service IN ARRAY ARRAY['txoutbox_api', 'txoutbox_relay', 'txoutbox_payments'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = service) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', service);
        END IF;
        -- a login role and nothing more: not a superuser, cannot create roles or databases
        EXECUTE format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT', service);
    END LOOP;
END
$$;

REVOKE ALL ON ALL TABLES IN SCHEMA public, txoutbox FROM txoutbox_api, txoutbox_relay, txoutbox_payments;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public, txoutbox FROM txoutbox_api, txoutbox_relay, txoutbox_payments;
REVOKE CREATE ON SCHEMA public, txoutbox FROM txoutbox_api, txoutbox_relay, txoutbox_payments;
GRANT USAGE ON SCHEMA public, txoutbox TO txoutbox_api, txoutbox_relay, txoutbox_payments;

-- api (flights booking service): its flights, and events written in the same transaction. It reads the
-- outbox, the dead letters and the relays' heartbeats only to answer /health.
GRANT SELECT, INSERT ON public.flights TO txoutbox_api;
GRANT INSERT ON txoutbox.outbox TO txoutbox_api;
GRANT SELECT ON txoutbox.outbox, txoutbox.dead_letters, txoutbox.relays TO txoutbox_api;

-- relay: claims, publishes, deletes or dead-letters outbox rows; heartbeats and the shared alert state;
-- keeps published events for the retention window (txoutbox.published).
GRANT SELECT, UPDATE, DELETE ON txoutbox.outbox TO txoutbox_relay;
GRANT SELECT, INSERT ON txoutbox.dead_letters TO txoutbox_relay;
GRANT SELECT, INSERT, UPDATE, DELETE ON txoutbox.relays TO txoutbox_relay;
GRANT SELECT, UPDATE ON txoutbox.alerts TO txoutbox_relay;
-- Tables of library migrations 0004 (retention archive), 0005 (per-aggregate write locks) and 0006 (relays
-- waiting for work, whom writers notify): granted once the image's migrations have created them. The
-- archive's partitions are managed by the admin (master) role.
DO $$
BEGIN
    IF to_regclass('txoutbox.idle_relays') IS NOT NULL THEN
        GRANT SELECT ON txoutbox.idle_relays TO txoutbox_api;
        GRANT SELECT, INSERT, UPDATE, DELETE ON txoutbox.idle_relays TO txoutbox_relay;
    END IF;
    IF to_regclass('txoutbox.outbox_reinserts') IS NOT NULL THEN
        -- read by every claim (the low-water mark); bumped only by operators' dead-letter retries
        GRANT SELECT ON txoutbox.outbox_reinserts TO txoutbox_relay;
    END IF;
    IF to_regclass('txoutbox.published') IS NOT NULL THEN
        GRANT SELECT, INSERT ON txoutbox.published TO txoutbox_relay;
    END IF;
    IF to_regclass('txoutbox.aggregate_locks') IS NOT NULL THEN
        -- INSERT ... ON CONFLICT DO UPDATE ... WHERE false (waits on a concurrent writer) needs UPDATE
        GRANT SELECT, INSERT, UPDATE ON txoutbox.aggregate_locks TO txoutbox_api;
        -- relays prune the lock rows writers leave behind (SELECT ... FOR UPDATE SKIP LOCKED, DELETE)
        GRANT SELECT, UPDATE, DELETE ON txoutbox.aggregate_locks TO txoutbox_relay;
    END IF;
END
$$;

-- payments (consumer): its payments, and the inbox that makes handling idempotent.
GRANT SELECT, INSERT ON public.payments TO txoutbox_payments;
GRANT SELECT, INSERT, DELETE ON txoutbox.inbox TO txoutbox_payments;
