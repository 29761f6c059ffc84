"""What every benchmark script shares: device options, timing, output.

The scripts (``bench_*.py``, ``gpu_smoke.py``) import this module by name:
run as ``python benchmarks/<script>.py``, their folder is on ``sys.path``.

- :func:`add_device_options` and :func:`parse_for_device`: ``--device``,
  ``--precision`` and ``--threads``, and each script's size defaults for
  the device chosen.
- :func:`synchronize`: wait for the device before reading a clock.
- :func:`print_environment` and :func:`print_table`: the Markdown that
  the scripts print (date, machine and torch version, then the table).

Example
-------
>>> print_table(["model", "cycles/s"], [["CNN6", 1234.5], ["BTS", 0.04567]])
| model | cycles/s |
| --- | ---: |
| CNN6 | 1234 |
| BTS | 0.0457 |
"""

import datetime
import logging
import os
import platform

import torch

# --precision -> the autocast dtype (None: float32, no autocast).
AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_device_options(parser):
    """Add ``--device``, ``--precision`` and ``--threads`` to ``parser``.

    Example
    -------
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_device_options(parser)
    >>> parser.parse_args([]).precision
    'fp32'
    """
    parser.add_argument("--device", default=None, help="default: cuda if any")
    parser.add_argument(
        "--precision", choices=sorted(AMP_DTYPES), default="fp32"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0: all)"
    )


def pick_device(name):
    """``name``, or CUDA when present, else CPU.

    Example
    -------
    >>> pick_device("cpu")
    device(type='cpu')
    """
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_for_device(parser, cpu_defaults, gpu_defaults):
    """Parse the options, keep the logs to warnings, pick the device and
    fill the options left unset (``None``) with its defaults.

    Arguments
    ---------
    parser : argparse.ArgumentParser
        With the options of :func:`add_device_options`.
    cpu_defaults, gpu_defaults : dict
        Option name -> value, for a CPU and for CUDA.

    Returns
    -------
    args : argparse.Namespace
    device : torch.device
    """
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.disable(logging.INFO)  # the scripts print their own tables
    device = pick_device(args.device)
    defaults = gpu_defaults if device.type == "cuda" else cpu_defaults
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    return args, device


def synchronize(device):
    """Wait for the device's queued work (timings on CUDA).

    Example
    -------
    >>> synchronize("cpu")  # nothing to wait for
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo`` on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device):
    """CPU (and GPU) of this machine, as one table cell."""
    cpu = f"{cpu_model()} ({os.cpu_count()} CPUs)"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}; {cpu}"
    return f"{cpu}, {torch.get_num_threads()} torch threads"


def print_environment(device):
    """The date, machine and torch version, as a Markdown table."""
    print("| date | machine | torch |")
    print("| --- | --- | --- |")
    now = datetime.datetime.now().isoformat(timespec="minutes")
    print(f"| {now} | {machine(device)} | {torch.__version__} |\n")


def print_table(header, rows, header_row=True):
    """A Markdown table; the first column left-aligned, the rest right.
    ``header_row=False`` continues a table already printed. Floats get 3
    significant digits, without exponents (see the module's example).
    """
    if header_row:
        print("| " + " | ".join(header) + " |")
        print("| --- |" + " ---: |" * (len(header) - 1))
    for row in rows:
        print("| " + " | ".join(_cell(v) for v in row) + " |")


def _cell(value):
    if not isinstance(value, float):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"
