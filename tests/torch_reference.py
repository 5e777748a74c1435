"""PyTorch models with the official AdaFocusV2 module layout and key names, for the parity tests.

Written for these tests from the official code's description (LeapLabTHU/AdaFocusV2): the
MobileNetV2 of tonylins/pytorch-mobilenet-v2 (one flat ``conv`` Sequential per block), the
torchvision ResNet-50 (v1.5: stride on the 3x3 conv), TSM's shift as a wrapper whose ``net`` is
the wrapped conv, and the two AdaFocusV2 variants' heads, policies and patch crop
(``affine_grid`` + ``grid_sample``, align_corners=False). (torchvision itself is not used: its
PyPI wheels need a CUDA build of torch, several GB, where these tests run on torch's CPU build.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
  layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout)]
  return layers + ([nn.ReLU6(inplace=True)] if act else [])


class TemporalShift(nn.Module):
  """TSM: 1/n_div of the channels from the next frame, 1/n_div from the previous, then ``net``."""

  def __init__(self, net: nn.Module, n_segment: int, n_div: int = 8):
    super().__init__()
    self.net, self.n_segment, self.fold_div = net, n_segment, n_div

  def forward(self, x):
    nt, c, h, w = x.shape
    v = x.view(nt // self.n_segment, self.n_segment, c, h, w)
    fold = c // self.fold_div
    out = torch.zeros_like(v)
    out[:, :-1, :fold] = v[:, 1:, :fold]
    out[:, 1:, fold:2 * fold] = v[:, :-1, fold:2 * fold]
    out[:, :, 2 * fold:] = v[:, :, 2 * fold:]
    return self.net(out.view(nt, c, h, w))


class InvertedResidual(nn.Module):
  def __init__(self, cin: int, cout: int, stride: int, t: int):
    super().__init__()
    hidden = cin * t
    self.use_res_connect = stride == 1 and cin == cout
    expand = conv_bn(cin, hidden, 1) if t != 1 else []
    self.conv = nn.Sequential(*expand, *conv_bn(hidden, hidden, 3, stride, hidden),
                              *conv_bn(hidden, cout, 1, act=False))

  def forward(self, x):
    return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
  SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1))

  def __init__(self, shift_segments: int = 0, imagenet_head: bool = False):
    super().__init__()
    layers, cin = [nn.Sequential(*conv_bn(3, 32, 3, 2))], 32
    for t, c, n, s in self.SETTINGS:
      for i in range(n):
        block = InvertedResidual(cin, c, s if i == 0 else 1, t)
        if shift_segments and len(block.conv) == 8 and block.use_res_connect:
          block.conv[0] = TemporalShift(block.conv[0], shift_segments)
        layers.append(block)
        cin = c
    layers.append(nn.Sequential(*conv_bn(cin, 1280, 1)))
    self.features = nn.Sequential(*layers)
    if imagenet_head:
      self.classifier = nn.Linear(1280, 1000)  # held, unused, as in the official model

  def forward(self, x):
    return self.features(x)


class Bottleneck(nn.Module):
  def __init__(self, cin: int, planes: int, stride: int, shift_segments: int = 0):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
    if shift_segments:
      self.conv1 = TemporalShift(self.conv1, shift_segments)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = None
    if stride != 1 or cin != planes * 4:
      self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                      nn.BatchNorm2d(planes * 4))

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    h = F.relu(self.bn1(self.conv1(x)))
    h = F.relu(self.bn2(self.conv2(h)))
    return F.relu(self.bn3(self.conv3(h)) + identity)


class ResNet50(nn.Module):
  def __init__(self, shift_segments: int = 0, imagenet_head: bool = False):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    cin = 64
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
      blocks = []
      for j in range(n):
        blocks.append(Bottleneck(cin, planes, 2 if i > 0 and j == 0 else 1, shift_segments))
        cin = planes * 4
      setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
    if imagenet_head:
      self.fc = nn.Linear(2048, 1000)

  def forward(self, x):
    h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
    return self.layer4(self.layer3(self.layer2(self.layer1(h))))


def crop(frames, actions, patch: int):
  """Patches [N, C, P, P] at positions ``actions`` [N, 2] (row, column in [0, 1]), bilinear."""
  n, c, size, _ = frames.shape
  theta = torch.zeros(n, 2, 3)
  corner = actions * (size - patch)
  theta[:, 0, 0] = theta[:, 1, 1] = patch / size
  theta[:, 0, 2] = -1 + (2 * corner[:, 1] + patch) / size
  theta[:, 1, 2] = -1 + (2 * corner[:, 0] + patch) / size
  grid = F.affine_grid(theta, [n, c, patch, patch], align_corners=False)
  return F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def head(din: int, classes: int):
  return nn.Sequential(nn.Dropout(0.5), nn.Linear(din, classes))


class AdaFocusActNet(nn.Module):
  """The ActivityNet / FCVID / Mini-Kinetics variant; ``forward(frames [B, T, 3, S, S])``, frames
  already in the model's order, -> (logits per step [B, T, C], global, local [B*T, C])."""

  def __init__(self, classes: int, frames: int, image: int, patch: int, hidden: int):
    super().__init__()
    self.T, self.patch = frames, patch
    self.global_CNN = MobileNetV2(imagenet_head=True)
    self.global_CNN_fc = head(1280, classes)
    self.local_CNN = ResNet50(imagenet_head=True)
    self.local_CNN_fc = head(2048, classes)
    spatial = (image // 32) ** 2
    self.policy_stn = nn.Module()
    self.policy_stn.encoder = nn.Sequential(
        nn.Conv2d(1280, 64, 1, bias=False), nn.BatchNorm2d(64), nn.Tanh(), nn.Flatten(),
        nn.Linear(64 * spatial, hidden), nn.BatchNorm1d(hidden), nn.Tanh())
    self.policy_stn.gru = nn.GRU(hidden, hidden, batch_first=True)
    self.policy_stn.fc = nn.Sequential(nn.Linear(hidden, 2), nn.Sigmoid())
    self.classifier = nn.Module()
    self.classifier.mlp = nn.Module()
    self.classifier.mlp.layers = nn.Sequential(nn.Linear(3328, 4096), nn.BatchNorm1d(4096), nn.ReLU())
    self.classifier.classifiers = nn.ModuleList(head(4096, classes) for _ in range(frames))

  def forward(self, frames):
    b, t = frames.shape[:2]
    x = frames.reshape(b * t, *frames.shape[2:])
    fmap = self.global_CNN(x)
    g = fmap.mean((2, 3))
    h = self.policy_stn.encoder(fmap).view(b, t, -1)
    actions = self.policy_stn.fc(self.policy_stn.gru(h)[0].reshape(b * t, -1))
    local = self.local_CNN(crop(x, actions, self.patch)).mean((2, 3))
    z = self.classifier.mlp.layers(torch.cat([g, local], -1)).view(b, t, -1)
    logits, cur = [], z[:, 0]
    for i in range(t):
      cur = torch.maximum(cur, z[:, i])
      logits.append(self.classifier.classifiers[i](cur))
    return (torch.stack(logits, 1), self.global_CNN_fc(g), self.local_CNN_fc(local),
            actions.view(b, t, 2))


class TSN(nn.Module):
  def __init__(self, base_model: nn.Module, din: int, classes: int):
    super().__init__()
    self.base_model, self.new_fc, self.new_new_fc = base_model, nn.Linear(din, classes), nn.Linear(din, classes)


class AdaFocusTSM(nn.Module):
  """The Sth-Sth / Jester variant; ``forward(glance [B, Tg, 3, S, S], focus [B, Tf, 3, S, S])``
  -> (logits, global aux, local aux [B, C], actions [B, 2])."""

  def __init__(self, classes: int, glance: int, focus: int, image: int, patch: int):
    super().__init__()
    self.Tg, self.Tf, self.patch = glance, focus, patch
    self.global_CNN = TSN(MobileNetV2(shift_segments=glance), 1280, classes)
    self.local_CNN = TSN(ResNet50(shift_segments=focus), 2048, classes)
    spatial = (image // 32) ** 2
    self.policy_stn = nn.Sequential(
        nn.Conv2d(1280 * glance, 64, 1, bias=False), nn.BatchNorm2d(64), nn.Tanh(), nn.Flatten(),
        nn.Linear(64 * spatial, 1024), nn.BatchNorm1d(1024), nn.Tanh(),
        nn.Linear(1024, 512), nn.BatchNorm1d(512), nn.Tanh(), nn.Linear(512, 2), nn.Sigmoid())

  def forward(self, glance, focus):
    b = glance.shape[0]
    fmap = self.global_CNN.base_model(glance.reshape(b * self.Tg, *glance.shape[2:]))
    g = fmap.mean((2, 3))
    g_logits = self.global_CNN.new_fc(g).view(b, self.Tg, -1).mean(1)
    g_aux = self.global_CNN.new_new_fc(g).view(b, self.Tg, -1).mean(1)
    actions = self.policy_stn(fmap.reshape(b, self.Tg * 1280, *fmap.shape[2:]))
    patches = crop(focus.reshape(b, -1, *focus.shape[3:]), actions, self.patch)  # one per video
    local = self.local_CNN.base_model(patches.reshape(b * self.Tf, 3, self.patch, self.patch))
    local = local.mean((2, 3))
    l_logits = self.local_CNN.new_fc(local).view(b, self.Tf, -1).mean(1)
    l_aux = self.local_CNN.new_new_fc(local).view(b, self.Tf, -1).mean(1)
    return g_logits + l_logits, g_aux, l_aux, actions


def randomize(model: nn.Module, calibrate, seed: int = 0) -> nn.Module:
  """Random weights; batch-norm statistics taken from one training-mode pass over ``calibrate``
  (so activations stay of order one through the deep backbones), then random BN affines, small on
  the last BN of each bottleneck branch (else ResNet-50's residual sum reaches the hundreds and
  float32 rounding alone moves logits by more than the tolerance). Returns the model in eval
  mode."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (nn.Conv2d, nn.Linear)):
        gain = 2.0 if isinstance(m, nn.Conv2d) else 1.0
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (gain / m.weight[0].numel()) ** 0.5)
        if m.bias is not None:
          m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
      elif isinstance(m, nn.GRU):
        for p in m.parameters():
          p.copy_(0.2 * torch.randn(p.shape, generator=g))
      elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        m.momentum = 1.0
    model.train()
    calibrate(model)
    for m in model.modules():
      if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    for m in model.modules():
      if isinstance(m, Bottleneck):
        m.bn3.weight.mul_(0.15)
  return model.eval()
