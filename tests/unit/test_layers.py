"""Dependencies point one way: the import graph (grimp, every import including function-level ones)
has no path against the layering."""

from __future__ import annotations

import grimp
import pytest

# (importer, imported): no chain of imports may lead from the first to the second.
FORBIDDEN = [
    ("extauthz.detect", "extauthz.inventory"),        # detection is shared by the inventory and enforcement
    ("extauthz.detect", "extauthz.admin"),
    ("extauthz.inventory", "extauthz.admin"),
    ("extauthz.core", "extauthz.envoy"),
    ("extauthz.core", "extauthz.admin"),
    ("extauthz.core", "extauthz.inventory"),
    ("extauthz.specs", "extauthz.inventory"),
    ("extauthz.risk", "extauthz.inventory"),          # enforcement reads detection, not the inventory
    ("extauthz.inventory.store", "extauthz.inventory.view"),   # the view reads the store, not back
    ("extauthz.mcp", "extauthz.specs"),               # the protocol (the learn header too) knows no specs
    ("extauthz.specs.exchange", "extauthz.specs.learn"),        # an exchange reads its Learner by Protocol
    ("extauthz.specs.streamexchange", "extauthz.specs.learn"),
    ("extauthz.specs.responsefilter", "extauthz.specs.exchange"),
]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("extauthz", cache_dir=None)


@pytest.mark.parametrize(("importer", "imported"), FORBIDDEN)
def test_no_import_path_against_the_layers(graph: grimp.ImportGraph, importer: str, imported: str) -> None:
    assert importer in graph.modules and imported in graph.modules
    chain = graph.find_shortest_chain(importer, imported, as_packages=True)
    assert chain is None, " -> ".join(chain or ())


def test_detect_depends_on_nothing_else_of_ours(graph: grimp.ImportGraph) -> None:
    """Detection is a leaf: itself and the shared schema walker, nothing else of ours."""
    ours = {m for mod in graph.find_descendants("extauthz.detect")
            for m in graph.find_modules_directly_imported_by(mod) if m.startswith("extauthz.")}
    assert ours and all(m.startswith("extauthz.detect.") or m == "extauthz.schemawalk" for m in ours), sorted(ours)
