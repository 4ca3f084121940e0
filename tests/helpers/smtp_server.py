#!/usr/bin/python3
"""A real SMTP server on loopback for otpd's email tests (Debian's python3-aiosmtpd).

Prints `READY <port>` once listening, then `DELIVERED <path>` for each message it stores (one
.eml file per message in --maildir), so the test waits on events, not on sleeps. Stops on
SIGTERM or when stdin closes.

  --tls none|starttls|tls   plain, STARTTLS offered and required, or implicit TLS
  --cert/--key              the server certificate (signed by the test CA)
  --user/--password         require AUTH with these credentials (PLAIN/LOGIN)
  --delay SECONDS           answer DATA only after this long (a slow server)
  --reject                  refuse every recipient with 550
"""
import argparse
import asyncio
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, maildir, delay, reject):
        self.maildir = maildir
        self.delay = delay
        self.reject = reject
        self.count = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self.count += 1
            n = self.count
        path = os.path.join(self.maildir, f"{n:04d}.eml")
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(f"X-Envelope-To: {','.join(envelope.rcpt_tos)}\r\n".encode())
            f.write(envelope.content)
        os.rename(tmp, path)
        print(f"DELIVERED {path}", flush=True)
        return "250 Message accepted for delivery"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False)

    return check


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--maildir", required=True)
    p.add_argument("--tls", choices=["none", "starttls", "tls"], default="none")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--delay", type=float, default=0)
    p.add_argument("--reject", action="store_true")
    a = p.parse_args()

    kwargs = {}
    context = None
    if a.tls != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(a.cert, a.key)
    if a.tls == "starttls":
        kwargs.update(tls_context=context, require_starttls=True)
    elif a.tls == "tls":
        kwargs.update(ssl_context=context)
    if a.user:
        kwargs.update(
            authenticator=authenticator(a.user, a.password),
            auth_required=True,
            # Implicit TLS is invisible to aiosmtpd's STARTTLS bookkeeping: only ask for TLS
            # before AUTH where STARTTLS is the way to it.
            auth_require_tls=a.tls == "starttls",
        )
    port = a.port or free_port()
    controller = Controller(
        Handler(a.maildir, a.delay, a.reject), hostname="127.0.0.1", port=port, **kwargs
    )
    controller.start()
    print(f"READY {port}", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    controller.stop()


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
