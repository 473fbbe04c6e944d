from pathlib import Path

import pytest
import yaml

from tests.fakedata import write_card, write_fake_dataset

TOY_SIZES = [(24, 40), (30, 30), (20, 52), (36, 28), (26, 33), (40, 44), (22, 25)]


@pytest.fixture
def toy_world(tmp_path: Path) -> dict[str, Path]:
    """Two small cards with fake data and a protocol over them, all under tmp_path."""
    from benchmark.data import load_card

    folder = tmp_path / "protocols"
    folder.mkdir()
    data = tmp_path / "data"
    count = len(TOY_SIZES)
    plain = write_card(folder, "toyset", ["sky", "grass", "cat", "dog"], count)
    with_bg = write_card(folder, "toyset_bg", ["background", "cat", "dog"], count, has_background=True)
    write_fake_dataset(load_card(plain), data, count, sizes=TOY_SIZES, seed=1)
    write_fake_dataset(load_card(with_bg), data, count, sizes=TOY_SIZES, seed=2)
    (folder / "names").mkdir()
    (folder / "names" / "toyset.txt").write_text("sky\ngrass, lawn\ncat\ndog, puppy\n")
    (folder / "names" / "toyset_bg.txt").write_text("cat\ndog\n")
    (folder / "templates.txt").write_text("a photo of a {}.\n")
    protocol = {
        "name": "toy",
        "image": {"resize": {"short": 24, "long_max": 64}, "mean": [120, 115, 100], "std": [60, 60, 60]},
        "inference": {"mode": "slide", "crop": 16, "stride": 8},
        "text": {"templates": "templates.txt", "aggregation": "mean_normalised"},
        "benchmarks": {
            "toyset": {"dataset": "toyset.yaml", "classes": "names/toyset.txt"},
            "toyset_bg": {"dataset": "toyset_bg.yaml", "classes": "names/toyset_bg.txt",
                          "background": {"rule": "threshold"}},
        },
    }
    (folder / "toy.yaml").write_text(yaml.safe_dump(protocol, sort_keys=False))
    return {"protocol": folder / "toy.yaml", "data": data, "results": tmp_path / "results", "root": tmp_path}
