"""torchvision ResNet-50 state dicts -> our ResNet50: logits equal a PyTorch ResNet-50 written here with
plain torch.nn in torchvision's layout (torchvision itself is not installed), random weights,
calibrated BN statistics (DESIGN.md), float64 reference."""
import jax
import numpy as np
import pytest

from efficientnet_jax.families import ResNet50
from efficientnet_jax.weights import (WeightConversionError, from_torchvision_resnet, load_pretrained_variables,
                                      load_torchvision_resnet)
from helpers import structured_images

torch = pytest.importorskip("torch")
nn = torch.nn


class Bottleneck(nn.Module):
    """torchvision.models.resnet.Bottleneck (v1.5: stride on the 3×3), same attribute names."""

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchResNet50(nn.Module):
    """torchvision.models.resnet50's module tree: conv1, bn1, maxpool, layer1..layer4, avgpool, fc."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes, layers = 64, []
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            layer = []
            for j in range(blocks):
                layer.append(Bottleneck(inplanes, planes, stride if j == 0 else 1))
                inplanes = planes * 4
            layers.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(torch.mean(x, dim=(2, 3)), 1))


@pytest.fixture(scope="module")
def reference():
    """A float64 TorchResNet50 with calibrated, perturbed BN statistics, and its state dict."""
    torch.manual_seed(0)
    model = TorchResNet50().double()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                module.momentum = 1.0  # one train-mode pass sets the running stats to the batch's
        model.train()
        model(torch.from_numpy(structured_images("mixed", 4, 64, seed=1).transpose(0, 3, 1, 2)).double())
        model.eval()
        generator = torch.Generator().manual_seed(1)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                std = module.running_var.sqrt()
                module.running_mean += 0.05 * std * torch.randn(std.shape, generator=generator, dtype=std.dtype)
                module.running_var *= torch.empty_like(std).uniform_(0.8, 1.25, generator=generator)
    return model, model.state_dict()


def test_logits_equal_a_pytorch_resnet50(reference):
    torch_model, state_dict = reference
    model, variables = from_torchvision_resnet({k: v.float() for k, v in state_dict.items()})
    assert isinstance(model, ResNet50) and model.num_classes == 1000
    x = np.concatenate([structured_images("noise", 1, 64, seed=2), structured_images("smooth", 1, 64, seed=3)])
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2)).double()).numpy()
        nudged = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2) + 1e-6).double()).numpy()
    scale = np.abs(expected).max()
    assert np.abs(expected[0] - expected[1]).max() > 0.1 * scale  # the reference depends on its input
    assert np.abs(nudged - expected).max() < 1e-6 * scale  # and is stable far below our tolerance
    logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    assert np.abs(logits - expected).max() <= 1e-4 * scale


def test_bad_state_dicts_are_refused(reference, tmp_path):
    _, state_dict = reference
    extra = {**state_dict, "layer4.3.conv1.weight": state_dict["layer4.2.conv1.weight"]}
    with pytest.raises(WeightConversionError, match="layer4.3.conv1.weight"):
        from_torchvision_resnet(extra)
    missing = {k: v for k, v in state_dict.items() if k != "layer2.0.downsample.1.running_var"}
    with pytest.raises(WeightConversionError, match="stage2_block1/down_bn/var"):
        from_torchvision_resnet(missing)
    with pytest.raises(WeightConversionError, match="shape mismatch"):
        from_torchvision_resnet(state_dict, ResNet50(num_classes=1000, width=0.5))
    with pytest.raises(WeightConversionError, match="Not a torchvision ResNet"):
        from_torchvision_resnet({"_conv_stem.weight": np.zeros((32, 3, 3, 3))})
    path = tmp_path / "resnet50.pth"  # a training checkpoint, as torch.save writes it
    torch.save({"state_dict": {f"module.{k}": v.float() for k, v in state_dict.items()}}, path)
    model, variables = load_torchvision_resnet(path)
    np.testing.assert_array_equal(variables["params"]["stage3_block6"]["conv3"]["kernel"][0, 0],
                                  state_dict["layer3.5.conv3.weight"].float().numpy()[:, :, 0, 0].T)


def test_a_torchvision_file_starts_a_resnet50_fine_tune(reference, tmp_path):
    """What --config.pretrained=resnet50-*.pth does in a stanford_dogs_resnet50 run: backbone from the file,
    a new 120-class head."""
    from train.pretrained import merge_pretrained

    _, state_dict = reference
    path = tmp_path / "resnet50.pth"
    torch.save({k: v.float() for k, v in state_dict.items()}, path)
    abstract = jax.eval_shape(lambda: ResNet50(num_classes=120).init(jax.random.key(0), np.zeros((1, 64, 64, 3)),
                                                                     train=False))
    fresh = jax.tree.map(lambda s: np.full(s.shape, 7.0, s.dtype), abstract)
    merged = merge_pretrained(fresh, load_pretrained_variables("resnet50", str(path)))
    assert merged["params"]["classifier"]["kernel"].shape == (2048, 120)
    assert (merged["params"]["classifier"]["kernel"] == 7.0).all()  # the fresh head
    np.testing.assert_array_equal(merged["batch_stats"]["stage1_block1"]["bn3"]["mean"],
                                  state_dict["layer1.0.bn3.running_mean"].float().numpy())
