"""A refactor changes no result: a tiny teacher and a student distilled
from two tiny teachers give bit-identical logits to those recorded at
commit f33359f (issue 21), before the layering and data refactors.

To record them again after an intended change of results, run
``python tests/test_refactor_identity.py`` and paste its output here, with
the commit it was made at.
"""

import hashlib
import sys
from pathlib import Path

from conftest import RECIPE, run_recipe

from speechbrain_rsc.bank import BANK_FILENAME, LogitBank

# sha256 of each split's float32 logits, recorded at commit f33359f.
RECORDED = {
    "teacher1/test": (
        "fc3eb2b303ed45405e4eb46ddf674fed1fb8d9e20f8f67fdc2edee138902d45d"
    ),
    "teacher1/train": (
        "11a0248b0baf6fa55b4a3bd301af5d81076f515e4ae989cea8f11340c515b03b"
    ),
    "teacher1/valid": (
        "e3608dbb3433c42fd791da9a58aa89fe56e2e975d9df58e48b999bba52ea8fdb"
    ),
    "student/test": (
        "71edb4ca6917e821bf673b48d458e9e313ebe4ea70a7614028443f31a3fd5385"
    ),
    "student/train": (
        "6b9c3f328c247d1e53d750fd22578d2a103f523184cc59797ec2299c763a5344"
    ),
    "student/valid": (
        "f97d9f993c19fe7b6028f014ab6a82eb170a69ebb49e1fb9fa9bfb13404af254"
    ),
}

TINY = {
    "use_pretrained": False,
    "synthetic_recordings": 12,
    "duration": 1.0,
    "number_of_epochs": 2,
    "batch_size": 4,
    "num_workers": 0,
    "spec_augment": False,
    "channels": "[4, 8, 8, 8]",
    "bootstrap": 0,
}


def run(script, hparams, root, **options):
    argv = [RECIPE / "hparams" / hparams, "--noprogressbar"]
    shared = {
        "synthetic_folder": root / "synthetic",
        "prepare_folder": root / "prepared",
    }
    for key, value in {**TINY, **shared, **options}.items():
        argv += [f"--{key}", value]
    run_recipe(script, *argv)


def logits_hashes(root):
    """Train the tiny runs in ``root``; the hash of every bank split."""
    for seed in (1, 2):
        out = root / "cnn6" / str(seed)
        run("train_teacher.py", "cnn6.yaml", root, seed=seed, output_folder=out)
    student = root / "student"
    run(
        "distill.py",
        "distill_cnn6.yaml",
        root,
        seed=1,
        k=2,
        teacher_backbone="cnn6",
        teacher_bank=root / "cnn6",
        output_folder=student,
    )
    hashes = {}
    for name, folder in (
        ("teacher1", root / "cnn6" / "1"),
        ("student", student),
    ):
        bank = LogitBank.load(folder / BANK_FILENAME)
        for split, logits in sorted(bank.logits.items()):
            data = logits.float().contiguous().numpy().tobytes()
            hashes[f"{name}/{split}"] = hashlib.sha256(data).hexdigest()
    return hashes


def test_tiny_runs_are_bit_identical_to_the_recorded_commit(tmp_path):
    assert logits_hashes(tmp_path) == RECORDED


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    with tempfile.TemporaryDirectory() as folder:
        for key, value in logits_hashes(Path(folder)).items():
            print(f'    "{key}": "{value}",')
