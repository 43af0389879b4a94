"""Tests of mmutils.video: the clips and their labels, the four video encoders, the classifier, bad inputs."""
import pytest
import torch
import torch.nn.functional as F

from mmutils import video, world


@pytest.fixture(scope="module")
def clips():
    return video.make_clips(40, still=0.25, seed=3)


def _centroids(videos):
    """(n, T, 2) centre (x, y) of the pixels that differ from the background (the median colour)."""
    bg = videos.flatten(-2).median(dim=-1).values[..., None, None]  # (n, T, 3, 1, 1)
    mask = ((videos - bg).abs().sum(dim=2) > 0.1).float()  # (n, T, H, W)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    area = mask.sum(dim=(2, 3))
    return torch.stack([(mask * xs).sum(dim=(2, 3)) / area, (mask * ys).sum(dim=(2, 3)) / area], dim=-1)


# ---- make_clips ---------------------------------------------------------------

def test_make_clips_shapes_and_counts(clips):
    assert clips["videos"].shape == (40, 8, 3, 32, 32) and clips["videos"].dtype == torch.float32
    assert 0.0 <= clips["videos"].min() and clips["videos"].max() <= 1.0
    assert clips["spectrograms"].shape == (40, 65, 32)
    assert (clips["motions"] == video.MOTIONS.index("still")).sum() == 10  # round(0.25 * 40)
    assert len(clips["captions"]) == len(clips["sequences"]) == 40


def test_make_clips_labels_follow_the_pixels(clips):
    step = _centroids(clips["videos"]).diff(dim=1).mean(dim=1)  # (n, 2) mean motion in pixels per frame
    for (dx, dy), m in zip(step.tolist(), clips["motions"].tolist()):
        expected = {"left": (-1.6, 0), "right": (1.6, 0), "up": (0, -1.6), "down": (0, 1.6), "still": (0, 0)}
        ex, ey = expected[video.MOTIONS[m]]
        assert abs(dx - ex) < 0.5 and abs(dy - ey) < 0.5, (video.MOTIONS[m], dx, dy)


def test_make_clips_still_clips_repeat_one_frame_and_have_no_mover(clips):
    still = clips["motions"] == video.MOTIONS.index("still")
    v = clips["videos"][still]
    assert torch.equal(v, v[:, :1].expand_as(v))
    assert (clips["movers"][still] == -1).all() and (clips["movers"][~still] >= 0).all()
    assert all((c is None) == bool(s) for c, s in zip(clips["captions"], still.tolist()))


def test_make_clips_captions_and_movers_name_the_moving_object(clips):
    for c, s, m, k in zip(clips["captions"], clips["sequences"], clips["motions"].tolist(),
                          clips["movers"].tolist()):
        if c is None:
            continue
        mover = s.scene.objects[0]
        assert k == world.COLORS.index(mover.color)
        assert world.motion_caption(world.Scene((mover,)), s.velocities[:1], canonical=True).endswith(
            f"moves {video.MOTIONS[m]}")
        assert video.MOTIONS[m] in c  # "left", "to the left"; "down", "downwards"
        assert c.startswith("the ") and mover.color in c


def test_make_clips_other_objects_stand_still():
    data = video.make_clips(10, objects=2, still=0.0, seed=1)
    for s in data["sequences"]:
        assert (s.positions[:, 1] == s.positions[0, 1]).all()  # the second object never moves
        assert (s.positions[-1, 0] != s.positions[0, 0]).any()  # the first does


def test_make_clips_is_deterministic():
    a, b = video.make_clips(5, seed=7), video.make_clips(5, seed=7)
    assert torch.equal(a["videos"], b["videos"]) and a["captions"] == b["captions"]
    assert not torch.equal(a["videos"], video.make_clips(5, seed=8)["videos"])


# ---- encoders -------------------------------------------------------------------

def _videos(b=3, t=8, seed=0):
    return torch.rand(b, t, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


ENCODERS = [video.FrameAveraging, video.FrameDifferences, video.Conv2Plus1D, video.SpaceTimeTransformer]


@pytest.mark.parametrize("cls", ENCODERS, ids=lambda c: c.__name__)
def test_encoders_map_clips_to_vectors(cls):
    torch.manual_seed(0)
    assert cls(dim=16).eval()(_videos()).shape == (3, 16)


def test_frame_averaging_ignores_the_order_of_frames():
    torch.manual_seed(0)
    model, x = video.FrameAveraging().eval(), _videos()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x.flip(1)))
        torch.testing.assert_close(model(x), model(x[:, torch.randperm(8)]))
        # the plain definition: the mean of the per-frame features
        torch.testing.assert_close(model(x), torch.stack([model.frame_encoder(x[:, t]) for t in range(8)]).mean(0))


@pytest.mark.parametrize("cls", ENCODERS[1:], ids=lambda c: c.__name__)
def test_temporal_encoders_see_the_order_of_frames(cls):
    torch.manual_seed(0)
    model, x = cls().eval(), _videos()
    with torch.no_grad():
        assert (model(x) - model(x.flip(1))).abs().max() > 1e-4


def test_frame_differences_stack_frames_and_differences():
    model = video.FrameDifferences(frames=4)
    assert model.encoder.in_channels == 3 * 7
    seen = {}
    model.encoder.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    x = _videos(b=2, t=4)
    model(x)
    expected = torch.cat([x, x[:, 1:] - x[:, :-1]], dim=1).flatten(1, 2)  # (2, 21, 32, 32)
    torch.testing.assert_close(seen["x"], expected)


def test_conv2plus1d_factorizes_space_then_time():
    model = video.Conv2Plus1D(widths=(4, 8))
    kernels = [m.kernel_size for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert kernels == [(1, 3, 3), (3, 1, 1), (1, 3, 3), (3, 1, 1)]
    strides = [m.stride for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert strides == [(1, 2, 2), (1, 1, 1), (1, 2, 2), (1, 1, 1)]  # time keeps its length
    with torch.no_grad():
        fmap = model.stages(_videos(b=1, t=6).transpose(1, 2))
    assert fmap.shape == (1, 8, 6, 8, 8)  # (B, C, T, H / 4, W / 4)


def _conv_weights(model):
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv3d))


def test_r2plus1d_mid_width_follows_the_paper():
    # Tran et al. (2018), eq. 1, by hand: 3 * 9 * 64 * 64 / (9 * 64 + 3 * 64) = 144
    assert video.r2plus1d_mid_width(64, 64) == 144
    assert video.r2plus1d_mid_width(3, 8) == 12  # floor(648 / 51) = floor(12.7)
    for c_in, c_out in [(3, 64), (64, 128), (128, 256), (16, 32)]:
        m = video.r2plus1d_mid_width(c_in, c_out)
        full, factored, wider = 27 * c_in * c_out, 9 * c_in * m + 3 * m * c_out, 9 * c_in + 3 * c_out
        assert factored <= full < factored + wider  # as many weights as 3x3x3, to one more channel


def test_conv2plus1d_matched_has_the_weights_of_a_3d_network():
    widths = (8, 16, 32)
    full = sum(27 * c * w for c, w in zip((3, *widths[:-1]), widths))  # 3x3x3 kernels
    plain, matched = video.Conv2Plus1D(widths=widths), video.Conv2Plus1D(widths=widths, matched=True)
    assert _conv_weights(plain) == sum(9 * c * w + 3 * w * w for c, w in zip((3, *widths[:-1]), widths))
    assert _conv_weights(plain) < 0.6 * full and 0.95 * full < _conv_weights(matched) <= full
    middle = [m.out_channels for m in matched.modules() if isinstance(m, torch.nn.Conv3d)][::2]
    assert middle == [12, 28, 57]
    torch.manual_seed(0)
    assert matched.eval()(_videos()).shape == (3, 32)


def _time_attention_loop(block, x):
    """Temporal attention one place at a time: a plain reference for attend_time."""
    out = x.clone()
    for n in range(x.shape[2]):
        h = block.norm_time(x[:, :, n])  # (B, T, D)
        out[:, :, n] = x[:, :, n] + block.time_attn(h, h, h, need_weights=False)[0]
    return out


def _space_attention_loop(block, x):
    out = x.clone()
    for t in range(x.shape[1]):
        h = block.norm_space(x[:, t])  # (B, N, D)
        out[:, t] = x[:, t] + block.space_attn(h, h, h, need_weights=False)[0]
    return out


def test_divided_attention_matches_a_loop_over_places_and_frames():
    torch.manual_seed(0)
    block = video.DividedSpaceTimeBlock(dim=8, heads=2).eval()
    x = torch.randn(2, 5, 6, 8)  # (B, T, N, D)
    with torch.no_grad():
        torch.testing.assert_close(block.attend_time(x), _time_attention_loop(block, x))
        torch.testing.assert_close(block.attend_space(x), _space_attention_loop(block, x))
        h = _space_attention_loop(block, _time_attention_loop(block, x))
        torch.testing.assert_close(block(x), h + block.mlp(block.norm_mlp(h)))


def test_divided_attention_attends_within_a_place_then_within_a_frame():
    torch.manual_seed(0)
    block = video.DividedSpaceTimeBlock(dim=8, heads=2).eval()
    x = torch.randn(1, 5, 6, 8)
    y = x.clone()
    y[0, 2, 4] += 1.0  # frame 2, region 4
    with torch.no_grad():
        in_time = (block.attend_time(x) - block.attend_time(y)).abs().amax(dim=(0, 3)) > 0  # (T, N)
        in_space = (block.attend_space(x) - block.attend_space(y)).abs().amax(dim=(0, 3)) > 0
    expected_time = torch.zeros(5, 6, dtype=torch.bool)
    expected_time[:, 4] = True
    expected_space = torch.zeros(5, 6, dtype=torch.bool)
    expected_space[2] = True
    assert torch.equal(in_time, expected_time) and torch.equal(in_space, expected_space)


def test_space_time_transformer_sees_the_order_only_through_its_frame_embeddings():
    torch.manual_seed(0)
    model = video.SpaceTimeTransformer(frames=4, layers=2).eval()
    assert len(model.blocks) == 2 and model.time_pos.shape == (1, 4, 1, 32) and model.space_pos.shape == (1, 1, 16, 32)
    x, order = _videos(t=4), torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        assert (model(x) - model(x[:, order])).abs().max() > 1e-4
        model.time_pos.zero_()  # attention is equivariant to the frames' order, the mean over tokens invariant
        torch.testing.assert_close(model(x), model(x[:, order]))


def test_clip_classifier_loss_skips_missing_targets():
    torch.manual_seed(0)
    model = video.ClipClassifier(video.FrameAveraging(dim=8), {"motion": 5, "mover": 6})
    x = _videos(b=4)
    motion, mover = torch.tensor([0, 1, 4, 2]), torch.tensor([3, 0, -1, 5])
    model.eval()
    with torch.no_grad():
        logits = model(x)
        assert logits["motion"].shape == (4, 5) and logits["mover"].shape == (4, 6)
        expected = F.cross_entropy(logits["motion"], motion) + F.cross_entropy(logits["mover"][[0, 1, 3]],
                                                                               mover[[0, 1, 3]])
        torch.testing.assert_close(model.loss(x, {"motion": motion, "mover": mover}), expected)


# ---- bad input: one test per kind of mistake ------------------------------------

def test_videos_must_be_a_tensor():
    with pytest.raises(TypeError, match="videos must be a torch.Tensor"):
        video.FrameAveraging()(_videos().numpy())


def test_videos_must_have_five_dimensions():
    with pytest.raises(ValueError, match="videos must have 5 dimensions"):
        video.Conv2Plus1D()(_videos()[0])


def test_videos_must_have_three_channels():
    with pytest.raises(ValueError, match="videos must have size 3 in dimension 2"):
        video.FrameAveraging()(torch.rand(2, 8, 1, 32, 32))


def test_videos_must_be_float():
    with pytest.raises(TypeError, match="videos must be a floating-point tensor"):
        video.FrameAveraging()((_videos() * 255).to(torch.uint8))


def test_videos_must_have_the_model_frame_count():
    with pytest.raises(ValueError, match="videos must have size 8 in dimension 1"):
        video.FrameDifferences(frames=8)(_videos(t=6))
    with pytest.raises(ValueError, match="videos must have size 8 in dimension 1"):
        video.SpaceTimeTransformer(frames=8)(_videos(t=6))


def test_space_time_transformer_needs_32_pixel_frames():
    with pytest.raises(ValueError, match="videos must have size 32 in dimension 3"):
        video.SpaceTimeTransformer()(torch.rand(1, 8, 3, 64, 64))


def test_tokens_must_have_four_dimensions():
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        video.DividedSpaceTimeBlock(dim=8, heads=2)(torch.rand(2, 5, 8))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"in_channels": 0, "out_channels": 8}, ValueError, "in_channels must be an int in"),
    ({"in_channels": 3, "out_channels": 8.0}, TypeError, "out_channels must be an int"),
    ({"in_channels": 3, "out_channels": 8, "t": 0}, ValueError, "t must be an int in"),
])
def test_r2plus1d_mid_width_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        video.r2plus1d_mid_width(**kwargs)


def test_conv2plus1d_matched_must_be_a_bool():
    with pytest.raises(TypeError, match="matched must be"):
        video.Conv2Plus1D(matched="yes")


def test_heads_must_divide_dim():
    with pytest.raises(ValueError, match="dim must be divisible by heads"):
        video.DividedSpaceTimeBlock(dim=10, heads=4)


def test_transformer_widths_need_three_stages():
    with pytest.raises(ValueError, match="widths must give 3 stages"):
        video.SpaceTimeTransformer(widths=(8, 16))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"n": 0}, ValueError, "n must be an int in"),
    ({"n": 2.0}, TypeError, "n must be an int"),
    ({"n": 4, "frames": 1}, ValueError, "frames must be an int in"),
    ({"n": 4, "objects": 0}, ValueError, "objects must be an int in"),
    ({"n": 4, "still": 1.5}, ValueError, "still must be a number in"),
    ({"n": 4, "still": "half"}, TypeError, "still must be a number"),
])
def test_make_clips_rejects_bad_arguments(kwargs, error, message):
    n = kwargs.pop("n")
    with pytest.raises(error, match=message):
        video.make_clips(n, **kwargs)


def test_classifier_heads_must_be_a_nonempty_mapping_of_class_counts():
    with pytest.raises(TypeError, match="heads must be"):
        video.ClipClassifier(video.FrameAveraging(), [("motion", 5)])
    with pytest.raises(ValueError, match="heads must name at least one head"):
        video.ClipClassifier(video.FrameAveraging(), {})
    with pytest.raises(ValueError, match=r"heads\['motion'\] must be an int in"):
        video.ClipClassifier(video.FrameAveraging(), {"motion": 1})
    with pytest.raises(TypeError, match="encoder must be"):
        video.ClipClassifier("cnn", {"motion": 5})
