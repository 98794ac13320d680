"""A lab's shared store: PostgreSQL for real (a throw-away server, tests/pg.py), and clients that
share a store measuring each network once (claims), a killed one's claims lapsing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from torch import nn

from hwnas_deploy.measure import summarize
from hwnas_deploy.measurement import Measurer, ModuleNetwork
from hwnas_deploy.store import MeasurementKey, Store, claims, metadata
from tests.conftest import run_cli, small_cells
from tests.pg import postgres_server

KEY = MeasurementKey("local-cpu", "mcu-mbnet", "abc", "onnxruntime", 1, 1)


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request, pg_url, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "shared.sqlite")
    with Store(pg_url) as store, store.transaction() as conn:  # each test starts from an empty database
        for table in reversed(metadata.sorted_tables):
            if table.name != "meta":  # the schema version stays
                conn.execute(table.delete())
    return pg_url


def _tiny(width: int) -> ModuleNetwork:
    def build():
        torch.manual_seed(width)
        return (nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Flatten(),
                              nn.Linear(width * 8 * 8, 4)).eval(), torch.randn(1, 3, 8, 8))

    return ModuleNetwork("user", {"model": "tiny", "width": width, "input": [1, 3, 8, 8]}, build)


def test_the_store_on_postgresql_keeps_measurements_and_claims(pg_url):
    with Store(pg_url) as store:
        assert store.shared and store.engine.dialect.name == "postgresql"
        store.add_measurement(KEY, summarize([2.5] * 10), device_kind="server", device_profile={"name": "x"},
                              config={"a": 1}, macs=100, params=10)
        assert store.claim(KEY, "A", 30) and not store.claim(KEY, "B", 30) and store.claim(KEY, "A", 30)
        assert store.claim_of(KEY)["owner"] == "A"
        store.renew_claims("A", 0.05)
        time.sleep(0.1)
        assert store.claim_of(KEY) is None and store.claim(KEY, "B", 30)  # lapsed: B takes it over
        store.release("B")
        assert store.claim_of(KEY) is None
    with Store(pg_url) as again:  # a second client opens the same schema and sees the row
        assert again.latest(KEY)["median_ms"] == 2.5 and again.counts()["measurements"] >= 1


def test_a_network_another_client_holds_is_taken_over_when_its_claim_lapses(url, tmp_path):
    nets = [_tiny(4), _tiny(6)]
    with Store(url) as store, Measurer("local-cpu", store, artifacts_dir=tmp_path / "a", progress=False) as m:
        key = m.plan("onnxruntime").key(nets[0])
        assert store.claim(key, "ghost:1:dead", 2.0)  # a client that died holding it
        t0 = time.monotonic()
        report = m.measure(nets, "onnxruntime", sentinel_every_s=0)
        assert time.monotonic() - t0 >= 1.0  # it waited for the lapse
        assert sorted(report.measured) == sorted(n.config_hash for n in nets) and not report.by_others
        assert any("being measured by another client" in e for e in report.lab_events)
        assert store.claim_of(key) is None
        assert len(store.measurements(space="user", latest_only=False)) == 2


def test_a_network_another_client_measures_meanwhile_is_read_back_not_measured_again(url, tmp_path):
    net = _tiny(5)
    with Store(url) as store, Measurer("local-cpu", store, artifacts_dir=tmp_path / "a", progress=False) as m:
        key = m.plan("onnxruntime").key(net)
        assert store.claim(key, "other:2:live", 60.0)

        def the_other_client_finishes():
            time.sleep(1.5)
            with Store(url) as theirs:
                theirs.add_measurement(key, summarize([7.25] * 10), device_kind="server",
                                       device_profile={"name": "local-cpu"}, config=net.config)
                theirs.release("other:2:live")

        other = threading.Thread(target=the_other_client_finishes)
        other.start()
        report = m.measure([net], "onnxruntime", sentinel_every_s=0)
        other.join()
        assert report.measured == [] and report.by_others == [net.config_hash]
        assert report.results[net.config_hash].status == "stored" and report.median_ms(net) == 7.25
        assert "measured by another client 1" in report.line()
        assert len(store.measurements(space="user", latest_only=False)) == 1


def _configs(tmp_path, name, cells):
    path = tmp_path / name
    path.write_text("".join(json.dumps(c) + "\n" for c in cells))
    return str(path)


PROFILE = ("profile", "--device", "local-cpu", "--space", "nb201", "--runtime", "onnxruntime", "--quiet",
           "--sentinel-every", "0")
CLAIM_TTL_S = "16"


def _measured(output: str) -> int:
    return int(re.search(r"measured (\d+)", output).group(1))


def _counts(url) -> dict[str, int]:
    with Store(url) as store:
        rows = store.measurements(space="nb201", latest_only=False)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["config_hash"]] = counts.get(r["config_hash"], 0) + 1
    return counts


@pytest.mark.parametrize("url", ["postgresql"], indirect=True)  # SQLite: the in-process tests above
def test_two_clients_on_one_store_measure_every_network_once(url, tmp_path):
    cells = small_cells(8)
    a = _configs(tmp_path, "a.jsonl", cells[:6])
    b = _configs(tmp_path, "b.jsonl", cells)  # the same first six, in the same order: they collide
    env = dict(os.environ, PYTHONUNBUFFERED="1", HWNAS_CLAIM_TTL_S="20")
    procs = [subprocess.Popen([sys.executable, "-m", "hwnas_deploy", *PROFILE, "--configs", f, "--db", url,
                               "--artifacts", str(tmp_path / f"art-{i}")], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i, f in enumerate((a, b))]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    counts = _counts(url)
    assert len(counts) == 8 and set(counts.values()) == {1}, counts  # 0 lost, 0 duplicated
    assert sum(map(_measured, outs)) == 8, outs  # and every one was measured by exactly one client
    with Store(url) as store:
        assert _no_claims(store)


def _no_claims(store) -> bool:
    with store.engine.connect() as conn:
        return conn.execute(claims.select()).first() is None


def _holds_an_unmeasured_one(url) -> bool:
    """A network measured, and a claim on one that is not (the client is on its next network)."""
    measured = _counts(url)
    with Store(url) as store, store.engine.connect() as conn:
        held = {r.config_hash for r in conn.execute(claims.select())}
    return bool(measured) and bool(held - set(measured))


@pytest.mark.parametrize("url", ["postgresql"], indirect=True)
def test_a_client_killed_mid_batch_leaves_its_claims_to_lapse_and_nothing_is_lost(url, tmp_path):
    cells = small_cells(6, seed=1)
    configs = _configs(tmp_path, "c.jsonl", cells)
    # the claim outlives the kill by at least 3/4 of the TTL (renewed every quarter): long enough
    # for the second client to start (torch's import on a loaded 2-core runner) and find it held
    env = dict(os.environ, PYTHONUNBUFFERED="1", HWNAS_CLAIM_TTL_S=CLAIM_TTL_S)
    victim = subprocess.Popen([sys.executable, "-m", "hwnas_deploy", *PROFILE, "--configs", configs, "--db", url],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not _holds_an_unmeasured_one(url) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _holds_an_unmeasured_one(url), "the first client measured nothing in 300 s"
    finally:
        os.killpg(victim.pid, signal.SIGKILL)  # mid-batch, holding the claim on its next network
        victim.wait()
    before = sum(_counts(url).values())
    assert 1 <= before < 6
    t0 = time.monotonic()
    done = run_cli(*PROFILE, "--configs", configs, "--db", url, cwd=tmp_path, env={"HWNAS_CLAIM_TTL_S": CLAIM_TTL_S},
                   check=True)
    counts = _counts(url)
    assert len(counts) == 6 and set(counts.values()) == {1}, (counts, done.stdout, done.stderr)
    assert _measured(done.stdout + done.stderr) == 6 - before
    # the killed client held its next network: the second waited for that claim to lapse, then took it
    assert "1 network(s) are being measured by another client" in done.stdout + done.stderr
    with Store(url) as store:
        assert _no_claims(store)
    assert time.monotonic() - t0 < 120
