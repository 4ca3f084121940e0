#!/usr/bin/python3
"""Log in with OpenSSH's ssh client through keyboard-interactive, answering the password prompt
and then the code prompt (Debian's python3-pexpect). Prints what ssh printed; exits 0 when the
remote command ran, 1 otherwise.

usage: ssh_login.py PORT USER PASSWORD CODE COMMAND

With CODE = ENROLL, the code prompt is a first-login enrollment: read the key it shows and
answer with oathtool's code for it, as a person with a freshly set-up app would.
"""
import subprocess
import sys

import pexpect


def main():
    port, user, password, code, command = sys.argv[1:6]
    ssh = pexpect.spawn(
        "ssh",
        [
            "-F", "/dev/null", "-p", port,
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "PreferredAuthentications=keyboard-interactive",
            "-o", "PubkeyAuthentication=no",
            "-o", "NumberOfPasswordPrompts=1",
            "-o", "LogLevel=ERROR",
            f"{user}@127.0.0.1", command,
        ],
        encoding="utf-8",
        timeout=30,
    )
    transcript = []
    try:
        ssh.expect("[Pp]assword:")
        transcript.append(ssh.before + ssh.after)
        ssh.sendline(password)
        if code == "ENROLL":
            ssh.expect(r"type the key ([A-Z2-7 ]+) \(")
            key = ssh.match.group(1).replace(" ", "")
            code = subprocess.check_output(["oathtool", "--totp", "-b", key], text=True).strip()
            transcript.append(ssh.before + ssh.after)
        ssh.expect("[Cc]ode")
        transcript.append(ssh.before + ssh.after)
        ssh.expect(":")
        ssh.sendline(code)
        ssh.expect(pexpect.EOF)
        transcript.append(ssh.before)
    except (pexpect.EOF, pexpect.TIMEOUT) as e:
        transcript.append(f"{type(e).__name__}: {ssh.before}")
    ssh.close()
    out = "".join(transcript)
    print(out)
    sys.exit(0 if ssh.exitstatus == 0 else 1)


if __name__ == "__main__":
    main()
