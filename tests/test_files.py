import pytest

from fastmnist.files import atomic_open


def test_atomic_open_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "sub" / "data.bin"
    with atomic_open(target) as f:
        f.write(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write(b"half of the sec")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"first"
    assert [p.name for p in target.parent.iterdir()] == ["data.bin"]
