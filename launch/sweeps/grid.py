"""The grid of a sweep: `--sweep='PARAM=[v1, v2, ...]'` flags -> named trials.

Values are kept as gin literal texts (numbers, 'strings', True/False/None, tuples,
@references); a trial is named after its bindings, made filesystem-safe, e.g.
`PseudoLabelConfig.gamma=0.3,PseudoLabelConfig.temperature=0.7`.
"""

import collections
import hashlib
import itertools
import json
import re

from . import SweepError

_PARAM_RE = re.compile(r"^[A-Za-z_][\w.]*(/[A-Za-z_][\w.]*)*$")
_SAFE_RE = re.compile(r"[^A-Za-z0-9._+-]")
_MAX_NAME = 200


def split_values(text, flag):
    """Splits `v1, v2, ...` at top-level commas (not inside brackets or quotes).

    Args:
      text: the text between the outer brackets of a `--sweep` list.
      flag: the whole flag, for error messages.

    Returns:
      The stripped value texts.

    Raises:
      SweepError: for unbalanced brackets or quotes, or an empty value.
    """
    values, depth, quote, start = [], [], None, 0
    pairs = {")": "(", "]": "[", "}": "{"}
    for i, char in enumerate(text):
        if quote:
            if char == "\\":
                continue
            if char == quote and (i == 0 or text[i - 1] != "\\"):
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth.append(char)
        elif char in ")]}":
            if not depth or depth.pop() != pairs[char]:
                raise SweepError(f"{flag}: unbalanced {char!r} in the value list")
        elif char == "," and not depth:
            values.append(text[start:i])
            start = i + 1
    if quote:
        raise SweepError(f"{flag}: unterminated {quote} quote in the value list")
    if depth:
        raise SweepError(f"{flag}: unclosed {depth[-1]!r} in the value list")
    values.append(text[start:])
    values = [v.strip() for v in values]
    if len(values) > 1 and not values[-1]:  # A trailing comma.
        values.pop()
    if not all(values):
        raise SweepError(f"{flag}: empty value in the list (two commas in a row?)")
    return values


def parse_sweep(text):
    """Parses one `--sweep='PARAM=[v1, v2, ...]'` flag.

    Args:
      text: the flag's value.

    Returns:
      (param, [value texts]).

    Raises:
      SweepError: naming the flag when it is malformed.
    """
    flag = f"--sweep={text!r}"
    if "=" not in text:
        raise SweepError(f"{flag} is not PARAM=[v1, v2, ...], e.g. "
                         "--sweep='PseudoLabelConfig.gamma=[0.3, 0.5]'")
    param, values = (part.strip() for part in text.split("=", 1))
    if not _PARAM_RE.match(param):
        raise SweepError(f"{flag}: {param!r} is not a gin parameter name "
                         "(configurable.parameter, scope/configurable.parameter or MACRO)")
    if not (values.startswith("[") and values.endswith("]")):
        raise SweepError(f"{flag}: the values must be a bracketed list, e.g. {param}=[0.3, 0.5]")
    if not values[1:-1].strip():
        raise SweepError(f"{flag}: the value list is empty")
    values = split_values(values[1:-1], flag)
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise SweepError(f"{flag}: {', '.join(duplicates)} listed more than once")
    return param, values


def parse_sweeps(texts):
    """Parses every `--sweep` flag; a parameter may be swept once.

    Args:
      texts: the values of the `--sweep` flags, in order.

    Returns:
      An ordered list of (param, values).

    Raises:
      SweepError: for a malformed flag or a parameter swept twice.
    """
    sweeps = [parse_sweep(text) for text in texts]
    params = [p for p, _ in sweeps]
    duplicates = sorted({p for p in params if params.count(p) > 1})
    if duplicates:
        raise SweepError(f"--sweep: {', '.join(duplicates)} swept by more than one --sweep flag")
    return sweeps


def value_label(value):
    """A filesystem-safe, readable form of a gin value: `'sgc'` -> `sgc`, `(3, 3)` -> `3_3`.

    Args:
      value: a gin literal text.

    Returns:
      The label (letters, digits and `._+-`).
    """
    text = re.sub(r"\s+", "", value)
    text = re.sub(r"[\"'()\[\]{}]", "", text)
    return _SAFE_RE.sub("_", text.replace(",", "_"))


def trial_name(swept):
    """The directory name of a trial: `param=label,param=label` (see `value_label`).

    Args:
      swept: ordered {param: value text}.

    Returns:
      The name (which may collide with another trial's; `make_grid` resolves that).
    """
    return ",".join(f"{_SAFE_RE.sub('_', p)}={value_label(v)}" for p, v in swept.items())


def _digest(swept):
    """A short hash of the exact bindings, to tell apart trials whose names collide."""
    text = json.dumps(list(swept.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def make_grid(sweeps):
    """Every combination of the swept values, as ordered {param: value} dicts with a name.

    Names that would collide after making them filesystem-safe, or that are too long, get a
    short digest of the exact bindings appended.

    Args:
      sweeps: (param, values) pairs, as `parse_sweeps` returns them.

    Returns:
      A list of (name, swept) pairs in grid order (the last --sweep varies fastest).
    """
    params = [p for p, _ in sweeps]
    combos = [collections.OrderedDict(zip(params, values))
              for values in itertools.product(*(v for _, v in sweeps))]
    names = [trial_name(c) for c in combos]
    counts = collections.Counter(names)
    result = []
    for name, combo in zip(names, combos):
        if counts[name] > 1 or len(name) > _MAX_NAME:
            name = f"{name[:_MAX_NAME]}~{_digest(combo)}"
        result.append((name, combo))
    return result
