"""TemporalShift against a NumPy reference (offline and online), and in a backbone: frames mix
only through the shift, and the online shift never reads the future."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvision.models import set_shift
from jaxvision.models.resnet import BasicBlock
from jaxvision.models.tsm import TemporalShift


def np_shift(x: np.ndarray, t: int, fold_div: int, mode: str) -> np.ndarray:
  """TSM's shift written frame by frame: x [N*T, H, W, C]."""
  v = x.reshape(-1, t, *x.shape[1:])
  out = np.zeros_like(v)
  fold = x.shape[-1] // fold_div
  for f in range(t):
    if mode == "offline":
      if f + 1 < t:
        out[:, f, ..., :fold] = v[:, f + 1, ..., :fold]
      if f > 0:
        out[:, f, ..., fold:2 * fold] = v[:, f - 1, ..., fold:2 * fold]
      out[:, f, ..., 2 * fold:] = v[:, f, ..., 2 * fold:]
    else:
      if f > 0:
        out[:, f, ..., :fold] = v[:, f - 1, ..., :fold]
      out[:, f, ..., fold:] = v[:, f, ..., fold:]
  return out.reshape(x.shape)


@pytest.mark.parametrize("mode", ["offline", "online"])
@pytest.mark.parametrize("t,c,fold_div", [(4, 16, 8), (3, 12, 4), (1, 8, 8), (5, 7, 8)])
def test_shift_matches_numpy(mode, t, c, fold_div):
  x = np.random.default_rng(0).standard_normal((2 * t, 3, 2, c)).astype(np.float32)
  got = jax.jit(TemporalShift(t, fold_div, mode))(jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(got), np_shift(x, t, fold_div, mode))


def test_bad_settings_name_the_field():
  for kw, field in ((dict(num_frames=0), "num_frames"), (dict(num_frames=4, fold_div=0), "fold_div"),
                    (dict(num_frames=4, mode="both"), "mode")):
    with pytest.raises(ValueError, match=f"TemporalShift.{field}="):
      TemporalShift(**kw)
  with pytest.raises(ValueError, match="not a multiple of num_frames=4"):
    TemporalShift(4)(jnp.zeros((6, 2, 2, 8)))


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_residual_block_mixes_frames_only_through_the_shift(mode):
  """A ResNet block with the shift: changing frame 2 of a 4-frame video changes frames 2 and 3,
  frame 1 only offline (online never reads the future), and never frame 0 or the other video;
  without the shift only frame 2."""
  t = 4
  block = BasicBlock(16, 16, rngs=nnx.Rngs(0), shift=TemporalShift(t, mode=mode))
  block.eval()
  x = jax.random.normal(jax.random.key(0), (2 * t, 6, 6, 16))
  y = x.at[2].add(1.0)
  apply = nnx.jit(lambda m, v: m(v))

  def changed(m):
    a, b = apply(m, x), apply(m, y)
    return [not np.allclose(a[i], b[i], atol=1e-6) for i in range(2 * t)]
  assert changed(block) == [False, mode == "offline", True, True] + [False] * t
  assert set_shift(block, None) == 1
  assert changed(block) == [i == 2 for i in range(2 * t)]
