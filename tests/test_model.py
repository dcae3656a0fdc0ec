"""The encoder, its attention, the contrastive loss and the MoCo pair behave as specified."""
from __future__ import annotations

import pickle
import urllib.error

import pytest
import torch

from fgdesk.config import ModelConfig, RunConfig
from fgdesk.model import backbone as backbone_module
from fgdesk.model.backbone import WeightsUnavailableError
from fgdesk.model.losses import info_nce
from fgdesk.model.moco import MoCo, cosine_momentum
from fgdesk.model.network import FineGrainedNet, class_evidence_maps, fuse_maps


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_forward_gives_unit_embedding_and_one_map_per_stage():
    net = FineGrainedNet(ModelConfig(stages=[2, 3, 4])).eval()
    out = net(torch.randn(2, 3, 64, 64))
    assert out.embedding.shape == (2, 128 + 256 + 512)
    assert torch.allclose(out.embedding.norm(dim=1), torch.ones(2), atol=1e-5)
    assert [tuple(m.shape) for m in out.attention_maps] == [(2, 8, 8), (2, 4, 4), (2, 2, 2)]
    for attention in out.attention_maps:
        assert torch.allclose(attention.flatten(1).sum(dim=1), torch.ones(2), atol=1e-5)


def test_fresh_attention_pools_like_global_average_pooling():
    torch.manual_seed(1)
    attentive = FineGrainedNet(ModelConfig(attention="multiscale")).eval()
    plain = FineGrainedNet(ModelConfig(attention="none")).eval()
    plain.backbone.load_state_dict(attentive.backbone.state_dict())
    images = torch.randn(3, 3, 64, 64)
    assert torch.allclose(attentive(images).embedding, plain(images).embedding, atol=1e-5)


def test_attention_that_learned_a_spot_concentrates_its_map_there():
    net = FineGrainedNet(ModelConfig(stages=[3])).eval()
    pool = net.attention.pools[0]
    with torch.no_grad():
        pool.gate[-1].weight.fill_(1.0)
    images = torch.zeros(1, 3, 64, 64)
    images[:, :, 40:56, 40:56] = 3.0  # a bright patch in the lower right
    attention = net(images).attention_maps[0][0]
    peak = divmod(int(attention.argmax()), attention.shape[1])
    assert attention.max() > 1.5 / attention.numel()
    assert peak[0] >= 2 and peak[1] >= 2


@pytest.mark.parametrize("precision", [None, torch.bfloat16])
def test_the_training_path_pools_exactly_as_the_path_with_maps(precision):
    """Without maps (training) the pool skips the fp32 copy of the features; under bf16
    autocast and in fp32 its descriptor and gradients are those of the path with maps."""
    from fgdesk.model.attention import SpatialAttentionPool

    pool = SpatialAttentionPool(64)
    torch.nn.init.normal_(pool.gate[-1].weight)  # a gate that is not uniform
    features = torch.randn(4, 64, 6, 6).relu().to(memory_format=torch.channels_last)
    results = []
    for with_map in (True, False):
        given = features.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision is not None):
            descriptor, where = pool(given, with_map=with_map)
        (descriptor.float() * torch.linspace(-1, 1, 64)).sum().backward()
        results.append((descriptor.float(), given.grad, where))
    (with_maps, grad_with), (without, grad_without) = (r[:2] for r in results)
    assert results[0][2] is not None and results[1][2] is None
    assert torch.equal(with_maps, without) and torch.equal(grad_with, grad_without)


def test_fused_map_has_input_size_and_each_scale_weighs_in():
    maps = [torch.rand(2, 8, 8), torch.rand(2, 4, 4)]
    upsampled, fused = fuse_maps(maps, (64, 64), torch.tensor([0.5, 0.5]))
    assert fused.shape == (2, 64, 64) and all(m.shape == (2, 64, 64) for m in upsampled)
    assert fused.max() <= 1.0 + 1e-5 and fused.min() >= 0


def test_class_evidence_splits_the_linear_score_exactly_over_locations():
    net = FineGrainedNet(ModelConfig(stages=[2, 4])).eval()
    out = net(torch.randn(2, 3, 64, 64))
    weights = torch.randn(2, net.embed_dim)
    maps = class_evidence_maps(out, net.attention.scale_weights(), weights, clip_negative=False)
    total = sum(m.flatten(1).sum(dim=1) for m in maps)
    assert torch.allclose(total, (out.embedding * weights).sum(dim=1), atol=1e-4)


def test_info_nce_is_low_for_matching_pairs_and_high_for_swapped_ones():
    keys = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    negatives = torch.nn.functional.normalize(torch.randn(32, 16), dim=1)
    good, accuracy = info_nce(keys, keys, negatives, 0.1)
    bad, _ = info_nce(keys, keys.roll(1, dims=0), negatives, 0.1)
    assert good < bad
    assert accuracy == 1.0


def test_masked_negatives_are_ignored():
    queries = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    negatives = torch.cat([queries, torch.nn.functional.normalize(torch.randn(6, 8), dim=1)])
    mask = torch.zeros(4, 10, dtype=torch.bool)
    mask[:, :4] = True
    masked, _ = info_nce(queries, queries, negatives, 0.2, mask)
    only_rest, _ = info_nce(queries, queries, negatives[4:], 0.2)
    assert torch.allclose(masked, only_rest, atol=1e-6)
    decoupled, _ = info_nce(queries, queries, negatives[4:], 0.2, decoupled=True)
    assert decoupled < only_rest  # the positive left the denominator


def test_queue_wraps_and_remembers_image_ids():
    config = RunConfig()
    model = MoCo(config, queue_size=5)
    model.enqueue(torch.ones(3, config.model.proj_dim), torch.tensor([1, 2, 3]))
    model.enqueue(torch.ones(3, config.model.proj_dim), torch.tensor([4, 5, 6]))
    assert model.queue_ids.tolist() == [6, 2, 3, 4, 5]
    assert int(model.queue_ptr) == 1


def test_own_old_keys_in_the_queue_are_not_negatives():
    model = MoCo(RunConfig(), queue_size=4)
    model.enqueue(torch.randn(4, 128), torch.tensor([10, 11, 12, 10]))
    mask = model.negative_mask(torch.tensor([10, 12]))
    assert mask.tolist() == [
        [True, False, True, False, False, True],  # batch keys 10, 12; queue 10, 11, 12, 10
        [False, True, False, False, True, False],
    ]


def test_momentum_update_moves_the_key_encoder_towards_the_query():
    model = MoCo(RunConfig(), queue_size=8)
    with torch.no_grad():
        for param in model.query.parameters():
            param.add_(1.0)
    query = next(model.query.parameters())
    key = next(model.key.parameters())
    old = key.clone()
    model.momentum_update(1.0)
    assert torch.equal(key, old)
    model.momentum_update(0.0)
    assert torch.equal(key, query)
    assert cosine_momentum(0.99, 0.0) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 1.0) == pytest.approx(1.0)


def test_weights_from_a_file_load_and_a_pickled_object_is_refused(tmp_path):
    source = FineGrainedNet(ModelConfig(stages=[4]))
    path = tmp_path / "backbone.pt"
    state = {f"module.{k}": v for k, v in source.backbone.stem.state_dict().items()}
    torch.save(state, path)
    with pytest.raises(WeightsUnavailableError, match="missing"):
        FineGrainedNet(ModelConfig(stages=[4], weights=str(path)))

    import torchvision

    full = torchvision.models.resnet18(weights=None)
    torch.save({"state_dict": full.state_dict()}, path)
    loaded = FineGrainedNet(ModelConfig(stages=[4], weights=str(path)))
    assert torch.equal(loaded.backbone.stem[0].weight, full.conv1.weight)

    class Payload:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path(%r).write_text('ran')" % str(tmp_path / "marker"),))

    path.write_bytes(pickle.dumps({"conv1.weight": Payload()}))
    with pytest.raises(WeightsUnavailableError, match="plain tensors"):
        FineGrainedNet(ModelConfig(stages=[4], weights=str(path)))
    assert not (tmp_path / "marker").exists()


def test_imagenet_weights_offline_fail_with_a_clear_message(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(backbone_module.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(WeightsUnavailableError, match="offline"):
        FineGrainedNet(ModelConfig(weights="imagenet"))


def test_asymmetric_step_encodes_one_query_view_and_one_key_view():
    config = RunConfig()
    config.model.stages = [4]
    config.contrastive.symmetric = False
    model = MoCo(config, queue_size=8)
    calls = {"query": 0, "key": 0}
    model.query.register_forward_hook(lambda *a: calls.__setitem__("query", calls["query"] + 1))
    model.key.register_forward_hook(lambda *a: calls.__setitem__("key", calls["key"] + 1))
    views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    model(views, [], torch.arange(4))
    assert calls == {"query": 1, "key": 1}
    config.contrastive.symmetric = True
    model = MoCo(config, queue_size=8)
    calls.update(query=0, key=0)
    model.query.register_forward_hook(lambda *a: calls.__setitem__("query", calls["query"] + 1))
    model.key.register_forward_hook(lambda *a: calls.__setitem__("key", calls["key"] + 1))
    model(views, [torch.randn(4, 3, 16, 16)], torch.arange(4))
    assert calls == {"query": 3, "key": 2}
