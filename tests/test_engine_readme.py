"""The complete minimal example of jaxtrain/README.md runs as written."""
import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jaxtrain",
                      "README.md")


def test_readme_minimal_example_runs(capsys):
  text = open(README).read()
  blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
  assert len(blocks) == 1, "the README has one complete example"
  namespace = {"__name__": "readme_example"}
  exec(compile(blocks[0], README, "exec"), namespace)  # its own asserts check the result
  result = namespace["result"]
  assert result.step == 60 and [e["step"] for e in result.eval_history] == [20, 40, 60]
  assert result.best["metric"] == "val/accuracy"
  assert os.path.exists(os.path.join(namespace["workdir"], "summary.json"))
