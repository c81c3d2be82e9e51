"""The docs name only what exists: the files they point to, the routes, the schema's indexes."""

from __future__ import annotations

import re
from pathlib import Path

from sidecar.app import make_app
from tests.conftest import make_config

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PARAM = re.compile(r"\{[^}]*\}")


def test_files_the_docs_point_to_exist() -> None:
    sources = [
        *sorted((ROOT / "systemd").iterdir()),
        ROOT / "README.md",
        *(ROOT / "conf").glob("*"),
    ]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for name in re.findall(r"\b[\w.-]+/[\w./-]+\.md\b", text):  # a path, not a bare name
            assert (ROOT / name).exists(), f"{path.name} points to {name}, which doesn't exist"
        for section in re.findall(r'README "([^"]+)"', text):
            assert re.search(rf"^#+ (\d+\. )?{re.escape(section)}$", README, re.M), (
                f'{path.name} points to README "{section}", which has no such section'
            )


def test_admin_routes_in_the_readme_exist(tmp_path: Path) -> None:
    app = make_app(make_config(tmp_path))
    served = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        pattern = info.get("formatter") or info.get("path") or ""
        served.add((route.method, PARAM.sub("{}", pattern)))
    named = re.findall(r"`((?:GET|POST|DELETE)(?:/(?:GET|POST|DELETE))*) (/api/[^`?\[\s]+)", README)
    assert len(named) >= 10
    for methods, path in named:
        for method in methods.split("/"):
            assert (method, PARAM.sub("{}", path)) in served, f"README: {method} {path}"


def test_readme_counts_the_partial_indexes_of_the_schema() -> None:
    schema = "\n".join(
        p.read_text() for p in sorted((ROOT / "relay/store/migrations/sqlite").glob("*.sql"))
    )
    # by name (a migration that rebuilds the table creates the same index again); a statement
    # runs to its semicolon, as an index on expressions holds parentheses
    partial = {
        name: where
        for name, where in re.findall(
            r"CREATE INDEX (\w+) ON events [^;]*?\sWHERE ([^;]*);", schema
        )
    }
    stats = {
        name for name, where in partial.items() if where.startswith("type IN ('open', 'click')")
    }
    words = {1: "one", 2: "two", 3: "three", 4: "four"}
    claim = re.search(r"and (\w+) small partial index(es)? on\s+open/click events", README)
    assert claim is not None
    assert claim.group(1) == words[len(stats)]
    # the others (the recording's lookups) are named
    assert set(partial) - stats == {"events_firsts", "events_click_links"}
    for name in set(partial) - stats:
        assert f"`{name}`" in README, name
