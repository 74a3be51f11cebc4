"""raycf.cache: content keys, atomic publish, corrupted entries detected and dropped."""
import pytest

from raycf import cache


def test_key_is_stable_and_order_sensitive():
    assert cache.key("stage", {"lr": 1e-3, "r": 8}, ["a", "b"]) == cache.key("stage", {"r": 8, "lr": 1e-3}, ["a", "b"])
    assert cache.key("stage", ["a", "b"]) != cache.key("stage", ["b", "a"])


def test_publish_then_lookup_then_corruption_is_recomputed(tmp_path):
    path = cache.entry_dir(tmp_path, "stages", "k1")
    assert cache.lookup(path) is None
    tmp = cache.staging_dir(path)
    (tmp / "adapter.bin").write_bytes(b"\x01" * 100)
    (tmp / "result.json").write_text('{"stage": 1}')
    cache.publish(tmp, path)
    assert cache.lookup(path) == path and cache.read_json(path) == {"stage": 1}
    assert not any(p.name.endswith(".tmp") for p in path.parent.iterdir())
    (path / "adapter.bin").write_bytes(b"\x01" * 99 + b"\x02")  # one flipped byte
    assert cache.lookup(path) is None and not path.exists()


def test_entry_without_manifest_is_not_an_entry(tmp_path):
    path = cache.entry_dir(tmp_path, "stages", "k2")
    path.mkdir(parents=True)
    (path / "result.json").write_text("{}")
    assert cache.lookup(path) is None


def test_losing_a_publish_race_keeps_the_first_entry(tmp_path):
    path = cache.entry_dir(tmp_path, "probes", "k3")
    for content in ("first", "second"):
        tmp = cache.staging_dir(path)
        (tmp / "result.json").write_text(f'"{content}"')
        cache.publish(tmp, path)
    assert cache.read_json(path) == "first"
    assert [p.name for p in path.parent.iterdir()] == ["k3"]


def test_disk_full_while_writing_keeps_the_previous_entry_and_says_so(tmpfs):
    small_disk = tmpfs("1m")
    import torch
    from safetensors.torch import load_file, save_file
    first = cache.entry_dir(small_disk, "stages", "k1")
    with cache.writing(first) as tmp:
        save_file({"w": torch.arange(1000, dtype=torch.float32)}, str(tmp / "adapter.safetensors"))
    second = cache.entry_dir(small_disk, "stages", "k2")
    with pytest.raises(cache.StorageFull) as e:
        with cache.writing(second) as tmp:  # 4 MB of weights into what is left of 1 MiB
            save_file({"w": torch.zeros(1 << 20)}, str(tmp / "adapter.safetensors"))
    assert str(e.value).startswith(f"no space left on the disk of {first.parent} while writing stages/k2; "
                                   "entries written before are intact")
    assert sorted(p.name for p in first.parent.iterdir()) == ["k1"]  # no half-written staging folder left
    assert cache.lookup(first) == first
    assert torch.equal(load_file(str(first / "adapter.safetensors"))["w"], torch.arange(1000, dtype=torch.float32))
