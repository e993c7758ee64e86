"""Where a study lives: ``--storage`` as an RDB URL or a journal file, opened with bounded waits.

Any URL SQLAlchemy knows (``sqlite:///f.db``, ``postgresql+psycopg://user:pw@host/db``,
``mysql+pymysql://...``) or a journal file path. A server that is down or refuses the password
is one line of error within :data:`CONNECT_TIMEOUT_S`, never a traceback or a hang, and the
password never appears in messages or the report.
"""
from __future__ import annotations

import random
import time
import warnings
from pathlib import Path
from typing import Callable

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from compressor.errors import CompressorError

#: Seconds a worker waits for a database server to answer before giving up.
CONNECT_TIMEOUT_S = 10
#: Tries to open a database whose tables other workers are creating at the same moment.
SCHEMA_ATTEMPTS = 5
#: Seconds a SQLite writer waits for another worker's lock (trials write rarely, but together).
SQLITE_LOCK_TIMEOUT_S = 120

StaleCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


def storage_url(storage: str | None, run_dir: Path) -> str:
    """The storage to use: ``--storage`` as given, else SQLite in the run directory."""
    return storage or f"sqlite:///{(run_dir / 'study.db').resolve()}"


def shown(url: str) -> str:
    """``url`` as it may be printed: the password masked."""
    if "://" not in url:
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def open_storage(url: str, *, heartbeat_s: int | None = None,
                 on_stale: StaleCallback | None = None) -> optuna.storages.BaseStorage:
    """The storage at ``url``; RDB storages record a heartbeat of every running trial every
    ``heartbeat_s`` seconds and hand trials silent for three of them to ``on_stale``."""
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(url))
    try:
        for attempt in range(SCHEMA_ATTEMPTS):
            try:
                with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(
                        url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=heartbeat_s,
                        grace_period=3 * heartbeat_s if heartbeat_s else None,
                        heartbeat_stale_trial_callback=on_stale)
            except sqlalchemy.exc.DBAPIError as exc:
                # Workers that start together on an empty database all create Optuna's tables;
                # all but one fail ("already exists", optuna#1092), and then find them made.
                if attempt + 1 == SCHEMA_ATTEMPTS or not _schema_race(exc):
                    raise
                time.sleep(random.uniform(0.1, 1.0))
    except sqlalchemy.exc.NoSuchModuleError:
        raise CompressorError(f"--storage {shown(url)}: unknown database kind; write e.g. "
                              "postgresql+psycopg://user:pass@host/db, mysql+pymysql://..., sqlite:///file.db "
                              "or a journal file path") from None
    except ImportError as exc:
        raise CompressorError(f"--storage {shown(url)}: the database driver is missing ({exc}); install "
                              "it, e.g. `pip install 'compressor[postgres]'` for postgresql+psycopg://") from None
    except Exception as exc:  # sqlalchemy raises many kinds for bad URLs, refused logins, dead servers
        raise CompressorError(f"--storage {shown(url)}: cannot open the study storage ({_one_line(exc)})") from None


def _schema_race(exc: sqlalchemy.exc.DBAPIError) -> bool:
    return isinstance(exc, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)) \
        or "already exists" in str(exc.orig)


def _engine_kwargs(url: str) -> dict:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}}
    if backend in ("postgresql", "mysql", "mariadb"):  # their drivers all take connect_timeout
        # pre-ping: a worker outlives server restarts and idle-connection cuts between trials.
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    return {}


def _one_line(exc: BaseException) -> str:
    """The driver's own message (sqlalchemy wraps it with the SQL and a help link), on one line."""
    text = str(getattr(exc, "orig", None) or exc)
    return " ".join(part.strip() for part in text.splitlines() if part.strip())
