"""Every video model: forward and backward on a small clip; the synchrony loss; the registry."""

import math

import pytest
import torch

from harmonia.models.tracking import CVRNN, synchrony_loss
from harmonia.models.video import build_video_model, video_model_names

SMALL = {"int": "int:channels=4,kernel=3", "cv_rnn": "cv_rnn:channels=4,kernel=3", "gru": "gru:channels=4"}


@pytest.mark.parametrize("name", ["int", "cv_rnn", "gru", "r3d_18", "mc3_18", "r2plus1d_18"])
def test_forward_backward_small_clip(name):
    torch.manual_seed(0)
    model = build_video_model(SMALL.get(name, name))
    video = torch.rand(2, 3, 4, 32, 32)
    if model.uses_masks:
        logits, phases = model(video, return_phases=True)
        extra = synchrony_loss(phases, torch.randint(0, 5, (2, 4, 32, 32)))
    else:
        logits, extra = model(video), 0.0
    assert logits.shape == (2,) and torch.isfinite(logits).all()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 1.0])) + extra
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_published_sizes_and_registry():
    assert set(video_model_names()) >= {"int", "cv_rnn", "gru", "r3d_18", "mc3_18", "r2plus1d_18"}
    m = build_video_model("int")
    assert m.channels == 32 and m.cell.w_inh.kernel_size == (7, 7)
    w = m.cell.w_inh.weight.reshape(32, -1)
    assert torch.allclose(w @ w.T, torch.eye(32), atol=1e-4)  # orthogonal init
    assert m.cell.bn_inh.track_running_stats is False
    with pytest.raises(ValueError, match="unknown video model"):
        build_video_model("int3d")
    with pytest.raises(ValueError, match="kernel odd"):
        build_video_model("int:kernel=4")
    with pytest.raises(ValueError, match="expected videos"):
        m(torch.rand(2, 3, 32, 32))


def test_synchrony_loss_rewards_grouping_and_trains_phases():
    masks = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    masks[..., :2] = 3
    masks[..., 2:] = 4
    grouped = torch.where(masks == 3, 0.5, 0.5 + math.pi).float()
    random = torch.rand(1, 1, 4, 4) * 2 * math.pi
    assert synchrony_loss(grouped, masks) < 1e-3 < synchrony_loss(random, masks)
    torch.manual_seed(0)
    model = CVRNN(channels=4, kernel=3)
    logits, phases = model(torch.rand(2, 3, 3, 16, 16), return_phases=True)
    assert phases.shape == (2, 3, 16, 16)
    loss = synchrony_loss(phases, torch.randint(0, 5, (2, 3, 16, 16)))
    loss.backward()
    assert model.phase_conv.conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["int", "cv_rnn", "gru"])
def test_marker_readout_option_trains(name):
    torch.manual_seed(0)
    model = build_video_model(SMALL[name] + ",readout=marker")
    assert type(model.readout).__name__ == "MarkerPoolReadout"
    assert type(build_video_model(SMALL[name]).readout).__name__ == "MarkerReadout"  # the paper's stays the default
    video = torch.rand(2, 3, 3, 16, 16)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(video), torch.tensor([0.0, 1.0]))
    loss.backward()
    assert model.cell is not None and any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.cell.parameters())
    with pytest.raises(ValueError, match="readout must be one of"):
        build_video_model(SMALL[name] + ",readout=mean")


def test_marker_readout_reads_the_state_at_the_end_marker_only():
    from harmonia.models.tracking import MarkerPoolReadout

    torch.manual_seed(0)
    readout = MarkerPoolReadout(2).eval()
    video = torch.zeros(1, 3, 2, 16, 16)
    video[:, 2, :, 3:6, 3:6] = 1.0  # the blue end marker (filled: the dilation covers its centre anyway)
    video[:, 2, :, 4, 4] = 0.0
    state = torch.zeros(1, 2, 16, 16)
    base = readout(state, video)
    far = state.clone()
    far[..., 12:, 12:] = 5.0  # activity away from the marker: ignored
    near = state.clone()
    near[..., 4, 4] = 5.0  # the dot inside the marker
    assert torch.equal(readout(far, video), base)
    assert not torch.allclose(readout(near, video), base)
