#!/usr/bin/python3
"""Drive `otpctl enroll totp` in a real pty, as a person would (Debian's python3-pexpect):
read the QR block, ask for the key, read the recovery codes, confirm with oathtool's code.
Writes the QR block's lines to QR_OUT and prints one JSON object: the key, the URI, the codes.

usage: enroll_pty.py OTPCTL CONFIG CODES_FILE QR_OUT
"""
import json
import subprocess
import sys
import time

import pexpect


def main():
    otpctl, config, codes_file, qr_out = sys.argv[1:5]
    child = pexpect.spawn(
        otpctl, ["--config", config, "enroll", "totp", "--codes-file", codes_file],
        encoding="utf-8", timeout=20, dimensions=(80, 200),
    )
    child.expect("Scan this QR code with your authenticator app:")
    child.expect("Can't scan it\\? Show the key instead\\? \\[Y/n\\] ")
    qr = [l for l in child.before.replace("\r", "").split("\n") if l.strip()]
    with open(qr_out, "w") as f:
        f.write("\n".join(qr) + "\n")
    child.sendline("y")
    child.expect("Type this key into the app: ([A-Z2-7 ]+)\r\n")
    key = child.match.group(1).replace(" ", "")
    child.expect("URI: (otpauth://\\S+)")
    uri = child.match.group(1)
    child.expect("Recovery codes")
    child.expect("Enter the 6-digit code from your app to confirm")
    codes = [w for w in child.before.split() if len(w) == 11 and w[5] == "-"]
    previous = str(int(time.time()) - 30)
    code = subprocess.check_output(["oathtool", "--totp", "-b", "-N", "@" + previous, key],
                                   text=True).strip()
    child.sendline(code)
    child.expect("Confirmed")
    child.expect(pexpect.EOF)
    child.close()
    print(json.dumps({"key": key, "uri": uri, "codes": codes, "exit": child.exitstatus}))


if __name__ == "__main__":
    main()
