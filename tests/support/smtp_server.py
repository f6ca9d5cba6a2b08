"""A real SMTP server for depwatch's tests (aiosmtpd), on loopback.

Saves each message whole (the bytes after DATA) as DIR/NNNN.eml and its
decoded view (headers, text and HTML parts) as DIR/NNNN.json, written last, and logs AUTH attempts to DIR/auth.log (one line each:
"<mechanism> <login> <tls|plain> <ok|bad>"; passwords are never written).
Prints READY when it listens. Stops on SIGTERM/SIGINT.

  smtp_server.py --port P --dir D [--auth USER:PASSWORD] [--cert C --key K]
                 [--require-starttls] [--allow-plain-auth] [--refuse TEXT]
                 [--refuse-rcpt ADDRESS] [--defer-rcpt ADDRESS:N] [--hang-data N]

--refuse TEXT answers `554 5.6.0` to every message whose bytes hold TEXT
(a server refusing that message for its content or size) and takes the rest.
--refuse-rcpt ADDRESS answers `550 5.1.1` to that recipient (a mailbox gone).
--defer-rcpt ADDRESS:N answers `452 4.2.2` to that recipient the first N
times (a mailbox over quota for a while), then takes it.
--hang-data N never answers the first N messages' data (a server stuck
mid-DATA; nothing is saved), then takes them.
"""

import argparse
import asyncio
import logging
import email
import email.policy
import json
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Saver:
    def __init__(self, directory, refuse=None, refuse_rcpt=None, defer_rcpt=None, hang_data=0):
        self.dir = directory
        self.hang_left = hang_data
        self.refuse = refuse.encode() if refuse else None
        self.refuse_rcpt = refuse_rcpt
        self.defer_rcpt, self.defer_left = None, 0
        if defer_rcpt:
            self.defer_rcpt, n = defer_rcpt.rsplit(":", 1)
            self.defer_left = int(n)
        self.n = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == self.refuse_rcpt:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address == self.defer_rcpt and self.defer_left > 0:
            self.defer_left -= 1
            return f"452 4.2.2 <{address}>: Mailbox full, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.hang_left > 0:
            self.hang_left -= 1
            await asyncio.sleep(3600)
        if self.refuse and self.refuse in envelope.original_content:
            return "554 5.6.0 Message refused: content not accepted here"
        with self.lock:
            self.n += 1
            n = self.n
        path = os.path.join(self.dir, f"{n:04d}")
        with open(path + ".eml", "wb") as f:
            f.write(envelope.original_content)
        # The decoded view for the tests (written last, atomically: its
        # presence means the message is complete).
        m = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        part = lambda t: (m.get_body(preferencelist=(t,)) or m).get_content() if m.is_multipart() else m.get_content()
        view = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": session.ssl is not None,
            "headers": {k.lower(): str(v) for k, v in m.items()},
            "text": part("plain"),
            "html": part("html"),
        }
        with open(path + ".json.tmp", "w") as f:
            json.dump(view, f)
        os.rename(path + ".json.tmp", path + ".json")
        return f"250 2.0.0 Ok: queued as test-{n:04d}"


class Auth:
    def __init__(self, directory, user, password):
        self.log = os.path.join(directory, "auth.log")
        self.user = user.encode()
        self.password = password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.user
            and auth_data.password == self.password
        )
        tls = "tls" if session.ssl is not None else "plain"
        login = auth_data.login.decode(errors="replace") if isinstance(auth_data, LoginPassword) else "?"
        with open(self.log, "a") as f:
            f.write(f"{mechanism} {login} {tls} {'ok' if ok else 'bad'}\n")
        # handled=False: aiosmtpd answers 535 itself (True would mean "answered").
        return AuthResult(success=ok, handled=False)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--auth")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--require-starttls", action="store_true")
    p.add_argument("--allow-plain-auth", action="store_true")
    p.add_argument("--refuse")
    p.add_argument("--refuse-rcpt")
    p.add_argument("--defer-rcpt")
    p.add_argument("--hang-data", type=int, default=0)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="smtp_server: %(levelname)s %(message)s")
    os.makedirs(a.dir, exist_ok=True)
    kwargs = {}
    if a.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
        kwargs["tls_context"] = ctx
        kwargs["require_starttls"] = a.require_starttls
    if a.auth:
        user, password = a.auth.split(":", 1)
        kwargs["authenticator"] = Auth(a.dir, user, password)
        kwargs["auth_required"] = True
        kwargs["auth_require_tls"] = not a.allow_plain_auth
    c = Controller(Saver(a.dir, a.refuse, a.refuse_rcpt, a.defer_rcpt, a.hang_data), hostname="127.0.0.1", port=a.port, **kwargs)
    c.start()
    print("READY", flush=True)
    done = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: done.set())
    done.wait()
    c.stop()


if __name__ == "__main__":
    sys.exit(main())
