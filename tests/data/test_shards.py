"""WebDataset tar shards: is_shard_source, shard_members (index, cache, damage), write_shards, CLI.

The reader is lam_fast.data.shards, the writer lam_fast.data.shard_writer, the command
lam_fast.cli.data (the old lam_fast.data.shards names of the last two still resolve, deprecated).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import shutil
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lam_fast.data import VideoClipDataset, decode_clip, probe_video, resolve_sources
from lam_fast.cli.data import make_shards_main
from lam_fast.data import shards as shards_module
from lam_fast.data.shard_writer import write_shards
from lam_fast.data.shards import INDEX_SUFFIX, is_shard_source, shard_members
from lam_fast.errors import UserError

pytest.importorskip("webdataset")

PACKED = ("h264_24", "vp9_24", "portrait", "h264_30")
KEYS = ("000000_h264_24.mp4", "000001_vp9_24.webm", "000002_portrait.mp4", "000003_h264_30.mp4")
CLIP = {"num_frames": 4, "fps": 4.0, "image_size": 16}


@pytest.fixture
def packed(videos, tmp_path) -> list[str]:
    """The four PACKED videos in two shards of two: tmp_path/shards/train-00000{0,1}.tar."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return write_shards([videos[name] for name in PACKED], os.fspath(tmp_path / "shards" / "train-%06d.tar"),
                            max_count=2)


def pattern_of(packed: list[str], last: int = 1) -> str:
    return os.path.join(os.path.dirname(packed[0]), f"train-{{000000..{last:06d}}}.tar")


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


# write_shards, is_shard_source, shard_members ---------------------------------------------------


def test_round_trip_lists_members_in_order_and_decodes_like_the_files(videos, packed, read_frame_ids):
    folder = os.path.dirname(packed[0])
    assert packed == [os.path.join(folder, "train-000000.tar"), os.path.join(folder, "train-000001.tar")]
    assert packed.num_videos == 4 and packed.skipped == []
    assert is_shard_source(packed[0])
    assert is_shard_source(Path(pattern_of(packed)))
    assert is_shard_source(folder)

    members = shard_members(pattern_of(packed))
    assert [(m.shard, m.name) for m in members] == [
        (packed[0], KEYS[0]), (packed[0], KEYS[1]), (packed[1], KEYS[2]), (packed[1], KEYS[3])]
    assert shard_members(folder) == members == resolve_sources(pattern_of(packed))
    assert shard_members(packed[1]) == members[2:]

    for member, name in zip(members, PACKED):
        original = probe_video(videos[name])
        info = probe_video(member)
        assert info.member == member and info.path == f"{member.shard}::{member.name}"
        assert dataclasses.replace(info, path="", member=None) == dataclasses.replace(original, path="")
        from_shard = decode_clip(member, 0.4, 5, 6.0, 16)
        from_file = decode_clip(videos[name], 0.4, 5, 6.0, 16)
        assert read_frame_ids(from_shard) == read_frame_ids(from_file)
        assert torch.equal(from_shard, from_file)

    with tarfile.open(packed[0]) as tar:
        assert tar.getnames() == ["000000_h264_24.json", KEYS[0], "000001_vp9_24.json", KEYS[1]]
        meta = json.load(tar.extractfile("000001_vp9_24.json"))
    assert meta == {"path": os.fspath(videos["vp9_24"])}


def test_other_sources_are_not_shards(videos, packed, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text(f"{videos['h264_24']}\n")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(packed[0], mixed)
    shutil.copy(videos["h264_24"], mixed)
    for source in (videos["h264_24"], videos["h264_24"].parent, listing, mixed, [packed[0]],
                   tmp_path / "absent.tar", "absent-{0..3}.mp4", tmp_path / "empty_dir"):
        assert not is_shard_source(source), source
    assert resolve_sources(mixed) == [os.path.join(mixed, "h264_24.mp4")]  # a video folder


def test_write_shards_sanitises_keys_and_skips_missing_inputs(videos, tmp_path):
    odd = tmp_path / "my clip.v2.MP4"
    shutil.copy(videos["h264_24"], odd)
    with pytest.warns(UserWarning) as caught:
        written = write_shards([odd, tmp_path / "gone.mp4", tmp_path / "notes.txt"],
                               os.fspath(tmp_path / "out" / "s-%03d.tar"))
    assert [str(w.message) for w in caught if "skips" in str(w.message)] == [
        f"write_shards skips {os.fspath(tmp_path / 'gone.mp4')!r}: no such file",
        f"write_shards skips {os.fspath(tmp_path / 'notes.txt')!r}: extension 'txt' is not a video "
        "extension ['avi', 'm4v', 'mkv', 'mov', 'mp4', 'webm', 'y4m']"]
    assert written == [os.fspath(tmp_path / "out" / "s-000.tar")]
    assert written.num_videos == 1 and [name for name, _ in written.skipped] == [
        os.fspath(tmp_path / "gone.mp4"), os.fspath(tmp_path / "notes.txt")]
    assert [m.name for m in shard_members(written[0])] == ["000000_my_clip_v2.mp4"]
    with pytest.warns(UserWarning, match=r"wrote 1 shards .* but '.*s-001\.tar' also exists"):
        write_shards([odd, odd], os.fspath(tmp_path / "out" / "s-%03d.tar"), max_count=1)  # 2 shards
        write_shards([odd], os.fspath(tmp_path / "out" / "s-%03d.tar"))  # 1 shard: s-001 is stale
    with pytest.raises(ValueError, match="overwrite its input shard"):
        write_shards(shard_members(written[0]), os.fspath(tmp_path / "out" / "s-%03d.tar"))
    with pytest.raises(ValueError, match="% format"):
        write_shards([odd], os.fspath(tmp_path / "out" / "fixed.tar"))
    with pytest.raises(ValueError, match="must end in .tar"):
        write_shards([odd], os.fspath(tmp_path / "out" / "s-%03d.tar.gz"))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no video to write"):
        write_shards([tmp_path / "gone.mp4"], os.fspath(tmp_path / "none" / "s-%03d.tar"))
    assert not (tmp_path / "none").exists()


# The dataset over shards ------------------------------------------------------------------------


def test_dataset_over_shards_serves_the_same_clips_as_over_the_files(videos, packed):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_shards = VideoClipDataset(pattern_of(packed), **CLIP)
    from_files = VideoClipDataset([videos[name] for name in PACKED], **CLIP)
    assert from_shards.skipped == []
    assert [info.member.name for info in from_shards.videos] == list(KEYS)
    assert len(from_shards) == len(from_files) >= 8  # 2 or 3 slots per video
    for index in (0, 4, len(from_files) - 1, len(from_files) + 6):
        assert torch.equal(from_shards[index]["video"], from_files[index]["video"])


def test_corrupt_member_is_skipped_and_recorded(videos, tmp_path):
    shard = tmp_path / "bad.tar"
    noise = np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    with tarfile.open(shard, "w") as tar:
        add_member(tar, "a.mp4", videos["h264_24"].read_bytes())
        add_member(tar, "a.json", b"{}")
        add_member(tar, "x.mp4", noise)
        add_member(tar, "sub/y.cls", b"3")  # not a video
    with pytest.warns(UserWarning, match=r"skips .*bad\.tar::x\.mp4"):
        dataset = VideoClipDataset(shard, **CLIP)
    assert [info.member.name for info in dataset.videos] == ["a.mp4"]
    assert [name for name, _ in dataset.skipped] == [f"{shard}::x.mp4"]
    assert dataset[0] is not None


def test_truncated_shard_uses_what_is_readable(videos, packed, tmp_path):
    members = shard_members(packed[1])  # portrait, then h264_30
    cut = tmp_path / "cut.tar"
    cut.write_bytes(Path(packed[1]).read_bytes()[: members[1].offset + members[1].size // 2])
    with pytest.warns(UserWarning) as caught:
        dataset = VideoClipDataset(cut, **CLIP)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert messages[0].startswith(f"shard {os.fspath(cut)!r}: truncated: the file ends inside member "
                                  f"'{KEYS[3]}'")
    assert messages[1].startswith(f"VideoClipDataset skips '{cut}::{KEYS[3]}'")
    assert [info.member.name for info in dataset.videos] == [KEYS[2]]
    assert len(dataset.skipped) == 1
    name, reason = dataset.skipped[0]
    assert name == f"{cut}::{KEYS[3]}" and "truncated" in reason
    assert dataset[0] is not None


def test_garbage_between_members_stops_the_index_with_a_warning(packed, tmp_path):
    members = shard_members(packed[0])
    data = Path(packed[0]).read_bytes()
    end = members[0].offset + -(-members[0].size // 512) * 512
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(data[:end] + b"\xff" * 512 + data[end:])
    with pytest.warns(UserWarning, match=rf"damaged\.tar.*unreadable tar header at byte {end}"):
        assert shard_members(damaged) == [dataclasses.replace(members[0], shard=os.fspath(damaged))]
    random_file = tmp_path / "random.tar"
    random_file.write_bytes(b"\x01" * 4096)
    with pytest.warns(UserWarning, match="not a readable tar file"), \
            pytest.raises(ValueError, match="hold no video member"):
        shard_members(random_file)


# Refusals and the index cache --------------------------------------------------------------------


def test_compressed_shards_are_refused(packed, tmp_path):
    data = Path(packed[0]).read_bytes()
    (tmp_path / "z.tar.gz").write_bytes(gzip.compress(data))
    assert is_shard_source(tmp_path / "z.tar.gz")
    for source in (tmp_path / "z.tar.gz", tmp_path):
        with pytest.raises(ValueError, match=r"z\.tar\.gz.*must be uncompressed .tar files.*random access"):
            VideoClipDataset(source, **CLIP)
    (tmp_path / "disguised.tar").write_bytes(gzip.compress(data))
    with pytest.raises(ValueError, match=r"disguised\.tar' is gzip-compressed.*uncompressed"):
        shard_members(tmp_path / "disguised.tar")


def test_missing_shards_of_a_pattern_are_named(packed):
    with pytest.raises(ValueError, match=r"2 of the 4 shards .* do not exist: "
                                         r"'.*train-000002\.tar', '.*train-000003\.tar'"):
        resolve_sources(pattern_of(packed, last=3))


def test_index_is_cached_reused_and_rebuilt_when_the_shard_changes(packed, monkeypatch):
    shard = packed[0]
    index_file = Path(shard + INDEX_SUFFIX)
    assert not index_file.exists()  # write_shards leaves none
    members = shard_members(shard)
    cached = json.loads(index_file.read_text())
    assert cached["shard_size"] == os.stat(shard).st_size
    assert [name for name, _, _ in cached["members"]] == ["000000_h264_24.json", KEYS[0],
                                                          "000001_vp9_24.json", KEYS[1]]
    assert not [name for name in os.listdir(index_file.parent) if name.endswith(".tmp")]

    def no_indexing(*args):
        raise AssertionError("the shard was indexed again")

    with monkeypatch.context() as patch:
        patch.setattr(shards_module, "_index_tar", no_indexing)
        assert shard_members(shard) == members  # from the cache
    with tarfile.open(shard, "a") as tar:
        add_member(tar, "extra.webm", b"not decoded here")
    with monkeypatch.context() as patch:
        patch.setattr(shards_module, "_index_tar", no_indexing)
        with pytest.raises(AssertionError, match="indexed again"):
            shard_members(shard)
    assert [m.name for m in shard_members(shard)] == [KEYS[0], KEYS[1], "extra.webm"]
    assert json.loads(index_file.read_text())["shard_size"] == os.stat(shard).st_size

    # A read-only folder: no cache, same answer.
    def read_only(*args, **kwargs):
        raise PermissionError("read-only")

    index_file.unlink()
    monkeypatch.setattr(shards_module, "write_json_atomic", read_only)
    assert [m.name for m in shard_members(shard)] == [KEYS[0], KEYS[1], "extra.webm"]
    assert not index_file.exists()


# CLI ---------------------------------------------------------------------------------------------


def test_make_shards_cli_packs_a_folder(videos, tmp_path, capsys):
    source = tmp_path / "clips"
    (source / "deeper").mkdir(parents=True)
    for name in ("h264_24", "portrait", "h264_30"):
        shutil.copy(videos[name], source / videos[name].name)
    shutil.copy(videos["vp9_24"], source / "deeper" / videos["vp9_24"].name)
    (source / "notes.txt").write_text("not a video")
    out = tmp_path / "out" / "part-%03d.tar"
    assert make_shards_main(["--data", os.fspath(source), "--out", os.fspath(out), "--max-count", "3"]) == 0
    printed = capsys.readouterr()
    expected = [os.fspath(tmp_path / "out" / f"part-{i:03d}.tar") for i in range(2)]
    assert printed.out.split() == expected
    assert "4 videos in 2 shards" in printed.err
    assert [Path(m.name).name for m in shard_members(tmp_path / "out")] == [
        "000000_vp9_24.webm", "000001_h264_24.mp4",  # sorted paths: deeper/ first
        "000002_h264_30.mp4", "000003_portrait.mp4"]

    with pytest.raises(UserError, match="does not exist"):  # cli.main prints it as one line, exit 2
        make_shards_main(["--data", os.fspath(tmp_path / "absent"), "--out", os.fspath(out)])


def test_old_shards_paths_of_the_writer_resolve_with_a_deprecation_warning():
    import lam_fast.cli.data
    import lam_fast.data.shard_writer

    for name, new in (("write_shards", lam_fast.data.shard_writer), ("WrittenShards", lam_fast.data.shard_writer),
                      ("make_shards_main", lam_fast.cli.data)):
        with pytest.warns(DeprecationWarning, match=f"{new.__name__}.{name}"):
            assert getattr(shards_module, name) is getattr(new, name)
