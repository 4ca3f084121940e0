#!/usr/bin/python3
"""A loopback HTTP(S) server speaking an SMS provider's API, for otpd's SMS tests.

It checks each request exactly as the provider documents it (method, path, auth, content type,
field names) and answers like the provider. Prints `READY <port>`, then for every request either
`RECEIVED {"to": ..., "body": ...}` (accepted) or `REJECTED <why>` (answered 400), one line each.

  --provider twilio   POST /2010-04-01/Accounts/<sid>/Messages.json, Basic sid:token,
                      form To/From/Body -> 201 {"sid": ...}
             vonage   POST /sms/json, form api_key/api_secret/from/to/text -> 200
                      {"messages": [{"status": "0"}]}
             custom   --method, --path, --content-type json|form, --to-field, --body-field,
                      --header "Name: value" (must be present) -> 200
  --fail twilio-21211 | vonage-4 | http-500   answer with that error instead
  --delay SECONDS     wait before answering
  --cert/--key        serve HTTPS
"""
import argparse
import base64
import json
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FORM = "application/x-www-form-urlencoded"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--provider", choices=["twilio", "vonage", "custom"], required=True)
    p.add_argument("--sid", default="AC0123456789abcdef0123456789abcdef")
    p.add_argument("--token", default="twilio-token")
    p.add_argument("--api-key", default="vonage-key")
    p.add_argument("--api-secret", default="vonage-secret")
    p.add_argument("--from", dest="sender", default="+15005550006")
    p.add_argument("--method", default="POST")
    p.add_argument("--path", default="/send")
    p.add_argument("--content-type", choices=["json", "form"], default="json")
    p.add_argument("--to-field", default="to")
    p.add_argument("--body-field", default="text")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--fail")
    p.add_argument("--delay", type=float, default=0)
    p.add_argument("--cert")
    p.add_argument("--key")
    a = p.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.handle_any()

        def do_PUT(self):
            self.handle_any()

        def do_GET(self):
            self.handle_any()

        def reply(self, status, obj):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def reject(self, why):
            print(f"REJECTED {why}", flush=True)
            self.reply(400, {"error": why})

        def body(self):
            n = int(self.headers.get("Content-Length", "0"))
            return self.rfile.read(n).decode()

        def form(self, raw):
            if self.headers.get("Content-Type", "").split(";")[0] != FORM:
                return None
            return {k: v[0] for k, v in urllib.parse.parse_qs(raw, strict_parsing=True).items()}

        def handle_any(self):
            if a.delay:
                time.sleep(a.delay)
            raw = self.body()
            try:
                getattr(self, a.provider)(raw)
            except Exception as e:  # a malformed request is a rejection, not a crash
                self.reject(f"{type(e).__name__}: {e}")

        def twilio(self, raw):
            path = f"/2010-04-01/Accounts/{a.sid}/Messages.json"
            auth = "Basic " + base64.b64encode(f"{a.sid}:{a.token}".encode()).decode()
            if self.command != "POST" or self.path != path:
                return self.reject(f"{self.command} {self.path}, want POST {path}")
            if self.headers.get("Authorization") != auth:
                return self.reject("bad Basic auth")
            f = self.form(raw)
            if f is None or set(f) != {"To", "From", "Body"}:
                return self.reject(f"want form fields To, From, Body; got {raw!r}")
            if f["From"] != a.sender:
                return self.reject(f"From {f['From']!r}")
            if a.fail == "twilio-21211":
                return self.reply(400, {
                    "code": 21211,
                    "message": f"The 'To' number {f['To']} is not a valid phone number.",
                    "more_info": "https://www.twilio.com/docs/errors/21211",
                    "status": 400,
                })
            if a.fail == "http-500":
                return self.reply(500, {"message": "internal"})
            print("RECEIVED " + json.dumps({"to": f["To"], "body": f["Body"]}), flush=True)
            self.reply(201, {"sid": "SM" + "0" * 32, "status": "queued", "to": f["To"]})

        def vonage(self, raw):
            if self.command != "POST" or self.path != "/sms/json":
                return self.reject(f"{self.command} {self.path}, want POST /sms/json")
            f = self.form(raw)
            want = {"api_key", "api_secret", "from", "to", "text"}
            if f is None or set(f) != want:
                return self.reject(f"want form fields {sorted(want)}; got {raw!r}")
            if f["to"].startswith("+") or not f["to"].isdigit():
                return self.reject(f"to {f['to']!r}: E.164 without the plus")
            if a.fail == "vonage-4" or f["api_key"] != a.api_key or f["api_secret"] != a.api_secret:
                return self.reply(200, {"message-count": "1", "messages": [
                    {"status": "4", "error-text": "Bad Credentials"}]})
            print("RECEIVED " + json.dumps({"to": "+" + f["to"], "body": f["text"]}), flush=True)
            self.reply(200, {"message-count": "1", "messages": [
                {"to": f["to"], "message-id": "0A0000000123ABCD1", "status": "0",
                 "remaining-balance": "3.14", "message-price": "0.03", "network": "12345"}]})

        def custom(self, raw):
            if self.command != a.method or self.path != a.path:
                return self.reject(f"{self.command} {self.path}, want {a.method} {a.path}")
            for h in a.header:
                name, value = [x.strip() for x in h.split(":", 1)]
                if self.headers.get(name) != value:
                    return self.reject(f"header {name}: {self.headers.get(name)!r}")
            ctype = self.headers.get("Content-Type", "").split(";")[0]
            if a.content_type == "json":
                if ctype != "application/json":
                    return self.reject(f"Content-Type {ctype}")
                f = json.loads(raw)
            else:
                f = self.form(raw)
                if f is None:
                    return self.reject(f"Content-Type {ctype}")
            if a.to_field not in f or a.body_field not in f:
                return self.reject(f"fields {sorted(f)}")
            if a.fail == "http-500":
                return self.reply(500, {"error": "gateway down"})
            print("RECEIVED " + json.dumps({"to": f[a.to_field], "body": f[a.body_field]}),
                  flush=True)
            self.reply(200, {"accepted": True})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if a.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"READY {server.server_address[1]}", flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), server.shutdown()), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
