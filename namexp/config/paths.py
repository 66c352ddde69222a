"""Where the Hydra config tree lives.

The tree is kept at the repository's top level (`conf/`) so that users can read and copy it; the wheel
carries the same files inside the package (`namexp/conf`, see pyproject.toml), so an installed
`namexp` finds them without the source checkout.
"""

from __future__ import annotations

from pathlib import Path

from namexp.errors import UserError

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def conf_dir() -> Path:
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise UserError(
        f"namexp's config tree is missing (looked in {_PACKAGE_DIR / 'conf'} and {_PACKAGE_DIR.parent / 'conf'}): "
        "reinstall namexp (pip install namexp, or pip install -e . from a checkout)"
    )
