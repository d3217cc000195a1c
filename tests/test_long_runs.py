"""Long runs that survive: a request edits the same in any batch; an out-of-memory batch is split; a failing
request is recorded and the rest go on (exit status 3, --fail_fast stops); a rerun resumes and refuses
another configuration; and, killed three times at random points, the miniature's quick experiment and
edit.py --requests end with the scores of an uninterrupted run, no saved request edited twice."""

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pbw.editing import Editor, EditRequest, EditSettings, SepCMAES
from pbw.editing.editor import EditFailure
from pbw.editing.masks import load_mask
from pbw.models.stylegan2 import StyleGAN2Generator
from pbw.reproduce import main as reproduce_main
from pbw.reproduce.mini import mini_config
from pbw.semantic import PromptSet, SemanticNet

ROOT = Path(__file__).resolve().parents[1]
RES = 32
SETTINGS = dict(steps=3, population=4, generations=2, lr=0.05, crops=2, batch_size=4)


@pytest.fixture(scope="module")
def sg2():
    torch.manual_seed(1)
    return StyleGAN2Generator(RES, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return SemanticNet("pbw-tiny-clip", None, crops=2)


def _requests(g, n=4):
    mask = load_mask("0.25,0.25,0.75,0.75", RES)[0]
    return [EditRequest(PromptSet.parse("a red bird"), g.sample(1, seed=i), mask, f"r{i}") for i in range(n)]


def _latents(results):
    return torch.cat([r.latents["w"] for r in results])


# ---- a request's randomness is its own --------------------------------------------------------------
def test_cmaes_problems_with_their_own_generators_sample_as_if_alone():
    mean = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    together = SepCMAES(mean, 0.5, 4, generator=[torch.Generator().manual_seed(7) for _ in range(3)]).ask()
    for i in range(3):
        alone = SepCMAES(mean[i : i + 1], 0.5, 4, generator=[torch.Generator().manual_seed(7)]).ask()
        assert torch.equal(together[i : i + 1], alone)


def test_a_request_edits_the_same_alone_or_in_a_batch(sg2, clip):
    editor = Editor(sg2, clip, device="cpu")
    batched = editor.run(_requests(sg2), EditSettings(**SETTINGS), progress=False)
    alone = editor.run(_requests(sg2), EditSettings(**{**SETTINGS, "batch_size": 1}), progress=False)
    # the same random streams; only float rounding of batched convolutions differs (~1e-6)
    assert torch.allclose(_latents(batched), _latents(alone), atol=1e-3)
    moved = (_latents(batched) - torch.cat([r.w0[:, 0] for r in batched])).abs().max()
    assert moved > 1e-2  # the edits did move the latents, so the agreement is not trivial


# ---- out of memory ----------------------------------------------------------------------------------
def _oom_when_larger_than(g, monkeypatch, limit: int, times: int | None):
    """Make `g.decode` raise torch.OutOfMemoryError for batches larger than `limit` (`times` times; None:
    always); returns the list of the batch sizes that raised."""
    raised, decode = [], g.decode

    def failing(w, *args, **kwargs):
        if w.shape[0] > limit and (times is None or len(raised) < times):
            raised.append(w.shape[0])
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate for a batch of {w.shape[0]}")
        return decode(w, *args, **kwargs)

    monkeypatch.setattr(g, "decode", failing)
    return raised


def test_an_out_of_memory_batch_of_4_is_split_and_finishes(sg2, clip, monkeypatch):
    editor = Editor(sg2, clip, device="cpu")
    want = editor.run(_requests(sg2), EditSettings(**{**SETTINGS, "batch_size": 2}), progress=False)
    raised = _oom_when_larger_than(sg2, monkeypatch, 2, times=1)
    got = editor.run(_requests(sg2), EditSettings(**SETTINGS), progress=False)
    assert raised == [4]  # the batch of 4 ran out of memory once, then went as two batches of 2
    assert all("out of memory in a batch of 4" in " ".join(r.notes) for r in got)
    assert torch.equal(_latents(got), _latents(want))  # exactly the batches of 2 of a run asked for them


def test_out_of_memory_down_to_one_request_with_the_population_in_chunks(sg2, clip, monkeypatch):
    raised = _oom_when_larger_than(sg2, monkeypatch, 2, times=None)  # no render of more than 2 images fits
    got = Editor(sg2, clip, device="cpu").run(_requests(sg2, 2), EditSettings(**SETTINGS), progress=False)
    # 2 requests x 4 candidates, then 1 x 4, then chunks of 2 candidates fit
    assert raised[:2] == [8, 4] and all(isinstance(r.edited, torch.Tensor) for r in got)
    notes = " ".join(got[0].notes)
    assert "in a batch of 2" in notes and "population evaluated in chunks of 2" in notes


def test_out_of_memory_that_nothing_fixes_is_a_failure_of_that_request(sg2, clip, monkeypatch):
    _oom_when_larger_than(sg2, monkeypatch, 0, times=None)
    got = Editor(sg2, clip, device="cpu").run(
        _requests(sg2, 2), EditSettings(**SETTINGS), progress=False, keep_going=True
    )
    assert all(isinstance(r, EditFailure) and r.error.startswith("OutOfMemoryError") for r in got)
    with pytest.raises(torch.OutOfMemoryError):
        Editor(sg2, clip, device="cpu").run(_requests(sg2, 2), EditSettings(**SETTINGS), progress=False)


# ---- the experiment runner: failures, out of memory, reruns ----------------------------------------
QUICK = ["--settings.steps", "1", "--settings.generations", "1", "--settings.population", "2"]


def _reproduce(out: Path, *extra: str) -> int:
    """`python -m pbw.reproduce run` on the miniature's quick experiment; returns its exit status."""
    try:
        reproduce_main(["run", "--config", str(mini_config(quick=True)), "--out", str(out), *QUICK, *extra])
    except SystemExit as e:
        return e.code
    return 0


def test_a_failing_request_is_listed_and_the_run_finishes_with_status_3(tmp_path, capsys):
    from PIL import Image

    masks = tmp_path / "masks"
    masks.mkdir()
    box = torch.zeros(64, 64, dtype=torch.uint8)
    box[16:48, 16:48] = 255
    Image.fromarray(box.numpy()).save(masks / "1000.png")
    (masks / "1001.png").write_bytes(b"this is no image")  # seed 1001's mask file is unreadable
    files = [
        "--variants",
        "paper: cma|reference",
        "--tasks.masked_edits.masks",
        json.dumps({"files": str(masks / "{seed}.png")}),
    ]
    out = tmp_path / "run"
    assert _reproduce(out, *files) == 3
    results = json.loads((out / "results.json").read_text())
    task = results["tasks"]["masked_edits"]
    assert results["failed"] == 4  # seed 1001's two prompts, in both rows
    assert {(f["row"], f["request"]) for f in task["failed"]} == {
        (row, name) for row in task["rows"] for name in ("002_seed1001", "003_seed1001")
    }
    assert all("1001.png" in f["error"] and "\n" not in f["error"] for f in task["failed"])
    for row in task["rows"].values():
        assert (row["n"], row["failed"]) == (2, 2)  # judged on the two requests that every row finished
    assert [r["seed"] for r in task["requests"]["stylegan2"]] == [1000, 1000]
    md = (out / "results.md").read_text()
    assert "Failed requests (4" in md and "003_seed1001" in md and "| failed |" in md
    # a rerun resumes the finished edits (and still lists the failure); another configuration is refused
    capsys.readouterr()
    assert _reproduce(out, *files) == 3
    log = capsys.readouterr().out
    assert "2 request(s) on stylegan2, 2 resumed" in log and "2 of 2 done" not in log  # nothing edited again
    assert _reproduce(out, *files, "--settings.steps", "2") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "settings.steps: 1 before, 2 now" in err and "--restart" in err
    # --fail_fast stops at the failure: a one-line input error, no results
    fast = tmp_path / "fast"
    assert _reproduce(fast, *files, "--fail_fast", "true") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1001.png" in err and not (fast / "results.json").exists()


def test_the_runner_splits_a_batch_of_4_that_runs_out_of_memory(tmp_path, monkeypatch):
    raised, decode = [], StyleGAN2Generator.decode

    def failing(self, w, *args, **kwargs):
        if w.shape[0] > 2 and not raised:
            raised.append(w.shape[0])
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return decode(self, w, *args, **kwargs)

    monkeypatch.setattr(StyleGAN2Generator, "decode", failing)
    assert _reproduce(tmp_path, "--variants", "paper: cma") == 0
    task = json.loads((tmp_path / "results.json").read_text())["tasks"]["masked_edits"]
    row, per_request = (
        task["rows"]["paper: cma+adam, w, latent mask"],
        task["per_request"]["paper: cma+adam, w, latent mask"],
    )
    assert raised == [4] and (row["n"], row["failed"]) == (4, 0)
    assert all("out of memory in a batch of 4" in pr["notes"] for pr in per_request)


# ---- killed three times, resumed each time ----------------------------------------------------------
DRIVER = """
import json, os, sys
from pbw.editing.editor import Editor
from pbw.reproduce import runner

row = [""]
edit_row, edit = runner.Runner._edit_row, Editor._edit

def logged_row(self, key, task, variant, *args, **kwargs):
    row[0] = f"{key}/{variant.name}"
    return edit_row(self, key, task, variant, *args, **kwargs)

def logged_edit(self, requests, *args, **kwargs):  # every group of requests that starts being edited
    with open(os.environ["EDIT_LOG"], "a") as f:
        f.write(json.dumps([row[0], [r.name for r in requests]]) + "\\n")
        f.flush()
        os.fsync(f.fileno())
    return edit(self, requests, *args, **kwargs)

runner.Runner._edit_row, Editor._edit = logged_row, logged_edit
if sys.argv[1] == "reproduce":
    from pbw.reproduce.cli import main
    main(sys.argv[2:])
else:
    from pbw.editing.cli import main
    main(sys.argv[2:])
"""


def _saved(out: Path) -> set[Path]:
    """The request folders saved so far (a folder appears whole, with its record, or not at all)."""
    return {p.parent.relative_to(out) for p in out.rglob("record.json") if not p.parent.name.startswith(".")}


def _forked(argv: list[str], log: Path) -> multiprocessing.Process:
    """DRIVER with `argv` in a child forked from this process (no imports to wait for), on one thread as
    the fresh processes (OMP_NUM_THREADS=1), so that every run computes alike."""

    def child():
        torch.set_num_threads(1)
        os.environ["EDIT_LOG"] = str(log)
        sys.argv = ["driver", *argv]
        exec(DRIVER, {"__name__": "__main__"})

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    return proc


def _uninterrupted(tmp_path: Path, argv: list[str]) -> None:
    proc = _forked(argv, tmp_path / "uninterrupted.jsonl")
    proc.join(timeout=600)
    assert proc.exitcode == 0


def _kill_and_resume(tmp_path: Path, argv: list[str], out: Path, folder, kills: int = 3, seed: int = 0) -> None:
    """Run DRIVER `argv` and SIGKILL it at a random moment after it saved something new, `kills` times,
    then let a fresh `python DRIVER argv` finish; each rerun must not edit a request saved before it
    started (`folder` maps the driver's log entry (row, request name) to its folder under `out`)."""
    driver, log = tmp_path / "driver.py", tmp_path / "edits.jsonl"
    driver.write_text(DRIVER)
    rng = random.Random(seed)
    for attempt in range(kills + 1):
        before, start = _saved(out), len(log.read_text().splitlines()) if log.exists() else 0
        if attempt < kills:
            proc = _forked(argv, log)
            deadline = time.time() + 600
            while proc.is_alive() and len(_saved(out) - before) == 0 and time.time() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.0))
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(timeout=60)
        else:  # the last rerun: the command in a fresh interpreter
            env = {**os.environ, "EDIT_LOG": str(log), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
            done = subprocess.run(
                [sys.executable, str(driver), *argv], capture_output=True, text=True, env=env, timeout=600
            )
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            assert " resumed" in done.stdout
        edited = [json.loads(ln) for ln in log.read_text().splitlines()[start:]] if log.exists() else []
        again = {folder(row, name) for row, names in edited for name in names} & before
        assert not again, f"attempt {attempt} edited requests saved before it started: {sorted(again)}"
    assert edited, "the last attempt had nothing left to edit: the kills came too late to test resuming"


def _without_times(value):
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if not k.startswith("seconds")}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


@pytest.mark.slow
def test_the_quick_experiment_killed_three_times_ends_as_an_uninterrupted_run(tmp_path):
    from pbw.reproduce.report import slug

    argv = ["run", "--config", str(mini_config(quick=True)), *QUICK, "--max_seeds", "1"]
    want_out, out = tmp_path / "uninterrupted", tmp_path / "killed"
    _uninterrupted(tmp_path, ["reproduce", *argv, "--out", str(want_out)])
    _kill_and_resume(
        tmp_path,
        ["reproduce", *argv, "--out", str(out)],
        out,
        lambda row, name: Path("requests", *map(slug, row.split("/", 1)), name),
    )
    want, got = (json.loads((d / "results.json").read_text()) for d in (want_out, out))
    for key, task in want["tasks"].items():
        # per-request scores identical, to the last bit (NaN included: compared as JSON text)
        assert json.dumps(got["tasks"][key]["per_request"]) == json.dumps(task["per_request"]), key
        for part in ("rows", "preferences", "requests", "failed"):
            assert json.dumps(_without_times(got["tasks"][key][part])) == json.dumps(_without_times(task[part]))
    for grid in (want_out / "grids").iterdir():
        assert (out / "grids" / grid.name).read_bytes() == grid.read_bytes(), grid.name
    assert (out / "gallery" / "index.html").read_text() == (want_out / "gallery" / "index.html").read_text()


@pytest.mark.slow
def test_edit_requests_killed_three_times_end_as_an_uninterrupted_run(tmp_path):
    requests = tmp_path / "requests.jsonl"
    colors = ["red", "blue", "yellow", "green"]
    requests.write_text(
        "".join(
            json.dumps({"prompt": f"a bird with a {colors[i % 4]} body", "mask": "part:body", "seed": i}) + "\n"
            for i in range(10)
        )
    )
    argv = [
        "--config",
        str(ROOT / "pbw" / "configs" / "edit" / "mini.yaml"),
        "--requests",
        str(requests),
        "--progress",
        "false",
        *("--settings.steps", "4", "--settings.generations", "2", "--settings.population", "4"),
        *("--settings.batch_size", "2"),
    ]
    want_out, out = tmp_path / "uninterrupted", tmp_path / "killed"
    _uninterrupted(tmp_path, ["edit", *argv, "--out", str(want_out)])
    _kill_and_resume(tmp_path, ["edit", *argv, "--out", str(out)], out, lambda _, name: Path(f"{name}_{name}"))
    want, got = (json.loads((d / "summary.json").read_text()) for d in (want_out, out))
    strip = lambda rows: json.dumps([{k: v for k, v in r.items() if k != "folder"} for r in rows])  # noqa: E731
    assert strip(got) == strip(want) and all(r["status"] == "ok" for r in got)
    for r in want:
        name = Path(r["folder"]).name
        a, b = (torch.load(d / name / "latents.pt", weights_only=True) for d in (want_out, out))
        assert all(torch.equal(a["latents"][k], b["latents"][k]) for k in a["latents"])
        assert torch.equal(a["edited"], b["edited"])
