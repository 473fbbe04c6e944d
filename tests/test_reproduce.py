import shutil

import pytest
import yaml

from benchmark.cli import main

PUBLISHED = "tests/data/published_test.yaml"


@pytest.fixture
def published(toy_world):
    """The test-only published file, next to the toy world's protocol."""
    path = toy_world["protocol"].parent / "published_test.yaml"
    shutil.copy(PUBLISHED, path)
    return path


def reproduce(world, published, *extra):
    report = world["root"] / "REPRODUCTION.md"
    code = main([
        "reproduce", "--published", str(published), "--report", str(report), "--data-root", str(world["data"]),
        "--results", str(world["results"]), "--weights-root", str(world["root"] / "weights"), "--workers", "0",
        "--batch-size", "3", "--no-progress", *extra,
    ])
    return code, report.read_text()


def section(report: str, title: str) -> str:
    return report.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_matching_numbers_pass_and_missing_entries_are_listed_with_what_to_download(toy_world, published):
    code, report = reproduce(toy_world, published)
    assert code == 0
    assert "**2 of 2 numbers reproduced, 0 beyond tolerance; 2 entries missing weights or data; " \
           "1 not runnable with the suite; 0 errors.**" in report
    compared = section(report, "Compared")
    assert compared.count("| ok ") == 2 and "FAIL" not in compared
    assert "| toyset " in compared and "9.21" in compared and "+0.00" in compared
    missing = section(report, "Missing weights or data")
    assert "toy-weights.pt from https://example.org/toy-weights.pt (sha256 0123abcd)" in missing
    assert "(needed by 1 entry: toy)" in missing and "| weights toy-weights.pt " in missing
    assert "the weights root" in missing and str(toy_world["root"]) not in report  # no machine path
    assert "voc21" in missing and "missing under" in missing and "datasets/README.md" in missing
    assert "groupvit" in section(report, "Not runnable with the suite")


def test_a_number_beyond_the_tolerance_fails_and_is_marked(toy_world, published):
    content = yaml.safe_load(published.read_text())
    content["entries"][0]["miou"] = 9.21 + 0.5
    content["entries"][1].update(miou=16.19 + 0.25)
    published.write_text(yaml.safe_dump(content))
    code, report = reproduce(toy_world, published)
    assert code == 1
    compared = section(report, "Compared")
    assert "| **FAIL** | toy " in compared and "-0.50" in compared
    assert "| ok " in compared and "-0.25" in compared
    assert "1 beyond tolerance" in report
    code, report = reproduce(toy_world, published, "--tolerance", "0.6")
    assert code == 0 and "0.6 mIoU for every entry" in report


def test_existing_records_of_the_same_protocol_are_reused(toy_world, published, monkeypatch):
    assert reproduce(toy_world, published)[0] == 0
    import benchmark.runner

    monkeypatch.setattr(benchmark.runner, "evaluate", lambda *a, **k: pytest.fail("evaluated again"))
    code, report = reproduce(toy_world, published)
    assert code == 0 and "2 of 2 numbers reproduced" in report


def test_strict_fails_on_missing_entries_and_dry_run_evaluates_nothing(toy_world, published):
    code, report = reproduce(toy_world, published, "--dry-run", "--strict")
    assert code == 1
    assert "## Ready to run (dry run)" in report and "## Compared" not in report
    assert not toy_world["results"].exists()


def test_a_number_with_two_sources_counts_as_reproduced_when_it_agrees_with_one_and_says_which(
        toy_world, published):
    content = yaml.safe_load(published.read_text())
    other = dict(content["entries"][0], miou=9.21 + 0.32, source="another source of the same number",
                 third_party=True)
    content["entries"].append(other)
    published.write_text(yaml.safe_dump(content))
    code, report = reproduce(toy_world, published)
    assert code == 0 and "0 beyond tolerance" in report
    compared = section(report, "Compared")
    assert "| other source | toy " in compared and "-0.32" in compared
    several = section(report, "Numbers with several published values")
    assert ("toy toy/toyset mIoU measured 9.21: agrees with tests/test_reproduce.py, measured on the toy world; "
            "not with another source of the same number") in several
    content["entries"][0]["miou"] = 9.21 - 0.5  # now neither source agrees: the run fails
    published.write_text(yaml.safe_dump(content))
    code, report = reproduce(toy_world, published)
    assert code == 1 and "2 beyond tolerance" in report and "agrees with none" in report
