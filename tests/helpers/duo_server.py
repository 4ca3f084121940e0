#!/usr/bin/python3
"""A loopback HTTPS server shaped like Duo's Auth API v2, for otpd's Duo tests.

Every request's signature is verified with Duo's own reference client (PyPI duo-client:
`duo_client.client.sign`, the canonicalisation and HMAC its Client uses, signature version 5):
the integration key and the HMAC in HTTP Basic, the Date header, the method, the host, the
path, the query parameters (GET) or the JSON body (POST). A wrong integration key, a wrong
signature or a missing Date gets Duo's documented 401 error JSON; a Date more than 300 s from
this server's clock is refused with a 401 too (code 40105 here: Duo documents the refusal, the
exact code is this server's choice).

Endpoints, with Duo's documented response shapes:
  GET  /auth/v2/check                      {"time": now}
  POST /auth/v2/preauth   username, ipaddr  result auth (devices) | allow | deny | enroll (URL)
  POST /auth/v2/auth      factor push|phone (device, async) | passcode (passcode)
                          async=1 -> {"txid"}, else the result once decided
  GET  /auth/v2/auth_status txid            a long poll: waiting (held up to 5 s) or the result

--behave picks what the user's phone does (for every user name):
  approve  the push or call is approved 2 s after it is sent
  deny     refused by the user (1 s)       timeout  Duo's own push timeout (1 s)
  fraud    reported as fraud (1 s)         silent   never answered (every poll says waiting)
  enroll   preauth: not enrolled, with an enrollment URL
  allow    preauth: allow (a bypass user)  refuse   preauth: deny (a disabled account)
  broken   auth_status fails with HTTP 503 (Duo goes down after the push was sent)
Passcode 123456 is accepted, any other refused ("Incorrect passcode").

Prints `READY <port>`, then one line per request: `REQUEST {"method", "path", "params"}` when
the signature verified, `REJECTED <why>` otherwise.

  --ikey, --skey    the integration's keys     --clock-offset SECONDS   this server's clock skew
  --cert/--key      the server certificate     --host   the host signed for (localhost)
"""
import argparse
import base64
import email.utils
import hmac
import json
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duo_client.client

ALLOWED_SKEW = 300
PASSCODE = "123456"
DEVICE = "DPFZRS9FB0D46QFTM891"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ikey", default="DIXXXXXXXXXXXXXXXXXX")
    p.add_argument("--skey", default="duo-secret-key-for-tests")
    p.add_argument("--behave", default="approve")
    p.add_argument("--clock-offset", type=float, default=0)
    p.add_argument("--host")
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    a = p.parse_args()

    txns = {}
    lock = threading.Lock()

    def now():
        return time.time() + a.clock_offset

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def date_time_string(self, timestamp=None):
            return email.utils.formatdate(now(), usegmt=True)

        def reply(self, status, obj):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def ok(self, response):
            self.reply(200, {"stat": "OK", "response": response})

        def fail(self, status, code, message, why):
            print(f"REJECTED {why}", flush=True)
            self.reply(status, {"stat": "FAIL", "code": code, "message": message})

        def do_GET(self):
            self.handle_any("GET")

        def do_POST(self):
            self.handle_any("POST")

        def handle_any(self, method):
            url = urllib.parse.urlsplit(self.path)
            n = int(self.headers.get("Content-Length") or "0")
            body = self.rfile.read(n).decode("utf-8", "replace") if n else ""
            if method == "GET":
                params = urllib.parse.parse_qs(url.query, keep_blank_values=True)
                signed_params, signed_body = params, ""
                values = {k: v[0] for k, v in params.items()}
            else:
                if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
                    return self.fail(400, 40002, "Invalid request parameters", "POST without JSON")
                try:
                    values = json.loads(body)
                except ValueError:
                    return self.fail(400, 40002, "Invalid request parameters", "bad JSON")
                signed_params, signed_body = {}, body
            if not self.verified(method, url.path, signed_params, signed_body):
                return
            print("REQUEST " + json.dumps({"method": method, "path": url.path, "params": values}),
                  flush=True)
            route = {
                ("GET", "/auth/v2/check"): self.check,
                ("POST", "/auth/v2/preauth"): self.preauth,
                ("POST", "/auth/v2/auth"): self.auth,
                ("GET", "/auth/v2/auth_status"): self.auth_status,
            }.get((method, url.path))
            if route is None:
                return self.fail(404, 40401, "Resource not found", f"no {method} {url.path}")
            route(values)

        def verified(self, method, path, params, body):
            """Duo's checks of the credentials, with the reference client's own sign()."""
            auth = self.headers.get("Authorization", "")
            date = self.headers.get("Date")
            if not auth.startswith("Basic "):
                self.fail(401, 40101, "Missing request credentials", "no Basic credentials")
                return False
            try:
                ikey = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
            except Exception:
                self.fail(401, 40101, "Missing request credentials", "unreadable credentials")
                return False
            if ikey != a.ikey:
                self.fail(401, 40102, "Invalid integration key in request credentials",
                          f"integration key {ikey!r}")
                return False
            if not date:
                self.fail(401, 40104, "Missing request date", "no Date header")
                return False
            expected = duo_client.client.sign(a.ikey, a.skey, method, host, path, date,
                                              5, params, body=body)
            if not hmac.compare_digest(auth.encode(), expected.encode()):
                self.fail(401, 40103, "Invalid signature in request credentials",
                          "signature does not verify")
                return False
            try:
                sent = email.utils.parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError):
                self.fail(401, 40104, "Missing request date", f"unreadable Date {date!r}")
                return False
            if abs(now() - sent) > ALLOWED_SKEW:
                self.fail(401, 40105, "Request date is too far from the current time",
                          f"Date {date!r} is {int(sent - now())} s from this server's clock")
                return False
            return True

        def check(self, values):
            self.ok({"time": int(now())})

        def preauth(self, values):
            if not values.get("username"):
                return self.fail(400, 40001, "Missing required request parameters", "no username")
            if a.behave == "enroll":
                return self.ok({
                    "result": "enroll",
                    "status_msg": "Enroll an authentication device to proceed",
                    "enroll_portal_url": f"https://{host}:{port}/portal?code=48bac5d9393fb2c2",
                })
            if a.behave == "allow":
                return self.ok({"result": "allow", "status_msg": "Allowing unknown user"})
            if a.behave == "refuse":
                return self.ok({"result": "deny", "status_msg": "Your account is disabled"})
            self.ok({
                "result": "auth",
                "status_msg": "Account is active",
                "devices": [{
                    "device": DEVICE,
                    "type": "phone",
                    "number": "XXX-XXX-1234",
                    "name": "",
                    "display_name": "iOS (XXX-XXX-1234)",
                    "capabilities": ["auto", "push", "sms", "phone", "mobile_otp"],
                }],
            })

        def auth(self, values):
            factor = values.get("factor")
            if not values.get("username") or factor not in ("push", "phone", "passcode"):
                return self.fail(400, 40002, "Invalid request parameters", f"auth {values}")
            if factor == "passcode":
                if values.get("passcode") == PASSCODE:
                    return self.ok({"result": "allow", "status": "allow",
                                    "status_msg": "Success. Logging you in..."})
                return self.ok({"result": "deny", "status": "deny",
                                "status_msg": "Incorrect passcode. Please try again."})
            if values.get("device") not in (DEVICE, "auto"):
                return self.fail(400, 40002, "Invalid request parameters", "unknown device")
            delay = 2 if a.behave == "approve" else 1
            txid = str(uuid.uuid4())
            with lock:
                txns[txid] = time.time() + delay
            if values.get("async") == "1":
                return self.ok({"txid": txid})
            time.sleep(delay if a.behave != "silent" else 30)
            self.ok(self.result_of(txid))

        def result_of(self, txid):
            with lock:
                at = txns.get(txid)
            if a.behave == "silent" or time.time() < at:
                status = "pushed"
                return {"result": "waiting", "status": status,
                        "status_msg": "Pushed a login request to your device..."}
            return {
                "approve": {"result": "allow", "status": "allow",
                            "status_msg": "Success. Logging you in..."},
                "deny": {"result": "deny", "status": "deny",
                         "status_msg": "Login request denied."},
                "timeout": {"result": "deny", "status": "timeout",
                            "status_msg": "Login timed out."},
                "fraud": {"result": "deny", "status": "fraud",
                          "status_msg": "Login request reported as fraud."},
            }.get(a.behave, {"result": "deny", "status": "deny", "status_msg": "Denied."})

        def auth_status(self, values):
            txid = values.get("txid")
            with lock:
                at = txns.get(txid)
            if at is None:
                return self.fail(400, 40002, "Invalid request parameters", "unknown txid")
            if a.behave == "broken":
                return self.reply(503, {"stat": "FAIL", "code": 50301,
                                        "message": "Service Unavailable"})
            # A long poll: hold the request until the answer is due, at most 5 s.
            held = time.time() + 5
            while time.time() < min(at, held) or (a.behave == "silent" and time.time() < held):
                time.sleep(0.05)
            self.ok(self.result_of(txid))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    # duo_client signs its host without the port (the port is a separate argument), and so
    # does otpd: "localhost" for api_host = "localhost:PORT".
    host = a.host or "localhost"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"READY {port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
