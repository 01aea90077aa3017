import numpy as np
import pytest

from runtime.engine.object_registry import ObjectGroup, ObjectRegistry


def test_labels_slots_and_groups():
    reg = ObjectRegistry()
    assert reg.add([7, 200], frame=0) == [0, 1]
    assert reg.add([200, 3], frame=4) == [2]  # 200 is known: not re-added
    assert reg.labels == (7, 200, 3)
    assert reg.slot(3) == 2 and reg.introduced_at(3) == 4 and reg.introduced_at(200) == 0
    assert reg.groups() == [ObjectGroup(0, (0, 1)), ObjectGroup(4, (2,))]
    assert reg.label_lookup().tolist() == [0, 7, 200, 3]
    assert reg.label_lookup().dtype == np.uint8
    assert 7 in reg and 5 not in reg and len(reg) == 3


def test_bad_labels():
    reg = ObjectRegistry()
    with pytest.raises(ValueError, match="1..255"):
        reg.add([0], frame=0)
    with pytest.raises(ValueError, match="1..255"):
        reg.add([256], frame=0)
    with pytest.raises(KeyError, match="not registered"):
        reg.slot(9)
