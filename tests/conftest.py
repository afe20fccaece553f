from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.realharbor import HarborUnavailable, RealHarbor
from tests.support.realharbor import start as start_harbor
from tests.support.s3 import S3Server, s3_server
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


def _real_harbor(
    version: str, factory: pytest.TempPathFactory, s3_driver: dict[str, str] | None = None
) -> Iterator[RealHarbor]:
    # not below pytest's temp root (mode 0700): Harbor's PostgreSQL runs as the postgres user
    work = Path(tempfile.mkdtemp(prefix=f"ferry-harbor-{version}-"))
    work.chmod(0o755)
    failure = None
    try:
        harbor = start_harbor(version, work / "work")
        if s3_driver is not None:
            try:
                harbor.move_registry_to_s3(s3_driver)
            except BaseException:
                harbor.stop()
                raise
    except HarborUnavailable as e:
        failure = str(e)
    if failure is not None:
        shutil.rmtree(work, ignore_errors=True)
        # never skipped: a Harbor that cannot start here is a failure of the tests that need it, with why
        pytest.fail(failure, pytrace=False)
    try:
        yield harbor
    finally:
        harbor.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def harbor29(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealHarbor]:
    """Real Harbor 2.9.5 (OCI 1.1: subject, referrers API, cosign accessories)."""
    yield from _real_harbor("v2.9.5", tmp_path_factory)


@pytest.fixture(scope="session")
def harbor27(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealHarbor]:
    """Real Harbor 2.7.3 (no referrers API; refuses a signature pushed before its image)."""
    yield from _real_harbor("v2.7.3", tmp_path_factory)


@pytest.fixture(scope="session")
def harbor110(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealHarbor]:
    """Real Harbor 1.10.19: the restore target."""
    yield from _real_harbor("v1.10.19", tmp_path_factory)


@pytest.fixture(scope="session")
def harbor110_s3(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealHarbor]:
    """Real Harbor 1.10.19 whose registry keeps its storage in the bucket ``harbor1`` under ``/prod`` of
    the real S3 server: a restore target reached as ``s3://harbor1/prod``."""
    s3.client().create_bucket(Bucket="harbor1")
    driver = s3.registry_driver("harbor1")
    yield from _real_harbor("v1.10.19", tmp_path_factory, driver)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """A real S3 server (Ceph radosgw, ../shared/s3/), one per session."""
    with s3_server() as server:
        yield server
