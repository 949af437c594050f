"""The CLC nomenclature against bigearthnet_common.constants (an independent source)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bigearthnet_common import constants as ben

from bigearthnet.clc import nomenclature as nom
from bigearthnet.errors import UnknownLabelError


def test_44_classes_with_codes_and_parents_match_reference():
    assert len(nom.CLC_CLASSES) == ben.CLC_LV3_COUNT == 44
    assert [c.name for c in nom.CLC_CLASSES] == list(ben.CLC_LV3_LABELS)
    for c in nom.CLC_CLASSES:
        assert str(c.code) == ben.CLC_LV3_TO_CLC_CODE[c.name], c.name
        lv2 = ben.CLC_LV3_TO_LV2[c.name]
        assert c.level2_code == ben.CLC_LV2_TO_CLC_CODE[lv2], c.name
        assert c.level1_code == ben.CLC_LV1_TO_CLC_CODE[ben.CLC_LV2_TO_LV1[lv2]], c.name
    assert len({c.level2_code for c in nom.CLC_CLASSES}) == ben.CLC_LV2_COUNT
    assert len({c.level1_code for c in nom.CLC_CLASSES}) == ben.CLC_LV1_COUNT
    assert nom.CLASS_BY_CODE[311].level2_name == "Forests"
    assert nom.CLASS_BY_CODE[111].level1_name == "Artificial surfaces"


def test_43_and_19_lists_in_official_order():
    assert nom.LABELS_43 == ben.OLD_LABELS_ORIGINAL_ORDER
    assert nom.LABELS_19 == ben.NEW_LABELS_ORIGINAL_ORDER
    assert "Glaciers and perpetual snow" not in nom.LABELS_43
    # Not alphabetical (the TorchGeo pitfall).
    assert list(nom.LABELS_43) != sorted(nom.LABELS_43)
    assert list(nom.LABELS_19) != sorted(nom.LABELS_19)
    assert list(nom.CODES_43) == sorted(nom.CODES_43)


def test_43_to_19_mapping_matches_reference():
    assert nom.NAME_43_TO_NAME_19 == ben.OLD2NEW_LABELS_DICT
    for code, name in nom.CODE_TO_NAME_43.items():
        if name is not None:
            assert nom.CODE_TO_NAME_19[code] == ben.OLD2NEW_LABELS_DICT[name]
    assert nom.CODE_TO_NAME_43[335] is None
    assert nom.CODE_TO_NAME_19[335] is None
    assert nom.CODE_TO_NAME_43[999] is None and nom.CODE_TO_NAME_19[999] is None
    assert nom.CODE_TO_NAME_19[122] is None
    assert nom.CODE_TO_NAME_19[112] == "Urban fabric"


def test_multi_hot_positions():
    v = nom.multi_hot(["Sea and ocean", "Continuous urban fabric", "Sea and ocean"])
    assert v.dtype == np.uint8 and v.shape == (43,)
    assert np.flatnonzero(v).tolist() == [0, 42]
    v19 = nom.multi_hot(["Marine waters", "Arable land"], 19)
    assert np.flatnonzero(v19).tolist() == [2, 18]
    custom = nom.multi_hot(["b"], ["a", "b", "c"])
    assert custom.tolist() == [0, 1, 0]
    m = nom.multi_hot_matrix([["Arable land"], []], nom.LABELS_19)
    assert m.shape == (2, 19) and m.sum() == 1


def test_multi_hot_rejects_unknown_and_wrong_nomenclature():
    with pytest.raises(UnknownLabelError, match="Arable land"):
        nom.multi_hot(["Arable land"], 43)  # a 19-class name in the 43 list
    with pytest.raises(UnknownLabelError):
        nom.multi_hot([], 20)


def test_lookup_tables_consistent():
    idx43, idx19, known = nom.code_lookup_tables()
    for code in nom.CODES_44:
        assert known[code]
        n43 = nom.CODE_TO_NAME_43[code]
        assert (idx43[code] >= 0) == (n43 is not None)
        if n43 is not None:
            assert nom.LABELS_43[idx43[code]] == n43
        n19 = nom.CODE_TO_NAME_19[code]
        assert (idx19[code] >= 0) == (n19 is not None)
        if n19 is not None:
            assert nom.LABELS_19[idx19[code]] == n19
    assert not known[998] and known[999] and known[0]


def test_class_orders_is_json_and_complete():
    orders = json.loads(json.dumps(nom.class_orders()))
    assert orders["labels_43"] == list(ben.OLD_LABELS_ORIGINAL_ORDER)
    assert orders["labels_19"] == list(ben.NEW_LABELS_ORIGINAL_ORDER)
    assert len(orders["clc_codes_43"]) == 43
    assert orders["map_43_to_19"]["Bare rock"] is None
