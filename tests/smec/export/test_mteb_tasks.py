"""smec datasets as mteb custom retrieval tasks (offline), and MTEB's own tasks by name."""

from smec.export.mteb_tasks import CUSTOM_K_VALUES, resolve_task


def test_a_built_in_dataset_is_an_offline_retrieval_task():
    rt = resolve_task("wordnet-demo", "test")
    assert rt.custom and rt.name == "smec-wordnet-demo" and rt.split == "test"
    meta = rt.task.metadata
    assert meta.type == "Retrieval" and meta.main_score == "ndcg_at_10" and meta.eval_splits == ["test"]
    assert tuple(rt.task.k_values) == CUSTOM_K_VALUES
    rt.task.load_data()
    split = rt.task.dataset["default"]["test"]
    assert len(split["corpus"]) == 10_000 and len(split["queries"]) == 2_000
    # The texts smec embeds (a corpus title is already joined to its text), ids as in the qrels.
    assert split["corpus"]["text"][:3] == rt.dataset.corpus.texts[:3]
    assert split["relevant_docs"] == rt.dataset.qrels["test"]


def test_other_names_are_mteb_tasks(monkeypatch):
    import mteb

    seen = []

    class Task:
        metadata = type("M", (), {"name": "SciFact"})

        def load_data(self):
            seen.append("loaded")

    monkeypatch.setattr(mteb, "get_task", lambda name: Task() if name == "SciFact" else None)
    rt = resolve_task("SciFact", "test")
    assert not rt.custom and rt.name == "SciFact" and seen == ["loaded"]  # the real loading path runs
