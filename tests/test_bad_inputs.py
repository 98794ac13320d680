"""Every bad input gets a one-line error naming the file, the field, the value and what is
allowed, and exit status 2 (README, "Reliability"). Each case runs `hwnas_deploy.cli.main`,
the console script's own entry point, in this process (a `hwnas` process per case would start
torch 20 times; tests/test_profile_cli.py runs the real processes)."""

from __future__ import annotations

import json

import pytest
import torch

from hwnas_deploy.cli import main

LOCAL = "name: bad\nkind: server\nruntimes: [onnxruntime]\n"
NB201 = json.dumps({"ops": [1, 2, 3, 1, 2, 3]})


def write(tmp_path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def profile_with(section: str) -> str:
    return LOCAL + section


def csv_rows(*rows: str) -> str:
    return "config,acc\n" + "".join(r + "\n" for r in rows)


ROW, ROW2 = '"{""ops"": [1, 2, 3, 1, 2, 3]}"', '"{""ops"": [0, 2, 3, 1, 2, 3]}"'
PROFILE = ["profile", "--space", "nb201", "--runtime", "onnxruntime", "--samples", "1", "--db", "x.sqlite"]
LUT = ["lut", "build", "--device", "qemu-m7", "--runtime", "firmware", "--out", "lut.json"]
FIT = ["predictor", "fit", "--space", "nb201", "--target", "acc", "--out", "p.json"]

CASES = {
    "negative batch": (PROFILE + ["--device", "local-cpu", "--batch", "-1"], {},
                       r"Invalid value for '--batch': -1 is not in the range x>=1"),
    "negative threads": (PROFILE + ["--device", "local-cpu", "--threads", "-2"], {},
                         r"Invalid value for '--threads': -2 is not in the range x>=1"),
    "zero threads": (PROFILE + ["--device", "local-cpu", "--threads", "0"], {},
                     r"Invalid value for '--threads': 0 is not in the range x>=1"),
    "warmup a list": (PROFILE + ["--device", "bad.yaml"], {"bad.yaml": profile_with("measurement:\n  warmup: [10]\n")},
                      r"bad\.yaml: measurement\.warmup is \[10\]; allowed: an integer >= 0"),
    "warmup a string": (PROFILE + ["--device", "bad.yaml"], {"bad.yaml": profile_with("measurement:\n  warmup: '10'\n")},
                        r"bad\.yaml: measurement\.warmup is '10'; allowed: an integer >= 0"),
    "sram not a number": (PROFILE + ["--device", "bad.yaml"],
                          {"bad.yaml": profile_with("hardware:\n  sram_bytes: lots\n")},
                          r"bad\.yaml: hardware\.sram_bytes is 'lots'; allowed: an integer >= 1"),
    "max under min repeats": (PROFILE + ["--device", "bad.yaml"],
                              {"bad.yaml": profile_with("measurement:\n  min_repeats: 10\n  max_repeats: 5\n")},
                              r"bad\.yaml: measurement\.max_repeats is 5; allowed: an integer >= min_repeats \(10\)"),
    "negative target ci": (PROFILE + ["--device", "bad.yaml"],
                           {"bad.yaml": profile_with("measurement:\n  target_ci: -1\n")},
                           r"bad\.yaml: measurement\.target_ci is -1; allowed: a number between 0 and 1"),
    "zero time budget": (PROFILE + ["--device", "bad.yaml"],
                         {"bad.yaml": profile_with("measurement:\n  time_budget_s: 0\n")},
                         r"bad\.yaml: measurement\.time_budget_s is 0; allowed: a number of seconds > 0"),
    "fractional repeats": (PROFILE + ["--device", "bad.yaml"],
                           {"bad.yaml": profile_with("measurement:\n  min_repeats: 2.5\n")},
                           r"bad\.yaml: measurement\.min_repeats is 2\.5; allowed: an integer >= 3"),
    "artifacts unwritable": (PROFILE + ["--device", "local-cpu", "--artifacts", "/proc/hwnas-artifacts"], {},
                             r"artifacts folder \(--artifacts\) /proc/hwnas-artifacts: cannot write there"),
    "csv row short": (FIT + ["--csv", "a.csv"], {"a.csv": csv_rows(f"{ROW},71.5", f"{ROW}")},
                      r"a\.csv:3: 1 fields, the header has 2"),
    "csv target inf": (FIT + ["--csv", "a.csv"], {"a.csv": csv_rows(f"{ROW},inf")},
                       r"a\.csv:2: acc is 'inf'; allowed: a finite number"),
    "csv header only": (FIT + ["--csv", "a.csv"], {"a.csv": csv_rows()}, r"a\.csv: no rows below the header"),
    "params out of range": (FIT + ["--csv", "a.csv", "--estimator", "gbt", "--params", '{"max_iter": -5}'],
                            {"a.csv": csv_rows(f"{ROW},71.5", f"{ROW2},70.1")},
                            r"estimator 'gbt': parameter max_iter is -5; allowed: an integer > 0"),
    "params wrong type": (FIT + ["--csv", "a.csv", "--estimator", "ridge", "--params", '{"alphas": "x"}'],
                          {"a.csv": csv_rows(f"{ROW},71.5", f"{ROW2},70.1")},
                          r"estimator 'ridge': parameter alphas is 'x'; allowed: a non-empty list of numbers"),
    "truncated checkpoint": (["accuracy", "--supernet", "cut.pt", "--config", NB201], {"cut.pt": b"PK\x03\x04 cut"},
                             r"cut\.pt: not a readable supernet checkpoint \(truncated"),
    "more networks than exist": (["sample", "--space", "nb201", "-n", "9446"], {},
                                 r"nb201: 9,446 sub-networks asked, but the space has only 9,445 distinct"),
    "impossible latency": (["search", "--space", "mcu-mbnet", "--objective", "macs", "--objective",
                            "latency=measure:qemu-m7/firmware", "--constraint", "latency<=0", "--out", "run",
                            "--db", "x.sqlite"], {},
                           r"constraints\[0\] 'latency<=0' is impossible: latency is always positive"),
    "every block: a gene left open": (LUT + ["--space", "mcu-mbnet", "--every-block", "r=128"], {},
                                      r"mcu-mbnet: covering every block fixes exactly the scalar genes w, r \(got r\)"),
    "every block: not pairs": (LUT + ["--space", "mcu-mbnet", "--every-block", "r128"], {},
                               r"Invalid value for --every-block: 'r128': expected GENE=VALUE pairs"),
    "every block: a value not allowed": (LUT + ["--space", "mcu-mbnet", "--every-block", "r=100,w=0.5"], {},
                                         r"mcu-mbnet: r=100 is not allowed; choices: \[64, 80,"),
    "every block: a space without a cover": (LUT + ["--space", "nb201", "--every-block", "r=1"], {},
                                             r"--every-block: space 'nb201' cannot list its blocks"),
    "baud rate too low": (PROFILE + ["--device", "bad.yaml"],
                          {"bad.yaml": "name: bad\nkind: mcu-serial\nruntimes: [firmware]\nconnection:\n"
                                       "  url: /dev/ttyACM0\n  baudrate: 300\n"},
                          r"bad\.yaml: connection\.baudrate is 300; allowed: an integer >= 1200 and <= 12000000"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_is_one_line_naming_what_and_exit_2(case, tmp_path, monkeypatch, capsys):
    args, files, message = CASES[case]
    write(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as ended:
        main(args)
    err = capsys.readouterr().err.strip()
    assert ended.value.code == 2, err
    import re

    assert re.search(message, err), err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("Usage:", "Try "))]
    assert len(lines) == 1, err  # one line (click adds its usage hint above a usage error)
    assert "Traceback" not in err


def test_a_pickled_object_is_refused_without_running_it(tmp_path, monkeypatch, capsys):
    ran = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    torch.save({"format": "hwnas-supernet", "evil": Evil()}, tmp_path / "evil.pt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as ended:
        main(["accuracy", "--supernet", "evil.pt", "--config", NB201])
    err = capsys.readouterr().err
    assert ended.value.code == 2 and "evil.pt: refused: it holds objects other than tensors" in err, err
    assert "weights_only" not in err and not ran.exists()
