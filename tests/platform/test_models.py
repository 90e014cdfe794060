"""Bundled model registry, architectures, pretrained accuracy and the shared training loop."""

import numpy as np
import pytest
import torch
from torch import nn

from tvm_lowrank.data import load_fashion_mnist
from tvm_lowrank.errors import ModelLoadError
from tvm_lowrank.models import (_registry, create_model, evaluate_accuracy, has_weights, list_models,
                                model_example, model_input_shape, train_classifier,
                                vgg_fmnist_example)

BUNDLED = ["mobilenet-fmnist", "resnet-fmnist", "vgg-fmnist", "vgg-fmnist-deeptwist"]


@pytest.fixture(scope="module")
def test_subset():
    return load_fashion_mnist("test", limit=1000)


def test_registry_lists_the_bundled_models():
    assert [name for name in list_models() if has_weights(name)] == BUNDLED
    assert [name for name in list_models() if not has_weights(name)] == ["resnet18"]


def test_resnet18_is_the_imagenet_architecture_without_weights():
    with pytest.raises(ModelLoadError, match="no trained weights"):
        create_model("resnet18")
    model = create_model("resnet18", pretrained=False)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20 and convs[0].kernel_size == (7, 7)  # stem + 16 3x3 + 3 downsample 1x1
    assert sum(p.numel() for p in model.parameters()) == 11_689_512  # torchvision's ResNet-18
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)
    torch.testing.assert_close(create_model("resnet18", pretrained=False).state_dict()["stem.0.weight"],
                               model.state_dict()["stem.0.weight"])  # seeded stand-in weights


@pytest.mark.parametrize("name", BUNDLED)
def test_models_map_an_image_to_10_logits_with_bias_free_convs(name):
    model = create_model(name, pretrained=False)
    assert not model.training
    assert model(torch.zeros(model_input_shape(name))).shape == (1, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    batch_norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert convs and len(convs) == len(batch_norms) and all(c.bias is None for c in convs)


def test_architectures_have_their_defining_layers():
    resnet = create_model("resnet-fmnist", pretrained=False)
    strided = [m for m in resnet.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert {m.kernel_size for m in strided} == {(3, 3), (1, 1)}
    mobilenet = create_model("mobilenet-fmnist", pretrained=False)
    assert any(isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1 for m in mobilenet.modules())
    vgg = create_model("vgg-fmnist", pretrained=False)
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in vgg.modules()) == 6


def test_unknown_model_error_lists_known_models():
    with pytest.raises(ModelLoadError, match="vgg-fmnist") as info:
        create_model("alexnet")
    assert "alexnet" in str(info.value)
    with pytest.raises(ModelLoadError):
        model_input_shape("alexnet")


def test_missing_checkpoint_names_the_training_script(tmp_path, monkeypatch):
    monkeypatch.setattr(_registry, "CHECKPOINT_DIR", tmp_path)
    with pytest.raises(ModelLoadError, match="scripts/train_models.py --model resnet-fmnist"):
        create_model("resnet-fmnist")


def test_corrupt_checkpoint_is_a_model_load_error(tmp_path, monkeypatch):
    monkeypatch.setattr(_registry, "CHECKPOINT_DIR", tmp_path)
    (tmp_path / "vgg-fmnist.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="vgg-fmnist.pt"):
        create_model("vgg-fmnist")


@pytest.mark.parametrize("name", BUNDLED)
def test_pretrained_models_classify_fashion_mnist(name, test_subset):
    assert evaluate_accuracy(create_model(name), *test_subset) >= 0.85


def test_vgg_example_is_the_pretrained_demo_and_a_real_image(test_subset):
    model, example = vgg_fmnist_example()
    assert example.shape == (1, 1, 28, 28) and example.dtype == torch.float32
    np.testing.assert_array_equal(example.numpy(), test_subset[0][:1])
    assert not model.training
    assert model(example).argmax(1).item() == test_subset[1][0]  # a confident, correct "ankle boot"
    untrained, same_image = model_example("resnet-fmnist", pretrained=False)
    assert torch.equal(same_image, example) and not untrained.training


def test_training_is_seeded_and_reduces_the_loss():
    images, labels = load_fashion_mnist("train", limit=1024)

    def run(epochs):  # a linear classifier: the loop is under test, not a CNN's speed
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(28 * 28, 10))
        losses = train_classifier(model, images, labels, epochs=epochs, batch_size=32, lr=3e-3, seed=1)
        return model, losses

    assert run(1)[1] == run(1)[1]
    model, losses = run(3)
    assert losses[-1] < 0.8 * losses[0]
    assert not model.training
    assert evaluate_accuracy(model, images, labels) > 0.7  # chance is 0.1
