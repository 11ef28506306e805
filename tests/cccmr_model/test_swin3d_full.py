"""Full-size Video Swin-T checks against torchvision and timm (random weights): heavy on 2 cores, marked slow."""

from __future__ import annotations

import pytest
import timm
import torch
from test_swin3d import TINY, to_official  # same folder (pytest prepends it to sys.path)
from torchvision.models.video import swin3d_t

from cccmr_model.swin3d import load_pretrained, swin3d_tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    torch.manual_seed(0)
    ref = swin3d_t()
    ref.head = torch.nn.Identity()
    return ref.eval()


@pytest.mark.parametrize("shape", [(2, 3, 16, 224, 224), (1, 3, 6, 224, 224)])
def test_torchvision_parity_swin3d_t(reference, shape):
    model = swin3d_tiny().eval()
    assert load_pretrained(model, reference.state_dict()).format == "torchvision-swin3d"
    x = torch.randn(shape)
    with torch.no_grad():
        assert (reference(x) - model(x)).abs().max() <= 1e-4


def test_official_parity_swin3d_t(reference):
    model = swin3d_tiny().eval()
    state = to_official(reference.state_dict())
    state["state_dict"]["cls_head.fc_cls.weight"] = torch.zeros(400, 768)
    assert load_pretrained(model, state).format == "video-swin"
    x = torch.randn(1, 3, 6, 224, 224)
    with torch.no_grad():
        assert (reference(x) - model(x)).abs().max() <= 1e-4


def test_inflated_swin_tiny_patch4_window7_224():
    torch.manual_seed(0)
    m2d = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0).eval()
    model = swin3d_tiny().eval()
    assert load_pretrained(model, m2d.state_dict()).format == "swin2d-timm"
    frame = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        want = m2d(frame)
        got = model(frame[:, :, None].expand(-1, -1, 16, -1, -1))
    assert (want - got).abs().max() <= 1e-4


def test_torch_compile_same_output():
    torch.manual_seed(0)
    model = swin3d_tiny(**TINY).eval()
    compiled = torch.compile(model)
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        assert (compiled(x) - model(x)).abs().max() <= 1e-5
