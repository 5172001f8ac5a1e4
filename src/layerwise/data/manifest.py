"""The real data files the gpu and paper profiles read, with their public sources and sha256.

Every file lives at ``<data directory>/<path>`` (``$LAYERWISE_DATA_DIR``). The benchmark files are
byte copies of files in public GitHub repositories at pinned commits (``url``); the two Gutenberg
corpus files are built by a cleaning recipe from a public repository and have no direct download
(``url`` is None, ``recipe`` says how to build them). ``layerwise-book data fetch``
(:mod:`layerwise.data.fetch`) downloads them and checks each against ``sha256`` and ``size``.
The ``tiny`` profile needs none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from ..config import LayerwiseError

#: prefix of a file at a pinned commit of a public GitHub repository
RAW = "https://raw.githubusercontent.com"
_FOUNDRY = f"{RAW}/mosaicml/llm-foundry/8c8dd48f/scripts/eval/local_data"

GUTENBERG_SOURCE = "rcdm-uga/Gutenberg_Text @a0b16d35 (3,381 books by ~98 authors)"
#: how the corpus files were built (there is no download of the result itself)
CORPUS_RECIPE = (
    f"built from {GUTENBERG_SOURCE}: Gutenberg header and footer stripped, books under 2,000 words or under "
    "30% English stop-words dropped, duplicates dropped by their first 20k characters, books taken in the "
    "order of the sha1 of their path, hard-wrapped paragraphs re-flowed into one line each, paragraphs "
    "separated by a blank line and books by a line <|endoftext|>, xz-compressed"
)


@dataclass(frozen=True)
class DataFile:
    """One file of the data directory: where it goes, what it must hash to, where it comes from."""

    path: str  #: relative to the data directory, e.g. ``benchmarks/arc_easy.jsonl``
    sha256: str
    size: int  #: bytes
    source: str  #: ``owner/repo @commit : path`` as cited
    license: str
    url: str | None = None  #: public download at the pinned commit; None: built by ``recipe``
    recipe: str | None = None

    @property
    def name(self) -> str:
        """The file name alone (what a mirror may serve it as)."""
        return PurePosixPath(self.path).name

    @property
    def group(self) -> str:
        """``benchmarks`` or ``corpus``."""
        return PurePosixPath(self.path).parts[0]


def _foundry(path: str, name: str, sha256: str, size: int, license: str) -> DataFile:
    return DataFile(f"benchmarks/{name}", sha256, size, f"mosaicml/llm-foundry @8c8dd48f : scripts/eval/local_data/"
                    f"{path}/{name}", license, f"{_FOUNDRY}/{path}/{name}")


FILES: tuple[DataFile, ...] = (
    DataFile("benchmarks/gsm8k_test.jsonl", "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
             749_738, "openai/grade-school-math @3101c7d5 : grade_school_math/data/test.jsonl", "MIT",
             f"{RAW}/openai/grade-school-math/3101c7d5/grade_school_math/data/test.jsonl"),
    DataFile("benchmarks/math500_test.jsonl", "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132",
             446_564, "hkust-nlp/simpleRL-reason @cf1c7858 : examples/simplelr_math_eval/data/math500/test.jsonl",
             "MIT", f"{RAW}/hkust-nlp/simpleRL-reason/cf1c7858/examples/simplelr_math_eval/data/math500/test.jsonl"),
    DataFile("benchmarks/HumanEval.jsonl.gz", "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
             44_877, "openai/human-eval @6d43fb98 : data/HumanEval.jsonl.gz", "MIT",
             f"{RAW}/openai/human-eval/6d43fb98/data/HumanEval.jsonl.gz"),
    DataFile("benchmarks/piqa_valid.jsonl", "93503cc97c679e459b065c3d13e848282e44b2a25213985bed3e5d458abef72d",
             495_929, "ybisk/ybisk.github.io @21edab43 : piqa/data/valid.jsonl", "AFL-3.0",
             f"{RAW}/ybisk/ybisk.github.io/21edab43/piqa/data/valid.jsonl"),
    DataFile("benchmarks/piqa_valid-labels.lst", "b4192dc3a2a0363d9d60ccf79800cbbe2f32ebb17726efdde6970e0b8131bceb",
             3_676, "ybisk/ybisk.github.io @21edab43 : piqa/data/valid-labels.lst", "AFL-3.0",
             f"{RAW}/ybisk/ybisk.github.io/21edab43/piqa/data/valid-labels.lst"),
    _foundry("world_knowledge", "arc_challenge.jsonl",
             "1ae3aeedf1951d881cbd5c2e3a31e78a1993d251479afbe4cb413b6707244636", 365_606, "CC BY-SA 4.0"),
    _foundry("world_knowledge", "arc_easy.jsonl",
             "d2d12e59543acf9a5ef6079634a72b30215e36c2fd4236fff3bc855d287b87f5", 636_665, "CC BY-SA 4.0"),
    _foundry("reading_comprehension", "boolq.jsonl",
             "454ff101e614370bb1807fe7ebbda6fdb57e794b9662cc1ccae211bf1ff626c8", 2_210_395, "CC BY-SA 3.0"),
    _foundry("commonsense_reasoning", "openbook_qa.jsonl",
             "adb2e5c7f8db810ddad4d6b2bf53dcc86dcc545499f7aafcaf42a8e179476c09", 88_043, "Apache-2.0"),
    _foundry("language_understanding", "winogrande.jsonl",
             "ea1592526f3bfdd0948ed3acb1b4dfa3f83d23698917118688ee1df7f8d4b8d7", 312_369, "CC-BY"),
    _foundry("language_understanding", "lambada_openai.jsonl",
             "411bfbe5b9054346b6a19299c0242670adbefb9162efd958593cbc0290b8c9dc", 1_895_241, "CC BY 4.0"),
    DataFile("corpus/gutenberg-train-200MB.txt.xz", "4c742519967853d5651b23753ea4a01ea4aae4edbb17e163dad8bdef90dee660",
             51_885_768, GUTENBERG_SOURCE, "public domain (US)",
             recipe=f"619 books, 199,990,411 bytes uncompressed; {CORPUS_RECIPE}"),
    DataFile("corpus/gutenberg-heldout-10MB.txt.xz", "6bdb4933db5b0630c8dcf2a3362fa5e7f41c0043b02337ef9756421193a05bd9",
             2_806_224, GUTENBERG_SOURCE, "public domain (US)",
             recipe=f"27 books none of which is in the training file, 9,995,499 bytes uncompressed; {CORPUS_RECIPE}"),
)

#: path relative to the data directory -> its entry
BY_PATH: dict[str, DataFile] = {f.path: f for f in FILES}


def select(names: list[str] | tuple[str, ...] | None = None) -> list[DataFile]:
    """The entries named by path, file name or group (``benchmarks``, ``corpus``); all when none."""
    if not names:
        return list(FILES)
    out: list[DataFile] = []
    for n in names:
        hits = [f for f in FILES if n in (f.path, f.name, f.group)]
        if not hits:
            raise LayerwiseError(f"no data file or group {n!r}: use one of benchmarks, corpus or a file name "
                                 f"({', '.join(f.name for f in FILES)})")
        out += [f for f in hits if f not in out]
    return out
