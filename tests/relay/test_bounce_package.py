"""relay.learn.bounce as a package: one role per module, no cycles, rules naming known reasons."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import relay.learn.bounce
from relay.learn.bounce import REASONS
from relay.learn.bounce.reasons import HARD_REASONS, RENAMED
from relay.learn.bounce.rules import (
    CODE_REASONS,
    GENERIC_RULES,
    REASON_STATUS,
    SPECIFIC_RULES,
    STATUS_REASONS,
    TRANSIENT_STATUS_REASONS,
)

PACKAGE = Path(relay.learn.bounce.__file__).parent
NAME = "relay.learn.bounce"


def _modules() -> dict[str, ast.Module]:
    found: dict[str, ast.Module] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join((NAME, *parts)).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text())
    return found


def _imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n == NAME or n.startswith(NAME + ".")}


def test_every_module_states_its_role_in_one_first_line() -> None:
    modules = _modules()
    assert len(modules) >= 15
    for name, tree in modules.items():
        doc = ast.get_docstring(tree)
        assert doc, name
        first = doc.splitlines()[0]
        assert first.endswith("."), (name, first)


def test_no_module_imports_the_orchestrator_or_the_face_and_there_is_no_cycle() -> None:
    graph = {name: _imports(tree) for name, tree in _modules().items()}
    for name, deps in graph.items():
        if name != NAME:
            assert NAME not in deps, name
            assert f"{NAME}.parse" not in deps, name
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join((*path, name))
        if name in done:
            return
        for dep in graph.get(name, set()):
            visit(dep, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_the_face_exports_exactly_what_callers_use() -> None:
    assert sorted(relay.learn.bounce.__all__) == sorted(
        [
            "REASONS",
            "BounceResult",
            "Complaint",
            "Report",
            "Verdict",
            "classify",
            "parse_report",
            "verp_recipient",
        ]
    )
    for name in relay.learn.bounce.__all__:
        assert hasattr(relay.learn.bounce, name), name


def test_rules_are_plain_data_naming_known_reasons() -> None:
    assert SPECIFIC_RULES and GENERIC_RULES
    for reason, alternatives in (*SPECIFIC_RULES, *GENERIC_RULES):
        assert reason in REASONS
        assert alternatives and all(isinstance(a, str) for a in alternatives)
        re.compile("|".join(alternatives))
    assert set(STATUS_REASONS.values()) <= set(REASONS)
    assert set(TRANSIENT_STATUS_REASONS.values()) <= set(REASONS)
    assert set(CODE_REASONS.values()) <= set(REASONS)
    assert set(REASON_STATUS) == set(REASONS)
    for detail in [*STATUS_REASONS, *REASON_STATUS.values()]:
        assert re.fullmatch(r"\d{1,3}\.\d{1,3}", detail), detail


def test_vocabulary_is_sisimais_and_renames_land_in_it() -> None:
    assert set(REASONS) == set(
        "authfailure badreputation blocked contenterror delivered exceedlimit expired "
        "failedstarttls feedback filtered hasmoved hostunknown mailboxfull mailererror "
        "mesgtoobig networkerror norelaying notaccept notcompliantrfc onhold policyviolation "
        "rejected requireptr securityerror spamdetected speeding suppressed suspend syntaxerror "
        "systemerror systemfull toomanyconn undefined userunknown vacation virusdetected".split()
    )
    assert HARD_REASONS == {"userunknown", "hostunknown", "hasmoved", "notaccept"}
    assert set(RENAMED.values()) <= set(REASONS)
    assert not set(RENAMED) & set(REASONS)
