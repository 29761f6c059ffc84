"""prepare_icbhi when runs share folders, data moves, disks fill or die.

Each test here failed on the preparation that wrote its manifests straight
into ``save_folder``, fingerprinted recordings by mtime and trusted a
finished run without looking at its cycles.
"""

import csv
import errno
import json
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_rsc.data import cache, cycles, prepare
from speechbrain_rsc.data.cache import MANIFESTS_PREFIX, SPLITS, prepare_key
from speechbrain_rsc.data.prepare import prepare_icbhi
from speechbrain_rsc.data.synthetic import make_synthetic_icbhi
from speechbrain_rsc.dataio import resolve_data_folder

REPO = Path(__file__).resolve().parents[1]
FAST = {"sample_rate": 4000, "duration": 1.0, "valid_fraction": 0.25}


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def summary_of(outputs):
    return json.loads(Path(outputs["summary"]).read_text())


def cycles_of(outputs):
    """Split -> [(ID, samples)] of every manifest row."""
    return {
        split: [
            (row["ID"], sf.read(row["wav"], dtype="float32")[0])
            for row in read_csv(outputs[split])
        ]
        for split in SPLITS
    }


def assert_same_cycles(outputs, reference):
    got, want = cycles_of(outputs), cycles_of(reference)
    for split in SPLITS:
        assert [i for i, _ in got[split]] == [i for i, _ in want[split]]
        for (_, x), (_, y) in zip(got[split], want[split]):
            np.testing.assert_array_equal(x, y)


def count_writes(monkeypatch, counter=None):
    """Count the cycles written (in a list, or a shared ``Value``)."""
    calls = []
    real = cycles.write_cycle

    def counting(*args, **kwargs):
        if counter is None:
            calls.append(args[0])
        else:
            with counter.get_lock():
                counter.value += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(cycles, "write_cycle", counting)
    return calls


def leftovers(folder):
    return [p for p in Path(folder).rglob("*") if p.name.endswith(".tmp")]


def published(folder):
    return sorted(Path(folder).glob(f"{MANIFESTS_PREFIX}*"))


# ------------------------------------------------------- concurrent runs


def _prepare_in_child(barrier, queue, name, data, save):
    torch.set_num_threads(1)  # as the pool workers: safe after fork
    try:
        barrier.wait(timeout=120)
        queue.put((name, prepare_icbhi(data, save, **FAST), None))
    except BaseException:
        queue.put((name, None, traceback.format_exc()))


def run_together(runs):
    """Start ``prepare_icbhi`` in one process per ``(name, data, save)``
    at the same moment; return name -> outputs.
    """
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the fork start method")
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(len(runs)), ctx.Queue()
    children = [
        ctx.Process(target=_prepare_in_child, args=(barrier, queue, *run))
        for run in runs
    ]
    for child in children:
        child.start()
    try:
        results = [queue.get(timeout=300) for _ in runs]
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    errors = [error for _, _, error in results if error]
    assert not errors, "\n".join(errors)
    return {name: outputs for name, outputs, _ in results}


def test_two_runs_on_other_data_into_one_save_folder(tmp_path):
    a = make_synthetic_icbhi(tmp_path / "a", recordings=4, seed=1)
    b = make_synthetic_icbhi(tmp_path / "b", recordings=5, seed=2)
    shared = tmp_path / "shared"
    outputs = run_together([("a", a, shared), ("b", b, shared)])
    assert outputs["a"]["train"] != outputs["b"]["train"]
    assert len(published(shared)) == 2
    for name, data in (("a", a), ("b", b)):
        alone = prepare_icbhi(data, tmp_path / f"alone_{name}", **FAST)
        counts = {s: len(read_csv(outputs[name][s])) for s in SPLITS}
        assert counts == {s: len(read_csv(alone[s])) for s in SPLITS}
        assert_same_cycles(outputs[name], alone)
        for split in SPLITS:
            for row in read_csv(outputs[name][split]):
                assert Path(row["wav"]).parent.parent == shared
        sources = summary_of(outputs[name])["sources"]
        assert sources["audio_folder"] == str(data / "ICBHI_final_database")
    assert not leftovers(shared)


def test_two_runs_on_the_same_data_cut_once_and_agree(tmp_path, monkeypatch):
    data = make_synthetic_icbhi(tmp_path / "icbhi", recordings=4, seed=1)
    shared = tmp_path / "shared"
    writes = multiprocessing.get_context("fork").Value("i", 0)
    count_writes(monkeypatch, writes)
    outputs = run_together([("x", data, shared), ("y", data, shared)])
    assert outputs["x"] == outputs["y"]
    assert len(published(shared)) == 1
    cycles = sum(len(read_csv(outputs["x"][s])) for s in SPLITS)
    assert cycles > 0 and writes.value == cycles  # the lock: cut once
    monkeypatch.undo()
    alone = prepare_icbhi(data, tmp_path / "alone", **FAST)
    assert_same_cycles(outputs["x"], alone)
    assert not leftovers(shared)


def test_without_a_lock_the_first_published_run_is_kept(
    tmp_path, monkeypatch, caplog
):
    data = make_synthetic_icbhi(tmp_path / "icbhi", recordings=3, seed=1)
    save = tmp_path / "out"
    monkeypatch.setattr(cache, "fcntl", None)
    real = prepare.publish
    other = {}

    def other_run_publishes_first(target, *args):
        if not other:
            other["running"] = True
            other["outputs"] = prepare_icbhi(data, save, **FAST)
            other["mtime"] = Path(other["outputs"]["train"]).stat().st_mtime_ns
        return real(target, *args)

    monkeypatch.setattr(prepare, "publish", other_run_publishes_first)
    caplog.set_level(logging.INFO)
    outputs = prepare_icbhi(data, save, **FAST)
    assert outputs == other["outputs"]
    assert Path(outputs["train"]).stat().st_mtime_ns == other["mtime"]
    assert "published by another run first; keeping it" in caplog.text
    assert len(published(save)) == 1 and not leftovers(save)


# ------------------------------------------------------ data fingerprint


def test_other_audio_under_the_same_names_is_other_data(tmp_path):
    data = make_synthetic_icbhi(tmp_path / "icbhi", recordings=3, seed=1)
    save = tmp_path / "out"
    first = prepare_icbhi(data, save, **FAST)
    wav = sorted((data / "ICBHI_final_database").glob("*.wav"))[0]
    before = wav.stat()
    x, rate = sf.read(wav, dtype="int16")
    sf.write(wav, -x, rate, subtype=sf.info(wav).subtype)
    os.utime(wav, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert wav.stat().st_size == before.st_size  # only the content differs

    second = prepare_icbhi(data, save, **FAST)
    assert summary_of(second)["key"] != summary_of(first)["key"]
    assert second["train"] != first["train"]
    old, new = cycles_of(first), cycles_of(second)
    changed = [
        i
        for split in SPLITS
        for (i, a), (_, b) in zip(old[split], new[split])
        if not np.array_equal(a, b)
    ]
    assert changed and all(i.startswith(wav.stem) for i in changed)


def test_copied_data_folder_is_already_prepared(tmp_path, monkeypatch, caplog):
    data = make_synthetic_icbhi(tmp_path / "icbhi", recordings=3, seed=1)
    save = tmp_path / "out"
    first = prepare_icbhi(data, save, **FAST)
    copy = shutil.copytree(data, tmp_path / "copy", copy_function=shutil.copy)
    wav = next((copy / "ICBHI_final_database").glob("*.wav"))
    os.utime(wav, ns=(10**9, 10**9))  # surely another mtime
    writes = count_writes(monkeypatch)
    caplog.set_level(logging.INFO)
    assert prepare_icbhi(copy, save, **FAST) == first
    assert "already prepared" in caplog.text and writes == []


def test_summary_has_the_key_and_no_path_in_the_options(tmp_path):
    data = make_synthetic_icbhi(tmp_path / "icbhi", recordings=2, seed=1)
    outputs = prepare_icbhi(data, tmp_path / "out", **FAST)
    summary = summary_of(outputs)
    key = summary["key"]
    assert Path(outputs["train"]).parent.name == MANIFESTS_PREFIX + key
    assert prepare_key(summary["options"]) == key
    assert sorted(summary["options"]["fingerprints"]) == [
        "demographics_file",
        "diagnosis_file",
        "recordings",
        "split_file",
    ]
    text = json.dumps(summary["options"])
    assert str(tmp_path) not in text and summary["options"]["seed"] == 1234
    assert summary["sources"]["split_file"] == str(
        data / "ICBHI_challenge_train_test.txt"
    )


# ------------------------------------------------------ moved save folder


@pytest.mark.parametrize("how", ["move", "copy"])
def test_moved_save_folder_gets_new_manifests_from_its_cycles(
    tmp_path, monkeypatch, caplog, how
):
    data = make_synthetic_icbhi(tmp_path / "icbhi", recordings=3, seed=1)
    first = prepare_icbhi(data, tmp_path / "a", **FAST)
    ids = {s: [r["ID"] for r in read_csv(first[s])] for s in SPLITS}
    getattr(shutil, "move" if how == "move" else "copytree")(
        tmp_path / "a", tmp_path / "b"
    )
    writes = count_writes(monkeypatch)
    caplog.set_level(logging.INFO)
    second = prepare_icbhi(data, tmp_path / "b", **FAST)
    assert writes == []  # the cycles that moved along are reused
    assert "moved or copied" in caplog.text
    assert Path(second["train"]).parent.parent == tmp_path / "b"
    for split in SPLITS:
        rows = read_csv(second[split])
        assert [r["ID"] for r in rows] == ids[split]
        for row in rows:
            wav = Path(row["wav"])
            assert wav.is_file() and wav.parent.parent == tmp_path / "b"
    caplog.clear()
    assert prepare_icbhi(data, tmp_path / "b", **FAST) == second
    assert "already prepared" in caplog.text
    assert not leftovers(tmp_path / "b")


# ---------------------------------------------------------- save folder


def test_save_folder_that_is_a_file_is_an_error(tmp_path):
    data = make_synthetic_icbhi(tmp_path / "icbhi", recordings=2, seed=1)
    out = tmp_path / "out"
    out.write_text("not a folder")
    with pytest.raises(ValueError, match="existing file") as error:
        prepare_icbhi(data, out, **FAST)
    assert str(out) in str(error.value)
    with pytest.raises(ValueError, match=f"inside {out}"):
        prepare_icbhi(data, out / "sub", **FAST)
    assert out.read_text() == "not a folder"


def test_save_folder_that_cannot_be_made_is_named(tmp_path, monkeypatch):
    data = make_synthetic_icbhi(tmp_path / "icbhi", recordings=2, seed=1)
    out = tmp_path / "ro" / "out"
    real = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self == out or out in self.parents or self == out.parent:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(PermissionError, match="is not writable") as error:
        prepare_icbhi(data, out, **FAST)
    assert str(out) in str(error.value) and not out.exists()


def test_save_folder_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    data = make_synthetic_icbhi(tmp_path / "icbhi", recordings=2, seed=1)
    out = tmp_path / "out"

    def refuse(path, *args):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(cycles, "write_cycle", refuse)
    with pytest.raises(PermissionError, match="is not writable") as error:
        prepare_icbhi(data, out, **FAST)
    assert str(out) in str(error.value)
    assert not published(out) and not leftovers(out)


def assert_disk_full(error, folder):
    message = str(error.value)
    assert error.value.errno == errno.ENOSPC
    assert "the disk is full" in message and str(folder) in message
    assert " free on its disk" in message and "B free" in message


def test_full_disk_while_cutting(tmp_path, monkeypatch):
    data = make_synthetic_icbhi(tmp_path / "icbhi", recordings=3, seed=1)
    out = tmp_path / "out"
    opened = []

    class FullDisk:
        """A file that takes 10 bytes, then finds no space left."""

        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *error):
            self.file.close()

        def write(self, data):
            self.file.write(bytes(data[:10]))
            raise OSError(errno.ENOSPC, "No space left on device")

    def second_write_fills_the_disk(path, mode="r", *args, **kwargs):
        file = open(path, mode, *args, **kwargs)
        if "x" in mode:
            opened.append(path)
            if len(opened) == 2:
                return FullDisk(file)
        return file

    monkeypatch.setattr(cycles, "open", second_write_fills_the_disk, False)
    with pytest.raises(OSError) as error:
        prepare_icbhi(data, out, **FAST)
    assert_disk_full(error, out / "cycles_")
    assert not published(out) and not leftovers(out)
    (cycle_cache,) = out.glob("cycles_*")
    (first,) = cycle_cache.glob("*.wav")  # the one cycle written before
    monkeypatch.undo()
    writes = count_writes(monkeypatch)
    outputs = prepare_icbhi(data, out, **FAST)  # space freed: finished
    assert first not in writes and len(writes) > 1
    assert_same_cycles(outputs, prepare_icbhi(data, tmp_path / "ref", **FAST))


def test_full_disk_while_writing_manifests(tmp_path, monkeypatch):
    data = make_synthetic_icbhi(tmp_path / "icbhi", recordings=3, seed=1)
    out = tmp_path / "out"
    real = cache.write_manifest

    def fill_up(path, rows):
        if path.name != "train.csv":
            path.write_text("ID,dur")  # half a manifest, then no space
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, rows)

    monkeypatch.setattr(cache, "write_manifest", fill_up)
    with pytest.raises(OSError) as error:
        prepare_icbhi(data, out, **FAST)
    assert_disk_full(error, out)
    assert not published(out) and not leftovers(out)
    assert not list(out.rglob("*.csv"))


# ---------------------------------------------------------- pool workers

KILLED_PARENT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from speechbrain_rsc.data import cycles, prepare

    data, save, marks = sys.argv[1:4]
    cycles.POOL_MIN_RECORDINGS = 1
    cycles.MAX_WORKERS = 2
    os.cpu_count = lambda: 2
    init, cut = cycles._init_worker, cycles.cut_recording

    def init_and_mark(parent):
        init(parent)
        Path(marks, str(os.getpid())).touch()

    def slow(job, **kwargs):
        time.sleep(300)
        return cut(job, **kwargs)

    cycles._init_worker, cycles.cut_recording = init_and_mark, slow
    prepare.prepare_icbhi(data, save, sample_rate=4000, duration=1.0)
    """
)


def stat_of(pid):
    """``(state, ppid)`` of a live process, ``None`` if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux"
)
def test_pool_workers_die_with_a_killed_parent(tmp_path):
    data = make_synthetic_icbhi(tmp_path / "icbhi", recordings=3, seed=1)
    marks = tmp_path / "marks"
    marks.mkdir()
    parent = subprocess.Popen(
        [sys.executable, "-c", KILLED_PARENT, data, tmp_path / "out", marks],
        cwd=REPO,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    workers = []
    try:
        deadline = time.monotonic() + 180
        while len(workers) < 2:
            assert parent.poll() is None, parent.stderr.read().decode()
            assert time.monotonic() < deadline, "no pool workers started"
            time.sleep(0.2)
            workers = [int(p.name) for p in marks.iterdir()]
        assert all(stat_of(pid)[1] == parent.pid for pid in workers)
        parent.kill()
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        alive = workers
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [
                pid for pid in workers if (stat_of(pid) or ("Z",))[0] != "Z"
            ]
        assert not alive, f"workers {alive} outlived their killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stderr.close()
        for pid in workers:
            if stat_of(pid) is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


# ------------------------------------------------------ synthetic dataset


def test_synthetic_dataset_is_keyed_by_size_and_seed(tmp_path):
    def wavs(folder):
        return len(list(Path(folder).rglob("*.wav")))

    four = resolve_data_folder("synthetic", tmp_path / "syn", 4, seed=0)
    six = resolve_data_folder("synthetic", tmp_path / "syn", 6, seed=0)
    other_seed = resolve_data_folder("synthetic", tmp_path / "syn", 4, seed=1)
    assert (wavs(four), wavs(six), wavs(other_seed)) == (4, 6, 4)
    assert len({four, six, other_seed}) == 3
    assert Path(four) == tmp_path / "syn" / "recordings4_seed0"
    mtime = Path(four).stat().st_mtime_ns
    assert resolve_data_folder("synthetic", tmp_path / "syn", 4, 0) == four
    assert Path(four).stat().st_mtime_ns == mtime  # reused, not rewritten
