import pytest

from pulse.io import CheckpointError, read_json_object


def test_read_json_object_returns_the_object(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"model_type": "pulse", "n": 3}')
    assert read_json_object(path, "unused") == {"model_type": "pulse", "n": 3}


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no a.json here"),  # missing: the caller's message
        ("{not json", r"a\.json: not valid JSON"),
        (b"\xff\xfe\x00garbage", r"a\.json: not valid JSON"),
        ("[1, 2]", r"a\.json: expected a JSON object, got list"),
    ],
)
def test_read_json_object_refuses_what_is_not_an_object(tmp_path, content, message):
    path = tmp_path / "a.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(CheckpointError, match=message):
        read_json_object(path, "no a.json here")
