"""The only way shell text is made: Jinja templates, StrictUndefined, and the `q` quoting filter."""
from __future__ import annotations

import shlex

import jinja2

from fleetctl import capture

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("fleetctl", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["q"] = lambda value: shlex.quote(str(value))
_env.globals["line_max"] = capture.MAC_LINE_MAX


def render(step: str, **values) -> str:
    """Render templates/<step>.sh.j2; every value must enter the text through `| q`."""
    return _env.get_template(f"{step}.sh.j2").render(**values)
