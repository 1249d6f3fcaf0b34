"""Command-line flags generated from dataclasses.

Each script keeps its options in a frozen dataclass whose fields carry a
default and a help text (`flag_field`); the flags are generated from those
fields, so a field and its flag cannot drift apart. No TensorFlow here:
generate_face.py and evaluate_gan.py use it without loading TensorFlow.
"""

import argparse
import dataclasses


def flag_field(default, help):
    """A dataclass field whose help text becomes its flag's --help."""
    return dataclasses.field(default=default, metadata={"help": help})


def flag_bool(text):
    """argparse type for true/false flags (true, false, 1, 0, yes, no)."""
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_flags(group, cls, suppress_defaults=False):
    """Add a --<field> flag to an argparse group for every field of `cls`.

    suppress_defaults: flags not given are left out of the parsed namespace
    (so a resumed run can tell typed values from ones to restore);
    otherwise they take the field's default.
    """
    for field in dataclasses.fields(cls):
        kind = flag_bool if field.type is bool else field.type
        extra = {} if suppress_defaults else {"default": field.default}
        group.add_argument(f"--{field.name}", type=kind, metavar=field.type.__name__.upper(),
                           help=f"{field.metadata['help']} (default: {field.default})", **extra)
