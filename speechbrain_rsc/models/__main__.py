"""Parameter counts of every registered backbone next to the paper's.

``python -m speechbrain_rsc.models`` builds each backbone offline with
random weights (4 classes) and prints a Markdown table with the counts of
the paper's Table 2. A family whose module cannot be imported is listed as
"not available".

Example
-------
>>> format_count(4569284)
'4.57M'
"""

import argparse

from speechbrain_rsc.models import BACKBONES

# Table 2 of the paper, in its order (BTS first, as the teacher).
TABLE2 = {
    "bts": "153M",
    "ast": "87.7M",
    "audio_clap": "28M",
    "resnet18": "11.7M",
    "efficientnet_b0": "5.3M",
    "cnn6": "4.8M",
}
# Why ours differs, where it does (see each family's module docstring).
NOTES = {
    "ast": "Table 2 matches AST at 1024 frames + DeiT's unused heads",
    "resnet18": "Table 2 counts the ImageNet model (1000 classes, RGB)",
    "efficientnet_b0": "Table 2 counts the ImageNet model (1000 classes, RGB)",
    "cnn6": "Table 2 counts PANNs CNN6 with its 527-class AudioSet head",
}


def count_parameters(module):
    """All parameters of ``module`` (trainable or not).

    Example
    -------
    >>> import torch
    >>> count_parameters(torch.nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in module.parameters())


def format_count(n):
    """``n`` in millions with two decimals."""
    return f"{n / 1e6:.2f}M"


def parameter_rows(names=None):
    """``(name, ours, table2, note)`` for each backbone.

    Arguments
    ---------
    names : list of str, optional
        Registered names; default all, Table 2's first.

    Returns
    -------
    list of tuple of str
        ``ours`` is "not available" when the family does not import.
    """
    if names is None:
        # iterating lists the names without importing the families
        registered = list(BACKBONES)
        names = [n for n in TABLE2 if n in registered]
        names += [n for n in registered if n not in TABLE2]
    rows = []
    for name in names:
        try:
            cls = BACKBONES[name]
        except ImportError as error:
            ours, note = "not available", f"import failed: {error}"
        else:
            ours, note = format_count(count_parameters(cls())), ""
        rows.append(
            (name, ours, TABLE2.get(name, "-"), note or NOTES.get(name, ""))
        )
    return rows


def markdown_table(rows):
    """The rows of :func:`parameter_rows` as a Markdown table.

    Example
    -------
    >>> print(markdown_table([("cnn6", "4.57M", "4.8M", "")]))
    | backbone | ours (4 classes) | Table 2 | note |
    |---|---:|---:|---|
    | cnn6 | 4.57M | 4.8M |  |
    """
    lines = [
        "| backbone | ours (4 classes) | Table 2 | note |",
        "|---|---:|---:|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def main(argv=None):
    """Print the table for the backbones named in ``argv`` (default all)."""
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_rsc.models",
        description="Parameter counts of the backbones (random weights, "
        "4 classes) beside the paper's Table 2.",
    )
    parser.add_argument(
        "backbones",
        nargs="*",
        metavar="BACKBONE",
        help=f"any of {', '.join(BACKBONES)} (default: all)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.backbones if name not in BACKBONES]
    if unknown:
        parser.error(
            f"unknown backbone {unknown[0]!r}: choose from "
            + ", ".join(BACKBONES)
        )
    print(markdown_table(parameter_rows(args.backbones or None)))


if __name__ == "__main__":
    main()
