"""An offline English corpus built from the text CPython ships, and its SentencePiece vocabulary.

Nothing here downloads anything: the corpus is read from the running interpreter's standard
library, so the default job and the tests run anywhere Python runs.

Documents (one per source, in a fixed order):

* ``stdlib:<module>``: one per pure-Python standard-library module (``Lib/**/*.py``, test
  packages and ``site-packages`` excluded), read with ``ast`` (never imported): the module
  docstring, then every class/function docstring in source order, each headed by its qualified
  name. Documents are long (median ~330 tokens, a quarter over 1,000), which is what evaluation
  at 2x and 4x the training length needs.
* ``builtin:<module>``: the same for the modules compiled into the interpreter (``builtins``,
  ``sys``, ``itertools``, ...), read from ``__doc__``.
* ``topics:<name>``: the Python Language Reference sections that ``help()`` shows
  (``pydoc_data.topics``), one document per topic.

A docstring seen before (exactly) is dropped, so ``_pyio`` does not repeat ``io``. On CPython
3.11.7 the corpus is 748 documents, 2.54 MB of text, 0.87M tokens (0.77M train, 0.10M
validation) with the shipped vocabulary. It is a function of the interpreter's version and build:
:func:`fingerprint` names the exact text in use (the iterator's state records a hash of the
tokens, so a resume on other data is refused).

Validation is a fixed 10% (``validation_percent``) of documents, chosen by a hash of the
document key, so the split never depends on the seed, the order, or documents added elsewhere.

The vocabulary (``assets/offline_sp2048.model``, 2048 pieces, 30 KB) is a byte-fallback BPE
SentencePiece model trained deterministically on the train documents with Gemma's special ids
(pad 0, eos 1, bos 2, unk 3); it never emits unk and decodes back to the exact text. Subwords
rather than bytes: like the paper's Gemma tokenizer, a token is a word piece (2.9 characters on
average), so a 128-token row holds a paragraph rather than a sentence, perplexities are per
word piece as in the paper, and a 2048-row embedding keeps the tiny model's capacity in its
blocks. It is shipped (not trained at run time) so that every machine, whatever its CPython,
tokenizes with the same ids and checkpoints stay compatible. Regenerate it with::

  python -m rope_jax.data.offline_corpus --write_vocab rope_jax/data/assets/offline_sp2048.model
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import hashlib
import importlib
import inspect
import io
import os
import sys
import sysconfig
from collections.abc import Iterator, Sequence

from rope_jax.data import text as text_lib
from rope_jax.data.text import BOS_ID, EOS_ID, PAD_ID, UNK_ID

VOCAB_SIZE = text_lib.OFFLINE_VOCAB_SIZE
DEFAULT_VOCAB_PATH = text_lib.OFFLINE_VOCAB
DEFAULT_VALIDATION_PERCENT = 10
# fingerprint() of the corpus the shipped vocabulary was trained on (CPython 3.11.7).
VOCAB_CORPUS_FINGERPRINT = "4e735968a2df5f28"

_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages",
                        "__pycache__", "lib-dynload"})


@dataclasses.dataclass(frozen=True)
class Document:
  """One corpus document: a stable key (``"stdlib:json.decoder"``) and its text."""
  key: str
  text: str


def _source_docstrings(source: str) -> list[tuple[str, str]]:
  """(qualified name, docstring) for a module's docstrings in source order; "" names the module."""
  tree = ast.parse(source)
  out = []
  doc = ast.get_docstring(tree)
  if doc:
    out.append(("", doc))

  def visit(node: ast.AST, prefix: str) -> None:
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        name = prefix + child.name
        doc = ast.get_docstring(child)
        if doc:
          out.append((name, doc))
        visit(child, name + ".")
      elif isinstance(child, ast.stmt) and hasattr(child, "body"):
        visit(child, prefix)  # defs under if/try/with/for blocks

  visit(tree, "")
  return out


def _stdlib_sources(root: str) -> Iterator[tuple[str, str]]:
  """(dotted module name, source text) of every .py file under ``root``, sorted by path."""
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("config-"))
    for filename in sorted(filenames):
      if not filename.endswith(".py"):
        continue
      path = os.path.join(dirpath, filename)
      rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
      name = rel[: -len(".__init__")] if rel.endswith(".__init__") else rel
      try:
        with open(path, encoding="utf-8") as f:
          yield name, f.read()
      except (OSError, UnicodeDecodeError):
        continue


def _builtin_docstrings(module_name: str) -> list[tuple[str, str]]:
  """(qualified name, docstring) for a compiled-in module, its functions, classes and methods."""
  module = importlib.import_module(module_name)
  out = []
  if isinstance(module.__doc__, str):
    out.append(("", module.__doc__))
  for name in sorted(vars(module)):
    obj = vars(module)[name]
    if getattr(obj, "__module__", module_name) not in (module_name, None):
      continue  # re-exported from elsewhere
    if inspect.isclass(obj) or inspect.isroutine(obj):
      if isinstance(obj.__doc__, str):
        out.append((name, obj.__doc__))
    if inspect.isclass(obj):
      for attr in sorted(vars(obj)):
        member = vars(obj)[attr]
        doc = getattr(member, "__doc__", None)
        if callable(member) and isinstance(doc, str):
          out.append((f"{name}.{attr}", doc))
  return out


def _join(entries: Sequence[tuple[str, str]], seen: set[str]) -> str:
  """Joins new (not ``seen``) docstrings into one document's text, each headed by its name."""
  parts = []
  for name, doc in entries:
    doc = inspect.cleandoc(doc).strip()
    if not doc or doc in seen:
      continue
    seen.add(doc)
    parts.append(f"{name}\n{doc}" if name else doc)
  return "\n\n".join(parts)


@functools.lru_cache(maxsize=1)
def documents() -> tuple[Document, ...]:
  """All corpus documents in a fixed order (stdlib modules, builtin modules, topics)."""
  seen: set[str] = set()
  docs = []
  for name, source in _stdlib_sources(sysconfig.get_paths()["stdlib"]):
    try:
      entries = _source_docstrings(source)
    except (SyntaxError, ValueError):
      continue
    docs.append(Document(f"stdlib:{name}", _join(entries, seen)))
  for name in sorted(sys.builtin_module_names):
    try:
      entries = _builtin_docstrings(name)
    except ImportError:
      continue
    docs.append(Document(f"builtin:{name}", _join(entries, seen)))
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  for name in sorted(topics.topics):
    docs.append(Document(f"topics:{name}", _join([("", topics.topics[name])], seen)))
  return tuple(d for d in docs if d.text)


def is_validation(key: str, validation_percent: int) -> bool:
  """Whether document ``key`` is held out: a stable hash bucket in [0, 100) < the percentage."""
  bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") % 100
  return bucket < validation_percent


def split_texts(split: str,
                validation_percent: int = DEFAULT_VALIDATION_PERCENT) -> tuple[str, ...]:
  """The texts of one split ("train" or "validation"), in corpus order."""
  if split not in ("train", "validation"):
    raise ValueError(f"Unknown split {split!r}; the offline corpus has 'train' and 'validation'.")
  if not 0 < validation_percent < 100:
    raise ValueError(f"validation_percent must be in (0, 100), got {validation_percent}.")
  want = split == "validation"
  return tuple(d.text for d in documents() if is_validation(d.key, validation_percent) == want)


def fingerprint() -> str:
  """sha256 (first 16 hex digits) of the whole corpus: names the exact text a run used."""
  h = hashlib.sha256()
  for d in documents():
    h.update(d.key.encode())
    h.update(b"\0")
    h.update(d.text.encode())
    h.update(b"\0")
  return h.hexdigest()[:16]


def train_vocabulary(path: str, vocab_size: int = VOCAB_SIZE,
                     validation_percent: int = DEFAULT_VALIDATION_PERCENT) -> str:
  """Trains the corpus SentencePiece model deterministically and writes it to ``path``.

  Byte-fallback BPE (as Gemma), identity normalisation (so decode(encode(text)) == text),
  digits split, whitespace-only pieces allowed (docstrings are indented), one thread and a fixed
  random seed. Trained on the train split only.
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  spm.set_random_generator_seed(0)
  model = io.BytesIO()
  lines = [line for text in split_texts("train", validation_percent) for line in text.split("\n")]
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
      model_type="bpe", byte_fallback=True, split_digits=True, character_coverage=1.0,
      normalization_rule_name="identity", remove_extra_whitespaces=False,
      allow_whitespace_only_pieces=True, user_defined_symbols=["\n"], add_dummy_prefix=False,
      pad_id=PAD_ID, eos_id=EOS_ID, bos_id=BOS_ID, unk_id=UNK_ID,
      num_threads=1, input_sentence_size=0, shuffle_input_sentence=False,
      max_sentence_length=1 << 16, minloglevel=2)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:
    f.write(model.getvalue())
  return path


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--write_vocab", metavar="PATH", help="train the vocabulary and write it")
  args = parser.parse_args(argv)
  docs = documents()
  n_chars = sum(len(d.text) for d in docs)
  print(f"{len(docs)} documents, {n_chars} characters, fingerprint {fingerprint()}, "
        f"python {sys.version.split()[0]}")
  if args.write_vocab:
    print("wrote", train_vocabulary(args.write_vocab))


if __name__ == "__main__":
  main()
