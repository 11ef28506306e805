"""`model_holding`: a complete state skips random initialisation and loads exactly; anything else is built as
usual (buffers are not in a state dict, and a partial state keeps initialised values elsewhere)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cccmr_model.engine.loading import model_holding
from cccmr_model.errors import CccmrError


def two_layers() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))


def test_complete_state_is_loaded_exactly_without_initialising():
    state = {k: torch.randn_like(v) for k, v in two_layers().state_dict().items()}
    calls = []

    def build() -> nn.Module:
        calls.append(torch.empty(0).device.type)  # which device the model was built on
        return two_layers()

    model = model_holding(state, build)
    assert calls == ["meta"]  # built once, on the meta device, never initialised
    for key, value in model.state_dict().items():
        assert value.device.type == "cpu"
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_partial_state_keeps_initialised_values_for_the_rest():
    torch.manual_seed(0)
    full = two_layers().state_dict()
    state = {k: v for k, v in full.items() if k.startswith("0.")}
    torch.manual_seed(0)
    model = model_holding(state, two_layers, required=("0.",))
    torch.testing.assert_close(model.state_dict()["1.weight"], full["1.weight"])  # really initialised


def test_a_model_with_buffers_is_built_for_real():
    def with_buffer() -> nn.Module:
        module = two_layers()
        module.register_buffer("scale", torch.full((3,), 2.0), persistent=False)
        return module

    state = {k: torch.zeros_like(v) for k, v in two_layers().state_dict().items()}
    model = model_holding(state, with_buffer)
    torch.testing.assert_close(model.scale, torch.full((3,), 2.0))


def test_missing_keys_still_fail_by_name():
    state = dict(two_layers().state_dict())
    del state["1.bias"]
    with pytest.raises(CccmrError, match=r"1\.bias"):
        model_holding(state, two_layers)
