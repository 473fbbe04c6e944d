"""Vision foundation models beside CLIP (methods/vfm_backbone.py) and ProxyCLIP's own behaviour that the parity
test does not cover: weights files and their errors, DINOv2's official layout, options, batches, odd crops."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from benchmark.errors import BenchmarkError
from benchmark.protocol import load_protocol
from methods import vfm_backbone
from methods.cass import CASS, name_clusters, presence_adjusted_names
from methods.clip_backbone import KnownWeights, WeightsError, backbone_from_model
from methods.proxyclip import ProxyCLIP, proxy_attention_weights
from methods.vfm_backbone import build_vfm, load_vfm
from tests.factories import TINY_VFM_CONFIG, write_tiny_vfm
from tests.test_clip_baselines import tiny_clip


@pytest.fixture(scope="module")
def tiny_vfm(tmp_path_factory):
    return write_tiny_vfm(tmp_path_factory.mktemp("vfm"))


@pytest.fixture(scope="module")
def backbone():
    return backbone_from_model(tiny_clip(image_size=64, patch=8), "tiny-8px")


def pin(monkeypatch, config, file, sha256):
    entry = KnownWeights(model=config.stem, pretrained="official", file=file, sha256=sha256, url="https://example/w")
    monkeypatch.setattr(vfm_backbone, "known_vfm_weights", lambda: (entry,))


def test_missing_official_file_names_it_and_its_url(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSSEG_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError, match=r"dino_vitbase8_pretrain\.pth.*dl\.fbaipublicfiles\.com/dino"):
        load_vfm("dino_vitb8", "official")


def test_pinned_digest_mismatch_and_unpinned_warning(tiny_vfm, tmp_path, monkeypatch):
    config, weights = tiny_vfm
    monkeypatch.setenv("ZSSEG_WEIGHTS", str(weights.parent))
    pin(monkeypatch, config, weights.name, "0" * 64)
    with pytest.raises(WeightsError, match="sha256 is .* expected 0000"):
        load_vfm(str(config), "official")
    pin(monkeypatch, config, weights.name, None)
    with pytest.warns(UserWarning, match="not pinned"):
        loaded = load_vfm(str(config), "official")
    assert loaded.weights_sha256 is not None and len(loaded.weights_sha256) == 64


def test_truncated_pickled_and_wrong_files_are_refused(tiny_vfm, tmp_path, monkeypatch):
    config, weights = tiny_vfm
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="truncated.pth"):
        load_vfm(str(config), str(truncated))
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(print))  # a pickle that imports a callable
    with pytest.raises(WeightsError, match="evil.pth"):
        load_vfm(str(config), str(evil))
    archive = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(archive))
    monkeypatch.setattr(torch.jit, "load", lambda *_, **__: pytest.fail("the archive was loaded (runs its code)"))
    with pytest.raises(WeightsError, match="scripted.pt is a TorchScript archive"):
        load_vfm(str(config), str(archive))
    other = dict(TINY_VFM_CONFIG, timm_kwargs={"img_size": 32, "embed_dim": 64, "depth": 2, "num_heads": 2})
    wrong = tmp_path / "wider.pth"
    torch.save(build_vfm(other).state_dict(), wrong)
    with pytest.raises(WeightsError, match="does not fit model tiny_dino"):
        load_vfm(str(config), str(wrong))
    with pytest.raises(WeightsError, match="unknown vision model 'dino_vitb9'"):
        load_vfm("dino_vitb9", None)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"timm_model": "vit_base_patch8_224"}))
    with pytest.raises(WeightsError, match="broken.json: keys must be"):
        load_vfm(str(broken), None)


def test_dinov2_official_layout_loads_through_timms_converter(tmp_path):
    """DINOv2's own state dict (register_tokens, mask_token, a position for the class token) converts to timm's."""
    config = {**TINY_VFM_CONFIG, "family": "dinov2", "timm_model": "vit_base_patch14_reg4_dinov2",
              "timm_kwargs": {"img_size": 56, "embed_dim": 32, "depth": 2, "num_heads": 2},
              "position_rule": {"offset": 0.0, "antialias": True}}
    path = tmp_path / "tiny_dinov2.json"
    path.write_text(json.dumps(config))
    timm_weights = build_vfm(config).state_dict()
    official = {key: value for key, value in timm_weights.items() if key not in ("reg_token", "cls_token", "pos_embed")}
    class_position = torch.randn(1, 1, 32)
    official.update(register_tokens=timm_weights["reg_token"], mask_token=torch.zeros(1, 32),
                    cls_token=timm_weights["cls_token"] - class_position,
                    pos_embed=torch.cat([class_position, timm_weights["pos_embed"]], dim=1))
    torch.save(official, tmp_path / "dinov2_official.pth")
    vfm = load_vfm(str(path), str(tmp_path / "dinov2_official.pth"))
    assert torch.allclose(vfm.model.cls_token, timm_weights["cls_token"], atol=1e-6)
    features = vfm.patch_features(torch.randn(2, 3, 70, 84))
    assert features.shape == (2, 32, 5, 6) and torch.isfinite(features).all()


def test_bad_options_are_refused(backbone, tiny_vfm):
    config, weights = tiny_vfm
    for options in ({"beta": "high"}, {"gamma": True}, {"pad_multiple": 0}, {"window": 3}):
        with pytest.raises(BenchmarkError):
            ProxyCLIP(backbone=backbone, text_cache=False, vfm=str(config), vfm_weights=str(weights), **options)


def test_image_side_is_per_crop_and_needs_no_class_names(backbone, tiny_vfm):
    config, weights = tiny_vfm
    method = ProxyCLIP(backbone=backbone, text_cache=False, vfm=str(config), vfm_weights=str(weights))
    protocol = load_protocol("proxyclip")
    crops = torch.randn(3, 3, 64, 80)
    features = method.encode_crops(crops)
    alone = method.encode_crops(crops[1:2])
    assert torch.allclose(features.features[1:2], alone.features, atol=1e-5)  # mean(S) per crop, not per batch
    spec = replace(protocol.benchmarks["context59"], class_names=(("cat",), ("dog", "puppy")))
    method.setup(protocol, spec)
    bank = method.encode_classes([["cat"], ["dog", "puppy"]], protocol.text)
    scores = method.score(features, bank)
    assert scores.shape == (3, 3, 64, 80) and torch.equal(scores, method.predict_masks(crops, bank))
    assert method.backbone() == "tiny-8px + tiny_dino/tiny_dino.pth"


def test_proxy_attention_masks_below_the_shifted_mean():
    proxy = torch.tensor([[[[1.0, 0.9], [0.0, -1.0]], [[0.0, 0.1], [1.0, 0.2]]]])  # [1, C=2, 2, 2]
    weights = proxy_attention_weights(proxy, beta=1.2, gamma=3.0)
    unit = torch.nn.functional.normalize(proxy.flatten(2), dim=1)[0]
    similarity = unit.t() @ unit
    shifted = (similarity - similarity.mean() * 1.2) * 3.0
    expected = torch.where(shifted < 0, torch.zeros_like(shifted), shifted.exp())
    expected = expected / expected.sum(dim=-1, keepdim=True)
    assert torch.allclose(weights[0], expected, atol=1e-6) and (weights[0][shifted < 0] == 0).all()


# ---- CASS --------------------------------------------------------------------------------------------------------


def test_cass_options_and_contexts_are_checked(backbone, tiny_vfm):
    config, weights = tiny_vfm
    for options in ({"seed": 1.5}, {"gaussian_std": "wide"}, {"eigenscaling": "yes"}, {"h_threshold": None, "x": 1}):
        with pytest.raises(BenchmarkError):
            CASS(backbone=backbone, text_cache=False, vfm=str(config), vfm_weights=str(weights), **options)
    method = CASS(backbone=backbone, text_cache=False, vfm=str(config), vfm_weights=str(weights))
    with pytest.raises(BenchmarkError, match="contexts"):
        method.encode_crops(torch.randn(1, 3, 64, 64))


def test_cass_per_benchmark_settings_follow_protocol_then_option_then_dataset(backbone, tiny_vfm):
    config, weights = tiny_vfm
    protocol = load_protocol("cass")
    method = CASS(backbone=backbone, text_cache=False, vfm=str(config), vfm_weights=str(weights), h_threshold=0.5)
    method.setup(protocol, protocol.benchmarks["cityscapes"])
    assert method.settings == {"global_semantics_weight": 0.1, "mean_vector_weight": 0.03, "h_threshold": 0.5,
                               "eigenscaling": False, "global_from_crop": True}
    spec = replace(protocol.benchmarks["voc20"], method_settings={"global_semantics_weight": 0.7})
    method.setup(protocol, spec)
    assert method.settings["global_semantics_weight"] == 0.7 and method.settings["eigenscaling"] is False
    assert method.config()["options"] == {"vfm": str(config), "vfm_weights": str(weights), "gaussian_std": 5.0,
                                          "seed": 42, "h_threshold": 0.5}


def test_cass_scores_of_a_crop_do_not_depend_on_its_batch(backbone, tiny_vfm):
    config, weights = tiny_vfm
    method = CASS(backbone=backbone, text_cache=False, vfm=str(config), vfm_weights=str(weights))
    protocol = load_protocol("cass")
    method.setup(protocol, protocol.benchmarks["context59"])
    bank = method.encode_classes([["cat"], ["dog", "puppy"], ["sky"]], protocol.text)
    images = [torch.randn(3, 64, 96), torch.randn(3, 80, 64)]
    contexts = [method.encode_image(image) for image in images]
    crops = torch.stack([images[0][:, :, :64], images[1][:, :64]])
    both = method.predict_masks(crops, bank, contexts=contexts)
    alone = method.predict_masks(crops[1:], bank, contexts=contexts[1:])
    assert both.shape == (2, 4, 8, 8) and torch.equal(both[1:], alone)
    assert not torch.equal(both[:1], method.predict_masks(crops[:1], bank, contexts=contexts[1:]))  # context matters


def test_presence_prior_moves_the_most_present_name_of_each_cluster():
    names = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]]), dim=1)
    patches = F.normalize(torch.tensor([[1.0, 0.5, 0.0], [0.8, 0.0, 0.2], [0.0, 1.0, 0.0]]), dim=1)
    clusters = name_clusters(names, threshold=0.5)
    assert clusters.tolist() == [0, 0, 1]  # the two near names share a cluster
    presence = torch.tensor([0.2, 0.3, 0.1])
    adjusted = presence_adjusted_names(patches, names, presence, clusters, weight=0.5)
    top_two = patches[(patches @ names[1]).topk(2).indices].mean(dim=0)
    expected = F.normalize(0.5 * names[1] + 0.5 * F.normalize(top_two, dim=0), dim=0)
    assert torch.allclose(adjusted[1], expected, atol=1e-6) and torch.equal(adjusted[0], names[0])
    assert not torch.equal(adjusted[2], names[2])  # the other cluster's only name moves too


def test_engine_hands_each_crop_its_own_images_context():
    """Crops of two images batched together each receive the context of their own image (encode_image)."""
    from benchmark.inference import PreparedImage, ScoreHead, SlidingWindowPredictor
    from tests.factories import make_spec
    from tests.toy_method import ToyMethod

    class Contextual(ToyMethod):
        def encode_image(self, image):
            return image.mean()

        def predict_masks(self, crops, bank, contexts=None):
            assert contexts is not None and len(contexts) == crops.shape[0]
            scores = torch.full((crops.shape[0], 2, 8, 8), 1.5)
            scores[:, 1] = torch.stack(contexts).view(-1, 1, 1)  # class 1 wins where the image's mean is above 1.5
            return scores

    method = Contextual()
    assert method.uses_image_context() and not ToyMethod().uses_image_context()
    spec = make_spec(crop=16, stride=8)
    predictor = SlidingWindowPredictor(method, [ScoreHead(spec, method.encode_classes([["a"], ["b"]], None), None)],
                                       batch_size=3)  # 4 windows per image: batches hold crops of both images
    preds = []
    for index, value in enumerate((1.0, 2.0)):
        item = PreparedImage(index, f"image{index}", torch.full((3, 24, 24), value), torch.zeros(24, 24).long())
        preds += [prediction.pred for prediction in predictor.push(item)]
    preds += [prediction.pred for prediction in predictor.flush()]
    assert [int(pred.unique().item()) for pred in preds] == [0, 1]
