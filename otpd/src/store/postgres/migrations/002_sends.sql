-- Schema 2: sent-code quotas and the resend cooldown, counted for the whole fleet.

-- One row per send counted: by the user who asked and by the destination (its one spelling,
-- policy::challenge::destination_key). `confirmed`: a login code or disable token (the user's
-- quota and cooldown, the destination's login quota); otherwise an enrollment code (the
-- unconfirmed budgets).
CREATE TABLE otpd_sends (
    who       text NOT NULL,   -- 'user:NAME' or 'to:DESTINATION'
    confirmed boolean NOT NULL,
    at        bigint NOT NULL
);
CREATE INDEX otpd_sends_who ON otpd_sends (who, confirmed, at);

-- Count one send if the cooldown and both quotas allow, atomically across hosts: the user's
-- and then the destination's advisory locks (always in that order, two key spaces, so two
-- calls never wait for each other in a cycle). Returns 'ok', 'cooldown' (with the seconds left)
-- or 'quota'.
CREATE FUNCTION otpd_send(p_user text, p_to text, p_confirmed boolean, p_now bigint,
                          p_resend bigint, p_max_user integer, p_max_to integer)
RETURNS TABLE (verdict text, wait bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_user text := 'user:' || p_user;
    v_to text := 'to:' || p_to;
    v_last bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(1, hashtext(v_user));
    PERFORM pg_advisory_xact_lock(2, hashtext(v_to));
    DELETE FROM otpd_sends s WHERE s.who IN (v_user, v_to) AND s.at <= p_now - 3600;
    IF p_confirmed THEN
        SELECT max(s.at) INTO v_last FROM otpd_sends s
            WHERE s.who = v_user AND s.confirmed;
        IF v_last IS NOT NULL AND p_now - v_last < p_resend THEN
            RETURN QUERY SELECT 'cooldown'::text, p_resend - (p_now - v_last);
            RETURN;
        END IF;
    END IF;
    IF (SELECT count(*) FROM otpd_sends s WHERE s.who = v_user AND s.confirmed = p_confirmed)
           >= p_max_user
       OR (SELECT count(*) FROM otpd_sends s WHERE s.who = v_to AND s.confirmed = p_confirmed)
           >= p_max_to THEN
        RETURN QUERY SELECT 'quota'::text, NULL::bigint;
        RETURN;
    END IF;
    INSERT INTO otpd_sends (who, confirmed, at) VALUES (v_user, p_confirmed, p_now),
                                                       (v_to, p_confirmed, p_now);
    RETURN QUERY SELECT 'ok'::text, NULL::bigint;
END
$$;
