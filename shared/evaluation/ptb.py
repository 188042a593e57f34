"""pycocoevalcap's PTB tokenization (the step CIDEr-D is defined on), without its terminal noise.

pycocoevalcap's ``PTBTokenizer`` lets the Java tokenizer write "PTBTokenizer tokenized N tokens at
..." to the terminal on every call (two per CIDEr score, between the progress bars), and ignores
its exit status: a failing Java yields empty token lines and a silently wrong score. This runs the
same command on the same jar with the same post-processing, its stderr captured: kept out of sight
when Java succeeds, raised with the error when it fails.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Hashable

from pycocoevalcap.tokenizer import ptbtokenizer

JAR_FOLDER = Path(ptbtokenizer.__file__).resolve().parent
COMMAND = ["java", "-cp", ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR, "edu.stanford.nlp.process.PTBTokenizer",
           "-preserveLines", "-lowerCase"]


class PTBError(RuntimeError):
    pass


def tokenize(captions: dict[Hashable, list[dict]]) -> dict[Hashable, list[str]]:
    """``{key: [{"caption": text}, ...]}`` -> ``{key: [tokenized text, ...]}``, as
    ``PTBTokenizer().tokenize`` returns it (lower-cased, punctuation removed)."""
    keys = [k for k, v in captions.items() for _ in v]
    sentences = "\n".join(c["caption"].replace("\n", " ") for v in captions.values() for c in v)
    # a temporary file outside the installed package (pycocoevalcap writes into its own folder)
    fd, path = tempfile.mkstemp(prefix="ptb-", suffix=".txt")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(sentences.encode())
        done = subprocess.run([*COMMAND, path], cwd=JAR_FOLDER, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        os.remove(path)
    if done.returncode != 0:
        raise PTBError(f"CIDEr's PTB tokenizer (java, exit status {done.returncode}) failed:\n"
                       + done.stderr.decode(errors="replace").strip())
    out: dict[Hashable, list[str]] = {}
    for k, line in zip(keys, done.stdout.decode().split("\n")):
        out.setdefault(k, []).append(" ".join(w for w in line.rstrip().split(" ") if w not in ptbtokenizer.PUNCTUATIONS))
    return out
