"""Starts a real Label Studio server on a localhost port for the tests.

The server comes from its own virtual environment (`scripts/install_label_studio.sh`
makes `.venv-label-studio/`; `$LABEL_STUDIO_BIN` names another `label-studio`
executable). Tests skip with the install command when it is absent.

A first start on an empty data directory runs Label Studio's ~200 database
migrations (over a minute on 2 cores); a start on a migrated SQLite file
takes ~10 s. So the first start migrates a template once per Label Studio
version (in `~/.cache/active_learning/label_studio/`, under a file lock so
parallel test processes share it) and every server then starts on a fresh
copy of it in a temporary directory: each test module sees an empty server.
"""

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USERNAME = "annotator@localhost"


def label_studio_bin():
    """Path of the `label-studio` executable, or None."""
    path = os.environ.get("LABEL_STUDIO_BIN") or os.path.join(
        REPO, ".venv-label-studio", "bin", "label-studio")
    return path if os.access(path, os.X_OK) else None


def require_label_studio():
    path = label_studio_bin()
    if path is None:
        pytest.skip("the Label Studio server is not installed: run "
                    "scripts/install_label_studio.sh (or set $LABEL_STUDIO_BIN)")
    return path


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _version(executable):
    python = os.path.join(os.path.dirname(executable), "python")
    out = subprocess.run([python, "-c", "import importlib.metadata as m; "
                          "print(m.version('label-studio'))"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


class LabelStudioServer:
    """One `label-studio start` process on 127.0.0.1 with its own data directory."""

    def __init__(self, executable, data_dir, token, password):
        self.data_dir = data_dir
        self.token = token
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.username, self.password = USERNAME, password
        env = dict(os.environ)
        env.update({
            "LABEL_STUDIO_BASE_DATA_DIR": data_dir,
            "LABEL_STUDIO_USERNAME": USERNAME,
            "LABEL_STUDIO_PASSWORD": password,
            # Passed through the environment, like the docs' command, so it
            # never shows in a process list.
            "LABEL_STUDIO_USER_TOKEN": token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        })
        self.log_path = os.path.join(data_dir, "server.log")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [executable, "start", "--no-browser", "--internal-host", "127.0.0.1",
             "--port", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        with open(self.log_path, "rb") as f:
            tail = f.read()[-3000:].decode("utf-8", "replace")
        raise RuntimeError(f"Label Studio did not come up on {self.url} within "
                           f"{seconds:.0f}s; its log ends:\n{tail}")

    def stop(self):
        if self.process.poll() is None:
            # The server runs in its own process group (start_new_session).
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


def _template(executable):
    """A migrated data directory for this Label Studio version; (path, token, password)."""
    root = os.path.join(os.path.expanduser(os.environ.get("XDG_CACHE_HOME", "~/.cache")),
                        "active_learning", "label_studio", _version(executable))
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        template = os.path.join(root, "template")
        secret = os.path.join(root, "credentials")
        if not os.path.exists(os.path.join(template, "label_studio.sqlite3")) \
                or not os.path.exists(secret):
            shutil.rmtree(template, ignore_errors=True)
            os.makedirs(template)
            token, password = secrets.token_hex(20), secrets.token_urlsafe(16)
            server = LabelStudioServer(executable, template, token, password)
            server.wait(600)
            server.stop()
            os.remove(server.log_path)
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"{token}\n{password}\n")
        with open(secret) as f:
            token, password = f.read().split()
    return template, token, password


@contextlib.contextmanager
def running_label_studio(timeout_s=300):
    """Yields a started `LabelStudioServer` on a copy of the template; stops it."""
    executable = require_label_studio()
    template, token, password = _template(executable)
    with tempfile.TemporaryDirectory(prefix="label-studio-") as tmp:
        data_dir = os.path.join(tmp, "data")
        shutil.copytree(template, data_dir)
        server = LabelStudioServer(executable, data_dir, token, password).wait(timeout_s)
        try:
            yield server
        finally:
            server.stop()
