"""`metric_jax.train.restore(workdir)` gives back the trained model; `python -m experiments.embed` embeds new images;
`trainer.embed_fn(state)` fits `evaluation.extract_embeddings`."""

import os

import numpy as np
import pytest
from PIL import Image

from experiments import embed as embed_cli, run
from metric_jax import evaluation, train
from tests.experiments._tiny import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("restore")
  rec = run.run_seeds(tiny_config(), str(workdir), command="test", log=lambda m: None)[0]
  return workdir, rec


def _digits_test_images():
  from metric_jax import data
  return data.retrieval_split("sklearn_digits")[1]


def test_restore_gives_the_trained_model_and_config(trained):
  workdir, rec = trained
  model, config, state = train.restore(str(workdir))  # one seed_* run under the workdir
  assert config.objective.loss == "multi_similarity" and int(state.step) == 4
  test = _digits_test_images()
  x = test.images.astype(np.float32) / 255.0
  emb = np.asarray(model(x, train=False)["embedding"])
  assert emb.shape == (len(x), 8) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  # the restored network reproduces the run's own final evaluation
  again = evaluation.evaluate(emb, test.labels, ks=(1, 2, 4, 8), metrics=("retrieval",))
  assert again["recall@1"] == pytest.approx(rec["final"]["test"]["recall@1"], abs=1e-6)
  restored = train.restore_run(str(workdir / "seed_0"))
  via_extract = evaluation.extract_embeddings(restored.trainer.embed_fn(restored.state), x, batch_size=100)
  np.testing.assert_allclose(via_extract, emb, atol=1e-5)


def test_restore_errors_name_the_workdir(tmp_path):
  with pytest.raises(FileNotFoundError, match="holds no run"):
    train.restore(str(tmp_path))


def test_embed_cli_on_npy_and_on_a_folder(trained, tmp_path):
  workdir, _ = trained
  test = _digits_test_images()
  images = test.images[:5]
  np.save(tmp_path / "x.npy", images)
  embed_cli.main(["--workdir", str(workdir), "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "e.npy")])
  from_npy = np.load(tmp_path / "e.npy")
  folder = tmp_path / "imgs"
  folder.mkdir()
  for i, im in enumerate(images):
    Image.fromarray(im[..., 0]).save(folder / f"{i:02d}.png")
  embed_cli.main(["--workdir", str(workdir / "seed_0"), "--input", str(folder), "--out", str(tmp_path / "f.npy")])
  np.testing.assert_allclose(np.load(tmp_path / "f.npy"), from_npy, atol=1e-6)
  assert open(str(tmp_path / "f.npy") + ".files.txt").read().split() == [f"{i:02d}.png" for i in range(5)]
  model, _, _ = train.restore(str(workdir))
  direct = np.asarray(model(images.astype(np.float32) / 255.0, train=False)["embedding"])
  np.testing.assert_allclose(from_npy, direct, atol=1e-5)
