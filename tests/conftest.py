from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.zoo import Zoo, build_zoo

NEEDS = ("docker-registry", "skopeo")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = [t for t in NEEDS if shutil.which(t) is None]
    if missing:
        raise pytest.UsageError(f"missing {', '.join(missing)}: run `make test`, which installs them")


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zoo]:
    z = build_zoo(tmp_path_factory.mktemp("zoo"))
    yield z
    z.registry.stop()


@pytest.fixture
def zoo_copy(zoo: Zoo, tmp_path: Path) -> Path:
    """A private copy of the zoo's registry root, for tests that damage it."""
    dst = tmp_path / "root"
    shutil.copytree(zoo.root, dst)
    return dst
