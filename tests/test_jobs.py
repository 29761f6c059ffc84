"""run_paper.py's executors: job slots per GPU, run options passed on,
--print_commands, per-run logs and failures, and submitit's stages giving
the local results.
"""

import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml
from conftest import RECIPE, run_recipe

from speechbrain_rsc import jobs
from speechbrain_rsc.bank import find_banks


def tiny_config(tmp_path, name="tiny", **changes):
    """paper_demo.yaml at test size: 2 teachers, then a mean-teacher and a
    hard-label student."""
    config = yaml.safe_load(
        (RECIPE / "hparams" / "paper_demo.yaml").read_text()
    )
    config.update(
        output_folder=str(tmp_path / name),
        synthetic_recordings=8,
        teacher_seeds=[1, 2],
        student_seeds=[1],
        ks=[1],
        variants=["hard"],
        variant_k=2,
        jobs=1,
        table2={},
        table2_k=2,
        table2_seeds=[1],
    )
    config["overrides"].update(
        use_pretrained=False,
        duration=1.0,
        number_of_epochs=1,
        batch_size=4,
        num_workers=0,
    )
    config["backbone_overrides"]["channels"] = [8, 16, 16, 32]
    config.update(changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, Path(config["output_folder"])


def run_paper(*args):
    """Run run_paper.py as a script, in this process."""
    run_recipe("run_paper.py", *args)


def test_slots_give_each_gpu_its_runs():
    slots = jobs.job_slots(2, cpu_count=8, environ={})
    assert slots == [
        {"CUDA_VISIBLE_DEVICES": "0", "OMP_NUM_THREADS": "4"},
        {"CUDA_VISIBLE_DEVICES": "1", "OMP_NUM_THREADS": "4"},
    ]
    shared = jobs.job_slots(2, runs_per_gpu=2, cpu_count=8, environ={})
    assert [s["CUDA_VISIBLE_DEVICES"] for s in shared] == ["0", "1", "0", "1"]
    # the GPUs this process was given, not the machine's first ones
    given = jobs.job_slots(2, environ={"CUDA_VISIBLE_DEVICES": "2,3"})
    assert [s["CUDA_VISIBLE_DEVICES"] for s in given] == ["2", "3"]
    # no GPU: `jobs` slots, no CUDA_VISIBLE_DEVICES
    assert (
        jobs.job_slots(0, jobs=3, cpu_count=6, environ={})
        == [{"OMP_NUM_THREADS": "2"}] * 3
    )


def test_each_run_at_a_time_has_its_own_gpu(tmp_path, monkeypatch, capsys):
    """run_paper with 2 (fake) GPUs: the two teachers run at once, each
    seeing one GPU, with the run options given to run_paper."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    started = []
    both_running = threading.Barrier(2, timeout=30)

    def fake_run(command, cwd, env, stdout, stderr):
        started.append((command, env))
        both_running.wait()  # times out unless two slots run at once
        return subprocess.CompletedProcess(command, 1)

    monkeypatch.setattr(jobs.subprocess, "run", fake_run)
    hparams, results = tiny_config(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        run_paper(hparams, "--precision", "bf16", "--device", "cuda:0")
    assert len(started) == 2
    gpus = sorted(env["CUDA_VISIBLE_DEVICES"] for _, env in started)
    assert gpus == ["0", "1"]
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert {env["OMP_NUM_THREADS"] for _, env in started} == {threads}
    for command, _ in started:
        assert command[-5:] == [
            "--device",
            "cuda:0",
            "--precision",
            "bf16",
            "--noprogressbar",
        ]
    # both failed: the stage ends non-zero, the students never start
    assert "stage 'teachers', where 2 run(s) failed" in str(stopped.value.code)
    assert not (results / "cnn6-d").exists()
    assert "[run ] teacher 1/2 (seed 1), GPU " in capsys.readouterr().out


def test_print_commands_lists_every_run_in_dependency_order(tmp_path, capsys):
    hparams, results = tiny_config(
        tmp_path,
        ks=[1, 2],
        table2={
            "resnet18": {
                "teacher_hparams": "hparams/resnet18.yaml",
                "student_hparams": "hparams/distill_resnet18.yaml",
            }
        },
    )
    run_paper(hparams, "--print_commands", "--device", "cpu")
    assert not results.exists()  # nothing was run or prepared
    out = capsys.readouterr().out.splitlines()
    stages, runs = [], []
    for line in out:
        if line.startswith("# stage"):
            stages.append(line)
        elif not line.startswith("#"):
            runs.append((len(stages), shlex.split(line)))
    assert stages == [
        "# stage 1/4, teachers: 2 run(s)",
        "# stage 2/4, students: 4 run(s), after teachers",
        "# stage 3/4, table2-hard: 1 run(s)",
        "# stage 4/4, table2-students: 1 run(s), after teachers",
    ]
    assert out[-1].startswith("# then the report: this run_paper.py")
    folders = []
    for stage, words in runs:
        assert words[:3] == ["cd", str(RECIPE), "&&"]
        python, script, yaml_file, *args = words[3:]
        assert python == sys.executable
        assert args[-3:] == ["--device", "cpu", "--noprogressbar"]
        options = dict(zip(args[:-3:2], args[1:-3:2]))
        assert all(name.startswith("--") for name in options)
        folders.append(options["--output_folder"])
        assert options["--number_of_epochs"] == "1"
        # the main backbone's model options; Table 2's resnet18 has none
        channels = [8, 16, 16, 32] if stage <= 2 else None
        assert yaml.safe_load(options.get("--channels", "null")) == channels
        expected = {
            1: ("train_teacher.py", "cnn6.yaml"),
            2: ("distill.py", "distill_cnn6.yaml"),
            3: ("train_teacher.py", "resnet18.yaml"),
            4: ("distill.py", "distill_resnet18.yaml"),
        }[stage]
        assert (Path(script).name, Path(yaml_file).name) == expected
        assert Path(script).is_file() and Path(yaml_file).is_file()
        if stage in (2, 4):
            assert options["--teacher_bank"] == str(results / "cnn6")
    assert folders[:2] == [str(results / "cnn6" / s) for s in ("1", "2")]
    assert len(set(folders)) == len(folders) == 2 + 4 + 1 + 1


def test_failed_run_is_reported_with_its_log_while_others_go_on(
    tmp_path, capsys
):
    hparams, results = tiny_config(tmp_path)
    # teacher 1's folder holds a checkpoint of unknown origin: the script
    # refuses it
    (results / "cnn6" / "1" / "save" / "CKPT+x").mkdir(parents=True)
    with pytest.raises(SystemExit) as stopped:
        run_paper(hparams)
    log = results / "cnn6" / "1" / "run_paper.log"
    message = str(stopped.value.code)
    assert "stage 'teachers', where 1 run(s) failed" in message
    assert f"teacher 1/2 (seed 1): exit 1; log: {log}" in message
    assert "provenance.json" in log.read_text()
    # teacher 2 ran after the failure, with its own log; no student started
    assert (results / "cnn6" / "2" / "bank.safetensors").is_file()
    assert (
        "train_teacher.py"
        in (results / "cnn6" / "2" / "run_paper.log").read_text()
    )
    assert not (results / "cnn6-d").exists()
    out = capsys.readouterr().out
    assert f"[fail] teacher 1/2 (seed 1): exit 1; log: {log}" in out
    assert "[teachers] 1 done, 1 failed, 0 running, 0 left" in out


def test_submitit_stages_give_the_local_results(tmp_path, capsys):
    pytest.importorskip("submitit")
    # a teacher, then a student distilled from it
    hparams, _ = tiny_config(tmp_path, teacher_seeds=[1], variants=[])
    local, cluster = tmp_path / "local", tmp_path / "submitit"
    run_paper(hparams, "--output_folder", local)
    # the local path's threads: cpu_count / jobs (1)
    threads = os.cpu_count() or 1
    run_paper(
        hparams,
        "--output_folder",
        cluster,
        "--executor",
        "submitit-local",
        "--slurm_cpus_per_job",
        threads,
    )
    out = capsys.readouterr().out
    assert "submitted students: 1 run(s)" in out
    assert "submitted report" in out
    for folder in ("cnn6", "cnn6-d/cnn6_mean_k1"):
        expected, got = find_banks(local / folder), find_banks(cluster / folder)
        assert len(expected) == len(got) > 0
        for a, b in zip(expected, got):
            assert a.info["metrics"] == b.info["metrics"]
            assert a.ids == b.ids
            for split in a.logits:
                assert torch.equal(a.logits[split], b.logits[split])
    for name in ("report.md", "table1_cnn6.csv"):
        assert (cluster / "report" / name).read_text() == (
            local / "report" / name
        ).read_text().replace(str(local), str(cluster))


def test_slurm_jobs_wait_for_the_stages_they_need(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    # submitit makes a SLURM executor only where srun is found
    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")

    class Job:
        job_id = "12_0"

    options = jobs.ClusterOptions(
        "slurm",
        str(tmp_path),
        partition="gpu",
        gpus_per_job=1,
        cpus_per_job=4,
        time_min=90,
        options={"account": "lab"},
    )
    executor = jobs.submitit_executor(options, "rsc-students", [[Job()]])
    sbatch = executor._executor._make_submission_file_text("run", "0")
    for line in (
        "--job-name=rsc-students",
        "--partition=gpu",
        "--gpus-per-node=1",
        "--cpus-per-task=4",
        "--time=90",
        "--dependency=afterok:12",
        "--kill-on-invalid-dep=yes",
        "--account=lab",
    ):
        assert f"#SBATCH {line}\n" in sbatch
    first = jobs.submitit_executor(options, "rsc-teachers")
    sbatch = first._executor._make_submission_file_text("run", "0")
    assert "--dependency" not in sbatch and "--kill-on" not in sbatch


def test_run_paper_under_torchrun_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    hparams, results = tiny_config(tmp_path)
    with pytest.raises(SystemExit, match="python, not torchrun"):
        run_paper(hparams)
    assert not results.exists()


def test_a_device_other_than_the_runs_own_gpu_is_refused(tmp_path):
    hparams, results = tiny_config(tmp_path)
    with pytest.raises(SystemExit, match="give --device cuda:0"):
        run_paper(hparams, "--device", "cuda:1")
    assert not results.exists()
