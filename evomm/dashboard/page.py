"""The dashboard page: one HTML template, served live (data from the API) or written as a
self-contained ``report.html`` (Plotly, the script and every API answer embedded).

Plotly's bundle comes from the ``plotly`` package (``plotly/package_data/plotly.min.js``): no CDN,
the machines running evomm are often offline.
"""

from __future__ import annotations

import html
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

from evomm.errors import ConfigError

from .state import dumps

_CLOSE = re.compile(r"</(script)", re.IGNORECASE)
#: The page's own files (evomm/templates/dashboard/).
ASSETS = ("dashboard.js", "dashboard.css")


def asset(name: str) -> bytes:
    """The bytes of a page file: ``plotly.min.js`` or one of :data:`ASSETS`.

    Raises:
        ConfigError: the ``plotly`` package is not installed.
        KeyError: an unknown name.
    """
    if name == "plotly.min.js":
        try:
            return resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes()
        except (ModuleNotFoundError, FileNotFoundError):
            raise ConfigError("the dashboard needs Plotly's JavaScript bundle from the `plotly` package; "
                              "install it with `pip install plotly`") from None
    if name not in ASSETS:
        raise KeyError(name)
    return _template(name).encode("utf-8")


def _template(name: str) -> str:
    return resources.files("evomm").joinpath("templates", "dashboard", name).read_text(encoding="utf-8")


def _script_safe(text: str) -> str:
    """Text that may sit inside a ``<script>`` element: ``</script`` and ``<!--`` escaped (in JSON
    and in JavaScript strings ``<\\/`` and ``\\u003C!--`` read the same).

    Example:
        >>> _script_safe('{"a": "</script>"}')
        '{"a": "<\\\\/script>"}'
    """
    return _CLOSE.sub(lambda m: "<\\/" + m.group(1), text).replace("<!--", "\\u003C!--")


def render_live(title: str) -> str:
    """The page that ``evomm serve`` answers at ``/``: it fetches everything from ``/api/``."""
    return (_template("index.html")
            .replace("{{title}}", html.escape(title))
            .replace("{{style}}", '<link rel="stylesheet" href="static/dashboard.css">')
            .replace("{{fallback}}", "")
            .replace("{{scripts}}", '<script src="static/plotly.min.js"></script>\n'
                                    '<script src="static/dashboard.js"></script>'))


def render_static(title: str, answers: dict[str, Any], fallback: str = "") -> str:
    """A self-contained page: ``answers`` maps each API path the page asks for to its payload;
    ``fallback`` is HTML shown where scripts do not run (inside ``<noscript>``)."""
    scripts = "\n".join([
        f'<script id="evomm-data" type="application/json">{_script_safe(dumps(answers))}</script>',
        f"<script>{_script_safe(asset('plotly.min.js').decode('utf-8'))}</script>",
        f"<script>{_script_safe(_template('dashboard.js'))}</script>",
    ])
    return (_template("index.html")
            .replace("{{title}}", html.escape(title))
            .replace("{{style}}", f"<style>{_template('dashboard.css')}</style>")
            .replace("{{fallback}}", f"<noscript>{fallback}</noscript>" if fallback else "")
            .replace("{{scripts}}", scripts))  # last: nothing is replaced inside the embedded data


def write_static(path: Path, title: str, answers: dict[str, Any], fallback: str = "") -> Path:
    """Write :func:`render_static` to ``path`` atomically; returns ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_static(title, answers, fallback), encoding="utf-8")
    os.replace(tmp, path)
    return path
