"""The package stays in small modules: none over 400 lines (docs/design.md, module map)."""

from __future__ import annotations

from pathlib import Path

import frame_buffer

LIMIT = 400


def test_no_module_of_the_package_is_over_400_lines() -> None:
    root = Path(frame_buffer.__file__).parent
    sizes = {str(p.relative_to(root)): len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    assert len(sizes) > 40
    assert {name: n for name, n in sizes.items() if n > LIMIT} == {}
