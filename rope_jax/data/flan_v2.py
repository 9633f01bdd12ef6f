"""A TFDS builder for the FLAN v2 collection as prepared data, and the command that prepares it.

FLAN v2 (Longpre et al. 2023, "The Flan Collection") is not a TFDS catalog dataset: it is
produced by the google-research/FLAN code (``flan/v2``) as seqio mixtures and is usually exported
to JSON Lines. The paper trained on 15M FlanV2 samples (SPEC.md §2g). This builder turns such an
export into a TFDS dataset ``flan_v2:1.0.0`` that the ``flan_v2`` task reads.

Prepare once (any machine with the export; the data_dir may be on GCS)::

  python -m rope_jax.data.flan_v2 --manual_dir=/path/to/flan_jsonl \\
      --data_dir=gs://BUCKET/tensorflow_datasets

``manual_dir`` holds ``*.jsonl`` or ``*.jsonl.gz`` files, one example per line with string fields
``inputs`` and ``targets`` (and optionally ``task`` or ``task_name``), e.g. the FLAN repo's export
or a Hugging Face copy of the 15M-sample mixture. The result lives under
``DATA_DIR/flan_v2/1.0.0/``; train with ``--config.data.task=flan_v2
--config.data.tfds_data_dir=DATA_DIR``. Only a ``train`` split is written: validation is the last
``validation_percent`` of it, as for Wikipedia.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Iterator, Sequence

import tensorflow as tf
import tensorflow_datasets as tfds

TFDS_NAME = "flan_v2:1.0.0"


class FlanV2(tfds.core.GeneratorBasedBuilder):
  """FLAN v2 examples (inputs, targets, task) read from a JSON Lines export in manual_dir."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "From a JSON Lines export of the FLAN v2 collection."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the FLAN v2 collection, exported as *.jsonl or *.jsonl.gz files with string fields "
      "`inputs` and `targets`, in manual_dir (see rope_jax/data/flan_v2.py).")
  # No checksums or metadata files live beside this module. (Left to TFDS, finding them goes
  # through the `importlib_resources` backport, which Python >= 3.9 installs need not have.)
  code_path = None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="The FLAN v2 instruction-tuning collection (Longpre et al. 2023).",
        features=tfds.features.FeaturesDict({
            "inputs": tfds.features.Text(),
            "targets": tfds.features.Text(),
            "task": tfds.features.Text(),
        }),
        homepage="https://github.com/google-research/FLAN/tree/main/flan/v2",
        citation="@article{longpre2023flan, title={The Flan Collection: Designing Data and "
                 "Methods for Effective Instruction Tuning}, author={Longpre, Shayne and others},"
                 " journal={arXiv:2301.13688}, year={2023}}",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = str(dl_manager.manual_dir)
    files = sorted(tf.io.gfile.glob(f"{manual_dir}/*.jsonl") +
                   tf.io.gfile.glob(f"{manual_dir}/*.jsonl.gz"))
    if not files:
      raise FileNotFoundError(
          f"No *.jsonl / *.jsonl.gz files in manual_dir {manual_dir!r}. "
          + self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    return {"train": self._generate_examples(files)}

  def _generate_examples(self, files: Sequence[str]) -> Iterator[tuple[str, dict[str, str]]]:
    for path in files:
      with tf.io.gfile.GFile(path, "rb") as raw:
        f = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
        for i, line in enumerate(f):
          if not line.strip():
            continue
          ex = json.loads(line)
          yield f"{path.rsplit('/', 1)[-1]}:{i}", {
              "inputs": ex["inputs"],
              "targets": ex["targets"],
              "task": ex.get("task", ex.get("task_name", "")),
          }


def prepare(manual_dir: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Writes ``flan_v2:1.0.0`` from the JSON Lines in ``manual_dir`` into ``data_dir``."""
  builder = FlanV2(data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--manual_dir", required=True, help="folder of FLAN v2 *.jsonl[.gz]")
  parser.add_argument("--data_dir", required=True, help="TFDS data_dir to write (local or gs://)")
  args = parser.parse_args(argv)
  builder = prepare(args.manual_dir, args.data_dir)
  print(f"prepared {builder.info.full_name} in {builder.data_dir}: {builder.info.splits}")


if __name__ == "__main__":
  main()
