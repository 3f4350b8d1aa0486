"""Video data: decoding (PyAV), clip datasets, data-parallel clip sampling, sample clips."""

from lam_fast.data.dataset import (
    VIDEO_EXTENSIONS,
    ClipBatchSampler,
    ClipItem,
    VideoClipDataset,
    collate_clips,
    make_dataloader,
    resolve_sources,
)
from lam_fast.data.samples import SAMPLE_CLIPS, fetch_samples
from lam_fast.data.video import VideoDecodeError, VideoInfo, decode_clip, probe_video

__all__ = [
    "SAMPLE_CLIPS",
    "VIDEO_EXTENSIONS",
    "ClipBatchSampler",
    "ClipItem",
    "VideoClipDataset",
    "VideoDecodeError",
    "VideoInfo",
    "collate_clips",
    "decode_clip",
    "fetch_samples",
    "make_dataloader",
    "probe_video",
    "resolve_sources",
]
