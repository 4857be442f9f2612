"""Every complete example in docs/testing.md runs and passes (through ``pytester``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).parents[2] / "docs" / "testing.md"
# A runnable example is a python block whose first line names its file: "# test_x.py".
_BLOCK = re.compile(r"```python\n# (?P<name>\w+\.py)\n(?P<body>.*?)```", re.DOTALL)


def _examples() -> dict[str, str]:
    found = {m["name"]: m["body"] for m in _BLOCK.finditer(DOC.read_text(encoding="utf-8"))}
    # The docs use readable passwords; mark them so the suite's log guard would
    # catch one leaking while the examples run.
    return {
        name: body.replace("-pw", "-pw-SECRET").replace("my-token", "my-token-SECRET")
        for name, body in found.items()
    }


def test_every_docs_example_passes(pytester: pytest.Pytester) -> None:
    examples = _examples()
    assert set(examples) == {
        "orders.py",
        "test_orders_pytest.py",
        "test_orders_responses.py",
        "test_orders_requests_mock.py",
        "test_orders_unittest.py",
        "test_orders_tls.py",
    }
    for name, body in examples.items():
        pytester.path.joinpath(name).write_text(body, encoding="utf-8")
    result = pytester.runpytest("-p", "no:hypothesispytest", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=16)
