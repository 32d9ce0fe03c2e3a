"Tests of the exported timer1_lib.video module (the notebook nbs/03_video.ipynb holds the full test-suite)."
import os, time
import pytest
import torch

from timer1_lib.video import (ClipWindowError, FrameCache, VideoDecodeError, VideoNotFoundError, VideoSamplingConfig,
                              decode_video, load_video, processor_video_kwargs, synthetic_frame_index,
                              write_synthetic_video)
from timer1_lib.data import asset_path


@pytest.fixture(scope="module")
def v20(tmp_path_factory):
    return write_synthetic_video(tmp_path_factory.mktemp("v") / "v20.mp4", 20, fps=4)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_clip_window_frames_and_timestamps(v20, backend):
    c = decode_video(v20, clip=(5.0, 15.0), backend=backend)
    assert (c.nframes, c.start_frame, c.total_num_frames, c.decoder) == (20, 20, 40, backend)
    assert [synthetic_frame_index(f) for f in c.frames] == [20 + i for i in c.frames_indices]
    assert c.timestamps[0] == 0.0 and c.timestamps[-1] == pytest.approx(9.75)
    assert c.fps == pytest.approx(2.0) and c.duration == pytest.approx(10.0)


def test_ohofg_decoders_agree():
    a, b = (decode_video(asset_path("OHOFG.mp4"), backend="decord"),
            decode_video(asset_path("OHOFG.mp4"), backend="pyav"))
    assert (a.nframes, a.size) == (70, (196, 364))
    assert a.timestamps == b.timestamps and a.frames_indices == b.frames_indices
    assert (a.frames.float() - b.frames.float()).abs().mean() < 3


def test_errors(tmp_path, v20):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(os.urandom(20_000))
    with pytest.raises(VideoDecodeError, match=r"bad\.mp4.*decord: .*pyav: "):
        decode_video(bad)
    with pytest.raises(VideoNotFoundError, match="missing.mp4"):
        load_video(tmp_path / "missing.mp4", cache=tmp_path / "c")
    with pytest.raises(FileNotFoundError):
        load_video(tmp_path / "missing.mp4", cache=None)
    with pytest.raises(ClipWindowError, match="starts after the end"):
        load_video(v20, clip=(30, 40), cache=None)


def test_cache_hit_and_invalidation(tmp_path):
    v = write_synthetic_video(tmp_path / "v.mp4", 6, fps=4)
    cfg = VideoSamplingConfig(size=(56, 56))
    a = load_video(v, config=cfg, cache=FrameCache(tmp_path / "c"))
    b = load_video(v, config=cfg, cache=FrameCache(tmp_path / "c", max_memory_bytes=0))
    assert (a.from_cache, b.from_cache, b.cache_level) == (False, True, "disk")
    assert torch.equal(a.frames, b.frames) and b.size == (56, 56) and b.timestamps == a.timestamps
    os.utime(v, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert not load_video(v, config=cfg, cache=FrameCache(tmp_path / "c")).from_cache


def test_processor_kwargs(v20):
    c = load_video(v20, cache=None)
    kw = processor_video_kwargs(c)
    assert kw["do_sample_frames"] is False and kw["do_resize"] is False and kw["videos"][0] is c.frames
    md = kw["video_metadata"][0]
    assert md.sampled_fps == pytest.approx(c.fps) and md.total_num_frames == 80
    assert 2 / md.sampled_fps == pytest.approx(c.second_per_grid_ts())
