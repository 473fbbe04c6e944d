from pathlib import Path

import pytest

from tests.fakedata import write_card, write_fake_dataset, write_toy_protocol

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
    protocol = write_toy_protocol(
        folder, "toy", {"toyset": "sky\ngrass, lawn\ncat\ndog, puppy\n", "toyset_bg": "cat\ndog\n"},
        {
            "toyset": {"dataset": "toyset.yaml", "classes": "names/toyset.txt"},
            "toyset_bg": {"dataset": "toyset_bg.yaml", "classes": "names/toyset_bg.txt",
                          "background": {"rule": "threshold"}},
        },
    )
    return {"protocol": protocol, "data": data, "results": tmp_path / "results", "root": tmp_path}
