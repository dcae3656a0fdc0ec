"""The key encoder's batch norm over shuffled sub-batches, in one pass over the batch."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fgdesk.config import ModelConfig, RunConfig
from fgdesk.model.chunked_bn import ChunkedBatchNorm2d, bn_chunk_count, chunk_batch_norms
from fgdesk.model.moco import MoCo
from fgdesk.model.network import FineGrainedNet


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def plain_copy(module: nn.Module) -> nn.Module:
    """The same module with ordinary batch norms, for the per-chunk reference loop."""
    plain = copy.deepcopy(module)
    for child in plain.modules():
        if isinstance(child, nn.BatchNorm1d):
            child.__class__ = nn.BatchNorm1d
        elif isinstance(child, nn.BatchNorm2d):
            child.__class__ = nn.BatchNorm2d
    return plain


@pytest.mark.parametrize("batch, chunks", [(64, 4), (50, 3), (20, 1)])
def test_one_pass_equals_running_each_sub_batch_on_its_own(batch, chunks):
    assert bn_chunk_count(batch, 4) == chunks
    layers = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(16), nn.BatchNorm1d(16))
    layers(torch.randn(2, 3, 10, 10))  # materialise the lazy layer
    reference = copy.deepcopy(layers).train()
    chunked = chunk_batch_norms(layers, 4).train()
    assert isinstance(chunked[1], ChunkedBatchNorm2d)
    images = torch.randn(batch, 3, 10, 10) * 3 + 1
    out = chunked(images)
    expected = torch.cat([reference(part) for part in images.chunk(chunks)])
    assert torch.allclose(out, expected, atol=1e-5)
    for name, value in reference.state_dict().items():  # one running-statistics update per chunk
        assert torch.allclose(chunked.state_dict()[name].float(), value.float(), atol=1e-6), name
    # Each sub-batch is normalised by its own statistics, not by the whole batch's.
    if chunks > 1:
        whole = copy.deepcopy(reference)(images)
        assert not torch.allclose(out, whole, atol=1e-3)


def test_channels_last_and_eval_mode_behave_like_plain_batch_norm():
    norm = chunk_batch_norms(nn.Sequential(nn.BatchNorm2d(4)), 4)[0]
    images = torch.randn(32, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    out = norm(images)
    assert out.is_contiguous(memory_format=torch.channels_last)
    norm.eval()
    plain = nn.BatchNorm2d(4).eval()
    plain.load_state_dict(norm.state_dict())
    assert torch.equal(norm(images), plain(images))


def test_key_encoder_normalises_over_shuffled_sub_batches_and_keeps_its_state_dict():
    config = RunConfig()
    config.model.stages = [3, 4]
    model = MoCo(config, queue_size=8).train()
    assert list(model.key.state_dict()) == list(model.query.state_dict())  # checkpoints unchanged
    images = torch.randn(64, 3, 32, 32)
    reference = plain_copy(model.key)
    torch.manual_seed(7)
    keys = model.encode_keys(images)
    torch.manual_seed(7)
    order = torch.randperm(64)
    expected = torch.cat([reference(part) for part in images[order].chunk(4)])[torch.argsort(order)]
    assert torch.allclose(keys, expected, atol=1e-5)


@pytest.mark.parametrize("attention, power", [("multiscale", 1.0), ("multiscale", 3.0), ("none", 1.0)])
def test_embedding_without_maps_is_the_embedding_with_maps(attention, power):
    net = FineGrainedNet(ModelConfig(stages=[2, 3, 4], attention=attention, pool_power=power)).train()
    with torch.no_grad():
        for pool in net.attention.pools:
            if attention == "multiscale":
                pool.gate[-1].weight.normal_()  # a gate that is not uniform
    images = torch.randn(4, 3, 64, 64)
    state = copy.deepcopy(net.state_dict())
    full = net(images)
    net.load_state_dict(state)  # the same batch-norm statistics for the second pass
    bare = net(images, with_maps=False)
    assert bare.attention_maps is None and full.attention_maps is not None
    assert torch.allclose(full.embedding, bare.embedding, atol=1e-6)
    assert torch.allclose(net.eval().embed(images), net(images).embedding, atol=1e-6)
