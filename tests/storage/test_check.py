"""Start-up checks and configuration: a bad store is a clear error naming the URL and cause."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from dcrond.config import load_config
from dcrond.errors import InvalidRequest, StorageRefused, StorageUnavailable
from dcrond.store._blobs import Blobs
from dcrond.testing._s3server import MotoServer, free_port
from dcrond.testing._swiftserver import SwiftServer
from tests.storage.conftest import BUCKET

TIMEOUT = 60
REMOTE = ["s3", "swift"]


def _server(request: pytest.FixtureRequest, kind: str) -> MotoServer | SwiftServer:
    name = "moto_server" if kind == "s3" else "swift_server"
    server: MotoServer | SwiftServer = request.getfixturevalue(name)
    return server


@pytest.fixture
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS credentials from this machine, and no instance-metadata lookups off loopback."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.parametrize("kind", REMOTE)
async def test_a_wrong_access_key_is_refused_at_check(
    kind: str, request: pytest.FixtureRequest
) -> None:
    server = _server(request, kind)
    url = f"{kind}://{BUCKET}/check"
    blobs = Blobs(url, **{**server.options(), "key": "AKIANOBODYKNOWS0000"})
    with trio.fail_after(TIMEOUT), pytest.raises(StorageRefused) as err:
        await blobs.check()
    message = str(err.value)
    assert message.startswith(f"object storage {url}: the credentials were refused")
    # S3 says the key is unknown; Swift's s3api cannot tell it from a wrong secret
    assert ("InvalidAccessKeyId" if kind == "s3" else "SignatureDoesNotMatch") in message
    blobs.backend.close()


@pytest.mark.parametrize("kind", REMOTE)
async def test_a_wrong_secret_is_refused_at_check(
    kind: str, request: pytest.FixtureRequest
) -> None:
    server = _server(request, kind)
    url = f"{kind}://{BUCKET}/check"
    blobs = Blobs(url, **{**server.options(), "secret": "not-the-secret"})
    with trio.fail_after(TIMEOUT), pytest.raises(StorageRefused) as err:
        await blobs.check()
    message = str(err.value)
    assert message.startswith(f"object storage {url}: the credentials were refused")
    assert "SignatureDoesNotMatch" in message
    blobs.backend.close()


@pytest.mark.parametrize("kind", REMOTE)
async def test_a_missing_bucket_is_named_at_check_and_never_created(
    kind: str, request: pytest.FixtureRequest
) -> None:
    server = _server(request, kind)
    url = f"{kind}://no-such-bucket/logs"
    blobs = Blobs(url, **server.options())
    with trio.fail_after(TIMEOUT):
        with pytest.raises(StorageRefused) as err:
            await blobs.check()
        assert str(err.value) == (
            f"object storage {url}: bucket 'no-such-bucket' does not exist at "
            f"{server.endpoint} (create it, or fix storage.url)"
        )
        with pytest.raises(StorageRefused, match="does not exist"):
            await blobs.check()  # still missing: check() did not create it
    blobs.backend.close()


@pytest.mark.parametrize("kind", REMOTE)
async def test_an_unreachable_endpoint_is_unavailable_not_refused(kind: str) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    url = f"{kind}://{BUCKET}/x"
    blobs = Blobs(url, endpoint_url=endpoint, key="k", secret="s", connect_timeout=2)
    with trio.fail_after(TIMEOUT), pytest.raises(StorageUnavailable) as err:
        await blobs.check()
    assert str(err.value).startswith(f"object storage {url}: cannot reach {endpoint}")
    blobs.backend.close()


@pytest.mark.usefixtures("no_ambient_credentials")
async def test_no_credentials_at_all_is_refused_with_a_hint(moto_server: MotoServer) -> None:
    url = f"s3://{BUCKET}/x"
    blobs = Blobs(url, endpoint_url=moto_server.endpoint)
    with trio.fail_after(TIMEOUT), pytest.raises(StorageRefused) as err:
        await blobs.check()
    assert str(err.value).startswith(f"object storage {url}: no usable credentials")
    assert "AWS_ACCESS_KEY_ID" in str(err.value)
    blobs.backend.close()


@pytest.mark.usefixtures("no_ambient_credentials")
@pytest.mark.parametrize("kind", REMOTE)
async def test_credentials_come_from_the_usual_aws_variables(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _server(request, kind)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
    blobs = Blobs(f"{kind}://{BUCKET}/env", endpoint_url=server.endpoint)
    with trio.fail_after(TIMEOUT):
        await blobs.check()
    blobs.backend.close()


@pytest.mark.usefixtures("no_ambient_credentials")
@pytest.mark.parametrize("kind", REMOTE)
async def test_config_file_and_profile_reach_the_store(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[storage] url/endpoint_url/region/profile plus a shared credentials file is enough."""
    server = _server(request, kind)
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[dcrond]\naws_access_key_id = {server.access_key}\n"
        f"aws_secret_access_key = {server.secret_key}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    config_file = tmp_path / "dcrond.toml"
    config_file.write_text(
        f'[node]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[storage]\nurl = "{kind}://{BUCKET}/from-config"\n'
        f'endpoint_url = "{server.endpoint}"\nregion = "us-east-1"\nprofile = "dcrond"\n'
    )
    config = load_config(config_file)
    blobs = Blobs(config.storage_url, cache_dir=config.cache_path, **config.storage_options)
    with trio.fail_after(TIMEOUT):
        await blobs.check()
        sha = await blobs.put_script(b"echo configured\n")
    assert (config.cache_path / "scripts" / sha[:2] / sha).read_bytes() == b"echo configured\n"
    blobs.backend.close()


async def test_the_default_config_stores_in_a_local_folder(tmp_path: Path) -> None:
    config = load_config(None, data_dir=str(tmp_path / "data"))
    blobs = Blobs(config.storage_url, cache_dir=config.cache_path, **config.storage_options)
    await blobs.check()
    sha = await blobs.put_script(b"echo local\n")
    assert (tmp_path / "data" / "objects" / "scripts" / sha[:2] / sha).is_file()


async def test_an_unwritable_folder_is_refused_at_check(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    url = f"file://{tmp_path / 'a-file' / 'objects'}"
    with pytest.raises(StorageRefused) as err:
        await Blobs(url).check()
    assert str(err.value).startswith(f"object storage {url}: ")


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("gs://bucket/x", {}, "scheme 'gs' is not supported"),
        ("/var/lib/dcrond/objects", {}, "scheme '(none)' is not supported"),
        ("s3:///prefix", {}, "no bucket named"),
        ("swift://logs/x", {}, "swift:// needs storage.endpoint_url"),
        ("file:///srv/objects", {"endpoint_url": "http://x"}, "storage.endpoint_url is set"),
        ("file://host/srv", {}, "file:// takes no host"),
        ("s3://b/x", {"endpoint": "http://x"}, "unknown storage option(s): endpoint"),
        ("s3://b/x", {"part_size": 1024}, "part_size must be 0 (the default) or 5 MiB to 5 GiB"),
    ],
)
def test_a_bad_url_or_option_is_refused_before_any_request(
    url: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest) as err:
        Blobs(url, **options)
    assert message in str(err.value)
