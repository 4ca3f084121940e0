-- Schema 3: the fleet's audit trail, one row per event from every host (otpctl attempts).
-- `event` is the whole event as JSON (audit::AuditEvent, which holds no code, secret, token,
-- full address or number); the other columns are what queries filter and order by.
CREATE TABLE otpd_audit (
    id       text PRIMARY KEY,
    time     bigint NOT NULL,
    host     text NOT NULL,
    username text NOT NULL,
    result   text NOT NULL,
    event    text NOT NULL
);
CREATE INDEX otpd_audit_time ON otpd_audit (time DESC, id DESC);
CREATE INDEX otpd_audit_user ON otpd_audit (username, time DESC, id DESC);
