"""data/manifests/*.json: the committed manifests equal what the code generates, and the check can fail."""
import json

import pytest

from lrp_utils import data, manifests


@pytest.fixture(scope="module")
def built():
    return manifests.build()


def test_committed_manifests_are_current(built):
    assert manifests.stale(built=built) == [], "run: python -m lrp_utils.data manifests"


def test_manifests_are_small_and_hold_no_texts(built):
    texts = {t for t, _ in data.rotten_tomatoes("test")[:50]}
    for path in manifests.MANIFEST_DIR.glob("*.json"):
        body = path.read_text()
        assert len(body) < 8 * 1024, path.name
        assert not any(t in body for t in texts if len(t) > 30), path.name


def test_rt_ids_point_at_the_sentences(built):
    test = data.rotten_tomatoes("test")
    assert built["rt-test"]["ids"] == data.split_ids("rotten_tomatoes", "test").tolist()
    assert built["rt-test"]["sha256"] == built["rt-splits"]["test"]["sha256"]
    assert built["rt-test"]["n"] == len(test) == 853
    sub = built["rt-test-3words"]
    assert sub["n"] == 200 and set(sub["ids"]) <= set(built["rt-test"]["ids"])


def test_dumps_is_json_and_stable(built):
    for manifest in built.values():
        text = manifests.dumps(manifest)
        assert json.loads(text) == manifest and manifests.dumps(json.loads(text)) == text


def test_stale_finds_changed_missing_and_extra_files(tmp_path, built):
    some = {k: built[k] for k in ("rt-splits", "keyword-04")}
    manifests.write(tmp_path, built=some)
    assert manifests.stale(tmp_path, built=some) == []
    path = tmp_path / "keyword-04.json"
    path.write_text(path.read_text().replace('"n_positive": 113', '"n_positive": 112'))
    (tmp_path / "old-set.json").write_text("{}")
    (tmp_path / "rt-splits.json").unlink()
    assert sorted(manifests.stale(tmp_path, built=some)) == ["keyword-04", "old-set", "rt-splits"]
