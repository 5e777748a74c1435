"""jaxtrain.perf: the op-time profile of a compiled call."""
import re

import jax
import jax.numpy as jnp

from jaxtrain import perf


def test_op_time_by_kind_lists_the_ops_of_the_compiled_program():
  a = jnp.ones((512, 512))
  f = jax.jit(lambda a: (a @ a, jnp.sin(a) * 2.0, jnp.cumsum(a, axis=0))).lower(a).compile()
  jax.block_until_ready(f(a))
  hlo = f.as_text()
  rows = perf.op_time_by_kind(lambda: f(a), hlo)
  kinds = [k for k, _, _ in rows]
  assert len(rows) >= 2, rows  # the matmul and the elementwise work are separate ops
  assert all(s > 0 and n >= 1 for _, s, n in rows), rows
  for k in kinds:  # every kind is a name of the program's ops, less its ".N" suffix
    assert not re.search(r"\.\d+$", k) and re.search(rf"%{re.escape(k)}(\.\d+)? = ", hlo), k
  assert [s for _, s, _ in rows] == sorted((s for _, s, _ in rows), reverse=True)
  # A different program's ops are not counted.
  assert perf.op_time_by_kind(lambda: f(a), "ENTRY %main { ROOT %other.1 = f32[] constant(0) }") == []
