"""MTEB tasks for `smec mteb`: the built-in datasets and BEIR folders as custom retrieval tasks, or MTEB's own.

A name that is a built-in dataset (``wordnet``, ``wordnet-demo``) or a BEIR folder becomes an
``AbsTaskRetrieval`` whose data come from :func:`datamodules.datasets.load_dataset` (offline, the texts
`smec embed` embedded: a corpus title is already joined to its text); any other name is looked up in MTEB
(``mteb.get_task``) and loads its data the usual MTEB way, from the Hugging Face hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datamodules.datasets import BUILTIN_DATASETS
from datamodules.errors import InputError

# Search depth of the custom tasks: enough for nDCG@10 / Recall@100 / MRR@10 and ties at rank 10.
CUSTOM_K_VALUES = (1, 3, 5, 10, 20, 100)


class MtebTaskError(InputError):
    """A task that cannot be resolved or loaded."""


@dataclass
class ResolvedTask:
    """One task to run: the mteb task object and, for a smec dataset, the dataset itself."""

    name: str
    task: Any
    dataset: Any = None  # datamodules.datasets.RetrievalDataset for custom tasks
    split: str | None = None

    @property
    def custom(self) -> bool:
        return self.dataset is not None


def dataset_task(name_or_path: str, split: str) -> ResolvedTask:
    """A built-in dataset or BEIR folder as an mteb retrieval task on ``split``."""
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.task_metadata import TaskMetadata

    from datamodules.datasets import load_dataset

    data = load_dataset(name_or_path, splits=[split])
    task_name = f"smec-{data.name}"
    metadata = TaskMetadata(
        name=task_name,
        description=f"smec retrieval dataset {data.name} ({data.path}), split {split}",
        dataset={"path": str(data.path), "revision": data.fingerprint[:16]},
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=[split],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_10",
    )

    def load_data(self: Any, num_proc: int | None = None, **kwargs: Any) -> None:
        corpus = Dataset.from_dict({"id": data.corpus.ids, "text": data.corpus.texts})
        queries = Dataset.from_dict({"id": data.queries[split].ids, "text": data.queries[split].texts})
        self.dataset = {
            "default": {
                split: RetrievalSplitData(
                    corpus=corpus, queries=queries, relevant_docs=data.qrels[split], top_ranked=None
                )
            }
        }
        self.data_loaded = True

    cls = type(
        "SmecDatasetTask",
        (AbsTaskRetrieval,),
        {"metadata": metadata, "k_values": CUSTOM_K_VALUES, "load_data": load_data},
    )
    return ResolvedTask(task_name, cls(), data, split)


def named_task(name: str) -> ResolvedTask:
    """An MTEB task by name; its data are loaded here, so an offline machine fails before anything runs."""
    import mteb

    try:
        task = mteb.get_task(name)
    except (KeyError, ValueError) as e:
        raise MtebTaskError(
            f"--tasks {name}: not a built-in dataset ({', '.join(BUILTIN_DATASETS)}), a BEIR folder or an MTEB task "
            f"name ({str(e).splitlines()[0][:200]})"
        ) from None
    try:
        task.load_data()
    except Exception as e:  # the hub, datasets, network: anything that keeps the data from loading
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise MtebTaskError(
            f"--tasks {name}: cannot load the MTEB task's data ({type(e).__name__}: {first}); named MTEB tasks "
            f"download from the Hugging Face hub. Offline, use a built-in dataset ({', '.join(BUILTIN_DATASETS)}) "
            "or a BEIR folder"
        ) from None
    return ResolvedTask(task.metadata.name, task)


def resolve_task(name: str, split: str) -> ResolvedTask:
    """A smec dataset (built-in name or existing folder) first, else an MTEB task name."""
    from pathlib import Path

    if name in BUILTIN_DATASETS or Path(name).expanduser().is_dir():
        return dataset_task(name, split)
    if name.startswith((".", "/", "~")) or name.endswith("/"):
        raise MtebTaskError(f"--tasks {name}: no such BEIR folder")
    return named_task(name)
