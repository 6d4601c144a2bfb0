"""Engine options: one table of names, types, defaults and checks, shared by the Python API,
the CLI, manifest per-row overrides and output-key hashing.

Gatys defaults (docs/engine.md, "The Gatys method and its defaults", says how they were chosen):
L-BFGS with a line search for 300 loss evaluations from the content image, content weight 1, style
weight 1e4 and total-variation weight 1e-3. Losses are normalised by their targets' magnitudes, so one
balance works for the ImageNet and random encoders alike.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .errors import OptionsError

METHODS = ("gatys", "adain", "johnson")
FEED_FORWARD = ("adain", "johnson")  # the methods with a trained network: batched forward passes, tiles
ALL = frozenset(METHODS)
MIN_TILE = 64  # the smallest tile_size: smaller tiles are mostly overlap


@dataclass(frozen=True)
class OptionSpec:
    """How one option is parsed and validated, and which methods it affects (for output-key hashing)."""

    type: type
    default: Any
    methods: frozenset = ALL
    choices: tuple | None = None
    check: Callable[[Any], bool] | None = None
    rule: str = ""
    help: str = ""


def _pos(x) -> bool:
    return x > 0


def _nonneg(x) -> bool:
    return x >= 0


SPECS: dict[str, OptionSpec] = {
    "size": OptionSpec(int, 512, check=_nonneg, rule=">= 0", help="longer side of the content in pixels (0 keeps the original)"),
    "style_size": OptionSpec(int, None, methods=frozenset({"gatys", "adain"}), check=_nonneg, rule=">= 0",
                             help="longer side of the style images (default: the content's size; 0 keeps the original)"),
    "steps": OptionSpec(int, 300, methods=frozenset({"gatys"}), check=_pos, rule="> 0", help="optimisation steps (L-BFGS: loss evaluations)"),
    "content_weight": OptionSpec(float, 1.0, methods=frozenset({"gatys"}), check=_nonneg, rule=">= 0", help="content loss weight"),
    "style_weight": OptionSpec(float, 1e4, methods=frozenset({"gatys"}), check=_nonneg, rule=">= 0", help="style loss weight"),
    "tv_weight": OptionSpec(float, 1e-3, methods=frozenset({"gatys"}), check=_nonneg, rule=">= 0", help="total-variation loss weight"),
    "content_loss": OptionSpec(str, "l2", methods=frozenset({"gatys"}), choices=("l2", "l1"), help="content loss norm"),
    "init": OptionSpec(str, "content", methods=frozenset({"gatys"}), choices=("content", "noise"), help="initial image"),
    "optimizer": OptionSpec(str, "lbfgs", methods=frozenset({"gatys"}), choices=("lbfgs", "adam"), help="optimiser"),
    "lr": OptionSpec(float, None, methods=frozenset({"gatys"}), check=_pos, rule="> 0",
                     help="learning rate (default: 1.0 for L-BFGS, 0.02 for Adam)"),
    "pyramid_threshold": OptionSpec(int, 512, methods=frozenset({"gatys"}), check=_pos, rule="> 0",
                                    help="sizes above this are optimised coarse-to-fine"),
    "preserve_color": OptionSpec(bool, False, help="keep the content's colours"),
    "seed": OptionSpec(int, 0, check=lambda x: 0 <= x < 2**63, rule="in [0, 2**63)",
                       help="random seed (bit-identical results on the same machine)"),
    "alpha": OptionSpec(float, 1.0, methods=frozenset({"adain"}), check=lambda a: 0.0 <= a <= 1.0, rule="in [0, 1]",
                        help="AdaIN style strength"),
    "tile_size": OptionSpec(int, 0, methods=frozenset(FEED_FORWARD), check=lambda t: t == 0 or t >= MIN_TILE,
                            rule=f"0 for automatic, or >= {MIN_TILE}",
                            help="process images larger than this many pixels per side as tiles (0: automatic)"),
}

_TRUE = {"1", "true", "yes", "y", "on", "t"}
_FALSE = {"0", "false", "no", "n", "off", "f", ""}


def coerce(name: str, value: Any) -> Any:
    """Parse and validate one option value (strings from CSV/CLI included). Raises OptionsError."""
    spec = SPECS.get(name)
    if spec is None:
        raise OptionsError(f"unknown option {name!r}; known options: {', '.join(sorted(SPECS))}")
    if value is None:  # not given (a manifest's empty cells arrive as None: pandas factorize drops NaN)
        return spec.default
    given = value  # what the user wrote, for the message
    try:
        if spec.type is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in _TRUE | _FALSE:
                    raise ValueError
                value = low in _TRUE
            elif isinstance(value, bool) or (hasattr(value, "dtype") and value.dtype == bool):
                value = bool(value)
            elif isinstance(value, numbers.Real) and value in (0, 1):  # 0/1, 0.0/1.0 (a float column's cells)
                value = bool(value)
            else:
                raise ValueError  # nan, 2, a list...
        elif isinstance(value, bool) or (hasattr(value, "dtype") and value.dtype == bool):
            raise ValueError  # JSON true is not a size or a weight
        elif spec.type is int:
            if isinstance(value, str):
                value = value.strip()
            if isinstance(value, numbers.Integral) or (isinstance(value, str) and value.lstrip("+-").isdigit()):
                value = int(value)  # exact: seeds above 2**53 do not round through a float
            else:
                f = float(value)
                if not f.is_integer():
                    raise ValueError
                value = int(f)
        elif spec.type is float:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError  # 'inf', '1e400' and 'nan' text are not weights
        else:
            value = str(value).strip().lower()
    except (TypeError, ValueError):
        raise OptionsError(f"option {name}: invalid value {given!r} (expected {spec.type.__name__})") from None
    if spec.choices and value not in spec.choices:
        raise OptionsError(f"option {name}: unknown value {value!r}; expected one of {', '.join(spec.choices)}")
    if spec.check and not spec.check(value):
        raise OptionsError(f"option {name}: value {value!r} out of range ({spec.rule})")
    return value


@dataclass(frozen=True)
class StyleOptions:
    """Validated engine options. Build with ``StyleOptions.make(**kw)`` to get parsing and checks."""

    values: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, base: "StyleOptions | None" = None, **overrides) -> "StyleOptions":
        """Options from defaults, then ``base``, then ``overrides`` (None values are ignored)."""
        vals = {k: s.default for k, s in SPECS.items()}
        if base is not None:
            vals.update(base.values)
        for k, v in overrides.items():
            if v is None:
                if k not in SPECS:
                    coerce(k, v)  # unknown name: raise
                continue
            vals[k] = coerce(k, v)
        return cls(vals)

    def __getattr__(self, name: str):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, **overrides) -> "StyleOptions":
        return StyleOptions.make(self, **overrides)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def effective(self, method: str) -> dict[str, Any]:
        """The options that affect ``method``'s output, in a stable order (for hashing output keys)."""
        if method not in METHODS:
            raise OptionsError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        return {k: self.values[k] for k in sorted(SPECS) if method in SPECS[k].methods}


def check_method(method: str) -> str:
    """Validate a method name."""
    m = str(method).strip().lower()
    if m not in METHODS:
        raise OptionsError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    return m


def parse_style_weights(text: str | None, n_styles: int | None = None, *, sep: str = ",") -> list[float] | None:
    """Parse ``"0.7,0.3"`` (or ``"0.7|0.3"`` with sep='|') into positive-sum, non-negative floats."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or str(text).strip() == "":
        return None
    if hasattr(text, "tolist"):  # a numpy array or torch tensor of weights
        text = text.tolist()
    if isinstance(text, (list, tuple)):
        parts = list(text)
    else:
        parts = [p for p in str(text).replace("|", sep).split(sep)]
    try:
        weights = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise OptionsError(f"style weights {text!r}: not a list of numbers") from None
    if any((not math.isfinite(w)) or w < 0 for w in weights) or sum(weights) <= 0:
        raise OptionsError(f"style weights {text!r}: must be non-negative with a positive sum")
    if n_styles is not None and len(weights) != n_styles:
        raise OptionsError(f"style weights {text!r}: {len(weights)} weights for {n_styles} style images")
    return weights


def normalise_weights(weights: list[float] | None, n: int) -> list[float]:
    """Blend weights that sum to 1 (equal weights when None)."""
    if not weights:
        return [1.0 / n] * n
    total = float(sum(weights))
    return [w / total for w in weights]


__all__ = ["SPECS", "METHODS", "StyleOptions", "coerce", "check_method", "parse_style_weights", "normalise_weights"]
