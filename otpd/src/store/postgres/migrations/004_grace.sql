-- Schema 4: grace shared by the fleet (`[policy] grace_fleet`): after a second factor for a
-- user from a remote host through a service, logins from there through it on any host skip the
-- code until `until` (Unix seconds). A failed code, unlock, reset or disable deletes the user's
-- rows. Expired rows are ignored and replaced by the next grant.
CREATE TABLE otpd_grace (
    username text NOT NULL,
    rhost    text NOT NULL,
    service  text NOT NULL,
    until    bigint NOT NULL,
    PRIMARY KEY (username, rhost, service)
);
