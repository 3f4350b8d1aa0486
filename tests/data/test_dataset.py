"""resolve_sources, VideoClipDataset, collate_clips, ClipBatchSampler and make_dataloader."""

from __future__ import annotations

import shutil
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch

from lam_fast.data import (
    ClipBatchSampler,
    VideoDecodeError,
    VideoClipDataset,
    collate_clips,
    make_dataloader,
    probe_video,
    resolve_sources,
)

GOOD = ("h264_24", "h264_30", "vp9_24", "mpeg4_25")
BROKEN = ("random", "empty", "truncated", "truncated_faststart", "truncated_one_gop")


@pytest.fixture
def folder(videos, tmp_path) -> Path:
    """A folder tree of 4 good 3 s videos, the broken ones, the 1 s ``short`` and a non-video."""
    for name in (*GOOD, *BROKEN, "short"):
        subdir = tmp_path / ("nested/deeper" if name in ("vp9_24", "empty") else "")
        subdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(videos[name], subdir / videos[name].name)
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "UPPER.MP4").write_bytes(videos["h264_24"].read_bytes())
    return tmp_path


def good_dataset(videos, **kwargs) -> VideoClipDataset:
    """A dataset of the four good 3 s videos (8 frames at 4 fps: 2 s slots, 1 slot each)."""
    options = {"num_frames": 8, "fps": 4.0, "image_size": 16} | kwargs
    return VideoClipDataset([videos[name] for name in GOOD], **options)


# resolve_sources ------------------------------------------------------------------------------


def test_folder_is_searched_recursively_by_extension(folder):
    found = resolve_sources(folder)
    names = sorted(Path(path).name for path in found)
    assert names == sorted(
        ["UPPER.MP4", "empty.mp4", "h264_24.mp4", "h264_30.mp4", "mpeg4_25.avi", "random.mp4",
         "short.mp4", "truncated.mp4", "truncated_faststart.mp4", "truncated_one_gop.mp4",
         "vp9_24.webm"]
    )
    assert found == sorted(found)


def test_csv_with_header_extra_columns_relative_paths_and_blank_lines(videos, tmp_path):
    (tmp_path / "clips").mkdir()
    shutil.copy(videos["h264_24"], tmp_path / "clips" / "a.mp4")
    listing = tmp_path / "list.csv"
    listing.write_text(
        f"label,path,notes\n"
        f"walk,clips/a.mp4,first\n"
        f"\n"
        f"run,{videos['h264_30']},\n"
        f",,\n"
        f"jump,clips/missing.mp4,gone\n"
    )
    assert resolve_sources(listing) == [
        str(tmp_path / "clips" / "a.mp4"), str(videos["h264_30"]), str(tmp_path / "clips" / "missing.mp4")
    ]


def test_csv_without_header_uses_the_first_column(videos, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text(f"{videos['h264_24']},x\n\nrel.mp4\n")
    assert resolve_sources(listing) == [str(videos["h264_24"]), str(tmp_path / "rel.mp4")]


def test_list_and_single_file_sources(videos):
    assert resolve_sources([videos["h264_24"], str(videos["h264_30"])]) == [
        str(videos["h264_24"]), str(videos["h264_30"])
    ]
    assert resolve_sources(videos["h264_24"]) == [str(videos["h264_24"])]


def test_bad_sources_raise_naming_the_source(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        resolve_sources(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="does not exist"):
        resolve_sources(tmp_path / "nowhere.csv")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match=r"empty_dir.*contains no file with a video extension"):
        resolve_sources(tmp_path / "empty_dir")
    (tmp_path / "blank.csv").write_text("path\n\n")
    with pytest.raises(ValueError, match=r"blank.csv.*names no video"):
        resolve_sources(tmp_path / "blank.csv")
    with pytest.raises(ValueError, match="empty"):
        resolve_sources([])


# VideoClipDataset construction ----------------------------------------------------------------


def test_dataset_skips_broken_and_short_files_with_one_warning_each(folder, videos):
    with pytest.warns(UserWarning) as caught:
        dataset = VideoClipDataset(folder, num_frames=8, fps=4.0, image_size=16)
    skipped = {Path(path).name: reason for path, reason in dataset.skipped}
    assert sorted(skipped) == sorted(
        [Path(videos[name]).name for name in (*BROKEN, "short")]
    )
    assert skipped["short.mp4"] == "shorter than one clip (1.000 s < 1.750 s)"
    assert "cannot open" in skipped["random.mp4"]
    assert "truncated?" in skipped["truncated_faststart.mp4"]
    assert len(caught) == len(dataset.skipped)
    for path, _ in dataset.skipped:
        assert sum(path in str(warning.message) for warning in caught) == 1
    assert len(dataset.videos) == 5  # GOOD + UPPER.MP4


def test_dataset_reports_missing_csv_entries(videos, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text(f"path\n{videos['h264_24']}\nmissing.mp4\n")
    with pytest.warns(UserWarning, match="missing.mp4"):
        dataset = VideoClipDataset(listing, num_frames=8, fps=4.0, image_size=16)
    assert [path for path, _ in dataset.skipped] == [str(tmp_path / "missing.mp4")]
    assert "No such file" in dataset.skipped[0][1]


def test_short_video_policy_threshold_is_the_clip_extent(videos):
    # ``short`` lasts 1.0 s; 5 frames at 4 fps span (5 - 1) / 4 = 1.0 s: just fits.
    dataset = VideoClipDataset([videos["short"]], num_frames=5, fps=4.0, image_size=16)
    assert len(dataset) == 1
    assert dataset[0]["video"].shape == (5, 3, 16, 16)
    with pytest.warns(UserWarning, match="shorter than one clip"), \
            pytest.raises(ValueError, match=r"no usable video.*all 1 skipped.*1\.000 s < 1\.250 s"):
        VideoClipDataset([videos["short"]], num_frames=6, fps=4.0, image_size=16)


def test_no_usable_video_raises_with_count_and_reasons(videos):
    with pytest.warns(UserWarning), \
            pytest.raises(ValueError, match=r"all 2 skipped.*random.mp4.*cannot open.*empty.mp4"):
        VideoClipDataset([videos["random"], videos["empty"]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"num_frames": 0}, "num_frames"), ({"fps": -1.0}, "fps"), ({"image_size": 0}, "image_size"),
     ({"seed": -1}, "seed")],
)
def test_dataset_validates_arguments(videos, kwargs, message):
    with pytest.raises(ValueError, match=message):
        VideoClipDataset([videos["h264_24"]], **kwargs)


def test_epoch_length_counts_slots_per_video(videos):
    # clip span T / fps: 4 frames at 4 fps = 1 s, so 3 s videos have 3 slots, 2.002 s has 2,
    # 2.999 s (vp9) has 2.
    dataset = VideoClipDataset([videos[name] for name in ("h264_24", "ntsc", "vp9_24")],
                               num_frames=4, fps=4.0, image_size=16)
    assert len(dataset) == 3 + 2 + 2
    # A video shorter than one span but longer than the clip extent still has one slot.
    assert len(good_dataset(videos, num_frames=12)) == 4  # span 3 s, extent 2.75 s


def test_clip_starts_stay_in_their_slot_and_the_valid_range(videos):
    dataset = VideoClipDataset([videos["h264_24"], videos["ntsc"]], num_frames=4, fps=4.0,
                               image_size=16)
    for index in range(5 * len(dataset)):
        info, start = dataset.clip_location(index)
        clip = index % len(dataset)
        slot, slots = (clip, 3) if clip < 3 else (clip - 3, 2)
        stratum = (info.duration - dataset.clip_extent) / slots
        assert slot * stratum <= start < (slot + 1) * stratum
        assert info.path == str(videos["h264_24" if clip < 3 else "ntsc"])


# VideoClipDataset items -----------------------------------------------------------------------


def test_items_are_deterministic_per_seed_and_index_and_vary_across_epochs(videos):
    first, second = good_dataset(videos, seed=3), good_dataset(videos, seed=3)
    other_seed = good_dataset(videos, seed=4)
    n = len(first)
    for index in (0, 3, 2 * n + 1):
        a, b = first[index], second[index]
        assert a["index"] == b["index"] == index
        assert torch.equal(a["video"], b["video"])
        assert a["video"].dtype == torch.uint8 and a["video"].shape == (8, 3, 16, 16)
    starts = [first.clip_location(clip + epoch * n)[1] for epoch in range(4) for clip in (0, 1)]
    assert len(set(starts)) == len(starts)  # new starts each epoch
    assert first.clip_location(0) != other_seed.clip_location(0)
    # Same video for a clip in every epoch.
    assert {first.clip_location(2 + epoch * n)[0] for epoch in range(4)} == {first.videos[2]}


def test_read_failure_returns_none_warns_once_and_counts(videos, tmp_path):
    path = tmp_path / "later_broken.mp4"
    shutil.copy(videos["h264_24"], path)
    dataset = VideoClipDataset([path, videos["h264_30"]], num_frames=8, fps=4.0, image_size=16)
    path.write_bytes(videos["random"].read_bytes())
    with pytest.warns(UserWarning, match=r"cannot read a clip of .*later_broken") as caught:
        assert dataset[0] is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a second failure of the same file must not warn
            assert dataset[len(dataset)] is None
    assert len(caught) == 1
    assert dataset.read_failures == 2
    assert dataset[1]["video"].shape == (8, 3, 16, 16)


def test_negative_index_is_rejected(videos):
    with pytest.raises(IndexError):
        good_dataset(videos)[-1]


# collate_clips --------------------------------------------------------------------------------


def test_collate_drops_none_and_counts():
    item = {"video": torch.zeros(4, 3, 8, 8, dtype=torch.uint8), "index": 7}
    batch = collate_clips([item, None, {"video": torch.ones(4, 3, 8, 8, dtype=torch.uint8),
                                        "index": 9}, None])
    assert batch["video"].shape == (2, 4, 3, 8, 8) and batch["video"].dtype == torch.uint8
    assert batch["index"].tolist() == [7, 9] and batch["index"].dtype == torch.int64
    assert batch["skipped"] == 2


def test_collate_of_only_failures_is_an_empty_batch():
    empty = collate_clips([None, None], clip_shape=(4, 3, 8, 8))
    assert empty["video"].shape == (0, 4, 3, 8, 8) and empty["video"].dtype == torch.uint8
    assert empty["index"].shape == (0,) and empty["skipped"] == 2
    assert collate_clips([None])["video"].shape == (0, 0, 3, 0, 0)


# ClipBatchSampler -----------------------------------------------------------------------------


def take(sampler: ClipBatchSampler, steps: int) -> list[list[int]]:
    iterator = iter(sampler)
    return [next(iterator) for _ in range(steps)]


def test_ranks_cover_each_epoch_exactly_once():
    num_clips, batch_size, world_size = 24, 3, 2
    steps_per_epoch = num_clips // (batch_size * world_size)
    ranks = [take(ClipBatchSampler(num_clips, batch_size, seed=5, rank=rank,
                                   world_size=world_size), 3 * steps_per_epoch)
             for rank in range(world_size)]
    for epoch in range(3):
        steps = range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
        per_rank = [[index for step in steps for index in ranks[rank][step]]
                    for rank in range(world_size)]
        assert not set(per_rank[0]) & set(per_rank[1])
        seen = sorted(per_rank[0] + per_rank[1])
        assert seen == list(range(epoch * num_clips, (epoch + 1) * num_clips))
    epoch_orders = [[i % num_clips for step in range(e * 4, e * 4 + 4) for i in ranks[0][step]]
                    for e in range(3)]
    assert epoch_orders[0] != epoch_orders[1]  # a new permutation every epoch


def test_ranks_interleave_one_global_stream():
    # Without divisibility (10 clips, 2 ranks x 3) the ranks still read one stream in order.
    single = take(ClipBatchSampler(10, 6, seed=1), 7)
    ranks = [take(ClipBatchSampler(10, 3, seed=1, rank=rank, world_size=2), 7) for rank in (0, 1)]
    assert [ranks[0][s] + ranks[1][s] for s in range(7)] == single
    counts = Counter(index % 10 for batch in single[:5] for index in batch)  # 30 positions
    assert set(counts.values()) == {3}


def test_resume_from_start_step_continues_the_stream():
    full = take(ClipBatchSampler(13, 4, seed=2, rank=1, world_size=3), 20)
    resumed = take(ClipBatchSampler(13, 4, seed=2, rank=1, world_size=3, start_step=12), 8)
    assert resumed == full[12:]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [((0, 1), {}, "num_clips"), ((4, 0), {}, "batch_size"), ((4, 1), {"seed": -1}, "seed"),
     ((4, 1), {"rank": 2, "world_size": 2}, "rank"), ((4, 1), {"world_size": 0}, "world_size"),
     ((4, 1), {"start_step": -1}, "start_step")],
)
def test_sampler_validates_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClipBatchSampler(*args, **({"seed": 0} | kwargs))


# make_dataloader ------------------------------------------------------------------------------


def test_dataloader_batches_do_not_depend_on_workers(videos):
    dataset = good_dataset(videos, num_frames=4, image_size=16)
    batches = {}
    for workers in (0, 2):
        loader = make_dataloader(dataset, batch_size=3, seed=7, num_workers=workers,
                                 start_step=1)
        iterator = iter(loader)
        batches[workers] = [next(iterator) for _ in range(4)]
    expected = take(ClipBatchSampler(len(dataset), 3, seed=7, start_step=1), 4)
    for serial, parallel, indices in zip(batches[0], batches[2], expected, strict=True):
        assert serial["index"].tolist() == parallel["index"].tolist() == indices
        assert torch.equal(serial["video"], parallel["video"])
        assert serial["video"].shape == (3, 4, 3, 16, 16)
        assert serial["skipped"] == parallel["skipped"] == 0


def test_parallel_probing_keeps_the_order_and_the_skip_reasons(videos):
    from lam_fast.data.dataset import _probe_all

    names = ["h264_24", "random", "vp9_24", "empty", "h264_30", "truncated"]
    results = _probe_all([videos[name] for name in names])
    for name, result in zip(names, results, strict=True):
        if name in BROKEN:
            assert isinstance(result, VideoDecodeError)
        else:
            assert result == probe_video(videos[name])
