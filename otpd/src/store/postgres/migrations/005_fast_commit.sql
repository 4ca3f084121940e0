-- Schema 5: `[store] commit = "fast"` and the fleet's restart guard (docs/design.md, "The fleet
-- store"). A fast host's right TOTP code commits without waiting for the WAL flush, so a crash
-- of the database server (or a failover to a standby that had not received it) can lose the
-- spent step of its last fraction of a second. The guard closes that gap as the file store's
-- does after an otpd crash: once the server is seen to have restarted, or to be another
-- server, every TOTP step that could have been spent before (up to the step of that moment
-- plus the skew) is refused for keys made before it, unspent and uncounted ('guarded').
-- HOTP counters, failures, lockouts and the guard itself always wait for the flush.

-- One row: the server whose start `started` records, and the guard.
CREATE TABLE otpd_server (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    -- pg_postmaster_start_time() of the server that last answered: another value means a
    -- restart or a promoted standby.
    started    timestamptz NOT NULL,
    -- Unix seconds when a change of server was first seen; NULL: never guarded.
    guard_from bigint,
    -- A fast commit happened on this server (set durably before the first one), so a change
    -- of server may have lost steps. Without one, a restart guards nothing.
    fast_seen  boolean NOT NULL DEFAULT false
);
INSERT INTO otpd_server (started) VALUES (pg_postmaster_start_time());

-- The guard's start for this answer, noticing a change of server (the first answer after it
-- records it; racing ones wait for that row and then see it). `p_fast`: this answer may
-- commit fast, so the server is marked first. `g_durable` tells the caller this transaction
-- wrote the row and must wait for its flush.
CREATE FUNCTION otpd_guard(p_now bigint, p_fast boolean, OUT g_from bigint,
                           OUT g_durable boolean)
LANGUAGE plpgsql AS $$
DECLARE
    s otpd_server%ROWTYPE;
BEGIN
    g_durable := false;
    SELECT * INTO s FROM otpd_server;
    IF s.started IS DISTINCT FROM pg_postmaster_start_time() THEN
        UPDATE otpd_server
           SET started = pg_postmaster_start_time(),
               guard_from = CASE WHEN fast_seen THEN p_now ELSE guard_from END,
               fast_seen = false
         WHERE started IS DISTINCT FROM pg_postmaster_start_time();
        g_durable := FOUND;
        SELECT * INTO s FROM otpd_server;
    END IF;
    IF p_fast AND NOT s.fast_seen THEN
        UPDATE otpd_server SET fast_seen = true WHERE NOT fast_seen;
        g_durable := true;
    END IF;
    g_from := s.guard_from;
END
$$;

-- The verdict on one answer, as schema 1's, now also judging the guard, and cheaper on the
-- hot path: a right TOTP code of a user with no failures and no lock runs three statements
-- and writes one row. Every verdict on a user is decided under that user's otpd_users row
-- lock (the step's UPDATE takes it; other answers lock it first), or for a name with no row,
-- under its otpd_lockouts row. p_kind: 'step' (a right TOTP code at step p_value of a key with
-- period p_period), 'counter' (a right HOTP code at counter p_value), 'success', 'failure'.
-- Returns 'allowed', 'replayed', 'wrong', 'locked' (with the lock's end) or 'guarded' (with
-- the Unix time codes work again). A right code answered while the user is locked is refused
-- 'locked' and stays spent.
DROP FUNCTION otpd_answer(text, text, bigint, bigint, bigint, integer, bigint);
CREATE FUNCTION otpd_answer(p_name text, p_kind text, p_value bigint, p_now bigint,
                            p_window bigint, p_max integer, p_lock_for bigint,
                            p_period bigint, p_skew integer, p_fast boolean,
                            OUT verdict text, OUT until bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_started timestamptz;
    v_fast_seen boolean;
    v_guard bigint;
    v_durable boolean := false;
    v_floor bigint;
    v_until bigint;
    v_failed boolean;
    v_count integer;
    v_last bigint;
BEGIN
    IF p_kind = 'step' THEN
        SELECT s.started, s.guard_from, s.fast_seen INTO v_started, v_guard, v_fast_seen
            FROM otpd_server s;
        IF v_started IS DISTINCT FROM pg_postmaster_start_time()
           OR (p_fast AND NOT v_fast_seen) THEN
            SELECT g.g_from, g.g_durable INTO v_guard, v_durable
                FROM otpd_guard(p_now, p_fast) g;
        END IF;
        IF v_guard IS NOT NULL AND p_period > 0 THEN
            v_floor := v_guard / p_period + p_skew;
        END IF;
        UPDATE otpd_users u SET last_step = p_value
            WHERE u.name = p_name AND coalesce(u.last_step, -1) < p_value
              AND (v_floor IS NULL OR p_value > v_floor OR u.key_created > v_guard);
        IF NOT FOUND THEN
            SELECT u.last_step INTO v_last FROM otpd_users u WHERE u.name = p_name FOR UPDATE;
            -- Unspent, so the guard refused it; else it was spent: a replay.
            IF v_floor IS NOT NULL AND coalesce(v_last, -1) < p_value THEN
                p_kind := 'guarded';
            ELSE
                p_kind := 'replay';
            END IF;
        ELSIF p_fast AND NOT v_durable THEN
            PERFORM set_config('synchronous_commit', 'off', true);
        END IF;
    ELSIF p_kind = 'counter' THEN
        UPDATE otpd_users u SET last_step = p_value
            WHERE u.name = p_name AND coalesce(u.last_step, -1) < p_value;
        IF NOT FOUND THEN
            PERFORM 1 FROM otpd_users u WHERE u.name = p_name FOR UPDATE;
            p_kind := 'replay';
        END IF;
    ELSE
        PERFORM 1 FROM otpd_users u WHERE u.name = p_name FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO otpd_lockouts AS l (name) VALUES (p_name) ON CONFLICT (name) DO NOTHING;
            PERFORM 1 FROM otpd_lockouts l WHERE l.name = p_name FOR UPDATE;
        END IF;
    END IF;
    -- A fresh snapshot, taken with the user's row lock held: a lock or failures another host
    -- committed before are seen.
    SELECT (SELECT l.locked_until FROM otpd_lockouts l WHERE l.name = p_name),
           EXISTS (SELECT 1 FROM otpd_failures f WHERE f.name = p_name)
        INTO v_until, v_failed;
    IF v_until IS NOT NULL AND v_until > p_now THEN
        verdict := 'locked';
        until := v_until;
        RETURN;
    END IF;
    -- After the lock's check: while locked, a guarded code must not tell that it was right.
    IF p_kind = 'guarded' THEN
        verdict := 'guarded';
        until := (v_floor + 1) * p_period;
        RETURN;
    END IF;
    IF p_kind IN ('step', 'counter', 'success') THEN
        IF v_failed THEN
            DELETE FROM otpd_failures f WHERE f.name = p_name;
        END IF;
        IF v_until IS NOT NULL THEN
            UPDATE otpd_lockouts l SET locked_until = NULL WHERE l.name = p_name;
        END IF;
        verdict := 'allowed';
        RETURN;
    END IF;
    DELETE FROM otpd_failures f WHERE f.name = p_name AND f.at <= p_now - p_window;
    INSERT INTO otpd_failures (name, at) VALUES (p_name, p_now);
    SELECT count(*) INTO v_count FROM otpd_failures f WHERE f.name = p_name;
    IF v_count >= p_max THEN
        DELETE FROM otpd_failures f WHERE f.name = p_name;
        INSERT INTO otpd_lockouts AS l (name, locked_until) VALUES (p_name, p_now + p_lock_for)
            ON CONFLICT (name) DO UPDATE SET locked_until = EXCLUDED.locked_until;
    END IF;
    IF p_kind = 'replay' THEN
        verdict := 'replayed';
    ELSE
        verdict := 'wrong';
    END IF;
END
$$;
