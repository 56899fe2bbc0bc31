"""Injected faults (a process killed mid-save, a failing rename, a full disk, NaN/inf loss) and safe
loading (safetensors only; training state with weights_only=True; pickles refused): the previous
best adapter survives every fault, the error says what happened, and no pickle payload ever runs.

(kill -9 during training followed by a resume is tests/test_recipes.py's.)
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lorakit.experiment.train as train_mod
from lorakit import RunConfig
from lorakit.experiment import checkpoint as ckpt
from lorakit.experiment.models import add_adapters, load_model
from lorakit.analysis.matrix import run_matrix
from lorakit.analysis.runs import load_runs
from lorakit.experiment.train import make_optimizer, run
from helpers import cheap

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def assert_loadable_adapter(folder: Path, model_dir: str, step: int) -> None:
    """A complete adapter: peft loads it onto a fresh base model, and meta.json names the step."""
    from peft import PeftModel

    assert json.loads((folder / "meta.json").read_text())["step"] == step
    PeftModel.from_pretrained(load_model(model_dir).model, str(folder))


def no_leftovers(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".old")]


@pytest.fixture(scope="module")
def peft_whisper(whisper_dir):
    sm = load_model(str(whisper_dir))
    add_adapters(sm, RunConfig(target_modules="decoder", lora_r=2))
    return sm


def set_adapter(model, value: float) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.fill_(value)


# --- a crash mid-save -------------------------------------------------------------------------------

KILLER = textwrap.dedent('''
    import os, signal, sys
    from pathlib import Path
    import torch
    import peft.peft_model
    from lorakit import RunConfig
    from lorakit.experiment import checkpoint as ckpt
    from lorakit.experiment.models import add_adapters, load_model

    model_dir, folder, where = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    sm = load_model(model_dir)
    add_adapters(sm, RunConfig(target_modules="decoder", lora_r=2))
    with torch.no_grad():
        for name, p in sm.model.named_parameters():
            if "lora_" in name:
                p.fill_(0.25)
    ckpt.save_adapter(sm.model, folder / ckpt.BEST, {"step": 1})
    print("saved step 1", flush=True)
    with torch.no_grad():
        for name, p in sm.model.named_parameters():
            if "lora_" in name:
                p.fill_(-1.0)

    if where == "mid-write":  # the weights file is half written when the process dies
        real = peft.peft_model.safe_save_file
        def dying_save(tensors, filename, metadata=None):
            real(tensors, filename, metadata=metadata)
            data = Path(filename).read_bytes()
            Path(filename).write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        peft.peft_model.safe_save_file = dying_save
    else:  # between the two renames: the old folder is moved aside, the new one not yet in place
        real_replace = os.replace
        def dying_replace(src, dst):
            if Path(src).name.startswith(".adapter_best."):
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)
        ckpt.os.replace = dying_replace
    ckpt.save_adapter(sm.model, folder / ckpt.BEST, {"step": 2})
    print("not reached", flush=True)
''')


@pytest.mark.parametrize("where", ["mid-write", "between-renames"])
def test_kill_9_mid_save_never_corrupts_adapter_best(where, whisper_dir, tmp_path):
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    folder = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(script), str(whisper_dir), str(folder), where], capture_output=True, text=True,
                          timeout=300, env={**os.environ})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "saved step 1" in proc.stdout and "not reached" not in proc.stdout
    if where == "mid-write":
        assert [p.name for p in folder.glob(".adapter_best.*")]  # the staging folder the kill left behind
    else:
        assert not (folder / ckpt.BEST).exists() and (folder / "adapter_best.old").exists()
    ckpt.recover(folder)  # what a resumed run does first
    no_leftovers(folder)
    assert_loadable_adapter(folder / ckpt.BEST, str(whisper_dir), step=1)
    assert all(torch.all(t == 0.25) for t in adapter_tensors(folder / ckpt.BEST).values())  # the step-1 weights


def test_a_failing_rename_puts_the_previous_checkpoint_back(peft_whisper, whisper_dir, tmp_path, monkeypatch):
    best = tmp_path / ckpt.BEST
    set_adapter(peft_whisper.model, 0.5)
    ckpt.save_adapter(peft_whisper.model, best, {"step": 1})
    set_adapter(peft_whisper.model, -0.5)
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(src).name.startswith(".adapter_best."):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", failing_replace)
    with pytest.raises(ckpt.CheckpointError, match=r"could not save .*adapter_best \(Input/output error\); the previous checkpoint is intact"):
        ckpt.save_adapter(peft_whisper.model, best, {"step": 2})
    monkeypatch.undo()
    no_leftovers(tmp_path)
    assert_loadable_adapter(best, str(whisper_dir), step=1)
    assert all(torch.all(t == 0.5) for t in adapter_tensors(best).values())


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_atomic_writes_honour_the_umask_like_any_file(tmp_path, mask):
    """mkstemp/mkdtemp create 0600/0700; a record, an export or a checkpoint shared with a group was then
    unreadable to it. The atomic writers give what open()/mkdir would under the user's umask."""
    from lorakit import files as record
    old = os.umask(mask)
    try:
        record.write_json(tmp_path / "metrics.json", {"a": 1})
        with record.atomic_folder(tmp_path / "export") as staging:
            (staging / "x.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "export").stat().st_mode & 0o777 == 0o777 & ~mask


def test_full_disk_while_saving_training_state_keeps_the_previous_one(peft_whisper, tmp_path, monkeypatch):
    cfg = RunConfig(max_steps=10, eval_interval=5)
    optimizer, scheduler = make_optimizer(peft_whisper.model, cfg)
    last = tmp_path / ckpt.LAST
    ckpt.save_training_state(peft_whisper.model, optimizer, scheduler, 5, last, {"run_id": "x"})
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"\x80\x02partial")  # what made it to disk before the disk filled
        raise ENOSPC

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(ckpt.CheckpointError, match=r"checkpoint_last \(No space left on device\); the previous checkpoint is intact"):
        ckpt.save_training_state(peft_whisper.model, optimizer, scheduler, 10, last, {"run_id": "x"})
    monkeypatch.setattr(torch, "save", real_save)
    no_leftovers(tmp_path)
    assert ckpt.load_training_state(last)["step"] == 5
    assert json.loads((last / "meta.json").read_text())["step"] == 5


def rig_wer(monkeypatch, wers: dict[int, float]) -> None:
    """Evaluations run for real, but report these domain WERs, so the test decides which step is best."""
    real = train_mod.evaluate_step

    def rigged(sm, inputs, splits, cfg, step, *args, **kwargs):
        row = real(sm, inputs, splits, cfg, step, *args, **kwargs)
        row["domain_wer"] = wers[step]
        return row

    monkeypatch.setattr(train_mod, "evaluate_step", rigged)


@pytest.mark.parametrize("disk_stays_full", [False, True])
def test_full_disk_while_saving_the_best_adapter(disk_stays_full, tiny_cfg, monkeypatch, capsys):
    """Step 2 is a new best; the disk fills while its adapter is written: a CheckpointError, and
    adapter_best/ still holds step 1's complete adapter. When the disk stays full, even the failure
    record cannot be written, and the error raised is still the CheckpointError."""
    import peft.peft_model

    import lorakit.files as records

    rig_wer(monkeypatch, {1: 0.9, 2: 0.5})
    real_safe_save, real_atomic = peft.peft_model.safe_save_file, records.atomic_write_text
    full = {"disk": False, "best_saves": 0}

    def filling_save(tensors, filename, metadata=None):
        if Path(filename).parent.name.startswith(".adapter_best."):
            full["best_saves"] += 1
            if full["best_saves"] == 2:
                Path(filename).write_bytes(b"\0" * 64)  # a partial file, then the disk is full
                full["disk"] = disk_stays_full
                raise ENOSPC
        return real_safe_save(tensors, filename, metadata=metadata)

    def atomic_write_text(path, text):
        if full["disk"]:
            raise ENOSPC
        real_atomic(path, text)

    monkeypatch.setattr(peft.peft_model, "safe_save_file", filling_save)
    monkeypatch.setattr(records, "atomic_write_text", atomic_write_text)
    cfg = RunConfig(**cheap(tiny_cfg, max_steps=2, eval_interval=1), run_id=f"full_disk_{disk_stays_full}")
    with pytest.raises(ckpt.CheckpointError) as info:
        run(cfg)
    monkeypatch.undo()
    folder = Path(tiny_cfg["output_dir"]) / cfg.run_id
    assert f"could not save {folder / ckpt.BEST} (No space left on device); the previous checkpoint is intact" == str(info.value)
    assert_loadable_adapter(folder / ckpt.BEST, tiny_cfg["model"], step=1)
    last = adapter_tensors(folder / ckpt.LAST)  # step 1's training state, saved right after step 1's best adapter
    assert ckpt.load_training_state(folder / ckpt.LAST)["step"] == 1
    best = adapter_tensors(folder / ckpt.BEST)
    assert best.keys() == last.keys() and all(torch.equal(best[k], last[k]) for k in best)
    no_leftovers(folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    if disk_stays_full:
        assert metrics["status"] == "running"  # nothing could be written; the matrix shows it interrupted once stale
        assert "could not record the failure" in capsys.readouterr().err
    else:
        assert metrics["status"] == "failed" and metrics["error"] == f"CheckpointError: {info.value}"


# --- NaN / inf loss -----------------------------------------------------------------------------------

def test_nan_loss_stops_the_run_and_keeps_the_best_adapter(tiny_cfg, monkeypatch):
    """At step 3 the adapter weights turn NaN (as after a bad update): the loss is NaN, the run
    stops with a stop_reason, and the reported numbers are those of step 2's adapter, reloaded
    from disk (not the poisoned weights in memory)."""
    real, calls = train_mod.train_step, {"n": 0}

    def poisoned(sm, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            set_adapter(sm.model, float("nan"))
        return real(sm, *args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", poisoned)
    result = run(RunConfig(**cheap(tiny_cfg, max_steps=4, eval_interval=2), run_id="nan"))
    m = json.loads((result.folder / "metrics.json").read_text())
    assert m["status"] == "finished" and m["steps"] == 3 and m["best_step"] == 2
    assert m["stop_reason"] == "non-finite loss (nan) at step 3"
    history = [json.loads(x) for x in (result.folder / "history.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in history] == [("train", 1), ("train", 2), ("eval", 2), ("train", 3)]
    assert history[-1]["loss"] != history[-1]["loss"]  # NaN, recorded as such
    step2 = next(r for r in history if r["kind"] == "eval")
    assert m["tuned_wer"] == pytest.approx(step2["domain_wer"], abs=1e-12)
    assert_loadable_adapter(result.folder / ckpt.BEST, tiny_cfg["model"], step=2)
    assert all(torch.isfinite(t).all() for t in adapter_tensors(result.folder / ckpt.BEST).values())
    assert ckpt.load_training_state(result.folder / ckpt.LAST)["step"] == 2
    (row,) = run_matrix(load_runs(result.folder.parent, "nan"), n_resamples=10).rows
    assert row["stop_reason"] == "non-finite loss (nan) at step 3" and row["best_step"] == 2


def test_inf_loss_before_any_evaluation_fails_the_run_clearly(tiny_cfg, monkeypatch):
    real = train_mod.train_step
    monkeypatch.setattr(train_mod, "train_step", lambda *a, **k: {**real(*a, **k), "loss": float("inf")})
    with pytest.raises(RuntimeError, match=r"stopped \(non-finite loss \(inf\) at step 1\) before any evaluation; no adapter to report"):
        run(RunConfig(**cheap(tiny_cfg, max_steps=4, eval_interval=2), run_id="inf"))
    folder = Path(tiny_cfg["output_dir"]) / "inf"
    m = json.loads((folder / "metrics.json").read_text())
    assert m["status"] == "failed" and m["stop_reason"] == "non-finite loss (inf) at step 1" and m["steps"] == 1
    assert "no adapter to report" in m["error"]
    assert not (folder / ckpt.BEST).exists()
    (row,) = run_matrix(load_runs(folder.parent, "inf"), n_resamples=10).rows
    assert row["status"] == "failed" and row["verdict"] == "n/a (failed)"


# --- safe loading -------------------------------------------------------------------------------------

class Payload:
    """Unpickling this touches a marker file: proof of whether a loader ran pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_training_state_needing_unpickling_is_refused(tmp_path):
    marker = tmp_path / "payload_ran"
    folder = tmp_path / ckpt.LAST
    folder.mkdir()
    torch.save({"step": 3, "optimizer": {}, "extra": Payload(marker)}, folder / "training_state.pt")
    with pytest.raises(ckpt.CheckpointError, match=r"training_state\.pt: refused to load \(UnpicklingError\).*weights_only=True"):
        ckpt.load_training_state(folder)
    assert not marker.exists()
    (folder / "training_state.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="refused to load"):
        ckpt.load_training_state(folder)
    torch.save({"step": 3, "rng": torch.zeros(3), "nested": {"lr": 1e-3, "ids": [1, 2]}}, folder / "training_state.pt")
    assert ckpt.load_training_state(folder)["step"] == 3  # tensors and plain values load


def test_adapter_with_only_a_pickle_is_refused(peft_whisper, tmp_path):
    folder = tmp_path / ckpt.LAST
    peft_whisper.model.save_pretrained(folder, safe_serialization=False)
    assert (folder / "adapter_model.bin").exists() and not (folder / "adapter_model.safetensors").exists()
    with pytest.raises(ckpt.CheckpointError, match="no adapter_model.safetensors .*safetensors only, never pickles"):
        ckpt.load_adapter_weights(peft_whisper.model, folder)


def test_model_with_only_pickle_weights_is_refused(whisper_dir, tiny_cfg, tmp_path):
    marker = tmp_path / "payload_ran"
    model_dir = tmp_path / "pickled_model"
    shutil.copytree(whisper_dir, model_dir)
    state = load_file(str(model_dir / "model.safetensors"))
    torch.save({**state, "payload": Payload(marker)}, model_dir / "pytorch_model.bin")
    # both files: the safetensors one is used and the pickle is never opened
    load_model(str(model_dir))
    assert not marker.exists()
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"holds only pickle weights \(pytorch_model\.bin\): lorakit loads safetensors only"):
        load_model(str(model_dir))
    with pytest.raises(FileNotFoundError, match="only pickle weights"):
        run(RunConfig(**cheap(tiny_cfg, model=str(model_dir)), run_id="pickled"))
    assert not marker.exists()
    m = json.loads((Path(tiny_cfg["output_dir"]) / "pickled" / "metrics.json").read_text())
    assert m["status"] == "failed" and "only pickle weights" in m["error"]
