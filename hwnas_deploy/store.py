"""The measurement store: every device, sub-network, artifact and measurement, transactionally.

    store = Store("hwnas.sqlite")            # a file path, "sqlite:///x.db", ":memory:",
    store = Store("postgresql+psycopg://host/lab")   # or any SQLAlchemy URL a lab shares

SQLite is the default (WAL, so readers never block the writer). Each measurement is written in
one transaction together with the rows it refers to, so a crash loses at most the measurement
in flight. Measurements are never overwritten: a forced re-measure adds a row, queries take the
newest per key (device, space, config, runtime, threads, batch).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from hwnas_deploy.errors import StoreError

SCHEMA_VERSION = 4
DEFAULT_DB = "hwnas.sqlite"
DB_ENV_VAR = "HWNAS_DB"
SENTINEL_ROLE = "sentinel"  # details["role"] of a drift sentinel's readings (`measurement.drift`)

metadata = sa.MetaData()
meta_table = sa.Table(
    "meta", metadata, sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text, nullable=False)
)
devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("profile_json", sa.Text, nullable=False),
    sa.Column("created", sa.String(32), nullable=False),
)
subnets = sa.Table(
    "subnets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("space", sa.String(64), nullable=False),
    sa.Column("config_hash", sa.String(32), nullable=False),
    sa.Column("config_json", sa.Text, nullable=False),
    sa.Column("macs", sa.BigInteger),
    sa.Column("params", sa.BigInteger),
    sa.UniqueConstraint("space", "config_hash"),
)
artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("subnet_id", sa.ForeignKey("subnets.id")),
    sa.Column("format", sa.String(32), nullable=False),
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("max_abs_error", sa.Float),
    sa.Column("export_seconds", sa.Float),
    sa.Column("meta_json", sa.Text, nullable=False),
    sa.Column("created", sa.String(32), nullable=False),
    sa.UniqueConstraint("sha256", "format", "target"),
)
measurements = sa.Table(
    "measurements",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.ForeignKey("devices.id"), nullable=False),
    sa.Column("subnet_id", sa.ForeignKey("subnets.id"), nullable=False),
    sa.Column("artifact_id", sa.ForeignKey("artifacts.id")),
    sa.Column("runtime", sa.String(32), nullable=False),
    sa.Column("threads", sa.Integer, nullable=False),
    sa.Column("batch", sa.Integer, nullable=False),
    sa.Column("median_ms", sa.Float, nullable=False),
    sa.Column("mean_ms", sa.Float),
    sa.Column("p90_ms", sa.Float),
    sa.Column("iqr_ms", sa.Float),
    sa.Column("min_ms", sa.Float),
    sa.Column("std_ms", sa.Float),
    sa.Column("n", sa.Integer),
    sa.Column("n_outliers", sa.Integer),
    sa.Column("ci_rel", sa.Float),
    sa.Column("converged", sa.Boolean),
    sa.Column("samples_json", sa.Text, nullable=False),
    sa.Column("env_json", sa.Text, nullable=False),
    sa.Column("created", sa.String(32), nullable=False),
    sa.Column("details_json", sa.Text),  # schema v2
    sa.Index("ix_measurement_key", "device_id", "subnet_id", "runtime", "threads", "batch"),
)

# Sub-networks a device cannot hold (SRAM / flash over budget): recorded with the numbers, so a
# resumed run skips them too. (schema v2)
unfit = sa.Table(
    "unfit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.ForeignKey("devices.id"), nullable=False),
    sa.Column("subnet_id", sa.ForeignKey("subnets.id"), nullable=False),
    sa.Column("runtime", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("details_json", sa.Text, nullable=False),
    sa.Column("created", sa.String(32), nullable=False),
    sa.UniqueConstraint("device_id", "subnet_id", "runtime"),
)

#: A number a source other than a device gives a sub-network, cached: e.g. the accuracy a trained
#: supernet estimates (source "supernet:<checkpoint sha256>", metric "val_accuracy").
scores = sa.Table(
    "scores",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(128), nullable=False),
    sa.Column("subnet_id", sa.ForeignKey("subnets.id"), nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("details_json", sa.Text, nullable=False),
    sa.Column("created", sa.String(32), nullable=False),
    sa.UniqueConstraint("source", "subnet_id", "metric"),
)

#: Who is measuring what right now, so that clients sharing a store (a lab's PostgreSQL) measure
#: each key once: a row per key being measured, its owner (host:pid:nonce) and when the claim
#: lapses unless renewed (epoch seconds: a killed client's claims expire, nothing else is lost).
#: (schema v4)
claims = sa.Table(
    "claims",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("device", sa.String(128), nullable=False),
    sa.Column("space", sa.String(64), nullable=False),
    sa.Column("config_hash", sa.String(32), nullable=False),
    sa.Column("runtime", sa.String(32), nullable=False),
    sa.Column("threads", sa.Integer, nullable=False),
    sa.Column("batch", sa.Integer, nullable=False),
    sa.Column("owner", sa.String(160), nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
    sa.UniqueConstraint("device", "space", "config_hash", "runtime", "threads", "batch"),
)

#: version reached -> statements that bring a database from the previous version to it
#: (tables that did not exist are created by create_all before these run)
MIGRATIONS: dict[int, list[str]] = {
    2: ["ALTER TABLE measurements ADD COLUMN details_json TEXT"],
    3: [],  # the scores table (create_all)
    4: [],  # the claims table (create_all)
}


def _insert_ignoring_conflict(conn: Connection, table: sa.Table, unique: list[str]):
    """INSERT that does nothing where a row with the same `unique` columns exists (SQLite and
    PostgreSQL; elsewhere a plain INSERT)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        return sa.insert(table)
    return insert(table).on_conflict_do_nothing(index_elements=unique)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def resolve_url(url: str | os.PathLike | None) -> str:
    """A plain path or ':memory:' becomes a SQLite URL; None means $HWNAS_DB or hwnas.sqlite."""
    url = os.fspath(url) if url else os.environ.get(DB_ENV_VAR) or DEFAULT_DB
    if url == ":memory:":
        return "sqlite://"
    if "://" in url:
        return url
    return f"sqlite:///{Path(url).expanduser().resolve()}"


@dataclass(frozen=True)
class MeasurementKey:
    device: str
    space: str
    config_hash: str
    runtime: str
    threads: int
    batch: int


class Store:
    def __init__(self, url: str | os.PathLike | None = None):
        self.url = resolve_url(url)
        self.engine = self._connect()
        self._migrate()

    # -- opening ----------------------------------------------------------------------------
    def _connect(self) -> Engine:
        try:
            parsed = sa.engine.make_url(self.url)
        except sa.exc.ArgumentError as exc:
            raise StoreError(f"malformed database URL {self.url!r}: {exc}") from None
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            parent = Path(parsed.database).parent
            if not parent.is_dir():
                raise StoreError(f"cannot open database {parsed.database}: folder {parent} does not exist")
            if not os.access(parent, os.W_OK) or (
                Path(parsed.database).exists() and not os.access(parsed.database, os.W_OK)
            ):
                raise StoreError(f"cannot open database {parsed.database}: not writable (permission denied)")
        try:
            engine = sa.create_engine(parsed)
        except (ImportError, sa.exc.NoSuchModuleError) as exc:
            raise StoreError(f"database URL {self.url!r} needs a driver that is not installed: {exc}") from None
        if engine.dialect.name == "sqlite":

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn, _record):
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                if parsed.database:
                    cur.execute("PRAGMA journal_mode=WAL")
                cur.close()

        return engine

    def _migrate(self) -> None:
        try:
            with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":  # clients opening a new lab store at once: one creates it
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(20261207)"))
                existing = set(sa.inspect(conn).get_table_names())
                metadata.create_all(conn)
                row = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")).first()
                if row is None:
                    if "measurements" in existing:
                        raise StoreError(f"database {self.url} has hwnas tables but no schema version")
                    conn.execute(sa.insert(meta_table).values(key="schema_version", value=str(SCHEMA_VERSION)))
                    return
                version = int(row[0])
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"database {self.url} has schema v{version}, newer than this hwnas-deploy "
                        f"(v{SCHEMA_VERSION}); upgrade hwnas-deploy"
                    )
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS.get(target, []):
                        conn.execute(sa.text(statement))
                if version < SCHEMA_VERSION:
                    conn.execute(
                        sa.update(meta_table).where(meta_table.c.key == "schema_version").values(value=str(SCHEMA_VERSION))
                    )
        except sa.exc.DatabaseError as exc:
            raise StoreError(f"cannot open database {self.url}: {exc.orig}") from None

    @property
    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")).scalar())

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.OperationalError as exc:
            raise StoreError(f"database {self.url}: {exc.orig}") from None

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- rows that measurements refer to ----------------------------------------------------
    @staticmethod
    def _get_or_insert(conn: Connection, table: sa.Table, match: Mapping, values: Mapping) -> int:
        where = sa.and_(*(table.c[k] == v for k, v in match.items()))
        found = conn.execute(sa.select(table.c.id).where(where)).scalar()
        if found is None:  # another client may insert the same row meanwhile: theirs stands
            conn.execute(_insert_ignoring_conflict(conn, table, list(match)).values(**match, **values))
            found = conn.execute(sa.select(table.c.id).where(where)).scalar()
        return found

    # -- claims: clients sharing the store measure each key once ----------------------------
    @property
    def shared(self) -> bool:
        """Whether other processes can open this store (not an in-memory SQLite)."""
        return not (self.engine.dialect.name == "sqlite" and not self.engine.url.database)

    @staticmethod
    def _claim_where(key: MeasurementKey):
        c = claims.c
        return sa.and_(c.device == key.device, c.space == key.space, c.config_hash == key.config_hash,
                       c.runtime == key.runtime, c.threads == key.threads, c.batch == key.batch)

    def claim(self, key: MeasurementKey, owner: str, ttl_s: float) -> bool:
        """Take the key for `owner` for `ttl_s` seconds: True when it had no claim, `owner`'s own,
        or one that lapsed; False while another owner's stands."""
        expires = time.time() + ttl_s
        with self.transaction() as conn:
            values = {"device": key.device, "space": key.space, "config_hash": key.config_hash,
                      "runtime": key.runtime, "threads": key.threads, "batch": key.batch}
            taken = conn.execute(_insert_ignoring_conflict(conn, claims, list(values))
                                 .values(**values, owner=owner, expires=expires)).rowcount
            if taken == 1:
                return True
            # a compare-and-set: of two clients taking over one lapsed claim, one updates the row
            stolen = sa.update(claims).where(
                self._claim_where(key), sa.or_(claims.c.owner == owner, claims.c.expires < time.time())
            ).values(owner=owner, expires=expires)
            return conn.execute(stolen).rowcount == 1

    def renew_claims(self, owner: str, ttl_s: float) -> int:
        """Push back the lapse of every claim `owner` holds (its heartbeat); how many it holds."""
        with self.transaction() as conn:
            return conn.execute(sa.update(claims).where(claims.c.owner == owner)
                                .values(expires=time.time() + ttl_s)).rowcount

    def release(self, owner: str, key: MeasurementKey | None = None) -> None:
        """Drop `owner`'s claim on `key` (every claim it holds without one)."""
        where = claims.c.owner == owner
        if key is not None:
            where = sa.and_(where, self._claim_where(key))
        with self.transaction() as conn:
            conn.execute(sa.delete(claims).where(where))

    def claim_of(self, key: MeasurementKey) -> dict | None:
        """The standing claim on `key` ({owner, expires_in_s}), or None (none, or lapsed)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(claims.c.owner, claims.c.expires).where(self._claim_where(key))).first()
        if row is None or row.expires < time.time():
            return None
        return {"owner": row.owner, "expires_in_s": row.expires - time.time()}

    def _device_id(self, conn: Connection, name: str, kind: str, profile: Mapping) -> int:
        values = {"kind": kind, "profile_json": json.dumps(profile, sort_keys=True), "created": _now()}
        return self._get_or_insert(conn, devices, {"name": name}, values)

    def _subnet_id(self, conn: Connection, space: str, config_hash: str, config: Mapping, macs, params) -> int:
        values = {"config_json": json.dumps(config, sort_keys=True), "macs": macs, "params": params}
        return self._get_or_insert(conn, subnets, {"space": space, "config_hash": config_hash}, values)

    def _artifact_id(self, conn: Connection, subnet_id: int, artifact) -> int:
        match = {"sha256": artifact.sha256, "format": artifact.format, "target": artifact.target}
        values = {
            "subnet_id": subnet_id,
            "path": artifact.path,
            "max_abs_error": artifact.max_abs_error,
            "export_seconds": artifact.export_seconds,
            "meta_json": json.dumps(artifact.to_dict(), sort_keys=True),
            "created": _now(),
        }
        return self._get_or_insert(conn, artifacts, match, values)

    # -- measurements -----------------------------------------------------------------------
    def rounds(self, key: MeasurementKey) -> list[dict[str, Any]]:
        """Every measurement of the key (each round is kept), newest first."""
        return self.measurements(device=key.device, space=key.space, runtime=key.runtime, threads=key.threads,
                                 batch=key.batch, config_hash=key.config_hash, latest_only=False)

    def measurement_count(self, key: MeasurementKey) -> int:
        """How many times the key was measured (every round is kept)."""
        return len(self.rounds(key))

    def has_measurement(self, key: MeasurementKey) -> bool:
        """True when the key was measured, or recorded as not fitting the device."""
        return self.latest(key) is not None or self.unfit_record(key) is not None

    def add_unfit(self, key: MeasurementKey, reason: str, details: Mapping, *, device_kind: str,
                  device_profile: Mapping, config: Mapping, macs: int | None = None,
                  params: int | None = None) -> None:
        """Record that the device cannot hold this sub-network (with the numbers that say so)."""
        with self.transaction() as conn:
            device_id = self._device_id(conn, key.device, device_kind, device_profile)
            subnet_id = self._subnet_id(conn, key.space, key.config_hash, config, macs, params)
            where = sa.and_(unfit.c.device_id == device_id, unfit.c.subnet_id == subnet_id,
                            unfit.c.runtime == key.runtime)
            conn.execute(sa.delete(unfit).where(where))
            conn.execute(sa.insert(unfit).values(device_id=device_id, subnet_id=subnet_id, runtime=key.runtime,
                                                 reason=reason, details_json=json.dumps(dict(details), sort_keys=True),
                                                 created=_now()))

    def unfit_record(self, key: MeasurementKey) -> dict | None:
        query = (
            sa.select(unfit.c.reason, unfit.c.details_json)
            .join(devices, unfit.c.device_id == devices.c.id)
            .join(subnets, unfit.c.subnet_id == subnets.c.id)
            .where(devices.c.name == key.device, subnets.c.space == key.space,
                   subnets.c.config_hash == key.config_hash, unfit.c.runtime == key.runtime)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else {"reason": row.reason, **json.loads(row.details_json)}

    def score(self, source: str, space: str, config_hash: str, metric: str) -> float | None:
        """A cached score of a sub-network (see the `scores` table), or None."""
        query = (
            sa.select(scores.c.value).join(subnets, scores.c.subnet_id == subnets.c.id)
            .where(scores.c.source == source, scores.c.metric == metric, subnets.c.space == space,
                   subnets.c.config_hash == config_hash)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else float(row.value)

    def add_score(self, source: str, space: str, config_hash: str, config: Mapping, metric: str, value: float,
                  details: Mapping | None = None, macs: int | None = None, params: int | None = None) -> None:
        """Store a score (replacing the same source's earlier one for that network and metric)."""
        with self.transaction() as conn:
            subnet_id = self._subnet_id(conn, space, config_hash, config, macs, params)
            conn.execute(sa.delete(scores).where(scores.c.source == source, scores.c.subnet_id == subnet_id,
                                                 scores.c.metric == metric))
            conn.execute(sa.insert(scores).values(source=source, subnet_id=subnet_id, metric=metric, value=float(value),
                                                  details_json=json.dumps(dict(details or {}), sort_keys=True),
                                                  created=_now()))

    def unfit_count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(unfit)).scalar()

    def latest(self, key: MeasurementKey) -> dict | None:
        rows = self.measurements(
            device=key.device,
            space=key.space,
            runtime=key.runtime,
            threads=key.threads,
            batch=key.batch,
            config_hash=key.config_hash,
        )
        return rows[0] if rows else None

    def add_measurement(
        self,
        key: MeasurementKey,
        summary,
        *,
        device_kind: str,
        device_profile: Mapping,
        config: Mapping,
        macs: int | None = None,
        params: int | None = None,
        artifact=None,
        env: Mapping | None = None,
    ) -> int:
        """Store one measurement and everything it refers to in a single transaction."""
        with self.transaction() as conn:
            device_id = self._device_id(conn, key.device, device_kind, device_profile)
            subnet_id = self._subnet_id(conn, key.space, key.config_hash, config, macs, params)
            artifact_id = self._artifact_id(conn, subnet_id, artifact) if artifact is not None else None
            stats = summary.to_dict()
            samples = stats.pop("samples_ms")
            details = stats.pop("details")
            row = conn.execute(
                sa.insert(measurements).values(
                    device_id=device_id,
                    subnet_id=subnet_id,
                    artifact_id=artifact_id,
                    runtime=key.runtime,
                    threads=key.threads,
                    batch=key.batch,
                    samples_json=json.dumps(samples),
                    env_json=json.dumps(env or {}, sort_keys=True),
                    details_json=json.dumps(details, sort_keys=True),
                    created=_now(),
                    **stats,
                )
            )
            return row.inserted_primary_key[0]

    def measurements(
        self,
        device: str | None = None,
        space: str | None = None,
        runtime: str | None = None,
        threads: int | None = None,
        batch: int | None = None,
        config_hash: str | None = None,
        latest_only: bool = True,
        sentinels: bool = False,
    ) -> list[dict[str, Any]]:
        """Measurements as plain dicts (newest first), with the device, space and config. A
        sentinel's readings (`measurement.drift`: details role "sentinel") are not a network's
        measurements and are left out unless `sentinels`."""
        m, d, s = measurements, devices, subnets
        query = (
            sa.select(
                m.c.id,
                d.c.name.label("device"),
                s.c.space,
                s.c.config_hash,
                s.c.config_json,
                s.c.macs,
                s.c.params,
                m.c.runtime,
                m.c.threads,
                m.c.batch,
                m.c.median_ms,
                m.c.mean_ms,
                m.c.p90_ms,
                m.c.iqr_ms,
                m.c.min_ms,
                m.c.std_ms,
                m.c.n,
                m.c.n_outliers,
                m.c.ci_rel,
                m.c.converged,
                m.c.samples_json,
                m.c.details_json,
                m.c.env_json,
                m.c.created,
            )
            .join(d, m.c.device_id == d.c.id)
            .join(s, m.c.subnet_id == s.c.id)
            .order_by(m.c.id.desc())
        )
        filters = {
            d.c.name: device,
            s.c.space: space,
            m.c.runtime: runtime,
            m.c.threads: threads,
            m.c.batch: batch,
            s.c.config_hash: config_hash,
        }
        for column, value in filters.items():
            if value is not None:
                query = query.where(column == value)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        seen: set[tuple] = set()
        out = []
        for r in rows:
            r["details"] = json.loads(r.pop("details_json") or "{}")
            if not sentinels and r["details"].get("role") == SENTINEL_ROLE:
                continue
            key = (r["device"], r["space"], r["config_hash"], r["runtime"], r["threads"], r["batch"])
            if latest_only and key in seen:
                continue
            seen.add(key)
            r["config"] = json.loads(r.pop("config_json"))
            r["samples_ms"] = json.loads(r.pop("samples_json"))
            r["env"] = json.loads(r.pop("env_json") or "{}")  # the device's facts, runtime, lab device
            out.append(r)
        return out

    def overview(self) -> list[dict[str, Any]]:
        """One row per (device, space, runtime, threads, batch): count, latency range, and the
        Kendall tau between MACs and latency (how well MACs would have ranked these networks)."""
        from hwnas_deploy.report.figures import kendall_tau

        groups: dict[tuple, list[dict]] = {}
        for r in self.measurements():
            groups.setdefault((r["device"], r["space"], r["runtime"], r["threads"], r["batch"]), []).append(r)
        out = []
        for k, rows in sorted(groups.items()):
            lat = sorted(r["median_ms"] for r in rows)
            out.append(
                {
                    "device": k[0],
                    "space": k[1],
                    "runtime": k[2],
                    "threads": k[3],
                    "batch": k[4],
                    "subnets": len(rows),
                    "min_ms": lat[0],
                    "median_ms": lat[len(lat) // 2],
                    "max_ms": lat[-1],
                    "tau_macs": kendall_tau([r["macs"] for r in rows], [r["median_ms"] for r in rows]),
                }
            )
        return out

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
                for t in (devices, subnets, artifacts, measurements, unfit)
            }
