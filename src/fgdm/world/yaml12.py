"""YAML as every fgdm config is read: PyYAML's safe loader, with YAML 1.2 floats.

PyYAML implements YAML 1.1, where ``1e-4`` (no dot) is the *string* "1e-4"; a learning rate or
threshold written that way would reach the code as text. Here it is the number, as in YAML 1.2
(and in JSON). Nothing else changes: no object construction, ``no``/``yes`` handling as PyYAML's.
"""

from __future__ import annotations

import re

import yaml


class _Loader(yaml.SafeLoader):
    pass


_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
                    r"|[0-9][0-9_]*[eE][-+]?[0-9]+|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")  # fmt: skip
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(text: str):
    """Parse YAML text (safe: plain data only); raises ``yaml.YAMLError`` on bad syntax."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no object construction
