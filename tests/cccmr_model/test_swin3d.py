"""Video Swin encoder: shapes, no buffers, torchvision/official/2D-inflation parity on tiny configs, loader errors."""

from __future__ import annotations

import re

import pytest
import timm
import torch
from torchvision.models.video.swin_transformer import SwinTransformer3d as TorchvisionSwin3d

from cccmr_model import swin3d_attention
from cccmr_model.swin3d import (
    WeightsError,
    flat_relative_position_index,
    load_pretrained,
    swin3d_base,
    swin3d_small,
    swin3d_tiny,
    window_order,
    window_partition,
)
from cccmr_model.swin3d_attention import (
    fused_attention_applies,
    masked_windows,
    permute_tokens,
    window_attention_fused,
)

TINY = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=(4, 4, 4), drop_path_rate=0.0)


def tiny_model(**kwargs) -> torch.nn.Module:
    return swin3d_tiny(**{**TINY, **kwargs})


def torchvision_tiny() -> TorchvisionSwin3d:
    torch.manual_seed(0)
    ref = TorchvisionSwin3d(
        patch_size=[2, 4, 4], embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=[4, 4, 4]
    )
    ref.head = torch.nn.Identity()
    return ref.eval()


def to_official(tv_state: dict[str, torch.Tensor]) -> dict:
    """torchvision key names -> the official mmaction checkpoint layout (`state_dict`, `backbone.`, `cls_head`)."""
    out = {}
    for key, value in tv_state.items():
        m = re.match(r"features\.(\d+)\.(\d+)\.(.*)", key)
        if m:
            rest = m[3].replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
            key = f"layers.{int(m[1]) // 2}.blocks.{m[2]}.{rest}"
        elif m := re.match(r"features\.(\d+)\.(.*)", key):
            key = f"layers.{int(m[1]) // 2}.downsample.{m[2]}"
        out[f"backbone.{key}"] = value
    out["cls_head.fc_cls.weight"] = torch.zeros(400, 128)
    out["cls_head.fc_cls.bias"] = torch.zeros(400)
    return {"state_dict": out, "meta": {}}


def test_factories_and_features_shape():
    model = tiny_model()
    assert model(torch.randn(2, 3, 8, 64, 64)).shape == (2, model.num_features) == (2, 128)
    assert model(torch.randn(1, 3, 6, 64, 64)).shape == (1, 128)  # 6 LGE slices as time: windows shrink
    assert tiny_model(in_chans=1, num_classes=5)(torch.randn(1, 1, 8, 64, 64)).shape == (1, 5)
    full = swin3d_tiny(embed_dim=8, num_heads=(1, 2, 4, 8))  # published depths and windows, narrow
    assert [len(stage.blocks) for stage in full.layers] == [2, 2, 6, 2]
    assert full.window_size == (8, 7, 7) and full.patch_size == (2, 4, 4)
    assert [len(s.blocks) for s in swin3d_small(embed_dim=8, num_heads=(1, 2, 4, 8)).layers] == [2, 2, 18, 2]
    assert swin3d_base(embed_dim=8, num_heads=(1, 2, 4, 8)).num_features == 64


def test_state_dict_holds_parameters_only():
    model = tiny_model()
    assert list(model.buffers()) == []
    assert set(model.state_dict()) == {n for n, _ in model.named_parameters()}
    assert all(n.endswith("relative_position_bias_table") for n in model.no_weight_decay())
    assert len(model.no_weight_decay()) == 5


@pytest.mark.parametrize("shape", [(2, 3, 8, 64, 64), (1, 3, 6, 64, 64), (1, 3, 5, 72, 60)])
def test_torchvision_parity_tiny(shape):
    ref = torchvision_tiny()
    model = tiny_model().eval()
    report = load_pretrained(model, ref.state_dict())
    assert report.format == "torchvision-swin3d"
    assert report.loaded == len(model.state_dict())
    x = torch.randn(shape)
    with torch.no_grad():
        assert (ref(x) - model(x)).abs().max() <= 1e-5


def test_official_format_parity_tiny(tmp_path):
    ref = torchvision_tiny()
    path = tmp_path / "official.pth"
    torch.save(to_official(ref.state_dict()), path)
    model = tiny_model().eval()
    report = load_pretrained(model, path)
    assert report.format == "video-swin"
    assert {"cls_head.fc_cls.weight", "cls_head.fc_cls.bias"} <= set(report.dropped)
    assert sum("relative_position_index" in k for k in report.dropped) == 5
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        assert (ref(x) - model(x)).abs().max() <= 1e-5


def test_own_state_dict_round_trip_safetensors(tmp_path):
    from safetensors.torch import save_file

    source = tiny_model()
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    model = tiny_model()
    assert load_pretrained(model, tmp_path / "w.safetensors").format == "video-swin"
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        assert torch.equal(source.eval()(x), model.eval()(x))


@pytest.mark.parametrize("layout", ["timm", "microsoft"])
def test_2d_inflation_identical_frames(layout):
    torch.manual_seed(0)
    m2d = timm.create_model(
        "swin_tiny_patch4_window7_224", img_size=128, window_size=4, embed_dim=16, depths=(1, 1, 2, 1),
        num_heads=(1, 2, 4, 8), num_classes=3,
    ).eval()  # fmt: skip
    state = m2d.state_dict()
    if layout == "microsoft":  # original layout: downsample ends stage i, head is `head`
        state = {
            re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", k).replace(
                "head.fc.", "head."
            ): v
            for k, v in state.items()
        }
        state = {"model": state}
    model = tiny_model().eval()
    report = load_pretrained(model, state)
    assert report.format == f"swin2d-{layout}"
    frame = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        want = m2d.forward_head(m2d.forward_features(frame), pre_logits=True)
        got = model(frame[:, :, None].expand(-1, -1, 16, -1, -1))
    assert (want - got).abs().max() <= 1e-4


def test_one_channel_equals_gray_on_three_channels():
    source = tiny_model().state_dict()
    m3, m1 = tiny_model().eval(), tiny_model(in_chans=1).eval()
    load_pretrained(m3, source)
    load_pretrained(m1, source)
    gray = torch.randn(2, 1, 8, 64, 64)
    with torch.no_grad():
        assert (m1(gray) - m3(gray.expand(-1, 3, -1, -1, -1))).abs().max() <= 1e-5


def test_grad_checkpointing_same_output_and_grads():
    torch.manual_seed(0)
    model = tiny_model()
    x = torch.randn(2, 3, 8, 64, 64)
    model(x).square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).square().sum().backward()
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, grads[name], atol=1e-6), name


def test_drop_path_active_only_in_training():
    model = tiny_model(drop_path_rate=0.5)
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), model(x))
        torch.manual_seed(1)
        assert not torch.equal(model.train()(x), model.eval()(x))


def test_loader_errors_name_the_key(tmp_path):
    good = tiny_model().state_dict()
    missing = {k: v for k, v in good.items() if k != "layers.2.blocks.1.mlp.fc2.weight"}
    with pytest.raises(WeightsError, match=r"missing key 'layers\.2\.blocks\.1\.mlp\.fc2\.weight'"):
        load_pretrained(tiny_model(), missing)
    bad_shape = {**good, "norm.weight": torch.zeros(7)}
    with pytest.raises(WeightsError, match=r"'norm\.weight' has shape \(7,\), the model expects \(128,\)"):
        load_pretrained(tiny_model(), bad_shape)
    with pytest.raises(WeightsError, match=r"unexpected key 'layers\.0\.blocks\.5\.norm1\.weight'"):
        load_pretrained(tiny_model(), {**good, "layers.0.blocks.5.norm1.weight": torch.zeros(16)})
    with pytest.raises(WeightsError, match="relative_position_bias_table"):
        load_pretrained(tiny_model(window_size=(2, 4, 4)), good)
    with pytest.raises(WeightsError, match="not Swin weights"):
        load_pretrained(tiny_model(), {"conv.weight": torch.zeros(1)})
    with pytest.raises(WeightsError, match="not found"):
        load_pretrained(tiny_model(), tmp_path / "absent.pth")
    with pytest.raises(WeightsError, match=r"patch_embed\.proj\.weight.*3 input channels, the model 2"):
        load_pretrained(tiny_model(in_chans=2), good)


def test_head_of_source_is_dropped_and_model_head_kept():
    source = tiny_model(num_classes=400).state_dict()
    model = tiny_model(num_classes=2)
    head_before = model.head.weight.clone()
    report = load_pretrained(model, source)
    assert set(report.dropped) == {"head.weight", "head.bias"}
    assert torch.equal(model.head.weight, head_before)


@pytest.mark.parametrize("shape", [(2, 3, 8, 64, 64), (1, 3, 5, 72, 60)])  # whole windows (gathers); padded
def test_training_path_matches_torchvision_gradients(shape):
    """With autograd on, CPU attention runs through the fused Function; outputs and gradients equal torchvision's."""
    from torchvision.ops import StochasticDepth

    from cccmr_model.swin3d_weights import _rename_torchvision

    ref = torchvision_tiny().train()
    for module in ref.modules():
        if isinstance(module, StochasticDepth):
            module.p = 0.0  # ours is built with drop_path_rate=0
    model = tiny_model().train()
    load_pretrained(model, ref.state_dict())
    x = torch.randn(shape)
    y_ref, y = ref(x), model(x)
    assert (y_ref - y).abs().max() <= 1e-5
    with torch.no_grad():  # the SDPA path
        assert (model(x) - y).abs().max() <= 1e-5
    y_ref.square().sum().backward()
    y.square().sum().backward()
    params = dict(model.named_parameters())
    for name, p in ref.named_parameters():
        assert torch.allclose(p.grad, params[_rename_torchvision(name)].grad, atol=1e-5), name


def plain_window_attention(qkv, table, index, mask, num_heads, scale):
    """Reference: matmul + softmax with the gathered bias and the mask, through autograd."""
    BnW, N, C3 = qkv.shape
    q, k, v = qkv.view(BnW, N, 3, num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # B*nW, nH, N, hd
    attn = (q * scale) @ k.transpose(-2, -1) + table[index].view(N, N, num_heads).permute(2, 0, 1)
    if mask is not None:
        nW = mask.shape[0]
        attn = (attn.view(BnW // nW, nW, num_heads, N, N) + mask[None, :, None]).view(BnW, num_heads, N, N)
    return (attn.softmax(-1) @ v).transpose(1, 2).reshape(BnW, N, C3 // 3)


def attention_case(dtype=torch.float32, masked=True, num_heads=2, num_tokens=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    window = (2, 2, 2)
    table = torch.randn(27, num_heads, generator=gen, dtype=dtype)
    index = flat_relative_position_index(window, num_tokens, torch.device("cpu"))
    qkv = torch.randn(6, num_tokens, 3 * 4 * num_heads, generator=gen, dtype=dtype)  # 2 clips x 3 windows
    mask = None
    if masked:  # window 0 unmasked, windows 1 and 2 with -100 across two regions
        region = torch.arange(num_tokens) % 2
        cross = torch.where(region[:, None] != region[None, :], -100.0, 0.0)
        mask = torch.stack([torch.zeros_like(cross), cross, cross.flip(0)]).to(dtype)
    return qkv, table, index, mask


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("num_tokens", [8, 5])  # 5: a window shrunk below the full 2x2x2 (cropped index)
@pytest.mark.parametrize("chunk_bytes", [None, 1])  # 1: one head per chunk
def test_fused_attention_matches_plain_attention(masked, num_tokens, chunk_bytes, monkeypatch):
    """The CPU training Function gives the output and the qkv and bias-table gradients of matmul + softmax."""
    if chunk_bytes is not None:
        monkeypatch.setattr(swin3d_attention, "CHUNK_BYTES", chunk_bytes)
    qkv, table, index, mask = attention_case(masked=masked, num_tokens=num_tokens)
    grad = torch.randn(qkv.shape[0], num_tokens, qkv.shape[2] // 3)
    results = []
    for fn in (plain_window_attention, window_attention_fused):
        a, t = qkv.clone().requires_grad_(), table.clone().requires_grad_()
        y = fn(a, t, index, mask, 2, 0.5)
        y.backward(grad)
        results.append((y.detach(), a.grad, t.grad))
    for ref, got in zip(*results, strict=True):
        assert ref.shape == got.shape
        assert (ref - got).abs().max() <= 1e-5
    if masked:  # the per-window flags skip the all-zero mask of window 0 and change nothing
        assert masked_windows(mask) == (False, True, True)


@pytest.mark.parametrize("masked", [False, True])
def test_fused_attention_gradcheck_float64(masked):
    qkv, table, index, mask = attention_case(torch.float64, masked=masked, num_tokens=4, num_heads=2)
    qkv, table = qkv[:3].requires_grad_(), table.requires_grad_()  # one clip of 3 windows
    assert torch.autograd.gradcheck(lambda a, t: window_attention_fused(a, t, index, mask, 2, 0.7), (qkv, table))


def test_fused_attention_used_only_for_plain_cpu_training():
    qkv, table, _, _ = attention_case()
    assert not fused_attention_applies(qkv, table, 0.0)  # table does not require grad
    table.requires_grad_()
    assert fused_attention_applies(qkv, table, 0.0)
    assert not fused_attention_applies(qkv, table, 0.1)  # attention dropout: plain path
    with torch.no_grad():
        assert not fused_attention_applies(qkv, table, 0.0)
    seen = []
    torch.func.vmap(lambda a: seen.append(fused_attention_applies(a, table, 0.0)) or a)(qkv)  # opacus functorch
    assert seen == [False]


def test_fused_and_plain_training_paths_agree_in_the_model():
    """The whole tiny encoder, shifted windows with masks included: outputs and every gradient agree."""
    torch.manual_seed(3)
    model = tiny_model().train()
    x = torch.randn(2, 3, 8, 64, 64)
    grads = []
    for fused in (True, False):
        for module in model.modules():
            if hasattr(module, "fused_cpu_attention"):
                module.fused_cpu_attention = fused
        model.zero_grad(set_to_none=True)
        y = model(x)
        assert (_graph_nodes(y.grad_fn) & {"WindowAttentionFunctionBackward"}) == (
            {"WindowAttentionFunctionBackward"} if fused else set()
        )
        y.square().sum().backward()
        grads.append((y.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert (grads[0][0] - grads[1][0]).abs().max() <= 1e-5
    for name, g in grads[0][1].items():
        assert torch.allclose(g, grads[1][1][name], atol=1e-5), name


def _graph_nodes(fn) -> set[str]:
    """Names of the autograd nodes reachable from `fn`."""
    seen, stack, names = set(), [fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(n for n, _ in node.next_functions)
    return names


@pytest.mark.parametrize("shift", [(0, 0, 0), (1, 2, 2)])
def test_window_order_gathers_equal_roll_and_partition(shift):
    """One gather each way equals roll + window_partition and window_reverse + roll back, gradients included."""
    size, window = (2, 8, 4), (2, 4, 4)
    perm, inverse = window_order(size, window, shift, torch.device("cpu"))
    x = torch.randn(2, *size, 3, requires_grad=True)
    ref = window_partition(torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3)), window)
    got = permute_tokens(x.reshape(2, -1, 3), perm, inverse).view_as(ref)
    assert torch.equal(ref, got)
    back = permute_tokens(got.reshape(2, -1, 3), inverse, perm).view_as(x)
    assert torch.equal(back, x)
    grad = torch.randn_like(ref)
    (g_ref,) = torch.autograd.grad(ref, x, grad)
    (g_got,) = torch.autograd.grad(got, x, grad)
    assert torch.equal(g_ref, g_got)


def test_conv_stem_gives_the_patch_stem_s_token_grid() -> None:
    """`stem="conv"` (early convolutions) changes only how tokens are made: same grid, same features."""
    kwargs = dict(in_chans=3, embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=(2, 4, 4))
    x = torch.randn(2, 3, 8, 32, 32)
    patch = swin3d_tiny(**kwargs)
    conv = swin3d_tiny(**kwargs, stem="conv")
    assert patch.patch_embed(x).shape == conv.patch_embed(x).shape == (2, 4, 8, 8, 16)
    assert conv(x).shape == patch(x).shape == (2, 32)
    with pytest.raises(ValueError, match="stem"):
        swin3d_tiny(**kwargs, stem="nope")


def test_conv_stem_refuses_pretrained_weights_in_the_config() -> None:
    from cccmr_model.config.schema import EncoderConfig

    with pytest.raises(ValueError, match="stem 'conv' has no published weights"):
        EncoderConfig(stem="conv", pretrained={"cine_sax": "/weights/swin.pth"})
