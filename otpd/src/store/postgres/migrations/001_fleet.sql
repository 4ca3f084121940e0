-- Schema 1: the fleet store. Records hold their TOTP/HOTP secrets sealed (store/seal.rs);
-- recovery codes are argon2id hashes; nothing here is a usable secret without the key file.

-- One row per user: the record as JSON (secrets sealed, recovery codes and the last step kept
-- apart, below), the last TOTP step or HOTP counter accepted anywhere in the fleet.
CREATE TABLE otpd_users (
    name        text PRIMARY KEY,
    record      text NOT NULL,
    last_step   bigint,
    key_created bigint,
    updated     timestamptz NOT NULL DEFAULT now()
);

-- Unused recovery codes; `pending` ones take effect with the pending key.
CREATE TABLE otpd_recovery (
    name    text NOT NULL,
    salt    text NOT NULL,
    hash    text NOT NULL,
    pending boolean NOT NULL,
    PRIMARY KEY (name, hash)
);

-- Spent recovery codes (salted, so never reissued): a host writing back a stale record
-- cannot bring a spent code back.
CREATE TABLE otpd_spent_recovery (
    name text NOT NULL,
    hash text NOT NULL,
    PRIMARY KEY (name, hash)
);

-- One row per user who answered: the row every verdict locks, and the fleet-wide lock.
CREATE TABLE otpd_lockouts (
    name         text PRIMARY KEY,
    locked_until bigint
);

-- Recent failed answers, Unix seconds.
CREATE TABLE otpd_failures (
    name text NOT NULL,
    at   bigint NOT NULL
);
CREATE INDEX otpd_failures_name ON otpd_failures (name);

-- The verdict on one answer, decided under the user's row lock in one statement (one round
-- trip). p_kind: 'step' (a right TOTP/HOTP code at step/counter p_value), 'success' (a right
-- answer with nothing of the fleet's to spend: a sent code, a recovery code spent already),
-- 'failure' (a wrong code). Returns 'allowed', 'replayed', 'wrong' or 'locked', and the lock's
-- end. Past the cap every answer is 'locked', whatever it was: no more than p_max answers are
-- judged fleet-wide per window.
CREATE FUNCTION otpd_answer(p_name text, p_kind text, p_value bigint, p_now bigint,
                            p_window bigint, p_max integer, p_lock_for bigint)
RETURNS TABLE (verdict text, locked_until bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_until bigint;
    v_count integer;
BEGIN
    INSERT INTO otpd_lockouts AS l (name) VALUES (p_name) ON CONFLICT (name) DO NOTHING;
    SELECT l.locked_until INTO v_until FROM otpd_lockouts l WHERE l.name = p_name FOR UPDATE;
    IF v_until IS NOT NULL AND v_until > p_now THEN
        RETURN QUERY SELECT 'locked'::text, v_until;
        RETURN;
    END IF;
    DELETE FROM otpd_failures f WHERE f.name = p_name AND f.at <= p_now - p_window;
    IF p_kind = 'step' THEN
        UPDATE otpd_users u SET last_step = p_value
            WHERE u.name = p_name AND coalesce(u.last_step, -1) < p_value;
        IF FOUND THEN
            p_kind := 'success';
        ELSE
            p_kind := 'replay';
        END IF;
    END IF;
    IF p_kind = 'success' THEN
        DELETE FROM otpd_failures f WHERE f.name = p_name;
        UPDATE otpd_lockouts l SET locked_until = NULL WHERE l.name = p_name;
        RETURN QUERY SELECT 'allowed'::text, NULL::bigint;
        RETURN;
    END IF;
    INSERT INTO otpd_failures (name, at) VALUES (p_name, p_now);
    SELECT count(*) INTO v_count FROM otpd_failures f WHERE f.name = p_name;
    IF v_count >= p_max THEN
        DELETE FROM otpd_failures f WHERE f.name = p_name;
        UPDATE otpd_lockouts l SET locked_until = p_now + p_lock_for WHERE l.name = p_name;
    END IF;
    IF p_kind = 'replay' THEN
        RETURN QUERY SELECT 'replayed'::text, NULL::bigint;
    ELSE
        RETURN QUERY SELECT 'wrong'::text, NULL::bigint;
    END IF;
END
$$;
