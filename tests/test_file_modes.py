"""What a run writes atomically is readable by colleagues: the mode an
ordinary write gives under the umask, not mkstemp's 0600 (issue 19, 5).
"""

import os
import stat

import pytest
import torch

from speechbrain_rsc.atomic import write_atomically, write_text_atomically
from speechbrain_rsc.bank import LogitBank
from speechbrain_rsc.dataio import resolve_data_folder


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_files_get_the_umask_mode(tmp_path, umask_022):
    write_text_atomically(tmp_path / "a.json", lambda f: f.write("{}"))
    write_atomically(tmp_path / "w.ckpt", lambda p: torch.save({}, p))
    assert mode(tmp_path / "a.json") == mode(tmp_path / "w.ckpt") == 0o644


def test_a_stricter_umask_is_honoured(tmp_path):
    old = os.umask(0o077)
    try:
        write_text_atomically(tmp_path / "a.json", lambda f: f.write("{}"))
    finally:
        os.umask(old)
    assert mode(tmp_path / "a.json") == 0o600


def test_a_bank_is_readable_by_the_group_and_others(tmp_path, umask_022):
    ids = {"train": ["a", "b"]}
    bank = LogitBank(
        ids,
        {"train": torch.zeros(2, 4)},
        {"train": torch.zeros(2, dtype=torch.long)},
        {"role": "teacher"},
    )
    bank.save(tmp_path / "bank.safetensors")
    assert mode(tmp_path / "bank.safetensors") == 0o644


def test_the_synthetic_dataset_folder_gets_the_umask_mode(tmp_path, umask_022):
    folder = resolve_data_folder("synthetic", tmp_path, recordings=2)
    assert mode(folder) == 0o755
