"""A real nginx on 127.0.0.1 in front of a service, from the deployment's own template.

    with Nginx(api="127.0.0.1:8123", data_dir=svc.data_dir, accel="/_layerfreeze/data/") as proxy:
        httpx.get(proxy.url + "/healthz")

``deploy/nginx/layerfreeze.conf.template`` is filled in as the nginx image's start-up step does (envsubst of
the variables that are set) and included in a minimal main configuration with a temporary prefix: pid,
logs and temp files under one directory, nothing of the host's /etc/nginx used. Debian's nginx-light
(``/usr/sbin/nginx``) is enough.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "nginx" / "layerfreeze.conf.template"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def render(template: str, values: dict[str, str]) -> str:
    """envsubst with a list of variables, as the nginx image runs it: ``${NAME}`` and ``$NAME`` of the
    given names are replaced, every other ``$word`` (nginx's own variables) stays."""
    def fill(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values[name] if name in values else match.group(0)

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", fill, template)


def template_variables(template: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", template))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """nginx (master + one worker) listening on 127.0.0.1, proxying to ``api`` and serving the
    ``accel`` prefix from ``data_dir``; stopped and its directory removed on exit."""

    def __init__(self, api: str, data_dir: Path, accel: str, *, binary: str | None = None) -> None:
        self.binary = binary or nginx_binary()
        if self.binary is None:
            raise FileNotFoundError("nginx is not installed (Debian: apt-get install nginx-light)")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = Path(tempfile.mkdtemp(prefix="layerfreeze-nginx-"))
        values = {"NGINX_LISTEN": f"127.0.0.1:{self.port}", "NGINX_RESOLVER": "127.0.0.1",
                  "LAYERFREEZE_API_UPSTREAM": api, "LAYERFREEZE_DATA_DIR": str(Path(data_dir).resolve()),
                  "LAYERFREEZE_ACCEL_REDIRECT": accel}
        text = TEMPLATE.read_text()
        missing = template_variables(text) - set(values)
        if missing:
            raise ValueError(f"the template names variables this harness does not set: {sorted(missing)}")
        (self.prefix / "layerfreeze.conf").write_text(render(text, values))
        temps = "\n".join(f"    {kind}_temp_path {self.prefix / kind};"
                          for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        # As root, nginx's workers would run as nobody, who cannot read a test's private temp directory.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(
            f"{user}worker_processes 1;\npid {self.prefix / 'nginx.pid'};\n"
            f"error_log {self.prefix / 'error.log'} warn;\n"
            "events { worker_connections 256; }\n"
            f"http {{\n    access_log {self.prefix / 'access.log'};\n{temps}\n"
            f"    include {self.prefix / 'layerfreeze.conf'};\n}}\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def check(self) -> None:
        """``nginx -t`` on the generated configuration."""
        result = subprocess.run([str(self.binary), "-t", "-p", str(self.prefix), "-c", str(self.conf)],
                                capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{result.stderr}")

    def start(self, timeout: float = 20.0) -> Nginx:
        self.check()
        self.proc = subprocess.Popen(
            [str(self.binary), "-p", str(self.prefix), "-c", str(self.conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {self.error_log()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"nginx did not listen within {timeout} s: {self.error_log()}")

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, then the master exits
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            self.proc = None

    def error_log(self) -> str:
        log = self.prefix / "error.log"
        return log.read_text()[-3000:] if log.exists() else ""

    def access_log(self) -> str:
        log = self.prefix / "access.log"
        return log.read_text() if log.exists() else ""

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.prefix, ignore_errors=True)
