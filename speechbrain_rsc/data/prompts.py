"""BTS text prompts built from a recording's metadata.

Example
-------
>>> bts_prompt("Tc", "adult", "M", "Meditron")
'This sound was recorded from the trachea of an adult male patient, \
using a Meditron stethoscope.'
"""

from speechbrain_rsc.data.icbhi import ICBHIFormatError
from speechbrain_rsc.data.schema import DEVICES, LOCATIONS
from speechbrain_rsc.hashing import sha256_file

_SEX = {"M": "male", "F": "female"}


def bts_prompt(location, age_group, sex, device):
    """Write the all-metadata BTS prompt for one recording.

    Missing metadata (an empty ``age_group`` or ``sex``, as for patient
    223) is left out of the sentence rather than guessed.

    Arguments
    ---------
    location : str
        Chest location code from the file name (``"Al"``, ``"Tc"``, ...).
    age_group : str
        ``"adult"``, ``"pediatric"`` or ``""`` when unknown.
    sex : str
        ``"M"``, ``"F"`` or ``""`` when unknown.
    device : str
        Device code from the file name.

    Returns
    -------
    str

    Example
    -------
    >>> bts_prompt("Pl", "pediatric", "F", "AKGC417L")
    'This sound was recorded from the left posterior chest of a female \
pediatric patient, using an AKGC417L microphone.'
    >>> bts_prompt("Ar", "", "", "Litt3200")
    'This sound was recorded from the right anterior chest of a patient, \
using a Litt3200 stethoscope.'
    """
    # BTS word order: "an adult male", but "a female pediatric".
    words = (age_group, _SEX.get(sex, ""))
    if age_group == "pediatric":
        words = words[::-1]
    person = " ".join(w for w in words if w)
    article = "an" if person[:1] in ("a", "e", "i", "o", "u") else "a"
    subject = f"{article} {person} patient" if person else "a patient"
    return (
        f"This sound was recorded from the {LOCATIONS[location]} of "
        f"{subject}, using {DEVICES[device]}."
    )


# Where a prompt's chest location comes from: the recording's own file
# name, or the reference's one location per patient (Patch-Mix's
# ``data/icbhi_dataset/metadata.txt``, last column).
PROMPT_LOCATIONS = ("recording", "patient")


class PromptWriter:
    """The BTS prompt of each recording under one ``prompt_location``.

    ``"recording"``: the chest location of the file name, and missing
    demographics left out (:func:`bts_prompt`). ``"patient"``: as the
    reference code, the one location its per-patient metadata file gives
    each patient, and missing values read as that code reads them (``NA``
    becomes -1): an unknown age is pediatric (-1 < 19) and an unknown sex
    female (anything but ``M``), so patient 223 is "a female pediatric
    patient". That location column cannot be derived from the ICBHI files
    (see the README), so the file is required.

    Arguments
    ---------
    location : str
        One of ``PROMPT_LOCATIONS``.
    metadata_file : str or Path, optional
        Whitespace-separated, no header: patient ID first, location code last
        (Patch-Mix's ``metadata.txt``). Required for ``"patient"`` only.

    Example
    -------
    >>> from speechbrain_rsc.data.schema import parse_stem
    >>> tmp = getfixture("tmp_path") / "metadata.txt"
    >>> _ = tmp.write_text("223 NA NA NA NA NA Ll")
    >>> writer = PromptWriter("patient", tmp)
    >>> writer(parse_stem("223_1b1_Pr_sc_Meditron"), "", "")
    'This sound was recorded from the left lateral chest of a female \
pediatric patient, using a Meditron stethoscope.'
    >>> PromptWriter()(parse_stem("223_1b1_Pr_sc_Meditron"), "", "")
    'This sound was recorded from the right posterior chest of a patient, \
using a Meditron stethoscope.'
    """

    def __init__(self, location="recording", metadata_file=None):
        if location not in PROMPT_LOCATIONS:
            raise ValueError(
                f"prompt_location must be one of {PROMPT_LOCATIONS}, not "
                f"{location!r}"
            )
        self.location = location
        self.locations = {}
        self.metadata_sha256 = None
        if location == "patient":
            if metadata_file is None:
                raise ValueError(
                    "prompt_location: patient needs prompt_metadata_file, "
                    "the reference's per-patient metadata (Patch-Mix's "
                    "data/icbhi_dataset/metadata.txt): its location column "
                    "cannot be derived from the ICBHI files"
                )
            self.locations = read_patient_locations(metadata_file)
            self.metadata_sha256 = sha256_file(metadata_file)

    def options(self):
        """What the prompts are made from, for the preparation's key."""
        return {
            "location": self.location,
            "metadata_file": self.metadata_sha256,
        }

    def __call__(self, stem, age_group, sex):
        """The prompt of the recording ``stem`` (a parsed ICBHI stem)."""
        if self.location == "recording":
            return bts_prompt(stem.location, age_group, sex, stem.device)
        if stem.patient not in self.locations:
            raise ICBHIFormatError(
                f"the prompt metadata file has no line for patient "
                f"{stem.patient} ({stem.name})"
            )
        return bts_prompt(
            self.locations[stem.patient],
            age_group or "pediatric",
            sex if sex == "M" else "F",
            stem.device,
        )


def read_patient_locations(path):
    """Patient -> chest location code of a per-patient metadata file.

    Raises
    ------
    ICBHIFormatError
        On a line without a patient ID and a known location code, or a
        patient listed twice, naming the file and line.

    Example
    -------
    >>> tmp = getfixture("tmp_path") / "metadata.txt"
    >>> _ = tmp.write_text("101 3.0 F NA 19.0 99.0 Pr")
    >>> read_patient_locations(tmp)
    {101: 'Pr'}
    """
    locations = {}
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            fields = line.split()
            if not fields:
                continue
            where = f"{path}, line {number}"
            if not fields[0].isdigit() or fields[-1] not in LOCATIONS:
                raise ICBHIFormatError(
                    f"{where}: expected a patient ID first and a chest "
                    f"location code last, got {line.strip()!r}"
                )
            patient = int(fields[0])
            if patient in locations:
                raise ICBHIFormatError(f"{where}: patient {patient} twice")
            locations[patient] = fields[-1]
    return locations
