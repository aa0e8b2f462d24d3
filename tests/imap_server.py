"""A real IMAP server for tests: a private Dovecot (Debian's dovecot-imapd) with a config of
its own in a temporary folder, listening on 127.0.0.1 at free ports (IMAP with STARTTLS and
IMAPS, a self-signed certificate made here), every user name accepted with one password and
given a Maildir of its own; messages go in with IMAP APPEND. `DropProxy` stands between a
client and the server and cuts the connection after so many bytes, as a server or a network
that drops it mid-fetch does.

Without Dovecot the tests that need it skip with the reason, unless ABM_TEST_REQUIRE_IMAP=1
(set by .ci/run), where they fail."""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from smtp_server import free_port, self_signed_certificate

PASSWORD = "imap-test-Secret"
REQUIRE_IMAP = os.environ.get("ABM_TEST_REQUIRE_IMAP") == "1"


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or next(
        (
            path
            for path in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")
            if os.access(path, os.X_OK)
        ),
        None,
    )


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _users() -> tuple[str, str, int, int]:
    """(login user, internal user, mail uid, mail gid): Dovecot's own accounts and `nobody`
    when run as root (it refuses mail access as root), else the current user for all."""
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        login = "dovenull" if _has_user("dovenull") else "nobody"
        internal = "dovecot" if _has_user("dovecot") else "nobody"
        return login, internal, nobody.pw_uid, nobody.pw_gid
    me = pwd.getpwuid(os.geteuid())
    return me.pw_name, me.pw_name, me.pw_uid, me.pw_gid


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = abm-test-{port}
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
default_login_user = {login_user}
default_internal_user = {internal_user}
first_valid_uid = 1
first_valid_gid = 1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:{mail}/%u
mail_max_userip_connections = 100
mail_fsync = never
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ssl_port}
    ssl = yes
  }}
}}
"""


@dataclass
class Dovecot:
    """A running private Dovecot: `url(user)` for ABM_IMAP_URL, `append(user, ...)`."""

    root: Path
    port: int
    ssl_port: int
    cert: Path
    process: subprocess.Popen | None = None
    binary: str = "dovecot"

    def url(
        self, user: str, folder: str = "INBOX", tls: str = "none", port: int | None = None
    ) -> str:
        """`none`: plain IMAP on the loopback (`?starttls=0`); `starttls`; `implicit` (imaps)."""
        if tls == "implicit":
            return f"imaps://{user}:{PASSWORD}@127.0.0.1:{port or self.ssl_port}/{folder}"
        query = "" if tls == "starttls" else "?starttls=0"
        return f"imap://{user}:{PASSWORD}@127.0.0.1:{port or self.port}/{folder}{query}"

    def client(self, user: str) -> imaplib.IMAP4:
        connection = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        connection.login(user, PASSWORD)
        return connection

    def append(self, user: str, *messages: bytes, folder: str = "INBOX") -> None:
        """APPEND to `folder` (its IMAP name, modified UTF-7), created when missing."""
        connection = self.client(user)
        try:
            if folder != "INBOX":
                connection.create(_quoted(folder))
            for message in messages:
                status, detail = connection.append(_quoted(folder), None, None, message)
                assert status == "OK", detail
        finally:
            connection.logout()

    def deliver(self, user: str, messages: list[bytes]) -> None:
        """Put messages straight into the user's INBOX Maildir (`new/`), as a local delivery
        agent does: many times faster than APPEND for a benchmark's thousands. Dovecot
        gives them UIDs when the folder is next opened."""
        home = self.root / "mail" / user
        uid, gid = os.stat(self.root / "mail").st_uid, os.stat(self.root / "mail").st_gid
        for folder in (home, home / "new", home / "cur", home / "tmp"):
            folder.mkdir(exist_ok=True)
            os.chown(folder, uid, gid)
        stamp = int(time.time())
        for n, message in enumerate(messages):
            path = home / "new" / f"{stamp}.M{n}P{os.getpid()}.abm-test"
            path.write_bytes(message)
            os.chown(path, uid, gid)

    def flagged(self, user: str, flag: str, folder: str = "INBOX") -> list[int]:
        """UIDs of the messages in `folder` that carry the keyword `flag`."""
        connection = self.client(user)
        try:
            connection.select(_quoted(folder), readonly=True)
            status, data = connection.uid("SEARCH", "KEYWORD", flag)
            assert status == "OK", data
            return [int(uid) for uid in (data[0] or b"").split()]
        finally:
            connection.logout()

    def recreate(self, user: str, folder: str) -> None:
        """Delete and create `folder` again: it gets a new UIDVALIDITY."""
        connection = self.client(user)
        try:
            connection.delete(_quoted(folder))
            connection.create(_quoted(folder))
        finally:
            connection.logout()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-F", "-c", str(self.root / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                raise RuntimeError(f"dovecot exited {self.process.returncode}: {error}{self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2) as sock,
            ):
                if sock.recv(100).startswith(b"* OK"):
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not answer on port {self.port} in 10 s: {self.log()}")

    def stop(self) -> None:
        """Stop the master process this object started (it stops its own children)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@contextmanager
def dovecot() -> Iterator[Dovecot]:
    """A private Dovecot for as long as the block runs; RuntimeError if it cannot start, or
    FileNotFoundError when dovecot is not installed."""
    binary = dovecot_binary()
    if binary is None:
        raise FileNotFoundError("dovecot is not installed (Debian: apt-get install dovecot-imapd)")
    root = Path(tempfile.mkdtemp(prefix="abm-dovecot-"))
    root.chmod(0o755)  # Dovecot's unprivileged processes walk into it
    login_user, internal_user, uid, gid = _users()
    mail = root / "mail"
    for folder in ("run", "state", "mail"):
        (root / folder).mkdir()
    os.chown(mail, uid, gid)
    cert, key = self_signed_certificate(root)
    port, ssl_port = free_port(), free_port()
    (root / "dovecot.conf").write_text(
        CONFIG.format(
            root=root,
            port=port,
            ssl_port=ssl_port,
            login_user=login_user,
            internal_user=internal_user,
            cert=cert,
            key=key,
            mail=mail,
            uid=uid,
            gid=gid,
            password=PASSWORD,
        )
    )
    server = Dovecot(root, port, ssl_port, cert, binary=binary)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class DropProxy:
    """A TCP proxy to `upstream` on 127.0.0.1:`port` that, for its first `drops` connections,
    closes both sides in the middle of a server answer: right after the `after`-th time
    `marker` has come from the server (by default the start of a message body in a FETCH
    answer, so the cut falls inside a fetch of many messages). A list gives the n-th
    connection its own count (the last one for the rest). Later connections pass through."""

    upstream: tuple[str, int]
    after: int | list[int]
    marker: bytes = b"BODY[] {"
    drops: int = 1
    port: int = 0
    connections: int = 0
    dropped: int = 0
    _listener: socket.socket | None = field(default=None, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)
    _sockets: list[socket.socket] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __enter__(self) -> DropProxy:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._start(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _start(self, target, *args) -> None:  # type: ignore[no-untyped-def]
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self.connections += 1
                counts = self.after if isinstance(self.after, list) else [self.after]
                cut = counts[min(self.connections, len(counts)) - 1]
                if self.connections > self.drops:
                    cut = None
                self._sockets += [client, server]
            self._start(self._pump, client, server, None, client, server)
            self._start(self._pump, server, client, cut, client, server)

    def _pump(
        self,
        source: socket.socket,
        target: socket.socket,
        cut: int | None,
        client: socket.socket,
        server: socket.socket,
    ) -> None:
        seen, tail = 0, b""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if cut is not None:
                    window = tail + data
                    start = 0
                    while (found := window.find(self.marker, start)) >= 0:
                        seen += 1
                        start = found + 1
                        if seen >= cut:  # pass the marker and a few bytes, then cut
                            end = found + len(self.marker) + 8 - len(tail)
                            target.sendall(data[: max(0, end)])
                            with self._lock:
                                self.dropped += 1
                            raise ConnectionAbortedError
                    tail = window[-(len(self.marker) - 1) :]
                target.sendall(data)
        except OSError:
            pass
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
