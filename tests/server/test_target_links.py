"""Where the server sends devices for images (server.services.target_links): pure checks of
the settings and of the paths; the presigned redirect itself is tested end to end against
moto in tests/e2e/test_targets_object_store.py."""

from __future__ import annotations

import pytest

from server.errors import NotFoundError
from server.services.target_links import PublicTargets, target_links


def links(**given: object) -> object:
    settings = {"store_url": "", "public_url": "", "ttl_s": 900.0, "s3_endpoint_url": ""}
    return target_links(**{**settings, **given})  # type: ignore[arg-type]


def test_without_a_store_the_server_serves_images_itself() -> None:
    assert links() is None


def test_a_public_base_url_gets_the_target_path_appended_quoted() -> None:
    public = links(public_url="https://cdn.example.org/ota/targets/")
    assert isinstance(public, PublicTargets)
    assert (
        public.url_for("rpi4/stable/1.0/ab.rom img")
        == "https://cdn.example.org/ota/targets/rpi4/stable/1.0/ab.rom%20img"
    )


@pytest.mark.parametrize("path", ["../metadata/root.json", "a//b", "a/./b", "a\\b", ""])
def test_no_path_climbs_out_of_targets(path: str) -> None:
    public = links(public_url="https://cdn.example.org/targets")
    with pytest.raises(NotFoundError):
        public.url_for(path)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"public_url": "ftp://cdn/targets"}, "http"),
        ({"store_url": "https://bucket/prefix"}, "s3://bucket"),
        ({"store_url": "s3://"}, "s3://bucket"),
        ({"store_url": "s3://bucket/p", "ttl_s": 0}, "1..604800"),
        ({"store_url": "s3://bucket/p", "ttl_s": 8 * 24 * 3600}, "1..604800"),
    ],
)
def test_settings_that_cannot_work_are_refused_in_one_line(
    given: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        links(**given)
    assert "\n" not in str(caught.value)
