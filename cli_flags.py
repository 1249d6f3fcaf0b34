"""Command-line flags generated from dataclasses.

Each script keeps its options in frozen dataclasses whose fields carry a
default and a help text (`flag_field`); the flags are generated from those
fields, so a field and its flag cannot drift apart. A field may name the
modes it belongs to (`modes=`); given in another mode, its flag is refused
rather than silently ignored. No TensorFlow here: generate_face.py and
evaluate_gan.py use it without loading TensorFlow.
"""

import argparse
import dataclasses


def flag_field(default, help, modes=None, **argparse_options):
    """A dataclass field that becomes a flag.

    Args:
      help: the flag's --help text (the default is appended).
      modes: names of the modes this option belongs to (None: every mode).
      argparse_options: passed on to add_argument (e.g. choices, metavar).
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "modes": modes, "argparse": argparse_options})


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

    A bool flag alone means true (`--flip`), or takes a value (`--flip false`).

    suppress_defaults: flags not given are left out of the parsed namespace
    (so that the caller can tell typed values from defaults); otherwise
    they take the field's default.
    """
    for field in dataclasses.fields(cls):
        meta = field.metadata
        shown = "''" if field.default == "" else field.default
        options = {"metavar": field.type.__name__.upper(),
                   "help": f"{meta['help']} (default: {shown})", **meta["argparse"]}
        if field.type is bool:
            options.update(type=flag_bool, nargs="?", const=True)
        else:
            options.setdefault("type", field.type)
        if not suppress_defaults:
            options["default"] = field.default
        group.add_argument(f"--{field.name}", **options)


def from_flags(cls, given):
    """`cls` from {flag name: value} of the flags given; the rest take defaults."""
    names = {field.name for field in dataclasses.fields(cls)}
    return cls(**{name: value for name, value in given.items() if name in names})


def misplaced(cls, given, mode):
    """Messages for flags of `cls` given in a mode they do not belong to."""
    found = []
    for field in dataclasses.fields(cls):
        modes = field.metadata["modes"]
        if field.name in given and modes is not None and mode not in modes:
            found.append(f"--{field.name} applies to {' and '.join(modes)} only")
    return found


def below(options, names, minimum):
    """Messages for the fields among `names` whose value is below `minimum` (0 or 1)."""
    wording = "at least 1" if minimum == 1 else f"{minimum} or more"
    return [f"--{name} must be {wording}, got {getattr(options, name)}"
            for name in names if getattr(options, name) < minimum]
