"""The test tiers are enforced: a test without exactly one of unit / integration / e2e fails collection, and each
tier gets its timeout (tests/conftest.py)."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.unit

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()


def test_a_test_without_a_tier_fails_collection(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_untiered="def test_nothing():\n    pass\n",
        test_two="import pytest\n\n@pytest.mark.unit\n@pytest.mark.e2e\ndef test_both():\n    pass\n",
    )
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*test_two.py::test_both: several tiers: e2e, unit", "*test_nothing: no tier marker"])


def test_each_tier_gets_its_timeout(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_tiered=(
            "import pytest\n\npytestmark = pytest.mark.unit\n\n"
            "def test_unit(request):\n    assert request.node.get_closest_marker('timeout').args == (120,)\n\n"
            "@pytest.mark.timeout(5)\ndef test_own(request):\n"
            "    assert request.node.get_closest_marker('timeout').args == (5,)\n"
        )
    )
    pytester.runpytest("-q", "-p", "no:cacheprovider").assert_outcomes(passed=2)
