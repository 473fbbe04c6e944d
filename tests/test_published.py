import textwrap

import pytest

from benchmark.cli import main
from benchmark.errors import ConfigError
from benchmark.published import DEFAULT_TOLERANCE, find_entry, load_published, published_files

ENTRY = """\
entries:
  - method: tcl
    backbone: ViT-B/16
    protocol: tcl8
    dataset: voc21
    miou: 55.0
    source: Cha et al., CVPR 2023, Table 2
"""


def write(folder, name, text):
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_the_repository_published_files_pass_the_check():
    published = load_published()
    for entry in published.entries:
        assert entry.source
    assert all(path.name.startswith("published") for path in published_files())


def test_an_entry_without_a_source_is_rejected_naming_file_and_entry(tmp_path):
    path = write(tmp_path, "published.yaml", ENTRY + """\
  - method: maskclip
    backbone: ViT-B/16
    protocol: tcl8
    dataset: voc20
    miou: 74.9
""")
    with pytest.raises(ConfigError) as error:
        load_published([path])
    message = str(error.value)
    assert str(path) in message and "entry 2 (line 8)" in message and "maskclip" in message
    assert "missing required key 'source'" in message
    write(tmp_path, "published.yaml", ENTRY.replace("Cha et al., CVPR 2023, Table 2", "' '"))
    with pytest.raises(ConfigError, match="entry 1 .*key 'source' is empty"):
        load_published([path])


@pytest.mark.parametrize(("change", "message"), [
    ("    miou: 55.0\n", "gives no number"),
    ("    miou: 155.0\n", r"key 'miou' must be a percentage in \[0, 100\]"),
    ("    miou: 55.0\n    year: 2023\n", "unknown key 'year'"),
    ("    miou: '55'\n", "key 'miou' must be a number"),
    ("    miou: 55.0\n    third_party: maybe\n", "key 'third_party' must be true/false"),
    ("    miou: 55.0\n    run: {weights: [{url: x}]}\n", "run: weights 1: missing required key 'file'"),
])
def test_malformed_entries_are_clear_errors(tmp_path, change, message):
    text = ENTRY.replace("    miou: 55.0\n", change if "no number" not in message else "")
    with pytest.raises(ConfigError, match=message):
        load_published([write(tmp_path, "published.yaml", text)])


def test_a_benchmark_the_protocol_lacks_is_rejected(tmp_path):
    path = write(tmp_path, "published.yaml", ENTRY.replace("dataset: voc21", "dataset: voc99"))
    with pytest.raises(ConfigError, match=r"protocol 'tcl8' has no benchmark 'voc99'"):
        load_published([path])


def test_duplicates_across_files_conflict_or_warn(tmp_path):
    first = write(tmp_path, "published.yaml", ENTRY)
    same = write(tmp_path, "published_tcl.yaml", ENTRY)
    published = load_published([first, same])
    assert len(published.entries) == 2 and "repeats" in published.warnings[0]
    other = write(tmp_path, "published_other.yaml", ENTRY.replace("55.0", "55.4"))
    with pytest.raises(ConfigError, match=r"published_other.yaml: entry 1 .* gives \{'miou': 55.4\}"):
        load_published([first, other])
    variant = write(tmp_path, "published_variant.yaml", ENTRY.replace("55.0", "55.4") + "    variant: repo\n")
    assert len(load_published([first, variant]).entries) == 2


def test_top_level_tolerance_per_entry_tolerance_and_relative_run_protocols(tmp_path):
    path = write(tmp_path, "published_x.yaml", "tolerance: 0.5\n" + ENTRY + """\
  - method: toy
    backbone: none
    protocol: toy
    dataset: toyset
    miou: 9.2
    tolerance: 1.0
    source: test
    run: {method: "tests.toy_method:ToyMethod", protocol: protocols/toy.yaml, options: {seed: 0}}
""")
    published = load_published([path])
    tcl, toy = published.entries
    assert published.tolerance_for(tcl) == 0.5 and published.tolerance_for(toy) == 1.0
    assert toy.run.protocol == str(tmp_path / "protocols" / "toy.yaml") and toy.run.protocol_name == "toy"
    assert tcl.run is None and load_published([]).entries == [] and DEFAULT_TOLERANCE == 0.3


def test_find_entry_matches_run_options_checkpoint_and_backbone(tmp_path):
    path = write(tmp_path, "published.yaml", ENTRY + "    run: {checkpoint: tcl.pth, options: {pamr: true}}\n")
    entries = load_published([path]).entries
    method = {"name": "tcl", "config": {"pamr": True, "kp_w": 0.3}, "checkpoint": "/w/tcl.pth",
              "backbone": "ViT-B-16/openai"}
    assert find_entry(entries, "tcl8", "voc21", method) is entries[0]
    assert find_entry(entries, "tcl8", "voc20", method) is None
    assert find_entry(entries, "tcl8_nopamr", "voc21", method) is None
    assert find_entry(entries, "tcl8", "voc21", {**method, "config": {"pamr": False}}) is None
    assert find_entry(entries, "tcl8", "voc21", {**method, "checkpoint": "other.pth"}) is None
    assert find_entry(entries, "tcl8", "voc21", {**method, "checkpoint": None}) is entries[0]
    assert find_entry(entries, "tcl8", "voc21", {**method, "backbone": "ViT-L-14/openai"}) is None


def test_check_published_command(tmp_path, capsys):
    good = write(tmp_path, "published.yaml", ENTRY)
    assert main(["check-published", str(good)]) == 0
    assert "1 entries" in capsys.readouterr().out
    bad = write(tmp_path, "published_bad.yaml", ENTRY.replace("    source: Cha et al., CVPR 2023, Table 2\n", ""))
    assert main(["check-published", str(bad)]) == 2
    assert "missing required key 'source'" in capsys.readouterr().err


def test_a_repeated_key_and_a_run_protocol_that_does_not_exist_are_refused(tmp_path, capsys):
    repeated = write(tmp_path, "published.yaml", ENTRY.replace("    miou: 55.0\n", "    miou: 55.0\n    miou: 56.0\n"))
    with pytest.raises(ConfigError, match=r"line 7, column 5: invalid YAML: repeated key 'miou'"):
        load_published([repeated])
    assert main(["check-published", str(repeated)]) == 2
    assert "repeated key 'miou'" in capsys.readouterr().err
    run = "    miou: 55.0\n    run: {protocol: tcl9}\n"
    missing = write(tmp_path, "other.yaml", ENTRY.replace("    miou: 55.0\n", run))
    with pytest.raises(ConfigError, match=r"key 'protocol' names 'tcl9', which is not a protocol of the suite"):
        load_published([missing])


ROW = """\
entries:
  - &row
    method: sclip
    backbone: ViT-B/16
    protocol: sclip
    dataset: voc21
    miou: 59.1
    source: a paper's table
    average: {average}
  - {{<<: *row, dataset: context60, miou: 30.4}}
  - {{<<: *row, dataset: coco_object, miou: 30.5}}
  - {{<<: *row, dataset: voc20, miou: 80.4}}
  - {{<<: *row, dataset: context59, miou: 34.2}}
  - {{<<: *row, dataset: coco_stuff171, miou: 22.4}}
  - {{<<: *row, dataset: cityscapes, miou: 32.2}}
  - {{<<: *row, dataset: ade20k, miou: {ade20k}}}
"""


def test_every_shipped_row_that_states_an_average_averages_to_it():
    rows: dict[tuple, list] = {}
    for entry in load_published().entries:
        if entry.average is not None:
            rows.setdefault((entry.method, entry.protocol, entry.variant, entry.average), []).append(entry)
    assert len(rows) >= 6  # SCLIP paper, NACLIP README, TCL with and without PAMR, CCAR's two rows, ...
    for (method, protocol, _, average), row in rows.items():
        mean = sum(entry.values["miou"] for entry in row) / len(row)
        decimals = len(repr(average).split(".")[1])
        datasets = [entry.dataset for entry in row]
        assert len(set(datasets)) == len(datasets) >= 3, (method, protocol, datasets)  # ResCLIP: 3 + 5
        assert abs(mean - average) <= 0.5 * 10**-decimals + 1e-9, (method, protocol, mean)


# SCLIP's paper row: 305.3 / 8 = 38.1625, printed 38.2; a mistyped ADE20K of 16.9 would give 38.2625.
@pytest.mark.parametrize(("average", "ade20k", "fine"), [
    (38.2, 16.1, True),
    (38.2, 16.9, False),
    (38.16, 16.1, True),  # within half a unit of the last printed digit
    (38.17, 16.1, False),
    (38.15, 16.1, False),
])
def test_a_row_whose_numbers_do_not_give_its_stated_average_is_refused(tmp_path, average, ade20k, fine):
    path = write(tmp_path, "published.yaml", ROW.format(average=average, ade20k=ade20k))
    if fine:
        load_published([path])
        return
    with pytest.raises(ConfigError, match=r"averages 38\.\d+, but the entries state average"):
        load_published([path])
