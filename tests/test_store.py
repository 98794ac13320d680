from __future__ import annotations

import sqlite3

import pytest

from hwnas_deploy.errors import StoreError
from hwnas_deploy.measure import summarize
from hwnas_deploy.store import SCHEMA_VERSION, MeasurementKey, Store, resolve_url


def _add(store, key, median=1.0, **kw):
    return store.add_measurement(
        key, summarize([median] * 10), device_kind="server", device_profile={"name": key.device},
        config={"a": 1}, macs=100, params=10, **kw,
    )


KEY = MeasurementKey("local-cpu", "mcu-mbnet", "abc", "onnxruntime", 1, 1)


def test_round_trip_and_skip_key(store):
    assert not store.has_measurement(KEY)
    _add(store, KEY, 2.5)
    assert store.has_measurement(KEY)
    row = store.latest(KEY)
    assert row["median_ms"] == 2.5 and row["config"] == {"a": 1} and row["samples_ms"] == [2.5] * 10
    # threads and batch are part of the key
    assert not store.has_measurement(MeasurementKey(**{**KEY.__dict__, "threads": 2}))
    assert not store.has_measurement(MeasurementKey(**{**KEY.__dict__, "batch": 4}))
    assert store.counts() == {"devices": 1, "subnets": 1, "artifacts": 0, "measurements": 1, "unfit": 0}


def test_forced_remeasure_keeps_history_and_latest_wins(store):
    _add(store, KEY, 1.0)
    _add(store, KEY, 3.0)
    assert store.latest(KEY)["median_ms"] == 3.0
    assert len(store.measurements()) == 1
    assert [r["median_ms"] for r in store.measurements(latest_only=False)] == [3.0, 1.0]


def test_sqlite_file_is_in_wal_mode_with_schema_version(tmp_path):
    path = tmp_path / "x.sqlite"
    with Store(str(path)) as s:
        _add(s, KEY)
        assert s.schema_version == SCHEMA_VERSION
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_keeps_everything(tmp_path):
    path = str(tmp_path / "x.sqlite")
    with Store(path) as s:
        _add(s, KEY)
    with Store(f"sqlite:///{path}") as s:
        assert s.has_measurement(KEY)


def test_a_failed_transaction_writes_nothing(store):
    with pytest.raises(RuntimeError):
        with store.transaction() as conn:
            store._device_id(conn, "ghost", "server", {})
            raise RuntimeError("crash mid-transaction")
    assert store.counts()["devices"] == 0


def test_unwritable_and_missing_paths_are_clear(tmp_path):
    with pytest.raises(StoreError, match="folder .*nope does not exist"):
        Store(str(tmp_path / "nope" / "x.sqlite"))
    # /proc takes no new files, not even from root (CI runs as root, so chmod cannot show this)
    with pytest.raises(StoreError, match="cannot open database .*/proc/hwnas.sqlite"):
        Store("/proc/hwnas.sqlite")


def test_unwritable_file_even_for_root(tmp_path):
    """A database path that is a folder cannot be opened, whoever runs."""
    folder = tmp_path / "db.sqlite"
    folder.mkdir()
    with pytest.raises(StoreError, match="cannot open database"):
        Store(str(folder))


def test_newer_schema_is_refused(tmp_path):
    path = str(tmp_path / "x.sqlite")
    Store(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    with pytest.raises(StoreError, match="schema v99, newer than this hwnas-deploy"):
        Store(path)


def test_url_forms(tmp_path, monkeypatch):
    assert resolve_url(":memory:") == "sqlite://"
    assert resolve_url("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"
    monkeypatch.setenv("HWNAS_DB", str(tmp_path / "env.sqlite"))
    assert resolve_url(None).endswith("env.sqlite")
    assert resolve_url(tmp_path / "p.sqlite") == f"sqlite:///{tmp_path / 'p.sqlite'}"  # a pathlib.Path too
    with pytest.raises(StoreError, match="needs a driver that is not installed"):
        Store("postgresql+nosuchdriver://h/db")
    with Store(":memory:") as s:
        _add(s, KEY)
        assert s.overview()[0]["subnets"] == 1


def test_unfit_subnets_are_recorded_and_skipped(store):
    key = MeasurementKey("qemu-m7", "mcu-mbnet", "big", "blob", 1, 1)
    store.add_unfit(key, "arena 400000 B > SRAM 327680 B", {"arena_bytes": 400000}, device_kind="mcu-serial",
                    device_profile={}, config={"a": 2})
    assert store.has_measurement(key)
    assert store.unfit_record(key) == {"reason": "arena 400000 B > SRAM 327680 B", "arena_bytes": 400000}
    assert store.measurements() == [] and store.unfit_count() == 1


def test_version_1_database_is_migrated_in_place(tmp_path):
    """A database written by schema v1 (no details column, no unfit, scores or claims table) opens, keeps
    its rows, and gains the later additions."""
    path = str(tmp_path / "v1.sqlite")
    with Store(path) as s:
        _add(s, KEY, 4.0)
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE measurements DROP COLUMN details_json")
    con.execute("DROP TABLE unfit")
    con.execute("DROP TABLE scores")
    con.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    con.commit()
    con.close()
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION == 4
        s.add_score("supernet:abc", KEY.space, KEY.config_hash, {"a": 1}, "val_accuracy", 0.5)
        assert s.score("supernet:abc", KEY.space, KEY.config_hash, "val_accuracy") == 0.5
        assert s.latest(KEY)["median_ms"] == 4.0 and s.latest(KEY)["details"] == {}
        _add(s, KEY, 5.0)
        assert s.latest(KEY)["median_ms"] == 5.0


def test_scores_are_cached_per_source_network_and_metric(store):
    assert store.score("supernet:a", "sp", "h1", "val_accuracy") is None
    store.add_score("supernet:a", "sp", "h1", {"x": 1}, "val_accuracy", 0.8, {"calib": 256})
    store.add_score("supernet:b", "sp", "h1", {"x": 1}, "val_accuracy", 0.6)
    store.add_score("supernet:a", "sp", "h1", {"x": 1}, "val_accuracy", 0.9)  # replaces a's
    assert store.score("supernet:a", "sp", "h1", "val_accuracy") == 0.9
    assert store.score("supernet:b", "sp", "h1", "val_accuracy") == 0.6
    assert store.score("supernet:a", "sp", "h1", "test_accuracy") is None
