"""The ICBHI 2017 vocabulary: classes, stem grammar, devices, locations.

Every other module reads these tables; nothing else spells a device or a
location code.

Example
-------
>>> label_from_flags(crackle=1, wheeze=0)
1
>>> parse_stem("101_1b1_Al_sc_Meditron").location
'Al'
"""

import re
from dataclasses import dataclass

CLASS_NAMES = ("normal", "crackle", "wheeze", "both")
N_CLASSES = len(CLASS_NAMES)

# Chest location code -> words used in the BTS prompt.
LOCATIONS = {
    "Tc": "trachea",
    "Al": "left anterior chest",
    "Ar": "right anterior chest",
    "Pl": "left posterior chest",
    "Pr": "right posterior chest",
    "Ll": "left lateral chest",
    "Lr": "right lateral chest",
}

# Device code -> the phrase used in the BTS prompt.
DEVICES = {
    "Meditron": "a Meditron stethoscope",
    "LittC2SE": "a LittC2SE stethoscope",
    "Litt3200": "a Litt3200 stethoscope",
    "AKGC417L": "an AKGC417L microphone",
}

MODES = {"sc": "single channel", "mc": "multi channel"}

STEM_PATTERN = re.compile(
    r"^(?P<patient>\d{3})_(?P<index>\d+[a-z]\d+)_(?P<location>[A-Za-z]{2})"
    r"_(?P<mode>[a-z]{2})_(?P<device>[A-Za-z0-9]+)$"
)


@dataclass(frozen=True)
class Stem:
    """The parts of a recording's file stem ``PPP_RRR_LL_MM_DEVICE``."""

    patient: int
    index: str
    location: str
    mode: str
    device: str

    @property
    def name(self):
        """The stem as written on disk."""
        return (
            f"{self.patient:03d}_{self.index}_{self.location}"
            f"_{self.mode}_{self.device}"
        )

    @property
    def device_free(self):
        """The stem without its device part, used to match renamed files."""
        return (self.patient, self.index, self.location, self.mode)


def parse_stem(stem):
    """Split a recording stem into its parts, checking every code.

    Arguments
    ---------
    stem : str
        A file stem such as ``"101_1b1_Al_sc_Meditron"``.

    Returns
    -------
    Stem

    Raises
    ------
    ValueError
        If the stem does not follow the grammar or names an unknown
        location, acquisition mode or device.

    Example
    -------
    >>> parse_stem("226_1b1_Pl_sc_LittC2SE").patient
    226
    """
    match = STEM_PATTERN.match(stem)
    if match is None:
        raise ValueError(
            f"'{stem}' is not an ICBHI stem (PPP_RRR_LL_MM_DEVICE)"
        )
    parts = match.groupdict()
    for key, table in (
        ("location", LOCATIONS),
        ("mode", MODES),
        ("device", DEVICES),
    ):
        if parts[key] not in table:
            raise ValueError(
                f"'{stem}': unknown {key} code '{parts[key]}' "
                f"(known: {', '.join(table)})"
            )
    return Stem(
        patient=int(parts["patient"]),
        index=parts["index"],
        location=parts["location"],
        mode=parts["mode"],
        device=parts["device"],
    )


def label_from_flags(crackle, wheeze):
    """Map the annotation flags to the class index.

    Arguments
    ---------
    crackle : int
        1 if the cycle has crackles, else 0.
    wheeze : int
        1 if the cycle has wheezes, else 0.

    Returns
    -------
    int
        0 normal, 1 crackle, 2 wheeze, 3 both.

    Example
    -------
    >>> [label_from_flags(c, w) for c, w in [(0, 0), (1, 0), (0, 1), (1, 1)]]
    [0, 1, 2, 3]
    """
    return int(crackle) + 2 * int(wheeze)


def age_group(age, adult_age=19):
    """Return ``"adult"`` (age >= ``adult_age``), ``"pediatric"`` or ``""``.

    The BTS code treats ages of 19 and over as adult; missing ages give an
    empty string.

    Example
    -------
    >>> age_group(18.0), age_group(19.0), age_group(None)
    ('pediatric', 'adult', '')
    """
    if age is None:
        return ""
    return "adult" if age >= adult_age else "pediatric"
