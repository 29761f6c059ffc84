"""BTS text prompts built from a recording's metadata.

Example
-------
>>> bts_prompt("Tc", "adult", "M", "Meditron")
'This sound was recorded from the trachea of an adult male patient, \
using a Meditron stethoscope.'
"""

from speechbrain_rsc.data.schema import DEVICES, LOCATIONS

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
