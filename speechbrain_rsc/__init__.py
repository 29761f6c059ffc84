"""speechbrain-rsc: respiratory sound classification on ICBHI 2017.

Teacher ensembles trained on hard labels are distilled into one student
with soft labels, for any backbone (CNN6, ResNet18, EfficientNet-B0, AST,
Audio-CLAP, BTS).
"""

from importlib.metadata import PackageNotFoundError, version

__version__ = "0.1.0"


def check_torch_pair(torch_version=None, torchaudio_version=None):
    """Refuse a torch and torchaudio that are not one release.

    torchaudio's compiled extension is built against one torch release;
    with another, ``import torchaudio`` (and so ``import speechbrain``)
    fails with an undefined symbol, although ``pip check`` is content.
    The versions are read from the installed metadata, without importing
    either package.

    Arguments
    ---------
    torch_version, torchaudio_version : str, optional
        The versions to check (default: the installed ones).

    Raises
    ------
    ImportError
        Naming both versions and how to install a matched pair.

    Example
    -------
    >>> check_torch_pair("2.11.0+cu130", "2.11.0")
    >>> check_torch_pair("2.11.0", "2.11.1")
    Traceback (most recent call last):
    ...
    ImportError: torch 2.11.0 with torchaudio 2.11.1: ...
    """
    try:
        torch_version = torch_version or version("torch")
        torchaudio_version = torchaudio_version or version("torchaudio")
    except PackageNotFoundError:
        return  # the import itself will say what is missing
    releases = [v.split("+")[0] for v in (torch_version, torchaudio_version)]
    if releases[0] != releases[1]:
        raise ImportError(
            f"torch {torch_version} with torchaudio {torchaudio_version}: "
            "torchaudio's extension works only with the torch release it "
            "was built for. Install one release of both, e.g. pip install "
            "torch==2.11.0 torchaudio==2.11.0 torchvision==0.26.0 (the set "
            "speechbrain-rsc is tested with)"
        )


check_torch_pair()
