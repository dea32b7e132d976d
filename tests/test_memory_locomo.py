"""memory.locomo: evidence ids as LoCoMo writes them, including its malformed entries."""
from memory.locomo import evidence_ids, qa_items


def test_evidence_entries_holding_two_ids_are_split():
    assert evidence_ids(["D8:6; D9:17"]) == ["D8:6", "D9:17"]
    assert evidence_ids(["D1:3", "D1:3, D2:4", "D5:1 D5:2"]) == ["D1:3", "D2:4", "D5:1", "D5:2"]
    assert evidence_ids([]) == [] and evidence_ids(None) == []


def test_qa_items_keep_categories_with_evidence_and_split_it():
    sample = {"qa": [{"question": "a", "evidence": ["D8:6; D9:17"], "category": 1},
                     {"question": "b", "evidence": [], "category": 4},
                     {"question": "c", "evidence": ["D1:1"], "category": 5}]}
    assert qa_items(sample) == [{"question": "a", "evidence": ["D8:6", "D9:17"], "category": 1}]
    assert sample["qa"][0]["evidence"] == ["D8:6; D9:17"]  # the sample itself is left alone
